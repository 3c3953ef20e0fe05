#!/usr/bin/env bash
# Soak: 20-second client certificates, N clients querying continuously through
# csql-proxy for M minutes. Half the clients open a new connection (a new TLS
# dial, so a certificate of the moment) for every transaction, half keep one
# session; both are rate-bounded pgbench runs against a real PostgreSQL.
#
#   soak.sh [--minutes M | --secs S] [--clients N]     (default 5 minutes, 50 clients)
#
# Passes when: no transaction failed and no client aborted; the proxy's open
# file descriptors are back to their count before the load; its RSS in the
# second half grew by at most 4 MiB + 5 % over the first sample after warm-up;
# certificates were refreshed (emulator counters) at the rate limiter's pace;
# and the proxy exits cleanly on SIGTERM (under the asan preset that exit runs
# LeakSanitizer, so a leak fails the run). Prints one summary line with the
# figures (docs/faults.md quotes them).
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../proxy/lib.sh"
CSQL_SCRIPT_NAME=fault-soak

secs=300
clients=50
while [ $# -gt 0 ]; do
    case $1 in
    --minutes) secs=$((${2:?--minutes needs a value} * 60)); shift 2 ;;
    --secs) secs=${2:?--secs needs a value}; shift 2 ;;
    --clients) clients=${2:?--clients needs a value}; shift 2 ;;
    *) csql_die "usage: soak.sh [--minutes M | --secs S] [--clients N]" ;;
    esac
done
[[ $secs =~ ^[0-9]+$ ]] && [ "$secs" -ge 10 ] || csql_die "the soak must last 10 s or more (got '$secs')"
[[ $clients =~ ^[0-9]+$ ]] && [ "$clients" -ge 2 ] && [ "$clients" -le 200 ] \
    || csql_die "--clients must be 2..200 (got '$clients')"
csql_deadline $((secs + 180))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

token=soak-token-$$
listen=$(csql_unique_ip 10)
inst=p-$$:us-central1:soak
csql_tempdir work csql-fault-soak

csql_start_pg
have=$(csql_pg_admin 'show max_connections')
[ "$have" -ge $((clients + 5)) ] || csql_die "PostgreSQL allows $have connections, the soak needs $((clients + 5))"
csql_start_emulator --static-token "$token" --cert-lifetime 20 \
    --instance "$inst?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_PG_PORT"
proxy_start soak --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$listen" --port 6000 "$inst"
proxy_wait_ready
export PGPASSWORD=$CSQL_PG_PASSWORD PGSSLMODE=disable PGCONNECT_TIMEOUT=60
csql_expect "warm-up session" 1 "$(faults_psql "$listen" 6000 'select 1')"

cat >"$work/tx.sql" <<'SQL'
\set r random(1, 1000000)
select :r::bigint * 2 as twice, md5(:r::text);
SQL
fds0=$(faults_fds "$PROXY_PID")
rss_start=$(faults_rss_kb "$PROXY_PID")
certs0=$(faults_counter generateEphemeralCert "$inst")

# Sampler: RSS and fds of the proxy every 2 s.
(
    while kill -0 "$PROXY_PID" 2>/dev/null; do
        echo "$SECONDS $(faults_rss_kb "$PROXY_PID" 2>/dev/null || echo 0) $(faults_fds "$PROXY_PID")"
        sleep 2
    done
) >"$work/samples" 2>/dev/null &
csql_defer _csql_kill_quietly $!

reconnecting=$((clients / 2))
persistent=$((clients - reconnecting))
pg() { # pg NAME CLIENTS RATE EXTRA...
    local name=$1 n=$2 rate=$3
    shift 3
    timeout $((secs + 120)) pgbench -n -f "$work/tx.sql" -h "$listen" -p 6000 -U postgres \
        -c "$n" -j 2 -T "$secs" -R "$rate" "$@" postgres >"$work/$name.out" 2>"$work/$name.err"
}
t0=$SECONDS
pg reconnect "$reconnecting" $((reconnecting * 2)) -C &
p1=$!
pg persistent "$persistent" $((persistent * 10)) &
p2=$!
rc1=0 rc2=0
wait "$p1" || rc1=$?
wait "$p2" || rc2=$?
elapsed=$((SECONDS - t0))

