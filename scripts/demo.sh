#!/usr/bin/env bash
# Demo (README: "scripts/demo.sh"): a real query over Cloud SQL's connection path,
# all on this machine:
#
#   libpq ─► csql (local endpoint) ─► TLS 1.3 ─► csql-emulator IP:3307 ─► PostgreSQL
#             └── SQL Admin API (instance data, ephemeral client cert) ─► csql-emulator
#   and psql ─► csql-proxy ─► (the same path)
#
# Installs packages (scripts/setup.sh), builds the debug preset, starts a
# throwaway PostgreSQL and csql-emulator, runs the query, and stops everything.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/services.sh"
CSQL_SCRIPT_NAME=demo
cd "$CSQL_REPO"

if [ -t 1 ]; then
    step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    step() { printf '\n== %s\n' "$*"; }
fi

step "Installing Debian packages (scripts/setup.sh)"
scripts/setup.sh

step "Building csql (cmake --preset debug)"
cmake --preset debug >/dev/null
cmake --build --preset debug
export CSQL_EMULATOR=$CSQL_REPO/build/debug/tools/emulator/csql-emulator
[ -x "$CSQL_EMULATOR" ] || csql_die "build did not produce $CSQL_EMULATOR"

csql_deadline 300
instance=demo-project:us-central1:demo-pg
server_ip=$(csql_unique_ip 1)
listen_ip=127.0.0.1
token=demo-token

step "Starting a throwaway PostgreSQL 15"
csql_start_pg

step "Starting csql-emulator: Cloud SQL instance $instance at $server_ip:3307"
csql_start_emulator --static-token "$token" \
    --instance "$instance?version=POSTGRES_15&public-ip=$server_ip&backend=127.0.0.1:$CSQL_PG_PORT"
echo "SQL Admin API: $EMU_URL"

pq_query=$CSQL_REPO/build/debug/examples/csql_example_pq_query
[ -x "$pq_query" ] || csql_die "build did not produce $pq_query (is libpq-dev installed?)"
step "Querying through csql's libpq helper (examples/pq_query.c: csql_pq_connect)"
echo "CSQL_API_ENDPOINT=$EMU_URL CSQL_TOKEN=$token pq_query $instance 'user=postgres password=... dbname=postgres' SQL"
CSQL_API_ENDPOINT=$EMU_URL CSQL_TOKEN=$token timeout 60 "$pq_query" "$instance" \
    "user=postgres password=$CSQL_PG_PASSWORD dbname=postgres" \
    "select 40 + 2 as answer, current_user, split_part(version(), ' on ', 1) as server" \
    || csql_die "the query through csql and csql-emulator failed"

proxy=$CSQL_REPO/build/debug/tools/proxy/csql-proxy
if [ -x "$proxy" ]; then
    step "The same with psql, through csql-proxy (Auth Proxy command line)"
    listen_port=$(. scripts/db/lib.sh && free_port)
    echo "csql-proxy --sqladmin-api-endpoint $EMU_URL --token $token --address $listen_ip --port $listen_port $instance"
    "$proxy" --sqladmin-api-endpoint "$EMU_URL" --token "$token" --address "$listen_ip" \
        --port "$listen_port" "$instance" >"$CSQL_PG_DIR/csql-proxy.log" 2>&1 &
    proxy_pid=$!
    csql_defer kill "$proxy_pid"
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/$listen_ip/$listen_port") 2>/dev/null && break
        sleep 0.1
    done
    PGPASSWORD=$CSQL_PG_PASSWORD timeout 60 psql -X \
        "host=$listen_ip port=$listen_port user=postgres dbname=postgres sslmode=disable connect_timeout=30" \
        -c "select 40 + 2 as answer, current_user, inet_server_port() as db_port" \
        || { cat "$CSQL_PG_DIR/csql-proxy.log" >&2; csql_die "the query through csql-proxy failed"; }
fi

step "What the emulator saw (GET /emulator/counters)"
csql_emu_admin GET /emulator/counters | jq -c '{api_calls: (.endpoints | map_values(.total) | with_entries(select(.value > 0))), server_side_proxy: .proxy}'

step "Done: the queries above went libpq/psql -> csql -> TLS 1.3 -> csql-emulator -> PostgreSQL. Stopping everything."
