/* Save and restore of a whole VM to one file (see snapshot.h for the layout). Saving streams:
 * the state sections are small, and guest RAM goes out chunk by chunk straight from the
 * guest mapping (writev), all-zero pages left out. Restoring reads guest RAM straight into
 * the new machine's mapping, keeps the small state sections until every checksum has held,
 * and only then loads them into KVM, in the order KVM needs. */
#define _GNU_SOURCE
#include "snapshot.h"
#include "log.h"
#include "mem.h"
#include "platform.h"
#include "vmm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- CRC-32C ---- */

static uint32_t crc_table[256];
static bool crc_hw;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[i] = c;
    }
    crc_hw = __builtin_cpu_supports("sse4.2");
}

__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
    }
    c = (uint32_t)c64;
    for (; n; p++, n--)
        c = __builtin_ia32_crc32qi(c, *p);
    return c;
}

uint32_t snap_crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    uint32_t c = ~crc;
    if (crc_hw)
        return ~crc_sse42(c, p, len);
    for (size_t i = 0; i < len; i++)
        c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return ~c;
}

/* ---- headers, page bitmaps ---- */

void snap_header_encode(uint8_t out[SNAP_HEADER_SIZE], uint64_t created)
{
    uint32_t version = SNAP_VERSION, size = SNAP_HEADER_SIZE, flags = 0;
    memcpy(out, SNAP_MAGIC, 8);
    memcpy(out + 8, &version, 4);
    memcpy(out + 12, &size, 4);
    memcpy(out + 16, &created, 8);
    memcpy(out + 24, &flags, 4);
    uint32_t crc = snap_crc32c(0, out, 28);
    memcpy(out + 28, &crc, 4);
}

const char *snap_header_check(const uint8_t in[SNAP_HEADER_SIZE])
{
    if (memcmp(in, SNAP_MAGIC, 8) != 0)
        return "not a nuvem-vmm save file (bad magic)";
    uint32_t version, size, flags, crc;
    memcpy(&version, in + 8, 4);
    memcpy(&size, in + 12, 4);
    memcpy(&flags, in + 24, 4);
    memcpy(&crc, in + 28, 4);
    if (crc != snap_crc32c(0, in, 28))
        return "header checksum mismatch";
    if (version != SNAP_VERSION)
        return "unsupported save file version";
    if (size != SNAP_HEADER_SIZE || flags != 0)
        return "unsupported header";
    return NULL;
}

void snap_section_encode(uint8_t out[SNAP_SECTION_SIZE], const snap_section *s)
{
    memcpy(out, &s->type, 4);
    memcpy(out + 4, &s->index, 4);
    memcpy(out + 8, &s->length, 8);
    memcpy(out + 16, &s->crc, 4);
    uint32_t h = snap_crc32c(0, out, 20);
    memcpy(out + 20, &h, 4);
}

const char *snap_section_decode(const uint8_t in[SNAP_SECTION_SIZE], snap_section *ret)
{
    uint32_t h;
    memcpy(&h, in + 20, 4);
    if (h != snap_crc32c(0, in, 20))
        return "section header checksum mismatch";
    memcpy(&ret->type, in, 4);
    memcpy(&ret->index, in + 4, 4);
    memcpy(&ret->length, in + 8, 8);
    memcpy(&ret->crc, in + 16, 4);
    return NULL;
}

bool snap_page_is_zero(const uint8_t *page)
{
    const uint64_t *w = (const uint64_t *)(const void *)page;
    for (size_t i = 0; i < SNAP_PAGE / 8; i += 8) {
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
            return false;
    }
    return true;
}

size_t snap_page_bitmap(const uint8_t *ram, size_t npages, const uint64_t *pagemap, uint8_t *bitmap)
{
    memset(bitmap, 0, snap_bitmap_bytes(npages));
    size_t n = 0;
    for (size_t i = 0; i < npages; i++) {
        if (pagemap && !(pagemap[i] >> 62))
            continue; /* never touched (or given back): reads as zero */
        if (!snap_page_is_zero(ram + i * SNAP_PAGE)) {
            bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
            n++;
        }
    }
    return n;
}

const char *snap_ram_chunk_check(const uint8_t *payload, size_t avail, uint64_t section_len,
                                 uint64_t ram_size, uint64_t *ret_offset, uint32_t *ret_pages)
{
    if (avail < 16)
        return "RAM chunk too short";
    uint64_t off;
    uint32_t pages, zero;
    memcpy(&off, payload, 8);
    memcpy(&pages, payload + 8, 4);
    memcpy(&zero, payload + 12, 4);
    if (zero || !pages || pages > SNAP_CHUNK_PAGES || off % SNAP_PAGE || off > ram_size ||
        (uint64_t)pages * SNAP_PAGE > ram_size - off)
        return "RAM chunk outside guest memory";
    size_t bm = snap_bitmap_bytes(pages);
    if (avail < 16 + bm)
        return "RAM chunk too short";
    const uint8_t *bitmap = payload + 16;
    uint64_t set = 0;
    for (size_t i = 0; i < bm * 8; i++) {
        if (bitmap[i / 8] & (1u << (i % 8))) {
            if (i >= pages)
                return "RAM chunk bitmap has bits past its end";
            set++;
        }
    }
    if (section_len != 16 + bm + set * SNAP_PAGE)
        return "RAM chunk length does not match its bitmap";
    *ret_offset = off;
    *ret_pages = pages;
    return NULL;
}

