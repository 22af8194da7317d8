/* nuvem-vmm: one process per VM. Reads a JSON config, builds the KVM machine, then serves the
 * control socket (commands, events) and the console streams from a poll loop that never
 * blocks on a client, while one thread per vCPU runs the guest. */
#define _GNU_SOURCE
#include "ctl.h"
#include "live.h"
#include "log.h"
#include "mem.h"
#include "platform.h"
#include "sandbox.h"
#include "sbuf.h"
#include "snapshot.h"
#include "util.h"
#include "virtio_blk.h"
#include "virtio_net.h"
#include "vmm.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define VMM_VERSION    "0.1"
#define MAX_CLIENTS    64
#define CLIENT_OUT_MAX (1024 * 1024) /* a control client that reads nothing is dropped */
#define READ_CHUNK     4096

enum exit_code { EXIT_SHUTDOWN = 0, EXIT_ERROR = 1, EXIT_REBOOT = 2, EXIT_CRASH = 3 };

typedef enum client_kind { CLIENT_CONTROL, CLIENT_CONSOLE } client_kind;

typedef struct client {
    int fd;
    client_kind kind;
    sbuf in;
    bool discarding; /* skipping the rest of an oversized line */
    sbuf out;
    size_t out_off;
    uint64_t serial_seq; /* console: next output byte to send */
    bool closing;        /* close once out is flushed */
    struct client *next;
} client;

typedef struct server {
    vmm *v;
    int ctl_fd, con_fd, sig_fd;
    client *clients;
    unsigned nclients;
    bool quit;
    int exit_code;
    const char *status;     /* running, paused, crashed, shutdown */
    const char *quit_event; /* reason of the shutdown event sent when the loop ends */
    const char *restored;   /* --restore PATH: announced to the first control client */
    bool restore_announced;
} server;

/* ---- clients ---- */

static void client_free(client *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    sbuf_release(&c->in);
    sbuf_release(&c->out);
    free(c);
}

static void client_send(client *c, const char *s)
{
    if (c->closing)
        return;
    if (c->out.len - c->out_off > CLIENT_OUT_MAX) {
        log_warn("control client not reading; dropping it");
        c->closing = true;
        c->out.len = c->out_off = 0;
        return;
    }
    sbuf_puts(&c->out, s);
}

static void broadcast_event(server *s, const char *name, xv *data)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    AUTOFREE char *line = ctl_format_event(name, data, tv.tv_sec, tv.tv_usec);
    log_info("event: %.*s", (int)strlen(line) - 1, line);
    for (client *c = s->clients; c; c = c->next)
        if (c->kind == CLIENT_CONTROL)
            client_send(c, line);
}

static xv *reason_data(const char *reason)
{
    xv *d = xv_new_struct();
    xv_struct_set(d, "reason", xv_new_string(reason));
    return d;
}

/* Writes pending bytes: buffered replies first, then (console) serial output. Returns false
 * when the client is gone. */
static bool client_flush(server *s, client *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR;
        c->out_off += (size_t)n;
    }
    c->out.len = c->out_off = 0;
    if (c->kind == CLIENT_CONSOLE) {
        char buf[READ_CHUNK];
        for (;;) {
            uint64_t seq = c->serial_seq;
            size_t n = serial_read_output(s->v->serial, &seq, buf, sizeof(buf), NULL);
            if (!n)
                break;
            ssize_t w = send(c->fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w < 0)
                return errno == EAGAIN || errno == EINTR;
            c->serial_seq = seq - n + (uint64_t)w;
            if ((size_t)w < n)
                break;
        }
    }
    return !(c->closing && c->out.len == 0);
}

static bool client_wants_out(server *s, client *c)
{
    if (c->out_off < c->out.len)
        return true;
    return c->kind == CLIENT_CONSOLE && c->serial_seq < serial_output_seq(s->v->serial);
}

/* ---- commands ---- */

typedef xerr *(*cmd_fn)(server *s, client *c, const xv *args, xv **ret);

static xerr *bad_state(server *s, const char *expected)
{
    const char *name = s->v->cfg->name ? s->v->cfg->name : "vm";
    return xerr_new("VM_BAD_POWER_STATE", name, expected, s->status);
}

static xerr *cmd_query_status(server *s, client *c, const xv *args, xv **ret)
{
    vmm *v = s->v;
    xv *r = xv_new_struct();
    xv_struct_set(r, "status", xv_new_string(s->status));
    xv_struct_set(r, "running", xv_new_bool(strcmp(s->status, "running") == 0));
    xv_struct_set(r, "vcpus", xv_new_int(v->vcpu_target)); /* set-vcpus moves it */
    live_add_status(v, r);
    xv_struct_set(r, "memory_mib", xv_new_int((int64_t)v->cfg->memory_mib));
    xv_struct_set(r, "boots", xv_new_int((int64_t)v->boots));
    xv_struct_set(r, "uptime", xv_new_float(now_monotonic() - v->boot_time));
    xv_struct_set(r, "pid", xv_new_int(getpid()));
    *ret = r;
    return NULL;
}

