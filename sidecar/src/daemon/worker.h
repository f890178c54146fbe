/*
 * worker: one consumer thread of one subscription.
 *
 * A worker owns everything on its hot path: its AMQP connection (broker.h),
 * its Lua state (lua_rt.h), its publish pool. Nothing is shared with other
 * workers except the run flags below and the read-only config.
 *
 * The loop (docs/architecture.md, "Flow of one message"; worker.c has the detail):
 *
 *   take the deliveries already buffered (up to batch_size)
 *   for each: decode the envelope; claim its idempotency record; run the handler
 *       ok       -> publish its buffered events (persistent, confirmed)
 *       failed   -> publish a copy to its delay queue, or with its story to the
 *                   DLQ (confirmed)
 *       invalid  -> the DLQ at once, no handler run
 *   wait for the broker's confirms of everything the batch published, write
 *   the records (done, with the ctx.store writes; released for retries), then
 *   ack every message whose publishes were all confirmed (one ack with
 *   `multiple` when it can); return the others to the queue (nack + requeue):
 *   nothing is acked before what must survive it is stored.
 *
 * Two batches are in flight: batch n+1 is claimed and run while batch n's
 * confirms arrive and its records are written, so no Redis round trip and no
 * confirm wait stands alone on the path. Two copies of one key in this
 * process never run at once: the second is held back until the first is
 * finished (inflight.h), then found done and acked as a duplicate.
 *
 * Connection loss at any point acks nothing more; the worker reconnects
 * with capped, jittered backoff, re-declares its topology and resumes, and
 * the broker redelivers what was unacked.
 *
 * Circuit breaker: the subscription's breaker (shared by its workers) counts
 * retryable failures and timeouts. While it is open the worker stops
 * consuming (basic.cancel) and returns every delivery it holds that has not
 * started, without counting an attempt; half-open lets a few probes through;
 * when it closes, consumption resumes.
 *
 * Shutdown: when `stop` is set the worker cancels its consumer, finishes
 * the handler it is running and the publishes of its batch, returns
 * everything not started to the broker, closes and exits. When `abort` is
 * set as well (grace period over, or a second signal) the running handler
 * is interrupted and its message returned, not dead-lettered.
 */
#ifndef WR_WORKER_H
#define WR_WORKER_H

#include <stdatomic.h>

#include "breakers.h"
#include "config.h"
#include "inflight.h"
#include "metrics.h"
#include "reload.h"

typedef struct {
    atomic_int stop;    /* drain: stop consuming, finish in-flight work, exit */
    atomic_int abort;   /* stop now: interrupt handlers, return their messages */
    atomic_int orphans; /* records workers hold for messages they gave back while Redis
                           was away; others wait for them before consuming again */
} wr_run_flags;

typedef struct wr_worker wr_worker;

/*
 * Create worker INDEX of SUB: build its Lua state from LIVE (the handler and
 * policy of the moment, compiled here, so a broken handler fails in the
 * caller's thread) and start its thread. Between batches the worker follows
 * LIVE's changes (hot reload). It counts what it does in STATS (metrics.h),
 * which it alone writes. INFLIGHT is the subscription's set of keys in flight,
 * shared by its workers. CFG, LIVE, INFLIGHT, FLAGS and STATS must outlive the
 * worker.
 * Returns NULL with the reason in ERR.
 */
wr_worker *wr_worker_start(const wr_config *cfg, const wr_subscription *sub, int index,
                           wr_live *live, wr_shared_brk *brk, wr_breakers *named,
                           wr_inflight *inflight, wr_run_flags *flags, wr_wstats *stats, char *err,
                           size_t errcap);

/* 1 once the worker's thread has finished. */
int wr_worker_done(const wr_worker *w);

/* Interrupt the handler the worker is running, if any (after abort is set). */
void wr_worker_interrupt(wr_worker *w);

/* Join the thread (it must be done, or about to be) and free the worker. */
void wr_worker_free(wr_worker *w);

#endif
