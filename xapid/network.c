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
#include "sbuf.h"
#include "util.h"
#include "xrec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

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

/* ---- metrics records ---------------------------------------------------------------------- */

static xerr *metrics_sync_txn(store_txn *t, void *ud);

/* A new VIF_metrics/PIF_metrics row (counters 0) in the caller's transaction. */
static xerr *metrics_new(store_txn *t, const api_class *mc, char **ret)
{
    AUTO(xv) *m = xv_new_struct();
    xv_struct_set(m, "last_updated", xv_new_datetime_epoch(now_epoch()));
    return st_create(t, mc, NULL, m, ret);
}

/* Destroys the metrics row `ref` names, if it exists. */
static xerr *metrics_drop(store_txn *t, const api_class *mc, const char *ref)
{
    if (!xref_set(ref) || !st_exists(t, mc, ref))
        return NULL;
    return st_destroy(t, mc, ref);
}

/* Sets the fields named in `fields` (a struct of wire name -> value) of one object in one
 * transaction. */
struct setfields {
    const api_class *c;
    const char *ref;
    const xv *fields;
};

static xerr *setfields_txn(store_txn *t, void *ud)
{
    struct setfields *p = ud;
    for (size_t i = 0; i < xv_struct_len(p->fields); i++) {
        int f = xfield(p->c, p->fields->u.st.keys[i]);
        if (f < 0)
            return xerr_internal("no field %s", p->fields->u.st.keys[i]);
        xerr *e = st_set_field(t, p->c, p->ref, f, p->fields->u.st.vals[i]);
        if (e)
            return e;
    }
    return NULL;
}

static xerr *set_fields(xapid *x, const api_class *c, const char *ref, const xv *fields)
{
    struct setfields p = {c, ref, fields};
    return xv_struct_len(fields) ? store_write(x->st, setfields_txn, &p) : NULL;
}

/* ---- DNS and DHCP ------------------------------------------------------------------------- */

/* Where the renewing DHCP clients keep their pid, script and lease files. */
static char *dhcp_dir(xapid *x)
{
    return x->cfg.state_dir ? xasprintf("%s/dhcp", x->cfg.state_dir) : xstrdup("/run/nuvem/dhcp");
}

/* udhcpc's "a b c" -> XAPI's PIF.DNS "a,b,c" (caller frees). */
static char *dns_csv(const char *spaced)
{
    char *s = xstrdup(spaced ? spaced : "");
    for (char *p = s; *p; p++)
        if (*p == ' ')
            *p = ',';
    size_t n = strlen(s);
    while (n && s[n - 1] == ',')
        s[--n] = '\0';
    return s;
}

/* The management PIF's DNS servers for the host resolver. Written only where
 * NUVEM_RESOLV_CONF names a file (a test namespace's own resolv.conf); otherwise PIF.DNS is
 * just recorded, so a development host's resolver is never rewritten. */
static void resolv_write(const char *dns)
{
    const char *path = getenv("NUVEM_RESOLV_CONF");
    if (!path || !*path || !dns)
        return;
    AUTOFREE char *copy = xstrdup(dns);
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, "# written by xapid from the management PIF's DNS\n");
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        struct in_addr a4;
        struct in6_addr a6;
        if (inet_pton(AF_INET, tok, &a4) == 1 || inet_pton(AF_INET6, tok, &a6) == 1)
            sbuf_printf(&b, "nameserver %s\n", tok);
    }
    if (write_file_atomic(path, b.data ? b.data : "", b.len, 0644) < 0)
        log_warn("DNS: cannot write %s: %s", path, strerror(errno));
    sbuf_release(&b);
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
    char *metrics = NULL;
    if ((e = metrics_new(t, CLS(VIF_metrics), &metrics)))
        return e;
    xv_struct_set(rec, "metrics", xv_new_string_take(metrics));
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
    AUTO(xv) *metrics = NULL;
    if (!st_get_field(t, CLS(VIF), self, API_F_VIF_metrics, &metrics) &&
        (e = metrics_drop(t, CLS(VIF_metrics), xv_str(metrics))))
        return e;
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
    /* NICs are given to nuvem-vmm when the VM starts (vm.c); it has no NIC hot-plug yet */
    return xerr_new("OPERATION_NOT_ALLOWED",
                    "nuvem-vmm cannot hot-plug NICs yet: add the VIF while the VM is halted");
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
    /* without NIC hot-unplug in nuvem-vmm only a forced unplug goes ahead: the tap goes and
     * the guest's NIC loses its link (the VMM carries on) */
    if (!e && !force)
        return xerr_new("DEVICE_DETACH_REJECTED", "VIF", self,
                        "nuvem-vmm cannot hot-unplug NICs yet: use unplug_force or shut down");
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

static int bond_ensure(xapid *x, net_ctx *nl, const xv *master_pif, const char *bond_ref);

/* Bridge up with the PIF's device (or VLAN or bond device) on it, and the PIF's IP
 * configuration on it (DHCP: a renewing client). */
