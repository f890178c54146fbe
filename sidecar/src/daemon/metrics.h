/*
 * metrics: what warren counts, and its Prometheus text exposition.
 *
 * Every worker owns one wr_wstats and is its only writer: counters and
 * histograms are relaxed atomics bumped on the worker's own thread, so the
 * hot path takes no lock and shares no cache line with other workers. A
 * scrape (the HTTP thread, http.h) reads every worker's block and sums them
 * per subscription; a figure read mid-update is at most one message behind.
 *
 * Figures that are not per message come from their owners at scrape time:
 * breaker states and transitions (breakers.h), handler versions and reload
 * counts (reload.h), queue depths and Redis reachability (probe.h, which
 * polls them on its own connections and stores them here under a lock).
 *
 * Naming follows Prometheus conventions: warren_ prefix, base units
 * (seconds), _total for counters, labels for subscription, outcome, reason,
 * attempt. A reason label is the code of outcome.h, the one DLQ headers, logs,
 * `warren trace` and `warren dlq --reason` carry. README "Metrics" lists every family.
 */
#ifndef WR_METRICS_H
#define WR_METRICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "outcome.h"

/* Buckets (upper bounds, seconds) shared by every histogram: 100 us .. 30 s. */
#define WR_HIST_BUCKETS 17
extern const double wr_hist_bounds[WR_HIST_BUCKETS];

typedef struct {
    atomic_uint_fast64_t bucket[WR_HIST_BUCKETS + 1]; /* per bucket (not cumulative); +Inf last */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_ns;
} wr_hist;

/* How a delivery ended, as counted by warren_messages_handled_total{outcome}. */
typedef enum {
    WR_MO_OK = 0,        /* handler succeeded; its events confirmed, record done */
    WR_MO_RETRIED,       /* failed, copy sent to a delay queue */
    WR_MO_DEAD_LETTERED, /* failed for good (attempts used up, crash-looped) */
    WR_MO_REJECTED,      /* the handler rejected it (ctx.reject): DLQ at once */
    WR_MO_INVALID,       /* undecodable or without a key: DLQ without running */
    WR_MO_DUPLICATE,     /* already done: acked, nothing run */
    WR_MO_DEFERRED,      /* its key is busy on another worker: sent to the wait queue */
    WR_MO_RETURNED,      /* given back to the broker unfinished (lease lost, copy refused) */
    WR_MO_PARKED,        /* a causal gate's predecessor not done: parked in Redis (gates.h) */
    WR_MO_COUNT
} wr_met_outcome;

#define WR_MET_MAX_ATTEMPT 100 /* retry.max_attempts' upper bound */

/* The figures of one worker. Zeroed at creation; written by that worker only. */
typedef struct {
    atomic_uint_fast64_t received;
    atomic_uint_fast64_t outcomes[WR_MO_COUNT];
    atomic_uint_fast64_t dead_letters[WR_RS_COUNT];       /* DLQ copies by reason (outcome.h): the
                                                             label is the DLQ header's code */
    atomic_uint_fast64_t retries[WR_MET_MAX_ATTEMPT + 1]; /* by the attempt that failed */
    atomic_uint_fast64_t redis_errors;
    atomic_uint_fast64_t replica_waits_failed; /* batches whose commit too few replicas
                                                   acknowledged (redis.min_replicas_acked) */
    atomic_uint_fast64_t reconnects;           /* broker connections made after the first */
    atomic_uint_fast64_t lease_lost;    /* outcomes not recorded: another worker owned the key */
    atomic_uint_fast64_t forged;        /* messages whose x-warren-* headers were not signed by
                                           warren (sign.h): ignored */
    atomic_uint_fast64_t lane_followed; /* messages that followed an unfinished earlier
                                           message of their ordering key (ordering.h) */
    /* per causal gate (gates.h), by the gate's index in its subscription */
    atomic_uint_fast64_t gate_parked[WR_MAX_GATES];   /* parked behind the gate */
    atomic_uint_fast64_t gate_released[WR_MAX_GATES]; /* sent back to the queue, predecessor done */
    atomic_uint_fast64_t gate_timeouts[WR_MAX_GATES]; /* not done within the gate's timeout */
    wr_hist handler;                                  /* handler run time */
    wr_hist redis_claim, redis_finish;                /* one round trip per batch each */
    wr_hist redis_journal;                            /* the batch's journal entries (journal.h) */
    wr_hist redis_wait;                  /* WAIT for replicas (redis.min_replicas_acked) */
    atomic_uint_fast64_t journal_errors; /* batches whose journal entries were not written */
    wr_hist confirm;                     /* a batch's wait for its publish confirms */
    atomic_int in_flight;                /* deliveries of the batch being processed */
    atomic_llong newest_ts;              /* the latest AMQP timestamp (s) among the messages
                                            taken; 0: none carried one (status.h: lag) */
    atomic_int connected;                /* 1 while consuming (or paused by its breaker) */
    atomic_int blocked;                  /* 1 while the broker blocks our publishes (alarm) */
    atomic_int busy;                     /* 1 inside a batch */
    atomic_llong beat_ms;                /* wr_mono_ms() of the last progress inside a batch */
    int64_t stuck_after_ms;              /* busy without progress this long = stuck */
} wr_wstats;

