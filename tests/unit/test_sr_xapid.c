/* xapid's storage hooks and handlers without HTTP: the first-start local SR, and VDI
 * operations from several threads on one SR staying consistent with the disk. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_start_local_sr),
        cmocka_unit_test(test_concurrent_vdi_ops),
        cmocka_unit_test(test_attach_blocks_changes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
