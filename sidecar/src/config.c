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

#define PATH_BUF 256           /* dotted key paths such as subscriptions[3].bindings[0].type */
#define MAX_FIELDS 16          /* most keys any one section has */
#define AMQP_SHORTSTR 255      /* AMQP names (queues, exchanges, routing keys) are shortstrs */
#define MAX_BODY (512LL << 20) /* RabbitMQ's own ceiling on a message body */

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
    T_AMQP_URL,  /* wr_amqp_url */
    T_REDIS_URL, /* wr_redis_url */
    T_STRLIST,   /* char ** (NULL-terminated) + int count; a single string is a list of one */
    T_SECTION,   /* nested mapping whose fields live in the same struct */
    T_LIST       /* list of mappings: element array + int count; min bounds the length */
} field_type;

#define F_REQUIRED 0x1u /* the key must be present */
#define F_LIVE 0x2u     /* a reload applies a change without restarting */
#define F_IDENT 0x4u    /* string limited to [A-Za-z0-9_.-] */
#define F_INHERIT 0x8u  /* unset: copied from the wr_config field at inherit_offset */

typedef struct loader loader;
typedef struct section section;

typedef struct {
    const char *name;
    field_type type;
    size_t offset;                  /* where the value goes in the section's struct */
    size_t count_offset;            /* T_STRLIST, T_LIST: where the item count goes */
    const char *def;                /* default as it would be written in YAML; NULL: none */
    const char *def_doc;            /* what the reference shows when def alone would not do */
    int64_t min, max;               /* bounds, see field_type */
    unsigned flags;                 /* F_* */
    const char *const *enum_values; /* T_ENUM, T_ENUM_STR: NULL-terminated */
    const section *sub;             /* T_SECTION, T_LIST: the nested fields */
    size_t inherit_offset;          /* F_INHERIT: the wr_config field holding the default */
    const char *desc;               /* one line for the reference table */
} field;

/*
 * A section is a list of fields plus, for list elements, the element size and
 * a hook run after each element is walked (for checks that span fields or
 * elements, like uniqueness).
 */
struct section {
    const field *fields;
    size_t nfields;
    size_t elem_size; /* T_LIST elements */
    void (*finish)(loader *ld, void *elems, int index, yaml_node_t *node, const char *path);
};

#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const exchange_types[] = {"direct", "topic", "fanout", "headers", NULL};

_Static_assert(sizeof(wr_log_level) == sizeof(int), "log level is stored as an int");

static void finish_subscription(loader *ld, void *elems, int index, yaml_node_t *node,
                                const char *path);

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

static const section binding_section = {binding_fields, NFIELDS(binding_fields),
                                        sizeof(wr_binding), NULL};

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
    {.name = "bindings",
     .type = T_LIST,
     .offset = offsetof(wr_subscription, bindings),
     .count_offset = offsetof(wr_subscription, binding_count),
     .min = 0,
     .sub = &binding_section,
     .desc = "Exchange bindings declared for the queue; none: consume the queue as it is."},
};

static const section subscription_section = {subscription_fields, NFIELDS(subscription_fields),
                                             sizeof(wr_subscription), finish_subscription};

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
};

