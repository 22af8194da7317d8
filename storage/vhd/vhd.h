/* VHD images as XCP's blktap writes them: fixed, dynamic and differencing disks, chains, I/O,
 * snapshot, resize, coalesce, check, raw import/export and allocation maps.
 *
 * Every function returns 0 (or a documented non-negative value) on success and a negative errno
 * on failure; none of them logs above debug level, callers decide what to report. Errors used
 * throughout:
 *   -EINVAL   bad argument (misaligned offset or length, unsupported size, wrong type)
 *   -EBADMSG  the file is not a valid VHD or its metadata is inconsistent (every field read from
 *             a file is distrusted and bounds-checked before use)
 *   -ENOENT   a file, or the parent of a differencing disk, cannot be found
 *   -ESTALE   a parent was found but its unique id differs from the one the child records
 *   -ELOOP    the chain is deeper than VHD_MAX_CHAIN_DEPTH (this also stops parent loops)
 *   -EROFS    write to a handle opened read-only
 *   -ERANGE   I/O beyond the virtual size
 *   -EFBIG    the file would outgrow the 2 TiB that 32-bit BAT sector numbers can address
 *   -ENOTSUP  a valid VHD feature this library does not implement (raw parents, shrinking)
 *   -ENOLINK  a read needs the parent of a handle opened with VHD_OPEN_NO_PARENT
 *   -ENOSPC   a new parent path does not fit the existing locator slots (vhd_set_parent)
 *   other     errors from the system calls, passed through
 *
 * A handle is not thread-safe: one thread at a time per handle (and per file: a leaf must have a
 * single writer, which the SR layer guarantees).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHD_SECTOR_SIZE 512u
/* The block size XCP uses everywhere; our writer always uses it, the reader accepts any power of
 * two from 512 bytes to 2 MiB (blktap rejects larger ones). */
#define VHD_BLOCK_SIZE (2u << 20)
/* Largest virtual size we create or grow to: XCP's limit (SM, xapi), also qemu's. */
#define VHD_MAX_VIRTUAL_SIZE (2040ull << 30)
/* Largest virtual size we open (blktap writes up to 2 TiB; BAT sectors are 32-bit). */
#define VHD_MAX_OPEN_SIZE (2048ull << 30)
/* Deepest chain we open, counting the leaf; SM refuses to snapshot past 30. */
#define VHD_MAX_CHAIN_DEPTH 32

enum vhd_type {
    VHD_TYPE_FIXED = 2,
    VHD_TYPE_DYNAMIC = 3,
    VHD_TYPE_DIFF = 4,
};

typedef struct vhd vhd;

enum vhd_open_flags {
    VHD_OPEN_RDONLY = 0,
    /* Open the leaf for writing (ancestors are always read-only). */
    VHD_OPEN_RDWR = 1 << 0,
    /* Do not open ancestors: reads of sectors the file does not hold fail with -ENOLINK. For
     * inspecting one node (info, map, check, coalesce source). */
    VHD_OPEN_NO_PARENT = 1 << 1,
    /* Skip the fdatasync that orders new blocks' data and bitmaps before their BAT entries.
     * The write order still protects against a crashed process, not against power loss. For
     * scratch images and tests. */
    VHD_OPEN_UNSAFE = 1 << 2,
    /* Commit each new block's BAT entry before vhd_write returns (one fdatasync per new
     * block), instead of at the next vhd_flush, vhd_close or every 64 new blocks. */
    VHD_OPEN_WRITETHROUGH = 1 << 3,
};

/* Opens the VHD at path and, for a differencing disk, its ancestors (found through the parent
 * locators, MacX first, relative to the child's directory, then the parent's name stored in the
 * header; each must carry the unique id the child records). On success *ret owns the chain;
 * release it with vhd_close(). *ret is untouched on failure. */
int vhd_open(const char *path, unsigned flags, vhd **ret);
/* Closes a chain opened by vhd_open (NULL is fine). Commits pending BAT entries (see
 * vhd_write) but does not fsync and cannot report errors: call vhd_flush first when the data
 * must be durable or errors matter. */
void vhd_close(vhd *v);
static inline void vhd_freep(vhd **v)
{
    vhd_close(*v);
}

/* Reads len bytes at byte offset off of the virtual disk into buf, through the chain.
 * off and len must be multiples of VHD_SECTOR_SIZE and lie within the virtual size. */
