/* xe: the XCP-compatible command line. Internal interfaces shared by the cli/ sources and
 * their unit tests (tests/unit/test_xe*.c); nothing outside cli/ includes this.
 *
 * Flow: xe_cmdline_parse (argv + ~/.xe + XE_EXTRA_ARGS, as XCP's newcli does) -> command
 * lookup in the one command table (xe_commands.c) -> xe_conn (libcurl, XML-RPC by default,
 * one session per invocation) -> printers that reproduce XCP's output byte for byte. */
#pragma once

#include "api.h"
#include "api_cli.h"
#include "err.h"
#include "sbuf.h"
#include "xv.h"

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

/* ---- Command line ---- */

typedef struct xe_kv {
    char *key;
    char *val;
} xe_kv;

typedef struct xe_params {
    xe_kv *v;
    size_t n, cap;
} xe_params;

/* Appends a copy of key/val (val NULL = ""). */
void xe_params_add(xe_params *p, const char *key, const char *val);
/* The value of the first param called key, or NULL. Borrowed. */
const char *xe_params_get(const xe_params *p, const char *key);
void xe_params_clear(xe_params *p);

/* Connection options, filled from argv > XE_EXTRA_ARGS > ~/.xe > defaults. */
typedef struct xe_opts {
    char *server;   /* default 127.0.0.1 */
    int port;       /* -1: 443 with TLS, 80 without */
    char *username; /* default root */
    char *password; /* default "null", as XCP */
    char *passwordfile;
    bool nossl;
    bool debug;
    /* Our additions (XCP's xe does not check the certificate at all): */
    bool insecure;     /* TLS without any certificate check */
    char *cafile;      /* verify against this CA bundle */
    char *fingerprint; /* pin the server certificate's SHA-256 (hex, colons optional) */
    bool jsonrpc;      /* talk JSON-RPC v2 instead of XML-RPC */
} xe_opts;

typedef struct xe_cmdline {
    xe_opts o;
    char *cmd;        /* command name; NULL when none was given */
    xe_params params; /* the command's params in order ("--minimal" -> minimal=true) */
    bool syntax_error;
} xe_cmdline;

enum xe_parse_rc {
    XE_PARSE_OK = 0,
    XE_PARSE_USAGE,   /* print usage, exit 0 (no command, --help, bad port: as XCP) */
    XE_PARSE_VERSION, /* -version */
    XE_PARSE_FAIL,    /* message already printed to err, exit 1 */
};

/* Parses like XCP: client switches (-s -p -u -pw -pwf -h --nossl --debug and their key=
 * forms) are taken from argv first, then from XE_EXTRA_ARGS (extra_env, comma-separated,
 * "\," escapes a comma), then from the ~/.xe text (rc_text, key=value lines); the first
 * to set a switch wins. Everything else is the command and its params. rc_text/extra_env
 * may be NULL. Reads the password file when one is named. Messages go to err. */
enum xe_parse_rc xe_cmdline_parse(xe_cmdline *cl, int argc, char *const *argv, const char *rc_text,
                                  const char *extra_env, FILE *err);
void xe_cmdline_free(xe_cmdline *cl);
/* Splits XE_EXTRA_ARGS as XCP does; returns a NULL-terminated caller-frees vector. */
char **xe_split_extra_args(const char *s);
void xe_strv_free(char **v);
/* Parses a pinned fingerprint (hex, optional colons, optional "sha256 Fingerprint=" prefix)
 * into 32 bytes; false if malformed. */
bool xe_parse_fingerprint(const char *s, unsigned char out[32]);

/* ---- Output formatting (byte-for-byte XCP) ---- */

/* One record: the first key left-aligned, the others right-aligned, all padded to the
 * longest key + 4, then ": " and the value; a newline after each line (an empty record is
 * a single newline, as in XCP). */
void xe_format_record(sbuf *b, size_t n, const char *const *keys, const char *const *vals);
/* --minimal escaping: ',' -> "\,", '\' -> "\\". Caller frees. */
char *xe_escape_minimal(const char *s);

/* Resolves a ref of class cls (api class id) to its uuid; returns caller-frees text or
 * NULL for a null/dangling ref. */
