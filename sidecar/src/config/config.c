/*
 * config.c: load warren's YAML configuration into a wr_config.
 *
 * The file is read whole, parsed with libyaml's document API (so every node
 * carries its position) and then walked against the schema below: one static
 * table of fields per section, each naming the key, its type, where the value
 * goes (an offsetof into the section's struct), its default written the way a
 * user would write it, its bounds, whether it is required, whether a change
 * takes effect on reload, and a one-line description. The same tables feed
 * wr_config_write_reference(), so the documented keys and the accepted keys
 * are one list, and wr_config_free(), so everything the walk allocates is
 * freed by the same description that allocated it.
 *
 * Loading never stops at the first problem: every error is collected as
 * "FILE:LINE:COL: message" (1-based, pointing at the key or value at fault),
 * sorted into file order, and handed back through wr_config_errors. Scalars
 * are expanded from the environment (${VAR}, ${VAR:-default}, $$) before they
 * are interpreted. Nothing ever echoes a URL's password: URLs in messages are
 * masked the same way as the `redacted` fields.
 *
 * Everything here is pure apart from reading the one file and resolving
 * handler paths with realpath(); there is no global mutable state.
 */
/* realpath() is XSI: glibc hides it under plain _POSIX_C_SOURCE. */
#define _XOPEN_SOURCE 700

#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sys/time.h> /* rabbitmq-c's amqp.h needs struct timeval under -std=c11 */
#include <amqp.h>
#include <yaml.h>

#include "envexpand.h"
#include "gates.h"
#include "strutil.h"
#include "units.h"

#define PATH_BUF 256           /* dotted key paths such as subscriptions[3].bindings[0].type */
#define MAX_FIELDS 24          /* most keys any one section has */
#define AMQP_SHORTSTR 255      /* AMQP names (queues, exchanges, routing keys) are shortstrs */
#define MAX_BODY (512LL << 20) /* RabbitMQ's own ceiling on a message body */
#define DAY_MS 86400000LL      /* one day in milliseconds */
#define MAX_DELAYS 20          /* most entries in retry.delays */
#define MAX_LIST                                                                                   \
    1000 /* most subscriptions, and most named breakers (their checks                              \
            compare every entry with every other) */

/*
 * Limits on hostile or broken input, each reported as FILE:LINE:COL. A real
 * configuration is a few KiB, nests six levels and holds a few hundred values;
 * these bound the time and memory a file can cost far above that.
 */
#define MAX_FILE (1 << 20)          /* bytes read from the file: 1 MiB */
#define MAX_YAML_DEPTH 32           /* nested YAML collections, the top-level mapping included */
#define MAX_VALUES 100000           /* values the walk visits (an alias counts once per use) */
#define ECHO_MAX 8                  /* values up to this many bytes are quoted in messages */
#define KEY_ECHO_MAX 64             /* keys and names are quoted up to this many bytes */
#define URL_ECHO_MAX 200            /* URLs (masked) are quoted up to this many bytes */
#define GOT_MAX (KEY_ECHO_MAX + 48) /* room for describe_value's phrase */

/* ------------------------------------------------------------------------ */
/* Schema                                                                     */
/* ------------------------------------------------------------------------ */

typedef enum {
    T_STRING,    /* char *; min/max bound the length in bytes */
    T_PATH,      /* char *; a file relative to the config's directory, made absolute */
    T_INT,       /* int; min/max bound the value */
    T_DURATION,  /* int64_t milliseconds; min/max bound the value */
    T_SIZE,      /* int64_t bytes, written 65536, 512KiB, 4MiB; min/max bound the value */
    T_BOOL,      /* int, 0 or 1 */
    T_ENUM,      /* int: the index of the value in enum_values */
    T_ENUM_STR,  /* char *: one of enum_values, copied */
    T_NUMBER,    /* double; min/max bound the value (whole numbers) */
    T_DURLIST,   /* int64_t * milliseconds (malloc'd) + int count; min/max bound each item,
                    max_count the number of items (at least one) */
    T_KEY,       /* idempotency key: wr_key_source at offset, char * argument at arg_offset */
    T_AMQP_URL,  /* wr_amqp_url */
    T_REDIS_URL, /* wr_redis_url */
    T_STRLIST,   /* char ** (NULL-terminated) + int count; a single string is a list of one */
    T_SECTION,   /* nested mapping whose fields live in the same struct */
    T_LIST,      /* list of mappings: element array + int count; min and max (0: none)
                    bound the length */
    T_NAMED      /* mapping of names to mappings: element array at offset, names (char **)
                    at arg_offset, int count; names are limited like F_IDENT strings;
                    max (0: none) bounds the count */
} field_type;

#define F_REQUIRED 0x1u /* the key must be present */
#define F_LIVE 0x2u     /* a reload applies a change without restarting */
#define F_IDENT 0x4u    /* string limited to [A-Za-z0-9_.-] */
#define F_INHERIT 0x8u  /* unset: copied from the wr_config field at inherit_offset */
#define F_NONE 0x10u    /* T_DURATION: "none" is accepted too, stored as 0 */
/* F_MERGE: starts unset (see mark_unset); once the whole file is walked, merge_policies()
 * fills it from the defaults, else from def. */
#define F_MERGE 0x20u
#define F_GT_MIN 0x40u /* T_NUMBER: min itself is excluded (0 < r <= 1) */
#define F_KEYNAME                                                                                  \
    0x80u /* the value is a mapping key (a breaker's name): quoted in messages up                  \
             to KEY_ECHO_MAX bytes, where other values stop at ECHO_MAX */

typedef struct loader loader;
typedef struct section section;

typedef struct {
    const char *name;
    field_type type;
    size_t offset;                  /* where the value goes in the section's struct */
    size_t count_offset;            /* T_STRLIST, T_LIST, T_DURLIST, T_NAMED: where the count
                                       goes */
    size_t arg_offset;              /* T_KEY: where the key's argument (char *) goes;
                                       T_NAMED: where the names (char **) go */
    const char *def;                /* default as it would be written in YAML; NULL: none */
    const char *def_doc;            /* what the reference shows when def alone would not do */
    int64_t min, max;               /* bounds, see field_type */
    int max_count;                  /* T_DURLIST: most items */
    unsigned flags;                 /* F_* */
    const char *const *enum_values; /* T_ENUM, T_ENUM_STR: NULL-terminated */
    const section *sub;             /* T_SECTION, T_LIST, T_NAMED: the nested fields */
    void *(*locate)(loader *ld);    /* T_SECTION: where its struct lives when not in the
                                       parent's (at offset); then the loader owns it */
    const char *merge_from;         /* T_SECTION, T_NAMED of F_MERGE fields: the section they
                                       are merged over, shown as their default in the
                                       reference */
    size_t inherit_offset;          /* F_INHERIT: the wr_config field holding the default */
    const char *desc;               /* one line for the reference table */
} field;

/*
 * A section is a list of fields plus, for list elements, the element size and
 * a hook run after each element (or the section's mapping) is walked (for
 * checks that span fields or elements, like uniqueness).
 */
struct section {
    const field *fields;
    size_t nfields;
    size_t elem_size; /* T_LIST and T_NAMED elements */
    void (*finish)(loader *ld, void *elems, int index, yaml_node_t *node, const char *path);
};

#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

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

static void finish_subscription(loader *ld, void *elems, int index, yaml_node_t *node,
                                const char *path);
static void finish_retry(loader *ld, void *elems, int index, yaml_node_t *node, const char *path);
static void *default_retry(loader *ld);
static void *default_idem(loader *ld);
static void *default_breaker(loader *ld);

/*
 * retry, idempotency and breaker: one table each, used both under defaults
 * (where the loader keeps the values: wr_config has no room for them) and in
 * every subscription (breaker also in every named breaker). Every key starts
 * unset and is merged after the walk (see merge_policies): the subscription's
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

static const section backoff_section = {backoff_fields, NFIELDS(backoff_fields), 0, NULL};

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
     .sub = &backoff_section,
     .desc = "Exponential backoff instead of `delays`: initial, times multiplier per retry, "
             "up to max."},
};

static const section retry_section = {retry_fields, NFIELDS(retry_fields), 0, finish_retry};

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

static const section idem_section = {idem_fields, NFIELDS(idem_fields), 0, NULL};

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

static const section breaker_section = {breaker_fields, NFIELDS(breaker_fields),
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

static void finish_ordering(loader *ld, void *base, int index, yaml_node_t *node, const char *path);

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
                                         finish_ordering};

static void finish_gate(loader *ld, void *elems, int index, yaml_node_t *node, const char *path);

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
                                     finish_gate};
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
     .sub = &retry_section,
     .merge_from = "defaults.retry",
     .desc = "Retry policy; overrides `defaults.retry` key by key (delays and backoff replace "
             "each other)."},
    {.name = "idempotency",
     .type = T_SECTION,
     .offset = offsetof(wr_subscription, idem),
     .sub = &idem_section,
     .merge_from = "defaults.idempotency",
     .desc = "Deduplication; overrides `defaults.idempotency` key by key."},
    {.name = "breaker",
     .type = T_SECTION,
     .offset = offsetof(wr_subscription, breaker),
     .sub = &breaker_section,
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

static const section subscription_section = {subscription_fields, NFIELDS(subscription_fields),
                                             sizeof(wr_subscription), finish_subscription};

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

static void finish_amqp(loader *ld, void *base, int index, yaml_node_t *node, const char *path);

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
     .sub = &retry_section,
     .locate = default_retry,
     .desc = "How failed messages are retried: explicit `delays` or `backoff`, not both."},
    {.name = "idempotency",
     .type = T_SECTION,
     .sub = &idem_section,
     .locate = default_idem,
     .desc = "How messages are deduplicated in Redis, so a redelivery is not handled twice."},
    {.name = "breaker",
     .type = T_SECTION,
     .sub = &breaker_section,
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

static void finish_http(loader *ld, void *base, int index, yaml_node_t *node, const char *path);
static void finish_redis(loader *ld, void *base, int index, yaml_node_t *node, const char *path);

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

static const section amqp_section = {amqp_fields, NFIELDS(amqp_fields), 0, finish_amqp};
static const section redis_section = {redis_fields, NFIELDS(redis_fields), 0, finish_redis};
static const section log_section = {log_fields, NFIELDS(log_fields), 0, NULL};
static const section defaults_section = {defaults_fields, NFIELDS(defaults_fields), 0, NULL};
static const section shutdown_section = {shutdown_fields, NFIELDS(shutdown_fields), 0, NULL};
static const section store_section = {store_fields, NFIELDS(store_fields), 0, NULL};
static const section http_section = {http_fields, NFIELDS(http_fields), 0, finish_http};
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
     .sub = &breaker_section,
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
     .sub = &subscription_section,
     .flags = F_REQUIRED,
     .desc = "Queues to consume and the handler for each; at least one."},
};

static const section top_section = {top_fields, NFIELDS(top_fields), 0, NULL};

/* walk_mapping() tracks the keys it has seen in a MAX_FIELDS array. */
_Static_assert(NFIELDS(top_fields) <= MAX_FIELDS, "too many top-level keys");
_Static_assert(NFIELDS(subscription_fields) <= MAX_FIELDS, "too many subscription keys");
_Static_assert(NFIELDS(binding_fields) <= MAX_FIELDS, "too many binding keys");
_Static_assert(NFIELDS(defaults_fields) <= MAX_FIELDS, "too many defaults keys");
_Static_assert(NFIELDS(retry_fields) <= MAX_FIELDS, "too many retry keys");
_Static_assert(NFIELDS(backoff_fields) <= MAX_FIELDS, "too many backoff keys");
_Static_assert(NFIELDS(idem_fields) <= MAX_FIELDS, "too many idempotency keys");
_Static_assert(NFIELDS(breaker_fields) <= MAX_FIELDS, "too many breaker keys");

