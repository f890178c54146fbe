/*
 * worker: one consumer thread: connect, declare, consume, and run batches
 * through the handler with confirmed publishes before acks. See worker.h.
 *
 * Two batches are in flight: while batch n waits for its publishes' confirms
 * and its commit, batch n+1 is claimed and run. One turn of the loop:
 *
 *   take      the deliveries already buffered (and the held-back copies whose
 *             twin is finished), up to batch_size: batch n+1
 *   prepare   decode each, derive its key; a second copy of a key in flight
 *             in this process is held back (inflight.h); undecodable ones get
 *             their DLQ copy published at once
 *   claim     send batch n+1's claims (idem.h), without waiting
 *   commit    of batch n: wait for its confirms (they had all of batch n+1's
 *             preparation to arrive), then send its records' finish, without
 *             waiting
 *   run       read n+1's claims; run its handlers (their ctx.store reads
 *             come after n's commit on the connection, so they see it); publish
 *             what each outcome needs (events, retry, DLQ or wait copies)
 *   settle    of batch n: read its commit's answer; dead-letter what the
 *             commit refused; journal; ack (one ack with `multiple` when it
 *             can); log and count
 *
 * So each Redis round trip overlaps other work, and the broker's confirms
 * of one batch arrive while the next one is prepared. Nothing is acked before
 * what must survive it is stored: a batch is settled only after its confirms
 * and its commit. What an outcome means is decided by decide.h.
 */
#include "worker.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "breakers.h"
#include "broker.h"
#include "cloudevent.h"
#include "contracts.h"
#include "decide.h"
#include "dlq.h"
#include "envelope.h"
#include "gates.h"
#include "idem.h"
#include "idkey.h"
#include "inflight.h"
#include "journal.h"
#include "log.h"
#include "lua_rt.h"
#include "metrics.h"
#include "ordering.h"
#include "probe.h"
#include "record.h"
#include "reload.h"
#include "retry.h"
#include "sign.h"
#include "tindex.h"
#include "topology.h"

#define TAKE_TIMEOUT_MS 200      /* idle wait per loop turn: bounds shutdown latency */
#define HALF_OPEN_FRESH_MS 2000  /* half-open: how long retries yield to fresh messages */
#define LOG_BODY_MAX 2048        /* log.bodies: bytes of a body shown in its outcome line */
#define CONFIRM_TIMEOUT_MS 30000 /* a batch's confirms; past this the connection is suspect */
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 30000
/* A batch step's result: Redis failed; close the broker connection (returning
 * every delivery) until Redis answers. */
#define PAUSE 1
#define GATE_DROPPED 2 /* gate_publish_one: an entry that cannot be decoded */
#define RKEY_MAX (WR_IDKEY_MAX + 300)

/* One delivery of a batch and what became of it. */
typedef struct {
    amqp_envelope_t *d;
    wr_envelope env;
    int valid;      /* the envelope decoded */
    int forged;     /* its x-warren-* headers were not warren's (sign.h): ignored */
    int dependency; /* its handler error came through a dependency (lua_rt.h) */
    int returned;   /* goes back to the queue unclaimed (see prepare_batch) */
    int held;       /* a copy of a key in flight here: held back, not ours now */
    wr_action act;
    uint64_t pub_first, pub_end; /* its publishes, as sequence numbers on the channel */
    const char *outcome;         /* for the log: handler outcome name */
    wr_reason rs;                /* why it failed or was refused (outcome.h) */
    char reason[64];             /* the same as text (for headers; a handler's own code) */
    char error[1024];
    double started_ms;
    double duration_ms;
    int attempt;
    char trace_id[33];
    char tracestate[513]; /* the message's tracestate, NUL-terminated for ctx.http */
    /* idempotency */
    char key[WR_IDKEY_MAX + 1]; /* the message's key ("" when idempotency is off) */
    char rkey[RKEY_MAX];        /* its record's key */
    int inflight;               /* we put rkey in the subscription's inflight set */
    int claimed;                /* we hold its record (ACQUIRED or TAKEOVER) */
    int takeover;
    int starts;
    wr_decision dec;       /* what its outcome means (decide.h) */
    int64_t delay_ms;      /* RETRY / WAIT: how long it waits */
    int tier;              /* RETRY: its delay tier */
    wr_outcome out;        /* the handler's outcome, when it ran */
    int ran;               /* the handler ran (out is set) */
    const char *defer_why; /* WAIT for another reason than a busy key: the log line's text */

    char okey[WR_IDKEY_MAX + 1]; /* its ordering key ("": none, or ordering is off) */
    int followed;                /* it followed an unfinished earlier message of okey */
    int marks;                   /* its commit writes causal gates' done marks (gates.h) */
    int holder;                  /* it holds its ordering key in Redis: a retried message, or
                                    one released behind it (gate.lua's lanes) */
    int64_t upcast_from;         /* its contract says: upcast from this version first (0: no) */
    wr_cloudevent ce; /* what it is as a CloudEvent (cloudevent.h), mode NONE if not one */
} item;

struct wr_worker;

/* Reads of items[index] see the writes of the earlier handled items of the
 * batch, and of the batch before it (chained_fetch). */
struct store_link {
    struct wr_worker *w;
    struct batch *b;
    int index;
    wr_sb_result held; /* what the last read through this link returned */
};

/* A batch: its deliveries, items and the calls about them. */
typedef struct batch {
    int n;
    amqp_envelope_t **taken; /* deliveries, ours until released (a held one moves on) */
    item *items;
    wr_claim *claims;
    wr_finish *fin;
    int *cmap, *fmap; /* claims[k] / fin[k] belong to items[map[k]] */
    int nclaims, nfin;
    wr_storebuf **stores; /* ctx.store writes of items[i], committed with its record */
    struct store_link *links;
    char **entries;   /* items[i]'s journal entry, kept in its done record */
    amqp_pool_t pool; /* publish properties and strings: until it is settled */
    int live;         /* taken and not settled */
    int claim_sent;
    int commit_sent; /* its finish went out (or it needed none) */
    int commit_read; /* its finish's answer is in (frc) */
    int frc;         /* that answer: 0, -1 (Redis failed), WR_IDEM_SCRIPT_FAILED */
    double claim_t0, commit_t0;
    double leased_at;
    uint64_t seq_first; /* the first sequence number it published (0: none) */
    uint64_t seq_end;   /* one past the last */
    int again;          /* deliveries held back before and taken again (counted once) */
} batch;

/* A delivery held back while another copy of its key is in flight here. */
typedef struct {
    amqp_envelope_t *d;
    char rkey[RKEY_MAX];
} held;

struct wr_worker {
    pthread_t thread;
    int thread_started;
    atomic_int done;
    const wr_config *cfg;
    const wr_subscription *sub;
    wr_run_flags *flags;
    int index;
    char name[160]; /* "warren orders#0": logs and the broker's connection name */
    char token[64]; /* our idempotency claims' owner token */

    pthread_mutex_t lua_lock; /* guards swapping `lua` against wr_worker_interrupt */
    wr_lua *lua;
    wr_lua_opts lua_opts; /* what `lua` was built from (source and version: the copies
                             below), so an out-of-memory rebuild makes the same version */
    char *run_source;     /* the running version's source */
    char run_version[64];

    wr_live *live;                  /* the subscription's live handler and policy (reload.h) */
    unsigned live_gen;              /* the generation this worker runs */
    struct wr_contracts *contracts; /* that generation's contracts (a reference), or NULL */
    wr_retry_policy retry;          /* the worker's copy of the live retry policy */
    int64_t retry_delays[WR_LIVE_MAX_DELAYS];

    wr_shared_brk *brk;     /* the subscription's circuit breaker (shared by its workers) */
    wr_inflight *inflight;  /* the subscription's keys in flight in this process */
    wr_lanes *lanes;        /* ordering on: this worker's blocked ordering keys (ordering.h) */
    amqp_pool_t gate_pool;  /* message ids of the parked messages sent back (the broker
                               keeps them until their publishes are released) */
    uint64_t gate_seq_end;  /* one past the last of those publishes */
    double next_sweep_ms;   /* when this worker next sweeps the parked messages */
    int paused;             /* consumption stopped because the breaker is open */
    double next_service_ms; /* when the connection should next be serviced mid-batch */

