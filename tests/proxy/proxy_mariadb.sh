#!/usr/bin/env bash
# csql-proxy with MariaDB (a MYSQL_8_0 instance): the mariadb client through a
# TCP listener on the default port 3306, a Unix socket file DIR/p:r:i,
# --unix-socket-path, and automatic IAM authn (user = principal before '@').
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
CSQL_SCRIPT_NAME=proxy-mariadb
csql_deadline 240

token=proxy-token-$$
iam_src=$(csql_unique_ip 50)
listen=$(csql_unique_ip 10)
my=proj-$$:us-central1:my
iam_user=static-user

csql_start_mariadb "$iam_src"
csql_my_admin "create user '$iam_user'@'$iam_src'; grant all on appdb.* to '$iam_user'@'$iam_src';"
csql_start_emulator --static-token "$token" --backend-source "$iam_src" \
    --instance "$my?version=MYSQL_8_0&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_MY_PORT"
csql_tempdir sockets csql-proxy-sock

proxy_start my --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$listen" \
    "$my" "$my?unix-socket=$sockets" "$my?unix-socket-path=$sockets/mysqld.sock&auto-iam-authn=true"
proxy_wait_ready
grep -q "\[$my\] Listening on $listen:3306" "$PROXY_LOG" || csql_die "not on $listen:3306"
[ -S "$sockets/$my" ] || csql_die "no socket file $sockets/$my"
[ -S "$sockets/mysqld.sock" ] || csql_die "no socket file $sockets/mysqld.sock"

m() { timeout 60 mariadb --no-defaults --connect-timeout=20 -N -B "$@" | tr '\t' '|'; }
pw=(-u"$CSQL_MY_USER" -p"$CSQL_MY_PASSWORD")
csql_expect "mariadb TCP 3306" "42|app@%" \
    "$(m --protocol=TCP -h "$listen" -P 3306 "${pw[@]}" -e 'select 40 + 2, current_user()')"
csql_expect "mariadb Unix socket" "43|app@%" \
    "$(m --socket="$sockets/$my" "${pw[@]}" -e 'select 43, current_user()')"
csql_expect "mariadb IAM authn over --unix-socket-path (no password)" "$iam_user@$iam_src" \
    "$(m --socket="$sockets/mysqld.sock" -u"$iam_user" appdb -e 'select current_user()')"

# A session with several statements and a 4 MB result, checked end to end.
sum_sql="set session group_concat_max_len = 1 << 30; select md5(group_concat(md5(seq) order by seq separator '')) from appdb.seq_1_to_100000"
want=$(m --protocol=TCP -h 127.0.0.1 -P "$CSQL_MY_PORT" "${pw[@]}" -e "$sum_sql")
got=$(m --protocol=TCP -h "$listen" -P 3306 "${pw[@]}" -e "$sum_sql")
csql_expect "md5 over 100000 rows" "$want" "$got"
bytes=$(m --protocol=TCP -h "$listen" -P 3306 "${pw[@]}" -e "select repeat('x', 1000) from appdb.seq_1_to_4000" | wc -c)
csql_expect "bytes of a 4 MB result" 4004000 "$bytes"
m --protocol=TCP -h "$listen" -P 3306 "${pw[@]}" appdb -e "create table t (i int); insert into t values (1), (2), (3);"
csql_expect "write then read" 6 "$(m --socket="$sockets/$my" "${pw[@]}" appdb -e 'select sum(i) from t')"

# Twenty clients at once, each its own dial.
pids=()
for i in $(seq 1 20); do
    m --protocol=TCP -h "$listen" -P 3306 "${pw[@]}" -e "select $i" >"$sockets/out.$i" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do
    wait "$p" || true
done
for i in $(seq 1 20); do
    csql_expect "parallel client $i" "$i" "$(cat "$sockets/out.$i")"
done

# No thread per connection: 20 sessions open at once (each holds 2 sockets in the
# proxy) leave the proxy's thread count as it was.
threads_before=$(ls /proc/"$PROXY_PID"/task | wc -l)
fds_before=$(ls /proc/"$PROXY_PID"/fd | wc -l)
pids=()
for i in $(seq 1 20); do
    m --protocol=TCP -h "$listen" -P 3306 "${pw[@]}" -e "do sleep(3)" >/dev/null 2>&1 &
    pids+=($!)
done
for ((i = 0; i < 100; i++)); do
    [ $(($(ls /proc/"$PROXY_PID"/fd | wc -l) - fds_before)) -ge 40 ] && break
    sleep 0.05
done
fds_open=$(($(ls /proc/"$PROXY_PID"/fd | wc -l) - fds_before))
threads_open=$(ls /proc/"$PROXY_PID"/task | wc -l)
for p in "${pids[@]}"; do wait "$p" || csql_die "a sleeping session failed"; done
[ "$fds_open" -ge 40 ] || csql_die "only $fds_open more fds with 20 sessions open"
csql_expect "threads with 20 sessions open (as with none)" "$threads_before" "$threads_open"

kill -INT "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 130
[ ! -e "$sockets/$my" ] || csql_die "socket $sockets/$my left behind"
csql_log "PASS: mariadb through TCP, Unix sockets and IAM authn; no thread per connection; SIGINT 130"
