#!/usr/bin/env python3
"""Generates the C tables, typed records, handler prototypes, DB DDL, CLI tables and the
Markdown API reference from api-schema/. Output goes to the build dir only.

Usage: gen.py SCHEMA_DIR OUT_DIR
"""
import hashlib
import json
import os
import re
import sys

SCHEMA, OUT = sys.argv[1], sys.argv[2]

classes = []
for fn in sorted(os.listdir(os.path.join(SCHEMA, 'classes'))):
    if fn.endswith('.json'):
        classes.append(json.load(open(os.path.join(SCHEMA, 'classes', fn))))
# stable order: as the issue lists them, then alphabetical
ORDER = ['session', 'pool', 'host', 'host_metrics', 'host_cpu', 'VM', 'VM_metrics',
         'VM_guest_metrics', 'VBD', 'VDI', 'SR', 'PBD', 'network', 'PIF', 'VIF', 'task', 'event',
         'message', 'console', 'role', 'secret']
classes.sort(key=lambda c: (ORDER.index(c['name']) if c['name'] in ORDER else 999, c['name']))
errors = json.load(open(os.path.join(SCHEMA, 'errors.json')))['errors']
roles = json.load(open(os.path.join(SCHEMA, 'roles.json')))['roles']

h = hashlib.sha256()
for fn in sorted(os.listdir(os.path.join(SCHEMA, 'classes'))):
    h.update(open(os.path.join(SCHEMA, 'classes', fn), 'rb').read())
h.update(open(os.path.join(SCHEMA, 'errors.json'), 'rb').read())
h.update(open(os.path.join(SCHEMA, 'roles.json'), 'rb').read())
SCHEMA_HASH = h.hexdigest()

cls_id = {c['name']: i for i, c in enumerate(classes)}
enums = {}
for c in classes:
    for e in c['enums']:
        enums[e['name']] = e['values']


def die(msg):
    sys.exit('gen.py: ' + msg)


def cid(s):
    return re.sub(r'[^A-Za-z0-9_]', '_', s)


# ---- types ----
types = {}  # text -> (cname, kind, ...)
type_order = []


def parse_type(t):
    t = t.strip()
    if t in types:
        return types[t]['c']
    d = {'text': t, 'en': None, 'cls': -1, 'cls_name': None, 'elem': None, 'key': None}
    m = re.match(r'^\((.+) -> (.+)\) map$', t)
    if m:
        d['kind'] = 'MAP'
        d['key'] = parse_type(m.group(1))
        d['elem'] = parse_type(m.group(2))
    elif t.endswith(' set'):
        d['kind'] = 'SET'
        d['elem'] = parse_type(t[:-4])
    elif t.startswith('enum '):
        d['kind'] = 'ENUM'
        name = t[5:]
        if name not in enums:
            die(f'unknown enum {name}')
        d['en'] = name
    elif t.endswith(' ref'):
        d['kind'] = 'REF'
        d['cls_name'] = t[:-4]
        d['cls'] = cls_id.get(t[:-4], -1)
    elif t in ('<class> record', 'an event batch'):
        d['kind'] = 'ANY'
    elif t.endswith(' record'):
        d['kind'] = 'RECORD'
        d['cls_name'] = t[:-7]
        d['cls'] = cls_id.get(t[:-7], -1)
        if d['cls'] < 0:
            die(f'record of unknown class {t}')
    else:
        d['kind'] = {'string': 'STRING', 'int': 'INT', 'float': 'FLOAT', 'bool': 'BOOL',
                     'datetime': 'DATETIME', 'void': 'VOID'}.get(t)
        if not d['kind']:
            die(f'unknown type {t}')
    d['c'] = f'api_type_{len(type_order)}'
    types[t] = d
    type_order.append(t)
    return d['c']


# ---- classes, fields ----
QUAL = {'RO/runtime': 'API_Q_RO_RUNTIME', 'RO/constructor': 'API_Q_RO_CONSTRUCTOR', 'RW': 'API_Q_RW'}
for c in classes:
    c['fidx'] = {f['name']: i for i, f in enumerate(c['fields'])}
    c['has_name_label'] = 'name_label' in c['fidx']
    for f in c['fields']:
        parse_type(f['type'])
        if f['qualifier'] not in QUAL:
            die(f'{c["name"]}.{f["name"]}: bad qualifier')
