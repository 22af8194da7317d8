/* xv: the one value tree every protocol decodes into and encodes from.
 *
 * Ownership: constructors return a new tree; container setters take ownership of the
 * value passed in; getters return borrowed pointers valid while the container lives.
 * Not thread-safe; a tree belongs to one thread at a time. */
#pragma once

#include "cleanup.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum xv_kind {
    XV_NIL = 0,
    XV_STRING, /* also refs, uuids, enums; untyped XML <value> */
    XV_INT,    /* 64-bit */
    XV_FLOAT,
    XV_BOOL,
    XV_DATETIME, /* text form YYYYMMDDTHH:MM:SSZ, kept in str */
    XV_ARRAY,
    XV_STRUCT, /* ordered members, keys unique */
} xv_kind;

typedef struct xv xv;

/* Encoding hints that do not change the value. */
enum {
    XV_F_I4 = 1,     /* emit an INT as <i4> in XML-RPC (event.from valid_ref_counts) */
    XV_F_INLINE = 2, /* internal: the string bytes live in the node's own allocation */
};

struct xv {
    xv_kind kind;
    unsigned char flags;
    union {
        struct {
            char *s; /* NUL-terminated; may contain no NUL inside */
            size_t len;
        } str;
        int64_t i;
        double f;
        bool b;
        struct {
            xv **items;
            size_t n, cap;
        } arr;
        struct {
            char **keys;
            xv **vals;
            size_t n, cap;
        } st;
    } u;
};

xv *xv_new_nil(void);
xv *xv_new_string(const char *s);
xv *xv_new_stringn(const char *s, size_t n);
/* Takes ownership of s (must be malloc'd). */
xv *xv_new_string_take(char *s);
xv *xv_new_int(int64_t i);
xv *xv_new_float(double f);
xv *xv_new_bool(bool b);
/* s in wire form YYYYMMDDTHH:MM:SSZ (not validated here). */
xv *xv_new_datetime(const char *s);
/* Seconds since the epoch, UTC. */
xv *xv_new_datetime_epoch(int64_t t);
xv *xv_new_array(void);
xv *xv_new_struct(void);
/* A struct with room for n members (avoids regrowth when the size is known). */
xv *xv_new_struct_cap(size_t n);

void xv_free(xv *v);
DEFINE_FREEP(xv)
xv *xv_copy(const xv *v);
bool xv_equal(const xv *a, const xv *b);

/* Takes ownership of item. */
void xv_array_append(xv *a, xv *item);
size_t xv_array_len(const xv *a);
const xv *xv_array_get(const xv *a, size_t i);

/* Takes ownership of val; replaces an existing member of that key. */
void xv_struct_set(xv *s, const char *key, xv *val);
/* Takes ownership of val; returns false (and frees val) if key already exists. */
bool xv_struct_add(xv *s, const char *key, xv *val);
/* Takes ownership of val; appends without looking for an existing key: only for
 * callers that build structs whose keys are unique by construction (records, maps
 * keyed by refs). O(1). */
void xv_struct_append(xv *s, const char *key, xv *val);
/* Returns the member or NULL. */
const xv *xv_struct_get(const xv *s, const char *key);
/* Removes a member; returns true if it existed. */
bool xv_struct_del(xv *s, const char *key);
size_t xv_struct_len(const xv *s);

/* Borrowed string of a STRING/DATETIME value, or NULL for other kinds. */
const char *xv_str(const xv *v);
/* Convenience for struct members: xv_str(xv_struct_get(s, key)). */
const char *xv_struct_get_str(const xv *s, const char *key);

/* JSON text round trip (json-c). Datetimes become strings, NIL becomes null.
 * xv_to_json returns caller-frees text; xv_from_json returns NULL on a parse error. */
char *xv_to_json(const xv *v);
xv *xv_from_json(const char *text, size_t len);

/* Epoch seconds to wire datetime text (buffer of at least 20 bytes). */
void xv_format_datetime(int64_t t, char out[static 20]);
/* Parses YYYYMMDDTHH:MM:SSZ (also accepts YYYY-MM-DDTHH:MM:SSZ and a trailing fraction
 * or offset-less form); returns false when unparsable. */
bool xv_parse_datetime(const char *s, int64_t *ret_t);
