/* XML-RPC codec in xapi's dialect: untyped strings and ints, Status/Value envelopes. */
#define _GNU_SOURCE
#include "rpc.h"
#include "mem.h"
#include "sbuf.h"
#include "util.h"

#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

void rpc_request_clear(rpc_request *r)
{
    if (!r)
        return;
    free(r->method);
    xv_free(r->params);
    xv_free(r->id);
    *r = (rpc_request){0};
}

/* ---- Encoding ---- */

static void put_value(sbuf *b, const xv *v);

static void put_array(sbuf *b, const xv *v)
{
    sbuf_puts(b, "<value><array><data>");
    for (size_t i = 0; i < v->u.arr.n; i++)
        put_value(b, v->u.arr.items[i]);
    sbuf_puts(b, "</data></array></value>");
}

static void put_struct(sbuf *b, const xv *v)
{
    sbuf_puts(b, "<value><struct>");
    for (size_t i = 0; i < v->u.st.n; i++) {
        sbuf_puts(b, "<member><name>");
        sbuf_put_xml_escaped(b, v->u.st.keys[i], strlen(v->u.st.keys[i]));
        sbuf_puts(b, "</name>");
        put_value(b, v->u.st.vals[i]);
        sbuf_puts(b, "</member>");
    }
    sbuf_puts(b, "</struct></value>");
}

static void put_value(sbuf *b, const xv *v)
{
    if (!v) {
        sbuf_puts(b, "<value></value>");
        return;
    }
    switch (v->kind) {
    case XV_NIL:
        /* xapi's void is the empty string; <nil/> is an extension many clients lack. */
        sbuf_puts(b, "<value></value>");
        break;
    case XV_STRING:
        sbuf_puts(b, "<value>");
        sbuf_put_xml_escaped(b, v->u.str.s, v->u.str.len);
        sbuf_puts(b, "</value>");
        break;
    case XV_INT:
        /* xapi sends int64 as a decimal string: <i4> is only 32 bits on most clients. */
        if (v->flags & XV_F_I4) {
            sbuf_puts(b, "<value><i4>");
            sbuf_put_i64(b, (long long)v->u.i);
            sbuf_puts(b, "</i4></value>");
        } else {
            sbuf_puts(b, "<value>");
            sbuf_put_i64(b, (long long)v->u.i);
            sbuf_puts(b, "</value>");
        }
        break;
    case XV_FLOAT:
        sbuf_printf(b, "<value><double>%.16g</double></value>", v->u.f);
        break;
    case XV_BOOL:
        sbuf_puts(b, v->u.b ? "<value><boolean>1</boolean></value>"
                            : "<value><boolean>0</boolean></value>");
        break;
    case XV_DATETIME:
        sbuf_puts(b, "<value><dateTime.iso8601>");
        sbuf_put_xml_escaped(b, v->u.str.s, v->u.str.len);
        sbuf_puts(b, "</dateTime.iso8601></value>");
        break;
    case XV_ARRAY:
        put_array(b, v);
        break;
    case XV_STRUCT:
        put_struct(b, v);
        break;
    }
}

char *rpc_xml_encode_value(const xv *value)
{
    sbuf b = SBUF_INIT;
    put_value(&b, value);
    return sbuf_steal(&b, NULL);
}

char *rpc_xml_encode_call(const char *method, const xv *params, size_t *ret_len)
{
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, "<?xml version=\"1.0\"?><methodCall><methodName>");
    sbuf_put_xml_escaped(&b, method ? method : "", method ? strlen(method) : 0);
    sbuf_puts(&b, "</methodName><params>");
    if (params && params->kind == XV_ARRAY) {
        for (size_t i = 0; i < params->u.arr.n; i++) {
            sbuf_puts(&b, "<param>");
            put_value(&b, params->u.arr.items[i]);
            sbuf_puts(&b, "</param>");
        }
    } else if (params) {
        sbuf_puts(&b, "<param>");
        put_value(&b, params);
        sbuf_puts(&b, "</param>");
    }
    sbuf_puts(&b, "</params></methodCall>");
    return sbuf_steal(&b, ret_len);
}

#define RESPONSE_HEAD                                                                              \
    "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>"                        \
    "<member><name>Status</name><value>"
#define RESPONSE_TAIL "</struct></value></param></params></methodResponse>"

