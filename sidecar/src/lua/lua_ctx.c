/*
 * lua_ctx: ctx.publish, ctx.reject, ctx.retry, ctx.now and ctx.log. See
 * lua_ctx.h for the contract; the texts are sidecar/lua/contract.lua's
 * (contract.h), shared with the busted kit.
 *
 * Stack-layout comments ("-- a b c" = bottom to top of the part we touch)
 * accompany the functions that juggle the Lua stack.
 */
#include "lua_ctx.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "contract.h"
#include "log.h"
#include "lua_api.h"
#include "strutil.h"

#define MAX_PUBLISHES WR_LIMIT_MAX_PUBLISHES
#define DEFAULT_PUBLISH_BYTES ((size_t)WR_LIMIT_MAX_PUBLISH_BYTES)

static wr_lua_ctxcall *self(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static void free_pub(wr_lua_pub *p)
{
    free(p->exchange);
    free(p->routing_key);
    free(p->body);
    free(p->content_type);
    free(p->type);
    for (int k = 0; k < p->header_count; k++) {
        free(p->header_keys[k]);
        free(p->header_vals[k]);
    }
    free(p->header_keys);
    free(p->header_vals);
    free(p->ce_type);
    free(p->ce_source);
    free(p->ce_subject);
}

void wr_lua_ctx_free_pubs(wr_lua_ctxcall *cx)
{
    for (int i = 0; i < cx->pub_count; i++) {
        free_pub(&cx->pubs[i]);
    }
    cx->pub_count = 0;
    cx->pub_bytes = 0;
}

/* The bytes publish P holds (what counts against max_publish_bytes). */
static size_t pub_size(const wr_lua_pub *p)
{
    size_t n = p->body_len;
    const char *strs[] = {p->exchange, p->routing_key, p->content_type, p->type,
                          p->ce_type,  p->ce_source,   p->ce_subject};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        n += strs[i] != NULL ? strlen(strs[i]) : 0;
    }
    for (int k = 0; k < p->header_count; k++) {
        n += (p->header_keys[k] != NULL ? strlen(p->header_keys[k]) : 0) +
             (p->header_vals[k] != NULL ? strlen(p->header_vals[k]) : 0);
    }
    return n;
}

/* ---- ctx functions -------------------------------------------------------------- */

/* Drop the publish being built (an error in its options): the handler may
 * catch the error with pcall, and a half-built publish must not go out. */
static void drop_last_pub(wr_lua_ctxcall *cx)
{
    wr_lua_pub *p = &cx->pubs[--cx->pub_count];
    cx->pub_bytes -= pub_size(p);
    free_pub(p);
}

/* Whether N more bytes of publishes fit in this message's allowance; if so
 * they are counted. */
static int charge_pub(wr_lua_ctxcall *cx, size_t n)
{
    size_t cap = cx->max_publish_bytes ? cx->max_publish_bytes : DEFAULT_PUBLISH_BYTES;
    if (n > cap || cx->pub_bytes > cap - n) {
        return -1;
    }
    cx->pub_bytes += n;
    return 0;
}

/* AMQP short strings (exchange, routing key, type, header names) */
#define SHORTSTR WR_LIMIT_SHORT_STRING
/* the headers travel in one frame with the properties: well inside the 128 KiB
 * frame RabbitMQ offers */
#define MAX_HEADER_BYTES WR_LIMIT_MAX_HEADER_BYTES
#define PUB_CAP(cx)                                                                                \
    (long long)((cx)->max_publish_bytes ? (cx)->max_publish_bytes : DEFAULT_PUBLISH_BYTES)

#define PUB_FAIL(L, ...)                                                                           \
    do {                                                                                           \
        drop_last_pub(cx);                                                                         \
        return wr_lua_caller_error(L, __VA_ARGS__);                                                \
    } while (0)

