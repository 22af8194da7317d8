#!/usr/bin/env python3
"""VM lifecycle through the real xapid and nuvem-vmm with the bundled mini guest.

usage: test_vm_lifecycle.py CASE   (env XAPID, optional NUVEM_VMM / NUVEM_MINIGUEST)

Every case starts its own daemon on a temp state dir and stops every VM it started (by the
API, then by PID through the daemon's records if needed). Exits 77 without /dev/kvm."""
import json
import os
import re
import signal
import socket
import sys
import time
import xmlrpc.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MiB = 1024 * 1024


def need_kvm():
    try:
        fd = os.open('/dev/kvm', os.O_RDWR)
        os.close(fd)
    except OSError as e:
        harness.skip('/dev/kvm not usable: %s' % e)


class Ctx:
    def __init__(self, extra=()):
        self.d = harness.Daemon(extra=harness.vmm_args() + list(extra)).start()
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

    def finish(self):
        """Stops the daemon cleanly (VMs first) and fails on sanitizer reports in its log."""
        for ref, rec in self.ok('VM.get_all_records').items():
            if rec['power_state'] in ('Running', 'Paused') and not rec['is_control_domain']:
                self.ok('VM.hard_shutdown', ref)
        rc = self.d.stop()
        err = self.d.stderr()
        bad = [l for l in err.splitlines() if 'Sanitizer' in l or 'runtime error' in l]
        assert rc == 0 and not bad, (rc, bad[:5], err[-3000:])

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
    # kernels only from the kernel directories: no reading arbitrary host files
    c.ok('VM.set_PV_kernel', vm, '/etc/passwd')
    e = c.fail('VM.start', vm, False, False)
    assert e[0] == 'BOOTLOADER_FAILED' and 'outside' in e[2], e
    c.ok('VM.set_PV_kernel', vm, 'nuvem:debian/../../../etc/passwd')
    e = c.fail('VM.start', vm, False, False)
    assert e[0] == 'BOOTLOADER_FAILED', e
    assert c.power(vm) == 'Halted' and c.rec(vm)['current_operations'] == {}
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
    while time.time() < end and int(c.rec(vm)['domid']) in (d2, -1):
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
    while time.time() < end and int(c.rec(vm)['domid']) in (d1, -1):
        time.sleep(0.05)
    assert c.power(vm) == 'Running' and int(c.rec(vm)['domid']) != d1
    c.ok('VM.hard_shutdown', vm)
    assert c.power(vm) == 'Halted'
    # preserve: the crashed domain is kept (paused) for inspection until shut down
    c.ok('VM.set_actions_after_crash', vm, 'preserve')
    c.ok('VM.start', vm, False, False)
    c.wait_serial(vm, 'ready')
    pid = c.vmm_pid(vm)
    c.send_console(vm, 'panic')
    c.wait_power(vm, 'Paused')
    os.kill(pid, 0)
    allowed = c.rec(vm)['allowed_operations']
    assert 'hard_shutdown' in allowed and 'clean_shutdown' not in allowed, allowed
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


def case_restart_shutdown(c):
    """xapid killed in the middle of clean and hard shutdowns: after a restart each VM's power
    state matches whether its VMM still runs, and no operation is left claimed."""
    vms = [c.install('s%d' % i) for i in range(3)]
    for v in vms:
        c.ok('VM.start', v, False, False)
    for v in vms:
        c.wait_serial(v, 'ready')
    pids = [c.vmm_pid(v) for v in vms]
    c.ok('Async.VM.clean_shutdown', vms[0])
    c.ok('Async.VM.hard_shutdown', vms[1])
    time.sleep(0.01)
    c.d.stop(signal.SIGKILL)
    time.sleep(0.5)
    c.d.start()
    c.s = c.d.login()
    c.x = c.d.proxy()
    def alive(pid):
        try:
            with open('/proc/%d/stat' % pid) as f:
                return f.read().split()[2] != 'Z'
        except OSError:
            return False
    for v, pid in zip(vms, pids):
        # a request already sent may still complete (the monitor then records it): wait for
        # the two views to agree, bounded
        end = time.time() + 15
        while time.time() < end:
            ps, up = c.power(v), alive(pid)
            if ps == ('Running' if up else 'Halted'):
                break
            time.sleep(0.05)
        assert ps == ('Running' if up else 'Halted'), (v, ps, up)
        assert c.rec(v)['current_operations'] == {}, c.rec(v)['current_operations']
    assert c.power(vms[2]) == 'Running'
    c.ok('VM.hard_shutdown', vms[2])


