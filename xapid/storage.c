/* SR, PBD and VDI handlers over storage/sr (the SR drivers), and the local SR of a first start.
 *
 * Pattern (as network.c): short read transactions for what a call needs, the disk work with no
 * transaction held, then one short write transaction for the outcome. Each plugged SR has one
 * driver handle in a process-wide table (filled by PBD.plug, or on first use after a restart
 * for a PBD the DB says is attached); every operation on an SR holds that SR's operation lock
 * across its disk work and DB update, so a scan never races a create. After an operation that
 * changes the VHD tree (snapshot, clone, destroy: the GC may merge nodes) the SR's VDI records
 * are synchronised with the disk, as SM's scan does. */
#define _GNU_SOURCE
#include "xapid.h"
#include "xrec.h"

#include "log.h"
#include "mem.h"
#include "sbuf.h"
#include "sr.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLS(id) (&api_classes[API_CLASS_##id])
#define NULLREF "OpaqueRef:NULL"

/* ---- store helpers ------------------------------------------------------------------------ */

static bool is_null_ref(const char *r)
{
    return !r || !*r || !strcmp(r, NULLREF);
}

static xerr *get_record(xapid *x, const api_class *c, const char *ref, xv **ret)
{
    if (is_null_ref(ref))
        return xerr_new("HANDLE_INVALID", c->name, ref ? ref : "");
    return store_get_record(x->st, c, ref, ret);
}

/* Records (ref -> record) of class c whose column col equals val. */
static xerr *records_where(xapid *x, const api_class *c, const char *col, const char *val, xv **ret)
{
    AUTOFREE char *where = xasprintf("\"%s\" = ?", col);
    AUTO(xv) *arg = xv_new_string(val);
    const xv *args[] = {arg};
    return store_get_all_records(x->st, c, where, args, 1, ret);
}

/* A new record of class c from constructor args (as the generated create: callers give
 * constructor fields, the server the rest). */
static xv *record_from_args(const api_class *c, const xv *args)
{
    xv *rec = xv_new_struct();
    for (size_t i = 0; i < c->nfields; i++) {
        const api_field *f = &c->fields[i];
        if (f->derived_cls >= 0)
            continue;
        const xv *v = args ? xv_struct_get(args, f->name) : NULL;
        xv_struct_set(rec, f->name,
                      (f->qual != API_Q_RO_RUNTIME && v) ? xv_copy(v) : api_field_default(f));
    }
    return rec;
}

/* ---- errors ------------------------------------------------------------------------------- */

static const char *errno_name(int e)
{
    switch (e) {
    case ENOENT:
        return "ENOENT";
    case EEXIST:
        return "EEXIST";
    case EBUSY:
        return "EBUSY";
    case EINVAL:
        return "EINVAL";
    case EBADMSG:
        return "EBADMSG";
    case EIO:
        return "EIO";
    case EACCES:
        return "EACCES";
    case EROFS:
        return "EROFS";
    case ENOTDIR:
        return "ENOTDIR";
    default:
        return "EFAIL";
    }
}

/* Maps a driver errno to the XenAPI error XCP would send (SM failures as SR_BACKEND_FAILURE
 * [status, message, stderr]). vdi: the VDI ref for VDI errors, or NULL. */
static xerr *sr_xerr(int r, const char *op, const char *sr_ref, const char *vdi)
{
    char msg[256];
    log_info("storage: %s failed: %s", op, strerror(-r));
    switch (-r) {
    case ENOSPC:
        return xerr_new("SR_BACKEND_FAILURE_44", "", "There is insufficient space", "");
    case EBUSY:
        if (vdi)
            return xerr_new("VDI_IN_USE", vdi, op);
        return xerr_new("SR_BACKEND_FAILURE", "SRInUse", "The SR device is currently in use", "");
    case ENOENT:
        if (vdi)
            return xerr_new("VDI_MISSING", sr_ref ? sr_ref : "", vdi);
        return xerr_new("SR_BACKEND_FAILURE", "SRUnavailable", "The SR is not available", "");
    case EPERM:
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "the VDI is a hidden base copy of a snapshot tree");
    case EROFS:
        if (vdi && !strcmp(op, "attach"))
            return xerr_new("VDI_READONLY", vdi);
        return xerr_new("SR_OPERATION_NOT_SUPPORTED", sr_ref ? sr_ref : "");
    case ELOOP:
        return xerr_new("SR_BACKEND_FAILURE", "SnapshotChainTooLong",
                        "The snapshot chain is too long", "");
    case ENOTSUP:
        if (!strcmp(op, "VDI.resize"))
            return xerr_new("SR_BACKEND_FAILURE", "VDISize",
                            "VDI Invalid size: shrinking not allowed", "");
        return xerr_new("SR_OPERATION_NOT_SUPPORTED", sr_ref ? sr_ref : "");
    case EEXIST:
        return xerr_new("SR_BACKEND_FAILURE", "SRExists",
                        "The SR already exists: its location is not empty", "");
    case ENOTEMPTY:
        return xerr_new("SR_NOT_EMPTY");
    case EBADMSG:
        snprintf(msg, sizeof(msg), "%s: a VHD file of the SR is corrupt", op);
        return xerr_new("SR_BACKEND_FAILURE", "EBADMSG", msg, "");
    default:
        snprintf(msg, sizeof(msg), "%s failed: %s", op, strerror(-r));
        return xerr_new("SR_BACKEND_FAILURE", errno_name(-r), msg, "");
    }
}

/* ---- the table of plugged SRs ------------------------------------------------------------- */

struct slot {
    xapid *x;
    char *sr_ref;
    sr *h;
    pthread_mutex_t op; /* held across one operation's disk work and DB update */
    unsigned users;
    bool closing;
};

static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;
static struct slot **slots;
static size_t nslots;

static void slot_free(struct slot *s)
{
    sr_detach(s->h);
    pthread_mutex_destroy(&s->op);
    free(s->sr_ref);
    free(s);
}

/* Under slots_mu. */
static struct slot *slot_find(xapid *x, const char *sr_ref)
{
    for (size_t i = 0; i < nslots; i++)
        if (slots[i]->x == x && !strcmp(slots[i]->sr_ref, sr_ref))
            return slots[i];
    return NULL;
}

/* Releases a slot taken by slot_get (unlocking its operation lock). */
static void slot_put(struct slot *s)
{
    if (!s)
        return;
    pthread_mutex_unlock(&s->op);
    pthread_mutex_lock(&slots_mu);
    bool gone = --s->users == 0 && s->closing;
    pthread_mutex_unlock(&slots_mu);
    if (gone)
        slot_free(s);
}

static void slot_putp(struct slot **s)
{
    slot_put(*s);
}
#define AUTOSLOT __attribute__((cleanup(slot_putp))) struct slot

/* Registers an attached handle (takes h). */
static void slot_add(xapid *x, const char *sr_ref, sr *h)
{
    struct slot *s = xcalloc(1, sizeof(*s));
    s->x = x;
    s->sr_ref = xstrdup(sr_ref);
    s->h = h;
    pthread_mutex_init(&s->op, NULL);
    pthread_mutex_lock(&slots_mu);
    slots = xrealloc(slots, (nslots + 1) * sizeof(*slots));
    slots[nslots++] = s;
    pthread_mutex_unlock(&slots_mu);
}

/* Unregisters an SR's handle; it is detached when its last user is done. */
static void slot_remove(xapid *x, const char *sr_ref)
{
    pthread_mutex_lock(&slots_mu);
    struct slot *s = NULL;
    for (size_t i = 0; i < nslots; i++)
        if (slots[i]->x == x && !strcmp(slots[i]->sr_ref, sr_ref)) {
            s = slots[i];
            slots[i] = slots[--nslots];
            break;
        }
    bool now = s && s->users == 0;
    if (s)
        s->closing = true;
    pthread_mutex_unlock(&slots_mu);
    if (now)
        slot_free(s);
}

/* This host's PBD of an SR: ret_ref and ret_rec (either may be NULL), or NULL refs if none. */
static xerr *host_pbd(xapid *x, const char *sr_ref, char **ret_ref, xv **ret_rec, size_t *ret_n)
{
    AUTO(xv) *pbds = NULL;
    xerr *e = records_where(x, CLS(PBD), "SR", sr_ref, &pbds);
    if (e)
        return e;
    if (ret_n)
        *ret_n = pbds->u.st.n;
    for (size_t i = 0; i < pbds->u.st.n; i++)
        if (!strcmp(xrec_str(pbds->u.st.vals[i], "host"), x->host_ref)) {
            if (ret_ref)
                *ret_ref = xstrdup(pbds->u.st.keys[i]);
            if (ret_rec)
                *ret_rec = xv_copy(pbds->u.st.vals[i]);
            return NULL;
        }
    return NULL;
}

/* The directory of an SR from a device_config: device_config:location, or for a driver that
 * keeps SRs under a shared directory (sr_driver.parent_key), <device_config:KEY>/<sr-uuid>.
 * *ret is caller-frees; SR_BACKEND_FAILURE when the key is missing or not absolute. */
