/* Storage repositories: SR drivers behind one function table, as XCP's SM drivers.
 *
 * A driver turns a directory (device_config:location) into an SR: `file` keeps one
 * <vdi-uuid>.vhd per VDI (thin, dynamic/differencing VHDs as blktap writes them; snapshot and
 * clone turn the old leaf into a hidden read-only parent as SM's FileSR does), `iso` is a
 * read-only library of the .iso files of a directory (raw images). This layer knows
 * nothing of the DB or the API: xapid keeps the records and maps the negative errnos below to
 * XenAPI errors.
 *
 * Errors (negative errno):
 *   -EINVAL    bad argument (size, uuid, path)
 *   -ENOENT    SR directory or VDI missing
 *   -EEXIST    sr_create on a directory that exists and is not empty, or a VDI that exists
 *   -EBUSY     SR attached by another process, VDI attached, or VDI with children
 *   -ENOTEMPTY sr_delete while visible VDIs remain
 *   -EPERM     the VDI is a hidden base copy (only the GC touches those)
 *   -EROFS     a write operation on a read-only SR (iso), or a read-write attach there
 *   -ENOSPC    not enough free space for the operation (checked before writing)
 *   -ENOTSUP   shrinking, or an operation the driver does not implement
 *   -ELOOP     snapshot chain too long (SR_MAX_CHAIN_DEPTH)
 *   other      errors of the VHD library or the system, passed through
 *
 * Threads: an sr handle may be used from several threads; operations on one SR are
 * serialised by the handle (and, across processes, by an flock the handle holds while
 * attached, so two daemons never drive one SR), except the long data copies: a copy holds its
 * VDIs through attach counts, and the collector's merges fence only the chain they rewrite
 * (see sr_gc), so neither blocks the SR's other chains.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* SM's MAX_CHAIN_SIZE: snapshot and clone refuse a chain this deep. */
#define SR_MAX_CHAIN_DEPTH 30
/* SM's VHD size rules: rounded up to 2 MiB, at least 2 MiB, at most 2040 GiB. */
#define SR_VHD_SIZE_ROUND (2ull << 20)
#define SR_VHD_MAX_SIZE   (2040ull << 30)

typedef struct sr sr;

/* One VDI as the driver finds it on disk. */
struct sr_vdi_info {
    char location[256];   /* XenAPI VDI.location: the driver's name of the VDI */
    char uuid[37];        /* the VDI uuid where the driver fixes it (file: = location), else "" */
    char parent_uuid[37]; /* location of the parent node, "" for a root */
    uint64_t virtual_size;
    uint64_t physical_size; /* bytes used on the SR (file size) */
    bool hidden;            /* a base copy: read-only, owned by the GC */
    bool read_only;         /* hidden, or on a read-only SR */
    unsigned children;      /* number of nodes whose parent this is (scan only) */
    const char *format;     /* static: "vhd", "raw" */
};

struct sr_stat {
    uint64_t physical_size;        /* filesystem size */
    uint64_t physical_utilisation; /* filesystem used */
    uint64_t free;                 /* bytes available to us */
};

/* What a VDI attach gives the VMM's block backend. */
struct sr_backend {
    char *path;         /* caller-frees: the leaf file */
    const char *format; /* static: "vhd" or "raw" */
    bool read_only;
};
void sr_backend_clear(struct sr_backend *b);

struct sr_gc_stats {
    unsigned removed;   /* garbage nodes unlinked */
    unsigned coalesced; /* nodes merged into their parent */
};

/* The driver table. Every entry returns 0 or a negative errno; entries a driver lacks are
 * NULL (the sr_* wrappers then return -ENOTSUP). `s` is an attached SR. */
