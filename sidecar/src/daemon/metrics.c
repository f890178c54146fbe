/*
 * metrics: per-worker figures and the Prometheus exposition. See metrics.h.
 */
#include "metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "breakers.h"
#include "contracts.h"
#include "log.h"
#include "reload.h"

const double wr_hist_bounds[WR_HIST_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                1,      2.5,     5,      10,    30};

static const char *const outcome_names[WR_MO_COUNT] = {"ok",       "retried",  "dead_lettered",
                                                       "rejected", "invalid",  "duplicate",
                                                       "deferred", "returned", "parked"};

#define MAX_QUEUES_PER_SUB (40 + WR_MAX_PARTITIONS) /* a partitioned one has more */
#define REDIS_STALE_MS 15000 /* a Redis check older than this does not count as "up" */

typedef struct {
    char queue[300];
    const char *kind;
    long messages, consumers;
} qdepth;

struct wr_metrics {
    const wr_config *cfg;
    int nworkers;
    wr_wstats *ws; /* nworkers of them */
    int *ws_sub;   /* the subscription of each */
    int *ws_index; /* its index within the subscription */
    struct wr_breakers *brk;
    struct wr_reloader *rel;

    pthread_mutex_t lock; /* guards what the prober stores below */
    qdepth *queues;       /* sub_count * MAX_QUEUES_PER_SUB slots */
    int *queue_count;     /* per subscription */
    wr_lag_sample *lag;   /* sub_count * WR_LAG_SAMPLES readings, a ring per subscription */
    int *lag_count;       /* readings stored per subscription (the ring's fill) */
    int *lag_next;        /* where the next one goes */
    unsigned long queue_poll_errors;
    int redis_up;
    double redis_checked_ms;
    char redis_error[256];
    int draining, started;
};

static uint64_t ld(const atomic_uint_fast64_t *c);

void wr_hist_observe(wr_hist *h, double seconds)
{
    int i = 0;
    while (i < WR_HIST_BUCKETS && seconds > wr_hist_bounds[i]) {
        i++;
    }
    wr_stat_add(&h->bucket[i], 1);
    wr_stat_add(&h->count, 1);
    wr_stat_add(&h->sum_ns, seconds > 0 ? (uint64_t)(seconds * 1e9) : 0);
}

wr_metrics *wr_metrics_create(const wr_config *cfg)
{
    wr_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return NULL;
    }
    m->cfg = cfg;
    for (int i = 0; i < cfg->sub_count; i++) {
        m->nworkers += cfg->subs[i].concurrency;
    }
    m->ws = calloc((size_t)m->nworkers, sizeof(*m->ws));
    m->ws_sub = calloc((size_t)m->nworkers, sizeof(int));
    m->ws_index = calloc((size_t)m->nworkers, sizeof(int));
    m->queues = calloc((size_t)cfg->sub_count * MAX_QUEUES_PER_SUB, sizeof(qdepth));
    m->queue_count = calloc((size_t)cfg->sub_count, sizeof(int));
    m->lag = calloc((size_t)cfg->sub_count * WR_LAG_SAMPLES, sizeof(wr_lag_sample));
    m->lag_count = calloc((size_t)cfg->sub_count, sizeof(int));
    m->lag_next = calloc((size_t)cfg->sub_count, sizeof(int));
    if (!m->ws || !m->ws_sub || !m->ws_index || !m->queues || !m->queue_count || !m->lag ||
        !m->lag_count || !m->lag_next) {
        wr_metrics_destroy(m);
        return NULL;
    }
    int k = 0;
    for (int i = 0; i < cfg->sub_count; i++) {
        const wr_subscription *s = &cfg->subs[i];
        /* a handler may run its full timeout, then Redis and the confirms theirs */
        int64_t stuck = 2 * s->handler_timeout_ms + 2 * cfg->redis_timeout_ms + 60000;
        for (int j = 0; j < s->concurrency; j++, k++) {
            m->ws_sub[k] = i;
            m->ws_index[k] = j;
            m->ws[k].stuck_after_ms = stuck;
        }
    }
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void wr_metrics_destroy(wr_metrics *m)
{
    if (m == NULL) {
        return;
    }
    if (m->ws && m->ws_sub && m->ws_index && m->queues && m->queue_count && m->lag &&
        m->lag_count && m->lag_next) {
        pthread_mutex_destroy(&m->lock);
    }
    free(m->ws);
    free(m->ws_sub);
    free(m->ws_index);
    free(m->queues);
    free(m->queue_count);
    free(m->lag);
    free(m->lag_count);
    free(m->lag_next);
    free(m);
}

