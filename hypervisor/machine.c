/* The KVM machine: VM and vCPU creation, guest RAM, one thread per vCPU looping on KVM_RUN,
 * and the port-I/O devices (an ops table in kvmtool's spirit). */
#define _GNU_SOURCE
#include "vmm.h"
#include "acpi.h"
#include "log.h"
#include "mem.h"
#include "platform.h"
#include "util.h"
#include "virtio_console.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define KVM_TSS_ADDR      0xfffbd000
#define KVM_IDMAP_ADDR    0xfffbc000
#define CPUID_MAX_ENTRIES 256
#define SIG_KICK          SIGUSR1

static xerr *sys_err(const char *what)
{
    int e = errno;
    log_err("%s: %s", what, strerror(e));
    return xerr_internal("%s: %s", what, strerror(e));
}

void vmm_wake(vmm *v)
{
    uint64_t one = 1;
    ssize_t r = write(v->wake_fd, &one, sizeof(one));
    (void)r; /* EAGAIN: the counter is already non-zero, the main loop will wake */
}

void vmm_request_stop(vmm *v, enum vmm_request r, const char *reason)
{
    pthread_mutex_lock(&v->lock);
    if (v->request == VMM_REQ_NONE) {
        v->request = r;
        snprintf(v->request_reason, sizeof(v->request_reason), "%s", reason);
    }
    v->halted = true;
    pthread_mutex_unlock(&v->lock);
    vmm_wake(v);
}

static void set_irq(vmm *v, unsigned irq, int level)
{
    struct kvm_irq_level l = {.irq = irq, .level = (uint32_t)level};
    if (v->vm_fd >= 0 && ioctl(v->vm_fd, KVM_IRQ_LINE, &l) < 0)
        log_warn("KVM_IRQ_LINE %u: %s", irq, strerror(errno));
}

static void serial_set_irq(void *opaque, int level)
{
    set_irq(opaque, IRQ_SERIAL, level);
}

static void serial_notify(void *opaque)
{
    vmm_wake(opaque);
}

const serial_ops vmm_serial_ops = {.set_irq = serial_set_irq, .notify = serial_notify};

static void vdev_set_irq(void *opaque, unsigned gsi, int level)
{
    set_irq(opaque, gsi, level);
}

/* ---- MMIO devices: virtio-mmio slots ---- */

static bool mmio_dispatch(vmm *v, uint64_t addr, bool wr, uint8_t *data, unsigned len)
{
    if (addr < VIRTIO_MMIO_BASE ||
        addr >= VIRTIO_MMIO_BASE + VIRTIO_MAX_DEVICES * VIRTIO_MMIO_STRIDE)
        return false;
    unsigned slot = (unsigned)((addr - VIRTIO_MMIO_BASE) / VIRTIO_MMIO_STRIDE);
    uint64_t off = (addr - VIRTIO_MMIO_BASE) % VIRTIO_MMIO_STRIDE;
    if (off + len > VIRTIO_MMIO_SIZE)
        return false;
    if (slot >= v->nvdevs) { /* an empty slot: magic 0, no device (probing guests stop here) */
        if (!wr)
            memset(data, 0, len);
        return true;
    }
    virtio_mmio_access(v->vdevs[slot], off, wr, data, len);
    return true;
}

/* ---- port I/O devices ---- */

typedef struct pio_device {
    uint16_t base, len;
    const char *name;
    void (*io)(vmm *v, uint16_t offset, bool is_write, uint8_t *data, unsigned size);
} pio_device;

static void com1_io(vmm *v, uint16_t off, bool wr, uint8_t *data, unsigned size)
{
    serial_pio(v->serial, off, wr, data);
}

static void platform_io(vmm *v, uint16_t off, bool wr, uint8_t *data, unsigned size)
{
    if (wr) {
        if (off == 0 && (data[0] & 0x3c) == SLEEP_CTL_S5)
            vmm_request_stop(v, VMM_REQ_POWEROFF, "guest-poweroff");
        else if (off == 1 && data[0] == RESET_VALUE)
            vmm_request_stop(v, VMM_REQ_REBOOT, "guest-reset");
        else if (off == PORT_VCPUS - PORT_SLEEP_CTL) {
            unsigned n = data[0] < v->nvcpus ? data[0] : v->nvcpus;
            if (atomic_exchange(&v->vcpus_online, n) != n)
                vmm_wake(v); /* the main loop sends the `vcpus` event */
        }
        return;
    }
    memset(data, 0, size);
    if (off == PORT_VCPUS - PORT_SLEEP_CTL) {
        pthread_mutex_lock(&v->lock);
        data[0] = (uint8_t)v->vcpu_target;
        pthread_mutex_unlock(&v->lock);
    }
    if (off == 2) {
        pthread_mutex_lock(&v->lock);
        data[0] = v->platform_pending;
        v->platform_pending = 0;
        pthread_mutex_unlock(&v->lock);
        set_irq(v, IRQ_PLATFORM, 0);
    }
}

