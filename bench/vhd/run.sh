#!/bin/sh
# Runs bench-vhd from an existing build directory (builds nothing).
#   bench/vhd/run.sh BUILD_DIR [bench-vhd options...]     e.g. bench/vhd/run.sh build/release
# Prints the tables and, last, one JSON line. Extra options go to bench-vhd (see --help).
set -eu
if [ $# -lt 1 ]; then
    echo "usage: $0 BUILD_DIR [bench-vhd options...]" >&2
    exit 2
fi
build=$1
shift
bench=$build/bench/vhd/bench-vhd
if [ ! -x "$bench" ]; then
    echo "$0: $bench not found; build the target bench-vhd in $build first" >&2
    exit 2
fi
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, uptime:$(uptime | sed 's/.*up/ up/')"
exec timeout 600 "$bench" "$@"
