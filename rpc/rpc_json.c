/* JSON-RPC codec: xapi's v1 (no "jsonrpc" key) and v2 envelopes, parsed with json-c. */
#define _GNU_SOURCE
#include "rpc.h"
#include "mem.h"
#include "sbuf.h"

#include <json-c/json.h>

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* json-c counts the top-level slot as one level; then come the envelope object, the
 * params array, and RPC_MAX_DEPTH levels of value, whose depth we check ourselves. */
#define JSON_TOKENER_DEPTH (RPC_MAX_DEPTH + 3)

static inline void json_putp(struct json_object **o)
{
    json_object_put(*o);
}
#define AUTOJSON __attribute__((cleanup(json_putp))) struct json_object

static bool json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses one JSON text; NULL on a syntax error, excess depth or trailing garbage. */
static struct json_object *json_parse(const char *body, size_t len)
{
    if (!body || len > INT_MAX)
        return NULL;
    struct json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEPTH);
    if (!tok)
        return NULL;
    struct json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error err = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    if (!o && err == json_tokener_continue) {
        /* json-c ends a top-level number or an incomplete text only at a terminator. */
        o = json_tokener_parse_ex(tok, "", 1);
        err = json_tokener_get_error(tok);
        end = len;
    }
    json_tokener_free(tok);
    if (!o || err != json_tokener_success) {
        json_object_put(o);
        return NULL;
    }
    for (size_t i = end; i < len; i++) {
        if (!json_ws(body[i])) {
            json_object_put(o);
            return NULL;
        }
    }
    return o;
}

typedef struct jdec {
    size_t nvalues;
    const char *text; /* the body, to tell a real INT64_MIN from a saturated one */
    size_t len;
    int neg_overflow; /* -1 not yet scanned */
} jdec;

/* True if the text holds a negative integer literal below INT64_MIN outside a string.
 * json-c saturates such literals silently, so we look at the text when we see one. */
static bool text_has_negative_overflow(const char *s, size_t n)
{
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
            continue;
        }
        if (c != '-')
            continue;
        size_t j = i + 1;
        while (j < n && s[j] == '0')
            j++;
        size_t start = j;
        while (j < n && s[j] >= '0' && s[j] <= '9')
            j++;
        size_t ndig = j - start;
        bool is_float = j < n && (s[j] == '.' || s[j] == 'e' || s[j] == 'E');
        if (!is_float &&
            (ndig > 19 || (ndig == 19 && memcmp(s + start, "9223372036854775808", 19) > 0)))
            return true;
        i = j - 1;
    }
    return false;
}

static int jdec_int(jdec *d, struct json_object *o, int64_t *ret)
{
    int64_t i = json_object_get_int64(o);
    /* Above INT64_MAX json-c stores a uint64 (saturating at UINT64_MAX). */
    if (i == INT64_MAX && json_object_get_uint64(o) > (uint64_t)INT64_MAX)
        return -EINVAL;
    if (i == INT64_MIN) {
        if (d->neg_overflow < 0)
            d->neg_overflow = text_has_negative_overflow(d->text, d->len);
        if (d->neg_overflow)
            return -EINVAL;
    }
    *ret = i;
    return 0;
}

/* A string without an embedded NUL (an xv string cannot hold one). */
static int jdec_string(struct json_object *o, const char **ret)
{
    if (!json_object_is_type(o, json_type_string))
        return -EINVAL;
    const char *s = json_object_get_string(o);
    int n = json_object_get_string_len(o);
    if (n < 0 || memchr(s, '\0', (size_t)n))
        return -EINVAL;
    *ret = s;
    return 0;
}

static int jdec_value(jdec *d, struct json_object *o, int depth, xv **ret);

static int jdec_array(jdec *d, struct json_object *o, int depth, xv **ret)
{
    AUTO(xv) *a = xv_new_array();
    size_t n = json_object_array_length(o);
    for (size_t i = 0; i < n; i++) {
        xv *item;
        int r = jdec_value(d, json_object_array_get_idx(o, i), depth + 1, &item);
        if (r < 0)
            return r;
        xv_array_append(a, item);
    }
    *ret = TAKE_PTR(a);
    return 0;
}

