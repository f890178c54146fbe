/*
 * config: the sidecar's YAML configuration, loaded into plain data.
 *
 * wr_config_load() reads one YAML file (libyaml's document API, so every value
 * keeps its line and column), expands ${VAR} and ${VAR:-default} from the
 * environment in every scalar (envexpand.h), and walks the result against a
 * declarative schema (the tables in config_schema.c, which also feed `warren
 * config-reference` and docs/configuration.md's table; the other files of the
 * module are listed in config_internal.h). Unknown keys, wrong types, missing required
 * fields, bad durations and unparsable URLs are all reported, not just the
 * first one, each as one line:
 *
 *     FILE:LINE:COL: message
 *
 * LINE and COL are 1-based and point at the offending key or value. Errors
 * never echo a password: URLs are shown with their credentials masked.
 *
 * The loaded wr_config is plain data owned by the caller; free it with
 * wr_config_free(). Nothing in here touches the network: handler files are
 * resolved to absolute paths and checked to exist, compiling them is the Lua
 * runtime's job (see lua_rt.h).
 *
 * Types defined elsewhere and included here: the URL types (url.h), the
 * retry and breaker policies (retry.h, breaker.h), the log levels (log.h).
 */
#ifndef WR_CONFIG_H
#define WR_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "log.h"
#include "retry.h"
#include "url.h"

#define WR_CONFIG_MAX_ERRORS 64
#define WR_MAX_PARTITIONS 64 /* most partitions a subscription may have */

/* One problem found while loading, already formatted as "FILE:LINE:COL: message". */
typedef struct {
    char *lines[WR_CONFIG_MAX_ERRORS]; /* malloc'd strings */
    int count;                         /* number of lines used */
    int dropped;                       /* errors found beyond WR_CONFIG_MAX_ERRORS */
} wr_config_errors;

/* One binding of the subscription's queue to an exchange. */
typedef struct {
    char *exchange;      /* required, non-empty (the default exchange cannot be bound) */
    char *type;          /* "direct", "topic", "fanout" or "headers"; default "topic" */
    int declare;         /* declare the exchange (durable) before binding; default 1 */
    char **routing_keys; /* NULL-terminated; at least one ("#" for everything) */
    int routing_key_count;
} wr_binding;

typedef enum {
    WR_KEY_MESSAGE_ID = 0, /* the AMQP message_id (default) */
    WR_KEY_HEADER,         /* a header, named by key_arg */
    WR_KEY_JSON,           /* a field of the JSON body, dot path in key_arg ("order.id") */
} wr_key_source;

/* How a subscription deduplicates messages in Redis. */
typedef struct {
    int enabled;          /* idempotency.enabled, default 1 */
    wr_key_source source; /* from idempotency.key: "message_id", "header:NAME", "json:PATH" */
    char *key_arg;        /* header name or JSON path; NULL for message_id */
    char *prefix;         /* Redis key prefix, default "warren:idem:"; the full key is
                             <prefix><subscription>:<key> */
    int64_t ttl_ms;       /* how long a done record is kept; default 7d; 0 = "none":
                             kept forever */
    int64_t lease_ms;     /* how long a claim holds before another worker may take over;
                             default 30s, at least 1s */
    int missing_key_hash; /* missing_key: "dlq" (0, default) or "body-hash" (1) */
} wr_idem_policy;

/*
 * Per-key order (ordering.h): the messages of a subscription that share an
 * ordering key are handled in delivery order by a worker; a message whose
 * key's earlier message did not finish (it went back to the queue, or to the
 * wait queue) follows it there instead of running.
 */
typedef struct {
    int enabled;          /* an `ordering` section was given */
    wr_key_source source; /* ordering.key: "header:NAME" or "json:PATH" */
    char *key_arg;        /* header name or JSON path */
    int dlq_all;          /* ordering.on_dlq: "release" (0, default): a dead-lettered head
                             lets the messages parked behind it run; "dlq_all" (1): they
                             are dead-lettered too */
} wr_ordering_policy;

#define WR_MAX_GATES 64 /* subscriptions[].gates: most items */

/*
 * A causal gate (gates.h): a message of `type` waits, parked, until a message
 * of type `after` with the same key is done (handled ok) in this subscription.
 */
