/* DHCP for PIF.reconfigure_ip: a lease fetched by busybox udhcpc, applied through netlink; either
 * one lease (net_ip_dhcp) or a udhcpc daemon that keeps renewing it (net_dhcp_start/poll/stop). */
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

static bool ip4(const char *s);
/* Parses the four lines the lease script writes; takes data. 0, or -EPROTO if unusable. */
static int lease_parse(char *data, struct net_dhcp_lease *ret);

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
    if ((r = lease_parse(data, ret)) < 0)
        return r;
    return net_ip_set_static(ctx, dev, ret->ip, ret->netmask, ret->gateway);
}

static int lease_parse(char *data, struct net_dhcp_lease *ret)
{
    memset(ret, 0, sizeof(*ret));
    /* one value a line, empty lines kept (a lease without a router has an empty third line) */
    char *fields[4] = {NULL, NULL, NULL, NULL};
    char *line = data;
    for (int i = 0; i < 4 && line && *line; i++) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        fields[i] = line;
        line = nl ? nl + 1 : NULL;
    }
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
    return 0;
}

/* ---- the renewing client ------------------------------------------------------------------ */

/* The daemon's script: a bound or renewed lease replaces <dev>.lease in one rename; a lost one
 * (deconfig after a NAK or an expiry) leaves it empty. */
static const char daemon_script[] =
    "#!/bin/sh\n"
    "l=\"${0%.sh}.lease\"\n"
    "case \"$1\" in\n"
    "bound|renew) printf '%s\\n%s\\n%s\\n%s\\n' \"$ip\" \"$subnet\" \"${router%% *}\" \"$dns\" "
    "> \"$l.tmp\" && mv -f \"$l.tmp\" \"$l\" ;;\n"
    "deconfig) : > \"$l.tmp\" && mv -f \"$l.tmp\" \"$l\" ;;\n"
    "esac\n"
    "exit 0\n";

static char *dhcp_path(const char *dir, const char *dev, const char *ext)
{
    return xasprintf("%s/%s.%s", dir, dev, ext);
}

/* The pid in <dev>.pid if that process is still our udhcpc for `dev`, else 0. */
static pid_t daemon_pid(const char *dir, const char *dev)
{
    AUTOFREE char *pidfile = dhcp_path(dir, dev, "pid");
    AUTOFREE char *txt = NULL;
    if (read_file(pidfile, &txt, NULL) < 0)
        return 0;
    long pid = strtol(txt, NULL, 10);
    if (pid <= 1)
        return 0;
    AUTOFREE char *cmdpath = xasprintf("/proc/%ld/cmdline", pid);
    AUTOFREE char *cmd = NULL;
    size_t len = 0;
    if (read_file(cmdpath, &cmd, &len) < 0 || len == 0)
        return 0;
    /* argv: udhcpc -f -i <dev> ...; a recycled pid would show another command line */
    if (strcmp(cmd, "udhcpc") != 0)
        return 0;
    for (size_t i = 0; i + 1 < len; i++)
        if (cmd[i] == '\0' && !strcmp(cmd + i + 1, "-i") && i + 4 < len &&
            !strcmp(cmd + i + 4, dev))
            return (pid_t)pid;
    return 0;
}

/* True while the process named in <dev>.pid exists, whatever it runs. */
static bool pid_alive(const char *dir, const char *dev)
{
    AUTOFREE char *pidfile = dhcp_path(dir, dev, "pid");
    AUTOFREE char *txt = NULL;
    if (read_file(pidfile, &txt, NULL) < 0)
        return false;
    long pid = strtol(txt, NULL, 10);
    return pid > 1 && kill((pid_t)pid, 0) == 0;
}

bool net_dhcp_running(const char *dir, const char *dev)
{
    return net_ifname_valid(dev) && daemon_pid(dir, dev) > 0;
}

