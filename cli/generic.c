/* xe generic per-class commands (<class>-list, -param-*, -destroy) built from the generated
 * views, and the command table: custom commands first, then these. */
#define _GNU_SOURCE
#include "xe.h"

#include "mem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- Generic per-class commands ---- */

/* The record holding a column's field: rec itself, or the record its reference points to
 * (NULL when that reference is null or dangling). */
static const xv *col_record(xe_ctx *ctx, const xe_col *c, const xv *rec)
{
    if (!c->via)
        return rec;
    return xe_ref_record(ctx, c->via_cls, xv_struct_get_str(rec, c->via->name));
}

/* A column's value in a record as XCP prints it. Caller frees. */
char *xe_col_value(xe_ctx *ctx, const xe_col *c, const xv *rec)
{
    rec = col_record(ctx, c, rec);
    if (!rec)
        return xstrdup("<not in database>");
    const xv *v = xv_struct_get(rec, c->f->name);
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, "");
    if ((c->flags & API_CLI_VALUES) && v && v->kind == XV_STRUCT) {
        for (size_t i = 0; i < v->u.st.n; i++) {
            if (i)
                sbuf_puts(&b, "; ");
            xe_format_value(&b, c->f->type->elem, v->u.st.vals[i], xe_resolve_ref, ctx);
        }
    } else {
        const char *sep = (c->flags & API_CLI_COMMA) ? ", " : "; ";
        xe_format_value_sep(&b, c->f->type, v, sep, xe_resolve_ref, ctx);
    }
    return sbuf_steal(&b, NULL);
}

static char *col_key(const xe_col *c)
{
    return xasprintf("%s (%s)%s", c->name, c->tag,
                     (c->flags & API_CLI_DEPRECATED) ? " [DEPRECATED]" : "");
}

const xe_col *xe_col_lookup(const xe_cols *cols, const char *name)
{
    for (size_t i = 0; i < cols->n; i++)
        if (strcmp(cols->c[i].name, name) == 0)
            return &cols->c[i];
    return NULL;
}

static bool is_set(const xe_col *c)
{
    return c->f->type->kind == API_T_SET;
}

static bool is_map(const xe_col *c)
{
    return c->f->type->kind == API_T_MAP;
}

enum ftype { F_NORMAL, F_MAP, F_SET, F_ERROR };

/* XCP's get_field_type: "name", "map:key" / "set:contains", or old-style "map-key". On
 * F_ERROR prints the error. */
static enum ftype field_type(xe_ctx *ctx, const xe_cols *cols, const char *k, const xe_col **ret)
{
    *ret = xe_col_lookup(cols, k);
    if (*ret)
        return F_NORMAL;
    const char *colon = strchr(k, ':');
    if (colon) {
        AUTOFREE char *base = xstrndup(k, (size_t)(colon - k));
        *ret = xe_col_lookup(cols, base);
        if (!*ret) {
            xe_fail(ctx, "Unknown field '%s'", k);
            return F_ERROR;
        }
        if (is_set(*ret))
            return F_SET;
        if (is_map(*ret))
            return F_MAP;
        xe_fail(ctx, "Field '%s' is not a set or map", (*ret)->name);
        return F_ERROR;
    }
    for (int want = 0; want < 2; want++) {
        const xe_col *best = NULL;
        for (size_t i = 0; i < cols->n; i++) {
            const xe_col *c = &cols->c[i];
            size_t n = strlen(c->name);
            if ((want == 0 ? is_map(c) : is_set(c)) && strncmp(k, c->name, n) == 0 && k[n] == '-' &&
                (!best || n > strlen(best->name)))
                best = c;
        }
        if (best) {
            *ret = best;
            return want == 0 ? F_MAP : F_SET;
        }
    }
    xe_fail(ctx, "Unknown field '%s'", k);
    return F_ERROR;
}

static const char *api_cls_name(const xe_view *v)
{
    return api_classes[v->cls].name;
}

