/* xe VM commands: vm-install/uninstall/destroy, power operations (Async where XCP's are),
 * clone/copy/snapshot/snapshot-revert, VCPU and memory setters, vm-disk-list/cd-list/vif-list,
 * vm-cd-insert/eject, vbd-* and console, with XCP's parameters, outputs and errors
 * (ocaml/xapi-cli-server/cli_operations.ml is the spec). Table entries are in commands.c. */
#define _GNU_SOURCE
#include "vm_cmds.h"

#include "mem.h"
#include "rpc.h"
#include "storage_cmds.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define NULL_REF "OpaqueRef:NULL"

/* ---- helpers ----------------------------------------------------------------------------- */

static const char *param(xe_ctx *ctx, const char *name)
{
    return xe_params_get(&ctx->cl->params, name);
}

/* XCP's Record_util.bytes_of_string field value. */
static int size_param(xe_ctx *ctx, const char *field, int64_t *ret)
{
    const char *s = param(ctx, field);
    long long v = 0;
    if (!xe_bytes_of_string(s ? s : "", &v))
        return xe_fail(ctx,
                       "Failed to parse field '%s': expecting an integer (possibly with suffix "
                       "KiB, MiB, GiB, TiB), got '%s'",
                       field, s ? s : "");
    *ret = v;
    return 0;
}

/* A boolean field of a record as the client decodes it (XML-RPC boolean or a string). */
static bool rec_bool(const xv *rec, const char *key)
{
    const xv *v = rec ? xv_struct_get(rec, key) : NULL;
    if (v && v->kind == XV_BOOL)
        return v->u.b;
    const char *s = xv_str(v);
    return s && strcmp(s, "true") == 0;
}

static const char *rec_str(const xv *rec, const char *key)
{
    const char *s = rec ? xv_struct_get_str(rec, key) : NULL;
    return s ? s : "";
}

/* [ref] -> the string result (caller frees), or NULL with the error printed. */
static char *call_str(xe_ctx *ctx, const char *method, xv *args)
{
    AUTO(xv) *r = NULL;
    if (xe_call(ctx, method, args, &r))
        return NULL;
    return xstrdup(xv_str(r) ? xv_str(r) : "");
}

static xv *args_ref_bool2(const char *ref, bool a, bool b)
{
    xv *v = xe_args1(ref);
    xv_array_append(v, xv_new_bool(a));
    xv_array_append(v, xv_new_bool(b));
    return v;
}

/* Runs op on the VMs the selectors pick (XCP's do_vm_op). */
static int vm_op(xe_ctx *ctx, unsigned flags, const char *const *ignore, xe_selected_fn op,
                 void *ud)
{
    return xe_do_selected(ctx, &xe_sel_vm, flags, ignore, op, ud);
}

#define STRV(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Prints the uuid of each ref (XCP's PList of new VMs). */
static int print_vm_uuids(xe_ctx *ctx, char **refs, size_t n)
{
    char **uuids = xcalloc(n + 1, sizeof(char *));
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        if (!(uuids[i] = call_str(ctx, "VM.get_uuid", xe_args1(refs[i]))))
            rc = 1;
    if (!rc)
        xe_print_list(ctx, (const char *const *)uuids, n);
    xe_strv_free(uuids);
    return rc;
}

/* ---- vm-install -------------------------------------------------------------------------- */

char *xe_rewrite_disks_sr(const char *xml, const char *sr_uuid)
{
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, "");
    const char *p = xml;
    for (;;) {
        const char *tag = strstr(p, "<disk");
        if (!tag) {
            sbuf_puts(&b, p);
            break;
        }
        if (!strchr(" \t\r\n/>", tag[5]) || !tag[5]) { /* <diskette...: not a disk */
            sbuf_append(&b, p, (size_t)(tag - p) + 5);
            p = tag + 5;
            continue;
        }
        const char *end = strchr(tag, '>');
        if (!end) {
            sbuf_puts(&b, p);
            break;
        }
        /* attributes of this tag: copy them, replacing sr's value */
        sbuf_append(&b, p, (size_t)(tag - p) + 5);
        const char *q = tag + 5;
        while (q < end) {
            const char *eq = memchr(q, '=', (size_t)(end - q));
            if (!eq)
                break;
            const char *quote = eq + 1;
            while (quote < end && (*quote == ' ' || *quote == '\t'))
                quote++;
            if (quote >= end || (*quote != '"' && *quote != '\''))
                break;
            const char *close = memchr(quote + 1, *quote, (size_t)(end - quote - 1));
            if (!close)
                break;
            const char *name_end = eq;
            while (name_end > q && (name_end[-1] == ' ' || name_end[-1] == '\t'))
                name_end--;
            const char *name = name_end;
            while (name > q && name[-1] != ' ' && name[-1] != '\t' && name[-1] != '\n' &&
                   name[-1] != '\r')
                name--;
            if (name_end - name == 2 && strncmp(name, "sr", 2) == 0) {
                sbuf_append(&b, q, (size_t)(quote + 1 - q));
                sbuf_puts(&b, sr_uuid);
                sbuf_append(&b, close, 1);
            } else {
                sbuf_append(&b, q, (size_t)(close + 1 - q));
            }
            q = close + 1;
        }
        p = q;
    }
    return sbuf_steal(&b, NULL);
}

/* The template the command line names (XCP's vm_install lookup). */
static int find_template(xe_ctx *ctx, char **ret)
{
    const char *tu = param(ctx, "template-uuid");
    if (tu) {
        AUTO(xv) *r = NULL;
        AUTO(xerr) *e = NULL;
        AUTO(xv) *a = xe_args1(tu);
        if (xe_conn_call(ctx->conn, "VM.get_by_uuid", a, &r, &e) < 0) {
            fprintf(ctx->err, "%s\n", xe_conn_error(ctx->conn));
            return 1;
        }
        if (e || !xv_str(r))
            return xe_fail(ctx, "Cannot find template");
        *ret = xstrdup(xv_str(r));
        return 0;
    }
    const char *name = param(ctx, "template-name-label");
    if (!name)
        name = param(ctx, "template-name");
    const char *t = param(ctx, "template");
    if (!name && !t)
        return xe_fail(ctx, "Template must be specified by parameter 'template-uuid', "
                            "'template-name', 'template-name-label' or 'template'");
    if (!name) {
        AUTO(xv) *r = NULL;
        AUTO(xerr) *e = NULL;
        AUTO(xv) *a = xe_args1(t);
        if (xe_conn_call(ctx->conn, "VM.get_by_uuid", a, &r, &e) < 0) {
            fprintf(ctx->err, "%s\n", xe_conn_error(ctx->conn));
            return 1;
        }
        if (!e && xv_str(r)) {
            *ret = xstrdup(xv_str(r));
            return 0;
        }
        name = t;
    }
    AUTO(xv) *all = NULL;
    if (xe_call(ctx, "VM.get_all_records", NULL, &all))
        return 1;
    const char *found = NULL;
    for (size_t i = 0; i < xv_struct_len(all); i++) {
        const xv *rec = all->u.st.vals[i];
        if (strcmp(rec_str(rec, "name_label"), name) != 0 || !rec_bool(rec, "is_a_template") ||
            rec_bool(rec, "is_control_domain"))
            continue;
        if (found)
            return xe_fail(ctx, "More than one matching template found");
        found = all->u.st.keys[i];
    }
    if (!found)
        return xe_fail(ctx, "No templates matched");
    *ret = xstrdup(found);
    return 0;
}