/* ctx.publish's arguments, checked (3 or 4 of them). Raises on a bad one. */
static int check_publish_args(lua_State *L, wr_lua_ctxcall *cx, int nargs)
{
    if (nargs < 3 || nargs > 4) {
        return wr_lua_caller_error(L, WR_E_PUBLISH_ARGS, (long long)nargs);
    }
    if (lua_type(L, 1) != LUA_TSTRING) {
        return wr_lua_caller_error(L, WR_E_PUBLISH_EXCHANGE, luaL_typename(L, 1));
    }
    if (lua_type(L, 2) != LUA_TSTRING) {
        return wr_lua_caller_error(L, WR_E_PUBLISH_ROUTING_KEY, luaL_typename(L, 2));
    }
    int btype = lua_type(L, 3);
    if (btype != LUA_TSTRING && btype != LUA_TTABLE) {
        return wr_lua_caller_error(L, WR_E_PUBLISH_BODY, luaL_typename(L, 3));
    }
    if (nargs == 4 && !lua_isnil(L, 4) && !lua_istable(L, 4)) {
        return wr_lua_caller_error(L, WR_E_PUBLISH_OPTS, luaL_typename(L, 4));
    }
    if (cx->pub_count >= MAX_PUBLISHES) {
        return wr_lua_caller_error(L, WR_E_PUBLISH_LIMIT, (long long)MAX_PUBLISHES);
    }
    return 0;
}

