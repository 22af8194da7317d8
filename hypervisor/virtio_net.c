/* virtio-net on a tap (see virtio_net.h). Layouts from the virtio 1.1 specification, 5.1. */
#define _GNU_SOURCE
#include "virtio_net.h"
#include "log.h"
#include "mem.h"
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#define RXQ 0
#define TXQ 1

struct virtio_net {
    virtio_dev dev;
    unsigned index;
    int tap;
    int kick;        /* eventfd: RX buffers were added, or stop */
    bool stop;       /* under dev.lock */
    bool rx_waiting; /* a frame is held in rx_buf for want of guest buffers */
    size_t rx_len;
    uint8_t mac[6];
    pthread_t rx_thread;
    bool rx_started;
    virtio_net_stats stats; /* under dev.lock */
    uint8_t rx_buf[VIRTIO_NET_MAX_FRAME];
};

static void net_config_read(virtio_dev *d, uint32_t off, uint8_t *data, unsigned len)
{
    virtio_net *n = d->opaque;
    uint8_t cfg[8] = {0};
    memcpy(cfg, n->mac, 6);
    cfg[6] = 1; /* status: VIRTIO_NET_S_LINK_UP */
    if (off < sizeof(cfg))
        memcpy(data, cfg + off, len < sizeof(cfg) - off ? len : sizeof(cfg) - off);
}

/* Guest -> tap: the frame after the virtio_net_hdr, gathered from the chain. */
static void net_tx(virtio_net *n)
{
    virtio_dev *d = &n->dev;
    virtq *q = &d->q[TXQ];
    static __thread virtq_chain chain;
    struct iovec iov[VIRTQ_MAX_SIZE];
    bool pushed = false;
    for (;;) {
        int r = virtq_pop(q, d->mem, &chain);
        if (r < 0) {
            log_warn("virtio-net %u: malformed TX queue; device needs reset", n->index);
            d->status |= VIRTIO_STATUS_NEEDS_RESET;
            virtio_raise_locked(d, VIRTIO_INT_CONFIG);
            break;
        }
        if (!r)
            break;
        size_t skip = VIRTIO_NET_HDR_LEN, total = 0;
        int niov = 0;
        bool bad = false;
        for (unsigned i = 0; i < chain.nseg; i++) {
            virtq_seg *s = &chain.seg[i];
            bad = bad || s->writable;
            size_t off = skip < s->len ? skip : s->len;
            skip -= off;
            if (s->len > off) {
                iov[niov++] = (struct iovec){s->data + off, s->len - off};
                total += s->len - off;
            }
        }
        if (bad || skip || !total || total > VIRTIO_NET_MAX_FRAME) {
            n->stats.tx_dropped++;
        } else {
            ssize_t w = writev(n->tap, iov, niov);
            if (w < 0) {
                n->stats.tx_dropped++; /* EAGAIN (tap full), or the tap went away */
            } else {
                n->stats.tx_packets++;
                n->stats.tx_bytes += (uint64_t)w;
            }
        }
        virtq_push(q, d->mem, chain.head, 0);
        pushed = true;
    }
    if (pushed)
        virtio_raise_locked(d, VIRTIO_INT_USED);
}

static void kick(virtio_net *n)
{
    uint64_t one = 1;
    ssize_t r = write(n->kick, &one, sizeof(one));
    (void)r; /* the counter is already non-zero */
}

static void net_notify(virtio_dev *d, unsigned q)
{
    virtio_net *n = d->opaque;
    if (q == TXQ)
        net_tx(n);
    else
        kick(n); /* RX buffers: the RX thread delivers what waits */
}

/* Delivers the held frame into one RX chain (header + frame). Returns false when the guest
 * has no buffer (the frame stays held). Called with dev.lock held. */
static bool rx_deliver_locked(virtio_net *n)
{
    virtio_dev *d = &n->dev;
    virtq *q = &d->q[RXQ];
    static __thread virtq_chain chain; /* per RX thread */
    if (!(d->status & VIRTIO_STATUS_DRIVER_OK) || (d->status & VIRTIO_STATUS_NEEDS_RESET))
        return false;
    int r = virtq_pop(q, d->mem, &chain);
    if (r < 0) {
        log_warn("virtio-net %u: malformed RX queue; device needs reset", n->index);
        d->status |= VIRTIO_STATUS_NEEDS_RESET;
        virtio_raise_locked(d, VIRTIO_INT_CONFIG);
        return false;
    }
    if (!r)
        return false;
    uint8_t hdr[VIRTIO_NET_HDR_LEN] = {0};
    hdr[10] = 1; /* num_buffers = 1 */
    const uint8_t *src[2] = {hdr, n->rx_buf};
    size_t left[2] = {sizeof(hdr), n->rx_len}, written = 0;
    unsigned part = 0;
    for (unsigned i = 0; i < chain.nseg && part < 2; i++) {
        virtq_seg *s = &chain.seg[i];
        if (!s->writable)
            continue;
        size_t pos = 0;
        while (pos < s->len && part < 2) {
            size_t k = s->len - pos < left[part] ? s->len - pos : left[part];
            memcpy(s->data + pos, src[part], k);
            src[part] += k;
            left[part] -= k;
            pos += k;
            written += k;
            if (!left[part])
                part++;
        }
    }
    if (part < 2) {
        n->stats.rx_dropped++; /* buffer too small for the frame: the guest gets nothing */
        virtq_push(q, d->mem, chain.head, 0);
    } else {
        n->stats.rx_packets++;
        n->stats.rx_bytes += n->rx_len;
        virtq_push(q, d->mem, chain.head, (uint32_t)written);
    }
    virtio_raise_locked(d, VIRTIO_INT_USED);
    return true;
}

