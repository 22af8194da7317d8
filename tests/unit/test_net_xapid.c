/* xapid/network.c's hooks for the VM lifecycle and start-up, over an in-memory store and a
 * network namespace of its own: attach/detach a running VM's VIF, and reconcile after a
 * restart (taps kept, not duplicated; taps of VMs that stopped meanwhile removed). */
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

#include "config.h"
#include "mem.h"
#include "net.h"
#include "xapid.h"

/* Declared in xapid/network.c (until xapid.h carries them). */
xerr *xapid_network_vif_attach(xapid *x, const char *vif, int64_t domid, int *ret_fd);
xerr *xapid_network_vif_detach(xapid *x, const char *vif, int64_t domid);
xerr *xapid_network_reconcile(xapid *x, bool manage_pifs);

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
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