/* opts.headers (the table on top of the stack) into P's headers. */
static int pub_headers(lua_State *L, wr_lua_ctxcall *cx, wr_lua_pub *p)
{
    size_t n;
    const char *s;
    int cap = 0;
    size_t header_bytes = 0;
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        /* -- headers key value */
        if (lua_type(L, -2) != LUA_TSTRING ||
            (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER &&
             lua_type(L, -1) != LUA_TBOOLEAN)) {
            PUB_FAIL(L, WR_E_PUBLISH_HEADER_VALUE);
        }
        if (p->header_count == cap) {
            cap = cap ? cap * 2 : 4;
            char **k = realloc(p->header_keys, (size_t)cap * sizeof(*k));
            if (k != NULL) {
                p->header_keys = k;
            }
            char **v = realloc(p->header_vals, (size_t)cap * sizeof(*v));
            if (v != NULL) {
                p->header_vals = v;
            }
            if (k == NULL || v == NULL) {
                PUB_FAIL(L, "not enough memory");
            }
        }
        const char *val =
            lua_type(L, -1) == LUA_TBOOLEAN ? (lua_toboolean(L, -1) ? "true" : "false") : NULL;
        size_t vn = val ? strlen(val) : 0;
        lua_pushvalue(L, -1); /* tolstring on a copy keeps the number intact */
        if (val == NULL) {
            val = lua_tolstring(L, -1, &vn);
        }
        s = lua_tolstring(L, -3, &n);
        if (n > SHORTSTR) {
            PUB_FAIL(L, WR_E_PUBLISH_LONG, "a name in opts.headers", (long long)n);
        }
        header_bytes += n + vn;
        if (header_bytes > MAX_HEADER_BYTES) {
            PUB_FAIL(L, WR_E_PUBLISH_HEADERS_BIG, (long long)MAX_HEADER_BYTES);
        }
        if (charge_pub(cx, n + vn) != 0 || n + vn < n) {
            PUB_FAIL(L, WR_E_PUBLISH_TOO_BIG, PUB_CAP(cx));
        }
        p->header_vals[p->header_count] = wr_str_dup_range(val, vn);
        p->header_keys[p->header_count] = wr_str_dup_range(s, n);
        p->header_count++;
        lua_pop(L, 1);
        if (p->header_vals[p->header_count - 1] == NULL ||
            p->header_keys[p->header_count - 1] == NULL) {
            PUB_FAIL(L, "not enough memory");
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* opts.cloudevent (the table on top of the stack) = {type = ..., source = ...
 * [, subject = ...] [, mode = ...]}: a CloudEvent, binary mode unless mode =
 * "structured" (the worker adds specversion, id, time and traceparent). */
static int pub_cloudevent(lua_State *L, wr_lua_ctxcall *cx, wr_lua_pub *p)
{
    size_t n;
    const char *s;
    static const char *const keys[] = {"type", "source", "subject"};
    char **dst[] = {&p->ce_type, &p->ce_source, &p->ce_subject};
    for (int k = 0; k < 3; k++) {
        lua_getfield(L, -1, keys[k]);
        if (lua_type(L, -1) == LUA_TSTRING) {
            s = lua_tolstring(L, -1, &n);
            if (n == 0 || n > SHORTSTR) {
                PUB_FAIL(L, WR_E_PUBLISH_CLOUDEVENT_LEN, keys[k], (long long)SHORTSTR);
            }
            if (charge_pub(cx, n) != 0) {
                PUB_FAIL(L, WR_E_PUBLISH_TOO_BIG, PUB_CAP(cx));
            }
            *dst[k] = wr_str_dup_range(s, n);
            if (*dst[k] == NULL) {
                PUB_FAIL(L, "not enough memory");
            }
        } else if (k < 2 || !lua_isnil(L, -1)) {
            PUB_FAIL(L, WR_E_PUBLISH_CLOUDEVENT_FIELD, keys[k]);
        }
        lua_pop(L, 1);
    }
    /* mode: "binary" (attributes as headers, the default) or "structured" */
    lua_getfield(L, -1, "mode");
    s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (s != NULL && strcmp(s, "structured") == 0) {
        p->ce_structured = 1;
    } else if (!lua_isnil(L, -1) && (s == NULL || strcmp(s, "binary") != 0)) {
        PUB_FAIL(L, WR_E_PUBLISH_CLOUDEVENT_MODE);
    }
    lua_pop(L, 1);
    return 0;
}

/*
 * opts.<KEY> of ctx.publish (the table at 4): nil, or a string of at most 255
 * bytes that goes into *DST in place of what *DST held (a table body's JSON
 * content type), counted against the message's allowance instead of it.
 * Raises TYPE_ERR for anything else.
 */
static int pub_short_opt(lua_State *L, wr_lua_ctxcall *cx, const char *key, const char *type_err,
                         char **dst)
{
    lua_getfield(L, 4, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_type(L, -1) != LUA_TSTRING) {
        PUB_FAIL(L, "%s", type_err);
    }
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (n > SHORTSTR) {
        char what[32];
        snprintf(what, sizeof(what), "opts.%s", key);
        PUB_FAIL(L, WR_E_PUBLISH_LONG, what, (long long)n);
    }
    if (charge_pub(cx, n) != 0) {
        PUB_FAIL(L, WR_E_PUBLISH_TOO_BIG, PUB_CAP(cx));
    }
    if (*dst != NULL) {
        cx->pub_bytes -= strlen(*dst);
        free(*dst);
    }
    *dst = wr_str_dup_range(s, n);
    if (*dst == NULL) {
        PUB_FAIL(L, "not enough memory");
    }
    lua_pop(L, 1);
    return 0;
}

/* opts.<KEY> of ctx.publish (the table at 4): nil, or a table that READ
 * takes into P (it is on top of the stack then). Raises TYPE_ERR for anything
 * else. */
static int pub_table_opt(lua_State *L, wr_lua_ctxcall *cx, wr_lua_pub *p, const char *key,
                         int (*read)(lua_State *, wr_lua_ctxcall *, wr_lua_pub *),
                         const char *type_err)
{
    lua_getfield(L, 4, key);
    if (lua_istable(L, -1)) {
        if (read(L, cx, p) != 0) {
            return -1;
        }
    } else if (!lua_isnil(L, -1)) {
        PUB_FAIL(L, "%s", type_err);
    }
    lua_pop(L, 1);
    return 0;
}

/* ctx.publish's opts (the table at 4) into P. */
static int pub_opts(lua_State *L, wr_lua_ctxcall *cx, wr_lua_pub *p)
{
    if (pub_short_opt(L, cx, "content_type", WR_E_PUBLISH_CONTENT_TYPE, &p->content_type) != 0 ||
        pub_short_opt(L, cx, "type", WR_E_PUBLISH_TYPE, &p->type) != 0) {
        return -1;
    }
    lua_getfield(L, 4, "mandatory");
    p->mandatory = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (pub_table_opt(L, cx, p, "headers", pub_headers, WR_E_PUBLISH_HEADERS) != 0 ||
        pub_table_opt(L, cx, p, "cloudevent", pub_cloudevent, WR_E_PUBLISH_CLOUDEVENT) != 0) {
        return -1;
    }
    return 0;
}

/* ctx.publish(exchange, routing_key, body, opts) */
static int ctx_publish(lua_State *L)
{
    wr_lua_ctxcall *cx = self(L);
    wr_lua_ctx_check_phase(L, cx, "publish", 0);
    int nargs = lua_gettop(L);
    check_publish_args(L, cx, nargs);
    const char *json_type = NULL;
    if (lua_type(L, 3) == LUA_TTABLE) {
        /* -- ... body */
        lua_rawgeti(L, LUA_REGISTRYINDEX, cx->ref_encode);
        lua_pushvalue(L, 3);
        if (lua_pcall(L, 1, 1, 0) != 0) {
            return wr_lua_caller_error(L, WR_E_PUBLISH_ENCODE, lua_tostring(L, -1));
        }
        lua_replace(L, 3);
        json_type = "application/json";
    }
    if (cx->pub_count == cx->pub_cap) {
        int cap = cx->pub_cap ? cx->pub_cap * 2 : 8;
        wr_lua_pub *p = realloc(cx->pubs, (size_t)cap * sizeof(*p));
        if (p == NULL) {
            return luaL_error(L, "not enough memory");
        }
        cx->pubs = p;
        cx->pub_cap = cap;
    }
    /* what is copied out of the state counts against the message's allowance,
     * checked before anything is copied */
    size_t ne, nr, nb;
    lua_tolstring(L, 1, &ne);
    lua_tolstring(L, 2, &nr);
    lua_tolstring(L, 3, &nb);
    /* AMQP short strings: the broker could not take a longer one, and the failed
     * publish would cost the connection rather than this message */
    if (ne > SHORTSTR || nr > SHORTSTR) {
        return wr_lua_caller_error(L, WR_E_PUBLISH_LONG, ne > SHORTSTR ? "exchange" : "routing_key",
                                   (long long)(ne > SHORTSTR ? ne : nr));
    }
    size_t nj = json_type ? strlen(json_type) : 0;
    if (ne + nr < ne || ne + nr + nb < nb || charge_pub(cx, ne + nr + nb + nj) != 0) {
        return wr_lua_caller_error(L, WR_E_PUBLISH_TOO_BIG, PUB_CAP(cx));
    }
    wr_lua_pub *p = &cx->pubs[cx->pub_count];
    memset(p, 0, sizeof(*p));
    size_t n;
    const char *s;
    s = lua_tolstring(L, 1, &n);
    p->exchange = wr_str_dup_range(s, n);
    s = lua_tolstring(L, 2, &n);
    p->routing_key = wr_str_dup_range(s, n);
    s = lua_tolstring(L, 3, &n);
    p->body = wr_str_dup_range(s, n);
    p->body_len = n;
    p->content_type = json_type ? wr_str_dup_range(json_type, strlen(json_type)) : NULL;
    cx->pub_count++; /* from here on free_pubs owns what p holds */
    if (p->exchange == NULL || p->routing_key == NULL || p->body == NULL ||
        (json_type != NULL && p->content_type == NULL)) {
        PUB_FAIL(L, "not enough memory");
    }
    if (nargs == 4 && lua_istable(L, 4)) {
        return pub_opts(L, cx, p);
    }
    return 0;
}

/* Raise the sentinel that unwinds the handler after ctx.reject / ctx.retry. */
static int unwind(lua_State *L, wr_lua_ctxcall *cx)
{
    (void)cx;
    lua_pushlightuserdata(L, (void *)&unwind);
    return lua_error(L);
}

/* ctx.reject(reason): permanent failure; the message goes to the DLQ at once. */
static int ctx_reject(lua_State *L)
{
    wr_lua_ctxcall *cx = self(L);
    wr_lua_ctx_check_phase(L, cx, "reject", 0);
    if (lua_type(L, 1) != LUA_TSTRING) {
        return wr_lua_caller_error(L, WR_E_REJECT_REASON, luaL_typename(L, 1));
    }
    cx->forced = WR_OUT_REJECT;
    snprintf(cx->forced_reason, sizeof(cx->forced_reason), "%s", lua_tostring(L, 1));
    return unwind(L, cx);
}

/* ctx.retry(reason [, {delay = ms}]): retry later. */
static int ctx_retry(lua_State *L)
{
    wr_lua_ctxcall *cx = self(L);
    wr_lua_ctx_check_phase(L, cx, "retry", 0);
    if (lua_type(L, 1) != LUA_TSTRING) {
        return wr_lua_caller_error(L, WR_E_RETRY_REASON, luaL_typename(L, 1));
    }
    int64_t delay = -1;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "delay");
        if (lua_type(L, -1) == LUA_TNUMBER) {
            double d = lua_tonumber(L, -1);
            if (!(d >= 0 && d <= 86400000.0)) { /* NaN fails too */
                return wr_lua_caller_error(L, WR_E_RETRY_DELAY_RANGE, lua_tostring(L, -1));
            }
            delay = (int64_t)d;
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            if (wr_config_parse_duration(lua_tostring(L, -1), &delay) != 0) {
                return wr_lua_caller_error(L, WR_E_RETRY_DELAY, lua_tostring(L, -1));
            }
        } else if (!lua_isnil(L, -1)) {
            return wr_lua_caller_error(L, WR_E_RETRY_DELAY_TYPE);
        }
        lua_pop(L, 1);
    } else if (!lua_isnoneornil(L, 2)) {
        return wr_lua_caller_error(L, WR_E_RETRY_OPTS, luaL_typename(L, 2));
    }
    cx->forced = WR_OUT_RETRY;
    cx->forced_delay_ms = delay;
    snprintf(cx->forced_reason, sizeof(cx->forced_reason), "%s", lua_tostring(L, 1));
    return unwind(L, cx);
}

