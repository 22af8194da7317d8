/* Mini guest constants shared by the assembly entry and the C kernel, and the guest ABI
 * with nuvem-vmm (I/O ports; keep in sync with hypervisor/platform.h). */
#pragma once

#define KERNEL_CS 0x08
#define KERNEL_DS 0x10

#define MAX_CPUS       16 /* power of two */
#define AP_STACK_SHIFT 13 /* 8 KiB per AP stack */
#define AP_TRAMPOLINE  0x8000

#define LAPIC_BASE  0xfee00000
#define IOAPIC_BASE 0xfec00000

#define VEC_SERIAL   0x24
#define VEC_PLATFORM 0x29
#define VEC_TIMER    0x30
#define VEC_IPI      0x40
#define VEC_VIRTIO   0x50 /* virtio-balloon and virtio-console lines (level) */
#define VEC_SPURIOUS 0xff

/* nuvem-vmm platform ports (the guest ABI). */
#define PORT_COM1       0x3f8
#define PORT_SLEEP_CTL  0x600 /* write 0x34 (SLP_TYP=5 | SLP_EN): power off */
#define PORT_RESET      0x601 /* write 0x01: reboot */
#define PORT_EVENT      0x602 /* read: pending host requests (bit 0: power down); clears */
#define PORT_PANIC      0x505 /* write 1: guest panicked (pvpanic-style) */
#define IRQ_SERIAL      4
#define IRQ_PLATFORM    9
#define SLEEP_CTL_S5    0x34
#define RESET_VALUE     0x01
#define EVENT_POWERDOWN 0x01
#define EVENT_VCPUS     0x02  /* the vCPU target changed: read it from PORT_VCPUS */
#define PORT_VCPUS      0x604 /* read: vCPUs the host wants online; write: how many are */
