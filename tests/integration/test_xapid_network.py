#!/usr/bin/env python3
"""xapid's network, PIF, VIF and host.management_reconfigure handlers, end to end.

The test re-runs itself inside a fresh network namespace (unshare -n): the daemon, the client
and the veth "NIC" it scans live there, so the host's interfaces are never touched and the
kernel removes everything when the namespace's last process exits. Exits 77 when not root,
without unshare/ip, or while xapid lacks the network handlers (schema not updated yet)."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SKIP = 77


def skip(why):
    print('SKIP: ' + why)
    sys.exit(SKIP)


def in_namespace():
    if os.environ.get('NUVEM_NET_NS') == str(os.getpid()):
        return
    if os.geteuid() != 0:
        skip('needs root for a network namespace')
    for tool in ('unshare', 'ip'):
        if subprocess.run(['sh', '-c', f'command -v {tool}'], capture_output=True).returncode:
            skip(f'{tool} is missing')
    # exec: the namespace dies with this process tree; NUVEM_NET_NS marks the inner run.
    script = ('ip link set lo up && NUVEM_NET_NS=$$ exec "$0" "$@"')
    os.execvp('unshare', ['unshare', '-n', 'sh', '-c', script, sys.executable,
                          os.path.abspath(__file__)] + sys.argv[1:])


def dhcp_check(x, s, pif, sh):
    """PIF.reconfigure_ip DHCP against a busybox udhcpd on the other end of the veth."""
    import shutil
    import signal
    import tempfile
    import time
    bb = shutil.which('busybox')
    if not bb:
        r = x.PIF.reconfigure_ip(s, pif, 'DHCP', '', '', '', '')
        assert r['Status'] == 'Failure' and r['ErrorDescription'][0] == 'VALUE_NOT_SUPPORTED', r
        return
    tmp = tempfile.mkdtemp(prefix='nuvem-xapid-dhcpd-')
    conf = os.path.join(tmp, 'udhcpd.conf')
    with open(conf, 'w') as f:
        f.write(f'start 10.66.0.150\nend 10.66.0.160\ninterface wire7\n'
                f'option subnet 255.255.255.0\noption router 10.66.0.254\n'
                f'lease_file {tmp}/leases\npidfile {tmp}/pid\n')
    sh('ip addr add 10.66.0.254/24 dev wire7')
    srv = subprocess.Popen([bb, 'udhcpd', '-f', conf], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        r = x.PIF.reconfigure_ip(s, pif, 'DHCP', '', '', '', '')
        assert r['Status'] == 'Success', r
        ip = x.PIF.get_IP(s, pif)['Value']
        assert re.fullmatch(r'10\.66\.0\.1(5\d|60)', ip), ip
        assert x.PIF.get_ip_configuration_mode(s, pif)['Value'] == 'DHCP'
        assert x.PIF.get_gateway(s, pif)['Value'] == '10.66.0.254'
        assert f'{ip}/24' in sh('ip -4 -o addr show dev xenbr7')
    finally:
        srv.send_signal(signal.SIGKILL)
        srv.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    # back to static for what follows
    r = x.PIF.reconfigure_ip(s, pif, 'Static', '10.66.0.1', '255.255.255.0', '', '')
    assert r['Status'] == 'Success', r


def main():
    in_namespace()
    from harness import Daemon, vm_record

    def fails(r, code):
        assert r['Status'] == 'Failure', r
        assert r['ErrorDescription'][0] == code, r
        return r['ErrorDescription']

    def ok(r):
        assert r['Status'] == 'Success', r
        return r['Value']

    def sh(cmd):
        return subprocess.run(cmd, shell=True, check=True, capture_output=True,
                              text=True).stdout

    d = Daemon()
    try:
        d.start()
        methods = d.proxy().system.listMethods()
        methods = methods.get('Value', []) if isinstance(methods, dict) else methods
        if 'PIF.scan' not in methods:
            skip('xapid has no network handlers yet (api-schema CUSTOM lacks them)')
        s = d.login()
        x = d.proxy()

        # network.create: xapiN picked, user names checked, clashes refused.
        rec = {'name_label': 'n1', 'name_description': '', 'MTU': 1500, 'other_config': {},
               'bridge': '', 'managed': True, 'tags': []}
        n1 = ok(x.network.create(s, rec))
        b1 = ok(x.network.get_bridge(s, n1))
        assert re.fullmatch(r'xapi\d+', b1), b1
        n2 = ok(x.network.create(s, dict(rec, name_label='n2')))
        assert ok(x.network.get_bridge(s, n2)) != b1
        n3 = ok(x.network.create(s, dict(rec, bridge='mybr0')))
        assert ok(x.network.get_bridge(s, n3)) == 'mybr0'
        assert fails(x.network.create(s, dict(rec, bridge='mybr0')),
                     'BRIDGE_NAME_EXISTS')[1:] == ['mybr0']
        fails(x.network.create(s, dict(rec, bridge='xenbr5')), 'INVALID_VALUE')
        fails(x.network.create(s, dict(rec, bridge='a;b')), 'INVALID_VALUE')
        fails(x.network.create(s, dict(rec, MTU=20)), 'INVALID_VALUE')

        # VIF.create: MAC generation, device uniqueness, validation.
        vm = ok(x.VM.create(s, vm_record('netvm')))
        vrec = {'device': '0', 'network': n1, 'VM': vm, 'MAC': '', 'MTU': 0,
                'other_config': {}, 'qos_algorithm_type': 'ratelimit',
                'qos_algorithm_params': {'kbps': '1000'}, 'locking_mode': 'network_default',
                'ipv4_allowed': [], 'ipv6_allowed': []}
        vif = ok(x.VIF.create(s, vrec))
        mac = ok(x.VIF.get_MAC(s, vif))
        assert re.fullmatch(r'[0-9a-f]{2}(:[0-9a-f]{2}){5}', mac), mac
        assert int(mac[:2], 16) & 3 == 2, mac  # unicast, locally administered
        assert ok(x.VIF.get_MAC_autogenerated(s, vif)) is True
        assert int(ok(x.VIF.get_MTU(s, vif))) == 1500
        assert ok(x.VIF.get_currently_attached(s, vif)) is False
        fails(x.VIF.create(s, vrec), 'DEVICE_ALREADY_EXISTS')
        fails(x.VIF.create(s, dict(vrec, device='1', MAC='zz:00')), 'MAC_INVALID')
        fails(x.VIF.create(s, dict(vrec, device='1', MAC='03:00:00:00:00:01')), 'MAC_INVALID')
        fails(x.VIF.create(s, dict(vrec, device='1', ipv4_allowed=['10.0.0.1; flush'])),
              'INVALID_VALUE')
        vif2 = ok(x.VIF.create(s, dict(vrec, device='1', MAC='02:AA:00:00:00:01', MTU=1400)))
        assert ok(x.VIF.get_MAC(s, vif2)) == '02:aa:00:00:00:01'
        assert ok(x.VIF.get_MAC_autogenerated(s, vif2)) is False
        assert ok(x.VIF.get_network(s, vif2)) == n1

        assert sorted(fails(x.network.destroy(s, n1), 'NETWORK_CONTAINS_VIF')[1:]) == \
            sorted([vif, vif2])
        fails(x.VIF.plug(s, vif), 'VM_BAD_POWER_STATE')
        fails(x.VIF.unplug(s, vif), 'DEVICE_ALREADY_DETACHED')

        # Locking settings (applied at plug; checked by the code that writes the rules).
        ok(x.VIF.set_locking_mode(s, vif, 'locked'))
        assert ok(x.VIF.get_locking_mode(s, vif)) == 'locked'
        ok(x.VIF.add_ipv4_allowed(s, vif, '10.0.0.5'))
        ok(x.VIF.add_ipv4_allowed(s, vif, '10.0.0.5'))
        assert ok(x.VIF.get_ipv4_allowed(s, vif)) == ['10.0.0.5']
        fails(x.VIF.add_ipv4_allowed(s, vif, '10.0.0.500'), 'INVALID_VALUE')
        fails(x.VIF.add_ipv6_allowed(s, vif, '10.0.0.5'), 'INVALID_VALUE')
        ok(x.VIF.set_ipv6_allowed(s, vif, ['2001:db8::1', 'fd00::/64']))
        assert ok(x.VIF.get_ipv6_allowed(s, vif)) == ['2001:db8::1', 'fd00::/64']
        ok(x.VIF.remove_ipv4_allowed(s, vif, '10.0.0.5'))
        assert ok(x.VIF.get_ipv4_allowed(s, vif)) == []
        ok(x.network.set_default_locking_mode(s, n1, 'disabled'))
        assert ok(x.network.get_default_locking_mode(s, n1)) == 'disabled'

        ok(x.VIF.destroy(s, vif))
        ok(x.VIF.destroy(s, vif2))
        ok(x.network.destroy(s, n1))

        # PIF.scan finds a new NIC (a veth here) with its MAC and MTU.
        sh('ip link add eth7 mtu 9000 type veth peer name wire7 && ip link set wire7 up')
        kmac = open('/sys/class/net/eth7/address').read().strip() \
            if os.path.exists('/sys/class/net/eth7') else None
        host = ok(x.session.get_this_host(s, s))
        ok(x.PIF.scan(s, host))
        ok(x.PIF.scan(s, host))  # nothing duplicated
        pifs = ok(x.PIF.get_all_records(s))
        mine = [(r, p) for r, p in pifs.items() if p['device'] == 'eth7']
        assert len(mine) == 1, pifs
        pif, p = mine[0]
        assert p['physical'] is True and p['currently_attached'] is False, p
        assert int(p['MTU']) == 9000, p
        if kmac:
            assert p['MAC'] == kmac, (p['MAC'], kmac)
        net = p['network']
        assert ok(x.network.get_bridge(s, net)) == 'xenbr7'

        # PIF.plug: bridge xenbr7 with eth7 on it; static IP on the bridge.
        ok(x.PIF.plug(s, pif))
        out = sh('ip -o link show master xenbr7')
        assert 'eth7' in out, out
        ok(x.PIF.reconfigure_ip(s, pif, 'Static', '10.66.0.1', '255.255.255.0', '', ''))
        assert '10.66.0.1/24' in sh('ip -4 -o addr show dev xenbr7')
        assert ok(x.PIF.get_IP(s, pif)) == '10.66.0.1'
        fails(x.PIF.reconfigure_ip(s, pif, 'Static', '10.66.0.999', '255.255.255.0', '', ''),
              'INVALID_VALUE')
        dhcp_check(x, s, pif, sh)

        ok(x.host.management_reconfigure(s, pif))
        assert ok(x.PIF.get_management(s, pif)) is True
        assert ok(x.host.get_address(s, host)) == '10.66.0.1'
        fails(x.PIF.unplug(s, pif), 'PIF_IS_MANAGEMENT_INTERFACE')
        fails(x.PIF.destroy(s, pif), 'PIF_IS_PHYSICAL')
        fails(x.network.destroy(s, net), 'NETWORK_CONTAINS_PIF')

        # A clean stop (ASan builds report leaks and errors on stderr here).
        rc = d.stop()
        err = d.stderr()
        assert 'Sanitizer' not in err and 'runtime error' not in err, err
        assert rc == 0, (rc, err[-2000:])
        print('PASS')
    finally:
        d.cleanup()


if __name__ == '__main__':
    main()