/* The pool's default SR's uuid, or NULL (XCP's get_default_sr_uuid). */
static char *default_sr_uuid(xe_ctx *ctx)
{
    AUTO(xv) *pools = NULL;
    AUTO(xerr) *e = NULL;
    if (xe_conn_call(ctx->conn, "pool.get_all", NULL, &pools, &e) < 0 || e ||
        !xv_array_len(pools) || !xv_str(xv_array_get(pools, 0)))
        return NULL;
    AUTO(xv) *a = xe_args1(xv_str(xv_array_get(pools, 0)));
    AUTO(xv) *sr = NULL;
    AUTO(xerr) *e2 = NULL;
    if (xe_conn_call(ctx->conn, "pool.get_default_SR", a, &sr, &e2) < 0 || e2 || !xv_str(sr))
        return NULL;
    AUTO(xv) *a2 = xe_args1(xv_str(sr));
    AUTO(xv) *uuid = NULL;
    AUTO(xerr) *e3 = NULL;
    if (xe_conn_call(ctx->conn, "SR.get_uuid", a2, &uuid, &e3) < 0 || e3 || !xv_str(uuid))
        return NULL;
    return xstrdup(xv_str(uuid));
}

/* The SR named by sr-uuid / sr-name-label (NULL when neither), as XCP's vm_install_real. */
static int install_sr(xe_ctx *ctx, char **ret)
{
    *ret = NULL;
    AUTOFREE char *sr = NULL;
    if (param(ctx, "sr-uuid") &&
        !(sr = call_str(ctx, "SR.get_by_uuid", xe_args1(param(ctx, "sr-uuid")))))
        return 1;
    const char *label = param(ctx, "sr-name-label");
    if (label) {
        AUTO(xv) *srs = NULL;
        if (xe_call(ctx, "SR.get_by_name_label", xe_args1(label), &srs))
            return 1;
        size_t n = xv_array_len(srs);
        if (n == 0)
            return xe_fail(ctx, "No SR with that name-label found");
        if (sr) {
            bool in = false;
            for (size_t i = 0; i < n && !in; i++)
                in = xv_str(xv_array_get(srs, i)) && !strcmp(xv_str(xv_array_get(srs, i)), sr);
            if (!in)
                return xe_fail(ctx, "SR specified via sr-uuid doesn't have the name specified via "
                                    "sr-name-label");
        } else {
            if (n > 1)
                return xe_fail(ctx, "Multiple SRs with that name-label found");
            sr = xstrdup(xv_str(xv_array_get(srs, 0)) ? xv_str(xv_array_get(srs, 0)) : NULL_REF);
        }
    }
    *ret = TAKE_PTR(sr);
    return 0;
}

/* The steps after the new VM exists; on failure the caller destroys it. */
static int install_finish(xe_ctx *ctx, const char *vm, const char *suspend_sr, const char *sr_uuid)
{
    if (xe_call(ctx, "VM.set_name_description", xe_args2(vm, xv_new_string("Installed via xe CLI")),
                NULL) ||
        xe_call(ctx, "VM.set_suspend_SR", xe_args2(vm, xv_new_string(suspend_sr)), NULL))
        return 1;
    AUTO(xv) *oc = NULL;
    if (xe_call(ctx, "VM.get_other_config", xe_args1(vm), &oc))
        return 1;
    const char *disks = xv_struct_get_str(oc, "disks");
    if (disks) {
        AUTOFREE char *nd = xe_rewrite_disks_sr(disks, sr_uuid);
        xv *a = xe_args1(vm);
        xv_array_append(a, xv_new_string("disks"));
        xv_array_append(a, xv_new_string(nd));
        if (xe_call(ctx, "VM.remove_from_other_config", xe_args2(vm, xv_new_string("disks")),
                    NULL) ||
            xe_call(ctx, "VM.add_to_other_config", a, NULL))
            return 1;
    }
    /* XCP's VM.provision turns the copy into a VM itself; ours leaves that to the caller */
    if (xe_call(ctx, "VM.set_is_a_template", xe_args2(vm, xv_new_bool(false)), NULL) ||
        xe_call_async(ctx, "VM.provision", xe_args1(vm), NULL))
        return 1;
    const char *bios = param(ctx, "copy-bios-strings-from");
    if (bios) {
        AUTOFREE char *host = call_str(ctx, "host.get_by_uuid", xe_args1(bios));
        if (!host || xe_call(ctx, "VM.copy_bios_strings", xe_args2(vm, xv_new_string(host)), NULL))
            return 1;
    }
    AUTOFREE char *uuid = call_str(ctx, "VM.get_uuid", xe_args1(vm));
    if (!uuid)
        return 1;
    xe_print_one(ctx, uuid);
    return 0;
}

int xe_cmd_vm_install(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *tmpl = NULL;
    if (find_template(ctx, &tmpl))
        return 1;
    AUTO(xv) *trec = NULL;
    if (xe_call(ctx, "VM.get_record", xe_args1(tmpl), &trec))
        return 1;
    if (!rec_bool(trec, "is_a_template"))
        return xe_fail(ctx, "Can only install from templates");
    AUTOFREE char *sr = NULL;
    if (rec_bool(trec, "is_a_snapshot")) {
        if (param(ctx, "sr-name-label") || param(ctx, "sr-uuid"))
            return xe_fail(ctx, "Do not use the sr-name-label or sr-uuid argument when installing "
                                "from a snapshot. By default, it will install each new disk on "
                                "the same SR as the corresponding snapshot disks.");
    } else if (install_sr(ctx, &sr)) {
        return 1;
    }
    bool have_sr = sr && strcmp(sr, NULL_REF) != 0;
    const char *suspend_sr = have_sr ? sr : rec_str(trec, "suspend_SR");
    AUTOFREE char *sr_uuid = NULL;
    if (have_sr) {
        if (!(sr_uuid = call_str(ctx, "SR.get_uuid", xe_args1(sr))))
            return 1;
    } else if (!(sr_uuid = default_sr_uuid(ctx))) {
        if (xv_struct_get_str(xv_struct_get(trec, "other_config"), "disks"))
            return xe_fail(ctx, "Failed to find a valid default SR for the Pool. Please provide "
                                "an sr-name-label or sr-uuid parameter.");
        sr_uuid = xstrdup("");
    }
    const char *name = param(ctx, "new-name-label");
    AUTO(xv) *nv = NULL;
    xv *a = xe_args2(tmpl, xv_new_string(name));
    if (have_sr)
        xv_array_append(a, xv_new_string(sr));
    if (xe_call_async(ctx, have_sr ? "VM.copy" : "VM.clone", a, &nv))
        return 1;
    if (!xv_str(nv))
        return xe_fail(ctx, "Server internal error.");
    AUTOFREE char *vm = xstrdup(xv_str(nv));
    if (install_finish(ctx, vm, suspend_sr, sr_uuid)) {
        AUTO(xv) *ign = NULL;
        AUTO(xerr) *ie = NULL;
        AUTO(xv) *da = xe_args1(vm);
        xe_conn_call(ctx->conn, "VM.destroy", da, &ign, &ie);
        return 1;
    }
    return 0;
}

