/* virtio-blk on a raw image or a VHD chain (see virtio_blk.h). Layouts from the virtio 1.1
 * specification, section 5.2. */
#define _GNU_SOURCE
#include "virtio_blk.h"
#include "blk_backend.h"
#include "log.h"
#include "mem.h"
#include "snapshot.h"

#include <stdatomic.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct virtio_blk {
    virtio_dev dev;
    unsigned index;
    bool readonly;
    /* The image: used by one request at a time, under io_lock (the I/O thread, or a resize
     * from the control thread). io_lock is never taken with dev.lock held by the I/O thread,
     * nor dev.lock with io_lock held by a resize. */
    blk_backend *be;
    pthread_mutex_t io_lock;
    _Atomic uint64_t capacity; /* 512-byte sectors; grows with a resize */
    char id[VIRTIO_BLK_ID_LEN + 1];
    virtio_blk_stats stats; /* under dev.lock */
    /* The I/O thread (once started): notifies kick it; requests run outside dev.lock. */
    int kick;
    pthread_t thread;
    bool started, stop; /* stop: under dev.lock */
    bool inflight;      /* a chain is being served outside the lock (under dev.lock) */
    pthread_cond_t idle;
};

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

/* struct virtio_blk_config up to write_zeroes_may_unmap (little-endian host). */
static void blk_config_read(virtio_dev *d, uint32_t off, uint8_t *data, unsigned len)
{
    virtio_blk *b = d->opaque;
    uint8_t cfg[60] = {0};
    uint64_t cap = atomic_load(&b->capacity);
    memcpy(cfg, &cap, 8);
    put32(cfg + 12, VIRTIO_BLK_SEG_MAX);
    put32(cfg + 20, 512); /* blk_size */
    if (d->features & (1ull << VIRTIO_BLK_F_DISCARD)) {
        put32(cfg + 36, VIRTIO_BLK_MAX_DZ_SECTORS); /* max_discard_sectors */
        put32(cfg + 40, VIRTIO_BLK_MAX_DZ_SEG);     /* max_discard_seg */
        put32(cfg + 44, 8);                         /* discard_sector_alignment: 4 KiB */
    }
    if (d->features & (1ull << VIRTIO_BLK_F_WRITE_ZEROES)) {
        put32(cfg + 48, VIRTIO_BLK_MAX_DZ_SECTORS); /* max_write_zeroes_sectors */
        put32(cfg + 52, VIRTIO_BLK_MAX_DZ_SEG);     /* max_write_zeroes_seg */
        cfg[56] = b->be->ops->discard != NULL;      /* write_zeroes_may_unmap */
    }
    if (off < sizeof(cfg))
        memcpy(data, cfg + off, len < sizeof(cfg) - off ? len : sizeof(cfg) - off);
}

static void io_warn(virtio_blk *b, const char *what, uint64_t sector, int r)
{
    log_warn("virtio-blk %u: %s at sector %llu: %s", b->index, what, (unsigned long long)sector,
             strerror(-r));
}

/* Discard and write-zeroes: ranges of 16 bytes (le64 sector, le32 num_sectors, le32 flags
 * with bit 0 = unmap) in the readable data buffers. */
static uint8_t blk_ranges(virtio_blk *b, virtq_chain *c, unsigned first, unsigned end,
                          uint64_t total, bool zeroes)
{
    uint8_t buf[16 * VIRTIO_BLK_MAX_DZ_SEG];
    if (!total || total % 16 || total > sizeof(buf) || b->readonly)
        return VIRTIO_BLK_S_IOERR;
    size_t n = 0;
    for (unsigned i = first; i < end; i++) {
        if (c->seg[i].len)
            memcpy(buf + n, c->seg[i].data, c->seg[i].len);
        n += c->seg[i].len;
    }
    uint64_t cap = atomic_load(&b->capacity);
    for (size_t k = 0; k < n; k += 16) {
        uint64_t sector;
        uint32_t count, flags;
        memcpy(&sector, buf + k, 8);
        memcpy(&count, buf + k + 8, 4);
        memcpy(&flags, buf + k + 12, 4);
        if ((flags & ~1u) || (!zeroes && (flags & 1)))
            return VIRTIO_BLK_S_UNSUPP; /* the spec: unmap is for write-zeroes only */
        if (sector > cap || count > cap - sector || count > VIRTIO_BLK_MAX_DZ_SECTORS)
            return VIRTIO_BLK_S_IOERR;
        if (!count)
            continue;
        int r =
            zeroes ? b->be->ops->write_zeroes(b->be, sector * 512, (uint64_t)count * 512, flags & 1)
                   : b->be->ops->discard(b->be, sector * 512, (uint64_t)count * 512);
        if (r < 0) {
            io_warn(b, zeroes ? "write-zeroes" : "discard", sector, r);
            return VIRTIO_BLK_S_IOERR;
        }
    }
    return VIRTIO_BLK_S_OK;
}

