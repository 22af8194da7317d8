/* virtio-net (device ID 1) on a tap: one RX/TX queue pair, MAC from the config, no offloads
 * (the 12-byte virtio_net_hdr is added and stripped here; the tap has no vnet header).
 * TX is served on the notifying vCPU thread; RX by one thread per NIC polling the tap. */
#pragma once

#include "err.h"
#include "virtio.h"

#define VIRTIO_NET_F_MAC     5
#define VIRTIO_NET_F_STATUS  16
#define VIRTIO_NET_HDR_LEN   12 /* virtio 1.x header: flags .. num_buffers */
#define VIRTIO_NET_MAX_FRAME 65550

typedef struct virtio_net virtio_net;

/* Attaches to the existing tap `tap` (opened before the sandbox). Errors:
 * INVALID_VALUE [nics[N].tap, why]. */
xerr *virtio_net_open(unsigned index, const char *tap, const uint8_t mac[6], virtio_net **ret);
/* Uses an open tap-like fd (packets as whole reads/writes; taken over); for tests. */
virtio_net *virtio_net_new_fd(unsigned index, int fd, const uint8_t mac[6]);
/* Starts the RX thread (after the sandbox is fine: it only needs clone/poll/read). */
xerr *virtio_net_start(virtio_net *n);
virtio_dev *virtio_net_dev(virtio_net *n);
/* Stops the RX thread and frees everything. */
void virtio_net_free(virtio_net *n);

typedef struct virtio_net_stats {
    uint64_t tx_packets, tx_bytes, tx_dropped, rx_packets, rx_bytes, rx_dropped;
} virtio_net_stats;
void virtio_net_get_stats(virtio_net *n, virtio_net_stats *ret);
