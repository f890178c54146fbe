/*
 * dlqtool: `warren dlq`, the operator's commands for a subscription's
 * dead-letter queue.
 *
 *   list    one line per message id (id, reason, error class, attempts, copies,
 *           last failure, original routing key, start of the error)
 *   show    every property and header of one message, and its body
 *   replay  send matching messages back to the subscription's queue
 *   purge   delete matching messages
 *
 * Every command reads the whole DLQ with basic.get and manual acks on a
 * connection of its own, at most as many messages as the queue held when it
 * started, and holds them unacked while it works: what it does not take out
 * for good is returned with basic.nack requeue=1 at the end (and by the
 * broker if the process dies), so list and show never change the DLQ.
 * Filters (--id, --reason, --grep, --older-than, --limit) apply client-side.
 *
 * Copies: a crash between a confirmed DLQ copy and its idempotency record
 * can leave several copies of one message (same message_id) in the DLQ. The
 * commands work per message id: list shows one row per id with its copy
 * count, --limit counts ids, replay sends one copy back and, once it is
 * confirmed, removes every copy, purge removes every copy. An id is selected
 * when one of its copies matches the filters; a message without an id is an
 * id of its own.
 *
 * replay, per message: reset the idempotency record in Redis unless its
 * outcome is "ok" (the key is derived as the worker does, from the
 * subscription's idempotency.key, so message_id, header: and json: sources all
 * work), publish a copy (persistent, mandatory, publisher confirms) to the
 * subscription's queue through the default exchange, and ack the DLQ message
 * only once the copy is confirmed; an unconfirmed copy leaves the message in
 * the DLQ and the command exits 1. A confirmed copy gets a "replayed" entry in
 * the event's journal (journal.h: who, from which DLQ, what was done to the
 * record; best effort), which `warren trace` shows.
 *
 * The modules: dlqread.h reads the DLQ and groups its copies, dlqrender.h
 * prints, dlqreplay.h replays; this one reads the options (cliopt.h: each
 * command takes only its own, `warren dlq CMD --help` shows them) and runs
 * the command on each subscription.
 *
 * Exit status: 0 ok, 1 failure (or purge refused), 2 usage error (or a config
 * that does not load, a subscription not in it).
 */
#ifndef WR_DLQTOOL_H
#define WR_DLQTOOL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/*
 * What is in subscription SUB's DLQ now, counted per reason code exactly as
 * `dlq list --group-by reason` counts it (one id per message id, its copies as
 * messages): a new JSON object {reason: {"ids": N, "messages": N}} (caller
 * decrefs), or NULL with ERR. Reads at most MAX messages (0: all), the first
 * ones, and leaves the DLQ as it is; *READ says how many it read, *HELD how
 * many the DLQ held.
 */
json_t *wr_dlqtool_by_reason(const wr_config *cfg, const wr_subscription *sub, uint32_t max,
                             uint32_t *read, uint32_t *held, char *err, size_t cap);

/* Run `warren dlq ARGV...` (ARGV[0] is "dlq", ARGV[1] the command: list,
 * show, replay, purge, or -h/--help). Prints the usage itself. */
int wr_dlqtool_main(int argc, char **argv);

/* The lines `warren --help` shows for the dlq commands. */
extern const char wr_dlqtool_usage[];

#endif
