/* The generated messages (getters, setters, map/set edits, records, create/destroy),
 * implemented once over the class tables and the store. */
#define _GNU_SOURCE
#include "xapid.h"
#include "log.h"
#include "mem.h"
#include "sbuf.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

struct imp {
    api_ctx *ctx;
    const api_message *m;
    const api_class *c;
    const xv *const *args;
    xv *ret;
};

static const char *key_of(const xv *k, char buf[static 32])
{
    if (k->kind == XV_INT) {
        snprintf(buf, 32, "%" PRId64, k->u.i);
        return buf;
    }
    return xv_str(k) ? xv_str(k) : "";
}

/* Refs stored in fields must name live objects of classes we implement. */
static xerr *check_refs(store_txn *t, const api_type *ty, const xv *v)
{
    if (ty->kind == API_T_REF && ty->cls >= 0) {
        const char *r = xv_str(v);
        if (r && strcmp(r, "OpaqueRef:NULL") != 0 && api_classes[ty->cls].table &&
            !st_exists(t, &api_classes[ty->cls], r))
            return xerr_new("HANDLE_INVALID", api_classes[ty->cls].name, r);
    } else if (ty->kind == API_T_SET) {
        for (size_t i = 0; i < xv_array_len(v); i++) {
            xerr *e = check_refs(t, ty->elem, xv_array_get(v, i));
            if (e)
                return e;
        }
    }
    return NULL;
}

static xerr *do_read(store_txn *t, void *ud)
{
    struct imp *p = ud;
    const char *self = p->m->nparams ? xv_str(p->args[0]) : NULL;
    switch (p->m->kind) {
    case API_M_GET_FIELD:
        return st_get_field(t, p->c, self, p->m->field, &p->ret);
    case API_M_GET_RECORD:
        return st_get_record(t, p->c, self, &p->ret);
    case API_M_GET_ALL:
        return st_get_all(t, p->c, NULL, NULL, 0, &p->ret);
    case API_M_GET_ALL_RECORDS:
        return st_get_all_records(t, p->c, NULL, NULL, 0, &p->ret);
    case API_M_GET_ALL_RECORDS_WHERE:
    case API_M_GET_ALL_WHERE: {
        AUTOFREE char *sql = NULL;
        AUTO(xv) *wargs = NULL;
        xerr *e = where_to_sql(p->c, xv_str(p->args[0]), &sql, &wargs);
        if (e)
            return e;
        const xv *const *a = (const xv *const *)wargs->u.arr.items;
        size_t n = xv_array_len(wargs);
        return p->m->kind == API_M_GET_ALL_WHERE ? st_get_all(t, p->c, sql, a, n, &p->ret)
                                                 : st_get_all_records(t, p->c, sql, a, n, &p->ret);
    }
    case API_M_GET_BY_UUID: {
        char *ref = NULL;
        xerr *e = st_ref_by_uuid(t, p->c, xv_str(p->args[0]), &ref);
        if (e)
            return e;
        p->ret = xv_new_string_take(ref);
        return NULL;
    }
    case API_M_GET_BY_NAME_LABEL: {
        const xv *a[] = {p->args[0]};
        return st_get_all(t, p->c, "\"name_label\" = ?", a, 1, &p->ret);
    }
    default:
        return xerr_internal("not a read");
    }
}

