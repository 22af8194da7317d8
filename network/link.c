/* Netlink side of network/: context, names, links, the Linux-bridge backend, VXLAN, IP config. */
#include "net-priv.h"

#include "log.h"
#include "mem.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_arp.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <netlink/cache.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/route/addr.h>
#include <netlink/route/link/bonding.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/vlan.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* Cleanup helpers for libnl objects. */
static inline void linkp(struct rtnl_link **l)
{
    if (*l)
        rtnl_link_put(*l);
}
static inline void cachep(struct nl_cache **c)
{
    if (*c)
        nl_cache_free(*c);
}
static inline void nladdrp(struct nl_addr **a)
{
    if (*a)
        nl_addr_put(*a);
}
#define AUTO_LINK  __attribute__((cleanup(linkp))) struct rtnl_link
#define AUTO_CACHE __attribute__((cleanup(cachep))) struct nl_cache
#define AUTO_ADDR  __attribute__((cleanup(nladdrp))) struct nl_addr

int net_nlerr(int nle)
{
    if (nle >= 0)
        return nle;
    switch (-nle) {
    case NLE_EXIST:
        return -EEXIST;
    case NLE_NODEV:
    case NLE_OBJ_NOTFOUND:
        return -ENODEV;
    case NLE_OPNOTSUPP:
    case NLE_AF_NOSUPPORT:
    case NLE_PROTO_MISMATCH:
        return -EOPNOTSUPP;
    case NLE_PERM:
        return -EPERM;
    case NLE_NOACCESS:
        return -EACCES;
    case NLE_BUSY:
        return -EBUSY;
    case NLE_INVAL:
    case NLE_MISSING_ATTR:
        return -EINVAL;
    case NLE_NOMEM:
        return -ENOMEM;
    case NLE_RANGE:
        return -ERANGE;
    case NLE_NOADDR:
        return -EADDRNOTAVAIL;
    case NLE_AGAIN:
        return -EAGAIN;
    case NLE_MSGSIZE:
        return -EMSGSIZE;
    case NLE_MSG_TOOSHORT:
    case NLE_MSG_TRUNC:
    case NLE_MSG_OVERFLOW:
    case NLE_PARSE_ERR:
        return -EPROTO;
    default:
        return -EIO;
    }
}

/* ---- Context ------------------------------------------------------------------------------ */

int net_ctx_open(net_ctx **ret)
{
    struct nl_sock *sock = nl_socket_alloc();
    if (!sock)
        return -ENOMEM;
    int r = nl_connect(sock, NETLINK_ROUTE);
    if (r < 0) {
        nl_socket_free(sock);
        return net_nlerr(r);
    }
    net_ctx *ctx = xcalloc(1, sizeof(*ctx));
    ctx->sock = sock;
    ctx->br = &net_bridge_linux;
    *ret = ctx;
    return 0;
}

void net_ctx_free(net_ctx *ctx)
{
    if (!ctx)
        return;
    nl_socket_free(ctx->sock);
    free(ctx);
}

void net_ctx_set_backend(net_ctx *ctx, const struct net_bridge_ops *ops)
{
    ctx->br = ops;
}

xerr *net_xerr(int rc, const char *op, const char *what)
{
    if (rc >= 0)
        return NULL;
    const char *o = op ? op : "";
    const char *w = what ? what : "";
    log_debug("network: %s %s: %s", o, w, strerror(-rc));
    switch (-rc) {
    case EEXIST:
        return xerr_new("BRIDGE_NAME_EXISTS", w);
    case EBUSY:
        return xerr_new("DEVICE_ALREADY_ATTACHED", w);
    case EINVAL:
    case ENAMETOOLONG:
    case ERANGE:
        return xerr_new("INVALID_VALUE", o, w);
    case EOPNOTSUPP:
        return xerr_new("NOT_IMPLEMENTED", o);
    case ENODEV:
        /* XAPI's PIF_NOT_PRESENT takes [host, network] refs, which only xapid knows. */
        return xerr_internal("%s: network device %s does not exist", o, w);
    default:
        return xerr_internal("%s %s failed: %s", o, w, strerror(-rc));
    }
}

/* ---- Names -------------------------------------------------------------------------------- */

