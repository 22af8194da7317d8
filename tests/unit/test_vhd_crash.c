/* Crash safety of storage/vhd writes: a writer process is SIGKILLed at random points; the image
 * must pass vhd_check and every sector must hold either its old or one of its new contents.
 *
 * The writer runs a deterministic sequence of writes (seeded per round) and publishes, through
 * shared memory, how many have returned (n) and how many had returned when its last vhd_flush
 * returned (f). After the kill each sector must read as the last write before f left it (or
 * its initial contents), or as one of the writes in [f, n] that covered it (write n was in
 * flight; new blocks of unflushed writes may be lost, like a disk's volatile cache). With
 * VHD_OPEN_WRITETHROUGH, f = n: every completed write must be there. Every sector written
 * carries (write index, sector number) and a matching fill, so a torn or misplaced sector is
 * caught. Rounds alternate between a dynamic disk (old = zeros) and a differencing child over
 * a half-filled parent (old = the parent's data or zeros).
 *
 * Two ways to kill: SIGKILL from the parent after a random delay (the realistic one), and
 * fault injection: the binary links with -Wl,--wrap=pwrite, and the writer kills itself on its
 * Nth pwrite after writing a random whole-sector prefix of it (what a kill in the middle of a
 * large write can leave). The second reaches every step of the ordered updates (footer, data,
 * bitmap, BAT entries) with certainty, which random timing rarely does.
 *
 * NUVEM_VHD_CRASH_ROUNDS overrides the number of rounds (default 80; after 8 rounds (one of each
 * kind) the run also stops at ~4 s).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "mem.h"
#include "vhd.h"

#define MiB       (1ull << 20)
#define DISK_SIZE (16 * MiB)
#define SECTORS   (DISK_SIZE / 512)
#define BASE_TAG  0xbabeu

struct op {
    uint64_t sector, count;
};

/* Writer-side fault injection: -1 off, else the number of pwrites still allowed. */
static long kill_after = -1;
static uint64_t kill_seed;

ssize_t __real_pwrite(int fd, const void *buf, size_t n, off_t off);
ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off);

ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (kill_after > 0) {
        kill_after--;
    } else if (kill_after == 0) {
        size_t prefix = (size_t)(kill_seed % (n / 512 + 1)) * 512;
        if (prefix)
            __real_pwrite(fd, buf, prefix, off);
        raise(SIGKILL);
    }
    return __real_pwrite(fd, buf, n, off);
}

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: deterministic in writer and checker */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static struct op op_at(uint64_t seed, uint64_t i)
{
    uint64_t s = seed * 1000003 + i;
    uint64_t r = rng_next(&s);
    struct op o;
    switch (r % 4) {
    case 0: /* a few sectors */
        o.count = 1 + rng_next(&s) % 16;
        break;
    case 1: /* straddling a block boundary */
        o.count = 8 + rng_next(&s) % 64;
        o.sector = ((1 + rng_next(&s) % (SECTORS / 4096 - 1)) * 4096) - o.count / 2;
        return o;
    case 2: /* a large write that allocates */
        o.count = 1024 + rng_next(&s) % 4096;
        break;
    default:
        o.count = 64 + rng_next(&s) % 512;
        break;
    }
    o.sector = rng_next(&s) % (SECTORS - o.count);
    return o;
}

static void fill_sector(uint8_t *p, uint32_t tag, uint64_t sector)
{
    memcpy(p, &tag, 4);
    memcpy(p + 4, &sector, 8);
    for (int i = 12; i < 512; i++)
        p[i] = (uint8_t)(tag * 7 + sector * 13 + (uint64_t)i);
}

static bool sector_is(const uint8_t *p, uint32_t tag, uint64_t sector)
{
    uint8_t want[512];
    fill_sector(want, tag, sector);
    return memcmp(p, want, 512) == 0;
}

struct progress {
    uint64_t done, flushed;
};

static void writer(const char *path, uint64_t seed, bool inject, bool wt,
                   volatile struct progress *pr)
{
    vhd *v = NULL;
    if (inject) {
        uint64_t s = seed;
        kill_after = (long)(rng_next(&s) % 160);
        kill_seed = rng_next(&s);
    }
    if (vhd_open(path, VHD_OPEN_RDWR | (wt ? VHD_OPEN_WRITETHROUGH : 0), &v) < 0)
        _exit(3);
    uint64_t flush_every = 1 + seed % 5;
    uint8_t *buf = xmalloc(8192 * 512);
    for (uint64_t i = 0;; i++) {
        struct op o = op_at(seed, i);
        for (uint64_t k = 0; k < o.count; k++)
            fill_sector(buf + k * 512, (uint32_t)i + 1, o.sector + k);
        if (vhd_write(v, buf, o.sector * 512, o.count * 512) < 0)
            _exit(4);
        __atomic_store_n(&pr->done, i + 1, __ATOMIC_SEQ_CST);
        if (wt) {
            __atomic_store_n(&pr->flushed, i + 1, __ATOMIC_SEQ_CST);
        } else if ((i + 1) % flush_every == 0) {
            if (vhd_flush(v) < 0)
                _exit(5);
            __atomic_store_n(&pr->flushed, i + 1, __ATOMIC_SEQ_CST);
        }
    }
}

