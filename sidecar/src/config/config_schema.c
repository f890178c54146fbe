/*
 * config_schema.c: the schema, one table of fields per section.
 *
 * Each field names the key, its type (config_types.c says what a type
 * means), where the value goes (an offsetof into the section's struct), its
 * default written the way a user would write it, its bounds, whether it is
 * required, whether a change takes effect on reload, and a one-line
 * description. The loader, the merge, the reference and wr_config_free all
 * read these tables, so the accepted keys, the documented keys and what is
 * freed are one list.
 */
#include "config_internal.h"

#include <limits.h>
#include <stddef.h>

/* Where defaults.retry, .idempotency and .breaker go while the file is walked: the
 * loader keeps them (wr_config has no room for them). */
static void *default_retry(loader *ld)
{
    return &ld->def_retry;
}

static void *default_idem(loader *ld)
{
    return &ld->def_idem;
}

static void *default_breaker(loader *ld)
{
    return &ld->def_breaker;
}

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const exchange_types[] = {"direct", "topic", "fanout", "headers", NULL};
static const char *const missing_key_actions[] = {"dlq", "body-hash", NULL};
static const char *const on_dlq_actions[] = {"release", "dlq_all", NULL};
static const char *const gate_timeout_actions[] = {"dlq", "run", NULL};
static const char *const queue_types[] = {"classic", "quorum", NULL};
static const char *const dlq_types[] = {"auto", "classic", "quorum", NULL};
static const char *const unknown_type_actions[] = {"pass", "dlq", NULL};
static const char *const breaker_counts[] = {"dependencies", "all", NULL};

_Static_assert(sizeof(wr_log_level) == sizeof(int), "log level is stored as an int");
_Static_assert(sizeof(wr_key_source) == sizeof(int), "key source is stored as an int");

/*
 * retry, idempotency and breaker: one table each, used both under defaults
 * (where the loader keeps the values: wr_config has no room for them) and in
 * every subscription (breaker also in every named breaker). Every key starts
 * unset and is merged after the walk (see cfg_merge_policies): the subscription's
 * value, else the defaults', else def.
 */
static const field backoff_fields[] = {
    {.name = "initial",
     .type = T_DURATION,
     .offset = offsetof(wr_retry_policy, initial_ms),
     .def = "1s",
     .min = 1,
     .max = DAY_MS,
     .flags = F_MERGE | F_LIVE,
     .desc = "Delay before the first retry."},
    {.name = "multiplier",
     .type = T_NUMBER,
     .offset = offsetof(wr_retry_policy, multiplier),
     .def = "2.0",
     .min = 1,
     .max = 10,
     .flags = F_MERGE | F_LIVE,
     .desc = "Factor each further delay is multiplied by (1.5, 2, ...)."},
    {.name = "max",
     .type = T_DURATION,
     .offset = offsetof(wr_retry_policy, max_ms),
     .def = "5m",
     .min = 1,
     .max = DAY_MS,
     .flags = F_MERGE | F_LIVE,
     .desc = "Longest delay, however many attempts came before; at least `initial`."},
    {.name = "jitter",
     .type = T_NUMBER,
     .offset = offsetof(wr_retry_policy, jitter),
     .def = "0",
     .min = 0,
     .max = 1,
     .flags = F_MERGE | F_LIVE,
     .desc = "Each delay is shortened at random by up to this fraction of itself; 0: never."},
};

const section cfg_backoff_section = {backoff_fields, NFIELDS(backoff_fields), 0, NULL};

static const field retry_fields[] = {
    {.name = "max_attempts",
     .type = T_INT,
     .offset = offsetof(wr_retry_policy, max_attempts),
     .def = "5",
     .min = 1,
     .max = 100,
     .flags = F_MERGE | F_LIVE,
     .desc = "Attempts in all, the first included; a message that fails them all is "
             "dead-lettered."},
    {.name = "delays",
     .type = T_DURLIST,
     .offset = offsetof(wr_retry_policy, delays_ms),
     .count_offset = offsetof(wr_retry_policy, delay_count),
     .def = "[1s, 5s, 30s, 2m]",
     .min = 1,
     .max = DAY_MS,
     .max_count = MAX_DELAYS,
     .flags = F_MERGE | F_LIVE,
     .desc = "Wait before each retry in turn, the last one repeating; not with `backoff`."},
    {.name = "backoff",
     .type = T_SECTION,
     .sub = &cfg_backoff_section,
     .desc = "Exponential backoff instead of `delays`: initial, times multiplier per retry, "
             "up to max."},
};

const section cfg_retry_section = {retry_fields, NFIELDS(retry_fields), 0, cfg_finish_retry};

