/* xe selectors: XCP's vm=/host=/sr= pseudo-fields plus field filters that pick the objects
 * an operation runs on, and --multiple with XCP's per-object failure report. The selectors
 * themselves (api_cli_sel_*) are generated from api-schema/cli/<class>.json. */
#define _GNU_SOURCE
#include "xe.h"

#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
