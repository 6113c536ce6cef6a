#!/usr/bin/env bash
# One command from a fresh clone: set up .venv, then run the demo (under a minute).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh demo
exec .venv/bin/driftline demo "$@"