    wr_sign_key sign; /* signs and checks the x-warren-* headers of our copies */
    wr_broker *b;
    wr_idem *idem; /* NULL when idempotency is off, or while Redis is away */
    wr_topology topo;
    wr_retry_tiers tiers;
    batch batches[2];
    int cur;    /* batches[cur] is the one being taken and run */
    held *held; /* copies held back (inflight.h), oldest first */
    int nheld;
    wr_lua_store store; /* what ctx.store works with (lua_rt.h); buf set per message */
    struct orphan {
        char key[RKEY_MAX];
        wr_finish_op op;
        int starts;
    } * orphans; /* records we still hold for messages we gave back while Redis
                    was away: given back when it answers again */
    int orphan_count, orphan_cap;
    wr_finish *scratch; /* for orphans, lease extensions and one-by-one commits */
    int scratch_cap;
    uint64_t rng;
    size_t max_body;
    wr_wstats *st;                  /* this worker's figures (metrics.h); only we write them */
    int connections;                /* broker connections made so far */
    int broker_at;                  /* which broker address to try (wr_config_amqp_url): the
                                       next one after a failed connect or a lost connection */
    int pause_backoff_ms;           /* wait before the next pause's reconnect (pauses in a row) */
    unsigned redis_returns;         /* wr_probe_redis_returns() when last checked */
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

/* nap() while waiting for Redis: cut short when the prober sees it answer again
 * (probe.h), so consumption resumes within about a second of its return
 * whatever the backoff had grown to. */
static void nap_for_redis(wr_worker *w, int ms)
{
    unsigned seen = wr_probe_redis_returns();
    while (ms > 0 && !atomic_load(&w->flags->stop) && wr_probe_redis_returns() == seen) {
        nap(w, ms < 100 ? ms : 100);
        ms -= 100;
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

static int jittered(wr_worker *w, int backoff)
{
    return backoff / 2 + (int)(next_rand(w) % (uint64_t)(backoff / 2 + 1));
}

/* Room for N finish ops in w->scratch. Returns 0, or -1. */
static int scratch_room(wr_worker *w, int n)
{
    if (n <= w->scratch_cap) {
        return 0;
    }
    wr_finish *s = realloc(w->scratch, sizeof(*s) * (size_t)n);
    if (s == NULL) {
        return -1;
    }
    w->scratch = s;
    w->scratch_cap = n;
    return 0;
}

static void set_reason(item *it, wr_reason rs)
{
    it->rs = rs;
    snprintf(it->reason, sizeof(it->reason), "%s", wr_reason_name(rs));
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

static int unclaim_orphans(wr_worker *w);

/* The first wait of a reconnect backoff capped at CAP_MS: 200 ms, or the cap if lower. */
static int backoff_start(int64_t cap_ms)
{
    return cap_ms < BACKOFF_MIN_MS ? (int)cap_ms : BACKOFF_MIN_MS;
}

/*
 * Before a batch of an idle worker: when Redis went away and came back since
 * this worker last looked (probe.h), its connection may have died with the old
 * server while it had nothing to do. PING it, and connect anew if that fails,
 * so the batch does not meet a closed connection. Best effort: a Redis that
 * is really away is found by the batch, which pauses.
 */
static void redis_check_idle(wr_worker *w)
{
    unsigned now = wr_probe_redis_returns();
    if (now == w->redis_returns || w->idem == NULL) {
        return;
    }
    w->redis_returns = now;
    if (wr_idem_ping(w->idem) == 0) {
        return;
    }
    char err[512];
    wr_idem *fresh = wr_idem_create(&w->cfg->redis, w->cfg->redis_timeout_ms, err, sizeof(err));
    if (fresh != NULL) {
        wr_idem_destroy(w->idem);
        w->idem = fresh;
        wr_logf(WR_LOG_INFO, "%s: Redis came back while idle: connected anew", w->name);
    }
}

/*
 * Make sure Redis answers (when idempotency is on), retrying with capped,
 * jittered backoff until it does or the worker is told to stop. The wait
 * doubles up to redis.reconnect_max and starts over at every call, so an
 * outage never inherits the backoff of an earlier one. Nothing is consumed
 * meanwhile: without the record, no message can be handled safely.
 * Returns 0 ready, -1 stopping.
 */
static int ensure_redis(wr_worker *w)
{
    if (!w->sub->idem.enabled) {
        return 0;
    }
    int backoff = backoff_start(w->cfg->redis_reconnect_max_ms);
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
        nap_for_redis(w, wait);
        /* holding records of messages we gave back: look often, so they are given
         * back before another worker's takeover counts them as crashed runs */
        int64_t cap = w->orphan_count > 0 && w->cfg->redis_reconnect_max_ms > 500
                          ? 500
                          : w->cfg->redis_reconnect_max_ms;
        backoff = backoff * 2 > cap ? (int)cap : backoff * 2;
    }
    return -1;
}

/*
 * Connect, declare and consume, retrying with capped, jittered exponential
 * backoff until it works or the worker is told to stop. The wait doubles up
 * to amqp.reconnect_max and starts over at every call (a connection lost
 * later begins again at 200 ms), so the time between the broker coming back
 * and consumption resuming is at most about one reconnect_max. Returns 0
 * connected, -1 stopping.
 */
static int connect_broker(wr_worker *w)
{
    int backoff = backoff_start(w->cfg->amqp_reconnect_max_ms);
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
        for (int waited = 0; atomic_load(&w->flags->orphans) > 0 && waited < 3000; waited += 100) {
            nap(w, 100);
        }
        const wr_amqp_url *url = wr_config_amqp_url(cfg, w->broker_at);
        w->b = wr_broker_create(url, (int)(cfg->amqp_heartbeat_ms / 1000),
                                cfg->amqp_connect_timeout_ms, w->name, err, sizeof(err));
        if (w->b != NULL) {
            if (wr_broker_declare(w->b, &w->topo) == WR_BROKER_OK &&
                wr_broker_consume_all(w->b, w->topo.consume, w->topo.consume_count,
                                      w->topo.consume_now, w->sub->prefetch) == WR_BROKER_OK) {
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
                wr_log_str(&l, "broker", url->redacted);
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
        w->broker_at++; /* a cluster: the next node next time */
        int wait = jittered(w, backoff);
        log_unavailable(w, "broker not available", url->redacted, err, wait);
        nap(w, wait);
        backoff = backoff * 2 > cfg->amqp_reconnect_max_ms ? (int)cfg->amqp_reconnect_max_ms
                                                           : backoff * 2;
    }
    return -1;
}

/* ---- publishing copies ------------------------------------------------------------ */

static void note_pub(batch *bt, item *it, uint64_t seq)
{
    if (it->pub_end == it->pub_first) {
        it->pub_first = seq;
    }
    it->pub_end = seq + 1;
    if (bt->seq_first == 0) {
        bt->seq_first = seq;
    }
    bt->seq_end = seq + 1;
}

/* Publish the handler's buffered events for IT. Returns a WR_BROKER_* code. */
static int publish_outgoing(wr_worker *w, batch *bt, item *it, const wr_lua_result *res)
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
        /* <key>:<subscription>:<n> (idkey.h): two subscriptions that consume the
         * same event publish different events, which must not share an id */
        char id[WR_EVENT_ID_CAP];
        size_t n = wr_idkey_event_id(base, base_len, w->sub->name, i + 1, id);
        props.message_id = pool_dup(&bt->pool, id, n);
        if (p->content_type) {
            props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
            props.content_type = pool_dup(&bt->pool, p->content_type, strlen(p->content_type));
        }
        if (p->type) {
            props._flags |= AMQP_BASIC_TYPE_FLAG;
            props.type = pool_dup(&bt->pool, p->type, strlen(p->type));
        }
        amqp_table_entry_t *h =
            amqp_pool_alloc(&bt->pool, sizeof(*h) * (size_t)(p->header_count + 3 + 7));
        if (h == NULL) {
            return WR_BROKER_DOWN;
        }
        int nh = 0;
        for (int k = 0; k < p->header_count; k++) {
            h[nh].key = pool_dup(&bt->pool, p->header_keys[k], strlen(p->header_keys[k]));
            h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
            h[nh].value.value.bytes =
                pool_dup(&bt->pool, p->header_vals[k], strlen(p->header_vals[k]));
            nh++;
        }
        h[nh].key = amqp_cstring_bytes("x-warren-causation-id");
        h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
        h[nh].value.value.bytes = pool_dup(&bt->pool, base, base_len);
        nh++;
        char tp[56], span[17];
        hex_rand(w, span, 16);
        snprintf(tp, sizeof(tp), "00-%s-%s-01", it->trace_id, span);
        h[nh].key = amqp_cstring_bytes("traceparent");
        h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
        h[nh].value.value.bytes = pool_dup(&bt->pool, tp, strlen(tp));
        nh++;
        if (it->env.tracestate.len > 0) { /* vendors' trace data travels with the trace */
            h[nh].key = amqp_cstring_bytes("tracestate");
            h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
            h[nh].value.value.bytes = it->env.tracestate;
            nh++;
        }
        amqp_bytes_t ce_body = {0, NULL};
        if (p->ce_type != NULL) {
            /* a CloudEvent (cloudevent.h): its id is the message's deterministic id,
             * its trace the traceparent extension; binary mode unless structured */
            char when[40];
            int64_t now = wr_now_ms();
            time_t secs = (time_t)(now / 1000);
            struct tm tm;
            gmtime_r(&secs, &tm);
            size_t wl = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
            snprintf(when + wl, sizeof(when) - wl, ".%03dZ", (int)(now % 1000));
            const char *ce[][2] = {{"cloudEvents:specversion", "1.0"},
                                   {"cloudEvents:id", id},
                                   {"cloudEvents:type", p->ce_type},
                                   {"cloudEvents:source", p->ce_source},
                                   {"cloudEvents:time", when},
                                   {"cloudEvents:traceparent", tp},
                                   {"cloudEvents:subject", p->ce_subject}};
            if (p->ce_structured) {
                wr_ce_attrs a = {id, p->ce_type, p->ce_source, p->ce_subject, when, tp};
                size_t len = 0;
                char *t = wr_cloudevent_structured(&a, p->content_type, p->body, p->body_len, &len);
                if (t == NULL) {
                    return WR_BROKER_DOWN;
                }
                ce_body = pool_dup(&bt->pool, t, len);
                free(t);
                props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
                props.content_type = amqp_cstring_bytes(WR_CE_STRUCTURED_TYPE);
            }
            for (size_t k = 0; !p->ce_structured && k < sizeof(ce) / sizeof(ce[0]); k++) {
                if (ce[k][1] == NULL) {
                    continue;
                }
                h[nh].key = amqp_cstring_bytes(ce[k][0]);
                h[nh].value.kind = AMQP_FIELD_KIND_UTF8;
                h[nh].value.value.bytes = pool_dup(&bt->pool, ce[k][1], strlen(ce[k][1]));
                nh++;
            }
        }
        props.headers.num_entries = nh;
        props.headers.entries = h;

        amqp_bytes_t ex = pool_dup(&bt->pool, p->exchange, strlen(p->exchange));
        amqp_bytes_t rk = pool_dup(&bt->pool, p->routing_key, strlen(p->routing_key));
        amqp_bytes_t body = ce_body.bytes ? ce_body : (amqp_bytes_t){p->body_len, p->body};
        uint64_t seq;
        int rc = wr_broker_publish(w->b, ex, rk, p->mandatory, &props, body, &seq);
        if (rc != WR_BROKER_OK) {
            return rc;
        }
        note_pub(bt, it, seq);
    }
    return WR_BROKER_OK;
}

/*
 * Publish a copy of IT's original body: with its story (WR_ACT_DLQ to the
 * DLQ, WR_ACT_RETRY to its delay tier) or untouched (WR_ACT_WAIT to the wait
 * queue). Always persistent and mandatory: a copy no queue takes is a failure.
 */
static int publish_copy(wr_worker *w, batch *bt, item *it, const char *error_class)
{
    amqp_basic_properties_t props, clean;
    const amqp_basic_properties_t *orig = &it->d->message.properties;
    const char *queue;
    int rc;
    if (it->forged) {
        /* the story in its headers was not written by warren: it starts here */
        if (wr_dlq_strip_props(&bt->pool, orig, &clean) != 0) {
            return WR_BROKER_DOWN;
        }
        orig = &clean;
    }
    if (it->act == WR_ACT_WAIT) {
        queue = w->topo.queues[w->topo.wait_queue].name;
        rc = wr_dlq_build_wait_props(&bt->pool, orig, it->d->exchange, it->d->routing_key, &w->sign,
                                     &props);
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
            .sign = &w->sign,
        };
        rc = wr_dlq_build_props(&bt->pool, orig, it->d->exchange, it->d->routing_key, &f, &props);
        int q = it->act == WR_ACT_RETRY ? w->topo.tier_queue[it->tier] : -1;
        queue = q >= 0 ? w->topo.queues[q].name : w->sub->dlq;
        if (rc == 0 && q >= 0 && it->delay_ms < w->topo.queues[q].message_ttl_ms) {
            /* jitter: leave the tier a little early, never late */
            char exp[24];
            int n = snprintf(exp, sizeof(exp), "%lld", (long long)it->delay_ms);
            props._flags |= AMQP_BASIC_EXPIRATION_FLAG;
            props.expiration = pool_dup(&bt->pool, exp, (size_t)n);
        }
    }
    if (rc != 0) {
        return WR_BROKER_DOWN;
    }
    uint64_t seq;
    rc = wr_broker_publish(w->b, amqp_empty_bytes, amqp_cstring_bytes(queue), 1, &props,
                           it->d->message.body, &seq);
    if (rc == WR_BROKER_OK) {
        note_pub(bt, it, seq);
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

/* Keep a copy of the source and version the running state was built from (in
 * w->lua_opts), for rebuild_lua. Returns 0, or -1 when out of memory (the old
 * copy is kept). */
static int remember_source(wr_worker *w, const char *source, size_t len, const char *version)
{
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        return -1;
    }
    memcpy(copy, source, len);
    copy[len] = '\0';
    free(w->run_source);
    w->run_source = copy;
    snprintf(w->run_version, sizeof(w->run_version), "%s", version ? version : "");
    w->lua_opts.source = w->run_source;
    w->lua_opts.source_len = len;
    w->lua_opts.version = version ? w->run_version : NULL;
    return 0;
}

/* Replace the Lua state after it ran out of memory: the same version, from the
 * source it was built from (not the file on disk, which may hold a version the
 * reloader has not validated). */
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

static batch *other_batch(wr_worker *w, const batch *bt)
{
    return bt == &w->batches[0] ? &w->batches[1] : &w->batches[0];
}

/*
 * ctx.store reads of items[link->index] (a wr_sb_fetch): what Redis holds with
 * the writes of the batch's earlier handled items on top, in order, as the
 * commit script will apply them before this item's. Without this, a message
 * that reads what an earlier message of its batch wrote (an order's cancel
 * behind its create) would read around it and always conflict at commit. If an
 * earlier item's writes end up not applied, the guards of what this one read
 * no longer hold, and it conflicts and runs again: never wrong, at worst late.
 * The batch before this one needs no such chain: its commit went out before
 * this batch ran, so Redis answers a read after applying it.
 */
static int chained_fetch(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_base *out,
                         char *err, size_t errcap)
{
    struct store_link *link = ud;
    wr_worker *w = link->w;
    batch *bt = link->b;
    int j = link->index - 1;
    while (j >= 0) {
        int nw = 0;
        if (bt->items[j].act == WR_ACT_OK) {
            wr_storebuf_writes(bt->stores[j], &nw);
        }
        if (nw > 0) {
            break;
        }
        j--;
    }
    if (j < 0) {
        return wr_idem_store_fetch(w->idem, cmd, key, arg, out, err, errcap);
    }
    struct store_link *p = &bt->links[j];
    p->w = w;
    p->b = bt;
    p->index = j;
    wr_sb_result_free(&p->held);
    if (wr_storebuf_peek(bt->stores[j], cmd, key, arg, chained_fetch, p, &p->held, err, errcap) !=
        0) {
        return -1;
    }
    out->present = p->held.present;
    out->str = p->held.str;
    out->num = p->held.num;
    out->items = p->held.items;
    out->count = p->held.count;
    return 0;
}

/* Decode IT and derive its key. An invalid message is marked WR_ACT_DLQ with
 * its reason (its copy is published by the caller). */
static void prepare(wr_worker *w, item *it)
{
    const wr_idem_policy *pol = &w->sub->idem;
    const char *reason = NULL;
    char span[17];
    it->started_ms = wr_mono_ms();
    int require_id = !(pol->enabled && (pol->source != WR_KEY_MESSAGE_ID || pol->missing_key_hash));
    int rc = wr_envelope_decode(it->d, w->max_body, require_id, &it->env, &reason, it->error,
                                sizeof(it->error));
    if (wr_sign_check(&w->sign, it->d, &it->env) != 0) {
        it->forged = 1;
        wr_stat_add(&w->st->forged, 1);
        wr_logline l;
        wr_log_begin(&l, WR_LOG_WARN, "x-warren-* headers not signed by warren: ignored");
        wr_log_str(&l, "subscription", w->sub->name);
        wr_log_int(&l, "worker", w->index);
        wr_log_strn(&l, "message_id", it->env.id.bytes, it->env.id.len);
        wr_log_end(&l);
    }
    it->attempt = it->env.attempt;
    int traced = wr_trace_parse(it->env.traceparent, it->trace_id, span) == 0;
    wr_reason key_rs = WR_RS_NONE;
    if (rc == 0 && pol->enabled &&
        (key_rs = wr_idkey_derive(pol, &it->env, it->key, sizeof(it->key), it->error,
                                  sizeof(it->error))) != WR_RS_NONE) {
        reason = wr_reason_name(key_rs); /* missing-idempotency-key or invalid-json */
        rc = -1;
    }
    if (rc == 0) {
        /* a CloudEvent, then its contract (contracts.h), as `warren exec` does */
        wr_reason crs = wr_contracts_admit(w->contracts, &w->sub->contracts, &it->env, &it->ce,
                                           &it->upcast_from, NULL, it->error, sizeof(it->error));
        if (crs != WR_RS_NONE) {
            reason = wr_reason_name(crs);
            rc = -1;
        }
    }
    /* no traceparent: one trace per input (its id), whichever subscription has it */
    if (!traced && wr_trace_derive(it->env.id, it->key, it->trace_id) != 0) {
        hex_rand(w, it->trace_id, 32);
    }
    if (rc != 0) {
        it->rs = wr_reason_parse(reason);
        snprintf(it->reason, sizeof(it->reason), "%s", reason);
        it->outcome = "invalid";
        it->act = WR_ACT_DLQ;
        it->dec = (wr_decision){
            .action = WR_ACT_DLQ, .done_outcome = "dead-lettered", .error_class = "invalid"};
        it->key[0] = '\0';
        return;
    }
    it->valid = 1;
    const wr_ordering_policy *op = &w->sub->ordering;
    if (w->lanes != NULL) {
        /* a message without an ordering key runs in no lane */
        wr_idem_policy by = {.enabled = 1, .source = op->source, .key_arg = op->key_arg};
        char why[200];
        if (wr_idkey_derive(&by, &it->env, it->okey, sizeof(it->okey), why, sizeof(why)) !=
            WR_RS_NONE) {
            it->okey[0] = '\0';
        }
    }
    if (pol->enabled &&
        wr_record_key(pol->prefix, w->sub->name, it->key, it->rkey, sizeof(it->rkey)) < 0) {
        it->rkey[0] = '\0'; /* cannot happen: the key's length is bounded */
    }
}

static int lane_hold(wr_worker *w, batch *bt, item *it);

/*
 * Upcast IT (an older version its contract lists) to the current version:
 * its contract's upcasters run in the worker's Lua state (lua_rt.h), and the
 * result must validate against the current schema. Returns the new body
 * (malloc'd; IT's envelope then shows the current and the original version),
 * or NULL with the reason in IT->error.
 */
static char *upcast(wr_worker *w, item *it, size_t *len)
{
    return wr_contracts_upcast_envelope(w->contracts, w->lua, &it->env, it->upcast_from, len,
                                        it->error, sizeof(it->error), NULL, NULL);
}

/*
 * contracts.validate_outgoing: check each event RES publishes against its
 * type's current contract. Returns WR_OUT_OK, or WR_OUT_INVALID with RES's
 * reason (schema-invalid) and error naming the event: the handler's own
 * message fails, permanently, instead of the next service's.
 */
static wr_outcome check_outgoing(wr_worker *w, wr_lua_result *res)
{
    for (int i = 0; i < res->pub_count; i++) {
        const wr_lua_pub *p = &res->pubs[i];
        const char *type = p->ce_type ? p->ce_type : p->type ? p->type : p->routing_key;
        char detail[900];
        if (wr_contracts_validate_outgoing(w->contracts, type, strlen(type), p->body, p->body_len,
                                           detail, sizeof(detail)) < 0) {
            snprintf(res->reason, sizeof(res->reason), "%s", wr_reason_name(WR_RS_SCHEMA_INVALID));
            snprintf(res->error, sizeof(res->error),
                     "ctx.publish #%d does not match its contract: %s", i + 1, detail);
            res->outcome = WR_OUT_INVALID;
            return WR_OUT_INVALID;
        }
    }
    return WR_OUT_OK;
}

/*
 * Run IT's handler and decide what happens to it (decide.h). Publishes what
 * the outcome needs. Returns a WR_BROKER_* code (DOWN stops the batch:
 * nothing more is acked).
 */
static int run_one(wr_worker *w, batch *bt, item *it)
{
    snprintf(it->tracestate, sizeof(it->tracestate), "%.*s", (int)it->env.tracestate.len,
             (const char *)it->env.tracestate.bytes);
    wr_lua_call call = {.cloudevent = it->ce.attributes,
                        .idempotency_key = it->key[0] ? it->key : NULL,
                        .trace_id = it->trace_id,
                        .tracestate = it->tracestate[0] ? it->tracestate : NULL,
                        .attempt = it->attempt};
    int idx = (int)(it - bt->items);
    if (w->sub->idem.enabled && w->idem != NULL) {
        /* ctx.store: this item's own buffer, reads on this worker's Redis connection */
        w->store.buf = bt->stores[idx];
        bt->links[idx].w = w;
        bt->links[idx].b = bt;
        bt->links[idx].index = idx;
        w->store.fetch_ud = &bt->links[idx];
        call.store = &w->store;
    }
    char idbuf[WR_IDKEY_MAX + 1];
    if (call.idempotency_key == NULL) {
        snprintf(idbuf, sizeof(idbuf), "%.*s", (int)it->env.id.len, (const char *)it->env.id.bytes);
        call.idempotency_key = idbuf;
    }
    it->started_ms = wr_mono_ms();
    amqp_bytes_t body = it->env.body;
    char *upcast_body = NULL;
    if (it->upcast_from > 0) {
        size_t len = 0;
        if ((upcast_body = upcast(w, it, &len)) == NULL) {
            /* the upcaster failed or its result is not the current version: DLQ at once */
            it->duration_ms = wr_mono_ms() - it->started_ms;
            it->out = WR_OUT_INVALID;
            it->outcome = wr_outcome_name(WR_OUT_INVALID);
            it->rs = WR_RS_UPCAST_FAILED;
            snprintf(it->reason, sizeof(it->reason), "%s", wr_reason_name(WR_RS_UPCAST_FAILED));
            it->dec = wr_decide(WR_OUT_INVALID, it->attempt, &w->retry, &w->tiers, -1, 0, 0);
            it->act = it->dec.action;
            return publish_copy(w, bt, it, it->dec.error_class);
        }
        it->env.body = (amqp_bytes_t){.len = len, .bytes = upcast_body};
    }
    wr_lua_result res;
    wr_outcome out = wr_lua_handle(w->lua, &it->env, &call, &res);
    it->env.body = body;
    free(upcast_body);
    if (out == WR_OUT_OK && w->contracts != NULL && w->sub->contracts.validate_outgoing) {
        out = check_outgoing(w, &res);
    }
    it->duration_ms = wr_mono_ms() - it->started_ms;
    it->out = out;
    it->ran = 1;
    if (out != WR_OUT_INVALID) { /* an undecodable body never reaches the handler */
        wr_hist_observe(&w->st->handler, it->duration_ms / 1000);
    }
    atomic_store(&w->st->beat_ms, (long long)wr_mono_ms());
    if (res.rebuild) {
        rebuild_lua(w);
    }
    it->outcome = wr_outcome_name(out);
    it->rs = wr_reason_parse(res.reason);
    it->dependency = res.dependency;
    snprintf(it->reason, sizeof(it->reason), "%s", res.reason);
    snprintf(it->error, sizeof(it->error), "%s", res.error);
    double r = (double)(next_rand(w) >> 11) / 9007199254740992.0; /* [0, 1) */
    it->dec = wr_decide(out, it->attempt, &w->retry, &w->tiers, res.retry_delay_ms, r,
                        atomic_load(&w->flags->abort));
    it->act = it->dec.action;
    switch (it->act) {
    case WR_ACT_OK:
        return publish_outgoing(w, bt, it, &res);
    case WR_ACT_RETRY:
        it->tier = it->dec.tier;
        it->delay_ms = it->dec.delay_ms;
        if (lane_hold(w, bt, it) != 0) {
            return PAUSE; /* its key's later messages must not run ahead of its retry */
        }
        return publish_copy(w, bt, it, it->dec.error_class);
    case WR_ACT_DLQ:
        return publish_copy(w, bt, it, it->dec.error_class);
    default:
        return WR_BROKER_OK; /* interrupted by shutdown: back untouched */
    }
}

/* What to do with IT's record once its copies are confirmed. */
static wr_finish_op finish_op_of(const item *it)
{
    switch (it->act) {
    case WR_ACT_OK:
    case WR_ACT_DLQ:
        return WR_FINISH_DONE;
    case WR_ACT_RETRY:
        return WR_FINISH_RELEASE;
    default:
        return WR_FINISH_UNCLAIM; /* it never reached an outcome here: not a crashed run */
    }
}

/* ---- logging and counting ---------------------------------------------------------- */

static int item_confirmed(const wr_worker *w, const item *it)
{
    for (uint64_t s = it->pub_first; s < it->pub_end; s++) {
        if (wr_broker_confirm_state(w->b, s) != WR_PUB_ACKED) {
            return 0;
        }
    }
    return 1;
}

static void log_item(const wr_worker *w, const item *it, wr_log_level level)
{
    if (!wr_log_enabled(level)) {
        return;
    }
    static const char *const msgs[] = {
        [WR_ACT_NONE] = "message returned to the queue",
        [WR_ACT_OK] = "message handled",
        [WR_ACT_DLQ] = "message dead-lettered",
        [WR_ACT_RETRY] = "message scheduled for retry",
        [WR_ACT_WAIT] = "message deferred: another worker holds its key",
        [WR_ACT_DUPLICATE] = "duplicate message skipped",
        [WR_ACT_PARKED] = "message parked", /* (the lookup read past the table) */
    };
    wr_logline l;
    wr_log_begin(&l, level,
                 it->act == WR_ACT_WAIT && it->defer_why != NULL ? it->defer_why : msgs[it->act]);
    wr_log_str(&l, "subscription", w->sub->name);
    wr_log_int(&l, "worker", w->index);
    wr_log_strn(&l, "message_id", it->env.id.bytes, it->env.id.len);
    if (it->key[0] && (it->env.id.len != strlen(it->key) ||
                       memcmp(it->env.id.bytes, it->key, it->env.id.len) != 0)) {
        wr_log_str(&l, "idempotency_key", it->key);
    }
    wr_log_strn(&l, "type", it->env.type.bytes, it->env.type.len);
    wr_log_str(&l, "outcome", wr_action_name(it->act));
    int failed = it->act == WR_ACT_DLQ || it->act == WR_ACT_RETRY || it->act == WR_ACT_NONE;
    if (failed && it->reason[0]) {
        wr_log_str(&l, "reason", it->reason);
    }
    if (failed && it->error[0]) {
        wr_log_str(&l, "error", it->error);
    }
    if (it->act == WR_ACT_RETRY || it->act == WR_ACT_WAIT) {
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
    if (it->act == WR_ACT_OK && it->pub_end > it->pub_first) {
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

/* Count how IT ended. */
static void count_item(wr_worker *w, const item *it)
{
    wr_met_outcome o = WR_MO_RETURNED;
    switch (it->act) {
    case WR_ACT_OK:
        o = WR_MO_OK;
        break;
    case WR_ACT_RETRY:
        o = WR_MO_RETRIED;
        if (it->attempt >= 1 && it->attempt <= WR_MET_MAX_ATTEMPT) {
            wr_stat_add(&w->st->retries[it->attempt], 1);
        }
        break;
    case WR_ACT_DUPLICATE:
        o = WR_MO_DUPLICATE;
        break;
    case WR_ACT_WAIT:
        o = WR_MO_DEFERRED;
        break;
    case WR_ACT_NONE:
        o = WR_MO_RETURNED;
        break;
    case WR_ACT_PARKED:
        o = WR_MO_PARKED;
        break;
    case WR_ACT_DLQ: {
        /* counted under the code its DLQ copy carries (x-warren-reason) */
        wr_reason r = it->rs > WR_RS_NONE && it->rs < WR_RS_COUNT ? it->rs : WR_RS_OTHER;
        o = WR_MO_DEAD_LETTERED;
        if (!it->valid || it->out == WR_OUT_INVALID) {
            o = WR_MO_INVALID;
        } else if (it->out == WR_OUT_REJECT && it->rs != WR_RS_CRASHED &&
                   it->rs != WR_RS_STORE_REFUSED) {
            o = WR_MO_REJECTED;
        }
        wr_stat_add(&w->st->dead_letters[r], 1);
        break;
    }
    }
    wr_stat_add(&w->st->outcomes[o], 1);
}

/*
 * The journal entry of IT (journal.h): what the batch decided, and for a
 * first attempt when it arrived. NOW is the wall clock, MONO the monotonic
 * clock, both read once for the batch. Returns a malloc'd string, or NULL.
 */
static char *journal_text(const wr_worker *w, const item *it, int64_t now, double mono)
{
    wr_journal_entry e = wr_journal_entry_init(wr_action_name(it->act));
    e.ts_ms = now;
    e.worker = w->index;
    e.message_id = it->env.id.bytes;
    e.message_id_len = it->env.id.len;
    e.trace_id = it->trace_id;
    e.attempt = it->attempt;
    e.replay = wr_table_get_str(it->env.headers, "x-warren-replayed-at").len > 0;
    if (it->attempt <= 1 && it->act != WR_ACT_DUPLICATE) {
        /* when it started here (its handler's start, or its decoding) */
        e.received_ms = now - (int64_t)(mono - it->started_ms);
        e.type = it->env.type.bytes;
        e.type_len = it->env.type.len;
        e.redelivered = it->env.redelivered;
    }
    if (it->act == WR_ACT_DLQ || it->act == WR_ACT_RETRY || it->act == WR_ACT_NONE ||
        it->act == WR_ACT_PARKED) {
        e.reason = it->reason;
        e.error = it->error; /* parked: "waiting for <after> of <key>" */
    }
    if (it->act == WR_ACT_RETRY || it->act == WR_ACT_WAIT) {
        e.delay_ms = it->delay_ms;
        e.queue =
            w->topo
                .queues[it->act == WR_ACT_RETRY ? w->topo.tier_queue[it->tier] : w->topo.wait_queue]
                .name;
    } else if (it->act == WR_ACT_DLQ) {
        e.queue = w->sub->dlq;
    }
    if (it->duration_ms > 0) {
        /* the handler ran: how long, and which version */
        e.duration_ms = it->duration_ms;
        e.handler_version = w->lua ? wr_lua_version(w->lua) : NULL;
    }
    if (it->act == WR_ACT_OK) {
        e.published = (int)(it->pub_end - it->pub_first);
    }
    char *fields = e.received_ms > 0 && w->sub->trace_field_count > 0
                       ? wr_idkey_fields(w->sub->trace_fields, w->sub->trace_field_count, &it->env)
                       : NULL;
    e.fields = fields;
    char *text = wr_journal_encode(&e);
    free(fields);
    return text;
}

/* ---- records ------------------------------------------------------------------------ */

/* Keep record KEY as an orphan, to give back (OP) when Redis answers again. */
static void orphan(wr_worker *w, const char *key, wr_finish_op op, int starts)
{
    if (w->orphan_count == w->orphan_cap) {
        int cap = w->orphan_cap ? w->orphan_cap * 2 : 64;
        struct orphan *o = realloc(w->orphans, sizeof(*o) * (size_t)cap);
        if (o == NULL) {
            return; /* the record runs out with its lease */
        }
        w->orphans = o;
        w->orphan_cap = cap;
    }
    atomic_fetch_add(&w->flags->orphans, 1);
    struct orphan *o = &w->orphans[w->orphan_count++];
    snprintf(o->key, sizeof(o->key), "%s", key);
    o->op = op;
    o->starts = starts;
}

/* Give back the orphans (Redis answers again). Returns 0, or -1 on failure. */
static int unclaim_orphans(wr_worker *w)
{
    if (w->orphan_count == 0 || w->idem == NULL) {
        return 0;
    }
    if (scratch_room(w, w->orphan_count) != 0) {
        return -1;
    }
    for (int i = 0; i < w->orphan_count; i++) {
        w->scratch[i] = (wr_finish){
            .key = w->orphans[i].key, .op = w->orphans[i].op, .starts = w->orphans[i].starts};
    }
    const wr_idem_policy *pol = &w->sub->idem;
    if (wr_idem_finish(w->idem, w->scratch, w->orphan_count, w->token, pol->lease_ms,
                       pol->ttl_ms) != 0) {
        return -1;
    }
    atomic_fetch_sub(&w->flags->orphans, w->orphan_count);
    w->orphan_count = 0;
    return 0;
}

/*
 * Read what the calls of BT still owe (its claim, its commit), so the
 * connection can be used for something else. Results are kept in BT. Returns
 * 0, or -1 when Redis failed.
 */
static int drain_calls(wr_worker *w, batch *bt)
{
    int rc = 0;
    if (bt->claim_sent) {
        bt->claim_sent = 0;
        if (wr_idem_claim_recv(w->idem, bt->claims, bt->nclaims) != 0) {
            rc = -1;
        }
    }
    if (bt->commit_sent && !bt->commit_read) {
        bt->commit_read = 1;
        bt->frc = bt->nfin > 0 ? wr_idem_finish_recv(w->idem, bt->fin, bt->nfin) : 0;
        if (bt->frc == -1) {
            rc = -1;
        }
    }
    return rc;
}

/*
 * Give back the records of a batch that will not finish here (the broker
 * connection dropped; Redis failed), so whoever gets the messages next claims
 * them at once, and the crash-loop guard does not take a lost connection for a
 * crash. With Redis away the keys are kept as orphans and given back when it
 * answers again (see ensure_redis). A record whose commit went out may be done
 * already: giving it back then changes nothing (the script checks the state).
 */
static void unclaim_batch(wr_worker *w, batch *bt, int redis_down)
{
    if (!w->sub->idem.enabled) {
        return;
    }
    if (w->idem == NULL) {
        redis_down = 1;
    }
    if (!redis_down && drain_calls(w, bt) != 0) {
        redis_down = 1;
    }
    if (scratch_room(w, bt->n) != 0) {
        return;
    }
    int k = 0;
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (!it->claimed || it->held) {
            continue;
        }
        /* a message retried through a delay queue did start; one going back did not
         * reach an outcome here, which is not a crash either */
        wr_finish_op op = it->act == WR_ACT_RETRY ? WR_FINISH_RELEASE : WR_FINISH_UNCLAIM;
        if (redis_down) {
            orphan(w, it->rkey, op, it->starts);
            continue;
        }
        w->scratch[k++] = (wr_finish){.key = it->rkey, .op = op, .starts = it->starts};
    }
    if (k > 0) {
        const wr_idem_policy *pol = &w->sub->idem;
        if (wr_idem_finish(w->idem, w->scratch, k, w->token, pol->lease_ms, pol->ttl_ms) == -1) {
            for (int c = 0; c < k; c++) {
                orphan(w, w->scratch[c].key, w->scratch[c].op, w->scratch[c].starts);
            }
        }
    }
}

/* ---- a batch's life ------------------------------------------------------------------ */

/* Release BT's deliveries and keys and make it empty. */
static void batch_clear(wr_worker *w, batch *bt)
{
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (it->inflight) {
            wr_inflight_remove(w->inflight, it->rkey);
            it->inflight = 0;
        }
        if (!it->held && bt->taken[i] != NULL) {
            wr_broker_release(bt->taken[i]);
        }
        bt->taken[i] = NULL;
        free(bt->entries[i]);
        bt->entries[i] = NULL;
    }
    bt->n = 0;
    bt->live = 0;
    bt->claim_sent = bt->commit_sent = bt->commit_read = 0;
    bt->nclaims = bt->nfin = 0;
    bt->frc = 0;
    bt->seq_first = bt->seq_end = 0;
    recycle_amqp_pool(&bt->pool);
}

/* Forget the copies held back (their deliveries are gone with the connection,
 * or were given back). */
static void drop_held(wr_worker *w)
{
    for (int i = 0; i < w->nheld; i++) {
        wr_broker_release(w->held[i].d);
    }
    w->nheld = 0;
}

/* How far items[I]'s record got in BT's commit: 1 its outcome is stored as
 * done (a redelivery is skipped as a duplicate), 0 not, -1 unknown (the commit
 * went out and its answer never came). */
static int record_done(const wr_worker *w, const batch *bt, int i)
{
    if (!w->sub->idem.enabled || !bt->commit_sent) {
        return 0;
    }
    if (!bt->commit_read || bt->frc != 0) {
        return bt->nfin > 0 ? -1 : 0;
    }
    for (int k = 0; k < bt->nfin; k++) {
        const wr_finish *f = &bt->fin[k];
        if (bt->fmap[k] == i) {
            return f->op == WR_FINISH_DONE && f->owned && !f->refused && !f->conflict;
        }
    }
    return 0;
}

/*
 * Say, for each message of BT whose handler ran, that it goes back to the
 * queue and what its redelivery will do: the line an operator finds when a
 * message ran twice. Called before the records are given back.
 */
static void log_returned(wr_worker *w, batch *bt, int redis_down, const char *why)
{
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (!it->ran || it->held) {
            continue;
        }
        int done = record_done(w, bt, i);
        const char *what =
            done == 1    ? "not acknowledged, its outcome is stored (the redelivery is a duplicate)"
            : done == -1 ? "the idempotency record may not have been written"
            : !w->sub->idem.enabled ? "not acknowledged: it runs again"
            : redis_down            ? "the idempotency record could not be written"
                         : "the broker connection was lost before its outcome was stored";
        snprintf(it->error, sizeof(it->error), "%s: %s", what, why);
        wr_action act = it->act; /* unclaim_batch still reads it (a retry's release) */
        it->act = WR_ACT_NONE;
        count_item(w, it);
        log_item(w, it, WR_LOG_WARN);
        it->act = act;
    }
}

/*
 * Abandon both batches: nothing of them is acked; with the connection still
 * up their deliveries go back to the queue (so does every held copy), and
 * their records are given back (REDIS_DOWN: kept as orphans).
 */
static void abandon(wr_worker *w, int redis_down, const char *why)
{
    int n = 0;
    for (int b = 0; b < 2; b++) {
        n += w->batches[b].live ? w->batches[b].n : 0;
    }
    if (n > 0) {
        wr_logline l;
        wr_log_begin(&l, WR_LOG_ERROR,
                     redis_down ? "Redis failed mid-batch: messages returned to the queue"
                                : "broker connection lost mid-batch; nothing acked");
        wr_log_str(&l, "subscription", w->sub->name);
        wr_log_int(&l, "worker", w->index);
        wr_log_str(&l, "error", why);
        wr_log_int(&l, "batch", n);
        wr_log_end(&l);
    }
    /* the older batch first: its commit was sent before the newer one's */
    batch *order[2] = {&w->batches[w->cur ^ 1], &w->batches[w->cur]};
    for (int b = 0; b < 2; b++) {
        batch *bt = order[b];
        if (!bt->live) {
            continue;
        }
        log_returned(w, bt, redis_down, why);
        unclaim_batch(w, bt, redis_down);
        for (int i = 0; w->b != NULL && i < bt->n; i++) {
            if (!bt->items[i].held) {
                wr_broker_nack(w->b, bt->items[i].d->delivery_tag, 0, 1);
            }
        }
        batch_clear(w, bt);
    }
    for (int i = 0; w->b != NULL && i < w->nheld; i++) {
        wr_broker_nack(w->b, w->held[i].d->delivery_tag, 0, 1);
    }
    drop_held(w);
    if (w->lanes != NULL) {
        wr_lanes_clear(w->lanes); /* every delivery went back, in order */
    }
    atomic_store(&w->st->busy, 0);
    atomic_store(&w->st->in_flight, 0);
}

/*
 * Take BT's deliveries: first the held-back copies whose twin is finished,
 * then what the broker has buffered (waiting up to TIMEOUT_MS when there is
 * nothing). Returns a WR_BROKER_* code.
 */
static int take(wr_worker *w, batch *bt, int timeout_ms)
{
    int max = w->sub->batch_size;
    bt->n = 0;
    bt->again = 0;
    for (int i = 0; i < w->nheld && bt->n < max;) {
        if (!wr_inflight_has(w->inflight, w->held[i].rkey)) {
            bt->taken[bt->n++] = w->held[i].d;
            bt->again++;
            memmove(&w->held[i], &w->held[i + 1], sizeof(*w->held) * (size_t)(w->nheld - i - 1));
            w->nheld--;
        } else {
            i++;
        }
    }
    int got = 0;
    int rc = WR_BROKER_OK;
    if (bt->n < max) {
        rc = wr_broker_take(w->b, bt->taken + bt->n, max - bt->n, bt->n > 0 ? 0 : timeout_ms, &got);
    }
    bt->n += got;
    /* half-open: the probe should find the fresh messages queued behind the
     * retries (run_batch), which the broker sends in the same burst: give the
     * rest of that burst a moment to arrive */
    for (int extra = 0; rc == WR_BROKER_OK && got > 0 && bt->n < max && extra < 3 &&
                        wr_shared_brk_state(w->brk) == WR_BRK_HALF_OPEN;
         extra++) {
        got = 0;
        rc = wr_broker_take(w->b, bt->taken + bt->n, max - bt->n, 10, &got);
        bt->n += got;
    }
    if (rc != WR_BROKER_OK) {
        /* the deliveries die with the connection */
        for (int i = 0; i < bt->n; i++) {
            wr_broker_release(bt->taken[i]);
        }
        bt->n = 0;
    }
    return rc;
}

/*
 * Decode BT's items, hold back second copies of keys in flight here, and
 * publish the DLQ copies of the undecodable ones. Returns a WR_BROKER_* code.
 */
static int prepare_batch(wr_worker *w, batch *bt)
{
    const wr_idem_policy *pol = &w->sub->idem;
    bt->live = 1;
    wr_stat_add(&w->st->received, (uint64_t)(bt->n - bt->again));
    atomic_store(&w->st->in_flight, bt->n);
    atomic_store(&w->st->beat_ms, (long long)wr_mono_ms());
    atomic_store(&w->st->busy, 1);
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        wr_cloudevent_clear(&it->ce);
        memset(it, 0, sizeof(*it));
        it->d = bt->taken[i];
        wr_storebuf_reset(bt->stores[i]);
        wr_sb_result_free(&bt->links[i].held);
        prepare(w, it);
        if (it->env.timestamp > atomic_load(&w->st->newest_ts)) {
            atomic_store(&w->st->newest_ts, (long long)it->env.timestamp); /* status: lag */
        }
        if (it->valid && pol->enabled) {
            int r = wr_inflight_add(w->inflight, it->rkey);
            if (r == 1) {
                it->inflight = 1;
            } else if (r == 0 && w->nheld < w->sub->prefetch + w->sub->batch_size) {
                /* another copy of this key is in flight in this process: hold this one
                 * back until that one is finished, then claim it (inflight.h) */
                it->held = 1;
                w->held[w->nheld].d = it->d;
                snprintf(w->held[w->nheld].rkey, sizeof(w->held[w->nheld].rkey), "%s", it->rkey);
                w->nheld++;
                continue;
            }
            if (r != 1) {
                /* out of memory (or, which cannot happen, no room to hold it): never
                 * claim it with our token while a twin may hold the record, which
                 * would run it twice; back to the queue instead */
                it->returned = 1;
                it->act = WR_ACT_NONE;
                snprintf(it->error, sizeof(it->error),
                         "returned: could not note its key as in flight");
            }
        }
    }
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (it->act == WR_ACT_DLQ && !it->held) {
            int rc = publish_copy(w, bt, it, "invalid");
            if (rc != WR_BROKER_OK) {
                return rc;
            }
        }
    }
    return WR_BROKER_OK;
}

