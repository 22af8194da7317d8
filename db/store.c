/* XenAPI objects on SQLite rows; see store.h for the generation/event model. */
#define _GNU_SOURCE
#include "store.h"
#include "db.h"
#include "log.h"
#include "mem.h"
#include "sbuf.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOMBSTONES_KEPT 100000

struct store {
    db *db;
    int64_t gen; /* last committed generation; written under the db lock */
    pthread_mutex_t gen_lock;
    pthread_cond_t gen_cond;
    char **select_cols; /* per class: "_ref","_gen","_cgen", stored fields */
};

struct store_txn {
    store *s;
    bool write;
    bool dirty;
    int64_t gen;
};

static int count_row(void *ud, const db_row *row);

static xerr *db_error(int r)
{
    return r == -EEXIST ? xerr_new("DB_UNIQUENESS_CONSTRAINT_VIOLATION", "", "", "")
                        : xerr_internal("database error (%d)", r);
}

static bool stored(const api_field *f)
{
    return f->derived_cls < 0;
}

int store_open(const char *path, store **ret)
{
    store *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->gen_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->gen_cond, &ca);
    pthread_condattr_destroy(&ca);
    int r = db_open(path, &s->db);
    if (r < 0) {
        free(s);
        return r;
    }
    db_lock(s->db);
    r = db_begin(s->db);
    for (size_t i = 0; r == 0 && i < api_nddl; i++)
        r = db_exec(s->db, api_ddl[i], NULL, 0);
    if (r == 0)
        r = db_exec(s->db, "CREATE TABLE IF NOT EXISTS _meta (k TEXT PRIMARY KEY, v INTEGER)", NULL,
                    0);
    if (r == 0)
        r = db_exec(s->db,
                    "CREATE TABLE IF NOT EXISTS _deleted (gen INTEGER NOT NULL, class TEXT NOT "
                    "NULL, ref TEXT NOT NULL, uuid TEXT)",
                    NULL, 0);
    if (r == 0)
        r = db_exec(s->db, "CREATE INDEX IF NOT EXISTS _deleted_gen ON _deleted (gen)", NULL, 0);
    if (r == 0)
        r = db_exec(s->db, "INSERT OR IGNORE INTO _meta (k, v) VALUES ('gen', 0)", NULL, 0);
    /* keep the tombstone table bounded */
    if (r == 0) {
        AUTO(xv) *keep = xv_new_int(TOMBSTONES_KEPT);
        const xv *a[] = {keep};
        r = db_exec(s->db,
                    "DELETE FROM _deleted WHERE rowid <= (SELECT MAX(rowid) FROM _deleted) - ?", a,
                    1);
    }
    if (r == 0)
        r = db_commit(s->db);
    else
        db_rollback(s->db);
    db_unlock(s->db);
    if (r < 0) {
        store_close(s);
        return r;
    }
    s->select_cols = xcalloc(api_nclasses, sizeof(char *));
    for (size_t i = 0; i < api_nclasses; i++) {
        const api_class *c = &api_classes[i];
        sbuf b = SBUF_INIT;
        sbuf_puts(&b, "\"_ref\", \"_gen\", \"_cgen\"");
        for (size_t k = 0; k < c->nfields; k++)
            if (stored(&c->fields[k]))
                sbuf_printf(&b, ", \"%s\"", c->fields[k].name);
        s->select_cols[i] = sbuf_steal(&b, NULL);
    }
    /* read the generation */
    store_txn t = {s, false, false, 0};
    db_lock(s->db);
    int64_t g = 0;
    db_query(s->db, "SELECT v FROM _meta WHERE k='gen'", NULL, 0, count_row, &g);
    db_unlock(s->db);
    (void)t;
    s->gen = g;
    *ret = s;
    return 0;
}

void store_close(store *s)
{
    if (!s)
        return;
    db_close(s->db);
    if (s->select_cols)
        for (size_t i = 0; i < api_nclasses; i++)
            free(s->select_cols[i]);
    free(s->select_cols);
    pthread_cond_destroy(&s->gen_cond);
    pthread_mutex_destroy(&s->gen_lock);
    free(s);
}

