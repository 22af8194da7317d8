/* bench-api: XenAPI call latency and throughput of xapid, against a bare libmicrohttpd server.
 *
 * Starts its own xapid (fresh state dir under $TMPDIR, 127.0.0.1, port 0), logs in, creates
 * --vms VM records, then for each series (VM.get_power_state and VM.get_all_records over
 * XML-RPC "POST /" and JSON-RPC v2 "POST /jsonrpc") and each concurrency level runs that many
 * client threads, each with one persistent keep-alive connection, for --duration seconds or
 * --max-calls calls in all, whichever comes first. In the same run a bare libmicrohttpd server
 * (xapid's threading mode) answers a fixed small body to the same request and is measured the
 * same way; xapid's small-call p50 is printed as a ratio to it.
 *
 * Only 127.0.0.1 is contacted (proxies are disabled). Only the xapid started here is stopped,
 * by PID; a watchdog (--max-seconds) bounds the whole run. Output: a table, then one JSON line
 * starting with {"bench":"api". */
#define _GNU_SOURCE
#include "cleanup.h"
#include "err.h"
#include "mem.h"
#include "rpc.h"
#include "xv.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PASSWORD    "nuvem-bench-pw"
#define MAX_CONC    16
#define MAX_RESULTS 64

/* ---------------------------------------------------------------- options */

static struct {
    const char *xapid;
    int vms;
    double duration;
    long max_calls;
    int conc[MAX_CONC];
    int nconc;
    int create_threads;
    int rounds;
    int max_seconds;
    const char *only; /* comma-separated series names, NULL = all */
} opt = {
    .vms = 1000,
    .duration = 2.5,
    .max_calls = 200000,
    .conc = {1, 16, 64},
    .nconc = 3,
    .create_threads = 4,
    .rounds = 3,
    .max_seconds = 170,
};

static void usage(FILE *f)
{
    fprintf(f, "usage: bench-api --xapid PATH [options]\n"
               "  --xapid PATH          the xapid binary to start (required)\n"
               "  --vms N               VM records to create (default 1000)\n"
               "  --duration S          seconds per measurement (default 2.5)\n"
               "  --max-calls N         calls per measurement at most (default 200000)\n"
               "  --concurrency LIST    client threads, e.g. 1,16,64 (default)\n"
               "  --create-threads N    parallel clients creating the VMs (default 4)\n"
               "  --rounds N            small-call series run interleaved in N rounds (default 3)\n"
               "  --max-seconds S       abort (and stop xapid) after S seconds (default 170)\n"
               "  --only LIST           series to run: bare,xml-small,xml-all,json-small,json-all\n"
               "                        (the ratio needs bare and a small series)\n");
}

/* ---------------------------------------------------------------- helpers */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static volatile pid_t child_pid = -1;
static char tmp_dir[64];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

static void remove_tmp(void)
{
    if (tmp_dir[0])
        nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    tmp_dir[0] = '\0';
}

static void print_xapid_stderr(void)
{
    if (!tmp_dir[0])
        return;
    char path[128];
    snprintf(path, sizeof(path), "%s/xapid.stderr", tmp_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    fprintf(stderr, "--- xapid stderr (last lines) ---\n");
    long n = 0;
    while (fgets(line, sizeof(line), f))
        n++;
    rewind(f);
    long i = 0;
    while (fgets(line, sizeof(line), f))
        if (i++ >= n - 20)
            fputs(line, stderr);
    fclose(f);
}

static void stop_xapid(void)
{
    pid_t pid = child_pid;
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    int status;
    double until = now_s() + 10;
    while (now_s() < until) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) {
            child_pid = -1;
            return;
        }
        usleep(20000);
    }
    fprintf(stderr, "bench-api: xapid (pid %d) ignored SIGTERM for 10 s, killing it\n", (int)pid);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    child_pid = -1;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench-api: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    print_xapid_stderr();
    stop_xapid();
    remove_tmp();
    exit(1);
}

/* SIGINT/SIGTERM/SIGHUP are blocked in every thread and taken here, and the watchdog ends the
 * run the same way: kill the xapid we started (by PID), reap it, remove the temp dir, exit. */
static sigset_t stop_signals;

static void abort_run(const char *why, int code)
{
    fprintf(stderr, "bench-api: %s, stopping xapid and giving up\n", why);
    pid_t pid = child_pid;
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        child_pid = -1;
    }
    remove_tmp();
    _exit(code);
}

static void *signal_thread(void *arg)
{
    int sig = 0;
    if (sigwait(&stop_signals, &sig) == 0)
        abort_run(strsignal(sig), 128 + sig);
    return NULL;
}

