#!/usr/bin/env bash
# Benchmarks: csql against Google's clients and against the physical limit (direct).
#
#   bench/run.sh [--smoke] [--out DIR] [--reps N] [--secs S] [--only LIST] [--no-setup]
#
# Sets up what it needs (scripts/setup.sh, the release build in build/bench-release,
# a throwaway PostgreSQL with TLS, csql-emulator, csql-proxy, Google's v1 proxy), runs
#   rate     pgbench -S (select-only) at 1, 8, 64 clients: direct TCP, direct TLS,
#            v1 proxy, csql-proxy;
#   connect  new connection to first query answer (bench/connect_latency, libpq) per path;
#            the library's cold start and warm dial (bench/dial_latency, csql_dial);
#   bulk     COPY ... TO STDOUT through each path: MB/s, client (psql) and proxy CPU s/GiB;
#   admin    Admin API calls per instance per hour (emulator counters) in a steady state
#            with short-lived certificates, scaled to 1-hour certificates;
# and writes results.json and results.md to DIR (default docs/benchmarks). Every figure
# is the median of N repetitions with min and max; paths are interleaved within each
# repetition so that ratios compare runs made under the same load.
# --smoke: every scenario at tiny size, results to a temp dir (CI; well under a minute).
# --only rate,connect,bulk,admin: run just those scenarios.
# Env: CSQL_BUILD_DIR=DIR uses binaries already built there instead of building release.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib/common.sh"
. "$(dirname "$0")/../scripts/lib/services.sh"
CSQL_SCRIPT_NAME=bench

smoke=0 out="" reps=3 secs=5 setup=1 only=rate,connect,bulk,admin
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) smoke=1 ;;
        --out) out=${2:?--out needs a directory}; shift ;;
        --reps) reps=${2:?--reps needs a number}; shift ;;
        --secs) secs=${2:?--secs needs a number}; shift ;;
        --no-setup) setup=0 ;;
        --only) only=${2:?--only needs a list}; shift ;;
        -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) csql_die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ $reps =~ ^[1-9][0-9]?$ ]] || csql_die "--reps must be 1..99 (got '$reps')"
[[ $secs =~ ^[1-9][0-9]?$ ]] || csql_die "--secs must be 1..99 (got '$secs')"
if [ "$smoke" = 1 ]; then
    reps=1 secs=1 clients=(1 8) bulk_mib=8 conn_n=10 dial_n=10 admin_secs=3 admin_life=60
    csql_deadline 120
else
    clients=(1 8 64) bulk_mib=${CSQL_BENCH_BULK_MIB:-256} conn_n=200 dial_n=300
    admin_secs=${CSQL_BENCH_ADMIN_SECS:-330} admin_life=300
    csql_deadline $((reps * (secs + 3) * 4 * 4 + reps * 300 + admin_secs + 600))
fi
want() { [[ ,$only, == *,$1,* ]]; }
for w in ${only//,/ }; do
    case $w in rate | connect | bulk | admin) ;; *) csql_die "--only: unknown scenario '$w'" ;; esac
done

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
for c in pgbench psql cloud_sql_proxy python3 openssl /usr/bin/time; do
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
inst=proj-$$:us-central1:pg

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

csql_start_emulator --static-token "$token" \
    --instance "$inst?version=POSTGRES_15&public-ip=$(csql_unique_ip 1)&backend=127.0.0.1:$CSQL_PG_PORT"
csql_start_v1proxy "$EMU_URL" "$token" "$inst=tcp:$v1_ip:5432"
proxy_start bench --token "$token" --sqladmin-api-endpoint "$EMU_URL" --address "$csql_ip" "$inst"
proxy_wait_ready
csql_log "csql-proxy: $("$CSQL_PROXY" --version | head -1)"

