#!/bin/sh
# nuvem-vmm vs QEMU microvm: start-up, memory overhead, density (see bench/README.md).
# Usage: bench/vmm/run.sh BUILD_DIR [vmm_bench.py options]
# Needs a build with the nuvem-vmm and nuvem-miniguest targets, /dev/kvm, and root for the
# KSM rows (otherwise they are skipped). Installs qemu-system-x86 if it is missing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 BUILD_DIR [options]" >&2; exit 2; }
build=$(cd "$1" && pwd)
shift
vmm=$build/hypervisor/nuvem-vmm
guest=$build/hypervisor/nuvem-miniguest.elf
for f in "$vmm" "$guest"; do
    [ -f "$f" ] || { echo "$f is missing: build the nuvem-vmm and nuvem-miniguest targets" >&2; exit 2; }
done
[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "/dev/kvm is missing or not accessible" >&2; exit 2; }

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing qemu-system-x86 (Debian)" >&2
        DEBIAN_FRONTEND=noninteractive timeout 240 apt-get install -y --no-install-recommends \
            qemu-system-x86 >/dev/null ||
            { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive timeout 240 \
                apt-get install -y --no-install-recommends qemu-system-x86 >/dev/null; } ||
            echo "qemu-system-x86 could not be installed: QEMU columns will be skipped" >&2
    else
        echo "qemu-system-x86_64 missing and not root: QEMU columns will be skipped" >&2
    fi
fi

# The benchmark restores KSM itself (also on signals); this is the backstop should it be
# killed outright.
ksm=/sys/kernel/mm/ksm
saved=""
if [ -w $ksm/run ]; then
    saved="$(cat $ksm/run) $(cat $ksm/pages_to_scan) $(cat $ksm/sleep_millisecs)"
fi
restore() {
    if [ -n "$saved" ]; then
        set -- $saved
        echo "$2" >$ksm/pages_to_scan 2>/dev/null || true
        echo "$3" >$ksm/sleep_millisecs 2>/dev/null || true
        echo "$1" >$ksm/run 2>/dev/null || true
    fi
}
trap restore EXIT

# vmm_bench.py has its own watchdog (--max-seconds, 270 s); this bound is the hard one.
# timeout runs it in a process group of its own: signals to this script are passed on.
timeout -k 5 285 python3 "$here/vmm_bench.py" --vmm "$vmm" --guest "$guest" "$@" &
child=$!
trap 'kill -TERM $child 2>/dev/null || true' INT TERM HUP
rc=0
wait $child || rc=$?
while kill -0 $child 2>/dev/null; do # wait was interrupted by a signal
    rc=0
    wait $child || rc=$?
done
exit $rc
