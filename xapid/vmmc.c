/* nuvem-vmm control-socket client: one reader thread per connection, callers wait on a
 * condition variable for the reply carrying their id. */
#define _GNU_SOURCE
#include "vmmc.h"
#include "log.h"
#include "mem.h"
#include "sbuf.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define VMMC_MAX_LINE    (4u << 20) /* replies such as stats stay far below this */
#define VMMC_MAX_WAITERS 64

struct waiter {
    int64_t id;
    bool done;
    xv *reply; /* the whole reply object */
};

struct vmmc {
    int fd;
    pthread_t reader;
    bool reader_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool closed;
    int64_t next_id;
    struct waiter *waiters[VMMC_MAX_WAITERS];
    vmmc_handlers h;
    pthread_mutex_t write_lock;
};

static void deadline_after(struct timespec *ts, double secs)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    double whole = (double)(int64_t)secs;
    ts->tv_sec += (time_t)whole;
    ts->tv_nsec += (long)((secs - whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Reads one line (without the newline) into *ret; 1 on a line, 0 on EOF, -1 on error. */
static int read_line(int fd, sbuf *buf, size_t *start, char **ret)
{
    for (;;) {
        char *nl = buf->len > *start ? memchr(buf->data + *start, '\n', buf->len - *start) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - (buf->data + *start));
            *ret = xstrndup(buf->data + *start, n);
            *start += n + 1;
            if (*start == buf->len) {
                buf->len = 0;
                *start = 0;
            }
            return 1;
        }
        if (*start > 0) {
            memmove(buf->data, buf->data + *start, buf->len - *start);
            buf->len -= *start;
            *start = 0;
        }
        if (buf->len >= VMMC_MAX_LINE)
            return -1;
        sbuf_reserve(buf, 65536);
        ssize_t r = read(fd, buf->data + buf->len, 65536);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r == 0 ? 0 : -1;
        buf->len += (size_t)r;
    }
}

static void *reader_main(void *arg)
{
    vmmc *c = arg;
    sbuf buf = {0};
    size_t start = 0;
    for (;;) {
        char *line = NULL;
        int r = read_line(c->fd, &buf, &start, &line);
        if (r <= 0)
            break;
        AUTO(xv) *msg = xv_from_json(line, strlen(line));
        free(line);
        if (!msg || msg->kind != XV_STRUCT)
            continue;
        const xv *ev = xv_struct_get(msg, "event");
        if (ev && xv_str(ev)) {
            pthread_mutex_lock(&c->lock);
            vmmc_handlers h = c->h;
            pthread_mutex_unlock(&c->lock);
            if (h.event)
                h.event(h.opaque, xv_str(ev), xv_struct_get(msg, "data"));
            continue;
        }
        const xv *id = xv_struct_get(msg, "id");
        if (!id || id->kind != XV_INT)
            continue;
        pthread_mutex_lock(&c->lock);
        for (int i = 0; i < VMMC_MAX_WAITERS; i++) {
            struct waiter *w = c->waiters[i];
            if (w && w->id == id->u.i && !w->done) {
                w->reply = TAKE_PTR(msg);
                w->done = true;
                pthread_cond_broadcast(&c->cond);
                break;
            }
        }
        pthread_mutex_unlock(&c->lock);
    }
    sbuf_release(&buf);
    pthread_mutex_lock(&c->lock);
    c->closed = true;
    pthread_cond_broadcast(&c->cond);
    vmmc_handlers h = c->h;
    pthread_mutex_unlock(&c->lock);
    if (h.closed)
        h.closed(h.opaque);
    return NULL;
}

int vmmc_connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

/* Reads the greeting line directly (before the reader thread exists), with a timeout. */
static xerr *read_greeting(int fd, double timeout, xv **ret)
{
    sbuf buf = {0};
    double end = now_monotonic() + timeout;
    xerr *e = NULL;
    for (;;) {
        char *nl = buf.len ? memchr(buf.data, '\n', buf.len) : NULL;
        if (nl) {
            AUTO(xv) *g = xv_from_json(buf.data, (size_t)(nl - buf.data));
            const xv *gr = g && g->kind == XV_STRUCT ? xv_struct_get(g, "greeting") : NULL;
            if (!gr || gr->kind != XV_STRUCT)
                e = xerr_internal("nuvem-vmm: unexpected greeting");
            else if (ret)
                *ret = xv_copy(gr);
            break;
        }
        int ms = (int)((end - now_monotonic()) * 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (ms <= 0 || poll(&p, 1, ms) <= 0) {
            e = xerr_internal("nuvem-vmm: no greeting on the control socket");
            break;
        }
        /* one byte at a time: nothing after the greeting may be consumed here */
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r <= 0 || buf.len > 65536) {
            e = xerr_internal("nuvem-vmm: control socket closed before the greeting");
            break;
        }
        sbuf_putc(&buf, ch);
    }
    sbuf_release(&buf);
    return e;
}

