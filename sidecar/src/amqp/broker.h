/*
 * broker: one AMQP connection with one channel, as a worker uses it.
 *
 * A worker thread owns one wr_broker (rabbitmq-c connections are not
 * thread-safe) and does everything on its single channel: declare topology,
 * consume with manual acks, publish with confirms, ack and nack. All incoming
 * frames go through one pump (wr_broker_poll), which files deliveries into
 * an inbox, feeds basic.ack/nack/return into the current confirm batch, and
 * turns broker notifications (consumer cancelled, connection blocked, channel
 * or connection closed) into state the worker can read. Heartbeats are sent
 * and checked by rabbitmq-c inside the pump, so the worker calls into this
 * module at least every few hundred milliseconds when idle.
 *
 * Errors are mapped once, here: every function returns WR_BROKER_OK, or
 * WR_BROKER_DOWN when the connection (or its only channel) is unusable and
 * the worker must destroy it and connect anew. The reason is in
 * wr_broker_error(). There is no partial recovery: a new connection
 * re-declares everything and the broker redelivers whatever was unacked.
 */
#ifndef WR_BROKER_H
#define WR_BROKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "amqp_compat.h"
#include "config.h"
#include "confirm.h"
#include "topology.h"

typedef struct wr_broker wr_broker;

enum {
    WR_BROKER_OK = 0,
    WR_BROKER_DOWN = -1,     /* rebuild the connection */
    WR_BROKER_TIMEOUT = -2,  /* nothing arrived in time; the connection is fine */
    WR_BROKER_CONFLICT = -3, /* a declaration conflicts with what exists: see error;
                                the connection must be rebuilt too */
};

/*
 * Connect, log in (advertising consumer_cancel_notify and connection.blocked),
 * open channel 1 and put it in confirm mode. NAME is shown in the broker's
 * connection list. Returns NULL with a reason in ERR on failure (the URL's
 * password never appears in it).
 */
wr_broker *wr_broker_create(const wr_amqp_url *url, int heartbeat_s, int64_t connect_timeout_ms,
                            const char *name, char *err, size_t errcap);
/*
 * Open CONN's socket to URL within TIMEOUT_MS: plain TCP for amqp://; for
 * amqps:// TLS 1.2 or later, the broker's certificate verified against
 * url->tls->ca (else the system's CAs) and checked to name the URL's host,
 * and the client certificate and key of url->tls presented when set. Used
 * by every AMQP connection warren makes (workers, probes, `warren dlq`).
 * Returns 0, or -1 with a reason in ERR that says which step failed (a name
 * mismatch names the host and the certificate's names; an untrusted
 * certificate gives OpenSSL's reason). Never holds credentials.
 */
int wr_broker_open_socket(amqp_connection_state_t conn, const wr_amqp_url *url, int64_t timeout_ms,
                          char *err, size_t errcap);

/*
 * Open CONN to URL (wr_broker_open_socket) and log in within TIMEOUT_MS,
 * advertising consumer_cancel_notify, connection.blocked and publisher
 * confirms, named NAME in the broker's connection list. Every AMQP connection
 * warren makes logs in through here. Returns 0, or -1 with the reason in ERR
 * (the broker, vhost and user named; never the password).
 */
int wr_broker_connect(amqp_connection_state_t conn, const wr_amqp_url *url, int heartbeat_s,
                      int64_t timeout_ms, const char *name, char *err, size_t errcap);

/*
 * After a failed call on a TLS connection: OpenSSL's reason on this thread as
 * ": reason" (such as ": tlsv1 alert unknown ca", the broker refusing our
 * client certificate), or "" when there is none. Clears OpenSSL's queue.
 */
void wr_broker_tls_reason(char *out, size_t cap);

/* Close the connection (best effort) and free everything, inbox included. */
void wr_broker_destroy(wr_broker *b);

/* Last error text (for logs); never holds credentials. */
const char *wr_broker_error(const wr_broker *b);

/* Declare every exchange, queue and binding of T. The main queue is declared
 * only when a passive declaration (on a throwaway channel) says it is missing:
 * one that exists is consumed as it is, whatever its type or arguments. */
