/* The task engine: Async.* calls become task records and run on a small worker pool.
 *
 * A job is queued with a copy of its checked arguments and of the caller's identity.
 * Cancelling a queued job removes it and marks the task cancelled; cancelling a running
 * job sets a flag that long handlers poll (ctx->cancel) and marks the task "cancelling".
 * The result is stored XML-RPC encoded, as XAPI does, whatever protocol the caller used. */
#define _GNU_SOURCE
#include "xapid.h"
#include "log.h"
#include "mem.h"
#include "rpc.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct job {
    struct job *next;
    char *task;
    const api_message *m;
    xv **args;
    size_t nargs;
    char *session, *user;
    int role;
    bool superuser;
    atomic_bool cancel;
    bool running;
};

struct tasks {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *head, *tail;
    struct job **running; /* one slot per worker */
    size_t queued;
    pthread_t *threads;
    size_t nthreads;
    bool stop;
};

static const api_class *task_class(void)
{
    return &api_classes[API_CLASS_task];
}

static void job_free(struct job *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->nargs; i++)
        xv_free(j->args[i]);
    free(j->args);
    free(j->task);
    free(j->session);
    free(j->user);
    free(j);
}

struct finish_ud {
    const char *task;
    const char *status;
    xv *result; /* borrowed */
    xerr *err;  /* borrowed */
};

static xerr *set(store_txn *t, const char *ref, int field, xv *v)
{
    xerr *e = st_set_field(t, task_class(), ref, field, v);
    xv_free(v);
    return e;
}

static xerr *finish_txn(store_txn *t, void *ud)
{
    struct finish_ud *f = ud;
    xerr *e;
    if (!st_exists(t, task_class(), f->task))
        return NULL; /* destroyed meanwhile */
    if ((e = set(t, f->task, API_F_task_status, xv_new_string(f->status))))
        return e;
    if ((e = set(t, f->task, API_F_task_finished, xv_new_datetime_epoch(now_epoch()))))
        return e;
    if ((e = set(t, f->task, API_F_task_progress, xv_new_float(1.0))))
        return e;
    if ((e = set(t, f->task, API_F_task_allowed_operations, xv_new_array())))
        return e;
    if (f->result) {
        char *enc = rpc_xml_encode_value(f->result);
        if ((e = set(t, f->task, API_F_task_result, xv_new_string_take(enc))))
            return e;
    }
    if (f->err && (e = set(t, f->task, API_F_task_error_info, xerr_to_xv(f->err))))
        return e;
    return NULL;
}

static void finish(xapid *x, const char *task, xv *result, xerr *err)
{
    const char *status = !err                                       ? "success"
                         : strcmp(err->code, "TASK_CANCELLED") == 0 ? "cancelled"
                                                                    : "failure";
    struct finish_ud f = {task, status, result, err};
    xerr *e = store_write(x->st, finish_txn, &f);
    if (e) {
        log_err("cannot record the end of task %s: %s", task, e->code);
        xerr_free(e);
    }
}

static void *worker(void *arg)
{
    xapid *x = arg;
    struct tasks *ts = x->tasks;
    size_t slot = (size_t)-1;
    pthread_mutex_lock(&ts->lock);
    for (size_t i = 0; i < ts->nthreads; i++)
        if (ts->threads[i] == pthread_self())
            slot = i;
    for (;;) {
        while (!ts->stop && !ts->head)
            pthread_cond_wait(&ts->cond, &ts->lock);
        if (ts->stop)
            break;
        struct job *j = ts->head;
        ts->head = j->next;
        if (!ts->head)
            ts->tail = NULL;
        ts->queued--;
        j->running = true;
        if (slot != (size_t)-1)
            ts->running[slot] = j;
        pthread_mutex_unlock(&ts->lock);

        api_ctx ctx = {.x = x,
                       .session = j->session,
                       .user = j->user,
                       .role = j->role,
                       .superuser = j->superuser,
                       .task = j->task,
                       .cancel = &j->cancel};
        xv *result = NULL;
        xerr *err = xapid_invoke(&ctx, j->m, (const xv *const *)j->args, &result);
        if (!err && atomic_load(&j->cancel) && j->m->kind == API_M_CUSTOM) {
            /* the handler saw the flag and stopped early only if it says so; a handler
             * that completed keeps its result */
        }
        finish(x, j->task, result, err);
        xv_free(result);
        xerr_free(err);

        pthread_mutex_lock(&ts->lock);
        if (slot != (size_t)-1)
            ts->running[slot] = NULL;
        job_free(j);
    }
    pthread_mutex_unlock(&ts->lock);
    return NULL;
}

int tasks_init(xapid *x)
{
    struct tasks *ts = xcalloc(1, sizeof(*ts));
    pthread_mutex_init(&ts->lock, NULL);
    pthread_cond_init(&ts->cond, NULL);
    ts->nthreads = (size_t)x->cfg.task_workers;
    ts->threads = xcalloc(ts->nthreads, sizeof(pthread_t));
    ts->running = xcalloc(ts->nthreads, sizeof(struct job *));
    x->tasks = ts;
    pthread_mutex_lock(&ts->lock);
    for (size_t i = 0; i < ts->nthreads; i++)
        if (pthread_create(&ts->threads[i], NULL, worker, x) != 0) {
            pthread_mutex_unlock(&ts->lock);
            return -1;
        }
    pthread_mutex_unlock(&ts->lock);
    return 0;
}

