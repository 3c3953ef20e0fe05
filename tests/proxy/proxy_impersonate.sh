#!/usr/bin/env bash
# csql-proxy --impersonate-service-account end to end: base credentials from a
# service account key the emulator wrote, impersonation through the emulator's
# IAM Credentials generateAccessToken (--iam-credentials-endpoint), then psql
# through the proxy, with a password and with automatic IAM authn as the
# *target* account (so the token that reached the database is the target's).
# A delegation chain a,b,c sends target a with delegates [c, b] (the Auth
# Proxy's order). Failures: permission denied at startup fails the start (exit
# 1, the account named); an unknown target at connection time closes that
# client with a logged line naming the account, the proxy stays up and serves
# again once IAM answers. Bad chains and endpoints: exit 1, one line.
#
# The emulator accepts delegates without recording them, so the proxy's IAM
# requests go through relay.py (a recording relay in front of the emulator:
# request path and JSON body, no headers) to see them.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
. "$(dirname "$0")/lib.sh"
CSQL_SCRIPT_NAME=proxy-impersonate
csql_deadline 240

iam_src=$(csql_unique_ip 50)
listen=$(csql_unique_ip 10)
http_ip=$(csql_unique_ip 11)
pg1=proj-$$:us-central1:pg1
sa=emulator-project.iam.gserviceaccount.com
target=db-runner-$$@$sa
d1=delegate-one-$$@$sa
d2=delegate-two-$$@$sa
target_db=${target%.gserviceaccount.com}
d1_db=${d1%.gserviceaccount.com}
base_db=csql-test@emulator-project.iam # the key file's own account

csql_start_pg "$iam_src"
for u in "$target_db" "$d1_db" "$base_db"; do csql_pg_admin "create role \"$u\" login"; done
csql_tempdir creds csql-proxy-imp-creds
rmdir "$creds" # the emulator makes it (mode 0700)
csql_start_emulator --backend-source "$iam_src" --write-credentials "$creds" \
    --instance "$pg1?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_PG_PORT"
csql_tempdir work csql-proxy-imp

record=$work/iam-requests.jsonl
proxy_start_relay "$EMU_URL" "$record"
relay=$RELAY_URL

export PGPASSWORD=$CSQL_PG_PASSWORD PGCONNECT_TIMEOUT=20
q() { timeout 60 psql -X -At -v ON_ERROR_STOP=1 "host=$listen port=$1 user=${3:-postgres} dbname=postgres sslmode=disable" -c "$2"; }
imp=(--credentials-file "$creds/service_account.json" --sqladmin-api-endpoint "$EMU_URL"
     --iam-credentials-endpoint "$relay" --address "$listen")

# ---- one target ----
proxy_start single "${imp[@]}" --impersonate-service-account "$target" --port 7100 \
    "$pg1" "$pg1?auto-iam-authn=true"
proxy_wait_ready
csql_expect "impersonated: psql with a password" "42|postgres" "$(q 7100 'select 40 + 2, current_user')"
csql_expect "impersonated: IAM authn logs in as the target, not the key's account" "$target_db" \
    "$(PGPASSWORD= q 7101 'select current_user' "$target_db")"
if PGPASSWORD= q 7101 'select 1' "$base_db" >"$work/base.out" 2>&1; then
    csql_die "the key file's own account logged in through an impersonating proxy"
fi
jq -e -s --arg p "/v1/projects/-/serviceAccounts/$target:generateAccessToken" \
    'length >= 2 and all(.[]; .path == $p and (.body | has("delegates") | not))' "$record" >/dev/null \
    || { cat "$record" >&2; csql_die "single target: expected generateAccessToken for $target without delegates"; }
jq -e -s 'any(.[]; .body.scope == ["https://www.googleapis.com/auth/sqlservice.login"])' "$record" >/dev/null \
    || { cat "$record" >&2; csql_die "no login-scoped impersonated token was asked for (IAM authn)"; }
grep -q "csql: dialer ready: .*$target impersonated by service account csql-test@$sa" "$PROXY_LOG" \
    || csql_die "the log does not say which account is impersonated by which"
! grep -q 'ya29\.\|PRIVATE KEY\|Bearer' "$PROXY_LOG" || csql_die "a token or key appears in the log"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143
csql_log "ok: single target ($(wc -l <"$record") generateAccessToken requests)"

# ---- a delegation chain a,b,c through the environment ----
: >"$record"
CSQL_PROXY_IMPERSONATE_SERVICE_ACCOUNT="$target,$d1,$d2" CSQL_PROXY_IAM_CREDENTIALS_ENDPOINT="$relay" \
    proxy_start chain --credentials-file "$creds/service_account.json" --sqladmin-api-endpoint "$EMU_URL" \
    --address "$listen" --port 7200 --auto-iam-authn "$pg1"
proxy_wait_ready
csql_expect "chain: IAM authn as the target (first in the chain)" "$target_db" \
    "$(PGPASSWORD= q 7200 'select current_user' "$target_db")"
