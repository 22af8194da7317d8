/* VIF backends: persistent tap devices vif<domid>.<devid> on their network's bridge. */
#include "net-priv.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int net_tap_open(const char *name, bool persist, int *ret_fd)
{
    if (!net_ifname_valid(name))
        return -EINVAL;
    AUTOCLOSE int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        return -errno;
    int hdr = NET_VNET_HDR_LEN;
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0)
        return -errno;
    if (persist && ioctl(fd, TUNSETPERSIST, 1) < 0)
        return -errno;
    *ret_fd = TAKE_FD(fd);
    return 0;
}

int net_vif_unplug(net_ctx *ctx, const char *name)
{
    if (!net_ifname_valid(name))
        return -EINVAL;
    int r = net_lock_remove(name);
    if (r == -ENOEXEC)
        r = 0; /* without nft no rules were ever applied */
    int r2 = net_qos_clear(ctx, name);
    int r3 = net_link_delete(ctx, name);
    if (r3 == -ENODEV)
        r3 = 0;
    return r < 0 ? r : r2 < 0 ? r2 : r3;
}

int net_vif_plug(net_ctx *ctx, const struct net_vif_config *cfg, int *ret_fd)
{
    static const uint8_t host_mac[6] = {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff};
    if (!cfg || !net_ifname_valid(cfg->name) || !net_ifname_valid(cfg->bridge))
        return -EINVAL;
    struct net_link_info br, tap;
    int r = net_link_get(ctx, cfg->bridge, &br);
    if (r < 0)
        return r;
    if (strcmp(br.kind, "bridge") != 0)
        return -EINVAL;
    r = net_link_get(ctx, cfg->name, &tap);
    if (r == 0 && strcmp(tap.kind, "tun") != 0)
        return -EEXIST; /* the name belongs to something that is not a tap */
    if (r < 0 && r != -ENODEV)
        return r;
    bool created = r == -ENODEV;
    AUTOCLOSE int fd = -1;
    if (created || ret_fd) {
        r = net_tap_open(cfg->name, true, &fd);
        if (r < 0)
            return r;
    }
    if (!created)
        log_info("network: %s already exists; reconciling it", cfg->name);
    r = net_link_set_mac(ctx, cfg->name, host_mac);
    if (r == 0)
        r = net_bridge_add_port(ctx, cfg->bridge, cfg->name);
    if (r == 0 && cfg->mtu)
        r = net_link_set_mtu(ctx, cfg->name, cfg->mtu);
    if (r == 0)
        r = net_qos_apply(ctx, cfg->name, cfg->qos_kbps, 0, NULL);
    if (r == 0)
        r = net_lock_apply(cfg->name, &cfg->lock);
    if (r == 0)
        r = net_link_set_up(ctx, cfg->name, true);
    if (r < 0) {
        if (created)
            net_vif_unplug(ctx, cfg->name);
        return r;
    }
    if (ret_fd)
        *ret_fd = TAKE_FD(fd);
    return 0;
}