int wr_broker_declare(wr_broker *b, const wr_topology *t);

/* Set the prefetch (basic.qos) and start consuming QUEUE with manual acks. */
int wr_broker_consume(wr_broker *b, const char *queue, int prefetch);
/* The same for each of the N QUEUES (a topology's consume[]: the partitions
 * of a partitioned subscription), one consumer each on the one channel, each
 * with PREFETCH unacknowledged messages at most: the first NOW of them at
 * once, the others by the first wr_broker_take() WR_TOPO_STANDBY_MS later
 * (topology.h: wr_topology_prefer). Deliveries of all of them come through
 * the one inbox, in the order the broker sent them. */
#define WR_BROKER_MAX_CONSUMERS WR_MAX_PARTITIONS
int wr_broker_consume_all(wr_broker *b, const char *const *queues, int n, int now, int prefetch);
/* Stop the consumers (basic.cancel). Every delivery the broker sent before it
 * confirmed the cancel is in the inbox when this returns; the caller returns
 * them with wr_broker_nack. */
int wr_broker_cancel(wr_broker *b);
/* 1 while our consumer is active (not cancelled by us or the broker). */
int wr_broker_consuming(const wr_broker *b);
/* 1 while the broker has blocked publishing (memory or disk alarm). */
int wr_broker_blocked(const wr_broker *b);
/* Also store that state in FLAG whenever it changes, even mid-batch (for metrics
 * and /readyz, read by other threads); FLAG goes back to 0 when B is destroyed. */
void wr_broker_mirror_blocked(wr_broker *b, atomic_int *flag);

/*
 * Wait up to TIMEOUT_MS for deliveries; then take every delivery that is
 * already buffered, up to MAX, without waiting further. Stores up to MAX
 * pointers in OUT and the count in *N. The envelopes belong to the caller:
 * release each with wr_broker_release(). Returns OK (with *N possibly 0 on
 * timeout) or DOWN.
 */
int wr_broker_take(wr_broker *b, amqp_envelope_t **out, int max, int timeout_ms, int *n);
void wr_broker_release(amqp_envelope_t *e);

/*
 * Publishing with confirms: wr_broker_publish() sends one publish and stores
 * its sequence number on the channel in *SEQ (1, 2, 3, ...; the broker's
 * confirm tags). wr_broker_confirm_wait() pumps frames until every publish
 * numbered below UPTO is answered or TIMEOUT_MS passes (deliveries that arrive
 * meanwhile go to the inbox); wr_broker_confirm_state() then says whether the
 * broker took a publish (acked and not returned). The exchange, routing key
 * and properties passed to publish must stay valid until the caller releases
 * the publish with wr_broker_confirm_release() (they identify a basic.return):
 * a worker keeps two batches in flight, and releases a batch's publishes once
 * the batch is done. A publish is persistent when the caller sets
 * delivery_mode 2.
 */
uint64_t wr_broker_next_seq(const wr_broker *b); /* the number the next publish gets */
int wr_broker_publish(wr_broker *b, amqp_bytes_t exchange, amqp_bytes_t routing_key, int mandatory,
                      const amqp_basic_properties_t *props, amqp_bytes_t body, uint64_t *seq);
int wr_broker_confirm_wait(wr_broker *b, uint64_t upto, int timeout_ms);
wr_pub_state wr_broker_confirm_state(const wr_broker *b, uint64_t seq);
void wr_broker_confirm_release(wr_broker *b, uint64_t upto);

/* Acknowledge, or return to the queue (REQUEUE=1) / drop (REQUEUE=0). */
int wr_broker_ack(wr_broker *b, uint64_t delivery_tag, int multiple);
int wr_broker_nack(wr_broker *b, uint64_t delivery_tag, int multiple, int requeue);

/* Read frames for up to TIMEOUT_MS (0: only what is already there), which also
 * services heartbeats. Returns OK, TIMEOUT or DOWN. */
int wr_broker_poll(wr_broker *b, int timeout_ms);

/* Passive declare: the number of ready messages and consumers of QUEUE. */
int wr_broker_queue_depth(wr_broker *b, const char *queue, uint32_t *messages, uint32_t *consumers);

#endif