/* The driver's directory key of a device_config (parent_key, else location), which must be an
 * absolute path; *ret borrows it from dc. */
static xerr *dc_path(const sr_driver *d, const xv *dc, const char **ret)
{
    const char *key = d->parent_key ? d->parent_key : "location";
    const char *v = dc ? xv_struct_get_str(dc, key) : NULL;
    if (!v || v[0] != '/') {
        char msg[128];
        snprintf(msg, sizeof(msg), "The request is missing the %s parameter (an absolute path)",
                 key);
        return xerr_new("SR_BACKEND_FAILURE",
                        d->parent_key ? "ConfigPathMissing" : "ConfigLocationMissing", msg, "");
    }
    *ret = v;
    return NULL;
}

static xerr *dc_dir(const sr_driver *d, const char *sr_uuid, const xv *dc, char **ret)
{
    const char *v = NULL;
    xerr *e = dc_path(d, dc, &v);
    if (e)
        return e;
    *ret = d->parent_key ? xasprintf("%s/%s", v, sr_uuid) : xstrdup(v);
    return NULL;
}

static xerr *pbd_dir(const sr_driver *d, const xv *srrec, const xv *pbd, char **ret)
{
    return dc_dir(d, xrec_str(srrec, "uuid"), xv_struct_get(pbd, "device_config"), ret);
}

/* Attaches an SR through a PBD record and registers it (no DB change). */
static xerr *attach_pbd(xapid *x, const char *sr_ref, const xv *srrec, const xv *pbd)
{
    const sr_driver *d = sr_driver_lookup(xrec_str(srrec, "type"));
    if (!d)
        return xerr_new("SR_UNKNOWN_DRIVER", xrec_str(srrec, "type"));
    AUTOFREE char *location = NULL;
    xerr *e = pbd_dir(d, srrec, pbd, &location);
    if (e)
        return e;
    sr *h = NULL;
    int r = sr_attach(d, location, &h);
    if (r < 0)
        return sr_xerr(r, "PBD.plug", sr_ref, NULL);
    slot_add(x, sr_ref, h);
    return NULL;
}

/* The plugged SR's slot with its operation lock held; attaches on first use after a restart
 * when the DB says this host's PBD is attached. SR_HAS_NO_PBDS / SR_NOT_ATTACHED otherwise. */
static xerr *slot_get(xapid *x, const char *sr_ref, struct slot **ret)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        pthread_mutex_lock(&slots_mu);
        struct slot *s = slot_find(x, sr_ref);
        if (s)
            s->users++;
        pthread_mutex_unlock(&slots_mu);
        if (s) {
            pthread_mutex_lock(&s->op);
            *ret = s;
            return NULL;
        }
        if (attempt)
            break;
        AUTO(xv) *srrec = NULL, *pbd = NULL;
        xerr *e = get_record(x, CLS(SR), sr_ref, &srrec);
        size_t n = 0;
        if (!e)
            e = host_pbd(x, sr_ref, NULL, &pbd, &n);
        if (e)
            return e;
        if (!pbd)
            return xerr_new("SR_HAS_NO_PBDS", sr_ref);
        if (!xrec_bool(pbd, "currently_attached"))
            return xerr_new("SR_NOT_ATTACHED", sr_ref);
        /* two threads may race here: the loser's attach fails on the SR's lock; retry the
         * lookup either way */
        xerr *ae = attach_pbd(x, sr_ref, srrec, pbd);
        xerr_free(ae);
    }
    return xerr_new("SR_NOT_ATTACHED", sr_ref);
}

/* ---- SR records: statistics and synchronisation ------------------------------------------- */

struct sync {
    const char *sr_ref;
    sr *h;
    struct sr_stat st;
    struct sr_vdi_info *disk; /* NULL: statistics only */
    size_t ndisk;
};

static xv *sm_config_with_parent(const xv *old, const char *parent, const char *format)
{
    xv *m = old ? xv_copy(old) : xv_new_struct();
    AUTO(xv) *out = xv_new_struct();
    for (size_t i = 0; i < m->u.st.n; i++)
        if (strcmp(m->u.st.keys[i], "vhd-parent"))
            xv_struct_set(out, m->u.st.keys[i], xv_copy(m->u.st.vals[i]));
    xv_free(m);
    if (parent && *parent)
        xv_struct_set(out, "vhd-parent", xv_new_string(parent));
    if (!strcmp(format, "vhd") && !xv_struct_get(out, "vdi_type"))
        xv_struct_set(out, "vdi_type", xv_new_string("vhd"));
    return TAKE_PTR(out);
}

/* A record for a VDI found on disk (scan) or made by the driver. */
static xv *vdi_record_new(const char *sr_ref, const struct sr_vdi_info *vi, const xv *args)
{
    xv *rec = record_from_args(CLS(VDI), args);
    xv_struct_set(rec, "uuid", xv_new_string(vi->uuid)); /* "": the store makes one */
    xv_struct_set(rec, "SR", xv_new_string(sr_ref));
    xv_struct_set(rec, "location", xv_new_string(vi->location));
    xv_struct_set(rec, "virtual_size", xv_new_int((int64_t)vi->virtual_size));
    xv_struct_set(rec, "physical_utilisation", xv_new_int((int64_t)vi->physical_size));
    xv_struct_set(rec, "managed", xv_new_bool(!vi->hidden));
    xv_struct_set(rec, "missing", xv_new_bool(false));
    if (vi->hidden) {
        xv_struct_set(rec, "read_only", xv_new_bool(true));
        xv_struct_set(rec, "name_label", xv_new_string("base copy"));
    } else if (vi->read_only) {
        xv_struct_set(rec, "read_only", xv_new_bool(true));
    }
    if (!args && !vi->hidden && strcmp(vi->format, "vhd"))
        xv_struct_set(rec, "name_label", xv_new_string(vi->location)); /* an ISO's file name */
    xv_struct_set(rec, "sm_config",
                  sm_config_with_parent(args ? xv_struct_get(args, "sm_config") : NULL,
                                        vi->parent_uuid, vi->format));
    return rec;
}

static xerr *vdi_update_txn(store_txn *t, const char *ref, const xv *rec,
                            const struct sr_vdi_info *vi)
{
    const api_class *c = CLS(VDI);
    xerr *e = xset(t, c, ref, "virtual_size", xv_new_int((int64_t)vi->virtual_size));
    if (!e)
        e = xset(t, c, ref, "physical_utilisation", xv_new_int((int64_t)vi->physical_size));
    if (!e && xrec_bool(rec, "managed") == vi->hidden)
        e = xset(t, c, ref, "managed", xv_new_bool(!vi->hidden));
    if (!e && vi->read_only && !xrec_bool(rec, "read_only"))
        e = xset(t, c, ref, "read_only", xv_new_bool(true));
    if (!e && xrec_bool(rec, "missing"))
        e = xset(t, c, ref, "missing", xv_new_bool(false));
    const xv *sm = xv_struct_get(rec, "sm_config");
    const char *old_parent = sm ? xv_struct_get_str(sm, "vhd-parent") : NULL;
    if (!e && strcmp(old_parent ? old_parent : "", vi->parent_uuid))
        e = xset(t, c, ref, "sm_config", sm_config_with_parent(sm, vi->parent_uuid, vi->format));
    return e;
}

static xerr *sync_txn(store_txn *t, void *ud)
{
    struct sync *p = ud;
    AUTO(xv) *arg = xv_new_string(p->sr_ref);
    const xv *args[] = {arg};
    AUTO(xv) *vdis = NULL;
    xerr *e = st_get_all_records(t, CLS(VDI), "\"SR\" = ?", args, 1, &vdis);
    if (e)
        return e;
    int64_t alloc = 0;
    if (p->disk) {
        /* records whose file is gone are forgotten; files without a record are introduced */
        for (size_t i = 0; i < vdis->u.st.n; i++) {
            const char *loc = xrec_str(vdis->u.st.vals[i], "location");
            const struct sr_vdi_info *vi = NULL;
            for (size_t j = 0; j < p->ndisk && !vi; j++)
                if (!strcmp(p->disk[j].location, loc))
                    vi = &p->disk[j];
            /* a file scan could not read (the GC writing it, a hidden leaf waiting for the
             * GC) keeps its record until it is gone */
            if (!vi && sr_vdi_exists(p->h, loc))
                continue;
            e = vi ? vdi_update_txn(t, vdis->u.st.keys[i], vdis->u.st.vals[i], vi)
                   : st_destroy(t, CLS(VDI), vdis->u.st.keys[i]);
            if (e)
                return e;
        }
        for (size_t j = 0; j < p->ndisk; j++) {
            bool known = false;
            for (size_t i = 0; i < vdis->u.st.n && !known; i++)
                known = !strcmp(xrec_str(vdis->u.st.vals[i], "location"), p->disk[j].location);
            if (known)
                continue;
            AUTO(xv) *rec = vdi_record_new(p->sr_ref, &p->disk[j], NULL);
            if ((e = st_create(t, CLS(VDI), NULL, rec, NULL)))
                return e;
        }
        for (size_t j = 0; j < p->ndisk; j++)
            if (!p->disk[j].hidden)
                alloc += (int64_t)p->disk[j].virtual_size;
    } else {
        for (size_t i = 0; i < vdis->u.st.n; i++)
            if (xrec_bool(vdis->u.st.vals[i], "managed"))
                alloc += xrec_int(vdis->u.st.vals[i], "virtual_size", 0);
    }
    const api_class *c = CLS(SR);
    e = xset(t, c, p->sr_ref, "physical_size", xv_new_int((int64_t)p->st.physical_size));
    if (!e)
        e = xset(t, c, p->sr_ref, "physical_utilisation",
                 xv_new_int((int64_t)p->st.physical_utilisation));
    if (!e)
        e = xset(t, c, p->sr_ref, "virtual_allocation", xv_new_int(alloc));
    return e;
}

