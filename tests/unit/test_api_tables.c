/* The generated tables agree with the reference XenAPI model (names, types, qualifiers,
 * parameter orders, enum values, roles), and the schema hash is pinned. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "api_gen.h"
#include "mem.h"
#include "util.h"

static xv *model;

static const xv *model_class(const char *name)
{
    for (size_t i = 0; i < xv_array_len(model); i++)
        if (strcmp(xv_struct_get_str(xv_array_get(model, i), "name"), name) == 0)
            return xv_array_get(model, i);
    return NULL;
}

static const xv *find_named(const xv *arr, const char *name)
{
    for (size_t i = 0; i < xv_array_len(arr); i++)
        if (strcmp(xv_struct_get_str(xv_array_get(arr, i), "name"), name) == 0)
            return xv_array_get(arr, i);
    return NULL;
}

static const char *qual_text(api_qual q)
{
    return q == API_Q_RW ? "RW" : q == API_Q_RO_CONSTRUCTOR ? "RO/constructor" : "RO/runtime";
}

static void test_fields_match_model(void **state)
{
    if (!model)
        skip();
    for (size_t i = 0; i < api_nclasses; i++) {
        const api_class *c = &api_classes[i];
        const xv *mc = model_class(c->name);
        assert_non_null(mc);
        const xv *mf = xv_struct_get(mc, "fields");
        assert_int_equal(c->nfields, xv_array_len(mf));
        for (size_t k = 0; k < c->nfields; k++) {
            const xv *f = xv_array_get(mf, k);
            assert_string_equal(c->fields[k].name, xv_struct_get_str(f, "name"));
            assert_string_equal(c->fields[k].type->text, xv_struct_get_str(f, "type"));
            assert_string_equal(qual_text(c->fields[k].qual), xv_struct_get_str(f, "qualifier"));
        }
        const xv *enums = xv_struct_get(mc, "enums");
        for (size_t k = 0; k < c->nfields; k++) {
            const api_type *t = c->fields[k].type;
            while (t->kind == API_T_SET || t->kind == API_T_MAP)
                t = t->elem;
            if (t->kind != API_T_ENUM)
                continue;
            const xv *me = find_named(enums, t->en->name);
            if (!me)
                continue; /* declared by another class */
            const xv *vals = xv_struct_get(me, "values");
            assert_int_equal(t->en->n, xv_array_len(vals));
            for (size_t v = 0; v < t->en->n; v++)
                assert_string_equal(t->en->values[v], xv_str(xv_array_get(vals, v)));
        }
    }
}

static void test_messages_match_model(void **state)
{
    if (!model)
        skip();
    size_t checked = 0;
    for (size_t i = 0; i < api_nmessages; i++) {
        const api_message *m = &api_messages[i];
        const xv *mm =
            find_named(xv_struct_get(model_class(api_classes[m->cls].name), "messages"), m->name);
        if (!mm) {
            /* only the hidden get_all_where / get_all_records_where may be ours alone */
            assert_true(m->kind == API_M_GET_ALL_WHERE || m->kind == API_M_GET_ALL_RECORDS_WHERE ||
                        m->kind == API_M_GET_FIELD);
            continue;
        }
        const xv *params = xv_struct_get(mm, "params");
        size_t off = m->session ? 1 : 0;
        if (m->nparams + off != xv_array_len(params))
            fprintf(stderr, "%s: %zu params, model has %zu\n", m->wire, m->nparams + off,
                    xv_array_len(params));
        assert_int_equal(m->nparams + off, xv_array_len(params));
        for (size_t p = 0; p < m->nparams; p++) {
            const xv *mp = xv_array_get(params, p + off);
            assert_string_equal(m->params[p].name, xv_struct_get_str(mp, "name"));
            assert_string_equal(m->params[p].type->text, xv_struct_get_str(mp, "type"));
        }
        /* the minimal role is the last non-client-cert role the model lists */
        const xv *roles = xv_struct_get(mm, "roles");
        const char *last = NULL;
        for (size_t r = 0; r < xv_array_len(roles); r++)
            if (strcmp(xv_str(xv_array_get(roles, r)), "client-cert") != 0)
                last = xv_str(xv_array_get(roles, r));
        if (last)
            assert_string_equal(api_roles[m->min_role], last);
        checked++;
    }
    fprintf(stderr, "%zu messages checked against the model\n", checked);
    assert_true(checked > 500);
}