xerr *vmmc_connect(const char *path, int pid, double timeout, const vmmc_handlers *h, vmmc **ret,
                   xv **ret_greeting)
{
    double end = now_monotonic() + timeout;
    int fd = -1;
    for (;;) {
        fd = vmmc_connect_unix(path);
        if (fd >= 0)
            break;
        if (fd == -ENAMETOOLONG)
            return xerr_internal("control socket path too long: %s", path);
        if (pid > 0 && kill(pid, 0) < 0 && errno == ESRCH)
            return xerr_internal("nuvem-vmm exited before its control socket appeared");
        if (now_monotonic() >= end)
            return xerr_internal("nuvem-vmm control socket %s: %s", path, strerror(-fd));
        usleep(2000);
    }
    xerr *e =
        read_greeting(fd, end - now_monotonic() > 1 ? end - now_monotonic() : 1, ret_greeting);
    if (e) {
        close(fd);
        return e;
    }
    vmmc *c = xcalloc(1, sizeof(*c));
    c->fd = fd;
    c->next_id = 1;
    if (h)
        c->h = *h;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->write_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&c->reader, NULL, reader_main, c) != 0) {
        vmmc_free(c);
        if (ret_greeting) {
            xv_free(*ret_greeting);
            *ret_greeting = NULL;
        }
        return xerr_internal("cannot start a thread");
    }
    c->reader_started = true;
    *ret = c;
    return NULL;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

xerr *vmmc_call(vmmc *c, const char *cmd, xv *args, double timeout, xv **ret)
{
    struct waiter w = {0};
    pthread_mutex_lock(&c->lock);
    int slot = -1;
    for (int i = 0; i < VMMC_MAX_WAITERS && slot < 0; i++)
        if (!c->waiters[i])
            slot = i;
    if (c->closed || slot < 0) {
        bool closed = c->closed;
        pthread_mutex_unlock(&c->lock);
        xv_free(args);
        return closed ? xerr_internal("nuvem-vmm is gone (%s)", cmd)
                      : xerr_internal("too many calls in flight to nuvem-vmm");
    }
    w.id = c->next_id++;
    c->waiters[slot] = &w;
    pthread_mutex_unlock(&c->lock);

    AUTO(xv) *req = xv_new_struct();
    xv_struct_set(req, "id", xv_new_int(w.id));
    xv_struct_set(req, "execute", xv_new_string(cmd));
    if (args)
        xv_struct_set(req, "arguments", args);
    AUTOFREE char *json = xv_to_json(req);
    AUTOFREE char *line = xasprintf("%s\n", json);
    pthread_mutex_lock(&c->write_lock);
    int wr = write_all(c->fd, line, strlen(line));
    pthread_mutex_unlock(&c->write_lock);

    struct timespec dl;
    deadline_after(&dl, timeout);
    pthread_mutex_lock(&c->lock);
    while (wr == 0 && !w.done && !c->closed)
        if (pthread_cond_timedwait(&c->cond, &c->lock, &dl) == ETIMEDOUT)
            break;
    c->waiters[slot] = NULL;
    bool closed = c->closed;
    pthread_mutex_unlock(&c->lock);

    AUTO(xv) *reply = w.reply;
    if (!reply) {
        if (wr < 0 || closed)
            return xerr_internal("nuvem-vmm is gone (%s)", cmd);
        return xerr_internal("nuvem-vmm did not answer %s within %.0f s", cmd, timeout);
    }
    const xv *err = xv_struct_get(reply, "error");
    if (err && err->kind == XV_ARRAY && xv_array_len(err) > 0) {
        xerr *e = xerr_from_xv(err);
        return e ? e : xerr_internal("nuvem-vmm: malformed error for %s", cmd);
    }
    if (ret) {
        const xv *r = xv_struct_get(reply, "return");
        *ret = r ? xv_copy(r) : xv_new_struct();
    }
    return NULL;
}

bool vmmc_alive(vmmc *c)
{
    pthread_mutex_lock(&c->lock);
    bool alive = !c->closed;
    pthread_mutex_unlock(&c->lock);
    return alive;
}

bool vmmc_wait_closed(vmmc *c, double timeout)
{
    struct timespec dl;
    deadline_after(&dl, timeout);
    pthread_mutex_lock(&c->lock);
    while (!c->closed)
        if (pthread_cond_timedwait(&c->cond, &c->lock, &dl) == ETIMEDOUT)
            break;
    bool closed = c->closed;
    pthread_mutex_unlock(&c->lock);
    return closed;
}

void vmmc_free(vmmc *c)
{
    if (!c)
        return;
    if (c->reader_started) {
        /* The reader must not run the closed handler into an owner that is going away. */
        pthread_mutex_lock(&c->lock);
        c->h.closed = NULL;
        c->h.event = NULL;
        pthread_mutex_unlock(&c->lock);
        shutdown(c->fd, SHUT_RDWR);
        pthread_join(c->reader, NULL);
    }
    close(c->fd);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->write_lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}
