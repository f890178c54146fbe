/*
 * retry: the retry schedule of a subscription, as pure functions.
 *
 * Retries travel through delay queues (docs/architecture.md, "RabbitMQ"): one queue per distinct
 * delay ("tier"), with a queue-level TTL that dead-letters back to the failing
 * queue only. Because a queue-level TTL expires only the queue's head, every
 * message in a tier must wait the same time; so the schedule is quantised to
 * a fixed list of tiers, computed once from the policy:
 *
 *   delays [1s, 5s, 30s]          tiers 1s, 5s, 30s; attempt 4+ waits 30s
 *   backoff 1s x2 max 10s, 6 tries tiers 1s, 2s, 4s, 8s, 10s
 *
 * Jitter shortens a delay by up to `jitter` of itself with a per-message
 * expiration inside the tier (a message can only leave earlier than the
 * tier's TTL, never later, so the head-of-line effect is bounded by the
 * jitter itself). A delay asked for by the handler (ctx.retry) is rounded up
 * to the nearest tier, or down to the longest one.
 */
#ifndef WR_RETRY_H
#define WR_RETRY_H

#include <stddef.h>
#include <stdint.h>

#define WR_RETRY_MAX_TIERS 32

/*
 * When and how often a failed message is tried again. Either an explicit list
 * of delays (attempt n+1 waits delays[n-1]; the last delay repeats) or
 * exponential backoff (initial * multiplier^(n-1), capped at max, each delay
 * shortened by up to `jitter` of itself at random).
 * config.h loads it from retry and defaults.retry (docs/configuration.md).
 */
typedef struct {
    int max_attempts;   /* attempts in all, the first included; 1..100, default 5 */
    int64_t *delays_ms; /* explicit delays, delay_count of them; NULL with backoff */
    int delay_count;
    int64_t initial_ms; /* backoff.initial, default 1s */
    double multiplier;  /* backoff.multiplier, 1.0..10.0, default 2.0 */
    int64_t max_ms;     /* backoff.max, default 5m */
    double jitter;      /* backoff.jitter, 0.0..1.0, default 0.0 */
} wr_retry_policy;

typedef struct {
    int64_t delay_ms[WR_RETRY_MAX_TIERS]; /* ascending, distinct */
    int count;
} wr_retry_tiers;

/* The tiers POLICY needs (the distinct delays of attempts 1 .. max_attempts-1). */
void wr_retry_tiers_of(const wr_retry_policy *policy, wr_retry_tiers *out);

/* The delay before attempt FAILED+1, after attempt FAILED (1-based) failed,
 * before jitter. */
int64_t wr_retry_base_delay(const wr_retry_policy *policy, int failed);

/*
 * Where a message that failed attempt FAILED goes: the tier index in *TIER and
 * the per-message expiration in *EXPIRE_MS (equal to the tier's delay without
 * jitter; shorter with it). REQUESTED_MS >= 0 is a delay the handler asked
 * for. RAND01 is a uniform number in [0, 1) from the caller, so tests can pin
 * it. Returns 0, or -1 when the message has no attempts left (it goes to the
 * DLQ).
 */
int wr_retry_plan(const wr_retry_policy *policy, const wr_retry_tiers *tiers, int failed,
                  int64_t requested_ms, double rand01, int *tier, int64_t *expire_ms);

/* The name of the delay queue for tier delay DELAY_MS of QUEUE, e.g.
 * "orders.events.retry.5s" or "orders.events.retry.1500ms". Returns the
 * length written (snprintf semantics). */
int wr_retry_queue_name(const char *queue, int64_t delay_ms, char *out, size_t cap);

#endif