/* ------------------------------------------------------------------------ */
/* Small helpers                                                              */
/* ------------------------------------------------------------------------ */

/* Fields are reached by byte offset from the start of their struct. */
#define AT(base, off, type) ((type *)((char *)(base) + (off)))

/*
 * Format a dotted key path into OUT (PATH_BUF bytes). Paths are built from
 * schema names and list indexes, so they stay short; one that did not fit
 * would merely be cut in a message.
 */
static void make_path(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void make_path(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, PATH_BUF, fmt, ap);
    va_end(ap);
}

/* Build "parent.key" (or just "key" at the top level) into OUT. */
static void join_key(char *out, const char *parent, const char *key)
{
    if (parent[0] == '\0') {
        make_path(out, "%s", key);
    } else {
        make_path(out, "%s.%s", parent, key);
    }
}

/* ------------------------------------------------------------------------ */
/* The loader                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
    int line, col; /* 1-based; 0 for errors without a position */
    char *text;    /* the full "FILE:LINE:COL: message" */
} error_entry;

struct loader {
    const char *file; /* the path as given, prefix of every message */
    const char *dir;  /* the config's directory, absolute */
    yaml_document_t *doc;
    error_entry errs[WR_CONFIG_MAX_ERRORS];
    int nerr;
    int dropped;
    wr_retry_policy def_retry;     /* defaults.retry: as written, then merged over def */
    wr_idem_policy def_idem;       /* defaults.idempotency, likewise */
    wr_breaker_policy def_breaker; /* defaults.breaker, likewise */
    long values;                   /* values visited by the walk so far (MAX_VALUES) */
    bool exhausted;                /* MAX_VALUES was reached: the walk stops */
};

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

/* Keep TEXT (taking ownership) or, past the limit or out of memory, count it as dropped. */
static void add_error(loader *ld, int line, int col, char *text)
{
    if (text == NULL || ld->nerr >= WR_CONFIG_MAX_ERRORS) {
        ld->dropped++;
        free(text);
        return;
    }
    ld->errs[ld->nerr].line = line;
    ld->errs[ld->nerr].col = col;
    ld->errs[ld->nerr].text = text;
    ld->nerr++;
}

/* Record "FILE:LINE:COL: message" (LINE and COL already 1-based). */
static void err_at(loader *ld, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void err_at(loader *ld, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = wr_str_vformat(fmt, ap);
    va_end(ap);
    char *line_text =
        wr_str_format("%s:%d:%d: %s", ld->file, line, col, msg ? msg : "out of memory");
    free(msg);
    add_error(ld, line, col, line_text);
}

#define NODE_LINE(n) ((int)(n)->start_mark.line + 1)
#define NODE_COL(n) ((int)(n)->start_mark.column + 1)

/* A plain scalar that YAML would read as null: empty, "~" or "null". */
static bool is_null_scalar(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return false;
    }
    const char *v = (const char *)n->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* How a node is described after "got": never the value of a scalar, which may be secret. */
static const char *node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a list";
    default:
        return is_null_scalar(n) ? "an empty value" : "a string";
    }
}

/*
 * How a value is shown after "got" in a message: quoted when it is at most
 * ECHO_MAX bytes ("5x", "lots", "verbose"), otherwise by its length only,
 * because a value under the wrong key may well be a password. Names that are
 * mapping keys (F_KEYNAME) are quoted up to KEY_ECHO_MAX bytes.
 */
static void describe_value(const field *f, const char *text, char *out, size_t cap)
{
    size_t n = strlen(text);
    size_t max = f != NULL && (f->flags & F_KEYNAME) ? KEY_ECHO_MAX : ECHO_MAX;
    char shown[KEY_ECHO_MAX + 4];

    if (n == 0) {
        snprintf(out, cap, "an empty value");
    } else if (n <= max) {
        wr_str_printable(text, n, max, shown);
        snprintf(out, cap, "'%s'", shown);
    } else {
        snprintf(out, cap, "a value of %zu bytes (not shown)", n);
    }
}

/* " 'TEXT'" when TEXT may be quoted in a message (see describe_value), else "". */
static void quote_if_short(const char *text, char *out, size_t cap)
{
    char shown[ECHO_MAX + 4];
    if (strlen(text) <= ECHO_MAX) {
        wr_str_printable(text, strlen(text), ECHO_MAX, shown);
        snprintf(out, cap, " '%s'", shown);
    } else {
        out[0] = '\0';
    }
}

/* "an integer from 1 to 65535", "a duration like ...": what a field accepts, for messages. */
static void expected_phrase(const field *f, char *out, size_t len)
{
    switch (f->type) {
    case T_STRING:
        snprintf(out, len, "a string");
        break;
    case T_PATH:
        snprintf(out, len, "a file path");
        break;
    case T_INT:
        snprintf(out, len, "an integer from %lld to %lld", (long long)f->min, (long long)f->max);
        break;
    case T_DURATION:
        snprintf(out, len, "a duration like 500ms, 5s, 2m, 1h or 7d%s",
                 (f->flags & F_NONE) ? ", or none" : "");
        break;
    case T_NUMBER:
        snprintf(out, len, "a number from %lld%s to %lld", (long long)f->min,
                 (f->flags & F_GT_MIN) ? " (exclusive)" : "", (long long)f->max);
        break;
    case T_DURLIST:
        snprintf(out, len, "a list of durations");
        break;
    case T_KEY:
        snprintf(out, len, "message_id, header:NAME or json:PATH");
        break;
    case T_SIZE:
        snprintf(out, len, "a size like 65536, 512KiB or 4MiB");
        break;
    case T_BOOL:
        snprintf(out, len, "true or false");
        break;
    case T_ENUM:
    case T_ENUM_STR: {
        size_t used = (size_t)snprintf(out, len, "one of ");
        for (int i = 0; f->enum_values[i] != NULL && used < len; i++) {
            used += (size_t)snprintf(out + used, len - used, "%s%s", i > 0 ? ", " : "",
                                     f->enum_values[i]);
        }
        break;
    }
    case T_AMQP_URL:
        snprintf(out, len, "an AMQP URL");
        break;
    case T_REDIS_URL:
        snprintf(out, len, "a Redis URL");
        break;
    case T_STRLIST:
        snprintf(out, len, "a string or a list of strings");
        break;
    case T_SECTION:
    case T_NAMED:
        snprintf(out, len, "a mapping");
        break;
    case T_LIST:
        snprintf(out, len, "a list");
        break;
    }
}

/*
 * A quoted scalar given to an integer, number or boolean field: YAML makes it
 * a string, so it is refused like any other string there. A value taken from
 * the environment (${VAR}) is text whatever its quotes, and is read as usual.
 */
static bool quoted_literal(const field *f, const yaml_node_t *node)
{
    if (f->type != T_INT && f->type != T_NUMBER && f->type != T_BOOL) {
        return false;
    }
    int style = node->data.scalar.style;
    if (style != YAML_SINGLE_QUOTED_SCALAR_STYLE && style != YAML_DOUBLE_QUOTED_SCALAR_STYLE) {
        return false;
    }
    const char *v = (const char *)node->data.scalar.value;
    return v[0] != '\0' && strstr(v, "${") == NULL; /* '' is "an empty value", as ever */
}

static void kind_error(loader *ld, const field *f, yaml_node_t *node, const char *path)
{
    char want[128];
    expected_phrase(f, want, sizeof(want));
    err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: expected %s, got %s", path, want,
           node_kind(node));
}

/* Replace the char * at P with TEXT copied; false only when out of memory. */
static bool set_string(char **p, const char *text)
{
    char *copy = strdup(text);
    if (copy == NULL) {
        return false;
    }
    free(*p);
    *p = copy;
    return true;
}

