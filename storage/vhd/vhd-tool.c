/* nuvem-vhd: a small vhd-util-like front end to the VHD library, for operators and tests. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "mem.h"
#include "vhd.h"

static void usage(void)
{
    fputs("usage: nuvem-vhd COMMAND ARGS\n"
          "  create [-t fixed|dynamic] [-S MAXSIZE] PATH SIZE\n"
          "  snapshot [-H] CHILD PARENT      (-H: mark the parent hidden)\n"
          "  info PATH\n"
          "  check [-n] PATH                 (-n: do not check the parents)\n"
          "  read PATH OFFSET LENGTH         (raw bytes to stdout)\n"
          "  write PATH OFFSET [LENGTH BYTE] (stdin, or LENGTH bytes of value BYTE)\n"
          "  resize PATH SIZE\n"
          "  coalesce CHILD\n"
          "  set-hidden PATH 0|1\n"
          "  set-parent CHILD PARENT\n"
          "  export-raw PATH OUT|-\n"
          "  import-raw PATH IN|-\n"
          "  map [-l] PATH                   (-l: the leaf alone)\n"
          "Sizes and offsets take K, M, G, T suffixes (powers of 1024).\n",
          stderr);
}

static int parse_size(const char *s, uint64_t *ret)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || s[0] == '-')
        return -EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case 0:
        break;
    case 'K':
    case 'k':
        shift = 10;
        break;
    case 'M':
    case 'm':
        shift = 20;
        break;
    case 'G':
    case 'g':
        shift = 30;
        break;
    case 'T':
    case 't':
        shift = 40;
        break;
    default:
        return -EINVAL;
    }
    if (*end && end[1])
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -EINVAL;
    *ret = (uint64_t)v << shift;
    return 0;
}

static int die(const char *what, int r)
{
    fprintf(stderr, "nuvem-vhd: %s: %s\n", what, strerror(-r));
    return 1;
}

static const char *type_name(enum vhd_type t)
{
    switch (t) {
    case VHD_TYPE_FIXED:
        return "fixed";
    case VHD_TYPE_DYNAMIC:
        return "dynamic";
    case VHD_TYPE_DIFF:
        return "differencing";
    }
    return "?";
}

static int cmd_create(int argc, char **argv)
{
    enum vhd_type type = VHD_TYPE_DYNAMIC;
    uint64_t size, max = 0;
    int c;
    while ((c = getopt(argc, argv, "t:S:")) != -1) {
        if (c == 't' && strcmp(optarg, "fixed") == 0)
            type = VHD_TYPE_FIXED;
        else if (c == 't' && strcmp(optarg, "dynamic") == 0)
            type = VHD_TYPE_DYNAMIC;
        else if (c == 'S' && parse_size(optarg, &max) == 0)
            continue;
        else
            return usage(), 2;
    }
    if (argc - optind != 2 || parse_size(argv[optind + 1], &size) < 0)
        return usage(), 2;
    int r = vhd_create(argv[optind], type, size, max);
    return r < 0 ? die(argv[optind], r) : 0;
}

static int cmd_snapshot(int argc, char **argv)
{
    unsigned flags = 0;
    int c;
    while ((c = getopt(argc, argv, "H")) != -1) {
        if (c != 'H')
            return usage(), 2;
        flags |= VHD_SNAPSHOT_HIDE_PARENT;
    }
    if (argc - optind != 2)
        return usage(), 2;
    int r = vhd_snapshot(argv[optind], argv[optind + 1], flags);
    return r < 0 ? die(argv[optind], r) : 0;
}

static int cmd_info(int argc, char **argv)
{
    if (argc != 2)
        return usage(), 2;
    AUTO(vhd) *v = NULL;
    int r = vhd_open(argv[1], VHD_OPEN_RDONLY, &v);
    if (r < 0)
        return die(argv[1], r);
    struct vhd_info i;
    vhd_get_info(v, &i);
    printf("type: %s\nvirtual-size: %" PRIu64 "\nphysical-size: %" PRIu64 "\nuuid: %s\n",
           type_name(i.type), i.virtual_size, i.physical_size, i.uuid);
    printf("parent-uuid: %s\nhidden: %d\ncreator: %s %u.%u\ntimestamp: %" PRId64 "\n",
           i.parent_uuid, i.hidden, i.creator, i.creator_version >> 16, i.creator_version & 0xffff,
           i.timestamp);
    printf("block-size: %u\nmax-blocks: %u\nallocated-blocks: %u\nchain-depth: %u\n", i.block_size,
           i.max_blocks, i.allocated_blocks, i.chain_depth);
    if (vhd_parent(v))
        printf("parent: %s\n", vhd_path(vhd_parent(v)));
    return 0;
}

static int cmd_check(int argc, char **argv)
{
    unsigned flags = 0;
    int c;
    while ((c = getopt(argc, argv, "n")) != -1) {
        if (c != 'n')
            return usage(), 2;
        flags |= VHD_CHECK_NO_PARENT;
    }
    if (argc - optind != 1)
        return usage(), 2;
    AUTOFREE char *why = NULL;
    int r = vhd_check(argv[optind], flags, &why);
    if (r == -EBADMSG) {
        printf("%s is invalid: %s\n", argv[optind], why ? why : "?");
        return 1;
    }
    if (r < 0)
        return die(argv[optind], r);
    printf("%s is valid\n", argv[optind]);
    return 0;
}

static int cmd_read(int argc, char **argv)
{
    uint64_t off, len;
    if (argc != 4 || parse_size(argv[2], &off) < 0 || parse_size(argv[3], &len) < 0)
        return usage(), 2;
    AUTO(vhd) *v = NULL;
    int r = vhd_open(argv[1], VHD_OPEN_RDONLY, &v);
    if (r < 0)
        return die(argv[1], r);
    AUTOFREE uint8_t *buf = xmalloc(1 << 20);
    while (len) {
        size_t n = len < (1 << 20) ? (size_t)len : (1 << 20);
        r = vhd_read(v, buf, off, n);
        if (r < 0)
            return die("read", r);
        if (fwrite(buf, 1, n, stdout) != n)
            return die("stdout", -EIO);
        off += n;
        len -= n;
    }
    return 0;
}

static int cmd_write(int argc, char **argv)
{
    uint64_t off, len = 0, byte = 0;
    if ((argc != 3 && argc != 5) || parse_size(argv[2], &off) < 0)
        return usage(), 2;
    if (argc == 5 && (parse_size(argv[3], &len) < 0 || parse_size(argv[4], &byte) < 0 ||
                      byte > 255 || len > (1ull << 32)))
        return usage(), 2;
    AUTO(vhd) *v = NULL;
    int r = vhd_open(argv[1], VHD_OPEN_RDWR, &v);
    if (r < 0)
        return die(argv[1], r);
    AUTOFREE uint8_t *buf = NULL;
    if (argc == 5) {
        buf = xmalloc(len ? len : 1);
        memset(buf, (int)byte, len);
    } else {
        size_t cap = 1 << 20;
        buf = xmalloc(cap);
        size_t n;
        while ((n = fread(buf + len, 1, cap - len, stdin)) > 0) {
            len += n;
            if (len == cap)
                buf = xrealloc(buf, cap *= 2);
        }
        size_t padded = (len + VHD_SECTOR_SIZE - 1) / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
        if (padded > cap)
            buf = xrealloc(buf, padded);
        memset(buf + len, 0, padded - len);
        len = padded;
    }
    r = vhd_write(v, buf, off, (size_t)len);
    if (r == 0)
        r = vhd_flush(v);
    return r < 0 ? die("write", r) : 0;
}

static int cmd_resize(int argc, char **argv)
{
    uint64_t size;
    if (argc != 3 || parse_size(argv[2], &size) < 0)
        return usage(), 2;
    int r = vhd_resize(argv[1], size);
    return r < 0 ? die(argv[1], r) : 0;
}

static int cmd_coalesce(int argc, char **argv)
{
    if (argc != 2)
        return usage(), 2;
    uint64_t n = 0;
    int r = vhd_coalesce(argv[1], &n);
    if (r < 0)
        return die(argv[1], r);
    printf("Coalesced %" PRIu64 " sectors\n", n);
    return 0;
}

static int cmd_set_hidden(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[2], "0") && strcmp(argv[2], "1")))
        return usage(), 2;
    int r = vhd_set_hidden(argv[1], argv[2][0] == '1');
    return r < 0 ? die(argv[1], r) : 0;
}

static int cmd_set_parent(int argc, char **argv)
{
    if (argc != 3)
        return usage(), 2;
    int r = vhd_set_parent(argv[1], argv[2]);
    return r < 0 ? die(argv[1], r) : 0;
}

static int cmd_export(int argc, char **argv)
{
    if (argc != 3)
        return usage(), 2;
    AUTO(vhd) *v = NULL;
    int r = vhd_open(argv[1], VHD_OPEN_RDONLY, &v);
    if (r < 0)
        return die(argv[1], r);
    AUTOCLOSE int fd = strcmp(argv[2], "-") == 0
                           ? dup(STDOUT_FILENO)
                           : open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return die(argv[2], -errno);
    r = vhd_export_raw(v, fd);
    return r < 0 ? die("export", r) : 0;
}

static int cmd_import(int argc, char **argv)
{
    if (argc != 3)
        return usage(), 2;
    AUTO(vhd) *v = NULL;
    int r = vhd_open(argv[1], VHD_OPEN_RDWR, &v);
    if (r < 0)
        return die(argv[1], r);
    AUTOCLOSE int fd =
        strcmp(argv[2], "-") == 0 ? dup(STDIN_FILENO) : open(argv[2], O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return die(argv[2], -errno);
    r = vhd_import_raw(v, fd);
    if (r == 0)
        r = vhd_flush(v);
    return r < 0 ? die("import", r) : 0;
}

static int cmd_map(int argc, char **argv)
{
    unsigned flags = VHD_OPEN_RDONLY;
    int c;
    while ((c = getopt(argc, argv, "l")) != -1) {
        if (c != 'l')
            return usage(), 2;
        flags |= VHD_OPEN_NO_PARENT;
    }
    if (argc - optind != 1)
        return usage(), 2;
    AUTO(vhd) *v = NULL;
    int r = vhd_open(argv[optind], flags, &v);
    if (r < 0)
        return die(argv[optind], r);
    AUTOFREE struct vhd_extent *ext = NULL;
    size_t n = 0;
    r = vhd_map(v, &ext, &n);
    if (r < 0)
        return die("map", r);
    printf("[");
    for (size_t i = 0; i < n; i++)
        printf("%s{\"start\": %" PRIu64 ", \"length\": %" PRIu64
               ", \"depth\": %d, \"data\": %s, \"offset\": %" PRId64 "}",
               i ? ",\n" : "", ext[i].start, ext[i].length, ext[i].depth,
               ext[i].depth >= 0 ? "true" : "false", ext[i].file_offset);
    printf("]\n");
    return 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"create", cmd_create},
        {"snapshot", cmd_snapshot},
        {"info", cmd_info},
        {"check", cmd_check},
        {"read", cmd_read},
        {"write", cmd_write},
        {"resize", cmd_resize},
        {"coalesce", cmd_coalesce},
        {"set-hidden", cmd_set_hidden},
        {"set-parent", cmd_set_parent},
        {"export-raw", cmd_export},
        {"import-raw", cmd_import},
        {"map", cmd_map},
    };
    if (argc < 2)
        return usage(), 2;
    for (size_t i = 0; i < ARRAY_SIZE(cmds); i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    usage();
    return 2;
}
