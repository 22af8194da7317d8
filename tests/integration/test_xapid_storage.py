"""SR, PBD and VDI messages through the API with xmlrpc.client; qemu-io writes guest data and
qemu-img reads it back as the independent oracle where the files are standalone dynamic VHDs
(qemu cannot follow differencing chains)."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import xmlrpc.client
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, ok  # noqa: E402

NULL = 'OpaqueRef:NULL'
MiB = 1 << 20
QEMU = shutil.which('qemu-img') and shutil.which('qemu-io')


def err(r):
    assert r['Status'] == 'Failure', r
    return r['ErrorDescription']


def qemu_write(path, pattern, off, length):
    subprocess.run(['qemu-io', '-f', 'vpc', '-c', f'write -P {pattern} {off} {length}', path],
                   check=True, capture_output=True, timeout=60)


def qemu_raw(path, tmp):
    out = os.path.join(tmp, 'out.raw')
    subprocess.run(['qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', path, out], check=True,
                   capture_output=True, timeout=60)
    with open(out, 'rb') as f:
        return f.read()


class StorageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon().start()
        cls.s = cls.d.proxy()
        cls.sess = cls.d.login()
        cls.host = ok(cls.s.host.get_all(cls.sess))[0]
        cls.tmp = tempfile.mkdtemp(prefix='sr-test-')

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def new_sr(self, name):
        loc = os.path.join(self.tmp, name)
        ref = ok(self.s.SR.create(self.sess, self.host, {'location': loc}, 0, name, 'test SR',
                                  'file', '', False, {}))
        return ref, loc

    def new_vdi(self, sr, size, name='disk'):
        return ok(self.s.VDI.create(self.sess, {
            'name_label': name, 'name_description': '', 'SR': sr, 'virtual_size': str(size),
            'type': 'user', 'sharable': False, 'read_only': False, 'other_config': {}}))

    def vdi(self, ref):
        return ok(self.s.VDI.get_record(self.sess, ref))

    def test_supported_types_and_bad_create(self):
        s, sess = self.s, self.sess
        self.assertIn('file', ok(s.SR.get_supported_types(sess)))
        e = err(s.SR.create(sess, self.host, {}, 0, 'x', '', 'nfs-nope', '', False, {}))
        self.assertEqual(e, ['SR_UNKNOWN_DRIVER', 'nfs-nope'])
        busy = os.path.join(self.tmp, 'busy')
        os.makedirs(busy)
        open(os.path.join(busy, 'junk'), 'w').close()
        e = err(s.SR.create(sess, self.host, {'location': busy}, 0, 'x', '', 'file', '', False,
                            {}))
        self.assertEqual(e[:2], ['SR_BACKEND_FAILURE', 'SRExists'])
        self.assertEqual(err(s.SR.create(sess, NULL, {}, 0, 'x', '', 'file', '', False, {}))[0],
                         'HANDLE_INVALID')

    def test_default_sr(self):
        s, sess = self.s, self.sess
        pool = ok(s.pool.get_all(sess))[0]
        sr = ok(s.pool.get_default_SR(sess, pool))
        if sr == NULL:
            self.skipTest('bootstrap does not call xapid_storage_init yet')
        rec = ok(s.SR.get_record(sess, sr))
        self.assertEqual(rec['type'], 'file')
        pbd = ok(s.PBD.get_record(sess, rec['PBDs'][0]))
        self.assertTrue(pbd['currently_attached'])
        self.assertTrue(pbd['device_config']['location'].startswith(self.d.state))
        v = self.new_vdi(sr, 4 * MiB)
        ok(s.VDI.destroy(sess, v))

    def test_sr_lifecycle_and_accounting(self):
        s, sess = self.s, self.sess
        sr, loc = self.new_sr('life')
        rec = ok(s.SR.get_record(sess, sr))
        self.assertEqual((rec['type'], rec['content_type'], rec['shared']), ('file', 'user', False))
        self.assertGreater(int(rec['physical_size']), 0)
        self.assertEqual(rec['virtual_allocation'], '0')
        self.assertEqual(len(rec['PBDs']), 1)
        pbd = rec['PBDs'][0]
        self.assertTrue(ok(s.PBD.get_currently_attached(sess, pbd)))
        self.assertEqual(ok(s.PBD.get_device_config(sess, pbd))['location'], loc)

        v = self.new_vdi(sr, 3 * MiB)
        vr = self.vdi(v)
        self.assertEqual(vr['virtual_size'], str(4 * MiB))  # rounded up to 2 MiB
        self.assertEqual(vr['location'], vr['uuid'])
        self.assertTrue(vr['managed'])
        self.assertEqual(vr['sm_config'].get('vdi_type'), 'vhd')
        path = os.path.join(loc, vr['uuid'] + '.vhd')
        self.assertTrue(os.path.exists(path))
        self.assertEqual(int(vr['physical_utilisation']), os.path.getsize(path))
        self.assertEqual(ok(s.SR.get_virtual_allocation(sess, sr)), str(4 * MiB))
        self.assertEqual(ok(s.SR.get_VDIs(sess, sr)), [v])

        ok(s.VDI.set_name_label(sess, v, 'renamed'))
        self.assertEqual(ok(s.VDI.get_name_label(sess, v)), 'renamed')
        ok(s.SR.set_name_description(sess, sr, 'described'))
        self.assertEqual(ok(s.SR.get_name_description(sess, sr)), 'described')

        # resize: grow only
        self.assertEqual(err(s.VDI.resize(sess, v, str(2 * MiB)))[:2],
                         ['SR_BACKEND_FAILURE', 'VDISize'])
        ok(s.VDI.resize(sess, v, str(9 * MiB)))
        self.assertEqual(self.vdi(v)['virtual_size'], str(10 * MiB))
        self.assertEqual(ok(s.SR.get_virtual_allocation(sess, sr)), str(10 * MiB))
        self.assertEqual(err(s.VDI.resize(sess, v, '-1'))[0], 'INVALID_VALUE')

        # destroy and forget need unplugged PBDs; plugged SRs refuse both
        self.assertEqual(err(s.SR.destroy(sess, sr)), ['SR_HAS_PBD', sr])
        self.assertEqual(err(s.SR.forget(sess, sr)), ['SR_HAS_PBD', sr])
        self.assertEqual(err(s.PBD.destroy(sess, pbd))[0], 'OPERATION_NOT_ALLOWED')
        ok(s.PBD.unplug(sess, pbd))
        self.assertFalse(ok(s.PBD.get_currently_attached(sess, pbd)))
        self.assertEqual(err(s.VDI.resize(sess, v, str(20 * MiB))), ['SR_NOT_ATTACHED', sr])
        self.assertEqual(err(s.SR.scan(sess, sr)), ['SR_NOT_ATTACHED', sr])
        self.assertEqual(err(s.SR.destroy(sess, sr)), ['SR_NOT_EMPTY'])
        ok(s.PBD.plug(sess, pbd))
        ok(s.VDI.destroy(sess, v))
        self.assertFalse(os.path.exists(path))
        self.assertEqual(ok(s.SR.get_virtual_allocation(sess, sr)), '0')
        self.assertEqual(err(s.VDI.get_record(sess, v))[0], 'HANDLE_INVALID')
        ok(s.PBD.unplug(sess, pbd))
        ok(s.SR.destroy(sess, sr))
        self.assertFalse(os.path.exists(loc))
        self.assertEqual(err(s.SR.get_record(sess, sr))[0], 'HANDLE_INVALID')
        self.assertEqual(err(s.PBD.get_record(sess, pbd))[0], 'HANDLE_INVALID')

    def test_snapshot_clone_tree_and_gc(self):
        s, sess = self.s, self.sess
        sr, loc = self.new_sr('tree')
        a = self.new_vdi(sr, 8 * MiB, 'A')
        ua = self.vdi(a)['uuid']
        pa = os.path.join(loc, ua + '.vhd')
        if QEMU:
            qemu_write(pa, '0xab', 0, 65536)
            qemu_write(pa, '0xcd', 5 * MiB, 4096)
        snap = ok(s.VDI.snapshot(sess, a, {}))
        sr_rec = self.vdi(snap)
        self.assertTrue(sr_rec['is_a_snapshot'])
        self.assertEqual(sr_rec['snapshot_of'], a)
        self.assertEqual(sr_rec['name_label'], 'A')
        self.assertIn(snap, ok(s.VDI.get_snapshots(sess, a)))
        base_uuid = self.vdi(a)['sm_config']['vhd-parent']
        self.assertEqual(sr_rec['sm_config']['vhd-parent'], base_uuid)
        base = ok(s.VDI.get_by_uuid(sess, base_uuid))
        brec = self.vdi(base)
        self.assertFalse(brec['managed'])
        self.assertTrue(brec['read_only'])
        self.assertEqual(len(ok(s.SR.get_VDIs(sess, sr))), 3)
        # virtual_allocation counts visible VDIs only
        self.assertEqual(ok(s.SR.get_virtual_allocation(sess, sr)), str(16 * MiB))
        # the base copy belongs to the GC
        self.assertEqual(err(s.VDI.destroy(sess, base))[0], 'OPERATION_NOT_ALLOWED')
        self.assertEqual(err(s.VDI.snapshot(sess, base, {}))[0], 'OPERATION_NOT_ALLOWED')

        clone = ok(s.VDI.clone(sess, a, {}))
        self.assertFalse(self.vdi(clone)['is_a_snapshot'])
        self.assertEqual(len(ok(s.SR.get_VDIs(sess, sr))), 5)

        # a full copy (standalone dynamic VHD) into another SR
        sr2, loc2 = self.new_sr('tree-copy')
        cp = ok(s.VDI.copy(sess, a, sr2, NULL, NULL))
        cr = self.vdi(cp)
        self.assertEqual(cr['SR'], sr2)
        self.assertEqual(cr['virtual_size'], str(8 * MiB))
        self.assertNotIn('vhd-parent', cr['sm_config'])
        cp_same = ok(s.VDI.copy(sess, snap, NULL, NULL, NULL))
        self.assertEqual(self.vdi(cp_same)['SR'], sr)
        expect = bytearray(8 * MiB)
        if QEMU:
            expect[0:65536] = b'\xab' * 65536
            expect[5 * MiB:5 * MiB + 4096] = b'\xcd' * 4096
            self.assertEqual(qemu_raw(os.path.join(loc2, cr['uuid'] + '.vhd'), self.tmp), expect)

        # deleting the snapshots and the clone collapses the tree back to one file for A
        for v in (snap, clone):
            ok(s.VDI.destroy(sess, v))
        ok(s.SR.scan(sess, sr))  # collects now (the background collector may be quicker)
        vdis = ok(s.SR.get_VDIs(sess, sr))
        self.assertEqual(sorted(vdis), sorted([a, cp_same]))
        self.assertNotIn('vhd-parent', self.vdi(a)['sm_config'])
        files = sorted(f for f in os.listdir(loc) if f.endswith('.vhd'))
        self.assertEqual(files, sorted([ua + '.vhd', self.vdi(cp_same)['uuid'] + '.vhd']))
        if QEMU:
            self.assertEqual(qemu_raw(pa, self.tmp), expect)

    def test_scan_forget_introduce(self):
        s, sess = self.s, self.sess
        sr, loc = self.new_sr('scan')
        v = self.new_vdi(sr, 2 * MiB, 'kept')
        u = self.vdi(v)['uuid']
        ok(s.VDI.forget(sess, v))
        self.assertEqual(ok(s.SR.get_VDIs(sess, sr)), [])
        self.assertTrue(os.path.exists(os.path.join(loc, u + '.vhd')))
        ok(s.SR.scan(sess, sr))
        v2 = ok(s.VDI.get_by_uuid(sess, u))
        self.assertEqual(self.vdi(v2)['virtual_size'], str(2 * MiB))
        # a file that disappears behind our back is forgotten by the next scan
        v3 = self.new_vdi(sr, 2 * MiB, 'gone')
        os.unlink(os.path.join(loc, self.vdi(v3)['uuid'] + '.vhd'))
        ok(s.SR.scan(sess, sr))
        self.assertEqual(ok(s.SR.get_VDIs(sess, sr)), [v2])
        ok(s.VDI.forget(sess, v2))
        ok(s.VDI.introduce(sess, u, 'again', '', sr, 'user', False, False, {}, u, {}, {}, True,
                           '0', '0', NULL, False, '19700101T00:00:00Z', NULL))
        self.assertEqual(ok(s.VDI.get_name_label(sess, ok(s.VDI.get_by_uuid(sess, u)))), 'again')

        # forget the SR, then introduce it again with a PBD, plug and scan: the VDI is back
        sr_uuid = ok(s.SR.get_uuid(sess, sr))
        pbd = ok(s.SR.get_PBDs(sess, sr))[0]
        ok(s.PBD.unplug(sess, pbd))
        ok(s.SR.forget(sess, sr))
        self.assertEqual(err(s.VDI.get_by_uuid(sess, u))[0], 'UUID_INVALID')
        sr2 = ok(s.SR.introduce(sess, sr_uuid, 'back', '', 'file', 'user', False, {}))
        pbd2 = ok(s.PBD.create(sess, {'host': self.host, 'SR': sr2,
                                      'device_config': {'location': loc}, 'other_config': {}}))
        self.assertEqual(err(s.VDI.create(sess, {
            'SR': sr2, 'virtual_size': '1', 'type': 'user', 'sharable': False,
            'read_only': False, 'other_config': {}})), ['SR_NOT_ATTACHED', sr2])
        ok(s.PBD.plug(sess, pbd2))
        v4 = ok(s.VDI.get_by_uuid(sess, u))
        self.assertEqual(ok(s.VDI.get_SR(sess, v4)), sr2)

    def test_iso_sr(self):
        s, sess = self.s, self.sess
        lib = os.path.join(self.tmp, 'isos')
        os.makedirs(lib)
        data = bytes((i * 7) & 0xff for i in range(3 * MiB + 512))
        with open(os.path.join(lib, 'tools.iso'), 'wb') as f:
            f.write(data)
        with open(os.path.join(lib, 'readme.txt'), 'w') as f:
            f.write('not an image')
        sr = ok(s.SR.create(sess, self.host, {'location': lib}, 0, 'ISOs', '', 'iso', '',
                            False, {}))
        rec = ok(s.SR.get_record(sess, sr))
        self.assertEqual(rec['content_type'], 'iso')
        vdis = ok(s.SR.get_VDIs(sess, sr))
        self.assertEqual(len(vdis), 1)
        v = self.vdi(vdis[0])
        self.assertEqual((v['location'], v['name_label']), ('tools.iso', 'tools.iso'))
        self.assertTrue(v['read_only'])
        self.assertEqual(v['virtual_size'], str(len(data)))
        # a new file appears at the next scan
        with open(os.path.join(lib, 'second.iso'), 'wb') as f:
            f.write(b'\0' * 4096)
        ok(s.SR.scan(sess, sr))
        self.assertEqual(len(ok(s.SR.get_VDIs(sess, sr))), 2)
        # read-only: no new VDIs, no destroy, no snapshot
        self.assertEqual(err(s.VDI.create(sess, {
            'SR': sr, 'virtual_size': str(MiB), 'type': 'user', 'sharable': False,
            'read_only': False, 'other_config': {}})), ['SR_OPERATION_NOT_SUPPORTED', sr])
        self.assertEqual(err(s.VDI.destroy(sess, vdis[0])), ['SR_OPERATION_NOT_SUPPORTED', sr])
        self.assertEqual(err(s.VDI.snapshot(sess, vdis[0], {}))[0], 'SR_OPERATION_NOT_SUPPORTED')
        # copy into a file SR makes a disk of the ISO's bytes (rounded to 2 MiB)
        dst, dloc = self.new_sr('from-iso')
        cp = ok(s.VDI.copy(sess, vdis[0], dst, NULL, NULL))
        cr = self.vdi(cp)
        self.assertEqual(cr['virtual_size'], str(4 * MiB))
        self.assertFalse(cr['read_only'])
        if QEMU:
            raw = qemu_raw(os.path.join(dloc, cr['location'] + '.vhd'), self.tmp)
            self.assertEqual(raw, data + bytes(4 * MiB - len(data)))
        # destroying the SR keeps the library
        ok(s.PBD.unplug(sess, rec['PBDs'][0]))
        ok(s.SR.destroy(sess, sr))
        self.assertTrue(os.path.exists(os.path.join(lib, 'tools.iso')))

    def test_background_gc(self):
        s, sess = self.s, self.sess
        sr, loc = self.new_sr('bg-gc')
        a = self.new_vdi(sr, 4 * MiB, 'A')
        snap = ok(s.VDI.snapshot(sess, a, {}))
        self.assertEqual(len(ok(s.SR.get_VDIs(sess, sr))), 3)
        ok(s.VDI.destroy(sess, snap))
        # no scan: the collector merges A back into one file and drops the base copy's record
        deadline = time.time() + 20
        while time.time() < deadline:
            if ok(s.SR.get_VDIs(sess, sr)) == [a]:
                break
            time.sleep(0.05)
        self.assertEqual(ok(s.SR.get_VDIs(sess, sr)), [a])
        self.assertEqual([f for f in os.listdir(loc) if f.endswith('.vhd')],
                         [self.vdi(a)['uuid'] + '.vhd'])
        self.assertNotIn('vhd-parent', self.vdi(a)['sm_config'])

    def test_restart_reattaches(self):
        d = Daemon().start()
        try:
            s, sess = d.proxy(), d.login()
            host = ok(s.host.get_all(sess))[0]
            loc = os.path.join(d.tmp, 'sr')
            sr = ok(s.SR.create(sess, host, {'location': loc}, 0, 'r', '', 'file', '', False, {}))
            v = ok(s.VDI.create(sess, {'SR': sr, 'virtual_size': str(MiB), 'type': 'user',
                                       'sharable': False, 'read_only': False,
                                       'other_config': {}}))
            self.assertEqual(d.stop(), 0)
            d.start()
            s, sess = d.proxy(), d.login()
            ok(s.VDI.snapshot(sess, v, {}))
            self.assertEqual(len(ok(s.SR.get_VDIs(sess, sr))), 3)
        finally:
            d.cleanup()


    def test_shared_sr_probe_and_introduce(self):
        s, sess = self.s, self.sess
        export = os.path.join(self.tmp, 'export')
        os.makedirs(export)
        hosts = ok(s.host.get_all(sess))
        sr = ok(s.SR.create(sess, self.host, {'path': export}, 0, 'shared', '', 'shared', '',
                            True, {}))
        rec = ok(s.SR.get_record(sess, sr))
        self.assertTrue(rec['shared'])
        self.assertEqual(rec['content_type'], 'user')
        # one PBD per host, this host's plugged; the SR lives in <path>/<sr-uuid>
        pbds = [ok(s.PBD.get_record(sess, p)) for p in rec['PBDs']]
        self.assertEqual(sorted(p['host'] for p in pbds), sorted(hosts))
        mine = [p for p in pbds if p['host'] == self.host][0]
        self.assertTrue(mine['currently_attached'])
        self.assertEqual(mine['device_config'], {'path': export})
        self.assertTrue(os.path.isdir(os.path.join(export, rec['uuid'])))
        v = self.new_vdi(sr, 4 * MiB, 'on-shared')
        snap_uuid = self.vdi(ok(s.VDI.snapshot(sess, v, {})))['uuid']
        uuids = {self.vdi(x)['uuid'] for x in ok(s.SR.get_VDIs(sess, sr))}
        self.assertEqual(len(uuids), 3)  # with the base copy
        # probe lists the SRs under the path (a file SR's parent directory the same way)
        xml = ok(s.SR.probe(sess, self.host, {'path': export}, 'shared', {}))
        found = [e.text for e in ET.fromstring(xml).iter('UUID')]
        self.assertEqual(found, [rec['uuid']])
        self.assertEqual(ok(s.SR.probe(sess, self.host, {'location': export}, 'file', {})), xml)
        empty = ok(s.SR.probe(sess, self.host, {'path': self.tmp}, 'shared', {}))
        self.assertEqual([e.text for e in ET.fromstring(empty).iter('UUID')], [])
        self.assertEqual(err(s.SR.probe(sess, self.host, {}, 'shared', {}))[:2],
                         ['SR_BACKEND_FAILURE', 'ConfigPathMissing'])
        self.assertEqual(err(s.SR.probe(sess, self.host, {'path': export}, 'nope', {})),
                         ['SR_UNKNOWN_DRIVER', 'nope'])
        self.assertEqual(err(s.SR.probe(sess, NULL, {'path': export}, 'shared', {}))[0],
                         'HANDLE_INVALID')
        # shared <-> not shared (a PBD per host is needed for true, at most one for false)
        ok(s.SR.set_shared(sess, sr, False))
        self.assertFalse(ok(s.SR.get_shared(sess, sr)))
        ok(s.SR.set_shared(sess, sr, True))
        self.assertTrue(ok(s.SR.get_shared(sess, sr)))
        # forgotten, probed, introduced, plugged: the same VDIs are back
        for p in rec['PBDs']:
            ok(s.PBD.unplug(sess, p))
        ok(s.SR.forget(sess, sr))
        self.assertEqual(err(s.VDI.get_by_uuid(sess, snap_uuid))[0], 'UUID_INVALID')
        xml = ok(s.SR.probe(sess, self.host, {'path': export}, 'shared', {}))
        (sr_uuid,) = [e.text for e in ET.fromstring(xml).iter('UUID')]
        sr2 = ok(s.SR.introduce(sess, sr_uuid, 'back', '', 'shared', 'user', True, {}))
        for h in hosts:
            pbd = ok(s.PBD.create(sess, {'host': h, 'SR': sr2, 'device_config': {'path': export},
                                         'other_config': {}}))
            if h == self.host:
                ok(s.PBD.plug(sess, pbd))
        back = {self.vdi(x)['uuid'] for x in ok(s.SR.get_VDIs(sess, sr2))}
        self.assertEqual(back, uuids)
        snap = ok(s.VDI.get_by_uuid(sess, snap_uuid))
        self.assertEqual(ok(s.VDI.get_SR(sess, snap)), sr2)
        # destroy removes <path>/<sr-uuid> and nothing else
        for x in ok(s.SR.get_VDIs(sess, sr2)):
            r = s.VDI.get_managed(sess, x)  # base copies go as the collector runs
            if r['Status'] == 'Success' and r['Value']:
                ok(s.VDI.destroy(sess, x))
        for p in ok(s.SR.get_PBDs(sess, sr2)):
            if ok(s.PBD.get_currently_attached(sess, p)):
                ok(s.PBD.unplug(sess, p))
        ok(s.SR.destroy(sess, sr2))
        self.assertEqual(os.listdir(export), [])
        self.assertTrue(os.path.isdir(export))

    def test_file_sr_shared_flag(self):
        s, sess = self.s, self.sess
        loc = os.path.join(self.tmp, 'shared-file')
        sr = ok(s.SR.create(sess, self.host, {'location': loc}, 0, 'sf', '', 'file', '', True,
                            {}))
        self.assertTrue(ok(s.SR.get_shared(sess, sr)))
        pbds = ok(s.SR.get_PBDs(sess, sr))
        self.assertEqual(len(pbds), len(ok(s.host.get_all(sess))))
        self.assertEqual(ok(s.PBD.get_device_config(sess, pbds[0]))['location'], loc)
        self.assertTrue(ok(s.PBD.get_currently_attached(sess, pbds[0])))
        # a VDI on it works as on a local one
        v = self.new_vdi(sr, 2 * MiB)
        self.assertTrue(os.path.exists(os.path.join(loc, self.vdi(v)['uuid'] + '.vhd')))


if __name__ == '__main__':
    unittest.main(verbosity=2)
