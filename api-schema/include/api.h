/* The shape of the generated API tables: classes, fields, types, messages, errors, roles.
 * The tables themselves are generated from api-schema/ at build time (api_gen.c). */
#pragma once

#include "err.h"
#include "xv.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum api_type_kind {
    API_T_VOID = 0,
    API_T_STRING,
    API_T_INT,
    API_T_FLOAT,
    API_T_BOOL,
    API_T_DATETIME,
    API_T_ENUM,
    API_T_REF,
    API_T_SET,
    API_T_MAP,
    API_T_RECORD,
    API_T_ANY, /* "<class> record": any object's record (event snapshots) */
} api_type_kind;

typedef struct api_enum {
    const char *name;
    size_t n;
    const char *const *values;
} api_enum;

typedef struct api_type {
    api_type_kind kind;
    const char *text;            /* the schema spelling, e.g. "(string -> string) map" */
    const api_enum *en;          /* ENUM */
    int cls;                     /* REF/RECORD: class id, -1 if not a class we implement */
    const char *cls_name;        /* REF/RECORD: class name as spelled */
    const struct api_type *elem; /* SET element, MAP value */
    const struct api_type *key;  /* MAP key */
} api_type;

typedef enum api_qual { API_Q_RO_RUNTIME = 0, API_Q_RO_CONSTRUCTOR, API_Q_RW } api_qual;

typedef struct api_field {
    const char *name; /* wire name, also the DB column */
    const api_type *type;
    api_qual qual;
    const char *default_json; /* default as JSON text; NULL: required at create */
    int derived_cls;          /* reverse reference: class holding the ref, or -1 */
    int derived_field;        /* ... and its field index */
    size_t rec_offset;        /* offset in the typed record struct */
} api_field;

typedef struct api_class {
    int id;
    const char *name;  /* as spelled in the API: "VM", "host_metrics" */
    const char *lname; /* lowercase, as event records spell it */
    bool persisted;    /* false: lives only while xapid runs (sessions) */
    bool table;        /* false: a record shape only (event) */
    bool events;       /* changes produce events */
    bool has_name_label;
    size_t nfields;
    const api_field *fields;
    size_t rec_size; /* size of the typed record struct */
} api_class;

typedef enum api_msg_kind {
    API_M_CUSTOM = 0,
    API_M_GET_FIELD,
    API_M_SET_FIELD,
    API_M_ADD_TO_MAP,
    API_M_REMOVE_FROM_MAP,
    API_M_ADD_SET,
    API_M_REMOVE_SET,
    API_M_GET_RECORD,
    API_M_GET_ALL,
    API_M_GET_ALL_RECORDS,
    API_M_GET_ALL_RECORDS_WHERE,
    API_M_GET_ALL_WHERE,
    API_M_GET_BY_UUID,
    API_M_GET_BY_NAME_LABEL,
    API_M_CREATE,
    API_M_DESTROY,
} api_msg_kind;

typedef struct api_param {
    const char *name;
    const api_type *type;
    bool required;
} api_param;

struct api_ctx;
/* A message handler: args are already checked against the param types (arity, types,
 * UTF-8) and normalised (ints are XV_INT, enums in canonical spelling). On success it
 * returns NULL and sets *ret (unless the result is void); on failure returns the error. */
typedef xerr *(*api_handler_fn)(struct api_ctx *ctx, const xv *const *args, xv **ret);

typedef struct api_message {
    const char *wire; /* "VM.get_power_state" */
    const char *perm; /* RBAC permission: the lowercase wire name */
    int cls;
    const char *name;
    api_msg_kind kind;
    int field;      /* field index for field messages, else -1 */
    size_t nparams; /* excluding the session */
    size_t nrequired;
    const api_param *params;
    const api_type *result;
    int min_role; /* index into api_roles */
    bool async;   /* callable as Async.<wire> */
    bool session; /* first wire param is a session ref */
} api_message;

/* CUSTOM messages' generated wrappers, indexed like api_messages (NULL for generic
 * messages). Defined only in the server library (api_dispatch.c). */
extern const api_handler_fn api_handler_table[];

typedef struct api_error_def {
    const char *code;
    size_t nparams;
    const char *const *params;
} api_error_def;

extern const api_class api_classes[];
extern const size_t api_nclasses;
extern const api_message api_messages[];
extern const size_t api_nmessages;
extern const api_error_def api_errors[];
extern const size_t api_nerrors;
extern const char *const api_roles[];
extern const size_t api_nroles;
extern const char *const api_ddl[];
extern const size_t api_nddl;
/* Hash of the schema files the tables were generated from. */
extern const char api_schema_hash[];

/* Lookups; NULL / -1 when not found. Thread-safe (read-only tables). */
const api_class *api_class_by_name(const char *name);
/* Case-insensitive, as event.from subscriptions are. */
const api_class *api_class_by_name_ci(const char *name);
const api_message *api_message_lookup(const char *wire);
const api_error_def *api_error_lookup(const char *code);
int api_role_rank(const char *role);
int api_field_index(const api_class *c, const char *name);

/* Checks v against type t and returns a new normalised value (ints from decimal strings,
 * floats from ints, enums to canonical case, records filled in). On mismatch returns NULL
 * and sets *ret_err to FIELD_TYPE_ERROR [what] (or INVALID_VALUE for bad UTF-8). */
xv *api_type_check(const api_type *t, const xv *v, const char *what, xerr **ret_err);
/* The zero value of a type (empty string, 0, false, OpaqueRef:NULL, empty set/map...). */
xv *api_type_zero(const api_type *t);
/* The field's default as a value (zero value when it has none). */
xv *api_field_default(const api_field *f);

/* Typed records (struct api_rec_<class> in api_gen.h) <-> value trees. */
void *api_record_from_xv(const api_class *c, const xv *rec);
xv *api_record_to_xv(const api_class *c, const void *rec);
void api_record_free(const api_class *c, void *rec);