char *rpc_xml_encode_success(const xv *value, size_t *ret_len)
{
    sbuf b = SBUF_INIT;
    sbuf_reserve(&b, sbuf_size_hint(xv_array_len(value) + xv_struct_len(value)));
    sbuf_puts(&b, RESPONSE_HEAD "Success</value></member><member><name>Value</name>");
    put_value(&b, value);
    sbuf_puts(&b, "</member>" RESPONSE_TAIL);
    return sbuf_steal(&b, ret_len);
}

char *rpc_xml_encode_failure(const xerr *e, size_t *ret_len)
{
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, RESPONSE_HEAD "Failure</value></member><member><name>ErrorDescription</name>"
                                "<value><array><data><value>");
    const char *code = e && e->code ? e->code : "INTERNAL_ERROR";
    sbuf_put_xml_escaped(&b, code, strlen(code));
    sbuf_puts(&b, "</value>");
    for (size_t i = 0; e && i < e->nparams; i++) {
        sbuf_puts(&b, "<value>");
        sbuf_put_xml_escaped(&b, e->params[i], strlen(e->params[i]));
        sbuf_puts(&b, "</value>");
    }
    sbuf_puts(&b, "</data></array></value></member>" RESPONSE_TAIL);
    return sbuf_steal(&b, ret_len);
}

/* ---- Parsing ---- */

static void silent_structured(void *ctx, xmlErrorPtr err)
{
}

static void silent_generic(void *ctx, const char *msg, ...)
{
}

/* A DTD could declare entities (billion laughs, external files); we refuse the document
 * as soon as the parser meets one, before any declaration inside it is read. */
static void refuse_subset(void *ctx, const xmlChar *name, const xmlChar *external_id,
                          const xmlChar *system_id)
{
    xmlParserCtxtPtr ctxt = ctx;
    *(bool *)ctxt->_private = true;
    xmlStopParser(ctxt);
}

static void refuse_entity(void *ctx, const xmlChar *name, int type, const xmlChar *public_id,
                          const xmlChar *system_id, xmlChar *content)
{
    xmlParserCtxtPtr ctxt = ctx;
    *(bool *)ctxt->_private = true;
    xmlStopParser(ctxt);
}

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void xml_init_once(void)
{
    xmlInitParser();
}

/* No network, no entity substitution, no DTD loading, no HUGE (keeps libxml2's own depth
 * and text-size limits); CDATA arrives as plain text. */
#define XML_OPTIONS                                                                                \
    (XML_PARSE_NONET | XML_PARSE_NOCDATA | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |               \
     XML_PARSE_COMPACT)

/* Parses body into a DOM; NULL if it is not well-formed or has a DTD. Errors are silenced
 * per parse: the context's handler covers parser errors, the (thread-local) global one is
 * swapped for the duration to cover errors raised without a context. */
static xmlDocPtr xml_parse(const char *body, size_t len)
{
    if (!body || len == 0 || len > INT_MAX)
        return NULL;
    pthread_once(&xml_once, xml_init_once);

    xmlStructuredErrorFunc old_serror = xmlStructuredError;
    void *old_sctx = xmlStructuredErrorContext;
    xmlGenericErrorFunc old_generic = xmlGenericError;
    void *old_gctx = xmlGenericErrorContext;
    xmlSetStructuredErrorFunc(NULL, silent_structured);
    xmlSetGenericErrorFunc(NULL, silent_generic);

    xmlDocPtr doc = NULL;
    xmlParserCtxtPtr ctxt = xmlCreateMemoryParserCtxt(body, (int)len);
    if (ctxt) {
        bool had_dtd = false;
        ctxt->_private = &had_dtd;
        /* ctxt->sax is this context's own copy, so changing it is thread-safe. */
        ctxt->sax->internalSubset = refuse_subset;
        ctxt->sax->externalSubset = refuse_subset;
        ctxt->sax->entityDecl = refuse_entity;
        ctxt->sax->serror = silent_structured;
        xmlCtxtUseOptions(ctxt, XML_OPTIONS);
        xmlParseDocument(ctxt);
        doc = TAKE_PTR(ctxt->myDoc);
        if (!ctxt->wellFormed || had_dtd || (doc && (doc->intSubset || doc->extSubset))) {
            xmlFreeDoc(doc);
            doc = NULL;
        }
        xmlFreeParserCtxt(ctxt);
    }

    xmlSetStructuredErrorFunc(old_sctx, old_serror);
    xmlSetGenericErrorFunc(old_gctx, old_generic);
    return doc;
}

