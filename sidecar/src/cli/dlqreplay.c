/*
 * dlqreplay: `warren dlq replay`, DLQ messages back to their queue. See
 * dlqreplay.h.
 *
 * Redis is reached through rconn.h (HMGET of the record, DEL, the journal's
 * RPUSH); the copies go out through a wr_broker (confirm mode) on a
 * connection of their own, apart from the reader's.
 */
#include "dlqreplay.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "dlqrender.h"
#include "dlq.h"
#include "envelope.h"
#include "idem.h"
#include "idkey.h"
#include "journal.h"
#include "log.h"
#include "rconn.h"
#include "record.h"
#include "sign.h"

#define XW "x-warren-"

typedef struct {
    wr_rconn *rc;
    char err[1200];
} redis_conn;

static int redis_open(redis_conn *r, const wr_config *cfg)
{
    char err[512];
    r->rc = wr_rconn_create(&cfg->redis, cfg->redis_timeout_ms, NULL, 0, err, sizeof(err));
    if (r->rc == NULL) {
        snprintf(r->err, sizeof(r->err), "cannot connect to %s: %s", cfg->redis.redacted, err);
        return -1;
    }
    return 0;
}

static void redis_close(redis_conn *r)
{
    wr_rconn_destroy(r->rc);
    r->rc = NULL;
}

/* Read STATE and OUTCOME of KEY (empty when absent), and the journal entry a
 * done record keeps (*ENTRY, malloc'd; NULL when none). Returns 0, or -1. */
static int redis_record(redis_conn *r, const char *key, char *state, char *outcome, size_t cap,
                        char **entry)
{
    state[0] = outcome[0] = '\0';
    *entry = NULL;
    wr_record rec;
    redisReply *hold = NULL;
    int rc = wr_rconn_read_record(r->rc, key, &rec, &hold, r->err, sizeof(r->err));
    if (rc == 0 && rec.state != 0) {
        snprintf(state, cap, "%s", wr_record_state_name(rec.state));
        if (rec.state == 'd') {
            snprintf(outcome, cap, "%.*s", (int)rec.outcome_len, rec.outcome);
            if (rec.entry_len > 0) {
                *entry = strndup(rec.entry, rec.entry_len);
            }
        }
    }
    freeReplyObject(hold);
    return rc;
}

/* Before a done record is reset: the journal entry it keeps (the event's last
 * step) moves to the event's journal list, so `warren trace` still shows it.
 * Best effort. */
static void keep_entry(redis_conn *r, const wr_config *cfg, const wr_subscription *sub,
                       const char *record_key, const char *entry)
{
    size_t skip = strlen(sub->idem.prefix) + strlen(sub->name) + 1;
    char jkey[WR_IDKEY_MAX + 320];
    if (entry == NULL || strlen(record_key) <= skip ||
        wr_journal_key(sub->idem.prefix, sub->name, record_key + skip, jkey, sizeof(jkey)) != 0) {
        return;
    }
    redisReply *rep = wr_rconn_commandf(r->rc, "RPUSH %s %s", jkey, entry);
    freeReplyObject(rep);
    rep = wr_rconn_commandf(r->rc, "PEXPIRE %s %lld", jkey, (long long)cfg->journal_ttl_ms);
    freeReplyObject(rep);
}

static int redis_del(redis_conn *r, const char *key)
{
    redisReply *rep = wr_rconn_commandf(r->rc, "DEL %s", key);
    int rc = rep != NULL && rep->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (rc != 0) {
        snprintf(r->err, sizeof(r->err), "DEL %s: %s", key,
                 rep && rep->type == REDIS_REPLY_ERROR ? rep->str : wr_rconn_error(r->rc));
    }
    freeReplyObject(rep);
    return rc;
}

