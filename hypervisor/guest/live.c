/* The mini guest's live features (see live.h). Like the other drivers here, requests are
 * few and their completion is polled (nuvem-vmm serves a queue while handling the notify
 * write); interrupts only tell the guest that the host wants something. */
#include "live.h"
#include "guest.h"
#include "virtio.h"

#include <stddef.h>

void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);

#define PAGE     4096ull
#define GSI_BASE 16

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}

/* Level-triggered, active-high IOAPIC pin -> vector on the BSP. */
static void route_level(unsigned pin, unsigned vector)
{
    *(volatile uint32_t *)IOAPIC_BASE = 0x10 + 2 * pin + 1;
    *(volatile uint32_t *)(IOAPIC_BASE + 0x10) = 0;
    *(volatile uint32_t *)IOAPIC_BASE = 0x10 + 2 * pin;
    *(volatile uint32_t *)(IOAPIC_BASE + 0x10) = vector | (1u << 15);
}

/* Finds device `id`; resets it and negotiates VERSION_1 only. Returns its base or 0. */
static uintptr_t virtio_find(uint32_t id, unsigned *ret_slot)
{
    for (unsigned slot = 0; slot < VIRTIO_MAX_DEVICES; slot++) {
        uintptr_t base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_STRIDE;
        if (mmio_rd(base, REG_MAGIC) != 0x74726976)
            break;
        if (mmio_rd(base, REG_VERSION) != 2 || mmio_rd(base, REG_DEVICE_ID) != id)
            continue;
        *ret_slot = slot;
        mmio_wr(base, REG_STATUS, 0);
        mmio_wr(base, REG_STATUS, ST_ACK | ST_DRIVER);
        mmio_wr(base, REG_DRV_FEAT_SEL, 0);
        mmio_wr(base, REG_DRV_FEATURES, 0);
        mmio_wr(base, REG_DRV_FEAT_SEL, 1);
        mmio_wr(base, REG_DRV_FEATURES, 1); /* VIRTIO_F_VERSION_1 */
        mmio_wr(base, REG_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
        if (!(mmio_rd(base, REG_STATUS) & ST_FEATURES_OK))
            return 0;
        return base;
    }
    return 0;
}

static bool queue_setup(uintptr_t base, unsigned qi, struct ring8 *r)
{
    mmio_wr(base, REG_QUEUE_SEL, qi);
    if (mmio_rd(base, REG_QUEUE_READY) || mmio_rd(base, REG_QUEUE_NUM_MAX) < QSIZE)
        return false;
    memset(r, 0, sizeof(*r));
    mmio_wr(base, REG_QUEUE_NUM, QSIZE);
    uint64_t d = (uintptr_t)&r->desc, a = (uintptr_t)&r->avail, u = (uintptr_t)&r->used;
    mmio_wr(base, REG_DESC_LO, (uint32_t)d);
    mmio_wr(base, REG_DESC_HI, (uint32_t)(d >> 32));
    mmio_wr(base, REG_AVAIL_LO, (uint32_t)a);
    mmio_wr(base, REG_AVAIL_HI, (uint32_t)(a >> 32));
    mmio_wr(base, REG_USED_LO, (uint32_t)u);
    mmio_wr(base, REG_USED_HI, (uint32_t)(u >> 32));
    mmio_wr(base, REG_QUEUE_READY, 1);
    return mmio_rd(base, REG_QUEUE_READY) == 1;
}

/* One buffer on queue qi, then a bounded wait for the device to return it. */
static bool submit_one(uintptr_t base, unsigned qi, struct ring8 *r, uint16_t *seen, void *buf,
                       uint32_t len, bool dev_writes)
{
    r->desc[0] = (struct desc){(uintptr_t)buf, len, (uint16_t)(dev_writes ? 2 : 0), 0};
    r->avail.ring[r->avail.idx % QSIZE] = 0;
    barrier();
    r->avail.idx++;
    barrier();
    mmio_wr(base, REG_QUEUE_NOTIFY, qi);
    for (unsigned long spins = 0; *(volatile uint16_t *)&r->used.idx == *seen; spins++) {
        if (spins > 2000000)
            return false;
        __asm__ volatile("pause");
    }
    barrier();
    (*seen)++;
    return true;
}

/* ---- page allocator: free RAM as a stack of pages (the balloon takes from the top) ---- */

static struct mem_range ranges[LIVE_MAX_RANGES];
static unsigned nranges;
static uint64_t total_pages, free_pages; /* pages [0, free_pages) of the ranges are free */

void pages_init(const struct mem_range *r, unsigned n)
{
    nranges = 0;
    total_pages = 0;
    for (unsigned i = 0; i < n && nranges < LIVE_MAX_RANGES; i++) {
        if (r[i].end <= r[i].start)
            continue;
        ranges[nranges++] = r[i];
        total_pages += (r[i].end - r[i].start) / PAGE;
    }
    free_pages = total_pages;
}

uint64_t pages_total(void)
{
    return total_pages;
}

uint64_t pages_free(void)
{
    return free_pages;
}

/* The guest-physical address of allocator page `idx`. */
static uint64_t page_addr(uint64_t idx)
{
    for (unsigned i = 0; i < nranges; i++) {
        uint64_t n = (ranges[i].end - ranges[i].start) / PAGE;
        if (idx < n)
            return ranges[i].start + idx * PAGE;
        idx -= n;
    }
    return 0;
}

/* How many allocator pages from `idx` on lie in the same range. */
static uint64_t pages_left_in_range(uint64_t idx)
{
    for (unsigned i = 0; i < nranges; i++) {
        uint64_t n = (ranges[i].end - ranges[i].start) / PAGE;
        if (idx < n)
            return n - idx;
        idx -= n;
    }
    return 1;
}

uint64_t pages_touch(void)
{
    uint64_t left = free_pages, touched = 0;
    for (unsigned i = 0; i < nranges && left; i++) {
        for (uint64_t a = ranges[i].start; a < ranges[i].end && left; a += PAGE, left--) {
            if (a >= 0x100000000ull)
                continue;                           /* only the low 4 GiB is mapped */
            *(volatile uint64_t *)(uintptr_t)a = a; /* distinct content: nothing to merge */
            touched++;
        }
    }
    return touched;
}

/* ---- virtio-balloon ---- */

#define BALLOON_BATCH 1024 /* PFNs per request: one 4 KiB buffer */

static struct ring8 bal_q[2];
static uint16_t bal_seen[2];
static uint32_t bal_pfns[BALLOON_BATCH] __attribute__((aligned(4096)));
static uintptr_t bal_base;
static unsigned bal_slot;
static const char *bal_error;
static uint64_t bal_held; /* pages in the balloon: [free_pages, free_pages + bal_held) */
static volatile bool bal_pending;

static void balloon_init(void)
{
    bal_base = virtio_find(5, &bal_slot);
    if (!bal_base)
        return;
    if (!queue_setup(bal_base, 0, &bal_q[0]) || !queue_setup(bal_base, 1, &bal_q[1])) {
        bal_error = "queue setup refused";
        mmio_wr(bal_base, REG_STATUS, ST_FAILED);
        return;
    }
    bal_seen[0] = bal_seen[1] = 0;
    bal_held = 0;
    route_level(GSI_BASE + bal_slot, VEC_VIRTIO);
    mmio_wr(bal_base, REG_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    bal_pending = true; /* a target may be set already (it survives reboots) */
}

/* Inflates or deflates toward num_pages, one batch at a time; reports `actual`. Returns
 * whether the balloon changed. */
static bool balloon_adjust(void)
{
    if (!bal_base || bal_error)
        return false;
    uint64_t target = mmio_rd(bal_base, REG_CONFIG);
    if (target > total_pages)
        target = total_pages;
    uint64_t before = bal_held;
    /* Bounded: every pass moves a batch or stops. */
    for (unsigned pass = 0; pass < 1 + total_pages / BALLOON_BATCH + 1 && bal_held != target;
         pass++) {
        bool inflate = bal_held < target;
        uint64_t n = inflate ? target - bal_held : bal_held - target;
        if (n > BALLOON_BATCH)
            n = BALLOON_BATCH;
        /* Inflate takes the top free pages; deflate gives back the lowest balloon pages. */
        uint64_t first = inflate ? free_pages - n : free_pages;
        /* Ring 0 may be emulated: look the range up only where the run crosses one. */
        uint64_t pfn = page_addr(first) / PAGE, left = pages_left_in_range(first);
        for (uint64_t i = 0; i < n; i++, pfn++, left--) {
            if (!left) {
                pfn = page_addr(first + i) / PAGE;
                left = pages_left_in_range(first + i);
            }
            bal_pfns[i] = (uint32_t)pfn;
        }
        unsigned q = inflate ? 0 : 1;
        if (!submit_one(bal_base, q, &bal_q[q], &bal_seen[q], bal_pfns, (uint32_t)(n * 4), false)) {
            bal_error = "request timed out";
            break;
        }
        if (inflate) {
            free_pages -= n;
            bal_held += n;
        } else {
            free_pages += n;
            bal_held -= n;
        }
    }
    mmio_wr(bal_base, REG_CONFIG + 4, (uint32_t)bal_held);
    return bal_held != before;
}

void balloon_get_info(struct balloon_info *ret)
{
    ret->present = bal_base != 0;
    ret->error = bal_error;
    ret->held = bal_held;
    ret->target = bal_base ? mmio_rd(bal_base, REG_CONFIG) : 0;
}

/* ---- the agent on virtio-console ---- */

#define AG_RXBUFS 4
#define AG_RXLEN  256
#define AG_LINE   1400
#define AG_TXLEN  4096

static struct ring8 ag_rx, ag_tx;
static uint16_t ag_rx_seen, ag_tx_seen;
static uint8_t ag_rxbuf[AG_RXBUFS][AG_RXLEN];
static char ag_txbuf[AG_TXLEN];
static unsigned ag_txlen;
static char ag_line[AG_LINE];
static unsigned ag_line_len;
static bool ag_skipping, ag_hello_sent;
static uintptr_t ag_base;
static unsigned ag_slot;
static volatile bool ag_pending;
static const char *ag_version = "", *ag_cmdline = "";
static uint64_t ag_ram; /* RAM in the memmap */

bool agent_present(void)
{
    return ag_base != 0;
}

static void ag_post_rx(uint16_t id)
{
    ag_rx.avail.ring[ag_rx.avail.idx % QSIZE] = id;
    barrier();
    ag_rx.avail.idx++;
    barrier();
}

static void agent_init(void)
{
    ag_base = virtio_find(3, &ag_slot);
    if (!ag_base)
        return;
    if (!queue_setup(ag_base, 0, &ag_rx) || !queue_setup(ag_base, 1, &ag_tx)) {
        mmio_wr(ag_base, REG_STATUS, ST_FAILED);
        ag_base = 0;
        return;
    }
    ag_rx_seen = ag_tx_seen = 0;
    for (uint16_t i = 0; i < AG_RXBUFS; i++) {
        ag_rx.desc[i] = (struct desc){(uintptr_t)ag_rxbuf[i], AG_RXLEN, 2, 0};
        ag_post_rx(i);
    }
    route_level(GSI_BASE + ag_slot, VEC_VIRTIO);
    mmio_wr(ag_base, REG_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    mmio_wr(ag_base, REG_QUEUE_NOTIFY, 0);
}

static void tx_put(const char *s, unsigned n)
{
    if (ag_txlen + n > AG_TXLEN)
        n = AG_TXLEN - ag_txlen; /* the host drops the cut line as overlong or malformed */
    memcpy(ag_txbuf + ag_txlen, s, n);
    ag_txlen += n;
}

static unsigned slen(const char *s)
{
    unsigned n = 0;
    while (s[n])
        n++;
    return n;
}

static void tx_str(const char *s)
{
    tx_put(s, slen(s));
}

static void tx_u64(uint64_t v)
{
    char b[24];
    int n = 0;
    do {
        b[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        tx_put(&b[--n], 1);
}

static void tx_flush(void)
{
    if (ag_txlen && ag_base)
        submit_one(ag_base, 1, &ag_tx, &ag_tx_seen, ag_txbuf, ag_txlen, false);
    ag_txlen = 0;
}

static void tx_key(const char *key)
{
    tx_str("set ");
    tx_str(key);
    tx_str(" ");
}

/* The value of option `name=` on the kernel command line, copied into out (up to max-1). */
static bool cmdline_opt(const char *name, char *out, unsigned max)
{
    unsigned nl = slen(name);
    for (const char *p = ag_cmdline; *p;) {
        while (*p == ' ')
            p++;
        const char *w = p;
        while (*p && *p != ' ')
            p++;
        if ((unsigned)(p - w) > nl && w[nl] == '=') {
            bool match = true;
            for (unsigned i = 0; i < nl && match; i++)
                match = w[i] == name[i];
            if (match) {
                unsigned n = 0;
                for (const char *v = w + nl + 1; v < p && n + 1 < max; v++) {
                    char c = *v;
                    bool ok = (c >= '0' && c <= '9') || c == '.';
                    if (!ok)
                        return false;
                    out[n++] = c;
                }
                out[n] = 0;
                return n > 0;
            }
        }
    }
    return false;
}

void agent_publish(void)
{
    if (!ag_base)
        return;
    ag_txlen = 0;
    if (!ag_hello_sent) {
        tx_str("hello\n");
        ag_hello_sent = true;
    }
    tx_key("os/name");
    tx_str("Nuvem Mini Guest\n");
    tx_key("os/version");
    tx_str(ag_version);
    tx_str("\n");
    tx_key("os/uname");
    tx_str("NuvemMini ");
    tx_str(ag_version);
    tx_str(" x86_64 PVH\n");
    uint64_t total_kib = (ag_ram - bal_held * PAGE) / 1024; /* what the guest has */
    tx_key("memory/total_kib");
    tx_u64(total_kib);
    tx_str("\n");
    tx_key("memory/free_kib");
    tx_u64(free_pages * (PAGE / 1024));
    tx_str("\n");
    tx_key("vcpus/online");
    tx_u64(kernel_cpus_online());
    tx_str("\n");
    const struct vnet_info *ni = vnet_get_info();
    if (ni->present && !ni->error) {
        static const char hex[] = "0123456789abcdef";
        char mac[18];
        for (unsigned i = 0; i < 6; i++) {
            mac[3 * i] = hex[ni->mac[i] >> 4];
            mac[3 * i + 1] = hex[ni->mac[i] & 15];
            mac[3 * i + 2] = i < 5 ? ':' : 0;
        }
        tx_key("net/0/mac");
        tx_str(mac);
        tx_str("\n");
        char ip[16];
        if (cmdline_opt("nuvem.ip", ip, sizeof(ip))) {
            tx_key("net/0/ipv4");
            tx_str(ip);
            tx_str("\n");
        }
    }
    tx_key("agent/up");
    tx_str("1\nsync\n");
    tx_flush();
}

void agent_send_raw(const char *text, unsigned n)
{
    if (!ag_base)
        return;
    ag_txlen = 0;
    tx_put(text, n);
    tx_str("\n");
    tx_flush();
}

void agent_flood(unsigned n)
{
    if (!ag_base)
        return;
    ag_txlen = 0;
    for (unsigned i = 0; i < n; i++) {
        if (ag_txlen + 40 > AG_TXLEN)
            tx_flush();
        tx_str("set flood/");
        tx_u64(i);
        tx_str(" x\n");
    }
    tx_str("sync\n");
    tx_flush();
}

static bool str_is(const char *s, unsigned n, const char *w)
{
    unsigned wl = slen(w);
    if (wl != n)
        return false;
    for (unsigned i = 0; i < n; i++)
        if (s[i] != w[i])
            return false;
    return true;
}

/* A host line: `set KEY VALUE`. Only control/ keys mean something here. */
static void agent_line(const char *l, unsigned n)
{
    if (n < 4 || !str_is(l, 4, "set "))
        return;
    const char *key = l + 4;
    unsigned kl = 0;
    while (4 + kl < n && key[kl] != ' ')
        kl++;
    const char *val = key + kl + (4 + kl < n ? 1 : 0);
    unsigned vl = (unsigned)(l + n - val);
    if (str_is(key, kl, "control/shutdown")) {
        if (str_is(val, vl, "poweroff"))
            kernel_poweroff();
        else if (str_is(val, vl, "reboot"))
            kernel_reboot();
    } else if (str_is(key, kl, "control/vcpus")) {
        unsigned v = 0;
        bool ok = vl > 0 && vl < 4;
        for (unsigned i = 0; i < vl && ok; i++) {
            ok = val[i] >= '0' && val[i] <= '9';
            v = v * 10 + (unsigned)(val[i] - '0');
        }
        if (ok && v)
            kernel_set_vcpus(v);
        agent_publish();
    } else if (str_is(key, kl, "control/refresh")) {
        agent_publish();
    }
}

/* Takes what the host sent (bounded by the ring), line by line. */
static void agent_rx(void)
{
    bool reposted = false;
    for (unsigned k = 0; k < 4 * QSIZE && *(volatile uint16_t *)&ag_rx.used.idx != ag_rx_seen;
         k++) {
        barrier();
        unsigned e = ag_rx_seen % QSIZE;
        uint32_t id = ag_rx.used.ring[e].id, len = ag_rx.used.ring[e].len;
        ag_rx_seen++;
        if (id >= AG_RXBUFS)
            continue;
        if (len > AG_RXLEN)
            len = AG_RXLEN;
        /* Copy out first: handling a line may take long (vCPU changes), and the buffer goes
         * back to the device before that. */
        static uint8_t chunk[AG_RXLEN];
        memcpy(chunk, ag_rxbuf[id], len);
        ag_post_rx((uint16_t)id);
        reposted = true;
        for (uint32_t i = 0; i < len; i++) {
            char c = (char)chunk[i];
            if (c == '\n') {
                if (!ag_skipping)
                    agent_line(ag_line, ag_line_len);
                ag_line_len = 0;
                ag_skipping = false;
            } else if (ag_line_len < AG_LINE) {
                ag_line[ag_line_len++] = c;
            } else {
                ag_skipping = true;
            }
        }
    }
    if (reposted)
        mmio_wr(ag_base, REG_QUEUE_NOTIFY, 0);
}

/* ---- glue ---- */

void live_init(const char *version, const char *cmdline, uint64_t ram_bytes)
{
    ag_ram = ram_bytes;
    ag_version = version;
    ag_cmdline = cmdline;
    balloon_init();
    agent_init();
}

void live_irq(void)
{
    if (bal_base) {
        uint32_t isr = mmio_rd(bal_base, REG_INT_STATUS);
        if (isr) {
            mmio_wr(bal_base, REG_INT_ACK, isr);
            if (isr & 2)
                bal_pending = true; /* configuration change: a new target */
        }
    }
    if (ag_base) {
        uint32_t isr = mmio_rd(ag_base, REG_INT_STATUS);
        if (isr) {
            mmio_wr(ag_base, REG_INT_ACK, isr);
            ag_pending = true;
        }
    }
}

bool live_pending(void)
{
    return bal_pending || ag_pending;
}

void live_work(void)
{
    if (bal_pending) {
        bal_pending = false;
        if (balloon_adjust())
            agent_publish();
    }
    if (ag_pending) {
        ag_pending = false;
        if (ag_base)
            agent_rx();
    }
}
