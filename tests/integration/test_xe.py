"""The real xe against the real xapid: output byte for byte (golden file), errors and exit
codes, ~/.xe and XE_EXTRA_ARGS, TLS checks. Regenerate the golden file with
XE_GOLDEN_REGEN=1. Exits 77 when XAPID or XE is missing."""
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import shutil
import ssl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

XE = os.environ.get('XE')
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'golden', 'xe',
                      'cases.txt')
UUID_RE = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')
DATE_RE = re.compile(r'(?!19700101)\d{8}T\d\d:\d\d:\d\dZ')
failures = []


def normalise(text, extra=()):
    text = text.replace(XE, 'xe')
    for a, b in extra:
        text = text.replace(a, b)
    text = UUID_RE.sub('<UUID>', text)
    return DATE_RE.sub('<DATE>', text)


class Runner:
    def __init__(self, d, home):
        self.d = d
        self.home = home
        self.cases = []

    def env(self, extra=None):
        e = {k: v for k, v in os.environ.items() if k not in ('XE_EXTRA_ARGS',)}
        e['HOME'] = self.home
        e.update(extra or {})
        return e

    def raw(self, args, env=None, conn=True):
        base = [XE]
        if conn:
            base += ['-s', '127.0.0.1', '-p', str(self.d.port), '-pw', harness.PASSWORD]
        p = subprocess.run(base + list(args), capture_output=True, text=True, timeout=60,
                           env=self.env(env), stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr

    def golden(self, name, args, env=None, conn=True, subst=()):
        rc, out, err = self.raw(args, env, conn)
        if rc < 0 or 'Sanitizer' in err or 'runtime error' in err:
            failures.append(f'{name}: crashed rc={rc}\n{err}')
        shown = ' '.join(normalise(a, subst) for a in args)
        self.cases.append(f'### {name}\n$ xe {shown}\nrc: {rc}\n--- stdout\n'
                          f'{normalise(out, subst)}--- stderr\n{normalise(err, subst)}--- end\n')
        return rc, out, err

    def check(self, cond, what):
        if not cond:
            failures.append(what)


def tty_progress_check(r, d, vm_uuid):
    """vm-destroy (an Async call) with stderr on a terminal shows a progress line."""
    import pty
    try:
        master, slave = pty.openpty()
    except OSError:  # no ptys here: the progress line cannot be observed
        return
    try:
        p = subprocess.run([XE, '-s', '127.0.0.1', '-p', str(d.port), '-pw', harness.PASSWORD,
                            'vm-destroy', f'uuid={vm_uuid}'], stdout=subprocess.PIPE,
                           stderr=slave, timeout=60, env=r.env())
        os.close(slave)
        slave = -1
        tty_err = b''
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            tty_err += chunk
        r.check(p.returncode == 0 and b'100%' in tty_err and p.stdout == b'',
                f'progress on a tty: rc={p.returncode} {tty_err!r}')
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


def run(d, home):
    r = Runner(d, home)
    proxy = d.proxy()
    sess = d.login()

    # the host is named after the machine: give it a fixed name first
    rc, host, err = r.raw(['host-list', '--minimal'])
    r.check(rc == 0 and UUID_RE.fullmatch(host.strip()), f'host-list --minimal: {host!r} {err}')
    rc, _, err = r.raw(['host-param-set', f'uuid={host.strip()}', 'name-label=host1',
                        'name-description=Default install'])
    r.check(rc == 0, f'host-param-set: {err}')
    # so is the control domain VM
    rc, dom0, err = r.raw(['vm-list', 'is-control-domain=true', '--minimal'])
    r.check(rc == 0 and UUID_RE.fullmatch(dom0.strip()), f'control domain: {dom0!r} {err}')
    rc, _, err = r.raw(['vm-param-set', f'uuid={dom0.strip()}',
                        'name-label=Control domain on host: host1'])
    r.check(rc == 0, f'vm-param-set (control domain): {err}')

    # lists, params=, filters, --minimal
    r.golden('host-list', ['host-list'])
    r.golden('pool-list', ['pool-list'])
    rc, pool, _ = r.raw(['pool-list', '--minimal'])
    pool = pool.strip()
    r.check(rc == 0 and UUID_RE.fullmatch(pool), f'pool-list --minimal: {pool!r}')
    r.golden('pool-param-set', ['pool-param-set', f'uuid={pool}', 'name-label=My pool',
                                'name-description=a=b', 'other-config:foo=bar',
                                'other-config:k:with:colons=v=1'])
    r.golden('pool-param-get name-label', ['pool-param-get', f'uuid={pool}',
                                           'param-name=name-label'])
    r.golden('pool-param-get map', ['pool-param-get', f'uuid={pool}', 'param-name=other-config'])
    r.golden('pool-param-get map key', ['pool-param-get', f'uuid={pool}',
                                        'param-name=other-config', 'param-key=k:with:colons'])
    r.golden('pool-param-get missing key', ['pool-param-get', f'uuid={pool}',
                                            'param-name=other-config', 'param-key=nope'])
    r.golden('pool-param-add set', ['pool-param-add', f'uuid={pool}', 'param-name=tags',
                                    'param-key=blue'])
    r.golden('pool-param-add set again', ['pool-param-add', f'uuid={pool}', 'param-name=tags',
                                          'param-key=green'])
    r.golden('pool-param-add map', ['pool-param-add', f'uuid={pool}', 'param-name=other-config',
                                    'x=1', 'y=2'])
    r.golden('pool-param-add map dup', ['pool-param-add', f'uuid={pool}',
                                        'param-name=other-config', 'x=3'])
    r.golden('pool-param-list', ['pool-param-list', f'uuid={pool}'])
    r.golden('pool-list filter', ['pool-list', 'name-label=My pool', 'params=uuid,name-label'])
    r.golden('pool-list filter none', ['pool-list', 'name-label=other'])
    r.golden('pool-list filter none minimal', ['pool-list', 'name-label=other', '--minimal'])
    r.golden('pool-list map filter', ['pool-list', 'other-config:foo=bar', 'params=name-label'])
    r.golden('pool-list set filter', ['pool-list', 'tags:contains=green', '--minimal'])
    r.golden('pool-list minimal params', ['pool-list', 'params=name-label', '--minimal'])
    r.golden('pool-list unknown field', ['pool-list', 'bogus=1'])
    r.golden('pool-list empty params', ['pool-list', 'params='])
    r.golden('pool-list all params', ['pool-list', 'params=all', 'name-label=My pool',
                                      '--minimal'])
    r.golden('pool-param-remove map', ['pool-param-remove', f'uuid={pool}',
                                       'param-name=other-config', 'param-key=x'])
    r.golden('pool-param-remove set', ['pool-param-remove', f'uuid={pool}', 'param-name=tags',
                                       'param-key=blue'])
    r.golden('pool-param-remove missing', ['pool-param-remove', f'uuid={pool}',
                                           'param-name=tags', 'param-key=blue'])
    r.golden('pool-param-get tags', ['pool-param-get', f'uuid={pool}', 'param-name=tags'])
    r.golden('pool-param-clear map', ['pool-param-clear', f'uuid={pool}',
                                      'param-name=other-config'])
    r.golden('pool-param-get cleared', ['pool-param-get', f'uuid={pool}',
                                        'param-name=other-config'])
    r.golden('pool-param-set read-only', ['pool-param-set', f'uuid={pool}', 'master=x'])
    r.golden('pool-param-set bad bool', ['pool-param-set', f'uuid={pool}',
                                         'ha-allow-overcommit=maybe'])
    r.golden('pool-param-set set field', ['pool-param-set', f'uuid={pool}', 'tags:x=y'])
    r.golden('pool-param-get unknown param', ['pool-param-get', f'uuid={pool}',
                                              'param-name=nope'])

    # VMs (created through the API until vm-install exists): vm-list hides templates,
    # power states print lowercase, ints and bools are checked, destroy goes through Async
    vm = harness.ok(proxy.VM.create(sess, harness.vm_record('web01')))
    tpl = dict(harness.vm_record('tmpl'), is_a_template=True)
    harness.ok(proxy.VM.create(sess, tpl))
    vmu = harness.ok(proxy.VM.get_uuid(sess, vm))
    r.golden('vm-list', ['vm-list'])
    r.golden('template-list', ['template-list'])
    r.golden('vm-list power-state filter', ['vm-list', 'power-state=halted', 'params=name-label'])
    r.golden('vm-list power-state filter none', ['vm-list', 'power-state=running', '--minimal'])
    r.golden('vm-param-list', ['vm-param-list', f'uuid={vmu}'])
    r.golden('vm-param-get power-state', ['vm-param-get', f'uuid={vmu}',
                                          'param-name=power-state'])
    r.golden('vm-param-set int', ['vm-param-set', f'uuid={vmu}', 'name-description=web, server',
                                  'user-version=7'])
    r.golden('vm-param-get int', ['vm-param-get', f'uuid={vmu}', 'param-name=user-version'])
    r.golden('vm-param-set bad int', ['vm-param-set', f'uuid={vmu}', 'user-version=seven'])
    r.golden('vm-list minimal escaping', ['vm-list', 'params=name-description', '--minimal'])
    r.golden('vm-param-add platform', ['vm-param-add', f'uuid={vmu}', 'param-name=platform',
                                       'acpi=1', 'apic=true'])
    r.golden('vm-param-add other-config', ['vm-param-add', f'uuid={vmu}',
                                           'param-name=other-config', 'acpi=1', 'apic=true'])
    r.golden('vm-list map filter', ['vm-list', 'other-config:acpi=1',
                                    'params=uuid,other-config'])
    r.golden('vm-list old-style map filter', ['vm-list', 'other-config-apic=true', '--minimal'])
    r.golden('vm-destroy', ['vm-destroy', f'uuid={vmu}'])
    r.golden('vm-list after destroy', ['vm-list'])
    # a long-running (Async) command shows progress on a terminal, nothing otherwise
    vm2 = harness.ok(proxy.VM.create(sess, harness.vm_record('web02')))
    vm2u = harness.ok(proxy.VM.get_uuid(sess, vm2))
    tty_progress_check(r, d, vm2u)

    # messages and secrets: creators print the new uuid
    r.golden('message-create', ['message-create', 'name=HELLO', 'priority=3', 'body=hi there',
                                f'pool-uuid={pool}'])
    r.golden('message-create bad priority', ['message-create', 'name=X', 'priority=high',
                                             'body=b', f'pool-uuid={pool}'])
    r.golden('message-create no object', ['message-create', 'name=X', 'priority=1', 'body=b'])
    r.golden('message-list', ['message-list', 'params=name,priority,class,obj-uuid,body'])
    rc, sec, err = r.raw(['secret-create', 'value=s3cr3t', 'other-config:purpose=test'])
    sec = sec.strip()
    r.check(rc == 0 and UUID_RE.fullmatch(sec), f'secret-create: {rc} {sec!r} {err}')
    r.golden('secret-param-get', ['secret-param-get', f'uuid={sec}', 'param-name=value'])
    r.golden('secret-list', ['secret-list'])
    r.golden('secret-destroy', ['secret-destroy', f'uuid={sec}'])
    r.golden('secret-list empty', ['secret-list', '--minimal'])

    # errors and exit codes
    r.golden('unknown command', ['frobnicate'])
    r.golden('missing param', ['pool-param-get', f'uuid={pool}'])
    r.golden('bad uuid', ['host-param-list', 'uuid=00000000-0000-0000-0000-000000000000'])
    r.golden('syntax error', ['name-label=x'])
    r.golden('wrong password', ['-pw', 'wrong', 'host-list'])
    r.golden('empty user', ['-u', '', 'host-list'])
    r.golden('help task-list', ['help', 'task-list'], conn=False)
    r.golden('help', ['help'], conn=False)
    r.golden('help unknown', ['help', 'nope'], conn=False)
    r.golden('no command', [], conn=False)
    r.golden('unreachable', ['-s', '127.0.0.1', '-p', '1', 'host-list'], conn=False)
    r.golden('bad port', ['-s', '127.0.0.1', '-p', '99999', 'host-list'], conn=False)
    rc, out, err = r.raw(['-s', 'no-such-host.invalid', 'host-list'], conn=False)
    r.check(rc == 1 and err.count('\n') == 1, f'unknown host: {rc} {err!r}')

    # tasks and events
    t = harness.ok(proxy.task.create(sess, 'mytask', 'something slow'))
    r.golden('task-list', ['task-list'])
    tu = harness.ok(proxy.task.get_uuid(sess, t))
    r.golden('task-param-list', ['task-param-list', f'uuid={tu}'])
    r.golden('event-wait already', ['event-wait', 'class=task', 'status=pending'])
    r.golden('event-wait timeout', ['event-wait', 'class=task', 'status=success', 'timeout=1'])
    # event-wait that completes when another client changes the object
    p = subprocess.Popen([XE, '-s', '127.0.0.1', '-p', str(d.port), '-pw', harness.PASSWORD,
                          'event-wait', 'class=task', 'status=cancelled', 'timeout=30'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=r.env())
    try:
        r.golden('task-cancel', ['task-cancel', f'uuid={tu}'])
        out, err = p.communicate(timeout=40)
        r.check(p.returncode == 0, f'event-wait for cancel: rc={p.returncode} {err}')
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    r.golden('task-cancel again', ['task-cancel', f'uuid={tu}'])
    r.golden('task-list after cancel', ['task-list', 'params=status,progress'])
    r.golden('event-wait not-equal', ['event-wait', 'class=task', 'status=/=pending'])
    r.golden('event-wait bad key', ['event-wait', 'class=task', 'nope=1'])
    r.golden('task-destroy', ['task-destroy', f'uuid={tu}'])
    r.golden('task-list empty', ['task-list'])
    r.golden('task-list empty minimal', ['task-list', '--minimal'])

    # the local socket needs no password, like XCP's on-host xe
    sock = os.path.join(d.state, 'xapi.sock')
    p = subprocess.run([XE, '-s', 'unix:' + sock, '-pw', 'wrong', 'pool-list', '--minimal'],
                       capture_output=True, text=True, timeout=30, env=r.env())
    pool_uuid = harness.ok(proxy.pool.get_uuid(sess, harness.ok(proxy.pool.get_all(sess))[0]))
    r.check(p.returncode == 0 and p.stdout.strip() == pool_uuid,
            f'xe over the unix socket: rc={p.returncode} {p.stdout!r} {p.stderr!r}')
    p = subprocess.run([XE, '-s', '127.0.0.1', '-p', str(d.port), '-pw', 'wrong', 'pool-list'],
                       capture_output=True, text=True, timeout=30, env=r.env())
    r.check(p.returncode != 0, 'a wrong password over TCP must fail')

    # bash completion generated from the same table
    comp = subprocess.run([XE, '--bash-completion'], capture_output=True, text=True, timeout=30)
    script = comp.stdout + '''
COMP_WORDS=(xe -s h pool-param-g); COMP_CWORD=3; _xe; echo "${COMPREPLY[*]}"
COMP_WORDS=(xe pool-param-get param-); COMP_CWORD=2; _xe; echo "${COMPREPLY[*]}"
COMP_WORDS=(xe pool-param-set other); COMP_CWORD=2; _xe; echo "${COMPREPLY[*]}"
'''
    b = subprocess.run(['bash', '--norc', '--noprofile'], input=script, capture_output=True,
                       text=True, timeout=30)
    r.check(b.stdout == 'pool-param-get\nparam-name= param-key=\nother-config:\n',
            f'bash completion: {b.stdout!r} {b.stderr!r}')

    # ~/.xe and XE_EXTRA_ARGS
    with open(os.path.join(home, '.xe'), 'w') as f:
        f.write(f'server=127.0.0.1\nport={d.port}\nusername=root\npassword={harness.PASSWORD}\n')
    rc, out, err = r.raw(['pool-list', '--minimal'], conn=False)
    r.check(rc == 0 and out.strip() == pool, f'~/.xe defaults: {rc} {out} {err}')
    rc, out, err = r.raw(['pool-list', '--minimal'], conn=False,
                         env={'XE_EXTRA_ARGS': 'port=1'})
    r.check(rc == 1 and 'refused' in err, f'XE_EXTRA_ARGS beats ~/.xe: {rc} {err}')
    rc, out, err = r.raw(['pool-list', '--minimal', '-p', str(d.port)], conn=False,
                         env={'XE_EXTRA_ARGS': 'port=1'})
    r.check(rc == 0 and out.strip() == pool, f'argv beats XE_EXTRA_ARGS: {rc} {err}')
    rc, out, err = r.raw(['pool-list'], conn=False,
                         env={'XE_EXTRA_ARGS': 'params=uuid\\,name-label,--minimal'})
    r.check(rc == 0 and out.strip() == pool, f'XE_EXTRA_ARGS params: {rc} {out!r} {err}')
    with open(os.path.join(home, '.xe'), 'w') as f:
        f.write('this line has no equals sign\n')
    rc, out, err = r.raw(['pool-list', '--minimal'])
    r.check(rc == 0 and 'Error parsing rc file. No defaults loaded' in err, f'bad ~/.xe: {err}')
    os.unlink(os.path.join(home, '.xe'))
    pwf = os.path.join(home, 'pwfile')
    with open(pwf, 'w') as f:
        f.write(f'root\n{harness.PASSWORD}\n')
    rc, out, err = r.raw(['-s', '127.0.0.1', '-p', str(d.port), '-pwf', pwf, 'pool-list',
                          '--minimal'], conn=False)
    r.check(rc == 0 and out.strip() == pool, f'-pwf: {rc} {err}')
    r.golden('pwf missing', ['-pwf', '/nonexistent/pw', 'host-list'], conn=False)

    # TLS: pinned fingerprint, CA file, insecure switch, mismatch, no check configured
    with open(os.path.join(d.state, 'xapi-ssl.pem')) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    digest = hashlib.sha256(der).hexdigest().upper()
    tls = ['-s', 'localhost', '-p', str(d.tls_port), '-pw', harness.PASSWORD]
    # as `openssl x509 -noout -fingerprint -sha256` prints it
    pin = ':'.join(digest[i:i + 2] for i in range(0, 64, 2))
    rc, out, err = r.raw(tls + ['--fingerprint', pin, 'pool-list', '--minimal'], conn=False)
    r.check(rc == 0 and out.strip() == pool, f'TLS pinned: {rc} {err}')
    rc, out, err = r.raw(tls + ['fingerprint=' + pin.replace(':', '').lower(), 'pool-list',
                                '--minimal'], conn=False)
    r.check(rc == 0 and out.strip() == pool, f'TLS pinned (key=value): {rc} {err}')
    bad = ('00' if not pin.startswith('00') else '11') + pin[2:]
    r.golden('tls pin mismatch', tls + ['--fingerprint', bad, 'host-list'], conn=False,
             subst=[(bad, '<PIN>'), (str(d.tls_port), '<PORT>'),
                    (harness.PASSWORD, '<PW>')])
    r.golden('tls bad pin syntax', tls + ['--fingerprint', 'zz', 'host-list'], conn=False,
             subst=[(str(d.tls_port), '<PORT>'), (harness.PASSWORD, '<PW>')])
    rc, out, err = r.raw(tls + ['--cafile', os.path.join(d.state, 'xapi-ssl.pem'), 'pool-list',
                                '--minimal'], conn=False)
    r.check(rc == 0 and out.strip() == pool, f'TLS CA file: {rc} {err}')
    rc, out, err = r.raw(tls + ['--insecure', 'pool-list', '--minimal'], conn=False)
    r.check(rc == 0 and out.strip() == pool, f'TLS insecure: {rc} {err}')
    rc, out, err = r.raw(tls + ['pool-list', '--minimal'], conn=False)
    r.check(rc == 1 and err.count('\n') == 1 and 'certificate' in err,
            f'TLS unverified must fail in one line: {rc} {err!r}')
    rc, out, err = r.raw(['-s', 'localhost', '-p', str(d.port), '--nossl', '-pw',
                          harness.PASSWORD, 'pool-list', '--minimal'], conn=False)
    r.check(rc == 0 and out.strip() == pool, f'--nossl: {rc} {err}')
    rc, out, err = r.raw(['-s', 'localhost', '-p', str(d.port), '-pw', harness.PASSWORD,
                          'pool-list', '--minimal'], conn=False)
    r.check(rc == 1 and err.count('\n') == 1, f'TLS to a plain port: {rc} {err!r}')
    # one keep-alive connection and one session per invocation, logged out at the end
    rc, out, err = r.raw(['--debug', 'pool-param-list', f'uuid={pool}'])
    calls = [l for l in err.splitlines() if l.startswith('xe: -> ')]
    r.check(rc == 0 and err.count('opened a new connection') == 1 and len(calls) > 3 and
            calls[0] == 'xe: -> session.login_with_password' and
            calls[-1] == 'xe: -> session.logout', f'--debug: {rc} {err}')
    # JSON-RPC transport gives the same output
    rc, out, err = r.raw(['--jsonrpc', 'pool-list', '--minimal'])
    r.check(rc == 0 and out.strip() == pool, f'--jsonrpc: {rc} {err}')

    # user-password-change last: it changes the root password
    r.golden('user-password-change', ['user-password-change', f'old={harness.PASSWORD}',
                                      'new=another-pw-123'])
    rc, out, err = r.raw(['-s', '127.0.0.1', '-p', str(d.port), '-pw', 'another-pw-123',
                          'pool-list', '--minimal'], conn=False)
    r.check(rc == 0 and out.strip() == pool, f'login with the new password: {rc} {err}')
    return r.cases


def main():
    if not XE or not os.path.exists(XE) or not os.path.exists(harness.XAPID):
        print('XE or XAPID not set; skipping')
        return 77
    home = tempfile.mkdtemp(prefix='xe-home-')
    d = harness.Daemon(tls=True)
    try:
        d.start()
        cases = run(d, home)
    finally:
        d.cleanup()
        shutil.rmtree(home, ignore_errors=True)
    text = ''.join(cases)
    if os.environ.get('XE_GOLDEN_REGEN'):
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, 'w') as f:
            f.write(text)
        print(f'regenerated {GOLDEN}')
    else:
        with open(GOLDEN) as f:
            want = f.read()
        if want != text:
            import difflib
            failures.append('golden mismatch:\n' + ''.join(difflib.unified_diff(
                want.splitlines(True), text.splitlines(True), 'expected', 'got')))
    for f in failures:
        print('FAIL:', f)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
