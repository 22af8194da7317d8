/* Unit tests for storage/sr: the file driver's SR and VDI operations, VHD trees, GC (and its
 * per-chain guard), copy (also into an existing VDI), import staging, probe, attach counts and
 * snapshot journal recovery. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "mem.h"
#include "sr.h"
#include "sr-priv.h"
#include "vhd.h"

#define MiB (1ull << 20)

static char tmpdir[64];
static const sr_driver *fd_;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    (void)state;
    strcpy(tmpdir,
           access("/dev/shm", W_OK) == 0 ? "/dev/shm/test_sr.XXXXXX" : "/tmp/test_sr.XXXXXX");
    fd_ = sr_driver_lookup("file");
    return mkdtemp(tmpdir) && fd_ ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *loc(const char *name)
{
    return xasprintf("%s/%s", tmpdir, name);
}

static sr *new_sr(const char *name)
{
    AUTOFREE char *l = loc(name);
    assert_int_equal(sr_create(fd_, l), 0);
    sr *s = NULL;
    assert_int_equal(sr_attach(fd_, l, &s), 0);
    return s;
}

static char *vdi_path(sr *s, const char *uuid)
{
    return xasprintf("%s/%s.vhd", sr_location(s), uuid);
}

static void pattern(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
}

static void vdi_write(sr *s, const char *uuid, uint64_t off, size_t len, unsigned seed)
{
    AUTOFREE char *p = vdi_path(s, uuid);
    vhd *v = NULL;
    assert_int_equal(vhd_open(p, VHD_OPEN_RDWR, &v), 0);
    AUTOFREE uint8_t *buf = xmalloc(len);
    pattern(buf, len, seed);
    assert_int_equal(vhd_write(v, buf, off, len), 0);
    assert_int_equal(vhd_flush(v), 0);
    vhd_close(v);
}

/* Asserts the VDI reads the pattern seed at [off, off+len) (seed 0: zeros). */
static void vdi_expect(sr *s, const char *uuid, uint64_t off, size_t len, unsigned seed)
{
    AUTOFREE char *p = vdi_path(s, uuid);
    vhd *v = NULL;
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &v), 0);
    AUTOFREE uint8_t *buf = xmalloc(len), *want = xcalloc(1, len);
    if (seed)
        pattern(want, len, seed);
    assert_int_equal(vhd_read(v, buf, off, len), 0);
    vhd_close(v);
    assert_memory_equal(buf, want, len);
    assert_int_equal(vhd_check(p, 0, NULL), 0);
}

static size_t count_files(sr *s)
{
    struct sr_vdi_info *v = NULL;
    size_t n = 0;
    assert_int_equal(sr_scan(s, &v, &n), 0);
    free(v);
    return n;
}

static const struct sr_vdi_info *find(const struct sr_vdi_info *v, size_t n, const char *uuid)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].uuid, uuid))
            return &v[i];
    return NULL;
}

static void test_sr_lifecycle(void **state)
{
    (void)state;
    assert_null(sr_driver_lookup("nfs"));
    AUTOFREE char *l = loc("life");
    assert_int_equal(sr_create(fd_, l), 0);
    assert_int_equal(sr_create(fd_, "relative/path"), -EINVAL);
    sr *s = NULL;
    assert_int_equal(sr_attach(fd_, l, &s), 0);
    sr *s2 = NULL;
    assert_int_equal(sr_attach(fd_, l, &s2), -EBUSY);
    /* a non-empty directory is not formatted twice */
    assert_int_equal(sr_create(fd_, l), -EEXIST);
    struct sr_stat st;
    assert_int_equal(sr_stat(s, &st), 0);
    assert_true(st.physical_size > 0 && st.physical_utilisation <= st.physical_size);
    struct sr_vdi_info vi;
    assert_int_equal(sr_vdi_create(s, 3 * MiB, &vi), 0);
    assert_int_equal(vi.virtual_size, 4 * MiB); /* rounded up to 2 MiB */
    assert_string_equal(vi.format, "vhd");
    assert_false(vi.hidden);
    assert_int_equal(count_files(s), 1);
    /* attached elsewhere: delete refuses */
    assert_int_equal(sr_delete(fd_, l), -EBUSY);
    sr_detach(s);
    assert_int_equal(sr_delete(fd_, l), -ENOTEMPTY);
    assert_int_equal(sr_attach(fd_, l, &s), 0);
    assert_int_equal(sr_vdi_delete(s, vi.uuid), 0);
    assert_int_equal(sr_vdi_delete(s, vi.uuid), -ENOENT);
    sr_detach(s);
    assert_int_equal(sr_delete(fd_, l), 0);
    assert_int_equal(access(l, F_OK), -1);
    AUTOFREE char *missing = loc("missing");
    assert_int_equal(sr_attach(fd_, missing, &s), -ENOENT);
}

static void test_sizes(void **state)
{
    (void)state;
    uint64_t r;
    assert_int_equal(sr_round_size(0, &r), 0);
    assert_int_equal(r, 2 * MiB);
    assert_int_equal(sr_round_size(2 * MiB + 1, &r), 0);
    assert_int_equal(r, 4 * MiB);
    assert_int_equal(sr_round_size(-1, &r), -EINVAL);
    assert_int_equal(sr_round_size((int64_t)SR_VHD_MAX_SIZE, &r), 0);
    assert_int_equal(sr_round_size((int64_t)SR_VHD_MAX_SIZE + 1, &r), -EINVAL);
}

