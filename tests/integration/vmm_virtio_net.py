#!/usr/bin/env python3
"""Integration tests: virtio-net (virtio-mmio) in nuvem-vmm on a tap, driven by the mini
guest's `net` commands; the host end is an AF_PACKET socket on the tap.

usage: vmm_virtio_net.py NUVEM_VMM GUEST_ELF TESTNAME

Each test re-executes itself in a new network namespace (`unshare --net`), so the taps it
makes never touch the host's interfaces and vanish with it. Needs root (CAP_NET_ADMIN),
/dev/net/tun and /dev/kvm; exits 77 with a reason otherwise."""

import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vmm_harness import TestFailure, Vmm, check, main, require_kvm, skip  # noqa: E402

ETH_TYPE = 0x88B5
TAP = "nvt0"
GUEST_MAC = "52:54:00:12:34:56"
HOST_MAC = bytes([0x52, 0x54, 0x00, 0xAA, 0xBB, 0xCC])


def in_netns():
    """Re-executes this script in a fresh network namespace (once)."""
    if os.environ.get("NUVEM_NET_TEST_NS") == "1":
        return
    if os.geteuid() != 0:
        skip("needs root for taps in a network namespace")
    if not os.path.exists("/dev/net/tun"):
        skip("/dev/net/tun is missing")
    env = dict(os.environ, NUVEM_NET_TEST_NS="1")
    try:
        r = subprocess.run(["unshare", "--net", sys.executable] + sys.argv, env=env, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        skip("unshare --net failed: %s" % e)
    sys.exit(r.returncode)


def make_tap():
    for cmd in (["ip", "link", "set", "lo", "up"],
                ["ip", "tuntap", "add", "dev", TAP, "mode", "tap"],
                ["ip", "link", "set", TAP, "address", ":".join("%02x" % b for b in HOST_MAC)],
                ["ip", "link", "set", TAP, "up"]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        if r.returncode:
            skip("%s: %s" % (" ".join(cmd), r.stderr.strip()))
    try:  # no IPv6 chatter (router solicitations, MLD) on the tap
        with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % TAP, "w") as f:
            f.write("1")
    except OSError:
        pass
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_TYPE))
    s.bind((TAP, ETH_TYPE))
    s.settimeout(0.2)
    return s


def frame(dst, payload):
    data = dst + HOST_MAC + ETH_TYPE.to_bytes(2, "big") + payload
    return data + bytes(max(0, 60 - len(data)))


def host_recv(sock, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if len(data) >= 14 and int.from_bytes(data[12:14], "big") == ETH_TYPE:
            return data
    raise TestFailure("no frame from the guest within %.0fs" % timeout)


def line(vm, cmd, prefix, timeout=20.0):
    return vm.con.command(cmd, r"^(%s[^\r\n]*)\r\n" % prefix, timeout).group(1)


def booted(vmm_path, guest, **cfg):
    require_kvm()
    vm = Vmm(vmm_path, guest, nics=[{"tap": TAP, "mac": GUEST_MAC}], **cfg)
    vm.start()
    vm.wait_banner()
    return vm


def t_rxtx(vmm_path, guest):
    """Guest -> host and host -> guest frames through the tap, in order, under the sandbox."""
    in_netns()
    sock = make_tap()
    vm = booted(vmm_path, guest)
    try:
        check("nic eth0: mac %s" % GUEST_MAC in vm.con.text(), "banner")
        info = line(vm, "net info", "net")
        check(info == "net: eth0 at slot 0, mac %s, link up" % GUEST_MAC, info)
        check(line(vm, "net send hello-host", "net send") == "net send: ok 10 bytes", "send")
        f = host_recv(sock)
        check(f[:6] == b"\xff" * 6 and f[6:12] == bytes.fromhex(GUEST_MAC.replace(":", "")),
              "frame addresses %r" % f[:14])
        check(f[14:24] == b"hello-host" and len(f) == 60, "frame %r" % f)
        guest_mac = bytes.fromhex(GUEST_MAC.replace(":", ""))
        sock.send(frame(guest_mac, b"hello-guest"))
        r = line(vm, "net recv 5000", "net recv")
        host = ":".join("%02x" % b for b in HOST_MAC)
        check(r == 'net recv: 60 bytes from %s "hello-guest"' % host, r)
        # More frames than the guest has buffers (4): the rest wait in the VMM, in order.
        for i in range(10):
            sock.send(frame(b"\xff" * 6, b"burst-%d" % i))
        for i in range(10):
            r = line(vm, "net recv 5000", "net recv")
            check(r.endswith('"burst-%d"' % i), "burst %d: %r" % (i, r))
        check(line(vm, "net recv 200", "net recv") == "net recv: none", "extra frame")
        big = b"x" * 1400
        sock.send(frame(guest_mac, big))
        r = line(vm, "net recv 5000", "net recv")
        check(r.startswith("net recv: 1414 bytes from"), r)
        st = vm.ctl.ok("stats")["nics"]
        check(len(st) == 1 and st[0]["tx_packets"] == 1 and st[0]["rx_packets"] >= 12
              and st[0]["tx_bytes"] == 60, "stats %r" % st)
        vm.ctl.ok("quit")
        check(vm.wait_exit() == 0, "exit code")
    finally:
        vm.stop()
        sock.close()


def t_tap_gone(vmm_path, guest):
    """The tap is deleted under a running VM: sends are dropped, the VMM lives and quits."""
    in_netns()
    sock = make_tap()
    vm = booted(vmm_path, guest)
    try:
        sock.close()
        subprocess.run(["ip", "link", "del", TAP], check=True, timeout=10)
        r = line(vm, "net send after", "net send")
        check(r == "net send: ok 5 bytes", r)
        check(line(vm, "net recv 200", "net recv") == "net recv: none", "recv")
        check(vm.ctl.ok("query-status")["status"] == "running", "VMM state")
        st = vm.ctl.ok("stats")["nics"][0]
        check(st["tx_dropped"] >= 1, "stats %r" % st)
        vm.ctl.ok("quit")
        check(vm.wait_exit() == 0, "exit code")
    finally:
        vm.stop()


def t_with_disk(vmm_path, guest):
    """A disk and a NIC together: slots 0 and 1, both usable; reboot keeps both working."""
    in_netns()
    sock = make_tap()
    require_kvm()
    vm = Vmm(vmm_path, guest)
    try:
        img = vm.path("d.img")
        with open(img, "wb") as f:
            f.truncate(64 * 512)
        vm.cfg["disks"] = [{"path": img}]
        vm.cfg["nics"] = [{"tap": TAP}]
        vm.cfg["sandbox"] = False  # the disk write needs pwrite64 (not in the allowlist yet)
        vm.start()
        vm.wait_banner()
        check(line(vm, "net info", "net").startswith("net: eth0 at slot 1, mac 52:54:00:4e:56:01"),
              "default MAC / slot")
        check(line(vm, "blk write 1 both", "blk") == "blk write 1: ok", "blk")
        vm.con.send("reboot")
        vm.ctl.wait_event("reboot")
        vm.con.wait_for(r"^ready\r?$", 20)
        check(line(vm, "net send again", "net send") == "net send: ok 5 bytes", "send after reboot")
        check(host_recv(sock)[14:19] == b"again", "frame after reboot")
        check("fnv" in line(vm, "blk read 1", "blk"), "blk after reboot")
    finally:
        vm.stop()
        sock.close()


TESTS = {"rxtx": t_rxtx, "tap_gone": t_tap_gone, "with_disk": t_with_disk}

if __name__ == "__main__":
    main(TESTS, sys.argv)
