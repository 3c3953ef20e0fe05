#!/usr/bin/env bash
# Stop the throwaway MariaDB started in DIR by mariadb-start.sh and remove DIR.
set -uo pipefail
dir=${1:?usage: mariadb-stop.sh DIR}
if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null
fi
case "$dir" in
    /tmp/*) rm -rf "$dir" ;;
    *) echo "mariadb-stop: not removing $dir (outside /tmp)" >&2 ;;
esac
