/*
 * tindex: the trace index, by which `warren trace VALUE` finds the events
 * that VALUE names without looking at every record in Redis.
 *
 * For each value an event's first journal entry (journal.h) files it under,
 * one capped Redis list:
 *
 *     <idempotency.prefix>journal:#index:<value>  ->  "<subscription>:<event key>", ...
 *
 * The values: each body value the subscription records (trace_fields), and
 * the message id when the subscription's idempotency key is not the message
 * id (where it is, the id is the key: no index needed). A subscription that
 * records no trace_fields and keys by message id writes nothing here.
 *
 * The lists are written with the batch's journal entries (wr_idem_journal:
 * pipelined, not waited for, best effort, with the journal's TTL and trimmed
 * to its newest journal.max_entries members; the same member may appear
 * twice, a redelivered first attempt) and read by tracecmd.c, one LRANGE per
 * value and prefix. '#' is not allowed in a subscription name, so no journal
 * or record key can take the form of an index key.
 */
#ifndef WR_TINDEX_H
#define WR_TINDEX_H

#include <stddef.h>

#include "config.h"
#include "idem.h"

#define WR_TINDEX_VALUE_MAX 512 /* longer values are not indexed */

/* A batch's index lists, built by wr_tindex_add; zero it to start. */
typedef struct {
    wr_idem_jlist *lists; /* n of them, for wr_idem_journal */
    char **strs;          /* every key and member (owned) */
    int n, cap, nstrs, strcap;
} wr_tindex;

/*
 * File the event of journal entry ENTRY (journal.h's JSON), event key KEY
 * in subscription SUB, under its values: only a first entry (it carries
 * received_at) is filed, so an event is indexed once, not at every step.
 * Does nothing for a subscription that needs no index. Out of memory: the
 * event is not indexed (the index is best effort).
 */
void wr_tindex_add(wr_tindex *x, const wr_subscription *sub, const char *entry, const char *key);

/* Free what X holds and zero it. */
void wr_tindex_free(wr_tindex *x);

/* The index key of VALUE under PREFIX into OUT. Returns 0, or -1 when it does
 * not fit in CAP (or VALUE is longer than WR_TINDEX_VALUE_MAX). */
int wr_tindex_key(const char *prefix, const char *value, char *out, size_t cap);

/* Split MEMBER ("<subscription>:<event key>", LEN bytes) at its first ':'.
 * Returns 0 with *SUB_LEN (the subscription's length) and *KEY (into MEMBER),
 * or -1 when it has no ':'. */
int wr_tindex_member(const char *member, size_t len, size_t *sub_len, const char **key);

#endif
