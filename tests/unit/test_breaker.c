/*
 * test_breaker: the circuit breaker state machine (breaker.c) with an
 * injected clock: every transition (closed -> open by ratio, by consecutive
 * failures, with a time window; open -> half-open after open_for; half-open
 * -> closed after the probes succeed; half-open -> open on one failure),
 * probe slots and their release, late results while open, min_calls, and a
 * disabled breaker.
 */
#include "breaker.h"
#include "check.h"

static wr_breaker_policy policy(void)
{
    wr_breaker_policy p = {.enabled = 1,
                           .window = 10,
                           .window_ms = 0,
                           .min_calls = 4,
                           .failure_ratio = 0.5,
                           .consecutive_failures = 0,
                           .open_ms = 1000,
                           .half_open_probes = 2};
    return p;
}

static void rec(wr_brk *b, int64_t now, int ok, int *changed, wr_brk_change *c)
{
    wr_brk_record(b, now, ok, c, changed);
}

static void test_ratio_opens(void)
{
    wr_breaker_policy p = policy();
    wr_brk b;
    wr_brk_init(&b, &p);
    wr_brk_change c;
    int changed;
    CHECK_INT(wr_brk_allow(&b, 0, &c, &changed), 1);
    rec(&b, 0, 0, &changed, &c);
    rec(&b, 1, 0, &changed, &c);
    rec(&b, 2, 0, &changed, &c);
    CHECK_INT(changed, 0); /* 3 failures, but min_calls is 4 */
    CHECK_INT(b.state, WR_BRK_CLOSED);
    rec(&b, 3, 1, &changed, &c); /* 4 calls, 3 failures: 75% >= 50% */
    CHECK_INT(changed, 1);
    CHECK_INT(c.from, WR_BRK_CLOSED);
    CHECK_INT(c.to, WR_BRK_OPEN);
    CHECK_INT(c.calls, 4);
    CHECK_INT(c.failures, 3);
    CHECK_INT(b.opened_count, 1);
    CHECK_INT(wr_brk_allow(&b, 500, &c, &changed), 0);
    CHECK_INT(wr_brk_open_left(&b, 500), 503);
    /* a late result while open changes nothing */
    rec(&b, 600, 1, &changed, &c);
    CHECK_INT(changed, 0);
    CHECK_INT(b.state, WR_BRK_OPEN);
}

static void test_ratio_below_threshold_stays_closed(void)
{
    wr_breaker_policy p = policy();
    wr_brk b;
    wr_brk_init(&b, &p);
    int changed;
    for (int i = 0; i < 100; i++) {
        rec(&b, i, i % 4 != 0, &changed, NULL); /* a quarter fail: under 50% */
        CHECK_INT(changed, 0);
    }
    CHECK_INT(b.state, WR_BRK_CLOSED);
    /* the count window forgets: 10 successes then 4 failures = 4/10 < 50% */
    wr_brk_init(&b, &p);
    for (int i = 0; i < 10; i++) {
        rec(&b, i, 1, &changed, NULL);
    }
    for (int i = 0; i < 4; i++) {
        rec(&b, 20 + i, 0, &changed, NULL);
    }
    CHECK_INT(b.state, WR_BRK_CLOSED);
    rec(&b, 30, 0, &changed, NULL); /* 5 of the last 10 failed */
    CHECK_INT(b.state, WR_BRK_OPEN);
}

static void test_half_open_closes(void)
{
    wr_breaker_policy p = policy();
    wr_brk b;
    wr_brk_init(&b, &p);
    wr_brk_change c;
    int changed;
    for (int i = 0; i < 4; i++) {
        rec(&b, 0, 0, &changed, &c);
    }
    CHECK_INT(b.state, WR_BRK_OPEN);
    CHECK_INT(wr_brk_state_at(&b, 999, &c, &changed), WR_BRK_OPEN);
    CHECK_INT(wr_brk_state_at(&b, 1000, &c, &changed), WR_BRK_HALF_OPEN);
    CHECK_INT(changed, 1);
    CHECK_INT(c.from, WR_BRK_OPEN);
    CHECK_INT(c.to, WR_BRK_HALF_OPEN);
    /* two probe slots, then none */
    CHECK_INT(wr_brk_allow(&b, 1001, &c, &changed), 1);
    CHECK_INT(wr_brk_allow(&b, 1001, &c, &changed), 1);
    CHECK_INT(wr_brk_allow(&b, 1001, &c, &changed), 0);
    /* a slot whose call never ran comes back */
    wr_brk_release(&b);
    CHECK_INT(wr_brk_allow(&b, 1002, &c, &changed), 1);
    rec(&b, 1003, 1, &changed, &c);
    CHECK_INT(changed, 0);
    CHECK_INT(b.state, WR_BRK_HALF_OPEN);
    rec(&b, 1004, 1, &changed, &c);
    CHECK_INT(changed, 1);
    CHECK_INT(c.to, WR_BRK_CLOSED);
    CHECK_INT(wr_brk_allow(&b, 1005, &c, &changed), 1);
    /* closed again with a fresh window: three failures are under min_calls */
    rec(&b, 1006, 0, &changed, &c);
    rec(&b, 1007, 0, &changed, &c);
    rec(&b, 1008, 0, &changed, &c);
    CHECK_INT(b.state, WR_BRK_CLOSED);
}