/* A JSON path for idempotency.key: names of [A-Za-z0-9_-], one or more, joined by '.'. */
static bool valid_json_path(const char *p)
{
    static const char name[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    for (;;) {
        size_t n = strspn(p, name);
        if (n == 0) {
            return false;
        }
        p += n;
        if (*p == '\0') {
            return true;
        }
        if (*p != '.') {
            return false;
        }
        p++;
    }
}

/*
 * Resolve a handler path: absolute as written, otherwise relative to the
 * config file's directory. The directory is made canonical with realpath(),
 * the file name is kept as written: in a Kubernetes ConfigMap volume the file
 * is a symlink into a timestamped directory that the next update deletes, so
 * the path to keep (and to watch for hot reload) is the symlink's, never its
 * target's. The file (followed through symlinks) must be a regular file.
 * Returns a malloc'd absolute path, or NULL with a message in *ERR.
 */
static char *resolve_path(loader *ld, const field *f, const char *text, char **err)
{
    char *joined, *dir, *real, *out, got[GOT_MAX];
    struct stat st;

    *err = NULL;
    joined = text[0] == '/' ? strdup(text) : wr_str_format("%s/%s", ld->dir, text);
    if (joined == NULL) {
        *err = strdup("out of memory");
        return NULL;
    }
    char *slash = strrchr(joined, '/');
    dir = slash == joined ? strdup("/") : wr_str_dup_range(joined, (size_t)(slash - joined));
    real = dir ? realpath(dir, NULL) : NULL;
    int e = errno;
    free(dir);
    describe_value(f, text, got, sizeof(got));
    if (real == NULL || stat(joined, &st) != 0) {
        e = real == NULL ? e : errno;
        if (e == ENOENT || e == ENOTDIR) {
            *err = text[0] == '/' ? wr_str_format("%s file not found, got %s", f->name, got)
                                  : wr_str_format("%s file not found (relative to %s), got %s",
                                                  f->name, ld->dir, got);
        } else {
            *err = wr_str_format("%s file: %s, got %s", f->name, strerror(e), got);
        }
        free(real);
        free(joined);
        return NULL;
    }
    out = wr_str_format("%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/", slash + 1);
    free(real);
    free(joined);
    if (out == NULL) {
        *err = strdup("out of memory");
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        *err = wr_str_format("%s file is not a regular file, got %s", f->name, got);
        free(out);
        return NULL;
    }
    return out;
}

/*
 * Report an unparsable URL. One that starts with a scheme is shown with its
 * whole userinfo masked (the user name too: in a malformed URL it may be the
 * password); one without is described like any other value, since it may be
 * a secret pasted under the wrong key.
 */
static void url_error(loader *ld, int line, int col, const char *path, const char *kind,
                      const char *text, const char *why)
{
    if (wr_url_after_scheme(text) != NULL) {
        char *masked = wr_url_mask_userinfo(text, true);
        char shown[URL_ECHO_MAX + 4];
        wr_str_printable(masked ? masked : "***", masked ? strlen(masked) : 3, URL_ECHO_MAX, shown);
        err_at(ld, line, col, "%s: invalid %s URL '%s' (%s)", path, kind, shown, why);
        free(masked);
    } else {
        char got[GOT_MAX];
        describe_value(NULL, text, got, sizeof(got));
        err_at(ld, line, col, "%s: invalid %s URL (%s), got %s", path, kind, why, got);
    }
}

/* Where a scalar was found and how messages show it. */
typedef struct {
    int line, col;
    const char *path; /* the dotted key */
    const char *got;  /* the value as messages show it (describe_value) */
} scalar_at;

/* Report that F wanted something else (expected_phrase says what). */
static void expected_error(loader *ld, const field *f, const scalar_at *at)
{
    char want[128];
    expected_phrase(f, want, sizeof(want));
    err_at(ld, at->line, at->col, "%s: expected %s, got %s", at->path, want, at->got);
}

static void set_string_field(loader *ld, const field *f, void *base, const char *text,
                             const scalar_at *at)
{
    size_t len = strlen(text);
    if (len == 0 && f->min > 0) {
        err_at(ld, at->line, at->col, "%s: must not be empty", at->path);
        return;
    }
    if ((int64_t)len > f->max) {
        err_at(ld, at->line, at->col, "%s: must be at most %lld bytes long, got %zu bytes",
               at->path, (long long)f->max, len);
        return;
    }
    if (f->flags & F_IDENT) {
        static const char ident[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "abcdefghijklmnopqrstuvwxyz0123456789_.-";
        if (strspn(text, ident) != len) {
            err_at(ld, at->line, at->col,
                   "%s: may contain only letters, digits, '_', '.' and '-', got %s", at->path,
                   at->got);
            return;
        }
    }
    if (!set_string(AT(base, f->offset, char *), text)) {
        err_at(ld, at->line, at->col, "%s: out of memory", at->path);
    }
}

static void set_path_field(loader *ld, const field *f, void *base, const char *text,
                           const scalar_at *at)
{
    char *err, *real;
    if (text[0] == '\0') {
        err_at(ld, at->line, at->col, "%s: must not be empty", at->path);
        return;
    }
    real = resolve_path(ld, f, text, &err);
    if (real == NULL) {
        err_at(ld, at->line, at->col, "%s: %s", at->path, err ? err : "out of memory");
        free(err);
        return;
    }
    free(*AT(base, f->offset, char *));
    *AT(base, f->offset, char *) = real;
}

static void set_int_field(loader *ld, const field *f, void *base, const char *text,
                          const scalar_at *at)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    bool digits = text[0] == '-' || (text[0] >= '0' && text[0] <= '9');
    if (!digits || *end != '\0' || errno != 0 || v < f->min || v > f->max) {
        expected_error(ld, f, at);
        return;
    }
    *AT(base, f->offset, int) = (int)v;
}

static void set_duration_field(loader *ld, const field *f, void *base, const char *text,
                               const scalar_at *at)
{
    int64_t ms;
    const char *or_none = (f->flags & F_NONE) ? ", or none" : "";
    if ((f->flags & F_NONE) && strcmp(text, "none") == 0) {
        *AT(base, f->offset, int64_t) = 0;
        return;
    }
    if (wr_units_parse_duration(text, &ms) != 0) {
        expected_error(ld, f, at);
        return;
    }
    if (ms < f->min || ms > f->max) {
        char lo[32], hi[32];
        wr_units_format_duration(f->min, lo, sizeof(lo));
        wr_units_format_duration(f->max, hi, sizeof(hi));
        err_at(ld, at->line, at->col, "%s: expected a duration from %s to %s%s, got %s", at->path,
               lo, hi, or_none, at->got);
        return;
    }
    *AT(base, f->offset, int64_t) = ms;
}

/* Plain decimals only (2, 1.5): no signs, exponents, hex, inf or nan. */
static void set_number_field(loader *ld, const field *f, void *base, const char *text,
                             const scalar_at *at)
{
    size_t i = strspn(text, "0123456789");
    bool ok = i > 0;
    if (ok && text[i] == '.') {
        size_t frac = strspn(text + i + 1, "0123456789");
        ok = frac > 0;
        i += 1 + frac;
    }
    double v = ok && text[i] == '\0' ? strtod(text, NULL) : -1.0;
    bool low = (f->flags & F_GT_MIN) ? v <= (double)f->min : v < (double)f->min;
    if (!ok || text[i] != '\0' || low || v > (double)f->max) {
        expected_error(ld, f, at);
        return;
    }
    *AT(base, f->offset, double) = v;
}

/* An idempotency key source: message_id, header:NAME or json:PATH. */
static void set_key_field(loader *ld, const field *f, void *base, const char *text,
                          const scalar_at *at)
{
    int source;
    const char *arg = NULL;
    char *copy = NULL;
    if (strcmp(text, "message_id") == 0) {
        source = WR_KEY_MESSAGE_ID;
    } else if (strncmp(text, "header:", 7) == 0 && text[7] != '\0') {
        source = WR_KEY_HEADER;
        arg = text + 7;
        if (strlen(arg) > AMQP_SHORTSTR) {
            err_at(ld, at->line, at->col,
                   "%s: the header name must be at most %d bytes long, got %zu bytes", at->path,
                   AMQP_SHORTSTR, strlen(arg));
            return;
        }
    } else if (strncmp(text, "json:", 5) == 0) {
        source = WR_KEY_JSON;
        arg = text + 5;
        if (!valid_json_path(arg)) {
            char gotpath[GOT_MAX];
            describe_value(f, arg, gotpath, sizeof(gotpath));
            err_at(ld, at->line, at->col,
                   "%s: invalid JSON path (names of letters, digits, '_' and '-', joined by "
                   "'.'), got %s",
                   at->path, gotpath);
            return;
        }
    } else {
        expected_error(ld, f, at);
        return;
    }
    if (arg != NULL && (copy = strdup(arg)) == NULL) {
        err_at(ld, at->line, at->col, "%s: out of memory", at->path);
        return;
    }
    free(*AT(base, f->arg_offset, char *));
    *AT(base, f->arg_offset, char *) = copy;
    *AT(base, f->offset, int) = source;
}

static void set_size_field(loader *ld, const field *f, void *base, const char *text,
                           const scalar_at *at)
{
    int64_t bytes;
    if (wr_units_parse_size(text, &bytes) != 0) {
        expected_error(ld, f, at);
        return;
    }
    if (bytes < f->min || bytes > f->max) {
        char lo[32], hi[32];
        wr_units_format_size(f->min, lo, sizeof(lo));
        wr_units_format_size(f->max, hi, sizeof(hi));
        err_at(ld, at->line, at->col, "%s: expected a size from %s to %s, got %s", at->path, lo, hi,
               at->got);
        return;
    }
    *AT(base, f->offset, int64_t) = bytes;
}

static void set_bool_field(loader *ld, const field *f, void *base, const char *text,
                           const scalar_at *at)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
                                      "YES",  "on",   "On",   "ON",  NULL};
    static const char *const no[] = {"false", "False", "FALSE", "no",  "No",
                                     "NO",    "off",   "Off",   "OFF", NULL};
    for (int i = 0; yes[i] != NULL; i++) {
        if (strcmp(text, yes[i]) == 0) {
            *AT(base, f->offset, int) = 1;
            return;
        }
        if (strcmp(text, no[i]) == 0) {
            *AT(base, f->offset, int) = 0;
            return;
        }
    }
    err_at(ld, at->line, at->col, "%s: expected true or false, got %s", at->path, at->got);
}

/* T_ENUM stores the value's index, T_ENUM_STR a copy of it. */
static void set_enum_field(loader *ld, const field *f, void *base, const char *text,
                           const scalar_at *at)
{
    for (int i = 0; f->enum_values[i] != NULL; i++) {
        if (strcmp(text, f->enum_values[i]) == 0) {
            if (f->type == T_ENUM) {
                *AT(base, f->offset, int) = i;
            } else if (!set_string(AT(base, f->offset, char *), text)) {
                err_at(ld, at->line, at->col, "%s: out of memory", at->path);
            }
            return;
        }
    }
    expected_error(ld, f, at);
}

static void set_amqp_url_field(loader *ld, const field *f, void *base, const char *text,
                               const scalar_at *at)
{
    const char *why;
    wr_amqp_url *u = AT(base, f->offset, wr_amqp_url);
    wr_amqp_url_clear(u);
    if (wr_amqp_url_parse(text, u, &why) != 0) {
        url_error(ld, at->line, at->col, at->path, "AMQP", text, why);
    }
}

static void set_redis_url_field(loader *ld, const field *f, void *base, const char *text,
                                const scalar_at *at)
{
    const char *why;
    wr_redis_url *u = AT(base, f->offset, wr_redis_url);
    wr_redis_url_clear(u);
    if (wr_redis_url_parse(text, u, &why) != 0) {
        url_error(ld, at->line, at->col, at->path, "Redis", text, why);
    }
}

/* How each scalar type is read from its text; NULL for the types that are
 * not scalars (lists, sections: set_node walks them). */
typedef void (*scalar_setter)(loader *ld, const field *f, void *base, const char *text,
                              const scalar_at *at);
static const scalar_setter scalar_setters[] = {
    [T_STRING] = set_string_field,     [T_PATH] = set_path_field,
    [T_INT] = set_int_field,           [T_DURATION] = set_duration_field,
    [T_SIZE] = set_size_field,         [T_BOOL] = set_bool_field,
    [T_ENUM] = set_enum_field,         [T_ENUM_STR] = set_enum_field,
    [T_NUMBER] = set_number_field,     [T_KEY] = set_key_field,
    [T_AMQP_URL] = set_amqp_url_field, [T_REDIS_URL] = set_redis_url_field,
};

/*
 * Interpret one (already expanded) scalar TEXT for field F and store it in
 * BASE. LINE/COL locate it for messages; PATH is the dotted key. Defaults go
 * through here too, written as text, so they obey the same rules.
 */
static void set_scalar(loader *ld, const field *f, void *base, const char *text, int line, int col,
                       const char *path)
{
    char got[GOT_MAX];
    describe_value(f, text, got, sizeof(got));
    scalar_at at = {.line = line, .col = col, .path = path, .got = got};
    size_t n = sizeof(scalar_setters) / sizeof(scalar_setters[0]);
    if ((size_t)f->type < n && scalar_setters[f->type] != NULL) {
        scalar_setters[f->type](ld, f, base, text, &at);
    }
}

/*
 * Count one more value visited at NODE (PATH). Past MAX_VALUES the walk
 * stops: without this, a few KB of nested YAML aliases (a list of aliases
 * to a list of aliases...) stand for billions of values. Returns false, with
 * the error recorded once, when the budget is spent.
 */
static bool spend(loader *ld, yaml_node_t *node, const char *path)
{
    if (ld->exhausted) {
        return false;
    }
    if (++ld->values > MAX_VALUES) {
        ld->exhausted = true;
        err_at(ld, NODE_LINE(node), NODE_COL(node),
               "%s: more than %d values in all (a YAML alias counts once per use)", path,
               MAX_VALUES);
        return false;
    }
    return true;
}

/* True when scalar NODE holds a NUL byte: C strings would end there, silently. */
static bool has_nul(const yaml_node_t *node)
{
    return node->type == YAML_SCALAR_NODE &&
           strlen((const char *)node->data.scalar.value) != node->data.scalar.length;
}

/*
 * Expand a scalar node's text from the environment; NULL (error recorded) on
 * failure, also for a value holding a NUL byte (YAML's "\0" escape).
 */
static char *expanded_scalar(loader *ld, yaml_node_t *node, const char *path)
{
    char *out, *err;
    const char *text = is_null_scalar(node) ? "" : (const char *)node->data.scalar.value;

    if (has_nul(node)) {
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: contains a NUL byte (\\0)", path);
        return NULL;
    }
    err = wr_env_expand(text, &out);
    if (err != NULL) {
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: %s", path, err);
        free(err);
        return NULL;
    }
    return out;
}

static void walk_mapping(loader *ld, const section *sec, void *base, yaml_node_t *node,
                         const char *path);
static void apply_missing(loader *ld, const field *f, void *base, yaml_node_t *map,
                          const char *path);

/*
 * Read a string list: a sequence of scalars, or one scalar standing for a
 * list of one. Items are expanded and bounded like strings (f->max bytes).
 */
