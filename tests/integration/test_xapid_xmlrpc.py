"""xapid driven by Python's standard xmlrpc.client, as an unmodified XenAPI client would."""
import http.client
import os
import signal
import sys
import threading
import time
import unittest
import warnings
import xmlrpc.client

sys.path.insert(0, os.path.dirname(__file__))
from harness import PASSWORD, Daemon, ok, vm_record  # noqa: E402


class XmlRpcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon().start()
        cls.s = cls.d.proxy()
        cls.sess = cls.d.login()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def test_login_variants_and_logout(self):
        s = self.s
        for args in [('root', PASSWORD), ('root', PASSWORD, '1.0'),
                     ('root', PASSWORD, '2.21', 'tests')]:
            ref = ok(s.session.login_with_password(*args))
            self.assertTrue(ref.startswith('OpaqueRef:'))
            rec = ok(s.session.get_record(ref, ref))
            self.assertTrue(rec['is_local_superuser'])
            self.assertEqual(rec['auth_user_name'], 'root')
            ok(s.session.logout(ref))
            r = s.session.get_record(ref, ref)
            self.assertEqual(r['ErrorDescription'], ['SESSION_INVALID', ref])
        r = s.session.login_with_password('root', 'wrong', '2.21', 'x')
        self.assertEqual(r['ErrorDescription'][0], 'SESSION_AUTHENTICATION_FAILED')
        r = s.session.login_with_password('root')
        self.assertEqual(r['ErrorDescription'],
                         ['MESSAGE_PARAMETER_COUNT_MISMATCH', 'session.login_with_password', '2', '1'])

    def test_first_start_objects(self):
        s, sess = self.s, self.sess
        pools = ok(s.pool.get_all_records(sess))
        self.assertEqual(len(pools), 1)
        hosts = ok(s.host.get_all_records(sess))
        self.assertEqual(len(hosts), 1)
        href, host = next(iter(hosts.items()))
        self.assertEqual(next(iter(pools.values()))['master'], href)
        self.assertTrue(host['enabled'])
        self.assertGreater(len(host['host_CPUs']), 0)  # derived from host_cpu.host
        m = ok(s.host_metrics.get_record(sess, host['metrics']))
        self.assertGreater(int(m['memory_total']), 0)
        pifs = ok(s.PIF.get_all_records(sess))
        self.assertTrue(any(p['management'] and p['host'] == href for p in pifs.values()))
        self.assertEqual(host['PIFs'], list(pifs.keys()))
        roles = ok(s.role.get_all_records(sess))
        self.assertEqual(sorted(r['name_label'] for r in roles.values()),
                         sorted(['read-only', 'vm-operator', 'vm-admin', 'vm-power-admin',
                                 'pool-operator', 'pool-admin']))

    def test_set_get_and_maps(self):
        s, sess = self.s, self.sess
        vm = ok(s.VM.create(sess, vm_record('setget')))
        ok(s.VM.set_name_label(sess, vm, 'renamed'))
        self.assertEqual(ok(s.VM.get_name_label(sess, vm)), 'renamed')
        self.assertEqual(ok(s.VM.get_power_state(sess, vm)), 'Halted')
        self.assertEqual(ok(s.VM.get_memory_static_max(sess, vm)), '268435456')  # int64 as string
        ok(s.VM.add_to_other_config(sess, vm, 'k', 'v'))
        uuid = ok(s.VM.get_uuid(sess, vm))
        r = s.VM.add_to_other_config(sess, vm, 'k', 'v2')
        self.assertEqual(r['ErrorDescription'], ['MAP_DUPLICATE_KEY', 'VM', 'other_config', uuid, 'k'])
        ok(s.VM.remove_from_other_config(sess, vm, 'k'))
        ok(s.VM.remove_from_other_config(sess, vm, 'missing'))
        ok(s.VM.add_tags(sess, vm, 't1'))
        ok(s.VM.add_tags(sess, vm, 't1'))
        self.assertEqual(ok(s.VM.get_tags(sess, vm)), ['t1'])
        ok(s.VM.remove_tags(sess, vm, 't1'))
        self.assertEqual(ok(s.VM.get_by_uuid(sess, uuid)), vm)
        self.assertIn(vm, ok(s.VM.get_by_name_label(sess, 'renamed')))
        where = ok(s.VM.get_all_records_where(sess, 'field "name__label" = "renamed"'))
        self.assertEqual(list(where.keys()), [vm])
        where = ok(s.VM.get_all_records_where(sess, 'field "is_a_template" = "false" and not '
                                                    'field "name__label" = "nope"'))
        self.assertIn(vm, where)
        r = s.VM.get_all_records_where(sess, 'field "name__label" =')
        self.assertEqual(r['ErrorDescription'][0], 'INVALID_VALUE')
        ok(s.VM.destroy(sess, vm))

    def test_errors(self):
        s, sess = self.s, self.sess
        self.assertEqual(s.VM.get_record(sess, 'OpaqueRef:nope')['ErrorDescription'],
                         ['HANDLE_INVALID', 'VM', 'OpaqueRef:nope'])
        self.assertEqual(s.VM.get_by_uuid(sess, 'nope')['ErrorDescription'],
                         ['UUID_INVALID', 'VM', 'nope'])
        self.assertEqual(s.VM.frobnicate(sess)['ErrorDescription'],
                         ['MESSAGE_METHOD_UNKNOWN', 'VM.frobnicate'])
        self.assertEqual(s.VM.get_record(sess)['ErrorDescription'],
                         ['MESSAGE_PARAMETER_COUNT_MISMATCH', 'VM.get_record', '1', '0'])
        self.assertEqual(s.VM.get_record('OpaqueRef:bad', 'x')['ErrorDescription'],
                         ['SESSION_INVALID', 'OpaqueRef:bad'])
        vm = ok(s.VM.create(sess, vm_record('errs')))
        self.assertEqual(s.VM.set_name_label(sess, vm, 12)['ErrorDescription'],
                         ['FIELD_TYPE_ERROR', 'value'])
        r = s.VM.set_actions_after_crash(sess, vm, 'explode')
        self.assertEqual(r['ErrorDescription'][0], 'INVALID_VALUE')
        r = s.VM.set_power_state(sess, vm, 'Running')
        self.assertEqual(r['ErrorDescription'][0], 'MESSAGE_METHOD_UNKNOWN')
        r = s.VM.set_affinity(sess, vm, 'OpaqueRef:nohost')
        self.assertEqual(r['ErrorDescription'], ['HANDLE_INVALID', 'host', 'OpaqueRef:nohost'])
        rec = vm_record('x')
        del rec['memory_static_max']
        self.assertEqual(s.VM.create(sess, rec)['ErrorDescription'],
                         ['FIELD_TYPE_ERROR', 'memory_static_max'])
        host = ok(s.host.get_all(sess))[0]
        self.assertEqual(s.host.destroy(sess, host)['ErrorDescription'][0], 'OPERATION_NOT_ALLOWED')
        r = getattr(s, 'Async').VM.get_record(sess, vm)
        self.assertEqual(r['ErrorDescription'][0], 'Fault')
        ok(s.VM.destroy(sess, vm))

    def test_async_task_to_completion(self):
        s, sess = self.s, self.sess
        task = ok(s.Async.VM.create(sess, vm_record('async')))
        self.assertTrue(task.startswith('OpaqueRef:'))
        deadline = time.time() + 10
        while ok(s.task.get_status(sess, task)) == 'pending' and time.time() < deadline:
            time.sleep(0.02)
        rec = ok(s.task.get_record(sess, task))
        self.assertEqual(rec['status'], 'success')
        self.assertEqual(rec['progress'], 1.0)
        vm = xmlrpc.client.loads('<params><param>' + rec['result'] + '</param></params>')[0][0]
        self.assertEqual(ok(s.VM.get_name_label(sess, vm)), 'async')
        # a failing task records the error
        task = ok(s.Async.VM.destroy(sess, 'OpaqueRef:gone'))
        while ok(s.task.get_status(sess, task)) == 'pending' and time.time() < deadline:
            time.sleep(0.02)
        rec = ok(s.task.get_record(sess, task))
        self.assertEqual(rec['status'], 'failure')
        self.assertEqual(rec['error_info'], ['HANDLE_INVALID', 'VM', 'OpaqueRef:gone'])
        ok(s.task.destroy(sess, task))
        # client tasks can be cancelled
        t = ok(s.task.create(sess, 'mine', 'client task'))
        ok(s.task.cancel(sess, t))
        self.assertEqual(ok(s.task.get_status(sess, t)), 'cancelled')
        self.assertEqual(s.task.cancel(sess, t)['ErrorDescription'][0], 'OPERATION_NOT_ALLOWED')

    def test_event_from_wakes_on_change(self):
        s, sess = self.s, self.sess
        efrom = getattr(s.event, 'from')
        first = ok(efrom(sess, ['host', 'VM'], '', 0.1))
        self.assertTrue(any(e['class'] == 'host' and e['operation'] == 'add'
                            for e in first['events']))
        self.assertEqual(first['valid_ref_counts']['host'], 1)
        token = first['token']
        idle = ok(efrom(sess, ['host'], token, 0.3))
        self.assertEqual(idle['events'], [])
        vm = ok(s.VM.create(sess, vm_record('evt')))
        got = ok(efrom(sess, ['vm'], token, 5))
        self.assertEqual([(e['operation'], e['ref']) for e in got['events']], [('add', vm)])
        token = got['token']

        def later():
            time.sleep(0.4)
            self.d.proxy().VM.set_name_label(sess, vm, 'woken')
        th = threading.Thread(target=later)
        th.start()
        t0 = time.time()
        got = ok(efrom(sess, ['*'], token, 10))
        waited = time.time() - t0
        th.join()
        self.assertGreater(waited, 0.2)
        self.assertLess(waited, 5)
        ev = [e for e in got['events'] if e['ref'] == vm]
        self.assertEqual(ev[0]['operation'], 'mod')
        self.assertEqual(ev[0]['snapshot']['name_label'], 'woken')
        ok(s.VM.destroy(sess, vm))
        got = ok(efrom(sess, ['vm/' + vm], got['token'], 5))
        self.assertEqual([(e['operation'], e['ref']) for e in got['events']], [('del', vm)])
        self.assertEqual(efrom(sess, ['vm'], 'garbage', 1)['ErrorDescription'],
                         ['EVENT_FROM_TOKEN_PARSE_FAILURE', 'garbage'])
        self.assertEqual(efrom(sess, ['v m'], '', 1)['ErrorDescription'][0],
                         'EVENT_SUBSCRIPTION_PARSE_FAILURE')

    def test_event_register_next_inject(self):
        s = self.s
        sess = self.d.login()
        self.assertEqual(s.event.next(sess)['ErrorDescription'], ['SESSION_NOT_REGISTERED', sess])
        ok(s.event.register(sess, ['pool']))
        pool = ok(s.pool.get_all(sess))[0]
        ok(s.event.inject(sess, 'pool', pool))
        evs = ok(s.event.next(sess))
        self.assertEqual([(e['class'], e['operation'], e['ref']) for e in evs], [('pool', 'mod', pool)])
        self.assertIsInstance(int(ok(s.event.get_current_id(sess))), int)
        ok(s.session.logout(sess))

    def test_reverse_references(self):
        s, sess = self.s, self.sess
        vm = ok(s.VM.create(sess, vm_record('rev')))
        net = ok(s.network.create(sess, {'name_label': 'n', 'other_config': {}}))
        vif = ok(s.VIF.create(sess, {'device': '0', 'network': net, 'VM': vm, 'MAC': '',
                                     'MTU': '1500', 'other_config': {}, 'qos_algorithm_type': '',
                                     'qos_algorithm_params': {}}))
        self.assertEqual(ok(s.VM.get_VIFs(sess, vm)), [vif])
        self.assertEqual(ok(s.network.get_record(sess, net))['VIFs'], [vif])
        ok(s.VIF.destroy(sess, vif))
        self.assertEqual(ok(s.VM.get_VIFs(sess, vm)), [])
        ok(s.network.destroy(sess, net))
        ok(s.VM.destroy(sess, vm))

    def test_local_unix_socket_is_preauthenticated(self):
        import socket
        import stat

        class UnixConn(http.client.HTTPConnection):
            def __init__(self, path):
                super().__init__('localhost', timeout=10)
                self.path = path

            def connect(self):
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(self.path)

        path = os.path.join(self.d.state, 'xapi.sock')
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        c = UnixConn(path)
        body = xmlrpc.client.dumps(('root', 'not-the-password'), 'session.login_with_password')
        c.request('POST', '/', body=body, headers={'Content-Type': 'text/xml'})
        r = xmlrpc.client.loads(c.getresponse().read())[0][0]
        sess = ok(r)
        rec = ok(self.s.session.get_record(sess, sess))
        self.assertTrue(rec['is_local_superuser'])
        c.close()
        # over TCP the same password is refused
        r = self.s.session.login_with_password('root', 'not-the-password')
        self.assertEqual(r['ErrorDescription'][0], 'SESSION_AUTHENTICATION_FAILED')

    def test_list_methods(self):
        methods = ok(self.s.system.listMethods())
        self.assertIn('VM.get_record', methods)
        self.assertIn('Async.VM.create', methods)
        self.assertIn('event.from', methods)
        self.assertNotIn('Async.VM.get_record', methods)

    def test_rbac(self):
        import subprocess
        # users are added while no daemon holds the DB (it locks it exclusively)
        d = Daemon()
        d.start()
        d.stop()
        for name, role in (('reader', 'read-only'), ('operator', 'vm-operator')):
            pw = os.path.join(d.tmp, name)
            with open(pw, 'w') as f:
                f.write('pw-' + name)
            subprocess.run([os.environ.get('XAPID', 'xapid'), '--state-dir', d.state,
                            '--add-user', name, '--role', role, '--user-password-file', pw,
                            '--password-iterations', '1000'],
                           check=True, capture_output=True, timeout=60)
        d.start()
        try:
            self._rbac_checks(d)
        finally:
            d.cleanup()

    def _rbac_checks(self, d):
        s = d.proxy()
        root = d.login()
        rs = ok(s.session.login_with_password('reader', 'pw-reader', '2.21', 't'))
        self.assertTrue(len(ok(s.host.get_all(rs))) == 1)
        vm = ok(s.VM.create(root, vm_record('rbac')))
        r = s.VM.set_name_label(rs, vm, 'nope')
        self.assertEqual(r['ErrorDescription'][0], 'RBAC_PERMISSION_DENIED')
        self.assertEqual(r['ErrorDescription'][1], 'vm.set_name_label')
        self.assertIn('vm-admin', r['ErrorDescription'][2])
        r = s.VM.create(rs, vm_record('x'))
        self.assertEqual(r['ErrorDescription'][:2], ['RBAC_PERMISSION_DENIED', 'vm.create'])
        os_ = ok(s.session.login_with_password('operator', 'pw-operator', '2.21', 't'))
        ok(s.VM.add_tags(os_, vm, 'ok-for-operator'))
        self.assertEqual(s.pool.set_name_label(os_, ok(s.pool.get_all(os_))[0], 'x')['ErrorDescription'][0],
                         'RBAC_PERMISSION_DENIED')
        rec = ok(s.session.get_record(os_, os_))
        self.assertFalse(rec['is_local_superuser'])
        # a second daemon cannot open a state dir in use
        r = subprocess_run_second(d)
        self.assertNotEqual(r.returncode, 0)
        ok(s.VM.destroy(root, vm))

    def test_many_sessions_bounded(self):
        d = Daemon(extra=['--max-sessions-per-user', '50', '--max-sessions', '80']).start()
        try:
            s = d.proxy()
            refs = [d.login() for _ in range(300)]
            live = [r for r in refs if s.session.get_uuid(r, r)['Status'] == 'Success']
            self.assertEqual(len(live), 50)
            self.assertEqual(live, refs[-50:])  # the least recently used went first
        finally:
            d.cleanup()


