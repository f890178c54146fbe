/*
 * decide: outcome -> action. See decide.h.
 */
#include "decide.h"

#include <stddef.h>
#include <stdio.h>

#include "contract.h"

const char *wr_action_name(wr_action a)
{
    switch (a) {
    case WR_ACT_OK:
        return "ok";
    case WR_ACT_DLQ:
        return "dead-lettered";
    case WR_ACT_RETRY:
        return "retried";
    case WR_ACT_WAIT:
        return "deferred";
    case WR_ACT_DUPLICATE:
        return "duplicate";
    case WR_ACT_PARKED:
        return "parked";
    case WR_ACT_NONE:
        break;
    }
    return "returned";
}

wr_decision wr_decide(wr_outcome out, int attempt, const wr_retry_policy *policy,
                      const wr_retry_tiers *tiers, int64_t requested_ms, double rand01,
                      int aborting)
{
    wr_decision d = {.action = WR_ACT_NONE, .tier = -1};
    if (out != WR_OUT_OK && aborting) {
        return d; /* interrupted by shutdown, not failed: back untouched */
    }
    switch (out) {
    case WR_OUT_OK:
        d.action = WR_ACT_OK;
        d.done_outcome = "ok";
        return d;
    case WR_OUT_INVALID:
    case WR_OUT_REJECT:
        /* permanent: no retry can change the outcome */
        d.action = WR_ACT_DLQ;
        d.done_outcome = out == WR_OUT_REJECT ? "rejected" : "dead-lettered";
        d.error_class = out == WR_OUT_REJECT ? "rejected" : "invalid";
        return d;
    case WR_OUT_TIMEOUT:
    case WR_OUT_RETRY:
    case WR_OUT_ERROR:
        d.error_class = out == WR_OUT_TIMEOUT ? "timeout" : "error";
        if (wr_retry_plan(policy, tiers, attempt, requested_ms, rand01, &d.tier, &d.delay_ms) ==
            0) {
            d.action = WR_ACT_RETRY;
            return d;
        }
        d.action = WR_ACT_DLQ;
        d.done_outcome = "dead-lettered";
        d.exhausted = 1;
        d.tier = -1;
        return d;
    }
    return d;
}

wr_action wr_decide_commit(wr_commit_result result, const char *why, char *text, size_t size)
{
    if (why == NULL) {
        why = "";
    }
    switch (result) {
    case WR_COMMIT_REFUSED:
        snprintf(text, size, WR_ES_REFUSED, why);
        return WR_ACT_DLQ;
    case WR_COMMIT_CONFLICT:
        /* WHY is the script's "conflict: KEY changed since the handler read it" */
        snprintf(text, size, WR_ES_CONFLICT, why);
        return WR_ACT_NONE;
    case WR_COMMIT_FAILED:
        snprintf(text, size, WR_ES_FAILED, why);
        return WR_ACT_NONE;
    case WR_COMMIT_APPLIED:
        break;
    }
    if (size > 0) {
        text[0] = '\0';
    }
    return WR_ACT_OK;
}
