#!/usr/bin/env python3
"""Golden request->response tests for both protocols against a real xapid.

Each cases/NAME.xml (XML-RPC, POST /) or cases/NAME.json (JSON-RPC, POST /jsonrpc) is a
request body; @SESSION@, @VM@, @HOST@ and @POOL@ are replaced by live refs. The response,
normalised (refs, uuids, times and tokens numbered in order of appearance), must equal
cases/NAME.<ext>.out. Run with --regen to rewrite the .out files after a deliberate change.
"""
import glob
import http.client
import os
import re
import sys
import xmlrpc.client

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'integration'))
from harness import Daemon, ok, vm_record  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def normalise(text, names):
    def sub(pattern, kind):
        nonlocal text

        def repl(m):
            key = (kind, m.group(0))
            if key not in names:
                names[key] = f'@{kind}{sum(1 for k in names if k[0] == kind) + 1}@'
            return names[key]
        text = re.sub(pattern, repl, text)
    sub(r'OpaqueRef:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', 'REF')
    sub(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', 'UUID')
    sub(r'20[0-9]{6}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z', 'TIME')
    sub(r'[0-9]{20},[0-9]{20}', 'TOKEN')
    return text


def main():
    regen = '--regen' in sys.argv
    d = Daemon().start()
    failed = 0
    try:
        sess = d.login()
        s = d.proxy()
        subst = {'@SESSION@': sess, '@VM@': ok(s.VM.create(sess, vm_record('golden'))),
                 '@HOST@': ok(s.host.get_all(sess))[0], '@POOL@': ok(s.pool.get_all(sess))[0]}
        cases = sorted(glob.glob(os.path.join(HERE, 'cases', '*.xml')) +
                       glob.glob(os.path.join(HERE, 'cases', '*.json')))
        for case in cases:
            body = open(case).read().strip()
            for k, v in subst.items():
                body = body.replace(k, v)
            path = '/jsonrpc' if case.endswith('.json') else '/'
            ctype = 'application/json' if case.endswith('.json') else 'text/xml'
            c = http.client.HTTPConnection('127.0.0.1', d.port, timeout=30)
            c.request('POST', path, body=body.encode(), headers={'Content-Type': ctype})
            r = c.getresponse()
            data = r.read().decode('utf-8', 'replace')
            c.close()
            names = {('REF', v): k for k, v in subst.items()}
            got = f'HTTP {r.status} {r.getheader("Content-Type")}\n' + normalise(data, names) + '\n'
            out = case + '.out'
            if regen:
                with open(out, 'w') as f:
                    f.write(got)
                print('wrote', os.path.basename(out))
                continue
            want = open(out).read() if os.path.exists(out) else None
            if got != want:
                failed += 1
                print(f'FAIL {os.path.basename(case)}\n--- want\n{want}--- got\n{got}')
            else:
                print(f'ok   {os.path.basename(case)}')
    finally:
        d.cleanup()
    print(f'{len(cases) - failed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