/* Serves one request; returns the bytes written into the guest's buffers. */
static uint32_t blk_request(virtio_blk *b, virtq_chain *c, virtio_blk_stats *st)
{
    virtq_seg *hdr = &c->seg[0], *last = &c->seg[c->nseg - 1];
    if (c->nseg < 2 || hdr->writable || hdr->len < 16 || !last->writable || !last->len) {
        st->errors++;
        return 0; /* no status byte to write to */
    }
    uint32_t type;
    uint64_t sector;
    memcpy(&type, hdr->data, 4);
    memcpy(&sector, hdr->data + 8, 8);
    uint8_t *status = last->data + last->len - 1;
    /* Data: the segments between header and status, and the status segment's first bytes. */
    unsigned first = 1, end = c->nseg;
    uint32_t saved_last_len = last->len;
    last->len--;
    uint64_t total = 0;
    bool dir_ok = true;
    /* Data the device reads (writes, ranges) or writes (reads, the id). */
    bool dev_reads = type == VIRTIO_BLK_T_OUT || type == VIRTIO_BLK_T_DISCARD ||
                     type == VIRTIO_BLK_T_WRITE_ZEROES;
    for (unsigned i = first; i < end; i++) {
        total += c->seg[i].len;
        if (c->seg[i].len)
            dir_ok = dir_ok && c->seg[i].writable == !dev_reads;
    }
    uint64_t capacity = atomic_load(&b->capacity);
    blk_backend *be = b->be;
    uint8_t s = VIRTIO_BLK_S_OK;
    uint32_t written = 0;
    switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool wr = type == VIRTIO_BLK_T_OUT;
        if (!dir_ok || total % 512 || sector > capacity || total / 512 > capacity - sector ||
            (wr && b->readonly)) {
            s = VIRTIO_BLK_S_IOERR;
            break;
        }
        uint64_t off = sector * 512;
        for (unsigned i = first; i < end && s == VIRTIO_BLK_S_OK; i++) {
            virtq_seg *g = &c->seg[i];
            /* A segment that is not a whole number of sectors (the total is) would need a
             * bounce buffer; no driver sends one. */
            int r = 0;
            if (g->len % 512)
                r = -EINVAL;
            else if (g->len)
                r = wr ? be->ops->write(be, g->data, off, g->len)
                       : be->ops->read(be, g->data, off, g->len);
            if (r < 0) {
                io_warn(b, wr ? "write" : "read", off / 512, r);
                s = VIRTIO_BLK_S_IOERR;
            }
            off += g->len;
        }
        if (s == VIRTIO_BLK_S_OK) {
            if (wr) {
                st->writes++;
                st->write_bytes += total;
            } else {
                st->reads++;
                st->read_bytes += total;
                written = (uint32_t)total;
            }
        }
        break;
    }
    case VIRTIO_BLK_T_FLUSH: {
        int r = be->ops->flush(be);
        if (r < 0) {
            io_warn(b, "flush", 0, r);
            s = VIRTIO_BLK_S_IOERR;
        } else {
            st->flushes++;
        }
        break;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES: {
        bool zeroes = type == VIRTIO_BLK_T_WRITE_ZEROES;
        if (!(b->dev.features &
              (1ull << (zeroes ? VIRTIO_BLK_F_WRITE_ZEROES : VIRTIO_BLK_F_DISCARD)))) {
            s = VIRTIO_BLK_S_UNSUPP;
            break;
        }
        s = dir_ok ? blk_ranges(b, c, first, end, total, zeroes) : VIRTIO_BLK_S_IOERR;
        if (s == VIRTIO_BLK_S_OK) {
            if (zeroes)
                st->write_zeroes++;
            else
                st->discards++;
        }
        break;
    }
    case VIRTIO_BLK_T_GET_ID: {
        size_t n = 0;
        for (unsigned i = first; i < end && n < VIRTIO_BLK_ID_LEN; i++) {
            virtq_seg *g = &c->seg[i];
            size_t k = g->len < VIRTIO_BLK_ID_LEN - n ? g->len : VIRTIO_BLK_ID_LEN - n;
            if (!g->writable)
                break;
            memcpy(g->data, b->id + n, k); /* NUL-padded to 20 bytes, as the spec allows */
            n += k;
        }
        written = (uint32_t)n;
        break;
    }
    default:
        s = VIRTIO_BLK_S_UNSUPP;
        break;
    }
    last->len = saved_last_len;
    if (s != VIRTIO_BLK_S_OK)
        st->errors++;
    *status = s;
    return written + 1;
}

