/* The Nuvem mini guest: a tickless freestanding x86-64 kernel that prints a banner on COM1 and
 * runs a small command interpreter there. It idles in HLT and is woken only by interrupts
 * (serial input, platform requests from the VMM, an optional timer).
 *
 * Ring-0 code is emulated on some hosts at ~1-2 M instructions/s, so everything here is
 * short and straight: no FPU/SSE, no table-building loops, output goes straight to THR. */
#include "guest.h"
#include "virtio.h"
#include "live.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_VERSION "0.1"

/* ---- low-level helpers ---- */

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint32_t mmio_read32(uintptr_t addr)
{
    return *(volatile uint32_t *)addr;
}

static inline void mmio_write32(uintptr_t addr, uint32_t v)
{
    *(volatile uint32_t *)addr = v;
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);

void *memcpy(void *dst, const void *src, size_t n)
{
    char *d = dst;
    const char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    char *d = dst;
    const char *s = src;
    if (d < s)
        return memcpy(dst, src, n);
    while (n--)
        d[n] = s[n];
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    char *d = dst;
    while (n--)
        *d++ = (char)c;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

static size_t kstrlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static bool word_is(const char *s, size_t n, const char *w)
{
    return kstrlen(w) == n && memcmp(s, w, n) == 0;
}

/* ---- serial console ---- */

/* Output is gathered per line and sent with one `rep outsb`: one VM exit per line instead
 * of one per byte (nuvem-vmm's UART transmits at once, so no LSR polling either). */
static char out_buf[128];
static unsigned out_len;

static void serial_flush(void)
{
    const char *p = out_buf;
    unsigned long n = out_len;
    if (!n)
        return;
    __asm__ volatile("rep outsb" : "+S"(p), "+c"(n) : "d"((uint16_t)PORT_COM1) : "memory");
    out_len = 0;
}

static void serial_putc(char c)
{
    out_buf[out_len++] = c;
    if (c == '\n' || out_len == sizeof(out_buf))
        serial_flush();
}

static void kputs(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            serial_putc('\r');
        serial_putc(*s);
    }
    serial_flush();
}

static void put_u64(uint64_t v, unsigned base, int width, char pad)
{
    char buf[24];
    int n = 0;
    do {
        unsigned d = (unsigned)(v % base);
        buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    while (n < width && n < (int)sizeof(buf))
        buf[n++] = pad;
    while (n)
        serial_putc(buf[--n]);
}

/* A printf subset: %s %c %d %u %x %lu %ld %lx %llu %llx %%, optional zero pad width. */
static void kprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            if (*fmt == '\n')
                serial_putc('\r');
            serial_putc(*fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0, longs = 0;
        if (*fmt == '0')
            pad = '0';
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            longs++;
            fmt++;
        }
        switch (*fmt) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            kputs(s ? s : "(null)");
            break;
        }
        case 'c':
            serial_putc((char)va_arg(ap, int));
            break;
        case 'd': {
            int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);
            if (v < 0) {
                serial_putc('-');
                v = -v;
            }
            put_u64((uint64_t)v, 10, width, pad);
            break;
        }
        case 'u':
        case 'x': {
            uint64_t v = longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
            put_u64(v, *fmt == 'u' ? 10 : 16, width, pad);
            break;
        }
        case '%':
            serial_putc('%');
            break;
        default:
            serial_putc('?');
            break;
        }
    }
    va_end(ap);
    serial_flush();
}

/* Input line, filled by the serial interrupt, consumed by the idle loop. */
#define LINE_MAX 128
static volatile char rx_line[LINE_MAX];
static volatile unsigned rx_len;
static volatile bool rx_ready;

static void serial_init(void)
{
    outb(PORT_COM1 + 1, 0x00); /* IER off while configuring */
    outb(PORT_COM1 + 3, 0x03); /* 8N1 */
    outb(PORT_COM1 + 4, 0x0b); /* DTR | RTS | OUT2 */
    outb(PORT_COM1 + 1, 0x01); /* receive-data interrupt */
}

static void serial_irq(void)
{
    while (inb(PORT_COM1 + 5) & 0x01) {
        if (rx_ready) {
            /* A line waits to be handled: leave further input queued in the UART (the VMM
             * holds it, with backpressure) until the idle loop re-enables the interrupt. */
            outb(PORT_COM1 + 1, 0x00);
            return;
        }
        char c = (char)inb(PORT_COM1);
        if (c == '\r' || c == '\n') {
            if (rx_len)
                rx_ready = true;
            continue;
        }
        if (c == 0x7f || c == 0x08) {
            if (rx_len)
                rx_len--;
            continue;
        }
        if (rx_len < LINE_MAX - 1)
            rx_line[rx_len++] = c;
    }
}

/* ---- boot information (PVH hvm_start_info) ---- */

struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct hvm_memmap_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};

#define HVM_START_MAGIC 0x336ec578

static uint64_t mem_bytes;
static const char *cmdline = "";
static const struct hvm_start_info *boot_si; /* for the page allocator's ranges */

