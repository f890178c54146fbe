/*
 * breakers: the process's shared circuit breakers, behind locks.
 *
 * One per subscription (its workers stop consuming while it is open) and one
 * per named downstream dependency (ctx.breaker(name) in handlers: "payments",
 * "inventory"), each a wr_brk (breaker.h) with a mutex; every operation is a
 * few arithmetic steps under the lock. State changes are logged here, one
 * line each ("breaker opened", "breaker half-open", "breaker closed").
 *
 * Named breakers are those of the config's `breakers` section; a name that is
 * not there gets the policy of the subscription whose handler first asks for
 * it. The set lives as long as the process.
 */
#ifndef WR_BREAKERS_H
#define WR_BREAKERS_H

#include "breaker.h"
#include "config.h"

typedef struct wr_breakers wr_breakers;
typedef struct wr_shared_brk wr_shared_brk;

wr_breakers *wr_breakers_create(const wr_config *cfg);
void wr_breakers_destroy(wr_breakers *s);

/* The breaker of subscription I. */
wr_shared_brk *wr_breakers_sub(wr_breakers *s, int i);

/* The named breaker NAME (created with FALLBACK's policy when not configured).
 * Returns NULL only when out of memory. */
wr_shared_brk *wr_breakers_named(wr_breakers *s, const char *name,
                                 const wr_breaker_policy *fallback);

/* wr_brk_allow / wr_brk_record / wr_brk_release under the lock, logging changes. */
int wr_shared_brk_allow(wr_shared_brk *b);
void wr_shared_brk_record(wr_shared_brk *b, int ok);
void wr_shared_brk_release(wr_shared_brk *b);

/* Record one failure, and what it was: the message id (ID, LEN bytes, may be
 * NULL) and its error (ERROR, may be NULL). The newest WR_BRK_KEEP failures
 * are kept: the "breaker opened" line names them, and so does status. */
#define WR_BRK_KEEP 3
void wr_shared_brk_failed(wr_shared_brk *b, const char *id, size_t len, const char *error);

/* Note a failed message that the breaker does not count (a handler's own
 * error, a rejection): status lists it among the last errors. */
void wr_shared_brk_note(wr_shared_brk *b, const char *id, size_t len, const char *error);

/* Failures, newest first. */
typedef struct {
    int n;
    struct {
        int64_t at_ms;
        char message_id[128];
        char error[256];
        int counted; /* the breaker counted it */
    } e[WR_BRK_KEEP];
} wr_brk_failures;

/* A breaker as status shows it: plain data, copied under the lock. */
typedef struct {
    wr_brk_state state;
    int64_t opened_at_ms;    /* wall clock ms of the last opening (0: never) */
    int64_t probe_at_ms;     /* open: when it lets probes through (wall clock ms) */
    int64_t half_open_at_ms; /* half-open: since when (wall clock ms) */
    long opened_count;       /* times it opened since start */
    wr_brk_failures counted; /* the last failures it counted */
    wr_brk_failures recent;  /* the last failures of any kind (counted or not) */
} wr_brk_status;

/* Fill *ST with B's state now. */
void wr_shared_brk_status(wr_shared_brk *b, wr_brk_status *st);

/* 1 when no call may start now: open, or half-open with every probe slot taken.
 * *WAIT_MS: a good time to look again. */
int wr_shared_brk_blocks(wr_shared_brk *b, int64_t *wait_ms);

/* The state now, and its name. */
wr_brk_state wr_shared_brk_state(wr_shared_brk *b);
const char *wr_shared_brk_name(const wr_shared_brk *b);

/* Call FN for every breaker (subscriptions first, then named ones) with its
 * state now and how many times it changed into each state. For metrics. */
typedef void (*wr_breakers_visit)(void *ud, const char *name, const char *kind, wr_brk_state state,
                                  const unsigned long transitions[3]);
void wr_breakers_each(wr_breakers *s, wr_breakers_visit fn, void *ud);

#endif
