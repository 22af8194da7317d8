/* Unit tests for rpc/: exact wire bytes, round trips, decoder leniency, malformed input. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "mem.h"
#include "rpc.h"
#include "sbuf.h"
#include "xv.h"

/* ---- helpers ---- */

static int xml_call(const char *s, rpc_request *r)
{
    return rpc_xml_decode_call(s, strlen(s), r);
}

static int json_call(const char *s, rpc_request *r)
{
    return rpc_json_decode_call(s, strlen(s), r);
}

/* A tree holding every kind, with awkward strings. */
static xv *sample_value(void)
{
    xv *s = xv_new_struct();
    xv_struct_set(s, "str", xv_new_string("plain"));
    xv_struct_set(s, "esc", xv_new_string("<a href=\"x\">&amp;</a> 'q' \\ \t\n\r end"));
    xv_struct_set(s, "spaces", xv_new_string("  padded  "));
    xv_struct_set(s, "empty", xv_new_string(""));
    xv_struct_set(s, "utf8", xv_new_string("h\xc3\xa9llo \xe2\x80\xa6 \xf0\x9f\x98\x80"));
    xv_struct_set(s, "int", xv_new_int(-9223372036854775807LL - 1));
    xv_struct_set(s, "intmax", xv_new_int(9223372036854775807LL));
    xv *i4 = xv_new_int(14);
    i4->flags |= XV_F_I4;
    xv_struct_set(s, "i4", i4);
    xv_struct_set(s, "float", xv_new_float(-3.25));
    xv_struct_set(s, "big float", xv_new_float(1e300));
    xv_struct_set(s, "true", xv_new_bool(true));
    xv_struct_set(s, "false", xv_new_bool(false));
    xv_struct_set(s, "when", xv_new_datetime("20240131T09:05:00Z"));
    xv_struct_set(s, "nil", xv_new_nil());
    xv *a = xv_new_array();
    xv_array_append(a, xv_new_string("OpaqueRef:NULL"));
    xv_array_append(a, xv_new_array());
    xv_array_append(a, xv_new_struct());
    xv *inner = xv_new_struct();
    xv_struct_set(inner, "<k&y>", xv_new_int(7));
    xv_array_append(a, inner);
    xv_struct_set(s, "arr", a);
    return s;
}

/* What an xv looks like after an XML-RPC trip: xapi sends int64 as decimal strings and
 * void as the empty string; only <i4>-flagged ints stay ints. */
static xv *xml_expected(const xv *v)
{
    xv *c;
    switch (v->kind) {
    case XV_INT:
        if (v->flags & XV_F_I4)
            return xv_new_int(v->u.i);
        return xv_new_string_take(xasprintf("%lld", (long long)v->u.i));
    case XV_NIL:
        return xv_new_string("");
    case XV_STRING:
        /* The parser normalises nothing we send: \r goes out as &#13;. */
        return xv_copy(v);
    case XV_ARRAY:
        c = xv_new_array();
        for (size_t i = 0; i < v->u.arr.n; i++)
            xv_array_append(c, xml_expected(v->u.arr.items[i]));
        return c;
    case XV_STRUCT:
        c = xv_new_struct();
        for (size_t i = 0; i < v->u.st.n; i++)
            xv_struct_set(c, v->u.st.keys[i], xml_expected(v->u.st.vals[i]));
        return c;
    default:
        return xv_copy(v);
    }
}

/* After a JSON trip datetimes are strings. */
static xv *json_expected(const xv *v)
{
    xv *c;
    switch (v->kind) {
    case XV_DATETIME:
        return xv_new_string(v->u.str.s);
    case XV_ARRAY:
        c = xv_new_array();
        for (size_t i = 0; i < v->u.arr.n; i++)
            xv_array_append(c, json_expected(v->u.arr.items[i]));
        return c;
    case XV_STRUCT:
        c = xv_new_struct();
        for (size_t i = 0; i < v->u.st.n; i++)
            xv_struct_set(c, v->u.st.keys[i], json_expected(v->u.st.vals[i]));
        return c;
    default:
        return xv_copy(v);
    }
}

static void assert_xerr_equal(const xerr *a, const xerr *b)
{
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(a->code, b->code);
    assert_int_equal(a->nparams, b->nparams);
    for (size_t i = 0; i < a->nparams; i++)
        assert_string_equal(a->params[i], b->params[i]);
}

/* ---- exact bytes (xenapi.md section 1 examples) ---- */

#define OK_HEAD                                                                                    \
    "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</"  \
    "name><value>"
#define OK_TAIL "</struct></value></param></params></methodResponse>"

static void test_xml_exact_examples(void **state)
{
    size_t len;
    AUTO(xv) *p = xv_new_array();
    xv_array_append(p, xv_new_string("root"));
    xv_array_append(p, xv_new_string("s3cret"));
    AUTOFREE char *call = rpc_xml_encode_call("session.login_with_password", p, &len);
    assert_string_equal(call, "<?xml version=\"1.0\"?><methodCall><methodName>session.login_with_"
                              "password</methodName><params><param><value>root</value></"
                              "param><param><value>s3cret</value></param></params></methodCall>");
    assert_int_equal(len, strlen(call));

    AUTO(xv) *ref = xv_new_string("OpaqueRef:2f6a1c0e-8d3b-4b51-9f0a-7c1e5d9b2a11");
    AUTOFREE char *ok = rpc_xml_encode_success(ref, &len);
    assert_string_equal(ok, OK_HEAD "Success</value></member><member><name>Value</name><value>"
                                    "OpaqueRef:2f6a1c0e-8d3b-4b51-9f0a-7c1e5d9b2a11</value></"
                                    "member>" OK_TAIL);
    assert_int_equal(len, strlen(ok));

    AUTO(xerr) *e =
        xerr_new("VM_BAD_POWER_STATE", "OpaqueRef:8c1d\xe2\x80\xa6", "halted", "running");
    AUTOFREE char *fail = rpc_xml_encode_failure(e, NULL);
    assert_string_equal(fail,
                        OK_HEAD "Failure</value></member><member><name>ErrorDescription</name>"
                                "<value><array><data><value>VM_BAD_POWER_STATE</value><value>"
                                "OpaqueRef:8c1d\xe2\x80\xa6</value><value>halted</value><value>"
                                "running</value></data></array></value></member>" OK_TAIL);

    AUTO(xv) *nil = xv_new_nil();
    AUTOFREE char *void_ok = rpc_xml_encode_success(nil, NULL);
    assert_non_null(strstr(void_ok, "<name>Value</name><value></value></member>"));
    AUTOFREE char *null_ok = rpc_xml_encode_success(NULL, NULL);
    assert_string_equal(void_ok, null_ok);
}