int vhd_read(vhd *v, void *buf, uint64_t off, size_t len);
/* Writes len bytes from buf at byte offset off into the leaf, allocating blocks as needed
 * (same alignment rules as vhd_read). Crash-safe ordering: a new block gets the moved trailing
 * footer, its data and its bitmap first; its BAT entry is written after a barrier, at the next
 * vhd_flush or vhd_close, after 64 new blocks, or at once with VHD_OPEN_WRITETHROUGH. Writes
 * into allocated blocks go in place, data before bitmap. So after a crash at any point
 * vhd_check accepts the file and every sector reads either its old contents or one of its
 * newer ones; writes completed before the last vhd_flush are never lost, later writes into
 * blocks still pending are (like a disk's volatile cache). Reads through v see everything. */
int vhd_write(vhd *v, const void *buf, uint64_t off, size_t len);
/* Commits pending BAT entries and makes everything written through v durable (fdatasync). */
int vhd_flush(vhd *v);
/* Deallocates what it safely can of [off, off+len) in the leaf (alignment as vhd_write), for a
 * guest's discard: reads of the range return zeros or their old contents afterwards. Fixed
 * disks: a hole is punched in the data. Dynamic and differencing disks: in each block of the
 * leaf that no ancestor holds and whose batmap bit is clear, the range's bitmap bits are
 * cleared (so it reads zeros) and then its data is punched out (the block stays allocated);
 * blocks an ancestor holds are left alone (clearing bits there would expose older data).
 * A crash at any point leaves a valid file. Where the file system cannot punch holes only the
 * bitmaps change. -EROFS on a read-only handle, -ERANGE/-EINVAL as for vhd_write. */
int vhd_discard(vhd *v, uint64_t off, uint64_t len);

struct vhd_info {
    enum vhd_type type;
    uint64_t virtual_size;  /* footer current size, bytes */
    uint64_t physical_size; /* file size, bytes */
    char uuid[37];
    char parent_uuid[37]; /* "" unless differencing */
    bool hidden;
    char creator[5];          /* creator application, NUL-terminated ("tap", "qemu", ...) */
    uint32_t creator_version; /* 0x00010003 for blktap 1.3 */
    int64_t timestamp;        /* footer time stamp as Unix seconds */
    uint32_t block_size;      /* 0 for fixed disks */
    uint32_t max_blocks;      /* BAT entries; 0 for fixed disks */
    uint32_t allocated_blocks;
    unsigned chain_depth; /* 1 for this file alone, 2 with a parent, ... */
};
/* Fills *ret with facts about the leaf of v. */
void vhd_get_info(const vhd *v, struct vhd_info *ret);
/* Borrowed path of the leaf, as given to vhd_open or found through a locator. */
const char *vhd_path(const vhd *v);
/* Borrowed parent handle, or NULL for the root (or when opened with VHD_OPEN_NO_PARENT). */
vhd *vhd_parent(const vhd *v);

/* Creates a new fixed or dynamic VHD of size bytes (a positive multiple of VHD_SECTOR_SIZE, at
 * most VHD_MAX_VIRTUAL_SIZE) at path, which must not exist (-EEXIST). Layout, creator "tap" 1.3,
 * batmap and fields as blktap's vhd-util create. For dynamic disks, max_size (0 = size)
 * reserves BAT room so that growing up to max_size later only rewrites the footers, like
 * vhd-util create -S. The file is fsynced; on failure nothing is left behind. */
int vhd_create(const char *path, enum vhd_type type, uint64_t size, uint64_t max_size);

enum vhd_snapshot_flags {
    /* Mark the parent hidden (XCP's read-only "base copy") before creating the child. */
    VHD_SNAPSHOT_HIDE_PARENT = 1 << 0,
};
/* Creates an empty differencing disk at child_path (must not exist) on top of parent_path,
 * with the parent's virtual size, its unique id and mtime, its basename as the header's parent
 * name, and MacX/W2ku/W2ru locators relative to the child's directory, as vhd-util snapshot
 * writes them. The parent chain must open, and the new chain must not exceed
 * VHD_MAX_CHAIN_DEPTH (-ELOOP). */
int vhd_snapshot(const char *child_path, const char *parent_path, unsigned flags);

/* Sets or clears the blktap "hidden" footer byte of the file at path (both footer copies). */
int vhd_set_hidden(const char *path, bool hidden);

