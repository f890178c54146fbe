/*
 * url.c: broker, Redis and listen addresses parsed and masked (see url.h).
 */
#include "url.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_compat.h"
#include "strutil.h"

/*
 * Where the part after "scheme://" starts in TEXT, or NULL when TEXT does not
 * begin with a scheme (RFC 3986: a letter, then letters, digits, '+', '-' or
 * '.') followed by "://". Only the first ':' can end a scheme: in
 * "user:pa://ss@host" the "://" belongs to a password.
 */
const char *wr_url_after_scheme(const char *text)
{
    static const char tail[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.";
    size_t n = strspn(text, tail);
    bool letter = (text[0] >= 'a' && text[0] <= 'z') || (text[0] >= 'A' && text[0] <= 'Z');

    if (n == 0 || !letter || strncmp(text + n, "://", 3) != 0) {
        return NULL;
    }
    return text + n + 3;
}

/*
 * Copy a URL with its password replaced by "***", for logs and messages. The
 * userinfo is everything after "scheme://" (or from the start, when there is
 * no scheme) up to the last '@'; its password is what follows the first ':'
 * in it. When SECRET_ALONE is set (Redis, as redis-cli reads it) a userinfo
 * without ':' is itself the password. This errs on the side of masking too
 * much for malformed URLs, never too little.
 */
char *wr_url_mask_userinfo(const char *text, bool secret_alone)
{
    const char *scheme_end = wr_url_after_scheme(text);
    const char *start = scheme_end != NULL ? scheme_end : text;
    const char *at = strrchr(start, '@');
    const char *colon;

    if (at == NULL) {
        return strdup(text);
    }
    colon = memchr(start, ':', (size_t)(at - start));
    if (colon != NULL) {
        return wr_str_format("%.*s***%s", (int)(colon + 1 - text), text, at);
    }
    if (secret_alone) {
        return wr_str_format("%.*s***%s", (int)(start - text), text, at);
    }
    return strdup(text);
}

char *wr_url_mask(const char *text)
{
    return wr_url_mask_userinfo(text, true);
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

/* The strings both kinds of URL own. */
static void free_url_strings(char *url, char *redacted, char *host, char *user, char *password)
{
    free(url);
    free(redacted);
    free(host);
    free(user);
    free(password);
}

void wr_amqp_url_clear(wr_amqp_url *u)
{
    if (u == NULL) {
        return;
    }
    free_url_strings(u->url, u->redacted, u->host, u->user, u->password);
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
    out->redacted = wr_url_mask_userinfo(text, false);
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
    free_url_strings(u->url, u->redacted, u->host, u->user, u->password);
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
    out->redacted = wr_url_mask_userinfo(text, true);
    out->host = wr_str_dup_range(h, hlen);
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

int wr_listen_parse(const char *text, char *host, size_t hostcap, int *port, const char **why)
{
    if (strcmp(text, "off") == 0) {
        return 1;
    }
    const char *colon = strrchr(text, ':');
    if (colon == NULL) {
        *why = "expected HOST:PORT (such as 0.0.0.0:9464 or 127.0.0.1:0) or off";
        return -1;
    }
    size_t hl = (size_t)(colon - text);
    char h[64];
    if (hl == 0 || hl >= sizeof(h) || hl >= hostcap) {
        *why = "expected an IPv4 address before the port, such as 0.0.0.0:9464";
        return -1;
    }
    memcpy(h, text, hl);
    h[hl] = '\0';
    if (strcmp(h, "localhost") == 0) {
        snprintf(h, sizeof(h), "127.0.0.1");
    }
    unsigned a, b, c, d;
    char extra;
    if (sscanf(h, "%3u.%3u.%3u.%3u%c", &a, &b, &c, &d, &extra) != 4 || a > 255 || b > 255 ||
        c > 255 || d > 255) {
        *why = "expected an IPv4 address before the port, such as 0.0.0.0:9464";
        return -1;
    }
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || p < 0 || p > 65535) {
        *why = "expected a port 0..65535 after the colon";
        return -1;
    }
    snprintf(host, hostcap, "%s", h);
    *port = (int)p;
    return 0;
}
