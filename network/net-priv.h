/* Internals shared by the network/ sources (not installed; a test seam only). */
#pragma once

#include "net.h"

#include <netlink/netlink.h>
#include <netlink/route/link.h>

struct net_ctx {
    struct nl_sock *sock;
    const struct net_bridge_ops *br;
};

/* libnl's -NLE_* -> -errno. */
int net_nlerr(int nle);
/* Looks a link up by name in the kernel; *ret to rtnl_link_put. -ENODEV if absent. */
int net_link_lookup(net_ctx *ctx, const char *name, struct rtnl_link **ret);
/* ifindex of `name`, or -ENODEV/-EINVAL. */
int net_ifindex(net_ctx *ctx, const char *name);
/* Runs `nft -f -` with `script` on stdin in the caller's namespace. Returns 0, -ENOEXEC if nft
 * can't be run, -EIO if it rejected the script (its message is logged at debug level). */
int net_nft_run(const char *script);
/* Polices ingress of `dev` to bytes_per_s (excess dropped) with an nftables netdev chain. */
int net_nft_police(const char *dev, uint64_t bytes_per_s, uint64_t burst);
/* Removes that policing (fine if there is none). */
int net_nft_police_remove(const char *dev);
