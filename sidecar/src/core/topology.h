/*
 * topology: which exchanges, queues and bindings a subscription needs.
 *
 * wr_topology_plan() turns a subscription into a list of declarations; the
 * broker module applies them (idempotently: every worker declares on connect
 * and after every reconnect, so a broker that lost its state gets it back).
 *
 *   - the consumed queue: durable, no arguments of ours, declared only when it
 *     does not exist yet (the broker module asks first), so a queue that the
 *     service's team declared themselves (say as a quorum queue) is accepted
 *     as it is;
 *   - the dead-letter queue (<queue>.dlq by default): durable, classic, no
 *     TTL and no length limit: nothing in it ages out;
 *   - one delay queue per retry tier (<queue>.retry.<delay>, see retry.h):
 *     durable, x-message-ttl = the delay, dead-lettering through the default
 *     exchange back to <queue> only, never to the producer's exchange (which
 *     would copy the message to every other subscriber);
 *   - the wait queue (<queue>.wait, WR_TOPO_WAIT_MS): where a message goes
 *     while another worker holds its idempotency claim, built like a tier;
 *   - each binding's exchange (durable, when `declare` is set) and binding;
 *   - with `partitions: N` (config.h), the partitions: a consistent-hash
 *     exchange <queue>.partitions (type x-consistent-hash, from RabbitMQ's
 *     rabbitmq_consistent_hash_exchange plugin) that hashes the header
 *     WR_TOPO_PARTITION_HEADER (argument hash-header), and N queues
 *     <queue>.p0 .. <queue>.p<N-1> bound to it with equal weight (binding key
 *     "1"), each with x-single-active-consumer: every worker of every replica
 *     consumes every partition and the broker lets one of them run each. The
 *     delay and wait queues then dead-letter into that exchange (the header
 *     travels with the copy, so a retried message comes back to its own
 *     partition), and the consumed queue, when warren declares it, is single
 *     active consumer too: it only feeds the partitions (reroute.h), in order.
 *
 * What the workers consume is in consume[]: the consumed queue, or the
 * partitions. A message sent back to its queue (released from parking) goes
 * to back_exchange with back_routing_key: the default exchange and the
 * consumed queue, or the partition exchange (the message carries its header).
 *
 * Each queue is classic or quorum as the subscription says (queue_type,
 * dlq_type, delay_queue_type): a quorum queue is replicated over a cluster's
 * nodes and survives the loss of a minority of them. No x-delivery-limit is
 * set: warren returns deliveries on purpose (breaker open, shutdown, Redis
 * away) and counts attempts itself.
 *
 * Pure logic: no I/O. The plan borrows strings from the config, which must
 * outlive it.
 */
#ifndef WR_TOPOLOGY_H
#define WR_TOPOLOGY_H

#include "config.h"

#include "retry.h"

#define WR_TOPO_NAME_MAX 255 /* queue and exchange names are AMQP shortstrs */
#define WR_TOPO_MAX_QUEUES (WR_RETRY_MAX_TIERS + 3 + WR_MAX_PARTITIONS)
/* the header a partitioned subscription's exchange hashes: the ordering key */
#define WR_TOPO_PARTITION_HEADER "warren-partition-key"
#define WR_TOPO_WAIT_MS 1000 /* how long a message whose key is busy waits */

typedef struct {
    const char *name;
    int durable;
    int64_t message_ttl_ms;              /* x-message-ttl, or -1 for none */
    const char *dead_letter_exchange;    /* x-dead-letter-exchange, or NULL */
    const char *dead_letter_routing_key; /* x-dead-letter-routing-key, or NULL */
    const char *role;  /* "main", "dlq", "retry", "wait", "partition": for error messages */
    int single_active; /* x-single-active-consumer */
    int quorum;        /* x-queue-type=quorum (a delay queue also dead-letters
                          at-least-once, which needs x-overflow=reject-publish) */
} wr_queue_decl;

typedef struct {
    const char *name;
    const char *type;
    const char *hash_header; /* argument hash-header (x-consistent-hash), or NULL */
} wr_exchange_decl;

typedef struct {
    const char *queue;
    const char *exchange;
    const char *routing_key;
} wr_binding_decl;

typedef struct {
    wr_queue_decl queues[WR_TOPO_MAX_QUEUES];
    int queue_count;
    int tier_queue[WR_RETRY_MAX_TIERS];  /* index in queues[] of each retry tier's queue */
    int wait_queue;                      /* index in queues[] of the wait queue */
    char names[WR_TOPO_MAX_QUEUES][300]; /* storage for the generated queue names */
    wr_exchange_decl *exchanges;         /* malloc'd */
    int exchange_count;
    wr_binding_decl *bindings; /* malloc'd */
    int binding_count;
    int partition_count;                           /* 0: not partitioned */
    int partition_queue[WR_MAX_PARTITIONS];        /* index in queues[] of each partition */
    char partition_exchange[WR_TOPO_NAME_MAX + 1]; /* "" when not partitioned */
    const char *consume[WR_MAX_PARTITIONS];        /* the queues a worker consumes */
    int consume_count;
    int consume_now;              /* the first consume_now of them at once, the rest after
                                     WR_TOPO_STANDBY_MS (wr_topology_prefer) */
    const char *back_exchange;    /* where a message goes back to its queue: "" or */
    const char *back_routing_key; /* partition_exchange, with this routing key */
} wr_topology;

/* Build the plan for SUB with the retry tiers TIERS (NULL: none). Returns 0, or
 * -1 when out of memory or a generated name would be too long. Free with
 * wr_topology_clear(). */
int wr_topology_plan(const wr_subscription *sub, const wr_retry_tiers *tiers, wr_topology *out);
void wr_topology_clear(wr_topology *t);

/*
 * Spread a partitioned plan's partitions over a process's COUNT workers: put
 * the partitions of worker INDEX (p % COUNT == INDEX) first in consume[] and
 * consume_now = how many they are. The worker subscribes to those at once
 * and to the others WR_TOPO_STANDBY_MS later: the broker gives a partition to
 * its first consumer, so each partition goes to its own worker when that
 * worker is up, and to another one (a standby until then) when it is not.
 * Does nothing to a plan without partitions (consume_now stays consume_count).
 */
#define WR_TOPO_STANDBY_MS 2000
void wr_topology_prefer(wr_topology *t, int index, int count);

/* Move the plan SRC into DST (whose old contents are overwritten, not freed):
 * a plan points into its own name storage, so a plain struct copy would leave
 * DST's names in SRC. SRC is left empty. */
void wr_topology_move(wr_topology *dst, wr_topology *src);

#endif
