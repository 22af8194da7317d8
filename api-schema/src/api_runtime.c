/* Lookups, type checking and typed-record conversion over the generated API tables. */
#define _GNU_SOURCE
#include "api_gen.h"
#include "mem.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- message lookup: an open-addressing hash built once ---- */

static const api_message **msg_slots;
static size_t msg_nslots;
static pthread_once_t msg_once = PTHREAD_ONCE_INIT;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void msg_build(void)
{
    msg_nslots = 1;
    while (msg_nslots < api_nmessages * 2)
        msg_nslots *= 2;
    msg_slots = xcalloc(msg_nslots, sizeof(*msg_slots));
    for (size_t i = 0; i < api_nmessages; i++) {
        size_t k = hash_str(api_messages[i].wire) & (msg_nslots - 1);
        while (msg_slots[k])
            k = (k + 1) & (msg_nslots - 1);
        msg_slots[k] = &api_messages[i];
    }
}

const api_message *api_message_lookup(const char *wire)
{
    pthread_once(&msg_once, msg_build);
    size_t k = hash_str(wire) & (msg_nslots - 1);
    while (msg_slots[k]) {
        if (strcmp(msg_slots[k]->wire, wire) == 0)
            return msg_slots[k];
        k = (k + 1) & (msg_nslots - 1);
    }
    return NULL;
}

const api_class *api_class_by_name(const char *name)
{
    for (size_t i = 0; i < api_nclasses; i++)
        if (strcmp(api_classes[i].name, name) == 0)
            return &api_classes[i];
    return NULL;
}

const api_class *api_class_by_name_ci(const char *name)
{
    for (size_t i = 0; i < api_nclasses; i++)
        if (strcasecmp(api_classes[i].name, name) == 0)
            return &api_classes[i];
    return NULL;
}

const api_error_def *api_error_lookup(const char *code)
{
    for (size_t i = 0; i < api_nerrors; i++)
        if (strcmp(api_errors[i].code, code) == 0)
            return &api_errors[i];
    return NULL;
}

int api_role_rank(const char *role)
{
    for (size_t i = 0; i < api_nroles; i++)
        if (strcmp(api_roles[i], role) == 0)
            return (int)i;
    return -1;
}

