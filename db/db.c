/* The SQLite engine behind db.h: one WAL connection, a mutex, a prepared-statement cache. */
#define _GNU_SOURCE
#include "db.h"
#include "cleanup.h"
#include "log.h"
#include "mem.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define STMT_CACHE 256

struct stmt_slot {
    char *sql;
    sqlite3_stmt *stmt;
};

struct db {
    sqlite3 *conn;
    pthread_mutex_t lock;
    struct stmt_slot cache[STMT_CACHE];
};

struct db_row {
    sqlite3_stmt *stmt;
};

static uint64_t hash_sql(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int map_rc(db *d, int rc, const char *sql)
{
    if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW)
        return 0;
    log_err("db: %s (%d) in: %.200s", sqlite3_errmsg(d->conn), rc, sql);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return -EEXIST;
    if ((rc & 0xff) == SQLITE_FULL)
        return -ENOSPC;
    return -EIO;
}

int db_open(const char *path, db **ret)
{
    db *d = xcalloc(1, sizeof(*d));
    pthread_mutex_init(&d->lock, NULL);
    int rc = sqlite3_open_v2(
        path, &d->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        log_err("db: cannot open %s: %s", path, d->conn ? sqlite3_errmsg(d->conn) : "?");
        db_close(d);
        return -EIO;
    }
    /* One process owns the DB: exclusive locking skips the per-read WAL lock syscalls
     * and keeps a second daemon off the same state dir. */
    const char *pragmas[] = {
        "PRAGMA locking_mode=EXCLUSIVE", "PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
        "PRAGMA temp_store=MEMORY",      "PRAGMA foreign_keys=OFF", "PRAGMA busy_timeout=2000",
    };
    for (size_t i = 0; i < ARRAY_SIZE(pragmas); i++) {
        char *msg = NULL;
        if (sqlite3_exec(d->conn, pragmas[i], NULL, NULL, &msg) != SQLITE_OK) {
            log_err("db: %s: %s", pragmas[i], msg ? msg : "?");
            sqlite3_free(msg);
            db_close(d);
            return -EIO;
        }
    }
    *ret = d;
    return 0;
}

void db_close(db *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < STMT_CACHE; i++) {
        sqlite3_finalize(d->cache[i].stmt);
        free(d->cache[i].sql);
    }
    if (d->conn)
        sqlite3_close(d->conn);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

void db_lock(db *d)
{
    pthread_mutex_lock(&d->lock);
}

void db_unlock(db *d)
{
    pthread_mutex_unlock(&d->lock);
}

static int simple(db *d, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(d->conn, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        log_err("db: %s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return -EIO;
    }
    return 0;
}

int db_begin(db *d)
{
    return simple(d, "BEGIN IMMEDIATE");
}

int db_commit(db *d)
{
    return simple(d, "COMMIT");
}

void db_rollback(db *d)
{
    if (!sqlite3_get_autocommit(d->conn))
        simple(d, "ROLLBACK");
}

/* Returns a reset statement for sql from the cache, preparing it on a miss. */
static sqlite3_stmt *prepare(db *d, const char *sql)
{
    struct stmt_slot *s = &d->cache[hash_sql(sql) % STMT_CACHE];
    if (s->stmt && strcmp(s->sql, sql) == 0) {
        sqlite3_reset(s->stmt);
        sqlite3_clear_bindings(s->stmt);
        return s->stmt;
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(d->conn, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        map_rc(d, rc, sql);
        return NULL;
    }
    sqlite3_finalize(s->stmt);
    free(s->sql);
    s->sql = xstrdup(sql);
    s->stmt = st;
    return st;
}

static int bind_args(db *d, sqlite3_stmt *st, const xv *const *args, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const xv *a = args[i];
        int col = (int)i + 1, rc;
        if (!a || a->kind == XV_NIL)
            rc = sqlite3_bind_null(st, col);
        else if (a->kind == XV_STRING || a->kind == XV_DATETIME)
            rc = sqlite3_bind_text(st, col, a->u.str.s, (int)a->u.str.len, SQLITE_TRANSIENT);
        else if (a->kind == XV_INT)
            rc = sqlite3_bind_int64(st, col, a->u.i);
        else if (a->kind == XV_BOOL)
            rc = sqlite3_bind_int64(st, col, a->u.b ? 1 : 0);
        else if (a->kind == XV_FLOAT)
            rc = sqlite3_bind_double(st, col, a->u.f);
        else {
            char *j = xv_to_json(a);
            rc = sqlite3_bind_text(st, col, j, -1, free);
        }
        if (rc != SQLITE_OK)
            return map_rc(d, rc, sqlite3_sql(st));
    }
    return 0;
}

int db_exec(db *d, const char *sql, const xv *const *args, size_t nargs)
{
    sqlite3_stmt *st = prepare(d, sql);
    if (!st)
        return -EIO;
    int r = bind_args(d, st, args, nargs);
    if (r < 0)
        return r;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    r = map_rc(d, rc, sql);
    sqlite3_reset(st);
    return r;
}

int db_query(db *d, const char *sql, const xv *const *args, size_t nargs, db_row_fn fn, void *ud)
{
    sqlite3_stmt *st = prepare(d, sql);
    if (!st)
        return -EIO;
    int r = bind_args(d, st, args, nargs);
    if (r < 0)
        return r;
    struct db_row row = {st};
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int stop = fn(ud, &row);
        if (stop) {
            sqlite3_reset(st);
            return stop;
        }
    }
    r = map_rc(d, rc, sql);
    sqlite3_reset(st);
    return r;
}

size_t db_row_ncols(const db_row *r)
{
    return (size_t)sqlite3_column_count(r->stmt);
}

bool db_row_is_null(const db_row *r, size_t col)
{
    return sqlite3_column_type(r->stmt, (int)col) == SQLITE_NULL;
}

int64_t db_row_int(const db_row *r, size_t col)
{
    return sqlite3_column_int64(r->stmt, (int)col);
}

double db_row_float(const db_row *r, size_t col)
{
    return sqlite3_column_double(r->stmt, (int)col);
}

const char *db_row_text(const db_row *r, size_t col, size_t *ret_len)
{
    const char *t = (const char *)sqlite3_column_text(r->stmt, (int)col);
    if (ret_len)
        *ret_len = t ? (size_t)sqlite3_column_bytes(r->stmt, (int)col) : 0;
    return t ? t : "";
}

int64_t db_changes(db *d)
{
    return sqlite3_changes64(d->conn);
}
