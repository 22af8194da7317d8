/* SR drivers: the generic layer (handles, locking, attach counts, copy) and the `file` driver
 * (a directory of <vdi-uuid>.vhd files forming VHD trees, as SM's FileSR keeps them).
 *
 * Crash safety of the tree operations: snapshot writes a journal naming the base before it
 * links the leaf to the base name; attach replays or rolls back an unfinished one. The GC's
 * steps (coalesce, re-parent, unlink; unhide, rename) each leave readable chains. */
#define _GNU_SOURCE
#include "sr.h"

#include "cleanup.h"
#include "mem.h"
#include "util.h"
#include "vhd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define LOCK_NAME      ".nuvem-sr.lock"
#define JOURNAL_PREFIX ".journal-snapshot-"
/* Room a snapshot or clone needs for two empty differencing headers (generous). */
#define SNAPSHOT_SPACE (1ull << 20)
#define COPY_CHUNK     VHD_BLOCK_SIZE

struct attached {
    char location[256];
    unsigned n_rw, n_ro;
};

struct sr {
    const sr_driver *d;
    char *dir;
    int lockfd;
    pthread_mutex_t mu;
    struct attached *att;
    size_t natt;
    bool gc_running; /* one collector at a time: two would write one parent */
};

void sr_backend_clear(struct sr_backend *b)
{
    free(b->path);
    b->path = NULL;
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* The file of a VDI: <dir>/<location><suffix>. */
static char *vpath(const sr *s, const char *location)
{
    return xasprintf("%s/%s%s", s->dir, location, s->d->suffix);
}

static int fsync_dir(const char *dir)
{
    AUTOCLOSE int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0)
        return -errno;
    return 0;
}

static struct attached *att_find(sr *s, const char *uuid)
{
    for (size_t i = 0; i < s->natt; i++)
        if (!strcmp(s->att[i].location, uuid))
            return &s->att[i];
    return NULL;
}

static bool att_busy(sr *s, const char *uuid)
{
    struct attached *a = att_find(s, uuid);
    return a && (a->n_rw || a->n_ro);
}

/* A node of the tree on disk. */
struct node {
    struct sr_vdi_info i;
    char vhd_uuid[37]; /* footer unique id */
    char vhd_parent[37];
    int parent; /* index, -1 */
};

static bool vhd_name(const char *name, char uuid[static 37])
{
    size_t n = strlen(name);
    if (n != 36 + 4 || strcmp(name + 36, ".vhd"))
        return false;
    memcpy(uuid, name, 36);
    uuid[36] = '\0';
    return uuid_valid(uuid);
}

static int node_load(sr *s, const char *uuid, struct node *ret)
{
    AUTOFREE char *path = vpath(s, uuid);
    vhd *v = NULL;
    int r = vhd_open(path, VHD_OPEN_RDONLY | VHD_OPEN_NO_PARENT, &v);
    if (r < 0)
        return r;
    struct vhd_info vi;
    vhd_get_info(v, &vi);
    vhd_close(v);
    memset(ret, 0, sizeof(*ret));
    snprintf(ret->i.uuid, sizeof(ret->i.uuid), "%s", uuid);
    snprintf(ret->i.location, sizeof(ret->i.location), "%s", uuid);
    ret->i.virtual_size = vi.virtual_size;
    ret->i.physical_size = vi.physical_size;
    ret->i.hidden = vi.hidden;
    ret->i.read_only = vi.hidden || s->d->read_only;
    ret->i.format = "vhd";
    memcpy(ret->vhd_uuid, vi.uuid, sizeof(ret->vhd_uuid));
    memcpy(ret->vhd_parent, vi.parent_uuid, sizeof(ret->vhd_parent));
    ret->parent = -1;
    return 0;
}

/* Every node of the SR with parents resolved through footer ids (files that do not open are
 * skipped: the GC never touches what it cannot read). */
static int nodes_load(sr *s, struct node **ret, size_t *ret_n)
{
    DIR *d = opendir(s->dir);
    if (!d)
        return -errno;
    struct node *nodes = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char uuid[37];
        if (!vhd_name(de->d_name, uuid))
            continue;
        struct node nd;
        if (node_load(s, uuid, &nd) < 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            nodes = xrealloc(nodes, cap * sizeof(*nodes));
        }
        nodes[n++] = nd;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        if (!nodes[i].vhd_parent[0])
            continue;
        for (size_t j = 0; j < n; j++)
            if (j != i && !strcmp(nodes[j].vhd_uuid, nodes[i].vhd_parent)) {
                nodes[i].parent = (int)j;
                memcpy(nodes[i].i.parent_uuid, nodes[j].i.uuid, 37);
                nodes[j].i.children++;
                break;
            }
    }
    *ret = nodes;
    *ret_n = n;
    return 0;
}