static xerr *pif_apply(xapid *x, net_ctx *nl, const xv *pif, const xv *net)
{
    const char *bridge = rec_str(net, "bridge");
    const char *dev = rec_str(pif, "device");
    unsigned mtu = (unsigned)rec_int(net, "MTU", NET_DEFAULT_MTU);
    char vdev[NET_NAME_MAX];
    int64_t vlan = rec_int(pif, "VLAN", -1);
    int r = 0;
    if (vlan >= 0) {
        r = net_vlan_create(nl, dev, (unsigned)vlan, vdev);
        if (r == -EOPNOTSUPP)
            return xerr_new("NOT_IMPLEMENTED",
                            "VLAN: this kernel has no 802.1Q VLAN support (8021q)");
        if (r < 0)
            return net_xerr(r, "VLAN", dev);
        dev = vdev;
    }
    const xv *masters = xv_struct_get(pif, "bond_master_of");
    if (masters && xv_array_len(masters) > 0) {
        r = bond_ensure(x, nl, pif, xv_str(xv_array_get(masters, 0)));
        if (r == -EOPNOTSUPP)
            return xerr_new("NOT_IMPLEMENTED", "Bond: this kernel has no bonding support");
        if (r < 0)
            return net_xerr(r, "Bond", dev);
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
        AUTOFREE char *dir = dhcp_dir(x);
        if (net_dhcp_running(dir, bridge))
            return NULL; /* the client kept the lease while xapid was away */
        r = net_dhcp_start(nl, bridge, dir, DHCP_TRIES, &lease);
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
    if ((e = ctx_open(&nl)) || (e = pif_apply(ctx->x, nl, pif, net)))
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
    AUTOFREE char *dir = dhcp_dir(ctx->x);
    net_dhcp_stop(dir, rec_str(net, "bridge"));
    int r = net_pif_unplug(nl, rec_str(net, "bridge"), dev);
    if (r < 0 && r != -ENODEV)
        return net_xerr(r, "PIF.unplug", dev);
    const xv *masters = xv_struct_get(pif, "bond_master_of");
    if (vlan >= 0 || (masters && xv_array_len(masters) > 0))
        net_link_delete(nl, dev); /* a bond releases its members as it goes */
    return set_field(ctx->x, CLS(PIF), p_self, API_F_PIF_currently_attached, xv_new_bool(false));
}

static xerr *pif_destroy_txn(store_txn *t, void *ud)
{
    AUTO(xv) *metrics = NULL;
    xerr *e = st_get_field(t, CLS(PIF), ud, API_F_PIF_metrics, &metrics);
    if (e || (e = metrics_drop(t, CLS(PIF_metrics), xv_str(metrics))))
        return e;
    return st_destroy(t, CLS(PIF), ud);
}

xerr *api_VLAN_destroy(api_ctx *ctx, const char *p_self);

xerr *api_PIF_destroy(api_ctx *ctx, const char *p_self)
{
    AUTO(xv) *pif = NULL;
    xerr *e = get_record(ctx->x, CLS(PIF), p_self, &pif);
    if (e)
        return e;
    if (rec_bool(pif, "physical"))
        return xerr_new("PIF_IS_PHYSICAL", p_self);
    /* XAPI: destroying a VLAN master PIF is VLAN.destroy; a bond master goes with Bond.destroy */
    const char *vlan = rec_str(pif, "VLAN_master_of");
    AUTO(xv) *vrec = NULL;
    if (xref_set(vlan)) {
        xerr *ve = get_record(ctx->x, CLS(VLAN), vlan, &vrec);
        bool found = !ve;
        xerr_free(ve);
        if (found)
            return api_VLAN_destroy(ctx, vlan);
    }
    const xv *masters = xv_struct_get(pif, "bond_master_of");
    if (masters && xv_array_len(masters) > 0)
        return xerr_new("OPERATION_NOT_ALLOWED", "the PIF is a bond master: use Bond.destroy");
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
        char *metrics = NULL;
        if ((e = metrics_new(t, CLS(PIF_metrics), &metrics)))
            return e;
        xv_struct_set(pif, "metrics", xv_new_string_take(metrics));
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
    AUTOFREE char *lease_dns = NULL;
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
        AUTOFREE char *dir = dhcp_dir(ctx->x);
        int r;
        if (dhcp) {
            /* a client that keeps the lease renewed; the metrics pass records changes */
            r = net_dhcp_start(nl, bridge, dir, DHCP_TRIES, &lease);
            if (r == -ENOEXEC)
                return xerr_new("VALUE_NOT_SUPPORTED", "mode", p_mode,
                                "no DHCP client (busybox udhcpc) on this host");
            if (r == -ETIMEDOUT)
                return xerr_internal("PIF.reconfigure_ip: no DHCP lease on %s", bridge);
            p.ip = lease.ip, p.netmask = lease.netmask, p.gateway = lease.gateway;
            if (!*p_DNS)
                p.dns = lease_dns = dns_csv(lease.dns);
        } else {
            net_dhcp_stop(dir, bridge);
            r = *p.ip ? net_ip_set_static(nl, bridge, p.ip, p.netmask, p.gateway)
                      : net_ip_flush(nl, bridge);
        }
        if (r < 0)
            return net_xerr(r, "IP", bridge);
    }
    if ((e = store_write(ctx->x->st, ipconf_txn, &p)))
        return e;
    if (rec_bool(pif, "management"))
        resolv_write(p.dns);
    return NULL;
}

/* ---- VLAN --------------------------------------------------------------------------------- */

/* XAPI's assert_no_other_local_pifs: a network has at most one PIF per host. */
static xerr *no_other_local_pif(store_txn *t, const char *host, const char *network)
{
    AUTO(xv) *a = xv_new_string(network), *b = xv_new_string(host);
    const xv *args[] = {a, b};
    AUTO(xv) *pifs = NULL;
    xerr *e = st_get_all(t, CLS(PIF), "\"network\" = ? AND \"host\" = ?", args, 2, &pifs);
    if (e)
        return e;
    /* XAPI sends [host, PIF] although the catalogue names the first param "network" */
    if (xv_array_len(pifs) > 0)
        return xerr_new("NETWORK_ALREADY_CONNECTED", host, xv_str(xv_array_get(pifs, 0)));
    return NULL;
}

struct vlan_create {
    const char *tagged, *network;
    int64_t tag;
    char *vlan, *pif;
};

static xerr *vlan_create_txn(store_txn *t, void *ud)
{
    struct vlan_create *p = ud;
    AUTO(xv) *tagged = NULL, *net = NULL;
    xerr *e = st_get_record(t, CLS(PIF), p->tagged, &tagged);
    if (!e)
        e = st_get_record(t, CLS(network), p->network, &net);
    if (e)
        return e;
    const char *host = rec_str(tagged, "host");
    if ((e = no_other_local_pif(t, host, p->network)))
        return e;
    if (xref_set(rec_str(tagged, "bond_slave_of")))
        return xerr_new("CANNOT_ADD_VLAN_TO_BOND_SLAVE", p->tagged);
    if (rec_int(tagged, "VLAN", -1) >= 0)
        return xerr_new("PIF_IS_VLAN", p->tagged);
    if (p->tag < 0 || p->tag > 4094) {
        char buf[24];
        snprintf(buf, sizeof(buf), "%lld", (long long)p->tag);
        return xerr_new("VLAN_TAG_INVALID", buf);
    }
    AUTO(xv) *hostarg = xv_new_string(host);
    const xv *args[] = {hostarg};
    AUTO(xv) *pifs = NULL;
    if ((e = st_get_all_records(t, CLS(PIF), "\"host\" = ?", args, 1, &pifs)))
        return e;
    const char *device = rec_str(tagged, "device");
    for (size_t i = 0; i < pifs->u.st.n; i++)
        if (!strcmp(rec_str(pifs->u.st.vals[i], "device"), device) &&
            rec_int(pifs->u.st.vals[i], "VLAN", -1) == p->tag)
            return xerr_new("PIF_VLAN_EXISTS", device);
    /* the VLAN master PIF: same device and MAC as the tagged PIF, tagged, not physical; it
     * shares the tagged PIF's metrics (as XAPI's) */
    p->vlan = ref_new();
    AUTO(xv) *pif = xv_new_struct();
    xv_struct_set(pif, "device", xv_new_string(device));
    xv_struct_set(pif, "network", xv_new_string(p->network));
    xv_struct_set(pif, "host", xv_new_string(host));
    xv_struct_set(pif, "MAC", xv_new_string(rec_str(tagged, "MAC")));
    xv_struct_set(pif, "MTU", xv_new_int(rec_int(tagged, "MTU", NET_DEFAULT_MTU)));
    xv_struct_set(pif, "VLAN", xv_new_int(p->tag));
    xv_struct_set(pif, "metrics", xv_new_string(rec_str(tagged, "metrics")));
    xv_struct_set(pif, "physical", xv_new_bool(false));
    xv_struct_set(pif, "currently_attached", xv_new_bool(false));
    xv_struct_set(pif, "ip_configuration_mode", xv_new_string("None"));
    xv_struct_set(pif, "VLAN_master_of", xv_new_string(p->vlan));
    if ((e = st_create(t, CLS(PIF), NULL, pif, &p->pif)))
        return e;
    AUTO(xv) *vlan = xv_new_struct();
    xv_struct_set(vlan, "tagged_PIF", xv_new_string(p->tagged));
    xv_struct_set(vlan, "untagged_PIF", xv_new_string(p->pif));
    xv_struct_set(vlan, "tag", xv_new_int(p->tag));
    return st_create(t, CLS(VLAN), p->vlan, vlan, NULL);
}