/* The full Redis key of M (as the worker derives it) into OUT; -1 when it has none. */
static int record_key(const wr_subscription *sub, const wr_dlqread_msg *m, char *out, size_t cap,
                      char *why, size_t whycap)
{
    const wr_idem_policy *pol = &sub->idem;
    amqp_envelope_t d;
    memset(&d, 0, sizeof(d));
    d.channel = WR_DLQREAD_CHANNEL;
    d.delivery_tag = m->tag;
    d.exchange = m->exchange;
    d.routing_key = m->routing_key;
    d.message = m->msg;
    wr_envelope env;
    const char *reason = NULL;
    int require_id = !(pol->source != WR_KEY_MESSAGE_ID || pol->missing_key_hash);
    /* a message too large for the subscription still has a key: do not cap the body */
    if (wr_envelope_decode(&d, (size_t)-1 / 2, require_id, &env, &reason, why, whycap) != 0 &&
        env.body.bytes == NULL) {
        return -1;
    }
    char key[WR_IDKEY_MAX + 1];
    if (wr_idkey_derive(pol, &env, key, sizeof(key), why, whycap) != 0) {
        return -1;
    }
    wr_record_key(pol->prefix, sub->name, key, out, cap);
    return 0;
}

/* Build the replayed copy's properties in POOL. */
static int replay_props(amqp_pool_t *pool, const wr_dlqread_msg *m, const wr_sign_key *sign,
                        amqp_basic_properties_t *out)
{
    const amqp_table_t *old = wr_dlqread_headers(&m->msg.properties);
    int old_n = old ? old->num_entries : 0;
    *out = m->msg.properties;
    out->_flags &= ~(AMQP_BASIC_EXPIRATION_FLAG | AMQP_BASIC_USER_ID_FLAG);
    out->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    out->delivery_mode = AMQP_DELIVERY_PERSISTENT;
    amqp_table_entry_t *e = amqp_pool_alloc(pool, sizeof(*e) * (size_t)(old_n + 4));
    char *now = amqp_pool_alloc(pool, 32);
    char *tp = amqp_pool_alloc(pool, 64);
    char *sig = amqp_pool_alloc(pool, WR_SIGN_LEN + 1);
    if (e == NULL || now == NULL || tp == NULL || sig == NULL) {
        return -1;
    }
    int n = 0, has_tp = 0;
    int64_t count = 0;
    wr_table_get_int(old, XW "replay-count", &count);
    for (int i = 0; i < old_n; i++) {
        amqp_bytes_t k = old->entries[i].key;
        if (wr_dlqread_bytes_is(k, "traceparent")) {
            has_tp = 1;
        }
        /* the story starts over: keep only the route and the trace */
        if (k.len >= strlen(XW) && memcmp(k.bytes, XW, strlen(XW)) == 0 &&
            !wr_dlqread_bytes_is(k, XW "original-exchange") &&
            !wr_dlqread_bytes_is(k, XW "original-routing-key") &&
            !wr_dlqread_bytes_is(k, XW "trace-id")) {
            continue;
        }
        e[n++] = old->entries[i];
    }
    wr_format_time(wr_now_ms(), now, 32);
    e[n].key = amqp_cstring_bytes(XW "replayed-at");
    e[n].value.kind = AMQP_FIELD_KIND_UTF8;
    e[n++].value.value.bytes = amqp_cstring_bytes(now);
    e[n].key = amqp_cstring_bytes(XW "replay-count");
    e[n].value.kind = AMQP_FIELD_KIND_I32;
    e[n++].value.value.i32 = (int32_t)(count + 1);
    /* the route it keeps, signed as warren's (sign.h): its attempts start over */
    if (wr_table_get(old, XW "original-exchange") != NULL) {
        amqp_bytes_t id = (m->msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
                              ? m->msg.properties.message_id
                              : amqp_empty_bytes;
        wr_sign(sign, id, 0, wr_table_get_str(old, XW "original-exchange"),
                wr_table_get_str(old, XW "original-routing-key"), sig);
        e[n].key = amqp_cstring_bytes(WR_SIGN_HEADER);
        e[n].value.kind = AMQP_FIELD_KIND_UTF8;
        e[n++].value.value.bytes = amqp_cstring_bytes(sig);
    }
    /* no traceparent of its own: carry the trace the DLQ copy recorded */
    amqp_bytes_t trace = wr_table_get_str(old, XW "trace-id");
    if (!has_tp && trace.len == 32) {
        unsigned span = (unsigned)rand() ^ (unsigned)wr_now_ms();
        snprintf(tp, 64, "00-%.32s-%08x%08x-01", (const char *)trace.bytes, span,
                 (unsigned)rand() | 1u);
        e[n].key = amqp_cstring_bytes("traceparent");
        e[n].value.kind = AMQP_FIELD_KIND_UTF8;
        e[n++].value.value.bytes = amqp_cstring_bytes(tp);
    }
    out->headers.num_entries = n;
    out->headers.entries = e;
    return 0;
}

static void sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (time_t)(ms / 1000) * 1000) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/*
 * Append a "replayed" entry to M's journal (journal.h): when (TS, taken before
 * the copy was published, so the timeline stays in order even when a worker
 * handles the copy before this is written), by whom, what became of the
 * record; UNSURE when the copy went out but its confirm never came (the
 * broker went away): it may have been taken and handled, so the timeline
 * must show it. Best effort: a failure is reported on stderr and changes
 * nothing.
 */