bool net_ifname_valid(const char *name)
{
    if (!name)
        return false;
    size_t n = strlen(name);
    if (n == 0 || n >= NET_NAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '.' && c != '-' && c != '_')
            return false;
    }
    return true;
}

int net_bridge_name_check_user(const char *name)
{
    static const char *const reserved[] = {"xen", "xapi", "vif", "tap", "eth"};
    if (name && strlen(name) >= NET_NAME_MAX)
        return -ENAMETOOLONG;
    if (!name || !net_ifname_valid(name))
        return -EINVAL;
    for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
        if (!strncmp(name, reserved[i], strlen(reserved[i])))
            return -EINVAL;
    return 0;
}

int net_pif_bridge_name(const char *device, char out[static NET_NAME_MAX])
{
    if (!net_ifname_valid(device))
        return -EINVAL;
    const char *digits = device + 3;
    bool eth = !strncmp(device, "eth", 3) && *digits;
    for (const char *p = digits; eth && *p; p++)
        if (!isdigit((unsigned char)*p))
            eth = false;
    int n = eth ? snprintf(out, NET_NAME_MAX, "xenbr%s", digits)
                : snprintf(out, NET_NAME_MAX, "br%s", device);
    if (n < 0 || n >= NET_NAME_MAX) {
        out[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

int net_vif_name(long domid, long devid, char out[static NET_NAME_MAX])
{
    if (domid < 0 || devid < 0)
        return -EINVAL;
    int n = snprintf(out, NET_NAME_MAX, "vif%ld.%ld", domid, devid);
    if (n < 0 || n >= NET_NAME_MAX) {
        out[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

int net_bridge_pick_internal(net_ctx *ctx, const char *const *taken, size_t n_taken,
                             char out[static NET_NAME_MAX])
{
    for (unsigned i = 0; i < 10000; i++) {
        char name[NET_NAME_MAX];
        snprintf(name, sizeof(name), "xapi%u", i);
        bool used = false;
        for (size_t k = 0; k < n_taken && !used; k++)
            used = taken[k] && !strcmp(taken[k], name);
        if (used)
            continue;
        struct net_link_info li;
        if (ctx && net_link_get(ctx, name, &li) == 0)
            continue;
        memcpy(out, name, NET_NAME_MAX);
        return 0;
    }
    return -ENOSPC;
}

int net_mac_parse(const char *s, uint8_t mac[static 6])
{
    unsigned v[6];
    char tail;
    if (!s || strlen(s) != 17)
        return -EINVAL;
    for (int i = 0; i < 17; i++) {
        if (i % 3 == 2 ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
            return -EINVAL;
    }
    if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) !=
        6)
        return -EINVAL;
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)v[i];
    return 0;
}

void net_mac_format(const uint8_t mac[static 6], char out[static 18])
{
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
             mac[5]);
}

void net_mac_random(uint8_t mac[static 6])
{
    if (getrandom(mac, 6, 0) != 6) {
        for (int i = 0; i < 6; i++)
            mac[i] = (uint8_t)rand();
    }
    mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02); /* unicast, locally administered */
}

int net_netmask_to_prefix(const char *netmask)
{
    struct in_addr a;
    if (!netmask || inet_pton(AF_INET, netmask, &a) != 1)
        return -EINVAL;
    uint32_t m = ntohl(a.s_addr);
    int len = 0;
    while (len < 32 && (m & (0x80000000u >> len)))
        len++;
    if (len < 32 && (m << len) != 0)
        return -EINVAL; /* not contiguous */
    return len;
}

/* ---- Links -------------------------------------------------------------------------------- */

int net_link_lookup(net_ctx *ctx, const char *name, struct rtnl_link **ret)
{
    if (!net_ifname_valid(name))
        return -EINVAL;
    int r = rtnl_link_get_kernel(ctx->sock, 0, name, ret);
    return r < 0 ? net_nlerr(r) : 0;
}

int net_ifindex(net_ctx *ctx, const char *name)
{
    AUTO_LINK *l = NULL;
    int r = net_link_lookup(ctx, name, &l);
    if (r < 0)
        return r;
    return rtnl_link_get_ifindex(l);
}

static void link_fill(struct rtnl_link *l, struct nl_cache *cache, struct net_link_info *li)
{
    memset(li, 0, sizeof(*li));
    snprintf(li->name, sizeof(li->name), "%s", rtnl_link_get_name(l) ? rtnl_link_get_name(l) : "");
    li->ifindex = rtnl_link_get_ifindex(l);
    struct nl_addr *a = rtnl_link_get_addr(l);
    if (a && nl_addr_get_len(a) == 6)
        memcpy(li->mac, nl_addr_get_binary_addr(a), 6);
    li->mtu = rtnl_link_get_mtu(l);
    unsigned flags = rtnl_link_get_flags(l);
    li->admin_up = flags & IFF_UP;
    li->carrier = flags & IFF_LOWER_UP;
    const char *kind = rtnl_link_get_type(l);
    snprintf(li->kind, sizeof(li->kind), "%s", kind ? kind : "");
    li->master_ifindex = rtnl_link_get_master(l);
    if (li->master_ifindex > 0 && cache)
        rtnl_link_i2name(cache, li->master_ifindex, li->master, sizeof(li->master));
}

static int link_cache(net_ctx *ctx, struct nl_cache **ret)
{
    int r = rtnl_link_alloc_cache(ctx->sock, AF_UNSPEC, ret);
    return r < 0 ? net_nlerr(r) : 0;
}

int net_link_get(net_ctx *ctx, const char *name, struct net_link_info *ret)
{
    AUTO_LINK *l = NULL;
    int r = net_link_lookup(ctx, name, &l);
    if (r < 0)
        return r;
    AUTO_CACHE *cache = NULL;
    if (rtnl_link_get_master(l) > 0 && link_cache(ctx, &cache) < 0)
        cache = NULL;
    link_fill(l, cache, ret);
    return 0;
}

static int link_list_filtered(net_ctx *ctx, bool (*keep)(struct rtnl_link *),
                              struct net_link_info **ret, size_t *ret_n)
{
    AUTO_CACHE *cache = NULL;
    int r = link_cache(ctx, &cache);
    if (r < 0)
        return r;
    size_t n = 0, cap = (size_t)nl_cache_nitems(cache);
    struct net_link_info *v = xcalloc(cap ? cap : 1, sizeof(*v));
    for (struct nl_object *o = nl_cache_get_first(cache); o && n < cap; o = nl_cache_get_next(o)) {
        struct rtnl_link *l = (struct rtnl_link *)o;
        if (keep && !keep(l))
            continue;
        link_fill(l, cache, &v[n++]);
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

int net_link_list(net_ctx *ctx, struct net_link_info **ret, size_t *ret_n)
{
    return link_list_filtered(ctx, NULL, ret, ret_n);
}

static bool pif_candidate(struct rtnl_link *l)
{
    static const char *const ours[] = {"xenbr", "xapi", "vif", "tap", "nvx", "nqi", "br"};
    if (rtnl_link_get_arptype(l) != ARPHRD_ETHER)
        return false;
    const char *kind = rtnl_link_get_type(l);
    if (kind && strcmp(kind, "veth") != 0)
        return false;
    const char *name = rtnl_link_get_name(l);
    if (!name)
        return false;
    for (size_t i = 0; i < ARRAY_SIZE(ours); i++)
        if (!strncmp(name, ours[i], strlen(ours[i])))
            return false;
    return true;
}

int net_pif_scan(net_ctx *ctx, struct net_link_info **ret, size_t *ret_n)
{
    return link_list_filtered(ctx, pif_candidate, ret, ret_n);
}

int net_link_get_stats(net_ctx *ctx, const char *name, struct net_link_stats *ret)
{
    AUTO_LINK *l = NULL;
    int r = net_link_lookup(ctx, name, &l);
    if (r < 0)
        return r;
    *ret = (struct net_link_stats){
        .rx_bytes = rtnl_link_get_stat(l, RTNL_LINK_RX_BYTES),
        .tx_bytes = rtnl_link_get_stat(l, RTNL_LINK_TX_BYTES),
        .rx_packets = rtnl_link_get_stat(l, RTNL_LINK_RX_PACKETS),
        .tx_packets = rtnl_link_get_stat(l, RTNL_LINK_TX_PACKETS),
        .rx_dropped = rtnl_link_get_stat(l, RTNL_LINK_RX_DROPPED),
        .tx_dropped = rtnl_link_get_stat(l, RTNL_LINK_TX_DROPPED),
    };
    return 0;
}

/* Applies `chg` to link `name`. */
static int link_change(net_ctx *ctx, const char *name, struct rtnl_link *chg)
{
    AUTO_LINK *orig = NULL;
    int r = net_link_lookup(ctx, name, &orig);
    if (r < 0)
        return r;
    r = rtnl_link_change(ctx->sock, orig, chg, 0);
    return r < 0 ? net_nlerr(r) : 0;
}

int net_link_set_mtu(net_ctx *ctx, const char *name, unsigned mtu)
{
    if (mtu < 68 || mtu > 65535)
        return -EINVAL;
    AUTO_LINK *chg = rtnl_link_alloc();
    rtnl_link_set_mtu(chg, mtu);
    return link_change(ctx, name, chg);
}

int net_link_set_up(net_ctx *ctx, const char *name, bool up)
{
    AUTO_LINK *chg = rtnl_link_alloc();
    if (up)
        rtnl_link_set_flags(chg, IFF_UP);
    else
        rtnl_link_unset_flags(chg, IFF_UP);
    return link_change(ctx, name, chg);
}

int net_link_set_mac(net_ctx *ctx, const char *name, const uint8_t mac[static 6])
{
    AUTO_LINK *chg = rtnl_link_alloc();
    AUTO_ADDR *a = nl_addr_build(AF_LLC, mac, 6);
    rtnl_link_set_addr(chg, a);
    return link_change(ctx, name, chg);
}

int net_link_delete(net_ctx *ctx, const char *name)
{
    AUTO_LINK *l = NULL;
    int r = net_link_lookup(ctx, name, &l);
    if (r < 0)
        return r;
    r = rtnl_link_delete(ctx->sock, l);
    return r < 0 ? net_nlerr(r) : 0;
}

int net_link_move_to_netns(net_ctx *ctx, const char *name, int netns_fd)
{
    AUTO_LINK *chg = rtnl_link_alloc();
    rtnl_link_set_ns_fd(chg, netns_fd);
    return link_change(ctx, name, chg);
}

int net_veth_create(net_ctx *ctx, const char *a, const char *b)
{
    if (!net_ifname_valid(a) || !net_ifname_valid(b))
        return -EINVAL;
    int r = rtnl_link_veth_add(ctx->sock, a, b, getpid());
    return r < 0 ? net_nlerr(r) : 0;
}

/* ---- Linux-bridge backend ----------------------------------------------------------------- */

/* XCP's bridge settings: forward delay 0 and IGMP snooping off (guests' multicast must not
 * depend on the bridge having seen a report). libnl has no setters for IFLA_BR_*, so the
 * attributes are put by hand. */
static int linux_bridge_tune(net_ctx *ctx, int ifindex)
{
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_index = ifindex};
    struct nl_msg *msg = nlmsg_alloc_simple(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
    if (!msg)
        return -ENOMEM;
    int r = -EMSGSIZE;
    struct nlattr *info, *data;
    if (nlmsg_append(msg, &ifi, sizeof(ifi), NLMSG_ALIGNTO) < 0 ||
        !(info = nla_nest_start(msg, IFLA_LINKINFO)) ||
        nla_put_string(msg, IFLA_INFO_KIND, "bridge") < 0 ||
        !(data = nla_nest_start(msg, IFLA_INFO_DATA)) ||
        nla_put_u32(msg, IFLA_BR_FORWARD_DELAY, 0) < 0 ||
        nla_put_u8(msg, IFLA_BR_MCAST_SNOOPING, 0) < 0)
        goto out;
    nla_nest_end(msg, data);
    nla_nest_end(msg, info);
    r = net_nlerr(nl_send_sync(ctx->sock, msg)); /* frees msg */
    msg = NULL;
out:
    nlmsg_free(msg);
    return r;
}

static int linux_bridge_create(net_ctx *ctx, const char *bridge, unsigned mtu)
{
    AUTO_LINK *l = rtnl_link_bridge_alloc();
    rtnl_link_set_name(l, bridge);
    int r = rtnl_link_add(ctx->sock, l, NLM_F_CREATE | NLM_F_EXCL);
    if (r < 0)
        return net_nlerr(r);
    int idx = net_ifindex(ctx, bridge);
    r = idx < 0 ? idx : linux_bridge_tune(ctx, idx);
    if (r < 0) {
        log_debug("network: bridge %s: tuning failed: %s", bridge, strerror(-r));
        net_link_delete(ctx, bridge);
    }
    return r;
}

static int linux_bridge_destroy(net_ctx *ctx, const char *bridge)
{
    return net_link_delete(ctx, bridge);
}

static int linux_bridge_add_port(net_ctx *ctx, const char *bridge, const char *port)
{
    int br = net_ifindex(ctx, bridge);
    if (br < 0)
        return br;
    int p = net_ifindex(ctx, port);
    if (p < 0)
        return p;
    int r = rtnl_link_enslave_ifindex(ctx->sock, br, p);
    return r < 0 ? net_nlerr(r) : 0;
}

static int linux_bridge_remove_port(net_ctx *ctx, const char *bridge, const char *port)
{
    int p = net_ifindex(ctx, port);
    if (p < 0)
        return p;
    int r = rtnl_link_release_ifindex(ctx->sock, p);
    return r < 0 ? net_nlerr(r) : 0;
}

static int linux_vlan_create(net_ctx *ctx, const char *parent, unsigned tag, const char *name)
{
    int p = net_ifindex(ctx, parent);
    if (p < 0)
        return p;
    AUTO_LINK *l = rtnl_link_vlan_alloc();
    rtnl_link_set_name(l, name);
    rtnl_link_set_link(l, p);
    rtnl_link_vlan_set_id(l, (uint16_t)tag);
    int r = rtnl_link_add(ctx->sock, l, NLM_F_CREATE | NLM_F_EXCL);
    return r < 0 ? net_nlerr(r) : 0;
}

/* XenAPI bond mode -> Linux bonding mode (balance-slb has no kernel twin: balance-alb is the
 * closest "no switch support needed" mode, as XCP's bridge backend does). */
static const char *bond_linux_mode(const char *mode)
{
    if (!mode || !*mode || !strcmp(mode, "balance-slb"))
        return "balance-alb";
    if (!strcmp(mode, "active-backup"))
        return "active-backup";
    if (!strcmp(mode, "lacp"))
        return "802.3ad";
    return NULL;
}

static int linux_bond_create(net_ctx *ctx, const char *name, const char *const *members, size_t n,
                             const char *mode)
{
    const char *lm = bond_linux_mode(mode);
    if (!lm)
        return -EINVAL;
    AUTO_LINK *l = rtnl_link_bond_alloc();
    rtnl_link_set_name(l, name);
    int r = rtnl_link_add(ctx->sock, l, NLM_F_CREATE | NLM_F_EXCL);
    if (r < 0)
        return net_nlerr(r);
    /* libnl has no IFLA_BOND_MODE setter; sysfs takes the mode while the bond is empty. */
    AUTOFREE char *path = xasprintf("/sys/class/net/%s/bonding/mode", name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, lm, strlen(lm)) < 0)
            log_warn("network: bond %s: mode %s not set: %s", name, lm, strerror(errno));
        close(fd);
    }
    int bond = net_ifindex(ctx, name);
    for (size_t i = 0; i < n && bond >= 0; i++) {
        int m = net_ifindex(ctx, members[i]);
        if (m < 0) {
            r = m;
            break;
        }
        net_link_set_up(ctx, members[i], false);
        r = net_nlerr(rtnl_link_bond_enslave_ifindex(ctx->sock, bond, m));
        if (r < 0)
            break;
    }
    if (r < 0 || bond < 0) {
        net_link_delete(ctx, name);
        return r < 0 ? r : bond;
    }
    return net_link_set_up(ctx, name, true);
}

const struct net_bridge_ops net_bridge_linux = {
    .name = "bridge",
    .create = linux_bridge_create,
    .destroy = linux_bridge_destroy,
    .add_port = linux_bridge_add_port,
    .remove_port = linux_bridge_remove_port,
    .vlan_create = linux_vlan_create,
    .bond_create = linux_bond_create,
};

/* ---- Bridges ------------------------------------------------------------------------------ */

int net_bridge_ensure(net_ctx *ctx, const char *name, unsigned mtu)
{
    if (!net_ifname_valid(name))
        return -EINVAL;
    if (mtu < 68 || mtu > 65535)
        return -EINVAL;
    struct net_link_info li;
    int r = net_link_get(ctx, name, &li);
    if (r == 0 && strcmp(li.kind, "bridge") != 0)
        return -EEXIST; /* the name belongs to something else */
    if (r == -ENODEV) {
        r = ctx->br->create(ctx, name, mtu);
        if (r == -EEXIST) /* raced with another creator: reconcile below */
            r = 0;
    }
    if (r < 0)
        return r;
    r = net_link_set_mtu(ctx, name, mtu);
    if (r < 0)
        return r;
    return net_link_set_up(ctx, name, true);
}

static int strv_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int net_bridge_ports(net_ctx *ctx, const char *bridge, char ***ret, size_t *ret_n)
{
    int br = net_ifindex(ctx, bridge);
    if (br < 0)
        return br;
    struct net_link_info *all = NULL;
    size_t n = 0;
    int r = net_link_list(ctx, &all, &n);
    if (r < 0)
        return r;
    char **v = xcalloc(n + 1, sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].master_ifindex == br)
            v[k++] = xstrdup(all[i].name);
    free(all);
    qsort(v, k, sizeof(*v), strv_cmp);
    *ret = v;
    *ret_n = k;
    return 0;
}

void net_strv_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int net_bridge_destroy(net_ctx *ctx, const char *name, bool force)
{
    char **ports = NULL;
    size_t n = 0;
    int r = net_bridge_ports(ctx, name, &ports, &n);
    if (r < 0)
        return r;
    net_strv_free(ports, n);
    if (n > 0 && !force)
        return -EBUSY;
    return ctx->br->destroy(ctx, name);
}

int net_bridge_add_port(net_ctx *ctx, const char *bridge, const char *port)
{
    struct net_link_info b, p;
    int r = net_link_get(ctx, bridge, &b);
    if (r < 0)
        return r;
    if (strcmp(b.kind, "bridge") != 0)
        return -EINVAL;
    r = net_link_get(ctx, port, &p);
    if (r < 0)
        return r;
    if (p.master_ifindex == b.ifindex)
        return net_link_set_up(ctx, port, true); /* already there: reconcile */
    if (p.master_ifindex > 0)
        return -EBUSY;
    if (p.mtu != b.mtu && (r = net_link_set_mtu(ctx, port, b.mtu)) < 0)
        return r;
    r = ctx->br->add_port(ctx, bridge, port);
    if (r < 0)
        return r;
    /* Enslaving can lower the bridge's MTU to the port's; keep the network's. */
    struct net_link_info after;
    if (net_link_get(ctx, bridge, &after) == 0 && after.mtu != b.mtu)
        net_link_set_mtu(ctx, bridge, b.mtu);
    return net_link_set_up(ctx, port, true);
}

int net_bridge_remove_port(net_ctx *ctx, const char *bridge, const char *port)
{
    struct net_link_info p;
    int br = net_ifindex(ctx, bridge);
    if (br < 0)
        return br;
    int r = net_link_get(ctx, port, &p);
    if (r < 0)
        return r;
    if (p.master_ifindex != br)
        return -ENOENT;
    return ctx->br->remove_port(ctx, bridge, port);
}

int net_pif_plug(net_ctx *ctx, const char *bridge, const char *device, unsigned mtu)
{
    struct net_link_info d;
    int r = net_link_get(ctx, device, &d);
    if (r < 0)
        return r;
    r = net_bridge_ensure(ctx, bridge, mtu);
    if (r < 0)
        return r;
    return net_bridge_add_port(ctx, bridge, device);
}

int net_pif_unplug(net_ctx *ctx, const char *bridge, const char *device)
{
    int r = net_bridge_remove_port(ctx, bridge, device);
    if (r < 0 && r != -ENOENT && r != -ENODEV)
        return r;
    r = net_bridge_destroy(ctx, bridge, false);
    return (r == -EBUSY || r == -ENODEV) ? 0 : r;
}

int net_vlan_create(net_ctx *ctx, const char *parent, unsigned tag, char out[static NET_NAME_MAX])
{
    if (tag > 4094 || !net_ifname_valid(parent))
        return -EINVAL;
    int n = snprintf(out, NET_NAME_MAX, "%s.%u", parent, tag);
    if (n < 0 || n >= NET_NAME_MAX)
        return -ENAMETOOLONG;
    struct net_link_info li;
    if (net_link_get(ctx, out, &li) == 0)
        return strcmp(li.kind, "vlan") ? -EEXIST : 0;
    return ctx->br->vlan_create(ctx, parent, tag, out);
}

int net_bond_create(net_ctx *ctx, const char *name, const char *const *members, size_t n,
                    const char *mode)
{
    if (!net_ifname_valid(name))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!net_ifname_valid(members[i]))
            return -EINVAL;
    return ctx->br->bond_create(ctx, name, members, n, mode);
}

