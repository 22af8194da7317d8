/* Unit tests for storage/vhd: layout, I/O, chains, snapshot, coalesce, resize, check, map. */
#define _XOPEN_SOURCE 700
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "mem.h"
#include "vhd.h"

#define MiB (1ull << 20)

static char tmpdir[64];

static char *tpath(const char *name)
{
    return xasprintf("%s/%s", tmpdir, name);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int setup(void **state)
{
    /* tmpfs when there is one: the library fsyncs at every metadata step, and these tests are
     * about logic, not durability */
    strcpy(tmpdir,
           access("/dev/shm", W_OK) == 0 ? "/dev/shm/test_vhd.XXXXXX" : "/tmp/test_vhd.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static void read_raw(const char *path, uint64_t off, void *buf, size_t len)
{
    AUTOCLOSE int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
}

static void write_raw(const char *path, uint64_t off, const void *buf, size_t len)
{
    AUTOCLOSE int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
}

static void assert_valid(const char *path)
{
    AUTOFREE char *why = NULL;
    int r = vhd_check(path, 0, &why);
    if (r != 0)
        fail_msg("%s: check %d: %s", path, r, why ? why : "");
}

static void test_create_layout(void **state)
{
    AUTOFREE char *p = tpath("layout.vhd");
    assert_int_equal(vhd_create(p, VHD_TYPE_DYNAMIC, 100 * MiB, 0), 0);
    /* what vhd-util create writes for 100 MiB: footer, header, BAT, batmap, footer */
    assert_int_equal(file_size(p), 3584);
    uint8_t f0[512], f1[512], h[1024];
    read_raw(p, 0, f0, 512);
    read_raw(p, 3072, f1, 512);
    read_raw(p, 512, h, 1024);
    assert_memory_equal(f0, f1, 512);
    assert_memory_equal(f0, "conectix", 8);
    assert_memory_equal(f0 + 28, "tap\0", 4);
    assert_memory_equal(f0 + 32, "\0\1\0\3", 4);
    assert_memory_equal(h, "cxsparse", 8);
    assert_memory_equal(h + 16, "\0\0\0\0\0\0\x06\0", 8);   /* BAT at 1536 */
    assert_memory_equal(h + 28, "\0\0\0\x32\0\x20\0\0", 8); /* 50 entries of 2 MiB */
    uint8_t bm[8];
    read_raw(p, 2048, bm, 8);
    assert_memory_equal(bm, "tdbatmap", 8);
    assert_valid(p);
    assert_int_equal(vhd_create(p, VHD_TYPE_DYNAMIC, 100 * MiB, 0), -EEXIST);
    AUTOFREE char *q = tpath("bad.vhd");
    assert_int_equal(vhd_create(q, VHD_TYPE_DYNAMIC, 1000, 0), -EINVAL);
    assert_int_equal(vhd_create(q, VHD_TYPE_DYNAMIC, VHD_MAX_VIRTUAL_SIZE + 2 * MiB, 0), -EINVAL);
    assert_int_equal(vhd_create(q, VHD_TYPE_DIFF, 2 * MiB, 0), -EINVAL);
    assert_int_equal(access(q, F_OK), -1);

    AUTO(vhd) *v = NULL;
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &v), 0);
    struct vhd_info i;
    vhd_get_info(v, &i);
    assert_int_equal(i.type, VHD_TYPE_DYNAMIC);
    assert_int_equal(i.virtual_size, 100 * MiB);
    assert_string_equal(i.creator, "tap");
    assert_int_equal(i.max_blocks, 50);
    assert_int_equal(i.allocated_blocks, 0);
    assert_int_equal(i.chain_depth, 1);
    assert_false(i.hidden);
    assert_string_equal(i.parent_uuid, "");
}

static void test_max_size(void **state)
{
    AUTOFREE char *p = tpath("big.vhd");
    assert_int_equal(vhd_create(p, VHD_TYPE_DYNAMIC, VHD_MAX_VIRTUAL_SIZE, 0), 0);
    assert_valid(p);
    AUTO(vhd) *v = NULL;
    assert_int_equal(vhd_open(p, VHD_OPEN_RDWR | VHD_OPEN_UNSAFE, &v), 0);
    uint8_t buf[4096];
    fill(buf, sizeof(buf), 3);
    uint64_t last = VHD_MAX_VIRTUAL_SIZE - sizeof(buf);
    assert_int_equal(vhd_write(v, buf, last, sizeof(buf)), 0);
    uint8_t back[4096];
    assert_int_equal(vhd_read(v, back, last, sizeof(back)), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    assert_int_equal(vhd_read(v, back, VHD_MAX_VIRTUAL_SIZE, 512), -ERANGE);
    assert_valid(p);
}

static void test_rw_dynamic(void **state)
{
    AUTOFREE char *p = tpath("rw.vhd");
    assert_int_equal(vhd_create(p, VHD_TYPE_DYNAMIC, 10 * MiB, 0), 0);
    AUTO(vhd) *v = NULL;
    assert_int_equal(vhd_open(p, VHD_OPEN_RDWR, &v), 0);
    size_t n = 3 * MiB;
    AUTOFREE uint8_t *buf = xmalloc(n);
    AUTOFREE uint8_t *back = xmalloc(n);
    fill(buf, n, 1);
    /* straddles blocks 0, 1 and 2 */
    assert_int_equal(vhd_write(v, buf, 1 * MiB + 512, n), 0);
    assert_int_equal(vhd_read(v, back, 1 * MiB + 512, n), 0);
    assert_memory_equal(buf, back, n);
    assert_int_equal(vhd_read(v, back, 0, 1 * MiB + 512), 0);
    for (size_t i = 0; i < 1 * MiB + 512; i++)
        assert_int_equal(back[i], 0);
    /* overwrite part of an allocated block */
    fill(buf, 4096, 9);
    assert_int_equal(vhd_write(v, buf, 2 * MiB, 4096), 0);
    assert_int_equal(vhd_read(v, back, 2 * MiB, 4096), 0);
    assert_memory_equal(buf, back, 4096);
    assert_int_equal(vhd_write(v, buf, 100, 512), -EINVAL);
    assert_int_equal(vhd_write(v, buf, 0, 100), -EINVAL);
    assert_int_equal(vhd_write(v, buf, 10 * MiB - 512, 1024), -ERANGE);
    assert_int_equal(vhd_flush(v), 0);
    struct vhd_info i;
    vhd_get_info(v, &i);
    assert_int_equal(i.allocated_blocks, 3);
    vhd_close(TAKE_PTR(v));
    assert_valid(p);

    /* data of each block starts on a 4 KiB boundary, the bitmap sits just before it */
    AUTOFREE struct vhd_extent *ext = NULL;
    size_t ne = 0;
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &v), 0);
    assert_int_equal(vhd_map(v, &ext, &ne), 0);
    /* not merged: the 4 KiB alignment leaves a gap between consecutive blocks */
    assert_int_equal(ne, 4);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(ext[k].start, k * 2 * MiB);
        assert_int_equal(ext[k].length, 2 * MiB);
        assert_int_equal(ext[k].depth, 0);
        assert_int_equal(ext[k].file_offset % 4096, 0);
    }
    assert_int_equal(ext[3].depth, -1);
    assert_int_equal(ext[3].length, 4 * MiB);
    assert_int_equal(vhd_write(v, buf, 0, 512), -EROFS);
}

