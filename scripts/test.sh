#!/usr/bin/env bash
# The whole test suite, as CI runs it (README: "scripts/test.sh"):
#   1. scripts/setup.sh (Debian packages; no-op when present)
#   2. debug preset: configure + build with -Werror, run every ctest test
#   3. asan preset (ASan + UBSan): configure + build, run every ctest test
#   4. tsan preset (ThreadSanitizer): configure + build, run the tests of code that
#      shares state across threads (CSQL_TSAN_TESTS)
#   5. fuzz/run.sh: every libFuzzer target for CSQL_TEST_FUZZ_SECS (default 4; 0 skips)
#   6. bench/run.sh --smoke
# Exits non-zero if any build or test fails. Test failures in one preset do not
# stop the other from running, so one run reports everything.
# Env: CSQL_TEST_PRESETS (default "debug asan tsan"), CSQL_TEST_JOBS (ctest -j, default 2),
#      CSQL_CTEST_ARGS (extra ctest arguments, e.g. "-L unit"), CSQL_TEST_FUZZ_SECS.
set -euo pipefail
cd "$(dirname "$0")/.."

# Servers and proxies in the tests open many sockets; take whatever we may.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

scripts/setup.sh

presets=${CSQL_TEST_PRESETS:-debug asan tsan}
# Tests of code that shares state across threads: TLS connections, caches and the
# refresher, the event loop and endpoints, credentials, async dials, the proxy; and the
# fault scripts whose csql-proxy runs under load (not fault_clock_jump: libfaketime's
# pthread interposition makes TSan report a double lock that is not there).
tsan_tests=${CSQL_TSAN_TESTS:-'^(test_(errors|conn|dial_socket|cache|cache_nowait|dialer|creds|keys|http|fwd|endpoint|endpoint_loops|loop|dial_nb|dial|async|async_adapters|async_drivers|async_server|endpoint_e2e|emulator_proxy|emulator_auth)|test_proxy_.*|fault_(connections|integrity|soak))$'}
jobs=${CSQL_TEST_JOBS:-2}
failed=()
summary=()
for preset in $presets; do
    start=$(date +%s)
    echo "=== $preset: configure and build (-Werror) ==="
    if ! cmake --preset "$preset" -DCSQL_WERROR=ON >/dev/null \
        || ! cmake --build --preset "$preset"; then
        echo "test.sh: $preset: build failed" >&2
        failed+=("$preset:build")
        summary+=("$preset: BUILD FAILED")
        continue
    fi
    echo "=== $preset: ctest (-j$jobs) ==="
    # shellcheck disable=SC2086 # CSQL_CTEST_ARGS is a list of words
    select=()
    [ "$preset" = tsan ] && select=(-R "$tsan_tests")
    if ctest --preset "$preset" -j"$jobs" --no-tests=error "${select[@]}" ${CSQL_CTEST_ARGS:-}; then
        summary+=("$preset: all tests passed ($(($(date +%s) - start)) s)")
    else
        failed+=("$preset:tests")
        summary+=("$preset: TESTS FAILED ($(($(date +%s) - start)) s; see above)")
    fi
done

# A short libFuzzer run of every target (fuzz/run.sh: clang-14, ASan + UBSan, build/fuzz);
# a crash, leak or timeout fails CI and leaves its input in build/fuzz/artifacts/.
fuzz_secs=${CSQL_TEST_FUZZ_SECS:-4}
if [ "$fuzz_secs" -gt 0 ]; then
    echo "=== fuzz: ${fuzz_secs}s per target ==="
    start=$(date +%s)
    if fuzz/run.sh "$fuzz_secs"; then
        summary+=("fuzz: every target clean for ${fuzz_secs}s ($(($(date +%s) - start)) s with the build)")
    else
        failed+=("fuzz")
        summary+=("fuzz: FAILED (see above and build/fuzz/artifacts/)")
    fi
fi

echo "=== bench: smoke ===" && { CSQL_BUILD_DIR="$PWD/build/${presets%% *}" bench/run.sh --smoke --no-setup >/dev/null && summary+=("bench smoke: ok") || { failed+=("bench:smoke"); summary+=("bench smoke: FAILED"); }; }
echo "=== summary ==="
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "test.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: OK"
