/* Kernel loaders (see boot.h). Facts from the Linux x86 boot protocol (Documentation/arch/x86/
 * boot.rst), Xen's PVH ABI (docs/misc/pvh.pandoc) and Intel's MP spec 1.4. */
#include "boot.h"
#include "mem.h"

#include <elf.h>
#include <string.h>

void *boot_gpa(const boot_mem *m, uint64_t gpa, uint64_t len)
{
    if (len > m->size || gpa + len < gpa)
        return NULL;
    if (gpa + len <= m->low)
        return m->ram + gpa;
    if (gpa >= BOOT_4G && gpa - BOOT_4G + len <= m->size - m->low)
        return m->ram + m->low + (gpa - BOOT_4G);
    return NULL;
}

size_t boot_memmap(const boot_mem *m, uint64_t (*out)[3], size_t max)
{
    size_t n = 0;
#define ADD(a, s, t)                                                                               \
    do {                                                                                           \
        if (n < max) {                                                                             \
            out[n][0] = (a);                                                                       \
            out[n][1] = (s);                                                                       \
            out[n][2] = (t);                                                                       \
            n++;                                                                                   \
        }                                                                                          \
    } while (0)
    ADD(0, BOOT_EBDA_START, 1);
    ADD(BOOT_EBDA_START, 0x100000 - BOOT_EBDA_START, 2);
    if (m->low > BOOT_HIMEM_START)
        ADD(BOOT_HIMEM_START, m->low - BOOT_HIMEM_START, 1);
    if (m->size > m->low)
        ADD(BOOT_4G, m->size - m->low, 1);
#undef ADD
    return n;
}

static xerr *put_cmdline(const boot_mem *m, const char *cmdline, size_t max)
{
    size_t n = strlen(cmdline) + 1;
    if (n > max)
        return xerr_new("INVALID_VALUE", "cmdline", "too long for this kernel");
    char *dst = boot_gpa(m, BOOT_CMDLINE_ADDR, n);
    if (!dst)
        return xerr_new("INVALID_VALUE", "memory_mib", "too small");
    memcpy(dst, cmdline, n);
    return NULL;
}

/* The initrd goes page-aligned at the top of low RAM, below max_addr. */
static xerr *put_initrd(const boot_mem *m, const uint8_t *initrd, size_t len, uint64_t min_addr,
                        uint64_t max_addr, uint64_t *ret_addr)
{
    uint64_t top = m->low < max_addr ? m->low : max_addr;
    if (len > top)
        return xerr_new("INVALID_VALUE", "initrd", "does not fit in guest memory");
    uint64_t addr = (top - len) & ~0xfffull;
    uint8_t *dst = boot_gpa(m, addr, len);
    if (addr < min_addr || !dst)
        return xerr_new("INVALID_VALUE", "initrd", "does not fit in guest memory");
    memcpy(dst, initrd, len);
    *ret_addr = addr;
    return NULL;
}

/* ---- PVH ---- */

struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};
struct hvm_modlist_entry {
    uint64_t paddr, size, cmdline_paddr, reserved;
};
struct hvm_memmap_entry {
    uint64_t addr, size;
    uint32_t type, reserved;
};
#define XEN_HVM_START_MAGIC      0x336ec578
#define XEN_ELFNOTE_PHYS32_ENTRY 18

static bool find_pvh_note(const uint8_t *p, size_t len, uint64_t *ret_entry)
{
    size_t off = 0;
    while (off + 12 <= len) {
        uint32_t namesz, descsz, type;
        memcpy(&namesz, p + off, 4);
        memcpy(&descsz, p + off + 4, 4);
        memcpy(&type, p + off + 8, 4);
        size_t name_off = off + 12;
        size_t desc_off = name_off + ((namesz + 3ull) & ~3ull);
        size_t next = desc_off + ((descsz + 3ull) & ~3ull);
        if (namesz > len || descsz > len || next > len)
            return false;
        if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 &&
            memcmp(p + name_off, "Xen", 4) == 0 && (descsz == 4 || descsz == 8)) {
            uint32_t lo;
            memcpy(&lo, p + desc_off, 4);
            *ret_entry = lo;
            return true;
        }
        off = next;
    }
    return false;
}