/* New blocks reach the BAT on flush or close (or at once with VHD_OPEN_WRITETHROUGH); until
 * then another opener sees the old contents, and the file stays valid. */
static void test_write_back(void **state)
{
    AUTOFREE char *p = tpath("wb.vhd");
    assert_int_equal(vhd_create(p, VHD_TYPE_DYNAMIC, 8 * MiB, 0), 0);
    AUTO(vhd) *w = NULL;
    AUTO(vhd) *r = NULL;
    uint8_t buf[4096], back[4096];
    fill(buf, sizeof(buf), 11);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDWR, &w), 0);
    assert_int_equal(vhd_write(w, buf, 2 * MiB, 4096), 0);
    assert_int_equal(vhd_read(w, back, 2 * MiB, 4096), 0); /* the writer sees it at once */
    assert_memory_equal(buf, back, 4096);
    assert_valid(p);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &r), 0);
    assert_int_equal(vhd_read(r, back, 2 * MiB, 4096), 0);
    for (size_t i = 0; i < sizeof(back); i++)
        assert_int_equal(back[i], 0);
    vhd_close(TAKE_PTR(r));
    assert_int_equal(vhd_flush(w), 0);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &r), 0);
    assert_int_equal(vhd_read(r, back, 2 * MiB, 4096), 0);
    assert_memory_equal(buf, back, 4096);
    vhd_close(TAKE_PTR(r));

    /* close commits too */
    assert_int_equal(vhd_write(w, buf, 6 * MiB, 4096), 0);
    vhd_close(TAKE_PTR(w));
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &r), 0);
    assert_int_equal(vhd_read(r, back, 6 * MiB, 4096), 0);
    assert_memory_equal(buf, back, 4096);
    vhd_close(TAKE_PTR(r));

    /* write-through: visible to others as soon as vhd_write returns */
    assert_int_equal(vhd_open(p, VHD_OPEN_RDWR | VHD_OPEN_WRITETHROUGH, &w), 0);
    assert_int_equal(vhd_write(w, buf, 4 * MiB, 4096), 0);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &r), 0);
    assert_int_equal(vhd_read(r, back, 4 * MiB, 4096), 0);
    assert_memory_equal(buf, back, 4096);
    vhd_close(TAKE_PTR(r));

    /* many new blocks without a flush: committed every 64 */
    AUTOFREE char *q = tpath("wb-many.vhd");
    assert_int_equal(vhd_create(q, VHD_TYPE_DYNAMIC, 200 * MiB, 0), 0);
    vhd_close(TAKE_PTR(w));
    assert_int_equal(vhd_open(q, VHD_OPEN_RDWR | VHD_OPEN_UNSAFE, &w), 0);
    for (int b = 0; b < 70; b++)
        assert_int_equal(vhd_write(w, buf, (uint64_t)b * 2 * MiB, 512), 0);
    assert_int_equal(vhd_open(q, VHD_OPEN_RDONLY, &r), 0);
    struct vhd_info i;
    vhd_get_info(r, &i);
    assert_int_equal(i.allocated_blocks, 64);
}

