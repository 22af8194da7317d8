/* ACPI table builder (see acpi.h). Layouts from the ACPI 6.x specification. */
#include "acpi.h"
#include "platform.h"

#include <string.h>

#define HDR_LEN 36

static uint8_t checksum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s += *p++;
    return (uint8_t)-s;
}

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static void header(uint8_t *t, const char sig[4], uint32_t len, uint8_t rev)
{
    memcpy(t, sig, 4);
    put32(t + 4, len);
    t[8] = rev;
    memcpy(t + 10, "NUVEM ", 6);
    memcpy(t + 16, "NUVEMVMM", 8);
    put32(t + 24, 1);
    memcpy(t + 28, "NUVM", 4);
    put32(t + 32, 1);
}

static void finish(uint8_t *t)
{
    uint32_t len;
    memcpy(&len, t + 4, 4);
    t[9] = 0;
    t[9] = checksum(t, len);
}

/* Generic Address Structure: one byte in I/O space. */
static void gas_io8(uint8_t *p, uint16_t port)
{
    p[0] = 1; /* SystemIO */
    p[1] = 8; /* bit width */
    p[2] = 0;
    p[3] = 1; /* byte access */
    put64(p + 4, port);
}

/* AML PkgLength for a package whose contents (after the PkgLength) are n bytes. */
static size_t aml_pkglen(uint8_t *p, size_t n)
{
    if (n + 1 < 64) {
        p[0] = (uint8_t)(n + 1);
        return 1;
    }
    size_t total = n + 2; /* two-byte encoding: up to 4095 */
    p[0] = (uint8_t)(0x40 | (total & 0xf));
    p[1] = (uint8_t)(total >> 4);
    return 2;
}

/* Device (VDnn) { Name (_HID, "LNRO0005"); Name (_UID, n); Name (_CRS, ResourceTemplate () {
 * Memory32Fixed (ReadWrite, base, size); Interrupt (ResourceConsumer, Level, ActiveHigh,
 * Exclusive) {gsi} }) }. Returns its length (at most 64 bytes). */
static size_t aml_virtio_mmio(uint8_t *out, unsigned n, const acpi_mmio_dev *d)
{
    uint8_t body[64];
    size_t b = 0;
    body[b++] = 'V';
    body[b++] = 'D';
    body[b++] = (uint8_t)('0' + n / 10 % 10);
    body[b++] = (uint8_t)('0' + n % 10);
    static const uint8_t hid[] = {0x08, '_', 'H', 'I', 'D', 0x0d, 'L', 'N',
                                  'R',  'O', '0', '0', '0', '5',  0x00};
    memcpy(body + b, hid, sizeof(hid));
    b += sizeof(hid);
    static const uint8_t uid[] = {0x08, '_', 'U', 'I', 'D', 0x0a};
    memcpy(body + b, uid, sizeof(uid));
    b += sizeof(uid);
    body[b++] = (uint8_t)n;
    static const uint8_t crs[] = {0x08, '_', 'C', 'R', 'S', 0x11, 0x1a, 0x0a, 0x17};
    memcpy(body + b, crs, sizeof(crs));
    b += sizeof(crs);
    body[b++] = 0x86; /* Memory32Fixed */
    put16(body + b, 9);
    body[b + 2] = 1; /* read-write */
    put32(body + b + 3, (uint32_t)d->base);
    put32(body + b + 7, d->size);
    b += 11;
    body[b++] = 0x89; /* Extended Interrupt */
    put16(body + b, 6);
    body[b + 2] = 0x01; /* consumer, level, active high, exclusive */
    body[b + 3] = 1;
    put32(body + b + 4, d->gsi);
    b += 8;
    body[b++] = 0x79; /* end tag */
    body[b++] = 0;
    out[0] = 0x5b; /* DeviceOp */
    out[1] = 0x82;
    size_t pl = aml_pkglen(out + 2, b);
    memcpy(out + 2 + pl, body, b);
    return 2 + pl + b;
}

xerr *acpi_write_tables(const boot_mem *m, unsigned ncpus, uint64_t *ret_rsdp)
{
    return acpi_write_tables_devs(m, ncpus, NULL, 0, ret_rsdp);
}

xerr *acpi_write_tables_devs(const boot_mem *m, unsigned ncpus, const acpi_mmio_dev *devs,
                             unsigned ndevs, uint64_t *ret_rsdp)
{
    return acpi_write_tables_cpus(m, ncpus, ncpus, devs, ndevs, ret_rsdp);
}

