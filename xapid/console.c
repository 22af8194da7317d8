/* GET (Upgrade: nuvem-console) and CONNECT /console: a raw byte stream between an HTTP client
 * and a running VM's serial console (XAPI's /console handler, http/connect_console).
 *
 * A relay copies bytes both ways between the client's socket and the VMM's console socket
 * (xapid_vm_console_fd; the VMM first sends its retained history) until either side ends. An
 * upgraded GET runs its relay on a thread of its own (MHD's upgrade hands the socket over once
 * the 101 is out; over TLS MHD keeps forwarding on the connection's thread, so the handler must
 * return). A CONNECT, as XAPI's xe sends it (HTTP/1.0, expecting 200), is not something MHD
 * can answer (its upgrade responses must be 101 on HTTP/1.1), so on plain HTTP and the Unix
 * socket the handler writes the 200 itself on the connection's socket and relays there, on
 * the connection's own thread (the daemon runs a thread per connection and leaves the socket
 * alone while the handler runs), then closes the connection. Every relay is registered so
 * that stopping a listener ends its streams before MHD_stop_daemon. */
#define _GNU_SOURCE
#include "console.h"

#include "log.h"
#include "mem.h"
#include "rpc.h"
#include "vm.h"
#include "xrec.h"

#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONSOLE_PROTO "nuvem-console"
#define RELAY_BUF     16384

bool console_http_path(const char *url)
{
    return strcmp(url, "/console") == 0;
}

/* ---- relays ------------------------------------------------------------------------------ */

struct relay {
    struct relay *next;
    void *owner;
    int client;    /* the HTTP client's socket (or MHD's socketpair end over TLS) */
    int vm;        /* the VMM's console socket */
    char *pending; /* bytes the client sent after the request head (upgrade extra_in) */
    size_t npending;
    struct MHD_UpgradeResponseHandle *urh; /* upgraded GET; NULL for CONNECT */
    char *vm_ref;
    void **slot; /* the request's slot while the 101 is queued (console_http_completed) */
};

static pthread_mutex_t relays_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t relays_cond = PTHREAD_COND_INITIALIZER;
static struct relay *relays;

static void relay_register(struct relay *r)
{
    pthread_mutex_lock(&relays_lock);
    r->next = relays;
    relays = r;
    pthread_mutex_unlock(&relays_lock);
}

/* Takes a socket out of r for the caller to close: console_http_stop then no longer shuts it
 * down (its number may belong to another connection once closed). */
static int relay_take_fd(int *fd)
{
    pthread_mutex_lock(&relays_lock);
    int f = *fd;
    *fd = -1;
    pthread_mutex_unlock(&relays_lock);
    return f;
}

/* Drops r from the registry and frees it (its sockets are closed by the caller). */
static void relay_unregister(struct relay *r)
{
    pthread_mutex_lock(&relays_lock);
    for (struct relay **p = &relays; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    pthread_cond_broadcast(&relays_cond);
    pthread_mutex_unlock(&relays_lock);
    free(r->pending);
    free(r->vm_ref);
    free(r);
}

void console_http_stop(void *owner)
{
    pthread_mutex_lock(&relays_lock);
    for (struct relay *r = relays; r; r = r->next)
        if (r->owner == owner) {
            shutdown(r->client, SHUT_RDWR);
            shutdown(r->vm, SHUT_RDWR);
        }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    for (;;) {
        bool any = false;
        for (struct relay *r = relays; r && !any; r = r->next)
            any = r->owner == owner;
        if (!any || pthread_cond_timedwait(&relays_cond, &relays_lock, &until) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&relays_lock);
}

/* Writes all of buf to a (possibly non-blocking) socket; false when the peer is gone. */
static bool write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, 30000) <= 0)
                return false; /* a peer that reads nothing for 30 s is dropped */
            continue;
        }
        return false;
    }
    return true;
}

/* Copies bytes both ways until either side ends or fails. */
static void relay_run(struct relay *r)
{
    if (r->npending && !write_all(r->vm, r->pending, r->npending))
        return;
    char *buf = xmalloc(RELAY_BUF);
    struct pollfd p[2] = {{.fd = r->client, .events = POLLIN}, {.fd = r->vm, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        bool done = false;
        for (int i = 0; i < 2 && !done; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = recv(p[i].fd, buf, RELAY_BUF, MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                continue;
            if (n <= 0 || !write_all(p[1 - i].fd, buf, (size_t)n))
                done = true;
        }
        if (done)
            break;
    }
    free(buf);
    log_debug("console of VM %s: stream ended", r->vm_ref ? r->vm_ref : "?");
}

/* Keystrokes and echoes are small writes: no Nagle delay (MHD leaves the upgraded TCP socket
 * with it; a socketpair under TLS just refuses the options). */
static void interactive(int fd)
{
    int one = 1, zero = 0;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero));
}

