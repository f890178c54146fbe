/*
 * exec: `warren exec`, one event through the real runtime, no broker.
 *
 * Loads the config, builds the subscription's handler exactly as a worker
 * does (same sandbox, same ctx, same envelope decoding and idempotency key),
 * runs one event read from a JSON file, and reports what would have happened:
 * the outcome, the events the handler would publish (with the ids they would
 * carry), the HTTP calls it made, and the decision (ack, retry in n seconds
 * through which delay queue, or dead-letter with which reason). Nothing is
 * published and Redis is not touched.
 *
 * It is a dry run: by default no ctx.http request leaves the process. Each
 * one is answered by a fake from the event file's "http" list (evfile.h says
 * how they match); a request with no fake fails the handler's call, whatever
 * its raise option says, with a message naming the request and the entry to
 * add, and makes exec exit 1. With live_http the requests are sent for real
 * (libcurl, as in the sidecar) and still listed. The request itself is built
 * by ctx.http's own code (lua_http.h): only the transport differs.
 *
 * ctx.store (with idempotency on) reads the event file's "store" object as
 * the state before the event ("key": "v" or a number for strings, {f: v} for
 * hashes, [m, ...] for sets) plus the handler's own writes; the writes it
 * would commit are reported as "store_writes" ([op, key, args...], keys
 * without store.prefix).
 *
 * The event file is checked first, like the config: unknown keys, wrong
 * types, an attempt out of range are errors as FILE:LINE:COL: message
 * (evfile.h has the format).
 *
 * Two modes serve the busted kit (lua/warren/testing.lua), which runs
 * handlers in-process with Lua fakes but takes everything the config decides
 * from here, so the config is parsed, the envelope checked and the decision
 * taken by one piece of code:
 *   envelope  print, as JSON, the subscription's settings as the sidecar
 *             resolved them ("settings": key source, attempts, timeouts,
 *             store prefix and limits, queues) and, for an event, what the
 *             worker makes of it before any handler runs: its idempotency key
 *             and attempt, or why it is invalid and the decision (DLQ). Exit
 *             0, or 1 for an invalid message.
 *   result    do not run the handler: read how it ended from a JSON file the
 *             kit wrote ({"outcome", "reason", "error", "retry_delay_ms",
 *             "published": [...], "commit": {"result", "error"}}), then
 *             check the envelope and decide exactly as for a run here.
 */
#ifndef WR_EXEC_H
#define WR_EXEC_H

typedef struct {
    const char *config_path;
    const char *subscription;
    const char *event_path;  /* NULL only with envelope: the subscription's settings alone */
    int json_output;         /* print the report as JSON */
    int live_http;           /* send ctx.http requests for real instead of answering from fakes */
    int envelope;            /* stop before the handler (below) */
    const char *result_path; /* do not run the handler: take how it ended from this file */
} wr_exec_opts;

/*
 * Run one event as OPTS say and print the report on stdout (handler logs go
 * to stderr). Returns the exit status: 0 the handler succeeded, 1 it did not
 * (or the event could not be handled: failure, rejection, invalid message; or
 * a ctx.http request had no fake), 2 bad arguments or files (the config, the
 * subscription name, the event file).
 */
int wr_exec_run(const wr_exec_opts *opts);

#endif
