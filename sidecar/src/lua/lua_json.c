/*
 * lua_json: lua-cjson inside the state's memory limit.
 *
 * lua-cjson builds its output (encode) and a scratch copy of its input
 * (decode) in malloc'd buffers, outside the allocator that caps a state: an
 * encode of a table that refers 100 times to one 16 MiB string grew a 1.6 GB
 * buffer, and a decode that runs out of Lua memory halfway leaks its scratch
 * buffer (as long as its input) on every try. Its setters let a handler raise
 * the nesting limits past what the C stack holds, and new() makes instances
 * none of this applies to.
 *
 * So in every state the encode and decode of both cjson and cjson.safe (also
 * ctx.json, and what ctx.publish, ctx.log and ctx.http encode, and the body
 * decoded into event.data) first bound what they will need: encode walks the
 * value and adds up an upper bound of the text it writes; decode scans the
 * text for an upper bound of the Lua memory its result takes. When the bound
 * does not fit in what the state may still allocate (after a full
 * collection), the call fails with "not enough memory" before cjson
 * allocates anything; when it fits, cjson cannot run out halfway. While
 * cjson runs, the state may go a quarter over its limit (for what the bound
 * cannot see: the string table growing); the limit holds again after the
 * call, or the call fails. Encoding keeps no buffer between calls. The walk
 * checks the handler's deadline, so a value that would encode to gigabytes
 * (a table referring to itself through many paths) stops in time.
 * encode_max_depth and decode_max_depth accept 1 to 1000; encode_keep_buffer
 * and new raise.
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "lua_api.h"

#define MAX_DEPTH 1000         /* cjson's default nesting limits, the most we allow */
#define WALK_CHECK_EVERY 65536 /* values walked between deadline checks */
#define STACK_SLACK 64         /* Lua stack slots cjson may use beyond 3 per level */

/* ---- bounds ------------------------------------------------------------------------ */

/* Bytes cjson writes for byte C of a string: \uXXXX for control characters
 * and DEL, a two-character escape for " / \ \b \t \n \f \r. */
static size_t escaped_len(const unsigned char *s, size_t n)
{
    size_t out = n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c < 0x20 || c == 0x7f) {
            out += (c == '\b' || c == '\t' || c == '\n' || c == '\f' || c == '\r') ? 1 : 5;
        } else if (c == '"' || c == '/' || c == '\\') {
            out += 1;
        }
    }
    return out;
}

/* Per-item costs of a decoded value in a GC64 LuaJIT state, generous: a
 * string object with its share of the string table, a table with room to
 * grow, an array slot, an object member (hash node, with the old node array
 * alive while it is resized). */
#define DEC_STRING 64
#define DEC_TABLE 192
#define DEC_ARRAY_ITEM 32
#define DEC_OBJECT_ITEM 112
#define DEC_FIXED (64 * 1024)

