/* xapid internals shared by its modules: the server state and the per-call context. */
#pragma once

#include "api_gen.h"
#include "err.h"
#include "store.h"
#include "xv.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct xapid_config {
    char *state_dir;
    char *listen;     /* ADDR:PORT, HTTP */
    char *tls_listen; /* ADDR:PORT, HTTPS, or NULL */
    char *root_password_file;
    char *tls_cert; /* PEM paths; generated under state_dir when NULL */
    char *tls_key;
    char *unix_socket; /* pre-authenticated local socket; default <state_dir>/xapi.sock */
    char *db_path;     /* default <state_dir>/xapi.db */
    int64_t max_body;  /* bytes per request body */
    int64_t max_connections;
    int64_t session_idle_timeout; /* seconds */
    int64_t max_sessions;
    int64_t max_sessions_per_user;
    int64_t password_iterations;
    int64_t task_workers;
    int64_t max_pending_tasks;
    int64_t event_timeout_max; /* seconds a call may block in event.from/next */
    int64_t task_retention;    /* seconds a finished task is kept */
    char *log_level;
    int64_t manage_pifs;   /* 1: start-up re-plugs attached PIFs into their bridges */
    char *vmm;             /* nuvem-vmm binary */
    char *miniguest;       /* the bundled mini guest kernel (templates name it nuvem:miniguest) */
    char *guest_image_dir; /* Linux kernel + initrd of the Debian template (nuvem:debian/...) */
    char *kernel_dir;      /* where other PV_kernel/PV_ramdisk paths may point */
    char *run_dir;         /* per-VM runtime files (control sockets, configs, serial logs) */
    int64_t shutdown_timeout;   /* seconds a clean shutdown/reboot may take */
    int64_t vm_memory_overhead; /* bytes of host memory counted per VM on top of its RAM */
    int64_t vm_memory_limit;    /* bytes VMs may use in all; 0: MemAvailable at start-up */
    int64_t page_sharing;       /* 1: new VMs' RAM is offered to KSM */
} xapid_config;

struct sessions;
struct tasks;

typedef struct xapid {
    xapid_config cfg;
    store *st;
    char *host_ref;
    char *pool_ref;
    char *host_address;
    char *http_address; /* HOST:PORT the plain HTTP listener bound (console locations) */
    struct sessions *sessions;
    struct tasks *tasks;
    atomic_bool stopping;
} xapid;

/* The caller of one message. */
typedef struct api_ctx {
    xapid *x;
    char *session; /* session ref, NULL for calls without one */
    char *user;
    int role; /* rank in api_roles */
    bool superuser;
    char *task;          /* set while running as an Async task */
    atomic_bool *cancel; /* set by task.cancel for a running task */
    const api_message *msg;
    bool local; /* came over the local Unix socket */
} api_ctx;

/* dispatch.c: runs one decoded call; returns the result or sets *ret_err. */
/* local: the call came over the Unix socket, whose logins are pre-authenticated as root
 * (as XAPI's /var/lib/xcp/xapi). */
xv *xapid_dispatch(xapid *x, const char *method, const xv *params, bool local, xerr **ret_err);
/* Runs an already-checked message with the given context (used by tasks). */
xerr *xapid_invoke(api_ctx *ctx, const api_message *m, const xv *const *args, xv **ret);

/* implicit.c: the generated messages, driven by the tables. */
xerr *implicit_call(api_ctx *ctx, const api_message *m, const xv *const *args, xv **ret);
/* Parses a get_all_records_where expression into SQL with ? args. */
xerr *where_to_sql(const api_class *c, const char *expr, char **ret_sql, xv **ret_args);

/* sessions.c */
int sessions_init(xapid *x);
void sessions_free(xapid *x);
/* Validates a session ref, refreshing its idle timer; fills ctx. SESSION_INVALID otherwise. */
xerr *sessions_check(xapid *x, const char *ref, api_ctx *ctx);
xerr *sessions_login(xapid *x, const char *user, const char *password, const char *originator,
                     char **ret_ref);
xerr *sessions_logout(xapid *x, const char *ref);
/* A root session without a password check (the local Unix socket). */
xerr *sessions_login_local(xapid *x, const char *originator, char **ret_ref);
/* Drops sessions idle beyond the timeout. */
void sessions_expire(xapid *x);
size_t sessions_count(xapid *x);

/* auth.c: local users with PBKDF2 hashes in the DB. */
int auth_init(xapid *x);
/* Checks a password; returns the user's role rank or -1. */
int auth_verify(xapid *x, const char *user, const char *password);
int auth_set_password(xapid *x, const char *user, const char *password, const char *role);
/* Encodes a new hash string "$pbkdf2-sha256$<iter>$<salt>$<hash>" (caller frees). */
char *auth_hash_password(const char *password, int64_t iterations);
bool auth_check_hash(const char *encoded, const char *password);

/* tasks.c */
int tasks_init(xapid *x);
void tasks_stop(xapid *x);
/* Creates a task for m and queues it; *ret_task gets its ref. */
xerr *tasks_submit(api_ctx *ctx, const api_message *m, xv **args, size_t nargs, char **ret_task);
xerr *tasks_cancel(xapid *x, const char *task);
/* Marks pending tasks left by a previous run as failed. */
void tasks_fail_stale(xapid *x);
/* Destroys tasks that finished more than cfg.task_retention seconds ago. */
void tasks_gc(xapid *x);

