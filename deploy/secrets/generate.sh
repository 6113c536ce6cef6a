#!/bin/sh
# Create the secret files docker-compose.yml mounts as Docker secrets (once per deployment).
# The PostgreSQL password appears in two files: the server's and the store URL the workers use.
set -eu
cd "$(dirname "$0")"
umask 077
if [ -e postgres_password ]; then
    echo "secrets exist already; delete deploy/secrets/* (except generate.sh) to regenerate" >&2
    exit 1
fi
password="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s' "$password" > postgres_password
printf 'postgresql+psycopg://driftline:%s@postgres:5432/driftline' "$password" > store_url
od -An -N18 -tx1 /dev/urandom | tr -d ' \n' > grafana_admin_password
echo "wrote deploy/secrets/postgres_password, store_url and grafana_admin_password"
