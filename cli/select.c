/* xe selectors: XCP's vm=/host=/sr= pseudo-fields plus field filters that pick the objects
 * an operation runs on, and --multiple with XCP's per-object failure report. */
#define _GNU_SOURCE
#include "xe.h"

#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRV(...) ((const char *const[]){__VA_ARGS__, NULL})

static const xe_kv vm_implicit[] = {{"is-control-domain", "false"}, {"is-a-template", "false"}};

const xe_selector xe_sel_vm = {
    "vm",
    "vm",
    STRV("uuid", "name-label"),
    vm_implicit,
    ARRAY_SIZE(vm_implicit),
    "<vm-selectors>",
    " VMs can be specified by filtering the full list of VMs on the values of zero or more "
    "fields. For example, specifying 'uuid=<some_uuid>' will select only the VM with that uuid, "
    "and 'power-state=halted' will select only VMs whose 'power-state' field is equal to "
    "'halted'. The special pseudo-field 'vm' matches either of name-label or uuid. Where "
    "multiple VMs are matching, the option '--multiple' must be specified to perform the "
    "operation. The full list of fields that can be matched can be obtained by the command 'xe "
    "vm-list params=all'. If no parameters to select VMs are given, the operation will be "
    "performed on all VMs.",
    "No matching VMs found",
    "Multiple matches VMs found. --multiple required to complete the operation",
    "Multiple matches VMs found. Operation can only be performed on one VM at a time",
};

const xe_selector xe_sel_host = {
    "host",
    "host",
    STRV("uuid", "hostname", "name-label"),
    NULL,
    0,
    "<host-selectors>",
    " Hosts can be specified by filtering the full list of hosts on the values of zero or more "
    "fields. For example, specifying 'uuid=<some_uuid>' will select only the host with that "
    "uuid, and 'enabled=true' will select only hosts whose 'enabled' field is equal to 'true'. "
    "The special pseudo-field 'host' matches any of hostname, name-label or uuid. Where "
    "multiple hosts are matching, and the operation can be performed on multiple hosts, the "
    "option '--multiple' must be specified to perform the operation. The full list of fields "
    "that can be matched can be obtained by the command 'xe host-list params=all'. If no "
    "parameters to select hosts are given, the operation will be performed on all hosts.",
    "No matching hosts found",
    "Multiple matching hosts found. --multiple required to complete the operation",
    "Multiple matching hosts found. Operation can only be performed on one host at a time",
};

const xe_selector xe_sel_sr = {
    "sr",
    "sr",
    STRV("uuid", "name-label"),
    NULL,
    0,
    "<sr-selectors>",
    " SRs can be specified by filtering the full list of SRs on the values of zero or more "
    "fields. For example, specifying 'uuid=<some_uuid>' will select only the sr with that "
    "uuid, and 'enabled=true' will select only srs whose 'enabled' field is equal to 'true'. "
    "The special pseudo-field 'sr' matches either of name-label or uuid. Where multiple SRs are "
    "matching, and the operation can be performed on multiple SRs, the option '--multiple' "
    "must be specified to perform the operation. The full list of fields that can be matched "
    "can be obtained by the command 'xe sr-list params=all'. If no parameters to select SRs "
    "are given, the operation will be performed on all SRs.",
    "No matching hosts found", /* sic: XCP's text */
    "Multiple matching SRs found. --multiple required to complete the operation",
    "Multiple matching SRs found. Operation can only be performed on one SR at a time",
};

static bool key_matches(xe_ctx *ctx, const xe_selector *s, const xe_cols *cols, const xv *rec,
                        const char *want)
{
    for (const char *const *f = s->key_fields; f && *f; f++) {
        const xe_col *c = xe_col_lookup(cols, *f);
        if (!c)
            continue;
        AUTOFREE char *v = xe_col_value(ctx, c, rec);
        if (strcmp(v, want) == 0)
            return true;
    }
    return false;
}