static void test_fixed(void **state)
{
    AUTOFREE char *p = tpath("fixed.vhd");
    assert_int_equal(vhd_create(p, VHD_TYPE_FIXED, 4 * MiB, 0), 0);
    assert_int_equal(file_size(p), 4 * MiB + 512);
    assert_valid(p);
    AUTO(vhd) *v = NULL;
    assert_int_equal(vhd_open(p, VHD_OPEN_RDWR, &v), 0);
    uint8_t buf[8192], back[8192];
    fill(buf, sizeof(buf), 5);
    assert_int_equal(vhd_write(v, buf, 4 * MiB - 8192, 8192), 0);
    vhd_close(TAKE_PTR(v));
    read_raw(p, 4 * MiB - 8192, back, 8192); /* fixed = raw bytes then footer */
    assert_memory_equal(buf, back, 8192);
    assert_int_equal(vhd_resize(p, 6 * MiB), 0);
    assert_int_equal(file_size(p), 6 * MiB + 512);
    assert_valid(p);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &v), 0);
    assert_int_equal(vhd_read(v, back, 4 * MiB - 8192, 8192), 0);
    assert_memory_equal(buf, back, 8192);
    assert_int_equal(vhd_read(v, back, 4 * MiB, 8192), 0);
    for (size_t i = 0; i < 8192; i++)
        assert_int_equal(back[i], 0); /* the old footer was cleared */
}