static void panic_io(vmm *v, uint16_t off, bool wr, uint8_t *data, unsigned size)
{
    if (wr)
        vmm_request_stop(v, VMM_REQ_CRASH, "guest-panic");
    else
        data[0] = 1; /* pvpanic: "panicked" event supported */
}

static void i8042_io(vmm *v, uint16_t off, bool wr, uint8_t *data, unsigned size)
{
    if (wr) {
        if (data[0] == 0xfe)
            vmm_request_stop(v, VMM_REQ_REBOOT, "i8042-reset");
        return;
    }
    memset(data, 0, size); /* status 0: never busy, so the kernel's kb_wait ends */
}

static void zero_io(vmm *v, uint16_t off, bool wr, uint8_t *data, unsigned size)
{
    if (!wr)
        memset(data, 0, size); /* CMOS/RTC and POST: reads as zero */
}

static const pio_device pio_devices[] = {
    {PORT_COM1, 8, "com1", com1_io},
    {PORT_SLEEP_CTL, 5, "platform", platform_io},
    {PORT_PANIC, 1, "pvpanic", panic_io},
    {PORT_I8042_DATA, 1, "i8042", i8042_io},
    {PORT_I8042_CMD, 1, "i8042", i8042_io},
    {0x70, 2, "rtc", zero_io},
    {0x80, 1, "post", zero_io},
};

static void pio_dispatch(vmm *v, uint16_t port, bool wr, uint8_t *data, unsigned size)
{
    for (size_t i = 0; i < ARRAY_SIZE(pio_devices); i++) {
        const pio_device *d = &pio_devices[i];
        if (port >= d->base && port < d->base + d->len) {
            d->io(v, (uint16_t)(port - d->base), wr, data, size);
            return;
        }
    }
    atomic_fetch_add(&v->pio_unhandled, 1);
    if (!wr)
        memset(data, 0xff, size);
}

/* ---- vCPU threads ---- */

static void kick_handler(int sig)
{
}

/* Software KVMs (kvm_pvm) emulate guest ring 0 and give up on a few instructions that
 * ordinary kernels execute (see shared/reference/vmm-notes.md). Where the instruction's
 * effect is simple, perform it here and carry on. Returns true if handled. */
