#!/usr/bin/env python3
"""Integration tests: nuvem-vmm's live features with the mini guest as the driver:
virtio-balloon (host RSS really drops), vCPU hot-plug up to vcpus_max, and the guest-agent
key-value channel on virtio-console (keys, host writes, control/shutdown).

usage: vmm_live.py NUVEM_VMM GUEST_ELF TESTNAME (see TESTS at the bottom)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmm_harness import TestFailure, Vmm, check, main, require_kvm  # noqa: E402

MIB = 1 << 20


def booted(vmm_path, guest, **cfg):
    require_kvm()
    cfg.setdefault("mem_merge", False)  # KSM would blur the RSS figures
    vm = Vmm(vmm_path, guest, **cfg)
    vm.start()
    try:
        vm.wait_banner(30)
    except BaseException:
        vm.stop()
        raise
    return vm


def error(vm, execute, arguments=None):
    r = vm.ctl.request(execute, arguments)
    check("error" in r, "%s %r: expected an error, got %r" % (execute, arguments, r))
    return r["error"]


def wait_for(what, fn, timeout=30.0):
    """Polls fn() until it returns a true value (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TestFailure("timed out waiting for %s" % what)
        time.sleep(0.05)


def wait_balloon(vm, actual, timeout=60.0):
    """Waits for the balloon event saying actual_bytes == actual."""
    deadline = time.monotonic() + timeout
    while True:
        ev = vm.ctl.wait_event("balloon", max(0.1, deadline - time.monotonic()))
        if ev["data"]["actual_bytes"] == actual:
            return ev


def resident(vm):
    return vm.ctl.ok("stats")["guest_resident_bytes"]


def t_balloon(vmm_path, guest):
    """Balloon half of a 128 MiB guest: RSS falls, actual follows; deflate, touch, back."""
    vm = booted(vmm_path, guest, memory_mib=128)
    try:
        mem = 128 * MIB
        q = vm.ctl.ok("query-balloon")
        check(q == {"target_bytes": mem, "actual_bytes": mem, "memory_bytes": mem,
                    "present": True}, "initial %r" % q)
        total_kib = wait_for("agent keys", lambda: vm.ctl.ok("query-guest")["data"].get(
            "memory/total_kib"))
        vm.con.command("mem touch", r"^mem touch: \d+ pages", 120)
        before = resident(vm)
        check(before > 100 * MIB, "touched guest resident only %d" % before)
        vm.ctl.ok("set-balloon-target", {"bytes": 64 * MIB})
        ev = wait_balloon(vm, 64 * MIB)
        check(ev["data"]["target_bytes"] == 64 * MIB, "event %r" % ev)
        q = vm.ctl.ok("query-balloon")
        check(q["actual_bytes"] == 64 * MIB and q["target_bytes"] == 64 * MIB, "query %r" % q)
        st = vm.ctl.ok("stats")
        check(st["balloon"]["inflated_bytes"] == 64 * MIB, "stats %r" % st["balloon"])
        check(st["balloon"]["actual_bytes"] == 64 * MIB, "stats %r" % st["balloon"])
        after = st["guest_resident_bytes"]
        print("guest resident: %.1f MiB touched, %.1f MiB after ballooning 64 MiB"
              % (before / MIB, after / MIB))
        check(before - after >= 0.4 * 64 * MIB, "resident only fell by %d" % (before - after))
        line = vm.con.command("balloon", r"^balloon: .*", 20).group(0)
        check("16384 pages held, target 16384" in line, line)
        # The guest's own view, through the agent: 64 MiB less than at boot.
        want = str(int(total_kib) - 64 * 1024)
        data = wait_for("memory/total_kib %s after inflating" % want, lambda: (
            lambda d: d if d.get("memory/total_kib") == want else None)(
                vm.ctl.ok("query-guest")["data"]))
        check(int(data["memory/free_kib"]) < 64 * 1024, "free %r" % data)
        # Touching what is left does not bring the balloon's pages back.
        vm.con.command("mem touch", r"^mem touch: \d+ pages", 120)
        check(resident(vm) < before - 0.4 * 64 * MIB, "ballooned pages came back")
        # Deflate: the guest gets its pages back, and they are resident once touched.
        vm.ctl.ok("set-balloon-target", {"bytes": mem})
        wait_balloon(vm, mem)
        st = vm.ctl.ok("stats")["balloon"]
        check(st["inflated_bytes"] == 0 and st["target_bytes"] == mem, "deflated %r" % st)
        vm.con.command("mem touch", r"^mem touch: \d+ pages", 120)
        again = resident(vm)
        check(again - after >= 0.4 * 64 * MIB, "pages did not come back on touch: %d" % again)
    finally:
        vm.stop()


def t_balloon_errors(vmm_path, guest):
    vm = booted(vmm_path, guest, memory_mib=64)
    try:
        e = error(vm, "set-balloon-target", {"bytes": 64 * MIB + 1})
        check(e[:2] == ["INVALID_VALUE", "bytes"] and len(e) == 3, "above memory: %r" % e)
        e = error(vm, "set-balloon-target", {"bytes": 16 * MIB - 1})
        check(e[:2] == ["INVALID_VALUE", "bytes"] and "floor" in e[2], "below floor: %r" % e)
        e = error(vm, "set-balloon-target", {"bytes": -5})
        check(e[:2] == ["INVALID_VALUE", "bytes"], "negative: %r" % e)
        e = error(vm, "set-balloon-target", {})
        check(e == ["INVALID_VALUE", "bytes", "missing"], "missing: %r" % e)
        e = error(vm, "set-balloon-target", {"bytes": "1"})
        check(e == ["FIELD_TYPE_ERROR", "bytes"], "type: %r" % e)
        # The floor itself is accepted.
        vm.ctl.ok("set-balloon-target", {"bytes": 16 * MIB})
        wait_balloon(vm, 16 * MIB)
    finally:
        vm.stop()
    vm = booted(vmm_path, guest, balloon=False, agent=False)
    try:
        e = error(vm, "set-balloon-target", {"bytes": 16 * MIB})
        check(e[:2] == ["INVALID_VALUE", "bytes"], "no balloon: %r" % e)
        q = vm.ctl.ok("query-balloon")
        check(q["present"] is False and q["actual_bytes"] == 32 * MIB, "no balloon: %r" % q)
        check("balloon" not in vm.ctl.ok("stats"), "stats without a balloon")
        g = vm.ctl.ok("query-guest")
        check(g == {"connected": False, "data": {}}, "no agent: %r" % g)
        e = error(vm, "guest-set", {"key": "control/refresh", "value": "1"})
        check(e[:2] == ["INVALID_VALUE", "key"], "no agent: %r" % e)
        vm.con.command("balloon", r"^balloon: no device", 20)
    finally:
        vm.stop()


def cpus_line(vm):
    return vm.con.command("cpus", r"^cpus: [^\r\n]*", 30).group(0)


def wait_vcpus(vm, n, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        ev = vm.ctl.wait_event("vcpus", max(0.1, deadline - time.monotonic()))
        if ev["data"]["online"] == n:
            return


def t_vcpus(vmm_path, guest):
    """set-vcpus 1 -> 3 -> 2 with vcpus_max 4, seen by the guest and in query-status."""
    vm = booted(vmm_path, guest, vcpus=1, vcpus_max=4, memory_mib=64)
    try:
        st = vm.ctl.ok("query-status")
        check(st["vcpus"] == 1 and st["vcpus_max"] == 4 and st["vcpus_online"] == 1,
              "boot status %r" % st)
        check(len(vm.ctl.ok("stats")["vcpus"]) == 4, "4 vCPU threads")
        line = cpus_line(vm)
        check(line == "cpus: 1 online of 1, max 4", line)
        for n in (3, 2):
            vm.ctl.ok("set-vcpus", {"count": n})
            wait_vcpus(vm, n)
            st = vm.ctl.ok("query-status")
            check(st["vcpus_online"] == n and st["vcpus"] == n, "status after %d: %r" % (n, st))
            line = cpus_line(vm)
            check(line == "cpus: %d online of %d, max 4" % (n, n), line)
            wait_for("vcpus/online = %d" % n,
                     lambda: vm.ctl.ok("query-guest")["data"].get("vcpus/online") == str(n))
        # The agent key does the same.
        vm.ctl.ok("guest-set", {"key": "control/vcpus", "value": "4"})
        wait_vcpus(vm, 4)
        check(cpus_line(vm) == "cpus: 4 online of 4, max 4", "control/vcpus 4")
        check(vm.ctl.ok("query-status")["vcpus"] == 4, "control/vcpus sets the target")
        for bad in (0, 5, -1):
            e = error(vm, "set-vcpus", {"count": bad})
            check(e[:2] == ["INVALID_VALUE", "count"], "count %d: %r" % (bad, e))
        e = error(vm, "set-vcpus", {})
        check(e == ["INVALID_VALUE", "count", "missing"], "missing: %r" % e)
        # A reboot keeps the target: the guest comes back with that many CPUs.
        vm.ctl.ok("set-vcpus", {"count": 2})
        wait_vcpus(vm, 2)
        vm.ctl.ok("guest-set", {"key": "control/shutdown", "value": "reboot"})
        vm.ctl.wait_event("reboot", 30)
        vm.con.wait_for(r"^ready\r?$", 30)
        check(cpus_line(vm) == "cpus: 2 online of 2, max 4", "after reboot")
        check(vm.ctl.ok("query-status")["vcpus_online"] == 2, "status after reboot")
    finally:
        vm.stop()


EXPECTED_KEYS = ("os/name", "os/version", "os/uname", "memory/total_kib", "memory/free_kib",
                 "vcpus/online", "agent/up")


def wait_guest(vm, pred, what, timeout=30.0):
    return wait_for(what, lambda: (lambda g: g if pred(g) else None)(vm.ctl.ok("query-guest")),
                    timeout)


def t_agent(vmm_path, guest):
    """Keys after boot, guest-data events, host writes, garbage and a flood stay bounded."""
    vm = booted(vmm_path, guest, vcpus=2, memory_mib=48)
    try:
        g = wait_guest(vm, lambda g: g["connected"] and "agent/up" in g["data"], "agent keys")
        d = g["data"]
        for k in EXPECTED_KEYS:
            check(k in d, "key %s missing: %r" % (k, d))
        check(d["os/name"] == "Nuvem Mini Guest" and d["agent/up"] == "1", "values %r" % d)
        check(d["vcpus/online"] == "2", "vcpus/online %r" % d)
        check(0 < int(d["memory/total_kib"]) <= 48 * 1024, "total_kib %r" % d)
        # control/refresh: the guest publishes again.
        vm.ctl.events.clear()
        vm.ctl.ok("guest-set", {"key": "control/refresh", "value": "1"})
        ev = vm.ctl.wait_event("guest-data", 10)
        check(ev["data"]["data"]["agent/up"] == "1", "refresh %r" % ev)
        # Coalescing: 20 publications in a burst give at most one event per 250 ms (+1).
        vm.ctl.events.clear()
        t0 = time.monotonic()
        for _ in range(20):
            vm.con.command("agent", r"^agent: ok", 20)
        elapsed = time.monotonic() - t0
        time.sleep(0.6)  # the held-back last one
        vm.ctl.ok("query-status")  # collects the events that came
        n = sum(1 for e in vm.ctl.events if e["event"] == "guest-data")
        check(1 <= n <= elapsed / 0.25 + 2, "%d guest-data events in %.2fs" % (n, elapsed))
        # Host-side argument checks.
        for args, want in (({"key": "bad key", "value": "1"}, ["INVALID_VALUE", "key"]),
                           ({"key": "k", "value": "a\nb"}, ["INVALID_VALUE", "value"]),
                           ({"key": "k" * 257, "value": "1"}, ["INVALID_VALUE", "key"]),
                           ({"key": "k", "value": "v" * 1025}, ["INVALID_VALUE", "value"]),
                           ({"value": "1"}, ["INVALID_VALUE", "key", "missing"]),
                           ({"key": "k"}, ["INVALID_VALUE", "value", "missing"]),
                           ({"key": 1, "value": "1"}, ["FIELD_TYPE_ERROR", "key"])):
            e = error(vm, "guest-set", args)
            check(e[:len(want)] == want, "guest-set %r: %r" % (args, e))
        # Garbage from the guest is counted and ignored.
        before = vm.ctl.ok("stats")["agent"]
        vm.con.command("agent send set bad!key 1", r"^agent: ok", 20)
        vm.con.command("agent send nonsense", r"^agent: ok", 20)
        vm.con.command("agent send set fine/key 1", r"^agent: ok", 20)
        after = wait_for("rejected lines", lambda: (lambda a: a if a["rejected"] >= before[
            "rejected"] + 2 else None)(vm.ctl.ok("stats")["agent"]))
        check(after["rejected"] == before["rejected"] + 2, "rejected %r" % after)
        g = vm.ctl.ok("query-guest")
        check(g["data"].get("fine/key") == "1" and "bad!key" not in g["data"], "data %r" % g)
        # A flood: at most 128 keys, the rest counted as dropped; a few events at most.
        vm.ctl.events.clear()
        vm.con.command("agent flood 400", r"^agent: ok", 60)
        a = wait_for("dropped keys", lambda: (lambda a: a if a["dropped"] > 0 else None)(
            vm.ctl.ok("stats")["agent"]))
        g = vm.ctl.ok("query-guest")
        check(len(g["data"]) == 128, "keys after flood: %d" % len(g["data"]))
        check(a["dropped"] >= 400 - 128, "dropped %r" % a)
        vm.ctl.wait_event("guest-data", 10)
        # The store is replaced when the agent restarts (hello): a reboot shows fresh data.
        vm.ctl.ok("guest-set", {"key": "control/shutdown", "value": "reboot"})
        vm.ctl.wait_event("reboot", 30)
        g = wait_guest(vm, lambda g: g["connected"] and "agent/up" in g["data"], "keys again")
        check("flood/0" not in g["data"] and "fine/key" not in g["data"], "stale %r" % g)
    finally:
        vm.stop()


def t_agent_shutdown(vmm_path, guest):
    """control/shutdown poweroff powers the guest off through the platform port."""
    vm = booted(vmm_path, guest)
    try:
        wait_guest(vm, lambda g: g["connected"], "agent")
        vm.ctl.ok("guest-set", {"key": "control/shutdown", "value": "poweroff"})
        ev = vm.ctl.wait_event("shutdown", 30)
        check(ev["data"]["reason"] == "guest-poweroff", "shutdown %r" % ev)
        check(vm.wait_exit(15) == 0, "exit status")
    finally:
        vm.stop()


def t_agent_net(vmm_path, guest):
    """net/0/mac from the virtio-net NIC and net/0/ipv4 from nuvem.ip= (needs a tap)."""
    import vmm_virtio_net as vnet
    vnet.in_netns()
    require_kvm()
    vnet.make_tap()
    vm = booted(vmm_path, guest, nics=[{"tap": vnet.TAP, "mac": vnet.GUEST_MAC}],
                cmdline="test nuvem.ip=192.0.2.7")
    try:
        g = wait_guest(vm, lambda g: "net/0/mac" in g["data"], "net keys")
        check(g["data"]["net/0/mac"] == vnet.GUEST_MAC, "mac %r" % g["data"])
        check(g["data"].get("net/0/ipv4") == "192.0.2.7", "ipv4 %r" % g["data"])
    finally:
        vm.stop()


def t_save_restore(vmm_path, guest):
    """A ballooned, hot-plugged VM with agent data survives save and --restore: the balloon
    stays inflated (its pages are not in the file nor resident), the data and CPUs come back,
    and both still work afterwards."""
    import subprocess
    vm = booted(vmm_path, guest, memory_mib=128, vcpus=1, vcpus_max=3)
    try:
        mem = 128 * MIB
        vm.con.command("mem touch", r"^mem touch: \d+ pages", 120)
        vm.ctl.ok("set-balloon-target", {"bytes": 64 * MIB})
        wait_balloon(vm, 64 * MIB)
        vm.ctl.ok("set-vcpus", {"count": 2})
        wait_vcpus(vm, 2)
        data = wait_guest(vm, lambda g: g["data"].get("vcpus/online") == "2", "vcpus/online 2")
        snap = vm.path("snap.bin")
        saved = vm.ctl.ok("save", {"path": snap}, timeout=60)
        check(saved["bytes"] < mem - 48 * MIB, "ballooned pages saved: %r" % saved)
        vm.ctl.ok("quit")
        vm.wait_exit(15)
        vm.ctl.close()
        vm.con.close()
        vm.proc = subprocess.Popen([vmm_path, "--restore", snap, vm.path("vm.json")],
                                   stdout=vm.stderr, stderr=subprocess.STDOUT)
        vm._attach(True, 30)
        q = vm.ctl.ok("query-balloon")
        check(q["actual_bytes"] == 64 * MIB and q["target_bytes"] == 64 * MIB, "balloon %r" % q)
        st = vm.ctl.ok("stats")
        check(st["balloon"]["inflated_bytes"] == 64 * MIB, "inflated %r" % st["balloon"])
        res = st["guest_resident_bytes"]
        check(res < mem - 48 * MIB, "resident %d" % res)
        g = vm.ctl.ok("query-guest")
        check(g["connected"] and g["data"] == data["data"], "guest data %r" % g)
        st = vm.ctl.ok("query-status")
        check(st["vcpus"] == 2 and st["vcpus_online"] == 2, "status %r" % st)
        check(cpus_line(vm) == "cpus: 2 online of 2, max 3", "cpus after restore")
        vm.ctl.ok("set-vcpus", {"count": 3})
        wait_vcpus(vm, 3)
        vm.ctl.ok("set-balloon-target", {"bytes": mem})
        wait_balloon(vm, mem)
    finally:
        vm.stop()


TESTS = {
    "balloon": t_balloon,
    "balloon_errors": t_balloon_errors,
    "vcpus": t_vcpus,
    "agent": t_agent,
    "agent_shutdown": t_agent_shutdown,
    "agent_net": t_agent_net,
    "save_restore": t_save_restore,
}

if __name__ == "__main__":
    main(TESTS, sys.argv)
