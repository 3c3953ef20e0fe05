#!/usr/bin/env bash
# Fault switches observed by Google's own clients. A persistent 503 on the
# certificate endpoint makes the client fail to connect; clearing the fault
# lets it connect again; a fault with a count ends after that many requests
# (the v1 proxy's own retries absorb two 503s; the Node connector 1.10.0 does
# not retry generateEphemeralCert, since its retry settings go to a different
# gaxios copy than the one @googleapis/sqladmin uses, so its next session works).
# Usage: fault_503.sh v1proxy|node
#   v1proxy  Google's cloud_sql_proxy v1 + psql; fault on createEphemeral (legacy API)
#   node     Google's Node.js connector + pg; fault on generateEphemeralCert
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
client=${1:?usage: fault_503.sh v1proxy|node}
CSQL_SCRIPT_NAME="fault-503-$client"
csql_deadline 200

case "$client" in
    v1proxy) endpoint=createEphemeral ;;
    node) endpoint=generateEphemeralCert; node_dir=$(cd "$(dirname "$0")/node" && pwd); "$node_dir/ensure-deps.sh" ;;
    *) csql_die "unknown client '$client' (want v1proxy or node)" ;;
esac

token=interop-token-$$
server_ip=$(csql_unique_ip 1)
listen_ip=$(csql_unique_ip 10)
project=proj-$$
conn=$project:us-central1:pg
csql_tempdir T csql-fault

csql_start_pg
csql_start_emulator --static-token "$token" \
    --instance "$conn?version=POSTGRES_15&public-ip=$server_ip&backend=127.0.0.1:$CSQL_PG_PORT"
if [ "$client" = v1proxy ]; then
    # Its default throttle reuses a failed refresh for a minute; 1 s is its minimum.
    csql_start_v1proxy "$EMU_URL" "$token" "$conn=tcp:$listen_ip:5432" -refresh_config_throttle=1s
fi

# session: one query through the client under test; prints the answer, fails if none.
session() {
    case "$client" in
        v1proxy)
            PGPASSWORD=secret timeout 60 psql -X -At \
                "host=$listen_ip port=5432 user=postgres dbname=postgres sslmode=disable connect_timeout=45" \
                -c 'select 40 + 2'
            ;;
        node)
            # A fresh Connector each time: no cached certificate to hide the fault.
            local json r
            json=$(jq -cn --arg api "$EMU_URL" --arg t "$token" --arg i "$conn" \
                '{api:$api,token:$t,instance:$i,engine:"pg",user:"postgres",password:"secret"}')
            r=$(cd "$node_dir" && timeout 60 node connect.mjs "$json") || return 1
            [ "$(jq -r .ok <<<"$r")" = true ] || { echo "$r" >&2; return 1; }
            jq -r .answer <<<"$r"
            ;;
    esac
}

hits() { csql_emu_admin GET /emulator/counters | jq -r --arg e "$endpoint" '.endpoints[$e].total'; }

# 1. Persistent 503: no session.
csql_emu_admin POST /emulator/faults "{\"endpoint\":\"$endpoint\",\"status\":503}" >/dev/null
before=$(hits)
if out=$(session 2>"$T/err"); then
    csql_die "with a 503 on $endpoint the $client session still answered '$out'"
fi
after=$(hits)
[ $((after - before)) -ge 1 ] || csql_die "$client failed without calling $endpoint: $(cat "$T/err")"
csql_log "ok: 503 on $endpoint: $client could not connect ($((after - before)) $endpoint requests): $(tail -n1 "$T/err")"

# 2. Cleared: the next session works.
csql_emu_admin DELETE /emulator/faults >/dev/null
sleep 1.2 # the v1 proxy's minimum refresh throttle
csql_expect "after clearing the fault" 42 "$(session)"

# 3. A fault for a number of requests only.
case "$client" in
    v1proxy)
        # The running proxy has a valid certificate cached; a new one must fetch.
        kill -TERM "$V1_PID"
        wait "$V1_PID" 2>/dev/null || true
        csql_emu_admin POST /emulator/faults "{\"endpoint\":\"$endpoint\",\"status\":503,\"count\":2}" >/dev/null
        csql_start_v1proxy "$EMU_URL" "$token" "$conn=tcp:$listen_ip:5432" -refresh_config_throttle=1s
        before=$(hits)
        csql_expect "503 twice, absorbed by the proxy's retries" 42 "$(session)"
        after=$(hits)
        [ $((after - before)) -ge 3 ] || csql_die "expected >= 3 $endpoint requests (2 faulted + 1), saw $((after - before))"
        csql_log "ok: $((after - before)) $endpoint requests for that session"
        ;;
    node)
        csql_emu_admin POST /emulator/faults "{\"endpoint\":\"$endpoint\",\"status\":503,\"count\":1}" >/dev/null
        if out=$(session 2>"$T/err"); then
            csql_die "with a one-shot 503 on $endpoint the first node session still answered '$out'"
        fi
        csql_log "ok: one-shot 503: first session failed: $(tail -n1 "$T/err")"
        csql_expect "one-shot 503 used up: next session" 42 "$(session)"
        ;;
esac
[ "$(csql_emu_admin GET /emulator/faults | jq '.faults | length')" = 0 ] \
    || csql_die "faults left over: $(csql_emu_admin GET /emulator/faults)"

csql_log "PASS: fault switches seen by $client"
