# Start/stop helpers for what interop tests and the demo run: throwaway
# databases, csql-emulator, Google's v1 Cloud SQL proxy (sourced, not run;
# source scripts/lib/common.sh first). Every start registers its stop with
# csql_defer, so whatever happens the script leaves nothing running.
#
#   csql_start_pg [IAM_SOURCE]      sets CSQL_PG_PORT, CSQL_PG_SOCKDIR, CSQL_PG_PASSWORD
#   csql_pg_admin SQL               run SQL as superuser over the unix socket (-At output)
#   csql_start_mariadb [IAM_SOURCE] sets CSQL_MY_PORT, CSQL_MY_SOCKET, CSQL_MY_USER, CSQL_MY_PASSWORD
#   csql_my_admin SQL               run SQL as root over the unix socket (-NB output)
#   csql_start_emulator ARGS...     sets EMU_URL, EMU_PID, EMU_DIR (stdout/stderr logs)
#   csql_emu_admin METHOD PATH [JSON]  call the emulator's /emulator/ API; prints the body,
#                                   fails unless the status is 2xx
#   csql_start_v1proxy URL TOKEN INSTANCES [FLAGS...]  Google's cloud_sql_proxy v1; sets V1_PID, V1_LOG

# A TCP port on 127.0.0.1 below the kernel's ephemeral range (32768-60999 here),
# so outgoing connections of concurrent tests cannot be holding it.
csql_db_port() {
    local p
    for _ in $(seq 1 100); do
        p=$(( (RANDOM % 20000) + 12000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    csql_die "no free TCP port found on 127.0.0.1"
}

# _csql_start_db KIND START STOP IAM_SOURCE: up to 4 attempts with a fresh dir and
# port each, since another process may take the port between the check and bind.
_csql_start_db() {
    local kind=$1 start=$2 stop=$3 iam=$4 dir out attempt port portvar
    [ "$kind" = PostgreSQL ] && portvar=PGPORT || portvar=MYPORT
    for attempt in 1 2 3 4; do
        dir=$(mktemp -d "/tmp/csql-$([ "$kind" = PostgreSQL ] && echo pg || echo my).XXXXXX") \
            || csql_die "cannot create a temp dir for $kind"
        csql_defer "$CSQL_REPO/scripts/db/$stop" "$dir"
        # A private tmpdir: concurrent mariadb-install-db runs sharing /tmp sometimes
        # fail ("Unknown table 'mysql.tmp_user_sys'" after a temp table vanished).
        mkdir "$dir/tmp"
        port=$(csql_db_port)
        if out=$(env "$portvar=$port" TMPDIR="$dir/tmp" CSQL_IAM_SOURCE="$iam" \
            "$CSQL_REPO/scripts/db/$start" "$dir" 2>"$dir/tmp/start.err"); then
            eval "$out"
            return 0
        fi
        if grep -q 'Address already in use' "$dir/tmp/start.err"; then
            csql_log "$kind: port $port was taken meanwhile (attempt $attempt), retrying"
            continue
        fi
        cat "$dir/tmp/start.err" >&2
        csql_die "$kind did not start (scripts/db/$start $dir)"
    done
    cat "$dir/tmp/start.err" >&2
    csql_die "$kind did not start after 4 attempts (ports kept being taken)"
}

csql_start_pg() {
    _csql_start_db PostgreSQL pg-start.sh pg-stop.sh "${1:-}"
    csql_log "PostgreSQL on 127.0.0.1:$CSQL_PG_PORT${1:+ (IAM trust from $1)}"
}

csql_pg_admin() {
    psql -X -q -h "$CSQL_PG_SOCKDIR" -p "$CSQL_PG_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 -At -c "$1"
}

csql_start_mariadb() {
    _csql_start_db MariaDB mariadb-start.sh mariadb-stop.sh "${1:-}"
    csql_log "MariaDB on 127.0.0.1:$CSQL_MY_PORT${1:+ (IAM users from $1)}"
}

csql_my_admin() {
    mariadb --no-defaults --socket="$CSQL_MY_SOCKET" -uroot -NB -e "$1"
}

csql_start_emulator() {
    [ -n "${CSQL_EMULATOR:-}" ] && [ -x "$CSQL_EMULATOR" ] \
        || csql_die "CSQL_EMULATOR must name the csql-emulator executable (got '${CSQL_EMULATOR:-}')"
    local dir
    csql_tempdir dir csql-emu
    "$CSQL_EMULATOR" "$@" >"$dir/stdout" 2>"$dir/stderr" </dev/null &
    EMU_PID=$!
    EMU_DIR=$dir
    csql_defer _csql_stop_emulator "$EMU_PID" "$dir"
    if ! csql_wait_file_line "$dir/stdout" 30; then
        cat "$dir/stderr" >&2
        csql_die "csql-emulator did not print its URL within 30 s (args: $*)"
    fi
    EMU_URL=$(head -n1 "$dir/stdout")
    case "$EMU_URL" in
        http://*) ;;
        *) cat "$dir/stderr" >&2; csql_die "csql-emulator printed '$EMU_URL', not a URL" ;;
    esac
    csql_log "csql-emulator pid $EMU_PID at $EMU_URL"
}

# SIGTERM must make the emulator exit 0 (under ASan this also means no leaks).
_csql_stop_emulator() {
    local pid=$1 dir=$2 i rc
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        csql_fail_at_exit "csql-emulator (pid $pid) ignored SIGTERM for 15 s and was killed"
        rc=137
    else
        wait "$pid" 2>/dev/null
        rc=$?
        [ "$rc" -eq 0 ] || csql_fail_at_exit "csql-emulator exited with status $rc after SIGTERM"
    fi
    if [ "$rc" -ne 0 ] || [ "$CSQL_EXIT_RC" -ne 0 ]; then
        echo "----- csql-emulator stderr (last 60 lines) -----" >&2
        tail -n 60 "$dir/stderr" >&2
        echo "-----" >&2
    fi
}

csql_emu_admin() {
    local method=$1 path=$2 body=${3:-} out status
    local args=(-sS -m 10 -X "$method" -o /dev/stdout -w '\n%{http_code}')
    [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
    out=$(curl "${args[@]}" "$EMU_URL$path") || csql_die "emulator admin $method $path: curl failed"
    status=${out##*$'\n'}
    out=${out%$'\n'*}
    case "$status" in
        2??) printf '%s\n' "$out" ;;
        *) csql_die "emulator admin $method $path${body:+ $body}: HTTP $status: $out" ;;
    esac
}

csql_start_v1proxy() {
    local url=$1 token=$2 instances=$3 dir i
    shift 3
    command -v cloud_sql_proxy >/dev/null || csql_die "cloud_sql_proxy not installed (run scripts/setup.sh)"
    csql_tempdir dir csql-v1proxy
    V1_LOG=$dir/log
    : >"$V1_LOG"
    cloud_sql_proxy -host "$url/" -token "$token" -instances="$instances" -dir "$dir" "$@" \
        </dev/null >"$V1_LOG" 2>&1 &
    V1_PID=$!
    csql_defer _csql_stop_v1proxy "$V1_PID" "$V1_LOG"
    for ((i = 0; i < 300; i++)); do
        grep -q 'Ready for new connections' "$V1_LOG" && break
        kill -0 "$V1_PID" 2>/dev/null || { cat "$V1_LOG" >&2; csql_die "cloud_sql_proxy exited at startup"; }
        sleep 0.05
    done
    grep -q 'Ready for new connections' "$V1_LOG" \
        || { cat "$V1_LOG" >&2; csql_die "cloud_sql_proxy not ready within 15 s"; }
    csql_log "cloud_sql_proxy (Google, v1) pid $V1_PID for $instances"
}

_csql_stop_v1proxy() {
    local pid=$1 log=$2 i
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    if [ "$CSQL_EXIT_RC" -ne 0 ]; then
        echo "----- cloud_sql_proxy log (last 40 lines) -----" >&2
        tail -n 40 "$log" >&2
        echo "-----" >&2
    fi
    return 0
}
