/* Unit tests for nuvem-vmm's pure parts: config parsing, the control protocol, the kernel
 * loaders (PVH ELF, bzImage, MP table) and the UART model. No KVM needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "acpi.h"
#include "boot.h"
#include "config.h"
#include "ctl.h"
#include "mem.h"
#include "serial.h"
#include "util.h"
#include "xv.h"

/* ---- config ---- */

static vmm_config *parse(const char *json, xerr **e)
{
    *e = NULL;
    return vmm_config_parse(json, strlen(json), e);
}

static void test_config_full(void **state)
{
    xerr *e;
    AUTO(vmm_config) *c = parse(
        "{\"name\":\"vm1\",\"uuid\":\"u\",\"memory_mib\":64,\"vcpus\":4,\"kernel\":\"/k\","
        "\"initrd\":\"/i\",\"cmdline\":\"console=ttyS0\",\"disks\":[],\"nics\":[],"
        "\"serial\":{\"log\":\"/l\",\"socket\":\"/s\"},\"control\":\"/c\",\"on_reboot\":\"exit\","
        "\"on_crash\":\"pause\",\"start_paused\":true,\"mem_merge\":false,\"hugepages\":true,"
        "\"acpi\":false,\"sandbox\":false}",
        &e);
    assert_non_null(c);
    assert_string_equal(c->name, "vm1");
    assert_int_equal(c->memory_mib, 64);
    assert_int_equal(c->vcpus, 4);
    assert_string_equal(c->kernel, "/k");
    assert_string_equal(c->initrd, "/i");
    assert_string_equal(c->cmdline, "console=ttyS0");
    assert_string_equal(c->serial_log, "/l");
    assert_string_equal(c->console_socket, "/s");
    assert_string_equal(c->control_socket, "/c");
    assert_int_equal(c->on_reboot, VMM_ON_REBOOT_EXIT);
    assert_int_equal(c->on_crash, VMM_ON_CRASH_PAUSE);
    assert_true(c->start_paused);
    assert_false(c->mem_merge);
    assert_true(c->hugepages);
    assert_false(c->acpi);
    assert_false(c->sandbox);
}

static void test_config_defaults(void **state)
{
    xerr *e;
    AUTO(vmm_config) *c = parse("{\"kernel\":\"/k\",\"control\":\"/c\"}", &e);
    assert_non_null(c);
    assert_int_equal(c->memory_mib, 32);
    assert_int_equal(c->vcpus, 1);
    assert_string_equal(c->cmdline, "");
    assert_null(c->initrd);
    assert_null(c->serial_log);
    assert_int_equal(c->on_reboot, VMM_ON_REBOOT_RESTART);
    assert_int_equal(c->on_crash, VMM_ON_CRASH_EXIT);
    assert_true(c->mem_merge);
    assert_true(c->acpi);
    assert_true(c->sandbox);
    assert_int_equal(c->serial_log_limit, 16 << 20);
}

static void expect_error(const char *json, const char *code, const char *param0)
{
    xerr *e;
    vmm_config *c = parse(json, &e);
    assert_null(c);
    assert_non_null(e);
    assert_string_equal(e->code, code);
    if (param0) {
        assert_true(e->nparams >= 1);
        assert_string_equal(e->params[0], param0);
    }
    xerr_free(e);
}

