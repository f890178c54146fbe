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
    /* partitioned: back to the message's partition, through the exchange that
     * hashes the header the copy still carries (the routing key, kept as the
     * copy's story has it, plays no part there) */
    t->queues[i].dead_letter_exchange = sub->partitions > 0 ? t->partition_exchange : "";
    t->queues[i].dead_letter_routing_key = sub->queue;
    return i;
}

/* The partition exchange, its N queues and their bindings (topology.h). */
static int add_partitions(wr_topology *t, const wr_subscription *sub, int first_binding)
{
    wr_exchange_decl *x = &t->exchanges[t->exchange_count++];
    x->name = t->partition_exchange;
    x->type = "x-consistent-hash";
    x->hash_header = WR_TOPO_PARTITION_HEADER;
    t->partition_count = sub->partitions;
    for (int p = 0; p < sub->partitions; p++) {
        int i = t->queue_count;
        int n = snprintf(t->names[i], sizeof(t->names[i]), "%s.p%d", sub->queue, p);
        if (n < 0 || n > WR_TOPO_NAME_MAX) {
            return -1;
        }
        add_queue(t, t->names[i], "partition");
        t->queues[i].quorum = sub->queue_type == 1;
        t->queues[i].single_active = 1;
        t->partition_queue[p] = i;
        t->consume[p] = t->names[i];
        wr_binding_decl *d = &t->bindings[first_binding + p];
        d->queue = t->names[i];
        d->exchange = t->partition_exchange;
        d->routing_key = "1"; /* the weight: every partition gets an equal share */
        t->binding_count++;
    }
    t->consume_count = sub->partitions;
    t->consume_now = sub->partitions;
    return 0;
}

void wr_topology_prefer(wr_topology *t, int index, int count)
{
    if (t->partition_count == 0 || count <= 0) {
        return;
    }
    int n = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int p = 0; p < t->partition_count; p++) {
            if ((p % count == index) == (pass == 0)) {
                t->consume[n++] = t->names[t->partition_queue[p]];
            }
        }
        if (pass == 0) {
            t->consume_now = n;
        }
    }
    if (t->consume_now == 0) {
        t->consume_now = t->consume_count; /* more workers than partitions: any */
    }
}

int wr_topology_plan(const wr_subscription *sub, const wr_retry_tiers *tiers, wr_topology *out)
{
    memset(out, 0, sizeof(*out));
    add_queue(out, sub->queue, "main");
    out->queues[0].quorum = sub->queue_type == 1;
    out->consume[0] = sub->queue;
    out->consume_count = 1;
    out->consume_now = 1;
    out->back_exchange = "";
    out->back_routing_key = sub->queue;
    if (sub->partitions > 0) {
        int n = snprintf(out->partition_exchange, sizeof(out->partition_exchange), "%s.partitions",
                         sub->queue);
        if (n < 0 || n > WR_TOPO_NAME_MAX || sub->partitions > WR_MAX_PARTITIONS) {
            return -1;
        }
        out->queues[0].single_active = 1;
        out->back_exchange = out->partition_exchange;
        out->back_routing_key = "";
    }
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
    if (sub->binding_count > 0 || sub->partitions > 0) {
        out->exchanges = calloc((size_t)sub->binding_count + 1, sizeof(*out->exchanges));
        out->bindings = calloc((size_t)nkeys + (size_t)sub->partitions + 1, sizeof(*out->bindings));
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
    if (sub->partitions > 0 && add_partitions(out, sub, out->binding_count) != 0) {
        wr_topology_clear(out);
        return -1;
    }
    return 0;
}

void wr_topology_clear(wr_topology *t)
{
    free(t->exchanges);
    free(t->bindings);
    memset(t, 0, sizeof(*t));
}

/* P, when it points into SRC's own storage, moved to the same place in DST. */
static const char *rebase(const char *p, const wr_topology *src, wr_topology *dst)
{
    const char *lo = (const char *)src, *hi = lo + sizeof(*src);
    if (p != NULL && p >= lo && p < hi) {
        return (const char *)dst + (p - lo);
    }
    return p;
}

void wr_topology_move(wr_topology *dst, wr_topology *src)
{
    memcpy(dst, src, sizeof(*dst));
    for (int i = 0; i < dst->queue_count; i++) {
        dst->queues[i].name = rebase(dst->queues[i].name, src, dst);
        dst->queues[i].dead_letter_exchange = rebase(dst->queues[i].dead_letter_exchange, src, dst);
    }
    for (int i = 0; i < dst->exchange_count; i++) {
        dst->exchanges[i].name = rebase(dst->exchanges[i].name, src, dst);
    }
    for (int i = 0; i < dst->binding_count; i++) {
        dst->bindings[i].queue = rebase(dst->bindings[i].queue, src, dst);
        dst->bindings[i].exchange = rebase(dst->bindings[i].exchange, src, dst);
    }
    for (int i = 0; i < dst->consume_count; i++) {
        dst->consume[i] = rebase(dst->consume[i], src, dst);
    }
    dst->back_exchange = rebase(dst->back_exchange, src, dst);
    memset(src, 0, sizeof(*src)); /* DST owns the arrays now */
}