/* ---- VXLAN -------------------------------------------------------------------------------- */

static int parse_ip4(const char *s, struct nl_addr **ret)
{
    struct in_addr a;
    if (!s || inet_pton(AF_INET, s, &a) != 1)
        return -EINVAL;
    *ret = nl_addr_build(AF_INET, &a, sizeof(a));
    return 0;
}

static int fdb_append(net_ctx *ctx, int vx, const char *remote)
{
    AUTO_ADDR *dst = NULL;
    int r = parse_ip4(remote, &dst);
    if (r < 0)
        return r;
    static const uint8_t zero[6];
    AUTO_ADDR *ll = nl_addr_build(AF_LLC, zero, 6);
    struct rtnl_neigh *n = rtnl_neigh_alloc();
    /* The destination first: libnl refuses a dst whose family differs from one already set. */
    r = rtnl_neigh_set_dst(n, dst);
    rtnl_neigh_set_family(n, AF_BRIDGE);
    rtnl_neigh_set_ifindex(n, vx);
    rtnl_neigh_set_lladdr(n, ll);
    rtnl_neigh_set_flags(n, NTF_SELF);
    rtnl_neigh_set_state(n, NUD_NOARP | NUD_PERMANENT);
    if (r == 0)
        r = rtnl_neigh_add(ctx->sock, n, NLM_F_CREATE | NLM_F_APPEND);
    rtnl_neigh_put(n);
    return r < 0 ? net_nlerr(r) : 0;
}