/* Refreshes the SR's figures, and with full, its VDI records from the disk. */
static xerr *sr_sync(xapid *x, struct slot *s, bool full)
{
    struct sync p = {.sr_ref = s->sr_ref, .h = s->h};
    int r = sr_stat(s->h, &p.st);
    if (r < 0)
        return sr_xerr(r, "SR.update", s->sr_ref, NULL);
    if (full && (r = sr_scan(s->h, &p.disk, &p.ndisk)) < 0)
        return sr_xerr(r, "SR.scan", s->sr_ref, NULL);
    xerr *e = store_write(x->st, sync_txn, &p);
    free(p.disk);
    return e;
}

/* ---- background garbage collector ---------------------------------------------------------
 * One thread for the process collects the SRs queued by VDI.destroy (as SM's _kickGC): the VHD
 * work runs with no lock of ours held (the driver serialises its short steps), then the SR's
 * records are synchronised under its operation lock. PBD.unplug, SR.destroy and SR.scan wait
 * for a running collection of their SR; shutdown stops the thread. */

struct gc_item {
    xapid *x;
    char *sr_ref;
};

static pthread_mutex_t gc_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gc_cv = PTHREAD_COND_INITIALIZER;
static struct gc_item *gc_q;
static size_t gc_n;
static struct gc_item gc_cur; /* the collection running, sr_ref NULL when idle */
static bool gc_started, gc_quit;
static pthread_t gc_thread;

/* Takes a use of the SR's slot without its operation lock (NULL if not plugged). */
static struct slot *slot_use(xapid *x, const char *sr_ref)
{
    pthread_mutex_lock(&slots_mu);
    struct slot *s = slot_find(x, sr_ref);
    if (s)
        s->users++;
    pthread_mutex_unlock(&slots_mu);
    return s;
}

/* Drops a use taken by slot_use. */
static void slot_unuse(struct slot *s)
{
    pthread_mutex_lock(&slots_mu);
    bool gone = --s->users == 0 && s->closing;
    pthread_mutex_unlock(&slots_mu);
    if (gone)
        slot_free(s);
}

/* Collects one SR and records the outcome. -EALREADY when another collection runs. */
static int gc_collect(xapid *x, const char *sr_ref)
{
    struct slot *s = slot_use(x, sr_ref);
    if (!s)
        return 0;
    struct sr_gc_stats gs;
    int r = sr_gc(s->h, &gs);
    if (r < 0 && r != -EALREADY)
        log_warn("storage: garbage collection of SR %s: %s", sr_ref, strerror(-r));
    pthread_mutex_lock(&s->op);
    if (r != -EALREADY) {
        xerr *e = sr_sync(x, s, true);
        if (e) {
            log_warn("storage: SR %s after garbage collection: %s", sr_ref, e->code);
            xerr_free(e);
        }
    }
    slot_put(s);
    return r;
}

static void *gc_main(void *ud)
{
    (void)ud;
    pthread_mutex_lock(&gc_mu);
    for (;;) {
        while (!gc_quit && gc_n == 0)
            pthread_cond_wait(&gc_cv, &gc_mu);
        if (gc_quit)
            break;
        gc_cur = gc_q[0];
        memmove(gc_q, gc_q + 1, --gc_n * sizeof(*gc_q));
        pthread_mutex_unlock(&gc_mu);
        gc_collect(gc_cur.x, gc_cur.sr_ref);
        pthread_mutex_lock(&gc_mu);
        free(gc_cur.sr_ref);
        gc_cur = (struct gc_item){0};
        pthread_cond_broadcast(&gc_cv);
    }
    pthread_mutex_unlock(&gc_mu);
    return NULL;
}

/* Queues a collection of the SR (once). */
static void gc_kick(xapid *x, const char *sr_ref)
{
    pthread_mutex_lock(&gc_mu);
    for (size_t i = 0; i < gc_n; i++)
        if (gc_q[i].x == x && !strcmp(gc_q[i].sr_ref, sr_ref)) {
            pthread_mutex_unlock(&gc_mu);
            return;
        }
    if (!gc_started) {
        if (pthread_create(&gc_thread, NULL, gc_main, NULL) != 0) {
            pthread_mutex_unlock(&gc_mu);
            log_warn("storage: cannot start the garbage collector thread");
            return;
        }
        gc_started = true;
    }
    gc_q = xrealloc(gc_q, (gc_n + 1) * sizeof(*gc_q));
    gc_q[gc_n++] = (struct gc_item){x, xstrdup(sr_ref)};
    pthread_cond_broadcast(&gc_cv);
    pthread_mutex_unlock(&gc_mu);
}

static bool gc_item_is(const struct gc_item *it, xapid *x, const char *sr_ref)
{
    return it->sr_ref && it->x == x && (!sr_ref || !strcmp(it->sr_ref, sr_ref));
}

/* Drops the queued collections of the SR (all of x's with sr_ref NULL) and waits for a running
 * one. Call with no slot held. */
static void gc_cancel_wait(xapid *x, const char *sr_ref)
{
    pthread_mutex_lock(&gc_mu);
    size_t k = 0;
    for (size_t i = 0; i < gc_n; i++) {
        if (gc_item_is(&gc_q[i], x, sr_ref))
            free(gc_q[i].sr_ref);
        else
            gc_q[k++] = gc_q[i];
    }
    gc_n = k;
    while (gc_item_is(&gc_cur, x, sr_ref))
        pthread_cond_wait(&gc_cv, &gc_mu);
    pthread_mutex_unlock(&gc_mu);
}

/* Collects the SR now, in the caller's thread (SR.scan). Call with no slot held. */
static void gc_now(xapid *x, const char *sr_ref)
{
    for (int tries = 0; tries < 100; tries++) {
        gc_cancel_wait(x, sr_ref);
        if (gc_collect(x, sr_ref) != -EALREADY)
            return;
    }
}

static void gc_stop(void)
{
    pthread_mutex_lock(&gc_mu);
    if (!gc_started) {
        pthread_mutex_unlock(&gc_mu);
        return;
    }
    gc_quit = true;
    pthread_cond_broadcast(&gc_cv);
    pthread_mutex_unlock(&gc_mu);
    pthread_join(gc_thread, NULL);
    pthread_mutex_lock(&gc_mu);
    for (size_t i = 0; i < gc_n; i++)
        free(gc_q[i].sr_ref);
    free(gc_q);
    gc_q = NULL;
    gc_n = 0;
    gc_started = gc_quit = false;
    pthread_mutex_unlock(&gc_mu);
}

/* ---- SR ----------------------------------------------------------------------------------- */

struct sr_create_p {
    xapid *x;
    const char *host;
    const xv *device_config;
    const char *location;
    const char *uuid;
    const char *name_label, *name_description, *type, *content_type;
    bool shared;
    const xv *sm_config;
    int64_t physical_size;
    bool plugged;
    const char *parent_key; /* the driver's, see sr_driver */
    char *sr_ref;
};

static xerr *sr_create_txn(store_txn *t, void *ud)
{
    struct sr_create_p *p = ud;
    if (p->host && !st_exists(t, CLS(host), p->host))
        return xerr_new("HANDLE_INVALID", "host", p->host);
    AUTO(xv) *rec = record_from_args(CLS(SR), NULL);
    xv_struct_set(rec, "uuid", xv_new_string(p->uuid));
    xv_struct_set(rec, "name_label", xv_new_string(p->name_label));
    xv_struct_set(rec, "name_description", xv_new_string(p->name_description));
    xv_struct_set(rec, "type", xv_new_string(p->type));
    xv_struct_set(rec, "content_type", xv_new_string(p->content_type));
    xv_struct_set(rec, "shared", xv_new_bool(p->shared));
    xv_struct_set(rec, "physical_size", xv_new_int(p->physical_size));
    if (p->sm_config)
        xv_struct_set(rec, "sm_config", xv_copy(p->sm_config));
    xerr *e = st_create(t, CLS(SR), NULL, rec, &p->sr_ref);
    if (e || !p->host)
        return e;
    /* one PBD for the host, and for a shared SR one per host of the pool (the others plug
     * theirs: this host can only attach here) */
    AUTO(xv) *hosts = NULL;
    if (p->shared && (e = st_get_all(t, CLS(host), NULL, NULL, 0, &hosts)))
        return e;
    size_t nh = hosts ? xv_array_len(hosts) : 0;
    for (size_t i = 0; i <= nh; i++) {
        const char *h = i == 0 ? p->host : xv_str(xv_array_get(hosts, i - 1));
        if (i > 0 && !strcmp(h, p->host))
            continue;
        AUTO(xv) *pbd = record_from_args(CLS(PBD), NULL);
        xv *dc = p->device_config ? xv_copy(p->device_config) : xv_new_struct();
        if (!p->parent_key)
            xv_struct_set(dc, "location", xv_new_string(p->location));
        xv_struct_set(pbd, "device_config", dc);
        xv_struct_set(pbd, "host", xv_new_string(h));
        xv_struct_set(pbd, "SR", xv_new_string(p->sr_ref));
        xv_struct_set(pbd, "currently_attached",
                      xv_new_bool(p->plugged && !strcmp(h, p->x->host_ref)));
        if ((e = st_create(t, CLS(PBD), NULL, pbd, NULL)))
            return e;
    }
    return NULL;
}

