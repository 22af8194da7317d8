/* 8250/16550A UART model, enough for the mini guest and Linux's 8250 driver (scratch test,
 * loopback probe, THRE and receive interrupts). Output is "transmitted" at once. */
#include "serial.h"
#include "mem.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UART_IER_RDI  0x01
#define UART_IER_THRI 0x02
#define UART_IIR_NONE 0x01
#define UART_IIR_THRI 0x02
#define UART_IIR_RDI  0x04
#define UART_LSR_DR   0x01
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40
#define UART_LCR_DLAB 0x80
#define UART_MCR_LOOP 0x10
#define UART_FCR_FIFO 0x01

struct serial {
    pthread_mutex_t lock;
    const serial_ops *ops;
    void *opaque;
    int log_fd;
    uint64_t log_limit, log_bytes;
    /* registers */
    uint8_t ier, iir, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
    bool thre_pending;
    int irq_level;
    /* output ring */
    char ring[SERIAL_RING_SIZE];
    uint64_t out_seq;
    /* input queue */
    char in[SERIAL_INPUT_SIZE];
    size_t in_head, in_len;
    bool in_was_full;
    uint64_t bytes_in;
};

static void reset_locked(serial *s)
{
    s->ier = 0;
    s->iir = UART_IIR_NONE;
    s->lcr = 0x03;
    s->mcr = 0x08;
    s->lsr = UART_LSR_THRE | UART_LSR_TEMT;
    s->msr = 0xb0; /* DCD | DSR | CTS */
    s->scr = 0;
    s->dll = 0x0c;
    s->dlm = 0;
    s->fcr = 0;
    s->thre_pending = false;
}

serial *serial_new(const serial_ops *ops, void *opaque, int log_fd, uint64_t log_limit)
{
    serial *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->ops = ops;
    s->opaque = opaque;
    s->log_fd = log_fd;
    s->log_limit = log_limit;
    reset_locked(s);
    return s;
}

