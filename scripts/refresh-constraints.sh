#!/usr/bin/env bash
# Rewrite constraints.txt: an exact pin for every package an install of driftline pulls in,
# as an unconstrained install resolves them today. bootstrap.sh installs with -c constraints.txt,
# so a fresh clone gets these versions, not whatever was released since. Run this after changing
# dependencies in pyproject.toml (or to take newer releases), run the tests, commit both together.
#   bash scripts/refresh-constraints.sh            # PYTHON=python3.11 to choose the interpreter
# Extras: every one in pyproject.toml. bench (evidently, pandas) resolves together with the rest
# and moves none of their versions, so it is pinned too; if it ever stops resolving, drop it here
# and leave it unconstrained.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
EXTRAS=test,postgresql,demo,bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
py=$tmp/venv/bin/python
# bootstrap.sh upgrades pip before installing, so the newest pip is pinned as well
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet -e ".[$EXTRAS]"
"$py" -m pip check
# setuptools and wheel come with the venv, not with driftline: pin them only if a package needs them
skip=()
for tool in setuptools wheel; do
  if ! "$py" -m pip show "$tool" 2>/dev/null | grep -q '^Required-by: .'; then
    skip+=(--exclude "$tool")
  fi
done
{
  echo "# Exact versions for every package \`pip install -e '.[$EXTRAS]'\` installs (and pip)."
  echo "# Made by scripts/refresh-constraints.sh: an unconstrained install into a fresh venv, then"
  echo "# \`pip freeze --all --exclude-editable\` (driftline itself left out)."
  echo "# $("$py" -c 'import platform; print("Python", platform.python_version(), "on", platform.system(), platform.machine())'), $(date -u +%Y-%m-%d)."
  echo "# Used by scripts/bootstrap.sh as \`pip install -c constraints.txt\`; see docs/operations.md."
  "$py" -m pip freeze --all --exclude-editable "${skip[@]}"
} >"$tmp/constraints.txt"
mv "$tmp/constraints.txt" constraints.txt
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