static void stats_add(virtio_blk_stats *to, const virtio_blk_stats *d)
{
    to->reads += d->reads;
    to->writes += d->writes;
    to->flushes += d->flushes;
    to->read_bytes += d->read_bytes;
    to->write_bytes += d->write_bytes;
    to->errors += d->errors;
    to->discards += d->discards;
    to->write_zeroes += d->write_zeroes;
}

/* Serves what the queue holds. Called with dev.lock held; with `unlocked`, each request's
 * I/O runs with the lock released (the I/O thread), so vCPUs are not held up by the disk. A
 * reset or detach meanwhile (the generation moves) drops the result: the rings may be gone. */
static void blk_serve_locked(virtio_blk *b, bool unlocked)
{
    virtio_dev *d = &b->dev;
    virtq *q = &d->q[0];
    static __thread virtq_chain chain; /* 4 KiB: kept off the thread's stack frames */
    bool pushed = false;
    for (;;) {
        int r = virtq_pop(q, d->mem, &chain);
        if (r < 0) {
            log_warn("virtio-blk %u: malformed queue; device needs reset", b->index);
            d->status |= VIRTIO_STATUS_NEEDS_RESET;
            virtio_raise_locked(d, VIRTIO_INT_CONFIG);
            break;
        }
        if (r == 0)
            break;
        virtio_blk_stats delta = {0};
        uint32_t written;
        if (unlocked) {
            uint64_t gen = d->generation;
            b->inflight = true;
            pthread_mutex_unlock(&d->lock);
            pthread_mutex_lock(&b->io_lock);
            written = blk_request(b, &chain, &delta);
            pthread_mutex_unlock(&b->io_lock);
            pthread_mutex_lock(&d->lock);
            b->inflight = false;
            pthread_cond_broadcast(&b->idle);
            if (gen != d->generation)
                break; /* reset or detached while the request ran */
        } else {
            pthread_mutex_lock(&b->io_lock);
            written = blk_request(b, &chain, &delta);
            pthread_mutex_unlock(&b->io_lock);
        }
        stats_add(&b->stats, &delta);
        virtq_push(q, d->mem, chain.head, written);
        pushed = true;
    }
    if (pushed)
        virtio_raise_locked(d, VIRTIO_INT_USED);
}

static void kick(virtio_blk *b)
{
    uint64_t one = 1;
    ssize_t r = write(b->kick, &one, sizeof(one));
    (void)r; /* EAGAIN: already kicked */
}

static void blk_notify(virtio_dev *d, unsigned qi)
{
    virtio_blk *b = d->opaque;
    if (b->started)
        kick(b); /* the I/O thread serves the queue */
    else
        blk_serve_locked(b, false);
}

/* Before a reset or detach completes, no request may still be using guest memory. */
static void blk_reset(virtio_dev *d)
{
    virtio_blk *b = d->opaque;
    while (b->inflight)
        pthread_cond_wait(&b->idle, &d->lock);
}

