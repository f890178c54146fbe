/*
 * lua_store: ctx.store, the handler's key/value state in Redis, written
 * exactly once per message.
 *
 *     local left = tonumber(ctx.store.get("stock:" .. sku) or 0)
 *     ctx.store.incrby("stock:" .. sku, -qty)          -- buffered
 *     ctx.store.hincrby("ledger:" .. customer, "total_cents", cents)
 *     ctx.store.get("stock:" .. sku)                   -- sees the -qty
 *
 * Reads (get, hget, hgetall, exists, smembers, sismember, ttl) go to Redis
 * at once, through the worker's own connection, and see the message's own
 * buffered writes (storebuf.h). Writes (set, del, incrby, expire, hset, hdel,
 * hincrby, sadd, srem) are only buffered; the worker applies them after the
 * handler succeeded, in the same server-side script that marks the message's
 * idempotency record done, and only while this worker's claim still owns the
 * record (idem.h). A handler that fails applies nothing; a retry starts from
 * the state as it was.
 *
 * Every key is <store.prefix><key>: the prefix is the service's namespace.
 * Keys are non-empty strings; fields, members and values are strings or
 * numbers (numbers are stored as their decimal text); increments are whole
 * numbers within +-2^53; TTLs are positive seconds. Anything else, a value
 * over store.max_value_bytes or a write beyond store.max_writes raises an
 * error naming the call, at the caller's level. A Redis failure in a read
 * raises too (the message is retried; nothing was applied).
 *
 * ctx.store exists only while a message is handled and idempotency is on for
 * the subscription (the commit rides on the idempotency record): elsewhere
 * every call raises "ctx.store is not available ...".
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contract.h"
#include "lua_api.h"
#include "lua_rt.h"
#include "storebuf.h"

#define MAX_INCREMENT 9007199254740992.0     /* 2^53: a Lua number is a double */
#define KEY_BUF (WR_LIMIT_STORE_KEY_MAX + 1) /* prefix (<= 100) + key + NUL */

/*
 * The fixed checks of every ctx.store function, in order: it runs while a
 * message is handled, and the store is available. Returns the store.
 */
static const wr_lua_store *check_store(lua_State *L, const char *fn)
{
    if (!wr_lua_handling(L)) {
        char name[64];
        snprintf(name, sizeof(name), "store.%s", fn);
        wr_lua_check_handling(L, name); /* raises */
    }
    const wr_lua_store *st = wr_lua_store_of(L);
    if (st == NULL || st->buf == NULL) {
        wr_lua_caller_error(L, WR_ES_UNAVAILABLE, fn);
    }
    return st;
}

static void check_nargs(lua_State *L, const char *usage, int min, int max)
{
    int n = lua_gettop(L);
    if (n < min || n > max) {
        if (min == max) {
            wr_lua_caller_error(L, WR_ES_NARGS, usage, (long long)min, min == 1 ? "" : "s",
                                (long long)n);
        }
        wr_lua_caller_error(L, WR_ES_NARGS_RANGE, usage, (long long)min, (long long)max,
                            (long long)n);
    }
}

/* The full Redis key for argument 1: <prefix><key>, in BUF. */
static wr_sbstr key_arg(lua_State *L, const wr_lua_store *st, const char *fn, char *buf)
{
    if (lua_type(L, 1) != LUA_TSTRING) {
        wr_lua_caller_error(L, WR_ES_KEY, fn, luaL_typename(L, 1));
    }
    size_t n;
    const char *k = lua_tolstring(L, 1, &n);
    size_t pn = strlen(st->prefix);
    if (n == 0 || pn + n >= KEY_BUF) {
        wr_lua_caller_error(L, WR_ES_KEY_LEN, fn, (long long)(KEY_BUF - 1 - pn), (long long)n);
    }
    memcpy(buf, st->prefix, pn);
    memcpy(buf + pn, k, n);
    return (wr_sbstr){buf, pn + n};
}