static bool fixup_emulation_failure(vcpu *c)
{
    struct kvm_run *run = c->run;
    if (run->emulation_failure.suberror != KVM_INTERNAL_ERROR_EMULATION ||
        run->emulation_failure.ndata < 3 ||
        !(run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES))
        return false;
    const uint8_t *insn = run->emulation_failure.insn_bytes;
    unsigned len = run->emulation_failure.insn_size;
    struct kvm_regs regs;
    if (ioctl(c->fd, KVM_GET_REGS, &regs) < 0)
        return false;
    if (len >= 1 && insn[0] == 0xcc) { /* INT3: deliver #BP after it, as the CPU would */
        regs.rip += 1;
        if (ioctl(c->fd, KVM_SET_REGS, &regs) < 0)
            return false;
        struct kvm_vcpu_events ev;
        if (ioctl(c->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
            return false;
        ev.exception.injected = 1;
        ev.exception.nr = 3;
        ev.exception.has_error_code = 0;
        ev.flags = 0;
        return ioctl(c->fd, KVM_SET_VCPU_EVENTS, &ev) == 0;
    }
    if (len >= 1 && insn[0] == 0x9b) { /* FWAIT: no x87 exceptions pending here */
        regs.rip += 1;
        return ioctl(c->fd, KVM_SET_REGS, &regs) == 0;
    }
    if (len >= 3 && insn[0] == 0x0f && insn[1] == 0x01 && (insn[2] == 0xca || insn[2] == 0xcb)) {
        /* CLAC / STAC: clear / set RFLAGS.AC */
        regs.rip += 3;
        regs.rflags = insn[2] == 0xca ? regs.rflags & ~(1ull << 18) : regs.rflags | (1ull << 18);
        return ioctl(c->fd, KVM_SET_REGS, &regs) == 0;
    }
    return false;
}

static void handle_exit(vcpu *c)
{
    vmm *v = c->vmm;
    struct kvm_run *run = c->run;
    char why[200];
    atomic_fetch_add(&c->exits, 1);
    c->exit_pending = run->exit_reason == KVM_EXIT_IO || run->exit_reason == KVM_EXIT_MMIO;
    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
        atomic_fetch_add(&c->exits_io, 1);
        uint8_t *data = (uint8_t *)run + run->io.data_offset;
        for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size)
            pio_dispatch(v, run->io.port, run->io.direction == KVM_EXIT_IO_OUT, data, run->io.size);
        break;
    }
    case KVM_EXIT_MMIO:
        atomic_fetch_add(&c->exits_mmio, 1);
        if (run->mmio.len <= sizeof(run->mmio.data) &&
            mmio_dispatch(v, run->mmio.phys_addr, run->mmio.is_write, run->mmio.data,
                          run->mmio.len))
            break;
        atomic_fetch_add(&v->mmio_unhandled, 1);
        if (!run->mmio.is_write)
            memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
        break;
    case KVM_EXIT_INTR:
        break;
    case KVM_EXIT_HLT:
        atomic_fetch_add(&c->exits_other, 1);
        vmm_request_stop(v, VMM_REQ_POWEROFF, "halt");
        break;
    case KVM_EXIT_SHUTDOWN:
        atomic_fetch_add(&c->exits_other, 1);
        vmm_request_stop(v, VMM_REQ_CRASH, "triple-fault");
        break;
    case KVM_EXIT_SYSTEM_EVENT:
        atomic_fetch_add(&c->exits_other, 1);
        if (run->system_event.type == KVM_SYSTEM_EVENT_RESET)
            vmm_request_stop(v, VMM_REQ_REBOOT, "system-reset");
        else if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN)
            vmm_request_stop(v, VMM_REQ_POWEROFF, "system-shutdown");
        else
            vmm_request_stop(v, VMM_REQ_CRASH, "system-crash");
        break;
    case KVM_EXIT_INTERNAL_ERROR: {
        atomic_fetch_add(&c->exits_other, 1);
        if (fixup_emulation_failure(c)) {
            atomic_fetch_add(&v->emulation_fixups, 1);
            break;
        }
        struct kvm_regs regs;
        memset(&regs, 0, sizeof(regs));
        ioctl(c->fd, KVM_GET_REGS, &regs);
        snprintf(why, sizeof(why), "internal-error suberror %u at rip 0x%llx (vcpu %u)",
                 run->internal.suberror, (unsigned long long)regs.rip, c->id);
        log_err("%s", why);
        vmm_request_stop(v, VMM_REQ_CRASH, why);
        break;
    }
    case KVM_EXIT_FAIL_ENTRY:
        atomic_fetch_add(&c->exits_other, 1);
        snprintf(why, sizeof(why), "entry-failure 0x%llx (vcpu %u)",
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason, c->id);
        vmm_request_stop(v, VMM_REQ_CRASH, why);
        break;
    default:
        atomic_fetch_add(&c->exits_other, 1);
        snprintf(why, sizeof(why), "unhandled exit %u (vcpu %u)", run->exit_reason, c->id);
        log_err("%s", why);
        vmm_request_stop(v, VMM_REQ_CRASH, why);
        break;
    }
}

static void *vcpu_thread(void *arg)
{
    vcpu *c = arg;
    vmm *v = c->vmm;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIG_KICK);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    for (;;) {
        pthread_mutex_lock(&v->lock);
        if ((v->paused || v->halted) && !v->stopping && c->exit_pending) {
            /* KVM finishes an I/O instruction only on the next KVM_RUN: do that before
             * parking, running no guest code (immediate_exit), so that a paused vCPU's state
             * is whole (what `save` reads). Another exit may follow (string I/O). */
            c->run->immediate_exit = 1;
            pthread_mutex_unlock(&v->lock);
            c->exit_pending = false;
            if (ioctl(c->fd, KVM_RUN, 0) == 0)
                handle_exit(c);
            continue;
        }
        while ((v->paused || v->halted) && !v->stopping) {
            v->parked++;
            pthread_cond_broadcast(&v->cond);
            pthread_cond_wait(&v->cond, &v->lock);
            v->parked--;
        }
        bool stop = v->stopping;
        c->run->immediate_exit = 0;
        pthread_mutex_unlock(&v->lock);
        if (stop)
            break;
        if (ioctl(c->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            char why[128];
            snprintf(why, sizeof(why), "KVM_RUN failed: %s (vcpu %u)", strerror(errno), c->id);
            log_err("%s", why);
            vmm_request_stop(v, VMM_REQ_CRASH, why);
            continue;
        }
        handle_exit(c);
    }
    return NULL;
}

