/* The value tree shared by both RPC protocols, the DB layer and the CLI. */
#define _GNU_SOURCE
#include "xv.h"
#include "mem.h"
#include "sbuf.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static xv *xv_alloc(xv_kind k)
{
    xv *v = xcalloc(1, sizeof(*v));
    v->kind = k;
    return v;
}

xv *xv_new_nil(void)
{
    return xv_alloc(XV_NIL);
}

/* One allocation for the node and its bytes: records hold tens of thousands of strings. */
xv *xv_new_stringn(const char *s, size_t n)
{
    const char *nul = memchr(s, '\0', n);
    if (nul)
        n = (size_t)(nul - s);
    xv *v = xmalloc(sizeof(*v) + n + 1);
    memset(v, 0, sizeof(*v));
    v->kind = XV_STRING;
    v->flags = XV_F_INLINE;
    v->u.str.s = (char *)(v + 1);
    memcpy(v->u.str.s, s, n);
    v->u.str.s[n] = '\0';
    v->u.str.len = n;
    return v;
}

xv *xv_new_string(const char *s)
{
    return xv_new_stringn(s ? s : "", s ? strlen(s) : 0);
}

xv *xv_new_string_take(char *s)
{
    xv *v = xv_alloc(XV_STRING);
    v->u.str.s = s ? s : xstrdup("");
    v->u.str.len = strlen(v->u.str.s);
    return v;
}

xv *xv_new_int(int64_t i)
{
    xv *v = xv_alloc(XV_INT);
    v->u.i = i;
    return v;
}

xv *xv_new_float(double f)
{
    xv *v = xv_alloc(XV_FLOAT);
    v->u.f = f;
    return v;
}

xv *xv_new_bool(bool b)
{
    xv *v = xv_alloc(XV_BOOL);
    v->u.b = b;
    return v;
}

xv *xv_new_datetime(const char *s)
{
    xv *v = xv_new_string(s);
    v->kind = XV_DATETIME;
    return v;
}

xv *xv_new_datetime_epoch(int64_t t)
{
    char buf[20];
    xv_format_datetime(t, buf);
    return xv_new_datetime(buf);
}

xv *xv_new_array(void)
{
    return xv_alloc(XV_ARRAY);
}

xv *xv_new_struct(void)
{
    return xv_alloc(XV_STRUCT);
}

xv *xv_new_struct_cap(size_t n)
{
    xv *v = xv_alloc(XV_STRUCT);
    if (n) {
        v->u.st.cap = n;
        v->u.st.keys = xmalloc(n * sizeof(char *));
        v->u.st.vals = xmalloc(n * sizeof(xv *));
    }
    return v;
}

void xv_free(xv *v)
{
    if (!v)
        return;
    switch (v->kind) {
    case XV_STRING:
    case XV_DATETIME:
        if (!(v->flags & XV_F_INLINE))
            free(v->u.str.s);
        break;
    case XV_ARRAY:
        for (size_t i = 0; i < v->u.arr.n; i++)
            xv_free(v->u.arr.items[i]);
        free(v->u.arr.items);
        break;
    case XV_STRUCT:
        for (size_t i = 0; i < v->u.st.n; i++) {
            free(v->u.st.keys[i]);
            xv_free(v->u.st.vals[i]);
        }
        free(v->u.st.keys);
        free(v->u.st.vals);
        break;
    default:
        break;
    }
    free(v);
}

xv *xv_copy(const xv *v)
{
    if (!v)
        return NULL;
    xv *c;
    switch (v->kind) {
    case XV_STRING:
        return xv_new_stringn(v->u.str.s, v->u.str.len);
    case XV_DATETIME:
        return xv_new_datetime(v->u.str.s);
    case XV_ARRAY:
        c = xv_new_array();
        for (size_t i = 0; i < v->u.arr.n; i++)
            xv_array_append(c, xv_copy(v->u.arr.items[i]));
        return c;
    case XV_STRUCT:
        c = xv_new_struct();
        for (size_t i = 0; i < v->u.st.n; i++)
            xv_struct_set(c, v->u.st.keys[i], xv_copy(v->u.st.vals[i]));
        return c;
    default:
        c = xv_alloc(v->kind);
        c->u = v->u;
        c->flags = v->flags & XV_F_I4;
        return c;
    }
}