/* ---- vm-uninstall, vm-destroy ------------------------------------------------------------ */

struct uninstall {
    char **vms;
    size_t nvms;
};

static int collect_vm(xe_ctx *ctx, const char *ref, const xv *rec, void *ud)
{
    (void)ctx;
    struct uninstall *u = ud;
    u->vms = xrealloc(u->vms, (u->nvms + 2) * sizeof(char *));
    u->vms[u->nvms++] = xstrdup(ref);
    u->vms[u->nvms] = NULL;
    /* XCP also removes the VM's snapshots */
    const xv *snaps = xv_struct_get(rec, "snapshots");
    for (size_t i = 0; i < xv_array_len(snaps); i++) {
        if (!xv_str(xv_array_get(snaps, i)))
            continue;
        u->vms = xrealloc(u->vms, (u->nvms + 2) * sizeof(char *));
        u->vms[u->nvms++] = xstrdup(xv_str(xv_array_get(snaps, i)));
        u->vms[u->nvms] = NULL;
    }
    return 0;
}

/* One object to destroy and what the listing says of it. */
struct doomed {
    char *vm;
    char **vdis; /* NULL-terminated: the VDIs of VBDs marked other_config:owner */
    size_t nvdis;
    char *suspend_vdi; /* or NULL */
};

static char *vdi_line(xe_ctx *ctx, const char *vdi)
{
    AUTO(xv) *r = NULL;
    AUTO(xerr) *e = NULL;
    AUTO(xv) *a = xe_args1(vdi);
    if (xe_conn_call(ctx->conn, "VDI.get_record", a, &r, &e) < 0 || e)
        return NULL;
    return xasprintf("VDI: %s (%s) %s", rec_str(r, "uuid"), rec_str(r, "name_label"),
                     xv_array_len(xv_struct_get(r, "VBDs")) > 1
                         ? " ** WARNING: disk is shared by other VMs"
                         : "");
}

static int plan_uninstall(xe_ctx *ctx, const char *vm, struct doomed *d, xe_params *lines)
{
    AUTO(xv) *rec = NULL;
    if (xe_call(ctx, "VM.get_record", xe_args1(vm), &rec))
        return 1;
    d->vm = xstrdup(vm);
    AUTOFREE char *l = xasprintf("VM : %s (%s)", rec_str(rec, "uuid"), rec_str(rec, "name_label"));
    xe_params_add(lines, l, NULL);
    const xv *vbds = xv_struct_get(rec, "VBDs");
    for (size_t i = 0; i < xv_array_len(vbds); i++) {
        AUTO(xv) *vbd = NULL;
        AUTO(xerr) *e = NULL;
        AUTO(xv) *a = xe_args1(xv_str(xv_array_get(vbds, i)));
        if (xe_conn_call(ctx->conn, "VBD.get_record", a, &vbd, &e) < 0 || e)
            continue;
        const char *vdi = rec_str(vbd, "VDI");
        if (!xv_struct_get(xv_struct_get(vbd, "other_config"), "owner"))
            continue;
        AUTOFREE char *line = vdi_line(ctx, vdi);
        if (!line) /* the VDI is gone */
            continue;
        d->vdis = xrealloc(d->vdis, (d->nvdis + 2) * sizeof(char *));
        d->vdis[d->nvdis++] = xstrdup(vdi);
        d->vdis[d->nvdis] = NULL;
        xe_params_add(lines, line, NULL);
    }
    const char *sv = rec_str(rec, "suspend_VDI");
    AUTOFREE char *sline = *sv && strcmp(sv, NULL_REF) ? vdi_line(ctx, sv) : NULL;
    if (sline) {
        d->suspend_vdi = xstrdup(sv);
        xe_params_add(lines, sline, NULL);
    }
    return 0;
}

static int destroy_doomed(xe_ctx *ctx, const struct doomed *d)
{
    AUTOFREE char *ps = call_str(ctx, "VM.get_power_state", xe_args1(d->vm));
    if (!ps)
        return 1;
    if (strcasecmp(ps, "Halted") != 0 && xe_call(ctx, "VM.hard_shutdown", xe_args1(d->vm), NULL))
        return 1;
    if (xe_call(ctx, "VM.destroy", xe_args1(d->vm), NULL))
        return 1;
    for (size_t i = 0; i < d->nvdis; i++)
        if (xe_call(ctx, "VDI.destroy", xe_args1(d->vdis[i]), NULL))
            return 1;
    if (d->suspend_vdi) {
        AUTO(xv) *ign = NULL;
        AUTO(xerr) *e = NULL;
        AUTO(xv) *a = xe_args1(d->suspend_vdi);
        xe_conn_call(ctx->conn, "VDI.destroy", a, &ign, &e);
    }
    return 0;
}

int xe_cmd_vm_uninstall(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    struct uninstall u = {0};
    int rc = vm_op(ctx, XE_SEL_MULTIPLE_OK, NULL, collect_vm, &u);
    struct doomed *ds = xcalloc(u.nvms + 1, sizeof(*ds));
    xe_params lines = {0};
    for (size_t i = 0; i < u.nvms && !rc; i++)
        rc = plan_uninstall(ctx, u.vms[i], &ds[i], &lines);
    bool force = false;
    if (!rc)
        rc = xe_bool_param(ctx, "force", false, &force);
    if (!rc) {
        fprintf(ctx->out, "The following items are about to be destroyed\n");
        for (size_t i = 0; i < lines.n; i++)
            fprintf(ctx->out, "%s\n", lines.v[i].key);
        bool go = force;
        if (!force) {
            fprintf(ctx->out, "Type 'yes' to continue\n");
            fflush(ctx->out);
            char line[256] = "";
            if (!fgets(line, sizeof(line), stdin))
                line[0] = '\0';
            line[strcspn(line, "\r\n")] = '\0';
            const char *s = line + strspn(line, " \t");
            size_t len = strlen(s);
            while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
                len--;
            go = len == 3 && strncasecmp(s, "yes", 3) == 0;
            if (!go)
                fprintf(ctx->out, "Aborted (you typed: '%s')\n", line);
        }
        for (size_t i = 0; go && i < u.nvms && !rc; i++)
            rc = destroy_doomed(ctx, &ds[i]);
        if (go && !rc)
            fprintf(ctx->out, "All objects destroyed\n");
    }
    for (size_t i = 0; i < u.nvms; i++) {
        free(ds[i].vm);
        xe_strv_free(ds[i].vdis);
        free(ds[i].suspend_vdi);
    }
    free(ds);
    xe_params_clear(&lines);
    xe_strv_free(u.vms);
    return rc;
}

