/* xe storage commands: sr-create/probe/destroy/forget/scan/update, vdi-create/destroy/forget/
 * resize/snapshot/clone/copy, pbd-plug/unplug, with XCP's parameters, size suffixes and
 * errors. Their table entries are in commands.c. */
#define _GNU_SOURCE
#include "storage_cmds.h"

#include "mem.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NULL_REF "OpaqueRef:NULL"

bool xe_bytes_of_string(const char *s, long long *ret)
{
    static const struct {
        const char *names[3];
        int shift;
    } units[] = {
        {{"", "bytes", "b"}, 0},  {{"k", "kb", "kib"}, 10}, {{"m", "mb", "mib"}, 20},
        {{"g", "gb", "gib"}, 30}, {{"t", "tb", "tib"}, 40},
    };
    const char *p = s; /* no leading blanks: OCaml's "%Ld" does not skip them */
    if (*p == '+' || *p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return false;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || n < 0)
        return false;
    while (isspace((unsigned char)*end))
        end++;
    size_t len = 0;
    while (end[len] && !isspace((unsigned char)end[len]))
        len++;
    for (size_t i = 0; i < ARRAY_SIZE(units); i++)
        for (size_t j = 0; j < 3; j++)
            if (strlen(units[i].names[j]) == len && strncasecmp(end, units[i].names[j], len) == 0) {
                if (n > (LLONG_MAX >> units[i].shift))
                    return false;
                *ret = n << units[i].shift;
                return true;
            }
    return false;
}

/* XCP's bytes_of_string field x: a Record_failure printed as "Error: ...". */
static int parse_size(xe_ctx *ctx, const char *field, long long *ret)
{
    const char *s = xe_params_get(&ctx->cl->params, field);
    if (xe_bytes_of_string(s ? s : "", ret))
        return 0;
    return xe_fail(ctx,
                   "Failed to parse field '%s': expecting an integer (possibly with suffix KiB, "
                   "MiB, GiB, TiB), got '%s'",
                   field, s ? s : "");
}

/* "<name>:key=value" (or the older "<name>-key=value") params as a string map. */
static xv *map_params(const xe_params *ps, const char *name)
{
    xv *m = xv_new_struct();
    size_t len = strlen(name);
    for (size_t i = 0; i < ps->n; i++)
        if (strncmp(ps->v[i].key, name, len) == 0 &&
            (ps->v[i].key[len] == ':' || ps->v[i].key[len] == '-') && ps->v[i].key[len + 1])
            xv_struct_set(m, ps->v[i].key + len + 1, xv_new_string(ps->v[i].val));
    return m;
}

/* "<name>:..." params as a set of their values (XCP's read_set_params). */
static xv *set_params(const xe_params *ps, const char *name)
{
    xv *a = xv_new_array();
    size_t len = strlen(name);
    for (size_t i = 0; i < ps->n; i++)
        if (strncmp(ps->v[i].key, name, len) == 0 && ps->v[i].key[len] == ':')
            xv_array_append(a, xv_new_string(ps->v[i].val));
    return a;
}

/* XCP's parse_host_uuid: host-uuid=, else the master when the pool has one host or the SR
 * is shared. */
static int host_ref(xe_ctx *ctx, bool default_master, char **ret)
{
    if (xe_params_get(&ctx->cl->params, "host-uuid"))
        return xe_ref_of(ctx, "host", "host-uuid", ret);
    AUTO(xv) *hosts = NULL;
    if (xe_call(ctx, "host.get_all", NULL, &hosts))
        return 1;
    bool standalone = hosts && hosts->kind == XV_ARRAY && hosts->u.arr.n == 1;
    if (!standalone && !default_master)
        return xe_fail(ctx, "Required parameter not found: host-uuid");
    AUTO(xv) *pools = NULL;
    if (xe_call(ctx, "pool.get_all", NULL, &pools))
        return 1;
    if (!pools || pools->kind != XV_ARRAY || pools->u.arr.n == 0 || !xv_str(pools->u.arr.items[0]))
        return xe_fail(ctx, "Server internal error.");
    AUTO(xv) *master = NULL;
    if (xe_call(ctx, "pool.get_master", xe_args1(xv_str(pools->u.arr.items[0])), &master))
        return 1;
    if (!xv_str(master))
        return xe_fail(ctx, "Server internal error.");
    *ret = xstrdup(xv_str(master));
    return 0;
}

/* ---- SR ---- */

