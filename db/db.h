/* db: the pool database at the SQL level. One small interface so a replicated engine
 * (dqlite) can replace the local SQLite file later without touching callers.
 *
 * Threads: one connection guarded by one mutex; a caller takes the lock with db_lock()
 * for a read or a short write transaction and releases it with db_unlock(). All other
 * functions require the lock to be held. Errors are negative errno-style values
 * (-EIO for SQLite errors, -EEXIST for constraint violations); details are logged. */
#pragma once

#include "xv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct db db;
typedef struct db_row db_row;

/* Opens (creating) the database file in WAL mode with synchronous=FULL, so an
 * acknowledged write survives a crash. path ":memory:" gives a private in-memory DB. */
int db_open(const char *path, db **ret);
void db_close(db *d);

void db_lock(db *d);
void db_unlock(db *d);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. */
int db_begin(db *d);
int db_commit(db *d);
void db_rollback(db *d);

/* Runs a statement with positional parameters (XV_NIL binds NULL; STRUCT/ARRAY bind their
 * JSON text). Returns 0 or a negative error. */
int db_exec(db *d, const char *sql, const xv *const *args, size_t nargs);

/* Called once per row; return non-zero to stop (that value is returned by db_query). */
typedef int (*db_row_fn)(void *ud, const db_row *row);
int db_query(db *d, const char *sql, const xv *const *args, size_t nargs, db_row_fn fn, void *ud);

/* Row accessors; col is 0-based. Text is borrowed until the callback returns. */
size_t db_row_ncols(const db_row *r);
bool db_row_is_null(const db_row *r, size_t col);
int64_t db_row_int(const db_row *r, size_t col);
double db_row_float(const db_row *r, size_t col);
const char *db_row_text(const db_row *r, size_t col, size_t *ret_len);

/* Rows changed by the last db_exec. */
int64_t db_changes(db *d);
