/* xapid: the per-host XenAPI daemon. Runs in the foreground, logs to stderr, stops
 * cleanly on SIGTERM/SIGINT. */
#define _GNU_SOURCE
#include "config.h"
#include "log.h"
#include "mem.h"
#include "util.h"
#include "xapid.h"
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int catalogue_check(const char *code, size_t nparams)
{
    const api_error_def *d = api_error_lookup(code);
    if (!d)
        return -1;
    /* XAPI sends SESSION_AUTHENTICATION_FAILED with params although it declares none */
    return d->nparams == nparams ? 0 : -1;
}

static char *read_password(const char *path)
{
    char *data = NULL;
    int r = read_file(path, &data, NULL);
    if (r < 0) {
        log_err("cannot read %s: %s", path, strerror(-r));
        return NULL;
    }
    data[strcspn(data, "\r\n")] = '\0';
    return data;
}

static char *random_password(void)
{
    static const char alphabet[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        abort();
    char *p = xmalloc(sizeof(raw) + 1);
    for (size_t i = 0; i < sizeof(raw); i++)
        p[i] = alphabet[raw[i] % (sizeof(alphabet) - 1)];
    p[sizeof(raw)] = '\0';
    return p;
}

static int setup_root(xapid *x, bool fresh)
{
    if (!fresh && auth_verify(x, "root", "") >= 0)
        return 0;
    if (!fresh)
        return 0;
    AUTOFREE char *pw = NULL;
    if (x->cfg.root_password_file) {
        pw = read_password(x->cfg.root_password_file);
        if (!pw || !*pw) {
            log_err("the root password file is empty or unreadable");
            return -1;
        }
    } else {
        pw = random_password();
        AUTOFREE char *path = xasprintf("%s/root-password", x->cfg.state_dir);
        write_file_atomic(path, pw, strlen(pw), 0600);
        printf("root password: %s (also in %s)\n", pw, path);
        fflush(stdout);
    }
    return auth_set_password(x, "root", pw, "pool-admin");
}

/* Releases whatever main() set up; safe on partially set up state. */
static void teardown(xapid *x)
{
    tasks_stop(x);
    xapid_vm_stop(x);
    xapid_network_stop(x);
    xapid_storage_stop(x);
    sessions_free(x);
    store_close(x->st);
    x->st = NULL;
    free(x->host_ref);
    free(x->http_address);
    free(x->pool_ref);
    config_free(&x->cfg);
}

static int run(xapid *x, int argc, char **argv);

int main(int argc, char **argv)
{
    /* Large response buffers always come from mmap: with glibc's sliding threshold they
     * move onto the heap and each one forces a consolidation of every small free chunk
     * left by the value trees. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    xapid x = {0};
    int rc = run(&x, argc, argv);
    teardown(&x);
    return rc;
}

static int run(xapid *xp, int argc, char **argv)
{
#define x (*xp)
    config_defaults(&x.cfg);
    const char *add_user = NULL, *add_role = NULL, *add_pwfile = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            config_print_help(stdout);
            return 0;
        }
        if (strcmp(a, "--print-sample-config") == 0) {
            config_print_sample(stdout);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "xapid: unexpected argument '%s' (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        char *msg = NULL;
        if (strcmp(a, "--config") == 0) {
            if (config_load_file(&x.cfg, v, &msg) < 0) {
                fprintf(stderr, "xapid: %s\n", msg);
                return 2;
            }
        } else if (strcmp(a, "--add-user") == 0)
            add_user = v;
        else if (strcmp(a, "--role") == 0)
            add_role = v;
        else if (strcmp(a, "--user-password-file") == 0)
            add_pwfile = v;
        else if (config_set(&x.cfg, a + 2, v, &msg) < 0) {
            fprintf(stderr, "xapid: %s\n", msg);
            return 2;
        }
    }
    if (!x.cfg.state_dir) {
        fprintf(stderr, "xapid: --state-dir is required (see --help)\n");
        return 2;
    }
    log_set_level(strcmp(x.cfg.log_level, "debug") == 0   ? LOG_LVL_DEBUG
                  : strcmp(x.cfg.log_level, "warn") == 0  ? LOG_LVL_WARN
                  : strcmp(x.cfg.log_level, "error") == 0 ? LOG_LVL_ERR
                                                          : LOG_LVL_INFO);
    xerr_set_checker(catalogue_check);
    signal(SIGPIPE, SIG_IGN);
    if (mkdir_p(x.cfg.state_dir, 0700) < 0) {
        log_err("cannot create %s: %s", x.cfg.state_dir, strerror(errno));
        return 1;
    }
    if (!x.cfg.db_path)
        x.cfg.db_path = xasprintf("%s/xapi.db", x.cfg.state_dir);
    bool fresh = access(x.cfg.db_path, F_OK) != 0;
    if (store_open(x.cfg.db_path, &x.st) < 0) {
        log_err("cannot open the database %s", x.cfg.db_path);
        return 1;
    }
    if (auth_init(&x) < 0 || bootstrap(&x) < 0 || sessions_init(&x) < 0)
        return 1;
    if (add_user) {
        AUTOFREE char *pw = add_pwfile ? read_password(add_pwfile) : NULL;
        if (!pw || !add_role || api_role_rank(add_role) < 0) {
            fprintf(stderr, "xapid: --add-user needs --role (one of the XAPI roles) and "
                            "--user-password-file\n");
            return 2;
        }
        int r = auth_set_password(&x, add_user, pw, add_role);
        printf("user %s %s with role %s\n", add_user, r < 0 ? "not set" : "set", add_role);
        return r < 0 ? 1 : 0;
    }
    if (setup_root(&x, fresh) < 0)
        return 1;
    tasks_fail_stale(&x);
    xerr *ne = xapid_network_reconcile(&x, x.cfg.manage_pifs != 0);
    if (ne) {
        log_warn("network reconcile: %s %s", ne->code, ne->nparams ? ne->params[0] : "");
        xerr_free(ne);
    }
    xerr *se = xapid_storage_init(&x);
    if (se) {
        log_warn("storage init: %s %s", se->code, se->nparams ? se->params[0] : "");
        xerr_free(se);
    }
    xerr *ve = xapid_vm_init(&x);
    if (ve) {
        log_err("VM start-up: %s %s", ve->code, ve->nparams ? ve->params[0] : "");
        xerr_free(ve);
        teardown(&x);
        return 1;
    }
    if (tasks_init(&x) < 0)
        return 1;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* threads started below inherit the mask */

    struct http_server *h = http_start(&x, x.cfg.listen, false, NULL, NULL), *hs = NULL, *hu = NULL;
    if (!h)
        return 1;
    if (!x.cfg.unix_socket)
        x.cfg.unix_socket = xasprintf("%s/xapi.sock", x.cfg.state_dir);
    if (strcmp(x.cfg.unix_socket, "none") != 0 && !(hu = http_start_unix(&x, x.cfg.unix_socket))) {
        http_stop(h);
        return 1;
    }
    if (x.cfg.tls_listen) {
        if (!x.cfg.tls_cert)
            x.cfg.tls_cert = xasprintf("%s/xapi-ssl.pem", x.cfg.state_dir);
        if (!x.cfg.tls_key)
            x.cfg.tls_key = xasprintf("%s/xapi-ssl.key", x.cfg.state_dir);
        char host[256] = "localhost";
        gethostname(host, sizeof(host) - 1);
        AUTOFREE char *cert = NULL, *key = NULL;
        if (tls_ensure_cert(x.cfg.tls_cert, x.cfg.tls_key, host) == 0 &&
            read_file(x.cfg.tls_cert, &cert, NULL) == 0 &&
            read_file(x.cfg.tls_key, &key, NULL) == 0)
            hs = http_start(&x, x.cfg.tls_listen, true, cert, key);
        if (!hs) {
            http_stop(hu);
            http_stop(h);
            return 1;
        }
    }
    log_info("xapid ready (pool %s, host %s)", x.pool_ref, x.host_ref);

    for (;;) {
        struct timespec ts = {5, 0};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("signal %d: shutting down", sig);
            break;
        }
        sessions_expire(&x);
        tasks_gc(&x);
        store_trim_tombstones(x.st);
    }
    atomic_store(&x.stopping, true);
    store_wake_all(x.st);
    http_stop(hu);
    http_stop(hs);
    http_stop(h);
    log_info("stopped");
    return 0;
#undef x
}