int64_t store_gen(store *s)
{
    pthread_mutex_lock(&s->gen_lock);
    int64_t g = s->gen;
    pthread_mutex_unlock(&s->gen_lock);
    return g;
}

int64_t store_wait(store *s, int64_t since, double timeout)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (timeout < 0)
        timeout = 0;
    if (timeout > 86400)
        timeout = 86400;
    dl.tv_sec += (time_t)timeout;
    dl.tv_nsec += (long)((timeout - (double)(int64_t)timeout) * 1e9);
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->gen_lock);
    while (s->gen <= since) {
        if (pthread_cond_timedwait(&s->gen_cond, &s->gen_lock, &dl) != 0)
            break;
        if (since == INT64_MIN) /* woken for shutdown */
            break;
    }
    int64_t g = s->gen;
    pthread_mutex_unlock(&s->gen_lock);
    return g;
}

void store_trim_tombstones(store *s)
{
    db_lock(s->db);
    AUTO(xv) *keep = xv_new_int(TOMBSTONES_KEPT);
    const xv *a[] = {keep};
    db_exec(s->db, "DELETE FROM _deleted WHERE rowid <= (SELECT MAX(rowid) FROM _deleted) - ?", a,
            1);
    db_unlock(s->db);
}

void store_wake_all(store *s)
{
    pthread_mutex_lock(&s->gen_lock);
    pthread_cond_broadcast(&s->gen_cond);
    pthread_mutex_unlock(&s->gen_lock);
}

xerr *store_write(store *s, store_fn fn, void *ud)
{
    db_lock(s->db);
    store_txn t = {s, true, false, s->gen + 1};
    if (db_begin(s->db) < 0) {
        db_unlock(s->db);
        return xerr_internal("cannot begin a database transaction");
    }
    xerr *e = fn(&t, ud);
    if (!e && t.dirty) {
        AUTO(xv) *g = xv_new_int(t.gen);
        const xv *a[] = {g};
        if (db_exec(s->db, "UPDATE _meta SET v = ? WHERE k = 'gen'", a, 1) < 0)
            e = xerr_internal("cannot record the generation");
    }
    if (!e && db_commit(s->db) < 0)
        e = xerr_internal("cannot commit a database transaction");
    if (e) {
        db_rollback(s->db);
        db_unlock(s->db);
        return e;
    }
    if (t.dirty) {
        pthread_mutex_lock(&s->gen_lock);
        s->gen = t.gen;
        pthread_cond_broadcast(&s->gen_cond);
        pthread_mutex_unlock(&s->gen_lock);
    }
    db_unlock(s->db);
    return NULL;
}

xerr *store_read(store *s, store_fn fn, void *ud)
{
    db_lock(s->db);
    store_txn t = {s, false, false, s->gen};
    xerr *e = fn(&t, ud);
    db_unlock(s->db);
    return e;
}

/* Raw SQL writes through this handle do not bump the generation (no events). */
struct db *st_db(store_txn *t)
{
    return t->s->db;
}

int64_t st_txn_gen(store_txn *t)
{
    return t->gen;
}

/* ---- rows to values ---- */

static xv *column_value(const api_field *f, const db_row *row, size_t col)
{
    if (db_row_is_null(row, col))
        return api_field_default(f);
    size_t len;
    const char *txt;
    switch (f->type->kind) {
    case API_T_INT:
        return xv_new_int(db_row_int(row, col));
    case API_T_FLOAT:
        return xv_new_float(db_row_float(row, col));
    case API_T_BOOL:
        return xv_new_bool(db_row_int(row, col) != 0);
    case API_T_DATETIME:
        return xv_new_datetime(db_row_text(row, col, NULL));
    case API_T_SET:
    case API_T_MAP:
    case API_T_RECORD:
    case API_T_ANY: {
        txt = db_row_text(row, col, &len);
        if (len == 2 && txt[0] == '[' && txt[1] == ']')
            return xv_new_array();
        if (len == 2 && txt[0] == '{' && txt[1] == '}')
            return xv_new_struct();
        xv *v = xv_from_json(txt, len);
        return v ? v : api_type_zero(f->type);
    }
    default:
        txt = db_row_text(row, col, &len);
        return xv_new_stringn(txt, len);
    }
}

