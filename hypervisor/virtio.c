/* virtio-mmio transport (version 2) and split virtqueues (see virtio.h). Layouts from the
 * virtio 1.1 specification, sections 2.6 (split virtqueues) and 4.2 (virtio over MMIO). */
#include "virtio.h"
#include "snapshot.h"

#include <errno.h>
#include <string.h>

/* ---- split virtqueues ---- */

struct vring_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

bool virtq_valid(const virtq *q, const boot_mem *m)
{
    if (!m || !q->num || q->num > q->num_max || (q->num & (q->num - 1)))
        return false;
    return boot_gpa(m, q->desc, 16ull * q->num) && boot_gpa(m, q->avail, 6 + 2ull * q->num) &&
           boot_gpa(m, q->used, 6 + 8ull * q->num);
}

int virtq_pop(virtq *q, const boot_mem *m, virtq_chain *chain)
{
    if (!q->ready || !m)
        return 0;
    const uint8_t *avail = boot_gpa(m, q->avail, 4 + 2ull * q->num);
    const struct vring_desc *desc = boot_gpa(m, q->desc, 16ull * q->num);
    if (!avail || !desc)
        return -1;
    uint16_t avail_idx = __atomic_load_n((const uint16_t *)(avail + 2), __ATOMIC_ACQUIRE);
    if (avail_idx == q->last_avail)
        return 0;
    if ((uint16_t)(avail_idx - q->last_avail) > q->num)
        return -1; /* more entries than the ring holds */
    uint16_t head = rd16(avail + 4 + 2 * (q->last_avail % q->num));
    if (head >= q->num)
        return -1;
    q->last_avail++;
    chain->head = head;
    chain->nseg = 0;
    uint16_t i = head;
    bool seen_writable = false;
    for (;;) {
        if (chain->nseg >= q->num)
            return -1; /* a loop */
        struct vring_desc d;
        memcpy(&d, &desc[i], sizeof(d));
        if (d.flags & VIRTQ_DESC_F_INDIRECT)
            return -1; /* VIRTIO_F_INDIRECT_DESC is not offered */
        bool w = d.flags & VIRTQ_DESC_F_WRITE;
        if (seen_writable && !w)
            return -1; /* readable buffers come first */
        seen_writable = seen_writable || w;
        uint8_t *p = d.len ? boot_gpa(m, d.addr, d.len) : NULL;
        if (d.len && !p)
            return -1;
        chain->seg[chain->nseg++] = (virtq_seg){.data = p, .len = d.len, .writable = w};
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            break;
        if (d.next >= q->num)
            return -1;
        i = d.next;
    }
    return 1;
}

void virtq_push(virtq *q, const boot_mem *m, uint16_t head, uint32_t written)
{
    uint8_t *used = m ? boot_gpa(m, q->used, 4 + 8ull * q->num) : NULL;
    if (!used)
        return;
    uint8_t *e = used + 4 + 8 * (q->used_idx % q->num);
    uint32_t id = head;
    memcpy(e, &id, 4);
    memcpy(e + 4, &written, 4);
    q->used_idx++;
    /* The element is visible before the index that publishes it. */
    __atomic_store_n((uint16_t *)(used + 2), q->used_idx, __ATOMIC_RELEASE);
}

/* ---- the virtio-mmio transport ---- */

void virtio_dev_init(virtio_dev *d)
{
    pthread_mutex_init(&d->lock, NULL);
    d->features |= 1ull << VIRTIO_F_VERSION_1;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
        d->q[i].num_max = VIRTQ_MAX_SIZE;
}

void virtio_dev_destroy(virtio_dev *d)
{
    pthread_mutex_destroy(&d->lock);
}

static void set_line(virtio_dev *d)
{
    if (d->set_irq)
        d->set_irq(d->irq_opaque, d->gsi, d->isr ? 1 : 0);
}

static void reset_locked(virtio_dev *d)
{
    d->generation++;
    d->driver_features = 0;
    d->device_features_sel = d->driver_features_sel = d->queue_sel = 0;
    d->status = 0;
    d->isr = 0;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
        d->q[i] = (virtq){.num_max = VIRTQ_MAX_SIZE};
    if (d->ops && d->ops->reset)
        d->ops->reset(d);
    set_line(d);
}

void virtio_dev_attach(virtio_dev *d, const boot_mem *mem, unsigned gsi,
                       void (*set_irq)(void *, unsigned, int), void *irq_opaque)
{
    pthread_mutex_lock(&d->lock);
    d->mem = mem;
    d->gsi = gsi;
    d->set_irq = set_irq;
    d->irq_opaque = irq_opaque;
    reset_locked(d);
    pthread_mutex_unlock(&d->lock);
}