static void journal_replayed(wr_idem *jd, const wr_config *cfg, const wr_subscription *sub,
                             const wr_dlqread_msg *m, const char *record_key, const char *action,
                             int unsure, int64_t ts)
{
    size_t skip = strlen(sub->idem.prefix) + strlen(sub->name) + 1;
    char jkey[WR_IDKEY_MAX + 320], by[160], trace[33] = "";
    if (jd == NULL || strlen(record_key) <= skip ||
        wr_journal_key(sub->idem.prefix, sub->name, record_key + skip, jkey, sizeof(jkey)) != 0) {
        return;
    }
    const char *user = getenv("USER");
    snprintf(by, sizeof(by), "warren dlq replay%s%s%s", user ? " (" : "", user ? user : "",
             user ? ")" : "");
    amqp_bytes_t t = wr_dlqread_header(m, XW "trace-id");
    if (t.len == 32) {
        memcpy(trace, t.bytes, 32);
        trace[32] = '\0';
    }
    char reason[64];
    snprintf(reason, sizeof(reason), "%.*s", (int)wr_dlqread_header(m, XW "reason").len,
             (const char *)wr_dlqread_header(m, XW "reason").bytes);
    wr_journal_entry e = wr_journal_entry_init(WR_JOURNAL_REPLAYED);
    e.ts_ms = ts;
    e.by = by;
    e.message_id = wr_dlqread_id(m).bytes;
    e.message_id_len = wr_dlqread_id(m).len;
    e.reason = reason;
    e.queue = sub->queue;
    e.trace_id = trace;
    char note[300];
    snprintf(note, sizeof(note), "from %s; record %s%s", sub->dlq, action,
             unsure ? "; not confirmed (the broker went away): the copy may have gone through,"
                      " the DLQ copy stays"
                    : "");
    e.note = note;
    char *text = wr_journal_encode(&e);
    const char *const entries[1] = {text};
    wr_idem_jlist l = {.key = jkey, .entries = entries, .count = 1};
    if (text == NULL ||
        wr_idem_journal(jd, &l, 1, cfg->journal_max_entries, cfg->journal_ttl_ms) != 0) {
        fprintf(stderr, "warren dlq: the journal entry of the replay was not written: %s\n",
                text ? wr_idem_error(jd) : "out of memory");
    }
    free(text);
}

/* One message of a replay and what became of it. */
typedef struct {
    wr_dlqread_msg *m;
    const wr_dlqread_group *g;
    size_t gone;                  /* copies of its id taken out of the DLQ */
    int have_key;                 /* KEY is its idempotency record's */
    char key[WR_IDKEY_MAX + 256]; /* its record's Redis key */
    char why[256];                /* why it has no key */
    char state[32], outcome[32];  /* of the record ("" when absent) */
    const char *action;           /* what was done to the record */
    const char *result;           /* what became of the message */
} replay_item;

