/*
 * test_status.c: unit tests for wr_status_why, the one decision behind
 * /status, `warren status` and the paused lines: why a subscription does not
 * consume, in words, from figures alone.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "status.h"

static wr_sub_figures figs(int workers, int connected)
{
    wr_sub_figures f;
    memset(&f, 0, sizeof(f));
    f.workers = workers;
    f.connected = connected;
    return f;
}

static wr_proc_figures proc(int redis_up)
{
    wr_proc_figures p;
    memset(&p, 0, sizeof(p));
    p.started = 1;
    p.redis_up = redis_up;
    snprintf(p.redis_error, sizeof(p.redis_error), "%s", "Connection refused");
    return p;
}

static void test_consuming(void)
{
    wr_sub_figures f = figs(2, 2);
    wr_proc_figures p = proc(1);
    wr_status_verdict v;
    wr_status_why("orders", &f, &p, NULL, 0, &v);
    CHECK_INT(v.paused, 0);
    CHECK_INT(v.n, 0);
}

/* The breaker: paused, since when, and the next probe; half-open consumes. */
static void test_breaker(void)
{
    wr_sub_figures f = figs(2, 2);
    wr_proc_figures p = proc(1);
    wr_brk_status b;
    memset(&b, 0, sizeof(b));
    b.state = WR_BRK_OPEN;
    b.opened_at_ms = 1764475200000; /* 2025-11-30T04:00:00Z */
    b.probe_at_ms = 1764475230000;
    wr_status_verdict v;
    wr_status_why("payments", &f, &p, &b, 0, &v);
    CHECK_INT(v.paused, 1);
    CHECK_INT(v.n, 1);
    CHECK_STR(v.why[0], "consumption paused: breaker payments open since "
                        "2025-11-30T04:00:00.000Z, next probe at 2025-11-30T04:00:30.000Z");
    b.state = WR_BRK_HALF_OPEN;
    wr_status_why("payments", &f, &p, &b, 0, &v);
    CHECK_INT(v.paused, 0);
    CHECK_STR(v.why[0], "breaker payments half-open: a few probe messages go through");
}

/* Redis away: the workers' closed connections are not blamed on the broker. */
static void test_redis_down(void)
{
    wr_sub_figures f = figs(2, 0);
    wr_proc_figures p = proc(0);
    wr_status_verdict v;
    wr_status_why("orders", &f, &p, NULL, 0, &v);
    CHECK_INT(v.paused, 1);
    CHECK_INT(v.n, 1);
    CHECK_STR(v.why[0], "paused: Redis not answering (Connection refused)");
    /* with Redis up, workers not connected are the broker's */
    p = proc(1);
    f = figs(2, 1);
    wr_status_why("orders", &f, &p, NULL, 0, &v);
    CHECK_INT(v.paused, 0);
    CHECK_STR(v.why[0], "broker: 1 of 2 workers not connected");
    f = figs(2, 0);
    wr_status_why("orders", &f, &p, NULL, 0, &v);
    CHECK_INT(v.paused, 1);
}

/* Every reason at once, in the documented order. */
static void test_order(void)
{
    wr_sub_figures f = figs(1, 1);
    f.blocked = 1;
    wr_proc_figures p = proc(0);
    p.draining = 1;
    wr_brk_status b;
    memset(&b, 0, sizeof(b));
    b.state = WR_BRK_OPEN;
    wr_status_verdict v;
    wr_status_why("o", &f, &p, &b, 0, &v);
    CHECK_INT(v.n, 4);
    CHECK(strncmp(v.why[0], "draining", 8) == 0);
    CHECK(strncmp(v.why[1], "paused: Redis", 13) == 0);
    CHECK(strncmp(v.why[2], "consumption paused: breaker o open", 34) == 0);
    CHECK_STR(v.why[3], "paused: the broker blocks publishes (memory or disk alarm)");
}

/* A reading T seconds in: the queue's READY, what the workers HELD and had FINISHED. */
static wr_lag_sample rd(double t, long ready, long held, uint64_t finished)
{
    wr_lag_sample r = {.mono_ms = t * 1000, .ready = ready, .held = held, .finished = finished};
    return r;
}

#define NOW 1764475200000 /* 2025-11-30T04:00:00Z */

