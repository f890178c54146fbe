/*
 * test_retry: the retry schedule (retry.c): tiers from explicit delays and
 * from exponential backoff, the plan for each failed attempt (tier, jitter,
 * a delay the handler asked for, exhaustion) and delay queue names.
 */
#include "check.h"
#include "retry.h"

static wr_retry_policy delays(int max_attempts, int64_t *d, int n)
{
    wr_retry_policy p = {.max_attempts = max_attempts,
                         .delays_ms = d,
                         .delay_count = n,
                         .initial_ms = 1000,
                         .multiplier = 2.0,
                         .max_ms = 300000,
                         .jitter = 0};
    return p;
}

static void test_explicit_delays(void)
{
    int64_t d[] = {1000, 5000, 30000};
    wr_retry_policy p = delays(6, d, 3);
    wr_retry_tiers t;
    wr_retry_tiers_of(&p, &t);
    CHECK_INT(t.count, 3);
    CHECK_INT(t.delay_ms[0], 1000);
    CHECK_INT(t.delay_ms[1], 5000);
    CHECK_INT(t.delay_ms[2], 30000);
    CHECK_INT(wr_retry_base_delay(&p, 1), 1000);
    CHECK_INT(wr_retry_base_delay(&p, 2), 5000);
    CHECK_INT(wr_retry_base_delay(&p, 3), 30000);
    CHECK_INT(wr_retry_base_delay(&p, 5), 30000); /* the last delay repeats */

    int tier = -1;
    int64_t exp = -1;
    CHECK_INT(wr_retry_plan(&p, &t, 1, -1, 0.5, &tier, &exp), 0);
    CHECK_INT(tier, 0);
    CHECK_INT(exp, 1000);
    CHECK_INT(wr_retry_plan(&p, &t, 2, -1, 0.5, &tier, &exp), 0);
    CHECK_INT(tier, 1);
    CHECK_INT(exp, 5000);
    CHECK_INT(wr_retry_plan(&p, &t, 5, -1, 0.5, &tier, &exp), 0);
    CHECK_INT(tier, 2);
    /* attempt 6 of 6 failed: no attempts left */
    CHECK_INT(wr_retry_plan(&p, &t, 6, -1, 0.5, &tier, &exp), -1);
    CHECK_INT(wr_retry_plan(&p, &t, 7, -1, 0.5, &tier, &exp), -1);

    /* only the tiers the attempts reach are needed */
    wr_retry_policy two = delays(2, d, 3);
    wr_retry_tiers_of(&two, &t);
    CHECK_INT(t.count, 1);
    CHECK_INT(t.delay_ms[0], 1000);
    /* one attempt: no retries, no tiers, straight to the DLQ */
    wr_retry_policy one = delays(1, d, 3);
    wr_retry_tiers_of(&one, &t);
    CHECK_INT(t.count, 0);
    CHECK_INT(wr_retry_plan(&one, &t, 1, -1, 0.5, &tier, &exp), -1);
}

static void test_unsorted_and_repeated_delays(void)
{
    int64_t d[] = {5000, 1000, 5000};
    wr_retry_policy p = delays(5, d, 3);
    wr_retry_tiers t;
    wr_retry_tiers_of(&p, &t);
    CHECK_INT(t.count, 2);
    CHECK_INT(t.delay_ms[0], 1000);
    CHECK_INT(t.delay_ms[1], 5000);
    int tier;
    int64_t exp;
    CHECK_INT(wr_retry_plan(&p, &t, 1, -1, 0, &tier, &exp), 0);
    CHECK_INT(tier, 1);
    CHECK_INT(exp, 5000);
    CHECK_INT(wr_retry_plan(&p, &t, 2, -1, 0, &tier, &exp), 0);
    CHECK_INT(tier, 0);
    CHECK_INT(exp, 1000);
}

