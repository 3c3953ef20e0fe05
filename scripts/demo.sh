#!/usr/bin/env bash
# Demo (README: "scripts/demo.sh"): a real query over Cloud SQL's connection path,
# all on this machine:
#
#   psql ─► Google's cloud_sql_proxy (v1) ─► TLS 1.3 ─► csql-emulator IP:3307 ─► PostgreSQL
#                    └── SQL Admin API (instance data, ephemeral client cert) ─► csql-emulator
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

step "Starting Google's Cloud SQL Proxy v1 (Debian cloudsql-proxy) against the emulator"
listen_port=$(. scripts/db/lib.sh && free_port)
csql_start_v1proxy "$EMU_URL" "$token" "$instance=tcp:$listen_ip:$listen_port"
echo "cloud_sql_proxy -host $EMU_URL/ -token $token -instances=$instance=tcp:$listen_ip:$listen_port"

step "Querying through it: psql host=$listen_ip port=$listen_port"
PGPASSWORD=$CSQL_PG_PASSWORD timeout 60 psql -X \
    "host=$listen_ip port=$listen_port user=postgres dbname=postgres sslmode=disable connect_timeout=30" \
    -c "select 40 + 2 as answer, current_user, inet_server_port() as db_port,
               split_part(version(), ' on ', 1) as server" \
    || csql_die "the query through cloud_sql_proxy and csql-emulator failed"

step "What the emulator saw (GET /emulator/counters)"
csql_emu_admin GET /emulator/counters | jq -c '{api_calls: (.endpoints | map_values(.total) | with_entries(select(.value > 0))), server_side_proxy: .proxy}'

step "Done: the query above went psql -> cloud_sql_proxy -> TLS 1.3 -> csql-emulator -> PostgreSQL. Stopping everything."
