/* Replays a fuzz corpus through LLVMFuzzerTestOneInput without libFuzzer, so every build
 * (any compiler, ASan or not) runs the seeds and past findings as a plain test. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "mem.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs one file; the input goes in an exact-size copy so ASan sees any overread. */
static int replay_file(const char *path)
{
    AUTOFREE char *text = NULL;
    size_t len = 0;
    int r = read_file(path, &text, &len);
    if (r < 0) {
        fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(-r));
        return r;
    }
    AUTOFREE uint8_t *exact = xmalloc(len ? len : 1);
    memcpy(exact, text, len);
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
    LLVMFuzzerTestOneInput(exact, len);
    return 0;
}

static int replay_path(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        fprintf(stderr, "replay: %s: %m\n", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        (*count)++;
        return replay_file(path);
    }
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: %s: %m\n", path);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.' && rc == 0) {
            AUTOFREE char *child = xasprintf("%s/%s", path, names[i]->d_name);
            rc = replay_path(child, count);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    size_t count = 0;
    for (int i = 1; i < argc; i++)
        if (replay_path(argv[i], &count) < 0)
            return 1;
    if (count == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    fprintf(stderr, "replay: %zu inputs, no crash\n", count);
    return 0;
}
