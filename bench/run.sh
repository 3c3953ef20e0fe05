#!/usr/bin/env bash
# Benchmarks: csql against Google's clients and against the physical limit (direct).
#
#   bench/run.sh [--smoke] [--out DIR] [--reps N] [--secs S] [--only LIST] [--paths LIST]
#                [--no-setup]
#
# Sets up what it needs (scripts/setup.sh, the release build in build/bench-release,
# a throwaway PostgreSQL with TLS, csql-emulator, csql-proxy, Google's v1 proxy, stunnel
# with an ephemeral certificate, Google's Node.js connector 1.10.0), runs
#   rate     pgbench -S (select-only) at 1, 8, 64 clients through every path;
#   connect  new connection to first query answer (bench/connect_latency, libpq) per path;
#            the library's cold start and warm dial (bench/dial_latency, csql_dial);
#   bulk     1 GiB COPY ... TO STDOUT and COPY ... FROM STDIN through each path: MB/s,
#            client (psql) and proxy CPU s/GiB;
#   admin    Admin API calls per instance per hour (emulator counters) in a steady state
#            with short-lived certificates;
#   scale    RSS per idle connection at 1,000 and 5,000 connections and per busy one at
#            1,000 (csql-proxy and v1, fresh processes, bench/scale.py to bench/sink.py),
#            and RSS growth over 10,000 connect/disconnect cycles (after 1,000 warm-up);
# and writes results.json and results.md to DIR (default docs/benchmarks). Every figure
# is the median of N repetitions with min and max; paths are interleaved within each
# repetition so that ratios compare runs made under the same load.
# --smoke: every scenario at tiny size, results to a temp dir (CI; well under a minute).
# --only rate,connect,bulk,admin,scale: run just those scenarios.
# --paths direct,direct_tls,v1,csql,stunnel,node: just those paths (rate, connect, bulk).
# Env: CSQL_BUILD_DIR=DIR uses binaries already built there instead of building release;
#      CSQL_BENCH_BULK_MIB (default 1024), CSQL_BENCH_ADMIN_SECS (default 330).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib/common.sh"
. "$(dirname "$0")/../scripts/lib/services.sh"
CSQL_SCRIPT_NAME=bench

smoke=0 out="" reps=3 secs=5 setup=1 only=rate,connect,bulk,admin,scale
all_paths=direct,direct_tls,v1,csql,stunnel,node
want_paths=$all_paths
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) smoke=1 ;;
        --out) out=${2:?--out needs a directory}; shift ;;
        --reps) reps=${2:?--reps needs a number}; shift ;;
        --secs) secs=${2:?--secs needs a number}; shift ;;
        --no-setup) setup=0 ;;
        --only) only=${2:?--only needs a list}; shift ;;
        --paths) want_paths=${2:?--paths needs a list}; shift ;;
        -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) csql_die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ $reps =~ ^[1-9][0-9]?$ ]] || csql_die "--reps must be 1..99 (got '$reps')"
[[ $secs =~ ^[1-9][0-9]?$ ]] || csql_die "--secs must be 1..99 (got '$secs')"
if [ "$smoke" = 1 ]; then
    reps=1 secs=1 clients=(2) bulk_mib=4 conn_n=10 dial_n=10 cold_n=1 admin_secs=3 admin_life=60
    scale_ns=(20) busy_n=20 busy_secs=1 cycles_n=50
    csql_deadline 150
else
    clients=(1 8 64) bulk_mib=${CSQL_BENCH_BULK_MIB:-1024} conn_n=200 dial_n=300 cold_n=10
    admin_secs=${CSQL_BENCH_ADMIN_SECS:-330} admin_life=300
    scale_ns=(1000 5000) busy_n=1000 busy_secs=5 cycles_n=10000
    csql_deadline $((reps * (secs + 3) * 6 * 3 + reps * (12 * bulk_mib / 40 + 200) + admin_secs + 1800))
