/*
 * status: /status and `warren status`. See status.h.
 */
#include "status.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "contracts.h"
#include "dlqtool.h"
#include "log.h"
#include "outcome.h"
#include "reload.h"

const char wr_status_usage[] =
    "  status -c FILE [--url URL] [--json] [--no-dlq | --dlq-max N]\n"
    "                       what every subscription is doing now: consuming or paused\n"
    "                       and why, queue depths, lag (ready and held messages, age\n"
    "                       of the oldest waiting, rates in and out over the last\n"
    "                       minute), what is in each DLQ now by reason (read from the\n"
    "                       broker as dlq list --group-by reason does; with -c, unless\n"
    "                       --no-dlq; the first N messages of each, default 10000),\n"
    "                       DLQ copies by reason since start, handler\n"
    "                       version (and whether the file on disk differs), last\n"
    "                       failures; read from the running sidecar's /status (URL:\n"
    "                       default http://127.0.0.1:PORT/status from http.listen)\n";

#define LAG_WINDOW_MS 60000.0 /* the rates in and out: over the last minute */
#define DLQ_NOW_MAX 10000     /* --dlq-max: messages status reads of a DLQ (the first ones) */

static const char *const outcome_keys[WR_MO_COUNT] = {
    "ok", "retried", "dead_lettered", "rejected", "invalid", "duplicate", "deferred", "returned"};

static void add_why(wr_status_verdict *v, int pauses, const char *fmt, const char *a, const char *b)
{
    if (v->n < (int)(sizeof(v->why) / sizeof(v->why[0]))) {
        snprintf(v->why[v->n++], sizeof(v->why[0]), fmt, a, b);
    }
    v->paused |= pauses;
}

void wr_status_why(const char *name, const wr_sub_figures *f, const wr_proc_figures *p,
                   const wr_brk_status *b, int64_t now_ms, wr_status_verdict *out)
{
    memset(out, 0, sizeof(*out));
    (void)now_ms;
    if (!p->started) {
        add_why(out, 1, "starting: handlers not loaded yet%s%s", "", "");
    }
    if (p->draining) {
        add_why(out, 1, "draining: shutting down%s%s", "", "");
    }
    if (!p->redis_up) {
        add_why(out, 1, "paused: Redis not answering (%.200s)%s", p->redis_error, "");
    }
    if (b != NULL && b->state == WR_BRK_OPEN) {
        char since[32], probe[32];
        wr_format_time(b->opened_at_ms, since, sizeof(since));
        wr_format_time(b->probe_at_ms, probe, sizeof(probe));
        char head[200];
        snprintf(head, sizeof(head), "consumption paused: breaker %s open since %s", name, since);
        add_why(out, 1, "%s, next probe at %s", head, probe);
    } else if (b != NULL && b->state == WR_BRK_HALF_OPEN) {
        add_why(out, 0, "breaker %s half-open: a few probe messages go through%s", name, "");
    }
    if (f->blocked > 0) {
        add_why(out, 1, "paused: the broker blocks publishes (memory or disk alarm)%s%s", "", "");
    }
    /* workers close their broker connections on purpose while Redis is away:
     * then that, not the broker, is the reason */
    if (p->redis_up && p->started && f->connected < f->workers) {
        char n[64];
        snprintf(n, sizeof(n), "%d of %d", f->workers - f->connected, f->workers);
        add_why(out, f->connected == 0, "broker: %s workers not connected%s", n, "");
    }
}

/* SECONDS as "45 s", "12 min" or "3.5 h". */
static void span_text(double seconds, char *out, size_t cap)
{
    if (seconds < 120) {
        snprintf(out, cap, "%.0f s", seconds);
    } else if (seconds < 7200) {
        snprintf(out, cap, "%.0f min", seconds / 60);
    } else {
        snprintf(out, cap, "%.1f h", seconds / 3600);
    }
}

