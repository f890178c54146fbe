/*
 * dlqread: reading a subscription's dead-letter queue, for `warren dlq`
 * (dlqtool.h) and `warren status`.
 *
 * The DLQ is read on a plain rabbitmq-c connection of its own (one AMQP
 * connect: wr_broker_connect, node by node of a cluster; heartbeats off: the
 * command may sleep between replays) with basic.get and manual acks, at most
 * as many messages as the queue held when it was opened. Every message stays
 * held (unacked) until the caller acks it (replayed or purged) or returns it,
 * and wr_dlqread_close gives back (basic.nack requeue=1) whatever is still
 * held, as the broker does if the process dies: reading never changes the DLQ.
 *
 * Copies: a crash between a confirmed DLQ copy and its idempotency record
 * makes the worker dead-letter the message again when it is redelivered: the
 * DLQ then holds several copies with the same message_id. The reader groups
 * them by message id (wr_dlqread_group); a message without an id is a group
 * of its own. Filters (wr_dlqread_filter) apply client-side: a group is
 * selected when one of its copies matches.
 *
 * Ownership: the reader owns its messages and groups; pointers into them
 * stay valid until wr_dlqread_close.
 */
#ifndef WR_DLQREAD_H
#define WR_DLQREAD_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "amqp_compat.h"
#include "config.h"
#include "outcome.h"

#define WR_DLQREAD_CHANNEL 1         /* the reader's AMQP channel */
#define WR_DLQREAD_NONE ((size_t)-1) /* no message (an index in wr_dlqreader.msgs) */
#define WR_DLQREAD_HANDLE_CAP 24     /* the buffer of wr_dlqread_handle */

/* One DLQ message taken with basic.get, still unacked. */
typedef struct {
    uint64_t tag;
    amqp_bytes_t exchange, routing_key; /* of the get-ok (malloc'd) */
    amqp_message_t msg;                 /* all zero once freed (a copy not selected) */
    int done;                           /* acked (replayed or purged) or nacked already */
    size_t next;                        /* the next copy of the same message id (an index in
                                           wr_dlqreader.msgs), or WR_DLQREAD_NONE */
} wr_dlqread_msg;

/* The copies of one message id in the DLQ. */
typedef struct {
    size_t first, last; /* its copies in DLQ order, linked through wr_dlqread_msg.next */
    size_t copies;
    size_t rep; /* the copy shown and replayed: the first one that matched the
                   filters, or WR_DLQREAD_NONE (the group is not selected) */
} wr_dlqread_group;

/* A DLQ being read. Zero it before wr_dlqread_open. */
typedef struct {
    amqp_connection_state_t conn;
    int open;
    const char *queue;
    uint32_t depth; /* messages the DLQ held when opened (lower it to read fewer) */
    wr_dlqread_msg *msgs;
    size_t n, cap;
    size_t scanned; /* messages read */
    wr_dlqread_group *groups;
    size_t ngroups, gcap;
    json_t *ids; /* message id -> index in groups (a jansson object as a hash map) */
    char err[768];
} wr_dlqreader;

/* Which messages a command selects (NULL / -1: any). */
typedef struct {
    const char *id;        /* --id: its handle (wr_dlqread_handle) */
    const char *reason;    /* --reason */
    wr_reason reason_code; /* --reason, checked against outcome.h's table */
    const char *grep;      /* --grep: in the id, the error(s) or the body */
    int64_t older_ms;      /* --older-than: last failure at least this long ago; -1: any */
} wr_dlqread_filter;

/* Connect to CFG's broker (the first node that takes the connection) and
 * open QUEUE passively. Returns 0, or -1 with R->err. */
int wr_dlqread_open(wr_dlqreader *r, const wr_config *cfg, const char *queue);

/*
 * Read the whole DLQ (at most R->depth messages) and group the messages by
 * id. A group is selected when one of its copies matches F, at most LIMIT
 * groups (0: no limit), in the order their first matching copy came. Stores
 * the selected groups' indexes in R->groups in *SEL (malloc'd, caller frees)
 * and their count in *NSEL. Only each selected group's first matching copy
 * keeps its properties and body: the rest are freed as they come, so a long
 * DLQ costs its delivery tags, not its bodies. Returns 0, or -1 with R->err.
 */
int wr_dlqread_scan(wr_dlqreader *r, const wr_dlqread_filter *f, long limit, size_t **sel,
                    size_t *nsel);

/* Take M out of the DLQ for good (basic.ack). 0, or -1. */
int wr_dlqread_ack(wr_dlqreader *r, wr_dlqread_msg *m);

/* Give M back to the DLQ now (basic.nack requeue=1). 0, or -1. */
int wr_dlqread_return(wr_dlqreader *r, wr_dlqread_msg *m);

/* Give back every message still held, close the connection, free R's memory. */
void wr_dlqread_close(wr_dlqreader *r);

/* M's headers table, or NULL. */
const amqp_table_t *wr_dlqread_headers(const amqp_basic_properties_t *p);

/* Property V of P when FLAG says it is set, else empty. */
amqp_bytes_t wr_dlqread_prop(const amqp_basic_properties_t *p, amqp_flags_t flag, amqp_bytes_t v);

/* M's message id (empty when it has none). */
amqp_bytes_t wr_dlqread_id(const wr_dlqread_msg *m);

/*
 * The handle of message M, what the commands print and --id / show accept:
 * its message id, or for a message without one "body:" and the first 12 hex
 * digits of the SHA-256 of its body (stable: a DLQ copy's body never
 * changes), so every DLQ entry can be named. BUF holds the latter.
 */
amqp_bytes_t wr_dlqread_handle(const wr_dlqread_msg *m, char buf[WR_DLQREAD_HANDLE_CAP]);

/* The string header NAME of M (empty when absent or not a string). */
amqp_bytes_t wr_dlqread_header(const wr_dlqread_msg *m, const char *name);

/* 1 when B holds exactly S. */
int wr_dlqread_bytes_is(amqp_bytes_t b, const char *s);

#endif
