/* Growable byte buffer used by encoders and the HTTP layer. */
#pragma once

#include <stddef.h>
#include <stdarg.h>

typedef struct sbuf {
    char *data; /* always NUL-terminated once anything was appended */
    size_t len;
    size_t cap;
} sbuf;

#define SBUF_INIT                                                                                  \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void sbuf_append(sbuf *b, const char *s, size_t n);
/* Makes room for extra more bytes (plus the NUL) without changing the contents. */
void sbuf_reserve(sbuf *b, size_t extra);
/* A capacity guess for encoding v: large results get one big (mmap-backed) buffer up
 * front instead of a series of doublings. */
size_t sbuf_size_hint(size_t members);
/* Inline so that strlen() of a literal folds to a constant on hot encoder paths. */
static inline void sbuf_puts(sbuf *b, const char *s)
{
    sbuf_append(b, s, __builtin_strlen(s));
}
/* Appends a signed decimal integer. */
void sbuf_put_i64(sbuf *b, long long v);
void sbuf_putc(sbuf *b, char c);
void sbuf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s with XML's special characters (<>&") escaped. */
void sbuf_put_xml_escaped(sbuf *b, const char *s, size_t n);
/* Releases the buffer's memory; the struct may be reused. */
void sbuf_release(sbuf *b);
/* Returns the caller-frees contents (never NULL) and resets the buffer. */
char *sbuf_steal(sbuf *b, size_t *ret_len);
