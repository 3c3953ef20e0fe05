#!/usr/bin/env bash
# The same client sessions through Google's Cloud SQL Proxy v1 (Debian
# cloudsql-proxy) and through csql-proxy, against one csql-emulator in front
# of a real database: where the two overlap (TCP and Unix socket listeners,
# queries, database errors, authentication failures, an unknown instance at
# startup, concurrent clients) the answers must be the same.
# Usage: proxy_v1_compare.sh postgres|mariadb
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
engine=${1:?usage: proxy_v1_compare.sh postgres|mariadb}
CSQL_SCRIPT_NAME="proxy-v1-compare-$engine"
csql_deadline 280

token=proxy-token-$$
v1_ip=$(csql_unique_ip 20)
csql_ip=$(csql_unique_ip 21)
inst=proj-$$:us-central1:db
ghost=proj-$$:us-central1:ghost
case "$engine" in
    postgres) csql_start_pg; version=POSTGRES_15; backend=127.0.0.1:$CSQL_PG_PORT; port=5432 ;;
    mariadb) csql_start_mariadb; version=MYSQL_8_0; backend=127.0.0.1:$CSQL_MY_PORT; port=3306 ;;
    *) csql_die "unknown engine '$engine' (want postgres or mariadb)" ;;
esac
csql_start_emulator --static-token "$token" \
    --instance "$inst?version=$version&public-ip=$(csql_unique_ip 1)&backend=$backend"
csql_tempdir sockets csql-proxy-v1cmp

# An instance the API does not know stops both at startup, with an error exit.
rc=0
timeout 60 cloud_sql_proxy -host "$EMU_URL/" -token "$token" -dir "$sockets" \
    -instances="$inst=tcp:$v1_ip:$port,$ghost=tcp:$v1_ip:$((port + 1))" >"$sockets/v1-ghost.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { cat "$sockets/v1-ghost.log" >&2; csql_die "v1 proxy: exit $rc with an unknown instance"; }
grep -q 'notFound' "$sockets/v1-ghost.log" || csql_die "v1 proxy did not report the unknown instance"
rc=0
timeout 60 "$CSQL_PROXY" --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$csql_ip" \
    "$inst" "$ghost" >"$sockets/csql-ghost.log" 2>&1 || rc=$?
csql_expect "csql-proxy exit status with an unknown instance" 1 "$rc"
grep -q "\[$ghost\] cannot get the instance's details: .*404" "$sockets/csql-ghost.log" \
    || { cat "$sockets/csql-ghost.log" >&2; csql_die "csql-proxy did not report the unknown instance"; }
csql_log "same: an unknown instance fails the start of both (exit status non-zero)"

# Google's v1: TCP and a Unix socket in its -dir. csql-proxy: the same.
csql_start_v1proxy "$EMU_URL" "$token" "$inst=tcp:$v1_ip:$port,$inst"
v1_dir=$(dirname "$V1_LOG")
proxy_start csql --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$csql_ip" \
    "$inst" "$inst?unix-socket=$sockets"
proxy_wait_ready

