/*
 * idem: idempotency records in Redis through server-side scripts. See idem.h.
 */
#include "idem.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * KEYS[1] the record; ARGV: token, lease_ms, ttl_ms (0: keep forever).
 * Returns {status, detail}: {"acquired"|"takeover", starts}, {"busy", ms left},
 * {"done", outcome}. A key that TOKEN already holds is acquired again: that is
 * our own earlier claim (a batch re-sent after NOSCRIPT, or a redelivery after
 * our broker connection dropped before the commit), never another worker's.
 * Callers never claim one key twice in one batch.
 */
static const char claim_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local h = redis.call('HMGET', KEYS[1], 'state', 'lease_until', 'outcome', 'token')\n"
    "if h[1] == 'done' then return {'done', h[3] or ''} end\n"
    "local status = 'acquired'\n"
    "if h[1] == 'processing' and h[4] ~= ARGV[1] then\n"
    "  local left = (tonumber(h[2]) or 0) - now\n"
    "  if left > 0 then return {'busy', tostring(left)} end\n"
    "  status = 'takeover'\n"
    "end\n"
    "local lease = tonumber(ARGV[2])\n"
    "local starts = redis.call('HINCRBY', KEYS[1], 'starts', 1)\n"
    "redis.call('HSET', KEYS[1], 'state', 'processing', 'token', ARGV[1],\n"
    "           'lease_until', tostring(now + lease))\n"
    "local ttl = tonumber(ARGV[3])\n"
    "if ttl > 0 then redis.call('PEXPIRE', KEYS[1], math.max(ttl, 2 * lease))\n"
    "else redis.call('PERSIST', KEYS[1]) end\n"
    "return {status, tostring(starts)}\n";

/*
 * KEYS[1] the record; ARGV: token, op (done|release|extend), outcome, ttl_ms,
 * lease_ms. Returns 1 when the token owned the key and the op was applied, 0
 * otherwise (nothing changed).
 */
static const char finish_lua[] =
    "local h = redis.call('HMGET', KEYS[1], 'state', 'token')\n"
    "if h[1] ~= 'processing' or h[2] ~= ARGV[1] then return 0 end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "if ARGV[2] == 'done' then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'done', 'outcome', ARGV[3], 'done_at', tostring(now))\n"
    "  redis.call('HDEL', KEYS[1], 'token', 'lease_until')\n"
    "  local ttl = tonumber(ARGV[4])\n"
    "  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end\n"
    "elseif ARGV[2] == 'release' then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'released')\n"
    "  redis.call('HDEL', KEYS[1], 'token', 'lease_until')\n"
    "else\n"
    "  redis.call('HSET', KEYS[1], 'lease_until', tostring(now + tonumber(ARGV[5])))\n"
    "end\n"
    "return 1\n";

struct wr_idem {
    redisContext *c;
    wr_redis_url url; /* borrowed from the config */
    int64_t timeout_ms;
    char claim_sha[41];
    char finish_sha[41];
    char err[512];
};

static int fail(wr_idem *d, const char *what)
{
    snprintf(d->err, sizeof(d->err), "%s: %s", what,
             d->c && d->c->err ? d->c->errstr : "unexpected reply");
    if (d->c != NULL) {
        redisFree(d->c);
        d->c = NULL;
    }
    return -1;
}

/* Run one command and check for an error reply. Frees the reply. */
static int simple(wr_idem *d, const char *what, redisReply *r)
{
    if (r == NULL) {
        return fail(d, what);
    }
    int bad = r->type == REDIS_REPLY_ERROR;
    if (bad) {
        snprintf(d->err, sizeof(d->err), "%s: %s", what, r->str);
    }
    freeReplyObject(r);
    return bad ? -1 : 0;
}

