/* xe's connection: one libcurl handle (keep-alive) speaking XML-RPC (or JSON-RPC) to xapid,
 * TLS checked against a CA file or a pinned certificate fingerprint. */
#define _GNU_SOURCE
#include "xe.h"

#include "mem.h"
#include "rpc.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

struct xe_conn {
    CURL *curl;
    struct curl_slist *hdrs;
    char *url;
    char *server;
    char *session;
    bool json;
    bool debug;
    bool pinned;
    unsigned char pin[32];
    bool pin_mismatch;
    int64_t next_id;
    char errbuf[CURL_ERROR_SIZE];
    char *error;
    /* transport, kept for the raw streams (xe_stream_open) */
    char *unix_path;
    bool tls;
    bool insecure;
    char *cafile;
};

static int pin_ex_index = -1;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    sbuf *b = ud;
    sbuf_append(b, p, size * n);
    return size * n;
}

/* OpenSSL verify callback for a pinned certificate: the leaf's SHA-256 must match; the
 * chain is not consulted (a self-signed xapid certificate is the common case). */
static int pin_verify(int preverify, X509_STORE_CTX *x)
{
    (void)preverify;
    if (X509_STORE_CTX_get_error_depth(x) != 0)
        return 1;
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    xe_conn *c = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), pin_ex_index) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(x);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!c || !cert || !X509_digest(cert, EVP_sha256(), md, &len) || len != 32 ||
        memcmp(md, c->pin, 32) != 0) {
        if (c)
            c->pin_mismatch = true;
        return 0;
    }
    X509_STORE_CTX_set_error(x, X509_V_OK);
    return 1;
}

static CURLcode ssl_ctx_setup(CURL *curl, void *sslctx, void *ud)
{
    (void)curl;
    SSL_CTX *ctx = sslctx;
    if (pin_ex_index < 0)
        pin_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    SSL_CTX_set_ex_data(ctx, pin_ex_index, ud);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, pin_verify);
    return CURLE_OK;
}

/* URL, Unix socket and TLS checks of a handle (the RPC one and the raw streams'). */
static void setup_transport(xe_conn *c, CURL *h)
{
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    if (c->unix_path)
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);
    if (!c->tls)
        return;
    if (c->pinned) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_setup);
        curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, c);
    } else if (c->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (c->cafile) {
        curl_easy_setopt(h, CURLOPT_CAINFO, c->cafile);
        curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
    }
}

static bool is_localhost(const char *s)
{
    return strcmp(s, "127.0.0.1") == 0;
}

xe_conn *xe_conn_new(const xe_opts *o)
{
    xe_conn *c = xcalloc(1, sizeof(*c));
    c->server = xstrdup(o->server);
    c->json = o->jsonrpc;
    c->debug = o->debug;
    c->next_id = 1;
    /* As XCP: TLS unless --nossl, never on 127.0.0.1 -- except that asking for a
     * certificate check (our addition) forces TLS there too. */
    bool explicit_tls = o->insecure || o->cafile || o->fingerprint;
    /* -s unix:PATH (or an absolute path): xapid's local socket, pre-authenticated like
     * XAPI's /var/lib/xcp/xapi; plain HTTP over it */
    const char *unix_path = strncmp(o->server, "unix:", 5) == 0 ? o->server + 5
                            : o->server[0] == '/'               ? o->server
                                                                : NULL;
    bool tls = !unix_path && !o->nossl && (!is_localhost(o->server) || explicit_tls);
    int port = o->port >= 0 ? o->port : (o->nossl ? 80 : 443);
    bool v6 = strchr(o->server, ':') != NULL && o->server[0] != '[';
    if (unix_path)
        c->url = xasprintf("http://localhost/%s", c->json ? "jsonrpc" : "");
    else
        c->url = xasprintf("%s://%s%s%s:%d/%s", tls ? "https" : "http", v6 ? "[" : "", o->server,
                           v6 ? "]" : "", port, c->json ? "jsonrpc" : "");
    c->unix_path = unix_path ? xstrdup(unix_path) : NULL;
    c->tls = tls;
    c->insecure = o->insecure;
    c->cafile = o->cafile ? xstrdup(o->cafile) : NULL;
    if (tls && o->fingerprint)
        c->pinned = xe_parse_fingerprint(o->fingerprint, c->pin);
    c->curl = curl_easy_init();
    if (!c->curl)
        abort();
    setup_transport(c, c->curl);
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "xe-cli/Unix/0.2");
    curl_easy_setopt(c->curl, CURLOPT_PROXY, "");
    c->hdrs = curl_slist_append(NULL, c->json ? "Content-Type: application/json"
                                              : "Content-Type: text/xml");
    c->hdrs = curl_slist_append(c->hdrs, "Expect:");
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, c->hdrs);
    return c;
}

void xe_conn_free(xe_conn *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    curl_slist_free_all(c->hdrs);
    free(c->url);
    free(c->server);
    free(c->session);
    free(c->error);
    free(c->unix_path);
    free(c->cafile);
    free(c);
}

