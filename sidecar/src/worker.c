/*
 * worker: one consumer thread: connect, declare, consume, and run batches
 * through the handler with confirmed publishes before acks. See worker.h.
 */
#include "worker.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "dlq.h"
#include "envelope.h"
#include "log.h"
#include "lua_rt.h"
#include "topology.h"

#define TAKE_TIMEOUT_MS 200       /* idle wait per loop turn: bounds shutdown latency */
#define CONFIRM_TIMEOUT_MS 30000  /* a batch's confirms; past this the connection is suspect */
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 30000

/* What the worker decided for one delivery of a batch. */
typedef enum {
    ACT_NONE = 0,  /* not started (shutdown): return it to the queue */
    ACT_OK,        /* handled: its publishes (if any) must be confirmed */
    ACT_DLQ,       /* failed or invalid: its DLQ copy must be confirmed */
} action;

typedef struct {
    amqp_envelope_t *d;
    wr_envelope env;
    action act;
    size_t pub_first, pub_end; /* its publishes, as indexes in the confirm batch */
    int publish_failed;        /* a publish call itself failed */
    const char *outcome;       /* for the log: handler outcome name */
    char reason[64];
    char error[1024];
    double started_ms;
    double duration_ms;
    int attempt;
    char trace_id[33];
} item;

struct wr_worker {
    pthread_t thread;
    int thread_started;
    atomic_int done;
    const wr_config *cfg;
    const wr_subscription *sub;
    wr_run_flags *flags;
    int index;
    char name[160];        /* "orders#0": logs and the broker's connection name */

    pthread_mutex_t lua_lock; /* guards swapping `lua` against wr_worker_interrupt */
    wr_lua *lua;
    wr_lua_opts lua_opts;

    wr_broker *b;
    wr_topology topo;
    amqp_pool_t pool;      /* per batch: publish properties and routing strings */
    item *items;
    amqp_envelope_t **taken;
    uint64_t rng;
    size_t max_body;
};

/* ---- small helpers ------------------------------------------------------------- */

static uint64_t next_rand(wr_worker *w)
{
    /* xorshift64*: per-worker, no shared state; used for jitter and span ids */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 2685821657736338717ULL;
}

static void seed_rand(wr_worker *w)
{
    uint64_t seed = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &seed, sizeof(seed)) != (ssize_t)sizeof(seed)) {
            seed = 0;
        }
        close(fd);
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    w->rng = (seed ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)w->index << 32)) | 1;
}

static void hex_rand(wr_worker *w, char *out, int digits)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t r = 0;
    for (int i = 0; i < digits; i++) {
        if (i % 16 == 0) {
            r = next_rand(w);
        }
        out[i] = hex[r & 15];
        r >>= 4;
    }
    out[digits] = '\0';
}