static const field idem_fields[] = {
    {.name = "enabled",
     .type = T_BOOL,
     .offset = offsetof(wr_idem_policy, enabled),
     .def = "true",
     .flags = F_MERGE,
     .desc = "Skip messages whose key was handled already (tracked in Redis)."},
    {.name = "key",
     .type = T_KEY,
     .offset = offsetof(wr_idem_policy, source),
     .arg_offset = offsetof(wr_idem_policy, key_arg),
     .def = "message_id",
     .flags = F_MERGE,
     .desc = "Where a message's key comes from: its message_id, a header, or a field of the "
             "JSON body (dot path like order.id)."},
    {.name = "prefix",
     .type = T_STRING,
     .offset = offsetof(wr_idem_policy, prefix),
     .def = "warren:idem:",
     .min = 1,
     .max = 100,
     .flags = F_MERGE,
     .desc = "Redis key prefix; the full key is `<prefix><subscription>:<key>`."},
    {.name = "ttl",
     .type = T_DURATION,
     .offset = offsetof(wr_idem_policy, ttl_ms),
     .def = "7d",
     .min = 1000,
     .max = 3650 * DAY_MS,
     .flags = F_MERGE | F_NONE,
     .desc = "How long the record of a handled message is kept; `none`: forever."},
    {.name = "lease",
     .type = T_DURATION,
     .offset = offsetof(wr_idem_policy, lease_ms),
     .def = "30s",
     .min = 1000,
     .max = 3600000,
     .flags = F_MERGE,
     .desc = "How long a worker's claim on a message holds before another may take it over."},
    {.name = "missing_key",
     .type = T_ENUM,
     .offset = offsetof(wr_idem_policy, missing_key_hash),
     .def = "dlq",
     .enum_values = missing_key_actions,
     .flags = F_MERGE,
     .desc = "A message without a key: dead-letter it, or key it by a hash of its body."},
};

const section cfg_idem_section = {idem_fields, NFIELDS(idem_fields), 0, NULL};

static const field breaker_fields[] = {
    {.name = "enabled",
     .type = T_BOOL,
     .offset = offsetof(wr_breaker_policy, enabled),
     .def = "true",
     .flags = F_MERGE,
     .desc = "Use the breaker; false: calls always go ahead and nothing is counted."},
    {.name = "window",
     .type = T_INT,
     .offset = offsetof(wr_breaker_policy, window),
     .def = "20",
     .min = 1,
     .max = 1000,
     .flags = F_MERGE,
     .desc = "Calls in the sliding window the failure ratio is taken over."},
    {.name = "window_time",
     .type = T_DURATION,
     .offset = offsetof(wr_breaker_policy, window_ms),
     .def = "none",
     .min = 1000,
     .max = 3600000,
     .flags = F_MERGE | F_NONE,
     .desc = "A time window (the calls of the last window_time) instead of `window`; `none`: "
             "the count window."},
    {.name = "min_calls",
     .type = T_INT,
     .offset = offsetof(wr_breaker_policy, min_calls),
     .def = "10",
     .min = 1,
     .max = 1000,
     .flags = F_MERGE,
     .desc = "Calls the window must hold before the failure ratio can open the breaker."},
    {.name = "failure_ratio",
     .type = T_NUMBER,
     .offset = offsetof(wr_breaker_policy, failure_ratio),
     .def = "0.5",
     .min = 0,
     .max = 1,
     .flags = F_MERGE | F_GT_MIN,
     .desc = "Failures per call in the window (retryable failures and timeouts) that open it."},
    {.name = "consecutive_failures",
     .type = T_INT,
     .offset = offsetof(wr_breaker_policy, consecutive_failures),
     .def = "0",
     .min = 0,
     .max = 1000,
     .flags = F_MERGE,
     .desc = "Or this many failures in a row open it, whatever the ratio; 0: off."},
    {.name = "open_for",
     .type = T_DURATION,
     .offset = offsetof(wr_breaker_policy, open_ms),
     .def = "30s",
     .min = 100,
     .max = 3600000,
     .flags = F_MERGE,
     .desc = "How long it stays open, failing calls fast, before letting probes through."},
    {.name = "half_open_probes",
     .type = T_INT,
     .offset = offsetof(wr_breaker_policy, half_open_probes),
     .def = "3",
     .min = 1,
     .max = 100,
     .flags = F_MERGE,
     .desc = "Calls let through half-open: that many successes close it, one failure "
             "re-opens it."},
    {.name = "counts",
     .type = T_ENUM,
     .offset = offsetof(wr_breaker_policy, count_all),
     .def = "dependencies",
     .enum_values = breaker_counts,
     .flags = F_MERGE,
     .desc = "What a subscription's breaker counts as a failure: `dependencies` (timeouts, "
             "ctx.retry, ctx.http transport errors and 5xx, a named breaker's failures or "
             "refusals; a handler's own Lua error is not the dependency's fault) or `all` "
             "(every retryable failure)."},
};

const section cfg_breaker_section = {breaker_fields, NFIELDS(breaker_fields),
                                     sizeof(wr_breaker_policy), NULL};

