/* virtio-blk on a raw image file (see virtio_blk.h). Layouts from the virtio 1.1
 * specification, section 5.2. */
#define _GNU_SOURCE
#include "virtio_blk.h"
#include "log.h"
#include "mem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct virtio_blk {
    virtio_dev dev;
    unsigned index;
    int fd;
    bool readonly;
    uint64_t size;     /* bytes */
    uint64_t capacity; /* 512-byte sectors */
    char id[VIRTIO_BLK_ID_LEN + 1];
    virtio_blk_stats stats; /* under dev.lock */
    /* The I/O thread (once started): notifies kick it; requests run outside dev.lock. */
    int kick;
    pthread_t thread;
    bool started, stop; /* stop: under dev.lock */
    bool inflight;      /* a chain is being served outside the lock (under dev.lock) */
    pthread_cond_t idle;
};

static void blk_config_read(virtio_dev *d, uint32_t off, uint8_t *data, unsigned len)
{
    virtio_blk *b = d->opaque;
    uint8_t cfg[24] = {0};
    memcpy(cfg, &b->capacity, 8);
    uint32_t seg_max = VIRTIO_BLK_SEG_MAX, blk_size = 512;
    memcpy(cfg + 12, &seg_max, 4);
    memcpy(cfg + 20, &blk_size, 4);
    if (off < sizeof(cfg))
        memcpy(data, cfg + off, len < sizeof(cfg) - off ? len : sizeof(cfg) - off);
}

/* Whole-buffer positional I/O; false on an error or a short transfer (end of file). */
static bool io_full(int fd, bool write, uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = write ? pwrite(fd, p, len, (off_t)off) : pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n < 0)
                log_warn("virtio-blk %s at %llu: %s", write ? "write" : "read",
                         (unsigned long long)off, strerror(errno));
            return false;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return true;
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
    for (unsigned i = first; i < end; i++) {
        total += c->seg[i].len;
        if (c->seg[i].len)
            dir_ok = dir_ok && c->seg[i].writable == (type != VIRTIO_BLK_T_OUT);
    }
    uint8_t s = VIRTIO_BLK_S_OK;
    uint32_t written = 0;
    switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool wr = type == VIRTIO_BLK_T_OUT;
        if (!dir_ok || total % 512 || sector > b->capacity || total / 512 > b->capacity - sector ||
            (wr && b->readonly)) {
            s = VIRTIO_BLK_S_IOERR;
            break;
        }
        uint64_t off = sector * 512;
        for (unsigned i = first; i < end && s == VIRTIO_BLK_S_OK; i++) {
            virtq_seg *g = &c->seg[i];
            if (g->len && !io_full(b->fd, wr, g->data, g->len, off))
                s = VIRTIO_BLK_S_IOERR;
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
    case VIRTIO_BLK_T_FLUSH:
        if (!b->readonly && fdatasync(b->fd) < 0) {
            log_warn("virtio-blk flush: %s", strerror(errno));
            s = VIRTIO_BLK_S_IOERR;
        } else {
            st->flushes++;
        }
        break;
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
            written = blk_request(b, &chain, &delta);
            pthread_mutex_lock(&d->lock);
            b->inflight = false;
            pthread_cond_broadcast(&b->idle);
            if (gen != d->generation)
                break; /* reset or detached while the request ran */
        } else {
            written = blk_request(b, &chain, &delta);
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

static const virtio_dev_ops blk_ops = {
    .notify = blk_notify, .config_read = blk_config_read, .reset = blk_reset};

virtio_blk *virtio_blk_new_fd(unsigned index, int fd, uint64_t size, bool readonly)
{
    virtio_blk *b = xcalloc(1, sizeof(*b));
    b->index = index;
    b->fd = fd;
    b->readonly = readonly;
    b->size = size;
    b->capacity = size / 512;
    snprintf(b->id, sizeof(b->id), "nuvem-vd%u", index);
    b->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_cond_init(&b->idle, NULL);
    b->dev.device_id = VIRTIO_ID_BLOCK;
    b->dev.features = 1ull << VIRTIO_BLK_F_SEG_MAX | 1ull << VIRTIO_BLK_F_BLK_SIZE |
                      1ull << VIRTIO_BLK_F_FLUSH | (readonly ? 1ull << VIRTIO_BLK_F_RO : 0);
    b->dev.nqueues = 1;
    b->dev.ops = &blk_ops;
    b->dev.opaque = b;
    virtio_dev_init(&b->dev);
    return b;
}

xerr *virtio_blk_open(unsigned index, const char *path, bool readonly, virtio_blk **ret)
{
    char field[32];
    snprintf(field, sizeof(field), "disks[%u].path", index);
    int fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0)
        return xerr_new("INVALID_VALUE", field, strerror(errno));
    struct stat st;
    const char *why = NULL;
    char buf[96];
    if (fstat(fd, &st) < 0)
        why = strerror(errno);
    else if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        why = "not a regular file or block device";
    else if (S_ISREG(st.st_mode) && st.st_size == 0)
        why = "empty image";
    else if (S_ISREG(st.st_mode) && st.st_size % 512) {
        snprintf(buf, sizeof(buf), "size %lld is not a multiple of 512 (truncated?)",
                 (long long)st.st_size);
        why = buf;
    } else if (flock(fd, (readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0)
        why = errno == EWOULDBLOCK ? "in use by another process" : strerror(errno);
    uint64_t size = (uint64_t)st.st_size;
    if (!why && S_ISBLK(st.st_mode)) {
        off_t end = lseek(fd, 0, SEEK_END);
        if (end <= 0 || end % 512)
            why = "block device size unusable";
        size = (uint64_t)end;
    }
    if (why) {
        close(fd);
        return xerr_new("INVALID_VALUE", field, why);
    }
    *ret = virtio_blk_new_fd(index, fd, size, readonly);
    log_info("disk %u: %s, %llu sectors%s", index, path, (unsigned long long)(size / 512),
             readonly ? ", read-only" : "");
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
    if (b->fd >= 0)
        close(b->fd);
    virtio_dev_destroy(&b->dev);
    free(b);
}