typedef struct {
    char *type;           /* required: the gated type */
    char *after;          /* required: the type it waits for; not `type` */
    wr_key_source source; /* key: "header:NAME" or "json:PATH", for both types */
    char *key_arg;
    int64_t timeout_ms; /* how long it may wait; default 10m */
    int run_on_timeout; /* on_timeout: "dlq" (0, default): the DLQ, reason gate-timeout;
                           "run" (1): back to the queue, run without its predecessor */
    int line, col;      /* where it starts, for later messages */
} wr_gate;
/* A subscription's event contracts (contracts.h). */
typedef struct {
    char *file;            /* contracts.file, absolute; NULL: no contracts */
    int unknown_types_dlq; /* contracts.unknown_types: pass (0, default) or dlq (1) */
    char *version_header;  /* contracts.version_header: header (or JSON field) with the
                              event's version; default "version" */
    int default_version;   /* contracts.default_version: of an event without one; 0
                              (default): its type's current version */
    int validate_outgoing; /* contracts.validate_outgoing: check published events too */
} wr_contract_policy;

/* One consumed queue and the handler that processes its messages. */
typedef struct {
    char *name;                  /* required; [A-Za-z0-9_.-]+, unique; labels logs and metrics */
    char *queue;                 /* required; the durable queue consumed */
    char *dlq;                   /* default "<queue>.dlq" */
    char *handler;               /* required; absolute path after resolution against the
                                    config file's directory; the file must exist */
    int prefetch;                /* 1..65535; default from defaults.prefetch */
    int concurrency;             /* 1..64 worker threads; default from defaults.concurrency */
    int batch_size;              /* 1..prefetch; default min(defaults.batch_size, prefetch) */
    int64_t handler_timeout_ms;  /* default from defaults.handler_timeout */
    int64_t max_body_size;       /* bytes; larger messages are dead-lettered as body-too-large;
                                    default from defaults.max_body_size */
    int64_t max_publish_size;    /* bytes a handler may publish per message (bodies, names,
                                    headers); default from defaults.max_publish_size */
    wr_retry_policy retry;       /* defaults.retry merged with subscriptions[].retry, key by key */
    wr_idem_policy idem;         /* defaults.idempotency merged with subscriptions[].idempotency */
    wr_breaker_policy breaker;   /* defaults.breaker merged with subscriptions[].breaker */
    wr_ordering_policy ordering; /* subscriptions[].ordering; off when absent */
    int partitions;              /* subscriptions[].partitions: 0 none, else the number of
                                    partition queues (topology.h; needs ordering.key) */
    wr_gate *gates;              /* subscriptions[].gates; may be empty */
    int gate_count;
    int queue_type;               /* queue_type: 0 classic, 1 quorum: the consumed queue's type when
                                     warren declares it (one that exists is taken as it is) */
    int dlq_type;                 /* dlq_type: 0 auto, 1 classic, 2 quorum (as written) */
    int dlq_quorum;               /* resolved: auto is quorum when amqp.urls names other nodes */
    int delay_queue_type;         /* delay_queue_type: 0 classic, 1 quorum: retry tiers and wait */
    wr_contract_policy contracts; /* contracts: event contracts, file NULL when none */
    wr_binding *bindings;         /* may be empty: then the queue is consumed as it is */
    int binding_count;
    char **trace_fields; /* JSON paths ("order_id", "customer.email") whose values the
                            journal records, for `warren trace --grep`; may be empty */
    int trace_field_count;
    int line, col; /* where the subscription starts, for later messages */
} wr_subscription;

