/*
 * probe: the background checks behind /readyz and the queue-depth metrics.
 *
 * One thread with its own Redis connection and its own broker connection
 * (never a worker's: those belong to their threads). Every second it PINGs
 * Redis and stores the answer in the registry, so /readyz turns not-ready
 * within seconds of Redis going away even when no message flows. Every
 * http.queue_poll it reads, by passive queue.declare, the ready messages of
 * each subscription's main queue, its delay tiers (as the live retry policy
 * has them), its wait queue and its DLQ: consumer lag and DLQ growth are
 * visible without a message passing through warren.
 */
#ifndef WR_PROBE_H
#define WR_PROBE_H

#include "config.h"
#include "metrics.h"
#include "reload.h"

typedef struct wr_probe wr_probe;

/* Start the thread. REL gives the live retry policies. NULL when it cannot start. */
wr_probe *wr_probe_start(const wr_config *cfg, wr_reloader *rel, wr_metrics *m);

/* Stop the thread (within about a second) and free it. */
void wr_probe_stop(wr_probe *p);

/*
 * How many times (process-wide) the prober saw Redis answer again after it
 * did not. While Redis is away the prober asks four times a second, so a
 * worker waiting for Redis (or holding a connection that may have died with
 * the old server) learns of its return within about 250 ms: compare the
 * number with the one seen before.
 */
unsigned wr_probe_redis_returns(void);

#endif
