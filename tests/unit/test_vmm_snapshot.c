/* nuvem-vmm save/restore: the pure parts of the file format (CRC-32C, file and section
 * headers, zero-page bitmaps and RAM chunk checks) and the save/load of the virtio transport
 * and the UART state. No KVM needed. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "serial.h"
#include "snapshot.h"
#include "virtio.h"
#include "vmm.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static void test_crc32c(void **state)
{
    (void)state;
    /* The standard check value of CRC-32C. */
    assert_int_equal(snap_crc32c(0, "123456789", 9), 0xe3069283u);
    assert_int_equal(snap_crc32c(0, "", 0), 0);
    /* Continuing a CRC over pieces equals one pass, for any split. */
    uint8_t buf[1000];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    uint32_t whole = snap_crc32c(0, buf, sizeof(buf));
    for (size_t cut = 0; cut <= sizeof(buf); cut += 37)
        assert_int_equal(snap_crc32c(snap_crc32c(0, buf, cut), buf + cut, sizeof(buf) - cut),
                         whole);
    buf[500] ^= 1;
    assert_int_not_equal(snap_crc32c(0, buf, sizeof(buf)), whole);
}

static void test_header(void **state)
{
    (void)state;
    uint8_t h[SNAP_HEADER_SIZE];
    snap_header_encode(h, 1234567);
    assert_null(snap_header_check(h));
    /* Every single flipped bit is caught. */
    for (size_t i = 0; i < sizeof(h) * 8; i++) {
        uint8_t c[SNAP_HEADER_SIZE];
        memcpy(c, h, sizeof(c));
        c[i / 8] ^= (uint8_t)(1u << (i % 8));
        assert_non_null(snap_header_check(c));
    }
    uint8_t c[SNAP_HEADER_SIZE];
    memcpy(c, h, sizeof(c));
    memcpy(c, "QFI\xfb\0\0\0\3", 8); /* a foreign file */
    assert_string_equal(snap_header_check(c), "not a nuvem-vmm save file (bad magic)");
    /* A consistent header of another version is refused as such. */
    memcpy(c, h, sizeof(c));
    uint32_t v = SNAP_VERSION + 1;
    memcpy(c + 8, &v, 4);
    uint32_t crc = snap_crc32c(0, c, 28);
    memcpy(c + 28, &crc, 4);
    assert_string_equal(snap_header_check(c), "unsupported save file version");
    /* Zeros (a file of holes) */
    memset(c, 0, sizeof(c));
    assert_non_null(snap_header_check(c));
}

static void test_section(void **state)
{
    (void)state;
    snap_section s = {.type = SNAP_SEC_VCPU, .index = 3, .length = 12345, .crc = 0xdeadbeef}, d;
    uint8_t h[SNAP_SECTION_SIZE];
    snap_section_encode(h, &s);
    assert_null(snap_section_decode(h, &d));
    assert_int_equal(d.type, SNAP_SEC_VCPU);
    assert_int_equal(d.index, 3);
    assert_int_equal(d.length, 12345);
    assert_int_equal(d.crc, 0xdeadbeef);
    for (size_t i = 0; i < sizeof(h); i++) {
        uint8_t c[SNAP_SECTION_SIZE];
        memcpy(c, h, sizeof(c));
        c[i] ^= 0x40;
        assert_non_null(snap_section_decode(c, &d));
    }
}

static void test_page_bitmap(void **state)
{
    (void)state;
    size_t npages = 70;
    uint8_t *ram = calloc(npages, SNAP_PAGE);
    assert_non_null(ram);
    uint8_t bm[16];
    assert_int_equal(snap_bitmap_bytes(npages), 16);
    assert_int_equal(snap_bitmap_bytes(64), 8);
    assert_int_equal(snap_bitmap_bytes(SNAP_CHUNK_PAGES), SNAP_CHUNK_PAGES / 8);
    memset(bm, 0xaa, sizeof(bm));
    assert_int_equal(snap_page_bitmap(ram, npages, NULL, bm), 0);
    for (size_t i = 0; i < sizeof(bm); i++)
        assert_int_equal(bm[i], 0);
    ram[0] = 1;                                /* first byte of page 0 */
    ram[5 * SNAP_PAGE + SNAP_PAGE - 1] = 0x80; /* last byte of page 5 */
    ram[64 * SNAP_PAGE + 2048] = 7;
    ram[69 * SNAP_PAGE + 4095] = 1;
    assert_true(snap_page_is_zero(ram + SNAP_PAGE));
    assert_false(snap_page_is_zero(ram + 5 * SNAP_PAGE));
    assert_int_equal(snap_page_bitmap(ram, npages, NULL, bm), 4);
    assert_int_equal(bm[0], 0x21); /* pages 0 and 5 */
    assert_int_equal(bm[8], 0x21); /* pages 64 and 69 */
    for (size_t i = 1; i < sizeof(bm); i++)
        if (i != 8)
            assert_int_equal(bm[i], 0);
    /* With pagemap entries: a page neither present (bit 63) nor swapped (62) is not read. */
    uint64_t pm[70];
    for (size_t i = 0; i < npages; i++)
        pm[i] = 1ull << 63;
    pm[5] = 0;           /* "never touched": taken as zero (its byte is not looked at) */
    pm[64] = 1ull << 62; /* swapped out: read */
    assert_int_equal(snap_page_bitmap(ram, npages, pm, bm), 3);
    assert_int_equal(bm[0], 0x01);
    assert_int_equal(bm[8], 0x21);
    free(ram);
}

