/* DHCP for PIF.reconfigure_ip: one lease fetched by busybox udhcpc, applied through netlink. */
#define _GNU_SOURCE
#include "net-priv.h"

#include "log.h"
#include "mem.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* udhcpc runs this at each event; on a lease it writes the lease next to itself. */
static const char lease_script[] = "#!/bin/sh\n"
                                   "case \"$1\" in bound|renew) ;; *) exit 0 ;; esac\n"
                                   "printf '%s\\n%s\\n%s\\n%s\\n' \"$ip\" \"$subnet\" "
                                   "\"${router%% *}\" \"$dns\" > \"$0.lease\"\n";

static int write_all(const char *path, const char *data, int mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    size_t len = strlen(data);
    ssize_t w = write(fd, data, len);
    int r = (w == (ssize_t)len) ? 0 : -EIO;
    close(fd);
    return r;
}

static bool ip4(const char *s)
{
    struct in_addr a;
    return inet_pton(AF_INET, s, &a) == 1;
}

/* Waits for our child up to `secs`, then kills it. Returns its exit status or -errno. */
static int wait_bounded(pid_t pid, double secs)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int st = 0;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -EINTR;
        if (w < 0 && errno != EINTR)
            return -errno;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 >
            secs) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -ETIMEDOUT;
        }
        usleep(20000);
    }
}

int net_ip_dhcp(net_ctx *ctx, const char *dev, int tries, struct net_dhcp_lease *ret)
{
    if (!net_ifname_valid(dev) || tries < 1 || tries > 30)
        return -EINVAL;
    int r = net_ifindex(ctx, dev);
    if (r < 0)
        return r;
    if ((r = net_link_set_up(ctx, dev, true)) < 0)
        return r;
    const char *busybox = getenv("NUVEM_BUSYBOX");
    if (!busybox || !*busybox)
        busybox = access("/bin/busybox", X_OK) == 0 ? "/bin/busybox" : "/usr/bin/busybox";
    if (access(busybox, X_OK) != 0)
        return -ENOEXEC;
    char dir[] = "/tmp/nuvem-dhcp-XXXXXX";
    if (!mkdtemp(dir))
        return -errno;
    AUTOFREE char *script = xasprintf("%s/lease.sh", dir);
    AUTOFREE char *lease = xasprintf("%s/lease.sh.lease", dir);
    r = write_all(script, lease_script, 0700);
    if (r == 0) {
        char ntries[16];
        snprintf(ntries, sizeof(ntries), "%d", tries);
        char *const argv[] = {
            (char *)"udhcpc", (char *)"-f", (char *)"-q", (char *)"-n", (char *)"-t",
            ntries,           (char *)"-T", (char *)"1",  (char *)"-i", (char *)dev,
            (char *)"-s",     script,       NULL};
        pid_t pid = fork();
        if (pid == 0) {
            int null = open("/dev/null", O_RDWR | O_CLOEXEC);
            if (null >= 0) {
                dup2(null, 0);
                dup2(null, 1);
                dup2(null, 2);
            }
            execv(busybox, argv);
            _exit(127);
        }
        r = pid < 0 ? -errno : wait_bounded(pid, tries * 1.5 + 3);
        if (r == 127)
            r = -ENOEXEC;
        else if (r > 0)
            r = -ETIMEDOUT; /* udhcpc -n: no lease */
    }
    char *data = NULL;
    if (r == 0 && read_file(lease, &data, NULL) < 0)
        r = -ETIMEDOUT;
    unlink(lease);
    unlink(script);
    rmdir(dir);
    if (r < 0)
        return r;
    memset(ret, 0, sizeof(*ret));
    char *save = NULL, *line = strtok_r(data, "\n", &save);
    char *fields[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4 && line; i++, line = strtok_r(NULL, "\n", &save))
        fields[i] = line;
    if (fields[0] && ip4(fields[0]))
        snprintf(ret->ip, sizeof(ret->ip), "%s", fields[0]);
    if (fields[1] && net_netmask_to_prefix(fields[1]) >= 0)
        snprintf(ret->netmask, sizeof(ret->netmask), "%s", fields[1]);
    if (fields[2] && ip4(fields[2]))
        snprintf(ret->gateway, sizeof(ret->gateway), "%s", fields[2]);
    if (fields[3] && strspn(fields[3], "0123456789. ") == strlen(fields[3]))
        snprintf(ret->dns, sizeof(ret->dns), "%s", fields[3]); /* space-separated IPv4s */
    free(data);
    if (!*ret->ip || !*ret->netmask)
        return -EPROTO; /* a lease we can't use */
    return net_ip_set_static(ctx, dev, ret->ip, ret->netmask, ret->gateway);
}