int net_tunnel_ensure(net_ctx *ctx, const char *bridge, unsigned vni, const char *dev,
                      const char *local_ip, const char *const *remotes, size_t n_remotes,
                      unsigned mtu, char out[static NET_NAME_MAX])
{
    if (vni < 1 || vni > 16777215 || mtu < 68 || mtu > 65535)
        return -EINVAL;
    snprintf(out, NET_NAME_MAX, "nvx%u", vni);
    AUTO_ADDR *local = NULL;
    int r = parse_ip4(local_ip, &local);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n_remotes; i++) {
        struct in_addr a;
        if (!remotes[i] || inet_pton(AF_INET, remotes[i], &a) != 1)
            return -EINVAL;
    }
    int under = net_ifindex(ctx, dev);
    if (under < 0)
        return under;
    struct net_link_info li;
    r = net_link_get(ctx, out, &li);
    bool created = false;
    if (r == 0 && strcmp(li.kind, "vxlan") != 0)
        return -EEXIST;
    if (r == -ENODEV) {
        AUTO_LINK *l = rtnl_link_vxlan_alloc();
        rtnl_link_set_name(l, out);
        rtnl_link_vxlan_set_id(l, vni);
        rtnl_link_vxlan_set_local(l, local);
        rtnl_link_vxlan_set_link(l, (uint32_t)under);
        rtnl_link_vxlan_set_port(l, 4789);
        rtnl_link_set_mtu(l, mtu);
        r = net_nlerr(rtnl_link_add(ctx->sock, l, NLM_F_CREATE | NLM_F_EXCL));
        created = r == 0;
    }
    if (r < 0)
        return r;
    int vx = net_ifindex(ctx, out);
    for (size_t i = 0; i < n_remotes && r == 0 && vx > 0; i++)
        r = fdb_append(ctx, vx, remotes[i]);
    if (r == 0)
        r = net_link_set_mtu(ctx, out, mtu);
    if (r == 0)
        r = net_bridge_add_port(ctx, bridge, out);
    if (r < 0 && created)
        net_link_delete(ctx, out);
    return r;
}

