#!/usr/bin/env bash
# A clock jump forward, as after a laptop sleep: csql-emulator, csql-proxy and
# fault_client (libcsql-pq) run under libfaketime (Debian faketime) sharing one
# offset file, re-read at every clock call. The monotonic clock jumps too:
# libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 (what a real suspend
# does) turns every CLOCK_MONOTONIC pthread_cond_timedwait into an immediate
# timeout, a libfaketime bug; jumping both clocks is the harsher case. The
# wall clock then jumps past the certificate's expiry (3000 s certificates,
# jumps of +2 h each). New sessions must still work at once: every dial checks
# the certificate against the wall clock and refreshes (no restart, no wait for
# the scheduler). With --idle, also wait without dialling for the background
# scheduler (it wakes at least every 30 s) to refresh by itself.
#
#   clock_jump.sh [--jumps N] [--idle]      (default 2 jumps)
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../proxy/lib.sh"
CSQL_SCRIPT_NAME=fault-clock-jump

jumps=2
idle=0
while [ $# -gt 0 ]; do
    case $1 in
    --jumps) jumps=${2:?--jumps needs a value}; shift 2 ;;
    --idle) idle=1; shift ;;
    *) csql_die "usage: clock_jump.sh [--jumps N] [--idle]" ;;
    esac
done
[[ $jumps =~ ^[0-9]+$ ]] && [ "$jumps" -ge 1 ] && [ "$jumps" -le 20 ] || csql_die "--jumps must be 1..20"
csql_deadline $((120 + jumps * 20 + idle * 60))

faketime_lib=
for f in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1; do
    [ -f "$f" ] && { faketime_lib=$f; break; }
done
[ -n "$faketime_lib" ] || csql_die "libfaketimeMT.so.1 not found (Debian package faketime; scripts/setup.sh installs it)"

token=fault-token-$$
listen=$(csql_unique_ip 10)
inst=p-$$:us-central1:jump
csql_tempdir work csql-fault-clock
offset_file=$work/offset
offset=0
echo "+0" >"$offset_file"
# What every faked process gets. ASan wants its runtime first in the library list; with
# libfaketime preloaded that check is off (both preloads work together).
faked=(env LD_PRELOAD="$faketime_lib" FAKETIME_TIMESTAMP_FILE="$offset_file" FAKETIME_NO_CACHE=1
       FAKETIME_DONT_RESET=1
       ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0")
fake_now() { "${faked[@]}" date +%s; }
jump() { # jump SECONDS: move every faked clock forward
    offset=$((offset + $1))
    echo "+$offset" >"$offset_file.tmp" && mv "$offset_file.tmp" "$offset_file"
    sleep 0.2
    local skew=$(($(fake_now) - $(date +%s)))
    [ "$skew" -ge $((offset - 2)) ] && [ "$skew" -le $((offset + 2)) ] \
        || csql_die "libfaketime did not apply the offset $offset (clock is $skew s ahead)"
    csql_log "the wall clock jumped: now $offset s ahead"
}

csql_start_pg
export PGPASSWORD=$CSQL_PG_PASSWORD
real_emulator=$CSQL_EMULATOR
CSQL_EMULATOR=$work/emulator-faked
printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$(printf '%q ' "${faked[@]}")" "$real_emulator" >"$CSQL_EMULATOR"
chmod +x "$CSQL_EMULATOR"
csql_start_emulator --static-token "$token" --cert-lifetime 3000 \
    --instance "$inst?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_PG_PORT"
real_proxy=$CSQL_PROXY
CSQL_PROXY=$work/proxy-faked
printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$(printf '%q ' "${faked[@]}")" "$real_proxy" >"$CSQL_PROXY"
chmod +x "$CSQL_PROXY"
proxy_start jump --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$listen" --port 6000 "$inst"
proxy_wait_ready
real_client=$CSQL_FAULT_CLIENT
CSQL_FAULT_CLIENT=$work/client-faked
printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$(printf '%q ' "${faked[@]}")" "$real_client" >"$CSQL_FAULT_CLIENT"
chmod +x "$CSQL_FAULT_CLIENT"
faults_client_start --api "$EMU_URL" --token "$token" --conninfo "user=postgres password=$CSQL_PG_PASSWORD dbname=postgres"

csql_expect "psql through csql-proxy before the jump" 1 "$(faults_psql "$listen" 6000 'select 1')"
r=$(faults_client "q $inst")
[[ $r == ok* ]] || csql_die "libcsql-pq before the jump: $r"
for ((j = 1; j <= jumps; j++)); do
    certs=$(faults_counter generateEphemeralCert "$inst")
    r=$(faults_client "expiry $inst")
    old_expiry=${r#expiry }
    jump 7200
    [ "$(fake_now)" -gt "$old_expiry" ] || csql_die "jump $j: the certificate is not expired by the new clock"
    t0=$(date +%s%3N)
    csql_expect "jump $j: psql through csql-proxy right after" $((j + 1)) "$(faults_psql "$listen" 6000 "select $((j + 1))")"
    r=$(faults_client "q $inst")
    [[ $r == ok* ]] || csql_die "jump $j: libcsql-pq right after the jump: $r"
    took=$(($(date +%s%3N) - t0))
    r=$(faults_client "expiry $inst")
    new_expiry=${r#expiry }
    [ "$new_expiry" -gt "$(fake_now)" ] || csql_die "jump $j: the library's certificate expires at $new_expiry, before the new now"
    now_certs=$(faults_counter generateEphemeralCert "$inst")
    [ "$now_certs" -ge $((certs + 2)) ] || csql_die "jump $j: $((now_certs - certs)) certificates fetched (the proxy and the library each need one)"
    csql_log "ok: jump $j: both clients served in $took ms, $((now_certs - certs)) new certificates, valid $((new_expiry - $(fake_now))) s by the new clock"
done
if [ "$idle" = 1 ]; then
    certs=$(faults_counter generateEphemeralCert "$inst")
    jump 7200
    for ((i = 0; i < 45; i++)); do
        [ "$(faults_counter generateEphemeralCert "$inst")" -ge $((certs + 2)) ] && break
        sleep 1
    done
    [ "$i" -lt 45 ] || csql_die "idle: no background refresh within 45 s of the jump"
    csql_log "ok: idle: both background schedulers refreshed $i s after the jump, with no dial"
    csql_expect "idle: psql afterwards" 9 "$(faults_psql "$listen" 6000 'select 9')"
fi
grep -q "check the system clock" "$PROXY_LOG" && csql_die "the proxy saw a certificate expired on arrival (clocks not shifted together)"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143
csql_log "PASS: a clock jump forward: new sessions work at once, through csql-proxy and libcsql-pq"
