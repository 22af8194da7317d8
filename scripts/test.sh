#!/usr/bin/env bash
# Sets up and runs the whole test suite: installs packages, builds the debug and the
# ASan+UBSan configurations and runs every test in both, then replays and briefly runs the
# libFuzzer targets. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=${NUVEM_JOBS:-$(nproc)}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
echo "=== format"
bash scripts/check-format.sh || status=1
# The Linux guest image (Debian's kernel + busybox) for the VMM's Linux banner test; without
# it that test skips and says why.
bash scripts/build-guest-image.sh || echo "test.sh: no Linux guest image; its tests will skip"
for preset in debug asan; do
    echo "=== $preset: build"
    bash scripts/build.sh "$preset"
    echo "=== $preset: test"
    ctest --test-dir "build/$preset" -j "$jobs" --output-on-failure --timeout 900 || status=1
done
if [ -x tests/fuzz/run-fuzzers.sh ] && command -v clang >/dev/null; then
    echo "=== fuzz: build libFuzzer targets and run each briefly"
    bash scripts/build-fuzzers.sh && bash tests/fuzz/run-fuzzers.sh build/fuzz "${NUVEM_FUZZ_SECONDS:-20}" || status=1
fi
exit $status
