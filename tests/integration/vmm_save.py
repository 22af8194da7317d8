#!/usr/bin/env python3
"""Integration tests: nuvem-vmm's `save` command and `--restore FILE`, with the mini guest.

usage: vmm_save.py NUVEM_VMM GUEST_ELF TESTNAME (see TESTS at the bottom).

A guest is saved, its VMM quits, and a new VMM restored from the file must go on exactly
where the guest was (ticker numbers continue, no new banner, uptime keeps growing, disk and
NIC keep working). Broken files and configs must be refused with exit 1. Needs /dev/kvm
(exit 77 otherwise); the disk+NIC test also needs root for a tap in a network namespace."""

import hashlib
import json
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmm_harness import TestFailure, Vmm, check, main, require_kvm  # noqa: E402

MAGIC = b"NUVEMSNP"


class Restored(Vmm):
    """A VMM started with --restore FILE and the config of `src` (its own sockets)."""

    def __init__(self, vmm_path, src, snap, **override):
        super().__init__(vmm_path, src.cfg["kernel"])
        for k, val in src.cfg.items():
            if k not in ("serial", "control"):
                self.cfg[k] = val
        self.cfg.update(override)
        self.snap = snap

    def start(self, connect=True, timeout=30.0):
        with open(self.path("vm.json"), "w") as f:
            json.dump(self.cfg, f)
        self.stderr = open(self.path("vmm.log"), "w")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([self.vmm_path, "--restore", self.snap, self.path("vm.json")],
                                     stdout=self.stderr, stderr=subprocess.STDOUT)
        try:
            return self._attach(connect, timeout)
        except BaseException:
            self.stop()
            raise


def tick_numbers(text):
    return [int(n) for n in re.findall(r"^tick (\d+)", text, re.M)]


