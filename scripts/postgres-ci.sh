#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL cluster on loopback, then stop and remove it.
#
#   scripts/postgres-ci.sh                      # runs: .venv/bin/pytest -m postgres
#   scripts/postgres-ci.sh sh -c '.venv/bin/jisr publish-postgres --dsn "$JISR_PG_DSN"'
#
# The command runs as given, without a shell: a variable the script exports (below) is
# expanded only by a shell the command starts, as `sh -c '...'` above.
#
# Installs Debian's postgresql package when no server binaries are found (needs root and
# the package registry). The server refuses to run as root, so as root the cluster runs as
# the `postgres` user (runuser). The command sees:
#   JISR_PG_DSN        owner of database `jisr` (role `jisr`, CREATEROLE, not superuser)
#   JISR_PG_ADMIN_DSN  the cluster superuser (for tests that create roles and databases)
#   JISR_PG_HOST/PORT/USER/PASSWORD/DBNAME   the same owner, for dbt's profiles.yml
set -euo pipefail

cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then
    set -- .venv/bin/pytest -m postgres -p no:cacheprovider
fi

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
PG_BIN="${PG_BIN:-$(find_bin)}"
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    echo "postgres-ci: installing Debian's postgresql package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q postgresql >/dev/null
    PG_BIN="$(find_bin)"
fi

as_owner() {  # run a server command as a non-root user
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

WORK="$(mktemp -d /tmp/jisr-pg.XXXXXX)"
PORT="${JISR_PG_CI_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
ADMIN_PASSWORD="admin-$RANDOM$RANDOM"
OWNER_PASSWORD="jisr-$RANDOM$RANDOM"
printf '%s\n' "$ADMIN_PASSWORD" > "$WORK/pwfile"
if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$WORK"; fi
chmod 700 "$WORK"

cleanup() {
    as_owner "$PG_BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT   # interrupted: exit (the EXIT trap cleans up once), do not carry on
trap 'exit 143' TERM

as_owner "$PG_BIN/initdb" -D "$WORK/data" -U postgres --pwfile="$WORK/pwfile" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; exit 1; }
as_owner "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $WORK -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || { cat "$WORK/server.log" >&2; exit 1; }

export PGPASSWORD="$ADMIN_PASSWORD"
for _ in $(seq 1 60); do  # "started" is not "accepting queries": wait for a real answer
    if "$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -Atqc 'select 1' 2>/dev/null | grep -qx 1; then
        break
    fi
    sleep 1
done
"$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q <<SQL
create role jisr login createrole password '$OWNER_PASSWORD';
create database jisr owner jisr;
SQL
unset PGPASSWORD

export JISR_PG_HOST=127.0.0.1 JISR_PG_PORT="$PORT" JISR_PG_USER=jisr JISR_PG_PASSWORD="$OWNER_PASSWORD" JISR_PG_DBNAME=jisr
export JISR_PG_DSN="postgresql://jisr:$OWNER_PASSWORD@127.0.0.1:$PORT/jisr"
export JISR_PG_ADMIN_DSN="postgresql://postgres:$ADMIN_PASSWORD@127.0.0.1:$PORT/postgres"
export JISR_REQUIRE_SERVICES=1  # the server runs: a test skipped for want of it fails (tests/require_services.py)
echo "postgres-ci: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT" >&2

# Not exec: the shell must outlive the command for the EXIT trap to stop and remove the
# cluster. Under set -e a failure exits with the command's status, and the trap runs then too.
"$@"
