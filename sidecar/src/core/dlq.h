/*
 * dlq: the properties of a copy that carries a failed message's story.
 *
 * When a message leaves its queue because it failed (to the DLQ now; to a
 * delay queue for a retry later), the copy keeps the original body untouched
 * and the original properties (message id, type, content type, timestamp,
 * correlation id, app headers), and gains x-warren-* headers that tell the
 * operator what happened without a second tool:
 *
 *   x-warren-reason                 stable code: invalid-json, handler-error, ...
 *   x-warren-error-class            invalid | error | rejected | timeout | crashed
 *   x-warren-error                  the last error, at most WR_DLQ_MAX_ERROR bytes
 *   x-warren-errors                 every error so far (array, the newest
 *                                   WR_DLQ_MAX_ERRORS kept)
 *   x-warren-attempt                attempts made so far
 *   x-warren-first-failure          ISO-8601 UTC, kept from the first failure
 *   x-warren-last-failure           ISO-8601 UTC
 *   x-warren-original-exchange      where the producer published it (kept across
 *   x-warren-original-routing-key   retries, which travel through other queues)
 *   x-warren-subscription, x-warren-queue, x-warren-handler,
 *   x-warren-handler-version, x-warren-trace-id
 *   x-warren-signature              over the id, the attempt and the original route
 *                                   (sign.h), so that only warren's copies are trusted
 * and a traceparent of the same trace with a new span (see span_id).
 *
 * Properties the copy must not keep: `expiration` (a DLQ copy must not age
 * out) and `user_id` (the broker refuses a publish whose user_id is not the
 * connection's user). delivery_mode is always 2 (persistent).
 *
 * Pure logic: everything is built in a caller-owned amqp_pool_t; the result
 * borrows from ORIG as well, so both must outlive the publish.
 */
#ifndef WR_DLQ_H
#define WR_DLQ_H

#include <stdint.h>

#include "amqp_compat.h"
#include "sign.h"

#define WR_DLQ_MAX_ERROR 1024 /* bytes of error text kept per error */
#define WR_DLQ_MAX_ERRORS 10  /* errors kept in x-warren-errors */

typedef struct {
    const char *reason;      /* stable code, e.g. "invalid-json" */
    const char *error_class; /* "invalid", "error", "rejected", "timeout" */
    const char *error;       /* human text; may be long, is truncated */
    int attempt;             /* attempts made, including this one */
    int64_t now_ms;          /* time of this failure */
    const char *subscription;
    const char *queue;           /* the queue the message was consumed from */
    const char *handler;         /* handler file name */
    const char *handler_version; /* content hash of the loaded handler, or NULL */
    const char *trace_id;        /* or NULL */
    const char *span_id;         /* 16 hex digits, or NULL: with trace_id, the copy's
                                    traceparent becomes 00-<trace_id>-<span_id>-01 (a child
                                    span of the same trace, also for a message that came
                                    without one, so every attempt logs the same trace) */
    const wr_sign_key *sign;     /* signs the copy's attempt and route (sign.h); NULL: no
                                    signature */
} wr_failure;

/*
 * Build in OUT the properties of the copy of a message whose properties were
 * ORIG and which was delivered from EXCHANGE with ROUTING_KEY, failing as F
 * says. Returns 0, or -1 when the pool is out of memory.
 */
int wr_dlq_build_props(amqp_pool_t *pool, const amqp_basic_properties_t *orig,
                       amqp_bytes_t exchange, amqp_bytes_t routing_key, const wr_failure *f,
                       amqp_basic_properties_t *out);

/*
 * Build in OUT the properties of a copy that only waits (its idempotency key
 * was busy): the original properties and headers untouched, except that the
 * original route is recorded (x-warren-original-exchange/-routing-key, unless
 * already there) because the copy comes back through the default exchange,
 * and signed with SIGN (NULL: not signed).
 * Returns 0, or -1 when the pool is out of memory.
 */
int wr_dlq_build_wait_props(amqp_pool_t *pool, const amqp_basic_properties_t *orig,
                            amqp_bytes_t exchange, amqp_bytes_t routing_key,
                            const wr_sign_key *sign, amqp_basic_properties_t *out);

/* ORIG without its x-warren-* headers, in OUT (for a message whose headers
 * were not warren's: sign.h). Returns 0, or -1 when out of memory. */
int wr_dlq_strip_props(amqp_pool_t *pool, const amqp_basic_properties_t *orig,
                       amqp_basic_properties_t *out);

/* Truncate N bytes of S to at most MAX bytes without splitting a UTF-8 sequence. */
size_t wr_utf8_truncate(const char *s, size_t n, size_t max);

#endif