const char *xe_conn_error(const xe_conn *c)
{
    return c->error ? c->error : "Unable to contact server. Please check server and port settings.";
}

static void set_error(xe_conn *c, char *msg)
{
    free(c->error);
    c->error = msg;
}

/* A one-line message for a transport failure, in XCP's words where it has them. */
static void transport_error(xe_conn *c, CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
        set_error(c, xasprintf("Host '%s' not found.", c->server));
        return;
    case CURLE_COULDNT_CONNECT: {
        long oserr = 0;
        curl_easy_getinfo(c->curl, CURLINFO_OS_ERRNO, &oserr);
        if (oserr == ECONNREFUSED || strstr(c->errbuf, "refused"))
            set_error(c, xstrdup("Error: Connection refused (calling connect )"));
        else
            set_error(c, xstrdup("Unable to contact server. Please check server and port "
                                 "settings."));
        return;
    }
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        if (c->pinned && c->pin_mismatch)
            set_error(c, xasprintf("Error: the certificate of server '%s' does not match the "
                                   "pinned fingerprint.",
                                   c->server));
        else
            set_error(c, xasprintf("Error: TLS connection to server '%s' failed: %s (check the "
                                   "certificate with --fingerprint or --cafile, or skip the "
                                   "check with --insecure)",
                                   c->server, c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc)));
        return;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        set_error(c, xstrdup("Lost connection to the server."));
        return;
    default:
        set_error(c, xasprintf("Error: %s", c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc)));
    }
}

int xe_conn_call(xe_conn *c, const char *method, const xv *params, xv **ret_value, xerr **ret_err)
{
    *ret_value = NULL;
    *ret_err = NULL;
    AUTO(xv) *all = xv_new_array();
    if (c->session)
        xv_array_append(all, xv_new_string(c->session));
    for (size_t i = 0; params && i < xv_array_len(params); i++)
        xv_array_append(all, xv_copy(xv_array_get(params, i)));
    size_t len = 0;
    AUTOFREE char *body = c->json
                              ? rpc_json_encode_call(RPC_JSON_V2, method, all, c->next_id++, &len)
                              : rpc_xml_encode_call(method, all, &len);
    if (c->debug)
        fprintf(stderr, "xe: -> %s\n", method);
    sbuf resp = SBUF_INIT;
    c->errbuf[0] = '\0';
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &resp);
    CURLcode rc = curl_easy_perform(c->curl);
    if (rc != CURLE_OK) {
        transport_error(c, rc);
        sbuf_release(&resp);
        return -1;
    }
    long status = 0, connects = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c->curl, CURLINFO_NUM_CONNECTS, &connects);
    if (c->debug && connects > 0)
        fprintf(stderr, "xe: opened a new connection to %s\n", c->url);
    if (status != 200) {
        set_error(c, xstrdup("Server internal error."));
        sbuf_release(&resp);
        return -1;
    }
    int r = c->json
                ? rpc_json_decode_response(resp.data ? resp.data : "", resp.len, ret_value, ret_err)
                : rpc_xml_decode_response(resp.data ? resp.data : "", resp.len, ret_value, ret_err);
    sbuf_release(&resp);
    if (r < 0) {
        set_error(c, xstrdup("Server internal error."));
        return -1;
    }
    if (c->debug && *ret_err)
        fprintf(stderr, "xe: <- %s\n", (*ret_err)->code);
    return 0;
}

int xe_conn_login(xe_conn *c, const char *user, const char *pw, xerr **ret_err)
{
    *ret_err = NULL;
    AUTO(xv) *p = xv_new_array();
    xv_array_append(p, xv_new_string(user));
    xv_array_append(p, xv_new_string(pw));
    xv_array_append(p, xv_new_string("2.21"));
    xv_array_append(p, xv_new_string("cli"));
    AUTO(xv) *v = NULL;
    if (xe_conn_call(c, "session.login_with_password", p, &v, ret_err) < 0)
        return -1;
    if (*ret_err)
        return 1;
    if (!xv_str(v)) {
        set_error(c, xstrdup("Server internal error."));
        return -1;
    }
    free(c->session);
    c->session = xstrdup(xv_str(v));
    return 0;
}

void xe_conn_logout(xe_conn *c)
{
    if (!c || !c->session)
        return;
    AUTO(xv) *v = NULL;
    AUTO(xerr) *e = NULL;
    xe_conn_call(c, "session.logout", NULL, &v, &e);
    free(c->session);
    c->session = NULL;
}

const char *xe_conn_session(const xe_conn *c)
{
    return c->session;
}

/* ---- Raw streams (xe console): a second connection, upgraded from HTTP ---- */

struct xe_stream {
    CURL *curl;
    curl_socket_t fd;
    char *pending; /* stream bytes that came with the response head */
    size_t npending, off;
};

void xe_stream_free(xe_stream *s)
{
    if (!s)
        return;
    if (s->curl)
        curl_easy_cleanup(s->curl);
    free(s->pending);
    free(s);
}

