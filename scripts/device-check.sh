#!/usr/bin/env bash
# nuvem-vmm checks for another host (one with hardware KVM, say), where only a copy of the
# work tree and a few carried build outputs exist: no apt, no network, maybe no -dev libraries.
#
# Here (the build host):
#   cmake -S . -B build/h-vmm-static -G Ninja -DCMAKE_BUILD_TYPE=Release -DNUVEM_STATIC_VMM=ON
#   cmake --build build/h-vmm-static --target nuvem-vmm kvm-speed nuvem-miniguest
#   scripts/build-guest-image.sh                  # optional: the Linux guest (build/guest-image)
#   scripts/device-check.sh --prepare             # copies what is needed into build/device-bundle
# Then carry build/device-bundle (about 12 MiB) and, on the other host, from the tree's root:
#   scripts/device-check.sh [build/device-bundle]
# It prints what it sees: the host's KVM, the kvm-speed probe, a mini-guest boot (banner,
# commands, 4 vCPUs, pause/resume, poweroff), and, where KVM is hardware-speed, a full boot
# of Debian's 6.1 kernel (bzImage + busybox initramfs) to userspace. Exit 0 if all that ran
# passed, 1 otherwise.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bundle_default=$root/build/device-bundle

if [ "${1:-}" = "--prepare" ]; then
    src=${2:-$root/build/h-vmm-static}
    out=${3:-$bundle_default}
    mkdir -p "$out"
    for f in hypervisor/nuvem-vmm hypervisor/nuvem-miniguest.elf bench/kvm-speed/kvm-speed; do
        [ -f "$src/$f" ] || { echo "device-check: missing $src/$f (build the static targets)" >&2; exit 1; }
        cp "$src/$f" "$out/"
    done
    if ldd "$out/nuvem-vmm" >/dev/null 2>&1; then
        echo "device-check: warning: $src/hypervisor/nuvem-vmm is dynamically linked (NUVEM_STATIC_VMM=ON?)" >&2
    fi
    img=${NUVEM_GUEST_IMAGE_DIR:-$root/build/guest-image}
    for f in vmlinuz initramfs.cpio VERSION; do
        [ -f "$img/$f" ] && cp "$img/$f" "$out/"
    done
    du -sh "$out"
    ls -la "$out"
    exit 0
fi

bundle=${1:-$bundle_default}
vmm=$bundle/nuvem-vmm
guest=$bundle/nuvem-miniguest.elf
speed=$bundle/kvm-speed
failures=0
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
pass() { printf 'PASS: %s\n' "$*"; }

say "host: $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
say "cpu virtualization flags: $(grep -o -w -E 'vmx|svm|hypervisor' /proc/cpuinfo | sort | uniq -c | tr '\n' ' ')"
mods=""
for m in /sys/module/kvm*; do [ -e "$m" ] && mods="$mods ${m##*/}"; done
say "kvm modules:${mods:- none}"
if [ -e /dev/kvm ]; then say "/dev/kvm: $(stat -c '%A %U:%G' /dev/kvm)"; else say "/dev/kvm: missing"; fi
for f in "$vmm" "$guest" "$speed"; do
    [ -f "$f" ] || { echo "device-check: $f missing (run --prepare on the build host and carry the bundle)"; exit 1; }
done

say "kvm-speed"
"$speed" 2>&1
rc=$?
"$speed" --json --quick 2>/dev/null | sed 's/^/== kvm-speed json: /'
if [ $rc -eq 77 ]; then
    echo "device-check: no usable /dev/kvm here; nothing more to check"
    exit 1
fi
[ $rc -eq 0 ] || fail "kvm-speed exit $rc"
"$speed" --quick --require-fast >/dev/null 2>&1
fast=$?

# Starts nuvem-vmm on a generated config; sets $vm_pid; serial output in $work/$1.serial.
start_vm() {
    local name=$1 kernel=$2 vcpus=$3 mem=$4 cmdline=$5 extra=$6
    cat >"$work/$name.json" <<EOF
{"name": "$name", "kernel": "$kernel", "vcpus": $vcpus, "memory_mib": $mem, "cmdline": "$cmdline",
 "serial": {"log": "$work/$name.serial", "socket": "$work/$name.con"}, "control": "$work/$name.ctl"$extra}
EOF
    : >"$work/$name.serial"
    "$vmm" "$work/$name.json" >"$work/$name.log" 2>&1 &
    vm_pid=$!
    pids+=("$vm_pid")
}

