#!/usr/bin/env python3
"""nuvem-vmm vs QEMU microvm, side by side in one run: start-up time, memory overhead and
density (idle mini guests of 32 MiB, with and without KSM). Standard library only.

Only processes started here are ever signalled (by PID); the temp dir is removed and the KSM
settings (/sys/kernel/mm/ksm/{run,pages_to_scan,sleep_millisecs}) are restored at the end,
also on SIGINT/SIGTERM/SIGHUP and when the watchdog fires. See bench/README.md."""

import argparse
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024
BANNER = b"Nuvem mini guest"
KSM = "/sys/kernel/mm/ksm/"
KSM_KEYS = ("run", "pages_to_scan", "sleep_millisecs")
QEMU_CPU = "host,-arch-capabilities"  # kvm_pvm refuses MSR 0x10a (ARCH_CAPABILITIES)
QEMU_MACHINES = {
    # Debian's QEMU `-M microvm` as it comes (qboot firmware, ACPI tables, RTC, PIT, PIC).
    "qemu": "microvm",
    # The same with every optional device and table off that the mini guest does not need.
    "qemu-min": "microvm,pit=off,pic=off,rtc=off,acpi=off,x-option-roms=off",
}

started = {}  # pid -> Popen of every VMM/QEMU started here
state = {"tmp": None, "ksm_saved": None, "cgroups": []}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- cleanup: only what we started ----


def stop(procs, grace=5.0):
    procs = [p for p in procs if p.poll() is None]
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for p in procs:
        started.pop(p.pid, None)


def ksm_read():
    try:
        return {k: open(KSM + k).read().strip() for k in KSM_KEYS}
    except OSError:
        return None


def ksm_write(key, value):
    with open(KSM + key, "w") as f:
        f.write(str(value))


def ksm_restore():
    saved = state["ksm_saved"]
    if not saved:
        return
    for k in ("pages_to_scan", "sleep_millisecs", "run"):
        try:
            ksm_write(k, saved[k])
        except OSError as e:
            log("warning: cannot restore ksm %s=%s: %s" % (k, saved[k], e))


def cleanup():
    stop(list(started.values()), grace=3.0)
    ksm_restore()
    for d in state["cgroups"]:
        cgroup_remove(d)
    state["cgroups"] = []
    if state["tmp"]:
        shutil.rmtree(state["tmp"], ignore_errors=True)
        state["tmp"] = None


class Abort(Exception):
    pass


def on_signal(signum, frame):
    raise Abort("signal %d" % signum)


# ---- host measurements ----


def mem_available():
    """MemAvailable in bytes: median of 3 reads 50 ms apart (builds move it around)."""
    vals = []
    for i in range(3):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    vals.append(int(line.split()[1]) * 1024)
        if i < 2:
            time.sleep(0.05)
    return statistics.median(vals)


def smaps(pid, guest_bytes):
    """Rss, Pss, and guest RAM: the Rss/Pss of the anonymous mapping of exactly the guest's
    size marked mergeable ("mg" in VmFlags: both VMMs madvise(MADV_MERGEABLE) guest RAM and
    nothing else of that size), in bytes."""
    rss = pss = g_rss = g_pss = 0
    cur = None
    found = 0
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = head.split("-")
                parts = line.split()
                cur = {"size": int(hi, 16) - int(lo, 16), "anon": len(parts) < 6, "rss": 0, "pss": 0}
            elif head == "Rss:":
                cur["rss"] = int(line.split()[1]) * 1024
                rss += cur["rss"]
            elif head == "Pss:":
                cur["pss"] = int(line.split()[1]) * 1024
                pss += cur["pss"]
            elif head == "VmFlags:":
                if cur["anon"] and cur["size"] == guest_bytes and " mg" in line:
                    g_rss += cur["rss"]
                    g_pss += cur["pss"]
                    found += 1
    if found != 1:
        raise RuntimeError("pid %d: %d guest RAM mappings of %d bytes" % (pid, found, guest_bytes))
    pte = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmPTE:"):
                pte = int(line.split()[1]) * 1024
    return {"rss": rss, "pss": pss, "guest_rss": g_rss, "guest_pss": g_pss, "pte": pte}