static void test_config_errors(void **state)
{
    expect_error("{", "INVALID_VALUE", "config");
    expect_error("[]", "FIELD_TYPE_ERROR", "config");
    expect_error("{\"control\":\"/c\"}", "INVALID_VALUE", "kernel");
    expect_error("{\"kernel\":\"/k\"}", "INVALID_VALUE", "control");
    expect_error("{\"kernel\":\"\",\"control\":\"/c\"}", "INVALID_VALUE", "kernel");
    expect_error("{\"kernel\":1,\"control\":\"/c\"}", "FIELD_TYPE_ERROR", "kernel");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"vcpus\":0}", "INVALID_VALUE", "vcpus");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"vcpus\":65}", "INVALID_VALUE", "vcpus");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"memory_mib\":1}", "INVALID_VALUE",
                 "memory_mib");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"memory_mib\":-5}", "INVALID_VALUE",
                 "memory_mib");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"memory_mib\":1.5}", "FIELD_TYPE_ERROR",
                 "memory_mib");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"disks\":[{}]}", "INVALID_VALUE", "disks");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"nics\":{}}", "FIELD_TYPE_ERROR", "nics");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"colour\":1}", "INVALID_VALUE", "colour");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"serial\":{\"tty\":1}}", "INVALID_VALUE",
                 "tty");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"serial\":3}", "FIELD_TYPE_ERROR",
                 "serial");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"on_reboot\":\"x\"}", "INVALID_VALUE",
                 "on_reboot");
    expect_error("{\"kernel\":\"/k\",\"control\":\"/c\",\"start_paused\":1}", "FIELD_TYPE_ERROR",
                 "start_paused");
    char *big = xmalloc(VMM_MAX_CMDLINE + 100);
    memset(big, 'a', VMM_MAX_CMDLINE + 10);
    big[VMM_MAX_CMDLINE + 10] = 0;
    AUTOFREE char *json =
        xasprintf("{\"kernel\":\"/k\",\"control\":\"/c\",\"cmdline\":\"%s\"}", big);
    free(big);
    expect_error(json, "INVALID_VALUE", "cmdline");
}

/* ---- control protocol ---- */

static void test_ctl_parse_ok(void **state)
{
    ctl_request r;
    const char *line = "{\"id\":7,\"execute\":\"query-status\",\"arguments\":{\"a\":true}}";
    assert_null(ctl_parse_request(line, strlen(line), &r));
    assert_string_equal(r.execute, "query-status");
    assert_int_equal(r.id->u.i, 7);
    bool b = false;
    assert_null(ctl_arg_bool(r.arguments, "a", &b));
    assert_true(b);
    int64_t i = 5;
    assert_null(ctl_arg_int(r.arguments, "missing", &i));
    assert_int_equal(i, 5);
    AUTO(xerr) *e = ctl_arg_int(r.arguments, "a", &i);
    assert_string_equal(e->code, "FIELD_TYPE_ERROR");
    ctl_request_release(&r);

    line = "{\"execute\":\"stats\"}";
    assert_null(ctl_parse_request(line, strlen(line), &r));
    assert_null(r.id);
    assert_int_equal(r.arguments->kind, XV_STRUCT);
    ctl_request_release(&r);
}

static void expect_ctl_error(const char *line, size_t len, const char *code, const char *p0,
                             bool has_id)
{
    ctl_request r;
    AUTO(xerr) *e = ctl_parse_request(line, len, &r);
    assert_non_null(e);
    assert_string_equal(e->code, code);
    assert_string_equal(e->params[0], p0);
    assert_true((r.id != NULL) == has_id);
    ctl_request_release(&r);
}

static void test_ctl_parse_errors(void **state)
{
#define E(s, code, p0, id) expect_ctl_error(s, strlen(s), code, p0, id)
    E("nope", "PROTOCOL_ERROR", "malformed JSON", false);
    E("{\"id\":1,\"execute\":\"x\"} trailing", "PROTOCOL_ERROR", "malformed JSON", false);
    E("42", "PROTOCOL_ERROR", "request is not an object", false);
    E("{\"id\":\"a\"}", "PROTOCOL_ERROR", "missing execute", true);
    E("{\"id\":1,\"execute\":[]}", "FIELD_TYPE_ERROR", "execute", true);
    E("{\"id\":1,\"execute\":\"x\",\"arguments\":5}", "FIELD_TYPE_ERROR", "arguments", true);
    E("{\"id\":1,\"execute\":\"x\",\"extra\":5}", "PROTOCOL_ERROR", "unknown member in request",
      true);
    E("{\"execute\":\"\xc3\x28\"}", "PROTOCOL_ERROR", "invalid UTF-8", false);
#undef E
    char *big = xmalloc(CTL_MAX_LINE + 2);
    memset(big, ' ', CTL_MAX_LINE + 1);
    expect_ctl_error(big, CTL_MAX_LINE + 1, "PROTOCOL_ERROR", "line too long", false);
    free(big);
}

