/* xe runtime: XCP-style printing and error texts, API calls (sync and Async with a
 * progress line), ref resolution, the runner and the bash completion script. */
#define _GNU_SOURCE
#include "xe.h"

#include "mem.h"
#include "rpc.h"
#include "util.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Params every command accepts (XCP's stdparams). */
const char *const xe_std_params[] = {
    "server",       "password", "port",  "username",         "minimal",
    "force",        "multiple", "all",   "message-priority", "trace",
    "passwordfile", "nossl",    "debug", "insecure",         "cafile",
    "fingerprint",  "jsonrpc",  NULL};

bool xe_strv_has(const char *const *v, const char *s)
{
    for (; v && *v; v++)
        if (strcmp(*v, s) == 0)
            return true;
    return false;
}

/* ---- Printing (XCP's Cli_printer) ---- */

void xe_row_add(xe_row *r, char *key, char *val)
{
    r->keys = xrealloc(r->keys, (r->n + 1) * sizeof(char *));
    r->vals = xrealloc(r->vals, (r->n + 1) * sizeof(char *));
    r->keys[r->n] = key;
    r->vals[r->n] = val;
    r->n++;
}

void xe_row_clear(xe_row *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->keys[i]);
        free(r->vals[i]);
    }
    free(r->keys);
    free(r->vals);
    memset(r, 0, sizeof(*r));
}

static void minimal_push(xe_ctx *ctx, const char *s)
{
    /* XCP prepends each printed item to its buffer and joins with ',' at the end. */
    sbuf b = SBUF_INIT;
    sbuf_puts(&b, s);
    if (ctx->minimal_any) {
        sbuf_putc(&b, ',');
        sbuf_append(&b, ctx->minimal_buf.data, ctx->minimal_buf.len);
    }
    sbuf_release(&ctx->minimal_buf);
    ctx->minimal_buf = b;
    ctx->minimal_any = true;
}

void xe_print_table(xe_ctx *ctx, xe_row *rows, size_t n)
{
    if (ctx->minimal) {
        if (n == 0 || rows[0].n == 0)
            return;
        sbuf b = SBUF_INIT;
        sbuf_puts(&b, "");
        for (size_t i = 0; i < n; i++) {
            AUTOFREE char *e = xe_escape_minimal(rows[i].n ? rows[i].vals[0] : "");
            sbuf_printf(&b, "%s%s", i ? "," : "", e);
        }
        minimal_push(ctx, b.data);
        sbuf_release(&b);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        sbuf b = SBUF_INIT;
        xe_format_record(&b, rows[i].n, (const char *const *)rows[i].keys,
                         (const char *const *)rows[i].vals);
        fprintf(ctx->out, "%s\n\n", b.data ? b.data : "");
        sbuf_release(&b);
    }
}

void xe_print_list(xe_ctx *ctx, const char *const *items, size_t n)
{
    if (ctx->minimal) {
        sbuf b = SBUF_INIT;
        sbuf_puts(&b, "");
        for (size_t i = 0; i < n; i++) {
            AUTOFREE char *e = xe_escape_minimal(items[i]);
            sbuf_printf(&b, "%s%s", i ? "," : "", e);
        }
        minimal_push(ctx, b.data);
        sbuf_release(&b);
        return;
    }
    for (size_t i = 0; i < n; i++)
        fprintf(ctx->out, "%s\n", items[i]);
}

void xe_print_one(xe_ctx *ctx, const char *s)
{
    xe_print_list(ctx, &s, 1);
}

/* "Error: msg" on stderr (XCP's Cli_failure); returns the exit code 1. */
int xe_fail(xe_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    AUTOFREE char *m = xvasprintf(fmt, ap);
    va_end(ap);
    fprintf(ctx->err, "Error: %s\n", m);
    return 1;
}

int xe_param_error(FILE *err, const char *what, const char *detail)
{
    if (what[0])
        fprintf(err, "%s: %s\n", what, detail);
    else
        fprintf(err, "%s\n", detail);
    fprintf(err, "For usage run: 'xe help'\n");
    return 1;
}

/* XCP prints refs in error params as "uuid (name-label)" where it can resolve them. We
 * resolve a ref when the error's declared param name is a class name (vm, host, sr...).
 * Returns a caller-frees replacement or NULL. */