int xe_get_all_records(xe_ctx *ctx, const xe_view *v, xv **ret)
{
    AUTOFREE char *m = xasprintf("%s.get_all_records", api_cls_name(v));
    if (xe_call(ctx, m, NULL, ret))
        return 1;
    if (!*ret || (*ret)->kind != XV_STRUCT) {
        xv_free(*ret);
        *ret = xv_new_struct();
    }
    return 0;
}

/* uuid -> ref and record. Returns 0 or 1 (error printed). */
int xe_get_by_uuid(xe_ctx *ctx, const xe_view *v, const char *uuid, char **ret_ref, xv **ret_rec)
{
    AUTOFREE char *m = xasprintf("%s.get_by_uuid", api_cls_name(v));
    AUTO(xv) *ref = NULL;
    if (xe_call(ctx, m, xe_args1(uuid), &ref))
        return 1;
    if (!xv_str(ref))
        return xe_fail(ctx, "Server internal error.");
    if (ret_rec) {
        AUTOFREE char *gr = xasprintf("%s.get_record", api_cls_name(v));
        if (xe_call(ctx, gr, xe_args1(xv_str(ref)), ret_rec))
            return 1;
    }
    *ret_ref = xstrdup(xv_str(ref));
    return 0;
}

static bool set_contains(xe_ctx *ctx, const xe_col *c, const xv *rec, const char *want)
{
    rec = col_record(ctx, c, rec);
    const xv *v = rec ? xv_struct_get(rec, c->f->name) : NULL;
    for (size_t i = 0; v && v->kind == XV_ARRAY && i < v->u.arr.n; i++) {
        sbuf b = SBUF_INIT;
        xe_format_value(&b, c->f->type->elem, v->u.arr.items[i], xe_resolve_ref, ctx);
        bool eq = strcmp(b.data, want) == 0;
        sbuf_release(&b);
        if (eq)
            return true;
    }
    return false;
}

static const char *map_get(xe_ctx *ctx, const xv *rec, const xe_col *c, const char *key)
{
    rec = col_record(ctx, c, rec);
    const xv *m = rec ? xv_struct_get(rec, c->f->name) : NULL;
    if (!m || m->kind != XV_STRUCT)
        return NULL;
    const xv *val = xv_struct_get(m, key);
    if (!val)
        return NULL;
    return xv_str(val) ? xv_str(val) : "";
}

/* Does rec pass the filter k=v? -1 on a bad filter (printed). */
int xe_filter_match(xe_ctx *ctx, const xe_cols *cols, const xv *rec, const char *k, const char *v)
{
    const xe_col *c = NULL;
    switch (field_type(ctx, cols, k, &c)) {
    case F_NORMAL: {
        AUTOFREE char *s = xe_col_value(ctx, c, rec);
        return strcmp(s, v) == 0;
    }
    case F_MAP: {
        const char *val = map_get(ctx, rec, c, k + strlen(c->name) + 1);
        return val && strcmp(val, v) == 0;
    }
    case F_SET:
        if (strcmp(k + strlen(c->name) + 1, "contains") != 0) {
            xe_fail(ctx, "Invalid syntax for set filtering (should be set-param:contains=key)");
            return -1;
        }
        return set_contains(ctx, c, rec, v);
    default:
        return -1;
    }
}

static void build_row(xe_ctx *ctx, const xe_cols *cols, const xv *rec, const char *const *only,
                      xe_row *r)
{
    for (size_t i = 0; i < cols->n; i++) {
        const xe_col *c = &cols->c[i];
        if (c->flags & API_CLI_HIDDEN)
            continue;
        if (only && !xe_strv_has(only, c->name))
            continue;
        xe_row_add(r, col_key(c), xe_col_value(ctx, c, rec));
    }
}