static void test_xml_decode_examples(void **state)
{
    /* As printed in the reference, with whitespace between elements. */
    const char *login =
        "<methodCall><methodName>session.login_with_password</methodName><params>\n"
        " <param><value><string>root</string></value></param><param><value><string>s3cret"
        "</string></value></param>\n"
        " <param><value><string>2.21</string></value></param><param><value><string>myctl/0.1"
        "</string></value></param>\n</params></methodCall>\n";
    RPC_REQUEST_AUTO rpc_request r = {0};
    assert_int_equal(xml_call(login, &r), 0);
    assert_string_equal(r.method, "session.login_with_password");
    assert_int_equal(r.proto, RPC_XML);
    assert_null(r.id);
    assert_int_equal(xv_array_len(r.params), 4);
    assert_string_equal(xv_str(xv_array_get(r.params, 3)), "myctl/0.1");

    const char *limits =
        "<methodCall><methodName>VM.set_memory_limits</methodName><params>\n"
        " <param><value>OpaqueRef:2f6a</value></param><param><value>OpaqueRef:8c1d</value>"
        "</param>\n <param><value>536870912</value></param><param><value>2147483648</value>"
        "</param>\n <param><value>1073741824</value></param><param><value>2147483648</value>"
        "</param></params></methodCall>";
    rpc_request_clear(&r);
    assert_int_equal(xml_call(limits, &r), 0);
    assert_int_equal(xv_array_len(r.params), 6);
    assert_int_equal(xv_array_get(r.params, 2)->kind, XV_STRING);
    assert_string_equal(xv_str(xv_array_get(r.params, 2)), "536870912");

    const char *ok = "<methodResponse><params><param><value><struct>\n"
                     " <member><name>Status</name><value>Success</value></member>\n"
                     " <member><name>Value</name><value>OpaqueRef:2f6a</value></member>\n"
                     "</struct></value></param></params></methodResponse>";
    AUTO(xv) *v = NULL;
    AUTO(xerr) *e = NULL;
    assert_int_equal(rpc_xml_decode_response(ok, strlen(ok), &v, &e), 0);
    assert_null(e);
    assert_string_equal(xv_str(v), "OpaqueRef:2f6a");

    const char *fail =
        "<methodResponse><params><param><value><struct><member><name>Status</name><value>"
        "Failure</value></member>\n <member><name>ErrorDescription</name><value><array><data>"
        "<value>VM_BAD_POWER_STATE</value>\n <value>OpaqueRef:8c1d</value><value>halted</value>"
        "<value>running</value></data></array></value></member>\n</struct></value></param>"
        "</params></methodResponse>";
    xv_free(TAKE_PTR(v));
    assert_int_equal(rpc_xml_decode_response(fail, strlen(fail), &v, &e), 0);
    assert_null(v);
    AUTO(xerr) *want = xerr_new("VM_BAD_POWER_STATE", "OpaqueRef:8c1d", "halted", "running");
    assert_xerr_equal(e, want);
}