/* Makes every vCPU thread look at the run-control flags: immediate_exit covers a thread
 * between runs, the signal one inside KVM_RUN. Called with v->lock held. */
static void kick_all_locked(vmm *v)
{
    for (unsigned i = 0; i < v->nvcpus; i++) {
        vcpu *c = &v->vcpus[i];
        if (!c->started)
            continue;
        c->run->immediate_exit = 1;
        pthread_kill(c->thread, SIG_KICK);
    }
    pthread_cond_broadcast(&v->cond);
}

void machine_pause(vmm *v)
{
    pthread_mutex_lock(&v->lock);
    v->paused = true;
    kick_all_locked(v);
    unsigned running = 0;
    for (unsigned i = 0; i < v->nvcpus; i++)
        running += v->vcpus[i].started;
    while (v->parked < running && !v->stopping)
        pthread_cond_wait(&v->cond, &v->lock);
    pthread_mutex_unlock(&v->lock);
}

void machine_resume(vmm *v)
{
    pthread_mutex_lock(&v->lock);
    v->paused = false;
    pthread_cond_broadcast(&v->cond);
    pthread_mutex_unlock(&v->lock);
}

void machine_platform_request(vmm *v, uint8_t bits)
{
    pthread_mutex_lock(&v->lock);
    v->platform_pending |= bits;
    pthread_mutex_unlock(&v->lock);
    set_irq(v, IRQ_PLATFORM, 0);
    set_irq(v, IRQ_PLATFORM, 1);
}

void machine_set_vcpus(vmm *v, unsigned n)
{
    pthread_mutex_lock(&v->lock);
    v->vcpu_target = n;
    pthread_mutex_unlock(&v->lock);
    machine_platform_request(v, EVENT_VCPUS);
}

int64_t machine_guest_resident(vmm *v)
{
    if (!v->ram)
        return -1;
    long page = sysconf(_SC_PAGESIZE);
    unsigned char vec[4096];
    uint64_t chunk = sizeof(vec) * (uint64_t)page, resident = 0;
    for (uint64_t off = 0; off < v->mem.size; off += chunk) {
        uint64_t len = v->mem.size - off < chunk ? v->mem.size - off : chunk;
        if (mincore(v->ram + off, len, vec) < 0)
            return -1;
        for (uint64_t i = 0; i < (len + (uint64_t)page - 1) / (uint64_t)page; i++)
            resident += vec[i] & 1;
    }
    return (int64_t)(resident * (uint64_t)page);
}