int xe_cmd_sr_create(xe_ctx *ctx, const xe_cmd *cmd)
{
    const xe_params *ps = &ctx->cl->params;
    bool shared;
    if (xe_bool_param(ctx, "shared", false, &shared))
        return 1;
    AUTOFREE char *host = NULL;
    if (host_ref(ctx, shared, &host))
        return 1;
    long long psize = 0;
    const char *ps_s = xe_params_get(ps, "physical-size");
    if (!ps_s || !xe_bytes_of_string(ps_s, &psize))
        psize = 0; /* as XCP: an unparsable physical-size is 0 */
    const char *desc = xe_params_get(ps, "name-description");
    const char *ct = xe_params_get(ps, "content-type");
    xv *a = xe_args1(host);
    xv_array_append(a, map_params(ps, "device-config"));
    xv_array_append(a, xv_new_int(psize));
    xv_array_append(a, xv_new_string(xe_params_get(ps, "name-label")));
    xv_array_append(a, xv_new_string(desc ? desc : ""));
    xv_array_append(a, xv_new_string(xe_params_get(ps, "type")));
    xv_array_append(a, xv_new_string(ct ? ct : ""));
    xv_array_append(a, xv_new_bool(shared));
    xv_array_append(a, map_params(ps, "sm-config"));
    AUTO(xv) *ref = NULL;
    if (xe_call(ctx, "SR.create", a, &ref))
        return 1;
    return xe_print_new_uuid(ctx, "SR", xv_str(ref));
}

/* SR.probe's answer (XML from file-like SRs), printed as it comes. */
int xe_cmd_sr_probe(xe_ctx *ctx, const xe_cmd *cmd)
{
    const xe_params *ps = &ctx->cl->params;
    AUTOFREE char *host = NULL;
    if (host_ref(ctx, true, &host))
        return 1;
    xv *a = xe_args1(host);
    xv_array_append(a, map_params(ps, "device-config"));
    xv_array_append(a, xv_new_string(xe_params_get(ps, "type")));
    xv_array_append(a, map_params(ps, "sm-config"));
    AUTO(xv) *out = NULL;
    if (xe_call(ctx, "SR.probe", a, &out))
        return 1;
    xe_print_one(ctx, xv_str(out) ? xv_str(out) : "");
    return 0;
}

int xe_cmd_sr_destroy(xe_ctx *ctx, const xe_cmd *cmd)
{
    return xe_uuid_op(ctx, "sr", "SR.destroy");
}

int xe_cmd_sr_forget(xe_ctx *ctx, const xe_cmd *cmd)
{
    return xe_uuid_op(ctx, "sr", "SR.forget");
}

int xe_cmd_sr_scan(xe_ctx *ctx, const xe_cmd *cmd)
{
    return xe_uuid_op(ctx, "sr", "SR.scan");
}

int xe_cmd_sr_update(xe_ctx *ctx, const xe_cmd *cmd)
{
    return xe_uuid_op(ctx, "sr", "SR.update");
}

/* ---- VDI ---- */

int xe_cmd_vdi_create(xe_ctx *ctx, const xe_cmd *cmd)
{
    const xe_params *ps = &ctx->cl->params;
    AUTOFREE char *sr = NULL;
    if (xe_ref_of(ctx, "sr", "sr-uuid", &sr))
        return 1;
    long long size;
    if (parse_size(ctx, "virtual-size", &size))
        return 1;
    const char *type = xe_params_get(ps, "type");
    static const char *const types[] = {"system", "user", "suspend", "crashdump", NULL};
    if (!type)
        type = "user";
    else if (!xe_strv_has(types, type))
        return xe_fail(ctx, "Unknown vdi type: %s", type);
    bool sharable, ro;
    if (xe_bool_param(ctx, "sharable", false, &sharable) ||
        xe_bool_param(ctx, "read-only", false, &ro))
        return 1;
    xv *rec = xv_new_struct();
    xv_struct_set(rec, "name_label", xv_new_string(xe_params_get(ps, "name-label")));
    xv_struct_set(rec, "name_description", xv_new_string(""));
    xv_struct_set(rec, "SR", xv_new_string(sr));
    xv_struct_set(rec, "virtual_size", xv_new_int(size));
    xv_struct_set(rec, "type", xv_new_string(type));
    xv_struct_set(rec, "sharable", xv_new_bool(sharable));
    xv_struct_set(rec, "read_only", xv_new_bool(ro));
    xv_struct_set(rec, "xenstore_data", xv_new_struct());
    xv_struct_set(rec, "other_config", xv_new_struct());
    xv_struct_set(rec, "sm_config", map_params(ps, "sm-config"));
    xv_struct_set(rec, "tags", set_params(ps, "tags"));
    xv *a = xv_new_array();
    xv_array_append(a, rec);
    AUTO(xv) *ref = NULL;
    if (xe_call(ctx, "VDI.create", a, &ref))
        return 1;
    return xe_print_new_uuid(ctx, "VDI", xv_str(ref));
}

