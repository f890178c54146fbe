/*
 * sign: which x-warren-* headers warren can trust.
 *
 * A copy warren sends through its own delay and wait queues (and a copy
 * `warren dlq replay` sends back) carries its story in headers: the attempt
 * count and the route the producer chose. Anyone who can publish to the queue
 * could write those headers too: `x-warren-attempt: 4` would make a fresh
 * message the last attempt, `x-warren-original-exchange: admin.trusted` would
 * show the handler a route the message never took. So warren signs what it
 * writes: x-warren-signature is an HMAC-SHA256 over the message id, the
 * attempt count and the original route, keyed by a secret the sidecars share
 * (security.signing_key), and a message whose headers do not carry a valid
 * signature is treated as a fresh message from the exchange it was delivered
 * from; the forgery is counted and logged, never trusted.
 *
 *   x-warren-signature: v1:<64 hex digits>
 *
 * The signed text is "v1\n" and, each as <length>:<bytes>\n, the message id,
 * the attempt count in decimal (0 when the header is absent), the original
 * exchange and the original routing key. Pure: no I/O.
 */
#ifndef WR_SIGN_H
#define WR_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "amqp_compat.h"
#include "config.h"
#include "envelope.h"

#define WR_SIGN_HEADER "x-warren-signature"
#define WR_SIGN_LEN 67 /* "v1:" + 64 hex digits */

typedef struct {
    unsigned char key[32];
} wr_sign_key;

/* The key for SECRET (LEN bytes): its SHA-256, so any length of secret works. */
void wr_sign_key_from(wr_sign_key *k, const char *secret, size_t len);

/* The key of CFG: security.signing_key, or when it is not set a secret derived
 * from the broker's password, Redis's password and the vhost (what producers
 * that do not share warren's credentials cannot know). */
void wr_sign_key_for(wr_sign_key *k, const wr_config *cfg);

/* The signature of the tuple into OUT (WR_SIGN_LEN + 1 bytes, NUL-terminated). */
void wr_sign(const wr_sign_key *k, amqp_bytes_t message_id, int64_t attempt, amqp_bytes_t exchange,
             amqp_bytes_t routing_key, char *out);

/*
 * Check the x-warren-* headers of ENV (decoded from delivery D by
 * wr_envelope_decode, which believes them): when they carry an attempt count or
 * an original route, their signature must match. Returns 0 when there is
 * nothing to check or it matches; 1 when it does not (forged, or signed with
 * another key): then ENV is made what a fresh message would be (attempt 1,
 * the exchange and routing key it was delivered with).
 */
int wr_sign_check(const wr_sign_key *k, const amqp_envelope_t *d, wr_envelope *env);

#endif