def subprocess_run_second(d):
    import subprocess
    return subprocess.run([os.environ.get('XAPID', 'xapid'), '--state-dir', d.state, '--listen',
                           '127.0.0.1:0'], capture_output=True, timeout=60)


def rss_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


class LoadTest(unittest.TestCase):
    def test_thousands_of_sessions_memory_bounded(self):
        d = Daemon().start()
        try:
            s = d.proxy()
            first = [d.login() for _ in range(1000)]
            rss1 = rss_kib(d.proc.pid)
            last = [d.login() for _ in range(2000)]
            rss2 = rss_kib(d.proc.pid)
            # 500 per user are kept (XAPI's limit); the rest were dropped oldest first
            self.assertEqual(s.session.get_uuid(first[0], first[0])['ErrorDescription'][0],
                             'SESSION_INVALID')
            self.assertEqual(ok(s.session.get_auth_user_name(last[-1], last[-1])), 'root')
            live = sum(1 for r in last[-600:] if s.session.get_uuid(r, r)['Status'] == 'Success')
            self.assertEqual(live, 500)
            # twice as many logins did not make the daemon grow by more than a few MiB
            self.assertLess(rss2 - rss1, 16 * 1024, (rss1, rss2))
        finally:
            d.cleanup()

    def test_finished_tasks_are_collected(self):
        d = Daemon(extra=['--task-retention', '1']).start()
        try:
            s = d.proxy()
            sess = d.login()
            done = ok(s.task.create(sess, 'done', ''))
            ok(s.task.cancel(sess, done))
            pending = ok(s.task.create(sess, 'pending', ''))
            deadline = time.time() + 20
            while time.time() < deadline and s.task.get_status(sess, done)['Status'] == 'Success':
                time.sleep(0.5)
            self.assertEqual(s.task.get_status(sess, done)['ErrorDescription'][0], 'HANDLE_INVALID')
            self.assertEqual(ok(s.task.get_status(sess, pending)), 'pending')
        finally:
            d.cleanup()

    def test_idle_sessions_expire(self):
        d = Daemon(extra=['--session-idle-timeout', '1']).start()
        try:
            s = d.proxy()
            sess = d.login()
            ok(s.pool.get_all(sess))
            time.sleep(2.2)
            self.assertEqual(s.pool.get_all(sess)['ErrorDescription'], ['SESSION_INVALID', sess])
        finally:
            d.cleanup()

    def test_concurrent_conflicting_operations(self):
        d = Daemon().start()
        try:
            sess = d.login()
            s = d.proxy()
            before = ok(s.VM.get_all(sess))  # templates and the control domain
            vms = [ok(s.VM.create(sess, vm_record(f'c{i}'))) for i in range(20)]
            results = {'destroyed': 0, 'invalid': 0, 'other': []}
            lock = threading.Lock()

            def worker(seed):
                p = d.proxy()
                for i, vm in enumerate(vms):
                    p.VM.set_name_label(sess, vm, f'w{seed}-{i}')
                    r = p.VM.destroy(sess, vm)
                    with lock:
                        if r['Status'] == 'Success':
                            results['destroyed'] += 1
                        elif r['ErrorDescription'][0] == 'HANDLE_INVALID':
                            results['invalid'] += 1
                        else:
                            results['other'].append(r)
            threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            # every VM destroyed exactly once; everyone else saw a clean HANDLE_INVALID
            self.assertEqual(results['other'], [])
            self.assertEqual(results['destroyed'], 20)
            self.assertEqual(results['invalid'], 8 * 20 - 20)
            self.assertEqual(sorted(ok(s.VM.get_all(sess))), sorted(before))
        finally:
            d.cleanup()