static int is_space_or_sep(unsigned char c)
{
    return c == ',' || c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Whether C ends a number or literal: JSON's structural characters and a quote. */
static int ends_scalar(unsigned char c)
{
    return c <= ':' ? (c == ',' || c == ':' || c == '"')
                    : (c == ']' || c == '}' || c == '[' || c == '{');
}

size_t wr_json_decode_bound(const char *text, size_t n, int *max_depth)
{
    /* container kinds by depth ('[' or '{'); deeper than MAX_DEPTH cjson stops */
    char kind[MAX_DEPTH + 2];
    int depth = 0, deepest = 0;
    size_t bound = DEC_FIXED;
    const unsigned char *p = (const unsigned char *)text, *end = p + n;
    while (p < end) {
        unsigned char c = *p;
        size_t item = depth > 0 && kind[depth] == '{' ? DEC_OBJECT_ITEM : DEC_ARRAY_ITEM;
        if (c == '"') {
            /* the closing quote: the next one after an even run of backslashes */
            const unsigned char *q = p + 1;
            while ((q = memchr(q, '"', (size_t)(end - q))) != NULL) {
                const unsigned char *b = q;
                while (b > p + 1 && b[-1] == '\\') {
                    b--;
                }
                if (((q - b) & 1) == 0) {
                    break;
                }
                q++;
            }
            if (q == NULL) {
                q = end;
            }
            /* the raw length bounds the unescaped one; keys count as items too */
            bound += DEC_STRING + (size_t)(q - p) + item;
            p = q < end ? q + 1 : q;
            continue;
        }
        if (c == '[' || c == '{') {
            bound += DEC_TABLE + item;
            if (depth <= MAX_DEPTH) {
                depth++;
                kind[depth] = (char)c;
            }
            deepest = depth > deepest ? depth : deepest;
        } else if (c == ']' || c == '}') {
            depth -= depth > 0;
        } else if (!is_space_or_sep(c)) {
            /* a number or a literal: one item, however long */
            bound += item;
            while (p + 1 < end && !ends_scalar(p[1])) {
                p++;
            }
        }
        p++;
    }
    if (max_depth != NULL) {
        *max_depth = deepest;
    }
    return bound;
}

typedef struct {
    lua_State *L;
    size_t cap;     /* stop once the bound passes this */
    size_t acc;     /* the bound so far */
    unsigned steps; /* values walked, for deadline checks */
    int deepest;
} enc_walk;

/*
 * Add to W->acc an upper bound of the bytes cjson.encode writes for the value
 * at stack index IDX (absolute), DEPTH levels down. Returns 1 as soon as the
 * bound passes W->cap. Values cjson refuses (functions, bad keys, too deep)
 * count little: cjson raises on them before writing much.
 */
static int enc_bound(enc_walk *w, int idx, int depth)
{
    lua_State *L = w->L;
    if (++w->steps % WALK_CHECK_EVERY == 0) {
        wr_lua_check_deadline(L);
    }
    size_t n;
    const char *s;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &n);
        if (w->acc + n + 2 > w->cap) { /* the escaped text is no shorter */
            w->acc += n + 2;
            return 1;
        }
        w->acc += 2 + escaped_len((const unsigned char *)s, n);
        break;
    case LUA_TNUMBER:
        w->acc += 32; /* "%.14g" */
        break;
    case LUA_TTABLE:
        w->acc += 2;
        if (depth >= MAX_DEPTH) {
            break;
        }
        w->deepest = depth + 1 > w->deepest ? depth + 1 : w->deepest;
        luaL_checkstack(L, 4, "JSON nesting");
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            /* -- ... key value */
            int kt = lua_type(L, -2);
            if (kt == LUA_TSTRING) {
                s = lua_tolstring(L, -2, &n);
                w->acc += 4 + escaped_len((const unsigned char *)s, n);
            } else {
                w->acc += 36; /* a number key written as a string, or cjson raises */
            }
            if (w->acc > w->cap || enc_bound(w, lua_gettop(L), depth + 1)) {
                lua_pop(L, 2);
                return 1;
            }
            lua_pop(L, 1);
        }
        break;
    default:
        w->acc += 5; /* true, false, null (nil or cjson.null); other types raise */
        break;
    }
    return w->acc > w->cap;
}

/* ---- the guards -------------------------------------------------------------------- */

/* Run the original function (upvalue 1, its name upvalue 2) on the arguments, with the
 * state's limit raised by a quarter while it runs; raise its error again,
 * with the caller's position as cjson would have had it. Returns its results. */