/* ---- IP configuration --------------------------------------------------------------------- */

static int addrs_of(net_ctx *ctx, int ifindex, struct nl_cache **ret)
{
    int r = rtnl_addr_alloc_cache(ctx->sock, ret);
    return r < 0 ? net_nlerr(r) : 0;
}

int net_ip_flush(net_ctx *ctx, const char *dev)
{
    int idx = net_ifindex(ctx, dev);
    if (idx < 0)
        return idx;
    AUTO_CACHE *cache = NULL;
    int r = addrs_of(ctx, idx, &cache);
    if (r < 0)
        return r;
    for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
        struct rtnl_addr *a = (struct rtnl_addr *)o;
        if (rtnl_addr_get_ifindex(a) != idx || rtnl_addr_get_family(a) != AF_INET)
            continue;
        int d = rtnl_addr_delete(ctx->sock, a, 0);
        if (d < 0 && net_nlerr(d) != -EADDRNOTAVAIL)
            r = net_nlerr(d);
    }
    return r;
}

int net_ip_set_static(net_ctx *ctx, const char *dev, const char *ip, const char *netmask,
                      const char *gateway)
{
    AUTO_ADDR *local = NULL, *gw = NULL;
    int prefix = net_netmask_to_prefix(netmask);
    if (prefix < 0 || parse_ip4(ip, &local) < 0)
        return -EINVAL;
    if (gateway && *gateway && parse_ip4(gateway, &gw) < 0)
        return -EINVAL;
    int idx = net_ifindex(ctx, dev);
    if (idx < 0)
        return idx;
    int r = net_ip_flush(ctx, dev);
    if (r < 0)
        return r;
    nl_addr_set_prefixlen(local, prefix);
    struct rtnl_addr *a = rtnl_addr_alloc();
    rtnl_addr_set_ifindex(a, idx);
    rtnl_addr_set_family(a, AF_INET);
    rtnl_addr_set_local(a, local);
    rtnl_addr_set_prefixlen(a, prefix);
    r = net_nlerr(rtnl_addr_add(ctx->sock, a, NLM_F_CREATE | NLM_F_REPLACE));
    rtnl_addr_put(a);
    if (r < 0 || !gw)
        return r;
    struct rtnl_route *rt = rtnl_route_alloc();
    AUTO_ADDR *any = NULL;
    nl_addr_parse("0.0.0.0/0", AF_INET, &any);
    rtnl_route_set_family(rt, AF_INET);
    rtnl_route_set_dst(rt, any);
    rtnl_route_set_table(rt, RT_TABLE_MAIN);
    rtnl_route_set_protocol(rt, RTPROT_STATIC);
    rtnl_route_set_scope(rt, RT_SCOPE_UNIVERSE);
    struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
    rtnl_route_nh_set_gateway(nh, gw);
    rtnl_route_nh_set_ifindex(nh, idx);
    rtnl_route_add_nexthop(rt, nh); /* the route owns nh now */
    r = net_nlerr(rtnl_route_add(ctx->sock, rt, NLM_F_CREATE | NLM_F_REPLACE));
    rtnl_route_put(rt);
    return r;
}

int net_ip_list(net_ctx *ctx, const char *dev, char ***ret, size_t *ret_n)
{
    int idx = net_ifindex(ctx, dev);
    if (idx < 0)
        return idx;
    AUTO_CACHE *cache = NULL;
    int r = addrs_of(ctx, idx, &cache);
    if (r < 0)
        return r;
    size_t cap = (size_t)nl_cache_nitems(cache), n = 0;
    char **v = xcalloc(cap + 1, sizeof(*v));
    for (struct nl_object *o = nl_cache_get_first(cache); o && n < cap; o = nl_cache_get_next(o)) {
        struct rtnl_addr *a = (struct rtnl_addr *)o;
        struct nl_addr *l = rtnl_addr_get_local(a);
        if (rtnl_addr_get_ifindex(a) != idx || rtnl_addr_get_family(a) != AF_INET || !l)
            continue;
        char buf[INET_ADDRSTRLEN];
        if (!inet_ntop(AF_INET, nl_addr_get_binary_addr(l), buf, sizeof(buf)))
            continue;
        v[n++] = xasprintf("%s/%d", buf, rtnl_addr_get_prefixlen(a));
    }
    *ret = v;
    *ret_n = n;
    return 0;
}