static int cmd_list(xe_ctx *ctx, const xe_cmd *cmd)
{
    const xe_view *v = cmd->view;
    XE_COLS_AUTO xe_cols cols;
    xe_view_columns(v, &cols);
    AUTO(xv) *all = NULL;
    if (xe_get_all_records(ctx, v, &all))
        return 1;
    const xe_params *ps = &ctx->cl->params;
    /* Filters: the view's implicit ones, then everything but params= and std params. */
    xe_params filters = {0};
    for (size_t i = 0; i < v->nfilters; i++)
        xe_params_add(&filters, v->filters[i].key, v->filters[i].val);
    for (size_t i = 0; i < ps->n; i++) {
        const char *k = ps->v[i].key;
        if (strcmp(k, "params") == 0 || xe_strv_has(xe_std_params, k) ||
            strncmp(k, "database:", 9) == 0)
            continue;
        xe_params_add(&filters, k, ps->v[i].val);
    }
    size_t nall = xv_struct_len(all);
    bool *keep = xcalloc(nall ? nall : 1, sizeof(bool));
    int rc = 0;
    for (size_t i = 0; i < nall; i++)
        keep[i] = true;
    for (size_t f = 0; f < filters.n && rc == 0 && nall; f++) {
        for (size_t i = 0; i < nall; i++) {
            if (!keep[i])
                continue;
            int m =
                xe_filter_match(ctx, &cols, all->u.st.vals[i], filters.v[f].key, filters.v[f].val);
            if (m < 0) {
                rc = 1;
                break;
            }
            keep[i] = m;
        }
    }
    xe_params_clear(&filters);
    if (rc) {
        free(keep);
        return rc;
    }
    /* Columns: params=a,b | params=all | the view's defaults. */
    char **only = NULL;
    const char *p = xe_params_get(ps, "params");
    if (p && strcmp(p, "all") != 0) {
        only = xcalloc(1, sizeof(char *));
        size_t n = 0;
        for (const char *s = p;;) {
            const char *comma = strchr(s, ',');
            size_t len = comma ? (size_t)(comma - s) : strlen(s);
            only = xrealloc(only, (n + 2) * sizeof(char *));
            only[n++] = xstrndup(s, len);
            only[n] = NULL;
            if (!comma)
                break;
            s = comma + 1;
        }
    }
    const char *all_p = xe_params_get(ps, "all");
    bool print_all = all_p && strcmp(all_p, "true") == 0;
    const char *const *sel = only ? (const char *const *)only : (p ? NULL : v->list_defaults);
    xe_row *rows = xcalloc(nall ? nall : 1, sizeof(xe_row));
    size_t nrows = 0;
    for (size_t i = 0; i < nall; i++)
        if (keep[i] || print_all)
            build_row(ctx, &cols, all->u.st.vals[i], sel, &rows[nrows++]);
    xe_print_table(ctx, rows, nrows);
    for (size_t i = 0; i < nrows; i++)
        xe_row_clear(&rows[i]);
    free(rows);
    free(keep);
    xe_strv_free(only);
    return 0;
}

static int cmd_param_list(xe_ctx *ctx, const xe_cmd *cmd)
{
    XE_COLS_AUTO xe_cols cols;
    xe_view_columns(cmd->view, &cols);
    AUTOFREE char *ref = NULL;
    AUTO(xv) *rec = NULL;
    if (xe_get_by_uuid(ctx, cmd->view, xe_params_get(&ctx->cl->params, "uuid"), &ref, &rec))
        return 1;
    xe_row r = {0};
    build_row(ctx, &cols, rec, NULL, &r);
    xe_print_table(ctx, &r, 1);
    xe_row_clear(&r);
    return 0;
}

static int missing_param(xe_ctx *ctx, const char *name)
{
    /* XCP: CLI_failed_to_find_param -> server_error "Missing parameter" [name]. */
    AUTO(xerr) *e = xerr_new("Missing parameter", name);
    return xe_fail_api(ctx, e);
}

