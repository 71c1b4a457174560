#!/usr/bin/env bash
# Installs the Debian packages that building, testing and benchmarking need.
# Safe to run again: it calls apt-get only when a package is missing, so a
# machine that already has everything pays one dpkg-query and nothing more.
set -euo pipefail

packages=(
    build-essential pkg-config
    libcurl4-openssl-dev libjson-c-dev libyaml-dev libmicrohttpd-dev
    libcmocka-dev
    curl jq openssl
    clang-format clang-tidy
    stress-ng wrk
)

missing=()
for package in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$package")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "hack/deps.sh: missing packages: ${missing[*]}" >&2
    echo "hack/deps.sh: run as root, or install them with apt-get" >&2
    exit 1
fi

echo "hack/deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
