/* virtio-balloon (see virtio_balloon.h). Layouts from the virtio 1.1 specification, 5.5. */
#define _GNU_SOURCE
#include "virtio_balloon.h"
#include "log.h"
#include "mem.h"
#include "snapshot.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

struct virtio_balloon {
    virtio_dev dev;
    uint64_t memory; /* bytes of guest RAM */
    /* under dev.lock */
    uint32_t num_pages; /* requested balloon size */
    uint32_t actual;    /* as the driver wrote it */
    uint64_t *held;     /* one bit per page of RAM (by offset into it): in the balloon */
    uint64_t nheld;
    uint64_t inflates, deflates, bad_pfns;
    void (*changed)(void *);
    void *opaque;
};

uint64_t virtio_balloon_floor(uint64_t memory_bytes)
{
    uint64_t floor = (uint64_t)BALLOON_FLOOR_MIB << 20;
    return memory_bytes < floor ? memory_bytes : floor;
}

static void bal_config_read(virtio_dev *d, uint32_t off, uint8_t *data, unsigned len)
{
    virtio_balloon *b = d->opaque;
    uint8_t cfg[8];
    memcpy(cfg, &b->num_pages, 4);
    memcpy(cfg + 4, &b->actual, 4);
    if (off < sizeof(cfg))
        memcpy(data, cfg + off, len < sizeof(cfg) - off ? len : sizeof(cfg) - off);
}

static void bal_config_write(virtio_dev *d, uint32_t off, const uint8_t *data, unsigned len)
{
    virtio_balloon *b = d->opaque;
    if (off < 4 || off >= 8)
        return; /* num_pages is the device's */
    uint8_t a[4];
    memcpy(a, &b->actual, 4);
    unsigned n = len < 8 - off ? len : 8 - off;
    memcpy(a + (off - 4), data, n);
    uint32_t old = b->actual;
    memcpy(&b->actual, a, 4);
    if (b->actual != old && b->changed)
        b->changed(b->opaque);
}

/* Gives a run of host pages back to the kernel (private anonymous memory: the next guest
 * access faults in a zero page). */
static void release(uint8_t *p, size_t len)
{
    if (madvise(p, len, MADV_DONTNEED) < 0)
        log_debug("balloon: madvise: %s", strerror(errno));
}

/* One queue's buffers: arrays of PFNs. Inflate marks pages held and releases them (runs of
 * contiguous host memory in one call); deflate only forgets them. */
static void bal_process(virtio_balloon *b, unsigned qi)
{
    virtio_dev *d = &b->dev;
    virtq *q = &d->q[qi];
    static __thread virtq_chain chain;
    bool pushed = false;
    for (;;) {
        int r = virtq_pop(q, d->mem, &chain);
        if (r < 0) {
            log_warn("virtio-balloon: malformed queue %u; device needs reset", qi);
            d->status |= VIRTIO_STATUS_NEEDS_RESET;
            virtio_raise_locked(d, VIRTIO_INT_CONFIG);
            break;
        }
        if (!r)
            break;
        uint8_t *run = NULL;
        size_t run_len = 0;
        for (unsigned i = 0; i < chain.nseg; i++) {
            virtq_seg *s = &chain.seg[i];
            if (s->writable)
                continue;
            for (uint32_t off = 0; off + 4 <= s->len; off += 4) {
                uint32_t pfn;
                memcpy(&pfn, s->data + off, 4);
                uint8_t *p = boot_gpa(d->mem, (uint64_t)pfn * BALLOON_PAGE, BALLOON_PAGE);
                if (!p) {
                    b->bad_pfns++;
                    continue;
                }
                uint64_t idx = (uint64_t)(p - d->mem->ram) / BALLOON_PAGE;
                uint64_t bit = 1ull << (idx % 64);
                bool held = b->held[idx / 64] & bit;
                if (qi == VIRTIO_BALLOON_DFQ) {
                    if (held) {
                        b->held[idx / 64] &= ~bit;
                        b->nheld--;
                    }
                    continue;
                }
                if (!held) {
                    b->held[idx / 64] |= bit;
                    b->nheld++;
                }
                if (run && p == run + run_len) {
                    run_len += BALLOON_PAGE;
                } else {
                    if (run)
                        release(run, run_len);
                    run = p;
                    run_len = BALLOON_PAGE;
                }
            }
        }
        if (run)
            release(run, run_len);
        if (qi == VIRTIO_BALLOON_DFQ)
            b->deflates++;
        else
            b->inflates++;
        virtq_push(q, d->mem, chain.head, 0);
        pushed = true;
    }
    if (pushed)
        virtio_raise_locked(d, VIRTIO_INT_USED);
}

static void bal_notify(virtio_dev *d, unsigned q)
{
    if (q == VIRTIO_BALLOON_IFQ || q == VIRTIO_BALLOON_DFQ)
        bal_process(d->opaque, q);
}

static size_t bitmap_words(const virtio_balloon *b)
{
    return (b->memory / BALLOON_PAGE + 63) / 64;
}