static const field log_fields[] = {
    {.name = "level",
     .type = T_ENUM,
     .offset = offsetof(wr_config, log_level),
     .def = "info",
     .enum_values = log_levels,
     .flags = F_LIVE,
     .desc = "Lowest level written to the log."},
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

static const section amqp_section = {amqp_fields, NFIELDS(amqp_fields), 0, NULL};
static const section redis_section = {redis_fields, NFIELDS(redis_fields), 0, NULL};
static const section log_section = {log_fields, NFIELDS(log_fields), 0, NULL};
static const section defaults_section = {defaults_fields, NFIELDS(defaults_fields), 0, NULL};
static const section shutdown_section = {shutdown_fields, NFIELDS(shutdown_fields), 0, NULL};

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
    {.name = "shutdown",
     .type = T_SECTION,
     .sub = &shutdown_section,
     .desc = "Graceful shutdown."},
    {.name = "subscriptions",
     .type = T_LIST,
     .offset = offsetof(wr_config, subs),
     .count_offset = offsetof(wr_config, sub_count),
     .min = 1,
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

/* ------------------------------------------------------------------------ */
/* Small helpers                                                              */
/* ------------------------------------------------------------------------ */

/* Fields are reached by byte offset from the start of their struct. */
#define AT(base, off, type) ((type *)((char *)(base) + (off)))

/* vsnprintf into a fresh buffer; NULL only when out of memory. */
static char *vformat(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (s != NULL) {
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    }
    return s;
}

static char *format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *format(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

static char *dup_range(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

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

/*
 * Format a millisecond count the way a user would write it: the largest units
 * that add up exactly ("5m", "1m30s", "250ms", "0s").
 */
static void format_duration(int64_t ms, char *out, size_t len)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    size_t used = 0;

    out[0] = '\0';
    if (ms == 0) {
        snprintf(out, len, "0s");
        return;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]) && used < len; i++) {
        if (ms >= units[i].ms) {
            int n = snprintf(out + used, len - used, "%lld%s", (long long)(ms / units[i].ms),
                             units[i].unit);
            used += n > 0 ? (size_t)n : 0;
            ms %= units[i].ms;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Durations                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * A duration is one or more <digits><unit> terms (ms, s, m, h, d) added up,
 * or a bare "0". Anything else, including an overflow of int64 milliseconds,
 * returns -1 and leaves *MS alone.
 */
int wr_config_parse_duration(const char *text, int64_t *ms)
{
    int64_t total = 0;
    const char *p = text;

    if (text == NULL || *text == '\0') {
        return -1;
    }
    if (strcmp(text, "0") == 0) {
        *ms = 0;
        return 0;
    }
    while (*p != '\0') {
        int64_t n = 0, scale;
        if (*p < '0' || *p > '9') {
            return -1;
        }
        while (*p >= '0' && *p <= '9') {
            if (n > (INT64_MAX - (*p - '0')) / 10) {
                return -1;
            }
            n = n * 10 + (*p - '0');
            p++;
        }
        if (p[0] == 'm' && p[1] == 's') {
            scale = 1;
            p += 2;
        } else if (*p == 's') {
            scale = 1000;
            p++;
        } else if (*p == 'm') {
            scale = 60000;
            p++;
        } else if (*p == 'h') {
            scale = 3600000;
            p++;
        } else if (*p == 'd') {
            scale = 86400000;
            p++;
        } else {
            return -1;
        }
        if (n > INT64_MAX / scale || total > INT64_MAX - n * scale) {
            return -1;
        }
        total += n * scale;
    }
    *ms = total;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Sizes                                                                      */
/* ------------------------------------------------------------------------ */

static const struct {
    const char *unit;
    int64_t bytes;
} size_units[] = {{"GiB", 1LL << 30}, {"MiB", 1LL << 20}, {"KiB", 1LL << 10}, {"B", 1}};

/*
 * A size is digits with an optional IEC unit (B, KiB, MiB, GiB): "65536",
 * "512KiB", "4MiB". Decimal units (KB, MB) are refused rather than guessed.
 * Returns 0 with the byte count in *BYTES, or -1 (also on overflow).
 */
static int parse_size(const char *text, int64_t *bytes)
{
    int64_t n = 0;
    const char *p = text;

    if (*p < '0' || *p > '9') {
        return -1;
    }
    while (*p >= '0' && *p <= '9') {
        if (n > (INT64_MAX - (*p - '0')) / 10) {
            return -1;
        }
        n = n * 10 + (*p - '0');
        p++;
    }
    if (*p == '\0') {
        *bytes = n;
        return 0;
    }
    for (size_t i = 0; i < sizeof(size_units) / sizeof(size_units[0]); i++) {
        if (strcmp(p, size_units[i].unit) == 0) {
            if (n > INT64_MAX / size_units[i].bytes) {
                return -1;
            }
            *bytes = n * size_units[i].bytes;
            return 0;
        }
    }
    return -1;
}

/* Format a byte count in the largest IEC unit that divides it ("512KiB", "1B"). */
static void format_size(int64_t bytes, char *out, size_t len)
{
    for (size_t i = 0; i < sizeof(size_units) / sizeof(size_units[0]); i++) {
        if (bytes != 0 && bytes % size_units[i].bytes == 0) {
            snprintf(out, len, "%lld%s", (long long)(bytes / size_units[i].bytes),
                     size_units[i].unit);
            return;
        }
    }
    snprintf(out, len, "%lldB", (long long)bytes);
}

/* ------------------------------------------------------------------------ */
/* URLs                                                                       */
/* ------------------------------------------------------------------------ */

/*
 * Copy a URL with its password replaced by "***", for logs and messages. The
 * userinfo is everything after "://" up to the last '@'; its password is what
 * follows the first ':' in it. When SECRET_ALONE is set (Redis, as redis-cli
 * reads it) a userinfo without ':' is itself the password. This errs on the
 * side of masking too much for malformed URLs, never too little.
 */
static char *mask_url(const char *text, bool secret_alone)
{
    const char *scheme_end = strstr(text, "://");
    const char *start = scheme_end != NULL ? scheme_end + 3 : text;
    const char *at = strrchr(start, '@');
    const char *colon;

    if (at == NULL) {
        return strdup(text);
    }
    colon = memchr(start, ':', (size_t)(at - start));
    if (colon != NULL) {
        return format("%.*s***%s", (int)(colon + 1 - text), text, at);
    }
    if (secret_alone) {
        return format("%.*s***%s", (int)(start - text), text, at);
    }
    return strdup(text);
}

/* True when S is 1 to 5 digits making a port from 1 to 65535. */
static bool valid_port(const char *s, size_t n)
{
    long v = 0;
    if (n == 0 || n > 5) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* True when every '%' in [S, S+N) starts a two-hex-digit escape of an ASCII byte. */
static bool valid_escapes(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n || hex_value(s[i + 1]) < 0 || hex_value(s[i + 2]) < 0 ||
                hex_value(s[i + 1]) > 7) {
                return false;
            }
            i += 2;
        }
    }
    return true;
}

/*
 * Split the part of a URL after "scheme://" into userinfo, host[:port] and
 * path, the way both parsers see it: the userinfo ends at the last '@', the
 * host part at the first '/' after it. Returns the host part's start and
 * length; *PATH points at the '/' (or the end).
 */
static const char *split_hostpart(const char *rest, size_t *len, const char **path)
{
    const char *at = strrchr(rest, '@');
    const char *host = at != NULL ? at + 1 : rest;
    const char *slash = strchr(host, '/');

    *path = slash != NULL ? slash : host + strlen(host);
    *len = (size_t)(*path - host);
    return host;
}

/*
 * Check HOST[:PORT] (HOST may be a bracketed IPv6 address). Returns NULL when
 * well formed, with the host's span in *H, *HLEN and the port's in *P, *PLEN
 * (PLEN 0 when absent); otherwise a reason.
 */
static const char *check_hostport(const char *s, size_t n, const char **h, size_t *hlen,
                                  const char **p, size_t *plen)
{
    const char *colon;

    *p = NULL;
    *plen = 0;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL) {
            return "unterminated '[' in the host";
        }
        *h = s + 1;
        *hlen = (size_t)(close - s - 1);
        if (close + 1 < s + n) {
            if (close[1] != ':') {
                return "unexpected text after the ']' of the host";
            }
            *p = close + 2;
            *plen = (size_t)(s + n - *p);
            if (!valid_port(*p, *plen)) {
                return "port must be a number from 1 to 65535";
            }
        }
    } else {
        colon = memchr(s, ':', n);
        *h = s;
        *hlen = colon != NULL ? (size_t)(colon - s) : n;
        if (colon != NULL) {
            *p = colon + 1;
            *plen = (size_t)(s + n - *p);
            if (memchr(*p, ':', *plen) != NULL) {
                return "too many ':' (IPv6 addresses go in brackets; percent-encode ':' "
                       "in a password as %3A)";
            }
            if (!valid_port(*p, *plen)) {
                return "port must be a number from 1 to 65535";
            }
        }
    }
    if (*hlen == 0) {
        return "missing host";
    }
    return NULL;
}

void wr_amqp_url_clear(wr_amqp_url *u)
{
    if (u == NULL) {
        return;
    }
    free(u->url);
    free(u->redacted);
    free(u->host);
    free(u->user);
    free(u->password);
    free(u->vhost);
    memset(u, 0, sizeof(*u));
}

/*
 * Parse an amqp:// or amqps:// URL with rabbitmq-c's own parser (so we accept
 * exactly what the library would), then add what it does not check: a host
 * must be given, the port must be 1..65535, and an empty vhost ("amqp://h/")
 * means "/" as it does for most clients. rabbitmq-c gives no reason for a
 * failure, so one is worked out from the URL's parts. Returns 0 and fills
 * OUT (every string malloc'd), or -1 with a static reason in *WHY and OUT
 * zeroed.
 */
int wr_amqp_url_parse(const char *text, wr_amqp_url *out, const char **why)
{
    struct amqp_connection_info ci;
    const char *rest, *hostpart, *path, *h, *p;
    size_t hostlen, hlen, plen;
    char *copy = NULL;

    memset(out, 0, sizeof(*out));
    *why = NULL;
    if (strncmp(text, "amqp://", 7) == 0) {
        rest = text + 7;
    } else if (strncmp(text, "amqps://", 8) == 0) {
        rest = text + 8;
    } else {
        *why = "the scheme must be amqp:// or amqps://";
        return -1;
    }
    if (strpbrk(rest, "?#") != NULL) {
        *why = "query strings and fragments are not supported (percent-encode '?' and '#')";
        return -1;
    }
    if (!valid_escapes(rest, strlen(rest))) {
        *why = "bad percent-encoding (use %XX for ASCII characters only)";
        return -1;
    }
    hostpart = split_hostpart(rest, &hostlen, &path);
    *why = check_hostport(hostpart, hostlen, &h, &hlen, &p, &plen);
    if (*why != NULL) {
        return -1;
    }
    if (*path == '/' && strchr(path + 1, '/') != NULL) {
        *why = "the vhost must be a single path segment (write %2F for '/')";
        return -1;
    }
    copy = strdup(text);
    if (copy == NULL) {
        *why = "out of memory";
        return -1;
    }
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
        *why = "malformed URL (percent-encode ':', '@' and '/' in the user name and password)";
        goto fail;
    }
    out->url = strdup(text);
    out->redacted = mask_url(text, false);
    out->host = strdup(ci.host);
    out->user = strdup(ci.user);
    out->password = strdup(ci.password);
    out->vhost = strdup(ci.vhost[0] != '\0' ? ci.vhost : "/");
    out->port = ci.port;
    out->ssl = ci.ssl ? 1 : 0;
    if (out->url == NULL || out->redacted == NULL || out->host == NULL || out->user == NULL ||
        out->password == NULL || out->vhost == NULL) {
        *why = "out of memory";
        goto fail;
    }
    free(copy);
    return 0;

fail:
    wr_amqp_url_clear(out);
    free(copy);
    return -1;
}

