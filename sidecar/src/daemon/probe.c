/*
 * probe: Redis health and queue depths, on their own thread. See probe.h.
 */
#include "probe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "idem.h"
#include "log.h"
#include "retry.h"
#include "topology.h"

#define REDIS_EVERY_MS 1000
#define REDIS_DOWN_EVERY_MS 250 /* while it does not answer: notice its return quickly */

static atomic_uint redis_returns; /* wr_probe_redis_returns */
static atomic_int redis_down;     /* the last check failed */

unsigned wr_probe_redis_returns(void)
{
    return atomic_load(&redis_returns);
}

static void redis_seen(int up)
{
    if (up && atomic_exchange(&redis_down, 0)) {
        atomic_fetch_add(&redis_returns, 1);
    } else if (!up) {
        atomic_store(&redis_down, 1);
    }
}

struct wr_probe {
    pthread_t thread;
    atomic_int stop;
    const wr_config *cfg;
    wr_reloader *rel;
    wr_metrics *m;
    wr_idem *redis;
    wr_broker *b;
    int broker_at; /* which broker address next (wr_config_amqp_url) */
};

static void check_redis(wr_probe *p)
{
    char err[512] = "";
    if (p->redis != NULL && wr_idem_ping(p->redis) == 0) {
        wr_metrics_set_redis(p->m, 1, NULL);
        redis_seen(1);
        return;
    }
    if (p->redis != NULL) {
        snprintf(err, sizeof(err), "%s", wr_idem_error(p->redis));
        wr_idem_destroy(p->redis);
    }
    p->redis = wr_idem_create(&p->cfg->redis, p->cfg->redis_timeout_ms, err, sizeof(err));
    if (p->redis != NULL && wr_idem_ping(p->redis) == 0) {
        wr_metrics_set_redis(p->m, 1, NULL);
        redis_seen(1);
        return;
    }
    wr_metrics_set_redis(p->m, 0, err);
    redis_seen(0);
}

/* Read every queue of subscription I. Returns 0, or -1 when the connection broke
 * (a missing queue closes the channel: the next poll connects again). */
static int poll_sub(wr_probe *p, int i)
{
    const wr_subscription *s = &p->cfg->subs[i];
    wr_live_snapshot snap;
    if (wr_live_snapshot_take(wr_reloader_live(p->rel, i), &snap) != 0) {
        wr_live_snapshot_free(&snap);
        return 0;
    }
    wr_retry_tiers tiers;
    wr_retry_tiers_of(&snap.retry, &tiers);
    wr_live_snapshot_free(&snap);
    wr_topology t;
    if (wr_topology_plan(s, &tiers, &t) != 0) {
        return 0;
    }
    int rc = 0;
    for (int q = 0; q < t.queue_count && rc == 0; q++) {
        uint32_t messages = 0, consumers = 0;
        if (wr_broker_queue_depth(p->b, t.queues[q].name, &messages, &consumers) != WR_BROKER_OK) {
            wr_metrics_set_queue(p->m, i, t.queues[q].name, t.queues[q].role, -1, -1);
            rc = -1;
            break;
        }
        wr_metrics_set_queue(p->m, i, t.queues[q].name, t.queues[q].role, (long)messages,
                             (long)consumers);
    }
    wr_topology_clear(&t);
    return rc;
}

static void poll_queues(wr_probe *p)
{
    if (p->b == NULL) {
        char err[512];
        /* a cluster: the next node when this one does not answer */
        p->b = wr_broker_create(wr_config_amqp_url(p->cfg, p->broker_at), 0,
                                p->cfg->amqp_connect_timeout_ms, "warren probe", err, sizeof(err));
        if (p->b == NULL) {
            p->broker_at++;
            wr_metrics_queue_poll_failed(p->m);
            return;
        }
    }
    for (int i = 0; i < p->cfg->sub_count; i++) {
        if (poll_sub(p, i) != 0) {
            wr_metrics_queue_poll_failed(p->m);
            wr_broker_destroy(p->b);
            p->b = NULL;
            p->broker_at++;
            return;
        }
    }
}

static void *probe_main(void *arg)
{
    wr_probe *p = arg;
    double next_poll = 0;
    while (!atomic_load(&p->stop)) {
        double t0 = wr_mono_ms();
        check_redis(p);
        if (t0 >= next_poll) {
            poll_queues(p);
            next_poll = t0 + (double)p->cfg->queue_poll_ms;
        }
        /* sleep out the second in short steps, so stopping is quick */
        int every = atomic_load(&redis_down) ? REDIS_DOWN_EVERY_MS : REDIS_EVERY_MS;
        while (!atomic_load(&p->stop) && wr_mono_ms() - t0 < every) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

wr_probe *wr_probe_start(const wr_config *cfg, wr_reloader *rel, wr_metrics *m)
{
    wr_probe *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    p->cfg = cfg;
    p->rel = rel;
    p->m = m;
    atomic_init(&p->stop, 0);
    if (pthread_create(&p->thread, NULL, probe_main, p) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

void wr_probe_stop(wr_probe *p)
{
    if (p == NULL) {
        return;
    }
    atomic_store(&p->stop, 1);
    pthread_join(p->thread, NULL);
    wr_idem_destroy(p->redis);
    wr_broker_destroy(p->b);
    free(p);
}