static int chain_depth(sr *s, const char *uuid, unsigned *ret)
{
    AUTOFREE char *path = vpath(s, uuid);
    vhd *v = NULL;
    int r = vhd_open(path, VHD_OPEN_RDONLY, &v);
    if (r < 0)
        return r;
    struct vhd_info vi;
    vhd_get_info(v, &vi);
    vhd_close(v);
    *ret = vi.chain_depth;
    return 0;
}

static int free_bytes(sr *s, uint64_t *ret)
{
    struct statvfs sv;
    if (statvfs(s->dir, &sv) < 0)
        return -errno;
    *ret = (uint64_t)sv.f_bavail * sv.f_frsize;
    return 0;
}

/* ---- file driver -------------------------------------------------------------------------- */

static int file_sr_create(const char *location)
{
    int r = mkdir_p(location, 0700);
    if (r < 0)
        return r;
    DIR *d = opendir(location);
    if (!d)
        return -errno;
    struct dirent *de;
    int found = 0;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            found = 1;
    closedir(d);
    return found ? -EEXIST : 0;
}

static int file_scan(sr *s, struct sr_vdi_info **ret, size_t *ret_n)
{
    struct node *nodes = NULL;
    size_t n = 0;
    int r = nodes_load(s, &nodes, &n);
    if (r < 0)
        return r;
    struct sr_vdi_info *out = xcalloc(n + 1, sizeof(*out));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!(nodes[i].i.hidden && nodes[i].i.children == 0))
            out[k++] = nodes[i].i;
    free(nodes);
    *ret = out;
    *ret_n = k;
    return 0;
}

static int file_vdi_info(sr *s, const char *uuid, struct sr_vdi_info *ret)
{
    struct node nd;
    int r = node_load(s, uuid, &nd);
    if (r < 0)
        return r;
    /* the parent's VDI uuid: the node list resolves it */
    if (nd.vhd_parent[0]) {
        struct node *nodes = NULL;
        size_t n = 0;
        if (nodes_load(s, &nodes, &n) == 0) {
            for (size_t i = 0; i < n; i++)
                if (!strcmp(nodes[i].vhd_uuid, nd.vhd_parent))
                    memcpy(nd.i.parent_uuid, nodes[i].i.uuid, 37);
            free(nodes);
        }
    }
    *ret = nd.i;
    return 0;
}

static int file_vdi_create(sr *s, uint64_t size, struct sr_vdi_info *ret)
{
    char uuid[37];
    uuid_random(uuid);
    AUTOFREE char *path = vpath(s, uuid);
    int r = vhd_create(path, VHD_TYPE_DYNAMIC, size, 0);
    if (r < 0)
        return r;
    fsync_dir(s->dir);
    return file_vdi_info(s, uuid, ret);
}

static int file_vdi_delete(sr *s, const char *uuid)
{
    AUTOFREE struct node *nodes = NULL;
    size_t n = 0;
    int r = nodes_load(s, &nodes, &n);
    if (r < 0)
        return r;
    struct node *me = NULL;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(nodes[i].i.uuid, uuid))
            me = &nodes[i];
    if (!me)
        return -ENOENT;
    if (me->i.hidden)
        return -EPERM;
    if (me->i.children)
        return -EBUSY;
    AUTOFREE char *path = vpath(s, uuid);
    if (unlink(path) < 0)
        return -errno;
    fsync_dir(s->dir);
    return 0;
}

static int file_vdi_resize(sr *s, const char *uuid, uint64_t size)
{
    struct node nd;
    int r = node_load(s, uuid, &nd);
    if (r < 0)
        return r;
    if (nd.i.hidden)
        return -EPERM;
    if (size < nd.i.virtual_size)
        return -ENOTSUP;
    if (size == nd.i.virtual_size)
        return 0;
    AUTOFREE char *path = vpath(s, uuid);
    return vhd_resize(path, size);
}

static int journal_write(sr *s, const char *uuid, const char *base)
{
    AUTOFREE char *j = xasprintf("%s/" JOURNAL_PREFIX "%s", s->dir, uuid);
    AUTOFREE char *body = xasprintf("%s\n", base);
    int r = write_file_atomic(j, body, strlen(body), 0600);
    if (r == 0)
        r = fsync_dir(s->dir);
    return r;
}