/* ---- saving ---- */

enum vcpu_tag {
    VT_REGS = 1,
    VT_SREGS,
    VT_FPU,
    VT_XSAVE,
    VT_XCRS,
    VT_MSRS,
    VT_LAPIC,
    VT_MPSTATE,
    VT_EVENTS,
    VT_DEBUGREGS,
};

#define MSR_IA32_TSC          0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MAX_MSRS              256

typedef struct writer {
    int fd;
    uint64_t bytes;
    uint32_t nsections;
} writer;

/* Writes the iovecs whole (short writes continue); -errno on failure. */
static int write_iov(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n > IOV_MAX ? IOV_MAX : n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0) {
            while (n > 0 && !iov->iov_len)
                iov++, n--;
            if (n > 0)
                return -EIO; /* no progress: never spin */
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0 && w > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static xerr *write_err(int r)
{
    log_err("save: write: %s", strerror(-r));
    return xerr_internal("save: write failed: %s", strerror(-r));
}

static xerr *put_section(writer *w, uint32_t type, uint32_t index, const void *data, size_t len)
{
    snap_section s = {
        .type = type, .index = index, .length = len, .crc = snap_crc32c(0, data, len)};
    uint8_t hdr[SNAP_SECTION_SIZE];
    snap_section_encode(hdr, &s);
    struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)data, len}};
    int r = write_iov(w->fd, iov, len ? 2 : 1);
    if (r < 0)
        return write_err(r);
    w->bytes += sizeof(hdr) + len;
    w->nsections++;
    return NULL;
}

static void put_tlv(sbuf *b, uint32_t tag, const void *data, size_t len)
{
    snap_put_u32(b, tag);
    snap_put_u32(b, (uint32_t)len);
    snap_put(b, data, len);
}

static xerr *kvm_err(const char *what, unsigned id)
{
    int e = errno;
    log_err("%s (vcpu %u): %s", what, id, strerror(e));
    return xerr_internal("%s: %s", what, strerror(e));
}

/* The MSRs KVM can save (KVM_GET_MSR_INDEX_LIST): caller-frees, *ret_n entries. */
static uint32_t *msr_index_list(vmm *v, uint32_t *ret_n)
{
    struct kvm_msr_list probe = {.nmsrs = 0};
    ioctl(v->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe); /* E2BIG; sets nmsrs */
    uint32_t n = probe.nmsrs < MAX_MSRS ? probe.nmsrs : MAX_MSRS;
    struct kvm_msr_list *l = xcalloc(1, sizeof(*l) + n * sizeof(uint32_t));
    l->nmsrs = n;
    uint32_t *out = xcalloc(n ? n : 1, sizeof(uint32_t));
    if (n && ioctl(v->kvm_fd, KVM_GET_MSR_INDEX_LIST, l) == 0) {
        memcpy(out, l->indices, l->nmsrs * sizeof(uint32_t));
        *ret_n = l->nmsrs;
    } else {
        *ret_n = 0;
    }
    free(l);
    return out;
}

static xerr *save_msrs(vcpu *c, const uint32_t *idx, uint32_t n, sbuf *out)
{
    struct kvm_msrs *m = xcalloc(1, sizeof(*m) + (n ? n : 1) * sizeof(struct kvm_msr_entry));
    sbuf b = SBUF_INIT;
    /* KVM_GET_MSRS stops at the first MSR it cannot read: skip that one and go on. */
    for (uint32_t start = 0; start < n;) {
        m->nmsrs = n - start;
        for (uint32_t i = 0; i < m->nmsrs; i++)
            m->entries[i] = (struct kvm_msr_entry){.index = idx[start + i]};
        int r = ioctl(c->fd, KVM_GET_MSRS, m);
        if (r < 0) {
            free(m);
            sbuf_release(&b);
            return kvm_err("KVM_GET_MSRS", c->id);
        }
        for (int i = 0; i < r; i++) {
            snap_put_u32(&b, m->entries[i].index);
            snap_put_u32(&b, 0);
            snap_put_u64(&b, m->entries[i].data);
        }
        if ((uint32_t)r < m->nmsrs)
            log_debug("save: MSR 0x%x not readable; skipped", idx[start + (uint32_t)r]);
        start += (uint32_t)r + 1;
    }
    put_tlv(out, VT_MSRS, b.data, b.len);
    sbuf_release(&b);
    free(m);
    return NULL;
}