void wr_status_lag(const wr_lag_sample *s, int n, long held, int64_t newest_ts_ms, long consumers,
                   int connected, double window_ms, int64_t now_ms, wr_status_lag_t *out)
{
    memset(out, 0, sizeof(*out));
    out->ready = n > 0 ? s[n - 1].ready : -1;
    out->held = held < 0 ? 0 : held;
    out->other_consumers = consumers > connected;
    if (out->ready < 0) {
        out->oldest_max_s = -1;
        snprintf(out->verdict, sizeof(out->verdict), "queue not read yet");
        return;
    }
    if (out->ready == 0) {
        out->oldest_max_s = 0;
    } else if (newest_ts_ms <= 0) {
        out->oldest_max_s = -1;
    } else {
        out->oldest_max_s = now_ms > newest_ts_ms ? (double)(now_ms - newest_ts_ms) / 1000 : 0;
    }
    /* the base: the newest reading at least WINDOW_MS before the last one */
    const wr_lag_sample *last = &s[n - 1], *base = &s[0];
    for (int i = n - 2; i >= 0; i--) {
        if (last->mono_ms - s[i].mono_ms >= window_ms) {
            base = &s[i];
            break;
        }
    }
    double dt = (last->mono_ms - base->mono_ms) / 1000;
    if (n < 2 || dt <= 0) {
        snprintf(out->verdict, sizeof(out->verdict), "measuring: one reading of the queue so far");
        return;
    }
    out->window_s = dt;
    double arrived = (double)(last->ready - base->ready) + (double)(last->held - base->held) +
                     (double)(last->finished - base->finished);
    out->in_per_s = arrived > 0 ? arrived / dt : 0;
    out->out_per_s = (double)(last->finished - base->finished) / dt;
    double net = out->out_per_s - out->in_per_s; /* > 0: the backlog shrinks */
    char w[32];
    span_text(dt, w, sizeof(w));
    /* less than one message over the window is no trend */
    double eps = 1.0 / dt;
    if (out->ready == 0) {
        snprintf(out->verdict, sizeof(out->verdict), "caught up: nothing waiting");
    } else if (out->out_per_s == 0 && out->ready > 0) {
        snprintf(out->verdict, sizeof(out->verdict),
                 "stuck: %ld waiting, none finished in the last %s", out->ready, w);
    } else if (net > eps && out->ready > 0) {
        char eta[32];
        span_text((double)out->ready / net, eta, sizeof(eta));
        snprintf(out->verdict, sizeof(out->verdict),
                 "catching up: the backlog falls %.1f/s, empty in about %s", net, eta);
    } else if (-net > eps) {
        snprintf(out->verdict, sizeof(out->verdict), "falling behind: the backlog grows %.1f/s",
                 -net);
    } else {
        snprintf(out->verdict, sizeof(out->verdict), "keeping up: as many out as in");
    }
}

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

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

static void put_depth(FILE *fp, const char *name, const json_t *q)
{
    const json_t *d = json_object_get(q, name);
    if (json_is_integer(d)) {
        fprintf(fp, "  %s %" JSON_INTEGER_FORMAT, name, json_integer_value(d));
    } else {
        fprintf(fp, "  %s -", name); /* no such queue, or not read yet */
    }
}