for c in classes:
    for f in c['fields']:
        f['dcls'], f['dfield'] = -1, -1
        if 'derived_from' in f:
            sc, sf = f['derived_from'].split('.')
            if sc in cls_id:
                src = classes[cls_id[sc]]
                if sf not in src['fidx']:
                    die(f'{c["name"]}.{f["name"]}: no field {f["derived_from"]}')
                if types[src['fields'][src['fidx'][sf]]['type']]['kind'] != 'REF':
                    die(f'{f["derived_from"]} is not a ref')
                f['dcls'], f['dfield'] = cls_id[sc], src['fidx'][sf]


def is_derived(f):
    return f['dcls'] >= 0


def ctype_of(t):
    k = types[t]['kind']
    return {'STRING': 'char *', 'REF': 'char *', 'ENUM': 'char *', 'DATETIME': 'char *',
            'INT': 'int64_t ', 'FLOAT': 'double ', 'BOOL': 'bool '}.get(k, 'xv *')


def param_ctype(t):
    k = types[t]['kind']
    return {'STRING': 'const char *', 'REF': 'const char *', 'ENUM': 'const char *',
            'DATETIME': 'const char *', 'INT': 'int64_t ', 'FLOAT': 'double ',
            'BOOL': 'bool '}.get(k, 'const xv *')


def param_expr(t, i):
    k = types[t]['kind']
    if k in ('STRING', 'REF', 'ENUM', 'DATETIME'):
        return f'xv_str(args[{i}])'
    if k == 'INT':
        return f'args[{i}]->u.i'
    if k == 'FLOAT':
        return f'args[{i}]->u.f'
    if k == 'BOOL':
        return f'args[{i}]->u.b'
    return f'args[{i}]'


# ---- messages ----
messages = []  # dicts: wire, cls, name, kind, field, params[(name,type,required)], result, role, async, session, custom
role_idx = {r: i for i, r in enumerate(roles)}


def add_msg(c, name, kind, params, result, role, is_async=False, field=-1, session=True,
            custom=None):
    # implicit messages keep the parameter names the schema records for them
    spec = c['implicit'].get(name) if custom is None else None
    if isinstance(spec, dict) and len(spec.get('params', [])) == len(params):
        params = [(n, t, r) for n, (_, t, r) in zip(spec['params'], params)]
    if role not in role_idx:
        die(f'{c["name"]}.{name}: unknown role {role}')
    for p in params:
        parse_type(p[1])
    parse_type(result)
    messages.append({'wire': f'{c["name"]}.{name}', 'cls': cls_id[c['name']], 'name': name,
                     'kind': kind, 'field': field, 'params': params, 'result': result,
                     'role': role, 'async': is_async, 'session': session, 'custom': custom})


