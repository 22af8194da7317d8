#!/usr/bin/env python3
"""Integration tests: nuvem-vmm's VHD disk backend (storage/vhd), driven by the mini guest's
`blk` commands, with qemu-img as the independent reader of what landed in the files.

usage: vmm_blk_vhd.py NUVEM_VMM GUEST_ELF TESTNAME; the nuvem-vhd tool comes from $NUVEM_VHD.
qemu-img ignores the parents of differencing disks, so chains are checked twice: the leaf alone
(qemu-img convert), and the leaf coalesced by our library into a copy of its parent."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmm_harness import Vmm, check, main, require_kvm, skip  # noqa: E402
from vmm_virtio_blk import (SECTOR, blk, boot, check_resize_errors, fill_up, fnv,  # noqa: E402
                            in_small_tmpfs, pattern_bytes, start_fails, wait_capacity)

MiB = 1 << 20
BLOCK_SECTORS = 4096  # 2 MiB VHD blocks


def tool():
    t = os.environ.get("NUVEM_VHD")
    if not t or not os.access(t, os.X_OK):
        skip("NUVEM_VHD (the nuvem-vhd tool) is not set")
    return t


def need_qemu():
    if not shutil.which("qemu-img"):
        skip("qemu-img not installed (Debian package qemu-utils)")


def vhd(*args, data=None):
    p = subprocess.run([tool()] + list(args), input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    check(p.returncode == 0, "nuvem-vhd %s: %s%s" % (" ".join(args), p.stdout.decode(),
                                                     p.stderr.decode()))
    return p.stdout.decode()


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def qemu_raw(img, out):
    subprocess.run(["qemu-img", "convert", "-U", "-f", "vpc", "-O", "raw", img, out], check=True)
    with open(out, "rb") as f:
        return f.read()


def qemu_size(img):
    p = subprocess.run(["qemu-img", "info", "-U", "--output=json", "-f", "vpc", img],
                       stdout=subprocess.PIPE, check=True)
    return json.loads(p.stdout)["virtual-size"]


def host_bytes(seed, n):
    return bytes((seed * 31 + i * 7 + (i >> 9)) & 0xFF for i in range(n))


class Model:
    """The bytes a disk must hold: guest commands applied to a byte array."""

    def __init__(self, size, base=None):
        self.b = bytearray(base) if base is not None else bytearray(size)

    def put(self, sector, data):
        self.b[sector * SECTOR:sector * SECTOR + len(data)] = data


# Guest commands, their bytes; across 2 MiB block boundaries, into blocks the parent holds and
# into blocks no file holds yet.
GUEST_OPS = [
    ("write 0 leaf-zero", 0, pattern_bytes("leaf-zero", SECTOR)),
    ("fill 4092 8 cross-A", 4092, pattern_bytes("cross-A", 8 * SECTOR)),
    ("write 8195 mid-parent", 8195, pattern_bytes("mid-parent", SECTOR)),
    ("fill 12280 16 tail-B", 12280, pattern_bytes("tail-B", 16 * SECTOR)),
    ("write 16383 last", 16383, pattern_bytes("last", SECTOR)),
    ("zero 101 2", 101, bytes(2 * SECTOR)),
]
# What the host puts in the base before the guest runs: (sector, bytes).
HOST_DATA = [(100, host_bytes(1, 8 * SECTOR)), (8192, host_bytes(2, 8 * SECTOR)),
             (9000, host_bytes(3, SECTOR))]


def make_base(vm, name="base.vhd", size=8 * MiB):
    path = vm.path(name)
    vhd("create", path, str(size))
    model = Model(size)
    for sector, data in HOST_DATA:
        if (sector + 1) * SECTOR <= size:
            vhd("write", path, str(sector * SECTOR), data=data)
            model.put(sector, data)
    return path, model


def run_guest_ops(vm, models):
    for cmd, sector, data in GUEST_OPS:
        word = cmd.split()[0]
        r = blk(vm, cmd)
        check(r == "blk %s %d: ok" % (word, sector), "%s: %r" % (cmd, r))
        for m in models:
            m.put(sector, data)


def check_reads(vm, model, sectors):
    for s in sectors:
        want = bytes(model.b[s * SECTOR:(s + 1) * SECTOR])
        r = blk(vm, "read %d" % s)
        check(r.startswith("blk read %d: ok fnv %s" % (s, fnv(want))), "read %d: %r" % (s, r))


def t_dynamic(vmm_path, guest):
    """A dynamic VHD: guest writes through the backend, qemu-img reads the same bytes."""
    need_qemu()
    vm = Vmm(vmm_path, guest)
    try:
        img, model = make_base(vm)
        boot(vm, [{"path": img, "format": "vhd"}])
        check("disk vda: 16384 sectors\r\n" in vm.con.text(), "banner")
        info = blk(vm, "info")
        check("16384 sectors (8192 KiB), rw, flush yes" in info and "discard yes, zeroes yes"
              in info, info)
        run_guest_ops(vm, [model])
        check_reads(vm, model, [0, 100, 101, 103, 4095, 4096, 8192, 8195, 9000, 12287, 12288])
        check(blk(vm, "flush") == "blk flush: ok", "flush")
        check(blk(vm, "read 16384") == "blk read 16384: error 1", "read past the end")
        st = vm.ctl.ok("stats")["disks"][0]
        check(st["format"] == "vhd" and st["capacity"] == 8 * MiB, "stats %r" % st)
        vm.ctl.ok("quit")
        check(vm.wait_exit() == 0, "exit code")
        check(qemu_raw(img, vm.path("out.raw")) == bytes(model.b), "qemu-img convert differs")
        vhd("check", img)
    finally:
        vm.stop()


def t_chain(vmm_path, guest):
    """A differencing disk on a dynamic parent: reads through the chain, writes to the leaf
    only; the parent is unchanged; qemu-img reads the leaf, and the leaf coalesced into a copy
    of the parent, as expected; our check accepts both files."""
    need_qemu()
    vm = Vmm(vmm_path, guest)
    try:
        base, chain = make_base(vm)
        leaf = vm.path("leaf.vhd")
        vhd("snapshot", "-H", leaf, base)
        base_sha = sha(base)
        boot(vm, [{"path": leaf, "format": "auto"}])  # the footer cookie picks VHD
        leaf_only = Model(8 * MiB)
        check_reads(vm, chain, [100, 107, 8192, 9000, 5000])
        run_guest_ops(vm, [chain, leaf_only])
        check_reads(vm, chain, [0, 1, 100, 101, 102, 103, 4092, 4099, 4100, 8192, 8195, 8196,
                                9000, 12295])
        st = vm.ctl.ok("stats")["disks"][0]
        check(st["format"] == "vhd", "stats %r" % st)
        vm.ctl.ok("quit")
        check(vm.wait_exit() == 0, "exit code")
        check(sha(base) == base_sha, "the parent changed")
        vhd("check", leaf)
        check(qemu_raw(leaf, vm.path("leaf.raw")) == bytes(leaf_only.b), "leaf alone differs")
        # Coalesce copies (the leaf's locator is relative: ./base.vhd in the same directory).
        cdir = vm.path("copy")
        os.mkdir(cdir)
        shutil.copy(base, os.path.join(cdir, "base.vhd"))
        shutil.copy(leaf, os.path.join(cdir, "leaf.vhd"))
        vhd("coalesce", os.path.join(cdir, "leaf.vhd"))
        vhd("check", os.path.join(cdir, "base.vhd"))
        got = qemu_raw(os.path.join(cdir, "base.vhd"), vm.path("chain.raw"))
        check(got == bytes(chain.b), "chain (coalesced) differs from the expected bytes")
    finally:
        vm.stop()


def t_bad(vmm_path, guest):
    """Truncated, corrupt, parentless or non-VHD images: a config error, no VM, the files
    unchanged."""
    def truncated_footer(vm):
        p, _ = make_base(vm)
        os.truncate(p, os.path.getsize(p) - SECTOR)
        return p

    def truncated_block(vm):
        p, _ = make_base(vm)
        os.truncate(p, os.path.getsize(p) - MiB)
        return p

    def bad_header(vm):
        p, _ = make_base(vm)
        with open(p, "r+b") as f:
            f.seek(SECTOR + 100)
            b = f.read(1)
            f.seek(SECTOR + 100)
            f.write(bytes([b[0] ^ 0xFF]))
        return p

    def no_parent(vm):
        base, _ = make_base(vm)
        leaf = vm.path("leaf.vhd")
        vhd("snapshot", leaf, base)
        os.rename(base, vm.path("moved.vhd"))
        return leaf

    def raw_file(vm):
        p = vm.path("raw.img")
        with open(p, "wb") as f:
            f.write(host_bytes(9, MiB))
        return p

    cases = [(truncated_footer, "vhd"), (truncated_block, "vhd"), (bad_header, "vhd"),
             (bad_header, "auto"), (no_parent, "vhd"), (raw_file, "vhd")]
    for mk, fmt in cases:
        vm = Vmm(vmm_path, guest)
        try:
            img = mk(vm)
            files = {n: sha(vm.path(n)) for n in os.listdir(vm.dir) if n.endswith((".vhd", ".img"))}
            vm.cfg["disks"] = [{"path": img, "format": fmt}]
            start_fails(vm, "disks[0].path not a usable VHD")
            for n, h in files.items():
                check(sha(vm.path(n)) == h, "%s: %s changed" % (mk.__name__, n))
        finally:
            vm.stop()
    vm = Vmm(vmm_path, guest)
    try:
        vm.cfg["disks"] = [{"path": vm.path("x.vhd"), "format": "qcow2"}]
        start_fails(vm, "disks disks[0].format: qcow2")
    finally:
        vm.stop()


def t_resize(vmm_path, guest):
    """resize-disk on a differencing VHD leaf while the guest runs: past the parent's end the
    disk reads zeros, the guest writes there; qemu-img sees the new size; errors."""
    need_qemu()
    vm = Vmm(vmm_path, guest)
    try:
        base, chain = make_base(vm, size=4 * MiB)
        leaf = vm.path("leaf.vhd")
        vhd("snapshot", leaf, base)
        base_sha = sha(base)
        boot(vm, [{"path": leaf, "format": "vhd"}])
        check_resize_errors(vm, 0, 4 * MiB)
        new = 10 * MiB
        check(vm.ctl.ok("resize-disk", {"index": 0, "size": new}) == {"size": new}, "resize")
        wait_capacity(vm, new // SECTOR)
        check("%d sectors" % (new // SECTOR) in blk(vm, "info"), "info")
        model = Model(new, bytes(chain.b) + bytes(new - 4 * MiB))
        leaf_only = Model(new)
        for cmd, sector, data in [("write 20479 end", 20479, pattern_bytes("end", SECTOR)),
                                  ("fill 8190 4 across-old-end", 8190,
                                   pattern_bytes("across-old-end", 4 * SECTOR))]:
            check(blk(vm, cmd) == "blk %s %d: ok" % (cmd.split()[0], sector), cmd)
            model.put(sector, data)
            leaf_only.put(sector, data)
        check_reads(vm, model, [100, 8189, 8192, 8193, 9000, 15000, 20479])
        st = vm.ctl.ok("stats")["disks"][0]
        check(st["capacity"] == new and st["format"] == "vhd", "stats %r" % st)
        vm.ctl.ok("quit")
        check(vm.wait_exit() == 0, "exit code")
        check(sha(base) == base_sha, "the parent changed")
        vhd("check", leaf)
        check(qemu_size(leaf) == new, "qemu-img virtual size %d" % qemu_size(leaf))
        check(qemu_raw(leaf, vm.path("leaf.raw")) == bytes(leaf_only.b), "leaf differs")
    finally:
        vm.stop()


def t_readonly(vmm_path, guest):
    """A read-only VHD chain: reads through it, writes and resize refused, files unchanged."""
    vm = Vmm(vmm_path, guest)
    try:
        base, chain = make_base(vm)
        leaf = vm.path("leaf.vhd")
        vhd("snapshot", leaf, base)
        os.chmod(leaf, 0o444)
        hashes = (sha(base), sha(leaf))
        boot(vm, [{"path": leaf, "format": "vhd", "readonly": True}])
        check(", ro," in blk(vm, "info"), "info")
        check_reads(vm, chain, [100, 8192])
        check(blk(vm, "write 1 X") == "blk write 1: error 1", "write refused")
        check(blk(vm, "zero 1 1") == "blk zero 1: error 2", "write-zeroes not offered")
        e = vm.ctl.request("resize-disk", {"index": 0, "size": 16 * MiB})["error"]
        check(e[:3] == ["INVALID_VALUE", "index", "read-only disk"], "resize: %r" % e)
        vm.ctl.ok("quit")
        check(vm.wait_exit() == 0, "exit code")
        check((sha(base), sha(leaf)) == hashes, "a read-only file changed")
    finally:
        vm.stop()


def t_enospc(vmm_path, guest):
    """A full file system under a VHD: allocating a block fails with an I/O error in the guest,
    the VMM lives, the file stays valid, and the write succeeds once space is freed."""
    require_kvm()
    t = tool()
    fs = in_small_tmpfs([os.path.abspath(__file__), vmm_path, guest, "enospc"], "6m")
    vm = Vmm(vmm_path, guest)
    try:
        img = os.path.join(fs, "disk.vhd")
        vhd("create", img, "64M")
        boot(vm, [{"path": img, "format": "vhd"}])
        check(blk(vm, "write 1 early") == "blk write 1: ok", "write with space")
        filler = os.path.join(fs, "filler")
        fill_up(filler)
        check(blk(vm, "write 40000 full") == "blk write 40000: error 1", "allocation on a full fs")
        check(blk(vm, "write 50000 full") == "blk write 50000: error 1", "again")
        check(vm.ctl.ok("query-status")["status"] == "running", "VMM state")
        check(vm.ctl.ok("stats")["disks"][0]["errors"] == 2, "errors counted")
        check(("fnv %s" % fnv(pattern_bytes("early", SECTOR))) in blk(vm, "read 1"), "read")
        os.unlink(filler)
        check(blk(vm, "write 40000 freed") == "blk write 40000: ok", "write after freeing")
        check(blk(vm, "flush") == "blk flush: ok", "flush")
        check(("fnv %s" % fnv(pattern_bytes("freed", SECTOR))) in blk(vm, "read 40000"), "read")
        vm.ctl.ok("quit")
        check(vm.wait_exit() == 0, "exit code")
        p = subprocess.run([t, "check", img], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        check(p.returncode == 0, "check after ENOSPC: %s" % p.stdout.decode())
        p = subprocess.run([t, "read", img, str(40000 * SECTOR), str(SECTOR)],
                           stdout=subprocess.PIPE, check=True)
        check(p.stdout == pattern_bytes("freed", SECTOR), "data after reopening")
    finally:
        vm.stop()


def t_save(vmm_path, guest):
    """save after an online resize: the image is flushed at save (a copy taken then is a valid
    VHD with the guest's writes, new blocks included), the restored VM keeps the new capacity
    and the data; restoring onto an image smaller than the saved capacity is refused."""
    import vmm_save as vs  # same directory; save/restore helpers
    vm = Vmm(vmm_path, guest)
    vms = [vm]
    try:
        base, chain = make_base(vm, size=4 * MiB)
        leaf = vm.path("leaf.vhd")
        vhd("snapshot", leaf, base)
        boot(vm, [{"path": leaf, "format": "vhd"}])
        check(vm.ctl.ok("resize-disk", {"index": 0, "size": 8 * MiB}) == {"size": 8 * MiB}, "grow")
        wait_capacity(vm, 16384)
        check(blk(vm, "write 12000 saved") == "blk write 12000: ok", "write in a new block")
        check(blk(vm, "write 5 early") == "blk write 5: ok", "write")
        snap = vm.path("s.save")
        vs.save(vm, snap)
        cdir = vm.path("copy")  # what a crash right after the save would leave
        os.mkdir(cdir)
        shutil.copy(base, os.path.join(cdir, "base.vhd"))
        shutil.copy(leaf, os.path.join(cdir, "leaf.vhd"))
        vhd("check", os.path.join(cdir, "leaf.vhd"))
        p = subprocess.run([tool(), "read", os.path.join(cdir, "leaf.vhd"), str(12000 * SECTOR),
                            str(SECTOR)], stdout=subprocess.PIPE, check=True)
        check(p.stdout == pattern_bytes("saved", SECTOR), "the write is not in the image at save")
        vs.quit_vm(vm)
        dst = vs.start_restored(vs.Restored(vmm_path, vm, snap))
        vms.append(dst)
        check("16384 sectors" in blk(dst, "info"), "capacity after restore")
        check(("fnv %s" % fnv(pattern_bytes("saved", SECTOR))) in blk(dst, "read 12000"), "data")
        check_reads(dst, chain, [100, 107])
        check(blk(dst, "write 16383 after") == "blk write 16383: ok", "write at the end")
        vs.quit_vm(dst)
        small = vm.path("small.img")
        with open(small, "wb") as f:
            f.truncate(4 * MiB)
        log = vs.run_restore(vmm_path, vm, snap, disks=[{"path": small}])
        check("snapshot has 16384 sectors" in log, "no reason in the log:\n%s" % log)
    finally:
        for v in reversed(vms):
            v.stop()


def t_discard(vmm_path, guest):
    """Discard on VHDs: a dynamic disk's block reads zeros and its data is punched out (the
    file's st_blocks drop); in a differencing leaf, blocks an ancestor holds are left alone,
    others deallocated; qemu-img and our check agree afterwards."""
    need_qemu()
    vm = Vmm(vmm_path, guest)
    try:
        img = vm.path("dyn.vhd")
        vhd("create", img, str(8 * MiB))
        boot(vm, [{"path": img, "format": "vhd"}])
        model = Model(8 * MiB)
        r = vm.con.command("blk bench seq write 1048576 2", r"blk bench[^\r\n]*\r\n", 60).group(0)
        check(": ok " in r, r)  # block 0 written in full (whatever guest RAM held)
        check(blk(vm, "write 10 ten") == "blk write 10: ok", "write")
        check(blk(vm, "fill 4096 16 blk-one") == "blk fill 4096: ok", "fill block 1")
        model.put(4096, pattern_bytes("blk-one", 16 * SECTOR))
        check(blk(vm, "flush") == "blk flush: ok", "flush")
        before = os.stat(img).st_blocks
        check(blk(vm, "discard 0 4096") == "blk discard 0: ok", "discard block 0")
        after = os.stat(img).st_blocks
        check(before - after >= 4000, "st_blocks %d -> %d" % (before, after))
        check_reads(vm, model, [0, 10, 4095, 4096, 4111])
        check(blk(vm, "discard 16000 385") == "blk discard 16000: error 1", "past the end")
        vhd("check", img)  # while open: the discard is already consistent on disk
        vm.ctl.ok("quit")
        check(vm.wait_exit() == 0, "exit code")
        check(qemu_raw(img, vm.path("dyn.raw")) == bytes(model.b), "qemu-img reads otherwise")
        vhd("check", img)
    finally:
        vm.stop()
    vm = Vmm(vmm_path, guest)  # a differencing leaf
    try:
        base, chain = make_base(vm)
        leaf = vm.path("leaf.vhd")
        vhd("snapshot", leaf, base)
        boot(vm, [{"path": leaf, "format": "vhd"}])
        for cmd in ("write 100 over-parent", "write 12300 no-parent"):
            check(blk(vm, cmd).endswith(": ok"), cmd)
        chain.put(100, pattern_bytes("over-parent", SECTOR))
        check(blk(vm, "discard 96 8") == "blk discard 96: ok", "discard in a parent's block")
        check(blk(vm, "discard 12288 4096") == "blk discard 12288: ok", "discard a leaf block")
        check_reads(vm, chain, [100, 101, 12300])  # the first kept, the last zeros again
        vm.ctl.ok("quit")
        check(vm.wait_exit() == 0, "exit code")
        vhd("check", leaf)
    finally:
        vm.stop()


TESTS = {
    "discard": t_discard,
    "save": t_save,
    "dynamic": t_dynamic,
    "chain": t_chain,
    "bad": t_bad,
    "resize": t_resize,
    "readonly": t_readonly,
    "enospc": t_enospc,
}

if __name__ == "__main__":
    main(TESTS, sys.argv)