void wr_redis_url_clear(wr_redis_url *u)
{
    if (u == NULL) {
        return;
    }
    free(u->url);
    free(u->redacted);
    free(u->host);
    free(u->user);
    free(u->password);
    memset(u, 0, sizeof(*u));
}

/* Percent-decode [S, S+N) into a new string (escapes already checked). */
static char *percent_decode(const char *s, size_t n)
{
    char *d = malloc(n + 1), *o = d;
    if (d == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n) {
            *o++ = (char)(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return d;
}

/*
 * Parse redis://[[user]:password@]host[:port][/db] by hand (hiredis has no
 * URL parser). Like redis-cli, a userinfo without ':' is a password alone;
 * user and password are percent-decoded. Returns 0 and fills OUT (strings
 * malloc'd; user and password NULL when absent), or -1 with a static reason
 * in *WHY and OUT zeroed.
 */
int wr_redis_url_parse(const char *text, wr_redis_url *out, const char **why)
{
    const char *rest, *at, *hostpart, *path, *h, *p;
    size_t hostlen, hlen, plen;

    memset(out, 0, sizeof(*out));
    *why = NULL;
    if (strncmp(text, "rediss://", 9) == 0) {
        *why = "TLS (rediss://) is not supported";
        return -1;
    }
    if (strncmp(text, "unix://", 7) == 0) {
        *why = "unix sockets are not supported";
        return -1;
    }
    if (strncmp(text, "redis://", 8) != 0) {
        *why = "the scheme must be redis://";
        return -1;
    }
    rest = text + 8;
    if (strpbrk(rest, "?#") != NULL) {
        *why = "query strings and fragments are not supported (percent-encode '?' and '#')";
        return -1;
    }
    hostpart = split_hostpart(rest, &hostlen, &path);
    *why = check_hostport(hostpart, hostlen, &h, &hlen, &p, &plen);
    if (*why != NULL) {
        return -1;
    }
    at = hostpart > rest ? hostpart - 1 : NULL;
    if (at != NULL && !valid_escapes(rest, (size_t)(at - rest))) {
        *why = "bad percent-encoding in the user name or password";
        return -1;
    }
    out->db = 0;
    if (*path == '/' && path[1] != '\0') {
        long long db = 0;
        for (const char *d = path + 1; *d != '\0'; d++) {
            if (*d < '0' || *d > '9' || db > INT_MAX / 10) {
                *why = "the database must be a non-negative integer";
                return -1;
            }
            db = db * 10 + (*d - '0');
        }
        if (db > INT_MAX) {
            *why = "the database must be a non-negative integer";
            return -1;
        }
        out->db = (int)db;
    }
    out->port = plen > 0 ? atoi(p) : 6379;
    out->url = strdup(text);
    out->redacted = mask_url(text, true);
    out->host = dup_range(h, hlen);
    if (out->url == NULL || out->redacted == NULL || out->host == NULL) {
        goto oom;
    }
    if (at != NULL) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        const char *pw = colon != NULL ? colon + 1 : rest;
        if (colon != NULL && colon > rest) {
            out->user = percent_decode(rest, (size_t)(colon - rest));
            if (out->user == NULL) {
                goto oom;
            }
        }
        out->password = percent_decode(pw, (size_t)(at - pw));
        if (out->password == NULL) {
            goto oom;
        }
    }
    return 0;

oom:
    wr_redis_url_clear(out);
    *why = "out of memory";
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Environment expansion                                                      */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_add(strbuf *sb, const char *s, size_t n)
{
    if (sb->oom) {
        return;
    }
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 64;
        while (cap < sb->len + n + 1) {
            cap *= 2;
        }
        char *b = realloc(sb->buf, cap);
        if (b == NULL) {
            sb->oom = true;
            return;
        }
        sb->buf = b;
        sb->cap = cap;
    }
    memcpy(sb->buf + sb->len, s, n);
    sb->len += n;
    sb->buf[sb->len] = '\0';
}

static bool valid_env_name(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9')) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_')) {
            return false;
        }
    }
    return true;
}

