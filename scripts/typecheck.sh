#!/usr/bin/env bash
# Type-check the whole driftline package with mypy (settings: [tool.mypy] in pyproject.toml).
# Exits non-zero on any error. Needs the test extra installed (bash scripts/bootstrap.sh test).
#
# Why a symlink tree: pyproject.toml maps the top-level streams/, detectors/, alerting/ and
# schemas/ to driftline.streams, ... (setuptools package-dir). The default editable install
# resolves that with an import hook that static tools cannot follow, and a strict editable
# install breaks `python -m pytest` from the repository root (the cwd's driftline/ shadows the
# link tree). So this lays out the installed shape under build/typecheck (git-ignored) and checks
# it there, then maps reported paths back to the repository's files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
MYPY=${MYPY:-$repo/.venv/bin/mypy}
tree=build/typecheck
rm -rf "$tree"
mkdir -p "$tree/driftline"
for f in driftline/*; do
  ln -s "$repo/$f" "$tree/driftline/"
done
for d in streams detectors alerting schemas; do
  ln -s "$repo/$d" "$tree/driftline/$d"
done
rc=0
# the cache lives beside the tree, not in it, so the rebuild above keeps runs incremental
out=$(cd "$tree" && "$MYPY" --config-file "$repo/pyproject.toml" --cache-dir "$repo/build/mypy-cache" \
  -p driftline 2>&1) || rc=$?
# driftline/streams/x.py -> streams/x.py, and so on; driftline/platform, driftline/apps stay
printf '%s\n' "$out" | sed -E 's#^driftline/(streams|detectors|alerting|schemas)/#\1/#'
exit "$rc"