/* Send BT's claims (the valid items' keys). Returns 0, or -1 when Redis failed. */
static int claim_send(wr_worker *w, batch *bt)
{
    bt->nclaims = 0;
    if (!w->sub->idem.enabled) {
        return 0;
    }
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (it->valid && !it->held && !it->returned) {
            bt->claims[bt->nclaims].key = it->rkey;
            bt->cmap[bt->nclaims++] = i;
        }
    }
    if (bt->nclaims == 0) {
        return 0;
    }
    const wr_idem_policy *pol = &w->sub->idem;
    bt->claim_t0 = wr_mono_ms();
    if (wr_idem_claim_send(w->idem, bt->claims, bt->nclaims, w->token, pol->lease_ms,
                           pol->ttl_ms) != 0) {
        return -1;
    }
    bt->claim_sent = 1;
    return 0;
}

/* Read BT's claims and act on them. Returns 0, or -1 when Redis failed. */
static int claim_recv(wr_worker *w, batch *bt)
{
    if (!bt->claim_sent) {
        bt->leased_at = wr_mono_ms();
        return 0;
    }
    bt->claim_sent = 0;
    if (wr_idem_claim_recv(w->idem, bt->claims, bt->nclaims) != 0) {
        return -1;
    }
    bt->leased_at = wr_mono_ms();
    wr_hist_observe(&w->st->redis_claim, (bt->leased_at - bt->claim_t0) / 1000);
    for (int c = 0; c < bt->nclaims; c++) {
        item *it = &bt->items[bt->cmap[c]];
        const wr_claim *cl = &bt->claims[c];
        switch (cl->status) {
        case WR_CLAIM_DONE:
            it->act = WR_ACT_DUPLICATE;
            break;
        case WR_CLAIM_BUSY:
            /* another process's worker holds it: the wait queue brings it back */
            it->act = WR_ACT_WAIT;
            it->delay_ms = WR_TOPO_WAIT_MS;
            break;
        case WR_CLAIM_TAKEOVER:
            it->takeover = 1;
            /* fall through */
        case WR_CLAIM_ACQUIRED:
            it->claimed = 1;
            it->starts = cl->starts;
            /* Crash-loop guard: every claim counts a start; retries count attempts.
             * Starts beyond the attempts are runs that never reached an outcome
             * (the worker or the process died in the handler: a segfault in a C
             * module, an OOM kill). After max_attempts of those, the message goes
             * to the DLQ instead of killing the sidecar again. */
            if (it->starts - it->attempt >= w->retry.max_attempts) {
                it->act = WR_ACT_DLQ;
                it->dec = (wr_decision){.action = WR_ACT_DLQ,
                                        .done_outcome = "dead-lettered",
                                        .error_class = "crashed"};
                it->outcome = "crashed";
                set_reason(it, WR_RS_CRASHED);
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
 * Push out the leases of BT's claimed items from FROM on, when the batch has
 * run long. Items whose lease was lost are given back (WR_ACT_NONE). Returns
 * 0, or -1 when Redis failed.
 */
static int extend_leases(wr_worker *w, batch *bt, int from)
{
    /* one finish at a time on the connection: read the other batch's first */
    batch *other = other_batch(w, bt);
    if (other->live && drain_calls(w, other) != 0) {
        return -1;
    }
    if (scratch_room(w, bt->n) != 0) {
        return 0;
    }
    int k = 0;
    for (int i = from; i < bt->n; i++) {
        if (bt->items[i].claimed) {
            w->scratch[k] = (wr_finish){.key = bt->items[i].rkey, .op = WR_FINISH_EXTEND};
            bt->fmap[k++] = i;
        }
    }
    const wr_idem_policy *pol = &w->sub->idem;
    if (wr_idem_finish(w->idem, w->scratch, k, w->token, pol->lease_ms, pol->ttl_ms) != 0) {
        return -1;
    }
    for (int c = 0; c < k; c++) {
        if (!w->scratch[c].owned) {
            item *it = &bt->items[bt->fmap[c]];
            it->claimed = 0;
            it->act = WR_ACT_NONE;
            snprintf(it->error, sizeof(it->error), "lease lost before the handler ran");
        }
    }
    return 0;
}

/* ---- causal gates (gates.h) --------------------------------------------------------- */

#define GATE_RECHECK_MS 5000 /* a parked list is looked at by the sweep at least this often */
#define GATE_RETRY_MS 10000  /* a list being sent and not done by then is sent again */
#define GATE_SWEEP_MS 1000   /* how often worker 0 of a subscription sweeps */
#define GATE_KEY_MAX (RKEY_MAX + 600)

/* The gate key of IT under gate G into OUT. Returns 0, or -1 when it has none. */
static int gate_key_of(const wr_worker *w, const item *it, int g, char *out, size_t cap)
{
    const wr_gate *gt = &w->sub->gates[g];
    wr_idem_policy by = {.enabled = 1, .source = gt->source, .key_arg = gt->key_arg};
    char why[200];
    return wr_idkey_derive(&by, &it->env, out, cap, why, sizeof(why)) == WR_RS_NONE ? 0 : -1;
}

/* The subscription-wide keys of gate.lua: index, marks, sending, seq. */
static void gate_sub_keys(const wr_worker *w, char k[4][GATE_KEY_MAX])
{
    const char *pfx = w->sub->idem.prefix, *sub = w->sub->name;
    wr_gate_index_key(k[0], GATE_KEY_MAX, pfx, sub);
    wr_gate_marks_key(k[1], GATE_KEY_MAX, pfx, sub);
    snprintf(k[2], GATE_KEY_MAX, "%s~sending:%s", pfx, sub);
    snprintf(k[3], GATE_KEY_MAX, "%s~seq:%s", pfx, sub);
}

/* Run gate.lua with N keys and M arguments (C strings). NULL: Redis failed. */
static const redisReply *gate_call(wr_worker *w, int n, const char *const *keys, int m,
                                   const char *const *args, const size_t *arglens)
{
    size_t klens[8];
    for (int i = 0; i < n; i++) {
        klens[i] = strlen(keys[i]);
    }
    const redisReply *r = wr_idem_gate(w->idem, n, keys, klens, m, args, arglens);
    if (r == NULL) {
        wr_logf(WR_LOG_ERROR, "%s: causal gates: %s", w->name, wr_idem_error(w->idem));
    }
    return r;
}

/*
 * The entry to park for IT (gates.h: a copy that carries its route, as a wait
 * copy does, forged headers stripped; DEADLINE in ms, 0 for none) into *ENTRY
 * (malloc'd) and *ELEN. Returns 0; 1 when a forged header cannot be stripped
 * (IT is not parked); -1 when out of memory (IT goes back to the queue:
 * WR_ACT_NONE, with its error set).
 */
static int park_entry(wr_worker *w, batch *bt, item *it, int64_t deadline, char **entry,
                      size_t *elen)
{
    amqp_basic_properties_t props, clean;
    const amqp_basic_properties_t *orig = &it->d->message.properties;
    if (it->forged) {
        if (wr_dlq_strip_props(&bt->pool, orig, &clean) != 0) {
            return 1;
        }
        orig = &clean;
    }
    if (wr_dlq_build_wait_props(&bt->pool, orig, it->d->exchange, it->d->routing_key, &w->sign,
                                &props) != 0 ||
        wr_gate_entry_encode(&props, it->d->message.body, deadline, entry, elen) != 0) {
        it->act = WR_ACT_NONE;
        snprintf(it->error, sizeof(it->error), "returned: out of memory parking it");
        return -1;
    }
    return 0;
}

/* Log IT at gate G (key GKEY): LEVEL and MSG, with the type it waits for
 * (the gate's `after`) under FIELD. */
static void log_gate(const wr_worker *w, const item *it, int g, const char *gkey,
                     wr_log_level level, const char *msg, const char *field)
{
    wr_logline l;
    wr_log_begin(&l, level, msg);
    wr_log_str(&l, "subscription", w->sub->name);
    wr_log_int(&l, "worker", w->index);
    wr_log_strn(&l, "message_id", it->env.id.bytes, it->env.id.len);
    wr_log_strn(&l, "type", it->env.type.bytes, it->env.type.len);
    wr_log_str(&l, field, w->sub->gates[g].after);
    wr_log_str(&l, "gate_key", gkey);
    wr_log_str(&l, "trace_id", it->trace_id);
    wr_log_end(&l);
}

/*
 * IT is about to run. When its type waits on a gate (gates.h) whose "done
 * for key" mark is not there, park it and return 1 (IT is WR_ACT_PARKED; *RC
 * PAUSE when Redis failed); else 0: IT runs. The mark is read as a guarded
 * ctx.store read of IT's own buffer, so the earlier messages of the batch
 * count, and a mark that is not committed after all makes IT run again.
 */
static int gate_park(wr_worker *w, batch *bt, item *it, int *rc)
{
    *rc = WR_BROKER_OK;
    const wr_subscription *sub = w->sub;
    if (sub->gate_count == 0 || w->idem == NULL || !sub->idem.enabled) {
        return 0;
    }
    int g = wr_gates_waiting(sub, it->env.type.bytes, it->env.type.len);
    char gkey[WR_IDKEY_MAX + 1], mark[GATE_KEY_MAX], list[GATE_KEY_MAX];
    if (g < 0 || gate_key_of(w, it, g, gkey, sizeof(gkey)) != 0 ||
        wr_gate_mark_key(mark, sizeof(mark), sub->idem.prefix, sub->name, sub->gates[g].after,
                         gkey) < 0 ||
        wr_gate_park_key(list, sizeof(list), sub->idem.prefix, sub->name, g, gkey) < 0) {
        return 0; /* not gated, or no key to wait on */
    }
    int idx = (int)(it - bt->items);
    bt->links[idx] = (struct store_link){.w = w, .b = bt, .index = idx};
    wr_sb_result res = {0};
    char err[256];
    if (wr_storebuf_read(bt->stores[idx], "EXISTS", (wr_sbstr){mark, strlen(mark)},
                         (wr_sbstr){"", 0}, chained_fetch, &bt->links[idx], &res, err,
                         sizeof(err)) != 0) {
        wr_logf(WR_LOG_ERROR, "%s: causal gates: %s", w->name, err);
        *rc = PAUSE;
        return 1;
    }
    int done = res.num == 1;
    wr_sb_result_free(&res);
    if (done) {
        return 0;
    }
    /* park a copy that carries its route, as a wait copy does */
    char *entry = NULL;
    size_t elen = 0;
    int enc = park_entry(w, bt, it, wr_now_ms() + sub->gates[g].timeout_ms, &entry, &elen);
    if (enc != 0) {
        return enc > 0 ? 0 : 1;
    }
    char k[4][GATE_KEY_MAX], pass[GATE_KEY_MAX];
    gate_sub_keys(w, k);
    /* a message released past this gate's timeout (on_timeout: run) shows its pass */
    const amqp_basic_properties_t *dp = &it->d->message.properties;
    amqp_bytes_t tok = (dp->_flags & AMQP_BASIC_HEADERS_FLAG)
                           ? wr_table_get_str(&dp->headers, WR_GATE_PASS_HEADER)
                           : amqp_empty_bytes;
    int has_pass =
        wr_gate_pass_key(pass, sizeof(pass), sub->idem.prefix, sub->name, tok.bytes, tok.len) >= 0;
    const char *keys[5] = {mark, list, k[0], k[1], pass};
    char recheck[24];
    snprintf(recheck, sizeof(recheck), "%d", GATE_RECHECK_MS);
    const char *args[3] = {"park", entry, recheck};
    size_t lens[3] = {4, elen, strlen(recheck)};
    const redisReply *r = gate_call(w, 4 + has_pass, keys, 3, args, lens);
    free(entry);
    if (r == NULL) {
        *rc = PAUSE;
        return 1;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
        /* the mark was written meanwhile: run it, reading afresh */
        wr_storebuf_reset(bt->stores[idx]);
        return 0;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 2) {
        log_gate(w, it, g, gkey, WR_LOG_WARN,
                 "runs without its predecessor: released at its gate's timeout", "not_done");
        return 0;
    }
    it->act = WR_ACT_PARKED;
    wr_stat_add(&w->st->gate_parked[g], 1);
    snprintf(it->error, sizeof(it->error), "waiting for %s of %s", sub->gates[g].after, gkey);
    log_gate(w, it, g, gkey, WR_LOG_INFO, "parked behind a causal gate", "waiting_for");
    return 1;
}

/* IT was handled ok: its commit also writes the done mark of every gate that
 * waits for its type (one more write of its ctx.store buffer). */
static void gate_mark(wr_worker *w, batch *bt, item *it)
{
    const wr_subscription *sub = w->sub;
    if (sub->gate_count == 0 || w->idem == NULL || it->act != WR_ACT_OK) {
        return;
    }
    const char *t = it->env.type.bytes;
    size_t tn = it->env.type.len;
    for (int g = wr_gates_after(sub, t, tn, 0); g >= 0; g = wr_gates_after(sub, t, tn, g + 1)) {
        char gkey[WR_IDKEY_MAX + 1], mark[GATE_KEY_MAX], err[256];
        if (gate_key_of(w, it, g, gkey, sizeof(gkey)) != 0 ||
            wr_gate_mark_key(mark, sizeof(mark), sub->idem.prefix, sub->name, sub->gates[g].after,
                             gkey) < 0) {
            continue;
        }
        if (wr_storebuf_write(bt->stores[it - bt->items], WR_SB_SET, (wr_sbstr){mark, strlen(mark)},
                              (wr_sbstr){"1", 1}, (wr_sbstr){"", 0}, sub->idem.ttl_ms, err,
                              sizeof(err)) != 0) {
            wr_logf(WR_LOG_ERROR, "%s: causal gate: cannot write the done mark %s: %s", w->name,
                    mark, err);
            continue;
        }
        it->marks = 1;
    }
}

/*
 * A gate pass for the entries of "r" sending list KEY (gates.h): a random
 * token into TOKEN (33 bytes), its Redis key written. Returns 1, 0 when the
 * list is sent already (nothing to publish), -1 when Redis failed. The gate
 * call frees the reply of the last one: ENTRIES of gate_send must not be in
 * it (the sweep's groups are taken out of theirs).
 */
static int gate_pass(wr_worker *w, const char *key, char *token)
{
    unsigned char raw[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, raw, sizeof(raw)) : -1;
    if (fd >= 0) {
        close(fd);
    }
    if (got != (ssize_t)sizeof(raw)) {
        hex_rand(w, token, 32); /* no /dev/urandom: the worker's own generator */
    } else {
        for (int i = 0; i < 16; i++) {
            snprintf(token + 2 * i, 3, "%02x", raw[i]);
        }
    }
    token[32] = '\0';
    char pass[GATE_KEY_MAX], ttl[24];
    if (wr_gate_pass_key(pass, sizeof(pass), w->sub->idem.prefix, w->sub->name, token, 32) < 0) {
        return -1;
    }
    snprintf(ttl, sizeof(ttl), "%lld", (long long)w->sub->idem.ttl_ms);
    const char *keys[2] = {key, pass};
    const char *args[2] = {"pass", ttl};
    size_t lens[2] = {4, strlen(ttl)};
    const redisReply *r = gate_call(w, 2, keys, 2, args, lens);
    if (r == NULL) {
        return -1;
    }
    return r->type == REDIS_REPLY_INTEGER && r->integer == 1;
}

/* PROPS's headers with header NAME set to the string VALUE (from POOL).
 * Returns 0, or -1 when out of memory. */
static int with_header(amqp_pool_t *pool, amqp_basic_properties_t *props, const char *name,
                       const char *value)
{
    int n = (props->_flags & AMQP_BASIC_HEADERS_FLAG) ? props->headers.num_entries : 0;
    amqp_table_entry_t *e = amqp_pool_alloc(pool, sizeof(*e) * (size_t)(n + 1));
    if (e == NULL) {
        return -1;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        amqp_bytes_t k = props->headers.entries[i].key;
        if (k.len != strlen(name) || memcmp(k.bytes, name, k.len) != 0) {
            e[m++] = props->headers.entries[i];
        }
    }
    e[m].key = amqp_cstring_bytes(name);
    e[m].value.kind = AMQP_FIELD_KIND_UTF8;
    e[m++].value.value.bytes = amqp_cstring_bytes(value);
    props->headers = (amqp_table_t){.num_entries = m, .entries = e};
    props->_flags |= AMQP_BASIC_HEADERS_FLAG;
    return 0;
}

/* The DLQ copy of a parked entry (PROPS) past its gate's timeout (gate G, or
 * -1), or dead-lettered behind the dead-lettered head of its ordering key
 * (HOLDER, ordering.on_dlq: dlq_all), into DPROPS. */
static int gate_dlq_props(wr_worker *w, amqp_basic_properties_t *props, int g, const char *holder,
                          amqp_basic_properties_t *dprops)
{
    char error[700];
    if (holder != NULL) {
        snprintf(error, sizeof(error),
                 "ordering-head-dead-lettered: %.600s, an earlier message of its "
                 "ordering key, was dead-lettered",
                 holder);
    } else {
        snprintf(error, sizeof(error),
                 "gate-timeout: %s%s was not done for its key within the gate's timeout",
                 g >= 0 ? "its predecessor " : "its causal gate's predecessor",
                 g >= 0 ? w->sub->gates[g].after : "");
    }
    const char *why = holder != NULL ? "ordering-head-dead-lettered" : "gate-timeout";
    wr_failure f = {.reason = why,
                    .error_class = why,
                    .error = error,
                    .attempt = 1,
                    .now_ms = wr_now_ms(),
                    .subscription = w->sub->name,
                    .queue = w->sub->queue,
                    .handler = w->sub->handler,
                    .handler_version = w->lua ? wr_lua_version(w->lua) : NULL,
                    .sign = &w->sign};
    return wr_dlq_build_props(&w->gate_pool, props, amqp_empty_bytes,
                              amqp_cstring_bytes(w->sub->queue), &f, dprops);
}

/* Publish parked entry E of list KEY as gate_send does (KIND, TOKEN: the
 * pass of kind 'r', HOLDER). Sets *GATE to the entry's gate (or -1) and *SEQ
 * to its publish's sequence number. Returns a WR_BROKER_* code, or
 * GATE_DROPPED when the entry cannot be decoded (logged: it is dropped). */
static int gate_publish_one(wr_worker *w, char kind, const char *key, const redisReply *e,
                            const char *token, const char *holder, int *gate, uint64_t *seq)
{
    amqp_pool_t *pool = &w->gate_pool;
    amqp_basic_properties_t props, dprops;
    amqp_bytes_t body;
    int64_t deadline;
    char err[128];
    if (e->type != REDIS_REPLY_STRING || wr_gate_entry_decode(e->str, e->len, pool, &props, &body,
                                                              &deadline, err, sizeof(err)) != 0) {
        wr_logf(WR_LOG_ERROR, "%s: causal gate: dropping a parked entry of %s: %s", w->name, key,
                e->type == REDIS_REPLY_STRING ? err : "not a string");
        return GATE_DROPPED;
    }
    /* the broker keeps the message id until the publish is released */
    if (props._flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
        void *id = amqp_pool_alloc(pool, props.message_id.len);
        if (id == NULL && props.message_id.len > 0) {
            return WR_BROKER_DOWN;
        }
        memcpy(id, props.message_id.bytes, props.message_id.len);
        props.message_id.bytes = id;
    }
    const amqp_basic_properties_t *use = &props;
    const char *exchange = w->topo.back_exchange; /* its queue, or its partition */
    const char *queue = w->topo.back_routing_key;
    if (kind == 'r' && with_header(pool, &props, WR_GATE_PASS_HEADER, token) != 0) {
        return WR_BROKER_DOWN;
    }
    *gate = (props._flags & AMQP_BASIC_TYPE_FLAG)
                ? wr_gates_waiting(w->sub, props.type.bytes, props.type.len)
                : -1;
    if (kind == 'd') {
        if (gate_dlq_props(w, &props, *gate, holder, &dprops) != 0) {
            return WR_BROKER_DOWN;
        }
        use = &dprops;
        exchange = "";
        queue = w->sub->dlq;
    }
    return wr_broker_publish(w->b, amqp_cstring_bytes(exchange), amqp_cstring_bytes(queue), 1, use,
                             body, seq);
}

/* The line gate_send logs for COUNT entries of KIND (HOLDER) it sent. */
static void gate_sent_log(const wr_worker *w, char kind, const char *holder, int count)
{
    wr_logline l;
    wr_log_begin(&l, kind == 'o' ? WR_LOG_INFO : WR_LOG_WARN,
                 kind == 'o'      ? "parked messages released"
                 : kind == 'r'    ? "parked messages released: gate-timeout, to run without their "
                                    "predecessor"
                 : holder == NULL ? "parked messages dead-lettered: gate-timeout"
                                  : "parked messages dead-lettered: ordering-head-dead-lettered");
    wr_log_str(&l, "subscription", w->sub->name);
    wr_log_int(&l, "worker", w->index);
    wr_log_int(&l, "count", count);
    if (kind != 'o' && holder == NULL) {
        wr_log_str(&l, "action", kind == 'r' ? "run" : "dlq"); /* the gate's on_timeout */
    }
    wr_log_end(&l);
}

/*
 * Publish the entries of sending list KEY (gate.lua's take or sweep) back to
 * the queue (KIND 'o'; KIND 'r': past the timeout of a gate whose on_timeout
 * is run, each with a pass, gates.h) or to the DLQ (KIND 'd': past their
 * gate's timeout), wait for the confirms, then tell Redis they are sent. Returns a
 * WR_BROKER_* code, or PAUSE when Redis failed. Entries that cannot be
 * decoded are logged and dropped.
 */
static int gate_send(wr_worker *w, char kind, const char *key, redisReply *const *entries, size_t n,
                     const char *holder)
{
    uint64_t first = wr_broker_next_seq(w->b), end = first;
    int sent = 0;
    uint64_t per_gate[WR_MAX_GATES] = {0}; /* the entries sent, by gate */
    char token[33] = "";
    if (kind == 'r') {
        int p = gate_pass(w, key, token);
        if (p < 0) {
            return PAUSE;
        }
        n = p == 0 ? 0 : n; /* sent already: nothing to publish */
    }
    for (size_t i = 0; i < n; i++) {
        int g = -1;
        uint64_t seq;
        int rc = gate_publish_one(w, kind, key, entries[i], token, holder, &g, &seq);
        if (rc == GATE_DROPPED) {
            continue;
        }
        if (rc != WR_BROKER_OK) {
            return rc;
        }
        end = seq + 1;
        sent++;
        if (g >= 0 && g < WR_MAX_GATES) {
            per_gate[g]++;
        }
    }
    w->gate_seq_end = end > w->gate_seq_end ? end : w->gate_seq_end;
    if (end > first) {
        if (wr_broker_confirm_wait(w->b, end, CONFIRM_TIMEOUT_MS) != WR_BROKER_OK) {
            return WR_BROKER_DOWN;
        }
        for (uint64_t s = first; s < end; s++) {
            if (wr_broker_confirm_state(w->b, s) != WR_PUB_ACKED) {
                /* left in Redis: the sweep sends the list again */
                wr_logf(WR_LOG_ERROR, "%s: causal gate: the broker did not take a copy of %s",
                        w->name, key);
                return WR_BROKER_OK;
            }
        }
    }
    char k[4][GATE_KEY_MAX];
    gate_sub_keys(w, k);
    const char *keys[2] = {key, k[2]};
    const char *args[1] = {"sent"};
    size_t lens[1] = {4};
    if (gate_call(w, 2, keys, 1, args, lens) == NULL) {
        return PAUSE;
    }
    for (int g = 0; holder == NULL && g < w->sub->gate_count && g < WR_MAX_GATES; g++) {
        /* a lane's hand-over (HOLDER) is no gate's release */
        wr_stat_add(kind == 'o' ? &w->st->gate_released[g] : &w->st->gate_timeouts[g], per_gate[g]);
    }
    gate_sent_log(w, kind, holder, sent);
    return WR_BROKER_OK;
}

/* BT's commit is read: release what its done marks were waiting for. Returns
 * a WR_BROKER_* code or PAUSE. */
static int gate_release(wr_worker *w, batch *bt)
{
    const wr_subscription *sub = w->sub;
    if (sub->gate_count == 0 || w->idem == NULL) {
        return WR_BROKER_OK;
    }
    char k[4][GATE_KEY_MAX];
    gate_sub_keys(w, k);
    char retry[24];
    snprintf(retry, sizeof(retry), "%d", GATE_RETRY_MS);
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (!it->marks || it->act != WR_ACT_OK || it->held) {
            continue;
        }
        const char *t = it->env.type.bytes;
        size_t tn = it->env.type.len;
        for (int g = wr_gates_after(sub, t, tn, 0); g >= 0; g = wr_gates_after(sub, t, tn, g + 1)) {
            char gkey[WR_IDKEY_MAX + 1], list[GATE_KEY_MAX];
            if (gate_key_of(w, it, g, gkey, sizeof(gkey)) != 0 ||
                wr_gate_park_key(list, sizeof(list), sub->idem.prefix, sub->name, g, gkey) < 0) {
                continue;
            }
            const char *keys[5] = {list, k[0], k[1], k[2], k[3]};
            const char *args[2] = {"take", retry};
            size_t lens[2] = {4, strlen(retry)};
            const redisReply *r = gate_call(w, 5, keys, 2, args, lens);
            if (r == NULL) {
                return PAUSE;
            }
            if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
                continue; /* nothing was parked */
            }
            /* the reply goes with the next gate call: keep the sending key */
            char sending[GATE_KEY_MAX];
            snprintf(sending, sizeof(sending), "%.*s", (int)r->element[0]->len, r->element[0]->str);
            int rc = gate_send(w, 'o', sending, r->element + 1, r->elements - 1, NULL);
            if (rc != WR_BROKER_OK) {
                return rc;
            }
        }
    }
    return WR_BROKER_OK;
}

/*
 * What the normal path left behind (gates.h): lists whose sender died,
 * parked messages whose predecessor's worker died between its commit and the
 * release, and parked messages past their gate's timeout; and the lanes of
 * ordering keys (gate.lua's lanes: a subscription with ordering and no gate
 * has them too) whose holder's worker died between its commit and the
 * hand-over. Worker 0 of a subscription does it about once a second. Returns
 * a WR_BROKER_* code or PAUSE.
 */
static int gate_sweep(wr_worker *w)
{
    int lanes = w->lanes != NULL && w->sub->idem.enabled;
    if ((w->sub->gate_count == 0 && !lanes) || w->idem == NULL || w->index != 0 ||
        wr_mono_ms() < w->next_sweep_ms) {
        return WR_BROKER_OK;
    }
    w->next_sweep_ms = wr_mono_ms() + GATE_SWEEP_MS;
    char k[4][GATE_KEY_MAX];
    gate_sub_keys(w, k);
    char recheck[24], retry[24];
    snprintf(recheck, sizeof(recheck), "%d", GATE_RECHECK_MS);
    snprintf(retry, sizeof(retry), "%d", GATE_RETRY_MS);
    /* the gates whose on_timeout is run, as ",0,2," after their lists' prefix */
    char park[GATE_KEY_MAX], run[WR_MAX_GATES * 4 + 2] = ",";
    int pn = wr_gate_park_key(park, sizeof(park), w->sub->idem.prefix, w->sub->name, 0, "");
    park[pn >= 2 ? pn - 2 : 0] = '\0'; /* "<prefix>~park:<subscription>:" */
    for (int g = 0; g < w->sub->gate_count; g++) {
        if (w->sub->gates[g].run_on_timeout) {
            snprintf(run + strlen(run), sizeof(run) - strlen(run), "%d,", g);
        }
    }
    const char *keys[4] = {k[0], k[1], k[2], k[3]};
    const char *args[6] = {"sweep", recheck, retry, "20", park, run};
    size_t lens[6] = {5, strlen(recheck), strlen(retry), 2, strlen(park), strlen(run)};
    const redisReply *r = gate_call(w, 4, keys, strlen(run) > 1 ? 6 : 4, args, lens);
    if (r == NULL) {
        return PAUSE;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        return WR_BROKER_OK;
    }
    /* each gate_send's "sent" call frees this reply: take the groups out first */
    size_t ng = r->elements;
    redisReply **groups = calloc(ng, sizeof(*groups));
    if (groups == NULL) {
        return WR_BROKER_OK;
    }
    for (size_t i = 0; i < ng; i++) {
        groups[i] = r->element[i];
        ((redisReply *)r)->element[i] = NULL;
    }
    int rc = WR_BROKER_OK;
    for (size_t i = 0; i < ng; i++) {
        redisReply *gr = groups[i];
        if (rc == WR_BROKER_OK && gr != NULL && gr->type == REDIS_REPLY_ARRAY &&
            gr->elements >= 3 && gr->element[0]->type == REDIS_REPLY_STRING &&
            gr->element[1]->type == REDIS_REPLY_STRING) {
            char sending[GATE_KEY_MAX];
            snprintf(sending, sizeof(sending), "%.*s", (int)gr->element[1]->len,
                     gr->element[1]->str);
            rc = gate_send(w, gr->element[0]->str[0], sending, gr->element + 2, gr->elements - 2,
                           NULL);
        }
        if (gr != NULL) {
            freeReplyObject(gr);
        }
    }
    free(groups);
    return rc;
}

/* ---- retries keep order (ordering.h, gate.lua's lanes) ------------------------------- */

/* Whether IT's ordering key is held in Redis while one of its messages is
 * retried: ordering on, with idempotency (the holder is named by its record). */
static int lane_redis(const wr_worker *w, const item *it)
{
    return w->lanes != NULL && w->sub->idem.enabled && w->idem != NULL && it->okey[0] != '\0' &&
           it->rkey[0] != '\0';
}

static void lane_keys(const wr_worker *w, const item *it, char *hold, char *list)
{
    snprintf(hold, GATE_KEY_MAX, "%s~hold:%s:%s", w->sub->idem.prefix, w->sub->name, it->okey);
    snprintf(list, GATE_KEY_MAX, "%s~park:%s:lane:%s", w->sub->idem.prefix, w->sub->name, it->okey);
}

/* Whether hold value V (gate.lua's lanes: the holder's record key, then a
 * NUL and the record key of each earlier message of its batch still to be
 * committed when it took the hold) names RKEY: 1 as its holder, 2 as one of
 * those earlier messages (it runs again ahead of the holder after a crash),
 * 0 not at all. */
static int hold_names(wr_sbstr v, const char *rkey)
{
    size_t n = strlen(rkey);
    for (size_t at = 0, part = 1; at <= v.n; part = 2) {
        const char *z = memchr(v.p + at, '\0', v.n - at);
        size_t end = z != NULL ? (size_t)(z - v.p) : v.n;
        if (end - at == n && memcmp(v.p + at, rkey, n) == 0) {
            return (int)part;
        }
        at = end + 1;
    }
    return 0;
}

/* Log (info) MSG: IT is not run now, behind HOLDER, the message that holds
 * its ordering key; MOVE: where IT goes instead, when not NULL. */
static void log_behind(const wr_worker *w, const item *it, const char *msg, const char *holder,
                       const char *move)
{
    wr_logline l;
    wr_log_begin(&l, WR_LOG_INFO, msg);
    wr_log_str(&l, "subscription", w->sub->name);
    wr_log_int(&l, "worker", w->index);
    wr_log_strn(&l, "message_id", it->env.id.bytes, it->env.id.len);
    wr_log_str(&l, "ordering_key", it->okey);
    wr_log_str(&l, "behind", holder);
    if (move != NULL) {
        wr_log_str(&l, "move", move);
    }
    wr_log_str(&l, "trace_id", it->trace_id);
    wr_log_end(&l);
}

/*
 * Park IT in Redis behind the message that holds its ordering key (gate.lua's
 * lpark, which reads the hold again in the same script run). Returns 1 when
 * IT is parked (WR_ACT_PARKED), or not run for want of memory (WR_ACT_NONE),
 * or *RC is PAUSE (Redis failed); 0 when the key is free or held by IT itself
 * after all.
 */
static int lane_park_entry(wr_worker *w, batch *bt, item *it, const char *hold, const char *list,
                           int *rc)
{
    char *entry = NULL;
    size_t elen = 0;
    int enc = park_entry(w, bt, it, 0, &entry, &elen);
    if (enc != 0) {
        return enc > 0 ? 0 : 1;
    }
    char k[4][GATE_KEY_MAX], recheck[24];
    gate_sub_keys(w, k);
    snprintf(recheck, sizeof(recheck), "%d", GATE_RECHECK_MS);
    const char *keys[4] = {hold, list, k[0], k[1]};
    const char *args[4] = {"lpark", it->rkey, entry, recheck};
    size_t lens[4] = {5, strlen(it->rkey), elen, strlen(recheck)};
    const redisReply *r = gate_call(w, 4, keys, 4, args, lens);
    free(entry);
    if (r == NULL) {
        *rc = PAUSE;
        return 1;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
        return 0;
    }
    char holder[RKEY_MAX];
    snprintf(holder, sizeof(holder), "%.*s", r->type == REDIS_REPLY_STRING ? (int)r->len : 0,
             r->type == REDIS_REPLY_STRING ? r->str : "");
    it->act = WR_ACT_PARKED;
    snprintf(it->error, sizeof(it->error), "behind %.400s, retried, of ordering key %.400s", holder,
             it->okey);
    log_behind(w, it, "parked behind a retried message of its ordering key", holder, NULL);
    return 1;
}

/*
 * IT is about to run: when a message of its ordering key is being retried
 * (or was released behind one and is not done), park IT behind it and return
 * 1 (*RC PAUSE when Redis failed); 0: IT runs (it may be the holder itself).
 * The hold is read as a guarded ctx.store read, as a gate's mark is.
 */
static int lane_park(wr_worker *w, batch *bt, item *it, int *rc)
{
    *rc = WR_BROKER_OK;
    if (!lane_redis(w, it)) {
        return 0;
    }
    char hold[GATE_KEY_MAX], list[GATE_KEY_MAX], err[256];
    lane_keys(w, it, hold, list);
    int idx = (int)(it - bt->items);
    bt->links[idx] = (struct store_link){.w = w, .b = bt, .index = idx};
    wr_sb_result res = {0};
    if (wr_storebuf_read(bt->stores[idx], "GET", (wr_sbstr){hold, strlen(hold)}, (wr_sbstr){"", 0},
                         chained_fetch, &bt->links[idx], &res, err, sizeof(err)) != 0) {
        wr_logf(WR_LOG_ERROR, "%s: ordering: %s", w->name, err);
        *rc = PAUSE;
        return 1;
    }
    int taken = res.present, named = taken ? hold_names(res.str, it->rkey) : 0;
    wr_sb_result_free(&res);
    if (!taken || named != 0) {
        it->holder = named == 1; /* 2: an earlier message of the holder's batch, run again */
        return 0;
    }
    if (lane_park_entry(w, bt, it, hold, list, rc)) {
        return 1;
    }
    wr_storebuf_reset(bt->stores[idx]); /* the lane came free meanwhile: run, afresh */
    return 0;
}

/*
 * IT cannot be claimed (another process holds its idempotency record: one
 * killed with kill -9 while it ran it, until the lease runs out) and would go
 * through the wait queue. When its ordering key is held in Redis by another
 * message (a retried one, or one released behind it), the key's later
 * messages are parked behind that one and would be released ahead of IT,
 * which the wait queue brings back later: park IT there too, in its turn,
 * and return 1 (*RC PAUSE when Redis failed). 0: the key is free or IT holds
 * it; IT goes through the wait queue (its later messages follow it there in
 * this worker, or park behind it in Redis when it holds the key). Costs one
 * Redis round trip per such message, none on the way of a claimed one.
 */
static int lane_park_busy(wr_worker *w, batch *bt, item *it, int *rc)
{
    *rc = WR_BROKER_OK;
    if (!lane_redis(w, it)) {
        return 0;
    }
    char hold[GATE_KEY_MAX], list[GATE_KEY_MAX];
    lane_keys(w, it, hold, list);
    return lane_park_entry(w, bt, it, hold, list, rc);
}

/* IT goes to a delay queue: from now on its key's later messages wait behind
 * it (before its copy is published: a crash in between leaves it holding, and
 * its redelivery is the holder). The earlier messages of its key in BT read
 * the hold free and are not committed yet: their reads now expect IT's hold,
 * or their commits would fail as conflicts and they would come back parked
 * behind IT, to run after it. The hold names those that ran (a kill -9 before
 * BT's commit sends them back, and they must run again ahead of IT, not park
 * behind it). Returns 0, or -1 when Redis failed or out of memory. */
static int lane_hold(wr_worker *w, batch *bt, item *it)
{
    if (!lane_redis(w, it)) {
        return 0;
    }
    char hold[GATE_KEY_MAX], list[GATE_KEY_MAX];
    lane_keys(w, it, hold, list);
    size_t rlen = strlen(it->rkey), n = rlen;
    char *value = malloc((size_t)bt->n * RKEY_MAX + 1);
    if (value == NULL) {
        return -1;
    }
    memcpy(value, it->rkey, rlen);
    for (item *e = bt->items; e < it; e++) {
        if (!e->held && e->act == WR_ACT_OK && strcmp(e->okey, it->okey) == 0) {
            size_t el = strlen(e->rkey);
            value[n++] = '\0';
            memcpy(value + n, e->rkey, el);
            n += el;
        }
    }
    const char *keys[1] = {hold};
    const char *args[3] = {"lhold", it->rkey, value + rlen};
    size_t lens[3] = {5, rlen, n - rlen};
    const redisReply *r = gate_call(w, 1, keys, n > rlen ? 3 : 2, args, lens);
    if (r == NULL) {
        free(value);
        return -1;
    }
    it->holder = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    int rc = 0;
    for (item *e = bt->items; it->holder && rc == 0 && e < it; e++) {
        if (strcmp(e->okey, it->okey) == 0 &&
            wr_storebuf_guard_expect(bt->stores[e - bt->items], (wr_sbstr){hold, strlen(hold)},
                                     (wr_sbstr){value, n}) < 0) {
            rc = -1;
        }
    }
    free(value);
    return rc;
}

/* BT's commit is read: each holder that is done (handled, or dead-lettered)
 * hands its key over to the next message parked behind it (ordering.on_dlq
 * says what a dead-lettered one does). So does a holder parked behind a
 * causal gate: it waits for a predecessor of its key, which may be parked
 * behind it here, and holding on would deadlock the two; the gate orders it.
 * So does a duplicate that holds its key (it is not known as a holder: a
 * duplicate is not run, so the hold was never read): a holder whose other
 * copy was done meanwhile, the released copy of a message that a crash also
 * left in the queue (lnext does nothing when the hold is not its own).
 * Returns a WR_BROKER_* code or PAUSE. */
static int lane_release(wr_worker *w, batch *bt)
{
    char k[4][GATE_KEY_MAX], retry[24];
    gate_sub_keys(w, k);
    snprintf(retry, sizeof(retry), "%d", GATE_RETRY_MS);
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (it->held || !lane_redis(w, it) ||
            (it->act != WR_ACT_DUPLICATE &&
             (!it->holder ||
              (it->act != WR_ACT_OK && it->act != WR_ACT_DLQ && it->act != WR_ACT_PARKED)))) {
            continue;
        }
        int dlq_all = it->act == WR_ACT_DLQ && w->sub->ordering.dlq_all;
        char hold[GATE_KEY_MAX], list[GATE_KEY_MAX];
        lane_keys(w, it, hold, list);
        const char *keys[6] = {hold, list, k[0], k[1], k[2], k[3]};
        const char *args[4] = {"lnext", retry, it->rkey, dlq_all ? "dlq_all" : "release"};
        size_t lens[4] = {5, strlen(retry), strlen(it->rkey), strlen(args[3])};
        const redisReply *r = gate_call(w, 6, keys, 4, args, lens);
        if (r == NULL) {
            return PAUSE;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
            continue; /* nothing was waiting: the key is free */
        }
        char sending[GATE_KEY_MAX];
        snprintf(sending, sizeof(sending), "%.*s", (int)r->element[0]->len, r->element[0]->str);
        int rc =
            gate_send(w, dlq_all ? 'd' : 'o', sending, r->element + 1, r->elements - 1, it->key);
        if (rc != WR_BROKER_OK) {
            return rc;
        }
    }
    return WR_BROKER_OK;
}

/* ---- per-key lanes (ordering.h) ---------------------------------------------------- */

/* How long a lane stays shut at most: its head comes back through the wait
 * queue in about WR_TOPO_WAIT_MS, and at once from a requeue. */
#define LANE_HOLD_MS (3 * WR_TOPO_WAIT_MS)

/* Who IT is, for its lane: its idempotency key, else its message id. */
static const char *lane_id(const item *it, char *buf, size_t cap)
{
    if (it->key[0] != '\0') {
        return it->key;
    }
    snprintf(buf, cap, "%.*s", (int)it->env.id.len, (const char *)it->env.id.bytes);
    return buf;
}

/* Note what became of IT in its lane: an unfinished message shuts its key. */
static void lane_note(wr_worker *w, const item *it)
{
    char buf[WR_IDKEY_MAX + 1];
    if (w->lanes != NULL && it->okey[0] != '\0' && !it->held) {
        wr_lanes_note(w->lanes, it->okey, it->act, lane_id(it, buf, sizeof(buf)), wr_mono_ms(),
                      LANE_HOLD_MS);
    }
}

/*
 * IT is about to run: when an earlier message of its ordering key did not
 * finish, IT follows it instead (back to the queue, or through the wait queue,
 * published here) and 1 is returned with *RC the publish's WR_BROKER_* code;
 * 0: IT runs. IT being its lane's head, taken again, opens the lane.
 */
static int lane_follow(wr_worker *w, batch *bt, item *it, int *rc)
{
    char buf[WR_IDKEY_MAX + 1];
    *rc = WR_BROKER_OK;
    if (w->lanes == NULL || it->okey[0] == '\0') {
        return 0;
    }
    const char *id = lane_id(it, buf, sizeof(buf));
    wr_lanes_release(w->lanes, it->okey, id);
    const wr_lane *lane = wr_lanes_find(w->lanes, it->okey, wr_mono_ms());
    if (lane == NULL) {
        return 0;
    }
    wr_lane_move move = wr_ordering_follow(lane->head_act);
    if (move == WR_LANE_RUN) {
        return 0;
    }
    log_behind(w, it, "behind an unfinished message of its ordering key: not run", lane->head_id,
               wr_lane_move_name(move));
    wr_stat_add(&w->st->lane_followed, 1);
    it->followed = 1;
    if (move == WR_LANE_WAIT) {
        it->act = WR_ACT_WAIT;
        it->delay_ms = WR_TOPO_WAIT_MS;
        *rc = publish_copy(w, bt, it, NULL);
    } else {
        it->act = WR_ACT_NONE; /* back to the queue, unstarted: quietly */
    }
    return 1;
}

/* 1 when an item of CUR shares its ordering key with one of PREV. */
static int lanes_meet(const batch *prev, const batch *cur)
{
    for (int i = 0; i < cur->n; i++) {
        const char *k = cur->items[i].okey;
        for (int j = 0; k[0] != '\0' && !cur->items[i].held && j < prev->n; j++) {
            if (!prev->items[j].held && strcmp(prev->items[j].okey, k) == 0) {
                return 1;
            }
        }
    }
    return 0;
}

/* Half-open for less than HALF_OPEN_FRESH_MS: a retry alone in its batch
 * yields to the fresh messages that may wait behind it (run_batch). */
static int half_open_young(wr_worker *w)
{
    if (wr_shared_brk_state(w->brk) != WR_BRK_HALF_OPEN) {
        return 0;
    }
    wr_brk_status st;
    wr_shared_brk_status(w->brk, &st);
    return wr_now_ms() - st.half_open_at_ms < HALF_OPEN_FRESH_MS;
}

/* Does BT hold, after item I, a fresh message (a first attempt) that is still
 * to run? */
static int fresh_after(const wr_worker *w, const batch *bt, int i)
{
    for (int j = i + 1; j < bt->n; j++) {
        const item *x = &bt->items[j];
        if (!x->held && x->act == WR_ACT_NONE && x->attempt <= 1 &&
            (!w->sub->idem.enabled || x->claimed)) {
            return 1;
        }
    }
    return 0;
}

/*
 * Run BT's handlers and publish what each outcome needs (the invalid items'
 * copies went out in prepare_batch). Returns a WR_BROKER_* code, or PAUSE
 * when Redis failed.
 */
static int run_batch(wr_worker *w, batch *bt)
{
    const wr_idem_policy *pol = &w->sub->idem;
    /* each item's turn ends with lane_note: what became of it shuts its lane or not */
    for (int i = 0; i < bt->n; lane_note(w, &bt->items[i]), i++) {
        item *it = &bt->items[i];
        int rc = WR_BROKER_OK;
        if (it->held) {
            continue;
        }
        if (it->act == WR_ACT_DLQ) {
            if (it->claimed) { /* crashed too often to run again */
                rc = publish_copy(w, bt, it, "crashed");
            }
            if (rc != WR_BROKER_OK) {
                return rc;
            }
            continue;
        }
        if (it->act == WR_ACT_WAIT) {
            if (!lane_park_busy(w, bt, it, &rc)) {
                rc = publish_copy(w, bt, it, NULL);
            }
            if (rc != WR_BROKER_OK) {
                return rc;
            }
            continue;
        }
        if (it->act == WR_ACT_DUPLICATE || (pol->enabled && !it->claimed)) {
            continue;
        }
        if (atomic_load(&w->flags->stop)) {
            it->act = WR_ACT_NONE; /* draining: what has not started goes back */
            continue;
        }
        if (lane_follow(w, bt, it, &rc) || lane_park(w, bt, it, &rc) || gate_park(w, bt, it, &rc)) {
            if (rc != WR_BROKER_OK) {
                return rc;
            }
            continue;
        }
        if (pol->enabled && wr_mono_ms() - bt->leased_at > (double)pol->lease_ms / 3) {
            if (extend_leases(w, bt, i) != 0) {
                return PAUSE;
            }
            bt->leased_at = wr_mono_ms();
            if (!it->claimed) {
                continue;
            }
        }
        if (it->attempt > 1 && wr_shared_brk_state(w->brk) == WR_BRK_HALF_OPEN &&
            fresh_after(w, bt, i)) {
            /* half-open: the probe slots go to fresh messages first. A retry may be
             * one of the messages that failed before; if it probes and fails again,
             * the good messages behind it wait another open_for. Back to the queue
             * without counting an attempt: it runs once the breaker closed */
            it->act = WR_ACT_NONE;
            continue;
        }
        if (it->attempt > 1 && it->okey[0] == '\0' && half_open_young(w)) {
            /* half-open, and no fresh message behind it here (a batch of retries,
             * or of one: the prefetch may hold nothing else): fresh ones may wait
             * in the queue behind it. Through the wait queue to the queue's tail,
             * no attempt counted; late in the half-open, a retry probes */
            wr_logline l;
            wr_log_begin(&l, WR_LOG_INFO, "half-open: a retry goes behind the fresh messages");
            wr_log_str(&l, "subscription", w->sub->name);
            wr_log_strn(&l, "message_id", it->env.id.bytes, it->env.id.len);
            wr_log_int(&l, "attempt", it->attempt);
            wr_log_end(&l);
            it->act = WR_ACT_WAIT;
            it->defer_why = "message deferred: a half-open breaker probes fresh messages first";
            it->delay_ms = WR_TOPO_WAIT_MS;
            rc = publish_copy(w, bt, it, NULL);
            if (rc != WR_BROKER_OK) {
                return rc;
            }
            continue;
        }
        if (!wr_shared_brk_allow(w->brk)) {
            /* the breaker opened (or half-open has no probe slot left): back to the
             * queue without counting an attempt, quietly */
            it->act = WR_ACT_NONE;
            continue;
        }
        rc = run_one(w, bt, it);
        gate_mark(w, bt, it);
        if (rc == WR_BROKER_OK && wr_mono_ms() >= w->next_service_ms) {
            /* a batch of slow handlers: keep heartbeats going between them too */
            service_broker(w);
        }
        if (it->act == WR_ACT_NONE) {
            wr_shared_brk_release(w->brk); /* interrupted by shutdown: no verdict */
        } else if (it->out == WR_OUT_OK) {
            wr_shared_brk_record(w->brk, 1);
        } else if (it->out == WR_OUT_TIMEOUT || it->out == WR_OUT_RETRY ||
                   (it->out == WR_OUT_ERROR && (it->dependency || w->sub->breaker.count_all))) {
            wr_shared_brk_failed(w->brk, it->env.id.bytes, it->env.id.len, it->error);
        } else {
            /* rejections, invalid bodies and (breaker.counts: dependencies) the
             * handler's own bugs: not the dependency's fault, no verdict */
            wr_shared_brk_release(w->brk);
            wr_shared_brk_note(w->brk, it->env.id.bytes, it->env.id.len, it->error);
        }
        if (rc != WR_BROKER_OK) {
            return rc;
        }
    }
    return WR_BROKER_OK;
}

/*
 * Commit BT, first half: wait for its publishes' confirms, send back to the
 * queue the items a copy of which the broker did not take, and send the
 * records' finish (done after confirmed effects, released for retries), with
 * the handled items' ctx.store writes and journal entries, without waiting.
 * Returns a WR_BROKER_* code, or PAUSE when Redis failed.
 */
static int commit_send(wr_worker *w, batch *bt)
{
    const wr_idem_policy *pol = &w->sub->idem;
    if (bt->seq_first != 0) {
        double t0 = wr_mono_ms();
        int rc = wr_broker_confirm_wait(w->b, bt->seq_end, CONFIRM_TIMEOUT_MS);
        wr_hist_observe(&w->st->confirm, (wr_mono_ms() - t0) / 1000);
        atomic_store(&w->st->beat_ms, (long long)wr_mono_ms());
        if (rc == WR_BROKER_TIMEOUT) {
            wr_logf(WR_LOG_ERROR, "%s: publish confirms did not arrive within %d ms; reconnecting",
                    w->name, CONFIRM_TIMEOUT_MS);
            return WR_BROKER_DOWN;
        }
        if (rc != WR_BROKER_OK) {
            return WR_BROKER_DOWN;
        }
    }
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (!it->held && it->act != WR_ACT_NONE && it->act != WR_ACT_DUPLICATE &&
            !item_confirmed(w, it)) {
            snprintf(it->error, sizeof(it->error), "%s",
                     it->act == WR_ACT_OK ? "an outgoing event was not confirmed by the broker"
                                          : "a copy was not confirmed by the broker");
            it->act = WR_ACT_NONE; /* the broker refused a copy: not a crashed run */
        }
    }
    bt->commit_sent = 1;
    bt->commit_read = 0;
    bt->nfin = 0;
    if (!pol->enabled) {
        bt->commit_read = 1;
        return WR_BROKER_OK;
    }
    int64_t now = wr_now_ms();
    double mono = wr_mono_ms();
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (!it->claimed || it->held) {
            continue;
        }
        wr_finish_op op = finish_op_of(it);
        const char *entry = NULL;
        if (op == WR_FINISH_DONE && w->cfg->journal_enabled) {
            /* its last step is kept in its done record: no journal write for it */
            free(bt->entries[i]);
            bt->entries[i] = journal_text(w, it, now, mono);
            entry = bt->entries[i];
        }
        bt->fin[bt->nfin] = (wr_finish){
            .key = it->rkey,
            .op = op,
            .outcome = it->dec.done_outcome,
            .starts = it->starts,
            .entry = entry,
            .done_at = now,
            /* a handled message's ctx.store writes ride on its done mark; a failed
             * one's (dead-lettered, rejected) are dropped */
            .writes = it->act == WR_ACT_OK ? bt->stores[i] : NULL,
        };
        bt->fmap[bt->nfin++] = i;
    }
    if (bt->nfin == 0) {
        bt->commit_read = 1;
        return WR_BROKER_OK;
    }
    bt->commit_t0 = wr_mono_ms();
    if (wr_idem_finish_send(w->idem, bt->fin, bt->nfin, w->token, pol->lease_ms, pol->ttl_ms) !=
        0) {
        bt->commit_read = 1;
        bt->frc = -1;
        return PAUSE;
    }
    return WR_BROKER_OK;
}