/* A reset (driver, reboot) hands every page back to the guest; the target stays. */
static void bal_reset(virtio_dev *d)
{
    virtio_balloon *b = d->opaque;
    uint32_t old = b->actual;
    memset(b->held, 0, bitmap_words(b) * sizeof(uint64_t));
    b->nheld = 0;
    b->actual = 0;
    if (old && b->changed)
        b->changed(b->opaque);
}

/* Snapshot: the target, the driver's count and which pages the balloon holds (they are
 * zero, so the RAM sections carry nothing for them). */
static void bal_save(virtio_dev *d, struct sbuf *out)
{
    virtio_balloon *b = d->opaque;
    snap_put_u64(out, b->memory);
    snap_put_u32(out, b->num_pages);
    snap_put_u32(out, b->actual);
    snap_put(out, b->held, bitmap_words(b) * sizeof(uint64_t));
}

static int bal_load(virtio_dev *d, const uint8_t *data, size_t len)
{
    virtio_balloon *b = d->opaque;
    snap_reader r = {.p = data, .len = len};
    uint64_t memory = snap_get_u64(&r);
    uint32_t num_pages = snap_get_u32(&r), actual = snap_get_u32(&r);
    size_t bytes = bitmap_words(b) * sizeof(uint64_t);
    if (r.bad || memory != b->memory || len - r.off != bytes || num_pages > memory / BALLOON_PAGE)
        return -EINVAL;
    memcpy(b->held, data + r.off, bytes);
    b->nheld = 0;
    for (size_t i = 0; i < bitmap_words(b); i++)
        b->nheld += (uint64_t)__builtin_popcountll(b->held[i]);
    b->num_pages = num_pages;
    b->actual = actual;
    if (b->changed)
        b->changed(b->opaque);
    return 0;
}

static const virtio_dev_ops bal_ops = {.notify = bal_notify,
                                       .config_read = bal_config_read,
                                       .config_write = bal_config_write,
                                       .reset = bal_reset,
                                       .save = bal_save,
                                       .load = bal_load};

virtio_balloon *virtio_balloon_new(uint64_t memory_bytes, void (*changed)(void *), void *opaque)
{
    virtio_balloon *b = xcalloc(1, sizeof(*b));
    b->memory = memory_bytes;
    /* calloc: the kernel maps the bitmap's zero pages lazily */
    b->held = xcalloc((memory_bytes / BALLOON_PAGE + 63) / 64 + 1, sizeof(uint64_t));
    b->changed = changed;
    b->opaque = opaque;
    b->dev.device_id = VIRTIO_ID_BALLOON;
    b->dev.nqueues = 2;
    b->dev.ops = &bal_ops;
    b->dev.opaque = b;
    virtio_dev_init(&b->dev);
    return b;
}

virtio_dev *virtio_balloon_dev(virtio_balloon *b)
{
    return &b->dev;
}

void virtio_balloon_free(virtio_balloon *b)
{
    if (!b)
        return;
    virtio_dev_destroy(&b->dev);
    free(b->held);
    free(b);
}

xerr *virtio_balloon_set_target(virtio_balloon *b, int64_t bytes)
{
    char why[96];
    uint64_t floor = virtio_balloon_floor(b->memory);
    if (bytes < 0 || (uint64_t)bytes > b->memory) {
        snprintf(why, sizeof(why), "above the memory (%llu bytes)", (unsigned long long)b->memory);
        return xerr_new("INVALID_VALUE", "bytes", why);
    }
    if ((uint64_t)bytes < floor) {
        snprintf(why, sizeof(why), "below the floor (%llu bytes)", (unsigned long long)floor);
        return xerr_new("INVALID_VALUE", "bytes", why);
    }
    uint64_t keep = ((uint64_t)bytes + BALLOON_PAGE - 1) / BALLOON_PAGE;
    uint32_t pages = (uint32_t)(b->memory / BALLOON_PAGE - keep);
    virtio_dev *d = &b->dev;
    pthread_mutex_lock(&d->lock);
    if (pages != b->num_pages) {
        b->num_pages = pages;
        d->config_generation++;
        if (d->status & VIRTIO_STATUS_DRIVER_OK)
            virtio_raise_locked(d, VIRTIO_INT_CONFIG);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

void virtio_balloon_get_stats(virtio_balloon *b, virtio_balloon_stats *ret)
{
    pthread_mutex_lock(&b->dev.lock);
    uint64_t actual = (uint64_t)b->actual * BALLOON_PAGE;
    *ret = (virtio_balloon_stats){
        .memory_bytes = b->memory,
        .target_bytes = b->memory - (uint64_t)b->num_pages * BALLOON_PAGE,
        .actual_bytes = actual > b->memory ? 0 : b->memory - actual,
        .inflated_bytes = b->nheld * BALLOON_PAGE,
        .inflates = b->inflates,
        .deflates = b->deflates,
        .bad_pfns = b->bad_pfns,
    };
    pthread_mutex_unlock(&b->dev.lock);
}
