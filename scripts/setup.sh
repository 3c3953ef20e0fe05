#!/usr/bin/env bash
# Installs every Debian package csql builds, tests, benchmarks or demos with.
# Idempotent: packages already present are left alone, and apt-get update runs
# only when something is missing. Run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
    # build
    build-essential cmake ninja-build pkg-config clang-14 libclang-rt-14-dev
    # libraries
    libssl-dev libcurl4-openssl-dev libjansson-dev libmicrohttpd-dev libevent-dev libuv1-dev
    libcmocka-dev libyaml-dev
    # driver helpers
    libpq-dev libmariadb-dev freetds-dev freetds-bin
    # databases and clients
    postgresql postgresql-contrib postgresql-client mariadb-server mariadb-client
    # Google's reference clients and test tools
    cloudsql-proxy nodejs curl openssl procps iproute2 faketime jq util-linux
    # benchmark plots and the stunnel peer (bench/run.sh); profilers (docs/benchmarks)
    gnuplot-nox stunnel4 linux-perf valgrind
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

# npm ships with nodesource's nodejs; Debian's nodejs needs the separate npm package.
if ! command -v npm >/dev/null 2>&1; then
    missing+=(npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "setup: all Debian packages present"
fi
