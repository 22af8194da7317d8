/* event.from / register / next / inject over the store's generations. */
#define _GNU_SOURCE
#include "xapid.h"
#include "log.h"
#include "mem.h"
#include "util.h"

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sub {
    bool cls[64];       /* by class id */
    char *only_ref[64]; /* "class/ref" subscriptions: one ref per class (last wins) */
    bool any;
};

static void sub_clear(struct sub *s)
{
    for (size_t i = 0; i < 64; i++)
        free(s->only_ref[i]);
    memset(s, 0, sizeof(*s));
}

static bool valid_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return false;
    return true;
}

/* Unknown class names that look like class names are ignored: clients subscribe to every
 * class XAPI has, and the ones we do not implement simply have no objects. */
static xerr *parse_subs(const xv *classes, struct sub *s)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < xv_array_len(classes); i++) {
        const char *c = xv_str(xv_array_get(classes, i));
        if (strcmp(c, "*") == 0) {
            for (size_t k = 0; k < api_nclasses && k < 64; k++)
                s->cls[k] = api_classes[k].events;
            s->any = true;
            continue;
        }
        AUTOFREE char *name = xstrdup(c);
        char *slash = strchr(name, '/');
        if (slash)
            *slash++ = '\0';
        if (!valid_name(name) || (slash && strncmp(slash, "OpaqueRef:", 10) != 0)) {
            sub_clear(s);
            return xerr_new("EVENT_SUBSCRIPTION_PARSE_FAILURE", c);
        }
        const api_class *k = api_class_by_name_ci(name);
        if (!k || !k->events || k->id >= 64)
            continue;
        s->cls[k->id] = true;
        s->any = true;
        if (slash) {
            free(s->only_ref[k->id]);
            s->only_ref[k->id] = xstrdup(slash);
        }
    }
    return NULL;
}

static bool parse_token(const char *tok, int64_t *ret)
{
    if (!*tok) {
        *ret = -1;
        return true;
    }
    char *end;
    long long a = strtoll(tok, &end, 10);
    if (end == tok || a < 0)
        return false;
    if (*end == ',') {
        const char *b = end + 1;
        strtoll(b, &end, 10);
        if (end == b)
            return false;
    }
    if (*end)
        return false;
    *ret = a;
    return true;
}

static char *make_token(int64_t gen)
{
    return xasprintf("%020" PRId64 ",%020d", gen, 0);
}

struct collect_ud {
    struct sub *s;
    int64_t since;
    xv *events;
    xv *counts;
    int64_t gen;
};

static xerr *collect(store_txn *t, void *ud)
{
    struct collect_ud *c = ud;
    c->gen = st_txn_gen(t);
    for (size_t k = 0; k < api_nclasses && k < 64; k++) {
        if (!c->s->cls[k])
            continue;
        const api_class *cl = &api_classes[k];
        xerr *e = st_changes(t, cl, c->since, c->s->only_ref[k], c->events);
        if (e)
            return e;
        if (c->counts) {
            xv *n = xv_new_int(st_count(t, cl));
            n->flags |= XV_F_I4;
            xv_struct_set(c->counts, cl->lname, n);
        }
    }
    return NULL;
}

xerr *api_event_from(api_ctx *ctx, const xv *p_classes, const char *p_token, double p_timeout,
                     xv **ret)
{
    xapid *x = ctx->x;
    int64_t since;
    if (!parse_token(p_token, &since))
        return xerr_new("EVENT_FROM_TOKEN_PARSE_FAILURE", p_token);
    struct sub s;
    xerr *e = parse_subs(p_classes, &s);
    if (e)
        return e;
    double timeout = p_timeout;
    if (timeout > (double)x->cfg.event_timeout_max)
        timeout = (double)x->cfg.event_timeout_max;
    double deadline = now_monotonic() + (timeout > 0 ? timeout : 0);
    struct collect_ud c;
    for (;;) {
        c = (struct collect_ud){&s, since, xv_new_array(), xv_new_struct(), 0};
        e = store_read(x->st, collect, &c);
        if (e) {
            xv_free(c.events);
            xv_free(c.counts);
            sub_clear(&s);
            return e;
        }
        double left = deadline - now_monotonic();
        if (xv_array_len(c.events) || since < 0 || left <= 0 || atomic_load(&x->stopping) || !s.any)
            break;
        xv_free(c.events);
        xv_free(c.counts);
        /* nothing yet: wait for the next commit (any class), then look again from the
         * same token, so a change in a class not subscribed to just loops */
        store_wait(x->st, c.gen, left);
    }
    sub_clear(&s);
    xv *out = xv_new_struct();
    xv_struct_set(out, "events", c.events);
    xv_struct_set(out, "valid_ref_counts", c.counts);
    xv_struct_set(out, "token", xv_new_string_take(make_token(c.gen)));
    *ret = out;
    return NULL;
}

xerr *api_event_get_current_id(api_ctx *ctx, xv **ret)
{
    *ret = xv_new_int(store_gen(ctx->x->st));
    return NULL;
}

struct inject_ud {
    const api_class *c;
    const char *ref;
    int64_t gen;
};

