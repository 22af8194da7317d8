/* nuvem-vmm's sandbox (hypervisor/sandbox.c): each case confines a forked child with
 * vmm_sandbox() and checks what it may and may not do. Skipped in sanitizer builds, where
 * vmm_sandbox() installs no filter. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZER_BUILD 1
#endif
#endif

/* Child exit codes: 0 pass, else the number of the failed check. */
#define CHECK(n, cond)                                                                             \
    do {                                                                                           \
        if (!(cond))                                                                               \
            _exit(n);                                                                              \
    } while (0)

static void *thread_fn(void *arg)
{
    return arg;
}

/* Runs fn in a sandboxed child; returns its wait status. */
static int in_sandbox(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (vmm_sandbox() < 0)
            _exit(100);
        fn();
        _exit(0);
    }
    assert_true(pid > 0);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

static void child_allowed(void)
{
    CHECK(1, syscall(SYS_getpid) > 0);
    CHECK(2, write(STDERR_FILENO, "", 0) == 0);
    void *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(3, p != MAP_FAILED);
    CHECK(4, madvise(p, 1 << 20, MADV_MERGEABLE) == 0 || errno == EINVAL);
    CHECK(5, munmap(p, 1 << 20) == 0);
    /* Threads: glibc tries clone3 (ENOSYS), then clone with CLONE_THREAD. */
    pthread_t t;
    void *ret = NULL;
    CHECK(6, pthread_create(&t, NULL, thread_fn, (void *)0x5a) == 0);
    CHECK(7, pthread_join(t, &ret) == 0 && ret == (void *)0x5a);
    /* /proc/self/status: openat and read are allowed; the filter and no_new_privs show. */
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    CHECK(8, fd >= 0);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    CHECK(9, n > 0);
    buf[n] = 0;
    close(fd);
    CHECK(10, strstr(buf, "\nSeccomp:\t2") != NULL);
    CHECK(11, strstr(buf, "\nNoNewPrivs:\t1") != NULL);
    CHECK(12, strstr(buf, "\nCapEff:\t0000000000000000") != NULL);
}

static void child_denied(void)
{
    errno = 0;
    CHECK(1, socket(AF_UNIX, SOCK_STREAM, 0) < 0 && errno == EPERM);
    errno = 0;
    CHECK(2, fork() < 0 && errno == EPERM); /* clone without CLONE_THREAD */
    errno = 0;
    CHECK(3, syscall(SYS_clone3, NULL, 0) < 0 && errno == ENOSYS);
    char *argv[] = {"/bin/true", NULL};
    errno = 0;
    CHECK(4, execve("/bin/true", argv, NULL) < 0 && errno == EPERM);
    errno = 0;
    CHECK(5, syscall(SYS_ptrace, 0, 0, 0, 0) < 0 && errno == EPERM);
    errno = 0;
    CHECK(6, syscall(SYS_setuid, 0) < 0 && errno == EPERM);
    int fds[2]; /* an allowlist: pipe2, harmless, is not on it */
    errno = 0;
    CHECK(7, pipe2(fds, O_CLOEXEC) < 0 && errno == EPERM);
    /* The guest keeps running: the process is still here after refused calls. */
    CHECK(8, getpid() > 0);
}

static void child_x32(void)
{
    syscall(0x40000000 | SYS_getpid); /* x32 ABI: the filter kills the process */
    _exit(50);
}

static bool skipped(void)
{
#ifdef SANITIZER_BUILD
    return true;
#else
    return false;
#endif
}

static void test_allowed(void **state)
{
    (void)state;
    if (skipped())
        skip();
    int st = in_sandbox(child_allowed);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_denied(void **state)
{
    (void)state;
    if (skipped())
        skip();
    int st = in_sandbox(child_denied);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_x32_killed(void **state)
{
    (void)state;
    if (skipped())
        skip();
    int st = in_sandbox(child_x32);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGSYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allowed),
        cmocka_unit_test(test_denied),
        cmocka_unit_test(test_x32_killed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
