/* Sessions: an in-memory table (validated on every call) mirrored into the non-persisted
 * session class so get_record and friends work. Bounded in total and per user. */
#define _GNU_SOURCE
#include "xapid.h"
#include "log.h"
#include "mem.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 4096

struct sess {
    struct sess *next;
    char *ref;
    char *user;
    int role;
    bool superuser;
    double last_active; /* monotonic */
    double created;
};

struct sessions {
    pthread_mutex_t lock;
    struct sess *buckets[NBUCKETS];
    size_t count;
};

static uint64_t h(const char *s)
{
    uint64_t v = 1469598103934665603ULL;
    for (; *s; s++)
        v = (v ^ (unsigned char)*s) * 1099511628211ULL;
    return v % NBUCKETS;
}

int sessions_init(xapid *x)
{
    x->sessions = xcalloc(1, sizeof(*x->sessions));
    pthread_mutex_init(&x->sessions->lock, NULL);
    return 0;
}

static void sess_free(struct sess *s)
{
    free(s->ref);
    free(s->user);
    free(s);
}

void sessions_free(xapid *x)
{
    if (!x->sessions)
        return;
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct sess *s = x->sessions->buckets[i], *n; s; s = n) {
            n = s->next;
            sess_free(s);
        }
    pthread_mutex_destroy(&x->sessions->lock);
    free(x->sessions);
    x->sessions = NULL;
}

size_t sessions_count(xapid *x)
{
    pthread_mutex_lock(&x->sessions->lock);
    size_t n = x->sessions->count;
    pthread_mutex_unlock(&x->sessions->lock);
    return n;
}

xerr *sessions_check(xapid *x, const char *ref, api_ctx *ctx)
{
    struct sessions *ss = x->sessions;
    double now = now_monotonic();
    pthread_mutex_lock(&ss->lock);
    for (struct sess *s = ss->buckets[h(ref)]; s; s = s->next) {
        if (strcmp(s->ref, ref) == 0) {
            if (now - s->last_active > (double)x->cfg.session_idle_timeout)
                break; /* expired; the sweeper removes it */
            s->last_active = now;
            ctx->session = xstrdup(s->ref);
            ctx->user = xstrdup(s->user);
            ctx->role = s->role;
            ctx->superuser = s->superuser;
            pthread_mutex_unlock(&ss->lock);
            return NULL;
        }
    }
    pthread_mutex_unlock(&ss->lock);
    return xerr_new("SESSION_INVALID", ref);
}

static xerr *drop_row(store_txn *t, void *ud)
{
    xerr *e = st_destroy(t, &api_classes[API_CLASS_session], ud);
    if (e && strcmp(e->code, "HANDLE_INVALID") == 0) {
        xerr_free(e);
        return NULL;
    }
    return e;
}

/* Unlinks and returns the session with ref (or the oldest of a user when ref is NULL). */
static struct sess *unlink_locked(struct sessions *ss, const char *ref, const char *user)
{
    struct sess **best = NULL;
    if (ref) {
        for (struct sess **p = &ss->buckets[h(ref)]; *p; p = &(*p)->next)
            if (strcmp((*p)->ref, ref) == 0) {
                best = p;
                break;
            }
    } else {
        for (size_t i = 0; i < NBUCKETS; i++)
            for (struct sess **p = &ss->buckets[i]; *p; p = &(*p)->next)
                if ((!user || strcmp((*p)->user, user) == 0) &&
                    (!best || (*p)->last_active < (*best)->last_active))
                    best = p;
    }
    if (!best)
        return NULL;
    struct sess *s = *best;
    *best = s->next;
    ss->count--;
    return s;
}

struct login_ud {
    xapid *x;
    const char *user;
    bool superuser;
    const char *originator;
    char *ref;
};

static xerr *add_row(store_txn *t, void *ud)
{
    struct login_ud *l = ud;
    const api_class *c = &api_classes[API_CLASS_session];
    AUTO(xv) *rec = xv_new_struct();
    xv_struct_set(rec, "this_host", xv_new_string(l->x->host_ref));
    xv_struct_set(rec, "last_active", xv_new_datetime_epoch(now_epoch()));
    xv_struct_set(rec, "validation_time", xv_new_datetime_epoch(now_epoch()));
    xv_struct_set(rec, "is_local_superuser", xv_new_bool(l->superuser));
    xv_struct_set(rec, "auth_user_name", xv_new_string(l->user));
    xv_struct_set(rec, "originator", xv_new_string(l->originator));
    return st_create(t, c, l->ref, rec, NULL);
}

static xerr *session_open(xapid *x, const char *user, int role, const char *originator,
                          char **ret_ref);

