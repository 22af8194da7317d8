/* virtio-console (device ID 3), one port without the multiport feature, used as the
 * paravirtual key-value channel between the host and a guest agent (agent.h has the line
 * protocol). receiveq (0) carries host -> guest bytes, transmitq (1) guest -> host bytes. */
#pragma once

#include "agent.h"
#include "err.h"
#include "virtio.h"
#include "xv.h"

#include <stdbool.h>
#include <stdint.h>

#define VIRTIO_CONSOLE_RXQ     0
#define VIRTIO_CONSOLE_TXQ     1
#define VIRTIO_CONSOLE_OUT_MAX (16 * 1024) /* host -> guest bytes waiting for guest buffers */

typedef struct virtio_console virtio_console;

/* `published(opaque)` is called (vCPU thread, device lock held: it must only wake someone)
 * when the guest agent completes a `sync` or `hello`. */
virtio_console *virtio_console_new(void (*published)(void *), void *opaque);
virtio_dev *virtio_console_dev(virtio_console *c);
void virtio_console_free(virtio_console *c);

/* Queues "set KEY VALUE" for the guest (delivered as soon as it has receive buffers).
 * Errors: INVALID_VALUE [key|value, why]; INVALID_VALUE [key, "guest agent queue full"]. */
xerr *virtio_console_guest_set(virtio_console *c, const char *key, const char *value);
/* The guest's data (caller-frees), whether an agent said hello since the machine started,
 * and how many publications happened (it moves on each). */
xv *virtio_console_guest_data(virtio_console *c, bool *ret_connected, uint64_t *ret_publications);
/* The publication count alone (cheap). */
uint64_t virtio_console_publications(virtio_console *c);
/* A new machine (boot or reboot): forget the old guest's data and undelivered host writes. */
void virtio_console_machine_reset(virtio_console *c);

typedef struct virtio_console_stats {
    uint64_t bytes_in, bytes_out, lines, rejected, overlong, dropped;
} virtio_console_stats;
void virtio_console_get_stats(virtio_console *c, virtio_console_stats *ret);
