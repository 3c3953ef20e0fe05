#!/usr/bin/env bash
# Install csql with its driver helpers into a temp prefix, then build
# examples/pq_query.c and examples/mysql_query.c out of tree with pkg-config
# (csql-pq, csql-mysql) and check that they run on the installed libraries
# and report csql's own errors.
# Env (set by ctest): CSQL_BUILD_DIR, CSQL_SOURCE_DIR.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib/common.sh"
csql_deadline 120

build=${CSQL_BUILD_DIR:?CSQL_BUILD_DIR must name the build tree}
src=${CSQL_SOURCE_DIR:-$CSQL_REPO}
csql_tempdir work csql-install-drivers

cmake --install "$build" --prefix "$work/prefix" >"$work/install.log" \
    || { cat "$work/install.log" >&2; csql_die "cmake --install failed"; }
pcdir=$(dirname "$(find "$work/prefix" -name csql-pq.pc | head -n1)")
[ -f "$pcdir/csql-pq.pc" ] || csql_die "no csql-pq.pc installed"
[ -f "$pcdir/csql-mysql.pc" ] || csql_die "no csql-mysql.pc installed"
for h in pq.h mysql.h endpoint.h helper.h; do
    [ -f "$work/prefix/include/csql/$h" ] || csql_die "header csql/$h not installed"
done
libdir=$(dirname "$pcdir")
# The .pc files name the configured prefix; point csql's at this one (libpq's stay as they are).
sed -i "s|^prefix=.*|prefix=$work/prefix|" "$pcdir/csql.pc" "$pcdir/csql-pq.pc" "$pcdir/csql-mysql.pc"
export PKG_CONFIG_PATH="$pcdir"

# A sanitizer build installs instrumented libraries: programs linking them need the same flags.
san=$(sed -n 's/^CSQL_SANITIZE:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null | tr ';' ',')
sanflags=${san:+-fsanitize=$san}

build_one() { # name pkg
    local flags
    flags=$(pkg-config --cflags --libs "$2") \
        || csql_die "pkg-config $2 failed"
    cc -std=c11 -Wall -Wextra -Werror $sanflags -o "$work/$1" "$src/examples/$1.c" $flags \
        || csql_die "building examples/$1.c with pkg-config $2 failed (flags: $flags)"
    local libs
    libs=$(LD_LIBRARY_PATH="$libdir" ldd "$work/$1")
    csql_expect_contains "$1's libraries" "$libdir/lib$2.so" "$libs"
}
build_one pq_query csql-pq
build_one mysql_query csql-mysql

# A bad instance name is csql's error (no network needed), with a non-zero status.
export CSQL_TOKEN=install-test-token
if out=$(LD_LIBRARY_PATH="$libdir" "$work/pq_query" not-an-instance "user=x" 2>&1); then
    csql_die "pq_query accepted a bad instance name"
fi
csql_expect_contains "pq_query, bad name" "not-an-instance" "$out"
if out=$(LD_LIBRARY_PATH="$libdir" "$work/pq_query" p:r:i "host=/tmp" 2>&1); then
    csql_die "pq_query accepted host= in conninfo"
fi
csql_expect_contains "pq_query, host=" "\"host\"" "$out"
if out=$(LD_LIBRARY_PATH="$libdir" "$work/mysql_query" not-an-instance u p db 2>&1); then
    csql_die "mysql_query accepted a bad instance name"
fi
csql_expect_contains "mysql_query, bad name" "not-an-instance" "$out"
echo "1 passed, 0 failed"
