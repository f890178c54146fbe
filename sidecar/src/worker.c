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

#include "breakers.h"
#include "broker.h"
#include "dlq.h"
#include "envelope.h"
#include "idem.h"
#include "idkey.h"
#include "journal.h"
#include "log.h"
#include "lua_rt.h"
#include "metrics.h"
#include "reload.h"
#include "retry.h"
#include "topology.h"

#define TAKE_TIMEOUT_MS 200       /* idle wait per loop turn: bounds shutdown latency */
#define LOG_BODY_MAX 2048         /* log.bodies: bytes of a body shown in its outcome line */
#define CONFIRM_TIMEOUT_MS 30000  /* a batch's confirms; past this the connection is suspect */
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 30000
#define PAUSE 1                   /* run_batch: Redis failed; close the broker connection
                                     (returning every delivery) until Redis answers */

/* What the worker decided for one delivery of a batch. */
typedef enum {
    ACT_NONE = 0,  /* not started (shutdown, lost claim, Redis down): back to the queue */
    ACT_OK,        /* handled: its publishes must be confirmed, its record committed */
    ACT_DLQ,       /* failed for good or invalid: its DLQ copy must be confirmed */
    ACT_RETRY,     /* failed, attempts left: its copy in a delay queue must be confirmed */
    ACT_WAIT,      /* its key is busy elsewhere: its copy in the wait queue must be confirmed */
    ACT_DUPLICATE, /* already done: ack, nothing else */
} action;

typedef struct {
    amqp_envelope_t *d;
    wr_envelope env;
    int valid;                 /* the envelope decoded */
    action act;
    size_t pub_first, pub_end; /* its publishes, as indexes in the confirm batch */
    const char *outcome;       /* for the log: handler outcome name */
    char reason[64];
    char error[1024];
    double started_ms;
    double duration_ms;
    int attempt;
    char trace_id[33];
    char tracestate[513];      /* the message's tracestate, NUL-terminated for ctx.http */
    /* idempotency */
    char key[WR_IDKEY_MAX + 1];    /* the message's key ("" when idempotency is off) */
    char rkey[WR_IDKEY_MAX + 300]; /* the Redis key */
    int claimed;               /* we hold its record (ACQUIRED or TAKEOVER) */
    int takeover;
    int starts;
    wr_finish_op op;           /* what to do with the record once the copies are confirmed */
    const char *done_outcome;  /* for WR_FINISH_DONE */
    int64_t delay_ms;          /* ACT_RETRY / ACT_WAIT: how long it waits */
    int tier;                  /* ACT_RETRY: its delay tier (for the journal) */
    wr_outcome out;            /* the handler's outcome, when it ran */
} item;

struct wr_worker {
    pthread_t thread;
    int thread_started;
    atomic_int done;
    const wr_config *cfg;
    const wr_subscription *sub;
    wr_run_flags *flags;
    int index;
    char name[160];        /* "warren orders#0": logs and the broker's connection name */
    char token[64];        /* our idempotency claims' owner token */

    pthread_mutex_t lua_lock; /* guards swapping `lua` against wr_worker_interrupt */
    wr_lua *lua;
    wr_lua_opts lua_opts;

    wr_live *live;         /* the subscription's live handler and policy (reload.h) */
    unsigned live_gen;     /* the generation this worker runs */
    wr_retry_policy retry; /* the worker's copy of the live retry policy */
    int64_t retry_delays[WR_LIVE_MAX_DELAYS];

    wr_shared_brk *brk;    /* the subscription's circuit breaker (shared by its workers) */
    int paused;            /* consumption stopped because the breaker is open */
    double next_service_ms; /* when the connection should next be serviced mid-batch */

