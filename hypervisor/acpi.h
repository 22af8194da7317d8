/* Minimal ACPI tables for Linux guests: RSDP, XSDT, a hardware-reduced FADT whose sleep
 * control/status and reset registers are nuvem-vmm's platform ports, a MADT (LAPIC per vCPU,
 * IOAPIC) and a DSDT declaring \_S5 (so `poweroff` writes SLP_TYP=5 | SLP_EN = 0x34). */
#pragma once

#include "boot.h"

#define ACPI_RSDP_ADDR   0xe0000 /* in the reserved BIOS area; Linux also scans for it here */
#define ACPI_TABLES_SIZE 0x10000

/* Writes the tables for ncpus CPUs; returns the RSDP's guest-physical address in *ret. */
xerr *acpi_write_tables(const boot_mem *m, unsigned ncpus, uint64_t *ret_rsdp);

/* A virtio-mmio device for the DSDT: HID LNRO0005 (what Linux's virtio_mmio matches), a
 * 32-bit fixed memory range and one level-triggered, active-high GSI. */
typedef struct acpi_mmio_dev {
    uint64_t base;
    uint32_t size;
    uint32_t gsi;
} acpi_mmio_dev;
#define ACPI_MAX_MMIO_DEVS 32

/* The same, with virtio-mmio devices declared in \_SB (ndevs at most ACPI_MAX_MMIO_DEVS). */
xerr *acpi_write_tables_devs(const boot_mem *m, unsigned ncpus, const acpi_mmio_dev *devs,
                             unsigned ndevs, uint64_t *ret_rsdp);
/* The same, with CPUs from nenabled on listed as online capable (ACPI 6.3 MADT flag bit 1):
 * present for hot-plug, not started at boot. */
xerr *acpi_write_tables_cpus(const boot_mem *m, unsigned ncpus, unsigned nenabled,
                             const acpi_mmio_dev *devs, unsigned ndevs, uint64_t *ret_rsdp);
