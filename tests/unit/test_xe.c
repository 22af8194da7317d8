/* Unit tests for cli/ (xe): argument parsing, ~/.xe and XE_EXTRA_ARGS, output formatting
 * byte for byte, error texts, the command table, errors that need no server. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "mem.h"
#include "vm_cmds.h"
#include "xe.h"

/* Parses argv (a NULL-terminated list after "xe") with the given rc text and env. */
static enum xe_parse_rc parse(xe_cmdline *cl, const char *rc, const char *env, char **errout, ...)
{
    char *argv[64] = {"xe"};
    int argc = 1;
    va_list ap;
    va_start(ap, errout);
    for (char *a; (a = va_arg(ap, char *));)
        argv[argc++] = a;
    va_end(ap);
    size_t len = 0;
    char *buf = NULL;
    FILE *err = open_memstream(&buf, &len);
    enum xe_parse_rc r = xe_cmdline_parse(cl, argc, argv, rc, env, err);
    fclose(err);
    if (errout)
        *errout = buf;
    else
        free(buf);
    return r;
}

static void test_parse_basic(void **state)
{
    xe_cmdline cl;
    assert_int_equal(parse(&cl, NULL, NULL, NULL, "vm-list", "-s", "h1", "-p", "8080", "-u",
                           "admin", "-pw", "secret", "name-label=a=b c", "--minimal",
                           "other-config:k:x=v:1", "bare", NULL),
                     XE_PARSE_OK);
    assert_string_equal(cl.cmd, "vm-list");
    assert_string_equal(cl.o.server, "h1");
    assert_int_equal(cl.o.port, 8080);
    assert_string_equal(cl.o.username, "admin");
    assert_string_equal(cl.o.password, "secret");
    assert_false(cl.o.nossl);
    assert_int_equal(cl.params.n, 4);
    /* '=' inside a value stays there; map keys keep their colons */
    assert_string_equal(xe_params_get(&cl.params, "name-label"), "a=b c");
    assert_string_equal(xe_params_get(&cl.params, "minimal"), "true");
    assert_string_equal(xe_params_get(&cl.params, "other-config:k:x"), "v:1");
    assert_string_equal(xe_params_get(&cl.params, "bare"), "");
    xe_cmdline_free(&cl);
}

static void test_parse_edge_cases(void **state)
{
    xe_cmdline cl;
    /* the shell removed the user's quoting; quotes that reach xe are part of the value */
    assert_int_equal(parse(&cl, NULL, NULL, NULL, "vm-param-set", "name-label=\"a b\"",
                           "name-description='x'", "other-config:a=b=c", "k=", "=v",
                           "PV-args=console=hvc0 root=/dev/xvda", NULL),
                     XE_PARSE_OK);
    assert_string_equal(xe_params_get(&cl.params, "name-label"), "\"a b\"");
    assert_string_equal(xe_params_get(&cl.params, "name-description"), "'x'");
    assert_string_equal(xe_params_get(&cl.params, "other-config:a"), "b=c");
    assert_string_equal(xe_params_get(&cl.params, "k"), "");
    assert_string_equal(xe_params_get(&cl.params, ""), "v");
    assert_string_equal(xe_params_get(&cl.params, "PV-args"), "console=hvc0 root=/dev/xvda");
    xe_cmdline_free(&cl);
    /* client switches anywhere on the line; "-u" after the command too */
    assert_int_equal(
        parse(&cl, NULL, NULL, NULL, "vm-list", "-u", "bob", "--nossl", "--force", NULL),
        XE_PARSE_OK);
    assert_string_equal(cl.o.username, "bob");
    assert_true(cl.o.nossl);
    assert_string_equal(xe_params_get(&cl.params, "force"), "true");
    assert_int_equal(cl.params.n, 1);
    xe_cmdline_free(&cl);
    /* our TLS switches and their key= forms, also from ~/.xe */
    assert_int_equal(parse(&cl, "fingerprint=ab\ninsecure=true\n", NULL, NULL, "vm-list",
                           "--cafile", "/ca.pem", NULL),
                     XE_PARSE_OK);
    assert_string_equal(cl.o.cafile, "/ca.pem");
    assert_string_equal(cl.o.fingerprint, "ab");
    assert_true(cl.o.insecure);
    xe_cmdline_free(&cl);
}

