#!/usr/bin/env bash
# Interop: Google's Cloud SQL Proxy v1 (Debian cloudsql-proxy, legacy Admin API:
# GET instance + createEphemeral) with the stock psql / mariadb clients, against
# real PostgreSQL or MariaDB behind csql-emulator.
# Usage: v1proxy.sh postgres|mariadb
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
engine=${1:?usage: v1proxy.sh postgres|mariadb}
CSQL_SCRIPT_NAME="v1proxy-$engine"
csql_deadline 150

token=interop-token-$$
server_ip=$(csql_unique_ip 1)
listen_ip=$(csql_unique_ip 10)

case "$engine" in
    postgres)
        csql_start_pg
        conn=proj:us-central1:pg
        spec="$conn?version=POSTGRES_15&public-ip=$server_ip&backend=127.0.0.1:$CSQL_PG_PORT"
        local_port=5432
        ;;
    mariadb)
        csql_start_mariadb
        conn=proj:us-central1:my
        spec="$conn?version=MYSQL_8_0&public-ip=$server_ip&backend=127.0.0.1:$CSQL_MY_PORT"
        local_port=3306
        ;;
    *) csql_die "unknown engine '$engine' (want postgres or mariadb)" ;;
esac

csql_start_emulator --static-token "$token" --instance "$spec"
csql_start_v1proxy "$EMU_URL" "$token" "$conn=tcp:$listen_ip:$local_port"

run_query() {
    case "$engine" in
        postgres)
            PGPASSWORD=$CSQL_PG_PASSWORD PGCONNECT_TIMEOUT=20 timeout 30 psql -X -At -F'|' \
                "host=$listen_ip port=$local_port user=postgres dbname=postgres sslmode=disable" \
                -c "select 40 + 2, current_user"
            ;;
        mariadb)
            timeout 30 mariadb --no-defaults --protocol=TCP -h "$listen_ip" -P "$local_port" \
                --connect-timeout=20 -u"$CSQL_MY_USER" -p"$CSQL_MY_PASSWORD" -N -B \
                -e "select 40 + 2, current_user()" | tr '\t' '|'
            ;;
    esac
}

case "$engine" in
    postgres) want='42|postgres' ;;
    mariadb) want='42|app@%' ;;
esac

# Two sessions: the first makes the proxy fetch instance data and a client
# certificate from the emulator, the second reuses its cached certificate.
for session in 1 2; do
    got=$(run_query) || csql_die "session $session: query through cloud_sql_proxy failed"
    csql_expect "session $session: select 40 + 2, current user" "$want" "$got"
done

# The sessions really went through the emulator: legacy API calls, and two
# TLS connections accepted by the instance's server-side proxy.
counters=$(csql_emu_admin GET /emulator/counters)
csql_log "emulator counters: $(jq -c '{endpoints: (.endpoints | map_values(.total)), proxy}' <<<"$counters")"
[ "$(jq -r '.endpoints.createEphemeral.total' <<<"$counters")" -ge 1 ] || csql_die "no createEphemeral call seen"
[ "$(jq -r '.endpoints.getInstance.total' <<<"$counters")" -ge 1 ] || csql_die "no GET instance call seen"
csql_expect "server-side proxy connections accepted" 2 "$(jq -r --arg c "$conn" '.proxy[$c].accepted' <<<"$counters")"
csql_log "PASS: Google's cloud_sql_proxy v1 + $engine client answered through csql-emulator"