static xerr *load_elf(const boot_mem *m, const uint8_t *k, size_t len, const uint8_t *initrd,
                      size_t initrd_len, const char *cmdline, boot_entry *ret)
{
    Elf64_Ehdr eh;
    if (len < sizeof(eh))
        return xerr_new("INVALID_VALUE", "kernel", "truncated ELF header");
    memcpy(&eh, k, sizeof(eh));
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64)
        return xerr_new("INVALID_VALUE", "kernel", "not an x86-64 ELF");
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > len ||
        (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff)
        return xerr_new("INVALID_VALUE", "kernel", "bad program headers");
    uint64_t entry = 0, kernel_end = 0;
    bool have_entry = false;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, k + eh.e_phoff + i * sizeof(ph), sizeof(ph));
        if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
            return xerr_new("INVALID_VALUE", "kernel", "segment outside the file");
        if (ph.p_type == PT_NOTE && !have_entry) {
            have_entry = find_pvh_note(k + ph.p_offset, ph.p_filesz, &entry);
        } else if (ph.p_type == PT_LOAD) {
            if (ph.p_filesz > ph.p_memsz)
                return xerr_new("INVALID_VALUE", "kernel", "bad segment sizes");
            uint8_t *dst = boot_gpa(m, ph.p_paddr, ph.p_memsz);
            if (!dst || ph.p_paddr < BOOT_HIMEM_START || ph.p_paddr + ph.p_memsz > m->low)
                return xerr_new("INVALID_VALUE", "kernel", "does not fit in guest memory");
            memcpy(dst, k + ph.p_offset, ph.p_filesz);
            memset(dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
            if (ph.p_paddr + ph.p_memsz > kernel_end)
                kernel_end = ph.p_paddr + ph.p_memsz;
        }
    }
    if (!have_entry)
        return xerr_new("INVALID_VALUE", "kernel", "ELF without a PVH entry note");

    xerr *e = put_cmdline(m, cmdline, 4096);
    if (e)
        return e;
    struct hvm_start_info *si = boot_gpa(m, BOOT_PVH_INFO_ADDR, sizeof(*si));
    struct hvm_modlist_entry *mod = boot_gpa(m, BOOT_PVH_MODLIST, sizeof(*mod));
    uint64_t map[8][3];
    size_t n = boot_memmap(m, map, 8);
    struct hvm_memmap_entry *mm = boot_gpa(m, BOOT_PVH_MEMMAP, n * sizeof(*mm));
    if (!si || !mod || !mm)
        return xerr_new("INVALID_VALUE", "memory_mib", "too small");
    memset(si, 0, sizeof(*si));
    si->magic = XEN_HVM_START_MAGIC;
    si->version = 1;
    si->cmdline_paddr = BOOT_CMDLINE_ADDR;
    if (initrd) {
        uint64_t addr;
        if ((e = put_initrd(m, initrd, initrd_len, (kernel_end + 0xfff) & ~0xfffull,
                            BOOT_MMIO_HOLE_START, &addr)))
            return e;
        memset(mod, 0, sizeof(*mod));
        mod->paddr = addr;
        mod->size = initrd_len;
        si->nr_modules = 1;
        si->modlist_paddr = BOOT_PVH_MODLIST;
    }
    for (size_t i = 0; i < n; i++)
        mm[i] = (struct hvm_memmap_entry){map[i][0], map[i][1], (uint32_t)map[i][2], 0};
    si->memmap_paddr = BOOT_PVH_MEMMAP;
    si->memmap_entries = (uint32_t)n;
    *ret = (boot_entry){BOOT_MODE_PVH, entry, BOOT_PVH_INFO_ADDR};
    return NULL;
}

/* ---- bzImage, 64-bit entry ---- */

