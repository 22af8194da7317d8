/* xe output formatting: XCP's record layout, value rendering and error texts. */
#define _GNU_SOURCE
#include "xe.h"

#include "mem.h"

#include <ctype.h>
#include <inttypes.h>
#include <string.h>

static const char NOT_IN_DB[] = "<not in database>";

void xe_format_record(sbuf *b, size_t n, const char *const *keys, const char *const *vals)
{
    size_t width = 0;
    for (size_t i = 0; i < n; i++)
        if (strlen(keys[i]) > width)
            width = strlen(keys[i]);
    width += 4;
    if (n == 0)
        sbuf_putc(b, '\n'); /* XCP ends even an empty record with a newline */
    for (size_t i = 0; i < n; i++) {
        size_t pad = width - strlen(keys[i]);
        if (i == 0) {
            sbuf_puts(b, keys[i]);
            for (size_t k = 0; k < pad; k++)
                sbuf_putc(b, ' ');
        } else {
            for (size_t k = 0; k < pad; k++)
                sbuf_putc(b, ' ');
            sbuf_puts(b, keys[i]);
        }
        sbuf_puts(b, ": ");
        sbuf_puts(b, vals[i]);
        sbuf_putc(b, '\n');
    }
}

char *xe_escape_minimal(const char *s)
{
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, "");
    for (; *s; s++) {
        if (*s == ',' || *s == '\\')
            sbuf_putc(&b, '\\');
        sbuf_putc(&b, *s);
    }
    return sbuf_steal(&b, NULL);
}

static void format_scalar(sbuf *b, const api_type *t, const xv *v, xe_ref_resolver resolve,
                          void *ud)
{
    if (!v) {
        return;
    }
    switch (v->kind) {
    case XV_BOOL:
        sbuf_puts(b, v->u.b ? "true" : "false");
        return;
    case XV_INT:
        sbuf_printf(b, "%" PRId64, v->u.i);
        return;
    case XV_FLOAT:
        sbuf_printf(b, "%.3f", v->u.f);
        return;
    case XV_NIL:
        return;
    case XV_ARRAY:
    case XV_STRUCT:
        /* a container where a scalar was declared: show it generically */
        xe_format_value(b, NULL, v, resolve, ud);
        return;
    default:
        break;
    }
    const char *s = xv_str(v);
    if (!s)
        return;
    if (t && t->kind == API_T_REF) {
        char *uuid = (resolve && t->cls >= 0) ? resolve(ud, t->cls, s) : NULL;
        if (uuid) {
            sbuf_puts(b, uuid);
            free(uuid);
        } else if ((resolve && t->cls >= 0) || strcmp(s, "OpaqueRef:NULL") == 0) {
            sbuf_puts(b, NOT_IN_DB);
        } else {
            sbuf_puts(b, s);
        }
        return;
    }
    if (t && t->kind == API_T_FLOAT) {
        char *end = NULL;
        double d = strtod(s, &end);
        if (end && end != s && !*end) {
            sbuf_printf(b, "%.3f", d);
            return;
        }
    }
    if (t && t->kind == API_T_ENUM && t->en && strcmp(t->en->name, "vm_power_state") == 0) {
        for (; *s; s++)
            sbuf_putc(b, (char)tolower((unsigned char)*s));
        return;
    }
    sbuf_puts(b, s);
}

void xe_format_value(sbuf *b, const api_type *t, const xv *v, xe_ref_resolver resolve, void *ud)
{
    xe_format_value_sep(b, t, v, "; ", resolve, ud);
}

void xe_format_value_sep(sbuf *b, const api_type *t, const xv *v, const char *set_sep,
                         xe_ref_resolver resolve, void *ud)
{
    sbuf_puts(b, "");
    if (!v)
        return;
    if (v->kind == XV_ARRAY) {
        const api_type *et = (t && t->kind == API_T_SET) ? t->elem : NULL;
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i)
                sbuf_puts(b, set_sep);
            format_scalar(b, et, v->u.arr.items[i], resolve, ud);
        }
        return;
    }
    if (v->kind == XV_STRUCT) {
        const api_type *kt = (t && t->kind == API_T_MAP) ? t->key : NULL;
        const api_type *vt = (t && t->kind == API_T_MAP) ? t->elem : NULL;
        for (size_t i = 0; i < v->u.st.n; i++) {
            if (i)
                sbuf_puts(b, "; ");
            AUTO(xv) *k = xv_new_string(v->u.st.keys[i]);
            format_scalar(b, kt, k, resolve, ud);
            sbuf_puts(b, ": ");
            format_scalar(b, vt, v->u.st.vals[i], resolve, ud);
        }
        return;
    }
    format_scalar(b, t, v, resolve, ud);
}

void xe_format_api_error(sbuf *b, const xerr *e)
{
    sbuf_puts(b, "");
    const api_cli_error *d = xe_error_doc_lookup(e->code);
    if (!d) {
        sbuf_printf(b, "Error code: %s\n", e->code);
        sbuf_puts(b, "Error parameters: ");
        for (size_t i = 0; i < e->nparams; i++)
            sbuf_printf(b, "%s%s", i ? ", " : "", e->params[i]);
        sbuf_putc(b, '\n');
        return;
    }
    sbuf_printf(b, "%s\n", d->doc);
    size_t i = 0;
    for (const char *const *p = d->params; p && *p; p++, i++)
        sbuf_printf(b, "%s: %s\n", *p, i < e->nparams ? e->params[i] : "<unknown>");
    for (; i < e->nparams; i++)
        sbuf_printf(b, "<extra>: %s\n", e->params[i]);
}