static xerr *do_write(store_txn *t, void *ud)
{
    struct imp *p = ud;
    const char *self = xv_str(p->args[0]);
    const api_field *f = p->m->field >= 0 ? &p->c->fields[p->m->field] : NULL;
    xerr *e;
    switch (p->m->kind) {
    case API_M_SET_FIELD:
        if ((e = check_refs(t, f->type, p->args[1])))
            return e;
        return st_set_field(t, p->c, self, p->m->field, p->args[1]);
    case API_M_ADD_TO_MAP:
    case API_M_REMOVE_FROM_MAP:
    case API_M_ADD_SET:
    case API_M_REMOVE_SET: {
        AUTO(xv) *cur = NULL;
        if ((e = st_get_field(t, p->c, self, p->m->field, &cur)))
            return e;
        if (p->m->kind == API_M_ADD_TO_MAP) {
            char buf[32];
            const char *k = key_of(p->args[1], buf);
            if (xv_struct_get(cur, k)) {
                AUTO(xv) *uuid = NULL;
                st_get_field(t, p->c, self, api_field_index(p->c, "uuid"), &uuid);
                return xerr_new("MAP_DUPLICATE_KEY", p->c->name, f->name,
                                xv_str(uuid) ? xv_str(uuid) : "", k);
            }
            xv_struct_set(cur, k, xv_copy(p->args[2]));
        } else if (p->m->kind == API_M_REMOVE_FROM_MAP) {
            char buf[32];
            if (!xv_struct_del(cur, key_of(p->args[1], buf)))
                return NULL; /* removing a missing key is a no-op */
        } else {
            ssize_t at = -1;
            for (size_t i = 0; i < xv_array_len(cur); i++)
                if (xv_equal(xv_array_get(cur, i), p->args[1]))
                    at = (ssize_t)i;
            if (p->m->kind == API_M_ADD_SET) {
                if (at >= 0)
                    return NULL;
                if ((e = check_refs(t, f->type->elem, p->args[1])))
                    return e;
                xv_array_append(cur, xv_copy(p->args[1]));
            } else {
                if (at < 0)
                    return NULL;
                xv_free(cur->u.arr.items[at]);
                memmove(&cur->u.arr.items[at], &cur->u.arr.items[at + 1],
                        (cur->u.arr.n - (size_t)at - 1) * sizeof(xv *));
                cur->u.arr.n--;
            }
        }
        return st_set_field(t, p->c, self, p->m->field, cur);
    }
    case API_M_CREATE: {
        /* fields the server computes are not taken from the caller */
        AUTO(xv) *rec = xv_new_struct();
        for (size_t i = 0; i < p->c->nfields; i++) {
            const api_field *fl = &p->c->fields[i];
            if (fl->derived_cls >= 0)
                continue;
            const xv *v = xv_struct_get(p->args[0], fl->name);
            xv *val = (fl->qual != API_Q_RO_RUNTIME && v) ? xv_copy(v) : api_field_default(fl);
            if ((e = check_refs(t, fl->type, val))) {
                xv_free(val);
                return e;
            }
            xv_struct_set(rec, fl->name, val);
        }
        char *ref = NULL;
        if ((e = st_create(t, p->c, NULL, rec, &ref)))
            return e;
        p->ret = xv_new_string_take(ref);
        return NULL;
    }
    case API_M_DESTROY:
        /* the host running this daemon cannot remove itself from under its feet */
        if (p->c->id == API_CLASS_host && strcmp(self, p->ctx->x->host_ref) == 0)
            return xerr_new("OPERATION_NOT_ALLOWED", "This host is live; it cannot be destroyed");
        return st_destroy(t, p->c, self);
    default:
        return xerr_internal("not a write");
    }
}

xerr *implicit_call(api_ctx *ctx, const api_message *m, const xv *const *args, xv **ret)
{
    struct imp p = {ctx, m, &api_classes[m->cls], args, NULL};
    xerr *e;
    switch (m->kind) {
    case API_M_GET_FIELD:
    case API_M_GET_RECORD:
    case API_M_GET_ALL:
    case API_M_GET_ALL_RECORDS:
    case API_M_GET_ALL_RECORDS_WHERE:
    case API_M_GET_ALL_WHERE:
    case API_M_GET_BY_UUID:
    case API_M_GET_BY_NAME_LABEL:
        e = store_read(ctx->x->st, do_read, &p);
        break;
    default:
        e = store_write(ctx->x->st, do_write, &p);
        break;
    }
    if (e) {
        xv_free(p.ret);
        return e;
    }
    *ret = p.ret ? p.ret : xv_new_string("");
    return NULL;
}

/* ---- get_all_records_where expressions ----
 * expr := or; or := and ("or" and)*; and := unary ("and" unary)*;
 * unary := "not" unary | "(" expr ")" | "true" | "false" | "field" STR "=" STR
 * Column names use "__" for the namespace separator (name__label). */

struct wp {
    const char *s;
    size_t pos;
    const api_class *c;
    sbuf out;
    xv *args;
    int depth;
    xerr *err;
};

