/* The raw disk HTTP handlers: PUT /import_raw_vdi and GET /export_raw_vdi (XAPI's
 * http_actions of the same names), with format=raw|vhd.
 *
 * Auth: session_id= (query or cookie) or HTTP Basic (a temporary session, logged out at the
 * end); RBAC needs vm-admin (XAPI's http/import_raw_vdi and http/export_raw_vdi). An optional
 * task_id= names a client task (task.create) that gets progress, then the status and the
 * result (the VDI ref) or the error, as XAPI does.
 *
 * Import streams the body to the VDI, never holding more than one 2 MiB chunk in memory: the
 * data goes into a staging differencing VHD on top of the VDI's leaf (sr_vdi_stage: the VDI
 * keeps its old contents, byte for byte, until the upload is complete), which becomes the
 * VDI's leaf in one journalled rename once the whole body arrived (the old leaf a hidden base
 * copy that the collector merges back after the detach). A broken upload, or a daemon that
 * dies meanwhile, drops the stage and leaves the VDI as it was. Chunks that equal what the
 * disk already reads are not written (an empty disk stays sparse). A raw body may be shorter than
 * the virtual size (the rest is left as it is), not longer (413). A vhd body (fixed or dynamic) is
 * first stored next to the VDI, bounded by what a VHD of the VDI's size can take, then copied the
 * same way.
 *
 * Export streams raw bytes straight from the VHD chain; format=vhd builds a standalone dynamic
 * VHD (allocated data only) in a temporary file next to the VDI and sends that. */
#define _GNU_SOURCE
#include "xapid.h"
#include "log.h"
#include "mem.h"
#include "rpc.h"
#include "sr.h"
#include "util.h"
#include "vhd.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK VHD_BLOCK_SIZE

struct vdi_http {
    xapid *x;
    bool import;
    bool vhd_format;
    char *vdi;       /* VDI ref */
    char *task;      /* client task, or NULL */
    char *temp_sess; /* session made from Basic auth, logged out at the end */
    char *leaf;      /* attached leaf path, NULL when not attached */
    bool attached;
    uint64_t vsize; /* VDI virtual size */
    double last_progress;
    /* import */
    char *overlay; /* temporary differencing VHD on top of the leaf */
    vhd *ov;
    char *upload; /* format=vhd: the stored body */
    int upload_fd;
    uint64_t limit; /* bytes accepted */
    uint64_t received;
    uint64_t off; /* disk offset of buf */
    unsigned char *buf, *cmp;
    size_t buf_len;
    int err; /* first error (negative errno) */
    bool too_big;
    bool done;
    /* export */
    vhd *src;
    int raw_fd;    /* raw backend (ISO): the file itself */
    int busy;      /* 0, or what this request holds in the registry: 1 reader, 2 writer */
    uint64_t size; /* bytes sent in all */
    uint64_t sent;
};

/* VDIs with transfers running here: an import excludes every other transfer of its VDI. */
struct busy {
    struct busy *next;
    char *vdi;
    int readers;
    bool writer;
};
static pthread_mutex_t busy_lock = PTHREAD_MUTEX_INITIALIZER;
static struct busy *busy_list;

static bool busy_take(const char *vdi, bool write)
{
    pthread_mutex_lock(&busy_lock);
    struct busy *b = busy_list;
    while (b && strcmp(b->vdi, vdi) != 0)
        b = b->next;
    bool ok = !b || (!b->writer && !(write && b->readers));
    if (ok) {
        if (!b) {
            b = xcalloc(1, sizeof(*b));
            b->vdi = xstrdup(vdi);
            b->next = busy_list;
            busy_list = b;
        }
        if (write)
            b->writer = true;
        else
            b->readers++;
    }
    pthread_mutex_unlock(&busy_lock);
    return ok;
}