static void test_snapshot_tree_and_gc(void **state)
{
    (void)state;
    AUTO(sr) *s = new_sr("snap");
    struct sr_vdi_info a, snap, base;
    assert_int_equal(sr_vdi_create(s, 8 * MiB, &a), 0);
    vdi_write(s, a.uuid, 0, 64 * 1024, 1);
    vdi_write(s, a.uuid, 5 * MiB, 4096, 2);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &snap, &base), 0);
    assert_true(base.hidden && base.read_only);
    assert_string_equal(snap.parent_uuid, base.uuid);
    /* the VDI keeps its uuid and is now a child of the base */
    struct sr_vdi_info ai;
    assert_int_equal(sr_vdi_info(s, a.uuid, &ai), 0);
    assert_string_equal(ai.parent_uuid, base.uuid);
    assert_false(ai.hidden);
    struct sr_vdi_info *v = NULL;
    size_t n = 0;
    assert_int_equal(sr_scan(s, &v, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(find(v, n, base.uuid)->children, 2);
    assert_true(find(v, n, base.uuid)->hidden);
    free(v);
    /* both leaves read the data; writes to the VDI do not reach the snapshot */
    vdi_expect(s, snap.uuid, 0, 64 * 1024, 1);
    vdi_write(s, a.uuid, 0, 4096, 3);
    vdi_expect(s, a.uuid, 0, 4096, 3);
    vdi_expect(s, snap.uuid, 0, 4096, 1);
    vdi_expect(s, a.uuid, 5 * MiB, 4096, 2);
    /* a base copy is the GC's: not deleted, resized, snapshot or attached by callers */
    struct sr_backend be = {0};
    assert_int_equal(sr_vdi_delete(s, base.uuid), -EPERM);
    assert_int_equal(sr_vdi_snapshot(s, base.uuid, &snap, NULL), -EPERM);
    assert_int_equal(sr_vdi_attach(s, base.uuid, false, &be), -EPERM);
    /* deleting the snapshot: the GC merges the VDI into the base and renames it back */
    assert_int_equal(sr_vdi_delete(s, snap.uuid), 0);
    assert_int_equal(count_files(s), 2); /* the base waits for the GC */
    struct sr_gc_stats gs;
    assert_int_equal(sr_gc(s, &gs), 0);
    assert_int_equal(gs.coalesced, 1);
    assert_int_equal(count_files(s), 1);
    assert_int_equal(sr_vdi_info(s, a.uuid, &ai), 0);
    assert_false(ai.hidden);
    assert_string_equal(ai.parent_uuid, "");
    vdi_expect(s, a.uuid, 0, 4096, 3);
    vdi_expect(s, a.uuid, 5 * MiB, 4096, 2);
}

static void test_clone_and_chain_gc(void **state)
{
    (void)state;
    AUTO(sr) *s = new_sr("clone");
    struct sr_vdi_info a, c, s1, s2;
    assert_int_equal(sr_vdi_create(s, 4 * MiB, &a), 0);
    vdi_write(s, a.uuid, 0, 8192, 5);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &s1, NULL), 0);
    vdi_write(s, a.uuid, 2 * MiB, 8192, 6);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &s2, NULL), 0);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &c, NULL), 0); /* a clone is the same tree */
    vdi_expect(s, c.uuid, 0, 8192, 5);
    vdi_expect(s, c.uuid, 2 * MiB, 8192, 6);
    vdi_expect(s, s1.uuid, 2 * MiB, 8192, 0);
    /* deleting the original: the clone keeps its data */
    assert_int_equal(sr_vdi_delete(s, a.uuid), 0);
    assert_int_equal(sr_gc(s, NULL), 0);
    assert_int_equal(sr_vdi_delete(s, s2.uuid), 0);
    assert_int_equal(sr_gc(s, NULL), 0);
    vdi_expect(s, c.uuid, 0, 8192, 5);
    vdi_expect(s, c.uuid, 2 * MiB, 8192, 6);
    assert_int_equal(sr_vdi_delete(s, s1.uuid), 0);
    assert_int_equal(sr_gc(s, NULL), 0);
    /* everything collapsed to one file */
    assert_int_equal(count_files(s), 1);
    vdi_expect(s, c.uuid, 0, 8192, 5);
    vdi_expect(s, c.uuid, 2 * MiB, 8192, 6);
    struct sr_gc_stats st;
    assert_int_equal(sr_gc(s, &st), 0);
    assert_int_equal(st.removed + st.coalesced, 0);
}

static void test_resize_attach(void **state)
{
    (void)state;
    AUTO(sr) *s = new_sr("resize");
    struct sr_vdi_info a, sn;
    assert_int_equal(sr_vdi_create(s, 4 * MiB, &a), 0);
    vdi_write(s, a.uuid, 2 * MiB, 4096, 9);
    assert_int_equal(sr_vdi_resize(s, a.uuid, 2 * MiB), -ENOTSUP);
    assert_int_equal(sr_vdi_resize(s, a.uuid, 10 * MiB + 5), 0);
    assert_int_equal(sr_vdi_info(s, a.uuid, &a), 0);
    assert_int_equal(a.virtual_size, 12 * MiB);
    vdi_expect(s, a.uuid, 2 * MiB, 4096, 9);
    vdi_expect(s, a.uuid, 10 * MiB, 4096, 0);
    struct sr_backend be = {0};
    assert_int_equal(sr_vdi_attach(s, a.uuid, true, &be), 0);
    AUTOFREE char *p = vdi_path(s, a.uuid);
    assert_string_equal(be.path, p);
    assert_string_equal(be.format, "vhd");
    sr_backend_clear(&be);
    assert_true(sr_vdi_attached(s, a.uuid));
    assert_int_equal(sr_vdi_resize(s, a.uuid, 20 * MiB), -EBUSY);
    assert_int_equal(sr_vdi_delete(s, a.uuid), -EBUSY);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &sn, NULL), -EBUSY);
    assert_int_equal(sr_vdi_detach(s, a.uuid), 0);
    assert_int_equal(sr_vdi_detach(s, a.uuid), -ENOENT);
    assert_false(sr_vdi_attached(s, a.uuid));
    /* read-only attach allows a snapshot (nobody writes the old leaf) */
    assert_int_equal(sr_vdi_attach(s, a.uuid, false, &be), 0);
    sr_backend_clear(&be);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &sn, NULL), 0);
    /* a resized child of a base: the chain reads zeros past the old end */
    assert_int_equal(sr_vdi_resize(s, sn.uuid, 16 * MiB), 0);
    vdi_expect(s, sn.uuid, 2 * MiB, 4096, 9);
    vdi_expect(s, sn.uuid, 14 * MiB, 4096, 0);
    assert_int_equal(sr_vdi_detach(s, a.uuid), 0);
    assert_int_equal(sr_vdi_delete(s, a.uuid), 0);
}

