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
    char name[64];
    snprintf(name, sizeof(name), "store.%s", fn);
    wr_lua_check_handling(L, name);
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

/* ---- writes ---------------------------------------------------------------------- */

/* ctx.store.set(key, value [, ttl_seconds]) */
static int st_set(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "set");
    check_nargs(L, "set(key, value [, ttl])", 2, 3);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "set", kb);
    int64_t ttl = lua_isnoneornil(L, 3) ? 0 : ttl_arg(L, "set", 3);
    wr_sbstr v = value_arg(L, st, "set", 2, "value");
    buffer(L, st, "set", WR_SB_SET, k, v, none, ttl);
    return 0;
}

/* ctx.store.del(key) */
static int st_del(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "del");
    check_nargs(L, "del(key)", 1, 1);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "del", kb);
    buffer(L, st, "del", WR_SB_DEL, k, none, none, 0);
    return 0;
}

/* ctx.store.incrby(key, n) */
static int st_incrby(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "incrby");
    check_nargs(L, "incrby(key, n)", 2, 2);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "incrby", kb);
    int64_t n = int_arg(L, "incrby", 2, "n");
    buffer(L, st, "incrby", WR_SB_INCRBY, k, none, none, n);
    return 0;
}

/* ctx.store.expire(key, ttl_seconds) */
static int st_expire(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "expire");
    check_nargs(L, "expire(key, ttl)", 2, 2);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "expire", kb);
    int64_t ttl = ttl_arg(L, "expire", 2);
    buffer(L, st, "expire", WR_SB_EXPIRE, k, none, none, ttl);
    return 0;
}

/* ctx.store.hset(key, field, value) */
static int st_hset(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "hset");
    check_nargs(L, "hset(key, field, value)", 3, 3);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "hset", kb);
    wr_sbstr f = value_arg(L, st, "hset", 2, "field");
    wr_sbstr v = value_arg(L, st, "hset", 3, "value");
    buffer(L, st, "hset", WR_SB_HSET, k, f, v, 0);
    return 0;
}

/* ctx.store.hdel(key, field) */
static int st_hdel(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "hdel");
    check_nargs(L, "hdel(key, field)", 2, 2);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "hdel", kb);
    wr_sbstr f = value_arg(L, st, "hdel", 2, "field");
    buffer(L, st, "hdel", WR_SB_HDEL, k, f, none, 0);
    return 0;
}

/* ctx.store.hincrby(key, field, n) */
static int st_hincrby(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "hincrby");
    check_nargs(L, "hincrby(key, field, n)", 3, 3);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "hincrby", kb);
    int64_t n = int_arg(L, "hincrby", 3, "n");
    wr_sbstr f = value_arg(L, st, "hincrby", 2, "field");
    buffer(L, st, "hincrby", WR_SB_HINCRBY, k, f, none, n);
    return 0;
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

/* ---- reads ----------------------------------------------------------------------- */

static int store_read(lua_State *L, const wr_lua_store *st, const char *fn, const char *cmd,
                      wr_sbstr key, wr_sbstr arg, wr_sb_result *out)
{
    char err[600];
    int rc =
        wr_storebuf_read(st->buf, cmd, key, arg, st->fetch, st->fetch_ud, out, err, sizeof(err));
    wr_lua_service(L); /* a blocking call: keep the worker's heartbeats going */
    if (rc != 0) {
        return wr_lua_caller_error(L, "ctx.store.%s: %s", fn, err);
    }
    return 0;
}

/* ctx.store.get(key) -> string or nil */
static int st_get(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "get");
    check_nargs(L, "get(key)", 1, 1);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "get", kb);
    wr_sb_result r;
    store_read(L, st, "get", "GET", k, none, &r);
    if (r.present) {
        lua_pushlstring(L, r.str.p, r.str.n);
    } else {
        lua_pushnil(L);
    }
    wr_sb_result_free(&r);
    return 1;
}

