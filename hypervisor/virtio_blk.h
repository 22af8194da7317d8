/* virtio-blk (device ID 2) over a raw image file or a VHD chain (blk_backend.h): read, write,
 * flush, get-id, discard, write-zeroes, read-only disks, online growth with a config
 * interrupt. Once started, an I/O thread per disk serves the queue (a notify only kicks its
 * eventfd), so disk I/O never runs on a vCPU thread; before that, requests are served on the
 * notify. */
#pragma once

#include "err.h"
#include "virtio.h"

#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_SEG_MAX        126 /* data buffers per request (queue of 256, less header/status) */
#define VIRTIO_BLK_ID_LEN         20
#define VIRTIO_BLK_MAX_DZ_SEG     16         /* discard / write-zeroes ranges per request */
#define VIRTIO_BLK_MAX_DZ_SECTORS (1u << 22) /* sectors per range (2 GiB) */

typedef struct virtio_blk virtio_blk;

/* Opens a raw image (O_RDONLY for a read-only disk) and locks it (shared when read-only,
 * exclusive otherwise). Its size must be a non-zero multiple of 512 bytes. index names the
 * disk in errors ("disks[N]") and in its serial ("nuvem-vdN"). Errors:
 * INVALID_VALUE [disks[N].path, why]. */
xerr *virtio_blk_open(unsigned index, const char *path, bool readonly, virtio_blk **ret);
/* Same, with format "raw", "vhd" or "auto" (see blk_backend_open): a VHD is checked and
 * opened as a chain (ancestors read-only). Errors: INVALID_VALUE [disks[N].path, why]. */
xerr *virtio_blk_open_format(unsigned index, const char *path, const char *format, bool readonly,
                             virtio_blk **ret);
/* Uses an open file descriptor (taken over) of `size` bytes; for tests and fd passing. */
virtio_blk *virtio_blk_new_fd(unsigned index, int fd, uint64_t size, bool readonly);
/* Starts the I/O thread (after the sandbox, so that it runs under the filter). */
xerr *virtio_blk_start(virtio_blk *b);
virtio_dev *virtio_blk_dev(virtio_blk *b);
void virtio_blk_free(virtio_blk *b);

typedef struct virtio_blk_stats {
    uint64_t reads, writes, flushes, read_bytes, write_bytes, errors;
    uint64_t discards, write_zeroes; /* requests */
} virtio_blk_stats;
void virtio_blk_get_stats(virtio_blk *b, virtio_blk_stats *ret);
/* Virtual size in bytes, and the backend's format ("raw", "vhd"; borrowed). */
uint64_t virtio_blk_size(virtio_blk *b);
const char *virtio_blk_format(virtio_blk *b);
/* Grows the disk to new_size bytes while the guest runs (control thread; waits for the
 * request in flight): the backing image first (raw: ftruncate; VHD: the leaf's BAT and
 * footers), then the capacity in config space, config_generation and a config-change
 * interrupt. The same size is a no-op. Errors: INVALID_VALUE [size, "cannot shrink" | "not a
 * multiple of 512" | "too large for the image format"], INVALID_VALUE [index, "read-only
 * disk"], INTERNAL_ERROR [why] (nothing changed for the guest). */
xerr *virtio_blk_resize(virtio_blk *b, uint64_t new_size);