class LifecycleTest(unittest.TestCase):
    def test_restart_keeps_objects_and_fails_nothing(self):
        d = Daemon().start()
        try:
            s = d.proxy()
            sess = d.login()
            vm = ok(s.VM.create(sess, vm_record('persist')))
            self.assertEqual(d.stop(signal.SIGTERM), 0)
            self.assertIn('stopped', d.stderr())
            d.start()
            s = d.proxy()
            # sessions do not survive a restart, objects do
            self.assertEqual(s.VM.get_record(sess, vm)['ErrorDescription'][0], 'SESSION_INVALID')
            sess = d.login()
            self.assertEqual(ok(s.VM.get_name_label(sess, vm)), 'persist')
            self.assertEqual(len(ok(s.host.get_all(sess))), 1)
            # killed hard: acknowledged writes are still there
            ok(s.VM.set_name_label(sess, vm, 'acked'))
            d.stop(signal.SIGKILL)
            d.start()
            sess = d.login()
            self.assertEqual(ok(d.proxy().VM.get_name_label(sess, vm)), 'acked')
        finally:
            d.cleanup()

    def test_tls(self):
        import ssl
        d = Daemon(tls=True).start()
        try:
            ctx = ssl.create_default_context(cafile=os.path.join(d.state, 'xapi-ssl.pem'))
            ctx.check_hostname = False
            s = xmlrpc.client.ServerProxy(f'https://127.0.0.1:{d.tls_port}/', context=ctx)
            sess = ok(s.session.login_with_password('root', PASSWORD, '2.21', 'tls'))
            self.assertEqual(len(ok(s.pool.get_all(sess))), 1)
        finally:
            d.cleanup()