typedef struct sr_driver {
    const char *type;         /* SR.type: "file", "iso" */
    const char *content_type; /* default SR.content_type */
    const char *suffix;       /* file name of a VDI: <location><suffix> */
    bool read_only;
    /* Where an SR lives. NULL: device_config:location is its directory. Otherwise the
     * device_config key naming a directory that holds one <sr-uuid>/ per SR, as an NFS SR
     * keeps <serverpath>/<sr-uuid>, so that several SRs (and every pool host) share it. */
    const char *parent_key;
    int (*sr_create)(const char *location);
    int (*sr_delete)(const char *location);
    int (*scan)(sr *s, struct sr_vdi_info **ret, size_t *ret_n);
    int (*vdi_create)(sr *s, uint64_t size, struct sr_vdi_info *ret);
    int (*vdi_delete)(sr *s, const char *location);
    int (*vdi_resize)(sr *s, const char *location, uint64_t size);
    /* Makes the VDI's current data a hidden parent and gives back the new leaf (ret_new);
     * the VDI itself stays a writable leaf on top. ret_base (may be NULL) gets the base. */
    int (*vdi_snapshot)(sr *s, const char *location, struct sr_vdi_info *ret_new,
                        struct sr_vdi_info *ret_base);
    int (*vdi_info)(sr *s, const char *location, struct sr_vdi_info *ret);
    int (*gc)(sr *s, struct sr_gc_stats *ret);
} sr_driver;

/* The driver for an SR type, or NULL. */
const sr_driver *sr_driver_lookup(const char *type);
/* NULL-terminated list of the drivers (SR.get_supported_types). */
extern const sr_driver *const sr_drivers[];

/* SR.probe: the SRs of driver d found in the subdirectories of dir (named by an SR uuid,
 * holding the SR's lock file or VDI files), as a caller-frees array of *ret_n uuids. */
int sr_probe(const sr_driver *d, const char *dir, char (**ret)[37], size_t *ret_n);

/* Formats storage for a new SR at location (file: created with mode 0700 if missing, must be
 * empty; iso: an existing directory, left as it is). */
int sr_create(const sr_driver *d, const char *location);
/* Erases an SR that is not attached: runs the GC, refuses (-ENOTEMPTY) while visible VDIs
 * remain, then removes what is left and the directory. A read-only SR's files are kept. */
int sr_delete(const sr_driver *d, const char *location);

/* Attaches (PBD.plug): checks the location and takes the SR's lock. *ret owns the handle;
 * sr_detach releases it (NULL is fine). -EBUSY if another process has it attached. */
int sr_attach(const sr_driver *d, const char *location, sr **ret);
void sr_detach(sr *s);
static inline void sr_freep(sr **s)
{
    sr_detach(*s);
}
const sr_driver *sr_get_driver(const sr *s);
/* Borrowed directory of the SR. */
const char *sr_location(const sr *s);
/* Filesystem figures of the SR (statvfs). */
int sr_stat(sr *s, struct sr_stat *ret);

/* Every VDI on disk, hidden nodes included, with parent links and child counts; hidden
 * leaves (garbage the GC has not removed yet) are left out. *ret is caller-frees. */
int sr_scan(sr *s, struct sr_vdi_info **ret, size_t *ret_n);
/* Whether the VDI's file exists (even one scan cannot read, as while the GC writes it). */
bool sr_vdi_exists(sr *s, const char *location);
/* One VDI by location (no child count). Locations never contain '/' nor start with '.'. */
int sr_vdi_info(sr *s, const char *location, struct sr_vdi_info *ret);
/* Rounds a requested size as SM does; -EINVAL below 0 or above SR_VHD_MAX_SIZE. */
int sr_round_size(int64_t requested, uint64_t *ret);
/* A new empty VDI of size bytes (rounded), with a new uuid (= its location). */
int sr_vdi_create(sr *s, uint64_t size, struct sr_vdi_info *ret);
/* Deletes a leaf VDI (-EBUSY while attached or with children, -EPERM for a base copy). The
 * hidden nodes this leaves are the GC's (sr_gc). */
