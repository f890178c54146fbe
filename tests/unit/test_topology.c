/*
 * test_topology.c: unit tests for the topology module.
 *
 * A wr_subscription is built by hand (as the config module would load it)
 * and wr_topology_plan() must return the declarations the broker module
 * applies: the consumed queue and its dead-letter queue, both durable with no
 * TTL and no dead-lettering of their own; the delay queues (one per retry
 * tier, and the wait queue), each with its TTL and dead-lettering through the
 * default exchange back to the consumed queue only; one declaration per
 * exchange even when several bindings name it, none for a binding with
 * declare = 0 (its bindings are still made); one binding per routing key, in
 * config order. The plan borrows the config's strings, and
 * wr_topology_clear() empties it.
 */
#include "topology.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

static wr_binding binding(const char *exchange, const char *type, int declare, char **keys)
{
    wr_binding b;
    memset(&b, 0, sizeof(b));
    b.exchange = (char *)exchange;
    b.type = (char *)type;
    b.declare = declare;
    b.routing_keys = keys;
    while (keys[b.routing_key_count] != NULL) {
        b.routing_key_count++;
    }
    return b;
}

static wr_subscription subscription(wr_binding *bindings, int n)
{
    wr_subscription s;
    memset(&s, 0, sizeof(s));
    s.name = (char *)"orders";
    s.queue = (char *)"orders.q";
    s.dlq = (char *)"orders.q.dlq";
    s.handler = (char *)"/etc/warren/orders.lua";
    s.prefetch = 50;
    s.concurrency = 1;
    s.batch_size = 50;
    s.bindings = bindings;
    s.binding_count = n;
    return s;
}

/* The queues every plan has: main, dlq (first, in that order) and the wait queue. */
static void check_queues(const wr_topology *t, const wr_subscription *s)
{
    CHECK(t->queue_count >= 3);
    CHECK_STR(t->queues[0].name, "orders.q");
    CHECK(t->queues[0].name == s->queue); /* borrowed, not copied */
    CHECK_STR(t->queues[0].role, "main");
    CHECK_INT(t->queues[0].durable, 1);
    CHECK_INT(t->queues[0].message_ttl_ms, -1);
    CHECK(t->queues[0].dead_letter_exchange == NULL);
    CHECK(t->queues[0].dead_letter_routing_key == NULL);
    CHECK_STR(t->queues[1].name, "orders.q.dlq");
    CHECK(t->queues[1].name == s->dlq);
    CHECK_STR(t->queues[1].role, "dlq");
    CHECK_INT(t->queues[1].durable, 1);
    CHECK_INT(t->queues[1].message_ttl_ms, -1);
    CHECK(t->queues[1].dead_letter_exchange == NULL);
    CHECK(t->queues[1].dead_letter_routing_key == NULL);

    /* the wait queue: a delay queue of WR_TOPO_WAIT_MS back to the main queue */
    CHECK(t->wait_queue >= 2 && t->wait_queue < t->queue_count);
    if (t->wait_queue >= 2 && t->wait_queue < t->queue_count) {
        const wr_queue_decl *w = &t->queues[t->wait_queue];
        CHECK_STR(w->name, "orders.q.wait");
        CHECK_STR(w->role, "wait");
        CHECK_INT(w->durable, 1);
        CHECK_INT(w->message_ttl_ms, WR_TOPO_WAIT_MS);
        CHECK_STR(w->dead_letter_exchange, ""); /* the default exchange: only our queue */
        CHECK_STR(w->dead_letter_routing_key, "orders.q");
    }
}

