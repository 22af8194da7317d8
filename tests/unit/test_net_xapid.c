/* xapid/network.c's hooks for the VM lifecycle and start-up, over an in-memory store and a
 * network namespace of its own: attach/detach a running VM's VIF, and reconcile after a
 * restart (taps kept, not duplicated; taps of VMs that stopped meanwhile removed); VIF/PIF
 * metrics rows and tap counters; VLAN.create/Bond.create checks against DB state. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api_handlers.h"
#include "config.h"
#include "mem.h"
#include "net.h"
#include "util.h"
#include "xapid.h"

/* Declared in xapid/network.c (until xapid.h carries them). */
xerr *xapid_network_vif_attach(xapid *x, const char *vif, int64_t domid, int *ret_fd);
xerr *xapid_network_vif_detach(xapid *x, const char *vif, int64_t domid);
xerr *xapid_network_reconcile(xapid *x, bool manage_pifs);
xerr *xapid_network_tick(xapid *x);
void xapid_network_stop(xapid *x);

static xapid X;
static char *g_net, *g_vm, *g_vif;
static bool g_nft;

struct mk {
    int cls;
    xv *rec;
    char *ref;
};

static xerr *mk_txn(store_txn *t, void *ud)
{
    struct mk *m = ud;
    return st_create(t, &api_classes[m->cls], NULL, m->rec, &m->ref);
}

static char *mk(int cls, xv *rec)
{
    struct mk m = {cls, rec, NULL};
    xerr *e = store_write(X.st, mk_txn, &m);
    xv_free(rec);
    assert_null(e);
    return m.ref;
}

struct setf {
    int cls;
    const char *ref;
    int field;
    xv *v;
};

static xerr *setf_txn(store_txn *t, void *ud)
{
    struct setf *s = ud;
    return st_set_field(t, &api_classes[s->cls], s->ref, s->field, s->v);
}

static void setf(int cls, const char *ref, int field, xv *v)
{
    struct setf s = {cls, ref, field, v};
    xerr *e = store_write(X.st, setf_txn, &s);
    xv_free(v);
    assert_null(e);
}

struct getf {
    const char *ref;
    xv *out;
};

static xerr *getf_txn(store_txn *t, void *ud)
{
    struct getf *g = ud;
    return st_get_field(t, &api_classes[API_CLASS_VIF], g->ref, API_F_VIF_currently_attached,
                        &g->out);
}

static bool get_attached(const char *vif)
{
    struct getf g = {vif, NULL};
    assert_null(store_read(X.st, getf_txn, &g));
    bool b = g.out && g.out->kind == XV_BOOL && g.out->u.b;
    xv_free(g.out);
    return b;
}

static int setup(void **state)
{
    config_defaults(&X.cfg);
    X.cfg.password_iterations = 1000;
    assert_int_equal(store_open(":memory:", &X.st), 0);
    assert_int_equal(auth_init(&X), 0);
    assert_int_equal(bootstrap(&X), 0);
    g_nft = system("nft list tables >/dev/null 2>&1") == 0;

    xv *net = xv_new_struct();
    xv_struct_set(net, "name_label", xv_new_string("private"));
    xv_struct_set(net, "bridge", xv_new_string("xapi3"));
    xv_struct_set(net, "MTU", xv_new_int(1400));
    g_net = mk(API_CLASS_network, net);

    xv *vm = xv_new_struct();
    xv_struct_set(vm, "name_label", xv_new_string("vm"));
    xv_struct_set(vm, "power_state", xv_new_string("Running"));
    xv_struct_set(vm, "domid", xv_new_int(7));
    xv_struct_set(vm, "resident_on", xv_new_string(X.host_ref));
    g_vm = mk(API_CLASS_VM, vm);

    xv *vif = xv_new_struct();
    xv_struct_set(vif, "device", xv_new_string("0"));
    xv_struct_set(vif, "VM", xv_new_string(g_vm));
    xv_struct_set(vif, "network", xv_new_string(g_net));
    xv_struct_set(vif, "MAC", xv_new_string("02:00:00:00:07:00"));
    xv_struct_set(vif, "MTU", xv_new_int(0));
    xv_struct_set(vif, "qos_algorithm_type", xv_new_string("ratelimit"));
    xv *qp = xv_new_struct();
    xv_struct_set(qp, "kbps", xv_new_string("1000"));
    xv_struct_set(vif, "qos_algorithm_params", qp);
    xv_struct_set(vif, "locking_mode", xv_new_string(g_nft ? "locked" : "unlocked"));
    xv *v4 = xv_new_array();
    xv_array_append(v4, xv_new_string("10.0.0.5"));
    xv_struct_set(vif, "ipv4_allowed", v4);
    xv_struct_set(vif, "currently_attached", xv_new_bool(true));
    g_vif = mk(API_CLASS_VIF, vif);
    return 0;
}