int xe_cmd_vm_destroy(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *vm = call_str(ctx, "VM.get_by_uuid", xe_args1(param(ctx, "uuid")));
    if (!vm)
        return 1;
    AUTO(xv) *dom0 = NULL;
    if (xe_call(ctx, "VM.get_is_control_domain", xe_args1(vm), &dom0))
        return 1;
    if ((dom0 && dom0->kind == XV_BOOL && dom0->u.b) ||
        (xv_str(dom0) && !strcmp(xv_str(dom0), "true"))) {
        AUTO(xerr) *e =
            xerr_new("OPERATION_NOT_ALLOWED", "You cannot destroy a control domain via the CLI");
        return xe_fail_api(ctx, e);
    }
    return xe_call_async(ctx, "VM.destroy", xe_args1(vm), NULL);
}

/* ---- power operations -------------------------------------------------------------------- */

/* on=<host uuid, name-label or hostname> (XCP's get_host_by_name_or_id). */
static int host_by_name_or_id(xe_ctx *ctx, const char *name, char **ret)
{
    AUTO(xv) *all = NULL;
    if (xe_call(ctx, "host.get_all_records", NULL, &all))
        return 1;
    for (size_t i = 0; i < xv_struct_len(all); i++) {
        const xv *r = all->u.st.vals[i];
        if (!strcmp(rec_str(r, "uuid"), name) || !strcmp(rec_str(r, "name_label"), name) ||
            !strcmp(rec_str(r, "hostname"), name)) {
            *ret = xstrdup(all->u.st.keys[i]);
            return 0;
        }
    }
    return xe_fail(ctx, "Host %s not found", name);
}

struct power {
    bool force, paused;
    const char *host; /* ref or NULL */
};

static int op_start(xe_ctx *ctx, const char *ref, const xv *rec, void *ud)
{
    (void)rec;
    struct power *p = ud;
    if (p->host) {
        xv *a = xe_args2(ref, xv_new_string(p->host));
        xv_array_append(a, xv_new_bool(p->paused));
        xv_array_append(a, xv_new_bool(p->force));
        return xe_call_async(ctx, "VM.start_on", a, NULL);
    }
    return xe_call_async(ctx, "VM.start", args_ref_bool2(ref, p->paused, p->force), NULL);
}

int xe_cmd_vm_start(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    struct power p = {0};
    if (xe_bool_param(ctx, "force", false, &p.force) ||
        xe_bool_param(ctx, "paused", false, &p.paused))
        return 1;
    AUTOFREE char *host = NULL;
    if (param(ctx, "on") && host_by_name_or_id(ctx, param(ctx, "on"), &host))
        return 1;
    p.host = host;
    return vm_op(ctx, XE_SEL_MULTIPLE_OK | XE_SEL_CONTROL_DOMAINS, STRV("on", "paused", "progress"),
                 op_start, &p);
}

static int op_resume(xe_ctx *ctx, const char *ref, const xv *rec, void *ud)
{
    (void)rec;
    struct power *p = ud;
    if (p->host) {
        xv *a = xe_args2(ref, xv_new_string(p->host));
        xv_array_append(a, xv_new_bool(false));
        xv_array_append(a, xv_new_bool(p->force));
        return xe_call_async(ctx, "VM.resume_on", a, NULL);
    }
    return xe_call_async(ctx, "VM.resume", args_ref_bool2(ref, false, p->force), NULL);
}

int xe_cmd_vm_resume(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    struct power p = {0};
    if (xe_bool_param(ctx, "force", false, &p.force))
        return 1;
    AUTOFREE char *host = NULL;
    if (param(ctx, "on") && host_by_name_or_id(ctx, param(ctx, "on"), &host))
        return 1;
    p.host = host;
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, STRV("on", "progress"), op_resume, &p);
}

/* A one-argument VM message, sync or Async (ud: the method name, '@' first for Async). */
static int op_simple(xe_ctx *ctx, const char *ref, const xv *rec, void *ud)
{
    (void)rec;
    const char *m = ud;
    if (*m == '@')
        return xe_call_async(ctx, m + 1, xe_args1(ref), NULL);
    return xe_call(ctx, m, xe_args1(ref), NULL);
}

int xe_cmd_vm_shutdown(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    bool force = false;
    if (xe_bool_param(ctx, "force", false, &force))
        return 1;
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, STRV("progress"), op_simple,
                 force ? "@VM.hard_shutdown" : "@VM.clean_shutdown");
}

int xe_cmd_vm_reboot(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    bool force = false;
    if (xe_bool_param(ctx, "force", false, &force))
        return 1;
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, NULL, op_simple,
                 force ? "VM.hard_reboot" : "VM.clean_reboot");
}

int xe_cmd_vm_pause(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, NULL, op_simple, "VM.pause");
}

int xe_cmd_vm_unpause(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, NULL, op_simple, "VM.unpause");
}

int xe_cmd_vm_suspend(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, STRV("progress"), op_simple, "@VM.suspend");
}

int xe_cmd_vm_reset_powerstate(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    bool force = false;
    if (xe_bool_param(ctx, "force", false, &force))
        return 1;
    if (!force)
        return xe_fail(ctx, "This operation is dangerous and may cause data loss. This operation "
                            "must be forced (use --force).");
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, NULL, op_simple, "VM.power_state_reset");
}

/* ---- clone, copy, snapshot, revert ------------------------------------------------------- */

struct dup {
    const char *method; /* VM.clone, VM.copy, VM.snapshot */
    const char *sr;     /* VM.copy */
    xv *ignore_vdis;    /* VM.snapshot */
    char **made;
    size_t nmade;
};

static int op_dup(xe_ctx *ctx, const char *ref, const xv *rec, void *ud)
{
    (void)rec;
    struct dup *d = ud;
    xv *a = xe_args2(ref, xv_new_string(param(ctx, "new-name-label")));
    if (!strcmp(d->method, "VM.copy"))
        xv_array_append(a, xv_new_string(d->sr));
    if (!strcmp(d->method, "VM.snapshot"))
        xv_array_append(a, xv_copy(d->ignore_vdis));
    AUTO(xv) *nv = NULL;
    if (xe_call_async(ctx, d->method, a, &nv))
        return 1;
    if (!xv_str(nv))
        return xe_fail(ctx, "Server internal error.");
    d->made = xrealloc(d->made, (d->nmade + 2) * sizeof(char *));
    d->made[d->nmade++] = xstrdup(xv_str(nv));
    d->made[d->nmade] = NULL;
    return 0;
}

/* XCP's vm_clone_aux: the operation on the selected VMs, the description on the first new one,
 * then the new uuids. */
static int dup_cmd(xe_ctx *ctx, struct dup *d, unsigned flags, const char *const *ignore)
{
    int rc = vm_op(ctx, flags, ignore, op_dup, d);
    const char *desc = param(ctx, "new-name-description");
    if (d->nmade && desc && !rc)
        rc = xe_call(ctx, "VM.set_name_description", xe_args2(d->made[0], xv_new_string(desc)),
                     NULL);
    if (!rc)
        rc = print_vm_uuids(ctx, d->made, d->nmade);
    xe_strv_free(d->made);
    xv_free(d->ignore_vdis);
    return rc;
}