/*
 * Expand [IN, IN+N) into SB: "$$" is a literal '$', "${VAR}" the variable
 * (an error when unset), "${VAR:-default}" the variable or, when it is unset
 * or empty, the default (itself expanded, so defaults may nest). Any other
 * '$' is kept as it is. Returns NULL, or an error message (malloc'd) that
 * names the variable but never echoes the text, which may hold secrets.
 */
static char *expand_into(strbuf *sb, const char *in, size_t n)
{
    size_t i = 0, lit = 0;

    while (i < n) {
        if (in[i] != '$' || i + 1 >= n || (in[i + 1] != '$' && in[i + 1] != '{')) {
            i++;
            continue;
        }
        sb_add(sb, in + lit, i - lit);
        if (in[i + 1] == '$') {
            sb_add(sb, "$", 1);
            i += 2;
            lit = i;
            continue;
        }
        /* "${": find the matching '}', skipping "$$" and nested "${...}". */
        size_t j = i + 2, depth = 1;
        while (j < n && depth > 0) {
            if (in[j] == '$' && j + 1 < n && (in[j + 1] == '$' || in[j + 1] == '{')) {
                depth += in[j + 1] == '{';
                j += 2;
                continue;
            }
            if (in[j] == '}') {
                depth--;
            }
            j++;
        }
        if (depth > 0) {
            return strdup("unterminated '${' (write $$ for a literal '$')");
        }
        const char *body = in + i + 2;
        size_t blen = j - 1 - (i + 2);
        const char *dash = NULL;
        for (size_t k = 0; k + 1 < blen; k++) {
            if (body[k] == ':' && body[k + 1] == '-') {
                dash = body + k;
                break;
            }
        }
        size_t namelen = dash != NULL ? (size_t)(dash - body) : blen;
        if (namelen == 0) {
            return strdup("empty environment variable name in '${}'");
        }
        if (!valid_env_name(body, namelen)) {
            return format("invalid environment variable name '%.*s' (letters, digits and '_')",
                          (int)namelen, body);
        }
        char *name = dup_range(body, namelen);
        if (name == NULL) {
            return strdup("out of memory");
        }
        const char *value = getenv(name);
        if (dash == NULL && value == NULL) {
            char *msg = format("environment variable '%s' is not set "
                               "(write ${%s:-default} to give a default)",
                               name, name);
            free(name);
            return msg;
        }
        free(name);
        if (dash != NULL && (value == NULL || value[0] == '\0')) {
            char *err = expand_into(sb, dash + 2, (size_t)(body + blen - (dash + 2)));
            if (err != NULL) {
                return err;
            }
        } else {
            sb_add(sb, value, strlen(value));
        }
        i = j;
        lit = i;
    }
    sb_add(sb, in + lit, n - lit);
    return NULL;
}