static char *convert_ref_param(xe_ctx *ctx, const char *param_name, const char *ref)
{
    if (!ctx->conn || !param_name || strncmp(ref, "OpaqueRef:", 10) != 0 ||
        strcmp(ref, "OpaqueRef:NULL") == 0)
        return NULL;
    const api_class *cls = api_class_by_name_ci(param_name);
    if (!cls || !cls->table)
        return NULL;
    AUTOFREE char *gu = xasprintf("%s.get_uuid", cls->name);
    AUTO(xv) *a = xv_new_array();
    xv_array_append(a, xv_new_string(ref));
    AUTO(xv) *uuid = NULL;
    AUTO(xerr) *e = NULL;
    if (!api_message_lookup(gu) || xe_conn_call(ctx->conn, gu, a, &uuid, &e) < 0 || e ||
        !xv_str(uuid))
        return NULL;
    if (!cls->has_name_label)
        return xstrdup(xv_str(uuid));
    AUTOFREE char *gn = xasprintf("%s.get_name_label", cls->name);
    AUTO(xv) *name = NULL;
    if (xe_conn_call(ctx->conn, gn, a, &name, &e) < 0 || e || !xv_str(name))
        return xstrdup(xv_str(uuid));
    return xasprintf("%s (%s)", xv_str(uuid), xv_str(name));
}

int xe_fail_api(xe_ctx *ctx, const xerr *e)
{
    AUTO(xerr) *conv = xerr_copy(e);
    const api_cli_error *d = xe_error_doc_lookup(e->code);
    size_t ndoc = 0;
    while (d && d->params && d->params[ndoc])
        ndoc++;
    for (size_t i = 0; i < conv->nparams; i++) {
        char *r = convert_ref_param(ctx, i < ndoc ? d->params[i] : NULL, conv->params[i]);
        if (r) {
            free(conv->params[i]);
            conv->params[i] = r;
        }
    }
    sbuf b = SBUF_INIT;
    xe_format_api_error(&b, conv);
    fputs(b.data, ctx->err);
    sbuf_release(&b);
    return 1;
}

/* One API xe_call; errors (API or transport) are printed. Returns 0 or 1. params is consumed. */
int xe_call(xe_ctx *ctx, const char *method, xv *params, xv **ret)
{
    AUTO(xv) *p = params;
    AUTO(xv) *v = NULL;
    AUTO(xerr) *e = NULL;
    if (xe_conn_call(ctx->conn, method, p, &v, &e) < 0) {
        fprintf(ctx->err, "%s\n", xe_conn_error(ctx->conn));
        return 1;
    }
    if (e)
        return xe_fail_api(ctx, e);
    if (ret)
        *ret = TAKE_PTR(v);
    return 0;
}

xv *xe_args1(const char *a)
{
    xv *v = xv_new_array();
    xv_array_append(v, xv_new_string(a));
    return v;
}

xv *xe_args2(const char *a, xv *b)
{
    xv *v = xe_args1(a);
    xv_array_append(v, b);
    return v;
}

/* ---- Long-running calls: Async + task polling with a progress line on a tty ---- */

static void progress_line(FILE *err, double progress)
{
    if (progress < 0)
        progress = 0;
    if (progress > 1)
        progress = 1;
    int pct = (int)(progress * 100.);
    char hashes[71];
    int nh = (int)(progress * 70.);
    memset(hashes, '#', (size_t)nh);
    hashes[nh] = '\0';
    static const char anim[] = "|/-\\";
    fprintf(err, "\r %3d%% %c %s", pct, anim[pct % 4], hashes);
    fflush(err);
}

/* Calls Async.<method>, waits for the task (showing progress when stderr is a terminal),
 * destroys it and returns its decoded result. Falls back to a plain xe_call for messages
 * without an async mode. Returns 0 or 1 (error printed). */
