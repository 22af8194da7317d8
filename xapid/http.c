/* The HTTP(S) front: libmicrohttpd with a thread per connection (event.from and
 * event.next block for long), bounded bodies and connections, XAPI's headers. */
#define _GNU_SOURCE
#include "xapid.h"
#include "console.h"
#include "log.h"
#include "mem.h"
#include "rpc.h"
#include "sbuf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <pthread.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Freeing a large result tree (get_all_records of thousands of objects) costs as much as
 * building it; a background thread does it so the response goes out first. */
struct reaper {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    xv **items;
    size_t n, cap;
    int users;
    bool stop;
    pthread_t thread;
};

static struct reaper reaper = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *reaper_main(void *arg)
{
    pthread_mutex_lock(&reaper.lock);
    for (;;) {
        while (!reaper.n && !reaper.stop)
            pthread_cond_wait(&reaper.cond, &reaper.lock);
        if (!reaper.n && reaper.stop)
            break;
        xv *v = reaper.items[--reaper.n];
        pthread_mutex_unlock(&reaper.lock);
        xv_free(v);
        pthread_mutex_lock(&reaper.lock);
    }
    pthread_mutex_unlock(&reaper.lock);
    return NULL;
}

static void reaper_get(void)
{
    pthread_mutex_lock(&reaper.lock);
    if (reaper.users++ == 0) {
        reaper.stop = false;
        if (pthread_create(&reaper.thread, NULL, reaper_main, NULL) != 0)
            reaper.users = -1000000; /* no thread: free inline */
    }
    pthread_mutex_unlock(&reaper.lock);
}

static void reaper_put(void)
{
    pthread_mutex_lock(&reaper.lock);
    bool last = --reaper.users == 0;
    if (last) {
        reaper.stop = true;
        pthread_cond_signal(&reaper.cond);
    }
    pthread_mutex_unlock(&reaper.lock);
    if (last) {
        pthread_join(reaper.thread, NULL);
        free(reaper.items);
        reaper.items = NULL;
        reaper.cap = 0;
    }
}

static void free_later(xv *v)
{
    if (!v)
        return;
    if (xv_array_len(v) < 256 && xv_struct_len(v) < 256) {
        xv_free(v);
        return;
    }
    pthread_mutex_lock(&reaper.lock);
    if (reaper.users <= 0) {
        pthread_mutex_unlock(&reaper.lock);
        xv_free(v);
        return;
    }
    if (reaper.n == reaper.cap) {
        reaper.cap = reaper.cap ? reaper.cap * 2 : 16;
        reaper.items = xrealloc(reaper.items, reaper.cap * sizeof(xv *));
    }
    reaper.items[reaper.n++] = v;
    pthread_cond_signal(&reaper.cond);
    pthread_mutex_unlock(&reaper.lock);
}

/* ---- authentication of plain HTTP requests (VDI import/export, console) ----------------- */

/* Decodes base64 (caller frees, NUL-terminated) or NULL. */
static char *b64decode(const char *s)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s);
    char *out = xmalloc(n + 1);
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        const char *p = s[i] ? strchr(tab, s[i]) : NULL;
        if (!p) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)(p - tab);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    if (strlen(out) != o) {
        free(out);
        return NULL;
    }
    return out;
}

unsigned http_authenticate(xapid *x, struct MHD_Connection *c, const char *min_role,
                           char **ret_temp)
{
    *ret_temp = NULL;
    const char *sid = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "session_id");
    if (!sid)
        sid = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, "session_id");
    if (!sid) {
        const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        if (!a || strncasecmp(a, "Basic ", 6) != 0)
            return 401;
        AUTOFREE char *cred = b64decode(a + 6);
        char *colon = cred ? strchr(cred, ':') : NULL;
        if (!colon)
            return 401;
        *colon = '\0';
        xerr *e = sessions_login(x, cred, colon + 1, "http", ret_temp);
        if (e) {
            xerr_free(e);
            return 401;
        }
        sid = *ret_temp;
    }
    api_ctx ctx = {.x = x};
    xerr *e = sessions_check(x, sid, &ctx);
    unsigned st = 401;
    if (!e) {
        int need = api_role_rank(min_role);
        st = ctx.superuser || need < 0 || ctx.role >= need ? 0 : 403;
    }
    xerr_free(e);
    free(ctx.session);
    free(ctx.user);
    return st;
}

