/* nuvem-vmm live features without KVM: the guest-agent line parser (bounds against a flooding
 * or garbage guest), virtio-balloon (pages given back really drop from the mapping),
 * virtio-console as the agent channel, the live config keys and the hot-plug CPU tables. Guest
 * RAM is an anonymous mapping, the interrupt line is ignored. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "acpi.h"
#include "agent.h"
#include "boot.h"
#include "config.h"
#include "mem.h"
#include "sbuf.h"
#include "virtio.h"
#include "virtio_balloon.h"
#include "virtio_console.h"

/* ---- the agent line parser ---- */

static unsigned feed(agent_store *s, const char *text)
{
    return agent_store_feed(s, (const uint8_t *)text, strlen(text));
}

static void test_agent_basic(void **state)
{
    static agent_store s;
    agent_store_init(&s);
    assert_false(s.connected);
    assert_int_equal(feed(&s, "hello\nset os/name Nuvem Mini Guest\r\nset empty\nset sp \n"), 1);
    assert_true(s.connected);
    assert_string_equal(agent_store_get(&s, "os/name"), "Nuvem Mini Guest");
    assert_string_equal(agent_store_get(&s, "empty"), "");
    assert_string_equal(agent_store_get(&s, "sp"), "");
    assert_int_equal(feed(&s, "set os/name other\ndel sp\nsync\n"), 1);
    assert_string_equal(agent_store_get(&s, "os/name"), "other");
    assert_null(agent_store_get(&s, "sp"));
    assert_int_equal(s.n, 2);
    /* A line split across feeds is one line. */
    assert_int_equal(feed(&s, "set net/0/ip"), 0);
    assert_int_equal(feed(&s, "v4 10.0.0"), 0);
    assert_null(agent_store_get(&s, "net/0/ipv4"));
    assert_int_equal(feed(&s, ".2\nsy"), 0);
    assert_int_equal(feed(&s, "nc\n"), 1);
    assert_string_equal(agent_store_get(&s, "net/0/ipv4"), "10.0.0.2");
    AUTO(xv) *d = agent_store_data(&s);
    assert_int_equal(xv_struct_len(d), 3);
    assert_string_equal(xv_struct_get_str(d, "os/name"), "other");
    /* hello: a restarted agent starts from nothing */
    assert_int_equal(feed(&s, "hello\n"), 1);
    assert_int_equal(s.n, 0);
    assert_true(s.connected);
    agent_store_clear(&s);
    assert_false(s.connected);
}

