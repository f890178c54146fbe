/*
 * outcome: the words warren uses for how a message ended, in one place.
 *
 * wr_outcome is how its handler ended (lua_rt.h returns it); wr_reason is the
 * stable code that DLQ headers, retry headers, logs, metrics and `warren dlq
 * list --reason` carry; wr_action (decide.h) is what the worker does about it.
 * Each has a name table; callers compare enums, never strings. Pure.
 */
#ifndef WR_OUTCOME_H
#define WR_OUTCOME_H

#include <stddef.h>

typedef enum {
    WR_OUT_OK = 0,  /* handled: publish its events, then ack */
    WR_OUT_ERROR,   /* the handler raised an error (retryable) */
    WR_OUT_TIMEOUT, /* the handler ran past its deadline (retryable) */
    WR_OUT_RETRY,   /* the handler asked for a retry: ctx.retry */
    WR_OUT_REJECT,  /* permanent failure: ctx.reject */
    WR_OUT_INVALID, /* the message could not be decoded: invalid-json */
} wr_outcome;

/* "ok", "error", "timeout", "retry", "rejected", "invalid". */
const char *wr_outcome_name(wr_outcome o);

typedef enum {
    WR_RS_NONE = 0,
    /* the message itself (envelope.h, idkey.h): dead-lettered at once */
    WR_RS_MISSING_ID,   /* missing-message-id */
    WR_RS_EMPTY_BODY,   /* empty-body */
    WR_RS_TOO_LARGE,    /* body-too-large */
    WR_RS_INVALID_JSON, /* invalid-json */
    WR_RS_ENCODING,     /* unsupported-content-encoding */
    WR_RS_MISSING_KEY,  /* missing-idempotency-key */
    /* its contract (contracts.h): dead-lettered at once */
    WR_RS_SCHEMA_INVALID,     /* schema-invalid */
    WR_RS_VERSION_UNKNOWN,    /* version-unknown: no contract for its version (yet) */
    WR_RS_UNKNOWN_TYPE,       /* unknown-type: no contract for its type (unknown_types: dlq) */
    WR_RS_UPCAST_FAILED,      /* upcast-failed: an upcaster raised or its result is invalid */
    WR_RS_INVALID_CLOUDEVENT, /* invalid-cloudevent: claims to be one, is not (cloudevent.h) */
    /* the handler (lua_rt.h) */
    WR_RS_HANDLER_ERROR,   /* handler-error */
    WR_RS_TIMEOUT,         /* timeout */
    WR_RS_OUT_OF_MEMORY,   /* out-of-memory */
    WR_RS_STACK_OVERFLOW,  /* stack-overflow: calls nested too deeply through C */
    WR_RS_RETRY_REQUESTED, /* retry-requested: ctx.retry */
    WR_RS_REJECTED,        /* rejected: ctx.reject */
    /* the worker */
    WR_RS_CRASHED,       /* crashed: started too often without an outcome */
    WR_RS_STORE_REFUSED, /* store-refused: Redis cannot take its ctx.store writes */
    WR_RS_OTHER,         /* a code this table does not know (kept as text) */
    WR_RS_COUNT
} wr_reason;

/* The code of R ("handler-error", ...); "" for WR_RS_NONE. */
const char *wr_reason_name(wr_reason r);

/* The reason named NAME: WR_RS_NONE for NULL or "", WR_RS_OTHER for a
 * name not in the table. */
wr_reason wr_reason_parse(const char *name);

/*
 * The reason an operator named (`warren dlq list --reason NAME`): 0 and *OUT
 * set when NAME is one of the table's codes ("other" included: a DLQ copy
 * whose code this version does not know lists under it), -1 otherwise.
 */
int wr_reason_lookup(const char *name, wr_reason *out);

/* Every code of the table, in its order, separated by SEP, into OUT (cut to
 * CAP). For usage errors and docs: "missing-message-id, empty-body, ...". */
void wr_reason_list(const char *sep, char *out, size_t cap);

#endif