static xerr *cmd_pause(server *s, client *c, const xv *args, xv **ret)
{
    if (strcmp(s->status, "running") != 0)
        return bad_state(s, "running");
    machine_pause(s->v);
    s->status = "paused";
    broadcast_event(s, "paused", NULL);
    return NULL;
}

static xerr *cmd_resume(server *s, client *c, const xv *args, xv **ret)
{
    if (strcmp(s->status, "paused") != 0)
        return bad_state(s, "paused");
    machine_resume(s->v);
    s->status = "running";
    broadcast_event(s, "resumed", NULL);
    return NULL;
}

static xerr *cmd_powerdown(server *s, client *c, const xv *args, xv **ret)
{
    if (strcmp(s->status, "running") != 0 && strcmp(s->status, "paused") != 0)
        return bad_state(s, "running");
    machine_platform_request(s->v, EVENT_POWERDOWN);
    return NULL;
}

static xerr *cmd_quit(server *s, client *c, const xv *args, xv **ret)
{
    s->quit = true;
    s->quit_event = "quit";
    s->exit_code = EXIT_SHUTDOWN;
    return NULL;
}

static xerr *restart_machine(server *s)
{
    vmm *v = s->v;
    bool was_paused = v->paused;
    machine_destroy(v);
    xerr *e = machine_create(v);
    if (!e)
        e = machine_start(v);
    if (e) {
        machine_destroy(v);
        s->status = "crashed";
        return e;
    }
    s->status = was_paused ? "paused" : "running";
    return NULL;
}

static xerr *cmd_reset(server *s, client *c, const xv *args, xv **ret)
{
    broadcast_event(s, "reset", reason_data("host"));
    xerr *e = restart_machine(s);
    if (e)
        return e;
    broadcast_event(s, strcmp(s->status, "paused") == 0 ? "paused" : "running", NULL);
    return NULL;
}

static int64_t rss_bytes(void)
{
    AUTOFREE char *data = NULL;
    size_t len;
    if (read_file("/proc/self/statm", &data, &len) < 0)
        return -1;
    long long pages_total, pages_rss;
    if (sscanf(data, "%lld %lld", &pages_total, &pages_rss) != 2)
        return -1;
    return pages_rss * sysconf(_SC_PAGESIZE);
}

/* KSM's view of this process (/proc/self/ksm_stat, Linux 6.1+): pages of guest RAM merged with
 * identical pages elsewhere, and the net bytes saved. -1 where the kernel does not say. */
static xv *ksm_stats(const vmm *v)
{
    xv *k = xv_new_struct();
    xv_struct_set(k, "mergeable", xv_new_bool(v->cfg->mem_merge));
    long long merging = -1, zero = -1, profit = -1;
    FILE *f = fopen("/proc/self/ksm_stat", "re");
    if (f) {
        char line[128];
        while (fgets(line, sizeof(line), f)) {
            sscanf(line, "ksm_merging_pages %lld", &merging);
            sscanf(line, "ksm_zero_pages %lld", &zero);
            sscanf(line, "ksm_process_profit %lld", &profit);
        }
        fclose(f);
    }
    xv_struct_set(k, "merging_pages", xv_new_int(merging));
    xv_struct_set(k, "zero_pages", xv_new_int(zero));
    xv_struct_set(k, "profit_bytes", xv_new_int(profit));
    return k;
}