static inline void xml_docp(xmlDocPtr *d)
{
    xmlFreeDoc(*d);
}
#define AUTODOC __attribute__((cleanup(xml_docp))) xmlDocPtr

/* ---- Decoding ---- */

typedef struct xdec {
    size_t nvalues;
} xdec;

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool all_ws(const xmlChar *s)
{
    for (; s && *s; s++)
        if (!is_ws((char)*s))
            return false;
    return true;
}

static bool name_is(const xmlNode *n, const char *name)
{
    return strcmp((const char *)n->name, name) == 0;
}

/* Finds the first element at or after c, skipping comments, PIs and whitespace text;
 * *ret = NULL at the end. Other content (stray text, entity references) is -EINVAL. */
static int next_elem(xmlNode *c, xmlNode **ret)
{
    for (; c; c = c->next) {
        switch (c->type) {
        case XML_ELEMENT_NODE:
            *ret = c;
            return 0;
        case XML_COMMENT_NODE:
        case XML_PI_NODE:
            break;
        case XML_TEXT_NODE:
        case XML_CDATA_SECTION_NODE:
            if (!all_ws(c->content))
                return -EINVAL;
            break;
        default:
            return -EINVAL;
        }
    }
    *ret = NULL;
    return 0;
}

/* The single element child of n (whitespace and comments around it allowed). */
static int only_elem(xmlNode *n, const char *name, xmlNode **ret)
{
    xmlNode *e, *extra;
    if (next_elem(n->children, &e) < 0 || !e || !name_is(e, name))
        return -EINVAL;
    if (next_elem(e->next, &extra) < 0 || extra)
        return -EINVAL;
    *ret = e;
    return 0;
}

/* The text of an element that may hold only text (and comments); caller frees. */
static int leaf_text(xmlNode *n, char **ret)
{
    xmlNode *c = n->children;
    if (!c) {
        *ret = xstrdup("");
        return 0;
    }
    if (!c->next && (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE)) {
        *ret = xstrdup(c->content ? (const char *)c->content : "");
        return 0;
    }
    sbuf b = SBUF_INIT;
    for (; c; c = c->next) {
        if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) {
            if (c->content)
                sbuf_puts(&b, (const char *)c->content);
        } else if (c->type != XML_COMMENT_NODE && c->type != XML_PI_NODE) {
            sbuf_release(&b);
            return -EINVAL;
        }
    }
    *ret = sbuf_steal(&b, NULL);
    return 0;
}

/* Decimal int64 with optional sign; surrounding whitespace tolerated as Python does. */
static bool parse_int64(const char *s, int64_t *ret)
{
    while (is_ws(*s))
        s++;
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9')
        p++;
    const char *end = p;
    while (is_ws(*p))
        p++;
    if (*p)
        return false;
    errno = 0;
    char *e;
    long long v = strtoll(s, &e, 10);
    if (errno == ERANGE || e != end)
        return false;
    *ret = v;
    return true;
}

static bool parse_double(const char *s, double *ret)
{
    while (is_ws(*s))
        s++;
    if (!*s)
        return false;
    char *e;
    double d = strtod(s, &e);
    if (e == s)
        return false;
    while (is_ws(*e))
        e++;
    if (*e)
        return false;
    *ret = d;
    return true;
}

static int b64_digit(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes base64 (whitespace ignored, padding optional). A NUL byte cannot be held in an
 * xv string, so it makes the value malformed rather than silently truncated. */
static int base64_decode(const char *s, char **ret)
{
    size_t n = strlen(s);
    AUTOFREE char *out = xmalloc(n / 4 * 3 + 4);
    size_t o = 0, nsym = 0, npad = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_ws((char)c))
            continue;
        if (c == '=') {
            npad++;
            continue;
        }
        int d = b64_digit(c);
        if (d < 0 || npad)
            return -EINVAL;
        acc = ((acc << 6) | (unsigned)d) & 0xffffff;
        bits += 6;
        nsym++;
        if (bits >= 8) {
            bits -= 8;
            char byte = (char)((acc >> bits) & 0xff);
            if (byte == '\0')
                return -EINVAL;
            out[o++] = byte;
        }
    }
    if (nsym % 4 == 1 || npad > 2)
        return -EINVAL;
    out[o] = '\0';
    *ret = TAKE_PTR(out);
    return 0;
}

