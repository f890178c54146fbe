/*
 * idem: idempotency records in Redis through server-side scripts. See idem.h.
 */
#include "idem.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Claim every key of a batch in one script call (one round trip, and one
 * script invocation's overhead on the Redis side for the whole batch).
 * KEYS: the records; ARGV: token, lease_ms, ttl_ms (0: keep forever).
 * Returns a flat array, two entries per key: "acquired"|"takeover", starts;
 * "busy", ms left; "done", outcome. A key that TOKEN already holds is acquired
 * again: that is our own earlier claim (a redelivery after our broker
 * connection dropped before the commit), never another worker's. Callers
 * never pass one key twice in one call.
 */
static const char claim_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local token, lease, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local out = {}\n"
    "for _, k in ipairs(KEYS) do\n"
    "  local h = redis.call('HMGET', k, 'state', 'lease_until', 'outcome', 'token', 'starts')\n"
    "  local status = 'acquired'\n"
    "  if h[1] == 'done' then\n"
    "    status = nil\n"
    "    out[#out + 1] = 'done'; out[#out + 1] = h[3] or ''\n"
    "  elseif h[1] == 'processing' and h[4] ~= token then\n"
    "    local left = (tonumber(h[2]) or 0) - now\n"
    "    if left > 0 then\n"
    "      status = nil\n"
    "      out[#out + 1] = 'busy'; out[#out + 1] = tostring(left)\n"
    "    else\n"
    "      status = 'takeover'\n"
    "    end\n"
    "  end\n"
    "  if status then\n"
    /* our own token: this process never died, so it is not another start */
    "    local starts = tonumber(h[5]) or 0\n"
    "    if not (h[4] == token and h[1] == 'processing') then starts = starts + 1 end\n"
    "    redis.call('HSET', k, 'state', 'processing', 'token', token,\n"
    "               'lease_until', tostring(now + lease), 'starts', tostring(starts))\n"
    "    if ttl > 0 then redis.call('PEXPIRE', k, math.max(ttl, 2 * lease))\n"
    "    else redis.call('PERSIST', k) end\n"
    "    out[#out + 1] = status; out[#out + 1] = tostring(starts)\n"
    "  end\n"
    "end\n"
    "return out\n";

/*
 * Finish every record of a batch in one script call. KEYS: the records
 * (NREC of them), then the ctx.store keys their writes and guarded reads
 * touch (storebuf.h: each key the script reads or writes is declared, so
 * Redis Cluster can check they share a slot). ARGV: token, ttl_ms, lease_ms,
 * NREC, then four per record: op (done|release|unclaim|extend), outcome, how
 * many store writes it carries and how many ARGV slots its guards take; then,
 * record by record, its guards (command, index of its key in KEYS, field or
 * member, count, then COUNT items: what the read saw) and its writes (four
 * each, in order: name, index of its key in KEYS, and two arguments: see
 * wr_sb_op in storebuf.h).
 *
 * Returns one entry per record: 1 when the token owned it and the op was
 * applied (for done: the done mark and every write of the record, in one
 * step); 0 when it did not own it (nothing changed, no write applied); or,
 * for a done whose writes cannot apply (a key of another type in Redis, a
 * counter that is not an integer), a string saying why: then nothing of the
 * record's writes is applied and the record is left as it was (processing,
 * ours: the caller dead-letters the message and then marks it done);
 * or "conflict: ..." when a guarded read no longer holds (another message
 * changed what this one read): nothing applied, the record unclaimed, so the
 * message runs again from fresh state. Guards and writes are checked before
 * any write is applied, so a record's writes are all applied or none (a
 * Redis script is not rolled back on an error).
 */
