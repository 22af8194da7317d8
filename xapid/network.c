/* network, PIF, VIF and host.management_reconfigure handlers over network/ (bridges, taps).
 *
 * Pattern: read what is needed in a short read transaction, do the kernel work with no
 * transaction held (netlink and nft can take milliseconds), then record the outcome in a short
 * write transaction. A netlink context is opened per call: contexts are not thread-safe and a
 * socket is cheap next to the work. This file only touches the local host's kernel objects. */
#define _GNU_SOURCE
#include "xapid.h"

#include "log.h"
#include "mem.h"
#include "net.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Hooks for the VM lifecycle and start-up (declared here until xapid.h carries them). */
xerr *xapid_network_vif_attach(xapid *x, const char *vif, int64_t domid, int *ret_fd);
xerr *xapid_network_vif_detach(xapid *x, const char *vif, int64_t domid);
xerr *xapid_network_reconcile(xapid *x, bool manage_pifs);

#define CLS(id) (&api_classes[API_CLASS_##id])
/* DHCP discovers per attempt, one second apart: the call is bounded by a few seconds. */
#define DHCP_TRIES 4

/* ---- store helpers ------------------------------------------------------------------------ */

/* *ret: a new copy of the record. */
static xerr *get_record(xapid *x, const api_class *c, const char *ref, xv **ret)
{
    return store_get_record(x->st, c, ref, ret);
}

/* Records of class c where `col` = val (map ref -> record). */
static xerr *records_where(xapid *x, const api_class *c, const char *col, const char *val, xv **ret)
{
    AUTOFREE char *where = xasprintf("\"%s\" = ?", col);
    AUTO(xv) *arg = xv_new_string(val);
    const xv *args[] = {arg};
    return store_get_all_records(x->st, c, where, args, 1, ret);
}

/* Sets one field; takes val. */
static xerr *set_field(xapid *x, const api_class *c, const char *ref, int field, xv *val)
{
    xerr *e = store_set_field(x->st, c, ref, field, val);
    xv_free(val);
    return e;
}

static int64_t rec_int(const xv *rec, const char *key, int64_t dflt)
{
    const xv *v = xv_struct_get(rec, key);
    return v && v->kind == XV_INT ? v->u.i : dflt;
}

static bool rec_bool(const xv *rec, const char *key)
{
    const xv *v = xv_struct_get(rec, key);
    return v && v->kind == XV_BOOL && v->u.b;
}

static const char *rec_str(const xv *rec, const char *key)
{
    const char *s = xv_struct_get_str(rec, key);
    return s ? s : "";
}

static xerr *ctx_open(net_ctx **ret)
{
    int r = net_ctx_open(ret);
    return r < 0 ? net_xerr(r, "netlink", "open") : NULL;
}

/* ---- network ------------------------------------------------------------------------------ */

struct net_create {
    const xv *args;
    const char *bridge; /* chosen by the handler, or "" to pick xapiN in the transaction */
    net_ctx *nl;
    char *ret;
};

static xerr *network_create_txn(store_txn *t, void *ud)
{
    struct net_create *p = ud;
    AUTO(xv) *all = NULL;
    xerr *e = st_get_all_records(t, CLS(network), NULL, NULL, 0, &all);
    if (e)
        return e;
    size_t n = all->u.st.n;
    AUTOFREE const char **taken = xcalloc(n + 1, sizeof(*taken));
    for (size_t i = 0; i < n; i++)
        taken[i] = rec_str(all->u.st.vals[i], "bridge");
    char bridge[NET_NAME_MAX];
    if (*p->bridge) {
        for (size_t i = 0; i < n; i++)
            if (!strcmp(taken[i], p->bridge))
                return xerr_new("BRIDGE_NAME_EXISTS", p->bridge);
        snprintf(bridge, sizeof(bridge), "%s", p->bridge);
    } else if (net_bridge_pick_internal(p->nl, taken, n, bridge) < 0) {
        return xerr_internal("no free xapiN bridge name");
    }
    /* As the generated create: callers give constructor fields, the server the rest. */
    const api_class *c = CLS(network);
    AUTO(xv) *rec = xv_new_struct();
    for (size_t i = 0; i < c->nfields; i++) {
        const api_field *f = &c->fields[i];
        if (f->derived_cls >= 0)
            continue;
        const xv *v = xv_struct_get(p->args, f->name);
        xv_struct_set(rec, f->name,
                      (f->qual != API_Q_RO_RUNTIME && v) ? xv_copy(v) : api_field_default(f));
    }
    xv_struct_set(rec, "bridge", xv_new_string(bridge));
    return st_create(t, c, NULL, rec, &p->ret);
}

xerr *api_network_create(api_ctx *ctx, const xv *p_args, xv **ret)
{
    const char *bridge = xv_struct_get_str(p_args, "bridge");
    bridge = bridge ? bridge : "";
    if (*bridge && net_bridge_name_check_user(bridge) < 0)
        return xerr_new("INVALID_VALUE", "bridge", bridge);
    int64_t mtu = rec_int(p_args, "MTU", NET_DEFAULT_MTU);
    if (mtu < 68 || mtu > 65535) {
        char buf[24];
        snprintf(buf, sizeof(buf), "%lld", (long long)mtu);
        return xerr_new("INVALID_VALUE", "MTU", buf);
    }
    AUTO(net_ctx) *nl = NULL;
    xerr *e = ctx_open(&nl);
    if (e)
        return e;
    struct net_create p = {.args = p_args, .bridge = bridge, .nl = nl};
    e = store_write(ctx->x->st, network_create_txn, &p);
    if (e)
        return e;
    *ret = xv_new_string_take(p.ret);
    return NULL;
}

