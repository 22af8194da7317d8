/* rpc: the XenAPI wire codec (XML-RPC and JSON-RPC v1/v2) shared by xapid and the xe CLI.
 *
 * Everything decodes into / encodes from the `xv` value tree. Decoders never trust their
 * input: nesting is capped at RPC_MAX_DEPTH value containers, the number of values at
 * RPC_MAX_VALUES, XML DTDs and entity declarations are refused, and a malformed body is
 * -EINVAL (the HTTP layer answers 500). Strings are passed through as the parser accepted
 * them; UTF-8 validation is the dispatcher's job. Strings with an embedded NUL (possible
 * via <base64> or JSON "\u0000") cannot live in an xv and are refused as malformed.
 *
 * All functions are thread-safe (no shared mutable state; libxml2 errors are silenced
 * per parse). Encoders return caller-frees NUL-terminated text and never fail.
 * Decoders leave their out-params untouched on failure. */
#pragma once

#include "err.h"
#include "xv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Deepest nesting of arrays/structs within one value (a param, a result). */
#define RPC_MAX_DEPTH 64
/* Most values (scalars and containers) one body may decode into. */
#define RPC_MAX_VALUES 1000000

typedef enum { RPC_XML = 0, RPC_JSON_V1 = 1, RPC_JSON_V2 = 2 } rpc_proto;

typedef struct rpc_request {
    char *method;
    xv *params; /* XV_ARRAY, never NULL after success */
    xv *id;     /* JSON id (XV_INT or XV_STRING), NULL for XML */
    rpc_proto proto;
} rpc_request;

/* Frees the members and zeroes the struct; safe on a zeroed or already-cleared request.
 * Usable as a cleanup: `RPC_REQUEST_AUTO rpc_request req = {0};` */
void rpc_request_clear(rpc_request *r);
#define RPC_REQUEST_AUTO __attribute__((cleanup(rpc_request_clear)))

/* ---- Server side ---- */

/* Decodes a <methodCall>. On success fills *ret (overwriting it; proto = RPC_XML, id NULL)
 * and returns 0; a call without <params> gets an empty array. Returns -EINVAL if the body
 * is malformed, has a DTD, nests deeper than RPC_MAX_DEPTH or holds too many values.
 * Leniency as xapi's: untyped <value> is a string kept verbatim (spaces included);
 * <i4>/<int>/<i8> are int64 (surrounding whitespace allowed, overflow refused); <boolean>
 * is exactly "1" or "0"; <double> must parse whole; <base64> becomes a string; whitespace,
 * comments and PIs between elements are ignored; a repeated struct member: last wins.
 * The method name is trimmed of surrounding whitespace. */
int rpc_xml_decode_call(const char *body, size_t len, rpc_request *ret);

/* Decodes a JSON-RPC call. "jsonrpc":"2.0" selects RPC_JSON_V2 (any other jsonrpc value is
 * malformed), its absence RPC_JSON_V1. "method" must be a string; "id" must be present and
 * an integer or a string (null is refused in both versions: we do not do notifications).
 * "params" must be an array; v2 may omit it or send null (-> empty array). Unknown keys are
 * ignored. Integers outside int64 are malformed. Returns 0 or -EINVAL. */
int rpc_json_decode_call(const char *body, size_t len, rpc_request *ret);

/* Response envelopes; value NULL is encoded like XV_NIL. Caller frees; *ret_len (may be
 * NULL) gets the length without the NUL. */
char *rpc_xml_encode_success(const xv *value, size_t *ret_len);
char *rpc_xml_encode_failure(const xerr *e, size_t *ret_len);
/* v is RPC_JSON_V1 or RPC_JSON_V2; id is echoed as given (NULL -> null). Non-finite floats
 * become null (JSON has no spelling for them). */
char *rpc_json_encode_success(rpc_proto v, const xv *id, const xv *value, size_t *ret_len);
char *rpc_json_encode_failure(rpc_proto v, const xv *id, const xerr *e, size_t *ret_len);

/* One value as XML-RPC "<value>...</value>" text (task.result stores this). Caller frees. */
char *rpc_xml_encode_value(const xv *value);
/* Parses one "<value>...</value>" fragment (an XML declaration before it is allowed).
 * Returns a new tree or NULL if malformed (same limits as the call decoder). */
xv *rpc_xml_decode_value(const char *text, size_t len);

/* ---- Client side (the xe CLI, tests, benchmarks) ---- */

/* params: XV_ARRAY of the call's params, or NULL for none; any other value is sent as the
 * single param. Caller frees. */
char *rpc_xml_encode_call(const char *method, const xv *params, size_t *ret_len);
char *rpc_json_encode_call(rpc_proto v, const char *method, const xv *params, int64_t id,
                           size_t *ret_len);

/* Decodes a response. Status Success: *ret_value = the Value (new tree), *ret_err = NULL.
 * Status Failure: *ret_err = [code, params...] (ErrorDescription must be a non-empty array
 * of strings), *ret_value = NULL. Returns 0 in both cases, -EINVAL if malformed.
 * An XML-RPC <fault> (xapi never sends one for API errors) becomes the error
 * XMLRPC_FAULT [faultCode, faultString]. */
int rpc_xml_decode_response(const char *body, size_t len, xv **ret_value, xerr **ret_err);
/* JSON: a non-null "error" (v1 array [code, params...] or v2 object {message, data}) is a
 * failure; otherwise "result" must be present. The id is not checked. */
int rpc_json_decode_response(const char *body, size_t len, xv **ret_value, xerr **ret_err);

/* ---- Helpers for tests and fuzzers ---- */

/* True if every string, datetime and struct key in v can travel in an XML-RPC document
 * (valid UTF-8 made of XML 1.0 characters). Strings decoded from <base64> or from JSON
 * may not; rpc_xml_encode_* still emits them, as xapi does, and the peer will refuse. */
bool rpc_xml_encodable(const xv *v);

/* True if got is what sent becomes after one encode/decode trip through protocol p:
 * XML-RPC turns ints (unless XV_F_I4) into decimal strings and nil into ""; JSON turns
 * datetimes into strings and non-finite floats into null; floats may differ in the last
 * digit (%.16g), and a float that %.16g rounds past DBL_MAX comes back infinite. Struct
 * members compare in order. NULL compares like XV_NIL. */
bool rpc_wire_equal(rpc_proto p, const xv *sent, const xv *got);
