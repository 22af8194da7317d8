/* libFuzzer target for storage/vhd: a mutated image goes through open, read, map and check;
 * nothing may crash, hang or read out of bounds. When the image passes check, a few writes
 * follow and check must still pass (our writer keeps valid images valid).
 *
 * The input is written to a file in a private temp dir (the library opens paths, and parent
 * locators resolve relative to the image's directory; the dir holds nothing else, so a
 * differencing image finds no parent unless it names itself, which the uuid check refuses).
 * The corpus in tests/fuzz/corpus/vhd was made with nuvem-vhd and qemu-img on tiny disks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "mem.h"
#include "vhd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void cleanup_dir(void)
{
    char path[96];
    snprintf(path, sizeof(path), "%s/img.vhd", dir);
    unlink(path);
    rmdir(dir);
}

/* Reads a few spots: the start, the end, and the first sectors of some blocks. */
static void read_some(vhd *v, uint64_t size)
{
    static uint8_t buf[64 * 1024];
    uint64_t spots[] = {0, size / 2, size > sizeof(buf) ? size - sizeof(buf) : 0};
    for (size_t i = 0; i < sizeof(spots) / sizeof(spots[0]); i++) {
        uint64_t off = spots[i] & ~511ull;
        size_t len = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
        len &= ~(size_t)511;
        if (len)
            vhd_read(v, buf, off, len);
    }
    AUTOFREE struct vhd_extent *ext = NULL;
    size_t n = 0;
    if (vhd_map(v, &ext, &n) == 0) {
        for (size_t i = 0; i < n && i < 64; i++)
            if (ext[i].depth >= 0)
                vhd_read(v, buf, ext[i].start, ext[i].length < 4096 ? ext[i].length : 4096);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        strcpy(dir, "/tmp/fuzz_vhd.XXXXXX");
        if (!mkdtemp(dir))
            abort();
        atexit(cleanup_dir);
    }
    /* bounded so that a flood of allocations cannot fill the disk */
    if (size > 1 << 20)
        return 0;
    char path[96];
    snprintf(path, sizeof(path), "%s/img.vhd", dir);
    unlink(path);
    {
        AUTOCLOSE int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            abort();
        if (size && write(fd, data, size) != (ssize_t)size)
            abort();
    }

    vhd *v = NULL;
    if (vhd_open(path, VHD_OPEN_RDONLY, &v) == 0) {
        struct vhd_info info;
        vhd_get_info(v, &info);
        read_some(v, info.virtual_size);
        vhd_close(v);
    }
    char *why = NULL;
    int valid = vhd_check(path, 0, &why);
    free(why);

    if (valid == 0 && vhd_open(path, VHD_OPEN_RDWR | VHD_OPEN_UNSAFE, &v) == 0) {
        struct vhd_info info;
        vhd_get_info(v, &info);
        uint8_t sec[1024];
        memset(sec, 0xa5, sizeof(sec));
        if (info.virtual_size >= sizeof(sec)) {
            vhd_write(v, sec, 0, sizeof(sec));
            vhd_write(v, sec, (info.virtual_size - sizeof(sec)) & ~511ull, sizeof(sec));
        }
        vhd_close(v);
        why = NULL;
        if (vhd_check(path, 0, &why) != 0) {
            fprintf(stderr, "valid image became invalid after writes: %s\n", why ? why : "?");
            abort();
        }
        free(why);
    }
    unlink(path);
    return 0;
}