# A memory cgroup of our own (a child of the one we run in), so that density can read what
# the VMs are charged, kernel memory (page tables, KVM's accounted allocations) included,
# undisturbed by the other processes on the host. v1 (memory.usage_in_bytes) or v2
# (memory.current); None where neither can be made.


def cgroup_create(name):
    cands = []
    try:
        for line in open("/proc/self/cgroup"):
            _, ctrl, path = line.rstrip("\n").split(":", 2)
            if "memory" in ctrl.split(","):
                cands.append(("/sys/fs/cgroup/memory" + path, "memory.usage_in_bytes"))
            elif ctrl == "":
                for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
                    cands.append((root + path, "memory.current"))
    except OSError:
        return None
    for parent, counter in cands:
        d = os.path.join(parent.rstrip("/"), name)
        try:
            os.mkdir(d)
        except OSError:
            continue
        if os.path.exists(os.path.join(d, counter)):
            state["cgroups"].append(d)
            return {"dir": d, "counter": os.path.join(d, counter), "procs": os.path.join(d, "cgroup.procs")}
        cgroup_remove(d)
    return None


def cgroup_remove(d):
    for _ in range(20):
        try:
            os.rmdir(d)
            break
        except FileNotFoundError:
            break
        except OSError:
            time.sleep(0.1)
    if d in state["cgroups"]:
        state["cgroups"].remove(d)


def cgroup_usage(cg):
    """Total charged bytes and its split: anon, file (page cache), kernel."""
    with open(cg["counter"]) as f:
        total = int(f.read())
    stat = {}
    with open(os.path.join(cg["dir"], "memory.stat")) as f:
        for line in f:
            k, v = line.split()
            stat[k] = int(v)
    if cg["counter"].endswith("memory.current"):  # v2
        return total, stat.get("anon", 0), stat.get("file", 0), stat.get("kernel", 0)
    try:
        with open(os.path.join(cg["dir"], "memory.kmem.usage_in_bytes")) as f:
            kmem = int(f.read())
    except OSError:
        kmem = 0
    return total, stat.get("rss", 0), stat.get("cache", 0), kmem


def loadavg():
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


# ---- starting VMs ----


class VM:
    def __init__(self, kind, args, tmp, idx, mem_mib, serial_fifo):
        self.kind = kind
        self.dir = os.path.join(tmp, "%s-%d" % (kind, idx))
        os.mkdir(self.dir)
        self.serial = os.path.join(self.dir, "serial")
        self.fd = -1
        if serial_fifo:
            os.mkfifo(self.serial, 0o600)
            # A reader is present before the VMM opens the FIFO for writing, so its open
            # does not block; every byte the UART emits arrives here as it is written.
            self.fd = os.open(self.serial, os.O_RDONLY | os.O_NONBLOCK)
        if kind == "nuvem":
            cfg = {
                "name": "b%d" % idx,
                "memory_mib": mem_mib,
                "vcpus": 1,
                "kernel": args.guest,
                "control": os.path.join(self.dir, "ctl"),
                "serial": {"log": self.serial},
            }
            with open(os.path.join(self.dir, "vm.json"), "w") as f:
                json.dump(cfg, f)
            self.argv = [args.vmm, "--log-level", "error", os.path.join(self.dir, "vm.json")]
        else:
            self.argv = [
                args.qemu, "-M", QEMU_MACHINES[kind], "-enable-kvm", "-cpu", QEMU_CPU,
                "-m", "%dM" % mem_mib, "-smp", "1", "-nodefaults", "-no-user-config",
                "-display", "none", "-serial", "file:" + self.serial, "-kernel", args.guest,
            ]  # fmt: skip
        self.buf = b""
        self.proc = None
        self.t0 = self.t_banner = self.t_ready = None

    def start(self, cgroup=None):
        argv = self.argv
        if cgroup:  # joins the cgroup before exec, so that everything it allocates is charged
            argv = ["/bin/sh", "-c", 'echo $$ >"$0" && exec "$@"', cgroup["procs"]] + argv
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.errf()
        )
        started[self.proc.pid] = self.proc

    def errf(self):
        return open(os.path.join(self.dir, "stderr"), "wb")

    def feed(self, data, now):
        self.buf += data
        if self.t_banner is None and BANNER in self.buf and b"\n" in self.buf.split(BANNER, 1)[1]:
            self.t_banner = now
        if self.t_ready is None and b"ready" in self.buf:
            self.t_ready = now

    def read_fifo(self, timeout):
        """Reads the FIFO until `ready` (or the process dies / timeout)."""
        deadline = self.t0 + timeout
        while self.t_ready is None:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                break
            r, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if r:
                try:
                    data = os.read(self.fd, 65536)
                except BlockingIOError:
                    continue
                self.feed(data, time.monotonic())

    def poll_file(self):
        try:
            with open(self.serial, "rb") as f:
                data = f.read()
        except OSError:
            return
        if len(data) > len(self.buf):
            self.feed(data[len(self.buf) :], time.monotonic())

    def failure(self):
        try:
            err = open(os.path.join(self.dir, "stderr"), "rb").read()[-400:]
        except OSError:
            err = b""
        return "%s: no banner (exit %s, serial %r, stderr %r)" % (
            self.kind, self.proc.poll() if self.proc else None, self.buf[-200:], err)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ---- benchmarks ----