typedef char *(*xe_ref_resolver)(void *ud, int cls, const char *ref);
/* Appends v (of type t) as XCP prints it: sets "a; b", maps "k: v; k2: v2", refs as
 * uuids ("<not in database>" when unresolvable), floats "%.3f", bools true/false,
 * VM power states lowercase. resolve may be NULL (refs print raw). */
void xe_format_value(sbuf *b, const api_type *t, const xv *v, xe_ref_resolver resolve, void *ud);
/* The same with another separator between set members (XCP joins tags with ", "). */
void xe_format_value_sep(sbuf *b, const api_type *t, const xv *v, const char *set_sep,
                         xe_ref_resolver resolve, void *ud);

/* The text XCP prints to stderr for an API error: the error's doc sentence and "name:
 * value" per declared param, or "Error code: X\nError parameters: a, b\n" for codes it
 * does not know. SESSION_AUTHENTICATION_FAILED is special-cased by the caller. */
void xe_format_api_error(sbuf *b, const xerr *e);

/* ---- Class views: what each <class>-* command shows ----
 * XCP's record layouts (column names, order, flags, access tags, default -list columns,
 * implicit filters) are declared in api-schema/cli/<class>.json and generated into
 * api_cli.c: api_cli_views[], one entry per view (vm, template and snapshot of VM ...). */

typedef api_cli_view xe_view;

/* A view's columns resolved against the API tables. */
typedef struct xe_col {
    const char *name;
    const api_field *f; /* the field shown (of via_cls when via is set) */
    int fidx;
    unsigned flags;       /* API_CLI_* */
    char tag[4];          /* " RO", " RW", "SRO", "SRW", "MRO", "MRW" */
    const api_field *via; /* the reference followed first, or NULL */
    const api_class *via_cls;
} xe_col;

typedef struct xe_cols {
    const api_class *cls;
    size_t n;
    xe_col *c;
} xe_cols;

/* Fills ret from the view; release with xe_cols_clear (or declare XE_COLS_AUTO). */
void xe_view_columns(const xe_view *v, xe_cols *ret);
void xe_cols_clear(xe_cols *c);
#define XE_COLS_AUTO __attribute__((cleanup(xe_cols_clear)))
const xe_view *xe_view_lookup(const char *cli);
/* Finds the generated message of kind k on class cls for field fidx (-1: any). */
const api_message *xe_find_message(int cls, api_msg_kind k, int fidx);

/* The doc sentence and param names XCP prints for an error code (generated from
 * api-schema/errors.json), or NULL. */
const api_cli_error *xe_error_doc_lookup(const char *code);

/* ---- Connection ---- */

typedef struct xe_conn xe_conn;

/* Opens a libcurl handle for the options (no I/O yet). */
xe_conn *xe_conn_new(const xe_opts *o);
void xe_conn_free(xe_conn *c);
DEFINE_FREEP(xe_conn)
/* One call. The session (when logged in and the method takes one) is prepended to params
 * (an XV_ARRAY or NULL). Returns 0 with *ret_value or *ret_err set (API-level outcome), or
 * -1 for a transport failure with a one-line message in xe_conn_error(). */
int xe_conn_call(xe_conn *c, const char *method, const xv *params, xv **ret_value, xerr **ret_err);
const char *xe_conn_error(const xe_conn *c);
/* Logs in (originator "cli"). Returns 0, 1 with *ret_err set (API error, caller frees), or
 * -1 on a transport failure (message in xe_conn_error()). */
int xe_conn_login(xe_conn *c, const char *user, const char *pw, xerr **ret_err);
void xe_conn_logout(xe_conn *c);
/* The session ref once logged in (borrowed), or NULL. */
const char *xe_conn_session(const xe_conn *c);

/* A raw byte stream over a second connection to the same server (same transport and
 * certificate checks as c): "GET path HTTP/1.1" with Connection: Upgrade and Upgrade: proto.
 * Returns 0 with *ret (the server answered 101), the HTTP status (> 0) with the response body
 * in *ret_msg when it refused, or -1 with a one-line message in *ret_msg for a transport
 * failure. *ret_msg is caller-frees (NULL on success). */