static void test_copy(void **state)
{
    (void)state;
    AUTO(sr) *s = new_sr("copy-src");
    AUTO(sr) *d = new_sr("copy-dst");
    struct sr_vdi_info a, sn, cp, cp2;
    assert_int_equal(sr_vdi_create(s, 6 * MiB, &a), 0);
    vdi_write(s, a.uuid, 0, 4096, 11);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &sn, NULL), 0);
    vdi_write(s, a.uuid, 4 * MiB, 4096, 12);
    assert_int_equal(sr_vdi_copy(s, a.uuid, d, &cp), 0);
    assert_int_equal(cp.virtual_size, 6 * MiB);
    assert_string_equal(cp.parent_uuid, "");
    vdi_expect(d, cp.uuid, 0, 4096, 11);
    vdi_expect(d, cp.uuid, 4 * MiB, 4096, 12);
    vdi_expect(d, cp.uuid, 2 * MiB, 4096, 0);
    /* sparse: only the two touched blocks are allocated */
    assert_true(cp.physical_size < 5 * MiB);
    /* into the same SR too */
    assert_int_equal(sr_vdi_copy(s, sn.uuid, s, &cp2), 0);
    vdi_expect(s, cp2.uuid, 0, 4096, 11);
    vdi_expect(s, cp2.uuid, 4 * MiB, 4096, 0);
    char bogus[37] = "00000000-0000-4000-8000-000000000000";
    assert_int_equal(sr_vdi_copy(s, bogus, d, &cp2), -ENOENT);
    assert_int_equal(sr_vdi_copy(s, "../etc", d, &cp2), -EINVAL);
}

/* A snapshot interrupted after the link and hide: attach rolls it back. */
static void test_journal_recovery(void **state)
{
    (void)state;
    AUTOFREE char *l = loc("journal");
    sr *s = new_sr("journal");
    struct sr_vdi_info a;
    assert_int_equal(sr_vdi_create(s, 4 * MiB, &a), 0);
    vdi_write(s, a.uuid, 0, 4096, 21);
    sr_detach(s);
    const char *base = "11111111-2222-4333-8444-555555555555";
    AUTOFREE char *leaf = xasprintf("%s/%s.vhd", l, a.uuid);
    AUTOFREE char *bp = xasprintf("%s/%s.vhd", l, base);
    AUTOFREE char *jp = xasprintf("%s/.journal-snapshot-%s", l, a.uuid);
    AUTOFREE char *body = xasprintf("%s\n", base);
    FILE *f = fopen(jp, "w");
    assert_non_null(f);
    fputs(body, f);
    fclose(f);
    assert_int_equal(link(leaf, bp), 0);
    assert_int_equal(vhd_set_hidden(bp, true), 0);
    assert_int_equal(sr_attach(fd_, l, &s), 0);
    assert_int_equal(access(jp, F_OK), -1);
    assert_int_equal(access(bp, F_OK), -1);
    struct sr_vdi_info ai;
    assert_int_equal(sr_vdi_info(s, a.uuid, &ai), 0);
    assert_false(ai.hidden);
    vdi_expect(s, a.uuid, 0, 4096, 21);
    assert_int_equal(count_files(s), 1);
    sr_detach(s);
}