def bench_startup(args, kinds, tmp):
    """Interleaved: each round starts every kind once (order rotated), so all see the same
    background load. Memory is read from the same runs, `settle` seconds after `ready`."""
    res = {k: {"banner_ms": [], "ready_ms": [], "rss": [], "guest": [], "overhead": []} for k in kinds}
    guest_bytes = 32 * MIB
    for rep in range(args.reps):
        order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]
        for k in order:
            vm = VM(k, args, tmp, rep, 32, serial_fifo=True)
            try:
                vm.start()
                vm.read_fifo(args.boot_timeout)
                if vm.t_banner is None or vm.t_ready is None:
                    raise RuntimeError(vm.failure())
                time.sleep(args.settle)
                m = smaps(vm.proc.pid, guest_bytes)
            finally:
                stop([vm.proc] if vm.proc else [])
                vm.close()
                shutil.rmtree(vm.dir, ignore_errors=True)
            r = res[k]
            r["banner_ms"].append((vm.t_banner - vm.t0) * 1000)
            r["ready_ms"].append((vm.t_ready - vm.t0) * 1000)
            r["rss"].append(m["rss"])
            r["guest"].append(m["guest_rss"])
            r["overhead"].append(m["rss"] - m["guest_rss"])
    out = {}
    for k, r in res.items():
        out[k] = {
            "banner_ms_median": round(statistics.median(r["banner_ms"]), 2),
            "banner_ms_min": round(min(r["banner_ms"]), 2),
            "banner_ms_max": round(max(r["banner_ms"]), 2),
            "ready_ms_median": round(statistics.median(r["ready_ms"]), 2),
            "rss_mib": round(statistics.median(r["rss"]) / MIB, 2),
            "guest_touched_mib": round(statistics.median(r["guest"]) / MIB, 3),
            "overhead_mib": round(statistics.median(r["overhead"]) / MIB, 2),
            "reps": len(r["banner_ms"]),
        }
    return out


def ksm_counters():
    c = {}
    for k in ("full_scans", "pages_shared", "pages_sharing"):
        try:
            c[k] = int(open(KSM + k).read())
        except OSError:
            c[k] = 0
    return c