    wr_broker *b;
    wr_idem *idem;         /* NULL when idempotency is off, or while Redis is away */
    wr_topology topo;
    wr_retry_tiers tiers;
    amqp_pool_t pool;      /* per batch: publish properties and routing strings */
    item *items;
    amqp_envelope_t **taken;
    wr_claim *claims;
    wr_finish *finishes;
    wr_storebuf **stores;  /* ctx.store writes of items[i], committed with its record */
    struct store_link {
        struct wr_worker *w;
        int index;         /* reads of items[index] see the writes of the earlier items */
        wr_sb_result held; /* what the last read through this link returned */
    } *links;
    wr_lua_store store;    /* what ctx.store works with (lua_rt.h); buf set per message */
    struct orphan {
        char key[WR_IDKEY_MAX + 300];
        wr_finish_op op;
    } *orphans;            /* records we still hold for messages we are done with, written
                              while Redis was away: given back when it answers again */
    int orphan_count;
    int *map;              /* claims[k] / finishes[k] belong to items[map[k]] */
    uint64_t rng;
    size_t max_body;
    wr_wstats *st;         /* this worker's figures (metrics.h); only we write them */
    int connections;       /* broker connections made so far */
    int pause_backoff_ms;  /* wait before the next pause's reconnect (pauses in a row) */
    unsigned long journal_failures; /* batches whose journal entries could not be written */
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

/* ---- connections ------------------------------------------------------------- */

static void log_unavailable(wr_worker *w, const char *what, const char *where, const char *err,
                            int wait)
{
    wr_logline l;
    wr_log_begin(&l, WR_LOG_ERROR, what);
    wr_log_str(&l, "subscription", w->sub->name);
    wr_log_int(&l, "worker", w->index);
    wr_log_str(&l, "address", where);
    wr_log_str(&l, "error", err);
    wr_log_int(&l, "retry_in_ms", wait);
    wr_log_end(&l);
}

static int jittered(wr_worker *w, int backoff)
{
    return backoff / 2 + (int)(next_rand(w) % (uint64_t)(backoff / 2 + 1));
}

static int unclaim_orphans(wr_worker *w);

/*
 * Make sure Redis answers (when idempotency is on), retrying with capped,
 * jittered backoff until it does or the worker is told to stop. Nothing is
 * consumed meanwhile: without the record, no message can be handled safely.
 * Returns 0 ready, -1 stopping.
 */
static int ensure_redis(wr_worker *w)
{
    if (!w->sub->idem.enabled) {
        return 0;
    }
    int backoff = BACKOFF_MIN_MS;
    int down = 0;
    while (!atomic_load(&w->flags->stop)) {
        char err[512];
        if (w->idem != NULL && wr_idem_ping(w->idem) == 0 && unclaim_orphans(w) == 0) {
            if (down) {
                wr_logf(WR_LOG_INFO, "%s: Redis is back", w->name);
            }
            return 0;
        }
        if (w->idem != NULL) {
            snprintf(err, sizeof(err), "%s", wr_idem_error(w->idem));
            wr_idem_destroy(w->idem);
        }
        w->idem = wr_idem_create(&w->cfg->redis, w->cfg->redis_timeout_ms, err, sizeof(err));
        if (w->idem != NULL && unclaim_orphans(w) == 0) {
            if (down) {
                wr_logf(WR_LOG_INFO, "%s: Redis is back", w->name);
            }
            return 0;
        }
        down = 1;
        int wait = jittered(w, backoff);
        log_unavailable(w, "Redis not available", w->cfg->redis.redacted, err, wait);
        nap(w, wait);
        /* holding records of messages we gave back: look often, so they are given
         * back before another worker's takeover counts them as crashed runs */
        int cap = w->orphan_count > 0 ? 500 : BACKOFF_MAX_MS;
        backoff = backoff * 2 > cap ? cap : backoff * 2;
    }
    return -1;
}

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
        if (ensure_redis(w) != 0) {
            return -1;
        }
        /* Another worker of ours may still hold records of messages it gave back
         * during a Redis outage: let it give them back first (a few seconds at
         * most), or taking those messages over would count them as crashed runs. */
        for (int waited = 0; atomic_load(&w->flags->orphans) > 0 && waited < 3000;
             waited += 100) {
            nap(w, 100);
        }
        w->b = wr_broker_create(&cfg->amqp, (int)(cfg->amqp_heartbeat_ms / 1000),
                                cfg->amqp_connect_timeout_ms, w->name, err, sizeof(err));
        if (w->b != NULL) {
            if (wr_broker_declare(w->b, &w->topo) == WR_BROKER_OK &&
                wr_broker_consume(w->b, w->sub->queue, w->sub->prefetch) == WR_BROKER_OK) {
                w->paused = 0;
                wr_broker_mirror_blocked(w->b, &w->st->blocked);
                if (w->connections++ > 0) {
                    wr_stat_add(&w->st->reconnects, 1);
                }
                atomic_store(&w->st->connected, 1);
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
        int wait = jittered(w, backoff);
        log_unavailable(w, "broker not available", cfg->amqp.redacted, err, wait);
        nap(w, wait);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return -1;
}

/* ---- publishing copies ------------------------------------------------------------ */

static void note_pub(item *it, size_t idx)
{
    if (it->pub_end == it->pub_first) {
        it->pub_first = idx;
    }
    it->pub_end = idx + 1;
}

/* Publish the handler's buffered events for IT. Returns a WR_BROKER_* code. */
static int publish_outgoing(wr_worker *w, item *it, const wr_lua_result *res)
{
    /* deterministic ids: a re-run after a crash publishes the same ids */
    const char *base = it->key[0] ? it->key : NULL;
    size_t base_len = base ? strlen(base) : it->env.id.len;
    if (base == NULL) {
        base = it->env.id.bytes;
    }
    for (int i = 0; i < res->pub_count; i++) {
        const wr_lua_pub *p = &res->pubs[i];
        amqp_basic_properties_t props;
        memset(&props, 0, sizeof(props));
        props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                       AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_HEADERS_FLAG;
        props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
        props.timestamp = (uint64_t)(wr_now_ms() / 1000);
        /* <key>:<subscription>:<n>: two subscriptions that consume the same event
         * publish different events, which must not share an id */
        char id[WR_IDKEY_MAX + 320];
        int n = snprintf(id, sizeof(id), "%.*s:%s:%d", (int)base_len, base, w->sub->name, i + 1);
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
            amqp_pool_alloc(&w->pool, sizeof(*h) * (size_t)(p->header_count + 3));
        if (h == NULL) {
            return WR_BROKER_DOWN;
        }
        int nh = 0;
        for (int k = 0; k < p->header_count; k++) {
            h[nh].key = pool_dup(&w->pool, p->header_keys[k], strlen(p->header_keys[k]));
            h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
            h[nh].value.value.bytes =
                pool_dup(&w->pool, p->header_vals[k], strlen(p->header_vals[k]));
            nh++;
        }
        h[nh].key = amqp_cstring_bytes("x-warren-causation-id");
        h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
        h[nh].value.value.bytes = pool_dup(&w->pool, base, base_len);
        nh++;
        char tp[56], span[17];
        hex_rand(w, span, 16);
        snprintf(tp, sizeof(tp), "00-%s-%s-01", it->trace_id, span);
        h[nh].key = amqp_cstring_bytes("traceparent");
        h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
        h[nh].value.value.bytes = pool_dup(&w->pool, tp, strlen(tp));
        nh++;
        if (it->env.tracestate.len > 0) { /* vendors' trace data travels with the trace */
            h[nh].key = amqp_cstring_bytes("tracestate");
            h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
            h[nh].value.value.bytes = it->env.tracestate;
            nh++;
        }
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
        note_pub(it, idx);
    }
    return WR_BROKER_OK;
}

/*
 * Publish a copy of IT's original body: with its story (ACT_DLQ to the DLQ,
 * ACT_RETRY to its delay tier) or untouched (ACT_WAIT to the wait queue).
 * Always persistent and mandatory: a copy no queue takes is a failure.
 */
static int publish_copy(wr_worker *w, item *it, const char *error_class, int tier)
{
    amqp_basic_properties_t props;
    const char *queue;
    int rc;
    if (it->act == ACT_WAIT) {
        queue = w->topo.queues[w->topo.wait_queue].name;
        rc = wr_dlq_build_wait_props(&w->pool, &it->d->message.properties, it->d->exchange,
                                     it->d->routing_key, &props);
    } else {
        char span[17];
        hex_rand(w, span, 16);
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
            .span_id = span,
        };
        rc = wr_dlq_build_props(&w->pool, &it->d->message.properties, it->d->exchange,
                                it->d->routing_key, &f, &props);
        queue = it->act == ACT_RETRY ? w->topo.queues[w->topo.tier_queue[tier]].name : w->sub->dlq;
        if (rc == 0 && it->act == ACT_RETRY &&
            it->delay_ms < w->topo.queues[w->topo.tier_queue[tier]].message_ttl_ms) {
            /* jitter: leave the tier a little early, never late */
            char exp[24];
            int n = snprintf(exp, sizeof(exp), "%lld", (long long)it->delay_ms);
            props._flags |= AMQP_BASIC_EXPIRATION_FLAG;
            props.expiration = pool_dup(&w->pool, exp, (size_t)n);
        }
    }
    if (rc != 0) {
        return WR_BROKER_DOWN;
    }
    size_t idx;
    rc = wr_broker_publish(w->b, amqp_empty_bytes, amqp_cstring_bytes(queue), 1, &props,
                           it->d->message.body, &idx);
    if (rc == WR_BROKER_OK) {
        note_pub(it, idx);
    }
    return rc;
}

/*
 * Called from inside a running handler (lua_rt's hook): read what the broker
 * sent and let rabbitmq-c send a heartbeat when one is due, so a handler that
 * runs longer than the heartbeat interval does not get the connection closed
 * under it. A delivery read here waits in the inbox; a confirm is booked; a
 * dead connection is noticed by the batch's next broker call.
 */
static void service_broker(void *ud)
{
    wr_worker *w = ud;
    w->next_service_ms = wr_mono_ms() + (double)w->lua_opts.service_every_ms;
    if (w->b != NULL) {
        while (wr_broker_poll(w->b, 0) == WR_BROKER_OK) {
        }
    }
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

/* ---- one message ------------------------------------------------------------------ */

/*
 * ctx.store reads of items[link->index] (a wr_sb_fetch): what Redis holds with
 * the writes of the batch's earlier handled items on top, in order, as the
 * commit script will apply them before this item's. Without this, a message
 * that reads what an earlier message of its batch wrote (an order's cancel
 * behind its create) would read around it and always conflict at commit. If an
 * earlier item's writes end up not applied, the guards of what this one read
 * no longer hold, and it conflicts and runs again: never wrong, at worst late.
 */
static int chained_fetch(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg,
                         wr_sb_base *out, char *err, size_t errcap)
{
    struct store_link *link = ud;
    wr_worker *w = link->w;
    int j = link->index - 1;
    while (j >= 0) {
        int nw = 0;
        if (w->items[j].act == ACT_OK) {
            wr_storebuf_writes(w->stores[j], &nw);
        }
        if (nw > 0) {
            break;
        }
        j--;
    }
    if (j < 0) {
        return wr_idem_store_fetch(w->idem, cmd, key, arg, out, err, errcap);
    }
    struct store_link *prev = &w->links[j];
    wr_sb_result_free(&prev->held);
    if (wr_storebuf_peek(w->stores[j], cmd, key, arg, chained_fetch, prev, &prev->held, err,
                         errcap) != 0) {
        return -1;
    }
    out->present = prev->held.present;
    out->str = prev->held.str;
    out->num = prev->held.num;
    out->items = prev->held.items;
    out->count = prev->held.count;
    return 0;
}

/*
 * Decode IT and derive its key. An invalid message is marked ACT_DLQ with
 * its reason (its copy is published by the caller).
 */
static void prepare(wr_worker *w, item *it)
{
    const wr_idem_policy *pol = &w->sub->idem;
    const char *reason = NULL;
    char span[17];
    it->started_ms = wr_mono_ms();
    int require_id = !(pol->enabled && (pol->source != WR_KEY_MESSAGE_ID || pol->missing_key_hash));
    int rc = wr_envelope_decode(it->d, w->max_body, require_id, &it->env, &reason, it->error,
                                sizeof(it->error));
    it->attempt = it->env.attempt;
    if (wr_trace_parse(it->env.traceparent, it->trace_id, span) != 0) {
        hex_rand(w, it->trace_id, 32);
    }
    if (rc == 0 && pol->enabled &&
        wr_idkey_derive(pol, &it->env, it->key, sizeof(it->key), it->error,
                        sizeof(it->error)) != 0) {
        reason = WR_REASON_MISSING_KEY;
        rc = -1;
    }
    if (rc != 0) {
        snprintf(it->reason, sizeof(it->reason), "%s", reason);
        it->outcome = "invalid";
        it->act = ACT_DLQ;
        it->key[0] = '\0';
        return;
    }
    it->valid = 1;
    if (pol->enabled) {
        snprintf(it->rkey, sizeof(it->rkey), "%s%s:%s", pol->prefix, w->sub->name, it->key);
    }
}

/*
 * Run IT's handler and decide what happens to it. Publishes what the outcome
 * needs. Returns a WR_BROKER_* code (DOWN stops the batch: nothing more is
 * acked).
 */
static int run_one(wr_worker *w, item *it)
{
    snprintf(it->tracestate, sizeof(it->tracestate), "%.*s", (int)it->env.tracestate.len,
             (const char *)it->env.tracestate.bytes);
    wr_lua_call call = {.idempotency_key = it->key[0] ? it->key : NULL,
                        .trace_id = it->trace_id,
                        .tracestate = it->tracestate[0] ? it->tracestate : NULL,
                        .attempt = it->attempt};
    if (w->sub->idem.enabled && w->idem != NULL) {
        /* ctx.store: this item's own buffer, reads on this worker's Redis connection */
        int idx = (int)(it - w->items);
        w->store.buf = w->stores[idx];
        w->links[idx] = (struct store_link){.w = w, .index = idx};
        w->store.fetch_ud = &w->links[idx];
        call.store = &w->store;
    }
    char idbuf[WR_IDKEY_MAX + 1];
    if (call.idempotency_key == NULL) {
        snprintf(idbuf, sizeof(idbuf), "%.*s", (int)it->env.id.len, (const char *)it->env.id.bytes);
        call.idempotency_key = idbuf;
    }
    it->started_ms = wr_mono_ms();
    wr_lua_result res;
    wr_outcome out = wr_lua_handle(w->lua, &it->env, &call, &res);
    it->duration_ms = wr_mono_ms() - it->started_ms;
    it->out = out;
    if (out != WR_OUT_INVALID) { /* an undecodable body never reaches the handler */
        wr_hist_observe(&w->st->handler, it->duration_ms / 1000);
    }
    atomic_store(&w->st->beat_ms, (long long)wr_mono_ms());
    if (res.rebuild) {
        rebuild_lua(w);
    }
    it->outcome = wr_outcome_name(out);
    snprintf(it->reason, sizeof(it->reason), "%s", res.reason);
    snprintf(it->error, sizeof(it->error), "%s", res.error);
    if (out != WR_OUT_OK && atomic_load(&w->flags->abort)) {
        /* interrupted by shutdown, not failed: give it back untouched */
        it->act = ACT_NONE;
        it->op = WR_FINISH_UNCLAIM;
        return WR_BROKER_OK;
    }
    switch (out) {
    case WR_OUT_OK:
        it->act = ACT_OK;
        it->op = WR_FINISH_DONE;
        it->done_outcome = "ok";
        return publish_outgoing(w, it, &res);
    case WR_OUT_INVALID:
    case WR_OUT_REJECT:
        /* permanent: no retry can change the outcome */
        it->act = ACT_DLQ;
        it->op = WR_FINISH_DONE;
        it->done_outcome = out == WR_OUT_REJECT ? "rejected" : "dead-lettered";
        return publish_copy(w, it, out == WR_OUT_REJECT ? "rejected" : "invalid", 0);
    case WR_OUT_TIMEOUT:
    case WR_OUT_RETRY:
    case WR_OUT_ERROR: {
        const char *cls = out == WR_OUT_TIMEOUT ? "timeout" : "error";
        int tier;
        double r = (double)(next_rand(w) >> 11) / 9007199254740992.0; /* [0, 1) */
        if (wr_retry_plan(&w->retry, &w->tiers, it->attempt, res.retry_delay_ms, r, &tier,
                          &it->delay_ms) == 0) {
            it->act = ACT_RETRY;
            it->op = WR_FINISH_RELEASE;
            it->tier = tier;
            return publish_copy(w, it, cls, tier);
        }
        it->act = ACT_DLQ;
        it->op = WR_FINISH_DONE;
        it->done_outcome = "dead-lettered";
        return publish_copy(w, it, cls, 0);
    }
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

static const char *act_outcome(action a)
{
    switch (a) {
    case ACT_OK:
        return "ok";
    case ACT_DLQ:
        return "dead-lettered";
    case ACT_RETRY:
        return "retried";
    case ACT_WAIT:
        return "deferred";
    case ACT_DUPLICATE:
        return "duplicate";
    case ACT_NONE:
        return "returned";
    }
    return "returned";
}

static void log_item(const wr_worker *w, const item *it, const char *outcome, wr_log_level level)
{
    if (!wr_log_enabled(level)) {
        return;
    }
    static const struct {
        const char *outcome, *msg;
    } msgs[] = {{"ok", "message handled"},
                {"dead-lettered", "message dead-lettered"},
                {"retried", "message scheduled for retry"},
                {"deferred", "message deferred: another worker holds its key"},
                {"duplicate", "duplicate message skipped"},
                {"returned", "message returned to the queue"}};
    const char *msg = "message returned to the queue";
    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
        if (strcmp(msgs[i].outcome, outcome) == 0) {
            msg = msgs[i].msg;
        }
    }
    wr_logline l;
    wr_log_begin(&l, level, msg);
    wr_log_str(&l, "subscription", w->sub->name);
    wr_log_int(&l, "worker", w->index);
    wr_log_strn(&l, "message_id", it->env.id.bytes, it->env.id.len);
    if (it->key[0] && (it->env.id.len != strlen(it->key) ||
                       memcmp(it->env.id.bytes, it->key, it->env.id.len) != 0)) {
        wr_log_str(&l, "idempotency_key", it->key);
    }
    wr_log_strn(&l, "type", it->env.type.bytes, it->env.type.len);
    wr_log_str(&l, "outcome", outcome);
    if ((it->act == ACT_DLQ || it->act == ACT_RETRY || it->act == ACT_NONE) && it->reason[0]) {
        wr_log_str(&l, "reason", it->reason);
    }
    if ((it->act == ACT_DLQ || it->act == ACT_RETRY || it->act == ACT_NONE) && it->error[0]) {
        wr_log_str(&l, "error", it->error);
    }
    if (it->act == ACT_RETRY || it->act == ACT_WAIT) {
        wr_log_int(&l, "delay_ms", it->delay_ms);
    }
    wr_log_int(&l, "attempt", it->attempt);
    if (it->takeover) {
        wr_log_bool(&l, "lease_takeover", 1);
    }
    wr_log_num(&l, "duration_ms", it->duration_ms);
    if (it->trace_id[0]) {
        wr_log_str(&l, "trace_id", it->trace_id);
    }
    wr_log_str(&l, "handler_version", w->lua ? wr_lua_version(w->lua) : "");
    if (it->act == ACT_OK && it->pub_end > it->pub_first) {
        wr_log_int(&l, "published", (long long)(it->pub_end - it->pub_first));
    }
    if (w->cfg->log_bodies && it->d != NULL) {
        /* last: a line too long for the buffer loses only this */
        const amqp_bytes_t *body = &it->d->message.body;
        size_t n = body->len > LOG_BODY_MAX ? LOG_BODY_MAX : body->len;
        wr_log_strn(&l, "body", body->bytes, n);
        if (n < body->len) {
            wr_log_bool(&l, "body_truncated", 1);
        }
    }
    wr_log_end(&l);
}

/* Return every delivery of the batch to the queue, after Redis failed us. */
static int return_all(wr_worker *w, int n, const char *why)
{
    wr_logline l;
    wr_log_begin(&l, WR_LOG_ERROR, "Redis failed mid-batch: messages returned to the queue");
    wr_log_str(&l, "subscription", w->sub->name);
    wr_log_int(&l, "worker", w->index);
    wr_log_str(&l, "error", why);
    wr_log_int(&l, "batch", n);
    wr_log_end(&l);
    for (int i = 0; i < n; i++) {
        if (wr_broker_nack(w->b, w->items[i].d->delivery_tag, 0, 1) != WR_BROKER_OK) {
            return WR_BROKER_DOWN;
        }
    }
    return WR_BROKER_OK;
}

/*
 * Claim the keys of the batch's valid items in one round trip. A key that
 * appears twice in the batch is claimed once: the second copy waits (ACT_WAIT)
 * and finds the record done when it comes back. Returns 0, or -1 when Redis
 * failed (nothing is known; the caller returns the batch).
 */
static int claim_batch(wr_worker *w, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        item *it = &w->items[i];
        if (!it->valid || !w->sub->idem.enabled) {
            continue;
        }
        int dup = 0;
        for (int j = 0; j < i && !dup; j++) {
            dup = w->items[j].valid && strcmp(w->items[j].rkey, it->rkey) == 0;
        }
        if (dup) {
            it->act = ACT_WAIT;
            it->delay_ms = WR_TOPO_WAIT_MS;
            continue;
        }
        w->claims[k].key = it->rkey;
        w->map[k++] = i;
    }
    const wr_idem_policy *pol = &w->sub->idem;
    double t0 = wr_mono_ms();
    if (wr_idem_claim(w->idem, w->claims, k, w->token, pol->lease_ms, pol->ttl_ms) != 0) {
        wr_stat_add(&w->st->redis_errors, 1);
        return -1;
    }
    wr_hist_observe(&w->st->redis_claim, (wr_mono_ms() - t0) / 1000);
    for (int c = 0; c < k; c++) {
        item *it = &w->items[w->map[c]];
        switch (w->claims[c].status) {
        case WR_CLAIM_DONE:
            it->act = ACT_DUPLICATE;
            break;
        case WR_CLAIM_BUSY:
            it->act = ACT_WAIT;
            it->delay_ms = WR_TOPO_WAIT_MS;
            break;
        case WR_CLAIM_TAKEOVER:
            it->takeover = 1;
            /* fall through */
        case WR_CLAIM_ACQUIRED:
            it->claimed = 1;
            it->starts = w->claims[c].starts;
            /* Crash-loop guard: every claim counts a start; retries count attempts.
             * Starts beyond the attempts are runs that never reached an outcome
             * (the worker or the process died in the handler: a segfault in a C
             * module, an OOM kill). After max_attempts of those, the message goes
             * to the DLQ instead of killing the sidecar again. */
            if (it->starts - it->attempt >= w->retry.max_attempts) {
                it->act = ACT_DLQ;
                it->op = WR_FINISH_DONE;
                it->done_outcome = "dead-lettered";
                it->outcome = "crashed";
                snprintf(it->reason, sizeof(it->reason), "crashed");
                snprintf(it->error, sizeof(it->error),
                         "the handler was started %d times without an outcome: the worker "
                         "or the process died each time",
                         it->starts - it->attempt);
            }
            break;
        }
    }
    return 0;
}

/*
 * Push out the leases of the claimed items from FROM on, when the batch has
 * run long. Items whose lease was lost are given back (ACT_NONE). Returns 0,
 * or -1 when Redis failed.
 */
static int extend_leases(wr_worker *w, int from, int n)
{
    int k = 0;
    for (int i = from; i < n; i++) {
        if (w->items[i].claimed) {
            w->finishes[k] = (wr_finish){.key = w->items[i].rkey, .op = WR_FINISH_EXTEND};
            w->map[k++] = i;
        }
    }
    const wr_idem_policy *pol = &w->sub->idem;
    if (wr_idem_finish(w->idem, w->finishes, k, w->token, pol->lease_ms, pol->ttl_ms) != 0) {
        return -1;
    }
    for (int c = 0; c < k; c++) {
        if (!w->finishes[c].owned) {
            item *it = &w->items[w->map[c]];
            it->claimed = 0;
            it->act = ACT_NONE;
            snprintf(it->error, sizeof(it->error), "lease lost before the handler ran");
        }
    }
    return 0;
}

/*
 * Give back the records of a batch that will not finish here (the broker
 * connection dropped; Redis failed), so whoever gets the messages next
 * claims them at once, and the crash-loop guard does not take a lost
 * connection for a crash. With Redis away the keys are kept as orphans and
 * given back when it answers again (see ensure_redis).
 */
static void unclaim_batch(wr_worker *w, int n, int redis_down)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        item *it = &w->items[i];
        if (!it->claimed) {
            continue;
        }
        /* a message retried through a delay queue did start; one going back did not
         * reach an outcome here, which is not a crash either */
        wr_finish_op op = it->act == ACT_RETRY ? WR_FINISH_RELEASE : WR_FINISH_UNCLAIM;
        if (redis_down) {
            if (w->orphan_count < w->sub->batch_size) {
                atomic_fetch_add(&w->flags->orphans, 1);
                struct orphan *o = &w->orphans[w->orphan_count++];
                snprintf(o->key, sizeof(o->key), "%s", it->rkey);
                o->op = op;
            }
            continue;
        }
        w->finishes[k] = (wr_finish){.key = it->rkey, .op = op};
        w->map[k++] = i;
    }
    if (k > 0) {
        const wr_idem_policy *pol = &w->sub->idem;
        wr_idem_finish(w->idem, w->finishes, k, w->token, pol->lease_ms, pol->ttl_ms);
    }
}

