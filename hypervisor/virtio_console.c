/* virtio-console as the guest-agent channel (see virtio_console.h). Layouts from the virtio
 * 1.1 specification, 5.3 (no feature bits: one port, queues 0 and 1). */
#include "virtio_console.h"
#include "log.h"
#include "mem.h"
#include "sbuf.h"
#include "snapshot.h"

#include <errno.h>
#include <string.h>

struct virtio_console {
    virtio_dev dev;
    /* under dev.lock */
    sbuf out; /* host -> guest bytes not yet delivered */
    size_t out_off;
    agent_store store;
    uint64_t publications;
    uint64_t bytes_in, bytes_out;
    void (*published)(void *);
    void *opaque;
};

static bool driver_ok(const virtio_dev *d)
{
    return (d->status & VIRTIO_STATUS_DRIVER_OK) && !(d->status & VIRTIO_STATUS_NEEDS_RESET);
}

static void broken(virtio_dev *d, unsigned qi)
{
    log_warn("virtio-console: malformed queue %u; device needs reset", qi);
    d->status |= VIRTIO_STATUS_NEEDS_RESET;
    virtio_raise_locked(d, VIRTIO_INT_CONFIG);
}

/* Fills guest receive buffers with what the host queued. */
static void deliver_locked(virtio_console *c)
{
    virtio_dev *d = &c->dev;
    virtq *q = &d->q[VIRTIO_CONSOLE_RXQ];
    static __thread virtq_chain chain;
    bool pushed = false;
    while (c->out_off < c->out.len && driver_ok(d)) {
        int r = virtq_pop(q, d->mem, &chain);
        if (r < 0) {
            broken(d, VIRTIO_CONSOLE_RXQ);
            break;
        }
        if (!r)
            break;
        uint32_t written = 0;
        for (unsigned i = 0; i < chain.nseg && c->out_off < c->out.len; i++) {
            virtq_seg *s = &chain.seg[i];
            if (!s->writable)
                continue;
            size_t n = c->out.len - c->out_off;
            if (n > s->len)
                n = s->len;
            memcpy(s->data, c->out.data + c->out_off, n);
            c->out_off += n;
            written += (uint32_t)n;
        }
        c->bytes_out += written;
        virtq_push(q, d->mem, chain.head, written);
        pushed = true;
    }
    if (c->out_off == c->out.len)
        c->out.len = c->out_off = 0;
    if (pushed)
        virtio_raise_locked(d, VIRTIO_INT_USED);
}

/* Guest -> host bytes, fed to the agent store. */
static void receive_locked(virtio_console *c)
{
    virtio_dev *d = &c->dev;
    virtq *q = &d->q[VIRTIO_CONSOLE_TXQ];
    static __thread virtq_chain chain;
    bool pushed = false;
    unsigned published = 0;
    for (;;) {
        int r = virtq_pop(q, d->mem, &chain);
        if (r < 0) {
            broken(d, VIRTIO_CONSOLE_TXQ);
            break;
        }
        if (!r)
            break;
        for (unsigned i = 0; i < chain.nseg; i++) {
            virtq_seg *s = &chain.seg[i];
            if (s->writable)
                continue;
            c->bytes_in += s->len;
            published += agent_store_feed(&c->store, s->data, s->len);
        }
        virtq_push(q, d->mem, chain.head, 0);
        pushed = true;
    }
    if (pushed)
        virtio_raise_locked(d, VIRTIO_INT_USED);
    if (published) {
        c->publications++;
        if (c->published)
            c->published(c->opaque);
    }
}

static void con_notify(virtio_dev *d, unsigned q)
{
    virtio_console *c = d->opaque;
    if (q == VIRTIO_CONSOLE_TXQ)
        receive_locked(c);
    else
        deliver_locked(c); /* new receive buffers */
}

/* Snapshot: the guest's data, undelivered host writes and a partial guest line. */
static void con_save(virtio_dev *d, struct sbuf *out)
{
    virtio_console *c = d->opaque;
    agent_store *s = &c->store;
    snap_put_u8(out, s->connected);
    snap_put_u32(out, s->n);
    for (unsigned i = 0; i < s->n; i++) {
        uint32_t kl = (uint32_t)strlen(s->keys[i]), vl = (uint32_t)strlen(s->values[i]);
        snap_put_u32(out, kl);
        snap_put(out, s->keys[i], kl);
        snap_put_u32(out, vl);
        snap_put(out, s->values[i], vl);
    }
    snap_put_u32(out, (uint32_t)(c->out.len - c->out_off));
    snap_put(out, c->out.data + c->out_off, c->out.len - c->out_off);
    snap_put_u8(out, s->discarding);
    snap_put_u32(out, (uint32_t)s->line_len);
    snap_put(out, s->line, s->line_len);
}

/* Reads one length-prefixed string of at most max bytes into buf (NUL-terminated). */
static bool get_str(snap_reader *r, char *buf, size_t max)
{
    uint32_t n = snap_get_u32(r);
    if (r->bad || n > max || !snap_get(r, buf, n))
        return false;
    buf[n] = 0;
    return true;
}

