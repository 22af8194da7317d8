/* xe network commands with XCP's parameters and outputs: network-create, pif-scan/plug/
 * unplug/reconfigure-ip, vif-create/plug/unplug, vlan-create/destroy (by the VLAN PIF's uuid,
 * as XCP), bond-create/destroy/set-mode. Their table entries are in commands.c. */
#define _GNU_SOURCE
#include "net_cmds.h"

#include "mem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NULL_REF "OpaqueRef:NULL"

static const char *param(xe_ctx *ctx, const char *name)
{
    return xe_params_get(&ctx->cl->params, name);
}

/* An OCaml Int64.of_string parameter. */
static int int_param(xe_ctx *ctx, const char *name, long long dflt, long long *ret)
{
    const char *s = param(ctx, name);
    *ret = dflt;
    if (!s)
        return 0;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (!*s || *end || errno)
        return xe_fail(ctx, "Failed to parse parameter '%s': expecting an integer", name);
    *ret = v;
    return 0;
}

/* "<name>:key=value" params as a string map. */
static xv *map_params(xe_ctx *ctx, const char *name)
{
    const xe_params *ps = &ctx->cl->params;
    xv *m = xv_new_struct();
    size_t len = strlen(name);
    for (size_t i = 0; i < ps->n; i++)
        if (!strncmp(ps->v[i].key, name, len) && ps->v[i].key[len] == ':' && ps->v[i].key[len + 1])
            xv_struct_set(m, ps->v[i].key + len + 1, xv_new_string(ps->v[i].val));
    return m;
}

/* ---- network ---- */

int xe_cmd_network_create(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    long long mtu;
    if (int_param(ctx, "MTU", 1500, &mtu))
        return 1;
    const char *desc = param(ctx, "name-description"), *bridge = param(ctx, "bridge");
    AUTO(xv) *rec = xv_new_struct();
    xv_struct_set(rec, "name_label", xv_new_string(param(ctx, "name-label")));
    xv_struct_set(rec, "name_description", xv_new_string(desc ? desc : ""));
    xv_struct_set(rec, "MTU", xv_new_int(mtu));
    xv_struct_set(rec, "other_config", xv_new_struct());
    xv_struct_set(rec, "bridge", xv_new_string(bridge ? bridge : ""));
    xv_struct_set(rec, "managed", xv_new_bool(true));
    xv_struct_set(rec, "tags", xv_new_array());
    xv *a = xv_new_array();
    xv_array_append(a, TAKE_PTR(rec));
    AUTO(xv) *ref = NULL;
    if (xe_call(ctx, "network.create", a, &ref))
        return 1;
    return xe_print_new_uuid(ctx, "network", xv_str(ref));
}

/* ---- PIF ---- */

int xe_cmd_pif_scan(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *host = NULL;
    if (xe_ref_of(ctx, "host", "host-uuid", &host))
        return 1;
    return xe_call(ctx, "PIF.scan", xe_args1(host), NULL);
}

int xe_cmd_pif_plug(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return xe_uuid_op(ctx, "pif", "PIF.plug");
}

int xe_cmd_pif_unplug(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return xe_uuid_op(ctx, "pif", "PIF.unplug");
}

int xe_cmd_pif_reconfigure_ip(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *pif = NULL;
    if (xe_ref_of(ctx, "pif", "uuid", &pif))
        return 1;
    /* XCP's ip_configuration_mode_of_string */
    const char *m = param(ctx, "mode"), *mode = NULL;
    if (!strcasecmp(m, "dhcp"))
        mode = "DHCP";
    else if (!strcasecmp(m, "none"))
        mode = "None";
    else if (!strcasecmp(m, "static"))
        mode = "Static";
    else
        return xe_fail(ctx, "Unknown IP configuration mode '%s'", m);
    const char *ip = param(ctx, "IP"), *nm = param(ctx, "netmask"), *gw = param(ctx, "gateway"),
               *dns = param(ctx, "DNS");
    xv *a = xe_args1(pif);
    xv_array_append(a, xv_new_string(mode));
    xv_array_append(a, xv_new_string(ip ? ip : ""));
    xv_array_append(a, xv_new_string(nm ? nm : ""));
    xv_array_append(a, xv_new_string(gw ? gw : ""));
    xv_array_append(a, xv_new_string(dns ? dns : ""));
    return xe_call(ctx, "PIF.reconfigure_ip", a, NULL);
}

/* ---- VIF ---- */

