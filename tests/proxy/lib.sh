# Helpers for csql-proxy's script tests (sourced after scripts/lib/common.sh and
# scripts/lib/services.sh; not run). bench/run.sh uses them too: keep them stable.
#
#   proxy_has HOOK              0 when `csql-proxy --version` reports the engine hook HOOK=yes
#                               (connection-events, listen-fd, refresh-events)
#   proxy_free_port             print a TCP port free on 127.0.0.1 right now
#   proxy_start NAME ARGS...    start csql-proxy ARGS in the background, its output in a log;
#                               sets PROXY_PID and PROXY_LOG; stopped at exit whatever happens
#   proxy_wait_ready [SECS]     wait for the ready line of the last proxy started
#   proxy_expect_exit PID CODE [SECS]   wait for PID to exit (default 15 s) and check its status
#   proxy_http URL [METHOD]     print "STATUS BODY" of one request (curl, 10 s)
#   proxy_metric TEXT NAME      print the value of the sample line NAME (exact, with labels)
#   proxy_start_relay UPSTREAM RECORD [HEADERS]   start relay.py (a recording relay in front of
#                               csql-emulator: method, path, the listed headers, JSON body, one
#                               JSON line per request into RECORD); sets RELAY_URL; stopped at exit

CSQL_PROXY=${CSQL_PROXY:-${CSQL_BUILD_DIR:-}/tools/proxy/csql-proxy}
[ -x "$CSQL_PROXY" ] || csql_die "CSQL_PROXY must name the csql-proxy executable (got '$CSQL_PROXY')"

proxy_has() {
    "$CSQL_PROXY" --version | grep -q "$1=yes"
}

proxy_free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

_proxy_n=0
proxy_start() {
    local name=$1 dir
    shift
    _proxy_n=$((_proxy_n + 1))
    csql_tempdir dir "csql-proxy-$name"
    PROXY_LOG=$dir/log
    "$CSQL_PROXY" "$@" </dev/null >"$PROXY_LOG" 2>&1 &
    PROXY_PID=$!
    csql_defer _proxy_stop "$PROXY_PID" "$PROXY_LOG" "$name"
    csql_log "csql-proxy '$name' pid $PROXY_PID"
}

# At exit: anything still running gets SIGTERM (then SIGKILL); show the log on failure.
_proxy_stop() {
    local pid=$1 log=$2 name=$3 i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 200; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            csql_fail_at_exit "csql-proxy '$name' (pid $pid) ignored SIGTERM for 10 s and was killed"
        fi
    fi
    wait "$pid" 2>/dev/null
    if [ "$CSQL_EXIT_RC" -ne 0 ]; then
        echo "----- csql-proxy '$name' log (last 40 lines) -----" >&2
        tail -n 40 "$log" >&2
        echo "-----" >&2
    fi
    return 0
}

proxy_wait_ready() {
    local secs=${1:-30} i
    for ((i = 0; i < secs * 20; i++)); do
        grep -q 'ready for new connections' "$PROXY_LOG" && return 0
        kill -0 "$PROXY_PID" 2>/dev/null || { cat "$PROXY_LOG" >&2; csql_die "csql-proxy exited during startup"; }
        sleep 0.05
    done
    cat "$PROXY_LOG" >&2
    csql_die "csql-proxy not ready within $secs s"
}

proxy_expect_exit() {
    local pid=$1 want=$2 secs=${3:-15} i rc
    for ((i = 0; i < secs * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && csql_die "pid $pid still running after $secs s (expected exit $want)"
    rc=0
    wait "$pid" || rc=$?
    csql_expect "exit status of pid $pid" "$want" "$rc"
}

proxy_http() {
    local url=$1 method=${2:-GET} out
    out=$(curl -sS -m 10 -X "$method" -o /dev/stdout -w '\n%{http_code}' "$url") || { echo "000 curl failed"; return 0; }
    printf '%s %s\n' "${out##*$'\n'}" "${out%$'\n'*}"
}

proxy_metric() {
    awk -v n="$2" '$1 == n { print $2; found = 1 } END { if (!found) print "missing" }' <<<"$1"
}

proxy_start_relay() {
    local upstream=$1 record=$2 headers=${3:-} dir
    csql_tempdir dir csql-proxy-relay
    : >"$record"
    /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/relay.py" "$upstream" "$record" "$headers" \
        >"$dir/url" 2>"$dir/err" </dev/null &
    csql_defer _csql_kill_quietly $!
    csql_wait_file_line "$dir/url" 20 || { cat "$dir/err" >&2; csql_die "the recording relay did not start"; }
    RELAY_URL=$(head -n1 "$dir/url")
    csql_log "recording relay $RELAY_URL -> $upstream"
}
