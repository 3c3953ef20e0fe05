#!/usr/bin/env bash
# Interop: Google's Node.js Cloud SQL connector (@google-cloud/cloud-sql-connector,
# pinned in tests/interop/node/package-lock.json; connectSettings +
# generateEphemeralCert, TLS 1.3, strict server identity check) with the pg and
# mysql2 drivers, against real PostgreSQL and MariaDB behind csql-emulator.
# Usage: node.sh legacy|cas|iam|iam-wrong-user|iam-no-token
#   legacy          per-instance self-signed CA; identity = CN project:instance
#   cas             root -> intermediate -> leaf with the instance DNS name in its SAN
#   iam             automatic IAM database authn (authType IAM, no password)
#   iam-wrong-user  IAM certificates do not open other users' sessions
#   iam-no-token    certificates issued without IAM authn give no password-less logins
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
mode=${1:?usage: node.sh legacy|cas|iam|iam-wrong-user|iam-no-token}
CSQL_SCRIPT_NAME="node-$mode"
csql_deadline 200

node_dir=$(cd "$(dirname "$0")/node" && pwd)
"$node_dir/ensure-deps.sh"

token=interop-token-$$
pg_ip=$(csql_unique_ip 1)
my_ip=$(csql_unique_ip 2)
backend_src=$(csql_unique_ip 250)
principal=static-user@emulator.iam.gserviceaccount.com
pg_iam_user=static-user@emulator.iam
my_iam_user=static-user

# node_connect JSON-FIELDS...: one session through the Node connector; prints its JSON result.
node_connect() {
    local json
    json=$(jq -cn --arg api "$EMU_URL" --arg token "$token" "$@")
    (cd "$node_dir" && timeout 60 node connect.mjs "$json")
}

# field JSON PATH: one value from a result (jq -r).
field() { jq -r "$2" <<<"$1"; }

expect_ok() {
    local what=$1 result=$2 want_user=$3
    [ "$(field "$result" .ok)" = true ] || csql_die "$what: connection failed: $result"
    csql_expect "$what: select 40 + 2" 42 "$(field "$result" .answer)"
    csql_expect "$what: current user" "$want_user" "$(field "$result" .user)"
    csql_expect "$what: TLS version" TLSv1.3 "$(field "$result" .peer.protocol)"
}

expect_refused() {
    local what=$1 result=$2
    [ "$(field "$result" .ok)" = false ] || csql_die "$what: expected a refusal, but the session worked: $result"
    csql_log "ok: $what refused: $(field "$result" '.code + ": " + .message')"
}

iam=
case "$mode" in
    iam|iam-wrong-user|iam-no-token) iam=$backend_src ;;
    legacy|cas) ;;
    *) csql_die "unknown mode '$mode' (want legacy, cas, iam, iam-wrong-user or iam-no-token)" ;;
esac

csql_start_pg "$iam"
csql_start_mariadb "$iam"

pg_conn=proj-$$:us-central1:pg
my_conn=proj-$$:us-central1:my
pg_spec="$pg_conn?version=POSTGRES_15&public-ip=$pg_ip&backend=127.0.0.1:$CSQL_PG_PORT"
my_spec="$my_conn?version=MYSQL_8_0&public-ip=$my_ip&backend=127.0.0.1:$CSQL_MY_PORT"
emu_args=(--static-token "$token")
if [ "$mode" = cas ]; then
    # CAS mode: connectSettings carries the instance DNS name (dnsName/dnsNames),
    # which the connector checks against the leaf's SAN.
    pg_spec+="&ca-mode=cas"
    my_spec+="&ca-mode=cas"
fi
if [ -n "$iam" ]; then
    emu_args+=(--backend-source "$backend_src")
    # Database users for the emulator's static principal, plus another IAM
    # user the static principal must not be able to become.
    csql_pg_admin "create role \"$pg_iam_user\" login; create role \"other-user@emulator.iam\" login;"
    csql_my_admin "create user '$my_iam_user'@'$backend_src'; create user 'other-user'@'$backend_src';
                   grant all on appdb.* to '$my_iam_user'@'$backend_src'; grant all on appdb.* to 'other-user'@'$backend_src';"
fi
csql_start_emulator "${emu_args[@]}" --instance "$pg_spec" --instance "$my_spec"

