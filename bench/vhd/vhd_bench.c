/* bench-vhd: the VHD library against a raw file on the same filesystem (sequential write and
 * read MiB/s), snapshot and clone time of small and large virtual disks through the file SR
 * driver, and coalesce MiB/s. See bench/README.md. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "mem.h"
#include "sr.h"
#include "util.h"
#include "vhd.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int r)
{
    fprintf(stderr, "bench-vhd: %s: %s\n", what, strerror(r < 0 ? -r : r));
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Drops the file's pages from the page cache (after fdatasync), so reads come from the disk. */
static void evict(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
    for (size_t i = 0; i + 8 <= len; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(buf + i, &x, 8);
    }
}

struct opts {
    const char *dir;
    uint64_t size; /* bytes written and read sequentially */
    size_t io;     /* request size */
    int reps;
    int snap_reps;
    uint64_t coalesce_size;
};

/* ---- sequential I/O ------------------------------------------------------------------------ */

static double raw_write(const char *path, const struct opts *o, uint8_t *buf)
{
    unlink(path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        die(path, errno);
    double t0 = now();
    for (uint64_t off = 0; off < o->size; off += o->io)
        if (pwrite(fd, buf, o->io, (off_t)off) != (ssize_t)o->io)
            die("raw write", errno);
    if (fdatasync(fd) < 0)
        die("raw fdatasync", errno);
    double t = now() - t0;
    close(fd);
    return (double)o->size / MiB / t;
}

static double raw_read(const char *path, const struct opts *o, uint8_t *buf, bool cold)
{
    if (cold)
        evict(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(path, errno);
    double t0 = now();
    for (uint64_t off = 0; off < o->size; off += o->io)
        if (pread(fd, buf, o->io, (off_t)off) != (ssize_t)o->io)
            die("raw read", errno);
    double t = now() - t0;
    close(fd);
    return (double)o->size / MiB / t;
}

static double vhd_write_seq(const char *path, const struct opts *o, uint8_t *buf)
{
    unlink(path);
    int r = vhd_create(path, VHD_TYPE_DYNAMIC, o->size, 0);
    if (r < 0)
        die("vhd_create", r);
    vhd *v = NULL;
    double t0 = now();
    if ((r = vhd_open(path, VHD_OPEN_RDWR, &v)) < 0)
        die("vhd_open", r);
    for (uint64_t off = 0; off < o->size; off += o->io)
        if ((r = vhd_write(v, buf, off, o->io)) < 0)
            die("vhd_write", r);
    if ((r = vhd_flush(v)) < 0)
        die("vhd_flush", r);
    vhd_close(v);
    double t = now() - t0;
    return (double)o->size / MiB / t;
}

static double vhd_read_seq(const char *path, const struct opts *o, uint8_t *buf, bool cold)
{
    if (cold)
        evict(path);
    vhd *v = NULL;
    double t0 = now();
    int r = vhd_open(path, VHD_OPEN_RDONLY, &v);
    if (r < 0)
        die("vhd_open", r);
    for (uint64_t off = 0; off < o->size; off += o->io)
        if ((r = vhd_read(v, buf, off, o->io)) < 0)
            die("vhd_read", r);
    vhd_close(v);
    double t = now() - t0;
    return (double)o->size / MiB / t;
}

/* ---- snapshot and clone -------------------------------------------------------------------- */

/* A VDI of vsize bytes holding 8 MiB of data in the middle. */
static void tree_vdi(sr *s, uint64_t vsize, uint8_t *buf, struct sr_vdi_info *ret)
{
    int r = sr_vdi_create(s, vsize, ret);
    if (r < 0)
        die("sr_vdi_create", r);
    AUTOFREE char *p = xasprintf("%s/%s.vhd", sr_location(s), ret->uuid);
    vhd *v = NULL;
    if ((r = vhd_open(p, VHD_OPEN_RDWR, &v)) < 0)
        die("vhd_open", r);
    for (uint64_t off = 0; off < 8 * MiB; off += MiB)
        if ((r = vhd_write(v, buf, vsize / 2 + off, MiB)) < 0)
            die("vhd_write", r);
    vhd_flush(v);
    vhd_close(v);
}

/* Seconds of one sr_vdi_snapshot of the VDI; afterwards (untimed) the new VDI is deleted and
 * the tree collected, so every round starts from one file. */
static double tree_op(sr *s, const char *uuid)
{
    struct sr_vdi_info sn;
    double t0 = now();
    int r = sr_vdi_snapshot(s, uuid, &sn, NULL);
    double t = now() - t0;
    if (r < 0)
        die("sr_vdi_snapshot", r);
    if ((r = sr_vdi_delete(s, sn.uuid)) < 0 || (r = sr_gc(s, NULL)) < 0)
        die("cleanup", r);
    return t;
}

/* ---- coalesce ------------------------------------------------------------------------------ */

/* MiB/s of vhd_coalesce merging a child holding `size` bytes of data into an empty parent
 * (every block is new in the parent, which is flushed at the end). */
static double coalesce_rate(const char *dir, uint64_t size, uint8_t *buf, size_t io)
{
    AUTOFREE char *parent = xasprintf("%s/coalesce-parent.vhd", dir);
    AUTOFREE char *child = xasprintf("%s/coalesce-child.vhd", dir);
    unlink(parent);
    unlink(child);
    int r = vhd_create(parent, VHD_TYPE_DYNAMIC, size, 0);
    if (r < 0 || (r = vhd_snapshot(child, parent, VHD_SNAPSHOT_HIDE_PARENT)) < 0)
        die("coalesce setup", r);
    vhd *v = NULL;
    if ((r = vhd_open(child, VHD_OPEN_RDWR, &v)) < 0)
        die("vhd_open", r);
    for (uint64_t off = 0; off < size; off += io)
        if ((r = vhd_write(v, buf, off, io)) < 0)
            die("vhd_write", r);
    vhd_flush(v);
    vhd_close(v);
    evict(child);
    uint64_t sectors = 0;
    double t0 = now();
    if ((r = vhd_coalesce(child, &sectors)) < 0)
        die("vhd_coalesce", r);
    double t = now() - t0;
    unlink(parent);
    unlink(child);
    return (double)sectors * VHD_SECTOR_SIZE / MiB / t;
}

static void usage(void)
{
    fputs("usage: bench-vhd [--dir DIR] [--size MIB] [--io KIB] [--reps N] [--snap-reps N]\n"
          "                 [--coalesce-size MIB]\n"
          "  --dir DIR            where the files go (default $TMPDIR or /var/tmp): a disk,\n"
          "                       not tmpfs, for meaningful numbers\n"
          "  --size MIB           bytes written/read sequentially per run (default 512)\n"
          "  --io KIB             request size (default 1024)\n"
          "  --reps N             rounds of the raw/VHD pairs, medians (default 5)\n"
          "  --snap-reps N        snapshots and clones per disk size (default 9)\n"
          "  --coalesce-size MIB  data merged by the coalesce run (default 256)\n",
          stderr);
}

int main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    struct opts o = {.dir = tmp && *tmp ? tmp : "/var/tmp",
                     .size = 512 * MiB,
                     .io = 1024 * 1024,
                     .reps = 5,
                     .snap_reps = 9,
                     .coalesce_size = 256 * MiB};
    static const struct option lo[] = {
        {"dir", required_argument, NULL, 'd'},
        {"size", required_argument, NULL, 's'},
        {"io", required_argument, NULL, 'i'},
        {"reps", required_argument, NULL, 'r'},
        {"snap-reps", required_argument, NULL, 'n'},
        {"coalesce-size", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        long v = optarg ? strtol(optarg, NULL, 10) : 0;
        switch (c) {
        case 'd':
            o.dir = optarg;
            break;
        case 's':
            o.size = (uint64_t)(v > 0 && v <= 65536 ? v : 512) * MiB;
            break;
        case 'i':
            o.io = (size_t)(v >= 4 && v <= 16384 && (v & (v - 1)) == 0 ? v : 1024) * 1024;
            break;
        case 'r':
            o.reps = v > 0 && v <= 50 ? (int)v : 5;
            break;
        case 'n':
            o.snap_reps = v > 0 && v <= 200 ? (int)v : 9;
            break;
        case 'c':
            o.coalesce_size = (uint64_t)(v > 0 && v <= 65536 ? v : 256) * MiB;
            break;
        default:
            usage();
            return c == 'h' ? 0 : 2;
        }
    }
    if (o.size % o.io)
        o.size = (o.size / o.io + 1) * o.io;
    AUTOFREE char *work = xasprintf("%s/bench-vhd.XXXXXX", o.dir);
    if (!mkdtemp(work))
        die(work, errno);
    AUTOFREE char *rawp = xasprintf("%s/seq.raw", work);
    AUTOFREE char *vhdp = xasprintf("%s/seq.vhd", work);
    AUTOFREE char *srdir = xasprintf("%s/sr", work);
    AUTOFREE uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, o.io > MiB ? o.io : MiB))
        die("memory", ENOMEM);
    fill(buf, o.io > MiB ? o.io : MiB, 1);

    printf("# bench-vhd: dir %s, %llu MiB sequential in %zu KiB requests, %d rounds\n", o.dir,
           (unsigned long long)(o.size / MiB), o.io / 1024, o.reps);
    fflush(stdout);
    /* snapshot and clone are one tree operation in the driver (XenAPI tells them apart by
     * is_a_snapshot); both are measured, each on its own VDI, the four interleaved and the
     * order rotated each round so all see the same background load */
    sync(); /* measured first, on a quiet filesystem */
    int r = sr_create(sr_driver_lookup("file"), srdir);
    sr *s = NULL;
    if (r < 0 || (r = sr_attach(sr_driver_lookup("file"), srdir, &s)) < 0)
        die("SR", r);
    struct sr_vdi_info vd[4];
    static const uint64_t sizes[4] = {1 * GiB, 64 * GiB, 1 * GiB, 64 * GiB};
    double *tt[4];
    for (int k = 0; k < 4; k++) {
        tree_vdi(s, sizes[k], buf, &vd[k]);
        tt[k] = xcalloc((size_t)o.snap_reps, sizeof(double));
    }
    for (int i = 0; i < o.snap_reps; i++)
        for (int j = 0; j < 4; j++) {
            int k = (i + j) % 4;
            tt[k][i] = tree_op(s, vd[k].uuid);
        }
    double s1 = median(tt[0], o.snap_reps), s64 = median(tt[1], o.snap_reps);
    double c1 = median(tt[2], o.snap_reps), c64 = median(tt[3], o.snap_reps);
    for (int k = 0; k < 4; k++) {
        free(tt[k]);
        sr_vdi_delete(s, vd[k].uuid);
    }
    sr_gc(s, NULL);
    sr_detach(s);
    sr_delete(sr_driver_lookup("file"), srdir);
    printf("%-32s %10s %10s %8s\n", "tree operation", "1 GiB ms", "64 GiB ms", "64/1");
    printf("%-32s %10.2f %10.2f %7.2fx\n", "snapshot (median)", s1 * 1e3, s64 * 1e3, s64 / s1);
    printf("%-32s %10.2f %10.2f %7.2fx\n", "clone (median)", c1 * 1e3, c64 * 1e3, c64 / c1);
    fflush(stdout);

    enum { W_RAW, W_VHD, R_RAW, R_VHD, H_RAW, H_VHD, NCOL };
    double *m[NCOL];
    for (int k = 0; k < NCOL; k++)
        m[k] = xcalloc((size_t)o.reps, sizeof(double));
    for (int i = 0; i < o.reps; i++) {
        /* raw and VHD back to back, the order alternating each round, so both see the same
         * background load and each goes first as often (on a VM, a write that follows another
         * big one is slower: the host is still writing the first back) */
        if (i % 2 == 0) {
            m[W_RAW][i] = raw_write(rawp, &o, buf);
            m[W_VHD][i] = vhd_write_seq(vhdp, &o, buf);
        } else {
            m[W_VHD][i] = vhd_write_seq(vhdp, &o, buf);
            m[W_RAW][i] = raw_write(rawp, &o, buf);
        }
        fprintf(stderr, "round %d: write raw %.0f vhd %.0f MiB/s\n", i + 1, m[W_RAW][i],
                m[W_VHD][i]);
    }
    /* reads of the last round's two files, once their writes have settled: each read starts
     * with both files dropped from the page cache (a file written just before reads
     * differently on a VM whose host caches its disk) */
    sync();
    for (int i = 0; i < o.reps; i++) {
        for (int j = 0; j < 2; j++) {
            evict(rawp);
            evict(vhdp);
            if ((i + j) % 2 == 0)
                m[R_RAW][i] = raw_read(rawp, &o, buf, true);
            else
                m[R_VHD][i] = vhd_read_seq(vhdp, &o, buf, true);
        }
        /* warm: both files in the page cache (read once untimed), the library's CPU cost */
        raw_read(rawp, &o, buf, false);
        vhd_read_seq(vhdp, &o, buf, false);
        m[H_RAW][i] = raw_read(rawp, &o, buf, false);
        m[H_VHD][i] = vhd_read_seq(vhdp, &o, buf, false);
        fprintf(stderr, "round %d: read raw %.0f vhd %.0f, warm raw %.0f vhd %.0f MiB/s\n", i + 1,
                m[R_RAW][i], m[R_VHD][i], m[H_RAW][i], m[H_VHD][i]);
    }
    unlink(rawp);
    unlink(vhdp);
    /* ratios: the median of the per-round ratios (a round's pair saw the same load) */
    double *q = xcalloc((size_t)o.reps, sizeof(double));
    double ratio[NCOL] = {0};
    static const int pairs[][2] = {{W_VHD, W_RAW}, {R_VHD, R_RAW}, {H_VHD, H_RAW}};
    for (size_t p = 0; p < sizeof(pairs) / sizeof(pairs[0]); p++) {
        for (int i = 0; i < o.reps; i++)
            q[i] = m[pairs[p][0]][i] / m[pairs[p][1]][i];
        ratio[pairs[p][0]] = median(q, o.reps);
    }
    free(q);
    double med[NCOL];
    for (int k = 0; k < NCOL; k++) {
        med[k] = median(m[k], o.reps);
        free(m[k]);
    }
    printf("%-32s %10s %10s %8s\n", "sequential (median)", "raw MiB/s", "vhd MiB/s", "vhd/raw");
    printf("%-32s %10.0f %10.0f %7.2fx\n", "write (+fdatasync)", med[W_RAW], med[W_VHD],
           ratio[W_VHD]);
    printf("%-32s %10.0f %10.0f %7.2fx\n", "read (page cache dropped)", med[R_RAW], med[R_VHD],
           ratio[R_VHD]);
    printf("%-32s %10.0f %10.0f %7.2fx\n", "read (page cache warm)", med[H_RAW], med[H_VHD],
           ratio[H_VHD]);
    printf("%-32s %s\n", "target write and read >= 0.90x",
           ratio[W_VHD] >= 0.9 && ratio[R_VHD] >= 0.9 ? "met" : "NOT met");
    fflush(stdout);

    double co = coalesce_rate(work, o.coalesce_size, buf, o.io);
    printf("%-32s %10.0f MiB/s (%llu MiB of data into an empty parent)\n", "coalesce", co,
           (unsigned long long)(o.coalesce_size / MiB));
    rmdir(work);
    printf("{\"bench\":\"vhd\",\"size_mib\":%llu,\"io_kib\":%zu,\"write_raw\":%.1f,"
           "\"write_vhd\":%.1f,\"write_ratio\":%.3f,\"read_raw\":%.1f,"
           "\"read_vhd\":%.1f,\"read_ratio\":%.3f,\"warm_raw\":%.1f,\"warm_vhd\":%.1f,"
           "\"snapshot_ms_1g\":%.3f,\"snapshot_ms_64g\":%.3f,\"clone_ms_1g\":%.3f,"
           "\"clone_ms_64g\":%.3f,\"coalesce_mibs\":%.1f}\n",
           (unsigned long long)(o.size / MiB), o.io / 1024, med[W_RAW], med[W_VHD], ratio[W_VHD],
           med[R_RAW], med[R_VHD], ratio[R_VHD], med[H_RAW], med[H_VHD], s1 * 1e3, s64 * 1e3,
           c1 * 1e3, c64 * 1e3, co);
    return 0;
}
