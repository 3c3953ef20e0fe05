#!/usr/bin/env bash
# csql-proxy configured without flags: CSQL_PROXY_* environment variables
# (instances as CSQL_PROXY_INSTANCE_CONNECTION_NAME_N), JSON, TOML and YAML config
# files, and precedence (flag > environment > file). Bad values: exit 1 with
# one line naming the culprit. Logs: --structured-logs JSON lines, --quiet,
# and the token never in a log line nor in /proc/PID/cmdline. Credentials from
# a service account file, authorized-user JSON (env) and service account JSON
# (-j, scrubbed from the argument list).
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
CSQL_SCRIPT_NAME=proxy-config
csql_deadline 240

token=proxy-secret-token-$$
listen=$(csql_unique_ip 10)
http_ip=$(csql_unique_ip 11)
pg1=proj-$$:us-central1:pg1
pg2=proj-$$:us-central1:pg2

csql_start_pg
csql_tempdir creds csql-proxy-creds
rmdir "$creds" # the emulator makes it (mode 0700)
csql_start_emulator --static-token "$token" --write-credentials "$creds" \
    --instance "$pg1?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_PG_PORT" \
    --instance "$pg2?version=POSTGRES_15&public-ip=$(csql_unique_ip 2)&backend=127.0.0.1:$CSQL_PG_PORT"
csql_tempdir work csql-proxy-config
export PGPASSWORD=$CSQL_PG_PASSWORD PGCONNECT_TIMEOUT=20
q() { timeout 60 psql -X -At -v ON_ERROR_STOP=1 "host=$listen port=$1 user=postgres dbname=postgres sslmode=disable" -c "$2"; }

# ---- environment only ----
env_vars=(CSQL_PROXY_TOKEN="$token" CSQL_PROXY_SQLADMIN_API_ENDPOINT="$EMU_URL"
          CSQL_PROXY_ADDRESS="$listen" CSQL_PROXY_PORT=7100 CSQL_PROXY_STRUCTURED_LOGS=true
          CSQL_PROXY_HEALTH_CHECK=true CSQL_PROXY_HTTP_ADDRESS="$http_ip"
          CSQL_PROXY_EXIT_ZERO_ON_SIGTERM=true
          CSQL_PROXY_INSTANCE_CONNECTION_NAME_0="$pg1" CSQL_PROXY_INSTANCE_CONNECTION_NAME_1="$pg2")
export "${env_vars[@]}"
proxy_start env
unset "${env_vars[@]%%=*}"
proxy_wait_ready
csql_expect "env: first instance on 7100" 1 "$(q 7100 'select 1')"
csql_expect "env: second instance on 7101" 2 "$(q 7101 'select 2')"
csql_expect "env: health check on" "200 ok" "$(proxy_http "http://$http_ip:9090/readiness")"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 0
# Every line is JSON with severity, message and timestamp; the token never appears.
jq -e -s 'all(.[]; has("severity") and has("message") and has("timestamp"))' "$PROXY_LOG" >/dev/null \
    || csql_die "structured logs: not every line is a JSON object with severity, message, timestamp"
jq -e -s 'any(.[]; .message == "The proxy has started successfully and is ready for new connections!" and .severity == "INFO")' \
    "$PROXY_LOG" >/dev/null || csql_die "structured logs: no INFO ready line"
! grep -q "$token" "$PROXY_LOG" || csql_die "the token appears in the logs"
csql_log "ok: $(wc -l <"$PROXY_LOG") structured log lines, all JSON, no token"

# ---- JSON config file, overridden by the environment and by flags ----
cat >"$work/proxy.json" <<JSON
{"token": "$token", "sqladmin-api-endpoint": "$EMU_URL", "address": "$listen",
 "port": 7200, "debug-logs": true,
 "instance-connection-name": "$pg1", "instance-connection-name-1": "$pg2?port=7300"}