static int dec_value(xdec *d, xmlNode *val, int depth, xv **ret);

static int dec_array(xdec *d, xmlNode *arr, int depth, xv **ret)
{
    xmlNode *data, *e;
    int r = only_elem(arr, "data", &data);
    if (r < 0)
        return r;
    AUTO(xv) *a = xv_new_array();
    for (r = next_elem(data->children, &e); r == 0 && e; r = next_elem(e->next, &e)) {
        xv *item;
        if (!name_is(e, "value"))
            return -EINVAL;
        r = dec_value(d, e, depth + 1, &item);
        if (r < 0)
            return r;
        xv_array_append(a, item);
    }
    if (r < 0)
        return r;
    *ret = TAKE_PTR(a);
    return 0;
}

/* Struct members are unique by key (last wins, as xapi's decoder does). Big structs
 * (get_all_records maps) get a hash index so decoding stays linear; small ones scan. */
#define KEYIDX_MIN 16

typedef struct keyidx {
    size_t *slot; /* member index + 1; 0 = free */
    size_t cap;   /* power of two; 0 while the struct is small */
} keyidx;

static size_t key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)h;
}

static void keyidx_put(keyidx *ix, const xv *st, size_t i)
{
    size_t m = ix->cap - 1;
    size_t h = key_hash(st->u.st.keys[i]) & m;
    while (ix->slot[h])
        h = (h + 1) & m;
    ix->slot[h] = i + 1;
}

static void keyidx_rebuild(keyidx *ix, const xv *st)
{
    size_t cap = 64;
    while (cap < st->u.st.n * 2)
        cap *= 2;
    free(ix->slot);
    ix->slot = xcalloc(cap, sizeof(size_t));
    ix->cap = cap;
    for (size_t i = 0; i < st->u.st.n; i++)
        keyidx_put(ix, st, i);
}

static ssize_t struct_find(const keyidx *ix, const xv *st, const char *key)
{
    if (!ix->cap) {
        for (size_t i = 0; i < st->u.st.n; i++)
            if (strcmp(st->u.st.keys[i], key) == 0)
                return (ssize_t)i;
        return -1;
    }
    size_t m = ix->cap - 1;
    for (size_t h = key_hash(key) & m; ix->slot[h]; h = (h + 1) & m)
        if (strcmp(st->u.st.keys[ix->slot[h] - 1], key) == 0)
            return (ssize_t)(ix->slot[h] - 1);
    return -1;
}

/* Takes ownership of key and val. Appends directly: xv_struct_set would rescan. */
static void struct_put(keyidx *ix, xv *st, char *key, xv *val)
{
    ssize_t i = struct_find(ix, st, key);
    if (i >= 0) {
        free(key);
        xv_free(st->u.st.vals[i]);
        st->u.st.vals[i] = val;
        return;
    }
    if (st->u.st.n == st->u.st.cap) {
        st->u.st.cap = st->u.st.cap ? st->u.st.cap * 2 : 8;
        st->u.st.keys = xrealloc(st->u.st.keys, st->u.st.cap * sizeof(char *));
        st->u.st.vals = xrealloc(st->u.st.vals, st->u.st.cap * sizeof(xv *));
    }
    st->u.st.keys[st->u.st.n] = key;
    st->u.st.vals[st->u.st.n] = val;
    st->u.st.n++;
    if (ix->cap && st->u.st.n * 2 <= ix->cap)
        keyidx_put(ix, st, st->u.st.n - 1);
    else if (st->u.st.n >= KEYIDX_MIN)
        keyidx_rebuild(ix, st);
}

static int dec_member(xdec *d, xmlNode *mem, int depth, char **ret_key, xv **ret_val)
{
    xmlNode *e, *name = NULL, *value = NULL;
    int r;
    for (r = next_elem(mem->children, &e); r == 0 && e; r = next_elem(e->next, &e)) {
        if (name_is(e, "name") && !name)
            name = e;
        else if (name_is(e, "value") && !value)
            value = e;
        else
            return -EINVAL;
    }
    if (r < 0 || !name || !value)
        return -EINVAL;
    AUTOFREE char *key = NULL;
    r = leaf_text(name, &key);
    if (r < 0)
        return r;
    r = dec_value(d, value, depth, ret_val);
    if (r < 0)
        return r;
    *ret_key = TAKE_PTR(key);
    return 0;
}

