/*
 * topology: which exchanges, queues and bindings a subscription needs.
 *
 * wr_topology_plan() turns a subscription into a list of declarations; the
 * broker module applies them (idempotently: every worker declares on connect
 * and after every reconnect, so a broker that lost its state gets it back).
 *
 *   - the consumed queue: durable, no arguments of ours, so a queue that the
 *     service's team declared themselves (say as a quorum queue) is accepted
 *     as it is;
 *   - the dead-letter queue (<queue>.dlq by default): durable, classic, no
 *     TTL and no length limit: nothing in it ages out;
 *   - each binding's exchange (durable, when `declare` is set) and binding.
 *
 * Pure logic: no I/O. The plan borrows strings from the config, which must
 * outlive it.
 */
#ifndef WR_TOPOLOGY_H
#define WR_TOPOLOGY_H

#include "config.h"

#define WR_TOPO_MAX_QUEUES 16

typedef struct {
    const char *name;
    int durable;
    int64_t message_ttl_ms;        /* x-message-ttl, or -1 for none */
    const char *dead_letter_exchange;   /* x-dead-letter-exchange, or NULL */
    const char *dead_letter_routing_key; /* x-dead-letter-routing-key, or NULL */
    const char *role;              /* "main", "dlq": for error messages */
} wr_queue_decl;

typedef struct {
    const char *name;
    const char *type;
} wr_exchange_decl;

typedef struct {
    const char *queue;
    const char *exchange;
    const char *routing_key;
} wr_binding_decl;

typedef struct {
    wr_queue_decl queues[WR_TOPO_MAX_QUEUES];
    int queue_count;
    wr_exchange_decl *exchanges; /* malloc'd */
    int exchange_count;
    wr_binding_decl *bindings;   /* malloc'd */
    int binding_count;
} wr_topology;

/* Build the plan for SUB. Returns 0, or -1 when out of memory. Free with
 * wr_topology_clear(). */
int wr_topology_plan(const wr_subscription *sub, wr_topology *out);
void wr_topology_clear(wr_topology *t);

#endif
