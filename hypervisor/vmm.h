/* nuvem-vmm internals shared by the machine (KVM, vCPU threads, port devices) and the main
 * loop (control socket, console streams). One process runs one VM. */
#pragma once

#include "boot.h"
#include "config.h"
#include "serial.h"
#include "virtio.h"

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Guest-initiated stops, reported by a vCPU thread to the main loop; the first one wins. */
enum vmm_request {
    VMM_REQ_NONE = 0,
    VMM_REQ_POWEROFF, /* sleep-control S5 write */
    VMM_REQ_REBOOT,   /* reset register, i8042 reset */
    VMM_REQ_CRASH,    /* triple fault, guest panic, unhandled exit */
};

typedef struct vcpu {
    struct vmm *vmm;
    unsigned id;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool started;
    clockid_t cpu_clock; /* valid once started */
    _Atomic uint64_t exits, exits_io, exits_mmio, exits_other;
    bool exit_pending; /* an I/O exit KVM completes on the next KVM_RUN (vCPU thread only) */
} vcpu;

typedef struct vmm {
    vmm_config *cfg;
    /* machine (recreated on reboot/reset) */
    int kvm_fd;
    int vm_fd;
    size_t run_size;
    uint8_t *ram;
    boot_mem mem;
    vcpu *vcpus;
    unsigned nvcpus;
    struct kvm_cpuid2 *cpuid;
    uint8_t *kernel_image, *initrd_image;
    size_t kernel_len, initrd_len;
    /* devices */
    serial *serial;
    int serial_log_fd;
    /* virtio-mmio devices, created once (before the sandbox) and kept across reboots: slot i
     * at VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE, GSI VIRTIO_GSI_BASE + i */
    virtio_dev *vdevs[VIRTIO_MAX_DEVICES];
    unsigned nvdevs;
    struct virtio_blk *disks[VMM_MAX_DISKS];
    unsigned ndisks;
    struct virtio_net *nics[VMM_MAX_NICS];
    unsigned nnics;
    struct virtio_balloon *balloon; /* NULL without "balloon" */
    struct virtio_console *agent;   /* NULL without "agent" */
    struct live *live;              /* live.c: event coalescing */
    /* run control, under lock */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool paused;     /* by the control socket */
    bool halted;     /* after a guest-initiated stop, until the main loop acts */
    bool stopping;   /* vCPU threads must return */
    unsigned parked; /* vCPU threads waiting while paused */
    enum vmm_request request;
    char request_reason[256];
    uint8_t platform_pending; /* host->guest requests (PORT_EVENT bits) */
    unsigned vcpu_target;     /* vCPUs the host wants online (nvcpus = the boot-time maximum) */
    _Atomic unsigned vcpus_online; /* as the guest last reported (PORT_VCPUS) */
    /* wakes the main loop */
    int wake_fd;
    /* counters that survive reboots */
    _Atomic uint64_t pio_unhandled, mmio_unhandled, emulation_fixups;
    uint64_t boots;
    double boot_time;
} vmm;

/* Serial callbacks that drive IRQ 4 and wake the main loop (opaque: the vmm). */
extern const serial_ops vmm_serial_ops;

/* Creates the VM: KVM fds, RAM, irqchip/PIT, vCPUs (not started), loads the kernel.
 * Returns an error to report (INVALID_VALUE for a bad kernel/config, INTERNAL_ERROR for KVM). */
xerr *machine_create(vmm *v);
/* Starts one thread per vCPU (they park at once if v->paused). */
xerr *machine_start(vmm *v);
/* Stops and joins the vCPU threads and frees the VM; safe on a partly created machine. */
void machine_destroy(vmm *v);
/* Pause: returns once every vCPU thread is parked. Resume: lets them run. */
void machine_pause(vmm *v);
void machine_resume(vmm *v);
/* Raises a host->guest platform request (bit of PORT_EVENT) with its interrupt. */
void machine_platform_request(vmm *v, uint8_t bits);
/* Sets the vCPU target (1..nvcpus) and tells the guest (EVENT_VCPUS). */
void machine_set_vcpus(vmm *v, unsigned n);
/* Bytes of guest RAM resident in host memory (touched and not reclaimed), or -1. */
int64_t machine_guest_resident(vmm *v);
/* vCPU thread CPU time in seconds, or -1. */
double machine_vcpu_time(vcpu *c);
/* Records a guest-initiated stop (first wins) and wakes the main loop. */
void vmm_request_stop(vmm *v, enum vmm_request r, const char *reason);
void vmm_wake(vmm *v);