static void test_snapshot_chain(void **state)
{
    AUTOFREE char *base = tpath("base.vhd");
    AUTOFREE char *mid = tpath("mid.vhd");
    AUTOFREE char *leaf = tpath("leaf.vhd");
    assert_int_equal(vhd_create(base, VHD_TYPE_DYNAMIC, 8 * MiB, 0), 0);
    AUTOFREE uint8_t *a = xmalloc(8 * MiB);
    AUTOFREE uint8_t *back = xmalloc(8 * MiB);
    fill(a, 8 * MiB, 1);
    AUTO(vhd) *v = NULL;
    assert_int_equal(vhd_open(base, VHD_OPEN_RDWR, &v), 0);
    assert_int_equal(vhd_write(v, a, 0, 6 * MiB), 0);
    memset(a + 6 * MiB, 0, 2 * MiB);
    vhd_close(TAKE_PTR(v));

    assert_int_equal(vhd_snapshot(mid, base, VHD_SNAPSHOT_HIDE_PARENT), 0);
    /* the locators as blktap writes them */
    uint8_t h[1024];
    read_raw(mid, 512, h, 1024);
    assert_memory_equal(h + 576, "MacX", 4);
    assert_memory_equal(h + 600, "W2ku", 4);
    assert_memory_equal(h + 624, "W2ru", 4);
    uint64_t loc = 0;
    for (int i = 0; i < 8; i++)
        loc = loc << 8 | h[576 + 16 + i];
    char url[32] = {0};
    read_raw(mid, loc, url, 17);
    assert_string_equal(url, "file://./base.vhd");
    assert_memory_equal(h + 64, "\0b\0a\0s\0e\0.\0v\0h\0d\0\0", 18);

    /* mid overrides single sectors and a run crossing a block boundary */
    assert_int_equal(vhd_open(mid, VHD_OPEN_RDWR, &v), 0);
    fill(a + 512, 512, 2);
    assert_int_equal(vhd_write(v, a + 512, 512, 512), 0);
    fill(a + 2 * MiB - 1536, 4096, 3);
    assert_int_equal(vhd_write(v, a + 2 * MiB - 1536, 2 * MiB - 1536, 4096), 0);
    fill(a + 7 * MiB, 1024, 4); /* over a part the base never wrote */
    assert_int_equal(vhd_write(v, a + 7 * MiB, 7 * MiB, 1024), 0);
    vhd_close(TAKE_PTR(v));

    assert_int_equal(vhd_snapshot(leaf, mid, VHD_SNAPSHOT_HIDE_PARENT), 0);
    assert_int_equal(vhd_open(leaf, VHD_OPEN_RDWR, &v), 0);
    fill(a + 3 * MiB + 3584, 512, 5);
    assert_int_equal(vhd_write(v, a + 3 * MiB + 3584, 3 * MiB + 3584, 512), 0);
    assert_int_equal(vhd_read(v, back, 0, 8 * MiB), 0);
    assert_memory_equal(a, back, 8 * MiB);
    struct vhd_info i;
    vhd_get_info(v, &i);
    assert_int_equal(i.chain_depth, 3);
    assert_int_equal(i.type, VHD_TYPE_DIFF);
    struct vhd_info pi;
    vhd_get_info(vhd_parent(v), &pi);
    assert_string_equal(i.parent_uuid, pi.uuid);
    assert_true(pi.hidden);

    AUTOFREE struct vhd_extent *ext = NULL;
    size_t n = 0;
    assert_int_equal(vhd_map(v, &ext, &n), 0);
    /* blocks: 0 mid, 1 mid, 2 base, 3 leaf... (merged only when contiguous in one file) */
    assert_true(n >= 4);
    assert_int_equal(ext[0].depth, 1);
    vhd_close(TAKE_PTR(v));
    assert_valid(leaf);

    /* the whole directory moves: relative locators still find the parents */
    AUTOFREE char *sub = tpath("moved");
    AUTOFREE char *sub_leaf = tpath("moved/leaf.vhd");
    AUTOFREE char *sub_mid = tpath("moved/mid.vhd");
    AUTOFREE char *sub_base = tpath("moved/base.vhd");
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(rename(leaf, sub_leaf), 0);
    assert_int_equal(rename(mid, sub_mid), 0);
    assert_int_equal(rename(base, sub_base), 0);
    assert_int_equal(vhd_open(sub_leaf, VHD_OPEN_RDONLY, &v), 0);
    assert_int_equal(vhd_read(v, back, 0, 8 * MiB), 0);
    assert_memory_equal(a, back, 8 * MiB);
    vhd_close(TAKE_PTR(v));

    /* a missing parent, and one with another uuid */
    assert_int_equal(rename(sub_base, base), 0);
    assert_int_equal(vhd_open(sub_leaf, VHD_OPEN_RDONLY, &v), -EBADMSG);
    assert_int_equal(vhd_open(sub_mid, VHD_OPEN_RDONLY, &v), -ENOENT);
    assert_int_equal(vhd_create(sub_base, VHD_TYPE_DYNAMIC, 8 * MiB, 0), 0);
    assert_int_equal(vhd_open(sub_mid, VHD_OPEN_RDONLY, &v), -ESTALE);
    assert_int_equal(vhd_open(sub_mid, VHD_OPEN_RDONLY | VHD_OPEN_NO_PARENT, &v), 0);
    assert_int_equal(vhd_read(v, back, 0, 512), -ENOLINK);
    vhd_close(TAKE_PTR(v));
    AUTOFREE char *why = NULL;
    assert_int_equal(vhd_check(sub_mid, 0, &why), -EBADMSG);
    assert_non_null(strstr(why, "uuid"));
    assert_int_equal(vhd_check(sub_mid, VHD_CHECK_NO_PARENT, NULL), 0);
}

static void test_parent_elsewhere(void **state)
{
    AUTOFREE char *d1 = tpath("d1");
    AUTOFREE char *d2 = tpath("d2");
    assert_int_equal(mkdir(d1, 0755), 0);
    assert_int_equal(mkdir(d2, 0755), 0);
    AUTOFREE char *base = tpath("d1/b.vhd");
    AUTOFREE char *child = tpath("d2/c.vhd");
    assert_int_equal(vhd_create(base, VHD_TYPE_DYNAMIC, 2 * MiB, 0), 0);
    assert_int_equal(vhd_snapshot(child, base, 0), 0);
    uint8_t h[1024];
    read_raw(child, 512, h, 1024);
    uint64_t loc = 0;
    for (int i = 0; i < 8; i++)
        loc = loc << 8 | h[576 + 16 + i];
    char url[32] = {0};
    read_raw(child, loc, url, 20);
    assert_string_equal(url, "file://../d1/b.vhd");
    AUTO(vhd) *v = NULL;
    assert_int_equal(vhd_open(child, VHD_OPEN_RDONLY, &v), 0);
    assert_non_null(strstr(vhd_path(vhd_parent(v)), "d1/b.vhd"));
    assert_valid(child);
}