/* A replay in progress: its connections and counts. */
typedef struct {
    const wr_dlqreplay_opts *o;
    const wr_config *cfg;
    const wr_subscription *sub;
    wr_dlqreader *r;
    redis_conn rd;
    wr_sign_key sign;
    wr_broker *b;
    wr_idem *jd; /* the journal's connection */
    int fail;    /* a message was not replayed */
    int down;    /* the broker connection is lost */
    size_t replayed, removed;
    json_t *out; /* --json: the entries */
} replay;

/* Say what the replay did with IT (a line and its record, or a JSON entry into OUT). */
static void print_replayed(const wr_dlqreplay_opts *o, const wr_subscription *sub,
                           const replay_item *it, json_t *out)
{
    const wr_dlqread_msg *m = it->m;
    const wr_dlqread_group *g = it->g;
    if (o->json) {
        json_t *j = wr_dlqrender_summary_json(m, g->copies);
        json_object_set_new(j, "copies_removed", json_integer((json_int_t)it->gone));
        json_object_set_new(j, "record", it->have_key ? json_string(it->key) : json_null());
        json_object_set_new(j, "record_state", json_string(it->state));
        json_object_set_new(j, "record_outcome", json_string(it->outcome));
        json_object_set_new(j, "record_action", json_string(it->action));
        json_object_set_new(j, "result", json_string(it->result));
        json_array_append_new(out, j);
    } else {
        char hb[WR_DLQREAD_HANDLE_CAP];
        printf("%s ", o->dry_run ? "would replay" : "replay");
        wr_dlqrender_field(stdout, wr_dlqread_handle(m, hb));
        printf(" (%.*s) to %s: %s", (int)wr_dlqread_header(m, XW "reason").len,
               (const char *)wr_dlqread_header(m, XW "reason").bytes, sub->queue, it->result);
        if (g->copies > 1 && o->dry_run) {
            printf("; its %zu copies in the DLQ would all be removed", g->copies);
        } else if (g->copies > 1) {
            printf("; %zu of its %zu copies removed from the DLQ", it->gone, g->copies);
        }
        printf("\n");
        if (it->have_key) {
            printf("  record %s: %s%s%s, %s\n", it->key, it->state[0] ? it->state : "absent",
                   it->outcome[0] ? "/" : "", it->outcome, it->action);
        } else if (sub->idem.enabled) {
            printf("  no idempotency key: %s\n", it->why);
        }
    }
}

/* Publish M's copy to SUB's queue (confirmed, 10 s at most). *SENT: it went
 * out; *DOWN: the connection is lost. Returns the copy's state. */
static wr_pub_state send_copy(wr_broker *b, const wr_subscription *sub, wr_dlqread_msg *m,
                              const wr_sign_key *sign, int *sent, int *down)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_basic_properties_t props;
    uint64_t seq = 0;
    int prc = replay_props(&pool, m, sign, &props);
    wr_pub_state ps = WR_PUB_PENDING;
    if (prc == 0) {
        prc = wr_broker_publish(b, amqp_cstring_bytes(""), amqp_cstring_bytes(sub->queue), 1,
                                &props, m->msg.body, &seq);
        if (prc == WR_BROKER_OK) {
            *sent = 1;
            prc = wr_broker_confirm_wait(b, seq + 1, 10000);
        }
        ps = prc == WR_BROKER_OK ? wr_broker_confirm_state(b, seq) : WR_PUB_PENDING;
        *down = prc == WR_BROKER_DOWN || prc == WR_BROKER_CONFLICT;
        wr_broker_confirm_release(b, seq + 1); /* before the pool it points into goes */
    }
    empty_amqp_pool(&pool);
    return ps;
}

/* The connections a replay needs: Redis for the records (a dry run shows
 * them when it can), the journal's, and the broker (tried node by node).
 * Returns -1 when one that is needed cannot be had (said on stderr). */
