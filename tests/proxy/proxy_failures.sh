#!/usr/bin/env bash
# One failing instance never takes down the others. At startup: an unknown
# instance fails the start (exit 1, named) unless --skip-failed-instance-config;
# with an explicit --port it starts and fails per connection. At run time: an
# instance refusing TCP closes only its own clients, with a logged reason, and
# recovers. --run-connection-test. --max-connections: refused at once,
# readiness 503 at the cap, counted in /metrics.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
CSQL_SCRIPT_NAME=proxy-failures
csql_deadline 280

token=proxy-token-$$
listen=$(csql_unique_ip 10)
http_ip=$(csql_unique_ip 11)
ok=proj-$$:us-central1:ok
flaky=proj-$$:us-central1:flaky
ghost=proj-$$:us-central1:ghost
base=http://$http_ip:9090

csql_start_pg
csql_start_emulator --static-token "$token" \
    --instance "$ok?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_PG_PORT" \
    --instance "$flaky?version=POSTGRES_15&public-ip=$(csql_unique_ip 2)&backend=127.0.0.1:$CSQL_PG_PORT"
csql_tempdir work csql-proxy-failures
common=(--token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$listen")
export PGPASSWORD=$CSQL_PG_PASSWORD PGCONNECT_TIMEOUT=20
q() { timeout 60 psql -X -At -v ON_ERROR_STOP=1 "host=$listen port=$1 user=postgres dbname=postgres sslmode=disable" -c "$2"; }
now_ms() { date +%s%3N; }

# ---- startup: the Auth Proxy's default is to fail, naming the instance ----
rc=0
"$CSQL_PROXY" "${common[@]}" "$ok" "$ghost" >"$work/fail.log" 2>&1 || rc=$?
csql_expect "unknown instance at startup: exit status" 1 "$rc"
grep -q "\[$ghost\] cannot get the instance's details: .*404" "$work/fail.log" \
    || { cat "$work/fail.log" >&2; csql_die "the startup error does not name $ghost and the 404"; }

# ---- --skip-failed-instance-config: the others serve ----
proxy_start skip "${common[@]}" --skip-failed-instance-config --prometheus --http-address "$http_ip" \
    "$ghost" "$ok"
proxy_wait_ready
grep -q "\[$ghost\] skipping this instance" "$PROXY_LOG" || csql_die "no skip line for $ghost"
csql_expect "the good instance takes 5432 (the skipped one used no port)" 1 "$(q 5432 'select 1')"
metrics=$(curl -sS -m 10 "$base/metrics")
csql_expect "serving gauge of the skipped instance" 0 "$(proxy_metric "$metrics" "csql_proxy_instance_serving{cloudsql_instance=\"$ghost\"}")"
csql_expect "serving gauge of the good instance" 1 "$(proxy_metric "$metrics" "csql_proxy_instance_serving{cloudsql_instance=\"$ok\"}")"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- explicit --port: no lookup at startup; failures are per connection ----
proxy_start explicit-port "${common[@]}" --port 7600 --prometheus --http-address "$http_ip" \
    "$ok" "$ghost" "$flaky"
proxy_wait_ready
csql_expect "good instance on 7600" 1 "$(q 7600 'select 1')"
if q 7601 'select 1' >"$work/ghost.out" 2>&1; then csql_die "a session to the unknown instance worked"; fi
csql_log "client of the unknown instance saw: $(tr '\n' ' ' <"$work/ghost.out")"
for ((i = 0; i < 100; i++)); do grep -q "\[$ghost\] failed to connect to instance" "$PROXY_LOG" && break; sleep 0.05; done
grep -q "\[$ghost\] failed to connect to instance.*404" "$PROXY_LOG" || csql_die "no logged reason for the failed dial"
csql_expect "good instance still fine" 2 "$(q 7600 'select 2')"
csql_expect "flaky instance fine" 3 "$(q 7602 'select 3')"

# Run time: the flaky instance refuses TCP; only its clients fail; then it recovers.
csql_emu_admin POST "/emulator/instances/$flaky/refuse-tcp" '{"refuse":true}' >/dev/null
if q 7602 'select 4' >/dev/null 2>&1; then csql_die "a session to the refusing instance worked"; fi
grep -q "\[$flaky\] failed to connect to instance.*refused" "$PROXY_LOG" || csql_die "no logged reason for $flaky"
csql_expect "good instance unaffected" 5 "$(q 7600 'select 5')"
csql_emu_admin POST "/emulator/instances/$flaky/refuse-tcp" '{"refuse":false}' >/dev/null
csql_expect "flaky instance recovered" 6 "$(q 7602 'select 6')"
metrics=$(curl -sS -m 10 "$base/metrics")
csql_expect "dial failures of the unknown instance" 1 "$(proxy_metric "$metrics" "cloudsqlconn_dial_failure_count{cloudsql_instance=\"$ghost\"}")"
csql_expect "dial failures of the flaky instance" 1 "$(proxy_metric "$metrics" "cloudsqlconn_dial_failure_count{cloudsql_instance=\"$flaky\"}")"
csql_expect "dial failures of the good instance" 0 "$(proxy_metric "$metrics" "cloudsqlconn_dial_failure_count{cloudsql_instance=\"$ok\"}")"
if proxy_has refresh-events; then
    fails=$(proxy_metric "$metrics" "cloudsqlconn_refresh_failure_count{cloudsql_error_code=\"NOT_FOUND\",cloudsql_instance=\"$ghost\"}")
    [ "$fails" != missing ] && [ "$fails" -ge 1 ] || csql_die "no NOT_FOUND refresh failure counted for $ghost"
fi
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- --run-connection-test ----
rc=0
"$CSQL_PROXY" "${common[@]}" --port 7700 --run-connection-test "$ok" "$ghost" >"$work/ct.log" 2>&1 || rc=$?
csql_expect "connection test with an unknown instance: exit status" 1 "$rc"
grep -q "\[$ghost\] connection test failed" "$work/ct.log" || { cat "$work/ct.log" >&2; csql_die "no connection test error"; }
proxy_start conn-test "${common[@]}" --run-connection-test "$ok"
proxy_wait_ready
grep -q "\[$ok\] connection test passed" "$PROXY_LOG" || csql_die "no connection test line"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- --max-connections 2 ----
proxy_start max-conn "${common[@]}" --max-connections 2 --health-check --prometheus --http-address "$http_ip" "$ok"
proxy_wait_ready
q 5432 'select pg_sleep(4), 1' >"$work/s1" 2>&1 &
s1=$!
q 5432 'select pg_sleep(4), 2' >"$work/s2" 2>&1 &
s2=$!
if proxy_has connection-events; then
    for ((i = 0; i < 100; i++)); do
        [ "$(proxy_http "$base/readiness")" = "503 max connections reached (open = 2, max = 2)" ] && break
        sleep 0.05
    done
    csql_expect "/readiness at the cap" "503 max connections reached (open = 2, max = 2)" "$(proxy_http "$base/readiness")"
    t0=$(now_ms)
    if q 5432 'select 3' >"$work/s3" 2>&1; then csql_die "a third session was accepted over --max-connections 2"; fi
    took=$(( $(now_ms) - t0 ))
    [ "$took" -lt 2000 ] || csql_die "the refusal took $took ms, not at once"
    grep -q "max connections (2) exceeded, refusing new connection" "$PROXY_LOG" || csql_die "no refusal log line"
    csql_log "ok: third session refused in $took ms: $(tr '\n' ' ' <"$work/s3")"
    metrics=$(curl -sS -m 10 "$base/metrics")
    csql_expect "refused connections" 1 "$(proxy_metric "$metrics" "csql_proxy_connections_refused_total{cloudsql_instance=\"$ok\"}")"
    csql_expect "open connections at the cap" 2 "$(proxy_metric "$metrics" "cloudsqlconn_open_connections{cloudsql_instance=\"$ok\"}")"
else
    csql_log "SKIP: immediate refusal and readiness at the cap (libcsql has no endpoint connection events);"
    csql_log "      checking the fallback instead: a third session waits for a free slot"
    t0=$(now_ms)
    sleep 0.5
    csql_expect "third session, served once one ends" 3 "$(q 5432 'select 3')"
    took=$(( $(now_ms) - t0 ))
    [ "$took" -ge 2500 ] || csql_die "the third session ran after $took ms: the cap did not hold"
fi
wait "$s1" || csql_die "first session failed"
wait "$s2" || csql_die "second session failed"
csql_expect "/readiness below the cap" "200 ok" "$(proxy_http "$base/readiness")"
csql_expect "new session below the cap" 4 "$(q 5432 'select 4')"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143
csql_log "PASS: failing instances are isolated at startup and at run time; connection test; max connections"
