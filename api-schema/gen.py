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
all_errors = json.load(open(os.path.join(SCHEMA, 'errors.json')))['errors']
# the server's catalogue; cli_only entries are XCP errors only xe's texts know
errors = [e for e in all_errors if not e.get('cli_only')]
# XCP's CLI views of the classes (cli/<class>.json), read by the CLI-table section below
cli_files = sorted(fn for fn in os.listdir(os.path.join(SCHEMA, 'cli')) if fn.endswith('.json'))
cli_decls = [json.load(open(os.path.join(SCHEMA, 'cli', fn))) for fn in cli_files]
roles = json.load(open(os.path.join(SCHEMA, 'roles.json')))['roles']

h = hashlib.sha256()
for fn in sorted(os.listdir(os.path.join(SCHEMA, 'classes'))):
    h.update(open(os.path.join(SCHEMA, 'classes', fn), 'rb').read())
h.update(open(os.path.join(SCHEMA, 'errors.json'), 'rb').read())
h.update(open(os.path.join(SCHEMA, 'roles.json'), 'rb').read())
for fn in cli_files:
    h.update(open(os.path.join(SCHEMA, 'cli', fn), 'rb').read())
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

# ---- CLI tables: XCP's views of the classes (cli/<class>.json) and error texts ----
# A cli/<class>.json declares, for one API class, the views xe shows of it and their columns:
#   {"class": "VM",
#    "views": [{"cli": "vm", "standard": true, "list": ["name-label", ...],
#               "filters": ["is-a-template=false"], "plural": "vms",
#               "selector": {"match": ["uuid", "name-label"], "implicit": ["is-a-template=false"],
#                            "help_param": "<vm-selectors>", "help": "...",
#                            "none": "...", "many": "...", "one": "..."}}, ...],
#    "columns": [{"name": "memory-actual", "field": "metrics>memory_actual",
#                 "flags": ["hidden", "plain", "values", "ro", "deprecated", "comma"]}, ...]}
# "list": the columns <cli>-list shows by default (absent: all); "filters": implicit -list
# filters; "plural" defaults to cli + "s"; "standard": in plain "xe help"; "selector": XCP's
# <cli>=<name or uuid> pseudo-field for operations (api_cli_sel_<cli>). "field" is a field of
# the class, or "ref>field": a field of the object the reference ref points to (shown RO).
# No "columns": every field of the class, named with '_' -> '-'. Flags: hidden (not shown by
# -list/-param-list), plain (a set/map tagged like a scalar), values (a map shown as the set of
# its values), ro (XCP offers no setter, whatever setters the API has), deprecated, comma (set
# members joined with ", "; always for "tags"). Access tags are computed as XCP's records do:
# a scalar is RW when its setter message exists, a map MRW / a set SRW when its add_to_/add_
# message does. errors.json gives each error's "doc" and, where XCP prints other names than
# the API's params, "cli_params".
CLI_KEYS = {'file': {'_doc', 'class', 'views', 'columns'},
            'view': {'cli', 'plural', 'standard', 'list', 'filters', 'selector'},
            'column': {'name', 'field', 'flags'},
            'selector': {'match', 'implicit', 'help_param', 'help', 'none', 'many', 'one'}}


def cli_check_keys(what, d, where):
    extra = set(d) - CLI_KEYS[what]
    if extra:
        die(f'{where}: unknown {what} keys {sorted(extra)}')


CLI_FLAGS = {'hidden': 1, 'plain': 2, 'values': 4, 'ro': 8, 'deprecated': 16, 'comma': 32}
wires = {m['wire'] for m in messages}


def cli_tag(c, f, flags):
    """The access tag XCP would print for field f of class c shown with flags."""
    kind = types[f['type']]['kind']
    ro = flags & CLI_FLAGS['ro']
    can_set = not ro and f'{c["name"]}.set_{f["name"]}' in wires
    if flags & CLI_FLAGS['plain']:
        return ' RW' if can_set and kind not in ('SET', 'MAP') else ' RO'
    if kind == 'MAP' and flags & CLI_FLAGS['values']:
        return 'SRO'
    if kind == 'SET':
        return 'SRW' if not ro and f'{c["name"]}.add_{f["name"]}' in wires else 'SRO'
    if kind == 'MAP':
        return 'MRW' if not ro and f'{c["name"]}.add_to_{f["name"]}' in wires else 'MRO'
    return ' RW' if can_set else ' RO'


