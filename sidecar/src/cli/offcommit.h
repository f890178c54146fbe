/*
 * offcommit: a message's ctx.store commit without Redis, for `warren exec`.
 *
 * The sidecar's commit is the script sidecar/scripts/finish.lua, run by Redis:
 * it alone decides whether a message's buffered writes (storebuf.h) may apply
 * (a write of another type than the key holds, or a counter that is not an
 * integer or would overflow, refuses them all: the message is dead-lettered
 * as store-refused) and whether the values the handler read still hold (if
 * not, a conflict: nothing applied, the message runs again). Here the same
 * script runs in a plain LuaJIT state of its own over an in-memory model of
 * the Redis commands it calls (sidecar/lua/commit_model.lua, also what the
 * busted kit uses), so exec reaches the sidecar's decision with the
 * sidecar's code and words rather than a copy of the checks.
 *
 * The state before the commit is exec's: the event file's "store" object
 * (keys without store.prefix; "key": "text" a string, {f: v} a hash, [m, ...]
 * a set; numbers already turned into text by evfile.h), then its
 * "store_at_commit" object over it (what other messages changed while the
 * handler ran; null deletes a key).
 */
#ifndef WR_OFFCOMMIT_H
#define WR_OFFCOMMIT_H

#include <jansson.h>
#include <stddef.h>

#include "storebuf.h"

typedef enum {
    WR_OFFCOMMIT_APPLIED = 0, /* the writes would apply with the done mark */
    WR_OFFCOMMIT_REFUSED,     /* Redis would refuse them: store-refused, dead-lettered */
    WR_OFFCOMMIT_CONFLICT,    /* a read changed under the handler: the message runs again */
    WR_OFFCOMMIT_FAILED,      /* the script raised (or the model could not run) */
} wr_offcommit_result;

/* "applied", "refused", "conflict", "failed". */
const char *wr_offcommit_name(wr_offcommit_result r);

/*
 * Run the commit script for the writes and guarded reads of BUF (full Redis
 * keys: PREFIX plus ctx.store's key) over SEED with AT_COMMIT applied on top
 * (either may be NULL), at NOW_S (seconds since the epoch). Returns the
 * result; for every result but APPLIED, why (the script's words) in WHY.
 */
wr_offcommit_result wr_offcommit_run(const wr_storebuf *buf, const char *prefix, json_t *seed,
                                     json_t *at_commit, double now_s, char *why, size_t whycap);

#endif