static void *io_thread(void *arg)
{
    virtio_blk *b = arg;
    for (;;) {
        struct pollfd pfd = {.fd = b->kick, .events = POLLIN};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            break;
        uint64_t cnt;
        ssize_t r = read(b->kick, &cnt, sizeof(cnt));
        (void)r;
        pthread_mutex_lock(&b->dev.lock);
        bool stop = b->stop;
        if (!stop && (b->dev.status & VIRTIO_STATUS_DRIVER_OK) &&
            !(b->dev.status & VIRTIO_STATUS_NEEDS_RESET))
            blk_serve_locked(b, true);
        pthread_mutex_unlock(&b->dev.lock);
        if (stop)
            break;
    }
    return NULL;
}

xerr *virtio_blk_start(virtio_blk *b)
{
    if (b->kick < 0)
        return xerr_internal("eventfd: %s", strerror(errno));
    int r = pthread_create(&b->thread, NULL, io_thread, b);
    if (r)
        return xerr_internal("pthread_create: %s", strerror(r));
    char name[16];
    snprintf(name, sizeof(name), "blk%u-io", b->index);
    pthread_setname_np(b->thread, name);
    pthread_mutex_lock(&b->dev.lock);
    b->started = true;
    pthread_mutex_unlock(&b->dev.lock);
    return NULL;
}

/* Snapshot: no request may be half done. The vCPUs are paused: wait for the I/O thread's
 * request, then serve what is still queued here, so that the disk and guest RAM no longer
 * change once the caller writes the snapshot. The image is flushed (a VHD's new blocks get
 * their BAT entries) so that the files match the saved RAM, and the capacity is kept: an
 * online resize lives in the image, the guest's idea of it in the snapshot. */
static void blk_save(virtio_dev *d, struct sbuf *out)
{
    virtio_blk *b = d->opaque;
    while (b->inflight)
        pthread_cond_wait(&b->idle, &d->lock);
    if ((d->status & VIRTIO_STATUS_DRIVER_OK) && !(d->status & VIRTIO_STATUS_NEEDS_RESET))
        blk_serve_locked(b, false);
    pthread_mutex_lock(&b->io_lock);
    int r = b->be->ops->flush(b->be);
    pthread_mutex_unlock(&b->io_lock);
    if (r < 0)
        log_warn("virtio-blk %u: flush for the snapshot: %s", b->index, strerror(-r));
    snap_put_u64(out, atomic_load(&b->capacity));
}

/* The image must be at least as large as the saved capacity (the same image, or one grown
 * since: then the guest is told of the change). */
static int blk_load(virtio_dev *d, const uint8_t *data, size_t len)
{
    virtio_blk *b = d->opaque;
    snap_reader r = {.p = data, .len = len};
    uint64_t saved = snap_get_u64(&r);
    if (r.bad || r.off != len)
        return -EINVAL;
    uint64_t cap = atomic_load(&b->capacity);
    if (saved > cap) {
        log_warn("virtio-blk %u: snapshot has %llu sectors, the image only %llu", b->index,
                 (unsigned long long)saved, (unsigned long long)cap);
        return -EINVAL;
    }
    if (saved < cap) {
        d->config_generation++;
        if (d->status & VIRTIO_STATUS_DRIVER_OK)
            d->isr |= VIRTIO_INT_CONFIG; /* the caller raises the line */
    }
    return 0;
}

static const virtio_dev_ops blk_ops = {
    .notify = blk_notify,
    .config_read = blk_config_read,
    .reset = blk_reset,
    .save = blk_save,
    .load = blk_load,
};

static virtio_blk *blk_new(unsigned index, blk_backend *be)
{
    virtio_blk *b = xcalloc(1, sizeof(*b));
    b->index = index;
    b->be = be;
    b->readonly = be->readonly;
    atomic_init(&b->capacity, be->size / 512);
    pthread_mutex_init(&b->io_lock, NULL);
    snprintf(b->id, sizeof(b->id), "nuvem-vd%u", index);
    b->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_cond_init(&b->idle, NULL);
    b->dev.device_id = VIRTIO_ID_BLOCK;
    b->dev.features =
        1ull << VIRTIO_BLK_F_SEG_MAX | 1ull << VIRTIO_BLK_F_BLK_SIZE | 1ull << VIRTIO_BLK_F_FLUSH;
    if (b->readonly)
        b->dev.features |= 1ull << VIRTIO_BLK_F_RO;
    else
        b->dev.features |= (be->ops->discard ? 1ull << VIRTIO_BLK_F_DISCARD : 0) |
                           1ull << VIRTIO_BLK_F_WRITE_ZEROES;
    b->dev.nqueues = 1;
    b->dev.ops = &blk_ops;
    b->dev.opaque = b;
    virtio_dev_init(&b->dev);
    return b;
}