static int cmd_param_get(xe_ctx *ctx, const xe_cmd *cmd)
{
    XE_COLS_AUTO xe_cols cols;
    xe_view_columns(cmd->view, &cols);
    const xe_params *ps = &ctx->cl->params;
    AUTOFREE char *ref = NULL;
    AUTO(xv) *rec = NULL;
    if (xe_get_by_uuid(ctx, cmd->view, xe_params_get(ps, "uuid"), &ref, &rec))
        return 1;
    const char *name = xe_params_get(ps, "param-name");
    const xe_col *c = xe_col_lookup(&cols, name);
    if (!c)
        return missing_param(ctx, name);
    const char *key = xe_params_get(ps, "param-key");
    if (key && is_map(c)) {
        const char *val = map_get(ctx, rec, c, key);
        if (!val)
            return xe_fail(ctx, "Key %s not found in map", key);
        xe_print_one(ctx, val);
        return 0;
    }
    AUTOFREE char *s = xe_col_value(ctx, c, rec);
    xe_print_one(ctx, s);
    return 0;
}

static bool col_writable(const xe_col *c)
{
    return c->tag[1] == 'R' && c->tag[2] == 'W';
}

/* A CLI string converted to the field's wire value; NULL with the error printed. */
static xv *typed_value(xe_ctx *ctx, const xe_col *c, const api_type *t, const char *s)
{
    switch (t->kind) {
    case API_T_INT: {
        char *end = NULL;
        errno = 0;
        long long n = strtoll(s, &end, 10);
        if (!*s || *end || errno) {
            xe_fail(ctx, "Parameter %s must be an integer", c->name);
            return NULL;
        }
        return xv_new_int(n);
    }
    case API_T_FLOAT: {
        char *end = NULL;
        double d = strtod(s, &end);
        if (!*s || *end) {
            xe_fail(ctx, "Parameter %s must be a floating-point number", c->name);
            return NULL;
        }
        return xv_new_float(d);
    }
    case API_T_BOOL:
        if (strcmp(s, "true") == 0)
            return xv_new_bool(true);
        if (strcmp(s, "false") == 0)
            return xv_new_bool(false);
        xe_fail(ctx, "Parameter %s must be a boolean (true or false)", c->name);
        return NULL;
    case API_T_DATETIME:
        return xv_new_datetime(s);
    case API_T_REF: {
        if (!*s || strncmp(s, "OpaqueRef:", 10) == 0 || t->cls < 0)
            return xv_new_string(*s ? s : "OpaqueRef:NULL");
        AUTOFREE char *m = xasprintf("%s.get_by_uuid", api_classes[t->cls].name);
        xv *ref = NULL;
        if (xe_call(ctx, m, xe_args1(s), &ref))
            return NULL;
        return ref;
    }
    default:
        return xv_new_string(s);
    }
}

static int set_map_key(xe_ctx *ctx, const xe_cols *cols, const xe_col *c, const char *ref,
                       const xv *rec, const char *key, const char *val)
{
    (void)cols;
    const api_message *add = xe_find_message(cols->cls->id, API_M_ADD_TO_MAP, c->fidx);
    const api_message *rm = xe_find_message(cols->cls->id, API_M_REMOVE_FROM_MAP, c->fidx);
    if (!col_writable(c) || !add || !rm)
        return xe_fail(ctx, "Map field '%s' is read-only.", c->name);
    if (map_get(ctx, rec, c, key)) {
        AUTO(xv) *a = xe_args2(ref, xv_new_string(key));
        if (xe_call(ctx, rm->wire, TAKE_PTR(a), NULL))
            return 1;
    }
    AUTO(xv) *a = xe_args2(ref, xv_new_string(key));
    AUTO(xv) *tv = typed_value(ctx, c, c->f->type->elem, val);
    if (!tv)
        return 1;
    xv_array_append(a, TAKE_PTR(tv));
    return xe_call(ctx, add->wire, TAKE_PTR(a), NULL);
}

