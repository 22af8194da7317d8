/* XenAPI error values. */
#define _GNU_SOURCE
#include "err.h"
#include "log.h"
#include "mem.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static xerr_check_fn checker;

void xerr_set_checker(xerr_check_fn fn)
{
    checker = fn;
}

static void xerr_check(const xerr *e)
{
    if (checker && checker(e->code, e->nparams) != 0)
        log_warn("error %s raised with %zu params, catalogue disagrees", e->code, e->nparams);
}

xerr *xerr_newv(const char *code, const char *const *params, size_t n)
{
    xerr *e = xcalloc(1, sizeof(*e));
    e->code = xstrdup(code);
    e->params = xcalloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        e->params[i] = xstrdup(params[i] ? params[i] : "");
    e->nparams = n;
    xerr_check(e);
    return e;
}

xerr *xerr_new_(const char *code, ...)
{
    const char *p[32];
    size_t n = 0;
    va_list ap;
    va_start(ap, code);
    const char *s;
    while ((s = va_arg(ap, const char *)) != NULL && n < ARRAY_SIZE(p))
        p[n++] = s;
    va_end(ap);
    return xerr_newv(code, p, n);
}

xerr *xerr_internal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    AUTOFREE char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    return xerr_new("INTERNAL_ERROR", msg);
}

void xerr_free(xerr *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->nparams; i++)
        free(e->params[i]);
    free(e->params);
    free(e->code);
    free(e);
}

xerr *xerr_copy(const xerr *e)
{
    return e ? xerr_newv(e->code, (const char *const *)e->params, e->nparams) : NULL;
}

xv *xerr_to_xv(const xerr *e)
{
    xv *a = xv_new_array();
    xv_array_append(a, xv_new_string(e->code));
    for (size_t i = 0; i < e->nparams; i++)
        xv_array_append(a, xv_new_string(e->params[i]));
    return a;
}

xerr *xerr_from_xv(const xv *v)
{
    size_t n = xv_array_len(v);
    if (n == 0 || !xv_str(xv_array_get(v, 0)))
        return NULL;
    const char **p = xcalloc(n, sizeof(char *));
    for (size_t i = 1; i < n; i++) {
        const char *s = xv_str(xv_array_get(v, i));
        p[i - 1] = s ? s : "";
    }
    xerr *e = xerr_newv(xv_str(xv_array_get(v, 0)), p, n - 1);
    free(p);
    return e;
}