static void busy_drop(const char *vdi, bool write)
{
    pthread_mutex_lock(&busy_lock);
    for (struct busy **p = &busy_list; *p; p = &(*p)->next) {
        struct busy *b = *p;
        if (strcmp(b->vdi, vdi) != 0)
            continue;
        if (write)
            b->writer = false;
        else
            b->readers--;
        if (!b->writer && !b->readers) {
            *p = b->next;
            free(b->vdi);
            free(b);
        }
        break;
    }
    pthread_mutex_unlock(&busy_lock);
}

bool vdi_http_path(const char *url)
{
    return strcmp(url, "/import_raw_vdi") == 0 || strcmp(url, "/export_raw_vdi") == 0;
}

/* ---- tasks ---------------------------------------------------------------------------------- */

static const api_class *task_cls(void)
{
    return &api_classes[API_CLASS_task];
}

struct task_ud {
    const char *task;
    double progress;
    const char *status; /* NULL: progress only */
    const char *result;
    const xerr *err;
};

static xerr *task_txn(store_txn *t, void *ud)
{
    struct task_ud *u = ud;
    if (!st_exists(t, task_cls(), u->task))
        return NULL;
    AUTO(xv) *p = xv_new_float(u->progress);
    xerr *e = st_set_field(t, task_cls(), u->task, API_F_task_progress, p);
    if (e || !u->status)
        return e;
    AUTO(xv) *st = xv_new_string(u->status);
    AUTO(xv) *fin = xv_new_datetime_epoch(now_epoch());
    AUTO(xv) *ops = xv_new_array();
    if ((e = st_set_field(t, task_cls(), u->task, API_F_task_status, st)) ||
        (e = st_set_field(t, task_cls(), u->task, API_F_task_finished, fin)) ||
        (e = st_set_field(t, task_cls(), u->task, API_F_task_allowed_operations, ops)))
        return e;
    if (u->result) {
        AUTO(xv) *rv = xv_new_string(u->result);
        AUTO(xv) *enc = xv_new_string_take(rpc_xml_encode_value(rv));
        if ((e = st_set_field(t, task_cls(), u->task, API_F_task_result, enc)))
            return e;
    }
    if (u->err) {
        AUTO(xv) *ei = xerr_to_xv(u->err);
        if ((e = st_set_field(t, task_cls(), u->task, API_F_task_error_info, ei)))
            return e;
    }
    return NULL;
}

static void task_update(struct vdi_http *v, double progress, const char *status, const xerr *err)
{
    if (!v->task)
        return;
    struct task_ud u = {v->task, progress, status, status && !err ? v->vdi : NULL, err};
    xerr *e = store_write(v->x->st, task_txn, &u);
    if (e) {
        log_warn("task %s: cannot record progress: %s", v->task, e->code);
        xerr_free(e);
    }
}

static void progress(struct vdi_http *v, uint64_t done, uint64_t total)
{
    double p = total ? (double)done / (double)total : 1.0;
    if (p > 0.99)
        p = 0.99;
    if (p - v->last_progress < 0.05)
        return;
    v->last_progress = p;
    task_update(v, p, NULL, NULL);
}

/* ---- state ---------------------------------------------------------------------------------- */

/* Drops the overlay, temp files, attach and temp session (idempotent). */
static void release(struct vdi_http *v)
{
    vhd_close(v->ov);
    v->ov = NULL;
    vhd_close(v->src);
    v->src = NULL;
    if (v->overlay)
        xapid_storage_vdi_stage_abort(v->x, v->vdi);
    if (v->upload_fd >= 0)
        close(v->upload_fd);
    v->upload_fd = -1;
    if (v->upload)
        unlink(v->upload);
    if (v->raw_fd >= 0)
        close(v->raw_fd);
    v->raw_fd = -1;
    if (v->attached) {
        xerr *e = xapid_storage_vdi_detach(v->x, v->vdi);
        xerr_free(e);
        v->attached = false;
    }
    if (v->temp_sess) {
        xerr *e = sessions_logout(v->x, v->temp_sess);
        xerr_free(e);
    }
    free(v->temp_sess);
    v->temp_sess = NULL;
    free(v->overlay);
    v->overlay = NULL;
    free(v->upload);
    v->upload = NULL;
    if (v->busy)
        busy_drop(v->vdi, v->busy == 2);
    v->busy = 0;
}

