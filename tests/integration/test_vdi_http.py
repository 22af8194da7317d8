"""PUT /import_raw_vdi and GET /export_raw_vdi against a real xapid: raw and vhd formats,
session_id= and Basic auth, task_id= progress and result, a broken upload leaving the VDI as it
was, and qemu-img as the oracle for the VHD export."""
import base64
import hashlib
import http.client
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import PASSWORD, Daemon, ok  # noqa: E402

MiB = 1 << 20
NULL = 'OpaqueRef:NULL'
SIZE = 8 * MiB


def pattern(seed, size=SIZE):
    """Data with zero holes and a partial block, so sparse paths are exercised."""
    rnd = random.Random(seed)
    out = bytearray(size)
    for off in range(0, size, MiB):
        if rnd.random() < 0.6:
            n = rnd.randrange(1, min(MiB, size - off) + 1)
            out[off:off + n] = rnd.randbytes(n)
    assert len(out) == size
    return bytes(out)


class VdiHttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # a read-only user, added while no daemon holds the DB
        cls.d = Daemon().start()
        cls.d.stop()
        pw = os.path.join(cls.d.tmp, 'reader')
        with open(pw, 'w') as f:
            f.write('pw-reader')
        subprocess.run([os.environ.get('XAPID', 'xapid'), '--state-dir', cls.d.state,
                        '--add-user', 'reader', '--role', 'read-only', '--user-password-file', pw,
                        '--password-iterations', '1000'], check=True, capture_output=True,
                       timeout=60)
        cls.d.start()
        cls.s = cls.d.proxy()
        cls.sess = cls.d.login()
        pool = ok(cls.s.pool.get_all(cls.sess))[0]
        cls.sr = ok(cls.s.pool.get_default_SR(cls.sess, pool))
        cls.tmp = tempfile.mkdtemp(prefix='vdi-http-')

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.d.stop()
            err = cls.d.stderr()
            assert rc == 0 and 'Sanitizer' not in err, (rc, err[-4000:])
        finally:
            cls.d.cleanup()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def new_vdi(self, size=SIZE):
        return ok(self.s.VDI.create(self.sess, {
            'name_label': 'http', 'name_description': '', 'SR': self.sr,
            'virtual_size': str(size), 'type': 'user', 'sharable': False, 'read_only': False,
            'other_config': {}}))

    def conn(self):
        return http.client.HTTPConnection('127.0.0.1', self.d.port, timeout=60)

    def path(self, action, vdi, fmt='raw', **extra):
        q = {'vdi': vdi, 'format': fmt}
        if 'session_id' not in extra:
            q['session_id'] = self.sess
        q.update({k: v for k, v in extra.items() if v is not None})
        return f'/{action}?' + urllib.parse.urlencode(q)

    def put(self, vdi, data, fmt='raw', headers=None, **extra):
        c = self.conn()
        c.request('PUT', self.path('import_raw_vdi', vdi, fmt, **extra), body=data,
                  headers=headers or {})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    def get(self, vdi, fmt='raw', headers=None, **extra):
        c = self.conn()
        c.request('GET', self.path('export_raw_vdi', vdi, fmt, **extra), headers=headers or {})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body

    def task_done(self, task):
        deadline = time.time() + 30
        while time.time() < deadline:
            rec = ok(self.s.task.get_record(self.sess, task))
            if rec['status'] != 'pending':
                return rec
            time.sleep(0.05)
        self.fail('task still pending')

    def test_raw_roundtrip(self):
        vdi = self.new_vdi()
        st, body = self.get(vdi)
        self.assertEqual(st, 200)
        self.assertEqual(body, bytes(SIZE))
        data = pattern(1)
        self.assertEqual(self.put(vdi, data), 200)
        st, body = self.get(vdi)
        self.assertEqual((st, body == data), (200, True))
        # by uuid, shorter than the disk (the rest is kept), a final partial sector padded
        uuid = ok(self.s.VDI.get_uuid(self.sess, vdi))
        head = pattern(2, 3 * MiB + 100)
        self.assertEqual(self.put(uuid, head), 200)
        st, body = self.get(uuid)
        expect = head + bytes(412) + data[3 * MiB + 512:]
        self.assertEqual((st, body == expect), (200, True))
        # zeros over data are written
        self.assertEqual(self.put(vdi, bytes(SIZE)), 200)
        self.assertEqual(self.get(vdi)[1], bytes(SIZE))

    def test_task_progress_and_result(self):
        vdi = self.new_vdi()
        task = ok(self.s.task.create(self.sess, 'import', ''))
        data = pattern(3)
        self.assertEqual(self.put(vdi, data, task_id=task), 200)
        rec = self.task_done(task)
        self.assertEqual(rec['status'], 'success')
        self.assertEqual(rec['progress'], 1.0)
        self.assertIn(vdi, rec['result'])
        task = ok(self.s.task.create(self.sess, 'export', ''))
        st, body = self.get(vdi, task_id=task)
        self.assertEqual((st, body == data), (200, True))
        self.assertEqual(self.task_done(task)['status'], 'success')
        # unknown VDI: 404 and the error in the task
        task = ok(self.s.task.create(self.sess, 'bad', ''))
        self.assertEqual(self.get('OpaqueRef:nope', task_id=task)[0], 404)
        rec = self.task_done(task)
        self.assertEqual((rec['status'], rec['error_info'][0]), ('failure', 'HANDLE_INVALID'))
        self.assertEqual(self.put('no-such-uuid', b''), 404)

    def test_auth(self):
        vdi = self.new_vdi()
        self.assertEqual(self.get(vdi, session_id='OpaqueRef:bogus')[0], 401)
        c = self.conn()
        c.request('GET', '/export_raw_vdi?' + urllib.parse.urlencode({'vdi': vdi}))
        r = c.getresponse()
        r.read()
        c.close()
        self.assertEqual(r.status, 401)
        bad = base64.b64encode(b'root:wrong').decode()
        st, _ = self.get(vdi, session_id=None, headers={'Authorization': 'Basic ' + bad})
        self.assertEqual(st, 401)
        good = {'Authorization': 'Basic ' + base64.b64encode(
            b'root:' + PASSWORD.encode()).decode()}
        data = pattern(4)
        c = self.conn()
        c.request('PUT', '/import_raw_vdi?' + urllib.parse.urlencode({'vdi': vdi}), body=data,
                  headers=good)
        r = c.getresponse()
        r.read()
        c.close()
        self.assertEqual(r.status, 200)
        c = self.conn()
        c.request('GET', '/export_raw_vdi?' + urllib.parse.urlencode({'vdi': vdi}),
                  headers=good)
        r = c.getresponse()
        body = r.read()
        c.close()
        self.assertEqual((r.status, body == data), (200, True))
        # read-only users may not (XAPI: vm-admin)
        rs = ok(self.s.session.login_with_password('reader', 'pw-reader', '2.21', 't'))
        self.assertEqual(self.get(vdi, session_id=rs)[0], 403)
        self.assertEqual(self.put(vdi, b'', session_id=rs), 403)
        ro = {'Authorization': 'Basic ' + base64.b64encode(b'reader:pw-reader').decode()}
        self.assertEqual(self.get(vdi, session_id=None, headers=ro)[0], 403)
        # wrong method, bad format
        c = self.conn()
        c.request('POST', self.path('export_raw_vdi', vdi))
        r = c.getresponse()
        r.read()
        c.close()
        self.assertEqual(r.status, 405)
        self.assertEqual(self.get(vdi, fmt='qcow9')[0], 400)

    def test_too_big(self):
        vdi = self.new_vdi(2 * MiB)
        self.assertEqual(self.put(vdi, bytes(2 * MiB)), 200)
        try:
            st = self.put(vdi, b'\1' * (2 * MiB + 512))
        except (BrokenPipeError, ConnectionResetError):
            st = 413
        self.assertEqual(st, 413)
        self.assertEqual(self.get(vdi)[1], bytes(2 * MiB))

    def test_broken_upload_keeps_old_data(self):
        vdi = self.new_vdi()
        old = pattern(5)
        self.assertEqual(self.put(vdi, old), 200)
        task = ok(self.s.task.create(self.sess, 'broken', ''))
        sock = socket.create_connection(('127.0.0.1', self.d.port), timeout=30)
        path = self.path('import_raw_vdi', vdi, task_id=task)
        sock.sendall(f'PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n'.encode())
        sock.sendall(pattern(6)[:5 * MiB + 123])
        time.sleep(0.3)
        sock.close()
        rec = self.task_done(task)
        self.assertEqual(rec['status'], 'failure')
        st, body = self.get(vdi)
        self.assertEqual((st, body == old), (200, True))
        # no temp files left next to the VDI, and the VDI still takes uploads
        new = pattern(7)
        self.assertEqual(self.put(vdi, new), 200)
        self.assertEqual(self.get(vdi)[1], new)
        sr_dir = os.path.dirname(self.leaf_path(vdi))
        self.assertEqual([f for f in os.listdir(sr_dir) if f.endswith('.tmp')], [])

    def test_one_import_at_a_time(self):
        vdi = self.new_vdi()
        data = pattern(11)
        sock = socket.create_connection(('127.0.0.1', self.d.port), timeout=30)
        path = self.path('import_raw_vdi', vdi)
        sock.sendall(f'PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n'.encode())
        sock.sendall(data[:MiB])
        time.sleep(0.3)
        self.assertEqual(self.put(vdi, b''), 409)
        self.assertEqual(self.get(vdi)[0], 409)
        sock.sendall(data[MiB:])
        f = sock.makefile('rb')
        self.assertIn(b' 200 ', f.readline())
        f.close()
        sock.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            st, body = self.get(vdi)
            if st != 409:
                break
            time.sleep(0.05)
        self.assertEqual((st, body == data), (200, True))

    def leaf_path(self, vdi):
        loc = ok(self.s.VDI.get_location(self.sess, vdi))
        for root, _, files in os.walk(self.d.state):
            if loc + '.vhd' in files:
                return os.path.join(root, loc + '.vhd')
        self.fail('no file for ' + loc)

    @unittest.skipUnless(shutil.which('qemu-img'), 'qemu-img not installed')
    def test_vhd_export_and_import(self):
        vdi = self.new_vdi()
        data = pattern(8)
        self.assertEqual(self.put(vdi, data), 200)
        # through a snapshot, so the leaf is a differencing disk
        ok(self.s.VDI.snapshot(self.sess, vdi, {}))
        part = pattern(9, 2 * MiB)
        self.assertEqual(self.put(vdi, part), 200)
        expect = part + data[2 * MiB:]
        st, body = self.get(vdi, fmt='vhd')
        self.assertEqual(st, 200)
        vhd = os.path.join(self.tmp, 'exp.vhd')
        raw = os.path.join(self.tmp, 'exp.raw')
        with open(vhd, 'wb') as f:
            f.write(body)
        subprocess.run(['qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', vhd, raw], check=True,
                       capture_output=True, timeout=60)
        with open(raw, 'rb') as f:
            self.assertEqual(f.read() == expect, True)
        # that VHD imported into a fresh VDI, and a qemu-made VHD too
        vdi2 = self.new_vdi()
        self.assertEqual(self.put(vdi2, body, fmt='vhd'), 200)
        self.assertEqual(self.get(vdi2)[1] == expect, True)
        src = os.path.join(self.tmp, 'src.raw')
        qvhd = os.path.join(self.tmp, 'q.vhd')
        other = pattern(10, 4 * MiB)
        with open(src, 'wb') as f:
            f.write(other)
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'vpc', src, qvhd], check=True,
                       capture_output=True, timeout=60)
        with open(qvhd, 'rb') as f:
            self.assertEqual(self.put(vdi2, f.read(), fmt='vhd'), 200)
        got = self.get(vdi2)[1]
        self.assertEqual(got[:4 * MiB] == other, True)
        self.assertEqual(self.put(vdi2, b'not a vhd' * 100, fmt='vhd'), 400)
        # a differencing VHD (the snapshotted VDI's own leaf) is refused: its parent locators
        # are never followed
        with open(self.leaf_path(vdi), 'rb') as f:
            self.assertEqual(self.put(vdi2, f.read(), fmt='vhd'), 400)
        self.assertEqual(self.get(vdi2)[1] == got, True)


    def file_sha(self, path):
        with open(path, 'rb') as f:
            return hashlib.sha256(f.read()).hexdigest()

    def wait_free(self, vdi):
        """Waits until a finished transfer has let go of the VDI (the server drops it just
        after the last byte went out): an empty import, which changes nothing, stops being
        refused with 409."""
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.put(vdi, b'') != 409:
                return
            time.sleep(0.02)
        self.fail('the VDI stayed busy')

    def cut_upload(self, vdi, body, fmt, sent):
        """Sends the first `sent` bytes of a PUT of body, then drops the connection; returns
        the task's final record."""
        self.wait_free(vdi)
        task = ok(self.s.task.create(self.sess, 'cut', ''))
        sock = socket.create_connection(('127.0.0.1', self.d.port), timeout=30)
        path = self.path('import_raw_vdi', vdi, fmt, task_id=task)
        sock.sendall(f'PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n'
                     .encode())
        sock.sendall(body[:sent])
        time.sleep(0.3)
        sock.close()
        return self.task_done(task)

    def test_cut_uploads_leave_the_vdi_byte_for_byte(self):
        """raw and vhd bodies cut at several points: the VDI's file and its data hash the same
        as before, and no staging file stays behind."""
        vdi = self.new_vdi()
        old = pattern(21)
        self.assertEqual(self.put(vdi, old), 200)
        self.wait_single_file(vdi)
        leaf = self.leaf_path(vdi)
        sr_dir = os.path.dirname(leaf)
        before = (self.file_sha(leaf), hashlib.sha256(self.get(vdi)[1]).hexdigest())
        # a VHD body made by our own export of other data
        other = self.new_vdi()
        self.assertEqual(self.put(other, pattern(22)), 200)
        st, vhd_body = self.get(other, fmt='vhd')
        self.assertEqual(st, 200)
        new = pattern(23)
        for fmt, body in (('raw', new), ('vhd', vhd_body)):
            for sent in (0, 4096, len(body) // 2, len(body) - 1):
                rec = self.cut_upload(vdi, body, fmt, sent)
                self.assertEqual(rec['status'], 'failure', (fmt, sent))
                after = (self.file_sha(self.leaf_path(vdi)),
                         hashlib.sha256(self.get(vdi)[1]).hexdigest())
                self.assertEqual(after, before, (fmt, sent))
                self.assertEqual([f for f in os.listdir(sr_dir) if f.startswith('.')
                                  and (f.endswith('.new') or f.endswith('.tmp'))], [],
                                 (fmt, sent))
        # and a complete one still goes through
        self.wait_free(vdi)
        self.assertEqual(self.put(vdi, vhd_body, fmt='vhd'), 200)
        self.assertEqual(self.get(vdi)[1], pattern(22))

    def wait_single_file(self, vdi):
        """After an import the old data is a base copy until the collector merges the VDI back
        into one file (it runs once the import detaches)."""
        sr = ok(self.s.VDI.get_SR(self.sess, vdi))
        deadline = time.time() + 30
        while time.time() < deadline:
            if ok(self.s.SR.get_VDIs(self.sess, sr)).count(vdi) == 1 and \
                    'vhd-parent' not in ok(self.s.VDI.get_sm_config(self.sess, vdi)):
                return
            time.sleep(0.05)
        self.fail('the imported VDI was not merged back into one file')

    def test_import_folds_back_into_one_file(self):
        vdi = self.new_vdi()
        self.assertEqual(self.put(vdi, pattern(24)), 200)
        self.wait_single_file(vdi)
        self.assertEqual(self.get(vdi)[1], pattern(24))
        loc = ok(self.s.VDI.get_location(self.sess, vdi))
        sr_dir = os.path.dirname(self.leaf_path(vdi))
        # no base copy left behind: the files of the SR are its VDIs' own
        locs = {ok(self.s.VDI.get_location(self.sess, v)) + '.vhd'
                for v in ok(self.s.SR.get_VDIs(self.sess, ok(self.s.VDI.get_SR(self.sess, vdi))))}
        self.assertIn(loc + '.vhd', locs)
        self.assertEqual(set(f for f in os.listdir(sr_dir) if f.endswith('.vhd')) - locs, set())

    def test_copy_into_existing_vdi(self):
        s, sess = self.s, self.sess
        src = self.new_vdi()
        data = pattern(31)
        self.assertEqual(self.put(src, data), 200)
        into = self.new_vdi()
        self.assertEqual(self.put(into, pattern(32)), 200)
        self.wait_free(into)
        self.wait_free(src)
        self.assertEqual(ok(s.VDI.copy(sess, src, NULL, NULL, into)), into)
        self.assertEqual(self.get(into)[1], data)
        # base_vdi: only the blocks changed since the base are copied
        base = ok(s.VDI.snapshot(sess, src, {}))
        part = pattern(33, 2 * MiB)
        self.wait_free(src)
        self.assertEqual(self.put(src, part), 200)
        marker = b'\x5a' * 512  # into's own change in a block the source did not change
        tail = bytearray(self.get(into)[1])
        tail[6 * MiB:6 * MiB + 512] = marker
        self.wait_free(into)
        self.assertEqual(self.put(into, bytes(tail)), 200)
        self.wait_free(into)
        self.wait_free(src)
        self.assertEqual(ok(s.VDI.copy(sess, src, NULL, base, into)), into)
        got = self.get(into)[1]
        self.assertEqual(got[:2 * MiB] == part, True)
        self.assertEqual(got[6 * MiB:6 * MiB + 512], marker)
        # XAPI's errors: too small, read-only
        small = self.new_vdi(4 * MiB)
        self.assertEqual(s.VDI.copy(sess, src, NULL, NULL, small)['ErrorDescription'],
                         ['VDI_TOO_SMALL', small, str(SIZE)])
        ro = self.new_vdi()
        ok(s.VDI.set_read_only(sess, ro, True))
        self.assertEqual(s.VDI.copy(sess, src, NULL, NULL, ro)['ErrorDescription'],
                         ['VDI_READONLY', ro])
        self.assertEqual(s.VDI.copy(sess, src, NULL, NULL, 'OpaqueRef:nope')['ErrorDescription'][0],
                         'HANDLE_INVALID')

if __name__ == '__main__':
    unittest.main(verbosity=2)