int xe_cmd_vm_clone(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    struct dup d = {.method = "VM.clone"};
    return dup_cmd(ctx, &d, XE_SEL_MULTIPLE_OK | XE_SEL_TEMPLATES,
                   STRV("new-name-label", "new-name-description", "ignore-vdi-uuids"));
}

int xe_cmd_vm_snapshot(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    struct dup d = {.method = "VM.snapshot", .ignore_vdis = xv_new_array()};
    const char *ign = param(ctx, "ignore-vdi-uuids");
    for (const char *s = ign; s;) {
        const char *comma = strchr(s, ',');
        AUTOFREE char *u = comma ? xstrndup(s, (size_t)(comma - s)) : xstrdup(s);
        AUTOFREE char *vdi = call_str(ctx, "VDI.get_by_uuid", xe_args1(u));
        if (!vdi) {
            xv_free(d.ignore_vdis);
            return 1;
        }
        xv_array_append(d.ignore_vdis, xv_new_string(vdi));
        s = comma ? comma + 1 : NULL;
    }
    return dup_cmd(ctx, &d, XE_SEL_MULTIPLE_OK,
                   STRV("new-name-label", "new-name-description", "ignore-vdi-uuids"));
}

int xe_cmd_vm_copy(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *sr = NULL;
    if (param(ctx, "sr-uuid")) {
        if (!(sr = call_str(ctx, "SR.get_by_uuid", xe_args1(param(ctx, "sr-uuid")))))
            return 1;
    } else {
        sr = xstrdup(NULL_REF);
    }
    struct dup d = {.method = "VM.copy", .sr = sr};
    return dup_cmd(ctx, &d, XE_SEL_TEMPLATES,
                   STRV("new-name-label", "sr-uuid", "new-name-description"));
}

int xe_cmd_snapshot_revert(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    const char *uuid = param(ctx, "snapshot-uuid");
    if (!uuid)
        uuid = param(ctx, "uuid");
    if (!uuid)
        return xe_fail(ctx, "Required parameter not found: snapshot-uuid or uuid.");
    AUTOFREE char *snap = call_str(ctx, "VM.get_by_uuid", xe_args1(uuid));
    if (!snap)
        return 1;
    AUTO(xv) *is = NULL;
    if (xe_call(ctx, "VM.get_is_a_snapshot", xe_args1(snap), &is))
        return 1;
    if (!((is && is->kind == XV_BOOL && is->u.b) || (xv_str(is) && !strcmp(xv_str(is), "true"))))
        return xe_fail(ctx,
                       "This operation can only be performed on a VM snapshot. %s is not a VM "
                       "snapshot.",
                       uuid);
    return xe_call(ctx, "VM.revert", xe_args1(snap), NULL);
}

/* ---- VCPUs and memory -------------------------------------------------------------------- */

struct setter {
    const char *method;
    int64_t v[4];
    int n;
};

static int op_setter(xe_ctx *ctx, const char *ref, const xv *rec, void *ud)
{
    (void)rec;
    const struct setter *s = ud;
    xv *a = xe_args1(ref);
    for (int i = 0; i < s->n; i++)
        xv_array_append(a, xv_new_int(s->v[i]));
    return xe_call(ctx, s->method, a, NULL);
}

int xe_cmd_vm_vcpu_hotplug(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    const char *s = param(ctx, "new-vcpus");
    char *end = NULL;
    errno = 0;
    long long n = strtoll(s, &end, 0);
    if (!*s || *end || errno)
        return xe_fail(ctx, "Failed to parse parameter 'new-vcpus': expecting an integer");
    struct setter st = {"VM.set_VCPUs_number_live", {n}, 1};
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, STRV("new-vcpus"), op_setter, &st);
}

static int memory_cmd(xe_ctx *ctx, const char *method, const char *const *fields, int n,
                      unsigned flags, bool twice)
{
    struct setter st = {method, {0}, twice ? 2 : n};
    for (int i = 0; i < n; i++)
        if (size_param(ctx, fields[i], &st.v[i]))
            return 1;
    if (twice)
        st.v[1] = st.v[0];
    return vm_op(ctx, XE_SEL_MULTIPLE_OK | flags, fields, op_setter, &st);
}

int xe_cmd_vm_memory_limits_set(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return memory_cmd(ctx, "VM.set_memory_limits",
                      STRV("static-min", "static-max", "dynamic-min", "dynamic-max"), 4,
                      XE_SEL_CONTROL_DOMAINS | XE_SEL_TEMPLATES, false);
}

int xe_cmd_vm_memory_dynamic_range_set(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return memory_cmd(ctx, "VM.set_memory_dynamic_range", STRV("min", "max"), 2,
                      XE_SEL_CONTROL_DOMAINS | XE_SEL_TEMPLATES, false);
}

int xe_cmd_vm_memory_static_range_set(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return memory_cmd(ctx, "VM.set_memory_static_range", STRV("min", "max"), 2,
                      XE_SEL_CONTROL_DOMAINS | XE_SEL_TEMPLATES, false);
}

int xe_cmd_vm_memory_set(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return memory_cmd(ctx, "VM.set_memory", STRV("memory"), 1,
                      XE_SEL_CONTROL_DOMAINS | XE_SEL_TEMPLATES, false);
}

int xe_cmd_vm_memory_target_set(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    /* XCP: the dynamic range collapsed onto the target */
    return memory_cmd(ctx, "VM.set_memory_dynamic_range", STRV("target"), 1, XE_SEL_CONTROL_DOMAINS,
                      true);
}

/* ---- listings ---------------------------------------------------------------------------- */

/* XCP's select_fields: params=all, params=a,b or the defaults. NULL = every column. */
static char **fields_of(const char *p, const char *const *defaults)
{
    if (p && !strcmp(p, "all"))
        return NULL;
    char **v = xcalloc(1, sizeof(char *));
    size_t n = 0;
    if (!p) {
        for (size_t i = 0; defaults[i]; i++) {
            v = xrealloc(v, (n + 2) * sizeof(char *));
            v[n++] = xstrdup(defaults[i]);
            v[n] = NULL;
        }
        return v;
    }
    for (const char *s = p;;) {
        const char *comma = strchr(s, ',');
        v = xrealloc(v, (n + 2) * sizeof(char *));
        v[n++] = comma ? xstrndup(s, (size_t)(comma - s)) : xstrdup(s);
        v[n] = NULL;
        if (!comma)
            break;
        s = comma + 1;
    }
    return v;
}

/* One record of a view with the chosen columns (in the view's order, as XCP). */
static void view_row(xe_ctx *ctx, const xe_cols *cols, const xv *rec, char **only, xe_row *r)
{
    for (size_t i = 0; i < cols->n; i++) {
        const xe_col *c = &cols->c[i];
        if (only ? !xe_strv_has((const char *const *)only, c->name) : (c->flags & API_CLI_HIDDEN))
            continue;
        xe_row_add(r,
                   xasprintf("%s (%s)%s", c->name, c->tag,
                             (c->flags & API_CLI_DEPRECATED) ? " [DEPRECATED]" : ""),
                   xe_col_value(ctx, c, rec));
    }
}