static void bootinfo_init(const struct hvm_start_info *si)
{
    if (!si || si->magic != HVM_START_MAGIC)
        return;
    boot_si = si;
    if (si->cmdline_paddr)
        cmdline = (const char *)(uintptr_t)si->cmdline_paddr;
    if (si->version >= 1 && si->memmap_paddr) {
        const struct hvm_memmap_entry *e = (const void *)(uintptr_t)si->memmap_paddr;
        for (uint32_t i = 0; i < si->memmap_entries; i++)
            if (e[i].type == 1)
                mem_bytes += e[i].size;
    }
}

/* ---- time: TSC, its rate from the hypervisor's timing leaf (0x40000010) ---- */

static uint64_t tsc_khz, apic_bus_khz = 1000000, tsc_boot;

static void time_init(void)
{
    uint32_t a, b, c, d;
    tsc_boot = rdtsc();
    cpuid(0x40000000, &a, &b, &c, &d);
    if (a >= 0x40000010) {
        cpuid(0x40000010, &a, &b, &c, &d);
        if (a)
            tsc_khz = a;
        if (b)
            apic_bus_khz = b;
    }
}

static uint64_t uptime_ms(void)
{
    return tsc_khz ? (rdtsc() - tsc_boot) / tsc_khz : 0;
}

/* ---- interrupts: IDT, LAPIC, IOAPIC ---- */

struct idt_entry {
    uint16_t off_lo, sel;
    uint8_t ist, type;
    uint16_t off_mid;
    uint32_t off_hi, zero;
} __attribute__((packed));

static struct idt_entry idt[256] __attribute__((aligned(16)));

struct isr_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rdi, rsi, rbp, rbx, rdx, rcx, rax;
    uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

extern const uint64_t isr_table[];

static void idt_load(uint16_t limit, const void *base)
{
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) p = {limit, (uint64_t)(uintptr_t)base};
    __asm__ volatile("lidt %0" ::"m"(p));
}

static void idt_init(void)
{
    for (const uint64_t *e = isr_table; e[0] != 0xffff; e += 2) {
        struct idt_entry *d = &idt[e[0]];
        uint64_t off = e[1];
        d->off_lo = (uint16_t)off;
        d->sel = KERNEL_CS;
        d->type = 0x8e; /* present, interrupt gate */
        d->off_mid = (uint16_t)(off >> 16);
        d->off_hi = (uint32_t)(off >> 32);
    }
    idt_load(sizeof(idt) - 1, idt);
}

#define LAPIC_ID       0x020
#define LAPIC_EOI      0x0b0
#define LAPIC_SVR      0x0f0
#define LAPIC_ICR_LO   0x300
#define LAPIC_ICR_HI   0x310
#define LAPIC_LVT_TMR  0x320
#define LAPIC_LVT0     0x350
#define LAPIC_LVT1     0x360
#define LAPIC_TMR_INIT 0x380
#define LAPIC_TMR_DIV  0x3e0

static inline uint32_t lapic_read(unsigned reg)
{
    return mmio_read32(LAPIC_BASE + reg);
}

static inline void lapic_write(unsigned reg, uint32_t v)
{
    mmio_write32(LAPIC_BASE + reg, v);
}

static void ioapic_route(unsigned pin, unsigned vector)
{
    mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin + 1);
    mmio_write32(IOAPIC_BASE + 0x10, 0); /* destination: APIC ID 0 */
    mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin);
    mmio_write32(IOAPIC_BASE + 0x10, vector); /* fixed, physical, edge, active high */
}

static void irq_init(void)
{
    outb(0x21, 0xff); /* mask both 8259s: all interrupts go through the IOAPIC */
    outb(0xa1, 0xff);
    lapic_write(LAPIC_SVR, 0x100 | VEC_SPURIOUS);
    lapic_write(LAPIC_LVT0, 0x10000);
    lapic_write(LAPIC_LVT_TMR, 0x10000);
    ioapic_route(IRQ_SERIAL, VEC_SERIAL);
    ioapic_route(IRQ_PLATFORM, VEC_PLATFORM);
}

static volatile bool powerdown_requested;
static volatile bool vcpus_requested; /* the host changed the vCPU target (PORT_VCPUS) */
static volatile uint64_t ticks;
static volatile bool tick_pending;
static volatile uint64_t irq_count;
static volatile bool virtio_irq; /* the virtio-blk line rose: see vblk_poll_config */

static void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

void isr_dispatch(struct isr_frame *f);
void isr_dispatch(struct isr_frame *f)
{
    irq_count++;
    switch (f->vector) {
    case VEC_SERIAL:
        serial_irq();
        break;
    case VEC_PLATFORM: {
        uint8_t ev = inb(PORT_EVENT);
        if (ev & EVENT_POWERDOWN)
            powerdown_requested = true;
        if (ev & EVENT_VCPUS)
            vcpus_requested = true;
        break;
    }
    case VEC_VIRTIO:
        live_irq();
        break;
    case VEC_TIMER:
        ticks++;
        tick_pending = true;
        break;
    case VEC_IPI: /* also the virtio-blk line (entry.S has no stub of its own for it) */
        virtio_irq = true;
        break;
    case VEC_SPURIOUS:
        return; /* no EOI for spurious interrupts */
    default:
        if (f->vector < 32) {
            kprintf("\nPANIC: exception %u error %lx at rip %lx\n", (unsigned)f->vector, f->error,
                    f->rip);
            outb(PORT_PANIC, 1);
            halt_forever();
        }
        break;
    }
    lapic_write(LAPIC_EOI, 0);
}