static const field binding_fields[] = {
    {.name = "exchange",
     .type = T_STRING,
     .offset = offsetof(wr_binding, exchange),
     .min = 1,
     .max = AMQP_SHORTSTR,
     .flags = F_REQUIRED,
     .desc = "Exchange the queue is bound to (not the default exchange)."},
    {.name = "type",
     .type = T_ENUM_STR,
     .offset = offsetof(wr_binding, type),
     .def = "topic",
     .enum_values = exchange_types,
     .desc = "Exchange type, used when the exchange is declared."},
    {.name = "declare",
     .type = T_BOOL,
     .offset = offsetof(wr_binding, declare),
     .def = "true",
     .desc = "Declare the exchange (durable) before binding; false if someone else owns it."},
    {.name = "routing_keys",
     .type = T_STRLIST,
     .offset = offsetof(wr_binding, routing_keys),
     .count_offset = offsetof(wr_binding, routing_key_count),
     .min = 1,
     .max = AMQP_SHORTSTR,
     .flags = F_REQUIRED,
     .desc = "Binding keys (one string or a list); `#` matches everything on a topic exchange."},
};

static const section binding_section = {binding_fields, NFIELDS(binding_fields), sizeof(wr_binding),
                                        NULL};

void cfg_finish_ordering(loader *ld, void *base, int index, yaml_node_t *node, const char *path);

static const field ordering_fields[] = {
    {.name = "key",
     .type = T_KEY,
     .offset = offsetof(wr_ordering_policy, source),
     .arg_offset = offsetof(wr_ordering_policy, key_arg),
     .flags = F_REQUIRED,
     .desc = "What a message's ordering key is: a header (`header:NAME`) or a field of the "
             "JSON body (`json:order_id`); messages without one run in no order."},
    {.name = "on_dlq",
     .type = T_ENUM,
     .offset = offsetof(wr_ordering_policy, dlq_all),
     .def = "release",
     .enum_values = on_dlq_actions,
     .desc = "A retried message of a key that ends in the DLQ: let the messages parked behind "
             "it run (`release`), or dead-letter them too (`dlq_all`)."},
};

static const section ordering_section = {ordering_fields, NFIELDS(ordering_fields), 0,
                                         cfg_finish_ordering};

void cfg_finish_gate(loader *ld, void *elems, int index, yaml_node_t *node, const char *path);

static const field gate_fields[] = {
    {.name = "type",
     .type = T_STRING,
     .offset = offsetof(wr_gate, type),
     .min = 1,
     .max = AMQP_SHORTSTR,
     .flags = F_REQUIRED,
     .desc = "The message type that waits (the AMQP type property, else the routing key)."},
    {.name = "after",
     .type = T_STRING,
     .offset = offsetof(wr_gate, after),
     .min = 1,
     .max = AMQP_SHORTSTR,
     .flags = F_REQUIRED,
     .desc = "The type that must be done (handled ok) first for the same key; a binding of "
             "the queue must route it."},
    {.name = "key",
     .type = T_KEY,
     .offset = offsetof(wr_gate, source),
     .arg_offset = offsetof(wr_gate, key_arg),
     .flags = F_REQUIRED,
     .desc = "The key both types share: `header:NAME` or `json:PATH`."},
    {.name = "timeout",
     .type = T_DURATION,
     .offset = offsetof(wr_gate, timeout_ms),
     .def = "10m",
     .min = 1000,
     .max = 7 * DAY_MS,
     .desc = "How long a message may wait; then `on_timeout` says what happens to it."},
    {.name = "on_timeout",
     .type = T_ENUM,
     .offset = offsetof(wr_gate, run_on_timeout),
     .def = "dlq",
     .enum_values = gate_timeout_actions,
     .desc = "A message still waiting after `timeout`: dead-letter it with reason gate-timeout "
             "(`dlq`), or send it back to the queue to run without its predecessor (`run`; "
             "this gate does not park it again)."},
};

static const section gate_section = {gate_fields, NFIELDS(gate_fields), sizeof(wr_gate),
                                     cfg_finish_gate};
static const field contract_fields[] = {
    {.name = "file",
     .type = T_PATH,
     .offset = offsetof(wr_contract_policy, file),
     .min = 1,
     .max = PATH_MAX,
     .flags = F_REQUIRED,
     .desc = "Contracts file (YAML: a JSON Schema per event type and version, upcasters for "
             "older versions), relative to the config file's directory."},
    {.name = "unknown_types",
     .type = T_ENUM,
     .offset = offsetof(wr_contract_policy, unknown_types_dlq),
     .def = "pass",
     .enum_values = unknown_type_actions,
     .desc = "An event whose type has no contract is passed to the handler "
             "(`pass`) or dead-lettered at once as unknown-type (`dlq`)."},
    {.name = "version_header",
     .type = T_STRING,
     .offset = offsetof(wr_contract_policy, version_header),
     .def = "version",
     .min = 1,
     .max = AMQP_SHORTSTR,
     .desc = "The header that carries an event's version (else the body's "
             "top-level field of that name)."},
    {.name = "default_version",
     .type = T_INT,
     .offset = offsetof(wr_contract_policy, default_version),
     .def = "0",
     .min = 0,
     .max = 1000000,
     .desc = "The version of an event that carries none; 0: its type's current version (the "
             "contract's `version`)."},
    {.name = "validate_outgoing",
     .type = T_BOOL,
     .offset = offsetof(wr_contract_policy, validate_outgoing),
     .def = "false",
     .desc = "Check the events the handler publishes against their type's current contract "
             "(type: opts.cloudevent.type, else opts.type, else the routing key): one that "
             "does not match fails the handler's own message (schema-invalid, DLQ) instead "
             "of reaching the next service."},
};

