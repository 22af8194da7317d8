/* Parsing of nuvem-vmm's JSON VM configuration (see config.h and hypervisor/README.md). */
#include "config.h"
#include "mem.h"
#include "xv.h"

#include <stdio.h>
#include <string.h>

void vmm_config_free(vmm_config *c)
{
    if (!c)
        return;
    free(c->name);
    free(c->uuid);
    free(c->kernel);
    free(c->initrd);
    free(c->cmdline);
    free(c->serial_log);
    free(c->console_socket);
    free(c->control_socket);
    for (unsigned i = 0; i < c->ndisks; i++)
        free(c->disks[i].path);
    for (unsigned i = 0; i < c->nnics; i++)
        free(c->nics[i].tap);
    free(c);
}

static xerr *get_string(const xv *root, const char *key, bool required, char **out)
{
    const xv *v = xv_struct_get(root, key);
    if (!v || v->kind == XV_NIL) {
        if (required)
            return xerr_new("INVALID_VALUE", key, "missing");
        return NULL;
    }
    if (v->kind != XV_STRING)
        return xerr_new("FIELD_TYPE_ERROR", key);
    if (required && !v->u.str.len)
        return xerr_new("INVALID_VALUE", key, "empty");
    *out = xstrdup(v->u.str.s);
    return NULL;
}

static xerr *get_uint(const xv *root, const char *key, uint64_t min, uint64_t max, uint64_t *out)
{
    const xv *v = xv_struct_get(root, key);
    if (!v)
        return NULL;
    if (v->kind != XV_INT)
        return xerr_new("FIELD_TYPE_ERROR", key);
    if (v->u.i < 0 || (uint64_t)v->u.i < min || (uint64_t)v->u.i > max) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)v->u.i);
        return xerr_new("INVALID_VALUE", key, buf);
    }
    *out = (uint64_t)v->u.i;
    return NULL;
}

static xerr *get_bool(const xv *root, const char *key, bool *out)
{
    const xv *v = xv_struct_get(root, key);
    if (!v)
        return NULL;
    if (v->kind != XV_BOOL)
        return xerr_new("FIELD_TYPE_ERROR", key);
    *out = v->u.b;
    return NULL;
}

static xerr *get_enum(const xv *root, const char *key, const char *const *names, int *out)
{
    const xv *v = xv_struct_get(root, key);
    if (!v)
        return NULL;
    if (v->kind != XV_STRING)
        return xerr_new("FIELD_TYPE_ERROR", key);
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], v->u.str.s) == 0) {
            *out = i;
            return NULL;
        }
    }
    return xerr_new("INVALID_VALUE", key, v->u.str.s);
}

/* disks: [{"path": FILE, "readonly": BOOL, "format": "raw"|"vhd"|"auto"}] (virtio-blk). Errors:
 * INVALID_VALUE [disks, "disks[N].KEY: why"] or FIELD_TYPE_ERROR [disks[N].KEY]. */
static xerr *get_disks(const xv *root, vmm_config *c)
{
    const xv *v = xv_struct_get(root, "disks");
    if (!v || v->kind == XV_NIL)
        return NULL;
    if (v->kind != XV_ARRAY)
        return xerr_new("FIELD_TYPE_ERROR", "disks");
    size_t n = xv_array_len(v);
    if (n > VMM_MAX_DISKS)
        return xerr_new("INVALID_VALUE", "disks", "too many (at most 8)");
    for (size_t i = 0; i < n; i++) {
        const xv *d = xv_array_get(v, i);
        char field[64];
        snprintf(field, sizeof(field), "disks[%zu]", i);
        if (!d || d->kind != XV_STRUCT)
            return xerr_new("FIELD_TYPE_ERROR", field);
        for (size_t k = 0; k < d->u.st.n; k++) {
            const char *key = d->u.st.keys[k];
            if (strcmp(key, "path") != 0 && strcmp(key, "readonly") != 0 &&
                strcmp(key, "format") != 0) {
                char why[160];
                snprintf(why, sizeof(why), "%s.%.64s: unknown key", field, key);
                return xerr_new("INVALID_VALUE", "disks", why);
            }
        }
        vmm_disk *disk = &c->disks[c->ndisks++];
        xerr *e;
        static const char *const formats[] = {"raw", "vhd", "auto", NULL};
        int format = VMM_DISK_RAW;
        if ((e = get_string(d, "path", true, &disk->path)) ||
            (e = get_bool(d, "readonly", &disk->readonly)) ||
            (e = get_enum(d, "format", formats, &format))) {
            char sub[160];
            xerr *named;
            if (e->nparams > 1) {
                snprintf(sub, sizeof(sub), "%s.%s: %s", field, e->params[0], e->params[1]);
                named = xerr_new(e->code, "disks", sub);
            } else {
                snprintf(sub, sizeof(sub), "%s.%s", field, e->nparams ? e->params[0] : "");
                named = xerr_new(e->code, sub);
            }
            xerr_free(e);
            return named;
        }
        disk->format = (enum vmm_disk_format)format;
    }
    return NULL;
}