int xe_select(xe_ctx *ctx, const xe_selector *s, unsigned flags, const char *const *ignore,
              const xv *all, size_t **ret_idx, size_t *ret_n)
{
    *ret_idx = NULL;
    *ret_n = 0;
    const xe_view *v = xe_view_lookup(s->view);
    XE_COLS_AUTO xe_cols cols;
    xe_view_columns(v, &cols);
    const xe_params *ps = &ctx->cl->params;
    /* XCP: the implicit filters first (unless the operation includes templates or control
     * domains), then every param but the std ones, the operation's own and the pseudo-field */
    xe_params filters = {0};
    for (size_t i = 0; i < s->nimplicit; i++) {
        const char *k = s->implicit[i].key;
        if ((flags & XE_SEL_CONTROL_DOMAINS) && strcmp(k, "is-control-domain") == 0)
            continue;
        if ((flags & XE_SEL_TEMPLATES) && strcmp(k, "is-a-template") == 0)
            continue;
        xe_params_add(&filters, k, s->implicit[i].val);
    }
    const char *key_value = xe_params_get(ps, s->key);
    for (size_t i = 0; i < ps->n; i++) {
        const char *k = ps->v[i].key;
        AUTOFREE char *stem = xstrndup(k, strcspn(k, ":"));
        if (strcmp(k, s->key) == 0 || xe_strv_has(xe_std_params, stem) || xe_strv_has(ignore, stem))
            continue;
        xe_params_add(&filters, k, ps->v[i].val);
    }
    size_t n = xv_struct_len(all);
    size_t *idx = xcalloc(n ? n : 1, sizeof(size_t));
    size_t nidx = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const xv *rec = all->u.st.vals[i];
        bool keep = !key_value || key_matches(ctx, s, &cols, rec, key_value);
        for (size_t f = 0; keep && f < filters.n; f++) {
            int m = xe_filter_match(ctx, &cols, rec, filters.v[f].key, filters.v[f].val);
            if (m < 0)
                rc = 1;
            keep = m == 1;
        }
        if (keep)
            idx[nidx++] = i;
    }
    xe_params_clear(&filters);
    if (rc) {
        free(idx);
        return 1;
    }
    *ret_idx = idx;
    *ret_n = nidx;
    return 0;
}

int xe_do_selected(xe_ctx *ctx, const xe_selector *s, unsigned flags, const char *const *ignore,
                   xe_selected_fn op, void *ud)
{
    AUTO(xv) *all = NULL;
    if (xe_get_all_records(ctx, xe_view_lookup(s->view), &all))
        return 1;
    AUTOFREE size_t *idx = NULL;
    size_t n = 0;
    if (xe_select(ctx, s, flags, ignore, all, &idx, &n))
        return 1;
    if (n == 0)
        return xe_fail(ctx, "%s", s->none_msg);
    if (n == 1)
        return op(ctx, all->u.st.keys[idx[0]], all->u.st.vals[idx[0]], ud);
    if (!(flags & XE_SEL_MULTIPLE_OK))
        return xe_fail(ctx, "%s", s->one_msg);
    const char *m = xe_params_get(&ctx->cl->params, "multiple");
    if (!m || strcmp(m, "true") != 0)
        return xe_fail(ctx, "%s", s->many_msg);
    /* XCP runs the operation on every object, then reports each failure on stdout as
     * "operation failed on <uuid>: <message>", the last failure first. */
    char **fails = xcalloc(n, sizeof(char *));
    size_t nfails = 0;
    FILE *real_err = ctx->err;
    for (size_t i = 0; i < n; i++) {
        char *buf = NULL;
        size_t len = 0;
        ctx->err = open_memstream(&buf, &len);
        if (!ctx->err)
            abort();
        int rc = op(ctx, all->u.st.keys[idx[i]], all->u.st.vals[idx[i]], ud);
        fclose(ctx->err);
        ctx->err = real_err;
        if (rc) {
            while (len && buf[len - 1] == '\n')
                buf[--len] = '\0';
            const char *uuid = xv_struct_get_str(all->u.st.vals[idx[i]], "uuid");
            fails[nfails++] = xasprintf("operation failed on %s: %s", uuid ? uuid : "", buf);
        }
        free(buf);
    }
    for (size_t i = nfails; i-- > 0;) {
        fprintf(ctx->out, "%s\n", fails[i]);
        free(fails[i]);
    }
    free(fails);
    return nfails ? 1 : 0;
}
