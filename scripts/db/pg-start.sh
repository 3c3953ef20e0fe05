#!/usr/bin/env bash
# Start a throwaway PostgreSQL 15 in DIR (created if missing; default: a new temp dir).
# Listens on 127.0.0.1:PORT (free port, or $PGPORT) and a unix socket in DIR/sock.
# Superuser "postgres" with password "secret" over TCP, trust over the socket.
# Prints shell assignments: CSQL_PG_DIR, CSQL_PG_PORT, CSQL_PG_SOCKDIR, CSQL_PG_PASSWORD.
# Env: CSQL_IAM_SOURCE=ADDR adds a pg_hba "trust" rule for every user from ADDR only
# (the emulator's --backend-source address; see docs/emulator.md, automatic IAM authn).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -x "$PGBIN/initdb" ] || { echo "pg-start: PostgreSQL server binaries not found (run scripts/setup.sh)" >&2; exit 1; }

dir=${1:-$(mktemp -d /tmp/csql-pg.XXXXXX)}
mkdir -p "$dir"
chmod 755 "$dir"
mkdir -p "$dir/data" "$dir/sock"
printf 'secret\n' >"$dir/pwfile"
mkdir -p "$dir/log"
chown -R postgres:postgres "$dir/data" "$dir/sock" "$dir/pwfile" "$dir/log"

runuser -u postgres -- "$PGBIN/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -N -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { echo "pg-start: initdb failed, see $dir/initdb.log" >&2; exit 1; }

if [ -n "${CSQL_IAM_SOURCE:-}" ]; then
    # IAM users arrive only through the emulator, which connects from this address.
    hba="$dir/data/pg_hba.conf"
    { echo "host all all ${CSQL_IAM_SOURCE}/32 trust"; cat "$hba"; } >"$hba.new"
    mv "$hba.new" "$hba"
    chown postgres:postgres "$hba"
fi

listen=127.0.0.1
[ -n "${CSQL_IAM_SOURCE:-}" ] && listen="127.0.0.1,${CSQL_IAM_SOURCE}"
port=""
for _ in 1 2 3 4 5; do
    port=${PGPORT:-$(free_port)}
    if runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/log/server.log" -w -t 30 \
        -o "-c listen_addresses=$listen -p $port -k $dir/sock -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=300" \
        start >"$dir/pg_ctl.log" 2>&1; then
        break
    fi
    port=""
    # A fixed port that fails will fail again; a random one may have been taken.
    [ -n "${PGPORT:-}" ] && break
done
if [ -z "$port" ]; then
    echo "pg-start: server failed to start, see $dir/log/server.log" >&2
    cat "$dir/log/server.log" >&2 || true
    exit 1
fi

echo "CSQL_PG_DIR=$dir"
echo "CSQL_PG_PORT=$port"
echo "CSQL_PG_SOCKDIR=$dir/sock"
echo "CSQL_PG_PASSWORD=secret"
