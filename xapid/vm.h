/* The VM lifecycle over nuvem-vmm (vm.c): one VMM process per running VM, driven through its
 * control socket; the runtime table of running VMs; templates and the control domain. */
#pragma once

#include "xapid.h"

/* Start-up: control domain and templates (first start or missing), then re-attaches the VMMs of
 * VMs the DB says run here (those whose VMM is gone become Halted, applying nothing), stops
 * VMMs the DB does not know as running, clears operations left by a killed daemon, and starts
 * the monitor and metrics threads. Call after storage and network are initialised. */
xerr *xapid_vm_init(xapid *x);
/* Stops the threads and lets go of the VMMs (they keep running: a restarted daemon re-attaches). */
void xapid_vm_stop(xapid *x);

/* The console stream of a running VM (for console.c): connects to its serial socket; -errno. */
int xapid_vm_console_fd(xapid *x, const char *console_ref, char **ret_vm);