/* Give back the orphans (Redis answers again). Returns 0, or -1 on failure. */
static int unclaim_orphans(wr_worker *w)
{
    if (w->orphan_count == 0 || w->idem == NULL) {
        return 0;
    }
    for (int i = 0; i < w->orphan_count; i++) {
        w->finishes[i] = (wr_finish){.key = w->orphans[i].key, .op = w->orphans[i].op};
    }
    const wr_idem_policy *pol = &w->sub->idem;
    if (wr_idem_finish(w->idem, w->finishes, w->orphan_count, w->token, pol->lease_ms,
                       pol->ttl_ms) != 0) {
        return -1;
    }
    atomic_fetch_sub(&w->flags->orphans, w->orphan_count);
    w->orphan_count = 0;
    return 0;
}

/* ---- figures (metrics.h) ---------------------------------------------------------- */

static void batch_started(wr_worker *w, int n)
{
    wr_stat_add(&w->st->received, (uint64_t)n);
    atomic_store(&w->st->in_flight, n);
    atomic_store(&w->st->beat_ms, (long long)wr_mono_ms());
    atomic_store(&w->st->busy, 1);
}

static void batch_ended(wr_worker *w, int n)
{
    (void)n;
    atomic_store(&w->st->busy, 0);
    atomic_store(&w->st->in_flight, 0);
}