static const char finish_lua[] =
    "local token, ttl, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local nrec = tonumber(ARGV[4])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local LIMIT = 9.2e18\n"
    /* Redis's own integer grammar (string2ll): no '+', no leading zeros, no
     * spaces, at most 20 characters, within a signed 64-bit range (LIMIT is a
     * little inside it: Lua numbers are doubles) */
    "local function int_of(v)\n"
    "  if type(v) ~= 'string' or #v == 0 or #v > 20 then return nil end\n"
    "  if v ~= '0' and not string.match(v, '^%-?[1-9]%d*$') then return nil end\n"
    "  local n = tonumber(v)\n"
    "  if n == nil or math.abs(n) >= LIMIT then return nil end\n"
    "  return n\n"
    "end\n"
    "local compat = {incrby = 'string', hset = 'hash', hdel = 'hash', hincrby = 'hash',\n"
    "                sadd = 'set', srem = 'set'}\n"
    /* Check a record's writes against what Redis holds by playing them forward:
     * the type of every key written, and the value of every counter after each
     * increment (not only the first), so that no write can fail once applying
     * has begun (a script is not rolled back: a write that failed halfway would
     * leave the ones before it applied). Returns nil, or why the writes are
     * refused. */
    "local function check(w, nw)\n"
    "  local kind, val, fields, gone = {}, {}, {}, {}\n"
    "  local function current(k)\n"
    "    if val[k] ~= nil then return val[k] end\n"
    "    if kind[k] == 'none' then return false end\n"
    "    local v = redis.pcall('GET', k)\n"
    "    if type(v) == 'table' then return nil end\n"
    "    return v\n"
    "  end\n"
    "  local function current_field(k, f)\n"
    "    local fk = fields[k]\n"
    "    if fk and fk[f] ~= nil then return fk[f] end\n"
    "    if kind[k] == 'none' or gone[k] then return false end\n"
    "    local v = redis.pcall('HGET', k, f)\n"
    "    if type(v) == 'table' then return nil end\n"
    "    return v\n"
    "  end\n"
    "  local function set_field(k, f, v)\n"
    "    fields[k] = fields[k] or {}\n"
    "    fields[k][f] = v\n"
    "  end\n"
    "  for j = 0, nw - 1 do\n"
    "    local b = w + 4 * j\n"
    "    local op, k, x, y = ARGV[b], KEYS[tonumber(ARGV[b + 1])], ARGV[b + 2], ARGV[b + 3]\n"
    "    local want = compat[op]\n"
    "    if want then\n"
    "      local have = kind[k]\n"
    "      if have == nil then have = redis.call('TYPE', k).ok; kind[k] = have end\n"
    "      if have ~= 'none' and have ~= want then\n"
    "        return 'ctx.store.' .. op .. ': key ' .. k .. ' holds a ' .. have .. ' in Redis'\n"
    "      end\n"
    "      if op == 'incrby' then\n"
    "        local cur = current(k)\n"
    "        local n = cur == false and 0 or int_of(cur)\n"
    "        local s = n and n + tonumber(x)\n"
    "        if s == nil or math.abs(s) >= LIMIT then\n"
    "          return 'ctx.store.incrby: the value of ' .. k .. ' is not an integer or would '\n"
    "                 .. 'overflow'\n"
    "        end\n"
    "        val[k] = string.format('%.0f', s)\n"
    "      elseif op == 'hincrby' then\n"
    "        local cur = current_field(k, x)\n"
    "        local n = cur == false and 0 or int_of(cur)\n"
    "        local s = n and n + tonumber(y)\n"
    "        if s == nil or math.abs(s) >= LIMIT then\n"
    "          return 'ctx.store.hincrby: field ' .. x .. ' of ' .. k .. ' is not an integer or '\n"
    "                 .. 'would overflow'\n"
    "        end\n"
    "        set_field(k, x, string.format('%.0f', s))\n"
    "      elseif op == 'hset' then set_field(k, x, y)\n"
    "      elseif op == 'hdel' then set_field(k, x, false)\n"
    "      end\n"
    "      if op ~= 'hdel' and op ~= 'srem' then kind[k] = want end\n"
    "    elseif op == 'set' then kind[k] = 'string'; val[k] = x; fields[k] = nil\n"
    "    elseif op == 'del' then kind[k] = 'none'; val[k] = false; fields[k] = nil; gone[k] = true\n"
    "    end\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    /* do the record's guarded reads still see what the handler saw? */
    "local function guards_hold(g, stop)\n"
    "  while g < stop do\n"
    "    local cmd, k, a, c = ARGV[g], KEYS[tonumber(ARGV[g + 1])], ARGV[g + 2],\n"
    "                         tonumber(ARGV[g + 3])\n"
    "    local o = g + 4\n"
    "    local ok, cur\n"
    "    if cmd == 'GET' or cmd == 'HGET' or cmd == 'EXISTS' or cmd == 'SISMEMBER' then\n"
    "      if cmd == 'GET' or cmd == 'EXISTS' then cur = redis.pcall(cmd, k)\n"
    "      else cur = redis.pcall(cmd, k, a) end\n"
    "      if type(cur) == 'table' then return false, k end\n"
    "      if type(cur) == 'number' then cur = tostring(cur) end\n"
    "      if c == 0 then ok = not cur else ok = cur == ARGV[o] end\n"
    "    else\n"
    "      cur = redis.pcall(cmd, k)\n"
    "      if cur.err or #cur ~= c then return false, k end\n"
    "      local seen = {}\n"
    "      if cmd == 'HGETALL' then\n"
    "        for i = 1, #cur, 2 do seen[cur[i]] = cur[i + 1] end\n"
    "        ok = true\n"
    "        for i = o, o + c - 1, 2 do ok = ok and seen[ARGV[i]] == ARGV[i + 1] end\n"
    "      else\n"
    "        for i = 1, #cur do seen[cur[i]] = true end\n"
    "        ok = true\n"
    "        for i = o, o + c - 1 do ok = ok and seen[ARGV[i]] == true end\n"
    "      end\n"
    "    end\n"
    "    if not ok then return false, k end\n"
    "    g = o + c\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local function apply(w, nw)\n"
    "  for j = 0, nw - 1 do\n"
    "    local b = w + 4 * j\n"
    "    local op, k, x, y = ARGV[b], KEYS[tonumber(ARGV[b + 1])], ARGV[b + 2], ARGV[b + 3]\n"
    "    if op == 'set' then\n"
    "      if tonumber(y) > 0 then redis.call('SET', k, x, 'PX', y)\n"
    "      else redis.call('SET', k, x) end\n"
    "    elseif op == 'del' then redis.call('DEL', k)\n"
    "    elseif op == 'incrby' then redis.call('INCRBY', k, x)\n"
    "    elseif op == 'expire' then redis.call('PEXPIRE', k, x)\n"
    "    elseif op == 'hset' then redis.call('HSET', k, x, y)\n"
    "    elseif op == 'hdel' then redis.call('HDEL', k, x)\n"
    "    elseif op == 'hincrby' then redis.call('HINCRBY', k, x, y)\n"
    "    elseif op == 'sadd' then redis.call('SADD', k, x)\n"
    "    elseif op == 'srem' then redis.call('SREM', k, x)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local out = {}\n"
    "local w = 5 + 4 * nrec\n"
    "for i = 1, nrec do\n"
    "  local k = KEYS[i]\n"
    "  local op, outcome = ARGV[1 + 4 * i], ARGV[2 + 4 * i]\n"
    "  local nw, ng = tonumber(ARGV[3 + 4 * i]), tonumber(ARGV[4 + 4 * i])\n"
    "  local h = redis.call('HMGET', k, 'state', 'token')\n"
    "  if h[1] ~= 'processing' or h[2] ~= token then\n"
    "    out[i] = 0\n"
    "  else\n"
    "    local refused = nil\n"
    "    if op == 'done' and nw > 0 then\n"
    "      local held, changed = guards_hold(w, w + ng)\n"
    "      if not held then\n"
    "        refused = 'conflict: ' .. changed .. ' changed since the handler read it'\n"
    "        op = 'unclaim'\n"
    "      else\n"
    "        refused = check(w + ng, nw)\n"
    "        if refused then op = 'keep' else apply(w + ng, nw) end\n"
    "      end\n"
    "    end\n"
    "    if op == 'done' then\n"
    "      redis.call('HSET', k, 'state', 'done', 'outcome', outcome, 'done_at', tostring(now))\n"
    "      redis.call('HDEL', k, 'token', 'lease_until')\n"
    "      if ttl > 0 then redis.call('PEXPIRE', k, ttl) else redis.call('PERSIST', k) end\n"
    "    elseif op == 'release' or op == 'unclaim' then\n"
    "      redis.call('HSET', k, 'state', 'released')\n"
    "      redis.call('HDEL', k, 'token', 'lease_until')\n"
    "      if op == 'unclaim' then redis.call('HINCRBY', k, 'starts', -1) end\n"
    "    elseif op == 'extend' then\n"
    "      redis.call('HSET', k, 'lease_until', tostring(now + lease))\n"
    "    end\n"
    "    out[i] = refused or 1\n"
    "  end\n"
    "  w = w + ng + 4 * nw\n"
    "end\n"
    "return out\n";

