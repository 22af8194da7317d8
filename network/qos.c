/* QoS of VIFs: XenAPI "ratelimit" as tc tbf toward the VM and ifb-redirected tbf from it. */
#include "net-priv.h"

#include "log.h"
#include "mem.h"

#include <errno.h>
#include <limits.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/tc_act/tc_mirred.h>
#include <netlink/route/act/mirred.h>
#include <netlink/route/action.h>
#include <netlink/route/classifier.h>
#include <netlink/route/cls/u32.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/tbf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef ETH_P_ALL
#define ETH_P_ALL 0x0003
#endif

int net_qos_parse(const char *type, const char *kbps, uint64_t *ret_kbps)
{
    if (!type || !*type) {
        *ret_kbps = 0;
        return 0;
    }
    if (strcmp(type, "ratelimit") != 0 || !kbps || !*kbps)
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(kbps, &end, 10);
    /* Capped so that kbps*1024 bytes/s fits tc's 32-bit rate. */
    if (errno || *end || kbps[0] == '-' || v == 0 || v > (unsigned long long)INT_MAX / 1024)
        return -EINVAL;
    *ret_kbps = v;
    return 0;
}

/* Bucket of one 50 ms timeslice (xenopsd's default), at least a few full frames. */
static int tbf_burst(int rate)
{
    int b = rate / 20;
    return b < 16384 ? 16384 : b;
}

static int tbf_set(net_ctx *ctx, int ifindex, int rate)
{
    struct rtnl_qdisc *q = rtnl_qdisc_alloc();
    rtnl_tc_set_ifindex(TC_CAST(q), ifindex);
    rtnl_tc_set_parent(TC_CAST(q), TC_H_ROOT);
    rtnl_tc_set_handle(TC_CAST(q), TC_HANDLE(1, 0));
    int r = rtnl_tc_set_kind(TC_CAST(q), "tbf");
    if (r == 0) {
        int burst = tbf_burst(rate);
        rtnl_qdisc_tbf_set_rate(q, rate, burst, 0); /* before the limit: libnl needs the rate */
        rtnl_qdisc_tbf_set_limit(q, burst + rate / 10);
        r = rtnl_qdisc_add(ctx->sock, q, NLM_F_CREATE | NLM_F_REPLACE);
    }
    rtnl_qdisc_put(q);
    return net_nlerr(r);
}

static int qdisc_del(net_ctx *ctx, int ifindex, uint32_t parent, const char *kind)
{
    struct rtnl_qdisc *q = rtnl_qdisc_alloc();
    rtnl_tc_set_ifindex(TC_CAST(q), ifindex);
    rtnl_tc_set_parent(TC_CAST(q), parent);
    if (kind)
        rtnl_tc_set_kind(TC_CAST(q), kind);
    int r = net_nlerr(rtnl_qdisc_delete(ctx->sock, q));
    rtnl_qdisc_put(q);
    /* Deleting a qdisc that isn't there: ENOENT/EINVAL from the kernel. */
    return (r == -ENODEV || r == -EINVAL || r == -EIO || r == -ENOENT) ? 0 : r;
}

static int ingress_redirect(net_ctx *ctx, int ifindex, int ifb)
{
    qdisc_del(ctx, ifindex, TC_H_INGRESS, "ingress"); /* drops old filters: no duplicates */
    struct rtnl_qdisc *q = rtnl_qdisc_alloc();
    rtnl_tc_set_ifindex(TC_CAST(q), ifindex);
    rtnl_tc_set_parent(TC_CAST(q), TC_H_INGRESS);
    rtnl_tc_set_handle(TC_CAST(q), 0xffff0000u);
    int r = rtnl_tc_set_kind(TC_CAST(q), "ingress");
    if (r == 0)
        r = rtnl_qdisc_add(ctx->sock, q, NLM_F_CREATE);
    rtnl_qdisc_put(q);
    if (r < 0)
        return net_nlerr(r);

    struct rtnl_cls *cls = rtnl_cls_alloc();
    struct rtnl_act *act = rtnl_act_alloc();
    rtnl_tc_set_ifindex(TC_CAST(cls), ifindex);
    rtnl_tc_set_parent(TC_CAST(cls), 0xffff0000u);
    rtnl_cls_set_prio(cls, 1);
    rtnl_cls_set_protocol(cls, ETH_P_ALL);
    r = rtnl_tc_set_kind(TC_CAST(cls), "u32");
    if (r == 0)
        r = rtnl_u32_add_key_uint32(cls, 0, 0, 0, 0); /* match every packet */
    if (r == 0)
        r = rtnl_u32_set_cls_terminal(cls); /* without it the match classifies nothing */
    if (r == 0)
        r = rtnl_tc_set_kind(TC_CAST(act), "mirred");
    if (r == 0) {
        rtnl_mirred_set_action(act, TCA_EGRESS_REDIR);
        rtnl_mirred_set_policy(act, TC_ACT_STOLEN);
        rtnl_mirred_set_ifindex(act, (uint32_t)ifb);
        r = rtnl_u32_add_action(cls, act);
    }
    if (r == 0)
        r = rtnl_cls_add(ctx->sock, cls, NLM_F_CREATE);
    rtnl_act_put(act);
    rtnl_cls_put(cls);
    return net_nlerr(r);
}