void serial_free(serial *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void update_irq_locked(serial *s)
{
    uint8_t iir = UART_IIR_NONE;
    if ((s->ier & UART_IER_RDI) && s->in_len)
        iir = UART_IIR_RDI;
    else if ((s->ier & UART_IER_THRI) && s->thre_pending)
        iir = UART_IIR_THRI;
    s->iir = iir;
    int level = iir != UART_IIR_NONE;
    if (level != s->irq_level) {
        s->irq_level = level;
        if (s->ops && s->ops->set_irq)
            s->ops->set_irq(s->opaque, level);
    }
}

void serial_reset(serial *s)
{
    pthread_mutex_lock(&s->lock);
    reset_locked(s);
    s->irq_level = 0;
    pthread_mutex_unlock(&s->lock);
}

static void output_locked(serial *s, uint8_t c)
{
    s->ring[s->out_seq % SERIAL_RING_SIZE] = (char)c;
    s->out_seq++;
    if (s->log_fd >= 0 && (!s->log_limit || s->log_bytes < s->log_limit)) {
        ssize_t r = write(s->log_fd, &c, 1);
        (void)r; /* a full disk must not stop the guest */
        if (++s->log_bytes == s->log_limit) {
            static const char note[] = "\n[nuvem-vmm: serial log limit reached]\n";
            r = write(s->log_fd, note, sizeof(note) - 1);
        }
    }
}

static bool push_input_locked(serial *s, uint8_t c)
{
    if (s->in_len == SERIAL_INPUT_SIZE)
        return false;
    s->in[(s->in_head + s->in_len) % SERIAL_INPUT_SIZE] = (char)c;
    s->in_len++;
    return true;
}

void serial_pio(serial *s, unsigned offset, bool is_write, uint8_t *data)
{
    bool notify = false;
    pthread_mutex_lock(&s->lock);
    bool dlab = s->lcr & UART_LCR_DLAB;
    if (is_write) {
        uint8_t v = *data;
        switch (offset) {
        case 0:
            if (dlab) {
                s->dll = v;
            } else if (s->mcr & UART_MCR_LOOP) {
                push_input_locked(s, v);
                s->thre_pending = true;
            } else {
                output_locked(s, v);
                s->thre_pending = true;
                notify = true;
            }
            break;
        case 1:
            if (dlab) {
                s->dlm = v;
            } else {
                if ((v & UART_IER_THRI) && !(s->ier & UART_IER_THRI))
                    s->thre_pending = true;
                s->ier = v & 0x0f;
            }
            break;
        case 2:
            s->fcr = v;
            if (v & 0x02) { /* clear receive FIFO */
                s->in_len = 0;
                notify = true;
            }
            break;
        case 3:
            s->lcr = v;
            break;
        case 4:
            s->mcr = v & 0x1f;
            break;
        case 7:
            s->scr = v;
            break;
        default:
            break;
        }
    } else {
        uint8_t v = 0;
        switch (offset) {
        case 0:
            if (dlab) {
                v = s->dll;
            } else if (s->in_len) {
                v = (uint8_t)s->in[s->in_head];
                s->in_head = (s->in_head + 1) % SERIAL_INPUT_SIZE;
                s->in_len--;
                s->bytes_in++;
                if (s->in_was_full) {
                    s->in_was_full = false;
                    notify = true;
                }
            }
            break;
        case 1:
            v = dlab ? s->dlm : s->ier;
            break;
        case 2:
            v = s->iir | ((s->fcr & UART_FCR_FIFO) ? 0xc0 : 0);
            if (s->iir == UART_IIR_THRI)
                s->thre_pending = false;
            break;
        case 3:
            v = s->lcr;
            break;
        case 4:
            v = s->mcr;
            break;
        case 5:
            v = UART_LSR_THRE | UART_LSR_TEMT | (s->in_len ? UART_LSR_DR : 0);
            break;
        case 6:
            if (s->mcr & UART_MCR_LOOP) {
                /* RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD */
                v = (uint8_t)(((s->mcr & 0x02) << 3) | ((s->mcr & 0x01) << 5) |
                              ((s->mcr & 0x04) << 4) | ((s->mcr & 0x08) << 4));
            } else {
                v = s->msr;
            }
            break;
        case 7:
            v = s->scr;
            break;
        default:
            break;
        }
        *data = v;
    }
    update_irq_locked(s);
    pthread_mutex_unlock(&s->lock);
    if (notify && s->ops && s->ops->notify)
        s->ops->notify(s->opaque);
}

size_t serial_read_output(serial *s, uint64_t *seq, char *buf, size_t max, uint64_t *ret_lost)
{
    pthread_mutex_lock(&s->lock);
    uint64_t start = *seq, lost = 0;
    if (s->out_seq > SERIAL_RING_SIZE && start < s->out_seq - SERIAL_RING_SIZE) {
        lost = s->out_seq - SERIAL_RING_SIZE - start;
        start = s->out_seq - SERIAL_RING_SIZE;
    }
    if (start > s->out_seq)
        start = s->out_seq;
    size_t n = (size_t)(s->out_seq - start);
    if (n > max)
        n = max;
    for (size_t i = 0; i < n;) {
        size_t off = (size_t)((start + i) % SERIAL_RING_SIZE);
        size_t chunk = SERIAL_RING_SIZE - off;
        if (chunk > n - i)
            chunk = n - i;
        memcpy(buf + i, s->ring + off, chunk);
        i += chunk;
    }
    *seq = start + n;
    pthread_mutex_unlock(&s->lock);
    if (ret_lost)
        *ret_lost = lost;
    return n;
}

uint64_t serial_output_seq(serial *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t v = s->out_seq;
    pthread_mutex_unlock(&s->lock);
    return v;
}

size_t serial_push_input(serial *s, const char *buf, size_t n)
{
    pthread_mutex_lock(&s->lock);
    size_t i = 0;
    while (i < n && push_input_locked(s, (uint8_t)buf[i]))
        i++;
    if (s->in_len == SERIAL_INPUT_SIZE)
        s->in_was_full = true;
    update_irq_locked(s);
    pthread_mutex_unlock(&s->lock);
    return i;
}

size_t serial_input_space(serial *s)
{
    pthread_mutex_lock(&s->lock);
    size_t v = SERIAL_INPUT_SIZE - s->in_len;
    if (!v)
        s->in_was_full = true;
    pthread_mutex_unlock(&s->lock);
    return v;
}

void serial_counters(serial *s, uint64_t *ret_out, uint64_t *ret_in)
{
    pthread_mutex_lock(&s->lock);
    *ret_out = s->out_seq;
    *ret_in = s->bytes_in;
    pthread_mutex_unlock(&s->lock);
}

void serial_get_state(serial *s, serial_state *ret)
{
    memset(ret, 0, sizeof(*ret));
    pthread_mutex_lock(&s->lock);
    ret->ier = s->ier;
    ret->lcr = s->lcr;
    ret->mcr = s->mcr;
    ret->scr = s->scr;
    ret->dll = s->dll;
    ret->dlm = s->dlm;
    ret->fcr = s->fcr;
    ret->thre_pending = s->thre_pending;
    ret->in_len = (uint32_t)s->in_len;
    for (size_t i = 0; i < s->in_len; i++)
        ret->in[i] = s->in[(s->in_head + i) % SERIAL_INPUT_SIZE];
    pthread_mutex_unlock(&s->lock);
}

void serial_set_state(serial *s, const serial_state *st)
{
    pthread_mutex_lock(&s->lock);
    s->ier = st->ier & 0x0f;
    s->lcr = st->lcr;
    s->mcr = st->mcr & 0x1f;
    s->scr = st->scr;
    s->dll = st->dll;
    s->dlm = st->dlm;
    s->fcr = st->fcr;
    s->thre_pending = st->thre_pending;
    s->in_head = 0;
    s->in_len = st->in_len <= SERIAL_INPUT_SIZE ? st->in_len : SERIAL_INPUT_SIZE;
    memcpy(s->in, st->in, s->in_len);
    s->irq_level = 0; /* the new machine's line is low: raise it if the state says so */
    update_irq_locked(s);
    pthread_mutex_unlock(&s->lock);
}