static void test_ctl_format(void **state)
{
    AUTO(xv) *id = xv_new_string("abc");
    AUTOFREE char *r = ctl_format_return(id, NULL);
    assert_string_equal(r, "{\"id\":\"abc\",\"return\":{}}\n");
    AUTO(xerr) *e = xerr_new("MESSAGE_METHOD_UNKNOWN", "frob");
    AUTOFREE char *er = ctl_format_error(NULL, e);
    assert_string_equal(er, "{\"error\":[\"MESSAGE_METHOD_UNKNOWN\",\"frob\"]}\n");
    AUTOFREE char *ev = ctl_format_event("shutdown", NULL, 12, 34);
    assert_string_equal(ev, "{\"event\":\"shutdown\",\"data\":{},\"timestamp\":{\"seconds\":12,"
                            "\"microseconds\":34}}\n");
}

/* ---- loaders ---- */

typedef struct {
    boot_mem m;
} memfix;

static int mem_setup(void **state)
{
    memfix *f = xcalloc(1, sizeof(*f));
    f->m.size = f->m.low = 32 << 20;
    f->m.ram = xcalloc(1, f->m.size);
    *state = f;
    return 0;
}

static int mem_teardown(void **state)
{
    memfix *f = *state;
    free(f->m.ram);
    free(f);
    return 0;
}

static void test_boot_gpa_and_memmap(void **state)
{
    boot_mem m = {.ram = (uint8_t *)0x1000, .size = 4ull << 30, .low = BOOT_MMIO_HOLE_START};
    assert_ptr_equal(boot_gpa(&m, 0, 16), m.ram);
    assert_null(boot_gpa(&m, BOOT_MMIO_HOLE_START - 8, 16));
    assert_ptr_equal(boot_gpa(&m, BOOT_4G, 16), m.ram + m.low);
    assert_null(boot_gpa(&m, BOOT_4G + (1ull << 30) - 8, 16));
    assert_null(boot_gpa(&m, UINT64_MAX - 4, 16));
    uint64_t map[8][3];
    size_t n = boot_memmap(&m, map, 8);
    assert_int_equal(n, 4);
    assert_int_equal(map[2][0], BOOT_HIMEM_START);
    assert_int_equal(map[2][1], BOOT_MMIO_HOLE_START - BOOT_HIMEM_START);
    assert_int_equal(map[3][0], BOOT_4G);
    assert_int_equal(map[3][1], 1ull << 30);
}

static void test_boot_pvh_guest(void **state)
{
    memfix *f = *state;
    AUTOFREE char *img = NULL;
    size_t len;
    assert_int_equal(read_file(NUVEM_GUEST_ELF, &img, &len), 0);
    static const uint8_t initrd[] = "INITRD-BYTES";
    boot_entry be;
    assert_null(
        boot_load(&f->m, (uint8_t *)img, len, initrd, sizeof(initrd), "console=ttyS0", &be));
    assert_int_equal(be.mode, BOOT_MODE_PVH);
    assert_int_equal(be.entry, 0x100000);
    assert_int_equal(be.arg, BOOT_PVH_INFO_ADDR);
    uint32_t *si = boot_gpa(&f->m, BOOT_PVH_INFO_ADDR, 64);
    assert_int_equal(si[0], 0x336ec578);
    assert_int_equal(si[3], 1); /* nr_modules */
    assert_string_equal((char *)boot_gpa(&f->m, BOOT_CMDLINE_ADDR, 1), "console=ttyS0");
    uint64_t *mod = boot_gpa(&f->m, BOOT_PVH_MODLIST, 16);
    assert_int_equal(mod[1], sizeof(initrd));
    assert_int_equal(mod[0] % 4096, 0);
    assert_memory_equal(boot_gpa(&f->m, mod[0], sizeof(initrd)), initrd, sizeof(initrd));
    /* The image's first bytes sit at 1 MiB. */
    assert_int_equal(*(uint8_t *)boot_gpa(&f->m, 0x100000, 1), 0xfa); /* cli */
}