static void test_parse_defaults_and_keywords(void **state)
{
    xe_cmdline cl;
    assert_int_equal(parse(&cl, NULL, NULL, NULL, "host-list", "server=s2", "port=81", "nossl=true",
                           "username=u", "password=p", NULL),
                     XE_PARSE_OK);
    assert_string_equal(cl.o.server, "s2");
    assert_int_equal(cl.o.port, 81);
    assert_true(cl.o.nossl);
    assert_int_equal(cl.params.n, 0);
    xe_cmdline_free(&cl);
    assert_int_equal(parse(&cl, NULL, NULL, NULL, "host-list", NULL), XE_PARSE_OK);
    assert_string_equal(cl.o.server, "127.0.0.1");
    assert_string_equal(cl.o.username, "root");
    assert_string_equal(cl.o.password, "null");
    assert_int_equal(cl.o.port, -1);
    xe_cmdline_free(&cl);
    /* the last of two settings in one source wins */
    assert_int_equal(parse(&cl, NULL, NULL, NULL, "-s", "a", "host-list", "-s", "b", NULL),
                     XE_PARSE_OK);
    assert_string_equal(cl.o.server, "b");
    xe_cmdline_free(&cl);
}

static void test_parse_priority(void **state)
{
    xe_cmdline cl;
    const char *rc = "server=rc-server\nport=1\n\nusername=rcuser\nparams=uuid\n";
    assert_int_equal(parse(&cl, rc, "port=2,server=env\\,x", NULL, "pool-list", NULL), XE_PARSE_OK);
    assert_string_equal(cl.o.server, "env,x");
    assert_int_equal(cl.o.port, 2);
    assert_string_equal(cl.o.username, "rcuser");
    /* unknown rc keys become command params */
    assert_string_equal(xe_params_get(&cl.params, "params"), "uuid");
    xe_cmdline_free(&cl);
    assert_int_equal(parse(&cl, rc, "port=2", NULL, "pool-list", "-p", "3", NULL), XE_PARSE_OK);
    assert_int_equal(cl.o.port, 3);
    xe_cmdline_free(&cl);
    /* XE_EXTRA_ARGS may carry the command's params, even the command itself */
    assert_int_equal(parse(&cl, NULL, "vm-list,--minimal", NULL, NULL), XE_PARSE_OK);
    assert_string_equal(cl.cmd, "vm-list");
    assert_string_equal(xe_params_get(&cl.params, "minimal"), "true");
    xe_cmdline_free(&cl);
}

static void test_parse_bad_rc(void **state)
{
    xe_cmdline cl;
    char *err = NULL;
    assert_int_equal(parse(&cl, "server=x\nnot a setting\n", NULL, &err, "host-list", NULL),
                     XE_PARSE_OK);
    assert_string_equal(err, "Error parsing rc file. No defaults loaded\n");
    assert_string_equal(cl.o.server, "127.0.0.1");
    free(err);
    xe_cmdline_free(&cl);
}