# One session through (kind, where); prints the client's output and its exit status.
session() {
    local where=$1 sql=$2 user=${3:-} pass=${4:-} out rc=0
    case "$engine" in
        postgres)
            local target
            case "$where" in
                /*) target="host=$where" ;;
                *) target="host=${where%:*} port=${where#*:} sslmode=disable" ;;
            esac
            out=$(PGPASSWORD=${pass:-$CSQL_PG_PASSWORD} PGCONNECT_TIMEOUT=20 timeout 60 psql -X -At -F'|' \
                "$target user=${user:-postgres} dbname=postgres" -c "$sql" 2>&1) || rc=$?
            ;;
        mariadb)
            local target
            case "$where" in
                /*) target=(--socket="$where") ;;
                *) target=(--protocol=TCP -h "${where%:*}" -P "${where#*:}") ;;
            esac
            out=$(timeout 60 mariadb --no-defaults --connect-timeout=20 -N -B "${target[@]}" \
                -u"${user:-$CSQL_MY_USER}" -p"${pass:-$CSQL_MY_PASSWORD}" appdb -e "$sql" 2>&1 | tr '\t' '|') || rc=$?
            ;;
    esac
    # Only the addresses differ between the two; keep the rest.
    out=${out//$v1_ip/ADDR}
    out=${out//$csql_ip/ADDR}
    printf '%s\n[exit %s]' "$out" "$rc"
}

same() {
    local what=$1 v1 ours
    shift
    v1=$(session "$v1_ip:$port" "$@")
    ours=$(session "$csql_ip:$port" "$@")
    [ "$v1" = "$ours" ] || csql_die "$what: v1 proxy said [$v1], csql-proxy said [$ours]"
    csql_log "same: $what -> $(head -c 120 <<<"$v1" | tr '\n' ' ')"
}

case "$engine" in
    postgres)
        same "select and current user" 'select 40 + 2, current_user'
        same "several statements" 'create temp table t(i int); insert into t select generate_series(1, 1000); select count(*), sum(i) from t'
        same "md5 of 100000 rows" "select md5(string_agg(md5(i::text), '' order by i)) from generate_series(1, 100000) i"
        same "a database error" 'select 1/0'
        same "a wrong password" 'select 1' postgres wrong-password
        same "an unknown role" 'select 1' nobody secret
        ;;
    mariadb)
        same "select and current user" 'select 40 + 2, current_user()'
        same "several statements" 'create temporary table t(i int); insert into t select seq from seq_1_to_1000; select count(*), sum(i) from t'
        same "md5 of 100000 rows" "set session group_concat_max_len = 1 << 30; select md5(group_concat(md5(seq) order by seq separator '')) from seq_1_to_100000"
        same "a database error" 'select * from no_such_table'
        same "a wrong password" 'select 1' app wrong-password
        ;;
esac

# Unix sockets: the same path layout under each proxy's directory.
case "$engine" in
    postgres) v1_sock=$v1_dir/$inst; csql_sock=$sockets/$inst; sql='select 7, current_user' ;;
    mariadb) v1_sock=$v1_dir/$inst; csql_sock=$sockets/$inst; sql='select 7, current_user()' ;;
esac
v1=$(session "$v1_sock" "$sql")
ours=$(session "$csql_sock" "$sql")
csql_expect "Unix socket session, v1 then csql-proxy" "$v1" "$ours"

# Concurrent clients: every one gets its own answer through both.
for who in "$v1_ip" "$csql_ip"; do
    pids=()
    for i in $(seq 1 16); do
        session "$who:$port" "select $i" >"$sockets/c.$who.$i" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    for i in $(seq 1 16); do
        csql_expect "16 clients at once via $who: client $i" "$(printf '%s\n[exit 0]' "$i")" "$(cat "$sockets/c.$who.$i")"
    done
done

if [ "$engine" = postgres ]; then
    PGPASSWORD=$CSQL_PG_PASSWORD timeout 120 pgbench -q -i -s 1 \
        "host=$CSQL_PG_SOCKDIR port=$CSQL_PG_PORT user=postgres dbname=postgres" >/dev/null 2>&1 \
        || csql_die "pgbench -i failed"
    for who in "$v1_ip" "$csql_ip"; do
        out=$(PGPASSWORD=$CSQL_PG_PASSWORD timeout 120 pgbench -n -S -c 8 -j 2 -t 200 \
            "host=$who port=$port user=postgres dbname=postgres sslmode=disable" 2>&1) || { echo "$out" >&2; csql_die "pgbench via $who failed"; }
        csql_expect_contains "pgbench via $who" "number of transactions actually processed: 1600/1600" "$out"
        csql_log "pgbench -S 8 clients via $([ "$who" = "$v1_ip" ] && echo 'v1 proxy  ' || echo 'csql-proxy'): $(grep -E '^tps' <<<"$out" | head -1)"
    done
fi
csql_log "PASS: Google's v1 proxy and csql-proxy answer the same ($engine)"
