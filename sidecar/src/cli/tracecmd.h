/*
 * tracecmd: `warren trace -c FILE ID [--subscription NAME] [--json]`, the
 * journey of one event in one command.
 *
 * For each subscription (or the one named) it reads, in one Redis round trip,
 * the event's journal (journal.h: <prefix>journal:<subscription>:<ID>) and its
 * idempotency record (<prefix><subscription>:<ID>), and prints the story
 * wr_journal_story builds: the timeline (received, each failed attempt with
 * its error and delay tier, dead-lettered, replayed, duplicate, done), the
 * trace id, the handler versions that saw it, where the message is now (done,
 * processing, waiting in a delay tier until T, in the DLQ, back in its queue)
 * and the command to run next (`warren dlq replay ... --id ...`).
 *
 * ID is the event's idempotency key: the message id, unless the subscription
 * takes its key from a header or a JSON field. Only Redis is read; the DLQ is
 * not browsed (the story names the `warren dlq show` command that does).
 *
 * --json prints {"id", "found", "stories": [one per subscription that knows
 * the event]}.
 *
 * Exit status: 0 found, 1 not found (or Redis unreachable), 2 usage error.
 */
#ifndef WR_TRACECMD_H
#define WR_TRACECMD_H

/* Run `warren trace ARGV...` (ARGV[0] is "trace"). */
int wr_tracecmd_main(int argc, char **argv);

/* The lines `warren --help` shows for trace. */
extern const char wr_tracecmd_usage[];

#endif
