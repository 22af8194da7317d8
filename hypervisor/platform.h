/* The guest ABI of nuvem-vmm's platform ports (mirrored in guest/guest.h). */
#pragma once

#define PORT_COM1         0x3f8
#define PORT_SLEEP_CTL    0x600 /* write SLEEP_CTL_S5 (SLP_TYP=5 | SLP_EN): power off */
#define PORT_RESET        0x601 /* write RESET_VALUE: reboot */
#define PORT_EVENT        0x602 /* read: pending host requests, cleared by the read */
#define PORT_SLEEP_STATUS 0x603 /* ACPI sleep status register: reads 0, writes ignored */
#define PORT_VCPUS        0x604 /* read: vCPUs the host wants online; write: how many are */
#define PORT_PANIC        0x505 /* pvpanic-style: a write means the guest panicked */
#define PORT_I8042_DATA   0x60
#define PORT_I8042_CMD    0x64 /* write 0xfe: CPU reset */
#define IRQ_SERIAL        4
#define IRQ_PLATFORM      9
#define SLEEP_CTL_S5      0x34
#define RESET_VALUE       0x01
#define EVENT_POWERDOWN   0x01
#define EVENT_VCPUS       0x02 /* the vCPU target (PORT_VCPUS) changed */
