#!/usr/bin/env bash
# Faults on the data path, seen by psql and pgbench through csql-proxy:
#
#   connections.sh [--clients N] [--rounds R]     (default 8 clients, 2 rounds; by hand e.g. 50 and 10)
#
#   - the server CA rotated: at most one session fails (the one that meets the
#     new server certificate with the old CA), then sessions work again, with no
#     restart and one new certificate fetched;
#   - every live connection dropped (emulator drop-connections) while N clients
#     are busy: each client gets an error at once (a session in a 30 s query ends
#     within a few seconds, naming the lost connection), nothing hangs, the
#     proxy's fds return to their count before, a new session works right
#     away, and no certificate is dropped or fetched because of the drops; R rounds;
#   - TCP refused: sessions fail fast with the reason in the proxy log, the
#     proxy stays up, and serves again when the instance listens again.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../proxy/lib.sh"
CSQL_SCRIPT_NAME=fault-connections

clients=8
rounds=2
while [ $# -gt 0 ]; do
    case $1 in
    --clients) clients=${2:?--clients needs a value}; shift 2 ;;
    --rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
    *) csql_die "usage: connections.sh [--clients N] [--rounds R]" ;;
    esac
done
[[ $clients =~ ^[0-9]+$ ]] && [ "$clients" -ge 1 ] && [ "$clients" -le 200 ] || csql_die "--clients must be 1..200"
[[ $rounds =~ ^[0-9]+$ ]] && [ "$rounds" -ge 1 ] || csql_die "--rounds must be >= 1"
csql_deadline $((120 + rounds * 40))

token=fault-token-$$
listen=$(csql_unique_ip 10)
inst=p-$$:us-central1:conn
csql_tempdir work csql-fault-conn

csql_start_pg
csql_start_emulator --static-token "$token" \
    --instance "$inst?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_PG_PORT"
proxy_start conn --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$listen" --port 6000 "$inst"
proxy_wait_ready
export PGPASSWORD=$CSQL_PG_PASSWORD PGSSLMODE=disable PGCONNECT_TIMEOUT=30
csql_expect "first session" 1 "$(faults_psql "$listen" 6000 'select 1')"
fds0=$(faults_fds "$PROXY_PID")
active() { csql_emu_admin GET /emulator/counters | jq -r --arg i "$inst" '.proxy[$i].active'; }
ms() { date +%s%3N; }

# ---- CA rotation: recovers without a restart ----
certs=$(faults_counter generateEphemeralCert "$inst")
csql_emu_admin POST "/emulator/instances/$inst/rotate-ca" '{}' >/dev/null
ok=0 fail=0
for ((i = 0; i < 6; i++)); do
    if out=$(faults_psql "$listen" 6000 'select 3' 2>&1) && [ "$out" = 3 ]; then ok=$((ok + 1)); else fail=$((fail + 1)); fi
done
csql_log "CA rotated: $ok sessions ok, $fail failed"
[ "$fail" -le 1 ] || csql_die "CA rotation: $fail of 6 sessions failed (at most the first may)"
if [ "$fail" -eq 1 ]; then
    grep -q "\[$inst\] failed to connect to instance.*\(TLS\|certificate\|verify\)" "$PROXY_LOG" \
        || csql_die "CA rotation: the failed session's reason in the proxy log is not a TLS one"
fi
csql_expect "CA rotation: new certificates fetched" $((certs + 1)) "$(faults_counter generateEphemeralCert "$inst")"
kill -0 "$PROXY_PID" || csql_die "the proxy died"