static void test_chain_limit(void **state)
{
    (void)state;
    AUTO(sr) *s = new_sr("chain");
    struct sr_vdi_info a, sn;
    assert_int_equal(sr_vdi_create(s, 2 * MiB, &a), 0);
    int r = 0, i;
    for (i = 0; i < 40 && r == 0; i++) {
        vdi_write(s, a.uuid, 0, 512, (unsigned)i + 1);
        r = sr_vdi_snapshot(s, a.uuid, &sn, NULL);
    }
    assert_int_equal(r, -ELOOP);
    assert_int_equal(i, SR_MAX_CHAIN_DEPTH);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void test_iso_library(void **state)
{
    (void)state;
    const sr_driver *iso = sr_driver_lookup("iso");
    assert_non_null(iso);
    assert_true(iso->read_only);
    AUTOFREE char *l = loc("isos");
    assert_int_equal(sr_create(iso, l), -ENOENT);
    assert_int_equal(mkdir(l, 0700), 0);
    size_t len = 3 * MiB + 1000; /* not a sector multiple */
    AUTOFREE uint8_t *data = xmalloc(len);
    pattern(data, len, 41);
    AUTOFREE char *a = xasprintf("%s/install.ISO", l);
    AUTOFREE char *b = xasprintf("%s/notes.txt", l);
    AUTOFREE char *c = xasprintf("%s/.hidden.iso", l);
    write_file(a, data, len);
    write_file(b, "x", 1);
    write_file(c, "x", 1);
    assert_int_equal(sr_create(iso, l), 0); /* an existing library is fine */
    sr *s = NULL;
    assert_int_equal(sr_attach(iso, l, &s), 0);
    struct sr_vdi_info *v = NULL;
    size_t n = 0;
    assert_int_equal(sr_scan(s, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].location, "install.ISO");
    assert_string_equal(v[0].uuid, "");
    assert_string_equal(v[0].format, "raw");
    assert_true(v[0].read_only);
    assert_int_equal(v[0].virtual_size, len);
    free(v);
    struct sr_vdi_info vi;
    struct sr_backend be = {0};
    assert_int_equal(sr_vdi_create(s, MiB, &vi), -EROFS);
    assert_int_equal(sr_vdi_delete(s, "install.ISO"), -EROFS);
    assert_int_equal(sr_vdi_snapshot(s, "install.ISO", &vi, NULL), -EROFS);
    assert_int_equal(sr_vdi_attach(s, "install.ISO", true, &be), -EROFS);
    assert_int_equal(sr_vdi_attach(s, "notes.txt", false, &be), -ENOENT);
    assert_int_equal(sr_vdi_attach(s, "install.ISO", false, &be), 0);
    assert_string_equal(be.path, a);
    assert_string_equal(be.format, "raw");
    sr_backend_clear(&be);
    assert_int_equal(sr_vdi_detach(s, "install.ISO"), 0);
    /* an ISO copied into a file SR: a VHD of the rounded size with the same bytes */
    AUTO(sr) *f = new_sr("iso-copy");
    struct sr_vdi_info cp;
    assert_int_equal(sr_vdi_copy(s, "install.ISO", f, &cp), 0);
    assert_int_equal(cp.virtual_size, 4 * MiB);
    AUTOFREE char *p = vdi_path(f, cp.uuid);
    vhd *h = NULL;
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &h), 0);
    AUTOFREE uint8_t *back = xcalloc(1, 4 * MiB);
    assert_int_equal(vhd_read(h, back, 0, 4 * MiB), 0);
    vhd_close(h);
    assert_memory_equal(back, data, len);
    for (size_t i = len; i < 4 * MiB; i++)
        assert_int_equal(back[i], 0);
    sr_detach(s);
    /* deleting the SR keeps the library's files */
    assert_int_equal(sr_delete(iso, l), 0);
    assert_int_equal(access(a, F_OK), 0);
    assert_int_equal(access(b, F_OK), 0);
}

/* The GC leaves a node whose children are attached, and merges it once they are detached. */
static void test_gc_respects_attached(void **state)
{
    (void)state;
    AUTO(sr) *s = new_sr("gc-attached");
    struct sr_vdi_info a, s1, s2;
    assert_int_equal(sr_vdi_create(s, 4 * MiB, &a), 0);
    vdi_write(s, a.uuid, 0, 4096, 51);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &s1, NULL), 0);
    vdi_write(s, a.uuid, 4096, 4096, 52);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &s2, NULL), 0);
    assert_int_equal(count_files(s), 5);
    struct sr_backend be = {0};
    assert_int_equal(sr_vdi_attach(s, a.uuid, true, &be), 0);
    sr_backend_clear(&be);
    assert_int_equal(sr_vdi_delete(s, s1.uuid), 0);
    struct sr_gc_stats gs;
    assert_int_equal(sr_gc(s, &gs), 0);
    assert_int_equal(gs.coalesced, 0);
    assert_int_equal(count_files(s), 4); /* base, inner base, A, S2 */
    assert_int_equal(sr_vdi_detach(s, a.uuid), 0);
    assert_int_equal(sr_gc(s, &gs), 0);
    assert_int_equal(gs.coalesced, 1);
    assert_int_equal(count_files(s), 3);
    vdi_expect(s, a.uuid, 0, 4096, 51);
    vdi_expect(s, a.uuid, 4096, 4096, 52);
    vdi_expect(s, s2.uuid, 4096, 4096, 52);
}

/* An inner node larger than its parent (the VDI grew between snapshots): the parent grows. */
static void test_gc_grows_parent(void **state)
{
    (void)state;
    AUTO(sr) *s = new_sr("gc-grow");
    struct sr_vdi_info a, s1, s2;
    assert_int_equal(sr_vdi_create(s, 4 * MiB, &a), 0);
    vdi_write(s, a.uuid, 0, 4096, 61);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &s1, NULL), 0);
    assert_int_equal(sr_vdi_resize(s, a.uuid, 8 * MiB), 0);
    vdi_write(s, a.uuid, 6 * MiB, 4096, 62);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &s2, NULL), 0);
    assert_int_equal(sr_vdi_delete(s, s1.uuid), 0);
    struct sr_gc_stats gs;
    assert_int_equal(sr_gc(s, &gs), 0);
    assert_int_equal(gs.coalesced, 1);
    assert_int_equal(count_files(s), 3);
    vdi_expect(s, a.uuid, 0, 4096, 61);
    vdi_expect(s, a.uuid, 6 * MiB, 4096, 62);
    vdi_expect(s, s2.uuid, 6 * MiB, 4096, 62);
    assert_int_equal(sr_vdi_info(s, s2.uuid, &s2), 0);
    assert_int_equal(s2.virtual_size, 8 * MiB);
    /* and the rest folds back into one file */
    assert_int_equal(sr_vdi_delete(s, s2.uuid), 0);
    assert_int_equal(sr_gc(s, &gs), 0);
    assert_int_equal(count_files(s), 1);
    vdi_expect(s, a.uuid, 6 * MiB, 4096, 62);
}

