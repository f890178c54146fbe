/*
 * statuscmd: `warren status -c FILE [--url URL] [--json] [--no-dlq | --dlq-max N]`,
 * what every subscription of a running sidecar is doing now.
 *
 * Fetches the sidecar's /status (status.h: wr_status_fetch), adds what is in
 * each subscription's DLQ now by reason, read from the broker as `dlq list
 * --group-by reason` reads it (dlqtool.h: wr_dlqtool_by_reason; with -c,
 * unless --no-dlq; the first N messages of each, default 10000), and prints
 * it (wr_status_render) or the JSON (--json). The usage lines are
 * wr_status_usage (status.h).
 *
 * Exit status: 0 ok, 1 the sidecar did not answer, 2 usage error (or a config
 * without a fixed http.listen port and no --url).
 */
#ifndef WR_STATUSCMD_H
#define WR_STATUSCMD_H

/* Run `warren status ARGV...` (ARGV[0] is "status"). */
int wr_statuscmd_main(int argc, char **argv);

#endif
