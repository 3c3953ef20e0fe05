#!/usr/bin/env bash
# Every public header compiles on its own as C99 -pedantic and as C++11
# (include/csql promises both), with no warnings.
set -euo pipefail
src=${1:?usage: check_headers.sh SOURCE_DIR}
cc=${CC:-cc}
cxx=${CXX:-c++}
work=$(mktemp -d /tmp/csql-headers.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail=0
count=0
for h in "$src"/include/csql/*.h "$src"/include/csql/adapters/*.h; do
    rel=${h#"$src/include/"}
    case "$rel" in
        csql/adapters/libuv.h) pkg-config --exists libuv || continue ;;
        csql/adapters/libevent.h) pkg-config --exists libevent || continue ;;
    esac
    extra=$(case "$rel" in
        # libuv's own headers need POSIX declarations (pthread_rwlock_t).
        csql/adapters/libuv.h) echo "-D_POSIX_C_SOURCE=200809L $(pkg-config --cflags libuv)" ;;
        csql/adapters/libevent.h) pkg-config --cflags libevent ;;
    esac)
    printf '#include "%s"\nint csql_header_check;\n' "$rel" >"$work/t.c"
    cp "$work/t.c" "$work/t.cpp"
    # shellcheck disable=SC2086 # extra is a list of flags
    if ! "$cc" -std=c99 -pedantic -Wall -Wextra -Werror -I"$src/include" $extra -c "$work/t.c" -o "$work/t.o"; then
        echo "check_headers: $rel does not compile alone as C99" >&2
        fail=1
    fi
    # shellcheck disable=SC2086
    if ! "$cxx" -std=c++11 -pedantic -Wall -Wextra -Werror -I"$src/include" $extra -c "$work/t.cpp" -o "$work/t.o"; then
        echo "check_headers: $rel does not compile alone as C++11" >&2
        fail=1
    fi
    count=$((count + 1))
done
[ "$count" -gt 0 ] || { echo "check_headers: no headers found under $src/include" >&2; exit 1; }
[ "$fail" -eq 0 ] || exit 1
echo "check_headers: $count headers compile alone as C99 and C++11"
