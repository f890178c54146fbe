/*
 * rconn: one Redis connection with timeouts, keep-alive, AUTH, SELECT,
 * scripts and pipelining. See rconn.h.
 */
#include "rconn.h"

#include "log.h"
#include "numfmt.h"
#include "record.h"

#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wr_rconn {
    redisContext *c;  /* NULL while disconnected */
    wr_redis_url url; /* borrowed from the config */
    int64_t timeout_ms;
    wr_rscript *scripts; /* borrowed */
    int nscripts;
    int owed;            /* replies not read yet */
    int first_sentinel;  /* the sentinel asked first: the last one that answered */
    redisContext *watch; /* with sentinels: subscribed to +switch-master on one */
    int watch_sentinel;  /* which one */
    char err[512];
};

/* Close the connection after a failure on it, keeping the reason. */
static void drop(wr_rconn *c, const char *what)
{
    snprintf(c->err, sizeof(c->err), "%s: %s", what,
             c->c != NULL && c->c->err ? c->c->errstr : "unexpected reply");
    if (c->c != NULL) {
        redisFree(c->c);
        c->c = NULL;
    }
    c->owed = 0;
}

/* Check a reply of a set-up command (AUTH, SELECT, SCRIPT LOAD); frees it. */
static int setup_reply(wr_rconn *c, const char *what, redisReply *r)
{
    if (r == NULL) {
        drop(c, what);
        return -1;
    }
    int bad = r->type == REDIS_REPLY_ERROR;
    if (bad) {
        snprintf(c->err, sizeof(c->err), "%s: %s", what, r->str);
    }
    freeReplyObject(r);
    return bad ? -1 : 0;
}

