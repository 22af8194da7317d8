/* virtio 1.x devices on the virtio-mmio transport (version 2), as Linux's virtio_mmio finds
 * them through ACPI (HID LNRO0005, see acpi.c), and split virtqueues in guest RAM.
 *
 * Layout (the guest ABI, mirrored in guest/virtio.h): device slot i has its registers at
 * VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE and raises GSI VIRTIO_GSI_BASE + i, level
 * triggered, active high (the line is up while InterruptStatus is non-zero).
 *
 * The queue logic is pure (guest RAM through boot_mem) so unit tests drive it without KVM. */
#pragma once

#include "boot.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define VIRTIO_MMIO_BASE   0xd0000000ull
#define VIRTIO_MMIO_STRIDE 0x1000
#define VIRTIO_MMIO_SIZE   0x200 /* registers and device config */
#define VIRTIO_GSI_BASE    16
#define VIRTIO_MAX_DEVICES 8 /* GSIs 16-23: the in-kernel IOAPIC has 24 pins */

#define VIRTIO_MMIO_MAGIC  0x74726976 /* "virt" */
#define VIRTIO_MMIO_VENDOR 0x4d56554e /* "NUVM" */

/* virtio-mmio registers */
#define VIRTIO_MMIO_MAGIC_VALUE         0x000
#define VIRTIO_MMIO_VERSION             0x004
#define VIRTIO_MMIO_DEVICE_ID           0x008
#define VIRTIO_MMIO_VENDOR_ID           0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES     0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES     0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL           0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX       0x034
#define VIRTIO_MMIO_QUEUE_NUM           0x038
#define VIRTIO_MMIO_QUEUE_READY         0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY        0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS    0x060
#define VIRTIO_MMIO_INTERRUPT_ACK       0x064
#define VIRTIO_MMIO_STATUS              0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW      0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH     0x084
#define VIRTIO_MMIO_QUEUE_AVAIL_LOW     0x090
#define VIRTIO_MMIO_QUEUE_AVAIL_HIGH    0x094
#define VIRTIO_MMIO_QUEUE_USED_LOW      0x0a0
#define VIRTIO_MMIO_QUEUE_USED_HIGH     0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION   0x0fc
#define VIRTIO_MMIO_CONFIG              0x100

/* device status bits */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER      2
#define VIRTIO_STATUS_DRIVER_OK   4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

#define VIRTIO_F_VERSION_1 32

#define VIRTIO_INT_USED   1 /* InterruptStatus: used buffer notification */
#define VIRTIO_INT_CONFIG 2 /* configuration change */

#define VIRTQ_DESC_F_NEXT     1
#define VIRTQ_DESC_F_WRITE    2
#define VIRTQ_DESC_F_INDIRECT 4

#define VIRTQ_MAX_SIZE    256
#define VIRTIO_MAX_QUEUES 2

enum virtio_device_id {
    VIRTIO_ID_NET = 1,
    VIRTIO_ID_BLOCK = 2,
    VIRTIO_ID_CONSOLE = 3,
    VIRTIO_ID_BALLOON = 5,
};

/* One split virtqueue, as the driver configured it. */
typedef struct virtq {
    uint16_t num_max; /* offered */
    uint16_t num;     /* chosen by the driver (power of two) */
    bool ready;
    uint64_t desc, avail, used; /* guest-physical */
    uint16_t last_avail;        /* next avail ring entry the device takes */
    uint16_t used_idx;          /* the device's copy of used->idx */
} virtq;

/* One guest buffer of a descriptor chain, mapped into the VMM. */
typedef struct virtq_seg {
    uint8_t *data;
    uint32_t len;
    bool writable; /* device-writable (the guest reads it) */
} virtq_seg;

typedef struct virtq_chain {
    uint16_t head; /* descriptor index returned in the used ring */
    unsigned nseg;
    virtq_seg seg[VIRTQ_MAX_SIZE];
} virtq_chain;

/* Takes the next available chain. Returns 1 with *chain filled, 0 if the ring is empty, -1 if
 * the driver broke the ring (bad index, loop, buffer outside RAM, readable after writable,
 * indirect descriptors, which are not offered): the device then needs a reset. */