/* Expand TEXT into a new string in *OUT. Returns NULL or a malloc'd error message. */
static char *expand_env(const char *text, char **out)
{
    strbuf sb = {0};
    char *err;

    *out = NULL;
    sb_add(&sb, "", 0);
    err = expand_into(&sb, text, strlen(text));
    if (err == NULL && sb.oom) {
        err = strdup("out of memory");
    }
    if (err != NULL) {
        free(sb.buf);
        return err;
    }
    *out = sb.buf;
    return NULL;
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
};

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
    char *msg = vformat(fmt, ap);
    va_end(ap);
    char *line_text = format("%s:%d:%d: %s", ld->file, line, col, msg ? msg : "out of memory");
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
        snprintf(out, len, "a duration like 500ms, 5s, 2m, 1h or 7d");
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
        snprintf(out, len, "a mapping");
        break;
    case T_LIST:
        snprintf(out, len, "a list");
        break;
    }
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

/*
 * Resolve a handler path: absolute as written, otherwise relative to the
 * config file's directory; then realpath() it and insist on a regular file.
 * Returns a malloc'd absolute path, or NULL with a message in *ERR.
 */
static char *resolve_path(loader *ld, const field *f, const char *text, char **err)
{
    char *joined, *real;
    struct stat st;

    *err = NULL;
    joined = text[0] == '/' ? strdup(text) : format("%s/%s", ld->dir, text);
    if (joined == NULL) {
        *err = strdup("out of memory");
        return NULL;
    }
    real = realpath(joined, NULL);
    if (real == NULL) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR) {
            *err = text[0] == '/'
                       ? format("%s file '%s' not found", f->name, text)
                       : format("%s file '%s' not found (relative to %s)", f->name, text, ld->dir);
        } else {
            *err = format("%s file '%s': %s", f->name, text, strerror(e));
        }
        free(joined);
        return NULL;
    }
    free(joined);
    if (stat(real, &st) != 0 || !S_ISREG(st.st_mode)) {
        *err = format("%s file '%s' is not a regular file", f->name, text);
        free(real);
        return NULL;
    }
    return real;
}