static int open_replay(const wr_dlqreplay_opts *o, const wr_config *cfg, const wr_subscription *sub,
                       size_t nsel, redis_conn *rd, wr_idem **jd, wr_broker **b)
{
    if (!o->dry_run && sub->idem.enabled && redis_open(rd, cfg) != 0) {
        fprintf(stderr, "warren dlq: %s\n", rd->err);
        return -1;
    }
    if (o->dry_run && sub->idem.enabled && redis_open(rd, cfg) != 0) {
        fprintf(stderr, "warren dlq: %s (records not shown)\n", rd->err);
        redis_close(rd);
    }
    if (!o->dry_run && nsel > 0 && sub->idem.enabled && cfg->journal_enabled) {
        char jerr[256];
        *jd = wr_idem_create(&cfg->redis, cfg->redis_timeout_ms, jerr, sizeof(jerr));
        if (*jd == NULL) {
            fprintf(stderr, "warren dlq: journal entries will not be written: %s\n", jerr);
        }
    }
    if (!o->dry_run && nsel > 0) {
        char berr[256];
        for (int k = 0; *b == NULL && k <= cfg->amqp_alt_count; k++) {
            *b = wr_broker_create(wr_config_amqp_url(cfg, k), 0, cfg->amqp_connect_timeout_ms,
                                  "warren dlq replay", berr, sizeof(berr));
        }
        if (*b == NULL) {
            fprintf(stderr, "warren dlq: %s\n", berr);
            return -1;
        }
    }
    return 0;
}

/* Ack every copy of G's id in the DLQ; *GONE counts them. 1 when all were acked. */
static int ack_copies(wr_dlqreader *r, const wr_dlqread_group *g, size_t *gone)
{
    int acked = 1;
    for (size_t c = g->first; c != WR_DLQREAD_NONE; c = r->msgs[c].next) {
        if (wr_dlqread_ack(r, &r->msgs[c]) == 0) {
            (*gone)++;
        } else {
            acked = 0;
        }
    }
    return acked;
}

/*
 * The record of IT's message: its key, its state, and what a replay does to
 * it (reset unless its outcome is ok or a worker holds it); the reset itself
 * unless this is a dry run. Returns 0, or -1 when Redis failed (said).
 */
static int reset_record(replay *rp, replay_item *it)
{
    const wr_subscription *sub = rp->sub;
    char *entry = NULL;
    it->action = "nothing to reset";
    it->have_key = sub->idem.enabled &&
                   record_key(sub, it->m, it->key, sizeof(it->key), it->why, sizeof(it->why)) == 0;
    if (it->have_key && rp->rd.rc != NULL &&
        redis_record(&rp->rd, it->key, it->state, it->outcome, sizeof(it->state), &entry) != 0) {
        fprintf(stderr, "warren dlq: %s\n", rp->rd.err);
        return -1;
    }
    if (it->have_key && it->state[0] != '\0') {
        if (strcmp(it->outcome, "ok") == 0) {
            it->action = "kept (outcome ok: the replay will be acked as a duplicate)";
        } else if (strcmp(it->state, "processing") == 0) {
            it->action = "kept (a worker holds it: the replay waits for its lease)";
        } else {
            it->action = rp->o->dry_run ? "would be reset" : "reset";
        }
    }
    int reset = !rp->o->dry_run && strcmp(it->action, "reset") == 0;
    if (reset && rp->cfg->journal_enabled) {
        keep_entry(&rp->rd, rp->cfg, sub, it->key, entry);
    }
    free(entry);
    if (reset && redis_del(&rp->rd, it->key) != 0) {
        fprintf(stderr, "warren dlq: %s\n", rp->rd.err);
        return -1;
    }
    return 0;
}

/* Send IT's message back (at the replay's rate) and, once its copy is
 * confirmed, take every copy of its id out of the DLQ; else return it to the
 * DLQ. Sets IT->result and journals the replay. */
