#!/usr/bin/env bash
# Start a throwaway MariaDB 10.11 in DIR (created if missing; default: a new temp dir).
# Listens on 127.0.0.1:PORT (free port, or $MYPORT) and the unix socket DIR/sock.
# root@localhost via the socket (unix_socket auth); user "app"/"secret" from anywhere;
# database "appdb". Prints: CSQL_MY_DIR, CSQL_MY_PORT, CSQL_MY_SOCKET, CSQL_MY_USER, CSQL_MY_PASSWORD.
# Env: CSQL_IAM_SOURCE=ADDR lets password-less IAM users be created for that host only
# (tests CREATE USER 'name'@'ADDR'); the server also listens on ADDR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

dir=${1:-$(mktemp -d /tmp/csql-my.XXXXXX)}
mkdir -p "$dir/data" "$dir/tmp"
chmod 755 "$dir"
chown -R mysql:mysql "$dir"

# Each server gets its own tmpdir: concurrent installs sharing /tmp collide on
# their temporary tables.
mariadb-install-db --no-defaults --datadir="$dir/data" --tmpdir="$dir/tmp" --user=mysql \
    --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 \
    || { echo "mariadb-start: mariadb-install-db failed, see $dir/install.log" >&2; exit 1; }

bind=127.0.0.1
[ -n "${CSQL_IAM_SOURCE:-}" ] && bind=0.0.0.0

# start_server PORT: start mariadbd and wait for it; non-zero if it died (e.g. port taken).
start_server() {
    rm -f "$dir/err.log"
    setsid mariadbd --no-defaults --datadir="$dir/data" --tmpdir="$dir/tmp" --socket="$dir/sock" \
        --port="$1" --bind-address="$bind" --pid-file="$dir/pid" --log-error="$dir/err.log" \
        --user=mysql --skip-log-bin --innodb-flush-log-at-trx-commit=0 \
        --innodb-buffer-pool-size=64M --open-files-limit=10000 --max-connections=500 \
        --skip-name-resolve --max-allowed-packet=256M </dev/null >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do
        mariadb-admin --no-defaults --socket="$dir/sock" -uroot ping >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null
    return 1
}

port=""
for _ in 1 2 3 4 5; do
    port=${MYPORT:-$(free_port)}
    start_server "$port" && break
    port=""
    # A fixed port that fails will fail again; a random one may have been taken.
    [ -n "${MYPORT:-}" ] && break
done
if [ -z "$port" ]; then
    echo "mariadb-start: server did not come up, see $dir/err.log" >&2
    cat "$dir/err.log" >&2 || true
    exit 1
fi
mariadb --no-defaults --socket="$dir/sock" -uroot -e \
    "CREATE USER 'app'@'%' IDENTIFIED BY 'secret'; GRANT ALL ON *.* TO 'app'@'%'; CREATE DATABASE appdb;"

echo "CSQL_MY_DIR=$dir"
echo "CSQL_MY_PORT=$port"
echo "CSQL_MY_SOCKET=$dir/sock"
echo "CSQL_MY_USER=app"
echo "CSQL_MY_PASSWORD=secret"