static void *watchdog(void *arg)
{
    sleep((unsigned)opt.max_seconds);
    abort_run("--max-seconds reached", 3);
    return NULL;
}

static void loadavg(char out[64])
{
    out[0] = '\0';
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f)
        return;
    double a = 0, b = 0, c = 0;
    if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
        snprintf(out, 64, "%.2f %.2f %.2f", a, b, c);
    fclose(f);
}

/* ---------------------------------------------------------------- HTTP client */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    buf *b = ud;
    size_t n = size * nmemb;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, ptr, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

typedef struct client {
    CURL *c;
    buf in;
} client;

static struct curl_slist *hdr_xml, *hdr_json;

static void client_init(client *cl, const char *url, bool json)
{
    memset(cl, 0, sizeof(*cl));
    cl->c = curl_easy_init();
    if (!cl->c)
        die("curl_easy_init failed");
    curl_easy_setopt(cl->c, CURLOPT_URL, url);
    curl_easy_setopt(cl->c, CURLOPT_PROXY, ""); /* ignore *_proxy: 127.0.0.1 only */
    curl_easy_setopt(cl->c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(cl->c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(cl->c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(cl->c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(cl->c, CURLOPT_HTTPHEADER, json ? hdr_json : hdr_xml);
    curl_easy_setopt(cl->c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(cl->c, CURLOPT_WRITEDATA, &cl->in);
}

static void client_free(client *cl)
{
    if (cl->c)
        curl_easy_cleanup(cl->c);
    free(cl->in.p);
    memset(cl, 0, sizeof(*cl));
}

/* POSTs body; returns the HTTP status or -1 on a transport error. Sets *new_conn when curl
 * had to open a connection for it. */
static long client_post(client *cl, const char *body, size_t len, bool *new_conn)
{
    cl->in.len = 0;
    if (cl->in.p)
        cl->in.p[0] = '\0';
    curl_easy_setopt(cl->c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(cl->c, CURLOPT_POSTFIELDSIZE, (long)len);
    CURLcode rc = curl_easy_perform(cl->c);
    if (rc != CURLE_OK)
        return -1;
    long status = 0, conns = 0;
    curl_easy_getinfo(cl->c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(cl->c, CURLINFO_NUM_CONNECTS, &conns);
    if (new_conn)
        *new_conn = conns > 0;
    return status;
}

/* One full call with decoding (setup and validation, never timed). Returns the value or
 * dies with the error. */
static xv *rpc_call(client *cl, bool json, const char *method, const xv *params)
{
    size_t len = 0;
    AUTOFREE char *body = json ? rpc_json_encode_call(RPC_JSON_V2, method, params, 1, &len)
                               : rpc_xml_encode_call(method, params, &len);
    long st = client_post(cl, body, len, NULL);
    if (st != 200)
        die("%s (%s): HTTP status %ld", method, json ? "JSON-RPC" : "XML-RPC", st);
    xv *value = NULL;
    xerr *err = NULL;
    int r = json ? rpc_json_decode_response(cl->in.p, cl->in.len, &value, &err)
                 : rpc_xml_decode_response(cl->in.p, cl->in.len, &value, &err);
    if (r < 0)
        die("%s: malformed response", method);
    if (err) {
        fprintf(stderr, "bench-api: %s failed: %s", method, err->code);
        for (size_t i = 0; i < err->nparams; i++)
            fprintf(stderr, " %s", err->params[i]);
        fprintf(stderr, "\n");
        xerr_free(err);
        xv_free(value);
        die("API call failed");
    }
    return value;
}

/* ---------------------------------------------------------------- bare server */

static char *bare_body;
static size_t bare_body_len;

static enum MHD_Result bare_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **con_cls)
{
    static int marker;
    if (!*con_cls) {
        *con_cls = &marker;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0; /* read and dropped */
        return MHD_YES;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(bare_body_len, bare_body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "text/xml");
    enum MHD_Result ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static struct MHD_Daemon *bare_start(unsigned *ret_port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    /* xapid's flags and connection options (xapid/http.c) */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_POLL;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, bare_handle, NULL, MHD_OPTION_SOCK_ADDR, &sa,
        MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 600u, MHD_OPTION_END);
    if (!d)
        die("cannot start the bare libmicrohttpd server");
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || !info->port)
        die("bare server: no port");
    *ret_port = info->port;
    return d;
}

/* ---------------------------------------------------------------- xapid */

static unsigned start_xapid(void)
{
    const char *td = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/bench-api-XXXXXX",
             td && *td && strlen(td) < 40 ? td : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        tmp_dir[0] = '\0';
        die("mkdtemp: %s", strerror(errno));
    }
    char pwfile[128], state[128], out[128], errp[128];
    snprintf(pwfile, sizeof(pwfile), "%s/pw", tmp_dir);
    snprintf(state, sizeof(state), "%s/state", tmp_dir);
    snprintf(out, sizeof(out), "%s/xapid.stdout", tmp_dir);
    snprintf(errp, sizeof(errp), "%s/xapid.stderr", tmp_dir);
    FILE *f = fopen(pwfile, "w");
    if (!f || fputs(PASSWORD "\n", f) < 0 || fclose(f) != 0)
        die("cannot write %s", pwfile);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (getppid() != parent)
            _exit(127);
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(127);
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull >= 0)
            dup2(devnull, 0);
        execl(opt.xapid, opt.xapid, "--state-dir", state, "--listen", "127.0.0.1:0",
              "--root-password-file", pwfile, "--password-iterations", "1000", (char *)NULL);
        _exit(127);
    }
    child_pid = pid;
    fprintf(stderr, "bench-api: started xapid pid %d (state %s)\n", (int)pid, state);
    double until = now_s() + 30;
    while (now_s() < until) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            child_pid = -1;
            die("xapid exited during start-up (status %d)", status);
        }
        char text[4096] = "";
        FILE *o = fopen(out, "r");
        if (o) {
            size_t n = fread(text, 1, sizeof(text) - 1, o);
            text[n] = '\0';
            fclose(o);
        }
        const char *m = strstr(text, "xapid listening on http://127.0.0.1:");
        if (m) {
            unsigned port =
                (unsigned)strtoul(m + strlen("xapid listening on http://127.0.0.1:"), NULL, 10);
            if (port)
                return port;
        }
        usleep(20000);
    }
    die("xapid did not print its port within 30 s");
}

/* ---------------------------------------------------------------- setup */

static xv *vm_record(int i)
{
    xv *r = xv_new_struct();
    char name[32];
    snprintf(name, sizeof(name), "bench-vm-%04d", i);
    xv_struct_set(r, "name_label", xv_new_string(name));
    xv_struct_set(r, "name_description", xv_new_string("bench/api"));
    xv_struct_set(r, "user_version", xv_new_string("1"));
    xv_struct_set(r, "is_a_template", xv_new_bool(false));
    xv_struct_set(r, "affinity", xv_new_string("OpaqueRef:NULL"));
    xv_struct_set(r, "memory_static_max", xv_new_string("268435456"));
    xv_struct_set(r, "memory_dynamic_max", xv_new_string("268435456"));
    xv_struct_set(r, "memory_dynamic_min", xv_new_string("268435456"));
    xv_struct_set(r, "memory_static_min", xv_new_string("134217728"));
    xv_struct_set(r, "VCPUs_params", xv_new_struct());
    xv_struct_set(r, "VCPUs_max", xv_new_string("1"));
    xv_struct_set(r, "VCPUs_at_startup", xv_new_string("1"));
    xv_struct_set(r, "actions_after_shutdown", xv_new_string("destroy"));
    xv_struct_set(r, "actions_after_reboot", xv_new_string("restart"));
    xv_struct_set(r, "actions_after_crash", xv_new_string("restart"));
    static const char *const empty[] = {
        "PV_bootloader",  "PV_kernel",       "PV_ramdisk", "PV_args",        "PV_bootloader_args",
        "PV_legacy_args", "HVM_boot_policy", "PCI_bus",    "recommendations"};
    for (size_t k = 0; k < ARRAY_SIZE(empty); k++)
        xv_struct_set(r, empty[k], xv_new_string(""));
    xv_struct_set(r, "HVM_boot_params", xv_new_struct());
    xv_struct_set(r, "platform", xv_new_struct());
    xv_struct_set(r, "other_config", xv_new_struct());
    return r;
}

static char xml_url[64], json_url[64], bare_url[64];
static char *session_ref;
static char *first_vm;
static atomic_int next_vm;

static void *create_worker(void *arg)
{
    client cl;
    client_init(&cl, xml_url, false);
    for (;;) {
        int i = atomic_fetch_add(&next_vm, 1);
        if (i >= opt.vms)
            break;
        AUTO(xv) *params = xv_new_array();
        xv_array_append(params, xv_new_string(session_ref));
        xv_array_append(params, vm_record(i));
        AUTO(xv) *ref = rpc_call(&cl, false, "VM.create", params);
        if (!xv_str(ref))
            die("VM.create returned no ref");
        if (i == 0)
            first_vm = xstrdup(xv_str(ref));
    }
    client_free(&cl);
    return NULL;
}

/* ---------------------------------------------------------------- measurement */

typedef struct series {
    const char *name;   /* for --only */
    const char *target; /* bare / xapid */
    const char *proto;  /* xml / json */
    const char *method;
    const char *url;
    bool json;
    char *body; /* the timed request */
    size_t body_len;
    char *warm; /* the untimed request that opens each connection */
    size_t warm_len;
    const char *marker; /* a success response has this within its first 128 bytes */
} series;

typedef struct result {
    const series *s;
    int conc;
    long calls, errors, reconnects;
    size_t resp_bytes;
    double elapsed, rate, p50_ms, p99_ms, mean_ms, max_ms;
} result;

typedef struct run_ctl {
    const series *s;
    int conc;
    long per_thread_limit;
    pthread_barrier_t ready, go;
    double start, deadline;
} run_ctl;

typedef struct worker {
    run_ctl *ctl;
    double *lat; /* seconds */
    size_t n, cap;
    long errors, reconnects;
    size_t resp_bytes; /* of the last good response */
    double t_end;
    bool failed;
} worker;

static bool looks_ok(const series *s, const buf *b)
{
    size_t win = b->len < 128 ? b->len : 128;
    return b->p && memmem(b->p, win, s->marker, strlen(s->marker)) != NULL;
}

static void *bench_worker(void *arg)
{
    worker *w = arg;
    run_ctl *ctl = w->ctl;
    const series *s = ctl->s;
    client cl;
    client_init(&cl, s->url, s->json);
    long st = client_post(&cl, s->warm, s->warm_len, NULL);
    if (st != 200 || !looks_ok(s, &cl.in))
        w->failed = true;
    pthread_barrier_wait(&ctl->ready);
    pthread_barrier_wait(&ctl->go);
    double deadline = ctl->deadline;
    w->t_end = ctl->start;
    while (!w->failed && (long)w->n < ctl->per_thread_limit) {
        bool fresh = false;
        double t0 = now_s();
        st = client_post(&cl, s->body, s->body_len, &fresh);
        double t1 = now_s();
        w->t_end = t1;
        if (st != 200 || !looks_ok(s, &cl.in))
            w->errors++;
        else {
            if (w->n == w->cap) {
                w->cap = w->cap ? w->cap * 2 : 1024;
                w->lat = xrealloc(w->lat, w->cap * sizeof(double));
            }
            w->lat[w->n++] = t1 - t0;
            w->resp_bytes = cl.in.len;
        }
        if (fresh)
            w->reconnects++;
        if (t1 >= deadline || w->errors > 100)
            break;
    }
    client_free(&cl);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(const double *v, size_t n, double p)
{
    if (!n)
        return NAN;
    size_t k = (size_t)ceil(p * (double)n);
    if (k < 1)
        k = 1;
    return v[k - 1];
}

/* What one (series, concurrency) collected over its rounds. */
typedef struct acc {
    double *lat; /* seconds, all rounds */
    size_t n, cap;
    long errors, reconnects;
    size_t resp_bytes;
    double elapsed; /* sum over rounds */
} acc;

/* One round: conc client threads for `duration` seconds or `max_calls` calls in all. */
static void measure(const series *s, int conc, double duration, long max_calls, acc *a)
{
    run_ctl ctl = {.s = s, .conc = conc};
    ctl.per_thread_limit = (max_calls + conc - 1) / conc;
    pthread_barrier_init(&ctl.ready, NULL, (unsigned)conc + 1);
    pthread_barrier_init(&ctl.go, NULL, (unsigned)conc + 1);
    worker *ws = xcalloc((size_t)conc, sizeof(*ws));
    pthread_t *th = xcalloc((size_t)conc, sizeof(*th));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < conc; i++) {
        ws[i].ctl = &ctl;
        if (pthread_create(&th[i], &attr, bench_worker, &ws[i]) != 0)
            die("pthread_create failed");
    }
    pthread_attr_destroy(&attr);
    pthread_barrier_wait(&ctl.ready);
    ctl.start = now_s();
    ctl.deadline = ctl.start + duration;
    pthread_barrier_wait(&ctl.go);
    double end = ctl.start;
    bool failed = false;
    for (int i = 0; i < conc; i++) {
        pthread_join(th[i], NULL);
        a->errors += ws[i].errors;
        a->reconnects += ws[i].reconnects;
        if (ws[i].resp_bytes)
            a->resp_bytes = ws[i].resp_bytes;
        failed |= ws[i].failed;
        if (ws[i].t_end > end)
            end = ws[i].t_end;
        if (a->n + ws[i].n > a->cap) {
            a->cap = (a->n + ws[i].n) * 2;
            a->lat = xrealloc(a->lat, a->cap * sizeof(double));
        }
        if (ws[i].n)
            memcpy(a->lat + a->n, ws[i].lat, ws[i].n * sizeof(double));
        a->n += ws[i].n;
        free(ws[i].lat);
    }
    if (failed)
        die("%s %s %s: a client could not open its connection", s->target, s->proto, s->method);
    a->elapsed += end - ctl.start;
    free(ws);
    free(th);
    pthread_barrier_destroy(&ctl.ready);
    pthread_barrier_destroy(&ctl.go);
}

static result finish(const series *s, int conc, acc *a)
{
    result r = {.s = s,
                .conc = conc,
                .errors = a->errors,
                .reconnects = a->reconnects,
                .resp_bytes = a->resp_bytes,
                .elapsed = a->elapsed};
    double sum = 0;
    for (size_t i = 0; i < a->n; i++)
        sum += a->lat[i];
    qsort(a->lat, a->n, sizeof(double), cmp_double);
    r.calls = (long)a->n;
    r.rate = r.elapsed > 0 ? (double)a->n / r.elapsed : 0;
    r.p50_ms = percentile(a->lat, a->n, 0.50) * 1e3;
    r.p99_ms = percentile(a->lat, a->n, 0.99) * 1e3;
    r.mean_ms = a->n ? sum / (double)a->n * 1e3 : NAN;
    r.max_ms = a->n ? a->lat[a->n - 1] * 1e3 : NAN;
    free(a->lat);
    memset(a, 0, sizeof(*a));
    return r;
}

/* ---------------------------------------------------------------- output */

static void print_row(const result *r)
{
    printf("%-6s %-5s %-20s %5d %8ld %10.1f %9.3f %9.3f %9.3f %6ld %5ld %9zu\n", r->s->target,
           r->s->proto, r->s->method, r->conc, r->calls, r->rate, r->p50_ms, r->p99_ms, r->mean_ms,
           r->errors, r->reconnects, r->resp_bytes);
    fflush(stdout);
}

static const result *find(const result *rs, size_t n, const char *name, int conc)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(rs[i].s->name, name) == 0 && rs[i].conc == conc)
            return &rs[i];
    return NULL;
}

