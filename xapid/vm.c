/* VM lifecycle: XenAPI VM power operations over one nuvem-vmm process per running VM.
 *
 * A running VM has a runtime entry (its VMM's pid and control connection, the VDIs it holds
 * attached, its domid). Files live in the run directory, named by VM uuid: <uuid>.json (the VMM
 * config), <uuid>.ctl (control socket), <uuid>.console (serial socket), <uuid>.serial (serial
 * log), <uuid>.log (VMM stderr). The VMM is started detached (its own session, reparented to
 * init), so it outlives a killed daemon; a restarted daemon finds it through <uuid>.ctl.
 *
 * Every operation claims the VM in the DB first (current_operations, with XAPI's checks and
 * errors), does its work with no transaction held, then records the outcome in one write
 * transaction that also recomputes allowed_operations. Guest-initiated exits (poweroff, reboot,
 * crash, or a VMM that died) reach a monitor thread, which claims the VM the same way and
 * applies actions_after_*. */
#define _GNU_SOURCE
#include "vm.h"
#include "api_handlers.h"
#include "vhd.h"
#include "vmmc.h"
#include "xrec.h"

#include "log.h"
#include "mem.h"
#include "sbuf.h"
#include "util.h"

#include <dirent.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB               (1024 * 1024)
#define VMM_CALL_TIMEOUT  30.0
#define VMM_START_TIMEOUT 30.0
#define MAX_VBD_DEVICES   16
#define MAX_VIF_DEVICES   7

/* ---- runtime table ------------------------------------------------------------------------ */

struct attached_vdi {
    char *vdi;
    char *vbd;
};

typedef struct vmrun {
    char *ref, *uuid;
    int64_t domid;
    int pid;
    vmmc *c;
    int refs;     /* under R.lock */
    bool removed; /* no longer in the table */
    /* under lock */
    pthread_mutex_t lock;
    bool expect_exit;    /* the daemon asked the VMM to stop */
    char last_event[16]; /* shutdown, reboot, crash */
    char last_reason[64];
    bool exited;
    bool halting;   /* a hard shutdown is under way: nothing may boot the VM again */
    xv *guest_data; /* the agent's keys, latest */
    int64_t balloon_actual;
    int64_t vcpus_online;
    bool metrics_dirty, guest_dirty;
    struct attached_vdi *vdis;
    size_t nvdis;
    pthread_mutex_t teardown_lock; /* one vm_teardown per entry (operations may overlap) */
    bool torn;
    struct vmrun *next;
} vmrun;

enum job_kind { JOB_EXIT, JOB_UPDATE };

struct job {
    enum job_kind kind;
    char *ref;
    struct job *next;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    vmrun *list;
    int64_t next_domid;
    struct job *jobs, **jobs_tail;
    bool stop;
    pthread_t monitor, metrics;
    bool threads;
    xapid *x;
} R = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .next_domid = 1};

static void run_free(vmrun *r)
{
    vmmc_free(r->c);
    for (size_t i = 0; i < r->nvdis; i++) {
        free(r->vdis[i].vdi);
        free(r->vdis[i].vbd);
    }
    free(r->vdis);
    xv_free(r->guest_data);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->teardown_lock);
    free(r->ref);
    free(r->uuid);
    free(r);
}

/* A counted reference to the runtime entry of a VM, or NULL. */
static vmrun *run_get(const char *ref)
{
    pthread_mutex_lock(&R.lock);
    vmrun *r = R.list;
    while (r && strcmp(r->ref, ref) != 0)
        r = r->next;
    if (r)
        r->refs++;
    pthread_mutex_unlock(&R.lock);
    return r;
}

static void run_put(vmrun *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&R.lock);
    bool last = --r->refs == 0 && r->removed;
    pthread_mutex_unlock(&R.lock);
    if (last)
        run_free(r);
}
static inline void run_putp(vmrun **r)
{
    run_put(*r);
}
#define AUTORUN __attribute__((cleanup(run_putp))) vmrun

static void run_add(vmrun *r)
{
    pthread_mutex_lock(&R.lock);
    r->refs = 1; /* the table's */
    r->next = R.list;
    R.list = r;
    pthread_mutex_unlock(&R.lock);
}

/* Takes the entry out of the table; it is freed once the last user lets go. */
static void run_remove(vmrun *r)
{
    pthread_mutex_lock(&R.lock);
    for (vmrun **p = &R.list; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            r->removed = true;
            r->refs--;
            break;
        }
    bool last = r->refs == 0;
    pthread_mutex_unlock(&R.lock);
    if (last)
        run_free(r);
}

static void job_push(enum job_kind kind, const char *ref)
{
    struct job *j = xcalloc(1, sizeof(*j));
    j->kind = kind;
    j->ref = xstrdup(ref);
    pthread_mutex_lock(&R.lock);
    *R.jobs_tail = j;
    R.jobs_tail = &j->next;
    pthread_cond_broadcast(&R.cond);
    pthread_mutex_unlock(&R.lock);
}

/* ---- VMM events (reader thread) ----------------------------------------------------------- */

static void on_event(void *opaque, const char *name, const xv *data)
{
    vmrun *r = opaque;
    bool update = false;
    pthread_mutex_lock(&r->lock);
    if (!strcmp(name, "shutdown") || !strcmp(name, "reboot") || !strcmp(name, "crash")) {
        snprintf(r->last_event, sizeof(r->last_event), "%s", name);
        const char *why = data ? xv_struct_get_str(data, "reason") : NULL;
        snprintf(r->last_reason, sizeof(r->last_reason), "%s", why ? why : "");
        /* a crash the VMM keeps paused (on_crash=pause) is reported now; exits come with EOF */
        update = !strcmp(name, "crash");
    } else if (!strcmp(name, "guest-data") && data) {
        const xv *d = xv_struct_get(data, "data");
        if (d && d->kind == XV_STRUCT) {
            xv_free(r->guest_data);
            r->guest_data = xv_copy(d);
            r->guest_dirty = update = true;
        }
    } else if (!strcmp(name, "balloon") && data) {
        r->balloon_actual = xrec_int(data, "actual_bytes", r->balloon_actual);
        r->metrics_dirty = update = true;
    } else if (!strcmp(name, "vcpus") && data) {
        r->vcpus_online = xrec_int(data, "online", r->vcpus_online);
        r->metrics_dirty = update = true;
    } else if (!strcmp(name, "paused") || !strcmp(name, "resumed")) {
        update = true;
    }
    pthread_mutex_unlock(&r->lock);
    if (update)
        job_push(JOB_UPDATE, r->ref);
}

static void on_closed(void *opaque)
{
    vmrun *r = opaque;
    pthread_mutex_lock(&r->lock);
    r->exited = true;
    bool expected = r->expect_exit;
    pthread_mutex_unlock(&r->lock);
    if (!expected)
        job_push(JOB_EXIT, r->ref);
}

/* ---- paths -------------------------------------------------------------------------------- */

static char *exe_relative(const char *rel)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return NULL;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    return xasprintf("%s/%s", self, rel);
}

static const char *run_dir(xapid *x)
{
    return x->cfg.run_dir;
}

static char *run_path(xapid *x, const char *uuid, const char *ext)
{
    return xasprintf("%s/%s.%s", run_dir(x), uuid, ext);
}

/* Resolves a PV_kernel/PV_ramdisk: the template names nuvem:miniguest and nuvem:debian/<file>,
 * or a host path, which (as XAPI's /boot/guest rule) must lie in --kernel-dir, the mini guest's
 * directory or the guest image directory, so that API callers cannot make the VMM read any file
 * on the host. NULL (with *why) otherwise. */
static bool path_under(const char *real, const char *dir)
{
    if (!dir || !*dir)
        return false;
    char rd[PATH_MAX];
    if (!realpath(dir, rd))
        return false;
    size_t n = strlen(rd);
    return !strncmp(real, rd, n) && (real[n] == '/' || (n == 1 && rd[0] == '/'));
}

static char *resolve_boot_path(xapid *x, const char *p, const char **why)
{
    AUTOFREE char *path = NULL;
    if (!strcmp(p, "nuvem:miniguest"))
        path = xstrdup(x->cfg.miniguest);
    else if (!strncmp(p, "nuvem:debian/", 13) && !strstr(p + 13, ".."))
        path = xasprintf("%s/%s", x->cfg.guest_image_dir, p + 13);
    else if (p[0] == '/')
        path = xstrdup(p);
    else {
        *why = "not a nuvem: name or an absolute path";
        return NULL;
    }
    char real[PATH_MAX];
    if (!realpath(path, real)) {
        *why = "not found";
        return NULL;
    }
    AUTOFREE char *mg_dir = xstrdup(x->cfg.miniguest);
    char *slash = strrchr(mg_dir, '/');
    if (slash)
        *slash = '\0';
    if (!path_under(real, x->cfg.kernel_dir) && !path_under(real, mg_dir) &&
        !path_under(real, x->cfg.guest_image_dir)) {
        *why = "outside the kernel directories (see --kernel-dir)";
        return NULL;
    }
    if (access(real, R_OK) != 0) {
        *why = "not readable";
        return NULL;
    }
    return xstrdup(real);
}

/* ---- DB helpers --------------------------------------------------------------------------- */

static const char *lower_state(const char *ps)
{
    if (!strcmp(ps, "Halted"))
        return "halted";
    if (!strcmp(ps, "Running"))
        return "running";
    if (!strcmp(ps, "Paused"))
        return "paused";
    if (!strcmp(ps, "Suspended"))
        return "suspended";
    return "crashed";
}

/* The operations XAPI's rules allow now (power state, template, snapshot, busy). */
static xv *compute_allowed(const xv *vm)
{
    xv *ops = xv_new_array();
    if (xrec_bool(vm, "is_control_domain"))
        return ops;
    const char *ps = xrec_str(vm, "power_state");
    bool tmpl = xrec_bool(vm, "is_a_template"), snap = xrec_bool(vm, "is_a_snapshot");
    const xv *cur = xv_struct_get(vm, "current_operations");
    bool busy = cur && cur->kind == XV_STRUCT && xv_struct_len(cur) > 0;
    bool halted = !strcmp(ps, "Halted"), running = !strcmp(ps, "Running"),
         paused = !strcmp(ps, "Paused"), suspended = !strcmp(ps, "Suspended");
#define ADD(cond, name)                                                                            \
    do {                                                                                           \
        if (cond)                                                                                  \
            xv_array_append(ops, xv_new_string(name));                                             \
    } while (0)
    if (busy) {
        ADD(running || paused, "hard_shutdown");
        return ops;
    }
    bool normal = !tmpl && !snap;
    ADD(halted || suspended, "clone");
    ADD(halted || suspended, "copy");
    ADD(!tmpl || snap, "snapshot");
    ADD(snap, "revert");
    ADD(halted && !snap, "provision");
    ADD(halted && normal, "start");
    ADD(halted && normal, "start_on");
    ADD(running && normal, "pause");
    ADD(paused && normal, "unpause");
    ADD(running && normal, "clean_shutdown");
    ADD(running && normal, "clean_reboot");
    ADD((running || paused || suspended) && !tmpl, "hard_shutdown");
    ADD((running || paused || suspended) && !tmpl, "shutdown");
    ADD((running || paused) && normal, "hard_reboot");
    ADD(running && normal, "suspend");
    ADD(suspended && normal, "resume");
    ADD(suspended && normal, "resume_on");
    ADD(running && normal, "changing_VCPUs_live");
    ADD(running && normal, "changing_memory_live");
    ADD(halted || running, "changing_dynamic_range");
    ADD(halted, "changing_static_range");
    ADD(halted, "changing_memory_limits");
    ADD(halted, "changing_VCPUs");
    ADD(halted || suspended, "destroy");
    ADD(halted && !tmpl, "make_into_template");
    ADD(true, "power_state_reset");
#undef ADD
    return ops;
}

static xerr *refresh_allowed(store_txn *t, const char *ref)
{
    AUTO(xv) *vm = NULL;
    xerr *e = st_get_record(t, XCLS(VM), ref, &vm);
    if (e)
        return e;
    xv *ops = compute_allowed(vm);
    const xv *old = xv_struct_get(vm, "allowed_operations");
    if (old && xv_equal(old, ops)) {
        xv_free(ops);
        return NULL;
    }
    return xset(t, XCLS(VM), ref, "allowed_operations", ops);
}

/* ---- claiming a VM for an operation ------------------------------------------------------- */

/* Power states an operation needs, as XAPI's table (lowercase names in the error). */
struct op_rule {
    const char *op;
    const char *states; /* comma list of power states (capitalised), "" = any */
    bool on_template;   /* allowed on templates */
};

static const struct op_rule op_rules[] = {
    {"start", "Halted", false},
    {"start_on", "Halted", false},
    {"provision", "Halted", true},
    {"pause", "Running", false},
    {"unpause", "Paused", false},
    {"suspend", "Running", false},
    {"resume", "Suspended", false},
    {"resume_on", "Suspended", false},
    {"clean_shutdown", "Running", false},
    {"clean_reboot", "Running", false},
    {"hard_shutdown", "Paused,Suspended,Running", false},
    {"shutdown", "Paused,Suspended,Running", false},
    {"hard_reboot", "Paused,Running", false},
    {"clone", "Halted,Suspended", true},
    {"copy", "Halted,Suspended", true},
    {"snapshot", "", true},
    {"revert", "", true},
    {"destroy", "Halted,Suspended", true},
    {"power_state_reset", "", true},
    {"changing_VCPUs_live", "Running", false},
    {"changing_memory_live", "Running", false},
    {"changing_dynamic_range", "Halted,Running", true},
    {"changing_static_range", "Halted", true},
    {"changing_memory_limits", "Halted", true},
    {"changing_VCPUs", "Halted", true},
    {"make_into_template", "Halted", true},
    {"monitor", "", true}, /* the monitor handling a guest-initiated exit */
};

static const struct op_rule *find_rule(const char *op)
{
    for (size_t i = 0; i < ARRAY_SIZE(op_rules); i++)
        if (!strcmp(op_rules[i].op, op))
            return &op_rules[i];
    return NULL;
}

static bool state_in(const char *ps, const char *list)
{
    if (!*list)
        return true;
    size_t n = strlen(ps);
    for (const char *p = list; p && *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == n && !strncmp(p, ps, n))
            return true;
        p = c ? c + 1 : NULL;
    }
    return false;
}

static char *expected_states(const char *list)
{
    sbuf b = SBUF_INIT;
    for (const char *p = list; p && *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        char st[16] = "";
        snprintf(st, sizeof(st), "%.*s", (int)len, p);
        if (b.len)
            sbuf_puts(&b, ", ");
        sbuf_puts(&b, lower_state(st));
        p = c ? c + 1 : NULL;
    }
    return sbuf_steal(&b, NULL);
}

/* Checks an operation against the record (XAPI's order: blocked, power state, concurrency,
 * template, control domain). */
static xerr *check_op(const char *ref, const xv *vm, const char *op, bool check_busy)
{
    const struct op_rule *rule = find_rule(op);
    if (!rule)
        return xerr_internal("unknown VM operation %s", op);
    const char *blocked = xrec_map_str(vm, "blocked_operations", op);
    if (blocked)
        return xerr_new("OPERATION_BLOCKED", ref, blocked);
    if (xrec_bool(vm, "is_control_domain") && strcmp(op, "monitor") != 0)
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "This operation is not allowed on the control domain");
    const char *ps = xrec_str(vm, "power_state");
    if (!state_in(ps, rule->states)) {
        AUTOFREE char *exp = expected_states(rule->states);
        return xerr_new("VM_BAD_POWER_STATE", ref, exp, lower_state(ps));
    }
    const xv *cur = xv_struct_get(vm, "current_operations");
    if (check_busy && cur && cur->kind == XV_STRUCT && xv_struct_len(cur) > 0) {
        const char *other = xv_str(cur->u.st.vals[0]);
        /* hard_shutdown stops a VMM under another operation; a suspended VM has none, and
         * the other operation (a resume) would boot it again after the shutdown */
        bool ok = !strcmp(op, "hard_shutdown") && strcmp(other, "hard_shutdown") != 0 &&
                  strcmp(ps, "Suspended") != 0;
        if (!ok)
            return xerr_new("OTHER_OPERATION_IN_PROGRESS", "VM", ref, other ? other : "",
                            cur->u.st.keys[0]);
    }
    if (xrec_bool(vm, "is_a_template") && !rule->on_template)
        return xerr_new("VM_IS_TEMPLATE", ref);
    return NULL;
}

struct claim {
    const char *ref, *op, *key;
    bool check_busy;
    xv *rec; /* out */
};

static xerr *claim_txn(store_txn *t, void *ud)
{
    struct claim *p = ud;
    AUTO(xv) *vm = NULL;
    xerr *e = st_get_record(t, XCLS(VM), p->ref, &vm);
    if (e)
        return e;
    if ((e = check_op(p->ref, vm, p->op, p->check_busy)))
        return e;
    AUTO(xv) *cur = xv_copy(xv_struct_get(vm, "current_operations"));
    if (!cur || cur->kind != XV_STRUCT) {
        xv_free(cur);
        cur = xv_new_struct();
    }
    xv_struct_set(cur, p->key, xv_new_string(p->op));
    if ((e = xset(t, XCLS(VM), p->ref, "current_operations", TAKE_PTR(cur))))
        return e;
    if ((e = refresh_allowed(t, p->ref)))
        return e;
    return st_get_record(t, XCLS(VM), p->ref, &p->rec);
}

typedef struct vmop {
    xapid *x;
    char *ref;
    char *key;
    xv *rec;
} vmop;

static void vmop_end(vmop *o);
static inline void vmop_endp(vmop *o)
{
    vmop_end(o);
}
#define AUTOOP __attribute__((cleanup(vmop_endp))) vmop

/* Claims the VM for op: on success o->rec is the record with the operation recorded. */
static xerr *vmop_begin(xapid *x, api_ctx *ctx, const char *ref, const char *op, vmop *o)
{
    memset(o, 0, sizeof(*o));
    AUTOFREE char *key = ctx && ctx->task ? xstrdup(ctx->task) : ref_new();
    struct claim c = {.ref = ref, .op = op, .key = key, .check_busy = true};
    xerr *e = store_write(x->st, claim_txn, &c);
    if (e)
        return e;
    o->x = x;
    o->ref = xstrdup(ref);
    o->key = TAKE_PTR(key);
    o->rec = c.rec;
    return NULL;
}