struct refs_ud {
    xv *arr;
};

static int collect_refs(void *ud, const db_row *row)
{
    struct refs_ud *r = ud;
    size_t len;
    const char *t = db_row_text(row, 0, &len);
    xv_array_append(r->arr, xv_new_stringn(t, len));
    return 0;
}

static xv *derived_value(store_txn *t, const api_field *f, const char *ref)
{
    const api_class *src = &api_classes[f->derived_cls];
    AUTOFREE char *sql = xasprintf("SELECT \"_ref\" FROM \"%s\" WHERE \"%s\" = ? ORDER BY rowid",
                                   src->name, src->fields[f->derived_field].name);
    struct refs_ud r = {xv_new_array()};
    AUTO(xv) *rv = xv_new_string(ref);
    const xv *a[] = {rv};
    db_query(t->s->db, sql, a, 1, collect_refs, &r);
    return r.arr;
}

/* For reading many records: every reverse reference of a class fetched with one query per
 * field into a hash from target ref to the array of source refs. */
struct rmap_entry {
    char *key;
    xv *refs;
};

struct rmap {
    struct rmap_entry *slots;
    size_t n; /* power of two */
};

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static struct rmap_entry *rmap_slot(struct rmap *m, const char *key)
{
    size_t i = str_hash(key) & (m->n - 1);
    while (m->slots[i].key && strcmp(m->slots[i].key, key) != 0)
        i = (i + 1) & (m->n - 1);
    return &m->slots[i];
}

struct rmap_ud {
    struct rmap *m;
    size_t used;
};

static int rmap_row(void *ud, const db_row *row)
{
    struct rmap_ud *r = ud;
    if (r->used * 2 >= r->m->n) { /* grow */
        struct rmap old = *r->m;
        r->m->n *= 2;
        r->m->slots = xcalloc(r->m->n, sizeof(struct rmap_entry));
        for (size_t i = 0; i < old.n; i++)
            if (old.slots[i].key)
                *rmap_slot(r->m, old.slots[i].key) = old.slots[i];
        free(old.slots);
    }
    struct rmap_entry *e = rmap_slot(r->m, db_row_text(row, 0, NULL));
    if (!e->key) {
        e->key = xstrdup(db_row_text(row, 0, NULL));
        e->refs = xv_new_array();
        r->used++;
    }
    xv_array_append(e->refs, xv_new_string(db_row_text(row, 1, NULL)));
    return 0;
}

static void rmap_free(struct rmap *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->slots[i].key);
        xv_free(m->slots[i].refs);
    }
    free(m->slots);
}

/* One map per field of c (NULL for stored fields); free with rmaps_free. */
static struct rmap *rmaps_build(store_txn *t, const api_class *c)
{
    struct rmap *maps = xcalloc(c->nfields, sizeof(struct rmap));
    for (size_t k = 0; k < c->nfields; k++) {
        const api_field *f = &c->fields[k];
        if (stored(f))
            continue;
        const api_class *src = &api_classes[f->derived_cls];
        maps[k].n = 64;
        maps[k].slots = xcalloc(maps[k].n, sizeof(struct rmap_entry));
        AUTOFREE char *sql = xasprintf("SELECT \"%s\", \"_ref\" FROM \"%s\" ORDER BY rowid",
                                       src->fields[f->derived_field].name, src->name);
        struct rmap_ud ud = {&maps[k], 0};
        db_query(t->s->db, sql, NULL, 0, rmap_row, &ud);
    }
    return maps;
}

