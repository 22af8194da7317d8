/* First start: the pool, this host with its metrics and CPUs (from /proc), the management
 * PIF of the primary interface with its network, and the RBAC roles. Later starts find
 * them again and refresh what the host reports. */
#define _GNU_SOURCE
#include "xapid.h"
#include "log.h"
#include "mem.h"
#include "util.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

static const api_class *C(int id)
{
    return &api_classes[id];
}

/* The interface of the default route, else the first non-loopback one, else "lo". */
static char *primary_iface(void)
{
    FILE *f = fopen("/proc/net/route", "re");
    char line[512], dev[64];
    unsigned long dest;
    if (f) {
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "%63s %lx", dev, &dest) == 2 && dest == 0) {
                fclose(f);
                return xstrdup(dev);
            }
        fclose(f);
    }
    struct ifaddrs *ifs = NULL, *i;
    char *found = NULL;
    if (getifaddrs(&ifs) == 0) {
        for (i = ifs; i && !found; i = i->ifa_next)
            if (!(i->ifa_flags & IFF_LOOPBACK))
                found = xstrdup(i->ifa_name);
        freeifaddrs(ifs);
    }
    return found ? found : xstrdup("lo");
}

static char *iface_ipv4(const char *dev)
{
    struct ifaddrs *ifs = NULL;
    char *out = NULL;
    if (getifaddrs(&ifs) == 0) {
        for (struct ifaddrs *i = ifs; i && !out; i = i->ifa_next)
            if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && strcmp(i->ifa_name, dev) == 0) {
                char buf[INET_ADDRSTRLEN];
                inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf,
                          sizeof(buf));
                out = xstrdup(buf);
            }
        freeifaddrs(ifs);
    }
    return out ? out : xstrdup("127.0.0.1");
}

static char *sysfs_read(const char *fmt, const char *dev)
{
    AUTOFREE char *path = xasprintf(fmt, dev);
    char *data = NULL;
    if (read_file(path, &data, NULL) < 0)
        return xstrdup("");
    data[strcspn(data, "\n")] = '\0';
    return data;
}

static int64_t meminfo_kib(const char *key)
{
    AUTOFREE char *data = NULL;
    if (read_file("/proc/meminfo", &data, NULL) < 0)
        return 0;
    char *p = strstr(data, key);
    return p ? strtoll(p + strlen(key) + 1, NULL, 10) : 0;
}

static xerr *create(store_txn *t, int cls, xv *rec, char **ret)
{
    xerr *e = st_create(t, C(cls), NULL, rec, ret);
    xv_free(rec);
    return e;
}

static xerr *add_cpus(store_txn *t, const char *host)
{
    AUTOFREE char *data = NULL;
    if (read_file("/proc/cpuinfo", &data, NULL) < 0)
        return NULL;
    xv *rec = NULL;
    int64_t n = 0;
    xerr *e = NULL;
    for (char *line = strtok(data, "\n"); line && !e; line = strtok(NULL, "\n")) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        char *k = line, *v = colon + 1;
        *colon = '\0';
        for (char *end = colon - 1; end >= k && (*end == ' ' || *end == '\t'); end--)
            *end = '\0';
        while (*v == ' ')
            v++;
        if (strcmp(k, "processor") == 0) {
            if (rec)
                e = create(t, API_CLASS_host_cpu, rec, NULL);
            rec = xv_new_struct();
            xv_struct_set(rec, "host", xv_new_string(host));
            xv_struct_set(rec, "number", xv_new_int(n++));
        } else if (!rec)
            continue;
        else if (strcmp(k, "vendor_id") == 0)
            xv_struct_set(rec, "vendor", xv_new_string(v));
        else if (strcmp(k, "model name") == 0)
            xv_struct_set(rec, "modelname", xv_new_string(v));
        else if (strcmp(k, "cpu MHz") == 0)
            xv_struct_set(rec, "speed", xv_new_int(strtoll(v, NULL, 10)));
        else if (strcmp(k, "cpu family") == 0)
            xv_struct_set(rec, "family", xv_new_int(strtoll(v, NULL, 10)));
        else if (strcmp(k, "model") == 0)
            xv_struct_set(rec, "model", xv_new_int(strtoll(v, NULL, 10)));
        else if (strcmp(k, "stepping") == 0)
            xv_struct_set(rec, "stepping", xv_new_string(v));
        else if (strcmp(k, "flags") == 0)
            xv_struct_set(rec, "flags", xv_new_string(v));
    }
    if (rec && !e)
        e = create(t, API_CLASS_host_cpu, rec, NULL);
    else
        xv_free(rec);
    return e;
}

