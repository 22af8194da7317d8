/* xe command-line parsing: client switches, ~/.xe, XE_EXTRA_ARGS, command params (XCP rules). */
#define _GNU_SOURCE
#include "xe.h"

#include "mem.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void xe_params_add(xe_params *p, const char *key, const char *val)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 8;
        p->v = xrealloc(p->v, p->cap * sizeof(*p->v));
    }
    p->v[p->n].key = xstrdup(key);
    p->v[p->n].val = xstrdup(val ? val : "");
    p->n++;
}

const char *xe_params_get(const xe_params *p, const char *key)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->v[i].key, key) == 0)
            return p->v[i].val;
    return NULL;
}

void xe_params_clear(xe_params *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].key);
        free(p->v[i].val);
    }
    free(p->v);
    p->v = NULL;
    p->n = p->cap = 0;
}

void xe_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static void strv_push(char ***v, size_t *n, char *s)
{
    *v = xrealloc(*v, (*n + 2) * sizeof(char *));
    (*v)[(*n)++] = s;
    (*v)[*n] = NULL;
}

char **xe_split_extra_args(const char *s)
{
    /* Segments end at a comma not preceded by a backslash; empty segments vanish and
     * every backslash is dropped, as XCP's newcli does. */
    char **v = xcalloc(1, sizeof(char *));
    size_t n = 0;
    size_t len = s ? strlen(s) : 0, pos = 0, i = 0;
    while (pos < len) {
        if (s[pos] == ',') {
            pos++;
            i = pos;
        } else if (i >= len || (s[i] == ',' && s[i - 1] != '\\')) {
            char *seg = xmalloc(i - pos + 1);
            size_t k = 0;
            for (size_t j = pos; j < i; j++)
                if (s[j] != '\\')
                    seg[k++] = s[j];
            seg[k] = '\0';
            strv_push(&v, &n, seg);
            i++;
            pos = i;
        } else {
            i++;
        }
    }
    return v;
}

bool xe_parse_fingerprint(const char *s, unsigned char out[32])
{
    const char *eq = strrchr(s, '=');
    if (eq)
        s = eq + 1;
    size_t k = 0;
    for (const char *p = s; *p;) {
        if (*p == ':' || isspace((unsigned char)*p)) {
            p++;
            continue;
        }
        if (!isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]) || k == 32)
            return false;
        char hex[3] = {p[0], p[1], 0};
        out[k++] = (unsigned char)strtoul(hex, NULL, 16);
        p += 2;
    }
    return k == 32;
}

static bool parse_bool(const char *v, bool *ret)
{
    /* OCaml's bool_of_string: exactly "true" or "false". */
    if (strcmp(v, "true") == 0)
        *ret = true;
    else if (strcmp(v, "false") == 0)
        *ret = false;
    else
        return false;
    return true;
}

/* Per switch, the priority of the source that set it (0: unset; ~/.xe 1, XE_EXTRA_ARGS 2,
 * argv 3); within one source the last setting wins, as in XCP. */
typedef struct seen {
    int level;
    int server, port, username, password, passwordfile, nossl, debug, insecure, cafile, fingerprint,
        jsonrpc;
} seen;

enum kw_rc { KW_UNKNOWN = 0, KW_SET, KW_BAD_PORT };