static void state_free(struct vdi_http *v)
{
    if (!v)
        return;
    release(v);
    free(v->leaf);
    free(v->vdi);
    free(v->task);
    free(v->buf);
    free(v->cmp);
    free(v);
}

/* Ends the transfer as failed: resources first, so a client that sees the task finished finds
 * the VDI free. */
static void task_fail(struct vdi_http *v, xerr *err)
{
    release(v);
    task_update(v, 1.0, "failure", err);
    xerr_free(err);
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *what)
{
    char *body = xasprintf("<html><body><h1>HTTP %u</h1>%s</body></html>", status, what);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "text/html");
    MHD_add_response_header(r, "Cache-Control", "no-cache, no-store");
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Basic realm=\"xapi\"");
    if (status != 200)
        MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- auth ----------------------------------------------------------------------------------- */

/* 0, or the HTTP status to refuse with; a Basic-auth session lives until the request ends. */
static unsigned authenticate(struct vdi_http *v, struct MHD_Connection *c)
{
    return http_authenticate(v->x, c, "vm-admin", &v->temp_sess);
}

/* ---- VDI lookup ----------------------------------------------------------------------------- */

struct lookup_ud {
    const char *arg;
    bool import;
    char *ref;
    bool in_use; /* a VBD of the VDI is attached */
};

static xerr *lookup_txn(store_txn *t, void *ud)
{
    struct lookup_ud *l = ud;
    const api_class *c = &api_classes[API_CLASS_VDI];
    if (strncmp(l->arg, "OpaqueRef:", 10) == 0) {
        if (!st_exists(t, c, l->arg))
            return xerr_new("HANDLE_INVALID", "VDI", l->arg);
        l->ref = xstrdup(l->arg);
    } else {
        xerr *e = st_ref_by_uuid(t, c, l->arg, &l->ref);
        if (e) {
            xerr_free(e);
            return xerr_new("UUID_INVALID", "VDI", l->arg);
        }
    }
    if (!l->import)
        return NULL;
    AUTO(xv) *vbds = NULL;
    xerr *e = st_get_field(t, c, l->ref, API_F_VDI_VBDs, &vbds);
    for (size_t i = 0; !e && i < xv_array_len(vbds); i++) {
        const char *vbd = xv_str(xv_array_get(vbds, i));
        AUTO(xv) *att = NULL;
        if (!vbd)
            continue;
        xerr *fe =
            st_get_field(t, &api_classes[API_CLASS_VBD], vbd, API_F_VBD_currently_attached, &att);
        if (fe)
            xerr_free(fe);
        else if (att && att->kind == XV_BOOL && att->u.b)
            l->in_use = true;
    }
    return e;
}

/* ---- import --------------------------------------------------------------------------------- */