struct vlan_drop {
    const char *vlan, *pif;
};

static xerr *vlan_drop_txn(store_txn *t, void *ud)
{
    struct vlan_drop *p = ud;
    xerr *e = NULL;
    if (xref_set(p->pif) && st_exists(t, CLS(PIF), p->pif))
        e = st_destroy(t, CLS(PIF), p->pif);
    if (!e && st_exists(t, CLS(VLAN), p->vlan))
        e = st_destroy(t, CLS(VLAN), p->vlan);
    return e;
}

xerr *api_VLAN_create(api_ctx *ctx, const char *p_tagged_PIF, int64_t p_tag, const char *p_network,
                      xv **ret)
{
    struct vlan_create p = {.tagged = p_tagged_PIF, .network = p_network, .tag = p_tag};
    xerr *e = store_write(ctx->x->st, vlan_create_txn, &p);
    AUTOFREE char *vlan = p.vlan, *pif = p.pif;
    if (e)
        return e;
    /* XAPI plugs the new PIF at once; if this host cannot carry it, nothing is left behind */
    AUTO(xv) *prec = NULL, *net = NULL;
    e = pif_load(ctx->x, pif, &prec, &net);
    AUTO(net_ctx) *nl = NULL;
    if (!e)
        e = ctx_open(&nl);
    if (!e)
        e = pif_apply(ctx->x, nl, prec, net);
    if (!e)
        e = set_field(ctx->x, CLS(PIF), pif, API_F_PIF_currently_attached, xv_new_bool(true));
    if (e) {
        struct vlan_drop d = {vlan, pif};
        xerr_free(store_write(ctx->x->st, vlan_drop_txn, &d));
        return e;
    }
    *ret = xv_new_string(vlan);
    return NULL;
}

xerr *api_VLAN_destroy(api_ctx *ctx, const char *p_self)
{
    AUTO(xv) *vlan = NULL, *pif = NULL;
    xerr *e = get_record(ctx->x, CLS(VLAN), p_self, &vlan);
    if (e)
        return e;
    const char *untagged = rec_str(vlan, "untagged_PIF");
    if (xref_set(untagged) && !get_record(ctx->x, CLS(PIF), untagged, &pif)) {
        if (rec_bool(pif, "management"))
            return xerr_new("PIF_IS_MANAGEMENT_INTERFACE", untagged);
        if (rec_bool(pif, "currently_attached") && (e = api_PIF_unplug(ctx, untagged)))
            return e;
    }
    struct vlan_drop d = {p_self, pif ? untagged : NULL};
    return store_write(ctx->x->st, vlan_drop_txn, &d);
}

/* ---- Bond --------------------------------------------------------------------------------- */

/* XAPI's Bond properties: the known keys with checked values; others are dropped. */
static xerr *bond_property_check(const char *k, const char *v)
{
    char *end = NULL;
    if (!strcmp(k, "hashing_algorithm")) {
        if (strcmp(v, "src_mac") != 0 && strcmp(v, "tcpudp_ports") != 0)
            return xerr_new("INVALID_VALUE", k, v);
    } else if (!strcmp(k, "lacp-time")) {
        if (strcmp(v, "fast") != 0 && strcmp(v, "slow") != 0)
            return xerr_new("INVALID_VALUE", k, v);
    } else if (!strcmp(k, "lacp-fallback-ab")) {
        if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0)
            return xerr_new("INVALID_VALUE", k, v);
    } else if (!strcmp(k, "lacp-aggregation-key") || !strcmp(k, "updelay") ||
               !strcmp(k, "downdelay")) {
        long long n = *v ? strtoll(v, &end, 10) : -1;
        if (!*v || *end || n < 0 || n > 65535)
            return xerr_new("INVALID_VALUE", k, v);
    } else {
        return xerr_new("INVALID_VALUE", "properties", k); /* caller drops unknown keys */
    }
    return NULL;
}

static bool bond_property_known(const char *k)
{
    const char *known[] = {"hashing_algorithm",    "lacp-time", "lacp-fallback-ab",
                           "lacp-aggregation-key", "updelay",   "downdelay"};
    for (size_t i = 0; i < ARRAY_SIZE(known); i++)
        if (!strcmp(k, known[i]))
            return true;
    return false;
}

struct bond_create {
    const char *network, *mac, *mode;
    const xv *members, *props;
    xapid *x;
    char *bond, *master;
    xv *slaves; /* map ref -> record before the bond (for undo and the data plane) */
    char *primary;
};