static void journal_remove(sr *s, const char *uuid)
{
    AUTOFREE char *j = xasprintf("%s/" JOURNAL_PREFIX "%s", s->dir, uuid);
    unlink(j);
    fsync_dir(s->dir);
}

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_ino == sb.st_ino &&
           sa.st_dev == sb.st_dev;
}

/* Finishes or undoes a snapshot a crash interrupted. Before the new leaf replaced the VDI's
 * file (the temp child still exists, or the VDI and base names are still one file): undo,
 * so the VDI is its old visible self. After: keep the tree (the base is hidden; a missing
 * second child only leaves work for the GC). */
static void journal_recover_one(sr *s, const char *uuid)
{
    AUTOFREE char *j = xasprintf("%s/" JOURNAL_PREFIX "%s", s->dir, uuid);
    AUTOFREE char *body = NULL;
    if (read_file(j, &body, NULL) < 0)
        return;
    body[strcspn(body, "\n")] = '\0';
    if (!uuid_valid(body) || !uuid_valid(uuid)) {
        unlink(j);
        return;
    }
    AUTOFREE char *leaf = vpath(s, uuid);
    AUTOFREE char *base = vpath(s, body);
    AUTOFREE char *tmp = xasprintf("%s/.%s.vhd.new", s->dir, uuid);
    unlink(tmp);
    if (same_file(leaf, base)) {
        unlink(base);
        vhd_set_hidden(leaf, false);
    } else if (access(base, F_OK) == 0) {
        vhd_set_hidden(base, true);
    }
    unlink(j);
    fsync_dir(s->dir);
}

static void journal_recover(sr *s)
{
    DIR *d = opendir(s->dir);
    if (!d)
        return;
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (!strncmp(de->d_name, JOURNAL_PREFIX, strlen(JOURNAL_PREFIX))) {
            names = xrealloc(names, (n + 1) * sizeof(*names));
            names[n++] = xstrdup(de->d_name + strlen(JOURNAL_PREFIX));
        }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        /* skip write_file_atomic's leftovers (name.tmp.PID) */
        if (strlen(names[i]) == 36)
            journal_recover_one(s, names[i]);
        else {
            AUTOFREE char *p = xasprintf("%s/" JOURNAL_PREFIX "%s", s->dir, names[i]);
            unlink(p);
        }
        free(names[i]);
    }
    free(names);
}

static int file_vdi_snapshot(sr *s, const char *uuid, struct sr_vdi_info *ret_new,
                             struct sr_vdi_info *ret_base)
{
    struct node nd;
    int r = node_load(s, uuid, &nd);
    if (r < 0)
        return r;
    if (nd.i.hidden)
        return -EPERM;
    unsigned depth = 0;
    if ((r = chain_depth(s, uuid, &depth)) < 0)
        return r;
    if (depth + 1 > SR_MAX_CHAIN_DEPTH)
        return -ELOOP;
    uint64_t avail = 0;
    if ((r = free_bytes(s, &avail)) < 0)
        return r;
    if (avail < SNAPSHOT_SPACE)
        return -ENOSPC;

    char base_uuid[37], new_uuid[37];
    uuid_random(base_uuid);
    uuid_random(new_uuid);
    AUTOFREE char *leaf = vpath(s, uuid);
    AUTOFREE char *base = vpath(s, base_uuid);
    AUTOFREE char *snap = vpath(s, new_uuid);
    AUTOFREE char *tmp = xasprintf("%s/.%s.vhd.new", s->dir, uuid);
    unlink(tmp);
    if ((r = journal_write(s, uuid, base_uuid)) < 0)
        return r;
    /* 1. the current data gets the base's name too; 2. an empty hidden-parent child of it
     * replaces the VDI's name (the VDI keeps its uuid); 3. the snapshot is a second child. */
    if (link(leaf, base) < 0) {
        r = -errno;
        journal_remove(s, uuid);
        return r;
    }
    r = vhd_snapshot(tmp, base, VHD_SNAPSHOT_HIDE_PARENT);
    if (r == 0 && rename(tmp, leaf) < 0)
        r = -errno;
    if (r < 0) {
        journal_recover_one(s, uuid);
        return r;
    }
    fsync_dir(s->dir);
    r = vhd_snapshot(snap, base, 0);
    journal_remove(s, uuid);
    if (r < 0)
        return r;
    fsync_dir(s->dir);
    if ((r = file_vdi_info(s, new_uuid, ret_new)) < 0)
        return r;
    if (ret_base && (r = file_vdi_info(s, base_uuid, ret_base)) < 0)
        return r;
    return 0;
}