static int dec_struct(xdec *d, xmlNode *st, int depth, xv **ret)
{
    AUTO(xv) *s = xv_new_struct();
    keyidx ix = {0};
    xmlNode *e;
    int r;
    for (r = next_elem(st->children, &e); r == 0 && e; r = next_elem(e->next, &e)) {
        char *key;
        xv *val;
        if (!name_is(e, "member")) {
            r = -EINVAL;
            break;
        }
        r = dec_member(d, e, depth + 1, &key, &val);
        if (r < 0)
            break;
        struct_put(&ix, s, key, val);
    }
    free(ix.slot);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(s);
    return 0;
}

/* Decodes the typed child t of a <value>. */
static int dec_typed(xdec *d, xmlNode *t, int depth, xv **ret)
{
    if (name_is(t, "array") || name_is(t, "struct")) {
        if (depth >= RPC_MAX_DEPTH)
            return -EINVAL;
        return name_is(t, "array") ? dec_array(d, t, depth, ret) : dec_struct(d, t, depth, ret);
    }

    AUTOFREE char *text = NULL;
    int r = leaf_text(t, &text);
    if (r < 0)
        return r;
    if (name_is(t, "string")) {
        *ret = xv_new_string_take(TAKE_PTR(text));
    } else if (name_is(t, "i4") || name_is(t, "int") || name_is(t, "i8")) {
        int64_t i;
        if (!parse_int64(text, &i))
            return -EINVAL;
        *ret = xv_new_int(i);
    } else if (name_is(t, "boolean")) {
        /* Exactly "1" or "0": xapi treats anything but "1" as false, we call it malformed. */
        if (strcmp(text, "1") != 0 && strcmp(text, "0") != 0)
            return -EINVAL;
        *ret = xv_new_bool(text[0] == '1');
    } else if (name_is(t, "double")) {
        double f;
        if (!parse_double(text, &f))
            return -EINVAL;
        *ret = xv_new_float(f);
    } else if (name_is(t, "dateTime.iso8601")) {
        xv *v = xv_new_string_take(TAKE_PTR(text));
        v->kind = XV_DATETIME; /* same representation; kept verbatim */
        *ret = v;
    } else if (name_is(t, "base64")) {
        char *bytes;
        if (base64_decode(text, &bytes) < 0)
            return -EINVAL;
        *ret = xv_new_string_take(bytes);
    } else if (name_is(t, "nil")) {
        if (!all_ws((const xmlChar *)text))
            return -EINVAL;
        *ret = xv_new_nil();
    } else {
        return -EINVAL;
    }
    return 0;
}

/* depth = number of containers around this value (the response envelope: -1). */
static int dec_value(xdec *d, xmlNode *val, int depth, xv **ret)
{
    if (++d->nvalues > RPC_MAX_VALUES)
        return -EINVAL;
    bool has_elem = false;
    for (xmlNode *c = val->children; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE) {
            has_elem = true;
            break;
        }
    if (!has_elem) {
        /* Untyped: a string, kept verbatim including surrounding spaces. */
        char *text;
        int r = leaf_text(val, &text);
        if (r < 0)
            return r;
        *ret = xv_new_string_take(text);
        return 0;
    }
    xmlNode *t, *extra;
    if (next_elem(val->children, &t) < 0 || !t)
        return -EINVAL;
    if (next_elem(t->next, &extra) < 0 || extra)
        return -EINVAL;
    return dec_typed(d, t, depth, ret);
}

static xmlNode *root_named(xmlDocPtr doc, const char *name)
{
    xmlNode *r = xmlDocGetRootElement(doc);
    return r && name_is(r, name) ? r : NULL;
}

static char *trim_dup(const char *s)
{
    while (is_ws(*s))
        s++;
    size_t n = strlen(s);
    while (n && is_ws(s[n - 1]))
        n--;
    return xstrndup(s, n);
}

