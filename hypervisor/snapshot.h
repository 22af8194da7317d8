/* Save and restore of a whole nuvem-vmm VM to one file (the basis of VM.suspend/resume).
 *
 * File layout (little-endian; see README.md "Save and restore"):
 *   header   32 bytes: magic "NUVEMSNP", u32 version, u32 header size, u64 creation time,
 *            u32 flags (0), u32 CRC-32C of the 28 bytes before it
 *   sections each a 24-byte section header {u32 type, u32 index, u64 length, u32 CRC-32C of
 *            the payload, u32 CRC-32C of the 20 bytes before it} and `length` payload bytes:
 *            MACHINE, VCPU (one per vCPU: TLV records of KVM state), IRQCHIP, PIT, CLOCK,
 *            PLATFORM, SERIAL, VIRTIO (one per device), RAM (chunks), then END.
 *   RAM      one section per chunk of up to SNAP_CHUNK_PAGES pages: {u64 byte offset in guest
 *            RAM, u32 pages, u32 0}, a bitmap of the non-zero pages (rounded up to 8 bytes),
 *            then those pages in order. All-zero pages are not written.
 * A file without END is truncated; any CRC mismatch, unknown version or magic is refused.
 *
 * The format helpers (CRC, headers, page bitmaps, the byte writer/reader) are pure so that
 * unit tests drive them; snapshot_save/snapshot_restore_* work on a built machine. */
#pragma once

#include "err.h"
#include "sbuf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SNAP_MAGIC          "NUVEMSNP"
#define SNAP_VERSION        1
#define SNAP_HEADER_SIZE    32
#define SNAP_SECTION_SIZE   24
#define SNAP_PAGE           4096
#define SNAP_CHUNK_PAGES    1024               /* 4 MiB of guest RAM per RAM section */
#define SNAP_MAX_STATE_SECT (16 * 1024 * 1024) /* bound on all sections but RAM */

enum snap_section_type {
    SNAP_SEC_MACHINE = 1,
    SNAP_SEC_VCPU = 2,
    SNAP_SEC_IRQCHIP = 3,
    SNAP_SEC_PIT = 4,
    SNAP_SEC_CLOCK = 5,
    SNAP_SEC_PLATFORM = 6,
    SNAP_SEC_SERIAL = 7,
    SNAP_SEC_VIRTIO = 8,
    SNAP_SEC_RAM = 9,
    SNAP_SEC_END = 0x454e44, /* "END" */
};

/* CRC-32C (Castagnoli), SSE4.2 instruction where the CPU has it. crc: 0 to start, or the
 * previous result to continue. */
uint32_t snap_crc32c(uint32_t crc, const void *data, size_t len);

typedef struct snap_section {
    uint32_t type, index;
    uint64_t length;
    uint32_t crc; /* of the payload */
} snap_section;

/* Encodes the file header / a section header (fills out[SNAP_HEADER_SIZE] /
 * out[SNAP_SECTION_SIZE]). */
void snap_header_encode(uint8_t out[SNAP_HEADER_SIZE], uint64_t created);
void snap_section_encode(uint8_t out[SNAP_SECTION_SIZE], const snap_section *s);
/* Checks a file header / decodes a section header. Return NULL, or a static message saying
 * what is wrong ("not a nuvem-vmm save file", "unsupported version", "header checksum"). */
const char *snap_header_check(const uint8_t in[SNAP_HEADER_SIZE]);
const char *snap_section_decode(const uint8_t in[SNAP_SECTION_SIZE], snap_section *ret);

/* Whether a page (SNAP_PAGE bytes) is all zero. */
bool snap_page_is_zero(const uint8_t *page);
/* Fills bitmap (npages bits, bit i of byte i/8 = page i non-zero; (npages+63)/64*8 bytes,
 * the tail zeroed) for the pages at ram; returns how many pages are non-zero. pagemap (may
 * be NULL): the pages' /proc/self/pagemap entries; a page neither present nor swapped out
 * (bits 63, 62) is zero without being read (no fault). */
size_t snap_page_bitmap(const uint8_t *ram, size_t npages, const uint64_t *pagemap,
                        uint8_t *bitmap);
static inline size_t snap_bitmap_bytes(size_t npages)
{
    return (npages + 63) / 64 * 8;
}
/* Checks a RAM chunk header {offset, pages, 0} + bitmap against the guest RAM size and the
 * section length. Returns NULL or a static message; fills *ret_offset, *ret_pages. */
const char *snap_ram_chunk_check(const uint8_t *payload, size_t avail, uint64_t section_len,
                                 uint64_t ram_size, uint64_t *ret_offset, uint32_t *ret_pages);

/* Little-endian writer (into an sbuf) and bounds-checked reader used by every section. */
static inline void snap_put(sbuf *b, const void *p, size_t n)
{
    sbuf_append(b, (const char *)p, n);
}
static inline void snap_put_u8(sbuf *b, uint8_t v)
{
    snap_put(b, &v, 1);
}
static inline void snap_put_u16(sbuf *b, uint16_t v)
{
    snap_put(b, &v, 2);
}
static inline void snap_put_u32(sbuf *b, uint32_t v)
{
    snap_put(b, &v, 4);
}
static inline void snap_put_u64(sbuf *b, uint64_t v)
{
    snap_put(b, &v, 8);
}

typedef struct snap_reader {
    const uint8_t *p;
    size_t len, off;
    bool bad; /* a read ran past the end */
} snap_reader;

static inline bool snap_get(snap_reader *r, void *out, size_t n)
{
    if (r->bad || n > r->len - r->off) {
        r->bad = true;
        memset(out, 0, n);
        return false;
    }
    memcpy(out, r->p + r->off, n);
    r->off += n;
    return true;
}
static inline uint8_t snap_get_u8(snap_reader *r)
{
    uint8_t v;
    snap_get(r, &v, 1);
    return v;
}
static inline uint16_t snap_get_u16(snap_reader *r)
{
    uint16_t v;
    snap_get(r, &v, 2);
    return v;
}
static inline uint32_t snap_get_u32(snap_reader *r)
{
    uint32_t v;
    snap_get(r, &v, 4);
    return v;
}
static inline uint64_t snap_get_u64(snap_reader *r)
{
    uint64_t v;
    snap_get(r, &v, 8);
    return v;
}

struct vmm;

/* Writes the whole state of v to fd (a new, empty file). The caller has paused every vCPU;
 * device models are quiesced here (in-flight disk requests complete first) and held until
 * the RAM is written. Does not fsync. Sets *ret_bytes. Errors: INTERNAL_ERROR [why]. */
xerr *snapshot_save(struct vmm *v, int fd, uint64_t *ret_bytes);

typedef struct snapshot_file snapshot_file;
/* Opens a save file and checks its header and machine section against v's config (memory
 * size, vCPUs, the device list); before the machine is created. Errors: INVALID_VALUE
 * [restore, why]. *ret is the caller's (snapshot_file_free). */
xerr *snapshot_open(const char *path, struct vmm *v, snapshot_file **ret);
/* Reads the rest into the created (not started) machine: RAM, then, once every checksum
 * held, vCPUs, irqchip, PIT, clock, platform, serial and devices. Errors: INVALID_VALUE
 * [restore, why] (the machine must then be destroyed, never run). */
xerr *snapshot_restore(snapshot_file *f, struct vmm *v);
void snapshot_file_free(snapshot_file *f);
DEFINE_FREEP(snapshot_file)