static int call_original(lua_State *L)
{
    int nargs = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    wr_lua_mem_slack(L, 1);
    int rc = lua_pcall(L, nargs, LUA_MULTRET, 0);
    wr_lua_mem_slack(L, 0);
    if (rc != 0) {
        if (rc == LUA_ERRMEM) {
            wr_lua_note_oom(L);
            return lua_error(L);
        }
        if (lua_type(L, -1) == LUA_TSTRING) {
            /* cjson raised from under this C function, which LuaJIT cannot name:
             * give its argument errors the name, and every error the caller's
             * position, as a direct call would have had */
            const char *msg = lua_tostring(L, -1);
            const char *q = strstr(msg, " to '?' (");
            luaL_where(L, 1);
            if (strncmp(msg, "bad argument #", 14) == 0 && q != NULL) {
                lua_pushlstring(L, msg, (size_t)(q - msg));
                lua_pushfstring(L, " to '%s' (%s", lua_tostring(L, lua_upvalueindex(2)),
                                q + strlen(" to '?' ("));
                lua_concat(L, 3);
            } else {
                lua_pushvalue(L, -2);
                lua_concat(L, 2);
            }
        }
        return lua_error(L);
    }
    if (wr_lua_mem_free(L) == 0) {
        /* over the limit once the slack is gone: let the collector try, else fail */
        lua_gc(L, LUA_GCCOLLECT, 0);
        if (wr_lua_mem_free(L) == 0) {
            lua_settop(L, 0);
            lua_gc(L, LUA_GCCOLLECT, 0);
            wr_lua_note_oom(L);
            return luaL_error(L, "not enough memory");
        }
    }
    return lua_gettop(L);
}

/* Fail when NEED bytes do not fit in what the state may still allocate, after
 * a full collection if that is what it takes. */
static void need_memory(lua_State *L, size_t need)
{
    if (need <= wr_lua_mem_free(L)) {
        return;
    }
    lua_gc(L, LUA_GCCOLLECT, 0);
    if (need <= wr_lua_mem_free(L)) {
        return;
    }
    wr_lua_note_oom(L);
    luaL_error(L, "not enough memory");
}

static int guarded_encode(lua_State *L)
{
    if (lua_gettop(L) == 1) {
        enc_walk w = {.L = L, .cap = wr_lua_mem_limit(L)};
        if (enc_bound(&w, 1, 0)) {
            wr_lua_note_oom(L);
            return luaL_error(L,
                              "not enough memory: the value would encode to more than %zu "
                              "bytes of JSON",
                              w.cap);
        }
        need_memory(L, w.acc + 64);
        /* cjson grows the Lua stack as it descends: grow it now, before cjson
         * holds a buffer that an out-of-memory there would leak */
        luaL_checkstack(L, 3 * w.deepest + STACK_SLACK, "JSON nesting");
    }
    return call_original(L);
}

static int guarded_decode(lua_State *L)
{
    if (lua_gettop(L) == 1 && lua_type(L, 1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, 1, &n);
        int depth;
        size_t need = wr_json_decode_bound(s, n, &depth);
        need_memory(L, need);
        luaL_checkstack(L, 3 * depth + STACK_SLACK, "JSON nesting");
    }
    return call_original(L);
}

/* encode_max_depth / decode_max_depth: at most MAX_DEPTH (C stack). */
static int guarded_depth(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        lua_Number d = luaL_checknumber(L, 1);
        if (!(d >= 1 && d <= MAX_DEPTH)) {
            return wr_lua_caller_error(L, "cjson: a nesting depth must be from 1 to %d", MAX_DEPTH);
        }
    }
    return call_original(L);
}

static int refused(lua_State *L)
{
    return wr_lua_caller_error(L, "cjson.%s is not available in handlers",
                               lua_tostring(L, lua_upvalueindex(1)));
}

/* Wrap field NAME of the module table at the top of the stack with FN
 * (upvalues: the original function, NAME). */
static void wrap(lua_State *L, const char *name, lua_CFunction fn)
{
    lua_getfield(L, -1, name);
    lua_pushstring(L, name);
    lua_pushcclosure(L, fn, 2);
    lua_setfield(L, -2, name);
}

void wr_lua_json_guard(lua_State *L, const char *registry_key)
{
    lua_getfield(L, LUA_REGISTRYINDEX, registry_key); /* -- module */
    lua_getfield(L, -1, "encode_keep_buffer");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
    wrap(L, "encode", guarded_encode);
    wrap(L, "decode", guarded_decode);
    wrap(L, "encode_max_depth", guarded_depth);
    wrap(L, "decode_max_depth", guarded_depth);
    static const char *const off[] = {"encode_keep_buffer", "new"};
    for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++) {
        lua_pushstring(L, off[i]);
        lua_pushcclosure(L, refused, 1);
        lua_setfield(L, -2, off[i]);
    }
    lua_pop(L, 1);
}
