#!/usr/bin/env bash
# One command from a fresh clone: system packages the tests use as real peers, .venv, lint and
# type check (scripts/typecheck.sh), tests.
#   PostgreSQL (the store suite runs on SQLite and PostgreSQL), Prometheus (a real scrape and
#   promtool), Chromium (the HTML report is rendered headless). Installed with apt-get when
#   running as root; otherwise the tests that need them are skipped (and fail under CI=true).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "note: missing ${need[*]}; the tests that need them will be skipped" >&2
  fi
fi
bash scripts/bootstrap.sh test
# the quick gates first, so a lint or type error fails in seconds, not after the suite
.venv/bin/ruff check .
bash scripts/typecheck.sh
exec .venv/bin/python -m pytest -q "$@"
