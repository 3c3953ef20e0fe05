#!/usr/bin/env bash
# Install csql from the build tree into a temp prefix, build examples/dial.c
# out of tree twice (pkg-config, and CMake find_package(csql)), and run both
# against csql-emulator in front of a throwaway PostgreSQL.
# Env (set by ctest): CSQL_BUILD_DIR, CSQL_SOURCE_DIR, CSQL_EMULATOR.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
. "$(dirname "$0")/../../scripts/lib/services.sh"
csql_deadline 240

build=${CSQL_BUILD_DIR:?CSQL_BUILD_DIR must name the build tree}
src=${CSQL_SOURCE_DIR:-$CSQL_REPO}
csql_tempdir work csql-install

# 1. Install.
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log" \
    || { cat "$work/install.log" >&2; csql_die "cmake --install failed"; }
pc=$(find "$work/prefix" -name csql.pc | head -n1)
[ -n "$pc" ] || csql_die "no csql.pc installed"
cfgdir=$(dirname "$(find "$work/prefix" -name csqlConfig.cmake | head -n1)")
[ -f "$cfgdir/csqlConfig.cmake" ] || csql_die "no csqlConfig.cmake installed"
libdir=$(dirname "$(dirname "$pc")")
for h in csql.h config.h conn.h dialer.h errors.h log.h version.h; do
    [ -f "$work/prefix/include/csql/$h" ] || csql_die "header csql/$h not installed"
done
csql_log "installed into $work/prefix (libdir $libdir)"

# A sanitizer build installs instrumented libraries: programs linking them need the same flags.
san=$(sed -n 's/^CSQL_SANITIZE:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null | tr ';' ',')
sanflags=${san:+-fsanitize=$san}

# 2. Out of tree with pkg-config. --define-prefix only for csql: its .pc was
#    written for the configured prefix, not this one.
export PKG_CONFIG_PATH="$(dirname "$pc")"
csql_flags=$(pkg-config --define-prefix --cflags --libs csql)
ssl_flags=$(pkg-config --cflags --libs openssl)
cc -std=c11 -Wall -Wextra -Werror $sanflags -o "$work/dial_pc" "$src/examples/dial.c" $csql_flags $ssl_flags \
    || csql_die "building examples/dial.c with pkg-config failed (flags: $csql_flags $ssl_flags)"
# The static archive too, with its dependencies (shared: Debian ships no static libcurl deps).
deps=$(pkg-config --libs openssl libcurl jansson)
cc -std=c11 -Wall -Wextra -Werror $sanflags -o "$work/dial_static" "$src/examples/dial.c" \
    $(pkg-config --define-prefix --cflags csql) "$libdir/libcsql.a" $deps -pthread \
    || csql_die "linking examples/dial.c against libcsql.a failed"

# 3. Out of tree with CMake's find_package(csql).
cmake -S "$src/examples" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$work/prefix" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="$sanflags" -DCMAKE_EXE_LINKER_FLAGS="$sanflags" \
    >"$work/cmake.log" 2>&1 \
    && cmake --build "$work/cmake" >>"$work/cmake.log" 2>&1 \
    || { cat "$work/cmake.log" >&2; csql_die "building examples/ with find_package(csql) failed"; }

# 4. Run all three against the emulator.
csql_start_pg
ip=$(csql_unique_ip 7)
port=$(( 20000 + $$ % 20000 ))
inst="p:us-central1:example"
token="example-token"
csql_start_emulator --static-token "$token" --server-port "$port" \
    --instance "$inst?version=POSTGRES_15&public-ip=$ip&backend=127.0.0.1:$CSQL_PG_PORT"
for exe in "$work/dial_pc" "$work/dial_static" "$work/cmake/csql_example_dial"; do
    out=$(LD_LIBRARY_PATH="$libdir" "$exe" -t "$token" -e "$EMU_URL" -p "$port" "$inst" 2>&1) \
        || { echo "$out" >&2; csql_die "$exe failed"; }
    csql_expect_contains "$(basename "$exe") output" "engine:       POSTGRES_15" "$out"
    csql_expect_contains "$(basename "$exe") output" "connected:    TLSv1.3" "$out"
done
# The shared build really uses the installed library.
libs=$(LD_LIBRARY_PATH="$libdir" ldd "$work/dial_pc")
csql_expect_contains "dial_pc's libraries" "$libdir/libcsql.so" "$libs"
# A bad instance name is reported, with a non-zero status.
if out=$(LD_LIBRARY_PATH="$libdir" "$work/dial_pc" -t "$token" -e "$EMU_URL" "not-an-instance" 2>&1); then
    csql_die "dial accepted a bad instance name"
fi
csql_expect_contains "bad name" "invalid instance connection name" "$out"
echo "1 passed, 0 failed"
