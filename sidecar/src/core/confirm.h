/*
 * confirm: bookkeeping for publisher confirms on one channel.
 *
 * rabbitmq-c 0.11 has no confirm-wait helper (docs/architecture.md, "Platform facts"): after
 * confirm.select the broker numbers our publishes 1, 2, 3, ... and answers
 * with basic.ack / basic.nack frames whose delivery tag names one publish, or
 * with `multiple` every publish up to it. A mandatory publish that no queue
 * takes comes back as basic.return (before its ack), which we must also count
 * as a failure: a DLQ copy that was "confirmed" into nowhere is lost.
 *
 * A wr_confirm tracks a window of publishes: wr_confirm_add() gives each the
 * next sequence number, wr_confirm_trim() drops the oldest once nobody needs
 * them (a worker keeps two batches in flight, so the window spans both), the broker module feeds it
 * the frames, and the worker asks, per publish, whether it is safe (acked and not returned). Pure
 * logic, unit-tested without a broker.
 */
#ifndef WR_CONFIRM_H
#define WR_CONFIRM_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    WR_PUB_PENDING = 0, /* published, no answer yet */
    WR_PUB_ACKED,    /* the broker has it (persisted, for persistent messages to durable queues) */
    WR_PUB_NACKED,   /* the broker refused it */
    WR_PUB_RETURNED, /* mandatory and unroutable: acked later, but lost */
} wr_pub_state;

typedef struct {
    uint64_t first_seq; /* sequence number of entry 0 */
    size_t count;       /* entries in use */
    size_t cap;
    unsigned char *state; /* wr_pub_state per entry */
    size_t pending;       /* entries still WR_PUB_PENDING */
} wr_confirm;

void wr_confirm_init(wr_confirm *c);
void wr_confirm_free(wr_confirm *c);

/* Start a new batch whose first publish will carry sequence number NEXT_SEQ. */
void wr_confirm_reset(wr_confirm *c, uint64_t next_seq);

/* Forget the first N entries (their publishes no longer matter to anyone):
 * the entry after them becomes index 0 and first_seq moves on by N. */
void wr_confirm_trim(wr_confirm *c, size_t n);

/* Record one more publish; returns its index in the batch, or -1 when out of memory. */
long wr_confirm_add(wr_confirm *c);

/* Apply a basic.ack (ACK=1) or basic.nack (ACK=0) frame. Tags outside the
 * batch are ignored (they belong to an earlier, abandoned batch). */
void wr_confirm_on_ack(wr_confirm *c, uint64_t tag, int multiple, int ack);

/* Mark entry INDEX as returned (it will still be acked; the ack doesn't undo this). */
void wr_confirm_on_return(wr_confirm *c, size_t index);

/* State of entry INDEX. */
wr_pub_state wr_confirm_state(const wr_confirm *c, size_t index);

#endif