/* SR.create's work, shared with the first-start local SR. */
static xerr *sr_create_do(xapid *x, struct sr_create_p *p, char **ret_ref)
{
    const sr_driver *d = sr_driver_lookup(p->type);
    if (!d)
        return xerr_new("SR_UNKNOWN_DRIVER", p->type);
    char uuid[37];
    uuid_random(uuid);
    p->uuid = uuid;
    if (!p->content_type || !*p->content_type)
        p->content_type = d->content_type;
    p->parent_key = d->parent_key;
    const char *given = p->device_config ? xv_struct_get_str(p->device_config, "location") : NULL;
    AUTOFREE char *dflt = xasprintf("%s/sr/%s", x->cfg.state_dir, uuid);
    AUTOFREE char *under = NULL;
    if (d->parent_key) {
        xerr *pe = dc_dir(d, uuid, p->device_config, &under);
        if (pe)
            return pe;
        p->location = under;
    } else {
        p->location = given && *given ? given : dflt;
    }
    if (p->location[0] != '/')
        return xerr_new("INVALID_VALUE", "device_config:location", p->location);
    int r = sr_create(d, p->location);
    if (r < 0)
        return sr_xerr(r, "SR.create", NULL, NULL);
    sr *h = NULL;
    if ((r = sr_attach(d, p->location, &h)) < 0) {
        sr_delete(d, p->location);
        return sr_xerr(r, "SR.create", NULL, NULL);
    }
    p->plugged = true;
    xerr *e = store_write(x->st, sr_create_txn, p);
    if (e) {
        sr_detach(h);
        sr_delete(d, p->location);
        return e;
    }
    slot_add(x, p->sr_ref, h);
    struct slot *s = NULL;
    if (!slot_get(x, p->sr_ref, &s)) {
        xerr *se = sr_sync(x, s, true);
        if (se) {
            log_warn("SR.create: first scan of %s: %s", p->sr_ref, se->code);
            xerr_free(se);
        }
        slot_put(s);
    }
    log_info("SR %s (%s) created at %s", uuid, p->type, p->location);
    *ret_ref = p->sr_ref;
    return NULL;
}

xerr *api_SR_create(api_ctx *ctx, const char *p_host, const xv *p_device_config,
                    int64_t p_physical_size, const char *p_name_label,
                    const char *p_name_description, const char *p_type, const char *p_content_type,
                    bool p_shared, const xv *p_sm_config, xv **ret)
{
    if (is_null_ref(p_host))
        return xerr_new("HANDLE_INVALID", "host", p_host);
    struct sr_create_p p = {.x = ctx->x,
                            .host = p_host,
                            .device_config = p_device_config,
                            .name_label = p_name_label,
                            .name_description = p_name_description,
                            .type = p_type,
                            .content_type = p_content_type,
                            .shared = p_shared,
                            .sm_config = p_sm_config,
                            .physical_size = p_physical_size};
    char *ref = NULL;
    xerr *e = sr_create_do(ctx->x, &p, &ref);
    if (!e)
        *ret = xv_new_string_take(ref);
    return e;
}

/* SR_HAS_PBD while any PBD of the SR is attached; *ret_pbds gets the PBD records. */
static xerr *sr_check_unplugged(xapid *x, const char *sr_ref, xv **ret_pbds)
{
    AUTO(xv) *srrec = NULL;
    xerr *e = get_record(x, CLS(SR), sr_ref, &srrec);
    if (e)
        return e;
    AUTO(xv) *pbds = NULL;
    if ((e = records_where(x, CLS(PBD), "SR", sr_ref, &pbds)))
        return e;
    for (size_t i = 0; i < pbds->u.st.n; i++)
        if (xrec_bool(pbds->u.st.vals[i], "currently_attached"))
            return xerr_new("SR_HAS_PBD", sr_ref);
    *ret_pbds = TAKE_PTR(pbds);
    return NULL;
}

struct sr_forget_p {
    const char *sr_ref;
};

static xerr *sr_forget_txn(store_txn *t, void *ud)
{
    struct sr_forget_p *p = ud;
    AUTO(xv) *arg = xv_new_string(p->sr_ref);
    const xv *args[] = {arg};
    const int classes[] = {API_CLASS_VDI, API_CLASS_PBD};
    for (size_t k = 0; k < ARRAY_SIZE(classes); k++) {
        AUTO(xv) *refs = NULL;
        xerr *e = st_get_all(t, &api_classes[classes[k]], "\"SR\" = ?", args, 1, &refs);
        for (size_t i = 0; !e && i < xv_array_len(refs); i++)
            e = st_destroy(t, &api_classes[classes[k]], xv_str(xv_array_get(refs, i)));
        if (e)
            return e;
    }
    /* the pool's SR pointers must not dangle */
    AUTO(xv) *pools = NULL;
    xerr *e = st_get_all_records(t, CLS(pool), NULL, NULL, 0, &pools);
    const char *fields[] = {"default_SR", "suspend_image_SR", "crash_dump_SR"};
    for (size_t i = 0; !e && i < pools->u.st.n; i++)
        for (size_t f = 0; !e && f < ARRAY_SIZE(fields); f++)
            if (!strcmp(xrec_str(pools->u.st.vals[i], fields[f]), p->sr_ref))
                e = xset(t, CLS(pool), pools->u.st.keys[i], fields[f], xv_new_string(NULLREF));
    if (!e)
        e = st_destroy(t, CLS(SR), p->sr_ref);
    return e;
}

xerr *api_SR_forget(api_ctx *ctx, const char *p_sr)
{
    AUTO(xv) *pbds = NULL;
    xerr *e = sr_check_unplugged(ctx->x, p_sr, &pbds);
    if (e)
        return e;
    struct sr_forget_p p = {.sr_ref = p_sr};
    return store_write(ctx->x->st, sr_forget_txn, &p);
}

xerr *api_SR_destroy(api_ctx *ctx, const char *p_sr)
{
    AUTO(xv) *pbds = NULL, *srrec = NULL;
    xerr *e = sr_check_unplugged(ctx->x, p_sr, &pbds);
    if (!e)
        e = get_record(ctx->x, CLS(SR), p_sr, &srrec);
    if (e)
        return e;
    const sr_driver *d = sr_driver_lookup(xrec_str(srrec, "type"));
    if (!d)
        return xerr_new("SR_UNKNOWN_DRIVER", xrec_str(srrec, "type"));
    const xv *pbd = NULL;
    for (size_t i = 0; i < pbds->u.st.n && !pbd; i++)
        if (!strcmp(xrec_str(pbds->u.st.vals[i], "host"), ctx->x->host_ref))
            pbd = pbds->u.st.vals[i];
    if (!pbd)
        return xerr_new("SR_HAS_NO_PBDS", p_sr);
    AUTOFREE char *location = NULL;
    if ((e = pbd_dir(d, srrec, pbd, &location)))
        return e;
    gc_cancel_wait(ctx->x, p_sr);
    int r = sr_delete(d, location);
    if (r < 0 && r != -ENOENT)
        return sr_xerr(r, "SR.destroy", p_sr, NULL);
    struct sr_forget_p p = {.sr_ref = p_sr};
    return store_write(ctx->x->st, sr_forget_txn, &p);
}

/* Unlike SM, which kicks its GC after a scan, the collection runs before the scan returns, so
 * a scan leaves the tree collapsed as far as it can be. */
xerr *api_SR_scan(api_ctx *ctx, const char *p_sr)
{
    {
        AUTOSLOT *s = NULL;
        xerr *e = slot_get(ctx->x, p_sr, &s);
        if (e)
            return e;
    }
    gc_now(ctx->x, p_sr);
    AUTOSLOT *s = NULL;
    xerr *e = slot_get(ctx->x, p_sr, &s);
    if (e)
        return e;
    return sr_sync(ctx->x, s, true);
}

