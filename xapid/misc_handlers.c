/* message.* and role.* custom messages. */
#define _GNU_SOURCE
#include "xapid.h"
#include "mem.h"
#include "util.h"

#include <string.h>

/* ---- message ---- */

xerr *api_message_create(api_ctx *ctx, const char *p_name, int64_t p_priority, const char *p_cls,
                         const char *p_obj_uuid, const char *p_body, xv **ret)
{
    AUTO(xv) *rec = xv_new_struct();
    xv_struct_set(rec, "name", xv_new_string(p_name));
    xv_struct_set(rec, "priority", xv_new_int(p_priority));
    xv_struct_set(rec, "cls", xv_new_string(p_cls));
    xv_struct_set(rec, "obj_uuid", xv_new_string(p_obj_uuid));
    xv_struct_set(rec, "timestamp", xv_new_datetime_epoch(now_epoch()));
    xv_struct_set(rec, "body", xv_new_string(p_body));
    char *ref = NULL;
    xerr *e = store_create(ctx->x->st, &api_classes[API_CLASS_message], rec, &ref);
    if (e)
        return e;
    *ret = xv_new_string_take(ref);
    return NULL;
}

xerr *api_message_destroy(api_ctx *ctx, const char *p_self)
{
    return store_destroy(ctx->x->st, &api_classes[API_CLASS_message], p_self);
}

/* Timestamps are stored in the sortable wire form, so text comparison orders them. */
xerr *api_message_get(api_ctx *ctx, const char *p_cls, const char *p_obj_uuid, const char *p_since,
                      xv **ret)
{
    AUTO(xv) *c = xv_new_string(p_cls);
    AUTO(xv) *u = xv_new_string(p_obj_uuid);
    AUTO(xv) *s = xv_new_string(p_since);
    const xv *a[] = {c, u, s};
    return store_get_all_records(ctx->x->st, &api_classes[API_CLASS_message],
                                 "\"cls\" = ? AND \"obj_uuid\" = ? AND \"timestamp\" > ?", a, 3,
                                 ret);
}

xerr *api_message_get_since(api_ctx *ctx, const char *p_since, xv **ret)
{
    AUTO(xv) *s = xv_new_string(p_since);
    const xv *a[] = {s};
    return store_get_all_records(ctx->x->st, &api_classes[API_CLASS_message], "\"timestamp\" > ?",
                                 a, 1, ret);
}

/* ---- role: the six XAPI roles, each including the ones below it ---- */

struct role_ud {
    const char *ref;
    xv *name;
    xv *all;
};

static xerr *role_read_txn(store_txn *t, void *ud)
{
    struct role_ud *r = ud;
    const api_class *c = &api_classes[API_CLASS_role];
    if (r->ref) {
        xerr *e = st_get_field(t, c, r->ref, API_F_role_name_label, &r->name);
        if (e)
            return e;
    }
    return st_get_all_records(t, c, NULL, NULL, 0, &r->all);
}

static int role_rank_of(api_ctx *ctx, const char *ref, xv **ret_all, xerr **ret_err)
{
    struct role_ud r = {ref, NULL, NULL};
    xerr *e = store_read(ctx->x->st, role_read_txn, &r);
    if (e) {
        *ret_err = e;
        return -1;
    }
    int rank = ref ? api_role_rank(xv_str(r.name)) : 0;
    xv_free(r.name);
    *ret_all = r.all;
    return rank;
}

xerr *api_role_get_permissions(api_ctx *ctx, const char *p_self, xv **ret)
{
    xerr *e = NULL;
    AUTO(xv) *all = NULL;
    int rank = role_rank_of(ctx, p_self, &all, &e);
    if (e)
        return e;
    xv *out = xv_new_array();
    for (size_t i = 0; i < all->u.st.n; i++) {
        int r = api_role_rank(xv_struct_get_str(all->u.st.vals[i], "name_label"));
        if (r >= 0 && r < rank)
            xv_array_append(out, xv_new_string(all->u.st.keys[i]));
    }
    *ret = out;
    return NULL;
}

xerr *api_role_get_permissions_name_label(api_ctx *ctx, const char *p_self, xv **ret)
{
    xerr *e = NULL;
    AUTO(xv) *all = NULL;
    int rank = role_rank_of(ctx, p_self, &all, &e);
    if (e)
        return e;
    xv *out = xv_new_array();
    for (size_t i = 0; i < api_nmessages; i++)
        if (api_messages[i].min_role <= rank)
            xv_array_append(out, xv_new_string(api_messages[i].perm));
    *ret = out;
    return NULL;
}

static xerr *roles_at_least(api_ctx *ctx, int min_rank, xv **ret)
{
    xerr *e = NULL;
    AUTO(xv) *all = NULL;
    role_rank_of(ctx, NULL, &all, &e);
    if (e)
        return e;
    xv *out = xv_new_array();
    for (size_t i = 0; i < all->u.st.n; i++) {
        int r = api_role_rank(xv_struct_get_str(all->u.st.vals[i], "name_label"));
        if (min_rank >= 0 && r >= min_rank)
            xv_array_append(out, xv_new_string(all->u.st.keys[i]));
    }
    *ret = out;
    return NULL;
}

xerr *api_role_get_by_permission(api_ctx *ctx, const char *p_permission, xv **ret)
{
    xerr *e = NULL;
    AUTO(xv) *all = NULL;
    int rank = role_rank_of(ctx, p_permission, &all, &e);
    if (e)
        return e;
    return roles_at_least(ctx, rank, ret);
}

xerr *api_role_get_by_permission_name_label(api_ctx *ctx, const char *p_label, xv **ret)
{
    int rank = api_role_rank(p_label);
    for (size_t i = 0; rank < 0 && i < api_nmessages; i++)
        if (strcmp(api_messages[i].perm, p_label) == 0)
            rank = api_messages[i].min_role;
    return roles_at_least(ctx, rank, ret);
}
