/*
 * reroute: a partitioned subscription's queue, fed into its partitions.
 *
 * With `partitions: N` (topology.h) the workers consume the partitions
 * <queue>.p<i>, not <queue>. Producers that publish to <queue> as before (and
 * cannot set the partition header) still reach the handler: one thread per
 * partitioned subscription and process consumes <queue> and, for each
 * delivery in delivery order, publishes a copy to the partition exchange
 * with the header WR_TOPO_PARTITION_HEADER set to the message's ordering key
 * (its message id when it has none, "" when it has neither: a message
 * without a key runs in no lane, any partition will do). The copy keeps the
 * body, every property and header and the routing key; it is mandatory.
 * Once the broker confirmed the copies of a round, the originals are acked;
 * a copy the broker did not take sends its original and every later one back
 * to <queue> (nack, requeue) and the connection is made anew. A crash between
 * the confirm and the ack re-routes the message again: the partition then
 * holds it twice, and idempotency (same message id) runs it once.
 *
 * <queue> is declared with x-single-active-consumer when warren creates it,
 * so of all the replicas' rerouters one feeds the partitions at a time and a
 * key's messages enter its partition in <queue>'s order. (A <queue> that
 * existed before is consumed as it is: without single active consumer, two
 * replicas may re-route two messages of a key in either order.)
 *
 * wr_reroute_key() and wr_reroute_props() are the pure part (no I/O).
 */
#ifndef WR_REROUTE_H
#define WR_REROUTE_H

#include <stdatomic.h>
#include <stddef.h>

#include "amqp_compat.h"
#include "config.h"

typedef struct wr_reroute wr_reroute;

/*
 * The partition key of delivery D under SUB's ordering.key, into OUT
 * (NUL-terminated, CAP bytes): the ordering key, else the message id, else
 * "". Returns the length written.
 */
size_t wr_reroute_key(const wr_subscription *sub, const amqp_envelope_t *d, char *out, size_t cap);

/*
 * ORIG's properties with the header WR_TOPO_PARTITION_HEADER set to KEY (an
 * existing one replaced, other headers kept in their order), in OUT; new
 * storage comes from POOL, the rest still points into ORIG. Returns 0, or -1
 * when out of memory.
 */
int wr_reroute_props(amqp_pool_t *pool, const amqp_basic_properties_t *orig, const char *key,
                     amqp_basic_properties_t *out);

/*
 * Start re-routing SUB's queue (SUB must be partitioned) on a thread of its
 * own, with its own connection to CFG's broker, until STOP is set or
 * wr_reroute_stop(). CFG and SUB must outlive it. Returns NULL with a reason
 * in ERR when the thread cannot start (a broker that is away is not an
 * error: the thread connects again until it works).
 */
wr_reroute *wr_reroute_start(const wr_config *cfg, const wr_subscription *sub,
                             const atomic_int *stop, char *err, size_t errcap);

/* Stop the thread (within about a second: what it holds unconfirmed goes back
 * to the queue), join it and free it. NULL is a no-op. */
void wr_reroute_stop(wr_reroute *r);

#endif