struct http_server {
    struct MHD_Daemon *d;
    xapid *x;
    bool tls;
    bool local; /* the Unix socket listener */
    char *unix_path;
};

struct req {
    sbuf body;
    bool too_big;
    bool started;
    void *vdi_http; /* /import_raw_vdi, /export_raw_vdi (vdi_http.c) */
    void *console;  /* /console (console.c): a stream not yet handed over */
};

static void add_common_headers(struct MHD_Response *r, const char *ctype)
{
    MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    MHD_add_response_header(r, "Access-Control-Allow-Headers", "X-Requested-With");
    MHD_add_response_header(r, "Cache-Control", "no-cache, no-store");
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                             char *body, size_t len, bool close_conn)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    add_common_headers(r, ctype);
    if (close_conn)
        MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, const char *what)
{
    char *body = xasprintf("<html><body><h1>HTTP %u</h1>%s</body></html>", status, what);
    return reply(c, status, "text/html", body, strlen(body), true);
}

char *http_rpc(xapid *x, const char *path, const char *body, size_t len, bool local,
               size_t *ret_len, const char **ret_ctype, int *ret_status)
{
    bool json = strcmp(path, "/jsonrpc") == 0;
    rpc_request req = {0};
    int r = json ? rpc_json_decode_call(body, len, &req) : rpc_xml_decode_call(body, len, &req);
    if (r < 0) {
        *ret_status = 500;
        return NULL;
    }
    xerr *err = NULL;
    xv *result = xapid_dispatch(x, req.method, req.params, local, &err);
    char *out;
    if (json) {
        *ret_ctype = "application/json";
        out = err ? rpc_json_encode_failure(req.proto, req.id, err, ret_len)
                  : rpc_json_encode_success(req.proto, req.id, result, ret_len);
    } else {
        *ret_ctype = "text/xml";
        out = err ? rpc_xml_encode_failure(err, ret_len) : rpc_xml_encode_success(result, ret_len);
    }
    free_later(result);
    xerr_free(err);
    rpc_request_clear(&req);
    *ret_status = 200;
    return out;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct http_server *h = cls;
    xapid *x = h->x;
    struct req *rq = *con_cls;
    if (console_http_path(url)) { /* console.c: answers once the request head is in */
        if (!rq) {
            *con_cls = xcalloc(1, sizeof(*rq));
            return MHD_YES;
        }
        if (*upload_data_size) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        return (enum MHD_Result)console_http_handle(x, conn, method, version, h, h->tls, h->local,
                                                    &rq->console);
    }
    if (vdi_http_path(url)) {
        if (!rq)
            *con_cls = rq = xcalloc(1, sizeof(*rq));
        return (enum MHD_Result)vdi_http_handle(x, conn, url, method, upload_data, upload_data_size,
                                                &rq->vdi_http);
    }
    if (!rq) {
        rq = xcalloc(1, sizeof(*rq));
        *con_cls = rq;
        if (strcmp(method, "POST") == 0) {
            const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
            if (cl && strtoll(cl, NULL, 10) > x->cfg.max_body)
                rq->too_big = true;
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!rq->too_big) {
            if (rq->body.len + *upload_data_size > (size_t)x->cfg.max_body) {
                rq->too_big = true;
                sbuf_release(&rq->body);
            } else
                sbuf_append(&rq->body, upload_data, *upload_data_size);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "OPTIONS") == 0)
        return reply(conn, 200, "text/plain", xstrdup(""), 0, false);
    bool rpc_path =
        strcmp(url, "/") == 0 || strcmp(url, "/RPC2") == 0 || strcmp(url, "/jsonrpc") == 0;
    if (strcmp(method, "GET") == 0 && strcmp(url, "/") == 0) {
        char *b =
            xstrdup("<html><body>Nuvem xapid: XenAPI at / (XML-RPC) and /jsonrpc</body></html>");
        return reply(conn, 200, "text/html", b, strlen(b), false);
    }
    if (!rpc_path)
        return reply_error(conn, 404, "Not found");
    if (strcmp(method, "POST") != 0)
        return reply_error(conn, 405, "Method not allowed");
    if (rq->too_big) {
        log_warn("request body over %lld bytes refused", (long long)x->cfg.max_body);
        return reply_error(conn, 413, "Request body too large");
    }
    if (!MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length"))
        return reply_error(conn, 500, "Content-Length required");
    size_t len = 0;
    const char *ctype = NULL;
    int status = 500;
    char *out = http_rpc(x, url, rq->body.data ? rq->body.data : "", rq->body.len, h->local, &len,
                         &ctype, &status);
    if (!out)
        return reply_error(conn, 500, "Malformed request");
    return reply(conn, (unsigned)status, ctype, out, len, false);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct req *rq = *con_cls;
    if (rq) {
        vdi_http_completed(rq->vdi_http, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
        console_http_completed(rq->console);
        sbuf_release(&rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    buf[strcspn(buf, "\n")] = '\0';
    log_debug("http: %s", buf);
}

struct http_server *http_start(xapid *x, const char *listen, bool tls, const char *cert_pem,
                               const char *key_pem)
{
    AUTOFREE char *host = xstrdup(listen);
    char *colon = strrchr(host, ':');
    if (!colon) {
        log_err("listen address %s: expected ADDR:PORT", listen);
        return NULL;
    }
    *colon = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, *host ? host : "0.0.0.0", &sa.sin_addr) != 1) {
        log_err("listen address %s: not an IPv4 address", listen);
        return NULL;
    }
    struct http_server *h = xcalloc(1, sizeof(*h));
    reaper_get();
    h->x = x;
    h->tls = tls;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_POLL | MHD_ALLOW_UPGRADE;
    if (tls)
        flags |= MHD_USE_TLS;
    if (tls)
        h->d = MHD_start_daemon(
            flags, 0, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT,
            (unsigned)x->cfg.max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
            MHD_OPTION_NOTIFY_COMPLETED, completed, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
            MHD_OPTION_HTTPS_MEM_KEY, key_pem, MHD_OPTION_HTTPS_MEM_CERT, cert_pem, MHD_OPTION_END);
    else
        h->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, &sa,
                                MHD_OPTION_CONNECTION_LIMIT, (unsigned)x->cfg.max_connections,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
                                MHD_OPTION_NOTIFY_COMPLETED, completed, h,
                                MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_END);
    if (!h->d) {
        log_err("cannot listen on %s%s", listen, tls ? " (TLS)" : "");
        reaper_put();
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    unsigned port = info ? info->port : ntohs(sa.sin_port);
    printf("xapid listening on %s://%s:%u/\n", tls ? "https" : "http", *host ? host : "0.0.0.0",
           port);
    fflush(stdout);
    if (!tls && !x->http_address) /* what console locations name */
        x->http_address = xasprintf("%s:%u", *host ? host : "127.0.0.1", port);
    return h;
}

struct http_server *http_start_unix(xapid *x, const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        log_err("unix socket path too long: %s", path);
        return NULL;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    unlink(path);
    mode_t old = umask(0177);
    int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (r < 0 || listen(fd, 128) < 0) {
        log_err("cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    struct http_server *h = xcalloc(1, sizeof(*h));
    reaper_get();
    h->x = x;
    h->local = true;
    h->unix_path = xstrdup(path);
    h->d =
        MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                             MHD_USE_ERROR_LOG | MHD_USE_POLL | MHD_ALLOW_UPGRADE,
                         0, NULL, NULL, handle, h, MHD_OPTION_LISTEN_SOCKET, fd,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)x->cfg.max_connections,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600, MHD_OPTION_NOTIFY_COMPLETED,
                         completed, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_END);
    if (!h->d) {
        log_err("cannot serve on %s", path);
        close(fd);
        reaper_put();
        free(h->unix_path);
        free(h);
        return NULL;
    }
    printf("xapid listening on unix:%s\n", path);
    fflush(stdout);
    return h;
}

void http_stop(struct http_server *h)
{
    if (!h)
        return;
    console_http_stop(h); /* upgraded console streams must end before the daemon goes */
    MHD_stop_daemon(h->d);
    if (h->unix_path) {
        unlink(h->unix_path);
        free(h->unix_path);
    }
    reaper_put();
    free(h);
}
