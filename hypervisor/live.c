/* Live features: balloon, vCPU hot-plug, guest agent (see live.h). */
#include "live.h"
#include "ctl.h"
#include "log.h"
#include "mem.h"
#include "util.h"
#include "virtio_balloon.h"
#include "virtio_console.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the last events said, to send only changes, and when, to coalesce them. */
struct live {
    uint64_t bal_actual, bal_target;
    double bal_last;
    unsigned vcpus_online;
    double vcpus_last;
    uint64_t agent_pubs;
    double agent_last;
};

static void wake(void *opaque)
{
    vmm_wake(opaque);
}

void live_setup(vmm *v)
{
    v->live = xcalloc(1, sizeof(*v->live));
    v->vcpu_target = v->cfg->vcpus;
    v->vcpus_online = v->cfg->vcpus;
    v->live->vcpus_online = v->cfg->vcpus;
    uint64_t mem = v->cfg->memory_mib << 20;
    v->live->bal_actual = v->live->bal_target = mem;
    if (v->cfg->balloon && v->nvdevs < VIRTIO_MAX_DEVICES) {
        v->balloon = virtio_balloon_new(mem, wake, v);
        v->vdevs[v->nvdevs++] = virtio_balloon_dev(v->balloon);
    }
    if (v->cfg->agent && v->nvdevs < VIRTIO_MAX_DEVICES) {
        v->agent = virtio_console_new(wake, v);
        v->vdevs[v->nvdevs++] = virtio_console_dev(v->agent);
    }
}

void live_free(vmm *v)
{
    virtio_balloon_free(v->balloon);
    virtio_console_free(v->agent);
    v->balloon = NULL;
    v->agent = NULL;
    free(v->live);
    v->live = NULL;
}

/* Whether an event changed since the last one may go now; else *next gets the wait (ms). */
static bool due(double last, double now, int *next)
{
    double wait = last + LIVE_EVENT_INTERVAL - now;
    if (wait <= 0)
        return true;
    int ms = (int)(wait * 1000) + 1;
    if (*next < 0 || ms < *next)
        *next = ms;
    return false;
}

int live_poll(vmm *v, live_emit_fn emit, void *opaque)
{
    struct live *l = v->live;
    int next = -1;
    if (!l)
        return -1;
    double now = now_monotonic();
    if (v->balloon) {
        virtio_balloon_stats st;
        virtio_balloon_get_stats(v->balloon, &st);
        if (st.actual_bytes != l->bal_actual && due(l->bal_last, now, &next)) {
            xv *d = xv_new_struct();
            xv_struct_set(d, "actual_bytes", xv_new_int((int64_t)st.actual_bytes));
            xv_struct_set(d, "target_bytes", xv_new_int((int64_t)st.target_bytes));
            emit(opaque, "balloon", d);
            l->bal_actual = st.actual_bytes;
            l->bal_target = st.target_bytes;
            l->bal_last = now;
        }
    }
    unsigned online = atomic_load(&v->vcpus_online);
    if (online != l->vcpus_online && due(l->vcpus_last, now, &next)) {
        xv *d = xv_new_struct();
        xv_struct_set(d, "online", xv_new_int(online));
        emit(opaque, "vcpus", d);
        l->vcpus_online = online;
        l->vcpus_last = now;
    }
    if (v->agent && virtio_console_publications(v->agent) != l->agent_pubs &&
        due(l->agent_last, now, &next)) {
        bool connected;
        xv *d = xv_new_struct();
        xv_struct_set(d, "data", virtio_console_guest_data(v->agent, &connected, &l->agent_pubs));
        emit(opaque, "guest-data", d);
        l->agent_last = now;
    }
    return next;
}

static xerr *required_int(const xv *args, const char *key, int64_t *ret)
{
    bool present = xv_struct_get(args, key) != NULL;
    xerr *e = ctl_arg_int(args, key, ret);
    if (!e && !present)
        e = xerr_new("INVALID_VALUE", key, "missing");
    return e;
}

static xerr *required_string(const xv *args, const char *key, const char **ret)
{
    *ret = NULL;
    xerr *e = ctl_arg_string(args, key, ret);
    if (!e && !*ret)
        e = xerr_new("INVALID_VALUE", key, "missing");
    return e;
}

xerr *live_set_balloon_target(vmm *v, const xv *args, xv **ret)
{
    int64_t bytes = 0;
    xerr *e = required_int(args, "bytes", &bytes);
    if (e)
        return e;
    if (!v->balloon)
        return xerr_new("INVALID_VALUE", "bytes", "no balloon device (\"balloon\": false)");
    return virtio_balloon_set_target(v->balloon, bytes);
}