static xerr *cmd_stats(server *s, client *c, const xv *args, xv **ret)
{
    vmm *v = s->v;
    xv *r = xv_new_struct();
    int64_t rss = rss_bytes(), guest = machine_guest_resident(v);
    xv_struct_set(r, "rss_bytes", xv_new_int(rss));
    /* What the VMM itself costs: its RSS less the guest RAM it holds. */
    xv_struct_set(r, "guest_resident_bytes", xv_new_int(guest));
    xv_struct_set(r, "overhead_bytes", xv_new_int(rss >= 0 && guest >= 0 ? rss - guest : -1));
    xv_struct_set(r, "memory_bytes", xv_new_int((int64_t)(v->cfg->memory_mib << 20)));
    xv_struct_set(r, "uptime", xv_new_float(now_monotonic() - v->boot_time));
    xv_struct_set(r, "boots", xv_new_int((int64_t)v->boots));
    xv_struct_set(r, "ksm", ksm_stats(v));
    xv *cpus = xv_new_array();
    uint64_t total = 0;
    double cpu_total = 0;
    for (unsigned i = 0; v->vcpus && i < v->nvcpus; i++) {
        vcpu *vc = &v->vcpus[i];
        xv *o = xv_new_struct();
        double t = machine_vcpu_time(vc);
        uint64_t exits = atomic_load(&vc->exits);
        total += exits;
        cpu_total += t > 0 ? t : 0;
        xv_struct_set(o, "id", xv_new_int(i));
        xv_struct_set(o, "cpu_time", xv_new_float(t));
        xv_struct_set(o, "exits", xv_new_int((int64_t)exits));
        xv_struct_set(o, "io_exits", xv_new_int((int64_t)atomic_load(&vc->exits_io)));
        xv_struct_set(o, "mmio_exits", xv_new_int((int64_t)atomic_load(&vc->exits_mmio)));
        xv_struct_set(o, "other_exits", xv_new_int((int64_t)atomic_load(&vc->exits_other)));
        xv_array_append(cpus, o);
    }
    xv_struct_set(r, "vcpus", cpus);
    xv_struct_set(r, "exits", xv_new_int((int64_t)total));
    xv_struct_set(r, "vcpu_time", xv_new_float(cpu_total));
    xv_struct_set(r, "pio_unhandled", xv_new_int((int64_t)atomic_load(&v->pio_unhandled)));
    xv_struct_set(r, "mmio_unhandled", xv_new_int((int64_t)atomic_load(&v->mmio_unhandled)));
    xv_struct_set(r, "emulation_fixups", xv_new_int((int64_t)atomic_load(&v->emulation_fixups)));
    uint64_t out, in;
    serial_counters(v->serial, &out, &in);
    xv *ser = xv_new_struct();
    xv_struct_set(ser, "bytes_out", xv_new_int((int64_t)out));
    xv_struct_set(ser, "bytes_in", xv_new_int((int64_t)in));
    xv_struct_set(r, "serial", ser);
    xv *disks = xv_new_array();
    for (unsigned i = 0; i < v->ndisks; i++) {
        virtio_blk_stats bs;
        virtio_blk_get_stats(v->disks[i], &bs);
        xv *o = xv_new_struct();
        xv_struct_set(o, "reads", xv_new_int((int64_t)bs.reads));
        xv_struct_set(o, "writes", xv_new_int((int64_t)bs.writes));
        xv_struct_set(o, "flushes", xv_new_int((int64_t)bs.flushes));
        xv_struct_set(o, "read_bytes", xv_new_int((int64_t)bs.read_bytes));
        xv_struct_set(o, "write_bytes", xv_new_int((int64_t)bs.write_bytes));
        xv_struct_set(o, "errors", xv_new_int((int64_t)bs.errors));
        xv_struct_set(o, "discards", xv_new_int((int64_t)bs.discards));
        xv_struct_set(o, "write_zeroes", xv_new_int((int64_t)bs.write_zeroes));
        xv_struct_set(o, "capacity", xv_new_int((int64_t)virtio_blk_size(v->disks[i])));
        xv_struct_set(o, "format", xv_new_string(virtio_blk_format(v->disks[i])));
        xv_array_append(disks, o);
    }
    xv_struct_set(r, "disks", disks);
    xv *nics = xv_new_array();
    for (unsigned i = 0; i < v->nnics; i++) {
        virtio_net_stats ns;
        virtio_net_get_stats(v->nics[i], &ns);
        xv *o = xv_new_struct();
        xv_struct_set(o, "tx_packets", xv_new_int((int64_t)ns.tx_packets));
        xv_struct_set(o, "tx_bytes", xv_new_int((int64_t)ns.tx_bytes));
        xv_struct_set(o, "tx_dropped", xv_new_int((int64_t)ns.tx_dropped));
        xv_struct_set(o, "rx_packets", xv_new_int((int64_t)ns.rx_packets));
        xv_struct_set(o, "rx_bytes", xv_new_int((int64_t)ns.rx_bytes));
        xv_struct_set(o, "rx_dropped", xv_new_int((int64_t)ns.rx_dropped));
        xv_array_append(nics, o);
    }
    xv_struct_set(r, "nics", nics);
    live_add_stats(v, r);
    *ret = r;
    return NULL;
}

static xerr *cmd_console(server *s, client *c, const xv *args, xv **ret)
{
    bool history = false;
    xerr *e = ctl_arg_bool(args, "history", &history);
    if (e)
        return e;
    /* After this reply the connection carries raw serial bytes both ways. */
    c->kind = CLIENT_CONSOLE;
    c->serial_seq = history ? 0 : serial_output_seq(s->v->serial);
    return NULL;
}

static xerr *cmd_send_console(server *s, client *c, const xv *args, xv **ret)
{
    const char *data = NULL;
    xerr *e = ctl_arg_string(args, "data", &data);
    if (e)
        return e;
    if (!data)
        return xerr_new("INVALID_VALUE", "data", "missing");
    size_t n = serial_push_input(s->v->serial, data, strlen(data));
    xv *r = xv_new_struct();
    xv_struct_set(r, "queued", xv_new_int((int64_t)n));
    *ret = r;
    return NULL;
}

/* resize-disk {index, size}: grows disk `index` to `size` bytes while the guest runs. */
static xerr *cmd_resize_disk(server *s, client *c, const xv *args, xv **ret)
{
    int64_t index = -1, size = -1;
    xerr *e = ctl_arg_int(args, "index", &index);
    if (!e)
        e = ctl_arg_int(args, "size", &size);
    if (e)
        return e;
    if (index < 0 || (uint64_t)index >= s->v->ndisks) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)index);
        return xerr_new("INVALID_VALUE", "index", index < 0 ? "missing" : "no such disk", buf);
    }
    if (size < 0)
        return xerr_new("INVALID_VALUE", "size", "missing");
    e = virtio_blk_resize(s->v->disks[index], (uint64_t)size);
    if (e)
        return e;
    xv *r = xv_new_struct();
    xv_struct_set(r, "size", xv_new_int((int64_t)virtio_blk_size(s->v->disks[index])));
    *ret = r;
    return NULL;
}

