#!/usr/bin/env python3
"""Balloon: host memory of a nuvem-vmm mini guest (512 MiB by default) whose RAM is all
touched, before and after ballooning half of it away, and after giving it back and touching
it again. Measured from the host: the VMM process's RSS (/proc/PID/status VmRSS) and the
VMM's own `stats.guest_resident_bytes`; plus how long the guest took to inflate/deflate
(set-balloon-target until the `balloon` event). Standard library only (it reuses the test
harness in tests/integration). Prints a table and one JSON line starting {"bench":"balloon".

usage: balloon.py --vmm BUILD/hypervisor/nuvem-vmm --guest BUILD/hypervisor/nuvem-miniguest.elf
                  [--memory-mib 512] [--runs 3]"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                                "integration"))
from vmm_harness import Vmm  # noqa: E402

MIB = 1 << 20


def vm_rss(vm):
    with open("/proc/%d/status" % vm.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return -1


def sample(vm):
    return {"rss": vm_rss(vm), "guest_resident": vm.ctl.ok("stats")["guest_resident_bytes"]}


def wait_actual(vm, actual, timeout=120.0):
    deadline = time.monotonic() + timeout
    while True:
        ev = vm.ctl.wait_event("balloon", max(0.1, deadline - time.monotonic()))
        if ev["data"]["actual_bytes"] == actual:
            return


def one_run(args):
    mem = args.memory_mib * MIB
    vm = Vmm(args.vmm, args.guest, memory_mib=args.memory_mib, mem_merge=False)
    vm.start()
    try:
        vm.wait_banner(60)
        vm.con.command("mem touch", r"^mem touch: \d+ pages", 300)
        r = {"touched": sample(vm)}
        t0 = time.monotonic()
        vm.ctl.ok("set-balloon-target", {"bytes": mem // 2})
        wait_actual(vm, mem // 2)
        r["inflate_s"] = time.monotonic() - t0
        time.sleep(0.2)
        r["ballooned"] = sample(vm)
        t0 = time.monotonic()
        vm.ctl.ok("set-balloon-target", {"bytes": mem})
        wait_actual(vm, mem)
        r["deflate_s"] = time.monotonic() - t0
        r["deflated"] = sample(vm)
        vm.con.command("mem touch", r"^mem touch: \d+ pages", 300)
        r["retouched"] = sample(vm)
        return r
    finally:
        vm.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--memory-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("/dev/kvm is missing or not accessible", file=sys.stderr)
        return 2
    runs = [one_run(args) for _ in range(args.runs)]

    def med(stage, key):
        return statistics.median(r[stage][key] for r in runs)

    print("balloon: %d MiB mini guest, half ballooned, median of %d runs" %
          (args.memory_mib, args.runs))
    print("%-34s %12s %18s" % ("stage", "VMM RSS MiB", "guest resident MiB"))
    for stage, label in (("touched", "all guest RAM touched"),
                         ("ballooned", "after inflating %d MiB" % (args.memory_mib // 2)),
                         ("deflated", "after deflating (not touched)"),
                         ("retouched", "after touching again")):
        print("%-34s %12.1f %18.1f" % (label, med(stage, "rss") / MIB,
                                       med(stage, "guest_resident") / MIB))
    freed = med("touched", "rss") - med("ballooned", "rss")
    print("host memory freed by the balloon: %.1f MiB of %d MiB ballooned (%.0f%%)" %
          (freed / MIB, args.memory_mib // 2, 100.0 * freed / (args.memory_mib // 2 * MIB)))
    inflate = statistics.median(r["inflate_s"] for r in runs)
    deflate = statistics.median(r["deflate_s"] for r in runs)
    print("inflate %.3f s, deflate %.3f s (command to balloon event)" % (inflate, deflate))
    print(json.dumps({"bench": "balloon", "memory_mib": args.memory_mib, "runs": runs,
                      "freed_bytes": freed, "inflate_s": inflate, "deflate_s": deflate}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
