/*
 * inflight: the idempotency keys a subscription's workers in this process are
 * handling right now, shared by those workers.
 *
 * Two copies of one message (a producer's duplicate, a redelivery) can meet in
 * one process: in one batch, in a worker's two batches in flight, or in two
 * workers. Without this set the second copy would find the first one's record
 * processing and be sent through the wait queue for a fixed delay (another
 * worker's lease), or, with this worker's own token, be taken for its own
 * earlier claim and run twice. With it, a worker puts a key in before it
 * claims the key and takes it out once the message is finished (acked or
 * given back); a copy whose key is in the set is held back in its worker,
 * unclaimed, until the key leaves, and is then claimed normally: it finds the
 * record done (acked as a duplicate) or released (its twin failed: it runs).
 *
 * A short critical section per call (a mutex around an open-addressing hash
 * set); keys are copied in. Thread-safe.
 */
#ifndef WR_INFLIGHT_H
#define WR_INFLIGHT_H

#include <stddef.h>

typedef struct wr_inflight wr_inflight;

wr_inflight *wr_inflight_create(void); /* NULL: out of memory */
void wr_inflight_destroy(wr_inflight *f);

/* Put KEY in. Returns 1 when it was not there (the caller now holds it), 0
 * when it already was (another copy holds it), -1 out of memory. */
int wr_inflight_add(wr_inflight *f, const char *key);

/* Take KEY out (the holder is done with it). */
void wr_inflight_remove(wr_inflight *f, const char *key);

/* 1 while KEY is in. */
int wr_inflight_has(wr_inflight *f, const char *key);

/* How many keys are in. */
size_t wr_inflight_count(wr_inflight *f);

#endif