/*
 * A field, member or value at IDX: a string, or a number as its decimal text
 * (converted on a copy, so the handler's value stays a number). Raises for
 * anything else and for values over store.max_value_bytes.
 */
static wr_sbstr value_arg(lua_State *L, const wr_lua_store *st, const char *fn, int idx,
                          const char *what)
{
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER) {
        wr_lua_caller_error(L, WR_ES_VALUE, fn, what, luaL_typename(L, idx));
    }
    size_t n;
    const char *s;
    if (t == LUA_TNUMBER) {
        lua_Number v = lua_tonumber(L, idx);
        if (v == floor(v) && fabs(v) < MAX_INCREMENT) {
            char num[32];
            snprintf(num, sizeof(num), "%.0f", v);
            lua_pushstring(L, num);
        } else {
            lua_pushvalue(L, idx);
            lua_tostring(L, -1);
        }
        lua_replace(L, idx);
    }
    s = lua_tolstring(L, idx, &n);
    if (n > st->max_value_bytes) {
        wr_lua_caller_error(L, WR_ES_VALUE_LEN, fn, what, (long long)n,
                            (long long)st->max_value_bytes);
    }
    return (wr_sbstr){s, n};
}

static int64_t int_arg(lua_State *L, const char *fn, int idx, const char *what)
{
    if (lua_type(L, idx) != LUA_TNUMBER) {
        wr_lua_caller_error(L, WR_ES_INT, fn, what, luaL_typename(L, idx));
    }
    lua_Number v = lua_tonumber(L, idx);
    if (v != floor(v) || fabs(v) >= MAX_INCREMENT) {
        wr_lua_caller_error(L, WR_ES_INT_RANGE, fn, what, lua_tostring(L, idx));
    }
    return (int64_t)v;
}

/* A TTL in seconds (may be fractional) as milliseconds, at least 1. */
static int64_t ttl_arg(lua_State *L, const char *fn, int idx)
{
    if (lua_type(L, idx) != LUA_TNUMBER || !(lua_tonumber(L, idx) > 0) ||
        lua_tonumber(L, idx) > 10.0 * 365 * 86400) {
        wr_lua_caller_error(L, WR_ES_TTL, fn,
                            lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx)
                                                            : luaL_typename(L, idx));
    }
    int64_t ms = (int64_t)(lua_tonumber(L, idx) * 1000.0 + 0.5);
    return ms < 1 ? 1 : ms;
}

static void buffer(lua_State *L, const wr_lua_store *st, const char *fn, wr_sb_op op, wr_sbstr key,
                   wr_sbstr a, wr_sbstr b, int64_t num)
{
    char err[300];
    if (wr_storebuf_write(st->buf, op, key, a, b, num, err, sizeof(err)) != 0) {
        wr_lua_caller_error(L, "ctx.store.%s: %s", fn, err);
    }
}

static const wr_sbstr none = {"", 0};

/* A read of KEY (with ARG for HGET and SISMEMBER) through the buffer, into OUT. */
static void store_read(lua_State *L, const wr_lua_store *st, const char *fn, const char *cmd,
                       wr_sbstr key, wr_sbstr arg, wr_sb_result *out)
{
    char err[600];
    int rc =
        wr_storebuf_read(st->buf, cmd, key, arg, st->fetch, st->fetch_ud, out, err, sizeof(err));
    wr_lua_service(L); /* a blocking call: keep the worker's heartbeats going */
    if (rc != 0) {
        wr_lua_caller_error(L, "ctx.store.%s: %s", fn, err);
    }
}

/* ctx.store.sadd(key, member...) and ctx.store.srem(key, member...): one write per member */
static int members(lua_State *L, const char *fn, wr_sb_op op)
{
    const wr_lua_store *st = check_store(L, fn);
    if (lua_gettop(L) < 2) {
        return wr_lua_caller_error(L, WR_ES_MEMBERS, fn, (long long)lua_gettop(L));
    }
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, fn, kb);
    int n = lua_gettop(L);
    for (int i = 2; i <= n; i++) {
        value_arg(L, st, fn, i, "member");
    }
    for (int i = 2; i <= n; i++) {
        size_t len;
        const char *m = lua_tolstring(L, i, &len);
        buffer(L, st, fn, op, k, (wr_sbstr){m, len}, none, 0);
    }
    return 0;
}

