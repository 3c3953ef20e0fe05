#!/usr/bin/env bash
# Build the libFuzzer flavour (clang-14, ASan + UBSan) in build/fuzz and fuzz
# every target for a while, one after the other, one job each, niced.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 10. CI (scripts/test.sh) runs every target for
# CSQL_TEST_FUZZ_SECS = 4 s: 12 targets, about 50 s of fuzzing plus the build.
# TARGET names are without the fuzz_ prefix (default: all). New inputs go to
# build/fuzz/corpus/<target>/ (the checked-in seeds in fuzz/corpus/<target>/
# are read, never written; fuzz/dict/*.dict are used where they fit); a crash leaves build/fuzz/artifacts/<target>/crash-*
# and makes the script exit 1 after the remaining targets have run.
# Env: CC (default clang-14), CSQL_FUZZ_JOBS (parallel fuzzing processes per
# target, default 1), CSQL_FUZZ_ARGS (extra libFuzzer flags, e.g. -dict=...).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
shift || true
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
cc=${CC:-clang-14}
root=$(pwd)
build=$root/build/fuzz
jobs=${CSQL_FUZZ_JOBS:-1}

all=$(sed -n '/^set(CSQL_FUZZ_TARGETS/,/)/p' fuzz/CMakeLists.txt | tr -d '()' |
      sed 's/set//; s/CSQL_FUZZ_TARGETS//' | xargs)
targets=${*:-$all}

echo "=== fuzz: configure and build ($cc) in $build ==="
CC=$cc cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCSQL_FUZZ=ON -DCSQL_BUILD_TESTS=OFF >/dev/null
exes=()
for t in $targets; do
    exes+=("fuzz_$t")
done
nice -n 10 cmake --build "$build" --target "${exes[@]}"

failed=()
summary=()
fuzz_start=$(date +%s)
for t in $targets; do
    corpus=$build/corpus/$t
    artifacts=$build/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    echo "=== fuzz_$t: ${secs}s ==="
    log=$build/fuzz_$t.log
    extra=()
    case $t in
    connect_info | google_error | credentials | token_response | emu_request) extra=(-dict="$root/fuzz/dict/json.dict") ;;
    tls_pem | emu_pubkey) extra=(-dict="$root/fuzz/dict/pem.dict") ;;
    mdx | emu_mdx | emu_backend_auth) extra=(-dict="$root/fuzz/dict/wire.dict") ;;
    esac
    if [ "$jobs" -gt 1 ]; then
        # Worker processes write fuzz-N.log into the current directory.
        extra+=(-jobs="$jobs" -workers="$jobs")
    fi
    # The first corpus directory receives new inputs; the seeds are only read.
    if (cd "$build" && nice -n 10 "./fuzz/fuzz_$t" -max_total_time="$secs" "${extra[@]}" \
        -print_final_stats=1 -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" ${CSQL_FUZZ_ARGS:-} \
        "corpus/$t" "$root/fuzz/corpus/$t") >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s+=$2} END {print s+0}')
        summary+=("fuzz_$t: clean, ${secs}s, $runs runs")
    else
        tail -n 40 "$log" >&2
        failed+=("$t")
        summary+=("fuzz_$t: FAILED (see $log and $artifacts)")
    fi
done

echo "=== fuzz summary ($(($(date +%s) - fuzz_start)) s of fuzzing) ==="
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/run.sh: OK"
