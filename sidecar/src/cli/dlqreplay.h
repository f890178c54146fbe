/*
 * dlqreplay: `warren dlq replay`, selected DLQ messages (dlqread.h) sent back
 * to their subscription's queue.
 *
 * Per message id: reset the idempotency record in Redis unless its outcome is
 * "ok" or a worker holds it (the key is derived as the worker does, from the
 * subscription's idempotency.key, so message_id, header: and json: sources
 * all work; the journal entry a done record keeps moves to the event's
 * journal first), publish one copy (persistent, mandatory, publisher
 * confirms; x-warren-* headers dropped but the route and trace, a new
 * signature, replay count and time) to the subscription's queue through the
 * default exchange, and ack every copy of the id in the DLQ only once the
 * copy is confirmed; an unconfirmed copy leaves the message in the DLQ. A
 * sent copy gets a "replayed" entry in the event's journal (journal.h; best
 * effort), which `warren trace` shows. A lost broker connection stops the
 * replay: the rest stays in the DLQ.
 */
#ifndef WR_DLQREPLAY_H
#define WR_DLQREPLAY_H

#include <stddef.h>

#include "config.h"
#include "dlqread.h"

typedef struct {
    int dry_run; /* say what would be done (records read when Redis answers), change nothing */
    int json;    /* the report as a JSON array */
    double rate; /* copies per second (> 0) */
} wr_dlqreplay_opts;

/* Replay the selected groups SEL[0..NSEL) of R (SUB's DLQ, read with CFG) as
 * O says, printing one entry per message and a summary on stdout. Returns the
 * exit status: 0 every one replayed, 1 one was not (said on stderr). */
int wr_dlqreplay_run(const wr_dlqreplay_opts *o, const wr_config *cfg, const wr_subscription *sub,
                     wr_dlqreader *r, const size_t *sel, size_t nsel);

#endif