xerr *api_SR_update(api_ctx *ctx, const char *p_sr)
{
    AUTOSLOT *s = NULL;
    xerr *e = slot_get(ctx->x, p_sr, &s);
    if (e)
        return e;
    return sr_sync(ctx->x, s, false);
}

struct intro_p {
    xv *rec;
    const api_class *c;
    char *ref;
};

static xerr *intro_txn(store_txn *t, void *ud)
{
    struct intro_p *p = ud;
    const char *uuid = xrec_str(p->rec, "uuid");
    AUTO(xv) *arg = xv_new_string(uuid);
    const xv *args[] = {arg};
    AUTO(xv) *dup = NULL;
    xerr *e = st_get_all(t, p->c, "\"uuid\" = ?", args, 1, &dup);
    if (e)
        return e;
    if (xv_array_len(dup) > 0)
        return xerr_new("DB_UNIQUENESS_CONSTRAINT_VIOLATION", p->c->name, "uuid", uuid);
    if (p->c == CLS(VDI)) {
        const char *sr_ref = xrec_str(p->rec, "SR");
        if (!st_exists(t, CLS(SR), sr_ref))
            return xerr_new("HANDLE_INVALID", "SR", sr_ref);
    }
    return st_create(t, p->c, NULL, p->rec, &p->ref);
}

xerr *api_SR_introduce(api_ctx *ctx, const char *p_uuid, const char *p_name_label,
                       const char *p_name_description, const char *p_type,
                       const char *p_content_type, bool p_shared, const xv *p_sm_config, xv **ret)
{
    if (!sr_driver_lookup(p_type))
        return xerr_new("SR_UNKNOWN_DRIVER", p_type);
    if (*p_uuid && !uuid_valid(p_uuid))
        return xerr_new("UUID_INVALID", "SR", p_uuid);
    AUTO(xv) *rec = record_from_args(CLS(SR), NULL);
    xv_struct_set(rec, "uuid", xv_new_string(p_uuid));
    xv_struct_set(rec, "name_label", xv_new_string(p_name_label));
    xv_struct_set(rec, "name_description", xv_new_string(p_name_description));
    xv_struct_set(rec, "type", xv_new_string(p_type));
    xv_struct_set(rec, "content_type", xv_new_string(p_content_type));
    xv_struct_set(rec, "shared", xv_new_bool(p_shared));
    if (p_sm_config)
        xv_struct_set(rec, "sm_config", xv_copy(p_sm_config));
    struct intro_p p = {.rec = rec, .c = CLS(SR)};
    xerr *e = store_write(ctx->x->st, intro_txn, &p);
    if (!e)
        *ret = xv_new_string_take(p.ref);
    return e;
}

struct setp {
    const api_class *c;
    const char *ref;
    const char *field;
    xv *v;
};

static xerr *setp_txn(store_txn *t, void *ud)
{
    struct setp *p = ud;
    xv *v = p->v;
    p->v = NULL;
    return xset(t, p->c, p->ref, p->field, v);
}

static xerr *set_one(api_ctx *ctx, const api_class *c, const char *ref, const char *field, xv *v)
{
    struct setp p = {c, ref, field, v};
    xerr *e = store_write(ctx->x->st, setp_txn, &p);
    xv_free(p.v);
    return e;
}

xerr *api_SR_set_name_label(api_ctx *ctx, const char *p_sr, const char *p_value)
{
    return set_one(ctx, CLS(SR), p_sr, "name_label", xv_new_string(p_value));
}

xerr *api_SR_set_name_description(api_ctx *ctx, const char *p_sr, const char *p_value)
{
    return set_one(ctx, CLS(SR), p_sr, "name_description", xv_new_string(p_value));
}

/* As SM's probe for NFS-like SRs: the SRs found under the directory device_config names
 * (device_config:path for `shared`, :location otherwise), as XML:
 * <SRlist><SR><UUID>…</UUID></SR>…</SRlist>. Touches nothing. */
xerr *api_SR_probe(api_ctx *ctx, const char *p_host, const xv *p_device_config, const char *p_type,
                   const xv *p_sm_config, xv **ret)
{
    (void)p_sm_config;
    if (is_null_ref(p_host))
        return xerr_new("HANDLE_INVALID", "host", p_host ? p_host : "");
    AUTO(xv) *host = NULL;
    xerr *e = get_record(ctx->x, CLS(host), p_host, &host);
    if (e)
        return e;
    const sr_driver *d = sr_driver_lookup(p_type);
    if (!d)
        return xerr_new("SR_UNKNOWN_DRIVER", p_type);
    const char *dir = NULL;
    if ((e = dc_path(d, p_device_config, &dir)))
        return e;
    char(*found)[37] = NULL;
    size_t n = 0;
    int r = sr_probe(d, dir, &found, &n);
    if (r < 0)
        return sr_xerr(r, "SR.probe", NULL, NULL);
    sbuf b = {0};
    sbuf_puts(&b, "<?xml version=\"1.0\" ?>\n<SRlist>\n");
    for (size_t i = 0; i < n; i++)
        sbuf_printf(&b, "\t<SR>\n\t\t<UUID>%s</UUID>\n\t</SR>\n", found[i]);
    sbuf_puts(&b, "</SRlist>\n");
    free(found);
    *ret = xv_new_string_take(sbuf_steal(&b, NULL));
    return NULL;
}

/* XAPI's rule: an SR becomes shared only when every host has a PBD for it, and stops being
 * shared only when at most one host has. */
xerr *api_SR_set_shared(api_ctx *ctx, const char *p_sr, bool p_value)
{
    AUTO(xv) *srrec = NULL;
    xerr *e = get_record(ctx->x, CLS(SR), p_sr, &srrec);
    if (e)
        return e;
    AUTO(xv) *pbds = NULL, *hosts = NULL;
    if ((e = records_where(ctx->x, CLS(PBD), "SR", p_sr, &pbds)) ||
        (e = store_get_all_records(ctx->x->st, CLS(host), NULL, NULL, 0, &hosts)))
        return e;
    if (p_value) {
        for (size_t h = 0; h < hosts->u.st.n; h++) {
            bool have = false;
            for (size_t i = 0; i < pbds->u.st.n && !have; i++)
                have = !strcmp(xrec_str(pbds->u.st.vals[i], "host"), hosts->u.st.keys[h]);
            if (!have)
                return xerr_new("SR_NO_PBDS", p_sr);
        }
    } else if (pbds->u.st.n > 1) {
        return xerr_new("SR_HAS_MULTIPLE_PBDS", pbds->u.st.keys[0]);
    }
    return set_one(ctx, CLS(SR), p_sr, "shared", xv_new_bool(p_value));
}

xerr *api_SR_get_supported_types(api_ctx *ctx, xv **ret)
{
    (void)ctx;
    xv *a = xv_new_array();
    for (size_t i = 0; sr_drivers[i]; i++)
        xv_array_append(a, xv_new_string(sr_drivers[i]->type));
    *ret = a;
    return NULL;
}

/* ---- PBD ---------------------------------------------------------------------------------- */

xerr *api_PBD_plug(api_ctx *ctx, const char *p_self)
{
    xapid *x = ctx->x;
    AUTO(xv) *pbd = NULL, *srrec = NULL;
    xerr *e = get_record(x, CLS(PBD), p_self, &pbd);
    if (!e)
        e = get_record(x, CLS(SR), xrec_str(pbd, "SR"), &srrec);
    if (e)
        return e;
    const char *sr_ref = xrec_str(pbd, "SR");
    /* each host plugs its own PBDs (a shared SR has one per host) */
    if (strcmp(xrec_str(pbd, "host"), x->host_ref))
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "the PBD belongs to another host, which plugs it itself");
    pthread_mutex_lock(&slots_mu);
    bool have = slot_find(x, sr_ref) != NULL;
    pthread_mutex_unlock(&slots_mu);
    if (!have && (e = attach_pbd(x, sr_ref, srrec, pbd)))
        return e;
    if (!xrec_bool(pbd, "currently_attached") &&
        (e = set_one(ctx, CLS(PBD), p_self, "currently_attached", xv_new_bool(true))))
        return e;
    AUTOSLOT *s = NULL;
    if ((e = slot_get(x, sr_ref, &s)))
        return e;
    return sr_sync(x, s, true);
}

/* VDI_IN_USE for the first VDI of the SR that is attached (VBD or driver). */
static xerr *sr_check_idle(xapid *x, const char *sr_ref, struct slot *s, const char *op)
{
    AUTO(xv) *vdis = NULL;
    xerr *e = records_where(x, CLS(VDI), "SR", sr_ref, &vdis);
    if (e)
        return e;
    for (size_t i = 0; i < vdis->u.st.n; i++) {
        if (s && sr_vdi_attached(s->h, xrec_str(vdis->u.st.vals[i], "location")))
            return xerr_new("VDI_IN_USE", vdis->u.st.keys[i], op);
        AUTO(xv) *vbds = NULL;
        if ((e = records_where(x, CLS(VBD), "VDI", vdis->u.st.keys[i], &vbds)))
            return e;
        for (size_t j = 0; j < vbds->u.st.n; j++)
            if (xrec_bool(vbds->u.st.vals[j], "currently_attached"))
                return xerr_new("VDI_IN_USE", vdis->u.st.keys[i], op);
    }
    return NULL;
}