static void test_xml_value_encoding(void **state)
{
    struct {
        xv *v;
        const char *want;
    } cases[] = {
        {xv_new_string("a<b>&\"c\"\r"), "<value>a&lt;b&gt;&amp;&quot;c&quot;&#13;</value>"},
        {xv_new_string(""), "<value></value>"},
        {xv_new_int(1234), "<value>1234</value>"},
        {xv_new_int(-5), "<value>-5</value>"},
        {xv_new_float(0.5), "<value><double>0.5</double></value>"},
        {xv_new_float(0.1), "<value><double>0.1</double></value>"},
        {xv_new_bool(true), "<value><boolean>1</boolean></value>"},
        {xv_new_bool(false), "<value><boolean>0</boolean></value>"},
        {xv_new_datetime("20240131T09:05:00Z"),
         "<value><dateTime.iso8601>20240131T09:05:00Z</dateTime.iso8601></value>"},
        {xv_new_nil(), "<value></value>"},
        {xv_new_array(), "<value><array><data></data></array></value>"},
        {xv_new_struct(), "<value><struct></struct></value>"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        AUTOFREE char *t = rpc_xml_encode_value(cases[i].v);
        assert_string_equal(t, cases[i].want);
        xv_free(cases[i].v);
    }
    AUTO(xv) *i4 = xv_new_int(14);
    i4->flags |= XV_F_I4;
    AUTOFREE char *t = rpc_xml_encode_value(i4);
    assert_string_equal(t, "<value><i4>14</i4></value>");

    AUTO(xv) *s = xv_new_struct();
    xv *a = xv_new_array();
    xv_array_append(a, xv_new_string("x"));
    xv_array_append(a, xv_new_int(2));
    xv_struct_set(s, "k&", a);
    AUTOFREE char *st = rpc_xml_encode_value(s);
    assert_string_equal(st, "<value><struct><member><name>k&amp;</name><value><array><data>"
                            "<value>x</value><value>2</value></data></array></value></member>"
                            "</struct></value>");
}

static void test_json_exact_examples(void **state)
{
    size_t len;
    AUTO(xv) *p = xv_new_array();
    xv_array_append(p, xv_new_string("OpaqueRef:2f6a\xe2\x80\xa6"));
    xv_array_append(p, xv_new_string("OpaqueRef:8c1d\xe2\x80\xa6"));
    AUTOFREE char *call = rpc_json_encode_call(RPC_JSON_V2, "VM.get_power_state", p, 7, &len);
    assert_string_equal(call, "{\"jsonrpc\":\"2.0\",\"method\":\"VM.get_power_state\",\"params\":"
                              "[\"OpaqueRef:2f6a\xe2\x80\xa6\",\"OpaqueRef:8c1d\xe2\x80\xa6\"],"
                              "\"id\":7}");
    assert_int_equal(len, strlen(call));
    AUTOFREE char *call1 =
        rpc_json_encode_call(RPC_JSON_V1, "VM.get_memory_static_max", p, 3, NULL);
    assert_string_equal(call1, "{\"method\":\"VM.get_memory_static_max\",\"params\":"
                               "[\"OpaqueRef:2f6a\xe2\x80\xa6\",\"OpaqueRef:8c1d\xe2\x80\xa6\"],"
                               "\"id\":3}");

    AUTO(xv) *id7 = xv_new_int(7);
    AUTO(xv) *running = xv_new_string("Running");
    AUTOFREE char *ok2 = rpc_json_encode_success(RPC_JSON_V2, id7, running, &len);
    assert_string_equal(ok2, "{\"jsonrpc\":\"2.0\",\"result\":\"Running\",\"id\":7}");
    assert_int_equal(len, strlen(ok2));

    AUTO(xv) *id8 = xv_new_int(8);
    AUTO(xerr) *e = xerr_new("SESSION_INVALID", "OpaqueRef:dead\xe2\x80\xa6");
    AUTOFREE char *fail2 = rpc_json_encode_failure(RPC_JSON_V2, id8, e, NULL);
    assert_string_equal(fail2, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":"
                               "\"SESSION_INVALID\",\"data\":[\"OpaqueRef:dead\xe2\x80\xa6\"]},"
                               "\"id\":8}");

    AUTO(xv) *ida1 = xv_new_string("a1");
    AUTO(xv) *big = xv_new_int(2147483648LL);
    AUTOFREE char *ok1 = rpc_json_encode_success(RPC_JSON_V1, ida1, big, NULL);
    assert_string_equal(ok1, "{\"result\":2147483648,\"error\":null,\"id\":\"a1\"}");
    AUTOFREE char *fail1 = rpc_json_encode_failure(RPC_JSON_V1, ida1, e, NULL);
    assert_string_equal(fail1, "{\"result\":null,\"error\":[\"SESSION_INVALID\","
                               "\"OpaqueRef:dead\xe2\x80\xa6\"],\"id\":\"a1\"}");
    AUTO(xerr) *bare = xerr_new("SESSION_NOT_REGISTERED");
    AUTOFREE char *fail2b = rpc_json_encode_failure(RPC_JSON_V2, NULL, bare, NULL);
    assert_string_equal(fail2b, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":"
                                "\"SESSION_NOT_REGISTERED\",\"data\":[]},\"id\":null}");

    RPC_REQUEST_AUTO rpc_request r = {0};
    assert_int_equal(json_call("{\"method\":\"VM.get_memory_static_max\",\"params\":["
                               "\"OpaqueRef:2f6a\",\"OpaqueRef:8c1d\"],\"id\":\"a1\"}",
                               &r),
                     0);
    assert_int_equal(r.proto, RPC_JSON_V1);
    assert_string_equal(r.method, "VM.get_memory_static_max");
    assert_int_equal(r.id->kind, XV_STRING);
    assert_string_equal(xv_str(r.id), "a1");
    assert_int_equal(xv_array_len(r.params), 2);
    /* The id is echoed exactly. */
    AUTOFREE char *echo = rpc_json_encode_success(r.proto, r.id, big, NULL);
    assert_string_equal(echo, ok1);

    rpc_request_clear(&r);
    assert_int_equal(json_call("{\"jsonrpc\":\"2.0\",\"method\":\"VM.get_power_state\","
                               "\"params\":[\"a\",\"b\"],\"id\":7}",
                               &r),
                     0);
    assert_int_equal(r.proto, RPC_JSON_V2);
    assert_int_equal(r.id->kind, XV_INT);
    assert_int_equal(r.id->u.i, 7);
}

/* ---- round trips ---- */

static void test_xml_roundtrip(void **state)
{
    AUTO(xv) *sample = sample_value();
    AUTO(xv) *params = xv_new_array();
    xv_array_append(params, xv_copy(sample));
    xv_array_append(params, xv_new_string("second"));
    xv_array_append(params, xv_new_nil());
    AUTO(xv) *want = xml_expected(params);

    size_t len;
    AUTOFREE char *call = rpc_xml_encode_call("VM.frob", params, &len);
    RPC_REQUEST_AUTO rpc_request r = {0};
    assert_int_equal(rpc_xml_decode_call(call, len, &r), 0);
    assert_string_equal(r.method, "VM.frob");
    assert_true(xv_equal(r.params, want));

    /* Each kind on its own as a response value. */
    for (size_t i = 0; i < xv_struct_len(sample); i++) {
        const xv *v = sample->u.st.vals[i];
        AUTOFREE char *resp = rpc_xml_encode_success(v, &len);
        AUTO(xv) *got = NULL;
        AUTO(xerr) *err = NULL;
        assert_int_equal(rpc_xml_decode_response(resp, len, &got, &err), 0);
        assert_null(err);
        AUTO(xv) *w = xml_expected(v);
        assert_true(xv_equal(got, w));

        AUTOFREE char *frag = rpc_xml_encode_value(v);
        AUTO(xv) *back = rpc_xml_decode_value(frag, strlen(frag));
        assert_true(xv_equal(back, w));
    }

    AUTO(xerr) *e = xerr_new("HANDLE_INVALID", "VM", "<&\">", "");
    AUTOFREE char *fail = rpc_xml_encode_failure(e, &len);
    AUTO(xv) *got = NULL;
    AUTO(xerr) *gerr = NULL;
    assert_int_equal(rpc_xml_decode_response(fail, len, &got, &gerr), 0);
    assert_null(got);
    assert_xerr_equal(gerr, e);

    /* No params at all. */
    AUTOFREE char *none = rpc_xml_encode_call("system.listMethods", NULL, &len);
    rpc_request_clear(&r);
    assert_int_equal(rpc_xml_decode_call(none, len, &r), 0);
    assert_int_equal(xv_array_len(r.params), 0);
}

static void test_json_roundtrip(void **state)
{
    AUTO(xv) *sample = sample_value();
    AUTO(xv) *params = xv_new_array();
    xv_array_append(params, xv_copy(sample));
    xv_array_append(params, xv_new_nil());
    AUTO(xv) *want = json_expected(params);
    rpc_proto protos[] = {RPC_JSON_V1, RPC_JSON_V2};

    for (size_t p = 0; p < ARRAY_SIZE(protos); p++) {
        size_t len;
        AUTOFREE char *call = rpc_json_encode_call(protos[p], "VM.frob", params, 42, &len);
        RPC_REQUEST_AUTO rpc_request r = {0};
        assert_int_equal(rpc_json_decode_call(call, len, &r), 0);
        assert_int_equal(r.proto, protos[p]);
        assert_string_equal(r.method, "VM.frob");
        assert_int_equal(r.id->u.i, 42);
        assert_true(xv_equal(r.params, want));

        for (size_t i = 0; i < xv_struct_len(sample); i++) {
            const xv *v = sample->u.st.vals[i];
            AUTOFREE char *resp = rpc_json_encode_success(protos[p], r.id, v, &len);
            AUTO(xv) *got = NULL;
            AUTO(xerr) *err = NULL;
            assert_int_equal(rpc_json_decode_response(resp, len, &got, &err), 0);
            assert_null(err);
            AUTO(xv) *w = json_expected(v);
            assert_true(xv_equal(got, w));
        }
        AUTO(xerr) *e = xerr_new("HANDLE_INVALID", "VM", "\"quoted\"\n", "");
        AUTO(xerr) *e0 = xerr_new("SESSION_INVALID");
        const xerr *errs[] = {e, e0};
        for (size_t i = 0; i < ARRAY_SIZE(errs); i++) {
            AUTOFREE char *fail = rpc_json_encode_failure(protos[p], r.id, errs[i], &len);
            AUTO(xv) *got = NULL;
            AUTO(xerr) *gerr = NULL;
            assert_int_equal(rpc_json_decode_response(fail, len, &got, &gerr), 0);
            assert_null(got);
            assert_xerr_equal(gerr, errs[i]);
        }
    }
}

/* ---- leniency ---- */

static xv *xml_one(const char *value_xml)
{
    AUTOFREE char *call = xasprintf("<methodCall><methodName>m</methodName><params><param>%s"
                                    "</param></params></methodCall>",
                                    value_xml);
    RPC_REQUEST_AUTO rpc_request r = {0};
    if (xml_call(call, &r) < 0)
        return NULL;
    assert_int_equal(xv_array_len(r.params), 1);
    return xv_copy(xv_array_get(r.params, 0));
}

static void expect_str(const char *value_xml, const char *want)
{
    AUTO(xv) *v = xml_one(value_xml);
    if (!v)
        fail_msg("rejected: %s", value_xml);
    assert_int_equal(v->kind, XV_STRING);
    assert_string_equal(v->u.str.s, want);
}

static void expect_int(const char *value_xml, int64_t want)
{
    AUTO(xv) *v = xml_one(value_xml);
    if (!v)
        fail_msg("rejected: %s", value_xml);
    assert_int_equal(v->kind, XV_INT);
    assert_true(v->u.i == want);
}

static void test_xml_leniency(void **state)
{
    expect_str("<value>abc</value>", "abc");
    expect_str("<value/>", "");
    expect_str("<value></value>", "");
    expect_str("<value>  two  words </value>", "  two  words ");
    expect_str("<value>   </value>", "   ");
    expect_str("<value><string/></value>", "");
    expect_str("<value> <string> x </string> </value>", " x ");
    expect_str("<value>a<!-- c -->b</value>", "ab");
    expect_str("<value><![CDATA[<raw & stuff>]]></value>", "<raw & stuff>");
    expect_str("<value>&lt;&amp;&gt;&quot;&apos;&#65;&#x42;&#13;</value>", "<&>\"'AB\r");
    expect_str("<value><base64>aGVsbG8=</base64></value>", "hello");
    expect_str("<value><base64>aGVs\n bG8</base64></value>", "hello");
    expect_str("<value><base64></base64></value>", "");
    expect_int("<value><i4>14</i4></value>", 14);
    expect_int("<value><int>-7</int></value>", -7);
    expect_int("<value><i8>9223372036854775807</i8></value>", INT64_MAX);
    expect_int("<value><i8>-9223372036854775808</i8></value>", INT64_MIN);
    expect_int("<value><i4> +42 </i4></value>", 42);

    AUTO(xv) *t = xml_one("<value><boolean>1</boolean></value>");
    assert_true(t->kind == XV_BOOL && t->u.b);
    AUTO(xv) *f = xml_one("<value><boolean>0</boolean></value>");
    assert_true(f->kind == XV_BOOL && !f->u.b);
    AUTO(xv) *d = xml_one("<value><double>1.5</double></value>");
    assert_true(d->kind == XV_FLOAT && d->u.f == 1.5);
    AUTO(xv) *d2 = xml_one("<value><double>-2e3</double></value>");
    assert_true(d2->kind == XV_FLOAT && d2->u.f == -2000.0);
    AUTO(xv) *dt =
        xml_one("<value><dateTime.iso8601>20240131T09:05:00Z</dateTime.iso8601></value>");
    assert_int_equal(dt->kind, XV_DATETIME);
    assert_string_equal(dt->u.str.s, "20240131T09:05:00Z");
    AUTO(xv) *nil = xml_one("<value><nil/></value>");
    assert_int_equal(nil->kind, XV_NIL);

    /* Duplicate struct member: last wins, in the first one's place. */
    AUTO(xv) *st = xml_one("<value><struct><member><name>a</name><value>1</value></member>"
                           "<member><value>2</value><name>b</name></member>"
                           "<member><name>a</name><value>3</value></member></struct></value>");
    assert_int_equal(xv_struct_len(st), 2);
    assert_string_equal(st->u.st.keys[0], "a");
    assert_string_equal(xv_struct_get_str(st, "a"), "3");

    /* Pretty-printed, with an XML declaration, comments and a PI. */
    const char *pretty = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi -->\n<methodCall>\n"
                         "  <methodName> VM.get_all </methodName>\n  <params>\n    <param>\n"
                         "      <value>\n        <array>\n          <data>\n"
                         "            <value><i4>1</i4></value>\n            <?pi x?>\n"
                         "          </data>\n        </array>\n      </value>\n    </param>\n"
                         "  </params>\n</methodCall>\n";
    RPC_REQUEST_AUTO rpc_request r = {0};
    assert_int_equal(xml_call(pretty, &r), 0);
    assert_string_equal(r.method, "VM.get_all");
    assert_int_equal(xv_array_len(xv_array_get(r.params, 0)), 1);

    /* No <params>, and an empty <params/>. */
    rpc_request_clear(&r);
    assert_int_equal(xml_call("<methodCall><methodName>m</methodName></methodCall>", &r), 0);
    assert_non_null(r.params);
    assert_int_equal(r.params->kind, XV_ARRAY);
    assert_int_equal(xv_array_len(r.params), 0);
    rpc_request_clear(&r);
    assert_int_equal(xml_call("<methodCall><methodName>m</methodName><params/></methodCall>", &r),
                     0);
    assert_int_equal(xv_array_len(r.params), 0);

    /* A declared encoding is converted to UTF-8. */
    rpc_request_clear(&r);
    assert_int_equal(xml_call("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><methodCall>"
                              "<methodName>m</methodName><params><param><value>caf\xe9</value>"
                              "</param></params></methodCall>",
                              &r),
                     0);
    assert_string_equal(xv_str(xv_array_get(r.params, 0)), "caf\xc3\xa9");

    /* A fault response from a generic XML-RPC server. */
    const char *fault = "<methodResponse><fault><value><struct><member><name>faultCode</name>"
                        "<value><int>4</int></value></member><member><name>faultString</name>"
                        "<value>Too many params</value></member></struct></value></fault>"
                        "</methodResponse>";
    AUTO(xv) *v = NULL;
    AUTO(xerr) *e = NULL;
    assert_int_equal(rpc_xml_decode_response(fault, strlen(fault), &v, &e), 0);
    AUTO(xerr) *want = xerr_new("XMLRPC_FAULT", "4", "Too many params");
    assert_xerr_equal(e, want);
    assert_null(v);

    AUTO(xv) *frag = rpc_xml_decode_value("<?xml version=\"1.0\"?>\n<value>x</value>\n", 38);
    assert_non_null(frag);
    assert_string_equal(xv_str(frag), "x");
}

static void test_json_leniency(void **state)
{
    RPC_REQUEST_AUTO rpc_request r = {0};
    /* v2 params may be absent or null. */
    assert_int_equal(json_call("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":1}", &r), 0);
    assert_int_equal(r.params->kind, XV_ARRAY);
    assert_int_equal(xv_array_len(r.params), 0);
    rpc_request_clear(&r);
    assert_int_equal(
        json_call("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":null,\"id\":1}", &r), 0);
    assert_int_equal(xv_array_len(r.params), 0);
    rpc_request_clear(&r);
    /* Whitespace, key order, unknown keys. */
    assert_int_equal(
        json_call(" \n{ \"id\" : -3 , \"x\":{}, \"params\" : [ 1 , 2.5 , true , null , "
                  "\"s\" , { \"a\" : [ ] } , 9223372036854775807 , "
                  "-9223372036854775808 ] , \"method\" : \"m\" }\n ",
                  &r),
        0);
    assert_int_equal(r.id->u.i, -3);
    const xv *p = r.params;
    assert_int_equal(xv_array_len(p), 8);
    assert_true(xv_array_get(p, 0)->kind == XV_INT && xv_array_get(p, 0)->u.i == 1);
    assert_true(xv_array_get(p, 1)->kind == XV_FLOAT && xv_array_get(p, 1)->u.f == 2.5);
    assert_true(xv_array_get(p, 2)->kind == XV_BOOL && xv_array_get(p, 2)->u.b);
    assert_true(xv_array_get(p, 3)->kind == XV_NIL);
    assert_string_equal(xv_str(xv_array_get(p, 4)), "s");
    assert_int_equal(xv_array_get(p, 5)->kind, XV_STRUCT);
    assert_true(xv_array_get(p, 6)->u.i == INT64_MAX);
    assert_true(xv_array_get(p, 7)->u.i == INT64_MIN);
    rpc_request_clear(&r);
    /* Duplicate keys: last wins. Escapes decode. Non-UTF-8 bytes pass through. */
    assert_int_equal(json_call("{\"method\":\"m\",\"id\":1,\"params\":[{\"a\":1,\"a\":2},"
                               "\"\\u00e9\\n\\\"\",\"\xff\xfe\"]}",
                               &r),
                     0);
    assert_int_equal(xv_struct_len(xv_array_get(r.params, 0)), 1);
    assert_int_equal(xv_struct_get(xv_array_get(r.params, 0), "a")->u.i, 2);
    assert_string_equal(xv_str(xv_array_get(r.params, 1)), "\xc3\xa9\n\"");
    assert_string_equal(xv_str(xv_array_get(r.params, 2)), "\xff\xfe");

    AUTO(xv) *v = NULL;
    AUTO(xerr) *e = NULL;
    const char *null_result = "{\"jsonrpc\":\"2.0\",\"result\":null,\"id\":1}";
    assert_int_equal(rpc_json_decode_response(null_result, strlen(null_result), &v, &e), 0);
    assert_int_equal(v->kind, XV_NIL);
    assert_null(e);
    xv_free(TAKE_PTR(v));
    const char *v2_nodata =
        "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"X\"},\"id\":1}";
    assert_int_equal(rpc_json_decode_response(v2_nodata, strlen(v2_nodata), &v, &e), 0);
    assert_string_equal(e->code, "X");
    assert_int_equal(e->nparams, 0);
}

/* ---- malformed input ---- */

/* libxml2 must not print anything, whatever we feed it. */
static int stderr_saved = -1;
static FILE *stderr_tmp;

static void stderr_capture(void)
{
    fflush(stderr);
    stderr_tmp = tmpfile();
    assert_non_null(stderr_tmp);
    stderr_saved = dup(2);
    dup2(fileno(stderr_tmp), 2);
}

static long stderr_restore(void)
{
    fflush(stderr);
    dup2(stderr_saved, 2);
    close(stderr_saved);
    struct stat st;
    fstat(fileno(stderr_tmp), &st);
    fclose(stderr_tmp);
    return (long)st.st_size;
}

static char *nested(const char *open, const char *close, const char *leaf, int n)
{
    sbuf b = SBUF_INIT;
    for (int i = 0; i < n; i++)
        sbuf_puts(&b, open);
    sbuf_puts(&b, leaf);
    for (int i = 0; i < n; i++)
        sbuf_puts(&b, close);
    return sbuf_steal(&b, NULL);
}

static void test_xml_malformed(void **state)
{
    static const char *const bad_calls[] = {
        "",
        " ",
        "<",
        "<methodCall>",
        "<methodCall><methodName>m</methodName><params><param><value>x</value></param>",
        "<methodCall><methodName>m</methodName></methodCall><extra/>",
        "<methodResponse><params/></methodResponse>",
        "<methodcall><methodName>m</methodName></methodcall>",
        "<methodCall></methodCall>",
        "<methodCall><methodName>a</methodName><methodName>b</methodName></methodCall>",
        "<methodCall><methodName><b>m</b></methodName></methodCall>",
        "<methodCall><methodName>m</methodName>junk<params/></methodCall>",
        "<methodCall><methodName>m</methodName><params/><params/></methodCall>",
        "<methodCall><methodName>m</methodName><params><value>x</value></params></methodCall>",
        "<methodCall><methodName>m</methodName><params><param></param></params></methodCall>",
        "<methodCall><methodName>m</methodName><params><param><value/><value/></param></params>"
        "</methodCall>",
        "<methodCall><methodName>m</methodName><params>text<param><value/></param></params>"
        "</methodCall>",
        "<methodCall><methodName>m</methodName><unknown/></methodCall>",
        /* DTDs and entities in every flavour. */
        "<!DOCTYPE methodCall><methodCall><methodName>m</methodName></methodCall>",
        "<!DOCTYPE m [<!ENTITY e \"x\">]><methodCall><methodName>&e;</methodName></methodCall>",
        "<?xml version=\"1.0\"?><!DOCTYPE m [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>"
        "<methodCall><methodName>&xxe;</methodName></methodCall>",
        "<!DOCTYPE m SYSTEM \"http://example.invalid/x.dtd\"><methodCall><methodName>m"
        "</methodName></methodCall>",
        "<!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">"
        "<!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]><methodCall><methodName>&c;&c;"
        "</methodName></methodCall>",
        "<methodCall><methodName>&undefined;</methodName></methodCall>",
        /* Not UTF-8 although it says so (or says nothing). */
        "<methodCall><methodName>m\xff\xfe</methodName></methodCall>",
        "<methodCall><methodName>m\xc3</methodName></methodCall>",
        "\x00\x01\x02garbage",
        "\x89PNG\r\n\x1a\n",
    };
    stderr_capture();
    for (size_t i = 0; i < ARRAY_SIZE(bad_calls); i++) {
        RPC_REQUEST_AUTO rpc_request r = {0};
        if (xml_call(bad_calls[i], &r) != -EINVAL) {
            stderr_restore();
            fail_msg("accepted call %zu: %s", i, bad_calls[i]);
        }
        assert_null(r.method);
    }
    /* A NUL byte inside the body. */
    RPC_REQUEST_AUTO rpc_request r = {0};
    const char nul[] = "<methodCall><methodName>m\0x</methodName></methodCall>";
    assert_int_equal(rpc_xml_decode_call(nul, sizeof(nul) - 1, &r), -EINVAL);
    assert_int_equal(rpc_xml_decode_call(NULL, 0, &r), -EINVAL);

    static const char *const bad_values[] = {
        "<value><i4>12a</i4></value>",
        "<value><i4></i4></value>",
        "<value><i4>-</i4></value>",
        "<value><int>1 2</int></value>",
        "<value><i8>9223372036854775808</i8></value>",
        "<value><i8>-9223372036854775809</i8></value>",
        "<value><i4>99999999999999999999999999</i4></value>",
        "<value><i4>0x10</i4></value>",
        "<value><boolean>true</boolean></value>",
        "<value><boolean>2</boolean></value>",
        "<value><boolean> 1</boolean></value>",
        "<value><boolean/></value>",
        "<value><double>abc</double></value>",
        "<value><double></double></value>",
        "<value><double>1.5x</double></value>",
        "<value><base64>!!!!</base64></value>",
        "<value><base64>AA==</base64></value>", /* a NUL byte */
        "<value><base64>QUJD=QUJD</base64></value>",
        "<value><base64>Q</base64></value>",
        "<value><nil>x</nil></value>",
        "<value><foo>1</foo></value>",
        "<value>text<string>x</string></value>",
        "<value><string>a</string><string>b</string></value>",
        "<value><string><b>x</b></string></value>",
        "<value><array></array></value>",
        "<value><array><data><i4>1</i4></data></array></value>",
        "<value><array><data/><data/></array></value>",
        "<value><array><data>x<value/></data></array></value>",
        "<value><struct><member><value>1</value></member></struct></value>",
        "<value><struct><member><name>a</name></member></struct></value>",
        "<value><struct><member><name>a</name><value/><value/></member></struct></value>",
        "<value><struct><value/></struct></value>",
        "<value><struct><member><name><b/></name><value/></member></struct></value>",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad_values); i++) {
        AUTO(xv) *v = xml_one(bad_values[i]);
        if (v) {
            stderr_restore();
            fail_msg("accepted value %zu: %s", i, bad_values[i]);
        }
    }

    static const char *const bad_responses[] = {
        "<methodResponse/>",
        "<methodResponse><params></params></methodResponse>",
        "<methodResponse><params><param><value>x</value></param></params></methodResponse>",
        "<methodResponse><params><param><value><struct/></value></param></params>"
        "</methodResponse>",
        "<methodResponse><params><param><value><struct><member><name>Status</name><value>"
        "Success</value></member></struct></value></param></params></methodResponse>",
        "<methodResponse><params><param><value><struct><member><name>Status</name><value>"
        "Weird</value></member><member><name>Value</name><value/></member></struct></value>"
        "</param></params></methodResponse>",
        "<methodResponse><params><param><value><struct><member><name>Status</name><value>"
        "Failure</value></member><member><name>ErrorDescription</name><value><array><data>"
        "</data></array></value></member></struct></value></param></params></methodResponse>",
        "<methodResponse><params><param><value><struct><member><name>Status</name><value>"
        "Failure</value></member><member><name>ErrorDescription</name><value><array><data>"
        "<value>X</value><value><i4>1</i4></value></data></array></value></member></struct>"
        "</value></param></params></methodResponse>",
        "<methodResponse><fault><value>x</value></fault></methodResponse>",
        "<methodResponse><params/><fault/></methodResponse>",
        "<methodCall><methodName>m</methodName></methodCall>",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad_responses); i++) {
        xv *v = (xv *)0x1;
        xerr *e = (xerr *)0x1;
        if (rpc_xml_decode_response(bad_responses[i], strlen(bad_responses[i]), &v, &e) !=
            -EINVAL) {
            stderr_restore();
            fail_msg("accepted response %zu: %s", i, bad_responses[i]);
        }
        /* Out-params untouched on failure. */
        assert_ptr_equal(v, (xv *)0x1);
        assert_ptr_equal(e, (xerr *)0x1);
    }
    assert_null(rpc_xml_decode_value("<string>x</string>", 18));
    assert_null(rpc_xml_decode_value("<value>", 7));
    long printed = stderr_restore();
    assert_int_equal(printed, 0);
}

