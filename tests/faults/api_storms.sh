#!/usr/bin/env bash
# Admin API faults seen by real clients: psql through csql-proxy, and libpq
# through libcsql (fault_client) where a refresh timeout must be set.
#
#   api_storms.sh [--secs N]      (default 20; by hand e.g. --secs 300)
#
# For each of 500, 503, 429 (Retry-After 1) and a malformed JSON answer, on
# every Admin API endpoint of two instances for N seconds:
#   - a warm instance (certificate fetched before the storm, a lifetime so short
#     that background refreshes are due, and fail, during the storm) keeps serving
#     every session from its cached certificate;
#   - a cold instance (never fetched) fails every session within the proxy's
#     dial timeout, the proxy log names the instance and the API's answer;
#   - Admin API calls per instance stay within the rate limit (2 refreshes at
#     once, then one per 30 s, each at most 6 attempts per endpoint: counters);
#   - after the fault is cleared, the cold instance recovers without a restart.
# Then an Admin API slower than the refresh timeout (fault_client, refresh
# timeout 1 s, answers after 3 s): a warm instance keeps working, a cold one
# fails with a timeout naming the instance within the dial deadline, and both
# work once the API is fast again.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../proxy/lib.sh"
CSQL_SCRIPT_NAME=fault-api-storms

secs=20
while [ $# -gt 0 ]; do
    case $1 in
    --secs) secs=${2:?--secs needs a value}; shift 2 ;;
    *) csql_die "usage: api_storms.sh [--secs N]" ;;
    esac
done
[[ $secs =~ ^[0-9]+$ ]] && [ "$secs" -ge 5 ] || csql_die "--secs must be a number >= 5 (got '$secs')"
csql_deadline $((secs + 300))

token=fault-token-$$
listen=$(csql_unique_ip 10)
base_port=6000
kinds=(500 503 429 bad)
csql_tempdir work csql-fault-storms

csql_start_pg
specs=()
names=()
n=0
for k in "${kinds[@]}" slow; do
    for w in w c; do
        n=$((n + 1))
        names+=("p-$$:us-central1:$w$k")
        specs+=(--instance "p-$$:us-central1:$w$k?version=POSTGRES_15&public-ip=$(csql_unique_ip $((20 + n)))&backend=127.0.0.1:$CSQL_PG_PORT")
    done
done
inst() { echo "p-$$:us-central1:$1"; }
port() { # port of instance $1 (the proxy serves them in order from $base_port)
    local i
    for i in "${!names[@]}"; do
        [ "${names[i]}" = "$(inst "$1")" ] && { echo $((base_port + i)); return; }
    done
    csql_die "no instance $1"
}
# Warm certificates must outlive the storm, and their refresh (due 240 s before expiry) fall in it.
lifetime=$((secs + 60 > 250 ? secs + 60 : 250))
csql_start_emulator --static-token "$token" --cert-lifetime "$lifetime" "${specs[@]}"
export PGPASSWORD=$CSQL_PG_PASSWORD
fault_json() { # fault_json KIND INSTANCE
    case $1 in
    500 | 503) echo "{\"endpoint\":\"*\",\"instance\":\"$2\",\"status\":$1}" ;;
    429) echo "{\"endpoint\":\"*\",\"instance\":\"$2\",\"status\":429,\"retry_after\":1}" ;;
    bad) echo "{\"endpoint\":\"*\",\"instance\":\"$2\",\"malformed\":true}" ;;
    esac
}
# The cold instances fail from the start (the proxy fetches every instance when it starts).
for k in "${kinds[@]}"; do
    csql_emu_admin POST /emulator/faults "$(fault_json "$k" "$(inst "c$k")")" >/dev/null
done
proxy_start storms --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$listen" \
    --port "$base_port" "${names[@]}"
proxy_wait_ready

# Calls allowed from the proxy's start to the end of the storm (T + setup, at most 30 s more):
# refreshes = 2 (burst) + T/30 + 1, at most 6 attempts each.
allowed=$((6 * (2 + (secs + 30) / 30 + 1)))

# ---- warm the w* instances, then every fault at once ----
for k in "${kinds[@]}"; do
    csql_expect "warm-up of w$k" 1 "$(faults_psql "$listen" "$(port "w$k")" 'select 1')"
done
for k in "${kinds[@]}"; do
    csql_emu_admin POST /emulator/faults "$(fault_json "$k" "$(inst "w$k")")" >/dev/null
done

# One loop of sessions per instance, all at once, for $secs seconds.
loop() { # loop NAME OUT
    local end=$((SECONDS + secs)) t0 rc
    while [ "$SECONDS" -lt "$end" ]; do
        t0=$(date +%s%3N)
        rc=0
        faults_psql "$listen" "$(port "$1")" 'select 1' >/dev/null 2>>"$2.err" || rc=$?
        echo "$([ $rc -eq 0 ] && echo ok || echo fail) $(($(date +%s%3N) - t0))" >>"$2"
        sleep 0.5
    done
}
pids=()
for k in "${kinds[@]}"; do
    for w in w c; do
        loop "$w$k" "$work/$w$k" &
        pids+=($!)
    done
done
for p in "${pids[@]}"; do wait "$p"; done

