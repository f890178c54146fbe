/*
 * retry: the schedule of delay tiers. See retry.h.
 */
#include "retry.h"

#include <stdio.h>

int64_t wr_retry_base_delay(const wr_retry_policy *p, int failed)
{
    if (failed < 1) {
        failed = 1;
    }
    if (p->delays_ms != NULL && p->delay_count > 0) {
        int i = failed - 1 < p->delay_count ? failed - 1 : p->delay_count - 1;
        return p->delays_ms[i];
    }
    double d = (double)p->initial_ms;
    for (int i = 1; i < failed && d < (double)p->max_ms; i++) {
        d *= p->multiplier;
    }
    int64_t ms = (int64_t)(d + 0.5);
    return ms > p->max_ms ? p->max_ms : ms;
}

void wr_retry_tiers_of(const wr_retry_policy *p, wr_retry_tiers *out)
{
    out->count = 0;
    for (int failed = 1; failed < p->max_attempts; failed++) {
        int64_t d = wr_retry_base_delay(p, failed);
        int seen = 0;
        for (int i = 0; i < out->count; i++) {
            seen |= out->delay_ms[i] == d;
        }
        if (seen) {
            continue;
        }
        if (out->count == WR_RETRY_MAX_TIERS) {
            break;
        }
        /* insert sorted */
        int i = out->count++;
        while (i > 0 && out->delay_ms[i - 1] > d) {
            out->delay_ms[i] = out->delay_ms[i - 1];
            i--;
        }
        out->delay_ms[i] = d;
    }
}

static int tier_at_least(const wr_retry_tiers *t, int64_t ms)
{
    for (int i = 0; i < t->count; i++) {
        if (t->delay_ms[i] >= ms) {
            return i;
        }
    }
    return t->count - 1;
}

int wr_retry_plan(const wr_retry_policy *p, const wr_retry_tiers *tiers, int failed,
                  int64_t requested_ms, double rand01, int *tier, int64_t *expire_ms)
{
    if (failed >= p->max_attempts || tiers->count == 0) {
        return -1;
    }
    int64_t want = requested_ms >= 0 ? requested_ms : wr_retry_base_delay(p, failed);
    *tier = tier_at_least(tiers, want);
    int64_t d = tiers->delay_ms[*tier];
    if (requested_ms < 0 && p->jitter > 0 && rand01 > 0) {
        d -= (int64_t)((double)d * p->jitter * rand01);
        if (d < 1) {
            d = 1;
        }
    }
    *expire_ms = d;
    return 0;
}

int wr_retry_queue_name(const char *queue, int64_t ms, char *out, size_t cap)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms >= units[i].ms && ms % units[i].ms == 0) {
            return snprintf(out, cap, "%s.retry.%lld%s", queue, (long long)(ms / units[i].ms),
                            units[i].unit);
        }
    }
    return snprintf(out, cap, "%s.retry.%lldms", queue, (long long)ms);
}