static xerr *bond_create_txn(store_txn *t, void *ud)
{
    struct bond_create *p = ud;
    AUTO(xv) *net = NULL;
    xerr *e = st_get_record(t, CLS(network), p->network, &net);
    if (e)
        return e;
    p->slaves = xv_new_struct();
    for (size_t i = 0; i < xv_array_len(p->members); i++) {
        const char *m = xv_str(xv_array_get(p->members, i));
        if (xv_struct_get(p->slaves, m))
            continue; /* the same PIF twice counts once */
        xv *rec = NULL;
        if ((e = st_get_record(t, CLS(PIF), m, &rec)))
            return e;
        xv_struct_set(p->slaves, m, rec);
    }
    size_t n = xv_struct_len(p->slaves);
    if (n == 0)
        return xerr_new("PIF_BOND_NEEDS_MORE_MEMBERS");
    const char *host = rec_str(p->slaves->u.st.vals[0], "host");
    if ((e = no_other_local_pif(t, host, p->network)))
        return e;
    uint8_t mac[6];
    if (*p->mac && net_mac_parse(p->mac, mac) < 0)
        return xerr_new("MAC_INVALID", p->mac);
    for (size_t i = 0; i < n; i++) {
        const char *ref = p->slaves->u.st.keys[i];
        const xv *s = p->slaves->u.st.vals[i];
        const char *b = rec_str(s, "bond_slave_of");
        if (xref_set(b) && st_exists(t, CLS(Bond), b))
            return xerr_new("PIF_ALREADY_BONDED", ref);
        if (rec_int(s, "VLAN", -1) != -1)
            return xerr_new("PIF_VLAN_EXISTS", rec_str(s, "device"));
    }
    for (size_t i = 1; i < n; i++)
        if (strcmp(rec_str(p->slaves->u.st.vals[i], "host"), host) != 0)
            return xerr_new("PIF_CANNOT_BOND_CROSS_HOST");
    if (n < 2)
        return xerr_new("PIF_BOND_NEEDS_MORE_MEMBERS");
    if (strcmp(host, p->x->host_ref) != 0)
        return xerr_new("OPERATION_NOT_ALLOWED", "Bond.create runs on the members' host");
    AUTO(xv) *props = xv_new_struct();
    for (size_t i = 0; p->props && i < xv_struct_len(p->props); i++) {
        const char *k = p->props->u.st.keys[i], *v = xv_str(p->props->u.st.vals[i]);
        if (!bond_property_known(k)) {
            log_debug("Bond.create: property %s ignored", k);
            continue;
        }
        if ((e = bond_property_check(k, v ? v : "")))
            return e;
        xv_struct_set(props, k, xv_new_string(v));
    }
    if (!xv_struct_get(props, "hashing_algorithm") && strcmp(p->mode, "active-backup") != 0)
        xv_struct_set(props, "hashing_algorithm",
                      xv_new_string(!strcmp(p->mode, "lacp") ? "tcpudp_ports" : "src_mac"));
    /* primary: the management PIF, else the first with an IP configuration, else the first */
    size_t prim = 0;
    bool found = false;
    for (size_t i = 0; i < n && !found; i++)
        if (rec_bool(p->slaves->u.st.vals[i], "management"))
            prim = i, found = true;
    for (size_t i = 0; i < n && !found; i++)
        if (strcmp(rec_str(p->slaves->u.st.vals[i], "ip_configuration_mode"), "None") != 0)
            prim = i, found = true;
    p->primary = xstrdup(p->slaves->u.st.keys[prim]);
    const xv *ps = p->slaves->u.st.vals[prim];
    /* device bondN: the first N no PIF of the host uses */
    AUTO(xv) *hostarg = xv_new_string(host);
    const xv *args[] = {hostarg};
    AUTO(xv) *pifs = NULL;
    if ((e = st_get_all_records(t, CLS(PIF), "\"host\" = ?", args, 1, &pifs)))
        return e;
    char device[NET_NAME_MAX];
    int k = 0;
    for (; k < 1000; k++) {
        snprintf(device, sizeof(device), "bond%d", k);
        bool used = false;
        for (size_t i = 0; i < pifs->u.st.n && !used; i++)
            used = !strcmp(rec_str(pifs->u.st.vals[i], "device"), device);
        if (!used)
            break;
    }
    char *metrics = NULL;
    if ((e = metrics_new(t, CLS(PIF_metrics), &metrics)))
        return e;
    p->bond = ref_new();
    AUTO(xv) *m = xv_new_struct();
    xv_struct_set(m, "device", xv_new_string(device));
    xv_struct_set(m, "network", xv_new_string(p->network));
    xv_struct_set(m, "host", xv_new_string(host));
    xv_struct_set(m, "MAC", xv_new_string(*p->mac ? p->mac : rec_str(ps, "MAC")));
    xv_struct_set(m, "MTU", xv_new_int(rec_int(net, "MTU", NET_DEFAULT_MTU)));
    xv_struct_set(m, "VLAN", xv_new_int(-1));
    xv_struct_set(m, "metrics", xv_new_string_take(metrics));
    xv_struct_set(m, "physical", xv_new_bool(false));
    xv_struct_set(m, "currently_attached", xv_new_bool(false));
    /* the primary's IP configuration and management role move to the bond */
    const char *mv[] = {"ip_configuration_mode", "IP", "netmask", "gateway", "DNS"};
    for (size_t i = 0; i < ARRAY_SIZE(mv); i++)
        xv_struct_set(m, mv[i], xv_new_string(rec_str(ps, mv[i])));
    xv_struct_set(m, "management", xv_new_bool(rec_bool(ps, "management")));
    if ((e = st_create(t, CLS(PIF), NULL, m, &p->master)))
        return e;
    AUTO(xv) *b = xv_new_struct();
    xv_struct_set(b, "master", xv_new_string(p->master));
    xv_struct_set(b, "primary_slave", xv_new_string(p->primary));
    xv_struct_set(b, "mode", xv_new_string(p->mode));
    xv_struct_set(b, "properties", TAKE_PTR(props));
    xv_struct_set(b, "links_up", xv_new_int(0));
    xv_struct_set(b, "auto_update_mac", xv_new_bool(!*p->mac));
    if ((e = st_create(t, CLS(Bond), p->bond, b, NULL)))
        return e;
    for (size_t i = 0; i < n; i++) {
        const char *ref = p->slaves->u.st.keys[i];
        AUTO(xv) *bv = xv_new_string(p->bond), *f = xv_new_bool(false), *none = NULL;
        if ((e = st_set_field(t, CLS(PIF), ref, API_F_PIF_bond_slave_of, bv)) ||
            (e = st_set_field(t, CLS(PIF), ref, API_F_PIF_management, f)))
            return e;
        none = xv_new_string("None");
        if ((e = st_set_field(t, CLS(PIF), ref, API_F_PIF_ip_configuration_mode, none)))
            return e;
    }
    return NULL;
}

/* Undoes bond_create_txn: the slaves get their records' moved fields back. */
static xerr *bond_undo_txn(store_txn *t, void *ud)
{
    struct bond_create *p = ud;
    xerr *e = NULL;
    for (size_t i = 0; !e && p->slaves && i < xv_struct_len(p->slaves); i++) {
        const char *ref = p->slaves->u.st.keys[i];
        const xv *s = p->slaves->u.st.vals[i];
        const char *f[] = {"bond_slave_of", "management", "ip_configuration_mode",
                           "currently_attached"};
        for (size_t k = 0; !e && k < ARRAY_SIZE(f) && st_exists(t, CLS(PIF), ref); k++) {
            const xv *v = xv_struct_get(s, f[k]);
            if (v)
                e = st_set_field(t, CLS(PIF), ref, xfield(CLS(PIF), f[k]), v);
        }
    }
    AUTO(xv) *master = NULL;
    if (!e && p->master && !st_get_record(t, CLS(PIF), p->master, &master)) {
        if (!(e = metrics_drop(t, CLS(PIF_metrics), rec_str(master, "metrics"))))
            e = st_destroy(t, CLS(PIF), p->master);
    }
    if (!e && p->bond && st_exists(t, CLS(Bond), p->bond))
        e = st_destroy(t, CLS(Bond), p->bond);
    return e;
}

/* The bond device of a bond-master PIF with its members (their devices), if `pif` is one.
 * *ret_devs: caller frees the vector (strings borrowed from *ret_slaves). */