/*
 * Interpret one (already expanded) scalar TEXT for field F and store it in
 * BASE. LINE/COL locate it for messages; PATH is the dotted key. Defaults go
 * through here too, written as text, so they obey the same rules.
 */
static void set_scalar(loader *ld, const field *f, void *base, const char *text, int line, int col,
                       const char *path)
{
    char want[128];
    const char *got_q = text[0] != '\0' ? "'" : "";
    const char *got = text[0] != '\0' ? text : "an empty value";

    switch (f->type) {
    case T_STRING: {
        size_t len = strlen(text);
        if (len == 0 && f->min > 0) {
            err_at(ld, line, col, "%s: must not be empty", path);
            return;
        }
        if ((int64_t)len > f->max) {
            err_at(ld, line, col, "%s: must be at most %lld bytes long, got %zu bytes", path,
                   (long long)f->max, len);
            return;
        }
        if (f->flags & F_IDENT) {
            static const char ident[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "abcdefghijklmnopqrstuvwxyz0123456789_.-";
            if (strspn(text, ident) != len) {
                err_at(ld, line, col,
                       "%s: may contain only letters, digits, '_', '.' and '-', got '%s'", path,
                       text);
                return;
            }
        }
        if (!set_string(AT(base, f->offset, char *), text)) {
            err_at(ld, line, col, "%s: out of memory", path);
        }
        return;
    }
    case T_PATH: {
        char *err, *real;
        if (text[0] == '\0') {
            err_at(ld, line, col, "%s: must not be empty", path);
            return;
        }
        real = resolve_path(ld, f, text, &err);
        if (real == NULL) {
            err_at(ld, line, col, "%s: %s", path, err ? err : "out of memory");
            free(err);
            return;
        }
        free(*AT(base, f->offset, char *));
        *AT(base, f->offset, char *) = real;
        return;
    }
    case T_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(text, &end, 10);
        bool digits = text[0] == '-' || (text[0] >= '0' && text[0] <= '9');
        if (!digits || *end != '\0' || errno != 0 || v < f->min || v > f->max) {
            expected_phrase(f, want, sizeof(want));
            err_at(ld, line, col, "%s: expected %s, got %s%s%s", path, want, got_q, got, got_q);
            return;
        }
        *AT(base, f->offset, int) = (int)v;
        return;
    }
    case T_DURATION: {
        int64_t ms;
        if (wr_config_parse_duration(text, &ms) != 0) {
            expected_phrase(f, want, sizeof(want));
            err_at(ld, line, col, "%s: expected %s, got %s%s%s", path, want, got_q, got, got_q);
            return;
        }
        if (ms < f->min || ms > f->max) {
            char lo[32], hi[32];
            format_duration(f->min, lo, sizeof(lo));
            format_duration(f->max, hi, sizeof(hi));
            err_at(ld, line, col, "%s: expected a duration from %s to %s, got '%s'", path, lo, hi,
                   text);
            return;
        }
        *AT(base, f->offset, int64_t) = ms;
        return;
    }
    case T_SIZE: {
        int64_t bytes;
        if (parse_size(text, &bytes) != 0) {
            expected_phrase(f, want, sizeof(want));
            err_at(ld, line, col, "%s: expected %s, got %s%s%s", path, want, got_q, got, got_q);
            return;
        }
        if (bytes < f->min || bytes > f->max) {
            char lo[32], hi[32];
            format_size(f->min, lo, sizeof(lo));
            format_size(f->max, hi, sizeof(hi));
            err_at(ld, line, col, "%s: expected a size from %s to %s, got '%s'", path, lo, hi,
                   text);
            return;
        }
        *AT(base, f->offset, int64_t) = bytes;
        return;
    }
    case T_BOOL: {
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
        err_at(ld, line, col, "%s: expected true or false, got %s%s%s", path, got_q, got, got_q);
        return;
    }
    case T_ENUM:
    case T_ENUM_STR:
        for (int i = 0; f->enum_values[i] != NULL; i++) {
            if (strcmp(text, f->enum_values[i]) == 0) {
                if (f->type == T_ENUM) {
                    *AT(base, f->offset, int) = i;
                } else if (!set_string(AT(base, f->offset, char *), text)) {
                    err_at(ld, line, col, "%s: out of memory", path);
                }
                return;
            }
        }
        expected_phrase(f, want, sizeof(want));
        err_at(ld, line, col, "%s: expected %s, got %s%s%s", path, want, got_q, got, got_q);
        return;
    case T_AMQP_URL: {
        const char *why;
        wr_amqp_url *u = AT(base, f->offset, wr_amqp_url);
        wr_amqp_url_clear(u);
        if (wr_amqp_url_parse(text, u, &why) != 0) {
            char *masked = mask_url(text, false);
            err_at(ld, line, col, "%s: invalid AMQP URL '%s' (%s)", path, masked ? masked : "***",
                   why);
            free(masked);
        }
        return;
    }
    case T_REDIS_URL: {
        const char *why;
        wr_redis_url *u = AT(base, f->offset, wr_redis_url);
        wr_redis_url_clear(u);
        if (wr_redis_url_parse(text, u, &why) != 0) {
            char *masked = mask_url(text, true);
            err_at(ld, line, col, "%s: invalid Redis URL '%s' (%s)", path, masked ? masked : "***",
                   why);
            free(masked);
        }
        return;
    }
    case T_STRLIST:
    case T_SECTION:
    case T_LIST:
        break; /* not scalars: handled by set_node */
    }
}