struct net_destroy {
    const char *self;
    char *bridge;
};

/* XAPI sends every offending ref as a param (NETWORK_CONTAINS_VIF [vif, vif, ...]). */
static xerr *refs_error(const char *code, const xv *refs)
{
    size_t n = xv_array_len(refs);
    AUTOFREE const char **v = xcalloc(n + 1, sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = xv_str(xv_array_get(refs, i));
    return xerr_newv(code, v, n);
}

static xerr *network_destroy_txn(store_txn *t, void *ud)
{
    struct net_destroy *p = ud;
    AUTO(xv) *rec = NULL;
    xerr *e = st_get_record(t, CLS(network), p->self, &rec);
    if (e)
        return e;
    AUTO(xv) *arg = xv_new_string(p->self);
    const xv *args[] = {arg};
    AUTO(xv) *vifs = NULL;
    if ((e = st_get_all(t, CLS(VIF), "\"network\" = ?", args, 1, &vifs)))
        return e;
    if (xv_array_len(vifs) > 0)
        return refs_error("NETWORK_CONTAINS_VIF", vifs);
    AUTO(xv) *pifs = NULL;
    if ((e = st_get_all(t, CLS(PIF), "\"network\" = ?", args, 1, &pifs)))
        return e;
    if (xv_array_len(pifs) > 0)
        return refs_error("NETWORK_CONTAINS_PIF", pifs);
    p->bridge = xstrdup(rec_str(rec, "bridge"));
    return st_destroy(t, CLS(network), p->self);
}

xerr *api_network_destroy(api_ctx *ctx, const char *p_self)
{
    struct net_destroy p = {.self = p_self};
    xerr *e = store_write(ctx->x->st, network_destroy_txn, &p);
    AUTOFREE char *bridge = p.bridge;
    if (e)
        return e;
    /* An internal network's bridge outlives its last VIF; remove it if it is empty. */
    AUTO(net_ctx) *nl = NULL;
    if (*bridge && net_ctx_open(&nl) == 0) {
        int r = net_bridge_destroy(nl, bridge, false);
        if (r < 0 && r != -ENODEV)
            log_warn("network.destroy: bridge %s left in place: %s", bridge, strerror(-r));
    }
    return NULL;
}

/* ---- VIF data plane ----------------------------------------------------------------------- */

/* Fills *lock from a VIF record and its network (strings borrowed from the records). */
static xerr *vif_lock(const xv *vif, const xv *net, struct net_lock *lock, const char ***v4,
                      const char ***v6)
{
    memset(lock, 0, sizeof(*lock));
    if (net_lock_mode_parse(rec_str(vif, "locking_mode"), &lock->mode) < 0)
        lock->mode = NET_LOCK_NETWORK_DEFAULT;
    lock->network_default = !strcmp(rec_str(net, "default_locking_mode"), "disabled")
                                ? NET_LOCK_DISABLED
                                : NET_LOCK_UNLOCKED;
    if (net_mac_parse(rec_str(vif, "MAC"), lock->mac) < 0)
        return xerr_new("MAC_INVALID", rec_str(vif, "MAC"));
    const xv *a4 = xv_struct_get(vif, "ipv4_allowed");
    const xv *a6 = xv_struct_get(vif, "ipv6_allowed");
    lock->n_ipv4 = a4 ? xv_array_len(a4) : 0;
    lock->n_ipv6 = a6 ? xv_array_len(a6) : 0;
    *v4 = xcalloc(lock->n_ipv4 + 1, sizeof(char *));
    *v6 = xcalloc(lock->n_ipv6 + 1, sizeof(char *));
    for (size_t i = 0; i < lock->n_ipv4; i++)
        (*v4)[i] = xv_str(xv_array_get(a4, i));
    for (size_t i = 0; i < lock->n_ipv6; i++)
        (*v6)[i] = xv_str(xv_array_get(a6, i));
    lock->ipv4 = *v4;
    lock->ipv6 = *v6;
    return NULL;
}

/* QoS of a VIF record in KiB/s; invalid settings are ignored with a warning, as XAPI does. */
static uint64_t vif_qos(const char *vif_ref, const xv *vif)
{
    const xv *params = xv_struct_get(vif, "qos_algorithm_params");
    const char *kbps = params ? xv_struct_get_str(params, "kbps") : NULL;
    uint64_t k = 0;
    if (net_qos_parse(rec_str(vif, "qos_algorithm_type"), kbps, &k) < 0) {
        log_warn("VIF %s: qos_algorithm_type %s kbps=%s ignored", vif_ref,
                 rec_str(vif, "qos_algorithm_type"), kbps ? kbps : "(none)");
        return 0;
    }
    return k;
}

xerr *xapid_network_vif_attach(xapid *x, const char *vif_ref, int64_t domid, int *ret_fd)
{
    AUTO(xv) *vif = NULL, *net = NULL;
    xerr *e = get_record(x, CLS(VIF), vif_ref, &vif);
    if (!e)
        e = get_record(x, CLS(network), rec_str(vif, "network"), &net);
    if (e)
        return e;
    char name[NET_NAME_MAX];
    long devid = strtol(rec_str(vif, "device"), NULL, 10);
    if (net_vif_name((long)domid, devid, name) < 0)
        return xerr_new("INVALID_VALUE", "device", rec_str(vif, "device"));
    int64_t mtu = rec_int(vif, "MTU", 0);
    if (mtu <= 0)
        mtu = rec_int(net, "MTU", NET_DEFAULT_MTU);
    AUTOFREE const char **v4 = NULL;
    AUTOFREE const char **v6 = NULL;
    struct net_vif_config cfg = {.name = name,
                                 .bridge = rec_str(net, "bridge"),
                                 .mtu = (unsigned)mtu,
                                 .qos_kbps = vif_qos(vif_ref, vif)};
    if ((e = vif_lock(vif, net, &cfg.lock, &v4, &v6)))
        return e;
    AUTO(net_ctx) *nl = NULL;
    if ((e = ctx_open(&nl)))
        return e;
    /* A network with no PIF here is internal: its bridge appears with its first VIF. */
    int r = net_bridge_ensure(nl, cfg.bridge, (unsigned)rec_int(net, "MTU", NET_DEFAULT_MTU));
    if (r == 0)
        r = net_vif_plug(nl, &cfg, ret_fd);
    return net_xerr(r, "VIF.plug", name);
}

xerr *xapid_network_vif_detach(xapid *x, const char *vif_ref, int64_t domid)
{
    AUTO(xv) *vif = NULL;
    xerr *e = get_record(x, CLS(VIF), vif_ref, &vif);
    if (e)
        return e;
    char name[NET_NAME_MAX];
    if (net_vif_name((long)domid, strtol(rec_str(vif, "device"), NULL, 10), name) < 0)
        return xerr_new("INVALID_VALUE", "device", rec_str(vif, "device"));
    AUTO(net_ctx) *nl = NULL;
    if ((e = ctx_open(&nl)))
        return e;
    return net_xerr(net_vif_unplug(nl, name), "VIF.unplug", name);
}

/* ---- VIF ---------------------------------------------------------------------------------- */

struct vif_create {
    const xv *args;
    char *ret;
};

static bool mac_in_use(const xv *vifs, const char *mac)
{
    for (size_t i = 0; i < vifs->u.st.n; i++)
        if (!strcasecmp(rec_str(vifs->u.st.vals[i], "MAC"), mac))
            return true;
    return false;
}

static xerr *vif_create_txn(store_txn *t, void *ud)
{
    struct vif_create *p = ud;
    const char *vm = xv_struct_get_str(p->args, "VM");
    const char *net = xv_struct_get_str(p->args, "network");
    const char *device = xv_struct_get_str(p->args, "device");
    if (!vm || !st_exists(t, CLS(VM), vm))
        return xerr_new("HANDLE_INVALID", "VM", vm ? vm : "");
    AUTO(xv) *netrec = NULL;
    xerr *e = st_get_record(t, CLS(network), net ? net : "", &netrec);
    if (e)
        return e;
    char *end = NULL;
    long dev = device ? strtol(device, &end, 10) : -1;
    if (!device || !*device || *end || dev < 0 || dev > 9999)
        return xerr_new("INVALID_VALUE", "device", device ? device : "");
    AUTO(xv) *all = NULL;
    if ((e = st_get_all_records(t, CLS(VIF), NULL, NULL, 0, &all)))
        return e;
    for (size_t i = 0; i < all->u.st.n; i++) {
        const xv *r = all->u.st.vals[i];
        if (!strcmp(rec_str(r, "VM"), vm) && !strcmp(rec_str(r, "device"), device))
            return xerr_new("DEVICE_ALREADY_EXISTS", device);
    }
    const char *mac = xv_struct_get_str(p->args, "MAC");
    char macbuf[18];
    bool generated = !mac || !*mac;
    if (generated) {
        uint8_t m[6];
        int tries = 0;
        do {
            net_mac_random(m);
            net_mac_format(m, macbuf);
        } while (mac_in_use(all, macbuf) && ++tries < 16);
        if (tries >= 16)
            return xerr_internal("could not generate a unique MAC");
    } else {
        uint8_t m[6];
        if (net_mac_parse(mac, m) < 0 || (m[0] & 1))
            return xerr_new("MAC_INVALID", mac);
        net_mac_format(m, macbuf);
    }
    const api_class *c = CLS(VIF);
    AUTO(xv) *rec = xv_new_struct();
    for (size_t i = 0; i < c->nfields; i++) {
        const api_field *f = &c->fields[i];
        if (f->derived_cls >= 0)
            continue;
        const xv *v = xv_struct_get(p->args, f->name);
        xv_struct_set(rec, f->name,
                      (f->qual != API_Q_RO_RUNTIME && v) ? xv_copy(v) : api_field_default(f));
    }
    xv_struct_set(rec, "MAC", xv_new_string(macbuf));
    xv_struct_set(rec, "MAC_autogenerated", xv_new_bool(generated));
    xv_struct_set(rec, "currently_attached", xv_new_bool(false)); /* plug attaches */
    if (rec_int(p->args, "MTU", 0) <= 0)
        xv_struct_set(rec, "MTU", xv_new_int(rec_int(netrec, "MTU", NET_DEFAULT_MTU)));
    return st_create(t, c, NULL, rec, &p->ret);
}

/* Addresses for ipv4_allowed/ipv6_allowed are checked by the same code that writes the rules. */
static xerr *check_allowed(int af, const char *addr)
{
    const char *one[] = {addr};
    struct net_lock l = {.mode = NET_LOCK_LOCKED};
    if (af == AF_INET)
        l.ipv4 = one, l.n_ipv4 = 1;
    else
        l.ipv6 = one, l.n_ipv6 = 1;
    AUTOFREE char *script = NULL;
    if (net_lock_script("vif0.0", &l, &script) < 0)
        return xerr_new("INVALID_VALUE", af == AF_INET ? "ipv4_allowed" : "ipv6_allowed", addr);
    return NULL;
}

xerr *api_VIF_create(api_ctx *ctx, const xv *p_args, xv **ret)
{
    const xv *lists[] = {xv_struct_get(p_args, "ipv4_allowed"),
                         xv_struct_get(p_args, "ipv6_allowed")};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; lists[k] && i < xv_array_len(lists[k]); i++) {
            const char *a = xv_str(xv_array_get(lists[k], i));
            xerr *e = check_allowed(k ? AF_INET6 : AF_INET, a ? a : "");
            if (e)
                return e;
        }
    struct vif_create p = {.args = p_args};
    xerr *e = store_write(ctx->x->st, vif_create_txn, &p);
    if (e)
        return e;
    *ret = xv_new_string_take(p.ret);
    return NULL;
}