static const section contracts_section = {contract_fields, NFIELDS(contract_fields), 0, NULL};

static const field subscription_fields[] = {
    {.name = "name",
     .type = T_STRING,
     .offset = offsetof(wr_subscription, name),
     .min = 1,
     .max = 128,
     .flags = F_REQUIRED | F_IDENT,
     .desc = "Unique name ([A-Za-z0-9_.-]) labelling this subscription's logs and metrics."},
    {.name = "queue",
     .type = T_STRING,
     .offset = offsetof(wr_subscription, queue),
     .min = 1,
     .max = AMQP_SHORTSTR,
     .flags = F_REQUIRED,
     .desc = "Durable queue to consume; each queue belongs to one subscription."},
    {.name = "dlq",
     .type = T_STRING,
     .offset = offsetof(wr_subscription, dlq),
     .min = 1,
     .max = AMQP_SHORTSTR,
     .def_doc = "`<queue>.dlq`",
     .desc = "Dead-letter queue: failed and undecodable messages, each with its story."},
    {.name = "queue_type",
     .type = T_ENUM,
     .offset = offsetof(wr_subscription, queue_type),
     .def = "classic",
     .enum_values = queue_types,
     .desc = "Type of the consumed queue when warren declares it (it does not exist yet): "
             "classic or quorum (replicated on a cluster). A queue that exists is consumed as "
             "it is."},
    {.name = "dlq_type",
     .type = T_ENUM,
     .offset = offsetof(wr_subscription, dlq_type),
     .def = "auto",
     .enum_values = dlq_types,
     .desc = "Type of the dead-letter queue: quorum, classic, or auto (quorum when `amqp.urls` "
             "names other nodes of a cluster, so dead letters survive a node's loss; classic "
             "otherwise)."},
    {.name = "delay_queue_type",
     .type = T_ENUM,
     .offset = offsetof(wr_subscription, delay_queue_type),
     .def = "classic",
     .enum_values = queue_types,
     .desc = "Type of the retry tiers and the wait queue: classic, or quorum (dead-lettering "
             "back at-least-once, needs RabbitMQ 3.10 or later)."},
    {.name = "handler",
     .type = T_PATH,
     .offset = offsetof(wr_subscription, handler),
     .min = 1,
     .max = PATH_MAX,
     .flags = F_REQUIRED,
     .desc = "Lua handler file, relative to the config file's directory; must exist."},
    {.name = "prefetch",
     .type = T_INT,
     .offset = offsetof(wr_subscription, prefetch),
     .min = 1,
     .max = 65535,
     .flags = F_INHERIT,
     .def_doc = "`defaults.prefetch`",
     .inherit_offset = offsetof(wr_config, default_prefetch),
     .desc = "Unacknowledged messages the broker may send ahead."},
    {.name = "concurrency",
     .type = T_INT,
     .offset = offsetof(wr_subscription, concurrency),
     .min = 1,
     .max = 64,
     .flags = F_INHERIT,
     .def_doc = "`defaults.concurrency`",
     .inherit_offset = offsetof(wr_config, default_concurrency),
     .desc = "Worker threads, each with its own connection and Lua state."},
    {.name = "batch_size",
     .type = T_INT,
     .offset = offsetof(wr_subscription, batch_size),
     .min = 1,
     .max = 1000,
     .flags = F_INHERIT,
     .def_doc = "`defaults.batch_size`",
     .inherit_offset = offsetof(wr_config, default_batch_size),
     .desc = "Messages handled per acknowledgement round; clamped to prefetch."},
    {.name = "handler_timeout",
     .type = T_DURATION,
     .offset = offsetof(wr_subscription, handler_timeout_ms),
     .min = 1,
     .max = 3600000,
     .flags = F_INHERIT | F_LIVE,
     .def_doc = "`defaults.handler_timeout`",
     .inherit_offset = offsetof(wr_config, default_handler_timeout_ms),
     .desc = "Longest one handler call may run before it is stopped and counted as a failure."},
    {.name = "max_body_size",
     .type = T_SIZE,
     .offset = offsetof(wr_subscription, max_body_size),
     .min = 1,
     .max = MAX_BODY,
     .flags = F_INHERIT,
     .def_doc = "`defaults.max_body_size`",
     .inherit_offset = offsetof(wr_config, default_max_body_size),
     .desc = "Largest message body handled; larger ones are dead-lettered as body-too-large."},
    {.name = "max_publish_size",
     .type = T_SIZE,
     .offset = offsetof(wr_subscription, max_publish_size),
     .min = 1,
     .max = MAX_BODY,
     .flags = F_INHERIT,
     .def_doc = "`defaults.max_publish_size`",
     .inherit_offset = offsetof(wr_config, default_max_publish_size),
     .desc = "Most bytes the handler may publish for one message (bodies, exchange and routing "
             "key names, headers); a ctx.publish beyond it raises."},
    {.name = "retry",
     .type = T_SECTION,
     .offset = offsetof(wr_subscription, retry),
     .sub = &cfg_retry_section,
     .merge_from = "defaults.retry",
     .desc = "Retry policy; overrides `defaults.retry` key by key (delays and backoff replace "
             "each other)."},
    {.name = "idempotency",
     .type = T_SECTION,
     .offset = offsetof(wr_subscription, idem),
     .sub = &cfg_idem_section,
     .merge_from = "defaults.idempotency",
     .desc = "Deduplication; overrides `defaults.idempotency` key by key."},
    {.name = "breaker",
     .type = T_SECTION,
     .offset = offsetof(wr_subscription, breaker),
     .sub = &cfg_breaker_section,
     .merge_from = "defaults.breaker",
     .desc = "Circuit breaker around this subscription's handler; overrides "
             "`defaults.breaker` key by key."},
    {.name = "ordering",
     .type = T_SECTION,
     .offset = offsetof(wr_subscription, ordering),
     .sub = &ordering_section,
     .desc = "Handle the messages that share a key in delivery order (see "
             "docs/ordering.md); off when absent."},
    {.name = "partitions",
     .type = T_INT,
     .offset = offsetof(wr_subscription, partitions),
     .min = 1,
     .max = WR_MAX_PARTITIONS,
     .desc = "Split the queue into this many partitions by ordering key (a consistent-hash "
             "exchange and queues `<queue>.p<i>` with a single active consumer each), consumed "
             "by every worker of every replica: one of them runs a partition at a time. Needs "
             "`ordering.key` (see docs/ordering.md); none when absent."},
    {.name = "gates",
     .type = T_LIST,
     .offset = offsetof(wr_subscription, gates),
     .count_offset = offsetof(wr_subscription, gate_count),
     .min = 0,
     .max = WR_MAX_GATES,
     .sub = &gate_section,
     .desc = "Causal gates: a type that waits until another type is done for the same key "
             "(see docs/ordering.md)."},
    {.name = "contracts",
     .type = T_SECTION,
     .offset = offsetof(wr_subscription, contracts),
     .sub = &contracts_section,
     .desc = "Event contracts: every message is checked against its type's contract before "
             "its handler runs (schema-invalid, version-unknown and unknown-type go to the DLQ "
             "at once)."},
    {.name = "bindings",
     .type = T_LIST,
     .offset = offsetof(wr_subscription, bindings),
     .count_offset = offsetof(wr_subscription, binding_count),
     .min = 0,
     .sub = &binding_section,
     .desc = "Exchange bindings declared for the queue; none: consume the queue as it is."},
    {.name = "trace_fields",
     .type = T_STRLIST,
     .offset = offsetof(wr_subscription, trace_fields),
     .count_offset = offsetof(wr_subscription, trace_field_count),
     .min = 1,
     .max = 200,
     .desc = "JSON paths of the body (dot-separated, `customer.email`) whose values the "
             "journal records with a message's first attempt, so `warren trace --grep VALUE` "
             "finds an event by a business value (an order id, an e-mail address)."},
};

