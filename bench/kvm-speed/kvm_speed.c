/* kvm-speed: how fast does this host's KVM run guest code?
 *
 * Runs a tiny 64-bit guest (set up directly in long mode, no firmware) three ways: a
 * `dec/jnz` loop in ring 0, the same loop in ring 3, and a loop of port-I/O exits. Each loop
 * grows until it takes long enough to time. Hardware-assisted KVM runs both rings at native
 * speed; software KVMs (e.g. kvm_pvm) emulate ring 0 thousands of times slower.
 *
 * Exit status: 0 measured (and hardware speed if --require-fast), 1 measured but slow with
 * --require-fast, 2 error, 77 no usable /dev/kvm. Standalone (libc only) so it can be linked
 * statically and carried to another host. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE    (2u << 20)
#define CODE_ADDR   0x1000
#define GDT_ADDR    0x500
#define PML4_ADDR   0x9000
#define STACK_ADDR  0x8000
#define PORT_DONE   0x10
#define PORT_TICK   0x11
#define FAST_RING0  50e6 /* iterations/s: hardware KVM does ~1e9, emulation ~1e6 */
#define MAX_SECONDS 10

static volatile sig_atomic_t alarmed;

static void on_alarm(int sig)
{
    alarmed = 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct guest {
    int kvm, vm, cpu;
    uint8_t *mem;
    struct kvm_run *run;
} guest;

static int die(const char *what)
{
    fprintf(stderr, "kvm-speed: %s: %s\n", what, strerror(errno));
    return -1;
}

/* Guest code: 0x1000 loop, 0x1010 PIO loop. RCX holds the count. */
static const uint8_t code_loop[] = {
    0x48, 0xff,      0xc9, /* 1: dec %rcx */
    0x75, 0xfb,            /*    jnz 1b */
    0xe6, PORT_DONE,       /*    out %al, $PORT_DONE */
    0xeb, 0xfe,            /*    jmp . */
};
static const uint8_t code_pio[] = {
    0xe6, PORT_TICK,       /* 1: out %al, $PORT_TICK */
    0x48, 0xff,      0xc9, /*    dec %rcx */
    0x75, 0xf9,            /*    jnz 1b */
    0xe6, PORT_DONE,       /*    out %al, $PORT_DONE */
    0xeb, 0xfe,            /*    jmp . */
};

static int guest_init(guest *g)
{
    g->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (g->kvm < 0)
        return -2;
    if ((g->vm = ioctl(g->kvm, KVM_CREATE_VM, 0)) < 0)
        return die("KVM_CREATE_VM");
    g->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->mem == MAP_FAILED)
        return die("mmap");
    struct kvm_userspace_memory_region r = {
        .slot = 0, .memory_size = MEM_SIZE, .userspace_addr = (uintptr_t)g->mem};
    if (ioctl(g->vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
        return die("KVM_SET_USER_MEMORY_REGION");
    if ((g->cpu = ioctl(g->vm, KVM_CREATE_VCPU, 0)) < 0)
        return die("KVM_CREATE_VCPU");
    int sz = ioctl(g->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    g->run = mmap(NULL, (size_t)sz, PROT_READ | PROT_WRITE, MAP_SHARED, g->cpu, 0);
    if (g->run == MAP_FAILED)
        return die("mmap kvm_run");
    /* One 2 MiB user-accessible identity page; GDT {null, code0, data0, data3, code3}. */
    uint64_t *pml4 = (uint64_t *)(g->mem + PML4_ADDR);
    pml4[0] = (PML4_ADDR + 0x1000) | 0x7;
    pml4[512] = (PML4_ADDR + 0x2000) | 0x7;
    pml4[1024] = 0x87;
    uint64_t *gdt = (uint64_t *)(g->mem + GDT_ADDR);
    gdt[0] = 0;
    gdt[1] = 0x00af9b000000ffffull; /* 0x08 code, DPL 0 */
    gdt[2] = 0x00cf93000000ffffull; /* 0x10 data, DPL 0 */
    gdt[3] = 0x00cff3000000ffffull; /* 0x18 data, DPL 3 */
    gdt[4] = 0x00affb000000ffffull; /* 0x20 code, DPL 3 */
    memcpy(g->mem + CODE_ADDR, code_loop, sizeof(code_loop));
    memcpy(g->mem + CODE_ADDR + 0x10, code_pio, sizeof(code_pio));
    return 0;
}

static int set_mode(guest *g, int ring, uint64_t rip, uint64_t count)
{
    struct kvm_sregs s;
    if (ioctl(g->cpu, KVM_GET_SREGS, &s) < 0)
        return die("KVM_GET_SREGS");
    uint8_t dpl = (uint8_t)ring;
    struct kvm_segment cs = {.limit = 0xffffffff,
                             .selector = ring ? 0x23 : 0x08,
                             .type = 0xb,
                             .present = 1,
                             .dpl = dpl,
                             .s = 1,
                             .l = 1,
                             .g = 1};
    struct kvm_segment ds = {.limit = 0xffffffff,
                             .selector = ring ? 0x1b : 0x10,
                             .type = 0x3,
                             .present = 1,
                             .dpl = dpl,
                             .s = 1,
                             .db = 1,
                             .g = 1};
    s.cs = cs;
    s.ds = s.es = s.fs = s.gs = s.ss = ds;
    s.tr = (struct kvm_segment){.limit = 0x67, .selector = 0x28, .type = 0xb, .present = 1};
    s.gdt.base = GDT_ADDR;
    s.gdt.limit = 6 * 8 - 1;
    s.cr3 = PML4_ADDR;
    s.cr4 = 0x20;
    s.cr0 = 0x80000011;
    s.efer = 0x500;
    if (ioctl(g->cpu, KVM_SET_SREGS, &s) < 0)
        return die("KVM_SET_SREGS");
    struct kvm_regs r = {.rip = rip,
                         .rcx = count,
                         .rsp = STACK_ADDR,
                         .rflags = 0x2 | (3u << 12)}; /* IOPL 3: `out` allowed in ring 3 */
    if (ioctl(g->cpu, KVM_SET_REGS, &r) < 0)
        return die("KVM_SET_REGS");
    return 0;
}

/* Runs until the guest writes PORT_DONE; returns seconds, or -1. */
static double run_once(guest *g, int ring, uint64_t rip, uint64_t count, uint64_t *ret_ticks)
{
    if (set_mode(g, ring, rip, count) < 0)
        return -1;
    uint64_t ticks = 0;
    alarmed = 0;
    alarm(MAX_SECONDS);
    double t0 = now();
    for (;;) {
        if (ioctl(g->cpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR && !alarmed)
                continue;
            alarm(0);
            if (alarmed)
                fprintf(stderr, "kvm-speed: guest did not finish within %d s\n", MAX_SECONDS);
            else
                die("KVM_RUN");
            return -1;
        }
        struct kvm_run *run = g->run;
        if (run->exit_reason == KVM_EXIT_IO && run->io.port == PORT_TICK) {
            ticks++;
            continue;
        }
        if (run->exit_reason == KVM_EXIT_IO && run->io.port == PORT_DONE)
            break;
        alarm(0);
        fprintf(stderr, "kvm-speed: unexpected exit %u in ring %d\n", run->exit_reason, ring);
        return -1;
    }
    double dt = now() - t0;
    alarm(0);
    if (ret_ticks)
        *ret_ticks = ticks;
    return dt;
}

/* Grows the count until a run takes at least min_s; returns iterations per second. */
static double measure(guest *g, int ring, uint64_t rip, double min_s, uint64_t *ret_n,
                      double *ret_s)
{
    uint64_t n = 1000;
    for (;;) {
        double dt = run_once(g, ring, rip, n, NULL);
        if (dt < 0)
            return -1;
        if (dt >= min_s || n >= (1ull << 34)) {
            *ret_n = n;
            *ret_s = dt;
            return (double)n / dt;
        }
        double scale = dt > 0 ? min_s * 1.3 / dt : 16;
        if (scale > 16)
            scale = 16;
        if (scale < 2)
            scale = 2;
        n = (uint64_t)((double)n * scale);
    }
}

static bool file_exists(const char *p)
{
    return access(p, F_OK) == 0;
}

static bool cpu_has_flag(const char *flag)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return false;
    char line[8192];
    bool found = false;
    size_t fl = strlen(flag);
    while (!found && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "flags", 5) != 0)
            continue;
        for (char *p = strstr(line, flag); p && !found; p = strstr(p + 1, flag))
            found = (p[-1] == ' ' || p[-1] == '\t') && (p[fl] == ' ' || p[fl] == '\n');
    }
    fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    bool json = false, require_fast = false, quiet = false;
    double min_s = 0.3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--require-fast"))
            require_fast = true;
        else if (!strcmp(argv[i], "--quick"))
            min_s = 0.1;
        else if (!strcmp(argv[i], "--quiet"))
            quiet = true;
        else {
            printf("usage: kvm-speed [--json] [--quick] [--quiet] [--require-fast]\n"
                   "Measures guest loop iterations/s in ring 0 and ring 3 and the PIO exit cost.\n"
                   "Exit: 0 ok (fast, with --require-fast), 1 slow with --require-fast, 2 error,\n"
                   "77 no usable /dev/kvm.\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    struct sigaction sa = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &sa, NULL);
    guest g;
    memset(&g, 0, sizeof(g));
    int r = guest_init(&g);
    if (r == -2) {
        printf("kvm-speed: SKIP: /dev/kvm is not usable (%s)\n", strerror(errno));
        return 77;
    }
    if (r < 0)
        return 2;
    uint64_t n0, n3, npio;
    double s0, s3, spio;
    double r0 = measure(&g, 0, CODE_ADDR, min_s, &n0, &s0);
    double r3 = r0 > 0 ? measure(&g, 3, CODE_ADDR, min_s, &n3, &s3) : -1;
    double rpio = r3 > 0 ? measure(&g, 0, CODE_ADDR + 0x10, min_s, &npio, &spio) : -1;
    if (r0 < 0 || r3 < 0 || rpio < 0)
        return 2;
    bool fast = r0 >= FAST_RING0;
    const char *backend =
        file_exists("/sys/module/kvm_pvm") ? "kvm_pvm (software, paravirtual)"
        : file_exists("/sys/module/kvm_intel") || cpu_has_flag("vmx") ? "kvm_intel (VT-x)"
        : file_exists("/sys/module/kvm_amd") || cpu_has_flag("svm")   ? "kvm_amd (AMD-V)"
                                                                      : "unknown";
    if (json) {
        printf("{\"ring0_iter_per_s\":%.0f,\"ring3_iter_per_s\":%.0f,\"pio_exit_us\":%.3f,"
               "\"ring0_ns_per_iter\":%.3f,\"ring3_ns_per_iter\":%.3f,\"ring0_vs_ring3\":%.1f,"
               "\"hardware_speed\":%s,\"backend\":\"%s\"}\n",
               r0, r3, 1e6 / rpio, 1e9 / r0, 1e9 / r3, r3 / r0, fast ? "true" : "false", backend);
    } else if (!quiet) {
        printf("kvm-speed: backend: %s\n", backend);
        printf("kvm-speed: ring 0 loop: %.3g iterations/s (%llu in %.3f s, %.2f ns each)\n", r0,
               (unsigned long long)n0, s0, 1e9 / r0);
        printf("kvm-speed: ring 3 loop: %.3g iterations/s (%llu in %.3f s, %.2f ns each)\n", r3,
               (unsigned long long)n3, s3, 1e9 / r3);
        printf("kvm-speed: PIO exit round trip: %.2f us (%llu in %.3f s)\n", 1e6 / rpio,
               (unsigned long long)npio, spio);
        printf("kvm-speed: ring 3 / ring 0 speed ratio: %.0f\n", r3 / r0);
    }
    if (!json)
        printf("kvm-speed: hardware speed: %s (ring 0 %s %.0f M iterations/s)\n",
               fast ? "yes" : "no", fast ? ">=" : "<", FAST_RING0 / 1e6);
    return require_fast && !fast ? 1 : 0;
}
