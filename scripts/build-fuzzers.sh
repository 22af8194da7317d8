#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) into build/fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset fuzz >/dev/null
targets=$(cmake --build build/fuzz --target help | grep -o '^fuzz_[a-z0-9_]*' | grep -v '^fuzz_replay' | sort -u)
[ -n "$targets" ] || { echo "no fuzz targets"; exit 1; }
cmake --build build/fuzz -j "${NUVEM_JOBS:-$(nproc)}" --target $targets