const section cfg_subscription_section = {subscription_fields, NFIELDS(subscription_fields),
                                          sizeof(wr_subscription), cfg_finish_subscription};

static const field tls_fields[] = {
    {.name = "ca",
     .type = T_PATH,
     .offset = offsetof(wr_config, amqp_tls.ca),
     .min = 1,
     .max = PATH_MAX,
     .def_doc = "the system's CAs",
     .desc = "CA certificates (PEM) the broker's certificate must chain to; its name must "
             "match the URL's host."},
    {.name = "cert",
     .type = T_PATH,
     .offset = offsetof(wr_config, amqp_tls.cert),
     .min = 1,
     .max = PATH_MAX,
     .desc = "Client certificate chain (PEM) shown to the broker; with `key`."},
    {.name = "key",
     .type = T_PATH,
     .offset = offsetof(wr_config, amqp_tls.key),
     .min = 1,
     .max = PATH_MAX,
     .desc = "Private key (PEM, not encrypted) of `cert`."},
};

static const section tls_section = {tls_fields, NFIELDS(tls_fields), 0, NULL};

void cfg_finish_amqp(loader *ld, void *base, int index, yaml_node_t *node, const char *path);

static const field amqp_fields[] = {
    {.name = "url",
     .type = T_AMQP_URL,
     .offset = offsetof(wr_config, amqp),
     .flags = F_REQUIRED,
     .desc = "Broker address, amqp[s]://user:password@host:port/vhost (vhost `/` if empty)."},
    {.name = "heartbeat",
     .type = T_DURATION,
     .offset = offsetof(wr_config, amqp_heartbeat_ms),
     .def = "10s",
     .min = 0,
     .max = 300000,
     .desc = "AMQP heartbeat interval; 0 disables heartbeats."},
    {.name = "connect_timeout",
     .type = T_DURATION,
     .offset = offsetof(wr_config, amqp_connect_timeout_ms),
     .def = "5s",
     .min = 1,
     .max = 300000,
     .desc = "Time allowed for the TCP connect and AMQP handshake."},
    {.name = "reconnect_max",
     .type = T_DURATION,
     .offset = offsetof(wr_config, amqp_reconnect_max_ms),
     .def = "5s",
     .min = 100,
     .max = 600000,
     .desc = "Longest wait between two attempts to reach the broker: the wait doubles from "
             "200ms up to this (each one shortened at random by up to half) and starts over "
             "once connected."},
    {.name = "urls",
     .type = T_STRLIST,
     .offset = offsetof(wr_config, amqp_url_texts),
     .count_offset = offsetof(wr_config, amqp_url_text_count),
     .min = 1,
     .max = 4096,
     .desc = "Other nodes of the same cluster (amqp[s]:// URLs, a list): a worker that cannot "
             "reach a node, or loses it, tries the next one (`url` first, then these, round and "
             "round), with the same backoff."},
    {.name = "tls",
     .type = T_SECTION,
     .sub = &tls_section,
     .desc = "TLS files for an amqps:// URL; without them the broker's certificate is checked "
             "against the system's CAs."},
};

