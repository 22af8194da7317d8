#!/usr/bin/env bash
# Fails when a tracked C file differs from clang-format's output (config in .clang-format).
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
for f in $(git ls-files '*.c' '*.h'); do
    if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
        echo "not clang-formatted: $f"
        bad=1
    fi
done
exit $bad