/* Whether an attached VDI has node `top` in its chain: a reader (the VMM) opens and reads the
 * whole chain, so no node of it is merged away or re-parented under it. */
static bool chain_attached(sr *s, const struct node *nodes, size_t n, size_t top)
{
    for (size_t j = 0; j < n; j++) {
        if (!att_busy(s, nodes[j].i.uuid))
            continue;
        int k = (int)j;
        for (unsigned depth = 0; k >= 0 && depth <= VHD_MAX_CHAIN_DEPTH; depth++) {
            if (k == (int)top)
                return true;
            k = nodes[k].parent;
        }
    }
    return false;
}

/* One GC step, called with s->mu held; returns 1 if it changed something (or should look
 * again), 0 if nothing is left to do. The data copy of an inner coalesce keeps the mutex:
 * nothing else writes the hidden node and its parent, but snapshots, clones and attaches
 * open the chains through them, and a reader of a parent in mid-copy saw a transient
 * inconsistency (test_gc_concurrent, under load). */
static int gc_step(sr *s, struct sr_gc_stats *st)
{
    AUTOFREE struct node *nodes = NULL;
    size_t n = 0;
    int r = nodes_load(s, &nodes, &n);
    if (r < 0)
        return r;
    /* garbage: hidden leaves */
    for (size_t i = 0; i < n; i++)
        if (nodes[i].i.hidden && nodes[i].i.children == 0) {
            AUTOFREE char *p = vpath(s, nodes[i].i.uuid);
            if (unlink(p) < 0)
                return -errno;
            st->removed++;
            return 1;
        }
    /* coalesce a hidden inner node that is its parent's only child. Not while an attached VDI
     * reads through it (its chain would change under the VMM until the VMM can reopen), nor
     * when the parent must grow while anything is attached (growing may move blocks readers
     * have mapped). */
    for (size_t i = 0; i < n; i++) {
        struct node *nd = &nodes[i];
        if (!nd->i.hidden || nd->parent < 0 || nodes[nd->parent].i.children != 1 ||
            chain_attached(s, nodes, n, i) ||
            (nodes[nd->parent].i.virtual_size < nd->i.virtual_size && s->natt > 0))
            continue;
        char me[37], parent[37];
        memcpy(me, nd->i.uuid, sizeof(me));
        memcpy(parent, nodes[nd->parent].i.uuid, sizeof(parent));
        AUTOFREE char *p = vpath(s, me);
        AUTOFREE char *pp = vpath(s, parent);
        if ((r = vhd_coalesce(p, NULL)) < 0)
            return r;
        /* look at the tree again before re-parenting (cheap, and keeps the step correct
         * should the copy ever run unlocked again) */
        AUTOFREE struct node *now = NULL;
        size_t m = 0;
        if ((r = nodes_load(s, &now, &m)) < 0)
            return r;
        size_t k = m;
        for (size_t j = 0; j < m; j++)
            if (!strcmp(now[j].i.uuid, me))
                k = j;
        if (k == m || now[k].parent < 0 || strcmp(now[now[k].parent].i.uuid, parent) ||
            now[now[k].parent].i.children != 1 || chain_attached(s, now, m, k))
            return 1;
        for (size_t j = 0; j < m; j++)
            if (now[j].parent == (int)k) {
                AUTOFREE char *c = vpath(s, now[j].i.uuid);
                if ((r = vhd_set_parent(c, pp)) < 0)
                    return r;
            }
        if (unlink(p) < 0)
            return -errno;
        st->coalesced++;
        return 1;
    }
    /* merge a detached leaf that is the only child of a hidden parent into it */
    for (size_t i = 0; i < n; i++) {
        struct node *nd = &nodes[i];
        if (nd->i.hidden || nd->i.children || nd->parent < 0 || nodes[nd->parent].i.children != 1 ||
            !nodes[nd->parent].i.hidden || att_busy(s, nd->i.uuid))
            continue;
        AUTOFREE char *p = vpath(s, nd->i.uuid);
        AUTOFREE char *pp = vpath(s, nodes[nd->parent].i.uuid);
        if ((r = vhd_coalesce(p, NULL)) < 0 || (r = vhd_set_hidden(pp, false)) < 0)
            return r;
        if (rename(pp, p) < 0)
            return -errno;
        st->coalesced++;
        return 1;
    }
    return 0;
}

