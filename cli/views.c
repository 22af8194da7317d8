/* xe's per-class views and error texts: lookups over the tables api-schema/gen.py generates
 * from api-schema/cli/<class>.json and errors.json (api_cli.c), and their columns resolved
 * against the API tables. */
#define _GNU_SOURCE
#include "xe.h"

#include "mem.h"

#include <string.h>

const xe_view *xe_view_lookup(const char *cli)
{
    for (size_t i = 0; i < api_cli_nviews; i++)
        if (strcmp(api_cli_views[i].cli, cli) == 0)
            return &api_cli_views[i];
    return NULL;
}

const api_message *xe_find_message(int cls, api_msg_kind k, int fidx)
{
    /* By wire name, so custom messages that act on a field (VM.add_to_platform: the model's
     * "RO/constructor with explicit setters") count like the generated ones. */
    const char *prefix = NULL;
    switch (k) {
    case API_M_SET_FIELD:
        prefix = "set_";
        break;
    case API_M_ADD_TO_MAP:
        prefix = "add_to_";
        break;
    case API_M_REMOVE_FROM_MAP:
        prefix = "remove_from_";
        break;
    case API_M_ADD_SET:
        prefix = "add_";
        break;
    case API_M_REMOVE_SET:
        prefix = "remove_";
        break;
    default:
        break;
    }
    if (prefix && fidx >= 0 && cls >= 0 && (size_t)cls < api_nclasses &&
        (size_t)fidx < api_classes[cls].nfields) {
        AUTOFREE char *wire =
            xasprintf("%s.%s%s", api_classes[cls].name, prefix, api_classes[cls].fields[fidx].name);
        return api_message_lookup(wire);
    }
    for (size_t i = 0; i < api_nmessages; i++) {
        const api_message *m = &api_messages[i];
        if (m->cls == cls && m->kind == k && (fidx < 0 || m->field == fidx))
            return m;
    }
    return NULL;
}

void xe_cols_clear(xe_cols *c)
{
    free(c->c);
    c->c = NULL;
    c->n = 0;
}

/* The generated columns carry class and field indexes (resolved, and their access tags
 * computed from the setter messages, by the generator); this turns them into pointers. */
void xe_view_columns(const xe_view *v, xe_cols *ret)
{
    const api_class *cls = &api_classes[v->cls];
    ret->cls = cls;
    ret->n = v->ncols;
    ret->c = xcalloc(v->ncols ? v->ncols : 1, sizeof(xe_col));
    for (size_t i = 0; i < v->ncols; i++) {
        const api_cli_col *d = &v->cols[i];
        const api_class *tcls = &api_classes[d->cls];
        xe_col *c = &ret->c[i];
        c->name = d->name;
        c->fidx = d->field;
        c->f = &tcls->fields[d->field];
        c->flags = d->flags;
        memcpy(c->tag, d->tag, sizeof(c->tag));
        c->via = d->via >= 0 ? &cls->fields[d->via] : NULL;
        c->via_cls = d->via >= 0 ? tcls : NULL;
    }
}

const api_cli_error *xe_error_doc_lookup(const char *code)
{
    for (size_t i = 0; i < api_cli_nerrors; i++)
        if (strcmp(api_cli_errors[i].code, code) == 0)
            return &api_cli_errors[i];
    return NULL;
}