/* Offsets into struct boot_params / setup_header (arch/x86/include/uapi/asm/bootparam.h). */
#define BP_E820_ENTRIES   0x1e8
#define BP_SETUP_SECTS    0x1f1
#define BP_VID_MODE       0x1fa
#define BP_HEADER         0x202
#define BP_VERSION        0x206
#define BP_TYPE_OF_LOADER 0x210
#define BP_LOADFLAGS      0x211
#define BP_RAMDISK_IMAGE  0x218
#define BP_RAMDISK_SIZE   0x21c
#define BP_HEAP_END_PTR   0x224
#define BP_CMD_LINE_PTR   0x228
#define BP_INITRD_MAX     0x22c
#define BP_XLOADFLAGS     0x236
#define BP_CMDLINE_SIZE   0x238
#define BP_PREF_ADDRESS   0x258
#define BP_INIT_SIZE      0x260
#define BP_E820_TABLE     0x2d0
#define XLF_KERNEL_64     0x1

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static void wr32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void wr64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static xerr *load_bzimage(const boot_mem *m, const uint8_t *k, size_t len, const uint8_t *initrd,
                          size_t initrd_len, const char *cmdline, boot_entry *ret)
{
    if (len < 0x1000)
        return xerr_new("INVALID_VALUE", "kernel", "truncated bzImage");
    uint16_t version = rd16(k + BP_VERSION);
    if (version < 0x020c || !(rd16(k + BP_XLOADFLAGS) & XLF_KERNEL_64))
        return xerr_new("INVALID_VALUE", "kernel",
                        "bzImage without the 64-bit entry (protocol < 2.12)");
    unsigned setup_sects = k[BP_SETUP_SECTS] ? k[BP_SETUP_SECTS] : 4;
    size_t setup_len = (setup_sects + 1) * 512ull;
    if (setup_len >= len)
        return xerr_new("INVALID_VALUE", "kernel", "truncated bzImage");
    size_t payload = len - setup_len;
    uint64_t load = BOOT_HIMEM_START;
    uint64_t init_size = rd32(k + BP_INIT_SIZE);
    if (init_size < payload)
        init_size = payload;
    if (load + init_size > m->low)
        return xerr_new("INVALID_VALUE", "memory_mib", "too small for this kernel");
    uint8_t *dst = boot_gpa(m, load, payload), *zp = boot_gpa(m, BOOT_ZERO_PAGE, 4096);
    if (!dst || !zp)
        return xerr_new("INVALID_VALUE", "memory_mib", "too small for this kernel");
    memcpy(dst, k + setup_len, payload);
    memset(zp, 0, 4096);
    size_t hdr_end = 0x202 + k[0x201];
    if (hdr_end > 0x1000 || hdr_end < BP_HEADER)
        return xerr_new("INVALID_VALUE", "kernel", "bad setup header");
    memcpy(zp + BP_SETUP_SECTS, k + BP_SETUP_SECTS, hdr_end - BP_SETUP_SECTS);
    zp[BP_TYPE_OF_LOADER] = 0xff;
    zp[BP_LOADFLAGS] |= 0x01 | 0x80; /* LOADED_HIGH | CAN_USE_HEAP */
    zp[BP_VID_MODE] = 0xff;
    zp[BP_VID_MODE + 1] = 0xff;
    zp[BP_HEAP_END_PTR] = 0x00;
    zp[BP_HEAP_END_PTR + 1] = 0xfe;
    uint32_t cmdline_max = version >= 0x0206 ? rd32(k + BP_CMDLINE_SIZE) + 1 : 256;
    xerr *e = put_cmdline(m, cmdline, cmdline_max);
    if (e)
        return e;
    wr32(zp + BP_CMD_LINE_PTR, BOOT_CMDLINE_ADDR);
    if (initrd) {
        uint64_t addr, max = (uint64_t)rd32(k + BP_INITRD_MAX) + 1;
        if ((e = put_initrd(m, initrd, initrd_len, load + init_size, max, &addr)))
            return e;
        wr32(zp + BP_RAMDISK_IMAGE, (uint32_t)addr);
        wr32(zp + BP_RAMDISK_SIZE, (uint32_t)initrd_len);
    }
    uint64_t map[8][3];
    size_t n = boot_memmap(m, map, 8);
    for (size_t i = 0; i < n; i++) {
        uint8_t *ent = zp + BP_E820_TABLE + i * 20;
        wr64(ent, map[i][0]);
        wr64(ent + 8, map[i][1]);
        wr32(ent + 16, (uint32_t)map[i][2]);
    }
    zp[BP_E820_ENTRIES] = (uint8_t)n;

    /* Identity map of the first GiB with 2 MiB pages, as the 64-bit entry requires. */
    uint64_t *pml4 = boot_gpa(m, BOOT_PML4_ADDR, 3 * 4096);
    if (!pml4)
        return xerr_new("INVALID_VALUE", "memory_mib", "too small");
    memset(pml4, 0, 3 * 4096);
    uint64_t *pdpt = pml4 + 512, *pd = pml4 + 1024;
    pml4[0] = (BOOT_PML4_ADDR + 0x1000) | 0x3;
    pdpt[0] = (BOOT_PML4_ADDR + 0x2000) | 0x3;
    for (uint64_t i = 0; i < 512; i++)
        pd[i] = (i << 21) | 0x83;
    *ret = (boot_entry){BOOT_MODE_LINUX64, load + 0x200, BOOT_ZERO_PAGE};
    return NULL;
}

