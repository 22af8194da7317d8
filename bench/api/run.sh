#!/bin/sh
# Runs bench-api against the xapid of an existing build directory (builds nothing).
#   bench/api/run.sh BUILD_DIR [bench-api options...]     e.g. bench/api/run.sh build/release
# Prints the table and, last, one JSON line. Extra options go to bench-api (see --help).
set -eu
if [ $# -lt 1 ]; then
    echo "usage: $0 BUILD_DIR [bench-api options...]" >&2
    exit 2
fi
build=$1
shift
xapid=$build/xapid/xapid
bench=$build/bench/api/bench-api
for f in "$xapid" "$bench"; do
    if [ ! -x "$f" ]; then
        echo "$0: $f not found; build the targets xapid and bench-api in $build first" >&2
        exit 2
    fi
done
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n), $(nproc) CPUs, uptime:$(uptime | sed 's/.*up/ up/')"
exec "$bench" --xapid "$xapid" "$@"