typedef struct xe_stream xe_stream;
int xe_stream_open(xe_conn *c, const char *path, const char *proto, xe_stream **ret,
                   char **ret_msg);
void xe_stream_free(xe_stream *s);
/* The socket, to poll for input (TLS may hold decrypted bytes: read until -2 after a wakeup). */
int xe_stream_fd(const xe_stream *s);
/* > 0 bytes, 0 end of stream, -1 error, -2 nothing now (poll the fd). */
ssize_t xe_stream_recv(xe_stream *s, void *buf, size_t len);
/* > 0 bytes sent, -1 error, -2 would block. */
ssize_t xe_stream_send(xe_stream *s, const void *buf, size_t len);

/* ---- Commands ---- */

typedef struct xe_ctx xe_ctx;
typedef struct xe_cmd xe_cmd;
/* A command's body: returns the exit code; errors are printed through xe_fail*. */
typedef int (*xe_cmd_fn)(xe_ctx *ctx, const xe_cmd *cmd);

enum {
    XE_CMD_STANDARD = 1,  /* in the "Common command list" of plain help */
    XE_CMD_NOSESSION = 2, /* runs without a connection (help) */
};

/* XCP's selectors: vm=<name or uuid> (host=, sr=) plus field filters choose the objects an
 * operation runs on (select.c). Declared with their views in api-schema/cli/<class>.json
 * ("selector") and generated into api_cli.c; the names command entries use: */
typedef api_cli_selector xe_selector;
#define xe_sel_vm   api_cli_sel_vm
#define xe_sel_host api_cli_sel_host
#define xe_sel_sr   api_cli_sel_sr

struct xe_cmd {
    const char *name;
    const char *const *reqd; /* NULL-terminated, or NULL */
    const char *const *optn;
    const char *help;
    xe_cmd_fn fn;
    unsigned flags;
    const xe_view *view;    /* generic per-class commands */
    const xe_selector *sel; /* commands that take vm=/host=/sr= selectors */
};

struct xe_ctx {
    xe_conn *conn;
    const xe_cmdline *cl;
    FILE *out, *err;
    bool minimal;
    sbuf minimal_buf; /* --minimal output, printed once at the end on success */
    bool minimal_any;
    void *refcache;
};

/* The custom commands (commands.c): THE one place later issues add vm-*, vdi-*, sr-*,
 * network-*, vif-*, vbd-* and console entries. A custom entry named like a generic
 * per-class command replaces it. */
extern const xe_cmd xe_custom_cmds[];
extern const size_t xe_ncustom_cmds;

/* The whole command table: the custom commands followed by the generic per-class ones
 * (generic.c). Built once; never freed before exit. */
const xe_cmd *xe_command_lookup(const char *name);
size_t xe_command_count(void);
const xe_cmd *xe_command_at(size_t i);

/* ---- Helpers for command bodies (runtime.c, generic.c) ----
 * Commands print through these so --minimal and XCP's layout apply everywhere; the error
 * helpers print and return the exit code 1. */

/* Params every command accepts (XCP's stdparams); NULL-terminated. */
extern const char *const xe_std_params[];
bool xe_strv_has(const char *const *v, const char *s);

/* One record of output: keys (with their access tags) and values, both caller-owned
 * strings the row takes. */
typedef struct xe_row {
    size_t n;
    char **keys;
    char **vals;
} xe_row;
void xe_row_add(xe_row *r, char *key, char *val);
void xe_row_clear(xe_row *r);
/* XCP's PTable (records, each followed by two newlines; --minimal: first values joined by
 * ','), PList (one line each; --minimal: joined by ',') and a single line. */
void xe_print_table(xe_ctx *ctx, xe_row *rows, size_t n);
void xe_print_list(xe_ctx *ctx, const char *const *items, size_t n);
void xe_print_one(xe_ctx *ctx, const char *s);

/* Helpers of the custom commands: the ref of a view's object named by a uuid param (errors
 * printed), printing a new object's uuid, and `uuid=<x> -> method(ref)`. Return 0 or 1. */
int xe_ref_of(xe_ctx *ctx, const char *view, const char *param, char **ret_ref);
int xe_print_new_uuid(xe_ctx *ctx, const char *cls, const char *ref);
int xe_uuid_op(xe_ctx *ctx, const char *view, const char *method);
/* XCP's get_bool_param: the param as true/t/1 or false/f/0 (any case), dflt when absent;
 * anything else prints XCP's error and returns 1. */