static xerr *vif_destroy_txn(store_txn *t, void *ud)
{
    const char *self = ud;
    AUTO(xv) *attached = NULL;
    xerr *e = st_get_field(t, CLS(VIF), self, API_F_VIF_currently_attached, &attached);
    if (e)
        return e;
    if (attached->kind == XV_BOOL && attached->u.b)
        return xerr_new("OPERATION_NOT_ALLOWED", "VIF currently attached to a running VM");
    return st_destroy(t, CLS(VIF), self);
}

xerr *api_VIF_destroy(api_ctx *ctx, const char *p_self)
{
    return store_write(ctx->x->st, vif_destroy_txn, (void *)p_self);
}

/* The running VM of a VIF: its domid, or VM_BAD_POWER_STATE. */
static xerr *vif_domid(xapid *x, const xv *vif, int64_t *ret)
{
    AUTO(xv) *vm = NULL;
    const char *vmref = rec_str(vif, "VM");
    xerr *e = get_record(x, CLS(VM), vmref, &vm);
    if (e)
        return e;
    const char *ps = rec_str(vm, "power_state");
    int64_t domid = rec_int(vm, "domid", -1);
    if (strcmp(ps, "Running") != 0 || domid < 0)
        return xerr_new("VM_BAD_POWER_STATE", vmref, "running", ps);
    if (strcmp(rec_str(vm, "resident_on"), x->host_ref) != 0)
        return xerr_new("OPERATION_NOT_ALLOWED", "the VM runs on another host");
    *ret = domid;
    return NULL;
}

