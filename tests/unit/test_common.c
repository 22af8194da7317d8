/* Unit tests for common/: value tree, JSON round trip, errors, UTF-8, datetimes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "err.h"
#include "mem.h"
#include "util.h"
#include "xv.h"

static void test_xv_struct(void **state)
{
    AUTO(xv) *s = xv_new_struct();
    assert_true(xv_struct_add(s, "a", xv_new_int(1)));
    assert_false(xv_struct_add(s, "a", xv_new_int(2)));
    xv_struct_set(s, "a", xv_new_int(3));
    assert_int_equal(xv_struct_get(s, "a")->u.i, 3);
    xv_struct_set(s, "b", xv_new_string("x"));
    assert_string_equal(xv_struct_get_str(s, "b"), "x");
    assert_true(xv_struct_del(s, "a"));
    assert_null(xv_struct_get(s, "a"));
    assert_int_equal(xv_struct_len(s), 1);
}

static void test_xv_json_roundtrip(void **state)
{
    AUTO(xv) *s = xv_new_struct();
    xv *a = xv_new_array();
    xv_array_append(a, xv_new_string("q\"uo\\te\n"));
    xv_array_append(a, xv_new_int(-9223372036854775807LL - 1));
    xv_array_append(a, xv_new_float(0.5));
    xv_array_append(a, xv_new_bool(true));
    xv_array_append(a, xv_new_nil());
    xv_struct_set(s, "arr", a);
    xv_struct_set(s, "empty", xv_new_struct());
    AUTOFREE char *txt = xv_to_json(s);
    AUTO(xv) *back = xv_from_json(txt, strlen(txt));
    assert_non_null(back);
    assert_true(xv_equal(s, back));
    assert_null(xv_from_json("{\"a\":1} x", 9));
    assert_null(xv_from_json("[1,", 3));
}

static void test_xerr(void **state)
{
    AUTO(xerr) *e = xerr_new("HANDLE_INVALID", "VM", "OpaqueRef:x");
    assert_int_equal(e->nparams, 2);
    AUTO(xv) *v = xerr_to_xv(e);
    assert_int_equal(xv_array_len(v), 3);
    AUTO(xerr) *e2 = xerr_from_xv(v);
    assert_string_equal(e2->code, "HANDLE_INVALID");
    assert_string_equal(e2->params[1], "OpaqueRef:x");
}

static void test_utf8(void **state)
{
    assert_true(utf8_valid("h\xc3\xa9llo", 6));
    assert_false(utf8_valid("\xc3", 1));
    assert_false(utf8_valid("\xc0\xaf", 2));     /* overlong */
    assert_false(utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
    assert_false(utf8_valid("\xff", 1));
    assert_true(utf8_valid("\xf0\x9f\x98\x80", 4)); /* emoji */
}

static void test_datetime(void **state)
{
    char buf[20];
    xv_format_datetime(1706691900, buf);
    assert_string_equal(buf, "20240131T09:05:00Z");
    int64_t t;
    assert_true(xv_parse_datetime("20240131T09:05:00Z", &t));
    assert_int_equal(t, 1706691900);
    assert_true(xv_parse_datetime("2024-01-31T09:05:00Z", &t));
    assert_int_equal(t, 1706691900);
    assert_false(xv_parse_datetime("yesterday", &t));
    assert_false(xv_parse_datetime("20241331T09:05:00Z", &t));
}

static void test_uuid(void **state)
{
    char u[37];
    uuid_random(u);
    assert_true(uuid_valid(u));
    assert_false(uuid_valid("not-a-uuid"));
    AUTOFREE char *r = ref_new();
    assert_int_equal(strncmp(r, "OpaqueRef:", 10), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xv_struct), cmocka_unit_test(test_xv_json_roundtrip),
        cmocka_unit_test(test_xerr),      cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_datetime),  cmocka_unit_test(test_uuid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