struct wr_idem {
    redisContext *c;
    wr_redis_url url; /* borrowed from the config */
    int64_t timeout_ms;
    char claim_sha[41];
    char finish_sha[41];
    char err[512];
    redisReply *last;     /* wr_idem_store_fetch: the reply its answer points into */
    wr_sbstr *items;      /* ... and its array answers */
    size_t items_cap;
    /* journal writes sent but not yet answered (wr_idem_journal does not wait):
     * their replies are read first thing in the next call, see usable() */
    int jowed;           /* replies owed: 2 per journal (RPUSH, PEXPIRE) */
    char **jkeys;        /* the journals written, to trim those past the cap */
    int jkey_count, jkey_cap;
    int jmax;            /* max_entries of the last write */
    int jerrors;         /* error replies collected and not yet reported */
    char jerr[256];
};

static void forget_journal(wr_idem *d)
{
    for (int i = 0; i < d->jkey_count; i++) {
        free(d->jkeys[i]);
    }
    d->jkey_count = 0;
    d->jowed = 0;
}

static int fail(wr_idem *d, const char *what)
{
    forget_journal(d); /* the connection goes: nothing more will answer */
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
        if (d->last != NULL) {
            freeReplyObject(d->last);
        }
        free(d->items);
        forget_journal(d);
        free(d->jkeys);
        free(d);
    }
}

