/* libFuzzer target for the XML-RPC decoders: no crash, no leak, and whatever decodes must
 * re-encode into something that decodes back to the same values (JSON included). */
#include "mem.h"
#include "rpc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Not assert(): it must hold in release builds too. */
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

static void check_value_trip(const xv *v)
{
    size_t len;
    /* Through XML, when the strings can be carried at all (<base64> may yield any bytes). */
    if (rpc_xml_encodable(v)) {
        AUTOFREE char *frag = rpc_xml_encode_value(v);
        AUTO(xv) *back = rpc_xml_decode_value(frag, strlen(frag));
        CHECK(back && rpc_wire_equal(RPC_XML, v, back));

        AUTOFREE char *resp = rpc_xml_encode_success(v, &len);
        AUTO(xv) *got = NULL;
        AUTO(xerr) *err = NULL;
        CHECK(rpc_xml_decode_response(resp, len, &got, &err) == 0 && !err);
        CHECK(rpc_wire_equal(RPC_XML, v, got));
    }
    /* Through JSON v1 and v2. */
    AUTO(xv) *id = xv_new_string("fuzz");
    for (rpc_proto p = RPC_JSON_V1; p <= RPC_JSON_V2; p++) {
        AUTOFREE char *resp = rpc_json_encode_success(p, id, v, &len);
        AUTO(xv) *got = NULL;
        AUTO(xerr) *err = NULL;
        CHECK(rpc_json_decode_response(resp, len, &got, &err) == 0 && !err);
        CHECK(rpc_wire_equal(p, v, got));
    }
}

static void check_error_trip(const xerr *e)
{
    size_t len;
    AUTO(xv) *desc = xerr_to_xv(e);
    if (rpc_xml_encodable(desc)) {
        AUTOFREE char *resp = rpc_xml_encode_failure(e, &len);
        AUTO(xv) *got = NULL;
        AUTO(xerr) *err = NULL;
        CHECK(rpc_xml_decode_response(resp, len, &got, &err) == 0 && !got && err);
        AUTO(xv) *back = xerr_to_xv(err);
        CHECK(xv_equal(desc, back));
    }
    for (rpc_proto p = RPC_JSON_V1; p <= RPC_JSON_V2; p++) {
        AUTOFREE char *resp = rpc_json_encode_failure(p, NULL, e, &len);
        AUTO(xv) *got = NULL;
        AUTO(xerr) *err = NULL;
        CHECK(rpc_json_decode_response(resp, len, &got, &err) == 0 && !got && err);
        AUTO(xv) *back = xerr_to_xv(err);
        CHECK(xv_equal(desc, back));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;

    RPC_REQUEST_AUTO rpc_request r = {0};
    if (rpc_xml_decode_call(body, size, &r) == 0) {
        CHECK(r.method && r.params && r.params->kind == XV_ARRAY && !r.id && r.proto == RPC_XML);
        AUTO(xv) *name = xv_new_string(r.method);
        if (rpc_xml_encodable(r.params) && rpc_xml_encodable(name)) {
            size_t len;
            AUTOFREE char *again = rpc_xml_encode_call(r.method, r.params, &len);
            RPC_REQUEST_AUTO rpc_request r2 = {0};
            CHECK(rpc_xml_decode_call(again, len, &r2) == 0);
            CHECK(strcmp(r.method, r2.method) == 0);
            CHECK(rpc_wire_equal(RPC_XML, r.params, r2.params));
        }
        /* Each param alone: the params array itself would add a level of nesting. */
        for (size_t i = 0; i < xv_array_len(r.params); i++)
            check_value_trip(xv_array_get(r.params, i));
    }

    xv *v = NULL;
    xerr *e = NULL;
    if (rpc_xml_decode_response(body, size, &v, &e) == 0) {
        CHECK((v == NULL) != (e == NULL));
        if (v)
            check_value_trip(v);
        else
            check_error_trip(e);
        xv_free(v);
        xerr_free(e);
    }

    AUTO(xv) *frag = rpc_xml_decode_value(body, size);
    if (frag)
        check_value_trip(frag);
    return 0;
}
