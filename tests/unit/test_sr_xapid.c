/* xapid's storage hooks and handlers without HTTP: the first-start local SR, VDI operations
 * from several threads on one SR staying consistent with the disk, and a shared SR's PBDs in
 * a pool of two hosts. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_handlers.h"
#include "log.h"
#include "mem.h"
#include "xapid.h"

#define MiB (1ll << 20)

static char tmpdir[64];
static xapid X;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    (void)state;
    log_set_level(LOG_LVL_WARN);
    strcpy(tmpdir, access("/dev/shm", W_OK) == 0 ? "/dev/shm/test_sr_xapid.XXXXXX"
                                                 : "/tmp/test_sr_xapid.XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    X.cfg.state_dir = xstrdup(tmpdir);
    if (store_open(":memory:", &X.st) < 0 || bootstrap(&X) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    xapid_storage_stop(&X);
    store_close(X.st);
    free(X.cfg.state_dir);
    free(X.host_ref);
    free(X.pool_ref);
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static xv *call_record(const api_class *c, const char *ref)
{
    (void)c;
    api_ctx ctx = {.x = &X};
    xv *out = NULL;
    const api_message *m = NULL;
    AUTOFREE char *name = xasprintf("%s.get_record", c->name);
    m = api_message_lookup(name);
    assert_non_null(m);
    AUTO(xv) *arg = xv_new_string(ref);
    const xv *args[] = {arg};
    xerr *e = xapid_invoke(&ctx, m, args, &out);
    assert_null(e);
    return out;
}

static const char *fstr(const xv *rec, const char *k)
{
    const char *s = xv_struct_get_str(rec, k);
    return s ? s : "";
}

static char *default_sr(void)
{
    AUTO(xv) *pool = call_record(&api_classes[API_CLASS_pool], X.pool_ref);
    return xstrdup(fstr(pool, "default_SR"));
}

static void test_first_start_local_sr(void **state)
{
    (void)state;
    assert_null(xapid_storage_init(&X));
    AUTOFREE char *sr = default_sr();
    assert_string_not_equal(sr, "OpaqueRef:NULL");
    AUTO(xv) *rec = call_record(&api_classes[API_CLASS_SR], sr);
    assert_string_equal(fstr(rec, "type"), "file");
    assert_string_equal(fstr(rec, "name_label"), "Local storage");
    AUTO(xv) *pool = call_record(&api_classes[API_CLASS_pool], X.pool_ref);
    assert_string_equal(fstr(pool, "suspend_image_SR"), sr);
    const xv *pbds = xv_struct_get(rec, "PBDs");
    assert_int_equal(xv_array_len(pbds), 1);
    AUTO(xv) *pbd = call_record(&api_classes[API_CLASS_PBD], xv_str(xv_array_get(pbds, 0)));
    assert_true(xv_struct_get(pbd, "currently_attached")->u.b);
    const char *loc = xv_struct_get_str(xv_struct_get(pbd, "device_config"), "location");
    AUTOFREE char *want = xasprintf("%s/sr/%s", tmpdir, fstr(rec, "uuid"));
    assert_string_equal(loc, want);
    struct stat st;
    assert_int_equal(stat(loc, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    /* a later start keeps it */
    assert_null(xapid_storage_init(&X));
    AUTOFREE char *again = default_sr();
    assert_string_equal(again, sr);
}

struct worker {
    const char *sr;
    int id;
    int made;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    api_ctx ctx = {.x = &X};
    for (int i = 0; i < 4; i++) {
        AUTO(xv) *args = xv_new_struct();
        xv_struct_set(args, "SR", xv_new_string(w->sr));
        xv_struct_set(args, "virtual_size", xv_new_int(2 * MiB));
        xv_struct_set(args, "type", xv_new_string("user"));
        xv *vdi = NULL;
        xerr *e = api_VDI_create(&ctx, args, &vdi);
        if (e) {
            xerr_free(e);
            continue;
        }
        xv *snap = NULL;
        e = api_VDI_snapshot(&ctx, xv_str(vdi), NULL, &snap);
        if (!e) {
            w->made += 2;
            if (i % 2 == 0) {
                e = api_VDI_destroy(&ctx, xv_str(snap));
                w->made -= e ? 0 : 1;
            }
        }
        xerr_free(e);
        xv_free(snap);
        xv_free(vdi);
        e = api_SR_scan(&ctx, w->sr);
        xerr_free(e);
    }
    return NULL;
}

static size_t count_vhd(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strlen(de->d_name) == 40 && !strcmp(de->d_name + 36, ".vhd"))
            n++;
    closedir(d);
    return n;
}