static void test_parse_usage_and_errors(void **state)
{
    xe_cmdline cl;
    char *err = NULL;
    assert_int_equal(parse(&cl, NULL, NULL, NULL, NULL), XE_PARSE_USAGE);
    xe_cmdline_free(&cl);
    assert_int_equal(parse(&cl, NULL, NULL, NULL, "vm-list", "--help", NULL), XE_PARSE_USAGE);
    xe_cmdline_free(&cl);
    assert_int_equal(parse(&cl, NULL, NULL, NULL, "-version", NULL), XE_PARSE_VERSION);
    xe_cmdline_free(&cl);
    assert_int_equal(parse(&cl, NULL, NULL, &err, "vm-list", "-p", "http", NULL), XE_PARSE_USAGE);
    assert_string_equal(err, "Port number must be an integer (0-65535)\n");
    free(err);
    xe_cmdline_free(&cl);
    assert_int_equal(parse(&cl, NULL, NULL, NULL, "name-label=x", "vm-list", NULL), XE_PARSE_OK);
    assert_true(cl.syntax_error);
    xe_cmdline_free(&cl);
    assert_int_equal(parse(&cl, NULL, NULL, NULL, "vm-list", "-x", NULL), XE_PARSE_OK);
    assert_true(cl.syntax_error);
    xe_cmdline_free(&cl);
    assert_int_equal(parse(&cl, NULL, NULL, &err, "-pwf", "/nonexistent/x", "vm-list", NULL),
                     XE_PARSE_FAIL);
    assert_string_equal(err, "Error opening password file '/nonexistent/x'\n");
    free(err);
    xe_cmdline_free(&cl);
}

static void test_parse_password_file(void **state)
{
    char path[] = "/tmp/xe-test-pwf-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "alice\ns3cret\n", 13), 13);
    close(fd);
    xe_cmdline cl;
    assert_int_equal(parse(&cl, NULL, NULL, NULL, "-pwf", path, "vm-list", NULL), XE_PARSE_OK);
    assert_string_equal(cl.o.username, "alice");
    assert_string_equal(cl.o.password, "s3cret");
    xe_cmdline_free(&cl);
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "alice\n", 6), 6);
    close(fd);
    char *err = NULL;
    assert_int_equal(parse(&cl, NULL, NULL, &err, "-pwf", path, "vm-list", NULL), XE_PARSE_FAIL);
    assert_non_null(strstr(err, "password file format"));
    free(err);
    xe_cmdline_free(&cl);
    unlink(path);
}

static void test_split_extra_args(void **state)
{
    char **v = xe_split_extra_args("a=1,,b=x\\,y,c");
    assert_string_equal(v[0], "a=1");
    assert_string_equal(v[1], "b=x,y");
    assert_string_equal(v[2], "c");
    assert_null(v[3]);
    xe_strv_free(v);
    v = xe_split_extra_args("");
    assert_null(v[0]);
    xe_strv_free(v);
    v = xe_split_extra_args(NULL);
    assert_null(v[0]);
    xe_strv_free(v);
}

static void test_fingerprint(void **state)
{
    unsigned char fp[32];
    const char *hex = "C5:C3:E0:CF:D4:DE:C0:69:E6:BE:F4:9E:9C:D0:08:4C:E9:A8:EE:61:FB:20:37:52:D5:"
                      "C4:68:D2:83:FE:C4:FD";
    assert_true(xe_parse_fingerprint(hex, fp));
    assert_int_equal(fp[0], 0xc5);
    assert_int_equal(fp[31], 0xfd);
    assert_true(xe_parse_fingerprint("sha256 Fingerprint=c5c3e0cfd4dec069e6bef49e9cd0084ce9a8ee61f"
                                     "b203752d5c468d283fec4fd",
                                     fp));
    assert_false(xe_parse_fingerprint("c5c3", fp));
    assert_false(xe_parse_fingerprint("zz", fp));
    assert_false(xe_parse_fingerprint("", fp));
}

static void test_format_record(void **state)
{
    const char *keys[] = {"uuid ( RO)", "name-label ( RW)", "power-state ( RO)"};
    const char *vals[] = {"0f3c8a52-6d6e-4b6c-9a0e-1d2b3c4d5e6f", "web01", "running"};
    sbuf b = SBUF_INIT;
    xe_format_record(&b, 3, keys, vals);
    assert_string_equal(b.data, "uuid ( RO)           : 0f3c8a52-6d6e-4b6c-9a0e-1d2b3c4d5e6f\n"
                                "     name-label ( RW): web01\n"
                                "    power-state ( RO): running\n");
    sbuf_release(&b);
    sbuf e = SBUF_INIT;
    xe_format_record(&e, 0, NULL, NULL);
    assert_string_equal(e.data, "\n");
    sbuf_release(&e);
}

