/* seccomp allowlist and capability drop for nuvem-vmm (see sandbox.h). Unlisted system calls
 * fail with EPERM rather than killing the VM: the guest keeps running, the attempt fails. */
#define _GNU_SOURCE
#include "sandbox.h"
#include "cleanup.h"
#include "log.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZER_BUILD 1
#endif
#endif

/* What the main loop, the vCPU threads and an in-place reboot (which re-creates the VM and
 * its threads) call after set-up; glibc's wrappers included. */
static const int allowed[] = {
    SYS_read,
    SYS_write,
    SYS_readv,
    SYS_writev,
    SYS_pread64,
    SYS_close,
    SYS_poll,
    SYS_ppoll,
    SYS_fstat,
    SYS_newfstatat,
    SYS_statx,
    SYS_lseek,
    SYS_fcntl,
    SYS_openat, /* /dev/kvm on reboot, /proc/self/statm for stats */
    SYS_mmap,
    SYS_munmap,
    SYS_mprotect,
    SYS_madvise,
    SYS_brk,
    SYS_mremap,
    SYS_mincore, /* guest-resident memory for stats */
    SYS_rt_sigaction,
    SYS_rt_sigprocmask,
    SYS_rt_sigreturn,
    SYS_sigaltstack,
    SYS_restart_syscall,
    SYS_ioctl, /* KVM */
    SYS_accept4,
    SYS_accept,
    SYS_recvfrom,
    SYS_sendto,
    SYS_recvmsg,
    SYS_sendmsg,
    SYS_shutdown,
    SYS_unlink,
    SYS_unlinkat, /* sockets removed at exit */
    SYS_futex,
    SYS_set_robust_list,
    SYS_rseq,
    SYS_exit,
    SYS_exit_group,
    SYS_tgkill,
    SYS_tkill,
    SYS_getpid,
    SYS_gettid,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_nanosleep,
    SYS_gettimeofday,
    SYS_sched_yield,
    SYS_sched_getaffinity,
    SYS_getrandom,
    SYS_prctl,
    SYS_prlimit64,
    SYS_membarrier,
};

#define LD_NR                                                                                      \
    ((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)))
#define LD_ARCH                                                                                    \
    ((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)))
#define LD_ARG0                                                                                    \
    ((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])))
#define RET(v) ((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, (v)))
#define DENY   RET(SECCOMP_RET_ERRNO | EPERM)

static int install_filter(void)
{
    enum { NALLOWED = ARRAY_SIZE(allowed) };
    struct sock_filter f[NALLOWED * 2 + 32];
    size_t n = 0;
    f[n++] = LD_ARCH;
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    f[n++] = RET(SECCOMP_RET_KILL_PROCESS);
    f[n++] = LD_NR;
    /* x32 system calls share the arch value: refuse them. */
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);
    f[n++] = DENY;
    for (size_t i = 0; i < NALLOWED; i++) {
        f[n++] =
            (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)allowed[i], 0, 1);
        f[n++] = RET(SECCOMP_RET_ALLOW);
    }
    /* clone3 hides its flags in memory: ENOSYS makes glibc fall back to clone, whose flags
     * we can check: threads only (CLONE_THREAD), never new processes. */
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1);
    f[n++] = RET(SECCOMP_RET_ERRNO | ENOSYS);
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 1, 0);
    f[n++] = DENY;
    f[n++] = LD_ARG0;
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 1, 0);
    f[n++] = DENY;
    f[n++] = RET(SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return -errno;
    return 0;
}

static int drop_capabilities(void)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof(d));
    if (syscall(SYS_capget, &h, d) < 0)
        return -errno;
    if (!d[0].permitted && !d[1].permitted && !d[0].effective && !d[1].effective)
        return 0;
    memset(d, 0, sizeof(d));
    if (syscall(SYS_capset, &h, d) < 0)
        return -errno;
    return 0;
}

int vmm_sandbox(void)
{
#ifdef SANITIZER_BUILD
    (void)install_filter;
    (void)drop_capabilities;
    log_info("sandbox: seccomp filter skipped in this sanitizer build");
    return 0;
#else
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        log_err("sandbox: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
        return -errno;
    }
    int r = drop_capabilities();
    if (r < 0) {
        log_err("sandbox: dropping capabilities: %s", strerror(-r));
        return r;
    }
    r = install_filter();
    if (r < 0) {
        log_err("sandbox: seccomp: %s", strerror(-r));
        return r;
    }
    log_debug("sandbox: no capabilities, seccomp allowlist of %zu system calls",
              ARRAY_SIZE(allowed));
    return 0;
#endif
}