def case_live(c):
    """The guest agent's report in VM_guest_metrics, vCPU hot-plug and the balloon seen from
    the guest, clean_reboot through the agent."""
    vm = c.install('live')
    c.ok('VM.start', vm, False, False)
    c.wait_serial(vm, 'ready')
    end = time.time() + 30
    while time.time() < end and c.rec(vm)['guest_metrics'] == 'OpaqueRef:NULL':
        time.sleep(0.05)
    gm = c.ok('VM_guest_metrics.get_record', c.rec(vm)['guest_metrics'])
    assert gm['os_version']['name'] == 'Nuvem Mini Guest' and gm['live'], gm
    assert int(gm['memory']['total']) > 16 * 1024 and gm['other']['vcpus-online'] == '1', gm
    metrics = c.rec(vm)['metrics']
    # vCPUs: up to VCPUs_max (4 in the template), seen by the guest
    e = c.fail('VM.set_VCPUs_number_live', vm, '5')
    assert e == ['INVALID_VALUE', 'nvcpu', '5'], e
    c.ok('VM.set_VCPUs_number_live', vm, '3')
    end = time.time() + 30
    while time.time() < end and c.ok('VM_metrics.get_VCPUs_number', metrics) != '3':
        time.sleep(0.05)
    assert c.ok('VM_metrics.get_VCPUs_number', metrics) == '3'
    assert c.rec(vm)['VCPUs_at_startup'] == '3'
    c.send_console(vm, 'cpus')
    c.wait_serial(vm, '3 online of 3, max 4')
    c.ok('VM.set_VCPUs_number_live', vm, '2')
    c.send_console(vm, 'cpus')
    c.wait_serial(vm, '2 online of 2, max 4')
    # memory: the balloon follows dynamic_max; the guest's agent reports less memory
    e = c.fail('VM.set_memory_dynamic_range', vm, str(24 * MiB), str(20 * MiB))
    assert e == ['MEMORY_CONSTRAINT_VIOLATION_ORDER'], e
    c.ok('VM.set_memory_dynamic_range', vm, str(16 * MiB), str(20 * MiB))
    end = time.time() + 30
    while time.time() < end and c.ok('VM_metrics.get_memory_actual', metrics) != str(20 * MiB):
        time.sleep(0.05)
    assert c.ok('VM_metrics.get_memory_actual', metrics) == str(20 * MiB)
    assert c.rec(vm)['memory_target'] == str(20 * MiB)
    end = time.time() + 30
    while time.time() < end:
        gm = c.ok('VM_guest_metrics.get_record', c.rec(vm)['guest_metrics'])
        if int(gm['memory']['total']) <= 21 * 1024:
            break
        time.sleep(0.05)
    assert int(gm['memory']['total']) <= 21 * 1024, gm['memory']
    c.ok('VM.set_memory_dynamic_range', vm, str(32 * MiB), str(32 * MiB))
    # clean reboot through the agent: a new domain, same settings
    d = int(c.rec(vm)['domid'])
    c.ok('VM.clean_reboot', vm)
    r = c.rec(vm)
    assert r['power_state'] == 'Running' and int(r['domid']) != d, r
    c.wait_serial(vm, 'cpus 2')
    c.ok('VM.clean_shutdown', vm)
    assert c.power(vm) == 'Halted' and c.rec(vm)['guest_metrics'] == 'OpaqueRef:NULL'


def case_hardcancel(c):
    """hard_shutdown while a clean_reboot waits for the guest: the hard shutdown wins (the VM
    ends Halted, the reboot fails) and the VM's disk is detached once (it starts again)."""
    import threading
    vm = c.install('hc', disks=True)
    c.ok('VM.start', vm, False, False)
    c.wait_serial(vm, 'ready')
    end = time.time() + 30
    while time.time() < end and c.rec(vm)['guest_metrics'] == 'OpaqueRef:NULL':
        time.sleep(0.05)
    assert c.rec(vm)['guest_metrics'] != 'OpaqueRef:NULL'  # clean_reboot needs the agent
    # the guest is busy (its command loop spins for long even on hardware), so the reboot
    # request waits; the newline it prints before running a command says the spin began
    n0 = len(c.serial(vm))
    c.send_console(vm, 'spin 100000000000')
    end = time.time() + 30
    while time.time() < end and '\n' not in c.serial(vm)[n0:]:
        time.sleep(0.02)
    assert '\n' in c.serial(vm)[n0:], c.serial(vm)[-500:]
    out = {}

    def reboot():
        out['r'] = c.d.proxy().VM.clean_reboot(c.s, vm)
    t = threading.Thread(target=reboot)
    t.start()
    end = time.time() + 10
    while time.time() < end and 'clean_reboot' not in c.rec(vm)['current_operations'].values():
        time.sleep(0.02)
    assert 'clean_reboot' in c.rec(vm)['current_operations'].values(), c.rec(vm)
    c.ok('VM.hard_shutdown', vm)
    t.join(60)
    assert not t.is_alive()
    assert out['r']['Status'] == 'Failure', out
    time.sleep(1)  # a reboot would have started by now
    assert c.power(vm) == 'Halted', c.rec(vm)
    # the disk was detached once: it attaches (and detaches) cleanly again
    c.ok('VM.start', vm, False, False)
    c.wait_serial(vm, 'ready')
    c.ok('VM.hard_shutdown', vm)


