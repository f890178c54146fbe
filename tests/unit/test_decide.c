/*
 * test_decide.c: unit tests for decide (outcome -> action) and the name
 * tables of outcome.h.
 *
 * Every outcome at a first, a middle and the last attempt, under a delay
 * list: ok acks with the record done "ok"; errors, timeouts and ctx.retry
 * go to the tier the schedule names (ctx.retry's own delay rounded up to a
 * tier), then to the DLQ once attempts run out, marked exhausted; rejections
 * and invalid bodies go to the DLQ at once; and a shutdown turns any failure
 * into "back to the queue", never into a retry or a dead letter.
 */
#include "decide.h"

#include "check.h"

static wr_retry_policy policy(int max_attempts, int64_t *d, int n)
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

static void test_ok_and_permanent(void)
{
    int64_t d[] = {1000, 5000};
    wr_retry_policy p = policy(3, d, 2);
    wr_retry_tiers t;
    wr_retry_tiers_of(&p, &t);
    wr_decision x = wr_decide(WR_OUT_OK, 1, &p, &t, -1, 0, 0);
    CHECK_INT(x.action, WR_ACT_OK);
    CHECK_STR(x.done_outcome, "ok");
    CHECK(x.error_class == NULL);
    /* ok stays ok even while shutting down: its effects are to be kept */
    x = wr_decide(WR_OUT_OK, 3, &p, &t, -1, 0, 1);
    CHECK_INT(x.action, WR_ACT_OK);

    x = wr_decide(WR_OUT_REJECT, 1, &p, &t, -1, 0, 0);
    CHECK_INT(x.action, WR_ACT_DLQ);
    CHECK_STR(x.done_outcome, "rejected");
    CHECK_STR(x.error_class, "rejected");
    CHECK_INT(x.exhausted, 0);
    x = wr_decide(WR_OUT_INVALID, 1, &p, &t, -1, 0, 0);
    CHECK_INT(x.action, WR_ACT_DLQ);
    CHECK_STR(x.done_outcome, "dead-lettered");
    CHECK_STR(x.error_class, "invalid");
}

static void test_retries_then_dlq(void)
{
    int64_t d[] = {1000, 5000};
    wr_retry_policy p = policy(3, d, 2);
    wr_retry_tiers t;
    wr_retry_tiers_of(&p, &t);
    wr_decision x = wr_decide(WR_OUT_ERROR, 1, &p, &t, -1, 0, 0);
    CHECK_INT(x.action, WR_ACT_RETRY);
    CHECK_STR(x.error_class, "error");
    CHECK_INT(t.delay_ms[x.tier], 1000);
    CHECK_INT(x.delay_ms, 1000);
    CHECK(x.done_outcome == NULL);
    x = wr_decide(WR_OUT_TIMEOUT, 2, &p, &t, -1, 0, 0);
    CHECK_INT(x.action, WR_ACT_RETRY);
    CHECK_STR(x.error_class, "timeout");
    CHECK_INT(t.delay_ms[x.tier], 5000);
    /* the last attempt failed: the DLQ, exhausted */
    x = wr_decide(WR_OUT_ERROR, 3, &p, &t, -1, 0, 0);
    CHECK_INT(x.action, WR_ACT_DLQ);
    CHECK_STR(x.done_outcome, "dead-lettered");
    CHECK_STR(x.error_class, "error");
    CHECK_INT(x.exhausted, 1);
    CHECK_INT(x.tier, -1);
    x = wr_decide(WR_OUT_TIMEOUT, 3, &p, &t, -1, 0, 0);
    CHECK_STR(x.error_class, "timeout");
    CHECK_INT(x.exhausted, 1);
    /* ctx.retry asks for 3 s: rounded up to the 5 s tier */
    x = wr_decide(WR_OUT_RETRY, 1, &p, &t, 3000, 0, 0);
    CHECK_INT(x.action, WR_ACT_RETRY);
    CHECK_INT(t.delay_ms[x.tier], 5000);
    CHECK_STR(x.error_class, "error");
}

static void test_jitter(void)
{
    int64_t d[] = {10000};
    wr_retry_policy p = policy(2, d, 1);
    p.jitter = 0.5;
    wr_retry_tiers t;
    wr_retry_tiers_of(&p, &t);
    wr_decision x = wr_decide(WR_OUT_ERROR, 1, &p, &t, -1, 0.999, 0);
    CHECK_INT(x.action, WR_ACT_RETRY);
    CHECK(x.delay_ms <= 10000 && x.delay_ms >= 5000);
    wr_decision y = wr_decide(WR_OUT_ERROR, 1, &p, &t, -1, 0, 0);
    CHECK(y.delay_ms <= 10000 && y.delay_ms >= 5000);
    CHECK(x.delay_ms != y.delay_ms);
}