static void test_coalesce_relink(void **state)
{
    AUTOFREE char *base = tpath("cb.vhd");
    AUTOFREE char *mid = tpath("cm.vhd");
    AUTOFREE char *leaf = tpath("cl.vhd");
    assert_int_equal(vhd_create(base, VHD_TYPE_DYNAMIC, 6 * MiB, 0), 0);
    AUTOFREE uint8_t *a = xcalloc(1, 6 * MiB);
    AUTOFREE uint8_t *back = xmalloc(6 * MiB);
    AUTO(vhd) *v = NULL;
    assert_int_equal(vhd_open(base, VHD_OPEN_RDWR, &v), 0);
    fill(a, 2 * MiB, 1);
    assert_int_equal(vhd_write(v, a, 0, 2 * MiB), 0);
    vhd_close(TAKE_PTR(v));
    assert_int_equal(vhd_snapshot(mid, base, VHD_SNAPSHOT_HIDE_PARENT), 0);
    assert_int_equal(vhd_open(mid, VHD_OPEN_RDWR, &v), 0);
    fill(a + 512, 512, 2);
    assert_int_equal(vhd_write(v, a + 512, 512, 512), 0);
    fill(a + 4 * MiB, 16 * 512, 3);
    assert_int_equal(vhd_write(v, a + 4 * MiB, 4 * MiB, 16 * 512), 0);
    vhd_close(TAKE_PTR(v));
    assert_int_equal(vhd_snapshot(leaf, mid, VHD_SNAPSHOT_HIDE_PARENT), 0);
    assert_int_equal(vhd_open(leaf, VHD_OPEN_RDWR, &v), 0);
    fill(a + 3 * MiB, 512, 4);
    assert_int_equal(vhd_write(v, a + 3 * MiB, 3 * MiB, 512), 0);
    vhd_close(TAKE_PTR(v));

    uint64_t n = 0;
    assert_int_equal(vhd_coalesce(mid, &n), 0);
    assert_int_equal(n, 17); /* vhd-util prints "Coalesced 17 sectors" for the same writes */
    assert_int_equal(vhd_coalesce(base, &n), -EINVAL);
    /* base now holds mid's view; relink the leaf over mid to base */
    assert_int_equal(vhd_set_parent(leaf, base), 0);
    assert_int_equal(unlink(mid), 0);
    assert_valid(leaf);
    assert_valid(base);
    assert_int_equal(vhd_open(leaf, VHD_OPEN_RDONLY, &v), 0);
    struct vhd_info i;
    vhd_get_info(v, &i);
    assert_int_equal(i.chain_depth, 2);
    assert_int_equal(vhd_read(v, back, 0, 6 * MiB), 0);
    assert_memory_equal(a, back, 6 * MiB);
}

/* Relinking writes the locators in place; a path that does not fit fails before anything
 * changes. */
static void test_set_parent_nospace(void **state)
{
    AUTOFREE char *base = tpath("np-base.vhd");
    AUTOFREE char *child = tpath("np-child.vhd");
    assert_int_equal(vhd_create(base, VHD_TYPE_DYNAMIC, 2 * MiB, 0), 0);
    assert_int_equal(vhd_snapshot(child, base, 0), 0);
    char name[201];
    memset(name, 'd', 200);
    name[200] = 0;
    AUTOFREE char *d1 = xasprintf("%s/%s", tmpdir, name);
    AUTOFREE char *d2 = xasprintf("%s/%s", d1, name);
    assert_int_equal(mkdir(d1, 0755), 0);
    assert_int_equal(mkdir(d2, 0755), 0);
    AUTOFREE char *far = xasprintf("%s/far.vhd", d2);
    assert_int_equal(vhd_create(far, VHD_TYPE_DYNAMIC, 2 * MiB, 0), 0);
    uint8_t before[1024], after[1024];
    read_raw(child, 512, before, sizeof(before));
    assert_int_equal(vhd_set_parent(child, far), -ENOSPC);
    read_raw(child, 512, after, sizeof(after));
    assert_memory_equal(before, after, sizeof(before));
    assert_valid(child);
    /* a child made there directly gets locators big enough */
    AUTOFREE char *near = tpath("np-near.vhd");
    assert_int_equal(vhd_snapshot(near, far, 0), 0);
    assert_valid(near);
}