/*
 * The batch's commit script raised (WR_IDEM_SCRIPT_FAILED): Redis answers, but
 * one record's writes failed in a way the script's checks did not foresee,
 * and a script is not rolled back. Commit the records one at a time, so the
 * others are not held back with it: a record the failed run already wrote
 * reports LOST (its redelivery is a duplicate); the one that raises again is
 * marked failed and released (its start stays counted). Returns 0, or -1 when
 * Redis failed.
 */
static int finish_one_by_one(wr_worker *w, batch *bt)
{
    const wr_idem_policy *pol = &w->sub->idem;
    wr_logline l;
    wr_log_begin(&l, WR_LOG_ERROR,
                 "commit script failed; committing the batch's records "
                 "one by one");
    wr_log_str(&l, "subscription", w->sub->name);
    wr_log_int(&l, "worker", w->index);
    wr_log_str(&l, "error", wr_idem_error(w->idem));
    wr_log_end(&l);
    for (int c = 0; c < bt->nfin; c++) {
        wr_finish *f = &bt->fin[c];
        int rc = wr_idem_finish(w->idem, f, 1, w->token, pol->lease_ms, pol->ttl_ms);
        if (rc == WR_IDEM_SCRIPT_FAILED) {
            snprintf(f->why, sizeof(f->why), "%s", wr_idem_error(w->idem));
            wr_finish rel = {.key = f->key, .op = WR_FINISH_RELEASE, .starts = f->starts};
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

/*
 * The items whose ctx.store writes the commit refused (marked WR_ACT_DLQ with
 * reason store-refused; their records are still ours, processing): publish
 * their DLQ copies, wait for the confirms, then mark their records done as
 * dead-lettered. A copy that is not confirmed, or a record that cannot be
 * written, sends its message back to the queue (WR_ACT_NONE) with the record
 * given back. Returns a WR_BROKER_* code (DOWN: nothing of the batch is acked;
 * the records left processing run out with their lease).
 */
static int dead_letter_refused(wr_worker *w, batch *bt)
{
    const wr_idem_policy *pol = &w->sub->idem;
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (it->act == WR_ACT_DLQ && it->rs == WR_RS_STORE_REFUSED) {
            it->pub_first = it->pub_end = 0; /* just the copy, not its outgoing events */
            int rc = publish_copy(w, bt, it, "store-refused");
            if (rc != WR_BROKER_OK) {
                return rc;
            }
        }
    }
    if (wr_broker_confirm_wait(w->b, wr_broker_next_seq(w->b), CONFIRM_TIMEOUT_MS) !=
        WR_BROKER_OK) {
        return WR_BROKER_DOWN;
    }
    if (scratch_room(w, bt->n) != 0) {
        return WR_BROKER_DOWN;
    }
    int k = 0;
    int64_t now = wr_now_ms();
    double mono = wr_mono_ms();
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (it->act != WR_ACT_DLQ || it->rs != WR_RS_STORE_REFUSED) {
            continue;
        }
        int ok = item_confirmed(w, it);
        free(bt->entries[i]);
        bt->entries[i] = ok && w->cfg->journal_enabled ? journal_text(w, it, now, mono) : NULL;
        w->scratch[k] = (wr_finish){.key = it->rkey,
                                    .op = ok ? WR_FINISH_DONE : WR_FINISH_UNCLAIM,
                                    .outcome = "dead-lettered",
                                    .starts = it->starts,
                                    .entry = bt->entries[i],
                                    .done_at = now};
        bt->fmap[k++] = i;
    }
    int failed = wr_idem_finish(w->idem, w->scratch, k, w->token, pol->lease_ms, pol->ttl_ms) != 0;
    for (int c = 0; c < k; c++) {
        item *it = &bt->items[bt->fmap[c]];
        if (failed || w->scratch[c].op != WR_FINISH_DONE || !w->scratch[c].owned) {
            it->act = WR_ACT_NONE; /* back to the queue; its next run dead-letters it again */
        }
    }
    return WR_BROKER_OK;
}

/*
 * Journal what BT decided for the items whose record does not keep it (every
 * step but a done): one pipelined write, not waited for. Best effort: a
 * failure is logged and counted, and changes nothing else.
 */
static void journal_batch(wr_worker *w, batch *bt)
{
    const wr_config *cfg = w->cfg;
    if (!cfg->journal_enabled || w->idem == NULL || bt->n == 0) {
        return;
    }
    enum { KEYCAP = WR_IDKEY_MAX + 320 };
    wr_idem_jlist *lists = NULL;
    char **texts = NULL;
    char *keys = NULL;
    int nl = 0;
    int64_t now = wr_now_ms();
    double mono = wr_mono_ms();
    wr_tindex ix = {0}; /* the trace index (tindex.h), written with the entries */
    for (int i = 0; i < bt->n; i++) {
        const item *it = &bt->items[i];
        if (it->held || (it->act == WR_ACT_NONE && it->error[0] == '\0')) {
            continue; /* held back, or not started (shutdown, breaker): quietly */
        }
        if (it->claimed && finish_op_of(it) == WR_FINISH_DONE && bt->entries[i] != NULL) {
            wr_tindex_add(&ix, w->sub, bt->entries[i], it->key);
            continue; /* kept in its done record */
        }
        if (lists == NULL) {
            lists = calloc((size_t)bt->n, sizeof(*lists));
            texts = calloc((size_t)bt->n, sizeof(*texts));
            keys = malloc((size_t)bt->n * KEYCAP);
            if (lists == NULL || texts == NULL || keys == NULL) {
                goto out;
            }
        }
        char id[WR_IDKEY_MAX + 1];
        snprintf(id, sizeof(id), "%.*s", (int)it->env.id.len, (const char *)it->env.id.bytes);
        const char *key = it->key[0] ? it->key : id;
        char *jkey = keys + (size_t)nl * KEYCAP;
        if (key[0] == '\0' ||
            wr_journal_key(w->sub->idem.prefix, w->sub->name, key, jkey, KEYCAP) != 0) {
            continue; /* no id to file it under */
        }
        texts[nl] = journal_text(w, it, now, mono);
        wr_tindex_add(&ix, w->sub, texts[nl], key);
        if (texts[nl] != NULL) {
            lists[nl] = (wr_idem_jlist){
                .key = jkey, .entries = (const char *const *)&texts[nl], .count = 1};
            nl++;
        }
    }
    int nw = nl; /* lists written: the journals, then the index's */
    if (ix.n > 0 && lists != NULL) {
        wr_idem_jlist *all = realloc(lists, (size_t)(bt->n + ix.n) * sizeof(*all));
        if (all != NULL) {
            lists = all;
            memcpy(lists + nl, ix.lists, (size_t)ix.n * sizeof(*all));
            nw += ix.n;
        }
    } else if (ix.n > 0) {
        lists = ix.lists; /* only done records in the batch: the index alone */
        nw = ix.n;
        ix.lists = NULL;
    }
    if (nw == 0 && lists == NULL) {
        /* nothing to write; still report what earlier writes' replies said */
        if (wr_idem_journal(w->idem, NULL, 0, cfg->journal_max_entries, cfg->journal_ttl_ms) == 0) {
            goto out; /* the index may hold strings with no list (nothing to index) */
        }
    } else {
        double t0 = wr_mono_ms();
        int jrc =
            wr_idem_journal(w->idem, lists, nw, cfg->journal_max_entries, cfg->journal_ttl_ms);
        if (nw > 0) {
            wr_hist_observe(&w->st->redis_journal, (wr_mono_ms() - t0) / 1000);
        }
        if (jrc == 0) {
            goto out;
        }
    }
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
out:
    for (int i = 0; texts != NULL && i < nl; i++) {
        free(texts[i]);
    }
    free(texts);
    free(lists);
    free(keys);
    wr_tindex_free(&ix);
}

/* The lowest delivery tag still unfinished outside BT: in the other batch or
 * held back (0: none). */
static uint64_t lowest_open_tag(const wr_worker *w, const batch *bt)
{
    uint64_t low = 0;
    const batch *o = other_batch((wr_worker *)w, bt);
    for (int i = 0; o->live && i < o->n; i++) {
        uint64_t t = o->items[i].held ? 0 : o->items[i].d->delivery_tag;
        if (t != 0 && (low == 0 || t < low)) {
            low = t;
        }
    }
    for (int i = 0; i < w->nheld; i++) {
        uint64_t t = w->held[i].d->delivery_tag;
        if (low == 0 || t < low) {
            low = t;
        }
    }
    return low;
}

/*
 * Ack or return BT's deliveries in as few frames as it can: one ack with
 * `multiple` covers the longest run of deliveries to ack, in tag order from
 * BT's lowest, that stays below every delivery still open outside BT (in the
 * other batch, or held back): every unacked delivery below that point is one
 * of BT's. The rest are acked or returned (nack, requeue) one by one. Returns
 * a WR_BROKER_* code.
 */
static int ack_batch(wr_worker *w, batch *bt)
{
    uint64_t low = lowest_open_tag(w, bt);
    int *order = bt->cmap; /* free once the claims are read */
    int m = 0;
    for (int i = 0; i < bt->n; i++) {
        if (!bt->items[i].held) {
            /* insertion sort by tag: the batch is in delivery order but for the copies
             * held back earlier, taken again at its start */
            int j = m++;
            while (j > 0 &&
                   bt->items[order[j - 1]].d->delivery_tag > bt->items[i].d->delivery_tag) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = i;
        }
    }
    int k = 0;
    uint64_t cover = 0;
    while (k < m) {
        const item *it = &bt->items[order[k]];
        if (it->act == WR_ACT_NONE || (low != 0 && it->d->delivery_tag >= low)) {
            break;
        }
        cover = it->d->delivery_tag;
        k++;
    }
    int rc = WR_BROKER_OK;
    if (k >= 2) {
        rc = wr_broker_ack(w->b, cover, 1);
    } else {
        k = 0;
    }
    for (int j = k; j < m && rc == WR_BROKER_OK; j++) {
        const item *it = &bt->items[order[j]];
        rc = it->act != WR_ACT_NONE ? wr_broker_ack(w->b, it->d->delivery_tag, 0)
                                    : wr_broker_nack(w->b, it->d->delivery_tag, 0, 1);
    }
    return rc;
}

/*
 * redis.min_replicas_acked: before BT's acks, WAIT until that many replicas
 * hold its commit, so a failover to one of them keeps what the acks stand on.
 * Only what Redis alone keeps needs it: a message handled (its done record
 * and ctx.store writes) and a duplicate (acked on the strength of a record);
 * a retry, wait or DLQ copy is in the broker already. When fewer replicas
 * answer in time (or the connection fails) those messages go back to the
 * queue unacked: the redelivery finds the record done, or runs again if the
 * record was lost with the primary. Returns 1 when it returned any (the
 * caller then pauses as in an outage), 0 otherwise.
 */
static int await_replicas(wr_worker *w, batch *bt)
{
    const wr_config *cfg = w->cfg;
    if (cfg->redis_min_replicas <= 0 || !w->sub->idem.enabled) {
        return 0;
    }
    int need = 0;
    for (int i = 0; i < bt->n; i++) {
        const item *it = &bt->items[i];
        need += !it->held && (it->act == WR_ACT_OK || it->act == WR_ACT_DUPLICATE);
    }
    if (need == 0) {
        return 0;
    }
    double t0 = wr_mono_ms();
    int acked =
        wr_idem_wait_replicas(w->idem, cfg->redis_min_replicas, cfg->redis_min_replicas_timeout_ms);
    wr_hist_observe(&w->st->redis_wait, (wr_mono_ms() - t0) / 1000);
    if (acked >= cfg->redis_min_replicas) {
        return 0;
    }
    wr_stat_add(&w->st->replica_waits_failed, 1);
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (!it->held && (it->act == WR_ACT_OK || it->act == WR_ACT_DUPLICATE)) {
            snprintf(it->error, sizeof(it->error), "not acked, returned to the queue: %s",
                     wr_idem_error(w->idem));
            it->act = WR_ACT_NONE;
        }
    }
    return 1;
}

