/* The config table: every key with its type, bounds, default and doc drives the command
 * line, the config file (key = value), --help and the commented sample. */
#define _GNU_SOURCE
#include "config.h"
#include "log.h"
#include "mem.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S(field) offsetof(xapid_config, field)

const config_key config_keys[] = {
    {"state-dir", CFG_STR, S(state_dir), 0, 0, NULL,
     "directory for the DB, certificates and runtime files (required)"},
    {"listen", CFG_STR, S(listen), 0, 0, "127.0.0.1:8080",
     "HTTP address ADDR:PORT (port 0 picks a free one)"},
    {"tls-listen", CFG_STR, S(tls_listen), 0, 0, NULL, "HTTPS address ADDR:PORT; unset = no HTTPS"},
    {"root-password-file", CFG_STR, S(root_password_file), 0, 0, NULL,
     "file holding root's password, read on first start"},
    {"tls-cert", CFG_STR, S(tls_cert), 0, 0, NULL,
     "PEM certificate (default <state-dir>/xapi-ssl.pem, generated)"},
    {"tls-key", CFG_STR, S(tls_key), 0, 0, NULL,
     "PEM private key (default <state-dir>/xapi-ssl.key, generated)"},
    {"unix-socket", CFG_STR, S(unix_socket), 0, 0, NULL,
     "pre-authenticated local socket (default <state-dir>/xapi.sock; none: off)"},
    {"db", CFG_STR, S(db_path), 0, 0, NULL, "database file (default <state-dir>/xapi.db)"},
    {"max-body", CFG_INT, S(max_body), 1024, 1 << 30, "1048576",
     "largest accepted request body, bytes"},
    {"max-connections", CFG_INT, S(max_connections), 1, 65536, "1024",
     "simultaneous HTTP connections"},
    {"session-idle-timeout", CFG_INT, S(session_idle_timeout), 1, 31 * 86400, "86400",
     "seconds an unused session lives"},
    {"max-sessions", CFG_INT, S(max_sessions), 1, 1000000, "10000",
     "sessions kept in all; the least recently used goes first"},
    {"max-sessions-per-user", CFG_INT, S(max_sessions_per_user), 1, 1000000, "500",
     "sessions kept per user name"},
    {"password-iterations", CFG_INT, S(password_iterations), 1000, 10000000, "200000",
     "PBKDF2-SHA256 iterations for new password hashes"},
    {"task-workers", CFG_INT, S(task_workers), 1, 256, "4", "threads running Async tasks"},
    {"max-pending-tasks", CFG_INT, S(max_pending_tasks), 1, 1000000, "10000",
     "queued tasks before Async calls are refused"},
    {"event-timeout-max", CFG_INT, S(event_timeout_max), 1, 86400, "300",
     "longest wait of one event.from/event.next call, seconds"},
    {"manage-pifs", CFG_INT, S(manage_pifs), 0, 1, "0",
     "1: re-plug attached PIFs into their bridges at start-up (moves host NICs into bridges)"},
    {"task-retention", CFG_INT, S(task_retention), 1, 30 * 86400, "3900",
     "seconds a finished task is kept before it is destroyed"},
    {"log-level", CFG_STR, S(log_level), 0, 0, "info", "debug, info, warn or error"},
    {"vmm", CFG_STR, S(vmm), 0, 0, NULL,
     "nuvem-vmm binary (default: ../hypervisor/nuvem-vmm next to xapid, then PATH)"},
    {"miniguest", CFG_STR, S(miniguest), 0, 0, NULL,
     "mini guest kernel (default: ../hypervisor/nuvem-miniguest.elf next to xapid)"},
    {"guest-image-dir", CFG_STR, S(guest_image_dir), 0, 0, NULL,
     "Debian guest kernel and initrd from scripts/build-guest-image.sh (default: "
     "../../guest-image next to xapid)"},
    {"kernel-dir", CFG_STR, S(kernel_dir), 0, 0, "/boot/guest",
     "directory VMs' PV_kernel/PV_ramdisk paths may point into (besides the bundled guests)"},
    {"run-dir", CFG_STR, S(run_dir), 0, 0, NULL,
     "per-VM control sockets, configs and serial logs (default <state-dir>/run)"},
    {"shutdown-timeout", CFG_INT, S(shutdown_timeout), 1, 86400, "60",
     "seconds a guest gets to complete a clean shutdown or reboot"},
    {"vm-memory-overhead", CFG_INT, S(vm_memory_overhead), 0, 1 << 30, "4194304",
     "host memory counted per running VM besides its RAM, bytes"},
    {"vm-memory-limit", CFG_INT, S(vm_memory_limit), 0, INT64_MAX, "0",
     "host memory VMs may use in all, bytes (0: what is available when xapid starts)"},
    {"page-sharing", CFG_INT, S(page_sharing), 0, 1, "1",
     "1: offer guest RAM to KSM (same-page merging) when VMs start"},
};
const size_t config_nkeys = sizeof(config_keys) / sizeof(config_keys[0]);