/* save {path}: pauses the VM (if running), writes its whole state to a new file at path,
 * fsyncs it and leaves the VM paused (then `quit`, or `resume` to go on). The file is opened
 * before the pause: a path that exists or cannot be created changes nothing. A failure while
 * writing removes the partial file and leaves the VM paused. */
static xerr *cmd_save(server *s, client *c, const xv *args, xv **ret)
{
    vmm *v = s->v;
    const char *path = NULL;
    xerr *e = ctl_arg_string(args, "path", &path);
    if (e)
        return e;
    if (!path || !*path)
        return xerr_new("INVALID_VALUE", "path", "missing");
    if (strcmp(s->status, "running") != 0 && strcmp(s->status, "paused") != 0)
        return bad_state(s, "running");
    double t0 = now_monotonic();
    /* O_EXCL: never overwrite; the sandbox allows openat (see README.md, Sandbox). */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return xerr_new("INVALID_VALUE", "path", errno == EEXIST ? "exists" : strerror(errno));
    if (strcmp(s->status, "running") == 0) {
        machine_pause(v);
        s->status = "paused";
        broadcast_event(s, "paused", NULL);
    }
    uint64_t bytes = 0;
    e = snapshot_save(v, fd, &bytes);
    if (!e && fsync(fd) < 0)
        e = xerr_internal("save: fsync: %s", strerror(errno));
    if (close(fd) < 0 && !e)
        e = xerr_internal("save: close: %s", strerror(errno));
    if (e) {
        unlink(path);
        return e;
    }
    /* The new name durable too: fsync the directory. */
    AUTOFREE char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir ? 1 : 0] = 0;
    AUTOCLOSE int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0)
        fsync(dfd);
    double secs = now_monotonic() - t0;
    log_info("saved to %s: %llu bytes in %.3f s", path, (unsigned long long)bytes, secs);
    xv *r = xv_new_struct();
    xv_struct_set(r, "bytes", xv_new_int((int64_t)bytes));
    xv_struct_set(r, "seconds", xv_new_float(secs));
    xv_struct_set(r, "path", xv_new_string(path));
    *ret = r;
    return NULL;
}

static xerr *cmd_query_commands(server *s, client *c, const xv *args, xv **ret);

/* Live features (live.c): balloon, vCPU hot-plug, guest agent. */
#define LIVE_CMD(name, fn)                                                                         \
    static xerr *name(server *s, client *c, const xv *args, xv **ret)                              \
    {                                                                                              \
        return fn(s->v, args, ret);                                                                \
    }
LIVE_CMD(cmd_set_balloon_target, live_set_balloon_target)
LIVE_CMD(cmd_query_balloon, live_query_balloon)
LIVE_CMD(cmd_set_vcpus, live_set_vcpus)
LIVE_CMD(cmd_query_guest, live_query_guest)
LIVE_CMD(cmd_guest_set, live_guest_set)

static void live_emit(void *opaque, const char *event, xv *data)
{
    broadcast_event(opaque, event, data);
}

static const struct {
    const char *name;
    cmd_fn fn;
} commands[] = {
    {"query-status", cmd_query_status},
    {"pause", cmd_pause},
    {"resume", cmd_resume},
    {"cont", cmd_resume},
    {"powerdown", cmd_powerdown},
    {"quit", cmd_quit},
    {"reset", cmd_reset},
    {"stats", cmd_stats},
    {"console", cmd_console},
    {"send-console", cmd_send_console},
    {"query-commands", cmd_query_commands},
    {"save", cmd_save},
    {"resize-disk", cmd_resize_disk},
    {"set-balloon-target", cmd_set_balloon_target},
    {"query-balloon", cmd_query_balloon},
    {"set-vcpus", cmd_set_vcpus},
    {"query-guest", cmd_query_guest},
    {"guest-set", cmd_guest_set},
};

static xerr *cmd_query_commands(server *s, client *c, const xv *args, xv **ret)
{
    xv *a = xv_new_array();
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        xv_array_append(a, xv_new_string(commands[i].name));
    *ret = a;
    return NULL;
}

static void handle_line(server *s, client *c, const char *line, size_t len)
{
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    if (!len)
        return;
    ctl_request req;
    AUTO(xerr) *e = ctl_parse_request(line, len, &req);
    xv *ret = NULL;
    if (!e) {
        cmd_fn fn = NULL;
        for (size_t i = 0; i < ARRAY_SIZE(commands) && !fn; i++)
            if (strcmp(commands[i].name, req.execute) == 0)
                fn = commands[i].fn;
        if (!fn)
            e = xerr_new("MESSAGE_METHOD_UNKNOWN", req.execute);
        else
            e = fn(s, c, req.arguments, &ret);
    }
    AUTOFREE char *reply = e ? ctl_format_error(req.id, e) : ctl_format_return(req.id, ret);
    if (e)
        xv_free(ret);
    client_send(c, reply);
    ctl_request_release(&req);
}

