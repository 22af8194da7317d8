/* seccomp allowlist and capability drop for nuvem-vmm (see sandbox.h). Unlisted system calls
 * fail with EPERM rather than killing the VM: the guest keeps running, the attempt fails.
 * The filter is built with libseccomp. */
#define _GNU_SOURCE
#include "sandbox.h"
#include "cleanup.h"
#include "log.h"

#include <errno.h>
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
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
 * its threads) call after set-up; glibc's wrappers included. x86-64 numbers (the filter is
 * for the native architecture only). */
static const int allowed[] = {
    SYS_read,
    SYS_write,
    SYS_readv,
    SYS_writev,
    SYS_pread64,
    SYS_pwrite64,  /* virtio-blk writes, on the disk I/O threads */
    SYS_fdatasync, /* virtio-blk flush */
    SYS_fsync,     /* `save`: the snapshot file and its directory */
    SYS_fallocate, /* virtio-blk discard / write-zeroes (punch hole, zero range) */
    SYS_ftruncate, /* resize-disk of a raw image */
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

/* The hot paths (KVM_RUN and the poll loop) are tested first. */
static const int hot[] = {SYS_ioctl, SYS_ppoll, SYS_poll, SYS_read, SYS_write, SYS_futex};

static void ctx_releasep(scmp_filter_ctx *c)
{
    if (*c)
        seccomp_release(*c);
}
#define AUTOCTX __attribute__((cleanup(ctx_releasep))) scmp_filter_ctx

/* Builds the filter: default EPERM; the allowlist; clone only with CLONE_THREAD (threads,
 * never new processes); clone3 (flags in memory, which seccomp cannot see) ENOSYS, so glibc
 * falls back to clone. A foreign architecture kills the process (SIGSYS), and so does an x32
 * system call (x86-64 audit arch, number >= 0x40000000): libseccomp treats both alike. */
static int build_filter(scmp_filter_ctx *out)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (!ctx)
        return -ENOMEM;
    int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    /* no_new_privs is set by vmm_sandbox() itself, before the capability drop. */
    if (!r)
        r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    for (size_t i = 0; !r && i < ARRAY_SIZE(allowed); i++)
        r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, allowed[i], 0);
    if (!r)
        r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                             SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
    if (!r)
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    for (size_t i = 0; !r && i < ARRAY_SIZE(hot); i++)
        r = seccomp_syscall_priority(ctx, hot[i], (uint8_t)(255 - i));
    if (r) {
        seccomp_release(ctx);
        return r;
    }
    *out = ctx;
    return 0;
}

static int install_filter(void)
{
    AUTOCTX ctx = NULL;
    int r = build_filter(&ctx);
    if (r)
        return r;
    return seccomp_load(ctx);
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
    log_debug("sandbox: no capabilities, seccomp allowlist of %zu system calls (libseccomp)",
              ARRAY_SIZE(allowed) + 1);
    return 0;
#endif
}