const config_key *config_find(const char *key)
{
    for (size_t i = 0; i < config_nkeys; i++)
        if (strcmp(config_keys[i].key, key) == 0)
            return &config_keys[i];
    return NULL;
}

int config_set(xapid_config *cfg, const char *key, const char *value, char **ret_msg)
{
    const config_key *k = config_find(key);
    if (!k) {
        *ret_msg = xasprintf("unknown setting '%s'", key);
        return -EINVAL;
    }
    char *base = (char *)cfg;
    if (k->type == CFG_STR) {
        char **slot = (char **)(base + k->offset);
        free(*slot);
        *slot = xstrdup(value);
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno || end == value || *end || v < k->min || v > k->max) {
        *ret_msg = xasprintf("%s: '%s' is not an integer in [%lld, %lld]", key, value,
                             (long long)k->min, (long long)k->max);
        return -EINVAL;
    }
    *(int64_t *)(base + k->offset) = v;
    return 0;
}

void config_defaults(xapid_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < config_nkeys; i++) {
        char *msg = NULL;
        if (config_keys[i].dflt &&
            config_set(cfg, config_keys[i].key, config_keys[i].dflt, &msg) < 0)
            abort(); /* a bad default is a programming error */
    }
}

void config_free(xapid_config *cfg)
{
    for (size_t i = 0; i < config_nkeys; i++)
        if (config_keys[i].type == CFG_STR) {
            char **slot = (char **)((char *)cfg + config_keys[i].offset);
            free(*slot);
            *slot = NULL;
        }
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int config_load_file(xapid_config *cfg, const char *path, char **ret_msg)
{
    AUTOFREE char *data = NULL;
    int r = read_file(path, &data, NULL);
    if (r < 0) {
        *ret_msg = xasprintf("%s: %s", path, strerror(-r));
        return r;
    }
    int lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *l = trim(line);
        if (!*l || *l == '#')
            continue;
        char *eq = strchr(l, '=');
        if (!eq) {
            *ret_msg = xasprintf("%s:%d: expected key = value", path, lineno);
            return -EINVAL;
        }
        *eq = '\0';
        char *msg = NULL;
        if (config_set(cfg, trim(l), trim(eq + 1), &msg) < 0) {
            *ret_msg = xasprintf("%s:%d: %s", path, lineno, msg);
            free(msg);
            return -EINVAL;
        }
    }
    return 0;
}

void config_print_help(FILE *f)
{
    fprintf(f,
            "Usage: xapid --state-dir DIR [--listen ADDR:PORT] [--tls-listen ADDR:PORT]\n"
            "             [--root-password-file FILE] [--config FILE] [--KEY VALUE ...]\n"
            "       xapid --state-dir DIR --add-user NAME --role ROLE --user-password-file FILE\n\n"
            "Settings (command line --KEY VALUE, or KEY = VALUE lines in --config FILE):\n");
    for (size_t i = 0; i < config_nkeys; i++)
        fprintf(f, "  --%-24s %s%s%s%s\n", config_keys[i].key, config_keys[i].doc,
                config_keys[i].dflt ? " [default: " : "",
                config_keys[i].dflt ? config_keys[i].dflt : "", config_keys[i].dflt ? "]" : "");
}

void config_print_sample(FILE *f)
{
    fprintf(f, "# xapid configuration: KEY = VALUE; commented lines show the defaults.\n");
    for (size_t i = 0; i < config_nkeys; i++) {
        fprintf(f, "\n# %s\n", config_keys[i].doc);
        if (config_keys[i].dflt)
            fprintf(f, "# %s = %s\n", config_keys[i].key, config_keys[i].dflt);
        else
            fprintf(f, "# %s =\n", config_keys[i].key);
    }
}