/* The collector in its own thread while other threads snapshot, write, read and delete: every
 * VDI keeps reading what was written to it, and the tree ends up collected. */
struct churn {
    sr *s;
    unsigned seed;
    int failures;
    int first_line; /* where the first failure happened */
    int first_rc;
};
#define CHURN_FAIL(c, rc)                                                                          \
    do {                                                                                           \
        if (!(c)->failures++) {                                                                    \
            (c)->first_line = __LINE__;                                                            \
            (c)->first_rc = (rc);                                                                  \
        }                                                                                          \
    } while (0)

static void *churn_main(void *arg)
{
    struct churn *c = arg;
    struct sr_vdi_info a, sn;
    char prev[37] = "";
    if (sr_vdi_create(c->s, 4 * MiB, &a) < 0) {
        CHURN_FAIL(c, 0);
        return NULL;
    }
    AUTOFREE uint8_t *buf = xmalloc(4096), *want = xmalloc(4096);
    for (unsigned i = 0; i < 12; i++) {
        unsigned seed = c->seed * 100 + i + 1;
        /* I/O through the attach protocol, so the collector leaves the leaf alone */
        struct sr_backend be = {0};
        vhd *v = NULL;
        if (sr_vdi_attach(c->s, a.uuid, true, &be) < 0 ||
            vhd_open(be.path, VHD_OPEN_RDWR, &v) < 0) {
            CHURN_FAIL(c, 0);
            sr_backend_clear(&be);
            break;
        }
        pattern(want, 4096, seed);
        uint64_t off = (uint64_t)(i % 2) * 2 * MiB;
        if (vhd_write(v, want, off, 4096) < 0 || vhd_flush(v) < 0)
            CHURN_FAIL(c, 0);
        vhd_close(v);
        sr_backend_clear(&be);
        sr_vdi_detach(c->s, a.uuid);
        if (sr_vdi_snapshot(c->s, a.uuid, &sn, NULL) < 0) {
            CHURN_FAIL(c, 0);
            continue;
        }
        /* the snapshot reads the data */
        if (sr_vdi_attach(c->s, sn.uuid, false, &be) == 0 &&
            vhd_open(be.path, VHD_OPEN_RDONLY, &v) == 0) {
            if (vhd_read(v, buf, off, 4096) < 0 || memcmp(buf, want, 4096))
                CHURN_FAIL(c, 0);
            vhd_close(v);
            sr_vdi_detach(c->s, sn.uuid);
        } else {
            CHURN_FAIL(c, 0);
        }
        sr_backend_clear(&be);
        /* deleting the previous one leaves an inner node for the collector to merge */
        if (prev[0] && sr_vdi_delete(c->s, prev) < 0)
            CHURN_FAIL(c, 0);
        memcpy(prev, sn.uuid, sizeof(prev));
    }
    if (prev[0] && sr_vdi_delete(c->s, prev) < 0)
        CHURN_FAIL(c, 0);
    /* the VDI still reads its last two writes */
    for (unsigned k = 10; k < 12; k++) {
        struct sr_backend be = {0};
        vhd *v = NULL;
        pattern(want, 4096, c->seed * 100 + k + 1);
        if (sr_vdi_attach(c->s, a.uuid, false, &be) < 0 ||
            vhd_open(be.path, VHD_OPEN_RDONLY, &v) < 0 ||
            vhd_read(v, buf, (uint64_t)(k % 2) * 2 * MiB, 4096) < 0 || memcmp(buf, want, 4096))
            CHURN_FAIL(c, 0);
        vhd_close(v);
        sr_backend_clear(&be);
        sr_vdi_detach(c->s, a.uuid);
    }
    if (sr_vdi_delete(c->s, a.uuid) < 0)
        CHURN_FAIL(c, 0);
    return NULL;
}

static volatile int gc_stop_flag;
static unsigned gc_merged;

static void *gc_loop(void *arg)
{
    sr *s = arg;
    while (!gc_stop_flag) {
        struct sr_gc_stats st;
        int r = sr_gc(s, &st);
        if (r < 0 && r != -EALREADY)
            return (void *)1;
        gc_merged += st.coalesced;
    }
    return NULL;
}

static void test_gc_concurrent(void **state)
{
    (void)state;
    AUTO(sr) *s = new_sr("churn");
    enum { N = 4 };
    pthread_t th[N], gct;
    struct churn c[N];
    gc_stop_flag = 0;
    assert_int_equal(pthread_create(&gct, NULL, gc_loop, s), 0);
    for (int i = 0; i < N; i++) {
        c[i] = (struct churn){.s = s, .seed = (unsigned)i + 1};
        assert_int_equal(pthread_create(&th[i], NULL, churn_main, &c[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (c[i].failures)
            fprintf(stderr, "churn %d: %d failures, first at line %d\n", i, c[i].failures,
                    c[i].first_line);
        assert_int_equal(c[i].failures, 0);
    }
    gc_stop_flag = 1;
    void *gr = NULL;
    pthread_join(gct, &gr);
    assert_null(gr);
    /* how much merging overlapped the churn depends on timing; not asserted */
    (void)gc_merged;
    assert_int_equal(sr_gc(s, NULL), 0);
    assert_int_equal(count_files(s), 0);
    DIR *d = opendir(sr_location(s));
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)))
        assert_null(strstr(de->d_name, ".vhd"));
    closedir(d);
}

/* ---- copy into an existing VDI ---------------------------------------------------------- */