static void one_round(const char *dir, uint64_t seed, bool diff, bool inject, bool wt,
                      volatile struct progress *pr)
{
    AUTOFREE char *base = xasprintf("%s/base-%llu.vhd", dir, (unsigned long long)seed);
    AUTOFREE char *img = xasprintf("%s/img-%llu.vhd", dir, (unsigned long long)seed);
    AUTOFREE uint8_t *disk = xmalloc(DISK_SIZE);
    if (diff) {
        assert_int_equal(vhd_create(base, VHD_TYPE_DYNAMIC, DISK_SIZE, 0), 0);
        AUTO(vhd) *b = NULL;
        assert_int_equal(vhd_open(base, VHD_OPEN_RDWR | VHD_OPEN_UNSAFE, &b), 0);
        /* fill every other 2 MiB block so that children see both parent data and holes */
        for (uint64_t s = 0; s < SECTORS; s++)
            fill_sector(disk + s * 512, BASE_TAG, s);
        for (uint64_t blk = 0; blk < DISK_SIZE / (2 * MiB); blk += 2)
            assert_int_equal(vhd_write(b, disk + blk * 2 * MiB, blk * 2 * MiB, 2 * MiB), 0);
        vhd_close(TAKE_PTR(b));
        assert_int_equal(vhd_snapshot(img, base, VHD_SNAPSHOT_HIDE_PARENT), 0);
    } else {
        assert_int_equal(vhd_create(img, VHD_TYPE_DYNAMIC, DISK_SIZE, 0), 0);
    }

    pr->done = pr->flushed = 0;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        writer(img, seed, inject, wt, pr);
    if (!inject) {
        struct timespec ts = {0, (long)(seed * 7919 % 15000) * 1000};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status))
        fail_msg("writer exited with status %d", WEXITSTATUS(status));
    uint64_t n = __atomic_load_n(&pr->done, __ATOMIC_SEQ_CST);
    uint64_t f = __atomic_load_n(&pr->flushed, __ATOMIC_SEQ_CST);
    const char *kind =
        diff ? (wt ? "diff, write-through" : "diff") : (wt ? "dynamic, write-through" : "dynamic");

    AUTOFREE char *why = NULL;
    int r = vhd_check(img, 0, &why);
    if (r != 0)
        fail_msg("round %llu (%s, %llu writes done): check %d: %s", (unsigned long long)seed, kind,
                 (unsigned long long)n, r, why ? why : "");

    /* the last write of each sector before f, 0 = untouched */
    AUTOFREE uint32_t *last = xcalloc(SECTORS, sizeof(uint32_t));
    for (uint64_t i = 0; i < f; i++) {
        struct op o = op_at(seed, i);
        for (uint64_t k = 0; k < o.count; k++)
            last[o.sector + k] = (uint32_t)i + 1;
    }
    AUTO(vhd) *v = NULL;
    assert_int_equal(vhd_open(img, VHD_OPEN_RDWR, &v), 0);
    assert_int_equal(vhd_read(v, disk, 0, DISK_SIZE), 0);
    for (uint64_t s = 0; s < SECTORS; s++) {
        const uint8_t *p = disk + s * 512;
        bool ok;
        if (last[s])
            ok = sector_is(p, last[s], s);
        else if (diff && (s / 4096) % 2 == 0)
            ok = sector_is(p, BASE_TAG, s);
        else
            ok = p[0] == 0 && memcmp(p, p + 1, 511) == 0;
        if (!ok) {
            /* one of the writes since the last flush, or the one in flight */
            uint32_t tag;
            memcpy(&tag, p, 4);
            if (tag >= f + 1 && tag <= n + 1) {
                struct op o = op_at(seed, tag - 1);
                ok = s >= o.sector && s < o.sector + o.count && sector_is(p, tag, s);
            }
        }
        if (!ok)
            fail_msg("round %llu (%s): sector %llu holds neither old nor new data (%llu writes "
                     "done, %llu flushed)",
                     (unsigned long long)seed, kind, (unsigned long long)s, (unsigned long long)n,
                     (unsigned long long)f);
    }
    /* the survivor stays writable and valid */
    uint8_t sec[512];
    fill_sector(sec, 0xffff, 0);
    assert_int_equal(vhd_write(v, sec, DISK_SIZE - 512, 512), 0);
    vhd_close(TAKE_PTR(v));
    assert_int_equal(vhd_check(img, 0, NULL), 0);
    unlink(img);
    unlink(base);
}

static void test_crash_rounds(void **state)
{
    /* A killed process leaves the page cache as it was, so tmpfs models it exactly and keeps
     * the fdatasyncs from dominating the run time. */
    char dir[64];
    strcpy(dir, access("/dev/shm", W_OK) == 0 ? "/dev/shm/test_vhd_crash.XXXXXX"
                                              : "/tmp/test_vhd_crash.XXXXXX");
    assert_non_null(mkdtemp(dir));
    volatile struct progress *pr =
        mmap(NULL, sizeof(*pr), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(pr != MAP_FAILED);
    const char *env = getenv("NUVEM_VHD_CRASH_ROUNDS");
    uint64_t rounds = env ? strtoull(env, NULL, 10) : 80;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t seed;
    for (seed = 1; seed <= rounds; seed++) {
        one_round(dir, seed, seed % 2 == 0, seed % 4 >= 2, seed % 8 >= 4, pr);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (!env && seed >= 8 && t.tv_sec - t0.tv_sec >= 4)
            break;
    }
    print_message("%llu crash rounds\n", (unsigned long long)(seed > rounds ? rounds : seed));
    munmap((void *)pr, sizeof(*pr));
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_rounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