def ksm_settle(deadline_s):
    """Waits until KSM has done 2 full scans after the VMs came up and pages_sharing stopped
    moving (or deadline_s). Returns seconds waited."""
    t0 = time.monotonic()
    start = ksm_counters()["full_scans"]
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        c = ksm_counters()
        if c["pages_sharing"] != last:
            last, stable_since = c["pages_sharing"], time.monotonic()
        if c["full_scans"] >= start + 2 and time.monotonic() - stable_since >= 1.0:
            break
        time.sleep(0.2)
    return time.monotonic() - t0


def bench_density(args, kind, n, ksm_on, tmp):
    if ksm_on is not None:
        ksm_write("run", 1 if ksm_on else 0)
    time.sleep(0.2)
    avail0 = mem_available()
    vms = [VM(kind, args, tmp, i, 32, serial_fifo=False) for i in range(n)]
    cg = cgroup_create("nuvem-vbench-%d-%s-%d" % (os.getpid(), kind, n))
    t0 = time.monotonic()
    row = {"impl": kind, "n": n, "ksm": bool(ksm_on)}
    try:
        for vm in vms:
            vm.start(cg)
        waiting = list(vms)
        deadline = t0 + args.boot_timeout + n * 0.5
        while waiting and time.monotonic() < deadline:
            time.sleep(0.05)
            for vm in waiting:
                vm.poll_file()
            waiting = [vm for vm in waiting if vm.t_ready is None and vm.proc.poll() is None]
        bad = [vm for vm in vms if vm.t_ready is None]
        if bad:
            raise RuntimeError("%d of %d did not boot; first: %s" % (len(bad), n, bad[0].failure()))
        row["all_up_s"] = round(time.monotonic() - t0, 2)
        time.sleep(0.5)
        if ksm_on:
            row["ksm_settle_s"] = round(ksm_settle(args.ksm_settle), 1)
            kc = ksm_counters()
            row["ksm_pages_shared"], row["ksm_pages_sharing"] = kc["pages_shared"], kc["pages_sharing"]
        avail1 = mem_available()
        cg_use = cgroup_usage(cg) if cg else None
        tot = {"rss": 0, "pss": 0, "guest_rss": 0, "guest_pss": 0, "pte": 0}
        for vm in vms:
            m = smaps(vm.proc.pid, 32 * MIB)
            for key in tot:
                tot[key] += m[key]
    finally:
        stop([vm.proc for vm in vms if vm.proc])
        if cg:
            cgroup_remove(cg["dir"])
    time.sleep(0.3)
    avail2 = mem_available()
    for vm in vms:
        shutil.rmtree(vm.dir, ignore_errors=True)
    up, down = (avail0 - avail1) / n, (avail2 - avail1) / n
    row.update(
        {
            "memavail_up_mib_per_vm": round(up / MIB, 2),
            "memavail_down_mib_per_vm": round(down / MIB, 2),
            "memavail_mib_per_vm": round((up + down) / 2 / MIB, 2),
            "pss_mib_per_vm": round(tot["pss"] / n / MIB, 2),
            "pss_pte_mib_per_vm": round((tot["pss"] + tot["pte"]) / n / MIB, 2),
            "rss_mib_per_vm": round(tot["rss"] / n / MIB, 2),
            "guest_pss_mib_per_vm": round(tot["guest_pss"] / n / MIB, 3),
            "host_mib_total": round((up + down) / 2 * n / MIB, 1),
            "cgroup_mib_per_vm": round(cg_use[0] / n / MIB, 2) if cg_use else None,
            "cgroup_anon_file_kernel_mib_per_vm": [round(x / n / MIB, 3) for x in cg_use[1:]] if cg_use else None,
        }
    )
    return row


# ---- main ----