/* ---- application processors ---- */

extern const char ap_trampoline[], ap_trampoline_end[];
static volatile uint8_t cpu_online[MAX_CPUS];
static volatile uint8_t cpu_stop[MAX_CPUS];  /* asks an online AP to go offline */
static volatile unsigned ncpus_expected = 1; /* the target: CPUs that should be online */
static unsigned ncpus_max = 1;               /* CPUs in the MP table (the rest hot-plug) */

/* An offline AP stays in cli;hlt, which only INIT/SIPI (ap_start) ends; an online one idles
 * with interrupts on so that an IPI can ask it to go offline (cpu_stop). */
void ap_main(unsigned id);
void ap_main(unsigned id)
{
    if (id >= ncpus_expected || cpu_stop[id])
        halt_forever();
    idt_load(sizeof(idt) - 1, idt);
    lapic_write(LAPIC_SVR, 0x100 | VEC_SPURIOUS);
    cpu_online[id] = 1;
    for (;;) {
        __asm__ volatile("cli");
        if (cpu_stop[id])
            break;
        __asm__ volatile("sti; hlt" ::: "memory"); /* STI's shadow: no lost wake-up */
    }
    cpu_online[id] = 0;
    halt_forever();
}

static unsigned cpus_online(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < MAX_CPUS; i++)
        n += cpu_online[i];
    return n;
}

/* The MP table's floating pointer sits in the last KiB of base memory (nuvem-vmm puts it
 * there); count its enabled processor entries. */
static unsigned mptable_cpus(unsigned *ret_all)
{
    const uint8_t *fp = (const uint8_t *)0x9fc00;
    *ret_all = 1;
    if (memcmp(fp, "_MP_", 4) != 0)
        return 1;
    const uint8_t *t = (const uint8_t *)(uintptr_t)(*(const uint32_t *)(fp + 4));
    if (!t || memcmp(t, "PCMP", 4) != 0)
        return 1;
    uint16_t len = *(const uint16_t *)(t + 4), count = *(const uint16_t *)(t + 34);
    const uint8_t *e = t + 44, *end = t + len;
    unsigned n = 0, all = 0;
    for (unsigned i = 0; i < count && e < end; i++) {
        if (e[0] == 0) { /* processor entry, 20 bytes; disabled ones are hot-pluggable */
            if (e[3] & 1)
                n++;
            all++;
            e += 20;
        } else {
            e += 8;
        }
    }
    *ret_all = all ? all : 1;
    return n ? n : 1;
}

static void delay_ms(uint64_t ms)
{
    if (!tsc_khz)
        return;
    uint64_t end = rdtsc() + ms * tsc_khz;
    while (rdtsc() < end)
        ;
}

/* INIT and SIPI to one AP (physical destination): it starts over in the trampoline. */
static void ap_start(unsigned id)
{
    cpu_stop[id] = 0;
    lapic_write(LAPIC_ICR_HI, id << 24);
    lapic_write(LAPIC_ICR_LO, 0x00004500); /* INIT */
    delay_ms(1);
    for (int i = 0; i < 2; i++) {
        lapic_write(LAPIC_ICR_HI, id << 24);
        lapic_write(LAPIC_ICR_LO, 0x00004600 | (AP_TRAMPOLINE >> 12)); /* SIPI */
        delay_ms(1);
    }
}

/* Bounded wait for CPU id to reach the state (seconds when real mode is emulated). */
static bool wait_cpu(unsigned id, uint8_t online)
{
    uint64_t start = uptime_ms();
    for (unsigned long spins = 0; cpu_online[id] != online && spins < 200000000; spins++) {
        if (uptime_ms() - start > 5000)
            break;
        __asm__ volatile("pause");
    }
    return cpu_online[id] == online;
}