static int cmd_param_set(xe_ctx *ctx, const xe_cmd *cmd)
{
    XE_COLS_AUTO xe_cols cols;
    xe_view_columns(cmd->view, &cols);
    const xe_params *ps = &ctx->cl->params;
    AUTOFREE char *ref = NULL;
    AUTO(xv) *rec = NULL;
    if (xe_get_by_uuid(ctx, cmd->view, xe_params_get(ps, "uuid"), &ref, &rec))
        return 1;
    for (size_t i = 0; i < ps->n; i++) {
        const char *k = ps->v[i].key, *val = ps->v[i].val;
        if (strcmp(k, "uuid") == 0 || xe_strv_has(xe_std_params, k))
            continue;
        const xe_col *c = NULL;
        switch (field_type(ctx, &cols, k, &c)) {
        case F_MAP:
            if (set_map_key(ctx, &cols, c, ref, rec, k + strlen(c->name) + 1, val))
                return 1;
            break;
        case F_SET:
            return xe_fail(ctx, "Cannot param-set on set fields");
        case F_NORMAL: {
            const api_message *set = xe_find_message(cols.cls->id, API_M_SET_FIELD, c->fidx);
            if (!col_writable(c) || !set || is_set(c) || is_map(c)) {
                if (col_writable(c) && (is_map(c) || is_set(c)))
                    return xe_fail(
                        ctx, "Field '%s' is a map or set. use the 'name:key=value' syntax.", k);
                return xe_fail(ctx, "Field '%s' is read-only.", k);
            }
            AUTO(xv) *tv = typed_value(ctx, c, c->f->type, val);
            if (!tv)
                return 1;
            if (xe_call(ctx, set->wire, xe_args2(ref, TAKE_PTR(tv)), NULL))
                return 1;
            break;
        }
        default:
            return 1;
        }
    }
    return 0;
}

static int cmd_param_add(xe_ctx *ctx, const xe_cmd *cmd)
{
    XE_COLS_AUTO xe_cols cols;
    xe_view_columns(cmd->view, &cols);
    const xe_params *ps = &ctx->cl->params;
    AUTOFREE char *ref = NULL;
    AUTO(xv) *rec = NULL;
    if (xe_get_by_uuid(ctx, cmd->view, xe_params_get(ps, "uuid"), &ref, &rec))
        return 1;
    const char *name = xe_params_get(ps, "param-name");
    const xe_col *c = xe_col_lookup(&cols, name);
    if (!c)
        return missing_param(ctx, name);
    if (is_set(c)) {
        const api_message *add = xe_find_message(cols.cls->id, API_M_ADD_SET, c->fidx);
        if (!col_writable(c) || !add)
            return xe_fail(ctx, "Parameter is read-only");
        const char *key = xe_params_get(ps, "param-key");
        if (!key)
            return xe_fail(ctx, "When adding a key to a set, use the syntax: *-param-add "
                                "param-name=<name> param-key=<key>");
        AUTO(xv) *tv = typed_value(ctx, c, c->f->type->elem, key);
        if (!tv)
            return 1;
        return xe_call(ctx, add->wire, xe_args2(ref, TAKE_PTR(tv)), NULL);
    }
    if (is_map(c)) {
        const api_message *add = xe_find_message(cols.cls->id, API_M_ADD_TO_MAP, c->fidx);
        if (!col_writable(c) || !add)
            return xe_fail(ctx, "Parameter is read-only");
        for (size_t i = 0; i < ps->n; i++) {
            const char *k = ps->v[i].key;
            if (strcmp(k, "uuid") == 0 || strcmp(k, "param-name") == 0 ||
                strcmp(k, "param-key") == 0 || xe_strv_has(xe_std_params, k))
                continue;
            AUTO(xv) *a = xe_args2(ref, xv_new_string(k));
            AUTO(xv) *tv = typed_value(ctx, c, c->f->type->elem, ps->v[i].val);
            if (!tv)
                return 1;
            xv_array_append(a, TAKE_PTR(tv));
            if (xe_call(ctx, add->wire, TAKE_PTR(a), NULL))
                return 1;
        }
        return 0;
    }
    return xe_fail(ctx, "Can only add to parameters of type Set or Map");
}

