/*
 * breaker: the circuit breaker state machine. See breaker.h.
 */
#include "breaker.h"

#include <string.h>

const char *wr_brk_state_name(wr_brk_state s)
{
    return s == WR_BRK_OPEN ? "open" : s == WR_BRK_HALF_OPEN ? "half-open" : "closed";
}

static void clear_window(wr_brk *b)
{
    memset(b->ring, 0, sizeof(b->ring));
    b->ring_pos = b->ring_fill = b->ring_fail = 0;
    memset(b->bucket_idx, 0, sizeof(b->bucket_idx));
    memset(b->bucket_calls, 0, sizeof(b->bucket_calls));
    memset(b->bucket_fail, 0, sizeof(b->bucket_fail));
    b->consecutive = 0;
}

void wr_brk_init(wr_brk *b, const wr_breaker_policy *p)
{
    memset(b, 0, sizeof(*b));
    b->p = *p;
    if (b->p.window < 1 || b->p.window > (int)sizeof(b->ring)) {
        b->p.window = 20;
    }
    if (b->p.half_open_probes < 1) {
        b->p.half_open_probes = 1;
    }
    for (int i = 0; i < WR_BRK_BUCKETS; i++) {
        b->bucket_idx[i] = -1;
    }
}

static int64_t slot_ms(const wr_brk *b)
{
    int64_t s = b->p.window_ms / WR_BRK_BUCKETS;
    return s > 0 ? s : 1;
}

/* Calls and failures in the window at NOW. */
static void window(const wr_brk *b, int64_t now, int *calls, int *fails)
{
    if (b->p.window_ms <= 0) {
        *calls = b->ring_fill;
        *fails = b->ring_fail;
        return;
    }
    int64_t idx = now / slot_ms(b);
    *calls = *fails = 0;
    for (int i = 0; i < WR_BRK_BUCKETS; i++) {
        if (b->bucket_idx[i] > idx - WR_BRK_BUCKETS && b->bucket_idx[i] <= idx) {
            *calls += b->bucket_calls[i];
            *fails += b->bucket_fail[i];
        }
    }
}

static void add(wr_brk *b, int64_t now, int failed)
{
    if (b->p.window_ms <= 0) {
        if (b->ring_fill == b->p.window) {
            b->ring_fail -= b->ring[b->ring_pos]; /* the oldest leaves */
        } else {
            b->ring_fill++;
        }
        b->ring[b->ring_pos] = (unsigned char)failed;
        b->ring_fail += failed;
        b->ring_pos = (b->ring_pos + 1) % b->p.window;
        return;
    }
    int64_t idx = now / slot_ms(b);
    int slot = (int)(idx % WR_BRK_BUCKETS);
    if (b->bucket_idx[slot] != idx) {
        b->bucket_idx[slot] = idx;
        b->bucket_calls[slot] = b->bucket_fail[slot] = 0;
    }
    b->bucket_calls[slot]++;
    b->bucket_fail[slot] += failed;
}

static void move(wr_brk *b, wr_brk_state to, int64_t now, wr_brk_change *chg, int *changed)
{
    wr_brk_change c = {.from = b->state, .to = to};
    window(b, now, &c.calls, &c.failures);
    b->state = to;
    if (to == WR_BRK_OPEN) {
        b->opened_at = now;
        b->opened_count++;
    }
    if (to != WR_BRK_CLOSED) {
        b->probes_given = b->probes_ok = 0;
    }
    if (to != WR_BRK_OPEN) {
        clear_window(b);
    }
    if (chg != NULL) {
        *chg = c;
    }
    if (changed != NULL) {
        *changed = 1;
    }
}

wr_brk_state wr_brk_state_at(wr_brk *b, int64_t now, wr_brk_change *chg, int *changed)
{
    if (changed != NULL) {
        *changed = 0;
    }
    if (b->state == WR_BRK_OPEN && now - b->opened_at >= b->p.open_ms) {
        move(b, WR_BRK_HALF_OPEN, now, chg, changed);
    }
    return b->state;
}

int wr_brk_allow(wr_brk *b, int64_t now, wr_brk_change *chg, int *changed)
{
    if (!b->p.enabled) {
        if (changed != NULL) {
            *changed = 0;
        }
        return 1;
    }
    switch (wr_brk_state_at(b, now, chg, changed)) {
    case WR_BRK_CLOSED:
        return 1;
    case WR_BRK_OPEN:
        return 0;
    case WR_BRK_HALF_OPEN:
        if (b->probes_given < b->p.half_open_probes) {
            b->probes_given++;
            return 1;
        }
        return 0;
    }
    return 1;
}

void wr_brk_release(wr_brk *b)
{
    if (b->state == WR_BRK_HALF_OPEN && b->probes_given > b->probes_ok) {
        b->probes_given--;
    }
}

void wr_brk_record(wr_brk *b, int64_t now, int ok, wr_brk_change *chg, int *changed)
{
    if (changed != NULL) {
        *changed = 0;
    }
    if (!b->p.enabled) {
        return;
    }
    switch (wr_brk_state_at(b, now, chg, changed)) {
    case WR_BRK_OPEN:
        return; /* a late result of a call let through before it opened */
    case WR_BRK_HALF_OPEN:
        if (!ok) {
            move(b, WR_BRK_OPEN, now, chg, changed);
        } else if (++b->probes_ok >= b->p.half_open_probes) {
            move(b, WR_BRK_CLOSED, now, chg, changed);
        }
        return;
    case WR_BRK_CLOSED:
        break;
    }
    add(b, now, !ok);
    b->consecutive = ok ? 0 : b->consecutive + 1;
    int calls, fails;
    window(b, now, &calls, &fails);
    if ((b->p.consecutive_failures > 0 && b->consecutive >= b->p.consecutive_failures) ||
        (calls >= b->p.min_calls && calls > 0 &&
         (double)fails >= b->p.failure_ratio * (double)calls)) {
        move(b, WR_BRK_OPEN, now, chg, changed);
    }
}

int64_t wr_brk_open_left(const wr_brk *b, int64_t now)
{
    if (b->state != WR_BRK_OPEN) {
        return 0;
    }
    int64_t left = b->opened_at + b->p.open_ms - now;
    return left > 0 ? left : 0;
}