case "$mode" in
    legacy)
        r=$(node_connect --arg i "$pg_conn" '{api:$api,token:$token,instance:$i,engine:"pg",user:"postgres",password:"secret"}')
        expect_ok "pg (legacy CA)" "$r" postgres
        csql_expect "pg server certificate CN" "proj-$$:pg" "$(field "$r" .peer.cn)"
        r=$(node_connect --arg i "$my_conn" '{api:$api,token:$token,instance:$i,engine:"mysql",user:"app",password:"secret",database:"appdb"}')
        expect_ok "mysql2 (legacy CA)" "$r" 'app@%'
        csql_expect "mysql server certificate CN" "proj-$$:my" "$(field "$r" .peer.cn)"
        ;;
    cas)
        # connectSettings names the instance DNS name; the connector must match it
        # against the leaf's SAN. The leaf's CN is not project:instance, so the
        # connector's CN fallback cannot be what let the session through.
        for e in pg my; do
            settings=$(curl -sS -m 10 --fail-with-body -H "Authorization: Bearer $token" \
                "$EMU_URL/sql/v1beta4/projects/proj-$$/instances/$e/connectSettings") \
                || csql_die "connectSettings for $e failed: $settings"
            csql_log "connectSettings ($e): $(jq -c '{dnsName, dnsNames, serverCaMode, pscEnabled}' <<<"$settings")"
            csql_expect "$e serverCaMode" GOOGLE_MANAGED_CAS_CA "$(jq -r .serverCaMode <<<"$settings")"
            dns=$(jq -r '.dnsNames[0].name // .dnsName // ""' <<<"$settings")
            [ -n "$dns" ] || csql_die "$e: CAS-mode connectSettings has no dnsName"
            printf -v "${e}_dns" '%s' "${dns%.}"
        done
        r=$(node_connect --arg i "$pg_conn" '{api:$api,token:$token,instance:$i,engine:"pg",user:"postgres",password:"secret"}')
        expect_ok "pg (CAS)" "$r" postgres
        csql_expect_contains "pg server certificate SAN" "DNS:$pg_dns" "$(field "$r" .peer.san)"
        [ "$(field "$r" .peer.cn)" != "proj-$$:pg" ] || csql_die "pg CAS leaf CN is project:instance; the SAN check is not isolated"
        csql_expect "pg chain length (leaf, intermediate, root)" 3 "$(field "$r" '.peer.chain | length')"
        r=$(node_connect --arg i "$my_conn" '{api:$api,token:$token,instance:$i,engine:"mysql",user:"app",password:"secret",database:"appdb"}')
        expect_ok "mysql2 (CAS)" "$r" 'app@%'
        csql_expect_contains "mysql server certificate SAN" "DNS:$my_dns" "$(field "$r" .peer.san)"
        csql_log "CAS chain as seen by the connector: $(field "$r" '.peer.chain | join(" <- ")')"
        ;;
    iam)
        r=$(node_connect --arg i "$pg_conn" --arg u "$pg_iam_user" '{api:$api,token:$token,instance:$i,engine:"pg",user:$u,authType:"IAM"}')
        expect_ok "pg (IAM authn)" "$r" "$pg_iam_user"
        r=$(node_connect --arg i "$my_conn" --arg u "$my_iam_user" '{api:$api,token:$token,instance:$i,engine:"mysql",user:$u,authType:"IAM",database:"appdb"}')
        expect_ok "mysql2 (IAM authn)" "$r" "$my_iam_user@$backend_src"
        ;;
    iam-wrong-user)
        # An IAM certificate for $principal may only log in as its own database user.
        r=$(node_connect --arg i "$pg_conn" '{api:$api,token:$token,instance:$i,engine:"pg",user:"other-user@emulator.iam",authType:"IAM"}')
        expect_refused "pg: IAM cert of $principal as other-user@emulator.iam" "$r"
        r=$(node_connect --arg i "$my_conn" '{api:$api,token:$token,instance:$i,engine:"mysql",user:"other-user",authType:"IAM",database:"appdb"}')
        expect_refused "mysql: IAM cert of $principal as other-user" "$r"
        # Positive control: the right user with the same setup works.
        r=$(node_connect --arg i "$pg_conn" --arg u "$pg_iam_user" '{api:$api,token:$token,instance:$i,engine:"pg",user:$u,authType:"IAM"}')
        expect_ok "pg (IAM authn, control)" "$r" "$pg_iam_user"
        ;;
    iam-no-token)
        # Cloud SQL lets IAM users in without a password only with a certificate
        # issued for their login token. A certificate issued without one (authType
        # PASSWORD) must not give password-less access to IAM users, nor to anyone.
        r=$(node_connect --arg i "$pg_conn" --arg u "$pg_iam_user" '{api:$api,token:$token,instance:$i,engine:"pg",user:$u}')
        expect_refused "pg: non-IAM cert as $pg_iam_user without a password" "$r"
        r=$(node_connect --arg i "$my_conn" --arg u "$my_iam_user" '{api:$api,token:$token,instance:$i,engine:"mysql",user:$u,database:"appdb"}')
        expect_refused "mysql: non-IAM cert as $my_iam_user without a password" "$r"
        r=$(node_connect --arg i "$pg_conn" '{api:$api,token:$token,instance:$i,engine:"pg",user:"postgres"}')
        expect_refused "pg: non-IAM cert as postgres without a password" "$r"
        # Positive controls: the IAM flow, and a password login, with the same setup.
        r=$(node_connect --arg i "$pg_conn" --arg u "$pg_iam_user" '{api:$api,token:$token,instance:$i,engine:"pg",user:$u,authType:"IAM"}')
        expect_ok "pg (IAM authn, control)" "$r" "$pg_iam_user"
        r=$(node_connect --arg i "$pg_conn" '{api:$api,token:$token,instance:$i,engine:"pg",user:"postgres",password:"secret"}')
        expect_ok "pg (password, control)" "$r" postgres
        ;;
esac

csql_log "emulator counters: $(csql_emu_admin GET /emulator/counters | jq -c "{endpoints: (.endpoints | map_values(.total)), proxy, iam_bindings}")"
csql_log "PASS: Google's Node.js connector ($mode) through csql-emulator"