/* Read BT's commit answer (if not read yet). 0, or PAUSE when Redis failed. */
static int read_commit(wr_worker *w, batch *bt)
{
    if (!w->sub->idem.enabled || bt->nfin == 0) {
        return 0;
    }
    if (!bt->commit_read) {
        bt->commit_read = 1;
        bt->frc = wr_idem_finish_recv(w->idem, bt->fin, bt->nfin);
    }
    if (bt->frc == WR_IDEM_SCRIPT_FAILED) {
        bt->frc = finish_one_by_one(w, bt);
    }
    if (bt->frc != 0) {
        wr_stat_add(&w->st->redis_errors, 1);
        return PAUSE;
    }
    wr_hist_observe(&w->st->redis_finish, (wr_mono_ms() - bt->commit_t0) / 1000);
    return 0;
}

/* What the commit said of each done record: an item whose record was not
 * written goes back (or, refused, to the DLQ). Returns how many were refused. */
static int apply_commit(wr_worker *w, batch *bt)
{
    int refused = 0;
    for (int c = 0; c < bt->nfin; c++) {
        item *it = &bt->items[bt->fmap[c]];
        const wr_finish *f = &bt->fin[c];
        if (f->op != WR_FINISH_DONE || it->act == WR_ACT_NONE) {
            continue; /* a release that failed only delays the next claim until the lease ends */
        }
        int nwrites = 0;
        if (f->writes != NULL) {
            wr_storebuf_writes(f->writes, &nwrites);
        }
        if (f->failed) {
            /* The commit script raised on this record (a write Redis refused that
             * the checks did not foresee). Its record was given back as released:
             * the start stays counted, so a message that fails this way every
             * time reaches the crash-loop guard and the DLQ instead of looping. */
            it->act = wr_decide_commit(WR_COMMIT_FAILED, f->why, it->error, sizeof(it->error));
        } else if (!f->owned) {
            wr_stat_add(&w->st->lease_lost, 1);
            /* The effects are published but the record is not written: never ack
             * on guesswork. The redelivery is claimed again (by our token, or
             * after the lease by anyone) and re-run; its outgoing events carry
             * the same ids, so consumers downstream deduplicate them. Its
             * ctx.store writes were not applied (they ride on the done mark). */
            snprintf(it->error, sizeof(it->error), "%s",
                     nwrites > 0
                         ? "lease lost: writes not applied; another worker took the message over"
                         : "lease lost: another worker took the message over");
            it->act = WR_ACT_NONE;
        } else if (f->conflict) {
            /* Another message changed what this one read (optimistic concurrency,
             * storebuf.h): nothing applied, the record unclaimed; the message goes
             * back and runs again from fresh state. Its outgoing events, if any
             * went out, carry the same ids next time. */
            it->act = wr_decide_commit(WR_COMMIT_CONFLICT, f->why, it->error, sizeof(it->error));
            it->claimed = 0;
        } else if (f->refused) {
            /* Owned, but Redis holds a key of another type (or a counter that is
             * not an integer): nothing applied, the record still ours and
             * processing. No retry can change that: dead-letter it (below). */
            it->act = wr_decide_commit(WR_COMMIT_REFUSED, f->why, it->error, sizeof(it->error));
            it->outcome = "store-refused";
            set_reason(it, WR_RS_STORE_REFUSED);
            refused++;
        }
    }
    return refused;
}

