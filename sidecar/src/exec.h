/*
 * exec: `warren exec`, one event through the real runtime, no broker.
 *
 * Loads the config, builds the subscription's handler exactly as a worker
 * does (same sandbox, same ctx, same envelope decoding and idempotency key),
 * runs one event read from a JSON file, and reports what would have happened:
 * the outcome, the events the handler would publish (with the ids they would
 * carry), and the decision (ack, retry in n seconds through which delay
 * queue, or dead-letter with which reason). Nothing is published and Redis
 * is not touched; ctx.http calls are real (point them at a test service).
 * ctx.store (with idempotency on) reads the event file's "store" object as
 * the state before the event ("key": "v" or a number for strings, {f: v} for
 * hashes, [m, ...] for sets) plus the handler's own writes; the writes it
 * would commit are reported as "store_writes" ([op, key, args...], keys
 * without store.prefix).
 *
 * The event file:
 *   { "id": "evt-1", "type": "order.created", "routing_key": "order.created",
 *     "exchange": "shop.events", "content_type": "application/json",
 *     "headers": { "x-tenant": "acme" }, "attempt": 1,
 *     "data": { ... }            -- or "body": "raw text"
 *     "store": { "stock:A": 5 }  -- optional: ctx.store's state before the event }
 */
#ifndef WR_EXEC_H
#define WR_EXEC_H

/*
 * Returns the exit status: 0 the handler succeeded, 1 it did not (or the
 * event could not be handled: failure, rejection, invalid message), 2 bad
 * arguments or files (the config, the subscription name, the event file).
 */
int wr_exec_run(const char *config_path, const char *subscription, const char *event_path,
                int json_output);

#endif