for c in classes:
    if not c.get('table', True):
        pass
    cn = c['name']
    ref = f'{cn} ref'
    impl = dict(c['implicit'])
    generated = set()

    def take(name, default_role=None):
        if name in impl:
            generated.add(name)
            v = impl[name]
            return v['role'] if isinstance(v, dict) else v
        return default_role

    if c.get('table', True):
        r = take('get_record', 'read-only')
        add_msg(c, 'get_record', 'GET_RECORD', [('self', ref, True)], f'{cn} record', r)
        r = take('get_by_uuid', 'read-only')
        add_msg(c, 'get_by_uuid', 'GET_BY_UUID', [('uuid', 'string', True)], ref, r)
        if c['has_name_label'] and 'get_by_name_label' in impl:
            add_msg(c, 'get_by_name_label', 'GET_BY_NAME_LABEL', [('label', 'string', True)],
                    f'{ref} set', take('get_by_name_label'))
        if 'get_all' in impl:
            add_msg(c, 'get_all', 'GET_ALL', [], f'{ref} set', take('get_all'))
        if 'get_all_records' in impl:
            add_msg(c, 'get_all_records', 'GET_ALL_RECORDS', [],
                    f'({ref} -> {cn} record) map', take('get_all_records'))
            r = take('get_all_records_where', 'read-only')
            add_msg(c, 'get_all_records_where', 'GET_ALL_RECORDS_WHERE', [('expr', 'string', True)],
                    f'({ref} -> {cn} record) map', r)
            add_msg(c, 'get_all_where', 'GET_ALL_WHERE', [('expr', 'string', True)], f'{ref} set',
                    'read-only')
        if 'create' in impl:
            add_msg(c, 'create', 'CREATE', [('args', f'{cn} record', True)], ref, take('create'),
                    is_async=True)
        if 'destroy' in impl:
            add_msg(c, 'destroy', 'DESTROY', [('self', ref, True)], 'void', take('destroy'),
                    is_async=True)
        for i, f in enumerate(c['fields']):
            fn = f['name']
            t = types[f['type']]
            add_msg(c, f'get_{fn}', 'GET_FIELD', [('self', ref, True)], f['type'],
                    take(f'get_{fn}', 'read-only'), field=i)
            # setters exist for RW fields, and for the few RO/constructor fields whose
            # setters the schema lists (XAPI's plain custom setters)
            if f'set_{fn}' in impl:
                add_msg(c, f'set_{fn}', 'SET_FIELD', [('self', ref, True), ('value', f['type'], True)],
                        'void', take(f'set_{fn}'), field=i)
            if t['kind'] == 'MAP':
                kt, vt = types[t['key']['text'] if False else None] if False else (None, None)
                ktext = [x for x in types if types[x]['c'] == t['key']][0]
                vtext = [x for x in types if types[x]['c'] == t['elem']][0]
                if f'add_to_{fn}' in impl:
                    add_msg(c, f'add_to_{fn}', 'ADD_TO_MAP',
                            [('self', ref, True), ('key', ktext, True), ('value', vtext, True)],
                            'void', take(f'add_to_{fn}'), field=i)
                if f'remove_from_{fn}' in impl:
                    add_msg(c, f'remove_from_{fn}', 'REMOVE_FROM_MAP',
                            [('self', ref, True), ('key', ktext, True)], 'void',
                            take(f'remove_from_{fn}'), field=i)
            if t['kind'] == 'SET':
                etext = [x for x in types if types[x]['c'] == t['elem']][0]
                if f'add_{fn}' in impl:
                    add_msg(c, f'add_{fn}', 'ADD_SET', [('self', ref, True), ('value', etext, True)],
                            'void', take(f'add_{fn}'), field=i)
                if f'remove_{fn}' in impl:
                    add_msg(c, f'remove_{fn}', 'REMOVE_SET',
                            [('self', ref, True), ('value', etext, True)], 'void',
                            take(f'remove_{fn}'), field=i)
    leftover = set(impl) - generated - {'get_all_records_where'}
    leftover = {x for x in leftover if not x.startswith('get_')}
    if leftover:
        die(f'{cn}: implicit messages the generator cannot derive: {sorted(leftover)}')
    for m in c['messages']:
        params = [(p['name'], p['type'], p['required']) for p in m['params']]
        add_msg(c, m['name'], 'CUSTOM', params, m['result'], m['min_role'],
                is_async=m.get('async', False), session=m.get('session', True), custom=m)

seen = set()
for m in messages:
    if m['wire'] in seen:
        die(f'duplicate message {m["wire"]}')
    seen.add(m['wire'])

os.makedirs(OUT, exist_ok=True)


def write(name, text):
    path = os.path.join(OUT, name)
    if os.path.exists(path) and open(path).read() == text:
        return
    with open(path, 'w') as fh:
        fh.write(text)


def cstr(s):
    return json.dumps(s)


# ---- api_gen.h ----
H = ['/* Generated by api-schema/gen.py from api-schema/. Do not edit. */', '#pragma once', '',
     '#include "api.h"', '#include <stdint.h>', '']
H.append('enum api_class_id {')
for c in classes:
    H.append(f'    API_CLASS_{cid(c["name"])} = {cls_id[c["name"]]},')