/* Sleep MS milliseconds, waking early when the worker is told to stop. */
static void nap(wr_worker *w, int ms)
{
    while (ms > 0 && !atomic_load(&w->flags->stop)) {
        int step = ms < 100 ? ms : 100;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static amqp_bytes_t pool_dup(amqp_pool_t *pool, const char *s, size_t n)
{
    amqp_bytes_t b = {0, ""};
    if (n > 0) {
        char *p = amqp_pool_alloc(pool, n);
        if (p != NULL) {
            memcpy(p, s, n);
            b.bytes = p;
            b.len = n;
        }
    }
    return b;
}

/* ---- connection ------------------------------------------------------------------ */

/*
 * Connect, declare and consume, retrying with capped, jittered exponential
 * backoff until it works or the worker is told to stop. Returns 0 connected,
 * -1 stopping.
 */
static int connect_broker(wr_worker *w)
{
    int backoff = BACKOFF_MIN_MS;
    int attempt = 0;
    const wr_config *cfg = w->cfg;
    while (!atomic_load(&w->flags->stop)) {
        char err[512];
        attempt++;
        w->b = wr_broker_create(&cfg->amqp, (int)(cfg->amqp_heartbeat_ms / 1000),
                                cfg->amqp_connect_timeout_ms, w->name, err, sizeof(err));
        if (w->b != NULL) {
            if (wr_broker_declare(w->b, &w->topo) == WR_BROKER_OK &&
                wr_broker_consume(w->b, w->sub->queue, w->sub->prefetch) == WR_BROKER_OK) {
                wr_logline l;
                wr_log_begin(&l, WR_LOG_INFO, "consuming");
                wr_log_str(&l, "subscription", w->sub->name);
                wr_log_int(&l, "worker", w->index);
                wr_log_str(&l, "queue", w->sub->queue);
                wr_log_int(&l, "prefetch", w->sub->prefetch);
                wr_log_str(&l, "broker", cfg->amqp.redacted);
                if (attempt > 1) {
                    wr_log_int(&l, "attempts", attempt);
                }
                wr_log_end(&l);
                return 0;
            }
            snprintf(err, sizeof(err), "%s", wr_broker_error(w->b));
            wr_broker_destroy(w->b);
            w->b = NULL;
        }
        int wait = backoff / 2 + (int)(next_rand(w) % (uint64_t)(backoff / 2 + 1));
        wr_logline l;
        wr_log_begin(&l, WR_LOG_ERROR, "broker not available");
        wr_log_str(&l, "subscription", w->sub->name);
        wr_log_int(&l, "worker", w->index);
        wr_log_str(&l, "broker", cfg->amqp.redacted);
        wr_log_str(&l, "error", err);
        wr_log_int(&l, "retry_in_ms", wait);
        wr_log_end(&l);
        nap(w, wait);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return -1;
}

/* ---- one message ------------------------------------------------------------------ */

/* Publish the handler's buffered events for IT. Returns a WR_BROKER_* code. */
static int publish_outgoing(wr_worker *w, item *it, const wr_lua_result *res)
{
    for (int i = 0; i < res->pub_count; i++) {
        const wr_lua_pub *p = &res->pubs[i];
        amqp_basic_properties_t props;
        memset(&props, 0, sizeof(props));
        props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                       AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_HEADERS_FLAG;
        props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
        props.timestamp = (uint64_t)(wr_now_ms() / 1000);
        /* deterministic: a re-run after a crash publishes the same ids */
        char id[300];
        int n = snprintf(id, sizeof(id), "%.*s:%d", (int)(it->env.id.len > 256 ? 256 : it->env.id.len),
                         (const char *)it->env.id.bytes, i + 1);
        props.message_id = pool_dup(&w->pool, id, (size_t)n);
        if (p->content_type) {
            props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
            props.content_type = pool_dup(&w->pool, p->content_type, strlen(p->content_type));
        }
        if (p->type) {
            props._flags |= AMQP_BASIC_TYPE_FLAG;
            props.type = pool_dup(&w->pool, p->type, strlen(p->type));
        }
        amqp_table_entry_t *h =
            amqp_pool_alloc(&w->pool, sizeof(*h) * (size_t)(p->header_count + 2));
        if (h == NULL) {
            return WR_BROKER_DOWN;
        }
        int nh = 0;
        for (int k = 0; k < p->header_count; k++) {
            h[nh].key = pool_dup(&w->pool, p->header_keys[k], strlen(p->header_keys[k]));
            h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
            h[nh].value.value.bytes = pool_dup(&w->pool, p->header_vals[k], strlen(p->header_vals[k]));
            nh++;
        }
        h[nh].key = amqp_cstring_bytes("x-warren-causation-id");
        h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
        h[nh].value.value.bytes = it->env.id;
        nh++;
        char tp[56], span[17];
        hex_rand(w, span, 16);
        snprintf(tp, sizeof(tp), "00-%s-%s-01", it->trace_id, span);
        h[nh].key = amqp_cstring_bytes("traceparent");
        h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
        h[nh].value.value.bytes = pool_dup(&w->pool, tp, strlen(tp));
        nh++;
        props.headers.num_entries = nh;
        props.headers.entries = h;

        amqp_bytes_t ex = pool_dup(&w->pool, p->exchange, strlen(p->exchange));
        amqp_bytes_t rk = pool_dup(&w->pool, p->routing_key, strlen(p->routing_key));
        amqp_bytes_t body = {p->body_len, p->body};
        size_t idx;
        int rc = wr_broker_publish(w->b, ex, rk, p->mandatory, &props, body, &idx);
        if (rc != WR_BROKER_OK) {
            return rc;
        }
        if (i == 0) {
            it->pub_first = idx;
        }
        it->pub_end = idx + 1;
    }
    return WR_BROKER_OK;
}

/* Publish IT's original body with its story to the DLQ. */
static int publish_dlq(wr_worker *w, item *it, const char *error_class)
{
    wr_failure f = {
        .reason = it->reason,
        .error_class = error_class,
        .error = it->error,
        .attempt = it->attempt,
        .now_ms = wr_now_ms(),
        .subscription = w->sub->name,
        .queue = w->sub->queue,
        .handler = w->sub->handler,
        .handler_version = w->lua ? wr_lua_version(w->lua) : NULL,
        .trace_id = it->trace_id,
    };
    amqp_basic_properties_t props;
    if (wr_dlq_build_props(&w->pool, &it->d->message.properties, it->d->exchange,
                           it->d->routing_key, &f, &props) != 0) {
        return WR_BROKER_DOWN;
    }
    size_t idx;
    int rc = wr_broker_publish(w->b, amqp_empty_bytes, amqp_cstring_bytes(w->sub->dlq), 1, &props,
                               it->d->message.body, &idx);
    if (rc == WR_BROKER_OK) {
        it->pub_first = idx;
        it->pub_end = idx + 1;
    }
    return rc;
}

/* Replace the Lua state after it ran out of memory. */
static void rebuild_lua(wr_worker *w)
{
    char err[1024];
    wr_lua *fresh = wr_lua_create(&w->lua_opts, err, sizeof(err));
    if (fresh == NULL) {
        /* keep the old one: after its failed allocation and a full GC it still works */
        wr_logf(WR_LOG_ERROR, "rebuilding the Lua state of %s failed, keeping the old one: %s",
                w->name, err);
        return;
    }
    pthread_mutex_lock(&w->lua_lock);
    wr_lua *old = w->lua;
    w->lua = fresh;
    pthread_mutex_unlock(&w->lua_lock);
    wr_lua_destroy(old);
    wr_logf(WR_LOG_WARN, "Lua state of %s rebuilt after it exceeded its memory limit", w->name);
}

/*
 * Decode and run one delivery; publish what its outcome requires. Returns a
 * WR_BROKER_* code (DOWN stops the batch: nothing more is acked).
 */
static int run_one(wr_worker *w, item *it)
{
    const char *reason = NULL;
    it->started_ms = wr_mono_ms();
    it->pub_first = it->pub_end = 0;
    if (wr_envelope_decode(it->d, w->max_body, &it->env, &reason, it->error,
                           sizeof(it->error)) != 0) {
        it->attempt = it->env.attempt;
        char span[17];
        if (wr_trace_parse(it->env.traceparent, it->trace_id, span) != 0) {
            hex_rand(w, it->trace_id, 32);
        }
        snprintf(it->reason, sizeof(it->reason), "%s", reason);
        it->outcome = "invalid";
        it->act = ACT_DLQ;
        it->duration_ms = wr_mono_ms() - it->started_ms;
        return publish_dlq(w, it, "invalid");
    }
    it->attempt = it->env.attempt;
    char span[17];
    if (wr_trace_parse(it->env.traceparent, it->trace_id, span) != 0) {
        hex_rand(w, it->trace_id, 32);
    }

    char key[300];
    snprintf(key, sizeof(key), "%.*s", (int)(it->env.id.len > 256 ? 256 : it->env.id.len),
             (const char *)it->env.id.bytes);
    wr_lua_call call = {.idempotency_key = key, .trace_id = it->trace_id, .attempt = it->attempt};
    wr_lua_result res;
    wr_outcome out = wr_lua_handle(w->lua, &it->env, &call, &res);
    it->duration_ms = wr_mono_ms() - it->started_ms;
    if (res.rebuild) {
        rebuild_lua(w);
    }
    it->outcome = wr_outcome_name(out);
    snprintf(it->reason, sizeof(it->reason), "%s", res.reason);
    snprintf(it->error, sizeof(it->error), "%s", res.error);
    if (out != WR_OUT_OK && atomic_load(&w->flags->abort)) {
        /* interrupted by shutdown, not failed: give it back untouched */
        it->act = ACT_NONE;
        return WR_BROKER_OK;
    }
    switch (out) {
    case WR_OUT_OK:
        it->act = ACT_OK;
        return publish_outgoing(w, it, &res);
    case WR_OUT_INVALID:
        it->act = ACT_DLQ;
        return publish_dlq(w, it, "invalid");
    case WR_OUT_REJECT:
        it->act = ACT_DLQ;
        return publish_dlq(w, it, "rejected");
    case WR_OUT_TIMEOUT:
        it->act = ACT_DLQ;
        return publish_dlq(w, it, "timeout");
    case WR_OUT_RETRY:
    case WR_OUT_ERROR:
        /* Retries through delay queues are not built yet: a failure is dead-lettered
         * with its story, never dropped and never acked unsaved. */
        it->act = ACT_DLQ;
        return publish_dlq(w, it, "error");
    }
    return WR_BROKER_OK;
}

/* ---- one batch --------------------------------------------------------------------- */

static int item_confirmed(const wr_worker *w, const item *it)
{
    for (size_t i = it->pub_first; i < it->pub_end; i++) {
        if (wr_broker_batch_state(w->b, i) != WR_PUB_ACKED) {
            return 0;
        }
    }
    return 1;
}

static void log_item(const wr_worker *w, const item *it, const char *outcome, wr_log_level level)
{
    if (!wr_log_enabled(level)) {
        return;
    }
    wr_logline l;
    const char *msg = strcmp(outcome, "ok") == 0              ? "message handled"
                      : strcmp(outcome, "dead-lettered") == 0 ? "message dead-lettered"
                                                              : "message returned to the queue";
    wr_log_begin(&l, level, msg);
    wr_log_str(&l, "subscription", w->sub->name);
    wr_log_int(&l, "worker", w->index);
    wr_log_strn(&l, "message_id", it->env.id.bytes, it->env.id.len);
    wr_log_strn(&l, "type", it->env.type.bytes, it->env.type.len);
    wr_log_str(&l, "outcome", outcome);
    if (it->act != ACT_OK && it->reason[0]) {
        wr_log_str(&l, "reason", it->reason);
    }
    if (it->act != ACT_OK && it->error[0]) {
        wr_log_str(&l, "error", it->error);
    }
    wr_log_int(&l, "attempt", it->attempt);
    wr_log_num(&l, "duration_ms", it->duration_ms);
    if (it->trace_id[0]) {
        wr_log_str(&l, "trace_id", it->trace_id);
    }
    wr_log_str(&l, "handler_version", w->lua ? wr_lua_version(w->lua) : "");
    if (it->act == ACT_OK && it->pub_end > it->pub_first) {
        wr_log_int(&l, "published", (long long)(it->pub_end - it->pub_first));
    }
    wr_log_end(&l);
}

/*
 * Process N deliveries: run them, wait for the confirms of everything they
 * published, then ack or return each. Returns WR_BROKER_OK or DOWN.
 */
static int run_batch(wr_worker *w, int n)
{
    empty_amqp_pool(&w->pool);
    wr_broker_batch_begin(w->b);
    int rc = WR_BROKER_OK;
    int ran = 0;
    for (int i = 0; i < n; i++) {
        item *it = &w->items[i];
        memset(it, 0, sizeof(*it));
        it->d = w->taken[i];
    }
    for (; ran < n && rc == WR_BROKER_OK; ran++) {
        if (atomic_load(&w->flags->stop)) {
            break; /* draining: what has not started goes back */
        }
        rc = run_one(w, &w->items[ran]);
    }
    if (rc == WR_BROKER_OK) {
        rc = wr_broker_batch_wait(w->b, CONFIRM_TIMEOUT_MS);
        if (rc == WR_BROKER_TIMEOUT) {
            wr_logf(WR_LOG_ERROR, "%s: publish confirms did not arrive within %d ms; reconnecting",
                    w->name, CONFIRM_TIMEOUT_MS);
            rc = WR_BROKER_DOWN;
        }
    }
    if (rc != WR_BROKER_OK) {
        /* Nothing is acked: the broker redelivers all of the batch on the new connection. */
        wr_logline l;
        wr_log_begin(&l, WR_LOG_ERROR, "broker connection lost mid-batch; nothing acked");
        wr_log_str(&l, "subscription", w->sub->name);
        wr_log_int(&l, "worker", w->index);
        wr_log_str(&l, "error", wr_broker_error(w->b));
        wr_log_int(&l, "batch", n);
        wr_log_end(&l);
        return WR_BROKER_DOWN;
    }

    int all_ok = 1;
    int lost = 0;
    for (int i = 0; i < n; i++) {
        item *it = &w->items[i];
        if (i >= ran || it->act == ACT_NONE || !item_confirmed(w, it)) {
            all_ok = 0;
        }
    }
    if (all_ok) {
        rc = wr_broker_ack(w->b, w->items[n - 1].d->delivery_tag, 1);
    }
    for (int i = 0; i < n && rc == WR_BROKER_OK; i++) {
        item *it = &w->items[i];
        int done = i < ran && it->act != ACT_NONE && item_confirmed(w, it);
        if (!all_ok) {
            rc = done ? wr_broker_ack(w->b, it->d->delivery_tag, 0)
                      : wr_broker_nack(w->b, it->d->delivery_tag, 0, 1);
        }
        if (i >= ran || it->act == ACT_NONE) {
            continue; /* not started: returned quietly */
        }
        if (done) {
            log_item(w, it, it->act == ACT_OK ? "ok" : "dead-lettered",
                     it->act == ACT_OK ? WR_LOG_INFO : WR_LOG_WARN);
        } else {
            lost++;
            snprintf(it->error, sizeof(it->error), "%s",
                     it->act == ACT_OK ? "an outgoing event was not confirmed by the broker"
                                       : "the DLQ copy was not confirmed by the broker");
            it->act = ACT_NONE;
            log_item(w, it, "returned", WR_LOG_ERROR);
        }
    }
    if (rc != WR_BROKER_OK) {
        return WR_BROKER_DOWN;
    }
    if (lost > 0) {
        /* A refused or unroutable copy: make sure our queues exist, and don't spin. */
        if (wr_broker_declare(w->b, &w->topo) != WR_BROKER_OK) {
            return WR_BROKER_DOWN;
        }
        nap(w, 1000);
    }
    return WR_BROKER_OK;
}

/* ---- the thread --------------------------------------------------------------------- */

/* Stop consuming and give back everything delivered but not handled. */
static void drain(wr_worker *w)
{
    if (w->b == NULL) {
        return;
    }
    wr_broker_cancel(w->b);
    int n;
    while (wr_broker_take(w->b, w->taken, w->sub->batch_size, 0, &n) == WR_BROKER_OK && n > 0) {
        for (int i = 0; i < n; i++) {
            wr_broker_release(w->taken[i]);
        }
    }
    /* delivery tag 0 with multiple: every unacked delivery on the channel */
    wr_broker_nack(w->b, 0, 1, 1);
}

static void *worker_main(void *arg)
{
    wr_worker *w = arg;
    while (!atomic_load(&w->flags->stop)) {
        if (connect_broker(w) != 0) {
            break;
        }
        while (!atomic_load(&w->flags->stop)) {
            int n = 0;
            int rc = wr_broker_take(w->b, w->taken, w->sub->batch_size, TAKE_TIMEOUT_MS, &n);
            if (rc == WR_BROKER_OK && n > 0) {
                rc = run_batch(w, n);
                for (int i = 0; i < n; i++) {
                    wr_broker_release(w->taken[i]);
                }
            }
            if (rc == WR_BROKER_OK && !wr_broker_consuming(w->b)) {
                wr_logf(WR_LOG_WARN, "%s: consumer cancelled by the broker; reconnecting",
                        w->name);
                rc = WR_BROKER_DOWN;
            }
            if (rc != WR_BROKER_OK) {
                wr_logline l;
                wr_log_begin(&l, WR_LOG_ERROR, "broker connection lost");
                wr_log_str(&l, "subscription", w->sub->name);
                wr_log_int(&l, "worker", w->index);
                wr_log_str(&l, "error", wr_broker_error(w->b));
                wr_log_end(&l);
                wr_broker_destroy(w->b);
                w->b = NULL;
                nap(w, BACKOFF_MIN_MS);
                break;
            }
        }
    }
    drain(w);
    wr_broker_destroy(w->b);
    w->b = NULL;
    wr_logf(WR_LOG_INFO, "%s: stopped", w->name);
    atomic_store(&w->done, 1);
    return NULL;
}

wr_worker *wr_worker_start(const wr_config *cfg, const wr_subscription *sub, int index,
                           wr_run_flags *flags, char *err, size_t errcap)
{
    wr_worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    w->cfg = cfg;
    w->sub = sub;
    w->index = index;
    w->flags = flags;
    w->max_body = sub->max_body_size > 0 ? (size_t)sub->max_body_size : 512 * 1024;
    snprintf(w->name, sizeof(w->name), "warren %s#%d", sub->name, index);
    pthread_mutex_init(&w->lua_lock, NULL);
    init_amqp_pool(&w->pool, 16384);
    seed_rand(w);

    w->lua_opts = (wr_lua_opts){
        .handler_path = sub->handler,
        .subscription = sub->name,
        .queue = sub->queue,
        .timeout_ms = sub->handler_timeout_ms,
        .worker = index,
        .max_attempts = 1,
    };
    w->items = calloc((size_t)sub->batch_size, sizeof(*w->items));
    w->taken = calloc((size_t)sub->batch_size, sizeof(*w->taken));
    if (w->items == NULL || w->taken == NULL || wr_topology_plan(sub, &w->topo) != 0) {
        snprintf(err, errcap, "out of memory");
        goto fail;
    }
    w->lua = wr_lua_create(&w->lua_opts, err, errcap);
    if (w->lua == NULL) {
        goto fail;
    }
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        snprintf(err, errcap, "cannot start a thread: %m");
        goto fail;
    }
    w->thread_started = 1;
    return w;

fail:
    wr_worker_free(w);
    return NULL;
}

int wr_worker_done(const wr_worker *w)
{
    return atomic_load(&w->done);
}

void wr_worker_interrupt(wr_worker *w)
{
    pthread_mutex_lock(&w->lua_lock);
    if (w->lua != NULL) {
        wr_lua_interrupt(w->lua);
    }
    pthread_mutex_unlock(&w->lua_lock);
}

void wr_worker_free(wr_worker *w)
{
    if (w == NULL) {
        return;
    }
    if (w->thread_started) {
        pthread_join(w->thread, NULL);
    }
    wr_lua_destroy(w->lua);
    wr_topology_clear(&w->topo);
    empty_amqp_pool(&w->pool);
    free(w->items);
    free(w->taken);
    pthread_mutex_destroy(&w->lua_lock);
    free(w);
}