static const field redis_fields[] = {
    {.name = "url",
     .type = T_REDIS_URL,
     .offset = offsetof(wr_config, redis),
     .flags = F_REQUIRED,
     .desc = "Redis address, redis://[[user]:password@]host[:port][/db]."},
    {.name = "timeout",
     .type = T_DURATION,
     .offset = offsetof(wr_config, redis_timeout_ms),
     .def = "2s",
     .min = 1,
     .max = 300000,
     .desc = "Connect and per-command timeout for Redis."},
    {.name = "reconnect_max",
     .type = T_DURATION,
     .offset = offsetof(wr_config, redis_reconnect_max_ms),
     .def = "5s",
     .min = 100,
     .max = 600000,
     .desc = "Longest wait between two attempts to reach Redis while it is away (consumption "
             "is paused meanwhile): doubles from 200ms up to this, starts over once it "
             "answers."},
    {.name = "sentinels",
     .type = T_STRLIST,
     .offset = offsetof(wr_config, redis_sentinels),
     .count_offset = offsetof(wr_config, redis_sentinel_count),
     .min = 1,
     .max = 300,
     .desc = "Redis Sentinel addresses (`HOST:PORT`, a list): every connect asks them, in "
             "turn, where the primary `master_name` is, and checks that the server it reaches "
             "says it is a primary; `url` then gives only the user, password and db."},
    {.name = "master_name",
     .type = T_STRING,
     .offset = offsetof(wr_config, redis_master_name),
     .min = 1,
     .max = 200,
     .desc = "Name of the primary at the sentinels (`sentinel monitor NAME ...`); required "
             "with `sentinels`."},
    {.name = "min_replicas_acked",
     .type = T_INT,
     .offset = offsetof(wr_config, redis_min_replicas),
     .def = "0",
     .min = 0,
     .max = 16,
     .desc = "Replicas that must hold a batch's idempotency records and ctx.store writes "
             "before its messages are acked (`WAIT`); when fewer answer within "
             "`min_replicas_timeout` the handled messages go back to the queue unacked and "
             "the worker pauses as in an outage. 0: no wait (asynchronous replication)."},
    {.name = "min_replicas_timeout",
     .type = T_DURATION,
     .offset = offsetof(wr_config, redis_min_replicas_timeout_ms),
     .def = "1s",
     .min = 1,
     .max = 300000,
     .desc = "How long a batch waits for `min_replicas_acked` replicas; below `timeout`."},
};

static const field log_fields[] = {
    {.name = "level",
     .type = T_ENUM,
     .offset = offsetof(wr_config, log_level),
     .def = "info",
     .enum_values = log_levels,
     .flags = F_LIVE,
     .desc = "Lowest level written to the log."},
    {.name = "bodies",
     .type = T_BOOL,
     .offset = offsetof(wr_config, log_bodies),
     .def = "false",
     .desc = "Add the first 2 KiB of each message's body to its outcome line (off: bodies "
             "may hold personal data)."},
};

