#!/usr/bin/env bash
# csql-proxy's life cycle against csql-emulator + PostgreSQL: /startup and
# /readiness 503 while starting (a slow Admin API), READY=1 to NOTIFY_SOCKET,
# `csql-proxy wait`, exit codes (SIGTERM 143, --exit-zero-on-sigterm 0,
# SIGINT 130, /quitquitquit 0 by POST through `csql-proxy shutdown` and by
# GET), --min-sigterm-delay (still serving, then readiness 503) and
# --max-sigterm-delay (waits for an open session; exit 1 if one outlives it).
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
CSQL_SCRIPT_NAME=proxy-signals
csql_deadline 280

token=proxy-token-$$
listen=$(csql_unique_ip 10)
http_ip=$(csql_unique_ip 11)
pg=proj-$$:us-central1:pg
base=http://$http_ip:9090

csql_start_pg
csql_start_emulator --static-token "$token" \
    --instance "$pg?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_PG_PORT"
csql_tempdir work csql-proxy-signals
common=(--token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$listen"
        --health-check --http-address "$http_ip")
export PGPASSWORD=$CSQL_PG_PASSWORD PGCONNECT_TIMEOUT=20
conn="host=$listen port=5432 user=postgres dbname=postgres sslmode=disable"
q() { timeout 60 psql -X -At -v ON_ERROR_STOP=1 "$conn" -c "$1"; }
now_ms() { date +%s%3N; }

# ---- startup: 503 until the listeners are up; READY=1; wait ----
# A receiver for the systemd notification datagram.
notify_sock=$work/notify.sock
/usr/bin/python3 - "$notify_sock" >"$work/notify.out" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
print(s.recv(256).decode(), flush=True)
PY
notify_pid=$!
csql_defer kill "$notify_pid"
for ((i = 0; i < 100; i++)); do [ -S "$notify_sock" ] && break; sleep 0.05; done

# connectSettings answers after 3 s: the proxy is up (HTTP) but not started.
csql_emu_admin POST /emulator/faults '{"endpoint":"connectSettings","latency_ms":3000,"count":1}' >/dev/null
NOTIFY_SOCKET=$notify_sock proxy_start slow-start "${common[@]}" "$pg"
for ((i = 0; i < 100; i++)); do
    [ "$(proxy_http "$base/liveness")" = "200 ok" ] && break
    sleep 0.05
done
csql_expect "/liveness while starting" "200 ok" "$(proxy_http "$base/liveness")"
csql_expect "/startup while starting" "503 error" "$(proxy_http "$base/startup")"
csql_expect "/readiness while starting" "503 proxy is not started" "$(proxy_http "$base/readiness")"
if "$CSQL_PROXY" wait --http-address "$http_ip" --max 500ms 2>"$work/wait.err"; then
    csql_die "csql-proxy wait --max 500ms succeeded before the proxy started"
fi
csql_expect_contains "wait timeout message" "did not report started within 500 ms" "$(cat "$work/wait.err")"
t0=$(now_ms)
"$CSQL_PROXY" wait --http-address "$http_ip" --max 20s || csql_die "csql-proxy wait failed"
csql_log "csql-proxy wait returned after $(( $(now_ms) - t0 )) ms"
csql_expect "/startup once started" "200 ok" "$(proxy_http "$base/startup")"
csql_expect "/readiness once started" "200 ok" "$(proxy_http "$base/readiness")"
wait "$notify_pid" || true
csql_expect "sd_notify datagram" "READY=1" "$(cat "$work/notify.out")"
csql_expect "query" 1 "$(q 'select 1')"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- exit codes ----
proxy_start exit-zero "${common[@]}" --exit-zero-on-sigterm "$pg"
proxy_wait_ready
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 0

