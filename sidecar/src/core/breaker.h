/*
 * breaker: the circuit breaker state machine, as pure logic (the clock is
 * passed in).
 *
 *   closed --(failure ratio over the window, or N failures in a row)--> open
 *   open --(open_ms passed)--> half-open
 *   half-open --(half_open_probes successes)--> closed
 *   half-open --(one failure)--> open
 *
 * The window is the last `window` calls, or the calls of the last
 * `window_ms` (60 buckets). A result reported while the breaker is open (a
 * call let through before it opened) changes nothing. In half-open, allow()
 * hands out at most half_open_probes slots; a slot whose call never ran is
 * given back with wr_brk_release().
 *
 * Not thread-safe: callers that share a breaker (the workers of one
 * subscription, the handlers calling one named dependency) hold a lock around
 * each call; they are short.
 */
#ifndef WR_BREAKER_H
#define WR_BREAKER_H

#include <stdint.h>

#define WR_BRK_BUCKETS 60

/*
 * When a circuit breaker opens and how it recovers (below). Failures are
 * retryable handler failures and timeouts; rejections, duplicates and invalid
 * messages do not count.
 * config.h loads it from breaker, defaults.breaker and breakers.<name>.
 */
typedef struct {
    int enabled;              /* breaker.enabled, default 1 */
    int window;               /* calls in the sliding window, 1..1000, default 20 */
    int64_t window_ms;        /* or a time window (breaker.window_time), 0 = count window;
                                 1s..1h when set; then `window` is unused */
    int min_calls;            /* calls in the window before the ratio counts, 1..1000,
                                 default 10 */
    double failure_ratio;     /* failures/calls that open it, 0 < r <= 1, default 0.5 */
    int consecutive_failures; /* or this many failures in a row open it, 0 = off (default) */
    int64_t open_ms;          /* how long it stays open before half-open, 100ms..1h,
                                 default 30s */
    int half_open_probes;     /* calls let through half-open; that many successes close it,
                                 one failure re-opens it; 1..100, default 3 */
    int count_all;            /* breaker.counts: 0 "dependencies" (default): a subscription's
                                 breaker counts timeouts, ctx.retry and errors raised by a
                                 dependency (ctx.http, a named breaker), not the handler's
                                 own bugs; 1 "all": every retryable failure */
} wr_breaker_policy;

typedef enum { WR_BRK_CLOSED = 0, WR_BRK_OPEN, WR_BRK_HALF_OPEN } wr_brk_state;

typedef struct {
    wr_brk_state from, to;
    int calls, failures; /* the window when it opened */
} wr_brk_change;

typedef struct {
    wr_breaker_policy p;
    wr_brk_state state;
    unsigned char ring[1000]; /* count window: 1 = failure */
    int ring_pos, ring_fill, ring_fail;
    int64_t bucket_idx[WR_BRK_BUCKETS]; /* time window */
    int bucket_calls[WR_BRK_BUCKETS], bucket_fail[WR_BRK_BUCKETS];
    int consecutive;
    int64_t opened_at;
    int probes_given, probes_ok;
    long opened_count; /* times it opened since start */
} wr_brk;

const char *wr_brk_state_name(wr_brk_state s);

void wr_brk_init(wr_brk *b, const wr_breaker_policy *p);

/* The state at NOW (an open breaker whose time is up becomes half-open: CHG says
 * so when it is not NULL and the state changed). */
wr_brk_state wr_brk_state_at(wr_brk *b, int64_t now_ms, wr_brk_change *chg, int *changed);

/* May one call go ahead at NOW? 1 yes (in half-open it takes a probe slot). */
int wr_brk_allow(wr_brk *b, int64_t now_ms, wr_brk_change *chg, int *changed);

/* Give back a probe slot whose call never ran. */
void wr_brk_release(wr_brk *b);

/* Report one call's result (OK = 1 success, 0 failure). *CHANGED = 1 when the
 * state moved (CHG tells from where to where). */
void wr_brk_record(wr_brk *b, int64_t now_ms, int ok, wr_brk_change *chg, int *changed);

/* Milliseconds until an open breaker turns half-open (0 when not open). */
int64_t wr_brk_open_left(const wr_brk *b, int64_t now_ms);

#endif