static void test_boot_rejects(void **state)
{
    memfix *f = *state;
    boot_entry be;
    uint8_t junk[8192] = {0};
    AUTO(xerr) *e = boot_load(&f->m, junk, sizeof(junk), NULL, 0, "", &be);
    assert_string_equal(e->code, "INVALID_VALUE");
    /* An ELF without a PVH note, a truncated ELF, a kernel too big. */
    AUTOFREE char *img = NULL;
    size_t len;
    assert_int_equal(read_file(NUVEM_GUEST_ELF, &img, &len), 0);
    AUTO(xerr) *e2 = boot_load(&f->m, (uint8_t *)img, 40, NULL, 0, "", &be);
    assert_non_null(e2);
    boot_mem small = f->m;
    small.size = small.low = 1 << 20;
    AUTO(xerr) *e3 = boot_load(&small, (uint8_t *)img, len, NULL, 0, "", &be);
    assert_non_null(e3);
    boot_mem tight = f->m;
    tight.size = tight.low = 2 << 20;
    uint8_t *big = xcalloc(1, 3 << 20);
    AUTO(xerr) *e4 = boot_load(&tight, (uint8_t *)img, len, big, 3 << 20, "", &be);
    free(big);
    assert_non_null(e4);
    assert_string_equal(e4->params[0], "initrd");
}

static void test_boot_bzimage(void **state)
{
    memfix *f = *state;
    size_t len = 64 * 1024;
    uint8_t *k = xcalloc(1, len);
    k[0x1f1] = 3; /* setup_sects */
    memcpy(k + 0x202, "HdrS", 4);
    k[0x201] = 0x6a; /* header length - 0x202 */
    k[0x206] = 0x0f; /* version 2.15 */
    k[0x207] = 0x02;
    k[0x236] = 1; /* XLF_KERNEL_64 */
    uint32_t cmdline_size = 2047, initrd_max = 0x7fffffff, init_size = 1 << 20;
    memcpy(k + 0x238, &cmdline_size, 4);
    memcpy(k + 0x22c, &initrd_max, 4);
    memcpy(k + 0x260, &init_size, 4);
    k[4 * 512] = 0xab; /* first protected-mode byte */
    static const uint8_t initrd[4096] = {1, 2, 3};
    boot_entry be;
    assert_null(boot_load(&f->m, k, len, initrd, sizeof(initrd), "quiet", &be));
    assert_int_equal(be.mode, BOOT_MODE_LINUX64);
    assert_int_equal(be.entry, 0x100200);
    assert_int_equal(be.arg, BOOT_ZERO_PAGE);
    uint8_t *zp = boot_gpa(&f->m, BOOT_ZERO_PAGE, 4096);
    assert_int_equal(zp[0x210], 0xff); /* type_of_loader */
    assert_memory_equal(zp + 0x202, "HdrS", 4);
    uint32_t v;
    memcpy(&v, zp + 0x228, 4);
    assert_int_equal(v, BOOT_CMDLINE_ADDR);
    memcpy(&v, zp + 0x21c, 4);
    assert_int_equal(v, sizeof(initrd));
    memcpy(&v, zp + 0x218, 4);
    assert_int_equal(v, (32 << 20) - 4096);
    assert_int_equal(zp[0x1e8], 3); /* e820 entries: low RAM, reserved, high RAM */
    assert_int_equal(*(uint8_t *)boot_gpa(&f->m, 0x100000, 1), 0xab);
    uint64_t *pd = boot_gpa(&f->m, BOOT_PML4_ADDR + 0x2000, 4096);
    assert_int_equal(pd[1], (1 << 21) | 0x83);
    /* Protocol too old for the 64-bit entry. */
    k[0x206] = 0x0b;
    AUTO(xerr) *e = boot_load(&f->m, k, len, NULL, 0, "", &be);
    assert_non_null(e);
    free(k);
}

static uint8_t sum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s += *p++;
    return s;
}

static void test_mptable(void **state)
{
    memfix *f = *state;
    assert_null(boot_write_mptable(&f->m, 4));
    uint8_t *fp = boot_gpa(&f->m, BOOT_MPFP_ADDR, 16);
    assert_memory_equal(fp, "_MP_", 4);
    assert_int_equal(sum(fp, 16), 0);
    uint32_t addr;
    memcpy(&addr, fp + 4, 4);
    uint8_t *t = boot_gpa(&f->m, addr, 44);
    assert_memory_equal(t, "PCMP", 4);
    uint16_t len = (uint16_t)(t[4] | t[5] << 8), count = (uint16_t)(t[34] | t[35] << 8);
    assert_int_equal(sum(t, len), 0);
    assert_int_equal(count, 4 + 2 + 16 + 2);
    assert_int_equal(t[44], 0);         /* first entry: processor */
    assert_int_equal(t[44 + 3], 1 | 2); /* enabled BSP */
    assert_int_equal(t[64 + 3], 1);     /* AP enabled */
    AUTO(xerr) *e = boot_write_mptable(&f->m, 200);
    assert_non_null(e);
}

