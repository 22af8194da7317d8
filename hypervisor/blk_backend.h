/* Disk image backends for virtio-blk: raw files (or block devices) and VHD chains (through
 * storage/vhd). A backend is a table of operations; every one returns 0 or a negative errno
 * and is called from one thread at a time (the disk's I/O thread, or the control loop while
 * the caller holds the disk's I/O lock). Offsets and lengths are multiples of 512 bytes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct blk_backend blk_backend;

typedef struct blk_backend_ops {
    const char *format; /* "raw" or "vhd" */
    int (*read)(blk_backend *b, void *buf, uint64_t off, size_t len);
    int (*write)(blk_backend *b, const void *buf, uint64_t off, size_t len);
    /* Makes completed writes durable (fdatasync; VHD: BAT commit first). */
    int (*flush)(blk_backend *b);
    /* Deallocates [off, off+len) (contents then read as zeros); NULL where not offered. */
    int (*discard)(blk_backend *b, uint64_t off, uint64_t len);
    /* Makes [off, off+len) read as zeros; unmap allows deallocating. */
    int (*write_zeroes)(blk_backend *b, uint64_t off, uint64_t len, bool unmap);
    /* Grows the image to new_size bytes (> size); b->size follows on success. */
    int (*grow)(blk_backend *b, uint64_t new_size);
    void (*close)(blk_backend *b);
} blk_backend_ops;

struct blk_backend {
    const blk_backend_ops *ops;
    uint64_t size; /* virtual size in bytes (multiple of 512) */
    bool readonly;
};

/* Opens the image at path as format "raw", "vhd" or "auto" (VHD if the file ends in, or a
 * dynamic disk starts with, a footer carrying the "conectix" cookie; raw otherwise) and locks
 * it (flock: exclusive when writable, shared otherwise; a VHD's ancestors shared). A VHD chain
 * must pass vhd_check (ancestors too) before it is opened, so a damaged image is refused
 * before anything is written. On failure returns a negative errno and, in *why, a
 * caller-frees description ("size 1000 is not a multiple of 512", "in use by another
 * process", the VHD problem); *ret is set only on success. */
int blk_backend_open(const char *path, const char *format, bool readonly, blk_backend **ret,
                     char **why);
/* A raw backend on an open descriptor (taken over) of size bytes; for tests and fd passing. */
blk_backend *blk_backend_raw_fd(int fd, uint64_t size, bool readonly);
/* Closes b (NULL is fine). */
void blk_backend_close(blk_backend *b);