/* Count and log each item of BT that started (logged even when an ack
 * failed: the outcome and its record stand, the redelivery will be skipped
 * as a duplicate). */
static void log_settled(wr_worker *w, batch *bt)
{
    for (int i = 0; i < bt->n; i++) {
        item *it = &bt->items[i];
        if (it->held) {
            continue;
        }
        if (it->act == WR_ACT_NONE && it->error[0] == '\0') {
            continue; /* not started (shutdown, breaker): returned quietly */
        }
        count_item(w, it);
        /* a store conflict is concurrency doing its job, not a failure */
        wr_log_level level =
            it->act == WR_ACT_OK || it->act == WR_ACT_DUPLICATE                       ? WR_LOG_INFO
            : it->act == WR_ACT_NONE && strncmp(it->error, "store conflict", 14) != 0 ? WR_LOG_ERROR
                                                                                      : WR_LOG_WARN;
        log_item(w, it, level);
    }
}

/* BT is acked: release what waited behind it, forget its publishes, and let
 * it go. A WR_BROKER_* code. */
static int let_go(wr_worker *w, batch *bt)
{
    for (int i = 0; i < bt->n; i++) {
        lane_note(w, &bt->items[i]); /* what the commit changed (a conflict, a lost lease) */
    }
    /* A release that fails now is not BT's failure. What it did not send stays
     * in Redis, and the sweep sends it (gates.h); a broker or Redis that went
     * away is noticed by the next call that needs it. */
    if (gate_release(w, bt) != WR_BROKER_OK || lane_release(w, bt) != WR_BROKER_OK) {
        wr_logf(WR_LOG_WARN, "%s: parked messages not released now: the sweep will", w->name);
    }
    /* the publishes of this batch matter to nobody now; those of the other one do */
    batch *o = other_batch(w, bt);
    uint64_t upto = o->live && o->seq_first != 0 ? o->seq_first : wr_broker_next_seq(w->b);
    wr_broker_confirm_release(w->b, upto);
    if (w->gate_seq_end != 0 && upto >= w->gate_seq_end) {
        recycle_amqp_pool(&w->gate_pool); /* the broker holds no parked message's id now */
        w->gate_seq_end = 0;
    }
    int lost_copies = 0;
    for (int i = 0; i < bt->n; i++) {
        lost_copies += !bt->items[i].held && bt->items[i].act == WR_ACT_NONE &&
                       strstr(bt->items[i].error, "not confirmed by the broker") != NULL;
    }
    batch_clear(w, bt);
    atomic_store(&w->st->busy, o->live);
    atomic_store(&w->st->in_flight, o->live ? o->n : 0);
    if (lost_copies > 0 && !o->live) {
        /* A refused or unroutable copy: make sure our queues exist, and don't spin. */
        if (wr_broker_declare(w->b, &w->topo) != WR_BROKER_OK) {
            return WR_BROKER_DOWN;
        }
        nap(w, 1000);
    }
    return WR_BROKER_OK;
}