/* A RAM chunk payload head: {offset, pages, 0} + bitmap. */
static size_t chunk_head(uint8_t *out, uint64_t off, uint32_t pages, const uint8_t *bm)
{
    uint32_t zero = 0;
    memcpy(out, &off, 8);
    memcpy(out + 8, &pages, 4);
    memcpy(out + 12, &zero, 4);
    memcpy(out + 16, bm, snap_bitmap_bytes(pages));
    return 16 + snap_bitmap_bytes(pages);
}

static void test_ram_chunk_check(void **state)
{
    (void)state;
    uint8_t p[16 + SNAP_CHUNK_PAGES / 8];
    uint8_t bm[SNAP_CHUNK_PAGES / 8] = {0};
    bm[0] = 0x03; /* pages 0, 1 */
    uint64_t ram = 8ull << 20, off;
    uint32_t pages;
    size_t n = chunk_head(p, 4ull << 20, 10, bm);
    assert_null(snap_ram_chunk_check(p, n, n + 2 * SNAP_PAGE, ram, &off, &pages));
    assert_int_equal(off, 4ull << 20);
    assert_int_equal(pages, 10);
    /* the length must match the bitmap */
    assert_non_null(snap_ram_chunk_check(p, n, n + SNAP_PAGE, ram, &off, &pages));
    assert_non_null(snap_ram_chunk_check(p, n, n + 3 * SNAP_PAGE, ram, &off, &pages));
    /* short payloads */
    assert_non_null(snap_ram_chunk_check(p, 8, n + 2 * SNAP_PAGE, ram, &off, &pages));
    assert_non_null(snap_ram_chunk_check(p, n - 1, n + 2 * SNAP_PAGE, ram, &off, &pages));
    /* a bit past the chunk's pages */
    bm[1] = 0x08; /* page 11 of 10 */
    n = chunk_head(p, 0, 10, bm);
    assert_non_null(snap_ram_chunk_check(p, n, n + 3 * SNAP_PAGE, ram, &off, &pages));
    bm[1] = 0;
    /* outside guest RAM, unaligned, too many pages, zero pages */
    n = chunk_head(p, ram - 4 * SNAP_PAGE, 10, bm);
    assert_non_null(snap_ram_chunk_check(p, n, n + 2 * SNAP_PAGE, ram, &off, &pages));
    n = chunk_head(p, 100, 10, bm);
    assert_non_null(snap_ram_chunk_check(p, n, n + 2 * SNAP_PAGE, ram, &off, &pages));
    n = chunk_head(p, 0, 0, bm);
    assert_non_null(snap_ram_chunk_check(p, n, n, ram, &off, &pages));
    uint32_t big = SNAP_CHUNK_PAGES + 1;
    memcpy(p + 8, &big, 4);
    assert_non_null(snap_ram_chunk_check(p, sizeof(p), sizeof(p), ram, &off, &pages));
    /* the last chunk of RAM exactly */
    n = chunk_head(p, ram - 10 * SNAP_PAGE, 10, bm);
    assert_null(snap_ram_chunk_check(p, n, n + 2 * SNAP_PAGE, ram, &off, &pages));
}

/* ---- virtio transport save/load ---- */

typedef struct vfix {
    uint8_t *ram;
    boot_mem m;
    unsigned notifies;
    int level;
} vfix;

static void v_notify(virtio_dev *d, unsigned q)
{
    ((vfix *)d->opaque)->notifies += 1u << (8 * q);
}

static void v_irq(void *opaque, unsigned gsi, int level)
{
    (void)gsi;
    ((vfix *)opaque)->level = level;
}

static void v_save(virtio_dev *d, struct sbuf *out)
{
    (void)d;
    snap_put_u32(out, 0xfeedf00d);
}