static void test_escape_minimal(void **state)
{
    AUTOFREE char *a = xe_escape_minimal("a,b\\c");
    assert_string_equal(a, "a\\,b\\\\c");
    AUTOFREE char *e = xe_escape_minimal("");
    assert_string_equal(e, "");
}

static char *fake_resolve(void *ud, int cls, const char *ref)
{
    (void)ud;
    (void)cls;
    if (strcmp(ref, "OpaqueRef:good") == 0)
        return xstrdup("11111111-2222-3333-4444-555555555555");
    return NULL;
}

static const api_type *field_type(const char *cls, const char *field)
{
    const api_class *c = api_class_by_name(cls);
    assert_non_null(c);
    int i = api_field_index(c, field);
    assert_true(i >= 0);
    return c->fields[i].type;
}

static char *fmt(const api_type *t, const xv *v)
{
    sbuf b = SBUF_INIT;
    xe_format_value(&b, t, v, fake_resolve, NULL);
    return sbuf_steal(&b, NULL);
}

static void test_format_values(void **state)
{
    AUTO(xv) *set = xv_new_array();
    xv_array_append(set, xv_new_string("a"));
    xv_array_append(set, xv_new_string("b c"));
    AUTOFREE char *s1 = fmt(field_type("pool", "tags"), set);
    assert_string_equal(s1, "a; b c");

    AUTO(xv) *map = xv_new_struct();
    xv_struct_set(map, "k", xv_new_string("v"));
    xv_struct_set(map, "k2", xv_new_string("v2"));
    AUTOFREE char *s2 = fmt(field_type("pool", "other_config"), map);
    assert_string_equal(s2, "k: v; k2: v2");

    AUTO(xv) *empty = xv_new_struct();
    AUTOFREE char *s3 = fmt(field_type("pool", "other_config"), empty);
    assert_string_equal(s3, "");

    AUTO(xv) *f = xv_new_float(0.25);
    AUTOFREE char *s4 = fmt(field_type("task", "progress"), f);
    assert_string_equal(s4, "0.250");

    AUTO(xv) *bo = xv_new_bool(true);
    AUTOFREE char *s5 = fmt(field_type("pool", "ha_enabled"), bo);
    assert_string_equal(s5, "true");

    AUTO(xv) *good = xv_new_string("OpaqueRef:good");
    AUTOFREE char *s6 = fmt(field_type("pool", "master"), good);
    assert_string_equal(s6, "11111111-2222-3333-4444-555555555555");
    AUTO(xv) *null = xv_new_string("OpaqueRef:NULL");
    AUTOFREE char *s7 = fmt(field_type("pool", "master"), null);
    assert_string_equal(s7, "<not in database>");

    AUTO(xv) *ps = xv_new_string("Running");
    AUTOFREE char *s8 = fmt(field_type("VM", "power_state"), ps);
    assert_string_equal(s8, "running");

    AUTO(xv) *i = xv_new_string("268435456");
    AUTOFREE char *s9 = fmt(field_type("VM", "memory_static_max"), i);
    assert_string_equal(s9, "268435456");

    AUTO(xv) *dt = xv_new_datetime("20240131T09:05:00Z");
    AUTOFREE char *s10 = fmt(field_type("task", "created"), dt);
    assert_string_equal(s10, "20240131T09:05:00Z");

    /* sets of refs resolve each member */
    AUTO(xv) *refs = xv_new_array();
    xv_array_append(refs, xv_new_string("OpaqueRef:good"));
    xv_array_append(refs, xv_new_string("OpaqueRef:gone"));
    AUTOFREE char *s11 = fmt(field_type("host", "resident_VMs"), refs);
    assert_string_equal(s11, "11111111-2222-3333-4444-555555555555; <not in database>");
}

