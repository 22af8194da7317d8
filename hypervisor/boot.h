/* Kernel loading into guest memory: PVH ELF (mini guest, Linux vmlinux) and the bzImage 64-bit
 * boot protocol, with the memory map, command line, initrd and an MP table for SMP. */
#pragma once

#include "err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Guest-physical layout (low memory). */
#define BOOT_GDT_ADDR        0x500
#define BOOT_PVH_INFO_ADDR   0x6000
#define BOOT_PVH_MODLIST     0x6040
#define BOOT_PVH_MEMMAP      0x7000 /* PVH memmap, or the bzImage zero page */
#define BOOT_ZERO_PAGE       0x7000
#define BOOT_PML4_ADDR       0x9000 /* bzImage: identity map of the first GiB */
#define BOOT_CMDLINE_ADDR    0x20000
#define BOOT_MPTABLE_ADDR    0x9f000 /* MP config table */
#define BOOT_MPFP_ADDR       0x9fc00 /* MP floating pointer (last KiB of base memory) */
#define BOOT_EBDA_START      0x9f000
#define BOOT_HIMEM_START     0x100000
#define BOOT_MMIO_HOLE_START 0xc0000000ull /* RAM above this moves to 4 GiB */
#define BOOT_4G              0x100000000ull
#define BOOT_STACK_ADDR      0x8ff0

typedef struct boot_mem {
    uint8_t *ram;  /* host mapping of all guest RAM, low part first */
    uint64_t size; /* total bytes */
    uint64_t low;  /* bytes mapped at guest-physical 0 (the rest sits at 4 GiB) */
} boot_mem;

enum boot_mode { BOOT_MODE_PVH = 1, BOOT_MODE_LINUX64 };

typedef struct boot_entry {
    enum boot_mode mode;
    uint64_t entry; /* guest-physical entry point */
    uint64_t arg;   /* PVH: start_info (EBX); bzImage: zero page (RSI) */
} boot_entry;

/* Returns a host pointer to guest-physical [gpa, gpa+len), or NULL if not all RAM. */
void *boot_gpa(const boot_mem *m, uint64_t gpa, uint64_t len);

/* Loads a kernel image (bytes of the file) and boot data into guest RAM. initrd may be
 * NULL. Errors: INVALID_VALUE [kernel|initrd|cmdline, why]. */
xerr *boot_load(const boot_mem *m, const uint8_t *kernel, size_t kernel_len, const uint8_t *initrd,
                size_t initrd_len, const char *cmdline, boot_entry *ret);

/* Tells the loaded kernel where the ACPI RSDP is (PVH start_info / zero page). */
void boot_set_rsdp(const boot_mem *m, const boot_entry *be, uint64_t rsdp);

/* Writes an MP table (Intel MPS 1.4) for ncpus CPUs with an IOAPIC and ISA IRQs 0-15. */
xerr *boot_write_mptable(const boot_mem *m, unsigned ncpus);
/* The same, with only the first nenabled CPUs enabled: the others exist, start offline and
 * can be brought up later (vCPU hot-plug). */
xerr *boot_write_mptable_cpus(const boot_mem *m, unsigned ncpus, unsigned nenabled);

/* Number of e820-style entries written to out (at most max): the guest memory map. */
size_t boot_memmap(const boot_mem *m, uint64_t (*out)[3], size_t max);