admin=$(proxy_free_port)
proxy_start quit-post "${common[@]}" --quitquitquit --admin-port "$admin" "$pg"
proxy_wait_ready
"$CSQL_PROXY" shutdown --admin-port "$admin" || csql_die "csql-proxy shutdown failed"
proxy_expect_exit "$PROXY_PID" 0
grep -q '/quitquitquit received request' "$PROXY_LOG" || csql_die "no /quitquitquit log line"
if "$CSQL_PROXY" shutdown --admin-port "$admin" 2>"$work/shutdown.err"; then
    csql_die "csql-proxy shutdown succeeded with no proxy running"
fi
csql_expect_contains "shutdown error" "Connection refused" "$(cat "$work/shutdown.err")"

admin=$(proxy_free_port)
proxy_start quit-get "${common[@]}" --quitquitquit --admin-port "$admin" "$pg"
proxy_wait_ready
csql_expect "PUT /quitquitquit" 400 "$(proxy_http "http://127.0.0.1:$admin/quitquitquit" PUT | cut -d' ' -f1)"
kill -0 "$PROXY_PID" || csql_die "the proxy stopped on PUT /quitquitquit"
csql_expect "GET /quitquitquit" 200 "$(proxy_http "http://127.0.0.1:$admin/quitquitquit" | cut -d' ' -f1)"
proxy_expect_exit "$PROXY_PID" 0

# ---- --min-sigterm-delay: keep serving (readiness 200), then readiness 503 and exit ----
proxy_start min-delay "${common[@]}" --min-sigterm-delay 3s "$pg"
proxy_wait_ready
t0=$(now_ms)
kill -TERM "$PROXY_PID"
sleep 1
csql_expect "new session during --min-sigterm-delay" 7 "$(q 'select 7')"
csql_expect "/readiness during --min-sigterm-delay" "200 ok" "$(proxy_http "$base/readiness")"
kill -TERM "$PROXY_PID" # a second signal does not cut the minimum short
proxy_expect_exit "$PROXY_PID" 143
took=$(( $(now_ms) - t0 ))
[ "$took" -ge 2900 ] || csql_die "exited $took ms after SIGTERM, before --min-sigterm-delay 3s"
csql_log "ok: exited $took ms after SIGTERM with --min-sigterm-delay 3s"

# ---- --max-sigterm-delay: a session that ends in time; one that does not ----
if proxy_has connection-events; then
    proxy_start max-delay "${common[@]}" --max-sigterm-delay 20s "$pg"
    proxy_wait_ready
    q 'select pg_sleep(3), 8' >"$work/long.out" &
    long=$!
    sleep 1
    t0=$(now_ms)
    kill -TERM "$PROXY_PID"
    sleep 0.5
    csql_expect "/readiness while draining" "503 proxy is shutting down" "$(proxy_http "$base/readiness")"
    if q 'select 1' >/dev/null 2>&1; then csql_die "a new session was accepted while draining"; fi
    proxy_expect_exit "$PROXY_PID" 143
    took=$(( $(now_ms) - t0 ))
    wait "$long" || csql_die "the open session failed during the drain"
    csql_expect "session finished during the drain" "|8" "$(cat "$work/long.out")"
    [ "$took" -lt 10000 ] || csql_die "took $took ms: did not exit once the last session closed"
    csql_log "ok: drained one open session, exited $took ms after SIGTERM"

    proxy_start max-delay-short "${common[@]}" --max-sigterm-delay 1s "$pg"
    proxy_wait_ready
    q 'select pg_sleep(30)' >/dev/null 2>&1 &
    long=$!
    sleep 1
    kill -TERM "$PROXY_PID"
    proxy_expect_exit "$PROXY_PID" 1
    grep -q '1 connection(s) still open after waiting 1000 ms' "$PROXY_LOG" \
        || csql_die "no 'still open' error in the log"
    wait "$long" && csql_die "the session outliving --max-sigterm-delay was not cut"
    csql_log "ok: a session outliving --max-sigterm-delay was cut; exit 1"
else
    csql_log "SKIP: --max-sigterm-delay drain (libcsql has no endpoint connection events)"
fi
csql_log "PASS: startup health, sd_notify, wait, shutdown, exit codes, sigterm delays"