const char *wr_idem_error(const wr_idem *d)
{
    return d->err;
}

static int collect_journal(wr_idem *d);
static int unexpected(wr_idem *d, const char *what, const redisReply *r);

/*
 * Make D ready for a command: connected, and the replies owed by the last
 * journal write read (a reply stream is in order, so they come first). Every
 * call that talks to Redis starts here. Returns 0, or -1 with d->err set.
 */
static int usable(wr_idem *d)
{
    if (d->c == NULL) {
        forget_journal(d);
        return connect_redis(d);
    }
    return d->jowed > 0 ? collect_journal(d) : 0;
}

int wr_idem_ping(wr_idem *d)
{
    if (usable(d) != 0) {
        return -1;
    }
    redisReply *r = redisCommand(d->c, "PING");
    if (r == NULL) {
        return fail(d, "PING");
    }
    /* BUSY (a long script), LOADING (a restart reading its data): not serving */
    int ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    if (!ok) {
        unexpected(d, "PING", r);
    }
    freeReplyObject(r);
    return ok ? 0 : -1;
}

static int is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/*
 * Run one EVALSHA with ARGC arguments (argv[1] is filled with the script's
 * SHA here). On NOSCRIPT (Redis restarted or flushed its script cache: the
 * script did not run at all) load the scripts and send it once more. Returns
 * the reply (caller frees) or NULL with d->err set.
 */
static redisReply *evalsha(wr_idem *d, const char *sha_of, int argc, const char **argv,
                           size_t *lens)
{
    for (int round = 0; round < 2; round++) {
        if (usable(d) != 0) {
            return NULL;
        }
        argv[1] = sha_of == claim_lua ? d->claim_sha : d->finish_sha;
        lens[1] = strlen(argv[1]);
        redisReply *r = redisCommandArgv(d->c, argc, argv, lens);
        if (r == NULL) {
            fail(d, "EVALSHA");
            return NULL;
        }
        if (!is_noscript(r)) {
            return r;
        }
        freeReplyObject(r);
        if (load_script(d, claim_lua, d->claim_sha) != 0 ||
            load_script(d, finish_lua, d->finish_sha) != 0) {
            return NULL;
        }
    }
    snprintf(d->err, sizeof(d->err), "EVALSHA: NOSCRIPT after reloading the scripts");
    return NULL;
}

/* Argument vectors for one call: EVALSHA sha numkeys key... arg... */
typedef struct {
    const char **argv;
    size_t *lens;
    int argc;
    char nums[4][24];
} args;

static int args_init(args *a, int cap)
{
    a->argv = calloc((size_t)cap, sizeof(*a->argv));
    a->lens = calloc((size_t)cap, sizeof(*a->lens));
    a->argc = 0;
    return a->argv && a->lens ? 0 : -1;
}

static void args_free(args *a)
{
    free(a->argv);
    free(a->lens);
}

