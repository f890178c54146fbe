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
 *
 * The event file:
 *   { "id": "evt-1", "type": "order.created", "routing_key": "order.created",
 *     "exchange": "shop.events", "content_type": "application/json",
 *     "headers": { "x-tenant": "acme" }, "attempt": 1,
 *     "data": { ... }            -- or "body": "raw text" }
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