int rpc_xml_decode_call(const char *body, size_t len, rpc_request *ret)
{
    AUTODOC doc = xml_parse(body, len);
    xmlNode *root = doc ? root_named(doc, "methodCall") : NULL;
    if (!root)
        return -EINVAL;

    xdec d = {0};
    xmlNode *e, *name = NULL, *params = NULL;
    int r;
    for (r = next_elem(root->children, &e); r == 0 && e; r = next_elem(e->next, &e)) {
        if (name_is(e, "methodName") && !name)
            name = e;
        else if (name_is(e, "params") && !params)
            params = e;
        else
            return -EINVAL;
    }
    if (r < 0 || !name)
        return -EINVAL;

    AUTOFREE char *raw = NULL;
    if (leaf_text(name, &raw) < 0)
        return -EINVAL;
    AUTO(xv) *args = xv_new_array();
    if (params) {
        for (r = next_elem(params->children, &e); r == 0 && e; r = next_elem(e->next, &e)) {
            xmlNode *value;
            xv *v;
            if (!name_is(e, "param") || only_elem(e, "value", &value) < 0)
                return -EINVAL;
            r = dec_value(&d, value, 0, &v);
            if (r < 0)
                return r;
            xv_array_append(args, v);
        }
        if (r < 0)
            return r;
    }
    *ret = (rpc_request){
        .method = trim_dup(raw),
        .params = TAKE_PTR(args),
        .id = NULL,
        .proto = RPC_XML,
    };
    return 0;
}

xv *rpc_xml_decode_value(const char *text, size_t len)
{
    AUTODOC doc = xml_parse(text, len);
    xmlNode *root = doc ? root_named(doc, "value") : NULL;
    xdec d = {0};
    xv *v;
    if (!root || dec_value(&d, root, 0, &v) < 0)
        return NULL;
    return v;
}

/* Removes and returns a member's value, leaving a NULL slot (xv_free accepts it). */
static xv *struct_steal(xv *st, const char *key)
{
    for (size_t i = 0; i < st->u.st.n; i++)
        if (strcmp(st->u.st.keys[i], key) == 0)
            return TAKE_PTR(st->u.st.vals[i]);
    return NULL;
}

/* [code, params...], every item a string. */
static xerr *error_from_array(const xv *a)
{
    size_t n = xv_array_len(a);
    if (n == 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (xv_array_get(a, i)->kind != XV_STRING)
            return NULL;
    AUTOFREE const char **p = xcalloc(n, sizeof(char *));
    for (size_t i = 1; i < n; i++)
        p[i - 1] = xv_array_get(a, i)->u.str.s;
    return xerr_newv(xv_array_get(a, 0)->u.str.s, p, n - 1);
}

static int dec_fault(xdec *d, xmlNode *fault, xerr **ret_err)
{
    xmlNode *value;
    AUTO(xv) *v = NULL;
    if (only_elem(fault, "value", &value) < 0 || dec_value(d, value, 0, &v) < 0 ||
        v->kind != XV_STRUCT)
        return -EINVAL;
    const xv *code = xv_struct_get(v, "faultCode");
    const char *msg = xv_struct_get_str(v, "faultString");
    if (!code || !msg)
        return -EINVAL;
    AUTOFREE char *code_text = NULL;
    if (code->kind == XV_INT)
        code_text = xasprintf("%lld", (long long)code->u.i);
    else if (code->kind == XV_STRING)
        code_text = xstrdup(code->u.str.s);
    else
        return -EINVAL;
    *ret_err = xerr_new("XMLRPC_FAULT", code_text, msg);
    return 0;
}

int rpc_xml_decode_response(const char *body, size_t len, xv **ret_value, xerr **ret_err)
{
    AUTODOC doc = xml_parse(body, len);
    xmlNode *root = doc ? root_named(doc, "methodResponse") : NULL;
    xmlNode *e, *extra, *param, *value;
    xdec d = {0};
    if (!root || next_elem(root->children, &e) < 0 || !e)
        return -EINVAL;
    if (next_elem(e->next, &extra) < 0 || extra)
        return -EINVAL;

    if (name_is(e, "fault")) {
        xerr *err;
        if (dec_fault(&d, e, &err) < 0)
            return -EINVAL;
        *ret_value = NULL;
        *ret_err = err;
        return 0;
    }
    if (!name_is(e, "params") || only_elem(e, "param", &param) < 0 ||
        only_elem(param, "value", &value) < 0)
        return -EINVAL;
    /* The envelope struct does not count against the Value's depth. */
    AUTO(xv) *env = NULL;
    if (dec_value(&d, value, -1, &env) < 0 || env->kind != XV_STRUCT)
        return -EINVAL;
    const char *status = xv_struct_get_str(env, "Status");
    if (!status)
        return -EINVAL;
    if (strcmp(status, "Success") == 0) {
        xv *v = struct_steal(env, "Value");
        if (!v)
            return -EINVAL;
        *ret_value = v;
        *ret_err = NULL;
        return 0;
    }
    if (strcmp(status, "Failure") == 0) {
        xerr *err = error_from_array(xv_struct_get(env, "ErrorDescription"));
        if (!err)
            return -EINVAL;
        *ret_value = NULL;
        *ret_err = err;
        return 0;
    }
    return -EINVAL;
}

/* ---- Wire equivalence (tests, fuzzers) ---- */

static bool xml_text_ok(const char *s, size_t n)
{
    if (!utf8_valid(s, n))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return false;
        /* U+FFFE and U+FFFF are not XML characters either. */
        if (c == 0xef && i + 2 < n && (unsigned char)s[i + 1] == 0xbf &&
            ((unsigned char)s[i + 2] & 0xfe) == 0xbe)
            return false;
    }
    return true;
}