/* JSON number or null */
static void jnum(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.3f", v);
    else
        fprintf(f, "null");
}

static bool selected(const char *name)
{
    if (!opt.only)
        return true;
    size_t n = strlen(name);
    for (const char *p = opt.only; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return true;
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

/* ---------------------------------------------------------------- main */

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            usage(stderr);
            exit(2);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--xapid") == 0)
            opt.xapid = v;
        else if (strcmp(a, "--vms") == 0)
            opt.vms = atoi(v);
        else if (strcmp(a, "--duration") == 0)
            opt.duration = atof(v);
        else if (strcmp(a, "--max-calls") == 0)
            opt.max_calls = atol(v);
        else if (strcmp(a, "--create-threads") == 0)
            opt.create_threads = atoi(v);
        else if (strcmp(a, "--rounds") == 0)
            opt.rounds = atoi(v);
        else if (strcmp(a, "--max-seconds") == 0)
            opt.max_seconds = atoi(v);
        else if (strcmp(a, "--only") == 0)
            opt.only = v;
        else if (strcmp(a, "--concurrency") == 0) {
            opt.nconc = 0;
            for (const char *p = v; *p && opt.nconc < MAX_CONC;) {
                char *end;
                long c = strtol(p, &end, 10);
                if (end == p || c < 1 || c > 1000) {
                    fprintf(stderr, "bench-api: bad --concurrency '%s'\n", v);
                    exit(2);
                }
                opt.conc[opt.nconc++] = (int)c;
                p = *end == ',' ? end + 1 : end;
            }
        } else {
            fprintf(stderr, "bench-api: unknown option '%s'\n", a);
            usage(stderr);
            exit(2);
        }
    }
    if (!opt.xapid) {
        usage(stderr);
        exit(2);
    }
    if (opt.vms < 1 || opt.duration <= 0 || opt.max_calls < 1 || opt.nconc < 1 ||
        opt.create_threads < 1 || opt.create_threads > 64 || opt.rounds < 1 || opt.rounds > 100 ||
        opt.max_seconds < 10 || opt.max_calls < opt.rounds) {
        fprintf(stderr, "bench-api: option out of range\n");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL); /* before any thread starts */
    signal(SIGPIPE, SIG_IGN);
    pthread_t sigt;
    if (pthread_create(&sigt, NULL, signal_thread, NULL) == 0)
        pthread_detach(sigt);
    pthread_t wd;
    if (pthread_create(&wd, NULL, watchdog, NULL) == 0)
        pthread_detach(wd);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
        die("curl_global_init failed");
    hdr_xml = curl_slist_append(NULL, "Content-Type: text/xml");
    hdr_xml = curl_slist_append(hdr_xml, "Expect:");
    hdr_json = curl_slist_append(NULL, "Content-Type: application/json");
    hdr_json = curl_slist_append(hdr_json, "Expect:");

    char load0[64];
    loadavg(load0);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    double t_begin = now_s();

    unsigned port = start_xapid();
    snprintf(xml_url, sizeof(xml_url), "http://127.0.0.1:%u/", port);
    snprintf(json_url, sizeof(json_url), "http://127.0.0.1:%u/jsonrpc", port);

    /* login (retry while xapid finishes starting) */
    client cl;
    client_init(&cl, xml_url, false);
    {
        size_t len;
        AUTO(xv) *p = xv_new_array();
        xv_array_append(p, xv_new_string("root"));
        xv_array_append(p, xv_new_string(PASSWORD));
        xv_array_append(p, xv_new_string("2.21"));
        xv_array_append(p, xv_new_string("bench-api"));
        AUTOFREE char *body = rpc_xml_encode_call("session.login_with_password", p, &len);
        double until = now_s() + 30;
        while (client_post(&cl, body, len, NULL) != 200) {
            if (now_s() > until)
                die("xapid does not answer on %s", xml_url);
            usleep(50000);
        }
        AUTO(xv) *ref = rpc_call(&cl, false, "session.login_with_password", p);
        if (!xv_str(ref))
            die("login returned no session");
        session_ref = xstrdup(xv_str(ref));
    }

    /* create the VMs */
    double t0 = now_s();
    {
        int nt = opt.create_threads;
        pthread_t th[64];
        for (int i = 0; i < nt; i++)
            if (pthread_create(&th[i], NULL, create_worker, NULL) != 0)
                die("pthread_create failed");
        for (int i = 0; i < nt; i++)
            pthread_join(th[i], NULL);
    }
    double create_s = now_s() - t0;
    if (!first_vm)
        die("no VM created");

    /* the request bodies, and one validated call of each */
    AUTO(xv) *small_params = xv_new_array();
    xv_array_append(small_params, xv_new_string(session_ref));
    xv_array_append(small_params, xv_new_string(first_vm));
    AUTO(xv) *all_params = xv_new_array();
    xv_array_append(all_params, xv_new_string(session_ref));
    size_t vm_count[2] = {0, 0};
    for (int j = 0; j < 2; j++) {
        client c2;
        client_init(&c2, j ? json_url : xml_url, j);
        AUTO(xv) *ps = rpc_call(&c2, j, "VM.get_power_state", small_params);
        if (!xv_str(ps) || strcmp(xv_str(ps), "Halted") != 0)
            die("VM.get_power_state: expected Halted");
        AUTO(xv) *all = rpc_call(&c2, j, "VM.get_all_records", all_params);
        if (!all || all->kind != XV_STRUCT)
            die("VM.get_all_records: not a map");
        /* count the VMs created here (other VM records, if any, are not ours) */
        for (size_t i = 0; i < all->u.st.n; i++) {
            const char *nl = xv_struct_get_str(all->u.st.vals[i], "name_label");
            if (nl && strncmp(nl, "bench-vm-", 9) == 0)
                vm_count[j]++;
        }
        if (vm_count[j] != (size_t)opt.vms)
            die("VM.get_all_records returned %zu of the %d VMs", vm_count[j], opt.vms);
        client_free(&c2);
    }
    client_free(&cl);

    /* the bare server answers what xapid answers to VM.get_power_state */
    AUTO(xv) *halted = xv_new_string("Halted");
    bare_body = rpc_xml_encode_success(halted, &bare_body_len);
    unsigned bare_port;
    struct MHD_Daemon *bare = bare_start(&bare_port);
    snprintf(bare_url, sizeof(bare_url), "http://127.0.0.1:%u/", bare_port);

    size_t l_xs, l_xa, l_js, l_ja;
    char *xml_small = rpc_xml_encode_call("VM.get_power_state", small_params, &l_xs);
    char *xml_all = rpc_xml_encode_call("VM.get_all_records", all_params, &l_xa);
    char *json_small =
        rpc_json_encode_call(RPC_JSON_V2, "VM.get_power_state", small_params, 1, &l_js);
    char *json_all = rpc_json_encode_call(RPC_JSON_V2, "VM.get_all_records", all_params, 1, &l_ja);
    static const char xml_ok[] = "<value>Success</value>";
    static const char json_ok[] = "{\"jsonrpc\":\"2.0\",\"result\":";
    series all_series[] = {
        {"bare", "bare", "xml", "fixed-body (POST /)", bare_url, false, xml_small, l_xs, xml_small,
         l_xs, xml_ok},
        {"xml-small", "xapid", "xml", "VM.get_power_state", xml_url, false, xml_small, l_xs,
         xml_small, l_xs, xml_ok},
        {"json-small", "xapid", "json", "VM.get_power_state", json_url, true, json_small, l_js,
         json_small, l_js, json_ok},
        {"xml-all", "xapid", "xml", "VM.get_all_records", xml_url, false, xml_all, l_xa, xml_small,
         l_xs, xml_ok},
        {"json-all", "xapid", "json", "VM.get_all_records", json_url, true, json_all, l_ja,
         json_small, l_js, json_ok},
    };

    printf("bench-api: xapid %s, %d VMs created in %.2f s (%.0f/s, %d clients), %ld CPUs, "
           "load %s\n",
           opt.xapid, opt.vms, create_s, opt.vms / create_s, opt.create_threads, ncpu, load0);
    printf("each row: %.1f s or %ld calls (whichever first; small calls interleaved with the bare "
           "server in %d rounds), one keep-alive connection per client thread; latencies in ms\n\n",
           opt.duration, opt.max_calls, opt.rounds);
    printf("%-6s %-5s %-20s %5s %8s %10s %9s %9s %9s %6s %5s %9s\n", "target", "proto", "method",
           "conc", "calls", "calls/s", "p50", "p99", "mean", "errors", "reconn", "resp_B");

    /* The small-call series (bare, xml-small, json-small: the first three) run interleaved,
     * --rounds rounds of duration/rounds each, so that the ratio compares them under the same
     * background load; the get_all_records series run in one piece. */
    result rs[MAX_RESULTS];
    size_t nr = 0;
    const size_t nsmall = 3;
    for (int k = 0; k < opt.nconc; k++) {
        acc accs[3] = {{0}};
        for (int round = 0; round < opt.rounds; round++)
            for (size_t i = 0; i < nsmall; i++)
                if (selected(all_series[i].name))
                    measure(&all_series[i], opt.conc[k], opt.duration / opt.rounds,
                            opt.max_calls / opt.rounds, &accs[i]);
        for (size_t i = 0; i < nsmall; i++)
            if (selected(all_series[i].name) && nr < MAX_RESULTS) {
                rs[nr] = finish(&all_series[i], opt.conc[k], &accs[i]);
                print_row(&rs[nr++]);
            }
    }
    for (size_t i = nsmall; i < ARRAY_SIZE(all_series); i++) {
        if (!selected(all_series[i].name))
            continue;
        for (int k = 0; k < opt.nconc && nr < MAX_RESULTS; k++) {
            acc a = {0};
            measure(&all_series[i], opt.conc[k], opt.duration, opt.max_calls, &a);
            rs[nr] = finish(&all_series[i], opt.conc[k], &a);
            print_row(&rs[nr++]);
        }
    }
    MHD_stop_daemon(bare);
    stop_xapid();
    remove_tmp();

    /* ratios and verdicts */
    printf(
        "\nsmall call (VM.get_power_state) p50 latency, xapid / bare server (target <= 2.00x):\n");
    double worst_c1 = NAN;
    for (int k = 0; k < opt.nconc; k++) {
        const result *b = find(rs, nr, "bare", opt.conc[k]);
        for (int j = 0; j < 2; j++) {
            const result *x = find(rs, nr, j ? "json-small" : "xml-small", opt.conc[k]);
            if (!b || !x)
                continue;
            double ratio = x->p50_ms / b->p50_ms;
            printf("  conc %3d %-4s  %7.3f ms / %7.3f ms = %6.2fx  (calls/s bare/xapid %.2fx)%s\n",
                   opt.conc[k], j ? "json" : "xml", x->p50_ms, b->p50_ms, ratio, b->rate / x->rate,
                   ratio <= 2.0 ? "" : "  ABOVE TARGET");
            if (opt.conc[k] == 1 && (isnan(worst_c1) || ratio > worst_c1))
                worst_c1 = ratio;
        }
    }
    printf("VM.get_all_records of %d VMs, p50 (target < 50 ms):\n", opt.vms);
    double all_c1 = NAN;
    for (int k = 0; k < opt.nconc; k++)
        for (int j = 0; j < 2; j++) {
            const result *x = find(rs, nr, j ? "json-all" : "xml-all", opt.conc[k]);
            if (!x)
                continue;
            printf("  conc %3d %-4s  %9.3f ms%s\n", opt.conc[k], j ? "json" : "xml", x->p50_ms,
                   x->p50_ms < 50 ? "" : "  ABOVE TARGET");
            if (opt.conc[k] == 1 && (isnan(all_c1) || x->p50_ms > all_c1))
                all_c1 = x->p50_ms;
        }
    char load1[64];
    loadavg(load1);
    double total_s = now_s() - t_begin;
    printf("verdict (concurrency 1): small-call ratio %.2fx %s; get_all_records p50 %.3f ms %s\n",
           worst_c1,
           isnan(worst_c1)   ? "(not measured)"
           : worst_c1 <= 2.0 ? "MET"
                             : "NOT MET",
           all_c1,
           isnan(all_c1) ? "(not measured)"
           : all_c1 < 50 ? "MET"
                         : "NOT MET");
    printf("run took %.1f s; load %s at start, %s at end\n\n", total_s, load0, load1);

    long errors = 0;
    printf("{\"bench\":\"api\",\"vms\":%d,\"create_s\":", opt.vms);
    jnum(stdout, create_s);
    printf(",\"duration_s\":");
    jnum(stdout, opt.duration);
    printf(",\"rounds\":%d", opt.rounds);
    printf(
        ",\"max_calls\":%ld,\"cpus\":%ld,\"load_start\":\"%s\",\"load_end\":\"%s\",\"results\":[",
        opt.max_calls, ncpu, load0, load1);
    for (size_t i = 0; i < nr; i++) {
        const result *r = &rs[i];
        errors += r->errors;
        printf("%s{\"target\":\"%s\",\"proto\":\"%s\",\"method\":\"%s\",\"conc\":%d,\"calls\":%ld,"
               "\"calls_per_s\":",
               i ? "," : "", r->s->target, r->s->proto,
               strcmp(r->s->name, "bare") == 0 ? "fixed-body" : r->s->method, r->conc, r->calls);
        jnum(stdout, r->rate);
        printf(",\"p50_ms\":");
        jnum(stdout, r->p50_ms);
        printf(",\"p99_ms\":");
        jnum(stdout, r->p99_ms);
        printf(",\"mean_ms\":");
        jnum(stdout, r->mean_ms);
        printf(",\"errors\":%ld,\"reconnects\":%ld,\"resp_bytes\":%zu}", r->errors, r->reconnects,
               r->resp_bytes);
    }
    printf("],\"small_ratio_p50\":{");
    bool first = true;
    for (int j = 0; j < 2; j++)
        for (int k = 0; k < opt.nconc; k++) {
            const result *b = find(rs, nr, "bare", opt.conc[k]);
            const result *x = find(rs, nr, j ? "json-small" : "xml-small", opt.conc[k]);
            if (!b || !x)
                continue;
            printf("%s\"%s_c%d\":", first ? "" : ",", j ? "json" : "xml", opt.conc[k]);
            jnum(stdout, x->p50_ms / b->p50_ms);
            first = false;
        }
    printf("},\"small_ratio_c1\":");
    jnum(stdout, worst_c1);
    printf(",\"small_ratio_target_met\":%s,\"get_all_records_p50_ms_c1\":", isnan(worst_c1) ? "null"
                                                                            : worst_c1 <= 2.0
                                                                                ? "true"
                                                                                : "false");
    jnum(stdout, all_c1);
    printf(",\"get_all_records_target_met\":%s,\"errors\":%ld,\"total_s\":",
           isnan(all_c1) ? "null"
           : all_c1 < 50 ? "true"
                         : "false",
           errors);
    jnum(stdout, total_s);
    printf("}\n");

    free(xml_small);
    free(xml_all);
    free(json_small);
    free(json_all);
    free(bare_body);
    free(session_ref);
    free(first_vm);
    curl_slist_free_all(hdr_xml);
    curl_slist_free_all(hdr_json);
    curl_global_cleanup();
    return errors ? 1 : 0;
}