/* Count how IT ended (a delivery that went back unstarted is not counted). */
static void count_item(wr_worker *w, const item *it)
{
    wr_met_outcome o = WR_MO_RETURNED;
    switch (it->act) {
    case ACT_OK:
        o = WR_MO_OK;
        break;
    case ACT_RETRY:
        o = WR_MO_RETRIED;
        if (it->attempt >= 1 && it->attempt <= WR_MET_MAX_ATTEMPT) {
            wr_stat_add(&w->st->retries[it->attempt], 1);
        }
        break;
    case ACT_DUPLICATE:
        o = WR_MO_DUPLICATE;
        break;
    case ACT_WAIT:
        o = WR_MO_DEFERRED;
        break;
    case ACT_NONE:
        o = WR_MO_RETURNED;
        break;
    case ACT_DLQ: {
        wr_met_dl_reason r = WR_DL_ERROR;
        o = WR_MO_DEAD_LETTERED;
        if (!it->valid || (it->outcome && strcmp(it->outcome, "invalid") == 0)) {
            r = WR_DL_INVALID;
            o = WR_MO_INVALID;
        } else if (it->outcome && strcmp(it->outcome, "crashed") == 0) {
            r = WR_DL_CRASHED;
        } else if (it->outcome && strcmp(it->outcome, "store-refused") == 0) {
            r = WR_DL_STORE_REFUSED;
        } else if (it->out == WR_OUT_REJECT) {
            r = WR_DL_REJECTED;
            o = WR_MO_REJECTED;
        } else if (it->out == WR_OUT_TIMEOUT) {
            r = WR_DL_TIMEOUT;
        }
        wr_stat_add(&w->st->dead_letters[r], 1);
        break;
    }
    }
    wr_stat_add(&w->st->outcomes[o], 1);
}