void virtio_dev_detach(virtio_dev *d)
{
    pthread_mutex_lock(&d->lock);
    reset_locked(d);
    d->mem = NULL;
    d->set_irq = NULL;
    pthread_mutex_unlock(&d->lock);
}

void virtio_raise_locked(virtio_dev *d, uint32_t bits)
{
    d->isr |= bits;
    d->interrupts++;
    set_line(d);
}

static virtq *cur_queue(virtio_dev *d)
{
    return d->queue_sel < d->nqueues ? &d->q[d->queue_sel] : NULL;
}

static uint32_t reg_read(virtio_dev *d, uint32_t off)
{
    virtq *q = cur_queue(d);
    switch (off) {
    case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
    case VIRTIO_MMIO_VERSION:
        return 2;
    case VIRTIO_MMIO_DEVICE_ID:
        return d->device_id;
    case VIRTIO_MMIO_VENDOR_ID:
        return VIRTIO_MMIO_VENDOR;
    case VIRTIO_MMIO_DEVICE_FEATURES:
        return d->device_features_sel < 2 ? (uint32_t)(d->features >> (32 * d->device_features_sel))
                                          : 0;
    case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return q ? q->num_max : 0;
    case VIRTIO_MMIO_QUEUE_READY:
        return q ? q->ready : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS:
        return d->isr;
    case VIRTIO_MMIO_STATUS:
        return d->status;
    case VIRTIO_MMIO_CONFIG_GENERATION:
        return d->config_generation;
    default:
        return 0;
    }
}

static void set_half(uint64_t *v, bool high, uint32_t val)
{
    *v = high ? (*v & 0xffffffffull) | (uint64_t)val << 32 : (*v & ~0xffffffffull) | val;
}

static void reg_write(virtio_dev *d, uint32_t off, uint32_t val)
{
    virtq *q = cur_queue(d);
    /* Queue layout registers only change while the queue is not ready. */
    bool q_writable = q && !q->ready;
    switch (off) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        d->device_features_sel = val;
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES:
        if (d->driver_features_sel < 2 && !(d->status & VIRTIO_STATUS_FEATURES_OK))
            set_half(&d->driver_features, d->driver_features_sel == 1, val);
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        d->driver_features_sel = val;
        break;
    case VIRTIO_MMIO_QUEUE_SEL:
        d->queue_sel = val;
        break;
    case VIRTIO_MMIO_QUEUE_NUM:
        if (q_writable)
            q->num = val <= q->num_max ? (uint16_t)val : 0;
        break;
    case VIRTIO_MMIO_QUEUE_READY:
        if (!q)
            break;
        if (val && !q->ready) {
            if (!virtq_valid(q, d->mem)) {
                d->status |= VIRTIO_STATUS_NEEDS_RESET;
                break;
            }
            q->last_avail = q->used_idx = 0;
            q->ready = true;
        } else if (!val) {
            q->ready = false;
        }
        break;
    case VIRTIO_MMIO_QUEUE_NOTIFY:
        d->notifies++;
        if (val < d->nqueues && d->q[val].ready && (d->status & VIRTIO_STATUS_DRIVER_OK) &&
            !(d->status & VIRTIO_STATUS_NEEDS_RESET) && d->ops->notify)
            d->ops->notify(d, val);
        break;
    case VIRTIO_MMIO_INTERRUPT_ACK:
        d->isr &= ~val;
        set_line(d);
        break;
    case VIRTIO_MMIO_STATUS:
        if (val == 0) {
            reset_locked(d);
            break;
        }
        if ((val & VIRTIO_STATUS_FEATURES_OK) && !(d->status & VIRTIO_STATUS_FEATURES_OK)) {
            /* Only offered features, and the modern interface (this transport is version 2). */
            if ((d->driver_features & ~d->features) || !virtio_has(d, VIRTIO_F_VERSION_1))
                val &= ~(uint32_t)VIRTIO_STATUS_FEATURES_OK;
        }
        d->status = (val & 0xff) | (d->status & VIRTIO_STATUS_NEEDS_RESET);
        break;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        if (q_writable)
            set_half(&q->desc, off == VIRTIO_MMIO_QUEUE_DESC_HIGH, val);
        break;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        if (q_writable)
            set_half(&q->avail, off == VIRTIO_MMIO_QUEUE_AVAIL_HIGH, val);
        break;
    case VIRTIO_MMIO_QUEUE_USED_LOW:
    case VIRTIO_MMIO_QUEUE_USED_HIGH:
        if (q_writable)
            set_half(&q->used, off == VIRTIO_MMIO_QUEUE_USED_HIGH, val);
        break;
    default:
        break; /* read-only or unknown: ignored */
    }
}