static void rmaps_free(const api_class *c, struct rmap *maps)
{
    if (!maps)
        return;
    for (size_t k = 0; k < c->nfields; k++)
        if (maps[k].slots)
            rmap_free(&maps[k]);
    free(maps);
}

static xv *derived_from_map(struct rmap *m, const char *ref)
{
    struct rmap_entry *e = rmap_slot(m, ref);
    return e->key ? xv_copy(e->refs) : xv_new_array();
}

/* Builds a record from a row of select_cols (column 0 is the ref); maps (optional) holds
 * the reverse references prefetched by rmaps_build. */
static xv *row_record_with(store_txn *t, const api_class *c, const db_row *row, struct rmap *maps)
{
    xv *rec = xv_new_struct_cap(c->nfields);
    const char *ref = db_row_text(row, 0, NULL);
    size_t col = 3;
    for (size_t k = 0; k < c->nfields; k++) {
        const api_field *f = &c->fields[k];
        xv *v = stored(f) ? column_value(f, row, col++)
                : maps    ? derived_from_map(&maps[k], ref)
                          : derived_value(t, f, ref);
        xv_struct_append(rec, f->name, v); /* field names are unique */
    }
    return rec;
}

static xv *row_record(store_txn *t, const api_class *c, const db_row *row)
{
    return row_record_with(t, c, row, NULL);
}

struct rec_ud {
    store_txn *t;
    const api_class *c;
    xv *out;           /* record (one) or map (many) or array of refs */
    int mode;          /* 0 one record, 1 map ref->record, 2 refs */
    struct rmap *maps; /* mode 1: prefetched reverse references */
};

static int rec_row(void *ud, const db_row *row)
{
    struct rec_ud *r = ud;
    if (r->mode == 2) {
        xv_array_append(r->out, xv_new_string(db_row_text(row, 0, NULL)));
        return 0;
    }
    xv *rec = row_record_with(r->t, r->c, row, r->maps);
    if (r->mode == 0) {
        r->out = rec;
        return 1;
    }
    xv_struct_append(r->out, db_row_text(row, 0, NULL), rec); /* refs are primary keys */
    return 0;
}

static xerr *handle_invalid(const api_class *c, const char *ref)
{
    return xerr_new("HANDLE_INVALID", c->name, ref);
}

static int count_row(void *ud, const db_row *row)
{
    *(int64_t *)ud = db_row_int(row, 0);
    return 0;
}

bool st_exists(store_txn *t, const api_class *c, const char *ref)
{
    AUTOFREE char *sql = xasprintf("SELECT COUNT(*) FROM \"%s\" WHERE \"_ref\" = ?", c->name);
    AUTO(xv) *rv = xv_new_string(ref);
    const xv *a[] = {rv};
    int64_t n = 0;
    db_query(t->s->db, sql, a, 1, count_row, &n);
    return n > 0;
}

int64_t st_count(store_txn *t, const api_class *c)
{
    AUTOFREE char *sql = xasprintf("SELECT COUNT(*) FROM \"%s\"", c->name);
    int64_t n = 0;
    db_query(t->s->db, sql, NULL, 0, count_row, &n);
    return n;
}

xerr *st_get_record(store_txn *t, const api_class *c, const char *ref, xv **ret)
{
    AUTOFREE char *sql =
        xasprintf("SELECT %s FROM \"%s\" WHERE \"_ref\" = ?", t->s->select_cols[c->id], c->name);
    AUTO(xv) *rv = xv_new_string(ref);
    const xv *a[] = {rv};
    struct rec_ud r = {t, c, NULL, 0, NULL};
    int q = db_query(t->s->db, sql, a, 1, rec_row, &r);
    if (q < 0)
        return db_error(q);
    if (!r.out)
        return handle_invalid(c, ref);
    *ret = r.out;
    return NULL;
}

struct field_ud {
    const api_field *f;
    xv *out;
};

static int field_row(void *ud, const db_row *row)
{
    struct field_ud *r = ud;
    r->out = column_value(r->f, row, 0);
    return 1;
}

