/* Live features of a running VM, served on the control socket: the memory balloon
 * (virtio_balloon.h), vCPU hot-plug up to the boot-time maximum (PORT_VCPUS) and the
 * guest-agent key-value channel (virtio_console.h), with the events that report them. All
 * functions run on the main loop's thread. */
#pragma once

#include "err.h"
#include "vmm.h"
#include "xv.h"

#define LIVE_EVENT_INTERVAL 0.25 /* seconds: at most ~4 events of each kind per second */

/* Creates the balloon and agent devices the config asks for (in the slots after the disks
 * and NICs) and sets the vCPU target. Call after the NICs are added, before machine_create. */
void live_setup(vmm *v);
/* Frees them (after machine_destroy). */
void live_free(vmm *v);

/* Sends the events that are due through emit (data is taken). Returns the milliseconds until
 * a held-back (coalesced) event may go, or -1 if none waits. */
typedef void (*live_emit_fn)(void *opaque, const char *event, xv *data);
int live_poll(vmm *v, live_emit_fn emit, void *opaque);

/* Control commands (see hypervisor/README.md); *ret is set on success. */
xerr *live_set_balloon_target(vmm *v, const xv *args, xv **ret);
xerr *live_query_balloon(vmm *v, const xv *args, xv **ret);
xerr *live_set_vcpus(vmm *v, const xv *args, xv **ret);
xerr *live_query_guest(vmm *v, const xv *args, xv **ret);
xerr *live_guest_set(vmm *v, const xv *args, xv **ret);
/* Members added to query-status (vcpus_online, vcpus_max) and stats (balloon, agent). */
void live_add_status(vmm *v, xv *status);
void live_add_stats(vmm *v, xv *stats);