static void args_add(args *a, const char *s)
{
    a->argv[a->argc] = s;
    a->lens[a->argc] = strlen(s);
    a->argc++;
}

/* A binary-safe argument (ctx.store keys and values). */
static void args_addn(args *a, const char *s, size_t n)
{
    a->argv[a->argc] = s;
    a->lens[a->argc] = n;
    a->argc++;
}

static void args_num(args *a, int slot, long long v)
{
    snprintf(a->nums[slot], sizeof(a->nums[slot]), "%lld", v);
    args_add(a, a->nums[slot]);
}

static int unexpected(wr_idem *d, const char *what, const redisReply *r)
{
    snprintf(d->err, sizeof(d->err), "%s: unexpected reply%s%s", what,
             r->type == REDIS_REPLY_ERROR ? ": " : "",
             r->type == REDIS_REPLY_ERROR ? r->str : "");
    return -1;
}

int wr_idem_claim(wr_idem *d, wr_claim *claims, int n, const char *token, int64_t lease_ms,
                  int64_t ttl_ms)
{
    if (n == 0) {
        return 0;
    }
    args a;
    if (args_init(&a, n + 6) != 0) {
        args_free(&a);
        snprintf(d->err, sizeof(d->err), "out of memory");
        return -1;
    }
    args_add(&a, "EVALSHA");
    args_add(&a, ""); /* the SHA, filled by evalsha() */
    args_num(&a, 0, n);
    for (int i = 0; i < n; i++) {
        args_add(&a, claims[i].key);
    }
    args_add(&a, token);
    args_num(&a, 1, (long long)lease_ms);
    args_num(&a, 2, (long long)ttl_ms);
    redisReply *r = evalsha(d, claim_lua, a.argc, a.argv, a.lens);
    args_free(&a);
    if (r == NULL) {
        return -1;
    }
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)n * 2) {
        rc = unexpected(d, "claim", r);
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        redisReply *st = r->element[2 * i], *detail = r->element[2 * i + 1];
        if (st->type != REDIS_REPLY_STRING || detail->type != REDIS_REPLY_STRING) {
            rc = unexpected(d, "claim", st);
            break;
        }
        wr_claim *c = &claims[i];
        c->starts = 0;
        c->busy_ms = 0;
        c->outcome[0] = '\0';
        if (strcmp(st->str, "done") == 0) {
            c->status = WR_CLAIM_DONE;
            snprintf(c->outcome, sizeof(c->outcome), "%s", detail->str);
        } else if (strcmp(st->str, "busy") == 0) {
            c->status = WR_CLAIM_BUSY;
            c->busy_ms = strtoll(detail->str, NULL, 10);
        } else {
            c->status = strcmp(st->str, "takeover") == 0 ? WR_CLAIM_TAKEOVER : WR_CLAIM_ACQUIRED;
            c->starts = (int)strtol(detail->str, NULL, 10);
        }
    }
    freeReplyObject(r);
    return rc;
}

