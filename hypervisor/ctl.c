/* Control-protocol parsing and formatting (see ctl.h). */
#include "ctl.h"
#include "mem.h"
#include "util.h"

#include <string.h>

void ctl_request_release(ctl_request *r)
{
    xv_free(r->id);
    free(r->execute);
    xv_free(r->arguments);
    memset(r, 0, sizeof(*r));
}

xerr *ctl_parse_request(const char *line, size_t len, ctl_request *ret)
{
    memset(ret, 0, sizeof(*ret));
    if (len > CTL_MAX_LINE)
        return xerr_new("PROTOCOL_ERROR", "line too long");
    if (!utf8_valid(line, len))
        return xerr_new("PROTOCOL_ERROR", "invalid UTF-8");
    AUTO(xv) *v = xv_from_json(line, len);
    if (!v)
        return xerr_new("PROTOCOL_ERROR", "malformed JSON");
    if (v->kind != XV_STRUCT)
        return xerr_new("PROTOCOL_ERROR", "request is not an object");
    const xv *id = xv_struct_get(v, "id");
    if (id)
        ret->id = xv_copy(id);
    const xv *ex = xv_struct_get(v, "execute");
    if (!ex)
        return xerr_new("PROTOCOL_ERROR", "missing execute");
    if (ex->kind != XV_STRING)
        return xerr_new("FIELD_TYPE_ERROR", "execute");
    const xv *args = xv_struct_get(v, "arguments");
    if (args && args->kind != XV_STRUCT && args->kind != XV_NIL)
        return xerr_new("FIELD_TYPE_ERROR", "arguments");
    for (size_t i = 0; i < v->u.st.n; i++) {
        const char *k = v->u.st.keys[i];
        if (strcmp(k, "id") && strcmp(k, "execute") && strcmp(k, "arguments"))
            return xerr_new("PROTOCOL_ERROR", "unknown member in request");
    }
    ret->execute = xstrdup(ex->u.str.s);
    ret->arguments = args && args->kind == XV_STRUCT ? xv_copy(args) : xv_new_struct();
    return NULL;
}

static char *finish_line(xv *msg)
{
    AUTOFREE char *s = xv_to_json(msg);
    xv_free(msg);
    return xasprintf("%s\n", s);
}

char *ctl_format_return(const xv *id, xv *ret)
{
    xv *m = xv_new_struct();
    if (id)
        xv_struct_set(m, "id", xv_copy(id));
    xv_struct_set(m, "return", ret ? ret : xv_new_struct());
    return finish_line(m);
}

char *ctl_format_error(const xv *id, const xerr *e)
{
    xv *m = xv_new_struct();
    if (id)
        xv_struct_set(m, "id", xv_copy(id));
    xv_struct_set(m, "error", xerr_to_xv(e));
    return finish_line(m);
}

char *ctl_format_event(const char *event, xv *data, int64_t sec, int64_t usec)
{
    xv *m = xv_new_struct();
    xv_struct_set(m, "event", xv_new_string(event));
    xv_struct_set(m, "data", data ? data : xv_new_struct());
    xv *ts = xv_new_struct();
    xv_struct_set(ts, "seconds", xv_new_int(sec));
    xv_struct_set(ts, "microseconds", xv_new_int(usec));
    xv_struct_set(m, "timestamp", ts);
    return finish_line(m);
}

xerr *ctl_arg_bool(const xv *args, const char *key, bool *ret)
{
    const xv *v = xv_struct_get(args, key);
    if (!v)
        return NULL;
    if (v->kind != XV_BOOL)
        return xerr_new("FIELD_TYPE_ERROR", key);
    *ret = v->u.b;
    return NULL;
}

xerr *ctl_arg_int(const xv *args, const char *key, int64_t *ret)
{
    const xv *v = xv_struct_get(args, key);
    if (!v)
        return NULL;
    if (v->kind != XV_INT)
        return xerr_new("FIELD_TYPE_ERROR", key);
    *ret = v->u.i;
    return NULL;
}

xerr *ctl_arg_string(const xv *args, const char *key, const char **ret)
{
    const xv *v = xv_struct_get(args, key);
    if (!v)
        return NULL;
    if (v->kind != XV_STRING)
        return xerr_new("FIELD_TYPE_ERROR", key);
    *ret = v->u.str.s;
    return NULL;
}
