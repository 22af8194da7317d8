#!/usr/bin/env python3
"""Save/restore of an idle mini guest (256 MiB by default): nuvem-vmm's `save` and
`--restore` against QEMU microvm's `migrate "exec:cat > FILE"` and `-incoming "exec:cat FILE"`,
side by side in one run. Standard library only.

Measured per run (median of --runs): save time (nuvem: the `save` command's round trip;
QEMU: `stop` + `migrate` until query-migrate says completed), file size, and restore time
(process spawn until the restored guest answers `echo` on its serial console; QEMU: with
`cont` once the incoming migration is in). QEMU columns are skipped (and said so) when
qemu-system-x86_64 is missing or its migration fails.

Only processes started here are signalled (by PID); the temp dir is removed.

usage: save_restore.py --vmm BUILD/hypervisor/nuvem-vmm --guest BUILD/hypervisor/nuvem-miniguest.elf
                       [--qemu PATH|none] [--memory-mib 256] [--runs 3]"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

QEMU_CPU = "host,-arch-capabilities"  # kvm_pvm refuses MSR 0x10a (ARCH_CAPABILITIES)
started = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def stop_all():
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    started.clear()


def spawn(argv, errpath):
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=open(errpath, "wb"))
    started.append(p)
    return p


def connect(path, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("process exited with %d" % proc.returncode)
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.settimeout(timeout)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise RuntimeError("no socket %s" % path)
            time.sleep(0.002)


class Lines:
    """JSON lines over a stream socket (nuvem control, QMP)."""

    def __init__(self, sock):
        self.s, self.buf = sock, b""

    def read(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise RuntimeError("connection closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, msg, key):
        self.s.sendall((json.dumps(msg) + "\n").encode())
        while True:
            m = self.read()
            if key in m or "error" in m:
                return m


class Serial:
    """A serial console socket: waits for text, sends lines."""

    def __init__(self, sock):
        self.s, self.buf = sock, b""

    def wait(self, text, timeout=30.0):
        deadline = time.monotonic() + timeout
        while text not in self.buf:
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                d = None
            if not d and time.monotonic() > deadline:
                raise RuntimeError("serial: no %r" % text)
            self.buf += d or b""

    def echo(self, word):
        self.s.sendall(b"echo " + word + b"\n")
        self.wait(word + b"\r\n")


def nuvem_run(args, tmp, run):
    d = os.path.join(tmp, "nuvem%d" % run)
    os.mkdir(d)
    cfg = {"name": "bench", "memory_mib": args.memory_mib, "vcpus": 1, "kernel": args.guest,
           "control": os.path.join(d, "ctl"),
           "serial": {"socket": os.path.join(d, "con")}}
    with open(os.path.join(d, "vm.json"), "w") as f:
        json.dump(cfg, f)
    snap = os.path.join(d, "vm.save")
    p = spawn([args.vmm, "--log-level", "error", os.path.join(d, "vm.json")], os.path.join(d, "err"))
    ctl = Lines(connect(cfg["control"], p))
    ctl.read()  # greeting
    con = Serial(connect(cfg["serial"]["socket"], p))
    con.wait(b"ready")
    t0 = time.monotonic()
    r = ctl.call({"id": 1, "execute": "save", "arguments": {"path": snap}}, "return")
    t_save = time.monotonic() - t0
    if "return" not in r:
        raise RuntimeError("save failed: %r" % r)
    ctl.call({"id": 2, "execute": "quit"}, "return")
    p.wait(10)
    t0 = time.monotonic()
    p = spawn([args.vmm, "--log-level", "error", "--restore", snap, os.path.join(d, "vm.json")],
              os.path.join(d, "err2"))
    ctl = Lines(connect(cfg["control"], p))
    g = ctl.read()
    con = Serial(connect(cfg["serial"]["socket"], p))
    con.echo(b"restored-%d" % run)
    t_restore = time.monotonic() - t0
    if g["greeting"]["status"] != "running":
        raise RuntimeError("restored VM not running: %r" % g)
    ctl.call({"id": 3, "execute": "quit"}, "return")
    p.wait(10)
    return {"save_s": t_save, "save_cmd_s": r["return"]["seconds"], "bytes": os.path.getsize(snap),
            "restore_s": t_restore}


def qemu_run(args, tmp, run):
    d = os.path.join(tmp, "qemu%d" % run)
    os.mkdir(d)
    snap = os.path.join(d, "vm.mig")
    qmp_path, con_path = os.path.join(d, "qmp"), os.path.join(d, "con")

    def argv(extra):
        return [args.qemu, "-M", "microvm", "-enable-kvm", "-cpu", QEMU_CPU,
                "-m", "%dM" % args.memory_mib, "-smp", "1", "-nodefaults", "-no-user-config",
                "-display", "none", "-kernel", args.guest,
                "-serial", "unix:%s,server=on,wait=off" % con_path,
                "-qmp", "unix:%s,server=on,wait=off" % qmp_path] + extra  # fmt: skip

    def qmp_open(p):
        q = Lines(connect(qmp_path, p))
        q.read()
        q.call({"execute": "qmp_capabilities"}, "return")
        return q

    p = spawn(argv([]), os.path.join(d, "err"))
    q = qmp_open(p)
    con = Serial(connect(con_path, p))
    con.wait(b"ready")
    t0 = time.monotonic()
    q.call({"execute": "stop"}, "return")
    r = q.call({"execute": "migrate", "arguments": {"uri": "exec:cat > %s" % snap}}, "return")
    if "error" in r:
        raise RuntimeError("migrate: %r" % r)
    deadline = time.monotonic() + 120
    while True:
        st = q.call({"execute": "query-migrate"}, "return")["return"]
        if st.get("status") == "completed":
            break
        if st.get("status") == "failed" or time.monotonic() > deadline:
            raise RuntimeError("migration: %r" % st)
        time.sleep(0.002)
    t_save = time.monotonic() - t0
    q.call({"execute": "quit"}, "return")
    p.wait(10)
    for f in (qmp_path, con_path):
        if os.path.exists(f):
            os.unlink(f)
    t0 = time.monotonic()
    p = spawn(argv(["-incoming", "exec:cat %s" % snap]), os.path.join(d, "err2"))
    q = qmp_open(p)
    con = Serial(connect(con_path, p))
    deadline = time.monotonic() + 120
    while True:
        st = q.call({"execute": "query-status"}, "return")["return"]["status"]
        if st in ("paused", "postmigrate", "running"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("incoming migration: status %s" % st)
        time.sleep(0.002)
    q.call({"execute": "cont"}, "return")
    con.echo(b"restored-%d" % run)
    t_restore = time.monotonic() - t0
    q.call({"execute": "quit"}, "return")
    p.wait(10)
    return {"save_s": t_save, "bytes": os.path.getsize(snap), "restore_s": t_restore}


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "none")
    ap.add_argument("--memory-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        log("SKIP: /dev/kvm is missing or not accessible")
        return 77
    tmp = tempfile.mkdtemp(prefix="nuvem-save-bench-")
    result = {"bench": "vmm-save", "memory_mib": args.memory_mib, "runs": args.runs}
    notes = []
    try:
        rows = [nuvem_run(args, tmp, i) for i in range(args.runs)]
        result["nuvem"] = {k: median(rows, k) for k in rows[0]}
        if args.qemu == "none" or not os.path.exists(args.qemu):
            notes.append("qemu-system-x86_64 not found: QEMU columns skipped")
        else:
            try:
                rows = [qemu_run(args, tmp, i) for i in range(args.runs)]
                result["qemu"] = {k: median(rows, k) for k in rows[0]}
            except (RuntimeError, OSError, subprocess.TimeoutExpired, KeyError) as e:
                notes.append("QEMU run failed: %s" % e)
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print("idle mini guest, %d MiB, median of %d runs" % (args.memory_mib, args.runs))
    print("%-10s %10s %12s %12s" % ("", "save s", "file bytes", "restore s"))
    for k in ("nuvem", "qemu"):
        if k in result:
            r = result[k]
            print("%-10s %10.3f %12d %12.3f" % (k, r["save_s"], r["bytes"], r["restore_s"]))
    for n in notes:
        print("note: " + n)
    result["notes"] = notes
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
