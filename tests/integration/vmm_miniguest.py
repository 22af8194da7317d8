#!/usr/bin/env python3
"""Integration tests: the real nuvem-vmm running the bundled mini guest.

usage: vmm_miniguest.py NUVEM_VMM GUEST_ELF TESTNAME (see TESTS at the bottom)."""

import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmm_harness import Console, Control, TestFailure, Vmm, check, main, require_kvm  # noqa: E402


def booted(vmm_path, guest, **cfg):
    require_kvm()
    v = Vmm(vmm_path, guest, **cfg).start()
    try:
        v.wait_banner()
    except Exception:
        v.stop()
        raise
    return v


def t_boot(vmm_path, guest):
    """Banner on serial, commands answered, status and stats sane, quit."""
    v = booted(vmm_path, guest, memory_mib=48, cmdline="nuvem.test=1")
    try:
        boot_s = time.monotonic() - v.started_at
        print("process start -> banner: %.3fs" % boot_s)
        text = v.con.text()
        check("Nuvem mini guest" in text, "no banner")
        check('cmdline "nuvem.test=1"' in text, "cmdline not passed: %r" % text)
        v.con.command("echo hello-from-test 42", r"^hello-from-test 42\r?$")
        m = v.con.command("mem", r"^mem: (\d+) KiB \((\d+) MiB\)")
        kib = int(m.group(1))
        check(47 * 1024 <= kib <= 48 * 1024, "mem reports %d KiB for 48 MiB" % kib)
        v.con.command("cpus", r"^cpus: 1 online of 1")
        v.con.command("uptime", r"^uptime: \d+\.\d{3} s, commands: \d+")
        v.con.command("help", r"^commands: help.*\r?\n\s+poweroff")
        v.con.command("no-such-command", r"^unknown command")
        st = v.ctl.ok("query-status")
        check(st["status"] == "running" and st["running"] is True, "status %r" % st)
        check(st["vcpus"] == 1 and st["memory_mib"] == 48, "status %r" % st)
        stats = v.ctl.ok("stats")
        check(stats["rss_bytes"] > 0 and stats["exits"] > 0, "stats %r" % stats)
        check(0 < stats["guest_resident_bytes"] < 4 << 20, "stats %r" % stats)
        sanitizer_build = "seccomp filter skipped" in v.log()  # ASan shadow memory inflates RSS
        check(0 < stats["overhead_bytes"] and (sanitizer_build or stats["overhead_bytes"] < 5 << 20),
              "VMM overhead over 5 MiB (Firecracker's bound): %r" % stats)
        print("VMM RSS %.2f MiB, guest-resident %.2f MiB, overhead %.2f MiB"
              % (stats["rss_bytes"] / 1048576.0, stats["guest_resident_bytes"] / 1048576.0,
                 stats["overhead_bytes"] / 1048576.0))
        check(stats["serial"]["bytes_out"] > 50 and stats["serial"]["bytes_in"] > 10, "stats %r" % stats)
        check(len(stats["vcpus"]) == 1 and stats["vcpus"][0]["io_exits"] > 0, "stats %r" % stats)
        ksm = stats["ksm"]
        check(ksm["mergeable"] == bool(v.cfg.get("mem_merge", True)), "ksm %r" % ksm)
        # the kernel's per-process KSM counters (Linux 6.1+), read through the sandbox
        if os.path.exists("/proc/self/ksm_stat"):
            check(ksm["merging_pages"] >= 0 and ksm["profit_bytes"] != -1, "ksm %r" % ksm)
        with open("/proc/%d/status" % v.proc.pid) as f:
            status = f.read()
        if "seccomp filter skipped" not in v.log():
            check("\nSeccomp:\t2" in status and "\nNoNewPrivs:\t1" in status, "not sandboxed")
            check(re.search(r"\nCapEff:\t0+\n", status), "capabilities kept")
        check("quit" in v.ctl.ok("query-commands"), "query-commands")
        check(v.ctl.ok("quit") == {}, "quit")
        ev = v.ctl.wait_event("shutdown")
        check(ev["data"]["reason"] == "quit", "event %r" % ev)
        check(v.wait_exit() == 0, "exit code")
        check(not os.path.exists(v.cfg["control"]), "control socket left behind")
        check("hello-from-test 42" in v.serial_log(), "serial log misses output")
    finally:
        v.stop()