static void test_acpi(void **state)
{
    memfix *f = *state;
    uint64_t rsdp_addr = 0;
    assert_null(acpi_write_tables(&f->m, 3, &rsdp_addr));
    assert_int_equal(rsdp_addr, ACPI_RSDP_ADDR);
    uint8_t *rsdp = boot_gpa(&f->m, rsdp_addr, 36);
    assert_memory_equal(rsdp, "RSD PTR ", 8);
    assert_int_equal(sum(rsdp, 20), 0);
    assert_int_equal(sum(rsdp, 36), 0);
    assert_int_equal(rsdp[15], 2);
    uint64_t xsdt_addr;
    memcpy(&xsdt_addr, rsdp + 24, 8);
    uint8_t *xsdt = boot_gpa(&f->m, xsdt_addr, 52);
    assert_memory_equal(xsdt, "XSDT", 4);
    assert_int_equal(sum(xsdt, 52), 0);
    uint64_t fadt_addr, madt_addr;
    memcpy(&fadt_addr, xsdt + 36, 8);
    memcpy(&madt_addr, xsdt + 44, 8);
    uint8_t *fadt = boot_gpa(&f->m, fadt_addr, 276);
    assert_memory_equal(fadt, "FACP", 4);
    assert_int_equal(sum(fadt, 276), 0);
    uint32_t flags;
    memcpy(&flags, fadt + 112, 4);
    assert_true(flags & (1u << 20)); /* hardware-reduced */
    assert_int_equal(fadt[244], 1);  /* sleep control in I/O space */
    uint16_t port;
    memcpy(&port, fadt + 248, 2);
    assert_int_equal(port, 0x600);
    memcpy(&port, fadt + 120, 2);
    assert_int_equal(port, 0x601); /* reset register */
    assert_int_equal(fadt[128], 1);
    uint64_t dsdt_addr;
    memcpy(&dsdt_addr, fadt + 140, 8);
    uint8_t *dsdt = boot_gpa(&f->m, dsdt_addr, 36);
    uint32_t dlen;
    memcpy(&dlen, dsdt + 4, 4);
    assert_int_equal(sum(dsdt, dlen), 0);
    assert_memory_equal(dsdt + 36, "\x08_S5_", 5);
    uint8_t *madt = boot_gpa(&f->m, madt_addr, 44);
    uint32_t mlen;
    memcpy(&mlen, madt + 4, 4);
    assert_int_equal(sum(madt, mlen), 0);
    unsigned lapics = 0;
    for (uint8_t *e = madt + 44; e < madt + mlen; e += e[1])
        lapics += e[0] == 0 && (e[4] & 1);
    assert_int_equal(lapics, 3);
    /* The PVH start_info learns where the RSDP is. */
    boot_entry be = {BOOT_MODE_PVH, 0x100000, BOOT_PVH_INFO_ADDR};
    boot_set_rsdp(&f->m, &be, rsdp_addr);
    uint64_t got;
    memcpy(&got, (uint8_t *)boot_gpa(&f->m, BOOT_PVH_INFO_ADDR, 64) + 32, 8);
    assert_int_equal(got, rsdp_addr);
}

/* ---- UART ---- */

static int irq_level = -1;
static int notifies;

static void fake_irq(void *o, int level)
{
    irq_level = level;
}

static void fake_notify(void *o)
{
    notifies++;
}

static const serial_ops fake_ops = {fake_irq, fake_notify};

static uint8_t rd(serial *s, unsigned off)
{
    uint8_t v = 0;
    serial_pio(s, off, false, &v);
    return v;
}

static void wr(serial *s, unsigned off, uint8_t v)
{
    serial_pio(s, off, true, &v);
}