fi
[[ $bulk_mib =~ ^[1-9][0-9]{0,4}$ ]] || csql_die "CSQL_BENCH_BULK_MIB must be 1..99999 (got '$bulk_mib')"
want() { [[ ,$only, == *,$1,* ]]; }
for w in ${only//,/ }; do
    case $w in rate | connect | bulk | admin | scale) ;; *) csql_die "--only: unknown scenario '$w'" ;; esac
done
paths=()
for p in ${want_paths//,/ }; do
    [[ ,$all_paths, == *,$p,* ]] || csql_die "--paths: unknown path '$p' (known: $all_paths)"
    paths+=("$p")
done
has_path() { [[ " ${paths[*]} " == *" $1 "* ]]; }
# The scale scenario holds thousands of connections: every process started below inherits this.
ulimit -n 20000 2>/dev/null || csql_log "could not raise ulimit -n to 20000 (now $(ulimit -n))"

[ "$setup" = 1 ] && { "$CSQL_REPO/scripts/setup.sh" >/dev/null || csql_die "scripts/setup.sh failed"; }
if [ -z "${CSQL_BUILD_DIR:-}" ]; then
    # The release preset's flags, without -Werror: a warning that only -O3 finds must
    # not stop a measurement (the test presets keep -Werror).
    CSQL_BUILD_DIR=$CSQL_REPO/build/bench-release
    csql_log "building release in $CSQL_BUILD_DIR"
    (cd "$CSQL_REPO" && cmake --preset release -B "$CSQL_BUILD_DIR" -DCSQL_WERROR=OFF >/dev/null \
        && cmake --build "$CSQL_BUILD_DIR" --target csql-proxy csql-emulator dial_latency connect_latency \
        >/dev/null) || csql_die "release build failed (cmake --build $CSQL_BUILD_DIR)"
else
    # Test builds: only what is missing.
    [ -f "$CSQL_BUILD_DIR/CMakeCache.txt" ] || csql_die "CSQL_BUILD_DIR=$CSQL_BUILD_DIR is not a configured build"
    cmake --build "$CSQL_BUILD_DIR" --target csql-proxy csql-emulator dial_latency connect_latency \
        >/dev/null || csql_die "build of the benchmark tools failed in $CSQL_BUILD_DIR"
fi
B=$CSQL_BUILD_DIR
export CSQL_EMULATOR=${CSQL_EMULATOR:-$B/tools/emulator/csql-emulator}
export CSQL_PROXY=${CSQL_PROXY:-$B/tools/proxy/csql-proxy}
. "$CSQL_REPO/tests/proxy/lib.sh"
for t in "$B/bench/dial_latency" "$B/bench/connect_latency"; do
    [ -x "$t" ] || csql_die "$t not built"
done
for c in pgbench psql cloud_sql_proxy python3 openssl /usr/bin/time curl jq stunnel4 node; do
    command -v "$c" >/dev/null || csql_die "$c not found (run scripts/setup.sh)"
done

csql_tempdir work bench
if [ -z "$out" ]; then
    if [ "$smoke" = 1 ]; then out=$work/out; else out=$CSQL_REPO/docs/benchmarks; fi
fi
mkdir -p "$out"
raw=$work/raw.jsonl # one JSON object per measurement; stats are computed at the end
: >"$raw"
rec() { # rec SCENARIO PATH PARAM METRIC VALUE
    printf '{"scenario":"%s","path":"%s","param":"%s","metric":"%s","value":%s}\n' "$@" >>"$raw"
}

# --- servers --------------------------------------------------------------------------
token=bench-token-$$
v1_ip=$(csql_unique_ip 20)
csql_ip=$(csql_unique_ip 21)
st_ip=$(csql_unique_ip 24)
sink_ip=$(csql_unique_ip 30)
pg_ip=$(csql_unique_ip 1)
inst=proj-$$:us-central1:pg
sink_inst=proj-$$:us-central1:sink

csql_start_pg
csql_pg_admin "alter system set max_connections = 300" >/dev/null
# TLS on the throwaway server (self-signed), for the direct-TLS path.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$CSQL_PG_DIR/data/bench.key" -out "$CSQL_PG_DIR/data/bench.crt" >/dev/null 2>&1 \
    || csql_die "openssl could not make the server certificate"
chown postgres:postgres "$CSQL_PG_DIR/data/bench.key" "$CSQL_PG_DIR/data/bench.crt"
chmod 600 "$CSQL_PG_DIR/data/bench.key"
csql_pg_admin "alter system set ssl_cert_file = 'bench.crt'" >/dev/null
csql_pg_admin "alter system set ssl_key_file = 'bench.key'" >/dev/null
csql_pg_admin "alter system set ssl = on" >/dev/null
csql_pg_admin "select pg_reload_conf()" >/dev/null
sleep 0.3

# A TCP sink standing in for a database (scale scenario): answers one byte, discards the rest.
python3 "$CSQL_REPO/bench/sink.py" "$sink_ip" 4000 </dev/null >/dev/null 2>"$work/sink.err" &
csql_defer _csql_kill_quietly $!
csql_wait_tcp "$sink_ip" 4000 10 || { cat "$work/sink.err" >&2; csql_die "bench/sink.py did not start"; }
csql_start_emulator --static-token "$token" \
    --instance "$inst?version=POSTGRES_15&public-ip=$pg_ip&backend=127.0.0.1:$CSQL_PG_PORT" \
    --instance "$sink_inst?version=POSTGRES_15&public-ip=$(csql_unique_ip 2)&backend=$sink_ip:4000"
csql_start_v1proxy "$EMU_URL" "$token" "$inst=tcp:$v1_ip:5432"
proxy_start bench --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$csql_ip" "$inst"
proxy_wait_ready
csql_log "csql-proxy: $("$CSQL_PROXY" --version | head -1)"
main_emu=$EMU_URL # the admin scenario starts a second emulator
api_inst=$EMU_URL/sql/v1beta4/projects/proj-$$/instances/pg

# stunnel: a generic C TLS tunnel with an ephemeral certificate (fetched here with curl, as
# any client would) and the instance CA, TLS 1.3, checking the server's name (its CN).
ST_PID=""
if has_path stunnel; then
    mkdir -m 700 "$work/stunnel"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/stunnel/key.pem" 2>/dev/null \
        || csql_die "stunnel: openssl genpkey failed"
    openssl pkey -in "$work/stunnel/key.pem" -pubout -out "$work/stunnel/pub.pem"
    curl -sSf -m 10 -H "Authorization: Bearer $token" "$api_inst/connectSettings" \
        | jq -er .serverCaCert.cert >"$work/stunnel/ca.pem" || csql_die "stunnel: connectSettings failed"
    jq -n --rawfile k "$work/stunnel/pub.pem" '{public_key: $k}' \
        | curl -sSf -m 10 -H "Authorization: Bearer $token" -H "Content-Type: application/json" \
            --data-binary @- "$api_inst:generateEphemeralCert" \
        | jq -er .ephemeralCert.cert >"$work/stunnel/cert.pem" || csql_die "stunnel: generateEphemeralCert failed"
    printf '%s\n' "foreground = yes" "pid =" "syslog = no" "debug = 4" "[pg]" "client = yes" \
        "accept = $st_ip:5432" "connect = $pg_ip:3307" "cert = $work/stunnel/cert.pem" \
        "key = $work/stunnel/key.pem" "CAfile = $work/stunnel/ca.pem" "verifyChain = yes" \
        "checkHost = proj-$$:pg" "sslVersionMin = TLSv1.3" >"$work/stunnel/conf"
    stunnel4 "$work/stunnel/conf" </dev/null >"$work/stunnel/log" 2>&1 &
    ST_PID=$!
    csql_defer _csql_kill_quietly "$ST_PID"
    csql_wait_tcp "$st_ip" 5432 10 || { cat "$work/stunnel/log" >&2; csql_die "stunnel did not start"; }
    csql_log "stunnel: $(stunnel4 -version 2>&1 | grep -m1 -o 'stunnel [0-9.]*')"
fi

# Google's Node.js connector 1.10.0 (tests/interop/node): its local proxy on a Unix socket.
NODE_PID=""
if has_path node; then
    node_dir=$CSQL_REPO/tests/interop/node
    "$node_dir/ensure-deps.sh" || csql_die "npm packages for the Node connector are missing"
    mkdir "$work/node"
    node "$CSQL_REPO/bench/node_proxy.mjs" "$node_dir" \
        "$(jq -cn --arg api "$EMU_URL" --arg token "$token" --arg instance "$inst" \
            --arg path "$work/node/.s.PGSQL.5432" '{api: $api, token: $token, instance: $instance, path: $path}')" \
        </dev/null >"$work/node/log" 2>&1 &
    NODE_PID=$!
    csql_defer _csql_kill_quietly "$NODE_PID"
    for ((i = 0; i < 300; i++)); do
        grep -qx ready "$work/node/log" 2>/dev/null && break
        kill -0 "$NODE_PID" 2>/dev/null || break
        sleep 0.05
    done
    grep -qx ready "$work/node/log" || { cat "$work/node/log" >&2; csql_die "the Node connector's local proxy did not start"; }
    csql_log "node connector $(jq -r .version "$node_dir/node_modules/@google-cloud/cloud-sql-connector/package.json"), node $(node --version)"
fi

export PGPASSWORD=$CSQL_PG_PASSWORD
timeout 120 pgbench -q -i -s "$([ "$smoke" = 1 ] && echo 1 || echo 10)" \
    "host=$CSQL_PG_SOCKDIR port=$CSQL_PG_PORT user=postgres dbname=postgres" >/dev/null 2>&1 \
    || csql_die "pgbench -i failed"
csql_pg_admin "show ssl" | grep -qx on || csql_die "ssl did not turn on in PostgreSQL"

target() {
    local base="user=postgres dbname=postgres"
    case $1 in
        direct) echo "host=127.0.0.1 port=$CSQL_PG_PORT $base sslmode=disable" ;;
        direct_tls) echo "host=127.0.0.1 port=$CSQL_PG_PORT $base sslmode=require" ;;
        v1) echo "host=$v1_ip port=5432 $base sslmode=disable" ;;
        csql) echo "host=$csql_ip port=5432 $base sslmode=disable" ;;
        stunnel) echo "host=$st_ip port=5432 $base sslmode=disable" ;;
        node) echo "host=$work/node port=5432 $base" ;;
    esac
}
bench_pid=$PROXY_PID
pid_of() {
    case $1 in v1) echo "$V1_PID" ;; csql) echo "$bench_pid" ;; stunnel) echo "$ST_PID" ;;
        node) echo "$NODE_PID" ;; *) echo "" ;; esac
}
cpu_ticks() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
# Every path answers before anything is measured.
for p in "${paths[@]}"; do
    psql -X -At "$(target "$p")" -c "select 1" >/dev/null 2>&1 || csql_die "path $p does not answer"