def t_poweroff(vmm_path, guest):
    """Guest `poweroff` -> shutdown event and exit status 0."""
    v = booted(vmm_path, guest)
    try:
        v.con.send("poweroff")
        ev = v.ctl.wait_event("shutdown")
        check(ev["data"]["reason"] == "guest-poweroff", "event %r" % ev)
        check(v.wait_exit() == 0, "exit code %r" % v.proc.returncode)
    finally:
        v.stop()


def t_powerdown(vmm_path, guest):
    """Control `powerdown` asks the guest, which powers off cleanly."""
    v = booted(vmm_path, guest)
    try:
        check(v.ctl.ok("powerdown") == {}, "powerdown")
        ev = v.ctl.wait_event("shutdown")
        check(ev["data"]["reason"] == "guest-poweroff", "event %r" % ev)
        check(v.wait_exit() == 0, "exit code")
        check("power-down requested" in v.serial_log(), "guest did not see the request")
    finally:
        v.stop()


def t_reboot(vmm_path, guest):
    """Guest `reboot` -> reboot event, then the VM boots again in the same process."""
    v = booted(vmm_path, guest)
    try:
        v.con.send("reboot")
        ev = v.ctl.wait_event("reboot")
        check(ev["data"]["reason"] == "guest-reset", "event %r" % ev)
        v.ctl.wait_event("running")
        v.wait_banner()
        check(v.ctl.ok("query-status")["boots"] == 2, "boots")
        v.con.command("echo after-reboot", r"^after-reboot\r?$")
        # i8042 reset (Linux's default reboot path) is a reboot too; on_reboot=exit ends the VMM.
    finally:
        v.stop()
    v = booted(vmm_path, guest, on_reboot="exit", acpi=False, sandbox=False)
    try:
        v.con.send("reboot")
        v.ctl.wait_event("reboot")
        check(v.wait_exit() == 2, "exit code %r" % v.proc.returncode)
    finally:
        v.stop()


def t_crash(vmm_path, guest):
    """Induced triple fault -> crash event (exit 3); guest panic with on_crash=pause keeps the
    process with status crashed until quit."""
    v = booted(vmm_path, guest)
    try:
        v.con.send("crash")
        ev = v.ctl.wait_event("crash")
        check(ev["data"]["reason"] == "triple-fault", "event %r" % ev)
        check(v.wait_exit() == 3, "exit code %r" % v.proc.returncode)
    finally:
        v.stop()
    v = booted(vmm_path, guest, on_crash="pause")
    try:
        v.con.send("panic")
        ev = v.ctl.wait_event("crash")
        check(ev["data"]["reason"] == "guest-panic", "event %r" % ev)
        check(v.ctl.ok("query-status")["status"] == "crashed", "status")
        r = v.ctl.request("pause")
        check(r.get("error", [None])[0] == "VM_BAD_POWER_STATE", "pause when crashed: %r" % r)
        v.ctl.ok("quit")
        check(v.wait_exit() == 0, "exit code")
    finally:
        v.stop()


def tick_count(text):
    ticks = re.findall(r"^tick (\d+)", text, re.M)
    return int(ticks[-1]) if ticks else 0


def wait_ticks(v, n, timeout=10.0):
    """Waits until the guest printed tick >= n (ticks coalesce under load, so numbers can be
    skipped)."""
    deadline = time.monotonic() + timeout
    while tick_count(v.con.text()) < n:
        if time.monotonic() > deadline:
            raise TestFailure("no tick >= %d within %.0fs; last %d" % (n, timeout, tick_count(v.con.text())))
        time.sleep(0.02)