struct unclaim {
    const char *ref, *key;
};

static xerr *unclaim_txn(store_txn *t, void *ud)
{
    struct unclaim *p = ud;
    if (!st_exists(t, XCLS(VM), p->ref))
        return NULL;
    AUTO(xv) *cur = NULL;
    xerr *e = st_get_field(t, XCLS(VM), p->ref, xfield(XCLS(VM), "current_operations"), &cur);
    if (e)
        return e;
    if (cur->kind == XV_STRUCT && xv_struct_del(cur, p->key) &&
        (e = st_set_field(t, XCLS(VM), p->ref, xfield(XCLS(VM), "current_operations"), cur)))
        return e;
    return refresh_allowed(t, p->ref);
}

static void vmop_end(vmop *o)
{
    if (!o->ref)
        return;
    struct unclaim u = {o->ref, o->key};
    xerr *e = store_write(o->x->st, unclaim_txn, &u);
    if (e) {
        log_warn("VM %s: cannot clear operation: %s", o->ref, e->code);
        xerr_free(e);
    }
    free(o->ref);
    free(o->key);
    xv_free(o->rec);
    memset(o, 0, sizeof(*o));
}

/* ---- memory accounting -------------------------------------------------------------------- */

static int64_t meminfo_bytes(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    int64_t v = 0;
    size_t n = strlen(key);
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, key, n)) {
            v = strtoll(line + n, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return v;
}

static int64_t host_available_at_start;

static int64_t vm_overhead(xapid *x, const xv *vm)
{
    (void)vm;
    return x->cfg.vm_memory_overhead;
}

struct freemem {
    xapid *x;
    const char *except;
    int64_t used;
};

static xerr *freemem_txn(store_txn *t, void *ud)
{
    struct freemem *p = ud;
    AUTO(xv) *args = xv_new_string(p->x->host_ref);
    const xv *a[] = {args};
    AUTO(xv) *vms = NULL;
    xerr *e = st_get_all_records(t, XCLS(VM), "resident_on = ?", a, 1, &vms);
    if (e)
        return e;
    p->used = 0;
    for (size_t i = 0; i < xv_struct_len(vms); i++) {
        const xv *vm = vms->u.st.vals[i];
        if (xrec_bool(vm, "is_control_domain") ||
            (p->except && !strcmp(vms->u.st.keys[i], p->except)))
            continue;
        const char *ps = xrec_str(vm, "power_state");
        if (strcmp(ps, "Running") && strcmp(ps, "Paused"))
            continue;
        p->used += xrec_int(vm, "memory_static_max", 0) + vm_overhead(p->x, vm);
    }
    return NULL;
}

/* Host memory free for VMs: what was available when the daemon started, less what running VMs
 * are entitled to (their static maximum and overhead), as XAPI's accounting. */
static int64_t host_free_memory(xapid *x, const char *except)
{
    struct freemem p = {.x = x, .except = except};
    xerr *e = store_read(x->st, freemem_txn, &p);
    if (e) {
        xerr_free(e);
        return 0;
    }
    int64_t f = host_available_at_start - p.used;
    return f > 0 ? f : 0;
}

/* ---- records of a running / halted VM ----------------------------------------------------- */

struct state_p {
    xapid *x;
    const char *ref;
    const char *power_state;
    int64_t domid;
    const xv *vbds_attached; /* VBD refs now attached (running), or NULL */
    bool running;            /* a domain exists */
    bool fresh_boot;         /* set start_time, create console */
};

static xerr *ensure_metrics(store_txn *t, const char *ref, const xv *vm, char **ret)
{
    const char *m = xrec_str(vm, "metrics");
    if (xref_set(m) && st_exists(t, XCLS(VM_metrics), m)) {
        *ret = xstrdup(m);
        return NULL;
    }
    AUTO(xv) *rec = xv_new_struct();
    xerr *e = st_create(t, XCLS(VM_metrics), NULL, rec, ret);
    if (!e)
        e = xset(t, XCLS(VM), ref, "metrics", xv_new_string(*ret));
    return e;
}

static xerr *state_txn(store_txn *t, void *ud)
{
    struct state_p *p = ud;
    AUTO(xv) *vm = NULL;
    xerr *e = st_get_record(t, XCLS(VM), p->ref, &vm);
    if (e)
        return e;
    const api_class *V = XCLS(VM);
    if ((e = xset(t, V, p->ref, "power_state", xv_new_string(p->power_state))) ||
        (e = xset(t, V, p->ref, "domid", xv_new_int(p->running ? p->domid : -1))) ||
        (e = xset(t, V, p->ref, "resident_on",
                  xv_new_string(p->running || !strcmp(p->power_state, "Suspended")
                                    ? (p->running ? p->x->host_ref : NULL_REF)
                                    : NULL_REF))))
        return e;
    AUTOFREE char *metrics = NULL;
    if ((e = ensure_metrics(t, p->ref, vm, &metrics)))
        return e;
    const api_class *M = XCLS(VM_metrics);
    int64_t now = now_epoch();
    if (p->fresh_boot) {
        if ((e = xset(t, M, metrics, "start_time", xv_new_datetime_epoch(now))) ||
            (e = xset(t, M, metrics, "VCPUs_number",
                      xv_new_int(xrec_int(vm, "VCPUs_at_startup", 1)))) ||
            (e = xset(t, M, metrics, "memory_actual",
                      xv_new_int(xrec_int(vm, "memory_dynamic_max", 0)))))
            return e;
        if ((e = xset(t, V, p->ref, "memory_target",
                      xv_new_int(xrec_int(vm, "memory_dynamic_max", 0)))))
            return e;
    }
    if (!p->running && ((e = xset(t, M, metrics, "VCPUs_number", xv_new_int(0))) ||
                        (e = xset(t, M, metrics, "memory_actual", xv_new_int(0)))))
        return e;
    xv *state = xv_new_array();
    if (p->running)
        xv_array_append(state,
                        xv_new_string(!strcmp(p->power_state, "Paused") ? "paused" : "running"));
    else
        xv_array_append(state, xv_new_string(lower_state(p->power_state)));
    if ((e = xset(t, M, metrics, "state", state)) ||
        (e = xset(t, M, metrics, "last_updated", xv_new_datetime_epoch(now))))
        return e;

    /* devices */
    AUTO(xv) *arg = xv_new_string(p->ref);
    const xv *a[] = {arg};
    AUTO(xv) *vbds = NULL, *vifs = NULL, *cons = NULL;
    if ((e = st_get_all_records(t, XCLS(VBD), "VM = ?", a, 1, &vbds)) ||
        (e = st_get_all_records(t, XCLS(VIF), "VM = ?", a, 1, &vifs)) ||
        (e = st_get_all(t, XCLS(console), "VM = ?", a, 1, &cons)))
        return e;
    for (size_t i = 0; i < xv_struct_len(vbds); i++) {
        bool att = false;
        for (size_t k = 0; p->running && p->vbds_attached && k < xv_array_len(p->vbds_attached);
             k++)
            if (!strcmp(xv_str(xv_array_get(p->vbds_attached, k)), vbds->u.st.keys[i]))
                att = true;
        if (xrec_bool(vbds->u.st.vals[i], "currently_attached") != att &&
            (e = xset(t, XCLS(VBD), vbds->u.st.keys[i], "currently_attached", xv_new_bool(att))))
            return e;
    }
    for (size_t i = 0; i < xv_struct_len(vifs); i++)
        if (xrec_bool(vifs->u.st.vals[i], "currently_attached") != p->running &&
            (e = xset(t, XCLS(VIF), vifs->u.st.keys[i], "currently_attached",
                      xv_new_bool(p->running))))
            return e;
    if (!p->running) {
        for (size_t i = 0; i < xv_array_len(cons); i++)
            if ((e = st_destroy(t, XCLS(console), xv_str(xv_array_get(cons, i)))))
                return e;
        const char *gm = xrec_str(vm, "guest_metrics");
        if (xref_set(gm)) {
            if (st_exists(t, XCLS(VM_guest_metrics), gm) &&
                (e = st_destroy(t, XCLS(VM_guest_metrics), gm)))
                return e;
            if ((e = xset(t, V, p->ref, "guest_metrics", xv_new_string(NULL_REF))))
                return e;
        }
    } else if (p->fresh_boot && xv_array_len(cons) == 0) {
        AUTO(xv) *c = xv_new_struct();
        xv_struct_set(c, "protocol", xv_new_string("vt100"));
        xv_struct_set(c, "VM", xv_new_string(p->ref));
        AUTOFREE char *cref = NULL;
        if ((e = st_create(t, XCLS(console), NULL, c, &cref)))
            return e;
        AUTO(xv) *crec = NULL;
        if ((e = st_get_record(t, XCLS(console), cref, &crec)))
            return e;
        AUTOFREE char *loc = xasprintf("http://%s/console?uuid=%s",
                                       p->x->http_address ? p->x->http_address : p->x->cfg.listen,
                                       xrec_str(crec, "uuid"));
        if ((e = xset(t, XCLS(console), cref, "location", xv_new_string(loc))))
            return e;
    }
    return refresh_allowed(t, p->ref);
}

static xerr *record_state(xapid *x, const char *ref, const char *ps, int64_t domid,
                          const xv *vbds_attached, bool fresh)
{
    bool running = !strcmp(ps, "Running") || !strcmp(ps, "Paused");
    struct state_p p = {.x = x,
                        .ref = ref,
                        .power_state = ps,
                        .domid = domid,
                        .vbds_attached = vbds_attached,
                        .running = running,
                        .fresh_boot = fresh};
    return store_write(x->st, state_txn, &p);
}

/* ---- starting a VMM ----------------------------------------------------------------------- */

struct boot_dev {
    const char *vbd;
    const char *vdi;
    bool ro;
};

/* Spawns nuvem-vmm detached (double fork: it is init's child and survives the daemon); returns
 * its pid or -errno. stderr goes to logpath. */
static int spawn_vmm(xapid *x, const char *config, const char *restore, const char *logpath)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    pid_t mid = fork();
    if (mid < 0) {
        int err = errno;
        close(pfd[0]);
        close(pfd[1]);
        return -err;
    }
    if (mid == 0) {
        setsid();
        pid_t pid = fork();
        if (pid == 0) {
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            signal(SIGPIPE, SIG_DFL);
            int null = open("/dev/null", O_RDWR);
            int log = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (null >= 0) {
                dup2(null, 0);
                dup2(null, 1);
            }
            if (log >= 0)
                dup2(log, 2);
            /* close everything else the daemon had open */
            if (close_range(3, ~0U, 0) < 0)
                for (int fd = 3; fd < 65536; fd++)
                    close(fd);
            if (restore)
                execl(x->cfg.vmm, x->cfg.vmm, "--restore", restore, config, (char *)NULL);
            else
                execl(x->cfg.vmm, x->cfg.vmm, config, (char *)NULL);
            dprintf(2, "cannot run %s: %s\n", x->cfg.vmm, strerror(errno));
            _exit(127);
        }
        int32_t v = pid < 0 ? -errno : pid;
        if (write(pfd[1], &v, sizeof(v)) != sizeof(v))
            _exit(1);
        _exit(0);
    }
    close(pfd[1]);
    int32_t v = -EIO;
    ssize_t n;
    do
        n = read(pfd[0], &v, sizeof(v));
    while (n < 0 && errno == EINTR);
    close(pfd[0]);
    while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
        ;
    return n == sizeof(v) ? v : -EIO;
}

/* The last lines of the VMM's stderr, for an error message. */
static char *log_tail(const char *path)
{
    AUTOFREE char *data = NULL;
    size_t len = 0;
    if (read_file(path, &data, &len) < 0 || !len)
        return xstrdup("");
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        data[--len] = '\0';
    char *p = data + len;
    int lines = 0;
    while (p > data && lines < 3)
        if (*--p == '\n')
            lines++;
    if (*p == '\n')
        p++;
    for (char *q = p; *q; q++)
        if (*q == '\n')
            *q = ' ';
    return xstrdup(p);
}

static int64_t alloc_domid(void)
{
    pthread_mutex_lock(&R.lock);
    int64_t d = R.next_domid++;
    pthread_mutex_unlock(&R.lock);
    return d;
}

static void detach_all(xapid *x, vmrun *r, const xv *vifs)
{
    for (size_t i = 0; i < r->nvdis; i++) {
        xerr *e = xapid_storage_vdi_detach(x, r->vdis[i].vdi);
        if (e) {
            log_warn("VM %s: detach VDI %s: %s", r->ref, r->vdis[i].vdi, e->code);
            xerr_free(e);
        }
    }
    for (size_t i = 0; vifs && i < xv_struct_len(vifs); i++) {
        xerr *e = xapid_network_vif_detach(x, vifs->u.st.keys[i], r->domid);
        if (e) {
            log_debug("VM %s: detach VIF %s: %s", r->ref, vifs->u.st.keys[i], e->code);
            xerr_free(e);
        }
    }
}

static xerr *vm_devices(xapid *x, const char *ref, xv **ret_vbds, xv **ret_vifs)
{
    AUTO(xv) *arg = xv_new_string(ref);
    const xv *a[] = {arg};
    xerr *e = store_get_all_records(x->st, XCLS(VBD), "VM = ?", a, 1, ret_vbds);
    if (!e && ret_vifs)
        e = store_get_all_records(x->st, XCLS(VIF), "VM = ?", a, 1, ret_vifs);
    return e;
}

static int cmp_userdevice(const void *a, const void *b)
{
    const xv *const *x = a, *const *y = b;
    long ua = strtol(xrec_str(*x, "userdevice"), NULL, 10);
    long ub = strtol(xrec_str(*y, "userdevice"), NULL, 10);
    return (ua > ub) - (ua < ub);
}

static void remove_run_files(xapid *x, const char *uuid, bool keep_logs)
{
    const char *exts[] = {"json", "ctl", "console", "serial", "log", "pid", "sav"};
    for (size_t i = 0; i < ARRAY_SIZE(exts); i++) {
        if (keep_logs && (!strcmp(exts[i], "serial") || !strcmp(exts[i], "log")))
            continue;
        AUTOFREE char *p = run_path(x, uuid, exts[i]);
        unlink(p);
    }
}

/* Events sent before the daemon connected (a fast guest's first agent report, or everything
 * while a restarted daemon was away) are not replayed: read the current state once. */
static void initial_sync(vmrun *r)
{
    AUTO(xv) *g = NULL, *b = NULL;
    xerr *e = vmmc_call(r->c, "query-guest", NULL, VMM_CALL_TIMEOUT, &g);
    xerr_free(e);
    e = vmmc_call(r->c, "query-balloon", NULL, VMM_CALL_TIMEOUT, &b);
    xerr_free(e);
    bool update = false;
    pthread_mutex_lock(&r->lock);
    const xv *d = g ? xv_struct_get(g, "data") : NULL;
    if (d && d->kind == XV_STRUCT && xv_struct_len(d) > 0 && !r->guest_data) {
        r->guest_data = xv_copy(d);
        r->guest_dirty = update = true;
    }
    if (b && xrec_int(b, "actual_bytes", -1) > 0) {
        r->balloon_actual = xrec_int(b, "actual_bytes", r->balloon_actual);
        r->metrics_dirty = update = true;
    }
    pthread_mutex_unlock(&r->lock);
    if (update)
        job_push(JOB_UPDATE, r->ref);
}

static xerr *vmm_kill(vmrun *r);

/* Whether pid is a live nuvem-vmm (not a zombie, not a process that took the pid since). */
static bool vmm_pid_alive(int pid)
{
    char path[64], exe[PATH_MAX], st = 0;
    snprintf(path, sizeof(path), "/proc/%d/exe", pid);
    ssize_t n = readlink(path, exe, sizeof(exe) - 1);
    if (n <= 0)
        return false; /* gone, or exiting (its memory released) */
    exe[n] = '\0';
    const char *base = strrchr(exe, '/');
    if (!strstr(base ? base : exe, "nuvem-vmm"))
        return false;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    AUTOFREE char *stat = NULL;
    return read_file(path, &stat, NULL) == 0 && sscanf(stat, "%*d %*s %c", &st) == 1 && st != 'Z';
}

/* A closed control connection does not prove the VMM exited (it drops a control client that
 * stops reading; a read error ends the reader): it is made to go, within a few seconds, before
 * anything else uses the VM's disks. */
/* VMMs are reparented to the daemon when spawn_vmm's middle child exits (the daemon is a child
 * subreaper, see xapid_vm_init), so an exited one is collected here rather than left a zombie
 * (an init that does not reap would keep them). VMMs adopted after a restart are init's. */
static void reap_vmm(int pid)
{
    for (int i = 0; pid > 0 && i < 100; i++) {
        pid_t w = waitpid(pid, NULL, WNOHANG);
        if (w == pid || (w < 0 && errno != EINTR))
            return;
        usleep(10000);
    }
}

static void vmm_gone(vmrun *r)
{
    for (int i = 0; r->pid > 0 && i < 300 && vmm_pid_alive(r->pid); i++) {
        if (i == 100) {
            log_warn("VM %s: nuvem-vmm pid %d outlived its control connection; killing it", r->ref,
                     r->pid);
            kill(r->pid, SIGKILL);
        }
        usleep(10000);
    }
    reap_vmm(r->pid);
}

/* Builds the config, attaches disks and NICs, spawns the VMM and connects (vm_boot has placed
 * it). On success the runtime entry is in the table and the DB says Running/Paused. restore: a
 * save file. */
