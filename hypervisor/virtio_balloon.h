/* virtio-balloon (device ID 5): the host asks the guest to give back memory. Queues: inflate (0)
 * and deflate (1) carrying arrays of 32-bit guest page frame numbers (4 KiB pages); config
 * space {le32 num_pages (the host's request), le32 actual (the driver's count)}. No optional
 * features: pages given back are dropped from the host (MADV_DONTNEED on the anonymous guest
 * RAM, so the process RSS really falls) and come back, zero-filled, when the guest touches
 * them again, so deflating needs no host action. */
#pragma once

#include "err.h"
#include "virtio.h"

#include <stdint.h>

#define BALLOON_PAGE       4096u
#define BALLOON_FLOOR_MIB  16 /* the smallest target, or the whole memory if that is smaller */
#define VIRTIO_BALLOON_IFQ 0
#define VIRTIO_BALLOON_DFQ 1

typedef struct virtio_balloon virtio_balloon;

/* A balloon over `memory_bytes` of guest RAM. `changed(opaque)` is called (from a vCPU thread,
 * device lock held: it must only wake someone) when the driver updates `actual`. */
virtio_balloon *virtio_balloon_new(uint64_t memory_bytes, void (*changed)(void *), void *opaque);
virtio_dev *virtio_balloon_dev(virtio_balloon *b);
void virtio_balloon_free(virtio_balloon *b);

/* The smallest target accepted for a guest of this size. */
uint64_t virtio_balloon_floor(uint64_t memory_bytes);
/* Asks the guest to keep `bytes` of memory (rounded up to a page) and raises a config
 * interrupt. Errors: INVALID_VALUE [bytes, why] above the memory or below the floor. The
 * target is kept across guest reboots. */
xerr *virtio_balloon_set_target(virtio_balloon *b, int64_t bytes);

typedef struct virtio_balloon_stats {
    uint64_t memory_bytes;
    uint64_t target_bytes;   /* memory less num_pages */
    uint64_t actual_bytes;   /* memory less the driver's `actual` */
    uint64_t inflated_bytes; /* pages the VMM holds as given back (counted by the host) */
    uint64_t inflates, deflates, bad_pfns;
} virtio_balloon_stats;
void virtio_balloon_get_stats(virtio_balloon *b, virtio_balloon_stats *ret);