xerr *st_get_field(store_txn *t, const api_class *c, const char *ref, int field, xv **ret)
{
    const api_field *f = &c->fields[field];
    if (!stored(f)) {
        if (!st_exists(t, c, ref))
            return handle_invalid(c, ref);
        *ret = derived_value(t, f, ref);
        return NULL;
    }
    AUTOFREE char *sql =
        xasprintf("SELECT \"%s\" FROM \"%s\" WHERE \"_ref\" = ?", f->name, c->name);
    AUTO(xv) *rv = xv_new_string(ref);
    const xv *a[] = {rv};
    struct field_ud r = {f, NULL};
    int q = db_query(t->s->db, sql, a, 1, field_row, &r);
    if (q < 0)
        return db_error(q);
    if (!r.out)
        return handle_invalid(c, ref);
    *ret = r.out;
    return NULL;
}

/* Marks the objects a reference field points at as changed (their derived sets moved). */
static void touch_targets(store_txn *t, const api_class *c, int field, const char *target)
{
    if (!target || strcmp(target, "OpaqueRef:NULL") == 0 || !*target)
        return;
    for (size_t i = 0; i < api_nclasses; i++) {
        const api_class *tc = &api_classes[i];
        for (size_t k = 0; k < tc->nfields; k++) {
            const api_field *f = &tc->fields[k];
            if (f->derived_cls == c->id && f->derived_field == field && tc->table) {
                AUTOFREE char *sql =
                    xasprintf("UPDATE \"%s\" SET \"_gen\" = ? WHERE \"_ref\" = ?", tc->name);
                AUTO(xv) *g = xv_new_int(t->gen);
                AUTO(xv) *rv = xv_new_string(target);
                const xv *a[] = {g, rv};
                db_exec(t->s->db, sql, a, 2);
            }
        }
    }
}

static bool is_reverse_source(const api_class *c, int field)
{
    for (size_t i = 0; i < api_nclasses; i++)
        for (size_t k = 0; k < api_classes[i].nfields; k++)
            if (api_classes[i].fields[k].derived_cls == c->id &&
                api_classes[i].fields[k].derived_field == field)
                return true;
    return false;
}

static void mark_dirty(store_txn *t, const api_class *c)
{
    if (c->events)
        t->dirty = true;
}

xerr *st_set_field(store_txn *t, const api_class *c, const char *ref, int field, const xv *value)
{
    const api_field *f = &c->fields[field];
    if (!stored(f))
        return xerr_internal("field %s.%s is derived", c->name, f->name);
    AUTO(xv) *old = NULL;
    bool rev = is_reverse_source(c, field);
    if (rev) {
        xerr *e = st_get_field(t, c, ref, field, &old);
        if (e)
            return e;
    }
    AUTOFREE char *sql = xasprintf("UPDATE \"%s\" SET \"%s\" = ?, \"_gen\" = ? WHERE \"_ref\" = ?",
                                   c->name, f->name);
    AUTO(xv) *g = xv_new_int(t->gen);
    AUTO(xv) *rv = xv_new_string(ref);
    const xv *a[] = {value, g, rv};
    int r = db_exec(t->s->db, sql, a, 3);
    if (r < 0)
        return db_error(r);
    if (db_changes(t->s->db) == 0)
        return handle_invalid(c, ref);
    mark_dirty(t, c);
    if (rev && !xv_equal(old, value)) {
        touch_targets(t, c, field, xv_str(old));
        touch_targets(t, c, field, xv_str(value));
    }
    return NULL;
}