static xerr *vm_boot_placed(xapid *x, const char *ref, const xv *vm, bool paused,
                            const char *restore)
{
    const char *uuid = xrec_str(vm, "uuid");
    int64_t mem = xrec_int(vm, "memory_static_max", 0);
    int64_t vcpus = xrec_int(vm, "VCPUs_at_startup", 1), vcpus_max = xrec_int(vm, "VCPUs_max", 1);
    if (vcpus < 1)
        return xerr_new("VM_NO_VCPUS", ref);
    if (vcpus > 64 || vcpus_max > 64)
        return xerr_new("VM_TOO_MANY_VCPUS", ref);
    if (mem < 4 * MiB)
        return xerr_new("INVALID_VALUE", "memory_static_max", "too small to boot (minimum 4 MiB)");
    const char *kernel = xrec_str(vm, "PV_kernel");
    if (!*kernel)
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "This VM has no PV_kernel: nuvem-vmm boots kernels directly and cannot "
                        "boot install media yet");
    const char *why = NULL;
    AUTOFREE char *kpath = resolve_boot_path(x, kernel, &why);
    if (!kpath) {
        AUTOFREE char *msg = xasprintf("PV_kernel %s: %s", kernel, why);
        return xerr_new("BOOTLOADER_FAILED", ref, msg);
    }
    const char *rd = xrec_str(vm, "PV_ramdisk");
    AUTOFREE char *rdpath = *rd ? resolve_boot_path(x, rd, &why) : NULL;
    if (*rd && !rdpath) {
        AUTOFREE char *msg = xasprintf("PV_ramdisk %s: %s", rd, why);
        return xerr_new("BOOTLOADER_FAILED", ref, msg);
    }

    AUTO(xv) *vbds = NULL, *vifs = NULL;
    xerr *e = vm_devices(x, ref, &vbds, &vifs);
    if (e)
        return e;
    vmrun *r = xcalloc(1, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->teardown_lock, NULL);
    r->ref = xstrdup(ref);
    r->uuid = xstrdup(uuid);
    r->domid = alloc_domid();
    r->balloon_actual = xrec_int(vm, "memory_dynamic_max", mem);
    r->vcpus_online = vcpus;

    AUTO(xv) *cfg = xv_new_struct();
    xv_struct_set(cfg, "name", xv_new_string(uuid));
    xv_struct_set(cfg, "uuid", xv_new_string(uuid));
    xv_struct_set(cfg, "memory_mib", xv_new_int((mem + MiB - 1) / MiB));
    xv_struct_set(cfg, "vcpus", xv_new_int(vcpus));
    if (vcpus_max > vcpus)
        xv_struct_set(cfg, "vcpus_max", xv_new_int(vcpus_max));
    xv_struct_set(cfg, "kernel", xv_new_string(kpath));
    if (rdpath)
        xv_struct_set(cfg, "initrd", xv_new_string(rdpath));
    xv_struct_set(cfg, "cmdline", xv_new_string(xrec_str(vm, "PV_args")));

    /* disks in userdevice order; the index in this list is the VMM's disk index */
    xv *disks = xv_new_array();
    xv_struct_set(cfg, "disks", disks);
    AUTO(xv) *attached = xv_new_array();
    size_t nv = xv_struct_len(vbds);
    const xv **order = xcalloc(nv ? nv : 1, sizeof(*order));
    for (size_t i = 0; i < nv; i++)
        order[i] = vbds->u.st.vals[i];
    qsort(order, nv, sizeof(*order), cmp_userdevice);
    r->vdis = xcalloc(nv ? nv : 1, sizeof(*r->vdis));
    for (size_t i = 0; i < nv && !e; i++) {
        const xv *vbd = order[i];
        const char *vbd_ref = NULL;
        for (size_t k = 0; k < nv; k++)
            if (vbds->u.st.vals[k] == vbd)
                vbd_ref = vbds->u.st.keys[k];
        const char *vdi = xrec_str(vbd, "VDI");
        if (xrec_bool(vbd, "empty") || !xref_set(vdi))
            continue;
        bool ro = !strcmp(xrec_str(vbd, "mode"), "RO") || !strcmp(xrec_str(vbd, "type"), "CD");
        char *path = NULL;
        const char *fmt = NULL;
        if ((e = xapid_storage_vdi_attach(x, vdi, !ro, &path, &fmt)))
            break;
        r->vdis[r->nvdis].vdi = xstrdup(vdi);
        r->vdis[r->nvdis].vbd = xstrdup(vbd_ref);
        r->nvdis++;
        xv *d = xv_new_struct();
        xv_struct_set(d, "path", xv_new_string_take(path));
        if (ro)
            xv_struct_set(d, "readonly", xv_new_bool(true));
        if (fmt && strcmp(fmt, "raw") != 0)
            xv_struct_set(d, "format", xv_new_string(fmt));
        xv_array_append(disks, d);
        xv_array_append(attached, xv_new_string(vbd_ref));
    }
    free(order);
    xv *nics = xv_new_array();
    xv_struct_set(cfg, "nics", nics);
    for (size_t i = 0; !e && i < xv_struct_len(vifs); i++) {
        const xv *vif = vifs->u.st.vals[i];
        if ((e = xapid_network_vif_attach(x, vifs->u.st.keys[i], r->domid, NULL)))
            break;
        xv *n = xv_new_struct();
        AUTOFREE char *tap = xasprintf("vif%lld.%s", (long long)r->domid, xrec_str(vif, "device"));
        xv_struct_set(n, "tap", xv_new_string(tap));
        xv_struct_set(n, "mac", xv_new_string(xrec_str(vif, "MAC")));
        xv_array_append(nics, n);
    }
    AUTOFREE char *ctl = run_path(x, uuid, "ctl");
    AUTOFREE char *cons = run_path(x, uuid, "console");
    AUTOFREE char *serial = run_path(x, uuid, "serial");
    AUTOFREE char *cfgpath = run_path(x, uuid, "json");
    AUTOFREE char *logpath = run_path(x, uuid, "log");
    xv *ser = xv_new_struct();
    xv_struct_set(ser, "log", xv_new_string(serial));
    xv_struct_set(ser, "socket", xv_new_string(cons));
    xv_struct_set(cfg, "serial", ser);
    xv_struct_set(cfg, "control", xv_new_string(ctl));
    xv_struct_set(cfg, "on_reboot", xv_new_string("exit"));
    const char *crash = xrec_str(vm, "actions_after_crash");
    xv_struct_set(cfg, "on_crash", xv_new_string(strstr(crash, "preserve") ? "pause" : "exit"));
    if (paused)
        xv_struct_set(cfg, "start_paused", xv_new_bool(true));
    xv_struct_set(cfg, "mem_merge", xv_new_bool(x->cfg.page_sharing != 0));
    if (!e) {
        AUTOFREE char *json = xv_to_json(cfg);
        unlink(ctl);
        unlink(logpath);
        if (write_file_atomic(cfgpath, json, strlen(json), 0600) < 0)
            e = xerr_internal("cannot write %s: %s", cfgpath, strerror(errno));
    }
    if (!e) {
        r->pid = spawn_vmm(x, cfgpath, restore, logpath);
        if (r->pid < 0) {
            e = xerr_internal("cannot start nuvem-vmm: %s", strerror(-r->pid));
        } else {
            /* lets a restarted daemon find a VMM that stopped answering */
            AUTOFREE char *pidpath = run_path(x, uuid, "pid");
            AUTOFREE char *pidtxt = xasprintf("%d\n", r->pid);
            if (write_file_atomic(pidpath, pidtxt, strlen(pidtxt), 0600) < 0)
                log_warn("cannot write %s", pidpath);
        }
    }
    if (!e) {
        vmmc_handlers h = {.event = on_event, .closed = on_closed, .opaque = r};
        AUTO(xv) *greeting = NULL;
        e = vmmc_connect(ctl, r->pid, VMM_START_TIMEOUT, &h, &r->c, &greeting);
        if (e) {
            /* it did not come up: make sure it is gone, report why */
            if (r->pid > 0)
                kill(r->pid, SIGKILL);
            vmm_gone(r);
            AUTOFREE char *tail = log_tail(logpath);
            xerr_free(e);
            e = xerr_new("VM_FAILED_START", ref, *tail ? tail : "nuvem-vmm did not start");
        }
    }
    if (e) {
        detach_all(x, r, vifs);
        remove_run_files(x, uuid, true);
        run_free(r);
        return e;
    }
    run_add(r);
    /* our own reference: a hard_shutdown may take the entry out of the table from here on */
    pthread_mutex_lock(&R.lock);
    r->refs++;
    pthread_mutex_unlock(&R.lock);
    AUTORUN *held = r;
    (void)held;
    /* the balloon target within the dynamic range */
    int64_t dmax = xrec_int(vm, "memory_dynamic_max", mem);
    if (dmax < mem) {
        xv *args = xv_new_struct();
        xv_struct_set(args, "bytes", xv_new_int(dmax));
        xerr *be = vmmc_call(r->c, "set-balloon-target", args, VMM_CALL_TIMEOUT, NULL);
        if (be) {
            log_warn("VM %s: balloon target: %s %s", ref, be->code,
                     be->nparams ? be->params[0] : "");
            xerr_free(be);
        }
    }
    e = record_state(x, ref, paused ? "Paused" : "Running", r->domid, attached, true);
    if (e) {
        /* the DB did not take it: stop the VMM (gone before its disks are detached) */
        xerr_free(vmm_kill(r));
        detach_all(x, r, vifs);
        remove_run_files(x, uuid, true);
        run_remove(r);
        return e;
    }
    initial_sync(r);
    log_info("VM %s (%s) started: domid %lld, pid %d%s", ref, xrec_str(vm, "name_label"),
             (long long)r->domid, r->pid, restore ? ", restored" : "");
    return NULL;
}

/* Memory being given to VMs that are starting (not yet Running in the DB), so that concurrent
 * starts cannot both take the same free memory. */
static pthread_mutex_t place_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t place_reserved;

static xerr *vm_boot(xapid *x, const char *ref, const xv *vm, bool paused, const char *restore)
{
    int64_t need = xrec_int(vm, "memory_static_max", 0) + vm_overhead(x, vm);
    pthread_mutex_lock(&place_lock);
    int64_t avail = host_free_memory(x, ref) - place_reserved;
    if (avail < 0)
        avail = 0;
    bool fits = need <= avail;
    if (fits)
        place_reserved += need;
    pthread_mutex_unlock(&place_lock);
    if (!fits) {
        char n[32], a[32];
        snprintf(n, sizeof(n), "%lld", (long long)need);
        snprintf(a, sizeof(a), "%lld", (long long)avail);
        return xerr_new("HOST_NOT_ENOUGH_FREE_MEMORY", n, a);
    }
    xerr *e = vm_boot_placed(x, ref, vm, paused, restore);
    pthread_mutex_lock(&place_lock);
    place_reserved -= need; /* now counted through the DB (Running), or not at all */
    pthread_mutex_unlock(&place_lock);
    return e;
}

/* Stops tracking a VMM that has exited (or is being made to): detaches its devices, records the
 * new power state, removes it from the table. Overlapping operations (hard_shutdown beside
 * clean_shutdown, clean_reboot, suspend or the monitor) may both get here: the first does it,
 * a later call waits for it and does nothing (no VDI is detached twice). */
static xerr *vm_teardown_once(xapid *x, vmrun *r, const char *new_state);
static xerr *vm_teardown(xapid *x, vmrun *r, const char *new_state)
{
    pthread_mutex_lock(&r->teardown_lock);
    xerr *e = r->torn ? NULL : vm_teardown_once(x, r, new_state);
    pthread_mutex_unlock(&r->teardown_lock);
    return e;
}

/* Whether a hard shutdown has been asked for the VMM (a reboot must not follow). */
static bool run_halting(vmrun *r)
{
    pthread_mutex_lock(&r->lock);
    bool h = r->halting;
    pthread_mutex_unlock(&r->lock);
    return h;
}

static xerr *vm_teardown_once(xapid *x, vmrun *r, const char *new_state)
{
    AUTO(xv) *vbds = NULL, *vifs = NULL;
    xerr *e = vm_devices(x, r->ref, &vbds, &vifs);
    if (e)
        return e;
    r->torn = true; /* under teardown_lock; from here on it is not repeated */
    /* the VMM must be gone before its disks are detached */
    if (!vmmc_wait_closed(r->c, 5) && r->pid > 0) {
        kill(r->pid, SIGKILL);
        vmmc_wait_closed(r->c, 5);
    }
    vmm_gone(r);
    detach_all(x, r, vifs);
    remove_run_files(x, r->uuid, true);
    e = record_state(x, r->ref, new_state, -1, NULL, false);
    run_remove(r);
    return e;
}

/* Asks the VMM to stop at once and waits for it to go. */
static xerr *vmm_kill(vmrun *r)
{
    pthread_mutex_lock(&r->lock);
    r->expect_exit = true;
    pthread_mutex_unlock(&r->lock);
    xerr *e = vmmc_call(r->c, "quit", NULL, 5, NULL);
    if (e)
        xerr_free(e);
    if (!vmmc_wait_closed(r->c, 10)) {
        if (r->pid > 0)
            kill(r->pid, SIGKILL);
        if (!vmmc_wait_closed(r->c, 10))
            return xerr_internal("nuvem-vmm (pid %d) does not exit", r->pid);
    }
    return NULL;
}

static xerr *need_run(const char *ref, vmrun *r)
{
    if (!r)
        return xerr_new("INTERNAL_ERROR", "the VM's nuvem-vmm is not known to this daemon");
    (void)ref;
    return NULL;
}

/* ---- the monitor: guest-initiated exits and metrics --------------------------------------- */

static xerr *apply_exit(xapid *x, vmrun *r, const xv *vm, const char *event)
{
    const char *action = "destroy";
    if (!strcmp(event, "reboot"))
        action = xrec_str(vm, "actions_after_reboot");
    else if (!strcmp(event, "shutdown"))
        action = xrec_str(vm, "actions_after_shutdown");
    else
        action = xrec_str(vm, "actions_after_crash");
    log_info("VM %s: guest %s; actions_after: %s", r->ref, event, action);
    AUTOFREE char *ref = xstrdup(r->ref);
    xerr *e = vm_teardown(x, r, "Halted");
    if (e || run_halting(r))
        return e;
    if (!strcmp(action, "restart") || !strcmp(action, "rename_restart")) {
        AUTO(xv) *fresh = NULL;
        if ((e = store_get_record(x->st, XCLS(VM), ref, &fresh)))
            return e;
        return vm_boot(x, ref, fresh, false, NULL);
    }
    return NULL;
}

static void monitor_exit(xapid *x, const char *ref)
{
    /* the operation that may hold the VM finishes first (bounded wait) */
    vmop o = {0};
    xerr *e = NULL;
    for (int i = 0; i < 600 && !__atomic_load_n(&R.stop, __ATOMIC_RELAXED); i++) {
        struct claim c = {.ref = ref, .op = "monitor", .key = "monitor", .check_busy = true};
        e = store_write(x->st, claim_txn, &c);
        if (!e) {
            o.x = x;
            o.ref = xstrdup(ref);
            o.key = xstrdup("monitor");
            o.rec = c.rec;
            break;
        }
        if (strcmp(e->code, "OTHER_OPERATION_IN_PROGRESS") != 0)
            break;
        xerr_free(e);
        e = NULL;
        usleep(100000);
    }
    if (e || !o.ref) {
        log_warn("VM %s: exit not handled: %s", ref, e ? e->code : "busy");
        xerr_free(e);
        return;
    }
    AUTORUN *r = run_get(ref);
    if (r) {
        pthread_mutex_lock(&r->lock);
        bool handle = r->exited && !r->expect_exit;
        char event[16];
        snprintf(event, sizeof(event), "%s", r->last_event[0] ? r->last_event : "crash");
        pthread_mutex_unlock(&r->lock);
        if (handle) {
            if (!strcmp(event, "crash") && !r->last_event[0])
                log_warn("VM %s: nuvem-vmm (pid %d) exited without a guest event", ref, r->pid);
            e = apply_exit(x, r, o.rec, event);
            if (e) {
                log_warn("VM %s: after %s: %s %s", ref, event, e->code,
                         e->nparams ? e->params[0] : "");
                xerr_free(e);
            }
        }
    }
    vmop_end(&o);
}

struct gm_p {
    const char *ref;
    const xv *data;
};

static xv *map_of_prefix(const xv *data, const char *prefix)
{
    xv *m = xv_new_struct();
    size_t n = strlen(prefix);
    for (size_t i = 0; data && i < xv_struct_len(data); i++) {
        const char *k = data->u.st.keys[i];
        const char *v = xv_str(data->u.st.vals[i]);
        if (v && !strncmp(k, prefix, n))
            xv_struct_set(m, k + n, xv_new_string(v));
    }
    return m;
}

static xerr *guest_metrics_txn(store_txn *t, void *ud)
{
    struct gm_p *p = ud;
    AUTO(xv) *vm = NULL;
    xerr *e = st_get_record(t, XCLS(VM), p->ref, &vm);
    if (e)
        return e;
    const char *gm = xrec_str(vm, "guest_metrics");
    AUTOFREE char *gref = NULL;
    if (xref_set(gm) && st_exists(t, XCLS(VM_guest_metrics), gm)) {
        gref = xstrdup(gm);
    } else {
        AUTO(xv) *rec = xv_new_struct();
        if ((e = st_create(t, XCLS(VM_guest_metrics), NULL, rec, &gref)) ||
            (e = xset(t, XCLS(VM), p->ref, "guest_metrics", xv_new_string(gref))))
            return e;
    }
    const api_class *G = XCLS(VM_guest_metrics);
    /* os_version: name, uname, distro, major, minor as XCP's agent reports them */
    xv *os = map_of_prefix(p->data, "os/");
    const char *name = xv_struct_get_str(os, "name");
    if (name)
        xv_struct_set(os, "name", xv_new_string(name));
    xv *nets = xv_new_struct();
    for (size_t i = 0; i < xv_struct_len(p->data); i++) {
        const char *k = p->data->u.st.keys[i];
        const char *v = xv_str(p->data->u.st.vals[i]);
        unsigned n;
        char kind[16];
        if (v && sscanf(k, "net/%u/%15s", &n, kind) == 2 && strcmp(kind, "mac") != 0) {
            char key[48];
            snprintf(key, sizeof(key), "%u/%s", n, !strcmp(kind, "ipv4") ? "ip" : kind);
            xv_struct_set(nets, key, xv_new_string(v));
        }
    }
    xv *memory = xv_new_struct();
    const char *tot = xv_struct_get_str(p->data, "memory/total_kib");
    const char *fre = xv_struct_get_str(p->data, "memory/free_kib");
    if (tot)
        xv_struct_set(memory, "total", xv_new_string(tot));
    if (fre)
        xv_struct_set(memory, "free", xv_new_string(fre));
    xv *other = xv_new_struct();
    const char *up = xv_struct_get_str(p->data, "agent/up");
    xv_struct_set(other, "feature-shutdown", xv_new_string("1"));
    if (up)
        xv_struct_set(other, "agent-up", xv_new_string(up));
    const char *vc = xv_struct_get_str(p->data, "vcpus/online");
    if (vc)
        xv_struct_set(other, "vcpus-online", xv_new_string(vc));
    xv *pv = xv_new_struct();
    xv_struct_set(pv, "major", xv_new_string("0"));
    xv_struct_set(pv, "minor", xv_new_string("1"));
    xv_struct_set(pv, "micro", xv_new_string("0"));
    if ((e = xset(t, G, gref, "os_version", os)) || (e = xset(t, G, gref, "networks", nets)) ||
        (e = xset(t, G, gref, "memory", memory)) || (e = xset(t, G, gref, "other", other)) ||
        (e = xset(t, G, gref, "PV_drivers_version", pv)) ||
        (e = xset(t, G, gref, "PV_drivers_up_to_date", xv_new_bool(true))) ||
        (e = xset(t, G, gref, "PV_drivers_detected", xv_new_bool(true))) ||
        (e = xset(t, G, gref, "live", xv_new_bool(true))) ||
        (e = xset(t, G, gref, "last_updated", xv_new_datetime_epoch(now_epoch()))))
        return e;
    return NULL;
}

