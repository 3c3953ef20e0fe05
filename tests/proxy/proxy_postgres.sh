#!/usr/bin/env bash
# csql-proxy with PostgreSQL: psql and pgbench through TCP listeners on the
# engine's default ports (two instances: 5432, 5433), a Unix socket
# (DIR/p:r:i/.s.PGSQL.5432), automatic IAM authn, then /metrics and the health
# checks, and SIGTERM -> 143. Real PostgreSQL behind csql-emulator.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
CSQL_SCRIPT_NAME=proxy-postgres
csql_deadline 240

token=proxy-token-$$
iam_src=$(csql_unique_ip 50)
listen=$(csql_unique_ip 10)
http_ip=$(csql_unique_ip 11)
pg1=proj-$$:us-central1:pg1
pg2=proj-$$:us-central1:pg2
iam_user=static-user@emulator.iam

csql_start_pg "$iam_src"
csql_pg_admin "create role \"$iam_user\" login"
csql_start_emulator --static-token "$token" --backend-source "$iam_src" \
    --instance "$pg1?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_PG_PORT" \
    --instance "$pg2?version=POSTGRES_14&public-ip=$(csql_unique_ip 2)&backend=127.0.0.1:$CSQL_PG_PORT"
csql_tempdir sockets csql-proxy-sock

proxy_start pg --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$listen" \
    --event-loops 2 --health-check --prometheus --http-address "$http_ip" \
    "$pg1" "$pg2" "$pg1?unix-socket=$sockets" "$pg1?auto-iam-authn=true&port=6432"
proxy_wait_ready
grep -q "\[$pg1\] Listening on $listen:5432" "$PROXY_LOG" || csql_die "pg1 not on $listen:5432"
grep -q "\[$pg2\] Listening on $listen:5433" "$PROXY_LOG" || csql_die "pg2 not on $listen:5433"
sock=$sockets/$pg1/.s.PGSQL.5432
[ -S "$sock" ] || csql_die "no socket at $sock"
csql_expect "socket mode" 777 "$(stat -c %a "$sock")"

export PGPASSWORD=$CSQL_PG_PASSWORD PGCONNECT_TIMEOUT=20
q() { timeout 60 psql -X -At -F'|' -v ON_ERROR_STOP=1 "$1" -c "$2"; }
tcp=(user=postgres dbname=postgres sslmode=disable)
csql_expect "psql TCP 5432" "42|postgres" "$(q "host=$listen port=5432 ${tcp[*]}" 'select 40 + 2, current_user')"
csql_expect "psql TCP 5433" "15|postgres" \
    "$(q "host=$listen port=5433 ${tcp[*]}" "select current_setting('server_version_num')::int / 10000, current_user")"
csql_expect "psql Unix socket" "44" "$(q "host=$sockets/$pg1 user=postgres dbname=postgres" 'select 44')"
csql_expect "psql IAM authn (no password)" "$iam_user" \
    "$(PGPASSWORD= q "host=$listen port=6432 user=$iam_user dbname=postgres sslmode=disable" 'select current_user')"

# A large result both ways: what goes in comes out (md5 on both ends).
want=$(q "host=$CSQL_PG_SOCKDIR port=$CSQL_PG_PORT user=postgres dbname=postgres" \
    "select md5(string_agg(md5(i::text), '' order by i)) from generate_series(1, 200000) i")
got=$(q "host=$listen port=5432 ${tcp[*]}" \
    "select md5(string_agg(md5(i::text), '' order by i)) from generate_series(1, 200000) i")
csql_expect "md5 of 200000 rows through the proxy" "$want" "$got"
rows=$(timeout 60 psql -X -At "host=$listen port=5432 ${tcp[*]}" -c 'select repeat(md5(i::text), 32) from generate_series(1, 20000) i' | wc -c)
csql_expect "bytes of a 20 MB result (20000 rows of 1024 + newline)" 20500000 "$rows"

