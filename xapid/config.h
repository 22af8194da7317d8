/* xapid settings: one table drives parsing, --help and the sample file. */
#pragma once

#include "xapid.h"

#include <stdio.h>

typedef enum { CFG_STR, CFG_INT } config_type;

typedef struct config_key {
    const char *key;
    config_type type;
    size_t offset; /* into xapid_config */
    int64_t min, max;
    const char *dflt; /* NULL: unset */
    const char *doc;
} config_key;

extern const config_key config_keys[];
extern const size_t config_nkeys;

const config_key *config_find(const char *key);
void config_defaults(xapid_config *cfg);
void config_free(xapid_config *cfg);
/* Sets one key from text; on error returns -EINVAL and a caller-frees message. */
int config_set(xapid_config *cfg, const char *key, const char *value, char **ret_msg);
int config_load_file(xapid_config *cfg, const char *path, char **ret_msg);
void config_print_help(FILE *f);
void config_print_sample(FILE *f);
