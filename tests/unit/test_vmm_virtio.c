/* nuvem-vmm virtio: split virtqueues, the virtio-mmio transport, virtio-blk on a raw file,
 * the ACPI description of the devices and the `disks` config. No KVM needed: guest RAM is a
 * plain buffer and the interrupt line a recorded level. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "acpi.h"
#include "config.h"
#include "mem.h"
#include "virtio.h"
#include "virtio_blk.h"
#include "virtio_net.h"

#include <poll.h>
#include <sys/socket.h>

#define RAM_SIZE (1u << 20)
#define DESC     0x10000
#define AVAIL    0x11000
#define USED     0x12000
#define BUF      0x20000
#define QN       8

typedef struct fix {
    boot_mem m;
    int irq_level;
    unsigned irq_gsi, irq_changes;
} fix;

static int setup(void **state)
{
    fix *f = xcalloc(1, sizeof(*f));
    f->m.ram = xcalloc(1, RAM_SIZE);
    f->m.size = f->m.low = RAM_SIZE;
    f->irq_level = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fix *f = *state;
    free(f->m.ram);
    free(f);
    return 0;
}

static void put_desc(fix *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    uint8_t *d = f->m.ram + DESC + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

/* Makes descriptor `head` available (avail ring entry idx, then avail->idx = idx + 1). */
static void offer(fix *f, uint16_t idx, uint16_t head)
{
    memcpy(f->m.ram + AVAIL + 4 + 2 * (idx % QN), &head, 2);
    uint16_t n = (uint16_t)(idx + 1);
    memcpy(f->m.ram + AVAIL + 2, &n, 2);
}

static uint16_t used_idx(fix *f)
{
    uint16_t v;
    memcpy(&v, f->m.ram + USED + 2, 2);
    return v;
}

static void used_elem(fix *f, unsigned i, uint32_t *id, uint32_t *len)
{
    memcpy(id, f->m.ram + USED + 4 + 8 * (i % QN), 4);
    memcpy(len, f->m.ram + USED + 8 + 8 * (i % QN), 4);
}

static virtq queue(void)
{
    return (virtq){
        .num_max = 256, .num = QN, .ready = true, .desc = DESC, .avail = AVAIL, .used = USED};
}

/* ---- virtqueues ---- */