static int jdec_object(jdec *d, struct json_object *o, int depth, xv **ret)
{
    AUTO(xv) *s = xv_new_struct();
    size_t n = (size_t)json_object_object_length(o);
    if (n) {
        /* json-c keys are already unique (last wins), so fill the members directly
         * instead of paying xv_struct_set's scan per key. */
        s->u.st.keys = xcalloc(n, sizeof(char *));
        s->u.st.vals = xcalloc(n, sizeof(xv *));
        s->u.st.cap = n;
    }
    json_object_object_foreach(o, key, val)
    {
        xv *v;
        int r = jdec_value(d, val, depth + 1, &v);
        if (r < 0)
            return r;
        s->u.st.keys[s->u.st.n] = xstrdup(key);
        s->u.st.vals[s->u.st.n] = v;
        s->u.st.n++;
    }
    *ret = TAKE_PTR(s);
    return 0;
}

/* depth = number of containers around this value. */
static int jdec_value(jdec *d, struct json_object *o, int depth, xv **ret)
{
    if (++d->nvalues > RPC_MAX_VALUES)
        return -EINVAL;
    switch (json_object_get_type(o)) {
    case json_type_null:
        *ret = xv_new_nil();
        return 0;
    case json_type_boolean:
        *ret = xv_new_bool(json_object_get_boolean(o));
        return 0;
    case json_type_double:
        *ret = xv_new_float(json_object_get_double(o));
        return 0;
    case json_type_int: {
        int64_t i;
        if (jdec_int(d, o, &i) < 0)
            return -EINVAL;
        *ret = xv_new_int(i);
        return 0;
    }
    case json_type_string: {
        const char *s;
        if (jdec_string(o, &s) < 0)
            return -EINVAL;
        *ret = xv_new_stringn(s, (size_t)json_object_get_string_len(o));
        return 0;
    }
    case json_type_array:
        if (depth >= RPC_MAX_DEPTH)
            return -EINVAL;
        return jdec_array(d, o, depth, ret);
    case json_type_object:
        if (depth >= RPC_MAX_DEPTH)
            return -EINVAL;
        return jdec_object(d, o, depth, ret);
    }
    return -EINVAL;
}

/* The call's id: an integer or a string. */
static int jdec_id(jdec *d, struct json_object *o, xv **ret)
{
    const char *s;
    int64_t i;
    if (json_object_is_type(o, json_type_int)) {
        if (jdec_int(d, o, &i) < 0)
            return -EINVAL;
        *ret = xv_new_int(i);
        return 0;
    }
    if (jdec_string(o, &s) < 0)
        return -EINVAL;
    *ret = xv_new_string(s);
    return 0;
}

int rpc_json_decode_call(const char *body, size_t len, rpc_request *ret)
{
    AUTOJSON *o = json_parse(body, len);
    if (!o || !json_object_is_type(o, json_type_object))
        return -EINVAL;
    jdec d = {.text = body, .len = len, .neg_overflow = -1};
    struct json_object *j, *m, *id, *p;

    rpc_proto proto = RPC_JSON_V1;
    if (json_object_object_get_ex(o, "jsonrpc", &j)) {
        if (!json_object_is_type(j, json_type_string) ||
            strcmp(json_object_get_string(j), "2.0") != 0)
            return -EINVAL;
        proto = RPC_JSON_V2;
    }

    const char *method;
    if (!json_object_object_get_ex(o, "method", &m) || jdec_string(m, &method) < 0)
        return -EINVAL;

    AUTO(xv) *idv = NULL;
    if (!json_object_object_get_ex(o, "id", &id) || jdec_id(&d, id, &idv) < 0)
        return -EINVAL;

    AUTO(xv) *params = xv_new_array();
    bool has_params = json_object_object_get_ex(o, "params", &p) && p;
    if (!has_params && proto == RPC_JSON_V1)
        return -EINVAL;
    if (has_params) {
        if (!json_object_is_type(p, json_type_array))
            return -EINVAL;
        size_t n = json_object_array_length(p);
        for (size_t i = 0; i < n; i++) {
            xv *v;
            if (jdec_value(&d, json_object_array_get_idx(p, i), 0, &v) < 0)
                return -EINVAL;
            xv_array_append(params, v);
        }
    }

    *ret = (rpc_request){
        .method = xstrdup(method),
        .params = TAKE_PTR(params),
        .id = TAKE_PTR(idv),
        .proto = proto,
    };
    return 0;
}

