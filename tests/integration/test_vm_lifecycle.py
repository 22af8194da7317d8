#!/usr/bin/env python3
"""VM lifecycle through the real xapid and nuvem-vmm with the bundled mini guest.

usage: test_vm_lifecycle.py CASE   (env XAPID, optional NUVEM_VMM / NUVEM_MINIGUEST)

Every case starts its own daemon on a temp state dir and stops every VM it started (by the
API, then by PID through the daemon's records if needed). Exits 77 without /dev/kvm."""
import json
import os
import signal
import socket
import sys
import time
import xmlrpc.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MiB = 1024 * 1024


def skip(why):
    print('SKIP: ' + why)
    sys.exit(77)


def need_kvm():
    try:
        fd = os.open('/dev/kvm', os.O_RDWR)
        os.close(fd)
    except OSError as e:
        skip('/dev/kvm not usable: %s' % e)


def extra_args():
    a = []
    if os.environ.get('NUVEM_VMM'):
        a += ['--vmm', os.environ['NUVEM_VMM']]
    if os.environ.get('NUVEM_MINIGUEST'):
        a += ['--miniguest', os.environ['NUVEM_MINIGUEST']]
    return a


class Ctx:
    def __init__(self, extra=()):
        self.d = harness.Daemon(extra=extra_args() + list(extra)).start()
        self.s = self.d.login()
        self.x = self.d.proxy()

    def call(self, method, *args):
        obj = self.x
        for part in method.split('.'):
            obj = getattr(obj, part)
        return obj(self.s, *args)

    def ok(self, method, *args):
        r = self.call(method, *args)
        assert r['Status'] == 'Success', (method, args, r)
        return r.get('Value')

    def fail(self, method, *args):
        r = self.call(method, *args)
        assert r['Status'] == 'Failure', (method, args, r)
        return r['ErrorDescription']

    def template(self, key='miniguest'):
        for ref, rec in self.ok('VM.get_all_records').items():
            if rec['is_a_template'] and rec['other_config'].get('nuvem-template') == key:
                return ref
        raise AssertionError('no template ' + key)

    def install(self, name, disks=False, **fields):
        """A VM from the mini guest template (no disks unless asked: the VHD backend is
        tested separately)."""
        t = self.template()
        vm = self.ok('VM.clone', t, name)
        self.ok('VM.set_is_a_template', vm, False)
        if not disks:
            self.ok('VM.remove_from_other_config', vm, 'disks')
        self.ok('VM.provision', vm)
        if os.environ.get('TMP_OLD_VMM'):
            self.ok('VM.set_VCPUs_max', vm, '1')
        for k, v in fields.items():
            self.ok('VM.set_' + k, vm, v)
        return vm

    def rec(self, vm):
        return self.ok('VM.get_record', vm)

    def power(self, vm):
        return self.ok('VM.get_power_state', vm)

    def wait_power(self, vm, want, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            if self.power(vm) == want:
                return
            time.sleep(0.05)
        raise AssertionError('%s did not become %s (is %s)' % (vm, want, self.power(vm)))

    def run_file(self, vm, ext):
        return os.path.join(self.d.state, 'run', '%s.%s' % (self.rec(vm)['uuid'], ext))

    def vmm_pid(self, vm):
        """The VMM's pid, from its greeting on the control socket."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.run_file(vm, 'ctl'))
        line = s.makefile().readline()
        s.close()
        return json.loads(line)['greeting']['pid']

    def serial(self, vm):
        try:
            with open(self.run_file(vm, 'serial'), errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def wait_serial(self, vm, text, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            if text in self.serial(vm):
                return
            time.sleep(0.05)
        raise AssertionError('serial of %s lacks %r:\n%s' % (vm, text, self.serial(vm)[-2000:]))

    def send_console(self, vm, line):
        """Sends a command line to the guest through its VMM control socket."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.run_file(vm, 'ctl'))
        f = s.makefile('rw')
        f.readline()
        f.write(json.dumps({'id': 1, 'execute': 'send-console',
                            'arguments': {'data': line + '\n'}}) + '\n')
        f.flush()
        while True:
            r = json.loads(f.readline())
            if r.get('id') == 1:
                break
        s.close()
        assert 'return' in r, r

    def cleanup(self):
        try:
            if self.d.proc:
                for ref, rec in self.ok('VM.get_all_records').items():
                    if rec['power_state'] in ('Running', 'Paused') and not rec['is_control_domain']:
                        self.call('VM.hard_shutdown', ref)
        except Exception as e:  # the daemon may be dead in a fault test
            print('cleanup: %s' % e)
        self.d.cleanup()


def case_cycle(c):
    """start, records, pause/unpause, clean shutdown, errors with XAPI's params."""
    vm = c.install('cycle')
    assert c.power(vm) == 'Halted'
    ops = c.rec(vm)['allowed_operations']
    assert 'start' in ops and 'clean_shutdown' not in ops, ops
    e = c.fail('VM.clean_shutdown', vm)
    assert e == ['VM_BAD_POWER_STATE', vm, 'running', 'halted'], e
    c.ok('VM.start', vm, False, False)
    r = c.rec(vm)
    assert r['power_state'] == 'Running' and int(r['domid']) > 0, r
    host = c.ok('host.get_all')[0]
    assert r['resident_on'] == host
    m = c.ok('VM_metrics.get_record', r['metrics'])
    assert int(m['VCPUs_number']) == 1 and int(m['memory_actual']) == 32 * MiB, m
    assert 'clean_shutdown' in r['allowed_operations'] and 'start' not in r['allowed_operations']
    assert r['consoles'], r
    con = c.ok('console.get_record', r['consoles'][0])
    assert con['protocol'] == 'vt100' and '/console?uuid=' in con['location'], con
    c.wait_serial(vm, 'ready')
    e = c.fail('VM.start', vm, False, False)
    assert e == ['VM_BAD_POWER_STATE', vm, 'halted', 'running'], e
    e = c.fail('VM.destroy', vm)
    assert e[0] == 'VM_BAD_POWER_STATE', e
    c.send_console(vm, 'echo lifecycle-ping')
    c.wait_serial(vm, 'lifecycle-ping')
    c.ok('VM.pause', vm)
    assert c.power(vm) == 'Paused'
    e = c.fail('VM.pause', vm)
    assert e == ['VM_BAD_POWER_STATE', vm, 'running', 'paused'], e
    c.ok('VM.unpause', vm)
    assert c.power(vm) == 'Running'
    # Async through a task, with the task's result
    task = c.ok('Async.VM.clean_shutdown', vm)
    end = time.time() + 60
    while c.ok('task.get_status', task) == 'pending' and time.time() < end:
        time.sleep(0.05)
    assert c.ok('task.get_status', task) == 'success', c.ok('task.get_record', task)
    r = c.rec(vm)
    assert r['power_state'] == 'Halted' and r['domid'] == '-1' and not r['consoles'], r
    assert r['resident_on'] == 'OpaqueRef:NULL' and r['current_operations'] == {}, r
    assert not os.path.exists(c.run_file(vm, 'ctl'))
    # templates refuse to start, unknown refs are HANDLE_INVALID
    e = c.fail('VM.start', c.template(), False, False)
    assert e[0] == 'VM_IS_TEMPLATE', e
    e = c.fail('VM.start', 'OpaqueRef:nope', False, False)
    assert e == ['HANDLE_INVALID', 'VM', 'OpaqueRef:nope'], e
    c.ok('VM.destroy', vm)


def case_reboot(c):
    """hard_reboot gives a new domid and a fresh boot; guest-initiated reboot and poweroff
    follow actions_after_reboot/shutdown."""
    vm = c.install('rb')
    c.ok('VM.start', vm, False, False)
    d1 = int(c.rec(vm)['domid'])
    c.wait_serial(vm, 'ready')
    c.ok('VM.hard_reboot', vm)
    d2 = int(c.rec(vm)['domid'])
    assert d2 != d1 and c.power(vm) == 'Running', (d1, d2)
    c.wait_serial(vm, 'ready')
    # the guest reboots itself: restart (new domid)
    c.send_console(vm, 'reboot')
    end = time.time() + 30
    while time.time() < end and int(c.rec(vm)['domid']) == d2:
        time.sleep(0.05)
    assert int(c.rec(vm)['domid']) not in (d1, d2) and c.power(vm) == 'Running'
    # the guest powers off: actions_after_shutdown=destroy -> Halted
    c.wait_serial(vm, 'ready')
    c.send_console(vm, 'poweroff')
    c.wait_power(vm, 'Halted')
    # reboot -> destroy
    c.ok('VM.set_actions_after_reboot', vm, 'destroy')
    c.ok('VM.start', vm, False, False)
    c.wait_serial(vm, 'ready')
    c.send_console(vm, 'reboot')
    c.wait_power(vm, 'Halted')


def case_crash(c):
    """A VMM killed under a running VM, and a guest crash: actions_after_crash applies."""
    vm = c.install('crash')
    c.ok('VM.set_actions_after_crash', vm, 'destroy')
    c.ok('VM.start', vm, False, False)
    c.wait_serial(vm, 'ready')
    os.kill(c.vmm_pid(vm), signal.SIGKILL)
    c.wait_power(vm, 'Halted')
    r = c.rec(vm)
    assert r['domid'] == '-1' and r['current_operations'] == {}, r
    c.ok('VM.set_actions_after_crash', vm, 'restart')
    c.ok('VM.start', vm, False, False)
    d1 = int(c.rec(vm)['domid'])
    c.wait_serial(vm, 'ready')
    c.send_console(vm, 'panic')
    end = time.time() + 30
    while time.time() < end and int(c.rec(vm)['domid']) == d1:
        time.sleep(0.05)
    assert c.power(vm) == 'Running' and int(c.rec(vm)['domid']) != d1
    c.ok('VM.hard_shutdown', vm)
    assert c.power(vm) == 'Halted'


def case_restart(c):
    """xapid killed with SIGKILL: running VMs keep running and are re-attached, halted ones
    stay halted, a VM whose VMM died meanwhile becomes Halted, nothing stays pending."""
    a = c.install('keep')
    b = c.install('dies')
    h = c.install('halted')
    c.ok('VM.start', a, False, False)
    c.ok('VM.start', b, True, False)
    assert c.power(b) == 'Paused'
    pa, pb = c.vmm_pid(a), c.vmm_pid(b)
    task = c.ok('Async.VM.start', h, False, False)
    c.d.stop(signal.SIGKILL)
    os.kill(pb, signal.SIGKILL)
    time.sleep(0.2)
    os.kill(pa, 0)  # still alive
    c.d.start()
    c.s = c.d.login()
    c.x = c.d.proxy()
    assert c.power(a) == 'Running' and c.vmm_pid(a) == pa
    assert c.power(b) == 'Halted'
    # h: its start was cut short or finished; either way the DB matches what runs
    ph = c.power(h)
    if ph == 'Running':
        c.vmm_pid(h)
    else:
        assert ph == 'Halted' and not os.path.exists(c.run_file(h, 'ctl')), ph
    st = c.call('task.get_status', task)
    assert st['Status'] == 'Failure' or st['Value'] != 'pending', st
    for ref, rec in c.ok('VM.get_all_records').items():
        assert rec['current_operations'] == {}, (ref, rec['current_operations'])
    # the re-attached VM is fully controllable
    c.send_console(a, 'echo after-restart')
    c.wait_serial(a, 'after-restart')
    c.ok('VM.clean_shutdown', a)
    assert c.power(a) == 'Halted'
    end = time.time() + 10
    while time.time() < end:
        try:
            os.kill(pa, 0)
            time.sleep(0.05)
        except ProcessLookupError:
            break
    else:
        raise AssertionError('VMM %d still running after shutdown' % pa)


def case_memory(c):
    """Memory and VCPU settings with XAPI's constraints; not enough host memory."""
    vm = c.install('mem')
    e = c.fail('VM.set_memory_limits', vm, str(64 * MiB), str(32 * MiB), str(32 * MiB),
               str(32 * MiB))
    assert e == ['MEMORY_CONSTRAINT_VIOLATION_ORDER'], e
    c.ok('VM.set_memory_limits', vm, str(16 * MiB), str(48 * MiB), str(24 * MiB), str(48 * MiB))
    r = c.rec(vm)
    assert (r['memory_static_min'], r['memory_static_max'], r['memory_dynamic_min'],
            r['memory_dynamic_max']) == (str(16 * MiB), str(48 * MiB), str(24 * MiB),
                                         str(48 * MiB)), r
    e = c.fail('VM.set_VCPUs_at_startup', vm, '9')
    assert e == ['INVALID_VALUE', 'VCPUs_at_startup', '9'], e
    c.ok('VM.set_VCPUs_max', vm, '2')
    c.ok('VM.set_VCPUs_at_startup', vm, '2')
    e = c.fail('VM.set_VCPUs_max', vm, '1')
    assert e[0] == 'INVALID_VALUE', e
    c.ok('VM.start', vm, False, False)
    c.wait_serial(vm, 'ready')
    e = c.fail('VM.set_memory_static_max', vm, str(64 * MiB))
    assert e == ['VM_BAD_POWER_STATE', vm, 'halted', 'running'], e
    e = c.fail('VM.set_VCPUs_max', vm, '4')
    assert e == ['VM_BAD_POWER_STATE', vm, 'halted', 'running'], e
    m = c.ok('VM_metrics.get_record', c.rec(vm)['metrics'])
    assert m['VCPUs_number'] == '2', m
    c.send_console(vm, 'cpus')
    c.wait_serial(vm, '2 online of 2')
    c.ok('VM.hard_shutdown', vm)
    # more than the host has
    big = c.install('big')
    total = int(c.ok('host_metrics.get_memory_total', c.ok('host.get_metrics',
                                                             c.ok('host.get_all')[0])))
    c.ok('VM.set_memory_limits', big, str(16 * MiB), str(total * 2), str(total * 2),
         str(total * 2))
    e = c.fail('VM.start', big, False, False)
    assert e[0] == 'HOST_NOT_ENOUGH_FREE_MEMORY' and int(e[1]) > int(e[2]), e
    assert c.power(big) == 'Halted' and c.rec(big)['current_operations'] == {}


def case_clone(c):
    """clone/copy/snapshot/revert of halted VMs with disks; destroy; provision errors."""
    sr = c.ok('pool.get_default_SR', c.ok('pool.get_all')[0])
    vm = c.install('orig', disks=True)
    vbds = c.rec(vm)['VBDs']
    assert len(vbds) == 1, vbds
    vdi = c.ok('VBD.get_VDI', vbds[0])
    assert c.ok('VDI.get_SR', vdi) == sr and int(c.ok('VDI.get_virtual_size', vdi)) == 64 * MiB
    assert 'disks' not in c.rec(vm)['other_config']
    vif = c.ok('VIF.create', {'VM': vm, 'network': c.ok('network.get_all')[0], 'device': '0',
                              'MAC': '', 'MTU': '1500', 'other_config': {},
                              'qos_algorithm_type': '', 'qos_algorithm_params': {}})
    cl = c.ok('VM.clone', vm, 'the-clone')
    cr = c.rec(cl)
    assert cr['name_label'] == 'the-clone' and len(cr['VBDs']) == 1 and len(cr['VIFs']) == 1
    assert c.ok('VBD.get_VDI', cr['VBDs'][0]) != vdi
    assert c.ok('VIF.get_MAC', cr['VIFs'][0]) != c.ok('VIF.get_MAC', vif)
    cp = c.ok('VM.copy', vm, 'the-copy', sr)
    assert len(c.rec(cp)['VBDs']) == 1
    snap = c.ok('VM.snapshot', vm, 'snap1')
    sr_ = c.rec(snap)
    assert sr_['is_a_snapshot'] and sr_['snapshot_of'] == vm and sr_['is_a_template'], sr_
    assert snap in c.rec(vm)['snapshots']
    c.ok('VM.set_memory_limits', vm, str(16 * MiB), str(40 * MiB), str(40 * MiB), str(40 * MiB))
    c.ok('VM.revert', snap)
    assert c.rec(vm)['memory_static_max'] == str(32 * MiB)
    assert c.ok('VBD.get_VDI', c.rec(vm)['VBDs'][0]) != vdi  # replaced by a clone of the snapshot
    # bad disks spec
    bad = c.ok('VM.clone', c.template(), 'bad')
    c.ok('VM.set_is_a_template', bad, False)
    c.ok('VM.add_to_other_config', bad, 'nuvem-x', '1')
    c.ok('VM.remove_from_other_config', bad, 'disks')
    c.ok('VM.add_to_other_config', bad, 'disks', '<provision><disk size="-1"/></provision>')
    e = c.fail('VM.provision', bad)
    assert e[0] == 'INVALID_VALUE', e
    for v in (cl, cp, bad):
        c.ok('VM.destroy', v)
    assert c.fail('VM.get_record', cl)[0] == 'HANDLE_INVALID'
    # VBD rules
    e = c.ok('VM.get_allowed_VBD_devices', vm)
    assert '0' not in e and '1' in e, e
    cur = c.ok('VBD.get_VDI', c.rec(vm)['VBDs'][0])
    e = c.fail('VBD.create', {'VM': vm, 'VDI': cur, 'userdevice': '0', 'bootable': False,
                              'mode': 'RW', 'type': 'Disk', 'unpluggable': True, 'empty': False,
                              'other_config': {}, 'qos_algorithm_type': '',
                              'qos_algorithm_params': {}})
    assert e == ['DEVICE_ALREADY_EXISTS', '0'], e


CASES = {k[5:]: v for k, v in globals().items() if k.startswith('case_')}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        print('usage: %s {%s}' % (sys.argv[0], '|'.join(CASES)))
        return 2
    need_kvm()
    c = Ctx()
    try:
        CASES[sys.argv[1]](c)
    except Exception:
        sys.stderr.write('--- xapid stderr (tail) ---\n' + c.d.stderr()[-6000:])
        raise
    finally:
        c.cleanup()
    print('ok')
    return 0


if __name__ == '__main__':
    sys.exit(main())
