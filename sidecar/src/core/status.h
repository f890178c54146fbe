/*
 * status: what each subscription is doing now and why, for the operator, as
 * GET /status (statusjson.h) and `warren status` (statusview.h) show it.
 *
 * Per subscription: consuming or paused and every reason why (its breaker
 * open or without a probe slot, Redis not answering, the broker blocking
 * publishes, draining, workers not connected), its queue depths (main,
 * delay tiers, wait, DLQ), its lag (ready and held messages, the age of the
 * oldest waiting one, the rates in and out over the last minute and whether
 * it is catching up), what it did since start (outcomes, DLQ copies by
 * reason code), the handler version running and whether the file on disk
 * differs (a refused reload), and the last failures.
 *
 * wr_status_why is the one decision (pure: figures in, words out), so the
 * JSON, the text and /readyz say the same thing; wr_status_lag turns the
 * readings of the last minute into a verdict. Pure: statusjson.h builds the
 * JSON from the registry, statusview.h fetches and prints it.
 */
#ifndef WR_STATUS_H
#define WR_STATUS_H

#include <stdint.h>
#include <stdio.h>

#include "breakers.h"
#include "metrics.h"

/* What keeps a subscription from consuming, as words. */
typedef struct {
    int paused;       /* 1: it takes no messages now */
    int n;            /* reasons below */
    char why[5][512]; /* "breaker payments open since T, next probe at T", ... */
} wr_status_verdict;

/*
 * Decide for subscription NAME from its figures F, the process's P and its
 * breaker B (NULL: none) at wall clock NOW_MS. Paused when any of: not
 * started, draining, Redis not answering, its breaker open (or half-open with
 * every probe slot taken), the broker blocking publishes, no worker
 * connected. Reasons are in that order.
 */
void wr_status_why(const char *name, const wr_sub_figures *f, const wr_proc_figures *p,
                   const wr_brk_status *b, int64_t now_ms, wr_status_verdict *out);

/*
 * A subscription's consumer lag, from the prober's readings of its main queue
 * (metrics.h: wr_lag_sample) and what its workers took.
 *
 * RabbitMQ says over AMQP only how many messages are ready (queue.declare-ok);
 * the unacked ones and the age of the head message are not told (that is the
 * management plugin's HTTP API). So: held is what this process's workers
 * hold in their batches now; the age is bounded by the newest AMQP timestamp
 * among the messages taken (a queue hands out in order, so what still waits
 * was published after it, retry copies aside); and the rates come from two
 * readings: out = messages finished per second, in = (the change in ready +
 * the change in held + finished) per second, which is what arrived in the
 * queue when this process is its only consumer (deliveries prefetched but
 * not yet in a batch count as neither: at most the prefetch, for a moment).
 */
typedef struct {
    long ready;          /* the broker's ready count at the newest reading; -1: none */
    long held;           /* in this process's workers' batches now */
    double window_s;     /* the readings the rates span; 0: fewer than two */
    double in_per_s;     /* arrived in the main queue */
    double out_per_s;    /* finished by this process */
    double oldest_max_s; /* the oldest waiting message is at most this old; 0 when none
                          * waits; -1: unknown (no message taken carried a timestamp) */
    int other_consumers; /* the queue has consumers besides this process's workers */
    char verdict[200];   /* "catching up: ...", "falling behind: ...", "stuck: ...", ... */
} wr_status_lag_t;

/*
 * Work out the lag from readings S[0..N) (oldest first), HELD (in the
 * workers' batches now), the newest timestamp among the messages taken NEWEST_TS_MS
 * (0: none), the queue's CONSUMERS and this process's CONNECTED workers, at
 * wall clock NOW_MS. The rates span the last WINDOW_MS (or every reading when
 * they span less). Pure.
 */
void wr_status_lag(const wr_lag_sample *s, int n, long held, int64_t newest_ts_ms, long consumers,
                   int connected, double window_ms, int64_t now_ms, wr_status_lag_t *out);

#endif