static void test_serial_output(void **state)
{
    serial *s = serial_new(&fake_ops, NULL, -1, 0);
    notifies = 0;
    for (const char *p = "hello"; *p; p++)
        wr(s, 0, (uint8_t)*p);
    assert_int_equal(notifies, 5);
    char buf[16];
    uint64_t seq = 0, lost = 9;
    size_t n = serial_read_output(s, &seq, buf, sizeof(buf), &lost);
    assert_int_equal(n, 5);
    assert_int_equal(lost, 0);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(seq, 5);
    assert_int_equal(serial_read_output(s, &seq, buf, sizeof(buf), NULL), 0);
    /* Overrun the ring: an old reader skips ahead and is told how much it lost. */
    for (int i = 0; i < SERIAL_RING_SIZE + 10; i++)
        wr(s, 0, 'x');
    seq = 0;
    n = serial_read_output(s, &seq, buf, sizeof(buf), &lost);
    assert_int_equal(lost, 15);
    assert_int_equal(n, sizeof(buf));
    assert_int_equal(rd(s, 5) & 0x60, 0x60); /* THRE | TEMT */
    serial_free(s);
}

static void test_serial_input_irq(void **state)
{
    serial *s = serial_new(&fake_ops, NULL, -1, 0);
    irq_level = -1;
    assert_int_equal(serial_push_input(s, "ab", 2), 2);
    assert_int_equal(irq_level, -1); /* IER off: no interrupt */
    assert_int_equal(rd(s, 5) & 1, 1);
    wr(s, 1, 0x01); /* receive interrupt on */
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd(s, 2) & 0x0f, 0x04);
    assert_int_equal(rd(s, 0), 'a');
    assert_int_equal(rd(s, 0), 'b');
    assert_int_equal(irq_level, 0);
    assert_int_equal(rd(s, 5) & 1, 0);
    assert_int_equal(rd(s, 2) & 0x0f, 0x01);
    /* THRE interrupt: raised when enabled, cleared by reading IIR. */
    wr(s, 1, 0x02);
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd(s, 2) & 0x0f, 0x02);
    assert_int_equal(irq_level, 0);
    /* The input queue is bounded. */
    char big[SERIAL_INPUT_SIZE + 100];
    memset(big, 'z', sizeof(big));
    assert_int_equal(serial_push_input(s, big, sizeof(big)), SERIAL_INPUT_SIZE);
    assert_int_equal(serial_input_space(s), 0);
    uint64_t out, in;
    serial_counters(s, &out, &in);
    assert_int_equal(in, 2);
    serial_free(s);
}

static void test_serial_probe(void **state)
{
    serial *s = serial_new(&fake_ops, NULL, -1, 0);
    /* Scratch register and IER read back; the loopback probe Linux runs. */
    wr(s, 7, 0xa5);
    assert_int_equal(rd(s, 7), 0xa5);
    wr(s, 1, 0x0f);
    assert_int_equal(rd(s, 1), 0x0f);
    wr(s, 1, 0);
    wr(s, 4, 0x1a); /* loop | OUT2 | RTS */
    assert_int_equal(rd(s, 6) & 0xf0, 0x90);
    wr(s, 0, 'q'); /* loopback: transmitted byte comes back as input */
    assert_int_equal(rd(s, 0), 'q');
    wr(s, 4, 0x0b);
    assert_int_equal(rd(s, 6) & 0xf0, 0xb0);
    /* DLAB: divisor latch instead of THR/IER. */
    wr(s, 3, 0x83);
    wr(s, 0, 0x01);
    wr(s, 1, 0x00);
    assert_int_equal(rd(s, 0), 0x01);
    wr(s, 3, 0x03);
    assert_int_equal(serial_output_seq(s), 0);
    serial_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_full),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_ctl_parse_ok),
        cmocka_unit_test(test_ctl_parse_errors),
        cmocka_unit_test(test_ctl_format),
        cmocka_unit_test(test_boot_gpa_and_memmap),
        cmocka_unit_test_setup_teardown(test_boot_pvh_guest, mem_setup, mem_teardown),
        cmocka_unit_test_setup_teardown(test_boot_rejects, mem_setup, mem_teardown),
        cmocka_unit_test_setup_teardown(test_boot_bzimage, mem_setup, mem_teardown),
        cmocka_unit_test_setup_teardown(test_mptable, mem_setup, mem_teardown),
        cmocka_unit_test_setup_teardown(test_acpi, mem_setup, mem_teardown),
        cmocka_unit_test(test_serial_output),
        cmocka_unit_test(test_serial_input_irq),
        cmocka_unit_test(test_serial_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