xerr *st_create(store_txn *t, const api_class *c, const char *ref, const xv *record, char **ret_ref)
{
    AUTOFREE char *newref = ref ? xstrdup(ref) : ref_new();
    sbuf cols = SBUF_INIT, qs = SBUF_INIT;
    sbuf_puts(&cols, "\"_ref\", \"_gen\", \"_cgen\"");
    sbuf_puts(&qs, "?, ?, ?");
    size_t n = 3;
    xv **vals = xcalloc(c->nfields + 3, sizeof(xv *));
    vals[0] = xv_new_string(newref);
    vals[1] = xv_new_int(t->gen);
    vals[2] = xv_new_int(t->gen);
    for (size_t k = 0; k < c->nfields; k++) {
        const api_field *f = &c->fields[k];
        if (!stored(f))
            continue;
        const xv *v = xv_struct_get(record, f->name);
        xv *val = v ? xv_copy(v) : api_field_default(f);
        if (strcmp(f->name, "uuid") == 0 && (!xv_str(val) || !*xv_str(val))) {
            char u[37];
            uuid_random(u);
            xv_free(val);
            val = xv_new_string(u);
        }
        sbuf_printf(&cols, ", \"%s\"", f->name);
        sbuf_puts(&qs, ", ?");
        vals[n++] = val;
    }
    AUTOFREE char *sql =
        xasprintf("INSERT INTO \"%s\" (%s) VALUES (%s)", c->name, cols.data, qs.data);
    sbuf_release(&cols);
    sbuf_release(&qs);
    int r = db_exec(t->s->db, sql, (const xv *const *)vals, n);
    xerr *e = NULL;
    if (r == -EEXIST) {
        const xv *u = xv_struct_get(record, "uuid");
        e = xerr_new("DB_UNIQUENESS_CONSTRAINT_VIOLATION", c->name, "uuid",
                     xv_str(u) ? xv_str(u) : "");
    } else if (r < 0)
        e = db_error(r);
    if (!e) {
        mark_dirty(t, c);
        for (size_t k = 0; k < c->nfields; k++)
            if (stored(&c->fields[k]) && is_reverse_source(c, (int)k))
                touch_targets(t, c, (int)k, xv_struct_get_str(record, c->fields[k].name));
    }
    for (size_t i = 0; i < n; i++)
        xv_free(vals[i]);
    free(vals);
    if (e)
        return e;
    if (ret_ref)
        *ret_ref = TAKE_PTR(newref);
    return NULL;
}

xerr *st_destroy(store_txn *t, const api_class *c, const char *ref)
{
    AUTO(xv) *rec = NULL;
    xerr *e = st_get_record(t, c, ref, &rec);
    if (e)
        return e;
    AUTOFREE char *sql = xasprintf("DELETE FROM \"%s\" WHERE \"_ref\" = ?", c->name);
    AUTO(xv) *rv = xv_new_string(ref);
    const xv *a[] = {rv};
    int r = db_exec(t->s->db, sql, a, 1);
    if (r < 0)
        return db_error(r);
    if (c->events) {
        AUTO(xv) *g = xv_new_int(t->gen);
        AUTO(xv) *cl = xv_new_string(c->name);
        const xv *u = xv_struct_get(rec, "uuid");
        const xv *b[] = {g, cl, rv, u};
        r = db_exec(t->s->db, "INSERT INTO _deleted (gen, class, ref, uuid) VALUES (?, ?, ?, ?)", b,
                    4);
        if (r < 0)
            return db_error(r);
    }
    mark_dirty(t, c);
    for (size_t k = 0; k < c->nfields; k++)
        if (stored(&c->fields[k]) && is_reverse_source(c, (int)k))
            touch_targets(t, c, (int)k, xv_struct_get_str(rec, c->fields[k].name));
    return NULL;
}

xerr *st_touch(store_txn *t, const api_class *c, const char *ref)
{
    AUTOFREE char *sql = xasprintf("UPDATE \"%s\" SET \"_gen\" = ? WHERE \"_ref\" = ?", c->name);
    AUTO(xv) *g = xv_new_int(t->gen);
    AUTO(xv) *rv = xv_new_string(ref);
    const xv *a[] = {g, rv};
    int r = db_exec(t->s->db, sql, a, 2);
    if (r < 0)
        return db_error(r);
    if (db_changes(t->s->db) == 0)
        return handle_invalid(c, ref);
    mark_dirty(t, c);
    return NULL;
}