static void test_shutdown(void)
{
    int64_t d[] = {1000};
    wr_retry_policy p = policy(2, d, 1);
    wr_retry_tiers t;
    wr_retry_tiers_of(&p, &t);
    wr_outcome fails[] = {WR_OUT_ERROR, WR_OUT_TIMEOUT, WR_OUT_RETRY, WR_OUT_REJECT,
                          WR_OUT_INVALID};
    for (size_t i = 0; i < sizeof(fails) / sizeof(fails[0]); i++) {
        wr_decision x = wr_decide(fails[i], 2, &p, &t, -1, 0, 1);
        CHECK_INT(x.action, WR_ACT_NONE);
        CHECK(x.done_outcome == NULL);
    }
}

static void test_names(void)
{
    CHECK_STR(wr_action_name(WR_ACT_OK), "ok");
    CHECK_STR(wr_action_name(WR_ACT_DLQ), "dead-lettered");
    CHECK_STR(wr_action_name(WR_ACT_RETRY), "retried");
    CHECK_STR(wr_action_name(WR_ACT_WAIT), "deferred");
    CHECK_STR(wr_action_name(WR_ACT_DUPLICATE), "duplicate");
    CHECK_STR(wr_action_name(WR_ACT_NONE), "returned");
    CHECK_STR(wr_outcome_name(WR_OUT_REJECT), "rejected");
    CHECK_STR(wr_outcome_name(WR_OUT_INVALID), "invalid");
    /* every reason round-trips through its name */
    for (int r = WR_RS_NONE + 1; r < WR_RS_OTHER; r++) {
        CHECK_INT(wr_reason_parse(wr_reason_name((wr_reason)r)), r);
    }
    CHECK_STR(wr_reason_name(WR_RS_STORE_REFUSED), "store-refused");
    CHECK_STR(wr_reason_name(WR_RS_STACK_OVERFLOW), "stack-overflow");
    CHECK_STR(wr_reason_name(WR_RS_MISSING_KEY), "missing-idempotency-key");
    CHECK_INT(wr_reason_parse(NULL), WR_RS_NONE);
    CHECK_INT(wr_reason_parse(""), WR_RS_NONE);
    CHECK_INT(wr_reason_parse("something-new"), WR_RS_OTHER);
}

/* The operator's names: only the table's codes are accepted, and the list a
 * usage error shows holds every one of them, in the table's order. */
static void test_reason_lookup(void)
{
    wr_reason r = WR_RS_NONE;
    CHECK_INT(wr_reason_lookup("handler-error", &r), 0);
    CHECK_INT(r, WR_RS_HANDLER_ERROR);
    CHECK_INT(wr_reason_lookup("other", &r), 0);
    CHECK_INT(r, WR_RS_OTHER);
    CHECK_INT(wr_reason_lookup("invalid", &r), -1); /* an error class, not a reason */
    CHECK_INT(wr_reason_lookup("error", &r), -1);
    CHECK_INT(wr_reason_lookup("", &r), -1);
    CHECK_INT(wr_reason_lookup(NULL, &r), -1);
    char list[512];
    wr_reason_list(", ", list, sizeof(list));
    CHECK_STR(list, "missing-message-id, empty-body, body-too-large, invalid-json, "
                    "unsupported-content-encoding, missing-idempotency-key, schema-invalid, "
                    "version-unknown, unknown-type, upcast-failed, invalid-cloudevent, "
                    "handler-error, timeout, out-of-memory, stack-overflow, retry-requested, "
                    "rejected, crashed, store-refused, other");
    char small[20];
    wr_reason_list(", ", small, sizeof(small));
    CHECK_STR(small, "missing-message-id,");
}

/* A commit that did not apply: the worker and exec take this one decision and
 * say it in these words (the DLQ copy's x-warren-error, the log, exec's report). */
static void test_commit(void)
{
    char text[256] = "stale";
    CHECK_INT(wr_decide_commit(WR_COMMIT_APPLIED, NULL, text, sizeof(text)), WR_ACT_OK);
    CHECK_STR(text, "");
    CHECK_INT(wr_decide_commit(WR_COMMIT_REFUSED,
                               "ctx.store.hincrby: key s:c-7 holds a string in Redis", text,
                               sizeof(text)),
              WR_ACT_DLQ);
    CHECK_STR(text, "store writes refused, nothing applied: ctx.store.hincrby: key s:c-7 holds "
                    "a string in Redis");
    CHECK_INT(wr_decide_commit(WR_COMMIT_CONFLICT,
                               "conflict: s:c-7 changed since the handler read it", text,
                               sizeof(text)),
              WR_ACT_NONE);
    CHECK_STR(text, "store conflict: s:c-7 changed since the handler read it; nothing "
                    "applied, the message runs again");
    CHECK_INT(wr_decide_commit(WR_COMMIT_FAILED, "OOM command not allowed", text, sizeof(text)),
              WR_ACT_NONE);
    CHECK_STR(text, "the commit failed, the message runs again: OOM command not allowed");
    /* a short buffer is cut, never overrun */
    char small[12];
    CHECK_INT(wr_decide_commit(WR_COMMIT_FAILED, "x", small, sizeof(small)), WR_ACT_NONE);
    CHECK_STR(small, "the commit ");
}

int main(void)
{
    test_ok_and_permanent();
    test_retries_then_dlq();
    test_jitter();
    test_shutdown();
    test_names();
    test_reason_lookup();
    test_commit();
    return check_report("test_decide");
}