H.append('};')
H.append('')
for c in classes:
    for i, f in enumerate(c['fields']):
        H.append(f'#define API_F_{cid(c["name"])}_{cid(f["name"])} {i}')
H.append('')
for c in classes:
    H.append(f'/* Typed record of class {c["name"]}; free with api_record_free(). */')
    H.append(f'typedef struct api_rec_{cid(c["name"])} {{')
    for f in c['fields']:
        H.append(f'    {ctype_of(f["type"])}{cid(f["name"])};')
    H.append(f'}} api_rec_{cid(c["name"])};')
    H.append('')
for e, vals in sorted(enums.items()):
    H.append(f'extern const api_enum api_enum_{cid(e)};')
write('api_gen.h', '\n'.join(H) + '\n')

# ---- api_handlers.h: prototypes of hand-written custom messages ----
P = ['/* Generated by api-schema/gen.py: prototypes of the hand-written custom messages.',
     ' * Each returns NULL on success (setting *ret unless void) or the error. */', '#pragma once',
     '', '#include "api_gen.h"', '', 'struct api_ctx;', '']
for m in messages:
    if m['kind'] != 'CUSTOM':
        continue
    cn = classes[m['cls']]['name']
    args = ['struct api_ctx *ctx'] + [f'{param_ctype(p[1])}p_{cid(p[0])}' for p in m['params']]
    if m['result'] != 'void':
        args.append('xv **ret')
    P.append(f'/* {m["wire"]}: {m["result"]} */')
    P.append(f'xerr *api_{cid(cn)}_{cid(m["name"])}({", ".join(args)});')
write('api_handlers.h', '\n'.join(P) + '\n')

# ---- api_gen.c ----
C = ['/* Generated by api-schema/gen.py from api-schema/. Do not edit. */', '#include "api_gen.h"',
     '', '#include <stddef.h>', '']
for e, vals in sorted(enums.items()):
    C.append(f'static const char *const api_enum_{cid(e)}_values[] = {{{", ".join(cstr(v) for v in vals)}}};')
    C.append(f'const api_enum api_enum_{cid(e)} = {{{cstr(e)}, {len(vals)}, api_enum_{cid(e)}_values}};')
C.append('')
for t in type_order:
    C.append(f'static const api_type {types[t]["c"]};')
for t in type_order:
    d = types[t]
    en = f'&api_enum_{cid(d["en"])}' if d['en'] else 'NULL'
    elem = f'&{d["elem"]}' if d['elem'] else 'NULL'
    key = f'&{d["key"]}' if d['key'] else 'NULL'
    cn = cstr(d['cls_name']) if d['cls_name'] else 'NULL'
    C.append(f'static const api_type {d["c"]} = {{API_T_{d["kind"]}, {cstr(t)}, {en}, {d["cls"]}, {cn}, {elem}, {key}}};')
C.append('')
for c in classes:
    C.append(f'static const api_field fields_{cid(c["name"])}[] = {{')
    for f in c['fields']:
        dflt = cstr(json.dumps(f['default'])) if 'default' in f else 'NULL'
        C.append(f'    {{{cstr(f["name"])}, &{types[f["type"]]["c"]}, {QUAL[f["qualifier"]]}, {dflt}, '
                 f'{f["dcls"]}, {f["dfield"]}, offsetof(api_rec_{cid(c["name"])}, {cid(f["name"])})}},')
    C.append('};')
C.append('const api_class api_classes[] = {')
for c in classes:
    b = lambda x: 'true' if x else 'false'
    C.append(f'    {{{cls_id[c["name"]]}, {cstr(c["name"])}, {cstr(c["name"].lower())}, '
             f'{b(c.get("persisted", True))}, {b(c.get("table", True))}, {b(c.get("events", True))}, '
             f'{b(c["has_name_label"])}, {len(c["fields"])}, fields_{cid(c["name"])}, '
             f'sizeof(api_rec_{cid(c["name"])})}},')
C.append('};')
C.append(f'const size_t api_nclasses = {len(classes)};')
C.append('')
W = ['/* Generated by api-schema/gen.py: wrappers binding messages to hand-written handlers.',
     ' * Linked only into the server, so a missing handler fails its link. */',
     '#include "api_gen.h"', '#include "api_handlers.h"', '']