/*
 * Commit BT, second half: read its finish's answer, act on what the commit
 * said, journal, ack or return each item, log and count, and let BT go.
 * Returns a WR_BROKER_* code, or PAUSE when Redis failed (the batch is then
 * abandoned by the caller).
 */
static int settle(wr_worker *w, batch *bt)
{
    if (read_commit(w, bt) != 0) {
        return PAUSE;
    }
    int refused = apply_commit(w, bt);
    if (refused > 0 && dead_letter_refused(w, bt) != WR_BROKER_OK) {
        return WR_BROKER_DOWN;
    }
    journal_batch(w, bt);
    int unreplicated = await_replicas(w, bt);
    int rc = ack_batch(w, bt);
    log_settled(w, bt);
    if (rc != WR_BROKER_OK || let_go(w, bt) != WR_BROKER_OK) {
        return WR_BROKER_DOWN;
    }
    /* too few replicas: pause as in an outage (the rest is abandoned, not acked) */
    return unreplicated ? PAUSE : WR_BROKER_OK;
}

/* Commit and settle BT at once (nothing else to overlap with). */
static int complete(wr_worker *w, batch *bt)
{
    if (!bt->live) {
        return WR_BROKER_OK;
    }
    int rc = bt->commit_sent ? WR_BROKER_OK : commit_send(w, bt);
    return rc != WR_BROKER_OK ? rc : settle(w, bt);
}