xerr *sessions_login(xapid *x, const char *user, const char *password, const char *originator,
                     char **ret_ref)
{
    int role = auth_verify(x, user, password);
    if (role < 0) {
        log_info("login failed for user '%s'", user);
        return xerr_new("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure");
    }
    return session_open(x, user, role, originator, ret_ref);
}

xerr *sessions_login_local(xapid *x, const char *originator, char **ret_ref)
{
    return session_open(x, "root", (int)api_nroles - 1, originator, ret_ref);
}

static xerr *session_open(xapid *x, const char *user, int role, const char *originator,
                          char **ret_ref)
{
    struct sessions *ss = x->sessions;
    struct sess *s = xcalloc(1, sizeof(*s));
    s->ref = ref_new();
    s->user = xstrdup(user);
    s->role = role;
    s->superuser = strcmp(user, "root") == 0;
    s->created = s->last_active = now_monotonic();

    /* over a limit: the least recently used session of that user (or of anyone) goes */
    struct sess *evict[2] = {NULL, NULL};
    pthread_mutex_lock(&ss->lock);
    size_t mine = 0;
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct sess *p = ss->buckets[i]; p; p = p->next)
            mine += strcmp(p->user, user) == 0;
    if (mine >= (size_t)x->cfg.max_sessions_per_user)
        evict[0] = unlink_locked(ss, NULL, user);
    if (ss->count >= (size_t)x->cfg.max_sessions)
        evict[1] = unlink_locked(ss, NULL, NULL);
    size_t b = h(s->ref);
    s->next = ss->buckets[b];
    ss->buckets[b] = s;
    ss->count++;
    pthread_mutex_unlock(&ss->lock);

    for (size_t i = 0; i < 2; i++)
        if (evict[i]) {
            xerr_free(store_write(x->st, drop_row, evict[i]->ref));
            sess_free(evict[i]);
        }
    struct login_ud l = {x, user, s->superuser, originator ? originator : "", s->ref};
    xerr *e = store_write(x->st, add_row, &l);
    if (e) {
        sessions_logout(x, l.ref);
        return e;
    }
    *ret_ref = xstrdup(l.ref);
    return NULL;
}

xerr *sessions_logout(xapid *x, const char *ref)
{
    struct sessions *ss = x->sessions;
    pthread_mutex_lock(&ss->lock);
    struct sess *s = unlink_locked(ss, ref, NULL);
    pthread_mutex_unlock(&ss->lock);
    if (!s)
        return NULL;
    xerr *e = store_write(x->st, drop_row, s->ref);
    sess_free(s);
    return e;
}

void sessions_expire(xapid *x)
{
    struct sessions *ss = x->sessions;
    double now = now_monotonic();
    for (;;) {
        struct sess *gone = NULL;
        pthread_mutex_lock(&ss->lock);
        for (size_t i = 0; i < NBUCKETS && !gone; i++)
            for (struct sess *p = ss->buckets[i]; p; p = p->next)
                if (now - p->last_active > (double)x->cfg.session_idle_timeout) {
                    gone = unlink_locked(ss, p->ref, NULL);
                    break;
                }
        pthread_mutex_unlock(&ss->lock);
        if (!gone)
            return;
        log_info("session of %s expired", gone->user);
        xerr_free(store_write(x->st, drop_row, gone->ref));
        sess_free(gone);
    }
}

/* ---- session.* messages ---- */

xerr *api_session_login_with_password(api_ctx *ctx, const char *p_uname, const char *p_pwd,
                                      const char *p_version, const char *p_originator, xv **ret)
{
    char *ref = NULL;
    xerr *e = ctx->local ? sessions_login_local(ctx->x, p_originator, &ref)
                         : sessions_login(ctx->x, p_uname, p_pwd, p_originator, &ref);
    if (e)
        return e;
    *ret = xv_new_string_take(ref);
    return NULL;
}

xerr *api_session_logout(api_ctx *ctx)
{
    return sessions_logout(ctx->x, ctx->session);
}

xerr *api_session_local_logout(api_ctx *ctx)
{
    return sessions_logout(ctx->x, ctx->session);
}

xerr *api_session_change_password(api_ctx *ctx, const char *p_old_pwd, const char *p_new_pwd)
{
    if (auth_verify(ctx->x, ctx->user, p_old_pwd) < 0)
        return xerr_new("CHANGE_PASSWORD_REJECTED", "The old password is wrong");
    if (strlen(p_new_pwd) == 0)
        return xerr_new("CHANGE_PASSWORD_REJECTED", "The new password is empty");
    if (auth_set_password(ctx->x, ctx->user, p_new_pwd, NULL) < 0)
        return xerr_internal("cannot store the new password");
    log_info("password of %s changed", ctx->user);
    return NULL;
}