/* Hash-free equality of two VDIs over len bytes from 0. */
static void vdi_same(sr *s1, const char *u1, sr *s2, const char *u2, uint64_t len)
{
    AUTOFREE char *p1 = vdi_path(s1, u1);
    AUTOFREE char *p2 = vdi_path(s2, u2);
    vhd *a = NULL, *b = NULL;
    assert_int_equal(vhd_open(p1, VHD_OPEN_RDONLY, &a), 0);
    assert_int_equal(vhd_open(p2, VHD_OPEN_RDONLY, &b), 0);
    AUTOFREE uint8_t *x = xmalloc(MiB), *y = xmalloc(MiB);
    for (uint64_t off = 0; off < len; off += MiB) {
        assert_int_equal(vhd_read(a, x, off, MiB), 0);
        assert_int_equal(vhd_read(b, y, off, MiB), 0);
        assert_memory_equal(x, y, MiB);
    }
    vhd_close(a);
    vhd_close(b);
}

static uint32_t allocated_blocks(sr *s, const char *uuid)
{
    AUTOFREE char *p = vdi_path(s, uuid);
    vhd *v = NULL;
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY | VHD_OPEN_NO_PARENT, &v), 0);
    struct vhd_info vi;
    vhd_get_info(v, &vi);
    vhd_close(v);
    return vi.allocated_blocks;
}

static void test_copy_into(void **state)
{
    (void)state;
    AUTO(sr) *s = new_sr("into-src");
    AUTO(sr) *d = new_sr("into-dst");
    struct sr_vdi_info a, base, into, small, big;
    assert_int_equal(sr_vdi_create(s, 8 * MiB, &a), 0);
    vdi_write(s, a.uuid, 0, 4096, 31);
    vdi_write(s, a.uuid, 6 * MiB, 4096, 32);
    assert_int_equal(sr_vdi_create(d, 8 * MiB, &into), 0);
    /* into's own data where the source reads zeros is zeroed; the rest is the source's */
    vdi_write(d, into.uuid, 2 * MiB, 8192, 33);
    vdi_write(d, into.uuid, 6 * MiB, 4096, 32); /* already equal: not rewritten */
    assert_int_equal(sr_vdi_copy_into(s, a.uuid, NULL, NULL, d, into.uuid), 0);
    vdi_same(s, a.uuid, d, into.uuid, 8 * MiB);
    assert_int_equal(allocated_blocks(d, into.uuid), 3);
    /* a larger target keeps its data past the source's size */
    assert_int_equal(sr_vdi_create(d, 12 * MiB, &big), 0);
    vdi_write(d, big.uuid, 10 * MiB, 4096, 34);
    assert_int_equal(sr_vdi_copy_into(s, a.uuid, NULL, NULL, d, big.uuid), 0);
    vdi_same(s, a.uuid, d, big.uuid, 8 * MiB);
    vdi_expect(d, big.uuid, 10 * MiB, 4096, 34);
    /* base_vdi: only what changed since the base is written */
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &base, NULL), 0);
    vdi_write(s, a.uuid, 4 * MiB, 4096, 35);
    vdi_write(d, into.uuid, 0, 512, 36); /* not changed in the source: left alone */
    assert_int_equal(sr_vdi_copy_into(s, a.uuid, s, base.uuid, d, into.uuid), 0);
    vdi_expect(d, into.uuid, 4 * MiB, 4096, 35);
    vdi_expect(d, into.uuid, 0, 512, 36);
    vdi_expect(d, into.uuid, 6 * MiB, 4096, 32);
    /* refusals: too small, attached, read-only SR, same VDI, base copies */
    assert_int_equal(sr_vdi_create(d, 4 * MiB, &small), 0);
    assert_int_equal(sr_vdi_copy_into(s, a.uuid, NULL, NULL, d, small.uuid), -EFBIG);
    vdi_expect(d, small.uuid, 0, 4096, 0);
    struct sr_backend be = {0};
    assert_int_equal(sr_vdi_attach(d, into.uuid, false, &be), 0);
    sr_backend_clear(&be);
    assert_int_equal(sr_vdi_copy_into(s, a.uuid, NULL, NULL, d, into.uuid), -EBUSY);
    assert_int_equal(sr_vdi_detach(d, into.uuid), 0);
    assert_int_equal(sr_vdi_copy_into(s, a.uuid, NULL, NULL, s, a.uuid), -EINVAL);
    struct sr_vdi_info ai;
    assert_int_equal(sr_vdi_info(s, a.uuid, &ai), 0);
    assert_int_equal(sr_vdi_copy_into(s, a.uuid, NULL, NULL, s, ai.parent_uuid), -EPERM);
    /* nothing stays attached */
    assert_false(sr_vdi_attached(s, a.uuid));
    assert_false(sr_vdi_attached(s, base.uuid));
    assert_false(sr_vdi_attached(d, into.uuid));
}

/* ---- import staging ----------------------------------------------------------------------- */