static void *rx_thread(void *arg)
{
    virtio_net *n = arg;
    for (;;) {
        pthread_mutex_lock(&n->dev.lock);
        bool stop = n->stop;
        if (!stop && n->rx_waiting && rx_deliver_locked(n))
            n->rx_waiting = false;
        bool waiting = n->rx_waiting;
        pthread_mutex_unlock(&n->dev.lock);
        if (stop)
            break;
        /* With a frame held, wait for buffers (kick) only; else for the tap too. */
        struct pollfd pfd[2] = {{.fd = n->kick, .events = POLLIN},
                                {.fd = waiting ? -1 : n->tap, .events = POLLIN}};
        if (poll(pfd, 2, waiting ? 1000 : -1) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents & POLLIN) {
            uint64_t cnt;
            ssize_t r = read(n->kick, &cnt, sizeof(cnt));
            (void)r;
        }
        if (!waiting && (pfd[1].revents & POLLIN)) {
            ssize_t r = read(n->tap, n->rx_buf, sizeof(n->rx_buf));
            if (r > 0) {
                pthread_mutex_lock(&n->dev.lock);
                n->rx_len = (size_t)r;
                n->rx_waiting = true;
                pthread_mutex_unlock(&n->dev.lock);
            }
        }
        if (pfd[1].revents & (POLLERR | POLLHUP | POLLNVAL)) {
            log_warn("virtio-net %u: tap gone; RX stopped", n->index);
            break;
        }
    }
    return NULL;
}

static void net_reset(virtio_dev *d)
{
    virtio_net *n = d->opaque;
    n->rx_waiting = false; /* a held frame is dropped with the device state */
}

/* Snapshot: a frame held for want of guest buffers goes with the state (TX is served on the
 * notifying vCPU, so nothing is in flight once the vCPUs are paused). */
static void net_save(virtio_dev *d, struct sbuf *out)
{
    virtio_net *n = d->opaque;
    uint32_t len = n->rx_waiting ? (uint32_t)n->rx_len : 0;
    snap_put_u32(out, len);
    snap_put(out, n->rx_buf, len);
}

/* Called before the RX thread starts (restore happens before the device threads run). */
static int net_load(virtio_dev *d, const uint8_t *data, size_t len)
{
    virtio_net *n = d->opaque;
    snap_reader r = {.p = data, .len = len};
    uint32_t held = snap_get_u32(&r);
    if (r.bad || held > sizeof(n->rx_buf) || held != len - r.off)
        return -EINVAL;
    memcpy(n->rx_buf, data + r.off, held);
    n->rx_len = held;
    n->rx_waiting = held > 0;
    return 0;
}

static const virtio_dev_ops net_ops = {.notify = net_notify,
                                       .config_read = net_config_read,
                                       .reset = net_reset,
                                       .save = net_save,
                                       .load = net_load};

virtio_net *virtio_net_new_fd(unsigned index, int fd, const uint8_t mac[6])
{
    virtio_net *n = xcalloc(1, sizeof(*n));
    n->index = index;
    n->tap = fd;
    n->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    memcpy(n->mac, mac, 6);
    n->dev.device_id = VIRTIO_ID_NET;
    n->dev.features = 1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS;
    n->dev.nqueues = 2;
    n->dev.ops = &net_ops;
    n->dev.opaque = n;
    virtio_dev_init(&n->dev);
    return n;
}

xerr *virtio_net_open(unsigned index, const char *tap, const uint8_t mac[6], virtio_net **ret)
{
    char field[32];
    snprintf(field, sizeof(field), "nics[%u].tap", index);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    if (strlen(tap) >= sizeof(ifr.ifr_name))
        return xerr_new("INVALID_VALUE", field, "name too long");
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return xerr_new("INVALID_VALUE", field, strerror(errno));
    strcpy(ifr.ifr_name, tap);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    /* TUNSETIFF on a name that is not there would create a tap: attach only to one that is. */
    if (!if_nametoindex(tap)) {
        close(fd);
        return xerr_new("INVALID_VALUE", field, "no such interface");
    }
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        xerr *e = xerr_new("INVALID_VALUE", field, strerror(errno));
        close(fd);
        return e;
    }
    *ret = virtio_net_new_fd(index, fd, mac);
    log_info("nic %u: tap %s, mac %02x:%02x:%02x:%02x:%02x:%02x", index, tap, mac[0], mac[1],
             mac[2], mac[3], mac[4], mac[5]);
    return NULL;
}

xerr *virtio_net_start(virtio_net *n)
{
    if (n->kick < 0)
        return xerr_internal("eventfd: %s", strerror(errno));
    int r = pthread_create(&n->rx_thread, NULL, rx_thread, n);
    if (r)
        return xerr_internal("pthread_create: %s", strerror(r));
    pthread_setname_np(n->rx_thread, "net-rx");
    n->rx_started = true;
    return NULL;
}

virtio_dev *virtio_net_dev(virtio_net *n)
{
    return &n->dev;
}

void virtio_net_get_stats(virtio_net *n, virtio_net_stats *ret)
{
    pthread_mutex_lock(&n->dev.lock);
    *ret = n->stats;
    pthread_mutex_unlock(&n->dev.lock);
}

void virtio_net_free(virtio_net *n)
{
    if (!n)
        return;
    if (n->rx_started) {
        pthread_mutex_lock(&n->dev.lock);
        n->stop = true;
        pthread_mutex_unlock(&n->dev.lock);
        kick(n);
        pthread_join(n->rx_thread, NULL);
    }
    if (n->tap >= 0)
        close(n->tap);
    if (n->kick >= 0)
        close(n->kick);
    virtio_dev_destroy(&n->dev);
    free(n);
}
