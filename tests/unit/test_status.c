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

int main(void)
{
    test_consuming();
    test_breaker();
    test_redis_down();
    test_order();
    return check_report("test_status");
}