xerr *api_VIF_plug(api_ctx *ctx, const char *p_self)
{
    AUTO(xv) *vif = NULL;
    xerr *e = get_record(ctx->x, CLS(VIF), p_self, &vif);
    if (e)
        return e;
    if (rec_bool(vif, "currently_attached"))
        return xerr_new("DEVICE_ALREADY_ATTACHED", p_self);
    int64_t domid = -1;
    if ((e = vif_domid(ctx->x, vif, &domid)))
        return e;
    /* The tap is ready on the bridge; handing it to the running VMM (hotplug) belongs to the
     * VM lifecycle, which opens it by name. */
    if ((e = xapid_network_vif_attach(ctx->x, p_self, domid, NULL)))
        return e;
    return set_field(ctx->x, CLS(VIF), p_self, API_F_VIF_currently_attached, xv_new_bool(true));
}

static xerr *vif_unplug(api_ctx *ctx, const char *self, bool force)
{
    AUTO(xv) *vif = NULL;
    xerr *e = get_record(ctx->x, CLS(VIF), self, &vif);
    if (e)
        return e;
    if (!rec_bool(vif, "currently_attached"))
        return xerr_new("DEVICE_ALREADY_DETACHED", self);
    int64_t domid = -1;
    e = vif_domid(ctx->x, vif, &domid);
    if (!e)
        e = xapid_network_vif_detach(ctx->x, self, domid);
    if (e && !force)
        return e;
    if (e)
        log_warn("VIF.unplug_force %s: %s ignored", self, e->code);
    xerr_free(e);
    return set_field(ctx->x, CLS(VIF), self, API_F_VIF_currently_attached, xv_new_bool(false));
}

xerr *api_VIF_unplug(api_ctx *ctx, const char *p_self)
{
    return vif_unplug(ctx, p_self, false);
}

xerr *api_VIF_unplug_force(api_ctx *ctx, const char *p_self)
{
    return vif_unplug(ctx, p_self, true);
}

/* Re-applies the locking rules of an attached VIF after its settings changed. */
static xerr *vif_relock(xapid *x, const char *vif_ref)
{
    AUTO(xv) *vif = NULL, *net = NULL;
    xerr *e = get_record(x, CLS(VIF), vif_ref, &vif);
    if (e || !rec_bool(vif, "currently_attached"))
        return e;
    if ((e = get_record(x, CLS(network), rec_str(vif, "network"), &net)))
        return e;
    int64_t domid = -1;
    if ((e = vif_domid(x, vif, &domid))) {
        xerr_free(e);
        return NULL; /* not running here: applied at the next plug */
    }
    char name[NET_NAME_MAX];
    if (net_vif_name((long)domid, strtol(rec_str(vif, "device"), NULL, 10), name) < 0)
        return NULL;
    struct net_lock lock;
    AUTOFREE const char **v4 = NULL;
    AUTOFREE const char **v6 = NULL;
    if ((e = vif_lock(vif, net, &lock, &v4, &v6)))
        return e;
    return net_xerr(net_lock_apply(name, &lock), "VIF.locking_mode", name);
}

xerr *api_VIF_set_locking_mode(api_ctx *ctx, const char *p_self, const char *p_value)
{
    enum net_lock_mode m;
    if (net_lock_mode_parse(p_value, &m) < 0)
        return xerr_new("INVALID_VALUE", "locking_mode", p_value);
    xerr *e = set_field(ctx->x, CLS(VIF), p_self, API_F_VIF_locking_mode, xv_new_string(p_value));
    return e ? e : vif_relock(ctx->x, p_self);
}