class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(extra=['--max-body', '300000']).start()
        cls.sess = cls.d.login()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def post(self, body, path='/', ctype='text/xml'):
        c = http.client.HTTPConnection('127.0.0.1', self.d.port, timeout=30)
        c.request('POST', path, body=body, headers={'Content-Type': ctype})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def call(self, body):
        st, data = self.post(body)
        self.assertEqual(st, 200)
        return xmlrpc.client.loads(data)[0][0]

    def alive(self):
        self.assertEqual(ok(self.d.proxy().pool.get_all(self.sess)).__len__(), 1)

    def test_malformed_xml(self):
        for body in [b'', b'<methodCall>', b'not xml at all', b'<a></a>',
                     b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                     b'<methodCall><methodName>&e;</methodName></methodCall>']:
            st, _ = self.post(body)
            self.assertEqual(st, 500, body)
        self.alive()

    def test_deep_nesting(self):
        inner = '<value><array><data>' * 5000 + '</data></array></value>' * 5000
        body = ('<methodCall><methodName>VM.get_all</methodName><params><param>' + inner +
                '</param></params></methodCall>').encode()
        st, _ = self.post(body)
        self.assertIn(st, (413, 500))
        self.alive()

    def test_huge_body(self):
        body = b'<methodCall><methodName>x</methodName><params><param><value>' + \
            b'a' * 2_000_000 + b'</value></param></params></methodCall>'
        st, _ = self.post(body)
        self.assertEqual(st, 413)
        self.alive()

    def test_non_utf8_param(self):
        body = ('<?xml version="1.0" encoding="ISO-8859-1"?><methodCall><methodName>'
                'VM.get_by_name_label</methodName><params><param><value>' + self.sess +
                '</value></param><param><value>caf\xe9</value></param></params></methodCall>'
                ).encode('latin-1')
        r = self.call(body)
        # libxml2 converts declared Latin-1 to UTF-8: a valid string, no VM of that name
        self.assertEqual(r['Status'], 'Success')
        body = (b'<methodCall><methodName>VM.get_by_name_label</methodName><params><param><value>' +
                self.sess.encode() + b'</value></param><param><value>\xff\xfe</value></param>'
                b'</params></methodCall>')
        st, data = self.post(body)
        if st == 200:
            r = xmlrpc.client.loads(data)[0][0]
            self.assertEqual(r['ErrorDescription'][0], 'INVALID_VALUE')
        else:
            self.assertEqual(st, 500)
        self.alive()

    def test_wrong_types(self):
        s = self.d.proxy()
        vm = ok(s.VM.create(self.sess, vm_record('types')))
        self.assertEqual(s.VM.set_name_label(self.sess, vm, ['a'])['ErrorDescription'],
                         ['FIELD_TYPE_ERROR', 'value'])
        self.assertEqual(s.VM.set_other_config(self.sess, vm, 'x')['ErrorDescription'],
                         ['FIELD_TYPE_ERROR', 'value'])
        self.assertEqual(s.VM.set_is_a_template(self.sess, vm, 'maybe')['ErrorDescription'],
                         ['FIELD_TYPE_ERROR', 'value'])
        ok(s.VM.set_is_a_template(self.sess, vm, True))
        ok(s.VM.destroy(self.sess, vm))

    def test_not_found_and_methods(self):
        c = http.client.HTTPConnection('127.0.0.1', self.d.port, timeout=10)
        c.request('GET', '/nothing')
        self.assertEqual(c.getresponse().status, 404)
        c.close()
        c = http.client.HTTPConnection('127.0.0.1', self.d.port, timeout=10)
        c.request('OPTIONS', '/')
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader('Access-Control-Allow-Origin'), '*')
        c.close()

    def test_keep_alive(self):
        c = http.client.HTTPConnection('127.0.0.1', self.d.port, timeout=10)
        body = xmlrpc.client.dumps((self.sess,), 'pool.get_all').encode()
        for _ in range(20):
            c.request('POST', '/', body=body, headers={'Content-Type': 'text/xml'})
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.getheader('Content-Type'), 'text/xml')
            r.read()
        c.close()


if __name__ == '__main__':
    warnings.simplefilter('ignore', ResourceWarning)
    unittest.main(verbosity=2, warnings='ignore')
