/* The mini guest's live features: a page allocator over its free RAM, the virtio-balloon
 * driver that inflates and deflates from it, and the guest agent that publishes keys over a
 * virtio-console port and acts on the host's control/ keys (see hypervisor/agent.h for the
 * line protocol). Interrupt-driven: the virtio lines of both devices go to VEC_VIRTIO. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* Implemented by kernel.c for the agent. */
unsigned kernel_cpus_online(void);
unsigned kernel_set_vcpus(unsigned n); /* returns the CPUs online afterwards */
void kernel_poweroff(void);
void kernel_reboot(void);

/* Free RAM for the allocator: [start, end) ranges, 4 KiB aligned. */
struct mem_range {
    uint64_t start, end;
};
#define LIVE_MAX_RANGES 8
void pages_init(const struct mem_range *r, unsigned n);
uint64_t pages_total(void); /* pages the allocator manages */
uint64_t pages_free(void);  /* of those, not in the balloon */
/* Writes one word into every free page below 4 GiB (so that the host backs them); returns
 * how many pages it touched. */
uint64_t pages_touch(void);

/* Finds and starts the balloon and the agent (after pages_init), routing their interrupts. */
void live_init(const char *version, const char *cmdline, uint64_t ram_bytes);
/* From the VEC_VIRTIO interrupt: acknowledges the devices and notes what to do. */
void live_irq(void);
/* Whether live_work has something to do (checked with interrupts off before HLT). */
bool live_pending(void);
/* Main loop: balloon toward its target, handle host messages, publish what changed. */
void live_work(void);
/* Publishes every key now (after a vCPU change, at boot). */
void agent_publish(void);
/* Test helpers: one raw line to the host; n keys flood/0.. then sync. */
void agent_send_raw(const char *text, unsigned n);
void agent_flood(unsigned n);

struct balloon_info {
    bool present;
    const char *error;
    uint64_t held, target; /* pages */
};
void balloon_get_info(struct balloon_info *ret);
bool agent_present(void);
