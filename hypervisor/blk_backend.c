/* virtio-blk image backends: raw files and VHD chains (see blk_backend.h). */
#define _GNU_SOURCE
#include "blk_backend.h"
#include "cleanup.h"
#include "mem.h"
#include "vhd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZERO_CHUNK (1u << 20)
static uint8_t zeros[ZERO_CHUNK]; /* never written: reads of it map the zero page */

/* ---- raw ---- */

typedef struct raw_backend {
    blk_backend b;
    int fd;
    bool regular; /* a regular file (can grow, punch holes) rather than a block device */
} raw_backend;

/* Whole-buffer positional I/O; a short transfer (end of file: the image shrank) is -EIO. */
static int raw_io(int fd, bool write, uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = write ? pwrite(fd, p, len, (off_t)off) : pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int raw_read(blk_backend *b, void *buf, uint64_t off, size_t len)
{
    return raw_io(((raw_backend *)b)->fd, false, buf, len, off);
}

static int raw_write(blk_backend *b, const void *buf, uint64_t off, size_t len)
{
    return raw_io(((raw_backend *)b)->fd, true, (uint8_t *)buf, len, off);
}

static int raw_flush(blk_backend *b)
{
    if (b->readonly)
        return 0;
    return fdatasync(((raw_backend *)b)->fd) < 0 ? -errno : 0;
}

static int write_zero_bytes(blk_backend *b, uint64_t off, uint64_t len)
{
    while (len) {
        size_t n = len < ZERO_CHUNK ? (size_t)len : ZERO_CHUNK;
        int r = b->ops->write(b, zeros, off, n);
        if (r < 0)
            return r;
        off += n;
        len -= n;
    }
    return 0;
}

/* Discard is advisory: where the file system cannot punch holes, nothing happens. */
static int raw_discard(blk_backend *b, uint64_t off, uint64_t len)
{
    raw_backend *rb = (raw_backend *)b;
    if (fallocate(rb->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0) {
        if (errno == EOPNOTSUPP || errno == ENOSYS)
            return 0;
        return -errno;
    }
    return 0;
}

static int raw_write_zeroes(blk_backend *b, uint64_t off, uint64_t len, bool unmap)
{
    raw_backend *rb = (raw_backend *)b;
    int mode = unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                     : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    if (fallocate(rb->fd, mode, (off_t)off, (off_t)len) == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
        return -errno;
    return write_zero_bytes(b, off, len);
}

static int raw_grow(blk_backend *b, uint64_t new_size)
{
    raw_backend *rb = (raw_backend *)b;
    if (!rb->regular)
        return -ENOTSUP; /* a block device's size is not ours to change */
    struct stat st;
    if (fstat(rb->fd, &st) < 0)
        return -errno;
    /* Never shorten: the file may have grown behind our back. */
    if ((uint64_t)st.st_size < new_size && ftruncate(rb->fd, (off_t)new_size) < 0)
        return -errno;
    b->size = new_size;
    return 0;
}

static void raw_close(blk_backend *b)
{
    raw_backend *rb = (raw_backend *)b;
    if (rb->fd >= 0)
        close(rb->fd);
    free(rb);
}

static const blk_backend_ops raw_ops = {
    .format = "raw",
    .read = raw_read,
    .write = raw_write,
    .flush = raw_flush,
    .discard = raw_discard,
    .write_zeroes = raw_write_zeroes,
    .grow = raw_grow,
    .close = raw_close,
};

blk_backend *blk_backend_raw_fd(int fd, uint64_t size, bool readonly)
{
    raw_backend *rb = xcalloc(1, sizeof(*rb));
    struct stat st;
    rb->b = (blk_backend){.ops = &raw_ops, .size = size, .readonly = readonly};
    rb->fd = fd;
    rb->regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    return &rb->b;
}

/* ---- VHD ---- */

#define MAX_LOCKS VHD_MAX_CHAIN_DEPTH

typedef struct vhd_backend {
    blk_backend b;
    vhd *v;
    int locks[MAX_LOCKS]; /* flock holders: the leaf, then each ancestor */
    unsigned nlocks;
} vhd_backend;

static int vhd_b_read(blk_backend *b, void *buf, uint64_t off, size_t len)
{
    return vhd_read(((vhd_backend *)b)->v, buf, off, len);
}

static int vhd_b_write(blk_backend *b, const void *buf, uint64_t off, size_t len)
{
    return vhd_write(((vhd_backend *)b)->v, buf, off, len);
}

static int vhd_b_flush(blk_backend *b)
{
    if (b->readonly)
        return 0;
    return vhd_flush(((vhd_backend *)b)->v); /* BAT commit, then fdatasync */
}

/* Advisory: vhd_discard deallocates only where no ancestor holds the block (the rest keeps
 * its data, which discard allows). */
static int vhd_b_discard(blk_backend *b, uint64_t off, uint64_t len)
{
    return vhd_discard(((vhd_backend *)b)->v, off, len);
}

/* Zeros are written, through the leaf: a sector the leaf does not hold may read its parent's
 * data, so leaving it unallocated would not read zeros. */
static int vhd_b_write_zeroes(blk_backend *b, uint64_t off, uint64_t len, bool unmap)
{
    (void)unmap;
    return write_zero_bytes(b, off, len);
}

static int vhd_b_grow(blk_backend *b, uint64_t new_size)
{
    int r = vhd_grow(((vhd_backend *)b)->v, new_size);
    if (r == 0)
        b->size = new_size;
    return r;
}

static void vhd_b_close(blk_backend *b)
{
    vhd_backend *vb = (vhd_backend *)b;
    vhd_close(vb->v);
    for (unsigned i = 0; i < vb->nlocks; i++)
        close(vb->locks[i]);
    free(vb);
}

static const blk_backend_ops vhd_ops = {
    .format = "vhd",
    .read = vhd_b_read,
    .write = vhd_b_write,
    .flush = vhd_b_flush,
    .discard = vhd_b_discard,
    .write_zeroes = vhd_b_write_zeroes,
    .grow = vhd_b_grow,
    .close = vhd_b_close,
};

/* Opens path read-only and flocks it; returns the descriptor or a negative errno. */
static int lock_file(const char *path, bool exclusive)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        return e == EWOULDBLOCK ? -EBUSY : -e;
    }
    return fd;
}

static int open_vhd(const char *path, bool readonly, blk_backend **ret, char **why)
{
    vhd_backend *vb = xcalloc(1, sizeof(*vb));
    int r = lock_file(path, !readonly);
    if (r < 0) {
        *why = xstrdup(r == -EBUSY ? "in use by another process" : strerror(-r));
        free(vb);
        return r;
    }
    vb->locks[vb->nlocks++] = r;
    /* Check first (with the lock held): nothing is opened for writing unless it is sound. */
    AUTOFREE char *problem = NULL;
    r = vhd_check(path, 0, &problem);
    if (r == 0)
        r = vhd_open(path, readonly ? VHD_OPEN_RDONLY : VHD_OPEN_RDWR, &vb->v);
    if (r < 0) {
        *why = xasprintf("not a usable VHD: %s", problem ? problem : strerror(-r));
        vhd_b_close(&vb->b);
        return r;
    }
    for (vhd *p = vhd_parent(vb->v); p && vb->nlocks < MAX_LOCKS; p = vhd_parent(p)) {
        r = lock_file(vhd_path(p), false);
        if (r < 0) {
            *why = xasprintf("parent %s: %s", vhd_path(p),
                             r == -EBUSY ? "in use by a writer" : strerror(-r));
            vhd_b_close(&vb->b);
            return r;
        }
        vb->locks[vb->nlocks++] = r;
    }
    struct vhd_info info;
    vhd_get_info(vb->v, &info);
    vb->b = (blk_backend){.ops = &vhd_ops, .size = info.virtual_size, .readonly = readonly};
    *ret = &vb->b;
    return 0;
}

/* ---- opening ---- */

static bool has_vhd_cookie(int fd, uint64_t size)
{
    uint8_t buf[8];
    if (size < 512)
        return false;
    if (pread(fd, buf, 8, (off_t)(size - 512)) == 8 && memcmp(buf, "conectix", 8) == 0)
        return true;
    return pread(fd, buf, 8, 0) == 8 && memcmp(buf, "conectix", 8) == 0;
}

int blk_backend_open(const char *path, const char *format, bool readonly, blk_backend **ret,
                     char **why)
{
    int fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        *why = xstrdup(strerror(e));
        return -e;
    }
    struct stat st;
    char buf[96];
    const char *w = NULL;
    int err = -EINVAL;
    uint64_t size = 0;
    if (fstat(fd, &st) < 0) {
        err = -errno;
        w = strerror(errno);
    } else if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        w = "not a regular file or block device";
    } else if (S_ISREG(st.st_mode) && st.st_size == 0) {
        w = "empty image";
    } else {
        off_t end = lseek(fd, 0, SEEK_END);
        if (end <= 0) {
            w = "size unusable";
        } else {
            size = (uint64_t)end;
        }
    }
    bool is_vhd = !w && (strcmp(format, "vhd") == 0 ||
                         (strcmp(format, "auto") == 0 && has_vhd_cookie(fd, size)));
    if (!w && is_vhd) {
        close(fd);
        return open_vhd(path, readonly, ret, why);
    }
    if (!w && size % 512) {
        snprintf(buf, sizeof(buf), "size %llu is not a multiple of 512 (truncated?)",
                 (unsigned long long)size);
        w = buf;
    } else if (!w && flock(fd, (readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
        err = errno == EWOULDBLOCK ? -EBUSY : -errno;
        w = errno == EWOULDBLOCK ? "in use by another process" : strerror(errno);
    }
    if (w) {
        close(fd);
        *why = xstrdup(w);
        return err;
    }
    *ret = blk_backend_raw_fd(fd, size, readonly);
    return 0;
}

void blk_backend_close(blk_backend *b)
{
    if (b)
        b->ops->close(b);
}