static void test_backoff(void)
{
    wr_retry_policy p = {
        .max_attempts = 7, .initial_ms = 1000, .multiplier = 2.0, .max_ms = 10000, .jitter = 0};
    wr_retry_tiers t;
    wr_retry_tiers_of(&p, &t);
    /* attempts 1..6 fail: 1s 2s 4s 8s 10s 10s */
    CHECK_INT(t.count, 5);
    CHECK_INT(t.delay_ms[0], 1000);
    CHECK_INT(t.delay_ms[1], 2000);
    CHECK_INT(t.delay_ms[2], 4000);
    CHECK_INT(t.delay_ms[3], 8000);
    CHECK_INT(t.delay_ms[4], 10000);
    CHECK_INT(wr_retry_base_delay(&p, 6), 10000);

    wr_retry_policy q = {
        .max_attempts = 4, .initial_ms = 500, .multiplier = 1.5, .max_ms = 60000, .jitter = 0};
    wr_retry_tiers_of(&q, &t);
    CHECK_INT(t.count, 3);
    CHECK_INT(t.delay_ms[0], 500);
    CHECK_INT(t.delay_ms[1], 750);
    CHECK_INT(t.delay_ms[2], 1125);

    /* a huge attempt number neither overflows nor loops forever */
    CHECK_INT(wr_retry_base_delay(&p, 1000000), 10000);
}

static void test_jitter(void)
{
    wr_retry_policy p = {
        .max_attempts = 3, .initial_ms = 1000, .multiplier = 2.0, .max_ms = 10000, .jitter = 0.5};
    wr_retry_tiers t;
    wr_retry_tiers_of(&p, &t);
    int tier;
    int64_t exp;
    CHECK_INT(wr_retry_plan(&p, &t, 2, -1, 0.0, &tier, &exp), 0);
    CHECK_INT(tier, 1);
    CHECK_INT(exp, 2000); /* rand 0: the full tier delay */
    CHECK_INT(wr_retry_plan(&p, &t, 2, -1, 0.5, &tier, &exp), 0);
    CHECK_INT(exp, 1500); /* 2000 - 2000 * 0.5 * 0.5 */
    CHECK_INT(wr_retry_plan(&p, &t, 2, -1, 0.999, &tier, &exp), 0);
    CHECK(exp > 1000 && exp < 2000); /* never below (1 - jitter) of the tier, never above */
}

static void test_requested_delay(void)
{
    int64_t d[] = {1000, 5000, 30000};
    wr_retry_policy p = delays(5, d, 3);
    wr_retry_tiers t;
    wr_retry_tiers_of(&p, &t);
    int tier;
    int64_t exp;
    CHECK_INT(wr_retry_plan(&p, &t, 1, 3000, 0.7, &tier, &exp), 0);
    CHECK_INT(tier, 1); /* rounded up to the next tier */
    CHECK_INT(exp, 5000);
    CHECK_INT(wr_retry_plan(&p, &t, 1, 5000, 0.7, &tier, &exp), 0);
    CHECK_INT(tier, 1);
    CHECK_INT(wr_retry_plan(&p, &t, 1, 0, 0.7, &tier, &exp), 0);
    CHECK_INT(tier, 0);
    CHECK_INT(wr_retry_plan(&p, &t, 1, 3600000, 0.7, &tier, &exp), 0);
    CHECK_INT(tier, 2); /* longer than every tier: the longest */
    CHECK_INT(exp, 30000);
    /* asking for a retry does not add attempts */
    CHECK_INT(wr_retry_plan(&p, &t, 5, 1000, 0.7, &tier, &exp), -1);
}

static void test_queue_names(void)
{
    char name[300];
    wr_retry_queue_name("orders", 1000, name, sizeof(name));
    CHECK_STR(name, "orders.retry.1s");
    wr_retry_queue_name("orders", 30000, name, sizeof(name));
    CHECK_STR(name, "orders.retry.30s");
    wr_retry_queue_name("orders", 120000, name, sizeof(name));
    CHECK_STR(name, "orders.retry.2m");
    wr_retry_queue_name("orders", 7200000, name, sizeof(name));
    CHECK_STR(name, "orders.retry.2h");
    wr_retry_queue_name("orders", 86400000, name, sizeof(name));
    CHECK_STR(name, "orders.retry.1d");
    wr_retry_queue_name("orders", 1500, name, sizeof(name));
    CHECK_STR(name, "orders.retry.1500ms");
    wr_retry_queue_name("orders", 90000, name, sizeof(name));
    CHECK_STR(name, "orders.retry.90s");
}

int main(void)
{
    test_explicit_delays();
    test_unsorted_and_repeated_delays();
    test_backoff();
    test_jitter();
    test_requested_delay();
    test_queue_names();
    return check_report("test_retry");
}
