# Helpers for the fault, soak and integrity scripts (sourced after scripts/lib/common.sh
# and scripts/lib/services.sh, before tests/proxy/lib.sh; not run). By hand, the binaries
# default to those of CSQL_BUILD_DIR (default build/debug); ctest sets each one.
#
#   faults_fds PID              number of open file descriptors of PID
#   faults_rss_kb PID           resident set size of PID in KiB
#   faults_counter ENDPOINT INSTANCE   emulator request count (0 when none)
#   faults_client_start ARGS... fault_client (tests/faults/fault_client.c) as a coprocess;
#                               stopped at exit
#   faults_client CMD           send one command, print its one-line answer (60 s at most)
#   faults_psql HOST PORT SQL   one psql session through csql-proxy (bounded: 60 s)

CSQL_BUILD_DIR=${CSQL_BUILD_DIR:-$CSQL_REPO/build/debug}
CSQL_EMULATOR=${CSQL_EMULATOR:-$CSQL_BUILD_DIR/tools/emulator/csql-emulator}
CSQL_PROXY=${CSQL_PROXY:-$CSQL_BUILD_DIR/tools/proxy/csql-proxy}
CSQL_FAULT_CLIENT=${CSQL_FAULT_CLIENT:-$CSQL_BUILD_DIR/tests/faults/fault_client}

faults_fds() {
    local n
    n=$(ls "/proc/$1/fd" 2>/dev/null | wc -l) || n=-1
    echo "$n"
}

faults_rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

faults_counter() {
    csql_emu_admin GET /emulator/counters \
        | jq -r --arg e "$1" --arg i "$2" '.endpoints[$e].instances[$i] // 0'
}

faults_client_start() {
    [ -x "$CSQL_FAULT_CLIENT" ] || csql_die "CSQL_FAULT_CLIENT must name fault_client (got '$CSQL_FAULT_CLIENT')"
    local dir
    csql_tempdir dir csql-fault-client
    FAULT_CLIENT_LOG=$dir/stderr
    coproc FAULT_CLIENT { exec "$CSQL_FAULT_CLIENT" "$@" 2>"$FAULT_CLIENT_LOG"; }
    FAULT_CLIENT_PID_=$FAULT_CLIENT_PID
    csql_defer _faults_client_stop "$FAULT_CLIENT_PID_" "$FAULT_CLIENT_LOG"
}

_faults_client_stop() {
    kill -TERM "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    if [ "$CSQL_EXIT_RC" -ne 0 ]; then
        echo "----- fault_client stderr (last 30 lines) -----" >&2
        tail -n 30 "$2" >&2
        echo "-----" >&2
    fi
    return 0
}

faults_client() {
    local answer
    echo "$1" >&"${FAULT_CLIENT[1]}" || csql_die "fault_client is gone (command '$1')"
    IFS= read -r -t 60 answer <&"${FAULT_CLIENT[0]}" || csql_die "fault_client gave no answer to '$1' within 60 s"
    printf '%s\n' "$answer"
}

faults_psql() {
    timeout 60 psql -X -At -v ON_ERROR_STOP=1 \
        "host=$1 port=$2 user=postgres dbname=postgres sslmode=disable connect_timeout=50" -c "$3"
}