def case_suspend(c):
    """suspend into a suspend VDI and resume: the guest's ticker keeps counting from where it
    was (no new boot), the image VDI goes away after the resume."""
    vm = c.install('susp')
    c.ok('VM.start', vm, False, False)
    c.wait_serial(vm, 'ready')
    c.send_console(vm, 'ticker 100')
    c.wait_serial(vm, 'tick 5')
    boots = c.serial(vm).count('Nuvem mini guest')
    c.ok('VM.suspend', vm)
    r = c.rec(vm)
    assert r['power_state'] == 'Suspended' and r['domid'] == '-1', r
    vdi = r['suspend_VDI']
    v = c.ok('VDI.get_record', vdi)
    assert v['type'] == 'suspend' and int(v['other_config']['nuvem-suspend-bytes']) > 0, v
    assert int(v['other_config']['nuvem-suspend-bytes']) < 32 * MiB  # zero pages skipped
    ticks = len(re.findall(r'tick (\d+)', c.serial(vm)))
    e = c.fail('VM.start', vm, False, False)
    assert e == ['VM_BAD_POWER_STATE', vm, 'halted', 'suspended'], e
    c.ok('VM.resume', vm, False, False)
    assert c.power(vm) == 'Running'
    end = time.time() + 30
    while time.time() < end and len(re.findall(r'tick (\d+)', c.serial(vm))) < ticks + 5:
        time.sleep(0.05)
    nums = [int(n) for n in re.findall(r'tick (\d+)', c.serial(vm))]
    assert len(nums) >= ticks + 5 and nums == sorted(nums), nums[-20:]
    assert c.serial(vm).count('Nuvem mini guest') == boots  # continued, not rebooted
    assert c.rec(vm)['suspend_VDI'] == 'OpaqueRef:NULL'
    assert c.fail('VDI.get_record', vdi)[0] == 'HANDLE_INVALID'
    # suspended then shut down: the image is dropped
    c.ok('VM.suspend', vm)
    vdi = c.rec(vm)['suspend_VDI']
    c.ok('VM.hard_shutdown', vm)
    assert c.power(vm) == 'Halted' and c.fail('VDI.get_record', vdi)[0] == 'HANDLE_INVALID'
    # destroying a halted VM leaves alone a disk its suspend_VDI names (VM.create takes any)
    data = c.ok('VBD.get_VDI', c.rec(c.install('owner', disks=True))['VBDs'][0])
    rec = harness.vm_record('thief')
    rec['suspend_VDI'] = data
    thief = c.ok('VM.create', rec)
    c.ok('VM.destroy', thief)
    assert c.ok('VDI.get_record', data)['uuid']


