/* xe custom commands and their table: THE place where later issues add vm-*, vdi-*,
 * sr-*, network-*, vif-*, vbd-* and console entries. */
#define _GNU_SOURCE
#include "xe.h"

#include "mem.h"
#include "net_cmds.h"
#include "storage_cmds.h"
#include "util.h"
#include "vm_cmds.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STRV(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- Custom commands ---- */

static int cmd_task_cancel(xe_ctx *ctx, const xe_cmd *cmd)
{
    AUTOFREE char *ref = NULL;
    const xe_view *v = xe_view_lookup("task");
    if (xe_get_by_uuid(ctx, v, xe_params_get(&ctx->cl->params, "uuid"), &ref, NULL))
        return 1;
    return xe_call(ctx, "task.cancel", xe_args1(ref), NULL);
}

static int cmd_user_password_change(xe_ctx *ctx, const xe_cmd *cmd)
{
    const char *old = xe_params_get(&ctx->cl->params, "old");
    const char *new_pw = xe_params_get(&ctx->cl->params, "new");
    return xe_call(ctx, "session.change_password", xe_args2(old ? old : "", xv_new_string(new_pw)),
                   NULL);
}

/* XCP's read_map_params: "<name>:key=value" (or the old "<name>-key=value") params. */
static xv *read_map_params(const xe_params *ps, const char *name)
{
    xv *m = xv_new_struct();
    size_t len = strlen(name);
    for (size_t i = 0; i < ps->n; i++)
        if (strncmp(ps->v[i].key, name, len) == 0 && strlen(ps->v[i].key) > len + 1)
            xv_struct_set(m, ps->v[i].key + len + 1, xv_new_string(ps->v[i].val));
    return m;
}

static int cmd_message_create(xe_ctx *ctx, const xe_cmd *cmd)
{
    const xe_params *ps = &ctx->cl->params;
    const char *prio = xe_params_get(ps, "priority");
    char *end = NULL;
    long long p = strtoll(prio, &end, 10);
    if (!*prio || *end)
        return xe_fail(ctx, "Priority field should be an integer");
    static const struct {
        const char *param, *cls;
    } objs[] = {{"vm-uuid", "VM"}, {"pool-uuid", "Pool"}, {"sr-uuid", "SR"}, {"host-uuid", "Host"}};
    const char *uuid = NULL, *cls = NULL;
    for (size_t i = 0; i < ARRAY_SIZE(objs) && !uuid; i++)
        if ((uuid = xe_params_get(ps, objs[i].param)))
            cls = objs[i].cls;
    if (!uuid)
        return xe_fail(ctx, "Need one of: vm-uuid, host-uuid, sr-uuid or pool-uuid");
    xv *a = xe_args1(xe_params_get(ps, "name"));
    xv_array_append(a, xv_new_int(p));
    xv_array_append(a, xv_new_string(cls));
    xv_array_append(a, xv_new_string(uuid));
    xv_array_append(a, xv_new_string(xe_params_get(ps, "body")));
    return xe_call(ctx, "message.create", a, NULL);
}

static int cmd_secret_create(xe_ctx *ctx, const xe_cmd *cmd)
{
    const xe_params *ps = &ctx->cl->params;
    xv *rec = xv_new_struct();
    xv_struct_set(rec, "value", xv_new_string(xe_params_get(ps, "value")));
    xv_struct_set(rec, "other_config", read_map_params(ps, "other-config"));
    xv *a = xv_new_array();
    xv_array_append(a, rec);
    AUTO(xv) *ref = NULL;
    if (xe_call(ctx, "secret.create", a, &ref))
        return 1;
    AUTO(xv) *uuid = NULL;
    if (!xv_str(ref) || xe_call(ctx, "secret.get_uuid", xe_args1(xv_str(ref)), &uuid))
        return 1;
    xe_print_one(ctx, xv_str(uuid) ? xv_str(uuid) : "");
    return 0;
}

/* Waits until some object of the class matches every field=value (or field=/=value)
 * filter; the initial event.from snapshot covers objects that already match. */