static int con_load(virtio_dev *d, const uint8_t *data, size_t len)
{
    virtio_console *c = d->opaque;
    agent_store *s = &c->store;
    snap_reader r = {.p = data, .len = len};
    agent_store_clear(s);
    c->out.len = c->out_off = 0;
    bool connected = snap_get_u8(&r);
    uint32_t n = snap_get_u32(&r);
    if (r.bad || n > AGENT_MAX_KEYS)
        return -EINVAL;
    static __thread char key[AGENT_MAX_KEY + 1], val[AGENT_MAX_VALUE + 1];
    for (uint32_t i = 0; i < n; i++) {
        if (!get_str(&r, key, AGENT_MAX_KEY) || !get_str(&r, val, AGENT_MAX_VALUE) ||
            !agent_key_valid(key, strlen(key)) || !agent_value_valid(val, strlen(val))) {
            agent_store_clear(s);
            return -EINVAL;
        }
        char *line = xasprintf("set %s %s\n", key, val);
        agent_store_feed(s, (const uint8_t *)line, strlen(line));
        free(line);
    }
    s->connected = connected;
    uint32_t out = snap_get_u32(&r);
    if (r.bad || out > VIRTIO_CONSOLE_OUT_MAX || r.len - r.off < out)
        goto bad;
    sbuf_append(&c->out, (const char *)data + r.off, out);
    r.off += out;
    s->discarding = snap_get_u8(&r);
    uint32_t ll = snap_get_u32(&r);
    if (r.bad || ll > AGENT_MAX_LINE || !snap_get(&r, s->line, ll) || r.off != r.len)
        goto bad;
    s->line_len = ll;
    c->publications++; /* the data is news to whoever watches this process */
    return 0;
bad:
    agent_store_clear(s);
    c->out.len = c->out_off = 0;
    return -EINVAL;
}

static const virtio_dev_ops con_ops = {.notify = con_notify, .save = con_save, .load = con_load};

virtio_console *virtio_console_new(void (*published)(void *), void *opaque)
{
    virtio_console *c = xcalloc(1, sizeof(*c));
    agent_store_init(&c->store);
    c->published = published;
    c->opaque = opaque;
    c->dev.device_id = VIRTIO_ID_CONSOLE;
    c->dev.nqueues = 2;
    c->dev.ops = &con_ops;
    c->dev.opaque = c;
    virtio_dev_init(&c->dev);
    return c;
}

virtio_dev *virtio_console_dev(virtio_console *c)
{
    return &c->dev;
}

void virtio_console_free(virtio_console *c)
{
    if (!c)
        return;
    agent_store_clear(&c->store);
    sbuf_release(&c->out);
    virtio_dev_destroy(&c->dev);
    free(c);
}

xerr *virtio_console_guest_set(virtio_console *c, const char *key, const char *value)
{
    char *line = NULL;
    xerr *e = agent_format_set(key, value, &line);
    if (e)
        return e;
    virtio_dev *d = &c->dev;
    pthread_mutex_lock(&d->lock);
    size_t len = strlen(line);
    if (c->out.len - c->out_off + len > VIRTIO_CONSOLE_OUT_MAX) {
        e = xerr_new("INVALID_VALUE", "key", "guest agent queue full");
    } else {
        sbuf_append(&c->out, line, len);
        deliver_locked(c);
    }
    pthread_mutex_unlock(&d->lock);
    free(line);
    return e;
}

xv *virtio_console_guest_data(virtio_console *c, bool *ret_connected, uint64_t *ret_publications)
{
    pthread_mutex_lock(&c->dev.lock);
    xv *data = agent_store_data(&c->store);
    *ret_connected = c->store.connected;
    *ret_publications = c->publications;
    pthread_mutex_unlock(&c->dev.lock);
    return data;
}

uint64_t virtio_console_publications(virtio_console *c)
{
    pthread_mutex_lock(&c->dev.lock);
    uint64_t n = c->publications;
    pthread_mutex_unlock(&c->dev.lock);
    return n;
}

void virtio_console_machine_reset(virtio_console *c)
{
    pthread_mutex_lock(&c->dev.lock);
    bool had = c->store.n || c->store.connected;
    agent_store_clear(&c->store);
    c->out.len = c->out_off = 0;
    if (had)
        c->publications++; /* the data changed: it is gone */
    pthread_mutex_unlock(&c->dev.lock);
}

void virtio_console_get_stats(virtio_console *c, virtio_console_stats *ret)
{
    pthread_mutex_lock(&c->dev.lock);
    *ret = (virtio_console_stats){.bytes_in = c->bytes_in,
                                  .bytes_out = c->bytes_out,
                                  .lines = c->store.lines,
                                  .rejected = c->store.rejected,
                                  .overlong = c->store.overlong,
                                  .dropped = c->store.dropped};
    pthread_mutex_unlock(&c->dev.lock);
}
