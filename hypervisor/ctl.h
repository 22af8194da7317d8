/* The control-socket protocol of nuvem-vmm: one JSON object per line in each direction.
 *   server greeting: {"greeting": {...}}
 *   request:         {"id": ANY, "execute": "NAME", "arguments": {...}}   (id, arguments optional)
 *   reply:           {"id": ANY, "return": VALUE} | {"id": ANY, "error": ["CODE", "param", ...]}
 *   event:           {"event": "NAME", "data": {...}, "timestamp": {"seconds": S, "microseconds":
 * U}} Pure functions, no I/O: shared by the VMM, the unit tests and the fuzz target. */
#pragma once

#include "err.h"
#include "xv.h"

#include <stddef.h>

#define CTL_MAX_LINE (64 * 1024) /* longest request line accepted */

typedef struct ctl_request {
    xv *id;        /* owned; NULL if the request had none */
    char *execute; /* owned */
    xv *arguments; /* owned; always a struct (empty if absent) */
} ctl_request;

void ctl_request_release(ctl_request *r);

/* Parses one line (without its newline). On success fills *ret and returns NULL; on failure
 * returns PROTOCOL_ERROR [why] or FIELD_TYPE_ERROR [field], and still sets ret->id when the
 * line carried one so the error reply can name it. */
xerr *ctl_parse_request(const char *line, size_t len, ctl_request *ret);

/* Reply and event lines (caller-frees, newline-terminated). `ret` is taken (may be NULL for {}). */
char *ctl_format_return(const xv *id, xv *ret);
char *ctl_format_error(const xv *id, const xerr *e);
/* `data` is taken (may be NULL). */
char *ctl_format_event(const char *event, xv *data, int64_t sec, int64_t usec);

/* Argument helpers: fetch an optional member of a given kind; FIELD_TYPE_ERROR on a
 * wrong kind. *ret is left untouched when the member is absent. */
xerr *ctl_arg_bool(const xv *args, const char *key, bool *ret);
xerr *ctl_arg_int(const xv *args, const char *key, int64_t *ret);
xerr *ctl_arg_string(const xv *args, const char *key, const char **ret);