static void test_resize(void **state)
{
    AUTOFREE char *p = tpath("grow.vhd");
    assert_int_equal(vhd_create(p, VHD_TYPE_DYNAMIC, 4 * MiB, 8 * MiB), 0);
    AUTO(vhd) *v = NULL;
    uint8_t buf[4096], back[4096];
    fill(buf, sizeof(buf), 7);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDWR, &v), 0);
    assert_int_equal(vhd_write(v, buf, 4 * MiB - 4096, 4096), 0);
    vhd_close(TAKE_PTR(v));
    uint64_t before = file_size(p);
    /* fast: the BAT has room */
    assert_int_equal(vhd_resize(p, 8 * MiB), 0);
    assert_int_equal(file_size(p), before);
    assert_valid(p);
    /* slow: a new BAT is appended; the block stays where it is */
    assert_int_equal(vhd_resize(p, 1024 * MiB), 0);
    assert_valid(p);
    assert_int_equal(vhd_resize(p, 512 * MiB), -ENOTSUP);
    assert_int_equal(vhd_resize(p, 1024 * MiB + 100), -EINVAL);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDWR, &v), 0);
    struct vhd_info i;
    vhd_get_info(v, &i);
    assert_int_equal(i.virtual_size, 1024 * MiB);
    assert_int_equal(i.max_blocks, 512);
    assert_int_equal(vhd_read(v, back, 4 * MiB - 4096, 4096), 0);
    assert_memory_equal(buf, back, 4096);
    assert_int_equal(vhd_write(v, buf, 1000 * MiB, 4096), 0);
    assert_int_equal(vhd_read(v, back, 1000 * MiB, 4096), 0);
    assert_memory_equal(buf, back, 4096);
    vhd_close(TAKE_PTR(v));
    assert_valid(p);

    /* a child larger than its parent reads zeros past the parent's end */
    AUTOFREE char *c = tpath("grow-child.vhd");
    AUTOFREE char *small = tpath("small.vhd");
    assert_int_equal(vhd_create(small, VHD_TYPE_DYNAMIC, 2 * MiB, 0), 0);
    assert_int_equal(vhd_open(small, VHD_OPEN_RDWR, &v), 0);
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(vhd_write(v, buf, 2 * MiB - 4096, 4096), 0);
    vhd_close(TAKE_PTR(v));
    assert_int_equal(vhd_snapshot(c, small, 0), 0);
    assert_int_equal(vhd_resize(c, 6 * MiB), 0);
    assert_valid(c);
    assert_int_equal(vhd_open(c, VHD_OPEN_RDWR, &v), 0);
    assert_int_equal(vhd_read(v, back, 2 * MiB - 4096, 4096), 0);
    assert_memory_equal(buf, back, 4096);
    assert_int_equal(vhd_read(v, back, 2 * MiB, 4096), 0);
    for (size_t k = 0; k < 4096; k++)
        assert_int_equal(back[k], 0);
    assert_int_equal(vhd_write(v, buf, 5 * MiB, 4096), 0);
    vhd_close(TAKE_PTR(v));
    uint64_t n;
    assert_int_equal(vhd_coalesce(c, &n), 0); /* grows the parent first */
    assert_int_equal(n, 8);
    assert_valid(small);
    assert_int_equal(vhd_open(small, VHD_OPEN_RDONLY, &v), 0);
    struct vhd_info si;
    vhd_get_info(v, &si);
    assert_int_equal(si.virtual_size, 6 * MiB);
    assert_int_equal(vhd_read(v, back, 5 * MiB, 4096), 0);
    assert_memory_equal(buf, back, 4096);
}