struct metrics_p {
    const char *ref;
    int64_t memory_actual, vcpus;
    const char *state; /* or NULL */
};

static xerr *metrics_txn(store_txn *t, void *ud)
{
    struct metrics_p *p = ud;
    AUTO(xv) *vm = NULL;
    xerr *e = st_get_record(t, XCLS(VM), p->ref, &vm);
    if (e)
        return e;
    const char *m = xrec_str(vm, "metrics");
    if (!xref_set(m) || !st_exists(t, XCLS(VM_metrics), m))
        return NULL;
    AUTO(xv) *mr = NULL;
    if ((e = st_get_record(t, XCLS(VM_metrics), m, &mr)))
        return e;
    if (p->memory_actual >= 0 && xrec_int(mr, "memory_actual", -1) != p->memory_actual &&
        (e = xset(t, XCLS(VM_metrics), m, "memory_actual", xv_new_int(p->memory_actual))))
        return e;
    if (p->vcpus > 0 && xrec_int(mr, "VCPUs_number", -1) != p->vcpus &&
        (e = xset(t, XCLS(VM_metrics), m, "VCPUs_number", xv_new_int(p->vcpus))))
        return e;
    return NULL;
}

/* A crashed guest kept paused: power_state and, with it, allowed_operations. */
static xerr *crash_paused_txn(store_txn *t, void *ud)
{
    xerr *e = xset(t, XCLS(VM), ud, "power_state", xv_new_string("Paused"));
    return e ? e : refresh_allowed(t, ud);
}

static void monitor_update(xapid *x, const char *ref)
{
    AUTORUN *r = run_get(ref);
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    AUTO(xv) *gd = r->guest_dirty ? xv_copy(r->guest_data) : NULL;
    bool md = r->metrics_dirty;
    r->guest_dirty = r->metrics_dirty = false;
    struct metrics_p mp = {
        .ref = ref, .memory_actual = r->balloon_actual, .vcpus = r->vcpus_online};
    bool crashed = !strcmp(r->last_event, "crash") && !r->exited && !r->expect_exit;
    pthread_mutex_unlock(&r->lock);
    xerr *e = NULL;
    if (crashed && !vmmc_wait_closed(r->c, 0.5)) {
        /* actions_after_crash=preserve: the VMM keeps the crashed guest paused (on_crash=pause);
         * other actions make it exit, which the half-second wait lets happen first */
        log_info("VM %s: crashed; kept paused (actions_after_crash preserve)", ref);
        e = store_write(x->st, crash_paused_txn, (void *)ref);
    }
    if (!e && gd) {
        struct gm_p p = {ref, gd};
        e = store_write(x->st, guest_metrics_txn, &p);
    }
    if (!e && md)
        e = store_write(x->st, metrics_txn, &mp);
    if (e) {
        log_debug("VM %s: metrics: %s", ref, e->code);
        xerr_free(e);
    }
}

static void *monitor_main(void *arg)
{
    xapid *x = arg;
    pthread_mutex_lock(&R.lock);
    while (!R.stop) {
        struct job *j = R.jobs;
        if (!j) {
            pthread_cond_wait(&R.cond, &R.lock);
            continue;
        }
        R.jobs = j->next;
        if (!R.jobs)
            R.jobs_tail = &R.jobs;
        pthread_mutex_unlock(&R.lock);
        if (j->kind == JOB_EXIT)
            monitor_exit(x, j->ref);
        else
            monitor_update(x, j->ref);
        free(j->ref);
        free(j);
        pthread_mutex_lock(&R.lock);
    }
    pthread_mutex_unlock(&R.lock);
    return NULL;
}

/* Host memory and page sharing figures, every few seconds. */
static void update_host_metrics(xapid *x)
{
    AUTO(xv) *host = NULL, *hm = NULL;
    xerr *e = store_get_record(x->st, XCLS(host), x->host_ref, &host);
    const char *m = xrec_str(host, "metrics");
    if (!e)
        e = store_get_record(x->st, XCLS(host_metrics), m, &hm);
    if (e) {
        xerr_free(e);
        return;
    }
    int64_t fm = host_free_memory(x, NULL);
    if (xrec_int(hm, "memory_free", -1) != fm) {
        AUTO(xv) *v = xv_new_int(fm);
        xerr_free(store_set_field(x->st, XCLS(host_metrics), m,
                                  xfield(XCLS(host_metrics), "memory_free"), v));
    }
    /* KSM: pages shared host-wide */
    AUTOFREE char *shar = NULL;
    if (read_file("/sys/kernel/mm/ksm/pages_sharing", &shar, NULL) == 0) {
        shar[strcspn(shar, "\n")] = '\0';
        const char *old = xrec_map_str(host, "other_config", "ksm_pages_sharing");
        AUTO(xv) *oc = xv_copy(xv_struct_get(host, "other_config"));
        if ((!old || strcmp(old, shar) != 0) && oc && oc->kind == XV_STRUCT) {
            xv_struct_set(oc, "ksm_pages_sharing", xv_new_string(shar));
            xerr_free(store_set_field(x->st, XCLS(host), x->host_ref,
                                      xfield(XCLS(host), "other_config"), oc));
        }
    }
}

/* Per VM: pages KSM merged (kernel's /proc/PID/ksm_merging_pages), in VM_metrics.other_config. */
static void update_vm_sharing(xapid *x)
{
    pthread_mutex_lock(&R.lock);
    size_t n = 0;
    for (vmrun *r = R.list; r; r = r->next)
        n++;
    char **refs = xcalloc(n ? n : 1, sizeof(char *));
    int *pids = xcalloc(n ? n : 1, sizeof(int));
    n = 0;
    for (vmrun *r = R.list; r; r = r->next) {
        refs[n] = xstrdup(r->ref);
        pids[n++] = r->pid;
    }
    pthread_mutex_unlock(&R.lock);
    for (size_t i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ksm_merging_pages", pids[i]);
        AUTOFREE char *v = NULL;
        if (read_file(path, &v, NULL) == 0) {
            v[strcspn(v, "\n")] = '\0';
            AUTO(xv) *vm = NULL;
            AUTO(xerr) *ve = store_get_record(x->st, XCLS(VM), refs[i], &vm);
            if (!ve) {
                const char *m = xrec_str(vm, "metrics");
                AUTO(xv) *mr = NULL;
                AUTO(xerr) *me =
                    xref_set(m) ? store_get_record(x->st, XCLS(VM_metrics), m, &mr) : NULL;
                if (xref_set(m) && !me) {
                    const char *old = xrec_map_str(mr, "other_config", "pages_shared");
                    if (!old || strcmp(old, v) != 0) {
                        AUTO(xv) *oc = xv_copy(xv_struct_get(mr, "other_config"));
                        if (oc && oc->kind == XV_STRUCT) {
                            xv_struct_set(oc, "pages_shared", xv_new_string(v));
                            xerr_free(store_set_field(x->st, XCLS(VM_metrics), m,
                                                      xfield(XCLS(VM_metrics), "other_config"),
                                                      oc));
                        }
                    }
                }
            }
        }
        free(refs[i]);
    }
    free(refs);
    free(pids);
}

static void *metrics_main(void *arg)
{
    xapid *x = arg;
    pthread_mutex_lock(&R.lock);
    while (!R.stop) {
        pthread_mutex_unlock(&R.lock);
        update_host_metrics(x);
        update_vm_sharing(x);
        pthread_mutex_lock(&R.lock);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 5;
        while (!R.stop && pthread_cond_timedwait(&R.cond, &R.lock, &ts) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&R.lock);
    return NULL;
}

/* ---- power operations --------------------------------------------------------------------- */

/* ---- suspend images in VDIs --------------------------------------------------------------
 * suspend: the VMM saves to <run>/<uuid>.sav, which is copied into a new VDI of type suspend on
 * the VM's suspend_SR (else the pool's suspend_image_SR) whose other_config records the image's
 * length; VM.suspend_VDI names it. resume copies it back out, restores, and destroys it. */

static char *image_path(xapid *x, const char *uuid)
{
    return run_path(x, uuid, "sav");
}

static xerr *suspend_sr(xapid *x, const char *ref, const xv *vm, char **ret)
{
    const char *sr = xrec_str(vm, "suspend_SR");
    AUTO(xv) *rec = NULL;
    xerr *e = xref_set(sr) ? store_get_record(x->st, XCLS(SR), sr, &rec) : NULL;
    if (xref_set(sr) && !e) {
        *ret = xstrdup(sr);
        return NULL;
    }
    xerr_free(e); /* a suspend_SR that is gone: the pool's is used */
    AUTO(xv) *pool = NULL;
    e = store_get_record(x->st, XCLS(pool), x->pool_ref, &pool);
    if (e)
        return e;
    sr = xrec_str(pool, "suspend_image_SR");
    if (!xref_set(sr))
        return xerr_new("VM_NO_SUSPEND_SR", ref);
    *ret = xstrdup(sr);
    return NULL;
}

/* Copies the image file into a new suspend VDI. */
static xerr *image_to_vdi(api_ctx *ctx, const char *ref, const xv *vm, const char *file,
                          char **ret_vdi)
{
    xapid *x = ctx->x;
    struct stat st;
    if (stat(file, &st) < 0)
        return xerr_internal("suspend image %s: %s", file, strerror(errno));
    AUTOFREE char *sr = NULL;
    xerr *e = suspend_sr(x, ref, vm, &sr);
    if (e)
        return e;
    AUTO(xv) *a = xv_new_struct();
    AUTOFREE char *label = xasprintf("Suspend image for %s", xrec_str(vm, "name_label"));
    AUTOFREE char *len = xasprintf("%lld", (long long)st.st_size);
    xv_struct_set(a, "name_label", xv_new_string(label));
    xv_struct_set(a, "name_description", xv_new_string(""));
    xv_struct_set(a, "SR", xv_new_string(sr));
    xv_struct_set(a, "virtual_size", xv_new_int(((int64_t)st.st_size + 511) / 512 * 512));
    xv_struct_set(a, "type", xv_new_string("suspend"));
    xv_struct_set(a, "sharable", xv_new_bool(false));
    xv_struct_set(a, "read_only", xv_new_bool(false));
    xv *oc = xv_new_struct();
    xv_struct_set(oc, "nuvem-suspend-bytes", xv_new_string(len));
    xv_struct_set(a, "other_config", oc);
    AUTO(xv) *vdi = NULL;
    if ((e = api_VDI_create(ctx, a, &vdi)))
        return e;
    AUTOFREE char *path = NULL;
    const char *fmt = NULL;
    if (!(e = xapid_storage_vdi_attach(x, xv_str(vdi), true, &path, &fmt))) {
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        vhd *v = NULL;
        int rc = fd < 0 ? -errno : vhd_open(path, VHD_OPEN_RDWR, &v);
        if (rc == 0)
            rc = vhd_import_raw(v, fd);
        if (rc == 0)
            rc = vhd_flush(v);
        vhd_close(v);
        if (fd >= 0)
            close(fd);
        if (rc < 0)
            e = xerr_internal("writing the suspend image: %s", strerror(-rc));
        xerr_free(xapid_storage_vdi_detach(x, xv_str(vdi)));
    }
    if (e) {
        xerr_free(api_VDI_destroy(ctx, xv_str(vdi)));
        return e;
    }
    *ret_vdi = xstrdup(xv_str(vdi));
    return NULL;
}

/* Copies a suspend VDI's image out to file. */
static xerr *vdi_to_image(xapid *x, const char *vm, const char *vdi, const char *file)
{
    AUTO(xv) *rec = NULL;
    xerr *e = store_get_record(x->st, XCLS(VDI), vdi, &rec);
    if (e)
        return e;
    const char *len = xrec_map_str(rec, "other_config", "nuvem-suspend-bytes");
    long long n = len ? atoll(len) : -1;
    if (n <= 0)
        return xerr_new("VM_FAILED_START", vm, "the suspend VDI has no image length");
    AUTOFREE char *path = NULL;
    if ((e = xapid_storage_vdi_attach(x, vdi, false, &path, NULL)))
        return e;
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    vhd *v = NULL;
    int rc = fd < 0 ? -errno : vhd_open(path, VHD_OPEN_RDONLY, &v);
    const size_t chunk = 1 << 20;
    AUTOFREE uint8_t *buf = rc == 0 ? xmalloc(chunk) : NULL;
    for (long long off = 0; rc == 0 && off < n;) {
        size_t want = (size_t)(n - off) < chunk ? (size_t)(n - off) : chunk;
        size_t rd = (want + 511) / 512 * 512;
        rc = vhd_read(v, buf, (uint64_t)off, rd);
        for (size_t done = 0; rc == 0 && done < want;) {
            ssize_t w = write(fd, buf + done, want - done);
            if (w < 0 && errno != EINTR)
                rc = -errno;
            else if (w > 0)
                done += (size_t)w;
        }
        off += (long long)want;
    }
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    vhd_close(v);
    if (fd >= 0)
        close(fd);
    xerr_free(xapid_storage_vdi_detach(x, vdi));
    if (rc < 0) {
        unlink(file);
        return xerr_internal("reading the suspend image: %s", strerror(-rc));
    }
    return NULL;
}

/* Forgets a VM's suspend image (hard shutdown, destroy, power_state_reset of a suspended VM). */
static void drop_suspend_vdi(api_ctx *ctx, const char *ref, const xv *vm)
{
    const char *vdi = xrec_str(vm, "suspend_VDI");
    /* only a suspended VM's image is its own (VM.create accepts any VDI as suspend_VDI) */
    if (!xref_set(vdi) || strcmp(xrec_str(vm, "power_state"), "Suspended") != 0)
        return;
    xerr *e = api_VDI_destroy(ctx, vdi);
    if (e) {
        log_warn("VM %s: suspend VDI %s: %s", ref, vdi, e->code);
        xerr_free(e);
    }
    AUTO(xv) *nul = xv_new_string(NULL_REF);
    xerr_free(store_set_field(ctx->x->st, XCLS(VM), ref, xfield(XCLS(VM), "suspend_VDI"), nul));
}

xerr *api_VM_start(api_ctx *ctx, const char *p_vm, bool p_start_paused, bool p_force)
{
    (void)p_force;
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "start", &o);
    if (e)
        return e;
    return vm_boot(ctx->x, p_vm, o.rec, p_start_paused, NULL);
}

static xerr *check_host(api_ctx *ctx, const char *host)
{
    AUTO(xv) *rec = NULL;
    xerr *e = store_get_record(ctx->x->st, XCLS(host), host, &rec);
    if (e)
        return e;
    if (strcmp(host, ctx->x->host_ref) != 0)
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "the host is not this pool's member running the call");
    return NULL;
}

xerr *api_VM_start_on(api_ctx *ctx, const char *p_vm, const char *p_host, bool p_start_paused,
                      bool p_force)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "start_on", &o);
    if (!e)
        e = check_host(ctx, p_host);
    if (e)
        return e;
    (void)p_force;
    return vm_boot(ctx->x, p_vm, o.rec, p_start_paused, NULL);
}

/* Waits for a VMM the daemon asked to stop (expect_exit set) to exit; false on timeout, with
 * expect_exit cleared again unless it exited meanwhile. */
static bool wait_exit(vmrun *r, double timeout)
{
    if (vmmc_wait_closed(r->c, timeout))
        return true;
    pthread_mutex_lock(&r->lock);
    bool exited = r->exited;
    if (!exited)
        r->expect_exit = false;
    pthread_mutex_unlock(&r->lock);
    return exited;
}

static void expect(vmrun *r)
{
    pthread_mutex_lock(&r->lock);
    r->expect_exit = true;
    r->last_event[0] = '\0';
    pthread_mutex_unlock(&r->lock);
}

static void unexpect(vmrun *r)
{
    pthread_mutex_lock(&r->lock);
    bool exited = r->exited;
    r->expect_exit = false;
    pthread_mutex_unlock(&r->lock);
    if (exited) /* it went meanwhile: the monitor handles it as a guest exit */
        job_push(JOB_EXIT, r->ref);
}

static xerr *clean_shutdown(xapid *x, const char *ref, vmrun *r)
{
    expect(r);
    xerr *e = vmmc_call(r->c, "powerdown", NULL, VMM_CALL_TIMEOUT, NULL);
    if (e) {
        unexpect(r);
        return e;
    }
    if (!wait_exit(r, (double)x->cfg.shutdown_timeout)) {
        char t[32];
        snprintf(t, sizeof(t), "%lld", (long long)x->cfg.shutdown_timeout);
        return xerr_new("VM_SHUTDOWN_TIMEOUT", ref, t);
    }
    return vm_teardown(x, r, "Halted");
}