/* Reads what the client sent: control lines, or console input for the guest. Returns false
 * when the client is gone. */
static bool client_read(server *s, client *c, short revents)
{
    char buf[READ_CHUNK];
    size_t want = sizeof(buf);
    if (c->kind == CLIENT_CONSOLE) {
        want = serial_input_space(s->v->serial);
        if (want > sizeof(buf))
            want = sizeof(buf);
        if (!want) /* input waits for the guest, unless the client is gone (else we spin) */
            return !(revents & (POLLHUP | POLLERR));
    }
    ssize_t n = recv(c->fd, buf, want, MSG_DONTWAIT);
    if (n == 0)
        return false;
    if (n < 0)
        return errno == EAGAIN || errno == EINTR;
    if (c->kind == CLIENT_CONSOLE) {
        serial_push_input(s->v->serial, buf, (size_t)n);
        return true;
    }
    sbuf_append(&c->in, buf, (size_t)n);
    size_t start = 0;
    while (c->kind == CLIENT_CONTROL && !c->closing) {
        char *nl = memchr(c->in.data + start, '\n', c->in.len - start);
        if (!nl)
            break;
        size_t len = (size_t)(nl - (c->in.data + start));
        if (c->discarding)
            c->discarding = false;
        else
            handle_line(s, c, c->in.data + start, len);
        start += len + 1;
    }
    if (c->kind == CLIENT_CONSOLE && start < c->in.len) {
        /* Bytes after `console` in the same read belong to the guest. */
        serial_push_input(s->v->serial, c->in.data + start, c->in.len - start);
        start = c->in.len;
    }
    memmove(c->in.data, c->in.data + start, c->in.len - start);
    c->in.len -= start;
    if (c->in.len > CTL_MAX_LINE) {
        if (!c->discarding) {
            AUTO(xerr) *e = xerr_new("PROTOCOL_ERROR", "line too long");
            AUTOFREE char *reply = ctl_format_error(NULL, e);
            client_send(c, reply);
        }
        c->discarding = true;
        c->in.len = 0;
    }
    if (c->in.data)
        c->in.data[c->in.len] = 0;
    return true;
}

static void accept_client(server *s, int lfd, client_kind kind)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (s->nclients >= MAX_CLIENTS) {
        log_warn("too many clients; refusing one");
        close(fd);
        return;
    }
    client *c = xcalloc(1, sizeof(*c));
    c->fd = fd;
    c->kind = kind;
    c->next = s->clients;
    s->clients = c;
    s->nclients++;
    if (kind == CLIENT_CONTROL) {
        vmm *v = s->v;
        xv *g = xv_new_struct(), *body = xv_new_struct();
        xv_struct_set(body, "name", xv_new_string("nuvem-vmm"));
        xv_struct_set(body, "version", xv_new_string(VMM_VERSION));
        if (v->cfg->name)
            xv_struct_set(body, "vm", xv_new_string(v->cfg->name));
        if (v->cfg->uuid)
            xv_struct_set(body, "uuid", xv_new_string(v->cfg->uuid));
        xv_struct_set(body, "pid", xv_new_int(getpid()));
        xv_struct_set(body, "status", xv_new_string(s->status));
        if (s->restored)
            xv_struct_set(body, "restored", xv_new_string(s->restored));
        xv_struct_set(g, "greeting", body);
        AUTOFREE char *json = xv_to_json(g);
        xv_free(g);
        AUTOFREE char *line = xasprintf("%s\n", json);
        client_send(c, line);
        if (s->restored && !s->restore_announced) {
            /* The restore happened before anyone could listen: tell the first client. */
            s->restore_announced = true;
            xv *d = xv_new_struct();
            xv_struct_set(d, "path", xv_new_string(s->restored));
            broadcast_event(s, "restored", d);
            broadcast_event(s, s->status, NULL); /* running or paused, as after a start */
        }
    } else {
        c->serial_seq = 0; /* console socket readers get the retained history first */
    }
}

static void drop_closed_clients(server *s, client **dead, size_t ndead)
{
    for (size_t i = 0; i < ndead; i++) {
        for (client **pp = &s->clients; *pp; pp = &(*pp)->next) {
            if (*pp == dead[i]) {
                *pp = dead[i]->next;
                client_free(dead[i]);
                s->nclients--;
                break;
            }
        }
    }
}

/* ---- guest-initiated stops ---- */

