/* The nftables backend of network/: locking rules (bridge family) and the policing fallback of
 * QoS (netdev family), applied by `nft -f` with one atomic transaction per change. */
#define _GNU_SOURCE
#include "net-priv.h"

#include "log.h"
#include "mem.h"
#include "sbuf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int net_nft_run(const char *script)
{
    AUTOCLOSE int mfd = memfd_create("nuvem-nft", MFD_CLOEXEC);
    if (mfd < 0)
        return -errno;
    size_t len = strlen(script), off = 0;
    while (off < len) {
        ssize_t w = write(mfd, script + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        off += (size_t)w;
    }
    if (lseek(mfd, 0, SEEK_SET) < 0)
        return -errno;
    int errp[2];
    if (pipe2(errp, O_CLOEXEC) < 0)
        return -errno;
    const char *override = getenv("NUVEM_NFT"); /* read before fork: the child only execs */
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(errp[0]);
        close(errp[1]);
        return -e;
    }
    if (pid == 0) {
        dup2(mfd, 0);
        dup2(errp[1], 1);
        dup2(errp[1], 2);
        char *const argv[] = {(char *)"nft", (char *)"-f", (char *)"-", NULL};
        if (override && *override) {
            execv(override, argv);
            _exit(127);
        }
        execvp("nft", argv);
        execv("/usr/sbin/nft", argv);
        _exit(127);
    }
    close(errp[1]);
    char msg[2048];
    size_t got = 0;
    for (;;) {
        char buf[512];
        ssize_t r = read(errp[0], buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        size_t take = (size_t)r < sizeof(msg) - 1 - got ? (size_t)r : sizeof(msg) - 1 - got;
        memcpy(msg + got, buf, take);
        got += take;
    }
    msg[got] = '\0';
    close(errp[0]);
    int st = 0;
    pid_t w;
    while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    if (w < 0)
        return -errno; /* e.g. SIGCHLD ignored: the outcome is unknown, so not a success */
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        return -ENOEXEC;
    log_debug("network: nft failed: %s", msg);
    return -EIO;
}

/* ---- Locking ------------------------------------------------------------------------------ */

int net_lock_mode_parse(const char *s, enum net_lock_mode *ret)
{
    static const struct {
        const char *name;
        enum net_lock_mode mode;
    } modes[] = {{"network_default", NET_LOCK_NETWORK_DEFAULT},
                 {"locked", NET_LOCK_LOCKED},
                 {"unlocked", NET_LOCK_UNLOCKED},
                 {"disabled", NET_LOCK_DISABLED}};
    for (size_t i = 0; s && i < ARRAY_SIZE(modes); i++)
        if (!strcmp(s, modes[i].name)) {
            *ret = modes[i].mode;
            return 0;
        }
    return -EINVAL;
}

/* An address or CIDR prefix of family af, re-formatted canonically into out. */
static int addr_canon(int af, const char *s, char *out, size_t outsz)
{
    char host[INET6_ADDRSTRLEN + 8];
    if (!s || strlen(s) >= sizeof(host))
        return -EINVAL;
    snprintf(host, sizeof(host), "%s", s);
    char *slash = strchr(host, '/');
    long plen = -1;
    if (slash) {
        char *end;
        *slash = '\0';
        errno = 0;
        plen = strtol(slash + 1, &end, 10);
        if (errno || end == slash + 1 || *end || plen < 0 || plen > (af == AF_INET ? 32 : 128))
            return -EINVAL;
    }
    unsigned char buf[16];
    char txt[INET6_ADDRSTRLEN];
    if (inet_pton(af, host, buf) != 1 || !inet_ntop(af, buf, txt, sizeof(txt)))
        return -EINVAL;
    int n = plen >= 0 ? snprintf(out, outsz, "%s/%ld", txt, plen) : snprintf(out, outsz, "%s", txt);
    return n < 0 || (size_t)n >= outsz ? -EINVAL : 0;
}

/* "{ a, b }" from a validated address list, or -EINVAL. */
static int addr_set(sbuf *sb, int af, const char *const *v, size_t n)
{
    sbuf_puts(sb, "{ ");
    for (size_t i = 0; i < n; i++) {
        char a[INET6_ADDRSTRLEN + 8];
        int r = addr_canon(af, v[i], a, sizeof(a));
        if (r < 0)
            return r;
        sbuf_printf(sb, "%s%s", i ? ", " : "", a);
    }
    sbuf_puts(sb, " }");
    return 0;
}

static const char lock_header[] =
    "add table bridge nuvem\n"
    "add map bridge nuvem vif_in { type ifname : verdict; }\n"
    "add map bridge nuvem vif_out { type ifname : verdict; }\n"
    "add chain bridge nuvem pre { type filter hook prerouting priority -200; policy accept; }\n"
    "flush chain bridge nuvem pre\n"
    "add rule bridge nuvem pre iifname vmap @vif_in\n"
    "add chain bridge nuvem post { type filter hook postrouting priority -200; policy accept; }\n"
    "flush chain bridge nuvem post\n"
    "add rule bridge nuvem post oifname vmap @vif_out\n";

int net_lock_script(const char *vif, const struct net_lock *lock, char **ret)
{
    if (!net_ifname_valid(vif) || !lock)
        return -EINVAL;
    enum net_lock_mode mode = lock->mode;
    if (mode == NET_LOCK_NETWORK_DEFAULT)
        mode = lock->network_default == NET_LOCK_DISABLED ? NET_LOCK_DISABLED : NET_LOCK_UNLOCKED;
    if (mode != NET_LOCK_LOCKED && mode != NET_LOCK_UNLOCKED && mode != NET_LOCK_DISABLED)
        return -EINVAL;
    __attribute__((cleanup(sbuf_release))) sbuf sbv = SBUF_INIT;
    sbuf *sb = &sbv;
    sbuf_puts(sb, lock_header);
    sbuf_printf(sb,
                "add chain bridge nuvem in-%1$s\nflush chain bridge nuvem in-%1$s\n"
                "add chain bridge nuvem out-%1$s\nflush chain bridge nuvem out-%1$s\n"
                "add element bridge nuvem vif_in { \"%1$s\" : jump in-%1$s }\n"
                "add element bridge nuvem vif_out { \"%1$s\" : jump out-%1$s }\n",
                vif);
    if (mode == NET_LOCK_DISABLED) {
        sbuf_printf(sb, "add rule bridge nuvem in-%1$s drop\nadd rule bridge nuvem out-%1$s drop\n",
                    vif);
    } else if (mode == NET_LOCK_LOCKED) {
        char mac[18];
        net_mac_format(lock->mac, mac);
        const char *in = xasprintf("add rule bridge nuvem in-%s", vif);
        sbuf_printf(sb, "%s ether saddr != %s drop\n", in, mac);
        sbuf_printf(sb, "%s ether type arp arp saddr ether != %s drop\n", in, mac);
        /* DHCP client and RFC 5227 ARP probes come from 0.0.0.0. */
        sbuf_printf(sb, "%s ether type ip udp sport 68 udp dport 67 accept\n", in);
        sbuf_printf(sb, "%s ether type arp arp saddr ip 0.0.0.0 accept\n", in);
        int r = 0;
        if (lock->n_ipv4) {
            sbuf_printf(sb, "%s ether type arp arp operation { request, reply } arp saddr ip ", in);
            r = addr_set(sb, AF_INET, lock->ipv4, lock->n_ipv4);
            sbuf_printf(sb, " accept\n%s ether type ip ip saddr ", in);
            if (r == 0)
                r = addr_set(sb, AF_INET, lock->ipv4, lock->n_ipv4);
            sbuf_puts(sb, " accept\n");
        }
        if (r == 0 && lock->n_ipv6) {
            /* Duplicate address detection solicits from ::. */
            sbuf_printf(
                sb, "%s ether type ip6 ip6 saddr :: icmpv6 type nd-neighbor-solicit accept\n", in);
            sbuf_printf(sb, "%s ether type ip6 ip6 saddr ", in);
            r = addr_set(sb, AF_INET6, lock->ipv6, lock->n_ipv6);
            sbuf_puts(sb, " accept\n");
        }
        sbuf_printf(sb, "%s drop\n", in);
        free((char *)in);
        if (r < 0)
            return r;
    }
    *ret = sbuf_steal(sb, NULL);
    return 0;
}

int net_lock_apply(const char *vif, const struct net_lock *lock)
{
    AUTOFREE char *script = NULL;
    int r = net_lock_script(vif, lock, &script);
    if (r < 0)
        return r;
    r = net_nft_run(script);
    bool unlocked = lock->mode == NET_LOCK_UNLOCKED || (lock->mode == NET_LOCK_NETWORK_DEFAULT &&
                                                        lock->network_default != NET_LOCK_DISABLED);
    if (r == -ENOEXEC && unlocked) {
        log_debug("network: no nft; %s is unlocked, so there is nothing to enforce", vif);
        return 0;
    }
    return r;
}

int net_lock_remove(const char *vif)
{
    if (!net_ifname_valid(vif))
        return -EINVAL;
    /* Adding first makes the deletes valid whatever exists: one idempotent transaction. */
    AUTOFREE char *script =
        xasprintf("%1$s"
                  "add chain bridge nuvem in-%2$s\nadd chain bridge nuvem out-%2$s\n"
                  "add element bridge nuvem vif_in { \"%2$s\" : jump in-%2$s }\n"
                  "add element bridge nuvem vif_out { \"%2$s\" : jump out-%2$s }\n"
                  "delete element bridge nuvem vif_in { \"%2$s\" }\n"
                  "delete element bridge nuvem vif_out { \"%2$s\" }\n"
                  "delete chain bridge nuvem in-%2$s\ndelete chain bridge nuvem out-%2$s\n",
                  lock_header, vif);
    return net_nft_run(script);
}

/* ---- QoS policing fallback ---------------------------------------------------------------- */

int net_nft_police(const char *dev, uint64_t bytes_per_s, uint64_t burst)
{
    if (!net_ifname_valid(dev))
        return -EINVAL;
    AUTOFREE char *script = xasprintf(
        "add table netdev nuvem_qos\n"
        "add chain netdev nuvem_qos q-%1$s { type filter hook ingress device \"%1$s\" priority 0; "
        "policy accept; }\n"
        "flush chain netdev nuvem_qos q-%1$s\n"
        "add rule netdev nuvem_qos q-%1$s limit rate over %2$llu bytes/second burst %3$llu bytes "
        "drop\n",
        dev, (unsigned long long)bytes_per_s, (unsigned long long)burst);
    return net_nft_run(script);
}

int net_nft_police_remove(const char *dev)
{
    if (!net_ifname_valid(dev))
        return -EINVAL;
    AUTOFREE char *script = xasprintf("delete chain netdev nuvem_qos q-%s\n", dev);
    int r = net_nft_run(script);
    return r == -EIO ? 0 : r; /* there was none */
}