static int load_script(wr_idem *d, const char *src, char *sha)
{
    redisReply *r = redisCommand(d->c, "SCRIPT LOAD %s", src);
    if (r == NULL) {
        return fail(d, "SCRIPT LOAD");
    }
    int ok = r->type == REDIS_REPLY_STRING && r->len == 40;
    if (ok) {
        memcpy(sha, r->str, 41);
    } else {
        snprintf(d->err, sizeof(d->err), "SCRIPT LOAD: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    freeReplyObject(r);
    return ok ? 0 : -1;
}

/*
 * (Re)connect: TCP with the timeout, then the command timeout and keep-alive
 * (hiredis 0.14 forgets both on reconnect: PLATFORM.md), AUTH, SELECT and
 * the scripts.
 */
static int connect_redis(wr_idem *d)
{
    struct timeval tv = {.tv_sec = (time_t)(d->timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(d->timeout_ms % 1000) * 1000};
    if (d->c != NULL) {
        redisFree(d->c);
    }
    d->c = redisConnectWithTimeout(d->url.host, d->url.port, tv);
    if (d->c == NULL) {
        snprintf(d->err, sizeof(d->err), "connect: out of memory");
        return -1;
    }
    if (d->c->err) {
        char msg[200];
        snprintf(msg, sizeof(msg), "connect to %s:%d", d->url.host, d->url.port);
        return fail(d, msg);
    }
    if (redisSetTimeout(d->c, tv) != REDIS_OK || redisEnableKeepAlive(d->c) != REDIS_OK) {
        return fail(d, "socket options");
    }
    if (d->url.password != NULL) {
        redisReply *r = d->url.user ? redisCommand(d->c, "AUTH %s %s", d->url.user, d->url.password)
                                    : redisCommand(d->c, "AUTH %s", d->url.password);
        if (simple(d, "AUTH", r) != 0) {
            return -1;
        }
    }
    if (d->url.db != 0 && simple(d, "SELECT", redisCommand(d->c, "SELECT %d", d->url.db)) != 0) {
        return -1;
    }
    if (load_script(d, claim_lua, d->claim_sha) != 0 ||
        load_script(d, finish_lua, d->finish_sha) != 0) {
        return -1;
    }
    return 0;
}

wr_idem *wr_idem_create(const wr_redis_url *url, int64_t timeout_ms, char *err, size_t errcap)
{
    wr_idem *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    d->url = *url;
    d->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    if (connect_redis(d) != 0) {
        snprintf(err, errcap, "%s", d->err);
        wr_idem_destroy(d);
        return NULL;
    }
    return d;
}

void wr_idem_destroy(wr_idem *d)
{
    if (d != NULL) {
        if (d->c != NULL) {
            redisFree(d->c);
        }
        free(d);
    }
}

const char *wr_idem_error(const wr_idem *d)
{
    return d->err;
}

int wr_idem_ping(wr_idem *d)
{
    if (d->c == NULL && connect_redis(d) != 0) {
        return -1;
    }
    redisReply *r = redisCommand(d->c, "PING");
    if (r == NULL) {
        return fail(d, "PING");
    }
    freeReplyObject(r);
    return 0;
}

static int is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/*
 * Send one EVALSHA per entry (pipelined), read all replies into REPLIES. A
 * NOSCRIPT (Redis restarted or flushed its script cache) reloads the scripts
 * and sends the whole batch again, once: both scripts are safe to repeat for
 * entries that did run (a claim by the same token is acquired again; a done or
 * release that ran reports LOST the second time, which only costs a
 * redelivery). Returns 0 or -1; the caller frees the replies.
 */
typedef void (*append_fn)(wr_idem *d, const void *entry, int i);

static int pipeline(wr_idem *d, int n, append_fn append, const void *entries,
                    redisReply **replies)
{
    for (int round = 0; round < 2; round++) {
        if (d->c == NULL && connect_redis(d) != 0) {
            return -1;
        }
        for (int i = 0; i < n; i++) {
            append(d, entries, i);
        }
        int noscript = 0;
        for (int i = 0; i < n; i++) {
            void *r = NULL;
            if (redisGetReply(d->c, &r) != REDIS_OK || r == NULL) {
                for (int k = 0; k < i; k++) {
                    freeReplyObject(replies[k]);
                }
                return fail(d, "EVALSHA");
            }
            replies[i] = r;
            noscript |= is_noscript(replies[i]);
        }
        if (!noscript) {
            return 0;
        }
        for (int i = 0; i < n; i++) {
            freeReplyObject(replies[i]);
        }
        if (load_script(d, claim_lua, d->claim_sha) != 0 ||
            load_script(d, finish_lua, d->finish_sha) != 0) {
            return -1;
        }
    }
    snprintf(d->err, sizeof(d->err), "EVALSHA: NOSCRIPT after reloading the scripts");
    return -1;
}

typedef struct {
    wr_claim *claims;
    const char *token;
    long long lease_ms, ttl_ms;
} claim_args;

static void append_claim(wr_idem *d, const void *entries, int i)
{
    const claim_args *a = entries;
    redisAppendCommand(d->c, "EVALSHA %s 1 %s %s %lld %lld", d->claim_sha, a->claims[i].key,
                       a->token, a->lease_ms, a->ttl_ms);
}

int wr_idem_claim(wr_idem *d, wr_claim *claims, int n, const char *token, int64_t lease_ms,
                  int64_t ttl_ms)
{
    if (n == 0) {
        return 0;
    }
    redisReply **replies = calloc((size_t)n, sizeof(*replies));
    if (replies == NULL) {
        snprintf(d->err, sizeof(d->err), "out of memory");
        return -1;
    }
    claim_args a = {claims, token, (long long)lease_ms, (long long)ttl_ms};
    int rc = pipeline(d, n, append_claim, &a, replies);
    for (int i = 0; rc == 0 && i < n; i++) {
        redisReply *r = replies[i];
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_STRING) {
            snprintf(d->err, sizeof(d->err), "claim: unexpected reply%s%s",
                     r->type == REDIS_REPLY_ERROR ? ": " : "",
                     r->type == REDIS_REPLY_ERROR ? r->str : "");
            rc = -1;
            break;
        }
        const char *st = r->element[0]->str;
        const char *detail = r->element[1]->str;
        wr_claim *c = &claims[i];
        c->starts = 0;
        c->busy_ms = 0;
        c->outcome[0] = '\0';
        if (strcmp(st, "done") == 0) {
            c->status = WR_CLAIM_DONE;
            snprintf(c->outcome, sizeof(c->outcome), "%s", detail);
        } else if (strcmp(st, "busy") == 0) {
            c->status = WR_CLAIM_BUSY;
            c->busy_ms = strtoll(detail, NULL, 10);
        } else {
            c->status = strcmp(st, "takeover") == 0 ? WR_CLAIM_TAKEOVER : WR_CLAIM_ACQUIRED;
            c->starts = (int)strtol(detail, NULL, 10);
        }
    }
    for (int i = 0; i < n; i++) {
        if (replies[i] != NULL) {
            freeReplyObject(replies[i]);
        }
    }
    free(replies);
    return rc;
}

typedef struct {
    wr_finish *ops;
    const char *token;
    long long lease_ms, ttl_ms;
} finish_args;

static void append_finish(wr_idem *d, const void *entries, int i)
{
    static const char *names[] = {"done", "release", "extend"};
    const finish_args *a = entries;
    const wr_finish *f = &a->ops[i];
    redisAppendCommand(d->c, "EVALSHA %s 1 %s %s %s %s %lld %lld", d->finish_sha, f->key,
                       a->token, names[f->op], f->outcome ? f->outcome : "", a->ttl_ms,
                       a->lease_ms);
}

int wr_idem_finish(wr_idem *d, wr_finish *ops, int n, const char *token, int64_t lease_ms,
                   int64_t ttl_ms)
{
    if (n == 0) {
        return 0;
    }
    redisReply **replies = calloc((size_t)n, sizeof(*replies));
    if (replies == NULL) {
        snprintf(d->err, sizeof(d->err), "out of memory");
        return -1;
    }
    finish_args a = {ops, token, (long long)lease_ms, (long long)ttl_ms};
    int rc = pipeline(d, n, append_finish, &a, replies);
    for (int i = 0; rc == 0 && i < n; i++) {
        if (replies[i]->type != REDIS_REPLY_INTEGER) {
            snprintf(d->err, sizeof(d->err), "finish: unexpected reply%s%s",
                     replies[i]->type == REDIS_REPLY_ERROR ? ": " : "",
                     replies[i]->type == REDIS_REPLY_ERROR ? replies[i]->str : "");
            rc = -1;
            break;
        }
        ops[i].owned = replies[i]->integer == 1;
    }
    for (int i = 0; i < n; i++) {
        if (replies[i] != NULL) {
            freeReplyObject(replies[i]);
        }
    }
    free(replies);
    return rc;
}
