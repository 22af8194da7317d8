/* The 8250 UART at COM1 (0x3f8, IRQ 4): guest output goes to an in-memory ring (read by the
 * console streams), to an optional log file, and guest input comes from a bounded queue.
 * Thread-safe: vCPU threads do port I/O while the main loop reads output and pushes input. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SERIAL_RING_SIZE  (64 * 1024) /* output history kept for console readers */
#define SERIAL_INPUT_SIZE 4096        /* input waiting for the guest to read it */

typedef struct serial serial;

typedef struct serial_ops {
    /* Drives the interrupt line (level: 1 while an interrupt is pending). */
    void (*set_irq)(void *opaque, int level);
    /* Output was produced or input space freed: the main loop should look. */
    void (*notify)(void *opaque);
} serial_ops;

/* log_fd: a file the output is appended to, or -1; borrowed (the caller closes it). At most
 * log_limit bytes go to it (0: no limit), then one truncation notice. */
serial *serial_new(const serial_ops *ops, void *opaque, int log_fd, uint64_t log_limit);
void serial_free(serial *s);
/* Back to power-on register state (output history and pending input are kept). */
void serial_reset(serial *s);
/* Guest port access; offset 0..7 from the base port. */
void serial_pio(serial *s, unsigned offset, bool is_write, uint8_t *data);
/* Copies output after *seq into buf (at most max bytes), advancing *seq. Output older than
 * the ring is skipped; *ret_lost (may be NULL) says how many bytes were. */
size_t serial_read_output(serial *s, uint64_t *seq, char *buf, size_t max, uint64_t *ret_lost);
/* Sequence number of the next output byte (bytes written so far). */
uint64_t serial_output_seq(serial *s);
/* Queues guest input; returns how many bytes fit. */
size_t serial_push_input(serial *s, const char *buf, size_t n);
size_t serial_input_space(serial *s);
/* Counters for stats. */
void serial_counters(serial *s, uint64_t *ret_out, uint64_t *ret_in);
/* Guest-visible UART state for save/restore: registers and the queued input. */
typedef struct serial_state {
    uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
    bool thre_pending;
    uint32_t in_len;
    char in[SERIAL_INPUT_SIZE]; /* oldest first */
} serial_state;
void serial_get_state(serial *s, serial_state *ret);
/* Loads the state and drives the interrupt line to what it implies. */
void serial_set_state(serial *s, const serial_state *st);
