#!/usr/bin/env python3
"""virtio-blk throughput of nuvem-vmm from inside the mini guest, raw and VHD backends, next
to fio and dd on the same host file.

usage: disk_bench.py BUILD_DIR [--disk-mib N] [--seq-passes N] [--rand-ios N]
                    [--host-seconds S] [--dir DIR] [--no-host]

The guest's `blk bench seq|rand read|write SIZE COUNT` issues COUNT requests of SIZE bytes one
after the other (queue depth 1, polled completion) and reports the time from its TSC. The host
baselines (fio with psync at queue depth 1, dd with bs=1M; both through the page cache, like
nuvem-vmm's pread/pwrite) run on the same raw image file, after the VM has exited. Standard
library only; needs /dev/kvm; fio and dd are used where installed.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
from vmm_harness import Vmm  # noqa: E402

MiB = 1 << 20


def guest_bench(vm, mode, op, size, count, timeout):
    cmd = "blk bench %s %s %d %d" % (mode, op, size, count)
    m = vm.con.command(cmd, r"blk bench[^\r\n]*\r\n", timeout).group(0)
    r = re.match(r"blk bench: \S+ \S+ \d+ x \d+: ok (\d+) us", m)
    if not r:
        raise RuntimeError("%s: %r" % (cmd, m))
    return int(r.group(1)) / 1e6


def run_guest(build, img, fmt, disk_bytes, rand_ios, seq_passes):
    vm = Vmm(os.path.join(build, "hypervisor", "nuvem-vmm"),
             os.path.join(build, "hypervisor", "nuvem-miniguest.elf"), memory_mib=32)
    rows = {}
    try:
        vm.cfg["disks"] = [{"path": img, "format": fmt}]
        vm.start()
        vm.wait_banner(30)
        seq_n = disk_bytes // MiB * seq_passes  # offsets wrap around at the end
        t0 = time.monotonic()
        for name, mode, op, size, n in (("seq write 1M", "seq", "write", MiB, seq_n),
                                        ("seq read 1M", "seq", "read", MiB, seq_n),
                                        ("rand write 4K", "rand", "write", 4096, rand_ios),
                                        ("rand read 4K", "rand", "read", 4096, rand_ios)):
            secs = guest_bench(vm, mode, op, size, n, 600)
            rows[name] = {"bytes": size * n, "ios": n, "seconds": secs}
        vm.con.command("blk flush", r"blk flush: ok", 60)
        wall = time.monotonic() - t0
        st = vm.ctl.ok("stats")
        vm.ctl.ok("quit")
        vm.wait_exit(30)
    finally:
        vm.stop()
    return rows, {"wall_s": wall, "exits": st.get("exits"), "vcpu_time": st.get("vcpu_time")}


def fio_run(path, rw, bs, seconds, disk_bytes):
    p = subprocess.run(["fio", "--name=b", "--filename=" + path, "--rw=" + rw, "--bs=%d" % bs,
                        "--size=%d" % disk_bytes, "--time_based", "--runtime=%g" % seconds,
                        "--ioengine=psync", "--iodepth=1", "--direct=0", "--invalidate=0",
                        "--randrepeat=1",
                        "--norandommap", "--output-format=json"], stdout=subprocess.PIPE,
                       check=True)
    j = json.loads(p.stdout)["jobs"][0]
    side = j["read"] if "read" in rw else j["write"]
    return {"bytes": side["io_bytes"], "ios": side["total_ios"],
            "seconds": side["runtime"] / 1000.0 if side["runtime"] else 0.0}


def dd_run(path, write, disk_bytes):
    """One pass over the file with bs=1M; dd's own timer (LC_ALL=C output)."""
    n = disk_bytes // MiB
    args = (["dd", "if=/dev/zero", "of=" + path, "conv=notrunc"] if write
            else ["dd", "if=" + path, "of=/dev/null"])
    p = subprocess.run(args + ["bs=1M", "count=%d" % n], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, check=True, env=dict(os.environ, LC_ALL="C"))
    m = re.search(rb"copied, ([0-9.e+-]+) s", p.stderr)
    if not m:
        raise RuntimeError("dd: %r" % p.stderr)
    return {"bytes": n * MiB, "ios": n, "seconds": float(m.group(1))}


def py_rand(path, write, ios, disk_bytes):
    """The floor of a host loop without fio: os.pread/os.pwrite of 4 KiB at random aligned
    offsets (Python's own cost included, about a microsecond a call)."""
    import random
    rng = random.Random(1)
    slots = disk_bytes // 4096
    offs = [rng.randrange(slots) * 4096 for _ in range(ios)]
    buf = b"\xa5" * 4096
    fd = os.open(path, os.O_RDWR)
    try:
        t0 = time.perf_counter()
        for off in offs:
            if write:
                os.pwrite(fd, buf, off)
            else:
                os.pread(fd, 4096, off)
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
    return {"bytes": ios * 4096, "ios": ios, "seconds": dt}