static xerr *first_start(store_txn *t, xapid *x)
{
    xerr *e;
    char hostname[256] = "localhost";
    gethostname(hostname, sizeof(hostname) - 1);
    struct utsname un;
    uname(&un);
    AUTOFREE char *dev = primary_iface();
    AUTOFREE char *addr = iface_ipv4(dev);

    /* roles, lowest first; each lists the ones below as subroles */
    xv *below = xv_new_array();
    for (size_t i = 0; i < api_nroles; i++) {
        xv *rec = xv_new_struct();
        xv_struct_set(rec, "name_label", xv_new_string(api_roles[i]));
        AUTOFREE char *d = xasprintf("The %s role", api_roles[i]);
        xv_struct_set(rec, "name_description", xv_new_string(d));
        xv_struct_set(rec, "subroles", xv_copy(below));
        char *ref = NULL;
        if ((e = create(t, API_CLASS_role, rec, &ref))) {
            xv_free(below);
            return e;
        }
        xv_array_append(below, xv_new_string_take(ref));
    }
    xv_free(below);

    char *metrics = NULL;
    xv *m = xv_new_struct();
    xv_struct_set(m, "memory_total", xv_new_int(meminfo_kib("MemTotal:") * 1024));
    xv_struct_set(m, "memory_free", xv_new_int(meminfo_kib("MemAvailable:") * 1024));
    xv_struct_set(m, "live", xv_new_bool(true));
    xv_struct_set(m, "last_updated", xv_new_datetime_epoch(now_epoch()));
    if ((e = create(t, API_CLASS_host_metrics, m, &metrics)))
        return e;
    AUTOFREE char *metrics_ref = metrics;

    xv *h = xv_new_struct();
    xv_struct_set(h, "name_label", xv_new_string(hostname));
    xv_struct_set(h, "name_description", xv_new_string("Default install"));
    xv_struct_set(h, "hostname", xv_new_string(hostname));
    xv_struct_set(h, "address", xv_new_string(addr));
    xv_struct_set(h, "enabled", xv_new_bool(true));
    xv_struct_set(h, "API_version_major", xv_new_int(2));
    xv_struct_set(h, "API_version_minor", xv_new_int(21));
    xv_struct_set(h, "API_version_vendor", xv_new_string("Nuvem"));
    xv_struct_set(h, "metrics", xv_new_string(metrics_ref));
    xv *sv = xv_new_struct();
    xv_struct_set(sv, "product_brand", xv_new_string("Nuvem"));
    xv_struct_set(sv, "product_version", xv_new_string("0.1.0"));
    xv_struct_set(sv, "platform_name", xv_new_string("Nuvem"));
    xv_struct_set(sv, "xapi", xv_new_string("24.0"));
    xv_struct_set(sv, "linux", xv_new_string(un.release));
    xv_struct_set(h, "software_version", sv);
    xv *cpu_info = xv_new_struct();
    AUTOFREE char *ncpu = xasprintf("%ld", sysconf(_SC_NPROCESSORS_ONLN));
    xv_struct_set(cpu_info, "cpu_count", xv_new_string(ncpu));
    xv_struct_set(h, "cpu_info", cpu_info);
    char *host = NULL;
    if ((e = create(t, API_CLASS_host, h, &host)))
        return e;
    x->host_ref = host;
    if ((e = add_cpus(t, host)))
        return e;

    xv *net = xv_new_struct();
    AUTOFREE char *nl = xasprintf("Pool-wide network associated with %s", dev);
    xv_struct_set(net, "name_label", xv_new_string(nl));
    xv_struct_set(net, "bridge", xv_new_string("xenbr0"));
    xv_struct_set(net, "MTU", xv_new_int(1500));
    AUTOFREE char *netref = NULL;
    if ((e = create(t, API_CLASS_network, net, &netref)))
        return e;
    xv *pif = xv_new_struct();
    xv_struct_set(pif, "device", xv_new_string(dev));
    xv_struct_set(pif, "network", xv_new_string(netref));
    xv_struct_set(pif, "host", xv_new_string(host));
    AUTOFREE char *mac = sysfs_read("/sys/class/net/%s/address", dev);
    AUTOFREE char *mtu = sysfs_read("/sys/class/net/%s/mtu", dev);
    xv_struct_set(pif, "MAC", xv_new_string(mac));
    xv_struct_set(pif, "MTU", xv_new_int(*mtu ? strtoll(mtu, NULL, 10) : 1500));
    xv_struct_set(pif, "physical", xv_new_bool(true));
    xv_struct_set(pif, "management", xv_new_bool(true));
    xv_struct_set(pif, "currently_attached", xv_new_bool(true));
    xv_struct_set(pif, "IP", xv_new_string(addr));
    xv_struct_set(pif, "ip_configuration_mode", xv_new_string("Static"));
    if ((e = create(t, API_CLASS_PIF, pif, NULL)))
        return e;

    xv *p = xv_new_struct();
    xv_struct_set(p, "name_label", xv_new_string(""));
    xv_struct_set(p, "master", xv_new_string(host));
    char *pool = NULL;
    if ((e = create(t, API_CLASS_pool, p, &pool)))
        return e;
    x->pool_ref = pool;
    log_info("first start: created pool %s and host %s (%s, %s)", pool, host, hostname, addr);
    return NULL;
}

static xerr *boot_txn(store_txn *t, void *ud)
{
    xapid *x = ud;
    AUTO(xv) *pools = NULL, *hosts = NULL;
    xerr *e = st_get_all(t, C(API_CLASS_pool), NULL, NULL, 0, &pools);
    if (e)
        return e;
    if (xv_array_len(pools) == 0)
        return first_start(t, x);
    if ((e = st_get_all(t, C(API_CLASS_host), NULL, NULL, 0, &hosts)))
        return e;
    x->pool_ref = xstrdup(xv_str(xv_array_get(pools, 0)));
    x->host_ref = xstrdup(xv_str(xv_array_get(hosts, 0)));
    AUTO(xv) *metrics = NULL;
    if ((e = st_get_field(t, C(API_CLASS_host), x->host_ref, API_F_host_metrics, &metrics)))
        return e;
    if (st_exists(t, C(API_CLASS_host_metrics), xv_str(metrics))) {
        AUTO(xv) *free_b = xv_new_int(meminfo_kib("MemAvailable:") * 1024);
        if ((e = st_set_field(t, C(API_CLASS_host_metrics), xv_str(metrics),
                              API_F_host_metrics_memory_free, free_b)))
            return e;
    }
    return NULL;
}

int bootstrap(xapid *x)
{
    xerr *e = store_write(x->st, boot_txn, x);
    if (e) {
        log_err("bootstrap failed: %s %s", e->code, e->nparams ? e->params[0] : "");
        xerr_free(e);
        return -1;
    }
    return 0;
}