static xerr *save_vcpu(vmm *v, vcpu *c, const uint32_t *msrs, uint32_t nmsrs, sbuf *out)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xcrs xcrs;
    struct kvm_lapic_state lapic;
    struct kvm_mp_state mp;
    struct kvm_vcpu_events ev;
    struct kvm_debugregs dr;
    if (ioctl(c->fd, KVM_GET_REGS, &regs) < 0)
        return kvm_err("KVM_GET_REGS", c->id);
    put_tlv(out, VT_REGS, &regs, sizeof(regs));
    if (ioctl(c->fd, KVM_GET_SREGS, &sregs) < 0)
        return kvm_err("KVM_GET_SREGS", c->id);
    put_tlv(out, VT_SREGS, &sregs, sizeof(sregs));
    int xsave_size = ioctl(v->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2); /* per VM */
    if (ioctl(v->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
        size_t sz = xsave_size > (int)sizeof(struct kvm_xsave) ? (size_t)xsave_size
                                                               : sizeof(struct kvm_xsave);
        AUTOFREE struct kvm_xsave *xs = xcalloc(1, sz);
        unsigned long op = xsave_size > 0 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;
        if (ioctl(c->fd, op, xs) < 0)
            return kvm_err("KVM_GET_XSAVE", c->id);
        put_tlv(out, VT_XSAVE, xs, sz);
    } else {
        struct kvm_fpu fpu;
        if (ioctl(c->fd, KVM_GET_FPU, &fpu) < 0)
            return kvm_err("KVM_GET_FPU", c->id);
        put_tlv(out, VT_FPU, &fpu, sizeof(fpu));
    }
    if (ioctl(v->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0) {
        if (ioctl(c->fd, KVM_GET_XCRS, &xcrs) < 0)
            return kvm_err("KVM_GET_XCRS", c->id);
        put_tlv(out, VT_XCRS, &xcrs, sizeof(xcrs));
    }
    xerr *e = save_msrs(c, msrs, nmsrs, out);
    if (e)
        return e;
    if (ioctl(c->fd, KVM_GET_MP_STATE, &mp) < 0)
        return kvm_err("KVM_GET_MP_STATE", c->id);
    put_tlv(out, VT_MPSTATE, &mp, sizeof(mp));
    if (ioctl(c->fd, KVM_GET_LAPIC, &lapic) < 0)
        return kvm_err("KVM_GET_LAPIC", c->id);
    put_tlv(out, VT_LAPIC, &lapic, sizeof(lapic));
    if (ioctl(c->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
        return kvm_err("KVM_GET_VCPU_EVENTS", c->id);
    put_tlv(out, VT_EVENTS, &ev, sizeof(ev));
    if (ioctl(v->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DEBUGREGS) > 0) {
        if (ioctl(c->fd, KVM_GET_DEBUGREGS, &dr) < 0)
            return kvm_err("KVM_GET_DEBUGREGS", c->id);
        put_tlv(out, VT_DEBUGREGS, &dr, sizeof(dr));
    }
    return NULL;
}

static void save_serial(serial *s, sbuf *out)
{
    AUTOFREE serial_state *st = xmalloc(sizeof(*st));
    serial_get_state(s, st);
    snap_put_u8(out, st->ier);
    snap_put_u8(out, st->lcr);
    snap_put_u8(out, st->mcr);
    snap_put_u8(out, st->scr);
    snap_put_u8(out, st->dll);
    snap_put_u8(out, st->dlm);
    snap_put_u8(out, st->fcr);
    snap_put_u8(out, st->thre_pending);
    snap_put_u32(out, st->in_len);
    snap_put(out, st->in, st->in_len);
}

/* The next run [*start, *end) of set bits of a page bitmap of n bits at or after *start; false
 * when none is left. */
static bool bitmap_next_run(const uint8_t *bm, uint32_t n, uint32_t *start, uint32_t *end)
{
    uint32_t i = *start;
    while (i < n && !(bm[i / 8] & (1u << (i % 8))))
        i++;
    if (i >= n)
        return false;
    uint32_t j = i;
    while (j < n && (bm[j / 8] & (1u << (j % 8))))
        j++;
    *start = i;
    *end = j;
    return true;
}

/* Guest RAM, chunk by chunk: bitmap of the non-zero pages, then those pages, written from
 * the guest mapping itself (runs of consecutive pages as one iovec). /proc/self/pagemap
 * tells which pages were never touched: those are skipped without faulting them in. */
static xerr *save_ram(writer *w, const uint8_t *ram, uint64_t size)
{
    size_t bm_max = snap_bitmap_bytes(SNAP_CHUNK_PAGES);
    AUTOFREE uint8_t *chunk = xmalloc(16 + bm_max);
    AUTOFREE struct iovec *iov = xcalloc(2 + SNAP_CHUNK_PAGES, sizeof(*iov));
    AUTOFREE uint64_t *pm = xmalloc(SNAP_CHUNK_PAGES * sizeof(uint64_t));
    AUTOCLOSE int pm_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pm_fd < 0)
        log_debug("save: /proc/self/pagemap: %s; every page is read", strerror(errno));
    for (uint64_t off = 0; off < size; off += (uint64_t)SNAP_CHUNK_PAGES * SNAP_PAGE) {
        uint64_t left = (size - off) / SNAP_PAGE;
        uint32_t pages = left < SNAP_CHUNK_PAGES ? (uint32_t)left : SNAP_CHUNK_PAGES;
        uint8_t *bitmap = chunk + 16;
        size_t bm = snap_bitmap_bytes(pages);
        off_t pm_off = (off_t)(((uintptr_t)ram + off) / SNAP_PAGE * sizeof(uint64_t));
        size_t pm_len = pages * sizeof(uint64_t);
        bool have_pm = pm_fd >= 0 && pread(pm_fd, pm, pm_len, pm_off) == (ssize_t)pm_len;
        size_t nz = snap_page_bitmap(ram + off, pages, have_pm ? pm : NULL, bitmap);
        if (!nz)
            continue; /* an all-zero chunk is simply absent */
        uint32_t zero = 0;
        memcpy(chunk, &off, 8);
        memcpy(chunk + 8, &pages, 4);
        memcpy(chunk + 12, &zero, 4);
        int n = 2;
        iov[1] = (struct iovec){chunk, 16 + bm};
        uint32_t crc = snap_crc32c(0, chunk, 16 + bm);
        for (uint32_t i = 0, j; bitmap_next_run(bitmap, pages, &i, &j); i = j) {
            const uint8_t *p = ram + off + (uint64_t)i * SNAP_PAGE;
            size_t len = (size_t)(j - i) * SNAP_PAGE;
            crc = snap_crc32c(crc, p, len);
            iov[n++] = (struct iovec){(void *)p, len};
        }
        snap_section s = {.type = SNAP_SEC_RAM,
                          .index = (uint32_t)(off / SNAP_PAGE / SNAP_CHUNK_PAGES),
                          .length = 16 + bm + (uint64_t)nz * SNAP_PAGE,
                          .crc = crc};
        uint8_t hdr[SNAP_SECTION_SIZE];
        snap_section_encode(hdr, &s);
        iov[0] = (struct iovec){hdr, sizeof(hdr)};
        int r = write_iov(w->fd, iov, n);
        if (r < 0)
            return write_err(r);
        w->bytes += SNAP_SECTION_SIZE + s.length;
        w->nsections++;
    }
    return NULL;
}

static uint32_t tsc_khz_of(vmm *v)
{
    int khz = v->nvcpus ? ioctl(v->vcpus[0].fd, KVM_GET_TSC_KHZ, 0) : -1;
    return khz > 0 ? (uint32_t)khz : 0;
}

xerr *snapshot_save(vmm *v, int fd, uint64_t *ret_bytes)
{
    if (!v->vcpus || !v->ram)
        return xerr_internal("save: no machine");
    writer w = {.fd = fd};
    xerr *e = NULL;
    sbuf devs[VIRTIO_MAX_DEVICES];
    sbuf b = SBUF_INIT;
    uint32_t nmsrs = 0;
    AUTOFREE uint32_t *msrs = msr_index_list(v, &nmsrs);
    /* Devices first: completing their requests moves the queues, RAM and interrupt state.
     * Their locks stay held until the RAM is out, so nothing changes behind the snapshot. */
    for (unsigned i = 0; i < v->nvdevs; i++) {
        devs[i] = (sbuf)SBUF_INIT;
        pthread_mutex_lock(&v->vdevs[i]->lock);
        virtio_dev_save_locked(v->vdevs[i], &devs[i]);
    }
    uint8_t hdr[SNAP_HEADER_SIZE];
    snap_header_encode(hdr, (uint64_t)time(NULL));
    struct iovec iov = {hdr, sizeof(hdr)};
    int r = write_iov(fd, &iov, 1);
    if (r < 0) {
        e = write_err(r);
        goto out;
    }
    w.bytes = sizeof(hdr);
    /* machine */
    snap_put_u64(&b, v->mem.size);
    snap_put_u32(&b, v->nvcpus);
    snap_put_u32(&b, v->nvdevs);
    for (unsigned i = 0; i < v->nvdevs; i++)
        snap_put_u32(&b, v->vdevs[i]->device_id);
    snap_put_u32(&b, tsc_khz_of(v));
    if ((e = put_section(&w, SNAP_SEC_MACHINE, 0, b.data, b.len)))
        goto out;
    for (unsigned i = 0; i < v->nvcpus; i++) {
        b.len = 0;
        if ((e = save_vcpu(v, &v->vcpus[i], msrs, nmsrs, &b)) ||
            (e = put_section(&w, SNAP_SEC_VCPU, i, b.data, b.len)))
            goto out;
    }
    struct kvm_irqchip chips[3];
    for (unsigned i = 0; i < 3; i++) {
        memset(&chips[i], 0, sizeof(chips[i]));
        chips[i].chip_id = i; /* PIC master, PIC slave, IOAPIC */
        if (ioctl(v->vm_fd, KVM_GET_IRQCHIP, &chips[i]) < 0) {
            e = kvm_err("KVM_GET_IRQCHIP", 0);
            goto out;
        }
    }
    if ((e = put_section(&w, SNAP_SEC_IRQCHIP, 0, chips, sizeof(chips))))
        goto out;
    struct kvm_pit_state2 pit;
    if (ioctl(v->vm_fd, KVM_GET_PIT2, &pit) < 0) {
        e = kvm_err("KVM_GET_PIT2", 0);
        goto out;
    }
    if ((e = put_section(&w, SNAP_SEC_PIT, 0, &pit, sizeof(pit))))
        goto out;
    struct kvm_clock_data clock;
    memset(&clock, 0, sizeof(clock));
    if (ioctl(v->vm_fd, KVM_GET_CLOCK, &clock) < 0) {
        e = kvm_err("KVM_GET_CLOCK", 0);
        goto out;
    }
    if ((e = put_section(&w, SNAP_SEC_CLOCK, 0, &clock, sizeof(clock))))
        goto out;
    b.len = 0;
    pthread_mutex_lock(&v->lock);
    snap_put_u8(&b, v->platform_pending);
    snap_put_u32(&b, v->vcpu_target);
    pthread_mutex_unlock(&v->lock);
    snap_put_u32(&b, atomic_load(&v->vcpus_online));
    if ((e = put_section(&w, SNAP_SEC_PLATFORM, 0, b.data, b.len)))
        goto out;
    b.len = 0;
    save_serial(v->serial, &b);
    if ((e = put_section(&w, SNAP_SEC_SERIAL, 0, b.data, b.len)))
        goto out;
    for (unsigned i = 0; i < v->nvdevs; i++)
        if ((e = put_section(&w, SNAP_SEC_VIRTIO, i, devs[i].data, devs[i].len)))
            goto out;
    if ((e = save_ram(&w, v->ram, v->mem.size)))
        goto out;
    e = put_section(&w, SNAP_SEC_END, w.nsections, NULL, 0);
out:
    for (unsigned i = v->nvdevs; i-- > 0;) {
        pthread_mutex_unlock(&v->vdevs[i]->lock);
        sbuf_release(&devs[i]);
    }
    sbuf_release(&b);
    if (!e)
        *ret_bytes = w.bytes;
    return e;
}

/* ---- restoring ---- */

typedef struct blob {
    uint32_t type, index;
    uint8_t *data;
    size_t len;
} blob;

struct snapshot_file {
    int fd;
    char *path;
    uint64_t ram_size;
    uint32_t tsc_khz; /* of the saving host */
    blob *blobs;
    size_t nblobs;
    uint64_t blob_bytes; /* held in memory: bounded (SNAP_MAX_STATE_SECT in all) */
};

void snapshot_file_free(snapshot_file *f)
{
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    for (size_t i = 0; i < f->nblobs; i++)
        free(f->blobs[i].data);
    free(f->blobs);
    free(f->path);
    free(f);
}

static xerr *bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static xerr *bad(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    AUTOFREE char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    return xerr_new("INVALID_VALUE", "restore", msg);
}

/* Reads exactly n bytes: 0, 1 at the end of the file (a truncated save), or -errno. */
static int read_exact(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return 1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static xerr *read_or_bad(int fd, void *buf, size_t n)
{
    int r = read_exact(fd, buf, n);
    if (r > 0)
        return bad("file is truncated");
    if (r < 0)
        return bad("read: %s", strerror(-r));
    return NULL;
}

static xerr *read_section_header(snapshot_file *f, snap_section *s)
{
    uint8_t h[SNAP_SECTION_SIZE];
    xerr *e = read_or_bad(f->fd, h, sizeof(h));
    if (e)
        return e;
    const char *why = snap_section_decode(h, s);
    return why ? bad("%s", why) : NULL;
}

static xerr *read_payload(snapshot_file *f, const snap_section *s, uint8_t **ret)
{
    if (s->length > SNAP_MAX_STATE_SECT)
        return bad("section %u too large", s->type);
    AUTOFREE uint8_t *p = xmalloc(s->length ? s->length : 1);
    xerr *e = read_or_bad(f->fd, p, s->length);
    if (e)
        return e;
    if (snap_crc32c(0, p, s->length) != s->crc)
        return bad("checksum mismatch in section %u", s->type);
    *ret = TAKE_PTR(p);
    return NULL;
}

xerr *snapshot_open(const char *path, vmm *v, snapshot_file **ret)
{
    AUTO(snapshot_file) *f = xcalloc(1, sizeof(*f));
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0)
        return bad("cannot open %s: %s", path, strerror(errno));
    f->path = xstrdup(path);
    uint8_t h[SNAP_HEADER_SIZE];
    xerr *e = read_or_bad(f->fd, h, sizeof(h));
    if (e)
        return e;
    const char *why = snap_header_check(h);
    if (why)
        return bad("%s", why);
    snap_section s = {0};
    if ((e = read_section_header(f, &s)))
        return e;
    if (s.type != SNAP_SEC_MACHINE)
        return bad("machine section missing");
    AUTOFREE uint8_t *p = NULL;
    if ((e = read_payload(f, &s, &p)))
        return e;
    snap_reader r = {.p = p, .len = s.length};
    uint64_t mem = snap_get_u64(&r);
    uint32_t nvcpus = snap_get_u32(&r), ndevs = snap_get_u32(&r);
    uint64_t want_mem = v->cfg->memory_mib << 20;
    if (r.bad)
        return bad("machine section too short");
    if (mem != want_mem)
        return bad("memory size differs: saved %llu MiB, config %llu MiB",
                   (unsigned long long)(mem >> 20), (unsigned long long)v->cfg->memory_mib);
    if (nvcpus != v->nvcpus)
        return bad("vCPU count differs: saved %u, config %u", nvcpus, v->nvcpus);
    if (ndevs != v->nvdevs)
        return bad("device list differs: saved %u devices, config %u", ndevs, v->nvdevs);
    for (unsigned i = 0; i < ndevs; i++) {
        uint32_t id = snap_get_u32(&r);
        if (!r.bad && id != v->vdevs[i]->device_id)
            return bad("device list differs at slot %u: saved virtio type %u, config %u", i, id,
                       v->vdevs[i]->device_id);
    }
    f->tsc_khz = snap_get_u32(&r); /* checked once the vCPUs exist */
    if (r.bad)
        return bad("machine section too short");
    f->ram_size = mem;
    *ret = TAKE_PTR(f);
    return NULL;
}

/* One RAM chunk, read straight into guest memory (runs of pages at once). */
static xerr *restore_ram_chunk(snapshot_file *f, const snap_section *s, uint8_t *ram)
{
    size_t bm_max = snap_bitmap_bytes(SNAP_CHUNK_PAGES);
    uint8_t head[16 + SNAP_CHUNK_PAGES / 8];
    if (s->length < 16)
        return bad("RAM chunk too short");
    xerr *e = read_or_bad(f->fd, head, 16);
    if (e)
        return e;
    uint32_t pages;
    memcpy(&pages, head + 8, 4);
    size_t bm = snap_bitmap_bytes(pages <= SNAP_CHUNK_PAGES ? pages : SNAP_CHUNK_PAGES);
    if (bm > bm_max || s->length < 16 + bm)
        return bad("RAM chunk malformed");
    if ((e = read_or_bad(f->fd, head + 16, bm)))
        return e;
    uint64_t off;
    const char *why = snap_ram_chunk_check(head, 16 + bm, s->length, f->ram_size, &off, &pages);
    if (why)
        return bad("%s", why);
    const uint8_t *bitmap = head + 16;
    uint32_t crc = snap_crc32c(0, head, 16 + bm);
    for (uint32_t i = 0, j; bitmap_next_run(bitmap, pages, &i, &j); i = j) {
        uint8_t *p = ram + off + (uint64_t)i * SNAP_PAGE;
        size_t len = (size_t)(j - i) * SNAP_PAGE;
        if ((e = read_or_bad(f->fd, p, len)))
            return e;
        crc = snap_crc32c(crc, p, len);
    }
    if (crc != s->crc)
        return bad("checksum mismatch in guest RAM at %llu MiB", (unsigned long long)(off >> 20));
    return NULL;
}

static const blob *find_blob(snapshot_file *f, uint32_t type, uint32_t index)
{
    for (size_t i = 0; i < f->nblobs; i++)
        if (f->blobs[i].type == type && f->blobs[i].index == index)
            return &f->blobs[i];
    return NULL;
}

/* Finds TLV `tag` in a vCPU section; its length must be want (or at least want, if min). */
static const uint8_t *vcpu_tlv(const blob *b, uint32_t tag, size_t want, bool at_least,
                               size_t *ret_len)
{
    snap_reader r = {.p = b->data, .len = b->len};
    while (!r.bad && r.off < r.len) {
        uint32_t t = snap_get_u32(&r), len = snap_get_u32(&r);
        if (r.bad || len > r.len - r.off)
            return NULL;
        if (t == tag) {
            if (at_least ? len < want : len != want)
                return NULL;
            if (ret_len)
                *ret_len = len;
            return r.p + r.off;
        }
        r.off += len;
    }
    return NULL;
}

static xerr *set_err(const char *what, unsigned id)
{
    int e = errno;
    log_err("restore: %s (vcpu %u): %s", what, id, strerror(e));
    return bad("%s failed: %s", what, strerror(e));
}

/* Sets MSRs (index, data records); a failure of the TSC is fatal, others are logged. */
static xerr *restore_msrs(vcpu *c, const uint8_t *p, size_t len, bool deadline_only)
{
    size_t n = len / 16;
    AUTOFREE struct kvm_msrs *m =
        xcalloc(1, sizeof(*m) + (n ? n : 1) * sizeof(struct kvm_msr_entry));
    for (size_t i = 0; i < n; i++) {
        uint32_t idx;
        uint64_t data;
        memcpy(&idx, p + i * 16, 4);
        memcpy(&data, p + i * 16 + 8, 8);
        /* TSC_DEADLINE after the LAPIC (setting the LAPIC clears it), all else before. */
        if ((idx == MSR_IA32_TSC_DEADLINE) != deadline_only)
            continue;
        m->entries[m->nmsrs++] = (struct kvm_msr_entry){.index = idx, .data = data};
    }
    for (uint32_t start = 0; start < m->nmsrs;) {
        struct kvm_msrs *sub =
            xcalloc(1, sizeof(*sub) + (m->nmsrs - start) * sizeof(sub->entries[0]));
        sub->nmsrs = m->nmsrs - start;
        memcpy(sub->entries, &m->entries[start], sub->nmsrs * sizeof(sub->entries[0]));
        int r = ioctl(c->fd, KVM_SET_MSRS, sub);
        free(sub);
        if (r < 0)
            return set_err("KVM_SET_MSRS", c->id);
        if ((uint32_t)r < m->nmsrs - start) {
            uint32_t idx = m->entries[start + (uint32_t)r].index;
            if (idx == MSR_IA32_TSC)
                return bad("KVM refused the saved TSC");
            log_warn("restore: MSR 0x%x refused (vcpu %u); skipped", idx, c->id);
        }
        start += (uint32_t)r + 1;
    }
    return NULL;
}

static xerr *restore_vcpu(vmm *v, vcpu *c, const blob *b)
{
    const uint8_t *p;
    size_t len;
    /* Order as KVM wants it: registers, FPU, sregs (EFER, APIC base), MSRs, events, MP
     * state, LAPIC, then the TSC deadline, debug registers. */
    if (!(p = vcpu_tlv(b, VT_REGS, sizeof(struct kvm_regs), false, NULL)))
        return bad("vCPU %u: registers missing", c->id);
    if (ioctl(c->fd, KVM_SET_REGS, p) < 0)
        return set_err("KVM_SET_REGS", c->id);
    if ((p = vcpu_tlv(b, VT_XSAVE, sizeof(struct kvm_xsave), true, &len))) {
        /* KVM reads as many bytes as its XSAVE2 size says: never past the buffer. */
        int want = ioctl(v->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
        size_t sz = want > 0 && (size_t)want > len ? (size_t)want : len;
        AUTOFREE void *xs = xcalloc(1, sz);
        memcpy(xs, p, len);
        if (ioctl(c->fd, KVM_SET_XSAVE, xs) < 0)
            return set_err("KVM_SET_XSAVE", c->id);
    } else if ((p = vcpu_tlv(b, VT_FPU, sizeof(struct kvm_fpu), false, NULL))) {
        if (ioctl(c->fd, KVM_SET_FPU, p) < 0)
            return set_err("KVM_SET_FPU", c->id);
    } else {
        return bad("vCPU %u: FPU state missing", c->id);
    }
    if ((p = vcpu_tlv(b, VT_XCRS, sizeof(struct kvm_xcrs), false, NULL)) &&
        ioctl(c->fd, KVM_SET_XCRS, p) < 0)
        return set_err("KVM_SET_XCRS", c->id);
    if (!(p = vcpu_tlv(b, VT_SREGS, sizeof(struct kvm_sregs), false, NULL)))
        return bad("vCPU %u: segment registers missing", c->id);
    if (ioctl(c->fd, KVM_SET_SREGS, p) < 0)
        return set_err("KVM_SET_SREGS", c->id);
    const uint8_t *msrs = vcpu_tlv(b, VT_MSRS, 0, true, &len);
    size_t msrs_len = len;
    if (!msrs || msrs_len % 16)
        return bad("vCPU %u: MSRs missing", c->id);
    xerr *e = restore_msrs(c, msrs, msrs_len, false);
    if (e)
        return e;
    if (!(p = vcpu_tlv(b, VT_EVENTS, sizeof(struct kvm_vcpu_events), false, NULL)))
        return bad("vCPU %u: events missing", c->id);
    struct kvm_vcpu_events ev;
    memcpy(&ev, p, sizeof(ev));
    ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    if (ioctl(c->fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
        return set_err("KVM_SET_VCPU_EVENTS", c->id);
    if (!(p = vcpu_tlv(b, VT_MPSTATE, sizeof(struct kvm_mp_state), false, NULL)))
        return bad("vCPU %u: MP state missing", c->id);
    if (ioctl(c->fd, KVM_SET_MP_STATE, p) < 0)
        return set_err("KVM_SET_MP_STATE", c->id);
    if (!(p = vcpu_tlv(b, VT_LAPIC, sizeof(struct kvm_lapic_state), false, NULL)))
        return bad("vCPU %u: LAPIC missing", c->id);
    if (ioctl(c->fd, KVM_SET_LAPIC, p) < 0)
        return set_err("KVM_SET_LAPIC", c->id);
    if ((e = restore_msrs(c, msrs, msrs_len, true)))
        return e;
    if ((p = vcpu_tlv(b, VT_DEBUGREGS, sizeof(struct kvm_debugregs), false, NULL)) &&
        ioctl(c->fd, KVM_SET_DEBUGREGS, p) < 0)
        return set_err("KVM_SET_DEBUGREGS", c->id);
    return NULL;
}

static xerr *restore_serial(vmm *v, const blob *b)
{
    AUTOFREE serial_state *st = xcalloc(1, sizeof(*st));
    snap_reader r = {.p = b->data, .len = b->len};
    st->ier = snap_get_u8(&r);
    st->lcr = snap_get_u8(&r);
    st->mcr = snap_get_u8(&r);
    st->scr = snap_get_u8(&r);
    st->dll = snap_get_u8(&r);
    st->dlm = snap_get_u8(&r);
    st->fcr = snap_get_u8(&r);
    st->thre_pending = snap_get_u8(&r) != 0;
    st->in_len = snap_get_u32(&r);
    if (r.bad || st->in_len > SERIAL_INPUT_SIZE || st->in_len != r.len - r.off)
        return bad("serial state malformed");
    snap_get(&r, st->in, st->in_len);
    serial_set_state(v->serial, st);
    return NULL;
}

static void irq_line(vmm *v, unsigned irq, int level)
{
    struct kvm_irq_level l = {.irq = irq, .level = (uint32_t)level};
    if (ioctl(v->vm_fd, KVM_IRQ_LINE, &l) < 0)
        log_warn("restore: KVM_IRQ_LINE %u: %s", irq, strerror(errno));
}

xerr *snapshot_restore(snapshot_file *f, vmm *v)
{
    if (!v->vcpus || !v->ram || v->mem.size != f->ram_size)
        return bad("machine not ready");
    uint32_t khz = tsc_khz_of(v);
    if (f->tsc_khz && khz && f->tsc_khz != khz)
        log_warn("restore: TSC was %u kHz when saved, is %u kHz here: guest time runs off",
                 f->tsc_khz, khz);
    /* Fresh RAM: pages the file leaves out are zero (the kernel loader wrote some). */
    if (madvise(v->ram, v->mem.size, MADV_DONTNEED) < 0)
        memset(v->ram, 0, v->mem.size);
    xerr *e;
    for (;;) {
        snap_section s = {0};
        if ((e = read_section_header(f, &s)))
            return e;
        if (s.type == SNAP_SEC_END)
            break;
        if (s.type == SNAP_SEC_RAM) {
            if ((e = restore_ram_chunk(f, &s, v->ram)))
                return e;
            continue;
        }
        if (s.type < SNAP_SEC_VCPU || s.type > SNAP_SEC_VIRTIO)
            return bad("unknown section type %u", s.type);
        if (find_blob(f, s.type, s.index))
            return bad("duplicate section %u/%u", s.type, s.index);
        if (f->nblobs >= 4 * VMM_MAX_VCPUS || s.length > SNAP_MAX_STATE_SECT - f->blob_bytes)
            return bad("too many or too large state sections");
        f->blob_bytes += s.length;
        uint8_t *p = NULL;
        if ((e = read_payload(f, &s, &p)))
            return e;
        f->blobs = xrealloc(f->blobs, (f->nblobs + 1) * sizeof(*f->blobs));
        f->blobs[f->nblobs++] =
            (blob){.type = s.type, .index = s.index, .data = p, .len = s.length};
    }
    /* Everything read and its checksums held: check completeness, then load. */
    for (unsigned i = 0; i < v->nvcpus; i++)
        if (!find_blob(f, SNAP_SEC_VCPU, i))
            return bad("vCPU %u state missing", i);
    for (unsigned i = 0; i < v->nvdevs; i++)
        if (!find_blob(f, SNAP_SEC_VIRTIO, i))
            return bad("device %u state missing", i);
    const blob *chips = find_blob(f, SNAP_SEC_IRQCHIP, 0), *pit = find_blob(f, SNAP_SEC_PIT, 0),
               *clock = find_blob(f, SNAP_SEC_CLOCK, 0), *plat = find_blob(f, SNAP_SEC_PLATFORM, 0),
               *ser = find_blob(f, SNAP_SEC_SERIAL, 0);
    if (!chips || chips->len != 3 * sizeof(struct kvm_irqchip) || !pit ||
        pit->len != sizeof(struct kvm_pit_state2) || !clock ||
        clock->len != sizeof(struct kvm_clock_data) || !plat || plat->len < 5 || !ser)
        return bad("platform state missing or malformed");
    for (unsigned i = 0; i < 3; i++) {
        struct kvm_irqchip chip;
        memcpy(&chip, chips->data + i * sizeof(chip), sizeof(chip));
        if (chip.chip_id != i)
            return bad("irqchip state malformed");
        if (ioctl(v->vm_fd, KVM_SET_IRQCHIP, &chip) < 0)
            return set_err("KVM_SET_IRQCHIP", 0);
    }
    if (ioctl(v->vm_fd, KVM_SET_PIT2, pit->data) < 0)
        return set_err("KVM_SET_PIT2", 0);
    for (unsigned i = 0; i < v->nvcpus; i++)
        if ((e = restore_vcpu(v, &v->vcpus[i], find_blob(f, SNAP_SEC_VCPU, i))))
            return e;
    /* kvmclock goes on from the saved value, like the TSC: no jump over the time saved. */
    struct kvm_clock_data cd;
    memcpy(&cd, clock->data, sizeof(cd));
    struct kvm_clock_data set = {.clock = cd.clock};
    if (ioctl(v->vm_fd, KVM_SET_CLOCK, &set) < 0)
        return set_err("KVM_SET_CLOCK", 0);
    snap_reader r = {.p = plat->data, .len = plat->len};
    uint8_t pending = snap_get_u8(&r);
    uint32_t target = snap_get_u32(&r), online = snap_get_u32(&r);
    pthread_mutex_lock(&v->lock);
    v->platform_pending = pending;
    v->vcpu_target = target <= v->nvcpus ? target : v->nvcpus;
    pthread_mutex_unlock(&v->lock);
    if (!r.bad) /* as the guest last reported */
        atomic_store(&v->vcpus_online, online <= v->nvcpus ? online : v->nvcpus);
    if (pending)
        irq_line(v, IRQ_PLATFORM, 1); /* high until the guest reads the event port */
    if ((e = restore_serial(v, ser)))
        return e;
    for (unsigned i = 0; i < v->nvdevs; i++) {
        const blob *b = find_blob(f, SNAP_SEC_VIRTIO, i);
        if (virtio_dev_load(v->vdevs[i], b->data, b->len) < 0)
            return bad("device %u state malformed or not for this device", i);
    }
    log_info("restored from %s", f->path);
    return NULL;
}
