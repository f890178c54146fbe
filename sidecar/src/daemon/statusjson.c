/*
 * statusjson: GET /status's JSON, from the registry. See statusjson.h.
 */
#include "statusjson.h"

#include <string.h>

#include "config.h"
#include "contracts.h"
#include "log.h"
#include "outcome.h"
#include "reload.h"
#include "status.h"

#define LAG_WINDOW_MS 60000.0 /* the rates in and out: over the last minute */

static const char *const outcome_keys[WR_MO_COUNT] = {
    "ok", "retried", "dead_lettered", "rejected", "invalid", "duplicate", "deferred", "returned"};

static json_t *time_json(int64_t ms)
{
    if (ms <= 0) {
        return json_null();
    }
    char t[32];
    wr_format_time(ms, t, sizeof(t));
    return json_string(t);
}

static json_t *depth_json(long d)
{
    return d < 0 ? json_null() : json_integer(d);
}

static json_t *failures_json(const wr_brk_failures *f)
{
    json_t *a = json_array();
    for (int k = 0; k < f->n; k++) {
        json_t *o = json_object();
        json_object_set_new(o, "at", time_json(f->e[k].at_ms));
        json_object_set_new(o, "message_id", json_string(f->e[k].message_id));
        json_object_set_new(o, "error", json_string(f->e[k].error));
        json_object_set_new(o, "counted_by_breaker", json_boolean(f->e[k].counted));
        json_array_append_new(a, o);
    }
    return a;
}

/* Subscription I's lag object (wr_status_lag over its samples). */
static json_t *lag_json(wr_metrics *m, int i, const wr_sub_figures *f, int64_t now)
{
    wr_lag_sample samples[WR_LAG_SAMPLES];
    int ns = wr_metrics_lag_samples(m, i, samples, WR_LAG_SAMPLES);
    wr_status_lag_t lag;
    wr_status_lag(samples, ns, f->in_flight, f->newest_ts_ms, f->consumers, f->connected,
                  LAG_WINDOW_MS, now, &lag);
    json_t *lj = json_object();
    json_object_set_new(lj, "ready", depth_json(lag.ready));
    json_object_set_new(lj, "held", json_integer(lag.held));
    json_object_set_new(lj, "oldest_waiting_at_most_s",
                        lag.oldest_max_s < 0 ? json_null() : json_real(lag.oldest_max_s));
    json_object_set_new(lj, "window_s", json_real(lag.window_s));
    json_object_set_new(lj, "in_per_s", json_real(lag.in_per_s));
    json_object_set_new(lj, "out_per_s", json_real(lag.out_per_s));
    json_object_set_new(lj, "other_consumers", json_boolean(lag.other_consumers));
    json_object_set_new(lj, "verdict", json_string(lag.verdict));
    return lj;
}

/* Workers and queue depths of F, into S. */
static void counts_json(json_t *s, const wr_sub_figures *f)
{
    json_t *w = json_object();
    json_object_set_new(w, "total", json_integer(f->workers));
    json_object_set_new(w, "connected", json_integer(f->connected));
    json_object_set_new(w, "in_flight", json_integer(f->in_flight));
    json_object_set_new(s, "workers", w);
    json_t *q = json_object();
    json_object_set_new(q, "main", depth_json(f->depth_main));
    json_object_set_new(q, "retry", depth_json(f->depth_retry));
    json_object_set_new(q, "wait", depth_json(f->depth_wait));
    json_object_set_new(q, "dlq", depth_json(f->depth_dlq));
    json_object_set_new(q, "consumers", json_integer(f->consumers));
    json_object_set_new(s, "queues", q);
}

/* Counts since start and dead letters by reason of F, into S. */
static void history_json(json_t *s, const wr_sub_figures *f)
{
    json_t *h = json_object();
    json_object_set_new(h, "received", json_integer((json_int_t)f->received));
    for (int k = 0; k < WR_MO_COUNT; k++) {
        json_object_set_new(h, outcome_keys[k], json_integer((json_int_t)f->outcomes[k]));
    }
    json_object_set_new(s, "since_start", h);
    json_t *dl = json_object();
    for (int r = WR_RS_NONE + 1; r < WR_RS_COUNT; r++) {
        if (f->dead_letters[r] > 0) {
            json_object_set_new(dl, wr_reason_name((wr_reason)r),
                                json_integer((json_int_t)f->dead_letters[r]));
        }
    }
    json_object_set_new(s, "dead_letters_by_reason", dl);
}

