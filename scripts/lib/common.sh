# Shared bash helpers for csql's scripts and script tests (sourced, not run).
#
#   csql_die MSG...            print "NAME: MSG" to stderr and exit 1
#   csql_log MSG...            print "NAME: MSG" to stderr
#   csql_defer CMD...          run CMD at exit (last registered runs first)
#   csql_deadline SECONDS      TERM this script after SECONDS (so cleanup still runs)
#   csql_tempdir VAR PREFIX    make a temp dir under /tmp (removed at exit) into VAR
#   csql_unique_ip N           127.A.B.N, A.B derived from this script's pid
#   csql_wait_tcp HOST PORT S  wait up to S seconds for HOST:PORT to accept
#   csql_wait_file_line F S    wait up to S seconds for a complete first line in F
#
# Sourcing installs EXIT/INT/TERM traps; scripts must not set their own.

CSQL_SCRIPT_NAME=${CSQL_SCRIPT_NAME:-$(basename "$0" .sh)}
CSQL_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
_csql_deferred=()
_csql_exit_status=0
# The script's exit status, readable by deferred commands (e.g. to print logs on failure).
CSQL_EXIT_RC=0

csql_log() { echo "$CSQL_SCRIPT_NAME: $*" >&2; }
csql_die() { echo "$CSQL_SCRIPT_NAME: error: $*" >&2; exit 1; }

csql_defer() {
    local cmd
    printf -v cmd '%q ' "$@"
    _csql_deferred+=("$cmd")
}

# Cleanup may itself fail the script (e.g. a server that exited non-zero):
# such steps call csql_fail_at_exit.
csql_fail_at_exit() {
    csql_log "cleanup: $*"
    _csql_exit_status=1
}

_csql_run_deferred() {
    local rc=$? i
    trap - EXIT INT TERM
    set +e
    CSQL_EXIT_RC=$rc
    for ((i = ${#_csql_deferred[@]} - 1; i >= 0; i--)); do
        eval "${_csql_deferred[i]}"
    done
    if [ "$rc" -eq 0 ] && [ "$_csql_exit_status" -ne 0 ]; then
        rc=$_csql_exit_status
    fi
    exit "$rc"
}
trap _csql_run_deferred EXIT
trap 'csql_log "interrupted"; exit 130' INT
trap 'csql_log "terminated (deadline or signal)"; exit 143' TERM

csql_deadline() {
    local secs=$1 me=$$
    ( sleep "$secs" && echo "$CSQL_SCRIPT_NAME: deadline of ${secs}s passed" >&2 && kill -TERM "$me" ) \
        </dev/null >/dev/null 2>&1 &
    csql_defer _csql_kill_quietly $!
}

_csql_kill_quietly() {
    kill -TERM "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 0
}

# csql_tempdir VAR PREFIX: not for $(...), which would lose the deferred removal.
csql_tempdir() {
    local d
    d=$(mktemp -d "/tmp/${2:-csql}.XXXXXX") || csql_die "cannot create a temp dir under /tmp"
    chmod 755 "$d"
    csql_defer _csql_rm_tmp "$d"
    printf -v "$1" '%s' "$d"
}

_csql_rm_tmp() {
    case "$1" in
        /tmp/?*) rm -rf "$1" ;;
        *) csql_log "not removing $1 (outside /tmp)" ;;
    esac
}

# Same scheme as csqlt_unique_ip() in tests/support/support.c: pids are unique
# among live processes, so concurrent tests (C or bash) never share an address.
csql_unique_ip() {
    local pid=$$
    echo "127.$((10 + (pid / 250) % 240)).$((pid % 250)).$1"
}

csql_wait_tcp() {
    local host=$1 port=$2 secs=${3:-10} i
    for ((i = 0; i < secs * 20; i++)); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

csql_wait_file_line() {
    local file=$1 secs=${2:-10} i
    for ((i = 0; i < secs * 20; i++)); do
        if [ -f "$file" ] && [ "$(wc -l <"$file")" -ge 1 ]; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# csql_expect NAME EXPECTED ACTUAL: fail the script with a clear diff if they differ.
csql_expect() {
    if [ "$2" != "$3" ]; then
        csql_die "$1: expected '$2', got '$3'"
    fi
    csql_log "ok: $1 = '$3'"
}

# csql_expect_contains NAME NEEDLE TEXT
csql_expect_contains() {
    case "$3" in
        *"$2"*) csql_log "ok: $1 contains '$2'" ;;
        *) csql_die "$1: expected to contain '$2', got: $3" ;;
    esac
}