int xe_cmd_vdi_destroy(xe_ctx *ctx, const xe_cmd *cmd)
{
    return xe_uuid_op(ctx, "vdi", "VDI.destroy");
}

int xe_cmd_vdi_forget(xe_ctx *ctx, const xe_cmd *cmd)
{
    return xe_uuid_op(ctx, "vdi", "VDI.forget");
}

int xe_cmd_vdi_resize(xe_ctx *ctx, const xe_cmd *cmd)
{
    AUTOFREE char *vdi = NULL;
    if (xe_ref_of(ctx, "vdi", "uuid", &vdi))
        return 1;
    long long size;
    if (parse_size(ctx, "disk-size", &size))
        return 1;
    const char *online = xe_params_get(&ctx->cl->params, "online");
    bool on = online && strcmp(online, "true") == 0;
    return xe_call(ctx, on ? "VDI.resize_online" : "VDI.resize", xe_args2(vdi, xv_new_int(size)),
                   NULL);
}

int xe_cmd_vdi_snapshot(xe_ctx *ctx, const xe_cmd *cmd)
{
    AUTOFREE char *vdi = NULL;
    if (xe_ref_of(ctx, "vdi", "uuid", &vdi))
        return 1;
    AUTO(xv) *ref = NULL;
    if (xe_call(ctx, "VDI.snapshot", xe_args2(vdi, map_params(&ctx->cl->params, "driver-params")),
                &ref))
        return 1;
    return xe_print_new_uuid(ctx, "VDI", xv_str(ref));
}

int xe_cmd_vdi_clone(xe_ctx *ctx, const xe_cmd *cmd)
{
    const xe_params *ps = &ctx->cl->params;
    AUTOFREE char *vdi = NULL;
    if (xe_ref_of(ctx, "vdi", "uuid", &vdi))
        return 1;
    AUTO(xv) *ref = NULL;
    if (xe_call(ctx, "VDI.clone", xe_args2(vdi, map_params(ps, "driver-params")), &ref))
        return 1;
    if (!xv_str(ref))
        return xe_fail(ctx, "Server internal error.");
    const char *label = xe_params_get(ps, "new-name-label");
    const char *desc = xe_params_get(ps, "new-name-description");
    if (label &&
        xe_call(ctx, "VDI.set_name_label", xe_args2(xv_str(ref), xv_new_string(label)), NULL))
        return 1;
    if (desc &&
        xe_call(ctx, "VDI.set_name_description", xe_args2(xv_str(ref), xv_new_string(desc)), NULL))
        return 1;
    return xe_print_new_uuid(ctx, "VDI", xv_str(ref));
}

int xe_cmd_vdi_copy(xe_ctx *ctx, const xe_cmd *cmd)
{
    const xe_params *ps = &ctx->cl->params;
    AUTOFREE char *vdi = NULL, *base = NULL, *sr = NULL, *into = NULL;
    if (xe_ref_of(ctx, "vdi", "uuid", &vdi))
        return 1;
    if (xe_params_get(ps, "base-vdi-uuid") && xe_ref_of(ctx, "vdi", "base-vdi-uuid", &base))
        return 1;
    bool has_sr = xe_params_get(ps, "sr-uuid"), has_into = xe_params_get(ps, "into-vdi-uuid");
    if (has_sr == has_into)
        return xe_fail(ctx, "Please specify one but not both of: a destination sr-uuid (I will "
                            "create a fresh VDI); or a destination into-vdi-uuid (I will copy "
                            "the blocks into this VDI)");
    if (has_sr ? xe_ref_of(ctx, "sr", "sr-uuid", &sr)
               : xe_ref_of(ctx, "vdi", "into-vdi-uuid", &into))
        return 1;
    xv *a = xe_args1(vdi);
    xv_array_append(a, xv_new_string(sr ? sr : NULL_REF));
    xv_array_append(a, xv_new_string(base ? base : NULL_REF));
    xv_array_append(a, xv_new_string(into ? into : NULL_REF));
    AUTO(xv) *ref = NULL;
    if (xe_call(ctx, "VDI.copy", a, &ref))
        return 1;
    return xe_print_new_uuid(ctx, "VDI", xv_str(ref));
}

/* ---- PBD ---- */

int xe_cmd_pbd_plug(xe_ctx *ctx, const xe_cmd *cmd)
{
    return xe_uuid_op(ctx, "pbd", "PBD.plug");
}

int xe_cmd_pbd_unplug(xe_ctx *ctx, const xe_cmd *cmd)
{
    return xe_uuid_op(ctx, "pbd", "PBD.unplug");
}