tx() { awk -F': *' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] + 0 }' "$work/$1.out"; }
failed() { awk -F': *' '/^number of failed transactions/ { print $2 + 0; f = 1 } END { if (!f) print 0 }' "$work/$1.out"; }
for name in reconnect persistent; do
    csql_log "$name: $(grep -E '^(number of|latency average|tps)' "$work/$name.out" | tr '\n' ';')"
    if grep -qi 'abort\|error' "$work/$name.err"; then
        head -n 20 "$work/$name.err" >&2
        csql_die "$name clients: pgbench reported errors (above)"
    fi
done
csql_expect "pgbench (new connection per transaction): exit status" 0 "$rc1"
csql_expect "pgbench (persistent sessions): exit status" 0 "$rc2"
q_re=$(tx reconnect)
q_pe=$(tx persistent)
f_re=$(failed reconnect)
f_pe=$(failed persistent)
csql_expect "failed transactions" 0 "$((f_re + f_pe))"
[ "$q_re" -ge "$reconnecting" ] || csql_die "only $q_re transactions on new connections"
[ "$q_pe" -ge "$persistent" ] || csql_die "only $q_pe transactions on persistent sessions"

# Every client connection gone: the proxy's fds come back to their count before the load.
fds1=
for ((i = 0; i < 100; i++)); do
    fds1=$(faults_fds "$PROXY_PID")
    [ "$fds1" -le "$fds0" ] && break
    sleep 0.1
done
ls -l "/proc/$PROXY_PID/fd" >"$work/fds.after" 2>/dev/null || true
[ "$fds1" -le "$fds0" ] || { cat "$work/fds.after" >&2; csql_die "csql-proxy has $fds1 fds open after the load, $fds0 before"; }
rss_end=$(faults_rss_kb "$PROXY_PID")
# Memory: the first sample a quarter into the run against the largest of the last quarter.
n=$(wc -l <"$work/samples")
rss_q1=$(awk -v t="$((t0 + elapsed / 4))" '$1 >= t { print $2; exit }' "$work/samples")
rss_last=$(awk -v t="$((t0 + elapsed * 3 / 4))" '$1 >= t && $2 > m { m = $2 } END { print m + 0 }' "$work/samples")
rss_peak=$(awk '$2 > m { m = $2 } END { print m + 0 }' "$work/samples")
fds_peak=$(awk '$3 > m { m = $3 } END { print m + 0 }' "$work/samples")
certs=$(($(faults_counter generateEphemeralCert "$inst") - certs0))
limit=$((rss_q1 + rss_q1 / 20 + 4096))
summary="${elapsed} s, $clients clients ($reconnecting reconnecting, $persistent persistent): $((q_re + q_pe)) transactions ($q_re on new connections), $((f_re + f_pe)) failed; proxy fds $fds0 before, $fds1 after (peak $fds_peak); RSS $rss_start KiB at start, $rss_q1 KiB at 1/4, max $rss_last KiB in the last 1/4 (peak $rss_peak, $n samples), $rss_end KiB after; $certs certificates (20 s lifetime)"
csql_log "summary: $summary"
if grep -q 'libasan' "/proc/$PROXY_PID/maps"; then
    # ASan's quarantine (256 MiB) holds freed memory back, so RSS climbs by design; the leak
    # check is LeakSanitizer's at the proxy's exit below.
    csql_log "ASan build: RSS not judged (LeakSanitizer checks the exit instead)"
else
    [ "$rss_last" -le "$limit" ] || csql_die "csql-proxy's RSS grew from $rss_q1 KiB to $rss_last KiB (limit $limit KiB)"
fi
# 2 certificates at once, then one per 30 s (the limiter; 20 s certificates are always due).
[ "$certs" -ge $(((elapsed - 10) / 30)) ] || csql_die "only $certs certificates in $elapsed s: refreshes stalled"
[ "$certs" -le $((2 + elapsed / 30 + 2)) ] || csql_die "$certs certificates in $elapsed s: over the rate limit"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143 30
echo "soak: $summary"
csql_log "PASS: soak"