enum set_op { SET_ALL, SET_ADD, SET_REMOVE };

struct allowed_ud {
    const char *self;
    int field;
    enum set_op op;
    const char *one;
    const xv *all;
};

static xerr *allowed_txn(store_txn *t, void *ud)
{
    struct allowed_ud *p = ud;
    AUTO(xv) *cur = NULL;
    xerr *e = st_get_field(t, CLS(VIF), p->self, p->field, &cur);
    if (e)
        return e;
    AUTO(xv) *next = xv_new_array();
    if (p->op == SET_ALL) {
        for (size_t i = 0; i < xv_array_len(p->all); i++)
            xv_array_append(next, xv_copy(xv_array_get(p->all, i)));
    } else {
        bool found = false;
        for (size_t i = 0; i < xv_array_len(cur); i++) {
            const char *a = xv_str(xv_array_get(cur, i));
            bool same = a && !strcmp(a, p->one);
            found |= same;
            if (!(same && p->op == SET_REMOVE))
                xv_array_append(next, xv_copy(xv_array_get(cur, i)));
        }
        if (p->op == SET_ADD && !found)
            xv_array_append(next, xv_new_string(p->one));
    }
    return st_set_field(t, CLS(VIF), p->self, p->field, next);
}

static xerr *allowed_change(api_ctx *ctx, const char *self, int af, enum set_op op, const char *one,
                            const xv *all)
{
    xerr *e = NULL;
    if (op == SET_ADD)
        e = check_allowed(af, one);
    for (size_t i = 0; !e && op == SET_ALL && i < xv_array_len(all); i++) {
        const char *a = xv_str(xv_array_get(all, i));
        e = check_allowed(af, a ? a : "");
    }
    if (e)
        return e;
    struct allowed_ud p = {.self = self,
                           .field = af == AF_INET ? API_F_VIF_ipv4_allowed : API_F_VIF_ipv6_allowed,
                           .op = op,
                           .one = one,
                           .all = all};
    if ((e = store_write(ctx->x->st, allowed_txn, &p)))
        return e;
    return vif_relock(ctx->x, self);
}

xerr *api_VIF_set_ipv4_allowed(api_ctx *ctx, const char *p_self, const xv *p_value)
{
    return allowed_change(ctx, p_self, AF_INET, SET_ALL, NULL, p_value);
}

xerr *api_VIF_add_ipv4_allowed(api_ctx *ctx, const char *p_self, const char *p_value)
{
    return allowed_change(ctx, p_self, AF_INET, SET_ADD, p_value, NULL);
}

xerr *api_VIF_remove_ipv4_allowed(api_ctx *ctx, const char *p_self, const char *p_value)
{
    return allowed_change(ctx, p_self, AF_INET, SET_REMOVE, p_value, NULL);
}

xerr *api_VIF_set_ipv6_allowed(api_ctx *ctx, const char *p_self, const xv *p_value)
{
    return allowed_change(ctx, p_self, AF_INET6, SET_ALL, NULL, p_value);
}

xerr *api_VIF_add_ipv6_allowed(api_ctx *ctx, const char *p_self, const char *p_value)
{
    return allowed_change(ctx, p_self, AF_INET6, SET_ADD, p_value, NULL);
}

xerr *api_VIF_remove_ipv6_allowed(api_ctx *ctx, const char *p_self, const char *p_value)
{
    return allowed_change(ctx, p_self, AF_INET6, SET_REMOVE, p_value, NULL);
}

xerr *api_network_set_default_locking_mode(api_ctx *ctx, const char *p_network, const char *p_value)
{
    if (strcmp(p_value, "unlocked") != 0 && strcmp(p_value, "disabled") != 0)
        return xerr_new("INVALID_VALUE", "default_locking_mode", p_value);
    xerr *e = set_field(ctx->x, CLS(network), p_network, API_F_network_default_locking_mode,
                        xv_new_string(p_value));
    if (e)
        return e;
    AUTO(xv) *vifs = NULL;
    if ((e = records_where(ctx->x, CLS(VIF), "network", p_network, &vifs)))
        return e;
    for (size_t i = 0; i < vifs->u.st.n && !e; i++)
        if (!strcmp(rec_str(vifs->u.st.vals[i], "locking_mode"), "network_default"))
            e = vif_relock(ctx->x, vifs->u.st.keys[i]);
    return e;
}

/* ---- PIF ---------------------------------------------------------------------------------- */

/* A PIF of this host with its network record. */
static xerr *pif_load(xapid *x, const char *ref, xv **ret_pif, xv **ret_net)
{
    xerr *e = get_record(x, CLS(PIF), ref, ret_pif);
    if (e)
        return e;
    if (strcmp(rec_str(*ret_pif, "host"), x->host_ref) != 0) {
        xv_free(*ret_pif);
        *ret_pif = NULL;
        return xerr_new("OPERATION_NOT_ALLOWED", "the PIF belongs to another host");
    }
    e = get_record(x, CLS(network), rec_str(*ret_pif, "network"), ret_net);
    if (e) {
        xv_free(*ret_pif);
        *ret_pif = NULL;
    }
    return e;
}