static int teardown(void **state)
{
    xapid_network_stop(&X); /* reconcile started the metrics thread */
    store_close(X.st);
    free(X.host_ref);
    free(X.pool_ref);
    config_free(&X.cfg);
    free(g_net);
    free(g_vm);
    free(g_vif);
    return 0;
}

static int count_kind(net_ctx *nl, const char *kind)
{
    struct net_link_info *v = NULL;
    size_t n = 0;
    assert_int_equal(net_link_list(nl, &v, &n), 0);
    int c = 0;
    for (size_t i = 0; i < n; i++)
        c += !strcmp(v[i].kind, kind);
    free(v);
    return c;
}

static void test_attach_reconcile_detach(void **state)
{
    AUTO(net_ctx) *nl = NULL;
    assert_int_equal(net_ctx_open(&nl), 0);
    int fd = -1;
    xerr *e = xapid_network_vif_attach(&X, g_vif, 7, &fd);
    assert_null(e);
    assert_true(fd >= 0);
    struct net_link_info tap, br;
    assert_int_equal(net_link_get(nl, "vif7.0", &tap), 0);
    assert_string_equal(tap.master, "xapi3"); /* internal network: bridge made on demand */
    assert_int_equal(tap.mtu, 1400);          /* VIF MTU 0 = the network's */
    assert_int_equal(net_link_get(nl, "xapi3", &br), 0);
    assert_int_equal(br.mtu, 1400);
    assert_int_equal(count_kind(nl, "ifb"), 1); /* ratelimit applied */
    if (g_nft)
        assert_int_equal(system("nft list chain bridge nuvem in-vif7.0 | grep -q 10.0.0.5"), 0);

    /* Restart: the VM still runs, so its tap is kept and reconciled, not duplicated. */
    assert_null(xapid_network_reconcile(&X, false));
    struct net_link_info again;
    assert_int_equal(net_link_get(nl, "vif7.0", &again), 0);
    assert_int_equal(again.ifindex, tap.ifindex);
    assert_int_equal(count_kind(nl, "tun"), 1);
    assert_int_equal(count_kind(nl, "ifb"), 1);

    assert_null(xapid_network_vif_detach(&X, g_vif, 7));
    assert_int_equal(net_link_get(nl, "vif7.0", &again), -ENODEV);
    assert_int_equal(count_kind(nl, "ifb"), 0);
    close(fd);

    /* The VM stopped while xapid was down: its tap goes, the VIF is marked detached. */
    assert_null(xapid_network_vif_attach(&X, g_vif, 7, NULL));
    setf(API_CLASS_VM, g_vm, API_F_VM_power_state, xv_new_string("Halted"));
    assert_null(xapid_network_reconcile(&X, false));
    assert_int_equal(net_link_get(nl, "vif7.0", &again), -ENODEV);
    assert_false(get_attached(g_vif));
}

static xv *getrec(int cls, const char *ref)
{
    xv *r = NULL;
    xerr *e = store_get_record(X.st, &api_classes[cls], ref, &r);
    assert_null(e);
    return r;
}

static size_t count(int cls)
{
    AUTO(xv) *all = NULL;
    assert_null(store_get_all_records(X.st, &api_classes[cls], NULL, NULL, 0, &all));
    return xv_struct_len(all);
}

static double getf_float(const xv *rec, const char *k)
{
    const xv *v = xv_struct_get(rec, k);
    assert_non_null(v);
    assert_int_equal(v->kind, XV_FLOAT);
    return v->u.f;
}

/* Metrics rows appear for VIFs/PIFs made without one, the tap's counters become KiB/s, and
 * rows whose VIF went (VM.destroy removes VIFs directly) are collected. */