bool xv_equal(const xv *a, const xv *b)
{
    if (!a || !b)
        return a == b;
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case XV_NIL:
        return true;
    case XV_STRING:
    case XV_DATETIME:
        return strcmp(a->u.str.s, b->u.str.s) == 0;
    case XV_INT:
        return a->u.i == b->u.i;
    case XV_FLOAT:
        return a->u.f == b->u.f || (isnan(a->u.f) && isnan(b->u.f));
    case XV_BOOL:
        return a->u.b == b->u.b;
    case XV_ARRAY:
        if (a->u.arr.n != b->u.arr.n)
            return false;
        for (size_t i = 0; i < a->u.arr.n; i++)
            if (!xv_equal(a->u.arr.items[i], b->u.arr.items[i]))
                return false;
        return true;
    case XV_STRUCT:
        if (a->u.st.n != b->u.st.n)
            return false;
        for (size_t i = 0; i < a->u.st.n; i++) {
            const xv *o = xv_struct_get(b, a->u.st.keys[i]);
            if (!o || !xv_equal(a->u.st.vals[i], o))
                return false;
        }
        return true;
    }
    return false;
}

void xv_array_append(xv *a, xv *item)
{
    if (a->u.arr.n == a->u.arr.cap) {
        a->u.arr.cap = a->u.arr.cap ? a->u.arr.cap * 2 : 4;
        a->u.arr.items = xrealloc(a->u.arr.items, a->u.arr.cap * sizeof(xv *));
    }
    a->u.arr.items[a->u.arr.n++] = item;
}

size_t xv_array_len(const xv *a)
{
    return a && a->kind == XV_ARRAY ? a->u.arr.n : 0;
}

const xv *xv_array_get(const xv *a, size_t i)
{
    return a && a->kind == XV_ARRAY && i < a->u.arr.n ? a->u.arr.items[i] : NULL;
}

static ssize_t xv_struct_find(const xv *s, const char *key)
{
    if (!s || s->kind != XV_STRUCT)
        return -1;
    for (size_t i = 0; i < s->u.st.n; i++)
        if (strcmp(s->u.st.keys[i], key) == 0)
            return (ssize_t)i;
    return -1;
}

static void xv_struct_push(xv *s, const char *key, xv *val)
{
    if (s->u.st.n == s->u.st.cap) {
        s->u.st.cap = s->u.st.cap ? s->u.st.cap * 2 : 8;
        s->u.st.keys = xrealloc(s->u.st.keys, s->u.st.cap * sizeof(char *));
        s->u.st.vals = xrealloc(s->u.st.vals, s->u.st.cap * sizeof(xv *));
    }
    s->u.st.keys[s->u.st.n] = xstrdup(key);
    s->u.st.vals[s->u.st.n] = val;
    s->u.st.n++;
}

void xv_struct_append(xv *s, const char *key, xv *val)
{
    xv_struct_push(s, key, val);
}

void xv_struct_set(xv *s, const char *key, xv *val)
{
    ssize_t i = xv_struct_find(s, key);
    if (i >= 0) {
        xv_free(s->u.st.vals[i]);
        s->u.st.vals[i] = val;
        return;
    }
    xv_struct_push(s, key, val);
}

bool xv_struct_add(xv *s, const char *key, xv *val)
{
    if (xv_struct_find(s, key) >= 0) {
        xv_free(val);
        return false;
    }
    xv_struct_push(s, key, val);
    return true;
}

const xv *xv_struct_get(const xv *s, const char *key)
{
    ssize_t i = xv_struct_find(s, key);
    return i >= 0 ? s->u.st.vals[i] : NULL;
}

bool xv_struct_del(xv *s, const char *key)
{
    ssize_t i = xv_struct_find(s, key);
    if (i < 0)
        return false;
    free(s->u.st.keys[i]);
    xv_free(s->u.st.vals[i]);
    size_t rest = s->u.st.n - (size_t)i - 1;
    memmove(&s->u.st.keys[i], &s->u.st.keys[i + 1], rest * sizeof(char *));
    memmove(&s->u.st.vals[i], &s->u.st.vals[i + 1], rest * sizeof(xv *));
    s->u.st.n--;
    return true;
}

size_t xv_struct_len(const xv *s)
{
    return s && s->kind == XV_STRUCT ? s->u.st.n : 0;
}

const char *xv_str(const xv *v)
{
    return v && (v->kind == XV_STRING || v->kind == XV_DATETIME) ? v->u.str.s : NULL;
}

const char *xv_struct_get_str(const xv *s, const char *key)
{
    return xv_str(xv_struct_get(s, key));
}

/* ---- JSON ---- */

static void json_put_string(sbuf *b, const char *s, size_t n)
{
    sbuf_putc(b, '"');
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        char esc[8];
        const char *rep = NULL;
        if (c == '"')
            rep = "\\\"";
        else if (c == '\\')
            rep = "\\\\";
        else if (c == '\n')
            rep = "\\n";
        else if (c == '\r')
            rep = "\\r";
        else if (c == '\t')
            rep = "\\t";
        else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            rep = esc;
        } else
            continue;
        sbuf_append(b, s + start, i - start);
        sbuf_puts(b, rep);
        start = i + 1;
    }
    sbuf_append(b, s + start, n - start);
    sbuf_putc(b, '"');
}