static void test_xml_depth(void **state)
{
    static const struct {
        const char *open, *close;
    } kinds[] = {
        {"<value><array><data>", "</data></array></value>"},
        {"<value><struct><member><name>k</name>", "</member></struct></value>"},
    };
    for (size_t k = 0; k < ARRAY_SIZE(kinds); k++) {
        /* 64 containers around a scalar: fine; 65: refused. */
        AUTOFREE char *ok = nested(kinds[k].open, kinds[k].close, "<value>leaf</value>", 64);
        AUTO(xv) *v = xml_one(ok);
        assert_non_null(v);
        AUTOFREE char *deep = nested(kinds[k].open, kinds[k].close, "<value>leaf</value>", 65);
        AUTO(xv) *d = xml_one(deep);
        assert_null(d);
        /* Way beyond libxml2's own element limit. */
        AUTOFREE char *abyss = nested(kinds[k].open, kinds[k].close, "", 5000);
        AUTO(xv) *a = xml_one(abyss);
        assert_null(a);

        /* A response's Value may nest 64 deep too (the envelope does not count). */
        AUTO(xv) *back = rpc_xml_decode_value(ok, strlen(ok));
        assert_non_null(back);
        AUTOFREE char *resp = rpc_xml_encode_success(back, NULL);
        AUTO(xv) *got = NULL;
        AUTO(xerr) *e = NULL;
        assert_int_equal(rpc_xml_decode_response(resp, strlen(resp), &got, &e), 0);
        assert_true(xv_equal(got, back));
        assert_null(rpc_xml_decode_value(deep, strlen(deep)));
    }
}

