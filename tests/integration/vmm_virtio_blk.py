#!/usr/bin/env python3
"""Integration tests: virtio-blk (virtio-mmio) in nuvem-vmm, driven by the mini guest's
`blk` commands against a raw image file.

usage: vmm_virtio_blk.py NUVEM_VMM GUEST_ELF TESTNAME (see TESTS at the bottom).

Every test runs under the seccomp sandbox (it allows pwrite64/fdatasync for the disk I/O
threads, fallocate for discard, ftruncate for resize-disk); `sandboxed` checks that explicitly.
`enospc` runs in a private mount namespace on a small tmpfs (root only; skips otherwise)."""

import errno
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmm_harness import TestFailure, Vmm, check, main, require_kvm, skip  # noqa: E402

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


def pattern_bytes(text, n):
    """What the guest's `blk write/fill ... TEXT` puts in n bytes."""
    t = text.encode()
    return (t * (n // len(t) + 1))[:n]


def wait_capacity(vm, sectors, timeout=20.0):
    """Waits for the guest's config-change line announcing `sectors`."""
    # (printed when the interrupt wakes the idle loop, so after the prompt)
    vm.con.wait_for(r"blk0: capacity %d sectors\r?$" % sectors, timeout, since=0)


def check_resize_errors(vm, index, size_now):
    """resize-disk argument errors; nothing changes."""
    def err(args):
        r = vm.ctl.request("resize-disk", args)
        check("error" in r, "resize-disk %r accepted: %r" % (args, r))
        return r["error"]
    e = err({"index": index, "size": size_now - 4096})
    check(e[:3] == ["INVALID_VALUE", "size", "cannot shrink"], "shrink: %r" % e)
    e = err({"index": 7, "size": size_now * 2})
    check(e[:2] == ["INVALID_VALUE", "index"], "bad index: %r" % e)
    e = err({"index": index, "size": size_now + 100})
    check(e[:3] == ["INVALID_VALUE", "size", "not a multiple of 512"], "unaligned: %r" % e)
    e = err({"index": index, "size": "big"})
    check(e[:2] == ["FIELD_TYPE_ERROR", "size"], "type: %r" % e)
    check(vm.ctl.ok("resize-disk", {"index": index, "size": size_now}) == {"size": size_now},
          "same size is a no-op")


def t_resize(vmm_path, guest):
    """resize-disk on a raw image while the guest runs: the file grows, the guest gets a
    config interrupt, sees the new capacity and writes past the old end; errors."""
    vm = Vmm(vmm_path, guest)
    try:
        img = make_image(vm, sectors=2048)
        ro = make_image(vm, "ro.img", sectors=64)
        boot(vm, [{"path": img}, {"path": ro, "readonly": True}])
        check(blk(vm, "write 2048 x") == "blk write 2048: error 1", "write past the end")
        check_resize_errors(vm, 0, 2048 * SECTOR)
        e = vm.ctl.request("resize-disk", {"index": 1, "size": 1 << 20})["error"]
        check(e[:3] == ["INVALID_VALUE", "index", "read-only disk"], "read-only: %r" % e)
        check(os.path.getsize(ro) == 64 * SECTOR, "read-only image grew")
        new = 6 << 20
        check(vm.ctl.ok("resize-disk", {"index": 0, "size": new}) == {"size": new}, "resize")
        check(os.path.getsize(img) == new, "file size %d" % os.path.getsize(img))
        wait_capacity(vm, new // SECTOR)
        check("%d sectors (%d KiB)" % (new // SECTOR, new // 1024) in blk(vm, "info"), "info")
        last = new // SECTOR - 1
        check(blk(vm, "write %d grown" % last) == "blk write %d: ok" % last, "write at new end")
        check(blk(vm, "write 2048 old-end") == "blk write 2048: ok", "write at the old end")
        check(read_sector(img, last) == pattern_bytes("grown", SECTOR), "host sees the write")
        check(read_sector(img, 2048) == pattern_bytes("old-end", SECTOR), "old end on host")
        check(blk(vm, "read %d" % (last + 1)) == "blk read %d: error 1" % (last + 1), "bound")
        if shutil_which("qemu-img"):  # an independent reader of the image's size
            q = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", "-f", "raw",
                                           img], stdout=subprocess.PIPE, check=True).stdout)
            check(q["virtual-size"] == new, "qemu-img virtual size %r" % q)
        d = vm.ctl.ok("stats")["disks"]
        check(d[0]["capacity"] == new and d[0]["format"] == "raw", "stats %r" % d[0])
        check(d[1]["capacity"] == 64 * SECTOR and d[1]["format"] == "raw", "stats %r" % d[1])
        # a reset keeps the new size (the device model outlives the machine)
        vm.con.send("reboot")
        vm.ctl.wait_event("reboot")
        vm.con.wait_for(r"^ready\r?$", 20)
        check("disk vda: %d sectors" % (new // SECTOR) in vm.con.text(), "after reboot")
        check(vm.ctl.ok("query-status")["status"] == "running", "VMM state")
    finally:
        vm.stop()


def shutil_which(name):
    import shutil
    return shutil.which(name)


def t_discard(vmm_path, guest):
    """Discard punches holes in a raw image (st_blocks drops, zeros read back); write-zeroes
    zeroes; ranges are checked."""
    vm = Vmm(vmm_path, guest)
    try:
        img = make_image(vm, sectors=16384)  # 8 MiB, written in full below
        with open(img, "r+b") as f:
            for i in range(8):
                f.write(bytes([0x5a]) * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
        before = os.stat(img).st_blocks
        check(before >= 16384, "image not allocated: %d blocks" % before)
        boot(vm, [{"path": img}])
        info = blk(vm, "info")
        check("discard yes, zeroes yes" in info, info)
        check(blk(vm, "discard 2048 8192") == "blk discard 2048: ok", "discard")
        after = os.stat(img).st_blocks
        check(before - after >= 8192, "st_blocks %d -> %d" % (before, after))
        check(os.path.getsize(img) == 16384 * SECTOR, "size changed")
        zero = "fnv %s" % fnv(bytes(SECTOR))
        check(zero in blk(vm, "read 2048") and zero in blk(vm, "read 10239"), "discarded reads")
        check(("fnv %s" % fnv(bytes([0x5a]) * SECTOR)) in blk(vm, "read 2047"), "before range")
        check(("fnv %s" % fnv(bytes([0x5a]) * SECTOR)) in blk(vm, "read 10240"), "after range")
        check(blk(vm, "zero 12000 3") == "blk zero 12000: ok", "write-zeroes")
        check(read_sector(img, 12000) == bytes(SECTOR) and read_sector(img, 12002) == bytes(SECTOR)
              and read_sector(img, 12003) == bytes([0x5a]) * SECTOR, "zeroed range on host")
        check(blk(vm, "discard 16000 385") == "blk discard 16000: error 1", "past the end")
        check(blk(vm, "zero 16383 1") == "blk zero 16383: ok", "last sector")
        d = vm.ctl.ok("stats")["disks"][0]
        check(d["discards"] == 1 and d["write_zeroes"] == 2 and d["errors"] == 1, "stats %r" % d)
        check(vm.ctl.ok("query-status")["status"] == "running", "VMM state")
    finally:
        vm.stop()


MNTNS_ENV = "NUVEM_TEST_TMPFS"


def in_small_tmpfs(argv, size):
    """Returns the path of a tmpfs of `size` mounted in a private mount namespace, re-running
    this test (argv) inside one first if needed (root only: exits 77 otherwise)."""
    where = os.environ.get(MNTNS_ENV)
    if where:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "nuvem-test",
                        where], check=True)
        return where
    if os.geteuid() != 0:
        skip("needs root for a private mount namespace with a tmpfs")
    if not shutil_which("unshare"):
        skip("unshare(1) is missing")
    d = tempfile.mkdtemp(prefix="nuvem-enospc-")
    try:
        env = dict(os.environ, **{MNTNS_ENV: d})
        p = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable] + argv,
                           env=env, timeout=100)  # under ctest's 120 s
        sys.exit(p.returncode)
    finally:
        os.rmdir(d)  # the mount went away with the namespace


def fill_up(path):
    """Writes path until the file system is full; returns the bytes written."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        chunk = b"\xff" * 65536
        try:
            for _ in range(1 << 16):  # bounded: 4 GiB at most
                f.write(chunk)
                f.flush()
                n += len(chunk)
        except OSError as e:
            check(e.errno == errno.ENOSPC, "filler: %s" % e)
            return n
    raise TestFailure("the tmpfs never filled up")


def t_enospc(vmm_path, guest):
    """A full file system: the guest's write fails with an I/O error, the VMM lives, and the
    same write succeeds once space is freed."""
    require_kvm()
    fs = in_small_tmpfs([os.path.abspath(__file__), vmm_path, guest, "enospc"], "4m")
    vm = Vmm(vmm_path, guest)
    try:
        img = os.path.join(fs, "disk.img")
        with open(img, "wb") as f:
            f.truncate(32 << 20)  # sparse: larger than the file system
        boot(vm, [{"path": img}])
        check(blk(vm, "write 1 early") == "blk write 1: ok", "write with space")
        filler = os.path.join(fs, "filler")
        fill_up(filler)
        check(blk(vm, "write 40000 full") == "blk write 40000: error 1", "write on a full fs")
        check(blk(vm, "fill 50000 16 full") == "blk fill 50000: error 1", "fill on a full fs")
        check(vm.ctl.ok("query-status")["status"] == "running", "VMM state")
        check(vm.ctl.ok("stats")["disks"][0]["errors"] == 2, "errors counted")
        check(("fnv %s" % fnv(pattern_bytes("early", SECTOR))) in blk(vm, "read 1"), "read")
        os.unlink(filler)
        check(blk(vm, "write 40000 freed") == "blk write 40000: ok", "write after freeing")
        check(blk(vm, "flush") == "blk flush: ok", "flush")
        check(read_sector(img, 40000) == pattern_bytes("freed", SECTOR), "host file")
        vm.ctl.ok("quit")
        check(vm.wait_exit() == 0, "exit code")
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
    "resize": t_resize,
    "discard": t_discard,
    "enospc": t_enospc,
}

if __name__ == "__main__":
    main(TESTS, sys.argv)