/*
 * One turn with deliveries in CUR (see the top of this file): prepare and
 * claim CUR, commit PREV, run CUR, settle PREV. CUR is then the batch in
 * flight. Returns a WR_BROKER_* code, or PAUSE when Redis failed; on either
 * failure the caller abandons both batches.
 */
static int step(wr_worker *w, batch *cur, batch *prev)
{
    recycle_amqp_pool(&cur->pool);
    int rc = prepare_batch(w, cur);
    if (rc != WR_BROKER_OK) {
        return rc;
    }
    if (claim_send(w, cur) != 0) {
        wr_stat_add(&w->st->redis_errors, 1);
        return PAUSE;
    }
    if (prev->live && !prev->commit_sent && (rc = commit_send(w, prev)) != WR_BROKER_OK) {
        return rc;
    }
    if (claim_recv(w, cur) != 0) {
        wr_stat_add(&w->st->redis_errors, 1);
        return PAUSE;
    }
    if (w->lanes != NULL && prev->live && lanes_meet(prev, cur) &&
        (rc = settle(w, prev)) != WR_BROKER_OK) {
        /* an ordering key in both batches: PREV's outcome is known for good (its
         * commit read) before CUR's message of that key runs */
        return rc;
    }
    rc = run_batch(w, cur);
    if (rc != WR_BROKER_OK) {
        return rc;
    }
    if (prev->live) {
        rc = settle(w, prev);
    }
    return rc;
}

/* ---- the thread --------------------------------------------------------------------- */

/* Stop consuming and give back everything delivered but not handled. */
static void drain(wr_worker *w)
{
    if (w->b == NULL) {
        return;
    }
    wr_broker_cancel(w->b);
    amqp_envelope_t **tmp = w->batches[w->cur].taken;
    int n;
    if (!w->batches[w->cur].live) {
        while (wr_broker_take(w->b, tmp, w->sub->batch_size, 0, &n) == WR_BROKER_OK && n > 0) {
            for (int i = 0; i < n; i++) {
                wr_broker_release(tmp[i]);
            }
        }
    }
    drop_held(w);
    /* delivery tag 0 with multiple: every unacked delivery on the channel */
    wr_broker_nack(w->b, 0, 1, 1);
}

/* Settle whatever batch is in flight (before pausing, reloading or stopping).
 * Returns a WR_BROKER_* code or PAUSE. */
static int settle_all(wr_worker *w)
{
    int rc = complete(w, &w->batches[w->cur ^ 1]);
    if (rc == WR_BROKER_OK) {
        rc = complete(w, &w->batches[w->cur]);
    }
    return rc;
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
            remember_source(w, snap.source, snap.source_len, snap.version);
        }
    }
    w->lua_opts.timeout_ms = snap.timeout_ms;
    w->lua_opts.max_attempts = snap.retry.max_attempts;
    wr_lua_set_limits(w->lua, snap.timeout_ms, snap.retry.max_attempts);
    wr_retry_policy_copy(&w->retry, w->retry_delays, &snap.retry);
    wr_contracts_free(w->contracts); /* events from now on meet the new generation's */
    w->contracts = snap.contracts;
    snap.contracts = NULL;
    wr_live_snapshot_free(&snap);

    wr_retry_tiers tiers;
    wr_retry_tiers_of(&w->retry, &tiers);
    if (tiers.count == w->tiers.count &&
        memcmp(tiers.delay_ms, w->tiers.delay_ms, sizeof(int64_t) * (size_t)tiers.count) == 0) {
        return WR_BROKER_OK;
    }
    wr_topology topo;
    if (wr_topology_plan(w->sub, &tiers, &topo) != 0) {
        wr_logf(WR_LOG_ERROR,
                "%s: the new retry delays need queue names that are too long; "
                "keeping the old schedule",
                w->name);
        wr_retry_policy_copy(&w->retry, w->retry_delays, &w->sub->retry);
        return WR_BROKER_OK;
    }
    wr_topology_clear(&w->topo);
    wr_topology_move(&w->topo, &topo);
    wr_topology_prefer(&w->topo, w->index, w->sub->concurrency);
    w->tiers = tiers;
    /* the new delay queues must exist before the first retry copy goes to one */
    return w->b != NULL ? wr_broker_declare(w->b, &w->topo) : WR_BROKER_OK;
}

/* Close the broker connection (after abandon or settle). */
static void disconnect(wr_worker *w)
{
    wr_broker_destroy(w->b);
    w->b = NULL;
    recycle_amqp_pool(&w->gate_pool);
    w->gate_seq_end = 0;
}

/* After a failed step or settle: abandon what is in flight and close the
 * connection. RC is what failed. */
static void fail_turn(wr_worker *w, int rc)
{
    if (rc == PAUSE) {
        char why[512];
        snprintf(why, sizeof(why), "%s", w->idem ? wr_idem_error(w->idem) : "Redis failed");
        abandon(w, 1, why);
        /* a new connection when Redis answers: nothing owed on this one matters now */
        wr_idem_destroy(w->idem);
        w->idem = NULL;
        /* closing the connection returns every delivery we hold; we consume again
         * once Redis answers (connect_broker waits for it). Redis may answer PING
         * and still refuse what a batch needs (OOM at maxmemory, a read-only
         * replica): pauses in a row back off, or the worker would spin through
         * reconnects. */
        wr_logf(WR_LOG_WARN, "%s: pausing consumption until Redis answers", w->name);
        drain(w);
        disconnect(w);
        if (w->pause_backoff_ms > 0) {
            nap_for_redis(w, jittered(w, w->pause_backoff_ms));
        }
        w->pause_backoff_ms = w->pause_backoff_ms == 0                   ? BACKOFF_MIN_MS
                              : w->pause_backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                                         : w->pause_backoff_ms * 2;
        return;
    }
    const char *why = w->b ? wr_broker_error(w->b) : "broker connection lost";
    wr_logline l;
    wr_log_begin(&l, WR_LOG_ERROR, "broker connection lost");
    wr_log_str(&l, "subscription", w->sub->name);
    wr_log_int(&l, "worker", w->index);
    wr_log_str(&l, "error", why);
    wr_log_end(&l);
    /* the deliveries die with the connection; the records are given back */
    if (w->b != NULL) {
        disconnect(w);
    }
    w->broker_at++; /* a cluster: reconnect through the next node */
    abandon(w, 0, why);
    nap(w, BACKOFF_MIN_MS);
}

/* A turn of the loop ends with the worker going on (0), or with the
 * connection given up (-1: fail_turn was called; connect again). */
#define TURN_ON 0
#define TURN_LOST (-1)

/* A new handler version or policy was published: settle what is in flight on
 * the old one, then switch. */
static int turn_live(wr_worker *w)
{
    if (atomic_load(&w->live->gen) == w->live_gen) {
        return TURN_ON;
    }
    int rc = settle_all(w);
    if (rc == WR_BROKER_OK && apply_live(w) != WR_BROKER_OK) {
        wr_logf(WR_LOG_ERROR, "%s: declaring new delay queues failed: %s", w->name,
                wr_broker_error(w->b));
        rc = WR_BROKER_DOWN;
    }
    if (rc != WR_BROKER_OK) {
        fail_turn(w, rc);
        return TURN_LOST;
    }
    return TURN_ON;
}

/* The subscription's breaker: while it is open, stop consuming and wait
 * (*WAITED set); once it lets messages through again, consume again. */
static int turn_breaker(wr_worker *w, int *waited)
{
    int64_t wait_ms;
    *waited = 0;
    if (wr_shared_brk_blocks(w->brk, &wait_ms)) {
        *waited = 1;
        if (!w->paused) {
            /* stop consuming: what was delivered but not started goes back,
             * without counting an attempt; nothing burns retries meanwhile */
            int rc = settle_all(w);
            if (rc != WR_BROKER_OK) {
                fail_turn(w, rc);
                return TURN_LOST;
            }
            drain(w);
            w->paused = 1;
            wr_logline l;
            wr_log_begin(&l, WR_LOG_WARN, "consumption paused: circuit breaker open");
            wr_log_str(&l, "subscription", w->sub->name);
            wr_log_int(&l, "worker", w->index);
            wr_log_end(&l);
        }
        if (wr_broker_poll(w->b, (int)wait_ms) == WR_BROKER_DOWN) {
            fail_turn(w, WR_BROKER_DOWN);
            return TURN_LOST;
        }
        return TURN_ON;
    }
    if (w->paused) {
        if (wr_broker_consume_all(w->b, w->topo.consume, w->topo.consume_count, w->topo.consume_now,
                                  w->sub->prefetch) != WR_BROKER_OK) {
            fail_turn(w, WR_BROKER_DOWN);
            return TURN_LOST;
        }
        w->paused = 0;
        wr_logline l;
        wr_log_begin(&l, WR_LOG_INFO, "consumption resumed");
        wr_log_str(&l, "subscription", w->sub->name);
        wr_log_int(&l, "worker", w->index);
        wr_log_str(&l, "breaker", wr_brk_state_name(wr_shared_brk_state(w->brk)));
        wr_log_end(&l);
    }
    return TURN_ON;
}

/* Take the next batch and move both batches one step (see the top of this
 * file); with nothing new, finish the one in flight. */
static int turn_batches(wr_worker *w)
{
    batch *cur = &w->batches[w->cur];
    batch *prev = &w->batches[w->cur ^ 1];
    /* with a batch in flight, take only what is there: settling it must not
     * wait for new deliveries */
    int rc = take(w, cur, prev->live ? 0 : TAKE_TIMEOUT_MS);
    if (rc == WR_BROKER_OK && cur->n > 0 && !prev->live &&
        atomic_load(&w->live->gen) != w->live_gen && apply_live(w) != WR_BROKER_OK) {
        /* a new version came while this worker waited for deliveries: the
         * batch it took starts now, so on the new version (nothing is in
         * flight to settle first) */
        wr_logf(WR_LOG_ERROR, "%s: declaring new delay queues failed: %s", w->name,
                wr_broker_error(w->b));
        for (int i = 0; i < cur->n; i++) {
            wr_broker_release(cur->taken[i]); /* they go back with the connection */
        }
        cur->n = 0;
        rc = WR_BROKER_DOWN;
    }
    if (rc == WR_BROKER_OK && cur->n > 0 && !prev->live) {
        redis_check_idle(w);
    }
    if (rc == WR_BROKER_OK && cur->n > 0) {
        rc = step(w, cur, prev);
        if (rc == WR_BROKER_OK) {
            w->cur ^= 1; /* cur is in flight now */
        }
    } else if (rc == WR_BROKER_OK && prev->live) {
        rc = complete(w, prev);
    }
    if (rc == WR_BROKER_OK && gate_sweep(w) != WR_BROKER_OK) {
        /* nothing of a batch depends on it: what it did not send stays in
         * Redis for the next sweep; a broken connection shows at the next call */
        wr_logf(WR_LOG_WARN, "%s: sweep of parked messages interrupted", w->name);
    }
    if (rc != WR_BROKER_OK) {
        fail_turn(w, rc);
        return TURN_LOST;
    }
    if (cur->n > 0) {
        w->pause_backoff_ms = 0; /* a batch went through */
    }
    return TURN_ON;
}

/* One turn of a connected worker's loop. */
static int turn(wr_worker *w)
{
    int waited;
    if (turn_live(w) != TURN_ON || turn_breaker(w, &waited) != TURN_ON) {
        return TURN_LOST;
    }
    if (waited) {
        return TURN_ON;
    }
    if (wr_broker_blocked(w->b)) {
        /* the broker's memory or disk alarm: a publish now would block the
         * thread once TCP buffers fill; take no batch (each one may publish)
         * until it lifts, servicing the connection meanwhile */
        if (wr_broker_poll(w->b, TAKE_TIMEOUT_MS) == WR_BROKER_DOWN) {
            fail_turn(w, WR_BROKER_DOWN);
            return TURN_LOST;
        }
        return TURN_ON;
    }
    if (turn_batches(w) != TURN_ON) {
        return TURN_LOST;
    }
    if (!wr_broker_consuming(w->b) && !w->paused) {
        wr_logf(WR_LOG_WARN, "%s: consumer cancelled by the broker; reconnecting", w->name);
        int rc = settle_all(w);
        fail_turn(w, rc == WR_BROKER_OK ? WR_BROKER_DOWN : rc);
        return TURN_LOST;
    }
    return TURN_ON;
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
        while (!atomic_load(&w->flags->stop) && turn(w) == TURN_ON) {
        }
    }
    /* stopping: settle what is in flight, give back the rest */
    if (w->b != NULL) {
        int rc = settle_all(w);
        if (rc != WR_BROKER_OK) {
            fail_turn(w, rc);
        }
    }
    atomic_store(&w->st->connected, 0);
    atomic_store(&w->st->blocked, 0);
    drain(w);
    disconnect(w);
    wr_logf(WR_LOG_INFO, "%s: stopped", w->name);
    atomic_store(&w->done, 1);
    return NULL;
}

static int batch_init(batch *bt, int n, int max_writes)
{
    size_t bs = (size_t)n;
    bt->taken = calloc(bs, sizeof(*bt->taken));
    bt->items = calloc(bs, sizeof(*bt->items));
    bt->claims = calloc(bs, sizeof(*bt->claims));
    bt->fin = calloc(bs, sizeof(*bt->fin));
    bt->cmap = calloc(bs, sizeof(*bt->cmap));
    bt->fmap = calloc(bs, sizeof(*bt->fmap));
    bt->stores = calloc(bs, sizeof(*bt->stores));
    bt->links = calloc(bs, sizeof(*bt->links));
    bt->entries = calloc(bs, sizeof(*bt->entries));
    init_amqp_pool(&bt->pool, 16384);
    if (!bt->taken || !bt->items || !bt->claims || !bt->fin || !bt->cmap || !bt->fmap ||
        !bt->stores || !bt->links || !bt->entries) {
        return -1;
    }
    for (size_t i = 0; i < bs; i++) {
        if ((bt->stores[i] = wr_storebuf_create(max_writes)) == NULL) {
            return -1;
        }
    }
    return 0;
}

static void batch_free(batch *bt, int n)
{
    for (int i = 0; bt->stores != NULL && i < n; i++) {
        wr_storebuf_destroy(bt->stores[i]);
    }
    for (int i = 0; bt->links != NULL && i < n; i++) {
        wr_sb_result_free(&bt->links[i].held);
    }
    for (int i = 0; bt->entries != NULL && i < n; i++) {
        free(bt->entries[i]);
    }
    for (int i = 0; bt->items != NULL && i < n; i++) {
        wr_cloudevent_clear(&bt->items[i].ce);
    }
    empty_amqp_pool(&bt->pool);
    free(bt->taken);
    free(bt->items);
    free(bt->claims);
    free(bt->fin);
    free(bt->cmap);
    free(bt->fmap);
    free(bt->stores);
    free(bt->links);
    free(bt->entries);
}

wr_worker *wr_worker_start(const wr_config *cfg, const wr_subscription *sub, int index,
                           wr_live *live, wr_shared_brk *brk, wr_breakers *named,
                           wr_inflight *inflight, wr_run_flags *flags, wr_wstats *stats, char *err,
                           size_t errcap)
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
    w->inflight = inflight;
    w->max_body = sub->max_body_size > 0 ? (size_t)sub->max_body_size : 512 * 1024;
    snprintf(w->name, sizeof(w->name), "warren %s#%d", sub->name, index);
    pthread_mutex_init(&w->lua_lock, NULL);
    init_amqp_pool(&w->gate_pool, 4096);
    seed_rand(w);
    char rnd[17];
    hex_rand(w, rnd, 16);
    snprintf(w->token, sizeof(w->token), "%d-%d-%s", (int)getpid(), index, rnd);
    w->live = live;
    w->brk = brk;
    wr_sign_key_for(&w->sign, cfg);
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
    int bs = sub->batch_size;
    for (int b = 0; b < 2; b++) {
        /* one more write per gate: the done marks ride on a handled message's commit */
        if (batch_init(&w->batches[b], bs, cfg->store_max_writes + sub->gate_count) != 0) {
            snprintf(err, errcap, "out of memory");
            wr_live_snapshot_free(&snap);
            goto fail;
        }
    }
    w->held = calloc((size_t)(sub->prefetch + bs), sizeof(*w->held));
    if (sub->ordering.enabled && sub->ordering.source != WR_KEY_MESSAGE_ID &&
        (w->lanes = wr_lanes_create()) == NULL) {
        snprintf(err, errcap, "out of memory");
        wr_live_snapshot_free(&snap);
        goto fail;
    }
    w->store = (wr_lua_store){.fetch = chained_fetch,
                              .prefix = cfg->store_prefix ? cfg->store_prefix : "warren:store:",
                              .max_value_bytes = cfg->store_max_value_bytes > 0
                                                     ? (size_t)cfg->store_max_value_bytes
                                                     : 65536};
    if (w->held == NULL || scratch_room(w, bs) != 0) {
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
    wr_topology_prefer(&w->topo, index, sub->concurrency); /* its own partitions first */
    if (remember_source(w, snap.source, snap.source_len, snap.version) != 0) {
        snprintf(err, errcap, "out of memory");
        wr_live_snapshot_free(&snap);
        goto fail;
    }
    w->contracts = snap.contracts;
    snap.contracts = NULL;
    wr_live_snapshot_free(&snap);
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
    wr_contracts_free(w->contracts);
    wr_idem_destroy(w->idem);
    wr_topology_clear(&w->topo);
    for (int b = 0; b < 2; b++) {
        batch_free(&w->batches[b], w->sub->batch_size);
    }
    free(w->held);
    wr_lanes_destroy(w->lanes);
    empty_amqp_pool(&w->gate_pool);
    free(w->orphans);
    free(w->scratch);
    free(w->run_source);
    pthread_mutex_destroy(&w->lua_lock);
    free(w);
}
