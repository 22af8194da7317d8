/* network/: XenAPI networks on Linux — bridges, tap VIFs, VXLAN, tc QoS and nftables locking.
 *
 * No DB, no HTTP: xapid decides, this library applies. Every call works in the network
 * namespace of the calling thread (netlink sockets are bound to it when the context is
 * opened; the `nft` child inherits it). Functions return 0 or a negative errno and log
 * nothing but debug detail; net_xerr() turns a result into the XenAPI error to report.
 * Calls that create things are idempotent so a restarted daemon reconciles what it finds
 * instead of duplicating it. A context is not thread-safe: use one per thread. */
#pragma once

#include "cleanup.h"
#include "err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Interface name buffer size (IFNAMSIZ: 15 characters + NUL). */
#define NET_NAME_MAX 16
/* The virtio-net header each tap frame carries (struct virtio_net_hdr_mrg_rxbuf). */
#define NET_VNET_HDR_LEN 12
/* Default MTU of a XenAPI network. */
#define NET_DEFAULT_MTU 1500

typedef struct net_ctx net_ctx;

/* ---- Context and backends ---------------------------------------------------------------- */

/* A bridge backend: how a network's switch is built. The Linux-bridge one is the only one
 * compiled in; an Open vSwitch one would fill the same table. Names are borrowed. */
struct net_bridge_ops {
    const char *name;
    int (*create)(net_ctx *ctx, const char *bridge, unsigned mtu);
    int (*destroy)(net_ctx *ctx, const char *bridge);
    int (*add_port)(net_ctx *ctx, const char *bridge, const char *port);
    int (*remove_port)(net_ctx *ctx, const char *bridge, const char *port);
    /* VLAN sub-interface `name` of `parent` with 802.1Q `tag`. */
    int (*vlan_create)(net_ctx *ctx, const char *parent, unsigned tag, const char *name);
    /* Bond `name` over `members` in XenAPI `mode` (balance-slb, active-backup, lacp). */
    int (*bond_create)(net_ctx *ctx, const char *name, const char *const *members, size_t n,
                       const char *mode);
};
extern const struct net_bridge_ops net_bridge_linux;

/* Opens a routing-netlink context in the caller's network namespace with the Linux-bridge
 * backend. Returns 0 and *ret (free with net_ctx_free), or -errno. */
int net_ctx_open(net_ctx **ret);
/* Closes a context; NULL is fine. */
void net_ctx_free(net_ctx *ctx);
DEFINE_FREEP(net_ctx)
/* Replaces the bridge backend (borrowed; must outlive ctx). */
void net_ctx_set_backend(net_ctx *ctx, const struct net_bridge_ops *ops);

/* Maps a result of this library to a XenAPI error (caller frees), NULL for rc >= 0:
 * -EEXIST -> BRIDGE_NAME_EXISTS [what], -EBUSY -> DEVICE_ALREADY_ATTACHED [what],
 * -EINVAL/-ENAMETOOLONG/-ERANGE -> INVALID_VALUE [op, what] (so `op` should name the field),
 * -EOPNOTSUPP -> NOT_IMPLEMENTED [op], anything else (-ENODEV included: XAPI's
 * PIF_NOT_PRESENT needs host and network refs, which xapid adds itself) -> INTERNAL_ERROR. */
xerr *net_xerr(int rc, const char *op, const char *what);

/* ---- Names (pure) ------------------------------------------------------------------------- */

/* True if `name` is a usable kernel interface name: 1..15 characters from [A-Za-z0-9._-],
 * not "." or "..". Only such names ever reach netlink or nft. */
bool net_ifname_valid(const char *name);
/* Checks a bridge name given by a user to network.create: a valid ifname not starting with
 * a reserved prefix (xen, xapi, vif, tap, eth). Returns 0, -EINVAL or -ENAMETOOLONG. */
int net_bridge_name_check_user(const char *name);
/* Bridge of a physical PIF's network: ethN -> xenbrN, anything else -> br<device>.
 * Returns 0 or -ENAMETOOLONG/-EINVAL. */
int net_pif_bridge_name(const char *device, char out[static NET_NAME_MAX]);
/* Dom0 name of a VIF: vif<domid>.<devid>. Returns 0, -EINVAL (negative ids) or -ENAMETOOLONG. */
int net_vif_name(long domid, long devid, char out[static NET_NAME_MAX]);
/* Picks the first xapiN that is neither in `taken` (names the DB already uses; may be NULL
 * with n_taken 0) nor present in the kernel. Returns 0 or -ENOSPC. */