/*
 * The batch's commit script raised (WR_IDEM_SCRIPT_FAILED): Redis answers, but
 * one record's writes failed in a way the script's checks did not foresee,
 * and a script is not rolled back. Commit the K records one at a time, so the
 * others are not held back with it: a record the failed run already wrote
 * reports LOST (its redelivery is a duplicate); the one that raises again is
 * marked failed and released (its start stays counted). Returns 0, or -1 when
 * Redis failed.
 */
static int finish_one_by_one(wr_worker *w, int k)
{
    const wr_idem_policy *pol = &w->sub->idem;
    wr_logline l;
    wr_log_begin(&l, WR_LOG_ERROR, "commit script failed; committing the batch's records "
                                   "one by one");
    wr_log_str(&l, "subscription", w->sub->name);
    wr_log_int(&l, "worker", w->index);
    wr_log_str(&l, "error", wr_idem_error(w->idem));
    wr_log_end(&l);
    for (int c = 0; c < k; c++) {
        wr_finish *f = &w->finishes[c];
        int rc = wr_idem_finish(w->idem, f, 1, w->token, pol->lease_ms, pol->ttl_ms);
        if (rc == WR_IDEM_SCRIPT_FAILED) {
            snprintf(f->why, sizeof(f->why), "%s", wr_idem_error(w->idem));
            wr_finish rel = {.key = f->key, .op = WR_FINISH_RELEASE};
            if (wr_idem_finish(w->idem, &rel, 1, w->token, pol->lease_ms, pol->ttl_ms) == -1) {
                return -1;
            }
            f->owned = 1;
            f->failed = 1;
        } else if (rc != 0) {
            return -1;
        }
    }
    return 0;
}

static int process_batch(wr_worker *w, int n);

/*
 * The batch's messages whose ctx.store writes the commit refused (marked
 * ACT_DLQ with reason store-refused; their records are still ours, processing):
 * publish their DLQ copies, wait for the confirms, then mark their records done
 * as dead-lettered. A copy that is not confirmed, or a record that cannot be
 * written, sends its message back to the queue (ACT_NONE) with the record
 * given back. Returns a WR_BROKER_* code (DOWN: nothing of the batch is acked;
 * the records left processing run out with their lease).
 */
static int dead_letter_refused(wr_worker *w, int n)
{
    const wr_idem_policy *pol = &w->sub->idem;
    for (int i = 0; i < n; i++) {
        item *it = &w->items[i];
        if (it->act == ACT_DLQ && strcmp(it->reason, "store-refused") == 0) {
            it->pub_first = it->pub_end = 0; /* just the copy, not its outgoing events */
            int rc = publish_copy(w, it, "store-refused", 0);
            if (rc != WR_BROKER_OK) {
                return rc;
            }
        }
    }
    int rc = wr_broker_batch_wait(w->b, CONFIRM_TIMEOUT_MS);
    if (rc != WR_BROKER_OK) {
        return WR_BROKER_DOWN;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        item *it = &w->items[i];
        if (it->act != ACT_DLQ || strcmp(it->reason, "store-refused") != 0) {
            continue;
        }
        int ok = item_confirmed(w, it);
        w->finishes[k] = (wr_finish){.key = it->rkey,
                                     .op = ok ? WR_FINISH_DONE : WR_FINISH_UNCLAIM,
                                     .outcome = "dead-lettered"};
        w->map[k++] = i;
    }
    int failed = wr_idem_finish(w->idem, w->finishes, k, w->token, pol->lease_ms,
                                pol->ttl_ms) != 0;
    for (int c = 0; c < k; c++) {
        item *it = &w->items[w->map[c]];
        if (failed || w->finishes[c].op != WR_FINISH_DONE || !w->finishes[c].owned) {
            it->act = ACT_NONE; /* back to the queue; its next run dead-letters it again */
        }
    }
    return WR_BROKER_OK;
}

/*
 * Fill the journal entry of IT (journal.h): what the batch decided, and for a
 * first attempt when it arrived. NOW is the wall clock, MONO the monotonic
 * clock, both read once for the batch.
 */
static void journal_item(const wr_worker *w, const item *it, int64_t now, double mono,
                         wr_journal_entry *e)
{
    *e = wr_journal_entry_init(act_outcome(it->act));
    e->ts_ms = now;
    e->worker = w->index;
    e->message_id = it->env.id.bytes;
    e->message_id_len = it->env.id.len;
    e->trace_id = it->trace_id;
    e->attempt = it->attempt;
    e->replay = wr_table_get_str(it->env.headers, "x-warren-replayed-at").len > 0;
    if (it->attempt <= 1 && it->act != ACT_DUPLICATE) {
        /* when it started here (its handler's start, or its decoding) */
        e->received_ms = now - (int64_t)(mono - it->started_ms);
        e->type = it->env.type.bytes;
        e->type_len = it->env.type.len;
        e->redelivered = it->env.redelivered;
    }
    if (it->act == ACT_DLQ || it->act == ACT_RETRY || it->act == ACT_NONE) {
        e->reason = it->reason;
        e->error = it->error;
    }
    if (it->act == ACT_RETRY || it->act == ACT_WAIT) {
        e->delay_ms = it->delay_ms;
        e->queue =
            w->topo.queues[it->act == ACT_RETRY ? w->topo.tier_queue[it->tier] : w->topo.wait_queue]
                .name;
    } else if (it->act == ACT_DLQ) {
        e->queue = w->sub->dlq;
    }
    if (it->duration_ms > 0) {
        /* the handler ran: how long, and which version */
        e->duration_ms = it->duration_ms;
        e->handler_version = w->lua ? wr_lua_version(w->lua) : NULL;
    }
    if (it->act == ACT_OK) {
        e->published = (int)(it->pub_end - it->pub_first);
    }
}

/*
 * Journal what the batch decided: one Redis round trip (wr_idem_journal),
 * after the records are written and before the acks. Best effort: a failure
 * is logged and counted, and changes nothing else. Only with Redis connected
 * (idempotency on).
 */
static void journal_batch(wr_worker *w, int n)
{
    const wr_config *cfg = w->cfg;
    if (!cfg->journal_enabled || w->idem == NULL || n == 0) {
        return;
    }
    enum { KEYCAP = WR_IDKEY_MAX + 320 };
    wr_idem_jlist *lists = calloc((size_t)n, sizeof(*lists));
    char **texts = calloc((size_t)n, sizeof(*texts));
    char *keys = malloc((size_t)n * KEYCAP);
    int nl = 0, nt = 0;
    int64_t now = wr_now_ms();
    double mono = wr_mono_ms();
    if (lists == NULL || texts == NULL || keys == NULL) {
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const item *it = &w->items[i];
        if (it->act == ACT_NONE && it->error[0] == '\0') {
            continue; /* not started (shutdown, breaker): returned quietly */
        }
        char id[WR_IDKEY_MAX + 1];
        snprintf(id, sizeof(id), "%.*s", (int)it->env.id.len, (const char *)it->env.id.bytes);
        const char *key = it->key[0] ? it->key : id;
        char *jkey = keys + (size_t)nl * KEYCAP;
        if (key[0] == '\0' ||
            wr_journal_key(w->sub->idem.prefix, w->sub->name, key, jkey, KEYCAP) != 0) {
            continue; /* no id to file it under */
        }
        wr_journal_entry e;
        journal_item(w, it, now, mono, &e);
        int first = nt;
        if ((texts[nt] = wr_journal_encode(&e)) != NULL) {
            nt++;
        }
        if (nt > first) {
            lists[nl++] = (wr_idem_jlist){
                .key = jkey, .entries = (const char *const *)&texts[first], .count = nt - first};
        }
    }
    double t0 = wr_mono_ms();
    int jrc = wr_idem_journal(w->idem, lists, nl, cfg->journal_max_entries, cfg->journal_ttl_ms);
    if (nl > 0) {
        wr_hist_observe(&w->st->redis_journal, (wr_mono_ms() - t0) / 1000);
    }
    if (jrc != 0) {
        w->journal_failures++;
        wr_stat_add(&w->st->journal_errors, 1);
        wr_logline l;
        wr_log_begin(&l, WR_LOG_WARN, "journal entries not written");
        wr_log_str(&l, "subscription", w->sub->name);
        wr_log_int(&l, "worker", w->index);
        wr_log_str(&l, "error", wr_idem_error(w->idem));
        wr_log_int(&l, "events", nl);
        wr_log_int(&l, "failures", (long long)w->journal_failures);
        wr_log_end(&l);
    }
out:
    for (int i = 0; i < nt; i++) {
        free(texts[i]);
    }
    free(texts);
    free(lists);
    free(keys);
}