/* Sets a client keyword unless a higher-priority source set it already. */
static enum kw_rc set_keyword(xe_opts *o, seen *s, const char *k, const char *v)
{
#define STR_KW(name)                                                                               \
    if (strcmp(k, #name) == 0) {                                                                   \
        if (s->name <= s->level) {                                                                 \
            free(o->name);                                                                         \
            o->name = xstrdup(v);                                                                  \
            s->name = s->level;                                                                    \
        }                                                                                          \
        return KW_SET;                                                                             \
    }
#define BOOL_KW(name, expr)                                                                        \
    if (strcmp(k, #name) == 0) {                                                                   \
        bool b = false;                                                                            \
        if (s->name <= s->level && parse_bool(v, &b)) {                                            \
            o->name = (expr);                                                                      \
            s->name = s->level;                                                                    \
        }                                                                                          \
        return KW_SET;                                                                             \
    }
    STR_KW(server)
    STR_KW(username)
    STR_KW(password)
    STR_KW(passwordfile)
    STR_KW(cafile)
    STR_KW(fingerprint)
    BOOL_KW(nossl, b)
    BOOL_KW(debug, b)
    BOOL_KW(insecure, b)
    BOOL_KW(jsonrpc, b)
#undef STR_KW
#undef BOOL_KW
    if (strcmp(k, "port") == 0) {
        char *end = NULL;
        errno = 0;
        long p = strtol(v, &end, 10);
        if (!*v || *end || errno || p < 0 || p > 65535)
            return KW_BAD_PORT;
        if (s->port <= s->level) {
            o->port = (int)p;
            s->port = s->level;
        }
        return KW_SET;
    }
    return KW_UNKNOWN;
}

/* Client switches with their keyword; NULL value = unary (true). */
static const struct {
    const char *sw;
    const char *kw;
    bool unary;
} client_switches[] = {
    {"-s", "server", false},
    {"-h", "server", false},
    {"-p", "port", false},
    {"-u", "username", false},
    {"-pw", "password", false},
    {"-pwf", "passwordfile", false},
    {"--nossl", "nossl", true},
    {"--debug", "debug", true},
    {"--insecure", "insecure", true},
    {"--cafile", "cafile", false},
    {"--fingerprint", "fingerprint", false},
    {"--jsonrpc", "jsonrpc", true},
};

/* Takes client switches out of args (in order); the rest is appended to rest. Returns
 * false on a bad port. */
static bool process_args(xe_opts *o, seen *s, char *const *args, size_t n, char ***rest,
                         size_t *nrest)
{
    for (size_t i = 0; i < n; i++) {
        const char *a = args[i];
        bool handled = false;
        for (size_t k = 0; k < ARRAY_SIZE(client_switches); k++) {
            if (strcmp(a, client_switches[k].sw) != 0)
                continue;
            if (client_switches[k].unary) {
                set_keyword(o, s, client_switches[k].kw, "true");
                handled = true;
            } else if (i + 1 < n) {
                if (set_keyword(o, s, client_switches[k].kw, args[i + 1]) == KW_BAD_PORT)
                    return false;
                i++;
                handled = true;
            }
            break;
        }
        if (handled)
            continue;
        const char *eq = strchr(a, '=');
        if (eq) {
            AUTOFREE char *k = xstrndup(a, (size_t)(eq - a));
            enum kw_rc rc = set_keyword(o, s, k, eq + 1);
            if (rc == KW_BAD_PORT)
                return false;
            if (rc == KW_SET)
                continue;
        }
        strv_push(rest, nrest, xstrdup(a));
    }
    return true;
}

/* The ~/.xe lines as key=value strings; false (after XCP's message) on a line without
 * '='. Blank lines are skipped. */
static bool parse_rc(const char *text, char ***ret, size_t *n, FILE *err)
{
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > 0) {
            if (!memchr(p, '=', len)) {
                fprintf(err, "Error parsing rc file. No defaults loaded\n");
                xe_strv_free(*ret);
                *ret = xcalloc(1, sizeof(char *));
                *n = 0;
                return false;
            }
            strv_push(ret, n, xstrndup(p, len));
        }
        p = nl ? nl + 1 : NULL;
    }
    return true;
}

static int read_password_file(xe_opts *o, FILE *err)
{
    AUTOFREE char *data = NULL;
    if (read_file(o->passwordfile, &data, NULL) < 0) {
        fprintf(err, "Error opening password file '%s'\n", o->passwordfile);
        return -1;
    }
    char *nl1 = strchr(data, '\n');
    char *nl2 = nl1 ? strchr(nl1 + 1, '\n') : NULL;
    if (!nl1 || (!nl2 && nl1[1] == '\0')) {
        fprintf(err, "Error: password file format: expecting username on the first line, "
                     "password on the second line\n");
        return -1;
    }
    *nl1 = '\0';
    if (nl2)
        *nl2 = '\0';
    free(o->username);
    free(o->password);
    o->username = xstrdup(data);
    o->password = xstrdup(nl1 + 1);
    return 0;
}

/* The server side of XCP's parsing: "--x" -> x=true, "-u v"-style switches, key=value
 * (split at the first '='), bare words -> word="". */
static bool parse_command_params(xe_cmdline *cl, char **args, size_t n)
{
    static const struct {
        const char *sw, *key;
    } dyadic[] = {{"-u", "username"},
                  {"-pw", "password"},
                  {"-s", "server"},
                  {"-h", "server"},
                  {"-p", "port"}};
    for (size_t i = 0; i < n; i++) {
        const char *a = args[i];
        if (strncmp(a, "--", 2) == 0) {
            xe_params_add(&cl->params, a + 2, "true");
        } else if (a[0] == '-') {
            const char *key = NULL;
            for (size_t k = 0; k < ARRAY_SIZE(dyadic); k++)
                if (strcmp(a, dyadic[k].sw) == 0)
                    key = dyadic[k].key;
            if (!key || i + 1 >= n)
                return false;
            xe_params_add(&cl->params, key, args[++i]);
        } else {
            const char *eq = strchr(a, '=');
            if (eq) {
                AUTOFREE char *k = xstrndup(a, (size_t)(eq - a));
                xe_params_add(&cl->params, k, eq + 1);
            } else {
                xe_params_add(&cl->params, a, "");
            }
        }
    }
    return true;
}

