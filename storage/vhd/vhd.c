/* VHD on-disk format (footer, dynamic header, BAT, bitmaps, batmap, locators), chain opening,
 * crash-ordered I/O and the maintenance operations declared in vhd.h. */
#define _GNU_SOURCE /* fallocate (vhd_discard) */
#include "vhd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "cleanup.h"
#include "log.h"
#include "mem.h"

#define SECTOR                 512u
#define FOOTER_SIZE            512u
#define HEADER_SIZE            1024u
#define BAT_UNUSED             0xFFFFFFFFu
#define VHD_EPOCH_OFFSET       946684800 /* 2000-01-01T00:00:00Z in Unix seconds */
#define FEATURE_TEMPORARY      0x1u
#define FEATURE_RESERVED       0x2u
#define FILE_FORMAT_VERSION    0x00010000u
#define HEADER_VERSION         0x00010000u
#define BATMAP_VERSION         0x00010002u
#define BATMAP_VERSION_OLD     0x00010001u
#define TAP_VERSION            0x00010003u
#define TAP_BATMAP_MIN_VERSION 0x00010002u
#define PLAT_NONE              0u
#define PLAT_MACX              0x4D616358u /* file URL, UTF-8 */
#define PLAT_W2KU              0x57326B75u /* absolute Windows path, UTF-16LE */
#define PLAT_W2RU              0x57327275u /* relative Windows path, UTF-16LE */
#define NUM_LOCATORS           8
/* No sane parent path is longer; bounds what a locator can make us allocate. */
#define MAX_LOCATOR_BYTES 8192u
#define MIN_BLOCK_SIZE    512u
/* vhd-util check's allowance for clocks (NFS servers) ahead of ours */
#define TIMESTAMP_SLACK 1800u
/* 32-bit BAT entries count sectors: a block must start below this byte offset. */
#define MAX_BLOCK_OFFSET ((uint64_t)BAT_UNUSED * SECTOR)

/* ---------------------------------------------------------------------------------------- */
/* Big-endian fields and checksums                                                           */

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = v & 0xff;
}
static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = (v >> 16) & 0xff;
    p[2] = (v >> 8) & 0xff;
    p[3] = v & 0xff;
}
static void put64(uint8_t *p, uint64_t v)
{
    put32(p, v >> 32);
    put32(p + 4, v & 0xffffffffu);
}

