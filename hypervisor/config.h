/* nuvem-vmm's VM configuration: parsed once from the JSON file given on the command line. */
#pragma once

#include "cleanup.h"
#include "err.h"

#include <stdbool.h>
#include <stdint.h>

#define VMM_MAX_VCPUS      64
#define VMM_MIN_MEMORY_MIB 2
#define VMM_MAX_MEMORY_MIB (1024 * 1024)
#define VMM_MAX_CMDLINE    4096
#define VMM_MAX_DISKS      8 /* virtio-mmio slots (GSIs 16-23), shared with future devices */

#define VMM_MAX_NICS 8 /* disks + nics share the 8 slots */

/* A virtio-net NIC on an existing tap. */
typedef struct vmm_nic {
    char *tap;
    uint8_t mac[6];
} vmm_nic;

/* Image format of a disk: raw bytes, a VHD (chain), or chosen by the VHD footer cookie. */
enum vmm_disk_format { VMM_DISK_RAW = 0, VMM_DISK_VHD, VMM_DISK_AUTO };

/* A virtio-blk disk: a raw image file or a VHD chain. */
typedef struct vmm_disk {
    char *path;
    bool readonly;
    enum vmm_disk_format format; /* `format`: "raw" (default) | "vhd" | "auto" */
} vmm_disk;

enum vmm_on_reboot { VMM_ON_REBOOT_RESTART = 0, VMM_ON_REBOOT_EXIT };
enum vmm_on_crash { VMM_ON_CRASH_EXIT = 0, VMM_ON_CRASH_PAUSE, VMM_ON_CRASH_RESTART };

typedef struct vmm_config {
    char *name;          /* free-form label for logs and the greeting */
    char *uuid;          /* optional */
    uint64_t memory_mib; /* guest RAM */
    unsigned vcpus;
    char *kernel;              /* ELF with a PVH note, or a bzImage */
    char *initrd;              /* optional */
    char *cmdline;             /* never NULL after parsing ("" by default) */
    char *serial_log;          /* optional: all guest serial output is appended here */
    uint64_t serial_log_limit; /* at most this many bytes go to serial_log (0: no limit) */
    char *console_socket;      /* optional: Unix socket streaming the serial console */
    char *control_socket;      /* required: the control socket */
    enum vmm_on_reboot on_reboot;
    enum vmm_on_crash on_crash;
    bool start_paused; /* create everything, wait for `resume` */
    bool mem_merge;    /* MADV_MERGEABLE on guest RAM (KSM) */
    bool hugepages;    /* MADV_HUGEPAGE on guest RAM */
    bool acpi;         /* ACPI tables (RSDP, FADT, MADT, DSDT) besides the MP table */
    bool sandbox;      /* seccomp allowlist and no capabilities once set up (default on) */

    unsigned vcpus_max; /* vCPUs that exist (hot-plug limit, >= vcpus; default vcpus) */
    bool balloon;       /* virtio-balloon after disks and NICs (default on, if a slot is free) */
    bool agent;         /* virtio-console guest-agent channel (default on, if a slot is free) */
    vmm_disk disks[VMM_MAX_DISKS]; /* `disks`: [{path, readonly}] in order (vda, vdb, ...) */
    unsigned ndisks;
    vmm_nic nics[VMM_MAX_NICS]; /* `nics`: [{tap, mac}] in order, after the disks */
    unsigned nnics;
} vmm_config;

void vmm_config_free(vmm_config *c);
DEFINE_FREEP(vmm_config)

/* Parses a configuration from JSON text. On failure returns NULL and sets *ret_err to
 * INVALID_VALUE [field, why] / FIELD_TYPE_ERROR [field] / JSON parse errors. */
vmm_config *vmm_config_parse(const char *json, size_t len, xerr **ret_err);