def case_disks(c):
    """A VM with its template disk (a VHD on the local SR): the guest writes and reads it,
    VDI.resize_online grows it under the running guest, a second VM cannot take the same disk,
    the data survives a restart of the VM."""
    vm = c.install('disk', disks=True)
    vdi = c.ok('VBD.get_VDI', c.rec(vm)['VBDs'][0])
    c.ok('VM.start', vm, False, False)
    assert c.ok('VBD.get_currently_attached', c.rec(vm)['VBDs'][0])
    c.wait_serial(vm, 'ready')
    c.send_console(vm, 'blk info')
    c.wait_serial(vm, '131072')  # 64 MiB in sectors
    c.send_console(vm, 'blk write 100 nuvem-disk-data')
    c.send_console(vm, 'blk flush')
    c.send_console(vm, 'blk read 100')
    c.wait_serial(vm, 'nuvem-disk-data')
    # VDI in use: not destroyable, not resizable offline, not attachable by a second VM
    e = c.fail('VDI.destroy', vdi)
    assert e[0] == 'VDI_IN_USE', e
    other = c.install('other')
    c.ok('VBD.create', {'VM': other, 'VDI': vdi, 'userdevice': '0', 'bootable': True,
                        'mode': 'RW', 'type': 'Disk', 'unpluggable': True, 'empty': False,
                        'other_config': {}, 'qos_algorithm_type': '', 'qos_algorithm_params': {}})
    e = c.fail('VM.start', other, False, False)
    assert e[0] in ('VDI_IN_USE', 'SR_BACKEND_FAILURE', 'VM_FAILED_START'), e
    assert c.power(other) == 'Halted' and c.rec(other)['current_operations'] == {}
    # online resize: the guest sees the new capacity
    c.ok('VDI.resize_online', vdi, str(96 * MiB))
    c.wait_serial(vm, 'capacity 196608')
    assert c.ok('VDI.get_virtual_size', vdi) == str(96 * MiB)
    e = c.fail('VDI.resize_online', vdi, str(32 * MiB))
    assert e[0] in ('VDI_TOO_SMALL', 'INVALID_VALUE'), e
    c.ok('VM.hard_shutdown', vm)
    assert not c.ok('VBD.get_currently_attached', c.rec(vm)['VBDs'][0])
    c.ok('VM.start', vm, False, False)
    c.wait_serial(vm, 'ready')
    before = c.serial(vm).count('nuvem-disk-data')
    c.send_console(vm, 'blk read 100')
    end = time.time() + 20
    while time.time() < end and c.serial(vm).count('nuvem-disk-data') <= before:
        time.sleep(0.05)
    assert c.serial(vm).count('nuvem-disk-data') > before, c.serial(vm)[-1000:]
    c.ok('VM.hard_shutdown', vm)


def in_namespace():
    """Re-runs this case in a fresh network namespace (root), as test_xapid_network.py."""
    if os.environ.get('NUVEM_NET_NS') == str(os.getpid()):
        return
    if os.geteuid() != 0:
        harness.skip('needs root for a network namespace')
    import shutil
    for tool in ('unshare', 'ip'):
        if not shutil.which(tool):
            harness.skip(tool + ' is missing')
    script = 'ip link set lo up && NUVEM_NET_NS=$$ exec "$0" "$@"'
    os.execvp('unshare', ['unshare', '-n', 'sh', '-c', script, sys.executable,
                          os.path.abspath(__file__)] + sys.argv[1:])