void virtio_mmio_access(virtio_dev *d, uint64_t off, bool is_write, uint8_t *data, unsigned len)
{
    pthread_mutex_lock(&d->lock);
    if (off >= VIRTIO_MMIO_CONFIG) {
        /* Device config: any width. */
        if (!is_write) {
            memset(data, 0, len);
            if (d->ops->config_read)
                d->ops->config_read(d, (uint32_t)(off - VIRTIO_MMIO_CONFIG), data, len);
        } else if (d->ops->config_write) {
            d->ops->config_write(d, (uint32_t)(off - VIRTIO_MMIO_CONFIG), data, len);
        }
    } else if (len == 4 && !(off & 3)) {
        uint32_t v = 0;
        if (is_write) {
            memcpy(&v, data, 4);
            reg_write(d, (uint32_t)off, v);
        } else {
            v = reg_read(d, (uint32_t)off);
            memcpy(data, &v, 4);
        }
    } else if (!is_write) {
        memset(data, 0xff, len); /* registers are 32-bit wide and aligned */
    }
    pthread_mutex_unlock(&d->lock);
}

/* ---- save / restore (the transport; the device model adds its own state) ---- */

#define VIRTIO_SAVE_VERSION 1

void virtio_dev_save_locked(virtio_dev *d, struct sbuf *out)
{
    sbuf dev = SBUF_INIT;
    if (d->ops->save)
        d->ops->save(d, &dev); /* first: it may complete requests, moving the queues */
    snap_put_u32(out, VIRTIO_SAVE_VERSION);
    snap_put_u32(out, d->device_id);
    snap_put_u32(out, d->nqueues);
    snap_put_u64(out, d->driver_features);
    snap_put_u32(out, d->device_features_sel);
    snap_put_u32(out, d->driver_features_sel);
    snap_put_u32(out, d->queue_sel);
    snap_put_u32(out, d->status);
    snap_put_u32(out, d->isr);
    snap_put_u32(out, d->config_generation);
    for (unsigned i = 0; i < d->nqueues && i < VIRTIO_MAX_QUEUES; i++) {
        const virtq *q = &d->q[i];
        snap_put_u16(out, q->num);
        snap_put_u8(out, q->ready);
        snap_put_u8(out, 0);
        snap_put_u64(out, q->desc);
        snap_put_u64(out, q->avail);
        snap_put_u64(out, q->used);
        snap_put_u16(out, q->last_avail);
        snap_put_u16(out, q->used_idx);
    }
    snap_put_u32(out, (uint32_t)dev.len);
    snap_put(out, dev.data, dev.len);
    sbuf_release(&dev);
}

int virtio_dev_load(virtio_dev *d, const uint8_t *data, size_t len)
{
    snap_reader r = {.p = data, .len = len};
    if (snap_get_u32(&r) != VIRTIO_SAVE_VERSION || snap_get_u32(&r) != d->device_id ||
        snap_get_u32(&r) != d->nqueues || d->nqueues > VIRTIO_MAX_QUEUES)
        return -EINVAL;
    pthread_mutex_lock(&d->lock);
    int rc = -EINVAL;
    d->driver_features = snap_get_u64(&r);
    d->device_features_sel = snap_get_u32(&r);
    d->driver_features_sel = snap_get_u32(&r);
    d->queue_sel = snap_get_u32(&r);
    d->status = snap_get_u32(&r);
    d->isr = snap_get_u32(&r);
    d->config_generation = snap_get_u32(&r);
    if (d->driver_features & ~d->features)
        goto out;
    for (unsigned i = 0; i < d->nqueues; i++) {
        virtq *q = &d->q[i];
        q->num = snap_get_u16(&r);
        q->ready = snap_get_u8(&r) != 0;
        (void)snap_get_u8(&r);
        q->desc = snap_get_u64(&r);
        q->avail = snap_get_u64(&r);
        q->used = snap_get_u64(&r);
        q->last_avail = snap_get_u16(&r);
        q->used_idx = snap_get_u16(&r);
        if (q->ready && !virtq_valid(q, d->mem))
            goto out;
    }
    uint32_t dev_len = snap_get_u32(&r);
    if (r.bad || dev_len != r.len - r.off)
        goto out;
    if (d->ops->load ? d->ops->load(d, data + r.off, dev_len) < 0 : dev_len != 0)
        goto out;
    set_line(d);
    /* Requests the driver queued (and notified) before the save are served now. */
    if ((d->status & VIRTIO_STATUS_DRIVER_OK) && !(d->status & VIRTIO_STATUS_NEEDS_RESET) &&
        d->ops->notify)
        for (unsigned i = 0; i < d->nqueues; i++)
            if (d->q[i].ready)
                d->ops->notify(d, i);
    rc = 0;
out:
    if (rc < 0)
        reset_locked(d);
    pthread_mutex_unlock(&d->lock);
    return rc;
}