int virtq_pop(virtq *q, const boot_mem *m, virtq_chain *chain);
/* Returns a chain to the driver with `written` bytes written into its writable buffers. */
void virtq_push(virtq *q, const boot_mem *m, uint16_t head, uint32_t written);
/* Whether the queue's rings lie in guest RAM (checked when the driver sets it ready). */
bool virtq_valid(const virtq *q, const boot_mem *m);

typedef struct virtio_dev virtio_dev;
struct sbuf;

typedef struct virtio_dev_ops {
    /* The driver notified queue q (called with d->lock held). */
    void (*notify)(virtio_dev *d, unsigned q);
    /* Device config space, off from VIRTIO_MMIO_CONFIG (reads pre-zeroed). */
    void (*config_read)(virtio_dev *d, uint32_t off, uint8_t *data, unsigned len);
    /* The driver reset the device (status 0, or a machine reset or detach); may wait on
     * d->lock (a condition variable) until device threads stop using guest memory. */
    void (*reset)(virtio_dev *d);
    /* Device config writes (off from VIRTIO_MMIO_CONFIG); may be NULL (ignored). */
    void (*config_write)(virtio_dev *d, uint32_t off, const uint8_t *data, unsigned len);
    /* Save/restore (may be NULL: nothing beyond the transport). save: called with d->lock
     * held while the vCPUs are paused; waits (on d->lock) until the device's threads no
     * longer use guest memory (in-flight requests complete), then appends the device's own
     * state to out; the caller keeps d->lock until the snapshot is written. load: restores
     * what save wrote (d->lock held); returns 0 or -EINVAL for malformed state. */
    void (*save)(virtio_dev *d, struct sbuf *out);
    int (*load)(virtio_dev *d, const uint8_t *data, size_t len);
} virtio_dev_ops;

struct virtio_dev {
    uint32_t device_id;
    uint64_t features; /* offered (VIRTIO_F_VERSION_1 is always added) */
    unsigned nqueues;
    const virtio_dev_ops *ops;
    void *opaque; /* the device model's state */
    /* Host side: guest RAM and the interrupt line, set when the machine is built. */
    const boot_mem *mem; /* NULL while detached */
    void (*set_irq)(void *irq_opaque, unsigned gsi, int level);
    void *irq_opaque;
    unsigned gsi;
    /* transport state, under lock */
    pthread_mutex_t lock;
    uint64_t driver_features;
    uint32_t device_features_sel, driver_features_sel, queue_sel;
    uint32_t status, isr, config_generation;
    uint64_t generation; /* moves on every reset and detach */
    virtq q[VIRTIO_MAX_QUEUES];
    uint64_t notifies, interrupts; /* counters */
};

/* Initialises the transport part (the caller sets device_id, features, nqueues, ops, opaque). */
void virtio_dev_init(virtio_dev *d);
void virtio_dev_destroy(virtio_dev *d);
/* Attaches the device to a (new) machine and resets it. */
void virtio_dev_attach(virtio_dev *d, const boot_mem *mem, unsigned gsi,
                       void (*set_irq)(void *, unsigned, int), void *irq_opaque);
/* Detaches it before the machine's RAM goes away (device threads stop touching it). */
void virtio_dev_detach(virtio_dev *d);
/* A guest access to the device's register window (off < VIRTIO_MMIO_SIZE). */
void virtio_mmio_access(virtio_dev *d, uint64_t off, bool is_write, uint8_t *data, unsigned len);
/* Raises InterruptStatus bits and the line (called with d->lock held, e.g. from notify). */
void virtio_raise_locked(virtio_dev *d, uint32_t bits);
/* Save/restore of the transport (status, features, queues, ISR) plus the device's own state
 * (ops->save/load). save_locked: with d->lock held (see virtio_dev_ops.save). load: on an
 * attached device of the same kind; raises the line if ISR is set and serves what the
 * driver queued before the save. Returns 0 or -EINVAL (malformed or mismatched state). */
void virtio_dev_save_locked(virtio_dev *d, struct sbuf *out);
int virtio_dev_load(virtio_dev *d, const uint8_t *data, size_t len);
/* Whether the driver negotiated feature bit `bit`. */
static inline bool virtio_has(const virtio_dev *d, unsigned bit)
{
    return (d->driver_features >> bit) & 1;
}
