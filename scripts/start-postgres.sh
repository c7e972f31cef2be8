#!/usr/bin/env bash
# Start a local PostgreSQL server for the run store's tests, idempotently.
#
# Run as root. Installs Debian's postgresql if it is missing, starts the first cluster
# pg_lsclusters lists (creating one if there is none), and makes the role "flowbuilder"
# (password "flowbuilder") and the database "flowbuilder_test" owned by it if missing.
# Prints the line to export, e.g.:
#   export FLOWBUILDER_TEST_POSTGRES_URL=postgresql+psycopg://flowbuilder:flowbuilder@127.0.0.1:5432/flowbuilder_test
# That line is the only thing written to stdout, so `eval "$(scripts/start-postgres.sh)"`
# sets the variable; everything else goes to stderr.
set -euo pipefail

ROLE=${FLOWBUILDER_PG_ROLE:-flowbuilder}
PASSWORD=${FLOWBUILDER_PG_PASSWORD:-flowbuilder}
DB=${FLOWBUILDER_PG_DATABASE:-flowbuilder_test}

if [ "$(id -u)" -ne 0 ]; then
    echo "start-postgres.sh: run me as root (I install and start the server)" >&2
    exit 1
fi

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    echo "installing postgresql…" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi

# The first cluster listed: "version name port status owner datadir logfile".
read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters --no-header | head -n 1) || true
if [ -z "${VERSION:-}" ]; then
    VERSION=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    CLUSTER=main
    pg_createcluster "$VERSION" "$CLUSTER" >&2
    read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters --no-header | head -n 1)
fi
if [ "$STATUS" != "online" ]; then
    pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi

psql_admin() {
    su postgres -c "psql -p $PORT -v ON_ERROR_STOP=1 -qAtX $*"
}

# Wait until the server accepts connections (start returns before that on slow disks).
for _ in $(seq 1 50); do
    if psql_admin "-c 'SELECT 1'" >/dev/null 2>&1; then
        break
    fi
    sleep 0.2
done

if [ "$(psql_admin "-c \"SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'\"")" != "1" ]; then
    psql_admin "-c \"CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'\"" >&2
fi
if [ "$(psql_admin "-c \"SELECT 1 FROM pg_database WHERE datname = '$DB'\"")" != "1" ]; then
    psql_admin "-c \"CREATE DATABASE $DB OWNER $ROLE\"" >&2
fi

echo "export FLOWBUILDER_TEST_POSTGRES_URL=postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