int xe_bool_param(xe_ctx *ctx, const char *name, bool dflt, bool *ret);
/* "Error: <msg>" (XCP's Cli_failure). Returns 1. */
int xe_fail(xe_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "<what>: <detail>" (or just detail) and "For usage run: 'xe help'". Returns 1. */
int xe_param_error(FILE *err, const char *what, const char *detail);
/* An API error as XCP prints it, refs in params shown as "uuid (name)". Returns 1. */
int xe_fail_api(xe_ctx *ctx, const xerr *e);

/* One API call (the session is added); params (an array or NULL) is consumed. Prints API
 * and transport errors. Returns 0 (with *ret set when ret is not NULL) or 1. */
int xe_call(xe_ctx *ctx, const char *method, xv *params, xv **ret);
/* The same through Async.<method>: waits for the task (a progress line on stderr when it
 * is a terminal), destroys it and returns its decoded result. */
int xe_call_async(xe_ctx *ctx, const char *method, xv *params, xv **ret);
/* [a] and [a, b] param arrays (b is consumed). */
xv *xe_args1(const char *a);
xv *xe_args2(const char *a, xv *b);

/* Ref -> uuid (an xe_ref_resolver; ud is the ctx) and ref -> record (borrowed, cached for
 * the invocation; NULL when null or dangling). */
char *xe_resolve_ref(void *ud, int cls, const char *ref);
const xv *xe_ref_record(xe_ctx *ctx, const api_class *cls, const char *ref);

/* A view's column by CLI name, a column's printed value in a record (caller frees). */
const xe_col *xe_col_lookup(const xe_cols *cols, const char *name);
char *xe_col_value(xe_ctx *ctx, const xe_col *c, const xv *rec);
/* Whether rec passes the list filter k=v (name=v, map:key=v, set:contains=v); -1 on a bad
 * filter (printed). */
int xe_filter_match(xe_ctx *ctx, const xe_cols *cols, const xv *rec, const char *k, const char *v);
/* uuid -> ref (caller frees) and, when ret_rec is not NULL, the record. Returns 0 or 1. */
int xe_get_by_uuid(xe_ctx *ctx, const xe_view *v, const char *uuid, char **ret_ref, xv **ret_rec);

/* <class>.get_all_records of a view's class ({ref: record}). Returns 0 or 1. */
int xe_get_all_records(xe_ctx *ctx, const xe_view *v, xv **ret);

enum {
    XE_SEL_MULTIPLE_OK = 1,     /* the operation may run on several objects (--multiple) */
    XE_SEL_TEMPLATES = 2,       /* VMs: templates may be selected */
    XE_SEL_CONTROL_DOMAINS = 4, /* VMs: control domains may be selected */
};
/* Indexes (into all's members) of the objects the command line selects: the pseudo-field
 * and every param except the std ones and those in ignore (the operation's own, matched by
 * the part before ':'). Returns 0 (caller frees *ret_idx) or 1 (error printed). */
int xe_select(xe_ctx *ctx, const xe_selector *s, unsigned flags, const char *const *ignore,
              const xv *all, size_t **ret_idx, size_t *ret_n);
/* Runs op on the selected objects as XCP's do_vm_op/do_host_op do: none -> "No matching
 * ...", several -> needs --multiple (and XE_SEL_MULTIPLE_OK), failures of a multiple run
 * reported on stdout per object. op prints its own errors and returns 0 or 1. */
typedef int (*xe_selected_fn)(xe_ctx *ctx, const char *ref, const xv *rec, void *ud);
int xe_do_selected(xe_ctx *ctx, const xe_selector *s, unsigned flags, const char *const *ignore,
                   xe_selected_fn op, void *ud);

/* Runs a parsed command line; returns the exit code. */
int xe_run(const xe_cmdline *cl, FILE *out, FILE *err);
/* Writes the bash completion script for the command table. */
void xe_write_bash_completion(FILE *f);
/* XCP's usage text (stderr when run without a command). */
void xe_print_usage(FILE *f, const char *argv0);