/* Add one observation of SECONDS to H (relaxed; the owner thread only). */
void wr_hist_observe(wr_hist *h, double seconds);

static inline void wr_stat_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* ---- the process's registry ------------------------------------------------------- */

typedef struct wr_metrics wr_metrics;
struct wr_breakers;
struct wr_reloader;

/* Create the registry for CFG: one wr_wstats per worker of every subscription. */
wr_metrics *wr_metrics_create(const wr_config *cfg);
void wr_metrics_destroy(wr_metrics *m);

/* The stats block of worker INDEX of subscription SUB. */
wr_wstats *wr_metrics_worker(wr_metrics *m, int sub, int index);

/* Where scrape-time figures come from (either may be NULL). */
void wr_metrics_sources(wr_metrics *m, struct wr_breakers *brk, struct wr_reloader *rel);

/* Queue depths, stored by the prober. KIND: "main", "retry", "wait", "dlq".
 * MESSAGES < 0: the queue could not be read (missing, or the broker is away). */
void wr_metrics_set_queue(wr_metrics *m, int sub, const char *queue, const char *kind,
                          long messages, long consumers);
void wr_metrics_queue_poll_failed(wr_metrics *m);

/* Redis reachability, stored by the prober; and the process phase. */
void wr_metrics_set_redis(wr_metrics *m, int up, const char *error);
void wr_metrics_set_draining(wr_metrics *m, int draining);
void wr_metrics_set_started(wr_metrics *m);

/* Write every metric family in the Prometheus text format (0.0.4) to FP. */
void wr_metrics_render(wr_metrics *m, FILE *fp);

/*
 * Health for the probes. Liveness: 1 unless a worker has been inside a batch
 * without progress for longer than its stuck_after_ms. Readiness: started,
 * not draining, Redis answering, every worker connected to the broker, and
 * handlers loaded (a worker exists only with its handler loaded). Each writes
 * a one-line-per-check text report to FP.
 */
int wr_metrics_live(wr_metrics *m, FILE *fp);
int wr_metrics_ready(wr_metrics *m, FILE *fp);

/* ---- figures for status (status.h) ------------------------------------------------ */

/* One subscription's figures now. Queue depths: -1 when not read (yet). */
typedef struct {
    int workers, connected, blocked, in_flight;
    long depth_main, depth_retry, depth_wait, depth_dlq, consumers;
    int64_t newest_ts_ms; /* the latest AMQP timestamp among the messages taken (0: none) */
    uint64_t received;
    uint64_t outcomes[WR_MO_COUNT];
    uint64_t dead_letters[WR_RS_COUNT];
} wr_sub_figures;

/* The process's figures now. */
typedef struct {
    int started, draining;
    int redis_up;                /* answered within the staleness limit */
    char redis_error[256];       /* why not, when not */
    double redis_checked_ago_ms; /* since the prober's last answer (or try) */
} wr_proc_figures;

void wr_metrics_sub_figures(wr_metrics *m, int sub, wr_sub_figures *out);

/*
 * One reading of a subscription's main queue, taken each time the prober
 * stores its depth (http.queue_poll): the broker's ready count and what this
 * process's workers held and had finished by then. Consecutive readings give
 * the rates in and out (status.h: wr_status_lag).
 */
typedef struct {
    double mono_ms;    /* wr_mono_ms() of the reading */
    long ready;        /* ready messages in the main queue (the broker's count) */
    long held;         /* deliveries in the workers' batches (in flight) */
    uint64_t finished; /* finished so far: acked or moved on (every outcome but returned) */
} wr_lag_sample;

#define WR_LAG_SAMPLES 64 /* kept per subscription: a minute and more at a 1 s poll */

/* Copy subscription SUB's readings, oldest first, into OUT (room for CAP);
 * returns how many. */
int wr_metrics_lag_samples(wr_metrics *m, int sub, wr_lag_sample *out, int cap);
void wr_metrics_proc_figures(wr_metrics *m, wr_proc_figures *out);

/* The config, breakers and reloader the registry reports on (the last two may be NULL). */
const wr_config *wr_metrics_config(const wr_metrics *m);
struct wr_breakers *wr_metrics_breakers(const wr_metrics *m);
struct wr_reloader *wr_metrics_reloader(const wr_metrics *m);

/* Escape VALUE as a Prometheus label value (\\, \", \n) into OUT. */
void wr_metrics_label_escape(const char *value, char *out, size_t cap);

#endif
