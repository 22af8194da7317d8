/* The guest-agent key-value line protocol (see agent.h). */
#include "agent.h"
#include "mem.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

void agent_store_init(agent_store *s)
{
    memset(s, 0, sizeof(*s));
}

void agent_store_clear(agent_store *s)
{
    for (unsigned i = 0; i < s->n; i++) {
        free(s->keys[i]);
        free(s->values[i]);
        s->keys[i] = s->values[i] = NULL;
    }
    s->n = 0;
    s->connected = false;
    s->line_len = 0;
    s->discarding = false;
}

bool agent_key_valid(const char *key, size_t len)
{
    if (!len || len > AGENT_MAX_KEY)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = key[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == ':' || c == '/' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool agent_value_valid(const char *value, size_t len)
{
    if (len > AGENT_MAX_VALUE)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return utf8_valid(value, len);
}

static int find(const agent_store *s, const char *key, size_t len)
{
    for (unsigned i = 0; i < s->n; i++)
        if (strlen(s->keys[i]) == len && memcmp(s->keys[i], key, len) == 0)
            return (int)i;
    return -1;
}

const char *agent_store_get(const agent_store *s, const char *key)
{
    int i = find(s, key, strlen(key));
    return i < 0 ? NULL : s->values[i];
}

static void store_set(agent_store *s, const char *key, size_t klen, const char *val, size_t vlen)
{
    int i = find(s, key, klen);
    char *v = xmalloc(vlen + 1);
    memcpy(v, val, vlen);
    v[vlen] = 0;
    if (i >= 0) {
        free(s->values[i]);
        s->values[i] = v;
        return;
    }
    if (s->n >= AGENT_MAX_KEYS) {
        s->dropped++;
        free(v);
        return;
    }
    char *k = xmalloc(klen + 1);
    memcpy(k, key, klen);
    k[klen] = 0;
    s->keys[s->n] = k;
    s->values[s->n] = v;
    s->n++;
}

static void store_del(agent_store *s, const char *key, size_t klen)
{
    int i = find(s, key, klen);
    if (i < 0)
        return;
    free(s->keys[i]);
    free(s->values[i]);
    memmove(&s->keys[i], &s->keys[i + 1], (s->n - (unsigned)i - 1) * sizeof(char *));
    memmove(&s->values[i], &s->values[i + 1], (s->n - (unsigned)i - 1) * sizeof(char *));
    s->n--;
    s->keys[s->n] = s->values[s->n] = NULL;
}

static bool word(const char *line, size_t len, const char *w, size_t *ret_rest)
{
    size_t n = strlen(w);
    if (len < n || memcmp(line, w, n) != 0)
        return false;
    if (len == n) {
        *ret_rest = n;
        return true;
    }
    if (line[n] != ' ')
        return false;
    *ret_rest = n + 1;
    return true;
}

/* One complete line. Returns 1 for a sync or hello (publish), else 0. */
static unsigned handle_line(agent_store *s, const char *line, size_t len)
{
    if (len && line[len - 1] == '\r')
        len--;
    if (!len)
        return 0;
    s->lines++;
    size_t r;
    if (len == 5 && memcmp(line, "hello", 5) == 0) {
        agent_store_clear(s);
        s->connected = true;
        return 1;
    }
    if (len == 4 && memcmp(line, "sync", 4) == 0) {
        s->syncs++;
        return 1;
    }
    if (word(line, len, "set", &r)) {
        const char *key = line + r;
        size_t rest = len - r, klen = 0;
        while (klen < rest && key[klen] != ' ')
            klen++;
        const char *val = key + klen + (klen < rest ? 1 : 0);
        size_t vlen = rest - klen - (klen < rest ? 1 : 0);
        if (agent_key_valid(key, klen) && agent_value_valid(val, vlen)) {
            store_set(s, key, klen, val, vlen);
            return 0;
        }
    } else if (word(line, len, "del", &r)) {
        if (agent_key_valid(line + r, len - r)) {
            store_del(s, line + r, len - r);
            return 0;
        }
    }
    s->rejected++;
    return 0;
}

unsigned agent_store_feed(agent_store *s, const uint8_t *data, size_t len)
{
    unsigned publish = 0;
    for (size_t i = 0; i < len;) {
        const uint8_t *nl = memchr(data + i, '\n', len - i);
        size_t chunk = nl ? (size_t)(nl - (data + i)) : len - i;
        if (!s->discarding) {
            if (s->line_len + chunk > AGENT_MAX_LINE) {
                s->overlong++;
                s->discarding = true;
                s->line_len = 0;
            } else {
                memcpy(s->line + s->line_len, data + i, chunk);
                s->line_len += chunk;
            }
        }
        i += chunk;
        if (!nl)
            break;
        i++; /* the newline */
        if (!s->discarding)
            publish += handle_line(s, s->line, s->line_len);
        s->discarding = false;
        s->line_len = 0;
    }
    return publish;
}

xv *agent_store_data(const agent_store *s)
{
    xv *d = xv_new_struct_cap(s->n);
    for (unsigned i = 0; i < s->n; i++)
        xv_struct_set(d, s->keys[i], xv_new_string(s->values[i]));
    return d;
}

xerr *agent_format_set(const char *key, const char *value, char **ret)
{
    if (!agent_key_valid(key, strlen(key)))
        return xerr_new("INVALID_VALUE", "key", "1-256 characters of A-Z a-z 0-9 _ . : / -");
    if (!agent_value_valid(value, strlen(value)))
        return xerr_new("INVALID_VALUE", "value", "at most 1024 bytes, no control characters");
    *ret = xasprintf("set %s %s\n", key, value);
    return NULL;
}