/* Before two readings there is no rate, only the depth. */
static void test_lag_measuring(void)
{
    wr_status_lag_t l;
    wr_status_lag(NULL, 0, 0, 0, 1, 1, 60000, NOW, &l);
    CHECK_INT(l.ready, -1);
    CHECK_STR(l.verdict, "queue not read yet");
    wr_lag_sample s[1] = {rd(0, 7, 0, 0)};
    wr_status_lag(s, 1, 0, 0, 1, 1, 60000, NOW, &l);
    CHECK_INT(l.ready, 7);
    CHECK(l.window_s == 0);
    CHECK_STR(l.verdict, "measuring: one reading of the queue so far");
}

/* Nothing taken while messages arrive: stuck, and the age comes from the
 * newest timestamp taken before. */
static void test_lag_stuck(void)
{
    wr_lag_sample s[2] = {rd(0, 10, 1, 4), rd(60, 15, 1, 4)};
    wr_status_lag_t l;
    wr_status_lag(s, 2, 0, NOW - 95000, 1, 1, 60000, NOW, &l);
    CHECK_INT(l.ready, 15);
    CHECK(l.window_s == 60);
    CHECK(l.in_per_s > 0.0833 && l.in_per_s < 0.0834); /* 5 in a minute */
    CHECK(l.out_per_s == 0);
    CHECK(l.oldest_max_s == 95);
    CHECK_STR(l.verdict, "stuck: 15 waiting, none finished in the last 60 s");
    /* no timestamp on anything taken: the age is unknown, not 0 */
    wr_status_lag(s, 2, 0, 0, 1, 1, 60000, NOW, &l);
    CHECK(l.oldest_max_s == -1);
}

/* in = the change in ready and held + finished; out = finished; the ETA from
 * the difference. */
static void test_lag_catching_up(void)
{
    /* 60 left the ready count, 6 more are held, 82 finished: 82 + 6 - 60 = 28
     * arrived */
    wr_lag_sample s[2] = {rd(0, 100, 0, 0), rd(60, 40, 6, 82)};
    wr_status_lag_t l;
    wr_status_lag(s, 2, 3, NOW - 2000, 2, 2, 60000, NOW, &l);
    CHECK(l.in_per_s > 0.466 && l.in_per_s < 0.467);
    CHECK(l.out_per_s > 1.366 && l.out_per_s < 1.367);
    CHECK_INT(l.held, 3);
    CHECK_INT(l.other_consumers, 0);
    CHECK(l.oldest_max_s == 2);
    CHECK_STR(l.verdict, "catching up: the backlog falls 0.9/s, empty in about 44 s");
}

/* More in than out; and a consumer that is not ours makes the rates partial. */
static void test_lag_falling_behind(void)
{
    wr_lag_sample s[2] = {rd(0, 10, 0, 0), rd(60, 130, 0, 60)};
    wr_status_lag_t l;
    wr_status_lag(s, 2, 0, NOW, 3, 2, 60000, NOW, &l);
    CHECK_INT(l.other_consumers, 1);
    CHECK_STR(l.verdict, "falling behind: the backlog grows 2.0/s");
}

/* The rates span the last minute: the newest reading a minute or more older
 * than the last one is the base; nothing ready is caught up. */
static void test_lag_window(void)
{
    wr_lag_sample s[4] = {rd(0, 0, 0, 0), rd(30, 0, 0, 1000), rd(61, 0, 2, 1030),
                          rd(90, 0, 0, 1060)};
    wr_status_lag_t l;
    wr_status_lag(s, 4, 0, NOW - 5000, 1, 1, 60000, NOW, &l);
    CHECK(l.window_s == 60);
    CHECK(l.out_per_s == 1);
    CHECK(l.in_per_s == 1);
    CHECK(l.oldest_max_s == 0); /* nothing waits */
    CHECK_STR(l.verdict, "caught up: nothing waiting");
    /* readings spanning less than the window: all of them */
    wr_status_lag(s, 2, 0, 0, 1, 1, 60000, NOW, &l);
    CHECK(l.window_s == 30);
    /* steady: a backlog that stays */
    wr_lag_sample k[2] = {rd(0, 50, 0, 0), rd(60, 50, 0, 600)};
    wr_status_lag(k, 2, 0, NOW, 1, 1, 60000, NOW, &l);
    CHECK_STR(l.verdict, "keeping up: as many out as in");
}

int main(void)
{
    test_lag_measuring();
    test_lag_stuck();
    test_lag_catching_up();
    test_lag_falling_behind();
    test_lag_window();
    test_consuming();
    test_breaker();
    test_redis_down();
    test_order();
    return check_report("test_status");
}
