/* virtio-blk (device ID 2) over a raw image file: read, write, flush, get-id; read-only disks.
 * Once started, an I/O thread per disk serves the queue (a notify only kicks its eventfd), so
 * disk I/O never runs on a vCPU thread; before that, requests are served on the notify. */
#pragma once

#include "err.h"
#include "virtio.h"

#define VIRTIO_BLK_F_SEG_MAX  2
#define VIRTIO_BLK_F_RO       5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH    9

#define VIRTIO_BLK_T_IN     0
#define VIRTIO_BLK_T_OUT    1
#define VIRTIO_BLK_T_FLUSH  4
#define VIRTIO_BLK_T_GET_ID 8

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_SEG_MAX 126 /* data buffers per request (queue of 256, less header/status) */
#define VIRTIO_BLK_ID_LEN  20

typedef struct virtio_blk virtio_blk;

/* Opens a raw image (O_RDONLY for a read-only disk) and locks it (shared when read-only,
 * exclusive otherwise). Its size must be a non-zero multiple of 512 bytes. index names the
 * disk in errors ("disks[N]") and in its serial ("nuvem-vdN"). Errors:
 * INVALID_VALUE [disks[N].path, why]. */
xerr *virtio_blk_open(unsigned index, const char *path, bool readonly, virtio_blk **ret);
/* Uses an open file descriptor (taken over) of `size` bytes; for tests and fd passing. */
virtio_blk *virtio_blk_new_fd(unsigned index, int fd, uint64_t size, bool readonly);
/* Starts the I/O thread (after the sandbox, so that it runs under the filter). */
xerr *virtio_blk_start(virtio_blk *b);
virtio_dev *virtio_blk_dev(virtio_blk *b);
void virtio_blk_free(virtio_blk *b);

typedef struct virtio_blk_stats {
    uint64_t reads, writes, flushes, read_bytes, write_bytes, errors;
} virtio_blk_stats;
void virtio_blk_get_stats(virtio_blk *b, virtio_blk_stats *ret);
