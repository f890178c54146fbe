/*
 * idem: the idempotency record of each message, in Redis.
 *
 * One string per key (record.h: <prefix><subscription>:<key>) moves through a
 * small state machine, always inside server-side scripts (sidecar/scripts/,
 * EVALSHA, loaded on every connect and again after NOSCRIPT), never
 * check-then-set from here:
 *
 *   absent/released --claim--> processing(token, lease_until, starts+1)
 *   processing, lease live      --claim--> BUSY (someone else is on it)
 *   processing, lease expired   --claim--> processing (TAKEOVER: a worker died)
 *   processing(our token) --done-->    done(outcome, entry)   kept ttl (or forever)
 *   processing(our token) --release--> released               (retry: claimable again)
 *   processing(our token) --unclaim--> released, starts-1     (it never ran)
 *   processing(our token) --extend-->  lease_until pushed out (a long batch)
 *   done                  --claim-->   DONE (a duplicate: ack it, run nothing)
 *
 * A done can carry the message's ctx.store writes (storebuf.h): the same
 * script run applies them with the done mark, all or none, and only while our
 * token owns the record; with Redis Cluster the store keys and the record must
 * share a slot (hash tags in both prefixes), else Redis refuses the call with
 * CROSSSLOT (nothing applied). A done also keeps the journal entry of the
 * message's last step (journal.h), so a message handled at its first attempt
 * costs one record write and no journal write.
 *
 * done/release/extend check that our token still owns the key; when it does
 * not (our lease expired and another worker took over) the call reports LOST
 * and changes nothing. Leases run on the Redis server's clock (TIME), so the
 * sidecars' clocks do not matter.
 *
 * Every call takes a whole batch and costs one script run (all of a batch's
 * keys in one EVALSHA). Calls can overlap: wr_idem_claim_send() and
 * wr_idem_finish_send() send without waiting, and the matching _recv()
 * collects the answer later (at most one claim and one finish outstanding at a
 * time), so a worker claims its next batch while the previous one commits.
 * Replies come back in the order the commands were sent; whatever a call
 * finds in front of its own reply (another call's, a journal write's) is kept
 * or handled on the way. The keys of one call must live on one Redis node: a
 * single Redis server (or a cluster with hash tags in the key prefix).
 *
 * A wr_idem belongs to one worker thread. On any connection error the call
 * returns -1, every outstanding call's outcome is unknown (its _recv returns
 * -1 too), and the next send reconnects.
 */
#ifndef WR_IDEM_H
#define WR_IDEM_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "storebuf.h"

typedef struct wr_idem wr_idem;

typedef enum {
    WR_CLAIM_ACQUIRED = 0, /* ours: run the handler */
    WR_CLAIM_TAKEOVER,     /* ours, after another owner's lease expired: run the handler */
    WR_CLAIM_DONE,         /* already handled: a duplicate */
    WR_CLAIM_BUSY,         /* another live worker has it: come back later */
} wr_claim_status;

typedef struct {
    const char *key;        /* full Redis key (in) */
    wr_claim_status status; /* (out) */
    int starts;             /* (out) claims so far, this one included (ACQUIRED/TAKEOVER) */
    int64_t busy_ms;        /* (out) BUSY: lease time left */
    char outcome[32];       /* (out) DONE: the outcome recorded */
} wr_claim;

typedef enum {
    WR_FINISH_DONE = 0, /* handled for good: keep the outcome */
    WR_FINISH_RELEASE,  /* ran, to be retried: claimable again */
    WR_FINISH_EXTEND,   /* still working on it: push the lease out */
    WR_FINISH_UNCLAIM,  /* never ran (shutdown, breaker): claimable again, and the start it
                           counted is taken back, so the crash-loop guard ignores it */
} wr_finish_op;

typedef struct {
    const char *key;           /* (in) */
    wr_finish_op op;           /* (in) */
    const char *outcome;       /* (in) DONE: "ok", "rejected", "dead-lettered" */
    int starts;                /* (in) DONE, RELEASE, UNCLAIM: the starts its claim counted */
    const char *entry;         /* (in) DONE: the journal entry of the message's last step, kept
                                  in the record (journal.h); NULL: none */
    int64_t done_at;           /* (in) DONE: when (epoch ms) */
    const wr_storebuf *writes; /* (in) DONE: the message's ctx.store writes (storebuf.h),
                                  applied in the same script run as the done mark, only
                                  when the token owns the record; NULL: none */
    int owned;                 /* (out) 1: applied; 0: LOST, another worker owns the key now (and
                                  none of the writes was applied) */
    int refused;               /* (out) owned, but the writes cannot apply (a key of another type
                                  in Redis, a non-integer counter): nothing of them was applied and
                                  the record is left as it was (processing, ours), for the caller
                                  to dead-letter the message and then mark it done */
    int conflict;              /* (out) owned, but a guarded read of the handler no longer holds
                                  (storebuf.h): nothing applied, the record unclaimed, so the
                                  message can run again from fresh state */
    char why[200];             /* (out) refused or conflict: why */
    int failed;                /* set by the caller when the script raised on this record alone
                                  (see WR_IDEM_SCRIPT_FAILED): nothing is known of it */
} wr_finish;