/* ctx.store.hget(key, field) -> string or nil */
static int st_hget(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "hget");
    check_nargs(L, "hget(key, field)", 2, 2);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "hget", kb);
    wr_sbstr f = value_arg(L, st, "hget", 2, "field");
    wr_sb_result r;
    store_read(L, st, "hget", "HGET", k, f, &r);
    if (r.present) {
        lua_pushlstring(L, r.str.p, r.str.n);
    } else {
        lua_pushnil(L);
    }
    wr_sb_result_free(&r);
    return 1;
}

/* ctx.store.hgetall(key) -> {field = value, ...} (empty when the key does not exist) */
static int st_hgetall(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "hgetall");
    check_nargs(L, "hgetall(key)", 1, 1);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "hgetall", kb);
    wr_sb_result r;
    store_read(L, st, "hgetall", "HGETALL", k, none, &r);
    lua_createtable(L, 0, (int)(r.count / 2));
    for (size_t i = 0; i + 1 < r.count; i += 2) {
        lua_pushlstring(L, r.items[i].p, r.items[i].n);
        lua_pushlstring(L, r.items[i + 1].p, r.items[i + 1].n);
        lua_rawset(L, -3);
    }
    wr_sb_result_free(&r);
    return 1;
}

/* ctx.store.smembers(key) -> {member, ...} (no order) */
static int st_smembers(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "smembers");
    check_nargs(L, "smembers(key)", 1, 1);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "smembers", kb);
    wr_sb_result r;
    store_read(L, st, "smembers", "SMEMBERS", k, none, &r);
    lua_createtable(L, (int)r.count, 0);
    for (size_t i = 0; i < r.count; i++) {
        lua_pushlstring(L, r.items[i].p, r.items[i].n);
        lua_rawseti(L, -2, (int)i + 1);
    }
    wr_sb_result_free(&r);
    return 1;
}

/* ctx.store.sismember(key, member) -> boolean */
static int st_sismember(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "sismember");
    check_nargs(L, "sismember(key, member)", 2, 2);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "sismember", kb);
    wr_sbstr m = value_arg(L, st, "sismember", 2, "member");
    wr_sb_result r;
    store_read(L, st, "sismember", "SISMEMBER", k, m, &r);
    lua_pushboolean(L, r.num != 0);
    wr_sb_result_free(&r);
    return 1;
}

/* ctx.store.exists(key) -> boolean */
static int st_exists(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "exists");
    check_nargs(L, "exists(key)", 1, 1);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "exists", kb);
    wr_sb_result r;
    store_read(L, st, "exists", "EXISTS", k, none, &r);
    lua_pushboolean(L, r.num != 0);
    wr_sb_result_free(&r);
    return 1;
}

/* ctx.store.ttl(key) -> seconds left (rounded as Redis TTL does), -1 no expiry, -2 no key */
static int st_ttl(lua_State *L)
{
    const wr_lua_store *st = check_store(L, "ttl");
    check_nargs(L, "ttl(key)", 1, 1);
    char kb[KEY_BUF];
    wr_sbstr k = key_arg(L, st, "ttl", kb);
    wr_sb_result r;
    store_read(L, st, "ttl", "PTTL", k, none, &r);
    lua_pushinteger(L, r.num < 0 ? (lua_Integer)r.num : (lua_Integer)((r.num + 500) / 1000));
    wr_sb_result_free(&r);
    return 1;
}

void wr_lua_store_inject(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"get", st_get},
        {"hget", st_hget},
        {"hgetall", st_hgetall},
        {"exists", st_exists},
        {"smembers", st_smembers},
        {"sismember", st_sismember},
        {"ttl", st_ttl},
        {"set", st_set},
        {"del", st_del},
        {"incrby", st_incrby},
        {"expire", st_expire},
        {"hset", st_hset},
        {"hdel", st_hdel},
        {"hincrby", st_hincrby},
        {"sadd", st_sadd},
        {"srem", st_srem},
        {NULL, NULL},
    };
    /* -- ... ctx */
    lua_createtable(L, 0, 16);
    for (const luaL_Reg *f = fns; f->name != NULL; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    lua_setfield(L, -2, "store");
}
