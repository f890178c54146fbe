/*
 * reroute: a partitioned subscription's queue, fed into its partitions.
 * See reroute.h for what it promises; this file is the thread and the two
 * pure helpers it uses.
 */
#include "reroute.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "envelope.h"
#include "idkey.h"
#include "log.h"
#include "retry.h"
#include "topology.h"

#define ROUND_MAX 200            /* most messages re-routed per confirm round */
#define TAKE_TIMEOUT_MS 200      /* how long a round waits for the first delivery */
#define CONFIRM_TIMEOUT_MS 30000 /* a copy unconfirmed this long is taken as lost */

struct wr_reroute {
    const wr_config *cfg;
    const wr_subscription *sub;
    const atomic_int *app_stop; /* the process is stopping */
    atomic_int stop;            /* wr_reroute_stop() */
    pthread_t thread;
    wr_broker *b;
    int broker_at; /* which of amqp.urls to try next */
    wr_topology topo;
    char name[160]; /* the connection's name, for the broker's list and logs */
};

size_t wr_reroute_key(const wr_subscription *sub, const amqp_envelope_t *d, char *out, size_t cap)
{
    wr_envelope env;
    const char *reason = NULL;
    char detail[200], why[200];
    out[0] = '\0';
    /* decoded only as far as the key needs: an invalid message is the worker's
     * to dead-letter, from its partition, with its reason */
    wr_envelope_decode(d, (size_t)sub->max_body_size, 0, &env, &reason, detail, sizeof(detail));
    wr_idem_policy by = {
        .enabled = 1, .source = sub->ordering.source, .key_arg = sub->ordering.key_arg};
    char key[WR_IDKEY_MAX + 1];
    if (wr_idkey_derive(&by, &env, key, sizeof(key), why, sizeof(why)) == WR_RS_NONE) {
        return (size_t)snprintf(out, cap, "%s", key) >= cap ? cap - 1 : strlen(out);
    }
    if (d->message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
        amqp_bytes_t id = d->message.properties.message_id;
        size_t n = id.len < cap - 1 ? id.len : cap - 1;
        memcpy(out, id.bytes, n);
        out[n] = '\0';
        return n;
    }
    return 0;
}

int wr_reroute_props(amqp_pool_t *pool, const amqp_basic_properties_t *orig, const char *key,
                     amqp_basic_properties_t *out)
{
    *out = *orig;
    const amqp_table_t *h =
        (orig->_flags & AMQP_BASIC_HEADERS_FLAG) ? &orig->headers : &amqp_empty_table;
    amqp_table_entry_t *e = amqp_pool_alloc(pool, sizeof(*e) * ((size_t)h->num_entries + 1));
    size_t klen = strlen(key);
    void *kcopy = amqp_pool_alloc(pool, klen > 0 ? klen : 1);
    if (e == NULL || kcopy == NULL) {
        return -1;
    }
    memcpy(kcopy, key, klen);
    int n = 0;
    for (int i = 0; i < h->num_entries; i++) {
        const amqp_bytes_t k = h->entries[i].key;
        if (k.len == strlen(WR_TOPO_PARTITION_HEADER) &&
            memcmp(k.bytes, WR_TOPO_PARTITION_HEADER, k.len) == 0) {
            continue;
        }
        e[n++] = h->entries[i];
    }
    e[n].key = amqp_cstring_bytes(WR_TOPO_PARTITION_HEADER);
    e[n].value.kind = AMQP_FIELD_KIND_UTF8;
    e[n].value.value.bytes = (amqp_bytes_t){.len = klen, .bytes = kcopy};
    n++;
    out->headers = (amqp_table_t){.num_entries = n, .entries = e};
    out->_flags |= AMQP_BASIC_HEADERS_FLAG;
    return 0;
}