static void skip_ws(struct wp *w)
{
    while (isspace((unsigned char)w->s[w->pos]))
        w->pos++;
}

static bool kw(struct wp *w, const char *k)
{
    skip_ws(w);
    size_t n = strlen(k);
    if (strncmp(w->s + w->pos, k, n) == 0 && !isalnum((unsigned char)w->s[w->pos + n]) &&
        w->s[w->pos + n] != '_') {
        w->pos += n;
        return true;
    }
    return false;
}

static bool sym(struct wp *w, char ch)
{
    skip_ws(w);
    if (w->s[w->pos] == ch) {
        w->pos++;
        return true;
    }
    return false;
}

static char *str_lit(struct wp *w)
{
    skip_ws(w);
    if (w->s[w->pos] != '"')
        return NULL;
    w->pos++;
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, "");
    while (w->s[w->pos] && w->s[w->pos] != '"') {
        if (w->s[w->pos] == '\\' && w->s[w->pos + 1])
            w->pos++;
        sbuf_putc(&b, w->s[w->pos++]);
    }
    if (w->s[w->pos] != '"') {
        sbuf_release(&b);
        return NULL;
    }
    w->pos++;
    return sbuf_steal(&b, NULL);
}

static bool parse_or(struct wp *w);

static bool parse_unary(struct wp *w)
{
    if (++w->depth > 64)
        return false;
    bool ok = false;
    if (kw(w, "not")) {
        sbuf_puts(&w->out, "NOT (");
        ok = parse_unary(w);
        sbuf_puts(&w->out, ")");
    } else if (sym(w, '(')) {
        sbuf_puts(&w->out, "(");
        ok = parse_or(w) && sym(w, ')');
        sbuf_puts(&w->out, ")");
    } else if (kw(w, "true")) {
        sbuf_puts(&w->out, "1");
        ok = true;
    } else if (kw(w, "false")) {
        sbuf_puts(&w->out, "0");
        ok = true;
    } else if (kw(w, "field")) {
        AUTOFREE char *col = str_lit(w);
        if (!col || !sym(w, '='))
            goto out;
        AUTOFREE char *val = str_lit(w);
        if (!val)
            goto out;
        /* name__label -> name_label */
        AUTOFREE char *fname = xstrdup(col);
        char *d;
        while ((d = strstr(fname, "__")))
            memmove(d, d + 1, strlen(d + 1) + 1);
        int fi = api_field_index(w->c, fname);
        if (fi < 0 || w->c->fields[fi].derived_cls >= 0) {
            w->err = xerr_new("INVALID_VALUE", "field", col);
            goto out;
        }
        const api_field *f = &w->c->fields[fi];
        if (f->type->kind == API_T_BOOL) {
            sbuf_printf(&w->out, "(CASE WHEN \"%s\" THEN 'true' ELSE 'false' END) = ?", f->name);
        } else
            sbuf_printf(&w->out, "CAST(\"%s\" AS TEXT) = ?", f->name);
        xv_array_append(w->args, xv_new_string(val));
        ok = true;
    }
out:
    w->depth--;
    return ok;
}

static bool parse_and(struct wp *w)
{
    if (!parse_unary(w))
        return false;
    while (kw(w, "and")) {
        sbuf_puts(&w->out, " AND ");
        if (!parse_unary(w))
            return false;
    }
    return true;
}

static bool parse_or(struct wp *w)
{
    if (!parse_and(w))
        return false;
    while (kw(w, "or")) {
        sbuf_puts(&w->out, " OR ");
        if (!parse_and(w))
            return false;
    }
    return true;
}

xerr *where_to_sql(const api_class *c, const char *expr, char **ret_sql, xv **ret_args)
{
    struct wp w = {expr ? expr : "", 0, c, SBUF_INIT, xv_new_array(), 0, NULL};
    bool ok = strlen(w.s) <= 65536 && parse_or(&w);
    skip_ws(&w);
    if (!ok || w.s[w.pos]) {
        sbuf_release(&w.out);
        xv_free(w.args);
        if (w.err)
            return w.err;
        return xerr_new("INVALID_VALUE", "expr", expr ? expr : "");
    }
    *ret_sql = sbuf_steal(&w.out, NULL);
    *ret_args = w.args;
    return NULL;
}