# wrappers
for m in messages:
    if m['kind'] != 'CUSTOM':
        continue
    cn = classes[m['cls']]['name']
    fn = f'api_{cid(cn)}_{cid(m["name"])}'
    call = ['ctx'] + [param_expr(p[1], i) for i, p in enumerate(m['params'])]
    if m['result'] != 'void':
        call.append('ret')
    W.append(f'static xerr *wrap_{cid(cn)}_{cid(m["name"])}(struct api_ctx *ctx, const xv *const *args, xv **ret)')
    W.append('{')
    W.append('    (void)args;')
    if m['result'] == 'void':
        W.append('    (void)ret;')
    W.append(f'    return {fn}({", ".join(call)});')
    W.append('}')
C.append('')
for k, m in enumerate(messages):
    if m['params']:
        C.append(f'static const api_param params_{k}[] = {{')
        for p in m['params']:
            C.append(f'    {{{cstr(p[0])}, &{types[p[1]]["c"]}, {"true" if p[2] else "false"}}},')
        C.append('};')
C.append('const api_message api_messages[] = {')
for k, m in enumerate(messages):
    cn = classes[m['cls']]['name']
    nreq = sum(1 for p in m['params'] if p[2])
    params = f'params_{k}' if m['params'] else 'NULL'
    C.append(f'    {{{cstr(m["wire"])}, {cstr(m["wire"].lower())}, {m["cls"]}, {cstr(m["name"])}, '
             f'API_M_{m["kind"]}, {m["field"]}, {len(m["params"])}, {nreq}, {params}, '
             f'&{types[m["result"]]["c"]}, {role_idx[m["role"]]}, {"true" if m["async"] else "false"}, '
             f'{"true" if m["session"] else "false"}}},')
C.append('};')
C.append(f'const size_t api_nmessages = {len(messages)};')
C.append('')
for i, e in enumerate(errors):
    if e['params']:
        C.append(f'static const char *const err_params_{i}[] = {{{", ".join(cstr(p) for p in e["params"])}}};')
C.append('const api_error_def api_errors[] = {')
for i, e in enumerate(errors):
    C.append(f'    {{{cstr(e["code"])}, {len(e["params"])}, {"err_params_%d" % i if e["params"] else "NULL"}}},')
C.append('};')
C.append(f'const size_t api_nerrors = {len(errors)};')
C.append(f'const char *const api_roles[] = {{{", ".join(cstr(r) for r in roles)}}};')
C.append(f'const size_t api_nroles = {len(roles)};')
C.append(f'const char api_schema_hash[] = {cstr(SCHEMA_HASH)};')

# ---- DDL ----
SQLT = {'STRING': 'TEXT', 'REF': 'TEXT', 'ENUM': 'TEXT', 'DATETIME': 'TEXT', 'INT': 'INTEGER',
        'FLOAT': 'REAL', 'BOOL': 'INTEGER', 'SET': 'TEXT', 'MAP': 'TEXT', 'RECORD': 'TEXT',
        'ANY': 'TEXT'}
ddl = []
ref_sources = set()
for c in classes:
    for f in c['fields']:
        if is_derived(f):
            ref_sources.add((f['dcls'], f['dfield']))
for c in classes:
    if not c.get('table', True):
        continue
    temp = '' if c.get('persisted', True) else 'TEMP '
    cols = ['"_ref" TEXT PRIMARY KEY', '"_gen" INTEGER NOT NULL', '"_cgen" INTEGER NOT NULL']
    for f in c['fields']:
        if is_derived(f):
            continue
        extra = ' NOT NULL UNIQUE' if f['name'] == 'uuid' else ''
        cols.append(f'"{f["name"]}" {SQLT[types[f["type"]]["kind"]]}{extra}')
    ddl.append(f'CREATE {temp}TABLE IF NOT EXISTS "{c["name"]}" ({", ".join(cols)})')
    ddl.append(f'CREATE INDEX IF NOT EXISTS "{c["name"]}__gen" ON "{c["name"]}" ("_gen")'
               if c.get('persisted', True) else
               f'CREATE INDEX IF NOT EXISTS temp."{c["name"]}__gen" ON "{c["name"]}" ("_gen")')
    for i, f in enumerate(c['fields']):
        if (cls_id[c['name']], i) in ref_sources or f['name'] == 'name_label':
            schema = '' if c.get('persisted', True) else 'temp.'
            ddl.append(f'CREATE INDEX IF NOT EXISTS {schema}"{c["name"]}_{f["name"]}" ON "{c["name"]}" ("{f["name"]}")')
