#!/usr/bin/env bash
# Install the pinned npm packages (package-lock.json) into tests/interop/node/node_modules
# unless they are already there for this exact lock file. Safe to run concurrently.
set -euo pipefail
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "ensure-deps: npm not found (run scripts/setup.sh)" >&2; exit 1; }

want=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.csql-lock-sha256
exec 9>.npm-install.lock
flock -w 300 9 || { echo "ensure-deps: timed out waiting for another npm install" >&2; exit 1; }
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "ensure-deps: npm ci (pinned @google-cloud/cloud-sql-connector, pg, mysql2, google-auth-library)" >&2
timeout 300 npm ci --no-audit --no-fund --loglevel=error >&2 \
    || { echo "ensure-deps: npm ci failed in $(pwd) (is the npm registry reachable?)" >&2; exit 1; }
echo "$want" >"$stamp"