static void test_rbac_table(void **state)
{
    const api_message *m = api_message_lookup("VM.get_power_state");
    assert_non_null(m);
    assert_string_equal(api_roles[m->min_role], "read-only");
    assert_string_equal(m->perm, "vm.get_power_state");
    m = api_message_lookup("VM.create");
    assert_string_equal(api_roles[m->min_role], "vm-admin");
    assert_true(m->async);
    m = api_message_lookup("pool.set_name_label");
    assert_string_equal(api_roles[m->min_role], "pool-operator");
    assert_false(api_message_lookup("session.login_with_password")->session);
    assert_int_equal(api_role_rank("pool-admin"), (int)api_nroles - 1);
    assert_int_equal(api_role_rank("read-only"), 0);
    for (size_t i = 0; i < api_nmessages; i++) {
        assert_true(api_messages[i].min_role >= 0 && (size_t)api_messages[i].min_role < api_nroles);
    }
}

static void test_error_catalogue(void **state)
{
    const api_error_def *d = api_error_lookup("HANDLE_INVALID");
    assert_non_null(d);
    assert_int_equal(d->nparams, 2);
    assert_string_equal(d->params[0], "class");
    d = api_error_lookup("MESSAGE_PARAMETER_COUNT_MISMATCH");
    assert_int_equal(d->nparams, 3);
    assert_null(api_error_lookup("NO_SUCH_ERROR"));
}

static void test_type_check(void **state)
{
    const api_message *m = api_message_lookup("VM.set_VCPUs_params");
    xerr *e = NULL;
    AUTO(xv) *ok = xv_new_struct();
    xv_struct_set(ok, "weight", xv_new_string("256"));
    AUTO(xv) *r = api_type_check(m->params[1].type, ok, "value", &e);
    assert_non_null(r);
    AUTO(xv) *bad = xv_new_array();
    assert_null(api_type_check(m->params[1].type, bad, "value", &e));
    assert_string_equal(e->code, "FIELD_TYPE_ERROR");
    xerr_free(e);
    const api_field *f = &api_classes[API_CLASS_VM].fields[API_F_VM_power_state];
    AUTO(xv) *ps = xv_new_string("rUnNiNg");
    AUTO(xv) *canon = api_type_check(f->type, ps, "power_state", &e);
    assert_string_equal(xv_str(canon), "Running");
    AUTO(xv) *i = xv_new_string("12x");
    assert_null(
        api_type_check(&*api_classes[API_CLASS_VM].fields[API_F_VM_domid].type, i, "d", &e));
    xerr_free(e);
}

static void test_typed_records(void **state)
{
    const api_class *c = &api_classes[API_CLASS_VM];
    AUTO(xv) *rec = xv_new_struct();
    xv_struct_set(rec, "name_label", xv_new_string("typed"));
    xv_struct_set(rec, "VCPUs_max", xv_new_int(4));
    api_rec_VM *vm = api_record_from_xv(c, rec);
    assert_string_equal(vm->name_label, "typed");
    assert_int_equal(vm->VCPUs_max, 4);
    assert_string_equal(vm->power_state, "Halted"); /* schema default */
    AUTO(xv) *back = api_record_to_xv(c, vm);
    assert_string_equal(xv_struct_get_str(back, "name_label"), "typed");
    assert_int_equal(xv_struct_len(back), c->nfields);
    api_record_free(c, vm);
}

static void test_schema_hash_pinned(void **state)
{
    /* Changing api-schema/ is deliberate: update tests/unit/schema.hash with it. */
    AUTOFREE char *want = NULL;
    assert_int_equal(read_file(SCHEMA_HASH_FILE, &want, NULL), 0);
    want[strcspn(want, "\n")] = '\0';
    if (strcmp(want, api_schema_hash) != 0)
        fprintf(stderr, "schema hash is %s; pinned %s\n", api_schema_hash, want);
    assert_string_equal(want, api_schema_hash);
}

int main(void)
{
    AUTOFREE char *text = NULL;
    size_t len = 0;
    if (read_file(MODEL_JSON, &text, &len) == 0)
        model = xv_from_json(text, len);
    else
        fprintf(stderr, "reference model %s not found: model checks skip\n", MODEL_JSON);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_match_model), cmocka_unit_test(test_messages_match_model),
        cmocka_unit_test(test_rbac_table),         cmocka_unit_test(test_error_catalogue),
        cmocka_unit_test(test_type_check),         cmocka_unit_test(test_typed_records),
        cmocka_unit_test(test_schema_hash_pinned),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    xv_free(model);
    return r;
}