xerr *api_PBD_unplug(api_ctx *ctx, const char *p_self)
{
    xapid *x = ctx->x;
    AUTO(xv) *pbd = NULL;
    xerr *e = get_record(x, CLS(PBD), p_self, &pbd);
    if (e)
        return e;
    const char *sr_ref = xrec_str(pbd, "SR");
    if (!xrec_bool(pbd, "currently_attached"))
        return NULL;
    if (strcmp(xrec_str(pbd, "host"), x->host_ref))
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "the PBD belongs to another host, which unplugs it itself");
    gc_cancel_wait(x, sr_ref);
    struct slot *s = NULL;
    xerr *ge = slot_get(x, sr_ref, &s);
    xerr_free(ge);
    e = sr_check_idle(x, sr_ref, s, "PBD.unplug");
    if (!e)
        e = set_one(ctx, CLS(PBD), p_self, "currently_attached", xv_new_bool(false));
    slot_put(s);
    if (!e)
        slot_remove(x, sr_ref);
    return e;
}

static xerr *pbd_destroy_txn(store_txn *t, void *ud)
{
    return st_destroy(t, CLS(PBD), ud);
}

xerr *api_PBD_destroy(api_ctx *ctx, const char *p_self)
{
    AUTO(xv) *pbd = NULL;
    xerr *e = get_record(ctx->x, CLS(PBD), p_self, &pbd);
    if (e)
        return e;
    if (xrec_bool(pbd, "currently_attached"))
        return xerr_new("OPERATION_NOT_ALLOWED", "PBD is currently attached");
    return store_write(ctx->x->st, pbd_destroy_txn, (void *)p_self);
}

/* ---- VDI ---------------------------------------------------------------------------------- */

/* Waits, with no lock of ours held, until the collector is not merging the VDI's chain: the
 * operation that follows holds the SR's operation lock, and waiting under it would hold up
 * the SR's other chains too (a merge starting in between is still waited for under it). */
static void vdi_wait_chain(xapid *x, const xv *rec)
{
    struct slot *u = slot_use(x, xrec_str(rec, "SR"));
    if (!u)
        return;
    sr_vdi_wait_chain(u->h, xrec_str(rec, "location"));
    slot_unuse(u);
}

/* The VDI's record and its SR's slot (locked). */
static xerr *vdi_open(xapid *x, const char *vdi, xv **ret_rec, struct slot **ret_slot)
{
    AUTO(xv) *rec = NULL;
    xerr *e = get_record(x, CLS(VDI), vdi, &rec);
    if (e)
        return e;
    vdi_wait_chain(x, rec);
    if ((e = slot_get(x, xrec_str(rec, "SR"), ret_slot)))
        return e;
    *ret_rec = TAKE_PTR(rec);
    return NULL;
}

/* Records a VDI whose file the driver has just made (takes rec); if that fails the file goes
 * too. *ret gets the new ref. */
static xerr *record_new_vdi(xapid *x, struct slot *s, xv *rec, const char *location, xv **ret)
{
    char *ref = NULL;
    xerr *e = store_create(x->st, CLS(VDI), rec, &ref);
    xv_free(rec);
    if (e) {
        sr_vdi_delete(s->h, location);
        return e;
    }
    xerr_free(sr_sync(x, s, false));
    *ret = xv_new_string_take(ref);
    return NULL;
}

xerr *api_VDI_create(api_ctx *ctx, const xv *p_args, xv **ret)
{
    xapid *x = ctx->x;
    const char *sr_ref = xv_struct_get_str(p_args, "SR");
    const xv *vs = xv_struct_get(p_args, "virtual_size");
    int64_t size = vs && vs->kind == XV_INT ? vs->u.i : -1;
    uint64_t rounded;
    if (size < 0 || sr_round_size(size, &rounded) < 0) {
        char buf[24];
        snprintf(buf, sizeof(buf), "%lld", (long long)size);
        return xerr_new("INVALID_VALUE", "virtual_size", buf);
    }
    AUTOSLOT *s = NULL;
    xerr *e = slot_get(x, sr_ref ? sr_ref : "", &s);
    if (e)
        return e;
    struct sr_vdi_info vi;
    int r = sr_vdi_create(s->h, rounded, &vi);
    if (r < 0)
        return sr_xerr(r, "VDI.create", s->sr_ref, NULL);
    return record_new_vdi(x, s, vdi_record_new(s->sr_ref, &vi, p_args), vi.location, ret);
}

static xerr *vdi_forget_txn(store_txn *t, void *ud)
{
    const char *vdi = ud;
    /* VBDs of the VDI go with it (detached ones only reach here) */
    AUTO(xv) *arg = xv_new_string(vdi);
    const xv *args[] = {arg};
    AUTO(xv) *vbds = NULL;
    xerr *e = st_get_all(t, CLS(VBD), "\"VDI\" = ?", args, 1, &vbds);
    for (size_t i = 0; !e && i < xv_array_len(vbds); i++)
        e = st_destroy(t, CLS(VBD), xv_str(xv_array_get(vbds, i)));
    if (!e)
        e = st_destroy(t, CLS(VDI), vdi);
    return e;
}

static xerr *vdi_check_unattached(xapid *x, const char *vdi, const char *op)
{
    AUTO(xv) *vbds = NULL;
    xerr *e = records_where(x, CLS(VBD), "VDI", vdi, &vbds);
    if (e)
        return e;
    for (size_t j = 0; j < vbds->u.st.n; j++)
        if (xrec_bool(vbds->u.st.vals[j], "currently_attached"))
            return xerr_new("VDI_IN_USE", vdi, op);
    return NULL;
}

xerr *api_VDI_destroy(api_ctx *ctx, const char *p_self)
{
    xapid *x = ctx->x;
    AUTO(xv) *rec = NULL;
    AUTOSLOT *s = NULL;
    xerr *e = vdi_open(x, p_self, &rec, &s);
    if (e)
        return e;
    if (!xrec_bool(rec, "managed"))
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "the VDI is a hidden base copy of a snapshot tree");
    if ((e = vdi_check_unattached(x, p_self, "destroy")))
        return e;
    int r = sr_vdi_delete(s->h, xrec_str(rec, "location"));
    if (r < 0 && r != -ENOENT)
        return sr_xerr(r, "destroy", s->sr_ref, p_self);
    if ((e = store_write(x->st, vdi_forget_txn, (void *)p_self)))
        return e;
    gc_kick(x, s->sr_ref);
    return sr_sync(x, s, false);
}

xerr *api_VDI_forget(api_ctx *ctx, const char *p_vdi)
{
    AUTO(xv) *rec = NULL;
    xerr *e = get_record(ctx->x, CLS(VDI), p_vdi, &rec);
    if (!e)
        e = vdi_check_unattached(ctx->x, p_vdi, "forget");
    if (!e)
        e = store_write(ctx->x->st, vdi_forget_txn, (void *)p_vdi);
    return e;
}

struct vdi_upd_p {
    const char *ref;
    xv *rec;
    struct sr_vdi_info vi;
};

static xerr *vdi_upd_txn(store_txn *t, void *ud)
{
    struct vdi_upd_p *p = ud;
    return vdi_update_txn(t, p->ref, p->rec, &p->vi);
}

xerr *api_VDI_resize(api_ctx *ctx, const char *p_vdi, int64_t p_size)
{
    xapid *x = ctx->x;
    AUTO(xv) *rec = NULL;
    AUTOSLOT *s = NULL;
    xerr *e = vdi_open(x, p_vdi, &rec, &s);
    if (e)
        return e;
    uint64_t rounded;
    if (sr_round_size(p_size, &rounded) < 0) {
        char buf[24];
        snprintf(buf, sizeof(buf), "%lld", (long long)p_size);
        return xerr_new("INVALID_VALUE", "size", buf);
    }
    if (!xrec_bool(rec, "managed"))
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "the VDI is a hidden base copy of a snapshot tree");
    if ((e = vdi_check_unattached(x, p_vdi, "resize")))
        return e;
    const char *loc = xrec_str(rec, "location");
    int r = sr_vdi_resize(s->h, loc, rounded);
    if (r < 0)
        return sr_xerr(r, "VDI.resize", s->sr_ref, p_vdi);
    struct vdi_upd_p p = {.ref = p_vdi, .rec = rec};
    if ((r = sr_vdi_info(s->h, loc, &p.vi)) < 0)
        return sr_xerr(r, "VDI.resize", s->sr_ref, p_vdi);
    if ((e = store_write(x->st, vdi_upd_txn, &p)))
        return e;
    return sr_sync(x, s, false);
}