static xerr *hard_shutdown(api_ctx *ctx, const char *ref, const xv *vm, vmrun *r)
{
    xapid *x = ctx->x;
    if (!strcmp(xrec_str(vm, "power_state"), "Suspended")) {
        drop_suspend_vdi(ctx, ref, vm);
        return record_state(x, ref, "Halted", -1, NULL, false);
    }
    xerr *e = need_run(ref, r);
    if (e)
        return e;
    pthread_mutex_lock(&r->lock);
    r->halting = true;
    pthread_mutex_unlock(&r->lock);
    if ((e = vmm_kill(r)))
        return e;
    return vm_teardown(x, r, "Halted");
}

xerr *api_VM_clean_shutdown(api_ctx *ctx, const char *p_vm)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "clean_shutdown", &o);
    if (e)
        return e;
    AUTORUN *r = run_get(p_vm);
    if ((e = need_run(p_vm, r)))
        return e;
    return clean_shutdown(ctx->x, p_vm, r);
}

xerr *api_VM_hard_shutdown(api_ctx *ctx, const char *p_vm)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "hard_shutdown", &o);
    if (e)
        return e;
    AUTORUN *r = run_get(p_vm);
    return hard_shutdown(ctx, p_vm, o.rec, r);
}

xerr *api_VM_shutdown(api_ctx *ctx, const char *p_vm)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "shutdown", &o);
    if (e)
        return e;
    AUTORUN *r = run_get(p_vm);
    if (r && !strcmp(xrec_str(o.rec, "power_state"), "Running")) {
        e = clean_shutdown(ctx->x, p_vm, r);
        if (!e)
            return NULL;
        log_info("VM %s: clean shutdown failed (%s); shutting down hard", p_vm, e->code);
        xerr_free(e);
    }
    return hard_shutdown(ctx, p_vm, o.rec, r);
}

/* Whether the guest's agent is there (it can act on control/shutdown). */
static bool agent_connected(vmrun *r)
{
    AUTO(xv) *g = NULL;
    xerr *e = vmmc_call(r->c, "query-guest", NULL, VMM_CALL_TIMEOUT, &g);
    if (e) {
        xerr_free(e);
        return false;
    }
    return xrec_bool(g, "connected");
}

static xerr *reboot_fresh(xapid *x, const char *ref)
{
    AUTO(xv) *fresh = NULL;
    xerr *e = store_get_record(x->st, XCLS(VM), ref, &fresh);
    if (e)
        return e;
    return vm_boot(x, ref, fresh, false, NULL);
}

xerr *api_VM_clean_reboot(api_ctx *ctx, const char *p_vm)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "clean_reboot", &o);
    if (e)
        return e;
    AUTORUN *r = run_get(p_vm);
    if ((e = need_run(p_vm, r)))
        return e;
    if (!agent_connected(r))
        return xerr_new("VM_MISSING_PV_DRIVERS", p_vm);
    expect(r);
    xv *args = xv_new_struct();
    xv_struct_set(args, "key", xv_new_string("control/shutdown"));
    xv_struct_set(args, "value", xv_new_string("reboot"));
    if ((e = vmmc_call(r->c, "guest-set", args, VMM_CALL_TIMEOUT, NULL))) {
        unexpect(r);
        return e;
    }
    if (!wait_exit(r, (double)ctx->x->cfg.shutdown_timeout)) {
        char t[32];
        snprintf(t, sizeof(t), "%lld", (long long)ctx->x->cfg.shutdown_timeout);
        return xerr_new("VM_SHUTDOWN_TIMEOUT", p_vm, t);
    }
    if ((e = vm_teardown(ctx->x, r, "Halted")))
        return e;
    if (run_halting(r)) /* a hard_shutdown came meanwhile: it wins */
        return xerr_new("VM_BAD_POWER_STATE", p_vm, "running", "halted");
    return reboot_fresh(ctx->x, p_vm);
}

xerr *api_VM_hard_reboot(api_ctx *ctx, const char *p_vm)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "hard_reboot", &o);
    if (e)
        return e;
    AUTORUN *r = run_get(p_vm);
    if ((e = need_run(p_vm, r)) || (e = vmm_kill(r)) || (e = vm_teardown(ctx->x, r, "Halted")))
        return e;
    if (run_halting(r)) /* a hard_shutdown came meanwhile: it wins */
        return xerr_new("VM_BAD_POWER_STATE", p_vm, "running", "halted");
    return reboot_fresh(ctx->x, p_vm);
}

static xerr *pause_resume(api_ctx *ctx, const char *vm, const char *op, const char *cmd,
                          const char *state)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, vm, op, &o);
    if (e)
        return e;
    AUTORUN *r = run_get(vm);
    if ((e = need_run(vm, r)) || (e = vmmc_call(r->c, cmd, NULL, VMM_CALL_TIMEOUT, NULL)))
        return e;
    AUTO(xv) *ps = xv_new_string(state);
    if ((e = store_set_field(ctx->x->st, XCLS(VM), vm, xfield(XCLS(VM), "power_state"), ps)))
        return e;
    AUTO(xv) *st = xv_new_array();
    xv_array_append(st, xv_new_string(!strcmp(state, "Paused") ? "paused" : "running"));
    const char *m = xrec_str(o.rec, "metrics");
    if (xref_set(m))
        xerr_free(store_set_field(ctx->x->st, XCLS(VM_metrics), m,
                                  xfield(XCLS(VM_metrics), "state"), st));
    return NULL;
}

xerr *api_VM_pause(api_ctx *ctx, const char *p_vm)
{
    return pause_resume(ctx, p_vm, "pause", "pause", "Paused");
}

xerr *api_VM_unpause(api_ctx *ctx, const char *p_vm)
{
    return pause_resume(ctx, p_vm, "unpause", "resume", "Running");
}

xerr *api_VM_suspend(api_ctx *ctx, const char *p_vm)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "suspend", &o);
    if (e)
        return e;
    AUTORUN *r = run_get(p_vm);
    if ((e = need_run(p_vm, r)))
        return e;
    AUTOFREE char *sr = NULL;
    if ((e = suspend_sr(ctx->x, p_vm, o.rec, &sr)))
        return e;
    AUTOFREE char *path = image_path(ctx->x, r->uuid);
    unlink(path);
    xv *args = xv_new_struct();
    xv_struct_set(args, "path", xv_new_string(path));
    AUTOFREE char *vdi = NULL;
    e = vmmc_call(r->c, "save", args, 600, NULL);
    if (!e)
        e = image_to_vdi(ctx, p_vm, o.rec, path, &vdi);
    unlink(path);
    if (e) {
        /* the VMM leaves the guest paused after a save: let it run again */
        xerr_free(vmmc_call(r->c, "resume", NULL, VMM_CALL_TIMEOUT, NULL));
        return e;
    }
    if (!(e = vmm_kill(r)) && run_halting(r))
        e = xerr_new("VM_BAD_POWER_STATE", p_vm, "running", "halted"); /* hard_shutdown won */
    if (e || (e = vm_teardown(ctx->x, r, "Suspended"))) {
        xerr_free(api_VDI_destroy(ctx, vdi));
        return e;
    }
    AUTO(xv) *sv = xv_new_string(vdi);
    return store_set_field(ctx->x->st, XCLS(VM), p_vm, xfield(XCLS(VM), "suspend_VDI"), sv);
}

static xerr *resume(api_ctx *ctx, const char *vm, const char *op, bool paused)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, vm, op, &o);
    if (e)
        return e;
    const char *vdi = xrec_str(o.rec, "suspend_VDI");
    if (!xref_set(vdi))
        return xerr_new("VM_FAILED_START", vm, "the VM has no suspend image");
    AUTOFREE char *path = image_path(ctx->x, xrec_str(o.rec, "uuid"));
    if ((e = vdi_to_image(ctx->x, vm, vdi, path)))
        return e;
    e = vm_boot(ctx->x, vm, o.rec, paused, path);
    unlink(path);
    if (e)
        return e;
    drop_suspend_vdi(ctx, vm, o.rec);
    return NULL;
}

xerr *api_VM_resume(api_ctx *ctx, const char *p_vm, bool p_start_paused, bool p_force)
{
    (void)p_force;
    return resume(ctx, p_vm, "resume", p_start_paused);
}

xerr *api_VM_resume_on(api_ctx *ctx, const char *p_vm, const char *p_host, bool p_start_paused,
                       bool p_force)
{
    (void)p_force;
    xerr *e = check_host(ctx, p_host);
    return e ? e : resume(ctx, p_vm, "resume_on", p_start_paused);
}

xerr *api_VM_power_state_reset(api_ctx *ctx, const char *p_vm)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "power_state_reset", &o);
    if (e)
        return e;
    AUTORUN *r = run_get(p_vm);
    if (r && vmmc_alive(r->c))
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "The VM is running on this host: shut it down instead");
    if (r)
        return vm_teardown(ctx->x, r, "Halted");
    drop_suspend_vdi(ctx, p_vm, o.rec);
    return record_state(ctx->x, p_vm, "Halted", -1, NULL, false);
}

/* ---- memory and vCPUs --------------------------------------------------------------------- */

struct limits {
    int64_t smin, smax, dmin, dmax;
};

static struct limits limits_of(const xv *vm)
{
    return (struct limits){
        xrec_int(vm, "memory_static_min", 0), xrec_int(vm, "memory_static_max", 0),
        xrec_int(vm, "memory_dynamic_min", 0), xrec_int(vm, "memory_dynamic_max", 0)};
}

static xerr *check_limits(const struct limits *l)
{
    if (!(0 <= l->smin && l->smin <= l->dmin && l->dmin <= l->dmax && l->dmax <= l->smax))
        return xerr_new("MEMORY_CONSTRAINT_VIOLATION_ORDER");
    return NULL;
}

struct mem_p {
    const char *ref;
    struct limits l;
};

static xerr *mem_txn(store_txn *t, void *ud)
{
    struct mem_p *p = ud;
    const api_class *V = XCLS(VM);
    xerr *e;
    if ((e = xset(t, V, p->ref, "memory_static_min", xv_new_int(p->l.smin))) ||
        (e = xset(t, V, p->ref, "memory_static_max", xv_new_int(p->l.smax))) ||
        (e = xset(t, V, p->ref, "memory_dynamic_min", xv_new_int(p->l.dmin))) ||
        (e = xset(t, V, p->ref, "memory_dynamic_max", xv_new_int(p->l.dmax))))
        return e;
    return NULL;
}

enum { L_SMIN = 1, L_SMAX = 2, L_DMIN = 4, L_DMAX = 8, L_MEMORY = 16 };

/* Applies new limits under operation op (which fixes the power states allowed): the fields in
 * mask take the values in order smin, smax, dmin, dmax; L_MEMORY is VM.set_memory (static max
 * and the dynamic range all to one value). A running VM's balloon target follows dynamic_max. */
static xerr *set_limits(api_ctx *ctx, const char *vm, const char *op, unsigned mask,
                        const int64_t *v)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, vm, op, &o);
    if (e)
        return e;
    struct mem_p p = {.ref = vm, .l = limits_of(o.rec)};
    int64_t *f[] = {&p.l.smin, &p.l.smax, &p.l.dmin, &p.l.dmax};
    if (mask & L_MEMORY) {
        p.l.smax = p.l.dmin = p.l.dmax = v[0];
        if (p.l.smin > v[0])
            p.l.smin = v[0];
    }
    for (unsigned i = 0, k = 0; i < 4; i++)
        if (mask & (1u << i))
            *f[i] = v[k++];
    if ((e = check_limits(&p.l)))
        return e;
    if (!strcmp(xrec_str(o.rec, "power_state"), "Running")) {
        AUTORUN *r = run_get(vm);
        if ((e = need_run(vm, r)))
            return e;
        xv *a = xv_new_struct();
        xv_struct_set(a, "bytes", xv_new_int(p.l.dmax));
        if ((e = vmmc_call(r->c, "set-balloon-target", a, VMM_CALL_TIMEOUT, NULL)))
            return e;
        AUTO(xv) *target = xv_new_int(p.l.dmax);
        xerr_free(
            store_set_field(ctx->x->st, XCLS(VM), vm, xfield(XCLS(VM), "memory_target"), target));
    }
    return store_write(ctx->x->st, mem_txn, &p);
}

xerr *api_VM_set_memory_dynamic_range(api_ctx *ctx, const char *p_self, int64_t p_min,
                                      int64_t p_max)
{
    return set_limits(ctx, p_self, "changing_dynamic_range", L_DMIN | L_DMAX,
                      (int64_t[]){p_min, p_max});
}

xerr *api_VM_set_memory_dynamic_min(api_ctx *ctx, const char *p_self, int64_t p_value)
{
    return set_limits(ctx, p_self, "changing_dynamic_range", L_DMIN, &p_value);
}

xerr *api_VM_set_memory_dynamic_max(api_ctx *ctx, const char *p_self, int64_t p_value)
{
    return set_limits(ctx, p_self, "changing_dynamic_range", L_DMAX, &p_value);
}

xerr *api_VM_set_memory_static_range(api_ctx *ctx, const char *p_self, int64_t p_min, int64_t p_max)
{
    return set_limits(ctx, p_self, "changing_static_range", L_SMIN | L_SMAX,
                      (int64_t[]){p_min, p_max});
}

xerr *api_VM_set_memory_static_min(api_ctx *ctx, const char *p_self, int64_t p_value)
{
    return set_limits(ctx, p_self, "changing_static_range", L_SMIN, &p_value);
}

xerr *api_VM_set_memory_static_max(api_ctx *ctx, const char *p_self, int64_t p_value)
{
    return set_limits(ctx, p_self, "changing_static_range", L_SMAX, &p_value);
}

xerr *api_VM_set_memory_limits(api_ctx *ctx, const char *p_self, int64_t p_static_min,
                               int64_t p_static_max, int64_t p_dynamic_min, int64_t p_dynamic_max)
{
    return set_limits(ctx, p_self, "changing_memory_limits", L_SMIN | L_SMAX | L_DMIN | L_DMAX,
                      (int64_t[]){p_static_min, p_static_max, p_dynamic_min, p_dynamic_max});
}

xerr *api_VM_set_memory(api_ctx *ctx, const char *p_self, int64_t p_value)
{
    return set_limits(ctx, p_self, "changing_memory_limits", L_MEMORY, &p_value);
}

xerr *api_VM_set_memory_target_live(api_ctx *ctx, const char *p_self, int64_t p_target)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_self, "changing_memory_live", &o);
    if (e)
        return e;
    struct limits l = limits_of(o.rec);
    if (p_target < l.dmin || p_target > l.dmax)
        return xerr_new("MEMORY_CONSTRAINT_VIOLATION", "dynamic_min <= target <= dynamic_max");
    AUTORUN *r = run_get(p_self);
    if ((e = need_run(p_self, r)))
        return e;
    xv *a = xv_new_struct();
    xv_struct_set(a, "bytes", xv_new_int(p_target));
    if ((e = vmmc_call(r->c, "set-balloon-target", a, VMM_CALL_TIMEOUT, NULL)))
        return e;
    AUTO(xv) *target = xv_new_int(p_target);
    return store_set_field(ctx->x->st, XCLS(VM), p_self, xfield(XCLS(VM), "memory_target"), target);
}

static xerr *set_vcpus_field(api_ctx *ctx, const char *vm, const char *field, int64_t v)
{
    AUTO(xv) *val = xv_new_int(v);
    return store_set_field(ctx->x->st, XCLS(VM), vm, xfield(XCLS(VM), field), val);
}

/* VCPUs_max (halted: at least VCPUs_at_startup, at most 64), VCPUs_at_startup (halted: 1 to
 * VCPUs_max) and the live count (running: 1 to VCPUs_max, also kept for the next start, as XAPI
 * does). param names the value in INVALID_VALUE. */
static xerr *set_vcpus(api_ctx *ctx, const char *vm, const char *op, const char *param, int64_t n)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, vm, op, &o);
    if (e)
        return e;
    bool is_max = !strcmp(param, "VCPUs_max");
    int64_t lo = is_max ? xrec_int(o.rec, "VCPUs_at_startup", 1) : 1;
    int64_t hi = is_max ? 64 : xrec_int(o.rec, "VCPUs_max", 1);
    if (n < 1 || n < lo || n > hi) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)n);
        return xerr_new("INVALID_VALUE", param, v);
    }
    if (!strcmp(op, "changing_VCPUs_live")) {
        AUTORUN *r = run_get(vm);
        if ((e = need_run(vm, r)))
            return e;
        xv *a = xv_new_struct();
        xv_struct_set(a, "count", xv_new_int(n));
        if ((e = vmmc_call(r->c, "set-vcpus", a, VMM_CALL_TIMEOUT, NULL)))
            return e;
    }
    return set_vcpus_field(ctx, vm, is_max ? "VCPUs_max" : "VCPUs_at_startup", n);
}

xerr *api_VM_set_VCPUs_max(api_ctx *ctx, const char *p_self, int64_t p_value)
{
    return set_vcpus(ctx, p_self, "changing_VCPUs", "VCPUs_max", p_value);
}

xerr *api_VM_set_VCPUs_at_startup(api_ctx *ctx, const char *p_self, int64_t p_value)
{
    return set_vcpus(ctx, p_self, "changing_VCPUs", "VCPUs_at_startup", p_value);
}

xerr *api_VM_set_VCPUs_number_live(api_ctx *ctx, const char *p_self, int64_t p_nvcpu)
{
    return set_vcpus(ctx, p_self, "changing_VCPUs_live", "nvcpu", p_nvcpu);
}

xerr *api_VM_set_actions_after_crash(api_ctx *ctx, const char *p_self, const char *p_value)
{
    AUTO(xv) *v = xv_new_string(p_value);
    return store_set_field(ctx->x->st, XCLS(VM), p_self, xfield(XCLS(VM), "actions_after_crash"),
                           v);
}

xerr *api_VM_compute_memory_overhead(api_ctx *ctx, const char *p_vm, xv **ret)
{
    AUTO(xv) *vm = NULL;
    xerr *e = store_get_record(ctx->x->st, XCLS(VM), p_vm, &vm);
    if (e)
        return e;
    *ret = xv_new_int(vm_overhead(ctx->x, vm));
    return NULL;
}

xerr *api_host_compute_free_memory(api_ctx *ctx, const char *p_host, xv **ret)
{
    AUTO(xv) *h = NULL;
    xerr *e = store_get_record(ctx->x->st, XCLS(host), p_host, &h);
    if (e)
        return e;
    *ret = xv_new_int(host_free_memory(ctx->x, NULL));
    return NULL;
}