static int v_load(virtio_dev *d, const uint8_t *data, size_t len)
{
    (void)d;
    uint32_t v;
    if (len != 4)
        return -EINVAL;
    memcpy(&v, data, 4);
    return v == 0xfeedf00d ? 0 : -EINVAL;
}

static const virtio_dev_ops v_ops = {.notify = v_notify, .save = v_save, .load = v_load};

static void dev_init(virtio_dev *d, vfix *f, uint32_t id)
{
    memset(d, 0, sizeof(*d));
    d->device_id = id;
    d->nqueues = 2;
    d->features = 1ull << 5;
    d->ops = &v_ops;
    d->opaque = f;
    virtio_dev_init(d);
    virtio_dev_attach(d, &f->m, 16, v_irq, f);
}

static void test_virtio_save_load(void **state)
{
    (void)state;
    vfix f = {.ram = calloc(1, 1 << 20)};
    f.m = (boot_mem){.ram = f.ram, .size = 1 << 20, .low = 1 << 20};
    virtio_dev a, b;
    dev_init(&a, &f, 2);
    a.driver_features = 1ull << 32 | 1ull << 5;
    a.status = 0xf;
    a.isr = 1;
    a.queue_sel = 1;
    a.q[0] = (virtq){.num_max = 256,
                     .num = 8,
                     .ready = true,
                     .desc = 0x1000,
                     .avail = 0x2000,
                     .used = 0x3000,
                     .last_avail = 5,
                     .used_idx = 4};
    a.q[1] = (virtq){.num_max = 256, .num = 16, .ready = false, .desc = 0x4000};
    sbuf out = SBUF_INIT;
    pthread_mutex_lock(&a.lock);
    virtio_dev_save_locked(&a, &out);
    pthread_mutex_unlock(&a.lock);

    dev_init(&b, &f, 2);
    f.notifies = 0;
    f.level = 0;
    assert_int_equal(virtio_dev_load(&b, (uint8_t *)out.data, out.len), 0);
    assert_int_equal(b.driver_features, a.driver_features);
    assert_int_equal(b.status, 0xf);
    assert_int_equal(b.isr, 1);
    assert_int_equal(b.queue_sel, 1);
    assert_int_equal(b.q[0].num, 8);
    assert_true(b.q[0].ready);
    assert_int_equal(b.q[0].used, 0x3000);
    assert_int_equal(b.q[0].last_avail, 5);
    assert_int_equal(b.q[0].used_idx, 4);
    assert_false(b.q[1].ready);
    assert_int_equal(b.q[1].desc, 0x4000);
    assert_int_equal(f.level, 1);    /* ISR set: the line is up again */
    assert_int_equal(f.notifies, 1); /* queue 0 (ready, DRIVER_OK) served again */

    /* Another kind of device, a truncated state, trailing bytes, a queue outside RAM. */
    virtio_dev c;
    dev_init(&c, &f, 1);
    assert_int_equal(virtio_dev_load(&c, (uint8_t *)out.data, out.len), -EINVAL);
    assert_int_equal(virtio_dev_load(&b, (uint8_t *)out.data, out.len - 1), -EINVAL);
    assert_int_equal(b.status, 0); /* a failed load leaves the device reset */
    sbuf more = SBUF_INIT;
    sbuf_append(&more, out.data, out.len);
    sbuf_append(&more, "x", 1);
    assert_int_equal(virtio_dev_load(&b, (uint8_t *)more.data, more.len), -EINVAL);
    a.q[0].used = (1 << 20) - 8;
    out.len = 0;
    pthread_mutex_lock(&a.lock);
    virtio_dev_save_locked(&a, &out);
    pthread_mutex_unlock(&a.lock);
    assert_int_equal(virtio_dev_load(&b, (uint8_t *)out.data, out.len), -EINVAL);
    sbuf_release(&more);
    sbuf_release(&out);
    virtio_dev_detach(&a);
    virtio_dev_detach(&b);
    virtio_dev_detach(&c);
    virtio_dev_destroy(&a);
    virtio_dev_destroy(&b);
    virtio_dev_destroy(&c);
    free(f.ram);
}

/* ---- UART state ---- */

static int uart_level;
static void uart_irq(void *opaque, int level)
{
    (void)opaque;
    uart_level = level;
}
static const serial_ops uart_ops = {.set_irq = uart_irq};