/*
 * Process N deliveries (DESIGN.md, "Flow of one message"): decode, claim,
 * run, publish every copy, wait for the confirms, write the records, then ack
 * or return each. Returns WR_BROKER_OK or DOWN.
 */
static int run_batch(wr_worker *w, int n)
{
    recycle_amqp_pool(&w->pool);
    wr_broker_batch_begin(w->b);
    batch_started(w, n);
    int rc = process_batch(w, n);
    batch_ended(w, n);
    return rc;
}

static int process_batch(wr_worker *w, int n)
{
    const wr_idem_policy *pol = &w->sub->idem;
    int rc = WR_BROKER_OK;
    for (int i = 0; i < n; i++) {
        item *it = &w->items[i];
        memset(it, 0, sizeof(*it));
        it->d = w->taken[i];
        wr_storebuf_reset(w->stores[i]);
        wr_sb_result_free(&w->links[i].held);
        prepare(w, it);
    }
    if (pol->enabled && claim_batch(w, n) != 0) {
        rc = return_all(w, n, wr_idem_error(w->idem));
        return rc == WR_BROKER_OK ? PAUSE : rc;
    }
    double leased_at = wr_mono_ms();
    for (int i = 0; i < n && rc == WR_BROKER_OK; i++) {
        item *it = &w->items[i];
        if (it->act == ACT_DLQ) {
            /* invalid (never runs), or crashed too often to run again */
            rc = publish_copy(w, it, it->claimed ? "crashed" : "invalid", 0);
            continue;
        }
        if (it->act == ACT_WAIT) {
            rc = publish_copy(w, it, NULL, 0);
            continue;
        }
        if (it->act == ACT_DUPLICATE || (pol->enabled && !it->claimed)) {
            continue;
        }
        if (atomic_load(&w->flags->stop)) {
            it->act = ACT_NONE; /* draining: what has not started goes back */
            it->op = WR_FINISH_UNCLAIM;
            continue;
        }
        if (pol->enabled && wr_mono_ms() - leased_at > (double)pol->lease_ms / 3) {
            if (extend_leases(w, i, n) != 0) {
                /* nothing of this batch was published yet past this point's copies;
                 * returning all of it repeats only work that is idempotent */
                rc = return_all(w, n, wr_idem_error(w->idem));
                unclaim_batch(w, n, 1);
                return rc == WR_BROKER_OK ? PAUSE : rc;
            }
            leased_at = wr_mono_ms();
            if (!it->claimed) {
                continue;
            }
        }
        if (!wr_shared_brk_allow(w->brk)) {
            /* the breaker opened (or half-open has no probe slot left): back to the
             * queue without counting an attempt, quietly */
            it->act = ACT_NONE;
            it->op = WR_FINISH_UNCLAIM;
            continue;
        }
        rc = run_one(w, it);
        if (rc == WR_BROKER_OK && wr_mono_ms() >= w->next_service_ms) {
            /* a batch of slow handlers: keep heartbeats going between them too */
            service_broker(w);
        }
        if (it->act == ACT_NONE) {
            wr_shared_brk_release(w->brk); /* interrupted by shutdown: no verdict */
        } else if (it->out == WR_OUT_OK) {
            wr_shared_brk_record(w->brk, 1);
        } else if (it->out == WR_OUT_ERROR || it->out == WR_OUT_TIMEOUT ||
                   it->out == WR_OUT_RETRY) {
            wr_shared_brk_record(w->brk, 0);
        } else {
            wr_shared_brk_release(w->brk); /* rejections and invalid bodies don't count */
        }
    }
    if (rc == WR_BROKER_OK) {
        double t0 = wr_mono_ms();
        rc = wr_broker_batch_wait(w->b, CONFIRM_TIMEOUT_MS);
        wr_hist_observe(&w->st->confirm, (wr_mono_ms() - t0) / 1000);
        atomic_store(&w->st->beat_ms, (long long)wr_mono_ms());
        if (rc == WR_BROKER_TIMEOUT) {
            wr_logf(WR_LOG_ERROR, "%s: publish confirms did not arrive within %d ms; reconnecting",
                    w->name, CONFIRM_TIMEOUT_MS);
            rc = WR_BROKER_DOWN;
        }
    }
    if (rc != WR_BROKER_OK) {
        /* Nothing is acked: the broker redelivers all of the batch on the new
         * connection; the records are given back, so whoever gets a message next
         * claims it at once and no start is counted against it. */
        wr_logline l;
        wr_log_begin(&l, WR_LOG_ERROR, "broker connection lost mid-batch; nothing acked");
        wr_log_str(&l, "subscription", w->sub->name);
        wr_log_int(&l, "worker", w->index);
        wr_log_str(&l, "error", wr_broker_error(w->b));
        wr_log_int(&l, "batch", n);
        wr_log_end(&l);
        unclaim_batch(w, n, 0);
        return WR_BROKER_DOWN;
    }

    /* Copies whose confirm failed: their message goes back to the queue. */
    int lost_copies = 0;
    for (int i = 0; i < n; i++) {
        item *it = &w->items[i];
        if (it->act != ACT_NONE && it->act != ACT_DUPLICATE && !item_confirmed(w, it)) {
            lost_copies++;
            snprintf(it->error, sizeof(it->error), "%s",
                     it->act == ACT_OK ? "an outgoing event was not confirmed by the broker"
                                       : "a copy was not confirmed by the broker");
            it->act = ACT_NONE;
            it->op = WR_FINISH_UNCLAIM; /* the broker refused a copy: not a crashed run */
        }
    }

    /* Write the records: done after confirmed effects, released for retries. */
    int k = 0;
    for (int i = 0; i < n; i++) {
        item *it = &w->items[i];
        if (it->claimed) {
            /* a handled message's ctx.store writes ride on its done mark; a
                             failed one's (dead-lettered, rejected) are dropped */
            w->finishes[k] = (wr_finish){
                .key = it->rkey,
                .op = it->op,
                .outcome = it->done_outcome,
                .writes = it->act == ACT_OK && it->op == WR_FINISH_DONE ? w->stores[i] : NULL};
            w->map[k++] = i;
        }
    }
    double t0 = wr_mono_ms();
    int frc = 0;
    if (pol->enabled) {
        frc = wr_idem_finish(w->idem, w->finishes, k, w->token, pol->lease_ms, pol->ttl_ms);
        if (frc == WR_IDEM_SCRIPT_FAILED) {
            frc = finish_one_by_one(w, k);
        }
    }
    int redis_failed = frc != 0;
    int refused = 0;
    if (pol->enabled) {
        if (redis_failed) {
            wr_stat_add(&w->st->redis_errors, 1);
        } else {
            wr_hist_observe(&w->st->redis_finish, (wr_mono_ms() - t0) / 1000);
        }
    }
    for (int c = 0; c < k; c++) {
        item *it = &w->items[w->map[c]];
        if (it->op != WR_FINISH_DONE || it->act == ACT_NONE) {
            continue; /* a release that failed only delays the next claim until the lease ends */
        }
        int nwrites = 0;
        if (w->finishes[c].writes != NULL) {
            wr_storebuf_writes(w->finishes[c].writes, &nwrites);
        }
        if (!redis_failed && w->finishes[c].failed) {
            /* The commit script raised on this record (a write Redis refused that
             * the checks did not foresee). Its record was given back as released:
             * the start stays counted, so a message that fails this way every
             * time reaches the crash-loop guard and the DLQ instead of looping. */
            snprintf(it->error, sizeof(it->error), "the commit failed, the message runs "
                                                   "again: %s", w->finishes[c].why);
            it->act = ACT_NONE;
        } else if (redis_failed || !w->finishes[c].owned) {
            if (!redis_failed) {
                wr_stat_add(&w->st->lease_lost, 1);
            }
            /* The effects are published but the record is not written: never ack
             * on guesswork. The redelivery is claimed again (by our token, or
             * after the lease by anyone) and re-run; its outgoing events carry
             * the same ids, so consumers downstream deduplicate them. Its
             * ctx.store writes were not applied (they ride on the done mark). */
            snprintf(it->error, sizeof(it->error), "%s%s%s",
                     redis_failed ? "the idempotency record could not be written"
                     : nwrites > 0
                         ? "lease lost: writes not applied; another worker took the message over"
                         : "lease lost: another worker took the message over",
                     redis_failed ? ": " : "", redis_failed ? wr_idem_error(w->idem) : "");
            it->act = ACT_NONE;
        } else if (w->finishes[c].conflict) {
            /* Another message changed what this one read (optimistic concurrency,
             * storebuf.h): nothing applied, the record unclaimed; the message goes
             * back and runs again from fresh state. Its outgoing events, if any
             * went out, carry the same ids next time. */
            snprintf(it->error, sizeof(it->error), "store %s; nothing applied, the message "
                                                   "runs again", w->finishes[c].why);
            it->act = ACT_NONE;
        } else if (w->finishes[c].refused) {
            /* Owned, but Redis holds a key of another type (or a counter that is
             * not an integer): nothing applied, the record still ours and
             * processing. No retry can change that: dead-letter it (below). */
            snprintf(it->error, sizeof(it->error), "store writes refused, nothing applied: %s",
                     w->finishes[c].why);
            it->act = ACT_DLQ;
            it->outcome = "store-refused";
            snprintf(it->reason, sizeof(it->reason), "store-refused");
            refused++;
        }
    }
    if (refused > 0 && dead_letter_refused(w, n) != WR_BROKER_OK) {
        return WR_BROKER_DOWN;
    }

    if (!redis_failed) {
        journal_batch(w, n);
    }

    int all_ok = 1;
    for (int i = 0; i < n; i++) {
        all_ok &= w->items[i].act != ACT_NONE;
    }
    if (all_ok) {
        rc = wr_broker_ack(w->b, w->items[n - 1].d->delivery_tag, 1);
    }
    for (int i = 0; i < n; i++) {
        item *it = &w->items[i];
        if (!all_ok && rc == WR_BROKER_OK) {
            rc = it->act != ACT_NONE ? wr_broker_ack(w->b, it->d->delivery_tag, 0)
                                     : wr_broker_nack(w->b, it->d->delivery_tag, 0, 1);
        }
        /* logged even when an ack failed: the outcome (and its record) stands, the
         * redelivery will be skipped as a duplicate */
        if (it->act == ACT_NONE && it->error[0] == '\0') {
            continue; /* not started (shutdown): returned quietly */
        }
        count_item(w, it);
        /* a store conflict is concurrency doing its job, not a failure */
        wr_log_level level = it->act == ACT_OK || it->act == ACT_DUPLICATE ? WR_LOG_INFO
                             : it->act == ACT_NONE &&
                                     strncmp(it->error, "store conflict", 14) != 0
                                 ? WR_LOG_ERROR
                                 : WR_LOG_WARN;
        log_item(w, it, act_outcome(it->act), level);
    }
    if (rc != WR_BROKER_OK) {
        return WR_BROKER_DOWN;
    }
    if (redis_failed) {
        /* none of the batch's records was written: all of them are still ours */
        unclaim_batch(w, n, 1);
        return PAUSE;
    }
    if (lost_copies > 0) {
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

/*
 * Switch to the subscription's new live generation (reload.h), between two
 * batches: build a Lua state from the new source (the old one keeps running
 * if that fails), take the new timeout and retry policy, and declare the delay
 * queues a new schedule needs. Returns a WR_BROKER_* code.
 */
static int apply_live(wr_worker *w)
{
    wr_live_snapshot snap;
    if (wr_live_snapshot_take(w->live, &snap) != 0) {
        wr_live_snapshot_free(&snap);
        return WR_BROKER_OK; /* out of memory: try at the next batch */
    }
    w->live_gen = snap.gen;
    if (strcmp(snap.version, wr_lua_version(w->lua)) != 0) {
        wr_lua_opts o = w->lua_opts;
        o.source = snap.source;
        o.source_len = snap.source_len;
        o.version = snap.version;
        o.timeout_ms = snap.timeout_ms;
        o.max_attempts = snap.retry.max_attempts;
        char err[1024];
        wr_lua *fresh = wr_lua_create(&o, err, sizeof(err));
        if (fresh == NULL) {
            wr_logline l;
            wr_log_begin(&l, WR_LOG_ERROR, "worker could not load the new handler version");
            wr_log_str(&l, "subscription", w->sub->name);
            wr_log_int(&l, "worker", w->index);
            wr_log_str(&l, "version", snap.version);
            wr_log_str(&l, "running_version", wr_lua_version(w->lua));
            wr_log_str(&l, "error", err);
            wr_log_end(&l);
        } else {
            pthread_mutex_lock(&w->lua_lock);
            wr_lua *old = w->lua;
            w->lua = fresh;
            pthread_mutex_unlock(&w->lua_lock);
            wr_lua_destroy(old);
        }
    }
    w->lua_opts.timeout_ms = snap.timeout_ms;
    w->lua_opts.max_attempts = snap.retry.max_attempts;
    wr_lua_set_limits(w->lua, snap.timeout_ms, snap.retry.max_attempts);
    wr_retry_policy_copy(&w->retry, w->retry_delays, &snap.retry);
    wr_live_snapshot_free(&snap);

    wr_retry_tiers tiers;
    wr_retry_tiers_of(&w->retry, &tiers);
    if (tiers.count == w->tiers.count &&
        memcmp(tiers.delay_ms, w->tiers.delay_ms, sizeof(int64_t) * (size_t)tiers.count) == 0) {
        return WR_BROKER_OK;
    }
    wr_topology topo;
    if (wr_topology_plan(w->sub, &tiers, &topo) != 0) {
        wr_logf(WR_LOG_ERROR, "%s: the new retry delays need queue names that are too long; "
                              "keeping the old schedule", w->name);
        wr_retry_policy_copy(&w->retry, w->retry_delays, &w->sub->retry);
        return WR_BROKER_OK;
    }
    wr_topology_clear(&w->topo);
    w->topo = topo;
    w->tiers = tiers;
    /* the new delay queues must exist before the first retry copy goes to one */
    return w->b != NULL ? wr_broker_declare(w->b, &w->topo) : WR_BROKER_OK;
}

static void *worker_main(void *arg)
{
    wr_worker *w = arg;
    while (!atomic_load(&w->flags->stop)) {
        atomic_store(&w->st->connected, 0);
        atomic_store(&w->st->blocked, 0);
        if (connect_broker(w) != 0) {
            break;
        }
        while (!atomic_load(&w->flags->stop)) {
            if (atomic_load(&w->live->gen) != w->live_gen &&
                apply_live(w) != WR_BROKER_OK) {
                wr_logf(WR_LOG_ERROR, "%s: declaring new delay queues failed: %s", w->name,
                        wr_broker_error(w->b));
                wr_broker_destroy(w->b);
                w->b = NULL;
                break;
            }
            int64_t wait_ms;
            if (wr_shared_brk_blocks(w->brk, &wait_ms)) {
                if (!w->paused) {
                    /* stop consuming: what was delivered but not started goes back,
                     * without counting an attempt; nothing burns retries meanwhile */
                    drain(w);
                    w->paused = 1;
                    wr_logline l;
                    wr_log_begin(&l, WR_LOG_WARN, "consumption paused: circuit breaker open");
                    wr_log_str(&l, "subscription", w->sub->name);
                    wr_log_int(&l, "worker", w->index);
                    wr_log_end(&l);
                }
                int prc = wr_broker_poll(w->b, (int)wait_ms); /* keeps heartbeats going */
                if (prc == WR_BROKER_DOWN) {
                    wr_broker_destroy(w->b);
                    w->b = NULL;
                    break;
                }
                continue;
            }
            if (w->paused) {
                if (wr_broker_consume(w->b, w->sub->queue, w->sub->prefetch) != WR_BROKER_OK) {
                    wr_broker_destroy(w->b);
                    w->b = NULL;
                    break;
                }
                w->paused = 0;
                wr_logline l;
                wr_log_begin(&l, WR_LOG_INFO, "consumption resumed");
                wr_log_str(&l, "subscription", w->sub->name);
                wr_log_int(&l, "worker", w->index);
                wr_log_str(&l, "breaker", wr_brk_state_name(wr_shared_brk_state(w->brk)));
                wr_log_end(&l);
            }
            if (wr_broker_blocked(w->b)) {
                /* the broker's memory or disk alarm: a publish now would block the
                 * thread once TCP buffers fill; take no batch (each one publishes)
                 * until it lifts, servicing the connection meanwhile */
                if (wr_broker_poll(w->b, TAKE_TIMEOUT_MS) == WR_BROKER_DOWN) {
                    wr_broker_destroy(w->b);
                    w->b = NULL;
                    break;
                }
                continue;
            }
            int n = 0;
            int rc = wr_broker_take(w->b, w->taken, w->sub->batch_size, TAKE_TIMEOUT_MS, &n);
            if (rc == WR_BROKER_OK && n > 0) {
                rc = run_batch(w, n);
                for (int i = 0; i < n; i++) {
                    wr_broker_release(w->taken[i]);
                }
            }
            if (rc == PAUSE) {
                /* closing the connection returns every delivery we hold; we
                 * consume again once Redis answers (connect_broker waits for it).
                 * Redis may answer PING and still refuse what a batch needs (OOM
                 * at maxmemory, a read-only replica): pauses in a row back off, or
                 * the worker would spin through reconnects. */
                wr_logf(WR_LOG_WARN, "%s: pausing consumption until Redis answers", w->name);
                drain(w);
                wr_broker_destroy(w->b);
                w->b = NULL;
                if (w->pause_backoff_ms > 0) {
                    nap(w, jittered(w, w->pause_backoff_ms));
                }
                w->pause_backoff_ms = w->pause_backoff_ms == 0 ? BACKOFF_MIN_MS
                                      : w->pause_backoff_ms * 2 > BACKOFF_MAX_MS
                                          ? BACKOFF_MAX_MS
                                          : w->pause_backoff_ms * 2;
                break;
            }
            if (rc == WR_BROKER_OK && n > 0) {
                w->pause_backoff_ms = 0; /* a batch went through */
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
    atomic_store(&w->st->connected, 0);
    atomic_store(&w->st->blocked, 0);
    drain(w);
    wr_broker_destroy(w->b);
    w->b = NULL;
    wr_logf(WR_LOG_INFO, "%s: stopped", w->name);
    atomic_store(&w->done, 1);
    return NULL;
}

wr_worker *wr_worker_start(const wr_config *cfg, const wr_subscription *sub, int index,
                           wr_live *live, wr_shared_brk *brk, wr_breakers *named,
                           wr_run_flags *flags, wr_wstats *stats, char *err, size_t errcap)
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
    w->st = stats;
    w->max_body = sub->max_body_size > 0 ? (size_t)sub->max_body_size : 512 * 1024;
    snprintf(w->name, sizeof(w->name), "warren %s#%d", sub->name, index);
    pthread_mutex_init(&w->lua_lock, NULL);
    init_amqp_pool(&w->pool, 16384);
    seed_rand(w);
    char rnd[17];
    hex_rand(w, rnd, 16);
    snprintf(w->token, sizeof(w->token), "%d-%d-%s", (int)getpid(), index, rnd);
    w->live = live;
    w->brk = brk;
    wr_live_snapshot snap;
    if (wr_live_snapshot_take(live, &snap) != 0) {
        wr_live_snapshot_free(&snap);
        snprintf(err, errcap, "out of memory");
        goto fail;
    }
    w->live_gen = snap.gen;
    wr_retry_policy_copy(&w->retry, w->retry_delays, &snap.retry);
    wr_retry_tiers_of(&w->retry, &w->tiers);

    w->lua_opts = (wr_lua_opts){
        .handler_path = sub->handler,
        .subscription = sub->name,
        .queue = sub->queue,
        .timeout_ms = snap.timeout_ms,
        .worker = index,
        .max_attempts = snap.retry.max_attempts,
        .breakers = named,
        .breaker_fallback = &sub->breaker,
        .service = service_broker,
        .service_ud = w,
        .service_every_ms = cfg->amqp_heartbeat_ms > 0 ? cfg->amqp_heartbeat_ms / 4 : 1000,
        .max_publish_bytes = (size_t)sub->max_publish_size,
    };
    size_t bs = (size_t)sub->batch_size;
    w->items = calloc(bs, sizeof(*w->items));
    w->taken = calloc(bs, sizeof(*w->taken));
    w->claims = calloc(bs, sizeof(*w->claims));
    w->finishes = calloc(bs, sizeof(*w->finishes));
    w->stores = calloc(bs, sizeof(*w->stores));
    for (size_t i = 0; w->stores != NULL && i < bs; i++) {
        if ((w->stores[i] = wr_storebuf_create(cfg->store_max_writes)) == NULL) {
            snprintf(err, errcap, "out of memory");
            wr_live_snapshot_free(&snap);
            goto fail;
        }
    }
    w->links = calloc(bs, sizeof(*w->links));
    w->store = (wr_lua_store){.fetch = chained_fetch,
                              .prefix = cfg->store_prefix ? cfg->store_prefix : "warren:store:",
                              .max_value_bytes = cfg->store_max_value_bytes > 0
                                                     ? (size_t)cfg->store_max_value_bytes
                                                     : 65536};
    w->map = calloc(bs, sizeof(*w->map));
    w->orphans = calloc(bs, sizeof(*w->orphans));
    if (!w->items || !w->taken || !w->claims || !w->finishes || !w->map || !w->orphans ||
        !w->stores || !w->links) {
        snprintf(err, errcap, "out of memory");
        wr_live_snapshot_free(&snap);
        goto fail;
    }
    if (wr_topology_plan(sub, &w->tiers, &w->topo) != 0) {
        snprintf(err, errcap, "queue '%s': the names of its retry queues would be too long",
                 sub->queue);
        wr_live_snapshot_free(&snap);
        goto fail;
    }
    wr_lua_opts o = w->lua_opts;
    o.source = snap.source;
    o.source_len = snap.source_len;
    o.version = snap.version;
    w->lua = wr_lua_create(&o, err, errcap);
    wr_live_snapshot_free(&snap);
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
    wr_idem_destroy(w->idem);
    wr_topology_clear(&w->topo);
    empty_amqp_pool(&w->pool);
    free(w->items);
    free(w->taken);
    free(w->claims);
    free(w->finishes);
    for (int i = 0; w->stores != NULL && i < w->sub->batch_size; i++) {
        wr_storebuf_destroy(w->stores[i]);
    }
    free(w->stores);
    for (int i = 0; w->links != NULL && i < w->sub->batch_size; i++) {
        wr_sb_result_free(&w->links[i].held);
    }
    free(w->links);
    free(w->map);
    free(w->orphans);
    pthread_mutex_destroy(&w->lua_lock);
    free(w);
}
