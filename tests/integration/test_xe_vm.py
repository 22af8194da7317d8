"""The real xe's VM commands and console against the real xapid and nuvem-vmm running the bundled
mini guest: vm-install from "Nuvem Mini Guest" (its 64 MiB disk on the default SR), vm-start,
the serial console through `xe console` (over TCP and the local socket; `ready`, `echo`,
Ctrl-]; over HTTPS too), vm-pause/unpause, vm-suspend/resume, vm-reboot, vm-shutdown, XCP's power-state error, vm-uninstall; the /console
HTTP endpoint with raw sockets (CONNECT as XCP's xe sends it, GET + Upgrade, 401/404/405/426);
clone/copy/snapshot/snapshot-revert, memory setters, vbd-* and XCP's error texts.

Env: XAPID, XE (optional NUVEM_VMM / NUVEM_MINIGUEST). Exits 77 without them or without a
usable /dev/kvm. Every VM started here is shut down by the test (the daemon is killed last)."""
import base64
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ok  # noqa: E402

XE = os.environ.get('XE')
UUID_RE = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
MiB = 1 << 20
BAD_STATE = ("You attempted an operation on a VM that was not in an appropriate power state at "
             "the time; for example, you attempted to start a VM that was already running. The "
             "parameters returned are the VM's handle, and the expected and actual VM state at the "
             "time of the call.\n")


class Console:
    """`xe console` as a child with piped stdin/stdout, read without blocking the test."""

    def __init__(self, cmd, env):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env)
        self.out = b''

    def wait_for(self, pattern, timeout=60, start=0):
        deadline = time.time() + timeout
        while pattern not in self.out[start:]:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f'{pattern!r} not seen in {timeout}s: {self.out!r}')
            r, _, _ = select.select([self.p.stdout], [], [], min(left, 1.0))
            if r:
                d = os.read(self.p.stdout.fileno(), 65536)
                if not d:
                    raise AssertionError(f'console ended before {pattern!r}: {self.out!r} '
                                         f'{self.p.stderr.read()!r}')
                self.out += d
        return self.out

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def finish(self, close_stdin=True, timeout=30):
        """Waits for xe to end: after closing its stdin, or (close_stdin False) by itself with
        stdin still open."""
        try:
            if close_stdin:
                self.p.stdin.close()
            else:
                self.p.wait(timeout)
                self.p.stdin.close()
            self.p.stdin = None
            rest, err = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.communicate()
            raise AssertionError('xe console did not end')
        self.out += rest
        return self.p.returncode, self.out, err.decode()


class XeVmTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon(extra=harness.vmm_args()).start()
        cls.s = cls.d.proxy()
        cls.sess = cls.d.login()
        cls.tmp = tempfile.mkdtemp(prefix='xe-vm-test-')
        cls.home = os.path.join(cls.tmp, 'home')
        os.mkdir(cls.home)
        cls.sock = os.path.join(cls.d.state, 'xapi.sock')

    @classmethod
    def tearDownClass(cls):
        try:
            for ref, rec in ok(cls.s.VM.get_all_records(cls.sess)).items():
                if rec['power_state'] != 'Halted' and not rec['is_control_domain']:
                    cls.s.VM.hard_shutdown(cls.sess, ref)
            # a clean stop (console streams ended, no sanitizer report)
            rc = cls.d.stop()
            err = cls.d.stderr()
            if rc != 0 or 'Sanitizer' in err or 'runtime error' in err:
                raise AssertionError(f'xapid stopped with {rc}: {err[-3000:]}')
        finally:
            cls.d.cleanup()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers ----

    def env(self):
        e = {k: v for k, v in os.environ.items() if k != 'XE_EXTRA_ARGS'}
        e['HOME'] = self.home
        return e

    def conn(self, local=False):
        if local:
            return ['-s', 'unix:' + self.sock]
        return ['-s', '127.0.0.1', '-p', str(self.d.port), '-pw', harness.PASSWORD]

    def xe_raw(self, *args, local=False, stdin=None):
        p = subprocess.run([XE] + self.conn(local) + list(args), capture_output=True, text=True,
                           timeout=120, env=self.env(),
                           input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
        self.assertGreaterEqual(p.returncode, 0, p.stderr)
        self.assertNotIn('Sanitizer', p.stderr)
        self.assertNotIn('runtime error', p.stderr)
        return p.returncode, p.stdout, p.stderr

    def xe(self, *args, **kw):
        rc, out, err = self.xe_raw(*args, **kw)
        self.assertEqual(rc, 0, f'xe {" ".join(args)}: {err}')
        self.assertEqual(err, '')
        return out

    def xe_fail(self, *args, **kw):
        rc, out, err = self.xe_raw(*args, **kw)
        self.assertEqual(rc, 1, f'xe {" ".join(args)} should fail: {out} {err}')
        return err

    def xe_uuid(self, *args):
        out = self.xe(*args)
        self.assertRegex(out.strip(), UUID_RE)
        return out.strip()

    def vm(self, uuid):
        ref = ok(self.s.VM.get_by_uuid(self.sess, uuid))
        return ref, ok(self.s.VM.get_record(self.sess, ref))

    def power(self, uuid):
        return self.xe('vm-list', f'uuid={uuid}', 'params=power-state', '--minimal').strip()

    def install(self, name):
        uuid = self.xe_uuid('vm-install', 'template=Nuvem Mini Guest', f'new-name-label={name}')
        return uuid

    def console(self, uuid, local=False, extra=()):
        return Console([XE] + self.conn(local) + ['console', f'uuid={uuid}'] + list(extra),
                       self.env())

    def console_uuid(self, vm_uuid):
        _, rec = self.vm(vm_uuid)
        self.assertEqual(len(rec['consoles']), 1, rec['consoles'])
        return ok(self.s.console.get_uuid(self.sess, rec['consoles'][0]))

    def http(self, req, send=b'', wait=3.0, until=None, path=None):
        """One raw HTTP exchange on a fresh connection (TCP, or the Unix socket with path)."""
        if path:
            c = socket.socket(socket.AF_UNIX)
            c.connect(path)
        else:
            c = socket.create_connection(('127.0.0.1', self.d.port))
        c.sendall(req)
        data = b''
        deadline = time.time() + wait
        sent = False
        try:
            while time.time() < deadline:
                c.settimeout(max(0.05, deadline - time.time()))
                try:
                    d = c.recv(65536)
                except socket.timeout:
                    break
                if not d:
                    break
                data += d
                if send and not sent and b'ready' in data:
                    c.sendall(send)
                    sent = True
                if until and until in data.split(b'\r\n\r\n', 1)[-1]:
                    break
        finally:
            c.close()
        return data

    # ---- tests ----

    def test_lifecycle_and_console(self):
        uuid = self.install('xe-vm1')
        ref, rec = self.vm(uuid)
        self.assertFalse(rec['is_a_template'])
        self.assertEqual(rec['name_description'], 'Installed via xe CLI')
        self.assertNotIn('disks', rec['other_config'])
        self.assertEqual(len(rec['VBDs']), 1)
        vbd = ok(self.s.VBD.get_record(self.sess, rec['VBDs'][0]))
        self.assertIn('owner', vbd['other_config'])
        vdi = vbd['VDI']
        self.assertEqual(int(ok(self.s.VDI.get_virtual_size(self.sess, vdi))), 64 * MiB)
        pool = list(ok(self.s.pool.get_all_records(self.sess)).values())[0]
        self.assertEqual(ok(self.s.VDI.get_SR(self.sess, vdi)), pool['default_SR'])
        self.assertEqual(self.power(uuid), 'halted')
        out = self.xe('vm-disk-list', f'uuid={uuid}')
        self.assertTrue(out.startswith('Disk 0 VBD:\n'), out)
        self.assertIn('\nDisk 0 VDI:\n', out)
        self.assertIn('virtual-size ( RO): 67108864\n', out)

        self.assertEqual(self.xe('vm-start', 'vm=xe-vm1'), '')
        self.assertEqual(self.power(uuid), 'running')
        self.assertEqual(self.xe('vm-list', 'name-label=xe-vm1', 'params=power-state'),
                         'power-state ( RO)    : running\n\n\n')

        # the console over TCP: history (banner, ready), then a command and its answer
        c = self.console(uuid)
        out = c.wait_for(b'ready')
        self.assertTrue(out.startswith(b"Connecting to console on VM xe-vm1. Press Ctrl + ']' "
                                       b"to quit.\n"), out)
        mark = len(c.out)
        c.send(b'echo hi-from-xe\n')
        c.wait_for(b'hi-from-xe', start=mark)
        rc, out, err = c.finish()
        self.assertEqual((rc, err), (0, ''))

        # over the local socket, and Ctrl-] detaches while stdin is still open
        c = self.console(uuid, local=True)
        c.wait_for(b'ready')
        mark = len(c.out)
        c.send(b'echo via-unix\n')
        c.wait_for(b'via-unix', start=mark)
        c.send(b'\x1d')
        t0 = time.time()
        rc, out, err = c.finish(close_stdin=False)
        self.assertEqual((rc, err), (0, ''))
        self.assertLess(time.time() - t0, 10)

        # piped stdin: the command runs, xe drains the answer and ends by itself
        rc, out, err = self.xe_raw('console', 'vm=xe-vm1', 'drain=5', stdin='echo piped-in\n')
        self.assertEqual((rc, err), (0, ''))
        self.assertIn('piped-in', out.split('ready', 1)[-1])

        self.assertEqual(self.xe('vm-pause', f'uuid={uuid}'), '')
        self.assertEqual(self.power(uuid), 'paused')
        err = self.xe_fail('vm-pause', 'vm=xe-vm1')
        self.assertEqual(err, BAD_STATE + f'vm: {uuid} (xe-vm1)\nexpected: running\n'
                         'actual: paused\n')
        self.assertEqual(self.xe('vm-unpause', 'vm=xe-vm1'), '')
        self.assertEqual(self.power(uuid), 'running')
        self.assertEqual(self.xe('vm-suspend', 'vm=xe-vm1'), '')
        self.assertEqual(self.power(uuid), 'suspended')
        self.assertEqual(self.xe_fail('vm-suspend', 'vm=xe-vm1'),
                         BAD_STATE + f'vm: {uuid} (xe-vm1)\nexpected: running\n'
                         'actual: suspended\n')
        self.assertEqual(self.xe('vm-resume', 'vm=xe-vm1'), '')
        self.assertEqual(self.power(uuid), 'running')
        self.assertEqual(self.xe('vm-reboot', 'vm=xe-vm1', '--force'), '')
        self.assertEqual(self.power(uuid), 'running')
        # the restored, then rebooted guest still answers on its console
        rc, out, err = self.xe_raw('console', 'vm=xe-vm1', 'drain=5', stdin='echo resumed\n')
        self.assertEqual((rc, err), (0, ''))
        self.assertIn('resumed', out)

        self.assertEqual(self.xe('vm-shutdown', 'vm=xe-vm1'), '')
        self.assertEqual(self.power(uuid), 'halted')
        err = self.xe_fail('vm-shutdown', f'uuid={uuid}')
        self.assertEqual(err, BAD_STATE + f'vm: {uuid} (xe-vm1)\nexpected: running\n'
                         'actual: halted\n')
        self.assertEqual(self.xe_fail('console', 'vm=xe-vm1'), 'No text console available\n')

        vdi_uuid = ok(self.s.VDI.get_uuid(self.sess, vdi))
        out = self.xe('vm-uninstall', 'vm=xe-vm1', '--force')
        self.assertEqual(out, 'The following items are about to be destroyed\n'
                         f'VM : {uuid} (xe-vm1)\n'
                         f'VDI: {vdi_uuid} (xe-vm1 0) \n'
                         'All objects destroyed\n')
        self.assertEqual(self.s.VM.get_by_uuid(self.sess, uuid)['Status'], 'Failure')
        self.assertEqual(self.s.VDI.get_record(self.sess, vdi)['Status'], 'Failure')

    def test_console_http(self):
        uuid = self.install('xe-vm2')
        self.xe('vm-start', f'uuid={uuid}')
        cu = self.console_uuid(uuid)
        q = f'/console?uuid={cu}'
        up = b'Connection: Upgrade\r\nUpgrade: nuvem-console\r\n'
        # XCP's xe: CONNECT, HTTP/1.0, session in the query; 200 then the raw stream
        r = self.http(f'CONNECT {q}&session_id={self.sess} HTTP/1.0\r\ncontent-length: 0\r\n'
                      '\r\n'.encode(), send=b'echo over-connect\n', until=b'over-connect',
                      wait=60)
        self.assertTrue(r.startswith(b'HTTP/1.0 200 OK\r\n'), r[:200])
        self.assertIn(b'over-connect', r.split(b'ready', 1)[-1])
        # GET + Upgrade with Basic auth: 101 then the stream
        basic = base64.b64encode(f'root:{harness.PASSWORD}'.encode()).decode()
        r = self.http(f'GET {q} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\r\n'.encode()
                      + up + b'\r\n', send=b'echo over-upgrade\n', until=b'over-upgrade',
                      wait=60)
        self.assertTrue(r.startswith(b'HTTP/1.1 101 '), r[:200])
        self.assertIn(b'over-upgrade', r.split(b'ready', 1)[-1])
        # by console ref, on the pre-authenticated local socket
        cref = ok(self.s.console.get_by_uuid(self.sess, cu))
        r = self.http(f'GET /console?ref={cref} HTTP/1.1\r\nHost: x\r\n'.encode() + up + b'\r\n',
                      until=b'ready', wait=60, path=self.sock)
        self.assertTrue(r.startswith(b'HTTP/1.1 101 '), r[:200])
        # refusals
        r = self.http(f'GET {q} HTTP/1.1\r\nHost: x\r\n'.encode() + up + b'\r\n')
        self.assertTrue(r.startswith(b'HTTP/1.1 401 '), r[:200])
        self.assertIn(b'WWW-Authenticate: Basic', r)
        r = self.http(f'GET {q}&session_id=OpaqueRef:nope HTTP/1.1\r\nHost: x\r\n'.encode() + up +
                      b'\r\n')
        self.assertTrue(r.startswith(b'HTTP/1.1 401 '), r[:200])
        r = self.http(f'GET /console?uuid={uuid}&session_id={self.sess} HTTP/1.1\r\nHost: x\r\n'
                      .encode() + up + b'\r\n')
        self.assertTrue(r.startswith(b'HTTP/1.1 404 '), r[:200])
        r = self.http(f'GET {q}&session_id={self.sess} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        self.assertTrue(r.startswith(b'HTTP/1.1 426 '), r[:200])
        r = self.http(f'POST {q}&session_id={self.sess} HTTP/1.1\r\nHost: x\r\n'
                      'Content-Length: 0\r\n\r\n'.encode())
        self.assertTrue(r.startswith(b'HTTP/1.1 405 '), r[:200])
        # (503 for a console whose VM stopped is not reachable from here: consoles go with
        # the running state, and console.create cannot name a VM)
        self.xe('vm-shutdown', f'uuid={uuid}', '--force')
        self.assertEqual(self.power(uuid), 'halted')
        self.assertEqual(ok(self.s.console.get_all(self.sess)), [])
        self.xe('vm-uninstall', f'uuid={uuid}', '--force')

    def test_console_tls(self):
        """xe console over HTTPS (the upgrade through MHD's TLS forwarding); CONNECT is
        refused there with 501."""
        import ssl
        d = harness.Daemon(extra=harness.vmm_args(), tls=True).start()
        try:
            conn = ['-s', '127.0.0.1', '-p', str(d.tls_port), '-pw', harness.PASSWORD,
                    '--insecure']

            def xe(*args, stdin=None):
                p = subprocess.run([XE] + conn + list(args), capture_output=True, text=True,
                                   timeout=120, env=self.env(), input=stdin,
                                   stdin=None if stdin is not None else subprocess.DEVNULL)
                self.assertNotIn('Sanitizer', p.stderr)
                return p.returncode, p.stdout, p.stderr
            rc, out, err = xe('vm-install', 'template=Nuvem Mini Guest', 'new-name-label=tls')
            self.assertEqual((rc, err), (0, ''))
            uuid = out.strip()
            self.assertEqual(xe('vm-start', f'uuid={uuid}')[0], 0)
            rc, out, err = xe('console', f'uuid={uuid}', 'drain=5', stdin='echo over-tls\n')
            self.assertEqual((rc, err), (0, ''))
            self.assertIn('over-tls', out.split('ready', 1)[-1])
            s = d.proxy()
            sess = d.login()
            ref = ok(s.VM.get_by_uuid(sess, uuid))
            cu = ok(s.console.get_uuid(sess, ok(s.VM.get_consoles(sess, ref))[0]))
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with socket.create_connection(('127.0.0.1', d.tls_port)) as raw:
                with ctx.wrap_socket(raw) as c:
                    c.sendall(f'CONNECT /console?uuid={cu}&session_id={sess} HTTP/1.0\r\n\r\n'
                              .encode())
                    c.settimeout(10)
                    head = c.recv(4096)
                    self.assertRegex(head, rb'^HTTP/1\.[01] 501 ')
            # the stream ends with the VM: xe console exits by itself (stdin still open)
            c = Console([XE] + conn + ['console', f'uuid={uuid}'], self.env())
            c.wait_for(b'ready')
            self.assertEqual(xe('vm-shutdown', f'uuid={uuid}', '--force')[0], 0)
            rc, out, err = c.finish(close_stdin=False)
            self.assertEqual((rc, err), (0, ''))
            # a daemon stopping with a stream open ends it and exits cleanly; the VMM stays and
            # the next daemon on the same state re-attaches (then the VM is shut down)
            self.assertEqual(xe('vm-start', f'uuid={uuid}')[0], 0)
            c = Console([XE] + conn + ['console', f'uuid={uuid}'], self.env())
            c.wait_for(b'ready')
            rc = d.stop()
            err = d.stderr()
            self.assertEqual(rc, 0, err[-3000:])
            self.assertNotIn('Sanitizer', err)
            self.assertNotIn('runtime error', err)
            rc, out, err = c.finish(close_stdin=False)
            self.assertEqual(rc, 0, err)
            d2 = harness.Daemon(extra=harness.vmm_args(), state_dir=d.state).start()
            try:
                s2 = d2.proxy()
                sess2 = d2.login()
                ref = ok(s2.VM.get_by_uuid(sess2, uuid))
                self.assertEqual(ok(s2.VM.get_power_state(sess2, ref)), 'Running')
                ok(s2.VM.hard_shutdown(sess2, ref))
            finally:
                d2.cleanup()
        finally:
            d.cleanup()

    def test_copies_and_setters(self):
        uuid = self.install('xe-vm3')
        out = self.xe('vm-clone', 'vm=xe-vm3', 'new-name-label=xe-vm3c',
                      'new-name-description=the clone')
        clone = out.strip()
        self.assertRegex(clone, UUID_RE)
        _, crec = self.vm(clone)
        self.assertEqual((crec['name_label'], crec['name_description']),
                         ('xe-vm3c', 'the clone'))
        snap = self.xe_uuid('vm-snapshot', f'uuid={uuid}', 'new-name-label=xe-vm3s')
        _, srec = self.vm(snap)
        self.assertTrue(srec['is_a_snapshot'])
        self.assertIn(snap, self.xe('snapshot-list', 'params=uuid', '--minimal'))
        self.assertEqual(self.xe('snapshot-revert', f'snapshot-uuid={snap}'), '')
        self.assertEqual(self.xe_fail('snapshot-revert', f'uuid={uuid}'),
                         f'Error: This operation can only be performed on a VM snapshot. {uuid} '
                         'is not a VM snapshot.\n')
        self.assertEqual(self.xe_fail('snapshot-revert'),
                         'Error: Required parameter not found: snapshot-uuid or uuid.\n')
        copy = self.xe_uuid('vm-copy', 'vm=xe-vm3', 'new-name-label=xe-vm3cp')
        _, cprec = self.vm(copy)
        self.assertEqual(len(cprec['VBDs']), 1)
        # two VMs match a name prefix filter: --multiple is needed, and vm-copy takes one
        self.xe('vm-param-set', f'uuid={clone}', 'name-description=dup')
        self.xe('vm-param-set', f'uuid={copy}', 'name-description=dup')
        self.assertEqual(self.xe_fail('vm-copy', 'name-description=dup', 'new-name-label=x'),
                         'Error: Multiple matches VMs found. Operation can only be performed on '
                         'one VM at a time\n')
        self.assertEqual(self.xe_fail('vm-memory-set', 'name-description=dup', 'memory=40MiB'),
                         'Error: Multiple matches VMs found. --multiple required to complete the '
                         'operation\n')
        self.assertEqual(self.xe('vm-memory-set', 'name-description=dup', 'memory=40MiB',
                                 '--multiple'), '')
        for u in (clone, copy):
            _, r = self.vm(u)
            self.assertEqual((int(r['memory_static_max']), int(r['memory_dynamic_max'])),
                             (40 * MiB, 40 * MiB))
        self.assertEqual(self.xe('vm-memory-limits-set', 'vm=xe-vm3', 'static-min=16MiB',
                                 'static-max=64MiB', 'dynamic-min=32MiB', 'dynamic-max=48MiB'), '')
        _, r = self.vm(uuid)
        self.assertEqual([int(r[k]) for k in ('memory_static_min', 'memory_static_max',
                                              'memory_dynamic_min', 'memory_dynamic_max')],
                         [16 * MiB, 64 * MiB, 32 * MiB, 48 * MiB])
        self.xe('vm-memory-dynamic-range-set', 'vm=xe-vm3', 'min=20MiB', 'max=40MiB')
        self.xe('vm-memory-static-range-set', 'vm=xe-vm3', 'min=18MiB', 'max=60MiB')
        _, r = self.vm(uuid)
        self.assertEqual([int(r[k]) for k in ('memory_static_min', 'memory_static_max',
                                              'memory_dynamic_min', 'memory_dynamic_max')],
                         [18 * MiB, 60 * MiB, 20 * MiB, 40 * MiB])
        self.xe('vm-memory-target-set', 'vm=xe-vm3', 'target=36MiB')
        _, r = self.vm(uuid)
        self.assertEqual((int(r['memory_dynamic_min']), int(r['memory_dynamic_max'])),
                         (36 * MiB, 36 * MiB))
        self.assertEqual(self.xe_fail('vm-memory-target-set', 'vm=xe-vm3', 'target=1XB'),
                         "Error: Failed to parse field 'target': expecting an integer (possibly "
                         "with suffix KiB, MiB, GiB, TiB), got '1XB'\n")
        self.assertEqual(self.xe_fail('vm-vcpu-hotplug', 'vm=xe-vm3', 'new-vcpus=two'),
                         "Error: Failed to parse parameter 'new-vcpus': expecting an integer\n")
        self.assertEqual(self.xe_fail('vm-reset-powerstate', 'vm=xe-vm3'),
                         'Error: This operation is dangerous and may cause data loss. This '
                         'operation must be forced (use --force).\n')
        self.assertEqual(self.xe_fail('vm-start', 'vm=no-such-vm'),
                         'Error: No matching VMs found\n')
        self.assertEqual(self.xe_fail('vm-cd-eject', 'vm=xe-vm3'), 'Error: No CDs found\n')
        # vbd-create/destroy: an empty CD, refused empty disk
        cd = self.xe_uuid('vbd-create', f'vm-uuid={uuid}', 'device=3', 'type=CD', 'mode=RO')
        vbd = ok(self.s.VBD.get_by_uuid(self.sess, cd))
        v = ok(self.s.VBD.get_record(self.sess, vbd))
        self.assertEqual((v['type'], v['mode'], v['empty'], v['userdevice']),
                         ('CD', 'RO', True, '3'))
        self.assertEqual(self.xe('vm-cd-list', 'vm=xe-vm3'),
                         'CD 0 VBD:\n'
                         f'uuid ( RO)             : {cd}\n'
                         '    vm-name-label ( RO): xe-vm3\n'
                         '            empty ( RO): true\n'
                         '       userdevice ( RW): 3\n\n\n')
        self.assertEqual(self.xe_fail('vbd-create', f'vm-uuid={uuid}', 'device=4'),
                         'Error: Empty VBDs can only be made for type=CD\n')
        self.assertEqual(self.xe_fail('vbd-create', f'vm-uuid={uuid}', 'device=4', 'mode=XX',
                                      'type=CD'),
                         'Error: Unknown mode: xx (should be "ro" or "rw"\n')
        self.assertEqual(self.xe('vbd-destroy', f'uuid={cd}'), '')
        self.assertEqual(self.s.VBD.get_record(self.sess, vbd)['Status'], 'Failure')
        # vm-destroy keeps the disks; the control domain is refused
        dom0 = self.xe('vm-list', 'is-control-domain=true', 'params=uuid', '--minimal').strip()
        err = self.xe_fail('vm-destroy', f'uuid={dom0}')
        self.assertIn('reason: You cannot destroy a control domain via the CLI\n', err)
        _, cprec = self.vm(copy)
        copy_vdi = ok(self.s.VBD.get_VDI(self.sess, cprec['VBDs'][0]))
        self.assertEqual(self.xe('vm-destroy', f'uuid={copy}'), '')
        self.assertEqual(self.s.VDI.get_record(self.sess, copy_vdi)['Status'], 'Success')
        # vm-uninstall without --force asks, and anything but yes aborts
        out = self.xe('vm-uninstall', f'uuid={clone}', stdin='no\n')
        self.assertTrue(out.endswith("Type 'yes' to continue\nAborted (you typed: 'no')\n"), out)
        self.assertEqual(self.s.VM.get_by_uuid(self.sess, clone)['Status'], 'Success')
        out = self.xe('vm-uninstall', f'uuid={clone}', stdin='yes\n')
        self.assertTrue(out.endswith('All objects destroyed\n'), out)
        self.assertEqual(self.s.VM.get_by_uuid(self.sess, clone)['Status'], 'Failure')

    def test_install_errors_and_sr(self):
        self.assertEqual(self.xe_fail('vm-install', 'template=no such template',
                                      'new-name-label=x'), 'Error: No templates matched\n')
        self.assertEqual(self.xe_fail('vm-install', 'new-name-label=x'),
                         "Error: Template must be specified by parameter 'template-uuid', "
                         "'template-name', 'template-name-label' or 'template'\n")
        self.assertEqual(self.xe_fail('vm-install', 'template=Nuvem Mini Guest',
                                      'new-name-label=x', 'sr-name-label=nope'),
                         'Error: No SR with that name-label found\n')
        dom0 = self.xe('vm-list', 'is-control-domain=true', 'params=uuid', '--minimal').strip()
        self.assertEqual(self.xe_fail('vm-install', f'template={dom0}', 'new-name-label=x'),
                         'Error: Can only install from templates\n')
        # an explicit SR: XCP copies the template (VM.copy) and provisions the disks there
        sr_dir = os.path.join(self.tmp, 'sr2')
        os.mkdir(sr_dir)
        sr = self.xe_uuid('sr-create', 'name-label=second', 'type=file',
                          f'device-config:location={sr_dir}')
        uuid = self.xe_uuid('vm-install', 'template=Nuvem Mini Guest',
                            'new-name-label=xe-vm4', 'sr-name-label=second')
        _, rec = self.vm(uuid)
        sr_ref = ok(self.s.SR.get_by_uuid(self.sess, sr))
        self.assertEqual(rec['suspend_SR'], sr_ref)
        vdi = ok(self.s.VBD.get_VDI(self.sess, rec['VBDs'][0]))
        self.assertEqual(ok(self.s.VDI.get_SR(self.sess, vdi)), sr_ref)
        self.assertEqual(len([r for r in ok(self.s.VM.get_all_records(self.sess)).values()
                              if r['name_label'] == 'xe-vm4']), 1)
        self.xe('vm-uninstall', f'uuid={uuid}', '--force')


if __name__ == '__main__':
    if not XE or not os.path.exists(XE) or not os.path.exists(harness.XAPID):
        harness.skip('XE and XAPID must name the built binaries')
    try:
        os.close(os.open('/dev/kvm', os.O_RDWR))
    except OSError as e:
        harness.skip(f'/dev/kvm not usable: {e}')
    unittest.main()