static void test_json_malformed(void **state)
{
    static const char *const bad_calls[] = {
        "",
        "   ",
        "{",
        "{\"method\":\"m\",\"params\":[],\"id\":1",
        "{\"method\":\"m\",\"params\":[],\"id\":1} x",
        "{\"method\":\"m\",\"params\":[],\"id\":1}{}",
        "[]",
        "\"str\"",
        "42",
        "null",
        "{\"method\":\"m\",\"params\":[]}",
        "{\"method\":\"m\",\"params\":[],\"id\":null}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":null}",
        "{\"method\":\"m\",\"params\":[],\"id\":1.5}",
        "{\"method\":\"m\",\"params\":[],\"id\":true}",
        "{\"method\":\"m\",\"params\":[],\"id\":[1]}",
        "{\"method\":\"m\",\"params\":[],\"id\":{}}",
        "{\"method\":\"m\",\"params\":[],\"id\":99999999999999999999}",
        "{\"params\":[],\"id\":1}",
        "{\"method\":7,\"params\":[],\"id\":1}",
        "{\"method\":null,\"params\":[],\"id\":1}",
        "{\"method\":\"m\\u0000x\",\"params\":[],\"id\":1}",
        "{\"jsonrpc\":\"1.0\",\"method\":\"m\",\"params\":[],\"id\":1}",
        "{\"jsonrpc\":2.0,\"method\":\"m\",\"params\":[],\"id\":1}",
        "{\"method\":\"m\",\"id\":1}",
        "{\"method\":\"m\",\"params\":null,\"id\":1}",
        "{\"method\":\"m\",\"params\":{},\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":\"x\",\"id\":1}",
        "{\"method\":\"m\",\"params\":[9223372036854775808],\"id\":1}",
        "{\"method\":\"m\",\"params\":[18446744073709551616],\"id\":1}",
        "{\"method\":\"m\",\"params\":[-9223372036854775809],\"id\":1}",
        "{\"method\":\"m\",\"params\":[-123456789012345678901234567890],\"id\":1}",
        "{\"method\":\"m\",\"params\":[\"a\\u0000b\"],\"id\":1}",
        "{\"method\":\"m\",\"params\":[\"unterminated],\"id\":1}",
        "{\"method\":\"m\",\"params\":[tru],\"id\":1}",
        "\xff\xfe\x00{",
        "\x89PNG\r\n\x1a\n",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad_calls); i++) {
        RPC_REQUEST_AUTO rpc_request r = {0};
        if (json_call(bad_calls[i], &r) != -EINVAL)
            fail_msg("accepted %zu: %s", i, bad_calls[i]);
        assert_null(r.method);
    }
    RPC_REQUEST_AUTO rpc_request r = {0};
    const char nul[] = "{\"method\":\"m\",\"params\":[],\"id\":1}\0";
    assert_int_equal(rpc_json_decode_call(nul, sizeof(nul) - 1, &r), -EINVAL);
    assert_int_equal(rpc_json_decode_call(NULL, 0, &r), -EINVAL);
    /* INT64_MIN next to an overflowing literal inside a string is still fine... */
    assert_int_equal(json_call("{\"method\":\"m\",\"params\":[-9223372036854775808,"
                               "\"-99999999999999999999\"],\"id\":1}",
                               &r),
                     0);
    rpc_request_clear(&r);
    /* ...but not next to a real one. */
    assert_int_equal(json_call("{\"method\":\"m\",\"params\":[-9223372036854775808,"
                               "-99999999999999999999],\"id\":1}",
                               &r),
                     -EINVAL);

    static const char *const bad_responses[] = {
        "{}",
        "{\"id\":1}",
        "{\"error\":null,\"id\":1}",
        "{\"result\":1,\"error\":\"x\",\"id\":1}",
        "{\"result\":null,\"error\":[],\"id\":1}",
        "{\"result\":null,\"error\":[1],\"id\":1}",
        "{\"result\":null,\"error\":[\"X\",2],\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1},\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"X\",\"data\":\"p\"},\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"X\",\"data\":[1]},\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"result\":99999999999999999999,\"id\":1}",
        "[1]",
        "{\"result\":1",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad_responses); i++) {
        xv *v = (xv *)0x1;
        xerr *e = (xerr *)0x1;
        if (rpc_json_decode_response(bad_responses[i], strlen(bad_responses[i]), &v, &e) != -EINVAL)
            fail_msg("accepted response %zu: %s", i, bad_responses[i]);
        assert_ptr_equal(v, (xv *)0x1);
        assert_ptr_equal(e, (xerr *)0x1);
    }
}