/* Connect (and AUTH/SELECT as the URL says). Returns NULL with ERR on failure. */
wr_idem *wr_idem_create(const wr_redis_url *url, int64_t timeout_ms, char *err, size_t errcap);
void wr_idem_destroy(wr_idem *d);
const char *wr_idem_error(const wr_idem *d);

/* Claim N keys for TOKEN. Returns 0 with every status filled, or -1. */
int wr_idem_claim(wr_idem *d, wr_claim *claims, int n, const char *token, int64_t lease_ms,
                  int64_t ttl_ms);

/* The same in two steps: send the claim now (0, or -1), read its answer later
 * into the same N CLAIMS (0, or -1: the connection failed, nothing known). */
int wr_idem_claim_send(wr_idem *d, const wr_claim *claims, int n, const char *token,
                       int64_t lease_ms, int64_t ttl_ms);
int wr_idem_claim_recv(wr_idem *d, wr_claim *claims, int n);

/* wr_idem_finish: the script ran and raised an error (the reason in
 * wr_idem_error). Redis does not roll a script back: records before the failing
 * one may be written. The connection is fine. */
#define WR_IDEM_SCRIPT_FAILED (-2)

/* Apply N finishing operations for TOKEN. Returns 0 with every `owned` filled, -1
 * (connection failed: nothing known), or WR_IDEM_SCRIPT_FAILED. */
int wr_idem_finish(wr_idem *d, wr_finish *ops, int n, const char *token, int64_t lease_ms,
                   int64_t ttl_ms);

/* The same in two steps: send now (0, or -1), read the answer later into the
 * same N OPS, which must stay unchanged meanwhile (returns as wr_idem_finish). */
int wr_idem_finish_send(wr_idem *d, const wr_finish *ops, int n, const char *token,
                        int64_t lease_ms, int64_t ttl_ms);
int wr_idem_finish_recv(wr_idem *d, wr_finish *ops, int n);

/*
 * WAIT N TIMEOUT_MS: wait until N replicas hold every write this connection
 * sent before (a finish read back, the journal writes queued before it), so
 * that a failover to one of them keeps them. Returns how many replicas
 * acknowledged in time (fewer than N: the reason is in wr_idem_error), or -1
 * when the connection failed.
 */
int wr_idem_wait_replicas(wr_idem *d, int n, int64_t timeout_ms);

/* PING: 0 when Redis answers PONG (not BUSY or LOADING: -1 then). */
int wr_idem_ping(wr_idem *d);

/*
 * ctx.store's reads, on this connection: a wr_sb_fetch (storebuf.h) with UD
 * the wr_idem. What OUT points to stays valid until the next call. Returns 0,
 * or -1 with ERR ("Redis: WRONGTYPE ...", "Redis: connect ...").
 */
int wr_idem_store_fetch(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_base *out,
                        char *err, size_t errcap);

/*
 * Run the causal gates' script (sidecar/scripts/gate.lua, gates.h) with NKEYS
 * keys and NARGS arguments (at most 13 in all), on this connection, after
 * whatever is owed before it, and wait for the answer. Returns the reply
 * (owned by D, valid until the next call that waits for a reply), or NULL
 * with wr_idem_error set: the connection failed (the next call reconnects)
 * or the script raised.
 */
struct redisReply;
const struct redisReply *wr_idem_gate(wr_idem *d, int nkeys, const char *const *keys,
                                      const size_t *klens, int nargs, const char *const *vals,
                                      const size_t *vlens);

/* One event's new journal entries (journal.h), for wr_idem_journal. */
typedef struct {
    const char *key;            /* the journal's Redis key (wr_journal_key) */
    const char *const *entries; /* encoded entries, oldest first */
    int count;                  /* at least 1 */
} wr_idem_jlist;

/*
 * Append the entries of N journals (RPUSH and PEXPIRE TTL_MS per journal,
 * pipelined) without waiting for Redis: the commands are queued and go out
 * with the next call that sends (or wr_idem_settle), and their replies are
 * read whenever a later call reads its own, so the journal adds no wait to a
 * batch. Journals past MAX_ENTRIES are trimmed to their newest MAX_ENTRIES
 * (LTRIM) when the replies are read. Not atomic across journals, and not meant
 * to be: a journal is best effort. Returns 0, or -1 with the reason in
 * wr_idem_error: the connection failed, or the previous write's replies held
 * errors (reported one call late; this call's entries are sent all the same).
 */
int wr_idem_journal(wr_idem *d, const wr_idem_jlist *lists, int n, int max_entries, int64_t ttl_ms);

/* Wait for what the last journal write still owes (before closing D). Returns
 * 0, or -1 with the reason: the connection failed, or Redis refused entries. */
int wr_idem_settle(wr_idem *d);

#endif