int net_bridge_pick_internal(net_ctx *ctx, const char *const *taken, size_t n_taken,
                             char out[static NET_NAME_MAX]);
/* Parses "aa:bb:cc:dd:ee:ff" (either case). Returns 0 or -EINVAL. */
int net_mac_parse(const char *s, uint8_t mac[static 6]);
/* Formats lowercase "aa:bb:cc:dd:ee:ff". */
void net_mac_format(const uint8_t mac[static 6], char out[static 18]);
/* A random locally administered unicast MAC (XAPI's VIF MAC autogeneration). Uniqueness in the
 * pool is the caller's check. */
void net_mac_random(uint8_t mac[static 6]);
/* Dotted netmask -> prefix length (contiguous masks only), or -EINVAL. */
int net_netmask_to_prefix(const char *netmask);

/* ---- Links -------------------------------------------------------------------------------- */

struct net_link_info {
    char name[NET_NAME_MAX];
    int ifindex;
    uint8_t mac[6];
    unsigned mtu;
    bool admin_up; /* IFF_UP */
    bool carrier;  /* lower layer up: a cable, a veth peer that is up, a tap with a reader */
    char kind[NET_NAME_MAX];   /* rtnl kind: "bridge", "tun", "veth", "vxlan", "" for a NIC */
    int master_ifindex;        /* 0 if not enslaved */
    char master[NET_NAME_MAX]; /* "" if not enslaved */
};

/* Reads one interface. Returns 0, -ENODEV if absent, -EINVAL for a bad name. */
int net_link_get(net_ctx *ctx, const char *name, struct net_link_info *ret);
/* All interfaces (caller frees *ret with free()). Returns 0 or -errno. */
int net_link_list(net_ctx *ctx, struct net_link_info **ret, size_t *ret_n);
/* PIF.scan: the interfaces that can be physical PIFs: Ethernet devices that are real NICs
 * (no rtnl kind) or veth (the "cable" of test hosts), excluding our own bridges, VIFs,
 * tunnels and ifbs. Caller frees *ret. */
int net_pif_scan(net_ctx *ctx, struct net_link_info **ret, size_t *ret_n);
/* Kernel counters of an interface. For a VIF's tap, tx is toward the VM and rx from it. */
struct net_link_stats {
    uint64_t rx_bytes, tx_bytes, rx_packets, tx_packets, rx_dropped, tx_dropped;
};
/* VIF metrics: reads the counters of `name`. Returns 0 or -ENODEV. */
int net_link_get_stats(net_ctx *ctx, const char *name, struct net_link_stats *ret);
/* Sets the MTU (68..65535). Returns 0, -ENODEV, -EINVAL. */
int net_link_set_mtu(net_ctx *ctx, const char *name, unsigned mtu);
/* Brings an interface up or down. */
int net_link_set_up(net_ctx *ctx, const char *name, bool up);
/* Sets the hardware address. */
int net_link_set_mac(net_ctx *ctx, const char *name, const uint8_t mac[static 6]);
/* Deletes an interface; -ENODEV if absent. */
int net_link_delete(net_ctx *ctx, const char *name);
/* Moves an interface into the network namespace open at `netns_fd` (test hosts). */
int net_link_move_to_netns(net_ctx *ctx, const char *name, int netns_fd);
/* A veth pair a <-> b (the "cable" between test hosts), both down. -EEXIST if a name exists. */
int net_veth_create(net_ctx *ctx, const char *a, const char *b);

/* ---- Bridges (through the context's backend) ---------------------------------------------- */

/* Creates bridge `name` with `mtu` and brings it up; if a bridge of that name exists it is
 * reconciled (MTU, up) and 0 is returned. -EEXIST if the name belongs to a non-bridge. */
int net_bridge_ensure(net_ctx *ctx, const char *name, unsigned mtu);
/* Deletes a bridge. -EBUSY while it has ports unless `force`; -ENODEV if absent. */
int net_bridge_destroy(net_ctx *ctx, const char *name, bool force);
/* Enslaves `port` to `bridge` with the bridge's MTU and brings it up. Idempotent;
 * -EBUSY if the port belongs to another master, -ENODEV if either is absent. */
int net_bridge_add_port(net_ctx *ctx, const char *bridge, const char *port);
/* Releases `port` from `bridge`; -ENOENT if it is not a port of that bridge. */
int net_bridge_remove_port(net_ctx *ctx, const char *bridge, const char *port);
/* Names of the ports of `bridge`, sorted (caller frees with net_strv_free). */
int net_bridge_ports(net_ctx *ctx, const char *bridge, char ***ret, size_t *ret_n);
/* Frees a string vector from this library; NULL is fine. */
void net_strv_free(char **v, size_t n);