static int load_script(wr_rconn *c, wr_rscript *s)
{
    redisReply *r = redisCommand(c->c, "SCRIPT LOAD %s", s->source);
    if (r == NULL) {
        drop(c, "SCRIPT LOAD");
        return -1;
    }
    int ok = r->type == REDIS_REPLY_STRING && r->len == 40;
    if (ok) {
        memcpy(s->sha, r->str, 41);
    } else {
        snprintf(c->err, sizeof(c->err), "SCRIPT LOAD: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    freeReplyObject(r);
    return ok ? 0 : -1;
}

/*
 * Ask sentinel ADDR ("HOST:PORT") where the primary NAME is, into HOST and
 * *PORT. Returns 0, or -1 with the reason in WHY.
 */
static int ask_sentinel(const char *addr, const char *name, struct timeval tv, char *host,
                        size_t hostcap, int *port, char *why, size_t whycap)
{
    char shost[256];
    const char *colon = strrchr(addr, ':');
    size_t hl = colon != NULL ? (size_t)(colon - addr) : 0;
    if (colon == NULL || hl == 0 || hl >= sizeof(shost)) {
        snprintf(why, whycap, "sentinel %s: expected HOST:PORT", addr);
        return -1;
    }
    memcpy(shost, addr, hl);
    shost[hl] = '\0';
    redisContext *s = redisConnectWithTimeout(shost, atoi(colon + 1), tv);
    if (s == NULL || s->err || redisSetTimeout(s, tv) != REDIS_OK) {
        snprintf(why, whycap, "sentinel %s: %s", addr, s != NULL ? s->errstr : "out of memory");
        redisFree(s);
        return -1;
    }
    redisReply *r = redisCommand(s, "SENTINEL get-master-addr-by-name %s", name);
    int rc = -1;
    if (r == NULL) {
        snprintf(why, whycap, "sentinel %s: %s", addr, s->errstr);
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
               r->element[0]->type == REDIS_REPLY_STRING &&
               r->element[1]->type == REDIS_REPLY_STRING && r->element[0]->len < hostcap) {
        memcpy(host, r->element[0]->str, r->element[0]->len + 1);
        *port = atoi(r->element[1]->str);
        rc = 0;
    } else if (r->type == REDIS_REPLY_NIL) {
        snprintf(why, whycap, "sentinel %s does not know a primary named '%s'", addr, name);
    } else {
        snprintf(why, whycap, "sentinel %s: %s", addr,
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    if (r != NULL) {
        freeReplyObject(r);
    }
    redisFree(s);
    return rc;
}

/*
 * With sentinels: subscribe to +switch-master on sentinel I (the one that
 * just named the primary), so that a failover the sentinels carry out while
 * the primary still answers (SENTINEL FAILOVER: the old primary takes writes
 * until the sentinels demote it, about ten seconds later, and loses them
 * then) is followed at once (follow_switch). Best effort: without the
 * subscription warren notices the failover only when the old primary fails
 * or turns read-only. Tried again at the next connect.
 */
static void open_watch(wr_rconn *c, int i, struct timeval tv)
{
    if (c->watch != NULL && c->watch_sentinel == i) {
        return;
    }
    if (c->watch != NULL) {
        redisFree(c->watch);
        c->watch = NULL;
    }
    const char *addr = c->url.sentinels[i];
    const char *colon = strrchr(addr, ':');
    char shost[256];
    size_t hl = colon != NULL ? (size_t)(colon - addr) : 0;
    if (colon == NULL || hl == 0 || hl >= sizeof(shost)) {
        return;
    }
    memcpy(shost, addr, hl);
    shost[hl] = '\0';
    redisContext *w = redisConnectWithTimeout(shost, atoi(colon + 1), tv);
    redisReply *r = NULL;
    if (w != NULL && !w->err && redisSetTimeout(w, tv) == REDIS_OK) {
        r = redisCommand(w, "SUBSCRIBE +switch-master");
    }
    if (r != NULL && r->type == REDIS_REPLY_ARRAY) {
        c->watch = w;
        c->watch_sentinel = i;
        w = NULL;
    }
    if (r != NULL) {
        freeReplyObject(r);
    }
    redisFree(w);
}

/*
 * What the watched sentinel said since the last look, without waiting: when
 * it moved our primary (+switch-master "<name> <old ip> <old port> <new ip>
 * <new port>"), the connection is closed (no reply may be owed) and the next
 * connect asks that sentinel where the primary is now.
 */
static void follow_switch(wr_rconn *c)
{
    struct pollfd pf = {.fd = c->watch->fd, .events = POLLIN};
    if (poll(&pf, 1, 0) <= 0) {
        return;
    }
    int moved = 0, ok = redisBufferRead(c->watch) == REDIS_OK;
    char to[300] = "";
    void *m = NULL;
    size_t nl = strlen(c->url.master_name);
    while (ok && (ok = redisGetReplyFromReader(c->watch, &m) == REDIS_OK) && m != NULL) {
        redisReply *r = m;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[2]->type == REDIS_REPLY_STRING &&
            strncmp(r->element[2]->str, c->url.master_name, nl) == 0 &&
            r->element[2]->str[nl] == ' ') {
            const char *old = r->element[2]->str + nl + 1;
            const char *sp = strchr(old, ' ');
            sp = sp != NULL ? strchr(sp + 1, ' ') : NULL;
            snprintf(to, sizeof(to), "%s", sp != NULL ? sp + 1 : old);
            moved = 1;
        }
        freeReplyObject(r);
    }
    if (!ok) { /* the sentinel went away: watched again from the next connect */
        redisFree(c->watch);
        c->watch = NULL;
    }
    if (moved && c->c != NULL && c->owed == 0) {
        wr_logf(WR_LOG_WARN, "redis: the sentinels moved the primary '%s' to %s; reconnecting",
                c->url.master_name, to);
        redisFree(c->c);
        c->c = NULL;
        c->first_sentinel = c->watch_sentinel;
    }
}

/*
 * Where to connect: the URL's host and port, or, with sentinels, the primary
 * the first sentinel that answers names (starting with the one that answered
 * last time). Returns 0, or -1 with every sentinel's answer in c->err.
 */
static int locate(wr_rconn *c, struct timeval tv, char *host, size_t hostcap, int *port)
{
    if (c->url.sentinel_count == 0) {
        snprintf(host, hostcap, "%s", c->url.host);
        *port = c->url.port;
        return 0;
    }
    size_t used = (size_t)snprintf(c->err, sizeof(c->err), "no sentinel named the primary:");
    for (int k = 0; k < c->url.sentinel_count; k++) {
        int i = (c->first_sentinel + k) % c->url.sentinel_count;
        char why[200];
        if (ask_sentinel(c->url.sentinels[i], c->url.master_name, tv, host, hostcap, port, why,
                         sizeof(why)) == 0) {
            c->first_sentinel = i;
            return 0;
        }
        if (used < sizeof(c->err)) {
            used += (size_t)snprintf(c->err + used, sizeof(c->err) - used, "%s %s",
                                     k > 0 ? ";" : "", why);
        }
    }
    return -1;
}

/*
 * With sentinels: the server must say it is the primary (ROLE), else a
 * failover is under way and the sentinel's answer is already stale. Returns
 * 0, or -1 with the reason in c->err.
 */
static int check_primary(wr_rconn *c, const char *host, int port)
{
    redisReply *r = redisCommand(c->c, "ROLE");
    if (r == NULL) {
        drop(c, "ROLE");
        return -1;
    }
    int ok = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
    if (!ok) {
        snprintf(c->err, sizeof(c->err), "%s:%d is not the primary (ROLE: %s)", host, port,
                 r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                         r->element[0]->type == REDIS_REPLY_STRING
                     ? r->element[0]->str
                 : r->type == REDIS_REPLY_ERROR ? r->str
                                                : "unexpected reply");
    }
    freeReplyObject(r);
    return ok ? 0 : -1;
}

/*
 * Redis Cluster is not supported (a batch's keys span slots, and hiredis 0.14
 * follows no MOVED/ASK): a cluster node is refused at connect, with that
 * reason, rather than met later as MOVED errors on every batch. Returns 0, or
 * -1 with the reason in c->err.
 */
static int refuse_cluster(wr_rconn *c, const char *host, int port)
{
    redisReply *r = redisCommand(c->c, "INFO cluster");
    if (r == NULL) {
        drop(c, "INFO");
        return -1;
    }
    int cluster = r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_enabled:1") != NULL;
    freeReplyObject(r);
    if (cluster) {
        snprintf(c->err, sizeof(c->err),
                 "%s:%d is a Redis Cluster node: Redis Cluster is not supported (use one "
                 "primary, with replicas and Sentinel for failover)",
                 host, port);
        return -1;
    }
    return 0;
}

/*
 * Connect: the primary's address (locate), TCP with the timeout, then the command timeout and
 * keep-alive (hiredis 0.14 forgets both on a reconnect), AUTH, SELECT and the scripts. On failure
 * the connection is left closed. Returns 0 or -1.
 */
static int connect_now(wr_rconn *c)
{
    struct timeval tv = {.tv_sec = (time_t)(c->timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(c->timeout_ms % 1000) * 1000};
    if (c->c != NULL) {
        redisFree(c->c);
    }
    c->c = NULL;
    c->owed = 0;
    char host[256];
    int port;
    if (locate(c, tv, host, sizeof(host), &port) != 0) {
        return -1;
    }
    c->c = redisConnectWithTimeout(host, port, tv);
    if (c->c == NULL) {
        snprintf(c->err, sizeof(c->err), "connect: out of memory");
        return -1;
    }
    if (c->c->err) {
        char what[300];
        snprintf(what, sizeof(what), "connect to %s:%d", host, port);
        drop(c, what);
        return -1;
    }
    if (redisSetTimeout(c->c, tv) != REDIS_OK || redisEnableKeepAlive(c->c) != REDIS_OK) {
        drop(c, "socket options");
        return -1;
    }
    int rc = 0;
    if (c->url.password != NULL) {
        redisReply *r = c->url.user ? redisCommand(c->c, "AUTH %s %s", c->url.user, c->url.password)
                                    : redisCommand(c->c, "AUTH %s", c->url.password);
        rc = setup_reply(c, "AUTH", r);
    }
    if (rc == 0 && c->url.sentinel_count > 0) {
        rc = check_primary(c, host, port);
    }
    if (rc == 0) {
        rc = refuse_cluster(c, host, port);
    }
    if (rc == 0 && c->url.db != 0) {
        rc = setup_reply(c, "SELECT", redisCommand(c->c, "SELECT %d", c->url.db));
    }
    for (int i = 0; rc == 0 && i < c->nscripts; i++) {
        rc = load_script(c, &c->scripts[i]);
    }
    if (rc != 0 && c->c != NULL) {
        redisFree(c->c);
        c->c = NULL;
    }
    if (rc == 0 && c->url.sentinel_count > 0) {
        open_watch(c, c->first_sentinel, tv);
    }
    return rc;
}

/* Before a command when no reply is owed: follow a switch the sentinels announced. */
static void between_commands(wr_rconn *c)
{
    if (c->watch != NULL && c->owed == 0 && c->c != NULL) {
        follow_switch(c);
    }
}

wr_rconn *wr_rconn_create(const wr_redis_url *url, int64_t timeout_ms, wr_rscript *scripts,
                          int nscripts, char *err, size_t errcap)
{
    wr_rconn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    c->url = *url;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    c->scripts = scripts;
    c->nscripts = nscripts;
    if (connect_now(c) != 0) {
        snprintf(err, errcap, "%s", c->err);
        wr_rconn_destroy(c);
        return NULL;
    }
    return c;
}

void wr_rconn_destroy(wr_rconn *c)
{
    if (c != NULL) {
        if (c->c != NULL) {
            redisFree(c->c);
        }
        if (c->watch != NULL) {
            redisFree(c->watch);
        }
        free(c);
    }
}

const char *wr_rconn_error(const wr_rconn *c)
{
    return c->err;
}

int wr_rconn_ensure(wr_rconn *c)
{
    between_commands(c);
    return c->c != NULL ? 0 : connect_now(c);
}

int wr_rconn_connected(const wr_rconn *c)
{
    return c->c != NULL;
}

int wr_rconn_owed(const wr_rconn *c)
{
    return c->owed;
}

int wr_rconn_append(wr_rconn *c, int argc, const char **argv, const size_t *lens)
{
    between_commands(c);
    if (c->c == NULL && connect_now(c) != 0) {
        return -1;
    }
    if (redisAppendCommandArgv(c->c, argc, argv, lens) != REDIS_OK) {
        drop(c, argc > 0 ? argv[0] : "command");
        return -1;
    }
    c->owed++;
    return 0;
}

int wr_rconn_append_formatted(wr_rconn *c, const char *cmd, size_t len)
{
    between_commands(c);
    if (c->c == NULL && connect_now(c) != 0) {
        return -1;
    }
    if (redisAppendFormattedCommand(c->c, cmd, len) != REDIS_OK) {
        drop(c, "command");
        return -1;
    }
    c->owed++;
    return 0;
}

long wr_rconn_format(char **out, int argc, const char **argv, const size_t *lens)
{
    char num[WR_NUMFMT_MAX];
    size_t total = 1 + wr_fmt_u64(num, (uint64_t)argc) + 2;
    for (int i = 0; i < argc; i++) {
        total += 1 + wr_fmt_u64(num, lens[i]) + 2 + lens[i] + 2;
    }
    char *p = malloc(total + 1);
    *out = p;
    if (p == NULL) {
        return -1;
    }
    *p++ = '*';
    p += wr_fmt_u64(p, (uint64_t)argc);
    *p++ = '\r';
    *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        *p++ = '$';
        p += wr_fmt_u64(p, lens[i]);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    *p = '\0';
    return (long)total;
}

int wr_rconn_append_load(wr_rconn *c, const wr_rscript *s)
{
    const char *argv[3] = {"SCRIPT", "LOAD", s->source};
    size_t lens[3] = {6, 4, strlen(s->source)};
    return wr_rconn_append(c, 3, argv, lens);
}

int wr_rconn_flush(wr_rconn *c)
{
    if (c->c == NULL) {
        snprintf(c->err, sizeof(c->err), "not connected");
        return -1;
    }
    int done = 0;
    while (!done) {
        if (redisBufferWrite(c->c, &done) != REDIS_OK) {
            drop(c, "send");
            return -1;
        }
    }
    return 0;
}

redisReply *wr_rconn_read(wr_rconn *c)
{
    if (c->c == NULL || c->owed == 0) {
        snprintf(c->err, sizeof(c->err), "%s", c->c == NULL ? "not connected" : "no reply owed");
        return NULL;
    }
    redisReply *r = NULL;
    if (redisGetReply(c->c, (void **)&r) != REDIS_OK || r == NULL) {
        drop(c, "reply");
        return NULL;
    }
    c->owed--;
    if (wr_rconn_readonly(r)) {
        /* a replica now (a failover demoted it): an outage, not this command's
         * failure; the next connect looks for the primary again */
        snprintf(c->err, sizeof(c->err), "Redis is a read-only replica now: %.400s", r->str);
        freeReplyObject(r);
        redisFree(c->c);
        c->c = NULL;
        c->owed = 0;
        return NULL;
    }
    return r;
}

redisReply *wr_rconn_command(wr_rconn *c, int argc, const char **argv, const size_t *lens)
{
    if (c->owed > 0) {
        snprintf(c->err, sizeof(c->err), "%s: replies still owed", argc > 0 ? argv[0] : "command");
        return NULL;
    }
    if (wr_rconn_append(c, argc, argv, lens) != 0) {
        return NULL;
    }
    return wr_rconn_read(c);
}

redisReply *wr_rconn_commandf(wr_rconn *c, const char *fmt, ...)
{
    if (c->owed > 0) {
        snprintf(c->err, sizeof(c->err), "replies still owed");
        return NULL;
    }
    if (c->c == NULL && connect_now(c) != 0) {
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAppendCommand(c->c, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        drop(c, "command");
        return NULL;
    }
    c->owed++;
    return wr_rconn_read(c);
}

int wr_rconn_readonly(const redisReply *r)
{
    /* plain commands and scripts that write answer "READONLY You can't write
     * against a read only replica."; WAIT answers "ERR WAIT cannot be used
     * with replica instances" (Redis 7.0) */
    return r != NULL && r->type == REDIS_REPLY_ERROR &&
           (strncmp(r->str, "READONLY", 8) == 0 || strstr(r->str, "-READONLY") != NULL ||
            strstr(r->str, "You can't write against a read only replica") != NULL ||
            strstr(r->str, "WAIT cannot be used with replica") != NULL);
}

int wr_rconn_noscript(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

int wr_rconn_read_record(wr_rconn *c, const char *key, wr_record *r, redisReply **hold, char *err,
                         size_t errcap)
{
    memset(r, 0, sizeof(*r));
    *hold = wr_rconn_commandf(c, "GET %s", key);
    redisReply *rep = *hold;
    if (rep == NULL) {
        snprintf(err, errcap, "GET %s: %s", key, c->err);
        return -1;
    }
    if (rep->type == REDIS_REPLY_NIL) {
        return 0;
    }
    if (rep->type == REDIS_REPLY_STRING) {
        if (wr_record_parse(rep->str, rep->len, r) != 0) {
            snprintf(err, errcap, "%s does not hold an idempotency record", key);
            return -1;
        }
        return 0;
    }
    if (rep->type != REDIS_REPLY_ERROR || strncmp(rep->str, "WRONGTYPE", 9) != 0) {
        snprintf(err, errcap, "GET %s: %s", key,
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        return -1;
    }
    /* the hash form of records written before 0.2 */
    freeReplyObject(rep);
    *hold = rep = wr_rconn_commandf(c, "HGETALL %s", key);
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errcap, "HGETALL %s: %s", key,
                 rep == NULL                      ? c->err
                 : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                  : "unexpected reply");
        return -1;
    }
    int n = (int)(rep->elements / 2);
    const char **f = calloc((size_t)n + 1, sizeof(*f));
    const char **v = calloc((size_t)n + 1, sizeof(*v));
    int rc = -1;
    if (f != NULL && v != NULL) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (rep->element[2 * i]->type == REDIS_REPLY_STRING &&
                rep->element[2 * i + 1]->type == REDIS_REPLY_STRING) {
                f[k] = rep->element[2 * i]->str;
                v[k++] = rep->element[2 * i + 1]->str;
            }
        }
        rc = wr_record_from_hash(f, v, k, r);
        if (rc != 0) {
            snprintf(err, errcap, "%s does not hold an idempotency record", key);
        }
    } else {
        snprintf(err, errcap, "out of memory");
    }
    free(f);
    free(v);
    return rc;
}
