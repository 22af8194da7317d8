/* xapid pieces without HTTP: password hashing, the config table, the where-expression
 * parser, and the dispatcher (session, RBAC, arity, types) over an in-memory store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "mem.h"
#include "xapid.h"

static void test_password_hash(void **state)
{
    AUTOFREE char *h1 = auth_hash_password("s3cret", 1000);
    AUTOFREE char *h2 = auth_hash_password("s3cret", 1000);
    assert_int_equal(strncmp(h1, "$pbkdf2-sha256$1000$", 20), 0);
    assert_string_not_equal(h1, h2); /* salted */
    assert_true(auth_check_hash(h1, "s3cret"));
    assert_false(auth_check_hash(h1, "s3cret "));
    assert_false(auth_check_hash(h1, ""));
    AUTOFREE char *tampered = xstrdup(h1);
    tampered[strlen(tampered) - 3] ^= 1;
    assert_false(auth_check_hash(tampered, "s3cret"));
    assert_false(auth_check_hash("$pbkdf2-sha256$0$AAAA$AAAA", "x"));
    assert_false(auth_check_hash("garbage", "x"));
}

static void test_config_table(void **state)
{
    xapid_config cfg;
    config_defaults(&cfg);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_int_equal(cfg.max_body, 1048576);
    char *msg = NULL;
    assert_int_equal(config_set(&cfg, "max-body", "12", &msg), -EINVAL); /* below minimum */
    free(msg);
    msg = NULL;
    assert_int_equal(config_set(&cfg, "nope", "1", &msg), -EINVAL);
    free(msg);
    /* the commented sample, uncommented, parses back to the defaults */
    char path[] = "/tmp/nuvem-cfg-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    char *buf = NULL;
    size_t blen = 0;
    FILE *mem = open_memstream(&buf, &blen);
    config_print_sample(mem);
    fclose(mem);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
        if (strncmp(line, "# ", 2) == 0 && strchr(line, '=') && !strchr(line, ':') &&
            line[strlen(line) - 1] != '=')
            fprintf(f, "%s\n", line + 2);
    fclose(f);
    free(buf);
    xapid_config back;
    config_defaults(&back);
    assert_int_equal(config_load_file(&back, path, &msg), 0);
    assert_int_equal(back.password_iterations, cfg.password_iterations);
    assert_string_equal(back.listen, cfg.listen);
    unlink(path);
    config_free(&back);
    config_free(&cfg);
}

static void test_where_parser(void **state)
{
    const api_class *c = &api_classes[API_CLASS_VM];
    char *sql = NULL;
    xv *args = NULL;
    assert_null(where_to_sql(c,
                             "field \"name__label\" = \"a\" and not (field \"power_state\" = "
                             "\"Running\" or false)",
                             &sql, &args));
    assert_non_null(strstr(sql, "\"name_label\""));
    assert_int_equal(xv_array_len(args), 2);
    free(sql);
    xv_free(args);
    const char *bad[] = {
        "",         "field",   "field \"nope\" = \"x\"",      "field \"name__label\" \"x\"",
        "true and", "((true)", "field \"name__label\" = \"x", "VBDs"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        xerr *e = where_to_sql(c, bad[i], &sql, &args);
        assert_non_null(e);
        assert_string_equal(e->code, "INVALID_VALUE");
        xerr_free(e);
    }
    /* nesting is bounded */
    char deep[4096];
    memset(deep, '(', 2000);
    strcpy(deep + 2000, "true");
    memset(deep + 2004, ')', 2000);
    deep[4004] = '\0';
    xerr *e = where_to_sql(c, deep, &sql, &args);
    assert_non_null(e);
    xerr_free(e);
}

static xapid X;

static int setup(void **state)
{
    config_defaults(&X.cfg);
    X.cfg.password_iterations = 1000;
    assert_int_equal(store_open(":memory:", &X.st), 0);
    assert_int_equal(auth_init(&X), 0);
    assert_int_equal(bootstrap(&X), 0);
    assert_int_equal(sessions_init(&X), 0);
    assert_int_equal(tasks_init(&X), 0);
    assert_int_equal(auth_set_password(&X, "root", "pw", "pool-admin"), 0);
    assert_int_equal(auth_set_password(&X, "ro", "pw", "read-only"), 0);
    return 0;
}

static int teardown(void **state)
{
    tasks_stop(&X);
    sessions_free(&X);
    store_close(X.st);
    free(X.host_ref);
    free(X.pool_ref);
    config_free(&X.cfg);
    return 0;
}

static xv *call(const char *method, xerr **err, int n, ...)
{
    AUTO(xv) *params = xv_new_array();
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        xv_array_append(params, va_arg(ap, xv *));
    va_end(ap);
    *err = NULL;
    return xapid_dispatch(&X, method, params, false, err);
}

static void test_dispatch(void **state)
{
    xerr *e;
    AUTO(xv) *s =
        call("session.login_with_password", &e, 2, xv_new_string("root"), xv_new_string("pw"));
    assert_null(e);
    AUTO(xv) *hosts = call("host.get_all", &e, 1, xv_copy(s));
    assert_null(e);
    assert_int_equal(xv_array_len(hosts), 1);
    /* ints as decimal strings (Python sends them so) are accepted for int params */
    AUTO(xv) *msg =
        call("message.create", &e, 6, xv_copy(s), xv_new_string("N"), xv_new_string("3"),
             xv_new_string("pool"), xv_new_string(""), xv_new_string("b"));
    assert_null(e);
    AUTO(xv) *prio = call("message.get_priority", &e, 2, xv_copy(s), xv_copy(msg));
    assert_int_equal(prio->u.i, 3);
    AUTO(xv) *cls = call("message.get_cls", &e, 2, xv_copy(s), xv_copy(msg));
    assert_string_equal(xv_str(cls), "Pool"); /* enums are case-insensitive, stored canonical */
    AUTO(xv) *r1 = call("host.get_all", &e, 0);
    assert_null(r1);
    assert_string_equal(e->code, "MESSAGE_PARAMETER_COUNT_MISMATCH");
    xerr_free(e);
    AUTO(xv) *r2 = call("host_get_all", &e, 1, xv_copy(s)); /* Class_message spelling */
    assert_null(e);
    assert_int_equal(xv_array_len(r2), 1);
    AUTO(xv) *ro =
        call("session.login_with_password", &e, 2, xv_new_string("ro"), xv_new_string("pw"));
    assert_null(e);
    AUTO(xv) *r3 = call("message.destroy", &e, 2, xv_copy(ro), xv_copy(msg));
    assert_null(r3);
    assert_string_equal(e->code, "RBAC_PERMISSION_DENIED");
    assert_string_equal(e->params[0], "message.destroy");
    xerr_free(e);
    AUTO(xv) *r4 = call("message.destroy", &e, 2, xv_copy(s), xv_copy(msg));
    assert_null(e);
    assert_non_null(r4);
    AUTO(xv) *bad = xv_new_stringn("\xff", 1);
    AUTO(xv) *r5 = call("VM.get_by_name_label", &e, 2, xv_copy(s), xv_copy(bad));
    assert_null(r5);
    assert_string_equal(e->code, "INVALID_VALUE");
    xerr_free(e);
    AUTO(xv) *r6 = call("system.listMethods", &e, 0);
    assert_true(xv_array_len(r6) > 500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_password_hash),
        cmocka_unit_test(test_config_table),
        cmocka_unit_test(test_where_parser),
        cmocka_unit_test_setup_teardown(test_dispatch, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