static void *relay_thread(void *arg)
{
    struct relay *r = arg;
    relay_run(r);
    close(relay_take_fd(&r->vm));
    /* CLOSE hands the socket back to MHD, which closes it */
    relay_take_fd(&r->client);
    MHD_upgrade_action(r->urh, MHD_UPGRADE_ACTION_CLOSE);
    relay_unregister(r);
    return NULL;
}

static void on_upgrade(void *cls, struct MHD_Connection *c, void *req_cls, const char *extra_in,
                       size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    (void)c;
    (void)req_cls;
    struct relay *r = cls;
    *r->slot = NULL; /* the relay owns r from here */
    r->slot = NULL;
    r->client = sock;
    r->urh = urh;
    interactive(sock);
    if (extra_in_size) {
        r->pending = xmalloc(extra_in_size);
        memcpy(r->pending, extra_in, extra_in_size);
        r->npending = extra_in_size;
    }
    relay_register(r);
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, relay_thread, r) != 0) {
        log_warn("console: cannot start a relay thread");
        close(relay_take_fd(&r->vm));
        relay_take_fd(&r->client);
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        relay_unregister(r);
    }
    pthread_attr_destroy(&a);
}

/* ---- responses --------------------------------------------------------------------------- */

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *ctype,
                               char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "Cache-Control", "no-cache, no-store");
    MHD_add_response_header(r, "Connection", "close");
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Basic realm=\"xapi\"");
    if (status == 426)
        MHD_add_response_header(r, "Upgrade", CONSOLE_PROTO);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result respond_html(struct MHD_Connection *c, unsigned status, const char *what)
{
    return respond(c, status, "text/html",
                   xasprintf("<html><body><h1>HTTP %u</h1>%s</body></html>", status, what));
}

/* A XenAPI failure as the body (XML-RPC methodResponse, as the RPC endpoint sends it). */
static enum MHD_Result respond_xerr(struct MHD_Connection *c, unsigned status, const xerr *e)
{
    size_t len = 0;
    return respond(c, status, "text/xml", rpc_xml_encode_failure(e, &len));
}

/* ---- auth -------------------------------------------------------------------------------- */

/* 0, or the status to refuse with. A Basic-auth session only lives for the check. */
static unsigned authenticate(xapid *x, struct MHD_Connection *c, bool local)
{
    if (local)
        return 0;
    char *temp = NULL;
    unsigned st = http_authenticate(x, c, "vm-operator", &temp);
    if (temp) {
        xerr_free(sessions_logout(x, temp));
        free(temp);
    }
    return st;
}

/* ---- lookup ------------------------------------------------------------------------------ */

struct lookup {
    const char *uuid, *ref;
    char *ret; /* the console's ref */
};

static xerr *lookup_txn(store_txn *t, void *ud)
{
    struct lookup *l = ud;
    if (l->uuid)
        return st_ref_by_uuid(t, XCLS(console), l->uuid, &l->ret);
    if (!st_exists(t, XCLS(console), l->ref))
        return xerr_new("HANDLE_INVALID", "console", l->ref);
    l->ret = xstrdup(l->ref);
    return NULL;
}

/* The 503 for a console whose VM does not run: VM_BAD_POWER_STATE as the API raises it. */
static enum MHD_Result not_running(xapid *x, struct MHD_Connection *c, const char *con)
{
    AUTO(xv) *crec = NULL, *vm = NULL;
    xerr *e = store_get_record(x->st, XCLS(console), con, &crec);
    if (!e)
        e = store_get_record(x->st, XCLS(VM), xrec_str(crec, "VM"), &vm);
    xerr_free(e);
    const char *ps = xrec_str(vm, "power_state");
    AUTOFREE char *lower = xstrdup(*ps ? ps : "Halted");
    for (char *p = lower; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    AUTO(xerr) *be = xerr_new("VM_BAD_POWER_STATE", xrec_str(crec, "VM"), "running", lower);
    return respond_xerr(c, 503, be);
}

/* ---- entry ------------------------------------------------------------------------------- */

static bool has_token(const char *list, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = list; p && *p;) {
        p += strspn(p, " \t,");
        size_t len = strcspn(p, ",");
        size_t l = len;
        while (l && (p[l - 1] == ' ' || p[l - 1] == '\t'))
            l--;
        if (l == n && strncasecmp(p, tok, n) == 0)
            return true;
        p += len;
    }
    return false;
}