static void test_json_depth(void **state)
{
    const char *opens[] = {"[", "{\"k\":"};
    const char *closes[] = {"]", "}"};
    for (size_t k = 0; k < 2; k++) {
        AUTOFREE char *v64 = nested(opens[k], closes[k], "1", 64);
        AUTOFREE char *v65 = nested(opens[k], closes[k], "1", 65);
        AUTOFREE char *ok = xasprintf("{\"method\":\"m\",\"params\":[%s],\"id\":1}", v64);
        AUTOFREE char *deep = xasprintf("{\"method\":\"m\",\"params\":[%s],\"id\":1}", v65);
        RPC_REQUEST_AUTO rpc_request r = {0};
        assert_int_equal(json_call(ok, &r), 0);
        assert_int_equal(json_call(deep, &r), -EINVAL);
        AUTOFREE char *abyss_v = nested(opens[k], closes[k], "1", 100000);
        AUTOFREE char *abyss = xasprintf("{\"method\":\"m\",\"params\":[%s],\"id\":1}", abyss_v);
        assert_int_equal(json_call(abyss, &r), -EINVAL);

        /* Results may nest 64 deep as well, and round-trip. */
        AUTOFREE char *resp =
            rpc_json_encode_success(RPC_JSON_V1, r.id, xv_array_get(r.params, 0), NULL);
        AUTO(xv) *got = NULL;
        AUTO(xerr) *e = NULL;
        assert_int_equal(rpc_json_decode_response(resp, strlen(resp), &got, &e), 0);
        assert_true(xv_equal(got, xv_array_get(r.params, 0)));
    }
}

