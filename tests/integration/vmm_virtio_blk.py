#!/usr/bin/env python3
"""Integration tests: virtio-blk (virtio-mmio) in nuvem-vmm, driven by the mini guest's
`blk` commands against a raw image file.

usage: vmm_virtio_blk.py NUVEM_VMM GUEST_ELF TESTNAME (see TESTS at the bottom).

Every test runs under the seccomp sandbox (it allows pwrite64/fdatasync for the disk I/O
threads); `sandboxed` checks that explicitly."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmm_harness import TestFailure, Vmm, check, main, require_kvm  # noqa: E402

SECTOR = 512


def fnv(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return "%08x" % h


def make_image(vm, name="disk.img", sectors=2048, fill=None):
    path = vm.path(name)
    with open(path, "wb") as f:
        f.truncate(sectors * SECTOR)
        for sector, data in (fill or {}).items():
            f.seek(sector * SECTOR)
            f.write(data)
    return path


def read_sector(path, sector):
    with open(path, "rb") as f:
        f.seek(sector * SECTOR)
        return f.read(SECTOR)


def host_pattern(sector):
    text = ("HOST-SECTOR-%d|" % sector).encode()
    return (text * (SECTOR // len(text) + 1))[:SECTOR]


def boot(vm, disks, **cfg):
    """Starts vm with these disks (the image files must already be inside vm.dir)."""
    require_kvm()
    vm.cfg["disks"] = disks
    vm.cfg.update(cfg)
    vm.start()
    vm.wait_banner()
    return vm


def blk(vm, cmd, timeout=20.0):
    """Runs `blk CMD` in the guest and returns its result line."""
    # The whole line: the guest may send it in pieces, so wait for its end.
    return vm.con.command("blk " + cmd, r"^(blk[^\r\n]*)\r\n", timeout).group(1)


def t_rw(vmm_path, guest):
    """Guest reads host-written bytes, writes a pattern the host sees, flush, bounds."""
    vm = Vmm(vmm_path, guest)
    try:
        img = make_image(vm, fill={5: host_pattern(5), 2047: host_pattern(2047)})
        boot(vm, [{"path": img}])
        check("disk vda: 2048 sectors\r\n" in vm.con.text(), "no disk line in the banner")
        info = blk(vm, "info")
        check("2048 sectors (1024 KiB), rw, flush yes" in info, info)
        r = blk(vm, "read 5")
        expect = "blk read 5: ok fnv %s \"%s\"" % (fnv(host_pattern(5)), host_pattern(5)[:32].decode())
        check(r == expect, "read 5: %r, expected %r" % (r, expect))
        r = blk(vm, "read 2047")
        check(("fnv %s" % fnv(host_pattern(2047))) in r, "last sector: %r" % r)
        check(blk(vm, "read 9") == "blk read 9: ok fnv %s \"%s\"" % (fnv(bytes(SECTOR)), "." * 32),
              "zero sector")
        pat = "guest-wrote-7:"
        check(blk(vm, "write 7 " + pat) == "blk write 7: ok", "write 7")
        want = (pat.encode() * 64)[:SECTOR]
        check(read_sector(img, 7) == want, "host file sector 7: %r" % read_sector(img, 7)[:40])
        check(read_sector(img, 6) == bytes(SECTOR) and read_sector(img, 8) == bytes(SECTOR),
              "neighbours of sector 7 changed")
        check(blk(vm, "flush") == "blk flush: ok", "flush")
        r = blk(vm, "read 7")
        check(("fnv %s" % fnv(want)) in r, "read back 7: %r" % r)
        check(blk(vm, "write 2047 END") == "blk write 2047: ok", "write last sector")
        check(read_sector(img, 2047) == (b"END" * 171)[:SECTOR], "last sector on host")
        check(blk(vm, "read 2048") == "blk read 2048: error 1", "read past the end")
        check(blk(vm, "write 99999999 x") == "blk write 99999999: error 1", "write past the end")
        check(os.path.getsize(img) == 2048 * SECTOR, "image grew")
        check(blk(vm, "id") == "blk id: ok \"nuvem-vd0\"", "id")
        st = vm.ctl.ok("stats")
        d = st["disks"]
        check(len(d) == 1 and d[0]["reads"] == 4 and d[0]["writes"] == 2 and d[0]["flushes"] == 1
              and d[0]["errors"] == 2 and d[0]["read_bytes"] == 4 * SECTOR, "stats %r" % d)
        check(st["mmio_unhandled"] == 0, "unhandled MMIO: %r" % st["mmio_unhandled"])
        vm.ctl.ok("quit")
        check(vm.wait_exit() == 0, "exit code")
    finally:
        vm.stop()


def t_readonly(vmm_path, guest):
    """A read-only disk: RO feature, reads work, writes fail in the guest, file untouched."""
    vm = Vmm(vmm_path, guest)
    try:
        img = make_image(vm, sectors=64, fill={1: host_pattern(1)})
        os.chmod(img, 0o444)  # opened O_RDONLY: a read-only file is enough
        before = open(img, "rb").read()
        boot(vm, [{"path": img, "readonly": True}])
        check("disk vda: 64 sectors, read-only" in vm.con.text(), "banner")
        check(", ro," in blk(vm, "info"), "info")
        check(("fnv %s" % fnv(host_pattern(1))) in blk(vm, "read 1"), "read")
        check(blk(vm, "write 1 X") == "blk write 1: error 1", "write not refused")
        check(blk(vm, "flush") == "blk flush: ok", "flush on a read-only disk")
        check(open(img, "rb").read() == before, "read-only image changed")
        check(vm.ctl.ok("query-status")["status"] == "running", "VMM state")
    finally:
        vm.stop()


def t_reboot(vmm_path, guest):
    """The device is reset with the machine: after a guest reboot the new boot uses it again."""
    vm = Vmm(vmm_path, guest)
    try:
        img = make_image(vm, sectors=64)
        boot(vm, [{"path": img}])
        check(blk(vm, "write 2 before-reboot") == "blk write 2: ok", "write")
        vm.con.send("reboot")
        vm.ctl.wait_event("reboot")
        vm.con.wait_for(r"^ready\r?$", 20)
        r = blk(vm, "read 2")
        check(("fnv %s" % fnv((b"before-reboot" * 40)[:SECTOR])) in r, "after reboot: %r" % r)
        check(blk(vm, "write 3 after") == "blk write 3: ok", "write after reboot")
        check(read_sector(img, 3)[:5] == b"after", "host file after reboot")
    finally:
        vm.stop()


def t_shrunk(vmm_path, guest):
    """The image shrinks under a running VM: the guest gets I/O errors, the VMM lives."""
    vm = Vmm(vmm_path, guest)
    try:
        img = make_image(vm, sectors=64, fill={1: host_pattern(1)})
        boot(vm, [{"path": img}])
        os.truncate(img, 2 * SECTOR)
        check(blk(vm, "read 10") == "blk read 10: error 1", "read beyond the shrunk file")
        check(("fnv %s" % fnv(host_pattern(1))) in blk(vm, "read 1"), "read inside still works")
        check(vm.ctl.ok("query-status")["status"] == "running", "VMM state")
        check(vm.ctl.ok("stats")["disks"][0]["errors"] == 1, "error counted")
    finally:
        vm.stop()


def start_fails(vm, pattern, timeout=15.0):
    """Starts vm expecting nuvem-vmm to refuse it: exit 1, pattern in its log, no VM."""
    import json
    with open(vm.path("vm.json"), "w") as f:
        json.dump(vm.cfg, f)
    with open(vm.path("vmm.log"), "w") as log:
        p = subprocess.Popen([vm.vmm_path, vm.path("vm.json")], stdout=log, stderr=subprocess.STDOUT)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
            raise TestFailure("nuvem-vmm did not refuse the config within %.0fs" % timeout)
    out = vm.log()
    check(rc == 1, "exit %d, expected 1:\n%s" % (rc, out))
    check("bad config" in out, "not reported as a bad config:\n%s" % out)
    check(pattern in out, "no %r in the log:\n%s" % (pattern, out))
    check(not os.path.exists(vm.cfg["control"]), "control socket left behind")
    check("started" not in out, "a VM was started:\n%s" % out)


def t_bad_image(vmm_path, guest):
    """Missing, truncated (not a multiple of 512), empty, directory: a clean error, no VM."""
    cases = [
        (lambda vm: vm.path("nope.img"), "disks[0].path No such file or directory"),
        (lambda vm: make_truncated(vm, 1000), "disks[0].path size 1000 is not a multiple of 512"),
        (lambda vm: make_truncated(vm, 0), "disks[0].path empty image"),
        (lambda vm: vm.dir, "disks[0].path"),
    ]
    for mk, pattern in cases:
        vm = Vmm(vmm_path, guest)
        try:
            vm.cfg["disks"] = [{"path": mk(vm)}]
            start_fails(vm, pattern)
        finally:
            vm.stop()


def make_truncated(vm, size):
    path = vm.path("short.img")
    with open(path, "wb") as f:
        f.write(b"x" * size)
    return path


def t_bad_config(vmm_path, guest):
    """disks entries are checked: unknown keys, wrong types, missing path, too many."""
    cases = [
        ([{"path": "/x", "size": 1}], "disks disks[0].size: unknown key"),
        ([{"readonly": True}], "disks disks[0].path: missing"),
        ([{"path": 5}], "FIELD_TYPE_ERROR disks[0].path"),
        ([{"path": "/x", "readonly": "yes"}], "FIELD_TYPE_ERROR disks[0].readonly"),
        (["/x"], "FIELD_TYPE_ERROR disks[0]"),
        ({"path": "/x"}, "FIELD_TYPE_ERROR disks"),
        ([{"path": "/x"}] * 9, "disks too many"),
    ]
    for disks, pattern in cases:
        vm = Vmm(vmm_path, guest)
        try:
            vm.cfg["disks"] = disks
            start_fails(vm, pattern)
        finally:
            vm.stop()
    vm = Vmm(vmm_path, guest)
    try:
        vm.cfg["nics"] = [{"tap": "nvt-missing0"}]
        start_fails(vm, "nics[0].tap no such interface")
    finally:
        vm.stop()


def t_locked(vmm_path, guest):
    """A writable image is locked: a second VMM on it is refused; read-only ones share."""
    a = Vmm(vmm_path, guest)
    b = Vmm(vmm_path, guest)
    try:
        img = make_image(a, sectors=64)
        boot(a, [{"path": img}])
        b.cfg["disks"] = [{"path": img}]
        start_fails(b, "in use by another process")
    finally:
        b.stop()
        a.stop()
    a = Vmm(vmm_path, guest)
    b = Vmm(vmm_path, guest)
    try:
        img = make_image(a, sectors=64, fill={0: host_pattern(0)})
        boot(a, [{"path": img, "readonly": True}])
        boot(b, [{"path": img, "readonly": True}])
        for vm in (a, b):
            check(("fnv %s" % fnv(host_pattern(0))) in blk(vm, "read 0"), "shared read-only")
    finally:
        b.stop()
        a.stop()


def t_sandboxed(vmm_path, guest):
    """Under the seccomp sandbox reads, writes and flushes work."""
    vm = Vmm(vmm_path, guest)
    try:
        img = make_image(vm, sectors=64, fill={4: host_pattern(4)})
        boot(vm, [{"path": img}])
        check(("fnv %s" % fnv(host_pattern(4))) in blk(vm, "read 4"), "read under the sandbox")
        w = blk(vm, "write 5 sandboxed")
        f = blk(vm, "flush")
        check(w == "blk write 5: ok", w)
        check(f == "blk flush: ok", f)
        check(read_sector(img, 5)[:9] == b"sandboxed", "host file")
        print("sandboxed write: %s; flush: %s" % (w, f))
        check(vm.ctl.ok("query-status")["status"] == "running", "VMM state")
    finally:
        vm.stop()


def t_speed(vmm_path, guest):
    """Rough per-request cost through the emulated guest (informational, loose bound)."""
    vm = Vmm(vmm_path, guest)
    try:
        img = make_image(vm, sectors=256)
        boot(vm, [{"path": img}])
        t0 = time.monotonic()
        for i in range(20):
            check(blk(vm, "write %d w%d" % (i, i)).endswith(": ok"), "write %d" % i)
        for i in range(20):
            check(blk(vm, "read %d" % i).startswith("blk read %d: ok" % i), "read %d" % i)
        dt = time.monotonic() - t0
        print("40 one-sector commands (serial round trip included): %.3fs, %.1f ms each"
              % (dt, dt * 25))
    finally:
        vm.stop()


TESTS = {
    "rw": t_rw,
    "readonly": t_readonly,
    "reboot": t_reboot,
    "shrunk": t_shrunk,
    "bad_image": t_bad_image,
    "bad_config": t_bad_config,
    "locked": t_locked,
    "sandboxed": t_sandboxed,
    "speed": t_speed,
}

if __name__ == "__main__":
    main(TESTS, sys.argv)