static void test_vif_metrics(void **state)
{
    xapid_network_stop(&X); /* this test runs the passes itself */
    setf(API_CLASS_VM, g_vm, API_F_VM_power_state, xv_new_string("Running"));
    setf(API_CLASS_VIF, g_vif, API_F_VIF_currently_attached, xv_new_bool(true));
    int fd = -1;
    assert_null(xapid_network_vif_attach(&X, g_vif, 7, &fd));
    assert_null(xapid_network_tick(&X)); /* first sample */
    double t0 = now_monotonic();
    AUTO(xv) *vif = getrec(API_CLASS_VIF, g_vif);
    const char *m = xv_struct_get_str(vif, "metrics");
    assert_non_null(m);
    AUTO(xv) *m0 = getrec(API_CLASS_VIF_metrics, m); /* made by the pass */
    assert_true(getf_float(m0, "io_write_kbs") == 0.0);
    /* the "VM" sends 300 frames of 1000 bytes through its tap (each after a virtio-net header) */
    unsigned char frame[NET_VNET_HDR_LEN + 1000];
    memset(frame, 0, sizeof(frame));
    unsigned char *eth = frame + NET_VNET_HDR_LEN;
    memset(eth, 0xff, 6);                           /* broadcast */
    memcpy(eth + 6, "\x02\x00\x00\x00\x07\x00", 6); /* the VIF's MAC */
    eth[12] = 0x88, eth[13] = 0xb5;                 /* local experimental ethertype */
    size_t sent = 0;
    for (int i = 0; i < 300; i++)
        if (write(fd, frame, sizeof(frame)) == (ssize_t)sizeof(frame))
            sent += 1000;
    assert_true(sent >= 290 * 1000);
    usleep(500000);
    assert_null(xapid_network_tick(&X));
    double dt = now_monotonic() - t0;
    AUTO(xv) *m1 = getrec(API_CLASS_VIF_metrics, m);
    double wr = getf_float(m1, "io_write_kbs"), want = (double)sent / 1024.0 / dt;
    /* the pass measures its own interval, a little shorter than ours */
    if (!(wr >= want * 0.9 && wr <= want * 1.5))
        fail_msg("io_write_kbs %.1f, sent %.1f KiB/s", wr, want);
    assert_true(getf_float(m1, "io_read_kbs") < wr);
    /* the management PIF that first start made has a row too now */
    AUTO(xv) *pifs = NULL;
    assert_null(store_get_all_records(X.st, &api_classes[API_CLASS_PIF], NULL, NULL, 0, &pifs));
    for (size_t i = 0; i < xv_struct_len(pifs); i++) {
        xv *pm = getrec(API_CLASS_PIF_metrics, xv_struct_get_str(pifs->u.st.vals[i], "metrics"));
        xv_free(pm);
    }
    assert_null(xapid_network_vif_detach(&X, g_vif, 7));
    close(fd);
    /* a VIF removed behind the handlers' back: its row goes at the next pass */
    AUTO(xv) *vif2 = xv_new_struct();
    xv_struct_set(vif2, "device", xv_new_string("3"));
    xv_struct_set(vif2, "VM", xv_new_string(g_vm));
    xv_struct_set(vif2, "network", xv_new_string(g_net));
    xv_struct_set(vif2, "MAC", xv_new_string("02:00:00:00:07:03"));
    char *v2 = mk(API_CLASS_VIF, TAKE_PTR(vif2));
    assert_null(xapid_network_tick(&X));
    size_t n = count(API_CLASS_VIF_metrics);
    assert_null(store_destroy(X.st, &api_classes[API_CLASS_VIF], v2));
    assert_null(xapid_network_tick(&X));
    assert_int_equal(count(API_CLASS_VIF_metrics), n - 1);
    free(v2);
}

static char *mkpif(const char *dev, const char *net, const char *host, int64_t vlan,
                   const char *bond)
{
    xv *p = xv_new_struct();
    xv_struct_set(p, "device", xv_new_string(dev));
    xv_struct_set(p, "network", xv_new_string(net));
    xv_struct_set(p, "host", xv_new_string(host));
    xv_struct_set(p, "MAC", xv_new_string("02:00:00:00:01:01"));
    xv_struct_set(p, "MTU", xv_new_int(1500));
    xv_struct_set(p, "VLAN", xv_new_int(vlan));
    xv_struct_set(p, "physical", xv_new_bool(vlan < 0));
    if (bond)
        xv_struct_set(p, "bond_slave_of", xv_new_string(bond));
    return mk(API_CLASS_PIF, p);
}

static char *mknet(const char *bridge)
{
    xv *n = xv_new_struct();
    xv_struct_set(n, "name_label", xv_new_string(bridge));
    xv_struct_set(n, "bridge", xv_new_string(bridge));
    xv_struct_set(n, "MTU", xv_new_int(1500));
    return mk(API_CLASS_network, n);
}

