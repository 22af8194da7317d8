/* The object store: accessors, reverse references, generations, events, tombstones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "api_gen.h"
#include "mem.h"
#include "store.h"

static store *st;

static int setup(void **state)
{
    return store_open(":memory:", &st);
}

static int teardown(void **state)
{
    store_close(st);
    return 0;
}

struct op {
    const char *what;
    const char *ref;
    xv *rec;
    char *out;
    xv *val;
    int64_t since;
    int cls;
};

static xerr *do_op(store_txn *t, void *ud)
{
    struct op *o = ud;
    const api_class *c = &api_classes[o->cls];
    if (strcmp(o->what, "create") == 0)
        return st_create(t, c, NULL, o->rec, &o->out);
    if (strcmp(o->what, "destroy") == 0)
        return st_destroy(t, c, o->ref);
    if (strcmp(o->what, "record") == 0)
        return st_get_record(t, c, o->ref, &o->val);
    if (strcmp(o->what, "changes") == 0) {
        o->val = xv_new_array();
        return st_changes(t, c, o->since, NULL, o->val);
    }
    return NULL;
}

static char *create(int cls, xv *rec)
{
    struct op o = {"create", NULL, rec, NULL, NULL, 0, cls};
    xerr *e = store_write(st, do_op, &o);
    assert_null(e);
    xv_free(rec);
    return o.out;
}

static xv *record(int cls, const char *ref, xerr **err)
{
    struct op o = {"record", ref, NULL, NULL, NULL, 0, cls};
    *err = store_read(st, do_op, &o);
    return o.val;
}

static xv *changes(int cls, int64_t since)
{
    struct op o = {"changes", NULL, NULL, NULL, NULL, since, cls};
    assert_null(store_read(st, do_op, &o));
    return o.val;
}

static void test_create_read_defaults(void **state)
{
    xv *rec = xv_new_struct();
    xv_struct_set(rec, "name_label", xv_new_string("n1"));
    AUTOFREE char *net = create(API_CLASS_network, rec);
    xerr *e = NULL;
    AUTO(xv) *r = record(API_CLASS_network, net, &e);
    assert_null(e);
    assert_string_equal(xv_struct_get_str(r, "name_label"), "n1");
    assert_int_equal(strlen(xv_struct_get_str(r, "uuid")), 36);
    assert_int_equal(xv_struct_get(r, "MTU")->u.i, 1500); /* schema default */
    assert_int_equal(xv_array_len(xv_struct_get(r, "VIFs")), 0);
    AUTO(xv) *bad = record(API_CLASS_network, "OpaqueRef:none", &e);
    assert_null(bad);
    assert_non_null(e);
    assert_string_equal(e->code, "HANDLE_INVALID");
    assert_string_equal(e->params[0], "network");
    xerr_free(e);
}

static void test_reverse_refs_and_events(void **state)
{
    int64_t g0 = store_gen(st);
    AUTOFREE char *vm = create(API_CLASS_VM, xv_new_struct());
    int64_t g1 = store_gen(st);
    assert_true(g1 > g0);
    xv *vbd = xv_new_struct();
    xv_struct_set(vbd, "VM", xv_new_string(vm));
    AUTOFREE char *vbd_ref = create(API_CLASS_VBD, vbd);
    xerr *e = NULL;
    AUTO(xv) *r = record(API_CLASS_VM, vm, &e);
    assert_null(e);
    const xv *vbds = xv_struct_get(r, "VBDs");
    assert_int_equal(xv_array_len(vbds), 1);
    assert_string_equal(xv_str(xv_array_get(vbds, 0)), vbd_ref);
    /* adding the VBD changed the VM too: it is reported as modified after g1 */
    AUTO(xv) *ch = changes(API_CLASS_VM, g1);
    assert_int_equal(xv_array_len(ch), 1);
    assert_string_equal(xv_struct_get_str(xv_array_get(ch, 0), "operation"), "mod");
    int64_t g2 = store_gen(st);
    struct op o = {"destroy", vbd_ref, NULL, NULL, NULL, 0, API_CLASS_VBD};
    assert_null(store_write(st, do_op, &o));
    AUTO(xv) *del = changes(API_CLASS_VBD, g2);
    assert_int_equal(xv_array_len(del), 1);
    assert_string_equal(xv_struct_get_str(xv_array_get(del, 0), "operation"), "del");
    assert_null(xv_struct_get(xv_array_get(del, 0), "snapshot"));
    AUTO(xv) *all = changes(API_CLASS_VM, -1);
    assert_true(xv_array_len(all) >= 1);
    assert_string_equal(xv_struct_get_str(xv_array_get(all, 0), "operation"), "add");
}

static xerr *fail_after_write(store_txn *t, void *ud)
{
    xerr *e = st_create(t, &api_classes[API_CLASS_network], NULL, ud, NULL);
    if (e)
        return e;
    return xerr_new("INTERNAL_ERROR", "boom");
}

static void test_rollback(void **state)
{
    int64_t g = store_gen(st);
    AUTO(xv) *rec = xv_new_struct();
    xv_struct_set(rec, "name_label", xv_new_string("rolled-back"));
    AUTO(xerr) *e = store_write(st, fail_after_write, rec);
    assert_non_null(e);
    assert_int_equal(store_gen(st), g);
    AUTO(xv) *ch = changes(API_CLASS_network, g);
    assert_int_equal(xv_array_len(ch), 0);
}

static void test_wait_times_out(void **state)
{
    int64_t g = store_gen(st);
    int64_t r = store_wait(st, g, 0.05);
    assert_int_equal(r, g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_read_defaults),
        cmocka_unit_test(test_reverse_refs_and_events),
        cmocka_unit_test(test_rollback),
        cmocka_unit_test(test_wait_times_out),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