static char *err_text(xerr *e)
{
    sbuf b = SBUF_INIT;
    xe_format_api_error(&b, e);
    xerr_free(e);
    return sbuf_steal(&b, NULL);
}

static void test_error_texts(void **state)
{
    AUTOFREE char *a = err_text(xerr_new("UUID_INVALID", "VM", "abc"));
    assert_string_equal(a, "The uuid you supplied was invalid.\ntype: VM\nuuid: abc\n");
    AUTOFREE char *b = err_text(xerr_new("SOMETHING_NEW", "p1", "p2"));
    assert_string_equal(b, "Error code: SOMETHING_NEW\nError parameters: p1, p2\n");
    AUTOFREE char *c = err_text(xerr_new("SOMETHING_NEW"));
    assert_string_equal(c, "Error code: SOMETHING_NEW\nError parameters: \n");
    /* too few / too many params, as XCP pretty-prints them */
    AUTOFREE char *d = err_text(xerr_new("VM_BAD_POWER_STATE", "vm1"));
    assert_non_null(strstr(d, "\nvm: vm1\nexpected: <unknown>\nactual: <unknown>\n"));
    AUTOFREE char *e = err_text(xerr_new("TASK_CANCELLED", "t", "extra"));
    assert_string_equal(e, "The request was asynchronously canceled.\ntask: t\n<extra>: extra\n");
    /* errors.json: XCP's param names where they differ from the API's (cli_params) */
    AUTOFREE char *f = err_text(xerr_new("HOST_IS_SLAVE", "10.0.0.1"));
    assert_non_null(strstr(f, "\nMaster IP address: 10.0.0.1\n"));
    /* cli_only: XCP errors xe prints that are not in the server's catalogue */
    assert_null(api_error_lookup("VM_IS_TEMPLATE"));
    AUTOFREE char *g = err_text(xerr_new("VM_IS_TEMPLATE", "v"));
    assert_string_equal(g, "The operation attempted is not valid for a template VM\nvm: v\n");
}

static const xe_col *find_col(const xe_cols *cols, const char *name)
{
    for (size_t i = 0; i < cols->n; i++)
        if (strcmp(cols->c[i].name, name) == 0)
            return &cols->c[i];
    return NULL;
}