# wait_serial NAME REGEX TIMEOUT_S
wait_serial() {
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt $deadline ]; do
        grep -a -q -E "$2" "$work/$1.serial" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# wait_exit PID TIMEOUT_S -> prints the exit status (or "timeout")
wait_exit() {
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if kill -0 "$1" 2>/dev/null; then
        kill "$1"
        echo timeout
        return
    fi
    wait "$1"
    echo $?
}

say "mini guest, 4 vCPUs"
t0=$(date +%s.%N)
start_vm mini "$guest" 4 64 "device-check" ""
if wait_serial mini '^ready' 30; then
    t1=$(date +%s.%N)
    pass "mini guest banner after $(awk "BEGIN {printf \"%.3f\", $t1 - $t0}") s"
    grep -a -E '^(Nuvem|mem )' "$work/mini.serial" | sed 's/^/   /'
else
    fail "mini guest: no banner in 30 s"
    sed 's/^/   /' "$work/mini.log" "$work/mini.serial"
fi
if command -v python3 >/dev/null 2>&1; then
    say "mini guest integration tests (python3)"
    kill "$vm_pid" 2>/dev/null
    for t in boot poweroff powerdown reboot crash pause quit smp reset console protocol flood bigmem; do
        out=$(timeout 120 python3 "$root/tests/integration/vmm_miniguest.py" "$vmm" "$guest" "$t" 2>&1)
        case $? in
        0) echo "$out" | grep -E '^(PASS|process start)' | sed 's/^/   /' ;;
        77) echo "   SKIP $t: $out" ;;
        *) fail "integration $t"; echo "$out" | tail -20 | sed 's/^/   /' ;;
        esac
    done
else
    say "no python3 here: commands not checked; stopping the mini guest with SIGTERM"
    kill -TERM "$vm_pid"
    st=$(wait_exit "$vm_pid" 10)
    if [ "$st" = 0 ]; then pass "SIGTERM -> clean exit"; else fail "SIGTERM -> exit status $st"; fi
fi

if [ $fast -ne 0 ]; then
    say "KVM is not hardware-speed here: skipping the full Linux boot"
elif [ ! -f "$bundle/vmlinuz" ] || [ ! -f "$bundle/initramfs.cpio" ]; then
    say "no Linux image in the bundle: skipping the full Linux boot"
else
    for vcpus in 1 2; do
        say "Linux $(cat "$bundle/VERSION" 2>/dev/null) bzImage, $vcpus vCPU(s), busybox initramfs"
        name=linux$vcpus
        t0=$(date +%s.%N)
        start_vm "$name" "$bundle/vmlinuz" "$vcpus" 256 "console=ttyS0 reboot=k panic=-1 nowatchdog" \
            ", \"initrd\": \"$bundle/initramfs.cpio\", \"on_reboot\": \"exit\""
        if wait_serial "$name" 'Linux version' 120; then
            t1=$(date +%s.%N)
            pass "Linux banner after $(awk "BEGIN {printf \"%.3f\", $t1 - $t0}") s"
        else
            fail "no Linux banner in 120 s"
        fi
        if wait_serial "$name" 'GUEST-UP' 180; then
            t2=$(date +%s.%N)
            pass "GUEST-UP after $(awk "BEGIN {printf \"%.3f\", $t2 - $t0}") s: $(grep -a GUEST-UP "$work/$name.serial" | tr -d '\r')"
            grep -a -q "cpus=$vcpus" "$work/$name.serial" || fail "guest does not see $vcpus CPUs"
        else
            fail "Linux did not reach GUEST-UP in 180 s"
        fi
        st=$(wait_exit "$vm_pid" 60)
        if [ "$st" = 2 ]; then pass "guest reboot -> nuvem-vmm exit 2 (reboot event)"; else fail "exit status $st, want 2"; fi
        echo "   serial tail:"
        tail -n 15 "$work/$name.serial" | tr -d '\r' | sed 's/^/   | /'
        [ "$st" = 2 ] || sed 's/^/   log| /' "$work/$name.log"
    done
fi

say "done: $failures failure(s)"
[ $failures -eq 0 ]