static int st_sadd(lua_State *L)
{
    return members(L, "sadd", WR_SB_SADD);
}

static int st_srem(lua_State *L)
{
    return members(L, "srem", WR_SB_SREM);
}

/* ---- the functions, as a table ---------------------------------------------------- */

/* What an argument after the key is. */
typedef enum {
    ARG_NONE,
    ARG_FIELD,  /* a hash field: a string or a number (value_arg) */
    ARG_MEMBER, /* a set member: the same */
    ARG_VALUE,  /* a value: the same */
    ARG_INT,    /* an increment "n": a whole number (int_arg) */
    ARG_TTL,    /* a TTL in seconds (ttl_arg) */
} st_arg;

/* The name a field, member or value has in the error texts. */
static const char *const arg_what[] = {
    [ARG_FIELD] = "field",
    [ARG_MEMBER] = "member",
    [ARG_VALUE] = "value",
};

/* What a read returns. */
typedef enum {
    RET_STRING, /* the string, or nil */
    RET_HASH,   /* {field = value, ...}, empty when the key does not exist */
    RET_LIST,   /* {member, ...} (no order) */
    RET_BOOL,   /* Redis's 1 or 0 as true or false */
    RET_TTL,    /* seconds left (rounded as Redis TTL does), -1 no expiry, -2 no key */
} st_ret;

/*
 * One ctx.store function but sadd and srem: ctx.store.<name>(key [, arg2 [,
 * arg3]]). A read (CMD set) asks the buffer and returns what RET says; a write
 * (CMD NULL) buffers OP with the strings (field, member, value) as its A and B
 * in argument order, and the number (increment or TTL) as its NUM.
 */
typedef struct {
    const char *name;  /* ctx.store.<name> */
    const char *usage; /* for the argument-count error */
    int min, max;      /* how many arguments (a TTL past MIN may be nil) */
    st_arg arg[2];     /* arguments 2 and 3 */
    const char *cmd;   /* a read: the command wr_storebuf_read answers */
    st_ret ret;        /* a read: what it returns */
    wr_sb_op op;       /* a write: what it buffers */
} st_fn;

static const st_fn fns[] = {
    /* reads */
    {"get", "get(key)", 1, 1, {ARG_NONE}, "GET", RET_STRING, 0},
    {"hget", "hget(key, field)", 2, 2, {ARG_FIELD}, "HGET", RET_STRING, 0},
    {"hgetall", "hgetall(key)", 1, 1, {ARG_NONE}, "HGETALL", RET_HASH, 0},
    {"exists", "exists(key)", 1, 1, {ARG_NONE}, "EXISTS", RET_BOOL, 0},
    {"smembers", "smembers(key)", 1, 1, {ARG_NONE}, "SMEMBERS", RET_LIST, 0},
    {"sismember", "sismember(key, member)", 2, 2, {ARG_MEMBER}, "SISMEMBER", RET_BOOL, 0},
    {"ttl", "ttl(key)", 1, 1, {ARG_NONE}, "PTTL", RET_TTL, 0},
    /* writes */
    {"set", "set(key, value [, ttl])", 2, 3, {ARG_VALUE, ARG_TTL}, NULL, 0, WR_SB_SET},
    {"del", "del(key)", 1, 1, {ARG_NONE}, NULL, 0, WR_SB_DEL},
    {"incrby", "incrby(key, n)", 2, 2, {ARG_INT}, NULL, 0, WR_SB_INCRBY},
    {"expire", "expire(key, ttl)", 2, 2, {ARG_TTL}, NULL, 0, WR_SB_EXPIRE},
    {"hset", "hset(key, field, value)", 3, 3, {ARG_FIELD, ARG_VALUE}, NULL, 0, WR_SB_HSET},
    {"hdel", "hdel(key, field)", 2, 2, {ARG_FIELD}, NULL, 0, WR_SB_HDEL},
    {"hincrby", "hincrby(key, field, n)", 3, 3, {ARG_FIELD, ARG_INT}, NULL, 0, WR_SB_HINCRBY},
};

