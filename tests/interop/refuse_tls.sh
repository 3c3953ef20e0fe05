#!/usr/bin/env bash
# The emulator's server-side proxy (IP:3307) refuses TLS clients that Cloud SQL
# refuses. openssl s_client talks to a MariaDB-backed instance: MariaDB speaks
# first, so a session that got through shows the server greeting, and a
# refused one shows a TLS alert instead. Every case runs a control first: the
# same client with a valid ephemeral certificate does get the greeting.
# Usage: refuse_tls.sh no-client-cert|foreign-ca|expired-cert|tls12
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
case_=${1:?usage: refuse_tls.sh no-client-cert|foreign-ca|expired-cert|tls12}
CSQL_SCRIPT_NAME="refuse-$case_"
csql_deadline 120

case "$case_" in
    no-client-cert|foreign-ca|expired-cert|tls12) ;;
    *) csql_die "unknown case '$case_' (want no-client-cert, foreign-ca, expired-cert or tls12)" ;;
esac

token=interop-token-$$
ip=$(csql_unique_ip 1)
project=proj-$$
csql_tempdir T csql-refuse

csql_start_mariadb
conn=$project:us-central1:my
spec="$conn?version=MYSQL_8_0&public-ip=$ip&backend=127.0.0.1:$CSQL_MY_PORT"
lifetime=()
[ "$case_" = expired-cert ] && lifetime=(--cert-lifetime 2)
csql_start_emulator --static-token "$token" "${lifetime[@]}" --instance "$spec"

api() { # api METHOD PATH [BODY]: a SQL Admin API call with the good token; prints the body
    local args=(-sS -m 15 --fail-with-body -H "Authorization: Bearer $token" -X "$1")
    [ -n "${3:-}" ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
    curl "${args[@]}" "$EMU_URL/sql/v1beta4/projects/$project/instances/$2" \
        || csql_die "SQL Admin API $1 $2 failed"
}

# The instance's CA bundle, and an ephemeral client certificate for a fresh key.
api GET my/connectSettings | jq -er .serverCaCert.cert >"$T/server-ca.pem"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/key.pem" 2>/dev/null
openssl pkey -in "$T/key.pem" -pubout -out "$T/pub.pem"
issue_cert() {
    api POST my:generateEphemeralCert "$(jq -n --rawfile k "$T/pub.pem" '{public_key: $k}')" \
        | jq -er .ephemeralCert.cert >"$T/cert.pem"
}
issue_cert

# probe NAME s_client-flags...: one TLS session to IP:3307; sets OUT (data
# received) and ERR (s_client's diagnostics). stdin stays open 2 s, long
# enough for the greeting, then EOF ends the session.
probe() {
    local name=$1
    shift
    (sleep 2) | timeout 20 openssl s_client -connect "$ip:3307" -CAfile "$T/server-ca.pem" \
        -verify_return_error -brief "$@" >"$T/$name.out" 2>"$T/$name.err" || true
    OUT=$(tr -c '[:print:]' '.' <"$T/$name.out")
    ERR=$(tr -c '[:print:]\n' '.' <"$T/$name.err")
}

expect_greeting() {
    probe "$1" "${@:2}"
    case "$OUT" in
        *MariaDB*) csql_log "ok: $1: MariaDB greeting received through TLS" ;;
        *) csql_die "$1: expected the MariaDB greeting; got stdout '$OUT', stderr: $ERR" ;;
    esac
}

# expect_refused NAME ALERT flags...: no database bytes, and a TLS alert naming ALERT.
refusals=0
expect_refused() {
    local name=$1 alert=$2
    refusals=$((refusals + 1))
    probe "$name" "${@:3}"
    case "$OUT" in
        *MariaDB*) csql_die "$name: expected a refusal, but the database greeting came through" ;;
    esac
    case "$ERR" in
        *"$alert"*) csql_log "ok: $name refused with '$alert'" ;;
        *) csql_die "$name: expected a TLS alert '$alert'; s_client said: $ERR" ;;
    esac
}

good=(-tls1_3 -cert "$T/cert.pem" -key "$T/key.pem")
expect_greeting control "${good[@]}"

case "$case_" in
    no-client-cert)
        expect_refused no-client-cert "certificate required" -tls1_3
        ;;
    foreign-ca)
        # Same subject and key as the real one, but signed by a CA of our own.
        openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/other-ca.key" -out "$T/other-ca.pem" \
            -subj "/CN=Not the Cloud SQL signing CA" -days 1 2>/dev/null
        openssl x509 -x509toreq -in "$T/cert.pem" -signkey "$T/key.pem" -out "$T/req.pem" 2>/dev/null
        openssl x509 -req -in "$T/req.pem" -CA "$T/other-ca.pem" -CAkey "$T/other-ca.key" \
            -CAcreateserial -days 1 -out "$T/foreign.pem" 2>/dev/null
        expect_refused foreign-ca "unknown ca" -tls1_3 -cert "$T/foreign.pem" -key "$T/key.pem"
        # A self-signed certificate with the client subject is refused too.
        openssl req -x509 -key "$T/key.pem" -out "$T/self.pem" -subj "/CN=Google Cloud SQL Client" -days 1
        expect_refused self-signed "unknown ca" -tls1_3 -cert "$T/self.pem" -key "$T/key.pem"
        ;;
    expired-cert)
        # --cert-lifetime 2: a fresh certificate works (control above), then expires.
        issue_cert
        not_after=$(openssl x509 -in "$T/cert.pem" -noout -enddate | cut -d= -f2)
        wait_s=$(($(date -d "$not_after" +%s) - $(date +%s) + 2))
        [ "$wait_s" -le 10 ] || csql_die "certificate notAfter $not_after is not ~2 s away (--cert-lifetime 2)"
        csql_log "certificate expires $not_after; waiting ${wait_s}s"
        sleep "$wait_s"
        expect_refused expired-cert "certificate expired" "${good[@]}"
        ;;
    tls12)
        expect_refused tls12 "protocol version" -tls1_2 -cert "$T/cert.pem" -key "$T/key.pem"
        ;;
esac

counters=$(csql_emu_admin GET /emulator/counters)
csql_log "emulator counters: $(jq -c '{endpoints: (.endpoints | map_values(.total)), proxy}' <<<"$counters")"
csql_expect "handshakes the server-side proxy counted as refused" "$refusals" \
    "$(jq -r --arg c "$conn" '.proxy[$c].tls_refused' <<<"$counters")"
csql_log "PASS: $case_ refused"