/* Expand a scalar node's text from the environment; NULL (error recorded) on failure. */
static char *expanded_scalar(loader *ld, yaml_node_t *node, const char *path)
{
    char *out, *err;
    const char *text = is_null_scalar(node) ? "" : (const char *)node->data.scalar.value;

    err = expand_env(text, &out);
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
static void set_strlist(loader *ld, const field *f, void *base, yaml_node_t *node,
                        const char *path)
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

/* Store NODE as the value of field F (path PATH) in BASE, whatever the field's type. */
static void set_node(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    switch (f->type) {
    case T_SECTION:
        if (node->type != YAML_MAPPING_NODE) {
            kind_error(ld, f, node, path);
            return;
        }
        walk_mapping(ld, f->sub, base, node, path);
        return;
    case T_LIST:
        set_list(ld, f, base, node, path);
        return;
    case T_STRLIST:
        set_strlist(ld, f, base, node, path);
        return;
    default:
        break;
    }
    if (node->type != YAML_SCALAR_NODE) {
        kind_error(ld, f, node, path);
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
 * the final pass, and the rest take their default.
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
        join_key(sub, path, f->name);
        for (size_t i = 0; i < f->sub->nfields; i++) {
            apply_missing(ld, &f->sub->fields[i], base, NULL, sub);
        }
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

    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = yaml_document_get_node(ld->doc, pair->key);
        yaml_node_t *value = yaml_document_get_node(ld->doc, pair->value);
        char sub[PATH_BUF];
        if (key->type != YAML_SCALAR_NODE) {
            err_at(ld, NODE_LINE(key), NODE_COL(key), "expected a string key %s%s, got %s", where,
                   path, node_kind(key));
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
            err_at(ld, NODE_LINE(key), NODE_COL(key),
                   "unknown key '%s' %s%s (expected one of: %s)", name, where, path, known);
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
    for (size_t i = 0; i < sec->nfields; i++) {
        if (seen[i] == NULL) {
            apply_missing(ld, &sec->fields[i], base, node, path);
        }
    }
}

/* The value node for KEY in mapping MAP, or NULL. */
static yaml_node_t *find_value(loader *ld, yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
         pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, pair->key);
        if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0) {
            return yaml_document_get_node(ld->doc, pair->value);
        }
    }
    return NULL;
}

