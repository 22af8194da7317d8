/* Scope-bound ownership helpers: cleanup attributes without GLib. */
#pragma once

#include <stdlib.h>
#include <unistd.h>
#include <errno.h>

static inline void freep(void *p)
{
    free(*(void **)p);
}

static inline void closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}

/* A local freed with free() when it leaves scope. */
#define AUTOFREE __attribute__((cleanup(freep)))
/* A local fd closed when it leaves scope; initialise to -1. */
#define AUTOCLOSE __attribute__((cleanup(closep)))
/* A local of type T* released with T_free() when it leaves scope. */
#define AUTO(type) __attribute__((cleanup(type##_freep))) type
/* Declares T_freep() for a type whose destructor T_free() accepts NULL. */
#define DEFINE_FREEP(type)                                                                         \
    static inline void type##_freep(type **p)                                                      \
    {                                                                                              \
        type##_free(*p);                                                                           \
    }

/* Hands ownership out of a cleanup-managed local. */
#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) _taken = (p);                                                                \
        (p) = NULL;                                                                                \
        _taken;                                                                                    \
    })
#define TAKE_FD(fd)                                                                                \
    ({                                                                                             \
        int _taken = (fd);                                                                         \
        (fd) = -1;                                                                                 \
        _taken;                                                                                    \
    })

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