# pgbench over TCP and over the Unix socket.
timeout 120 pgbench -q -i -s 2 "host=$listen port=5432 ${tcp[*]}" >/dev/null 2>&1 || csql_die "pgbench -i failed"
out=$(timeout 120 pgbench -n -c 8 -j 2 -t 150 "host=$listen port=5432 ${tcp[*]}" 2>&1) || { echo "$out" >&2; csql_die "pgbench over TCP failed"; }
csql_expect_contains "pgbench TCP" "number of transactions actually processed: 1200/1200" "$out"
csql_log "pgbench TCP (8 clients x 150 TPC-B): $(grep -E '^tps' <<<"$out" | head -1)"
out=$(timeout 120 pgbench -n -S -C -c 4 -j 2 -t 100 "host=$sockets/$pg1 user=postgres dbname=postgres" 2>&1) || { echo "$out" >&2; csql_die "pgbench over the Unix socket failed"; }
csql_expect_contains "pgbench Unix socket, a connection per transaction" "number of transactions actually processed: 400/400" "$out"
csql_log "pgbench -C Unix socket (4 clients x 100, new connection each): $(grep -E '^tps' <<<"$out" | head -1)"

# --event-loops 2: two forwarding threads, both used by the 8 pgbench clients.
loops=$(cat /proc/"$PROXY_PID"/task/*/comm | grep -c '^csql-loop' || true)
csql_expect "event loop threads (--event-loops 2)" 2 "$loops"
for t in /proc/"$PROXY_PID"/task/*; do
    [ "$(cat "$t/comm")" = csql-loop-1 ] && busy=$(awk '{print $14 + $15}' "$t/stat")
done
[ "${busy:-0}" -gt 0 ] || csql_die "the second event loop never ran (utime+stime ${busy:-none} ticks)"
csql_log "second event loop: ${busy} ticks of CPU"

# Health checks: started, alive, ready; none of them dials the instance.
base=http://$http_ip:9090
before=$(csql_emu_admin GET /emulator/counters | jq -r --arg c "$pg1" '.proxy[$c].accepted')
csql_expect "/startup" "200 ok" "$(proxy_http "$base/startup")"
csql_expect "/liveness" "200 ok" "$(proxy_http "$base/liveness")"
csql_expect "/readiness" "200 ok" "$(proxy_http "$base/readiness")"
after=$(csql_emu_admin GET /emulator/counters | jq -r --arg c "$pg1" '.proxy[$c].accepted')
csql_expect "instance connections made by the health checks" "$before" "$after"

# Metrics: Prometheus text with the Auth Proxy's names.
metrics=$(curl -sS -m 10 "$base/metrics")
csql_expect_contains "/metrics" "# TYPE cloudsqlconn_dial_failure_count counter" "$metrics"
csql_expect "dial failures for pg1" 0 "$(proxy_metric "$metrics" "cloudsqlconn_dial_failure_count{cloudsql_instance=\"$pg1\"}")"
if proxy_has connection-events; then
    n=$(proxy_metric "$metrics" "cloudsqlconn_dial_latency_count{cloudsql_instance=\"$pg1\"}")
    [ "$n" -ge 400 ] || csql_die "dial latency count for pg1 is $n, expected >= 400"
    sent=$(proxy_metric "$metrics" "cloudsqlconn_bytes_sent{cloudsql_instance=\"$pg1\"}")
    recv=$(proxy_metric "$metrics" "cloudsqlconn_bytes_received{cloudsql_instance=\"$pg1\"}")
    [ "$recv" -ge 20000000 ] || csql_die "bytes received for pg1 is $recv, expected >= 20 MB"
    [ "$sent" -gt 0 ] || csql_die "no bytes sent for pg1"
    csql_expect "open connections after the clients left" 0 \
        "$(proxy_metric "$metrics" "cloudsqlconn_open_connections{cloudsql_instance=\"$pg1\"}")"
    csql_log "pg1: $n dials, $sent bytes sent, $recv received"
else
    csql_log "SKIP: dial latency, bytes and open connections (libcsql has no endpoint connection events)"
fi
if proxy_has refresh-events; then
    [ "$(proxy_metric "$metrics" "cloudsqlconn_refresh_success_count{cloudsql_instance=\"$pg2\"}")" -ge 1 ] \
        || csql_die "no refresh success counted for pg2"
else
    csql_log "SKIP: refresh counts (libcsql has no refresh events)"
fi

kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143
[ ! -e "$sock" ] || csql_die "socket $sock left behind"
[ ! -e "$sockets/$pg1" ] || csql_die "socket directory $sockets/$pg1 left behind"
csql_log "PASS: psql, pgbench (TCP, Unix socket), IAM authn, health, metrics through csql-proxy"
