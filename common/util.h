/* Small string and id helpers. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True if s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
bool utf8_valid(const char *s, size_t n);
/* Writes a new random lowercase UUID (37 bytes with NUL). */
void uuid_random(char out[static 37]);
/* True if s is a canonical lowercase-or-uppercase 8-4-4-4-12 UUID. */
bool uuid_valid(const char *s);
/* Returns a caller-frees "OpaqueRef:<uuid>". */
char *ref_new(void);
/* Monotonic clock in seconds. */
double now_monotonic(void);
/* Wall clock, epoch seconds. */
int64_t now_epoch(void);
/* Reads a whole file into a caller-frees NUL-terminated buffer; returns -errno. */
int read_file(const char *path, char **ret_data, size_t *ret_len);
/* Writes data atomically (tmp + rename) with mode; returns -errno. */
int write_file_atomic(const char *path, const char *data, size_t len, int mode);
/* mkdir -p with mode; returns -errno. */
int mkdir_p(const char *path, int mode);
