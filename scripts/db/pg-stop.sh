#!/usr/bin/env bash
# Stop the throwaway PostgreSQL started in DIR by pg-start.sh and remove DIR.
set -uo pipefail
dir=${1:?usage: pg-stop.sh DIR}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
if [ -f "$dir/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 \
        || kill -9 "$(head -n1 "$dir/data/postmaster.pid")" 2>/dev/null
fi
case "$dir" in
    /tmp/*) rm -rf "$dir" ;;
    *) echo "pg-stop: not removing $dir (outside /tmp)" >&2 ;;
esac