/* ---- size ---- */

static void test_large_bodies(void **state)
{
    /* ~10 MB of small values. */
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, "<methodCall><methodName>m</methodName><params><param><value><array><data>");
    size_t n = 0;
    while (b.len < 10 * 1024 * 1024) {
        sbuf_printf(&b, "<value>v%zu</value><value><i4>%zu</i4></value>", n, n);
        n += 2;
    }
    sbuf_puts(&b, "</data></array></value></param></params></methodCall>");
    RPC_REQUEST_AUTO rpc_request r = {0};
    assert_int_equal(rpc_xml_decode_call(b.data, b.len, &r), 0);
    const xv *arr = xv_array_get(r.params, 0);
    assert_int_equal(xv_array_len(arr), n);
    assert_string_equal(xv_str(xv_array_get(arr, 0)), "v0");
    assert_int_equal(xv_array_get(arr, n - 1)->u.i, (int64_t)(n - 2));
    sbuf_release(&b);
    rpc_request_clear(&r);

    /* A big struct (a get_all_records map) with a duplicate at the end: last wins. */
    sbuf_puts(&b, "<methodCall><methodName>m</methodName><params><param><value><struct>");
    for (size_t i = 0; i < 100000; i++)
        sbuf_printf(&b, "<member><name>OpaqueRef:%08zx</name><value>%zu</value></member>", i, i);
    sbuf_puts(&b, "<member><name>OpaqueRef:00000007</name><value>last</value></member>");
    sbuf_puts(&b, "</struct></value></param></params></methodCall>");
    assert_int_equal(rpc_xml_decode_call(b.data, b.len, &r), 0);
    const xv *st = xv_array_get(r.params, 0);
    assert_int_equal(xv_struct_len(st), 100000);
    assert_string_equal(st->u.st.keys[7], "OpaqueRef:00000007");
    assert_string_equal(xv_str(st->u.st.vals[7]), "last");
    assert_string_equal(xv_str(st->u.st.vals[99999]), "99999");
    sbuf_release(&b);
    rpc_request_clear(&r);

    /* Over the value cap. */
    sbuf_puts(&b, "<methodCall><methodName>m</methodName><params><param><value><array><data>");
    for (size_t i = 0; i < RPC_MAX_VALUES; i++)
        sbuf_puts(&b, "<value/>");
    sbuf_puts(&b, "</data></array></value></param></params></methodCall>");
    assert_int_equal(rpc_xml_decode_call(b.data, b.len, &r), -EINVAL);
    sbuf_release(&b);

    /* The same for JSON. */
    sbuf_puts(&b, "{\"method\":\"m\",\"id\":1,\"params\":[[");
    n = 0;
    while (b.len < 10 * 1024 * 1024)
        sbuf_printf(&b, "%s\"small-value-%08zu\",%zu", n ? "," : "", n, n), n += 2;
    sbuf_puts(&b, "]]}");
    assert_int_equal(rpc_json_decode_call(b.data, b.len, &r), 0);
    assert_int_equal(xv_array_len(xv_array_get(r.params, 0)), n);
    sbuf_release(&b);
    rpc_request_clear(&r);
    sbuf_puts(&b, "{\"method\":\"m\",\"id\":1,\"params\":[[0");
    for (size_t i = 0; i < RPC_MAX_VALUES; i++)
        sbuf_puts(&b, ",0");
    sbuf_puts(&b, "]]}");
    assert_int_equal(rpc_json_decode_call(b.data, b.len, &r), -EINVAL);
    sbuf_release(&b);
}