int wr_idem_finish(wr_idem *d, wr_finish *ops, int n, const char *token, int64_t lease_ms,
                   int64_t ttl_ms)
{
    static const char *names[] = {"done", "release", "extend", "unclaim"};
    if (n <= 0) {
        return 0;
    }
    /* the store writes ride along with their DONE records */
    /* the store writes (and the reads they depend on) ride along with their DONE
     * records; a record without writes needs no guard */
    int total_writes = 0, total_keys = 0, total_guards = 0, guard_slots = 0;
    for (int i = 0; i < n; i++) {
        ops[i].refused = 0;
        ops[i].conflict = 0;
        ops[i].why[0] = '\0';
        int nw = 0, ng = 0;
        if (ops[i].op == WR_FINISH_DONE && ops[i].writes != NULL) {
            wr_storebuf_writes(ops[i].writes, &nw);
        }
        if (nw > 0) {
            const wr_sb_guard *g = wr_storebuf_guards(ops[i].writes, &ng);
            for (int j = 0; j < ng; j++) {
                guard_slots += 4 + (int)g[j].count;
            }
            total_writes += nw;
            total_guards += ng;
            total_keys += wr_storebuf_key_count(ops[i].writes);
        }
    }
    args a;
    char(*nums)[24] = calloc((size_t)(2 * n + 2 * total_writes + 2 * total_guards + 1),
                              sizeof(*nums));
    if (args_init(&a, 5 * n + 8 + total_keys + 4 * total_writes + guard_slots) != 0 ||
        nums == NULL) {
        args_free(&a);
        free(nums);
        snprintf(d->err, sizeof(d->err), "out of memory");
        return -1;
    }
    int nn = 0;
    args_add(&a, "EVALSHA");
    args_add(&a, "");
    snprintf(nums[nn], sizeof(nums[nn]), "%d", n + total_keys);
    args_add(&a, nums[nn++]);
    for (int i = 0; i < n; i++) {
        args_add(&a, ops[i].key);
    }
    /* the store keys, record by record: a write names its key by index in KEYS */
    int *key_base = calloc((size_t)n, sizeof(*key_base));
    if (key_base == NULL) {
        args_free(&a);
        free(nums);
        snprintf(d->err, sizeof(d->err), "out of memory");
        return -1;
    }
    int next_key = n + 1; /* Lua's KEYS is 1-based */
    for (int i = 0; i < n; i++) {
        int nw = 0;
        if (ops[i].op == WR_FINISH_DONE && ops[i].writes != NULL) {
            wr_storebuf_writes(ops[i].writes, &nw);
        }
        key_base[i] = next_key;
        for (int k = 0; nw > 0 && k < wr_storebuf_key_count(ops[i].writes); k++) {
            wr_sbstr key = wr_storebuf_key(ops[i].writes, k);
            args_addn(&a, key.p, key.n);
            next_key++;
        }
    }
    args_add(&a, token);
    args_num(&a, 1, (long long)ttl_ms);
    args_num(&a, 2, (long long)lease_ms);
    args_num(&a, 3, (long long)n);
    for (int i = 0; i < n; i++) {
        int nw = 0;
        if (ops[i].op == WR_FINISH_DONE && ops[i].writes != NULL) {
            wr_storebuf_writes(ops[i].writes, &nw);
        }
        int slots = 0, ng = 0;
        if (nw > 0) {
            const wr_sb_guard *g = wr_storebuf_guards(ops[i].writes, &ng);
            for (int j = 0; j < ng; j++) {
                slots += 4 + (int)g[j].count;
            }
        }
        args_add(&a, names[ops[i].op]);
        args_add(&a, ops[i].outcome ? ops[i].outcome : "");
        snprintf(nums[nn], sizeof(nums[nn]), "%d", nw);
        args_add(&a, nums[nn++]);
        snprintf(nums[nn], sizeof(nums[nn]), "%d", slots);
        args_add(&a, nums[nn++]);
    }
    for (int i = 0; i < n; i++) {
        int nw = 0;
        const wr_sb_write *ws = NULL;
        if (ops[i].op == WR_FINISH_DONE && ops[i].writes != NULL) {
            ws = wr_storebuf_writes(ops[i].writes, &nw);
        }
        int ng = 0;
        const wr_sb_guard *gs = nw > 0 ? wr_storebuf_guards(ops[i].writes, &ng) : NULL;
        for (int j = 0; j < ng; j++) {
            const wr_sb_guard *g = &gs[j];
            args_add(&a, g->cmd);
            snprintf(nums[nn], sizeof(nums[nn]), "%d", key_base[i] + g->key);
            args_add(&a, nums[nn++]);
            args_addn(&a, g->arg.p, g->arg.n);
            snprintf(nums[nn], sizeof(nums[nn]), "%zu", g->count);
            args_add(&a, nums[nn++]);
            for (size_t x = 0; x < g->count; x++) {
                args_addn(&a, g->items[x].p, g->items[x].n);
            }
        }
        for (int j = 0; j < nw; j++) {
            const wr_sb_write *w = &ws[j];
            args_add(&a, wr_sb_op_name(w->op));
            snprintf(nums[nn], sizeof(nums[nn]), "%d", key_base[i] + w->key);
            args_add(&a, nums[nn++]);
            switch (w->op) {
            case WR_SB_INCRBY:
            case WR_SB_EXPIRE:
                snprintf(nums[nn], sizeof(nums[nn]), "%lld", (long long)w->num);
                args_add(&a, nums[nn++]);
                args_add(&a, "");
                break;
            case WR_SB_SET:
                args_addn(&a, w->a.p, w->a.n);
                snprintf(nums[nn], sizeof(nums[nn]), "%lld", (long long)w->num);
                args_add(&a, nums[nn++]);
                break;
            case WR_SB_HINCRBY:
                args_addn(&a, w->a.p, w->a.n);
                snprintf(nums[nn], sizeof(nums[nn]), "%lld", (long long)w->num);
                args_add(&a, nums[nn++]);
                break;
            default:
                args_addn(&a, w->a.p, w->a.n);
                args_addn(&a, w->b.p, w->b.n);
                break;
            }
        }
    }
    free(key_base);
    redisReply *r = evalsha(d, finish_lua, a.argc, a.argv, a.lens);
    args_free(&a);
    free(nums);
    if (r == NULL) {
        return -1;
    }
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        /* the script ran and raised: what it did before is not rolled back */
        unexpected(d, "finish script", r);
        freeReplyObject(r);
        return WR_IDEM_SCRIPT_FAILED;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)n) {
        rc = unexpected(d, "finish", r);
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_STRING) {
            /* owned, but its writes were refused (left processing) or its reads
             * changed (unclaimed): nothing applied */
            ops[i].owned = 1;
            ops[i].conflict = strncmp(e->str, "conflict:", 9) == 0;
            ops[i].refused = !ops[i].conflict;
            snprintf(ops[i].why, sizeof(ops[i].why), "%s", e->str);
            continue;
        }
        if (e->type != REDIS_REPLY_INTEGER) {
            rc = unexpected(d, "finish", e);
            break;
        }
        ops[i].owned = e->integer == 1;
    }
    freeReplyObject(r);
    return rc;
}