xerr *live_query_balloon(vmm *v, const xv *args, xv **ret)
{
    virtio_balloon_stats st = {.memory_bytes = v->cfg->memory_mib << 20};
    st.target_bytes = st.actual_bytes = st.memory_bytes;
    if (v->balloon)
        virtio_balloon_get_stats(v->balloon, &st);
    xv *r = xv_new_struct();
    xv_struct_set(r, "target_bytes", xv_new_int((int64_t)st.target_bytes));
    xv_struct_set(r, "actual_bytes", xv_new_int((int64_t)st.actual_bytes));
    xv_struct_set(r, "memory_bytes", xv_new_int((int64_t)st.memory_bytes));
    xv_struct_set(r, "present", xv_new_bool(v->balloon != NULL));
    *ret = r;
    return NULL;
}

xerr *live_set_vcpus(vmm *v, const xv *args, xv **ret)
{
    int64_t n = 0;
    xerr *e = required_int(args, "count", &n);
    if (e)
        return e;
    if (n < 1 || n > (int64_t)v->nvcpus) {
        char why[64];
        snprintf(why, sizeof(why), "between 1 and vcpus_max (%u)", v->nvcpus);
        return xerr_new("INVALID_VALUE", "count", why);
    }
    machine_set_vcpus(v, (unsigned)n);
    return NULL;
}

xerr *live_query_guest(vmm *v, const xv *args, xv **ret)
{
    bool connected = false;
    uint64_t pubs;
    xv *data = v->agent ? virtio_console_guest_data(v->agent, &connected, &pubs) : xv_new_struct();
    xv *r = xv_new_struct();
    xv_struct_set(r, "connected", xv_new_bool(connected));
    xv_struct_set(r, "data", data);
    *ret = r;
    return NULL;
}

xerr *live_guest_set(vmm *v, const xv *args, xv **ret)
{
    const char *key, *value;
    xerr *e;
    if ((e = required_string(args, "key", &key)) || (e = required_string(args, "value", &value)))
        return e;
    if (!v->agent)
        return xerr_new("INVALID_VALUE", "key", "no guest agent channel (\"agent\": false)");
    if ((e = virtio_console_guest_set(v->agent, key, value)))
        return e;
    /* control/vcpus is a vCPU target too: keep query-status and the next boot in step. */
    char *end = NULL;
    long n = strcmp(key, "control/vcpus") == 0 && *value ? strtol(value, &end, 10) : 0;
    if (end && !*end && n >= 1 && n <= (long)v->nvcpus) {
        pthread_mutex_lock(&v->lock);
        v->vcpu_target = (unsigned)n;
        pthread_mutex_unlock(&v->lock);
    }
    return NULL;
}

void live_add_status(vmm *v, xv *status)
{
    xv_struct_set(status, "vcpus_online", xv_new_int(atomic_load(&v->vcpus_online)));
    xv_struct_set(status, "vcpus_max", xv_new_int(v->nvcpus));
}

void live_add_stats(vmm *v, xv *stats)
{
    if (v->balloon) {
        virtio_balloon_stats st;
        virtio_balloon_get_stats(v->balloon, &st);
        xv *b = xv_new_struct();
        xv_struct_set(b, "target_bytes", xv_new_int((int64_t)st.target_bytes));
        xv_struct_set(b, "actual_bytes", xv_new_int((int64_t)st.actual_bytes));
        xv_struct_set(b, "inflated_bytes", xv_new_int((int64_t)st.inflated_bytes));
        xv_struct_set(b, "inflates", xv_new_int((int64_t)st.inflates));
        xv_struct_set(b, "deflates", xv_new_int((int64_t)st.deflates));
        xv_struct_set(b, "bad_pfns", xv_new_int((int64_t)st.bad_pfns));
        xv_struct_set(stats, "balloon", b);
    }
    if (v->agent) {
        virtio_console_stats st;
        virtio_console_get_stats(v->agent, &st);
        xv *a = xv_new_struct();
        xv_struct_set(a, "bytes_in", xv_new_int((int64_t)st.bytes_in));
        xv_struct_set(a, "bytes_out", xv_new_int((int64_t)st.bytes_out));
        xv_struct_set(a, "lines", xv_new_int((int64_t)st.lines));
        xv_struct_set(a, "rejected", xv_new_int((int64_t)st.rejected));
        xv_struct_set(a, "overlong", xv_new_int((int64_t)st.overlong));
        xv_struct_set(a, "dropped", xv_new_int((int64_t)st.dropped));
        xv_struct_set(stats, "agent", a);
    }
}
