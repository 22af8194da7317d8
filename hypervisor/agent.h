/* The guest-agent key-value channel (what xenstore is to Xen): a line protocol carried by the
 * virtio-console port (see virtio_console.h). Pure code, no I/O: the VMM, the unit tests and
 * the fuzz target share it, since everything here parses bytes a guest chose.
 *
 * Guest -> host, one message per line ('\n', an optional '\r' before it is dropped):
 *   hello              an agent (re)started: the store is emptied, the guest is "connected"
 *   set KEY [VALUE]    VALUE is the rest of the line (may hold spaces, may be empty)
 *   del KEY
 *   sync               the end of a batch: the host publishes the data (guest-data event)
 * Host -> guest: `set KEY VALUE` lines.
 *
 * Keys are 1-AGENT_MAX_KEY bytes of [A-Za-z0-9_.:/-]; values at most AGENT_MAX_VALUE bytes of
 * UTF-8 without control characters; at most AGENT_MAX_KEYS keys. Longer lines are skipped up
 * to their newline, bad ones are counted and ignored, keys beyond the limit are dropped: a
 * flooding guest costs a bounded amount of VMM memory (about 170 KiB). */
#pragma once

#include "err.h"
#include "xv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_MAX_KEY   256
#define AGENT_MAX_VALUE 1024
#define AGENT_MAX_KEYS  128
#define AGENT_MAX_LINE  (4 + AGENT_MAX_KEY + 1 + AGENT_MAX_VALUE)

typedef struct agent_store {
    char *keys[AGENT_MAX_KEYS]; /* owned, in insertion order */
    char *values[AGENT_MAX_KEYS];
    unsigned n;
    bool connected; /* a `hello` was seen since the last clear */
    char line[AGENT_MAX_LINE + 1];
    size_t line_len;
    bool discarding; /* skipping the rest of an overlong line */
    /* counters */
    uint64_t lines, syncs, rejected, overlong, dropped;
} agent_store;

/* An empty store (the struct is plain data: zeroing it is the same). */
void agent_store_init(agent_store *s);
/* Frees every key and value and forgets the partial line; counters stay. */
void agent_store_clear(agent_store *s);
/* Consumes guest bytes. Returns how many `sync` and `hello` messages completed in them (the
 * caller publishes when non-zero). */
unsigned agent_store_feed(agent_store *s, const uint8_t *data, size_t len);
/* The data as a struct of strings (caller-frees). */
xv *agent_store_data(const agent_store *s);
/* A value, or NULL (borrowed: valid until the store changes). */
const char *agent_store_get(const agent_store *s, const char *key);

bool agent_key_valid(const char *key, size_t len);
bool agent_value_valid(const char *value, size_t len);
/* The host->guest line "set KEY VALUE\n" (caller-frees). Errors: INVALID_VALUE [key|value,
 * why] for a key or value the guest could not receive intact. */
xerr *agent_format_set(const char *key, const char *value, char **ret);