static void set_strlist(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    char ***listp = AT(base, f->offset, char **);
    int *countp = AT(base, f->count_offset, int);
    yaml_node_item_t *items = NULL;
    int n;

    if (node->type == YAML_SCALAR_NODE && !is_null_scalar(node)) {
        n = 1;
    } else if (node->type == YAML_SEQUENCE_NODE) {
        items = node->data.sequence.items.start;
        n = (int)(node->data.sequence.items.top - items);
    } else {
        kind_error(ld, f, node, path);
        return;
    }
    if (n < f->min) {
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: expected a non-empty list", path);
        return;
    }
    char **list = calloc((size_t)n + 1, sizeof(char *));
    if (list == NULL) {
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: out of memory", path);
        return;
    }
    *listp = list;
    *countp = n;
    for (int i = 0; i < n; i++) {
        yaml_node_t *item = items != NULL ? yaml_document_get_node(ld->doc, items[i]) : node;
        char ipath[PATH_BUF];
        if (items != NULL) {
            make_path(ipath, "%s[%d]", path, i);
        } else {
            make_path(ipath, "%s", path);
        }
        if (items != NULL && !spend(ld, item, ipath)) {
            return;
        }
        if (item->type != YAML_SCALAR_NODE) {
            err_at(ld, NODE_LINE(item), NODE_COL(item), "%s: expected a string, got %s", ipath,
                   node_kind(item));
            continue;
        }
        char *text = expanded_scalar(ld, item, ipath);
        if (text == NULL) {
            continue;
        }
        if ((int64_t)strlen(text) > f->max) {
            err_at(ld, NODE_LINE(item), NODE_COL(item),
                   "%s: must be at most %lld bytes long, got %zu bytes", ipath, (long long)f->max,
                   strlen(text));
            free(text);
            continue;
        }
        list[i] = text;
    }
}

/*
 * Read a list of durations (a sequence, never a lone scalar) into a malloc'd
 * array: one item at least, f->max_count at most, each bounded like a
 * T_DURATION by f->min and f->max.
 */
static void set_durlist(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    int64_t **listp = AT(base, f->offset, int64_t *);
    field item = *f;
    yaml_node_item_t *items;
    int n;

    if (node->type != YAML_SEQUENCE_NODE) {
        kind_error(ld, f, node, path);
        return;
    }
    items = node->data.sequence.items.start;
    n = (int)(node->data.sequence.items.top - items);
    if (n == 0) {
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: expected a non-empty list", path);
        return;
    }
    if (n > f->max_count) {
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: must have at most %d entries, got %d",
               path, f->max_count, n);
        return;
    }
    int64_t *list = calloc((size_t)n, sizeof(int64_t));
    if (list == NULL) {
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: out of memory", path);
        return;
    }
    free(*listp);
    *listp = list;
    *AT(base, f->count_offset, int) = n;
    /* Each item is read as a T_DURATION stored straight into its slot. */
    item.type = T_DURATION;
    item.offset = 0;
    item.flags &= ~F_NONE;
    for (int i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(ld->doc, items[i]);
        char ipath[PATH_BUF];
        make_path(ipath, "%s[%d]", path, i);
        if (!spend(ld, it, ipath)) {
            return;
        }
        if (it->type != YAML_SCALAR_NODE) {
            kind_error(ld, &item, it, ipath);
            continue;
        }
        char *text = expanded_scalar(ld, it, ipath);
        if (text != NULL) {
            set_scalar(ld, &item, &list[i], text, NODE_LINE(it), NODE_COL(it), ipath);
            free(text);
        }
    }
}

/* Where the fields of section F live, given BASE, the struct holding F itself. */
static void *section_base(loader *ld, const field *f, void *base)
{
    return f->locate != NULL ? f->locate(ld) : (char *)base + f->offset;
}

/* Mark field F in BASE as not set (F_MERGE fields); pointers are unset when NULL. */
static void mark_unset(const field *f, void *base)
{
    switch (f->type) {
    case T_INT:
    case T_BOOL:
    case T_ENUM:
    case T_KEY:
        *AT(base, f->offset, int) = -1;
        break;
    case T_DURATION:
        *AT(base, f->offset, int64_t) = -1;
        break;
    case T_NUMBER:
        *AT(base, f->offset, double) = -1.0;
        break;
    default:
        break;
    }
}

/* Mark every F_MERGE field of SEC in BASE unset, nested sections included. */
static void mark_unset_fields(const section *sec, void *base)
{
    for (size_t i = 0; i < sec->nfields; i++) {
        const field *f = &sec->fields[i];
        if (f->type == T_SECTION && f->locate == NULL) {
            mark_unset_fields(f->sub, (char *)base + f->offset);
        } else if (f->flags & F_MERGE) {
            mark_unset(f, base);
        }
    }
}

/* Read a list of mappings into a calloc'd element array, each walked against f->sub. */
static void set_list(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    const section *sec = f->sub;
    yaml_node_item_t *items;
    int n;

    if (node->type != YAML_SEQUENCE_NODE) {
        kind_error(ld, f, node, path);
        return;
    }
    items = node->data.sequence.items.start;
    n = (int)(node->data.sequence.items.top - items);
    if (n < f->min) {
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: expected a non-empty list", path);
        return;
    }
    if (f->max > 0 && n > f->max) {
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: must have at most %lld entries, got %d",
               path, (long long)f->max, n);
        return;
    }
    if (n == 0) {
        return;
    }
    char *elems = calloc((size_t)n, sec->elem_size);
    if (elems == NULL) {
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: out of memory", path);
        return;
    }
    *AT(base, f->offset, void *) = elems;
    *AT(base, f->count_offset, int) = n;
    for (int i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(ld->doc, items[i]);
        char ipath[PATH_BUF];
        make_path(ipath, "%s[%d]", path, i);
        if (!spend(ld, item, ipath)) {
            return;
        }
        if (item->type != YAML_MAPPING_NODE) {
            err_at(ld, NODE_LINE(item), NODE_COL(item), "%s: expected a mapping, got %s", ipath,
                   node_kind(item));
            continue;
        }
        walk_mapping(ld, sec, elems + (size_t)i * sec->elem_size, item, ipath);
        if (sec->finish != NULL) {
            sec->finish(ld, elems, i, item, ipath);
        }
    }
}

/*
 * Read a mapping of names to mappings (the named breakers) into a calloc'd
 * element array, each value walked against f->sub, and a parallel array of
 * the names (malloc'd), both in file order. A name is checked like a
 * subscription name (and reported at the key); a name given twice is a
 * duplicate key, reported like any other.
 */
static void set_named(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    static const field name_field = {
        .name = "name", .type = T_STRING, .min = 1, .max = 128, .flags = F_IDENT | F_KEYNAME};
    const section *sec = f->sub;
    yaml_node_pair_t *pairs;
    int n;

    if (node->type != YAML_MAPPING_NODE) {
        kind_error(ld, f, node, path);
        return;
    }
    pairs = node->data.mapping.pairs.start;
    n = (int)(node->data.mapping.pairs.top - pairs);
    if (f->max > 0 && n > f->max) {
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: must have at most %lld entries, got %d",
               path, (long long)f->max, n);
        return;
    }
    if (n == 0) {
        return;
    }
    char *elems = calloc((size_t)n, sec->elem_size);
    char **names = calloc((size_t)n, sizeof(char *));
    if (elems == NULL || names == NULL) {
        free(elems);
        free(names);
        err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: out of memory", path);
        return;
    }
    *AT(base, f->offset, void *) = elems;
    *AT(base, f->arg_offset, char **) = names;
    *AT(base, f->count_offset, int) = n;
    for (int i = 0; i < n; i++) {
        yaml_node_t *key = yaml_document_get_node(ld->doc, pairs[i].key);
        yaml_node_t *value = yaml_document_get_node(ld->doc, pairs[i].value);
        void *elem = elems + (size_t)i * sec->elem_size;
        yaml_node_t *first = NULL;
        char sub[PATH_BUF];

        mark_unset_fields(sec, elem);
        if (!spend(ld, key, path)) {
            return;
        }
        if (key->type != YAML_SCALAR_NODE) {
            err_at(ld, NODE_LINE(key), NODE_COL(key), "expected a string key in %s, got %s", path,
                   node_kind(key));
            continue;
        }
        if (has_nul(key)) {
            err_at(ld, NODE_LINE(key), NODE_COL(key), "a key in %s contains a NUL byte (\\0)",
                   path);
            continue;
        }
        const char *name = (const char *)key->data.scalar.value;
        for (int j = 0; j < i && first == NULL; j++) {
            yaml_node_t *k = yaml_document_get_node(ld->doc, pairs[j].key);
            if (k->type == YAML_SCALAR_NODE &&
                strcmp((const char *)k->data.scalar.value, name) == 0) {
                first = k;
            }
        }
        if (first != NULL) {
            char shown[KEY_ECHO_MAX + 4];
            wr_str_printable(name, strlen(name), KEY_ECHO_MAX, shown);
            err_at(ld, NODE_LINE(key), NODE_COL(key), "duplicate key '%s' in %s (first at %d:%d)",
                   shown, path, NODE_LINE(first), NODE_COL(first));
            continue;
        }
        set_scalar(ld, &name_field, &names[i], name, NODE_LINE(key), NODE_COL(key), path);
        char shown[KEY_ECHO_MAX + 4];
        wr_str_printable(name, strlen(name), KEY_ECHO_MAX, shown);
        join_key(sub, path, shown);
        if (value->type != YAML_MAPPING_NODE) {
            err_at(ld, NODE_LINE(value), NODE_COL(value), "%s: expected a mapping, got %s", sub,
                   node_kind(value));
            continue;
        }
        walk_mapping(ld, sec, elem, value, sub);
        if (sec->finish != NULL) {
            sec->finish(ld, elems, i, value, sub);
        }
    }
}

/* Store NODE as the value of field F (path PATH) in BASE, whatever the field's type. */
static void set_node(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    if (!spend(ld, node, path)) {
        return;
    }
    switch (f->type) {
    case T_SECTION: {
        if (node->type != YAML_MAPPING_NODE) {
            kind_error(ld, f, node, path);
            return;
        }
        void *sbase = section_base(ld, f, base);
        walk_mapping(ld, f->sub, sbase, node, path);
        if (f->sub->finish != NULL) {
            f->sub->finish(ld, sbase, 0, node, path);
        }
        return;
    }
    case T_LIST:
        set_list(ld, f, base, node, path);
        return;
    case T_NAMED:
        set_named(ld, f, base, node, path);
        return;
    case T_STRLIST:
        set_strlist(ld, f, base, node, path);
        return;
    case T_DURLIST:
        set_durlist(ld, f, base, node, path);
        return;
    default:
        break;
    }
    if (node->type != YAML_SCALAR_NODE) {
        kind_error(ld, f, node, path);
        return;
    }
    if (quoted_literal(f, node)) {
        /* "6" is a string in YAML: a number or a boolean is written bare, as every
         * other tool reading the file (kubectl, yq, an editor's schema) takes it */
        char want[128];
        expected_phrase(f, want, sizeof(want));
        err_at(ld, NODE_LINE(node), NODE_COL(node),
               "%s: expected %s, got the quoted string %c%s%c (write it without quotes)", path,
               want, node->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ? '\'' : '"',
               (const char *)node->data.scalar.value,
               node->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ? '\'' : '"');
        return;
    }
    char *text = expanded_scalar(ld, node, path);
    if (text != NULL) {
        set_scalar(ld, f, base, text, NODE_LINE(node), NODE_COL(node), path);
        free(text);
    }
}

/*
 * A field that MAP (the mapping being walked; NULL when the whole section is
 * absent) does not set: required ones are reported at the mapping's start,
 * sections get their own defaults, inherited ones are marked unset (-1) for
 * the final pass, merged ones stay unset (walk_mapping marked them), and the
 * rest take their default.
 */