static void ifb_name(int ifindex, char out[static NET_NAME_MAX])
{
    snprintf(out, NET_NAME_MAX, "nqi%d", ifindex);
}

/* Creates (or finds) the ifb of `ifindex`, up. Returns its ifindex or -errno. */
static int ifb_ensure(net_ctx *ctx, int ifindex)
{
    char name[NET_NAME_MAX];
    ifb_name(ifindex, name);
    struct net_link_info li;
    int r = net_link_get(ctx, name, &li);
    if (r == 0 && strcmp(li.kind, "ifb") != 0)
        return -EEXIST;
    if (r == -ENODEV) {
        struct rtnl_link *l = rtnl_link_alloc();
        rtnl_link_set_name(l, name);
        r = rtnl_link_set_type(l, "ifb");
        if (r == 0)
            r = rtnl_link_add(ctx->sock, l, NLM_F_CREATE | NLM_F_EXCL);
        rtnl_link_put(l);
        r = net_nlerr(r);
    }
    if (r < 0)
        return r;
    r = net_link_set_up(ctx, name, true);
    return r < 0 ? r : net_ifindex(ctx, name);
}

int net_qos_clear(net_ctx *ctx, const char *dev)
{
    int idx = net_ifindex(ctx, dev);
    if (idx < 0)
        return idx == -ENODEV ? 0 : idx;
    int r = qdisc_del(ctx, idx, TC_H_ROOT, NULL);
    int r2 = qdisc_del(ctx, idx, TC_H_INGRESS, "ingress");
    char ifb[NET_NAME_MAX];
    ifb_name(idx, ifb);
    int r3 = net_link_delete(ctx, ifb);
    int r4 = net_nft_police_remove(dev);
    if (r4 == -ENOEXEC)
        r4 = 0; /* no nft: no policing was ever set */
    return r < 0 ? r : r2 < 0 ? r2 : (r3 < 0 && r3 != -ENODEV) ? r3 : r4;
}

int net_qos_apply(net_ctx *ctx, const char *dev, uint64_t kbps, unsigned flags,
                  enum net_qos_from_vm *ret_mode)
{
    if (kbps > (uint64_t)INT_MAX / 1024)
        return -EINVAL;
    int idx = net_ifindex(ctx, dev);
    if (idx < 0)
        return idx;
    if (kbps == 0) {
        if (ret_mode)
            *ret_mode = NET_QOS_NONE;
        return net_qos_clear(ctx, dev);
    }
    int rate = (int)(kbps * 1024);
    int r = tbf_set(ctx, idx, rate); /* toward the VM: the tap's transmit side */
    if (r < 0)
        return r;
    int ifb = (flags & NET_QOS_NO_IFB) ? -EOPNOTSUPP : ifb_ensure(ctx, idx);
    if (ifb >= 0) {
        r = tbf_set(ctx, ifb, rate);
        if (r == 0)
            r = ingress_redirect(ctx, idx, ifb);
        if (r == 0) {
            net_nft_police_remove(dev);
            if (ret_mode)
                *ret_mode = NET_QOS_IFB;
        }
        return r;
    }
    if (ifb != -EOPNOTSUPP)
        return ifb;
    log_warn("network: %s: no ifb in this kernel; traffic from the VM is policed (dropped above "
             "%llu KiB/s), not shaped",
             dev, (unsigned long long)kbps);
    r = net_nft_police(dev, (uint64_t)rate, (uint64_t)tbf_burst(rate));
    if (r == 0 && ret_mode)
        *ret_mode = NET_QOS_POLICE;
    return r;
}