static void test_views(void **state)
{
    /* Tags come from the setters the API has; "ro" where XCP offers none although the API
     * does (host license-server, SR sm-config). */
    static const struct {
        const char *view, *col, *tag;
    } want[] = {
        {"pool", "uuid", " RO"},       {"pool", "name-label", " RW"},
        {"pool", "master", " RO"},     {"pool", "other-config", "MRW"},
        {"pool", "tags", "SRW"},       {"pool", "allowed-operations", "SRO"},
        {"pool", "blobs", " RO"},      {"pool", "current-operations", "SRO"},
        {"task", "error_info", " RO"}, {"task", "other-config", "MRW"},
        {"task", "name-label", " RO"}, {"vm", "memory-actual", " RO"},
        {"vm", "os-version", "MRO"},   {"vm", "power-state", " RO"},
        {"vbd", "vm-uuid", " RO"},     {"host", "hostname", " RO"},
        {"secret", "uuid", " RO"},     {"vbd", "current-operations", "SRO"},
        {"host", "name-label", " RW"}, {"host", "license-server", "MRO"},
        {"sr", "sm-config", "MRO"},    {"vm-metrics", "VCPUs-CPU", "MRO"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const xe_view *v = xe_view_lookup(want[i].view);
        assert_non_null(v);
        xe_cols cols;
        xe_view_columns(v, &cols);
        const xe_col *c = find_col(&cols, want[i].col);
        if (!c)
            fail_msg("no column %s in %s", want[i].col, want[i].view);
        if (strcmp(c->tag, want[i].tag) != 0)
            fail_msg("%s %s: tag '%s', want '%s'", want[i].view, want[i].col, c->tag, want[i].tag);
        free(cols.c);
    }
    /* uuid comes first in every view: --minimal prints the first column */
    for (size_t i = 0; i < api_cli_nviews; i++) {
        xe_cols cols;
        xe_view_columns(&api_cli_views[i], &cols);
        assert_non_null(cols.cls);
        assert_true(cols.n > 0);
        assert_string_equal(cols.c[0].name, "uuid");
        free(cols.c);
    }
    assert_null(xe_view_lookup("session"));
    /* several views of one class; implicit filters and default columns */
    const xe_view *t = xe_view_lookup("template");
    assert_int_equal(t->cls, API_CLASS_VM);
    assert_int_equal(t->nfilters, 2);
    assert_string_equal(t->filters[1].key, "is-a-snapshot");
    assert_string_equal(t->list_defaults[0], "name-label");
    assert_string_equal(xe_view_lookup("vm-metrics")->plural, "vm-metricss");
    /* ref>field columns: a field of the object the reference points to */
    xe_cols cols;
    xe_view_columns(xe_view_lookup("vm"), &cols);
    const xe_col *c = find_col(&cols, "memory-actual");
    assert_non_null(c->via);
    assert_string_equal(c->via->name, "metrics");
    assert_string_equal(c->via_cls->name, "VM_metrics");
    assert_string_equal(c->f->name, "memory_actual");
    assert_true(find_col(&cols, "tags")->flags & API_CLI_COMMA);
    free(cols.c);
}

static xv *vm_rec(const char *uuid, const char *name, bool tmpl, bool dom0, const char *ps)
{
    xv *r = xv_new_struct();
    xv_struct_set(r, "uuid", xv_new_string(uuid));
    xv_struct_set(r, "name_label", xv_new_string(name));
    xv_struct_set(r, "is_a_template", xv_new_bool(tmpl));
    xv_struct_set(r, "is_control_domain", xv_new_bool(dom0));
    xv_struct_set(r, "power_state", xv_new_string(ps));
    return r;
}

/* Selects with the given command line; returns the selected uuids joined by ',' or NULL on
 * an error (its text in *err). */
static char *select_vms(unsigned flags, const char *const *ignore, char **err, ...)
{
    char *argv[16] = {"xe", "vm-op"};
    int argc = 2;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *));)
        argv[argc++] = a;
    va_end(ap);
    xe_cmdline cl;
    assert_int_equal(xe_cmdline_parse(&cl, argc, argv, NULL, NULL, stderr), XE_PARSE_OK);
    AUTO(xv) *all = xv_new_struct();
    xv_struct_set(all, "OpaqueRef:1", vm_rec("u1", "web01", false, false, "Halted"));
    xv_struct_set(all, "OpaqueRef:2", vm_rec("u2", "web02", false, false, "Running"));
    xv_struct_set(all, "OpaqueRef:3", vm_rec("u3", "tmpl", true, false, "Halted"));
    xv_struct_set(all, "OpaqueRef:4", vm_rec("u4", "dom0", false, true, "Running"));
    size_t elen = 0;
    FILE *fe = open_memstream(err, &elen);
    xe_ctx ctx = {.cl = &cl, .out = stdout, .err = fe};
    size_t *idx = NULL, n = 0;
    int rc = xe_select(&ctx, &xe_sel_vm, flags, ignore, all, &idx, &n);
    fclose(fe);
    char *ret = NULL;
    if (rc == 0) {
        sbuf b = SBUF_INIT;
        sbuf_puts(&b, "");
        for (size_t i = 0; i < n; i++)
            sbuf_printf(&b, "%s%s", i ? "," : "",
                        xv_struct_get_str(all->u.st.vals[idx[i]], "uuid"));
        ret = sbuf_steal(&b, NULL);
    }
    free(idx);
    xe_cmdline_free(&cl);
    return ret;
}