/* Bridge up with the PIF's device (or VLAN device) on it, and the PIF's static IP on it. */
static xerr *pif_apply(net_ctx *nl, const xv *pif, const xv *net)
{
    const char *bridge = rec_str(net, "bridge");
    const char *dev = rec_str(pif, "device");
    unsigned mtu = (unsigned)rec_int(net, "MTU", NET_DEFAULT_MTU);
    char vdev[NET_NAME_MAX];
    int64_t vlan = rec_int(pif, "VLAN", -1);
    int r = 0;
    if (vlan >= 0) {
        r = net_vlan_create(nl, dev, (unsigned)vlan, vdev);
        if (r < 0)
            return net_xerr(r, "VLAN", dev);
        dev = vdev;
    }
    r = net_pif_plug(nl, bridge, dev, mtu);
    if (r < 0)
        return net_xerr(r, "PIF.plug", dev);
    if (!strcmp(rec_str(pif, "ip_configuration_mode"), "Static") && *rec_str(pif, "IP") &&
        *rec_str(pif, "netmask")) {
        r = net_ip_set_static(nl, bridge, rec_str(pif, "IP"), rec_str(pif, "netmask"),
                              rec_str(pif, "gateway"));
        if (r < 0)
            return net_xerr(r, "IP", rec_str(pif, "IP"));
    } else if (!strcmp(rec_str(pif, "ip_configuration_mode"), "DHCP")) {
        struct net_dhcp_lease lease;
        r = net_ip_dhcp(nl, bridge, DHCP_TRIES, &lease);
        if (r < 0) /* the link is up; the address can follow with PIF.reconfigure_ip */
            log_warn("PIF.plug: %s: no DHCP lease: %s", bridge, strerror(-r));
    }
    return NULL;
}

xerr *api_PIF_plug(api_ctx *ctx, const char *p_self)
{
    AUTO(xv) *pif = NULL, *net = NULL;
    xerr *e = pif_load(ctx->x, p_self, &pif, &net);
    if (e)
        return e;
    AUTO(net_ctx) *nl = NULL;
    if ((e = ctx_open(&nl)) || (e = pif_apply(nl, pif, net)))
        return e;
    return set_field(ctx->x, CLS(PIF), p_self, API_F_PIF_currently_attached, xv_new_bool(true));
}

xerr *api_PIF_unplug(api_ctx *ctx, const char *p_self)
{
    AUTO(xv) *pif = NULL, *net = NULL;
    xerr *e = pif_load(ctx->x, p_self, &pif, &net);
    if (e)
        return e;
    if (rec_bool(pif, "management"))
        return xerr_new("PIF_IS_MANAGEMENT_INTERFACE", p_self);
    AUTO(xv) *vifs = NULL;
    if ((e = records_where(ctx->x, CLS(VIF), "network", rec_str(pif, "network"), &vifs)))
        return e;
    for (size_t i = 0; i < vifs->u.st.n; i++)
        if (rec_bool(vifs->u.st.vals[i], "currently_attached"))
            return xerr_new("VIF_IN_USE", rec_str(pif, "network"), vifs->u.st.keys[i]);
    AUTO(net_ctx) *nl = NULL;
    if ((e = ctx_open(&nl)))
        return e;
    const char *dev = rec_str(pif, "device");
    char vdev[NET_NAME_MAX];
    int64_t vlan = rec_int(pif, "VLAN", -1);
    if (vlan >= 0 && snprintf(vdev, sizeof(vdev), "%s.%lld", dev, (long long)vlan) < NET_NAME_MAX)
        dev = vdev;
    int r = net_pif_unplug(nl, rec_str(net, "bridge"), dev);
    if (r < 0 && r != -ENODEV)
        return net_xerr(r, "PIF.unplug", dev);
    if (vlan >= 0)
        net_link_delete(nl, dev);
    return set_field(ctx->x, CLS(PIF), p_self, API_F_PIF_currently_attached, xv_new_bool(false));
}

static xerr *pif_destroy_txn(store_txn *t, void *ud)
{
    return st_destroy(t, CLS(PIF), ud);
}

xerr *api_PIF_destroy(api_ctx *ctx, const char *p_self)
{
    AUTO(xv) *pif = NULL;
    xerr *e = get_record(ctx->x, CLS(PIF), p_self, &pif);
    if (e)
        return e;
    if (rec_bool(pif, "physical"))
        return xerr_new("PIF_IS_PHYSICAL", p_self);
    if (rec_bool(pif, "currently_attached") && (e = api_PIF_unplug(ctx, p_self)))
        return e;
    return store_write(ctx->x->st, pif_destroy_txn, (void *)p_self);
}

struct scan_ud {
    const char *host;
    struct net_link_info *links;
    size_t n;
    int created;
};

static xerr *pif_scan_txn(store_txn *t, void *ud)
{
    struct scan_ud *p = ud;
    AUTO(xv) *pifs = NULL, *nets = NULL;
    xerr *e = st_get_all_records(t, CLS(PIF), NULL, NULL, 0, &pifs);
    if (!e)
        e = st_get_all_records(t, CLS(network), NULL, NULL, 0, &nets);
    if (e)
        return e;
    for (size_t i = 0; i < p->n; i++) {
        const struct net_link_info *li = &p->links[i];
        char mac[18];
        net_mac_format(li->mac, mac);
        bool known = false;
        for (size_t k = 0; k < pifs->u.st.n && !known; k++) {
            const xv *r = pifs->u.st.vals[k];
            known =
                !strcmp(rec_str(r, "host"), p->host) &&
                (!strcasecmp(rec_str(r, "MAC"), mac) || !strcmp(rec_str(r, "device"), li->name));
        }
        if (known)
            continue;
        char bridge[NET_NAME_MAX];
        if (net_pif_bridge_name(li->name, bridge) < 0)
            continue;
        const char *netref = NULL;
        for (size_t k = 0; k < nets->u.st.n && !netref; k++)
            if (!strcmp(rec_str(nets->u.st.vals[k], "bridge"), bridge))
                netref = nets->u.st.keys[k];
        AUTOFREE char *newnet = NULL;
        if (!netref) {
            AUTO(xv) *net = xv_new_struct();
            AUTOFREE char *label = xasprintf("Pool-wide network associated with %s", li->name);
            xv_struct_set(net, "name_label", xv_new_string(label));
            xv_struct_set(net, "bridge", xv_new_string(bridge));
            xv_struct_set(net, "MTU", xv_new_int(NET_DEFAULT_MTU));
            if ((e = st_create(t, CLS(network), NULL, net, &newnet)))
                return e;
            netref = newnet;
        }
        AUTO(xv) *pif = xv_new_struct();
        xv_struct_set(pif, "device", xv_new_string(li->name));
        xv_struct_set(pif, "host", xv_new_string(p->host));
        xv_struct_set(pif, "network", xv_new_string(netref));
        xv_struct_set(pif, "MAC", xv_new_string(mac));
        xv_struct_set(pif, "MTU", xv_new_int(li->mtu));
        xv_struct_set(pif, "VLAN", xv_new_int(-1));
        xv_struct_set(pif, "physical", xv_new_bool(true));
        xv_struct_set(pif, "currently_attached", xv_new_bool(false));
        xv_struct_set(pif, "ip_configuration_mode", xv_new_string("None"));
        if ((e = st_create(t, CLS(PIF), NULL, pif, NULL)))
            return e;
        p->created++;
    }
    return NULL;
}