static void apply_missing(loader *ld, const field *f, void *base, yaml_node_t *map,
                          const char *path)
{
    if ((f->flags & F_REQUIRED) && map != NULL) {
        err_at(ld, NODE_LINE(map), NODE_COL(map), "missing required key '%s' %s%s", f->name,
               path[0] != '\0' ? "in " : "at the top level", path);
    }
    if (f->type == T_SECTION) {
        char sub[PATH_BUF];
        void *sbase = section_base(ld, f, base);
        join_key(sub, path, f->name);
        for (size_t i = 0; i < f->sub->nfields; i++) {
            apply_missing(ld, &f->sub->fields[i], sbase, NULL, sub);
        }
    } else if (f->flags & F_MERGE) {
        return;
    } else if (f->flags & F_INHERIT) {
        if (f->type == T_DURATION || f->type == T_SIZE) {
            *AT(base, f->offset, int64_t) = -1;
        } else {
            *AT(base, f->offset, int) = -1;
        }
    } else if (f->def != NULL) {
        char key[PATH_BUF];
        join_key(key, path, f->name);
        set_scalar(ld, f, base, f->def, 0, 0, key);
    }
}

static int find_field(const section *sec, const char *name)
{
    for (size_t i = 0; i < sec->nfields; i++) {
        if (strcmp(sec->fields[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/*
 * Walk mapping NODE against SEC, storing into BASE. Reports keys that are not
 * strings, unknown keys (listing the known ones), keys given twice, and, once
 * every pair is seen, required keys that are missing; fills defaults for the
 * rest.
 */
static void walk_mapping(loader *ld, const section *sec, void *base, yaml_node_t *node,
                         const char *path)
{
    yaml_node_t *seen[MAX_FIELDS] = {0};
    const char *where = path[0] != '\0' ? "in " : "at the top level";

    /* Merged fields start unset, so a value that fails to parse stays unset too. */
    mark_unset_fields(sec, base);
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = yaml_document_get_node(ld->doc, pair->key);
        yaml_node_t *value = yaml_document_get_node(ld->doc, pair->value);
        char sub[PATH_BUF];
        if (ld->exhausted) {
            return;
        }
        if (key->type != YAML_SCALAR_NODE) {
            err_at(ld, NODE_LINE(key), NODE_COL(key), "expected a string key %s%s, got %s", where,
                   path, node_kind(key));
            continue;
        }
        if (has_nul(key)) {
            err_at(ld, NODE_LINE(key), NODE_COL(key), "a key %s%s contains a NUL byte (\\0)", where,
                   path);
            continue;
        }
        const char *name = (const char *)key->data.scalar.value;
        int i = find_field(sec, name);
        if (i < 0) {
            char known[512];
            size_t used = 0;
            known[0] = '\0';
            for (size_t k = 0; k < sec->nfields && used < sizeof(known); k++) {
                used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s",
                                         k > 0 ? ", " : "", sec->fields[k].name);
            }
            char shown[KEY_ECHO_MAX + 4];
            wr_str_printable(name, strlen(name), KEY_ECHO_MAX, shown);
            err_at(ld, NODE_LINE(key), NODE_COL(key), "unknown key '%s' %s%s (expected one of: %s)",
                   shown, where, path, known);
            continue;
        }
        if (seen[i] != NULL) {
            err_at(ld, NODE_LINE(key), NODE_COL(key), "duplicate key '%s' %s%s (first at %d:%d)",
                   name, where, path, NODE_LINE(seen[i]), NODE_COL(seen[i]));
            continue;
        }
        seen[i] = key;
        join_key(sub, path, name);
        set_node(ld, &sec->fields[i], base, value, sub);
    }
    for (size_t i = 0; i < sec->nfields && !ld->exhausted; i++) {
        if (seen[i] == NULL) {
            apply_missing(ld, &sec->fields[i], base, node, path);
        }
    }
}

/* The value node for KEY in mapping MAP, or NULL. */
static yaml_node_t *find_value(loader *ld, yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, pair->key);
        if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0) {
            return yaml_document_get_node(ld->doc, pair->value);
        }
    }
    return NULL;
}

/*
 * After the amqp section is walked: TLS files need an amqps:// URL (with
 * amqp:// they would be ignored and the password sent in the clear), and a
 * client certificate comes with its key.
 */
static void parse_alt_urls(loader *ld, wr_config *cfg, yaml_node_t *list, const char *path);

static void finish_amqp(loader *ld, void *base, int index, yaml_node_t *node, const char *path)
{
    wr_config *cfg = base;
    yaml_node_t *tls = find_value(ld, node, "tls");
    (void)index;
    parse_alt_urls(ld, cfg, find_value(ld, node, "urls"), path);
    if (tls == NULL || tls->type != YAML_MAPPING_NODE) {
        return;
    }
    if (cfg->amqp.url != NULL && !cfg->amqp.ssl) {
        err_at(ld, NODE_LINE(tls), NODE_COL(tls),
               "%s.tls: TLS files are set but %s.url is not an amqps:// URL", path, path);
    }
    if ((cfg->amqp_tls.cert == NULL) != (cfg->amqp_tls.key == NULL) &&
        find_value(ld, tls, cfg->amqp_tls.cert == NULL ? "cert" : "key") == NULL) {
        err_at(ld, NODE_LINE(tls), NODE_COL(tls), "%s.tls: cert and key go together: %s is missing",
               path, cfg->amqp_tls.cert == NULL ? "cert" : "key");
    }
}

/*
 * amqp.urls: parse each into cfg->amqp_alts, errors at the item (masked like
 * amqp.url's). The TLS files of amqp.tls apply to every node.
 */
static void parse_alt_urls(loader *ld, wr_config *cfg, yaml_node_t *list, const char *path)
{
    int n = cfg->amqp_url_text_count;
    if (n <= 0 || list == NULL) {
        return;
    }
    cfg->amqp_alts = calloc((size_t)n, sizeof(*cfg->amqp_alts));
    if (cfg->amqp_alts == NULL) {
        err_at(ld, NODE_LINE(list), NODE_COL(list), "%s.urls: out of memory", path);
        return;
    }
    cfg->amqp_alt_count = n;
    for (int i = 0; i < n; i++) {
        const char *why;
        yaml_node_t *v = list;
        if (list->type == YAML_SEQUENCE_NODE &&
            list->data.sequence.items.start + i < list->data.sequence.items.top) {
            v = yaml_document_get_node(ld->doc, list->data.sequence.items.start[i]);
        }
        if (cfg->amqp_url_texts[i] == NULL) {
            continue; /* not a string: the list's own check said so */
        }
        if (wr_amqp_url_parse(cfg->amqp_url_texts[i], &cfg->amqp_alts[i], &why) != 0) {
            char ipath[PATH_BUF];
            make_path(ipath, "%s.urls[%d]", path, i);
            url_error(ld, NODE_LINE(v), NODE_COL(v), ipath, "AMQP", cfg->amqp_url_texts[i], why);
        } else if (cfg->amqp.url != NULL && cfg->amqp_alts[i].ssl != cfg->amqp.ssl) {
            err_at(ld, NODE_LINE(v), NODE_COL(v),
                   "%s.urls[%d]: every node takes the same scheme as %s.url (%s)", path, i, path,
                   cfg->amqp.ssl ? "amqps://" : "amqp://");
        }
    }
}

const wr_amqp_url *wr_config_amqp_url(const wr_config *cfg, int i)
{
    int n = 1 + cfg->amqp_alt_count;
    int k = ((i % n) + n) % n;
    return k == 0 ? &cfg->amqp : &cfg->amqp_alts[k - 1];
}

/*
 * After the redis section is walked: sentinels and master_name go together,
 * each sentinel is HOST:PORT, and WAIT's timeout stays below the command
 * timeout (a WAIT that outlasts it would be read as a dead connection).
 */
static void finish_redis(loader *ld, void *base, int index, yaml_node_t *node, const char *path)
{
    const wr_config *cfg = base;
    (void)index;
    yaml_node_t *sn = find_value(ld, node, "sentinels");
    yaml_node_t *mn = find_value(ld, node, "master_name");
    if (sn != NULL && mn == NULL) {
        err_at(ld, NODE_LINE(sn), NODE_COL(sn), "%s.sentinels: needs %s.master_name too", path,
               path);
    } else if (mn != NULL && sn == NULL) {
        err_at(ld, NODE_LINE(mn), NODE_COL(mn), "%s.master_name: needs %s.sentinels too", path,
               path);
    }
    for (int i = 0; i < cfg->redis_sentinel_count; i++) {
        const char *s = cfg->redis_sentinels[i];
        const char *colon = strrchr(s, ':');
        char *end = NULL;
        long port = colon != NULL ? strtol(colon + 1, &end, 10) : 0;
        if (colon == NULL || colon == s || end == colon + 1 || *end != '\0' || port < 1 ||
            port > 65535) {
            yaml_node_t *v = sn;
            if (sn != NULL && sn->type == YAML_SEQUENCE_NODE &&
                sn->data.sequence.items.start + i < sn->data.sequence.items.top) {
                v = yaml_document_get_node(ld->doc, sn->data.sequence.items.start[i]);
            }
            err_at(ld, NODE_LINE(v), NODE_COL(v),
                   "%s.sentinels[%d]: expected HOST:PORT (such as 10.0.0.5:26379)", path, i);
        }
    }
    yaml_node_t *tn = find_value(ld, node, "min_replicas_timeout");
    if (cfg->redis_min_replicas > 0 && cfg->redis_timeout_ms > 0 &&
        cfg->redis_min_replicas_timeout_ms >= cfg->redis_timeout_ms) {
        yaml_node_t *v = tn != NULL ? tn : find_value(ld, node, "timeout");
        err_at(ld, NODE_LINE(v != NULL ? v : node), NODE_COL(v != NULL ? v : node),
               "%s.min_replicas_timeout (%lld ms) must be shorter than %s.timeout (%lld ms)", path,
               (long long)cfg->redis_min_replicas_timeout_ms, path,
               (long long)cfg->redis_timeout_ms);
    }
}

/* After the http section is walked: its listen address must parse. */
static void finish_http(loader *ld, void *base, int index, yaml_node_t *node, const char *path)
{
    const wr_config *cfg = base;
    char host[64];
    int port;
    const char *why;
    (void)index;
    if (cfg->http_listen != NULL &&
        wr_listen_parse(cfg->http_listen, host, sizeof(host), &port, &why) < 0) {
        yaml_node_t *v = find_value(ld, node, "listen");
        err_at(ld, NODE_LINE(v), NODE_COL(v), "%s.listen: %s", path, why);
    }
}

/*
 * After subscription INDEX is walked: remember where it starts, derive the
 * default dlq, and check what spans subscriptions (unique names and queues)
 * or fields (the dlq differs from the queue). Inherited values are filled in
 * later, once the defaults section is known wherever it sits in the file.
 */
/* An `ordering` section turns ordering on; a message_id is unique per message,
 * so it cannot order anything. */
static void finish_ordering(loader *ld, void *base, int index, yaml_node_t *node, const char *path)
{
    (void)index;
    wr_ordering_policy *o = base;
    o->enabled = 1;
    yaml_node_t *v = find_value(ld, node, "key");
    if (v != NULL && v->type == YAML_SCALAR_NODE &&
        strcmp((const char *)v->data.scalar.value, "message_id") == 0) {
        err_at(ld, NODE_LINE(v), NODE_COL(v),
               "%s.key: expected header:NAME or json:PATH (a message_id is unique per message "
               "and orders nothing), got message_id",
               path);
    }
}

/* A gate: its key is not the message_id, and a type does not wait for itself. */
static void finish_gate(loader *ld, void *elems, int index, yaml_node_t *node, const char *path)
{
    wr_gate *g = &((wr_gate *)elems)[index];
    g->line = NODE_LINE(node);
    g->col = NODE_COL(node);
    yaml_node_t *v = find_value(ld, node, "key");
    if (v != NULL && v->type == YAML_SCALAR_NODE &&
        strcmp((const char *)v->data.scalar.value, "message_id") == 0) {
        err_at(ld, NODE_LINE(v), NODE_COL(v),
               "%s.key: expected header:NAME or json:PATH (a message_id is unique per message "
               "and names no predecessor), got message_id",
               path);
    }
    v = find_value(ld, node, "after");
    if (v != NULL && g->type != NULL && g->after != NULL && strcmp(g->type, g->after) == 0) {
        err_at(ld, NODE_LINE(v), NODE_COL(v), "%s.after: a type cannot wait for itself ('%s')",
               path, g->after);
    }
}