static void test_virtq_pop_push(void **state)
{
    fix *f = *state;
    virtq q = queue();
    static virtq_chain c;
    assert_true(virtq_valid(&q, &f->m));
    assert_int_equal(virtq_pop(&q, &f->m, &c), 0); /* empty */
    put_desc(f, 3, BUF, 16, VIRTQ_DESC_F_NEXT, 5);
    put_desc(f, 5, BUF + 0x100, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
    put_desc(f, 1, BUF + 0x400, 1, VIRTQ_DESC_F_WRITE, 0);
    offer(f, 0, 3);
    assert_int_equal(virtq_pop(&q, &f->m, &c), 1);
    assert_int_equal(c.head, 3);
    assert_int_equal(c.nseg, 3);
    assert_ptr_equal(c.seg[0].data, f->m.ram + BUF);
    assert_int_equal(c.seg[0].len, 16);
    assert_false(c.seg[0].writable);
    assert_true(c.seg[1].writable);
    assert_int_equal(c.seg[1].len, 512);
    assert_ptr_equal(c.seg[2].data, f->m.ram + BUF + 0x400);
    assert_int_equal(virtq_pop(&q, &f->m, &c), 0);
    virtq_push(&q, &f->m, 3, 513);
    assert_int_equal(used_idx(f), 1);
    uint32_t id, len;
    used_elem(f, 0, &id, &len);
    assert_int_equal(id, 3);
    assert_int_equal(len, 513);
    /* Indexes wrap around the ring (and the 16-bit counter). */
    for (uint16_t i = 1; i < 3 * QN; i++) {
        put_desc(f, 0, BUF, 8, 0, 0);
        offer(f, i, 0);
        assert_int_equal(virtq_pop(&q, &f->m, &c), 1);
        assert_int_equal(c.nseg, 1);
        virtq_push(&q, &f->m, 0, 0);
    }
    assert_int_equal(used_idx(f), 3 * QN);
}

static void test_virtq_malformed(void **state)
{
    fix *f = *state;
    static virtq_chain c;
    /* head out of range */
    virtq q = queue();
    offer(f, 0, QN);
    assert_int_equal(virtq_pop(&q, &f->m, &c), -1);
    /* a loop */
    q = queue();
    put_desc(f, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 1);
    put_desc(f, 1, BUF, 8, VIRTQ_DESC_F_NEXT, 0);
    offer(f, 0, 0);
    assert_int_equal(virtq_pop(&q, &f->m, &c), -1);
    /* next out of range */
    q = queue();
    put_desc(f, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 200);
    assert_int_equal(virtq_pop(&q, &f->m, &c), -1);
    /* buffer outside guest RAM, and one crossing its end */
    q = queue();
    put_desc(f, 0, RAM_SIZE, 8, 0, 0);
    assert_int_equal(virtq_pop(&q, &f->m, &c), -1);
    q = queue();
    put_desc(f, 0, RAM_SIZE - 4, 8, 0, 0);
    assert_int_equal(virtq_pop(&q, &f->m, &c), -1);
    q = queue();
    put_desc(f, 0, UINT64_MAX - 2, 8, 0, 0);
    assert_int_equal(virtq_pop(&q, &f->m, &c), -1);
    /* readable after writable */
    q = queue();
    put_desc(f, 0, BUF, 8, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
    put_desc(f, 1, BUF, 8, 0, 0);
    assert_int_equal(virtq_pop(&q, &f->m, &c), -1);
    /* indirect (not offered) */
    q = queue();
    put_desc(f, 0, BUF, 16, VIRTQ_DESC_F_INDIRECT, 0);
    assert_int_equal(virtq_pop(&q, &f->m, &c), -1);
    /* the driver claims more entries than the ring holds */
    q = queue();
    put_desc(f, 0, BUF, 8, 0, 0);
    offer(f, QN + 3, 0);
    assert_int_equal(virtq_pop(&q, &f->m, &c), -1);
    /* zero-length buffers are allowed (no mapping) */
    q = queue();
    put_desc(f, 0, 0xdeadbeef000ull, 0, 0, 0);
    offer(f, 0, 0);
    assert_int_equal(virtq_pop(&q, &f->m, &c), 1);
    assert_null(c.seg[0].data);
    /* ring placement */
    q = queue();
    q.num = 6; /* not a power of two */
    assert_false(virtq_valid(&q, &f->m));
    q = queue();
    q.used = RAM_SIZE - 8;
    assert_false(virtq_valid(&q, &f->m));
    q = queue();
    q.num = 512; /* over num_max */
    assert_false(virtq_valid(&q, &f->m));
}

/* ---- transport + virtio-blk ---- */

static void rec_irq(void *opaque, unsigned gsi, int level)
{
    fix *f = opaque;
    if (f->irq_level != level)
        f->irq_changes++;
    f->irq_level = level;
    f->irq_gsi = gsi;
}

static uint32_t rd(virtio_dev *d, uint32_t off)
{
    uint32_t v;
    virtio_mmio_access(d, off, false, (uint8_t *)&v, 4);
    return v;
}

static void wr(virtio_dev *d, uint32_t off, uint32_t v)
{
    virtio_mmio_access(d, off, true, (uint8_t *)&v, 4);
}

/* The driver's initialisation sequence (virtio 1.1, 3.1.1) with our queue layout. */
static void driver_init(virtio_dev *d, uint64_t features)
{
    wr(d, VIRTIO_MMIO_STATUS, 0);
    wr(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
    wr(d, VIRTIO_MMIO_STATUS, 1 | 2 | VIRTIO_STATUS_FEATURES_OK);
    wr(d, VIRTIO_MMIO_QUEUE_SEL, 0);
    wr(d, VIRTIO_MMIO_QUEUE_NUM, QN);
    wr(d, VIRTIO_MMIO_QUEUE_DESC_LOW, DESC);
    wr(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
    wr(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, AVAIL);
    wr(d, VIRTIO_MMIO_QUEUE_USED_LOW, USED);
    wr(d, VIRTIO_MMIO_QUEUE_READY, 1);
    wr(d, VIRTIO_MMIO_STATUS, 1 | 2 | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

static int tmp_image(uint64_t size)
{
    char path[] = "/tmp/nuvem-virtio-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    return fd;
}

/* One request: header at BUF, data at BUF+0x1000 (len bytes, device-writable for reads and
 * GET_ID), status at BUF+0x800. Returns the status byte; *used_len gets the used length. */
static int request(fix *f, virtio_dev *d, uint16_t *idx, uint32_t type, uint64_t sector,
                   uint32_t len, uint32_t *used_len)
{
    uint8_t *hdr = f->m.ram + BUF;
    memset(hdr, 0, 16);
    memcpy(hdr, &type, 4);
    memcpy(hdr + 8, &sector, 8);
    f->m.ram[BUF + 0x800] = 0xee;
    bool dev_writes = type != VIRTIO_BLK_T_OUT;
    put_desc(f, 0, BUF, 16, VIRTQ_DESC_F_NEXT, len ? 1 : 2);
    put_desc(f, 1, BUF + 0x1000, len, VIRTQ_DESC_F_NEXT | (dev_writes ? VIRTQ_DESC_F_WRITE : 0), 2);
    put_desc(f, 2, BUF + 0x800, 1, VIRTQ_DESC_F_WRITE, 0);
    offer(f, *idx, 0);
    uint16_t before = used_idx(f);
    wr(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert_int_equal(used_idx(f), (uint16_t)(before + 1));
    uint32_t id;
    used_elem(f, *idx, &id, used_len);
    assert_int_equal(id, 0);
    (*idx)++;
    return f->m.ram[BUF + 0x800];
}

static void test_mmio_transport(void **state)
{
    fix *f = *state;
    virtio_blk *b = virtio_blk_new_fd(0, tmp_image(64 * 512), 64 * 512, false);
    virtio_dev *d = virtio_blk_dev(b);
    virtio_dev_attach(d, &f->m, 17, rec_irq, f);
    assert_int_equal(rd(d, VIRTIO_MMIO_MAGIC_VALUE), VIRTIO_MMIO_MAGIC);
    assert_int_equal(rd(d, VIRTIO_MMIO_VERSION), 2);
    assert_int_equal(rd(d, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
    assert_int_equal(rd(d, VIRTIO_MMIO_VENDOR_ID), VIRTIO_MMIO_VENDOR);
    wr(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    assert_int_equal(rd(d, VIRTIO_MMIO_DEVICE_FEATURES), 1); /* VERSION_1 */
    wr(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    uint32_t feat = rd(d, VIRTIO_MMIO_DEVICE_FEATURES);
    assert_true(feat & (1u << VIRTIO_BLK_F_FLUSH));
    assert_false(feat & (1u << VIRTIO_BLK_F_RO));
    /* Unaligned or narrow register accesses read as all ones. */
    uint16_t narrow = 0;
    virtio_mmio_access(d, VIRTIO_MMIO_MAGIC_VALUE, false, (uint8_t *)&narrow, 2);
    assert_int_equal(narrow, 0xffff);
    /* Config space: capacity (any width), seg_max, blk_size. */
    uint64_t cap = 0;
    virtio_mmio_access(d, VIRTIO_MMIO_CONFIG, false, (uint8_t *)&cap, 8);
    assert_int_equal(cap, 64);
    assert_int_equal(rd(d, VIRTIO_MMIO_CONFIG + 12), VIRTIO_BLK_SEG_MAX);
    assert_int_equal(rd(d, VIRTIO_MMIO_CONFIG + 20), 512);
    assert_int_equal(rd(d, VIRTIO_MMIO_CONFIG + 0x80), 0);
    /* Without VERSION_1 (a legacy driver) FEATURES_OK does not stick. */
    wr(d, VIRTIO_MMIO_STATUS, 3);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES, 0);
    wr(d, VIRTIO_MMIO_STATUS, 3 | VIRTIO_STATUS_FEATURES_OK);
    assert_int_equal(rd(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, 0);
    /* Nor with a feature that was not offered (indirect descriptors, bit 28). */
    driver_init(d, 1ull << 32 | 1ull << 28);
    assert_int_equal(rd(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, 0);
    /* Properly: queue accepted, a notify raises the line, the ack lowers it. */
    driver_init(d, 1ull << 32 | 1ull << VIRTIO_BLK_F_FLUSH);
    assert_int_equal(rd(d, VIRTIO_MMIO_STATUS), 1 | 2 | 4 | 8);
    assert_int_equal(rd(d, VIRTIO_MMIO_QUEUE_NUM_MAX), VIRTQ_MAX_SIZE);
    assert_int_equal(rd(d, VIRTIO_MMIO_QUEUE_READY), 1);
    wr(d, VIRTIO_MMIO_QUEUE_SEL, 1); /* no second queue */
    assert_int_equal(rd(d, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    wr(d, VIRTIO_MMIO_QUEUE_SEL, 0);
    uint16_t idx = 0;
    uint32_t ulen;
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_FLUSH, 0, 0, &ulen), VIRTIO_BLK_S_OK);
    assert_int_equal(f->irq_level, 1);
    assert_int_equal(f->irq_gsi, 17);
    assert_int_equal(rd(d, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_INT_USED);
    wr(d, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_INT_USED);
    assert_int_equal(f->irq_level, 0);
    assert_int_equal(rd(d, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    /* A ready queue's layout cannot change under the device. */
    wr(d, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x5000);
    assert_int_equal(d->q[0].desc, DESC);
    /* Reset: status 0 clears everything. */
    wr(d, VIRTIO_MMIO_STATUS, 0);
    assert_int_equal(rd(d, VIRTIO_MMIO_STATUS), 0);
    assert_int_equal(rd(d, VIRTIO_MMIO_QUEUE_READY), 0);
    /* Rings outside RAM: the queue is refused and the device needs a reset. */
    wr(d, VIRTIO_MMIO_STATUS, 3);
    wr(d, VIRTIO_MMIO_QUEUE_NUM, QN);
    wr(d, VIRTIO_MMIO_QUEUE_DESC_LOW, 0);
    wr(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0x10);
    wr(d, VIRTIO_MMIO_QUEUE_READY, 1);
    assert_int_equal(rd(d, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_true(rd(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
    /* A broken ring while running: NEEDS_RESET and a config interrupt, no crash. */
    driver_init(d, 1ull << 32);
    offer(f, 0, 200);
    wr(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert_true(rd(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
    assert_true(rd(d, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_INT_CONFIG);
    virtio_blk_free(b);
}

static void test_blk_requests(void **state)
{
    fix *f = *state;
    int fd = tmp_image(64 * 512);
    int host = dup(fd);
    virtio_blk *b = virtio_blk_new_fd(3, fd, 64 * 512, false);
    virtio_dev *d = virtio_blk_dev(b);
    virtio_dev_attach(d, &f->m, 16, rec_irq, f);
    driver_init(d, 1ull << 32 | 1ull << VIRTIO_BLK_F_FLUSH);
    uint16_t idx = 0;
    uint32_t ulen;
    /* write two sectors at 10 */
    for (unsigned i = 0; i < 1024; i++)
        f->m.ram[BUF + 0x1000 + i] = (uint8_t)(i * 7 + 1);
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_OUT, 10, 1024, &ulen), VIRTIO_BLK_S_OK);
    assert_int_equal(ulen, 1);
    uint8_t disk[1024];
    assert_int_equal(pread(host, disk, sizeof(disk), 10 * 512), 1024);
    assert_memory_equal(disk, f->m.ram + BUF + 0x1000, 1024);
    /* read them back */
    memset(f->m.ram + BUF + 0x1000, 0, 1024);
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_IN, 10, 1024, &ulen), VIRTIO_BLK_S_OK);
    assert_int_equal(ulen, 1025);
    assert_memory_equal(disk, f->m.ram + BUF + 0x1000, 1024);
    /* the last sector, then beyond it, and a partial sector */
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_IN, 63, 512, &ulen), VIRTIO_BLK_S_OK);
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_IN, 63, 1024, &ulen), VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_OUT, 64, 512, &ulen), VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_IN, UINT64_MAX, 512, &ulen),
                     VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_IN, 0, 100, &ulen), VIRTIO_BLK_S_IOERR);
    /* flush, get-id, an unknown type */
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_FLUSH, 0, 0, &ulen), VIRTIO_BLK_S_OK);
    memset(f->m.ram + BUF + 0x1000, 'z', 20);
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_GET_ID, 0, 20, &ulen), VIRTIO_BLK_S_OK);
    assert_int_equal(ulen, 21);
    assert_string_equal((char *)f->m.ram + BUF + 0x1000, "nuvem-vd3");
    assert_int_equal(request(f, d, &idx, 99, 0, 0, &ulen), VIRTIO_BLK_S_UNSUPP);
    /* the file shrinks under the device: reads past its end fail */
    assert_int_equal(ftruncate(host, 2 * 512), 0);
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_IN, 10, 512, &ulen), VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_IN, 1, 512, &ulen), VIRTIO_BLK_S_OK);
    virtio_blk_stats st;
    virtio_blk_get_stats(b, &st);
    assert_int_equal(st.writes, 1);
    assert_int_equal(st.reads, 3);
    assert_int_equal(st.flushes, 1);
    assert_int_equal(st.write_bytes, 1024);
    assert_int_equal(st.errors, 6);
    virtio_blk_free(b);
    close(host);
}

/* With the I/O thread started a notify only kicks it: the request completes asynchronously,
 * then the used ring and the interrupt follow; reset and detach wait for it. */
static void test_blk_io_thread(void **state)
{
    fix *f = *state;
    int fd = tmp_image(64 * 512);
    int host = dup(fd);
    virtio_blk *b = virtio_blk_new_fd(0, fd, 64 * 512, false);
    virtio_dev *d = virtio_blk_dev(b);
    virtio_dev_attach(d, &f->m, 16, rec_irq, f);
    assert_null(virtio_blk_start(b));
    driver_init(d, 1ull << 32 | 1ull << VIRTIO_BLK_F_FLUSH);
    for (uint16_t n = 0; n < 20; n++) {
        uint8_t *hdr = f->m.ram + BUF;
        uint32_t type = VIRTIO_BLK_T_OUT;
        uint64_t sector = n;
        memset(hdr, 0, 16);
        memcpy(hdr, &type, 4);
        memcpy(hdr + 8, &sector, 8);
        memset(f->m.ram + BUF + 0x1000, 'a' + n, 512);
        f->m.ram[BUF + 0x800] = 0xee;
        put_desc(f, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1);
        put_desc(f, 1, BUF + 0x1000, 512, VIRTQ_DESC_F_NEXT, 2);
        put_desc(f, 2, BUF + 0x800, 1, VIRTQ_DESC_F_WRITE, 0);
        offer(f, n, 0);
        wr(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        for (int t = 0; t < 500 && __atomic_load_n((uint16_t *)(f->m.ram + USED + 2),
                                                   __ATOMIC_ACQUIRE) != n + 1;
             t++)
            poll(NULL, 0, 10);
        assert_int_equal(used_idx(f), n + 1);
        assert_int_equal(f->m.ram[BUF + 0x800], VIRTIO_BLK_S_OK);
        uint8_t got[512], want[512];
        memset(want, 'a' + n, 512);
        assert_int_equal(pread(host, got, 512, n * 512), 512);
        assert_memory_equal(got, want, 512);
    }
    pthread_mutex_lock(&d->lock);
    int level = f->irq_level;
    pthread_mutex_unlock(&d->lock);
    assert_int_equal(level, 1);
    wr(d, VIRTIO_MMIO_STATUS, 0); /* reset with the thread idle */
    virtio_dev_detach(d);
    wr(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0); /* detached: nothing to serve, nothing touched */
    virtio_blk_stats st;
    virtio_blk_get_stats(b, &st);
    assert_int_equal(st.writes, 20);
    virtio_blk_free(b);
    close(host);
}

static void test_blk_readonly(void **state)
{
    fix *f = *state;
    int fd = tmp_image(8 * 512);
    int host = dup(fd);
    virtio_blk *b = virtio_blk_new_fd(0, fd, 8 * 512, true);
    virtio_dev *d = virtio_blk_dev(b);
    virtio_dev_attach(d, &f->m, 16, rec_irq, f);
    assert_true(rd(d, VIRTIO_MMIO_DEVICE_FEATURES) & (1u << VIRTIO_BLK_F_RO));
    driver_init(d, 1ull << 32 | 1ull << VIRTIO_BLK_F_RO);
    uint16_t idx = 0;
    uint32_t ulen;
    memset(f->m.ram + BUF + 0x1000, 'w', 512);
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_OUT, 0, 512, &ulen), VIRTIO_BLK_S_IOERR);
    uint8_t disk[512], zero[512] = {0};
    assert_int_equal(pread(host, disk, 512, 0), 512);
    assert_memory_equal(disk, zero, 512);
    assert_int_equal(request(f, d, &idx, VIRTIO_BLK_T_IN, 0, 512, &ulen), VIRTIO_BLK_S_OK);
    virtio_blk_free(b);
    close(host);
}

static void test_blk_open_errors(void **state)
{
    virtio_blk *b = NULL;
    xerr *e = virtio_blk_open(2, "/nonexistent/disk.img", false, &b);
    assert_non_null(e);
    assert_string_equal(e->code, "INVALID_VALUE");
    assert_string_equal(e->params[0], "disks[2].path");
    xerr_free(e);
    char path[] = "/tmp/nuvem-virtio-open-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    e = virtio_blk_open(0, path, false, &b); /* empty */
    assert_non_null(e);
    assert_string_equal(e->params[1], "empty image");
    xerr_free(e);
    assert_int_equal(write(fd, "abc", 3), 3);
    e = virtio_blk_open(0, path, false, &b);
    assert_non_null(e);
    assert_non_null(strstr(e->params[1], "not a multiple of 512"));
    xerr_free(e);
    assert_int_equal(ftruncate(fd, 4096), 0);
    assert_null(virtio_blk_open(0, path, false, &b));
    virtio_blk *b2 = NULL;
    e = virtio_blk_open(1, path, true, &b2); /* exclusively locked by b */
    assert_non_null(e);
    assert_string_equal(e->params[1], "in use by another process");
    xerr_free(e);
    virtio_blk_free(b);
    assert_null(virtio_blk_open(0, path, true, &b));
    assert_null(virtio_blk_open(1, path, true, &b2)); /* read-only ones share */
    virtio_blk_free(b);
    virtio_blk_free(b2);
    e = virtio_blk_open(0, "/tmp", false, &b);
    assert_non_null(e);
    xerr_free(e);
    close(fd);
    unlink(path);
}

/* ---- virtio-net: a datagram socketpair stands in for the tap ---- */

#define RXQ_DESC  0x30000
#define RXQ_AVAIL 0x31000
#define RXQ_USED  0x32000
#define RXBUF     0x40000

static void setup_queue(virtio_dev *d, unsigned qi, uint64_t desc, uint64_t avail, uint64_t used)
{
    wr(d, VIRTIO_MMIO_QUEUE_SEL, qi);
    wr(d, VIRTIO_MMIO_QUEUE_NUM, QN);
    wr(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
    wr(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)avail);
    wr(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)used);
    wr(d, VIRTIO_MMIO_QUEUE_READY, 1);
    assert_int_equal(rd(d, VIRTIO_MMIO_QUEUE_READY), 1);
}

static uint16_t rd16g(fix *f, uint64_t gpa)
{
    uint16_t v;
    memcpy(&v, f->m.ram + gpa, 2);
    return v;
}

static void test_net(void **state)
{
    fix *f = *state;
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sp), 0);
    const uint8_t mac[6] = {0x52, 0x54, 0, 1, 2, 3};
    virtio_net *n = virtio_net_new_fd(0, sp[0], mac);
    virtio_dev *d = virtio_net_dev(n);
    virtio_dev_attach(d, &f->m, 16, rec_irq, f);
    assert_null(virtio_net_start(n));
    assert_int_equal(rd(d, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_NET);
    uint8_t cfg[8];
    for (unsigned i = 0; i < 8; i++)
        virtio_mmio_access(d, VIRTIO_MMIO_CONFIG + i, false, cfg + i, 1);
    assert_memory_equal(cfg, mac, 6);
    assert_int_equal(cfg[6], 1); /* link up */
    wr(d, VIRTIO_MMIO_STATUS, 3);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES, 1u << VIRTIO_NET_F_MAC);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES, 1);
    wr(d, VIRTIO_MMIO_STATUS, 3 | VIRTIO_STATUS_FEATURES_OK);
    setup_queue(d, 0, RXQ_DESC, RXQ_AVAIL, RXQ_USED);
    setup_queue(d, 1, DESC, AVAIL, USED);
    wr(d, VIRTIO_MMIO_STATUS, 3 | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    /* TX: header (12 bytes, in its own buffer) + a frame split over two buffers */
    memset(f->m.ram + BUF, 0, 12);
    memcpy(f->m.ram + BUF + 0x100, "0123456789ab", 12);
    memcpy(f->m.ram + BUF + 0x200, "\x88\xb5hello", 7);
    put_desc(f, 0, BUF, 12, VIRTQ_DESC_F_NEXT, 1);
    put_desc(f, 1, BUF + 0x100, 12, VIRTQ_DESC_F_NEXT, 2);
    put_desc(f, 2, BUF + 0x200, 7, 0, 0);
    offer(f, 0, 0);
    wr(d, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    assert_int_equal(used_idx(f), 1);
    uint8_t pkt[2048];
    assert_int_equal(recv(sp[1], pkt, sizeof(pkt), 0), 19);
    assert_memory_equal(pkt, "0123456789ab\x88\xb5hello", 19);
    assert_int_equal(f->irq_level, 1);
    /* RX: a frame from the "tap" lands in the posted buffer after a zeroed header with
     * num_buffers = 1; frames wait for buffers, in order. */
    for (unsigned i = 0; i < 3; i++) {
        uint8_t fr[60] = {0};
        fr[0] = (uint8_t)(0xa0 + i);
        assert_int_equal(send(sp[1], fr, sizeof(fr), 0), 60);
    }
    for (uint16_t i = 0; i < 3; i++) {
        uint64_t gbuf = RXBUF + 0x800u * i;
        memset(f->m.ram + gbuf, 0xee, 16);
        uint8_t *dsc = f->m.ram + RXQ_DESC + 16 * i;
        uint32_t len = 1536;
        uint16_t flags = VIRTQ_DESC_F_WRITE, next = 0;
        memcpy(dsc, &gbuf, 8);
        memcpy(dsc + 8, &len, 4);
        memcpy(dsc + 12, &flags, 2);
        memcpy(dsc + 14, &next, 2);
        memcpy(f->m.ram + RXQ_AVAIL + 4 + 2 * i, &i, 2);
        uint16_t ai = (uint16_t)(i + 1);
        memcpy(f->m.ram + RXQ_AVAIL + 2, &ai, 2);
        wr(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        for (int t = 0; t < 500 && rd16g(f, RXQ_USED + 2) != i + 1; t++)
            poll(NULL, 0, 10);
        assert_int_equal(rd16g(f, RXQ_USED + 2), i + 1);
        uint32_t ulen;
        memcpy(&ulen, f->m.ram + RXQ_USED + 8 + 8 * i, 4);
        assert_int_equal(ulen, 72);
        uint16_t nbuf;
        memcpy(&nbuf, f->m.ram + gbuf + 10, 2);
        assert_int_equal(nbuf, 1);
        assert_int_equal(f->m.ram[gbuf], 0);
        assert_int_equal(f->m.ram[gbuf + 12], 0xa0 + i);
    }
    virtio_net_stats st;
    virtio_net_get_stats(n, &st);
    assert_int_equal(st.tx_packets, 1);
    assert_int_equal(st.tx_bytes, 19);
    assert_int_equal(st.rx_packets, 3);
    /* Detached (machine torn down): notifies and frames touch no guest memory. */
    virtio_dev_detach(d);
    assert_int_equal(send(sp[1], pkt, 60, 0), 60);
    wr(d, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    virtio_net_free(n);
    close(sp[1]);
}

/* ---- ACPI and config ---- */

static uint8_t sum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s += *p++;
    return s;
}

static void test_acpi_devices(void **state)
{
    fix *f = *state;
    acpi_mmio_dev devs[3] = {
        {0xd0000000, 0x200, 16}, {0xd0001000, 0x200, 17}, {0xd0002000, 0x200, 18}};
    uint64_t rsdp;
    assert_null(acpi_write_tables_devs(&f->m, 64, devs, 3, &rsdp));
    uint64_t xsdt, fadt, dsdt;
    memcpy(&xsdt, f->m.ram + rsdp + 24, 8);
    memcpy(&fadt, f->m.ram + xsdt + 36, 8);
    memcpy(&dsdt, f->m.ram + fadt + 140, 8);
    const uint8_t *t = f->m.ram + dsdt;
    uint32_t len;
    memcpy(&len, t + 4, 4);
    assert_memory_equal(t, "DSDT", 4);
    assert_int_equal(sum(t, len), 0);
    assert_memory_equal(t + 36, "\x08_S5_", 5);
    /* Scope (\_SB) with a two-byte PkgLength covering the rest of the table */
    const uint8_t *s = t + 36 + 14;
    assert_int_equal(s[0], 0x10);
    assert_int_equal(s[1] >> 6, 1);
    assert_int_equal((s[1] & 0xf) | s[2] << 4, len - 36 - 14 - 1);
    assert_memory_equal(s + 3, "\\_SB_", 5);
    /* each device: HID, UID, memory range and GSI */
    const uint8_t *p = s + 8;
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(p[0], 0x5b);
        assert_int_equal(p[1], 0x82);
        unsigned dl = p[2];
        assert_true(dl < 64);
        char name[5] = {'V', 'D', '0', (char)('0' + i), 0};
        assert_memory_equal(p + 3, name, 4);
        assert_non_null(memmem(p, dl + 2, "LNRO0005", 8));
        const uint8_t *mem = memmem(p, dl + 2, "\x86\x09\x00\x01", 4);
        assert_non_null(mem);
        uint32_t base, size, gsi;
        memcpy(&base, mem + 4, 4);
        memcpy(&size, mem + 8, 4);
        assert_int_equal(base, devs[i].base);
        assert_int_equal(size, 0x200);
        assert_int_equal(mem[12], 0x89);
        assert_int_equal(mem[15], 0x01); /* consumer, level, active high, exclusive */
        memcpy(&gsi, mem + 17, 4);
        assert_int_equal(gsi, devs[i].gsi);
        assert_int_equal(mem[21], 0x79);
        p += 2 + dl;
    }
    assert_ptr_equal(p, t + len);
    /* The MADT still lists 64 CPUs and does not overlap the DSDT. */
    uint64_t madt;
    memcpy(&madt, f->m.ram + xsdt + 44, 8);
    uint32_t mlen;
    memcpy(&mlen, f->m.ram + madt + 4, 4);
    assert_true(madt + mlen <= dsdt);
    assert_int_equal(sum(f->m.ram + madt, mlen), 0);
    /* No devices: no scope. */
    assert_null(acpi_write_tables_devs(&f->m, 1, NULL, 0, &rsdp));
    memcpy(&len, f->m.ram + dsdt + 4, 4);
    memcpy(&xsdt, f->m.ram + rsdp + 24, 8);
    memcpy(&fadt, f->m.ram + xsdt + 36, 8);
    memcpy(&dsdt, f->m.ram + fadt + 140, 8);
    memcpy(&len, f->m.ram + dsdt + 4, 4);
    assert_int_equal(len, 36 + 14);
}

static vmm_config *parse(const char *json, xerr **e)
{
    *e = NULL;
    return vmm_config_parse(json, strlen(json), e);
}

static void expect_err(const char *json, const char *code, const char *p0, const char *p1)
{
    xerr *e;
    vmm_config *c = parse(json, &e);
    assert_null(c);
    assert_non_null(e);
    assert_string_equal(e->code, code);
    assert_string_equal(e->params[0], p0);
    if (p1) {
        assert_true(e->nparams > 1);
        assert_string_equal(e->params[1], p1);
    }
    xerr_free(e);
}

static void test_config_disks(void **state)
{
    xerr *e;
    vmm_config *c = parse("{\"kernel\": \"k\", \"control\": \"c\", \"disks\": ["
                          "{\"path\": \"/a.img\"}, {\"path\": \"/b.img\", \"readonly\": true}]}",
                          &e);
    assert_non_null(c);
    assert_int_equal(c->ndisks, 2);
    assert_string_equal(c->disks[0].path, "/a.img");
    assert_false(c->disks[0].readonly);
    assert_string_equal(c->disks[1].path, "/b.img");
    assert_true(c->disks[1].readonly);
    vmm_config_free(c);
    c = parse("{\"kernel\": \"k\", \"control\": \"c\", \"disks\": []}", &e);
    assert_non_null(c);
    assert_int_equal(c->ndisks, 0);
    vmm_config_free(c);
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"disks\": {}}", "FIELD_TYPE_ERROR",
               "disks", NULL);
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"disks\": [1]}", "FIELD_TYPE_ERROR",
               "disks[0]", NULL);
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"disks\": [{}]}", "INVALID_VALUE", "disks",
               "disks[0].path: missing");
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"disks\": [{\"path\": \"\"}]}",
               "INVALID_VALUE", "disks", "disks[0].path: empty");
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"disks\": [{\"path\": \"/a\"}, "
               "{\"path\": \"/b\", \"readonly\": 1}]}",
               "FIELD_TYPE_ERROR", "disks[1].readonly", NULL);
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"disks\": [{\"path\": \"/a\", "
               "\"cache\": \"none\"}]}",
               "INVALID_VALUE", "disks", "disks[0].cache: unknown key");
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"disks\": [{\"path\": \"/a\"},"
               "{\"path\": \"/a\"},{\"path\": \"/a\"},{\"path\": \"/a\"},{\"path\": \"/a\"},"
               "{\"path\": \"/a\"},{\"path\": \"/a\"},{\"path\": \"/a\"},{\"path\": \"/a\"}]}",
               "INVALID_VALUE", "disks", "too many (at most 8)");
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"nics\": [{}]}", "INVALID_VALUE", "nics",
               "nics[0].tap: missing");
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"nics\": [{\"tap\": \"t\", \"mac\": "
               "\"01:00:00:00:00:01\"}]}",
               "INVALID_VALUE", "nics", "nics[0].mac: not a unicast MAC address");
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"nics\": [{\"tap\": \"t\", \"mac\": "
               "\"52:54:00:00:00:1\"}]}",
               "INVALID_VALUE", "nics", "nics[0].mac: not a unicast MAC address");
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"nics\": [{\"tap\": 1}]}",
               "FIELD_TYPE_ERROR", "nics[0].tap", NULL);
    expect_err("{\"kernel\": \"k\", \"control\": \"c\", \"nics\": [{\"tap\": \"t\", \"vlan\": 1}]}",
               "INVALID_VALUE", "nics", "nics[0].vlan: unknown key");
    c = parse("{\"kernel\": \"k\", \"control\": \"c\", \"nics\": [{\"tap\": \"tap7\", \"mac\": "
              "\"52:54:00:AB:cd:0e\"}, {\"tap\": \"tap8\"}]}",
              &e);
    assert_non_null(c);
    assert_int_equal(c->nnics, 2);
    assert_string_equal(c->nics[0].tap, "tap7");
    assert_memory_equal(c->nics[0].mac, "\x52\x54\x00\xab\xcd\x0e", 6);
    assert_memory_equal(c->nics[1].mac, "\x52\x54\x00\x4e\x56\x02", 6);
    vmm_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_virtq_pop_push, setup, teardown),
        cmocka_unit_test_setup_teardown(test_virtq_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mmio_transport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blk_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blk_io_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blk_readonly, setup, teardown),
        cmocka_unit_test(test_blk_open_errors),
        cmocka_unit_test_setup_teardown(test_net, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acpi_devices, setup, teardown),
        cmocka_unit_test(test_config_disks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