def cli_columns(c, decl):
    """[(name, via, cls, field, flags, tag)] of a class's CLI declaration."""
    where = f'cli/{c["name"]}.json'
    if 'columns' not in decl:
        decl_cols = [{'name': f['name'].replace('_', '-'), 'field': f['name'],
                      'flags': ['values'] if f['name'] == 'current_operations' else []}
                     for f in c['fields']]
    else:
        decl_cols = decl['columns']
    out, names = [], set()
    for col in decl_cols:
        cli_check_keys('column', col, where)
        name, field = col['name'], col['field']
        if name in names:
            die(f'{where}: column {name} twice')
        names.add(name)
        flags = 0
        for fl in col.get('flags', []):
            if fl not in CLI_FLAGS:
                die(f'{where}: {name}: unknown flag {fl}')
            flags |= CLI_FLAGS[fl]
        if name == 'tags':
            flags |= CLI_FLAGS['comma']  # XCP joins tags with ", " everywhere
        via, tc = -1, c
        if '>' in field:
            rf, field = field.split('>', 1)
            if rf not in c['fidx']:
                die(f'{where}: {name}: no field {rf}')
            t = types[c['fields'][c['fidx'][rf]]['type']]
            if t['kind'] != 'REF' or t['cls'] < 0:
                die(f'{where}: {name}: {rf} is not a reference to a known class')
            via, tc = c['fidx'][rf], classes[t['cls']]
            flags |= CLI_FLAGS['ro']
        if field not in tc['fidx']:
            die(f'{where}: {name}: no field {tc["name"]}.{field}')
        f = tc['fields'][tc['fidx'][field]]
        out.append((name, via, cls_id[tc['name']], tc['fidx'][field], flags, cli_tag(tc, f, flags)))
    if not out or out[0][0] != 'uuid':
        die(f'{where}: the first column must be uuid (--minimal prints it)')
    return out


def cli_selector(c, v, colnames):
    """The C definition of a view's selector (XCP's vm=/host=/sr= pseudo-field)."""
    sel, key, where = v['selector'], v['cli'], f'cli/{c["name"]}.json: {v["cli"]} selector'
    cli_check_keys('selector', sel, where)
    for col in sel['match']:
        if col not in colnames:
            die(f'{where}: unknown column {col}')
    implicit = []
    for flt in sel.get('implicit', []):
        k, eq, val = flt.partition('=')
        if not eq or k not in colnames:
            die(f'{where}: bad implicit filter {flt}')
        implicit.append((k, val))
    n = cid(key)
    L.append(f'static const char *const cli_sel_match_{n}[] = '
             f'{{{", ".join(cstr(x) for x in sel["match"])}, NULL}};')
    if implicit:
        L.append(f'static const api_cli_kv cli_sel_implicit_{n}[] = '
                 f'{{{", ".join("{%s, %s}" % (cstr(a), cstr(b)) for a, b in implicit)}}};')
    L.append(f'const api_cli_selector api_cli_sel_{n} = {{{cstr(key)}, {cstr(key)}, '
             f'cli_sel_match_{n}, {f"cli_sel_implicit_{n}" if implicit else "NULL"}, '
             f'{len(implicit)}, {cstr(sel["help_param"])}, {cstr(" " + sel["help"])}, '
             f'{cstr(sel["none"])}, {cstr(sel["many"])}, {cstr(sel["one"])}}};')
    return n


cli_views = []  # (view decl, class, columns id)
cli_selectors = []  # C names of the selectors
L = ['/* Generated by api-schema/gen.py from api-schema/cli/ and errors.json: XCP\'s CLI data for',
     ' * xe. Do not edit. */', '#include "api_cli.h"', '', '#include <stddef.h>', '']
