/*
 * idkey: which key identifies a message for idempotency, as a pure function.
 *
 * Per subscription (config: idempotency.key) the key comes from the AMQP
 * message_id, a header, or a field of the JSON body ("json:order.id"). A
 * message that has no key cannot be deduplicated: by default it is invalid
 * (dead-lettered with reason "missing-idempotency-key"); with
 * `missing_key: body-hash` the key is the SHA-256 of the body instead
 * ("sha256:<hex>"), so byte-identical redeliveries are still caught.
 */
#ifndef WR_IDKEY_H
#define WR_IDKEY_H

#include <stddef.h>

#include "config.h"
#include "envelope.h"
#include "outcome.h"

#define WR_IDKEY_MAX 512 /* longest key accepted, in bytes */
#define WR_REASON_MISSING_KEY "missing-idempotency-key"

/*
 * Derive the key of ENV under POLICY into OUT (NUL-terminated, at most
 * WR_IDKEY_MAX bytes plus the terminator; CAP must be larger). Returns
 * WR_RS_NONE (0), or why the message is invalid, with a human explanation in
 * WHY: WR_RS_MISSING_KEY, or WR_RS_INVALID_JSON when the key is a JSON field
 * and a body of a JSON content type (or none) is not JSON at all (what the
 * handler's decoding would say too, so `warren dlq list --reason invalid-json`
 * finds it whatever the key's source). A body hash (missing_key: body-hash)
 * stands in for a missing key, never for a body that is not JSON.
 */
wr_reason wr_idkey_derive(const wr_idem_policy *policy, const wr_envelope *env, char *out,
                          size_t cap, char *why, size_t whycap);

/* Longest AMQP short string (message ids, exchange and queue names, header names). */
#define WR_AMQP_SHORTSTR 255

/*
 * The values of the JSON paths PATHS (N of them, "a.b" form, as the json: key
 * source reads them) in ENV's body, as a compact JSON object {"a.b": value}
 * of those that are strings or numbers (strings cut at 200 bytes). Returns a
 * malloc'd string (caller frees), or NULL when none is there or the body is
 * not JSON.
 */
char *wr_idkey_fields(char *const *paths, int n, const wr_envelope *env);

/*
 * The message id of the N-th event (1-based) a handler published while
 * handling the message of key BASE (BASE_LEN bytes) in SUBSCRIPTION:
 * "<base>:<subscription>:<n>", so a run after a crash publishes the same ids
 * and two subscriptions that handle one message publish different ones. An id
 * that would be longer than an AMQP message id can be (255 bytes) is
 * "sha256:<hex of base:subscription>:<n>" instead, still deterministic. OUT
 * needs WR_EVENT_ID_CAP bytes. Returns the id's length.
 */
#define WR_EVENT_ID_CAP (WR_IDKEY_MAX + 320)
size_t wr_idkey_event_id(const char *base, size_t base_len, const char *subscription, int n,
                         char *out);

#endif