int sr_vdi_delete(sr *s, const char *location);
/* Grows a detached VDI (-EBUSY while attached, -ENOTSUP to shrink). */
int sr_vdi_resize(sr *s, const char *location, uint64_t size);
/* Snapshot and clone (the same tree operation; XenAPI tells them apart by is_a_snapshot). */
int sr_vdi_snapshot(sr *s, const char *location, struct sr_vdi_info *ret_new,
                    struct sr_vdi_info *ret_base);
/* A full, independent copy of src's VDI (VHD chain, or raw image such as an ISO) into a new
 * VDI of dst (may be the same SR): only allocated, non-zero data is written. -ENOSPC when dst lacks
 * the room the source uses. The SR mutexes are not held during the data copy: both VDIs are held
 * through the attach protocol meanwhile. */
int sr_vdi_copy(sr *src, const char *location, sr *dst, struct sr_vdi_info *ret);
/* Copies src's VDI into the existing VDI dst_location of dst (XenAPI's VDI.copy into_vdi),
 * so that dst reads what src reads over src's virtual size (dst's data beyond stays). With
 * base_sr (and base_location), dst is taken to hold base's data already and only the 2 MiB
 * pieces where src and base differ are written (base_vdi); without, dst's own data is
 * compared, so what it already reads is not rewritten. -EFBIG when dst is smaller than src,
 * -EBUSY while dst is attached, -EROFS when dst is read-only, -EPERM for a base copy. No SR
 * lock is held during the copy (each VDI is held through the attach protocol meanwhile). */
int sr_vdi_copy_into(sr *src, const char *location, sr *base_sr, const char *base_location, sr *dst,
                     const char *dst_location);
/* Import staging: a new empty differencing VHD on top of the VDI's leaf, outside the SR's
 * namespace (never scanned; removed by the next attach should the process die), that takes an
 * upload while the VDI keeps its data. The caller must hold a read-write attach of the VDI
 * (-EINVAL otherwise) until commit or abort. *ret_path is caller-frees. */
int sr_vdi_stage(sr *s, const char *location, char **ret_path);
/* Makes the staged VHD the VDI's leaf in one rename: the old leaf becomes its hidden parent
 * (journalled as a snapshot: after a crash the VDI is either all old or all new), which the
 * GC merges back once the VDI is detached. An empty stage is just dropped. On failure the VDI
 * is as it was and the stage is gone. */
int sr_vdi_stage_commit(sr *s, const char *location);
/* Drops the staged VHD; the VDI is untouched. */
void sr_vdi_stage_abort(sr *s, const char *location);
/* Attach for I/O: *ret gets the leaf to open; while attached, delete and resize refuse and
 * the GC does not rewrite the leaf. Each attach needs one detach. */
int sr_vdi_attach(sr *s, const char *location, bool rw, struct sr_backend *ret);
int sr_vdi_detach(sr *s, const char *location);
bool sr_vdi_attached(sr *s, const char *location);
/* Returns once no merge of the collector involves the VDI's chain (see sr_gc): for a caller
 * that holds a lock of its own across the next operation and would rather not hold it while
 * that operation waits (the operations wait by themselves too). */
void sr_vdi_wait_chain(sr *s, const char *location);
/* Garbage collection: unlinks hidden nodes without children, coalesces a hidden node that is
 * its parent's only child into that parent (re-parenting its children), and merges a detached
 * leaf that is the only child of a hidden parent into it, so deleting snapshots returns each
 * VDI to a short chain. Idempotent; each step leaves readable files if interrupted. Meant for
 * a background thread: the long data copy of an inner coalesce runs without blocking the SR's
 * other operations, and the leaves VMs use stay usable (no node in the chain of an attached VDI
 * is merged or re-parented, as the VMM cannot yet reopen a chain). -EALREADY if another sr_gc
 * on this handle is running. While a merge copies data (with the SR mutex released), only the
 * operations on the subtree being merged wait: other chains' snapshots, attaches and copies
 * go on. */
int sr_gc(sr *s, struct sr_gc_stats *ret);