cli_classes = sorted(cli_decls, key=lambda d: (cls_id[d['class']] if d['class'] in cls_id
                                                else die(f'cli: unknown class {d["class"]}')))
seen_cli = set()
for fn, decl in zip(cli_files, cli_decls):
    cli_check_keys('file', decl, f'cli/{fn}')
    if fn != decl['class'] + '.json':
        die(f'cli/{fn}: declares class {decl["class"]}')
for decl in cli_classes:
    c = classes[cls_id[decl['class']]]
    if not c.get('table', True):
        die(f'cli/{c["name"]}.json: class {c["name"]} has no records')
    cols = cli_columns(c, decl)
    colnames = {x[0] for x in cols}
    L.append(f'static const api_cli_col cli_cols_{cid(c["name"])}[] = {{')
    for name, via, tc, fi, flags, tag in cols:
        tn = classes[tc]['name']
        cvia = f'API_F_{cid(c["name"])}_{cid(c["fields"][via]["name"])}' if via >= 0 else '-1'
        cfl = ' | '.join(f'API_CLI_{k.upper()}' for k, b in CLI_FLAGS.items() if flags & b) or '0'
        L.append(f'    {{{cstr(name)}, {cvia}, API_CLASS_{cid(tn)}, '
                 f'API_F_{cid(tn)}_{cid(classes[tc]["fields"][fi]["name"])}, {cfl}, {cstr(tag)}}},')
    L.append('};')
    for v in decl['views']:
        cli_check_keys('view', v, f'cli/{c["name"]}.json')
        if v['cli'] in seen_cli:
            die(f'cli: view {v["cli"]} twice')
        seen_cli.add(v['cli'])
        k = len(cli_views)
        for col in v.get('list', []):
            if col not in colnames:
                die(f'cli/{c["name"]}.json: view {v["cli"]} lists unknown column {col}')
        if 'list' in v:
            L.append(f'static const char *const cli_list_{k}[] = '
                     f'{{{", ".join(cstr(x) for x in v["list"])}, NULL}};')
        filters = []
        for flt in v.get('filters', []):
            key, eq, val = flt.partition('=')
            if not eq or key not in colnames:
                die(f'cli/{c["name"]}.json: view {v["cli"]}: bad filter {flt}')
            filters.append((key, val))
        if filters:
            L.append(f'static const api_cli_kv cli_filters_{k}[] = '
                     f'{{{", ".join("{%s, %s}" % (cstr(a), cstr(b)) for a, b in filters)}}};')
        cli_views.append((v, c, len(cols), filters))
        if 'selector' in v:
            cli_selectors.append(cli_selector(c, v, colnames))
L.append('')
L.append('const api_cli_view api_cli_views[] = {')
for k, (v, c, ncols, filters) in enumerate(cli_views):
    lst = f'cli_list_{k}' if 'list' in v else 'NULL'
    flt = f'cli_filters_{k}' if filters else 'NULL'
    plural = v.get('plural', v['cli'] + 's')
    L.append(f'    {{{cstr(v["cli"])}, API_CLASS_{cid(c["name"])}, {cstr(plural)}, '
             f'{"true" if v.get("standard") else "false"}, {lst}, {len(filters)}, {flt}, {ncols}, '
             f'cli_cols_{cid(c["name"])}}},')
L.append('};')
L.append(f'const size_t api_cli_nviews = {len(cli_views)};')
L.append('')
codes = set()
for e in all_errors:
    if e['code'] in codes:
        die(f'errors.json: {e["code"]} twice')
    codes.add(e['code'])
    if 'doc' not in e and ('cli_params' in e or e.get('cli_only')):
        die(f'errors.json: {e["code"]}: cli_params/cli_only without a doc')
cli_errors = [e for e in all_errors if 'doc' in e]
for i, e in enumerate(cli_errors):
    ps = e.get('cli_params', e['params'])
    if ps:
        L.append(f'static const char *const cli_err_params_{i}[] = '
                 f'{{{", ".join(cstr(p) for p in ps)}, NULL}};')