/* ctx.now(): seconds since the epoch, with millisecond precision (like ngx.now). */
static int ctx_now(lua_State *L)
{
    lua_pushnumber(L, (double)wr_now_ms() / 1000.0);
    return 1;
}

/* ctx.log.<level>(msg [, fields]): a line in the sidecar's JSON log. */
static int ctx_log(lua_State *L)
{
    wr_lua_ctxcall *cx = self(L);
    wr_log_level level = (wr_log_level)lua_tointeger(L, lua_upvalueindex(2));
    if (lua_type(L, 1) != LUA_TSTRING && lua_type(L, 1) != LUA_TNUMBER) {
        return wr_lua_caller_error(L, WR_E_LOG_MSG, wr_log_level_name(level), luaL_typename(L, 1));
    }
    if (!lua_isnoneornil(L, 2) && !lua_istable(L, 2)) {
        return wr_lua_caller_error(L, WR_E_LOG_FIELDS, wr_log_level_name(level),
                                   luaL_typename(L, 2));
    }
    if (!wr_log_enabled(level)) {
        return 0;
    }
    wr_logline line;
    wr_log_begin(&line, level, lua_tostring(L, 1));
    wr_log_str(&line, "subscription", cx->subscription);
    if (cx->env != NULL) {
        wr_log_strn(&line, "message_id", cx->env->id.bytes, cx->env->id.len);
        wr_log_strn(&line, "type", cx->env->type.bytes, cx->env->type.len);
    }
    if (cx->call != NULL && cx->call->trace_id != NULL) {
        wr_log_str(&line, "trace_id", cx->call->trace_id);
    }
    wr_log_str(&line, "handler_version", cx->version);
    lua_Debug ar;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar)) {
        char where[300];
        snprintf(where, sizeof(where), "%s:%d", ar.short_src, ar.currentline);
        wr_log_str(&line, "source", where);
    }
    if (lua_istable(L, 2)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, cx->ref_encode);
        lua_pushvalue(L, 2);
        if (lua_pcall(L, 1, 1, 0) == 0) {
            size_t n;
            const char *json = lua_tolstring(L, -1, &n);
            wr_log_raw(&line, "fields", json, n);
        } else {
            wr_log_str(&line, "fields_error", lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
    wr_log_end(&line);
    return 0;
}

/* ---- the module's entry points (lua_ctx.h) -------------------------------------- */

void wr_lua_ctx_check_phase(lua_State *L, const wr_lua_ctxcall *cx, const char *fn, int allow_init)
{
    if (cx->phase == WR_LUA_PHASE_HANDLE || (allow_init && cx->phase == WR_LUA_PHASE_INIT)) {
        return;
    }
    wr_lua_caller_error(L, WR_E_PHASE, fn,
                        cx->phase == WR_LUA_PHASE_INIT ? WR_E_PHASE_INIT : WR_E_PHASE_NONE);
}

void wr_lua_ctx_inject(lua_State *L, wr_lua_ctxcall *cx)
{
    /* -- ... ctx */
    static const struct {
        const char *name;
        lua_CFunction fn;
    } fns[] = {
        {"publish", ctx_publish}, {"reject", ctx_reject}, {"retry", ctx_retry}, {"now", ctx_now}};
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
        lua_pushlightuserdata(L, cx);
        lua_pushcclosure(L, fns[i].fn, 1);
        lua_setfield(L, -2, fns[i].name);
    }
    /* -- ... ctx log */
    lua_createtable(L, 0, 4);
    static const char *levels[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        lua_pushlightuserdata(L, cx);
        lua_pushinteger(L, i);
        lua_pushcclosure(L, ctx_log, 2);
        lua_setfield(L, -2, levels[i]);
    }
    lua_setfield(L, -2, "log");
}

void wr_lua_ctx_begin(wr_lua_ctxcall *cx)
{
    wr_lua_ctx_free_pubs(cx);
    cx->forced = WR_OUT_OK;
    cx->forced_reason[0] = '\0';
}

void wr_lua_ctx_destroy(wr_lua_ctxcall *cx)
{
    wr_lua_ctx_free_pubs(cx);
    free(cx->pubs);
    cx->pubs = NULL;
    cx->pub_cap = 0;
}