static bool all_zero(const unsigned char *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Writes len bytes (sector multiple) at off into the overlay unless the disk reads them
 * already. */
static int put(struct vdi_http *v, const unsigned char *data, uint64_t off, size_t len)
{
    int r = vhd_read(v->ov, v->cmp, off, len);
    if (r < 0)
        return r;
    if (memcmp(v->cmp, data, len) == 0)
        return 0;
    return vhd_write(v->ov, data, off, len);
}

static void flush_buf(struct vdi_http *v, bool final)
{
    if (!v->buf_len || v->err)
        return;
    size_t len = v->buf_len;
    if (final && len % VHD_SECTOR_SIZE) {
        size_t pad = VHD_SECTOR_SIZE - len % VHD_SECTOR_SIZE;
        memset(v->buf + len, 0, pad);
        len += pad;
    }
    int r = put(v, v->buf, v->off, len);
    if (r < 0)
        v->err = r;
    v->off += len;
    v->buf_len = 0;
}

static void import_data(struct vdi_http *v, const char *data, size_t n)
{
    if (v->received + n > v->limit) {
        v->too_big = true;
        return;
    }
    v->received += n;
    if (v->err)
        return;
    if (v->upload_fd >= 0) {
        while (n) {
            ssize_t w = write(v->upload_fd, data, n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                v->err = -errno;
                return;
            }
            data += w;
            n -= (size_t)w;
        }
        return;
    }
    while (n) {
        size_t take = CHUNK - v->buf_len < n ? CHUNK - v->buf_len : n;
        memcpy(v->buf + v->buf_len, data, take);
        v->buf_len += take;
        data += take;
        n -= take;
        if (v->buf_len == CHUNK)
            flush_buf(v, false);
        progress(v, v->received, v->limit);
    }
}

/* format=vhd: copies the stored upload into the overlay. */
static int import_vhd_file(struct vdi_http *v)
{
    vhd *in = NULL;
    /* never follow an uploaded file's parent locators */
    int r = vhd_open(v->upload, VHD_OPEN_RDONLY | VHD_OPEN_NO_PARENT, &in);
    if (r < 0)
        return r;
    struct vhd_info info;
    vhd_get_info(in, &info);
    if (info.type == VHD_TYPE_DIFF)
        r = -ENOTSUP;
    else if (info.virtual_size > v->vsize)
        r = -EFBIG;
    for (uint64_t off = 0; r >= 0 && off < info.virtual_size; off += CHUNK) {
        size_t len = info.virtual_size - off < CHUNK ? (size_t)(info.virtual_size - off) : CHUNK;
        r = vhd_read(in, v->buf, off, len);
        if (r >= 0)
            r = put(v, v->buf, off, len);
        progress(v, off, info.virtual_size);
    }
    vhd_close(in);
    return r;
}

static xerr *errno_xerr(int r, const char *op)
{
    switch (-r) {
    case EFBIG:
        return xerr_new("VALUE_NOT_SUPPORTED", "body", "", "larger than the VDI's virtual size");
    case EBADMSG:
        return xerr_new("VALUE_NOT_SUPPORTED", "format", "vhd", "the body is not a valid VHD");
    case ENOTSUP:
        return xerr_new("VALUE_NOT_SUPPORTED", "format", "vhd",
                        "only fixed and dynamic VHDs can be imported");
    case ENOSPC:
        return xerr_new("SR_BACKEND_FAILURE_44", "", "There is insufficient space", "");
    default:
        return xerr_internal("%s: %s", op, strerror(-r));
    }
}

/* Completes an import whose whole body arrived: merges the overlay into the leaf. */
static enum MHD_Result import_finish(struct vdi_http *v, struct MHD_Connection *c)
{
    v->done = true;
    if (v->too_big) {
        release(v);
        task_fail(v, errno_xerr(-EFBIG, "import"));
        return respond(c, 413, "The upload is larger than the VDI");
    }
    if (!v->err && v->upload_fd >= 0) {
        close(v->upload_fd);
        v->upload_fd = -1;
        if (!v->err)
            v->err = import_vhd_file(v);
    } else
        flush_buf(v, true);
    if (!v->err)
        v->err = vhd_flush(v->ov);
    vhd_close(v->ov);
    v->ov = NULL;
    if (!v->err) {
        xerr *ce = xapid_storage_vdi_stage_commit(v->x, v->vdi);
        if (ce) {
            log_warn("import_raw_vdi %s failed: %s", v->vdi, ce->code);
            release(v);
            task_fail(v, ce);
            return respond(c, 500, "Import failed");
        }
        free(v->overlay); /* it is the VDI's leaf now */
        v->overlay = NULL;
        log_info("import_raw_vdi %s: %llu bytes received", v->vdi, (unsigned long long)v->received);
    }
    release(v);
    if (v->err) {
        log_warn("import_raw_vdi %s failed: %s", v->vdi, strerror(-v->err));
        int err = v->err;
        task_fail(v, errno_xerr(err, "import_raw_vdi"));
        return respond(c,
                       err == -EFBIG                        ? 413
                       : err == -EBADMSG || err == -ENOTSUP ? 400
                                                            : 500,
                       "Import failed");
    }
    task_update(v, 1.0, "success", NULL);
    return respond(c, 200, "OK");
}

static xerr *import_start(struct vdi_http *v, struct MHD_Connection *c, unsigned *status)
{
    const char *fmt = NULL;
    xerr *e = xapid_storage_vdi_attach(v->x, v->vdi, true, &v->leaf, &fmt);
    if (e) {
        *status = 500;
        return e;
    }
    v->attached = true;
    if (strcmp(fmt, "vhd") != 0) {
        *status = 400;
        return xerr_new("VALUE_NOT_SUPPORTED", "vdi", v->vdi, "not a VHD-backed VDI");
    }
    vhd *leaf = NULL;
    int r = vhd_open(v->leaf, VHD_OPEN_RDONLY, &leaf);
    if (r < 0) {
        *status = 500;
        return xerr_internal("open %s: %s", v->vdi, strerror(-r));
    }
    struct vhd_info info;
    vhd_get_info(leaf, &info);
    vhd_close(leaf);
    v->vsize = info.virtual_size;
    /* a VHD of vsize: data, one 4 KiB-aligned bitmap per block, metadata */
    v->limit = v->vhd_format ? v->vsize + (v->vsize / CHUNK + 1) * 4096 + (16u << 20) : v->vsize;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > v->limit) {
        *status = 413;
        return xerr_new("VALUE_NOT_SUPPORTED", "Content-Length", cl,
                        "larger than the VDI's virtual size");
    }
    AUTOFREE char *dir_copy = xstrdup(v->leaf);
    const char *dir = dirname(dir_copy);
    AUTOFREE char *base_copy = xstrdup(v->leaf);
    const char *base = basename(base_copy);
    if ((e = xapid_storage_vdi_stage(v->x, v->vdi, &v->overlay))) {
        *status = 500;
        return e;
    }
    r = vhd_open(v->overlay, VHD_OPEN_RDWR, &v->ov);
    if (r < 0) {
        *status = 500;
        return errno_xerr(r, "overlay open");
    }
    v->buf = xmalloc(CHUNK);
    v->cmp = xmalloc(CHUNK);
    if (v->vhd_format) {
        v->upload = xasprintf("%s/.%s.upload.tmp", dir, base);
        v->upload_fd = open(v->upload, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (v->upload_fd < 0) {
            free(v->upload);
            v->upload = NULL;
            *status = 500;
            return xerr_internal("upload file: %s", strerror(errno));
        }
    }
    return NULL;
}

/* ---- export --------------------------------------------------------------------------------- */

/* Serves any window from a cached, aligned 2 MiB chunk (MHD's windows need not be aligned). */
static ssize_t export_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct vdi_http *v = cls;
    if (pos >= v->size)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (!v->buf_len || pos < v->off || pos >= v->off + v->buf_len) {
        v->off = pos - pos % CHUNK;
        size_t len = v->size - v->off < CHUNK ? (size_t)(v->size - v->off) : CHUNK;
        int r;
        if (v->src)
            r = vhd_read(v->src, v->buf, v->off, len);
        else {
            ssize_t n = pread(v->raw_fd, v->buf, len, (off_t)v->off);
            r = n < 0 ? -errno : (size_t)n == len ? 0 : -EIO;
        }
        if (r < 0) {
            v->buf_len = 0;
            v->err = r;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        v->buf_len = len;
    }
    size_t avail = (size_t)(v->off + v->buf_len - pos);
    size_t n = avail < max ? avail : max;
    memcpy(buf, v->buf + (pos - v->off), n);
    v->sent = pos + n;
    progress(v, v->sent, v->size);
    return (ssize_t)n;
}

static void export_free(void *cls)
{
    struct vdi_http *v = cls;
    release(v);
    if (v->task) {
        if (v->sent >= v->size)
            task_update(v, 1.0, "success", NULL);
        else
            task_fail(v, xerr_internal("the export was interrupted"));
    }
    state_free(v);
}

/* Builds a standalone dynamic VHD of src in a temp file; returns an fd to it (unlinked). */
static int build_vhd(struct vdi_http *v, const char *leaf)
{
    AUTOFREE char *dir_copy = xstrdup(leaf);
    AUTOFREE char *base_copy = xstrdup(leaf);
    static atomic_uint serial;
    AUTOFREE char *tmp = xasprintf("%s/.%s.export.%u.tmp", dirname(dir_copy), basename(base_copy),
                                   atomic_fetch_add(&serial, 1));
    unlink(tmp);
    int r = vhd_create(tmp, VHD_TYPE_DYNAMIC, v->vsize, 0);
    if (r < 0)
        return r;
    vhd *out = NULL;
    struct vhd_extent *ext = NULL;
    size_t next = 0;
    r = vhd_open(tmp, VHD_OPEN_RDWR | VHD_OPEN_UNSAFE, &out);
    if (r >= 0)
        r = vhd_map(v->src, &ext, &next);
    unsigned char *buf = r >= 0 ? xmalloc(CHUNK) : NULL;
    for (size_t i = 0; r >= 0 && i < next; i++) {
        if (ext[i].depth < 0)
            continue;
        for (uint64_t off = ext[i].start; r >= 0 && off < ext[i].start + ext[i].length;
             off += CHUNK) {
            uint64_t end = ext[i].start + ext[i].length;
            size_t len = end - off < CHUNK ? (size_t)(end - off) : CHUNK;
            r = vhd_read(v->src, buf, off, len);
            if (r >= 0 && !all_zero(buf, len))
                r = vhd_write(out, buf, off, len);
            progress(v, off, v->vsize);
        }
    }
    free(buf);
    free(ext);
    int fd = -1;
    if (r >= 0)
        r = vhd_flush(out);
    vhd_close(out);
    if (r >= 0) {
        fd = open(tmp, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            r = -errno;
    }
    unlink(tmp);
    return r < 0 ? r : fd;
}

static enum MHD_Result export_start(struct vdi_http *v, struct MHD_Connection *c)
{
    const char *fmt = NULL;
    xerr *e = xapid_storage_vdi_attach(v->x, v->vdi, false, &v->leaf, &fmt);
    if (e) {
        task_fail(v, e);
        state_free(v);
        return respond(c, 500, "Cannot attach the VDI");
    }
    v->attached = true;
    struct stat stt;
    if (strcmp(fmt, "raw") == 0) { /* an ISO: the file itself */
        if (v->vhd_format) {
            task_fail(v,
                      xerr_new("VALUE_NOT_SUPPORTED", "format", "vhd", "the VDI is a raw image"));
            state_free(v);
            return respond(c, 400, "format=vhd of a raw image");
        }
        v->raw_fd = open(v->leaf, O_RDONLY | O_CLOEXEC);
        if (v->raw_fd < 0 || fstat(v->raw_fd, &stt) < 0) {
            task_fail(v, xerr_internal("open: %s", strerror(errno)));
            state_free(v);
            return respond(c, 500, "Cannot open the VDI");
        }
        v->size = v->vsize = (uint64_t)stt.st_size;
    } else {
        int r = vhd_open(v->leaf, VHD_OPEN_RDONLY, &v->src);
        if (r < 0) {
            task_fail(v, errno_xerr(r, "open"));
            state_free(v);
            return respond(c, 500, "Cannot open the VDI");
        }
        struct vhd_info info;
        vhd_get_info(v->src, &info);
        v->size = v->vsize = info.virtual_size;
        if (v->vhd_format) {
            int fd = build_vhd(v, v->leaf);
            if (fd < 0 || fstat(fd, &stt) < 0) {
                if (fd >= 0)
                    close(fd);
                task_fail(v, errno_xerr(fd < 0 ? fd : -errno, "export vhd"));
                state_free(v);
                return respond(c, 500, "Cannot build the VHD");
            }
            vhd_close(v->src);
            v->src = NULL;
            v->raw_fd = fd;
            v->size = (uint64_t)stt.st_size;
        }
    }
    v->buf = xmalloc(CHUNK);
    /* the task and the state end with the response (export_free) */
    struct MHD_Response *r =
        MHD_create_response_from_callback(v->size, CHUNK, export_reader, v, export_free);
    if (!r) {
        task_fail(v, xerr_internal("cannot create the response"));
        state_free(v);
        return respond(c, 500, "Internal error");
    }
    MHD_add_response_header(r, "Content-Type", "application/octet-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache, no-store");
    if (v->task)
        MHD_add_response_header(r, "Task-id", v->task);
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- entry points --------------------------------------------------------------------------- */

static enum MHD_Result refuse(struct vdi_http *v, struct MHD_Connection *c, unsigned status,
                              xerr *e, const char *what)
{
    task_fail(v, e);
    state_free(v);
    return respond(c, status, what);
}

int vdi_http_handle(xapid *x, struct MHD_Connection *c, const char *url, const char *method,
                    const char *upload_data, size_t *upload_data_size, void **state)
{
    struct vdi_http *v = *state;
    if (v) { /* import body */
        if (*upload_data_size) {
            if (!v->done)
                import_data(v, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (v->done)
            return MHD_YES;
        return import_finish(v, c);
    }
    bool import = strcmp(url, "/import_raw_vdi") == 0;
    if (strcmp(method, import ? "PUT" : "GET") != 0)
        return respond(c, 405, "Method not allowed");
    v = xcalloc(1, sizeof(*v));
    v->x = x;
    v->import = import;
    v->upload_fd = v->raw_fd = -1;
    unsigned st = authenticate(v, c);
    if (st) {
        state_free(v);
        return respond(c, st, st == 401 ? "Authentication required" : "Permission denied");
    }
    const char *task = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "task_id");
    if (task && *task && strcmp(task, "OpaqueRef:NULL") != 0)
        v->task = xstrdup(task);
    const char *fmt = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
    if (fmt && strcmp(fmt, "raw") != 0 && strcmp(fmt, "vhd") != 0)
        return refuse(v, c, 400, xerr_new("VALUE_NOT_SUPPORTED", "format", fmt, "raw or vhd"),
                      "format must be raw or vhd");
    v->vhd_format = fmt && strcmp(fmt, "vhd") == 0;
    const char *arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "vdi");
    if (!arg || !*arg)
        return refuse(v, c, 400, xerr_new("HANDLE_INVALID", "VDI", ""), "vdi= required");
    struct lookup_ud l = {.arg = arg, .import = import};
    xerr *e = store_read(x->st, lookup_txn, &l);
    if (e) {
        free(l.ref);
        return refuse(v, c, 404, e, "No such VDI");
    }
    v->vdi = l.ref;
    if (l.in_use || !busy_take(v->vdi, import))
        return refuse(v, c, 409, xerr_new("VDI_IN_USE", v->vdi, import ? "import" : "export"),
                      "The VDI is in use");
    v->busy = import ? 2 : 1;
    if (!import)
        return export_start(v, c);
    e = import_start(v, c, &st);
    if (e)
        return refuse(v, c, st, e, "Cannot import into the VDI");
    *state = v;
    return MHD_YES;
}

void vdi_http_completed(void *state, bool ok)
{
    struct vdi_http *v = state;
    if (!v)
        return;
    if (!v->done) {
        log_warn("import_raw_vdi %s: upload broken after %llu bytes; VDI left as it was", v->vdi,
                 (unsigned long long)v->received);
        task_fail(v, xerr_internal("the upload was interrupted"));
    }
    (void)ok;
    state_free(v);
}