static void smp_init(void)
{
    cpu_online[lapic_read(LAPIC_ID) >> 24 & (MAX_CPUS - 1)] = 1;
    unsigned all;
    unsigned enabled = mptable_cpus(&all);
    ncpus_max = all > MAX_CPUS ? MAX_CPUS : all;
    ncpus_expected = enabled > ncpus_max ? ncpus_max : enabled;
    if (ncpus_max < 2)
        return;
    /* The trampoline stays for CPUs brought online later. */
    memcpy((void *)AP_TRAMPOLINE, ap_trampoline, (size_t)(ap_trampoline_end - ap_trampoline));
    if (ncpus_expected < ncpus_max) {
        /* Hot-pluggable CPUs are never started: only the enabled ones, one by one. */
        for (unsigned id = 1; id < ncpus_expected; id++)
            ap_start(id);
    } else if (ncpus_expected > 1) {
        lapic_write(LAPIC_ICR_HI, 0);
        lapic_write(LAPIC_ICR_LO, 0x000c4500); /* INIT, all excluding self */
        delay_ms(1);
        for (int i = 0; i < 2; i++) {
            lapic_write(LAPIC_ICR_LO, 0x000c4600 | (AP_TRAMPOLINE >> 12)); /* SIPI */
            delay_ms(1);
        }
    }
    /* Bounded wait: APs come up in a few ms, or seconds when real mode is emulated. */
    uint64_t start = uptime_ms();
    while (cpus_online() < ncpus_expected && uptime_ms() - start < 5000)
        __asm__ volatile("pause");
}

/* Brings CPUs 0..n-1 online and the others offline (BSP excepted); reports the count to the
 * VMM (PORT_VCPUS). */
unsigned kernel_set_vcpus(unsigned n)
{
    if (n < 1)
        n = 1;
    if (n > ncpus_max)
        n = ncpus_max;
    ncpus_expected = n;
    unsigned bsp = lapic_read(LAPIC_ID) >> 24 & (MAX_CPUS - 1);
    for (unsigned id = 0; id < ncpus_max; id++) {
        if (id == bsp)
            continue;
        if (id < n && !cpu_online[id]) {
            ap_start(id);
            wait_cpu(id, 1);
        } else if (id >= n && cpu_online[id]) {
            cpu_stop[id] = 1;
            lapic_write(LAPIC_ICR_HI, id << 24);
            lapic_write(LAPIC_ICR_LO, 0x00004000 | VEC_IPI); /* fixed IPI: wakes its HLT */
            wait_cpu(id, 0);
        }
    }
    unsigned on = cpus_online();
    outb(PORT_VCPUS, (uint8_t)on);
    return on;
}

unsigned kernel_cpus_online(void)
{
    return cpus_online();
}

/* ---- timer (only while `ticker` runs: the guest is otherwise tickless) ---- */

static void ticker_set(uint64_t ms)
{
    if (!ms) {
        lapic_write(LAPIC_LVT_TMR, 0x10000);
        lapic_write(LAPIC_TMR_INIT, 0);
        return;
    }
    uint64_t count = ms * apic_bus_khz / 128;
    if (count > 0xffffffffu)
        count = 0xffffffffu;
    lapic_write(LAPIC_TMR_DIV, 0xa);                 /* divide by 128 */
    lapic_write(LAPIC_LVT_TMR, 0x20000 | VEC_TIMER); /* periodic */
    lapic_write(LAPIC_TMR_INIT, (uint32_t)count);
}

/* ---- commands ---- */

static uint64_t commands_run;

static uint64_t parse_u64(const char *s, size_t n, bool *ok)
{
    uint64_t v = 0;
    *ok = n > 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            *ok = false;
            return 0;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    return v;
}

static void cmd_help(void)
{
    kputs("commands: help, echo TEXT, uptime, mem, cpus, ticker MS|off, spin N, lines N, info,\n"
          "          poweroff, reboot, crash (triple fault), panic (pvpanic),\n"
          "          mem touch, balloon (virtio-balloon), agent [send LINE|flood N],\n"
          "          blk info|id|read SECTOR|write SECTOR PATTERN|flush|discard SECTOR COUNT|\n"
          "              zero SECTOR COUNT|fill SECTOR COUNT PATTERN|\n"
          "              bench seq|rand read|write SIZE COUNT (virtio-blk vda),\n"
          "          net info|send TEXT|recv [MS] (virtio-net eth0)\n");
}

/* ---- virtio-net commands ---- */

#define NET_TYPE 0x88b5 /* IEEE local experimental ethertype */