static xerr *bond_members(xapid *x, const char *bond, xv **ret_slaves, const char ***ret_devs,
                          const char **ret_mode, xv **ret_bond)
{
    xerr *e = get_record(x, CLS(Bond), bond, ret_bond);
    if (e)
        return e;
    if ((e = records_where(x, CLS(PIF), "bond_slave_of", bond, ret_slaves)))
        return e;
    size_t n = xv_struct_len(*ret_slaves);
    *ret_devs = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        (*ret_devs)[i] = rec_str((*ret_slaves)->u.st.vals[i], "device");
    *ret_mode = rec_str(*ret_bond, "mode");
    return NULL;
}

/* Data plane of a bond master: bond device over the members' devices (released from their own
 * bridges first). Idempotent when the bond exists. */
static int bond_ensure(xapid *x, net_ctx *nl, const xv *master_pif, const char *bond_ref)
{
    AUTO(xv) *slaves = NULL, *bond = NULL;
    AUTOFREE const char **devs = NULL;
    const char *mode = "";
    xerr *e = bond_members(x, bond_ref, &slaves, &devs, &mode, &bond);
    if (e) {
        xerr_free(e);
        return -ENOENT;
    }
    const char *dev = rec_str(master_pif, "device");
    struct net_link_info li;
    if (net_link_get(nl, dev, &li) == 0)
        return strcmp(li.kind, "bond") ? -EEXIST : 0;
    for (size_t i = 0; i < xv_struct_len(slaves); i++) {
        AUTO(xv) *snet = NULL;
        if (!get_record(x, CLS(network), rec_str(slaves->u.st.vals[i], "network"), &snet)) {
            int r = net_pif_unplug(nl, rec_str(snet, "bridge"), devs[i]);
            if (r < 0 && r != -ENODEV && r != -ENOENT)
                log_debug("bond: %s off %s: %s", devs[i], rec_str(snet, "bridge"), strerror(-r));
        }
    }
    return net_bond_create(nl, dev, devs, xv_struct_len(slaves), mode);
}

xerr *api_Bond_create(api_ctx *ctx, const char *p_network, const xv *p_members, const char *p_MAC,
                      const char *p_mode, const xv *p_properties, xv **ret)
{
    struct bond_create p = {.network = p_network,
                            .mac = p_MAC ? p_MAC : "",
                            .mode = p_mode && *p_mode ? p_mode : "balance-slb",
                            .members = p_members,
                            .props = p_properties,
                            .x = ctx->x};
    xerr *e = store_write(ctx->x->st, bond_create_txn, &p);
    AUTOFREE char *bond = p.bond, *master = p.master;
    free(p.primary); /* only the transaction needs it */
    AUTO(xv) *slaves = p.slaves;
    if (e) {
        /* nothing was written: the transaction rolled back */
        return e;
    }
    AUTO(xv) *mpif = NULL, *net = NULL;
    AUTO(net_ctx) *nl = NULL;
    e = pif_load(ctx->x, master, &mpif, &net);
    if (!e)
        e = ctx_open(&nl);
    if (!e)
        e = pif_apply(ctx->x, nl, mpif, net);
    if (!e)
        e = set_field(ctx->x, CLS(PIF), master, API_F_PIF_currently_attached, xv_new_bool(true));
    for (size_t i = 0; !e && i < xv_struct_len(slaves); i++)
        xerr_free(set_field(ctx->x, CLS(PIF), slaves->u.st.keys[i], API_F_PIF_currently_attached,
                            xv_new_bool(false)));
    if (e) {
        /* the host cannot carry the bond: members back as they were, records gone */
        if (nl) {
            if (mpif)
                net_link_delete(nl, rec_str(mpif, "device"));
            for (size_t i = 0; i < xv_struct_len(slaves); i++) {
                const xv *s = slaves->u.st.vals[i];
                AUTO(xv) *snet = NULL;
                if (rec_bool(s, "currently_attached") &&
                    !get_record(ctx->x, CLS(network), rec_str(s, "network"), &snet))
                    xerr_free(pif_apply(ctx->x, nl, s, snet));
            }
        }
        xerr_free(store_write(ctx->x->st, bond_undo_txn, &p));
        return e;
    }
    *ret = xv_new_string(bond);
    return NULL;
}

struct bond_destroy {
    const char *bond, *master, *primary;
    const xv *mrec;
    const xv *slaves;
};

static xerr *bond_destroy_txn(store_txn *t, void *ud)
{
    struct bond_destroy *p = ud;
    xerr *e = NULL;
    /* the master's IP configuration and management role go back to the primary slave */
    if (xref_set(p->primary) && st_exists(t, CLS(PIF), p->primary) && p->mrec) {
        const char *mv[] = {
            "ip_configuration_mode", "IP", "netmask", "gateway", "DNS", "management"};
        for (size_t i = 0; !e && i < ARRAY_SIZE(mv); i++) {
            const xv *v = xv_struct_get(p->mrec, mv[i]);
            if (v)
                e = st_set_field(t, CLS(PIF), p->primary, xfield(CLS(PIF), mv[i]), v);
        }
    }
    /* VLANs on the bond move to the primary slave (XAPI's move_vlan) */
    if (!e && p->master && xref_set(p->primary)) {
        AUTO(xv) *arg = xv_new_string(p->master);
        const xv *args[] = {arg};
        AUTO(xv) *vlans = NULL;
        e = st_get_all(t, CLS(VLAN), "\"tagged_PIF\" = ?", args, 1, &vlans);
        for (size_t i = 0; !e && i < xv_array_len(vlans); i++) {
            AUTO(xv) *v = xv_new_string(p->primary);
            e = st_set_field(t, CLS(VLAN), xv_str(xv_array_get(vlans, i)), API_F_VLAN_tagged_PIF,
                             v);
        }
    }
    for (size_t i = 0; !e && p->slaves && i < xv_struct_len(p->slaves); i++) {
        AUTO(xv) *null = xv_new_string(NULL_REF);
        e = st_set_field(t, CLS(PIF), p->slaves->u.st.keys[i], API_F_PIF_bond_slave_of, null);
    }
    if (!e && p->mrec)
        e = metrics_drop(t, CLS(PIF_metrics), rec_str(p->mrec, "metrics"));
    if (!e && p->master && st_exists(t, CLS(PIF), p->master))
        e = st_destroy(t, CLS(PIF), p->master);
    if (!e)
        e = st_destroy(t, CLS(Bond), p->bond);
    return e;
}

