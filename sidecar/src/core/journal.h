/*
 * journal: the short story of one event, kept in Redis for `warren trace`.
 *
 * Every time a worker decides what happens to a message (and every time
 * `warren dlq replay` sends one back) it appends one entry to a capped Redis
 * list per event:
 *
 *     <idempotency.prefix>journal:<subscription>:<event key>
 *
 * where the event key is the idempotency key (the message id by default).
 * An entry is one compact JSON object:
 *
 *     {"ts":1764475200123,"event":"retried","worker":0,"message_id":"evt-1",
 *      "attempt":1,"reason":"handler-error","error":"h.lua:3: boom",
 *      "delay_ms":1000,"queue":"orders.retry.1s","duration_ms":0.2,
 *      "trace_id":"...","handler_version":"b3367eaf0cdd"}
 *
 * `event` is one of the WR_JOURNAL_* names below. Only the fields that mean
 * something for that event are written. `ts` is the writer's wall clock in
 * epoch milliseconds. The outcome of a first attempt carries `received_at`
 * (with `type` and `redelivered`), from which the reader makes the "received"
 * entry of the timeline: one entry per handled message, not two.
 * With the subscription's trace_fields, that first entry also carries
 * `fields`, the recorded body values (`{"order_id":"o-2007"}`), by which
 * `warren trace` finds an event.
 *
 * This module is pure: it builds entries (wr_journal_encode) and, for the
 * reader, turns a list of entries plus the event's idempotency record into a
 * "story" (wr_journal_story: the timeline, the trace id, the handler versions
 * that saw it, where the message is now and what to run next) and prints it
 * (wr_journal_render). The Redis writes are wr_idem_journal (idem.h); the
 * reads are tracecmd.c's.
 */
#ifndef WR_JOURNAL_H
#define WR_JOURNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Event names (the `event` field). */
#define WR_JOURNAL_RECEIVED "received"           /* a first attempt arrived (see received_ms) */
#define WR_JOURNAL_OK "ok"                       /* handled; the record is done/ok */
#define WR_JOURNAL_RETRIED "retried"             /* failed; a copy waits in a delay tier */
#define WR_JOURNAL_DEAD_LETTERED "dead-lettered" /* failed for good (or invalid): in the DLQ */
#define WR_JOURNAL_DUPLICATE "duplicate"         /* already done: acked, nothing ran */
#define WR_JOURNAL_DEFERRED "deferred"           /* its key was busy: a copy waits */
#define WR_JOURNAL_RETURNED "returned"           /* given back to its queue (see error) */
#define WR_JOURNAL_REPLAYED "replayed"           /* sent back from the DLQ by the operator */
/* waits in Redis behind a causal gate or a retried message of its ordering key (gates.h) */
#define WR_JOURNAL_PARKED "parked"

/* Longest error kept in an entry, in bytes (cut on a UTF-8 boundary). */
#define WR_JOURNAL_ERROR_MAX 400

/*
 * One entry to write. Strings may be NULL (or empty): then they are left out;
 * so are negative numbers. Plain data, borrowed by wr_journal_encode.
 */
typedef struct {
    int64_t ts_ms;     /* epoch ms; 0: now (wall clock) */
    const char *event; /* WR_JOURNAL_*, required */
    const char *subscription;
    int worker;             /* worker index; -1 when not written by a worker */
    const char *by;         /* who, when not a worker ("warren dlq replay") */
    const char *message_id; /* message_id_len bytes, need not be NUL-terminated */
    size_t message_id_len;
    const char *type; /* the event type, type_len bytes */
    size_t type_len;
    int attempt;        /* 0: none */
    const char *reason; /* stable code: handler-error, timeout, rejected, ... */
    const char *error;  /* truncated to WR_JOURNAL_ERROR_MAX */
    int64_t delay_ms;   /* retried/deferred: how long the copy waits; -1 none */
    const char *queue;  /* where its copy went (delay tier, DLQ, queue) */
    double duration_ms; /* handler run time; < 0: none */
    const char *trace_id;
    const char *handler_version;
    int published;       /* ok: events published; -1 none */
    int replay;          /* 1: this copy came from `warren dlq replay` */
    int redelivered;     /* 1: the broker redelivered it */
    int64_t received_ms; /* > 0: this is a first attempt, which arrived then; the
                            reader shows a "received" entry before this one (one
                            entry per message instead of two: half the writes) */
    const char *note;    /* free text (replay: what was done to the record) */
    const char *fields;  /* a JSON object of recorded body values (trace_fields), written
                            as is; NULL: none */
} wr_journal_entry;

/* An entry with every optional field unset. */
wr_journal_entry wr_journal_entry_init(const char *event);

/*
 * Encode E as compact JSON. Bytes that are not UTF-8 become '?'. Returns a
 * malloc'd NUL-terminated string (caller frees), or NULL when out of memory
 * or E has no event.
 */
char *wr_journal_encode(const wr_journal_entry *e);

/*
 * The Redis key of an event's journal: <prefix>journal:<subscription>:<key>
 * into OUT. Returns 0, or -1 when it does not fit in CAP.
 */
int wr_journal_key(const char *prefix, const char *subscription, const char *key, char *out,
                   size_t cap);

/* What the idempotency record of the event says (all optional). */
typedef struct {
    const char *state;   /* "processing", "released", "done"; NULL: no record */
    const char *outcome; /* "ok", "rejected", "dead-lettered" */
    int64_t lease_until; /* processing: Redis time in ms; 0 none */
    int64_t done_at;     /* done: Redis time in ms; 0 none */
    int starts;          /* claims so far */
} wr_journal_record;

/* What the story is about, and how the operator reaches it. */
typedef struct {
    const char *config; /* the config file given to warren trace (for commands) */
    const char *subscription;
    const char *key;         /* the event key asked for */
    const char *journal_key; /* the Redis key of the journal */
    const char *queue;       /* the subscription's queue */
    const char *dlq;         /* the subscription's DLQ */
    int64_t now_ms;          /* Redis (or wall clock) time now */
} wr_journal_subject;

/*
 * Build the story of one event from its journal ENTRIES (N JSON strings,
 * oldest first; unreadable ones are kept as {"event":"unreadable"}) and its
 * idempotency record REC (NULL: idempotency off). Returns a new JSON object
 * (caller decrefs) with: subscription, key, journal, entries (parsed),
 * trace_id, handler_versions (in order of first appearance), record, where
 * ({"state": done|dlq|delay|wait|queue|processing|unknown, "detail": text,
 * "since": ts, "due": ts}), next (commands to run), found (false when there
 * is neither a journal nor a record). NULL when out of memory.
 */
json_t *wr_journal_story(const wr_journal_subject *s, const char *const *entries, int n,
                         const wr_journal_record *rec);

/* Print STORY (from wr_journal_story) as a readable timeline to FP. */
void wr_journal_render(FILE *fp, const json_t *story);

#endif
