"""The real xe's storage commands (sr-*, vdi-*, pbd-*) against the real xapid, checked through
xe and through XML-RPC: a file SR under a temp dir, VDI create/resize/snapshot/clone/copy/
destroy/forget, sr-scan/update, pbd-unplug/plug, XCP's size suffixes and errors. Exits 77 when
XAPID or XE is missing."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ok  # noqa: E402

XE = os.environ.get('XE')
UUID_RE = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
GiB = 1 << 30
MiB = 1 << 20
BOGUS = '00000000-0000-0000-0000-000000000000'


class XeStorageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon().start()
        cls.s = cls.d.proxy()
        cls.sess = cls.d.login()
        cls.tmp = tempfile.mkdtemp(prefix='xe-sr-test-')
        cls.home = os.path.join(cls.tmp, 'home')
        os.mkdir(cls.home)

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def xe_raw(self, *args):
        env = {k: v for k, v in os.environ.items() if k != 'XE_EXTRA_ARGS'}
        env['HOME'] = self.home
        p = subprocess.run([XE, '-s', '127.0.0.1', '-p', str(self.d.port), '-pw',
                            harness.PASSWORD] + list(args), capture_output=True, text=True,
                           timeout=120, env=env, stdin=subprocess.DEVNULL)
        self.assertGreaterEqual(p.returncode, 0, p.stderr)
        self.assertNotIn('Sanitizer', p.stderr)
        self.assertNotIn('runtime error', p.stderr)
        return p.returncode, p.stdout, p.stderr

    def xe(self, *args):
        rc, out, err = self.xe_raw(*args)
        self.assertEqual(rc, 0, f'xe {" ".join(args)}: {err}')
        self.assertEqual(err, '')
        return out

    def xe_uuid(self, *args):
        out = self.xe(*args)
        self.assertTrue(out.endswith('\n'), out)
        u = out[:-1]
        self.assertRegex(u, UUID_RE)
        return u

    def xe_fail(self, *args):
        rc, out, err = self.xe_raw(*args)
        self.assertEqual(rc, 1, f'xe {" ".join(args)}: {out} {err}')
        return out, err

    def get(self, cls, uuid):
        api = getattr(self.s, cls)
        ref = ok(api.get_by_uuid(self.sess, uuid))
        return ref, ok(api.get_record(self.sess, ref))

    def new_sr(self, name):
        loc = os.path.join(self.tmp, name)
        u = self.xe_uuid('sr-create', f'name-label={name}', 'type=file', 'content-type=user',
                         f'device-config:location={loc}', 'shared=false')
        return u, loc

    def pbd_of(self, sr_uuid):
        return self.xe('pbd-list', f'sr-uuid={sr_uuid}', '--minimal').strip()

    # ---- tests ----

    def test_sr_create(self):
        u, loc = self.new_sr('sr-a')
        ref, rec = self.get('SR', u)
        self.assertEqual(rec['name_label'], 'sr-a')
        self.assertEqual(rec['type'], 'file')
        self.assertEqual(rec['content_type'], 'user')
        self.assertFalse(rec['shared'])
        self.assertEqual(len(rec['PBDs']), 1)
        pbd = ok(self.s.PBD.get_record(self.sess, rec['PBDs'][0]))
        self.assertEqual(pbd['device_config'].get('location'), loc)
        self.assertTrue(pbd['currently_attached'])
        self.assertEqual(self.xe('sr-param-get', f'uuid={u}', 'param-name=name-label'), 'sr-a\n')
        # explicit host-uuid, and --minimal
        host = self.xe('host-list', '--minimal').strip()
        loc2 = os.path.join(self.tmp, 'sr-h')
        out = self.xe('sr-create', 'name-label=sr-h', 'type=file', f'host-uuid={host}',
                      f'device-config:location={loc2}', '--minimal')
        self.assertRegex(out.strip(), UUID_RE)
        self.assertEqual(self.xe('pbd-list', f'sr-uuid={out.strip()}', 'params=host-uuid',
                                 '--minimal').strip(), host)

    def test_sr_create_errors(self):
        _, err = self.xe_fail('sr-create', 'type=file')
        self.assertIn('name-label', err)
        _, err = self.xe_fail('sr-create', 'name-label=x', 'type=file', f'host-uuid={BOGUS}')
        self.assertIn(BOGUS, err)
        _, err = self.xe_fail('sr-create', 'name-label=x', 'type=file', 'shared=maybe')
        self.assertEqual(err, "Error: Failed to parse parameter 'shared': expecting 'true' or "
                              "'false'\n")

    def test_vdi_lifecycle(self):
        sr, _ = self.new_sr('sr-vdi')
        v = self.xe_uuid('vdi-create', f'sr-uuid={sr}', 'name-label=disk0', 'virtual-size=1GiB',
                         'type=user', 'sharable=false', 'read-only=false')
        ref, rec = self.get('VDI', v)
        self.assertEqual(int(rec['virtual_size']), GiB)
        self.assertEqual(rec['name_label'], 'disk0')
        self.assertEqual(rec['type'], 'user')
        self.assertFalse(rec['sharable'])
        self.assertFalse(rec['read_only'])
        self.assertEqual(ok(self.s.SR.get_uuid(self.sess, rec['SR'])), sr)
        self.assertEqual(self.xe('vdi-param-get', f'uuid={v}', 'param-name=virtual-size'),
                         f'{GiB}\n')
        # other suffixes
        for spec, size in (('512MiB', 512 * MiB), ('4m', 4 * MiB), ('1048576', MiB),
                           ('2 GiB', 2 * GiB), ('8KiB', 8192), ('1g', GiB)):
            u = self.xe_uuid('vdi-create', f'sr-uuid={sr}', f'name-label=s-{spec}',
                             f'virtual-size={spec}')
            got = int(self.get('VDI', u)[1]['virtual_size'])
            self.assertGreaterEqual(got, size, spec)
            self.assertLess(got, size + 4 * MiB, spec)
            self.xe('vdi-destroy', f'uuid={u}')
        # resize
        self.xe('vdi-resize', f'uuid={v}', 'disk-size=2GiB')
        self.assertEqual(int(self.get('VDI', v)[1]['virtual_size']), 2 * GiB)
        # snapshot
        snap = self.xe_uuid('vdi-snapshot', f'uuid={v}')
        srec = self.get('VDI', snap)[1]
        self.assertTrue(srec['is_a_snapshot'])
        self.assertEqual(srec['snapshot_of'], ref)
        self.assertEqual(self.xe('vdi-param-get', f'uuid={snap}', 'param-name=is-a-snapshot'),
                         'true\n')
        # clone with a new name
        cl = self.xe_uuid('vdi-clone', f'uuid={v}', 'new-name-label=the-clone',
                          'new-name-description=cloned')
        crec = self.get('VDI', cl)[1]
        self.assertEqual(crec['name_label'], 'the-clone')
        self.assertEqual(crec['name_description'], 'cloned')
        self.assertEqual(int(crec['virtual_size']), 2 * GiB)
        # copy into another SR
        sr2, _ = self.new_sr('sr-copy')
        cp = self.xe_uuid('vdi-copy', f'uuid={v}', f'sr-uuid={sr2}')
        cprec = self.get('VDI', cp)[1]
        self.assertEqual(ok(self.s.SR.get_uuid(self.sess, cprec['SR'])), sr2)
        self.assertEqual(int(cprec['virtual_size']), 2 * GiB)
        self.assertIn(cp, self.xe('vdi-list', f'sr-uuid={sr2}', '--minimal'))
        # destroy
        for u in (cp, cl, snap):
            self.xe('vdi-destroy', f'uuid={u}')
            r = self.s.VDI.get_by_uuid(self.sess, u)
            self.assertEqual(r['Status'], 'Failure')
        _, err = self.xe_fail('vdi-param-get', f'uuid={cp}', 'param-name=name-label')

    def test_vdi_create_options(self):
        sr, _ = self.new_sr('sr-opt')
        v = self.xe_uuid('vdi-create', f'sr-uuid={sr}', 'name-label=shared', 'virtual-size=4MiB',
                         'sharable=true', 'type=system', 'tags:=t1')
        rec = self.get('VDI', v)[1]
        self.assertTrue(rec['sharable'])
        self.assertEqual(rec['type'], 'system')
        self.assertEqual(rec['tags'], ['t1'])

    def test_size_errors(self):
        sr, _ = self.new_sr('sr-err')
        for bad in ('lots', '1XiB', '-1GiB', '', 'GiB'):
            _, err = self.xe_fail('vdi-create', f'sr-uuid={sr}', 'name-label=bad',
                                  f'virtual-size={bad}')
            self.assertEqual(err, "Error: Failed to parse field 'virtual-size': expecting an "
                                  "integer (possibly with suffix KiB, MiB, GiB, TiB), got "
                                  f"'{bad}'\n")
        v = self.xe_uuid('vdi-create', f'sr-uuid={sr}', 'name-label=ok', 'virtual-size=4MiB')
        _, err = self.xe_fail('vdi-resize', f'uuid={v}', 'disk-size=big')
        self.assertIn("Failed to parse field 'disk-size'", err)
        _, err = self.xe_fail('vdi-create', f'sr-uuid={sr}', 'name-label=t', 'virtual-size=1MiB',
                              'type=weird')
        self.assertEqual(err, 'Error: Unknown vdi type: weird\n')
        _, err = self.xe_fail('vdi-create', f'sr-uuid={sr}', 'name-label=t', 'virtual-size=1MiB',
                              'sharable=yes')
        self.assertIn("'sharable'", err)
        _, err = self.xe_fail('vdi-copy', f'uuid={v}')
        self.assertIn('Please specify one but not both of', err)
        _, err = self.xe_fail('vdi-copy', f'uuid={v}', f'sr-uuid={sr}', f'into-vdi-uuid={v}')
        self.assertIn('Please specify one but not both of', err)
        # into-vdi-uuid is passed on; a VDI is not copied into itself
        _, err = self.xe_fail('vdi-copy', f'uuid={v}', f'into-vdi-uuid={v}')
        self.assertNotEqual(err, '')
        # no VDI made by any failure
        names = self.xe('vdi-list', f'sr-uuid={sr}', 'params=name-label', '--minimal').strip()
        self.assertEqual(names, 'ok')

    def test_unknown_uuids(self):
        for args in (('sr-scan', f'uuid={BOGUS}'), ('sr-destroy', f'uuid={BOGUS}'),
                     ('sr-forget', f'uuid={BOGUS}'), ('sr-update', f'uuid={BOGUS}'),
                     ('vdi-destroy', f'uuid={BOGUS}'), ('vdi-forget', f'uuid={BOGUS}'),
                     ('vdi-snapshot', f'uuid={BOGUS}'), ('vdi-clone', f'uuid={BOGUS}'),
                     ('vdi-resize', f'uuid={BOGUS}', 'disk-size=1GiB'),
                     ('vdi-copy', f'uuid={BOGUS}', f'sr-uuid={BOGUS}'),
                     ('pbd-plug', f'uuid={BOGUS}'), ('pbd-unplug', f'uuid={BOGUS}'),
                     ('vdi-create', f'sr-uuid={BOGUS}', 'name-label=x', 'virtual-size=1')):
            out, err = self.xe_fail(*args)
            self.assertEqual(out, '')
            self.assertIn('uuid you supplied was invalid', err, args)
            self.assertIn(BOGUS, err, args)
        _, err = self.xe_fail('vdi-resize', f'uuid={BOGUS}')
        self.assertIn('disk-size', err)

    def test_scan_update_forget(self):
        sr, loc = self.new_sr('sr-scan')
        v = self.xe_uuid('vdi-create', f'sr-uuid={sr}', 'name-label=keep', 'virtual-size=4MiB')
        self.xe('sr-scan', f'uuid={sr}')
        self.xe('sr-update', f'uuid={sr}')
        self.assertIn(v, self.xe('vdi-list', f'sr-uuid={sr}', '--minimal'))
        # forget the VDI, a scan finds it back (with a new record)
        self.xe('vdi-forget', f'uuid={v}')
        self.assertEqual(self.s.VDI.get_by_uuid(self.sess, v)['Status'], 'Failure')
        self.xe('sr-scan', f'uuid={sr}')
        self.assertNotEqual(self.xe('vdi-list', f'sr-uuid={sr}', '--minimal').strip(), '')

    def test_pbd_unplug_plug_destroy(self):
        sr, loc = self.new_sr('sr-pbd')
        vdi = self.xe_uuid('vdi-create', f'sr-uuid={sr}', 'name-label=d', 'virtual-size=4MiB')
        pbd = self.pbd_of(sr)
        self.assertRegex(pbd, UUID_RE)
        self.xe('pbd-unplug', f'uuid={pbd}')
        self.assertFalse(self.get('PBD', pbd)[1]['currently_attached'])
        self.assertEqual(self.xe('pbd-param-get', f'uuid={pbd}', 'param-name=currently-attached'),
                         'false\n')
        # scanning an unplugged SR fails as the server says
        _, err = self.xe_fail('sr-scan', f'uuid={sr}')
        self.assertNotEqual(err, '')
        self.xe('pbd-plug', f'uuid={pbd}')
        self.assertTrue(self.get('PBD', pbd)[1]['currently_attached'])
        self.xe('sr-scan', f'uuid={sr}')
        # destroy needs an empty SR and its PBD unplugged
        self.xe('pbd-unplug', f'uuid={pbd}')
        _, err = self.xe_fail('sr-destroy', f'uuid={sr}')
        self.assertIn('SR is not empty', err)
        self.xe('pbd-plug', f'uuid={pbd}')
        self.xe('vdi-destroy', f'uuid={vdi}')
        _, err = self.xe_fail('sr-destroy', f'uuid={sr}')
        self.assertNotEqual(err, '')
        self.assertEqual(self.s.SR.get_by_uuid(self.sess, sr)['Status'], 'Success')
        self.xe('pbd-unplug', f'uuid={pbd}')
        self.xe('sr-destroy', f'uuid={sr}')
        self.assertEqual(self.s.SR.get_by_uuid(self.sess, sr)['Status'], 'Failure')
        self.assertEqual(self.s.PBD.get_by_uuid(self.sess, pbd)['Status'], 'Failure')

    def test_sr_forget(self):
        sr, loc = self.new_sr('sr-forget')
        pbd = self.pbd_of(sr)
        self.xe('pbd-unplug', f'uuid={pbd}')
        self.xe('sr-forget', f'uuid={sr}')
        self.assertEqual(self.s.SR.get_by_uuid(self.sess, sr)['Status'], 'Failure')
        self.assertTrue(os.path.isdir(loc))

    def test_probe_shared_and_copy_into(self):
        export = os.path.join(self.tmp, 'export')
        os.mkdir(export)
        u = self.xe_uuid('sr-create', 'name-label=sh', 'type=shared',
                         f'device-config:path={export}', 'shared=true')
        self.assertTrue(os.path.isdir(os.path.join(export, u)))
        out = self.xe('sr-probe', 'type=shared', f'device-config:path={export}')
        self.assertIn(f'<UUID>{u}</UUID>', out)
        self.assertTrue(out.startswith('<?xml'), out)
        _, err = self.xe_fail('sr-probe', 'type=shared')
        self.assertIn('ConfigPathMissing', err)
        self.xe('sr-param-set', f'uuid={u}', 'shared=false')
        self.assertEqual(self.xe('sr-param-get', f'uuid={u}', 'param-name=shared'), 'false\n')
        self.xe('sr-param-set', f'uuid={u}', 'shared=true')
        self.assertEqual(self.xe('sr-param-get', f'uuid={u}', 'param-name=shared'), 'true\n')
        a = self.xe_uuid('vdi-create', f'sr-uuid={u}', 'name-label=a', 'virtual-size=8MiB')
        b = self.xe_uuid('vdi-create', f'sr-uuid={u}', 'name-label=b', 'virtual-size=8MiB')
        small = self.xe_uuid('vdi-create', f'sr-uuid={u}', 'name-label=s', 'virtual-size=2MiB')
        self.assertEqual(self.xe_uuid('vdi-copy', f'uuid={a}', f'into-vdi-uuid={b}'), b)
        _, err = self.xe_fail('vdi-copy', f'uuid={a}', f'into-vdi-uuid={small}')
        self.assertIn('VDI is too small', err)

    def test_help_and_completion(self):
        out = self.xe('help', 'vdi-create')
        self.assertIn('sr-uuid, name-label, virtual-size', out)
        self.assertIn("Create a VDI. Type is 'system' 'user' 'suspend' or 'crashdump'.", out)
        out = self.xe('help', 'sr-create')
        self.assertIn('Create an SR, also a PBD.', out)
        all_cmds = self.xe('help', '--all', '--minimal').strip().split(',')
        for c in ('sr-create', 'sr-probe', 'sr-destroy', 'sr-forget', 'sr-scan', 'sr-update',
                  'vdi-create',
                  'vdi-destroy', 'vdi-resize', 'vdi-snapshot', 'vdi-clone', 'vdi-copy',
                  'vdi-forget', 'pbd-plug', 'pbd-unplug'):
            self.assertIn(c, all_cmds)
        p = subprocess.run([XE, '--bash-completion'], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0)
        for c in ('sr-create', 'vdi-create', 'vdi-copy', 'pbd-unplug'):
            self.assertIn(c, p.stdout)
        self.assertIn('vdi-create) params="sr-uuid= name-label= virtual-size= sm-config: '
                      'sharable= tags: type= read-only="', p.stdout)
        self.assertIn('vdi-clone) params="uuid= driver-params-= new-name-label= '
                      'new-name-description="', p.stdout)


if __name__ == '__main__':
    if not XE or not os.path.exists(XE) or not os.path.exists(harness.XAPID):
        print('XE or XAPID not set; skipping')
        sys.exit(77)
    unittest.main(verbosity=2)
