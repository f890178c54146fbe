/*
 * decide: what happens to a message once its handler has run (or could not
 * run), as one pure function. The worker acts on it; `warren exec` prints it;
 * both get the same answer for the same outcome, attempt and policy.
 *
 *   ok                          -> ack (its events published and confirmed first;
 *                                  the record done as "ok")
 *   error, timeout, ctx.retry   -> retry in the delay tier the policy picks
 *                                  (record released), or, after the last
 *                                  attempt, the DLQ (record done as
 *                                  "dead-lettered")
 *   ctx.reject                  -> the DLQ at once (record done as "rejected")
 *   invalid (undecodable)       -> the DLQ at once (record done as "dead-lettered")
 *   anything but ok while the worker is shutting down
 *                               -> back to the queue untouched (record unclaimed):
 *                                  interrupted, not failed
 */
#ifndef WR_DECIDE_H
#define WR_DECIDE_H

#include <stddef.h>
#include <stdint.h>

#include "outcome.h"
#include "retry.h"

/* What the worker does with a delivery. */
typedef enum {
    WR_ACT_NONE = 0,  /* not started or interrupted: back to the queue */
    WR_ACT_OK,        /* handled: its publishes confirmed, its record done, acked */
    WR_ACT_DLQ,       /* failed for good or invalid: its DLQ copy confirmed, acked */
    WR_ACT_RETRY,     /* failed, attempts left: its copy in a delay queue confirmed, acked */
    WR_ACT_WAIT,      /* its key is busy in another process: a copy in the wait queue */
    WR_ACT_DUPLICATE, /* already done: acked, nothing ran */
    WR_ACT_PARKED,    /* a causal gate's predecessor is not done: parked in Redis (gates.h),
                         acked, nothing ran */
} wr_action;

/* The journal's and the logs' word for A: "ok", "dead-lettered", "retried",
 * "deferred", "duplicate", "parked", "returned". */
const char *wr_action_name(wr_action a);

typedef struct {
    wr_action action;         /* OK, RETRY, DLQ or NONE */
    const char *done_outcome; /* OK, DLQ: the record's outcome ("ok", "rejected",
                                 "dead-lettered"); NULL otherwise */
    const char *error_class;  /* RETRY, DLQ: x-warren-error-class ("error", "timeout",
                                 "rejected", "invalid"); NULL for OK */
    int tier;                 /* RETRY: the delay tier (index in the tiers) */
    int64_t delay_ms;         /* RETRY: how long the copy waits (jitter applied) */
    int exhausted;            /* DLQ: no attempts were left */
} wr_decision;

/*
 * Decide for a message whose handler ended with OUT at attempt ATTEMPT (1 the
 * first), under POLICY and its TIERS. REQUESTED_MS >= 0: the delay ctx.retry
 * asked for. RAND01 in [0, 1): the jitter's draw (tests pin it). ABORTING: the
 * worker is shutting down (an unfinished run is not a failure).
 */
wr_decision wr_decide(wr_outcome out, int attempt, const wr_retry_policy *policy,
                      const wr_retry_tiers *tiers, int64_t requested_ms, double rand01,
                      int aborting);

/* What the commit of an ok message's ctx.store writes came to (the commit
 * script's answer, sidecar/scripts/finish.lua; exec's offcommit.h runs the same). */
typedef enum {
    WR_COMMIT_APPLIED = 0, /* every write applied (or there were none) */
    WR_COMMIT_REFUSED,     /* a write Redis would refuse (a key of another type, a
                              counter that is not an integer): nothing applied */
    WR_COMMIT_CONFLICT,    /* a value the handler read changed before the commit:
                              nothing applied */
    WR_COMMIT_FAILED,      /* the script raised on the record: nothing applied */
} wr_commit_result;

/*
 * Decide for an ok message whose commit came to RESULT, WHY being the
 * script's words. Returns WR_ACT_OK (applied), WR_ACT_DLQ (refused: no retry
 * can change it; reason store-refused) or WR_ACT_NONE (conflict, failed: back
 * to the queue, it runs again from fresh state). Writes the error that the
 * log line, the DLQ copy and `warren exec` show into TEXT (SIZE bytes; "" when
 * applied), so the worker and exec say it in the same words.
 */
wr_action wr_decide_commit(wr_commit_result result, const char *why, char *text, size_t size);

#endif
