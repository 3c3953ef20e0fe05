#!/usr/bin/env bash
# The emulator's SQL Admin API refuses requests without a valid bearer token
# (missing, unknown or expired: 401 with a Google error body), and Google's v1
# proxy given a bad token cannot connect, while the same setup with a good
# token does.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
CSQL_SCRIPT_NAME=refuse-token
csql_deadline 150

token=interop-token-$$
server_ip=$(csql_unique_ip 1)
good_listen=$(csql_unique_ip 10)
bad_listen=$(csql_unique_ip 11)
project=proj-$$
conn=$project:us-central1:pg
csql_tempdir T csql-token

csql_start_pg
# Issued tokens live 3 s, so one can be used once and then seen expired.
csql_start_emulator --static-token "$token" --token-lifetime 3 --write-credentials "$T/creds" \
    --instance "$conn?version=POSTGRES_15&public-ip=$server_ip&backend=127.0.0.1:$CSQL_PG_PORT"

base=$EMU_URL/sql/v1beta4/projects/$project/instances/pg
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null | openssl pkey -pubout >"$T/pub.pem"
pubkey_body=$(jq -n --rawfile k "$T/pub.pem" '{public_key: $k}')

# call AUTH-HEADER-OR-EMPTY: every Admin API endpoint Google's clients use, once;
# prints "PATH=STATUS ..." (PATH "/" is the legacy GET instance).
call() {
    local auth=$1 ep m path status results=()
    for ep in "GET /connectSettings" "POST :generateEphemeralCert" "GET " "POST /createEphemeral"; do
        m=${ep%% *}
        path=${ep#* }
        local args=(-sS -m 15 -o "$T/body" -w '%{http_code}' -X "$m")
        [ -n "$auth" ] && args+=(-H "Authorization: $auth")
        [ "$m" = POST ] && args+=(-H 'Content-Type: application/json' --data-binary "$pubkey_body")
        status=$(curl "${args[@]}" "$base$path") || csql_die "curl $m $base$path failed"
        if [ "$status" = 401 ] && [ "$(jq -r '.error.code' "$T/body" 2>/dev/null)" != 401 ]; then
            csql_die "$m $path: 401 without a Google error body: $(cat "$T/body")"
        fi
        results+=("${path:-/}=$status")
    done
    echo "${results[*]}"
}

all_ok="/connectSettings=200 :generateEphemeralCert=200 /=200 /createEphemeral=200"
all_401="/connectSettings=401 :generateEphemeralCert=401 /=401 /createEphemeral=401"
csql_expect "good static token" "$all_ok" "$(call "Bearer $token")"
csql_expect "no Authorization header" "$all_401" "$(call "")"
csql_expect "unknown token" "$all_401" "$(call "Bearer not-$token")"
csql_expect "Basic instead of Bearer" "$all_401" "$(call "Basic $(printf 'user:%s' "$token" | base64)")"

# An issued token (authorized_user refresh-token grant at the emulator's token
# URI) works until it expires, then gets 401.
creds=$T/creds/authorized_user.json
[ -f "$creds" ] || csql_die "--write-credentials did not write $creds"
token_uri=$(jq -er '.token_uri' "$creds")
resp=$(curl -sS -m 15 --fail-with-body "$token_uri" \
    --data-urlencode grant_type=refresh_token \
    --data-urlencode "client_id=$(jq -er .client_id "$creds")" \
    --data-urlencode "client_secret=$(jq -er .client_secret "$creds")" \
    --data-urlencode "refresh_token=$(jq -er .refresh_token "$creds")") \
    || csql_die "token endpoint $token_uri refused the authorized_user grant: $resp"
issued=$(jq -er .access_token <<<"$resp")
expires_in=$(jq -er .expires_in <<<"$resp")
csql_log "issued token expires in ${expires_in}s"
got=$(call "Bearer $issued")
csql_expect "fresh issued token" "$all_ok" "$got"
sleep $((expires_in + 1))
csql_expect "expired issued token" "$all_401" "$(call "Bearer $issued")"

# Google's v1 proxy with a bad token: it looks the instance up at startup, gets
# 401, and exits without listening, so no client can connect through it.
v1log=$T/v1-bad-token.log
set +e
timeout 60 cloud_sql_proxy -host "$EMU_URL/" -token "wrong-$token" \
    -instances="$conn=tcp:$bad_listen:5432" -dir "$T" </dev/null >"$v1log" 2>&1
rc=$?
set -e
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] \
    || { cat "$v1log" >&2; csql_die "cloud_sql_proxy with a bad token did not fail at startup (status $rc)"; }
grep -q 'Error 401' "$v1log" || { cat "$v1log" >&2; csql_die "cloud_sql_proxy's log does not show the 401"; }
csql_log "ok: cloud_sql_proxy with a bad token exited ($rc): $(grep -m1 'Error 401' "$v1log" | sed 's/^[[:space:]]*//')"
if PGPASSWORD=secret timeout 30 psql -X -At "host=$bad_listen port=5432 user=postgres dbname=postgres sslmode=disable connect_timeout=10" \
    -c 'select 40 + 2' >/dev/null 2>&1; then
    csql_die "psql reached a database at $bad_listen:5432 although cloud_sql_proxy refused to start"
fi

# Control: the same proxy with the good token answers.
csql_start_v1proxy "$EMU_URL" "$token" "$conn=tcp:$good_listen:5432"
got=$(PGPASSWORD=secret timeout 60 psql -X -At "host=$good_listen port=5432 user=postgres dbname=postgres sslmode=disable connect_timeout=40" \
    -c 'select 40 + 2') || csql_die "psql through cloud_sql_proxy with the good token failed"
csql_expect "control: good token through cloud_sql_proxy" 42 "$got"

csql_log "PASS: missing, unknown and expired bearer tokens refused"