/* [code, params...] or, v2 style, {"code":..,"message":code,"data":[params...]}. */
static xerr *jdec_error(struct json_object *e)
{
    struct json_object *data = NULL;
    const char *code;
    size_t first = 0;
    if (json_object_is_type(e, json_type_array)) {
        data = e;
        if (json_object_array_length(e) == 0 ||
            jdec_string(json_object_array_get_idx(e, 0), &code) < 0)
            return NULL;
        first = 1;
    } else if (json_object_is_type(e, json_type_object)) {
        struct json_object *m;
        if (!json_object_object_get_ex(e, "message", &m) || jdec_string(m, &code) < 0)
            return NULL;
        if (json_object_object_get_ex(e, "data", &data) && data &&
            !json_object_is_type(data, json_type_array))
            return NULL;
    } else {
        return NULL;
    }
    size_t n = data ? json_object_array_length(data) : 0;
    AUTOFREE const char **p = xcalloc(n ? n : 1, sizeof(char *));
    size_t np = 0;
    for (size_t i = first; i < n; i++)
        if (jdec_string(json_object_array_get_idx(data, i), &p[np++]) < 0)
            return NULL;
    return xerr_newv(code, p, np);
}

int rpc_json_decode_response(const char *body, size_t len, xv **ret_value, xerr **ret_err)
{
    AUTOJSON *o = json_parse(body, len);
    if (!o || !json_object_is_type(o, json_type_object))
        return -EINVAL;
    struct json_object *e, *res;
    if (json_object_object_get_ex(o, "error", &e) && e) {
        xerr *err = jdec_error(e);
        if (!err)
            return -EINVAL;
        *ret_value = NULL;
        *ret_err = err;
        return 0;
    }
    if (!json_object_object_get_ex(o, "result", &res))
        return -EINVAL;
    jdec d = {.text = body, .len = len, .neg_overflow = -1};
    xv *v;
    if (jdec_value(&d, res, 0, &v) < 0)
        return -EINVAL;
    *ret_value = v;
    *ret_err = NULL;
    return 0;
}

/* ---- Encoding ---- */

static void put_json(sbuf *b, const xv *v)
{
    AUTOFREE char *text = xv_to_json(v);
    sbuf_puts(b, text);
}

static void put_json_string(sbuf *b, const char *s)
{
    AUTO(xv) *v = xv_new_string(s);
    put_json(b, v);
}

char *rpc_json_encode_success(rpc_proto v, const xv *id, const xv *value, size_t *ret_len)
{
    sbuf b = SBUF_INIT;
    sbuf_reserve(&b, sbuf_size_hint(xv_array_len(value) + xv_struct_len(value)));
    sbuf_puts(&b, v == RPC_JSON_V2 ? "{\"jsonrpc\":\"2.0\",\"result\":" : "{\"result\":");
    put_json(&b, value);
    sbuf_puts(&b, v == RPC_JSON_V2 ? ",\"id\":" : ",\"error\":null,\"id\":");
    put_json(&b, id);
    sbuf_putc(&b, '}');
    return sbuf_steal(&b, ret_len);
}

char *rpc_json_encode_failure(rpc_proto v, const xv *id, const xerr *e, size_t *ret_len)
{
    sbuf b = SBUF_INIT;
    const char *code = e && e->code ? e->code : "INTERNAL_ERROR";
    if (v == RPC_JSON_V2) {
        /* xapi's v2 error: code is always 1, the XenAPI code is the message. */
        sbuf_puts(&b, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":");
        put_json_string(&b, code);
        sbuf_puts(&b, ",\"data\":[");
        for (size_t i = 0; e && i < e->nparams; i++) {
            if (i)
                sbuf_putc(&b, ',');
            put_json_string(&b, e->params[i]);
        }
        sbuf_puts(&b, "]},\"id\":");
    } else {
        sbuf_puts(&b, "{\"result\":null,\"error\":[");
        put_json_string(&b, code);
        for (size_t i = 0; e && i < e->nparams; i++) {
            sbuf_putc(&b, ',');
            put_json_string(&b, e->params[i]);
        }
        sbuf_puts(&b, "],\"id\":");
    }
    put_json(&b, id);
    sbuf_putc(&b, '}');
    return sbuf_steal(&b, ret_len);
}

char *rpc_json_encode_call(rpc_proto v, const char *method, const xv *params, int64_t id,
                           size_t *ret_len)
{
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, v == RPC_JSON_V2 ? "{\"jsonrpc\":\"2.0\",\"method\":" : "{\"method\":");
    put_json_string(&b, method ? method : "");
    sbuf_puts(&b, ",\"params\":");
    if (!params) {
        sbuf_puts(&b, "[]");
    } else if (params->kind == XV_ARRAY) {
        put_json(&b, params);
    } else {
        sbuf_putc(&b, '[');
        put_json(&b, params);
        sbuf_putc(&b, ']');
    }
    sbuf_printf(&b, ",\"id\":%lld}", (long long)id);
    return sbuf_steal(&b, ret_len);
}