static void print_view_record(xe_ctx *ctx, const char *view, const xv *rec, char **only)
{
    XE_COLS_AUTO xe_cols cols;
    xe_view_columns(xe_view_lookup(view), &cols);
    xe_row r = {0};
    view_row(ctx, &cols, rec, only, &r);
    xe_print_table(ctx, &r, 1);
    xe_row_clear(&r);
}

static int op_disk_list(xe_ctx *ctx, const char *ref, const xv *rec, void *ud)
{
    (void)ref;
    bool cd = ud != NULL;
    const xv *vbds = xv_struct_get(rec, "VBDs");
    char **vbd_f = fields_of(param(ctx, "vbd-params"),
                             cd ? STRV("uuid", "vm-name-label", "userdevice", "empty")
                                : STRV("uuid", "vm-name-label", "userdevice"));
    char **vdi_f = fields_of(param(ctx, "vdi-params"),
                             STRV("uuid", "name-label", "virtual-size", "sr-name-label"));
    int n = 0, rc = 0;
    for (size_t i = 0; i < xv_array_len(vbds) && !rc; i++) {
        AUTO(xv) *vbd = NULL;
        if ((rc = xe_call(ctx, "VBD.get_record", xe_args1(xv_str(xv_array_get(vbds, i))), &vbd)))
            break;
        if (strcmp(rec_str(vbd, "type"), cd ? "CD" : "Disk") != 0)
            continue;
        const char *what = cd ? "CD" : "Disk";
        fprintf(ctx->out, "%s %d VBD:\n", what, n);
        print_view_record(ctx, "vbd", vbd, vbd_f);
        if (!rec_bool(vbd, "empty")) {
            AUTO(xv) *vdi = NULL;
            if ((rc = xe_call(ctx, "VDI.get_record", xe_args1(rec_str(vbd, "VDI")), &vdi)))
                break;
            fprintf(ctx->out, "%s %d VDI:\n", what, n);
            print_view_record(ctx, "vdi", vdi, vdi_f);
        }
        n++;
    }
    xe_strv_free(vbd_f);
    xe_strv_free(vdi_f);
    return rc;
}

int xe_cmd_vm_disk_list(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, STRV("vbd-params", "vdi-params"), op_disk_list, NULL);
}

int xe_cmd_vm_cd_list(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, STRV("vbd-params", "vdi-params"), op_disk_list, "cd");
}

static int op_vif_list(xe_ctx *ctx, const char *ref, const xv *rec, void *ud)
{
    (void)ref;
    (void)ud;
    const xv *vifs = xv_struct_get(rec, "VIFs");
    char **f = fields_of(param(ctx, "params"), STRV("uuid", "device", "MAC", "network-uuid",
                                                    "network-name-label", "vm-name-label"));
    XE_COLS_AUTO xe_cols cols;
    xe_view_columns(xe_view_lookup("vif"), &cols);
    size_t n = xv_array_len(vifs);
    xe_row *rows = xcalloc(n + 1, sizeof(xe_row));
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        AUTO(xv) *vif = NULL;
        if (!(rc = xe_call(ctx, "VIF.get_record", xe_args1(xv_str(xv_array_get(vifs, i))), &vif)))
            view_row(ctx, &cols, vif, f, &rows[i]);
    }
    if (!rc)
        xe_print_table(ctx, rows, n);
    for (size_t i = 0; i < n; i++)
        xe_row_clear(&rows[i]);
    free(rows);
    xe_strv_free(f);
    return rc;
}

int xe_cmd_vm_vif_list(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    /* XCP runs it as if --multiple were given: every selected VM, failures reported per VM */
    AUTO(xv) *all = NULL;
    if (xe_get_all_records(ctx, xe_view_lookup("vm"), &all))
        return 1;
    AUTOFREE size_t *idx = NULL;
    size_t n = 0;
    if (xe_select(ctx, &xe_sel_vm, 0, STRV("params"), all, &idx, &n))
        return 1;
    if (n == 0)
        return xe_fail(ctx, "%s", xe_sel_vm.none_msg);
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        rc |= op_vif_list(ctx, all->u.st.keys[idx[i]], all->u.st.vals[idx[i]], NULL);
    return rc;
}

/* ---- CDs --------------------------------------------------------------------------------- */

/* The CD VBDs of a VM (empty ones only when empty_only). */
static int cd_vbds(xe_ctx *ctx, const xv *rec, bool empty_only, xe_params *ret)
{
    const xv *vbds = xv_struct_get(rec, "VBDs");
    for (size_t i = 0; i < xv_array_len(vbds); i++) {
        AUTO(xv) *vbd = NULL;
        const char *ref = xv_str(xv_array_get(vbds, i));
        if (xe_call(ctx, "VBD.get_record", xe_args1(ref), &vbd))
            return 1;
        if (!strcmp(rec_str(vbd, "type"), "CD") && (!empty_only || rec_bool(vbd, "empty")))
            xe_params_add(ret, ref, NULL);
    }
    return 0;
}

static int op_cd_eject(xe_ctx *ctx, const char *ref, const xv *rec, void *ud)
{
    (void)ref;
    (void)ud;
    xe_params cds = {0};
    int rc = cd_vbds(ctx, rec, false, &cds);
    if (!rc && cds.n == 0)
        rc = xe_fail(ctx, "No CDs found");
    else if (!rc && cds.n > 1)
        rc = xe_fail(ctx, "Two or more CDs found. Please use vbd-eject");
    else if (!rc)
        rc = xe_call(ctx, "VBD.eject", xe_args1(cds.v[0].key), NULL);
    xe_params_clear(&cds);
    return rc;
}

int xe_cmd_vm_cd_eject(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, NULL, op_cd_eject, NULL);
}

static int op_cd_insert(xe_ctx *ctx, const char *ref, const xv *rec, void *ud)
{
    xe_params cds = {0};
    int rc = cd_vbds(ctx, rec, true, &cds);
    if (!rc && cds.n == 0) {
        AUTO(xerr) *e = xerr_new("VM_NO_EMPTY_CD_VBD", ref);
        rc = xe_fail_api(ctx, e);
    } else if (!rc && cds.n > 1) {
        rc = xe_fail(ctx, "Two or more empty CD devices found. Please use vbd-insert");
    } else if (!rc) {
        rc = xe_call(ctx, "VBD.insert", xe_args2(cds.v[0].key, xv_new_string(ud)), NULL);
    }
    xe_params_clear(&cds);
    return rc;
}

