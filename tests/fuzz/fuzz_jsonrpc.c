/* libFuzzer target for the JSON-RPC decoders: no crash, no leak, and whatever decodes must
 * re-encode into something that decodes back to the same values (XML included). */
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

static void check_call(const rpc_request *r)
{
    size_t len;
    CHECK(r->method && r->params && r->params->kind == XV_ARRAY);
    CHECK(r->proto == RPC_JSON_V1 || r->proto == RPC_JSON_V2);
    CHECK(r->id && (r->id->kind == XV_INT || r->id->kind == XV_STRING));

    /* The call itself, when its id fits the client API (an integer). */
    if (r->id->kind == XV_INT) {
        AUTOFREE char *again =
            rpc_json_encode_call(r->proto, r->method, r->params, r->id->u.i, &len);
        RPC_REQUEST_AUTO rpc_request r2 = {0};
        CHECK(rpc_json_decode_call(again, len, &r2) == 0);
        CHECK(strcmp(r->method, r2.method) == 0 && r2.proto == r->proto);
        CHECK(xv_equal(r->id, r2.id));
        CHECK(rpc_wire_equal(r->proto, r->params, r2.params));
    }

    /* Responses echoing the id, each carrying one param as its value (the params array
     * itself would add a level of nesting). */
    for (size_t i = 0; i < xv_array_len(r->params); i++) {
        const xv *v = xv_array_get(r->params, i);
        AUTOFREE char *resp = rpc_json_encode_success(r->proto, r->id, v, &len);
        AUTO(xv) *got = NULL;
        AUTO(xerr) *err = NULL;
        CHECK(rpc_json_decode_response(resp, len, &got, &err) == 0 && !err);
        CHECK(rpc_wire_equal(r->proto, v, got));
    }

    AUTO(xerr) *e = xerr_new("MESSAGE_METHOD_UNKNOWN", r->method);
    AUTOFREE char *fail = rpc_json_encode_failure(r->proto, r->id, e, &len);
    AUTO(xv) *fv = NULL;
    AUTO(xerr) *ferr = NULL;
    CHECK(rpc_json_decode_response(fail, len, &fv, &ferr) == 0 && !fv && ferr);
    CHECK(strcmp(ferr->code, e->code) == 0 && ferr->nparams == 1);
    CHECK(strcmp(ferr->params[0], r->method) == 0);

    /* The same call over XML-RPC, when XML can carry its strings. */
    AUTO(xv) *name = xv_new_string(r->method);
    if (rpc_xml_encodable(r->params) && rpc_xml_encodable(name)) {
        AUTOFREE char *xml = rpc_xml_encode_call(r->method, r->params, &len);
        RPC_REQUEST_AUTO rpc_request rx = {0};
        CHECK(rpc_xml_decode_call(xml, len, &rx) == 0);
        CHECK(rpc_wire_equal(RPC_XML, r->params, rx.params));
    }
}

static void check_response(const xv *v, const xerr *e)
{
    size_t len;
    AUTO(xv) *id = xv_new_int(-1);
    for (rpc_proto p = RPC_JSON_V1; p <= RPC_JSON_V2; p++) {
        AUTOFREE char *resp =
            v ? rpc_json_encode_success(p, id, v, &len) : rpc_json_encode_failure(p, id, e, &len);
        AUTO(xv) *got = NULL;
        AUTO(xerr) *err = NULL;
        CHECK(rpc_json_decode_response(resp, len, &got, &err) == 0);
        if (v) {
            CHECK(!err && rpc_wire_equal(p, v, got));
        } else {
            CHECK(!got && err);
            AUTO(xv) *a = xerr_to_xv(e);
            AUTO(xv) *b = xerr_to_xv(err);
            CHECK(xv_equal(a, b));
        }
    }
    if (v && rpc_xml_encodable(v)) {
        AUTOFREE char *frag = rpc_xml_encode_value(v);
        AUTO(xv) *back = rpc_xml_decode_value(frag, strlen(frag));
        CHECK(back && rpc_wire_equal(RPC_XML, v, back));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;

    RPC_REQUEST_AUTO rpc_request r = {0};
    if (rpc_json_decode_call(body, size, &r) == 0)
        check_call(&r);

    xv *v = NULL;
    xerr *e = NULL;
    if (rpc_json_decode_response(body, size, &v, &e) == 0) {
        CHECK((v == NULL) != (e == NULL));
        check_response(v, e);
        xv_free(v);
        xerr_free(e);
    }
    return 0;
}