int xe_call_async(xe_ctx *ctx, const char *method, xv *params, xv **ret)
{
    const api_message *m = api_message_lookup(method);
    if (!m || !m->async)
        return xe_call(ctx, method, params, ret);
    AUTOFREE char *am = xasprintf("Async.%s", method);
    AUTO(xv) *task = NULL;
    if (xe_call(ctx, am, params, &task))
        return 1;
    if (!xv_str(task))
        return xe_fail(ctx, "Server internal error.");
    AUTOFREE char *tref = xstrdup(xv_str(task));
    bool tty = isatty(fileno(ctx->err));
    bool shown = false;
    int rc = 0;
    for (;;) {
        AUTO(xv) *rec = NULL;
        if (xe_call(ctx, "task.get_record", xe_args1(tref), &rec)) {
            rc = 1;
            break;
        }
        const char *status = xv_struct_get_str(rec, "status");
        const xv *prog = xv_struct_get(rec, "progress");
        double p = prog && prog->kind == XV_FLOAT ? prog->u.f
                   : xv_str(prog)                 ? strtod(xv_str(prog), NULL)
                                                  : 0;
        if (tty) {
            progress_line(ctx->err, p);
            shown = true;
        }
        if (status && strcmp(status, "pending") != 0 && strcmp(status, "cancelling") != 0) {
            if (shown)
                fputc('\n', ctx->err);
            if (strcmp(status, "success") == 0) {
                const char *res = xv_struct_get_str(rec, "result");
                if (ret)
                    *ret = res && *res ? rpc_xml_decode_value(res, strlen(res)) : xv_new_string("");
            } else if (strcmp(status, "cancelled") == 0) {
                AUTO(xerr) *e = xerr_new("TASK_CANCELLED", tref);
                rc = xe_fail_api(ctx, e);
            } else {
                AUTO(xerr) *e = xerr_from_xv(xv_struct_get(rec, "error_info"));
                if (!e)
                    e = xerr_new("INTERNAL_ERROR", "task failed without error_info");
                rc = xe_fail_api(ctx, e);
            }
            break;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    AUTO(xv) *ignored = NULL;
    AUTO(xerr) *ignored_e = NULL;
    AUTO(xv) *targs = xe_args1(tref);
    xe_conn_call(ctx->conn, "task.destroy", targs, &ignored, &ignored_e);
    return rc;
}

/* ---- Ref -> uuid resolution for display (cached per invocation) ---- */

typedef struct refcache {
    size_t n;
    char **refs;
    char **uuids; /* NULL: dangling */
    size_t nrec;
    char **rec_refs;
    xv **recs; /* NULL: dangling */
} refcache;

static refcache *get_refcache(xe_ctx *ctx)
{
    if (!ctx->refcache)
        ctx->refcache = xcalloc(1, sizeof(refcache));
    return ctx->refcache;
}

/* The record a reference of class cls points to (borrowed, cached), or NULL. */
const xv *xe_ref_record(xe_ctx *ctx, const api_class *cls, const char *ref)
{
    if (!ctx->conn || !ref || strncmp(ref, "OpaqueRef:", 10) != 0 ||
        strcmp(ref, "OpaqueRef:NULL") == 0)
        return NULL;
    refcache *rc = get_refcache(ctx);
    for (size_t i = 0; i < rc->nrec; i++)
        if (strcmp(rc->rec_refs[i], ref) == 0)
            return rc->recs[i];
    AUTOFREE char *m = xasprintf("%s.get_record", cls->name);
    AUTO(xv) *a = xv_new_array();
    xv_array_append(a, xv_new_string(ref));
    xv *v = NULL;
    AUTO(xerr) *e = NULL;
    if (xe_conn_call(ctx->conn, m, a, &v, &e) < 0 || e || !v || v->kind != XV_STRUCT) {
        xv_free(v);
        v = NULL;
    }
    rc->rec_refs = xrealloc(rc->rec_refs, (rc->nrec + 1) * sizeof(char *));
    rc->recs = xrealloc(rc->recs, (rc->nrec + 1) * sizeof(xv *));
    rc->rec_refs[rc->nrec] = xstrdup(ref);
    rc->recs[rc->nrec] = v;
    rc->nrec++;
    return v;
}

char *xe_resolve_ref(void *ud, int cls, const char *ref)
{
    xe_ctx *ctx = ud;
    if (!ctx->conn || !ref || strcmp(ref, "OpaqueRef:NULL") == 0 ||
        strncmp(ref, "OpaqueRef:", 10) != 0)
        return NULL;
    refcache *rc = get_refcache(ctx);
    for (size_t i = 0; i < rc->n; i++)
        if (strcmp(rc->refs[i], ref) == 0)
            return xstrdup(rc->uuids[i]);
    char *uuid = NULL;
    if (cls >= 0 && (size_t)cls < api_nclasses) {
        AUTOFREE char *m = xasprintf("%s.get_uuid", api_classes[cls].name);
        if (api_message_lookup(m)) {
            AUTO(xv) *v = NULL;
            AUTO(xerr) *e = NULL;
            AUTO(xv) *a = xe_args1(ref);
            if (xe_conn_call(ctx->conn, m, a, &v, &e) == 0 && !e && xv_str(v))
                uuid = xstrdup(xv_str(v));
        }
    }
    rc->refs = xrealloc(rc->refs, (rc->n + 1) * sizeof(char *));
    rc->uuids = xrealloc(rc->uuids, (rc->n + 1) * sizeof(char *));
    rc->refs[rc->n] = xstrdup(ref);
    rc->uuids[rc->n] = uuid;
    rc->n++;
    return xstrdup(uuid);
}

static void refcache_free(refcache *rc)
{
    if (!rc)
        return;
    for (size_t i = 0; i < rc->n; i++) {
        free(rc->refs[i]);
        free(rc->uuids[i]);
    }
    free(rc->refs);
    free(rc->uuids);
    for (size_t i = 0; i < rc->nrec; i++) {
        free(rc->rec_refs[i]);
        xv_free(rc->recs[i]);
    }
    free(rc->rec_refs);
    free(rc->recs);
    free(rc);
}

/* ---- Runner ---- */

int xe_run(const xe_cmdline *cl, FILE *out, FILE *err)
{
    if (cl->syntax_error)
        return xe_param_error(err, "Syntax error", "");
    const xe_cmd *cmd = xe_command_lookup(cl->cmd);
    if (!cmd)
        return xe_param_error(err, "Unknown command", cl->cmd);
    for (size_t i = 0; cmd->reqd && cmd->reqd[i]; i++)
        if (!xe_params_get(&cl->params, cmd->reqd[i]))
            return xe_param_error(err, "Required parameter not found", cmd->reqd[i]);
    xe_ctx ctx = {.cl = cl, .out = out, .err = err};
    /* xapid refuses such strings anyway (as xapi does); say so without a round trip */
    for (size_t i = 0; i < cl->params.n; i++) {
        const char *bad =
            !utf8_valid(cl->params.v[i].key, strlen(cl->params.v[i].key))   ? cl->params.v[i].key
            : !utf8_valid(cl->params.v[i].val, strlen(cl->params.v[i].val)) ? cl->params.v[i].val
                                                                            : NULL;
        if (bad) {
            AUTO(xerr) *e = xerr_new("INVALID_VALUE", "Invalid UTF-8 string in parameter", bad);
            return xe_fail_api(&ctx, e);
        }
    }
    const char *min = xe_params_get(&cl->params, "minimal");
    ctx.minimal = min && strcmp(min, "true") == 0;
    int rc = 0;
    if (!(cmd->flags & XE_CMD_NOSESSION)) {
        unsigned char pin[32];
        if (cl->o.fingerprint && !xe_parse_fingerprint(cl->o.fingerprint, pin)) {
            fprintf(err, "Error: the fingerprint must be a SHA-256 digest in hex (64 digits, "
                         "colons allowed)\n");
            return 1;
        }
        ctx.conn = xe_conn_new(&cl->o);
        AUTO(xerr) *e = NULL;
        int lr = xe_conn_login(ctx.conn, cl->o.username, cl->o.password, &e);
        if (lr < 0) {
            fprintf(err, "%s\n", xe_conn_error(ctx.conn));
            xe_conn_free(ctx.conn);
            return 1;
        }
        if (lr > 0) {
            if (strcmp(e->code, "SESSION_AUTHENTICATION_FAILED") == 0)
                rc = xe_param_error(err, "",
                                    e->nparams && e->params[0][0] == '\0'
                                        ? "Username/password must be specified"
                                        : "Authentication failed");
            else
                rc = xe_fail_api(&ctx, e);
            xe_conn_free(ctx.conn);
            return rc;
        }
    }
    rc = cmd->fn(&ctx, cmd);
    if (rc == 0 && ctx.minimal)
        fprintf(out, "%s\n", ctx.minimal_buf.data ? ctx.minimal_buf.data : "");
    sbuf_release(&ctx.minimal_buf);
    refcache_free(ctx.refcache);
    xe_conn_logout(ctx.conn);
    xe_conn_free(ctx.conn);
    fflush(out);
    return rc;
}

/* ---- Bash completion ---- */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void xe_write_bash_completion(FILE *f)
{
    size_t n = xe_command_count();
    const char **names = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        names[i] = xe_command_at(i)->name;
    qsort(names, n, sizeof(char *), cmp_name);
    fprintf(f, "# bash completion for xe; generated by `xe --bash-completion` from the command "
               "table.\n");
    fprintf(f, "_xe()\n{\n    local cur=\"${COMP_WORDS[COMP_CWORD]}\"\n");
    fprintf(f, "    local prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n");
    fprintf(f, "    local i cmd=\"\"\n");
    fprintf(f, "    for ((i = 1; i < COMP_CWORD; i++)); do\n");
    fprintf(f, "        case \"${COMP_WORDS[i]}\" in\n");
    fprintf(f, "        -s|-h|-p|-u|-pw|-pwf|--cafile|--fingerprint) ((i++)) ;;\n");
    fprintf(f, "        -*|*=*|=|:) ;;\n");
    fprintf(f, "        *) cmd=\"${COMP_WORDS[i]}\"; break ;;\n");
    fprintf(f, "        esac\n    done\n");
    fprintf(f, "    case \"$prev\" in\n    -pwf|--cafile) COMPREPLY=($(compgen -f -- \"$cur\")); "
               "return 0 ;;\n    -s|-h|-p|-u|-pw|--fingerprint) return 0 ;;\n    =) return 0 ;;\n"
               "    esac\n");
    fprintf(f, "    if [[ -z \"$cmd\" ]]; then\n        COMPREPLY=($(compgen -W \"");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%s", i ? " " : "", names[i]);
    fprintf(f, "\" -- \"$cur\"))\n        return 0\n    fi\n");
    fprintf(f, "    local params=\"\"\n    case \"$cmd\" in\n");
    for (size_t i = 0; i < n; i++) {
        const xe_cmd *c = xe_command_lookup(names[i]);
        fprintf(f, "    %s) params=\"", c->name);
        bool first = true;
        for (int pass = 0; pass < 2; pass++) {
            const char *const *v = pass ? c->optn : c->reqd;
            for (size_t k = 0; v && v[k]; k++) {
                size_t len = strlen(v[k]);
                bool open = len && v[k][len - 1] == ':';
                fprintf(f, "%s%s%s", first ? "" : " ", v[k], open ? "" : "=");
                first = false;
            }
        }
        fprintf(f, "\" ;;\n");
    }
    fprintf(f, "    esac\n");
    fprintf(f, "    compopt -o nospace 2>/dev/null\n");
    fprintf(f, "    COMPREPLY=($(compgen -W \"$params --minimal --force --multiple\" -- "
               "\"$cur\"))\n");
    fprintf(f, "}\ncomplete -F _xe xe\n");
    free(names);
}

/* XCP's get_bool_param: true/t/1, false/f/0 in any case; dflt when absent. */
int xe_bool_param(xe_ctx *ctx, const char *name, bool dflt, bool *ret)
{
    const char *s = xe_params_get(&ctx->cl->params, name);
    *ret = dflt;
    if (!s)
        return 0;
    if (!strcasecmp(s, "true") || !strcasecmp(s, "t") || !strcmp(s, "1"))
        *ret = true;
    else if (!strcasecmp(s, "false") || !strcasecmp(s, "f") || !strcmp(s, "0"))
        *ret = false;
    else
        return xe_fail(ctx, "Failed to parse parameter '%s': expecting 'true' or 'false'", name);
    return 0;
}

/* The ref of the object of a view whose uuid is the value of param (errors printed). */
int xe_ref_of(xe_ctx *ctx, const char *view, const char *param, char **ret_ref)
{
    return xe_get_by_uuid(ctx, xe_view_lookup(view), xe_params_get(&ctx->cl->params, param),
                          ret_ref, NULL);
}

/* Prints the uuid of a new object of class cls (PList, as XCP). */
int xe_print_new_uuid(xe_ctx *ctx, const char *cls, const char *ref)
{
    if (!ref)
        return xe_fail(ctx, "Server internal error.");
    AUTOFREE char *m = xasprintf("%s.get_uuid", cls);
    AUTO(xv) *uuid = NULL;
    if (xe_call(ctx, m, xe_args1(ref), &uuid))
        return 1;
    xe_print_one(ctx, xv_str(uuid) ? xv_str(uuid) : "");
    return 0;
}

/* uuid=<x> -> method(ref) */
int xe_uuid_op(xe_ctx *ctx, const char *view, const char *method)
{
    AUTOFREE char *ref = NULL;
    if (xe_ref_of(ctx, view, "uuid", &ref))
        return 1;
    return xe_call(ctx, method, xe_args1(ref), NULL);
}