def mibs(r):
    return r["bytes"] / MiB / r["seconds"] if r and r["seconds"] > 0 else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--disk-mib", type=int, default=256,
                    help="image size = bytes of each sequential pass (default 256)")
    ap.add_argument("--rand-ios", type=int, default=10000,
                    help="4 KiB requests per random pass in the guest (default 10000)")
    ap.add_argument("--seq-passes", type=int, default=4,
                    help="passes over the disk per sequential test in the guest (default 4)")
    ap.add_argument("--host-seconds", type=float, default=2.0,
                    help="length of each fio run (default 2)")
    ap.add_argument("--dir", default=None, help="where the images go (default $TMPDIR)")
    ap.add_argument("--no-host", action="store_true", help="skip the fio/dd baselines")
    a = ap.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("SKIP: /dev/kvm is not usable")
        return 77
    disk_bytes = a.disk_mib * MiB
    tmp = tempfile.mkdtemp(prefix="nuvem-disk-bench-", dir=a.dir)
    results = {}
    try:
        raw = os.path.join(tmp, "disk.raw")
        with open(raw, "wb") as f:  # allocated up front: no backend pays for allocation
            for _ in range(a.disk_mib):
                f.write(b"\x5a" * MiB)
            os.fsync(f.fileno())
        results["raw"], info_raw = run_guest(a.build, raw, "raw", disk_bytes, a.rand_ios,
                                             a.seq_passes)
        vhd_tool = os.path.join(a.build, "storage", "vhd", "nuvem-vhd")
        vhd = os.path.join(tmp, "disk.vhd")
        subprocess.run([vhd_tool, "create", vhd, str(disk_bytes)], check=True)
        # A fresh dynamic VHD: the first sequential pass allocates every block (the later
        # passes and the other tests find them allocated), as on a new VDI.
        results["vhd"], info_vhd = run_guest(a.build, vhd, "vhd", disk_bytes, a.rand_ios,
                                             a.seq_passes)
        host = {}
        if not a.no_host and shutil.which("fio"):
            t = a.host_seconds
            host["fio"] = {"seq write 1M": fio_run(raw, "write", MiB, t, disk_bytes),
                           "seq read 1M": fio_run(raw, "read", MiB, t, disk_bytes),
                           "rand write 4K": fio_run(raw, "randwrite", 4096, t, disk_bytes),
                           "rand read 4K": fio_run(raw, "randread", 4096, t, disk_bytes)}
        if not a.no_host and shutil.which("dd"):
            host["dd"] = {"seq write 1M": dd_run(raw, True, disk_bytes),
                          "seq read 1M": dd_run(raw, False, disk_bytes)}
        if not a.no_host:
            n = max(a.rand_ios * 10, 10000)
            host["py"] = {"rand write 4K": py_rand(raw, True, n, disk_bytes),
                          "rand read 4K": py_rand(raw, False, n, disk_bytes)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def base_of(name):  # fio where installed, else dd (sequential) or the Python loop
        for tool in ("fio", "dd", "py"):
            if name in host.get(tool, {}):
                return host[tool][name], tool
        return None, "-"
    print("nuvem-vmm virtio-blk from the mini guest (queue depth 1), disk %d MiB, %s" %
          (a.disk_mib, os.uname().release))
    print("%-6s %-14s %11s %9s %10s %9s %9s %10s" % ("disk", "test", "guest MiB/s", "IOPS",
                                                      "fio MiB/s", "dd MiB/s", "py MiB/s",
                                                      "ratio"))
    for be in ("raw", "vhd"):
        for name, g in results[be].items():
            cols = ["%.1f" % mibs(host[t][name]) if name in host.get(t, {}) else "-"
                    for t in ("fio", "dd", "py")]
            b, tool = base_of(name)
            print("%-6s %-14s %11.1f %9.0f %10s %9s %9s %10s" % (
                be, name, mibs(g), g["ios"] / g["seconds"] if g["seconds"] else 0, *cols,
                "%.3f %s" % (mibs(g) / mibs(b), tool) if b and mibs(b) else "-"))
    for be, info in (("raw", info_raw), ("vhd", info_vhd)):
        print("%s: wall %.1f s for the four passes, %s vCPU exits, vCPU time %.1f s" %
              (be, info["wall_s"], info["exits"], info["vcpu_time"] or 0))
    print("ratio = guest MiB/s / host MiB/s on the same raw file (fio if installed, else dd or"
          " the Python loop)")
    print(json.dumps({"bench": "disk", "disk_mib": a.disk_mib, "rand_ios": a.rand_ios,
                      "guest": results, "host": host, "vmm": {"raw": info_raw, "vhd": info_vhd},
                      "loadavg": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
