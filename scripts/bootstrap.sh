#!/usr/bin/env bash
# Create .venv (once) and install driftline into it. Run by demo.sh and test.sh.
# Versions come from constraints.txt (scripts/refresh-constraints.sh rewrites it), so a fresh
# clone installs what the tests last passed with, not whatever was released since.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.driftline-installed-$1
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -c constraints.txt --upgrade pip
  # The editable install of this layout (four top-level folders mapped under driftline.*) can
  # only use setuptools' meta-path finder, which always ends with an informational "Editable
  # installation" warning (nothing to fix, repeated on every install): filtered here alone.
  PYTHONWARNINGS="ignore:Editable installation" \
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[$1]"
  touch "$stamp"
fi