/* PIF.plug for a physical PIF: bridge `bridge` (ensured, MTU `mtu`) with `device` enslaved at
 * the same MTU. Idempotent. -ENODEV if the device is absent (PIF_NOT_PRESENT). */
int net_pif_plug(net_ctx *ctx, const char *bridge, const char *device, unsigned mtu);
/* PIF.unplug: releases `device` from `bridge` and deletes the bridge if nothing else is on it. */
int net_pif_unplug(net_ctx *ctx, const char *bridge, const char *device);

/* VLAN.create data plane: `<parent>.<tag>` (name written to out) via the backend. tag 0..4094.
 * -EOPNOTSUPP where the kernel lacks 8021q. */
int net_vlan_create(net_ctx *ctx, const char *parent, unsigned tag, char out[static NET_NAME_MAX]);
/* Bond.create data plane via the backend; -EOPNOTSUPP where the kernel lacks bonding. */
int net_bond_create(net_ctx *ctx, const char *name, const char *const *members, size_t n,
                    const char *mode);

/* Cross-host private network: a VXLAN device "nvx<vni>" (name to out) with VNI `vni`
 * (1..16777215) on underlay `dev` from `local_ip` to every address in `remotes`, enslaved to
 * `bridge` with MTU `mtu` (the underlay's MTU minus 50 at most). Re-running it adds missing
 * remotes; the device is not duplicated. */
int net_tunnel_ensure(net_ctx *ctx, const char *bridge, unsigned vni, const char *dev,
                      const char *local_ip, const char *const *remotes, size_t n_remotes,
                      unsigned mtu, char out[static NET_NAME_MAX]);

/* ---- IP configuration (PIF.reconfigure_ip, management on the bridge) ---------------------- */

/* Static IPv4: replaces the IPv4 addresses of `dev` with ip/netmask and, if `gateway` is
 * non-empty, sets the default route through it. Returns 0, -EINVAL for bad addresses. */
int net_ip_set_static(net_ctx *ctx, const char *dev, const char *ip, const char *netmask,
                      const char *gateway);
/* Mode None: removes every IPv4 address of `dev`. */
int net_ip_flush(net_ctx *ctx, const char *dev);
/* The IPv4 addresses of `dev` as "a.b.c.d/len" (caller frees with net_strv_free). */
int net_ip_list(net_ctx *ctx, const char *dev, char ***ret, size_t *ret_n);

/* A DHCP lease as applied. */
struct net_dhcp_lease {
    char ip[16], netmask[16], gateway[16], dns[64];
};
/* Mode DHCP: asks for one lease on `dev` with busybox udhcpc (`tries` discovers, one second
 * apart; bounded in time) and applies it like a static configuration. No renewal: the lease
 * is re-requested by calling again. Returns 0 and *ret, -ENOEXEC without busybox,
 * -ETIMEDOUT without a lease, -EPROTO for an unusable one. */
int net_ip_dhcp(net_ctx *ctx, const char *dev, int tries, struct net_dhcp_lease *ret);

/* Mode DHCP with renewal: starts a busybox udhcpc daemon for `dev` (any earlier one stopped)
 * that keeps the lease renewed, waits up to wait_s seconds for the first lease and applies it.
 * The daemon is detached (it outlives the caller, like a tap) and keeps its files in `dir`:
 * <dev>.pid, <dev>.sh (its event script), <dev>.lease (the current lease, empty once lost).
 * Returns 0 and *ret, -ENOEXEC without busybox, -ETIMEDOUT without a lease (the daemon is then
 * stopped), -EPROTO for an unusable lease. */
int net_dhcp_start(net_ctx *ctx, const char *dev, const char *dir, int wait_s,
                   struct net_dhcp_lease *ret);
/* The daemon's current lease, without applying it: 1 and *ret, 0 if the lease was lost
 * (*ret zeroed), -ENOENT before the first one, -EPROTO for an unusable one, -ESRCH if no
 * daemon runs for `dev`. The caller applies changes (net_ip_set_static / net_ip_flush). */
int net_dhcp_poll(const char *dir, const char *dev, struct net_dhcp_lease *ret);
/* True while our udhcpc for `dev` runs (checked by pid and command line). */
bool net_dhcp_running(const char *dir, const char *dev);
/* Stops the daemon of `dev` (if any; the address stays) and removes its files. */
int net_dhcp_stop(const char *dir, const char *dev);

/* ---- Taps and VIFs ------------------------------------------------------------------------ */

