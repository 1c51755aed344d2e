#!/usr/bin/env bash
# Starts a local PostgreSQL for percore-persistence's PostgreSQL tests and perf workloads, and
# prints the connection string to use as PERCORE_PG_URL (last line of stdout).
#
# Idempotent: installs the Debian package `postgresql` only if no server binaries are found,
# starts the Debian cluster (pg_ctlcluster) if there is one, else initialises a cluster in
# $PERCORE_PG_DIR (default /tmp/percore-pg) as the `postgres` user on port $PERCORE_PG_PORT,
# and creates the role and database `percore` (password `percore`) if they are missing.
#
#   eval "$(bash .ci/postgres.sh --export)"     # sets PERCORE_PG_URL in this shell
#   bash .ci/postgres.sh                        # prints it
set -euo pipefail

PORT="${PERCORE_PG_PORT:-5432}"
ROLE=percore
DB=percore
PASS=percore
URL="host=127.0.0.1 port=$PORT user=$ROLE password=$PASS dbname=$DB"

log() { echo "postgres.sh: $*" >&2; }
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -n -u postgres "$@"; fi
}

bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/postgres" ] && { echo "$d"; return 0; }
    done
    return 1
}

if ! BIN="$(bindir)"; then
    log "no PostgreSQL server found: installing the Debian package postgresql"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq postgresql >&2
    BIN="$(bindir)"
fi
VERSION="$(basename "$(dirname "$BIN")")"

if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    log "a server already accepts connections on 127.0.0.1:$PORT"
elif command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | awk -v v="$VERSION" -v p="$PORT" '$1==v && $3==p {f=1} END {exit !f}'; then
    CLUSTER="$(pg_lsclusters -h | awk -v v="$VERSION" -v p="$PORT" '$1==v && $3==p {print $2; exit}')"
    log "starting Debian cluster $VERSION/$CLUSTER on port $PORT"
    pg_ctlcluster "$VERSION" "$CLUSTER" start >&2 || true
else
    DIR="${PERCORE_PG_DIR:-/tmp/percore-pg}"
    if [ ! -f "$DIR/PG_VERSION" ]; then
        log "initialising a cluster in $DIR"
        mkdir -p "$DIR"
        chown postgres: "$DIR" 2>/dev/null || true
        as_postgres "$BIN/initdb" -D "$DIR" -A trust -U postgres >&2
    fi
    log "starting the cluster in $DIR on port $PORT"
    as_postgres "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w \
        -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1" start >&2 || true
fi

for _ in $(seq 1 60); do
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.5
done
"$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" >&2 || { log "the server did not come up"; exit 1; }

# Role and database (as the superuser, over the local socket or TCP, whichever works).
psql_su() {
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" "$@" 2>/dev/null \
        || as_postgres psql -X -q -v ON_ERROR_STOP=1 -h /tmp -p "$PORT" "$@"
}
psql_su -d postgres -c "DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
        CREATE ROLE $ROLE LOGIN PASSWORD '$PASS';
    END IF; END \$\$;" >&2
if [ "$(psql_su -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_su -d postgres -c "CREATE DATABASE $DB OWNER $ROLE" >&2
fi
# Each test works in its own schema of this database.
psql_su -d "$DB" -c "GRANT CREATE ON DATABASE $DB TO $ROLE" >&2

log "ready: PERCORE_PG_URL='$URL'"
if [ "${1:-}" = "--export" ]; then
    echo "export PERCORE_PG_URL='$URL'"
else
    echo "$URL"
fi