/* "52:54:00:12:34:56": unicast, not all zero. */
static bool parse_mac(const char *s, uint8_t mac[6])
{
    unsigned b[6], any = 0;
    int used = 0;
    if (strlen(s) != 17 ||
        sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%n", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &used) !=
            6 ||
        used != 17)
        return false;
    for (int i = 0; i < 6; i++) {
        mac[i] = (uint8_t)b[i];
        any |= b[i];
    }
    return any && !(mac[0] & 1);
}

/* nics: [{"tap": NAME, "mac": "52:54:00:xx:xx:xx"}] (virtio-net on existing taps; mac
 * defaults to 52:54:00:4e:56:N+1). Errors as for disks. */
static xerr *get_nics(const xv *root, vmm_config *c)
{
    const xv *v = xv_struct_get(root, "nics");
    if (!v || v->kind == XV_NIL)
        return NULL;
    if (v->kind != XV_ARRAY)
        return xerr_new("FIELD_TYPE_ERROR", "nics");
    size_t n = xv_array_len(v);
    if (n > VMM_MAX_NICS || c->ndisks + n > VMM_MAX_DISKS)
        return xerr_new("INVALID_VALUE", "nics", "too many devices (disks + nics at most 8)");
    for (size_t i = 0; i < n; i++) {
        const xv *d = xv_array_get(v, i);
        char field[64], why[160];
        snprintf(field, sizeof(field), "nics[%zu]", i);
        if (!d || d->kind != XV_STRUCT)
            return xerr_new("FIELD_TYPE_ERROR", field);
        for (size_t k = 0; k < d->u.st.n; k++) {
            const char *key = d->u.st.keys[k];
            if (strcmp(key, "tap") != 0 && strcmp(key, "mac") != 0) {
                snprintf(why, sizeof(why), "%s.%.64s: unknown key", field, key);
                return xerr_new("INVALID_VALUE", "nics", why);
            }
        }
        vmm_nic *nic = &c->nics[c->nnics++];
        const xv *tap = xv_struct_get(d, "tap"), *mac = xv_struct_get(d, "mac");
        if (!tap || tap->kind == XV_NIL || (tap->kind == XV_STRING && !tap->u.str.len)) {
            snprintf(why, sizeof(why), "%s.tap: missing", field);
            return xerr_new("INVALID_VALUE", "nics", why);
        }
        if (tap->kind != XV_STRING || (mac && mac->kind != XV_STRING)) {
            snprintf(why, sizeof(why), "%s.%s", field, tap->kind != XV_STRING ? "tap" : "mac");
            return xerr_new("FIELD_TYPE_ERROR", why);
        }
        nic->tap = xstrdup(tap->u.str.s);
        if (mac && !parse_mac(mac->u.str.s, nic->mac)) {
            snprintf(why, sizeof(why), "%s.mac: not a unicast MAC address", field);
            return xerr_new("INVALID_VALUE", "nics", why);
        }
        if (!mac)
            memcpy(nic->mac, (uint8_t[6]){0x52, 0x54, 0x00, 0x4e, 0x56, (uint8_t)(i + 1)}, 6);
    }
    return NULL;
}

/* vcpus_max, balloon, agent (after vcpus, disks and nics). The balloon and the agent take
 * virtio slots after the disks and NICs: asked for explicitly they must fit, by default they
 * are left out when the slots are full. */
static xerr *get_live(const xv *root, vmm_config *c)
{
    uint64_t max = c->vcpus;
    xerr *e;
    if ((e = get_uint(root, "vcpus_max", 1, VMM_MAX_VCPUS, &max)))
        return e;
    if (max < c->vcpus)
        return xerr_new("INVALID_VALUE", "vcpus_max", "below vcpus");
    c->vcpus_max = (unsigned)max;
    c->balloon = c->agent = true;
    if ((e = get_bool(root, "balloon", &c->balloon)) || (e = get_bool(root, "agent", &c->agent)))
        return e;
    unsigned used = c->ndisks + c->nnics;
    if (c->balloon) {
        if (used < VMM_MAX_DISKS)
            used++;
        else if (xv_struct_get(root, "balloon"))
            return xerr_new("INVALID_VALUE", "balloon", "no free device slot (at most 8 devices)");
        else
            c->balloon = false;
    }
    if (c->agent) {
        if (used < VMM_MAX_DISKS)
            used++;
        else if (xv_struct_get(root, "agent"))
            return xerr_new("INVALID_VALUE", "agent", "no free device slot (at most 8 devices)");
        else
            c->agent = false;
    }
    return NULL;
}