static void xv_json_put(sbuf *b, const xv *v)
{
    if (!v) {
        sbuf_puts(b, "null");
        return;
    }
    switch (v->kind) {
    case XV_NIL:
        sbuf_puts(b, "null");
        break;
    case XV_STRING:
    case XV_DATETIME:
        json_put_string(b, v->u.str.s, v->u.str.len);
        break;
    case XV_INT:
        sbuf_put_i64(b, (long long)v->u.i);
        break;
    case XV_FLOAT:
        if (isfinite(v->u.f)) {
            char tmp[40];
            snprintf(tmp, sizeof(tmp), "%.16g", v->u.f);
            sbuf_puts(b, tmp);
            if (!strpbrk(tmp, ".eE"))
                sbuf_puts(b, ".0");
        } else
            sbuf_puts(b, "null");
        break;
    case XV_BOOL:
        sbuf_puts(b, v->u.b ? "true" : "false");
        break;
    case XV_ARRAY:
        sbuf_putc(b, '[');
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i)
                sbuf_putc(b, ',');
            xv_json_put(b, v->u.arr.items[i]);
        }
        sbuf_putc(b, ']');
        break;
    case XV_STRUCT:
        sbuf_putc(b, '{');
        for (size_t i = 0; i < v->u.st.n; i++) {
            if (i)
                sbuf_putc(b, ',');
            json_put_string(b, v->u.st.keys[i], strlen(v->u.st.keys[i]));
            sbuf_putc(b, ':');
            xv_json_put(b, v->u.st.vals[i]);
        }
        sbuf_putc(b, '}');
        break;
    }
}

char *xv_to_json(const xv *v)
{
    sbuf b = SBUF_INIT;
    xv_json_put(&b, v);
    return sbuf_steal(&b, NULL);
}

static xv *xv_from_jobj(struct json_object *o)
{
    if (!o)
        return xv_new_nil();
    switch (json_object_get_type(o)) {
    case json_type_null:
        return xv_new_nil();
    case json_type_boolean:
        return xv_new_bool(json_object_get_boolean(o));
    case json_type_double:
        return xv_new_float(json_object_get_double(o));
    case json_type_int:
        return xv_new_int(json_object_get_int64(o));
    case json_type_string:
        return xv_new_stringn(json_object_get_string(o), (size_t)json_object_get_string_len(o));
    case json_type_array: {
        xv *a = xv_new_array();
        size_t n = json_object_array_length(o);
        for (size_t i = 0; i < n; i++)
            xv_array_append(a, xv_from_jobj(json_object_array_get_idx(o, i)));
        return a;
    }
    case json_type_object: {
        xv *s = xv_new_struct();
        json_object_object_foreach(o, key, val)
        {
            xv_struct_set(s, key, xv_from_jobj(val));
        }
        return s;
    }
    }
    return xv_new_nil();
}

xv *xv_from_json(const char *text, size_t len)
{
    struct json_tokener *tok = json_tokener_new_ex(64);
    if (!tok)
        return NULL;
    /* the terminating NUL is part of the input, so a bare top-level number ends */
    char *copy = xstrndup(text, len);
    struct json_object *o = json_tokener_parse_ex(tok, copy, (int)len + 1);
    free(copy);
    enum json_tokener_error err = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || err != json_tokener_success) {
        json_object_put(o);
        return NULL;
    }
    /* trailing garbage other than whitespace is an error */
    if (used > len)
        used = len;
    for (size_t i = used; i < len; i++) {
        if (text[i] != ' ' && text[i] != '\n' && text[i] != '\r' && text[i] != '\t') {
            json_object_put(o);
            return NULL;
        }
    }
    xv *v = xv_from_jobj(o);
    json_object_put(o);
    return v;
}

void xv_format_datetime(int64_t t, char out[static 20])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 20, "%Y%m%dT%H:%M:%SZ", &tm);
}

bool xv_parse_datetime(const char *s, int64_t *ret_t)
{
    if (!s)
        return false;
    int Y, M, D, h, m, sec;
    char rest[8] = "";
    int n = 0;
    if (sscanf(s, "%4d%2d%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &n) == 6 ||
        sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &n) == 6) {
        const char *p = s + n;
        if (*p == '.')
            for (p++; *p >= '0' && *p <= '9'; p++)
                ;
        snprintf(rest, sizeof(rest), "%s", p);
        if (!(rest[0] == '\0' || strcmp(rest, "Z") == 0 || strcmp(rest, "+00:00") == 0))
            return false;
        if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 || Y < 1900)
            return false;
        struct tm tm = {0};
        tm.tm_year = Y - 1900;
        tm.tm_mon = M - 1;
        tm.tm_mday = D;
        tm.tm_hour = h;
        tm.tm_min = m;
        tm.tm_sec = sec;
        *ret_t = (int64_t)timegm(&tm);
        return true;
    }
    return false;
}
