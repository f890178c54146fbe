/*
 * lua_breaker: ctx.breaker(name), circuit breakers around a handler's calls
 * to a downstream dependency.
 *
 *     local payments = ctx.breaker("payments")
 *     local res = payments:call(function()
 *       return ctx.http.request{ method = "POST", url = PAY_URL, body = order }
 *     end)
 *
 * call(fn, ...) runs fn(...) when the breaker lets it, and reports the result:
 * returning counts as a success, raising as a failure (the error is raised
 * again, unchanged). While the breaker is open call() fails fast with a
 * retryable error, so the message is retried later instead of hammering the
 * dependency. state() says "closed", "open" or "half-open". The breakers are
 * shared by every worker of the process (breakers.h).
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "breakers.h"
#include "contract.h"
#include "lua_api.h"

static wr_shared_brk *check_self(lua_State *L, const char *fn)
{
    if (!lua_istable(L, 1)) {
        wr_lua_caller_error(L, WR_EB_SELF, fn, fn);
    }
    lua_getfield(L, 1, "__brk");
    wr_shared_brk *b = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (b == NULL) {
        wr_lua_caller_error(L, WR_EB_NOT_BREAKER, fn);
    }
    return b;
}

/* breaker:call(fn, ...) */
static int brk_call(lua_State *L)
{
    wr_lua_check_handling(L, "breaker(...):call");
    wr_shared_brk *b = check_self(L, "call");
    if (!lua_isfunction(L, 2)) {
        return wr_lua_caller_error(L, WR_EB_FN, luaL_typename(L, 2));
    }
    if (!wr_shared_brk_allow(b)) {
        wr_lua_note_dependency(L);
        return wr_lua_caller_error(L, WR_EB_OPEN, wr_shared_brk_name(b));
    }
    int nargs = lua_gettop(L) - 2;
    lua_pushvalue(L, 2);
    lua_insert(L, 3); /* -- self fn fn args... */
    int base = 2;
    if (lua_pcall(L, nargs, LUA_MULTRET, 0) != 0) {
        wr_shared_brk_failed(b, NULL, 0, lua_tostring(L, -1));
        wr_lua_note_dependency(L);
        return lua_error(L); /* the same error value, unchanged */
    }
    wr_shared_brk_record(b, 1);
    return lua_gettop(L) - base;
}

/* breaker:state() */
static int brk_state(lua_State *L)
{
    wr_shared_brk *b = check_self(L, "state");
    lua_pushstring(L, wr_brk_state_name(wr_shared_brk_state(b)));
    return 1;
}

/* ctx.breaker(name) */
static int ctx_breaker(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING || lua_objlen(L, 1) == 0 || lua_objlen(L, 1) > 100) {
        return wr_lua_caller_error(L, WR_EB_NAME, luaL_typename(L, 1));
    }
    /* one breaker object per name and state, cached in the registry */
    lua_getfield(L, LUA_REGISTRYINDEX, "warren.breaker_objs");
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    if (lua_istable(L, -1)) {
        return 1;
    }
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "warren.breakers");
    struct wr_breakers *set = lua_touserdata(L, -1);
    lua_getfield(L, LUA_REGISTRYINDEX, "warren.breaker_fallback");
    const wr_breaker_policy *fallback = lua_touserdata(L, -1);
    lua_pop(L, 2);
    if (set == NULL || fallback == NULL) {
        return wr_lua_caller_error(L, WR_EB_UNAVAILABLE);
    }
    wr_shared_brk *b = wr_breakers_named(set, lua_tostring(L, 1), fallback);
    if (b == NULL) {
        return luaL_error(L, "not enough memory");
    }
    lua_createtable(L, 0, 4); /* -- objs obj */
    lua_pushlightuserdata(L, b);
    lua_setfield(L, -2, "__brk");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "name");
    lua_pushcfunction(L, brk_call);
    lua_setfield(L, -2, "call");
    lua_pushcfunction(L, brk_state);
    lua_setfield(L, -2, "state");
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    return 1;
}

void wr_lua_breaker_inject(lua_State *L, void *breakers, const void *fallback)
{
    lua_pushlightuserdata(L, breakers);
    lua_setfield(L, LUA_REGISTRYINDEX, "warren.breakers");
    lua_pushlightuserdata(L, (void *)fallback);
    lua_setfield(L, LUA_REGISTRYINDEX, "warren.breaker_fallback");
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "warren.breaker_objs");
    /* -- ... ctx */
    lua_pushcfunction(L, ctx_breaker);
    lua_setfield(L, -2, "breaker");
}