static int cmd_event_wait(xe_ctx *ctx, const xe_cmd *cmd)
{
    const xe_params *ps = &ctx->cl->params;
    const char *cls_cli = xe_params_get(ps, "class");
    const xe_view *v = xe_view_lookup(cls_cli);
    if (!v)
        return xe_fail(ctx, "Cli listening for class '%s' not currently implemented", cls_cli);
    XE_COLS_AUTO xe_cols cols;
    xe_view_columns(v, &cols);
    AUTOFREE char *token = xstrdup("");
    const char *tmo = xe_params_get(ps, "timeout");
    double deadline = tmo ? now_monotonic() + strtod(tmo, NULL) : INFINITY;
    for (;;) {
        AUTO(xv) *a = xv_new_array();
        AUTO(xv) *classes = xv_new_array();
        xv_array_append(classes, xv_new_string(api_classes[v->cls].name));
        xv_array_append(a, TAKE_PTR(classes));
        xv_array_append(a, xv_new_string(token));
        double left = deadline - now_monotonic();
        xv_array_append(a, xv_new_float(left < 30. ? (left > 0 ? left : 0) : 30.));
        AUTO(xv) *r = NULL;
        if (xe_call(ctx, "event.from", TAKE_PTR(a), &r))
            return 1;
        const char *t = xv_struct_get_str(r, "token");
        if (t) {
            free(token);
            token = xstrdup(t);
        }
        const xv *evs = xv_struct_get(r, "events");
        for (size_t i = 0; evs && evs->kind == XV_ARRAY && i < evs->u.arr.n; i++) {
            const xv *ev = evs->u.arr.items[i];
            const char *op = xv_struct_get_str(ev, "operation");
            const xv *snap = xv_struct_get(ev, "snapshot");
            if (!snap || snap->kind != XV_STRUCT || (op && strcmp(op, "del") == 0))
                continue;
            bool all = true;
            for (size_t k = 0; k < ps->n && all; k++) {
                const char *key = ps->v[k].key, *want = ps->v[k].val;
                if (strcmp(key, "class") == 0 || strcmp(key, "timeout") == 0 ||
                    xe_strv_has(xe_std_params, key))
                    continue;
                const xe_col *c = xe_col_lookup(&cols, key);
                if (!c)
                    return xe_fail(ctx, "key missing: %s", key);
                AUTOFREE char *s = xe_col_value(ctx, c, snap);
                if (strncmp(want, "/=", 2) == 0)
                    all = strcmp(s, want + 2) != 0;
                else
                    all = strcmp(s, want) == 0;
            }
            if (all)
                return 0;
        }
        if (now_monotonic() >= deadline)
            return xe_fail(ctx, "Timed out waiting for the event");
    }
}

/* ---- help ---- */

static char *join(const char *const *v, const char *sep)
{
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, "");
    for (size_t i = 0; v && v[i]; i++)
        sbuf_printf(&b, "%s%s", i ? sep : "", v[i]);
    return sbuf_steal(&b, NULL);
}

static void print_help_record(xe_ctx *ctx, const xe_cmd *c)
{
    xe_row r = {0};
    xe_row_add(&r, xstrdup("command name        "), xstrdup(c->name));
    xe_row_add(&r, xstrdup("reqd params     "), join(c->reqd, ", "));
    char *opt = join(c->optn, ", ");
    if (c->sel) {
        char *o2 = xasprintf("%s%s%s", opt, *opt ? ", " : "", c->sel->help_param);
        free(opt);
        opt = o2;
    }
    xe_row_add(&r, xstrdup("optional params "), opt);
    xe_row_add(&r, xstrdup("description     "),
               xasprintf("%s%s", c->help, c->sel ? c->sel->help_info : ""));
    xe_print_table(ctx, &r, 1);
    xe_row_clear(&r);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* XCP's make_list: names joined with ", " on lines of at most ~78 columns. */
static void print_name_lines(xe_ctx *ctx, const char **names, size_t n)
{
    if (n == 0)
        return;
    sbuf cur = SBUF_INIT;
    sbuf_printf(&cur, "    %s", names[0]);
    for (size_t i = 1; i < n; i++) {
        if (cur.len + strlen(names[i]) > 74) {
            xe_print_one(ctx, cur.data);
            sbuf_release(&cur);
            sbuf_printf(&cur, "    %s", names[i]);
        } else {
            sbuf_printf(&cur, ", %s", names[i]);
        }
    }
    xe_print_one(ctx, cur.data);
    sbuf_release(&cur);
}

void xe_print_usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "Usage: %s <cmd> [-s server] [-p port] ([-u username] [-pw password] or "
            "[-pwf <password file>]) [--traceparent traceparent] <other arguments>\n",
            argv0);
    fprintf(f,
            "\nA full list of commands can be obtained by running \n\t%s help -s <server> -p "
            "<port>\n",
            argv0);
}

