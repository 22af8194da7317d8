"""Starts a real xapid on 127.0.0.1 with a temp state dir for integration tests.

Only processes started here are stopped, by PID. Every wait is bounded."""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import xmlrpc.client

XAPID = os.environ.get('XAPID', 'xapid')
PASSWORD = 'nuvem-test-pw'


class Daemon:
    def __init__(self, extra=(), state_dir=None, tls=False, iterations=1000):
        self.tmp = tempfile.mkdtemp(prefix='xapid-test-')
        self.state = state_dir or os.path.join(self.tmp, 'state')
        self.pwfile = os.path.join(self.tmp, 'pw')
        with open(self.pwfile, 'w') as f:
            f.write(PASSWORD + '\n')
        self.extra = list(extra)
        self.tls = tls
        self.iterations = iterations
        self.proc = None
        self.port = None
        self.tls_port = None

    def start(self):
        args = [XAPID, '--state-dir', self.state, '--listen', '127.0.0.1:0',
                '--root-password-file', self.pwfile,
                '--password-iterations', str(self.iterations)] + self.extra
        if self.tls:
            args += ['--tls-listen', '127.0.0.1:0']
        self.out = open(os.path.join(self.tmp, 'stdout'), 'w+')
        self.err = open(os.path.join(self.tmp, 'stderr'), 'w+')
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=self.err)
        deadline = time.time() + 30
        while time.time() < deadline:
            self.out.seek(0)
            text = self.out.read()
            m = re.search(r'http://127\.0\.0\.1:(\d+)/', text)
            t = re.search(r'https://127\.0\.0\.1:(\d+)/', text)
            if m and (t or not self.tls):
                self.port = int(m.group(1))
                self.tls_port = int(t.group(1)) if t else None
                break
            if self.proc.poll() is not None:
                raise RuntimeError('xapid exited: ' + self.stderr())
            time.sleep(0.05)
        else:
            raise RuntimeError('xapid did not start')
        # ready once it answers system.listMethods
        while time.time() < deadline:
            try:
                self.proxy().system.listMethods()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError('xapid does not answer')

    def url(self, path='/'):
        return f'http://127.0.0.1:{self.port}{path}'

    def proxy(self):
        return xmlrpc.client.ServerProxy(self.url(), allow_none=True)

    def login(self, user='root', pw=PASSWORD):
        r = self.proxy().session.login_with_password(user, pw, '2.21', 'nuvem-tests')
        assert r['Status'] == 'Success', r
        return r['Value']

    def stderr(self):
        self.err.flush()
        with open(os.path.join(self.tmp, 'stderr')) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def kill_vmms(self):
        """VMMs this daemon started are detached (they outlive it by design): a test that ends
        early stops them here, by the PIDs the daemon recorded, checked to be nuvem-vmm
        processes running a config under this state dir."""
        run = os.path.join(self.state, 'run')
        try:
            names = os.listdir(run)
        except OSError:
            return
        for n in names:
            if not n.endswith('.pid'):
                continue
            try:
                with open(os.path.join(run, n)) as f:
                    pid = int(f.read().strip())
                with open('/proc/%d/cmdline' % pid, 'rb') as f:
                    argv = f.read().split(b'\0')
            except (OSError, ValueError):
                continue
            if (argv and argv[0].endswith(b'nuvem-vmm') and
                    any(a.startswith(run.encode() + b'/') for a in argv)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def cleanup(self):
        try:
            self.stop(signal.SIGKILL)
        finally:
            self.kill_vmms()
            for f in (getattr(self, 'out', None), getattr(self, 'err', None)):
                if f:
                    f.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


def ok(r):
    assert r['Status'] == 'Success', r
    return r['Value']


def vm_record(name='vm'):
    return {'name_label': name, 'name_description': '', 'user_version': '1',
            'is_a_template': False, 'affinity': 'OpaqueRef:NULL',
            'memory_static_max': '268435456', 'memory_dynamic_max': '268435456',
            'memory_dynamic_min': '268435456', 'memory_static_min': '134217728',
            'VCPUs_params': {}, 'VCPUs_max': '1', 'VCPUs_at_startup': '1',
            'actions_after_shutdown': 'destroy', 'actions_after_reboot': 'restart',
            'actions_after_crash': 'restart', 'PV_bootloader': '', 'PV_kernel': '',
            'PV_ramdisk': '', 'PV_args': '', 'PV_bootloader_args': '', 'PV_legacy_args': '',
            'HVM_boot_policy': '', 'HVM_boot_params': {}, 'platform': {}, 'PCI_bus': '',
            'other_config': {}, 'recommendations': ''}


def skip(why):
    """Exit 77 (ctest skip) with a one-line reason."""
    print('SKIP: ' + why)
    raise SystemExit(77)


def vmm_args():
    """xapid options naming the VMM and mini guest when the environment overrides them
    (NUVEM_VMM, NUVEM_MINIGUEST); by default xapid finds them next to its own binary."""
    a = []
    if os.environ.get('NUVEM_VMM'):
        a += ['--vmm', os.environ['NUVEM_VMM']]
    if os.environ.get('NUVEM_MINIGUEST'):
        a += ['--miniguest', os.environ['NUVEM_MINIGUEST']]
    return a