static void test_export_import(void **state)
{
    AUTOFREE char *src = tpath("exp.vhd");
    AUTOFREE char *dst = tpath("imp.vhd");
    AUTOFREE char *raw = tpath("exp.raw");
    assert_int_equal(vhd_create(src, VHD_TYPE_DYNAMIC, 8 * MiB, 0), 0);
    AUTOFREE uint8_t *a = xcalloc(1, 8 * MiB);
    AUTOFREE uint8_t *back = xmalloc(8 * MiB);
    fill(a + 2 * MiB + 4096, 8192, 1);
    fill(a + 8 * MiB - 512, 512, 2);
    AUTO(vhd) *v = NULL;
    assert_int_equal(vhd_open(src, VHD_OPEN_RDWR, &v), 0);
    assert_int_equal(vhd_write(v, a + 2 * MiB + 4096, 2 * MiB + 4096, 8192), 0);
    assert_int_equal(vhd_write(v, a + 8 * MiB - 512, 8 * MiB - 512, 512), 0);
    AUTOCLOSE int fd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(vhd_export_raw(v, fd), 0);
    vhd_close(TAKE_PTR(v));
    assert_int_equal(file_size(raw), 8 * MiB);
    read_raw(raw, 0, back, 8 * MiB);
    assert_memory_equal(a, back, 8 * MiB);
    struct stat st;
    assert_int_equal(stat(raw, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 < 1 * MiB); /* holes where the disk is zero */

    assert_int_equal(vhd_create(dst, VHD_TYPE_DYNAMIC, 8 * MiB, 0), 0);
    assert_int_equal(vhd_open(dst, VHD_OPEN_RDWR, &v), 0);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    assert_int_equal(vhd_import_raw(v, fd), 0);
    struct vhd_info i;
    vhd_get_info(v, &i);
    assert_int_equal(i.allocated_blocks, 2); /* zero blocks were not allocated */
    assert_int_equal(vhd_read(v, back, 0, 8 * MiB), 0);
    assert_memory_equal(a, back, 8 * MiB);
    vhd_close(TAKE_PTR(v));
    assert_valid(dst);

    /* too long an input */
    AUTOFREE char *tiny = tpath("tiny.vhd");
    assert_int_equal(vhd_create(tiny, VHD_TYPE_DYNAMIC, 2 * MiB, 0), 0);
    assert_int_equal(vhd_open(tiny, VHD_OPEN_RDWR, &v), 0);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    assert_int_equal(vhd_import_raw(v, fd), -EFBIG);
}

static void test_hidden(void **state)
{
    AUTOFREE char *p = tpath("hid.vhd");
    assert_int_equal(vhd_create(p, VHD_TYPE_DYNAMIC, 2 * MiB, 0), 0);
    assert_int_equal(vhd_set_hidden(p, true), 0);
    uint8_t f0[512], f1[512];
    read_raw(p, 0, f0, 512);
    read_raw(p, file_size(p) - 512, f1, 512);
    assert_int_equal(f0[85], 1);
    assert_memory_equal(f0, f1, 512);
    assert_valid(p);
    assert_int_equal(vhd_set_hidden(p, false), 0);
    read_raw(p, 0, f0, 512);
    assert_int_equal(f0[85], 0);
}

/* Each corruption must be refused by open or check, never crash. */
static void test_corruption(void **state)
{
    AUTOFREE char *p = tpath("c.vhd");
    assert_int_equal(vhd_create(p, VHD_TYPE_DYNAMIC, 4 * MiB, 0), 0);
    AUTO(vhd) *v = NULL;
    uint8_t buf[512];
    memset(buf, 1, sizeof(buf));
    assert_int_equal(vhd_open(p, VHD_OPEN_RDWR, &v), 0);
    assert_int_equal(vhd_write(v, buf, 0, 512), 0);
    vhd_close(TAKE_PTR(v));
    uint64_t size = file_size(p);
    AUTOFREE uint8_t *orig = xmalloc(size);
    read_raw(p, 0, orig, size);

    /* trailing footer broken: open falls back to the copy at 0, check complains */
    uint8_t x = orig[size - 512 + 70] ^ 0xff;
    write_raw(p, size - 512 + 70, &x, 1);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &v), 0);
    vhd_close(TAKE_PTR(v));
    AUTOFREE char *why = NULL;
    assert_int_equal(vhd_check(p, 0, &why), -EBADMSG);
    assert_non_null(strstr(why, "primary footer"));
    write_raw(p, 0, orig, size);

    /* both footers broken */
    write_raw(p, size - 512 + 70, &x, 1);
    x = orig[70] ^ 0xff;
    write_raw(p, 70, &x, 1);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &v), -EBADMSG);
    write_raw(p, 0, orig, size);

    /* header checksum */
    x = orig[512 + 30] ^ 1;
    write_raw(p, 512 + 30, &x, 1);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &v), -EBADMSG);
    write_raw(p, 0, orig, size);

    /* BAT entry past the end of the file */
    uint8_t e[4] = {0x00, 0xff, 0x00, 0x00};
    write_raw(p, 1536, e, 4);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &v), -EBADMSG);
    /* BAT entry pointing into the metadata */
    uint8_t e2[4] = {0, 0, 0, 3};
    write_raw(p, 1536, e2, 4);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &v), -EBADMSG);
    write_raw(p, 0, orig, size);

    /* two BAT entries sharing a block: check refuses */
    write_raw(p, 1536 + 4, orig + 1536, 4);
    assert_int_equal(vhd_check(p, 0, NULL), -EBADMSG);
    write_raw(p, 0, orig, size);

    /* batmap checksum */
    x = orig[2048 + 24] ^ 1;
    write_raw(p, 2048 + 24, &x, 1);
    assert_int_equal(vhd_check(p, 0, NULL), -EBADMSG);
    write_raw(p, 0, orig, size);
    assert_valid(p);

    /* truncated file */
    assert_int_equal(truncate(p, 100), 0);
    assert_int_equal(vhd_open(p, VHD_OPEN_RDONLY, &v), -EBADMSG);
    assert_int_equal(vhd_check(p, 0, NULL), -EBADMSG);
    AUTOFREE char *none = tpath("nonexistent.vhd");
    assert_int_equal(vhd_open(none, VHD_OPEN_RDONLY, &v), -ENOENT);
    assert_int_equal(vhd_check(none, 0, NULL), -ENOENT);
}

static void test_chain_loop(void **state)
{
    AUTOFREE char *a = tpath("la.vhd");
    AUTOFREE char *b = tpath("lb.vhd");
    AUTOFREE char *c = tpath("lc.vhd");
    assert_int_equal(vhd_create(a, VHD_TYPE_DYNAMIC, 2 * MiB, 0), 0);
    assert_int_equal(vhd_snapshot(b, a, 0), 0);
    assert_int_equal(vhd_snapshot(c, b, 0), 0);
    assert_int_equal(vhd_set_parent(b, c), 0); /* b -> c -> b -> ... */
    AUTO(vhd) *v = NULL;
    assert_int_equal(vhd_open(c, VHD_OPEN_RDONLY, &v), -ELOOP);
    assert_int_equal(vhd_check(c, 0, NULL), -EBADMSG);

    /* a long but legal chain */
    AUTOFREE char *prev = xstrdup(a);
    for (int i = 0; i < VHD_MAX_CHAIN_DEPTH - 1; i++) {
        char *next = xasprintf("%s/deep%d.vhd", tmpdir, i);
        assert_int_equal(vhd_snapshot(next, prev, 0), 0);
        free(prev);
        prev = next;
    }
    assert_int_equal(vhd_open(prev, VHD_OPEN_RDONLY, &v), 0);
    struct vhd_info i;
    vhd_get_info(v, &i);
    assert_int_equal(i.chain_depth, VHD_MAX_CHAIN_DEPTH);
    vhd_close(TAKE_PTR(v));
    AUTOFREE char *too_deep = tpath("deep-last.vhd");
    assert_int_equal(vhd_snapshot(too_deep, prev, 0), -ELOOP);
}