static void test_full_plan(void)
{
    char *k0[] = {"order.created", "order.paid", NULL};
    char *k1[] = {"order.cancelled", NULL};
    char *k2[] = {"orders", NULL};
    char *k3[] = {"#", NULL};
    char *k4[] = {"order.*", NULL};
    wr_binding b[5];
    b[0] = binding("shop", "topic", 1, k0);
    b[1] = binding("shop", "topic", 1, k1);    /* same exchange again: declared once */
    b[2] = binding("legacy", "direct", 0, k2); /* someone else's: bind, don't declare */
    b[3] = binding("audit", "fanout", 1, k3);
    b[4] = binding("shop", "topic", 1, k4); /* not adjacent to the first: still once */
    wr_subscription s = subscription(b, 5);

    wr_topology t;
    CHECK_INT(wr_topology_plan(&s, NULL, &t), 0);
    check_queues(&t, &s);
    CHECK_INT(t.queue_count, 3); /* no retry tiers: main, dlq, wait */

    CHECK_INT(t.exchange_count, 2);
    CHECK_STR(t.exchanges[0].name, "shop");
    CHECK_STR(t.exchanges[0].type, "topic");
    CHECK_STR(t.exchanges[1].name, "audit");
    CHECK_STR(t.exchanges[1].type, "fanout");
    for (int i = 0; i < t.exchange_count; i++) {
        CHECK(strcmp(t.exchanges[i].name, "legacy") != 0);
    }

    static const struct {
        const char *exchange, *key;
    } want[] = {
        {"shop", "order.created"}, {"shop", "order.paid"}, {"shop", "order.cancelled"},
        {"legacy", "orders"},      {"audit", "#"},         {"shop", "order.*"},
    };
    int n = (int)(sizeof(want) / sizeof(want[0]));
    CHECK_INT(t.binding_count, n);
    for (int i = 0; i < n && i < t.binding_count; i++) {
        CHECK_STR(t.bindings[i].queue, "orders.q");
        CHECK_STR(t.bindings[i].exchange, want[i].exchange);
        CHECK_STR(t.bindings[i].routing_key, want[i].key);
    }
    CHECK(t.bindings[0].routing_key == k0[0]);
    CHECK(t.bindings[3].exchange == b[2].exchange);

    wr_topology_clear(&t);
    CHECK(t.exchanges == NULL);
    CHECK(t.bindings == NULL);
    CHECK_INT(t.exchange_count, 0);
    CHECK_INT(t.binding_count, 0);
    CHECK_INT(t.queue_count, 0);
}

static void test_no_bindings(void)
{
    wr_subscription s = subscription(NULL, 0);
    wr_topology t;
    memset(&t, 0xAB, sizeof(t)); /* the plan must not rely on a zeroed output */
    CHECK_INT(wr_topology_plan(&s, NULL, &t), 0);
    check_queues(&t, &s);
    CHECK_INT(t.exchange_count, 0);
    CHECK_INT(t.binding_count, 0);
    wr_topology_clear(&t);
}

static void test_declare_flags(void)
{
    /* only undeclared bindings: no exchange declarations at all, bindings made */
    char *k0[] = {"a", "b", NULL};
    wr_binding b[3];
    b[0] = binding("ext", "headers", 0, k0);
    wr_subscription s = subscription(b, 1);
    wr_topology t;
    CHECK_INT(wr_topology_plan(&s, NULL, &t), 0);
    CHECK_INT(t.exchange_count, 0);
    CHECK_INT(t.binding_count, 2);
    CHECK_STR(t.bindings[0].exchange, "ext");
    CHECK_STR(t.bindings[0].routing_key, "a");
    CHECK_STR(t.bindings[1].routing_key, "b");
    wr_topology_clear(&t);

    /* the same exchange undeclared first and declared later: declared once */
    char *k1[] = {"c", NULL};
    b[1] = binding("ext", "headers", 1, k1);
    b[2] = binding("ext", "headers", 1, k1);
    s = subscription(b, 3);
    CHECK_INT(wr_topology_plan(&s, NULL, &t), 0);
    CHECK_INT(t.exchange_count, 1);
    CHECK_STR(t.exchanges[0].name, "ext");
    CHECK_STR(t.exchanges[0].type, "headers");
    CHECK_INT(t.binding_count, 4);
    wr_topology_clear(&t);
}

/* queue_type, dlq_quorum (resolved by config), delay_queue_type: each queue
 * classic or quorum as its role says; classic by default. */
