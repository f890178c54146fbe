/*
 * record: where an event's idempotency record lives in Redis and what its
 * value says. Shared by the worker (idem.c builds the values it writes), the
 * scripts (sidecar/scripts/record.lua reads and writes the same form),
 * `warren trace` and `warren dlq`. Pure: no I/O.
 *
 * Key: <idempotency.prefix><subscription>:<key>
 *
 * Value: one compact string (a hash of four fields cost Redis several times
 * more per message):
 *
 *   p|<starts>|<token>|<lease_until>          processing: TOKEN holds it until
 *                                             LEASE_UNTIL (Redis time, epoch ms)
 *   r|<starts>                                released: claimable again
 *   d|<starts>|<outcome>|<done_at>|<entry>    done: OUTCOME ("ok", "rejected",
 *                                             "dead-lettered") at DONE_AT (epoch ms,
 *                                             the finishing worker's clock); ENTRY
 *                                             is the journal entry (journal.h) of
 *                                             the event's last step, or empty
 *
 * STARTS counts the claims that may have run the handler (the crash-loop
 * guard compares it with the attempts). Tokens never contain '|'; an entry
 * may (it is last). Records written before 0.2 were hashes (fields state,
 * starts, token, lease_until, outcome, done_at): wr_record_from_hash reads
 * them, and the scripts replace them the next time they write one.
 */
#ifndef WR_RECORD_H
#define WR_RECORD_H

#include <stddef.h>
#include <stdint.h>

/* A record's value, read. The strings point into the parsed text. */
typedef struct wr_record {
    char state; /* 'p' processing, 'r' released, 'd' done; 0: no record */
    int starts;
    const char *token; /* p */
    size_t token_len;
    int64_t lease_until; /* p */
    const char *outcome; /* d */
    size_t outcome_len;
    int64_t done_at;   /* d */
    const char *entry; /* d: "" when none */
    size_t entry_len;
} wr_record;

/* The record key of KEY in SUBSCRIPTION into OUT. Returns its length, or -1
 * when it does not fit in CAP. */
int wr_record_key(const char *prefix, const char *subscription, const char *key, char *out,
                  size_t cap);

/* Parse the value V (N bytes). Returns 0, or -1 when it is not a record. */
int wr_record_parse(const char *v, size_t n, wr_record *r);

/* A record of the hash form: N field/value pairs (FIELDS[i], VALUES[i]). */
int wr_record_from_hash(const char *const *fields, const char *const *values, int n, wr_record *r);

/* The state's name: "processing", "released", "done" (NULL for none). */
const char *wr_record_state_name(char state);

/* Values the worker writes (malloc'd, caller frees; NULL: out of memory). */
char *wr_record_done(int starts, const char *outcome, int64_t done_at, const char *entry);
char *wr_record_released(int starts);

#endif
