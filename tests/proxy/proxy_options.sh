#!/usr/bin/env bash
# csql-proxy options that the other scripts do not reach end to end:
# IP types (--private-ip, --psc, --auto-ip and the private-ip, psc and address
# query parameters) against instances that have only a private IP or only a
# PSC name; --lazy-refresh (no certificate before the first client);
# --quota-project and --user-agent as the Admin API sees them (through
# relay.py, headers only, never Authorization); --token with --login-token
# (the database user is the login token's principal); --prometheus-namespace
# on a chosen --http-port; an IPv6 listener; --universe-domain naming the endpoints it implies;
# a signal or /quitquitquit during a slow startup (its exit status, the start
# abandoned, STOPPING=1); a failed start sends STOPPING=1, its info lines on
# stdout and its error on stderr.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
CSQL_SCRIPT_NAME=proxy-options
csql_deadline 240

token=proxy-token-$$
iam_src=$(csql_unique_ip 50)
listen=$(csql_unique_ip 10)
listen2=$(csql_unique_ip 12)
http_ip=$(csql_unique_ip 11)
priv=proj-$$:us-central1:priv
psc=proj-$$:us-central1:psc
pub=proj-$$:us-central1:pub
login_principal=login-user-$$@emulator-project.iam.gserviceaccount.com
login_db=${login_principal%.gserviceaccount.com}

csql_start_pg "$iam_src"
csql_pg_admin "create role \"$login_db\" login"
csql_start_emulator --static-token "$token" --backend-source "$iam_src" \
    --instance "$priv?version=POSTGRES_15&private-ip=$(csql_unique_ip 2)&backend=127.0.0.1:$CSQL_PG_PORT" \
    --instance "$psc?version=POSTGRES_15&psc-dns=$(csql_unique_ip 3)&backend=127.0.0.1:$CSQL_PG_PORT" \
    --instance "$pub?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_PG_PORT"