static void test_serial_state(void **state)
{
    (void)state;
    serial *a = serial_new(&uart_ops, NULL, -1, 0);
    uint8_t v = 0x01; /* IER: receive interrupt */
    serial_pio(a, 1, true, &v);
    v = 0x5a;
    serial_pio(a, 7, true, &v);
    assert_int_equal(serial_push_input(a, "hello", 5), 5);
    assert_int_equal(uart_level, 1);
    serial_pio(a, 0, false, &v); /* the guest took 'h' */
    assert_int_equal(v, 'h');
    serial_state *st = calloc(1, sizeof(*st));
    serial_get_state(a, st);
    assert_int_equal(st->in_len, 4);
    assert_memory_equal(st->in, "ello", 4);

    uart_level = 0;
    serial *b = serial_new(&uart_ops, NULL, -1, 0);
    serial_set_state(b, st);
    assert_int_equal(uart_level, 1); /* input pending with RDI enabled: the line is raised */
    serial_pio(b, 7, false, &v);
    assert_int_equal(v, 0x5a);
    char got[5] = {0};
    for (int i = 0; i < 4; i++) {
        serial_pio(b, 0, false, &v);
        got[i] = (char)v;
    }
    assert_string_equal(got, "ello");
    assert_int_equal(uart_level, 0);
    free(st);
    serial_free(a);
    serial_free(b);
}

/* ---- opening and reading whole files against a machine without KVM ---- */

typedef struct ffix {
    char dir[64];
    char path[128];
    vmm_config cfg;
    vmm v;
    virtio_dev devs[2];
} ffix;

static int ffix_setup(void **state)
{
    ffix *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/test-snapshot-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/vm.save", f->dir);
    f->cfg.memory_mib = 4;
    f->v.cfg = &f->cfg;
    f->v.nvcpus = 2;
    f->v.nvdevs = 2;
    f->devs[0].device_id = 2;
    f->devs[1].device_id = 1;
    f->v.vdevs[0] = &f->devs[0];
    f->v.vdevs[1] = &f->devs[1];
    f->v.kvm_fd = f->v.vm_fd = -1;
    *state = f;
    return 0;
}