for k in "${kinds[@]}"; do
    w_ok=$(grep -c '^ok' "$work/w$k" || true)
    w_fail=$(grep -c '^fail' "$work/w$k" || true)
    c_ok=$(grep -c '^ok' "$work/c$k" || true)
    c_fail=$(grep -c '^fail' "$work/c$k" || true)
    c_max=$(awk '$1 == "fail" && $2 > m { m = $2 } END { print m + 0 }' "$work/c$k")
    csql_log "fault $k for ${secs}s: warm $w_ok ok / $w_fail failed; cold $c_ok ok / $c_fail failed (slowest failure ${c_max} ms)"
    csql_expect "fault $k: failed sessions on the warm instance (cached certificate)" 0 "$w_fail"
    [ "$w_ok" -ge 3 ] || csql_die "fault $k: only $w_ok sessions ran on the warm instance"
    csql_expect "fault $k: sessions that worked on the cold instance" 0 "$c_ok"
    [ "$c_fail" -ge 2 ] || csql_die "fault $k: only $c_fail sessions tried the cold instance"
    [ "$c_max" -le 35000 ] || csql_die "fault $k: a failing session took $c_max ms (dial timeout is 30 s)"
    for w in w c; do
        for e in connectSettings generateEphemeralCert; do
            calls=$(faults_counter "$e" "$(inst "$w$k")")
            csql_log "fault $k: $e calls for $w$k: $calls (allowed $allowed)"
            [ "$calls" -le "$allowed" ] || csql_die "fault $k: $calls $e calls for $w$k in ${secs}s, over the rate limit ($allowed)"
        done
    done
    calls=$(faults_counter connectSettings "$(inst "c$k")")
    [ "$calls" -ge 1 ] || csql_die "fault $k: the cold instance never called the API"
    case $k in
    bad) want='(JSON|json|parse|malformed)' ;;
    429) want='429' ;;
    *) want="$k" ;;
    esac
    line=$(grep -m1 -F "[$(inst "c$k")] failed to connect to instance" "$PROXY_LOG" || true)
    [ -n "$line" ] || csql_die "fault $k: no proxy log line for the cold instance"
    grep -Eq "$want" <<<"$line" || csql_die "fault $k: the proxy's error does not name the answer ($want): $line"
    csql_log "ok: fault $k: proxy says: ${line:0:300}"
done
if grep -Eiq 'Bearer|ya29\.|'"$token" "$PROXY_LOG"; then csql_die "a token appears in the proxy log"; fi

# ---- cleared: the cold instances recover without a restart ----
csql_emu_admin DELETE /emulator/faults >/dev/null
t0=$SECONDS
for k in "${kinds[@]}"; do
    for ((i = 0; i < 60; i++)); do
        faults_psql "$listen" "$(port "c$k")" 'select 1' >/dev/null 2>&1 && break
        sleep 1
    done
    [ "$i" -lt 60 ] || csql_die "fault $k: the cold instance did not recover within 60 s of clearing the fault"
    csql_log "ok: fault $k cleared: the cold instance serves again ($((SECONDS - t0)) s after clearing; limiter pace)"
    csql_expect "fault $k cleared: the warm instance" 1 "$(faults_psql "$listen" "$(port "w$k")" 'select 1')"
done
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- Admin API slower than the refresh timeout (libcsql, refresh timeout 1 s) ----
# A key made here: with a 1 s refresh timeout the background key generation could lose the race.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/client.key" 2>/dev/null
faults_client_start --api "$EMU_URL" --token "$token" --refresh-timeout-ms 1000 --dial-timeout-ms 4000 \
    --rsa-key "$work/client.key" --conninfo "user=postgres password=$CSQL_PG_PASSWORD dbname=postgres"
r=$(faults_client "q $(inst wslow)")
[[ $r == ok* ]] || csql_die "slow API: warm-up failed: $r"
csql_emu_admin POST /emulator/faults "{\"endpoint\":\"*\",\"instance\":\"$(inst wslow)\",\"latency_ms\":3000}" >/dev/null
csql_emu_admin POST /emulator/faults "{\"endpoint\":\"*\",\"instance\":\"$(inst cslow)\",\"latency_ms\":3000}" >/dev/null
r=$(faults_client "q $(inst cslow)")
csql_log "slow API, cold instance: $r"
read -r verdict ms code _ <<<"$r"
csql_expect "slow API, cold instance: outcome" fail "$verdict"
grep -Eiq 'time(d)? ?out' <<<"$r" || csql_die "slow API: the cold dial did not report a timeout: $r"
[ "$ms" -le 6000 ] || csql_die "slow API: the cold dial took $ms ms (dial timeout 4 s)"
csql_expect_contains "slow API, cold instance: message names it" "$(inst cslow)" "$r"
# Long enough to cross the warm certificate's refresh (due 10 s after the warm-up in the short form).
end=$((SECONDS + (secs < 60 ? 15 : 60)))
slow_ok=0
while [ "$SECONDS" -lt "$end" ]; do
    r=$(faults_client "q $(inst wslow)")
    [[ $r == ok* ]] || csql_die "slow API: a session on the warm instance failed: $r"
    slow_ok=$((slow_ok + 1))
    sleep 0.5
done
calls=$(faults_counter connectSettings "$(inst wslow)")
csql_log "ok: slow API: $slow_ok sessions on the warm instance, all from its cached certificate ($calls connectSettings calls, each timed out)"
csql_emu_admin DELETE /emulator/faults >/dev/null
for ((i = 0; i < 60; i++)); do
    r=$(faults_client "q $(inst cslow)")
    [[ $r == ok* ]] && break
    sleep 1
done
[[ $r == ok* ]] || csql_die "slow API: the cold instance did not recover within 60 s: $r"
csql_log "ok: slow API cleared: the cold instance serves again"
echo quit >&"${FAULT_CLIENT[1]}"
csql_log "PASS: 500/503/429/malformed storms and a slow Admin API, seen by psql and libpq"