/*
 * Gates, once the policies are merged: they need the idempotency records
 * (the done mark rides on them), and each gate's `after` type must reach the
 * queue through one of its bindings (read as a routing key; a queue without
 * bindings is consumed as it is, and cannot be checked).
 */
static void check_gates(loader *ld, wr_config *cfg, yaml_node_t *root)
{
    yaml_node_t *subs = find_value(ld, root, "subscriptions");
    if (subs == NULL || subs->type != YAML_SEQUENCE_NODE || cfg->subs == NULL ||
        subs->data.sequence.items.top - subs->data.sequence.items.start != cfg->sub_count) {
        return;
    }
    for (int i = 0; i < cfg->sub_count; i++) {
        const wr_subscription *s = &cfg->subs[i];
        yaml_node_t *item = yaml_document_get_node(ld->doc, subs->data.sequence.items.start[i]);
        yaml_node_t *gates = item->type == YAML_MAPPING_NODE ? find_value(ld, item, "gates") : NULL;
        if (s->gate_count == 0 || gates == NULL) {
            continue;
        }
        if (s->idem.enabled != 1) {
            err_at(ld, NODE_LINE(gates), NODE_COL(gates),
                   "subscriptions[%d].gates: need idempotency.enabled (the done mark a gate waits "
                   "for is written with the idempotency record)",
                   i);
            continue;
        }
        for (int g = 0; g < s->gate_count && s->binding_count > 0; g++) {
            const wr_gate *gt = &s->gates[g];
            if (gt->after == NULL || wr_gates_routed(s, gt->after)) {
                continue;
            }
            yaml_node_t *gn = yaml_document_get_node(ld->doc, gates->data.sequence.items.start[g]);
            yaml_node_t *v = find_value(ld, gn, "after");
            err_at(ld, v ? NODE_LINE(v) : gt->line, v ? NODE_COL(v) : gt->col,
                   "subscriptions[%d].gates[%d].after: no binding of queue '%s' routes '%s': "
                   "the gate would wait for a type that never comes",
                   i, g, s->queue, gt->after);
        }
    }
}

static void finish_subscription(loader *ld, void *elems, int index, yaml_node_t *node,
                                const char *path)
{
    wr_subscription *subs = elems, *s = &subs[index];
    yaml_node_t *v;

    s->line = NODE_LINE(node);
    s->col = NODE_COL(node);
    if (s->dlq == NULL && s->queue != NULL) {
        if (strlen(s->queue) + 4 > AMQP_SHORTSTR) {
            v = find_value(ld, node, "queue");
            err_at(ld, NODE_LINE(v), NODE_COL(v),
                   "%s.queue: the default dlq '<queue>.dlq' would be longer than %d bytes "
                   "(set dlq)",
                   path, AMQP_SHORTSTR);
        } else {
            s->dlq = wr_str_format("%s.dlq", s->queue);
        }
    } else if (s->dlq != NULL && s->queue != NULL && strcmp(s->dlq, s->queue) == 0) {
        v = find_value(ld, node, "dlq");
        err_at(ld, NODE_LINE(v), NODE_COL(v), "%s.dlq: must differ from the queue", path);
    }
    if (s->partitions > 0 && !s->ordering.enabled) {
        v = find_value(ld, node, "partitions");
        err_at(ld, NODE_LINE(v), NODE_COL(v),
               "%s.partitions: needs ordering.key (a message's partition is chosen by its "
               "ordering key)",
               path);
    } else if (s->partitions > 0 && s->queue != NULL &&
               strlen(s->queue) + strlen(".partitions") > AMQP_SHORTSTR) {
        v = find_value(ld, node, "queue");
        err_at(ld, NODE_LINE(v), NODE_COL(v),
               "%s.queue: the partition exchange '<queue>.partitions' would be longer than %d "
               "bytes",
               path, AMQP_SHORTSTR);
    }
    for (int j = 0; j < index; j++) {
        if (s->name != NULL && subs[j].name != NULL && strcmp(s->name, subs[j].name) == 0) {
            char q[16];
            quote_if_short(s->name, q, sizeof(q));
            v = find_value(ld, node, "name");
            err_at(ld, NODE_LINE(v), NODE_COL(v),
                   "%s.name: duplicate subscription name%s (also at %d:%d)", path, q, subs[j].line,
                   subs[j].col);
            break;
        }
    }
    for (int j = 0; j < index; j++) {
        if (s->queue != NULL && subs[j].queue != NULL && strcmp(s->queue, subs[j].queue) == 0) {
            char q[16];
            quote_if_short(s->queue, q, sizeof(q));
            v = find_value(ld, node, "queue");
            err_at(ld, NODE_LINE(v), NODE_COL(v),
                   "%s.queue: queue%s is already consumed by subscriptions[%d] (at %d:%d)", path, q,
                   j, subs[j].line, subs[j].col);
            break;
        }
    }
}

/*
 * After a retry mapping is walked: delays and backoff exclude each other.
 * The error points at whichever of the two keys comes second.
 */
static void finish_retry(loader *ld, void *elems, int index, yaml_node_t *node, const char *path)
{
    const char *first = NULL;

    (void)elems;
    (void)index;
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = yaml_document_get_node(ld->doc, pair->key);
        if (key->type != YAML_SCALAR_NODE) {
            continue;
        }
        const char *name = (const char *)key->data.scalar.value;
        if (strcmp(name, "delays") != 0 && strcmp(name, "backoff") != 0) {
            continue;
        }
        if (first == NULL) {
            first = name;
        } else if (strcmp(first, name) != 0) {
            err_at(ld, NODE_LINE(key), NODE_COL(key), "%s: set either delays or backoff, not both",
                   path);
            return;
        }
    }
}

/* The public name of wr_units_parse_duration (config.h). */
int wr_config_parse_duration(const char *text, int64_t *ms)
{
    return wr_units_parse_duration(text, ms);
}

/* ------------------------------------------------------------------------ */
/* Merging retry, idempotency and breaker over the defaults                   */
/* ------------------------------------------------------------------------ */

/* True when F_MERGE field F holds a value in BASE (see mark_unset). */
static bool is_set(const field *f, void *base)
{
    switch (f->type) {
    case T_INT:
    case T_BOOL:
    case T_ENUM:
    case T_KEY:
        return *AT(base, f->offset, int) >= 0;
    case T_DURATION:
        return *AT(base, f->offset, int64_t) >= 0;
    case T_NUMBER:
        return *AT(base, f->offset, double) >= 0.0;
    case T_STRING:
        return *AT(base, f->offset, char *) != NULL;
    case T_DURLIST:
        return *AT(base, f->offset, int64_t *) != NULL;
    default:
        return false;
    }
}

/* Copy F_MERGE field F from SRC to DST (where it is unset); PATH names it for errors. */
static void copy_value(loader *ld, const field *f, void *dst, void *src, const char *path)
{
    switch (f->type) {
    case T_INT:
    case T_BOOL:
    case T_ENUM:
        *AT(dst, f->offset, int) = *AT(src, f->offset, int);
        return;
    case T_DURATION:
        *AT(dst, f->offset, int64_t) = *AT(src, f->offset, int64_t);
        return;
    case T_NUMBER:
        *AT(dst, f->offset, double) = *AT(src, f->offset, double);
        return;
    case T_STRING:
        if (!set_string(AT(dst, f->offset, char *), *AT(src, f->offset, char *))) {
            err_at(ld, 0, 0, "%s: out of memory", path);
        }
        return;
    case T_KEY: {
        const char *arg = *AT(src, f->arg_offset, char *);
        if (arg != NULL && !set_string(AT(dst, f->arg_offset, char *), arg)) {
            err_at(ld, 0, 0, "%s: out of memory", path);
            return;
        }
        *AT(dst, f->offset, int) = *AT(src, f->offset, int);
        return;
    }
    case T_DURLIST: {
        int n = *AT(src, f->count_offset, int);
        int64_t *list = malloc((size_t)n * sizeof(int64_t));
        if (list == NULL) {
            err_at(ld, 0, 0, "%s: out of memory", path);
            return;
        }
        memcpy(list, *AT(src, f->offset, int64_t *), (size_t)n * sizeof(int64_t));
        *AT(dst, f->offset, int64_t *) = list;
        *AT(dst, f->count_offset, int) = n;
        return;
    }
    default:
        return;
    }
}

/*
 * Give F_MERGE field F in BASE its built-in default, f->def. Scalars go
 * through set_scalar like any value; a T_DURLIST default is written as a
 * YAML flow list of durations, "[1s, 5s]".
 */
static void set_default(loader *ld, const field *f, void *base, const char *path)
{
    if (f->type != T_DURLIST) {
        set_scalar(ld, f, base, f->def, 0, 0, path);
        return;
    }
    int n = 1;
    for (const char *p = f->def; *p != '\0'; p++) {
        n += *p == ',';
    }
    int64_t *list = calloc((size_t)n, sizeof(int64_t));
    if (list == NULL) {
        err_at(ld, 0, 0, "%s: out of memory", path);
        return;
    }
    const char *p = f->def + strspn(f->def, "[ ");
    for (int i = 0; i < n; i++) {
        size_t len = strcspn(p, ", ]");
        char item[32];
        snprintf(item, sizeof(item), "%.*s", (int)len, p);
        if (wr_units_parse_duration(item, &list[i]) != 0) {
            err_at(ld, 0, 0, "%s: bad built-in default '%s'", path, f->def);
        }
        p += len;
        p += strspn(p, ", ]");
    }
    *AT(base, f->offset, int64_t *) = list;
    *AT(base, f->count_offset, int) = n;
}

/*
 * Fill the unset F_MERGE fields of SEC in DST, key by key: from SRC where it
 * has the key set (SRC NULL: nowhere), otherwise from the built-in default.
 */
static void merge_fields(loader *ld, const section *sec, void *dst, void *src, const char *path)
{
    for (size_t i = 0; i < sec->nfields; i++) {
        const field *f = &sec->fields[i];
        char key[PATH_BUF];
        join_key(key, path, f->name);
        if (f->type == T_SECTION) {
            merge_fields(ld, f->sub, (char *)dst + f->offset,
                         src != NULL ? (char *)src + f->offset : NULL, key);
        } else if (!(f->flags & F_MERGE) || is_set(f, dst)) {
            continue;
        } else if (src != NULL && is_set(f, src)) {
            copy_value(ld, f, dst, src, key);
        } else {
            set_default(ld, f, dst, key);
        }
    }
}

/* The value for KEY in MAP when both are mappings; otherwise NULL. */
static yaml_node_t *find_mapping(loader *ld, yaml_node_t *map, const char *key)
{
    yaml_node_t *v;
    if (map == NULL || map->type != YAML_MAPPING_NODE) {
        return NULL;
    }
    v = find_value(ld, map, key);
    return v != NULL && v->type == YAML_MAPPING_NODE ? v : NULL;
}

/*
 * Complete retry policy DST, read from mapping NODE (NULL when absent), over
 * SRC (the completed defaults; NULL for the defaults themselves). The kind,
 * delays or backoff, is the one NODE sets, else SRC's, else delays; the other
 * kind is dropped whole: no delays with backoff, built-in backoff values with
 * delays. Then checks backoff.max >= backoff.initial, blaming the key DST set
 * itself (a clash within the defaults is reported once, for the defaults).
 */