# ---- every live connection dropped, R rounds ----
cat >"$work/tx.sql" <<'SQL'
select pg_sleep(0.01), 1;
SQL
certs_before_drops=$(faults_counter generateEphemeralCert "$inst")
for ((round = 1; round <= rounds; round++)); do
    # Clients of two kinds: psql in a 30 s query, and pgbench sessions in a tight loop.
    long=$(((clients + 1) / 2))
    busy=$((clients - long))
    pids=()
    for ((i = 0; i < long; i++)); do
        timeout 60 psql -X -At "host=$listen port=6000 user=postgres dbname=postgres" \
            -c 'select pg_sleep(30)' >"$work/long.$i.out" 2>&1 &
        pids+=($!)
    done
    bench=
    if [ "$busy" -gt 0 ]; then
        timeout 60 pgbench -n -f "$work/tx.sql" -h "$listen" -p 6000 -U postgres -c "$busy" -j 1 -T 30 postgres \
            >"$work/bench.out" 2>&1 &
        bench=$!
    fi
    for ((i = 0; i < 200; i++)); do
        [ "$(active)" -ge "$clients" ] && break
        sleep 0.05
    done
    csql_expect "round $round: live connections at the server before the drop" "$clients" "$(active)"
    sleep 0.5
    t0=$(ms)
    csql_emu_admin POST "/emulator/instances/$inst/drop-connections" '{}' >/dev/null
    for p in "${pids[@]}"; do
        rc=0
        wait "$p" || rc=$?
        [ "$rc" -ne 0 ] || csql_die "round $round: a psql session survived the drop"
        [ "$rc" -ne 124 ] || csql_die "round $round: a psql session hung after the drop (killed by timeout)"
    done
    t_psql=$(($(ms) - t0))
    if [ -n "$bench" ]; then
        rc=0
        wait "$bench" || rc=$?
        [ "$rc" -ne 124 ] || csql_die "round $round: pgbench hung after the drop"
    fi
    t_all=$(($(ms) - t0))
    [ "$t_all" -le 10000 ] || csql_die "round $round: clients took $t_all ms to notice the drop"
    for ((i = 0; i < long; i++)); do
        grep -Eq 'server closed the connection unexpectedly|connection to server .* lost|SSL|EOF' "$work/long.$i.out" \
            || csql_die "round $round: psql's error does not say the connection was lost: $(cat "$work/long.$i.out")"
    done
    csql_log "ok: round $round: $long psql (30 s query) and $busy pgbench clients all ended $t_psql / $t_all ms after the drop; psql said: $(head -n1 "$work/long.0.out")"
    [ -z "$bench" ] || grep -q 'abort\|lost\|closed' "$work/bench.out" \
        || csql_die "round $round: pgbench's clients did not report the lost connection: $(tail -n 5 "$work/bench.out")"
    for ((i = 0; i < 100; i++)); do
        [ "$(faults_fds "$PROXY_PID")" -le "$fds0" ] && break
        sleep 0.1
    done
    fds=$(faults_fds "$PROXY_PID")
    [ "$fds" -le "$fds0" ] || csql_die "round $round: the proxy has $fds fds open after the drop, $fds0 before"
    csql_expect "round $round: a new session right after the drop" 2 "$(faults_psql "$listen" 6000 'select 2')"
done

# A connection the server dropped says nothing about the certificate: it is kept and no
# refresh is spent (src/fwd.c reports the socket failure as CSQL_ERR_IO, not a TLS error), so
# the limiter still has a token for a real CA rotation.
csql_expect "certificates fetched because of dropped connections" 0 \
    "$(($(faults_counter generateEphemeralCert "$inst") - certs_before_drops))"
if [ "$(grep -c 'dropping it (the server CA may have rotated)' "$PROXY_LOG")" -gt 1 ]; then
    csql_die "the proxy dropped its certificate after a dropped connection (only the CA rotation may)"
fi

# ---- TCP refused ----
csql_emu_admin POST "/emulator/instances/$inst/refuse-tcp" '{"refuse":true}' >/dev/null
for ((i = 0; i < 3; i++)); do
    t0=$(ms)
    if faults_psql "$listen" 6000 'select 4' >"$work/refused.out" 2>&1; then csql_die "a session worked while the instance refused TCP"; fi
    took=$(($(ms) - t0))
    [ "$took" -le 5000 ] || csql_die "TCP refused: the session took $took ms to fail"
done
grep -q "\[$inst\] failed to connect to instance.*refused" "$PROXY_LOG" || csql_die "TCP refused: no reason in the proxy log"
csql_log "ok: TCP refused: sessions fail in ${took} ms; proxy says: $(grep -m1 "\[$inst\] failed to connect to instance.*refused" "$PROXY_LOG")"
csql_emu_admin POST "/emulator/instances/$inst/refuse-tcp" '{"refuse":false}' >/dev/null
csql_expect "TCP accepted again: a session" 5 "$(faults_psql "$listen" 6000 'select 5')"
for ((i = 0; i < 100; i++)); do
    [ "$(faults_fds "$PROXY_PID")" -le "$fds0" ] && break
    sleep 0.1
done
fds=$(faults_fds "$PROXY_PID")
[ "$fds" -le "$fds0" ] || csql_die "the proxy has $fds fds open at the end, $fds0 after the first session"
csql_log "ok: proxy fds: $fds0 after the first session, $fds at the end"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143
csql_log "PASS: dropped connections, CA rotation and refused TCP seen by psql and pgbench"
