#!/usr/bin/env bash
# Data integrity through csql (csql-proxy's listener, libcsql's forwarding
# engine and TLS dial, csql-emulator's server-side proxy) to a raw backend:
# random bytes with sha256 in both directions at once, at several sizes, with
# half-close from either side first, several connections at once
# (tests/faults/integrity.py). Nothing may be lost, added or reordered.
#
#   integrity.sh [--full]    short: 0 B .. 8 MiB; --full adds 64 MiB each way
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../proxy/lib.sh"
CSQL_SCRIPT_NAME=fault-integrity

full=0
case ${1:-} in
--full) full=1 ;;
"") ;;
*) csql_die "usage: integrity.sh [--full]" ;;
esac
csql_deadline $((full ? 900 : 240))

py=/usr/bin/python3
here=$(cd "$(dirname "$0")" && pwd)
token=fault-token-$$
backend_ip=$(csql_unique_ip 30)
listen=$(csql_unique_ip 10)
inst=p-$$:us-central1:raw
csql_tempdir work csql-fault-integrity
mkdir "$work/results"

"$py" "$here/integrity.py" serve "$backend_ip" 4000 "$work/results" >"$work/backend.log" 2>&1 &
csql_defer _csql_kill_quietly $!
csql_wait_tcp "$backend_ip" 4000 10 || { cat "$work/backend.log" >&2; csql_die "the backend did not start"; }
csql_start_emulator --static-token "$token" \
    --instance "$inst?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=$backend_ip:4000"
proxy_start integrity --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$listen" --port 6000 "$inst"
proxy_wait_ready
fds0=$(faults_fds "$PROXY_PID")

K=1024
M=$((1024 * 1024))
cases=(
    # up down mode parallel
    "1 1 both 1"
    "0 1 both 1"
    "1 0 both 1"
    "$((64 * K - 1)) $((64 * K - 1)) both 1"
    "$M $M both 1"
    "$M 1 both 1"
    "1 $M both 1"
    "$M $M client-first 1"
    "$M $M server-first 1"
    "$((64 * K - 1)) $((64 * K - 1)) server-first 4"
    "$M $M both 8"
    "$((8 * M)) $((8 * M)) both 1"
)
if [ "$full" = 1 ]; then
    cases+=(
        "$((64 * M)) $((64 * M)) both 1"
        "$((64 * M)) 1 client-first 1"
        "1 $((64 * M)) server-first 1"
        "$((64 * M)) $((64 * M)) server-first 1"
        "$((8 * M)) $((8 * M)) both 8"
    )
fi
total=0
t0=$(date +%s%3N)
for c in "${cases[@]}"; do
    read -r up down mode par <<<"$c"
    if ! out=$(timeout 300 "$py" "$here/integrity.py" run "$listen" 6000 "$work/results" "$up" "$down" "$mode" "$par" 2>&1); then
        printf '%s\n' "$out" >&2
        csql_die "bytes lost, changed or reordered: up $up, down $down, $mode, $par at once (above)"
    fi
    total=$((total + (up + down) * par))
    csql_log "ok: up $up, down $down, $mode, $par at once: $(head -n1 <<<"$out" | sed 's/^ok connection 0 ([^)]*): //')"
done
ms=$(($(date +%s%3N) - t0))
for ((i = 0; i < 100; i++)); do
    [ "$(faults_fds "$PROXY_PID")" -le "$fds0" ] && break
    sleep 0.1
done
fds=$(faults_fds "$PROXY_PID")
[ "$fds" -le "$fds0" ] || csql_die "csql-proxy has $fds fds open after the transfers, $fds0 before"
if grep -q 'aborted' "$PROXY_LOG"; then
    grep 'aborted' "$PROXY_LOG" >&2
    csql_die "the proxy aborted a connection (above)"
fi
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143
csql_log "PASS: ${#cases[@]} cases, $((total / M)) MiB checked in $ms ms, both directions, half-close from either side"