def t_pause(vmm_path, guest):
    """Pause/resume: the guest's ticker and the vCPU exit counters stop while paused."""
    v = booted(vmm_path, guest)
    try:
        v.con.command("ticker 20", r"^ticker: every 20 ms")
        wait_ticks(v, 5)
        check(v.ctl.ok("pause") == {}, "pause")
        v.ctl.wait_event("paused")
        check(v.ctl.ok("query-status")["status"] == "paused", "status")
        r = v.ctl.request("pause")
        check(r["error"][0] == "VM_BAD_POWER_STATE", "double pause: %r" % r)
        time.sleep(0.2)  # output already in flight settles
        before, exits_before = tick_count(v.con.text()), v.ctl.ok("stats")["exits"]
        time.sleep(1.0)
        after, exits_after = tick_count(v.con.text()), v.ctl.ok("stats")["exits"]
        check(after == before, "ticks advanced while paused: %d -> %d" % (before, after))
        check(exits_after == exits_before, "exits advanced while paused")
        check(v.ctl.ok("resume") == {}, "resume")
        v.ctl.wait_event("resumed")
        wait_ticks(v, after + 5)
        r = v.ctl.request("resume")
        check(r["error"][0] == "VM_BAD_POWER_STATE", "double resume: %r" % r)
        for _ in range(50):  # rapid cycles while the timer fires: no deadlock, no lost vCPU
            v.ctl.ok("pause")
            v.ctl.ok("resume")
        wait_ticks(v, tick_count(v.con.text()) + 3)
        v.con.command("ticker off", r"^ticker: off")
    finally:
        v.stop()


def t_quit_running(vmm_path, guest):
    """quit while the guest is busy printing; SIGTERM also stops cleanly."""
    v = booted(vmm_path, guest)
    try:
        v.con.command("ticker 1", r"^ticker: every 1 ms")
        wait_ticks(v, 3)
        v.ctl.ok("quit")
        check(v.wait_exit() == 0, "exit code")
    finally:
        v.stop()
    v = booted(vmm_path, guest)
    try:
        v.proc.terminate()
        ev = v.ctl.wait_event("shutdown")
        check(ev["data"]["reason"] == "signal", "event %r" % ev)
        check(v.wait_exit() == 0, "exit code")
    finally:
        v.stop()


def t_smp(vmm_path, guest):
    """4 vCPUs, all online in the guest (MP table + INIT/SIPI)."""
    v = booted(vmm_path, guest, vcpus=4, memory_mib=64)
    try:
        v.con.command("cpus", r"^cpus: 4 online of 4", timeout=20)
        stats = v.ctl.ok("stats")
        check(len(stats["vcpus"]) == 4, "stats vcpus")
    finally:
        v.stop()


def t_reset_and_start_paused(vmm_path, guest):
    """start_paused waits for resume; reset reboots in place."""
    require_kvm()
    v = Vmm(vmm_path, guest, start_paused=True).start()
    try:
        check(v.ctl.greeting["greeting"]["status"] == "paused", "greeting %r" % v.ctl.greeting)
        time.sleep(0.5)
        check("ready" not in v.con.text(), "guest ran while paused")
        v.ctl.ok("resume")
        v.wait_banner()
        v.ctl.ok("reset")
        ev = v.ctl.wait_event("reset")
        check(ev["data"]["reason"] == "host", "event %r" % ev)
        v.ctl.wait_event("running")
        v.wait_banner()
        check(v.ctl.ok("query-status")["boots"] == 2, "boots")
    finally:
        v.stop()