xerr *api_host_compute_memory_overhead(api_ctx *ctx, const char *p_host, xv **ret)
{
    AUTO(xv) *h = NULL;
    xerr *e = store_get_record(ctx->x->st, XCLS(host), p_host, &h);
    if (e)
        return e;
    *ret = xv_new_int(meminfo_bytes("MemTotal:") - host_available_at_start);
    return NULL;
}

/* ---- clone, copy, snapshot, revert, provision, destroy ------------------------------------ */

/* A new VM record from vm: every field a caller could set, none of the runtime ones. */
static xv *copy_record(const xv *vm, const char *new_name)
{
    const api_class *c = XCLS(VM);
    xv *rec = xv_new_struct();
    for (size_t i = 0; i < c->nfields; i++) {
        const api_field *f = &c->fields[i];
        if (f->derived_cls >= 0 || f->qual == API_Q_RO_RUNTIME || !strcmp(f->name, "uuid"))
            continue;
        const xv *v = xv_struct_get(vm, f->name);
        if (v)
            xv_struct_set(rec, f->name, xv_copy(v));
    }
    xv_struct_set(rec, "name_label", xv_new_string(new_name));
    xv_struct_set(rec, "power_state", xv_new_string("Halted"));
    xv_struct_set(rec, "suspend_VDI", xv_new_string(NULL_REF));
    xv_struct_set(rec, "last_booted_record", xv_new_string(""));
    return rec;
}

enum dup_kind { DUP_CLONE, DUP_COPY, DUP_SNAPSHOT };

/* Copies a VM with its disks (cloned, copied to sr, or snapshotted) and NICs (new MACs). */
static xerr *vm_duplicate(api_ctx *ctx, const char *vm_ref, const xv *vm, const char *new_name,
                          enum dup_kind kind, const char *sr, const xv *ignore_vdis, char **ret)
{
    xapid *x = ctx->x;
    AUTO(xv) *rec = copy_record(vm, new_name);
    if (kind == DUP_SNAPSHOT)
        xv_struct_set(rec, "is_a_template", xv_new_bool(true));
    char *nref = NULL;
    xerr *e = store_create(x->st, XCLS(VM), rec, &nref);
    if (e)
        return e;
    AUTOFREE char *new_ref = nref;
    AUTO(xv) *vbds = NULL, *vifs = NULL;
    if ((e = vm_devices(x, vm_ref, &vbds, &vifs)))
        goto fail;
    for (size_t i = 0; i < xv_struct_len(vbds); i++) {
        const xv *vbd = vbds->u.st.vals[i];
        const char *vdi = xrec_str(vbd, "VDI");
        AUTO(xv) *nvdi = NULL;
        bool disk =
            !strcmp(xrec_str(vbd, "type"), "Disk") && !xrec_bool(vbd, "empty") && xref_set(vdi);
        bool ignored = false;
        for (size_t k = 0; ignore_vdis && k < xv_array_len(ignore_vdis); k++)
            if (!strcmp(xv_str(xv_array_get(ignore_vdis, k)) ?: "", vdi))
                ignored = true;
        if (ignored)
            continue;
        if (disk) {
            AUTO(xv) *dp = xv_new_struct();
            if (kind == DUP_CLONE)
                e = api_VDI_clone(ctx, vdi, dp, &nvdi);
            else if (kind == DUP_SNAPSHOT)
                e = api_VDI_snapshot(ctx, vdi, dp, &nvdi);
            else {
                AUTO(xv) *vr = NULL;
                e = store_get_record(x->st, XCLS(VDI), vdi, &vr);
                if (!e)
                    e = api_VDI_copy(ctx, vdi, xref_set(sr) ? sr : xrec_str(vr, "SR"), NULL_REF,
                                     NULL_REF, &nvdi);
            }
            if (e)
                goto fail;
        }
        AUTO(xv) *nvbd = xv_new_struct();
        const char *keep[] = {"userdevice",   "bootable",           "mode",
                              "type",         "unpluggable",        "empty",
                              "other_config", "qos_algorithm_type", "qos_algorithm_params"};
        for (size_t k = 0; k < ARRAY_SIZE(keep); k++) {
            const xv *v = xv_struct_get(vbd, keep[k]);
            if (v)
                xv_struct_set(nvbd, keep[k], xv_copy(v));
        }
        xv_struct_set(nvbd, "VM", xv_new_string(new_ref));
        xv_struct_set(nvbd, "VDI", xv_new_string(disk ? xv_str(nvdi) : vdi));
        if ((e = store_create(x->st, XCLS(VBD), nvbd, NULL)))
            goto fail;
    }
    for (size_t i = 0; kind != DUP_SNAPSHOT && i < xv_struct_len(vifs); i++) {
        const xv *vif = vifs->u.st.vals[i];
        AUTO(xv) *a = xv_new_struct();
        const char *keep[] = {"device",
                              "network",
                              "MTU",
                              "other_config",
                              "qos_algorithm_type",
                              "qos_algorithm_params",
                              "locking_mode",
                              "ipv4_allowed",
                              "ipv6_allowed"};
        for (size_t k = 0; k < ARRAY_SIZE(keep); k++) {
            const xv *v = xv_struct_get(vif, keep[k]);
            if (v)
                xv_struct_set(a, keep[k], xv_copy(v));
        }
        xv_struct_set(a, "VM", xv_new_string(new_ref));
        AUTO(xv) *nv = NULL;
        if ((e = api_VIF_create(ctx, a, &nv)))
            goto fail;
    }
    *ret = TAKE_PTR(new_ref);
    return NULL;
fail : {
    /* leave nothing half made: the new VM and its devices go (disks made so far stay, as XAPI) */
    AUTO(xv) *nb = NULL, *nf = NULL;
    if (!vm_devices(x, new_ref, &nb, &nf)) {
        for (size_t i = 0; i < xv_struct_len(nb); i++)
            xerr_free(store_destroy(x->st, XCLS(VBD), nb->u.st.keys[i]));
        for (size_t i = 0; i < xv_struct_len(nf); i++)
            xerr_free(store_destroy(x->st, XCLS(VIF), nf->u.st.keys[i]));
    }
    xerr_free(store_destroy(x->st, XCLS(VM), new_ref));
    return e;
}
}

xerr *api_VM_clone(api_ctx *ctx, const char *p_vm, const char *p_new_name, xv **ret)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "clone", &o);
    if (e)
        return e;
    char *ref = NULL;
    if ((e = vm_duplicate(ctx, p_vm, o.rec, p_new_name, DUP_CLONE, NULL, NULL, &ref)))
        return e;
    *ret = xv_new_string_take(ref);
    return NULL;
}

xerr *api_VM_copy(api_ctx *ctx, const char *p_vm, const char *p_new_name, const char *p_sr,
                  xv **ret)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "copy", &o);
    if (e)
        return e;
    if (xref_set(p_sr)) {
        AUTO(xv) *s = NULL;
        if ((e = store_get_record(ctx->x->st, XCLS(SR), p_sr, &s)))
            return e;
    }
    char *ref = NULL;
    if ((e = vm_duplicate(ctx, p_vm, o.rec, p_new_name, DUP_COPY, p_sr, NULL, &ref)))
        return e;
    *ret = xv_new_string_take(ref);
    return NULL;
}

struct snapmark {
    const char *snap, *of;
};

static xerr *snapmark_txn(store_txn *t, void *ud)
{
    struct snapmark *p = ud;
    xerr *e;
    if ((e = xset(t, XCLS(VM), p->snap, "is_a_snapshot", xv_new_bool(true))) ||
        (e = xset(t, XCLS(VM), p->snap, "snapshot_of", xv_new_string(p->of))) ||
        (e = xset(t, XCLS(VM), p->snap, "snapshot_time", xv_new_datetime_epoch(now_epoch()))))
        return e;
    return refresh_allowed(t, p->snap);
}

xerr *api_VM_snapshot(api_ctx *ctx, const char *p_vm, const char *p_new_name,
                      const xv *p_ignore_vdis, xv **ret)
{
    AUTOOP o;
    xerr *e = vmop_begin(ctx->x, ctx, p_vm, "snapshot", &o);
    if (e)
        return e;
    char *ref = NULL;
    if ((e = vm_duplicate(ctx, p_vm, o.rec, p_new_name, DUP_SNAPSHOT, NULL, p_ignore_vdis, &ref)))
        return e;
    struct snapmark m = {ref, p_vm};
    if ((e = store_write(ctx->x->st, snapmark_txn, &m))) {
        free(ref);
        return e;
    }
    *ret = xv_new_string_take(ref);
    return NULL;
}

xerr *api_VM_revert(api_ctx *ctx, const char *p_snapshot)
{
    xapid *x = ctx->x;
    AUTO(xv) *snap = NULL;
    xerr *e = store_get_record(x->st, XCLS(VM), p_snapshot, &snap);
    if (e)
        return e;
    if (!xrec_bool(snap, "is_a_snapshot"))
        return xerr_new("OPERATION_NOT_ALLOWED", "VM.revert needs a snapshot");
    const char *vm = xrec_str(snap, "snapshot_of");
    AUTOOP o;
    if ((e = vmop_begin(x, ctx, vm, "revert", &o)))
        return e;
    if (strcmp(xrec_str(o.rec, "power_state"), "Halted") != 0)
        return xerr_new("VM_BAD_POWER_STATE", vm, "halted",
                        lower_state(xrec_str(o.rec, "power_state")));
    /* the VM's disks are replaced by clones of the snapshot's */
    AUTO(xv) *old_vbds = NULL, *snap_vbds = NULL;
    if ((e = vm_devices(x, vm, &old_vbds, NULL)) ||
        (e = vm_devices(x, p_snapshot, &snap_vbds, NULL)))
        return e;
    for (size_t i = 0; i < xv_struct_len(snap_vbds); i++) {
        const xv *vbd = snap_vbds->u.st.vals[i];
        const char *vdi = xrec_str(vbd, "VDI");
        if (strcmp(xrec_str(vbd, "type"), "Disk") || !xref_set(vdi))
            continue;
        AUTO(xv) *dp = xv_new_struct(), *nvdi = NULL;
        if ((e = api_VDI_clone(ctx, vdi, dp, &nvdi)))
            return e;
        /* the VM's VBD at the same userdevice gets the new disk; the old disk goes */
        for (size_t k = 0; k < xv_struct_len(old_vbds); k++) {
            const xv *ov = old_vbds->u.st.vals[k];
            if (strcmp(xrec_str(ov, "userdevice"), xrec_str(vbd, "userdevice")) != 0)
                continue;
            AUTO(xv) *nv = xv_new_string(xv_str(nvdi));
            if ((e = store_set_field(x->st, XCLS(VBD), old_vbds->u.st.keys[k],
                                     xfield(XCLS(VBD), "VDI"), nv)))
                return e;
            const char *old_vdi = xrec_str(ov, "VDI");
            if (xref_set(old_vdi)) {
                xerr *de = api_VDI_destroy(ctx, old_vdi);
                if (de) {
                    log_warn("revert %s: old disk %s kept: %s", vm, old_vdi, de->code);
                    xerr_free(de);
                }
            }
        }
    }
    struct mem_p mp = {.ref = vm, .l = limits_of(snap)};
    if ((e = store_write(x->st, mem_txn, &mp)))
        return e;
    if ((e = set_vcpus_field(ctx, vm, "VCPUs_max", xrec_int(snap, "VCPUs_max", 1))))
        return e;
    return set_vcpus_field(ctx, vm, "VCPUs_at_startup", xrec_int(snap, "VCPUs_at_startup", 1));
}

/* other_config:disks, as XCP's templates: <provision><disk device="0" size="BYTES" sr="UUID"
 * bootable="true" type="system"/>...</provision> */
struct pdisk {
    char device[8];
    int64_t size;
    char sr[40];
    bool bootable;
};

/* Parses the disks spec with libxml2 (it comes from API callers); -1 if malformed. */
static int parse_disks(const char *xml, struct pdisk *out, int max)
{
    xmlDocPtr doc = xmlReadMemory(xml, (int)strlen(xml), "disks.xml", NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc)
        return -1;
    int n = 0;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (!root || xmlStrcmp(root->name, BAD_CAST "provision") != 0)
        n = -1;
    for (xmlNodePtr c = root ? root->children : NULL; c && n >= 0; c = c->next) {
        if (c->type != XML_ELEMENT_NODE || xmlStrcmp(c->name, BAD_CAST "disk") != 0)
            continue;
        if (n >= max) {
            n = -1;
            break;
        }
        struct pdisk d = {.device = "0"};
        xmlChar *dev = xmlGetProp(c, BAD_CAST "device"), *size = xmlGetProp(c, BAD_CAST "size"),
                *sr = xmlGetProp(c, BAD_CAST "sr"), *boot = xmlGetProp(c, BAD_CAST "bootable");
        char *end = NULL;
        d.size = size ? strtoll((const char *)size, &end, 10) : 0;
        bool ok = size && end && !*end && d.size > 0 &&
                  (!dev || (strlen((const char *)dev) < sizeof(d.device) &&
                            strspn((const char *)dev, "0123456789") == strlen((const char *)dev) &&
                            *dev)) &&
                  (!sr || strlen((const char *)sr) < sizeof(d.sr));
        if (ok) {
            if (dev)
                snprintf(d.device, sizeof(d.device), "%s", (const char *)dev);
            if (sr)
                snprintf(d.sr, sizeof(d.sr), "%s", (const char *)sr);
            d.bootable = boot && !xmlStrcmp(boot, BAD_CAST "true");
            out[n++] = d;
        } else {
            n = -1;
        }
        xmlFree(dev);
        xmlFree(size);
        xmlFree(sr);
        xmlFree(boot);
    }
    xmlFreeDoc(doc);
    return n;
}

static xerr *default_sr(xapid *x, char **ret)
{
    AUTO(xv) *pool = NULL;
    xerr *e = store_get_record(x->st, XCLS(pool), x->pool_ref, &pool);
    if (e)
        return e;
    const char *sr = xrec_str(pool, "default_SR");
    if (!xref_set(sr))
        return xerr_new("VM_REQUIRES_SR", "", NULL_REF);
    *ret = xstrdup(sr);
    return NULL;
}

struct uuid_p {
    const api_class *c;
    const char *uuid;
    char *ref;
};

static xerr *by_uuid_txn(store_txn *t, void *ud)
{
    struct uuid_p *p = ud;
    return st_ref_by_uuid(t, p->c, p->uuid, &p->ref);
}

xerr *api_VM_provision(api_ctx *ctx, const char *p_vm)
{
    xapid *x = ctx->x;
    AUTOOP o;
    xerr *e = vmop_begin(x, ctx, p_vm, "provision", &o);
    if (e)
        return e;
    const char *xml = xrec_map_str(o.rec, "other_config", "disks");
    if (!xml || !*xml)
        return NULL;
    struct pdisk disks[MAX_VBD_DEVICES];
    int n = parse_disks(xml, disks, MAX_VBD_DEVICES);
    if (n < 0)
        return xerr_new("INVALID_VALUE", "other_config:disks", xml);
    for (int i = 0; i < n; i++) {
        AUTOFREE char *sr = NULL;
        if (disks[i].sr[0]) {
            struct uuid_p u = {XCLS(SR), disks[i].sr, NULL};
            if ((e = store_read(x->st, by_uuid_txn, &u)))
                return e;
            sr = u.ref;
        } else if ((e = default_sr(x, &sr))) {
            xerr_free(e);
            return xerr_new("VM_REQUIRES_SR", p_vm, NULL_REF);
        }
        AUTO(xv) *a = xv_new_struct();
        AUTOFREE char *label = xasprintf("%s %s", xrec_str(o.rec, "name_label"), disks[i].device);
        xv_struct_set(a, "name_label", xv_new_string(label));
        xv_struct_set(a, "name_description", xv_new_string("Created by template provisioner"));
        xv_struct_set(a, "SR", xv_new_string(sr));
        xv_struct_set(a, "virtual_size", xv_new_int(disks[i].size));
        xv_struct_set(a, "type", xv_new_string("system"));
        xv_struct_set(a, "sharable", xv_new_bool(false));
        xv_struct_set(a, "read_only", xv_new_bool(false));
        xv_struct_set(a, "other_config", xv_new_struct());
        AUTO(xv) *vdi = NULL;
        if ((e = api_VDI_create(ctx, a, &vdi)))
            return e;
        AUTO(xv) *vbd = xv_new_struct();
        xv_struct_set(vbd, "VM", xv_new_string(p_vm));
        xv_struct_set(vbd, "VDI", xv_new_string(xv_str(vdi)));
        xv_struct_set(vbd, "userdevice", xv_new_string(disks[i].device));
        xv_struct_set(vbd, "bootable", xv_new_bool(disks[i].bootable));
        xv_struct_set(vbd, "mode", xv_new_string("RW"));
        xv_struct_set(vbd, "type", xv_new_string("Disk"));
        xv_struct_set(vbd, "unpluggable", xv_new_bool(true));
        /* as XCP's provisioner: the VM owns the disk (vm-uninstall destroys owned VDIs) */
        xv *voc = xv_new_struct();
        xv_struct_set(voc, "owner", xv_new_string(""));
        xv_struct_set(vbd, "other_config", voc);
        if ((e = store_create(x->st, XCLS(VBD), vbd, NULL)))
            return e;
    }
    /* provisioned: the disks spec is consumed, as XCP's installer does */
    AUTO(xv) *oc = xv_copy(xv_struct_get(o.rec, "other_config"));
    xv_struct_del(oc, "disks");
    return store_set_field(x->st, XCLS(VM), p_vm, xfield(XCLS(VM), "other_config"), oc);
}