static int cmd_help(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    const xe_params *ps = &ctx->cl->params;
    static const char *const skip[] = {"server",  "username", "password", "port",
                                       "minimal", "all",      NULL};
    bool any = false;
    for (size_t i = 0; i < ps->n; i++) {
        if (xe_strv_has(skip, ps->v[i].key) || xe_strv_has(xe_std_params, ps->v[i].key))
            continue;
        any = true;
        const xe_cmd *c = xe_command_lookup(ps->v[i].key);
        if (c) {
            print_help_record(ctx, c);
        } else {
            AUTOFREE char *m = xasprintf("Unknown command '%s'", ps->v[i].key);
            xe_print_one(ctx, m);
        }
    }
    if (any)
        return 0;
    const char *argv0 = "xe";
    size_t n = xe_command_count();
    const char **names = xcalloc(n + 1, sizeof(char *));
    size_t nn = 0;
    const char *all = xe_params_get(ps, "all");
    bool full = all && strcmp(all, "true") == 0;
    for (size_t i = 0; i < n; i++)
        if (full || (xe_command_at(i)->flags & XE_CMD_STANDARD))
            names[nn++] = xe_command_at(i)->name;
    qsort(names, nn, sizeof(char *), cmp_name);
    if (ctx->minimal) {
        xe_print_list(ctx, names, nn);
        free(names);
        return 0;
    }
    AUTOFREE char *usage =
        xasprintf("Usage:\n"
                  "  %s <command>\n"
                  "    [ -s <server> ]            XenServer host\n"
                  "    [ -p <port> ]              XenServer port number\n"
                  "    [ -u <username> -pw <password> | -pwf <password file> ]\n"
                  "                               User authentication (password or file)\n"
                  "    [ --nossl ]                Disable SSL/TLS\n"
                  "    [ --debug ]                Enable debug output\n"
                  "    [ --debug-on-fail ]        Enable debug output only on failure\n"
                  "    [ --traceparent <value> ]  Distributed tracing context\n"
                  "    [ <other arguments> ... ]  Command-specific options\n"
                  "\n"
                  "To get help on a specific command:\n"
                  "  %s help <command>\n"
                  "\n",
                  argv0, argv0);
    if (full) {
        AUTOFREE char *h = xasprintf("%sFull command list\n-----------------\n", usage);
        xe_print_one(ctx, h);
        const char **host = xcalloc(nn + 1, sizeof(char *)), **vm = xcalloc(nn + 1, sizeof(char *)),
                   **other = xcalloc(nn + 1, sizeof(char *));
        size_t nh = 0, nv = 0, no = 0;
        for (size_t i = 0; i < nn; i++) {
            if (strncmp(names[i], "host-", 5) == 0)
                host[nh++] = names[i];
            else if (strncmp(names[i], "vm-", 3) == 0)
                vm[nv++] = names[i];
            else
                other[no++] = names[i];
        }
        const char *blank[] = {""};
        print_name_lines(ctx, host, nh);
        print_name_lines(ctx, blank, 1);
        print_name_lines(ctx, vm, nv);
        print_name_lines(ctx, blank, 1);
        print_name_lines(ctx, other, no);
        free(host);
        free(vm);
        free(other);
    } else {
        AUTOFREE char *h = xasprintf("%sTo get a full listing of commands:\n  %s help --all\n\n"
                                     "Common command list\n-------------------\n",
                                     usage, argv0);
        xe_print_one(ctx, h);
        print_name_lines(ctx, names, nn);
    }
    free(names);
    return 0;
}

/* The custom commands: THE place to add vm-*, vdi-*, sr-*, network-*, vif-*, vbd-* and
 * console entries (name, reqd/optn params, XCP's help text, body; .sel for commands taking
 * vm=/host=/sr= selectors). A custom entry named like a generic one replaces it. */