/* Bounds the collector's loop should the tree keep changing under it. */
#define GC_MAX_STEPS 10000

static int file_gc_locked(sr *s, struct sr_gc_stats *st)
{
    memset(st, 0, sizeof(*st));
    journal_recover(s);
    int r, steps = 0;
    while ((r = gc_step(s, st)) > 0 && ++steps < GC_MAX_STEPS)
        ;
    fsync_dir(s->dir);
    return r < 0 ? r : 0;
}

static int file_sr_delete(const char *location)
{
    DIR *d = opendir(location);
    if (!d)
        return -errno;
    struct dirent *de;
    int r = 0;
    while ((de = readdir(d))) {
        char uuid[37];
        if (vhd_name(de->d_name, uuid) || !strcmp(de->d_name, LOCK_NAME) ||
            !strncmp(de->d_name, JOURNAL_PREFIX, strlen(JOURNAL_PREFIX))) {
            AUTOFREE char *p = xasprintf("%s/%s", location, de->d_name);
            if (unlink(p) < 0)
                r = -errno;
        }
    }
    closedir(d);
    if (r == 0 && rmdir(location) < 0)
        r = -errno;
    return r;
}

static const sr_driver file_driver = {
    .type = "file",
    .content_type = "user",
    .suffix = ".vhd",
    .sr_create = file_sr_create,
    .sr_delete = file_sr_delete,
    .scan = file_scan,
    .vdi_create = file_vdi_create,
    .vdi_delete = file_vdi_delete,
    .vdi_resize = file_vdi_resize,
    .vdi_snapshot = file_vdi_snapshot,
    .vdi_info = file_vdi_info,
    .gc = file_gc_locked,
};

/* ---- iso driver: the .iso files of a directory, read-only ------------------------------- */

static bool iso_name(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && n < 256 && name[0] != '.' && !strchr(name, '/') &&
           !strcasecmp(name + n - 4, ".iso");
}