int xe_cmd_vm_cd_insert(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    const char *name = param(ctx, "cd-name");
    AUTO(xv) *vdis = NULL;
    if (xe_call(ctx, "VDI.get_by_name_label", xe_args1(name), &vdis))
        return 1;
    AUTOFREE char *iso = NULL;
    size_t found = 0;
    for (size_t i = 0; i < xv_array_len(vdis); i++) {
        const char *vdi = xv_str(xv_array_get(vdis, i));
        AUTOFREE char *sr = vdi ? call_str(ctx, "VDI.get_SR", xe_args1(vdi)) : NULL;
        if (!sr)
            return 1;
        AUTOFREE char *ct = call_str(ctx, "SR.get_content_type", xe_args1(sr));
        if (!ct)
            return 1;
        if (!strcmp(ct, "iso")) {
            found++;
            free(iso);
            iso = xstrdup(vdi);
        }
    }
    if (found == 0)
        return xe_fail(ctx, "CD %s not found", name);
    if (found > 1)
        return xe_fail(ctx, "Multiple CDs named %s found. Please use vbd-insert and specify uuids",
                       name);
    return vm_op(ctx, XE_SEL_MULTIPLE_OK, STRV("cd-name"), op_cd_insert, iso);
}

/* ---- vbd-* ------------------------------------------------------------------------------- */

static int vbd_ref(xe_ctx *ctx, char **ret)
{
    return !(*ret = call_str(ctx, "VBD.get_by_uuid", xe_args1(param(ctx, "uuid"))));
}