static double num(const json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

/* "  lag: 120 ready, 5 held; oldest waiting at most 42 s; over the last 60 s
 *   in 3.0/s, out 5.0/s: catching up: ..." */
static void put_lag(FILE *fp, const json_t *lag)
{
    const json_t *ready = json_object_get(lag, "ready");
    if (!json_is_integer(ready)) {
        fprintf(fp, "  lag: %s\n", str(lag, "verdict"));
        return;
    }
    fprintf(fp, "  lag: %" JSON_INTEGER_FORMAT " ready, %" JSON_INTEGER_FORMAT " held",
            json_integer_value(ready), json_integer_value(json_object_get(lag, "held")));
    const json_t *age = json_object_get(lag, "oldest_waiting_at_most_s");
    if (json_integer_value(ready) == 0) {
        /* nothing waits: no age to give */
    } else if (json_is_number(age)) {
        fprintf(fp, "; oldest waiting at most %.0f s old", json_number_value(age));
    } else {
        fprintf(fp, "; age of the oldest waiting unknown (no AMQP timestamp)");
    }
    fputc('\n', fp);
    if (num(lag, "window_s") > 0) {
        fprintf(fp, "    over the last %.0f s: in %.1f/s, out %.1f/s%s\n", num(lag, "window_s"),
                num(lag, "in_per_s"), num(lag, "out_per_s"),
                json_is_true(json_object_get(lag, "other_consumers"))
                    ? " (this process's workers only: the queue has other consumers)"
                    : "");
    }
    fprintf(fp, "    %s\n", str(lag, "verdict"));
}

void wr_status_render(FILE *fp, const json_t *st)
{
    const json_t *redis = json_object_get(st, "redis");
    fprintf(fp, "warren %s at %s; Redis %s%s%s\n", str(st, "warren"), str(st, "now"),
            json_is_true(json_object_get(redis, "up")) ? "answering" : "NOT answering: ",
            json_is_true(json_object_get(redis, "up")) ? "" : str(redis, "error"),
            json_is_true(json_object_get(st, "draining")) ? "; draining" : "");
    size_t i, k;
    json_t *s, *v;
    json_array_foreach(json_object_get(st, "subscriptions"), i, s)
    {
        fprintf(fp, "\n%s (%s): %s\n", str(s, "name"), str(s, "queue"), str(s, "state"));
        json_array_foreach(json_object_get(s, "why"), k, v)
        {
            fprintf(fp, "  - %s\n", json_string_value(v));
        }
        const json_t *q = json_object_get(s, "queues");
        fprintf(fp, " ");
        put_depth(fp, "main", q);
        put_depth(fp, "retry", q);
        put_depth(fp, "wait", q);
        put_depth(fp, "dlq", q);
        const json_t *w = json_object_get(s, "workers");
        fprintf(fp,
                "  workers %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT
                " connected, %" JSON_INTEGER_FORMAT " in flight\n",
                json_integer_value(json_object_get(w, "connected")),
                json_integer_value(json_object_get(w, "total")),
                json_integer_value(json_object_get(w, "in_flight")));
        const json_t *lag = json_object_get(s, "lag");
        if (lag != NULL) {
            put_lag(fp, lag);
        }
        const json_t *now = json_object_get(s, "dlq_now_by_reason");
        if (json_is_object(now)) {
            fprintf(fp, "  in the DLQ now (by reason, ids/messages):");
            const char *key;
            json_object_foreach((json_t *)now, key, v)
            {
                fprintf(fp, " %s %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT, key,
                        json_integer_value(json_object_get(v, "ids")),
                        json_integer_value(json_object_get(v, "messages")));
            }
            const json_t *part = json_object_get(s, "dlq_now_partial");
            if (part != NULL) {
                fprintf(fp,
                        " (the first %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT
                        " messages: dlq list --group-by reason counts them all)",
                        json_integer_value(json_object_get(part, "read")),
                        json_integer_value(json_object_get(part, "held")));
            }
            fprintf(fp, "%s\n", json_object_size(now) == 0 ? " empty" : "");
        } else if (json_is_string(now)) {
            fprintf(fp, "  in the DLQ now: not read (%s)\n", json_string_value(now));
        }
        const json_t *dl = json_object_get(s, "dead_letters_by_reason");
        if (json_object_size(dl) > 0) {
            fprintf(fp, "  dead-lettered since start (copies):");
            const char *key;
            json_object_foreach((json_t *)dl, key, v)
            {
                fprintf(fp, " %s %" JSON_INTEGER_FORMAT, key, json_integer_value(v));
            }
            fputc('\n', fp);
        }
        const json_t *b = json_object_get(s, "breaker");
        if (b != NULL) {
            fprintf(fp, "  breaker %s (counts %s, opened %" JSON_INTEGER_FORMAT " time(s))\n",
                    str(b, "state"), str(b, "counts"),
                    json_integer_value(json_object_get(b, "opened_count")));
        }
        const json_t *h = json_object_get(s, "handler");
        fprintf(fp, "  handler %s version %s", str(h, "path"), str(h, "version"));
        if (json_is_true(json_object_get(h, "differs"))) {
            fprintf(fp, "; the file on disk is %s (not running: a refused reload?)",
                    str(h, "on_disk"));
        }
        fputc('\n', fp);
        const json_t *ct = json_object_get(s, "contracts");
        if (ct != NULL) {
            fprintf(fp, "  contracts %s version %s (%" JSON_INTEGER_FORMAT " event types)\n",
                    str(ct, "path"), str(ct, "version"),
                    json_integer_value(json_object_get(ct, "event_types")));
        }
        json_array_foreach(json_object_get(s, "last_failures"), k, v)
        {
            fprintf(fp, "  %s %s %s: %s%s\n", k == 0 ? "last failures:" : "              ",
                    str(v, "at"), str(v, "message_id")[0] ? str(v, "message_id") : "-",
                    str(v, "error"),
                    json_is_true(json_object_get(v, "counted_by_breaker")) ? "" : " (not counted)");
        }
    }
}

/* --- warren status ------------------------------------------------------- */

static int usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "warren status: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\nusage:\n%s", wr_status_usage);
    return 2;
}

static size_t collect(char *data, size_t size, size_t n, void *ud)
{
    FILE *fp = ud;
    return fwrite(data, size, n, fp);
}