static void test_selectors(void **state)
{
    static const char *const ignore[] = {"new-name-label", NULL};
    char *err = NULL, *r;
#define SEL(want, flags, ...)                                                                      \
    r = select_vms(flags, ignore, &err, __VA_ARGS__, NULL);                                        \
    assert_non_null(r);                                                                            \
    assert_string_equal(r, want);                                                                  \
    free(r);                                                                                       \
    free(err)
    SEL("u1,u2", 0, "--force");
    SEL("u1", 0, "vm=web01");
    SEL("u2", 0, "vm=u2");
    SEL("", 0, "vm=tmpl");
    SEL("u3", XE_SEL_TEMPLATES, "vm=tmpl");
    SEL("u1,u3", XE_SEL_TEMPLATES, "power-state=halted");
    SEL("u2,u4", XE_SEL_CONTROL_DOMAINS, "power-state=running");
    SEL("u1", 0, "name-label=web01", "new-name-label=x", "--multiple");
#undef SEL
    r = select_vms(0, ignore, &err, "bogus=1", NULL);
    assert_null(r);
    assert_string_equal(err, "Error: Unknown field 'bogus'\n");
    free(err);
}

static void test_command_table(void **state)
{
    const char *must[] = {"host-list",
                          "pool-list",
                          "pool-param-set",
                          "pool-param-get",
                          "pool-param-list",
                          "pool-param-add",
                          "pool-param-remove",
                          "pool-param-clear",
                          "task-list",
                          "task-cancel",
                          "task-destroy",
                          "event-wait",
                          "help",
                          "user-password-change",
                          "vm-list",
                          "template-list",
                          "secret-destroy",
                          "message-list"};
    for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++)
        assert_non_null(xe_command_lookup(must[i]));
    const xe_cmd *c = xe_command_lookup("pool-param-remove");
    assert_string_equal(c->reqd[0], "uuid");
    assert_string_equal(c->reqd[1], "param-name");
    assert_string_equal(c->reqd[2], "param-key");
    assert_null(c->reqd[3]);
    /* param-set offers the settable fields and the writable maps */
    c = xe_command_lookup("pool-param-set");
    bool label = false, oc = false, master = false;
    for (size_t i = 0; c->optn[i]; i++) {
        label |= strcmp(c->optn[i], "name-label") == 0;
        oc |= strcmp(c->optn[i], "other-config:") == 0;
        master |= strcmp(c->optn[i], "master") == 0;
    }
    assert_true(label && oc && !master);
    /* no session class commands, as XCP */
    assert_null(xe_command_lookup("session-list"));
}

/* Runs a command line that fails before any connection; returns rc, fills out/err. */
static int run_local(char **out, char **err, ...)
{
    char *argv[32] = {"xe"};
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *));)
        argv[argc++] = a;
    va_end(ap);
    xe_cmdline cl;
    size_t ol, el;
    FILE *fo = open_memstream(out, &ol), *fe = open_memstream(err, &el);
    assert_int_equal(xe_cmdline_parse(&cl, argc, argv, NULL, NULL, fe), XE_PARSE_OK);
    int rc = xe_run(&cl, fo, fe);
    fclose(fo);
    fclose(fe);
    xe_cmdline_free(&cl);
    return rc;
}