static void test_concurrent_vdi_ops(void **state)
{
    (void)state;
    AUTOFREE char *sr = default_sr();
    enum { N = 4 };
    pthread_t th[N];
    struct worker w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){.sr = sr, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    int made = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        made += w[i].made;
    }
    api_ctx ctx = {.x = &X};
    assert_null(api_SR_scan(&ctx, sr));
    AUTO(xv) *rec = call_record(&api_classes[API_CLASS_SR], sr);
    const xv *vdis = xv_struct_get(rec, "VDIs");
    /* every visible VDI made has its record; base copies have records too and files agree */
    size_t managed = 0;
    for (size_t i = 0; i < xv_array_len(vdis); i++) {
        AUTO(xv) *v = call_record(&api_classes[API_CLASS_VDI], xv_str(xv_array_get(vdis, i)));
        managed += xv_struct_get(v, "managed")->u.b;
    }
    assert_int_equal(managed, (size_t)made);
    AUTOFREE char *dir = xasprintf("%s/sr/%s", tmpdir, fstr(rec, "uuid"));
    assert_int_equal(count_vhd(dir), xv_array_len(vdis));
    assert_int_equal(xv_struct_get(rec, "virtual_allocation")->u.i, (int64_t)made * 2 * MiB);
}

static void assert_code(xerr *e, const char *code)
{
    assert_non_null(e);
    assert_string_equal(e->code, code);
    xerr_free(e);
}

static void test_attach_blocks_changes(void **state)
{
    (void)state;
    AUTOFREE char *sr = default_sr();
    api_ctx ctx = {.x = &X};
    AUTO(xv) *args = xv_new_struct();
    xv_struct_set(args, "SR", xv_new_string(sr));
    xv_struct_set(args, "virtual_size", xv_new_int(4 * MiB));
    xv_struct_set(args, "type", xv_new_string("user"));
    AUTO(xv) *vdi = NULL;
    assert_null(api_VDI_create(&ctx, args, &vdi));
    const char *v = xv_str(vdi);
    AUTOFREE char *path = NULL;
    const char *fmt = NULL;
    assert_null(xapid_storage_vdi_attach(&X, v, true, &path, &fmt));
    assert_string_equal(fmt, "vhd");
    AUTO(xv) *rec = call_record(&api_classes[API_CLASS_VDI], v);
    assert_non_null(strstr(path, fstr(rec, "uuid")));
    assert_int_equal(access(path, R_OK | W_OK), 0);
    assert_code(api_VDI_destroy(&ctx, v), "VDI_IN_USE");
    assert_code(api_VDI_resize(&ctx, v, 8 * MiB), "VDI_IN_USE");
    xv *snap = NULL;
    assert_code(api_VDI_snapshot(&ctx, v, NULL, &snap), "VDI_IN_USE");
    assert_null(xapid_storage_vdi_detach(&X, v));
    assert_null(xapid_storage_vdi_detach(&X, v)); /* idempotent */
    assert_null(api_VDI_resize(&ctx, v, 8 * MiB));
    assert_null(api_VDI_destroy(&ctx, v));
}

/* A shared SR in a pool of two hosts: a PBD per host, only this host's plugged here; the
 * other host's PBD is its own to plug; set_shared follows XAPI's rules. */
static void test_shared_sr_per_host(void **state)
{
    (void)state;
    api_ctx ctx = {.x = &X};
    /* a second host record, as a pool member would have */
    const api_class *hc = &api_classes[API_CLASS_host];
    AUTO(xv) *hrec = xv_new_struct();
    for (size_t i = 0; i < hc->nfields; i++)
        if (hc->fields[i].derived_cls < 0)
            xv_struct_set(hrec, hc->fields[i].name, api_field_default(&hc->fields[i]));
    xv_struct_set(hrec, "name_label", xv_new_string("member"));
    AUTOFREE char *other = NULL;
    assert_null(store_create(X.st, hc, hrec, &other));

    AUTOFREE char *export = xasprintf("%s/export", tmpdir);
    assert_int_equal(mkdir(export, 0700), 0);
    AUTO(xv) *dc = xv_new_struct();
    xv_struct_set(dc, "path", xv_new_string(export));
    AUTO(xv) *sr = NULL;
    assert_null(
        api_SR_create(&ctx, X.host_ref, dc, 0, "pool SR", "", "shared", "", true, NULL, &sr));
    AUTO(xv) *rec = call_record(&api_classes[API_CLASS_SR], xv_str(sr));
    const xv *pbds = xv_struct_get(rec, "PBDs");
    assert_int_equal(xv_array_len(pbds), 2);
    const char *mine = NULL, *theirs = NULL;
    for (size_t i = 0; i < 2; i++) {
        const char *ref = xv_str(xv_array_get(pbds, i));
        AUTO(xv) *p = call_record(&api_classes[API_CLASS_PBD], ref);
        bool here = !strcmp(fstr(p, "host"), X.host_ref);
        assert_int_equal(xv_struct_get(p, "currently_attached")->u.b, here);
        assert_string_equal(xv_struct_get_str(xv_struct_get(p, "device_config"), "path"), export);
        if (here)
            mine = ref;
        else
            theirs = ref;
    }
    assert_non_null(mine);
    assert_non_null(theirs);
    AUTOFREE char *dir = xasprintf("%s/%s", export, fstr(rec, "uuid"));
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_code(api_PBD_plug(&ctx, theirs), "OPERATION_NOT_ALLOWED");
    /* two PBDs: it cannot stop being shared */
    assert_code(api_SR_set_shared(&ctx, xv_str(sr), false), "SR_HAS_MULTIPLE_PBDS");
    assert_null(api_SR_set_shared(&ctx, xv_str(sr), true));
    /* a local SR lacks the member's PBD: it cannot become shared */
    AUTOFREE char *local = default_sr();
    assert_code(api_SR_set_shared(&ctx, local, true), "SR_NO_PBDS");
    assert_null(api_SR_set_shared(&ctx, local, false));
    /* destroyed once every PBD is unplugged (the member's is not attached) */
    assert_code(api_SR_destroy(&ctx, xv_str(sr)), "SR_HAS_PBD");
    assert_null(api_PBD_unplug(&ctx, mine));
    assert_null(api_PBD_unplug(&ctx, theirs)); /* not attached: nothing to do */
    assert_null(api_SR_destroy(&ctx, xv_str(sr)));
    assert_int_equal(stat(dir, &st), -1);
    assert_int_equal(stat(export, &st), 0);
}