static xerr *destroy_txn(store_txn *t, void *ud)
{
    const char *ref = ud;
    AUTO(xv) *vm = NULL;
    xerr *e = st_get_record(t, XCLS(VM), ref, &vm);
    if (e)
        return e;
    /* again in the transaction: an operation (a start) may have claimed it since the check */
    if ((e = check_op(ref, vm, "destroy", true)))
        return e;
    AUTO(xv) *arg = xv_new_string(ref);
    const xv *a[] = {arg};
    const api_class *cls[] = {XCLS(VBD), XCLS(VIF), XCLS(console)};
    for (size_t c = 0; c < ARRAY_SIZE(cls); c++) {
        AUTO(xv) *refs = NULL;
        if ((e = st_get_all(t, cls[c], "VM = ?", a, 1, &refs)))
            return e;
        for (size_t i = 0; i < xv_array_len(refs); i++)
            if ((e = st_destroy(t, cls[c], xv_str(xv_array_get(refs, i)))))
                return e;
    }
    const char *m = xrec_str(vm, "metrics"), *gm = xrec_str(vm, "guest_metrics");
    if (xref_set(m) && st_exists(t, XCLS(VM_metrics), m) &&
        (e = st_destroy(t, XCLS(VM_metrics), m)))
        return e;
    if (xref_set(gm) && st_exists(t, XCLS(VM_guest_metrics), gm) &&
        (e = st_destroy(t, XCLS(VM_guest_metrics), gm)))
        return e;
    return st_destroy(t, XCLS(VM), ref);
}

xerr *api_VM_destroy(api_ctx *ctx, const char *p_self)
{
    AUTO(xv) *vm = NULL;
    xerr *e = store_get_record(ctx->x->st, XCLS(VM), p_self, &vm);
    if (e)
        return e;
    if ((e = check_op(p_self, vm, "destroy", true)))
        return e;
    if (xrec_bool(vm, "is_default_template"))
        return xerr_new("OPERATION_NOT_ALLOWED", "Default templates cannot be destroyed");
    drop_suspend_vdi(ctx, p_self, vm);
    return store_write(ctx->x->st, destroy_txn, (void *)p_self);
}

/* ---- queries ------------------------------------------------------------------------------ */

static xerr *allowed_devices(api_ctx *ctx, const char *vm, const api_class *c, int max, xv **ret)
{
    AUTO(xv) *arg = xv_new_string(vm);
    const xv *a[] = {arg};
    AUTO(xv) *recs = NULL;
    AUTO(xv) *rec = NULL;
    xerr *e = store_get_record(ctx->x->st, XCLS(VM), vm, &rec);
    if (!e)
        e = store_get_all_records(ctx->x->st, c, "VM = ?", a, 1, &recs);
    if (e)
        return e;
    const char *field = c == XCLS(VBD) ? "userdevice" : "device";
    xv *out = xv_new_array();
    for (int d = 0; d < max; d++) {
        char s[16];
        snprintf(s, sizeof(s), "%d", d);
        bool used = false;
        for (size_t i = 0; i < xv_struct_len(recs); i++)
            if (!strcmp(xrec_str(recs->u.st.vals[i], field), s))
                used = true;
        if (!used)
            xv_array_append(out, xv_new_string(s));
    }
    *ret = out;
    return NULL;
}

xerr *api_VM_get_allowed_VBD_devices(api_ctx *ctx, const char *p_vm, xv **ret)
{
    return allowed_devices(ctx, p_vm, XCLS(VBD), MAX_VBD_DEVICES, ret);
}

xerr *api_VM_get_allowed_VIF_devices(api_ctx *ctx, const char *p_vm, xv **ret)
{
    return allowed_devices(ctx, p_vm, XCLS(VIF), MAX_VIF_DEVICES, ret);
}

xerr *api_VM_get_boot_record(api_ctx *ctx, const char *p_self, xv **ret)
{
    return store_get_record(ctx->x->st, XCLS(VM), p_self, ret);
}

static xerr *update_allowed_txn(store_txn *t, void *ud)
{
    return refresh_allowed(t, ud);
}

xerr *api_VM_update_allowed_operations(api_ctx *ctx, const char *p_self)
{
    return store_write(ctx->x->st, update_allowed_txn, (void *)p_self);
}

xerr *api_VM_assert_operation_valid(api_ctx *ctx, const char *p_self, const char *p_op)
{
    AUTO(xv) *vm = NULL;
    xerr *e = store_get_record(ctx->x->st, XCLS(VM), p_self, &vm);
    if (e || !find_rule(p_op))
        return e;
    return check_op(p_self, vm, p_op, true);
}

static xerr *can_boot(api_ctx *ctx, const char *vm_ref, const xv *vm)
{
    int64_t need = xrec_int(vm, "memory_static_max", 0) + vm_overhead(ctx->x, vm);
    int64_t avail = host_free_memory(ctx->x, vm_ref);
    if (need > avail) {
        char n[32], a[32];
        snprintf(n, sizeof(n), "%lld", (long long)need);
        snprintf(a, sizeof(a), "%lld", (long long)avail);
        return xerr_new("HOST_NOT_ENOUGH_FREE_MEMORY", n, a);
    }
    return NULL;
}

xerr *api_VM_assert_can_boot_here(api_ctx *ctx, const char *p_self, const char *p_host)
{
    AUTO(xv) *vm = NULL;
    xerr *e = store_get_record(ctx->x->st, XCLS(VM), p_self, &vm);
    if (!e)
        e = check_host(ctx, p_host);
    return e ? e : can_boot(ctx, p_self, vm);
}

xerr *api_VM_get_possible_hosts(api_ctx *ctx, const char *p_vm, xv **ret)
{
    AUTO(xv) *vm = NULL;
    xerr *e = store_get_record(ctx->x->st, XCLS(VM), p_vm, &vm);
    if (e)
        return e;
    *ret = xv_new_array();
    xerr *b = can_boot(ctx, p_vm, vm);
    if (!b)
        xv_array_append(*ret, xv_new_string(ctx->x->host_ref));
    xerr_free(b);
    return NULL;
}

/* ---- VBDs --------------------------------------------------------------------------------- */

struct vbd_create {
    const xv *args;
    char *ret;
};

static xerr *vbd_create_txn(store_txn *t, void *ud)
{
    struct vbd_create *p = ud;
    const char *vm = xrec_str(p->args, "VM");
    if (!st_exists(t, XCLS(VM), vm))
        return xerr_new("HANDLE_INVALID", "VM", vm);
    const char *type = xv_struct_get(p->args, "type") ? xrec_str(p->args, "type") : "Disk";
    bool empty = xrec_bool(p->args, "empty");
    const char *vdi = xrec_str(p->args, "VDI");
    if (empty && strcmp(type, "CD") != 0)
        return xerr_new("INVALID_VALUE", "empty", "only CD drives can be empty");
    if (!empty && !st_exists(t, XCLS(VDI), vdi))
        return xerr_new("HANDLE_INVALID", "VDI", vdi);
    AUTO(xv) *arg = xv_new_string(vm);
    const xv *a[] = {arg};
    AUTO(xv) *vbds = NULL;
    xerr *e = st_get_all_records(t, XCLS(VBD), "VM = ?", a, 1, &vbds);
    if (e)
        return e;
    char dev[8];
    const char *udev = xrec_str(p->args, "userdevice");
    if (!*udev || !strcmp(udev, "autodetect")) {
        int d = 0;
        for (; d < MAX_VBD_DEVICES; d++) {
            snprintf(dev, sizeof(dev), "%d", d);
            bool used = false;
            for (size_t i = 0; i < xv_struct_len(vbds); i++)
                if (!strcmp(xrec_str(vbds->u.st.vals[i], "userdevice"), dev))
                    used = true;
            if (!used)
                break;
        }
        if (d == MAX_VBD_DEVICES)
            return xerr_new("INVALID_VALUE", "userdevice", "no free device");
    } else {
        char *end;
        long d = strtol(udev, &end, 10);
        if (*end || d < 0 || d >= MAX_VBD_DEVICES)
            return xerr_new("INVALID_VALUE", "userdevice", udev);
        snprintf(dev, sizeof(dev), "%ld", d);
        for (size_t i = 0; i < xv_struct_len(vbds); i++)
            if (!strcmp(xrec_str(vbds->u.st.vals[i], "userdevice"), dev))
                return xerr_new("DEVICE_ALREADY_EXISTS", dev);
    }
    const api_class *c = XCLS(VBD);
    AUTO(xv) *rec = xv_new_struct();
    for (size_t i = 0; i < c->nfields; i++) {
        const api_field *f = &c->fields[i];
        const xv *v = xv_struct_get(p->args, f->name);
        if (f->derived_cls < 0 && f->qual != API_Q_RO_RUNTIME && v)
            xv_struct_set(rec, f->name, xv_copy(v));
    }
    xv_struct_set(rec, "userdevice", xv_new_string(dev));
    xv_struct_set(rec, "device", xv_new_string(""));
    xv_struct_set(rec, "type", xv_new_string(type));
    xv_struct_set(rec, "VDI", xv_new_string(empty ? NULL_REF : vdi));
    xv_struct_set(rec, "currently_attached", xv_new_bool(false));
    return st_create(t, c, NULL, rec, &p->ret);
}

xerr *api_VBD_create(api_ctx *ctx, const xv *p_args, xv **ret)
{
    struct vbd_create p = {.args = p_args};
    xerr *e = store_write(ctx->x->st, vbd_create_txn, &p);
    if (e)
        return e;
    *ret = xv_new_string_take(p.ret);
    return NULL;
}

static xerr *vbd_destroy_txn(store_txn *t, void *ud)
{
    AUTO(xv) *vbd = NULL;
    xerr *e = st_get_record(t, XCLS(VBD), ud, &vbd);
    if (e)
        return e;
    if (xrec_bool(vbd, "currently_attached"))
        return xerr_new("OPERATION_NOT_ALLOWED", "VBD currently attached to a running VM");
    return st_destroy(t, XCLS(VBD), ud);
}

xerr *api_VBD_destroy(api_ctx *ctx, const char *p_self)
{
    return store_write(ctx->x->st, vbd_destroy_txn, (void *)p_self);
}

static xerr *vbd_vm(api_ctx *ctx, const char *vbd_ref, xv **ret_vbd, xv **ret_vm)
{
    xerr *e = store_get_record(ctx->x->st, XCLS(VBD), vbd_ref, ret_vbd);
    if (!e)
        e = store_get_record(ctx->x->st, XCLS(VM), xrec_str(*ret_vbd, "VM"), ret_vm);
    return e;
}

xerr *api_VBD_plug(api_ctx *ctx, const char *p_self)
{
    AUTO(xv) *vbd = NULL, *vm = NULL;
    xerr *e = vbd_vm(ctx, p_self, &vbd, &vm);
    if (e)
        return e;
    if (xrec_bool(vbd, "currently_attached"))
        return xerr_new("DEVICE_ALREADY_ATTACHED", p_self);
    const char *ps = xrec_str(vm, "power_state");
    if (strcmp(ps, "Running") != 0)
        return xerr_new("VM_BAD_POWER_STATE", xrec_str(vbd, "VM"), "running", lower_state(ps));
    return xerr_new("OPERATION_NOT_ALLOWED",
                    "nuvem-vmm cannot hot-plug disks yet: attach it while the VM is halted");
}

static xerr *vbd_unplug(api_ctx *ctx, const char *self)
{
    AUTO(xv) *vbd = NULL, *vm = NULL;
    xerr *e = vbd_vm(ctx, self, &vbd, &vm);
    if (e)
        return e;
    if (!xrec_bool(vbd, "currently_attached"))
        return xerr_new("DEVICE_ALREADY_DETACHED", self);
    return xerr_new("DEVICE_DETACH_REJECTED", "VBD", self,
                    "nuvem-vmm cannot hot-unplug disks yet: shut the VM down first");
}

xerr *api_VBD_unplug(api_ctx *ctx, const char *p_self)
{
    return vbd_unplug(ctx, p_self);
}

xerr *api_VBD_unplug_force(api_ctx *ctx, const char *p_self)
{
    return vbd_unplug(ctx, p_self);
}

static xerr *media_change(api_ctx *ctx, const char *vbd_ref, const char *vdi)
{
    AUTO(xv) *vbd = NULL, *vm = NULL;
    xerr *e = vbd_vm(ctx, vbd_ref, &vbd, &vm);
    if (e)
        return e;
    if (strcmp(xrec_str(vbd, "type"), "CD") != 0)
        return xerr_new("VBD_NOT_REMOVABLE_MEDIA", vbd_ref);
    bool empty = xrec_bool(vbd, "empty");
    if (vdi && !empty)
        return xerr_new("VBD_NOT_EMPTY", vbd_ref);
    if (!vdi && empty)
        return xerr_new("VBD_IS_EMPTY", vbd_ref);
    if (xrec_bool(vbd, "currently_attached"))
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "nuvem-vmm cannot change media of a running VM yet");
    if (vdi) {
        AUTO(xv) *v = NULL;
        if ((e = store_get_record(ctx->x->st, XCLS(VDI), vdi, &v)))
            return e;
    }
    AUTO(xv) *nv = xv_new_string(vdi ? vdi : NULL_REF);
    AUTO(xv) *em = xv_new_bool(!vdi);
    if ((e = store_set_field(ctx->x->st, XCLS(VBD), vbd_ref, xfield(XCLS(VBD), "VDI"), nv)))
        return e;
    return store_set_field(ctx->x->st, XCLS(VBD), vbd_ref, xfield(XCLS(VBD), "empty"), em);
}

xerr *api_VBD_insert(api_ctx *ctx, const char *p_vbd, const char *p_vdi)
{
    return media_change(ctx, p_vbd, p_vdi);
}

xerr *api_VBD_eject(api_ctx *ctx, const char *p_vbd)
{
    return media_change(ctx, p_vbd, NULL);
}

/* ---- VDI.resize_online -------------------------------------------------------------------- */

xerr *api_VDI_resize_online(api_ctx *ctx, const char *p_vdi, int64_t p_size)
{
    /* the running VM holding it, and the disk's index in its VMM */
    pthread_mutex_lock(&R.lock);
    vmrun *r = NULL;
    long index = -1;
    for (vmrun *c = R.list; c && !r; c = c->next)
        for (size_t i = 0; i < c->nvdis; i++)
            if (!strcmp(c->vdis[i].vdi, p_vdi)) {
                r = c;
                index = (long)i;
                r->refs++;
                break;
            }
    pthread_mutex_unlock(&R.lock);
    AUTORUN *held = r;
    if (!held)
        return api_VDI_resize(ctx, p_vdi, p_size); /* not in use: an offline resize */
    AUTO(xv) *vdi = NULL;
    xerr *e = store_get_record(ctx->x->st, XCLS(VDI), p_vdi, &vdi);
    if (e)
        return e;
    if (p_size < xrec_int(vdi, "virtual_size", 0))
        return xerr_new("VDI_TOO_SMALL", p_vdi, "shrinking is not supported");
    xv *a = xv_new_struct();
    xv_struct_set(a, "index", xv_new_int(index));
    xv_struct_set(a, "size", xv_new_int(p_size));
    AUTO(xv) *res = NULL;
    if ((e = vmmc_call(held->c, "resize-disk", a, 120, &res)))
        return e;
    AUTO(xv) *vs = xv_new_int(xrec_int(res, "size", p_size));
    return store_set_field(ctx->x->st, XCLS(VDI), p_vdi, xfield(XCLS(VDI), "virtual_size"), vs);
}

/* ---- consoles ----------------------------------------------------------------------------- */

int xapid_vm_console_fd(xapid *x, const char *console_ref, char **ret_vm)
{
    AUTO(xv) *con = NULL, *vm = NULL;
    xerr *e = store_get_record(x->st, XCLS(console), console_ref, &con);
    if (!e)
        e = store_get_record(x->st, XCLS(VM), xrec_str(con, "VM"), &vm);
    if (e) {
        xerr_free(e);
        return -ENOENT;
    }
    AUTORUN *r = run_get(xrec_str(con, "VM"));
    if (!r)
        return -ENOTCONN;
    AUTOFREE char *path = run_path(x, r->uuid, "console");
    int fd = vmmc_connect_unix(path);
    if (fd < 0)
        return fd;
    if (ret_vm)
        *ret_vm = xstrdup(xrec_str(con, "VM"));
    return fd;
}

/* ---- start-up: control domain, templates, re-attaching running VMs ------------------------ */

struct tmpl {
    const char *key; /* other_config:nuvem-template */
    const char *name, *description;
    const char *kernel, *ramdisk, *args;
    int64_t memory, memory_min;
    int64_t vcpus, vcpus_max;
    const char *disks;
    const char *hvm_policy;
};

static const struct tmpl templates[] = {
    {"miniguest", "Nuvem Mini Guest",
     "The bundled mini guest: a tiny tickless kernel with a serial console, virtio drivers and a "
     "guest agent",
     "nuvem:miniguest", "", "console=ttyS0", 32 * MiB, 16 * MiB, 1, 4,
     "<provision><disk device=\"0\" size=\"67108864\" sr=\"\" bootable=\"true\" "
     "type=\"system\"/></provision>",
     ""},
    {"debian", "Debian Linux",
     "Debian 12 kernel and initramfs built by scripts/build-guest-image.sh", "nuvem:debian/vmlinux",
     "nuvem:debian/initramfs.cpio",
     "console=ttyS0 earlyprintk=serial,ttyS0,115200 noxsave nowatchdog reboot=k panic=-1 "
     "nuvem.exit=poweroff",
     256 * MiB, 128 * MiB, 1, 4,
     "<provision><disk device=\"0\" size=\"1073741824\" sr=\"\" bootable=\"true\" "
     "type=\"system\"/></provision>",
     ""},
    {"other", "Other install media",
     "Boot from an install ISO (not supported by nuvem-vmm yet: it boots kernels directly)", "", "",
     "", 512 * MiB, 256 * MiB, 1, 2,
     "<provision><disk device=\"0\" size=\"8589934592\" sr=\"\" bootable=\"true\" "
     "type=\"system\"/></provision>",
     "BIOS order"},
};