static void put_mac(const uint8_t *m)
{
    kprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

static void cmd_net(const char *arg, size_t alen)
{
    const struct vnet_info *ni = vnet_get_info();
    size_t w = 0;
    while (w < alen && arg[w] != ' ')
        w++;
    const char *rest = arg + w;
    size_t rlen = alen - w;
    while (rlen && *rest == ' ') {
        rest++;
        rlen--;
    }
    if (word_is(arg, w, "info")) {
        if (!ni->present) {
            kputs("net: no nic\n");
        } else if (ni->error) {
            kprintf("net: eth0 at slot %u failed: %s\n", ni->slot, ni->error);
        } else {
            kprintf("net: eth0 at slot %u, mac ", ni->slot);
            put_mac(ni->mac);
            kprintf(", link %s\n", ni->link_up ? "up" : "down");
        }
    } else if (word_is(arg, w, "send") && rlen) {
        static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        int r = vnet_send(bcast, NET_TYPE, rest, (unsigned)rlen);
        if (r == 0)
            kprintf("net send: ok %u bytes\n", (unsigned)rlen);
        else
            kprintf("net send: error %d\n", r);
    } else if (word_is(arg, w, "recv")) {
        bool ok;
        uint64_t ms = parse_u64(rest, rlen, &ok);
        if (!ok)
            ms = 2000;
        static uint8_t fr[128];
        uint64_t start = uptime_ms();
        int r;
        /* Bounded by time, and by iterations should the TSC rate be unknown. */
        for (uint64_t spins = 0; (r = vnet_poll(NET_TYPE, fr, sizeof(fr))) == VBLK_ERR_TIMEOUT &&
                                 uptime_ms() - start < ms && spins < 50000000;
             spins++)
            __asm__ volatile("pause");
        if (r == VBLK_ERR_TIMEOUT) {
            kputs("net recv: none\n");
        } else if (r < 0) {
            kprintf("net recv: error %d\n", r);
        } else {
            kprintf("net recv: %u bytes from ", (unsigned)r);
            put_mac(fr + 6);
            kputs(" \"");
            for (unsigned i = 14; i < (unsigned)r && i < sizeof(fr) && fr[i]; i++)
                serial_putc(fr[i] >= 0x20 && fr[i] < 0x7f && fr[i] != '"' ? (char)fr[i] : '.');
            kputs("\"\n");
        }
    } else {
        kputs("usage: net info|send TEXT|recv [MS]\n");
    }
}

/* ---- virtio-blk commands ---- */

static uint8_t sector_buf[512] __attribute__((aligned(512)));

static void blk_result(const char *what, uint64_t sector, bool has_sector, int r)
{
    kprintf("blk %s", what);
    if (has_sector)
        kprintf(" %lu", sector);
    if (r == 0)
        kputs(": ok");
    else if (r == VBLK_ERR_NODEV)
        kputs(": error no-device");
    else if (r == VBLK_ERR_TIMEOUT)
        kputs(": error timeout");
    else
        kprintf(": error %d", r);
}

/* Splits the next space-separated word off *s (length *n); returns its length. */
static size_t next_word(const char **s, size_t *n, const char **word)
{
    while (*n && **s == ' ') {
        (*s)++;
        (*n)--;
    }
    *word = *s;
    size_t w = 0;
    while (w < *n && (*s)[w] != ' ')
        w++;
    *s += w;
    *n -= w;
    return w;
}

#define BENCH_BUF     0x1000000ul /* 16 MiB: guest RAM above the image, identity-mapped */
#define BENCH_MAX_LEN (1u << 20)

/* blk bench seq|rand read|write SIZE COUNT: COUNT requests of SIZE bytes (a multiple of 512,
 * at most 1 MiB) one after the other, at consecutive or pseudo-random SIZE-aligned offsets;
 * prints the elapsed time (TSC). The buffer's contents are whatever RAM holds: filling it
 * would cost more than the I/O where ring 0 is emulated. */
static void blk_bench(const char *s, size_t n)
{
    const struct vblk_info *bi = vblk_get_info();
    const char *mode, *dir, *w3, *w4;
    size_t lm = next_word(&s, &n, &mode), ld = next_word(&s, &n, &dir);
    size_t l3 = next_word(&s, &n, &w3), l4 = next_word(&s, &n, &w4);
    bool ok3, ok4;
    uint64_t size = parse_u64(w3, l3, &ok3), count = parse_u64(w4, l4, &ok4);
    bool rnd = word_is(mode, lm, "rand"), wr = word_is(dir, ld, "write");
    if (!ok3 || !ok4 || !size || size % 512 || size > BENCH_MAX_LEN || !count || count > 1000000 ||
        (!rnd && !word_is(mode, lm, "seq")) || (!wr && !word_is(dir, ld, "read"))) {
        kputs("usage: blk bench seq|rand read|write SIZE COUNT (SIZE: 512..1048576, /512)\n");
        return;
    }
    uint64_t secs = size / 512;
    if (!bi->present || bi->error || bi->capacity < secs) {
        kputs("blk bench: error no-device\n");
        return;
    }
    if (mem_bytes < BENCH_BUF + BENCH_MAX_LEN) {
        kputs("blk bench: error needs 17 MiB of RAM\n");
        return;
    }
    uint64_t slots = bi->capacity / secs, x = 88172645463325252ull;
    int r = 0;
    uint64_t i, t0 = rdtsc();
    for (i = 0; i < count && r == 0; i++) {
        uint64_t slot = i % slots;
        if (rnd) {
            x ^= x << 13; /* xorshift64 */
            x ^= x >> 7;
            x ^= x << 17;
            slot = x % slots;
        }
        r = vblk_rw_n(wr, slot * secs, (void *)BENCH_BUF, (uint32_t)size);
    }
    uint64_t us = tsc_khz ? (rdtsc() - t0) * 1000 / tsc_khz : 0;
    if (r) {
        blk_result("bench", i - 1, true, r);
        kputs("\n");
        return;
    }
    kprintf("blk bench: %s %s %lu x %lu: ok %lu us, %lu KiB/s\n", rnd ? "rand" : "seq",
            wr ? "write" : "read", size, count, us, us ? size * count * 1000000 / 1024 / us : 0);
}

static void cmd_blk(const char *arg, size_t alen)
{
    const struct vblk_info *bi = vblk_get_info();
    size_t w = 0;
    while (w < alen && arg[w] != ' ')
        w++;
    const char *rest = arg + w;
    size_t rlen = alen - w;
    while (rlen && *rest == ' ') {
        rest++;
        rlen--;
    }
    size_t w2 = 0;
    while (w2 < rlen && rest[w2] != ' ')
        w2++;
    const char *pat = rest + w2;
    size_t plen = rlen - w2;
    while (plen && *pat == ' ') {
        pat++;
        plen--;
    }
    bool ok;
    uint64_t sector = parse_u64(rest, w2, &ok);
    if (word_is(arg, w, "info")) {
        if (!bi->present)
            kputs("blk: no disk\n");
        else if (bi->error)
            kprintf("blk: vda at slot %u failed: %s\n", bi->slot, bi->error);
        else
            kprintf("blk: vda at slot %u, %lu sectors (%lu KiB), %s, flush %s, features %x, "
                    "discard %s, zeroes %s\n",
                    bi->slot, bi->capacity, bi->capacity / 2, bi->readonly ? "ro" : "rw",
                    bi->flush ? "yes" : "no", bi->features, bi->discard ? "yes" : "no",
                    bi->write_zeroes ? "yes" : "no");
    } else if (word_is(arg, w, "id")) {
        char id[21];
        int r = vblk_get_id(id);
        blk_result("id", 0, false, r);
        if (r == 0)
            kprintf(" \"%s\"", id);
        kputs("\n");
    } else if (word_is(arg, w, "read") && ok) {
        memset(sector_buf, 0, sizeof(sector_buf));
        int r = vblk_rw(false, sector, sector_buf);
        blk_result("read", sector, true, r);
        if (r == 0) {
            uint32_t h = 2166136261u; /* FNV-1a of the sector */
            for (unsigned i = 0; i < sizeof(sector_buf); i++)
                h = (h ^ sector_buf[i]) * 16777619u;
            kprintf(" fnv %08x \"", h);
            for (unsigned i = 0; i < 32; i++) {
                char c = (char)sector_buf[i];
                serial_putc(c >= 0x20 && c < 0x7f && c != '"' ? c : '.');
            }
            kputs("\"");
        }
        kputs("\n");
    } else if (word_is(arg, w, "write") && ok && plen) {
        for (unsigned i = 0; i < sizeof(sector_buf); i++)
            sector_buf[i] = (uint8_t)pat[i % plen];
        blk_result("write", sector, true, vblk_rw(true, sector, sector_buf));
        kputs("\n");
    } else if (word_is(arg, w, "flush")) {
        blk_result("flush", 0, false, vblk_flush());
        kputs("\n");
    } else if ((word_is(arg, w, "discard") || word_is(arg, w, "zero")) && ok) {
        uint64_t count = parse_u64(pat, plen, &ok);
        if (!ok || !count || count > 0xffffffffu) {
            kputs("usage: blk discard|zero SECTOR COUNT\n");
            return;
        }
        bool zeroes = arg[0] == 'z';
        blk_result(zeroes ? "zero" : "discard", sector, true,
                   vblk_discard(zeroes, sector, (uint32_t)count));
        kputs("\n");
    } else if (word_is(arg, w, "fill") && ok) {
        /* fill SECTOR COUNT PATTERN: COUNT sectors of PATTERN in one request */
        const char *cw, *pw;
        size_t cl = next_word(&pat, &plen, &cw), pl = next_word(&pat, &plen, &pw);
        uint64_t count = parse_u64(cw, cl, &ok);
        if (!ok || !count || count > BENCH_MAX_LEN / 512 || !pl ||
            mem_bytes < BENCH_BUF + BENCH_MAX_LEN) {
            kputs("usage: blk fill SECTOR COUNT PATTERN (COUNT <= 2048)\n");
            return;
        }
        uint8_t *buf = (uint8_t *)BENCH_BUF;
        for (uint64_t i = 0, j = 0; i < count * 512; i++, j = j + 1 == pl ? 0 : j + 1)
            buf[i] = (uint8_t)pw[j];
        blk_result("fill", sector, true, vblk_rw_n(true, sector, buf, (uint32_t)(count * 512)));
        kputs("\n");
    } else if (word_is(arg, w, "bench")) {
        blk_bench(rest, rlen);
    } else {
        kputs("usage: blk info|id|read SECTOR|write SECTOR PATTERN|flush|discard SECTOR COUNT|"
              "zero SECTOR COUNT|fill SECTOR COUNT PATTERN|bench seq|rand read|write SIZE COUNT\n");
    }
}

static void do_poweroff(void)
{
    kputs("mini guest: powering off\n");
    outb(PORT_SLEEP_CTL, SLEEP_CTL_S5);
    halt_forever();
}

void kernel_poweroff(void)
{
    do_poweroff();
}

void kernel_reboot(void)
{
    kputs("mini guest: rebooting\n");
    outb(PORT_RESET, RESET_VALUE);
    halt_forever();
}

static void do_crash(void)
{
    kputs("mini guest: triple fault\n");
    idt_load(0, 0);
    /* A non-canonical access raises #GP, which with an empty IDT escalates to a triple fault. */
    __asm__ volatile("movq $0x8000000000000000, %%rax; movq (%%rax), %%rax" ::: "rax", "memory");
    halt_forever();
}

static void spin(uint64_t n)
{
    uint64_t t0 = rdtsc();
    __asm__ volatile("1: dec %0; jnz 1b" : "+r"(n));
    uint64_t cycles = rdtsc() - t0;
    kprintf("spin: %lu us\n", tsc_khz ? cycles * 1000 / tsc_khz : 0);
}

static void run_command(const char *line, size_t len)
{
    size_t w = 0;
    while (w < len && line[w] != ' ')
        w++;
    const char *arg = line + w;
    size_t alen = len - w;
    while (alen && *arg == ' ') {
        arg++;
        alen--;
    }
    commands_run++;
    bool ok;
    if (word_is(line, w, "help")) {
        cmd_help();
    } else if (word_is(line, w, "echo")) {
        for (size_t i = 0; i < alen; i++)
            serial_putc(arg[i]);
        kputs("\n"); /* flushes */
    } else if (word_is(line, w, "uptime")) {
        uint64_t ms = uptime_ms();
        kprintf("uptime: %lu.%03lu s, commands: %lu, irqs: %lu\n", ms / 1000, ms % 1000,
                commands_run, irq_count);
    } else if (word_is(line, w, "mem") && word_is(arg, alen, "touch")) {
        kprintf("mem touch: %lu pages\n", pages_touch());
    } else if (word_is(line, w, "balloon")) {
        struct balloon_info bi;
        balloon_get_info(&bi);
        if (!bi.present)
            kputs("balloon: no device\n");
        else
            kprintf("balloon: %lu pages held, target %lu, free %lu KiB%s%s\n", bi.held, bi.target,
                    pages_free() * 4, bi.error ? ", error: " : "", bi.error ? bi.error : "");
    } else if (word_is(line, w, "agent")) {
        /* agent [send TEXT | flood N]: publish, or test the host's bounds */
        size_t w2 = 0;
        while (w2 < alen && arg[w2] != ' ')
            w2++;
        size_t skip = w2 < alen ? w2 + 1 : w2;
        if (word_is(arg, w2, "send")) {
            agent_send_raw(arg + skip, (unsigned)(alen - skip));
        } else if (word_is(arg, w2, "flood")) {
            uint64_t n = parse_u64(arg + skip, alen - skip, &ok);
            agent_flood(ok && n < 100000 ? (unsigned)n : 0);
        } else {
            agent_publish();
        }
        kputs(agent_present() ? "agent: ok\n" : "agent: no device\n");
    } else if (word_is(line, w, "mem")) {
        kprintf("mem: %lu KiB (%lu MiB)\n", mem_bytes >> 10, mem_bytes >> 20);
    } else if (word_is(line, w, "cpus")) {
        kprintf("cpus: %u online of %u, max %u\n", cpus_online(), ncpus_expected, ncpus_max);
    } else if (word_is(line, w, "info")) {
        kprintf("info: tsc %lu kHz, apic bus %lu kHz, cmdline \"%s\"\n", tsc_khz, apic_bus_khz,
                cmdline);
    } else if (word_is(line, w, "ticker")) {
        uint64_t ms = parse_u64(arg, alen, &ok);
        if (word_is(arg, alen, "off") || (ok && ms == 0)) {
            ticker_set(0);
            kputs("ticker: off\n");
        } else if (ok) {
            ticks = 0;
            ticker_set(ms);
            kprintf("ticker: every %lu ms\n", ms);
        } else {
            kputs("usage: ticker MS|off\n");
        }
    } else if (word_is(line, w, "spin")) {
        uint64_t n = parse_u64(arg, alen, &ok);
        if (ok && n)
            spin(n);
        else
            kputs("usage: spin N\n");
    } else if (word_is(line, w, "lines")) {
        uint64_t n = parse_u64(arg, alen, &ok);
        for (uint64_t i = 1; ok && i <= n; i++)
            kprintf("line %lu of %lu\n", i, n);
        kprintf("lines: done\n");
    } else if (word_is(line, w, "blk")) {
        cmd_blk(arg, alen);
    } else if (word_is(line, w, "net")) {
        cmd_net(arg, alen);
    } else if (word_is(line, w, "poweroff")) {
        do_poweroff();
    } else if (word_is(line, w, "reboot")) {
        kputs("mini guest: rebooting\n");
        outb(PORT_RESET, RESET_VALUE);
        halt_forever();
    } else if (word_is(line, w, "crash")) {
        do_crash();
    } else if (word_is(line, w, "panic")) {
        kputs("mini guest: panic requested\n");
        outb(PORT_PANIC, 1);
        halt_forever();
    } else {
        kputs("unknown command (try help)\n");
    }
}

/* ---- live features: the page allocator's ranges ---- */

extern char __image_end[];

/* Adds [s, e) less the reserved ranges (recursively split around them). */
static void add_range(struct mem_range *r, unsigned *n, uint64_t s, uint64_t e,
                      const struct mem_range *res, unsigned nres)
{
    s = (s + 0xfff) & ~0xfffull;
    e &= ~0xfffull;
    if (e <= s)
        return;
    for (unsigned i = 0; i < nres; i++) {
        if (res[i].start < e && res[i].end > s) {
            add_range(r, n, s, res[i].start, res + i + 1, nres - i - 1);
            add_range(r, n, res[i].end, e, res + i + 1, nres - i - 1);
            return;
        }
    }
    if (*n < LIVE_MAX_RANGES)
        r[(*n)++] = (struct mem_range){s, e};
}

/* Free RAM: the PVH memmap's RAM above 1 MiB and the image, less initrd modules and the
 * blk bench buffer. */
static void live_ranges(void)
{
    struct mem_range r[LIVE_MAX_RANGES], res[4];
    unsigned n = 0, nres = 0;
    uint64_t low = (uint64_t)(uintptr_t)__image_end;
    if (low < 0x100000)
        low = 0x100000;
#ifdef BENCH_BUF
    res[nres++] = (struct mem_range){BENCH_BUF, BENCH_BUF + BENCH_MAX_LEN};
#endif
    const struct hvm_start_info *si = boot_si;
    if (si && si->nr_modules && si->modlist_paddr) {
        const uint64_t *mod = (const uint64_t *)(uintptr_t)si->modlist_paddr; /* paddr, size, .. */
        for (uint32_t i = 0; i < si->nr_modules && nres < 4; i++)
            res[nres++] = (struct mem_range){mod[4 * i], mod[4 * i] + mod[4 * i + 1]};
    }
    if (si && si->version >= 1 && si->memmap_paddr) {
        const struct hvm_memmap_entry *e = (const void *)(uintptr_t)si->memmap_paddr;
        for (uint32_t i = 0; i < si->memmap_entries; i++) {
            if (e[i].type != 1)
                continue;
            uint64_t s = e[i].addr < low ? low : e[i].addr, end = e[i].addr + e[i].size;
            if (end > s)
                add_range(r, &n, s, end, res, nres);
        }
    }
    pages_init(r, n);
}

/* ---- main ---- */

void kmain(const struct hvm_start_info *si);
void kmain(const struct hvm_start_info *si)
{
    serial_init();
    bootinfo_init(si);
    time_init();
    idt_init();
    irq_init();
    smp_init();
    vblk_init();
    vnet_init();
    if (vblk_gsi() >= 0)
        ioapic_route((unsigned)vblk_gsi(), VEC_IPI); /* config changes wake the idle loop */
    kprintf("\nNuvem mini guest " GUEST_VERSION " (x86-64, PVH)\n");
    kprintf("mem %lu MiB, cpus %u, cmdline \"%s\"\n", mem_bytes >> 20, cpus_online(), cmdline);
    if (vblk_get_info()->present)
        kprintf("disk vda: %lu sectors%s\n", vblk_get_info()->capacity,
                vblk_get_info()->readonly ? ", read-only" : "");
    if (vnet_get_info()->present) {
        kputs("nic eth0: mac ");
        put_mac(vnet_get_info()->mac);
        kputs("\n");
    }
    live_ranges();
    live_init(GUEST_VERSION, cmdline, mem_bytes);
    outb(PORT_VCPUS, (uint8_t)cpus_online()); /* what the VMM's query-status reports */
    agent_publish();
    kputs("ready\n> ");

    for (;;) {
        __asm__ volatile("cli");
        if (!rx_ready && !powerdown_requested && !tick_pending && !virtio_irq && !vcpus_requested &&
            !live_pending()) {
            __asm__ volatile("sti; hlt" ::: "memory"); /* STI's shadow makes this race-free */
            continue;
        }
        __asm__ volatile("sti");
        if (powerdown_requested) {
            kputs("\nmini guest: power-down requested\n");
            do_poweroff();
        }
        if (tick_pending) {
            tick_pending = false;
            kprintf("tick %lu\n", ticks);
        }
        if (vcpus_requested) {
            vcpus_requested = false;
            kernel_set_vcpus(inb(PORT_VCPUS));
            agent_publish();
        }
        if (live_pending())
            live_work();
        if (virtio_irq) {
            virtio_irq = false;
            if (vblk_poll_config())
                kprintf("blk0: capacity %lu sectors\n", vblk_get_info()->capacity);
        }
        if (rx_ready) {
            char line[LINE_MAX];
            unsigned n = rx_len;
            for (unsigned i = 0; i < n; i++)
                line[i] = rx_line[i];
            rx_len = 0;
            rx_ready = false;
            outb(PORT_COM1 + 1, 0x01); /* take the next input */
            kputs("\n");
            run_command(line, n);
            kputs("> ");
        }
    }
}