/*
 * Arguments 2 and 3 of a call to F, checked: the number (an increment or a
 * TTL) into *NUM, then the strings into S in argument order. The number comes
 * first so that of two bad arguments the one named is always the same (set:
 * ttl before value; hincrby: n before field; the kit checks in this order).
 */
static void other_args(lua_State *L, const wr_lua_store *st, const st_fn *f, wr_sbstr s[2],
                       int64_t *num)
{
    for (int idx = 2; idx <= 3; idx++) {
        st_arg a = f->arg[idx - 2];
        if (idx > f->min && lua_isnoneornil(L, idx)) {
            continue; /* set's ttl, left out */
        }
        if (a == ARG_INT) {
            *num = int_arg(L, f->name, idx, "n");
        } else if (a == ARG_TTL) {
            *num = ttl_arg(L, f->name, idx);
        }
    }
    int ns = 0;
    for (int idx = 2; idx <= 3; idx++) {
        st_arg a = f->arg[idx - 2];
        if (a == ARG_FIELD || a == ARG_MEMBER || a == ARG_VALUE) {
            s[ns++] = value_arg(L, st, f->name, idx, arg_what[a]);
        }
    }
}

/* Push what a read answered, as RET says. */
static void push_result(lua_State *L, st_ret ret, const wr_sb_result *r)
{
    switch (ret) {
    case RET_STRING:
        if (r->present) {
            lua_pushlstring(L, r->str.p, r->str.n);
        } else {
            lua_pushnil(L);
        }
        break;
    case RET_HASH:
        lua_createtable(L, 0, (int)(r->count / 2));
        for (size_t i = 0; i + 1 < r->count; i += 2) {
            lua_pushlstring(L, r->items[i].p, r->items[i].n);
            lua_pushlstring(L, r->items[i + 1].p, r->items[i + 1].n);
            lua_rawset(L, -3);
        }
        break;
    case RET_LIST:
        lua_createtable(L, (int)r->count, 0);
        for (size_t i = 0; i < r->count; i++) {
            lua_pushlstring(L, r->items[i].p, r->items[i].n);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    case RET_BOOL:
        lua_pushboolean(L, r->num != 0);
        break;
    case RET_TTL:
        lua_pushinteger(L, r->num < 0 ? (lua_Integer)r->num : (lua_Integer)((r->num + 500) / 1000));
        break;
    }
}

/* ctx.store.<name>(...): the function its upvalue (an st_fn) describes. */
static int st_call(lua_State *L)
{
    const st_fn *f = lua_touserdata(L, lua_upvalueindex(1));
    const wr_lua_store *st = check_store(L, f->name);
    check_nargs(L, f->usage, f->min, f->max);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, f->name, kb);
    wr_sbstr s[2] = {none, none};
    int64_t num = 0;
    other_args(L, st, f, s, &num);
    if (f->cmd == NULL) {
        buffer(L, st, f->name, f->op, k, s[0], s[1], num);
        return 0;
    }
    wr_sb_result r;
    store_read(L, st, f->name, f->cmd, k, s[0], &r);
    push_result(L, f->ret, &r);
    wr_sb_result_free(&r);
    return 1;
}

void wr_lua_store_inject(lua_State *L)
{
    /* -- ... ctx */
    lua_createtable(L, 0, 16);
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
        lua_pushlightuserdata(L, (void *)&fns[i]);
        lua_pushcclosure(L, st_call, 1);
        lua_setfield(L, -2, fns[i].name);
    }
    lua_pushcfunction(L, st_sadd);
    lua_setfield(L, -2, "sadd");
    lua_pushcfunction(L, st_srem);
    lua_setfield(L, -2, "srem");
    lua_setfield(L, -2, "store");
}