const xe_cmd xe_custom_cmds[] = {
    {.name = "help",
     .help = "Display help for a command, or a list of commands.",
     .fn = cmd_help,
     .flags = XE_CMD_NOSESSION},
    {.name = "event-wait",
     .reqd = STRV("class"),
     .optn = STRV("timeout"),
     .help = "Wait for the event that satisfies the conditions given on the command line.",
     .fn = cmd_event_wait},
    {.name = "message-create",
     .reqd = STRV("name", "priority", "body"),
     .optn = STRV("vm-uuid", "host-uuid", "sr-uuid", "pool-uuid"),
     .help = "Create a message associated with a particular API object. Note exactly one of the "
             "optional parameters must be supplied.",
     .fn = cmd_message_create},
    {.name = "secret-create",
     .reqd = STRV("value"),
     .help = "Create a secret",
     .fn = cmd_secret_create},
    {.name = "task-cancel",
     .reqd = STRV("uuid"),
     .help = "Set a task to cancelling and return.",
     .fn = cmd_task_cancel},
    {.name = "user-password-change",
     .reqd = STRV("new"),
     .optn = STRV("old"),
     .help = "Change a user's login password.",
     .fn = cmd_user_password_change},
    /* Storage (storage_cmds.c). sr-destroy and vdi-destroy are still the generic entries
     * (same calls; help "Destroy the <class> object."): a custom entry replacing a generic
     * one leaks the generic's name and help (generic.c add_cmd), which fails the ASan build;
     * xe_cmd_sr_destroy/xe_cmd_vdi_destroy with XCP's texts are ready for when it frees them. */
    {.name = "sr-create",
     .reqd = STRV("name-label", "type"),
     .optn = STRV("name-description", "host-uuid", "device-config:", "shared", "physical-size",
                  "content-type", "sm-config:"),
     .help = "Create an SR, also a PBD. The device-config parameters can be specified by "
             "device-config:foo=baa, for example.",
     .fn = xe_cmd_sr_create},
    {.name = "sr-probe",
     .reqd = STRV("type"),
     .optn = STRV("host-uuid", "device-config:", "sm-config:"),
     .help = "Perform a storage probe. The device-config parameters can be specified by e.g. "
             "device-config:devs=/dev/sdb1.",
     .fn = xe_cmd_sr_probe},
    {.name = "sr-destroy",
     .reqd = STRV("uuid"),
     .help = "Destroy the SR.",
     .fn = xe_cmd_sr_destroy},
    {.name = "vdi-destroy",
     .reqd = STRV("uuid"),
     .help = "Destroy a VDI.",
     .fn = xe_cmd_vdi_destroy},
    {.name = "sr-forget",
     .reqd = STRV("uuid"),
     .help = "Forget about the SR.",
     .fn = xe_cmd_sr_forget},
    {.name = "sr-scan",
     .reqd = STRV("uuid"),
     .help =
         "Force an SR scan, syncing database with VDIs present in underlying storage substrate.",
     .fn = xe_cmd_sr_scan},
    {.name = "sr-update",
     .reqd = STRV("uuid"),
     .help = "Refresh the fields of the SR object in the database.",
     .fn = xe_cmd_sr_update},
    {.name = "vdi-create",
     .reqd = STRV("sr-uuid", "name-label", "virtual-size"),
     .optn = STRV("sm-config:", "sharable", "tags:", "type", "read-only"),
     .help = "Create a VDI. Type is 'system' 'user' 'suspend' or 'crashdump'.",
     .fn = xe_cmd_vdi_create},
    {.name = "vdi-forget",
     .reqd = STRV("uuid"),
     .help = "Forget about a VDI.",
     .fn = xe_cmd_vdi_forget},
    {.name = "vdi-resize",
     .reqd = STRV("uuid", "disk-size"),
     .optn = STRV("online"),
     .help = "Resize a VDI.",
     .fn = xe_cmd_vdi_resize},
    {.name = "vdi-snapshot",
     .reqd = STRV("uuid"),
     .optn = STRV("driver-params-"),
     .help = "Snapshot a specified VDI.",
     .fn = xe_cmd_vdi_snapshot},
    {.name = "vdi-clone",
     .reqd = STRV("uuid"),
     .optn = STRV("driver-params-", "new-name-label", "new-name-description"),
     .help = "Clone a specified VDI.",
     .fn = xe_cmd_vdi_clone},
    {.name = "vdi-copy",
     .reqd = STRV("uuid"),
     .optn = STRV("sr-uuid", "base-vdi-uuid", "into-vdi-uuid"),
     .help = "Copy either a full VDI or the block differences between two VDIs either into a fresh "
             "VDI in a specified SR or into an existing VDI.",
     .fn = xe_cmd_vdi_copy},
    {.name = "pbd-plug",
     .reqd = STRV("uuid"),
     .help = "Attempt to plug in the PBD to the host. If this succeeds then the referenced SR (and "
             "the VDIs contained within) should be visible to the host.",
     .fn = xe_cmd_pbd_plug},
    {.name = "pbd-unplug",
     .reqd = STRV("uuid"),
     .help =
         "Attempt to unplug the PBD from the host. If this succeeds then the referenced SR (and "
         "the VDIs contained within) should not be visible to the host.",
     .fn = xe_cmd_pbd_unplug},
    /* Networks, PIFs, VIFs, VLANs and bonds (net_cmds.c), XCP's parameters and help texts */
    {.name = "network-create",
     .reqd = STRV("name-label"),
     .optn = STRV("name-description", "MTU", "bridge"),
     .help = "Create a new network.",
     .fn = xe_cmd_network_create},
    {.name = "pif-scan",
     .reqd = STRV("host-uuid"),
     .help = "Scan for new physical interfaces on a host.",
     .fn = xe_cmd_pif_scan},
    {.name = "pif-plug",
     .reqd = STRV("uuid"),
     .help = "Attempt to bring up a network interface.",
     .fn = xe_cmd_pif_plug},
    {.name = "pif-unplug",
     .reqd = STRV("uuid"),
     .help = "Attempt to bring down a network interface.",
     .fn = xe_cmd_pif_unplug},
    {.name = "pif-reconfigure-ip",
     .reqd = STRV("uuid", "mode"),
     .optn = STRV("IP", "netmask", "gateway", "DNS"),
     .help = "Reconfigure the IP address settings on a PIF.",
     .fn = xe_cmd_pif_reconfigure_ip},
    {.name = "vif-create",
     .reqd = STRV("device", "network-uuid", "vm-uuid"),
     .optn = STRV("mac"),
     .help = "Create a VIF. Appropriate values for the device are listed in the parameter "
             "'allowed-VIF-devices' on the VM. If specified, the MAC parameter is of the form "
             "aa:bb:cc:dd:ee:ff, and should be a locally administered unicast MAC (the lowest two "
             "bits of the first octet should be 10).",
     .fn = xe_cmd_vif_create},
    {.name = "vif-plug",
     .reqd = STRV("uuid"),
     .help = "Attempt to attach the VIF while the VM is in the running state.",
     .fn = xe_cmd_vif_plug},
    {.name = "vif-unplug",
     .reqd = STRV("uuid"),
     .optn = STRV("force"),
     .help = "Attempt to detach the VIF from the VM while it is running.",
     .fn = xe_cmd_vif_unplug},
    {.name = "vlan-create",
     .reqd = STRV("pif-uuid", "vlan", "network-uuid"),
     .help = "Create a new VLAN on a host.",
     .fn = xe_cmd_vlan_create},
    {.name = "vlan-destroy",
     .reqd = STRV("uuid"),
     .help = "Destroy a VLAN. Requires the VLAN PIF's UUID.",
     .fn = xe_cmd_vlan_destroy},
    {.name = "bond-create",
     .reqd = STRV("network-uuid", "pif-uuids"),
     .optn = STRV("mac", "mode", "properties:"),
     .help = "Create a bonded interface from a list of existing PIF objects. The command will fail "
             "if PIFs are in another bond already, if any member has a VLAN tag set, if the "
             "referenced PIFs are not on the same XenServer host, or if fewer than 2 PIFs are "
             "supplied.",
     .fn = xe_cmd_bond_create},
    {.name = "bond-destroy",
     .reqd = STRV("uuid"),
     .help = "Delete a bonded interface, automatically replugging the slave interfaces.",
     .fn = xe_cmd_bond_destroy},
    {.name = "bond-set-mode",
     .reqd = STRV("uuid", "mode"),
     .help = "Change the bond mode.",
     .fn = xe_cmd_bond_set_mode},
    /* VMs, VBDs and the console (vm_cmds.c), XCP's parameters and help texts */
    {.name = "vm-install",
     .reqd = STRV("new-name-label"),
     .optn = STRV("sr-name-label", "sr-uuid", "template", "copy-bios-strings-from"),
     .help = "Install a new VM from a template. The template parameter can match either the "
             "template name or the uuid.",
     .fn = xe_cmd_vm_install,
     .flags = XE_CMD_STANDARD},
    {.name = "vm-uninstall",
     .optn = STRV("force"),
     .help = "Uninstall a VM. This operation will destroy those VDIs that are marked RW and "
             "connected to this VM only. To simply destroy the VM record, use vm-destroy.",
     .fn = xe_cmd_vm_uninstall,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-destroy",
     .reqd = STRV("uuid"),
     .help = "Destroy a VM. This leaves the storage associated with the VM intact. To delete "
             "storage too, use vm-uninstall.",
     .fn = xe_cmd_vm_destroy},
    {.name = "console",
     .optn = STRV("drain"), /* ours: seconds of VM silence before exiting once stdin ended */
     .help = "Attach to a particular console.",
     .fn = xe_cmd_console,
     .sel = &xe_sel_vm},
    {.name = "vm-start",
     .optn = STRV("force", "on", "paused"),
     .help = "Start the selected VM(s). Where pooling is enabled, the host on which to start can "
             "be specified with the 'on' parameter that takes a uuid. The optional parameter "
             "'--force' will bypass any hardware-compatibility warnings.",
     .fn = xe_cmd_vm_start,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-suspend",
     .help = "Suspend the selected VM(s).",
     .fn = xe_cmd_vm_suspend,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-resume",
     .optn = STRV("force", "on"),
     .help = "Resume the selected VM(s).",
     .fn = xe_cmd_vm_resume,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-shutdown",
     .optn = STRV("force"),
     .help = "Shutdown the selected VM(s). The optional argument --force will forcibly shut down "
             "the VM.",
     .fn = xe_cmd_vm_shutdown,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-reset-powerstate",
     .optn = STRV("force"),
     .help = "Force the VM powerstate to halted in the management toolstack database only. This "
             "command is used to recover a VM that is marked as 'running', but is known to be on "
             "a dead slave host that will not recover. This is a potentially dangerous "
             "operation: you must ensure that the VM you are forcing to 'halted' is definitely "
             "not running anywhere.",
     .fn = xe_cmd_vm_reset_powerstate,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-reboot",
     .optn = STRV("force"),
     .help = "Reboot the selected VM(s).",
     .fn = xe_cmd_vm_reboot,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-pause",
     .help = "Pause a running VM. Note this operation does not free the associated memory (see "
             "'vm-suspend').",
     .fn = xe_cmd_vm_pause,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-unpause",
     .help = "Unpause a paused VM.",
     .fn = xe_cmd_vm_unpause,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-clone",
     .reqd = STRV("new-name-label"),
     .optn = STRV("new-name-description"),
     .help = "Clone an existing VM, using storage-level fast disk clone operation where "
             "available.",
     .fn = xe_cmd_vm_clone,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-snapshot",
     .reqd = STRV("new-name-label"),
     .optn = STRV("new-name-description", "ignore-vdi-uuids"),
     .help = "Snapshot an existing VM, using storage-level fast disk snapshot operation where "
             "available.",
     .fn = xe_cmd_vm_snapshot,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-copy",
     .reqd = STRV("new-name-label"),
     .optn = STRV("new-name-description", "sr-uuid"),
     .help = "Copy an existing VM, but without using storage-level fast disk clone operation "
             "(even if this is available). The disk images of the copied VM are guaranteed to be "
             "'full images' - i.e. not part of a CoW chain.",
     .fn = xe_cmd_vm_copy,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "snapshot-revert",
     .optn = STRV("uuid", "snapshot-uuid"),
     .help = "Revert an existing VM to a previous checkpointed or snapshotted state.",
     .fn = xe_cmd_snapshot_revert,
     .flags = XE_CMD_STANDARD},
    {.name = "vm-vcpu-hotplug",
     .reqd = STRV("new-vcpus"),
     .help = "Dynamically adjust the number of VCPUs available to running VM.",
     .fn = xe_cmd_vm_vcpu_hotplug,
     .sel = &xe_sel_vm},
    {.name = "vm-memory-dynamic-range-set",
     .reqd = STRV("min", "max"),
     .help = "Configure the dynamic memory range of a VM. The dynamic memory range defines soft "
             "lower and upper limits for a VM's memory. It's possible to change these fields "
             "when a VM is running or halted. The dynamic range must fit within the static "
             "range.",
     .fn = xe_cmd_vm_memory_dynamic_range_set,
     .sel = &xe_sel_vm},
    {.name = "vm-memory-static-range-set",
     .reqd = STRV("min", "max"),
     .help = "Configure the static memory range of a VM. The static memory range defines hard "
             "lower and upper limits for a VM's memory. It's possible to change these fields "
             "only when a VM is halted. The static range must encompass the dynamic range.",
     .fn = xe_cmd_vm_memory_static_range_set,
     .sel = &xe_sel_vm},
    {.name = "vm-memory-limits-set",
     .reqd = STRV("static-min", "static-max", "dynamic-min", "dynamic-max"),
     .help = "Configure the memory limits of a VM.",
     .fn = xe_cmd_vm_memory_limits_set,
     .sel = &xe_sel_vm},
    {.name = "vm-memory-set",
     .reqd = STRV("memory"),
     .help = "Configure the memory allocation of a VM.",
     .fn = xe_cmd_vm_memory_set,
     .sel = &xe_sel_vm},
    {.name = "vm-memory-target-set",
     .reqd = STRV("target"),
     .help = "Set the memory target for a halted or running VM. The given value must be within "
             "the range defined by the VM's memory_static_min and memory_static_max values.",
     .fn = xe_cmd_vm_memory_target_set,
     .sel = &xe_sel_vm},
    {.name = "vm-disk-list",
     .optn = STRV("vbd-params", "vdi-params"),
     .help = "List the disks on the selected VM(s).",
     .fn = xe_cmd_vm_disk_list,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-cd-list",
     .optn = STRV("vbd-params", "vdi-params"),
     .help = "List the CDs currently attached to the VM(s).",
     .fn = xe_cmd_vm_cd_list,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-cd-eject",
     .help = "Eject a CD from the virtual CD drive. This command will only work if there is one "
             "and only one CD attached to the VM. When there are two or more CDs, please use the "
             "command 'vbd-eject' and specify the uuid of the VBD.",
     .fn = xe_cmd_vm_cd_eject,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-cd-insert",
     .reqd = STRV("cd-name"),
     .help = "Insert a CD into the virtual CD drive. This command will only work if there is one "
             "and only one empty CD device attached to the VM. When there are two or more empty "
             "CD devices, please use the command 'vbd-insert' and specify the uuids of the VBD "
             "and of the VDI to insert.",
     .fn = xe_cmd_vm_cd_insert,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vm-vif-list",
     .help = "List the VIFs present on selected VM.",
     .fn = xe_cmd_vm_vif_list,
     .flags = XE_CMD_STANDARD,
     .sel = &xe_sel_vm},
    {.name = "vbd-create",
     .reqd = STRV("vm-uuid", "device"),
     .optn = STRV("vdi-uuid", "bootable", "type", "mode", "unpluggable"),
     .help = "Create a VBD. Appropriate values for the device field are listed in the parameter "
             "'allowed-VBD-devices' on the VM. If no VDI is specified, an empty VBD will be "
             "created. The type parameter can be 'Disk', 'CD' or 'Floppy', and the mode is 'RO' "
             "or 'RW'.",
     .fn = xe_cmd_vbd_create},
    {.name = "vbd-destroy",
     .reqd = STRV("uuid"),
     .help = "Destroy a VBD.",
     .fn = xe_cmd_vbd_destroy},
    {.name = "vbd-insert",
     .reqd = STRV("uuid", "vdi-uuid"),
     .help = "Insert new media into the drive represented by a VBD.",
     .fn = xe_cmd_vbd_insert},
    {.name = "vbd-eject",
     .reqd = STRV("uuid"),
     .help = "Remove the media from the drive represented by a VBD.",
     .fn = xe_cmd_vbd_eject},
    {.name = "vbd-plug",
     .reqd = STRV("uuid"),
     .help = "Attempt to attach the VBD while the VM is in the running state.",
     .fn = xe_cmd_vbd_plug},
    {.name = "vbd-unplug",
     .reqd = STRV("uuid"),
     .optn = STRV("timeout", "force"),
     .help = "Attempt to detach the VBD while the VM is in the running state. If the optional "
             "argument 'timeout=N' is given then the command will wait for up to 'N' seconds for "
             "the unplug to complete. If the optional argument 'force' is given then it will be "
             "immediately unplugged.",
     .fn = xe_cmd_vbd_unplug},
};
const size_t xe_ncustom_cmds = ARRAY_SIZE(xe_custom_cmds);