static xerr *inject_txn(store_txn *t, void *ud)
{
    struct inject_ud *i = ud;
    i->gen = st_txn_gen(t);
    return st_touch(t, i->c, i->ref);
}

xerr *api_event_inject(api_ctx *ctx, const char *p_class, const char *p_ref, xv **ret)
{
    const api_class *c = api_class_by_name_ci(p_class);
    if (!c || !c->table)
        return xerr_new("VALUE_NOT_SUPPORTED", "class", p_class, "Unknown class");
    struct inject_ud i = {c, p_ref, 0};
    xerr *e = store_write(ctx->x->st, inject_txn, &i);
    if (e)
        return e;
    *ret = xv_new_string_take(make_token(i.gen));
    return NULL;
}

/* ---- legacy register/next: per-session subscriptions ---- */

struct reg {
    struct reg *next;
    char *session;
    xv *classes; /* array of subscription strings */
    int64_t last;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct reg *regs;
static size_t nregs;

static struct reg *reg_find(const char *session)
{
    for (struct reg *r = regs; r; r = r->next)
        if (strcmp(r->session, session) == 0)
            return r;
    return NULL;
}

/* Drops registrations of sessions that no longer exist (bounded memory). */
static void reg_gc(xapid *x)
{
    for (struct reg **p = &regs; *p;) {
        api_ctx tmp = {0};
        xerr *e = sessions_check(x, (*p)->session, &tmp);
        free(tmp.session);
        free(tmp.user);
        if (e) {
            xerr_free(e);
            struct reg *r = *p;
            *p = r->next;
            free(r->session);
            xv_free(r->classes);
            free(r);
            nregs--;
        } else
            p = &(*p)->next;
    }
}

xerr *api_event_register(api_ctx *ctx, const xv *p_classes)
{
    struct sub s;
    xerr *e = parse_subs(p_classes, &s);
    sub_clear(&s);
    if (e)
        return e;
    pthread_mutex_lock(&reg_lock);
    if (nregs > 1000)
        reg_gc(ctx->x);
    struct reg *r = reg_find(ctx->session);
    if (!r) {
        r = xcalloc(1, sizeof(*r));
        r->session = xstrdup(ctx->session);
        r->classes = xv_new_array();
        r->last = store_gen(ctx->x->st);
        r->next = regs;
        regs = r;
        nregs++;
    }
    for (size_t i = 0; i < xv_array_len(p_classes); i++) {
        bool have = false;
        for (size_t k = 0; k < xv_array_len(r->classes); k++)
            have |= strcasecmp(xv_str(xv_array_get(r->classes, k)),
                               xv_str(xv_array_get(p_classes, i))) == 0;
        if (!have)
            xv_array_append(r->classes, xv_copy(xv_array_get(p_classes, i)));
    }
    pthread_mutex_unlock(&reg_lock);
    return NULL;
}

xerr *api_event_unregister(api_ctx *ctx, const xv *p_classes)
{
    pthread_mutex_lock(&reg_lock);
    struct reg *r = reg_find(ctx->session);
    if (r) {
        xv *keep = xv_new_array();
        for (size_t k = 0; k < xv_array_len(r->classes); k++) {
            bool drop = false;
            for (size_t i = 0; i < xv_array_len(p_classes); i++)
                drop |= strcasecmp(xv_str(xv_array_get(r->classes, k)),
                                   xv_str(xv_array_get(p_classes, i))) == 0;
            if (!drop)
                xv_array_append(keep, xv_copy(xv_array_get(r->classes, k)));
        }
        xv_free(r->classes);
        r->classes = keep;
    }
    pthread_mutex_unlock(&reg_lock);
    return NULL;
}

xerr *api_event_next(api_ctx *ctx, xv **ret)
{
    xapid *x = ctx->x;
    pthread_mutex_lock(&reg_lock);
    struct reg *r = reg_find(ctx->session);
    AUTO(xv) *classes = r ? xv_copy(r->classes) : NULL;
    int64_t since = r ? r->last : 0;
    pthread_mutex_unlock(&reg_lock);
    if (!classes)
        return xerr_new("SESSION_NOT_REGISTERED", ctx->session);
    struct sub s;
    xerr *e = parse_subs(classes, &s);
    if (e)
        return e;
    double deadline = now_monotonic() + (double)x->cfg.event_timeout_max;
    struct collect_ud c;
    for (;;) {
        c = (struct collect_ud){&s, since, xv_new_array(), NULL, 0};
        e = store_read(x->st, collect, &c);
        if (e) {
            xv_free(c.events);
            sub_clear(&s);
            return e;
        }
        double left = deadline - now_monotonic();
        if (xv_array_len(c.events) || left <= 0 || atomic_load(&x->stopping))
            break;
        xv_free(c.events);
        store_wait(x->st, c.gen, left);
    }
    sub_clear(&s);
    pthread_mutex_lock(&reg_lock);
    r = reg_find(ctx->session);
    if (r && r->last < c.gen)
        r->last = c.gen;
    pthread_mutex_unlock(&reg_lock);
    *ret = c.events;
    return NULL;
}
