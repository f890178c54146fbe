/*
 * url: the addresses warren connects to or listens on, parsed and masked.
 *
 * amqp:// and amqps:// URLs (RabbitMQ) go through rabbitmq-c's own parser, so
 * warren accepts exactly what the library would, plus checks it lacks (a
 * host, a port from 1 to 65535, well-formed percent-escapes, one vhost
 * segment); redis:// URLs are parsed here (hiredis has none). A failure
 * comes back as -1 with a static reason meant to follow the value in a
 * message; the reason never quotes the URL, which may hold a password.
 *
 * Masking is for logs and messages: the password becomes "***", and when in
 * doubt (a malformed URL) more is masked, never less.
 *
 * Ownership: a parsed URL's strings are malloc'd and freed by its _clear
 * function, which also zeroes it (clearing twice is harmless). Pure apart
 * from allocation; no network access.
 */
#ifndef WR_URL_H
#define WR_URL_H

#include <stdbool.h>
#include <stddef.h>

/* TLS files for an amqps:// broker (amqp.tls): absolute paths, or NULL when not set. */
typedef struct {
    char *ca;   /* CA certificates (PEM) to verify the broker with; NULL: the system's */
    char *cert; /* client certificate chain (PEM); set with key, or neither */
    char *key;  /* its private key (PEM, not encrypted) */
} wr_amqp_tls;

/* An AMQP broker address, parsed from an amqp:// or amqps:// URL. */
typedef struct {
    char *url;      /* the URL as written after ${} expansion; may hold a password */
    char *redacted; /* the same URL with the password replaced by "***": safe to log */
    char *host;
    int port;
    char *user;
    char *password;
    char *vhost;
    int ssl;                /* 1 for amqps:// */
    const wr_amqp_tls *tls; /* in a loaded wr_config: its amqp.tls (owned by the config);
                               NULL from wr_amqp_url_parse */
} wr_amqp_url;

/* A Redis address, parsed from redis://[[user]:password@]host[:port][/db]. */
typedef struct {
    char *url;
    char *redacted;
    char *host;
    int port;       /* default 6379 */
    char *user;     /* NULL unless given */
    char *password; /* NULL unless given */
    int db;         /* default 0 */
    /* In a loaded wr_config: redis.sentinels and redis.master_name (owned by the config;
     * NULL and 0 from wr_redis_url_parse and when not set). Then host and port are not
     * used: every connect asks the sentinels where the primary is (rconn.h). */
    char *const *sentinels; /* "HOST:PORT", sentinel_count of them */
    int sentinel_count;
    const char *master_name;
} wr_redis_url;

/* Parse a redis:// URL into OUT (fields malloc'd; free with wr_redis_url_clear).
 * Returns 0, or -1 with a reason (static string) in *WHY. */
int wr_redis_url_parse(const char *text, wr_redis_url *out, const char **why);
void wr_redis_url_clear(wr_redis_url *u);

/*
 * Copy TEXT, a URL or something like one, with its password masked: the
 * userinfo (after "scheme://", or from the start when there is no scheme, up
 * to the last '@') keeps what comes before its first ':' and loses the rest
 * to "***"; a userinfo without ':' is masked whole. Only a real scheme (a
 * letter, then letters, digits, '+', '-', '.') before the first ':' counts,
 * so "user:pa://ss@host" becomes "user:***@host". Returns a malloc'd string,
 * or NULL when out of memory.
 */
char *wr_url_mask(const char *text);

/* Same for amqp:// and amqps:// URLs (rabbitmq-c's amqp_parse_url rules; the
 * vhost defaults to "/"). */
int wr_amqp_url_parse(const char *text, wr_amqp_url *out, const char **why);
void wr_amqp_url_clear(wr_amqp_url *u);

/*
 * Parse an http.listen value: "HOST:PORT" with HOST an IPv4 address (or
 * "localhost", meaning 127.0.0.1) and PORT 0..65535 (0: any free port), or
 * "off". Returns 1 for off, 0 with the address in HOST (at least 16 bytes)
 * and *PORT, or -1 with a reason in *WHY.
 */
int wr_listen_parse(const char *text, char *host, size_t hostcap, int *port, const char **why);

/*
 * Where the part after "scheme://" starts in TEXT, or NULL when TEXT does not
 * begin with a scheme (RFC 3986: a letter, then letters, digits, '+', '-' or
 * '.') followed by "://". Only the first ':' can end a scheme: in
 * "user:pa://ss@host" the "://" belongs to a password.
 */
const char *wr_url_after_scheme(const char *text);

/*
 * wr_url_mask with a choice: when SECRET_ALONE is false (AMQP, where a
 * userinfo without ':' is a user name) such a userinfo is kept as it is;
 * when true (Redis, as redis-cli reads it) it is itself the password and is
 * masked. Returns a malloc'd string, or NULL when out of memory.
 */
char *wr_url_mask_userinfo(const char *text, bool secret_alone);

#endif