export PGPASSWORD=$CSQL_PG_PASSWORD
timeout 120 pgbench -q -i -s "$([ "$smoke" = 1 ] && echo 1 || echo 10)" \
    "host=$CSQL_PG_SOCKDIR port=$CSQL_PG_PORT user=postgres dbname=postgres" >/dev/null 2>&1 \
    || csql_die "pgbench -i failed"
csql_pg_admin "show ssl" | grep -qx on || csql_die "ssl did not turn on in PostgreSQL"

paths=(direct direct_tls v1 csql)
target() {
    local base="user=postgres dbname=postgres"
    case $1 in
        direct) echo "host=127.0.0.1 port=$CSQL_PG_PORT $base sslmode=disable" ;;
        direct_tls) echo "host=127.0.0.1 port=$CSQL_PG_PORT $base sslmode=require" ;;
        v1) echo "host=$v1_ip port=5432 $base sslmode=disable" ;;
        csql) echo "host=$csql_ip port=5432 $base sslmode=disable" ;;
    esac
}
pid_of() { case $1 in v1) echo "$V1_PID" ;; csql) echo "$PROXY_PID" ;; *) echo "" ;; esac; }
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
    o=$(timeout 120 "$B/bench/dial_latency" "$token" "$EMU_URL" "$inst" "$dial_n") \
        || csql_die "dial_latency failed"
    python3 -c 'import json,sys
j=json.loads(sys.argv[1]); d=sorted(j["warm_ms"]); n=len(d)
print(j["cold_ms"], d[n//2], d[min(n-1, int(n*0.99))])' "$o" | {
        read -r cold p50 p99
        rec connect library "csql_dial" cold_start_ms "$cold"
        rec connect library "csql_dial" warm_p50_ms "$p50"
        rec connect library "csql_dial" warm_p99_ms "$p99"
    }
done
csql_log "connect: done"
fi

# --- (1) bulk: COPY TO STDOUT -------------------------------------------------------------
if want bulk; then
rows=$((bulk_mib * 1024)) # 1 KiB rows
hz=$(getconf CLK_TCK)
for ((r = 1; r <= reps; r++)); do
    for p in "${paths[@]}"; do
        pid=$(pid_of "$p")
        c0=$(cpu_ticks "$pid")
        timeout 600 /usr/bin/time -f '%e %U %S' -o "$work/time" psql -X -At "$(target "$p")" \
            -c "copy (select repeat('x', 1023) from generate_series(1, $rows)) to stdout" \
            2>"$work/psql.err" | wc -c >"$work/bytes" || { cat "$work/psql.err" >&2; csql_die "COPY via $p failed"; }
        c1=$(cpu_ticks "$pid")
        read -r el us sy <"$work/time"
        bytes=$(cat "$work/bytes")
        [ "$bytes" -ge $((rows * 1024)) ] || csql_die "COPY via $p returned $bytes bytes, expected $((rows * 1024))"
        gib=$(echo "$bytes / 1073741824" | bc -l)
        rec bulk "$p" "${bulk_mib}MiB" MB_per_s "$(echo "$bytes / 1000000 / $el" | bc -l | xargs printf '%.1f')"
        rec bulk "$p" "${bulk_mib}MiB" psql_cpu_s_per_GiB "$(echo "($us + $sy) / $gib" | bc -l | xargs printf '%.3f')"
        [ -n "$pid" ] && rec bulk "$p" "${bulk_mib}MiB" proxy_cpu_s_per_GiB \
            "$(echo "($c1 - $c0) / $hz / $gib" | bc -l | xargs printf '%.3f')"
    done
done
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

# --- report ----------------------------------------------------------------------------------
python3 "$CSQL_REPO/bench/report.py" "$raw" "$out" \
    "$( [ "$smoke" = 1 ] && echo smoke || echo full)" "$reps" "$secs" "$(nproc)" "$(cat /proc/loadavg)" \
    || csql_die "report failed"
csql_log "wrote $out/results.json and $out/results.md"
[ "$smoke" = 1 ] && cat "$out/results.md"
exit 0
