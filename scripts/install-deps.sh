#!/usr/bin/env bash
# Installs every Debian 12 package Nuvem needs to build, test and run. Idempotent.
set -euo pipefail
PKGS=(
  build-essential cmake ninja-build pkg-config clang clang-format python3
  libmicrohttpd-dev libcurl4-openssl-dev libxml2-dev libjson-c-dev libsqlite3-dev sqlite3
  libssl-dev uuid-dev libnl-3-dev libnl-route-3-dev libcmocka-dev libseccomp-dev
  curl qemu-utils iproute2 nftables busybox-static
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