static int cmd_param_remove(xe_ctx *ctx, const xe_cmd *cmd)
{
    XE_COLS_AUTO xe_cols cols;
    xe_view_columns(cmd->view, &cols);
    const xe_params *ps = &ctx->cl->params;
    AUTOFREE char *ref = NULL;
    AUTO(xv) *rec = NULL;
    if (xe_get_by_uuid(ctx, cmd->view, xe_params_get(ps, "uuid"), &ref, &rec))
        return 1;
    const char *name = xe_params_get(ps, "param-name");
    const char *key = xe_params_get(ps, "param-key");
    const xe_col *c = xe_col_lookup(&cols, name);
    if (!c)
        return missing_param(ctx, name);
    if (is_set(c)) {
        const api_message *rm = xe_find_message(cols.cls->id, API_M_REMOVE_SET, c->fidx);
        if (!col_writable(c) || !rm)
            return xe_fail(ctx, "Cannot remove parameters from read-only map");
        if (!set_contains(ctx, c, rec, key))
            return xe_fail(ctx, "Key %s is not in the set", key);
        AUTO(xv) *tv = typed_value(ctx, c, c->f->type->elem, key);
        if (!tv)
            return 1;
        return xe_call(ctx, rm->wire, xe_args2(ref, TAKE_PTR(tv)), NULL);
    }
    if (is_map(c)) {
        const api_message *rm = xe_find_message(cols.cls->id, API_M_REMOVE_FROM_MAP, c->fidx);
        if (!col_writable(c) || !rm)
            return xe_fail(ctx, "Cannot remove parameters from read-only map");
        if (!map_get(ctx, rec, c, key))
            return xe_fail(ctx, "Key %s is not in map", key);
        return xe_call(ctx, rm->wire, xe_args2(ref, xv_new_string(key)), NULL);
    }
    return xe_fail(ctx, "Can only remove from parameters of type Set or Map");
}

static int cmd_param_clear(xe_ctx *ctx, const xe_cmd *cmd)
{
    XE_COLS_AUTO xe_cols cols;
    xe_view_columns(cmd->view, &cols);
    const xe_params *ps = &ctx->cl->params;
    AUTOFREE char *ref = NULL;
    AUTO(xv) *rec = NULL;
    if (xe_get_by_uuid(ctx, cmd->view, xe_params_get(ps, "uuid"), &ref, &rec))
        return 1;
    const char *name = xe_params_get(ps, "param-name");
    const xe_col *c = xe_col_lookup(&cols, name);
    if (!c)
        return missing_param(ctx, name);
    const xv *cur = xv_struct_get(rec, c->f->name);
    if (col_writable(c) && (is_set(c) || is_map(c))) {
        const api_message *set = xe_find_message(cols.cls->id, API_M_SET_FIELD, c->fidx);
        if (set) {
            xv *empty = is_set(c) ? xv_new_array() : xv_new_struct();
            return xe_call(ctx, set->wire, xe_args2(ref, empty), NULL);
        }
        const api_message *rm = xe_find_message(
            cols.cls->id, is_set(c) ? API_M_REMOVE_SET : API_M_REMOVE_FROM_MAP, c->fidx);
        if (!rm)
            return xe_fail(ctx, "Can only clear RW parameters");
        size_t n = cur ? (is_set(c) ? xv_array_len(cur) : xv_struct_len(cur)) : 0;
        for (size_t i = 0; i < n; i++) {
            xv *item = is_set(c) ? xv_copy(cur->u.arr.items[i]) : xv_new_string(cur->u.st.keys[i]);
            if (xe_call(ctx, rm->wire, xe_args2(ref, item), NULL))
                return 1;
        }
        return 0;
    }
    const api_message *set = xe_find_message(cols.cls->id, API_M_SET_FIELD, c->fidx);
    if (col_writable(c) && set) {
        AUTO(xv) *tv = NULL;
        switch (c->f->type->kind) {
        case API_T_STRING:
        case API_T_REF:
            tv = typed_value(ctx, c, c->f->type, "");
            break;
        default:
            return xe_fail(ctx, "Cannot clear this parameter");
        }
        if (!tv)
            return 1;
        AUTO(xv) *v = NULL;
        AUTO(xerr) *e = NULL;
        AUTO(xv) *a = xe_args2(ref, TAKE_PTR(tv));
        if (xe_conn_call(ctx->conn, set->wire, a, &v, &e) < 0) {
            fprintf(ctx->err, "%s\n", xe_conn_error(ctx->conn));
            return 1;
        }
        if (e)
            return xe_fail(ctx, "Cannot clear this parameter");
        return 0;
    }
    return xe_fail(ctx, "Can only clear RW parameters");
}