wr_wstats *wr_metrics_worker(wr_metrics *m, int sub, int index)
{
    for (int k = 0; k < m->nworkers; k++) {
        if (m->ws_sub[k] == sub && m->ws_index[k] == index) {
            return &m->ws[k];
        }
    }
    return NULL;
}

void wr_metrics_sources(wr_metrics *m, struct wr_breakers *brk, struct wr_reloader *rel)
{
    m->brk = brk;
    m->rel = rel;
}

void wr_metrics_set_queue(wr_metrics *m, int sub, const char *queue, const char *kind,
                          long messages, long consumers)
{
    if (sub < 0 || sub >= m->cfg->sub_count) {
        return;
    }
    pthread_mutex_lock(&m->lock);
    qdepth *q = &m->queues[sub * MAX_QUEUES_PER_SUB];
    int n = m->queue_count[sub], i = 0;
    while (i < n && strcmp(q[i].queue, queue) != 0) {
        i++;
    }
    if (i == n && n < MAX_QUEUES_PER_SUB) {
        snprintf(q[i].queue, sizeof(q[i].queue), "%s", queue);
        m->queue_count[sub] = ++n;
    }
    if (i < n) {
        q[i].kind = kind;
        q[i].messages = messages;
        q[i].consumers = consumers;
    }
    if (messages >= 0 && strcmp(kind, "main") == 0) {
        /* a lag reading: the depth with what the workers had done by now */
        wr_lag_sample r = {.mono_ms = wr_mono_ms(), .ready = messages};
        for (int k = 0; k < m->nworkers; k++) {
            if (m->ws_sub[k] != sub) {
                continue;
            }
            r.held += atomic_load(&m->ws[k].in_flight);
            for (int o = 0; o < WR_MO_COUNT; o++) {
                r.finished += o == WR_MO_RETURNED ? 0 : ld(&m->ws[k].outcomes[o]);
            }
        }
        m->lag[sub * WR_LAG_SAMPLES + m->lag_next[sub]] = r;
        m->lag_next[sub] = (m->lag_next[sub] + 1) % WR_LAG_SAMPLES;
        if (m->lag_count[sub] < WR_LAG_SAMPLES) {
            m->lag_count[sub]++;
        }
    }
    pthread_mutex_unlock(&m->lock);
}

int wr_metrics_lag_samples(wr_metrics *m, int sub, wr_lag_sample *out, int cap)
{
    if (sub < 0 || sub >= m->cfg->sub_count) {
        return 0;
    }
    pthread_mutex_lock(&m->lock);
    int n = m->lag_count[sub] < cap ? m->lag_count[sub] : cap;
    /* the oldest of the last N readings */
    int at = (m->lag_next[sub] - n + WR_LAG_SAMPLES) % WR_LAG_SAMPLES;
    for (int i = 0; i < n; i++) {
        out[i] = m->lag[sub * WR_LAG_SAMPLES + (at + i) % WR_LAG_SAMPLES];
    }
    pthread_mutex_unlock(&m->lock);
    return n;
}

void wr_metrics_queue_poll_failed(wr_metrics *m)
{
    pthread_mutex_lock(&m->lock);
    m->queue_poll_errors++;
    pthread_mutex_unlock(&m->lock);
}

void wr_metrics_set_redis(wr_metrics *m, int up, const char *error)
{
    pthread_mutex_lock(&m->lock);
    m->redis_up = up;
    m->redis_checked_ms = wr_mono_ms();
    snprintf(m->redis_error, sizeof(m->redis_error), "%s", error ? error : "");
    pthread_mutex_unlock(&m->lock);
}