static void handle_request(server *s)
{
    vmm *v = s->v;
    pthread_mutex_lock(&v->lock);
    enum vmm_request r = v->request;
    char reason[sizeof(v->request_reason)];
    memcpy(reason, v->request_reason, sizeof(reason));
    pthread_mutex_unlock(&v->lock);
    if (r == VMM_REQ_NONE || strcmp(s->status, "crashed") == 0)
        return;
    xerr *e = NULL;
    switch (r) {
    case VMM_REQ_POWEROFF:
        broadcast_event(s, "shutdown", reason_data(reason));
        s->status = "shutdown";
        s->quit = true;
        s->exit_code = EXIT_SHUTDOWN;
        break;
    case VMM_REQ_REBOOT:
        broadcast_event(s, "reboot", reason_data(reason));
        if (v->cfg->on_reboot == VMM_ON_REBOOT_EXIT) {
            s->status = "shutdown";
            s->quit = true;
            s->exit_code = EXIT_REBOOT;
        } else if (!(e = restart_machine(s))) {
            broadcast_event(s, "running", NULL);
        }
        break;
    case VMM_REQ_CRASH:
        broadcast_event(s, "crash", reason_data(reason));
        if (v->cfg->on_crash == VMM_ON_CRASH_EXIT) {
            s->status = "crashed";
            s->quit = true;
            s->exit_code = EXIT_CRASH;
        } else if (v->cfg->on_crash == VMM_ON_CRASH_PAUSE) {
            s->status = "crashed"; /* vCPUs stay parked; quit or reset continue */
        } else if (!(e = restart_machine(s))) {
            broadcast_event(s, "running", NULL);
        }
        break;
    default:
        break;
    }
    if (e) {
        log_err("restart failed");
        broadcast_event(s, "crash", reason_data("restart-failed"));
        xerr_free(e);
        s->quit = true;
        s->exit_code = EXIT_CRASH;
    }
}

/* ---- sockets ---- */

