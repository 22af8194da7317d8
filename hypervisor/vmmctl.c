/* nuvem-vmmctl: a command-line client for nuvem-vmm's control socket.
 *
 *   nuvem-vmmctl SOCKET COMMAND [ARGUMENTS-JSON]   one request; prints the return value
 *   nuvem-vmmctl SOCKET events [NAME [TIMEOUT_S]]  prints events (until NAME, if given)
 *   nuvem-vmmctl SOCKET console                    attaches stdin/stdout to the serial console
 *
 * Exit status: 0 success, 1 error reply (printed on stderr), 2 connection or usage problem,
 * 3 timeout waiting for an event. */
#define _GNU_SOURCE
#include "cleanup.h"
#include "mem.h"
#include "sbuf.h"
#include "util.h"
#include "xv.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads one line into *ret (caller-frees, without the newline); waits at most timeout_ms
 * (-1: forever). Returns 1, 0 on EOF, -1 on error, -2 on timeout. */
static int read_line(int fd, sbuf *buf, char **ret, int timeout_ms)
{
    double deadline = now_monotonic() + timeout_ms / 1000.0;
    for (;;) {
        char *nl = buf->len ? memchr(buf->data, '\n', buf->len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - buf->data);
            *ret = xstrndup(buf->data, n);
            memmove(buf->data, nl + 1, buf->len - n - 1);
            buf->len -= n + 1;
            return 1;
        }
        int wait = -1;
        if (timeout_ms >= 0) {
            wait = (int)((deadline - now_monotonic()) * 1000);
            if (wait <= 0)
                return -2;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, wait);
        if (r < 0 && errno != EINTR)
            return -1;
        if (r <= 0)
            continue;
        char tmp[4096];
        ssize_t n = read(fd, tmp, sizeof(tmp));
        if (n < 0)
            return errno == EINTR ? 0 : -1;
        if (n == 0)
            return 0;
        sbuf_append(buf, tmp, (size_t)n);
    }
}

static int console(int fd)
{
    struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    char buf[4096];
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 2;
        }
        if (p[0].revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n <= 0) {
                p[0].fd = -1; /* stdin done: keep printing guest output */
            } else if (write(fd, buf, (size_t)n) != n) {
                return 2;
            }
        }
        if (p[1].revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0)
                return 0;
            if (write(1, buf, (size_t)n) != n)
                return 2;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: nuvem-vmmctl SOCKET COMMAND [ARGUMENTS-JSON]\n"
                        "       nuvem-vmmctl SOCKET events [NAME [TIMEOUT_S]]\n"
                        "       nuvem-vmmctl SOCKET console\n");
        return 2;
    }
    AUTOCLOSE int fd = connect_unix(argv[1]);
    if (fd < 0) {
        fprintf(stderr, "nuvem-vmmctl: cannot connect to %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    sbuf in = SBUF_INIT;
    AUTOFREE char *greeting = NULL;
    if (read_line(fd, &in, &greeting, 10000) != 1) {
        fprintf(stderr, "nuvem-vmmctl: no greeting\n");
        return 2;
    }
    const char *cmd = argv[2];
    bool events = strcmp(cmd, "events") == 0;
    if (events) {
        const char *until = argc > 3 ? argv[3] : NULL;
        int timeout_ms = argc > 4 ? (int)(atof(argv[4]) * 1000) : -1;
        for (;;) {
            AUTOFREE char *line = NULL;
            int r = read_line(fd, &in, &line, timeout_ms);
            if (r == -2) {
                fprintf(stderr, "nuvem-vmmctl: timed out\n");
                sbuf_release(&in);
                return 3;
            }
            if (r != 1) {
                sbuf_release(&in);
                return until ? 2 : 0;
            }
            printf("%s\n", line);
            fflush(stdout);
            AUTO(xv) *m = xv_from_json(line, strlen(line));
            const char *name = m ? xv_struct_get_str(m, "event") : NULL;
            if (until && name && strcmp(name, until) == 0) {
                sbuf_release(&in);
                return 0;
            }
        }
    }
    AUTO(xv) *req = xv_new_struct();
    xv_struct_set(req, "id", xv_new_int(1));
    xv_struct_set(req, "execute", xv_new_string(cmd));
    if (argc > 3) {
        xv *args = xv_from_json(argv[3], strlen(argv[3]));
        if (!args || args->kind != XV_STRUCT) {
            fprintf(stderr, "nuvem-vmmctl: arguments must be a JSON object\n");
            xv_free(args);
            sbuf_release(&in);
            return 2;
        }
        xv_struct_set(req, "arguments", args);
    }
    AUTOFREE char *json = xv_to_json(req);
    AUTOFREE char *line = xasprintf("%s\n", json);
    if (write(fd, line, strlen(line)) != (ssize_t)strlen(line)) {
        sbuf_release(&in);
        return 2;
    }
    for (;;) {
        AUTOFREE char *reply = NULL;
        if (read_line(fd, &in, &reply, 30000) != 1) {
            fprintf(stderr, "nuvem-vmmctl: no reply\n");
            sbuf_release(&in);
            return 2;
        }
        AUTO(xv) *m = xv_from_json(reply, strlen(reply));
        if (!m || xv_struct_get(m, "event"))
            continue; /* events that arrived before the reply */
        const xv *ret = xv_struct_get(m, "return");
        if (ret) {
            AUTOFREE char *out = xv_to_json(ret);
            printf("%s\n", out);
            fflush(stdout);
            if (strcmp(cmd, "console") == 0) {
                /* Serial bytes that came with the reply go out first. */
                bool ok = !in.len || write(1, in.data, in.len) == (ssize_t)in.len;
                sbuf_release(&in);
                return ok ? console(fd) : 2;
            }
            sbuf_release(&in);
            return 0;
        }
        const xv *err = xv_struct_get(m, "error");
        AUTOFREE char *out = err ? xv_to_json(err) : xstrdup(reply);
        fprintf(stderr, "%s\n", out);
        sbuf_release(&in);
        return 1;
    }
}
