/* Minimal ACPI tables for Linux guests: RSDP, XSDT, a hardware-reduced FADT whose sleep
 * control/status and reset registers are nuvem-vmm's platform ports, a MADT (LAPIC per vCPU,
 * IOAPIC) and a DSDT declaring \_S5 (so `poweroff` writes SLP_TYP=5 | SLP_EN = 0x34). */
#pragma once

#include "boot.h"

#define ACPI_RSDP_ADDR   0xe0000 /* in the reserved BIOS area; Linux also scans for it here */
#define ACPI_TABLES_SIZE 0x10000

/* Writes the tables for ncpus CPUs; returns the RSDP's guest-physical address in *ret. */
xerr *acpi_write_tables(const boot_mem *m, unsigned ncpus, uint64_t *ret_rsdp);