static void test_quorum(void)
{
    wr_retry_tiers tiers;
    memset(&tiers, 0, sizeof(tiers));
    tiers.delay_ms[0] = 1000;
    tiers.count = 1;
    wr_subscription s = subscription(NULL, 0);
    wr_topology t;
    CHECK_INT(wr_topology_plan(&s, &tiers, &t), 0);
    for (int i = 0; i < t.queue_count; i++) {
        CHECK_INT(t.queues[i].quorum, 0);
    }
    wr_topology_clear(&t);

    s.queue_type = 1;
    s.dlq_quorum = 1;
    CHECK_INT(wr_topology_plan(&s, &tiers, &t), 0);
    CHECK_INT(t.queues[0].quorum, 1);
    CHECK_INT(t.queues[1].quorum, 1);
    CHECK_INT(t.queues[t.tier_queue[0]].quorum, 0);
    CHECK_INT(t.queues[t.wait_queue].quorum, 0);
    wr_topology_clear(&t);

    s.queue_type = 0;
    s.dlq_quorum = 0;
    s.delay_queue_type = 1;
    CHECK_INT(wr_topology_plan(&s, &tiers, &t), 0);
    CHECK_INT(t.queues[0].quorum, 0);
    CHECK_INT(t.queues[1].quorum, 0);
    CHECK_INT(t.queues[t.tier_queue[0]].quorum, 1);
    CHECK_INT(t.queues[t.wait_queue].quorum, 1);
    CHECK_STR(t.queues[t.wait_queue].dead_letter_routing_key, "orders.q");
    wr_topology_clear(&t);
}

static void test_retry_tiers(void)
{
    wr_retry_tiers tiers;
    memset(&tiers, 0, sizeof(tiers));
    tiers.delay_ms[0] = 1000;
    tiers.delay_ms[1] = 1500;
    tiers.delay_ms[2] = 5000;
    tiers.count = 3;
    char *k[] = {"#", NULL};
    wr_binding b = binding("shop", "topic", 1, k);
    wr_subscription s = subscription(&b, 1);
    wr_topology t;
    CHECK_INT(wr_topology_plan(&s, &tiers, &t), 0);
    check_queues(&t, &s);
    CHECK_INT(t.queue_count, 2 + 3 + 1);

    static const struct {
        const char *name;
        int64_t ttl;
    } want[] = {
        {"orders.q.retry.1s", 1000}, {"orders.q.retry.1500ms", 1500}, {"orders.q.retry.5s", 5000}};
    for (int i = 0; i < 3; i++) {
        int qi = t.tier_queue[i];
        CHECK(qi >= 2 && qi < t.queue_count && qi != t.wait_queue);
        if (qi < 2 || qi >= t.queue_count) {
            continue;
        }
        const wr_queue_decl *q = &t.queues[qi];
        CHECK_STR(q->name, want[i].name);
        CHECK_STR(q->role, "retry");
        CHECK_INT(q->durable, 1);
        CHECK_INT(q->message_ttl_ms, want[i].ttl);
        /* never back through the producer's exchange: that would reach every subscriber */
        CHECK_STR(q->dead_letter_exchange, "");
        CHECK_STR(q->dead_letter_routing_key, "orders.q");
    }
    /* the delay queues are not bound to anything: only the main queue is */
    CHECK_INT(t.binding_count, 1);
    CHECK_STR(t.bindings[0].queue, "orders.q");
    wr_topology_clear(&t);
}

/* partitions: N: a consistent-hash exchange on the partition header, N single
 * active consumer queues bound with weight "1", the workers consume those (not
 * the queue), the consumed queue is single active consumer too, and every
 * delay queue dead-letters into the exchange (a retried message comes back to
 * its partition); a binding of the service's own is still made to the queue. */
