#!/usr/bin/env python3
"""Seeds api-schema/classes/<Class>.json from the facts-only XenAPI model.

The class files are the source of truth once written; this tool only copies names, types,
qualifiers, defaults, parameter orders and roles so they stay identical to the real XenAPI.
Usage: import-model.py MODEL.json OUTDIR [--only Class ...] [--force]
Custom messages are copied only when listed in CUSTOM below (the ones we implement).
"""
import json
import os
import re
import sys

CLASSES = ['session', 'pool', 'host', 'host_metrics', 'host_cpu', 'VM', 'VM_metrics',
           'VM_guest_metrics', 'VBD', 'VDI', 'SR', 'PBD', 'network', 'PIF', 'VIF', 'task',
           'event', 'message', 'console', 'role', 'secret', 'VLAN', 'Bond', 'VIF_metrics',
           'PIF_metrics']

# Reverse references: derived from the single-ref field on the other side, never stored.
DERIVED = {
    ('VM', 'VBDs'): 'VBD.VM', ('VM', 'VIFs'): 'VIF.VM', ('VM', 'consoles'): 'console.VM',
    ('VM', 'snapshots'): 'VM.snapshot_of', ('VM', 'children'): 'VM.parent',
    ('host', 'resident_VMs'): 'VM.resident_on', ('host', 'PIFs'): 'PIF.host',
    ('host', 'PBDs'): 'PBD.host', ('host', 'host_CPUs'): 'host_cpu.host',
    ('SR', 'VDIs'): 'VDI.SR', ('SR', 'PBDs'): 'PBD.SR', ('VDI', 'VBDs'): 'VBD.VDI',
    ('VDI', 'snapshots'): 'VDI.snapshot_of', ('network', 'VIFs'): 'VIF.network',
    ('network', 'PIFs'): 'PIF.network', ('task', 'subtasks'): 'task.subtask_of',
    ('PIF', 'VLAN_slave_of'): 'VLAN.tagged_PIF', ('PIF', 'bond_master_of'): 'Bond.master',
    ('Bond', 'slaves'): 'PIF.bond_slave_of',
}

# Custom messages implemented so far (added issue by issue).
CUSTOM = {
    'session': ['login_with_password', 'logout', 'local_logout', 'change_password'],
    'task': ['create', 'cancel', 'destroy', 'set_status', 'set_progress', 'set_result',
             'set_error_info'],
    'event': ['register', 'unregister', 'next', 'from', 'get_current_id', 'inject'],
    'message': ['create', 'destroy', 'get', 'get_since'],
    'role': ['get_permissions', 'get_permissions_name_label', 'get_by_permission',
             'get_by_permission_name_label'],
    'network': ['create', 'destroy', 'set_default_locking_mode'],
    'PIF': ['scan', 'plug', 'unplug', 'reconfigure_ip', 'destroy'],
    'VIF': ['create', 'destroy', 'plug', 'unplug', 'unplug_force', 'set_locking_mode',
            'set_ipv4_allowed', 'add_ipv4_allowed', 'remove_ipv4_allowed',
            'set_ipv6_allowed', 'add_ipv6_allowed', 'remove_ipv6_allowed'],
    'host': ['management_reconfigure', 'compute_free_memory', 'compute_memory_overhead'],
    'VM': ['create', 'start', 'start_on', 'clean_shutdown', 'hard_shutdown', 'shutdown',
           'clean_reboot', 'hard_reboot', 'pause', 'unpause', 'suspend', 'resume', 'resume_on',
           'power_state_reset', 'clone', 'copy', 'provision', 'snapshot', 'revert', 'destroy',
           'set_VCPUs_number_live', 'set_VCPUs_max', 'set_VCPUs_at_startup',
           'set_memory_dynamic_range', 'set_memory_dynamic_min', 'set_memory_dynamic_max',
           'set_memory_static_range', 'set_memory_static_min', 'set_memory_static_max',
           'set_memory_limits', 'set_memory', 'set_memory_target_live',
           'set_actions_after_crash', 'get_allowed_VBD_devices', 'get_allowed_VIF_devices',
           'get_boot_record', 'update_allowed_operations', 'assert_can_boot_here',
           'get_possible_hosts', 'compute_memory_overhead', 'assert_operation_valid'],
    'VLAN': ['create', 'destroy'],
    'Bond': ['create', 'destroy', 'set_mode', 'set_property'],
    'VBD': ['create', 'destroy', 'plug', 'unplug', 'unplug_force', 'insert', 'eject'],
    'SR': ['create', 'destroy', 'forget', 'scan', 'update', 'introduce', 'set_name_label',
           'set_name_description', 'get_supported_types', 'probe', 'set_shared'],
    'PBD': ['plug', 'unplug', 'destroy'],
    'VDI': ['create', 'destroy', 'resize', 'snapshot', 'clone', 'copy', 'forget', 'introduce',
            'update', 'set_name_label', 'set_name_description', 'set_read_only', 'set_sharable',
            'resize_online'],
}

# Classes that are not stored in the pool DB, or not as ordinary rows.
NOT_PERSISTED = {'session'}  # sessions live only while xapid runs
NO_TABLE = {'event'}         # a record shape only

# Fields XAPI declares RO/constructor but gives plain custom setters (they exist only for
# per-key RBAC); their setters behave exactly like generated ones.
PLAIN_SETTER_FIELDS = {'other_config', 'tags', 'xenstore_data', 'sm_config', 'blocked_operations'}