static int iso_sr_create(const char *location)
{
    struct stat st;
    if (stat(location, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static int iso_sr_delete(const char *location)
{
    AUTOFREE char *lp = xasprintf("%s/" LOCK_NAME, location);
    unlink(lp);
    return 0;
}

static int iso_vdi_info(sr *s, const char *name, struct sr_vdi_info *ret)
{
    if (!iso_name(name))
        return -ENOENT;
    AUTOFREE char *path = vpath(s, name);
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -ENOENT;
    memset(ret, 0, sizeof(*ret));
    snprintf(ret->location, sizeof(ret->location), "%s", name);
    ret->virtual_size = (uint64_t)st.st_size;
    ret->physical_size = (uint64_t)st.st_size;
    ret->read_only = true;
    ret->format = "raw";
    return 0;
}

static int iso_scan(sr *s, struct sr_vdi_info **ret, size_t *ret_n)
{
    DIR *d = opendir(s->dir);
    if (!d)
        return -errno;
    struct sr_vdi_info *out = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        struct sr_vdi_info vi;
        if (!iso_name(de->d_name) || iso_vdi_info(s, de->d_name, &vi) < 0)
            continue;
        out = xrealloc(out, (n + 1) * sizeof(*out));
        out[n++] = vi;
    }
    closedir(d);
    *ret = out ? out : xcalloc(1, sizeof(*out));
    *ret_n = n;
    return 0;
}

static const sr_driver iso_driver = {
    .type = "iso",
    .content_type = "iso",
    .suffix = "",
    .read_only = true,
    .sr_create = iso_sr_create,
    .sr_delete = iso_sr_delete,
    .scan = iso_scan,
    .vdi_info = iso_vdi_info,
};

const sr_driver *const sr_drivers[] = {&file_driver, &iso_driver, NULL};

const sr_driver *sr_driver_lookup(const char *type)
{
    for (size_t i = 0; type && sr_drivers[i]; i++)
        if (!strcmp(sr_drivers[i]->type, type))
            return sr_drivers[i];
    return NULL;
}

int sr_gc(sr *s, struct sr_gc_stats *ret);

/* ---- generic layer ------------------------------------------------------------------------ */

int sr_create(const sr_driver *d, const char *location)
{
    if (!d || !location || location[0] != '/')
        return -EINVAL;
    return d->sr_create ? d->sr_create(location) : -ENOTSUP;
}

int sr_attach(const sr_driver *d, const char *location, sr **ret)
{
    if (!d || !location || location[0] != '/')
        return -EINVAL;
    struct stat st;
    if (stat(location, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    AUTOFREE char *lp = xasprintf("%s/" LOCK_NAME, location);
    int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    /* a read-only library may live where we cannot write: it then goes without the lock */
    if (fd < 0 && !(d->read_only && (errno == EACCES || errno == EROFS || errno == EPERM)))
        return -errno;
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno == EWOULDBLOCK ? -EBUSY : -errno;
        close(fd);
        return e;
    }
    sr *s = xcalloc(1, sizeof(*s));
    s->d = d;
    s->dir = xstrdup(location);
    s->lockfd = fd;
    pthread_mutex_init(&s->mu, NULL);
    if (!d->read_only)
        journal_recover(s);
    *ret = s;
    return 0;
}

void sr_detach(sr *s)
{
    if (!s)
        return;
    if (s->lockfd >= 0)
        close(s->lockfd);
    pthread_mutex_destroy(&s->mu);
    free(s->att);
    free(s->dir);
    free(s);
}

int sr_delete(const sr_driver *d, const char *location)
{
    sr *s = NULL;
    int r = sr_attach(d, location, &s);
    if (r < 0)
        return r;
    if (d->read_only) {
        sr_detach(s);
        return d->sr_delete ? d->sr_delete(location) : -ENOTSUP;
    }
    struct sr_gc_stats st;
    if ((r = sr_gc(s, &st)) < 0) {
        sr_detach(s);
        return r;
    }
    struct sr_vdi_info *v = NULL;
    size_t n = 0;
    if (d->scan && (r = d->scan(s, &v, &n)) == 0 && n > 0)
        r = -ENOTEMPTY;
    free(v);
    sr_detach(s);
    if (r < 0)
        return r;
    return d->sr_delete ? d->sr_delete(location) : -ENOTSUP;
}

const sr_driver *sr_get_driver(const sr *s)
{
    return s->d;
}

const char *sr_location(const sr *s)
{
    return s->dir;
}

int sr_stat(sr *s, struct sr_stat *ret)
{
    struct statvfs sv;
    if (statvfs(s->dir, &sv) < 0)
        return -errno;
    ret->physical_size = (uint64_t)sv.f_blocks * sv.f_frsize;
    ret->physical_utilisation = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
    ret->free = (uint64_t)sv.f_bavail * sv.f_frsize;
    return 0;
}

int sr_round_size(int64_t requested, uint64_t *ret)
{
    if (requested < 0 || (uint64_t)requested > SR_VHD_MAX_SIZE)
        return -EINVAL;
    uint64_t r =
        ((uint64_t)requested + SR_VHD_SIZE_ROUND - 1) / SR_VHD_SIZE_ROUND * SR_VHD_SIZE_ROUND;
    *ret = r ? r : SR_VHD_SIZE_ROUND;
    return 0;
}

#define LOCKED(s, expr)                                                                            \
    ({                                                                                             \
        pthread_mutex_lock(&(s)->mu);                                                              \
        int _r = (expr);                                                                           \
        pthread_mutex_unlock(&(s)->mu);                                                            \
        _r;                                                                                        \
    })

int sr_scan(sr *s, struct sr_vdi_info **ret, size_t *ret_n)
{
    if (!s->d->scan)
        return -ENOTSUP;
    return LOCKED(s, s->d->scan(s, ret, ret_n));
}

static bool uuid_ok(const char *location)
{
    return location && *location && location[0] != '.' && !strchr(location, '/') &&
           strlen(location) < sizeof(((struct sr_vdi_info *)0)->location);
}

bool sr_vdi_exists(sr *s, const char *location)
{
    if (!uuid_ok(location))
        return false;
    AUTOFREE char *p = vpath(s, location);
    return access(p, F_OK) == 0;
}

int sr_vdi_info(sr *s, const char *uuid, struct sr_vdi_info *ret)
{
    if (!uuid_ok(uuid))
        return -EINVAL;
    if (!s->d->vdi_info)
        return -ENOTSUP;
    return LOCKED(s, s->d->vdi_info(s, uuid, ret));
}

int sr_vdi_create(sr *s, uint64_t size, struct sr_vdi_info *ret)
{
    if (s->d->read_only)
        return -EROFS;
    uint64_t sz;
    if (size > INT64_MAX || sr_round_size((int64_t)size, &sz) < 0)
        return -EINVAL;
    if (!s->d->vdi_create)
        return -ENOTSUP;
    return LOCKED(s, s->d->vdi_create(s, sz, ret));
}

static int vdi_delete_locked(sr *s, const char *uuid)
{
    if (att_busy(s, uuid))
        return -EBUSY;
    return s->d->vdi_delete(s, uuid);
}

int sr_vdi_delete(sr *s, const char *uuid)
{
    if (!uuid_ok(uuid))
        return -EINVAL;
    if (s->d->read_only)
        return -EROFS;
    if (!s->d->vdi_delete)
        return -ENOTSUP;
    return LOCKED(s, vdi_delete_locked(s, uuid));
}

static int vdi_resize_locked(sr *s, const char *uuid, uint64_t size)
{
    if (att_busy(s, uuid))
        return -EBUSY;
    return s->d->vdi_resize(s, uuid, size);
}

int sr_vdi_resize(sr *s, const char *uuid, uint64_t size)
{
    if (!uuid_ok(uuid))
        return -EINVAL;
    if (s->d->read_only)
        return -EROFS;
    uint64_t sz;
    if (size > INT64_MAX || sr_round_size((int64_t)size, &sz) < 0)
        return -EINVAL;
    if (!s->d->vdi_resize)
        return -ENOTSUP;
    return LOCKED(s, vdi_resize_locked(s, uuid, sz));
}

static int vdi_snapshot_locked(sr *s, const char *uuid, struct sr_vdi_info *ret_new,
                               struct sr_vdi_info *ret_base)
{
    /* A writer holds the old leaf's inode, which becomes the base: it must reopen first
     * (the VMM's refresh, with the VM lifecycle). */
    struct attached *a = att_find(s, uuid);
    if (a && a->n_rw)
        return -EBUSY;
    return s->d->vdi_snapshot(s, uuid, ret_new, ret_base);
}

int sr_vdi_snapshot(sr *s, const char *uuid, struct sr_vdi_info *ret_new,
                    struct sr_vdi_info *ret_base)
{
    if (!uuid_ok(uuid))
        return -EINVAL;
    if (s->d->read_only)
        return -EROFS;
    if (!s->d->vdi_snapshot)
        return -ENOTSUP;
    return LOCKED(s, vdi_snapshot_locked(s, uuid, ret_new, ret_base));
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* The source of a copy: a VHD chain, or a raw file read as zeros past its end. */
struct copy_src {
    vhd *v;
    int fd;
    uint64_t file_size;
};

static int src_read(struct copy_src *c, uint8_t *buf, uint64_t off, size_t len)
{
    if (c->v)
        return vhd_read(c->v, buf, off, len);
    memset(buf, 0, len);
    size_t got = 0;
    while (got < len && off + got < c->file_size) {
        ssize_t n = pread(c->fd, buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return 0;
}

static int copy_locked(sr *src, const char *location, sr *dst, struct sr_vdi_info *ret)
{
    struct sr_vdi_info si;
    int r = src->d->vdi_info(src, location, &si);
    if (r < 0)
        return r;
    if (si.hidden)
        return -EPERM;
    AUTOFREE char *spath = vpath(src, location);
    struct copy_src in = {.fd = -1};
    struct vhd_extent *ext = NULL;
    size_t next = 0;
    uint64_t size = 0;
    if (!strcmp(si.format, "vhd")) {
        if ((r = vhd_open(spath, VHD_OPEN_RDONLY, &in.v)) < 0)
            return r;
        struct vhd_info vi;
        vhd_get_info(in.v, &vi);
        size = vi.virtual_size;
        if ((r = vhd_map(in.v, &ext, &next)) < 0) {
            vhd_close(in.v);
            return r;
        }
    } else {
        if ((in.fd = open(spath, O_RDONLY | O_CLOEXEC)) < 0)
            return -errno;
        in.file_size = si.virtual_size;
        if (si.virtual_size > INT64_MAX || sr_round_size((int64_t)si.virtual_size, &size) < 0) {
            close(in.fd);
            return -EFBIG;
        }
        ext = xcalloc(1, sizeof(*ext));
        ext[0] = (struct vhd_extent){.start = 0, .length = size, .depth = 0, .file_offset = 0};
        next = 1;
    }
    uint64_t needed = 0, avail = 0;
    for (size_t i = 0; i < next; i++)
        if (ext[i].depth >= 0)
            needed += ext[i].length;
    struct sr_vdi_info nv;
    if ((r = free_bytes(dst, &avail)) < 0 || avail < needed + SNAPSHOT_SPACE)
        r = r < 0 ? r : -ENOSPC;
    else
        r = dst->d->vdi_create(dst, size, &nv);
    AUTOFREE char *dpath = r == 0 ? vpath(dst, nv.location) : NULL;
    vhd *out = NULL;
    AUTOFREE uint8_t *buf = xmalloc(COPY_CHUNK);
    if (r == 0)
        r = vhd_open(dpath, VHD_OPEN_RDWR, &out);
    for (size_t i = 0; r == 0 && i < next; i++) {
        if (ext[i].depth < 0)
            continue;
        for (uint64_t off = ext[i].start; r == 0 && off < ext[i].start + ext[i].length;
             off += COPY_CHUNK) {
            size_t len = (size_t)(ext[i].start + ext[i].length - off);
            if (len > COPY_CHUNK)
                len = COPY_CHUNK;
            r = src_read(&in, buf, off, len);
            if (r == 0 && !all_zero(buf, len))
                r = vhd_write(out, buf, off, len);
        }
    }
    if (r == 0)
        r = vhd_flush(out);
    vhd_close(out);
    vhd_close(in.v);
    if (in.fd >= 0)
        close(in.fd);
    free(ext);
    if (r < 0) {
        if (dpath)
            unlink(dpath);
        return r;
    }
    return dst->d->vdi_info(dst, nv.location, ret);
}

int sr_vdi_copy(sr *src, const char *uuid, sr *dst, struct sr_vdi_info *ret)
{
    if (!uuid_ok(uuid))
        return -EINVAL;
    if (dst->d->read_only)
        return -EROFS;
    if (!dst->d->vdi_create || !dst->d->vdi_info)
        return -ENOTSUP;
    /* lock order: by address, so two opposite copies cannot deadlock */
    sr *first = src < dst ? src : dst, *second = src < dst ? dst : src;
    pthread_mutex_lock(&first->mu);
    if (second != first)
        pthread_mutex_lock(&second->mu);
    int r = copy_locked(src, uuid, dst, ret);
    if (second != first)
        pthread_mutex_unlock(&second->mu);
    pthread_mutex_unlock(&first->mu);
    return r;
}

static int vdi_attach_locked(sr *s, const char *uuid, bool rw, struct sr_backend *ret)
{
    struct sr_vdi_info vi;
    int r = s->d->vdi_info(s, uuid, &vi);
    if (r < 0)
        return r;
    if (vi.hidden)
        return -EPERM;
    if (rw && vi.read_only)
        return -EROFS;
    struct attached *a = att_find(s, uuid);
    if (!a) {
        s->att = xrealloc(s->att, (s->natt + 1) * sizeof(*s->att));
        a = &s->att[s->natt++];
        memset(a, 0, sizeof(*a));
        snprintf(a->location, sizeof(a->location), "%s", uuid);
    }
    if (rw)
        a->n_rw++;
    else
        a->n_ro++;
    ret->path = vpath(s, uuid);
    ret->format = vi.format;
    ret->read_only = !rw;
    return 0;
}

int sr_vdi_attach(sr *s, const char *uuid, bool rw, struct sr_backend *ret)
{
    if (!uuid_ok(uuid))
        return -EINVAL;
    if (!s->d->vdi_info)
        return -ENOTSUP;
    return LOCKED(s, vdi_attach_locked(s, uuid, rw, ret));
}

static int vdi_detach_locked(sr *s, const char *uuid)
{
    struct attached *a = att_find(s, uuid);
    if (!a || !(a->n_rw || a->n_ro))
        return -ENOENT;
    if (a->n_rw)
        a->n_rw--;
    else
        a->n_ro--;
    if (!a->n_rw && !a->n_ro)
        *a = s->att[--s->natt];
    return 0;
}

int sr_vdi_detach(sr *s, const char *uuid)
{
    if (!uuid_ok(uuid))
        return -EINVAL;
    return LOCKED(s, vdi_detach_locked(s, uuid));
}

bool sr_vdi_attached(sr *s, const char *uuid)
{
    return LOCKED(s, att_busy(s, uuid)) != 0;
}

int sr_gc(sr *s, struct sr_gc_stats *ret)
{
    struct sr_gc_stats st;
    if (!ret)
        ret = &st;
    memset(ret, 0, sizeof(*ret));
    if (!s->d->gc)
        return 0;
    pthread_mutex_lock(&s->mu);
    if (s->gc_running) {
        pthread_mutex_unlock(&s->mu);
        return -EALREADY;
    }
    s->gc_running = true;
    int r = s->d->gc(s, ret);
    s->gc_running = false;
    pthread_mutex_unlock(&s->mu);
    return r;
}