static void test_partitions(void)
{
    char *keys[] = {"order.*", NULL};
    wr_binding b[] = {binding("events", "topic", 1, keys)};
    wr_subscription s = subscription(b, 1);
    s.partitions = 3;
    wr_retry_tiers tiers = {.count = 1, .delay_ms = {5000}};
    wr_topology t;
    CHECK_INT(wr_topology_plan(&s, &tiers, &t), 0);
    CHECK_STR(t.partition_exchange, "orders.q.partitions");
    CHECK_INT(t.partition_count, 3);
    CHECK_INT(t.exchange_count, 2);
    CHECK_STR(t.exchanges[0].name, "events");
    CHECK(t.exchanges[0].hash_header == NULL);
    CHECK_STR(t.exchanges[1].name, "orders.q.partitions");
    CHECK_STR(t.exchanges[1].type, "x-consistent-hash");
    CHECK_STR(t.exchanges[1].hash_header, "warren-partition-key");
    CHECK_INT(t.queues[0].single_active, 1);
    CHECK_INT(t.queues[1].single_active, 0); /* the DLQ */
    const char *names[3] = {"orders.q.p0", "orders.q.p1", "orders.q.p2"};
    CHECK_INT(t.consume_count, 3);
    CHECK_INT(t.binding_count, 4);
    CHECK_STR(t.bindings[0].queue, "orders.q");
    CHECK_STR(t.bindings[0].exchange, "events");
    for (int p = 0; p < 3; p++) {
        const wr_queue_decl *q = &t.queues[t.partition_queue[p]];
        CHECK_STR(q->name, names[p]);
        CHECK_STR(q->role, "partition");
        CHECK_INT(q->single_active, 1);
        CHECK_INT(q->durable, 1);
        CHECK_INT(q->message_ttl_ms, -1);
        CHECK(q->dead_letter_exchange == NULL);
        CHECK_STR(t.consume[p], names[p]);
        CHECK_STR(t.bindings[1 + p].queue, names[p]);
        CHECK_STR(t.bindings[1 + p].exchange, "orders.q.partitions");
        CHECK_STR(t.bindings[1 + p].routing_key, "1");
    }
    CHECK_STR(t.queues[t.tier_queue[0]].name, "orders.q.retry.5s");
    CHECK_STR(t.queues[t.tier_queue[0]].dead_letter_exchange, "orders.q.partitions");
    CHECK_STR(t.queues[t.wait_queue].dead_letter_exchange, "orders.q.partitions");
    CHECK_STR(t.back_exchange, "orders.q.partitions");
    CHECK_STR(t.back_routing_key, "");

    /* all at once, until spread over workers: worker 1 of 2 takes p1 first,
     * then p0 and p2 after the standby time */
    CHECK_INT(t.consume_now, 3);
    wr_topology_prefer(&t, 1, 2);
    CHECK_INT(t.consume_now, 1);
    CHECK_STR(t.consume[0], "orders.q.p1");
    CHECK_STR(t.consume[1], "orders.q.p0");
    CHECK_STR(t.consume[2], "orders.q.p2");
    wr_topology_prefer(&t, 0, 2);
    CHECK_INT(t.consume_now, 2);
    CHECK_STR(t.consume[0], "orders.q.p0");
    CHECK_STR(t.consume[1], "orders.q.p2");
    CHECK_STR(t.consume[2], "orders.q.p1");
    /* more workers than partitions: a worker without one of its own takes any */
    wr_topology_prefer(&t, 4, 5);
    CHECK_INT(t.consume_now, 3);

    /* moved: every name points into the new plan, none into the old */
    wr_topology *moved = malloc(sizeof(*moved));
    CHECK(moved != NULL);
    if (moved != NULL) {
        wr_topology_move(moved, &t);
        CHECK_INT(t.queue_count, 0);
        CHECK(moved->consume[2] == moved->names[moved->partition_queue[2]]);
        CHECK(moved->queues[moved->wait_queue].dead_letter_exchange == moved->partition_exchange);
        CHECK(moved->bindings[3].exchange == moved->partition_exchange);
        CHECK(moved->back_exchange == moved->partition_exchange);
        CHECK_STR(moved->queues[moved->tier_queue[0]].name, "orders.q.retry.5s");
        wr_topology_clear(moved);
        free(moved);
    }

    /* not partitioned: the queue is consumed, messages go back to it */
    s.partitions = 0;
    CHECK_INT(wr_topology_plan(&s, &tiers, &t), 0);
    CHECK_INT(t.consume_count, 1);
    CHECK_INT(t.consume_now, 1);
    wr_topology_prefer(&t, 1, 2); /* nothing to spread */
    CHECK_INT(t.consume_now, 1);
    CHECK_STR(t.consume[0], "orders.q");
    CHECK_INT(t.queues[0].single_active, 0);
    CHECK_STR(t.back_exchange, "");
    CHECK_STR(t.back_routing_key, "orders.q");
    CHECK_STR(t.partition_exchange, "");
    wr_topology_clear(&t);
}

int main(void)
{
    test_full_plan();
    test_no_bindings();
    test_declare_flags();
    test_retry_tiers();
    test_quorum();
    test_partitions();
    return check_report("test_topology");
}