/* Checks that e is `code` with params p1, p2 (NULL: not checked); frees e. */
static void expect(xerr *e, const char *code, const char *p1, const char *p2)
{
    assert_non_null(e);
    if (strcmp(e->code, code) != 0)
        fail_msg("got %s (%s), want %s", e->code, e->nparams ? e->params[0] : "", code);
    if (p1) {
        assert_true(e->nparams >= 1);
        assert_string_equal(e->params[0], p1);
    }
    if (p2) {
        assert_true(e->nparams >= 2);
        assert_string_equal(e->params[1], p2);
    }
    xerr_free(e);
}

/* VLAN.create and Bond.create refuse what XAPI refuses, from the DB's state; a create the
 * kernel cannot carry (no 8021q or bonding here) leaves nothing behind. */
static void test_vlan_bond_checks(void **state)
{
    api_ctx ctx = {.x = &X};
    AUTO(net_ctx) *nl = NULL;
    assert_int_equal(net_ctx_open(&nl), 0);
    assert_int_equal(net_veth_create(nl, "nic1", "wire1"), 0);
    assert_int_equal(net_veth_create(nl, "nic2", "wire2"), 0);
    AUTOFREE char *n1 = mknet("xenbr1"), *n2 = mknet("xenbr2"), *nv = mknet("xapi20"),
                  *nfree = mknet("xapi21"), *nb = mknet("xapi22");
    AUTOFREE char *p1 = mkpif("nic1", n1, X.host_ref, -1, NULL);
    AUTOFREE char *p2 = mkpif("nic2", n2, X.host_ref, -1, NULL);
    AUTOFREE char *pv = mkpif("nic1", nv, X.host_ref, 5, NULL);
    xv *b = xv_new_struct();
    xv_struct_set(b, "mode", xv_new_string("active-backup"));
    AUTOFREE char *bond = mk(API_CLASS_Bond, b);
    AUTOFREE char *p3 = mkpif("nic3", nb, X.host_ref, -1, bond);
    xv *h = xv_new_struct();
    xv_struct_set(h, "name_label", xv_new_string("other"));
    AUTOFREE char *host2 = mk(API_CLASS_host, h);
    AUTOFREE char *n4 = mknet("xenbr4");
    AUTOFREE char *p4 = mkpif("nic4", n4, host2, -1, NULL);
    size_t pifs = count(API_CLASS_PIF), vlans = count(API_CLASS_VLAN),
           bonds = count(API_CLASS_Bond), pms = count(API_CLASS_PIF_metrics);
    xv *r = NULL;

    expect(api_VLAN_create(&ctx, p1, 4095, nfree, &r), "VLAN_TAG_INVALID", "4095", NULL);
    expect(api_VLAN_create(&ctx, p1, -1, nfree, &r), "VLAN_TAG_INVALID", "-1", NULL);
    expect(api_VLAN_create(&ctx, pv, 6, nfree, &r), "PIF_IS_VLAN", pv, NULL);
    expect(api_VLAN_create(&ctx, p1, 5, nfree, &r), "PIF_VLAN_EXISTS", "nic1", NULL);
    expect(api_VLAN_create(&ctx, p1, 7, n2, &r), "NETWORK_ALREADY_CONNECTED", X.host_ref, p2);
    expect(api_VLAN_create(&ctx, p3, 7, nfree, &r), "CANNOT_ADD_VLAN_TO_BOND_SLAVE", p3, NULL);
    expect(api_VLAN_create(&ctx, "OpaqueRef:nope", 7, nfree, &r), "HANDLE_INVALID", "PIF", NULL);

    AUTO(xv) *one = xv_new_array(), *dup = xv_new_array(), *two = xv_new_array(),
             *bonded = xv_new_array(), *tagged = xv_new_array(), *cross = xv_new_array();
    xv_array_append(one, xv_new_string(p1));
    xv_array_append(dup, xv_new_string(p1));
    xv_array_append(dup, xv_new_string(p1));
    xv_array_append(two, xv_new_string(p1));
    xv_array_append(two, xv_new_string(p2));
    xv_array_append(bonded, xv_new_string(p1));
    xv_array_append(bonded, xv_new_string(p3));
    xv_array_append(tagged, xv_new_string(p2));
    xv_array_append(tagged, xv_new_string(pv));
    xv_array_append(cross, xv_new_string(p1));
    xv_array_append(cross, xv_new_string(p4));
    AUTO(xv) *noprops = xv_new_struct(), *badprops = xv_new_struct();
    xv_struct_set(badprops, "hashing_algorithm", xv_new_string("round-robin"));
    const char *slb = "balance-slb";
    expect(api_Bond_create(&ctx, nfree, one, "", slb, noprops, &r), "PIF_BOND_NEEDS_MORE_MEMBERS",
           NULL, NULL);
    expect(api_Bond_create(&ctx, nfree, dup, "", slb, noprops, &r), "PIF_BOND_NEEDS_MORE_MEMBERS",
           NULL, NULL);
    expect(api_Bond_create(&ctx, nfree, bonded, "", slb, noprops, &r), "PIF_ALREADY_BONDED", p3,
           NULL);
    expect(api_Bond_create(&ctx, nfree, tagged, "", slb, noprops, &r), "PIF_VLAN_EXISTS", "nic1",
           NULL);
    expect(api_Bond_create(&ctx, nfree, cross, "", slb, noprops, &r), "PIF_CANNOT_BOND_CROSS_HOST",
           NULL, NULL);
    expect(api_Bond_create(&ctx, n1, two, "", slb, noprops, &r), "NETWORK_ALREADY_CONNECTED",
           X.host_ref, p1);
    expect(api_Bond_create(&ctx, nfree, two, "02:zz", slb, noprops, &r), "MAC_INVALID", "02:zz",
           NULL);
    expect(api_Bond_create(&ctx, nfree, two, "", slb, badprops, &r), "INVALID_VALUE",
           "hashing_algorithm", "round-robin");
    assert_int_equal(count(API_CLASS_PIF), pifs);
    assert_int_equal(count(API_CLASS_Bond), bonds);

    /* a valid VLAN: made for real where the kernel has 8021q, else refused with nothing left */
    xerr *e = api_VLAN_create(&ctx, p1, 7, nfree, &r);
    if (e) {
        expect(e, "NOT_IMPLEMENTED", NULL, NULL);
        assert_int_equal(count(API_CLASS_PIF), pifs);
        assert_int_equal(count(API_CLASS_VLAN), vlans);
        struct net_link_info li;
        assert_int_equal(net_link_get(nl, "nic1.7", &li), -ENODEV);
    } else {
        AUTO(xv) *vlan = getrec(API_CLASS_VLAN, xv_str(r));
        AUTO(xv) *up = getrec(API_CLASS_PIF, xv_struct_get_str(vlan, "untagged_PIF"));
        assert_string_equal(xv_struct_get_str(vlan, "tagged_PIF"), p1);
        assert_string_equal(xv_struct_get_str(up, "VLAN_master_of"), xv_str(r));
        assert_int_equal(xv_struct_get(up, "VLAN")->u.i, 7);
        struct net_link_info li;
        assert_int_equal(net_link_get(nl, "nic1.7", &li), 0);
        assert_string_equal(li.master, "xapi21");
        assert_null(api_VLAN_destroy(&ctx, xv_str(r)));
        assert_int_equal(count(API_CLASS_PIF), pifs);
        xv_free(r);
    }
    /* a valid bond likewise */
    r = NULL;
    e = api_Bond_create(&ctx, nfree, two, "", "active-backup", noprops, &r);
    if (e) {
        expect(e, "NOT_IMPLEMENTED", NULL, NULL);
        assert_int_equal(count(API_CLASS_Bond), bonds);
        assert_int_equal(count(API_CLASS_PIF_metrics), pms);
        AUTO(xv) *rec = getrec(API_CLASS_PIF, p1);
        assert_string_equal(xv_struct_get_str(rec, "bond_slave_of"), "OpaqueRef:NULL");
    } else {
        AUTO(xv) *bd = getrec(API_CLASS_Bond, xv_str(r));
        assert_int_equal(xv_array_len(xv_struct_get(bd, "slaves")), 2);
        assert_null(api_Bond_destroy(&ctx, xv_str(r)));
        assert_int_equal(count(API_CLASS_Bond), bonds);
        xv_free(r);
    }
    net_link_delete(nl, "nic1");
    net_link_delete(nl, "nic2");
}

int main(void)
{
    if (geteuid() != 0 || unshare(CLONE_NEWNET) < 0) {
        printf("SKIP: needs root and a network namespace of its own\n");
        return 77;
    }
    AUTO(net_ctx) *nl = NULL;
    if (net_ctx_open(&nl) < 0 || net_link_set_up(nl, "lo", true) < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attach_reconcile_detach),
        cmocka_unit_test(test_vif_metrics),
        cmocka_unit_test(test_vlan_bond_checks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
