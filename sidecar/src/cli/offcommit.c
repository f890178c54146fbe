/*
 * offcommit: the commit script over an in-memory Redis, for `warren exec`.
 * See offcommit.h.
 */
#include "offcommit.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

#include "scripts.h"

/* The names of the results, by value. */
static const char *const result_names[] = {
    [WR_OFFCOMMIT_APPLIED] = "applied",
    [WR_OFFCOMMIT_REFUSED] = "refused",
    [WR_OFFCOMMIT_CONFLICT] = "conflict",
    [WR_OFFCOMMIT_FAILED] = "failed",
};
_Static_assert(sizeof(result_names) / sizeof(result_names[0]) == WR_OFFCOMMIT_FAILED + 1,
               "a name for every result");

const char *wr_offcommit_name(wr_offcommit_result r)
{
    return (unsigned)r <= WR_OFFCOMMIT_FAILED ? result_names[r] : "failed";
}

/* The model's clock: seconds, fixed for the run (upvalue 1). */
static int clock_now(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    return 1;
}

/* [-0, +1] A model entry for the event file's value V: {kind =, v =}. */
static void push_entry(lua_State *L, json_t *v)
{
    lua_createtable(L, 0, 2);
    if (json_is_object(v)) {
        lua_pushstring(L, "hash");
        lua_setfield(L, -2, "kind");
        lua_newtable(L);
        const char *f;
        json_t *x;
        json_object_foreach(v, f, x)
        {
            lua_pushstring(L, json_is_string(x) ? json_string_value(x) : "");
            lua_setfield(L, -2, f);
        }
    } else if (json_is_array(v)) {
        lua_pushstring(L, "set");
        lua_setfield(L, -2, "kind");
        lua_newtable(L);
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
        {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, json_is_string(m) ? json_string_value(m) : "");
        }
    } else {
        lua_pushstring(L, "string");
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, json_is_string(v) ? json_string_value(v) : "");
    }
    lua_setfield(L, -2, "v");
}

/* Fill the table at the top of the stack (db) from STATE: each key's entry, a
 * null deleting it. Hashes and sets with nothing in them are no key at all,
 * as in Redis. */
static void fill_db(lua_State *L, json_t *state)
{
    const char *k;
    json_t *v;
    json_object_foreach(state, k, v)
    {
        int empty = (json_is_object(v) && json_object_size(v) == 0) ||
                    (json_is_array(v) && json_array_size(v) == 0);
        if (json_is_null(v) || empty) {
            lua_pushnil(L);
        } else {
            push_entry(L, v);
        }
        lua_setfield(L, -2, k);
    }
}

/* [-0, +1] A string of N bytes at P, without the first SKIP of them. */
static void push_from(lua_State *L, wr_sbstr s, size_t skip)
{
    skip = skip < s.n ? skip : s.n;
    lua_pushlstring(L, s.p + skip, s.n - skip);
}

/* [-0, +1] The model's message: {writes = {...}, guards = {...}} of BUF. */
static void push_msg(lua_State *L, const wr_storebuf *buf, size_t prefix_len)
{
    int nw, ng;
    const wr_sb_write *ws = wr_storebuf_writes(buf, &nw);
    const wr_sb_guard *gs = wr_storebuf_guards(buf, &ng);
    lua_createtable(L, 0, 2);
    lua_createtable(L, nw, 0);
    for (int i = 0; i < nw; i++) {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, wr_sb_op_name(ws[i].op));
        lua_setfield(L, -2, "op");
        push_from(L, wr_storebuf_key(buf, ws[i].key), prefix_len);
        lua_setfield(L, -2, "key");
        push_from(L, ws[i].a, 0);
        lua_setfield(L, -2, "a");
        push_from(L, ws[i].b, 0);
        lua_setfield(L, -2, "b");
        lua_pushnumber(L, (lua_Number)ws[i].num);
        lua_setfield(L, -2, "num");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "writes");
    lua_createtable(L, ng, 0);
    for (int i = 0; i < ng; i++) {
        lua_createtable(L, 0, 4);
        lua_pushstring(L, gs[i].cmd);
        lua_setfield(L, -2, "cmd");
        push_from(L, wr_storebuf_key(buf, gs[i].key), prefix_len);
        lua_setfield(L, -2, "key");
        push_from(L, gs[i].arg, 0);
        lua_setfield(L, -2, "arg");
        lua_createtable(L, (int)gs[i].count, 0);
        for (size_t j = 0; j < gs[i].count; j++) {
            push_from(L, gs[i].items[j], 0);
            lua_rawseti(L, -2, (int)j + 1);
        }
        lua_setfield(L, -2, "items");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "guards");
}

wr_offcommit_result wr_offcommit_run(const wr_storebuf *buf, const char *prefix, json_t *seed,
                                     json_t *at_commit, double now_s, char *why, size_t whycap)
{
    why[0] = '\0';
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        snprintf(why, whycap, "out of memory");
        return WR_OFFCOMMIT_FAILED;
    }
    luaL_openlibs(L);
    wr_offcommit_result rc = WR_OFFCOMMIT_FAILED;
    /* stack: M */
    if (luaL_loadbuffer(L, wr_lua_commit_model, strlen(wr_lua_commit_model), "=commit_model.lua") !=
            0 ||
        lua_pcall(L, 0, 1, 0) != 0) {
        snprintf(why, whycap, "the commit model does not load: %s", lua_tostring(L, -1));
        goto out;
    }
    lua_getfield(L, -1, "commit");
    lua_pushstring(L, wr_script_finish);
    /* stack: M, commit, script, store */
    lua_createtable(L, 0, 4);
    lua_newtable(L);
    if (json_is_object(seed)) {
        fill_db(L, seed);
    }
    if (json_is_object(at_commit)) {
        fill_db(L, at_commit);
    }
    lua_setfield(L, -2, "db");
    lua_newtable(L);
    lua_setfield(L, -2, "exp");
    lua_pushnumber(L, now_s);
    lua_pushcclosure(L, clock_now, 1);
    lua_setfield(L, -2, "now");
    lua_pushstring(L, prefix);
    lua_setfield(L, -2, "prefix");
    push_msg(L, buf, strlen(prefix));
    /* stack: M, commit, script, store, msg -> M, result, why */
    if (lua_pcall(L, 3, 2, 0) != 0) {
        snprintf(why, whycap, "the commit model failed: %s", lua_tostring(L, -1));
        goto out;
    }
    const char *result = lua_tostring(L, -2);
    snprintf(why, whycap, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    if (result == NULL) {
        snprintf(why, whycap, "the commit model gave no result");
    } else if (strcmp(result, "applied") == 0) {
        rc = WR_OFFCOMMIT_APPLIED;
    } else if (strcmp(result, "refused") == 0) {
        rc = WR_OFFCOMMIT_REFUSED;
    } else if (strcmp(result, "conflict") == 0) {
        rc = WR_OFFCOMMIT_CONFLICT;
    }
out:
    lua_close(L);
    return rc;
}