bool rpc_xml_encodable(const xv *v)
{
    if (!v)
        return true;
    switch (v->kind) {
    case XV_STRING:
    case XV_DATETIME:
        return xml_text_ok(v->u.str.s, v->u.str.len);
    case XV_ARRAY:
        for (size_t i = 0; i < v->u.arr.n; i++)
            if (!rpc_xml_encodable(v->u.arr.items[i]))
                return false;
        return true;
    case XV_STRUCT:
        for (size_t i = 0; i < v->u.st.n; i++)
            if (!xml_text_ok(v->u.st.keys[i], strlen(v->u.st.keys[i])) ||
                !rpc_xml_encodable(v->u.st.vals[i]))
                return false;
        return true;
    default:
        return true;
    }
}

/* %.16g keeps 16 significant digits: the value may move by one unit in the last one. */
static bool float_close(double a, double b)
{
    if (a == b || (isnan(a) && isnan(b)))
        return true;
    if (isnan(a) || isnan(b))
        return false;
    if (isinf(a) || isinf(b)) {
        double fin = isinf(a) ? b : a, inf = isinf(a) ? a : b;
        return !isinf(fin) && fabs(fin) > 1.797693134862315e308 && signbit(fin) == signbit(inf);
    }
    return fabs(a - b) <= fmax(fabs(a), fabs(b)) * 1e-15;
}

bool rpc_wire_equal(rpc_proto p, const xv *sent, const xv *got)
{
    bool xml = p == RPC_XML;
    xv_kind k = sent ? sent->kind : XV_NIL;
    if (!got)
        return false;
    switch (k) {
    case XV_NIL:
        return xml ? got->kind == XV_STRING && got->u.str.len == 0 : got->kind == XV_NIL;
    case XV_STRING:
        return got->kind == XV_STRING && strcmp(sent->u.str.s, got->u.str.s) == 0;
    case XV_DATETIME:
        return got->kind == (xml ? XV_DATETIME : XV_STRING) &&
               strcmp(sent->u.str.s, got->u.str.s) == 0;
    case XV_INT:
        if (xml && !(sent->flags & XV_F_I4)) {
            char dec[24];
            snprintf(dec, sizeof(dec), "%lld", (long long)sent->u.i);
            return got->kind == XV_STRING && strcmp(dec, got->u.str.s) == 0;
        }
        return got->kind == XV_INT && got->u.i == sent->u.i;
    case XV_FLOAT:
        if (!xml && got->kind == XV_NIL)
            return !isfinite(sent->u.f);
        return got->kind == XV_FLOAT && float_close(sent->u.f, got->u.f);
    case XV_BOOL:
        return got->kind == XV_BOOL && got->u.b == sent->u.b;
    case XV_ARRAY:
        if (got->kind != XV_ARRAY || got->u.arr.n != sent->u.arr.n)
            return false;
        for (size_t i = 0; i < sent->u.arr.n; i++)
            if (!rpc_wire_equal(p, sent->u.arr.items[i], got->u.arr.items[i]))
                return false;
        return true;
    case XV_STRUCT:
        if (got->kind != XV_STRUCT || got->u.st.n != sent->u.st.n)
            return false;
        for (size_t i = 0; i < sent->u.st.n; i++)
            if (strcmp(sent->u.st.keys[i], got->u.st.keys[i]) != 0 ||
                !rpc_wire_equal(p, sent->u.st.vals[i], got->u.st.vals[i]))
                return false;
        return true;
    }
    return false;
}