static int ffix_teardown(void **state)
{
    ffix *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void put_sec(sbuf *file, uint32_t type, uint32_t index, const void *data, size_t len)
{
    snap_section s = {
        .type = type, .index = index, .length = len, .crc = snap_crc32c(0, data, len)};
    uint8_t h[SNAP_SECTION_SIZE];
    snap_section_encode(h, &s);
    snap_put(file, h, sizeof(h));
    snap_put(file, data, len);
}

/* A file: header, machine section {mem, vcpus, devices}, and, with ram, one RAM chunk of
 * 3 pages at 1 MiB whose middle page is non-zero. */
static void make_file(sbuf *file, uint64_t mem_mib, uint32_t vcpus, uint32_t dev0, bool ram)
{
    uint8_t h[SNAP_HEADER_SIZE];
    snap_header_encode(h, 1);
    snap_put(file, h, sizeof(h));
    sbuf m = SBUF_INIT;
    snap_put_u64(&m, mem_mib << 20);
    snap_put_u32(&m, vcpus);
    snap_put_u32(&m, 2);
    snap_put_u32(&m, dev0);
    snap_put_u32(&m, 1);
    snap_put_u32(&m, 0);
    put_sec(file, SNAP_SEC_MACHINE, 0, m.data, m.len);
    if (ram) {
        m.len = 0;
        snap_put_u64(&m, 1 << 20);
        snap_put_u32(&m, 3);
        snap_put_u32(&m, 0);
        uint8_t bm[8] = {0x02};
        snap_put(&m, bm, sizeof(bm));
        uint8_t page[SNAP_PAGE];
        memset(page, 0x5a, sizeof(page));
        snap_put(&m, page, sizeof(page));
        put_sec(file, SNAP_SEC_RAM, 0, m.data, m.len);
    }
    sbuf_release(&m);
}

static void write_file(ffix *f, const void *data, size_t len)
{
    unlink(f->path);
    int fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* Opens f->path; returns NULL on success or the error's reason (static copy). */
static const char *try_open(ffix *f, snapshot_file **ret)
{
    static char why[256];
    xerr *e = snapshot_open(f->path, &f->v, ret);
    if (!e)
        return NULL;
    assert_string_equal(e->code, "INVALID_VALUE");
    assert_int_equal(e->nparams, 2);
    snprintf(why, sizeof(why), "%s", e->params[1]);
    xerr_free(e);
    return why;
}

static void test_open(void **state)
{
    ffix *f = *state;
    sbuf good = SBUF_INIT;
    make_file(&good, 4, 2, 2, false);
    snapshot_file *sf = NULL;
    write_file(f, good.data, good.len);
    assert_null(try_open(f, &sf));
    snapshot_file_free(sf);
    /* Every truncation is refused as such. */
    for (size_t n = 0; n < good.len; n++) {
        write_file(f, good.data, n);
        sf = NULL;
        assert_string_equal(try_open(f, &sf), "file is truncated");
        assert_null(sf);
    }
    /* Every flipped byte is refused. */
    for (size_t i = 0; i < good.len; i++) {
        good.data[i] ^= 0x04;
        write_file(f, good.data, good.len);
        assert_non_null(try_open(f, &sf));
        good.data[i] ^= 0x04;
    }
    unlink(f->path);
    assert_non_null(strstr(try_open(f, &sf), "No such file"));
    /* The config must match. */
    sbuf b = SBUF_INIT;
    make_file(&b, 8, 2, 2, false);
    write_file(f, b.data, b.len);
    assert_string_equal(try_open(f, &sf), "memory size differs: saved 8 MiB, config 4 MiB");
    b.len = 0;
    make_file(&b, 4, 1, 2, false);
    write_file(f, b.data, b.len);
    assert_string_equal(try_open(f, &sf), "vCPU count differs: saved 1, config 2");
    b.len = 0;
    make_file(&b, 4, 2, 1, false);
    write_file(f, b.data, b.len);
    assert_string_equal(try_open(f, &sf),
                        "device list differs at slot 0: saved virtio type 1, config 2");
    f->v.nvdevs = 1;
    b.len = 0;
    make_file(&b, 4, 2, 2, false);
    write_file(f, b.data, b.len);
    assert_string_equal(try_open(f, &sf), "device list differs: saved 2 devices, config 1");
    f->v.nvdevs = 2;
    sbuf_release(&b);
    sbuf_release(&good);
}

/* Reading the rest into guest RAM: RAM lands where it belongs, zero pages are zero, and a
 * truncated or corrupted chunk, a missing END or missing vCPU state are refused. */
static void test_restore_ram(void **state)
{
    ffix *f = *state;
    uint64_t size = 4 << 20;
    uint8_t *ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(ram != MAP_FAILED);
    vcpu cpus[2];
    memset(cpus, 0, sizeof(cpus));
    f->v.ram = ram;
    f->v.mem = (boot_mem){.ram = ram, .size = size, .low = size};
    f->v.vcpus = cpus;
    sbuf file = SBUF_INIT;
    make_file(&file, 4, 2, 2, true);
    size_t ram_end = file.len;
    put_sec(&file, SNAP_SEC_END, 2, NULL, 0);
    struct {
        const char *name;
        size_t len;  /* bytes of the file used */
        size_t flip; /* byte flipped (0: none) */
        const char *why;
    } cases[] = {
        {"whole", 0, 0, "vCPU 0 state missing"}, /* all RAM read; no vCPU sections */
        {"no END", ram_end, 0, "file is truncated"},
        {"cut in RAM", ram_end - 100, 0, "file is truncated"},
        {"RAM byte", 0, ram_end - 200, "checksum mismatch in guest RAM at 1 MiB"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        memset(ram, 0xee, size); /* whatever the kernel loader left */
        size_t len = cases[i].len ? cases[i].len : file.len;
        if (cases[i].flip)
            file.data[cases[i].flip] ^= 1;
        write_file(f, file.data, len);
        if (cases[i].flip)
            file.data[cases[i].flip] ^= 1;
        snapshot_file *sf = NULL;
        assert_null(try_open(f, &sf));
        xerr *e = snapshot_restore(sf, &f->v);
        assert_non_null(e);
        assert_string_equal(e->params[1], cases[i].why);
        xerr_free(e);
        snapshot_file_free(sf);
        if (i == 0) {
            assert_int_equal(ram[0], 0); /* pages left out are zero */
            assert_int_equal(ram[(1 << 20) + SNAP_PAGE - 1], 0);
            assert_int_equal(ram[(1 << 20) + SNAP_PAGE], 0x5a);
            assert_int_equal(ram[(1 << 20) + 2 * SNAP_PAGE - 1], 0x5a);
            assert_int_equal(ram[(1 << 20) + 2 * SNAP_PAGE], 0);
            assert_int_equal(ram[size - 1], 0);
        }
    }
    sbuf_release(&file);
    f->v.vcpus = NULL;
    f->v.ram = NULL;
    munmap(ram, size);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_section),
        cmocka_unit_test(test_page_bitmap),
        cmocka_unit_test(test_ram_chunk_check),
        cmocka_unit_test(test_virtio_save_load),
        cmocka_unit_test(test_serial_state),
        cmocka_unit_test_setup_teardown(test_open, ffix_setup, ffix_teardown),
        cmocka_unit_test_setup_teardown(test_restore_ram, ffix_setup, ffix_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