static xerr *select_many(store_txn *t, const api_class *c, const char *where, const xv *const *args,
                         size_t nargs, int mode, xv **ret)
{
    AUTOFREE char *sql = xasprintf("SELECT %s FROM \"%s\"%s%s ORDER BY rowid",
                                   mode == 2 ? "\"_ref\"" : t->s->select_cols[c->id], c->name,
                                   where ? " WHERE " : "", where ? where : "");
    struct rec_ud r = {t, c, mode == 2 ? xv_new_array() : xv_new_struct(), mode,
                       mode == 1 ? rmaps_build(t, c) : NULL};
    int q = db_query(t->s->db, sql, args, nargs, rec_row, &r);
    rmaps_free(c, r.maps);
    if (q < 0) {
        xv_free(r.out);
        return db_error(q);
    }
    *ret = r.out;
    return NULL;
}

xerr *st_get_all(store_txn *t, const api_class *c, const char *where, const xv *const *args,
                 size_t nargs, xv **ret)
{
    return select_many(t, c, where, args, nargs, 2, ret);
}

xerr *st_get_all_records(store_txn *t, const api_class *c, const char *where, const xv *const *args,
                         size_t nargs, xv **ret)
{
    return select_many(t, c, where, args, nargs, 1, ret);
}

xerr *st_ref_by_uuid(store_txn *t, const api_class *c, const char *uuid, char **ret_ref)
{
    AUTOFREE char *sql = xasprintf("SELECT \"_ref\" FROM \"%s\" WHERE \"uuid\" = ?", c->name);
    AUTO(xv) *u = xv_new_string(uuid);
    const xv *a[] = {u};
    struct refs_ud r = {xv_new_array()};
    int q = db_query(t->s->db, sql, a, 1, collect_refs, &r);
    AUTO(xv) *arr = r.arr;
    if (q < 0)
        return db_error(q);
    if (xv_array_len(arr) == 0)
        return xerr_new("UUID_INVALID", c->name, uuid);
    *ret_ref = xstrdup(xv_str(xv_array_get(arr, 0)));
    return NULL;
}

/* ---- events ---- */

static xv *event_record(int64_t gen, const api_class *c, const char *op, const char *ref)
{
    xv *ev = xv_new_struct();
    char id[32];
    snprintf(id, sizeof(id), "%" PRId64, gen);
    xv_struct_set(ev, "id", xv_new_string(id));
    xv_struct_set(ev, "timestamp", xv_new_string("0.0"));
    xv_struct_set(ev, "class", xv_new_string(c->lname));
    xv_struct_set(ev, "operation", xv_new_string(op));
    xv_struct_set(ev, "ref", xv_new_string(ref));
    return ev;
}

struct chg_ud {
    store_txn *t;
    const api_class *c;
    int64_t since;
    xv *events;
};

static int chg_row(void *ud, const db_row *row)
{
    struct chg_ud *r = ud;
    int64_t gen = db_row_int(row, 1), cgen = db_row_int(row, 2);
    const char *ref = db_row_text(row, 0, NULL);
    xv *ev = event_record(gen, r->c, cgen > r->since ? "add" : "mod", ref);
    xv_struct_set(ev, "snapshot", row_record(r->t, r->c, row));
    xv_array_append(r->events, ev);
    return 0;
}

static int del_row(void *ud, const db_row *row)
{
    struct chg_ud *r = ud;
    xv *ev = event_record(db_row_int(row, 0), r->c, "del", db_row_text(row, 1, NULL));
    xv_array_append(r->events, ev);
    return 0;
}