static void nap(wr_reroute *r, int ms)
{
    while (ms > 0 && !atomic_load(&r->stop) && !atomic_load(r->app_stop)) {
        int step = ms < 100 ? ms : 100;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static int stopping(const wr_reroute *r)
{
    return atomic_load(&r->stop) || atomic_load(r->app_stop);
}

/* Connect, declare the subscription's topology and consume its queue. 0 or -1. */
static int connect(wr_reroute *r)
{
    char err[512];
    const wr_config *cfg = r->cfg;
    r->b = wr_broker_create(wr_config_amqp_url(cfg, r->broker_at),
                            (int)(cfg->amqp_heartbeat_ms / 1000), cfg->amqp_connect_timeout_ms,
                            r->name, err, sizeof(err));
    if (r->b == NULL) {
        wr_logf(WR_LOG_WARN, "%s: cannot connect: %s", r->name, err);
        r->broker_at++;
        return -1;
    }
    if (wr_broker_declare(r->b, &r->topo) != WR_BROKER_OK ||
        wr_broker_consume(r->b, r->sub->queue, r->sub->prefetch) != WR_BROKER_OK) {
        wr_logf(WR_LOG_ERROR, "%s: %s", r->name, wr_broker_error(r->b));
        wr_broker_destroy(r->b);
        r->b = NULL;
        return -1;
    }
    wr_logline l;
    wr_log_begin(&l, WR_LOG_INFO, "re-routing the queue into its partitions");
    wr_log_str(&l, "subscription", r->sub->name);
    wr_log_str(&l, "queue", r->sub->queue);
    wr_log_str(&l, "exchange", r->topo.partition_exchange);
    wr_log_int(&l, "partitions", r->topo.partition_count);
    wr_log_end(&l);
    return 0;
}

/*
 * One round: take what is there (up to ROUND_MAX), publish the copies, wait
 * for their confirms, ack the originals whose copies (and every earlier one's)
 * the broker took, return the rest. Returns WR_BROKER_OK or WR_BROKER_DOWN.
 */
static int round_trip(wr_reroute *r, amqp_envelope_t **taken, amqp_pool_t *pool)
{
    if (wr_broker_blocked(r->b)) {
        /* the broker's memory or disk alarm: a publish could block the thread for
         * good; take nothing (each message means a publish) until it lifts */
        int prc = wr_broker_poll(r->b, TAKE_TIMEOUT_MS);
        return prc == WR_BROKER_DOWN ? prc : WR_BROKER_OK;
    }
    int n = 0;
    int rc = wr_broker_take(r->b, taken, ROUND_MAX, TAKE_TIMEOUT_MS, &n);
    if (rc != WR_BROKER_OK || n == 0) {
        return rc == WR_BROKER_TIMEOUT ? WR_BROKER_OK : rc;
    }
    recycle_amqp_pool(pool);
    uint64_t first = wr_broker_next_seq(r->b), end = first;
    int sent = 0;
    for (int i = 0; i < n && rc == WR_BROKER_OK; i++) {
        char key[WR_IDKEY_MAX + 1];
        amqp_basic_properties_t props;
        wr_reroute_key(r->sub, taken[i], key, sizeof(key));
        if (wr_reroute_props(pool, &taken[i]->message.properties, key, &props) != 0) {
            break;
        }
        uint64_t seq;
        rc = wr_broker_publish(r->b, amqp_cstring_bytes(r->topo.partition_exchange),
                               taken[i]->routing_key, 1, &props, taken[i]->message.body, &seq);
        if (rc == WR_BROKER_OK) {
            end = seq + 1;
            sent++;
        }
    }
    if (rc == WR_BROKER_OK && end > first) {
        rc = wr_broker_confirm_wait(r->b, end, CONFIRM_TIMEOUT_MS);
    }
    int ok = 0; /* copies taken by the broker, in order, before the first that was not */
    while (rc == WR_BROKER_OK && ok < sent &&
           wr_broker_confirm_state(r->b, first + (uint64_t)ok) == WR_PUB_ACKED) {
        ok++;
    }
    if (rc == WR_BROKER_OK && ok > 0) {
        rc = wr_broker_ack(r->b, taken[ok - 1]->delivery_tag, 1);
    }
    if (rc == WR_BROKER_OK && ok < n) {
        /* the rest go back, in order, ahead of what came after them */
        wr_logf(WR_LOG_ERROR,
                "%s: the broker did not take %d re-routed cop%s (is a partition queue missing?):"
                " back to the queue",
                r->name, n - ok, n - ok == 1 ? "y" : "ies");
        wr_broker_nack(r->b, taken[ok]->delivery_tag, 1, 1);
        rc = WR_BROKER_DOWN; /* declare everything anew */
    }
    if (r->b != NULL && end > first) {
        wr_broker_confirm_release(r->b, end);
    }
    for (int i = 0; i < n; i++) {
        wr_broker_release(taken[i]);
    }
    return rc;
}

static void *reroute_main(void *arg)
{
    wr_reroute *r = arg;
    amqp_envelope_t *taken[ROUND_MAX];
    amqp_pool_t pool;
    init_amqp_pool(&pool, 16384);
    int backoff = 200;
    while (!stopping(r)) {
        if (r->b == NULL) {
            if (connect(r) != 0) {
                nap(r, backoff);
                backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
                continue;
            }
            backoff = 200;
        }
        if (round_trip(r, taken, &pool) != WR_BROKER_OK) {
            wr_logf(WR_LOG_WARN, "%s: connection lost: %s", r->name, wr_broker_error(r->b));
            wr_broker_destroy(r->b); /* the broker requeues what was not acked */
            r->b = NULL;
        }
    }
    if (r->b != NULL) {
        wr_broker_cancel(r->b);
        wr_broker_nack(r->b, 0, 1, 1);
        wr_broker_destroy(r->b);
        r->b = NULL;
    }
    empty_amqp_pool(&pool);
    return NULL;
}

wr_reroute *wr_reroute_start(const wr_config *cfg, const wr_subscription *sub,
                             const atomic_int *stop, char *err, size_t errcap)
{
    wr_reroute *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    r->cfg = cfg;
    r->sub = sub;
    r->app_stop = stop;
    atomic_init(&r->stop, 0);
    snprintf(r->name, sizeof(r->name), "warren %.100s reroute", sub->name);
    wr_retry_tiers tiers;
    wr_retry_tiers_of(&sub->retry, &tiers);
    if (sub->partitions <= 0 || wr_topology_plan(sub, &tiers, &r->topo) != 0) {
        snprintf(err, errcap, "subscription %s: no partition topology", sub->name);
        free(r);
        return NULL;
    }
    if (pthread_create(&r->thread, NULL, reroute_main, r) != 0) {
        snprintf(err, errcap, "cannot start a thread");
        wr_topology_clear(&r->topo);
        free(r);
        return NULL;
    }
    return r;
}

void wr_reroute_stop(wr_reroute *r)
{
    if (r == NULL) {
        return;
    }
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    wr_topology_clear(&r->topo);
    free(r);
}
