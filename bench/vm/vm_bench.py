#!/usr/bin/env python3
"""VM lifecycle benchmarks through the XenAPI (issue #8).

start:   VM.start of a mini-guest VM -> the call returns -> the guest prints `ready` on its
         serial line -> the guest agent's first report reaches the API (VM.guest_metrics set),
         p50 over --runs starts; side by side (same run, same guest ELF) `virsh start` of a
         libvirt + QEMU domain booting the same mini guest until it prints `ready`, when
         libvirt can run here (--libvirt; --install-libvirt installs Debian's packages).
density: --density VMs of 32 MiB installed with `xe vm-install` and started with `xe vm-start`
         (one xe per call, as an administrator would), time until every guest agent reported,
         host memory used (MemAvailable before/after, and the VMMs' summed PSS), KSM sharing.

Standard library only. Starts its own xapid (temp state dir, 127.0.0.1:0) and stops only what
it started, by PID. Every wait is bounded; a watchdog ends the run after --max-seconds."""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client

MIB = 1024 * 1024
PW = 'bench-pw'


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def meminfo(key):
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    return 0


def pss(pid):
    try:
        with open('/proc/%d/smaps_rollup' % pid) as f:
            for line in f:
                if line.startswith('Pss:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pct(vals, p):
    s = sorted(vals)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))]