xerr *api_Bond_destroy(api_ctx *ctx, const char *p_self)
{
    AUTO(xv) *bond = NULL, *mpif = NULL, *net = NULL, *slaves = NULL;
    xerr *e = get_record(ctx->x, CLS(Bond), p_self, &bond);
    if (e)
        return e;
    const char *master = rec_str(bond, "master");
    if (xref_set(master) && !get_record(ctx->x, CLS(PIF), master, &mpif)) {
        AUTO(xv) *vifs = NULL;
        if ((e = records_where(ctx->x, CLS(VIF), "network", rec_str(mpif, "network"), &vifs)))
            return e;
        for (size_t i = 0; i < vifs->u.st.n; i++)
            if (rec_bool(vifs->u.st.vals[i], "currently_attached"))
                return xerr_new("VIF_IN_USE", rec_str(mpif, "network"), vifs->u.st.keys[i]);
        get_record(ctx->x, CLS(network), rec_str(mpif, "network"), &net);
    }
    if ((e = records_where(ctx->x, CLS(PIF), "bond_slave_of", p_self, &slaves)))
        return e;
    if (mpif && net && rec_bool(mpif, "currently_attached")) {
        AUTO(net_ctx) *nl = NULL;
        if ((e = ctx_open(&nl)))
            return e;
        const char *dev = rec_str(mpif, "device");
        AUTOFREE char *dir = dhcp_dir(ctx->x);
        net_dhcp_stop(dir, rec_str(net, "bridge"));
        int r = net_pif_unplug(nl, rec_str(net, "bridge"), dev);
        if (r < 0 && r != -ENODEV && r != -ENOENT)
            return net_xerr(r, "Bond.destroy", dev);
        r = net_link_delete(nl, dev);
        if (r < 0 && r != -ENODEV)
            return net_xerr(r, "Bond.destroy", dev);
    }
    const char *primary = rec_str(bond, "primary_slave");
    struct bond_destroy p = {p_self, mpif ? master : NULL, primary, mpif, slaves};
    if ((e = store_write(ctx->x->st, bond_destroy_txn, &p)))
        return e;
    /* the primary slave carries the host's traffic again */
    AUTO(xv) *prec = NULL, *pnet = NULL;
    if (xref_set(primary) && !pif_load(ctx->x, primary, &prec, &pnet) &&
        (rec_bool(prec, "management") ||
         strcmp(rec_str(prec, "ip_configuration_mode"), "None") != 0)) {
        AUTO(net_ctx) *nl = NULL;
        if (!(e = ctx_open(&nl)) && !(e = pif_apply(ctx->x, nl, prec, pnet)))
            e = set_field(ctx->x, CLS(PIF), primary, API_F_PIF_currently_attached,
                          xv_new_bool(true));
        if (e)
            log_warn("Bond.destroy: primary slave %s not re-plugged: %s", primary, e->code);
        xerr_free(e);
    }
    return NULL;
}

xerr *api_Bond_set_mode(api_ctx *ctx, const char *p_self, const char *p_value)
{
    AUTO(xv) *bond = NULL;
    xerr *e = get_record(ctx->x, CLS(Bond), p_self, &bond);
    if (e)
        return e;
    if (!strcmp(rec_str(bond, "mode"), p_value))
        return NULL;
    /* the kernel takes a mode only on an empty bond: recorded here, applied at the next plug */
    return set_field(ctx->x, CLS(Bond), p_self, API_F_Bond_mode, xv_new_string(p_value));
}

xerr *api_Bond_set_property(api_ctx *ctx, const char *p_self, const char *p_name,
                            const char *p_value)
{
    if (!bond_property_known(p_name))
        return xerr_new("INVALID_VALUE", "name", p_name);
    xerr *e = bond_property_check(p_name, p_value);
    if (e)
        return e;
    AUTO(xv) *bond = NULL;
    if ((e = get_record(ctx->x, CLS(Bond), p_self, &bond)))
        return e;
    const xv *cur = xv_struct_get(bond, "properties");
    xv *props = cur ? xv_copy(cur) : xv_new_struct();
    xv_struct_set(props, p_name, xv_new_string(p_value));
    return set_field(ctx->x, CLS(Bond), p_self, API_F_Bond_properties, props);
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
        if ((e = ctx_open(&nl)) || (e = pif_apply(ctx->x, nl, pif, net)))
            return e;
        if ((e = set_field(ctx->x, CLS(PIF), p_pif, API_F_PIF_currently_attached,
                           xv_new_bool(true))))
            return e;
    }
    /* The listening address follows xapid's config; the host record names the new address. */
    struct mgmt_ud p = {ctx->x->host_ref, p_pif, rec_str(pif, "IP")};
    if ((e = store_write(ctx->x->st, mgmt_txn, &p)))
        return e;
    resolv_write(rec_str(pif, "DNS"));
    return NULL;
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
                pe = pif_apply(x, nl, pif, net);
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
    e = remove_stale_taps(x, nl);
    /* metrics rows for PIFs and VIFs made without them before any client is served (one
     * commit, whatever the host's devices say); the counters follow in the background */
    xerr *te = store_write(x->st, metrics_sync_txn, NULL);
    if (te)
        log_warn("start-up: network metrics: %s", te->code);
    xerr_free(te);
    xapid_network_start(x);
    return e;
}

/* ---- metrics and DHCP leases: a background pass every few seconds ------------------------- */

/* Counters seen at the previous pass, per interface, for rates. */
struct nm_sample {
    char name[NET_NAME_MAX];
    int ifindex;
    uint64_t rx, tx;
    double t;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started, stop;
    struct nm_sample *s;
    size_t n;
} NM = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* KiB/s received and sent by `name` since the last pass (0 at the first, or after the device
 * was re-created). Called with NM.lock held. */
static void nm_rate(const char *name, int ifindex, const struct net_link_stats *st, double now,
                    double *ret_rx, double *ret_tx)
{
    *ret_rx = *ret_tx = 0;
    struct nm_sample *s = NULL;
    for (size_t i = 0; i < NM.n && !s; i++)
        if (!strcmp(NM.s[i].name, name))
            s = &NM.s[i];
    if (!s) {
        NM.s = xrealloc(NM.s, (NM.n + 1) * sizeof(*NM.s));
        s = &NM.s[NM.n++];
        snprintf(s->name, sizeof(s->name), "%s", name);
    } else if (s->ifindex == ifindex && st->rx_bytes >= s->rx && st->tx_bytes >= s->tx &&
               now > s->t) {
        *ret_rx = (double)(st->rx_bytes - s->rx) / 1024.0 / (now - s->t);
        *ret_tx = (double)(st->tx_bytes - s->tx) / 1024.0 / (now - s->t);
    }
    s->ifindex = ifindex;
    s->rx = st->rx_bytes;
    s->tx = st->tx_bytes;
    s->t = now;
}

static double rec_float(const xv *rec, const char *key)
{
    const xv *v = xv_struct_get(rec, key);
    return v && v->kind == XV_FLOAT ? v->u.f : 0;
}

/* Every VIF and PIF has its metrics row; rows nobody names go (VM.destroy removes VIFs
 * without theirs) — XAPI's db_gc for VIF_metrics/PIF_metrics. */