static const field defaults_fields[] = {
    {.name = "prefetch",
     .type = T_INT,
     .offset = offsetof(wr_config, default_prefetch),
     .def = "50",
     .min = 1,
     .max = 65535,
     .desc = "Prefetch for subscriptions that do not set their own."},
    {.name = "concurrency",
     .type = T_INT,
     .offset = offsetof(wr_config, default_concurrency),
     .def = "1",
     .min = 1,
     .max = 64,
     .desc = "Worker threads for subscriptions that do not set their own."},
    {.name = "batch_size",
     .type = T_INT,
     .offset = offsetof(wr_config, default_batch_size),
     .def = "50",
     .min = 1,
     .max = 1000,
     .desc = "Batch size for subscriptions that do not set their own."},
    {.name = "handler_timeout",
     .type = T_DURATION,
     .offset = offsetof(wr_config, default_handler_timeout_ms),
     .def = "5s",
     .min = 1,
     .max = 3600000,
     .flags = F_LIVE,
     .desc = "Handler timeout for subscriptions that do not set their own."},
    {.name = "max_body_size",
     .type = T_SIZE,
     .offset = offsetof(wr_config, default_max_body_size),
     .def = "512KiB",
     .min = 1,
     .max = MAX_BODY,
     .desc = "Largest message body for subscriptions that do not set their own."},
    {.name = "max_publish_size",
     .type = T_SIZE,
     .offset = offsetof(wr_config, default_max_publish_size),
     .def = "16MiB",
     .min = 1,
     .max = MAX_BODY,
     .desc = "Most bytes a handler may publish per message, for subscriptions that do not set "
             "their own."},
    {.name = "retry",
     .type = T_SECTION,
     .sub = &cfg_retry_section,
     .locate = default_retry,
     .desc = "How failed messages are retried: explicit `delays` or `backoff`, not both."},
    {.name = "idempotency",
     .type = T_SECTION,
     .sub = &cfg_idem_section,
     .locate = default_idem,
     .desc = "How messages are deduplicated in Redis, so a redelivery is not handled twice."},
    {.name = "breaker",
     .type = T_SECTION,
     .sub = &cfg_breaker_section,
     .locate = default_breaker,
     .desc = "When a circuit breaker opens on failures and how it recovers."},
};

static const field shutdown_fields[] = {
    {.name = "grace",
     .type = T_DURATION,
     .offset = offsetof(wr_config, shutdown_grace_ms),
     .def = "25s",
     .min = 0,
     .max = 3600000,
     .desc = "On SIGTERM, time to finish in-flight messages before giving up."},
};

static const field store_fields[] = {
    {.name = "prefix",
     .type = T_STRING,
     .offset = offsetof(wr_config, store_prefix),
     .def = "warren:store:",
     .min = 1,
     .max = 100,
     .desc = "Redis key prefix of ctx.store: the service's namespace (give each service its "
             "own)."},
    {.name = "max_writes",
     .type = T_INT,
     .offset = offsetof(wr_config, store_max_writes),
     .def = "256",
     .min = 1,
     .max = 10000,
     .desc = "Most ctx.store writes one message may buffer; one more is an error."},
    {.name = "max_value_bytes",
     .type = T_SIZE,
     .offset = offsetof(wr_config, store_max_value_bytes),
     .def = "64KiB",
     .min = 1,
     .max = 16LL << 20,
     .desc = "Largest value, field or member ctx.store accepts."},
};

void cfg_finish_http(loader *ld, void *base, int index, yaml_node_t *node, const char *path);
void cfg_finish_redis(loader *ld, void *base, int index, yaml_node_t *node, const char *path);

static const field http_fields[] = {
    {.name = "listen",
     .type = T_STRING,
     .offset = offsetof(wr_config, http_listen),
     .def = "0.0.0.0:9464",
     .min = 1,
     .max = 64,
     .desc = "Address of the HTTP endpoint (/metrics, /healthz, /readyz), IPv4 `HOST:PORT` "
             "(port 0: any free port, logged at start); `off` disables it."},
    {.name = "queue_poll",
     .type = T_DURATION,
     .offset = offsetof(wr_config, queue_poll_ms),
     .def = "15s",
     .min = 1000,
     .max = 3600000,
     .desc = "How often queue depths (main, delay, wait, DLQ) are read for /metrics."},
};

static const field journal_fields[] = {
    {.name = "enabled",
     .type = T_BOOL,
     .offset = offsetof(wr_config, journal_enabled),
     .def = "true",
     .desc = "Record a short journal per event in Redis for `warren trace` (needs "
             "idempotency on for the subscription)."},
    {.name = "ttl",
     .type = T_DURATION,
     .offset = offsetof(wr_config, journal_ttl_ms),
     .def = "7d",
     .min = 1000,
     .max = 365 * DAY_MS,
     .desc = "How long an event's journal is kept after its last entry."},
    {.name = "max_entries",
     .type = T_INT,
     .offset = offsetof(wr_config, journal_max_entries),
     .def = "50",
     .min = 5,
     .max = 1000,
     .desc = "Entries kept per event; older ones are dropped first."},
};

