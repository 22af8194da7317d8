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

/* Device lists are reserved for virtio devices (a later issue): accepted only when empty. */
static xerr *check_empty_list(const xv *root, const char *key)
{
    const xv *v = xv_struct_get(root, key);
    if (!v || v->kind == XV_NIL)
        return NULL;
    if (v->kind != XV_ARRAY)
        return xerr_new("FIELD_TYPE_ERROR", key);
    if (xv_array_len(v))
        return xerr_new("INVALID_VALUE", key, "devices of this kind are not supported yet");
    return NULL;
}

static const char *const known_keys[] = {
    "name",      "uuid",      "memory_mib", "vcpus",   "kernel",    "initrd",   "cmdline",
    "disks",     "nics",      "serial",     "control", "on_reboot", "on_crash", "start_paused",
    "mem_merge", "hugepages", "acpi",       "sandbox", NULL,
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
        (e = get_string(root, "cmdline", false, &c->cmdline)) ||
        (e = check_empty_list(root, "disks")) || (e = check_empty_list(root, "nics")) ||
        (e = get_string(root, "control", true, &c->control_socket)) ||
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
    c->on_reboot = (enum vmm_on_reboot)on_reboot;
    c->on_crash = (enum vmm_on_crash)on_crash;
    return TAKE_PTR(c);
}