static xerr *metrics_sync_txn(store_txn *t, void *ud)
{
    (void)ud;
    const struct {
        const api_class *c, *mc;
        int field;
    } kinds[] = {{CLS(VIF), CLS(VIF_metrics), API_F_VIF_metrics},
                 {CLS(PIF), CLS(PIF_metrics), API_F_PIF_metrics}};
    for (size_t k = 0; k < ARRAY_SIZE(kinds); k++) {
        AUTO(xv) *objs = NULL, *rows = NULL;
        xerr *e = st_get_all_records(t, kinds[k].c, NULL, NULL, 0, &objs);
        if (!e)
            e = st_get_all(t, kinds[k].mc, NULL, NULL, 0, &rows);
        if (e)
            return e;
        for (size_t i = 0; i < objs->u.st.n; i++) {
            const char *m = rec_str(objs->u.st.vals[i], "metrics");
            if (xref_set(m) && st_exists(t, kinds[k].mc, m))
                continue;
            char *nm = NULL;
            if ((e = metrics_new(t, kinds[k].mc, &nm)))
                return e;
            AUTO(xv) *v = xv_new_string_take(nm);
            if ((e = st_set_field(t, kinds[k].c, objs->u.st.keys[i], kinds[k].field, v)))
                return e;
        }
        for (size_t i = 0; i < xv_array_len(rows); i++) {
            const char *r = xv_str(xv_array_get(rows, i));
            bool used = false;
            for (size_t j = 0; j < objs->u.st.n && !used; j++)
                used = !strcmp(rec_str(objs->u.st.vals[j], "metrics"), r);
            if (!used && (e = st_destroy(t, kinds[k].mc, r)))
                return e;
        }
    }
    return NULL;
}

/* An integer from /sys/class/net/<dev>/<file>, or dflt. */
static int64_t sysfs_int(const char *dev, const char *file, int64_t dflt)
{
    AUTOFREE char *path = xasprintf("/sys/class/net/%s/%s", dev, file);
    AUTOFREE char *txt = NULL;
    if (read_file(path, &txt, NULL) < 0)
        return dflt;
    char *end = NULL;
    long long v = strtoll(txt, &end, 0);
    return end == txt ? dflt : (int64_t)v;
}

static char *sysfs_str(const char *dev, const char *file)
{
    AUTOFREE char *path = xasprintf("/sys/class/net/%s/%s", dev, file);
    char *txt = NULL;
    if (read_file(path, &txt, NULL) < 0)
        return xstrdup("");
    txt[strcspn(txt, "\n")] = '\0';
    return txt;
}

/* Adds key=val to `upd` if the metrics row `cur` holds something else. */
static void upd_float(xv *upd, const xv *cur, const char *key, double v)
{
    double d = rec_float(cur, key) - v;
    if (d >= 0.005 || d <= -0.005)
        xv_struct_set(upd, key, xv_new_float(v));
}

static void upd_str(xv *upd, const xv *cur, const char *key, const char *v)
{
    if (strcmp(rec_str(cur, key), v) != 0)
        xv_struct_set(upd, key, xv_new_string(v));
}

/* Writes `upd` to metrics row `ref` (with last_updated) if it holds anything. */
static void metrics_write(xapid *x, const api_class *mc, const char *ref, xv *upd)
{
    if (xv_struct_len(upd)) {
        xv_struct_set(upd, "last_updated", xv_new_datetime_epoch(now_epoch()));
        xerr *e = set_fields(x, mc, ref, upd);
        if (e)
            log_debug("metrics %s: %s", ref, e->code);
        xerr_free(e);
    }
}

static void vif_metrics_pass(xapid *x, net_ctx *nl, double now)
{
    AUTO(xv) *vifs = NULL, *vms = NULL, *rows = NULL;
    AUTO(xv) *running = xv_new_string("Running");
    const xv *args[] = {running};
    if (store_get_all_records(x->st, CLS(VIF), NULL, NULL, 0, &vifs) ||
        store_get_all_records(x->st, CLS(VM), "\"power_state\" = ?", args, 1, &vms) ||
        store_get_all_records(x->st, CLS(VIF_metrics), NULL, NULL, 0, &rows))
        return;
    for (size_t i = 0; i < vifs->u.st.n; i++) {
        const xv *vif = vifs->u.st.vals[i];
        const char *mref = rec_str(vif, "metrics");
        const xv *cur = xv_struct_get(rows, mref);
        const xv *vm = xv_struct_get(vms, rec_str(vif, "VM"));
        if (!cur)
            continue;
        double rd = 0, wr = 0;
        char name[NET_NAME_MAX];
        struct net_link_info li;
        struct net_link_stats st;
        if (rec_bool(vif, "currently_attached") && vm &&
            !strcmp(rec_str(vm, "resident_on"), x->host_ref) &&
            net_vif_name((long)rec_int(vm, "domid", -1), strtol(rec_str(vif, "device"), NULL, 10),
                         name) == 0 &&
            net_link_get(nl, name, &li) == 0 && net_link_get_stats(nl, name, &st) == 0) {
            /* the tap's tx goes to the VM (the VM reads it), its rx comes from the VM */
            pthread_mutex_lock(&NM.lock);
            nm_rate(name, li.ifindex, &st, now, &wr, &rd);
            pthread_mutex_unlock(&NM.lock);
        }
        AUTO(xv) *upd = xv_new_struct();
        upd_float(upd, cur, "io_read_kbs", rd);
        upd_float(upd, cur, "io_write_kbs", wr);
        metrics_write(x, CLS(VIF_metrics), mref, upd);
    }
}