C.append('const char *const api_ddl[] = {')
for d in ddl:
    C.append(f'    {cstr(d)},')
C.append('};')
C.append(f'const size_t api_nddl = {len(ddl)};')
write('api_gen.c', '\n'.join(C) + '\n')
W.append('const api_handler_fn api_handler_table[] = {')
for m in messages:
    cn = classes[m['cls']]['name']
    W.append(f'    wrap_{cid(cn)}_{cid(m["name"])},' if m['kind'] == 'CUSTOM' else '    NULL,')
W.append('};')
write('api_dispatch.c', '\n'.join(W) + '\n')

# ---- CLI tables ----
L = ['/* Generated by api-schema/gen.py: tables for the xe CLI. Do not edit. */', '#include "api_cli.h"', '']
for c in classes:
    if not c.get('table', True):
        continue
    L.append(f'static const api_cli_field cli_fields_{cid(c["name"])}[] = {{')
    for i, f in enumerate(c['fields']):
        k = types[f['type']]['kind']
        rw = f['qualifier'] == 'RW'
        tag = ('M' if k == 'MAP' else 'S' if k == 'SET' else '') + ('RW' if rw else 'RO')
        L.append(f'    {{{cstr(f["name"].replace("_", "-"))}, {i}, {cstr(tag)}}},')
    L.append('};')
L.append('const api_cli_class api_cli_classes[] = {')
for c in classes:
    if not c.get('table', True):
        continue
    L.append(f'    {{{cstr(c["name"].lower().replace("_", "-"))}, {cls_id[c["name"]]}, '
             f'{len(c["fields"])}, cli_fields_{cid(c["name"])}}},')
L.append('};')
L.append(f'const size_t api_cli_nclasses = {sum(1 for c in classes if c.get("table", True))};')
write('api_cli.c', '\n'.join(L) + '\n')
write('api_cli.h', '''/* Generated by api-schema/gen.py: tables for the xe CLI. */
#pragma once

#include "api_gen.h"

typedef struct api_cli_field {
    const char *cli_name; /* name-label */
    int field;            /* index into the class's fields */
    const char *tag;      /* RO RW MRO MRW SRO SRW */
} api_cli_field;

typedef struct api_cli_class {
    const char *cli_name; /* vm, host, vm-metrics */
    int cls;
    size_t nfields;
    const api_cli_field *fields;
} api_cli_class;

extern const api_cli_class api_cli_classes[];
extern const size_t api_cli_nclasses;
''')

# ---- Markdown reference ----
D = ['# Nuvem XenAPI reference', '', f'Generated from api-schema/ (schema hash `{SCHEMA_HASH[:16]}`).',
     '', '## Roles', '', ' < '.join(roles), '', '## Errors', '']
for e in errors:
    D.append(f'- `{e["code"]}` [{", ".join(e["params"])}]')
for c in classes:
    D += ['', f'## Class `{c["name"]}`', '', '| field | type | qualifier |', '|---|---|---|']
    for f in c['fields']:
        q = f['qualifier'] + (f' (derived from {f["derived_from"]})' if is_derived(f) else '')
        D.append(f'| `{f["name"]}` | `{f["type"]}` | {q} |')
    D += ['', '| message | params | result | min role | async |', '|---|---|---|---|---|']
    for m in messages:
        if m['cls'] != cls_id[c['name']]:
            continue
        ps = ', '.join(f'{p[1]} {p[0]}' + ('' if p[2] else '?') for p in m['params'])
        D.append(f'| `{m["wire"]}` | {ps} | `{m["result"]}` | {m["role"]} | {"yes" if m["async"] else ""} |')
write('api-reference.md', '\n'.join(D) + '\n')