xerr *acpi_write_tables_cpus(const boot_mem *m, unsigned ncpus, unsigned nenabled,
                             const acpi_mmio_dev *devs, unsigned ndevs, uint64_t *ret_rsdp)
{
    uint8_t *base = boot_gpa(m, ACPI_RSDP_ADDR, ACPI_TABLES_SIZE);
    if (!base)
        return xerr_new("INVALID_VALUE", "memory_mib", "too small");
    size_t madt_len = HDR_LEN + 8 + ncpus * 8 + 12 + 6;
    if (ndevs > ACPI_MAX_MMIO_DEVS)
        return xerr_new("INVALID_VALUE", "devices", "too many for the ACPI tables");
    /* The DSDT follows the MADT: \_S5 (14 bytes), then Scope (\_SB) with the devices. */
    size_t dsdt_max = HDR_LEN + 14 + 8 + (size_t)ndevs * 64;
    if (0x400 + madt_len + 16 + dsdt_max > ACPI_TABLES_SIZE)
        return xerr_new("INVALID_VALUE", "vcpus", "too many for the ACPI tables");
    memset(base, 0, ACPI_TABLES_SIZE);
    const uint64_t rsdp = ACPI_RSDP_ADDR, xsdt = rsdp + 0x40, fadt = rsdp + 0x100,
                   madt = rsdp + 0x400, dsdt = (madt + madt_len + 15) & ~15ull;
    uint8_t *p;

    /* DSDT: Name (_S5, Package () {5, 5, 0, 0}), Scope (\_SB) { virtio-mmio devices } */
    static const uint8_t aml[] = {0x08, '_',  'S',  '5',  '_',  0x12, 0x08,
                                  0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00};
    p = base + (dsdt - rsdp);
    size_t dl = HDR_LEN;
    memcpy(p + dl, aml, sizeof(aml));
    dl += sizeof(aml);
    if (ndevs) {
        uint8_t scope[ACPI_MAX_MMIO_DEVS * 64 + 8];
        size_t sl = 0;
        scope[sl++] = '\\';
        memcpy(scope + sl, "_SB_", 4);
        sl += 4;
        for (unsigned i = 0; i < ndevs; i++)
            sl += aml_virtio_mmio(scope + sl, i, &devs[i]);
        p[dl++] = 0x10; /* ScopeOp */
        dl += aml_pkglen(p + dl, sl);
        memcpy(p + dl, scope, sl);
        dl += sl;
    }
    header(p, "DSDT", (uint32_t)dl, 2);
    finish(p);

    /* FADT, revision 6, hardware-reduced. */
    p = base + (fadt - rsdp);
    header(p, "FACP", 276, 6);
    put32(p + 40, (uint32_t)dsdt);
    put16(p + 109, 1 << 2);                  /* IAPC_BOOT_ARCH: no VGA (and no 8042 bit) */
    put32(p + 112, (1u << 20) | (1u << 10)); /* HW_REDUCED_ACPI | RESET_REG_SUP */
    gas_io8(p + 116, PORT_RESET);
    p[128] = RESET_VALUE;
    p[131] = 0; /* FADT minor version */
    put64(p + 140, dsdt);
    gas_io8(p + 244, PORT_SLEEP_CTL);
    gas_io8(p + 256, PORT_SLEEP_STATUS);
    memcpy(p + 268, "NUVEMVMM", 8);
    finish(p);

    /* MADT: one enabled LAPIC per vCPU, the IOAPIC, LINT1 = NMI. */
    p = base + (madt - rsdp);
    header(p, "APIC", (uint32_t)madt_len, 5);
    put32(p + 36, 0xfee00000);
    put32(p + 40, 1); /* PCAT_COMPAT: 8259s present (masked by the guest) */
    uint8_t *e = p + 44;
    for (unsigned i = 0; i < ncpus; i++, e += 8) {
        e[0] = 0;
        e[1] = 8;
        e[2] = (uint8_t)i; /* processor UID */
        e[3] = (uint8_t)i; /* APIC ID */
        /* enabled, or online capable (hot-plug) */
        put32(e + 4, i < nenabled ? 1 : 2);
    }
    e[0] = 1;
    e[1] = 12;
    e[2] = (uint8_t)ncpus; /* IOAPIC ID, as in the MP table */
    put32(e + 4, 0xfec00000);
    put32(e + 8, 0); /* GSI base */
    e += 12;
    e[0] = 4; /* local APIC NMI */
    e[1] = 6;
    e[2] = 0xff; /* all processors */
    put16(e + 3, 0);
    e[5] = 1; /* LINT1 */
    finish(p);

    /* XSDT -> FADT, MADT */
    p = base + (xsdt - rsdp);
    header(p, "XSDT", HDR_LEN + 16, 1);
    put64(p + HDR_LEN, fadt);
    put64(p + HDR_LEN + 8, madt);
    finish(p);

    /* RSDP, revision 2 */
    p = base;
    memcpy(p, "RSD PTR ", 8);
    memcpy(p + 9, "NUVEM ", 6);
    p[15] = 2;
    put32(p + 20, 36);
    put64(p + 24, xsdt);
    p[8] = checksum(p, 20);
    p[32] = checksum(p, 36);
    *ret_rsdp = rsdp;
    return NULL;
}
