/* The mini guest's virtio-blk driver: virtio-mmio (version 2) devices at nuvem-vmm's fixed
 * slots (mirrors hypervisor/virtio.h), one split queue of 8 entries, polled completion. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* virtio-mmio (version 2) registers and device status bits, as the drivers use them */
#define REG_MAGIC         0x000
#define REG_VERSION       0x004
#define REG_DEVICE_ID     0x008
#define REG_DEV_FEATURES  0x010
#define REG_DEV_FEAT_SEL  0x014
#define REG_DRV_FEATURES  0x020
#define REG_DRV_FEAT_SEL  0x024
#define REG_QUEUE_SEL     0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM     0x038
#define REG_QUEUE_READY   0x044
#define REG_QUEUE_NOTIFY  0x050
#define REG_INT_STATUS    0x060
#define REG_INT_ACK       0x064
#define REG_STATUS        0x070
#define REG_DESC_LO       0x080
#define REG_DESC_HI       0x084
#define REG_AVAIL_LO      0x090
#define REG_AVAIL_HI      0x094
#define REG_USED_LO       0x0a0
#define REG_USED_HI       0x0a4
#define REG_CONFIG        0x100
#define ST_ACK            1
#define ST_DRIVER         2
#define ST_DRIVER_OK      4
#define ST_FEATURES_OK    8
#define ST_FAILED         0x80

#define QSIZE 8 /* entries of every queue the guest sets up */

#define barrier() __asm__ volatile("" ::: "memory")

/* A split virtqueue of QSIZE entries laid out in one page. */
struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

struct ring8 {
    struct desc desc[QSIZE];
    struct {
        uint16_t flags, idx, ring[QSIZE], used_event;
    } avail;
    struct {
        uint16_t flags, idx;
        struct {
            uint32_t id, len;
        } ring[QSIZE];
        uint16_t avail_event;
    } used __attribute__((aligned(4)));
} __attribute__((aligned(4096)));

static inline uint32_t mmio_rd(uintptr_t base, unsigned reg)
{
    return *(volatile uint32_t *)(base + reg);
}

static inline void mmio_wr(uintptr_t base, unsigned reg, uint32_t v)
{
    *(volatile uint32_t *)(base + reg) = v;
}

#define VIRTIO_MMIO_BASE   0xd0000000ul
#define VIRTIO_MMIO_STRIDE 0x1000
#define VIRTIO_MAX_DEVICES 8

struct vblk_info {
    bool present;
    unsigned slot;
    uint64_t capacity; /* 512-byte sectors */
    bool readonly, flush, discard, write_zeroes;
    uint32_t features; /* offered, low 32 bits */
    const char *error; /* why initialisation failed, or NULL */
};

/* Finds and initialises the first virtio-blk device (slots are filled from 0). */
void vblk_init(void);
const struct vblk_info *vblk_get_info(void);

#define VBLK_ERR_NODEV   (-1)
#define VBLK_ERR_TIMEOUT (-2)
/* One 512-byte sector; returns the device status (0 ok, 1 I/O error, 2 unsupported) or a
 * VBLK_ERR_*. */
int vblk_rw(bool write, uint64_t sector, void *buf);
int vblk_flush(void);
/* len bytes (a multiple of 512, one buffer of contiguous guest RAM) at sector. */
int vblk_rw_n(bool write, uint64_t sector, void *buf, uint32_t len);
/* One discard (zeroes: write-zeroes) range of count sectors. */
int vblk_discard(bool zeroes, uint64_t sector, uint32_t count);
/* Takes the device's interrupt status (acking it); on a configuration change re-reads the
 * capacity and returns true. */
bool vblk_poll_config(void);
/* The device's interrupt line (GSI), or -1 without a device. */
int vblk_gsi(void);
/* The device serial (GET_ID) into id[21]. */
int vblk_get_id(char *id);

/* The mini guest's virtio-net driver: the first virtio-net device, 4 RX buffers of 1536
 * bytes, frames sent as broadcast of a given ethertype, completion polled. */
struct vnet_info {
    bool present;
    unsigned slot;
    uint8_t mac[6];
    bool link_up;
    const char *error;
};

void vnet_init(void);
const struct vnet_info *vnet_get_info(void);
/* Sends one frame (dst, our MAC, type, payload padded to 60 bytes). 0 or VBLK_ERR_*. */
int vnet_send(const uint8_t dst[6], uint16_t type, const void *payload, unsigned len);
/* Takes received frames, dropping those of other ethertypes; copies the first one of `type`
 * (from its destination MAC on, at most max bytes) and returns its length, or
 * VBLK_ERR_TIMEOUT if none has arrived. */
int vnet_poll(uint16_t type, uint8_t *frame, unsigned max);
