#!/bin/sh
# Read the store URL (it carries the database password) from a Docker secret file, so it
# never appears in docker-compose.yml or `docker inspect`; then run the driftline command.
set -eu
if [ -n "${DRIFTLINE_STORE_URL_FILE:-}" ]; then
    DRIFTLINE_STORE_URL="$(cat "$DRIFTLINE_STORE_URL_FILE")"
    export DRIFTLINE_STORE_URL
fi
exec driftline "$@"
