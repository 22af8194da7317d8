/* Small readers of generic records (xv structs keyed by field wire names) shared by the
 * handler modules. */
#pragma once

#include "api_gen.h"
#include "err.h"
#include "store.h"
#include "xv.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define XCLS(id) (&api_classes[API_CLASS_##id])
#define NULL_REF "OpaqueRef:NULL"

static inline const char *xrec_str(const xv *rec, const char *key)
{
    const char *s = rec ? xv_struct_get_str(rec, key) : NULL;
    return s ? s : "";
}

static inline bool xrec_bool(const xv *rec, const char *key)
{
    const xv *v = rec ? xv_struct_get(rec, key) : NULL;
    return v && v->kind == XV_BOOL && v->u.b;
}

static inline int64_t xrec_int(const xv *rec, const char *key, int64_t dflt)
{
    const xv *v = rec ? xv_struct_get(rec, key) : NULL;
    return v && v->kind == XV_INT ? v->u.i : dflt;
}

/* A string value from a map field (e.g. other_config), or NULL. */
static inline const char *xrec_map_str(const xv *rec, const char *field, const char *key)
{
    const xv *m = rec ? xv_struct_get(rec, field) : NULL;
    return m && m->kind == XV_STRUCT ? xv_struct_get_str(m, key) : NULL;
}

/* Whether ref is a real reference (not empty, not OpaqueRef:NULL). */
static inline bool xref_set(const char *ref)
{
    return ref && *ref && strcmp(ref, NULL_REF) != 0;
}

/* The index of a field by wire name, or -1. */
static inline int xfield(const api_class *c, const char *name)
{
    for (size_t i = 0; i < c->nfields; i++)
        if (!strcmp(c->fields[i].name, name))
            return (int)i;
    return -1;
}

/* Sets field name of ref in a write transaction; takes v. */
static inline xerr *xset(store_txn *t, const api_class *c, const char *ref, const char *name, xv *v)
{
    int i = xfield(c, name);
    xerr *e =
        i < 0 ? xerr_internal("no field %s.%s", c->name, name) : st_set_field(t, c, ref, i, v);
    xv_free(v);
    return e;
}