def link(name):
    import subprocess
    r = subprocess.run(['ip', '-o', 'link', 'show', name], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def case_nics(c):
    """Two VMs on one internal network (in a namespace of the test's own): taps on the bridge
    while running, frames between the guests, NIC hot-plug refused cleanly, taps gone after."""
    net = c.ok('network.create', {'name_label': 'internal', 'name_description': '',
                                  'MTU': '1500', 'other_config': {}, 'tags': []})
    bridge = c.ok('network.get_bridge', net)
    vms, vifs = [], []
    for i in range(2):
        vm = c.install('n%d' % i)
        vifs.append(c.ok('VIF.create', {'VM': vm, 'network': net, 'device': '0', 'MAC': '',
                                        'MTU': '1500', 'other_config': {},
                                        'qos_algorithm_type': '', 'qos_algorithm_params': {}}))
        vms.append(vm)
        c.ok('VM.start', vm, False, False)
    for vm, vif in zip(vms, vifs):
        c.wait_serial(vm, 'ready')
        assert c.ok('VIF.get_currently_attached', vif)
        tap = 'vif%s.0' % c.rec(vm)['domid']
        l = link(tap)
        assert l and ('master ' + bridge) in l, (tap, l)
    mac0 = c.ok('VIF.get_MAC', vifs[0]).lower()
    c.send_console(vms[1], 'net recv 20000')
    time.sleep(0.5)
    c.send_console(vms[0], 'net send hello-over-the-bridge')
    c.wait_serial(vms[1], '"hello-over-the-bridge"')
    assert ('from ' + mac0) in c.serial(vms[1]).lower(), c.serial(vms[1])[-500:]
    # no NIC hot-plug in nuvem-vmm: refused, nothing changes
    extra = c.ok('VIF.create', {'VM': vms[0], 'network': net, 'device': '1', 'MAC': '',
                                'MTU': '1500', 'other_config': {}, 'qos_algorithm_type': '',
                                'qos_algorithm_params': {}})
    e = c.fail('VIF.plug', extra)
    assert e[0] == 'OPERATION_NOT_ALLOWED', e
    e = c.fail('VIF.unplug', vifs[0])
    assert e[0] == 'DEVICE_DETACH_REJECTED', e
    assert c.ok('VIF.get_currently_attached', vifs[0])
    e = c.fail('network.destroy', net)
    assert e[0] == 'NETWORK_CONTAINS_VIF', e
    taps = ['vif%s.0' % c.rec(v)['domid'] for v in vms]
    for vm in vms:
        c.ok('VM.hard_shutdown', vm)
    for t in taps:
        assert link(t) is None, t
    assert not any(c.ok('VIF.get_currently_attached', v) for v in vifs)


def case_jsonrpc(c):
    """The power cycle through JSON-RPC v2 at /jsonrpc."""
    import urllib.request

    def rpc(method, *params):
        body = json.dumps({'jsonrpc': '2.0', 'id': 1, 'method': method,
                           'params': [c.s] + list(params)}).encode()
        req = urllib.request.Request(c.d.url('/jsonrpc'), body,
                                     {'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=60) as f:
            return json.loads(f.read())
    vm = c.install('json')
    r = rpc('VM.start', vm, False, False)
    assert 'error' not in r and r['result'] in (None, ''), r
    assert rpc('VM.get_power_state', vm)['result'] == 'Running'
    r = rpc('VM.start', vm, False, False)
    assert r['error']['message'] == 'VM_BAD_POWER_STATE', r
    assert r['error']['data'] == [vm, 'halted', 'running'], r
    c.wait_serial(vm, 'ready')
    assert rpc('VM.clean_shutdown', vm).get('error') is None
    assert rpc('VM.get_power_state', vm)['result'] == 'Halted'


def case_debian(c):
    """The "Debian Linux" template boots Debian's kernel through the API as far as its banner
    (the whole boot needs hardware-speed KVM: kvm_pvm emulates guest ring 0)."""
    t = c.template('debian')
    kernel = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(harness.XAPID))),
                          '..', 'guest-image', 'vmlinux')
    if os.environ.get('NUVEM_GUEST_IMAGE_DIR'):
        kernel = os.path.join(os.environ['NUVEM_GUEST_IMAGE_DIR'], 'vmlinux')
    if not os.path.exists(kernel):
        harness.skip('no guest image (scripts/build-guest-image.sh): ' + kernel)
    vm = c.ok('VM.clone', t, 'deb')
    c.ok('VM.set_is_a_template', vm, False)
    c.ok('VM.remove_from_other_config', vm, 'disks')
    c.ok('VM.provision', vm)
    c.ok('VM.start', vm, False, False)
    c.wait_serial(vm, 'Linux version', timeout=240)
    assert c.power(vm) == 'Running'
    c.ok('VM.hard_shutdown', vm)


def in_mount_namespace():
    """Re-runs this case with a 256 KiB tmpfs at NUVEM_SR_DIR in a private mount namespace (root):
    the daemon started inside sees it, the host never does."""
    if os.environ.get('NUVEM_MNT_NS') == str(os.getppid()):  # the sh below is our parent
        return
    if os.geteuid() != 0:
        harness.skip('needs root for a mount namespace')
    import shutil
    if not shutil.which('unshare'):
        harness.skip('unshare is missing')
    script = ('d=$(mktemp -d) && mount -t tmpfs -o size=256k nuvem-sr "$d" && '
              'NUVEM_SR_DIR="$d" NUVEM_MNT_NS=$$ "$0" "$@"; rc=$?; umount "$d"; rmdir "$d"; '
              'exit $rc')
    os.execvp('unshare', ['unshare', '-m', '--propagation', 'private', 'sh', '-c', script,
                          sys.executable, os.path.abspath(__file__)] + sys.argv[1:])