/*
 * After subscription INDEX is walked: remember where it starts, derive the
 * default dlq, and check what spans subscriptions (unique names and queues)
 * or fields (the dlq differs from the queue). Inherited values are filled in
 * later, once the defaults section is known wherever it sits in the file.
 */
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
            s->dlq = format("%s.dlq", s->queue);
        }
    } else if (s->dlq != NULL && s->queue != NULL && strcmp(s->dlq, s->queue) == 0) {
        v = find_value(ld, node, "dlq");
        err_at(ld, NODE_LINE(v), NODE_COL(v), "%s.dlq: must differ from the queue '%s'", path,
               s->queue);
    }
    for (int j = 0; j < index; j++) {
        if (s->name != NULL && subs[j].name != NULL && strcmp(s->name, subs[j].name) == 0) {
            v = find_value(ld, node, "name");
            err_at(ld, NODE_LINE(v), NODE_COL(v),
                   "%s.name: duplicate subscription name '%s' (also at %d:%d)", path, s->name,
                   subs[j].line, subs[j].col);
            break;
        }
    }
    for (int j = 0; j < index; j++) {
        if (s->queue != NULL && subs[j].queue != NULL && strcmp(s->queue, subs[j].queue) == 0) {
            v = find_value(ld, node, "queue");
            err_at(ld, NODE_LINE(v), NODE_COL(v),
                   "%s.queue: queue '%s' is already consumed by subscriptions[%d] (at %d:%d)",
                   path, s->queue, j, subs[j].line, subs[j].col);
            break;
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
            free_fields(f->sub, base);
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
        case T_INT:
        case T_DURATION:
        case T_SIZE:
        case T_BOOL:
        case T_ENUM:
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

/* Read all of PATH into a NUL-terminated buffer; NULL with errno set on failure. */
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
    for (;;) {
        if (n + 4096 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *b = realloc(buf, ncap);
            if (b == NULL) {
                goto fail;
            }
            buf = b;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
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
        dir = dup_range(path, (size_t)(slash - path));
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

/*
 * Load PATH: read it, parse one YAML document, walk it against the schema,
 * fill inherited defaults. Any error along the way is collected; if there is
 * one, the half-built config is freed and NULL returned with ERRS filled.
 */
wr_config *wr_config_load(const char *path, wr_config_errors *errs)
{
    loader ld;
    yaml_parser_t parser;
    yaml_document_t doc;
    bool have_parser = false, have_doc = false;
    wr_config *cfg = NULL;
    char *buf = NULL;
    size_t len = 0;
    const char *what;

    memset(&ld, 0, sizeof(ld));
    ld.file = path;
    if (errs != NULL) {
        memset(errs, 0, sizeof(*errs));
    }

    buf = read_file(path, &len, &what);
    if (buf == NULL) {
        add_error(&ld, 0, 0, format("%s: %s: %s", path, what, strerror(errno)));
        goto done;
    }
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL || (cfg->path = strdup(path)) == NULL) {
        add_error(&ld, 0, 0, format("%s: out of memory", path));
        goto done;
    }
    cfg->dir = config_dir(path);
    if (cfg->dir == NULL) {
        add_error(&ld, 0, 0,
                  format("%s: cannot resolve its directory: %s", path, strerror(errno)));
        goto done;
    }
    ld.dir = cfg->dir;
    ld.doc = &doc;

    if (!yaml_parser_initialize(&parser)) {
        add_error(&ld, 0, 0, format("%s: out of memory", path));
        goto done;
    }
    have_parser = true;
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
    if (ld.nerr == 0 && ld.dropped == 0) {
        inherit_defaults(cfg);
    }

done:
    if (have_doc) {
        yaml_document_delete(&doc);
    }
    if (have_parser) {
        yaml_parser_delete(&parser);
    }
    free(buf);
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
        format_duration(f->min, lo, sizeof(lo));
        format_duration(f->max, hi, sizeof(hi));
        snprintf(out, len, "duration, %s to %s", lo, hi);
        break;
    case T_SIZE:
        format_size(f->min, lo, sizeof(lo));
        format_size(f->max, hi, sizeof(hi));
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
    }
}

static void write_rows(FILE *fp, const section *sec, const char *prefix)
{
    for (size_t i = 0; i < sec->nfields; i++) {
        const field *f = &sec->fields[i];
        char key[PATH_BUF], type[160], def[64];

        make_path(key, "%s%s", prefix, f->name);
        reference_type(f, type, sizeof(type));
        if (f->flags & F_REQUIRED) {
            snprintf(def, sizeof(def), "required");
        } else if (f->def_doc != NULL) {
            snprintf(def, sizeof(def), "%s", f->def_doc);
        } else if (f->def != NULL) {
            snprintf(def, sizeof(def), "`%s`", f->def);
        } else {
            snprintf(def, sizeof(def), "-");
        }
        fprintf(fp, "| `%s` | %s | %s | %s | %s |\n", key, type, def,
                f->type == T_SECTION || f->type == T_LIST ? "-"
                : (f->flags & F_LIVE)                     ? "yes"
                                                          : "no (restart)",
                f->desc);
        if (f->type == T_SECTION) {
            char sub[PATH_BUF];
            make_path(sub, "%s.", key);
            write_rows(fp, f->sub, sub);
        } else if (f->type == T_LIST) {
            char sub[PATH_BUF];
            make_path(sub, "%s[].", key);
            write_rows(fp, f->sub, sub);
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
    write_rows(fp, &top_section, "");
}