def t_console_attach(vmm_path, guest):
    """`console` on the control socket turns the connection into a raw serial stream."""
    v = booted(vmm_path, guest)
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(v.cfg["control"])
        buf = b""
        while buf.count(b"\n") < 1:
            buf += s.recv(4096)
        check(b"greeting" in buf, "greeting")
        s.sendall(b'{"id":"c","execute":"console","arguments":{"history":true}}\necho via-control\n')
        buf = b""
        while buf.count(b"\n") < 1:
            buf += s.recv(4096)
        line, buf = buf.split(b"\n", 1)
        check(json.loads(line) == {"id": "c", "return": {}}, "console reply %r" % line)
        deadline = time.monotonic() + 10
        while not re.search(rb"^via-control\r$", buf, re.M) and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        check(b"Nuvem mini guest" in buf, "history missing")
        check(re.search(rb"^via-control\r$", buf, re.M), "echo not answered: %r" % buf)
        s.close()
        v.ctl.ok("query-status")
        # Input beyond the guest's queue from a client that then hangs up, while the guest is
        # paused (nobody drains the queue): the VMM must neither spin nor stall.
        v.ctl.ok("pause")
        s = socket.socket(socket.AF_UNIX)
        s.connect(v.cfg["serial"]["socket"])
        s.settimeout(0.3)
        try:
            while s.recv(65536):  # drain the history: nothing left for the VMM to send
                pass
        except socket.timeout:
            pass
        s.sendall(b"\n" * 10000)
        s.close()
        time.sleep(0.3)

        def cpu_ticks():
            with open("/proc/%d/stat" % v.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        t0 = cpu_ticks()
        time.sleep(1.0)
        used = (cpu_ticks() - t0) / os.sysconf("SC_CLK_TCK")
        check(used < 0.08, "VMM busy while idle: %.2fs CPU in 1s" % used)
        v.ctl.ok("resume")
        v.con.command("echo after-input-flood", r"^after-input-flood\r?$", timeout=30)
    finally:
        v.stop()


def t_protocol(vmm_path, guest):
    """Malformed JSON, unknown commands, bad arguments, oversized lines, abrupt disconnects:
    errors, no crash."""
    v = booted(vmm_path, guest)
    try:
        c = v.ctl

        def read_reply():  # events (the guest agent's guest-data) may come in between
            while True:
                m = c.read_msg()
                if "event" not in m:
                    return m
                c.events.append(m)

        c.send_raw(b"this is not json\n")
        m = read_reply()
        check(m["error"][0] == "PROTOCOL_ERROR", "malformed: %r" % m)
        c.send_raw(b"[1,2,3]\n")
        check(read_reply()["error"][0] == "PROTOCOL_ERROR", "array")
        c.send_raw(b'{"id":5}\n')
        m = read_reply()
        check(m["id"] == 5 and m["error"] == ["PROTOCOL_ERROR", "missing execute"], "%r" % m)
        c.send_raw(b'{"id":6,"execute":7}\n')
        check(read_reply()["error"] == ["FIELD_TYPE_ERROR", "execute"], "execute type")
        c.send_raw(b'{"id":7,"execute":"stats","arguments":[1]}\n')
        check(read_reply()["error"] == ["FIELD_TYPE_ERROR", "arguments"], "arguments type")
        r = c.request("no-such-command")
        check(r["error"] == ["MESSAGE_METHOD_UNKNOWN", "no-such-command"], "%r" % r)
        r = c.request("send-console", {"data": 5})
        check(r["error"] == ["FIELD_TYPE_ERROR", "data"], "%r" % r)
        r = c.request("console", {"history": "yes"})
        check(r["error"] == ["FIELD_TYPE_ERROR", "history"], "%r" % r)
        c.send_raw(b'{"id":"\xff\xfe","execute":"stats"}\n')
        check(read_reply()["error"] == ["PROTOCOL_ERROR", "invalid UTF-8"], "utf8")
        c.send_raw(b"\n\r\n   \n")  # blank lines are ignored
        # Oversized line: one error, the rest of the line skipped, the connection still usable.
        c.send_raw(b'{"id":1,"execute":"' + b"x" * 200000 + b'"}\n')
        m = read_reply()
        check(m["error"] == ["PROTOCOL_ERROR", "line too long"], "oversized: %r" % m)
        check(c.request("query-status")["return"]["status"] == "running", "after oversized")
        # Deeply nested JSON.
        c.send_raw(b"[" * 5000 + b"]" * 5000 + b"\n")
        check(read_reply()["error"][0] == "PROTOCOL_ERROR", "nested")
        # Ids of any JSON type come back unchanged.
        for rid in ["s", 1.5, None, [1, {"a": 2}], {"k": "v"}]:
            m = c.request("query-status", req_id=rid)
            check(m["id"] == rid, "id %r -> %r" % (rid, m))
        # Abrupt disconnects: mid-line, mid-request, right after connecting, with replies pending.
        for i in range(30):
            s = socket.socket(socket.AF_UNIX)
            s.connect(v.cfg["control"])
            if i % 3 == 0:
                s.sendall(b'{"id":1,"execute":"sta')
            elif i % 3 == 1:
                s.sendall(b'{"id":1,"execute":"stats"}\n' * 50)
            s.close()
        # Many idle connections at once, beyond the client limit.
        socks = []
        for i in range(80):
            s = socket.socket(socket.AF_UNIX)
            for attempt in range(100):
                try:
                    s.connect(v.cfg["control"])
                    break
                except BlockingIOError:  # backlog full: the VMM accepts as it polls
                    time.sleep(0.01)
            socks.append(s)
        for s in socks:
            s.close()
        c2 = Control(v.cfg["control"])
        check(c2.ok("query-status")["status"] == "running", "after disconnects")
        c2.close()
        v.con.command("echo still-alive", r"^still-alive\r?$")
        check(v.proc.poll() is None, "nuvem-vmm died")
    finally:
        v.stop()


def t_bad_config(vmm_path, guest):
    """Bad configs are refused with a clear message and exit status 1 (no KVM needed)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        cases = [
            ("{not json", "malformed JSON"),
            ('{"kernel": "%s"}' % guest, "control missing"),
            ('{"kernel": "%s", "control": "%s/c", "vcpus": 0}' % (guest, d), "vcpus 0"),
            ('{"kernel": "%s", "control": "%s/c", "memory_mib": "32"}' % (guest, d), "memory_mib"),
            ('{"kernel": "%s", "control": "%s/c", "disks": [{"path": "x"}]}' % (guest, d), "disks"),
            ('{"kernel": "%s", "control": "%s/c", "bogus": 1}' % (guest, d), "bogus"),
            ('{"kernel": "%s", "control": "%s/c", "on_crash": "explode"}' % (guest, d), "on_crash"),
        ]
        for text, what in cases:
            p = os.path.join(d, "vm.json")
            with open(p, "w") as f:
                f.write(text)
            r = subprocess.run([vmm_path, p], capture_output=True, text=True, timeout=10)
            check(r.returncode == 1, "%s: exit %d" % (what, r.returncode))
            check("bad config" in r.stderr, "%s: %s" % (what, r.stderr))
        # A kernel that is not an image fails at start-up, cleanly.
        if os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.W_OK):
            bogus = os.path.join(d, "bogus.bin")
            with open(bogus, "wb") as f:
                f.write(b"\0" * 8192)
            with open(p, "w") as f:
                json.dump({"kernel": bogus, "control": d + "/c"}, f)
            r = subprocess.run([vmm_path, p], capture_output=True, text=True, timeout=10)
            check(r.returncode == 1 and "neither an ELF" in r.stderr, r.stderr)
            check(not os.path.exists(d + "/c"), "socket left behind")


def t_flood(vmm_path, guest):
    """A chatty guest: every line reaches the console stream in order; a console reader that
    does not read does not stall the guest; the serial log stops at its limit."""
    require_kvm()
    # Without any serial sink the guest still runs (output only in the in-memory ring).
    v = Vmm(vmm_path, guest, serial=None).start()
    try:
        deadline = time.monotonic() + 15
        while v.ctl.ok("stats")["serial"]["bytes_out"] < 50:
            check(time.monotonic() < deadline, "no serial output counted")
            time.sleep(0.05)
        v.ctl.ok("quit")
        check(v.wait_exit() == 0, "exit code")
    finally:
        v.stop()
    v = Vmm(vmm_path, guest)
    v.cfg["serial"]["log_limit"] = 20000
    v.start()
    try:
        v.wait_banner()
        stalled = socket.socket(socket.AF_UNIX)  # connected, never read
        stalled.connect(v.cfg["serial"]["socket"])
        second = Console(v.cfg["serial"]["socket"])  # another live reader
        n = 5000
        t0 = time.monotonic()
        v.con.command("lines %d" % n, r"^lines: done", timeout=60)
        dt = time.monotonic() - t0
        text = v.con.text()
        got = [int(x) for x in re.findall(r"^line (\d+) of %d\r$" % n, text, re.M)]
        check(got == list(range(1, n + 1)), "console lost or reordered lines (%d seen)" % len(got))
        second.wait_for(r"^lines: done", 10, since=0)
        got2 = [int(x) for x in re.findall(r"^line (\d+) of %d\r$" % n, second.text(), re.M)]
        check(got2 == got, "second console reader saw %d lines" % len(got2))
        second.close()
        print("%d lines (%d bytes) in %.2fs" % (n, len(text), dt))
        v.con.command("echo after-flood", r"^after-flood\r?$")
        log = v.serial_log()
        check("[nuvem-vmm: serial log limit reached]" in log, "log not limited")
        check(len(log) < 20000 + 100, "log too long: %d" % len(log))
        stats = v.ctl.ok("stats")
        check(stats["serial"]["bytes_out"] > 90000, "stats %r" % stats["serial"])
        stalled.close()
    finally:
        v.stop()


def t_bigmem(vmm_path, guest):
    """RAM beyond the 3 GiB MMIO hole sits above 4 GiB; untouched guest RAM costs no host
    memory (anonymous, MAP_NORESERVE)."""
    v = booted(vmm_path, guest, memory_mib=4096)
    try:
        m = v.con.command("mem", r"^mem: (\d+) KiB")
        kib = int(m.group(1))
        check(4095 * 1024 <= kib <= 4096 * 1024, "mem reports %d KiB for 4096 MiB" % kib)
        rss = v.ctl.ok("stats")["rss_bytes"]
        check(rss < 64 << 20, "RSS %d for an idle 4 GiB guest" % rss)
        print("4 GiB guest: VMM RSS %.1f MiB" % (rss / 1048576.0))
    finally:
        v.stop()


def t_vmmctl(vmm_path, guest):
    """The nuvem-vmmctl client: a command, an error, console input, events until shutdown."""
    import subprocess

    ctl = os.path.join(os.path.dirname(vmm_path), "nuvem-vmmctl")
    if not os.path.exists(ctl):
        from vmm_harness import skip
        skip("nuvem-vmmctl not built")
    v = booted(vmm_path, guest)
    try:
        sock = v.cfg["control"]
        run = lambda *a: subprocess.run([ctl, sock] + list(a), capture_output=True, text=True, timeout=20)
        r = run("query-status")
        check(r.returncode == 0 and json.loads(r.stdout)["status"] == "running", r.stdout + r.stderr)
        r = run("frobnicate")
        check(r.returncode == 1 and "MESSAGE_METHOD_UNKNOWN" in r.stderr, r.stderr)
        r = run("send-console", '{"data": "echo via-vmmctl\\n"}')
        check(r.returncode == 0 and json.loads(r.stdout) == {"queued": 16}, r.stdout + r.stderr)
        v.con.wait_for(r"^via-vmmctl\r?$", 10)
        ev = subprocess.Popen([ctl, sock, "events", "shutdown", "20"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        check(run("powerdown").returncode == 0, "powerdown")
        out, _ = ev.communicate(timeout=30)
        check(ev.returncode == 0 and '"guest-poweroff"' in out, out)
        check(v.wait_exit() == 0, "exit code")
    finally:
        v.stop()


TESTS = {
    "boot": t_boot,
    "poweroff": t_poweroff,
    "powerdown": t_powerdown,
    "reboot": t_reboot,
    "crash": t_crash,
    "pause": t_pause,
    "quit": t_quit_running,
    "smp": t_smp,
    "reset": t_reset_and_start_paused,
    "console": t_console_attach,
    "protocol": t_protocol,
    "bad_config": t_bad_config,
    "vmmctl": t_vmmctl,
    "flood": t_flood,
    "bigmem": t_bigmem,
}

if __name__ == "__main__":
    main(TESTS, sys.argv)