static void test_run_errors(void **state)
{
    char *out, *err;
    assert_int_equal(run_local(&out, &err, "no-such-cmd", NULL), 1);
    assert_string_equal(out, "");
    assert_string_equal(err, "Unknown command: no-such-cmd\nFor usage run: 'xe help'\n");
    free(out);
    free(err);
    assert_int_equal(run_local(&out, &err, "pool-param-get", "uuid=x", NULL), 1);
    assert_string_equal(err,
                        "Required parameter not found: param-name\nFor usage run: 'xe help'\n");
    free(out);
    free(err);
    assert_int_equal(run_local(&out, &err, "vm-list", "-x", NULL), 1);
    assert_string_equal(err, "Syntax error: \nFor usage run: 'xe help'\n");
    free(out);
    free(err);
    assert_int_equal(run_local(&out, &err, "vm-list", "name-label=\xff", NULL), 1);
    assert_string_equal(err, "The value given is invalid\nfield: Invalid UTF-8 string in "
                             "parameter\nvalue: \xff\n");
    free(out);
    free(err);
    assert_int_equal(run_local(&out, &err, "help", "user-password-change", NULL), 0);
    assert_string_equal(out, "command name            : user-password-change\n"
                             "        reqd params     : new\n"
                             "        optional params : old\n"
                             "        description     : Change a user's login password.\n"
                             "\n\n");
    free(out);
    free(err);
    assert_int_equal(run_local(&out, &err, "help", "--minimal", NULL), 0);
    assert_string_equal(out, "network-list,snapshot-revert,sr-list,vm-cd-eject,vm-cd-insert,"
                             "vm-cd-list,vm-clone,vm-copy,vm-disk-list,vm-install,vm-list,vm-pause,"
                             "vm-reboot,vm-reset-powerstate,vm-resume,vm-shutdown,vm-snapshot,"
                             "vm-start,vm-suspend,vm-uninstall,vm-unpause,vm-vif-list\n");
    free(out);
    free(err);
    assert_int_equal(run_local(&out, &err, "-s", "127.0.0.1", "-p", "1", "--fingerprint", "xyz",
                               "host-list", NULL),
                     1);
    assert_non_null(strstr(err, "fingerprint"));
    free(out);
    free(err);
}

static void test_bash_completion(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    xe_write_bash_completion(f);
    fclose(f);
    assert_non_null(strstr(buf, "complete -F _xe xe"));
    assert_non_null(strstr(buf, "    pool-param-remove) params=\"uuid= param-name= param-key="));
    assert_non_null(strstr(buf, " event-wait "));
    assert_non_null(strstr(buf, "other-config:"));
    free(buf);
}

/* vm-install's rewrite of other_config:disks (XCP's rewrite_provisioning_xml). */
static void test_rewrite_disks_sr(void **state)
{
    (void)state;
    const struct {
        const char *in, *want;
    } cases[] = {
        {"<provision><disk device=\"0\" size=\"1\" sr=\"\" bootable=\"true\"/></provision>",
         "<provision><disk device=\"0\" size=\"1\" sr=\"S\" bootable=\"true\"/></provision>"},
        {"<provision><disk sr='old' device=\"0\"/><disk device=\"1\" sr = \"x\"/></provision>",
         "<provision><disk sr='S' device=\"0\"/><disk device=\"1\" sr = \"S\"/></provision>"},
        /* no sr attribute: left alone, as XCP; other elements and attributes untouched */
        {"<provision><disk device=\"0\" size=\"1\"/><diskette sr=\"a\"/><x sr=\"b\"/></provision>",
         "<provision><disk device=\"0\" size=\"1\"/><diskette sr=\"a\"/><x sr=\"b\"/></provision>"},
        {"<provision><disk usr=\"u\" sr=\"v\"></disk></provision>",
         "<provision><disk usr=\"u\" sr=\"S\"></disk></provision>"},
        {"", ""},
        {"<disk sr=\"unterminated", "<disk sr=\"unterminated"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = xe_rewrite_disks_sr(cases[i].in, "S");
        assert_string_equal(got, cases[i].want);
        free(got);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_basic),
        cmocka_unit_test(test_parse_edge_cases),
        cmocka_unit_test(test_parse_defaults_and_keywords),
        cmocka_unit_test(test_parse_priority),
        cmocka_unit_test(test_parse_bad_rc),
        cmocka_unit_test(test_parse_usage_and_errors),
        cmocka_unit_test(test_parse_password_file),
        cmocka_unit_test(test_split_extra_args),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_format_record),
        cmocka_unit_test(test_escape_minimal),
        cmocka_unit_test(test_format_values),
        cmocka_unit_test(test_error_texts),
        cmocka_unit_test(test_views),
        cmocka_unit_test(test_selectors),
        cmocka_unit_test(test_command_table),
        cmocka_unit_test(test_run_errors),
        cmocka_unit_test(test_bash_completion),
        cmocka_unit_test(test_rewrite_disks_sr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
