/* SR drivers: the generic layer (handles, locking, attach counts, copy) and the `file` driver
 * (a directory of <vdi-uuid>.vhd files forming VHD trees, as SM's FileSR keeps them).
 *
 * Crash safety of the tree operations: snapshot writes a journal naming the base before it
 * links the leaf to the base name; attach replays or rolls back an unfinished one. The GC's
 * steps (coalesce, re-parent, unlink; unhide, rename) each leave readable chains. */
#define _GNU_SOURCE
#include "sr.h"
#include "sr-priv.h"

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

/* A node of the tree on disk. */
struct node {
    struct sr_vdi_info i;
    char vhd_uuid[37]; /* footer unique id */
    char vhd_parent[37];
    int parent; /* index, -1 */
};

/* The per-chain guard of a running merge. While the collector copies a node's data into its
 * parent with the SR mutex released, the parent is written and the chains through it are in
 * flux: operations on the parent, the merged node and the node's descendants (the whole
 * subtree that reads through the parent) wait on cv; every other chain of the SR goes on.
 * Scans see the parent as it was when the merge began. */
struct fence {
    bool on;
    struct node parent;  /* the node written, as loaded before the copy */
    char (*members)[37]; /* parent, merged node and its descendants */
    size_t n;
};

struct sr {
    const sr_driver *d;
    char *dir;
    int lockfd;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when a fence comes down */
    struct attached *att;
    size_t natt;
    bool gc_running; /* one collector at a time: two would write one parent */
    struct fence fence;
};

void (*sr_test_merge_hook)(sr *s, const char *parent, const char *child);

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

static bool fenced(const sr *s, const char *uuid)
{
    for (size_t i = 0; s->fence.on && i < s->fence.n; i++)
        if (!strcmp(s->fence.members[i], uuid))
            return true;
    return false;
}