def wait_tick(vm, n, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        ticks = tick_numbers(vm.con.text())
        if ticks and ticks[-1] >= n:
            return ticks
        if time.monotonic() > deadline:
            raise TestFailure("no tick >= %d within %.0fs (ticks %r)" % (n, timeout, ticks[-5:]))
        time.sleep(0.02)


def uptime_ms(vm):
    m = vm.con.command("uptime", r"^uptime: (\d+)\.(\d{3}) s", timeout=20)
    return int(m.group(1)) * 1000 + int(m.group(2))


def save(vm, path, timeout=60.0):
    r = vm.ctl.ok("save", {"path": path}, timeout=timeout)
    check(isinstance(r.get("bytes"), int) and r["bytes"] == os.path.getsize(path),
          "save reply %r vs file size %d" % (r, os.path.getsize(path)))
    check(isinstance(r.get("seconds"), float) and r["seconds"] >= 0, "save reply %r" % r)
    check(vm.ctl.ok("query-status")["status"] == "paused", "not paused after save")
    with open(path, "rb") as f:
        check(f.read(8) == MAGIC, "no magic at the start of the file")
    return r


def quit_vm(vm):
    vm.ctl.ok("quit")
    check(vm.wait_exit() == 0, "exit code after quit")


def start_restored(vm):
    vm.start()
    g = vm.ctl.greeting["greeting"]
    check(g.get("restored") == vm.snap, "greeting %r" % g)
    ev = vm.ctl.wait_event("restored")
    check(ev["data"]["path"] == vm.snap, "event %r" % ev)
    want = "paused" if vm.cfg.get("start_paused") else "running"
    check(g["status"] == want, "greeting status %r" % g)
    vm.ctl.wait_event(want)
    return vm


def booted(vmm_path, guest, **cfg):
    require_kvm()
    vm = Vmm(vmm_path, guest, **cfg)
    vm.start()
    vm.wait_banner()
    return vm


def t_ticker(vmm_path, guest):
    """Ticker and uptime go on after save/quit/restore (2 vCPUs); saving twice from the
    restored VM works, and so does restoring the second file."""
    src = booted(vmm_path, guest, vcpus=2, memory_mib=32)
    vms = [src]
    try:
        src.con.command("cpus", r"^cpus: 2 online of 2", timeout=20)
        src.con.command("ticker 100", r"^ticker: every 100 ms")
        wait_tick(src, 5)
        up0, wall0 = uptime_ms(src), time.monotonic()
        snap = src.path("vm.save")
        r = save(src, snap)
        src.ctl.wait_event("paused")
        print("saved %d bytes in %.3fs" % (r["bytes"], r["seconds"]))
        time.sleep(0.3)
        last = tick_numbers(src.con.text())[-1]
        time.sleep(0.5)
        check(tick_numbers(src.con.text())[-1] == last, "ticks went on after save")
        quit_vm(src)

        dst = start_restored(Restored(vmm_path, src, snap))
        vms.append(dst)
        ticks = wait_tick(dst, last + 3)
        text = dst.con.text()
        check("Nuvem mini guest" not in text and "ready" not in text, "guest restarted: %r" % text[:300])
        check(ticks[0] >= last - 1 and ticks[0] <= last + 2,
              "first tick after restore %d, last before %d" % (ticks[0], last))
        check(all(b > a for a, b in zip(ticks, ticks[1:])), "ticks not increasing: %r" % ticks)
        up1, wall1 = uptime_ms(dst), time.monotonic()
        time.sleep(0.3)
        up2 = uptime_ms(dst)
        # The guest's clock (TSC) goes on from the saved value: it never goes back and
        # advances no more than the wall clock did (the time spent saved is not counted).
        check(up0 <= up1 < up2 and up1 - up0 <= (wall1 - wall0) * 1000 + 500,
              "uptime %d -> %d -> %d over %.1fs" % (up0, up1, up2, wall1 - wall0))
        dst.con.command("cpus", r"^cpus: 2 online of 2", timeout=20)
        dst.con.command("echo still-here", r"^still-here\r?$")

        # Save twice from the same VM, resuming in between.
        s2, s3 = dst.path("second.save"), dst.path("third.save")
        save(dst, s2)
        dst.ctl.ok("resume")
        n = tick_numbers(dst.con.text())[-1]
        wait_tick(dst, n + 2)
        save(dst, s3)
        last3 = tick_numbers(dst.con.text())[-1]
        quit_vm(dst)
        again = start_restored(Restored(vmm_path, src, s3))
        vms.append(again)
        ticks = wait_tick(again, last3 + 2)
        check(ticks[0] >= last3 - 1, "ticks after the second restore %r (last %d)" % (ticks[:3], last3))
        again.con.command("echo third", r"^third\r?$")
        quit_vm(again)
    finally:
        for vm in reversed(vms):
            vm.stop()


def t_exists(vmm_path, guest):
    """Saving to an existing path is refused and changes nothing; a bad directory too."""
    vm = booted(vmm_path, guest)
    try:
        vm.con.command("ticker 100", r"^ticker: every 100 ms")
        p = vm.path("taken")
        with open(p, "wb") as f:
            f.write(b"precious")
        r = vm.ctl.request("save", {"path": p})
        check(r.get("error") == ["INVALID_VALUE", "path", "exists"], "reply %r" % r)
        with open(p, "rb") as f:
            check(f.read() == b"precious", "existing file changed")
        r = vm.ctl.request("save", {"path": vm.path("no/such/dir/x")})
        check(r.get("error", [None])[0] == "INVALID_VALUE", "reply %r" % r)
        check(not os.path.exists(vm.path("no")), "directory created")
        r = vm.ctl.request("save", {})
        check(r.get("error") == ["INVALID_VALUE", "path", "missing"], "reply %r" % r)
        r = vm.ctl.request("save", {"path": 5})
        check(r.get("error", [None])[0] == "FIELD_TYPE_ERROR", "reply %r" % r)
        check(vm.ctl.ok("query-status")["status"] == "running", "VM not running any more")
        n = tick_numbers(vm.con.text())[-1] if tick_numbers(vm.con.text()) else 0
        wait_tick(vm, n + 2)
        vm.con.command("echo fine", r"^fine\r?$")
        check("save" in vm.ctl.ok("query-commands"), "save not listed")
        quit_vm(vm)
    finally:
        vm.stop()


def run_restore(vmm_path, src, snap, timeout=30.0, **override):
    """Runs a restore that must fail; returns its log."""
    vm = Restored(vmm_path, src, snap, **override)
    try:
        with open(vm.path("vm.json"), "w") as f:
            json.dump(vm.cfg, f)
        r = subprocess.run([vmm_path, "--restore", snap, vm.path("vm.json")],
                           capture_output=True, text=True, timeout=timeout)
        log = r.stdout + r.stderr
        check(r.returncode == 1, "restore of a bad file/config exited %d:\n%s" % (r.returncode, log))
        check("cannot restore" in log, "no message:\n%s" % log)
        check(not os.path.exists(vm.cfg["control"]), "control socket left behind")
        check(not os.path.exists(vm.path("serial.log")) or os.path.getsize(vm.path("serial.log")) == 0,
              "the guest produced output")
        return log
    finally:
        vm.stop()


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def t_bad_files(vmm_path, guest):
    """Truncated, corrupted, foreign files and mismatched configs: exit 1 with a message,
    no VM runs, the file is left as it was."""
    src = booted(vmm_path, guest, memory_mib=32)
    try:
        src.con.command("echo before-save", r"^before-save\r?$")
        good = src.path("good.save")
        save(src, good)
        quit_vm(src)
        data = open(good, "rb").read()
        size = len(data)

        def variant(name, content):
            p = src.path(name)
            with open(p, "wb") as f:
                f.write(content)
            return p

        cases = [
            ("empty", b"", r"truncated"),
            ("half", data[: size // 2], r"truncated"),
            ("no-end", data[: size - 24], r"truncated"),
            ("header-only", data[:32], r"truncated"),
            ("magic", b"QFI\xfb" + data[4:], r"not a nuvem-vmm save file"),
            ("state-flip", data[:100] + bytes([data[100] ^ 0x10]) + data[101:], r"checksum"),
            ("ram-flip", data[: size - 100] + bytes([data[size - 100] ^ 1]) + data[size - 99:],
             r"checksum"),
            ("garbage", os.urandom(4096), r"not a nuvem-vmm save file"),
        ]
        for name, content, why in cases:
            p = variant(name, content)
            before = digest(p)
            log = run_restore(vmm_path, src, p)
            check(re.search(why, log), "%s: expected /%s/ in:\n%s" % (name, why, log))
            check(digest(p) == before, "%s: file changed" % name)
        # Every byte is under a checksum: flips spread over the whole file are all refused.
        for k in range(24):
            pos = 8 + k * (size - 9) // 23
            p = variant("flip%d" % k, data[:pos] + bytes([data[pos] ^ 0x20]) + data[pos + 1:])
            run_restore(vmm_path, src, p)
        log = run_restore(vmm_path, src, src.path("missing.save"))
        check("No such file" in log, log)
        for override, why in (({"memory_mib": 64}, r"memory size differs"),
                              ({"vcpus": 2}, r"vCPU count differs"),
                              ({"disks": [{"path": variant("d.img", bytes(64 * 512))}]},
                               r"device list differs")):
            log = run_restore(vmm_path, src, good, **override)
            check(re.search(why, log), "%r: expected /%s/ in:\n%s" % (override, why, log))
        check(digest(good) == hashlib.sha256(data).hexdigest(), "good file changed")
        # ... and the good file still restores.
        dst = start_restored(Restored(vmm_path, src, good))
        try:
            dst.con.command("echo after-restore", r"^after-restore\r?$")
            quit_vm(dst)
        finally:
            dst.stop()
    finally:
        src.stop()


def sections(path):
    """The sections of a save file: [(type, index, payload)] (checksums not checked here)."""
    with open(path, "rb") as f:
        data = f.read()
    out, off = [], 32
    while off < len(data):
        typ, idx, length = struct.unpack_from("<IIQ", data, off)
        out.append((typ, idx, data[off + 24:off + 24 + length]))
        off += 24 + length
    return out


def vcpu_records(payload):
    recs, off = {}, 0
    while off < len(payload):
        tag, length = struct.unpack_from("<II", payload, off)
        recs[tag] = payload[off + 8:off + 8 + length]
        off += 8 + length
    return recs


def t_roundtrip(vmm_path, guest):
    """Restored and saved again before any guest instruction runs, a VM gives the same file:
    guest RAM, devices, UART, irqchip, registers (not the clocks: time went on)."""
    require_kvm()
    src = Vmm(vmm_path, guest, vcpus=2)
    vms = [src]
    try:
        img = src.path("disk.img")
        with open(img, "wb") as f:
            f.truncate(1 << 20)
        src.cfg["disks"] = [{"path": img}]
        src.start()
        src.wait_banner()
        src.con.command("blk write 7 roundtrip", r"^blk write 7: ok")
        src.con.command("ticker 100", r"^ticker: every 100 ms")
        wait_tick(src, 3)
        a = src.path("a.save")
        save(src, a)
        quit_vm(src)
        dst = start_restored(Restored(vmm_path, src, a, start_paused=True))
        vms.append(dst)
        b = dst.path("b.save")
        save(dst, b)
        sa, sb = sections(a), sections(b)
        check([(t, i) for t, i, _ in sa] == [(t, i) for t, i, _ in sb],
              "section lists differ: %r vs %r" % ([(t, i) for t, i, _ in sa], [(t, i) for t, i, _ in sb]))
        names = {1: "machine", 3: "irqchip", 6: "platform", 7: "serial", 8: "virtio", 9: "RAM", 0x454E44: "end"}
        for (t, i, pa), (_, _, pb) in zip(sa, sb):
            if t in names:
                check(pa == pb, "%s section %d differs after a restore" % (names[t], i))
            elif t == 2:  # vCPU: registers, segment registers, FPU, MP state, events
                ra, rb = vcpu_records(pa), vcpu_records(pb)
                for tag, what in ((1, "registers"), (2, "sregs"), (4, "xsave"), (5, "xcrs"),
                                  (8, "mp state"), (10, "debug registers")):
                    check(ra.get(tag) == rb.get(tag), "vCPU %d %s differ after a restore" % (i, what))
        dst.ctl.ok("resume")
        last = tick_numbers(src.serial_log())[-1]
        ticks = wait_tick(dst, last + 2)
        check(ticks[0] >= last - 1, "ticks %r after %d" % (ticks[:3], last))
        quit_vm(dst)
    finally:
        for vm in reversed(vms):
            vm.stop()


class Limited(Vmm):
    """A VMM whose files may not grow past `limit` bytes (RLIMIT_FSIZE, SIGXFSZ ignored:
    writes past it fail with EFBIG), to make a save fail half-way."""

    limit = 48 * 1024

    def start(self, connect=True, timeout=15.0):
        with open(self.path("vm.json"), "w") as f:
            json.dump(self.cfg, f)
        self.stderr = open(self.path("vmm.log"), "w")
        self.started_at = time.monotonic()

        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # stays ignored across exec
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.limit))

        self.proc = subprocess.Popen([self.vmm_path, self.path("vm.json")], stdout=self.stderr,
                                     stderr=subprocess.STDOUT, preexec_fn=limit)
        try:
            return self._attach(connect, timeout)
        except BaseException:
            self.stop()
            raise


def t_write_error(vmm_path, guest):
    """A save that fails half-way (file size limit) reports the error, removes the partial
    file and leaves the VM paused; it resumes fine."""
    require_kvm()
    vm = Limited(vmm_path, guest)
    vm.cfg["serial"] = {"socket": vm.path("console.sock")}  # no log file: only the save grows
    vm.start()
    try:
        vm.wait_banner()
        vm.con.command("ticker 100", r"^ticker: every 100 ms")
        wait_tick(vm, 2)
        p = vm.path("big.save")
        r = vm.ctl.request("save", {"path": p}, timeout=60)
        check(r.get("error", [None])[0] == "INTERNAL_ERROR" and "File too large" in r["error"][1],
              "reply %r" % r)
        check(not os.path.exists(p), "partial file left behind")
        check(vm.ctl.ok("query-status")["status"] == "paused", "not paused after a failed save")
        vm.ctl.ok("resume")
        n = tick_numbers(vm.con.text())[-1]
        wait_tick(vm, n + 2)
        vm.con.command("echo alive", r"^alive\r?$")
        quit_vm(vm)
    finally:
        vm.stop()


def t_start_paused(vmm_path, guest):
    """A restore with start_paused stays paused until resume."""
    src = booted(vmm_path, guest)
    try:
        src.con.command("ticker 100", r"^ticker: every 100 ms")
        wait_tick(src, 3)
        snap = src.path("p.save")
        save(src, snap)
        last = tick_numbers(src.con.text())[-1]
        quit_vm(src)
        dst = start_restored(Restored(vmm_path, src, snap, start_paused=True))
        try:
            time.sleep(0.5)
            check(not tick_numbers(dst.con.text()), "guest ran while paused")
            dst.ctl.ok("resume")
            ticks = wait_tick(dst, last + 2)
            check(ticks[0] >= last - 1, "ticks %r after %d" % (ticks[:3], last))
            quit_vm(dst)
        finally:
            dst.stop()
    finally:
        src.stop()


def t_size(vmm_path, guest):
    """An idle 256 MiB guest saves to much less than 256 MiB (zero pages are left out) and
    restores."""
    src = booted(vmm_path, guest, memory_mib=256)
    try:
        snap = src.path("big.save")
        r = save(src, snap)
        print("256 MiB idle guest: %d bytes (%.2f MiB) in %.3fs" % (r["bytes"], r["bytes"] / 1048576.0,
                                                                    r["seconds"]))
        check(r["bytes"] < 16 << 20, "save file of an idle guest is %d bytes" % r["bytes"])
        quit_vm(src)
        t0 = time.monotonic()
        dst = start_restored(Restored(vmm_path, src, snap))
        try:
            dst.con.command("echo big", r"^big\r?$")
            print("restore to an answered command: %.3fs" % (time.monotonic() - t0))
            dst.con.command("mem", r"^mem: \d+ KiB \(25[0-6] MiB\)")
            # A reboot of a restored VM boots the kernel afresh (the VMM kept its image).
            dst.con.send("reboot")
            dst.ctl.wait_event("reboot")
            dst.con.wait_for(r"^ready\r?$", 30)
            dst.con.command("echo rebooted", r"^rebooted\r?$")
            quit_vm(dst)
        finally:
            dst.stop()
    finally:
        src.stop()


def t_disk_net(vmm_path, guest):
    """Disk (raw) and NIC (tap in a namespace) still work after a restore."""
    import vmm_virtio_net as vn  # noqa: E402 (same directory)
    vn.in_netns()
    sock = vn.make_tap()
    require_kvm()
    src = Vmm(vmm_path, guest)
    vms = [src]
    try:
        img = src.path("disk.img")
        with open(img, "wb") as f:
            f.truncate(256 * 512)
        src.cfg["disks"] = [{"path": img}]
        src.cfg["nics"] = [{"tap": vn.TAP, "mac": vn.GUEST_MAC}]
        src.start()
        src.wait_banner()
        blk = lambda vm, cmd: vn.line(vm, "blk " + cmd, "blk")  # noqa: E731
        check(blk(src, "write 3 before") == "blk write 3: ok", "write before")
        r_before = blk(src, "read 3")
        check(vn.line(src, "net send one", "net send") == "net send: ok 3 bytes", "send before")
        check(vn.host_recv(sock)[14:17] == b"one", "frame before")
        snap = src.path("dn.save")
        save(src, snap)
        quit_vm(src)
        dst = start_restored(Restored(vmm_path, src, snap))
        vms.append(dst)
        check(blk(dst, "read 3") == r_before, "sector 3 after restore")
        check(blk(dst, "write 4 after") == "blk write 4: ok", "write after")
        check(blk(dst, "flush") == "blk flush: ok", "flush after")
        with open(img, "rb") as f:
            f.seek(4 * 512)
            check(f.read(5) == b"after", "the host does not see the write")
        check(vn.line(dst, "net send two", "net send") == "net send: ok 3 bytes", "send after")
        check(vn.host_recv(sock)[14:17] == b"two", "frame after")
        guest_mac = bytes.fromhex(vn.GUEST_MAC.replace(":", ""))
        sock.send(vn.frame(guest_mac, b"hello-restored"))
        r = vn.line(dst, "net recv 5000", "net recv")
        check(r.endswith('"hello-restored"'), r)
        st = dst.ctl.ok("stats")
        check(st["disks"][0]["writes"] >= 1 and st["nics"][0]["rx_packets"] >= 1, "stats %r" % st)
        quit_vm(dst)
    finally:
        for vm in reversed(vms):
            vm.stop()
        sock.close()


def t_busy(vmm_path, guest):
    """Saved in the middle of work: serial output (an I/O exit per byte) and disk I/O both go
    on after the restore with nothing lost or repeated."""
    require_kvm()
    src = Vmm(vmm_path, guest)
    vms = [src]
    try:
        img = src.path("disk.img")
        with open(img, "wb") as f:
            f.truncate(16 << 20)
        src.cfg["disks"] = [{"path": img}]
        src.start()
        src.wait_banner()
        n = 2000
        src.con.send("lines %d" % n)
        src.con.wait_for(r"^line 200 of", 30)
        snap = src.path("busy1.save")
        save(src, snap)
        quit_vm(src)
        dst = start_restored(Restored(vmm_path, src, snap))
        vms.append(dst)
        dst.con.wait_for(r"^lines: done", 60)
        with open(src.path("serial.log"), "rb") as f:
            before = f.read().decode()
        with open(dst.path("serial.log"), "rb") as f:
            after = f.read().decode()
        nums = [int(x) for x in re.findall(r"^line (\d+) of %d\r?$" % n, before + after, re.M)]
        check(nums == list(range(1, n + 1)),
              "lines lost or repeated across the save (%d lines, first bad at %r)"
              % (len(nums), next((i for i, x in enumerate(nums) if x != i + 1), None)))
        check(re.search(r"^line \d+ of %d\r?$" % n, before, re.M)
              and re.search(r"^line \d+ of %d\r?$" % n, after, re.M), "not saved mid-way")
        # Disk: a write benchmark saved while requests are in flight completes afterwards.
        dst.con.send("blk bench seq write 65536 4000")
        time.sleep(0.3)
        snap2 = dst.path("busy2.save")
        save(dst, snap2)
        st = dst.ctl.ok("stats")["disks"][0]
        quit_vm(dst)
        again = start_restored(Restored(vmm_path, src, snap2))
        vms.append(again)
        m = again.con.wait_for(r"^blk bench: seq write 65536 x 4000: ([^\r\n]*)", 60)
        check(m.group(1).startswith("ok"), "bench after restore: %r" % m.group(0))
        st2 = again.ctl.ok("stats")["disks"][0]
        check(st2["errors"] == 0 and st["writes"] + st2["writes"] >= 4000,
              "writes before %r after %r" % (st, st2))
        check(st["writes"] < 4000, "the save came after the benchmark (%r)" % st)
        quit_vm(again)
    finally:
        for vm in reversed(vms):
            vm.stop()


TESTS = {
    "write_error": t_write_error,
    "roundtrip": t_roundtrip,
    "busy": t_busy,
    "ticker": t_ticker,
    "exists": t_exists,
    "bad_files": t_bad_files,
    "start_paused": t_start_paused,
    "size": t_size,
    "disk_net": t_disk_net,
}

if __name__ == "__main__":
    main(TESTS, sys.argv)