int api_field_index(const api_class *c, const char *name)
{
    for (size_t i = 0; i < c->nfields; i++)
        if (strcmp(c->fields[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* ---- type checking ---- */

xv *api_type_zero(const api_type *t)
{
    switch (t->kind) {
    case API_T_INT:
        return xv_new_int(0);
    case API_T_FLOAT:
        return xv_new_float(0);
    case API_T_BOOL:
        return xv_new_bool(false);
    case API_T_DATETIME:
        return xv_new_datetime("19700101T00:00:00Z");
    case API_T_REF:
        return xv_new_string("OpaqueRef:NULL");
    case API_T_ENUM:
        return xv_new_string(t->en->n ? t->en->values[0] : "");
    case API_T_SET:
        return xv_new_array();
    case API_T_MAP:
    case API_T_RECORD:
    case API_T_ANY:
        return xv_new_struct();
    case API_T_VOID:
    case API_T_STRING:
        return xv_new_string("");
    }
    return xv_new_string("");
}

xv *api_field_default(const api_field *f)
{
    if (!f->default_json)
        return api_type_zero(f->type);
    AUTO(xv) *raw = xv_from_json(f->default_json, strlen(f->default_json));
    xerr *e = NULL;
    xv *v = raw ? api_type_check(f->type, raw, f->name, &e) : NULL;
    if (!v) {
        xerr_free(e);
        return api_type_zero(f->type);
    }
    return v;
}

static xv *type_error(const char *what, xerr **ret_err)
{
    *ret_err = xerr_new("FIELD_TYPE_ERROR", what);
    return NULL;
}

static bool parse_int64(const char *s, int64_t *ret)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *ret = v;
    return true;
}

static xv *check_string(const xv *v, const char *what, xerr **ret_err)
{
    if (v->kind != XV_STRING)
        return type_error(what, ret_err);
    if (!utf8_valid(v->u.str.s, v->u.str.len)) {
        *ret_err = xerr_new("INVALID_VALUE", "Invalid UTF-8 string in parameter", what);
        return NULL;
    }
    return xv_copy(v);
}

/* Map keys arrive as strings (XML-RPC struct member names, JSON object keys). */
static xv *check_key(const api_type *t, const char *key, const char *what, xerr **ret_err)
{
    AUTO(xv) *k = xv_new_string(key);
    return api_type_check(t, k, what, ret_err);
}

static const char *key_text(const xv *k, char buf[static 32])
{
    if (k->kind == XV_INT) {
        snprintf(buf, 32, "%" PRId64, k->u.i);
        return buf;
    }
    return xv_str(k) ? xv_str(k) : "";
}

xv *api_type_check(const api_type *t, const xv *v, const char *what, xerr **ret_err)
{
    if (!v)
        return type_error(what, ret_err);
    switch (t->kind) {
    case API_T_VOID:
        return xv_new_string("");
    case API_T_STRING:
        return check_string(v, what, ret_err);
    case API_T_REF:
        if (v->kind != XV_STRING)
            return type_error(what, ret_err);
        return check_string(v, what, ret_err);
    case API_T_INT: {
        int64_t i;
        if (v->kind == XV_INT)
            return xv_new_int(v->u.i);
        if (v->kind == XV_STRING && parse_int64(v->u.str.s, &i))
            return xv_new_int(i);
        return type_error(what, ret_err);
    }
    case API_T_FLOAT:
        if (v->kind == XV_FLOAT)
            return xv_new_float(v->u.f);
        if (v->kind == XV_INT)
            return xv_new_float((double)v->u.i);
        if (v->kind == XV_STRING && v->u.str.len) {
            char *end;
            double d = strtod(v->u.str.s, &end);
            if (!*end && !isnan(d))
                return xv_new_float(d);
        }
        return type_error(what, ret_err);
    case API_T_BOOL:
        if (v->kind == XV_BOOL)
            return xv_new_bool(v->u.b);
        if (v->kind == XV_STRING) {
            if (strcasecmp(v->u.str.s, "true") == 0 || strcmp(v->u.str.s, "1") == 0)
                return xv_new_bool(true);
            if (strcasecmp(v->u.str.s, "false") == 0 || strcmp(v->u.str.s, "0") == 0)
                return xv_new_bool(false);
        }
        return type_error(what, ret_err);
    case API_T_DATETIME: {
        int64_t ts;
        if ((v->kind == XV_DATETIME || v->kind == XV_STRING) && xv_parse_datetime(v->u.str.s, &ts))
            return xv_new_datetime_epoch(ts);
        return type_error(what, ret_err);
    }
    case API_T_ENUM:
        if (v->kind == XV_STRING)
            for (size_t i = 0; i < t->en->n; i++)
                if (strcasecmp(t->en->values[i], v->u.str.s) == 0)
                    return xv_new_string(t->en->values[i]);
        if (v->kind == XV_STRING && utf8_valid(v->u.str.s, v->u.str.len)) {
            *ret_err = xerr_new("INVALID_VALUE", what, v->u.str.s);
            return NULL;
        }
        return type_error(what, ret_err);
    case API_T_SET: {
        if (v->kind != XV_ARRAY)
            return type_error(what, ret_err);
        AUTO(xv) *out = xv_new_array();
        for (size_t i = 0; i < v->u.arr.n; i++) {
            xv *e = api_type_check(t->elem, v->u.arr.items[i], what, ret_err);
            if (!e)
                return NULL;
            xv_array_append(out, e);
        }
        return TAKE_PTR(out);
    }
    case API_T_MAP: {
        if (v->kind != XV_STRUCT)
            return type_error(what, ret_err);
        AUTO(xv) *out = xv_new_struct();
        for (size_t i = 0; i < v->u.st.n; i++) {
            AUTO(xv) *k = check_key(t->key, v->u.st.keys[i], what, ret_err);
            if (!k)
                return NULL;
            xv *e = api_type_check(t->elem, v->u.st.vals[i], what, ret_err);
            if (!e)
                return NULL;
            char buf[32];
            xv_struct_set(out, key_text(k, buf), e);
        }
        return TAKE_PTR(out);
    }
    case API_T_RECORD: {
        if (v->kind != XV_STRUCT)
            return type_error(what, ret_err);
        const api_class *c = &api_classes[t->cls];
        AUTO(xv) *out = xv_new_struct();
        for (size_t i = 0; i < c->nfields; i++) {
            const api_field *f = &c->fields[i];
            const xv *m = xv_struct_get(v, f->name);
            xv *e;
            if (m) {
                AUTOFREE char *fw = xasprintf("%s", f->name);
                e = api_type_check(f->type, m, fw, ret_err);
                if (!e)
                    return NULL;
            } else if (!f->default_json && f->qual != API_Q_RO_RUNTIME && f->derived_cls < 0) {
                /* a constructor argument without a default must be given */
                return type_error(f->name, ret_err);
            } else
                e = api_field_default(f);
            xv_struct_set(out, f->name, e);
        }
        return TAKE_PTR(out);
    }
    case API_T_ANY:
        return xv_copy(v);
    }
    return type_error(what, ret_err);
}

/* ---- typed records ---- */

void *api_record_from_xv(const api_class *c, const xv *rec)
{
    char *r = xcalloc(1, c->rec_size);
    for (size_t i = 0; i < c->nfields; i++) {
        const api_field *f = &c->fields[i];
        const xv *v = xv_struct_get(rec, f->name);
        AUTO(xv) *dflt = v ? NULL : api_field_default(f);
        if (!v)
            v = dflt;
        void *slot = r + f->rec_offset;
        switch (f->type->kind) {
        case API_T_STRING:
        case API_T_REF:
        case API_T_ENUM:
        case API_T_DATETIME:
            *(char **)slot = xstrdup(xv_str(v) ? xv_str(v) : "");
            break;
        case API_T_INT:
            *(int64_t *)slot = v->kind == XV_INT ? v->u.i : 0;
            break;
        case API_T_FLOAT:
            *(double *)slot = v->kind == XV_FLOAT ? v->u.f : v->kind == XV_INT ? (double)v->u.i : 0;
            break;
        case API_T_BOOL:
            *(bool *)slot = v->kind == XV_BOOL && v->u.b;
            break;
        default:
            *(xv **)slot = xv_copy(v);
            break;
        }
    }
    return r;
}

xv *api_record_to_xv(const api_class *c, const void *rec)
{
    const char *r = rec;
    xv *out = xv_new_struct();
    for (size_t i = 0; i < c->nfields; i++) {
        const api_field *f = &c->fields[i];
        const void *slot = r + f->rec_offset;
        xv *v;
        switch (f->type->kind) {
        case API_T_STRING:
        case API_T_REF:
        case API_T_ENUM:
            v = xv_new_string(*(char *const *)slot);
            break;
        case API_T_DATETIME:
            v = xv_new_datetime(*(char *const *)slot ? *(char *const *)slot : "");
            break;
        case API_T_INT:
            v = xv_new_int(*(const int64_t *)slot);
            break;
        case API_T_FLOAT:
            v = xv_new_float(*(const double *)slot);
            break;
        case API_T_BOOL:
            v = xv_new_bool(*(const bool *)slot);
            break;
        default:
            v = *(xv *const *)slot ? xv_copy(*(xv *const *)slot) : api_type_zero(f->type);
            break;
        }
        xv_struct_set(out, f->name, v);
    }
    return out;
}

void api_record_free(const api_class *c, void *rec)
{
    if (!rec)
        return;
    char *r = rec;
    for (size_t i = 0; i < c->nfields; i++) {
        const api_field *f = &c->fields[i];
        void *slot = r + f->rec_offset;
        switch (f->type->kind) {
        case API_T_STRING:
        case API_T_REF:
        case API_T_ENUM:
        case API_T_DATETIME:
            free(*(char **)slot);
            break;
        case API_T_INT:
        case API_T_FLOAT:
        case API_T_BOOL:
            break;
        default:
            xv_free(*(xv **)slot);
            break;
        }
    }
    free(r);
}