int net_dhcp_stop(const char *dir, const char *dev)
{
    if (!net_ifname_valid(dev))
        return -EINVAL;
    pid_t pid = daemon_pid(dir, dev);
    if (pid > 0) {
        kill(pid, SIGTERM);
        /* detached, so not our child, unless a child subreaper above it (xapid) adopted it:
         * then it is reaped here; otherwise wait for it to go, bounded */
        for (int i = 0; i < 100 && kill(pid, 0) == 0; i++) {
            if (waitpid(pid, NULL, WNOHANG) == pid)
                break;
            usleep(20000);
        }
        if (kill(pid, 0) == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, WNOHANG);
        }
    }
    const char *ext[] = {"pid", "sh", "lease", "lease.tmp"};
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        AUTOFREE char *f = dhcp_path(dir, dev, ext[i]);
        unlink(f);
    }
    return 0;
}

/* Starts udhcpc for `dev` detached from us (its own session, reparented to init), so it keeps
 * the lease while xapid restarts, as taps survive it. Returns 0 or -errno. */
static int daemon_spawn(const char *busybox, const char *dir, const char *dev)
{
    AUTOFREE char *script = dhcp_path(dir, dev, "sh");
    AUTOFREE char *pidfile = dhcp_path(dir, dev, "pid");
    AUTOFREE char *pidtmp = dhcp_path(dir, dev, "pid.tmp");
    int r = write_all(script, daemon_script, 0700);
    if (r < 0)
        return r;
    pid_t mid = fork();
    if (mid < 0)
        return -errno;
    if (mid == 0) {
        setsid();
        pid_t pid = fork();
        if (pid < 0)
            _exit(1);
        if (pid > 0) {
            char buf[24];
            int n = snprintf(buf, sizeof(buf), "%ld\n", (long)pid);
            int fd = open(pidtmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            bool ok = fd >= 0 && write(fd, buf, (size_t)n) == n;
            if (fd >= 0)
                close(fd);
            _exit(ok && rename(pidtmp, pidfile) == 0 ? 0 : 1);
        }
        /* the daemon: default signals (xapid blocks SIGTERM in its threads and ignores
         * SIGPIPE; both would survive exec), no inherited descriptors */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        closefrom(3);
        char *const argv[] = {
            (char *)"udhcpc", (char *)"-f", (char *)"-i", (char *)dev,  (char *)"-s",
            script,           (char *)"-T", (char *)"1",  (char *)"-t", (char *)"3",
            (char *)"-A",     (char *)"2",  NULL};
        execv(busybox, argv);
        _exit(127);
    }
    int st = 0;
    while (waitpid(mid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}

int net_dhcp_poll(const char *dir, const char *dev, struct net_dhcp_lease *ret)
{
    if (!net_ifname_valid(dev))
        return -EINVAL;
    if (daemon_pid(dir, dev) <= 0)
        return -ESRCH;
    AUTOFREE char *lease = dhcp_path(dir, dev, "lease");
    char *data = NULL;
    if (read_file(lease, &data, NULL) < 0)
        return -ENOENT;
    if (!*data) {
        free(data);
        memset(ret, 0, sizeof(*ret));
        return 0; /* deconfigured: no lease now */
    }
    int r = lease_parse(data, ret);
    return r < 0 ? r : 1;
}

int net_dhcp_start(net_ctx *ctx, const char *dev, const char *dir, int wait_s,
                   struct net_dhcp_lease *ret)
{
    if (!net_ifname_valid(dev) || wait_s < 1 || wait_s > 60)
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
    if (mkdir_p(dir, 0700) < 0)
        return -errno;
    net_dhcp_stop(dir, dev); /* one client per device; a stale lease file would be misread */
    if ((r = daemon_spawn(busybox, dir, dev)) < 0)
        return r;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        r = net_dhcp_poll(dir, dev, ret);
        if (r == 1)
            break;
        if (r == -ESRCH && !pid_alive(dir, dev)) {
            /* not "not exec'd yet" (the pid file is written before exec): it died */
            net_dhcp_stop(dir, dev);
            return -ENOEXEC;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec >= wait_s) {
            net_dhcp_stop(dir, dev);
            return r == -EPROTO ? -EPROTO : -ETIMEDOUT;
        }
        usleep(100000);
    }
    r = net_ip_set_static(ctx, dev, ret->ip, ret->netmask, ret->gateway);
    if (r < 0)
        net_dhcp_stop(dir, dev);
    return r;
}
