/*
 * gates: causal gates of a subscription, the pure part (no I/O).
 *
 *   gates:
 *     - type: order.cancelled    # this type ...
 *       after: order.created     # ... waits until this type is done for the same key
 *       key: json:order_id
 *       timeout: 10m             # then what on_timeout says:
 *       on_timeout: dlq          # the DLQ, reason gate-timeout (default), or run
 *
 * How a gate works (the worker does the I/O, sidecar/scripts/gate.lua the
 * Redis side):
 *
 *   - A message of type `after` that is handled ok writes its "done for key"
 *     mark, <prefix>~gate:<subscription>:<after>:<key>, as one more ctx.store
 *     write of its commit: the same script run as its idempotency record and
 *     its handler's writes, all or none (idem.h).
 *   - A message of a gated type reads that mark before its handler runs (a
 *     guarded ctx.store read: later messages of its batch see the writes of
 *     earlier ones, and if the earlier one's commit fails, the guard makes this
 *     one run again). Mark present: it runs. Absent: it is parked: its
 *     properties and body go to a Redis list <prefix>~park:<subscription>:
 *     <gate>:<key> (in one script run that checks the mark again, so a mark
 *     written meanwhile is never missed), then it is acked. A parked message
 *     lives in Redis only; it survives the sidecar's death.
 *   - The worker whose commit wrote a mark takes that key's parked messages
 *     (moved to <list>:out, not deleted) and publishes them back to the
 *     subscription's queue, confirmed, then deletes them from :out. So they
 *     are released as soon as the commit is read, not polled.
 *   - A sweep (every worker, about once a second, one script run) finds what
 *     the normal path left: :out lists whose publisher died (published again:
 *     the idempotency record makes a second copy a duplicate), parked lists
 *     whose mark exists (a worker died between its commit and the release),
 *     and parked messages past their gate's timeout (moved to a sending list
 *     and dead-lettered with reason gate-timeout, confirmed, then deleted).
 *   - With on_timeout: run, the messages past the timeout go back to the
 *     queue instead, each with a pass: a header WR_GATE_PASS_HEADER carrying
 *     a random token, and a Redis key <prefix>~gatepass:<subscription>:
 *     <token> whose value is the parked list they came from (so the gate and
 *     the key), written before they are published, kept as long as the
 *     idempotency records. When such a message meets its gate again, the
 *     park script finds the pass naming the list it would park in, and it
 *     runs. A pass names one gate and key: a token copied onto another
 *     message opens nothing else, and a header without its Redis key is
 *     ignored, so a producer cannot write its own pass.
 *
 * Keys begin with the subscription's idempotency prefix and '~', which no
 * subscription name holds, so they never meet an idempotency record.
 */
#ifndef WR_GATES_H
#define WR_GATES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h> /* rabbitmq-c's amqp.h needs struct timeval under -std=c11 */

#include <amqp.h>

#include "config.h"

/* 1 when topic pattern PATTERN ("order.*", "#", "a.#.b") matches ROUTING_KEY. */
int wr_topic_match(const char *pattern, const char *routing_key);

/* 1 when a binding of S routes a message published with routing key TYPE
 * (topic patterns, direct keys; fanout and headers exchanges route all). */
int wr_gates_routed(const wr_subscription *s, const char *type);

/* The index of the first gate of S whose `type` is TYPE (LEN bytes), or -1. */
int wr_gates_waiting(const wr_subscription *s, const char *type, size_t len);

/* The index of the first gate of S from FROM on whose `after` is TYPE (LEN
 * bytes), or -1. */
int wr_gates_after(const wr_subscription *s, const char *type, size_t len, int from);

/*
 * The Redis keys (see above) into OUT. Return the length, or -1 when CAP is
 * too small. GATE is the gate's index; KEY the message's gate key.
 */
int wr_gate_mark_key(char *out, size_t cap, const char *prefix, const char *sub, const char *after,
                     const char *key);
int wr_gate_park_key(char *out, size_t cap, const char *prefix, const char *sub, int gate,
                     const char *key);
int wr_gate_index_key(char *out, size_t cap, const char *prefix, const char *sub);
int wr_gate_marks_key(char *out, size_t cap, const char *prefix, const char *sub);
int wr_gate_pass_key(char *out, size_t cap, const char *prefix, const char *sub, const char *token,
                     size_t token_len);

/* The header of a message released past its gate's timeout (on_timeout: run). */
#define WR_GATE_PASS_HEADER "x-warren-gate-pass"
#define WR_GATE_PASS_TOKEN_MAX 64 /* a longer header is no pass */

/*
 * A parked message as one string: "<deadline_ms>|" then its properties as an
 * AMQP field table, then its body. The expiration, user-id and cluster-id
 * properties are not kept (a parked message does not expire on its way back,
 * and the broker checks user-id against the publishing connection). Returns 0
 * with *OUT malloc'd (the caller frees it) and *LEN, or -1 when out of memory.
 */
int wr_gate_entry_encode(const amqp_basic_properties_t *props, amqp_bytes_t body,
                         int64_t deadline_ms, char **out, size_t *len);

/*
 * The other way: PROPS and BODY point into POOL or into P (which must outlive
 * them). Returns 0, or -1 with ERR ("not a parked message: ...").
 */
int wr_gate_entry_decode(const char *p, size_t n, amqp_pool_t *pool, amqp_basic_properties_t *props,
                         amqp_bytes_t *body, int64_t *deadline_ms, char *err, size_t errcap);

#endif