csql_tempdir work csql-proxy-options
common=(--token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$listen")
export PGPASSWORD=$CSQL_PG_PASSWORD PGCONNECT_TIMEOUT=20
q() { timeout 60 psql -X -At -v ON_ERROR_STOP=1 "host=${3:-$listen} port=$1 user=${4:-postgres} dbname=postgres sslmode=disable" -c "$2"; }
fails() { # PORT WHAT NEEDLE: a session fails and the proxy logs NEEDLE for it
    if q "$1" 'select 1' >/dev/null 2>&1; then csql_die "$2: a session worked"; fi
    for ((i = 0; i < 100; i++)); do grep -q -- "$3" "$PROXY_LOG" && break; sleep 0.05; done
    grep -q -- "$3" "$PROXY_LOG" || { tail -n 5 "$PROXY_LOG" >&2; csql_die "$2: no log line with '$3'"; }
    csql_log "ok: $2: refused and logged: $(grep -- "$3" "$PROXY_LOG" | tail -n1 | cut -c1-220)"
}
certs() { csql_emu_admin GET /emulator/counters | jq -r --arg i "$1" '.endpoints.generateEphemeralCert.instances[$i]'; }
now_ms() { date +%s%3N; }

# ---- IP types: per instance by query, then by flag ----
proxy_start iptypes "${common[@]}" --port 7100 "$priv" "$priv?private-ip=true" "$psc?psc=true" "$psc" \
    "$priv?private-ip=true&address=$listen2&port=7110" "$priv?private-ip=true&psc=false&port=7111"
proxy_wait_ready
fails 7100 "public IP (default) of a private-only instance" "\[$priv\] failed to connect to instance.*"
csql_expect "?private-ip=true" 1 "$(q 7101 'select 1')"
csql_expect "?psc=true" 2 "$(q 7102 'select 2')"
fails 7103 "public IP (default) of a PSC-only instance" "\[$psc\] failed to connect to instance.*"
csql_expect "?address= listens there" 3 "$(q 7110 'select 3' "$listen2")"
if q 7110 'select 1' >/dev/null 2>&1; then csql_die "?address=$listen2: also listening on $listen"; fi
csql_expect "?private-ip=true&psc=false" 4 "$(q 7111 'select 4')"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

proxy_start private "${common[@]}" --port 7200 --private-ip "$priv" "$psc" "$priv?private-ip=false"
proxy_wait_ready
csql_expect "--private-ip" 5 "$(q 7200 'select 5')"
fails 7201 "--private-ip on a PSC-only instance" "\[$psc\] failed to connect to instance.*"
fails 7202 "?private-ip=false beats --private-ip" "\[$priv\] failed to connect to instance.*"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

proxy_start psc "${common[@]}" --port 7300 --psc "$psc" "$priv?private-ip=true"
proxy_wait_ready
csql_expect "--psc" 6 "$(q 7300 'select 6')"
csql_expect "?private-ip=true beats --psc" 7 "$(q 7301 'select 7')"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

proxy_start auto-ip "${common[@]}" --port 7400 --auto-ip "$priv" "$pub"
proxy_wait_ready
csql_expect "--auto-ip falls back to the private IP" 8 "$(q 7400 'select 8')"
csql_expect "--auto-ip uses the public IP" 9 "$(q 7401 'select 9')"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- --lazy-refresh: no certificate until a client needs one ----
csql_emu_admin POST /emulator/counters/reset >/dev/null
proxy_start lazy "${common[@]}" --port 7500 --lazy-refresh "$pub"
proxy_wait_ready
sleep 1
csql_expect "--lazy-refresh: certificates before any client" 0 "$(certs "$pub")"
csql_expect "--lazy-refresh: a session" 10 "$(q 7500 'select 10')"
csql_expect "--lazy-refresh: certificates after one client" 1 "$(certs "$pub")"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143
csql_emu_admin POST /emulator/counters/reset >/dev/null
proxy_start eager "${common[@]}" --port 7510 "$pub"
proxy_wait_ready
for ((i = 0; i < 100; i++)); do [ "$(certs "$pub")" = 1 ] && break; sleep 0.05; done
csql_expect "without --lazy-refresh: a certificate before any client (warmup)" 1 "$(certs "$pub")"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- --quota-project and --user-agent, as the SQL Admin API receives them ----
record=$work/admin-requests.jsonl
proxy_start_relay "$EMU_URL" "$record" "user-agent,x-goog-user-project"
proxy_start headers --token "$token" --sqladmin-api-endpoint "$RELAY_URL" --address "$listen" --port 7600 \
    --quota-project billing-proj-$$ --user-agent "my-tool/1.2 k8s-sidecar" "$pub"
proxy_wait_ready
csql_expect "through the relay" 11 "$(q 7600 'select 11')"
version=$("$CSQL_PROXY" --version | sed -n 's/^csql-proxy version \([^ ]*\).*/\1/p')
jq -e -s --arg p "billing-proj-$$" 'length >= 2 and all(.[]; .headers["x-goog-user-project"] == $p)' "$record" >/dev/null \
    || { cat "$record" >&2; csql_die "--quota-project: not every Admin API request carried x-goog-user-project"; }
jq -e -s --arg v "csql-proxy/$version my-tool/1.2 k8s-sidecar" 'all(.[]; .headers["user-agent"] | test("^csql/[^ ]+ " + $v + "$"))' \
    "$record" >/dev/null || { cat "$record" >&2; csql_die "--user-agent: not 'csql/V csql-proxy/$version my-tool/1.2 k8s-sidecar'"; }
csql_log "ok: User-Agent $(jq -r -s '.[0].headers["user-agent"]' "$record"), quota project on $(wc -l <"$record") requests"
! grep -q "$token" "$record" || csql_die "the relay recorded the token"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- --token with --login-token: the database user is the login token's principal ----
login=$(csql_emu_admin POST /emulator/tokens \
    "{\"principal\":\"$login_principal\",\"scopes\":[\"https://www.googleapis.com/auth/sqlservice.login\"],\"lifetime\":3600}" \
    | jq -r .access_token)
proxy_start login "${common[@]}" --port 7700 --auto-iam-authn --login-token "$login" "$pub"
proxy_wait_ready
csql_expect "--login-token: IAM login as its principal" "$login_db" "$(PGPASSWORD= q 7700 'select current_user' "$listen" "$login_db")"
if PGPASSWORD= q 7700 'select 1' "$listen" "static-user@emulator.iam" >/dev/null 2>&1; then
    csql_die "--login-token: the API token's principal logged in"
fi
! tr '\0' ' ' <"/proc/$PROXY_PID/cmdline" | grep -q "$login" || csql_die "the login token is visible in /proc/$PROXY_PID/cmdline"
! grep -q "$login" "$PROXY_LOG" || csql_die "the login token appears in the log"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- --prometheus-namespace on a chosen --http-port; an IPv6 listener ----
hport=$(proxy_free_port)
v6port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1",0)); print(s.getsockname()[1])')
proxy_start ns "${common[@]}" --port 7800 --max-connections 5 --prometheus --prometheus-namespace myns \
    --http-address "$http_ip" --http-port "$hport" "$pub" "$pub?address=::1&port=$v6port"
proxy_wait_ready
grep -q "\[$pub\] Listening on \[::1\]:$v6port" "$PROXY_LOG" || csql_die "no IPv6 listener line"
csql_expect "IPv6 listener (?address=::1)" 13 "$(q "$v6port" 'select 13' ::1)"
grep -q "HTTP server listening on $http_ip:$hport" "$PROXY_LOG" || csql_die "no HTTP server line for port $hport"
csql_expect "session" 12 "$(q 7800 'select 12')"
metrics=$(curl -sS -m 10 "http://$http_ip:$hport/metrics")
csql_expect "namespaced accepted counter (both listeners)" 2 "$(proxy_metric "$metrics" "myns_csql_proxy_connections_accepted_total{cloudsql_instance=\"$pub\"}")"
csql_expect "namespaced max connections gauge" 5 "$(proxy_metric "$metrics" "myns_csql_proxy_max_connections")"
csql_expect "namespaced build info" 1 "$(proxy_metric "$metrics" "myns_csql_proxy_build_info{version=\"$version\"}")"
csql_expect "namespaced dial latency count" 2 "$(proxy_metric "$metrics" "myns_cloudsqlconn_dial_latency_count{cloudsql_instance=\"$pub\"}")"
! grep -E '^(cloudsqlconn|csql_proxy)_' <<<"$metrics" >/dev/null || csql_die "a metric without the namespace"
csql_expect "/metrics on the default port is not served" "000 curl failed" "$(proxy_http "http://$http_ip:9090/metrics")"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- --universe-domain: the Admin API (and IAM Credentials) hosts follow it ----
rc=0
timeout 60 "$CSQL_PROXY" --token "$token" --universe-domain example.invalid --port 7900 --run-connection-test \
    "$pub" >"$work/ud.log" 2>&1 || rc=$?
csql_expect "--universe-domain example.invalid: exit status" 1 "$rc"
csql_expect_contains "--universe-domain: the Admin API host" "https://sqladmin.example.invalid/" "$(tail -n1 "$work/ud.log")"

# ---- during a slow startup: SIGTERM 143, SIGINT 130, /quitquitquit 0, STOPPING=1 ----
notify_sock=$work/notify.sock
recv_notify() { # receive datagrams into $work/notify.out until killed
    rm -f "$notify_sock"
    /usr/bin/python3 - "$notify_sock" >"$work/notify.out" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
while True:
    print(s.recv(256).decode(), flush=True)
PY
    notify_pid=$!
    csql_defer _csql_kill_quietly "$notify_pid"
    for ((i = 0; i < 100; i++)); do [ -S "$notify_sock" ] && break; sleep 0.05; done
}
admin=$(proxy_free_port)
for how in TERM:143 INT:130 quit:0; do
    sig=${how%%:*} want=${how##*:}
    csql_emu_admin POST /emulator/faults '{"endpoint":"connectSettings","latency_ms":3000,"count":1}' >/dev/null
    recv_notify
    NOTIFY_SOCKET=$notify_sock proxy_start "slow-$sig" "${common[@]}" --quitquitquit --admin-port "$admin" "$pub"
    for ((i = 0; i < 100; i++)); do grep -q 'admin server listening' "$PROXY_LOG" && break; sleep 0.05; done
    # Until the slow connectSettings is in flight (the emulator counted it).
    for ((i = 0; i < 200; i++)); do
        [ "$(csql_emu_admin GET /emulator/counters | jq -r --arg i "$pub" '.endpoints.connectSettings.instances[$i] // 0')" -gt "${settings_seen:-0}" ] && break
        sleep 0.05
    done
    settings_seen=$(csql_emu_admin GET /emulator/counters | jq -r --arg i "$pub" '.endpoints.connectSettings.instances[$i] // 0')
    sleep 0.2
    t0=$(now_ms)
    if [ "$sig" = quit ]; then
        csql_expect "/quitquitquit during startup" 200 "$(proxy_http "http://127.0.0.1:$admin/quitquitquit" POST | cut -d' ' -f1)"
    else
        kill "-$sig" "$PROXY_PID"
    fi
    proxy_expect_exit "$PROXY_PID" "$want" 10
    took=$(( $(now_ms) - t0 ))
    # The Admin API request in flight (a 3 s answer) is cancelled by csql_dialer_close;
    # the start is abandoned: no listener, no ready line.
    [ "$took" -lt 1500 ] || csql_die "$sig during startup: exit took $took ms (the request in flight was not cancelled)"
    grep -q "received during startup; stopping" "$PROXY_LOG" || csql_die "$sig during startup: no log line"
    ! grep -q "Listening on\|ready for new connections" "$PROXY_LOG" || csql_die "$sig during startup: the start went on"
    for ((i = 0; i < 40; i++)); do grep -q STOPPING=1 "$work/notify.out" && break; sleep 0.05; done
    grep -q STOPPING=1 "$work/notify.out" || csql_die "$sig during startup: no STOPPING=1"
    ! grep -q READY=1 "$work/notify.out" || csql_die "$sig during startup: READY=1 was sent"
    kill "$notify_pid" 2>/dev/null || true
    wait "$notify_pid" 2>/dev/null || true
    csql_emu_admin DELETE /emulator/faults >/dev/null
    csql_log "ok: $sig during startup: exit $want in $took ms, STOPPING=1"
done

# A failed start (an unknown instance) also says STOPPING=1, and never READY=1.
recv_notify
rc=0
NOTIFY_SOCKET=$notify_sock timeout 60 "$CSQL_PROXY" "${common[@]}" "proj-$$:us-central1:ghost" \
    >"$work/ghost.out" 2>"$work/ghost.err" || rc=$?
csql_expect "failed start: exit status" 1 "$rc"
# Info lines on stdout, errors on stderr (the Auth Proxy's split).
grep -q "csql: dialer ready" "$work/ghost.out" || csql_die "failed start: no info line on stdout"
grep -q "\[proj-$$:us-central1:ghost\] cannot get the instance's details" "$work/ghost.err" \
    || csql_die "failed start: the error is not on stderr"
! grep -q "dialer ready" "$work/ghost.err" || csql_die "an info line went to stderr"
! grep -q "cannot get the instance's details" "$work/ghost.out" || csql_die "an error line went to stdout"
for ((i = 0; i < 40; i++)); do grep -q STOPPING=1 "$work/notify.out" && break; sleep 0.05; done
grep -q STOPPING=1 "$work/notify.out" || csql_die "failed start: no STOPPING=1"
! grep -q READY=1 "$work/notify.out" || csql_die "failed start: READY=1 was sent"
csql_log "PASS: IP types, lazy refresh, quota project and user agent headers, login token, metrics namespace, universe domain, signals during startup"