double machine_vcpu_time(vcpu *c)
{
    struct timespec ts;
    if (!c->started || clock_gettime(c->cpu_clock, &ts) < 0)
        return -1;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- creation ---- */

static xerr *setup_cpuid(vmm *v, vcpu *c, uint32_t tsc_khz)
{
    size_t sz =
        sizeof(struct kvm_cpuid2) + (CPUID_MAX_ENTRIES + 1) * sizeof(struct kvm_cpuid_entry2);
    AUTOFREE struct kvm_cpuid2 *cp = xmalloc(sz);
    memcpy(cp, v->cpuid, sizeof(*cp) + v->cpuid->nent * sizeof(cp->entries[0]));
    bool have_timing = false;
    for (uint32_t i = 0; i < cp->nent; i++) {
        struct kvm_cpuid_entry2 *e = &cp->entries[i];
        switch (e->function) {
        case 1:
            e->ebx = (e->ebx & 0x00ffffff) | (c->id << 24);
            e->ecx |= 1u << 31; /* hypervisor present */
            break;
        case 0xb:
        case 0x1f:
            e->edx = c->id;
            break;
        case 0x40000000:
            if (e->eax < 0x40000010)
                e->eax = 0x40000010;
            break;
        case 0x40000010:
            have_timing = true;
            e->eax = tsc_khz;
            e->ebx = 1000000; /* KVM's APIC bus: 1 GHz */
            break;
        default:
            break;
        }
    }
    if (!have_timing && cp->nent < CPUID_MAX_ENTRIES + 1) {
        /* The timing leaf (VMware's convention): TSC and APIC bus rates in kHz. */
        cp->entries[cp->nent++] =
            (struct kvm_cpuid_entry2){.function = 0x40000010, .eax = tsc_khz, .ebx = 1000000};
    }
    if (ioctl(c->fd, KVM_SET_CPUID2, cp) < 0)
        return sys_err("KVM_SET_CPUID2");
    return NULL;
}

static xerr *setup_lapic(vcpu *c)
{
    struct kvm_lapic_state st;
    if (ioctl(c->fd, KVM_GET_LAPIC, &st) < 0)
        return sys_err("KVM_GET_LAPIC");
    uint32_t lvt0, lvt1;
    memcpy(&lvt0, st.regs + 0x350, 4);
    memcpy(&lvt1, st.regs + 0x360, 4);
    lvt0 = (lvt0 & ~0x700u) | 0x700; /* ExtINT */
    lvt1 = (lvt1 & ~0x700u) | 0x400; /* NMI */
    memcpy(st.regs + 0x350, &lvt0, 4);
    memcpy(st.regs + 0x360, &lvt1, 4);
    if (ioctl(c->fd, KVM_SET_LAPIC, &st) < 0)
        return sys_err("KVM_SET_LAPIC");
    return NULL;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code64)
{
    *s = (struct kvm_segment){.base = 0,
                              .limit = 0xffffffff,
                              .selector = sel,
                              .type = type,
                              .present = 1,
                              .dpl = 0,
                              .db = code64 ? 0 : 1,
                              .s = 1,
                              .l = code64 ? 1 : 0,
                              .g = 1};
}

static xerr *setup_boot_regs(vmm *v, vcpu *c, const boot_entry *be)
{
    struct kvm_sregs sr;
    if (ioctl(c->fd, KVM_GET_SREGS, &sr) < 0)
        return sys_err("KVM_GET_SREGS");
    struct kvm_regs r;
    memset(&r, 0, sizeof(r));
    r.rflags = 2;
    r.rip = be->entry;
    bool lm = be->mode == BOOT_MODE_LINUX64;
    seg(&sr.cs, 0x08, 0x0b, lm);
    seg(&sr.ds, 0x10, 0x03, false);
    sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
    sr.tr = (struct kvm_segment){
        .base = 0, .limit = 0x67, .selector = 0x18, .type = 0x0b, .present = 1};
    sr.ldt = (struct kvm_segment){.selector = 0, .type = 0x2, .present = 1, .limit = 0xffff};
    if (lm) {
        /* GDT {null, code64, data, tss} and an empty IDT, as the 64-bit boot protocol expects. */
        uint64_t *gdt = boot_gpa(&v->mem, BOOT_GDT_ADDR, 4 * 8 + 8);
        gdt[0] = 0;
        gdt[1] = 0x00af9b000000ffffull;
        gdt[2] = 0x00cf93000000ffffull;
        gdt[3] = 0x008f8b000000ffffull;
        gdt[4] = 0;
        sr.gdt.base = BOOT_GDT_ADDR;
        sr.gdt.limit = 4 * 8 - 1;
        sr.idt.base = BOOT_GDT_ADDR + 4 * 8;
        sr.idt.limit = 7;
        sr.cr3 = BOOT_PML4_ADDR;
        sr.cr4 = 0x20;       /* PAE */
        sr.cr0 = 0x80000011; /* PG | ET | PE */
        sr.efer = 0x500;     /* LME | LMA */
        r.rsi = be->arg;
        r.rsp = r.rbp = BOOT_STACK_ADDR;
    } else {
        sr.cr0 = 0x11; /* PE | ET, paging off */
        sr.cr4 = 0;
        sr.efer = 0;
        r.rbx = be->arg;
    }
    if (ioctl(c->fd, KVM_SET_SREGS, &sr) < 0)
        return sys_err("KVM_SET_SREGS");
    if (ioctl(c->fd, KVM_SET_REGS, &r) < 0)
        return sys_err("KVM_SET_REGS");
    struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
    if (ioctl(c->fd, KVM_SET_FPU, &fpu) < 0)
        return sys_err("KVM_SET_FPU");
    return NULL;
}

static xerr *get_supported_cpuid(vmm *v)
{
    /* Room for one more entry than KVM reports: setup_cpuid may add the timing leaf. */
    size_t sz =
        sizeof(struct kvm_cpuid2) + (CPUID_MAX_ENTRIES + 1) * sizeof(struct kvm_cpuid_entry2);
    v->cpuid = xcalloc(1, sz);
    v->cpuid->nent = CPUID_MAX_ENTRIES;
    if (ioctl(v->kvm_fd, KVM_GET_SUPPORTED_CPUID, v->cpuid) < 0)
        return sys_err("KVM_GET_SUPPORTED_CPUID"); /* E2BIG: more than 256 leaves */
    return NULL;
}

static xerr *setup_memory(vmm *v)
{
    uint64_t size = v->cfg->memory_mib << 20;
    void *ram = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED)
        return sys_err("mmap guest memory");
    v->ram = ram;
    v->mem = (boot_mem){
        .ram = ram, .size = size, .low = size < BOOT_MMIO_HOLE_START ? size : BOOT_MMIO_HOLE_START};
    if (v->cfg->mem_merge && madvise(ram, size, MADV_MERGEABLE) < 0)
        log_warn("MADV_MERGEABLE: %s", strerror(errno));
    if (v->cfg->hugepages && madvise(ram, size, MADV_HUGEPAGE) < 0)
        log_warn("MADV_HUGEPAGE: %s", strerror(errno));
    struct kvm_userspace_memory_region low = {.slot = 0,
                                              .guest_phys_addr = 0,
                                              .memory_size = v->mem.low,
                                              .userspace_addr = (uintptr_t)ram};
    if (ioctl(v->vm_fd, KVM_SET_USER_MEMORY_REGION, &low) < 0)
        return sys_err("KVM_SET_USER_MEMORY_REGION");
    if (size > v->mem.low) {
        struct kvm_userspace_memory_region high = {.slot = 1,
                                                   .guest_phys_addr = BOOT_4G,
                                                   .memory_size = size - v->mem.low,
                                                   .userspace_addr = (uintptr_t)ram + v->mem.low};
        if (ioctl(v->vm_fd, KVM_SET_USER_MEMORY_REGION, &high) < 0)
            return sys_err("KVM_SET_USER_MEMORY_REGION");
    }
    return NULL;
}