typedef struct {
    char *path; /* the config file as given */
    char *dir;  /* its directory, absolute; handler paths are relative to it */

    wr_amqp_url amqp;                /* amqp.url, required */
    int64_t amqp_heartbeat_ms;       /* amqp.heartbeat, default 10s, 0 disables, max 300s */
    int64_t amqp_connect_timeout_ms; /* amqp.connect_timeout, default 5s */
    int64_t amqp_reconnect_max_ms;   /* amqp.reconnect_max: cap of the reconnect backoff,
                                        default 5s, 100ms..10m */
    wr_amqp_tls amqp_tls;            /* amqp.tls; amqp.tls points here once loaded */
    char **amqp_url_texts;           /* amqp.urls as written: the cluster's other nodes */
    int amqp_url_text_count;
    wr_amqp_url *amqp_alts; /* amqp.urls parsed, amqp_alt_count of them (tls set
                               like amqp's); tried in turn after amqp.url */
    int amqp_alt_count;

    wr_redis_url redis;             /* redis.url, required */
    int64_t redis_timeout_ms;       /* redis.timeout, default 2s */
    int64_t redis_reconnect_max_ms; /* redis.reconnect_max: cap of the backoff while Redis
                                       is away, default 5s, 100ms..10m */
    char **redis_sentinels;         /* redis.sentinels: "HOST:PORT" list, NULL-terminated;
                                       NULL: no Sentinel (redis.url names the server) */
    int redis_sentinel_count;
    char *redis_master_name;               /* redis.master_name: the primary's name at the
                                              sentinels; required with redis.sentinels */
    int redis_min_replicas;                /* redis.min_replicas_acked: replicas that must hold a
                                              batch's commit before its acks (WAIT), default 0 */
    int64_t redis_min_replicas_timeout_ms; /* redis.min_replicas_timeout: WAIT's timeout,
                                              default 1s, below redis.timeout */

    wr_log_level log_level; /* log.level: debug|info|warn|error, default info */
    int log_bodies;         /* log.bodies: outcome lines carry the body's first
                               2 KiB; default 0 (bodies may hold personal data) */

    /* defaults: applied to every subscription that does not set its own */
    int default_prefetch;               /* defaults.prefetch, default 50 */
    int default_concurrency;            /* defaults.concurrency, default 1 */
    int default_batch_size;             /* defaults.batch_size, default 50 */
    int64_t default_handler_timeout_ms; /* defaults.handler_timeout, default 5s */
    int64_t default_max_body_size;      /* defaults.max_body_size, bytes, default 512 KiB */
    int64_t default_max_publish_size;   /* defaults.max_publish_size, bytes, default 16 MiB */

    int64_t shutdown_grace_ms; /* shutdown.grace, default 25s (fits Kubernetes' 30s) */

    /* store: ctx.store (lua_store.c), committed with the idempotency record */
    char *store_prefix;            /* store.prefix, default "warren:store:" */
    int store_max_writes;          /* store.max_writes, 1..10000, default 256 per message */
    int64_t store_max_value_bytes; /* store.max_value_bytes, default 64 KiB, max 16 MiB */

    char *http_listen;     /* http.listen: "HOST:PORT" for /metrics, /healthz,
                              /readyz; default "0.0.0.0:9464"; "off" disables */
    int64_t queue_poll_ms; /* http.queue_poll: queue depth poll period, default 15s */

    /* journal: the short per-event history `warren trace` reads (journal.h) */
    int journal_enabled;     /* journal.enabled, default 1 */
    char *signing_key;       /* security.signing_key, NULL: derived (sign.h) */
    int64_t journal_ttl_ms;  /* journal.ttl, default 7d, 1s..365d */
    int journal_max_entries; /* journal.max_entries, default 50, 5..1000 */

    /* breakers: named breakers handlers call through (ctx.breaker(name)), each
     * defaults.breaker merged with breakers.<name>; names [A-Za-z0-9_.-]+ */
    char **breaker_names;
    wr_breaker_policy *breakers;
    int breaker_count;

    wr_subscription *subs; /* at least one */
    int sub_count;
} wr_config;

/* The I-th broker address to try (amqp.url, then amqp.urls, round and round). */
const wr_amqp_url *wr_config_amqp_url(const wr_config *cfg, int i);

/*
 * Load and validate PATH. On success returns a new wr_config (free with
 * wr_config_free) and leaves ERRS empty. On failure returns NULL and fills
 * ERRS with every problem found (free the lines with wr_config_errors_free).
 * A file that cannot be opened is reported as "PATH: cannot open: <strerror>".
 */
wr_config *wr_config_load(const char *path, wr_config_errors *errs);

/*
 * The same for a configuration already in memory: TEXT (LEN bytes, NUL bytes
 * allowed, no terminator needed) as if read from PATH, which names the file
 * in messages and whose directory handler paths are relative to.
 *
 * Hostile input is bounded, each limit reported as FILE:LINE:COL: at most
 * 1 MiB of text, YAML collections nested at most 32 deep, a value at most
 * 64 KiB after ${} expansion, ${VAR:-default} nested at most 8 deep, at most
 * 100000 values visited (YAML aliases count once per use), at most 1000
 * subscriptions and 1000 named breakers, no NUL byte in a key or value.
 * Messages quote a value only when it is at most 8 bytes long (a longer one
 * may be a secret under the wrong key): otherwise they give its length.
 */
wr_config *wr_config_parse(const char *path, const char *text, size_t len, wr_config_errors *errs);

void wr_config_free(wr_config *cfg);
void wr_config_errors_free(wr_config_errors *errs);

/*
 * Parse a duration such as "250ms", "5s", "2m", "1h", "7d" or a sum of them
 * ("1m30s"). Returns 0 and stores milliseconds in *MS, or -1 for anything else
 * (no unit, unknown unit, negative, overflow).
 */
int wr_config_parse_duration(const char *text, int64_t *ms);

/*
 * Write the configuration reference (every key, type, default, whether it
 * reloads live, description) as a Markdown table to FP. The README's table is
 * generated from this, so docs and code cannot drift.
 */
#include <stdio.h>
void wr_config_write_reference(FILE *fp);

#endif