xerr *api_PIF_scan(api_ctx *ctx, const char *p_host)
{
    if (strcmp(p_host, ctx->x->host_ref) != 0)
        return xerr_new("OPERATION_NOT_ALLOWED", "PIF.scan runs on the host being scanned");
    AUTO(net_ctx) *nl = NULL;
    xerr *e = ctx_open(&nl);
    if (e)
        return e;
    struct scan_ud p = {.host = p_host};
    int r = net_pif_scan(nl, &p.links, &p.n);
    if (r < 0)
        return net_xerr(r, "PIF.scan", "");
    e = store_write(ctx->x->st, pif_scan_txn, &p);
    free(p.links);
    if (!e && p.created)
        log_info("PIF.scan: %d new PIF(s)", p.created);
    return e;
}

struct ipconf_ud {
    const char *self, *mode, *ip, *netmask, *gateway, *dns;
};

static xerr *ipconf_txn(store_txn *t, void *ud)
{
    struct ipconf_ud *p = ud;
    const api_class *c = CLS(PIF);
    const struct {
        int f;
        const char *v;
    } set[] = {{API_F_PIF_ip_configuration_mode, p->mode},
               {API_F_PIF_IP, p->ip},
               {API_F_PIF_netmask, p->netmask},
               {API_F_PIF_gateway, p->gateway},
               {API_F_PIF_DNS, p->dns}};
    for (size_t i = 0; i < ARRAY_SIZE(set); i++) {
        AUTO(xv) *v = xv_new_string(set[i].v);
        xerr *e = st_set_field(t, c, p->self, set[i].f, v);
        if (e)
            return e;
    }
    return NULL;
}

static bool ipv4_ok(const char *s)
{
    struct in_addr a;
    return s && inet_pton(AF_INET, s, &a) == 1;
}

xerr *api_PIF_reconfigure_ip(api_ctx *ctx, const char *p_self, const char *p_mode, const char *p_IP,
                             const char *p_netmask, const char *p_gateway, const char *p_DNS)
{
    AUTO(xv) *pif = NULL, *net = NULL;
    xerr *e = pif_load(ctx->x, p_self, &pif, &net);
    if (e)
        return e;
    struct ipconf_ud p = {p_self, p_mode, "", "", "", p_DNS};
    bool dhcp = false;
    struct net_dhcp_lease lease;
    if (!strcmp(p_mode, "Static")) {
        if (!ipv4_ok(p_IP))
            return xerr_new("INVALID_VALUE", "IP", p_IP);
        if (net_netmask_to_prefix(p_netmask) < 0)
            return xerr_new("INVALID_VALUE", "netmask", p_netmask);
        if (*p_gateway && !ipv4_ok(p_gateway))
            return xerr_new("INVALID_VALUE", "gateway", p_gateway);
        p.ip = p_IP, p.netmask = p_netmask, p.gateway = p_gateway;
    } else if (!strcmp(p_mode, "DHCP")) {
        dhcp = true;
    } else if (strcmp(p_mode, "None") != 0) {
        return xerr_new("INVALID_VALUE", "mode", p_mode);
    }
    if (rec_bool(pif, "currently_attached")) {
        AUTO(net_ctx) *nl = NULL;
        if ((e = ctx_open(&nl)))
            return e;
        const char *bridge = rec_str(net, "bridge");
        int r;
        if (dhcp) {
            r = net_ip_dhcp(nl, bridge, DHCP_TRIES, &lease);
            if (r == -ENOEXEC)
                return xerr_new("VALUE_NOT_SUPPORTED", "mode", p_mode,
                                "no DHCP client (busybox udhcpc) on this host");
            if (r == -ETIMEDOUT)
                return xerr_internal("PIF.reconfigure_ip: no DHCP lease on %s", bridge);
            p.ip = lease.ip, p.netmask = lease.netmask, p.gateway = lease.gateway;
            if (!*p_DNS)
                p.dns = lease.dns;
        } else {
            r = *p.ip ? net_ip_set_static(nl, bridge, p.ip, p.netmask, p.gateway)
                      : net_ip_flush(nl, bridge);
        }
        if (r < 0)
            return net_xerr(r, "IP", bridge);
    }
    return store_write(ctx->x->st, ipconf_txn, &p);
}

/* ---- host.management_reconfigure ---------------------------------------------------------- */