xerr *machine_create(vmm *v)
{
    xerr *e;
    v->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (v->kvm_fd < 0)
        return sys_err("open /dev/kvm");
    if (ioctl(v->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
        return xerr_internal("unsupported KVM API version");
    v->vm_fd = ioctl(v->kvm_fd, KVM_CREATE_VM, 0);
    if (v->vm_fd < 0)
        return sys_err("KVM_CREATE_VM");
    if (ioctl(v->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR) < 0)
        log_debug("KVM_SET_TSS_ADDR: %s", strerror(errno));
    uint64_t idmap = KVM_IDMAP_ADDR;
    if (ioctl(v->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
        log_debug("KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(errno));
    if (ioctl(v->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return sys_err("KVM_CREATE_IRQCHIP");
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (ioctl(v->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        return sys_err("KVM_CREATE_PIT2");
    if ((e = setup_memory(v)))
        return e;
    boot_entry be;
    if ((e = boot_load(&v->mem, v->kernel_image, v->kernel_len, v->initrd_image, v->initrd_len,
                       v->cfg->cmdline, &be)))
        return e;
    /* vCPUs beyond the target exist but start offline (hot-plug); a reboot keeps the target. */
    unsigned enabled = v->vcpu_target && v->vcpu_target < v->nvcpus ? v->vcpu_target : v->nvcpus;
    v->vcpus_online = enabled; /* until the guest reports */
    if (v->agent)
        virtio_console_machine_reset(v->agent);
    if ((e = boot_write_mptable_cpus(&v->mem, v->nvcpus, enabled)))
        return e;
    acpi_mmio_dev adevs[VIRTIO_MAX_DEVICES];
    for (unsigned i = 0; i < v->nvdevs; i++) {
        adevs[i] = (acpi_mmio_dev){.base = VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE,
                                   .size = VIRTIO_MMIO_SIZE,
                                   .gsi = VIRTIO_GSI_BASE + i};
        virtio_dev_attach(v->vdevs[i], &v->mem, adevs[i].gsi, vdev_set_irq, v);
    }
    if (v->cfg->acpi) {
        uint64_t rsdp;
        if ((e = acpi_write_tables_cpus(&v->mem, v->nvcpus, enabled, adevs, v->nvdevs, &rsdp)))
            return e;
        boot_set_rsdp(&v->mem, &be, rsdp);
    }
    int mmap_size = ioctl(v->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (mmap_size <= 0)
        return sys_err("KVM_GET_VCPU_MMAP_SIZE");
    v->run_size = (size_t)mmap_size;
    if (!v->cpuid && (e = get_supported_cpuid(v)))
        return e;
    v->vcpus = xcalloc(v->nvcpus, sizeof(vcpu));
    for (unsigned i = 0; i < v->nvcpus; i++) {
        vcpu *c = &v->vcpus[i];
        c->vmm = v;
        c->id = i;
        c->fd = -1;
    }
    uint32_t tsc_khz = 0;
    for (unsigned i = 0; i < v->nvcpus; i++) {
        vcpu *c = &v->vcpus[i];
        c->fd = ioctl(v->vm_fd, KVM_CREATE_VCPU, i);
        if (c->fd < 0)
            return sys_err("KVM_CREATE_VCPU");
        void *run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
        if (run == MAP_FAILED)
            return sys_err("mmap kvm_run");
        c->run = run;
        if (i == 0) {
            int khz = ioctl(c->fd, KVM_GET_TSC_KHZ, 0);
            tsc_khz = khz > 0 ? (uint32_t)khz : 0;
        }
        if ((e = setup_cpuid(v, c, tsc_khz)) || (e = setup_lapic(c)))
            return e;
        if (i == 0 && (e = setup_boot_regs(v, c, &be)))
            return e;
    }
    serial_reset(v->serial);
    v->platform_pending = 0;
    v->request = VMM_REQ_NONE;
    v->request_reason[0] = 0;
    v->halted = false;
    v->stopping = false;
    return NULL;
}

xerr *machine_start(vmm *v)
{
    struct sigaction sa = {.sa_handler = kick_handler};
    sigemptyset(&sa.sa_mask);
    sigaction(SIG_KICK, &sa, NULL);
    /* Threads start with the kick signal blocked and unblock it themselves. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIG_KICK);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    xerr *e = NULL;
    for (unsigned i = 0; i < v->nvcpus && !e; i++) {
        vcpu *c = &v->vcpus[i];
        int r = pthread_create(&c->thread, NULL, vcpu_thread, c);
        if (r) {
            errno = r;
            e = sys_err("pthread_create");
            break;
        }
        char name[16];
        snprintf(name, sizeof(name), "vcpu%u", i);
        pthread_setname_np(c->thread, name);
        pthread_getcpuclockid(c->thread, &c->cpu_clock);
        pthread_mutex_lock(&v->lock);
        c->started = true;
        pthread_mutex_unlock(&v->lock);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    v->boot_time = now_monotonic();
    v->boots++;
    return e;
}

void machine_destroy(vmm *v)
{
    if (v->vcpus) {
        pthread_mutex_lock(&v->lock);
        v->stopping = true;
        kick_all_locked(v);
        pthread_mutex_unlock(&v->lock);
        for (unsigned i = 0; i < v->nvcpus; i++) {
            vcpu *c = &v->vcpus[i];
            if (c->started)
                pthread_join(c->thread, NULL);
            c->started = false;
        }
        for (unsigned i = 0; i < v->nvcpus; i++) {
            vcpu *c = &v->vcpus[i];
            if (c->run)
                munmap(c->run, v->run_size);
            if (c->fd >= 0)
                close(c->fd);
        }
        free(v->vcpus);
        v->vcpus = NULL;
    }
    for (unsigned i = 0; i < v->nvdevs; i++)
        virtio_dev_detach(v->vdevs[i]); /* device threads stop using guest RAM */
    if (v->ram) {
        munmap(v->ram, v->mem.size);
        v->ram = NULL;
    }
    if (v->vm_fd >= 0)
        close(v->vm_fd);
    v->vm_fd = -1;
    if (v->kvm_fd >= 0)
        close(v->kvm_fd);
    v->kvm_fd = -1;
    v->parked = 0;
    v->stopping = false;
}