static void test_half_open_reopens(void)
{
    wr_breaker_policy p = policy();
    wr_brk b;
    wr_brk_init(&b, &p);
    wr_brk_change c;
    int changed;
    for (int i = 0; i < 4; i++) {
        rec(&b, 0, 0, &changed, &c);
    }
    CHECK_INT(wr_brk_allow(&b, 1500, &c, &changed), 1); /* half-open, first probe */
    rec(&b, 1600, 1, &changed, &c);
    rec(&b, 1700, 0, &changed, &c); /* one failure re-opens */
    CHECK_INT(changed, 1);
    CHECK_INT(c.from, WR_BRK_HALF_OPEN);
    CHECK_INT(c.to, WR_BRK_OPEN);
    CHECK_INT(b.opened_count, 2);
    CHECK_INT(wr_brk_allow(&b, 2600, &c, &changed), 0); /* open for another second */
    CHECK_INT(wr_brk_allow(&b, 2700, &c, &changed), 1);
}

static void test_consecutive(void)
{
    wr_breaker_policy p = policy();
    p.min_calls = 1000; /* the ratio never counts */
    p.window = 1000;
    p.consecutive_failures = 3;
    wr_brk b;
    wr_brk_init(&b, &p);
    int changed;
    rec(&b, 0, 0, &changed, NULL);
    rec(&b, 1, 0, &changed, NULL);
    rec(&b, 2, 1, &changed, NULL); /* a success resets the run */
    rec(&b, 3, 0, &changed, NULL);
    rec(&b, 4, 0, &changed, NULL);
    CHECK_INT(b.state, WR_BRK_CLOSED);
    rec(&b, 5, 0, &changed, NULL);
    CHECK_INT(b.state, WR_BRK_OPEN);
}

static void test_time_window(void)
{
    wr_breaker_policy p = policy();
    p.window_ms = 60000; /* 1 s buckets */
    wr_brk b;
    wr_brk_init(&b, &p);
    int changed;
    rec(&b, 0, 0, &changed, NULL);
    rec(&b, 1000, 0, &changed, NULL);
    rec(&b, 2000, 0, &changed, NULL);
    /* a minute later the old failures have left the window */
    rec(&b, 70000, 0, &changed, NULL);
    CHECK_INT(b.state, WR_BRK_CLOSED);
    rec(&b, 70100, 1, &changed, NULL);
    rec(&b, 70200, 0, &changed, NULL);
    CHECK_INT(b.state, WR_BRK_CLOSED); /* 3 calls: under min_calls */
    rec(&b, 70300, 0, &changed, NULL); /* 4 calls, 3 failures */
    CHECK_INT(b.state, WR_BRK_OPEN);
}

static void test_disabled(void)
{
    wr_breaker_policy p = policy();
    p.enabled = 0;
    wr_brk b;
    wr_brk_init(&b, &p);
    int changed;
    for (int i = 0; i < 50; i++) {
        rec(&b, i, 0, &changed, NULL);
        CHECK_INT(wr_brk_allow(&b, i, NULL, &changed), 1);
    }
    CHECK_INT(b.state, WR_BRK_CLOSED);
    CHECK_STR(wr_brk_state_name(WR_BRK_HALF_OPEN), "half-open");
}

int main(void)
{
    test_ratio_opens();
    test_ratio_below_threshold_stays_closed();
    test_half_open_closes();
    test_half_open_reopens();
    test_consecutive();
    test_time_window();
    test_disabled();
    return check_report("test_breaker");
}