struct mgmt_ud {
    const char *host, *pif, *ip;
};

static xerr *mgmt_txn(store_txn *t, void *ud)
{
    struct mgmt_ud *p = ud;
    AUTO(xv) *arg = xv_new_string(p->host);
    const xv *args[] = {arg};
    AUTO(xv) *pifs = NULL;
    xerr *e = st_get_all(t, CLS(PIF), "\"host\" = ?", args, 1, &pifs);
    for (size_t i = 0; !e && i < xv_array_len(pifs); i++) {
        const char *ref = xv_str(xv_array_get(pifs, i));
        AUTO(xv) *v = xv_new_bool(!strcmp(ref, p->pif));
        e = st_set_field(t, CLS(PIF), ref, API_F_PIF_management, v);
    }
    if (!e && *p->ip) {
        AUTO(xv) *addr = xv_new_string(p->ip);
        e = st_set_field(t, CLS(host), p->host, API_F_host_address, addr);
    }
    return e;
}

xerr *api_host_management_reconfigure(api_ctx *ctx, const char *p_pif)
{
    AUTO(xv) *pif = NULL, *net = NULL;
    xerr *e = pif_load(ctx->x, p_pif, &pif, &net);
    if (e)
        return e;
    if (!strcmp(rec_str(pif, "ip_configuration_mode"), "None"))
        return xerr_new("PIF_HAS_NO_NETWORK_CONFIGURATION", p_pif);
    if (!rec_bool(pif, "currently_attached")) {
        AUTO(net_ctx) *nl = NULL;
        if ((e = ctx_open(&nl)) || (e = pif_apply(nl, pif, net)))
            return e;
        if ((e = set_field(ctx->x, CLS(PIF), p_pif, API_F_PIF_currently_attached,
                           xv_new_bool(true))))
            return e;
    }
    /* The listening address follows xapid's config; the host record names the new address. */
    struct mgmt_ud p = {ctx->x->host_ref, p_pif, rec_str(pif, "IP")};
    return store_write(ctx->x->st, mgmt_txn, &p);
}

/* ---- start-up ----------------------------------------------------------------------------- */

/* Taps named vif<domid>.<devid> whose domain no longer runs here are left-overs of a VM that
 * stopped while xapid was down: remove them with their QoS and locking. */
static xerr *remove_stale_taps(xapid *x, net_ctx *nl)
{
    AUTO(xv) *vms = NULL;
    xerr *e = store_get_all_records(x->st, CLS(VM), NULL, NULL, 0, &vms);
    if (e)
        return e;
    struct net_link_info *links = NULL;
    size_t n = 0;
    int r = net_link_list(nl, &links, &n);
    if (r < 0)
        return net_xerr(r, "start-up", "links");
    for (size_t i = 0; i < n; i++) {
        long domid, devid;
        char tail;
        if (strcmp(links[i].kind, "tun") != 0 ||
            sscanf(links[i].name, "vif%ld.%ld%c", &domid, &devid, &tail) != 2)
            continue;
        bool running = false;
        for (size_t k = 0; k < vms->u.st.n && !running; k++) {
            const xv *vm = vms->u.st.vals[k];
            running = !strcmp(rec_str(vm, "power_state"), "Running") &&
                      !strcmp(rec_str(vm, "resident_on"), x->host_ref) &&
                      rec_int(vm, "domid", -1) == domid;
        }
        if (!running) {
            log_info("start-up: removing stale tap %s", links[i].name);
            r = net_vif_unplug(nl, links[i].name);
            if (r < 0)
                log_warn("start-up: tap %s: %s", links[i].name, strerror(-r));
        }
    }
    free(links);
    return NULL;
}

xerr *xapid_network_reconcile(xapid *x, bool manage_pifs)
{
    AUTO(net_ctx) *nl = NULL;
    xerr *e = ctx_open(&nl);
    if (e)
        return e;
    if (manage_pifs) {
        AUTO(xv) *pifs = NULL;
        if ((e = records_where(x, CLS(PIF), "host", x->host_ref, &pifs)))
            return e;
        for (size_t i = 0; i < pifs->u.st.n; i++) {
            const xv *pif = pifs->u.st.vals[i];
            if (!rec_bool(pif, "currently_attached"))
                continue;
            AUTO(xv) *net = NULL;
            xerr *pe = get_record(x, CLS(network), rec_str(pif, "network"), &net);
            if (!pe)
                pe = pif_apply(nl, pif, net);
            if (pe)
                log_warn("start-up: PIF %s (%s) not plugged: %s", pifs->u.st.keys[i],
                         rec_str(pif, "device"), pe->code);
            xerr_free(pe);
        }
    }
    AUTO(xv) *vifs = NULL;
    if ((e = store_get_all_records(x->st, CLS(VIF), NULL, NULL, 0, &vifs)))
        return e;
    for (size_t i = 0; i < vifs->u.st.n; i++) {
        const char *ref = vifs->u.st.keys[i];
        if (!rec_bool(vifs->u.st.vals[i], "currently_attached"))
            continue;
        int64_t domid = -1;
        xerr *ve = vif_domid(x, vifs->u.st.vals[i], &domid);
        if (!ve) {
            /* Taps survive a daemon restart: plugging again reconciles them in place. */
            ve = xapid_network_vif_attach(x, ref, domid, NULL);
        } else {
            xerr_free(ve);
            ve = set_field(x, CLS(VIF), ref, API_F_VIF_currently_attached, xv_new_bool(false));
        }
        if (ve)
            log_warn("start-up: VIF %s: %s", ref, ve->code);
        xerr_free(ve);
    }
    return remove_stale_taps(x, nl);
}
