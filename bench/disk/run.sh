#!/bin/sh
# virtio-blk throughput from inside the mini guest (raw and VHD), next to fio/dd on the same
# host file (see bench/README.md). Usage: bench/disk/run.sh BUILD_DIR [disk_bench.py options]
# Needs a build with nuvem-vmm, nuvem-miniguest and nuvem-vhd, and /dev/kvm. Uses fio and dd
# where installed (Debian: apt-get install fio); it installs nothing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 BUILD_DIR [options]" >&2; exit 2; }
build=$(cd "$1" && pwd)
shift
for f in hypervisor/nuvem-vmm hypervisor/nuvem-miniguest.elf storage/vhd/nuvem-vhd; do
    [ -f "$build/$f" ] || { echo "$build/$f is missing: build nuvem-vmm and nuvem-vhd" >&2; exit 2; }
done
command -v fio >/dev/null 2>&1 || echo "fio not installed: dd is the only host baseline" >&2
# A hard bound on the whole run; the VMMs it starts are stopped by the harness (by PID).
exec timeout -k 5 1500 python3 "$here/disk_bench.py" "$build" "$@"