void console_http_completed(void *slot_value)
{
    struct relay *r = slot_value;
    if (!r)
        return;
    close(r->vm);
    free(r->vm_ref);
    free(r);
}

int console_http_handle(xapid *x, struct MHD_Connection *c, const char *method, const char *version,
                        void *owner, bool tls, bool local, void **slot)
{
    bool connect = strcmp(method, "CONNECT") == 0;
    if (!connect && strcmp(method, "GET") != 0)
        return respond_html(c, 405, "Method not allowed");
    unsigned st = authenticate(x, c, local);
    if (st)
        return respond_html(c, st, st == 401 ? "Authentication required" : "Permission denied");
    struct lookup l = {
        .uuid = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "uuid"),
        .ref = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "ref"),
    };
    if (!l.uuid && !l.ref)
        return respond_html(c, 404, "No such console (uuid= or ref= required)");
    xerr *e = store_read(x->st, lookup_txn, &l);
    if (e) {
        xerr_free(e);
        return respond_html(c, 404, "No such console");
    }
    AUTOFREE char *con = l.ret;
    bool upgrade = false;
    if (!connect) {
        const char *conn_h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Connection");
        const char *up_h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Upgrade");
        upgrade = has_token(conn_h, "upgrade") && has_token(up_h, CONSOLE_PROTO);
        if (!upgrade)
            return respond_html(
                c, 426, "GET /console needs Connection: Upgrade and Upgrade: " CONSOLE_PROTO);
        if (!version || strcmp(version, "HTTP/1.1") != 0)
            return respond_html(c, 505, "The console upgrade needs HTTP/1.1");
    } else if (tls) {
        return respond_html(c, 501,
                            "CONNECT is served on plain HTTP and the local socket; over HTTPS use "
                            "GET with Upgrade: " CONSOLE_PROTO);
    }
    char *vm_ref = NULL;
    int vfd = xapid_vm_console_fd(x, con, &vm_ref);
    if (vfd == -ENOENT)
        return respond_html(c, 404, "No such console");
    if (vfd == -ENOTCONN || vfd == -ECONNREFUSED)
        return not_running(x, c, con);
    if (vfd < 0) {
        log_warn("console %s: cannot reach the VMM: %s", con, strerror(-vfd));
        AUTO(xerr) *ie = xerr_new("INTERNAL_ERROR", "the VM's console cannot be reached");
        return respond_xerr(c, 503, ie);
    }
    struct relay *r = xcalloc(1, sizeof(*r));
    r->owner = owner;
    r->vm = vfd;
    r->client = -1;
    r->vm_ref = vm_ref;
    if (upgrade) {
        struct MHD_Response *resp = MHD_create_response_for_upgrade(on_upgrade, r);
        MHD_add_response_header(resp, "Connection", "Upgrade");
        MHD_add_response_header(resp, "Upgrade", CONSOLE_PROTO);
        enum MHD_Result ret = MHD_queue_response(c, 101, resp);
        MHD_destroy_response(resp);
        if (ret == MHD_YES) {
            r->slot = slot;
            *slot = r;
        } else {
            log_warn("console %s: the upgrade was refused by the HTTP layer", con);
            close(vfd);
            free(r->vm_ref);
            free(r);
        }
        return ret;
    }
    /* CONNECT: the 200 and the stream go straight onto the connection's socket */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) {
        close(vfd);
        free(r->vm_ref);
        free(r);
        return MHD_NO;
    }
    r->client = ci->connect_fd;
    interactive(r->client);
    relay_register(r);
    AUTOFREE char *head =
        xasprintf("%s 200 OK\r\nConnection: close\r\n\r\n",
                  version && !strcmp(version, "HTTP/1.0") ? "HTTP/1.0" : "HTTP/1.1");
    if (write_all(r->client, head, strlen(head)))
        relay_run(r);
    close(relay_take_fd(&r->vm));
    relay_take_fd(&r->client); /* MHD closes it */
    relay_unregister(r);
    /* MHD_NO: MHD closes the connection without writing anything more on it */
    return MHD_NO;
}