done

# --- (2) request rate: pgbench -S ---------------------------------------------------------
if want rate; then
for c in "${clients[@]}"; do
    j=$((c < 2 ? c : 2))
    for ((r = 1; r <= reps; r++)); do
        for p in "${paths[@]}"; do
            o=$(timeout $((secs + 60)) pgbench -n -S -c "$c" -j "$j" -T "$secs" "$(target "$p")" 2>&1) \
                || { echo "$o" >&2; csql_die "pgbench -S -c $c via $p failed"; }
            tps=$(awk '/^tps/ {print $3; exit}' <<<"$o")
            [ -n "$tps" ] || { echo "$o" >&2; csql_die "no tps from pgbench via $p"; }
            rec rate "$p" "clients=$c" tps "$tps"
        done
    done
    csql_log "rate: $c clients done"
done
fi

# --- (3) connect latency ----------------------------------------------------------------
if want connect; then
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/dial_key.pem" 2>/dev/null \
    || csql_die "openssl genpkey failed"
for ((r = 1; r <= reps; r++)); do
    for p in "${paths[@]}"; do
        o=$(timeout 120 "$B/bench/connect_latency" "$(target "$p") connect_timeout=10" "$conn_n") \
            || csql_die "connect_latency via $p failed"
        python3 -c 'import json,sys,statistics as s