def case_diskfull(c):
    """A running VM whose SR fills up: the guest's writes fail with an I/O error, the VM keeps
    running and answering, and it shuts down cleanly."""
    host = c.ok('host.get_all')[0]
    srdir = os.path.join(os.environ['NUVEM_SR_DIR'], 'sr')
    sr = c.ok('SR.create', host, {'location': srdir}, '0', 'small', '', 'file', '', False, {})
    vdi = c.ok('VDI.create', {'name_label': 'big', 'name_description': '', 'SR': sr,
                              'virtual_size': str(64 * MiB), 'type': 'user', 'sharable': False,
                              'read_only': False, 'other_config': {}, 'xenstore_data': {},
                              'sm_config': {}, 'tags': []})
    vm = c.install('full')
    c.ok('VBD.create', {'VM': vm, 'VDI': vdi, 'userdevice': '0', 'bootable': True, 'mode': 'RW',
                        'type': 'Disk', 'unpluggable': True, 'empty': False, 'other_config': {},
                        'qos_algorithm_type': '', 'qos_algorithm_params': {}})
    c.ok('VM.start', vm, False, False)
    c.wait_serial(vm, 'ready')
    pid = c.vmm_pid(vm)
    # 128 KiB at a time into a 256 KiB file system (small: the guest's ring 0 is emulated
    # here, so each fill takes a second or so)
    for i in range(4):
        c.send_console(vm, 'blk fill %d 256 f%d' % (i * 256, i))
        c.wait_serial(vm, 'blk fill %d:' % (i * 256), timeout=60)
        if re.search(r'blk fill \d+: error', c.serial(vm)):
            break
    try:
        c.wait_serial(vm, ': error', timeout=5)
    except AssertionError:
        with open(c.run_file(vm, 'log')) as f:
            print('VMM log:', f.read()[-3000:])
        os.system('df -k %s; ls -la %s' % (srdir, srdir))
        sk = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sk.settimeout(5)
        sk.connect(c.run_file(vm, 'ctl'))
        f = sk.makefile('rw')
        f.readline()
        f.write(json.dumps({'id': 7, 'execute': 'stats'}) + '\n')
        f.flush()
        for _ in range(20):
            r = json.loads(f.readline())
            if r.get('id') == 7:
                print('disks', r['return']['disks'], 'vcpus', r['return']['vcpus'])
                break
        raise
    assert c.power(vm) == 'Running'
    os.kill(pid, 0)
    c.send_console(vm, 'echo still-here')
    c.wait_serial(vm, 'still-here')
    c.ok('VM.hard_shutdown', vm)
    assert c.power(vm) == 'Halted'


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


def case_placement(c):
    """Concurrent starts cannot share the same free memory: with 100 MiB for VMs
    (--vm-memory-limit), three 32 MiB VMs (+4 MiB overhead each) started at once: two run, the
    third gets HOST_NOT_ENOUGH_FREE_MEMORY; once one stops, it starts."""
    vms = [c.install('p%d' % i) for i in range(3)]
    tasks = [c.ok('Async.VM.start', v, False, False) for v in vms]
    end = time.time() + 60
    while time.time() < end and any(c.ok('task.get_status', t) == 'pending' for t in tasks):
        time.sleep(0.05)
    st = [c.ok('task.get_record', t) for t in tasks]
    ok_ = [r for r in st if r['status'] == 'success']
    bad = [r for r in st if r['status'] == 'failure']
    assert len(ok_) == 2 and len(bad) == 1, st
    assert bad[0]['error_info'][0] == 'HOST_NOT_ENOUGH_FREE_MEMORY', bad[0]
    assert int(bad[0]['error_info'][1]) == 36 * MiB, bad[0]
    assert int(bad[0]['error_info'][2]) < 36 * MiB, bad[0]
    host = c.ok('host.get_all')[0]
    assert int(c.ok('host.compute_free_memory', host)) == 100 * MiB - 72 * MiB
    halted = [v for v in vms if c.power(v) == 'Halted']
    running = [v for v in vms if c.power(v) == 'Running']
    assert len(halted) == 1 and len(running) == 2
    c.ok('VM.hard_shutdown', running[0])
    c.ok('VM.start', halted[0], False, False)
    assert c.power(halted[0]) == 'Running'


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
    if sys.argv[1] == 'nics':
        in_namespace()
    if sys.argv[1] == 'diskfull':
        in_mount_namespace()
    extra = []
    if sys.argv[1] == 'placement':
        extra = ['--vm-memory-limit', str(100 * MiB)]
    if os.environ.get('NUVEM_GUEST_IMAGE_DIR'):
        extra += ['--guest-image-dir', os.environ['NUVEM_GUEST_IMAGE_DIR']]
    c = Ctx(extra)
    try:
        CASES[sys.argv[1]](c)
        c.finish()
    except Exception:
        sys.stderr.write('--- xapid stderr (tail) ---\n' + c.d.stderr()[-6000:])
        raise
    finally:
        c.cleanup()
    print('ok')
    return 0


if __name__ == '__main__':
    sys.exit(main())