virtio_blk *virtio_blk_new_fd(unsigned index, int fd, uint64_t size, bool readonly)
{
    return blk_new(index, blk_backend_raw_fd(fd, size, readonly));
}

xerr *virtio_blk_open_format(unsigned index, const char *path, const char *format, bool readonly,
                             virtio_blk **ret)
{
    char field[32];
    snprintf(field, sizeof(field), "disks[%u].path", index);
    blk_backend *be = NULL;
    AUTOFREE char *why = NULL;
    if (blk_backend_open(path, format, readonly, &be, &why) < 0)
        return xerr_new("INVALID_VALUE", field, why ? why : "cannot open");
    *ret = blk_new(index, be);
    log_info("disk %u: %s (%s), %llu sectors%s", index, path, be->ops->format,
             (unsigned long long)(be->size / 512), readonly ? ", read-only" : "");
    return NULL;
}

xerr *virtio_blk_open(unsigned index, const char *path, bool readonly, virtio_blk **ret)
{
    return virtio_blk_open_format(index, path, "raw", readonly, ret);
}

uint64_t virtio_blk_size(virtio_blk *b)
{
    return atomic_load(&b->capacity) * 512;
}

const char *virtio_blk_format(virtio_blk *b)
{
    return b->be->ops->format;
}

xerr *virtio_blk_resize(virtio_blk *b, uint64_t new_size)
{
    if (b->readonly)
        return xerr_new("INVALID_VALUE", "index", "read-only disk");
    char sz[32];
    snprintf(sz, sizeof(sz), "%llu", (unsigned long long)new_size);
    if (new_size % 512)
        return xerr_new("INVALID_VALUE", "size", "not a multiple of 512");
    /* Requests see the old capacity until the image has grown. */
    pthread_mutex_lock(&b->io_lock);
    uint64_t old = atomic_load(&b->capacity) * 512;
    int r = 0;
    if (new_size > old)
        r = b->be->ops->grow(b->be, new_size);
    if (r == 0 && new_size > old)
        atomic_store(&b->capacity, new_size / 512);
    pthread_mutex_unlock(&b->io_lock);
    if (new_size < old)
        return xerr_new("INVALID_VALUE", "size", "cannot shrink");
    if (r == -EINVAL || r == -EFBIG)
        return xerr_new("INVALID_VALUE", "size", "too large for the image format");
    if (r < 0)
        return xerr_internal("disk %u: growing the image to %s bytes: %s", b->index, sz,
                             strerror(-r));
    if (new_size == old)
        return NULL;
    log_info("disk %u: grown to %llu sectors", b->index, (unsigned long long)(new_size / 512));
    pthread_mutex_lock(&b->dev.lock);
    b->dev.config_generation++;
    if (b->dev.status & VIRTIO_STATUS_DRIVER_OK)
        virtio_raise_locked(&b->dev, VIRTIO_INT_CONFIG);
    pthread_mutex_unlock(&b->dev.lock);
    return NULL;
}

virtio_dev *virtio_blk_dev(virtio_blk *b)
{
    return &b->dev;
}

void virtio_blk_get_stats(virtio_blk *b, virtio_blk_stats *ret)
{
    pthread_mutex_lock(&b->dev.lock);
    *ret = b->stats;
    pthread_mutex_unlock(&b->dev.lock);
}

void virtio_blk_free(virtio_blk *b)
{
    if (!b)
        return;
    if (b->started) {
        pthread_mutex_lock(&b->dev.lock);
        b->stop = true;
        pthread_mutex_unlock(&b->dev.lock);
        kick(b);
        pthread_join(b->thread, NULL);
    }
    if (b->kick >= 0)
        close(b->kick);
    pthread_cond_destroy(&b->idle);
    blk_backend_close(b->be);
    pthread_mutex_destroy(&b->io_lock);
    virtio_dev_destroy(&b->dev);
    free(b);
}