static void test_agent_garbage(void **state)
{
    static agent_store s;
    agent_store_init(&s);
    const char *bad[] = {
        "set\n",         "set  v\n",     "set bad!key v\n", "set k \x01x\n", "set k \xff\xfe\n",
        "set k a\x7f\n", "frobnicate\n", "del\n",           "del a b\n",     "SET k v\n",
        "setk v\n",      "syncx\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(feed(&s, bad[i]), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.rejected, sizeof(bad) / sizeof(bad[0]));
    /* NUL bytes inside a line make it invalid, not truncated */
    static const uint8_t nul[] = "set k a\0b\n";
    agent_store_feed(&s, nul, sizeof(nul) - 1);
    assert_null(agent_store_get(&s, "k"));
    /* UTF-8 values pass */
    feed(&s, "set k caf\xc3\xa9\n");
    assert_string_equal(agent_store_get(&s, "k"), "caf\xc3\xa9");
}

static void test_agent_bounds(void **state)
{
    static agent_store s;
    agent_store_init(&s);
    /* An overlong line is skipped to its newline; the next line parses. */
    char *big = xmalloc(AGENT_MAX_LINE * 3);
    memset(big, 'x', AGENT_MAX_LINE * 3 - 1);
    memcpy(big, "set k ", 6);
    big[AGENT_MAX_LINE * 3 - 1] = 0;
    for (int i = 0; i < 3; i++) /* in pieces, still one line */
        feed(&s, big);
    assert_true(s.line_len <= AGENT_MAX_LINE);
    feed(&s, "\nset ok 1\n");
    assert_int_equal(s.overlong, 1);
    assert_null(agent_store_get(&s, "k"));
    assert_string_equal(agent_store_get(&s, "ok"), "1");
    free(big);
    /* The longest key and value fit; one byte more does not. */
    char key[AGENT_MAX_KEY + 2], val[AGENT_MAX_VALUE + 2], line[AGENT_MAX_LINE + 64];
    memset(key, 'k', sizeof(key));
    memset(val, 'v', sizeof(val));
    snprintf(line, sizeof(line), "set %.*s %.*s\n", AGENT_MAX_KEY, key, AGENT_MAX_VALUE, val);
    feed(&s, line);
    assert_int_equal(s.n, 2);
    snprintf(line, sizeof(line), "set %.*s %.*s\n", AGENT_MAX_KEY + 1, key, 1, val);
    feed(&s, line);
    snprintf(line, sizeof(line), "set a %.*s\n", AGENT_MAX_VALUE + 1, val);
    feed(&s, line);
    assert_int_equal(s.n, 2);
    /* A flood of keys: at most AGENT_MAX_KEYS are kept, updates still work. */
    for (int i = 0; i < 1000; i++) {
        snprintf(line, sizeof(line), "set flood/%d %d\n", i, i);
        feed(&s, line);
    }
    assert_int_equal(s.n, AGENT_MAX_KEYS);
    assert_int_equal(s.dropped, 1000 - (AGENT_MAX_KEYS - 2));
    feed(&s, "set ok 2\n");
    assert_string_equal(agent_store_get(&s, "ok"), "2");
    /* Bytes without a newline never grow the line past its bound. */
    agent_store_clear(&s);
    for (int i = 0; i < 100; i++)
        feed(&s, "set aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_true(s.line_len <= AGENT_MAX_LINE);
    agent_store_clear(&s);
}

static void test_agent_format(void **state)
{
    char *line = NULL;
    assert_null(agent_format_set("control/shutdown", "poweroff", &line));
    assert_string_equal(line, "set control/shutdown poweroff\n");
    free(line);
    xerr *e = agent_format_set("bad key", "v", &line);
    assert_non_null(e);
    assert_string_equal(e->code, "INVALID_VALUE");
    assert_string_equal(e->params[0], "key");
    xerr_free(e);
    e = agent_format_set("k", "two\nlines", &line);
    assert_non_null(e);
    assert_string_equal(e->params[0], "value");
    xerr_free(e);
}

/* ---- devices: a driver written against the MMIO registers ---- */

#define RAM_SIZE (4u << 20)
#define Q0       0x10000 /* queue 0: desc, avail, used */
#define Q1       0x14000
#define BUF      0x20000
#define QN       8

typedef struct fix {
    boot_mem m;
    unsigned changed;
} fix;

static int setup(void **state)
{
    fix *f = xcalloc(1, sizeof(*f));
    void *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(ram != MAP_FAILED);
    f->m.ram = ram;
    f->m.size = f->m.low = RAM_SIZE;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fix *f = *state;
    munmap(f->m.ram, RAM_SIZE);
    free(f);
    return 0;
}

static void no_irq(void *opaque, unsigned gsi, int level)
{
}

static void count_change(void *opaque)
{
    ((fix *)opaque)->changed++;
}

static uint32_t rreg(virtio_dev *d, uint32_t off)
{
    uint32_t v = 0;
    virtio_mmio_access(d, off, false, (uint8_t *)&v, 4);
    return v;
}

static void wreg(virtio_dev *d, uint32_t off, uint32_t v)
{
    virtio_mmio_access(d, off, true, (uint8_t *)&v, 4);
}

static void driver_init(fix *f, virtio_dev *d)
{
    virtio_dev_attach(d, &f->m, 16, no_irq, NULL);
    wreg(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    wreg(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wreg(d, VIRTIO_MMIO_DRIVER_FEATURES, 1);
    wreg(d, VIRTIO_MMIO_STATUS,
         VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    assert_true(rreg(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK);
    for (unsigned q = 0; q < 2; q++) {
        uint64_t base = q ? Q1 : Q0;
        wreg(d, VIRTIO_MMIO_QUEUE_SEL, q);
        wreg(d, VIRTIO_MMIO_QUEUE_NUM, QN);
        wreg(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)base);
        wreg(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)base + 0x1000);
        wreg(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)base + 0x2000);
        wreg(d, VIRTIO_MMIO_QUEUE_READY, 1);
        assert_int_equal(rreg(d, VIRTIO_MMIO_QUEUE_READY), 1);
    }
    wreg(d, VIRTIO_MMIO_STATUS,
         VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
             VIRTIO_STATUS_DRIVER_OK);
}

/* Offers one buffer on queue q (a descriptor per call, slot = avail index) and notifies. */
static void submit(fix *f, virtio_dev *d, unsigned q, uint16_t *avail, uint64_t addr, uint32_t len,
                   bool dev_writes)
{
    uint8_t *base = f->m.ram + (q ? Q1 : Q0);
    uint16_t slot = *avail % QN, flags = dev_writes ? VIRTQ_DESC_F_WRITE : 0, zero = 0;
    memcpy(base + 16 * slot, &addr, 8);
    memcpy(base + 16 * slot + 8, &len, 4);
    memcpy(base + 16 * slot + 12, &flags, 2);
    memcpy(base + 16 * slot + 14, &zero, 2);
    memcpy(base + 0x1000 + 4 + 2 * slot, &slot, 2);
    (*avail)++;
    memcpy(base + 0x1000 + 2, avail, 2);
    wreg(d, VIRTIO_MMIO_QUEUE_NOTIFY, q);
}

static uint16_t used_idx(fix *f, unsigned q)
{
    uint16_t v;
    memcpy(&v, f->m.ram + (q ? Q1 : Q0) + 0x2000 + 2, 2);
    return v;
}

static void test_balloon(void **state)
{
    fix *f = *state;
    virtio_balloon *b = virtio_balloon_new(RAM_SIZE, count_change, f);
    virtio_dev *d = virtio_balloon_dev(b);
    driver_init(f, d);
    assert_int_equal(rreg(d, VIRTIO_MMIO_DEVICE_ID), 5);
    /* Target: bounds, then the config space the driver reads. */
    AUTO(xerr) *e1 = virtio_balloon_set_target(b, RAM_SIZE + 1);
    assert_non_null(e1);
    assert_string_equal(e1->params[0], "bytes");
    AUTO(xerr) *e2 = virtio_balloon_set_target(b, -1);
    assert_non_null(e2);
    /* the floor is the whole memory for a guest smaller than 16 MiB */
    assert_int_equal(virtio_balloon_floor(RAM_SIZE), RAM_SIZE);
    assert_int_equal(virtio_balloon_floor(1ull << 30), 16u << 20);
    AUTO(xerr) *e3 = virtio_balloon_set_target(b, RAM_SIZE - 4096);
    assert_non_null(e3); /* below the floor */
    assert_null(virtio_balloon_set_target(b, RAM_SIZE));

    /* Inflate pages 0x100..0x103 (filled first) and page 0x200; one PFN is outside RAM. */
    for (unsigned p = 0x100; p < 0x104; p++)
        memset(f->m.ram + p * 4096ull, 0xab, 4096);
    memset(f->m.ram + 0x200 * 4096ull, 0xcd, 4096);
    uint32_t pfns[] = {0x100, 0x101, 0x102, 0x103, 0x200, 0x100, 0xfffff};
    memcpy(f->m.ram + BUF, pfns, sizeof(pfns));
    uint16_t avail0 = 0, avail1 = 0;
    submit(f, d, VIRTIO_BALLOON_IFQ, &avail0, BUF, sizeof(pfns), false);
    assert_int_equal(used_idx(f, 0), 1);
    for (unsigned p = 0x100; p < 0x104; p++)
        assert_int_equal(f->m.ram[p * 4096ull + 123], 0); /* really given back */
    assert_int_equal(f->m.ram[0x200 * 4096ull], 0);
    assert_int_equal(f->m.ram[0x104 * 4096ull], 0); /* untouched neighbour: was 0 anyway */
    virtio_balloon_stats st;
    virtio_balloon_get_stats(b, &st);
    assert_int_equal(st.inflated_bytes, 5 * 4096); /* 0x100 twice counts once */
    assert_int_equal(st.bad_pfns, 1);
    assert_int_equal(st.actual_bytes, RAM_SIZE); /* until the driver says so */
    uint32_t actual = 5;
    virtio_mmio_access(d, VIRTIO_MMIO_CONFIG + 4, true, (uint8_t *)&actual, 4);
    assert_int_equal(f->changed, 1);
    virtio_balloon_get_stats(b, &st);
    assert_int_equal(st.actual_bytes, RAM_SIZE - 5 * 4096);
    /* Deflate two: only forgotten by the host. */
    memcpy(f->m.ram + BUF, pfns, 8);
    submit(f, d, VIRTIO_BALLOON_DFQ, &avail1, BUF, 8, false);
    assert_int_equal(used_idx(f, 1), 1);
    virtio_balloon_get_stats(b, &st);
    assert_int_equal(st.inflated_bytes, 3 * 4096);
    assert_int_equal(st.deflates, 1);
    /* num_pages in the config space follows the target (2 MiB: 512 pages). */
    virtio_balloon_free(b);
    b = virtio_balloon_new(64ull << 20, count_change, f);
    assert_null(virtio_balloon_set_target(b, 48ull << 20));
    virtio_balloon_get_stats(b, &st);
    assert_int_equal(st.target_bytes, 48ull << 20);
    uint32_t num = 0;
    virtio_mmio_access(virtio_balloon_dev(b), VIRTIO_MMIO_CONFIG, false, (uint8_t *)&num, 4);
    assert_int_equal(num, 4096);
    AUTO(xerr) *e4 = virtio_balloon_set_target(b, (16ull << 20) - 1);
    assert_non_null(e4);
    assert_null(virtio_balloon_set_target(b, 16ull << 20));
    virtio_balloon_free(b);
}

static void test_console(void **state)
{
    fix *f = *state;
    virtio_console *c = virtio_console_new(count_change, f);
    virtio_dev *d = virtio_console_dev(c);
    assert_int_equal(rreg(d, VIRTIO_MMIO_DEVICE_ID), 3);
    /* A host write before the driver is ready waits for it. */
    assert_null(virtio_console_guest_set(c, "control/vcpus", "3"));
    driver_init(f, d);
    uint16_t rx = 0, tx = 0;
    memset(f->m.ram + BUF, 0, 64);
    submit(f, d, VIRTIO_CONSOLE_RXQ, &rx, BUF, 64, true);
    assert_int_equal(used_idx(f, 0), 1);
    assert_string_equal((char *)f->m.ram + BUF, "set control/vcpus 3\n");
    /* Guest -> host: published on sync. */
    const char *msg = "hello\nset os/name Nuvem Mini Guest\nset agent/up 1\n";
    memcpy(f->m.ram + BUF + 0x1000, msg, strlen(msg));
    submit(f, d, VIRTIO_CONSOLE_TXQ, &tx, BUF + 0x1000, (uint32_t)strlen(msg), false);
    assert_int_equal(f->changed, 1); /* hello */
    memcpy(f->m.ram + BUF + 0x1000, "sync\n", 5);
    submit(f, d, VIRTIO_CONSOLE_TXQ, &tx, BUF + 0x1000, 5, false);
    assert_int_equal(f->changed, 2);
    bool connected;
    uint64_t pubs;
    AUTO(xv) *data = virtio_console_guest_data(c, &connected, &pubs);
    assert_true(connected);
    assert_int_equal(pubs, 2);
    assert_string_equal(xv_struct_get_str(data, "os/name"), "Nuvem Mini Guest");
    assert_string_equal(xv_struct_get_str(data, "agent/up"), "1");
    /* The host's queue is bounded when the guest takes nothing. */
    xerr *e = NULL;
    unsigned n = 0;
    char val[1000];
    memset(val, 'v', sizeof(val) - 1);
    val[sizeof(val) - 1] = 0;
    for (; n < 100 && !(e = virtio_console_guest_set(c, "k", val)); n++)
        ;
    assert_non_null(e);
    assert_string_equal(e->params[1], "guest agent queue full");
    assert_true(n >= 10 && n <= VIRTIO_CONSOLE_OUT_MAX / 1000);
    xerr_free(e);
    AUTO(xerr) *bad = virtio_console_guest_set(c, "k", "a\nb");
    assert_non_null(bad);
    /* A new machine forgets both directions. */
    virtio_console_machine_reset(c);
    AUTO(xv) *empty = virtio_console_guest_data(c, &connected, &pubs);
    assert_false(connected);
    assert_int_equal(xv_struct_len(empty), 0);
    assert_int_equal(pubs, 3);
    assert_null(virtio_console_guest_set(c, "k", "v"));
    virtio_console_stats st;
    virtio_console_get_stats(c, &st);
    assert_int_equal(st.lines, 4);
    virtio_dev_detach(d);
    virtio_console_free(c);
}

/* Device state through ops->save / ops->load (the transport is virtio.c's business). */
static void test_live_snapshot(void **state)
{
    fix *f = *state;
    virtio_balloon *b = virtio_balloon_new(RAM_SIZE, count_change, f);
    virtio_dev *d = virtio_balloon_dev(b);
    driver_init(f, d);
    uint32_t pfns[] = {0x100, 0x101, 0x300};
    memcpy(f->m.ram + BUF, pfns, sizeof(pfns));
    uint16_t avail0 = 0;
    submit(f, d, VIRTIO_BALLOON_IFQ, &avail0, BUF, sizeof(pfns), false);
    uint32_t actual = 3;
    virtio_mmio_access(d, VIRTIO_MMIO_CONFIG + 4, true, (uint8_t *)&actual, 4);
    sbuf sb = SBUF_INIT;
    d->ops->save(d, &sb);
    virtio_balloon *b2 = virtio_balloon_new(RAM_SIZE, count_change, f);
    virtio_dev *d2 = virtio_balloon_dev(b2);
    assert_int_equal(d2->ops->load(d2, (uint8_t *)sb.data, sb.len), 0);
    virtio_balloon_stats st;
    virtio_balloon_get_stats(b2, &st);
    assert_int_equal(st.inflated_bytes, 3 * 4096);
    assert_int_equal(st.actual_bytes, RAM_SIZE - 3 * 4096);
    assert_int_equal(d2->ops->load(d2, (uint8_t *)sb.data, sb.len - 1), -EINVAL);
    virtio_balloon *b3 = virtio_balloon_new(2 * RAM_SIZE, NULL, NULL); /* another size */
    assert_int_equal(
        virtio_balloon_dev(b3)->ops->load(virtio_balloon_dev(b3), (uint8_t *)sb.data, sb.len),
        -EINVAL);
    sbuf_release(&sb);
    virtio_balloon_free(b3);
    virtio_balloon_free(b2);
    virtio_dev_detach(d);
    virtio_balloon_free(b);

    virtio_console *c = virtio_console_new(NULL, NULL);
    virtio_dev *cd = virtio_console_dev(c);
    driver_init(f, cd);
    const char *msg = "hello\nset os/name Mini\nset k v w\nsync\nset part";
    memcpy(f->m.ram + BUF, msg, strlen(msg));
    uint16_t tx = 0;
    submit(f, cd, VIRTIO_CONSOLE_TXQ, &tx, BUF, (uint32_t)strlen(msg), false);
    assert_null(virtio_console_guest_set(c, "control/refresh", "1"));
    sbuf cs = SBUF_INIT;
    cd->ops->save(cd, &cs);
    virtio_console *c2 = virtio_console_new(NULL, NULL);
    virtio_dev *cd2 = virtio_console_dev(c2);
    assert_int_equal(cd2->ops->load(cd2, (uint8_t *)cs.data, cs.len), 0);
    bool connected;
    uint64_t pubs;
    AUTO(xv) *data = virtio_console_guest_data(c2, &connected, &pubs);
    assert_true(connected);
    assert_string_equal(xv_struct_get_str(data, "os/name"), "Mini");
    assert_string_equal(xv_struct_get_str(data, "k"), "v w");
    /* the partial line goes on where it stopped; the host's write is still queued */
    virtio_dev_attach(cd2, &f->m, 16, no_irq, NULL);
    driver_init(f, cd2);
    uint16_t rx = 0;
    memset(f->m.ram + BUF, 0, 64);
    submit(f, cd2, VIRTIO_CONSOLE_RXQ, &rx, BUF, 64, true);
    assert_string_equal((char *)f->m.ram + BUF, "set control/refresh 1\n");
    memcpy(f->m.ram + BUF + 0x1000, "ial 1\n", 6);
    tx = 0;
    submit(f, cd2, VIRTIO_CONSOLE_TXQ, &tx, BUF + 0x1000, 6, false);
    AUTO(xv) *data2 = virtio_console_guest_data(c2, &connected, &pubs);
    assert_string_equal(xv_struct_get_str(data2, "partial"), "1");
    /* malformed state is refused and leaves the store empty */
    cs.data[5] ^= 0x7f; /* the first key's length */
    assert_int_equal(cd2->ops->load(cd2, (uint8_t *)cs.data, cs.len), -EINVAL);
    AUTO(xv) *data3 = virtio_console_guest_data(c2, &connected, &pubs);
    assert_int_equal(xv_struct_len(data3), 0);
    sbuf_release(&cs);
    virtio_dev_detach(cd2);
    virtio_console_free(c2);
    virtio_dev_detach(cd);
    virtio_console_free(c);
}

/* ---- config and CPU tables ---- */

static vmm_config *parse(const char *json, xerr **e)
{
    *e = NULL;
    return vmm_config_parse(json, strlen(json), e);
}

static void test_live_config(void **state)
{
    xerr *e;
    AUTO(vmm_config) *c = parse("{\"kernel\":\"/k\",\"control\":\"/c\",\"vcpus\":2}", &e);
    assert_non_null(c);
    assert_int_equal(c->vcpus_max, 2);
    assert_true(c->balloon);
    assert_true(c->agent);
    AUTO(vmm_config) *c2 = parse("{\"kernel\":\"/k\",\"control\":\"/c\",\"vcpus\":2,\"vcpus_max\":"
                                 "8,\"balloon\":false,\"agent\":false}",
                                 &e);
    assert_non_null(c2);
    assert_int_equal(c2->vcpus_max, 8);
    assert_false(c2->balloon);
    assert_false(c2->agent);
    vmm_config *bad =
        parse("{\"kernel\":\"/k\",\"control\":\"/c\",\"vcpus\":4,\"vcpus_max\":2}", &e);
    assert_null(bad);
    assert_string_equal(e->params[0], "vcpus_max");
    xerr_free(e);
    bad = parse("{\"kernel\":\"/k\",\"control\":\"/c\",\"vcpus_max\":65}", &e);
    assert_null(bad);
    xerr_free(e);
    bad = parse("{\"kernel\":\"/k\",\"control\":\"/c\",\"agent\":1}", &e);
    assert_null(bad);
    assert_string_equal(e->code, "FIELD_TYPE_ERROR");
    xerr_free(e);
    /* Full slots: by default the devices are left out, asked for they are an error. */
    char json[1024];
    int n = snprintf(json, sizeof(json), "{\"kernel\":\"/k\",\"control\":\"/c\",\"disks\":[");
    for (int i = 0; i < 7; i++)
        n += snprintf(json + n, sizeof(json) - (size_t)n, "%s{\"path\":\"/d%d\"}", i ? "," : "", i);
    snprintf(json + n, sizeof(json) - (size_t)n, "]}");
    AUTO(vmm_config) *c3 = parse(json, &e);
    assert_non_null(c3);
    assert_true(c3->balloon); /* the 8th slot */
    assert_false(c3->agent);
    snprintf(json + n, sizeof(json) - (size_t)n, "],\"agent\":true}");
    bad = parse(json, &e);
    assert_null(bad);
    assert_string_equal(e->params[0], "agent");
    xerr_free(e);
}

static int mem_setup(void **state)
{
    fix *f = xcalloc(1, sizeof(*f));
    f->m.ram = xcalloc(1, 2u << 20);
    f->m.size = f->m.low = 2u << 20;
    *state = f;
    return 0;
}

static int mem_teardown(void **state)
{
    fix *f = *state;
    free(f->m.ram);
    free(f);
    return 0;
}

static void test_hotplug_tables(void **state)
{
    fix *f = *state;
    assert_null(boot_write_mptable_cpus(&f->m, 4, 2));
    uint8_t *t = boot_gpa(&f->m, BOOT_MPTABLE_ADDR, 44 + 4 * 20);
    assert_int_equal(t[44 + 3], 1 | 2); /* BSP */
    assert_int_equal(t[64 + 3], 1);     /* AP 1 enabled */
    assert_int_equal(t[84 + 3], 0);     /* AP 2: hot-pluggable */
    assert_int_equal(t[104 + 1], 3);    /* LAPIC ID 3 listed */
    assert_int_equal(t[104 + 3], 0);
    uint64_t rsdp;
    assert_null(acpi_write_tables_cpus(&f->m, 4, 2, NULL, 0, &rsdp));
    uint8_t *base = boot_gpa(&f->m, rsdp, ACPI_TABLES_SIZE);
    uint64_t xsdt, madt;
    memcpy(&xsdt, base + 24, 8);
    memcpy(&madt, base + (xsdt - rsdp) + 36 + 8, 8);
    uint8_t *p = base + (madt - rsdp);
    assert_memory_equal(p, "APIC", 4);
    uint32_t flags[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(p[44 + 8 * i], 0); /* processor local APIC */
        memcpy(&flags[i], p + 44 + 8 * i + 4, 4);
    }
    assert_int_equal(flags[0], 1);
    assert_int_equal(flags[1], 1);
    assert_int_equal(flags[2], 2); /* online capable */
    assert_int_equal(flags[3], 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_basic),
        cmocka_unit_test(test_agent_garbage),
        cmocka_unit_test(test_agent_bounds),
        cmocka_unit_test(test_agent_format),
        cmocka_unit_test_setup_teardown(test_balloon, setup, teardown),
        cmocka_unit_test_setup_teardown(test_console, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_snapshot, setup, teardown),
        cmocka_unit_test(test_live_config),
        cmocka_unit_test_setup_teardown(test_hotplug_tables, mem_setup, mem_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
