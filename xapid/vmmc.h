/* A client of one nuvem-vmm control socket (see hypervisor/README.md): JSON lines, requests
 * with ids answered in any order, events pushed at any time. One reader thread per connection
 * delivers replies to the waiting callers and events to a callback; the callback runs on the
 * reader thread and must not call vmmc_call on the same connection (hand the work off). */
#pragma once

#include "cleanup.h"
#include "err.h"
#include "xv.h"

#include <stdbool.h>

typedef struct vmmc vmmc;

typedef struct vmmc_handlers {
    /* An event: name and its data (NULL if none). */
    void (*event)(void *opaque, const char *name, const xv *data);
    /* The connection ended (the VMM exited or closed it); called once, last. */
    void (*closed)(void *opaque);
    void *opaque;
} vmmc_handlers;

/* A connected stream socket to the Unix socket at path (close-on-exec), or -errno. */
int vmmc_connect_unix(const char *path);
/* Connects to the control socket at path, waiting up to timeout seconds for it to appear while
 * pid (if > 0) is alive, and reads the greeting (*ret_greeting, optional, caller frees). */
xerr *vmmc_connect(const char *path, int pid, double timeout, const vmmc_handlers *h, vmmc **ret,
                   xv **ret_greeting);
/* Sends one command (args taken, may be NULL) and waits up to timeout seconds for its reply.
 * The VMM's error array becomes the xerr; a lost connection is INTERNAL_ERROR. */
xerr *vmmc_call(vmmc *c, const char *cmd, xv *args, double timeout, xv **ret);
/* Whether the connection is still open. */
bool vmmc_alive(vmmc *c);
/* Waits up to timeout seconds for the connection to end; true if it did. */
bool vmmc_wait_closed(vmmc *c, double timeout);
/* Closes the connection (without telling the VMM anything), joins the reader, frees. The closed
 * handler is not called by vmmc_free itself if it had not run yet. */
void vmmc_free(vmmc *c);
DEFINE_FREEP(vmmc)