void tasks_stop(xapid *x)
{
    struct tasks *ts = x->tasks;
    if (!ts)
        return;
    pthread_mutex_lock(&ts->lock);
    ts->stop = true;
    for (size_t i = 0; i < ts->nthreads; i++)
        if (ts->running[i])
            atomic_store(&ts->running[i]->cancel, true);
    pthread_cond_broadcast(&ts->cond);
    pthread_mutex_unlock(&ts->lock);
    for (size_t i = 0; i < ts->nthreads; i++)
        pthread_join(ts->threads[i], NULL);
    /* queued jobs never ran: their tasks are failed at the next start */
    for (struct job *j = ts->head, *n; j; j = n) {
        n = j->next;
        job_free(j);
    }
    free(ts->threads);
    free(ts->running);
    pthread_cond_destroy(&ts->cond);
    pthread_mutex_destroy(&ts->lock);
    free(ts);
    x->tasks = NULL;
}

struct create_ud {
    xapid *x;
    const char *label, *description;
    bool cancellable;
    char *ref;
};

static xerr *create_txn(store_txn *t, void *ud)
{
    struct create_ud *c = ud;
    AUTO(xv) *rec = xv_new_struct();
    xv_struct_set(rec, "name_label", xv_new_string(c->label));
    xv_struct_set(rec, "name_description", xv_new_string(c->description));
    xv_struct_set(rec, "status", xv_new_string("pending"));
    xv_struct_set(rec, "created", xv_new_datetime_epoch(now_epoch()));
    xv_struct_set(rec, "resident_on", xv_new_string(c->x->host_ref));
    xv_struct_set(rec, "progress", xv_new_float(0));
    xv_struct_set(rec, "type", xv_new_string("<none/>"));
    xv *ops = xv_new_array();
    if (c->cancellable)
        xv_array_append(ops, xv_new_string("cancel"));
    xv_struct_set(rec, "allowed_operations", ops);
    return st_create(t, task_class(), NULL, rec, &c->ref);
}

static xerr *create_task(xapid *x, const char *label, const char *description, bool cancellable,
                         char **ret)
{
    struct create_ud c = {x, label, description, cancellable, NULL};
    xerr *e = store_write(x->st, create_txn, &c);
    if (e)
        return e;
    *ret = c.ref;
    return NULL;
}

xerr *tasks_submit(api_ctx *ctx, const api_message *m, xv **args, size_t nargs, char **ret_task)
{
    xapid *x = ctx->x;
    struct tasks *ts = x->tasks;
    pthread_mutex_lock(&ts->lock);
    bool full = ts->queued >= (size_t)x->cfg.max_pending_tasks;
    pthread_mutex_unlock(&ts->lock);
    if (full)
        return xerr_new("OPERATION_NOT_ALLOWED", "Too many pending tasks; try again later");
    AUTOFREE char *label = xasprintf("Async.%s", m->wire);
    char *ref = NULL;
    xerr *e = create_task(x, label, "", true, &ref);
    if (e)
        return e;
    struct job *j = xcalloc(1, sizeof(*j));
    j->task = ref;
    j->m = m;
    j->nargs = nargs;
    j->args = xcalloc(nargs + 1, sizeof(xv *));
    for (size_t i = 0; i < nargs; i++)
        j->args[i] = xv_copy(args[i]);
    j->session = xstrdup(ctx->session);
    j->user = xstrdup(ctx->user);
    j->role = ctx->role;
    j->superuser = ctx->superuser;
    *ret_task = xstrdup(ref);
    pthread_mutex_lock(&ts->lock);
    if (ts->tail)
        ts->tail->next = j;
    else
        ts->head = j;
    ts->tail = j;
    ts->queued++;
    pthread_cond_signal(&ts->cond);
    pthread_mutex_unlock(&ts->lock);
    return NULL;
}

struct status_ud {
    const char *task;
    xv *status;
};

static xerr *read_status(store_txn *t, void *ud)
{
    struct status_ud *s = ud;
    return st_get_field(t, task_class(), s->task, API_F_task_status, &s->status);
}

static xerr *mark_cancelling(store_txn *t, void *ud)
{
    return set(t, ud, API_F_task_status, xv_new_string("cancelling"));
}