/*
 * ctx.store's reads (a wr_sb_fetch, UD = the wr_idem): one plain command on
 * the worker's connection. The answer points into the reply, kept until the
 * next call. A connection failure drops the connection (the next call, or the
 * batch's finish, reconnects); an error reply (WRONGTYPE) is returned as the
 * error text.
 */
int wr_idem_store_fetch(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_base *out,
                        char *err, size_t errcap)
{
    wr_idem *d = ud;
    if (d->last != NULL) {
        freeReplyObject(d->last);
        d->last = NULL;
    }
    /* (re)connect, and read what a journal write still owes first: the next
     * reply on the connection must be this command's */
    if (usable(d) != 0) {
        snprintf(err, errcap, "Redis: %s", d->err);
        return -1;
    }
    int with_arg = strcmp(cmd, "HGET") == 0 || strcmp(cmd, "SISMEMBER") == 0;
    const char *argv[3] = {cmd, key.p, arg.p};
    size_t lens[3] = {strlen(cmd), key.n, arg.n};
    redisReply *r = redisCommandArgv(d->c, with_arg ? 3 : 2, argv, lens);
    if (r == NULL) {
        fail(d, cmd);
        snprintf(err, errcap, "Redis: %s", d->err);
        return -1;
    }
    d->last = r;
    switch (r->type) {
    case REDIS_REPLY_ERROR:
        snprintf(err, errcap, "Redis: %s", r->str);
        return -1;
    case REDIS_REPLY_STRING:
        out->present = 1;
        out->str = (wr_sbstr){r->str, r->len};
        return 0;
    case REDIS_REPLY_INTEGER:
        out->num = r->integer;
        return 0;
    case REDIS_REPLY_NIL:
        return 0;
    case REDIS_REPLY_ARRAY:
        if (r->elements > d->items_cap) {
            wr_sbstr *n = realloc(d->items, r->elements * sizeof(*n));
            if (n == NULL) {
                snprintf(err, errcap, "out of memory");
                return -1;
            }
            d->items = n;
            d->items_cap = r->elements;
        }
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *e = r->element[i];
            d->items[i] = e->type == REDIS_REPLY_STRING ? (wr_sbstr){e->str, e->len}
                                                        : (wr_sbstr){"", 0};
        }
        out->items = d->items;
        out->count = r->elements;
        return 0;
    default:
        snprintf(err, errcap, "Redis: unexpected reply to %s", cmd);
        return -1;
    }
}

/*
 * Journal entries (journal.h): plain list commands, pipelined, no script, so
 * nothing here touches the record scripts above. RPUSH's reply is the new
 * length, which tells which lists need an LTRIM; most never do.
 */
/*
 * Read the replies owed by the last journal write; trim the journals that
 * grew past the cap (LTRIM, a round trip of its own, only then). Error replies
 * are kept for the next wr_idem_journal to report; only a broken connection
 * fails the caller. Returns 0 or -1.
 */