void wr_metrics_set_draining(wr_metrics *m, int draining)
{
    pthread_mutex_lock(&m->lock);
    m->draining = draining;
    pthread_mutex_unlock(&m->lock);
}

void wr_metrics_set_started(wr_metrics *m)
{
    pthread_mutex_lock(&m->lock);
    m->started = 1;
    pthread_mutex_unlock(&m->lock);
}

void wr_metrics_label_escape(const char *value, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = value; *p && o + 3 < cap; p++) {
        if (*p == '\\' || *p == '"') {
            out[o++] = '\\';
            out[o++] = *p;
        } else if (*p == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

/* ---- rendering ------------------------------------------------------------------------ */

static uint64_t ld(const atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void family(FILE *fp, const char *name, const char *type, const char *help)
{
    fprintf(fp, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Sum of counter FIELD (an offset into wr_wstats) over the workers of SUB. */
static uint64_t sum_sub(const wr_metrics *m, int sub, size_t offset)
{
    uint64_t t = 0;
    for (int k = 0; k < m->nworkers; k++) {
        if (m->ws_sub[k] == sub) {
            t += ld((const atomic_uint_fast64_t *)((const char *)&m->ws[k] + offset));
        }
    }
    return t;
}

static void counter_per_sub(FILE *fp, const wr_metrics *m, const char *name, const char *help,
                            size_t offset)
{
    family(fp, name, "counter", help);
    for (int s = 0; s < m->cfg->sub_count; s++) {
        fprintf(fp, "%s{subscription=\"%s\"} %llu\n", name, m->cfg->subs[s].name,
                (unsigned long long)sum_sub(m, s, offset));
    }
}

/* A gauge per subscription: the sum over its workers of the atomic_int of
 * wr_wstats at OFFSET. */
static void gauge_per_sub(FILE *fp, const wr_metrics *m, const char *name, const char *help,
                          size_t offset)
{
    family(fp, name, "gauge", help);
    for (int s = 0; s < m->cfg->sub_count; s++) {
        long t = 0;
        for (int k = 0; k < m->nworkers; k++) {
            atomic_int *v = (atomic_int *)((char *)&m->ws[k] + offset);
            t += m->ws_sub[k] == s ? atomic_load(v) : 0;
        }
        fprintf(fp, "%s{subscription=\"%s\"} %ld\n", name, m->cfg->subs[s].name, t);
    }
}

/* A counter array of wr_wstats (at OFFSET) indexed by causal gate: one series
 * per gate of every subscription, labelled gate="<type><-<after>". */
static void counter_per_gate(FILE *fp, const wr_metrics *m, const char *name, const char *help,
                             size_t offset)
{
    family(fp, name, "counter", help);
    for (int s = 0; s < m->cfg->sub_count; s++) {
        const wr_subscription *sub = &m->cfg->subs[s];
        for (int g = 0; g < sub->gate_count && g < WR_MAX_GATES; g++) {
            char gate[512], label[1024];
            snprintf(gate, sizeof(gate), "%s<-%s", sub->gates[g].type, sub->gates[g].after);
            wr_metrics_label_escape(gate, label, sizeof(label));
            fprintf(fp, "%s{subscription=\"%s\",gate=\"%s\"} %llu\n", name, sub->name, label,
                    (unsigned long long)sum_sub(m, s,
                                                offset + sizeof(atomic_uint_fast64_t) * (size_t)g));
        }
    }
}

/* One histogram series: H summed over the workers of SUB. EXTRA: more labels. */
static void hist_series(FILE *fp, const wr_metrics *m, const char *name, int sub, size_t offset,
                        const char *extra)
{
    uint64_t b[WR_HIST_BUCKETS + 1] = {0}, count = 0, sum_ns = 0;
    for (int k = 0; k < m->nworkers; k++) {
        if (m->ws_sub[k] != sub) {
            continue;
        }
        const wr_hist *h = (const wr_hist *)((const char *)&m->ws[k] + offset);
        for (int i = 0; i <= WR_HIST_BUCKETS; i++) {
            b[i] += ld(&h->bucket[i]);
        }
        count += ld(&h->count);
        sum_ns += ld(&h->sum_ns);
    }
    /* buckets first, +Inf last: the count is the sum of the buckets read, so the
     * series stays consistent even while workers keep observing */
    const char *sn = m->cfg->subs[sub].name;
    uint64_t cum = 0;
    for (int i = 0; i < WR_HIST_BUCKETS; i++) {
        cum += b[i];
        fprintf(fp, "%s_bucket{subscription=\"%s\"%s,le=\"%g\"} %llu\n", name, sn, extra,
                wr_hist_bounds[i], (unsigned long long)cum);
    }
    cum += b[WR_HIST_BUCKETS];
    (void)count;
    fprintf(fp, "%s_bucket{subscription=\"%s\"%s,le=\"+Inf\"} %llu\n", name, sn, extra,
            (unsigned long long)cum);
    fprintf(fp, "%s_sum{subscription=\"%s\"%s} %.9f\n", name, sn, extra, (double)sum_ns / 1e9);
    fprintf(fp, "%s_count{subscription=\"%s\"%s} %llu\n", name, sn, extra, (unsigned long long)cum);
}

static void breaker_line(void *ud, const char *name, const char *kind, wr_brk_state state,
                         const unsigned long transitions[3])
{
    FILE *fp = ud;
    static const char *states[] = {"closed", "open", "half_open"};
    char esc[300];
    wr_metrics_label_escape(name, esc, sizeof(esc));
    (void)transitions;
    for (int i = 0; i < 3; i++) {
        fprintf(fp, "warren_breaker_state{breaker=\"%s\",kind=\"%s\",state=\"%s\"} %d\n", esc, kind,
                states[i], (int)state == i);
    }
}

static void breaker_transitions(void *ud, const char *name, const char *kind, wr_brk_state state,
                                const unsigned long transitions[3])
{
    FILE *fp = ud;
    static const char *states[] = {"closed", "open", "half_open"};
    char esc[300];
    wr_metrics_label_escape(name, esc, sizeof(esc));
    (void)state;
    for (int i = 0; i < 3; i++) {
        fprintf(fp, "warren_breaker_transitions_total{breaker=\"%s\",kind=\"%s\",to=\"%s\"} %lu\n",
                esc, kind, states[i], transitions[i]);
    }
}

#define OFF(field) offsetof(wr_wstats, field)

/* Messages: outcomes, dead letters by reason, retries by attempt, handler time, in flight. */
static void render_messages(wr_metrics *m, FILE *fp)
{
    const wr_config *cfg = m->cfg;
    int nsub = cfg->sub_count;
    family(fp, "warren_messages_handled_total", "counter",
           "Deliveries finished, by outcome (ok, retried, dead_lettered, rejected, invalid, "
           "duplicate, deferred, returned).");
    for (int s = 0; s < nsub; s++) {
        for (int o = 0; o < WR_MO_COUNT; o++) {
            fprintf(fp, "warren_messages_handled_total{subscription=\"%s\",outcome=\"%s\"} %llu\n",
                    cfg->subs[s].name, outcome_names[o],
                    (unsigned long long)sum_sub(
                        m, s, OFF(outcomes) + sizeof(atomic_uint_fast64_t) * (size_t)o));
        }
    }

    family(fp, "warren_dead_letters_total", "counter",
           "Copies sent to the dead-letter queue, by reason (the DLQ header's code).");
    for (int s = 0; s < nsub; s++) {
        for (int r = WR_RS_NONE + 1; r < WR_RS_COUNT; r++) {
            fprintf(fp, "warren_dead_letters_total{subscription=\"%s\",reason=\"%s\"} %llu\n",
                    cfg->subs[s].name, wr_reason_name((wr_reason)r),
                    (unsigned long long)sum_sub(
                        m, s, OFF(dead_letters) + sizeof(atomic_uint_fast64_t) * (size_t)r));
        }
    }

    family(fp, "warren_retries_total", "counter",
           "Failed attempts sent to a delay queue, by the attempt that failed.");
    for (int s = 0; s < nsub; s++) {
        int max = cfg->subs[s].retry.max_attempts;
        if (max > WR_MET_MAX_ATTEMPT) {
            max = WR_MET_MAX_ATTEMPT;
        }
        for (int a = 1; a <= max; a++) {
            uint64_t v = sum_sub(m, s, OFF(retries) + sizeof(atomic_uint_fast64_t) * (size_t)a);
            if (v > 0 || a < max) {
                fprintf(fp, "warren_retries_total{subscription=\"%s\",attempt=\"%d\"} %llu\n",
                        cfg->subs[s].name, a, (unsigned long long)v);
            }
        }
    }

    family(fp, "warren_handler_duration_seconds", "histogram", "Time the handler ran per message.");
    for (int s = 0; s < nsub; s++) {
        hist_series(fp, m, "warren_handler_duration_seconds", s, OFF(handler), "");
    }

    gauge_per_sub(fp, m, "warren_messages_in_flight",
                  "Deliveries in the batches being processed now.", OFF(in_flight));
}

/* A counter family of wr_wstats: the field at OFFSET, summed per subscription
 * (counter_per_sub) or, for a PER_GATE array, per causal gate (counter_per_gate). */
typedef struct {
    const char *name;
    const char *help;
    size_t offset;
    int per_gate;
} counter_family;

/* The counters render_calls writes after the Redis call durations, in this order. */
static const counter_family call_counters[] = {
    {"warren_redis_errors_total", "Redis calls that failed (the batch was returned to the queue).",
     OFF(redis_errors), 0},
    {"warren_redis_replica_wait_failures_total",
     "Batches whose commit fewer than redis.min_replicas_acked replicas acknowledged in time "
     "(their handled messages were returned, not acked).",
     OFF(replica_waits_failed), 0},
    {"warren_journal_write_failures_total",
     "Batches whose journal entries could not be written (best effort: the messages were "
     "handled and acked all the same).",
     OFF(journal_errors), 0},
    {"warren_lease_lost_total",
     "Outcomes not recorded because another worker had taken the message over.", OFF(lease_lost),
     0},
    {"warren_forged_headers_total",
     "Messages whose x-warren-* headers (attempt, original route) were not signed by warren: "
     "ignored, the message handled as a fresh one.",
     OFF(forged), 0},
    {"warren_ordering_followed_total",
     "Messages not run because an earlier message of their ordering key had not finished: sent "
     "after it, back to the queue or through the wait queue.",
     OFF(lane_followed), 0},
    {"warren_gate_parked_total",
     "Messages parked behind a causal gate because its predecessor was not done for their key.",
     OFF(gate_parked), 1},
    {"warren_gate_released_total",
     "Parked messages sent back to the queue once their causal gate's predecessor was done (or "
     "again, after their sender died).",
     OFF(gate_released), 1},
    {"warren_gate_timeouts_total",
     "Parked messages whose predecessor was not done within the gate's timeout: dead-lettered "
     "(reason gate-timeout) or sent back to run (on_timeout: run).",
     OFF(gate_timeouts), 1},
};

/* Redis and broker calls, the failures they count, ordering and gates. */
static void render_calls(wr_metrics *m, FILE *fp)
{
    const wr_config *cfg = m->cfg;
    int nsub = cfg->sub_count;
    family(fp, "warren_redis_call_duration_seconds", "histogram",
           "Round trips to Redis for a batch's idempotency records (claim, finish); "
           "journal: the time to send a batch's journal entries (their replies are read "
           "with the next claim).");
    for (int s = 0; s < nsub; s++) {
        hist_series(fp, m, "warren_redis_call_duration_seconds", s, OFF(redis_claim),
                    ",call=\"claim\"");
        hist_series(fp, m, "warren_redis_call_duration_seconds", s, OFF(redis_finish),
                    ",call=\"finish\"");
        hist_series(fp, m, "warren_redis_call_duration_seconds", s, OFF(redis_journal),
                    ",call=\"journal\"");
        hist_series(fp, m, "warren_redis_call_duration_seconds", s, OFF(redis_wait),
                    ",call=\"wait\"");
    }
    for (size_t i = 0; i < sizeof(call_counters) / sizeof(call_counters[0]); i++) {
        const counter_family *c = &call_counters[i];
        if (c->per_gate) {
            counter_per_gate(fp, m, c->name, c->help, c->offset);
        } else {
            counter_per_sub(fp, m, c->name, c->help, c->offset);
        }
    }

    family(fp, "warren_publish_confirm_duration_seconds", "histogram",
           "Wait for the broker's confirms of a batch's publishes.");
    for (int s = 0; s < nsub; s++) {
        hist_series(fp, m, "warren_publish_confirm_duration_seconds", s, OFF(confirm), "");
    }
    counter_per_sub(fp, m, "warren_broker_reconnects_total",
                    "Broker connections made again after one was lost.", OFF(reconnects));
}

/* Workers connected and blocked, per subscription. */
static void render_workers(wr_metrics *m, FILE *fp)
{
    gauge_per_sub(fp, m, "warren_workers_connected", "Workers connected to the broker.",
                  OFF(connected));

    gauge_per_sub(fp, m, "warren_workers_blocked",
                  "Workers whose publishes the broker blocks (memory or disk alarm): they take no "
                  "messages until it lifts.",
                  OFF(blocked));
}

/* Breakers, reloads, the handler versions and the contracts that run now. */
static void render_live(wr_metrics *m, FILE *fp)
{
    const wr_config *cfg = m->cfg;
    int nsub = cfg->sub_count;
    if (m->brk != NULL) {
        family(fp, "warren_breaker_state", "gauge",
               "Circuit breaker state: 1 for the state it is in, 0 for the others.");
        wr_breakers_each(m->brk, breaker_line, fp);
        family(fp, "warren_breaker_transitions_total", "counter",
               "Circuit breaker state changes, by the state entered.");
        wr_breakers_each(m->brk, breaker_transitions, fp);
    }

    if (m->rel != NULL) {
        long applied, refused;
        wr_reloader_counts(m->rel, &applied, &refused);
        family(fp, "warren_handler_reloads_total", "counter",
               "Handler and policy reloads, by result.");
        fprintf(fp, "warren_handler_reloads_total{result=\"applied\"} %ld\n", applied);
        fprintf(fp, "warren_handler_reloads_total{result=\"refused\"} %ld\n", refused);
        family(fp, "warren_handler_info", "gauge",
               "The handler version each subscription runs (always 1).");
        for (int s = 0; s < nsub; s++) {
            char v[17];
            wr_live_version(wr_reloader_live(m->rel, s), v);
            fprintf(fp, "warren_handler_info{subscription=\"%s\",version=\"%s\"} 1\n",
                    cfg->subs[s].name, v);
        }
        family(fp, "warren_contract_events_total", "counter",
               "Events checked against their contract (contracts.h), by type, version and "
               "result: valid, upcast, schema-invalid, version-unknown, no-contract, "
               "unknown-type, upcast-failed (of those counted as upcast).");
        for (int s = 0; s < nsub; s++) {
            wr_contracts *c = wr_live_contracts(wr_reloader_live(m->rel, s));
            if (c != NULL) {
                wr_contracts_render(c, cfg->subs[s].name, fp);
                wr_contracts_free(c);
            }
        }
    }
}

/* What the prober saw: queue depths and consumers, polls that failed, Redis. */
static void render_queues(wr_metrics *m, FILE *fp)
{
    const wr_config *cfg = m->cfg;
    int nsub = cfg->sub_count;
    pthread_mutex_lock(&m->lock);
    family(fp, "warren_queue_messages", "gauge",
           "Messages ready in the subscription's queues (polled), by kind: main, retry, "
           "wait, dlq.");
    for (int s = 0; s < nsub; s++) {
        for (int i = 0; i < m->queue_count[s]; i++) {
            const qdepth *q = &m->queues[s * MAX_QUEUES_PER_SUB + i];
            if (q->messages >= 0) {
                char esc[620];
                wr_metrics_label_escape(q->queue, esc, sizeof(esc));
                fprintf(fp,
                        "warren_queue_messages{subscription=\"%s\",queue=\"%s\",kind=\"%s\"} %ld\n",
                        cfg->subs[s].name, esc, q->kind, q->messages);
            }
        }
    }
    family(fp, "warren_queue_consumers", "gauge",
           "Consumers of the subscription's main queue (polled), from every process.");
    for (int s = 0; s < nsub; s++) {
        for (int i = 0; i < m->queue_count[s]; i++) {
            const qdepth *q = &m->queues[s * MAX_QUEUES_PER_SUB + i];
            if (q->messages >= 0 && strcmp(q->kind, "main") == 0) {
                fprintf(fp, "warren_queue_consumers{subscription=\"%s\"} %ld\n", cfg->subs[s].name,
                        q->consumers);
            }
        }
    }
    family(fp, "warren_queue_poll_errors_total", "counter",
           "Queue depth polls that failed (broker away or a queue missing).");
    fprintf(fp, "warren_queue_poll_errors_total %lu\n", m->queue_poll_errors);
    family(fp, "warren_redis_up", "gauge", "1 when Redis answered the last health check.");
    fprintf(fp, "warren_redis_up %d\n",
            m->redis_up && wr_mono_ms() - m->redis_checked_ms < REDIS_STALE_MS);
    pthread_mutex_unlock(&m->lock);
}

void wr_metrics_render(wr_metrics *m, FILE *fp)
{
    family(fp, "warren_build_info", "gauge", "The running warren version (always 1).");
    fprintf(fp, "warren_build_info{version=\"%s\"} 1\n", WARREN_VERSION);

    counter_per_sub(fp, m, "warren_messages_received_total",
                    "Deliveries taken from the subscription's queue.", OFF(received));

    render_messages(m, fp);
    render_calls(m, fp);
    render_workers(m, fp);
    render_live(m, fp);
    render_queues(m, fp);
}

/* ---- health ---------------------------------------------------------------------------- */

int wr_metrics_live(wr_metrics *m, FILE *fp)
{
    int ok = 1;
    double now = wr_mono_ms();
    for (int k = 0; k < m->nworkers; k++) {
        const wr_wstats *w = &m->ws[k];
        double idle = now - (double)atomic_load(&w->beat_ms);
        if (atomic_load(&w->busy) && idle > (double)w->stuck_after_ms) {
            ok = 0;
            fprintf(fp, "worker %s#%d: stuck, no progress for %.0f s (limit %lld s)\n",
                    m->cfg->subs[m->ws_sub[k]].name, m->ws_index[k], idle / 1000,
                    (long long)(w->stuck_after_ms / 1000));
        }
    }
    fprintf(fp, ok ? "ok: %d workers making progress\n" : "not live\n", m->nworkers);
    return ok;
}

int wr_metrics_ready(wr_metrics *m, FILE *fp)
{
    int ok = 1;
    pthread_mutex_lock(&m->lock);
    int started = m->started, draining = m->draining;
    int redis = m->redis_up && wr_mono_ms() - m->redis_checked_ms < REDIS_STALE_MS;
    char rerr[256];
    snprintf(rerr, sizeof(rerr), "%s", m->redis_error[0] ? m->redis_error : "no answer yet");
    pthread_mutex_unlock(&m->lock);
    if (!started) {
        ok = 0;
        fprintf(fp, "handlers: not loaded yet\n");
    } else {
        fprintf(fp, "handlers: loaded\n");
    }
    if (draining) {
        ok = 0;
        fprintf(fp, "draining: shutting down\n");
    }
    if (redis) {
        fprintf(fp, "redis: ok\n");
    } else {
        ok = 0;
        fprintf(fp, "redis: not answering: %s\n", rerr);
        /* the workers close their consumers on purpose meanwhile: not the broker's doing */
        fprintf(fp, "paused: Redis not answering; consumption resumes when it answers\n");
    }
    int down = 0;
    for (int k = 0; k < m->nworkers && redis; k++) {
        if (!atomic_load(&m->ws[k].connected)) {
            down++;
            if (down <= 5) {
                fprintf(fp, "broker: worker %s#%d not connected\n", m->cfg->subs[m->ws_sub[k]].name,
                        m->ws_index[k]);
            }
        }
    }
    if (!redis) {
        /* no broker line: whatever it said would be about the pause */
    } else if (down == 0) {
        fprintf(fp, "broker: %d workers connected\n", m->nworkers);
    } else {
        ok = 0;
    }
    int blocked = 0;
    for (int k = 0; k < m->nworkers; k++) {
        blocked += atomic_load(&m->ws[k].blocked);
    }
    if (blocked > 0) {
        ok = 0;
        fprintf(fp,
                "broker: publishing blocked by a broker alarm (memory or disk) for %d "
                "workers\n",
                blocked);
    }
    /* a breaker that stops a subscription is no reason to leave the Service
     * (the other subscriptions work, and restarting would not help): a detail */
    for (int i = 0; m->brk != NULL && i < m->cfg->sub_count; i++) {
        if (!m->cfg->subs[i].breaker.enabled) {
            continue;
        }
        wr_brk_status bs;
        wr_shared_brk_status(wr_breakers_sub(m->brk, i), &bs);
        if (bs.state == WR_BRK_OPEN) {
            char since[32], probe[32];
            wr_format_time(bs.opened_at_ms, since, sizeof(since));
            wr_format_time(bs.probe_at_ms, probe, sizeof(probe));
            fprintf(fp,
                    "consumption paused: breaker %s open since %s, next probe at %s "
                    "(does not fail readiness)\n",
                    m->cfg->subs[i].name, since, probe);
        }
    }
    fprintf(fp, ok ? "ready\n" : "not ready\n");
    return ok;
}

void wr_metrics_sub_figures(wr_metrics *m, int sub, wr_sub_figures *out)
{
    memset(out, 0, sizeof(*out));
    out->depth_main = out->depth_retry = out->depth_wait = out->depth_dlq = -1;
    for (int k = 0; k < m->nworkers; k++) {
        if (m->ws_sub[k] != sub) {
            continue;
        }
        const wr_wstats *w = &m->ws[k];
        out->workers++;
        out->connected += atomic_load(&w->connected) != 0;
        out->blocked += atomic_load(&w->blocked) != 0;
        out->in_flight += atomic_load(&w->in_flight);
        out->received += ld(&w->received);
        int64_t ts = (int64_t)atomic_load(&w->newest_ts) * 1000;
        if (ts > out->newest_ts_ms) {
            out->newest_ts_ms = ts;
        }
        for (int o = 0; o < WR_MO_COUNT; o++) {
            out->outcomes[o] += ld(&w->outcomes[o]);
        }
        for (int r = 0; r < WR_RS_COUNT; r++) {
            out->dead_letters[r] += ld(&w->dead_letters[r]);
        }
    }
    pthread_mutex_lock(&m->lock);
    const qdepth *q = &m->queues[sub * MAX_QUEUES_PER_SUB];
    for (int i = 0; i < m->queue_count[sub]; i++) {
        long *d = strcmp(q[i].kind, "main") == 0    ? &out->depth_main
                  : strcmp(q[i].kind, "wait") == 0  ? &out->depth_wait
                  : strcmp(q[i].kind, "dlq") == 0   ? &out->depth_dlq
                  : strcmp(q[i].kind, "retry") == 0 ? &out->depth_retry
                                                    : NULL;
        if (d == NULL || q[i].messages < 0) {
            continue;
        }
        /* the delay tiers add up */
        *d = (*d < 0 ? 0 : *d) + q[i].messages;
        if (strcmp(q[i].kind, "main") == 0) {
            out->consumers = q[i].consumers;
        }
    }
    pthread_mutex_unlock(&m->lock);
}

void wr_metrics_proc_figures(wr_metrics *m, wr_proc_figures *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&m->lock);
    out->started = m->started;
    out->draining = m->draining;
    out->redis_checked_ago_ms = wr_mono_ms() - m->redis_checked_ms;
    out->redis_up = m->redis_up && out->redis_checked_ago_ms < REDIS_STALE_MS;
    snprintf(out->redis_error, sizeof(out->redis_error), "%s",
             m->redis_error[0] ? m->redis_error : "no answer yet");
    pthread_mutex_unlock(&m->lock);
}

const wr_config *wr_metrics_config(const wr_metrics *m)
{
    return m->cfg;
}

struct wr_breakers *wr_metrics_breakers(const wr_metrics *m)
{
    return m->brk;
}

struct wr_reloader *wr_metrics_reloader(const wr_metrics *m)
{
    return m->rel;
}
