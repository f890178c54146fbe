/*
 * envelope: what warren knows about one delivery before any handler runs.
 *
 * wr_envelope_decode() reads the AMQP delivery (properties, routing, body)
 * into a wr_envelope of views (no copies: every field points into the
 * delivery, which must outlive the envelope) and decides whether the message
 * can be processed at all. A message that cannot (no message id, an empty or
 * oversized body, a JSON content type over bytes that are not UTF-8, a
 * content encoding we cannot undo) is "invalid": it goes to the DLQ at once
 * with the reason, and is never retried, because no retry can fix it.
 *
 * Decoding the JSON itself happens in the worker's Lua state (lua-cjson), so
 * the handler gets the table cjson built; a parse error there is reported the
 * same way (reason "invalid-json").
 *
 * Pure logic: no I/O, unit-tested in tests/unit/test_envelope.c.
 */
#ifndef WR_ENVELOPE_H
#define WR_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "amqp_compat.h"

typedef struct {
    amqp_bytes_t id;       /* AMQP message_id */
    amqp_bytes_t type;     /* AMQP type property, else the routing key */
    amqp_bytes_t version;  /* "version" header (string or integer), empty if absent */
    amqp_bytes_t exchange; /* exchange the producer published to */
    amqp_bytes_t routing_key;
    amqp_bytes_t content_type; /* empty if absent */
    amqp_bytes_t body;
    const amqp_table_t *headers; /* NULL when the message has none */
    int64_t timestamp;           /* AMQP timestamp (seconds), 0 if absent */
    int redelivered;
    int is_json;                   /* the body is to be decoded as JSON */
    int attempt;                   /* 1 + x-warren-attempt header (retries), 1 if absent */
    amqp_bytes_t traceparent;      /* W3C traceparent header, empty if absent */
    amqp_bytes_t tracestate;       /* W3C tracestate header, empty if absent: passed on as is */
    char version_buf[24];          /* storage when "version" is an integer header */
    amqp_bytes_t original_version; /* the version it was produced as, when upcast
                                      (contracts.h); empty: the same as version */
    char original_buf[24];         /* storage for original_version */
} wr_envelope;

/* Why a message is invalid: stable codes, used in DLQ headers and metrics. */
#define WR_REASON_MISSING_ID "missing-message-id"
#define WR_REASON_EMPTY_BODY "empty-body"
#define WR_REASON_TOO_LARGE "body-too-large"
#define WR_REASON_NOT_UTF8 "invalid-json"
#define WR_REASON_ENCODING "unsupported-content-encoding"
#define WR_REASON_INVALID_JSON "invalid-json"

/*
 * Decode delivery D into ENV. MAX_BODY is the largest body accepted, in bytes;
 * REQUIRE_ID makes a message without message_id invalid (it is, unless the
 * subscription's idempotency key comes from elsewhere). A message that comes
 * back from a delay queue gets its original exchange and routing key from the
 * x-warren-original-* headers.
 * Returns 0 when the message can be handled; -1 when it is invalid, with
 * *REASON set to one of the WR_REASON_* codes and a human explanation in
 * DETAIL (always NUL-terminated). ENV is filled as far as possible either way,
 * so an invalid message can still be logged with its id and type.
 */
int wr_envelope_decode(const amqp_envelope_t *d, size_t max_body, int require_id, wr_envelope *env,
                       const char **reason, char *detail, size_t detail_cap);

/* 1 when CONTENT_TYPE names JSON: empty (producers often omit it), application/json,
 * text/json or application/<anything>+json, parameters ignored. */
int wr_envelope_is_json_type(amqp_bytes_t content_type);

/* The value of header NAME in TABLE, or NULL. */
const amqp_field_value_t *wr_table_get(const amqp_table_t *table, const char *name);

/* V's value when V is of an integer kind whose every value fits an int64_t (i8
 * to i64, u8 to u32): returns 0 and sets *OUT; -1 for any other kind (u64 and
 * timestamps included). */
int wr_field_int(const amqp_field_value_t *v, int64_t *out);

/* Read an integer header (any AMQP integer kind, or a decimal string); returns 0 and
 * sets *OUT, or -1 if absent or not an integer. */
int wr_table_get_int(const amqp_table_t *table, const char *name, int64_t *out);

/* Read a string header (longstr or bytes); returns the bytes, len 0 if absent. */
amqp_bytes_t wr_table_get_str(const amqp_table_t *table, const char *name);

/*
 * Parse a W3C traceparent ("00-<32 hex trace id>-<16 hex span id>-<2 hex flags>").
 * Returns 0 and fills TRACE_ID (33 bytes) and SPAN_ID (17 bytes) when valid
 * (lowercase hex, ids not all zero), -1 otherwise.
 */
int wr_trace_parse(amqp_bytes_t tp, char *trace_id, char *span_id);

/*
 * The trace id of a message that came without a traceparent: derived from its
 * message id MESSAGE_ID (or, when it has none, from its idempotency key KEY),
 * so every subscription that gets the same input, every attempt and every
 * replay of it share one trace. TRACE_ID (33 bytes) gets the first 128 bits
 * of SHA-256("warren-trace\n" + the id) in lowercase hex. Returns 0, or -1
 * when there is neither an id nor a key (the caller starts a random trace).
 */
int wr_trace_derive(amqp_bytes_t message_id, const char *key, char *trace_id);

/* Offset of the first byte that is not valid UTF-8 in S, or N when all of it is. */
size_t wr_utf8_check(const unsigned char *s, size_t n);

#endif