d=sorted(json.loads(sys.argv[1])["ms"]); n=len(d)
print(d[n//2], d[min(n-1, int(n*0.99))])' "$o" | {
            read -r p50 p99
            rec connect "$p" "libpq+select1" p50_ms "$p50"
            rec connect "$p" "libpq+select1" p99_ms "$p99"
        }
    done
    # The library: cold starts (each sample recorded), with a generated key and with one
    # supplied; warm dials with the database's own startup time (plain TCP) interleaved.
    o=$(timeout 300 "$B/bench/dial_latency" "$token" "$EMU_URL" "$inst" "$dial_n" "$cold_n" \
        "127.0.0.1:$CSQL_PG_PORT" "$work/dial_key.pem") || csql_die "dial_latency failed"
    python3 - "$o" "$raw" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
def q(a, p):
    a = sorted(a)
    return a[min(len(a) - 1, int(len(a) * p))]
with open(sys.argv[2], "a") as f:
    def rec(path, metric, value):
        f.write(json.dumps({"scenario": "connect", "path": path, "param": "csql_dial",
                            "metric": metric, "value": round(value, 3)}) + "\n")
    for v in j["cold_ms"]:
        rec("library", "cold_start_ms", v)
    for v in j["cold_key_ms"]:
        rec("library", "cold_start_key_supplied_ms", v)
    rec("library", "warm_p50_ms", q(j["warm_ms"], 0.5))
    rec("library", "warm_p99_ms", q(j["warm_ms"], 0.99))
    rec("library", "warm_dial_only_p50_ms", q(j["warm_dial_ms"], 0.5))
    rec("library", "client_cpu_us_per_warm_dial", j["cpu_us_per_warm"])
    rec("direct", "db_startup_p50_ms", q(j["direct_ms"], 0.5))
PY
done
csql_log "connect: done"
fi

# --- (1) bulk: COPY TO STDOUT and COPY FROM STDIN -------------------------------------------
if want bulk; then
rows=$((bulk_mib * 1024)) # 1 KiB rows (1023 characters and a newline)
line=$(head -c 1023 /dev/zero | tr '\0' x)
hz=$(getconf CLK_TCK)
csql_pg_admin "create unlogged table if not exists bulk_in (t text)" >/dev/null
# bulk_one DIR PATH: one COPY of $rows rows through PATH; records MB/s and CPU s/GiB.
bulk_one() {
    local dir=$1 p=$2 pid c0 c1 el us sy bytes gib param="${bulk_mib}MiB_$1"
    pid=$(pid_of "$p")
    if [ "$dir" = in ]; then
        csql_pg_admin "truncate bulk_in" >/dev/null
        bytes=$((rows * 1024))
        c0=$(cpu_ticks "$pid")
        # yes dies of SIGPIPE once head has its rows: not a failure (pipefail).
        { yes "$line" | head -n "$rows" || true; } | timeout 900 /usr/bin/time -f '%e %U %S' -o "$work/time" \
            psql -X -q "$(target "$p")" -v ON_ERROR_STOP=1 -c "copy bulk_in from stdin" \
            >/dev/null 2>"$work/psql.err" || { cat "$work/psql.err" >&2; csql_die "COPY FROM STDIN via $p failed"; }
        c1=$(cpu_ticks "$pid")
        local n
        n=$(csql_pg_admin "select count(*) from bulk_in")
        [ "$n" = "$rows" ] || csql_die "COPY FROM STDIN via $p stored $n rows, expected $rows"
    else
        c0=$(cpu_ticks "$pid")
        timeout 900 /usr/bin/time -f '%e %U %S' -o "$work/time" psql -X -At "$(target "$p")" \
            -c "copy (select repeat('x', 1023) from generate_series(1, $rows)) to stdout" \
            2>"$work/psql.err" | wc -c >"$work/bytes" || { cat "$work/psql.err" >&2; csql_die "COPY TO STDOUT via $p failed"; }
        c1=$(cpu_ticks "$pid")
        bytes=$(cat "$work/bytes")
        [ "$bytes" -ge $((rows * 1024)) ] || csql_die "COPY via $p returned $bytes bytes, expected $((rows * 1024))"
    fi
    read -r el us sy <"$work/time"
    gib=$(echo "$bytes / 1073741824" | bc -l)
    rec bulk "$p" "$param" MB_per_s "$(echo "$bytes / 1000000 / $el" | bc -l | xargs printf '%.1f')"
    rec bulk "$p" "$param" psql_cpu_s_per_GiB "$(echo "($us + $sy) / $gib" | bc -l | xargs printf '%.3f')"
    if [ -n "$pid" ]; then
        rec bulk "$p" "$param" proxy_cpu_s_per_GiB "$(echo "($c1 - $c0) / $hz / $gib" | bc -l | xargs printf '%.3f')"
    fi
}
for ((r = 1; r <= reps; r++)); do
    for dir in out in; do
        for p in "${paths[@]}"; do
            bulk_one "$dir" "$p"
        done
    done
    csql_log "bulk: repetition $r of $reps done"
done
csql_pg_admin "drop table bulk_in" >/dev/null
csql_log "bulk: done"
fi

# --- (5) Admin API calls per instance per hour ----------------------------------------------
if want admin; then
# A second emulator issues short-lived certificates; each client gets its own instance (same
# database) so the per-instance counters separate them. Both are kept warm with one query a
# second (a steady state). Refresh policies are not linear in the lifetime (csql: half the
# remaining life above 1 h, 4 min before expiry below, at once under 4 min), so the figures
# are calls per hour *at this lifetime*, and the ratio v1/csql is the comparison.
csql_start_emulator --static-token "$token" --cert-lifetime "$admin_life" \
    --instance "$inst-v1?version=POSTGRES_15&public-ip=$(csql_unique_ip 3)&backend=127.0.0.1:$CSQL_PG_PORT" \
    --instance "$inst-csql?version=POSTGRES_15&public-ip=$(csql_unique_ip 4)&backend=127.0.0.1:$CSQL_PG_PORT"
v1b_ip=$(csql_unique_ip 22)
csqlb_ip=$(csql_unique_ip 23)
csql_start_v1proxy "$EMU_URL" "$token" "$inst-v1=tcp:$v1b_ip:5432"
proxy_start admin --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$csqlb_ip" "$inst-csql"
proxy_wait_ready
for ip in "$v1b_ip" "$csqlb_ip"; do
    psql -X -At "host=$ip port=5432 user=postgres dbname=postgres sslmode=disable" -c "select 1" \
        >/dev/null 2>&1 || csql_die "admin: no answer through $ip"
done
csql_emu_admin POST /emulator/counters/reset >/dev/null
t0=$(date +%s%N)
while [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt "$admin_secs" ]; do
    for ip in "$v1b_ip" "$csqlb_ip"; do
        psql -X -At "host=$ip port=5432 user=postgres dbname=postgres sslmode=disable connect_timeout=5" \
            -c "select 1" >/dev/null 2>&1 || csql_log "admin: a query through $ip failed"
    done
    sleep 1
done
t1=$(date +%s%N)
csql_emu_admin GET /emulator/counters >"$work/counters.json"
python3 - "$work/counters.json" "$(( (t1 - t0) / 1000000 ))" "$admin_life" "$inst" "$raw" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
secs = int(sys.argv[2]) / 1000.0
life, inst = sys.argv[3], sys.argv[4]
with open(sys.argv[5], "a") as f:
    for path in ("v1", "csql"):
        name = f"{inst}-{path}"
        per = {ep: v["instances"].get(name, 0) for ep, v in c["endpoints"].items()}
        for ep, n in sorted(per.items()):
            if n:
                f.write(json.dumps({"scenario": "admin", "path": path, "param": f"cert={life}s",
                                    "metric": f"{ep}_per_hour", "value": round(n * 3600 / secs, 1)}) + "\n")
        f.write(json.dumps({"scenario": "admin", "path": path, "param": f"cert={life}s",
                            "metric": "calls_per_hour", "value": round(sum(per.values()) * 3600 / secs, 1)}) + "\n")
PY
csql_log "admin: done"
fi

# --- (4) scale: memory per connection -------------------------------------------------------
if want scale; then
# Each measurement gets a fresh proxy (memory freed by an earlier round would otherwise be
# reused and hide the cost), in front of the sink instance; bench/scale.py checks that every
# connection reached the sink and back.
scale_ip=$(csql_unique_ip 25)
scale_port=6000
# start_scale_proxy v1|csql: sets SCALE_PID.
start_scale_proxy() {
    if [ "$1" = v1 ]; then
        csql_start_v1proxy "$main_emu" "$token" "$sink_inst=tcp:$scale_ip:$scale_port"
        SCALE_PID=$V1_PID
    else
        proxy_start "scale$((++scale_seq))" --token "$token" --sqladmin-api-endpoint "$main_emu" \
            --address "$scale_ip" "$sink_inst?port=$scale_port"
        proxy_wait_ready
        SCALE_PID=$PROXY_PID
    fi
}
stop_scale_proxy() {
    kill -TERM "$SCALE_PID" 2>/dev/null
    for ((i = 0; i < 200; i++)); do
        kill -0 "$SCALE_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$SCALE_PID" 2>/dev/null && csql_die "a scale proxy (pid $SCALE_PID) ignored SIGTERM"
    # Both proxies let their listener go at exit; make sure before the next one binds.
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/$scale_ip/$scale_port") 2>/dev/null || break
        sleep 0.05
    done
}
scale_seq=0
for p in v1 csql; do
    for n in "${scale_ns[@]}"; do
        start_scale_proxy "$p"
        bs=0
        [ "$n" = "$busy_n" ] && bs=$busy_secs
        o=$(timeout 600 python3 "$CSQL_REPO/bench/scale.py" hold "$scale_ip" "$scale_port" "$SCALE_PID" "$n" "$bs") \
            || csql_die "scale: holding $n connections through $p failed"
        python3 - "$o" "$raw" "$p" "$bs" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
path, busy = sys.argv[3], int(sys.argv[4])
with open(sys.argv[2], "a") as f:
    def rec(param, metric, value):
        f.write(json.dumps({"scenario": "scale", "path": path, "param": param, "metric": metric,
                            "value": value}) + "\n")
    n = j["n"]
    rec(f"idle={n}", "rss_kib", j["idle_kib"])
    rec(f"idle={n}", "kib_per_conn", round((j["idle_kib"] - j["rss0_kib"]) / n, 2))
    if busy:
        rec(f"busy={n}", "rss_kib", j["busy_kib"])
        rec(f"busy={n}", "kib_per_conn", round((j["busy_kib"] - j["rss0_kib"]) / n, 2))
PY
        stop_scale_proxy
        csql_log "scale: $p with $n connections done"
    done
    # Growth: a fresh proxy, 1,000 warm-up cycles, then the measured ones (scale.py).
    start_scale_proxy "$p"
        o=$(timeout 600 python3 "$CSQL_REPO/bench/scale.py" cycles "$scale_ip" "$scale_port" "$SCALE_PID" "$cycles_n" 8) \
            || csql_die "scale: $cycles_n connect/disconnect cycles through $p failed"
        python3 - "$o" "$raw" "$p" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
with open(sys.argv[2], "a") as f:
    for metric, value in (("rss_before_kib", j["before_kib"]), ("rss_after_kib", j["after_kib"]),
                      ("growth_kib", j["after_kib"] - j["before_kib"]),
                      ("cycles_per_s", round(j["n"] / j["secs"], 1))):
        f.write(json.dumps({"scenario": "scale", "path": sys.argv[3], "param": f"cycles={j['n']}",
                        "metric": metric, "value": value}) + "\n")
PY
    stop_scale_proxy
    csql_log "scale: $p connect/disconnect cycles done"
done
csql_log "scale: done"
fi


# --- report ----------------------------------------------------------------------------------
python3 "$CSQL_REPO/bench/report.py" "$raw" "$out" \
    "$( [ "$smoke" = 1 ] && echo smoke || echo full)" "$reps" "$secs" "$(nproc)" "$(cat /proc/loadavg)" \
    || csql_die "report failed"
csql_log "wrote $out/results.json and $out/results.md"
[ "$smoke" = 1 ] && cat "$out/results.md"
exit 0