/* The breaker of SUB (status BS) and its last failures, into S. */
static void breaker_json(json_t *s, const wr_subscription *sub, const wr_brk_status *bs)
{
    json_t *b = json_object();
    json_object_set_new(b, "state", json_string(wr_brk_state_name(bs->state)));
    json_object_set_new(b, "counts", json_string(sub->breaker.count_all ? "all" : "dependencies"));
    json_object_set_new(b, "opened_at", time_json(bs->opened_at_ms));
    json_object_set_new(b, "next_probe_at", time_json(bs->probe_at_ms));
    json_object_set_new(b, "opened_count", json_integer(bs->opened_count));
    json_object_set_new(b, "last_counted_failures", failures_json(&bs->counted));
    json_object_set_new(s, "breaker", b);
    json_object_set_new(s, "last_failures", failures_json(&bs->recent));
}

/* Subscription I's handler (running version against the file on disk) and
 * contracts, into S. REL may be NULL. */
static void handler_json(json_t *s, const wr_subscription *sub, wr_reloader *rel, int i)
{
    json_t *hd = json_object();
    json_object_set_new(hd, "path", json_string(sub->handler));
    char running[17] = "", disk[17] = "";
    if (rel != NULL) {
        wr_live_version(wr_reloader_live(rel, i), running);
    }
    json_object_set_new(hd, "version", json_string(running));
    if (wr_handler_version(sub->handler, disk) == 0) {
        json_object_set_new(hd, "on_disk", json_string(disk));
        json_object_set_new(hd, "differs", json_boolean(running[0] && strcmp(disk, running)));
    } else {
        json_object_set_new(hd, "on_disk", json_null());
        json_object_set_new(hd, "differs", json_true());
    }
    json_object_set_new(s, "handler", hd);
    wr_contracts *ct = rel != NULL ? wr_live_contracts(wr_reloader_live(rel, i)) : NULL;
    if (ct != NULL) {
        json_t *cj = json_object();
        json_object_set_new(cj, "path", json_string(wr_contracts_path(ct)));
        json_object_set_new(cj, "version", json_string(wr_contracts_digest(ct)));
        json_object_set_new(cj, "event_types", json_integer(wr_contracts_count(ct)));
        json_object_set_new(s, "contracts", cj);
        wr_contracts_free(ct);
    }
}

/* Subscription I's object: its state and why, then the parts above. */
static json_t *sub_json(wr_metrics *m, int i, const wr_proc_figures *p, int64_t now)
{
    const wr_subscription *sub = &wr_metrics_config(m)->subs[i];
    wr_breakers *brk = wr_metrics_breakers(m);
    wr_sub_figures f;
    wr_metrics_sub_figures(m, i, &f);
    wr_brk_status bs;
    int has_brk = brk != NULL && sub->breaker.enabled;
    if (has_brk) {
        wr_shared_brk_status(wr_breakers_sub(brk, i), &bs);
    }
    wr_status_verdict v;
    wr_status_why(sub->name, &f, p, has_brk ? &bs : NULL, now, &v);
    json_t *s = json_object();
    json_object_set_new(s, "name", json_string(sub->name));
    json_object_set_new(s, "queue", json_string(sub->queue));
    json_object_set_new(s, "state", json_string(v.paused ? "paused" : "consuming"));
    json_t *why = json_array();
    for (int k = 0; k < v.n; k++) {
        json_array_append_new(why, json_string(v.why[k]));
    }
    json_object_set_new(s, "why", why);
    counts_json(s, &f);
    json_object_set_new(s, "lag", lag_json(m, i, &f, now));
    history_json(s, &f);
    if (has_brk) {
        breaker_json(s, sub, &bs);
    }
    handler_json(s, sub, wr_metrics_reloader(m), i);
    return s;
}

json_t *wr_status_json(wr_metrics *m)
{
    const wr_config *cfg = wr_metrics_config(m);
    wr_reloader *rel = wr_metrics_reloader(m);
    wr_proc_figures p;
    wr_metrics_proc_figures(m, &p);
    int64_t now = wr_now_ms();
    json_t *o = json_object();
    json_object_set_new(o, "warren", json_string(WARREN_VERSION));
    json_object_set_new(o, "now", time_json(now));
    json_object_set_new(o, "started", json_boolean(p.started));
    json_object_set_new(o, "draining", json_boolean(p.draining));
    json_t *redis = json_object();
    json_object_set_new(redis, "up", json_boolean(p.redis_up));
    if (!p.redis_up) {
        json_object_set_new(redis, "error", json_string(p.redis_error));
    }
    json_object_set_new(o, "redis", redis);
    json_t *subs = json_array();
    for (int i = 0; i < cfg->sub_count; i++) {
        json_array_append_new(subs, sub_json(m, i, &p, now));
    }
    json_object_set_new(o, "subscriptions", subs);
    long applied = 0, refused = 0;
    if (rel != NULL) {
        wr_reloader_counts(rel, &applied, &refused);
    }
    json_t *rl = json_object();
    json_object_set_new(rl, "applied", json_integer(applied));
    json_object_set_new(rl, "refused", json_integer(refused));
    json_object_set_new(o, "reloads", rl);
    return o;
}