/* One's complement of the byte sum, skipping the 4-byte checksum field at csum_off. */
static uint32_t checksum(const uint8_t *b, size_t n, size_t csum_off)
{
    uint32_t sum = 0;
    for (size_t i = 0; i < n; i++)
        if (i < csum_off || i >= csum_off + 4)
            sum += b[i];
    return ~sum;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static bool is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* CHS geometry from the VHD specification's appendix (what blktap and qemu compute). */
static uint32_t chs_geometry(uint64_t size, uint16_t *cyl, uint8_t *heads, uint8_t *spt)
{
    uint64_t sectors = size / SECTOR;
    uint64_t cth;
    uint32_t h, s;
    if (sectors > 65535ull * 16 * 255)
        sectors = 65535ull * 16 * 255;
    if (sectors >= 65535ull * 16 * 63) {
        s = 255;
        h = 16;
        cth = sectors / s;
    } else {
        s = 17;
        cth = sectors / s;
        h = (uint32_t)((cth + 1023) / 1024);
        if (h < 4)
            h = 4;
        if (cth >= h * 1024ull || h > 16) {
            s = 31;
            h = 16;
            cth = sectors / s;
        }
        if (cth >= h * 1024ull) {
            s = 63;
            h = 16;
            cth = sectors / s;
        }
    }
    *cyl = (uint16_t)(cth / h);
    *heads = (uint8_t)h;
    *spt = (uint8_t)s;
    return (uint32_t)*cyl << 16 | h << 8 | s;
}

/* ---------------------------------------------------------------------------------------- */
/* File I/O                                                                                  */

/* Short reads mean the metadata points past the end of the file. */
static int pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EBADMSG;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t r = pwrite(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int sync_fd(int fd)
{
    return fdatasync(fd) < 0 ? -errno : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Footer, header, batmap, locators                                                          */

struct footer {
    uint32_t features, version;
    uint64_t data_offset;
    uint32_t timestamp;
    uint8_t creator_app[4];
    uint32_t creator_version, creator_os;
    uint64_t orig_size, cur_size;
    uint16_t cyl;
    uint8_t heads, spt;
    uint32_t type, checksum;
    uint8_t uuid[16];
    uint8_t saved, hidden;
    uint8_t reserved[426]; /* kept so a rewrite preserves whatever another tool put there */
};

static void footer_encode(const struct footer *f, uint8_t b[FOOTER_SIZE])
{
    memset(b, 0, FOOTER_SIZE);
    memcpy(b, "conectix", 8);
    put32(b + 8, f->features);
    put32(b + 12, f->version);
    put64(b + 16, f->data_offset);
    put32(b + 24, f->timestamp);
    memcpy(b + 28, f->creator_app, 4);
    put32(b + 32, f->creator_version);
    put32(b + 36, f->creator_os);
    put64(b + 40, f->orig_size);
    put64(b + 48, f->cur_size);
    put16(b + 56, f->cyl);
    b[58] = f->heads;
    b[59] = f->spt;
    put32(b + 60, f->type);
    memcpy(b + 68, f->uuid, 16);
    b[84] = f->saved;
    b[85] = f->hidden;
    memcpy(b + 86, f->reserved, sizeof(f->reserved));
    put32(b + 64, checksum(b, FOOTER_SIZE, 64));
}

/* Decodes a footer; -EBADMSG unless cookie and checksum are right. */
static int footer_decode(const uint8_t b[FOOTER_SIZE], struct footer *f)
{
    if (memcmp(b, "conectix", 8) != 0)
        return -EBADMSG;
    f->checksum = get32(b + 64);
    if (f->checksum != checksum(b, FOOTER_SIZE, 64))
        return -EBADMSG;
    f->features = get32(b + 8);
    f->version = get32(b + 12);
    f->data_offset = get64(b + 16);
    f->timestamp = get32(b + 24);
    memcpy(f->creator_app, b + 28, 4);
    f->creator_version = get32(b + 32);
    f->creator_os = get32(b + 36);
    f->orig_size = get64(b + 40);
    f->cur_size = get64(b + 48);
    f->cyl = get16(b + 56);
    f->heads = b[58];
    f->spt = b[59];
    f->type = get32(b + 60);
    memcpy(f->uuid, b + 68, 16);
    f->saved = b[84];
    f->hidden = b[85];
    memcpy(f->reserved, b + 86, sizeof(f->reserved));
    return 0;
}

struct locator {
    uint32_t code, space, len, reserved;
    uint64_t offset;
};

struct header {
    uint64_t data_offset, table_offset;
    uint32_t version, max_entries, block_size, checksum;
    uint8_t parent_uuid[16];
    uint32_t parent_ts, reserved1;
    uint8_t parent_name[512]; /* UTF-16BE */
    struct locator loc[NUM_LOCATORS];
    uint8_t reserved2[256];
};

static void header_encode(const struct header *h, uint8_t b[HEADER_SIZE])
{
    memset(b, 0, HEADER_SIZE);
    memcpy(b, "cxsparse", 8);
    put64(b + 8, h->data_offset);
    put64(b + 16, h->table_offset);
    put32(b + 24, h->version);
    put32(b + 28, h->max_entries);
    put32(b + 32, h->block_size);
    memcpy(b + 40, h->parent_uuid, 16);
    put32(b + 56, h->parent_ts);
    put32(b + 60, h->reserved1);
    memcpy(b + 64, h->parent_name, 512);
    for (int i = 0; i < NUM_LOCATORS; i++) {
        uint8_t *l = b + 576 + 24 * i;
        put32(l, h->loc[i].code);
        put32(l + 4, h->loc[i].space);
        put32(l + 8, h->loc[i].len);
        put32(l + 12, h->loc[i].reserved);
        put64(l + 16, h->loc[i].offset);
    }
    memcpy(b + 768, h->reserved2, 256);
    put32(b + 36, checksum(b, HEADER_SIZE, 36));
}

static int header_decode(const uint8_t b[HEADER_SIZE], struct header *h)
{
    if (memcmp(b, "cxsparse", 8) != 0)
        return -EBADMSG;
    h->checksum = get32(b + 36);
    if (h->checksum != checksum(b, HEADER_SIZE, 36))
        return -EBADMSG;
    h->data_offset = get64(b + 8);
    h->table_offset = get64(b + 16);
    h->version = get32(b + 24);
    h->max_entries = get32(b + 28);
    h->block_size = get32(b + 32);
    memcpy(h->parent_uuid, b + 40, 16);
    h->parent_ts = get32(b + 56);
    h->reserved1 = get32(b + 60);
    memcpy(h->parent_name, b + 64, 512);
    for (int i = 0; i < NUM_LOCATORS; i++) {
        const uint8_t *l = b + 576 + 24 * i;
        h->loc[i].code = get32(l);
        h->loc[i].space = get32(l + 4);
        h->loc[i].len = get32(l + 8);
        h->loc[i].reserved = get32(l + 12);
        h->loc[i].offset = get64(l + 16);
    }
    memcpy(h->reserved2, b + 768, 256);
    return 0;
}

/* Bytes a locator reserves: the spec says sectors, blktap and Microsoft write bytes; values
 * below one sector can only be sector counts, other values must be whole sectors (0 = bad). */
static uint64_t locator_space_bytes(const struct locator *l)
{
    if (l->space < SECTOR)
        return (uint64_t)l->space * SECTOR;
    return l->space % SECTOR ? 0 : l->space;
}

/* ---------------------------------------------------------------------------------------- */
/* The handle                                                                                */

struct vhd {
    char *path;
    int fd;
    unsigned flags;
    struct footer ft;
    struct header hd;     /* dynamic and differencing only */
    uint64_t file_size;   /* bytes, as found at open and grown by us */
    uint64_t next_alloc;  /* where the trailing footer lives; new blocks go here */
    uint64_t sectors;     /* virtual size in sectors */
    uint32_t *bat;        /* host order, hd.max_entries entries */
    uint32_t spb;         /* sectors per block */
    uint32_t bitmap_size; /* bitmap bytes on disk (padded to a sector) */
    bool has_batmap;
    uint64_t batmap_off;  /* batmap header; bits follow at batmap_off + 512 */
    uint32_t batmap_secs; /* batmap size field (sectors of bits), as read */
    uint8_t *bm_cache;    /* one cached block bitmap */
    uint32_t bm_cache_block;
    bool bm_cache_valid;
    uint32_t *pending; /* allocated blocks whose BAT entries are not on disk yet */
    size_t npending;
    vhd *parent;
    unsigned depth; /* 1 for the leaf */
};

/* Pending BAT entries are committed after this many new blocks even without a flush, bounding
 * what a crash can take back (and the file space it leaves unreferenced). */
#define MAX_PENDING 64

/* Records why a load failed (for vhd_check and debug logs) and returns err. */
static int __attribute__((format(printf, 3, 4))) fail(char **why, int err, const char *fmt, ...)
{
    if (why && !*why) {
        va_list ap;
        va_start(ap, fmt);
        *why = xvasprintf(fmt, ap);
        va_end(ap);
    }
    return err;
}

static int commit_pending(vhd *v);

void vhd_close(vhd *v)
{
    if (v && v->npending) {
        int r = commit_pending(v);
        if (r < 0)
            log_debug("vhd: %s: committing new blocks at close: %s", v->path, strerror(-r));
    }
    while (v) {
        vhd *p = v->parent;
        free(v->pending);
        if (v->fd >= 0)
            close(v->fd);
        free(v->path);
        free(v->bat);
        free(v->bm_cache);
        free(v);
        v = p;
    }
}

static bool is_dynamic(const vhd *v)
{
    return v->ft.type == VHD_TYPE_DYNAMIC || v->ft.type == VHD_TYPE_DIFF;
}

static uint64_t block_data_off(const vhd *v, uint32_t blk)
{
    return (uint64_t)v->bat[blk] * SECTOR + v->bitmap_size;
}

/* ---------------------------------------------------------------------------------------- */
/* UTF-8 <-> UTF-16 for parent names and Windows locators                                    */

/* Encodes UTF-8 s as UTF-16 (big_endian or little) into out (max_units units); returns the
 * number of units or -EINVAL for malformed input or overflow. */
static int utf8_to_utf16(const char *s, uint8_t *out, size_t max_units, bool big_endian)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t n = 0;
    while (*p) {
        uint32_t c;
        int extra;
        if (*p < 0x80) {
            c = *p;
            extra = 0;
        } else if ((*p & 0xe0) == 0xc0) {
            c = *p & 0x1f;
            extra = 1;
        } else if ((*p & 0xf0) == 0xe0) {
            c = *p & 0x0f;
            extra = 2;
        } else if ((*p & 0xf8) == 0xf0) {
            c = *p & 0x07;
            extra = 3;
        } else {
            return -EINVAL;
        }
        p++;
        for (int i = 0; i < extra; i++, p++) {
            if ((*p & 0xc0) != 0x80)
                return -EINVAL;
            c = c << 6 | (*p & 0x3f);
        }
        if (c > 0x10ffff || (c >= 0xd800 && c < 0xe000))
            return -EINVAL;
        uint16_t units[2];
        int nu = 1;
        if (c >= 0x10000) {
            c -= 0x10000;
            units[0] = (uint16_t)(0xd800 | (c >> 10));
            units[1] = (uint16_t)(0xdc00 | (c & 0x3ff));
            nu = 2;
        } else {
            units[0] = (uint16_t)c;
        }
        if (n + (size_t)nu > max_units)
            return -EINVAL;
        for (int i = 0; i < nu; i++, n++) {
            out[2 * n] = big_endian ? units[i] >> 8 : units[i] & 0xff;
            out[2 * n + 1] = big_endian ? units[i] & 0xff : units[i] >> 8;
        }
    }
    return (int)n;
}

/* Decodes up to n bytes of UTF-16 (stopping at a NUL unit) into a caller-frees UTF-8 string;
 * NULL for malformed input (unpaired surrogates). */
static char *utf16_to_utf8(const uint8_t *b, size_t n, bool big_endian)
{
    size_t units = n / 2;
    char *out = xmalloc(units * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < units; i++) {
        uint32_t c = big_endian ? (uint32_t)(b[2 * i] << 8 | b[2 * i + 1])
                                : (uint32_t)(b[2 * i + 1] << 8 | b[2 * i]);
        if (c == 0)
            break;
        if (c >= 0xd800 && c < 0xdc00) {
            if (++i >= units)
                goto bad;
            uint32_t lo = big_endian ? (uint32_t)(b[2 * i] << 8 | b[2 * i + 1])
                                     : (uint32_t)(b[2 * i + 1] << 8 | b[2 * i]);
            if (lo < 0xdc00 || lo >= 0xe000)
                goto bad;
            c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
        } else if (c >= 0xdc00 && c < 0xe000) {
            goto bad;
        }
        if (c < 0x80) {
            out[o++] = (char)c;
        } else if (c < 0x800) {
            out[o++] = (char)(0xc0 | c >> 6);
            out[o++] = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            out[o++] = (char)(0xe0 | c >> 12);
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (c & 0x3f));
        } else {
            /* 4 UTF-8 bytes from 2 units: fits the 3-per-unit budget */
            out[o++] = (char)(0xf0 | c >> 18);
            out[o++] = (char)(0x80 | ((c >> 12) & 0x3f));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (c & 0x3f));
        }
    }
    out[o] = 0;
    return out;
bad:
    free(out);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Paths                                                                                     */

/* Caller-frees directory part of path ("." when it has none). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return xstrdup(".");
    if (slash == path)
        return xstrdup("/");
    return xstrndup(path, (size_t)(slash - path));
}

static const char *base_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Turns a locator's path into one we can open, relative to the child's directory; NULL when it
 * is unusable here (Windows drive paths, empty, embedded NULs). */
static char *locator_path(const char *child_path, const char *p, size_t len)
{
    if (len == 0 || memchr(p, 0, len))
        return NULL;
    AUTOFREE char *s = xstrndup(p, len);
    for (char *c = s; *c; c++)
        if (*c == '\\')
            *c = '/';
    const char *rel = s;
    if (strncmp(rel, "file://", 7) == 0)
        rel += 7;
    if (rel[0] && rel[1] == ':') /* C:/... cannot be resolved on this host */
        return NULL;
    if (!rel[0])
        return NULL;
    if (rel[0] == '/')
        return xstrdup(rel);
    while (rel[0] == '.' && rel[1] == '/')
        rel += 2;
    if (!rel[0])
        return NULL;
    AUTOFREE char *dir = dir_of(child_path);
    return xasprintf("%s/%s", dir, rel);
}

/* Caller-frees path of target relative to directory dir (both absolute, canonical), starting
 * with "./" or "../" as blktap's locators do. */
static char *relative_path(const char *dir, const char *target)
{
    size_t common = 0, i = 0;
    /* longest common prefix ending on a component boundary */
    while (dir[i] && target[i] && dir[i] == target[i]) {
        i++;
        if (dir[i] == '/' || dir[i] == 0)
            if (target[i] == '/')
                common = i;
    }
    if (strcmp(dir, "/") == 0)
        common = 0;
    const char *rest = target + common + 1;
    size_t ups = 0;
    for (const char *d = dir + common; *d; d++)
        if (*d == '/')
            ups++;
    if (strcmp(dir, "/") == 0)
        ups = 0;
    size_t n = 2 + 3 * ups + strlen(rest) + 1;
    char *out = xmalloc(n);
    out[0] = 0;
    if (!ups)
        strcat(out, "./");
    for (size_t u = 0; u < ups; u++)
        strcat(out, "../");
    strcat(out, rest);
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* Loading                                                                                   */

static int vhd_load(const char *path, unsigned flags, unsigned depth, vhd **ret, char **why);

/* Opens a candidate parent path: -ENOENT if absent, -ESTALE if its uuid is not the one the
 * child expects (both let the caller try the next candidate), otherwise the result of loading
 * it and its own ancestors. The uuid is compared before the ancestors are opened, so a chain
 * costs one load per candidate per level, whatever the locators say. */
static int open_parent(vhd *v, unsigned pflags, char **why);

static int try_parent(vhd *v, const char *ppath, unsigned pflags, char **why)
{
    if (access(ppath, F_OK) < 0)
        return -ENOENT;
    AUTO(vhd) *p = NULL;
    AUTOFREE char *pwhy = NULL;
    int r = vhd_load(ppath, pflags | VHD_OPEN_NO_PARENT, v->depth + 1, &p, &pwhy);
    if (r < 0)
        return fail(why, r == -ENOENT ? -EBADMSG : r, "parent %s: %s", ppath,
                    pwhy ? pwhy : strerror(-r));
    if (memcmp(p->ft.uuid, v->hd.parent_uuid, 16) != 0)
        return -ESTALE;
    p->flags = pflags;
    if (p->ft.type == VHD_TYPE_DIFF && !(pflags & VHD_OPEN_NO_PARENT)) {
        r = open_parent(p, pflags, &pwhy);
        if (r < 0)
            return fail(why, r == -ENOENT || r == -ESTALE ? -EBADMSG : r, "parent %s: %s", ppath,
                        pwhy ? pwhy : strerror(-r));
    }
    v->parent = TAKE_PTR(p);
    return 0;
}

/* Finds and opens the parent of differencing disk v: MacX, W2ru, W2ku locators, then the
 * header's parent name, all relative to v's directory. */
static int open_parent(vhd *v, unsigned pflags, char **why)
{
    static const uint32_t order[] = {PLAT_MACX, PLAT_W2RU, PLAT_W2KU};
    int best = -ENOENT;
    if (all_zero(v->hd.parent_uuid, 16))
        return fail(why, -ENOTSUP, "differencing disk with a raw parent is not supported");
    if (v->depth >= VHD_MAX_CHAIN_DEPTH)
        return fail(why, -ELOOP, "chain deeper than %d", VHD_MAX_CHAIN_DEPTH);
    for (size_t o = 0; o < ARRAY_SIZE(order); o++) {
        for (int i = 0; i < NUM_LOCATORS; i++) {
            const struct locator *l = &v->hd.loc[i];
            if (l->code != order[o])
                continue;
            /* bounds were checked at load */
            AUTOFREE uint8_t *buf = xmalloc(l->len + 1);
            int r = pread_full(v->fd, buf, l->len, l->offset);
            if (r < 0)
                return fail(why, r, "cannot read parent locator %d", i);
            AUTOFREE char *s = NULL;
            if (l->code == PLAT_MACX)
                s = xstrndup((const char *)buf, l->len);
            else
                s = utf16_to_utf8(buf, l->len, false);
            if (!s)
                continue;
            AUTOFREE char *pp = locator_path(v->path, s, strlen(s));
            if (!pp)
                continue;
            r = try_parent(v, pp, pflags, why);
            if (r == 0)
                return 0;
            if (r != -ENOENT && r != -ESTALE)
                return r;
            if (r == -ESTALE)
                best = r;
        }
    }
    AUTOFREE char *name = utf16_to_utf8(v->hd.parent_name, sizeof(v->hd.parent_name), true);
    if (name && name[0] && !strchr(name, '/')) {
        AUTOFREE char *dir = dir_of(v->path);
        AUTOFREE char *pp = xasprintf("%s/%s", dir, name);
        int r = try_parent(v, pp, pflags, why);
        if (r == 0)
            return 0;
        if (r != -ENOENT && r != -ESTALE)
            return r;
        if (r == -ESTALE)
            best = r;
    }
    if (best == -ESTALE)
        return fail(why, best, "parent found but its uuid differs from the child's parent id");
    return fail(why, best, "parent %s not found", name ? name : "(unnamed)");
}

/* Checks that [off, off+len) lies in the file. */
static bool in_file(const vhd *v, uint64_t off, uint64_t len)
{
    return off <= v->file_size && len <= v->file_size - off;
}

/* End of all metadata (header, BAT, batmap, locators): blktap wants every block beyond it.
 * Extents that do not fit the file (checked elsewhere) are left out. */
static uint64_t end_of_headers(const vhd *v)
{
    uint64_t e = v->ft.data_offset + HEADER_SIZE;
    uint64_t bat_end = v->hd.table_offset + round_up(4ull * v->hd.max_entries, SECTOR);
    if (bat_end > e)
        e = bat_end;
    if (v->has_batmap && in_file(v, v->batmap_off + SECTOR, (uint64_t)v->batmap_secs * SECTOR) &&
        v->batmap_off + SECTOR + (uint64_t)v->batmap_secs * SECTOR > e)
        e = v->batmap_off + SECTOR + (uint64_t)v->batmap_secs * SECTOR;
    for (int i = 0; i < NUM_LOCATORS; i++) {
        const struct locator *l = &v->hd.loc[i];
        uint64_t space = locator_space_bytes(l);
        if (l->code != PLAT_NONE && in_file(v, l->offset, space) && l->offset + space > e)
            e = l->offset + space;
    }
    return e;
}

static int load_dynamic(vhd *v, char **why)
{
    uint8_t hb[HEADER_SIZE];
    if (v->ft.data_offset < FOOTER_SIZE || !in_file(v, v->ft.data_offset, HEADER_SIZE))
        return fail(why, -EBADMSG, "footer data offset %llu outside the file",
                    (unsigned long long)v->ft.data_offset);
    int r = pread_full(v->fd, hb, HEADER_SIZE, v->ft.data_offset);
    if (r < 0)
        return fail(why, r, "cannot read header");
    if (header_decode(hb, &v->hd) < 0)
        return fail(why, -EBADMSG, "bad header cookie or checksum");
    struct header *h = &v->hd;
    if (h->version != HEADER_VERSION)
        return fail(why, -EBADMSG, "unsupported header version 0x%08x", h->version);
    if (!is_pow2(h->block_size) || h->block_size < MIN_BLOCK_SIZE || h->block_size > VHD_BLOCK_SIZE)
        return fail(why, -EBADMSG, "unsupported block size %u", h->block_size);
    v->spb = h->block_size / SECTOR;
    v->bitmap_size = (uint32_t)round_up((v->spb + 7) / 8, SECTOR);
    if ((uint64_t)h->max_entries * h->block_size < v->ft.cur_size)
        return fail(why, -EBADMSG, "BAT of %u entries too small for %llu bytes", h->max_entries,
                    (unsigned long long)v->ft.cur_size);
    uint64_t bat_bytes = (uint64_t)h->max_entries * 4;
    if (h->table_offset < FOOTER_SIZE || !in_file(v, h->table_offset, bat_bytes))
        return fail(why, -EBADMSG, "BAT (offset %llu, %u entries) outside the file",
                    (unsigned long long)h->table_offset, h->max_entries);
    if (h->table_offset < v->ft.data_offset + HEADER_SIZE &&
        v->ft.data_offset < h->table_offset + bat_bytes)
        return fail(why, -EBADMSG, "BAT overlaps the header");
    /* in_file bounds max_entries by the file size, so this allocation is bounded too */
    v->bat = xmalloc(bat_bytes ? bat_bytes : 1);
    r = pread_full(v->fd, v->bat, bat_bytes, h->table_offset);
    if (r < 0)
        return fail(why, r, "cannot read BAT");
    uint64_t data_end = v->next_alloc;
    for (uint32_t i = 0; i < h->max_entries; i++) {
        uint32_t e = get32((const uint8_t *)&v->bat[i]);
        v->bat[i] = e;
        if (e == BAT_UNUSED)
            continue;
        uint64_t off = (uint64_t)e * SECTOR;
        uint64_t len = (uint64_t)v->bitmap_size + h->block_size;
        if (off < FOOTER_SIZE || off > data_end || len > data_end - off)
            return fail(why, -EBADMSG, "BAT entry %u (sector %u) outside the data area", i, e);
        if (off < h->table_offset + bat_bytes && h->table_offset < off + len)
            return fail(why, -EBADMSG, "block %u overlaps the BAT", i);
        if (off < v->ft.data_offset + HEADER_SIZE && v->ft.data_offset < off + len)
            return fail(why, -EBADMSG, "block %u overlaps the header", i);
    }
    /* blktap's batmap: optional for readers (we always consult the bitmaps) */
    v->batmap_off = h->table_offset + round_up(bat_bytes, SECTOR);
    if (in_file(v, v->batmap_off, SECTOR)) {
        uint8_t bh[SECTOR];
        r = pread_full(v->fd, bh, SECTOR, v->batmap_off);
        if (r < 0)
            return fail(why, r, "cannot read batmap header");
        v->has_batmap = memcmp(bh, "tdbatmap", 8) == 0;
        v->batmap_secs = get32(bh + 16);
    }
    if (v->ft.type == VHD_TYPE_DIFF) {
        for (int i = 0; i < NUM_LOCATORS; i++) {
            const struct locator *l = &h->loc[i];
            if (l->code != PLAT_MACX && l->code != PLAT_W2KU && l->code != PLAT_W2RU)
                continue;
            if (l->len > MAX_LOCATOR_BYTES || l->len > locator_space_bytes(l) ||
                !in_file(v, l->offset, l->len))
                return fail(why, -EBADMSG, "parent locator %d out of bounds", i);
        }
    }
    return 0;
}

static int vhd_load(const char *path, unsigned flags, unsigned depth, vhd **ret, char **why)
{
    if (depth > VHD_MAX_CHAIN_DEPTH)
        return fail(why, -ELOOP, "chain deeper than %d", VHD_MAX_CHAIN_DEPTH);
    /* O_NONBLOCK: a locator naming a FIFO must not hang us; irrelevant for regular files */
    int oflags = (flags & VHD_OPEN_RDWR ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    AUTOCLOSE int fd = open(path, oflags);
    if (fd < 0)
        return fail(why, -errno, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return fail(why, -EBADMSG, "%s is not a regular file or block device", path);
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0)
        return -errno;

    vhd *v = xcalloc(1, sizeof(*v));
    AUTO(vhd) *guard = v;
    v->fd = TAKE_FD(fd);
    v->path = xstrdup(path);
    v->flags = flags;
    v->depth = depth;
    v->file_size = (uint64_t)end;
    if (v->file_size < FOOTER_SIZE)
        return fail(why, -EBADMSG, "file too small for a VHD footer");

    uint8_t fb[FOOTER_SIZE];
    uint64_t foff = v->file_size - FOOTER_SIZE;
    int r = pread_full(v->fd, fb, FOOTER_SIZE, foff);
    if (r < 0)
        return fail(why, r, "cannot read footer");
    if (footer_decode(fb, &v->ft) == 0) {
        v->next_alloc = foff;
    } else {
        /* A dynamic disk keeps a copy at offset 0; the trailing one is the primary. */
        r = pread_full(v->fd, fb, FOOTER_SIZE, 0);
        if (r < 0)
            return fail(why, r, "cannot read footer copy");
        if (footer_decode(fb, &v->ft) < 0 ||
            (v->ft.type != VHD_TYPE_DYNAMIC && v->ft.type != VHD_TYPE_DIFF))
            return fail(why, -EBADMSG, "no valid footer (bad cookie or checksum)");
        v->next_alloc = round_up(v->file_size, SECTOR);
    }
    struct footer *f = &v->ft;
    if (f->type != VHD_TYPE_FIXED && f->type != VHD_TYPE_DYNAMIC && f->type != VHD_TYPE_DIFF)
        return fail(why, -EBADMSG, "unsupported disk type %u", f->type);
    if (f->cur_size % SECTOR || f->cur_size > VHD_MAX_OPEN_SIZE)
        return fail(why, -EBADMSG, "unsupported virtual size %llu",
                    (unsigned long long)f->cur_size);
    v->sectors = f->cur_size / SECTOR;
    if (f->type == VHD_TYPE_FIXED) {
        if (f->cur_size > v->next_alloc)
            return fail(why, -EBADMSG, "fixed disk shorter than its virtual size");
    } else {
        r = load_dynamic(v, why);
        if (r < 0)
            return r;
        v->bm_cache = xmalloc(v->bitmap_size);
        /* new blocks go where the trailing footer is: it must be past all metadata */
        if ((flags & VHD_OPEN_RDWR) && end_of_headers(v) > v->next_alloc)
            return fail(why, -EBADMSG, "metadata runs into the trailing footer");
    }
    if (f->type == VHD_TYPE_DIFF && !(flags & VHD_OPEN_NO_PARENT)) {
        r = open_parent(v, flags & ~(unsigned)VHD_OPEN_RDWR, why);
        if (r < 0)
            return r;
    }
    *ret = TAKE_PTR(guard);
    return 0;
}

int vhd_open(const char *path, unsigned flags, vhd **ret)
{
    AUTOFREE char *why = NULL;
    vhd *v = NULL;
    int r = vhd_load(path, flags, 1, &v, &why);
    if (r < 0) {
        log_debug("vhd: cannot open %s: %s", path, why ? why : strerror(-r));
        return r;
    }
    *ret = v;
    return 0;
}

const char *vhd_path(const vhd *v)
{
    return v->path;
}

vhd *vhd_parent(const vhd *v)
{
    return v->parent;
}

static uint32_t count_allocated(const vhd *v)
{
    uint32_t n = 0;
    if (is_dynamic(v))
        for (uint32_t i = 0; i < v->hd.max_entries; i++)
            n += v->bat[i] != BAT_UNUSED;
    return n;
}

void vhd_get_info(const vhd *v, struct vhd_info *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->type = (enum vhd_type)v->ft.type;
    ret->virtual_size = v->ft.cur_size;
    ret->physical_size = v->file_size;
    uuid_unparse_lower(v->ft.uuid, ret->uuid);
    if (v->ft.type == VHD_TYPE_DIFF)
        uuid_unparse_lower(v->hd.parent_uuid, ret->parent_uuid);
    ret->hidden = v->ft.hidden != 0;
    for (int i = 0; i < 4; i++)
        ret->creator[i] = v->ft.creator_app[i] >= 0x20 && v->ft.creator_app[i] < 0x7f
                              ? (char)v->ft.creator_app[i]
                              : 0;
    ret->creator_version = v->ft.creator_version;
    ret->timestamp = (int64_t)v->ft.timestamp + VHD_EPOCH_OFFSET;
    if (is_dynamic(v)) {
        ret->block_size = v->hd.block_size;
        ret->max_blocks = v->hd.max_entries;
        ret->allocated_blocks = count_allocated(v);
    }
    unsigned d = 0;
    for (const vhd *p = v; p; p = p->parent)
        d++;
    ret->chain_depth = d;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading                                                                                   */

static bool bit_test(const uint8_t *bm, uint32_t k)
{
    return bm[k >> 3] & (0x80 >> (k & 7));
}

static void bit_set(uint8_t *bm, uint32_t k)
{
    bm[k >> 3] |= (uint8_t)(0x80 >> (k & 7));
}

static int get_bitmap(vhd *v, uint32_t blk, const uint8_t **ret)
{
    if (!v->bm_cache_valid || v->bm_cache_block != blk) {
        v->bm_cache_valid = false;
        int r = pread_full(v->fd, v->bm_cache, v->bitmap_size, (uint64_t)v->bat[blk] * SECTOR);
        if (r < 0)
            return r;
        v->bm_cache_block = blk;
        v->bm_cache_valid = true;
    }
    *ret = v->bm_cache;
    return 0;
}

static int read_sectors(vhd *v, uint8_t *buf, uint64_t sec, uint64_t n);

/* Sectors v's file does not hold: the parent's, zeros past the parent's end or without one. */
static int read_below(vhd *v, uint8_t *buf, uint64_t sec, uint64_t n)
{
    if (v->ft.type != VHD_TYPE_DIFF) {
        memset(buf, 0, n * SECTOR);
        return 0;
    }
    if (!v->parent)
        return -ENOLINK;
    uint64_t m = 0;
    if (sec < v->parent->sectors) {
        m = n < v->parent->sectors - sec ? n : v->parent->sectors - sec;
        int r = read_sectors(v->parent, buf, sec, m);
        if (r < 0)
            return r;
    }
    memset(buf + m * SECTOR, 0, (n - m) * SECTOR);
    return 0;
}

static int read_sectors(vhd *v, uint8_t *buf, uint64_t sec, uint64_t n)
{
    if (v->ft.type == VHD_TYPE_FIXED)
        return pread_full(v->fd, buf, n * SECTOR, sec * SECTOR);
    while (n) {
        uint64_t blk = sec / v->spb;
        uint32_t k = (uint32_t)(sec % v->spb);
        uint64_t cnt = v->spb - k < n ? v->spb - k : n;
        int r;
        if (blk >= v->hd.max_entries || v->bat[blk] == BAT_UNUSED) {
            r = read_below(v, buf, sec, cnt);
            if (r < 0)
                return r;
        } else {
            const uint8_t *bm;
            r = get_bitmap(v, (uint32_t)blk, &bm);
            if (r < 0)
                return r;
            uint64_t i = 0;
            while (i < cnt) {
                bool present = bit_test(bm, k + (uint32_t)i);
                uint64_t j = i + 1;
                while (j < cnt && bit_test(bm, k + (uint32_t)j) == present)
                    j++;
                if (present)
                    r = pread_full(v->fd, buf + i * SECTOR, (j - i) * SECTOR,
                                   block_data_off(v, (uint32_t)blk) + (k + i) * SECTOR);
                else
                    r = read_below(v, buf + i * SECTOR, sec + i, j - i);
                if (r < 0)
                    return r;
                i = j;
            }
        }
        buf += cnt * SECTOR;
        sec += cnt;
        n -= cnt;
    }
    return 0;
}

static int check_range(const vhd *v, uint64_t off, size_t len)
{
    if (off % SECTOR || len % SECTOR)
        return -EINVAL;
    if (off > v->ft.cur_size || len > v->ft.cur_size - off)
        return -ERANGE;
    return 0;
}

int vhd_read(vhd *v, void *buf, uint64_t off, size_t len)
{
    int r = check_range(v, off, len);
    if (r < 0)
        return r;
    return read_sectors(v, buf, off / SECTOR, len / SECTOR);
}

/* ---------------------------------------------------------------------------------------- */
/* Writing                                                                                   */

static int barrier(vhd *v)
{
    return v->flags & VHD_OPEN_UNSAFE ? 0 : sync_fd(v->fd);
}

static int write_footer_at(vhd *v, uint64_t off)
{
    uint8_t fb[FOOTER_SIZE];
    footer_encode(&v->ft, fb);
    return pwrite_full(v->fd, fb, FOOTER_SIZE, off);
}

/* Rewrites both footer copies: the trailing (primary) one first, then the copy at 0. */
static int write_footers(vhd *v)
{
    int r = write_footer_at(v, v->next_alloc);
    if (r < 0)
        return r;
    if (is_dynamic(v)) {
        r = write_footer_at(v, 0);
        if (r < 0)
            return r;
    }
    return sync_fd(v->fd);
}

/* Writes the BAT entries of newly allocated blocks, after a barrier that puts their data and
 * bitmaps on disk first. On failure the entries stay pending (a retry rewrites them all). */
static int commit_pending(vhd *v)
{
    if (!v->npending)
        return 0;
    int r = barrier(v);
    if (r < 0)
        return r;
    for (size_t i = 0; i < v->npending; i++) {
        uint8_t e[4];
        put32(e, v->bat[v->pending[i]]);
        r = pwrite_full(v->fd, e, 4, v->hd.table_offset + 4ull * v->pending[i]);
        if (r < 0)
            return r;
    }
    v->npending = 0;
    return 0;
}

/* Reserves room for one block at the end of the file: moves the trailing footer past it first
 * (the file ends in a valid footer throughout) and clears the stale copy. The data starts on
 * a 4 KiB boundary, the bitmap just before it, as blktap places them. On a later failure the
 * space is merely left unused. */
static int reserve_block(vhd *v, uint64_t *ret_bm_off)
{
    uint64_t old_footer = v->next_alloc;
    uint64_t data_off = round_up(old_footer + v->bitmap_size, 4096);
    uint64_t bm_off = data_off - v->bitmap_size;
    uint64_t new_footer = data_off + v->hd.block_size;
    if (bm_off / SECTOR >= BAT_UNUSED)
        return -EFBIG;
    int r = write_footer_at(v, new_footer);
    if (r < 0)
        return r;
    v->file_size = new_footer + FOOTER_SIZE;
    v->next_alloc = new_footer;
    if (old_footer < bm_off) {
        static const uint8_t zero[FOOTER_SIZE];
        r = pwrite_full(v->fd, zero, FOOTER_SIZE, old_footer);
        if (r < 0)
            return r;
    }
    *ret_bm_off = bm_off;
    return 0;
}

/* Allocates block blk at the end of the file with sectors [k, k+n) from data. Order: new
 * trailing footer (the file stays valid), data, bitmap; the BAT entry follows in
 * commit_pending, after a barrier. Until then the block is unreferenced space: a crash loses
 * the block's writes (old data) but leaves a valid file; reads through v already see it. */
static int alloc_block(vhd *v, uint32_t blk, const uint8_t *data, uint32_t k, uint32_t n)
{
    uint64_t bm_off;
    int r = reserve_block(v, &bm_off);
    if (r < 0)
        return r;
    uint64_t data_off = bm_off + v->bitmap_size;
    r = pwrite_full(v->fd, data, (size_t)n * SECTOR, data_off + (uint64_t)k * SECTOR);
    if (r < 0)
        return r;
    AUTOFREE uint8_t *bm = xcalloc(1, v->bitmap_size);
    for (uint32_t i = k; i < k + n; i++)
        bit_set(bm, i);
    r = pwrite_full(v->fd, bm, v->bitmap_size, bm_off);
    if (r < 0)
        return r;
    v->bat[blk] = (uint32_t)(bm_off / SECTOR);
    if (!v->pending)
        v->pending = xmalloc(MAX_PENDING * sizeof(*v->pending));
    v->pending[v->npending++] = blk;
    if (v->npending == MAX_PENDING || (v->flags & VHD_OPEN_WRITETHROUGH)) {
        r = commit_pending(v);
        if (r < 0)
            return r;
    }
    memcpy(v->bm_cache, bm, v->bitmap_size);
    v->bm_cache_block = blk;
    v->bm_cache_valid = true;
    return 0;
}

/* Writes into an allocated block: data first, then the bitmap if new sectors became present,
 * so a crash in between leaves those sectors reading their old contents. */
static int write_in_block(vhd *v, uint32_t blk, const uint8_t *data, uint32_t k, uint32_t n)
{
    int r = pwrite_full(v->fd, data, (size_t)n * SECTOR, block_data_off(v, blk) + k * SECTOR);
    if (r < 0)
        return r;
    const uint8_t *cur;
    r = get_bitmap(v, blk, &cur);
    if (r < 0)
        return r;
    bool changed = false;
    for (uint32_t i = k; i < k + n && !changed; i++)
        changed = !bit_test(cur, i);
    if (!changed)
        return 0;
    AUTOFREE uint8_t *bm = xmalloc(v->bitmap_size);
    memcpy(bm, cur, v->bitmap_size);
    for (uint32_t i = k; i < k + n; i++)
        bit_set(bm, i);
    /* only the bitmap sectors that changed, each a single-sector write */
    uint32_t first = (k / 8) / SECTOR, last = ((k + n - 1) / 8) / SECTOR;
    v->bm_cache_valid = false;
    r = pwrite_full(v->fd, bm + first * SECTOR, (last - first + 1) * SECTOR,
                    (uint64_t)v->bat[blk] * SECTOR + first * SECTOR);
    if (r < 0)
        return r;
    memcpy(v->bm_cache, bm, v->bitmap_size);
    v->bm_cache_valid = true;
    return 0;
}

int vhd_write(vhd *v, const void *buf, uint64_t off, size_t len)
{
    if (!(v->flags & VHD_OPEN_RDWR))
        return -EROFS;
    int r = check_range(v, off, len);
    if (r < 0)
        return r;
    const uint8_t *p = buf;
    uint64_t sec = off / SECTOR, n = len / SECTOR;
    if (v->ft.type == VHD_TYPE_FIXED)
        return pwrite_full(v->fd, p, len, off);
    while (n) {
        uint32_t blk = (uint32_t)(sec / v->spb);
        uint32_t k = (uint32_t)(sec % v->spb);
        uint32_t cnt = (uint32_t)(v->spb - k < n ? v->spb - k : n);
        if (v->bat[blk] == BAT_UNUSED)
            r = alloc_block(v, blk, p, k, cnt);
        else
            r = write_in_block(v, blk, p, k, cnt);
        if (r < 0)
            return r;
        p += (size_t)cnt * SECTOR;
        sec += cnt;
        n -= cnt;
    }
    return 0;
}

int vhd_flush(vhd *v)
{
    int r = commit_pending(v);
    if (r < 0)
        return r;
    return sync_fd(v->fd);
}

/* Punches [off, off+len) of the file out; file systems without holes just keep the data. */
static int punch(vhd *v, uint64_t off, uint64_t len)
{
    if (fallocate(v->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    return errno == EOPNOTSUPP || errno == ENOSYS ? 0 : -errno;
}

/* Whether an ancestor of v may hold data for block blk (then v's bits must stay). */
static bool ancestor_holds(const vhd *v, uint64_t blk)
{
    if (v->ft.type != VHD_TYPE_DIFF)
        return false;
    if (!v->parent)
        return true; /* unknown (VHD_OPEN_NO_PARENT): assume it does */
    for (const vhd *p = v->parent; p; p = p->parent) {
        if (blk * v->spb >= p->sectors)
            continue; /* past its end: zeros, whatever its parents hold */
        if (p->ft.type == VHD_TYPE_FIXED)
            return true;
        /* block sizes may differ along a chain: look at every block of p under blk */
        uint64_t first = blk * v->spb / p->spb, last = ((blk + 1) * v->spb - 1) / p->spb;
        for (uint64_t b = first; b <= last && b < p->hd.max_entries; b++)
            if (p->bat[b] != BAT_UNUSED)
                return true;
        if (p->ft.type != VHD_TYPE_DIFF)
            return false;
    }
    return false;
}

static int batmap_bit_set(vhd *v, uint32_t blk, bool *ret)
{
    *ret = false;
    if (!v->has_batmap || blk / 8 >= (uint64_t)v->batmap_secs * SECTOR)
        return 0;
    uint8_t byte;
    int r = pread_full(v->fd, &byte, 1, v->batmap_off + SECTOR + blk / 8);
    if (r < 0)
        return r;
    *ret = bit_test(&byte, blk % 8);
    return 0;
}

int vhd_discard(vhd *v, uint64_t off, uint64_t len)
{
    if (!(v->flags & VHD_OPEN_RDWR))
        return -EROFS;
    if (len > SIZE_MAX)
        return -EINVAL;
    int r = check_range(v, off, (size_t)len);
    if (r < 0)
        return r;
    if (v->ft.type == VHD_TYPE_FIXED)
        return punch(v, off, len);
    uint64_t sec = off / SECTOR, n = len / SECTOR;
    while (n) {
        uint32_t blk = (uint32_t)(sec / v->spb);
        uint32_t k = (uint32_t)(sec % v->spb);
        uint32_t cnt = (uint32_t)(v->spb - k < n ? v->spb - k : n);
        sec += cnt;
        n -= cnt;
        bool full_bitmap;
        if (blk >= v->hd.max_entries || v->bat[blk] == BAT_UNUSED || ancestor_holds(v, blk))
            continue;
        if ((r = batmap_bit_set(v, blk, &full_bitmap)) < 0)
            return r;
        if (full_bitmap)
            continue; /* a batmap bit must not outlive a full bitmap: leave the block */
        const uint8_t *cur;
        if ((r = get_bitmap(v, blk, &cur)) < 0)
            return r;
        bool changed = false;
        for (uint32_t i = k; i < k + cnt && !changed; i++)
            changed = bit_test(cur, i);
        if (changed) {
            AUTOFREE uint8_t *bm = xmalloc(v->bitmap_size);
            memcpy(bm, cur, v->bitmap_size);
            for (uint32_t i = k; i < k + cnt; i++)
                bm[i >> 3] &= (uint8_t) ~(0x80 >> (i & 7));
            /* bitmap first: from then on the sectors read zeros, whatever the data holds */
            uint32_t first = (k / 8) / SECTOR, last = ((k + cnt - 1) / 8) / SECTOR;
            v->bm_cache_valid = false;
            r = pwrite_full(v->fd, bm + first * SECTOR, (last - first + 1) * SECTOR,
                            (uint64_t)v->bat[blk] * SECTOR + first * SECTOR);
            if (r < 0)
                return r;
            memcpy(v->bm_cache, bm, v->bitmap_size);
            v->bm_cache_block = blk;
            v->bm_cache_valid = true;
        }
        /* whole 4 KiB pages only: a partial one would zero sectors that are still present */
        uint64_t start = block_data_off(v, blk) + (uint64_t)k * SECTOR;
        uint64_t end = start + (uint64_t)cnt * SECTOR;
        uint64_t ps = round_up(start, 4096), pe = end & ~4095ull;
        if (pe > ps && (r = punch(v, ps, pe - ps)) < 0)
            return r;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Creating                                                                                  */

static uint32_t vhd_now(void)
{
    time_t t = time(NULL);
    return t > VHD_EPOCH_OFFSET ? (uint32_t)(t - VHD_EPOCH_OFFSET) : 0;
}

static void footer_init(struct footer *f, enum vhd_type type, uint64_t size)
{
    memset(f, 0, sizeof(*f));
    f->features = FEATURE_RESERVED;
    f->version = FILE_FORMAT_VERSION;
    f->data_offset = type == VHD_TYPE_FIXED ? ~0ull : FOOTER_SIZE;
    f->timestamp = vhd_now();
    memcpy(f->creator_app, "tap", 4);
    f->creator_version = TAP_VERSION;
    f->creator_os = 0;
    f->orig_size = f->cur_size = size;
    chs_geometry(size, &f->cyl, &f->heads, &f->spt);
    f->type = type;
    uuid_generate(f->uuid);
}

struct parent_link {
    uint8_t uuid[16];
    uint32_t ts;
    uint8_t name[512];
    uint32_t nloc;
    uint32_t codes[3];
    uint8_t payload[3][MAX_LOCATOR_BYTES];
    uint32_t len[3];
};

/* Fills link with what a child of parent_path records about it: uuid, mtime, name and the
 * three blktap locators relative to the child's directory. */
static int make_parent_link(const char *child_path, const char *parent_path,
                            struct parent_link *link)
{
    AUTO(vhd) *p = NULL;
    int r = vhd_open(parent_path, VHD_OPEN_RDONLY, &p);
    if (r < 0)
        return r;
    struct stat st;
    if (fstat(p->fd, &st) < 0)
        return -errno;
    memset(link, 0, sizeof(*link));
    memcpy(link->uuid, p->ft.uuid, 16);
    link->ts = st.st_mtime > VHD_EPOCH_OFFSET ? (uint32_t)(st.st_mtime - VHD_EPOCH_OFFSET) : 0;
    if (utf8_to_utf16(base_of(parent_path), link->name, 256, true) < 0)
        return -EINVAL;
    AUTOFREE char *pabs = realpath(parent_path, NULL);
    AUTOFREE char *cdir = dir_of(child_path);
    AUTOFREE char *cdir_abs = realpath(cdir, NULL);
    if (!pabs || !cdir_abs)
        return -errno;
    AUTOFREE char *rel = relative_path(cdir_abs, pabs);
    AUTOFREE char *url = xasprintf("file://%s", rel);
    if (strlen(url) > MAX_LOCATOR_BYTES)
        return -ENAMETOOLONG;
    link->codes[0] = PLAT_MACX;
    link->len[0] = (uint32_t)strlen(url);
    memcpy(link->payload[0], url, link->len[0]);
    for (char *c = rel; *c; c++)
        if (*c == '/')
            *c = '\\';
    int units = utf8_to_utf16(rel, link->payload[1], MAX_LOCATOR_BYTES / 2, false);
    if (units < 0)
        return -ENAMETOOLONG;
    link->codes[1] = PLAT_W2KU;
    link->codes[2] = PLAT_W2RU;
    link->len[1] = link->len[2] = (uint32_t)units * 2;
    memcpy(link->payload[2], link->payload[1], link->len[1]);
    link->nloc = 3;
    return 0;
}

/* Sets h's parent fields to link with locator payloads laid out from off; returns the end. */
static uint64_t header_set_parent(struct header *h, const struct parent_link *link, uint64_t off)
{
    memcpy(h->parent_uuid, link->uuid, 16);
    h->parent_ts = link->ts;
    memcpy(h->parent_name, link->name, 512);
    memset(h->loc, 0, sizeof(h->loc));
    for (uint32_t i = 0; i < link->nloc; i++) {
        uint32_t space = (uint32_t)round_up(link->len[i] ? link->len[i] : 1, SECTOR);
        h->loc[i].code = link->codes[i];
        h->loc[i].space = space; /* bytes, as blktap writes it */
        h->loc[i].len = link->len[i];
        h->loc[i].offset = off;
        off += space;
    }
    return off;
}

static int create_file(const char *path, enum vhd_type type, uint64_t size, uint64_t max_size,
                       const struct parent_link *link)
{
    if (size == 0 || size % SECTOR || size > VHD_MAX_VIRTUAL_SIZE)
        return -EINVAL;
    if (type != VHD_TYPE_FIXED && type != VHD_TYPE_DYNAMIC && type != VHD_TYPE_DIFF)
        return -EINVAL;
    if (max_size < size)
        max_size = size;
    if (max_size > VHD_MAX_VIRTUAL_SIZE)
        return -EINVAL;
    struct footer f;
    footer_init(&f, type, size);
    uint8_t fb[FOOTER_SIZE];
    footer_encode(&f, fb);

    AUTOCLOSE int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int r;
    if (type == VHD_TYPE_FIXED) {
        r = ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
        if (r == 0)
            r = pwrite_full(fd, fb, FOOTER_SIZE, size);
    } else {
        uint32_t n = (uint32_t)((max_size + VHD_BLOCK_SIZE - 1) / VHD_BLOCK_SIZE);
        uint64_t bat_bytes = round_up(4ull * n, SECTOR);
        uint64_t bm_bytes = round_up((n + 7) / 8, SECTOR);
        uint64_t batmap_off = 3 * SECTOR + bat_bytes;
        struct header h;
        memset(&h, 0, sizeof(h));
        h.data_offset = ~0ull;
        h.table_offset = 3 * SECTOR;
        h.version = HEADER_VERSION;
        h.max_entries = n;
        h.block_size = VHD_BLOCK_SIZE;
        uint64_t end = batmap_off + SECTOR + bm_bytes;
        if (link)
            end = header_set_parent(&h, link, end);
        size_t total = end + FOOTER_SIZE;
        AUTOFREE uint8_t *img = xcalloc(1, total);
        memcpy(img, fb, FOOTER_SIZE);
        header_encode(&h, img + FOOTER_SIZE);
        memset(img + h.table_offset, 0xff, bat_bytes);
        uint8_t *bmh = img + batmap_off;
        memcpy(bmh, "tdbatmap", 8);
        put64(bmh + 8, batmap_off + SECTOR);
        put32(bmh + 16, (uint32_t)(bm_bytes / SECTOR));
        put32(bmh + 20, BATMAP_VERSION);
        put32(bmh + 24, checksum(img + batmap_off + SECTOR, bm_bytes, bm_bytes));
        if (link)
            for (uint32_t i = 0; i < link->nloc; i++)
                memcpy(img + h.loc[i].offset, link->payload[i], link->len[i]);
        memcpy(img + end, fb, FOOTER_SIZE);
        r = pwrite_full(fd, img, total, 0);
    }
    if (r == 0)
        r = fsync(fd) < 0 ? -errno : 0;
    if (r < 0)
        unlink(path);
    return r;
}

int vhd_create(const char *path, enum vhd_type type, uint64_t size, uint64_t max_size)
{
    if (type == VHD_TYPE_DIFF)
        return -EINVAL;
    return create_file(path, type, size, max_size, NULL);
}

int vhd_set_hidden(const char *path, bool hidden)
{
    AUTO(vhd) *v = NULL;
    int r = vhd_open(path, VHD_OPEN_RDWR | VHD_OPEN_NO_PARENT, &v);
    if (r < 0)
        return r;
    if (v->ft.hidden == hidden)
        return 0;
    v->ft.hidden = hidden;
    return write_footers(v);
}

int vhd_snapshot(const char *child_path, const char *parent_path, unsigned flags)
{
    AUTO(vhd) *p = NULL;
    int r = vhd_open(parent_path, VHD_OPEN_RDONLY, &p);
    if (r < 0)
        return r;
    uint64_t size = p->ft.cur_size;
    if (size == 0 || size % SECTOR)
        return -EINVAL;
    unsigned depth = 0;
    for (const vhd *n = p; n; n = n->parent)
        depth++;
    if (depth >= VHD_MAX_CHAIN_DEPTH)
        return -ELOOP;
    if (flags & VHD_SNAPSHOT_HIDE_PARENT) {
        r = vhd_set_hidden(parent_path, true);
        if (r < 0)
            return r;
    }
    AUTOFREE struct parent_link *link = xmalloc(sizeof(*link));
    r = make_parent_link(child_path, parent_path, link);
    if (r < 0)
        return r;
    return create_file(child_path, VHD_TYPE_DIFF, size, size, link);
}

int vhd_set_parent(const char *child_path, const char *parent_path)
{
    AUTO(vhd) *v = NULL;
    int r = vhd_open(child_path, VHD_OPEN_RDWR | VHD_OPEN_NO_PARENT, &v);
    if (r < 0)
        return r;
    if (v->ft.type != VHD_TYPE_DIFF)
        return -EINVAL;
    AUTOFREE struct parent_link *link = xmalloc(sizeof(*link));
    r = make_parent_link(child_path, parent_path, link);
    if (r < 0)
        return r;
    /* Like vhd-util modify -p: new payloads go into the existing locator slots (all metadata
     * must stay before the blocks), then the header commits the new uuid, name and lengths.
     * A crash in between leaves the old header, whose parent name still finds the old
     * parent when the locators no longer do. */
    struct header h = v->hd;
    memcpy(h.parent_uuid, link->uuid, 16);
    h.parent_ts = link->ts;
    memcpy(h.parent_name, link->name, 512);
    /* all slots are sized up first, so that nothing is written unless everything fits */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < NUM_LOCATORS; i++) {
            struct locator *l = &h.loc[i];
            int which = l->code == PLAT_MACX   ? 0
                        : l->code == PLAT_W2KU ? 1
                        : l->code == PLAT_W2RU ? 2
                                               : -1;
            if (which < 0)
                continue;
            uint64_t space = locator_space_bytes(l);
            uint32_t len = link->len[which];
            if (!in_file(v, l->offset, space))
                return -EBADMSG;
            if (len > space)
                return -ENOSPC;
            if (pass == 0)
                continue;
            /* with two zero bytes after it, a reader of the old length stops at the new end */
            uint8_t buf[MAX_LOCATOR_BYTES + 2];
            size_t n = len + 2 < space ? len + 2 : (size_t)space;
            memset(buf, 0, sizeof(buf));
            memcpy(buf, link->payload[which], len);
            r = pwrite_full(v->fd, buf, n, l->offset);
            if (r < 0)
                return r;
            l->len = len;
        }
    }
    r = sync_fd(v->fd);
    if (r < 0)
        return r;
    uint8_t hb[HEADER_SIZE];
    header_encode(&h, hb);
    r = pwrite_full(v->fd, hb, HEADER_SIZE, v->ft.data_offset);
    if (r < 0)
        return r;
    v->hd = h;
    return sync_fd(v->fd);
}

/* ---------------------------------------------------------------------------------------- */
/* Resize                                                                                    */

/* Moves block blk to the end of the file: copy, barrier, then the BAT entry switches to the
 * copy, so a crash leaves one valid copy referenced. */
static int relocate_block(vhd *v, uint32_t blk)
{
    uint64_t old = (uint64_t)v->bat[blk] * SECTOR;
    size_t len = (size_t)v->bitmap_size + v->hd.block_size;
    uint64_t bm_off;
    int r = reserve_block(v, &bm_off);
    if (r < 0)
        return r;
    AUTOFREE uint8_t *buf = xmalloc(len);
    r = pread_full(v->fd, buf, len, old);
    if (r == 0)
        r = pwrite_full(v->fd, buf, len, bm_off);
    if (r == 0)
        r = sync_fd(v->fd);
    if (r < 0)
        return r;
    uint8_t e[4];
    put32(e, (uint32_t)(bm_off / SECTOR));
    r = pwrite_full(v->fd, e, 4, v->hd.table_offset + 4ull * blk);
    if (r < 0)
        return r;
    v->bat[blk] = (uint32_t)(bm_off / SECTOR);
    v->bm_cache_valid = false;
    return 0;
}

/* Gives the BAT n entries. blktap wants all metadata before the first block, and the batmap
 * right after the BAT, so: a new BAT and batmap go just past the current metadata (blocks in
 * the way move to the end first), then one header write switches to them. Every step leaves a
 * valid file; the old BAT and batmap become unused space. The new batmap starts all clear
 * (always safe: a clear bit only means "read the bitmap"). */
static int grow_bat(vhd *v, uint32_t n)
{
    uint64_t bat_bytes = round_up(4ull * n, SECTOR);
    uint64_t bm_bytes = round_up((n + 7ull) / 8, SECTOR);
    uint64_t len = bat_bytes + (v->has_batmap ? SECTOR + bm_bytes : 0);
    uint64_t start = round_up(end_of_headers(v), SECTOR), end = start + len;
    int r;
    if (v->next_alloc < end) {
        r = write_footer_at(v, end);
        if (r < 0)
            return r;
        v->next_alloc = end;
        v->file_size = end + FOOTER_SIZE;
    }
    uint64_t blen = (uint64_t)v->bitmap_size + v->hd.block_size;
    for (uint32_t i = 0; i < v->hd.max_entries; i++) {
        uint64_t off = (uint64_t)v->bat[i] * SECTOR;
        if (v->bat[i] != BAT_UNUSED && off < end && off + blen > start) {
            r = relocate_block(v, i);
            if (r < 0)
                return r;
        }
    }
    AUTOFREE uint8_t *meta = xcalloc(1, len);
    memset(meta, 0xff, bat_bytes);
    for (uint32_t i = 0; i < v->hd.max_entries; i++)
        put32(meta + 4 * i, v->bat[i]);
    if (v->has_batmap) {
        uint8_t *bmh = meta + bat_bytes;
        r = pread_full(v->fd, bmh, SECTOR, v->batmap_off);
        if (r < 0)
            return r;
        /* keeps the marker and key hash fields */
        put64(bmh + 8, start + bat_bytes + SECTOR);
        put32(bmh + 16, (uint32_t)(bm_bytes / SECTOR));
        put32(bmh + 20, BATMAP_VERSION);
        put32(bmh + 24, checksum(bmh + SECTOR, bm_bytes, bm_bytes));
    }
    r = pwrite_full(v->fd, meta, len, start);
    if (r == 0)
        r = sync_fd(v->fd);
    if (r < 0)
        return r;
    struct header h = v->hd;
    h.table_offset = start;
    h.max_entries = n;
    uint8_t hb[HEADER_SIZE];
    header_encode(&h, hb);
    r = pwrite_full(v->fd, hb, HEADER_SIZE, v->ft.data_offset);
    if (r == 0)
        r = sync_fd(v->fd);
    if (r < 0)
        return r;
    uint32_t *bat = xrealloc(v->bat, 4ull * n);
    for (uint32_t i = v->hd.max_entries; i < n; i++)
        bat[i] = BAT_UNUSED;
    v->bat = bat;
    v->hd = h;
    v->batmap_off = start + bat_bytes;
    v->batmap_secs = (uint32_t)(bm_bytes / SECTOR);
    return 0;
}

static int resize_handle(vhd *v, uint64_t new_size)
{
    if (new_size % SECTOR || new_size > VHD_MAX_VIRTUAL_SIZE)
        return -EINVAL;
    if (new_size < v->ft.cur_size)
        return -ENOTSUP;
    if (new_size == v->ft.cur_size)
        return 0;
    int r;
    if (v->ft.type == VHD_TYPE_FIXED) {
        uint64_t old = v->next_alloc;
        v->ft.cur_size = new_size;
        chs_geometry(new_size, &v->ft.cyl, &v->ft.heads, &v->ft.spt);
        v->sectors = new_size / SECTOR;
        if (new_size <= old) /* the file already has room: only the footer changes */
            return write_footers(v);
        /* footer at the new end first, then zero the old one, now inside the data */
        r = write_footer_at(v, new_size);
        if (r < 0)
            return r;
        v->next_alloc = new_size;
        v->file_size = new_size + FOOTER_SIZE;
        static const uint8_t zero[FOOTER_SIZE];
        r = pwrite_full(v->fd, zero, FOOTER_SIZE, old);
        if (r < 0)
            return r;
        return sync_fd(v->fd);
    }
    r = commit_pending(v);
    if (r < 0)
        return r;
    uint64_t need = (new_size + v->hd.block_size - 1) / v->hd.block_size;
    if (need > v->hd.max_entries) {
        r = grow_bat(v, (uint32_t)need);
        if (r < 0)
            return r;
    }
    v->ft.cur_size = new_size;
    chs_geometry(new_size, &v->ft.cyl, &v->ft.heads, &v->ft.spt);
    v->sectors = new_size / SECTOR;
    return write_footers(v);
}

int vhd_resize(const char *path, uint64_t new_size)
{
    AUTO(vhd) *v = NULL;
    int r = vhd_open(path, VHD_OPEN_RDWR | VHD_OPEN_NO_PARENT, &v);
    if (r < 0)
        return r;
    return resize_handle(v, new_size);
}

int vhd_grow(vhd *v, uint64_t new_size)
{
    if (!(v->flags & VHD_OPEN_RDWR))
        return -EROFS;
    return resize_handle(v, new_size);
}

/* ---------------------------------------------------------------------------------------- */
/* Coalesce                                                                                  */

int vhd_coalesce(const char *child_path, uint64_t *ret_sectors)
{
    AUTOFREE char *why = NULL;
    AUTO(vhd) *c = NULL;
    int r = vhd_load(child_path, VHD_OPEN_RDONLY | VHD_OPEN_NO_PARENT, 1, &c, &why);
    if (r < 0)
        return r;
    if (c->ft.type != VHD_TYPE_DIFF)
        return -EINVAL;
    /* the parent alone, writable: the grandparents are not touched */
    r = open_parent(c, VHD_OPEN_RDWR | VHD_OPEN_NO_PARENT, &why);
    if (r < 0) {
        log_debug("vhd: coalesce %s: %s", child_path, why ? why : strerror(-r));
        return r;
    }
    vhd *p = c->parent;
    if (p->ft.cur_size < c->ft.cur_size) {
        r = resize_handle(p, c->ft.cur_size);
        if (r < 0)
            return r;
    }
    AUTOFREE uint8_t *buf = xmalloc(c->hd.block_size);
    uint64_t copied = 0;
    for (uint32_t blk = 0; blk < c->hd.max_entries; blk++) {
        if (c->bat[blk] == BAT_UNUSED)
            continue;
        uint64_t first = (uint64_t)blk * c->spb;
        if (first >= c->sectors)
            break;
        uint32_t spb = (uint32_t)(c->sectors - first < c->spb ? c->sectors - first : c->spb);
        const uint8_t *bm;
        r = get_bitmap(c, blk, &bm);
        if (r < 0)
            return r;
        uint32_t i = 0;
        while (i < spb) {
            if (!bit_test(bm, i)) {
                i++;
                continue;
            }
            uint32_t j = i + 1;
            while (j < spb && bit_test(bm, j))
                j++;
            r = pread_full(c->fd, buf, (size_t)(j - i) * SECTOR,
                           block_data_off(c, blk) + (uint64_t)i * SECTOR);
            if (r < 0)
                return r;
            r = vhd_write(p, buf, (first + i) * SECTOR, (size_t)(j - i) * SECTOR);
            if (r < 0)
                return r;
            copied += j - i;
            i = j;
        }
    }
    r = vhd_flush(p);
    if (r < 0)
        return r;
    if (ret_sectors)
        *ret_sectors = copied;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Map, export, import                                                                       */

/* True if some file of the chain holds data for part of [off, off+len). */
static bool range_allocated(const vhd *v, uint64_t off, uint64_t len)
{
    for (const vhd *n = v; n; n = n->parent) {
        if (off >= n->ft.cur_size)
            return false;
        if (n->ft.type == VHD_TYPE_FIXED)
            return true;
        uint64_t end = off + len < n->ft.cur_size ? off + len : n->ft.cur_size;
        for (uint64_t b = off / n->hd.block_size; b * n->hd.block_size < end; b++)
            if (b < n->hd.max_entries && n->bat[b] != BAT_UNUSED)
                return true;
        if (n->ft.type != VHD_TYPE_DIFF)
            return false;
    }
    return false;
}

int vhd_map(vhd *v, struct vhd_extent **ret, size_t *ret_n)
{
    /* granularity: our block size, or the leaf's if smaller (blocks of foreign images) */
    uint64_t gran = VHD_BLOCK_SIZE;
    for (const vhd *n = v; n; n = n->parent)
        if (is_dynamic(n) && n->hd.block_size < gran)
            gran = n->hd.block_size;
    struct vhd_extent *ext = NULL;
    size_t n = 0, cap = 0;
    uint64_t size = v->ft.cur_size;
    for (uint64_t off = 0; off < size; off += gran) {
        int depth = -1;
        int64_t foff = -1;
        int dd = 0;
        for (const vhd *node = v; node; node = node->parent, dd++) {
            if (off >= node->ft.cur_size)
                break;
            if (node->ft.type == VHD_TYPE_FIXED) {
                depth = dd;
                foff = (int64_t)off;
                break;
            }
            uint64_t nb = off / node->hd.block_size;
            if (nb < node->hd.max_entries && node->bat[nb] != BAT_UNUSED) {
                depth = dd;
                foff = (int64_t)(block_data_off(node, (uint32_t)nb) + off % node->hd.block_size);
                break;
            }
            if (node->ft.type != VHD_TYPE_DIFF)
                break;
        }
        uint64_t len = size - off < gran ? size - off : gran;
        if (n && ext[n - 1].depth == depth &&
            (depth < 0 || (int64_t)(ext[n - 1].file_offset + (int64_t)ext[n - 1].length) == foff)) {
            ext[n - 1].length += len;
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            ext = xrealloc(ext, cap * sizeof(*ext));
        }
        ext[n++] = (struct vhd_extent){off, len, depth, foff};
    }
    *ret = ext;
    *ret_n = n;
    return 0;
}

int vhd_export_raw(vhd *v, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    off_t base = S_ISREG(st.st_mode) ? lseek(fd, 0, SEEK_CUR) : -1;
    bool sparse = base >= 0;
    AUTOFREE struct vhd_extent *ext = NULL;
    size_t n = 0;
    int r = vhd_map(v, &ext, &n);
    if (r < 0)
        return r;
    AUTOFREE uint8_t *buf = xmalloc(VHD_BLOCK_SIZE);
    for (size_t i = 0; i < n; i++) {
        for (uint64_t off = ext[i].start; off < ext[i].start + ext[i].length;) {
            size_t len = (size_t)(ext[i].start + ext[i].length - off < VHD_BLOCK_SIZE
                                      ? ext[i].start + ext[i].length - off
                                      : VHD_BLOCK_SIZE);
            if (ext[i].depth < 0) {
                memset(buf, 0, len);
            } else {
                r = vhd_read(v, buf, off, len);
                if (r < 0)
                    return r;
            }
            if (sparse) {
                /* write runs of non-zero 4 KiB pages, leave holes for the rest */
                for (size_t i0 = 0; i0 < len;) {
                    size_t pg = len - i0 < 4096 ? len - i0 : 4096;
                    if (all_zero(buf + i0, pg)) {
                        i0 += pg;
                        continue;
                    }
                    size_t i1 = i0 + pg;
                    while (i1 < len) {
                        size_t pg1 = len - i1 < 4096 ? len - i1 : 4096;
                        if (all_zero(buf + i1, pg1))
                            break;
                        i1 += pg1;
                    }
                    r = pwrite_full(fd, buf + i0, i1 - i0, (uint64_t)base + off + i0);
                    if (r < 0)
                        return r;
                    i0 = i1;
                }
            } else {
                r = write_full(fd, buf, len);
                if (r < 0)
                    return r;
            }
            off += len;
        }
    }
    if (sparse) {
        if (ftruncate(fd, base + (off_t)v->ft.cur_size) < 0)
            return -errno;
        if (lseek(fd, base + (off_t)v->ft.cur_size, SEEK_SET) < 0)
            return -errno;
    }
    return 0;
}

/* Reads up to n bytes, fewer only at EOF. */
static ssize_t read_upto(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int vhd_import_raw(vhd *v, int fd)
{
    if (!(v->flags & VHD_OPEN_RDWR))
        return -EROFS;
    AUTOFREE uint8_t *buf = xmalloc(VHD_BLOCK_SIZE);
    uint64_t off = 0;
    for (;;) {
        ssize_t got = read_upto(fd, buf, VHD_BLOCK_SIZE);
        if (got < 0)
            return (int)got;
        if (got == 0)
            return 0;
        size_t len = (size_t)round_up((uint64_t)got, SECTOR);
        memset(buf + got, 0, len - (size_t)got);
        if (off >= v->ft.cur_size)
            return -EFBIG;
        bool too_long = len > v->ft.cur_size - off;
        if (too_long)
            len = (size_t)(v->ft.cur_size - off);
        bool skip = false;
        if (all_zero(buf, len)) {
            /* zeros need no write where nothing in the chain holds the block */
            skip = !range_allocated(v, off, len);
        }
        if (!skip) {
            int r = vhd_write(v, buf, off, len);
            if (r < 0)
                return r;
        }
        off += len;
        if (too_long)
            return -EFBIG;
        if ((size_t)got < VHD_BLOCK_SIZE)
            return 0;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Check                                                                                     */

struct region {
    uint64_t off, len;
    const char *what;
    uint32_t idx;
};

static int cmp_region(const void *a, const void *b)
{
    const struct region *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Field rules vhd-util check applies to a footer. */
static int check_footer_fields(const struct footer *f, const uint8_t *raw, const char *which,
                               char **why)
{
    if (!(f->features & FEATURE_RESERVED) ||
        (f->features & ~(FEATURE_RESERVED | FEATURE_TEMPORARY)))
        return fail(why, -EBADMSG, "%s footer: invalid features 0x%x", which, f->features);
    if (f->version != FILE_FORMAT_VERSION)
        return fail(why, -EBADMSG, "%s footer: invalid file format version 0x%08x", which,
                    f->version);
    if (f->type != VHD_TYPE_FIXED && f->type != VHD_TYPE_DYNAMIC && f->type != VHD_TYPE_DIFF)
        return fail(why, -EBADMSG, "%s footer: invalid disk type %u", which, f->type);
    if (f->type == VHD_TYPE_FIXED ? f->data_offset != ~0ull : f->data_offset < FOOTER_SIZE)
        return fail(why, -EBADMSG, "%s footer: invalid data offset", which);
    if (f->timestamp > vhd_now() + TIMESTAMP_SLACK)
        return fail(why, -EBADMSG, "%s footer: time stamp in the future", which);
    if (f->saved > 1 || f->hidden > 1)
        return fail(why, -EBADMSG, "%s footer: invalid saved-state or hidden byte", which);
    if (!all_zero(raw + 86, FOOTER_SIZE - 86))
        return fail(why, -EBADMSG, "%s footer: reserved bytes not zero", which);
    if (all_zero(f->uuid, 16))
        return fail(why, -EBADMSG, "%s footer: null unique id", which);
    if (memcmp(f->creator_app, "tap", 4) == 0) {
        /* blktap's own rules for its files; qemu's force_size images round geometry up */
        uint16_t c;
        uint8_t h, s;
        uint32_t max = chs_geometry(f->cur_size, &c, &h, &s);
        uint32_t geom = (uint32_t)f->cyl << 16 | (uint32_t)f->heads << 8 | f->spt;
        if (geom > max)
            return fail(why, -EBADMSG, "%s footer: geometry too large", which);
        if (f->creator_version > TAP_VERSION)
            return fail(why, -EBADMSG, "%s footer: unsupported tap version 0x%08x", which,
                        f->creator_version);
    }
    return 0;
}

static int check_one(const char *path, unsigned flags, unsigned depth, char **why)
{
    AUTO(vhd) *v = NULL;
    int r = vhd_load(path, VHD_OPEN_RDONLY | VHD_OPEN_NO_PARENT, depth, &v, why);
    if (r < 0)
        return r == -EBADMSG || r == -ELOOP || r == -ENOTSUP ? -EBADMSG : r;
    uint8_t tb[FOOTER_SIZE], bb[FOOTER_SIZE];
    struct footer tf, bf;
    uint64_t foff = v->file_size - FOOTER_SIZE;
    if ((r = pread_full(v->fd, tb, FOOTER_SIZE, foff)) < 0)
        return r;
    if (v->file_size % SECTOR)
        return fail(why, -EBADMSG, "file size %llu not a multiple of 512",
                    (unsigned long long)v->file_size);
    if (footer_decode(tb, &tf) < 0)
        return fail(why, -EBADMSG, "primary footer invalid: bad cookie or checksum");
    if ((r = check_footer_fields(&tf, tb, "primary", why)) < 0)
        return r;
    if (v->ft.type == VHD_TYPE_FIXED)
        return 0;
    if ((r = pread_full(v->fd, bb, FOOTER_SIZE, 0)) < 0)
        return r;
    if (footer_decode(bb, &bf) < 0)
        return fail(why, -EBADMSG, "backup footer invalid: bad cookie or checksum");
    if (memcmp(tb, bb, FOOTER_SIZE) != 0)
        return fail(why, -EBADMSG, "primary and backup footers differ");

    const struct header *h = &v->hd;
    if (h->data_offset != ~0ull)
        return fail(why, -EBADMSG, "header: invalid data offset");
    if (h->table_offset % SECTOR)
        return fail(why, -EBADMSG, "header: BAT offset not sector aligned");
    if (h->reserved1 || !all_zero(h->reserved2, sizeof(h->reserved2)))
        return fail(why, -EBADMSG, "header: reserved bytes not zero");
    if (v->ft.type == VHD_TYPE_DYNAMIC) {
        bool clean =
            all_zero(h->parent_uuid, 16) && all_zero(h->parent_name, 512) && h->parent_ts == 0;
        for (int i = 0; i < NUM_LOCATORS; i++)
            clean = clean && h->loc[i].code == 0;
        if (!clean)
            return fail(why, -EBADMSG, "header: dynamic disk with parent fields set");
    }
    AUTOFREE char *pname = NULL;
    if (v->ft.type == VHD_TYPE_DIFF) {
        if (all_zero(h->parent_uuid, 16))
            return fail(why, -EBADMSG, "header: differencing disk without parent id");
        if (h->parent_ts > vhd_now() + TIMESTAMP_SLACK)
            return fail(why, -EBADMSG, "header: parent time stamp in the future");
        pname = utf16_to_utf8(h->parent_name, sizeof(h->parent_name), true);
        if (!pname)
            return fail(why, -EBADMSG, "header: invalid parent name");
    }

    /* every region of the file that something points at, then no two may overlap */
    size_t cap = 8 + NUM_LOCATORS + h->max_entries, n = 0;
    AUTOFREE struct region *reg = xmalloc(cap * sizeof(*reg));
    reg[n++] = (struct region){0, FOOTER_SIZE, "backup footer", 0};
    reg[n++] = (struct region){v->ft.data_offset, HEADER_SIZE, "header", 0};
    reg[n++] = (struct region){h->table_offset, 4ull * h->max_entries, "BAT", 0};
    reg[n++] = (struct region){v->next_alloc, FOOTER_SIZE, "primary footer", 0};
    uint64_t data_limit = v->next_alloc;
    bool tap = memcmp(v->ft.creator_app, "tap", 4) == 0;
    if (v->has_batmap) {
        uint8_t bh[SECTOR];
        if ((r = pread_full(v->fd, bh, SECTOR, v->batmap_off)) < 0)
            return r;
        uint64_t bits_off = get64(bh + 8);
        uint32_t secs = get32(bh + 16), ver = get32(bh + 20), sum = get32(bh + 24);
        if (ver != BATMAP_VERSION && ver != BATMAP_VERSION_OLD)
            return fail(why, -EBADMSG, "batmap: invalid version 0x%08x", ver);
        if (bits_off != v->batmap_off + SECTOR)
            return fail(why, -EBADMSG, "batmap: invalid offset");
        uint64_t bytes = (uint64_t)secs * SECTOR;
        if (bytes < (h->max_entries + 7ull) / 8 || secs == 0 || !in_file(v, bits_off, bytes) ||
            bits_off + bytes > data_limit)
            return fail(why, -EBADMSG, "batmap: invalid size");
        AUTOFREE uint8_t *bits = xmalloc(bytes);
        if ((r = pread_full(v->fd, bits, bytes, bits_off)) < 0)
            return r;
        uint32_t want = checksum(bits, bytes, bytes);
        if (ver == BATMAP_VERSION_OLD) { /* 1.1 summed signed chars */
            uint32_t sum_signed = 0;
            for (uint64_t i = 0; i < bytes; i++)
                sum_signed += (uint32_t)(int32_t)(int8_t)bits[i];
            want = ~sum_signed;
        }
        if (want != sum)
            return fail(why, -EBADMSG, "batmap: invalid checksum");
        reg[n++] = (struct region){v->batmap_off, SECTOR + bytes, "batmap", 0};
        AUTOFREE uint8_t *bm = xmalloc(v->bitmap_size);
        for (uint32_t i = 0; i < h->max_entries; i++) {
            if (!bit_test(bits, i))
                continue;
            if (v->bat[i] == BAT_UNUSED)
                return fail(why, -EBADMSG, "batmap: bit %u set for an unallocated block", i);
            if ((r = pread_full(v->fd, bm, v->bitmap_size, (uint64_t)v->bat[i] * SECTOR)) < 0)
                return r;
            for (uint32_t k = 0; k < v->spb; k++)
                if (!bit_test(bm, k))
                    return fail(why, -EBADMSG, "batmap: bit %u set but block bitmap not full", i);
        }
    } else if (tap && v->ft.creator_version >= TAP_BATMAP_MIN_VERSION) {
        return fail(why, -EBADMSG, "batmap missing");
    }
    uint32_t seen[NUM_LOCATORS];
    for (int i = 0; i < NUM_LOCATORS; i++) {
        const struct locator *l = &h->loc[i];
        seen[i] = l->code;
        if (l->code == PLAT_NONE) {
            if (l->space || l->len || l->offset || l->reserved)
                return fail(why, -EBADMSG, "locator %d: unused entry not zero", i);
            continue;
        }
        if (v->ft.type != VHD_TYPE_DIFF)
            return fail(why, -EBADMSG, "locator %d on a disk without parent", i);
        uint64_t space = locator_space_bytes(l);
        if (l->code != PLAT_MACX && l->code != PLAT_W2KU && l->code != PLAT_W2RU &&
            l->code != 0x57693272u /* Wi2r */ && l->code != 0x5769326Bu /* Wi2k */ &&
            l->code != 0x4D616320u /* "Mac " */)
            return fail(why, -EBADMSG, "locator %d: invalid platform code 0x%08x", i, l->code);
        for (int j = 0; j < i; j++)
            if (seen[j] == l->code)
                return fail(why, -EBADMSG, "locator %d: duplicate platform code", i);
        if (l->reserved)
            return fail(why, -EBADMSG, "locator %d: reserved bits set", i);
        if (l->offset == 0 || space == 0 || l->len == 0 || l->len > space ||
            !in_file(v, l->offset, space) || l->offset + space > data_limit)
            return fail(why, -EBADMSG, "locator %d: invalid offset or size", i);
        reg[n++] = (struct region){l->offset, space, "parent locator", (uint32_t)i};
        if (l->code != PLAT_MACX && l->code != PLAT_W2KU && l->code != PLAT_W2RU)
            continue;
        /* what vhd-util check demands: the locator names the file the header names */
        if (l->len > MAX_LOCATOR_BYTES)
            return fail(why, -EBADMSG, "locator %d: path too long", i);
        uint8_t buf[MAX_LOCATOR_BYTES];
        if ((r = pread_full(v->fd, buf, l->len, l->offset)) < 0)
            return r;
        AUTOFREE char *lp = l->code == PLAT_MACX ? xstrndup((const char *)buf, l->len)
                                                 : utf16_to_utf8(buf, l->len, false);
        if (lp)
            for (char *c = lp; *c; c++)
                if (*c == '\\')
                    *c = '/';
        if (!lp || strcmp(base_of(lp), pname) != 0)
            return fail(why, -EBADMSG, "locator %d: path does not name the parent %s", i, pname);
    }
    uint64_t eoh = end_of_headers(v);
    for (uint32_t i = 0; i < h->max_entries; i++) {
        if (v->bat[i] == BAT_UNUSED)
            continue;
        uint64_t off = (uint64_t)v->bat[i] * SECTOR;
        uint64_t len = (uint64_t)v->bitmap_size + h->block_size;
        if (off + len > data_limit)
            return fail(why, -EBADMSG, "block %u runs into the primary footer", i);
        if (off < eoh)
            return fail(why, -EBADMSG, "block %u lies inside the metadata", i);
        if ((uint64_t)i * h->block_size >= v->ft.cur_size)
            return fail(why, -EBADMSG, "block %u allocated beyond the virtual size", i);
        reg[n++] = (struct region){off, len, "block", i};
    }
    qsort(reg, n, sizeof(*reg), cmp_region);
    for (size_t i = 1; i < n; i++)
        if (reg[i - 1].off + reg[i - 1].len > reg[i].off)
            return fail(why, -EBADMSG, "%s %u overlaps %s %u", reg[i - 1].what, reg[i - 1].idx,
                        reg[i].what, reg[i].idx);

    if (v->ft.type == VHD_TYPE_DIFF && !(flags & VHD_CHECK_NO_PARENT)) {
        r = open_parent(v, VHD_OPEN_RDONLY | VHD_OPEN_NO_PARENT, why);
        if (r < 0)
            return -EBADMSG;
        AUTOFREE char *pwhy = NULL;
        r = check_one(v->parent->path, flags, depth + 1, &pwhy);
        if (r < 0)
            return fail(why, r, "parent %s: %s", v->parent->path, pwhy ? pwhy : strerror(-r));
    }
    return 0;
}

int vhd_check(const char *path, unsigned flags, char **ret_problem)
{
    AUTOFREE char *why = NULL;
    int r = check_one(path, flags, 1, &why);
    if (r == -EBADMSG && ret_problem)
        *ret_problem = TAKE_PTR(why);
    return r;
}