xerr *api_VDI_update(api_ctx *ctx, const char *p_vdi)
{
    xapid *x = ctx->x;
    AUTO(xv) *rec = NULL;
    AUTOSLOT *s = NULL;
    xerr *e = vdi_open(x, p_vdi, &rec, &s);
    if (e)
        return e;
    struct vdi_upd_p p = {.ref = p_vdi, .rec = rec};
    int r = sr_vdi_info(s->h, xrec_str(rec, "location"), &p.vi);
    if (r < 0)
        return sr_xerr(r, "VDI.update", s->sr_ref, p_vdi);
    return store_write(x->st, vdi_upd_txn, &p);
}

/* The new leaf of a snapshot/clone/copy: the source's descriptive fields, the disk's facts.
 * A snapshot or clone keeps the source's read_only; a copy is a new writable disk. */
static xv *vdi_derived_record(const char *sr_ref, const xv *src, const char *src_ref,
                              const struct sr_vdi_info *vi, bool snapshot, bool copy)
{
    xv *rec = vdi_record_new(sr_ref, vi, src);
    xv_struct_set(rec, "is_a_snapshot", xv_new_bool(snapshot));
    xv_struct_set(rec, "snapshot_of", xv_new_string(snapshot ? src_ref : NULLREF));
    if (snapshot)
        xv_struct_set(rec, "snapshot_time", xv_new_datetime_epoch(now_epoch()));
    xv_struct_set(rec, "read_only", xv_new_bool(!copy && xrec_bool(src, "read_only")));
    return rec;
}

static xerr *vdi_tree_copy(api_ctx *ctx, const char *p_vdi, bool snapshot, xv **ret)
{
    xapid *x = ctx->x;
    const char *op = snapshot ? "snapshot" : "clone";
    AUTO(xv) *rec = NULL;
    AUTOSLOT *s = NULL;
    xerr *e = vdi_open(x, p_vdi, &rec, &s);
    if (e)
        return e;
    if (!xrec_bool(rec, "managed"))
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "the VDI is a hidden base copy of a snapshot tree");
    struct sr_vdi_info nv, base;
    int r = sr_vdi_snapshot(s->h, xrec_str(rec, "location"), &nv, &base);
    if (r < 0)
        return sr_xerr(r, op, s->sr_ref, p_vdi);
    AUTO(xv) *nrec = vdi_derived_record(s->sr_ref, rec, p_vdi, &nv, snapshot, false);
    char *nref = NULL;
    if ((e = store_create(x->st, CLS(VDI), nrec, &nref)))
        return e;
    /* the base copy's record, the VDI's new parent: from the disk */
    xerr *se = sr_sync(x, s, true);
    if (se) {
        free(nref);
        return se;
    }
    *ret = xv_new_string_take(nref);
    return NULL;
}

xerr *api_VDI_snapshot(api_ctx *ctx, const char *p_vdi, const xv *p_driver_params, xv **ret)
{
    (void)p_driver_params;
    return vdi_tree_copy(ctx, p_vdi, true, ret);
}

xerr *api_VDI_clone(api_ctx *ctx, const char *p_vdi, const xv *p_driver_params, xv **ret)
{
    (void)p_driver_params;
    return vdi_tree_copy(ctx, p_vdi, false, ret);
}

/* Takes the slots of up to three SRs (duplicates allowed) in one order (by ref), so that
 * opposite copies cannot deadlock; out[i] is refs[i]'s slot. On failure none is held. */
static xerr *slots_get_n(xapid *x, const char *const *refs, size_t n, struct slot **out)
{
    const char *order[3];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++)
            dup = !strcmp(order[j], refs[i]);
        if (!dup)
            order[k++] = refs[i];
    }
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && strcmp(order[j - 1], order[j]) > 0; j--) {
            const char *t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    struct slot *held[3] = {0};
    for (size_t i = 0; i < k; i++) {
        xerr *e = slot_get(x, order[i], &held[i]);
        if (e) {
            while (i > 0)
                slot_put(held[--i]);
            return e;
        }
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < k; j++)
            if (!strcmp(order[j], refs[i]))
                out[i] = held[j];
    return NULL;
}

static void slots_put_n(struct slot **s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = s[j] == s[i];
        if (!seen && s[i])
            slot_put(s[i]);
    }
}

/* VDI.copy into an existing VDI: into_vdi ends up reading what vdi reads over vdi's size
 * (with base_vdi, only the blocks where vdi and base_vdi differ are written, into_vdi being
 * taken to hold base_vdi's data already). */
static xerr *vdi_copy_into(xapid *x, const char *p_vdi, const xv *rec, const char *p_base,
                           const char *p_into, xv **ret)
{
    if (!strcmp(p_vdi, p_into))
        return xerr_new("INVALID_VALUE", "into_vdi", p_into);
    AUTO(xv) *into = NULL, *base = NULL;
    xerr *e = get_record(x, CLS(VDI), p_into, &into);
    if (!e && !is_null_ref(p_base))
        e = get_record(x, CLS(VDI), p_base, &base);
    if (e)
        return e;
    if (xrec_bool(into, "read_only") || !xrec_bool(into, "managed"))
        return xerr_new("VDI_READONLY", p_into);
    if (xrec_int(into, "virtual_size", 0) < xrec_int(rec, "virtual_size", 0)) {
        char buf[24];
        snprintf(buf, sizeof(buf), "%lld", (long long)xrec_int(rec, "virtual_size", 0));
        return xerr_new("VDI_TOO_SMALL", p_into, buf);
    }
    if ((e = vdi_check_unattached(x, p_into, "copy")))
        return e;
    vdi_wait_chain(x, rec);
    vdi_wait_chain(x, into);
    if (base)
        vdi_wait_chain(x, base);
    const char *refs[3] = {xrec_str(rec, "SR"), xrec_str(into, "SR"),
                           base ? xrec_str(base, "SR") : xrec_str(rec, "SR")};
    struct slot *sl[3] = {0};
    if ((e = slots_get_n(x, refs, 3, sl)))
        return e;
    int r = sr_vdi_copy_into(sl[0]->h, xrec_str(rec, "location"), base ? sl[2]->h : NULL,
                             base ? xrec_str(base, "location") : NULL, sl[1]->h,
                             xrec_str(into, "location"));
    if (r == -EFBIG) {
        char buf[24];
        snprintf(buf, sizeof(buf), "%lld", (long long)xrec_int(rec, "virtual_size", 0));
        e = xerr_new("VDI_TOO_SMALL", p_into, buf);
    } else if (r == -EBUSY) {
        e = xerr_new("VDI_IN_USE", p_into, "copy");
    } else if (r == -EROFS) {
        e = xerr_new("VDI_READONLY", p_into);
    } else if (r < 0) {
        e = sr_xerr(r, "copy", refs[0], p_vdi);
    } else {
        struct vdi_upd_p p = {.ref = p_into, .rec = into};
        if ((r = sr_vdi_info(sl[1]->h, xrec_str(into, "location"), &p.vi)) == 0)
            e = store_write(x->st, vdi_upd_txn, &p);
        if (!e)
            e = sr_sync(x, sl[1], false);
    }
    slots_put_n(sl, 3);
    if (!e)
        *ret = xv_new_string(p_into);
    return e;
}

/* XAPI's VDI.copy: into a new VDI of sr (the VDI's own SR when NULL), or into into_vdi. A
 * base_vdi without into_vdi is ignored: a new VDI holds nothing of it, so all is copied. */
xerr *api_VDI_copy(api_ctx *ctx, const char *p_vdi, const char *p_sr, const char *p_base_vdi,
                   const char *p_into_vdi, xv **ret)
{
    xapid *x = ctx->x;
    AUTO(xv) *rec = NULL;
    xerr *e = get_record(x, CLS(VDI), p_vdi, &rec);
    if (e)
        return e;
    if (!is_null_ref(p_into_vdi))
        return vdi_copy_into(x, p_vdi, rec, p_base_vdi, p_into_vdi, ret);
    const char *src_sr = xrec_str(rec, "SR");
    const char *dst_sr = is_null_ref(p_sr) ? src_sr : p_sr;
    const char *refs[2] = {src_sr, dst_sr};
    struct slot *sl[2] = {0};
    vdi_wait_chain(x, rec);
    if ((e = slots_get_n(x, refs, 2, sl)))
        return e;
    struct sr_vdi_info nv;
    int r = sr_vdi_copy(sl[0]->h, xrec_str(rec, "location"), sl[1]->h, &nv);
    if (r < 0)
        e = sr_xerr(r, "copy", src_sr, p_vdi);
    else
        e = record_new_vdi(x, sl[1],
                           vdi_derived_record(sl[1]->sr_ref, rec, p_vdi, &nv, false, true),
                           nv.location, ret);
    slots_put_n(sl, 2);
    return e;
}