static void pif_metrics_pass(xapid *x, net_ctx *nl, double now)
{
    AUTO(xv) *pifs = NULL, *rows = NULL;
    if (records_where(x, CLS(PIF), "host", x->host_ref, &pifs) ||
        store_get_all_records(x->st, CLS(PIF_metrics), NULL, NULL, 0, &rows))
        return;
    for (size_t i = 0; i < pifs->u.st.n; i++) {
        const xv *pif = pifs->u.st.vals[i];
        const char *mref = rec_str(pif, "metrics");
        const xv *cur = xv_struct_get(rows, mref);
        const char *dev = rec_str(pif, "device");
        if (!cur || rec_int(pif, "VLAN", -1) >= 0)
            continue; /* a VLAN PIF shares the metrics of the PIF it tags */
        struct net_link_info li;
        struct net_link_stats st;
        AUTO(xv) *upd = xv_new_struct();
        double rd = 0, wr = 0;
        bool carrier = false;
        if (net_link_get(nl, dev, &li) == 0 && net_link_get_stats(nl, dev, &st) == 0) {
            carrier = li.carrier;
            pthread_mutex_lock(&NM.lock);
            nm_rate(dev, li.ifindex, &st, now, &rd, &wr);
            pthread_mutex_unlock(&NM.lock);
            int64_t speed = sysfs_int(dev, "speed", -1);
            speed = speed < 0 ? 0 : speed;
            AUTOFREE char *duplex = sysfs_str(dev, "duplex");
            AUTOFREE char *vendor = sysfs_str(dev, "device/vendor");
            AUTOFREE char *device = sysfs_str(dev, "device/device");
            AUTOFREE char *link = xasprintf("/sys/class/net/%s/device", dev);
            char target[256] = "";
            ssize_t n = readlink(link, target, sizeof(target) - 1);
            target[n > 0 ? n : 0] = '\0';
            const char *slash = strrchr(target, '/');
            if (rec_int(cur, "speed", -1) != speed)
                xv_struct_set(upd, "speed", xv_new_int(speed));
            if (rec_bool(cur, "duplex") != !strcmp(duplex, "full"))
                xv_struct_set(upd, "duplex", xv_new_bool(!strcmp(duplex, "full")));
            upd_str(upd, cur, "vendor_id",
                    vendor[0] == '0' && vendor[1] == 'x' ? vendor + 2 : vendor);
            upd_str(upd, cur, "device_id",
                    device[0] == '0' && device[1] == 'x' ? device + 2 : device);
            upd_str(upd, cur, "pci_bus_path", slash ? slash + 1 : "");
        }
        if (rec_bool(cur, "carrier") != carrier)
            xv_struct_set(upd, "carrier", xv_new_bool(carrier));
        upd_float(upd, cur, "io_read_kbs", rd);
        upd_float(upd, cur, "io_write_kbs", wr);
        metrics_write(x, CLS(PIF_metrics), mref, upd);
    }
}

/* DHCP PIFs: a renewed lease with other values is applied and recorded; a lost one clears
 * the address. */
static void dhcp_pass(xapid *x, net_ctx *nl)
{
    AUTO(xv) *pifs = NULL;
    if (records_where(x, CLS(PIF), "host", x->host_ref, &pifs))
        return;
    AUTOFREE char *dir = dhcp_dir(x);
    for (size_t i = 0; i < pifs->u.st.n; i++) {
        const xv *pif = pifs->u.st.vals[i];
        const char *ref = pifs->u.st.keys[i];
        if (strcmp(rec_str(pif, "ip_configuration_mode"), "DHCP") != 0 ||
            !rec_bool(pif, "currently_attached"))
            continue;
        AUTO(xv) *net = NULL;
        if (get_record(x, CLS(network), rec_str(pif, "network"), &net))
            continue;
        const char *bridge = rec_str(net, "bridge");
        struct net_dhcp_lease lease;
        int r = net_dhcp_poll(dir, bridge, &lease);
        if (r == -ESRCH)
            log_debug("DHCP: no client runs for %s (PIF.plug or reconfigure_ip starts one)",
                      bridge);
        if (r < 0)
            continue; /* no client, or no lease yet */
        AUTOFREE char *dns = dns_csv(lease.dns);
        if (!strcmp(rec_str(pif, "IP"), lease.ip) &&
            !strcmp(rec_str(pif, "netmask"), lease.netmask) &&
            !strcmp(rec_str(pif, "gateway"), lease.gateway) &&
            (!*dns || !strcmp(rec_str(pif, "DNS"), dns)))
            continue;
        r = r == 1 ? net_ip_set_static(nl, bridge, lease.ip, lease.netmask, lease.gateway)
                   : net_ip_flush(nl, bridge);
        if (r < 0) {
            log_warn("DHCP: %s: lease %s not applied: %s", bridge, lease.ip, strerror(-r));
            continue;
        }
        log_info("DHCP: %s now has %s%s%s", bridge, *lease.ip ? lease.ip : "no address",
                 *lease.ip ? "/" : "", lease.netmask);
        AUTO(xv) *upd = xv_new_struct();
        xv_struct_set(upd, "IP", xv_new_string(lease.ip));
        xv_struct_set(upd, "netmask", xv_new_string(lease.netmask));
        xv_struct_set(upd, "gateway", xv_new_string(lease.gateway));
        if (*dns)
            xv_struct_set(upd, "DNS", xv_new_string(dns));
        xerr *e = set_fields(x, CLS(PIF), ref, upd);
        if (!e && rec_bool(pif, "management")) {
            if (*lease.ip)
                e = set_field(x, CLS(host), x->host_ref, API_F_host_address,
                              xv_new_string(lease.ip));
            if (*dns)
                resolv_write(dns);
        }
        if (e)
            log_warn("DHCP: PIF %s: %s", ref, e->code);
        xerr_free(e);
    }
}

xerr *xapid_network_tick(xapid *x)
{
    xerr *e = store_write(x->st, metrics_sync_txn, NULL);
    if (e)
        return e;
    AUTO(net_ctx) *nl = NULL;
    if ((e = ctx_open(&nl)))
        return e;
    double now = now_monotonic();
    vif_metrics_pass(x, nl, now);
    pif_metrics_pass(x, nl, now);
    /* forget devices this pass did not see (a tap's name has the domid: it is not reused) */
    pthread_mutex_lock(&NM.lock);
    size_t k = 0;
    for (size_t i = 0; i < NM.n; i++)
        if (NM.s[i].t == now)
            NM.s[k++] = NM.s[i];
    NM.n = k;
    pthread_mutex_unlock(&NM.lock);
    dhcp_pass(x, nl);
    return NULL;
}

/* Seconds between passes (XAPI's monitor updates metrics about as often). */
#define NM_INTERVAL 5

static void *nm_main(void *arg)
{
    xapid *x = arg;
    pthread_mutex_lock(&NM.lock);
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += NM_INTERVAL;
        while (!NM.stop && pthread_cond_timedwait(&NM.cond, &NM.lock, &ts) != ETIMEDOUT)
            ;
        if (NM.stop || atomic_load(&x->stopping))
            break;
        pthread_mutex_unlock(&NM.lock);
        xerr *e = xapid_network_tick(x);
        if (e)
            log_debug("network metrics: %s", e->code);
        xerr_free(e);
        pthread_mutex_lock(&NM.lock);
    }
    pthread_mutex_unlock(&NM.lock);
    return NULL;
}

void xapid_network_start(xapid *x)
{
    pthread_mutex_lock(&NM.lock);
    if (!NM.started) {
        NM.stop = false;
        NM.started = pthread_create(&NM.thread, NULL, nm_main, x) == 0;
        if (!NM.started)
            log_warn("network: no metrics thread");
    }
    pthread_mutex_unlock(&NM.lock);
}

void xapid_network_stop(xapid *x)
{
    (void)x;
    pthread_mutex_lock(&NM.lock);
    bool started = NM.started;
    NM.stop = true;
    pthread_cond_broadcast(&NM.cond);
    pthread_mutex_unlock(&NM.lock);
    if (started)
        pthread_join(NM.thread, NULL);
    pthread_mutex_lock(&NM.lock);
    NM.started = false;
    free(NM.s);
    NM.s = NULL;
    NM.n = 0;
    pthread_mutex_unlock(&NM.lock);
}