/* ---- threads ---- */

static void *decode_loop(void *arg)
{
    AUTO(xv) *sample = sample_value();
    AUTOFREE char *call = rpc_xml_encode_call("m", sample, NULL);
    AUTOFREE char *jcall = rpc_json_encode_call(RPC_JSON_V2, "m", sample, 1, NULL);
    for (int i = 0; i < 300; i++) {
        RPC_REQUEST_AUTO rpc_request r = {0};
        if (rpc_xml_decode_call(call, strlen(call), &r) < 0)
            return (void *)1;
        rpc_request_clear(&r);
        if (rpc_json_decode_call(jcall, strlen(jcall), &r) < 0)
            return (void *)1;
        rpc_request_clear(&r);
        if (rpc_xml_decode_call("<!DOCTYPE x><methodCall/>", 25, &r) != -EINVAL)
            return (void *)1;
    }
    return NULL;
}

static void test_threads(void **state)
{
    pthread_t t[4];
    for (size_t i = 0; i < ARRAY_SIZE(t); i++)
        assert_int_equal(pthread_create(&t[i], NULL, decode_loop, NULL), 0);
    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        void *res;
        pthread_join(t[i], &res);
        assert_null(res);
    }
}

static void test_helpers(void **state)
{
    const char *carriable[] = {"", "ok\t\n\r", "h\xc3\xa9", "\xef\xbf\xbd", "\x7f"};
    const char *not_carriable[] = {"\x01", "a\037b",       "\xff",
                                   "\xc3", "\xef\xbf\xbe", "\xef\xbf\xbf"};
    for (size_t i = 0; i < ARRAY_SIZE(carriable); i++) {
        AUTO(xv) *v = xv_new_string(carriable[i]);
        assert_true(rpc_xml_encodable(v));
    }
    for (size_t i = 0; i < ARRAY_SIZE(not_carriable); i++) {
        AUTO(xv) *v = xv_new_string(not_carriable[i]);
        assert_false(rpc_xml_encodable(v));
        AUTO(xv) *s = xv_new_struct();
        xv_struct_set(s, not_carriable[i], xv_new_int(1));
        assert_false(rpc_xml_encodable(s));
    }
    /* A <base64> string may hold bytes XML cannot carry back. */
    AUTO(xv) *ctrl = xml_one("<value><base64>AQID</base64></value>");
    assert_non_null(ctrl);
    assert_false(rpc_xml_encodable(ctrl));

    AUTO(xv) *i5 = xv_new_int(5);
    AUTO(xv) *s5 = xv_new_string("5");
    AUTO(xv) *nil = xv_new_nil();
    AUTO(xv) *empty = xv_new_string("");
    AUTO(xv) *dt = xv_new_datetime("20240131T09:05:00Z");
    AUTO(xv) *dts = xv_new_string("20240131T09:05:00Z");
    AUTO(xv) *f = xv_new_float(0.1);
    AUTO(xv) *f2 = xv_new_float(0.10000000000000002);
    AUTO(xv) *inf = xv_new_float(INFINITY);
    AUTO(xv) *max = xv_new_float(1.7976931348623157e308);
    assert_true(rpc_wire_equal(RPC_XML, i5, s5));
    assert_false(rpc_wire_equal(RPC_XML, i5, i5));
    assert_true(rpc_wire_equal(RPC_JSON_V1, i5, i5));
    assert_false(rpc_wire_equal(RPC_JSON_V2, i5, s5));
    assert_true(rpc_wire_equal(RPC_XML, nil, empty));
    assert_true(rpc_wire_equal(RPC_XML, NULL, empty));
    assert_true(rpc_wire_equal(RPC_JSON_V2, nil, nil));
    assert_true(rpc_wire_equal(RPC_XML, dt, dt));
    assert_true(rpc_wire_equal(RPC_JSON_V1, dt, dts));
    assert_true(rpc_wire_equal(RPC_XML, f, f2));
    assert_true(rpc_wire_equal(RPC_JSON_V1, inf, nil));
    assert_false(rpc_wire_equal(RPC_JSON_V1, f, nil));
    assert_true(rpc_wire_equal(RPC_XML, max, inf));
    assert_false(rpc_wire_equal(RPC_XML, f, NULL));

    /* %.16g: DBL_MAX comes back infinite, which the comparison allows. */
    AUTOFREE char *frag = rpc_xml_encode_value(max);
    AUTO(xv) *back = rpc_xml_decode_value(frag, strlen(frag));
    assert_true(rpc_wire_equal(RPC_XML, max, back));
}

static void test_request_clear(void **state)
{
    rpc_request r = {0};
    rpc_request_clear(&r);
    rpc_request_clear(NULL);
    assert_int_equal(json_call("{\"method\":\"m\",\"params\":[1],\"id\":\"x\"}", &r), 0);
    rpc_request_clear(&r);
    assert_null(r.method);
    assert_null(r.params);
    assert_null(r.id);
    rpc_request_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xml_exact_examples),
        cmocka_unit_test(test_xml_decode_examples),
        cmocka_unit_test(test_xml_value_encoding),
        cmocka_unit_test(test_json_exact_examples),
        cmocka_unit_test(test_xml_roundtrip),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_xml_leniency),
        cmocka_unit_test(test_json_leniency),
        cmocka_unit_test(test_xml_malformed),
        cmocka_unit_test(test_xml_depth),
        cmocka_unit_test(test_json_malformed),
        cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_large_bodies),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_request_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
