/* One call's path: method lookup -> session -> RBAC -> arity and types -> handler (or a
 * task for Async.*), shared by both protocols. */
#define _GNU_SOURCE
#include "xapid.h"
#include "log.h"
#include "mem.h"
#include "sbuf.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static xv *list_methods;
static pthread_once_t list_once = PTHREAD_ONCE_INIT;

static void build_list(void)
{
    list_methods = xv_new_array();
    xv_array_append(list_methods, xv_new_string("system.listMethods"));
    xv_array_append(list_methods, xv_new_string("system.isAlive"));
    for (size_t i = 0; i < api_nmessages; i++)
        xv_array_append(list_methods, xv_new_string(api_messages[i].wire));
    for (size_t i = 0; i < api_nmessages; i++)
        if (api_messages[i].async) {
            AUTOFREE char *n = xasprintf("Async.%s", api_messages[i].wire);
            xv_array_append(list_methods, xv_new_string(n));
        }
}

/* "Class_message" is accepted for "Class.message"; class names contain underscores, so
 * try every class prefix. Returns NULL when nothing matches. */
static const api_message *lookup_underscore(const char *name)
{
    for (size_t i = 0; i < api_nclasses; i++) {
        size_t n = strlen(api_classes[i].name);
        if (strncmp(name, api_classes[i].name, n) == 0 && name[n] == '_') {
            AUTOFREE char *dotted = xasprintf("%s.%s", api_classes[i].name, name + n + 1);
            const api_message *m = api_message_lookup(dotted);
            if (m)
                return m;
        }
    }
    return NULL;
}

static xerr *rbac_denied(const api_message *m)
{
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, "No permission in user session. (Roles with this permission: ");
    for (size_t r = api_nroles; r-- > (size_t)m->min_role;) {
        sbuf_puts(&b, api_roles[r]);
        if (r > (size_t)m->min_role)
            sbuf_puts(&b, ", ");
    }
    sbuf_puts(&b, ")");
    AUTOFREE char *msg = sbuf_steal(&b, NULL);
    return xerr_new("RBAC_PERMISSION_DENIED", m->perm, msg);
}

static void ctx_clear(api_ctx *c)
{
    free(c->session);
    free(c->user);
    free(c->task);
}

xerr *xapid_invoke(api_ctx *ctx, const api_message *m, const xv *const *args, xv **ret)
{
    ctx->msg = m;
    xv *out = NULL;
    xerr *e;
    if (m->kind == API_M_CUSTOM)
        e = api_handler_table[m - api_messages](ctx, args, &out);
    else
        e = implicit_call(ctx, m, args, &out);
    if (e) {
        xv_free(out);
        return e;
    }
    *ret = out ? out : xv_new_string("");
    return NULL;
}

xv *xapid_dispatch(xapid *x, const char *method, const xv *params, bool local, xerr **ret_err)
{
    size_t np = xv_array_len(params);
    if (strcmp(method, "system.listMethods") == 0) {
        pthread_once(&list_once, build_list);
        return xv_copy(list_methods);
    }
    if (strncmp(method, "system.isAlive", 14) == 0)
        return np ? xv_copy(xv_array_get(params, 0)) : xv_new_string("");

    bool async = false;
    const char *name = method;
    if (strncmp(name, "Async.", 6) == 0) {
        async = true;
        name += 6;
    }
    const api_message *m = api_message_lookup(name);
    if (!m)
        m = lookup_underscore(name);
    if (!m) {
        *ret_err = xerr_new("MESSAGE_METHOD_UNKNOWN", method);
        return NULL;
    }
    if (async && !m->async) {
        AUTOFREE char *msg = xasprintf("No async mode for this operation (rpc: %s)", method);
        *ret_err = xerr_new("Fault", msg);
        return NULL;
    }
    api_ctx ctx = {.x = x, .role = (int)api_nroles - 1, .superuser = true, .local = local};
    size_t first = 0;
    if (m->session) {
        if (np == 0) {
            char exp[24], got[8];
            snprintf(exp, sizeof(exp), "%zu", m->nrequired);
            snprintf(got, sizeof(got), "0");
            *ret_err = xerr_new("MESSAGE_PARAMETER_COUNT_MISMATCH", method, exp, got);
            return NULL;
        }
        const char *sref = xv_str(xv_array_get(params, 0));
        xerr *e = sessions_check(x, sref ? sref : "", &ctx);
        if (e) {
            *ret_err = e;
            return NULL;
        }
        if (!ctx.superuser && ctx.role < m->min_role) {
            ctx_clear(&ctx);
            *ret_err = rbac_denied(m);
            return NULL;
        }
        first = 1;
    }
    size_t given = np - first;
    if (given < m->nrequired || given > m->nparams) {
        char exp[24], got[24];
        snprintf(exp, sizeof(exp), "%zu", m->nrequired);
        snprintf(got, sizeof(got), "%zu", given);
        ctx_clear(&ctx);
        *ret_err = xerr_new("MESSAGE_PARAMETER_COUNT_MISMATCH", method, exp, got);
        return NULL;
    }
    xv **args = xcalloc(m->nparams + 1, sizeof(xv *));
    xerr *e = NULL;
    for (size_t i = 0; i < m->nparams && !e; i++) {
        if (i < given)
            args[i] = api_type_check(m->params[i].type, xv_array_get(params, first + i),
                                     m->params[i].name, &e);
        else
            args[i] = api_type_zero(m->params[i].type);
    }
    xv *result = NULL;
    if (!e) {
        if (async) {
            char *task = NULL;
            e = tasks_submit(&ctx, m, args, m->nparams, &task);
            if (!e)
                result = xv_new_string_take(task);
        } else
            e = xapid_invoke(&ctx, m, (const xv *const *)args, &result);
    }
    for (size_t i = 0; i < m->nparams; i++)
        xv_free(args[i]);
    free(args);
    ctx_clear(&ctx);
    if (e) {
        *ret_err = e;
        return NULL;
    }
    return result;
}