xerr *tasks_cancel(xapid *x, const char *task)
{
    struct status_ud s = {task, NULL};
    xerr *e = store_read(x->st, read_status, &s);
    if (e)
        return e;
    AUTO(xv) *status = s.status;
    if (strcmp(xv_str(status), "pending") != 0)
        return xerr_new("OPERATION_NOT_ALLOWED", "The task has already finished");
    struct tasks *ts = x->tasks;
    struct job *found = NULL;
    bool running = false;
    pthread_mutex_lock(&ts->lock);
    for (struct job **p = &ts->head, *prev = NULL; *p; prev = *p, p = &(*p)->next) {
        if (strcmp((*p)->task, task) == 0) {
            found = *p;
            *p = found->next;
            if (ts->tail == found)
                ts->tail = prev;
            ts->queued--;
            break;
        }
    }
    for (size_t i = 0; !found && i < ts->nthreads; i++)
        if (ts->running[i] && strcmp(ts->running[i]->task, task) == 0) {
            atomic_store(&ts->running[i]->cancel, true);
            running = true;
        }
    pthread_mutex_unlock(&ts->lock);
    if (running)
        return store_write(x->st, mark_cancelling, (void *)task);
    /* queued, or a client-made task nobody runs: it ends here */
    AUTO(xerr) *c = xerr_new("TASK_CANCELLED", task);
    finish(x, task, NULL, c);
    job_free(found);
    return NULL;
}

static xerr *fail_stale_txn(store_txn *t, void *ud)
{
    AUTO(xv) *refs = NULL;
    xerr *e =
        st_get_all(t, task_class(), "\"status\" IN ('pending', 'cancelling')", NULL, 0, &refs);
    if (e)
        return e;
    for (size_t i = 0; i < xv_array_len(refs); i++) {
        const char *ref = xv_str(xv_array_get(refs, i));
        AUTO(xerr) *err = xerr_new("INTERNAL_ERROR", "xapid restarted while the task was pending");
        struct finish_ud f = {ref, "failure", NULL, err};
        if ((e = finish_txn(t, &f)))
            return e;
        log_warn("task %s was left pending by a previous run: failed", ref);
    }
    return NULL;
}

void tasks_fail_stale(xapid *x)
{
    xerr *e = store_write(x->st, fail_stale_txn, NULL);
    if (e) {
        log_err("cannot fail stale tasks: %s", e->code);
        xerr_free(e);
    }
}

struct gc_ud {
    int64_t cutoff;
    int64_t n;
};

static xerr *gc_txn(store_txn *t, void *ud)
{
    struct gc_ud *g = ud;
    char cutoff[20];
    xv_format_datetime(g->cutoff, cutoff);
    AUTO(xv) *c = xv_new_string(cutoff);
    const xv *a[] = {c};
    AUTO(xv) *refs = NULL;
    /* finished times are stored in the sortable wire form */
    xerr *e =
        st_get_all(t, task_class(),
                   "\"status\" NOT IN ('pending', 'cancelling') AND \"finished\" < ?", a, 1, &refs);
    for (size_t i = 0; !e && i < xv_array_len(refs); i++)
        e = st_destroy(t, task_class(), xv_str(xv_array_get(refs, i)));
    g->n = (int64_t)xv_array_len(refs);
    return e;
}

void tasks_gc(xapid *x)
{
    struct gc_ud g = {now_epoch() - x->cfg.task_retention, 0};
    xerr *e = store_write(x->st, gc_txn, &g);
    if (e) {
        log_warn("task GC: %s", e->code);
        xerr_free(e);
    } else if (g.n)
        log_info("destroyed %lld finished task(s)", (long long)g.n);
}

/* ---- task.* messages ---- */

xerr *api_task_create(api_ctx *ctx, const char *p_label, const char *p_description, xv **ret)
{
    char *ref = NULL;
    xerr *e = create_task(ctx->x, p_label, p_description, true, &ref);
    if (e)
        return e;
    *ret = xv_new_string_take(ref);
    return NULL;
}

xerr *api_task_cancel(api_ctx *ctx, const char *p_task)
{
    return tasks_cancel(ctx->x, p_task);
}

xerr *api_task_destroy(api_ctx *ctx, const char *p_self)
{
    return store_destroy(ctx->x->st, task_class(), p_self);
}

/* Sets one field of a task, taking ownership of v. */
static xerr *set_task_field(api_ctx *ctx, const char *ref, int field, xv *v)
{
    xerr *e = store_set_field(ctx->x->st, task_class(), ref, field, v);
    xv_free(v);
    return e;
}

xerr *api_task_set_status(api_ctx *ctx, const char *p_self, const char *p_value)
{
    return set_task_field(ctx, p_self, API_F_task_status, xv_new_string(p_value));
}

xerr *api_task_set_progress(api_ctx *ctx, const char *p_self, double p_value)
{
    if (p_value < 0 || p_value > 1)
        return xerr_new("VALUE_NOT_SUPPORTED", "value", "progress", "must be between 0 and 1");
    return set_task_field(ctx, p_self, API_F_task_progress, xv_new_float(p_value));
}

xerr *api_task_set_result(api_ctx *ctx, const char *p_self, const char *p_value)
{
    return set_task_field(ctx, p_self, API_F_task_result, xv_new_string(p_value));
}

xerr *api_task_set_error_info(api_ctx *ctx, const char *p_self, const xv *p_value)
{
    return set_task_field(ctx, p_self, API_F_task_error_info, xv_copy(p_value));
}