static int collect_journal(wr_idem *d)
{
    int owed = d->jowed, trims = 0;
    d->jowed = 0;
    for (int i = 0; i < owed; i++) {
        redisReply *r = NULL;
        if (redisGetReply(d->c, (void **)&r) != REDIS_OK || r == NULL) {
            return fail(d, "journal");
        }
        if (r->type == REDIS_REPLY_ERROR) {
            d->jerrors++;
            snprintf(d->jerr, sizeof(d->jerr), "%s", r->str);
        } else if (i % 2 == 0 && r->type == REDIS_REPLY_INTEGER && r->integer > d->jmax &&
                   i / 2 < d->jkey_count && d->jkeys[i / 2] != NULL) {
            if (redisAppendCommand(d->c, "LTRIM %s %d -1", d->jkeys[i / 2], -d->jmax) !=
                REDIS_OK) {
                freeReplyObject(r);
                return fail(d, "journal trim");
            }
            trims++;
        }
        freeReplyObject(r);
    }
    for (int i = 0; i < d->jkey_count; i++) {
        free(d->jkeys[i]);
    }
    d->jkey_count = 0;
    for (int i = 0; i < trims; i++) {
        redisReply *r = NULL;
        if (redisGetReply(d->c, (void **)&r) != REDIS_OK || r == NULL) {
            return fail(d, "journal trim");
        }
        if (r->type == REDIS_REPLY_ERROR) {
            d->jerrors++;
            snprintf(d->jerr, sizeof(d->jerr), "%s", r->str);
        }
        freeReplyObject(r);
    }
    return 0;
}

int wr_idem_settle(wr_idem *d)
{
    if (d == NULL || d->c == NULL) {
        return 0;
    }
    if (usable(d) != 0) {
        return -1;
    }
    return wr_idem_journal(d, NULL, 0, d->jmax, 0);
}

int wr_idem_journal(wr_idem *d, const wr_idem_jlist *lists, int n, int max_entries, int64_t ttl_ms)
{
    if (usable(d) != 0) {
        return -1;
    }
    int reported = 0;
    if (d->jerrors > 0) {
        /* what the previous write's replies said (they are read one call late);
         * this batch's entries are sent all the same */
        snprintf(d->err, sizeof(d->err), "journal: %d error repl%s, the last: %s", d->jerrors,
                 d->jerrors == 1 ? "y" : "ies", d->jerr);
        d->jerrors = 0;
        reported = 1;
    }
    if (n <= 0) {
        return reported ? -1 : 0;
    }
    if (n > d->jkey_cap) {
        char **k = realloc(d->jkeys, sizeof(*k) * (size_t)n);
        if (k == NULL) {
            snprintf(d->err, sizeof(d->err), "out of memory");
            return -1;
        }
        d->jkeys = k;
        d->jkey_cap = n;
    }
    int most = 0;
    for (int i = 0; i < n; i++) {
        most = lists[i].count > most ? lists[i].count : most;
    }
    args a;
    if (args_init(&a, most + 2) != 0) {
        args_free(&a);
        snprintf(d->err, sizeof(d->err), "out of memory");
        return -1;
    }
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
    for (int i = 0; i < n; i++) {
        a.argc = 0;
        args_add(&a, "RPUSH");
        args_add(&a, lists[i].key);
        for (int k = 0; k < lists[i].count; k++) {
            args_add(&a, lists[i].entries[k]);
        }
        if (redisAppendCommandArgv(d->c, a.argc, a.argv, a.lens) != REDIS_OK ||
            redisAppendCommand(d->c, "PEXPIRE %s %s", lists[i].key, ttl) != REDIS_OK) {
            args_free(&a);
            return fail(d, "journal");
        }
        d->jowed += 2;
        d->jkeys[d->jkey_count++] = strdup(lists[i].key); /* NULL: not trimmed, no harm */
    }
    args_free(&a);
    d->jmax = max_entries;
    /* send now, read later: Redis appends while the worker acks and takes the next
     * batch, whose first call (claim) collects the replies */
    int done = 0;
    while (!done) {
        if (redisBufferWrite(d->c, &done) != REDIS_OK) {
            return fail(d, "journal");
        }
    }
    return reported ? -1 : 0;
}