static int cmd_destroy(xe_ctx *ctx, const xe_cmd *cmd)
{
    AUTOFREE char *ref = NULL;
    if (xe_get_by_uuid(ctx, cmd->view, xe_params_get(&ctx->cl->params, "uuid"), &ref, NULL))
        return 1;
    AUTOFREE char *m = xasprintf("%s.destroy", api_cls_name(cmd->view));
    AUTO(xv) *res = NULL;
    return xe_call_async(ctx, m, xe_args1(ref), &res);
}

/* ---- The table: custom commands, then the generic ones built from the views ---- */

static xe_cmd *table;
static size_t ntable;

static void strv_append(const char ***v, size_t *n, const char *s)
{
    *v = xrealloc(*v, (*n + 2) * sizeof(char *));
    (*v)[(*n)++] = s;
    (*v)[*n] = NULL;
}

/* Returns false (taking nothing) when a command of that name exists: custom entries come
 * first and win over generic ones. */
static bool add_cmd(const xe_cmd *c)
{
    for (size_t i = 0; i < ntable; i++)
        if (strcmp(table[i].name, c->name) == 0)
            return false;
    table = xrealloc(table, (ntable + 1) * sizeof(xe_cmd));
    table[ntable++] = *c;
    return true;
}

/* Generic names and their optional params live as long as the process (the table is
 * built once). */