/* A random mix of writes, snapshots, coalesce + relink, resizes and reopens, checked against
 * an in-memory model of the disk after every step (whole-disk read) and with vhd_check. */
static void test_model(void **state)
{
    uint64_t size = 6 * MiB, max = 12 * MiB;
    AUTOFREE uint8_t *model = xcalloc(1, max);
    AUTOFREE uint8_t *back = xmalloc(max);
    AUTOFREE uint8_t *buf = xmalloc(3 * MiB);
    char names[40][96];
    int depth = 0; /* names[0..depth] = chain from the root to the leaf */
    snprintf(names[0], sizeof(names[0]), "%s/m0.vhd", tmpdir);
    assert_int_equal(vhd_create(names[0], VHD_TYPE_DYNAMIC, size, 0), 0);
    int serial = 1;
    uint64_t rng = 12345;
    AUTO(vhd) *v = NULL;
    assert_int_equal(vhd_open(names[0], VHD_OPEN_RDWR | VHD_OPEN_UNSAFE, &v), 0);
    for (int step = 0; step < 120; step++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        unsigned op = (unsigned)(rng >> 33) % 10;
        if (op < 6) { /* write */
            uint64_t sectors = size / 512;
            uint64_t n = 1 + (rng >> 40) % (op == 0 ? 5000 : 24);
            uint64_t at = (rng >> 20) % (sectors - n + 1);
            fill(buf, n * 512, (unsigned)step);
            assert_int_equal(vhd_write(v, buf, at * 512, n * 512), 0);
            memcpy(model + at * 512, buf, n * 512);
        } else if (op == 6 && depth < 30) { /* snapshot: the leaf becomes a hidden parent */
            vhd_close(TAKE_PTR(v));
            depth++;
            snprintf(names[depth], sizeof(names[depth]), "%s/m%d.vhd", tmpdir, serial++);
            assert_int_equal(vhd_snapshot(names[depth], names[depth - 1], VHD_SNAPSHOT_HIDE_PARENT),
                             0);
            assert_int_equal(vhd_open(names[depth], VHD_OPEN_RDWR | VHD_OPEN_UNSAFE, &v), 0);
        } else if (op == 7 && depth >= 2) { /* coalesce the leaf's parent, relink the leaf */
            vhd_close(TAKE_PTR(v));
            assert_int_equal(vhd_coalesce(names[depth - 1], NULL), 0);
            assert_int_equal(vhd_set_parent(names[depth], names[depth - 2]), 0);
            assert_int_equal(unlink(names[depth - 1]), 0);
            memcpy(names[depth - 1], names[depth], sizeof(names[0]));
            depth--;
            assert_int_equal(vhd_open(names[depth], VHD_OPEN_RDWR | VHD_OPEN_UNSAFE, &v), 0);
        } else if (op == 8 && size < max) { /* grow the leaf */
            vhd_close(TAKE_PTR(v));
            size += 2 * MiB;
            assert_int_equal(vhd_resize(names[depth], size), 0);
            assert_int_equal(vhd_open(names[depth], VHD_OPEN_RDWR | VHD_OPEN_UNSAFE, &v), 0);
        } else { /* reopen */
            vhd_close(TAKE_PTR(v));
            assert_int_equal(vhd_open(names[depth], VHD_OPEN_RDWR | VHD_OPEN_UNSAFE, &v), 0);
        }
        assert_int_equal(vhd_read(v, back, 0, size), 0);
        if (memcmp(model, back, size) != 0)
            fail_msg("step %d (op %u, depth %d): contents differ from the model", step, op, depth);
        if (step % 10 == 9) {
            assert_int_equal(vhd_flush(v), 0);
            assert_valid(names[depth]);
        }
    }
    vhd_close(TAKE_PTR(v));
    assert_valid(names[depth]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_layout),
        cmocka_unit_test(test_max_size),
        cmocka_unit_test(test_rw_dynamic),
        cmocka_unit_test(test_write_back),
        cmocka_unit_test(test_fixed),
        cmocka_unit_test(test_snapshot_chain),
        cmocka_unit_test(test_parent_elsewhere),
        cmocka_unit_test(test_coalesce_relink),
        cmocka_unit_test(test_set_parent_nospace),
        cmocka_unit_test(test_resize),
        cmocka_unit_test(test_export_import),
        cmocka_unit_test(test_hidden),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_chain_loop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