xerr *boot_load(const boot_mem *m, const uint8_t *kernel, size_t kernel_len, const uint8_t *initrd,
                size_t initrd_len, const char *cmdline, boot_entry *ret)
{
    if (m->low < 2 * 1024 * 1024)
        return xerr_new("INVALID_VALUE", "memory_mib", "too small");
    if (kernel_len >= 4 && memcmp(kernel, ELFMAG, SELFMAG) == 0)
        return load_elf(m, kernel, kernel_len, initrd, initrd_len, cmdline, ret);
    if (kernel_len >= 0x206 && memcmp(kernel + BP_HEADER, "HdrS", 4) == 0)
        return load_bzimage(m, kernel, kernel_len, initrd, initrd_len, cmdline, ret);
    return xerr_new("INVALID_VALUE", "kernel", "neither an ELF with a PVH note nor a bzImage");
}

void boot_set_rsdp(const boot_mem *m, const boot_entry *be, uint64_t rsdp)
{
    if (be->mode == BOOT_MODE_PVH) {
        struct hvm_start_info *si = boot_gpa(m, be->arg, sizeof(*si));
        if (si)
            si->rsdp_paddr = rsdp;
    } else {
        uint8_t *zp = boot_gpa(m, be->arg, 4096);
        if (zp)
            wr64(zp + 0x070, rsdp); /* boot_params.acpi_rsdp_addr */
    }
}

/* ---- MP table ---- */

static uint8_t checksum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s += *p++;
    return (uint8_t)-s;
}

xerr *boot_write_mptable(const boot_mem *m, unsigned ncpus)
{
    return boot_write_mptable_cpus(m, ncpus, ncpus);
}

xerr *boot_write_mptable_cpus(const boot_mem *m, unsigned ncpus, unsigned nenabled)
{
    size_t size = 44 + ncpus * 20 + 8 + 8 + 16 * 8 + 2 * 8;
    if (size > BOOT_MPFP_ADDR - BOOT_MPTABLE_ADDR)
        return xerr_new("INVALID_VALUE", "vcpus", "too many for the MP table");
    uint8_t *t = boot_gpa(m, BOOT_MPTABLE_ADDR, size), *fp = boot_gpa(m, BOOT_MPFP_ADDR, 16);
    if (!t || !fp)
        return xerr_new("INVALID_VALUE", "memory_mib", "too small");
    memset(t, 0, size);
    uint8_t *e = t + 44;
    uint8_t ioapic_id = (uint8_t)ncpus;
    for (unsigned i = 0; i < ncpus; i++, e += 20) {
        e[0] = 0;          /* processor */
        e[1] = (uint8_t)i; /* LAPIC ID */
        e[2] = 0x14;       /* LAPIC version */
        /* enabled (the others are hot-pluggable), BSP */
        e[3] = (uint8_t)((i < nenabled ? 1 : 0) | (i ? 0 : 2));
        wr32(e + 4, 0x600); /* signature: family 6 */
        wr32(e + 8, 0x201); /* features: FPU, APIC */
    }
    e[0] = 1; /* bus 0: ISA */
    memcpy(e + 2, "ISA   ", 6);
    e += 8;
    e[0] = 2; /* IOAPIC */
    e[1] = ioapic_id;
    e[2] = 0x11;
    e[3] = 1;
    wr32(e + 4, 0xfec00000);
    e += 8;
    for (unsigned irq = 0; irq < 16; irq++, e += 8) {
        e[0] = 3; /* I/O interrupt: ISA irq -> IOAPIC pin irq */
        e[1] = 0; /* INT */
        e[4] = 0; /* source bus */
        e[5] = (uint8_t)irq;
        e[6] = ioapic_id;
        e[7] = (uint8_t)irq;
    }
    e[0] = 4; /* local interrupt: ExtINT -> LINT0 of all */
    e[1] = 3;
    e[6] = 0xff;
    e[7] = 0;
    e += 8;
    e[0] = 4; /* NMI -> LINT1 of all */
    e[1] = 1;
    e[6] = 0xff;
    e[7] = 1;
    e += 8;
    memcpy(t, "PCMP", 4);
    t[4] = (uint8_t)size;
    t[5] = (uint8_t)(size >> 8);
    t[6] = 4; /* spec 1.4 */
    memcpy(t + 8, "NUVEM   ", 8);
    memcpy(t + 16, "NUVEM-VMM   ", 12);
    unsigned count = ncpus + 2 + 16 + 2;
    t[34] = (uint8_t)count;
    t[35] = (uint8_t)(count >> 8);
    wr32(t + 36, 0xfee00000);
    t[7] = checksum(t, size);

    memset(fp, 0, 16);
    memcpy(fp, "_MP_", 4);
    wr32(fp + 4, BOOT_MPTABLE_ADDR);
    fp[8] = 1; /* length in 16-byte units */
    fp[9] = 4;
    fp[10] = checksum(fp, 16);
    return NULL;
}
