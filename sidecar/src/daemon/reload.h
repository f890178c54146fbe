/*
 * reload: hot reload of handlers and of the policy parts of the config.
 *
 * Every subscription has a wr_live: the parts that change while warren runs
 * (the handler's source and version, the handler timeout, the retry policy),
 * behind a mutex, with a generation number. Workers compare the generation
 * between batches (one atomic load) and, when it moved, take a snapshot and
 * build their own Lua state from it: in-flight messages finish on the version
 * they started with, and no message meets a half-loaded handler.
 *
 * A reload (a file change seen by watch.c, or SIGHUP) is build, validate,
 * swap: the config file is loaded anew (a config with errors is refused
 * whole, with every error logged); keys that need a restart are compared with
 * the running config and, when they differ, logged as such and left alone;
 * each changed handler is compiled and its init run once, in a throwaway
 * state, before anything is published. A handler that fails is refused with
 * its file, line and error, and the old version keeps running. Results are
 * counted (reloads applied, refused).
 *
 * A subscription's contracts (contracts.h) reload the same way: a change to
 * the contracts file or to an upcaster loads the file anew (schemas compiled,
 * every upcaster compiled and run on the file's examples in a throwaway state
 * of the handler); a file with problems is refused with each problem as
 * FILE:LINE:COL and the running contracts stay. Workers take the new
 * contracts with the next generation, as they take a new handler.
 *
 * A handler's version is a content hash of its file and of the Lua modules
 * it requires (luadeps.h), so the same files have the same version in every
 * process, in logs and in x-warren-handler-version headers, and an edit
 * changes the versions of the handlers it concerns only. The reload log names
 * the files that changed.
 */
#ifndef WR_RELOAD_H
#define WR_RELOAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define WR_LIVE_MAX_DELAYS 32

/* The live parts of one subscription. */
typedef struct {
    pthread_mutex_t lock;
    atomic_uint gen; /* bumped when anything below changes */
    char *source;    /* the handler's source (guarded by lock) */
    size_t source_len;
    char version[17];
    char *files; /* what the version covers (reload.c's manifest: one
                    "path hash" line per file), for the reload log */
    int64_t timeout_ms;
    wr_retry_policy retry; /* delays_ms points into delays */
    int64_t delays[WR_LIVE_MAX_DELAYS];
    struct wr_contracts *contracts; /* the subscription's contracts (contracts.h), NULL
                                       when none (guarded by lock; replaced on reload) */
} wr_live;

/* A worker's copy of a wr_live. */
typedef struct {
    unsigned gen;
    char *source; /* malloc'd */
    size_t source_len;
    char version[17];
    int64_t timeout_ms;
    wr_retry_policy retry;
    int64_t delays[WR_LIVE_MAX_DELAYS];
    struct wr_contracts *contracts; /* a reference (the snapshot's owner drops it), or NULL */
} wr_live_snapshot;

/* Copy LIVE into OUT (under its lock). Returns 0, or -1 when out of memory. */
int wr_live_snapshot_take(wr_live *live, wr_live_snapshot *out);
void wr_live_snapshot_free(wr_live_snapshot *s);

/* Copy a retry policy into storage that DST owns (DELAYS, WR_LIVE_MAX_DELAYS long). */
void wr_retry_policy_copy(wr_retry_policy *dst, int64_t *delays, const wr_retry_policy *src);

/* The version of the handler at PATH (its content and its sibling modules),
 * as every log line and header shows it. Returns 0, or -1 when unreadable. */
int wr_handler_version(const char *path, char out[17]);

typedef struct wr_reloader wr_reloader;

/*
 * Set up the live state of CFG's subscriptions (reading each handler once)
 * and the file watches. CFG is the running config: it must outlive the
 * reloader. Returns NULL with ERR.
 */
wr_reloader *wr_reloader_create(const wr_config *cfg, char *err, size_t errcap);
void wr_reloader_destroy(wr_reloader *r);

/* The live state of subscription I (index in the running config). */
wr_live *wr_reloader_live(wr_reloader *r, int i);

/* Descriptor to poll for file events (-1 when watching is not available). */
int wr_reloader_fd(const wr_reloader *r);

/* Handle file events (poll said readable, or the timer fired). *WAIT_MS: when
 * to call again at the latest. Reloads when files settled after a change. */
void wr_reloader_tick(wr_reloader *r, int *wait_ms);

/* Reload now (SIGHUP). WHY names the trigger in the log. */
void wr_reloader_reload(wr_reloader *r, const char *why);

/* The handler version LIVE runs now (under its lock). */
void wr_live_version(wr_live *live, char out[17]);

/* A reference to the contracts LIVE runs now (drop it with wr_contracts_free),
 * or NULL when its subscription has none. */
struct wr_contracts *wr_live_contracts(wr_live *live);

/* Reloads applied and refused since start. */
void wr_reloader_counts(const wr_reloader *r, long *applied, long *refused);

#endif