if PGPASSWORD= q 7200 'select 1' "$d1_db" >/dev/null 2>&1; then csql_die "chain: a delegate logged in"; fi
jq -e -s --arg p "/v1/projects/-/serviceAccounts/$target:generateAccessToken" \
    --arg d2 "projects/-/serviceAccounts/$d2" --arg d1 "projects/-/serviceAccounts/$d1" \
    'length >= 2 and all(.[]; .path == $p and .body.delegates == [$d2, $d1])' "$record" >/dev/null \
    || { cat "$record" >&2; csql_die "chain: expected target $target with delegates [$d2, $d1]"; }
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143
csql_log "ok: chain target,d1,d2 sent as target with delegates [d2, d1]"

# ---- permission denied at startup: the start fails, naming the account ----
csql_emu_admin POST /emulator/faults \
    '{"endpoint":"generateAccessToken","status":403,"reason":"PERMISSION_DENIED","message":"Permission iam.serviceAccounts.getAccessToken denied on resource (or it may not exist)."}' >/dev/null
rc=0
timeout 60 "$CSQL_PROXY" "${imp[@]}" --impersonate-service-account "$target" "$pg1" >"$work/denied.log" 2>&1 || rc=$?
csql_expect "permission denied at startup: exit status" 1 "$rc"
last=$(tail -n1 "$work/denied.log")
csql_log "failed start: $last"
csql_expect_contains "startup failure names the target" "generateAccessToken for $target" "$last"
csql_expect_contains "startup failure gives the reason" "403" "$last"
csql_expect_contains "startup failure names the instance" "[$pg1]" "$last"
! grep -q 'ya29\.\|PRIVATE KEY' "$work/denied.log" || csql_die "a token or key appears in the failed start's log"
csql_emu_admin DELETE /emulator/faults >/dev/null

# ---- unknown target at connection time: that client is closed, the proxy stays up ----
csql_emu_admin POST /emulator/faults \
    '{"endpoint":"generateAccessToken","status":404,"reason":"NOT_FOUND","message":"Requested entity was not found."}' >/dev/null
proxy_start unknown "${imp[@]}" --impersonate-service-account "$target" --port 7300 \
    --health-check --prometheus --http-address "$http_ip" "$pg1"
proxy_wait_ready
t0=$(date +%s%3N)
if q 7300 'select 1' >"$work/unknown.out" 2>&1; then csql_die "a session worked while IAM answered 404"; fi
took=$(( $(date +%s%3N) - t0 ))
csql_log "client saw after $took ms: $(tr '\n' ' ' <"$work/unknown.out")"
[ "$took" -lt 20000 ] || csql_die "the failing client waited $took ms"
for ((i = 0; i < 100; i++)); do grep -q "\[$pg1\] failed to connect to instance" "$PROXY_LOG" && break; sleep 0.05; done
line=$(grep "\[$pg1\] failed to connect to instance" "$PROXY_LOG" | head -n1)
csql_log "logged: $line"
csql_expect_contains "dial failure log names the target" "generateAccessToken for $target" "$line"
csql_expect_contains "dial failure log gives the status" "404" "$line"
kill -0 "$PROXY_PID" || csql_die "the proxy exited after a failed impersonation"
csql_expect "/liveness after the failure" "200 ok" "$(proxy_http "http://$http_ip:9090/liveness")"
csql_expect "/readiness after the failure" "200 ok" "$(proxy_http "http://$http_ip:9090/readiness")"
metrics=$(curl -sS -m 10 "http://$http_ip:9090/metrics")
fails=$(proxy_metric "$metrics" "cloudsqlconn_dial_failure_count{cloudsql_instance=\"$pg1\"}")
[ "$fails" != missing ] && [ "$fails" -ge 1 ] || csql_die "dial failure not counted ($fails)"
csql_emu_admin DELETE /emulator/faults >/dev/null
ok=""
for ((i = 0; i < 90; i++)); do
    if out=$(q 7300 'select 7' 2>/dev/null) && [ "$out" = 7 ]; then ok=1; break; fi
    sleep 0.5
done
[ -n "$ok" ] || csql_die "the proxy did not serve again within 45 s once IAM answered"
csql_log "ok: served again $((($(date +%s%3N) - t0) / 1000)) s after the first failure"
kill -TERM "$PROXY_PID"
proxy_expect_exit "$PROXY_PID" 143

# ---- bad chains and endpoints: exit 1, one line naming the flag ----
bad() {
    local what=$1 needle=$2 out rc
    shift 2
    rc=0
    out=$(timeout 30 "$CSQL_PROXY" "$@" 2>&1 </dev/null) || rc=$?
    csql_expect "$what: exit status" 1 "$rc"
    csql_expect "$what: lines of output" 1 "$(printf '%s\n' "$out" | wc -l)"
    csql_expect_contains "$what" "$needle" "$out"
}
bad "empty chain entry" '--impersonate-service-account' "${imp[@]}" --impersonate-service-account "$target,,$d1" "$pg1"
bad "not an email" 'not a service account email' "${imp[@]}" --impersonate-service-account 'a/../b' "$pg1"
bad "IAM endpoint not loopback http" '--iam-credentials-endpoint' --credentials-file "$creds/service_account.json" \
    --impersonate-service-account "$target" --iam-credentials-endpoint http://example.com "$pg1"
bad "IAM endpoint without impersonation" '--iam-credentials-endpoint needs --impersonate-service-account' \
    --iam-credentials-endpoint "$relay" "$pg1"
csql_log "PASS: impersonation (single, chain), IAM authn as the target, failures named, proxy stays up"