ROLE_ORDER = ['read-only', 'vm-operator', 'vm-admin', 'vm-power-admin', 'pool-operator',
              'pool-admin']


def is_async(cls, name):
    """XAPI's rule: custom messages have an Async variant, except accessors and the session,
    task and event machinery."""
    if cls in ('session', 'task', 'event'):
        return False
    return not name.startswith(('get', 'set_', 'add_', 'remove_'))


def min_role(roles):
    rs = [r for r in roles if r != 'client-cert']
    if not rs:
        return 'pool-admin'
    return rs[-1]


def parse_default(ftype, d):
    if d is None:
        return None
    if ftype.endswith(' set'):
        inner = d.strip('{}').strip()
        if not inner:
            return []
        return [int(x) if x.strip().isdigit() else x.strip().strip('"') for x in inner.split(',')]
    if ftype.endswith(' map'):
        out = {}
        for k, v in re.findall(r'"([^"]*)"\s*->\s*"([^"]*)"', d):
            out[k] = v
        return out
    if ftype == 'bool':
        return d == 'true'
    if ftype == 'int':
        return int(d)
    if ftype == 'float':
        return float(d)
    if ftype.endswith(' ref'):
        return 'OpaqueRef:NULL'
    if ftype == 'string':
        if d.startswith('"') and d.endswith('"'):
            return d[1:-1]
        return d
    return d  # enum value or datetime text


IMPLICIT_RE = re.compile(r'^(get_all_records_where|get_all_records|get_all|get_record|get_by_uuid|'
                         r'get_by_name_label|create|destroy)$')


def implicit_kind(cls, msg, fieldnames):
    """Returns True when the generator can derive msg from the class's fields."""
    n = msg['name']
    if IMPLICIT_RE.match(n):
        return True
    for pre in ('get_', 'set_', 'add_to_', 'remove_from_', 'add_', 'remove_'):
        if n.startswith(pre) and n[len(pre):] in fieldnames:
            return True
    return False


def convert(c):
    fields = []
    fieldnames = {}
    for f in c['fields']:
        out = {'name': f['name'], 'type': f['type'], 'qualifier': f['qualifier']}
        if 'default' in f:
            out['default'] = parse_default(f['type'], f['default'])
        if (c['name'], f['name']) in DERIVED:
            out['derived_from'] = DERIVED[(c['name'], f['name'])]
        if f.get('lifecycle'):
            out['lifecycle'] = f['lifecycle']
        fields.append(out)
        fieldnames[f['name']] = f
    implicit = {}
    custom = []
    for m in c['messages']:
        n = m['name']
        if n in CUSTOM.get(c['name'], []):
            custom.append({
                'name': n,
                'params': [{'name': p['name'], 'type': p['type'], 'required': p['required']}
                           for p in m['params'] if not (p['name'] == 'session_id'
                                                        and p['type'] == 'session ref')],
                'session': any(p['name'] == 'session_id' for p in m['params']),
                'result': m['result'],
                'errors': m['errors'],
                'min_role': min_role(m['roles']),
                'async': is_async(c['name'], n),
            })
        elif n == 'create' and [p['type'] for p in m['params']][-1:] != [f'{c["name"]} record']:
            continue  # a custom-signature constructor (SR.create): not generated
        elif implicit_kind(c, m, fieldnames):
            # setters of RO fields exist in the model only as custom messages: skip here
            n2 = n
            for pre in ('set_', 'add_to_', 'remove_from_', 'add_', 'remove_'):
                if n2.startswith(pre) and n2[len(pre):] in fieldnames:
                    if (fieldnames[n2[len(pre):]]['qualifier'] != 'RW'
                            and n2[len(pre):] not in PLAIN_SETTER_FIELDS):
                        break
            else:
                implicit[n] = {'role': min_role(m['roles']),
                               'params': [p['name'] for p in m['params']
                                          if not (p['name'] == 'session_id'
                                                  and p['type'] == 'session ref')]}
    missing = set(CUSTOM.get(c['name'], [])) - {m['name'] for m in custom}
    if missing:
        sys.exit(f'{c["name"]}: custom messages not in model: {missing}')
    return {
        'name': c['name'],
        'persisted': c['name'] not in NOT_PERSISTED,
        'table': c['name'] not in NO_TABLE,
        'events': c['name'] not in NOT_PERSISTED | NO_TABLE,
        'fields': fields,
        'enums': c['enums'],
        'implicit': dict(sorted(implicit.items())),
        'messages': sorted(custom, key=lambda m: m['name']),
    }


def main():
    model, outdir = sys.argv[1], sys.argv[2]
    only = sys.argv[sys.argv.index('--only') + 1:] if '--only' in sys.argv else CLASSES
    only = [o for o in only if not o.startswith('--')]
    force = '--force' in sys.argv
    byname = {c['name']: c for c in json.load(open(model))}
    for (cn, fn), src in DERIVED.items():
        sc, sf = src.split('.')
        assert any(f['name'] == fn for f in byname[cn]['fields']), (cn, fn)
        assert any(f['name'] == sf and f['type'] == f'{cn} ref' for f in byname[sc]['fields']), src
    for cn in only:
        path = os.path.join(outdir, f'{cn}.json')
        if os.path.exists(path) and not force:
            print(f'skip {path} (exists; --force to overwrite)')
            continue
        with open(path, 'w') as fh:
            json.dump(convert(byname[cn]), fh, indent=1)
            fh.write('\n')
        print(f'wrote {path}')


if __name__ == '__main__':
    main()