static void file_digest(const char *path, uint8_t **ret, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    rewind(f);
    *ret = xmalloc((size_t)n + 1);
    assert_int_equal(fread(*ret, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *ret_len = (size_t)n;
}

static void test_stage(void **state)
{
    (void)state;
    AUTOFREE char *l = loc("stage");
    sr *s = new_sr("stage");
    struct sr_vdi_info a;
    assert_int_equal(sr_vdi_create(s, 6 * MiB, &a), 0);
    vdi_write(s, a.uuid, 0, 8192, 41);
    AUTOFREE char *leaf = vdi_path(s, a.uuid);
    AUTOFREE uint8_t *before = NULL;
    size_t before_len = 0;
    file_digest(leaf, &before, &before_len);
    char *stage = NULL;
    /* only under the caller's read-write attach */
    assert_int_equal(sr_vdi_stage(s, a.uuid, &stage), -EINVAL);
    struct sr_backend be = {0};
    assert_int_equal(sr_vdi_attach(s, a.uuid, true, &be), 0);
    sr_backend_clear(&be);
    assert_int_equal(sr_vdi_stage(s, a.uuid, &stage), 0);
    /* abort: the VDI is byte for byte what it was */
    vhd *v = NULL;
    AUTOFREE uint8_t *buf = xmalloc(8192);
    pattern(buf, 8192, 42);
    assert_int_equal(vhd_open(stage, VHD_OPEN_RDWR, &v), 0);
    assert_int_equal(vhd_write(v, buf, 0, 8192), 0);
    vhd_close(v);
    assert_int_equal(count_files(s), 1); /* never scanned */
    sr_vdi_stage_abort(s, a.uuid);
    assert_int_equal(access(stage, F_OK), -1);
    free(stage);
    AUTOFREE uint8_t *after = NULL;
    size_t after_len = 0;
    file_digest(leaf, &after, &after_len);
    assert_int_equal(after_len, before_len);
    assert_memory_equal(after, before, before_len);
    /* an empty stage commits to nothing */
    assert_int_equal(sr_vdi_stage(s, a.uuid, &stage), 0);
    assert_int_equal(sr_vdi_stage_commit(s, a.uuid), 0);
    assert_int_equal(access(stage, F_OK), -1);
    free(stage);
    assert_int_equal(count_files(s), 1);
    /* a written stage becomes the leaf; the old data a hidden parent */
    assert_int_equal(sr_vdi_stage(s, a.uuid, &stage), 0);
    assert_int_equal(vhd_open(stage, VHD_OPEN_RDWR, &v), 0);
    assert_int_equal(vhd_write(v, buf, 4096, 8192), 0);
    assert_int_equal(vhd_flush(v), 0);
    vhd_close(v);
    vdi_expect(s, a.uuid, 0, 8192, 41); /* not yet */
    assert_int_equal(sr_vdi_stage_commit(s, a.uuid), 0);
    free(stage);
    vdi_expect(s, a.uuid, 4096, 8192, 42);
    vdi_expect(s, a.uuid, 0, 4096, 41);
    struct sr_vdi_info ai;
    assert_int_equal(sr_vdi_info(s, a.uuid, &ai), 0);
    assert_false(ai.hidden);
    assert_string_not_equal(ai.parent_uuid, "");
    assert_int_equal(count_files(s), 2);
    /* attached, the collector leaves it; detached, it folds back into one file */
    struct sr_gc_stats gs;
    assert_int_equal(sr_gc(s, &gs), 0);
    assert_int_equal(count_files(s), 2);
    assert_int_equal(sr_vdi_detach(s, a.uuid), 0);
    assert_int_equal(sr_gc(s, &gs), 0);
    assert_int_equal(count_files(s), 1);
    vdi_expect(s, a.uuid, 4096, 8192, 42);
    vdi_expect(s, a.uuid, 0, 4096, 41);
    /* a stage left by a dead process goes at the next attach */
    assert_int_equal(sr_vdi_attach(s, a.uuid, true, &be), 0);
    sr_backend_clear(&be);
    assert_int_equal(sr_vdi_stage(s, a.uuid, &stage), 0);
    sr_detach(s);
    assert_int_equal(access(stage, F_OK), 0);
    assert_int_equal(sr_attach(fd_, l, &s), 0);
    assert_int_equal(access(stage, F_OK), -1);
    free(stage);
    assert_int_equal(count_files(s), 1);
    sr_detach(s);
}

/* ---- probe and the shared flavour --------------------------------------------------------- */

static void test_probe_shared(void **state)
{
    (void)state;
    const sr_driver *sd = sr_driver_lookup("shared");
    assert_non_null(sd);
    assert_string_equal(sd->parent_key, "path");
    assert_null(fd_->parent_key);
    AUTOFREE char *export = loc("export");
    assert_int_equal(mkdir(export, 0700), 0);
    char(*found)[37] = NULL;
    size_t n = 9;
    assert_int_equal(sr_probe(sd, export, &found, &n), 0);
    assert_int_equal(n, 0);
    free(found);
    const char *u1 = "aaaaaaaa-1111-4111-8111-111111111111";
    const char *u2 = "bbbbbbbb-2222-4222-8222-222222222222";
    AUTOFREE char *d1 = xasprintf("%s/%s", export, u2); /* listed in order whatever comes */
    AUTOFREE char *d2 = xasprintf("%s/%s", export, u1);
    AUTOFREE char *junk = xasprintf("%s/not-an-sr", export);
    AUTOFREE char *empty = xasprintf("%s/cccccccc-3333-4333-8333-333333333333", export);
    assert_int_equal(sr_create(sd, d1), 0);
    assert_int_equal(sr_create(sd, d2), 0);
    assert_int_equal(mkdir(junk, 0700), 0);
    assert_int_equal(mkdir(empty, 0700), 0);
    sr *s1 = NULL, *s2 = NULL;
    assert_int_equal(sr_attach(sd, d1, &s1), 0);
    assert_int_equal(sr_attach(sd, d2, &s2), 0);
    struct sr_vdi_info a;
    assert_int_equal(sr_vdi_create(s1, 2 * MiB, &a), 0);
    assert_int_equal(sr_probe(sd, export, &found, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(found[0], u1);
    assert_string_equal(found[1], u2);
    free(found);
    /* a file SR's parent directory is probed the same way */
    assert_int_equal(sr_probe(fd_, export, &found, &n), 0);
    assert_int_equal(n, 2);
    free(found);
    assert_int_equal(sr_probe(sd, "relative", &found, &n), -EINVAL);
    AUTOFREE char *missing = loc("no-such-dir");
    assert_int_equal(sr_probe(sd, missing, &found, &n), -ENOENT);
    /* forgotten and found again: the VDI is still there */
    sr_detach(s1);
    assert_int_equal(sr_attach(sd, d1, &s1), 0);
    struct sr_vdi_info *v = NULL;
    assert_int_equal(sr_scan(s1, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].uuid, a.uuid);
    free(v);
    sr_detach(s1);
    sr_detach(s2);
}

/* ---- the per-chain guard of the collector ------------------------------------------------- */

struct guard {
    sr *s;
    const char *other; /* a VDI of another chain */
    const char *mine;  /* the leaf of the chain being merged */
    int other_rc[3];   /* snapshot, attach, copy of the other chain during the merge */
    int calls;
    pthread_t waiter;
    volatile int waiter_done;
    volatile int waited; /* sr_vdi_wait_chain returned */
    int waited_during;
    int waiter_rc;
    int waiter_done_during; /* whether the chain's own attach finished during the merge */
};
static struct guard *guard_;

static void *guard_waiter(void *arg)
{
    struct guard *g = arg;
    struct sr_backend be = {0};
    sr_vdi_wait_chain(g->s, g->mine);
    g->waited = 1;
    g->waiter_rc = sr_vdi_attach(g->s, g->mine, false, &be);
    sr_backend_clear(&be);
    g->waiter_done = 1;
    return NULL;
}

static void guard_hook(sr *s, const char *parent, const char *child)
{
    (void)parent, (void)child;
    struct guard *g = guard_;
    if (!g || s != g->s || g->calls++)
        return;
    /* the chain being merged waits... */
    assert_int_equal(pthread_create(&g->waiter, NULL, guard_waiter, g), 0);
    /* ...while the SR's other chains go on (from this thread: a held SR mutex would hang) */
    struct sr_vdi_info sn, cp;
    struct sr_backend be = {0};
    g->other_rc[0] = sr_vdi_snapshot(s, g->other, &sn, NULL);
    g->other_rc[1] = sr_vdi_attach(s, g->other, false, &be);
    if (g->other_rc[1] == 0) {
        sr_backend_clear(&be);
        sr_vdi_detach(s, g->other);
    }
    g->other_rc[2] = sr_vdi_copy(s, g->other, s, &cp);
    usleep(200 * 1000);
    g->waiter_done_during = g->waiter_done;
    g->waited_during = g->waited;
}

static void test_gc_chain_guard(void **state)
{
    (void)state;
    AUTO(sr) *s = new_sr("guard");
    struct sr_vdi_info a, b, s1, s2;
    assert_int_equal(sr_vdi_create(s, 8 * MiB, &a), 0);
    assert_int_equal(sr_vdi_create(s, 4 * MiB, &b), 0);
    vdi_write(s, a.uuid, 0, 4096, 51);
    vdi_write(s, b.uuid, 0, 4096, 52);
    /* a -> B1 -> {B2 -> {a, s2}, s1}; deleting s1 leaves B2 the only child of B1 */
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &s1, NULL), 0);
    vdi_write(s, a.uuid, 2 * MiB, 4096, 53);
    assert_int_equal(sr_vdi_snapshot(s, a.uuid, &s2, NULL), 0);
    assert_int_equal(sr_vdi_delete(s, s1.uuid), 0);
    struct guard g = {.s = s, .other = b.uuid, .mine = a.uuid};
    guard_ = &g;
    sr_test_merge_hook = guard_hook;
    struct sr_gc_stats gs;
    int r = sr_gc(s, &gs);
    sr_test_merge_hook = NULL;
    guard_ = NULL;
    assert_int_equal(r, 0);
    assert_true(g.calls >= 1);
    assert_int_equal(pthread_join(g.waiter, NULL), 0);
    assert_int_equal(g.other_rc[0], 0);
    assert_int_equal(g.other_rc[1], 0);
    assert_int_equal(g.other_rc[2], 0);
    assert_int_equal(g.waiter_done_during, 0);
    assert_int_equal(g.waited_during, 0);
    assert_int_equal(g.waiter_rc, 0);
    assert_int_equal(sr_vdi_detach(s, a.uuid), 0);
    assert_true(gs.coalesced >= 1);
    vdi_expect(s, a.uuid, 0, 4096, 51);
    vdi_expect(s, a.uuid, 2 * MiB, 4096, 53);
    vdi_expect(s, s2.uuid, 0, 4096, 51);
    vdi_expect(s, s2.uuid, 2 * MiB, 4096, 53);
    vdi_expect(s, b.uuid, 0, 4096, 52);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_sr_lifecycle),
        cmocka_unit_test(test_snapshot_tree_and_gc),
        cmocka_unit_test(test_clone_and_chain_gc),
        cmocka_unit_test(test_resize_attach),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_journal_recovery),
        cmocka_unit_test(test_chain_limit),
        cmocka_unit_test(test_iso_library),
        cmocka_unit_test(test_gc_respects_attached),
        cmocka_unit_test(test_gc_grows_parent),
        cmocka_unit_test(test_gc_concurrent),
        cmocka_unit_test(test_copy_into),
        cmocka_unit_test(test_stage),
        cmocka_unit_test(test_probe_shared),
        cmocka_unit_test(test_gc_chain_guard),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