int xe_stream_fd(const xe_stream *s)
{
    return (int)s->fd;
}

/* Waits up to ms for the socket to be readable (in) or writable (!in). */
static bool stream_wait(curl_socket_t fd, bool in, int ms)
{
    struct pollfd p = {.fd = fd, .events = in ? POLLIN : POLLOUT};
    return poll(&p, 1, ms) > 0;
}

ssize_t xe_stream_recv(xe_stream *s, void *buf, size_t len)
{
    if (s->off < s->npending) {
        size_t n = s->npending - s->off < len ? s->npending - s->off : len;
        memcpy(buf, s->pending + s->off, n);
        s->off += n;
        return (ssize_t)n;
    }
    size_t got = 0;
    CURLcode rc = curl_easy_recv(s->curl, buf, len, &got);
    if (rc == CURLE_AGAIN)
        return -2;
    if (rc != CURLE_OK)
        return -1;
    return (ssize_t)got;
}

ssize_t xe_stream_send(xe_stream *s, const void *buf, size_t len)
{
    size_t sent = 0;
    CURLcode rc = curl_easy_send(s->curl, buf, len, &sent);
    if (rc == CURLE_AGAIN)
        return -2;
    if (rc != CURLE_OK)
        return -1;
    return (ssize_t)sent;
}

/* Sends all of buf, waiting for the socket as needed (30 s without progress fails). */
static bool stream_send_all(xe_stream *s, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = xe_stream_send(s, buf, len);
        if (n == -2) {
            if (!stream_wait(s->fd, false, 30000))
                return false;
            continue;
        }
        if (n < 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

int xe_stream_open(xe_conn *c, const char *path, const char *proto, xe_stream **ret, char **ret_msg)
{
    *ret = NULL;
    *ret_msg = NULL;
    xe_stream *s = xcalloc(1, sizeof(*s));
    s->curl = curl_easy_init();
    if (!s->curl)
        abort();
    char errbuf[CURL_ERROR_SIZE] = "";
    setup_transport(c, s->curl);
    curl_easy_setopt(s->curl, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(s->curl, CURLOPT_PROXY, "");
    curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(s->curl);
    if (rc == CURLE_OK)
        rc = curl_easy_getinfo(s->curl, CURLINFO_ACTIVESOCKET, &s->fd);
    if (rc != CURLE_OK) {
        /* the same words as an RPC transport failure */
        transport_error(c, rc);
        *ret_msg = xstrdup(xe_conn_error(c));
        xe_stream_free(s);
        return -1;
    }
    curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, NULL);
    const char *host = c->unix_path ? "localhost" : c->server;
    bool v6 = !c->unix_path && strchr(host, ':') && host[0] != '[';
    AUTOFREE char *req =
        xasprintf("GET %s HTTP/1.1\r\nHost: %s%s%s\r\nUser-Agent: xe-cli/Unix/0.2\r\n"
                  "Connection: Upgrade\r\nUpgrade: %s\r\n\r\n",
                  path, v6 ? "[" : "", host, v6 ? "]" : "", proto);
    if (!stream_send_all(s, req, strlen(req))) {
        *ret_msg = xstrdup("Lost connection to the server.");
        xe_stream_free(s);
        return -1;
    }
    /* the response head (bounded), then whatever stream bytes came with it */
    sbuf head = SBUF_INIT;
    char buf[4096];
    const char *end = NULL;
    while (!end) {
        ssize_t n = xe_stream_recv(s, buf, sizeof(buf));
        if (n == -2) {
            if (!stream_wait(s->fd, true, 30000))
                break;
            continue;
        }
        if (n <= 0)
            break;
        sbuf_append(&head, buf, (size_t)n);
        end = memmem(head.data, head.len, "\r\n\r\n", 4);
        if (!end && head.len > 65536)
            break;
    }
    if (!end) {
        sbuf_release(&head);
        *ret_msg = xstrdup("Lost connection to the server.");
        xe_stream_free(s);
        return -1;
    }
    size_t hlen = (size_t)(end - head.data) + 4;
    int status = 0;
    if (sscanf(head.data, "HTTP/%*d.%*d %d", &status) != 1)
        status = 0;
    if (status != 101) {
        /* the body for the caller's message: the server closes after it (bounded) */
        while (head.len < 65536 + hlen) {
            ssize_t n = xe_stream_recv(s, buf, sizeof(buf));
            if (n == -2) {
                if (!stream_wait(s->fd, true, 10000))
                    break;
                continue;
            }
            if (n <= 0)
                break;
            sbuf_append(&head, buf, (size_t)n);
        }
        *ret_msg = xstrndup(head.data + hlen, head.len - hlen);
        sbuf_release(&head);
        xe_stream_free(s);
        return status > 0 ? status : 502;
    }
    if (head.len > hlen) {
        s->npending = head.len - hlen;
        s->pending = xmalloc(s->npending);
        memcpy(s->pending, head.data + hlen, s->npending);
    }
    sbuf_release(&head);
    *ret = s;
    return 0;
}