int xe_cmd_vbd_create(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *vm = call_str(ctx, "VM.get_by_uuid", xe_args1(param(ctx, "vm-uuid")));
    if (!vm)
        return 1;
    bool empty = !param(ctx, "vdi-uuid");
    AUTOFREE char *vdi = empty ? xstrdup(NULL_REF)
                               : call_str(ctx, "VDI.get_by_uuid", xe_args1(param(ctx, "vdi-uuid")));
    if (!vdi)
        return 1;
    bool bootable, unpluggable;
    if (xe_bool_param(ctx, "bootable", false, &bootable))
        return 1;
    const char *mode = "RW", *type = "Disk";
    const char *m = param(ctx, "mode");
    if (m) {
        if (!strcasecmp(m, "ro"))
            mode = "RO";
        else if (!strcasecmp(m, "rw"))
            mode = "RW";
        else {
            AUTOFREE char *lm = xstrdup(m);
            for (char *p = lm; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
            return xe_fail(ctx, "Unknown mode: %s (should be \"ro\" or \"rw\"", lm);
        }
    }
    const char *t = param(ctx, "type");
    if (t) {
        if (!strcasecmp(t, "cd"))
            type = "CD";
        else if (!strcasecmp(t, "disk"))
            type = "Disk";
        else if (!strcasecmp(t, "floppy"))
            type = "Floppy";
        else {
            AUTOFREE char *lt = xstrdup(t);
            for (char *p = lt; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
            return xe_fail(ctx, "\"Unknown type: %s (should be \"cd\", \"disk\" or \"floppy\"", lt);
        }
    }
    if (xe_bool_param(ctx, "unpluggable", true, &unpluggable))
        return 1;
    if (!strcmp(type, "Disk") && empty)
        return xe_fail(ctx, "Empty VBDs can only be made for type=CD");
    xv *r = xv_new_struct();
    xv_struct_set(r, "VM", xv_new_string(vm));
    xv_struct_set(r, "VDI", xv_new_string(vdi));
    xv_struct_set(r, "userdevice", xv_new_string(param(ctx, "device")));
    xv_struct_set(r, "bootable", xv_new_bool(bootable));
    xv_struct_set(r, "mode", xv_new_string(mode));
    xv_struct_set(r, "type", xv_new_string(type));
    xv_struct_set(r, "unpluggable", xv_new_bool(unpluggable));
    xv_struct_set(r, "empty", xv_new_bool(empty));
    xv_struct_set(r, "qos_algorithm_type", xv_new_string(""));
    xv_struct_set(r, "qos_algorithm_params", xv_new_struct());
    xv_struct_set(r, "other_config", xv_new_struct());
    xv_struct_set(r, "device", xv_new_string(""));
    xv_struct_set(r, "currently_attached", xv_new_bool(false));
    xv *a = xv_new_array();
    xv_array_append(a, r);
    AUTOFREE char *vbd = call_str(ctx, "VBD.create", a);
    if (!vbd)
        return 1;
    AUTOFREE char *uuid = call_str(ctx, "VBD.get_uuid", xe_args1(vbd));
    if (!uuid)
        return 1;
    xe_print_one(ctx, uuid);
    return 0;
}

int xe_cmd_vbd_destroy(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *vbd = NULL;
    return vbd_ref(ctx, &vbd) || xe_call(ctx, "VBD.destroy", xe_args1(vbd), NULL);
}

int xe_cmd_vbd_plug(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *vbd = NULL;
    return vbd_ref(ctx, &vbd) || xe_call(ctx, "VBD.plug", xe_args1(vbd), NULL);
}

int xe_cmd_vbd_unplug(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *vbd = NULL;
    if (vbd_ref(ctx, &vbd))
        return 1;
    double timeout = 0;
    const char *ts = param(ctx, "timeout");
    if (ts) {
        char *end = NULL;
        timeout = strtod(ts, &end);
        if (!*ts || *end)
            return xe_fail(ctx, "Failed to parse parameter 'timeout': expecting a float");
    }
    bool force = false;
    if (xe_bool_param(ctx, "force", false, &force))
        return 1;
    double start = now_monotonic();
    AUTO(xv) *res = NULL;
    AUTO(xerr) *e = NULL;
    AUTO(xv) *a = xe_args1(vbd);
    if (xe_conn_call(ctx->conn, force ? "VBD.unplug_force" : "VBD.unplug", a, &res, &e) < 0) {
        fprintf(ctx->err, "%s\n", xe_conn_error(ctx->conn));
        return 1;
    }
    if (!e)
        return 0;
    if (strcmp(e->code, "DEVICE_DETACH_REJECTED") != 0)
        return xe_fail_api(ctx, e);
    /* XCP: poll currently-attached every 5 s until the timeout */
    while (now_monotonic() - start < timeout) {
        struct timespec d = {5, 0};
        nanosleep(&d, NULL);
        AUTO(xv) *att = NULL;
        if (xe_call(ctx, "VBD.get_currently_attached", xe_args1(vbd), &att))
            return 1;
        if (!((att && att->kind == XV_BOOL && att->u.b) ||
              (xv_str(att) && !strcmp(xv_str(att), "true"))))
            return 0;
    }
    return xe_fail_api(ctx, e);
}

int xe_cmd_vbd_insert(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *vbd = NULL;
    if (vbd_ref(ctx, &vbd))
        return 1;
    AUTOFREE char *vdi = call_str(ctx, "VDI.get_by_uuid", xe_args1(param(ctx, "vdi-uuid")));
    return !vdi || xe_call(ctx, "VBD.insert", xe_args2(vbd, xv_new_string(vdi)), NULL);
}

int xe_cmd_vbd_eject(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *vbd = NULL;
    return vbd_ref(ctx, &vbd) || xe_call(ctx, "VBD.eject", xe_args1(vbd), NULL);
}

/* ---- console ----------------------------------------------------------------------------- */

#define CONSOLE_ESCAPE 0x1d /* Ctrl-] */

/* Seconds of silence from the VM after stdin ended (not a terminal) before xe disconnects:
 * what a command piped in gets to answer. */
#define CONSOLE_DRAIN_DEFAULT 1.0

static bool write_fd_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool stream_send_all(xe_stream *s, const char *p, size_t n)
{
    while (n) {
        ssize_t w = xe_stream_send(s, p, n);
        if (w == -2) {
            struct pollfd pf = {.fd = xe_stream_fd(s), .events = POLLOUT};
            if (poll(&pf, 1, 30000) <= 0)
                return false;
            continue;
        }
        if (w < 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Relays stdin -> stream and stream -> stdout until the stream ends, Ctrl-] is typed, or
 * (stdin not a terminal) stdin ended and the VM stayed quiet for drain seconds. */
static int console_relay(xe_ctx *ctx, xe_stream *s, bool tty, double drain)
{
    char buf[16384];
    bool in_open = true;
    double quiet_since = 0;
    /* bytes that came with the response head are not on the socket: read them first */
    bool readable = true;
    for (;;) {
        if (readable) {
            for (;;) { /* TLS may hold more than the socket shows: read until nothing */
                ssize_t n = xe_stream_recv(s, buf, sizeof(buf));
                if (n == -2)
                    break;
                if (n <= 0)
                    return 0; /* the stream ended (the VM stopped, or the server went) */
                if (!write_fd_all(1, buf, (size_t)n))
                    return 0;
                quiet_since = now_monotonic();
            }
        }
        struct pollfd p[2] = {{.fd = xe_stream_fd(s), .events = POLLIN},
                              {.fd = 0, .events = POLLIN}};
        int timeout = -1;
        if (!in_open) {
            double left = quiet_since + drain - now_monotonic();
            if (left <= 0)
                return 0;
            timeout = (int)(left * 1000) + 1;
        }
        int r = poll(p, in_open ? 2 : 1, timeout);
        if (r < 0 && errno != EINTR)
            return xe_fail(ctx, "poll: %s", strerror(errno));
        readable = r > 0 && p[0].revents != 0;
        if (r <= 0)
            continue;
        if (in_open && p[1].revents) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                if (tty)
                    return 0;
                in_open = false;
                quiet_since = now_monotonic();
                continue;
            }
            char *esc = memchr(buf, CONSOLE_ESCAPE, (size_t)n);
            size_t len = esc ? (size_t)(esc - buf) : (size_t)n;
            if (len && !stream_send_all(s, buf, len))
                return 0;
            if (esc)
                return 0;
        }
    }
}

/* The path of a console location ("http://host:port/console?uuid=..." -> "/console?...") with
 * the session appended, as XCP's xe does. */
static char *console_path(const char *location, const char *console_uuid, const char *session)
{
    const char *path = NULL;
    const char *scheme = strstr(location, "://");
    if (scheme)
        path = strchr(scheme + 3, '/');
    else if (location[0] == '/')
        path = location;
    if (!path || !*path)
        return xasprintf("/console?uuid=%s&session_id=%s", console_uuid, session);
    return xasprintf("%s%ssession_id=%s", path, strchr(path, '?') ? "&" : "?", session);
}

int xe_cmd_console(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTO(xv) *all = NULL;
    if (xe_get_all_records(ctx, xe_view_lookup("vm"), &all))
        return 1;
    AUTOFREE size_t *idx = NULL;
    size_t n = 0;
    if (xe_select(ctx, &xe_sel_vm, XE_SEL_CONTROL_DOMAINS, STRV("drain"), all, &idx, &n))
        return 1;
    if (n == 0) {
        fprintf(ctx->err, "No VM found\n");
        return 1;
    }
    if (n > 1) {
        fprintf(ctx->err, "Multiple VMs found: please narrow your request to one VM.\n");
        return 1;
    }
    const xv *vm = all->u.st.vals[idx[0]];
    const xv *cons = xv_struct_get(vm, "consoles");
    AUTO(xv) *crec = NULL;
    for (size_t i = 0; i < xv_array_len(cons) && !crec; i++) {
        AUTO(xv) *r = NULL;
        if (xe_call(ctx, "console.get_record", xe_args1(xv_str(xv_array_get(cons, i))), &r))
            return 1;
        if (!strcmp(rec_str(r, "protocol"), "vt100"))
            crec = TAKE_PTR(r);
    }
    if (!crec) {
        fprintf(ctx->err, "No text console available\n");
        return 1;
    }
    double drain = CONSOLE_DRAIN_DEFAULT;
    const char *ds = param(ctx, "drain");
    if (ds) {
        char *end = NULL;
        drain = strtod(ds, &end);
        if (!*ds || *end || drain < 0 || drain > 3600)
            return xe_fail(ctx, "Failed to parse parameter 'drain': expecting seconds (0-3600)");
    }
    fprintf(ctx->out, "Connecting to console on VM %s. Press Ctrl + ']' to quit.\n",
            rec_str(vm, "name_label"));
    fflush(ctx->out);
    const char *sess = xe_conn_session(ctx->conn);
    AUTOFREE char *path =
        console_path(rec_str(crec, "location"), rec_str(crec, "uuid"), sess ? sess : "");
    xe_stream *s = NULL;
    AUTOFREE char *msg = NULL;
    int st = xe_stream_open(ctx->conn, path, "nuvem-console", &s, &msg);
    if (st < 0) {
        fprintf(ctx->err, "%s\n", msg);
        return 1;
    }
    if (st == 404) {
        fprintf(ctx->err, "Server replied with HTTP 404: the console is not available\n");
        return 1;
    }
    if (st > 0) {
        /* a XenAPI failure in the body (the VM does not run) prints as any API error */
        AUTO(xv) *v = NULL;
        AUTO(xerr) *e = NULL;
        if (msg && rpc_xml_decode_response(msg, strlen(msg), &v, &e) == 0 && e)
            return xe_fail_api(ctx, e);
        fprintf(ctx->err, "Server said: HTTP %d\n", st);
        return 1;
    }
    bool tty = isatty(0);
    struct termios saved;
    bool raw = false;
    if (tty && tcgetattr(0, &saved) == 0) {
        struct termios t = saved;
        t.c_iflag &= ~(unsigned)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
        t.c_oflag &= ~(unsigned)OPOST;
        t.c_lflag &= ~(unsigned)(ECHO | ECHONL | ICANON | ISIG);
        t.c_cflag &= ~(unsigned)(CSIZE | PARENB);
        t.c_cflag |= CS8;
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        raw = tcsetattr(0, TCSANOW, &t) == 0;
    }
    struct sigaction sa = {.sa_handler = SIG_IGN}, old_pipe;
    sigaction(SIGPIPE, &sa, &old_pipe);
    int rc = console_relay(ctx, s, tty, drain);
    sigaction(SIGPIPE, &old_pipe, NULL);
    if (raw) {
        tcsetattr(0, TCSANOW, &saved);
        fprintf(ctx->out, "\r\n");
    }
    xe_stream_free(s);
    return rc;
}
