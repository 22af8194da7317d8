/* xe: the XCP-compatible command line for Nuvem. */
#define _GNU_SOURCE
#include "xe.h"

#include "util.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void on_sigint(int sig)
{
    (void)sig;
    _exit(1); /* as XCP's xe: an interrupted command exits 1 */
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_sigint);
    if (argc == 2 && strcmp(argv[1], "--bash-completion") == 0) {
        xe_write_bash_completion(stdout);
        return 0;
    }
    char *rc_text = NULL;
    const char *home = getenv("HOME");
    if (home) {
        char *path = NULL;
        if (asprintf(&path, "%s/.xe", home) >= 0) {
            if (read_file(path, &rc_text, NULL) < 0)
                rc_text = NULL;
            free(path);
        }
    }
    xe_cmdline cl;
    enum xe_parse_rc prc =
        xe_cmdline_parse(&cl, argc, argv, rc_text, getenv("XE_EXTRA_ARGS"), stderr);
    free(rc_text);
    int rc;
    switch (prc) {
    case XE_PARSE_VERSION:
        printf("ThinCLI protocol: 0.2\n");
        rc = 0;
        break;
    case XE_PARSE_USAGE:
        xe_print_usage(stderr, argv[0]);
        rc = 0;
        break;
    case XE_PARSE_FAIL:
        rc = 1;
        break;
    default:
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = xe_run(&cl, stdout, stderr);
        curl_global_cleanup();
        break;
    }
    xe_cmdline_free(&cl);
    return rc;
}