static const char *const known_keys[] = {
    "name",      "uuid",         "memory_mib", "vcpus",     "kernel",  "initrd",
    "cmdline",   "disks",        "nics",       "serial",    "control", "on_reboot",
    "on_crash",  "start_paused", "mem_merge",  "hugepages", "acpi",    "sandbox",
    "vcpus_max", "balloon",      "agent",      NULL,
};

vmm_config *vmm_config_parse(const char *json, size_t len, xerr **ret_err)
{
    AUTO(xv) *root = xv_from_json(json, len);
    if (!root) {
        *ret_err = xerr_new("INVALID_VALUE", "config", "malformed JSON");
        return NULL;
    }
    if (root->kind != XV_STRUCT) {
        *ret_err = xerr_new("FIELD_TYPE_ERROR", "config");
        return NULL;
    }
    for (size_t i = 0; i < root->u.st.n; i++) {
        bool known = false;
        for (size_t k = 0; known_keys[k]; k++)
            known = known || strcmp(known_keys[k], root->u.st.keys[i]) == 0;
        if (!known) {
            *ret_err = xerr_new("INVALID_VALUE", root->u.st.keys[i], "unknown key");
            return NULL;
        }
    }

    AUTO(vmm_config) *c = xcalloc(1, sizeof(*c));
    c->memory_mib = 32;
    c->vcpus = 1;
    c->mem_merge = true;
    c->sandbox = true;
    c->serial_log_limit = 16 << 20;
    c->acpi = true;
    uint64_t vcpus = 1;
    int on_reboot = 0, on_crash = 0;
    static const char *const reboot_names[] = {"restart", "exit", NULL};
    static const char *const crash_names[] = {"exit", "pause", "restart", NULL};
    xerr *e = NULL;
    const xv *serial = xv_struct_get(root, "serial");

    if ((e = get_string(root, "name", false, &c->name)) ||
        (e = get_string(root, "uuid", false, &c->uuid)) ||
        (e = get_uint(root, "memory_mib", VMM_MIN_MEMORY_MIB, VMM_MAX_MEMORY_MIB,
                      &c->memory_mib)) ||
        (e = get_uint(root, "vcpus", 1, VMM_MAX_VCPUS, &vcpus)) ||
        (e = get_string(root, "kernel", true, &c->kernel)) ||
        (e = get_string(root, "initrd", false, &c->initrd)) ||
        (e = get_string(root, "cmdline", false, &c->cmdline)) || (e = get_disks(root, c)) ||
        (e = get_nics(root, c)) || (e = get_string(root, "control", true, &c->control_socket)) ||
        (e = get_enum(root, "on_reboot", reboot_names, &on_reboot)) ||
        (e = get_enum(root, "on_crash", crash_names, &on_crash)) ||
        (e = get_bool(root, "start_paused", &c->start_paused)) ||
        (e = get_bool(root, "mem_merge", &c->mem_merge)) ||
        (e = get_bool(root, "hugepages", &c->hugepages)) ||
        (e = get_bool(root, "sandbox", &c->sandbox)) || (e = get_bool(root, "acpi", &c->acpi))) {
        *ret_err = e;
        return NULL;
    }
    if (serial && serial->kind != XV_NIL) {
        if (serial->kind != XV_STRUCT) {
            *ret_err = xerr_new("FIELD_TYPE_ERROR", "serial");
            return NULL;
        }
        for (size_t i = 0; i < serial->u.st.n; i++) {
            const char *k = serial->u.st.keys[i];
            if (strcmp(k, "log") != 0 && strcmp(k, "socket") != 0 && strcmp(k, "log_limit") != 0) {
                *ret_err = xerr_new("INVALID_VALUE", k, "unknown key in serial");
                return NULL;
            }
        }
        if ((e = get_string(serial, "log", false, &c->serial_log)) ||
            (e = get_string(serial, "socket", false, &c->console_socket)) ||
            (e = get_uint(serial, "log_limit", 0, UINT64_MAX >> 1, &c->serial_log_limit))) {
            *ret_err = e;
            return NULL;
        }
    }
    if (!c->cmdline)
        c->cmdline = xstrdup("");
    if (strlen(c->cmdline) >= VMM_MAX_CMDLINE) {
        *ret_err = xerr_new("INVALID_VALUE", "cmdline", "too long");
        return NULL;
    }
    c->vcpus = (unsigned)vcpus;
    if ((e = get_live(root, c))) {
        *ret_err = e;
        return NULL;
    }
    c->on_reboot = (enum vmm_on_reboot)on_reboot;
    c->on_crash = (enum vmm_on_crash)on_crash;
    return TAKE_PTR(c);
}
