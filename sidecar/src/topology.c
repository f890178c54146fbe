/*
 * topology: the declarations a subscription needs. See topology.h.
 */
#include "topology.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void add_queue(wr_topology *t, const char *name, const char *role)
{
    wr_queue_decl *q = &t->queues[t->queue_count++];
    memset(q, 0, sizeof(*q));
    q->name = name;
    q->durable = 1;
    q->message_ttl_ms = -1;
    q->role = role;
}

/* A delay queue: expires after MS into the default exchange, back to QUEUE. */
static int add_delay(wr_topology *t, const wr_subscription *sub, int64_t ms, const char *role)
{
    int i = t->queue_count;
    char *name = t->names[i];
    int n = strcmp(role, "wait") == 0
                ? snprintf(name, sizeof(t->names[i]), "%s.wait", sub->queue)
                : wr_retry_queue_name(sub->queue, ms, name, sizeof(t->names[i]));
    if (n < 0 || n > 255) {
        return -1;
    }
    add_queue(t, name, role);
    t->queues[i].quorum = sub->delay_queue_type == 1;
    t->queues[i].message_ttl_ms = ms;
    t->queues[i].dead_letter_exchange = "";
    t->queues[i].dead_letter_routing_key = sub->queue;
    return i;
}

int wr_topology_plan(const wr_subscription *sub, const wr_retry_tiers *tiers, wr_topology *out)
{
    memset(out, 0, sizeof(*out));
    add_queue(out, sub->queue, "main");
    out->queues[0].quorum = sub->queue_type == 1;
    add_queue(out, sub->dlq, "dlq");
    out->queues[1].quorum = sub->dlq_quorum;
    for (int i = 0; tiers != NULL && i < tiers->count; i++) {
        out->tier_queue[i] = add_delay(out, sub, tiers->delay_ms[i], "retry");
        if (out->tier_queue[i] < 0) {
            return -1;
        }
    }
    out->wait_queue = add_delay(out, sub, WR_TOPO_WAIT_MS, "wait");
    if (out->wait_queue < 0) {
        return -1;
    }

    int nkeys = 0;
    for (int i = 0; i < sub->binding_count; i++) {
        nkeys += sub->bindings[i].routing_key_count;
    }
    if (sub->binding_count > 0) {
        out->exchanges = calloc((size_t)sub->binding_count, sizeof(*out->exchanges));
        out->bindings = calloc((size_t)(nkeys > 0 ? nkeys : 1), sizeof(*out->bindings));
        if (out->exchanges == NULL || out->bindings == NULL) {
            wr_topology_clear(out);
            return -1;
        }
    }
    for (int i = 0; i < sub->binding_count; i++) {
        const wr_binding *b = &sub->bindings[i];
        if (b->declare) {
            int seen = 0;
            for (int j = 0; j < out->exchange_count; j++) {
                seen |= strcmp(out->exchanges[j].name, b->exchange) == 0;
            }
            if (!seen) {
                out->exchanges[out->exchange_count].name = b->exchange;
                out->exchanges[out->exchange_count].type = b->type;
                out->exchange_count++;
            }
        }
        for (int k = 0; k < b->routing_key_count; k++) {
            wr_binding_decl *d = &out->bindings[out->binding_count++];
            d->queue = sub->queue;
            d->exchange = b->exchange;
            d->routing_key = b->routing_keys[k];
        }
    }
    return 0;
}

void wr_topology_clear(wr_topology *t)
{
    free(t->exchanges);
    free(t->bindings);
    memset(t, 0, sizeof(*t));
}