/* While the collector merges one VDI's chain (its hook holds the merge open), an attach of
 * that VDI waits without holding up the SR: a snapshot of another VDI of the same SR goes
 * through meanwhile. */
/* sr-priv.h's seam, declared here: its header's typedef would clash with the locals named sr */
struct sr;
extern void (*sr_test_merge_hook)(struct sr *s, const char *parent, const char *child);

struct merge_probe {
    const char *mine, *other;
    int calls;
    pthread_t waiter, snapper;
    volatile int waiter_done, snap_done;
    xerr *waiter_err, *snap_err;
    int waiter_done_during, snap_done_during;
    volatile int hook_done;
};
static struct merge_probe *probe_;

static void *probe_waiter(void *arg)
{
    struct merge_probe *p = arg;
    char *path = NULL;
    p->waiter_err = xapid_storage_vdi_attach(&X, p->mine, false, &path, NULL);
    if (!p->waiter_err)
        xerr_free(xapid_storage_vdi_detach(&X, p->mine));
    free(path);
    p->waiter_done = 1;
    return NULL;
}

static void *probe_snapper(void *arg)
{
    struct merge_probe *p = arg;
    api_ctx ctx = {.x = &X};
    xv *snap = NULL;
    p->snap_err = api_VDI_snapshot(&ctx, p->other, NULL, &snap);
    xv_free(snap);
    p->snap_done = 1;
    return NULL;
}

static void probe_hook(struct sr *s, const char *parent, const char *child)
{
    (void)s, (void)parent, (void)child;
    struct merge_probe *p = probe_;
    if (!p || p->calls++)
        return;
    assert_int_equal(pthread_create(&p->waiter, NULL, probe_waiter, p), 0);
    usleep(200 * 1000); /* let it reach its wait */
    assert_int_equal(pthread_create(&p->snapper, NULL, probe_snapper, p), 0);
    for (int i = 0; i < 1000 && !p->snap_done; i++) /* bounded: 10 s */
        usleep(10 * 1000);
    p->snap_done_during = p->snap_done;
    p->waiter_done_during = p->waiter_done;
    p->hook_done = 1;
}

static xv *new_vdi(api_ctx *ctx, const char *sr)
{
    AUTO(xv) *args = xv_new_struct();
    xv_struct_set(args, "SR", xv_new_string(sr));
    xv_struct_set(args, "virtual_size", xv_new_int(4 * MiB));
    xv_struct_set(args, "type", xv_new_string("user"));
    xv *vdi = NULL;
    assert_null(api_VDI_create(ctx, args, &vdi));
    return vdi;
}

static void test_merge_blocks_only_its_chain(void **state)
{
    (void)state;
    AUTOFREE char *sr = default_sr();
    api_ctx ctx = {.x = &X};
    AUTO(xv) *a = new_vdi(&ctx, sr);
    AUTO(xv) *o = new_vdi(&ctx, sr);
    AUTO(xv) *s1 = NULL;
    AUTO(xv) *s2 = NULL;
    assert_null(api_VDI_snapshot(&ctx, xv_str(a), NULL, &s1));
    assert_null(api_VDI_snapshot(&ctx, xv_str(a), NULL, &s2));
    struct merge_probe p = {.mine = xv_str(a), .other = xv_str(o)};
    probe_ = &p;
    sr_test_merge_hook = probe_hook;
    /* a's tree now has an inner base copy to merge: the background collector runs it */
    assert_null(api_VDI_destroy(&ctx, xv_str(s1)));
    for (int i = 0; i < 3000 && !p.hook_done; i++) /* bounded: 30 s */
        usleep(10 * 1000);
    assert_true(p.hook_done);
    pthread_join(p.snapper, NULL);
    pthread_join(p.waiter, NULL);
    sr_test_merge_hook = NULL;
    probe_ = NULL;
    assert_int_equal(p.snap_done_during, 1);
    assert_null(p.snap_err);
    assert_int_equal(p.waiter_done_during, 0);
    assert_null(p.waiter_err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_start_local_sr),
        cmocka_unit_test(test_concurrent_vdi_ops),
        cmocka_unit_test(test_attach_blocks_changes),
        cmocka_unit_test(test_merge_blocks_only_its_chain),
        cmocka_unit_test(test_shared_sr_per_host),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
