/* store: XenAPI objects over db.h, driven by the generated class tables.
 *
 * Every committed write transaction bumps the pool-wide generation once; each row keeps
 * the generation of its creation (_cgen) and last change (_gen); deletions leave
 * tombstones, so event clients can ask "what changed after generation G".
 * Reverse references (VM.VBDs from VBD.VM) are computed from the forward field and a
 * change of the forward field counts as a change of the objects it points to.
 *
 * Threads: a transaction holds the DB lock for its whole length (keep them short); the
 * st_* accessors take the transaction they run in. Errors are xerr with XenAPI codes. */
#pragma once

#include "api.h"
#include "err.h"
#include "xv.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct store store;
typedef struct store_txn store_txn;

/* Opens the DB file (":memory:" for tests), creates tables, empties non-persisted
 * classes (sessions). Returns 0 or -errno. */
int store_open(const char *path, store **ret);
void store_close(store *s);

/* Runs fn in a write transaction: commits when fn returns NULL, else rolls back and
 * returns fn's error. */
typedef xerr *(*store_fn)(store_txn *t, void *ud);
xerr *store_write(store *s, store_fn fn, void *ud);
/* Runs fn under the lock without a write transaction (consistent reads). */
xerr *store_read(store *s, store_fn fn, void *ud);

/* The last committed generation. Thread-safe. */
int64_t store_gen(store *s);
/* Waits until the generation exceeds since or timeout seconds pass; returns the current
 * generation. Thread-safe; call without holding a transaction. */
int64_t store_wait(store *s, int64_t since, double timeout);
/* Forgets the oldest deletions beyond the number kept for event clients. */
void store_trim_tombstones(store *s);
/* Wakes every store_wait() (shutdown). */
void store_wake_all(store *s);

/* One-shot forms of the accessors below, each in its own short transaction (read or
 * write as fits), for callers that need a single access. Same errors as the st_* forms. */
xerr *store_get_record(store *s, const api_class *c, const char *ref, xv **ret);
xerr *store_get_all_records(store *s, const api_class *c, const char *where, const xv *const *args,
                            size_t nargs, xv **ret);
xerr *store_set_field(store *s, const api_class *c, const char *ref, int field, const xv *value);
xerr *store_create(store *s, const api_class *c, const xv *record, char **ret_ref);
xerr *store_destroy(store *s, const api_class *c, const char *ref);

/* Raw SQL in the transaction (for tables outside the schema, like local users). */
struct db *st_db(store_txn *t);

bool st_exists(store_txn *t, const api_class *c, const char *ref);
/* HANDLE_INVALID [class, ref] when missing. *ret is a new record. */
xerr *st_get_record(store_txn *t, const api_class *c, const char *ref, xv **ret);
xerr *st_get_field(store_txn *t, const api_class *c, const char *ref, int field, xv **ret);
/* value must already be type-checked. Derived fields cannot be set. */
xerr *st_set_field(store_txn *t, const api_class *c, const char *ref, int field, const xv *value);
/* record: a type-checked full record (missing fields take defaults). An empty uuid gets a
 * new one. ref NULL makes a new ref. *ret_ref (optional) gets the caller-frees ref. */
xerr *st_create(store_txn *t, const api_class *c, const char *ref, const xv *record,
                char **ret_ref);
xerr *st_destroy(store_txn *t, const api_class *c, const char *ref);
/* Marks an object changed without changing it (event.inject). */
xerr *st_touch(store_txn *t, const api_class *c, const char *ref);

/* where: an SQL boolean expression over the class's columns with ? placeholders, or NULL
 * for all. *ret: set of refs / map ref -> record. */
xerr *st_get_all(store_txn *t, const api_class *c, const char *where, const xv *const *args,
                 size_t nargs, xv **ret);
xerr *st_get_all_records(store_txn *t, const api_class *c, const char *where, const xv *const *args,
                         size_t nargs, xv **ret);
/* UUID_INVALID [class, uuid] when missing. */
xerr *st_ref_by_uuid(store_txn *t, const api_class *c, const char *uuid, char **ret_ref);
/* Number of objects of the class. */
int64_t st_count(store_txn *t, const api_class *c);

/* Appends to events (an array) the changes of class c after generation since: event
 * records {id, timestamp, class, operation, ref, snapshot}; only_ref filters one object.
 * since < 0 returns every object as "add". */
xerr *st_changes(store_txn *t, const api_class *c, int64_t since, const char *only_ref, xv *events);
/* Generation this transaction's writes get (committed generation + 1). */
int64_t st_txn_gen(store_txn *t);
/* The oldest generation whose deletions are still remembered. */
int64_t st_oldest_tombstone_gen(store_txn *t);