int xe_cmd_vif_create(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *vm = NULL, *net = NULL;
    if (xe_ref_of(ctx, "vm", "vm-uuid", &vm) || xe_ref_of(ctx, "network", "network-uuid", &net))
        return 1;
    const char *mac = param(ctx, "mac");
    AUTO(xv) *rec = xv_new_struct();
    xv_struct_set(rec, "device", xv_new_string(param(ctx, "device")));
    xv_struct_set(rec, "network", xv_new_string(net));
    xv_struct_set(rec, "VM", xv_new_string(vm));
    xv_struct_set(rec, "MAC", xv_new_string(mac ? mac : ""));
    xv_struct_set(rec, "MTU", xv_new_int(0)); /* the network's */
    xv_struct_set(rec, "other_config", xv_new_struct());
    xv_struct_set(rec, "qos_algorithm_type", xv_new_string(""));
    xv_struct_set(rec, "qos_algorithm_params", xv_new_struct());
    xv_struct_set(rec, "locking_mode", xv_new_string("network_default"));
    xv_struct_set(rec, "ipv4_allowed", xv_new_array());
    xv_struct_set(rec, "ipv6_allowed", xv_new_array());
    xv *a = xv_new_array();
    xv_array_append(a, TAKE_PTR(rec));
    AUTO(xv) *ref = NULL;
    if (xe_call(ctx, "VIF.create", a, &ref))
        return 1;
    return xe_print_new_uuid(ctx, "VIF", xv_str(ref));
}

int xe_cmd_vif_plug(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return xe_uuid_op(ctx, "vif", "VIF.plug");
}

int xe_cmd_vif_unplug(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    const char *f = param(ctx, "force");
    bool force = f && (!strcasecmp(f, "true") || !strcasecmp(f, "t") || !strcmp(f, "1"));
    return xe_uuid_op(ctx, "vif", force ? "VIF.unplug_force" : "VIF.unplug");
}

/* ---- VLAN ---- */

/* Prints the new VLAN PIF's uuid (the VLAN object's is on that PIF), as XCP. */
int xe_cmd_vlan_create(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *net = NULL, *pif = NULL;
    long long tag;
    if (xe_ref_of(ctx, "network", "network-uuid", &net) ||
        xe_ref_of(ctx, "pif", "pif-uuid", &pif) || int_param(ctx, "vlan", 0, &tag))
        return 1;
    xv *a = xe_args1(pif);
    xv_array_append(a, xv_new_int(tag));
    xv_array_append(a, xv_new_string(net));
    AUTO(xv) *vlan = NULL, *untagged = NULL;
    if (xe_call(ctx, "VLAN.create", a, &vlan) ||
        xe_call(ctx, "VLAN.get_untagged_PIF", xe_args1(xv_str(vlan)), &untagged))
        return 1;
    return xe_print_new_uuid(ctx, "PIF", xv_str(untagged));
}

/* uuid= names the VLAN PIF, as in XCP. */
int xe_cmd_vlan_destroy(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *pif = NULL;
    if (xe_ref_of(ctx, "pif", "uuid", &pif))
        return 1;
    AUTO(xv) *vlan = NULL;
    if (xe_call(ctx, "PIF.get_VLAN_master_of", xe_args1(pif), &vlan))
        return 1;
    return xe_call(ctx, "VLAN.destroy", xe_args1(xv_str(vlan) ? xv_str(vlan) : NULL_REF), NULL);
}

/* ---- Bond ---- */

int xe_cmd_bond_create(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *net = NULL;
    if (xe_ref_of(ctx, "network", "network-uuid", &net))
        return 1;
    AUTO(xv) *members = xv_new_array();
    AUTOFREE char *uuids = xstrdup(param(ctx, "pif-uuids"));
    char *save = NULL;
    for (char *u = strtok_r(uuids, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        AUTOFREE char *ref = NULL;
        if (xe_get_by_uuid(ctx, xe_view_lookup("pif"), u, &ref, NULL))
            return 1;
        xv_array_append(members, xv_new_string(ref));
    }
    const char *mac = param(ctx, "mac"), *mode = param(ctx, "mode");
    xv *a = xe_args1(net);
    xv_array_append(a, TAKE_PTR(members));
    xv_array_append(a, xv_new_string(mac ? mac : ""));
    xv_array_append(a, xv_new_string(mode && *mode ? mode : "balance-slb"));
    xv_array_append(a, map_params(ctx, "properties"));
    AUTO(xv) *bond = NULL;
    if (xe_call(ctx, "Bond.create", a, &bond))
        return 1;
    return xe_print_new_uuid(ctx, "Bond", xv_str(bond));
}

int xe_cmd_bond_destroy(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    return xe_uuid_op(ctx, "bond", "Bond.destroy");
}

int xe_cmd_bond_set_mode(xe_ctx *ctx, const xe_cmd *cmd)
{
    (void)cmd;
    AUTOFREE char *bond = NULL;
    if (xe_ref_of(ctx, "bond", "uuid", &bond))
        return 1;
    xv *a = xe_args1(bond);
    xv_array_append(a, xv_new_string(param(ctx, "mode")));
    return xe_call(ctx, "Bond.set_mode", a, NULL);
}