static void merge_retry(loader *ld, wr_retry_policy *dst, yaml_node_t *node, wr_retry_policy *src,
                        const char *path)
{
    bool own_initial = dst->initial_ms >= 0, own_max = dst->max_ms >= 0;
    bool backoff;
    char bpath[PATH_BUF];

    if (node != NULL && find_value(ld, node, "delays") != NULL) {
        backoff = false;
    } else if (node != NULL && find_value(ld, node, "backoff") != NULL) {
        backoff = true;
    } else {
        backoff = src != NULL && src->delays_ms == NULL;
    }
    merge_fields(ld, &retry_section, dst, src, path);
    join_key(bpath, path, "backoff");
    if (backoff) {
        free(dst->delays_ms);
        dst->delays_ms = NULL;
        dst->delay_count = 0;
    } else {
        mark_unset_fields(&backoff_section, dst);
        merge_fields(ld, &backoff_section, dst, NULL, bpath);
        return;
    }
    if (dst->max_ms >= dst->initial_ms || (!own_initial && !own_max)) {
        return;
    }
    /* Set here, so NODE has a backoff mapping; skip if one of the two failed to parse. */
    yaml_node_t *b = find_mapping(ld, node, "backoff");
    yaml_node_t *vi = b != NULL ? find_value(ld, b, "initial") : NULL;
    yaml_node_t *vm = b != NULL ? find_value(ld, b, "max") : NULL;
    char other[32];
    if (b == NULL || (vi != NULL && !own_initial) || (vm != NULL && !own_max)) {
        return;
    }
    if (own_max) {
        wr_units_format_duration(dst->initial_ms, other, sizeof(other));
        err_at(ld, NODE_LINE(vm), NODE_COL(vm), "%s.max: must be at least backoff.initial (%s)",
               bpath, other);
    } else {
        wr_units_format_duration(dst->max_ms, other, sizeof(other));
        err_at(ld, NODE_LINE(vi), NODE_COL(vi), "%s.initial: must be at most backoff.max (%s)",
               bpath, other);
    }
}

/*
 * Once the whole file is walked (the defaults may come after the
 * subscriptions): complete defaults.retry, defaults.idempotency and
 * defaults.breaker from the built-in defaults, then each named breaker and
 * each subscription's retry, idempotency and breaker from those, key by key.
 * Subscriptions or sections that are not mappings were reported already and
 * are skipped.
 */
static void merge_policies(loader *ld, wr_config *cfg, yaml_node_t *root)
{
    yaml_node_t *defaults = find_mapping(ld, root, "defaults");
    yaml_node_t *subs = find_value(ld, root, "subscriptions");

    merge_retry(ld, &ld->def_retry, find_mapping(ld, defaults, "retry"), NULL, "defaults.retry");
    merge_fields(ld, &idem_section, &ld->def_idem, NULL, "defaults.idempotency");
    merge_fields(ld, &breaker_section, &ld->def_breaker, NULL, "defaults.breaker");
    for (int i = 0; i < cfg->breaker_count; i++) {
        char path[PATH_BUF];
        make_path(path, "breakers.%s", cfg->breaker_names[i] ? cfg->breaker_names[i] : "?");
        merge_fields(ld, &breaker_section, &cfg->breakers[i], &ld->def_breaker, path);
    }
    if (subs == NULL || subs->type != YAML_SEQUENCE_NODE || cfg->subs == NULL ||
        subs->data.sequence.items.top - subs->data.sequence.items.start != cfg->sub_count) {
        return;
    }
    for (int i = 0; i < cfg->sub_count; i++) {
        yaml_node_t *item = yaml_document_get_node(ld->doc, subs->data.sequence.items.start[i]);
        wr_subscription *s = &cfg->subs[i];
        char path[PATH_BUF];
        yaml_node_t *v;
        if (item->type != YAML_MAPPING_NODE) {
            continue;
        }
        v = find_value(ld, item, "retry");
        if (v == NULL || v->type == YAML_MAPPING_NODE) {
            make_path(path, "subscriptions[%d].retry", i);
            merge_retry(ld, &s->retry, v, &ld->def_retry, path);
        }
        v = find_value(ld, item, "idempotency");
        if (v == NULL || v->type == YAML_MAPPING_NODE) {
            make_path(path, "subscriptions[%d].idempotency", i);
            merge_fields(ld, &idem_section, &s->idem, &ld->def_idem, path);
        }
        v = find_value(ld, item, "breaker");
        if (v == NULL || v->type == YAML_MAPPING_NODE) {
            make_path(path, "subscriptions[%d].breaker", i);
            merge_fields(ld, &breaker_section, &s->breaker, &ld->def_breaker, path);
        }
    }
}

/*
 * The final pass: subscriptions take the defaults they did not override
 * (fields marked F_INHERIT), and batch_size is clamped to prefetch, since a
 * batch can never hold more than the broker sends ahead.
 */
static void inherit_defaults(wr_config *cfg)
{
    for (int i = 0; i < cfg->sub_count; i++) {
        wr_subscription *s = &cfg->subs[i];
        for (size_t k = 0; k < subscription_section.nfields; k++) {
            const field *f = &subscription_section.fields[k];
            if (!(f->flags & F_INHERIT)) {
                continue;
            }
            if (f->type == T_DURATION || f->type == T_SIZE) {
                if (*AT(s, f->offset, int64_t) < 0) {
                    *AT(s, f->offset, int64_t) = *AT(cfg, f->inherit_offset, int64_t);
                }
            } else if (*AT(s, f->offset, int) < 0) {
                *AT(s, f->offset, int) = *AT(cfg, f->inherit_offset, int);
            }
        }
        if (s->batch_size > s->prefetch) {
            s->batch_size = s->prefetch;
        }
    }
}

/* Free what the fields of SEC hold in BASE (not BASE itself). */
static void free_fields(const section *sec, void *base)
{
    for (size_t i = 0; i < sec->nfields; i++) {
        const field *f = &sec->fields[i];
        switch (f->type) {
        case T_STRING:
        case T_PATH:
        case T_ENUM_STR:
            free(*AT(base, f->offset, char *));
            *AT(base, f->offset, char *) = NULL;
            break;
        case T_AMQP_URL:
            wr_amqp_url_clear(AT(base, f->offset, wr_amqp_url));
            break;
        case T_REDIS_URL:
            wr_redis_url_clear(AT(base, f->offset, wr_redis_url));
            break;
        case T_STRLIST: {
            char **list = *AT(base, f->offset, char **);
            int n = *AT(base, f->count_offset, int);
            for (int k = 0; list != NULL && k < n; k++) {
                free(list[k]);
            }
            free(list);
            *AT(base, f->offset, char **) = NULL;
            *AT(base, f->count_offset, int) = 0;
            break;
        }
        case T_SECTION:
            /* A located section lives outside BASE: its owner frees it. */
            if (f->locate == NULL) {
                free_fields(f->sub, (char *)base + f->offset);
            }
            break;
        case T_DURLIST:
            free(*AT(base, f->offset, int64_t *));
            *AT(base, f->offset, int64_t *) = NULL;
            *AT(base, f->count_offset, int) = 0;
            break;
        case T_KEY:
            free(*AT(base, f->arg_offset, char *));
            *AT(base, f->arg_offset, char *) = NULL;
            break;
        case T_LIST: {
            char *elems = *AT(base, f->offset, void *);
            int n = *AT(base, f->count_offset, int);
            for (int k = 0; elems != NULL && k < n; k++) {
                free_fields(f->sub, elems + (size_t)k * f->sub->elem_size);
            }
            free(elems);
            *AT(base, f->offset, void *) = NULL;
            *AT(base, f->count_offset, int) = 0;
            break;
        }
        case T_NAMED: {
            char *elems = *AT(base, f->offset, void *);
            char **names = *AT(base, f->arg_offset, char **);
            int n = *AT(base, f->count_offset, int);
            for (int k = 0; k < n; k++) {
                if (elems != NULL) {
                    free_fields(f->sub, elems + (size_t)k * f->sub->elem_size);
                }
                if (names != NULL) {
                    free(names[k]);
                }
            }
            free(elems);
            free(names);
            *AT(base, f->offset, void *) = NULL;
            *AT(base, f->arg_offset, char **) = NULL;
            *AT(base, f->count_offset, int) = 0;
            break;
        }
        case T_INT:
        case T_DURATION:
        case T_SIZE:
        case T_BOOL:
        case T_ENUM:
        case T_NUMBER:
            break;
        }
    }
}

void wr_config_free(wr_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    free_fields(&top_section, cfg);
    for (int i = 0; i < cfg->amqp_alt_count; i++) {
        wr_amqp_url_clear(&cfg->amqp_alts[i]);
    }
    free(cfg->amqp_alts);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
}

void wr_config_errors_free(wr_config_errors *errs)
{
    if (errs == NULL) {
        return;
    }
    for (int i = 0; i < errs->count; i++) {
        free(errs->lines[i]);
        errs->lines[i] = NULL;
    }
    errs->count = 0;
    errs->dropped = 0;
}

/*
 * Read PATH into a NUL-terminated buffer, at most MAX_FILE + 1 bytes (enough
 * to tell that the file is too large without reading /dev/zero for ever);
 * NULL with errno set on failure.
 */
static char *read_file(const char *path, size_t *len, const char **what)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    *what = "cannot open";
    if (fp == NULL) {
        return NULL;
    }
    *what = "cannot read";
    while (n <= MAX_FILE) {
        if (n + 4096 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *b = realloc(buf, ncap);
            if (b == NULL) {
                goto fail;
            }
            buf = b;
            cap = ncap;
        }
        size_t want = cap - n - 1;
        if (want > (size_t)MAX_FILE + 1 - n) {
            want = (size_t)MAX_FILE + 1 - n;
        }
        size_t got = fread(buf + n, 1, want, fp);
        n += got;
        if (got == 0) {
            if (ferror(fp)) {
                goto fail;
            }
            break;
        }
    }
    fclose(fp);
    buf[n] = '\0';
    *len = n;
    return buf;

fail : {
    int e = errno;
    free(buf);
    fclose(fp);
    errno = e;
    return NULL;
}
}

/* The absolute directory holding PATH, malloc'd; NULL with errno set on failure. */
static char *config_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir, *real;

    if (slash == NULL) {
        dir = strdup(".");
    } else if (slash == path) {
        dir = strdup("/");
    } else {
        dir = wr_str_dup_range(path, (size_t)(slash - path));
    }
    if (dir == NULL) {
        return NULL;
    }
    real = realpath(dir, NULL);
    free(dir);
    return real;
}