static xerr *templates_txn(store_txn *t, void *ud)
{
    xapid *x = ud;
    AUTO(xv) *vms = NULL;
    xerr *e = st_get_all_records(t, XCLS(VM), NULL, NULL, 0, &vms);
    if (e)
        return e;
    bool have_dom0 = false;
    int64_t max_domid = 0;
    for (size_t i = 0; i < xv_struct_len(vms); i++) {
        const xv *vm = vms->u.st.vals[i];
        if (xrec_bool(vm, "is_control_domain") && !strcmp(xrec_str(vm, "resident_on"), x->host_ref))
            have_dom0 = true;
        if (xrec_int(vm, "domid", -1) > max_domid)
            max_domid = xrec_int(vm, "domid", -1);
    }
    R.next_domid = max_domid + 1;
    for (size_t k = 0; k < ARRAY_SIZE(templates); k++) {
        const struct tmpl *tp = &templates[k];
        bool found = false;
        for (size_t i = 0; i < xv_struct_len(vms) && !found; i++) {
            const char *key = xrec_map_str(vms->u.st.vals[i], "other_config", "nuvem-template");
            found = key && !strcmp(key, tp->key) && xrec_bool(vms->u.st.vals[i], "is_a_template");
        }
        if (found)
            continue;
        AUTO(xv) *r = xv_new_struct();
        xv_struct_set(r, "name_label", xv_new_string(tp->name));
        xv_struct_set(r, "name_description", xv_new_string(tp->description));
        xv_struct_set(r, "is_a_template", xv_new_bool(true));
        xv_struct_set(r, "memory_static_max", xv_new_int(tp->memory));
        xv_struct_set(r, "memory_dynamic_max", xv_new_int(tp->memory));
        xv_struct_set(r, "memory_dynamic_min", xv_new_int(tp->memory));
        xv_struct_set(r, "memory_static_min", xv_new_int(tp->memory_min));
        xv_struct_set(r, "VCPUs_max", xv_new_int(tp->vcpus_max));
        xv_struct_set(r, "VCPUs_at_startup", xv_new_int(tp->vcpus));
        xv_struct_set(r, "PV_kernel", xv_new_string(tp->kernel));
        xv_struct_set(r, "PV_ramdisk", xv_new_string(tp->ramdisk));
        xv_struct_set(r, "PV_args", xv_new_string(tp->args));
        xv_struct_set(r, "HVM_boot_policy", xv_new_string(tp->hvm_policy));
        if (*tp->hvm_policy) {
            xv *bp = xv_new_struct();
            xv_struct_set(bp, "order", xv_new_string("dc"));
            xv_struct_set(r, "HVM_boot_params", bp);
        }
        xv_struct_set(r, "domain_type", xv_new_string(*tp->hvm_policy ? "hvm" : "pvh"));
        xv_struct_set(r, "actions_after_shutdown", xv_new_string("destroy"));
        xv_struct_set(r, "actions_after_reboot", xv_new_string("restart"));
        xv_struct_set(r, "actions_after_crash", xv_new_string("restart"));
        xv *oc = xv_new_struct();
        xv_struct_set(oc, "nuvem-template", xv_new_string(tp->key));
        xv_struct_set(oc, "default_template", xv_new_string("true"));
        xv_struct_set(oc, "disks", xv_new_string(tp->disks));
        xv_struct_set(r, "other_config", oc);
        AUTOFREE char *ref = NULL;
        if ((e = st_create(t, XCLS(VM), NULL, r, &ref)) ||
            (e = xset(t, XCLS(VM), ref, "is_default_template", xv_new_bool(true))) ||
            (e = refresh_allowed(t, ref)))
            return e;
    }
    if (!have_dom0) {
        char hostname[256] = "localhost";
        gethostname(hostname, sizeof(hostname) - 1);
        AUTO(xv) *r = xv_new_struct();
        AUTOFREE char *name = xasprintf("Control domain on host: %s", hostname);
        int64_t mem = meminfo_bytes("MemTotal:") - host_available_at_start;
        if (mem < 0)
            mem = 0;
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        xv_struct_set(r, "name_label", xv_new_string(name));
        xv_struct_set(
            r, "name_description",
            xv_new_string("The domain which manages physical devices and manages other domains"));
        xv_struct_set(r, "power_state", xv_new_string("Running"));
        xv_struct_set(r, "memory_static_max", xv_new_int(mem));
        xv_struct_set(r, "memory_dynamic_max", xv_new_int(mem));
        xv_struct_set(r, "memory_dynamic_min", xv_new_int(mem));
        xv_struct_set(r, "memory_static_min", xv_new_int(mem));
        xv_struct_set(r, "VCPUs_max", xv_new_int(ncpu));
        xv_struct_set(r, "VCPUs_at_startup", xv_new_int(ncpu));
        AUTOFREE char *ref = NULL;
        if ((e = st_create(t, XCLS(VM), NULL, r, &ref)) ||
            (e = xset(t, XCLS(VM), ref, "is_control_domain", xv_new_bool(true))) ||
            (e = xset(t, XCLS(VM), ref, "resident_on", xv_new_string(x->host_ref))) ||
            (e = xset(t, XCLS(VM), ref, "domid", xv_new_int(0))))
            return e;
    }
    return NULL;
}

/* Clears operations a killed daemon left on VMs. */
static xerr *clear_ops_txn(store_txn *t, void *ud)
{
    (void)ud;
    AUTO(xv) *vms = NULL;
    xerr *e = st_get_all_records(t, XCLS(VM), NULL, NULL, 0, &vms);
    if (e)
        return e;
    for (size_t i = 0; i < xv_struct_len(vms); i++) {
        const xv *cur = xv_struct_get(vms->u.st.vals[i], "current_operations");
        if (cur && cur->kind == XV_STRUCT && xv_struct_len(cur) > 0 &&
            (e = xset(t, XCLS(VM), vms->u.st.keys[i], "current_operations", xv_new_struct())))
            return e;
        if ((e = refresh_allowed(t, vms->u.st.keys[i])))
            return e;
    }
    return NULL;
}

/* A VMM that does not answer on its control socket is stopped for good (SIGKILL, by the pid
 * recorded at spawn, checked to still be a nuvem-vmm), so that the DB's Halted is true. */
static void kill_stale(xapid *x, const char *uuid)
{
    AUTOFREE char *pidpath = run_path(x, uuid, "pid");
    AUTOFREE char *txt = NULL;
    if (read_file(pidpath, &txt, NULL) < 0)
        return;
    int pid = atoi(txt);
    char exe[PATH_MAX], path[64];
    snprintf(path, sizeof(path), "/proc/%d/exe", pid);
    ssize_t n = pid > 1 ? readlink(path, exe, sizeof(exe) - 1) : -1;
    if (n <= 0)
        return;
    exe[n] = '\0';
    const char *base = strrchr(exe, '/');
    if (!strstr(base ? base : exe, "nuvem-vmm"))
        return;
    log_warn("VM %s: nuvem-vmm pid %d does not answer; killing it", uuid, pid);
    kill(pid, SIGKILL);
    for (int i = 0; i < 200 && kill(pid, 0) == 0; i++) {
        /* not our child: wait for init to reap it (zombies still answer kill 0) */
        char st[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        AUTOFREE char *stat = NULL;
        if (read_file(path, &stat, NULL) < 0 || sscanf(stat, "%*d %*s %63s", st) != 1 ||
            st[0] == 'Z')
            break;
        usleep(10000);
    }
}

/* Re-attaches to the VMM of a VM the DB says runs here; false if it is gone. */
static bool adopt(xapid *x, const char *ref, const xv *vm)
{
    const char *uuid = xrec_str(vm, "uuid");
    AUTOFREE char *ctl = run_path(x, uuid, "ctl");
    vmrun *r = xcalloc(1, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->teardown_lock, NULL);
    r->ref = xstrdup(ref);
    r->uuid = xstrdup(uuid);
    r->domid = xrec_int(vm, "domid", -1);
    vmmc_handlers h = {.event = on_event, .closed = on_closed, .opaque = r};
    AUTO(xv) *greeting = NULL;
    xerr *e = vmmc_connect(ctl, 0, 0.5, &h, &r->c, &greeting);
    if (e) {
        log_info("VM %s: its nuvem-vmm is gone (%s)", ref, e->nparams ? e->params[0] : e->code);
        xerr_free(e);
        run_free(r);
        kill_stale(x, uuid);
        return false;
    }
    r->pid = (int)xrec_int(greeting, "pid", 0);
    /* the disks it holds: attach counts live in memory, so they are taken again */
    AUTO(xv) *vbds = NULL;
    if (!vm_devices(x, ref, &vbds, NULL)) {
        size_t nv = xv_struct_len(vbds);
        const xv **order = xcalloc(nv ? nv : 1, sizeof(*order));
        for (size_t i = 0; i < nv; i++)
            order[i] = vbds->u.st.vals[i];
        qsort(order, nv, sizeof(*order), cmp_userdevice);
        r->vdis = xcalloc(nv ? nv : 1, sizeof(*r->vdis));
        for (size_t i = 0; i < nv; i++) {
            const char *vdi = xrec_str(order[i], "VDI");
            if (!xrec_bool(order[i], "currently_attached") || !xref_set(vdi))
                continue;
            bool ro = !strcmp(xrec_str(order[i], "mode"), "RO") ||
                      !strcmp(xrec_str(order[i], "type"), "CD");
            AUTOFREE char *path = NULL;
            xerr *ae = xapid_storage_vdi_attach(x, vdi, !ro, &path, NULL);
            if (ae) {
                log_warn("VM %s: re-attach VDI %s: %s", ref, vdi, ae->code);
                xerr_free(ae);
            }
            r->vdis[r->nvdis].vdi = xstrdup(vdi);
            for (size_t k = 0; k < nv; k++)
                if (vbds->u.st.vals[k] == order[i])
                    r->vdis[r->nvdis].vbd = xstrdup(vbds->u.st.keys[k]);
            r->nvdis++;
        }
        free(order);
    }
    /* the VMM's own view of running/paused wins */
    const char *status = xrec_str(greeting, "status");
    const char *ps = !strcmp(status, "paused") ? "Paused" : "Running";
    if (strcmp(ps, xrec_str(vm, "power_state")) != 0) {
        AUTO(xv) *v = xv_new_string(ps);
        xerr_free(store_set_field(x->st, XCLS(VM), ref, xfield(XCLS(VM), "power_state"), v));
    }
    run_add(r);
    if (!vmmc_alive(r->c)) /* it went while we attached */
        job_push(JOB_EXIT, ref);
    else
        initial_sync(r);
    log_info("VM %s: re-attached to nuvem-vmm pid %d (%s)", ref, r->pid, status);
    return true;
}

/* Stops VMMs in the run directory that the DB does not record as running here (left by a
 * daemon killed in the middle of a start). */
static void stop_orphans(xapid *x)
{
    DIR *d = opendir(run_dir(x));
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n != 36 + 4 || strcmp(de->d_name + 36, ".ctl") != 0)
            continue;
        char uuid[37];
        memcpy(uuid, de->d_name, 36);
        uuid[36] = '\0';
        pthread_mutex_lock(&R.lock);
        bool known = false;
        for (vmrun *r = R.list; r; r = r->next)
            known |= !strcmp(r->uuid, uuid);
        pthread_mutex_unlock(&R.lock);
        if (known)
            continue;
        AUTOFREE char *ctl = run_path(x, uuid, "ctl");
        vmmc *c = NULL;
        xerr *e = vmmc_connect(ctl, 0, 0.5, NULL, &c, NULL);
        if (e) {
            xerr_free(e);
            kill_stale(x, uuid);
            remove_run_files(x, uuid, true);
            continue;
        }
        log_warn("stopping nuvem-vmm of VM %s: the database does not record it as running", uuid);
        xerr_free(vmmc_call(c, "quit", NULL, 5, NULL));
        vmmc_wait_closed(c, 10);
        vmmc_free(c);
        remove_run_files(x, uuid, true);
    }
    closedir(d);
}

xerr *xapid_vm_init(xapid *x)
{
    xapid_config *cfg = &x->cfg;
    if (!cfg->vmm) {
        cfg->vmm = exe_relative("../hypervisor/nuvem-vmm");
        if (!cfg->vmm || access(cfg->vmm, X_OK) != 0) {
            free(cfg->vmm);
            cfg->vmm = xstrdup("nuvem-vmm");
        }
    }
    if (!cfg->miniguest)
        cfg->miniguest = exe_relative("../hypervisor/nuvem-miniguest.elf");
    if (!cfg->guest_image_dir)
        cfg->guest_image_dir = exe_relative("../../guest-image");
    if (!cfg->run_dir)
        cfg->run_dir = xasprintf("%s/run", cfg->state_dir);
    if (mkdir_p(cfg->run_dir, 0700) < 0)
        return xerr_internal("cannot create %s: %s", cfg->run_dir, strerror(errno));
    /* started VMMs become our children once spawn_vmm's middle child exits: we reap them */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        log_warn("PR_SET_CHILD_SUBREAPER: %s (stopped VMMs stay zombies until init reaps them)",
                 strerror(errno));
    host_available_at_start = meminfo_bytes("MemAvailable:");
    if (cfg->vm_memory_limit > 0)
        host_available_at_start = cfg->vm_memory_limit;
    R.x = x;
    R.jobs_tail = &R.jobs;
    R.stop = false;
    xerr *e = store_write(x->st, templates_txn, x);
    if (!e)
        e = store_write(x->st, clear_ops_txn, NULL);
    if (e)
        return e;

    AUTO(xv) *arg = xv_new_string(x->host_ref);
    const xv *a[] = {arg};
    AUTO(xv) *vms = NULL;
    if ((e = store_get_all_records(x->st, XCLS(VM), "resident_on = ?", a, 1, &vms)))
        return e;
    for (size_t i = 0; i < xv_struct_len(vms); i++) {
        const char *ref = vms->u.st.keys[i];
        const xv *vm = vms->u.st.vals[i];
        const char *ps = xrec_str(vm, "power_state");
        if (xrec_bool(vm, "is_control_domain") || (strcmp(ps, "Running") && strcmp(ps, "Paused")))
            continue;
        if (adopt(x, ref, vm))
            continue;
        /* gone while we were away: Halted, taps removed, nothing else applied */
        AUTO(xv) *vifs = NULL;
        AUTO(xv) *vbds = NULL;
        if (!vm_devices(x, ref, &vbds, &vifs))
            for (size_t k = 0; k < xv_struct_len(vifs); k++)
                xerr_free(
                    xapid_network_vif_detach(x, vifs->u.st.keys[k], xrec_int(vm, "domid", -1)));
        remove_run_files(x, xrec_str(vm, "uuid"), true);
        xerr *se = record_state(x, ref, "Halted", -1, NULL, false);
        if (se) {
            log_warn("VM %s: %s", ref, se->code);
            xerr_free(se);
        }
    }
    stop_orphans(x);
    if (pthread_create(&R.monitor, NULL, monitor_main, x) != 0 ||
        pthread_create(&R.metrics, NULL, metrics_main, x) != 0)
        return xerr_internal("cannot start the VM monitor");
    R.threads = true;
    return NULL;
}

void xapid_vm_stop(xapid *x)
{
    (void)x;
    if (R.threads) {
        pthread_mutex_lock(&R.lock);
        R.stop = true;
        pthread_cond_broadcast(&R.cond);
        pthread_mutex_unlock(&R.lock);
        pthread_join(R.monitor, NULL);
        pthread_join(R.metrics, NULL);
        R.threads = false;
    }
    /* the VMMs keep running; only the connections go */
    pthread_mutex_lock(&R.lock);
    vmrun *list = R.list;
    R.list = NULL;
    struct job *j = R.jobs;
    R.jobs = NULL;
    R.jobs_tail = &R.jobs;
    pthread_mutex_unlock(&R.lock);
    while (j) {
        struct job *n = j->next;
        free(j->ref);
        free(j);
        j = n;
    }
    while (list) {
        vmrun *n = list->next;
        pthread_mutex_lock(&list->lock);
        list->expect_exit = true;
        pthread_mutex_unlock(&list->lock);
        pthread_mutex_lock(&R.lock); /* a late run_put may race with this */
        list->removed = true;
        bool last = --list->refs == 0;
        pthread_mutex_unlock(&R.lock);
        if (last)
            run_free(list);
        list = n;
    }
}

/* ---- VM.create ---------------------------------------------------------------------------- */

struct create_p {
    const xv *args;
    char *ret;
};

static xerr *create_txn(store_txn *t, void *ud)
{
    struct create_p *p = ud;
    const api_class *c = XCLS(VM);
    AUTO(xv) *rec = xv_new_struct();
    for (size_t i = 0; i < c->nfields; i++) {
        const api_field *f = &c->fields[i];
        const xv *v = xv_struct_get(p->args, f->name);
        if (f->derived_cls >= 0 || f->qual == API_Q_RO_RUNTIME || !v)
            continue;
        /* references must name live objects (affinity, suspend_VDI, ...) */
        if (f->type->kind == API_T_REF && f->type->cls >= 0 && xref_set(xv_str(v)) &&
            !st_exists(t, &api_classes[f->type->cls], xv_str(v)))
            return xerr_new("HANDLE_INVALID", api_classes[f->type->cls].name, xv_str(v));
        xv_struct_set(rec, f->name, xv_copy(v));
    }
    /* new VMs are halted, whatever the caller says */
    xv_struct_set(rec, "power_state", xv_new_string("Halted"));
    AUTOFREE char *metrics = NULL;
    AUTO(xv) *m = xv_new_struct();
    xerr *e = st_create(t, XCLS(VM_metrics), NULL, m, &metrics);
    if (e)
        return e;
    xv_struct_set(rec, "metrics", xv_new_string(metrics));
    if ((e = st_create(t, c, NULL, rec, &p->ret)))
        return e;
    return refresh_allowed(t, p->ret);
}

xerr *api_VM_create(api_ctx *ctx, const xv *p_args, xv **ret)
{
    /* XAPI's create-time check: the ranges must be coercible (min <= max each) */
    struct limits l = limits_of(p_args);
    if (l.smin > l.smax || l.dmin > l.dmax)
        return xerr_new("MEMORY_CONSTRAINT_VIOLATION",
                        "static_min <= static_max and dynamic_min <= dynamic_max");
    if (xrec_int(p_args, "VCPUs_at_startup", 1) > xrec_int(p_args, "VCPUs_max", 1)) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)xrec_int(p_args, "VCPUs_at_startup", 1));
        return xerr_new("INVALID_VALUE", "VCPUs_at_startup", v);
    }
    struct create_p p = {.args = p_args};
    xerr *e = store_write(ctx->x->st, create_txn, &p);
    if (e)
        return e;
    *ret = xv_new_string_take(p.ret);
    return NULL;
}
