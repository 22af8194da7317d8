#!/usr/bin/env python3
"""Linux guests under nuvem-vmm (Debian's stock 6.1 kernel, built by scripts/build-guest-image.sh).

usage: vmm_linux.py NUVEM_VMM KVM_SPEED IMAGE_DIR {banner|full}
  banner: PVH-boots the uncompressed vmlinux and waits for the kernel's own "Linux version"
          line on our serial console (about a minute where ring 0 is emulated), then for its
          log of our ACPI tables.
  full:   boots the bzImage (64-bit boot protocol) with the busybox initramfs to its GUEST-UP
          marker and a reboot; only where bench/kvm-speed says KVM runs at hardware speed.
Both skip (exit 77) with a reason when the image is not built or /dev/kvm is missing."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmm_harness import TestFailure, Vmm, check, require_kvm, skip  # noqa: E402

BANNER_TIMEOUT = float(os.environ.get("NUVEM_LINUX_BANNER_TIMEOUT", "240"))
FULL_TIMEOUT = float(os.environ.get("NUVEM_LINUX_BOOT_TIMEOUT", "120"))


def image(image_dir, name):
    p = os.path.join(image_dir, name)
    if not os.path.isfile(p):
        skip("Linux guest image not built (%s missing; run scripts/build-guest-image.sh)" % p)
    return p


def t_banner(vmm_path, kvm_speed, image_dir):
    require_kvm()
    vmlinux = image(image_dir, "vmlinux")
    initrd = image(image_dir, "initramfs.cpio")
    v = Vmm(vmm_path, vmlinux, memory_mib=128, initrd=initrd,
            cmdline="earlyprintk=serial,ttyS0,115200 console=ttyS0 noxsave nowatchdog").start()
    try:
        m = v.con.wait_for(r"Linux version (\S+)", BANNER_TIMEOUT)
        print("banner after %.1fs: Linux %s" % (time.monotonic() - v.started_at, m.group(1)))
        v.con.wait_for(r"Command line: earlyprintk=serial", 30)
        v.con.wait_for(r"BIOS-e820: \[mem 0x0000000000100000-0x0000000007ffffff\] usable", 60)
        # Our ACPI tables are found and their checksums pass (a few guest seconds later).
        v.con.wait_for(r"ACPI: RSDP 0x00000000000E0000 000024 \(v02 NUVEM", 120)
        v.con.wait_for(r"ACPI: FACP 0x00000000000E0100 000114 \(v06 NUVEM", 60)
        v.con.wait_for(r"ACPI: APIC 0x00000000000E0400", 60)
        print("ACPI tables seen after %.1fs" % (time.monotonic() - v.started_at))
        v.ctl.ok("quit")
        check(v.wait_exit() == 0, "exit code")
    finally:
        v.stop()


def kvm_is_fast(kvm_speed):
    r = subprocess.run([kvm_speed, "--quick", "--require-fast"], capture_output=True, text=True,
                       timeout=120)
    print(r.stdout.strip())
    if r.returncode == 77:
        skip("kvm-speed: /dev/kvm is not usable")
    if r.returncode == 1:
        line = [l for l in r.stdout.splitlines() if "ring 0 loop" in l]
        skip("KVM is not hardware-speed here (%s); a full Linux boot would take far too long"
             % (line[0].split(": ", 1)[1] if line else "kvm-speed says so"))
    check(r.returncode == 0, "kvm-speed failed: %s" % r.stderr)


def t_full(vmm_path, kvm_speed, image_dir):
    require_kvm()
    vmlinuz = image(image_dir, "vmlinuz")
    initrd = image(image_dir, "initramfs.cpio")
    kvm_is_fast(kvm_speed)
    for vcpus, kernel in ((1, vmlinuz), (2, vmlinuz)):
        v = Vmm(vmm_path, kernel, memory_mib=256, vcpus=vcpus, initrd=initrd, on_reboot="exit",
                cmdline="console=ttyS0 reboot=k panic=-1 nowatchdog").start()
        try:
            m = v.con.wait_for(r"GUEST-UP uptime=(\S+) cpus=(\d+)", FULL_TIMEOUT)
            wall = time.monotonic() - v.started_at
            print("vcpus=%d: GUEST-UP after %.2fs (guest uptime %s s, cpus %s)"
                  % (vcpus, wall, m.group(1), m.group(2)))
            check(int(m.group(2)) == vcpus, "guest sees %s CPUs, want %d" % (m.group(2), vcpus))
            ev = v.ctl.wait_event("reboot", 60)
            print("reboot event: %s" % ev["data"])
            check(v.wait_exit(30) == 2, "exit code %r" % v.proc.returncode)
        finally:
            v.stop()


TESTS = {"banner": t_banner, "full": t_full}

if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[4] not in TESTS:
        print(__doc__)
        sys.exit(2)
    t0 = time.monotonic()
    try:
        TESTS[sys.argv[4]](sys.argv[1], sys.argv[2], sys.argv[3])
    except (TestFailure, EOFError, OSError, ValueError) as e:
        from vmm_harness import LAST_LOGS
        print("FAIL %s: %s" % (sys.argv[4], e))
        for vmm_log, serial in LAST_LOGS[-1:]:
            print("--- nuvem-vmm log:\n%s--- serial log (tail):\n%s" % (vmm_log, serial[-3000:]))
        sys.exit(1)
    print("PASS %s (%.1fs)" % (sys.argv[4], time.monotonic() - t0))