static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    AUTOFREE char *tmp = xasprintf("%s.%d.tmp", path, (int)getpid());
    if (strlen(tmp) >= sizeof(sa.sun_path)) {
        log_err("socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    /* A live VMM answers on a stale-looking path: never steal its socket. */
    AUTOCLOSE int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        log_err("%s is in use by another process", path);
        return -1;
    }
    AUTOCLOSE int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    /* Bind a temporary name and rename it once listening, so the path appears only when a
     * client can connect. */
    strcpy(sa.sun_path, tmp);
    unlink(tmp);
    mode_t old = umask(0077);
    int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (r < 0 || listen(fd, 64) < 0 || rename(tmp, path) < 0) {
        log_err("bind/listen %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return TAKE_FD(fd);
}

static int read_whole(const char *what, const char *path, uint8_t **ret, size_t *ret_len)
{
    char *data;
    int r = read_file(path, &data, ret_len);
    if (r < 0) {
        log_err("cannot read %s %s: %s", what, path, strerror(-r));
        return r;
    }
    *ret = (uint8_t *)data;
    return 0;
}

/* ---- main loop ---- */

static void run_loop(server *s)
{
    vmm *v = s->v;
    struct pollfd *pfd = xcalloc(4 + MAX_CLIENTS, sizeof(*pfd));
    client **map = xcalloc(MAX_CLIENTS, sizeof(*map));
    client *dead[MAX_CLIENTS];
    while (!s->quit) {
        /* Live events first: what they queue for clients is flushed in this round. */
        int live_ms = live_poll(v, live_emit, s);
        size_t n = 0;
        pfd[n++] = (struct pollfd){.fd = s->sig_fd, .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = v->wake_fd, .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = s->ctl_fd, .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = s->con_fd, .events = s->con_fd >= 0 ? POLLIN : 0};
        bool input_space = serial_input_space(v->serial) > 0;
        size_t nc = 0;
        for (client *c = s->clients; c && nc < MAX_CLIENTS; c = c->next) {
            short ev = 0;
            if (!c->closing && (c->kind == CLIENT_CONTROL || input_space))
                ev |= POLLIN;
            if (client_wants_out(s, c))
                ev |= POLLOUT;
            map[nc++] = c;
            pfd[n++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        /* Input waits for guest space; a serial notify (wake_fd) re-arms it. Coalesced
         * live events (balloon, vcpus, guest-data) wait at most until they are due. */
        int timeout = input_space ? -1 : 100;
        if (live_ms >= 0 && (timeout < 0 || live_ms < timeout))
            timeout = live_ms;
        int r = poll(pfd, n, timeout);
        if (r < 0 && errno != EINTR) {
            log_err("poll: %s", strerror(errno));
            break;
        }
        if (pfd[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(s->sig_fd, &si, sizeof(si)) == sizeof(si)) {
                log_info("signal %u: stopping", si.ssi_signo);
                s->quit_event = "signal";
                s->quit = true;
                s->exit_code = EXIT_SHUTDOWN;
            }
        }
        if (pfd[1].revents & POLLIN) {
            uint64_t cnt;
            ssize_t rr = read(v->wake_fd, &cnt, sizeof(cnt));
            (void)rr;
            handle_request(s);
        }
        if (pfd[2].revents & POLLIN)
            accept_client(s, s->ctl_fd, CLIENT_CONTROL);
        if (pfd[3].revents & POLLIN)
            accept_client(s, s->con_fd, CLIENT_CONSOLE);
        size_t ndead = 0;
        for (size_t i = 0; i < nc; i++) {
            client *c = map[i];
            short re = pfd[4 + i].revents;
            bool alive = true;
            if (re & (POLLIN | POLLHUP | POLLERR))
                alive = client_read(s, c, re);
            if (alive)
                alive = client_flush(s, c);
            if (!alive)
                dead[ndead++] = c;
        }
        drop_closed_clients(s, dead, ndead);
        /* Console output produced since: push it to every console reader. */
        ndead = 0;
        for (client *c = s->clients; c; c = c->next)
            if (c->kind == CLIENT_CONSOLE && !client_flush(s, c))
                dead[ndead++] = c;
        drop_closed_clients(s, dead, ndead);
    }
    if (s->quit_event) /* after the reply to `quit` */
        broadcast_event(s, "shutdown", reason_data(s->quit_event));
    /* Give clients the last events and console output, bounded in time. */
    double deadline = now_monotonic() + 2.0;
    while (now_monotonic() < deadline) {
        size_t n = 0;
        size_t nc = 0;
        for (client *c = s->clients; c && nc < MAX_CLIENTS; c = c->next) {
            if (!client_wants_out(s, c))
                continue;
            map[nc++] = c;
            pfd[n++] = (struct pollfd){.fd = c->fd, .events = POLLOUT};
        }
        if (!n)
            break;
        if (poll(pfd, n, 100) < 0 && errno != EINTR)
            break;
        size_t ndead = 0;
        for (size_t i = 0; i < nc; i++)
            if ((pfd[i].revents & (POLLERR | POLLHUP)) || !client_flush(s, map[i]))
                dead[ndead++] = map[i];
        drop_closed_clients(s, dead, ndead);
    }
    free(pfd);
    free(map);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: nuvem-vmm [--log-level debug|info|warn|error] [--check] [--restore FILE]\n"
               "                 CONFIG.json\n"
               "Runs one VM described by CONFIG.json; see hypervisor/README.md. --restore\n"
               "continues a VM saved to FILE (control command `save`) with the same config.\n"
               "Exit status: 0 shutdown/quit, 1 error, 2 guest reboot (on_reboot=exit),\n"
               "3 guest crash (on_crash=exit).\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"log-level", required_argument, NULL, 'l'},
        {"check", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"restore", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    bool check_only = false;
    const char *restore_path = NULL;
    int o;
    log_set_level(LOG_LVL_INFO);
    while ((o = getopt_long(argc, argv, "l:chVr:", opts, NULL)) != -1) {
        switch (o) {
        case 'r':
            restore_path = optarg;
            break;
        case 'l':
            if (!strcmp(optarg, "debug"))
                log_set_level(LOG_LVL_DEBUG);
            else if (!strcmp(optarg, "info"))
                log_set_level(LOG_LVL_INFO);
            else if (!strcmp(optarg, "warn"))
                log_set_level(LOG_LVL_WARN);
            else if (!strcmp(optarg, "error"))
                log_set_level(LOG_LVL_ERR);
            else {
                usage(stderr);
                return EXIT_ERROR;
            }
            break;
        case 'c':
            check_only = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("nuvem-vmm " VMM_VERSION "\n");
            return 0;
        default:
            usage(stderr);
            return EXIT_ERROR;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return EXIT_ERROR;
    }
    AUTOFREE char *text = NULL;
    size_t text_len;
    int r = read_file(argv[optind], &text, &text_len);
    if (r < 0) {
        log_err("cannot read config %s: %s", argv[optind], strerror(-r));
        return EXIT_ERROR;
    }
    xerr *perr = NULL;
    AUTO(vmm_config) *cfg = vmm_config_parse(text, text_len, &perr);
    if (!cfg) {
        log_err("bad config: %s %s %s", perr->code, perr->nparams > 0 ? perr->params[0] : "",
                perr->nparams > 1 ? perr->params[1] : "");
        xerr_free(perr);
        return EXIT_ERROR;
    }
    if (check_only)
        return 0;

    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    vmm v = {.cfg = cfg, .kvm_fd = -1, .vm_fd = -1, .serial_log_fd = -1, .nvcpus = cfg->vcpus_max};
    pthread_mutex_init(&v.lock, NULL);
    pthread_cond_init(&v.cond, NULL);
    server s = {.v = &v, .ctl_fd = -1, .con_fd = -1, .sig_fd = -1, .exit_code = EXIT_ERROR};
    int rc = EXIT_ERROR;
    v.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s.sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (v.wake_fd < 0 || s.sig_fd < 0) {
        log_err("eventfd/signalfd: %s", strerror(errno));
        goto out;
    }
    if (read_whole("kernel", cfg->kernel, &v.kernel_image, &v.kernel_len) < 0 ||
        (cfg->initrd && read_whole("initrd", cfg->initrd, &v.initrd_image, &v.initrd_len) < 0))
        goto out;
    if (cfg->serial_log) {
        v.serial_log_fd = open(cfg->serial_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (v.serial_log_fd < 0) {
            log_err("cannot open serial log %s: %s", cfg->serial_log, strerror(errno));
            goto out;
        }
    }
    v.serial = serial_new(&vmm_serial_ops, &v, v.serial_log_fd, cfg->serial_log_limit);
    s.ctl_fd = listen_unix(cfg->control_socket);
    if (s.ctl_fd < 0)
        goto out;
    if (cfg->console_socket && (s.con_fd = listen_unix(cfg->console_socket)) < 0)
        goto out;
    /* Disk images are opened (and locked) before the sandbox: it allows no new files. */
    for (unsigned i = 0; i < cfg->ndisks; i++) {
        static const char *const formats[] = {"raw", "vhd", "auto"};
        xerr *de = virtio_blk_open_format(i, cfg->disks[i].path, formats[cfg->disks[i].format],
                                          cfg->disks[i].readonly, &v.disks[i]);
        if (de) {
            /* An image that cannot be used is a configuration error (exit 1, no VM). */
            log_err("bad config: %s %s %s (%s)", de->code, de->nparams > 0 ? de->params[0] : "",
                    de->nparams > 1 ? de->params[1] : "", cfg->disks[i].path);
            xerr_free(de);
            goto out;
        }
        v.ndisks++;
        v.vdevs[v.nvdevs++] = virtio_blk_dev(v.disks[i]);
    }
    for (unsigned i = 0; i < cfg->nnics; i++) {
        xerr *ne = virtio_net_open(i, cfg->nics[i].tap, cfg->nics[i].mac, &v.nics[i]);
        if (ne) {
            log_err("bad config: %s %s %s", ne->code, ne->nparams > 0 ? ne->params[0] : "",
                    ne->nparams > 1 ? ne->params[1] : "");
            xerr_free(ne);
            goto out;
        }
        v.nnics++;
        v.vdevs[v.nvdevs++] = virtio_net_dev(v.nics[i]);
    }
    live_setup(&v); /* balloon and agent devices after the disks and NICs */
    v.paused = cfg->start_paused;
    if (restore_path) {
        /* Restore reads the file before the sandbox and before any device thread runs; the
         * machine is built and loaded here, and only started below. */
        AUTO(snapshot_file) *sf = NULL;
        xerr *re = snapshot_open(restore_path, &v, &sf);
        if (!re)
            re = machine_create(&v);
        if (!re)
            re = snapshot_restore(sf, &v);
        if (re) {
            /* INVALID_VALUE [restore, why] from the file, INTERNAL_ERROR [why] from KVM */
            const char *why = re->code;
            if (re->nparams)
                why = re->params[re->nparams > 1 ? 1 : 0];
            log_err("cannot restore %s: %s", restore_path, why);
            xerr_free(re);
            goto out;
        }
        s.restored = restore_path;
    }
    if (cfg->sandbox && vmm_sandbox() < 0)
        goto out;
    /* Device threads start once the filter is in place, so that they run under it too. */
    for (unsigned i = 0; i < v.ndisks; i++) {
        xerr *de = virtio_blk_start(v.disks[i]);
        if (de) {
            log_err("disk %u: %s", i, de->nparams ? de->params[0] : de->code);
            xerr_free(de);
            goto out;
        }
    }
    for (unsigned i = 0; i < v.nnics; i++) {
        xerr *ne = virtio_net_start(v.nics[i]);
        if (ne) {
            log_err("nic %u: %s", i, ne->nparams ? ne->params[0] : ne->code);
            xerr_free(ne);
            goto out;
        }
    }
    xerr *e = restore_path ? NULL : machine_create(&v);
    if (!e)
        e = machine_start(&v);
    if (e) {
        log_err("cannot start the VM: %s %s %s", e->code, e->nparams > 0 ? e->params[0] : "",
                e->nparams > 1 ? e->params[1] : "");
        xerr_free(e);
        goto out;
    }
    s.status = v.paused ? "paused" : "running";
    log_info("VM %s %s: %u vCPU(s), %llu MiB, kernel %s", cfg->name ? cfg->name : "",
             restore_path ? "restored" : "started", v.nvcpus, (unsigned long long)cfg->memory_mib,
             cfg->kernel);
    run_loop(&s);
    rc = s.exit_code;
out:
    machine_destroy(&v);
    while (s.clients) {
        client *c = s.clients;
        s.clients = c->next;
        client_free(c);
    }
    if (s.ctl_fd >= 0) {
        close(s.ctl_fd);
        unlink(cfg->control_socket);
    }
    if (s.con_fd >= 0) {
        close(s.con_fd);
        unlink(cfg->console_socket);
    }
    serial_free(v.serial);
    for (unsigned i = 0; i < v.ndisks; i++)
        virtio_blk_free(v.disks[i]);
    for (unsigned i = 0; i < v.nnics; i++)
        virtio_net_free(v.nics[i]);
    live_free(&v);
    if (v.serial_log_fd >= 0)
        close(v.serial_log_fd);
    if (v.wake_fd >= 0)
        close(v.wake_fd);
    if (s.sig_fd >= 0)
        close(s.sig_fd);
    free(v.cpuid);
    free(v.kernel_image);
    free(v.initrd_image);
    pthread_mutex_destroy(&v.lock);
    pthread_cond_destroy(&v.cond);
    return rc;
}
