/* The mini guest's virtio-blk driver (see virtio.h). Ring-0 code may run emulated at ~1-2 M
 * instructions/s, so requests are one sector, the queue is tiny, and completion is polled:
 * nuvem-vmm serves the queue while handling the notify write, so the used ring is normally
 * updated by the time that write returns. */
#include "virtio.h"

#include <stddef.h>

void *memset(void *dst, int c, size_t n);

#define F_RO           5
#define F_FLUSH        9
#define F_DISCARD      13
#define F_WRITE_ZEROES 14
#define REG_CONFIG_GEN 0x0fc
#define ISR_CONFIG     2

static struct ring8 vq;

static struct {
    uint32_t type, reserved;
    uint64_t sector;
} req_hdr;
static volatile uint8_t req_status;
static uint16_t used_seen;
static uintptr_t base;
static struct vblk_info info;
static volatile bool config_pending; /* a config-change interrupt status was seen */

static inline uint32_t rd(unsigned reg)
{
    return mmio_rd(base, reg);
}

static inline void wr(unsigned reg, uint32_t v)
{
    mmio_wr(base, reg, v);
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static void fail(const char *why)
{
    info.error = why;
    wr(REG_STATUS, rd(REG_STATUS) | 0x80); /* FAILED */
}

void vblk_init(void)
{
    memset(&info, 0, sizeof(info));
    for (unsigned slot = 0; slot < VIRTIO_MAX_DEVICES; slot++) {
        base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_STRIDE;
        if (rd(REG_MAGIC) != 0x74726976)
            break; /* slots are filled from 0 */
        if (rd(REG_VERSION) == 2 && rd(REG_DEVICE_ID) == 2) {
            info.present = true;
            info.slot = slot;
            break;
        }
    }
    if (!info.present)
        return;
    wr(REG_STATUS, 0);
    wr(REG_STATUS, ST_ACK);
    wr(REG_STATUS, ST_ACK | ST_DRIVER);
    wr(REG_DEV_FEAT_SEL, 0);
    info.features = rd(REG_DEV_FEATURES);
    wr(REG_DEV_FEAT_SEL, 1);
    if (!(rd(REG_DEV_FEATURES) & 1)) {
        fail("no VIRTIO_F_VERSION_1");
        return;
    }
    info.readonly = (info.features >> F_RO) & 1;
    info.flush = (info.features >> F_FLUSH) & 1;
    info.discard = (info.features >> F_DISCARD) & 1;
    info.write_zeroes = (info.features >> F_WRITE_ZEROES) & 1;
    wr(REG_DRV_FEAT_SEL, 0);
    wr(REG_DRV_FEATURES, info.features & ((1u << F_RO) | (1u << F_FLUSH) | (1u << F_DISCARD) |
                                          (1u << F_WRITE_ZEROES)));
    wr(REG_DRV_FEAT_SEL, 1);
    wr(REG_DRV_FEATURES, 1); /* VIRTIO_F_VERSION_1 */
    wr(REG_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
    if (!(rd(REG_STATUS) & ST_FEATURES_OK)) {
        fail("features refused");
        return;
    }
    wr(REG_QUEUE_SEL, 0);
    if (rd(REG_QUEUE_READY) || rd(REG_QUEUE_NUM_MAX) < QSIZE) {
        fail("queue unusable");
        return;
    }
    memset(&vq, 0, sizeof(vq));
    used_seen = 0;
    wr(REG_QUEUE_NUM, QSIZE);
    uint64_t d = (uintptr_t)&vq.desc, a = (uintptr_t)&vq.avail, u = (uintptr_t)&vq.used;
    wr(REG_DESC_LO, (uint32_t)d);
    wr(REG_DESC_HI, (uint32_t)(d >> 32));
    wr(REG_AVAIL_LO, (uint32_t)a);
    wr(REG_AVAIL_HI, (uint32_t)(a >> 32));
    wr(REG_USED_LO, (uint32_t)u);
    wr(REG_USED_HI, (uint32_t)(u >> 32));
    wr(REG_QUEUE_READY, 1);
    if (!rd(REG_QUEUE_READY)) {
        fail("queue not accepted");
        return;
    }
    config_pending = false;
    info.capacity = rd(REG_CONFIG) | (uint64_t)rd(REG_CONFIG + 4) << 32;
    wr(REG_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
}

/* Acks whatever the device raised; a config change is remembered for vblk_poll_config. */
static void take_isr(void)
{
    uint32_t isr = rd(REG_INT_STATUS);
    if (isr)
        wr(REG_INT_ACK, isr); /* lowers the interrupt line */
    if (isr & ISR_CONFIG)
        config_pending = true;
}

bool vblk_poll_config(void)
{
    if (!info.present || info.error)
        return false;
    take_isr();
    if (!config_pending)
        return false;
    config_pending = false;
    /* The generation brackets a consistent read of the 64-bit capacity. */
    for (unsigned tries = 0; tries < 8; tries++) {
        uint32_t gen = rd(REG_CONFIG_GEN);
        uint64_t cap = rd(REG_CONFIG) | (uint64_t)rd(REG_CONFIG + 4) << 32;
        if (rd(REG_CONFIG_GEN) == gen) {
            info.capacity = cap;
            break;
        }
    }
    return true;
}

int vblk_gsi(void)
{
    return info.present ? 16 + (int)info.slot : -1;
}

const struct vblk_info *vblk_get_info(void)
{
    return &info;
}

/* Submits header [+ data] + status as one chain and waits (bounded) for its completion. */
static int submit(uint32_t type, uint64_t sector, void *buf, uint32_t len, bool dev_writes)
{
    if (!info.present || info.error)
        return VBLK_ERR_NODEV;
    req_hdr.type = type;
    req_hdr.reserved = 0;
    req_hdr.sector = sector;
    req_status = 0xff;
    unsigned n = 0;
    vq.desc[n] = (struct desc){(uintptr_t)&req_hdr, sizeof(req_hdr), 1, (uint16_t)(n + 1)};
    n++;
    if (len) {
        vq.desc[n] = (struct desc){(uintptr_t)buf, len, (uint16_t)(1 | (dev_writes ? 2 : 0)),
                                   (uint16_t)(n + 1)};
        n++;
    }
    vq.desc[n] = (struct desc){(uintptr_t)&req_status, 1, 2, 0};
    vq.avail.ring[vq.avail.idx % QSIZE] = 0;
    barrier();
    vq.avail.idx++;
    barrier();
    wr(REG_QUEUE_NOTIFY, 0);
    /* Bounded by iterations (seconds where ring 0 is emulated) and, on hardware-speed KVM where
     * 2M iterations pass in milliseconds, also by ~10^10 TSC cycles (a slow fdatasync). */
    uint64_t t0 = rdtsc();
    for (unsigned long spins = 0; *(volatile uint16_t *)&vq.used.idx == used_seen; spins++) {
        if (spins > 2000000 && rdtsc() - t0 > 10000000000ull)
            return VBLK_ERR_TIMEOUT;
        __asm__ volatile("pause");
    }
    barrier();
    used_seen++;
    take_isr();
    return req_status;
}

int vblk_rw(bool write, uint64_t sector, void *buf)
{
    return submit(write ? 1 : 0, sector, buf, 512, !write);
}

int vblk_rw_n(bool write, uint64_t sector, void *buf, uint32_t len)
{
    return submit(write ? 1 : 0, sector, buf, len, !write);
}

int vblk_discard(bool zeroes, uint64_t sector, uint32_t count)
{
    static struct {
        uint64_t sector;
        uint32_t count, flags;
    } range;
    range.sector = sector;
    range.count = count;
    range.flags = 0;
    return submit(zeroes ? 13 : 11, sector, &range, sizeof(range), false);
}

int vblk_flush(void)
{
    return submit(4, 0, 0, 0, false);
}

int vblk_get_id(char *id)
{
    static char buf[20];
    memset(buf, 0, sizeof(buf));
    int r = submit(8, 0, buf, sizeof(buf), true);
    for (unsigned i = 0; i < 20; i++)
        id[i] = buf[i];
    id[20] = 0;
    return r;
}

/* ---- virtio-net: one RX and one TX queue, frames of our own ethertype ---- */

#define NET_RXBUFS 4
#define NET_BUFLEN 1536
#define NET_HDR    12

static struct ring8 net_rx, net_tx;
static uint8_t net_rxbuf[NET_RXBUFS][NET_BUFLEN] __attribute__((aligned(64)));
static uint8_t net_txbuf[NET_BUFLEN] __attribute__((aligned(64)));
static uint16_t net_rx_seen, net_tx_seen;
static uintptr_t nbase;
static struct vnet_info ninfo;

static inline uint32_t nrd(unsigned reg)
{
    return mmio_rd(nbase, reg);
}

static inline void nwr(unsigned reg, uint32_t v)
{
    mmio_wr(nbase, reg, v);
}

static bool net_queue(unsigned qi, struct ring8 *r)
{
    nwr(REG_QUEUE_SEL, qi);
    if (nrd(REG_QUEUE_READY) || nrd(REG_QUEUE_NUM_MAX) < QSIZE)
        return false;
    memset(r, 0, sizeof(*r));
    nwr(REG_QUEUE_NUM, QSIZE);
    uint64_t d = (uintptr_t)&r->desc, a = (uintptr_t)&r->avail, u = (uintptr_t)&r->used;
    nwr(REG_DESC_LO, (uint32_t)d);
    nwr(REG_DESC_HI, (uint32_t)(d >> 32));
    nwr(REG_AVAIL_LO, (uint32_t)a);
    nwr(REG_AVAIL_HI, (uint32_t)(a >> 32));
    nwr(REG_USED_LO, (uint32_t)u);
    nwr(REG_USED_HI, (uint32_t)(u >> 32));
    nwr(REG_QUEUE_READY, 1);
    return nrd(REG_QUEUE_READY) == 1;
}

static void net_post_rx(uint16_t id)
{
    net_rx.avail.ring[net_rx.avail.idx % QSIZE] = id;
    barrier();
    net_rx.avail.idx++;
    barrier();
}

static void net_ack(void)
{
    uint32_t isr = nrd(REG_INT_STATUS);
    if (isr)
        nwr(REG_INT_ACK, isr);
}

void vnet_init(void)
{
    memset(&ninfo, 0, sizeof(ninfo));
    for (unsigned slot = 0; slot < VIRTIO_MAX_DEVICES; slot++) {
        nbase = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_STRIDE;
        if (nrd(REG_MAGIC) != 0x74726976)
            break;
        if (nrd(REG_VERSION) == 2 && nrd(REG_DEVICE_ID) == 1) {
            ninfo.present = true;
            ninfo.slot = slot;
            break;
        }
    }
    if (!ninfo.present)
        return;
    nwr(REG_STATUS, 0);
    nwr(REG_STATUS, ST_ACK | ST_DRIVER);
    nwr(REG_DEV_FEAT_SEL, 0);
    uint32_t f = nrd(REG_DEV_FEATURES);
    nwr(REG_DRV_FEAT_SEL, 0);
    nwr(REG_DRV_FEATURES, f & ((1u << 5) | (1u << 16))); /* MAC, STATUS */
    nwr(REG_DRV_FEAT_SEL, 1);
    nwr(REG_DRV_FEATURES, 1);
    nwr(REG_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
    if (!(nrd(REG_STATUS) & ST_FEATURES_OK) || !net_queue(0, &net_rx) || !net_queue(1, &net_tx)) {
        ninfo.error = "setup refused";
        nwr(REG_STATUS, 0x80);
        return;
    }
    uint32_t m0 = nrd(REG_CONFIG), m1 = nrd(REG_CONFIG + 4);
    for (unsigned i = 0; i < 4; i++)
        ninfo.mac[i] = (uint8_t)(m0 >> (8 * i));
    ninfo.mac[4] = (uint8_t)m1;
    ninfo.mac[5] = (uint8_t)(m1 >> 8);
    ninfo.link_up = (f >> 16 & 1) ? (m1 >> 16 & 1) : true;
    net_rx_seen = net_tx_seen = 0;
    for (uint16_t i = 0; i < NET_RXBUFS; i++) {
        net_rx.desc[i] = (struct desc){(uintptr_t)net_rxbuf[i], NET_BUFLEN, 2, 0};
        net_post_rx(i);
    }
    nwr(REG_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    nwr(REG_QUEUE_NOTIFY, 0);
}

const struct vnet_info *vnet_get_info(void)
{
    return &ninfo;
}

int vnet_send(const uint8_t dst[6], uint16_t type, const void *payload, unsigned len)
{
    if (!ninfo.present || ninfo.error)
        return VBLK_ERR_NODEV;
    if (len > NET_BUFLEN - NET_HDR - 14)
        len = NET_BUFLEN - NET_HDR - 14;
    memset(net_txbuf, 0, NET_HDR + 60);
    uint8_t *fr = net_txbuf + NET_HDR;
    for (unsigned i = 0; i < 6; i++) {
        fr[i] = dst[i];
        fr[6 + i] = ninfo.mac[i];
    }
    fr[12] = (uint8_t)(type >> 8);
    fr[13] = (uint8_t)type;
    const uint8_t *p = payload;
    for (unsigned i = 0; i < len; i++)
        fr[14 + i] = p[i];
    unsigned flen = 14 + len < 60 ? 60 : 14 + len;
    net_tx.desc[0] = (struct desc){(uintptr_t)net_txbuf, NET_HDR + flen, 0, 0};
    net_tx.avail.ring[net_tx.avail.idx % QSIZE] = 0;
    barrier();
    net_tx.avail.idx++;
    barrier();
    nwr(REG_QUEUE_NOTIFY, 1);
    for (unsigned long spins = 0; *(volatile uint16_t *)&net_tx.used.idx == net_tx_seen; spins++) {
        if (spins > 2000000)
            return VBLK_ERR_TIMEOUT;
        __asm__ volatile("pause");
    }
    net_tx_seen++;
    net_ack();
    return 0;
}

int vnet_poll(uint16_t type, uint8_t *frame, unsigned max)
{
    if (!ninfo.present || ninfo.error)
        return VBLK_ERR_NODEV;
    while (*(volatile uint16_t *)&net_rx.used.idx != net_rx_seen) {
        barrier();
        unsigned e = net_rx_seen % QSIZE;
        uint16_t id = (uint16_t)net_rx.used.ring[e].id;
        uint32_t len = net_rx.used.ring[e].len;
        net_rx_seen++;
        int got = -1;
        if (id < NET_RXBUFS && len >= NET_HDR + 14) {
            const uint8_t *fr = net_rxbuf[id] + NET_HDR;
            if ((uint16_t)(fr[12] << 8 | fr[13]) == type) {
                unsigned n = len - NET_HDR < max ? len - NET_HDR : max;
                for (unsigned i = 0; i < n; i++)
                    frame[i] = fr[i];
                got = (int)(len - NET_HDR);
            }
        }
        if (id < NET_RXBUFS)
            net_post_rx(id); /* give the buffer back */
        nwr(REG_QUEUE_NOTIFY, 0);
        net_ack();
        if (got >= 0)
            return got;
    }
    return VBLK_ERR_TIMEOUT; /* nothing (yet) */
}
