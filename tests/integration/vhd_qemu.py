#!/usr/bin/env python3
"""qemu-img as the independent oracle for storage/vhd: our fixed and dynamic images through
qemu-img info/compare/convert/map, and our reader on images qemu-img and qemu-io made.

usage: vhd_qemu.py /path/to/nuvem-vhd     (exit 77 when qemu-img is missing)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

MiB = 1 << 20
TOOL = None
FAILS = []


def run(*args, check=True, **kw):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if check and p.returncode != 0:
        raise RuntimeError("%s: rc %d: %s%s" % (" ".join(args), p.returncode,
                                                p.stdout.decode(errors="replace"),
                                                p.stderr.decode(errors="replace")))
    return p


def vhd(*args, **kw):
    return run(TOOL, *args, **kw)


def expect(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)
    else:
        print("ok:", what)


def pattern(seed, n):
    return bytes((seed * 37 + i * 13 + (i >> 9)) & 0xFF for i in range(n))


def write_both(img, raw, off, data):
    """Writes data at off into our image (through nuvem-vhd) and into the expected raw file."""
    vhd("write", img, str(off), input=data)
    with open(raw, "r+b") as f:
        f.seek(off)
        f.write(data)


def qinfo(img):
    return json.loads(run("qemu-img", "info", "--output=json", "-f", "vpc", img).stdout)


def qmap(img):
    return json.loads(run("qemu-img", "map", "--output=json", "-f", "vpc", img).stdout)


def our_map(img):
    return json.loads(vhd("map", img).stdout)


def compare(img, raw):
    return run("qemu-img", "compare", "-f", "vpc", "-F", "raw", img, raw, check=False).returncode


def same_file(a, b):
    return run("cmp", a, b, check=False).returncode == 0


def our_check(img):
    p = vhd("check", img, check=False)
    if p.returncode:
        print(p.stdout.decode(), p.stderr.decode())
    return p.returncode == 0


def test_our_dynamic(d):
    img, raw = os.path.join(d, "dyn.vhd"), os.path.join(d, "dyn.raw")
    vhd("create", img, "100M")
    with open(raw, "wb") as f:
        f.truncate(100 * MiB)
    writes = [(0, pattern(1, MiB)), (5 * MiB, pattern(2, 4096)), (99 * MiB, pattern(3, 512)),
              (2 * MiB - 512, pattern(4, 1024)),  # straddles blocks 0 and 1
              (40 * MiB + 512 * 7, pattern(5, 512 * 3)),
              (100 * MiB - 4096, pattern(6, 4096))]
    for off, data in writes:
        write_both(img, raw, off, data)
    info = qinfo(img)
    expect(info["virtual-size"] == 100 * MiB, "qemu-img info: virtual size of our dynamic disk")
    expect(info.get("cluster-size") == 2 * MiB, "qemu-img info: 2 MiB blocks")
    expect(compare(img, raw) == 0, "qemu-img compare: our dynamic disk equals the expected raw")
    out = os.path.join(d, "dyn.qemu.raw")
    run("qemu-img", "convert", "-f", "vpc", "-O", "raw", img, out)
    expect(same_file(out, raw), "qemu-img convert -O raw of our dynamic disk")
    ours = os.path.join(d, "dyn.ours.raw")
    vhd("export-raw", img, ours)
    expect(same_file(ours, raw), "our export-raw equals the expected raw")
    # allocation: qemu's data extents are exactly the blocks we wrote, at our offsets
    written = sorted({off // (2 * MiB) for off, data in writes} |
                     {(off + len(data) - 1) // (2 * MiB) for off, data in writes})
    qdata = {}
    for e in qmap(img):
        if e["data"]:
            for b in range(e["start"] // (2 * MiB), (e["start"] + e["length"]) // (2 * MiB)):
                qdata[b] = e["offset"] + (b * 2 * MiB - e["start"])
    odata = {}
    for e in our_map(img):
        if e["data"]:
            for b in range(e["start"] // (2 * MiB), (e["start"] + e["length"]) // (2 * MiB)):
                odata[b] = e["offset"] + (b * 2 * MiB - e["start"])
    expect(sorted(qdata) == written, "qemu-img map: allocated blocks are the written ones")
    expect(qdata == odata, "qemu-img map offsets equal ours")
    expect(all(o % 4096 == 0 for o in odata.values()), "block data is 4 KiB aligned")
    expect(our_check(img), "our check accepts our dynamic disk")

    # the image after a slow resize (BAT moved to the end of the file)
    vhd("resize", img, "300M")
    with open(raw, "r+b") as f:
        f.truncate(300 * MiB)
    write_both(img, raw, 250 * MiB, pattern(7, 8192))
    expect(qinfo(img)["virtual-size"] == 300 * MiB, "qemu-img info after resize")
    expect(compare(img, raw) == 0, "qemu-img compare after resize and a write past the old end")
    expect(our_check(img), "our check after resize")

    # a corrupt footer is refused by both
    bad = os.path.join(d, "bad.vhd")
    shutil.copy(img, bad)
    with open(bad, "r+b") as f:
        f.seek(64)
        b = f.read(1)
        f.seek(64)
        f.write(bytes([b[0] ^ 0xFF]))
    expect(run("qemu-img", "info", "-f", "vpc", bad, check=False).returncode != 0,
           "qemu-img refuses a bad footer checksum")
    expect(not our_check(bad), "our check refuses a bad footer checksum")


def test_our_fixed(d):
    img, raw = os.path.join(d, "fix.vhd"), os.path.join(d, "fix.raw")
    vhd("create", "-t", "fixed", img, "10M")
    with open(raw, "wb") as f:
        f.truncate(10 * MiB)
    write_both(img, raw, 0, pattern(8, 4096))
    write_both(img, raw, 10 * MiB - 512, pattern(9, 512))
    expect(qinfo(img)["virtual-size"] == 10 * MiB, "qemu-img info: virtual size of our fixed disk")
    expect(compare(img, raw) == 0, "qemu-img compare: our fixed disk")
    vhd("resize", img, "12M")
    with open(raw, "r+b") as f:
        f.truncate(12 * MiB)
    expect(compare(img, raw) == 0 and qinfo(img)["virtual-size"] == 12 * MiB,
           "qemu-img compare: our fixed disk after resize")
    expect(our_check(img), "our check accepts our fixed disk")


def test_sizes(d):
    ok = True
    for i, size in enumerate([MiB, 3 * MiB + 512, 100 * MiB, 1 << 30, 2040 << 30]):
        img = os.path.join(d, "s%d.vhd" % i)
        vhd("create", img, str(size))
        got = qinfo(img)["virtual-size"]
        if got != size:
            print("size", size, "qemu says", got)
            ok = False
        os.unlink(img)
    expect(ok, "qemu-img reports the exact size of our images (creator tap), up to 2040 GiB")


def our_info(img):
    out = vhd("info", img).stdout.decode()
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def test_qemu_images(d):
    have_io = shutil.which("qemu-io") is not None
    for sub, opts in [("dynamic", "subformat=dynamic"),
                      ("dynamic-force", "subformat=dynamic,force_size=on"),
                      ("fixed", "subformat=fixed")]:
        img = os.path.join(d, "q-%s.vhd" % sub)
        run("qemu-img", "create", "-f", "vpc", "-o", opts, img, "100M")
        if have_io:
            for cmd in ["write -P 0xab 0 1M", "write -P 0xcd 5M 4k", "write -P 0x11 99M 512",
                        "write -P 0x22 2095616 4096"]:
                run("qemu-io", "-f", "vpc", "-c", cmd, img)
        qsize = qinfo(img)["virtual-size"]
        info = our_info(img)
        expect(int(info["virtual-size"]) == qsize,
               "our virtual size equals qemu's for qemu's %s image (%d)" % (sub, qsize))
        qraw, ours = img + ".qemu.raw", img + ".ours.raw"
        run("qemu-img", "convert", "-f", "vpc", "-O", "raw", img, qraw)
        vhd("export-raw", img, ours)
        expect(same_file(qraw, ours), "our reader equals qemu-img convert on qemu's %s image" % sub)
        expect(our_check(img), "our check accepts qemu's %s image" % sub)
        # our writer into qemu's image, read back by qemu
        vhd("write", img, str(50 * MiB), input=pattern(10, 8192))
        with open(qraw, "r+b") as f:
            f.seek(50 * MiB)
            f.write(pattern(10, 8192))
        expect(compare(img, qraw) == 0, "qemu reads what we wrote into its %s image" % sub)

    # qemu-img convert from raw
    raw = os.path.join(d, "src.raw")
    with open(raw, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(3 * MiB + 512)
        f.write(pattern(11, 3 * MiB))
        f.seek(63 * MiB)
        f.write(pattern(12, 4096))
    img = os.path.join(d, "conv.vhd")
    run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on",
        raw, img)
    ours = os.path.join(d, "conv.ours.raw")
    vhd("export-raw", img, ours)
    expect(same_file(raw, ours), "our reader on qemu-img convert -O vpc output")


def test_chain(d):
    """qemu ignores parents, so flatten with our coalesce and let qemu read the parent."""
    base, mid, leaf = (os.path.join(d, n) for n in ("base.vhd", "mid.vhd", "leaf.vhd"))
    raw = os.path.join(d, "chain.raw")
    vhd("create", base, "20M")
    with open(raw, "wb") as f:
        f.truncate(20 * MiB)
    write_both(base, raw, 0, pattern(13, 3 * MiB))
    vhd("snapshot", "-H", mid, base)
    write_both(mid, raw, 512, pattern(14, 512))
    write_both(mid, raw, 4 * MiB + 1024, pattern(15, 512 * 5))
    write_both(mid, raw, 19 * MiB, pattern(16, 4096))
    vhd("snapshot", "-H", leaf, mid)
    write_both(leaf, raw, 2 * MiB - 512, pattern(17, 1024))
    expect(our_check(leaf), "our check accepts a 3-deep chain")
    ours = os.path.join(d, "chain.ours.raw")
    vhd("export-raw", leaf, ours)
    expect(same_file(raw, ours), "reading through the chain gives the expected bytes")
    out = vhd("coalesce", leaf).stdout.decode()
    expect("Coalesced 2 sectors" in out, "coalesce reports the sectors copied")
    vhd("coalesce", mid)
    expect(compare(base, raw) == 0, "qemu-img compare: base after coalescing the chain into it")
    expect(our_check(base), "our check accepts the coalesced base")


def main():
    global TOOL
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    TOOL = os.path.abspath(sys.argv[1])
    if shutil.which("qemu-img") is None:
        print("SKIP: qemu-img not installed (Debian package qemu-utils)")
        return 77
    d = tempfile.mkdtemp(prefix="vhd_qemu.")
    try:
        for t in (test_our_dynamic, test_our_fixed, test_sizes, test_qemu_images, test_chain):
            print("==", t.__name__)
            t(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if FAILS:
        print("%d failure(s)" % len(FAILS))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