enum xe_parse_rc xe_cmdline_parse(xe_cmdline *cl, int argc, char *const *argv, const char *rc_text,
                                  const char *extra_env, FILE *err)
{
    memset(cl, 0, sizeof(*cl));
    cl->o.port = -1;
    seen s = {0};
    enum xe_parse_rc rc = XE_PARSE_OK;
    char **rest = xcalloc(1, sizeof(char *));
    size_t nrest = 0;
    char **rc_lines = xcalloc(1, sizeof(char *));
    size_t nrc = 0;
    char **extras = xe_split_extra_args(extra_env);
    size_t nextras = 0;
    while (extras[nextras])
        nextras++;
    char **extra_rest = xcalloc(1, sizeof(char *));
    size_t nextra_rest = 0;
    char **rc_rest = xcalloc(1, sizeof(char *));
    size_t nrc_rest = 0;
    AUTOFREE char **args = xcalloc((size_t)argc + 1, sizeof(char *));
    AUTOFREE char **all = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-version") == 0) {
            rc = XE_PARSE_VERSION;
            goto out;
        }
    }
    bool help = false;
    size_t nargs = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-help") == 0 || strcmp(argv[i], "--help") == 0)
            help = true;
        else
            args[nargs++] = argv[i];
    }
    /* Priority: argv > XE_EXTRA_ARGS > ~/.xe; the first source to set a switch wins. */
    s.level = 3;
    bool ok = process_args(&cl->o, &s, args, nargs, &rest, &nrest);
    s.level = 2;
    if (!ok || !process_args(&cl->o, &s, extras, nextras, &extra_rest, &nextra_rest)) {
        fprintf(err, "Port number must be an integer (0-65535)\n");
        rc = XE_PARSE_USAGE;
        goto out;
    }
    if (rc_text)
        parse_rc(rc_text, &rc_lines, &nrc, err);
    s.level = 1;
    for (size_t i = 0; i < nrc; i++) {
        char *eq = strchr(rc_lines[i], '=');
        AUTOFREE char *k = xstrndup(rc_lines[i], (size_t)(eq - rc_lines[i]));
        enum kw_rc r = set_keyword(&cl->o, &s, k, eq + 1);
        if (r == KW_BAD_PORT) {
            fprintf(err, "Port number must be an integer (0-65535)\n");
            rc = XE_PARSE_USAGE;
            goto out;
        }
        if (r == KW_UNKNOWN)
            strv_push(&rc_rest, &nrc_rest, xstrdup(rc_lines[i]));
    }
    if (help || nrest + nextra_rest + nrc_rest == 0) {
        rc = XE_PARSE_USAGE;
        goto out;
    }
    if (!cl->o.server)
        cl->o.server = xstrdup("127.0.0.1");
    if (!cl->o.username)
        cl->o.username = xstrdup("root");
    if (!cl->o.password)
        cl->o.password = xstrdup("null");
    if (cl->o.passwordfile && read_password_file(&cl->o, err) < 0) {
        rc = XE_PARSE_FAIL;
        goto out;
    }
    /* The command line the server side sees: argv's rest, then the extras', then the
     * rc file's unknown keys. */
    all = xcalloc(nrest + nextra_rest + nrc_rest + 1, sizeof(char *));
    size_t nall = 0;
    for (size_t i = 0; i < nrest; i++)
        all[nall++] = rest[i];
    for (size_t i = 0; i < nextra_rest; i++)
        all[nall++] = extra_rest[i];
    for (size_t i = 0; i < nrc_rest; i++)
        all[nall++] = rc_rest[i];
    if (strchr(all[0], '=') || !parse_command_params(cl, all + 1, nall - 1)) {
        cl->syntax_error = true;
        xe_params_clear(&cl->params);
    }
    cl->cmd = xstrdup(all[0]);
out:
    xe_strv_free(rest);
    xe_strv_free(rc_lines);
    xe_strv_free(extras);
    xe_strv_free(extra_rest);
    xe_strv_free(rc_rest);
    return rc;
}

void xe_cmdline_free(xe_cmdline *cl)
{
    free(cl->o.server);
    free(cl->o.username);
    free(cl->o.password);
    free(cl->o.passwordfile);
    free(cl->o.cafile);
    free(cl->o.fingerprint);
    free(cl->cmd);
    xe_params_clear(&cl->params);
    memset(cl, 0, sizeof(*cl));
}
