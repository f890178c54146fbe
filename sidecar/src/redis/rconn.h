/*
 * rconn: one Redis connection, as every part of warren uses it: the workers'
 * idempotency records (idem.c), the readiness probe, `warren dlq` and
 * `warren trace`. One place for what hiredis 0.14 leaves to its caller
 * (docs/architecture.md, "hiredis"): the connect timeout and the command timeout (without which a
 * silent server blocks a command forever, and which a reconnect forgets),
 * TCP keep-alive, AUTH and SELECT from the URL, and the server-side scripts,
 * loaded on every connect.
 *
 * With Redis Sentinel (the URL's sentinels and master_name, config.h), every
 * connect first asks the sentinels in turn where the primary is
 * (SENTINEL get-master-addr-by-name; the one that answered last is asked
 * first), connects there and checks that the server says it is the primary
 * (ROLE): during a failover the answer can be stale, and that is a failed
 * connect like any other. A reply READONLY (the server became a replica
 * under us) is a connection failure too, not a command's error: the
 * connection is closed and the next connect asks the sentinels again. A
 * connection also listens to the sentinel that named the primary
 * (+switch-master): when the sentinels move the primary while the old one
 * still answers (SENTINEL FAILOVER; the old primary takes writes until it is
 * demoted seconds later, and loses them), the connection is closed between
 * two commands (no reply owed) and connects to the new primary, logging
 * "redis: the sentinels moved the primary".
 * Redis Cluster is not supported: a server with cluster_enabled:1 is refused
 * at connect.
 *
 * Commands can be pipelined: wr_rconn_append() queues one without sending it,
 * wr_rconn_flush() sends what is queued, and wr_rconn_read() returns the next
 * reply, in the order the commands were queued (it flushes first). The
 * connection counts the replies it still owes.
 *
 * Errors: a call that fails on the connection (it dropped, timed out, or
 * the server's reply could not be read) returns -1 or NULL with the reason in
 * wr_rconn_error(); the connection is then closed, every owed reply is lost,
 * and wr_rconn_ensure() (or the next append) connects anew. An error reply
 * from the server (WRONGTYPE, NOSCRIPT, OOM) is a reply like any other: the
 * caller reads it. A wr_rconn belongs to one thread.
 */
#ifndef WR_RCONN_H
#define WR_RCONN_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct wr_rconn wr_rconn;

/* A server-side script: its source, and its SHA once loaded (set by rconn). */
typedef struct {
    const char *source;
    char sha[41];
} wr_rscript;

/*
 * Connect to URL (AUTH and SELECT as it says) with TIMEOUT_MS for the connect
 * and for every command, and load the NSCRIPTS SCRIPTS (borrowed: they must
 * outlive the connection; their SHAs are filled in). Returns NULL with the
 * reason in ERR (the URL's password never appears in it).
 */
wr_rconn *wr_rconn_create(const wr_redis_url *url, int64_t timeout_ms, wr_rscript *scripts,
                          int nscripts, char *err, size_t errcap);
void wr_rconn_destroy(wr_rconn *c);

/* Why the last call failed (never holds credentials). */
const char *wr_rconn_error(const wr_rconn *c);

/* Connect again if the connection was closed. Returns 0, or -1. */
int wr_rconn_ensure(wr_rconn *c);

/* 1 while connected. */
int wr_rconn_connected(const wr_rconn *c);

/* Replies owed: commands queued or sent whose reply was not read yet. */
int wr_rconn_owed(const wr_rconn *c);

/* Queue one command (binary-safe arguments) without sending it; connects
 * first when needed (only when no reply is owed). Returns 0, or -1. */
int wr_rconn_append(wr_rconn *c, int argc, const char **argv, const size_t *lens);

/* Queue an already formatted command (redisFormatCommandArgv). Returns 0 or -1. */
int wr_rconn_append_formatted(wr_rconn *c, const char *cmd, size_t len);

/* Format ARGC arguments as one RESP command into *OUT (malloc'd; the caller
 * frees it), for wr_rconn_append_formatted. hiredis's own formatter prints
 * each length with sprintf, which showed in profiles of the batch path.
 * Returns the length, or -1 when out of memory. */
long wr_rconn_format(char **out, int argc, const char **argv, const size_t *lens);

/* Send everything queued, without waiting for replies. Returns 0, or -1. */
int wr_rconn_flush(wr_rconn *c);

/* The next owed reply (the caller frees it with freeReplyObject), waiting
 * for it; NULL when the connection failed or no reply is owed. */
redisReply *wr_rconn_read(wr_rconn *c);

/* One command when no reply is owed: queue, send, read. NULL on failure. */
redisReply *wr_rconn_command(wr_rconn *c, int argc, const char **argv, const size_t *lens);

/* The same with a printf-style format (hiredis's %s and %b). */
redisReply *wr_rconn_commandf(wr_rconn *c, const char *fmt, ...);

/* 1 when R is a READONLY error (the server is a replica). wr_rconn_read never
 * returns one: it fails the connection instead. */
int wr_rconn_readonly(const redisReply *r);

/* 1 when R is the server's NOSCRIPT error (it forgot its scripts: SCRIPT
 * FLUSH, or a failover to a server that never had them). */
int wr_rconn_noscript(const redisReply *r);

/*
 * Read the idempotency record KEY (record.h; the hash form of earlier versions
 * too) into *R, whose strings point into *HOLD (the caller frees it with
 * freeReplyObject, also on failure; NULL when nothing is held). Returns 0
 * (R->state is 0 when there is no record), or -1 with the reason in ERR.
 */
struct wr_record;
int wr_rconn_read_record(wr_rconn *c, const char *key, struct wr_record *r, redisReply **hold,
                         char *err, size_t errcap);

/* Queue SCRIPT LOAD of S (its reply must be read like any other). Returns 0
 * or -1. */
int wr_rconn_append_load(wr_rconn *c, const wr_rscript *s);

#endif