xerr *st_changes(store_txn *t, const api_class *c, int64_t since, const char *only_ref, xv *events)
{
    if (!c->table)
        return NULL;
    struct chg_ud r = {t, c, since, events};
    AUTO(xv) *g = xv_new_int(since < 0 ? -1 : since);
    AUTO(xv) *rv = only_ref ? xv_new_string(only_ref) : NULL;
    const xv *a[] = {g, rv};
    AUTOFREE char *sql =
        xasprintf("SELECT %s FROM \"%s\" WHERE \"_gen\" > ?%s ORDER BY \"_gen\"",
                  t->s->select_cols[c->id], c->name, only_ref ? " AND \"_ref\" = ?" : "");
    int q = db_query(t->s->db, sql, a, only_ref ? 2 : 1, chg_row, &r);
    if (q < 0)
        return db_error(q);
    if (since >= 0) {
        AUTO(xv) *cl = xv_new_string(c->name);
        const xv *b[] = {g, cl, rv};
        q = db_query(t->s->db,
                     only_ref
                         ? "SELECT gen, ref FROM _deleted WHERE gen > ? AND class = ? AND ref = "
                           "? ORDER BY gen"
                         : "SELECT gen, ref FROM _deleted WHERE gen > ? AND class = ? ORDER BY gen",
                     b, only_ref ? 3 : 2, del_row, &r);
        if (q < 0)
            return db_error(q);
    }
    return NULL;
}

int64_t st_oldest_tombstone_gen(store_txn *t)
{
    int64_t n = 0;
    db_query(t->s->db, "SELECT COALESCE(MIN(gen), 0) FROM _deleted", NULL, 0, count_row, &n);
    return n;
}

/* ---- one-shot accessors ---- */

enum one_op { ONE_RECORD, ONE_ALL_RECORDS, ONE_SET_FIELD, ONE_CREATE, ONE_DESTROY };

struct one {
    enum one_op op;
    const api_class *c;
    const char *ref;
    const char *where;
    const xv *const *args;
    size_t nargs;
    int field;
    const xv *value;
    xv *out;
    char *out_ref;
};

static xerr *one_txn(store_txn *t, void *ud)
{
    struct one *o = ud;
    switch (o->op) {
    case ONE_RECORD:
        return st_get_record(t, o->c, o->ref, &o->out);
    case ONE_ALL_RECORDS:
        return st_get_all_records(t, o->c, o->where, o->args, o->nargs, &o->out);
    case ONE_SET_FIELD:
        return st_set_field(t, o->c, o->ref, o->field, o->value);
    case ONE_CREATE:
        return st_create(t, o->c, NULL, o->value, &o->out_ref);
    case ONE_DESTROY:
        return st_destroy(t, o->c, o->ref);
    }
    return NULL;
}

xerr *store_get_record(store *s, const api_class *c, const char *ref, xv **ret)
{
    struct one o = {.op = ONE_RECORD, .c = c, .ref = ref};
    xerr *e = store_read(s, one_txn, &o);
    if (!e)
        *ret = o.out;
    return e;
}

xerr *store_get_all_records(store *s, const api_class *c, const char *where, const xv *const *args,
                            size_t nargs, xv **ret)
{
    struct one o = {.op = ONE_ALL_RECORDS, .c = c, .where = where, .args = args, .nargs = nargs};
    xerr *e = store_read(s, one_txn, &o);
    if (!e)
        *ret = o.out;
    return e;
}

xerr *store_set_field(store *s, const api_class *c, const char *ref, int field, const xv *value)
{
    struct one o = {.op = ONE_SET_FIELD, .c = c, .ref = ref, .field = field, .value = value};
    return store_write(s, one_txn, &o);
}

xerr *store_create(store *s, const api_class *c, const xv *record, char **ret_ref)
{
    struct one o = {.op = ONE_CREATE, .c = c, .value = record};
    xerr *e = store_write(s, one_txn, &o);
    if (!e && ret_ref)
        *ret_ref = o.out_ref;
    else
        free(o.out_ref);
    return e;
}

xerr *store_destroy(store *s, const api_class *c, const char *ref)
{
    struct one o = {.op = ONE_DESTROY, .c = c, .ref = ref};
    return store_write(s, one_txn, &o);
}