JSON
CSQL_PROXY_PORT=7210 proxy_start json --config-file "$work/proxy.json"
proxy_wait_ready
csql_expect "json: environment beats the file (port 7210)" 1 "$(q 7210 'select 1')"
csql_expect "json: per-instance query from the file (port 7300)" 2 "$(q 7300 'select 2')"
grep -q 'csql: refresh' "$PROXY_LOG" || csql_die "json: debug-logs from the file not applied"
! grep -q "$token" "$PROXY_LOG" || csql_die "the token appears in the debug logs"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- TOML config file; flags beat it; --quiet ----
cat >"$work/proxy.toml" <<TOML
# csql-proxy settings
token = "$token"
sqladmin-api-endpoint = "$EMU_URL"
address = "$listen"
port = 7400
quiet = true
instance-connection-name = "$pg1"
TOML
proxy_start toml --config-file "$work/proxy.toml" --port 7410 "$pg2"
for ((i = 0; i < 200; i++)); do q 7410 'select 1' >/dev/null 2>&1 && break; sleep 0.05; done
csql_expect "toml: the flag's port and instance win" 2 "$(q 7410 'select 2')"
[ ! -s "$PROXY_LOG" ] || { cat "$PROXY_LOG" >&2; csql_die "--quiet from the file: info lines were logged"; }
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- YAML config file (the Auth Proxy's underscore spelling); the environment beats it ----
cat >"$work/proxy.yaml" <<YAML
# csql-proxy settings
token: "$token"
sqladmin_api_endpoint: $EMU_URL
address: '$listen'
port: 7800
exit-zero-on-sigterm: true
instance_connection_name_0: "$pg1"
instance_connection_name_1: $pg2?port=7900
YAML
CSQL_PROXY_EXIT_ZERO_ON_SIGTERM=false proxy_start yaml --config-file "$work/proxy.yaml"
proxy_wait_ready
csql_expect "yaml: first instance on the file's port" 1 "$(q 7800 'select 1')"
csql_expect "yaml: second instance's query" 2 "$(q 7900 'select 2')"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# The token given as a flag is not visible in /proc/PID/cmdline.
proxy_start cmdline --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$listen" --port 7500 "$pg1"
proxy_wait_ready
! tr '\0' ' ' <"/proc/$PROXY_PID/cmdline" | grep -q "$token" || csql_die "the token is visible in /proc/$PROXY_PID/cmdline"
csql_expect_contains "cmdline after scrubbing" "--token xxxxx" "$(tr '\0' ' ' <"/proc/$PROXY_PID/cmdline")"

# ---- credentials: a service account file, and authorized-user JSON in the environment ----
proxy_start creds-file --credentials-file "$creds/service_account.json" \
    --sqladmin-api-endpoint "$EMU_URL" --address "$listen" --port 7600 "$pg1"
proxy_wait_ready
csql_expect "--credentials-file (service account, JWT grant)" 1 "$(q 7600 'select 1')"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143
CSQL_PROXY_JSON_CREDENTIALS=$(cat "$creds/authorized_user.json") proxy_start creds-json \
    --sqladmin-api-endpoint "$EMU_URL" --address "$listen" --port 7700 "$pg1"
proxy_wait_ready
csql_expect "CSQL_PROXY_JSON_CREDENTIALS (authorized user, refresh grant)" 1 "$(q 7700 'select 1')"
! grep -q 'refresh_token\|client_secret\|PRIVATE KEY' "$PROXY_LOG" || csql_die "credentials appear in the logs"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# -j on the command line: scrubbed from /proc/PID/cmdline once read. The endpoint's
# trailing '/' (as often copied from Google's docs) is fine.
proxy_start creds-flag -j "$(cat "$creds/service_account.json")" --sqladmin-api-endpoint "$EMU_URL/" \
    --address "$listen" --port 7750 "$pg1"
proxy_wait_ready
csql_expect "-j (service account JSON), endpoint with a trailing /" 1 "$(q 7750 'select 1')"
key_line=$(jq -r .private_key "$creds/service_account.json" | sed -n 2p)
! tr '\0' '\n' <"/proc/$PROXY_PID/cmdline" | grep -qF -- "$key_line" || csql_die "the private key is visible in /proc/$PROXY_PID/cmdline"
! grep -qF -- "$key_line" "$PROXY_LOG" || csql_die "the private key appears in the log"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- bad configuration: exit 1, one line naming it ----
bad() {
    local what=$1 needle=$2 out rc
    shift 2
    rc=0
    out=$("$@" 2>&1) || rc=$?
    csql_expect "$what: exit status" 1 "$rc"
    csql_expect "$what: lines of output" 1 "$(printf '%s\n' "$out" | wc -l)"
    csql_expect_contains "$what" "$needle" "$out"
    ! grep -q "$token" <<<"$out" || csql_die "$what: the token appears in the message"
}
bad "bad port" '--port "x": not a port number' "$CSQL_PROXY" --port x "$pg1"
bad "bad env bool" 'CSQL_PROXY_PRIVATE_IP "maybe": not a boolean' env CSQL_PROXY_PRIVATE_IP=maybe "$CSQL_PROXY" "$pg1"
bad "unknown flag" 'unknown flag --prot' "$CSQL_PROXY" --prot 1 "$pg1"
bad "unsupported flag" '--fuse is an Auth Proxy flag that csql-proxy does not support' "$CSQL_PROXY" --fuse /tmp/x
bad "conflict" '--unix-socket and --port cannot be used together' "$CSQL_PROXY" -u "$work" -p 5000 "$pg1"
bad "query conflict" 'address cannot be combined with unix-socket' "$CSQL_PROXY" "$pg1?address=127.0.0.1&unix-socket=/tmp"
bad "bad instance" '"nope" is not an instance connection name' "$CSQL_PROXY" nope
bad "no instance" 'no instance given' "$CSQL_PROXY" --port 5000
bad "yaml config file" 'bad.yaml: line 2: "port" is a list' "$CSQL_PROXY" --config-file "$(printf 'token: %s\nport: [1, 2]\n' "$token" >"$work/bad.yaml"; echo "$work/bad.yaml")"
bad "config file key" 'unknown key "prot"' "$CSQL_PROXY" --config-file "$(printf '{"prot": 1}' >"$work/bad.json"; echo "$work/bad.json")"
bad "token conflict" '--token and --credentials-file cannot be used together' "$CSQL_PROXY" -t "$token" -c /x.json "$pg1"
bad "bad endpoint" '--sqladmin-api-endpoint' "$CSQL_PROXY" -t "$token" --sqladmin-api-endpoint http://example.com "$pg1"
bad "bad credentials file" 'credentials' "$CSQL_PROXY" -c /nonexistent.json "$pg1"
bad "too many event loops" '--event-loops: 65 is out of range (0 = one per CPU, or 1..64)' "$CSQL_PROXY" -t "$token" --event-loops 65 "$pg1"
bad "bad event loops in env" 'CSQL_PROXY_EVENT_LOOPS "two": not a non-negative integer' env CSQL_PROXY_EVENT_LOOPS=two "$CSQL_PROXY" "$pg1"
csql_log "PASS: environment, JSON, TOML and YAML config, precedence, bad values, logs without secrets"