static const field security_fields[] = {
    {.name = "signing_key",
     .type = T_STRING,
     .offset = offsetof(wr_config, signing_key),
     .min = 16,
     .max = 4096,
     .desc = "Secret the sidecars share to sign the x-warren-* headers of the copies they "
             "send through their delay and wait queues (HMAC-SHA256), so a producer cannot "
             "forge an attempt count or a route; at least 16 bytes, e.g. "
             "`${WARREN_SIGNING_KEY}`. Unset: derived from the broker's and Redis's "
             "passwords (set it when producers share those)."},
};

static const section amqp_section = {amqp_fields, NFIELDS(amqp_fields), 0, cfg_finish_amqp};
static const section redis_section = {redis_fields, NFIELDS(redis_fields), 0, cfg_finish_redis};
static const section log_section = {log_fields, NFIELDS(log_fields), 0, NULL};
static const section defaults_section = {defaults_fields, NFIELDS(defaults_fields), 0, NULL};
static const section shutdown_section = {shutdown_fields, NFIELDS(shutdown_fields), 0, NULL};
static const section store_section = {store_fields, NFIELDS(store_fields), 0, NULL};
static const section http_section = {http_fields, NFIELDS(http_fields), 0, cfg_finish_http};
static const section journal_section = {journal_fields, NFIELDS(journal_fields), 0, NULL};
static const section security_section = {security_fields, NFIELDS(security_fields), 0, NULL};

static const field top_fields[] = {
    {.name = "amqp",
     .type = T_SECTION,
     .sub = &amqp_section,
     .flags = F_REQUIRED,
     .desc = "RabbitMQ connection."},
    {.name = "redis",
     .type = T_SECTION,
     .sub = &redis_section,
     .flags = F_REQUIRED,
     .desc = "Redis connection."},
    {.name = "log", .type = T_SECTION, .sub = &log_section, .desc = "Logging."},
    {.name = "defaults",
     .type = T_SECTION,
     .sub = &defaults_section,
     .desc = "Values every subscription inherits unless it sets its own."},
    {.name = "breakers",
     .type = T_NAMED,
     .offset = offsetof(wr_config, breakers),
     .count_offset = offsetof(wr_config, breaker_count),
     .arg_offset = offsetof(wr_config, breaker_names),
     .max = MAX_LIST,
     .sub = &cfg_breaker_section,
     .merge_from = "defaults.breaker",
     .desc = "Named breakers for ctx.breaker(name) ([A-Za-z0-9_.-]), each over "
             "`defaults.breaker` key by key."},
    {.name = "shutdown", .type = T_SECTION, .sub = &shutdown_section, .desc = "Graceful shutdown."},
    {.name = "store",
     .type = T_SECTION,
     .sub = &store_section,
     .desc = "ctx.store: handler state written atomically with the idempotency record."},
    {.name = "http",
     .type = T_SECTION,
     .sub = &http_section,
     .desc = "Metrics and health endpoints for Prometheus and Kubernetes probes."},
    {.name = "journal",
     .type = T_SECTION,
     .sub = &journal_section,
     .desc = "The per-event journal (`warren trace`)."},
    {.name = "security",
     .type = T_SECTION,
     .sub = &security_section,
     .desc = "What warren trusts in the messages it consumes."},
    {.name = "subscriptions",
     .type = T_LIST,
     .offset = offsetof(wr_config, subs),
     .count_offset = offsetof(wr_config, sub_count),
     .min = 1,
     .max = MAX_LIST,
     .sub = &cfg_subscription_section,
     .flags = F_REQUIRED,
     .desc = "Queues to consume and the handler for each; at least one."},
};

const section cfg_top_section = {top_fields, NFIELDS(top_fields), 0, NULL};

/* cfg_walk_mapping() tracks the keys it has seen in a MAX_FIELDS array. */
_Static_assert(NFIELDS(top_fields) <= MAX_FIELDS, "too many top-level keys");
_Static_assert(NFIELDS(subscription_fields) <= MAX_FIELDS, "too many subscription keys");
_Static_assert(NFIELDS(binding_fields) <= MAX_FIELDS, "too many binding keys");
_Static_assert(NFIELDS(defaults_fields) <= MAX_FIELDS, "too many defaults keys");
_Static_assert(NFIELDS(retry_fields) <= MAX_FIELDS, "too many retry keys");
_Static_assert(NFIELDS(backoff_fields) <= MAX_FIELDS, "too many backoff keys");
_Static_assert(NFIELDS(idem_fields) <= MAX_FIELDS, "too many idempotency keys");
_Static_assert(NFIELDS(breaker_fields) <= MAX_FIELDS, "too many breaker keys");