/* Grows the virtual disk at path to new_size bytes (multiple of VHD_SECTOR_SIZE, at most
 * VHD_MAX_VIRTUAL_SIZE); shrinking is -ENOTSUP. When the BAT has no room (see max_size of
 * vhd_create), a larger BAT and batmap are written just past the current metadata, after moving
 * the blocks in the way to the end of the file, and one header write switches to them (blktap
 * wants all metadata before the first block). Both footers are rewritten last. Every step
 * leaves a valid file; a crash may leave the old size. */
int vhd_resize(const char *path, uint64_t new_size);
/* vhd_resize on the leaf of an open chain (opened VHD_OPEN_RDWR, else -EROFS): for a process
 * that keeps the leaf open as its only writer (the VMM's online resize). Pending BAT entries
 * are committed first; reads past the parent's end read zeros. Same errors and crash safety
 * as vhd_resize. After a failure the handle may already report the new size while the file
 * keeps the old one: callers keep using their old size (or reopen). */
int vhd_grow(vhd *v, uint64_t new_size);

/* Copies every sector present in the differencing disk child_path into its parent (growing the
 * parent first if the child is larger), then flushes the parent. The child is left as it was;
 * re-parenting grandchildren and deleting the child is the caller's job (as with vhd-util
 * coalesce). *ret_sectors (may be NULL) gets the number of sectors copied. */
int vhd_coalesce(const char *child_path, uint64_t *ret_sectors);

/* Points the differencing disk child_path at a new parent (vhd-util modify -p): rewrites the
 * parent id, time stamp and name, and the locators in their existing slots (-ENOSPC, with
 * nothing changed, if the new relative path does not fit). The new parent should hold the same
 * data as the old one for every sector the child does not (the caller's concern, e.g. after
 * coalesce). */
int vhd_set_parent(const char *child_path, const char *parent_path);

enum vhd_check_flags {
    /* Do not open and verify the ancestors. */
    VHD_CHECK_NO_PARENT = 1 << 0,
};
/* Validates the structure of the VHD at path with vhd-util check's rules, and a few more:
 * both footers (cookie, checksum, features, version, type, time stamp, geometry for creator
 * "tap", reserved bytes, uuid, and equal copies), header (cookie, checksum, offsets, reserved
 * fields, parent fields zero on dynamic disks), BAT entries (inside the file, after all
 * metadata, not overlapping each other or the footer), batmap (version, offset, size, checksum,
 * a set bit only for an allocated block with a full bitmap), locators (codes, no duplicates,
 * bounds, naming the header's parent name), and, unless VHD_CHECK_NO_PARENT, each ancestor
 * in turn (found, same uuid, valid). Returns 0 if valid, -EBADMSG if not (then *ret_problem,
 * if not NULL, gets a caller-frees description of the first problem found), or another
 * negative errno if the file could not be read. */
int vhd_check(const char *path, unsigned flags, char **ret_problem);

/* Writes the whole virtual disk of v to fd from its current position onward. If fd is a regular
 * file, all-zero 4 KiB pages are left as holes and the file is truncated to the final size;
 * otherwise (pipe, socket, block device) zeros are written. */
int vhd_export_raw(vhd *v, int fd);
/* Reads raw bytes from fd (to EOF) into v from offset 0. All-zero blocks are not written where
 * the disk already reads zeros, so an empty dynamic disk stays sparse. Input longer than the
 * virtual size fails with -EFBIG (after writing what fits); a final partial sector is padded
 * with zeros. */
int vhd_import_raw(vhd *v, int fd);

struct vhd_extent {
    uint64_t start;  /* virtual byte offset */
    uint64_t length; /* bytes */
    /* Which file holds the blocks: -1 none (reads zeros), 0 the leaf, n the nth ancestor. A
     * block of a differencing disk counts as held by the first file that allocated it, even if
     * its bitmap leaves some sectors to the ancestors. */
    int depth;
    /* File offset of the first data byte in that file, or -1 when not applicable. Adjacent
     * blocks are merged only when their file offsets are contiguous too. */
    int64_t file_offset;
};
/* Returns the allocation map of v at block granularity (whole chain, or the leaf alone when v was
 * opened with VHD_OPEN_NO_PARENT), as a caller-frees array of extents covering the virtual size
 * in order. */
int vhd_map(vhd *v, struct vhd_extent **ret, size_t *ret_n);
