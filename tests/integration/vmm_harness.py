"""Drives a real nuvem-vmm for integration tests: starts it with a config in a temp dir,
speaks the control protocol, reads the serial console. Standard library only.

Every wait is bounded; only the nuvem-vmm process started here is ever killed (by PID)."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
LAST_LOGS = []  # (vmm log, serial log) of stopped VMMs, printed when a test fails


def skip(reason):
    print("SKIP: " + reason)
    sys.exit(SKIP)


def require_kvm():
    if not os.path.exists("/dev/kvm"):
        skip("/dev/kvm is missing")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        skip("/dev/kvm is not accessible to this user")


class TestFailure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


class Control:
    """One control-socket connection: greeting, requests, and the events seen so far."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except BlockingIOError:  # listen backlog full; the VMM accepts as it polls
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.buf = b""
        self.events = []
        self.next_id = 1
        self.greeting = self.read_msg(timeout)
        check("greeting" in self.greeting, "no greeting: %r" % self.greeting)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def read_line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure("timed out waiting for a control message")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise EOFError("control socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def read_msg(self, timeout=10.0):
        return json.loads(self.read_line(timeout))

    def send_raw(self, data):
        self.sock.sendall(data)

    def request(self, execute, arguments=None, timeout=10.0, req_id=Ellipsis):
        """Sends a request and returns its reply (events met on the way are kept)."""
        if req_id is Ellipsis:
            req_id = self.next_id
            self.next_id += 1
        msg = {"id": req_id, "execute": execute}
        if arguments is not None:
            msg["arguments"] = arguments
        self.sock.sendall((json.dumps(msg) + "\n").encode())
        deadline = time.monotonic() + timeout
        while True:
            m = self.read_msg(max(0.01, deadline - time.monotonic()))
            if "event" in m:
                self.events.append(m)
                continue
            check(m.get("id") == req_id, "reply for another id: %r" % m)
            return m

    def ok(self, execute, arguments=None, timeout=10.0):
        r = self.request(execute, arguments, timeout)
        check("return" in r, "%s failed: %r" % (execute, r))
        return r["return"]

    def wait_event(self, name, timeout=10.0):
        """Returns the first not-yet-consumed event called name."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure("no %s event within %.0fs (seen %r)" % (name, timeout, self.events))
            m = self.read_msg(left)
            if "event" in m:
                self.events.append(m)


class Console:
    """A console-socket reader collecting serial output in the background."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.sock.settimeout(0.2)
        self.data = b""
        self.lock = threading.Lock()
        self.closed = False
        self.pos = 0
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self):
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            with self.lock:
                self.data += chunk
        self.closed = True

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def text(self):
        with self.lock:
            return self.data.decode("utf-8", "replace")

    def send(self, line):
        self.sock.sendall((line + "\n").encode())

    def wait_for(self, pattern, timeout=15.0, since=None):
        """Waits until pattern (regex) appears after position `since` (default: after the
        last match); returns the match."""
        rx = re.compile(pattern, re.M)
        start = self.pos if since is None else since
        deadline = time.monotonic() + timeout
        while True:
            t = self.text()
            m = rx.search(t, start)
            if m:
                self.pos = m.end()
                return m
            if time.monotonic() > deadline:
                raise TestFailure("serial: no /%s/ within %.0fs; output after %d:\n%s"
                                  % (pattern, timeout, start, t[start:][-2000:]))
            time.sleep(0.02)

    def command(self, line, pattern, timeout=15.0):
        """Sends a command line and waits for pattern in the output that follows."""
        start = len(self.text())
        self.send(line)
        return self.wait_for(pattern, timeout, since=start)


class Vmm:
    def __init__(self, vmm_path, kernel, **cfg):
        self.dir = tempfile.mkdtemp(prefix="nuvem-vmm-test-")
        self.vmm_path = vmm_path
        self.cfg = {
            "name": "test-vm",
            "memory_mib": 32,
            "vcpus": 1,
            "kernel": kernel,
            "cmdline": "test",
            "serial": {"log": self.path("serial.log"), "socket": self.path("console.sock")},
            "control": self.path("control.sock"),
        }
        self.cfg.update(cfg)
        self.proc = None
        self.ctl = None
        self.con = None
        self.started_at = None

    def path(self, name):
        return os.path.join(self.dir, name)

    def start(self, connect=True, timeout=15.0):
        with open(self.path("vm.json"), "w") as f:
            json.dump(self.cfg, f)
        self.stderr = open(self.path("vmm.log"), "w")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([self.vmm_path, self.path("vm.json")],
                                     stdout=self.stderr, stderr=subprocess.STDOUT)
        try:
            return self._attach(connect, timeout)
        except BaseException:
            self.stop()  # never leave a VMM behind
            raise

    def _attach(self, connect, timeout):
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.cfg["control"]):
            if self.proc.poll() is not None:
                raise TestFailure("nuvem-vmm exited with %d:\n%s" % (self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                raise TestFailure("control socket did not appear")
            time.sleep(0.01)
        if connect:
            self.ctl = Control(self.cfg["control"])
            if (self.cfg.get("serial") or {}).get("socket"):
                self.con = Console(self.cfg["serial"]["socket"])
        return self

    def log(self):
        try:
            with open(self.path("vmm.log")) as f:
                return f.read()
        except OSError:
            return ""

    def serial_log(self):
        try:
            with open(self.path("serial.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_exit(self, timeout=15.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure("nuvem-vmm did not exit within %.0fs" % timeout)

    def wait_banner(self, timeout=15.0):
        return self.con.wait_for(r"^ready\r?$", timeout)

    def stop(self):
        LAST_LOGS.append((self.log(), self.serial_log()))
        for c in (self.ctl, self.con):
            if c:
                c.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "stderr", None):
            self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def main(tests, argv):
    """argv: VMM GUEST TESTNAME. Runs one test function tests[TESTNAME](vmm_path, guest)."""
    if len(argv) != 4 or argv[3] not in tests:
        print("usage: %s NUVEM_VMM GUEST_ELF {%s}" % (argv[0], "|".join(sorted(tests))))
        sys.exit(2)
    vmm_path, guest, name = argv[1], argv[2], argv[3]
    t0 = time.monotonic()
    try:
        tests[name](vmm_path, guest)
    except (TestFailure, EOFError, OSError, ValueError) as e:
        print("FAIL %s: %s" % (name, e))
        for vmm_log, serial in LAST_LOGS[-2:]:
            print("--- nuvem-vmm log:\n%s--- serial log (tail):\n%s" % (vmm_log, serial[-1500:]))
        sys.exit(1)
    print("PASS %s (%.2fs)" % (name, time.monotonic() - t0))
