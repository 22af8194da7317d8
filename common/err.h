/* xerr: the one error type. It carries a XenAPI error code and its ordered string params.
 *
 * An error is created once at the failure site and propagated up unchanged; functions
 * that can fail with an API error return `xerr *` (NULL = success). Internal details are
 * logged where they happen, never put into params sent to clients. */
#pragma once

#include "cleanup.h"
#include "xv.h"

#include <stddef.h>

typedef struct xerr {
    char *code;
    char **params;
    size_t nparams;
} xerr;

/* New error; params are strings ending with a NULL sentinel. */
xerr *xerr_new_(const char *code, ...) __attribute__((sentinel));
#define xerr_new(...) xerr_new_(__VA_ARGS__, (const char *)NULL)
xerr *xerr_newv(const char *code, const char *const *params, size_t n);
/* INTERNAL_ERROR with a printf-formatted message (no secrets in it). */
xerr *xerr_internal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void xerr_free(xerr *e);
DEFINE_FREEP(xerr)
xerr *xerr_copy(const xerr *e);
/* [code, params...] as an array of strings. */
xv *xerr_to_xv(const xerr *e);
/* Parses [code, params...]; returns NULL if v is not such an array. */
xerr *xerr_from_xv(const xv *v);

/* A hook that checks a code and its param count against the catalogue; installed by the
 * generated code. Returns 0 if fine. Used only to log mismatches (debug aid). */
typedef int (*xerr_check_fn)(const char *code, size_t nparams);
void xerr_set_checker(xerr_check_fn fn);
