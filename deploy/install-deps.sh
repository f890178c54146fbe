#!/usr/bin/env bash
# Install warren's build, test and local-server dependencies on Debian 12.
# clang-14 and its runtime build the libFuzzer targets (tests/fuzz/); openssl
# makes the test CA of the TLS tests, stunnel4 is the TLS proxy in front of a
# TLS-only Redis there (hiredis 0.14 has no TLS).
# Idempotent: when every package is already installed it only runs
# dpkg-query (no apt-get update). Must run as root.
# Package installs never start the system rabbitmq/redis services: if no
# /usr/sbin/policy-rc.d exists, a temporary one that denies starts
# (exit 101) is put in place for the duration of the install.
set -euo pipefail

PACKAGES=(
    build-essential cmake pkg-config help2man
    librabbitmq-dev libhiredis-dev libluajit2-5.1-dev luajit2
    libyaml-dev libjansson-dev libmicrohttpd-dev libcurl4-openssl-dev libssl-dev
    libpcre2-dev
    lua-cjson lua-busted lua-yaml
    rabbitmq-server redis-server redis-tools
    python3 python3-pika python3-redis python3-yaml
    json-schema-test-suite python3-jsonschema
    prometheus
    procps iproute2
    clang-14 libclang-rt-14-dev clang-format-14
    openssl stunnel4
)

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: must run as root" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    # db:Status-Status is "installed" only for fully installed packages
    # (not for "rc" leftovers or half-configured ones).
    if ! dpkg-query -W -f='${db:Status-Status}\n' "$pkg" 2>/dev/null | grep -qx installed; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps: all ${#PACKAGES[@]} packages already installed, nothing to do"
    exit 0
fi

echo "install-deps: installing ${#missing[@]} missing package(s): ${missing[*]}"

POLICY=/usr/sbin/policy-rc.d
temp_policy=0
cleanup() {
    if [ "$temp_policy" -eq 1 ]; then
        rm -f "$POLICY"
    fi
}
trap cleanup EXIT
trap "exit 130" INT TERM
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, created by warren install-deps.sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    temp_policy=1
fi

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