static void send_back(replay *rp, replay_item *it)
{
    if (rp->replayed > 0 && rp->o->rate > 0) {
        sleep_ms(1000.0 / rp->o->rate);
    }
    int64_t sent_at = wr_now_ms();
    int sent = 0;
    wr_pub_state ps = send_copy(rp->b, rp->sub, it->m, &rp->sign, &sent, &rp->down);
    if (ps == WR_PUB_ACKED) {
        /* one copy went back: every copy of the id leaves the DLQ */
        int acked = ack_copies(rp->r, it->g, &it->gone);
        rp->removed += it->gone;
        if (!acked) {
            it->result = "replayed, but the DLQ ack failed (it may be replayed twice)";
            rp->fail = 1;
        } else {
            it->result = "replayed";
            rp->replayed++;
        }
        if (it->have_key) {
            journal_replayed(rp->jd, rp->cfg, rp->sub, it->m, it->key, it->action, 0, sent_at);
        }
        return;
    }
    if (sent && ps == WR_PUB_PENDING && it->have_key) {
        journal_replayed(rp->jd, rp->cfg, rp->sub, it->m, it->key, it->action, 1, sent_at);
    }
    wr_dlqread_return(rp->r, it->m);
    it->result = ps == WR_PUB_RETURNED ? "not replayed: unroutable (no queue?)"
                 : ps == WR_PUB_NACKED ? "not replayed: the broker refused the copy"
                                       : "not replayed: the copy was not confirmed";
    rp->fail = 1;
}

/* Say why IT was not replayed. 1 when the replay must stop (the broker is gone). */
static int not_replayed(const replay *rp, const replay_item *it)
{
    const char *why_b = wr_broker_error(rp->b);
    amqp_bytes_t id = wr_dlqread_id(it->m);
    fprintf(stderr, "warren dlq: %.*s: %s%s%s; it stays in %s\n", (int)id.len,
            (const char *)id.bytes, it->result, why_b[0] ? ": " : "", why_b, rp->sub->dlq);
    if (rp->down) {
        fprintf(stderr,
                "warren dlq: the broker connection is lost: stopping; the "
                "remaining messages stay in %s\n",
                rp->sub->dlq);
    }
    return rp->down;
}

/* The replay's last words (and the --json entries), then its connections closed. */
static void finish_replay(replay *rp, size_t nsel)
{
    const wr_subscription *sub = rp->sub;
    if (rp->o->json) {
        wr_dlqrender_print_json(rp->out);
    } else {
        json_decref(rp->out);
        if (rp->o->dry_run) {
            printf("dry run: %zu message(s) would be replayed from %s; nothing changed\n", nsel,
                   sub->dlq);
        } else {
            printf("replayed %zu of %zu message(s) from %s to %s", rp->replayed, nsel, sub->dlq,
                   sub->queue);
            if (rp->removed != rp->replayed) {
                printf(" (%zu copies removed from the DLQ)", rp->removed);
            }
            printf("\n");
        }
    }
    if (rp->b != NULL) {
        wr_broker_destroy(rp->b);
    }
    if (wr_idem_settle(rp->jd) != 0) {
        fprintf(stderr, "warren dlq: journal entries of the replay may be missing: %s\n",
                wr_idem_error(rp->jd));
    }
    wr_idem_destroy(rp->jd);
    if (rp->rd.rc != NULL) {
        redis_close(&rp->rd);
    }
}

int wr_dlqreplay_run(const wr_dlqreplay_opts *o, const wr_config *cfg, const wr_subscription *sub,
                     wr_dlqreader *r, const size_t *sel, size_t nsel)
{
    replay rp = {.o = o, .cfg = cfg, .sub = sub, .r = r, .out = json_array()};
    wr_sign_key_for(&rp.sign, cfg);
    size_t todo = nsel;
    if (open_replay(o, cfg, sub, nsel, &rp.rd, &rp.jd, &rp.b) != 0) {
        rp.fail = 1;
        todo = 0;
    }
    for (size_t i = 0; i < todo; i++) {
        replay_item it = {.g = &r->groups[sel[i]], .result = "dry-run"};
        it.m = &r->msgs[it.g->rep];
        if (reset_record(&rp, &it) != 0) {
            rp.fail = 1;
            break;
        }
        if (!o->dry_run) {
            send_back(&rp, &it);
        }
        print_replayed(o, sub, &it, rp.out);
        if (!o->dry_run && strncmp(it.result, "not", 3) == 0 && not_replayed(&rp, &it)) {
            break;
        }
    }
    finish_replay(&rp, nsel);
    return rp.fail;
}