json_t *wr_status_fetch(const char *config, const char *url, char *err, size_t cap)
{
    char where[300];
    if (url == NULL) {
        wr_config_errors errs = {0};
        wr_config *cfg = wr_config_load(config, &errs);
        if (cfg == NULL) {
            snprintf(err, cap, "%s", errs.count > 0 ? errs.lines[0] : "config not loaded");
            wr_config_errors_free(&errs);
            return NULL;
        }
        char host[64];
        int port = 0;
        const char *why = NULL;
        int ok = cfg->http_listen != NULL &&
                 wr_listen_parse(cfg->http_listen, host, sizeof(host), &port, &why) == 0 &&
                 port > 0;
        wr_config_free(cfg);
        if (!ok) {
            snprintf(err, cap,
                     "%s has no fixed http.listen port: give --url http://HOST:PORT/status",
                     config);
            return NULL;
        }
        /* a wildcard listener answers on loopback */
        snprintf(where, sizeof(where), "http://%s:%d/status",
                 strcmp(host, "0.0.0.0") == 0 ? "127.0.0.1" : host, port);
        url = where;
    }
    char *body = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&body, &len);
    CURL *c = curl_easy_init();
    if (fp == NULL || c == NULL) {
        snprintf(err, cap, "out of memory");
        if (fp != NULL) {
            fclose(fp);
        }
        free(body);
        curl_easy_cleanup(c);
        return NULL;
    }
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, fp);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    fclose(fp);
    json_t *st = NULL;
    if (rc != CURLE_OK) {
        snprintf(err, cap, "%s: %s (is warren running?)", url,
                 cerr[0] ? cerr : curl_easy_strerror(rc));
    } else if (code != 200 || (st = json_loadb(body, len, 0, NULL)) == NULL) {
        snprintf(err, cap, "%s answered %ld, not a status", url, code);
    }
    free(body);
    return st;
}

/*
 * Put what is in each subscription's DLQ now, by reason, into STATUS as the
 * subscription's "dlq_now_by_reason": read from the broker with CONFIG as
 * `dlq list --group-by reason` reads it, or a string saying why not (no
 * CONFIG, the DLQ not readable). At most the first MAX messages of each: when a
 * DLQ holds more, "dlq_now_partial" says how many were read of how many.
 */
static void add_dlq_now(json_t *st, const char *config, uint32_t max)
{
    wr_config *cfg = NULL;
    char why[1024] = "give -c FILE to read the DLQs";
    if (config != NULL) {
        wr_config_errors errs = {0};
        cfg = wr_config_load(config, &errs);
        if (cfg == NULL) {
            snprintf(why, sizeof(why), "%s", errs.count > 0 ? errs.lines[0] : "config not loaded");
        } else {
            /* the broker module's log lines go to stderr: stdout is the report */
            wr_log_set_fd(2);
            wr_log_set_level(cfg->log_level);
        }
        wr_config_errors_free(&errs);
    }
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(st, "subscriptions"), i, s)
    {
        const wr_subscription *sub = NULL;
        for (int k = 0; cfg != NULL && k < cfg->sub_count; k++) {
            if (strcmp(cfg->subs[k].name, str(s, "name")) == 0) {
                sub = &cfg->subs[k];
            }
        }
        json_t *now = NULL;
        char err[1024];
        uint32_t read = 0, held = 0;
        if (sub == NULL) {
            now = json_string(cfg != NULL ? "not in the config given" : why);
        } else if ((now = wr_dlqtool_by_reason(cfg, sub, max, &read, &held, err, sizeof(err))) ==
                   NULL) {
            now = json_string(err);
        } else if (read < held) {
            /* a big DLQ: the first MAX, and say so */
            json_t *part = json_object();
            json_object_set_new(part, "read", json_integer(read));
            json_object_set_new(part, "held", json_integer(held));
            json_object_set_new(s, "dlq_now_partial", part);
        }
        json_object_set_new(s, "dlq_now_by_reason", now);
    }
    wr_config_free(cfg);
}

int wr_status_main(int argc, char **argv)
{
    const char *config = NULL, *url = NULL;
    int json = 0, no_dlq = 0;
    uint32_t dlq_max = DLQ_NOW_MAX;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--dlq-max") == 0) {
            char *end = NULL;
            long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
            if (end == NULL || *end != '\0' || end == argv[i + 1] || v < 1 || v > 1000000) {
                return usage("--dlq-max needs a count from 1 to 1000000%s", "");
            }
            dlq_max = (uint32_t)v;
            i++;
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 || strcmp(a, "--url") == 0) {
            if (i + 1 >= argc) {
                return usage("%s needs a value", a);
            }
            if (strcmp(a, "--url") == 0) {
                url = argv[++i];
            } else {
                config = argv[++i];
            }
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--no-dlq") == 0) {
            no_dlq = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("usage:\n%s", wr_status_usage);
            return 0;
        } else {
            return usage("unexpected argument '%s'", a);
        }
    }
    if (url == NULL && config == NULL) {
        return usage("%s", "status needs -c FILE (or --url URL)");
    }
    char err[1024];
    json_t *st = wr_status_fetch(config, url, err, sizeof(err));
    if (st == NULL) {
        fprintf(stderr, "warren status: %s\n", err);
        return strstr(err, "http.listen") != NULL ? 2 : 1;
    }
    if (!no_dlq) {
        add_dlq_now(st, config, dlq_max);
    }
    if (json) {
        json_dumpf(st, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
    } else {
        wr_status_render(stdout, st);
    }
    json_decref(st);
    return 0;
}