/* Opens (creating if needed) tap `name` with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR and a
 * NET_VNET_HDR_LEN header, O_CLOEXEC. With `persist` the tap survives the fd (so a daemon
 * restart finds it). Returns 0 and *ret_fd, or -errno (-EBUSY if another process holds a
 * tap of that name that is not multi-queue compatible). */
int net_tap_open(const char *name, bool persist, int *ret_fd);

enum net_lock_mode {
    NET_LOCK_NETWORK_DEFAULT = 0,
    NET_LOCK_LOCKED,
    NET_LOCK_UNLOCKED,
    NET_LOCK_DISABLED,
};
/* Parses a XenAPI locking mode string; -EINVAL if unknown. */
int net_lock_mode_parse(const char *s, enum net_lock_mode *ret);

/* Locking of a VIF. Everything is borrowed. */
struct net_lock {
    enum net_lock_mode mode;
    enum net_lock_mode network_default; /* network.default_locking_mode: unlocked|disabled */
    uint8_t mac[6];                     /* the VIF's MAC, the only source MAC when locked */
    const char *const *ipv4;            /* ipv4_allowed: addresses or CIDR prefixes */
    size_t n_ipv4;
    const char *const *ipv6; /* ipv6_allowed */
    size_t n_ipv6;
};

/* The nftables script that gives `vif` the locking `lock` (caller frees). Pure; validates
 * every name and address. Returns 0 or -EINVAL. */
int net_lock_script(const char *vif, const struct net_lock *lock, char **ret);
/* Applies locking to `vif` atomically (one nft transaction) in the bridge family table
 * "nuvem": locked = only the VIF's MAC and allowed IPs (ARP, DHCP client, IPv6 DAD allowed),
 * unlocked = everything, disabled = nothing in either direction. -ENOEXEC without `nft`
 * (except for an unlocked VIF: nothing to enforce, 0). */
int net_lock_apply(const char *vif, const struct net_lock *lock);
/* Removes the rules of `vif` (fine if there are none). */
int net_lock_remove(const char *vif);

/* How traffic from the VM is limited. */
enum net_qos_from_vm {
    NET_QOS_NONE = 0, /* no limit configured */
    NET_QOS_IFB,      /* ingress redirected to an ifb with a tbf: shaped (queued) */
    NET_QOS_POLICE,   /* no ifb in this kernel: policed (excess dropped) by nftables */
};
/* Flags for net_qos_apply. */
#define NET_QOS_NO_IFB 0x1u /* pretend ifb is missing (tests the policing fallback) */

/* XenAPI qos_algorithm_type/params -> KiB/s. Type "" means no QoS (*ret 0, returns 0);
 * "ratelimit" needs a positive integer `kbps`; anything else is -EINVAL (XAPI warns and
 * ignores it: the caller decides). */
int net_qos_parse(const char *type, const char *kbps, uint64_t *ret_kbps);
/* Limits `dev` (a VIF) to kbps KiB/s (kbps·1024 bytes/s, as xenopsd) both ways: a tbf root
 * qdisc toward the VM, and from the VM an ingress redirect through ifb "nqi<ifindex>" with a
 * tbf, or nftables policing if ifb is missing (*ret_mode says which; may be NULL).
 * kbps 0 removes the limits. Idempotent. */
int net_qos_apply(net_ctx *ctx, const char *dev, uint64_t kbps, unsigned flags,
                  enum net_qos_from_vm *ret_mode);
/* Removes every limit from `dev` (and its ifb). Fine if there are none. */
int net_qos_clear(net_ctx *ctx, const char *dev);

/* Everything needed to plug a VIF. Borrowed. */
struct net_vif_config {
    const char *name;   /* vif<domid>.<devid> */
    const char *bridge; /* the network's bridge, which must exist */
    unsigned mtu;       /* VIF MTU (the network's, or other_config:mtu) */
    uint64_t qos_kbps;  /* 0 = no rate limit */
    struct net_lock lock;
};
/* VIF.plug: creates (or re-attaches to, after a daemon restart) persistent tap cfg->name,
 * sets MTU and the fe:ff:ff:ff:ff:ff host-side MAC, enslaves it, applies QoS and locking and
 * brings it up. If ret_fd is non-NULL it receives an fd on the tap for the VMM (caller
 * closes); otherwise the VMM opens the tap by name. On failure nothing new is left behind. */
int net_vif_plug(net_ctx *ctx, const struct net_vif_config *cfg, int *ret_fd);
/* VIF.unplug / VM stop: removes locking, QoS (and the ifb) and the tap. Idempotent. */
int net_vif_unplug(net_ctx *ctx, const char *name);