L.append('const api_cli_error api_cli_errors[] = {')
for i, e in enumerate(cli_errors):
    ps = 'cli_err_params_%d' % i if e.get('cli_params', e['params']) else 'NULL'
    L.append(f'    {{{cstr(e["code"])}, {cstr(e["doc"])}, {ps}}},')
L.append('};')
L.append(f'const size_t api_cli_nerrors = {len(cli_errors)};')
write('api_cli.c', '\n'.join(L) + '\n')
write('api_cli.h', '''/* Generated by api-schema/gen.py from api-schema/cli/ and errors.json: XCP's CLI
 * data for xe. Do not edit. */
#pragma once

#include "api_gen.h"

#include <stdbool.h>
#include <stddef.h>

/* Column flags (api-schema/cli/<class>.json "flags"). */
enum {
    API_CLI_HIDDEN = 1,      /* not shown by -list/-param-list */
    API_CLI_PLAIN = 2,       /* a set/map shown and tagged like a scalar (XCP's task error_info) */
    API_CLI_VALUES = 4,      /* a map shown as the set of its values (current-operations) */
    API_CLI_RO = 8,          /* never settable from the CLI (also every ref>field column) */
    API_CLI_DEPRECATED = 16, /* " [DEPRECATED]" after the tag */
    API_CLI_COMMA = 32,      /* set members joined with ", " (XCP's quirk; every "tags" column) */
};

/* One column of a view, resolved against the API tables. */
typedef struct api_cli_col {
    const char *name; /* XCP's name: "name-label", "memory-actual" */
    int via;          /* field of the view's class whose reference is followed first, or -1 */
    int cls;          /* class of the field shown: the view's, or the one via points to */
    int field;        /* index of the field shown in that class */
    unsigned flags;   /* API_CLI_* */
    const char *tag;  /* " RO" " RW" "SRO" "SRW" "MRO" "MRW", from the setters that exist */
} api_cli_col;

typedef struct api_cli_kv {
    const char *key;
    const char *val;
} api_cli_kv;

/* What one family of xe commands (<cli>-list, -param-*, -destroy) shows of a class. */
typedef struct api_cli_view {
    const char *cli;                  /* "vm", "template", "host-cpu" */
    int cls;                          /* API class id */
    const char *plural;               /* "vms" (-list's help) */
    bool standard;                    /* -list in plain "xe help"'s common commands */
    const char *const *list_defaults; /* NULL-terminated columns -list shows; NULL: all */
    size_t nfilters;
    const api_cli_kv *filters; /* implicit -list filters (vm: is-a-template=false) */
    size_t ncols;
    const api_cli_col *cols; /* uuid first */
} api_cli_view;

extern const api_cli_view api_cli_views[];
extern const size_t api_cli_nviews;

/* XCP's text for an error code: its doc sentence and the param names xe prints. */
typedef struct api_cli_error {
    const char *code;
    const char *doc;
    const char *const *params; /* NULL-terminated, or NULL */
} api_cli_error;

extern const api_cli_error api_cli_errors[];
extern const size_t api_cli_nerrors;

/* XCP's selectors: the pseudo-field vm=<name or uuid> (host=, sr=) plus field filters that
 * choose the objects an operation runs on (a view's "selector"). */
typedef struct api_cli_selector {
    const char *view;              /* whose columns filters name: "vm" */
    const char *key;               /* the pseudo-field: "vm" */
    const char *const *key_fields; /* columns the pseudo-field matches: uuid, name-label */
    const api_cli_kv *implicit;    /* filters XCP adds (is-a-template=false ...) */
    size_t nimplicit;
    const char *help_param; /* "<vm-selectors>" in help's optional params */
    const char *help_info;  /* appended to the command's description (leading space) */
    const char *none_msg, *many_msg, *one_msg;
} api_cli_selector;

''' + ''.join(f'extern const api_cli_selector api_cli_sel_{n};\n' for n in cli_selectors))

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