class Xapid:
    def __init__(self, build, tmp):
        self.tmp = tmp
        self.state = os.path.join(tmp, 'state')
        pwf = os.path.join(tmp, 'pw')
        with open(pwf, 'w') as f:
            f.write(PW + '\n')
        self.out = open(os.path.join(tmp, 'xapid.out'), 'w+')
        self.err = open(os.path.join(tmp, 'xapid.err'), 'w+')
        self.xe_bin = os.path.join(build, 'cli', 'xe')
        self.proc = subprocess.Popen(
            [os.path.join(build, 'xapid', 'xapid'), '--state-dir', self.state, '--listen',
             '127.0.0.1:0', '--root-password-file', pwf, '--password-iterations', '1000',
             '--log-level', 'warn'], stdout=self.out, stderr=self.err)
        end = time.time() + 30
        port = None
        while time.time() < end and not port:
            self.out.seek(0)
            m = re.search(r'http://127\.0\.0\.1:(\d+)/', self.out.read())
            port = m and int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError('xapid exited')
            time.sleep(0.05)
        if not port:
            raise RuntimeError('xapid did not start')
        self.url = 'http://127.0.0.1:%d/' % port
        while time.time() < end:
            try:
                self.x = xmlrpc.client.ServerProxy(self.url)
                r = self.x.session.login_with_password('root', PW, '2.21', 'bench')
                self.s = r['Value']
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError('xapid does not answer')

    def call(self, method, *args, proxy=None):
        obj = proxy or self.x
        for p in method.split('.'):
            obj = getattr(obj, p)
        r = obj(self.s, *args)
        if r['Status'] != 'Success':
            raise RuntimeError('%s: %s' % (method, r['ErrorDescription']))
        return r.get('Value')

    def xe(self, *args):
        r = subprocess.run([self.xe_bin, '-s', 'unix:' + os.path.join(self.state, 'xapi.sock')]
                           + list(args), capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError('xe %s: %s' % (' '.join(args), r.stderr.strip()))
        return r.stdout.strip()

    def template(self):
        for ref, rec in self.call('VM.get_all_records').items():
            if rec['is_a_template'] and rec['other_config'].get('nuvem-template') == 'miniguest':
                return ref
        raise RuntimeError('no mini guest template')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_for(pred, timeout, step=0.001):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def serial_has(path, text):
    try:
        with open(path, 'rb') as f:
            return text in f.read()
    except OSError:
        return False


def bench_start(xd, runs):
    t = xd.template()
    vm = xd.call('VM.clone', t, 'bench-start')
    xd.call('VM.set_is_a_template', vm, False)
    xd.call('VM.remove_from_other_config', vm, 'disks')
    xd.call('VM.provision', vm)
    uuid = xd.call('VM.get_uuid', vm)
    serial = os.path.join(xd.state, 'run', uuid + '.serial')
    api, ready, up = [], [], []
    for i in range(runs):
        try:
            os.unlink(serial)
        except OSError:
            pass
        t0 = time.perf_counter()
        xd.call('VM.start', vm, False, False)
        t1 = time.perf_counter()
        if not wait_for(lambda: serial_has(serial, b'ready'), 30):
            raise RuntimeError('guest not ready')
        t2 = time.perf_counter()
        if not wait_for(lambda: xd.call('VM.get_guest_metrics', vm) != 'OpaqueRef:NULL', 30):
            raise RuntimeError('guest agent never reported')
        t3 = time.perf_counter()
        api.append((t1 - t0) * 1000)
        ready.append((t2 - t0) * 1000)
        up.append((t3 - t0) * 1000)
        xd.call('VM.hard_shutdown', vm)
    xd.call('VM.destroy', vm)
    return {'runs': runs, 'api_ms_p50': statistics.median(api),
            'ready_ms_p50': statistics.median(ready), 'agent_up_ms_p50': statistics.median(up),
            'agent_up_ms_p90': pct(up, 90)}


LIBVIRT_XML = """<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='microvm'>hvm</type>
    <kernel>{kernel}</kernel>
    <cmdline>console=ttyS0</cmdline>
  </os>
  <cpu mode='host-passthrough'><feature policy='disable' name='arch-capabilities'/></cpu>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <controller type='usb' model='none'/>
    <serial type='file'><source path='{serial}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def bench_libvirt(kernel, runs, tmp):
    virsh = shutil.which('virsh')
    if not virsh:
        return {'skipped': 'virsh not installed (--install-libvirt installs it)'}
    uri = ['-c', 'qemu:///system']
    name = 'nuvem-bench-%d' % os.getpid()
    # libvirt's qemu user must read the kernel and write the serial file
    d = tempfile.mkdtemp(prefix='nuvem-libvirt-', dir='/var/tmp')
    os.chmod(d, 0o777)
    k = os.path.join(d, 'miniguest.elf')
    shutil.copy(kernel, k)
    os.chmod(k, 0o644)
    serial = os.path.join(d, 'serial.log')
    xml = os.path.join(tmp, 'dom.xml')
    with open(xml, 'w') as f:
        f.write(LIBVIRT_XML.format(name=name, kernel=k, serial=serial))
    r = subprocess.run([virsh] + uri + ['define', xml], capture_output=True, text=True, timeout=60)
    if r.returncode:
        shutil.rmtree(d, ignore_errors=True)
        return {'skipped': 'virsh define failed: ' + (r.stderr or r.stdout).strip()[:300]}
    times = []
    try:
        for i in range(runs):
            try:
                os.unlink(serial)
            except OSError:
                pass
            t0 = time.perf_counter()
            r = subprocess.run([virsh] + uri + ['start', name], capture_output=True, text=True,
                               timeout=60)
            if r.returncode:
                return {'skipped': 'virsh start failed: ' + r.stderr.strip()[:300]}
            if not wait_for(lambda: serial_has(serial, b'ready'), 30):
                return {'skipped': 'the libvirt guest never printed ready'}
            times.append((time.perf_counter() - t0) * 1000)
            subprocess.run([virsh] + uri + ['destroy', name], capture_output=True, timeout=60)
    finally:
        subprocess.run([virsh] + uri + ['destroy', name], capture_output=True, timeout=60)
        subprocess.run([virsh] + uri + ['undefine', name], capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)
    return {'runs': runs, 'ready_ms_p50': statistics.median(times)}


QEMU_CONF_MARK = '# nuvem bench/vm: QEMU as root, no namespaces (/dev/kvm is root-only here)'


def setup_libvirt():
    """Debian's libvirt + QEMU, and daemons started by hand where systemd is not PID 1."""
    subprocess.run(['apt-get', 'install', '-y', '--no-install-recommends',
                    'libvirt-daemon-system', 'libvirt-clients', 'qemu-system-x86'], check=True)
    conf = '/etc/libvirt/qemu.conf'
    with open(conf) as f:
        text = f.read()
    if QEMU_CONF_MARK not in text and not os.stat('/dev/kvm').st_mode & 0o066:
        with open(conf, 'a') as f:
            f.write('\n%s\nuser = "root"\ngroup = "root"\nnamespaces = [ ]\n' % QEMU_CONF_MARK)
        log('%s: QEMU runs as root without a mount namespace (/dev/kvm is 0600 root)' % conf)
        try:  # restart it (by the PID in its pid file) to read the change
            with open('/run/libvirtd.pid') as f:
                os.kill(int(f.read().strip()), signal.SIGTERM)
            time.sleep(1)
        except (OSError, ValueError):
            pass
    for d in ('virtlogd', 'libvirtd'):
        if subprocess.run(['pgrep', '-x', d], capture_output=True).returncode:
            subprocess.run([d, '-d'], check=True)
    wait_for(lambda: subprocess.run(['virsh', '-c', 'qemu:///system', 'version'],
                                    capture_output=True).returncode == 0, 20, step=0.2)


def bench_density(xd, n, ksm=0):
    avail0 = meminfo('MemAvailable')
    t_inst = time.perf_counter()
    uuids = []
    for i in range(n):
        uuids.append(xd.xe('vm-install', 'template=Nuvem Mini Guest', 'new-name-label=d%d' % i))
    t0 = time.perf_counter()
    for u in uuids:
        xd.xe('vm-start', 'uuid=' + u)
    t_started = time.perf_counter()
    refs = [xd.call('VM.get_by_uuid', u) for u in uuids]

    def all_up():
        return all(xd.call('VM.get_guest_metrics', r) != 'OpaqueRef:NULL' for r in refs)
    if not wait_for(all_up, 120, step=0.05):
        raise RuntimeError('not every guest agent reported')
    t_up = time.perf_counter()
    time.sleep(2)
    pids = []
    for u in uuids:
        try:
            with open(os.path.join(xd.state, 'run', u + '.ctl'), 'rb'):
                pass
        except OSError:
            pass
    # the VMM pids, from their control sockets' greetings
    import socket
    for u in uuids:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(os.path.join(xd.state, 'run', u + '.ctl'))
        pids.append(json.loads(s.makefile().readline())['greeting']['pid'])
        s.close()
    total_pss = sum(pss(p) for p in pids)
    avail1 = meminfo('MemAvailable')
    try:
        with open('/sys/kernel/mm/ksm/pages_sharing') as f:
            sharing = int(f.read())
    except OSError:
        sharing = -1
    if ksm:
        # KSM on for a while (settings restored after): the shared pages, as the API shows them
        saved = {}
        for k, v in (('pages_to_scan', '4000'), ('sleep_millisecs', '20'), ('run', '1')):
            with open('/sys/kernel/mm/ksm/' + k) as f:
                saved[k] = f.read().strip()
            with open('/sys/kernel/mm/ksm/' + k, 'w') as f:
                f.write(v)
        try:
            time.sleep(ksm)
            avail_ksm = meminfo('MemAvailable')
            host = xd.call('host.get_all')[0]
            time.sleep(6)  # xapid samples KSM every 5 s
            api_sharing = int(xd.call('host.get_other_config', host).get('ksm_pages_sharing',
                                                                           '-1'))
            per_vm = [int(xd.call('VM_metrics.get_other_config',
                                  xd.call('VM.get_metrics', r)).get('pages_shared', '-1'))
                      for r in refs[:3]]
        finally:
            for k in ('run', 'pages_to_scan', 'sleep_millisecs'):
                with open('/sys/kernel/mm/ksm/' + k, 'w') as f:
                    f.write(saved[k])
    res = {'vms': n, 'install_s': t0 - t_inst, 'start_all_s': t_started - t0,
           'all_agents_up_s': t_up - t0, 'host_mem_used_mib': (avail0 - avail1) / MIB,
           'vmm_pss_total_mib': total_pss / MIB, 'vmm_pss_per_vm_mib': total_pss / MIB / n,
           'ksm_pages_sharing': sharing}
    if ksm:
        res.update({'ksm_seconds': ksm, 'host_mem_used_with_ksm_mib': (avail0 - avail_ksm) / MIB,
                    'api_host_ksm_pages_sharing': api_sharing,
                    'api_vm_pages_shared_first3': per_vm})
    for r in refs:
        xd.call('VM.hard_shutdown', r)
    for u in uuids:
        xd.xe('vm-uninstall', 'uuid=' + u, '--force')
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('build', help='build dir with xapid/xapid, cli/xe, hypervisor/nuvem-vmm')
    ap.add_argument('--runs', type=int, default=20)
    ap.add_argument('--density', type=int, default=60, help='VMs for the density run (0: skip)')
    ap.add_argument('--libvirt', action='store_true', help='also time virsh start (libvirt+QEMU)')
    ap.add_argument('--install-libvirt', action='store_true',
                    help='apt-get install libvirt-daemon-system and start libvirtd')
    ap.add_argument('--ksm', type=int, default=0, metavar='S',
                    help='density: then run KSM for S seconds and read the sharing via the API')
    ap.add_argument('--max-seconds', type=int, default=900)
    a = ap.parse_args()
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        log('no usable /dev/kvm')
        return 77

    def watchdog():
        log('watchdog: stopping after %d s' % a.max_seconds)
        os.kill(os.getpid(), signal.SIGTERM)
    wd = threading.Timer(a.max_seconds, watchdog)
    wd.daemon = True
    wd.start()
    if a.install_libvirt:
        setup_libvirt()
        a.libvirt = True
    tmp = tempfile.mkdtemp(prefix='nuvem-vm-bench-')
    xd = None
    out = {'bench': 'vm', 'load_start': os.getloadavg()[0]}
    try:
        xd = Xapid(a.build, tmp)
        out['start'] = bench_start(xd, a.runs)
        log('VM.start -> agent up p50 %.1f ms (ready %.1f ms, call %.1f ms)' % (
            out['start']['agent_up_ms_p50'], out['start']['ready_ms_p50'],
            out['start']['api_ms_p50']))
        if a.libvirt:
            out['libvirt'] = bench_libvirt(os.path.join(a.build, 'hypervisor',
                                                        'nuvem-miniguest.elf'), a.runs, tmp)
            lv = out['libvirt']
            if 'ready_ms_p50' in lv:
                out['ratio_ready_vs_libvirt'] = out['start']['ready_ms_p50'] / lv['ready_ms_p50']
                out['ratio_agent_up_vs_libvirt_ready'] = (out['start']['agent_up_ms_p50'] /
                                                          lv['ready_ms_p50'])
                log('virsh start -> ready p50 %.1f ms; ratio (ours ready / theirs) %.2f' % (
                    lv['ready_ms_p50'], out['ratio_ready_vs_libvirt']))
            else:
                log('libvirt: ' + lv.get('skipped', ''))
        if a.density:
            out['density'] = bench_density(xd, a.density, a.ksm)
            dn = out['density']
            log('%d VMs: all agents up %.1f s after the first vm-start; host memory used %.0f '
                'MiB (VMM PSS %.0f MiB, %.2f MiB/VM)' % (
                    dn['vms'], dn['all_agents_up_s'], dn['host_mem_used_mib'],
                    dn['vmm_pss_total_mib'], dn['vmm_pss_per_vm_mib']))
            if a.ksm:
                log('with KSM for %d s: host memory used %.0f MiB; API: host ksm_pages_sharing '
                    '%d, VM_metrics pages_shared %s' % (a.ksm, dn['host_mem_used_with_ksm_mib'],
                                                         dn['api_host_ksm_pages_sharing'],
                                                         dn['api_vm_pages_shared_first3']))
    finally:
        if xd:
            xd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out['load_end'] = os.getloadavg()[0]
    print(json.dumps(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
