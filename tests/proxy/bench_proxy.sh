#!/usr/bin/env bash
# Benchmark (not part of ctest): csql-proxy against Google's Cloud SQL Proxy v1,
# both in front of one csql-emulator and a real PostgreSQL on this machine.
#   - pgbench -S throughput with 8 long-lived clients;
#   - connection setup: pgbench -S -C (a new connection, so a new TLS dial, per transaction);
#   - a 256 MiB COPY out (bulk throughput);
#   - memory: RSS of each proxy with N idle forwarded connections (to a TCP sink).
# Usage: CSQL_PROXY=... CSQL_EMULATOR=... bench_proxy.sh [SECONDS_PER_RUN] [IDLE_CONNECTIONS]
# Build both in Release for meaningful numbers.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
CSQL_SCRIPT_NAME=bench-proxy
secs=${1:-10}
idle=${2:-1000}
csql_deadline $((secs * 12 + 300))

token=bench-token-$$
v1_ip=$(csql_unique_ip 20)
csql_ip=$(csql_unique_ip 21)
sink_ip=$(csql_unique_ip 30)
pg=proj-$$:us-central1:pg
sink=proj-$$:us-central1:sink

csql_start_pg
csql_pg_admin "alter system set max_connections = 300" >/dev/null
csql_tempdir work bench-proxy
# A TCP sink standing in for a database: accepts and holds connections, counts them.
/usr/bin/python3 - "$sink_ip" "$work/sink.count" <<'PY' &
import asyncio, sys
n = 0
async def handle(r, w):
    global n
    n += 1
    open(sys.argv[2], "w").write(str(n))
    await r.read()  # until the peer closes
async def main():
    s = await asyncio.start_server(handle, sys.argv[1], 4000, backlog=4096)
    async with s:
        await s.serve_forever()
asyncio.run(main())
PY
csql_defer kill $!
csql_wait_tcp "$sink_ip" 4000 10 || csql_die "sink did not start"
csql_start_emulator --static-token "$token" \
    --instance "$pg?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_PG_PORT" \
    --instance "$sink?version=POSTGRES_15&public-ip=$(csql_unique_ip 2)&backend=$sink_ip:4000"

csql_start_v1proxy "$EMU_URL" "$token" "$pg=tcp:$v1_ip:5432,$sink=tcp:$v1_ip:6000"
proxy_start bench --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$csql_ip" \
    "$pg" "$sink?port=6000"
proxy_wait_ready
csql_log "csql-proxy: $("$CSQL_PROXY" --version | head -1)"

export PGPASSWORD=$CSQL_PG_PASSWORD
timeout 120 pgbench -q -i -s 10 "host=$CSQL_PG_SOCKDIR port=$CSQL_PG_PORT user=postgres dbname=postgres" >/dev/null 2>&1
target() {
    case $1 in
        direct) echo "host=127.0.0.1 port=$CSQL_PG_PORT user=postgres dbname=postgres sslmode=disable" ;;
        v1) echo "host=$v1_ip port=5432 user=postgres dbname=postgres sslmode=disable" ;;
        csql) echo "host=$csql_ip port=5432 user=postgres dbname=postgres sslmode=disable" ;;
    esac
}
tps() { grep -E '^tps' | head -1 | awk '{print $3}'; }
lat() { grep -E '^latency average' | awk '{print $4}'; }

printf '\n%-34s %12s %12s %12s\n' "run" "direct" "v1 proxy" "csql-proxy" >"$work/results"
run() {
    local name=$1 line
    shift
    line=$(printf '%-34s' "$name")
    for who in direct v1 csql; do
        out=$(timeout $((secs + 60)) pgbench -n "$@" -T "$secs" "$(target $who)" 2>&1) || { echo "$out" >&2; csql_die "$name via $who failed"; }
        line+=$(printf ' %12s' "$(tps <<<"$out")")
    done
    echo "$line tps" >>"$work/results"
}
run "pgbench -S, 8 clients" -S -c 8 -j 2
run "pgbench TPC-B, 8 clients" -c 8 -j 2
run "pgbench -S -C (connect each), 4 cl." -S -C -c 4 -j 2

line=$(printf '%-34s' "COPY out 256 MiB (MiB/s)")
for who in direct v1 csql; do
    t0=$(date +%s%N)
    bytes=$(timeout 300 psql -X -At "$(target $who)" \
        -c "copy (select repeat('x', 1023) from generate_series(1, 262144)) to stdout" | wc -c)
    t1=$(date +%s%N)
    line+=$(printf ' %12.1f' "$(echo "$bytes / 1048576 / (($t1 - $t0) / 1000000000)" | bc -l)")
done
echo "$line" >>"$work/results"

# Memory with idle forwarded connections: open $idle (each sends one byte), wait until the
# sink holds them all.
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hold() {
    local ip=$1 before after n
    before=$(rss_kb "$2")
    local base
    base=$(cat "$work/sink.count" 2>/dev/null || echo 0)
    /usr/bin/python3 - "$ip" "$idle" "$work/hold.ready" <<'PY' &
import socket, sys, time
socks = []
for i in range(int(sys.argv[2])):
    s = socket.create_connection((sys.argv[1], 6000))
    s.sendall(b"x")  # the emulator connects its backend once the client has spoken
    socks.append(s)
open(sys.argv[3], "w").write("ok")
time.sleep(120)
PY
    local holder=$!
    for ((i = 0; i < 1200; i++)); do
        n=$(cat "$work/sink.count")
        [ "$((n - base))" -ge "$idle" ] && break
        sleep 0.1
    done
    sleep 1
    after=$(rss_kb "$2")
    kill "$holder" 2>/dev/null
    wait "$holder" 2>/dev/null || true
    [ "$((n - base))" -ge "$idle" ] || csql_die "only $((n - base)) of $idle connections reached the sink"
    echo "$before $after $idle"
}
read -r b a n < <(hold "$v1_ip" "$V1_PID")
v1_mem=$(printf 'v1 proxy:   RSS %6d KiB idle, %7d KiB with %d connections: %5.1f KiB each' "$b" "$a" "$n" "$(echo "($a - $b) / $n" | bc -l)")
sleep 2
read -r b a n < <(hold "$csql_ip" "$PROXY_PID")
csql_mem=$(printf 'csql-proxy: RSS %6d KiB idle, %7d KiB with %d connections: %5.1f KiB each' "$b" "$a" "$n" "$(echo "($a - $b) / $n" | bc -l)")
{ echo; echo "$v1_mem"; echo "$csql_mem"; echo "threads: v1 proxy $(ls /proc/$V1_PID/task | wc -l), csql-proxy $(ls /proc/$PROXY_PID/task | wc -l)"; } >>"$work/results"
cat "$work/results"