static void add_generic(const xe_view *v)
{
    xe_cols cols;
    xe_view_columns(v, &cols);
    if (!cols.cls)
        return;
    const char **list_opt = NULL, **settable = NULL;
    size_t nlist = 0, nset = 0;
    bool addable = false, clearable = false;
    strv_append(&list_opt, &nlist, "params");
    strv_append(&list_opt, &nlist, "database:");
    for (size_t i = 0; i < cols.n; i++) {
        const xe_col *c = &cols.c[i];
        if (c->flags & API_CLI_HIDDEN)
            continue;
        strv_append(&list_opt, &nlist, c->name);
        bool w = col_writable(c);
        if (w && !is_set(c) && !is_map(c) &&
            xe_find_message(cols.cls->id, API_M_SET_FIELD, c->fidx))
            strv_append(&settable, &nset, c->name);
        if (w && (is_set(c) || is_map(c)))
            addable = true;
        if (w || is_set(c) || is_map(c))
            clearable = true;
    }
    for (size_t i = 0; i < cols.n; i++) {
        const xe_col *c = &cols.c[i];
        if (!(c->flags & API_CLI_HIDDEN) && is_map(c) && col_writable(c))
            strv_append(&settable, &nset, xasprintf("%s:", c->name));
    }
    for (size_t i = 0; i < cols.n; i++) {
        const xe_col *c = &cols.c[i];
        if (!(c->flags & (API_CLI_HIDDEN | API_CLI_PLAIN)) && is_set(c))
            strv_append(&list_opt, &nlist, xasprintf("%s:contains", c->name));
    }
    AUTOFREE char *destroy_wire = xasprintf("%s.destroy", cols.cls->name);
    bool has_destroy = api_message_lookup(destroy_wire) != NULL;
    free(cols.c);
    /* static: the table keeps pointers to these */
    static const char *const r_uuid[] = {"uuid", NULL};
    static const char *const r_uuid_name[] = {"uuid", "param-name", NULL};
    static const char *const r_uuid_name_key[] = {"uuid", "param-name", "param-key", NULL};
    static const char *const o_db[] = {"database:", NULL};
    static const char *const o_key_db[] = {"param-key", "database:", NULL};
    static const char *const o_key[] = {"param-key", NULL};
    const struct {
        const char *suffix;
        const char *const *reqd;
        const char *const *optn;
        char *help;
        xe_cmd_fn fn;
        bool on;
        unsigned flags;
    } ops[] = {
        {"list", NULL, list_opt,
         xasprintf("Lists all the %s, filtering on the optional arguments. To filter on map "
                   "parameters, use the syntax 'map-param:key=value'",
                   v->plural),
         cmd_list, true, v->standard ? XE_CMD_STANDARD : 0},
        {"param-list", r_uuid, o_db,
         xstrdup("Lists all the parameters of the object specified by the uuid."), cmd_param_list,
         true, 0},
        {"param-get", r_uuid_name, o_key_db,
         xstrdup("Gets the parameter specified of the object. If the parameter is a map of "
                 "key=value pairs, use 'param-key=<key>' to get the value associated with a "
                 "particular key."),
         cmd_param_get, true, 0},
        {"param-set", r_uuid, settable,
         xstrdup("Sets the parameter specified. If param-value is not given, the parameter is "
                 "set to a null value. To set a (key,value) pair in a map parameter, use the "
                 "syntax 'map-param:key=value'."),
         cmd_param_set, nset > 0, 0},
        {"param-add", r_uuid_name, o_key,
         xstrdup("Adds to a set or map parameter. If the parameter is a set, use "
                 "param-key=<key to add>. If the parameter is a map, pass the values to add as "
                 "'key=value' pairs."),
         cmd_param_add, addable, 0},
        {"param-remove", r_uuid_name_key, NULL,
         xstrdup("Removes a member or a key,value pair from a set/map respectively."),
         cmd_param_remove, addable, 0},
        {"param-clear", r_uuid_name, NULL, xstrdup("Clears the specified parameter."),
         cmd_param_clear, clearable, 0},
        {"destroy", r_uuid, NULL, xasprintf("Destroy the %s object.", v->cli), cmd_destroy,
         has_destroy, 0},
    };
    for (size_t i = 0; i < ARRAY_SIZE(ops); i++) {
        if (!ops[i].on) {
            free(ops[i].help);
            continue;
        }
        xe_cmd c = {xasprintf("%s-%s", v->cli, ops[i].suffix),
                    ops[i].reqd,
                    ops[i].optn,
                    ops[i].help,
                    ops[i].fn,
                    ops[i].flags,
                    v,
                    NULL};
        if (!add_cmd(&c)) {
            free((char *)c.name);
            free(ops[i].help);
        }
    }
}

static void build_table(void)
{
    if (table)
        return;
    for (size_t i = 0; i < xe_ncustom_cmds; i++)
        add_cmd(&xe_custom_cmds[i]);
    for (size_t i = 0; i < api_cli_nviews; i++)
        add_generic(&api_cli_views[i]);
}

const xe_cmd *xe_command_lookup(const char *name)
{
    build_table();
    for (size_t i = 0; i < ntable; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

size_t xe_command_count(void)
{
    build_table();
    return ntable;
}

const xe_cmd *xe_command_at(size_t i)
{
    build_table();
    return i < ntable ? &table[i] : NULL;
}