def fmt_table(startup, density, ratios):
    lines = []
    lines.append("Start-up (process start -> banner line on serial), 32 MiB, 1 vCPU; median of reps")
    lines.append("%-10s %10s %10s %10s %10s %8s %11s %11s" % (
        "impl", "banner_ms", "min", "max", "ready_ms", "rss_MiB", "guest_MiB", "overhd_MiB"))
    for k, r in startup.items():
        lines.append("%-10s %10.2f %10.2f %10.2f %10.2f %8.2f %11.3f %11.2f" % (
            k, r["banner_ms_median"], r["banner_ms_min"], r["banner_ms_max"], r["ready_ms_median"],
            r["rss_mib"], r["guest_touched_mib"], r["overhead_mib"]))
    lines.append("")
    lines.append("Density: idle mini guests of 32 MiB; host MiB per VM")
    lines.append("%-10s %5s %4s %6s %8s %9s %11s %7s %8s %7s %8s %8s" % (
        "impl", "N", "ksm", "up_s", "cgrp/VM", "avail/VM", "(up,down)", "PSS/VM", "PSS+PTE",
        "RSS/VM", "gPSS/VM", "sharing"))
    for r in density:
        if "error" in r:
            lines.append("%-10s %5d %4s  ERROR %s" % (r["impl"], r["n"], "on" if r["ksm"] else "off", r["error"]))
            continue
        cg = r["cgroup_mib_per_vm"]
        lines.append("%-10s %5d %4s %6.2f %8s %9.2f %11s %7.2f %8.2f %7.2f %8.3f %8s" % (
            r["impl"], r["n"], "on" if r["ksm"] else "off", r["all_up_s"],
            "%.2f" % cg if cg is not None else "-", r["memavail_mib_per_vm"],
            "%.1f,%.1f" % (r["memavail_up_mib_per_vm"], r["memavail_down_mib_per_vm"]),
            r["pss_mib_per_vm"], r["pss_pte_mib_per_vm"], r["rss_mib_per_vm"],
            r["guest_pss_mib_per_vm"], r.get("ksm_pages_sharing", "-")))
    lines.append("")
    for k, v in ratios.items():
        lines.append("%-44s %s" % (k, v))
    return "\n".join(lines)  # fmt: skip


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vmm", required=True, help="nuvem-vmm binary")
    ap.add_argument("--guest", required=True, help="nuvem-miniguest.elf")
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"), help="QEMU binary (none: skip QEMU)")
    ap.add_argument("--reps", type=int, default=9, help="start-up repetitions per implementation")
    ap.add_argument("--settle", type=float, default=0.3, help="seconds after `ready` before reading smaps")
    ap.add_argument("--counts", default="10,60,120", help="density: numbers of VMs")
    ap.add_argument("--qemu-counts", default="10,60,120", help="density: numbers of QEMU VMs ('' = none)")
    ap.add_argument("--boot-timeout", type=float, default=20.0)
    ap.add_argument("--ksm-settle", type=float, default=15.0, help="max seconds to wait for KSM")
    ap.add_argument("--max-seconds", type=float, default=270.0, help="watchdog for the whole run")
    ap.add_argument("--no-density", action="store_true")
    args = ap.parse_args()
    del here

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, on_signal)
    signal.alarm(int(args.max_seconds))
    t_start = time.monotonic()
    load0 = loadavg()
    state["tmp"] = tempfile.mkdtemp(prefix="nuvem-vbench-")
    rc = 0
    startup, density, ratios, notes = {}, [], {}, []
    try:
        kinds = ["nuvem"]
        if args.qemu:
            kinds += ["qemu", "qemu-min"]
        else:
            notes.append("qemu-system-x86_64 not found: QEMU columns skipped")
        log("start-up: %d interleaved rounds of %s" % (args.reps, ", ".join(kinds)))
        startup = bench_startup(args, kinds, state["tmp"])
        if args.qemu:
            # Against QEMU's better configuration of this run, for both quantities.
            n = startup["nuvem"]["banner_ms_median"]
            qk = min(("qemu", "qemu-min"), key=lambda k: startup[k]["banner_ms_median"])
            ratios["startup_ms nuvem / %s" % qk] = "%.1f / %.1f" % (n, startup[qk]["banner_ms_median"])
            ratios["startup_ratio (target<=0.5)"] = round(n / startup[qk]["banner_ms_median"], 3)
            o = startup["nuvem"]["overhead_mib"]
            qk = min(("qemu", "qemu-min"), key=lambda k: startup[k]["overhead_mib"])
            ratios["overhead_mib nuvem / %s (target<5)" % qk] = "%.2f / %.2f" % (o, startup[qk]["overhead_mib"])
            ratios["overhead_ratio (target<0.5)"] = round(o / startup[qk]["overhead_mib"], 3)

        if not args.no_density:
            state["ksm_saved"] = ksm_read()
            ksm_modes = [False, True]
            if state["ksm_saved"] is None or not os.access(KSM + "run", os.W_OK):
                state["ksm_saved"] = None
                ksm_modes = [None]
                notes.append("KSM not writable here: density without switching KSM")
            else:
                ksm_write("pages_to_scan", 5000)  # fast merging within the time bound
                ksm_write("sleep_millisecs", 10)
            plan = [("nuvem", int(n)) for n in args.counts.split(",") if n]
            if args.qemu:
                plan += [("qemu", int(n)) for n in args.qemu_counts.split(",") if n]
            for mode in ksm_modes:
                for kind, n in plan:
                    if time.monotonic() - t_start > args.max_seconds - 40:
                        notes.append("skipped %s N=%d ksm=%s: time bound" % (kind, n, mode))
                        continue
                    log("density: %s N=%d ksm=%s" % (kind, n, mode))
                    try:
                        density.append(bench_density(args, kind, n, mode, state["tmp"]))
                    except RuntimeError as e:
                        rc = 1
                        density.append({"impl": kind, "n": n, "ksm": bool(mode), "error": str(e)[:300]})
            ksm_restore()
            by = {(r["impl"], r["n"], r["ksm"]): r for r in density if "error" not in r}
            for ksm_on in (False, True):
                r = by.get(("nuvem", 60, ksm_on))
                if r:
                    cg = r["cgroup_mib_per_vm"]
                    ratios["nuvem 60 VMs, host MiB ksm=%s: cgroup, MemAvail, PSS+PTE (target<1024)" % (
                        "on" if ksm_on else "off")] = "%s, %.1f, %.1f" % (
                        "%.1f" % (cg * 60) if cg is not None else "-", r["host_mib_total"], r["pss_pte_mib_per_vm"] * 60)
                for n in (10, 60, 120):
                    a, b = by.get(("nuvem", n, ksm_on)), by.get(("qemu", n, ksm_on))
                    onoff = "on" if ksm_on else "off"
                    if a and b and a["cgroup_mib_per_vm"] is not None and b["cgroup_mib_per_vm"]:
                        ratios["density_ratio N=%d ksm=%s (cgroup/VM)" % (n, onoff)] = round(
                            a["cgroup_mib_per_vm"] / b["cgroup_mib_per_vm"], 3)
                    if a and b and b["pss_mib_per_vm"] > 0:
                        ratios["density_ratio N=%d ksm=%s (PSS/VM)" % (n, onoff)] = round(
                            a["pss_mib_per_vm"] / b["pss_mib_per_vm"], 3)
    except Abort as e:
        notes.append("aborted: %s" % e)
        rc = 3
    except RuntimeError as e:
        notes.append("failed: %s" % e)
        rc = 1
    finally:
        signal.alarm(0)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        cleanup()

    load1 = loadavg()
    print(fmt_table(startup, density, ratios))
    for n in notes:
        print("note: " + n)
    print("load average: start %s, end %s; %.0f s" % (load0, load1, time.monotonic() - t_start))
    result = {
        "bench": "vmm",
        "startup": startup,
        "density": density,
        "ratios": ratios,
        "qemu_machine": QEMU_MACHINES,
        "qemu_cpu": QEMU_CPU,
        "loadavg_start": load0,
        "loadavg_end": load1,
        "seconds": round(time.monotonic() - t_start, 1),
        "notes": notes,
        "ok": rc == 0,
    }
    print(json.dumps(result, separators=(",", ":")))
    return rc


if __name__ == "__main__":
    sys.exit(main())