/* Waits, with s->mu held, until no merge involves the VDI's chain. */
static void fence_wait(sr *s, const char *uuid)
{
    while (fenced(s, uuid))
        pthread_cond_wait(&s->cv, &s->mu);
}

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
        if (s->fence.on && !strcmp(uuid, s->fence.parent.i.uuid))
            nd = s->fence.parent; /* written by a merge: its metadata is in flux */
        else if (node_load(s, uuid, &nd) < 0)
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
    /* the parent's VDI uuid: the name of the file the chain opens through (only the chain is
     * read, not every node of the SR; the parent must carry the id the child records) */
    if (nd.vhd_parent[0]) {
        AUTOFREE char *path = vpath(s, uuid);
        vhd *v = NULL;
        if (vhd_open(path, VHD_OPEN_RDONLY, &v) == 0) {
            const vhd *p = vhd_parent(v);
            const char *slash = p ? strrchr(vhd_path(p), '/') : NULL;
            char pu[37];
            if (p && vhd_name(slash ? slash + 1 : vhd_path(p), pu))
                memcpy(nd.i.parent_uuid, pu, sizeof(pu));
            vhd_close(v);
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

/* Removes staged imports a crash left (sr_vdi_stage): run at attach, when none can be live. */
static void stage_sweep(sr *s)
{
    DIR *d = opendir(s->dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        char uuid[37];
        if (n != 1 + 36 + 4 + 4 || de->d_name[0] != '.' || strcmp(de->d_name + 37, ".vhd.new"))
            continue;
        memcpy(uuid, de->d_name + 1, 36);
        uuid[36] = '\0';
        if (!uuid_valid(uuid))
            continue;
        AUTOFREE char *p = xasprintf("%s/%s", s->dir, de->d_name);
        unlink(p);
    }
    closedir(d);
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

/* Raises the fence for merging nodes[child] into nodes[parent]: the parent, the child and the
 * child's descendants. */
static void fence_up(sr *s, const struct node *nodes, size_t n, size_t parent, size_t child)
{
    struct fence *f = &s->fence;
    f->parent = nodes[parent];
    f->parent.i.children = 0;
    f->parent.i.parent_uuid[0] = '\0';
    f->parent.parent = -1;
    f->members = xrealloc(f->members, (n + 1) * sizeof(*f->members));
    f->n = 0;
    memcpy(f->members[f->n++], nodes[parent].i.uuid, 37);
    for (size_t j = 0; j < n; j++) {
        /* j is in the subtree of child if child is on its way to the root */
        int k = (int)j;
        for (unsigned depth = 0; k >= 0 && depth <= VHD_MAX_CHAIN_DEPTH;
             depth++, k = nodes[k].parent)
            if (k == (int)child) {
                memcpy(f->members[f->n++], nodes[j].i.uuid, 37);
                break;
            }
    }
    f->on = true;
}

static void fence_down(sr *s)
{
    s->fence.on = false;
    s->fence.n = 0;
    pthread_cond_broadcast(&s->cv);
}

/* Copies child's data into its parent with the mutex released (s->mu held on entry and
 * return), behind the fence of that subtree. */
static int merge_unlocked(sr *s, const struct node *nodes, size_t n, size_t parent, size_t child)
{
    AUTOFREE char *p = vpath(s, nodes[child].i.uuid);
    fence_up(s, nodes, n, parent, child);
    pthread_mutex_unlock(&s->mu);
    if (sr_test_merge_hook)
        sr_test_merge_hook(s, nodes[parent].i.uuid, nodes[child].i.uuid);
    int r = vhd_coalesce(p, NULL);
    pthread_mutex_lock(&s->mu);
    fence_down(s);
    return r;
}

/* Reloads the tree after a merge and finds the node uuid (index, or -1 when it is gone or no
 * longer the only child of parent_uuid, or an attached VDI reads through it: the step is then
 * abandoned, the parent holding a copy of data the child still has). */
static int reload_check(sr *s, const char *uuid, const char *parent_uuid, struct node **ret,
                        size_t *ret_n)
{
    int r = nodes_load(s, ret, ret_n);
    if (r < 0)
        return r;
    struct node *now = *ret;
    size_t m = *ret_n;
    for (size_t j = 0; j < m; j++)
        if (!strcmp(now[j].i.uuid, uuid)) {
            if (now[j].parent < 0 || strcmp(now[now[j].parent].i.uuid, parent_uuid) ||
                now[now[j].parent].i.children != 1 || chain_attached(s, now, m, j))
                return -1;
            return (int)j;
        }
    return -1;
}

/* One GC step, called with s->mu held; returns 1 if it changed something (or should look
 * again), 0 if nothing is left to do. The long data copy of a merge runs with the mutex
 * released behind a fence on the subtree being merged (see struct fence), so snapshots,
 * clones, attaches and copies of the SR's other chains go on meanwhile; the tree is checked
 * again before the children are re-parented. */
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
        if ((r = merge_unlocked(s, nodes, n, (size_t)nd->parent, i)) < 0)
            return r;
        AUTOFREE struct node *now = NULL;
        size_t m = 0;
        int k = reload_check(s, me, parent, &now, &m);
        if (k < 0)
            return k == -1 ? 1 : k;
        for (size_t j = 0; j < m; j++)
            if (now[j].parent == k) {
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
        char me[37], parent[37];
        memcpy(me, nd->i.uuid, sizeof(me));
        memcpy(parent, nodes[nd->parent].i.uuid, sizeof(parent));
        AUTOFREE char *p = vpath(s, me);
        AUTOFREE char *pp = vpath(s, parent);
        if ((r = merge_unlocked(s, nodes, n, (size_t)nd->parent, i)) < 0)
            return r;
        /* the leaf may have been snapshotted or attached before the fence went up again */
        AUTOFREE struct node *now = NULL;
        size_t m = 0;
        int k = reload_check(s, me, parent, &now, &m);
        if (k < 0)
            return k == -1 ? 1 : k;
        if (now[k].i.hidden || now[k].i.children || att_busy(s, me))
            return 1;
        if ((r = vhd_set_hidden(pp, false)) < 0)
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

/* `shared`: the file driver for a directory every pool host sees (an NFS export mounted at
 * the same path on each): the SR lives in <device_config:path>/<sr-uuid>. */
static const sr_driver shared_driver = {
    .type = "shared",
    .content_type = "user",
    .suffix = ".vhd",
    .parent_key = "path",
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

const sr_driver *const sr_drivers[] = {&file_driver, &shared_driver, &iso_driver, NULL};

const sr_driver *sr_driver_lookup(const char *type)
{
    for (size_t i = 0; type && sr_drivers[i]; i++)
        if (!strcmp(sr_drivers[i]->type, type))
            return sr_drivers[i];
    return NULL;
}

int sr_gc(sr *s, struct sr_gc_stats *ret);

/* ---- probe -------------------------------------------------------------------------------- */

/* Whether dir holds an SR of d: its lock file, or a VDI file of the driver. */
static bool sr_dir_looks_used(const sr_driver *d, const char *dir)
{
    DIR *dd = opendir(dir);
    if (!dd)
        return false;
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(dd))) {
        char uuid[37];
        found = !strcmp(de->d_name, LOCK_NAME) ||
                (d->read_only ? iso_name(de->d_name) : vhd_name(de->d_name, uuid));
    }
    closedir(dd);
    return found;
}

int sr_probe(const sr_driver *d, const char *dir, char (**ret)[37], size_t *ret_n)
{
    if (!d || !dir || dir[0] != '/')
        return -EINVAL;
    DIR *dd = opendir(dir);
    if (!dd)
        return -errno;
    char(*out)[37] = NULL;
    size_t n = 0;
    struct dirent *de;
    /* bounded by the directory; names are sorted so the answer is stable */
    while ((de = readdir(dd))) {
        if (strlen(de->d_name) != 36 || !uuid_valid(de->d_name))
            continue;
        AUTOFREE char *sub = xasprintf("%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(sub, &st) < 0 || !S_ISDIR(st.st_mode) || !sr_dir_looks_used(d, sub))
            continue;
        out = xrealloc(out, (n + 1) * sizeof(*out));
        memcpy(out[n++], de->d_name, 37);
    }
    closedir(dd);
    if (n > 1)
        qsort(out, n, sizeof(*out), (int (*)(const void *, const void *))strcmp);
    *ret = out ? out : xcalloc(1, sizeof(*out));
    *ret_n = n;
    return 0;
}

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
    pthread_cond_init(&s->cv, NULL);
    if (!d->read_only) {
        journal_recover(s);
        stage_sweep(s);
    }
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
    pthread_cond_destroy(&s->cv);
    free(s->fence.members);
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

/* LOCKED, once no merge involves the chain of VDI uuid. */
#define LOCKED_CHAIN(s, uuid, expr)                                                                \
    ({                                                                                             \
        pthread_mutex_lock(&(s)->mu);                                                              \
        fence_wait((s), (uuid));                                                                   \
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
    return LOCKED_CHAIN(s, uuid, s->d->vdi_info(s, uuid, ret));
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
    return LOCKED_CHAIN(s, uuid, vdi_delete_locked(s, uuid));
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
    return LOCKED_CHAIN(s, uuid, vdi_resize_locked(s, uuid, sz));
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
    return LOCKED_CHAIN(s, uuid, vdi_snapshot_locked(s, uuid, ret_new, ret_base));
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static int vdi_attach_locked(sr *s, const char *uuid, bool rw, struct sr_backend *ret);
static int vdi_detach_locked(sr *s, const char *uuid);

/* One end of a copy: a VDI held through the attach protocol (so no delete, resize, snapshot
 * of a writer, or merge of its chain happens meanwhile), opened as a VHD chain or, for a raw
 * image such as an ISO, as a file read as zeros past its end. */
struct copy_end {
    sr *s;
    char location[256];
    bool attached;
    vhd *v;
    int fd;
    uint64_t file_size;
    uint64_t size;          /* virtual size */
    struct vhd_extent *ext; /* allocation map */
    size_t next;
};

static void end_close(struct copy_end *c)
{
    vhd_close(c->v);
    c->v = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->ext);
    c->ext = NULL;
    if (c->attached)
        LOCKED(c->s, vdi_detach_locked(c->s, c->location));
    c->attached = false;
}

/* Attaches (rw: only if nobody else has the VDI attached) and opens. */
static int end_open(struct copy_end *c, sr *s, const char *location, bool rw)
{
    *c = (struct copy_end){.s = s, .fd = -1};
    snprintf(c->location, sizeof(c->location), "%s", location);
    struct sr_backend be = {0};
    pthread_mutex_lock(&s->mu);
    fence_wait(s, location);
    int r = rw && att_busy(s, location) ? -EBUSY : vdi_attach_locked(s, location, rw, &be);
    pthread_mutex_unlock(&s->mu);
    if (r < 0)
        return r;
    c->attached = true;
    if (!strcmp(be.format, "vhd")) {
        if ((r = vhd_open(be.path, rw ? VHD_OPEN_RDWR : VHD_OPEN_RDONLY, &c->v)) == 0) {
            struct vhd_info vi;
            vhd_get_info(c->v, &vi);
            c->size = vi.virtual_size;
            r = vhd_map(c->v, &c->ext, &c->next);
        }
    } else if (rw) {
        r = -ENOTSUP;
    } else if ((c->fd = open(be.path, O_RDONLY | O_CLOEXEC)) < 0) {
        r = -errno;
    } else {
        struct stat st;
        if (fstat(c->fd, &st) < 0)
            r = -errno;
        else if ((r = sr_round_size(st.st_size, &c->size)) < 0)
            r = -EFBIG;
        c->file_size = (uint64_t)st.st_size;
        c->ext = xcalloc(1, sizeof(*c->ext));
        c->ext[0] = (struct vhd_extent){.start = 0, .length = c->size, .file_offset = 0};
        c->next = 1;
    }
    sr_backend_clear(&be);
    if (r < 0)
        end_close(c);
    return r;
}

static int end_read(struct copy_end *c, uint8_t *buf, uint64_t off, size_t len)
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

/* Marks the COPY_CHUNK-sized pieces of [0, size) that c holds data for. */
static void mark_allocated(const struct copy_end *c, uint8_t *marks, uint64_t size)
{
    for (size_t i = 0; i < c->next; i++) {
        if (c->ext[i].depth < 0)
            continue;
        for (uint64_t off = c->ext[i].start / COPY_CHUNK * COPY_CHUNK;
             off < c->ext[i].start + c->ext[i].length && off < size; off += COPY_CHUNK)
            marks[off / COPY_CHUNK] = 1;
    }
}

/* Makes out read like in over in's virtual size. cmp (may be NULL: out is new and empty)
 * is what out is taken to hold already: only pieces where in and cmp differ are written. */
static int copy_data(struct copy_end *in, struct copy_end *cmp, struct copy_end *out)
{
    uint64_t size = in->size;
    size_t nchunks = (size_t)((size + COPY_CHUNK - 1) / COPY_CHUNK);
    AUTOFREE uint8_t *marks = xcalloc(nchunks + 1, 1);
    mark_allocated(in, marks, size);
    if (cmp)
        mark_allocated(cmp, marks, size);
    AUTOFREE uint8_t *buf = xmalloc(COPY_CHUNK);
    AUTOFREE uint8_t *old = cmp ? xmalloc(COPY_CHUNK) : NULL;
    int r = 0;
    for (size_t k = 0; r == 0 && k < nchunks; k++) {
        if (!marks[k])
            continue;
        uint64_t off = (uint64_t)k * COPY_CHUNK;
        size_t len = size - off < COPY_CHUNK ? (size_t)(size - off) : COPY_CHUNK;
        if ((r = end_read(in, buf, off, len)) < 0)
            break;
        if (cmp) {
            if ((r = end_read(cmp, old, off, len)) < 0)
                break;
            if (!memcmp(buf, old, len))
                continue;
        } else if (all_zero(buf, len)) {
            continue;
        }
        r = vhd_write(out->v, buf, off, len);
    }
    if (r == 0)
        r = vhd_flush(out->v);
    return r;
}

int sr_vdi_copy(sr *src, const char *uuid, sr *dst, struct sr_vdi_info *ret)
{
    if (!uuid_ok(uuid))
        return -EINVAL;
    if (dst->d->read_only)
        return -EROFS;
    if (!dst->d->vdi_create || !dst->d->vdi_info || !src->d->vdi_info)
        return -ENOTSUP;
    struct copy_end in, out;
    int r = end_open(&in, src, uuid, false);
    if (r < 0)
        return r;
    uint64_t needed = 0, avail = 0;
    for (size_t i = 0; i < in.next; i++)
        if (in.ext[i].depth >= 0)
            needed += in.ext[i].length;
    struct sr_vdi_info nv;
    pthread_mutex_lock(&dst->mu);
    if ((r = free_bytes(dst, &avail)) == 0 && avail < needed + SNAPSHOT_SPACE)
        r = -ENOSPC;
    if (r == 0)
        r = dst->d->vdi_create(dst, in.size, &nv);
    pthread_mutex_unlock(&dst->mu);
    if (r == 0 && (r = end_open(&out, dst, nv.location, true)) < 0)
        LOCKED(dst, dst->d->vdi_delete(dst, nv.location));
    if (r < 0) {
        end_close(&in);
        return r;
    }
    r = copy_data(&in, NULL, &out);
    end_close(&in);
    end_close(&out);
    if (r < 0) {
        LOCKED(dst, dst->d->vdi_delete(dst, nv.location));
        return r;
    }
    return LOCKED(dst, dst->d->vdi_info(dst, nv.location, ret));
}

int sr_vdi_copy_into(sr *src, const char *uuid, sr *base_sr, const char *base_uuid, sr *dst,
                     const char *dst_uuid)
{
    if (!uuid_ok(uuid) || !uuid_ok(dst_uuid) || (base_sr && !uuid_ok(base_uuid)))
        return -EINVAL;
    if (dst->d->read_only)
        return -EROFS;
    if (src == dst && !strcmp(uuid, dst_uuid))
        return -EINVAL;
    struct copy_end in, base = {.fd = -1}, out;
    int r = end_open(&in, src, uuid, false);
    if (r < 0)
        return r;
    if (base_sr && (r = end_open(&base, base_sr, base_uuid, false)) < 0) {
        end_close(&in);
        return r;
    }
    if ((r = end_open(&out, dst, dst_uuid, true)) == 0) {
        if (out.size < in.size)
            r = -EFBIG;
        else
            r = copy_data(&in, base_sr ? &base : &out, &out);
        end_close(&out);
    }
    end_close(&base);
    end_close(&in);
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
    return LOCKED_CHAIN(s, uuid, vdi_attach_locked(s, uuid, rw, ret));
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

void sr_vdi_wait_chain(sr *s, const char *uuid)
{
    if (!uuid_ok(uuid))
        return;
    pthread_mutex_lock(&s->mu);
    fence_wait(s, uuid);
    pthread_mutex_unlock(&s->mu);
}

bool sr_vdi_attached(sr *s, const char *uuid)
{
    return LOCKED(s, att_busy(s, uuid)) != 0;
}

/* ---- import staging ----------------------------------------------------------------------- */

/* The staged file of a VDI: the name snapshot uses for its temporary child, which attach and
 * journal recovery remove, and which scans never list. */
static char *stage_path(const sr *s, const char *uuid)
{
    return xasprintf("%s/.%s%s.new", s->dir, uuid, s->d->suffix);
}

static int stage_locked(sr *s, const char *uuid, char **ret_path)
{
    struct attached *a = att_find(s, uuid);
    if (!a || !a->n_rw)
        return -EINVAL;
    struct node nd;
    int r = node_load(s, uuid, &nd);
    if (r < 0)
        return r;
    if (nd.i.hidden)
        return -EPERM;
    uint64_t avail = 0;
    if ((r = free_bytes(s, &avail)) < 0)
        return r;
    if (avail < SNAPSHOT_SPACE)
        return -ENOSPC;
    AUTOFREE char *leaf = vpath(s, uuid);
    AUTOFREE char *tmp = stage_path(s, uuid);
    unlink(tmp);
    if ((r = vhd_snapshot(tmp, leaf, 0)) < 0)
        return r;
    *ret_path = TAKE_PTR(tmp);
    return 0;
}

int sr_vdi_stage(sr *s, const char *uuid, char **ret_path)
{
    if (!uuid_ok(uuid))
        return -EINVAL;
    if (s->d->read_only || !s->d->vdi_snapshot)
        return -EROFS;
    return LOCKED_CHAIN(s, uuid, stage_locked(s, uuid, ret_path));
}

static int stage_commit_locked(sr *s, const char *uuid)
{
    struct attached *a = att_find(s, uuid);
    if (!a || !a->n_rw)
        return -EINVAL;
    AUTOFREE char *leaf = vpath(s, uuid);
    AUTOFREE char *tmp = stage_path(s, uuid);
    vhd *v = NULL;
    int r = vhd_open(tmp, VHD_OPEN_RDONLY | VHD_OPEN_NO_PARENT, &v);
    if (r < 0)
        return r;
    struct vhd_info vi;
    vhd_get_info(v, &vi);
    vhd_close(v);
    if (vi.allocated_blocks == 0) { /* nothing changed: the VDI stays one node */
        unlink(tmp);
        return 0;
    }
    /* as a snapshot: the journal names the base; the leaf gets the base's name too and is
     * hidden; the staged child is pointed at the base name and renamed over the leaf. Until
     * that rename, recovery undoes everything; after it, the new tree stands. */
    char base_uuid[37];
    uuid_random(base_uuid);
    AUTOFREE char *base = vpath(s, base_uuid);
    if ((r = journal_write(s, uuid, base_uuid)) < 0)
        return r;
    if (link(leaf, base) < 0) {
        r = -errno;
        journal_recover_one(s, uuid);
        return r;
    }
    if ((r = vhd_set_hidden(base, true)) == 0 && (r = vhd_set_parent(tmp, base)) == 0) {
        AUTOCLOSE int fd = open(tmp, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fdatasync(fd) < 0)
            r = -errno;
    }
    if (r == 0 && rename(tmp, leaf) < 0)
        r = -errno;
    if (r < 0) {
        journal_recover_one(s, uuid);
        return r;
    }
    fsync_dir(s->dir);
    journal_remove(s, uuid);
    return 0;
}

int sr_vdi_stage_commit(sr *s, const char *uuid)
{
    if (!uuid_ok(uuid))
        return -EINVAL;
    if (s->d->read_only)
        return -EROFS;
    return LOCKED_CHAIN(s, uuid, stage_commit_locked(s, uuid));
}

void sr_vdi_stage_abort(sr *s, const char *uuid)
{
    if (!uuid_ok(uuid) || s->d->read_only)
        return;
    AUTOFREE char *tmp = stage_path(s, uuid);
    unlink(tmp);
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