/* bootstrap.c: first-start objects (pool, host, metrics, CPUs, PIF, roles). */
int bootstrap(xapid *x);

/* http.c */
struct http_server;
struct http_server *http_start(xapid *x, const char *listen, bool tls, const char *cert_pem,
                               const char *key_pem);
/* The pre-authenticated local listener on a Unix socket at path (mode 0600). */
struct http_server *http_start_unix(xapid *x, const char *path);
void http_stop(struct http_server *h);
/* Handles one RPC body: decides protocol from the path, returns the response body. */
char *http_rpc(xapid *x, const char *path, const char *body, size_t len, bool local,
               size_t *ret_len, const char **ret_ctype, int *ret_status);

/* The caller of a plain HTTP request (VDI import/export, console): session_id= in the query
 * or a cookie, else a login from Basic credentials (*ret_temp gets that new session, which the
 * caller logs out when the request ends). 0 when the session has at least min_role, else the
 * HTTP status to refuse with (401, 403). */
struct MHD_Connection;
unsigned http_authenticate(xapid *x, struct MHD_Connection *c, const char *min_role,
                           char **ret_temp);

/* tls.c */
int tls_ensure_cert(const char *cert_path, const char *key_path, const char *hostname);

/* util */
/* Runs fn in a store write transaction. */
#define XWRITE(x, fn, ud) store_write((x)->st, (fn), (ud))

/* network.c: the network hooks of the VM lifecycle and start-up. vif_attach plugs the VIF's tap
 * vif<domid>.<device> on its network's bridge (made on demand for internal networks) with MTU,
 * QoS and locking; *ret_fd (optional) gets an fd for the VMM. vif_detach removes it.
 * reconcile re-plugs attached VIFs of running VMs (taps are kept, not duplicated), marks the
 * others detached, removes stale taps, and re-plugs attached PIFs when manage_pifs. */
xerr *xapid_network_vif_attach(xapid *x, const char *vif, int64_t domid, int *ret_fd);
xerr *xapid_network_vif_detach(xapid *x, const char *vif, int64_t domid);
xerr *xapid_network_reconcile(xapid *x, bool manage_pifs);
/* One pass of the background work (VIF/PIF metrics rows and counters, DHCP lease changes);
 * reconcile starts a thread (xapid_network_start) that runs it every few seconds; stop ends
 * that thread (call it before the store is closed). */
xerr *xapid_network_tick(xapid *x);
void xapid_network_start(xapid *x);
void xapid_network_stop(xapid *x);

/* storage.c: start-up and shutdown of the storage layer. init creates, when the pool has no SR
 * at all (first start), a local file SR "Local storage" under <state_dir>/sr/<uuid> with a
 * plugged PBD for this host, and makes it the pool's default, suspend-image and crash-dump SR.
 * Plugged SRs are re-attached on first use after a restart. stop stops the background garbage
 * collector and detaches every SR handle (call it before the store is closed). */
xerr *xapid_storage_init(xapid *x);
void xapid_storage_stop(xapid *x);
/* VDI attach for the VM lifecycle (VBD.plug / VM.start): *ret_path (caller-frees) gets the leaf
 * file for the VMM's block backend and *ret_format ("vhd", or "raw" for an ISO; static). While
 * attached, VDI.destroy/resize refuse with VDI_IN_USE and the GC does not rewrite the leaf;
 * snapshot of a read-write attached VDI is refused until the VMM can reopen its chain. One detach
 * per attach (a detach of a VDI that is not attached does nothing). The counts live in memory only.
 */
xerr *xapid_storage_vdi_attach(xapid *x, const char *vdi, bool rw, char **ret_path,
                               const char **ret_format);
xerr *xapid_storage_vdi_detach(xapid *x, const char *vdi);
/* For the raw disk import (vdi_http.c), on a VDI the caller holds attached read-write: a
 * staging VHD on top of the VDI's leaf that takes the upload (*ret_path caller-frees); commit
 * makes it the VDI's data in one rename, abort drops it (the VDI is then as it was). */
xerr *xapid_storage_vdi_stage(xapid *x, const char *vdi, char **ret_path);
xerr *xapid_storage_vdi_stage_commit(xapid *x, const char *vdi);
void xapid_storage_vdi_stage_abort(xapid *x, const char *vdi);

/* vdi_http.c: PUT /import_raw_vdi and GET /export_raw_vdi (format=raw|vhd, session_id= or
 * Basic auth, optional task_id=). http.c routes a request whose path vdi_http_path accepts to
 * vdi_http_handle (MHD access handler arguments; *state is the request's slot, NULL at first)
 * and, when the request ends, calls vdi_http_completed(state, completed normally). */
struct MHD_Connection;
bool vdi_http_path(const char *url);
int vdi_http_handle(xapid *x, struct MHD_Connection *c, const char *url, const char *method,
                    const char *upload_data, size_t *upload_data_size, void **state);
void vdi_http_completed(void *state, bool ok);