/* Line and column (1-based) of byte OFFSET in BUF, for reader errors that carry only an offset. */
static void offset_position(const char *buf, size_t len, size_t offset, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < offset && i < len; i++) {
        if (buf[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* Report libyaml's failure: the problem, where it is, and the construct it was inside. */
static void yaml_error(loader *ld, yaml_parser_t *parser, const char *buf, size_t len)
{
    int line, col;

    if (parser->error == YAML_READER_ERROR) {
        offset_position(buf, len, parser->problem_offset, &line, &col);
    } else {
        line = (int)parser->problem_mark.line + 1;
        col = (int)parser->problem_mark.column + 1;
    }
    if (parser->error == YAML_MEMORY_ERROR) {
        err_at(ld, line, col, "out of memory while parsing YAML");
    } else if (parser->context != NULL) {
        err_at(ld, line, col, "YAML syntax error: %s (%s that started at %d:%d)",
               parser->problem ? parser->problem : "unknown problem", parser->context,
               (int)parser->context_mark.line + 1, (int)parser->context_mark.column + 1);
    } else {
        err_at(ld, line, col, "YAML syntax error: %s",
               parser->problem ? parser->problem : "unknown problem");
    }
}

/*
 * Before the document is built: walk the parser's events and refuse YAML
 * that nests deeper than MAX_YAML_DEPTH collections. libyaml 0.2.5 has no
 * limit of its own and its scanner does work proportional to the depth for
 * every token, so 400 KB of '[' took more than 20 s; stopping at the first
 * collection too deep bounds that (the scanner reads at most about 1 KiB
 * ahead of the parser). A syntax error ends this pass quietly: the loader
 * meets and reports it at the same place. Returns false when too deep (the
 * error recorded).
 */
static bool check_depth(loader *ld, const char *buf, size_t len)
{
    yaml_parser_t parser;
    yaml_event_t event;
    int depth = 0;
    bool ok = true, done = false;

    if (!yaml_parser_initialize(&parser)) {
        return true; /* the loader will run out of memory too, and say so */
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    while (!done && yaml_parser_parse(&parser, &event)) {
        switch (event.type) {
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (++depth > MAX_YAML_DEPTH) {
                err_at(ld, (int)event.start_mark.line + 1, (int)event.start_mark.column + 1,
                       "YAML collections nested more than %d deep", MAX_YAML_DEPTH);
                ok = false;
                done = true;
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        default:
            break;
        }
        yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);
    return ok;
}

/* Stable sort of the collected errors into file order (few, so insertion sort). */
static void sort_errors(loader *ld)
{
    for (int i = 1; i < ld->nerr; i++) {
        error_entry e = ld->errs[i];
        int j = i - 1;
        while (j >= 0 && (ld->errs[j].line > e.line ||
                          (ld->errs[j].line == e.line && ld->errs[j].col > e.col))) {
            ld->errs[j + 1] = ld->errs[j];
            j--;
        }
        ld->errs[j + 1] = e;
    }
}

wr_config *wr_config_load(const char *path, wr_config_errors *errs)
{
    const char *what;
    size_t len = 0;
    char *buf = read_file(path, &len, &what);

    if (buf == NULL) {
        if (errs != NULL) {
            memset(errs, 0, sizeof(*errs));
            errs->lines[0] = wr_str_format("%s: %s: %s", path, what, strerror(errno));
            errs->count = errs->lines[0] != NULL;
            errs->dropped = errs->lines[0] == NULL;
        }
        return NULL;
    }
    wr_config *cfg = wr_config_parse(path, buf, len, errs);
    free(buf);
    return cfg;
}

/*
 * Parse TEXT: one YAML document, walked against the schema, inherited
 * defaults filled. Any error along the way is collected; if there is one,
 * the half-built config is freed and NULL returned with ERRS filled.
 */
wr_config *wr_config_parse(const char *path, const char *text, size_t len, wr_config_errors *errs)
{
    loader ld;
    yaml_parser_t parser;
    yaml_document_t doc;
    bool have_parser = false, have_doc = false;
    wr_config *cfg = NULL;
    const char *buf = text;

    memset(&ld, 0, sizeof(ld));
    ld.file = path;
    mark_unset_fields(&retry_section, &ld.def_retry);
    mark_unset_fields(&idem_section, &ld.def_idem);
    mark_unset_fields(&breaker_section, &ld.def_breaker);
    if (errs != NULL) {
        memset(errs, 0, sizeof(*errs));
    }

    if (len > MAX_FILE) {
        int line, col;
        offset_position(buf, len, MAX_FILE, &line, &col);
        err_at(&ld, line, col, "the file is larger than %d MiB", MAX_FILE >> 20);
        goto done;
    }
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL || (cfg->path = strdup(path)) == NULL) {
        add_error(&ld, 0, 0, wr_str_format("%s: out of memory", path));
        goto done;
    }
    cfg->dir = config_dir(path);
    if (cfg->dir == NULL) {
        add_error(&ld, 0, 0,
                  wr_str_format("%s: cannot resolve its directory: %s", path, strerror(errno)));
        goto done;
    }
    ld.dir = cfg->dir;
    ld.doc = &doc;

    if (!yaml_parser_initialize(&parser)) {
        add_error(&ld, 0, 0, wr_str_format("%s: out of memory", path));
        goto done;
    }
    have_parser = true;
    if (!check_depth(&ld, buf, len)) {
        goto done;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_error(&ld, &parser, buf, len);
        goto done;
    }
    have_doc = true;

    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL || is_null_scalar(root)) {
        err_at(&ld, 1, 1,
               "empty configuration: expected a mapping with 'amqp', 'redis' and "
               "'subscriptions'");
        goto done;
    }
    if (root->type != YAML_MAPPING_NODE) {
        err_at(&ld, NODE_LINE(root), NODE_COL(root), "expected a mapping at the top level, got %s",
               node_kind(root));
        goto done;
    }

    /* A second document would be silently ignored: refuse it instead. */
    yaml_document_t extra;
    if (!yaml_parser_load(&parser, &extra)) {
        yaml_error(&ld, &parser, buf, len);
    } else {
        yaml_node_t *extra_root = yaml_document_get_root_node(&extra);
        if (extra_root != NULL) {
            err_at(&ld, NODE_LINE(extra_root), NODE_COL(extra_root),
                   "expected a single YAML document, found another one here");
        }
        yaml_document_delete(&extra);
    }

    walk_mapping(&ld, &top_section, cfg, root, "");
    merge_policies(&ld, cfg, root);
    check_gates(&ld, cfg, root);
    if (ld.nerr == 0 && ld.dropped == 0) {
        inherit_defaults(cfg);
        cfg->amqp.tls = &cfg->amqp_tls;
        for (int i = 0; i < cfg->amqp_alt_count; i++) {
            cfg->amqp_alts[i].tls = &cfg->amqp_tls;
        }
        for (int i = 0; i < cfg->sub_count; i++) {
            wr_subscription *sub = &cfg->subs[i];
            sub->dlq_quorum = sub->dlq_type == 2 || (sub->dlq_type == 0 && cfg->amqp_alt_count > 0);
        }
        cfg->redis.sentinels = cfg->redis_sentinels;
        cfg->redis.sentinel_count = cfg->redis_sentinel_count;
        cfg->redis.master_name = cfg->redis_master_name;
    }

done:
    free_fields(&retry_section, &ld.def_retry);
    free_fields(&idem_section, &ld.def_idem);
    free_fields(&breaker_section, &ld.def_breaker);
    if (have_doc) {
        yaml_document_delete(&doc);
    }
    if (have_parser) {
        yaml_parser_delete(&parser);
    }
    if (ld.nerr > 0 || ld.dropped > 0) {
        wr_config_free(cfg);
        cfg = NULL;
    }
    sort_errors(&ld);
    for (int i = 0; i < ld.nerr; i++) {
        if (errs != NULL) {
            errs->lines[i] = ld.errs[i].text;
        } else {
            free(ld.errs[i].text);
        }
    }
    if (errs != NULL) {
        errs->count = ld.nerr;
        errs->dropped = ld.dropped;
    }
    return cfg;
}

/* ------------------------------------------------------------------------ */
/* Reference                                                                  */
/* ------------------------------------------------------------------------ */

/* The "type" column: the type and, where it matters, its bounds or values. */
static void reference_type(const field *f, char *out, size_t len)
{
    char lo[32], hi[32];

    switch (f->type) {
    case T_STRING:
        snprintf(out, len, "string");
        break;
    case T_PATH:
        snprintf(out, len, "file path");
        break;
    case T_INT:
        snprintf(out, len, "integer, %lld to %lld", (long long)f->min, (long long)f->max);
        break;
    case T_DURATION:
        wr_units_format_duration(f->min, lo, sizeof(lo));
        wr_units_format_duration(f->max, hi, sizeof(hi));
        snprintf(out, len, "duration, %s to %s%s", lo, hi,
                 (f->flags & F_NONE) ? ", or `none`" : "");
        break;
    case T_NUMBER:
        snprintf(out, len, "number, %lld%s to %lld", (long long)f->min,
                 (f->flags & F_GT_MIN) ? " (exclusive)" : "", (long long)f->max);
        break;
    case T_DURLIST:
        wr_units_format_duration(f->min, lo, sizeof(lo));
        wr_units_format_duration(f->max, hi, sizeof(hi));
        snprintf(out, len, "list of 1 to %d durations, %s to %s", f->max_count, lo, hi);
        break;
    case T_KEY:
        snprintf(out, len, "`message_id`, `header:NAME` or `json:PATH`");
        break;
    case T_SIZE:
        wr_units_format_size(f->min, lo, sizeof(lo));
        wr_units_format_size(f->max, hi, sizeof(hi));
        snprintf(out, len, "size, %s to %s", lo, hi);
        break;
    case T_BOOL:
        snprintf(out, len, "bool");
        break;
    case T_ENUM:
    case T_ENUM_STR: {
        size_t used = (size_t)snprintf(out, len, "one of");
        for (int i = 0; f->enum_values[i] != NULL && used < len; i++) {
            used += (size_t)snprintf(out + used, len - used, "%s `%s`", i > 0 ? "," : "",
                                     f->enum_values[i]);
        }
        break;
    }
    case T_AMQP_URL:
        snprintf(out, len, "AMQP URL");
        break;
    case T_REDIS_URL:
        snprintf(out, len, "Redis URL");
        break;
    case T_STRLIST:
        snprintf(out, len, "string or list of strings");
        break;
    case T_SECTION:
        snprintf(out, len, "mapping");
        break;
    case T_LIST:
        snprintf(out, len, "list of mappings");
        break;
    case T_NAMED:
        snprintf(out, len, "mapping of names to mappings");
        break;
    }
}

/*
 * Rows for SEC's fields, keys prefixed with PREFIX. INHERIT, when not NULL,
 * is the prefix of the section they are merged over ("defaults.retry."): it
 * stands in for their default.
 */
static void write_rows(FILE *fp, const section *sec, const char *prefix, const char *inherit)
{
    for (size_t i = 0; i < sec->nfields; i++) {
        const field *f = &sec->fields[i];
        char key[PATH_BUF], type[160], def[PATH_BUF + 2];

        make_path(key, "%s%s", prefix, f->name);
        reference_type(f, type, sizeof(type));
        if (f->flags & F_REQUIRED) {
            snprintf(def, sizeof(def), "required");
        } else if (inherit != NULL && f->type != T_SECTION) {
            snprintf(def, sizeof(def), "`%s%s`", inherit, f->name);
        } else if (f->def_doc != NULL) {
            snprintf(def, sizeof(def), "%s", f->def_doc);
        } else if (f->def != NULL) {
            snprintf(def, sizeof(def), "`%s`", f->def);
        } else {
            snprintf(def, sizeof(def), "-");
        }
        fprintf(fp, "| `%s` | %s | %s | %s | %s |\n", key, type, def,
                f->type == T_SECTION || f->type == T_LIST || f->type == T_NAMED ? "-"
                : (f->flags & F_LIVE)                                           ? "yes"
                                                                                : "no (restart)",
                f->desc);
        if (f->type == T_SECTION) {
            char sub[PATH_BUF], from[PATH_BUF];
            make_path(sub, "%s.", key);
            if (inherit != NULL) {
                make_path(from, "%s%s.", inherit, f->name);
            } else if (f->merge_from != NULL) {
                make_path(from, "%s.", f->merge_from);
            }
            write_rows(fp, f->sub, sub, inherit != NULL || f->merge_from != NULL ? from : NULL);
        } else if (f->type == T_LIST) {
            char sub[PATH_BUF];
            make_path(sub, "%s[].", key);
            write_rows(fp, f->sub, sub, NULL);
        } else if (f->type == T_NAMED) {
            char sub[PATH_BUF], from[PATH_BUF];
            make_path(sub, "%s.<name>.", key);
            make_path(from, "%s.", f->merge_from);
            write_rows(fp, f->sub, sub, from);
        }
    }
}

/*
 * Print the reference table, one row per key in schema order, sections
 * before their keys. Values marked "yes" under live reload take effect on a
 * reload; the others need a restart.
 */
void wr_config_write_reference(FILE *fp)
{
    fprintf(fp, "| key | type | default | live reload | description |\n");
    fprintf(fp, "|---|---|---|---|---|\n");
    write_rows(fp, &top_section, "", NULL);
}