xerr *api_VDI_introduce(api_ctx *ctx, const char *p_uuid, const char *p_name_label,
                        const char *p_name_description, const char *p_SR, const char *p_type,
                        bool p_sharable, bool p_read_only, const xv *p_other_config,
                        const char *p_location, const xv *p_xenstore_data, const xv *p_sm_config,
                        bool p_managed, int64_t p_virtual_size, int64_t p_physical_utilisation,
                        const char *p_metadata_of_pool, bool p_is_a_snapshot,
                        const char *p_snapshot_time, const char *p_snapshot_of, xv **ret)
{
    (void)p_managed, (void)p_virtual_size, (void)p_physical_utilisation, (void)p_metadata_of_pool;
    xapid *x = ctx->x;
    AUTOSLOT *s = NULL;
    xerr *e = slot_get(x, p_SR, &s);
    if (e)
        return e;
    struct sr_vdi_info vi;
    int r = sr_vdi_info(s->h, p_location, &vi);
    if (r < 0)
        return xerr_new("SR_BACKEND_FAILURE", "VDIUnavailable",
                        "The VDI is not available: no such file in the SR", "");
    if (*p_uuid && vi.uuid[0] && strcmp(p_uuid, vi.uuid))
        return xerr_new("INVALID_VALUE", "uuid", p_uuid);
    AUTO(xv) *args = xv_new_struct();
    xv_struct_set(args, "name_label", xv_new_string(p_name_label));
    xv_struct_set(args, "name_description", xv_new_string(p_name_description));
    xv_struct_set(args, "type", xv_new_string(p_type));
    xv_struct_set(args, "sharable", xv_new_bool(p_sharable));
    xv_struct_set(args, "read_only", xv_new_bool(p_read_only));
    xv_struct_set(args, "other_config", xv_copy(p_other_config));
    if (p_xenstore_data)
        xv_struct_set(args, "xenstore_data", xv_copy(p_xenstore_data));
    if (p_sm_config)
        xv_struct_set(args, "sm_config", xv_copy(p_sm_config));
    AUTO(xv) *rec = vdi_record_new(s->sr_ref, &vi, args);
    if (*p_uuid)
        xv_struct_set(rec, "uuid", xv_new_string(p_uuid));
    xv_struct_set(rec, "is_a_snapshot", xv_new_bool(p_is_a_snapshot));
    if (!is_null_ref(p_snapshot_of))
        xv_struct_set(rec, "snapshot_of", xv_new_string(p_snapshot_of));
    if (p_snapshot_time && *p_snapshot_time)
        xv_struct_set(rec, "snapshot_time", xv_new_datetime(p_snapshot_time));
    struct intro_p p = {.rec = rec, .c = CLS(VDI)};
    if ((e = store_write(x->st, intro_txn, &p)))
        return e;
    xerr *se = sr_sync(x, s, false);
    xerr_free(se);
    *ret = xv_new_string_take(p.ref);
    return NULL;
}

xerr *api_VDI_set_name_label(api_ctx *ctx, const char *p_self, const char *p_value)
{
    return set_one(ctx, CLS(VDI), p_self, "name_label", xv_new_string(p_value));
}

xerr *api_VDI_set_name_description(api_ctx *ctx, const char *p_self, const char *p_value)
{
    return set_one(ctx, CLS(VDI), p_self, "name_description", xv_new_string(p_value));
}

xerr *api_VDI_set_sharable(api_ctx *ctx, const char *p_self, bool p_value)
{
    return set_one(ctx, CLS(VDI), p_self, "sharable", xv_new_bool(p_value));
}

xerr *api_VDI_set_read_only(api_ctx *ctx, const char *p_self, bool p_value)
{
    AUTO(xv) *rec = NULL;
    xerr *e = get_record(ctx->x, CLS(VDI), p_self, &rec);
    if (e)
        return e;
    if (!p_value && !xrec_bool(rec, "managed"))
        return xerr_new("OPERATION_NOT_ALLOWED",
                        "the VDI is a hidden base copy of a snapshot tree");
    return set_one(ctx, CLS(VDI), p_self, "read_only", xv_new_bool(p_value));
}

/* ---- VDI attach for the VM lifecycle ------------------------------------------------------ */

xerr *xapid_storage_vdi_attach(xapid *x, const char *vdi, bool rw, char **ret_path,
                               const char **ret_format)
{
    AUTO(xv) *rec = NULL;
    AUTOSLOT *s = NULL;
    xerr *e = vdi_open(x, vdi, &rec, &s);
    if (e)
        return e;
    if (rw && xrec_bool(rec, "read_only"))
        return xerr_new("VDI_READONLY", vdi);
    struct sr_backend be = {0};
    int r = sr_vdi_attach(s->h, xrec_str(rec, "location"), rw, &be);
    if (r < 0)
        return sr_xerr(r, "attach", s->sr_ref, vdi);
    *ret_path = be.path;
    if (ret_format)
        *ret_format = be.format;
    return NULL;
}

xerr *xapid_storage_vdi_detach(xapid *x, const char *vdi)
{
    AUTO(xv) *rec = NULL;
    AUTOSLOT *s = NULL;
    xerr *e = vdi_open(x, vdi, &rec, &s);
    if (e)
        return e;
    const char *loc = xrec_str(rec, "location");
    int r = sr_vdi_detach(s->h, loc);
    if (r < 0 && r != -ENOENT)
        return sr_xerr(r, "detach", s->sr_ref, vdi);
    /* the collector skips attached chains: it may have work now (e.g. after an import) */
    if (!sr_vdi_attached(s->h, loc))
        gc_kick(x, s->sr_ref);
    return NULL;
}

xerr *xapid_storage_vdi_stage(xapid *x, const char *vdi, char **ret_path)
{
    AUTO(xv) *rec = NULL;
    AUTOSLOT *s = NULL;
    xerr *e = vdi_open(x, vdi, &rec, &s);
    if (e)
        return e;
    int r = sr_vdi_stage(s->h, xrec_str(rec, "location"), ret_path);
    return r < 0 ? sr_xerr(r, "import", s->sr_ref, vdi) : NULL;
}

xerr *xapid_storage_vdi_stage_commit(xapid *x, const char *vdi)
{
    AUTO(xv) *rec = NULL;
    AUTOSLOT *s = NULL;
    xerr *e = vdi_open(x, vdi, &rec, &s);
    if (e)
        return e;
    int r = sr_vdi_stage_commit(s->h, xrec_str(rec, "location"));
    if (r < 0)
        return sr_xerr(r, "import", s->sr_ref, vdi);
    /* the old data's base copy and the VDI's new parent: from the disk */
    return sr_sync(x, s, true);
}

void xapid_storage_vdi_stage_abort(xapid *x, const char *vdi)
{
    AUTO(xv) *rec = NULL;
    AUTOSLOT *s = NULL;
    xerr *e = vdi_open(x, vdi, &rec, &s);
    if (e) {
        xerr_free(e);
        return;
    }
    sr_vdi_stage_abort(s->h, xrec_str(rec, "location"));
}

/* ---- start-up and shutdown ---------------------------------------------------------------- */

struct init_p {
    xapid *x;
    int64_t nsr;
    bool default_ok;
};

static xerr *init_read_txn(store_txn *t, void *ud)
{
    struct init_p *p = ud;
    p->nsr = st_count(t, CLS(SR));
    AUTO(xv) *def = NULL;
    xerr *e = st_get_field(t, CLS(pool), p->x->pool_ref, xfield(CLS(pool), "default_SR"), &def);
    if (e)
        return e;
    p->default_ok = st_exists(t, CLS(SR), xv_str(def));
    return NULL;
}

struct default_p {
    const char *pool;
    const char *sr_ref;
};

static xerr *set_default_txn(store_txn *t, void *ud)
{
    struct default_p *p = ud;
    const char *fields[] = {"default_SR", "suspend_image_SR", "crash_dump_SR"};
    for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
        xerr *e = xset(t, CLS(pool), p->pool, fields[i], xv_new_string(p->sr_ref));
        if (e)
            return e;
    }
    return NULL;
}

xerr *xapid_storage_init(xapid *x)
{
    struct init_p p = {.x = x};
    xerr *e = store_read(x->st, init_read_txn, &p);
    if (e || p.nsr > 0)
        return e;
    struct sr_create_p c = {.x = x,
                            .host = x->host_ref,
                            .name_label = "Local storage",
                            .name_description = "",
                            .type = "file",
                            .content_type = "user"};
    char *ref = NULL;
    if ((e = sr_create_do(x, &c, &ref)))
        return e;
    AUTOFREE char *sr_ref = ref;
    struct default_p d = {.pool = x->pool_ref, .sr_ref = sr_ref};
    return store_write(x->st, set_default_txn, &d);
}

void xapid_storage_stop(xapid *x)
{
    gc_cancel_wait(x, NULL);
    for (;;) {
        pthread_mutex_lock(&slots_mu);
        char *ref = NULL;
        for (size_t i = 0; i < nslots && !ref; i++)
            if (slots[i]->x == x)
                ref = xstrdup(slots[i]->sr_ref);
        pthread_mutex_unlock(&slots_mu);
        if (!ref)
            break;
        slot_remove(x, ref);
        free(ref);
    }
    pthread_mutex_lock(&slots_mu);
    bool last = nslots == 0;
    if (last) {
        free(slots);
        slots = NULL;
    }
    pthread_mutex_unlock(&slots_mu);
    if (last)
        gc_stop();
}
