/*
 * lua_rt: the handler's LuaJIT state: its setup (libraries, cjson, the
 * sandbox of sidecar/lua/sandbox.lua), the memory limit and the deadline, the
 * event and ctx tables, and one call into the handler per message. See
 * lua_rt.h for the contract. The ctx functions live in their own modules, one
 * per API area: lua_ctx.c (publish, reject, retry, now, log), lua_http.c,
 * lua_store.c, lua_breaker.c; their texts are sidecar/lua/contract.lua's.
 *
 * Stack-layout comments ("-- a b c" = bottom to top of the part we touch)
 * accompany the functions that juggle the Lua stack.
 */
#define _GNU_SOURCE /* pthread_getattr_np, CLOCK_MONOTONIC_COARSE */
#include "lua_rt.h"

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "contract.h"
#include "log.h"
#include "lua_api.h"
#include "lua_ctx.h"
#include "scripts.h"

#define HOOK_EVERY WR_LIMIT_HOOK_EVERY           /* VM instructions between deadline checks */
#define HOOK_MASK (LUA_MASKCOUNT | LUA_MASKCALL) /* calls: C stack depth, coarse deadline */
#define CSTACK_BUDGET (2u << 20)  /* C stack a handler call may use below its entry */
#define CSTACK_RESERVE (1u << 20) /* kept free at the thread stack's end in any case */
#define CSTACK_ERROR                                                                               \
    "C stack overflow: calls nested too deeply through C functions (string.gsub or "               \
    "table.sort callbacks, coroutines, metamethods)"
#define DEFAULT_MEMORY (64u << 20) /* bytes per state */

struct wr_lua {
    lua_State *L;
    wr_lua_opts opts;
    char *handler_path; /* owned copies of the opts strings */
    char *subscription;
    char *queue;
    char *handler_dir;
    char *handler_name; /* file name, for logs */
    char version[17];

    /* memory accounting for the allocator */
    size_t mem_used;
    size_t mem_limit;
    int oom;           /* an allocation was refused since the last reset */
    int dep_failed;    /* a dependency failed during the current call (lua_api.h) */
    int mem_slack;     /* a guarded cjson call runs: the limit is a quarter higher */
    const char *stage; /* what the runtime does outside the handler, for errors */

    /* the current call: its phase, message, publishes and forced outcome
     * (what the ctx functions of lua_ctx.c read and write) */
    wr_lua_ctxcall cx;
    double deadline_ms;     /* monotonic */
    double next_service_ms; /* monotonic: when the hook next calls opts.service */
    double next_check_ms;   /* monotonic: when a call event next does the full check */
    uintptr_t cstack_floor; /* lowest C stack address a call may start below (0: none) */
    int timed_out;
    int cstack_overflow; /* the current call went below cstack_floor */
    atomic_int interrupted;

    int ref_handle; /* registry refs */
    int ref_ctx;
    int ref_decode; /* cjson.decode */
    /* cjson.encode: cx.ref_encode */
    int ref_null; /* cjson.null */
};

/* ---- allocator with a limit ------------------------------------------------ */

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    wr_lua *rt = ud;
    if (nsize == 0) {
        free(ptr);
        rt->mem_used -= osize;
        return NULL;
    }
    size_t limit = rt->mem_slack ? rt->mem_limit + rt->mem_limit / 4 : rt->mem_limit;
    if (nsize > osize && rt->mem_used + (nsize - osize) > limit) {
        rt->oom = 1;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p != NULL) {
        rt->mem_used = rt->mem_used - osize + nsize;
    } else if (nsize > osize) {
        rt->oom = 1;
    }
    return p;
}

/* ---- helpers ------------------------------------------------------------------ */

void wr_lua_push_where(lua_State *L)
{
    lua_Debug ar;
    /* a bound: handler code is rarely deep, and this runs only on errors */
    for (int level = 1; level < 64 && lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 && ar.source[0] != '=') {
            lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
    lua_pushliteral(L, "");
}

/* ---- for the API-area modules (lua_api.h) ------------------------------------- */

static wr_lua *rt_of(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "warren.rt");
    wr_lua *rt = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return rt;
}

int wr_lua_handling(lua_State *L)
{
    return rt_of(L)->cx.phase == WR_LUA_PHASE_HANDLE;
}

void wr_lua_check_handling(lua_State *L, const char *fn)
{
    wr_lua_ctx_check_phase(L, &rt_of(L)->cx, fn, 0);
}

/*
 * Raise an error at the handler's line (like error(msg, 2) when the handler
 * called us directly): the message starts with the source:line of the
 * handler code that made the call (wr_lua_push_where), not with the C
 * function's, even through pcall or a breaker's call.
 */
int wr_lua_caller_error(lua_State *L, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wr_lua_push_where(L);
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    return lua_error(L);
}

void wr_lua_note_dependency(lua_State *L)
{
    rt_of(L)->dep_failed = 1;
}

double wr_lua_time_left_ms(lua_State *L)
{
    return rt_of(L)->deadline_ms - wr_mono_ms();
}

const char *wr_lua_trace_id(lua_State *L)
{
    wr_lua *rt = rt_of(L);
    return rt->cx.call != NULL ? rt->cx.call->trace_id : NULL;
}

const struct wr_lua_store_s *wr_lua_store_of(lua_State *L)
{
    wr_lua *rt = rt_of(L);
    return rt->cx.call != NULL ? rt->cx.call->store : NULL;
}

const char *wr_lua_tracestate(lua_State *L)
{
    wr_lua *rt = rt_of(L);
    return rt->cx.call != NULL ? rt->cx.call->tracestate : NULL;
}

wr_http_send_fn wr_lua_http_transport(lua_State *L, void **ud)
{
    wr_lua *rt = rt_of(L);
    *ud = rt->opts.http_ud;
    return rt->opts.http_send;
}

void wr_lua_service(lua_State *L)
{
    wr_lua *rt = rt_of(L);
    double now = wr_mono_ms();
    if (rt->opts.service != NULL && now >= rt->next_service_ms) {
        rt->next_service_ms = now + (double)rt->opts.service_every_ms;
        rt->opts.service(rt->opts.service_ud);
    }
}

void wr_lua_push_encode(lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt_of(L)->cx.ref_encode);
}

void wr_lua_push_safe_decode(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "warren.cjson_safe");
    lua_getfield(L, -1, "decode");
    lua_remove(L, -2);
}

uint64_t wr_fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* ---- the timeout hook ---------------------------------------------------------- */

/*
 * One hook does three jobs. On count events (every HOOK_EVERY VM
 * instructions) and on call events once the coarse clock says a check is
 * due, it lets the worker service its connection and stops a call past its
 * deadline (or interrupted). On every call event (into a Lua or a C
 * function) it also compares the C stack with the call's floor: recursion
 * through C functions that call back into Lua (string.gsub with a function,
 * table.sort's comparator, coroutines, metamethods run from C) re-enters the
 * VM on the C stack, where LuaJIT sets no limit and a deep enough nesting
 * ends the process with SIGSEGV. Every such nesting calls a function at each
 * level, so the check catches it while there is stack left to raise an error.
 * Calls are also where a loop of slow C functions (each shorter than the
 * deadline, thousands of them between count events) is stopped in time.
 */

static uintptr_t stack_here(void)
{
    return (uintptr_t)__builtin_frame_address(0);
}

/* The low end of this thread's stack, or 0 when the system does not say. */
static uintptr_t thread_stack_low(void)
{
    static _Thread_local uintptr_t low = 1; /* 1: not asked yet */
    if (low == 1) {
        low = 0;
        pthread_attr_t a;
        if (pthread_getattr_np(pthread_self(), &a) == 0) {
            void *addr;
            size_t size;
            if (pthread_attr_getstack(&a, &addr, &size) == 0) {
                low = (uintptr_t)addr;
            }
            pthread_attr_destroy(&a);
        }
    }
    return low;
}

/* Start a call that runs Lua code: it may use CSTACK_BUDGET bytes of C stack
 * below here, and never the last CSTACK_RESERVE of the thread's stack. */
static void set_cstack_floor(wr_lua *rt)
{
    uintptr_t here = stack_here();
    uintptr_t floor = here > CSTACK_BUDGET ? here - CSTACK_BUDGET : 0;
    uintptr_t low = thread_stack_low();
    if (low != 0 && low + CSTACK_RESERVE > floor) {
        floor = low + CSTACK_RESERVE;
    }
    if (low != 0 && floor >= here) {
        floor = low + (here - low) / 2; /* a small stack: half of what is left */
    }
    rt->cstack_floor = floor;
}

static double coarse_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static wr_lua *rt_of_alloc(lua_State *L)
{
    void *ud = NULL;
    return lua_getallocf(L, &ud) == limited_alloc ? ud : NULL;
}

static void deadline_hook(lua_State *L, lua_Debug *ar);
static int traceback(lua_State *L);

/* Push "<source:line>: " of the innermost Lua function at or above LEVEL
 * (nothing when there is none). */
static void push_where(lua_State *L, int level)
{
    lua_Debug d;
    for (int i = level; i < level + 8 && lua_getstack(L, i, &d); i++) {
        if (lua_getinfo(L, "Sl", &d) && d.currentline > 0) {
            lua_pushfstring(L, "%s:%d: ", d.short_src, d.currentline);
            return;
        }
    }
    lua_pushliteral(L, "");
}

/* Raise the timeout (or interruption) error. From now on the hook runs at
 * every instruction, so a handler that catches the error with pcall cannot
 * run on: the next instruction outside the pcall raises again. LEVEL: the
 * stack level of the code to blame (0 in a hook, 1 in a C function). */
static int raise_deadline(lua_State *L, wr_lua *rt, int stop, int level)
{
    rt->timed_out = !stop;
    lua_sethook(L, deadline_hook, HOOK_MASK, 1);
    push_where(L, level);
    if (stop) {
        lua_pushstring(L, WR_E_INTERRUPTED);
    } else {
        char msg[128];
        snprintf(msg, sizeof(msg), WR_E_TIMEOUT, (long long)rt->opts.timeout_ms);
        lua_pushstring(L, msg);
    }
    lua_concat(L, 2);
    return lua_error(L);
}

/* Service the connection when due; raise when past the deadline. NOW: the
 * monotonic clock. */
static void full_check(lua_State *L, wr_lua *rt, double now, int level)
{
    int stop = atomic_load(&rt->interrupted);
    if (rt->opts.service != NULL && now >= rt->next_service_ms &&
        rt->cx.phase == WR_LUA_PHASE_HANDLE) {
        rt->next_service_ms = now + (double)rt->opts.service_every_ms;
        rt->opts.service(rt->opts.service_ud);
        now = wr_mono_ms();
    }
    rt->next_check_ms = rt->deadline_ms;
    if (rt->opts.service != NULL && rt->cx.phase == WR_LUA_PHASE_HANDLE &&
        rt->next_service_ms < rt->next_check_ms) {
        rt->next_check_ms = rt->next_service_ms;
    }
    if (stop || now >= rt->deadline_ms) {
        raise_deadline(L, rt, stop, level);
    }
}

static void deadline_hook(lua_State *L, lua_Debug *ar)
{
    wr_lua *rt = rt_of_alloc(L);
    if (rt == NULL || rt->cx.phase == WR_LUA_PHASE_NONE) {
        return;
    }
    if (ar->event != LUA_HOOKCOUNT) {
        if (stack_here() < rt->cstack_floor) {
            rt->cstack_overflow = 1;
            /* the function being entered, if it is Lua code, else its caller */
            push_where(L, 0);
            lua_pushstring(L, CSTACK_ERROR);
            lua_concat(L, 2);
            lua_error(L);
        }
        if (coarse_ms() < rt->next_check_ms &&
            !atomic_load_explicit(&rt->interrupted, memory_order_relaxed)) {
            return;
        }
        /* never in the traceback handler: an error there would replace the
         * one being reported with "error in error handling" */
        if (lua_getinfo(L, "f", ar)) {
            int tb = lua_tocfunction(L, -1) == traceback;
            lua_pop(L, 1);
            if (tb) {
                return;
            }
        }
    }
    /* In a hook the running function is level 0 (luaL_error's level 1 would
     * name its caller, or nothing when that is C, instead of the looping line). */
    full_check(L, rt, wr_mono_ms(), 0);
}

void wr_lua_check_deadline(lua_State *L)
{
    wr_lua *rt = rt_of_alloc(L);
    if (rt != NULL && rt->cx.phase != WR_LUA_PHASE_NONE) {
        full_check(L, rt, wr_mono_ms(), 1);
    }
}

/* Start the deadline of a call that runs handler code. */
static void start_deadline(wr_lua *rt)
{
    double now = wr_mono_ms();
    rt->deadline_ms = now + (double)rt->opts.timeout_ms;
    rt->next_service_ms = now + (double)rt->opts.service_every_ms;
    rt->next_check_ms = rt->deadline_ms;
    if (rt->opts.service != NULL && rt->next_service_ms < rt->next_check_ms) {
        rt->next_check_ms = rt->next_service_ms;
    }
}

/* ---- memory, for lua_json.c (lua_api.h) ----------------------------------------- */

size_t wr_lua_mem_free(lua_State *L)
{
    wr_lua *rt = rt_of_alloc(L);
    if (rt == NULL) {
        return (size_t)-1;
    }
    return rt->mem_used < rt->mem_limit ? rt->mem_limit - rt->mem_used : 0;
}

size_t wr_lua_mem_limit(lua_State *L)
{
    wr_lua *rt = rt_of_alloc(L);
    return rt != NULL ? rt->mem_limit : (size_t)-1;
}

void wr_lua_note_oom(lua_State *L)
{
    wr_lua *rt = rt_of_alloc(L);
    if (rt != NULL) {
        rt->oom = 1;
    }
}

void wr_lua_mem_slack(lua_State *L, int on)
{
    wr_lua *rt = rt_of_alloc(L);
    if (rt != NULL) {
        rt->mem_slack = on;
    }
}

/* ---- building values ---------------------------------------------------------- */

static void push_bytes(lua_State *L, amqp_bytes_t b)
{
    lua_pushlstring(L, b.len ? b.bytes : "", b.len);
}

static void push_table(lua_State *L, const amqp_table_t *t, int depth);

/* Push one AMQP field value as the closest Lua value. */
static void push_field(lua_State *L, const amqp_field_value_t *v, int depth)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        lua_pushboolean(L, v->value.boolean);
        break;
    case AMQP_FIELD_KIND_I8:
        lua_pushnumber(L, v->value.i8);
        break;
    case AMQP_FIELD_KIND_U8:
        lua_pushnumber(L, v->value.u8);
        break;
    case AMQP_FIELD_KIND_I16:
        lua_pushnumber(L, v->value.i16);
        break;
    case AMQP_FIELD_KIND_U16:
        lua_pushnumber(L, v->value.u16);
        break;
    case AMQP_FIELD_KIND_I32:
        lua_pushnumber(L, v->value.i32);
        break;
    case AMQP_FIELD_KIND_U32:
        lua_pushnumber(L, v->value.u32);
        break;
    case AMQP_FIELD_KIND_I64:
        lua_pushnumber(L, (double)v->value.i64);
        break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        lua_pushnumber(L, (double)v->value.u64);
        break;
    case AMQP_FIELD_KIND_F32:
        lua_pushnumber(L, v->value.f32);
        break;
    case AMQP_FIELD_KIND_F64:
        lua_pushnumber(L, v->value.f64);
        break;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        push_bytes(L, v->value.bytes);
        break;
    case AMQP_FIELD_KIND_TABLE:
        push_table(L, &v->value.table, depth + 1);
        break;
    case AMQP_FIELD_KIND_ARRAY:
        lua_createtable(L, v->value.array.num_entries, 0);
        if (depth < 8) {
            for (int i = 0; i < v->value.array.num_entries; i++) {
                push_field(L, &v->value.array.entries[i], depth + 1);
                lua_rawseti(L, -2, i + 1);
            }
        }
        break;
    default:
        lua_pushboolean(L, 0); /* void and decimals: present, no useful value */
        break;
    }
}

static void push_table(lua_State *L, const amqp_table_t *t, int depth)
{
    lua_createtable(L, 0, t ? t->num_entries : 0);
    if (t == NULL || depth >= 8) {
        return;
    }
    for (int i = 0; i < t->num_entries; i++) {
        push_bytes(L, t->entries[i].key);
        push_field(L, &t->entries[i].value, depth);
        lua_rawset(L, -3);
    }
}

/* Set T[K] = the bytes B, or leave it nil when B is empty. */
static void set_bytes(lua_State *L, const char *k, amqp_bytes_t b)
{
    if (b.len > 0) {
        push_bytes(L, b);
        lua_setfield(L, -2, k);
    }
}

/*
 * Push the event table for ENV. Decoding JSON can fail; then push nothing and
 * return -1 with the cjson message in ERR, or -2 when the decoded body did
 * not fit in the state's memory. Raises when building the table runs out of
 * memory: call it protected.
 * -- ... event
 */
static int push_event(wr_lua *rt, const wr_envelope *env, char *err, size_t errcap)
{
    lua_State *L = rt->L;
    lua_createtable(L, 0, 14);
    set_bytes(L, "id", env->id);
    set_bytes(L, "type", env->type);
    set_bytes(L, "version", env->version);
    set_bytes(L, "original_version",
              env->original_version.len > 0 ? env->original_version : env->version);
    push_bytes(L, env->exchange);
    lua_setfield(L, -2, "exchange");
    push_bytes(L, env->routing_key);
    lua_setfield(L, -2, "routing_key");
    set_bytes(L, "content_type", env->content_type);
    push_bytes(L, env->body);
    lua_setfield(L, -2, "body");
    push_table(L, env->headers, 0);
    lua_setfield(L, -2, "headers");
    if (env->timestamp) {
        lua_pushnumber(L, (double)env->timestamp);
        lua_setfield(L, -2, "timestamp");
    }
    lua_pushboolean(L, env->redelivered);
    lua_setfield(L, -2, "redelivered");
    lua_pushinteger(L, rt->cx.call ? rt->cx.call->attempt : env->attempt);
    lua_setfield(L, -2, "attempt");
    if (rt->cx.call != NULL && rt->cx.call->cloudevent != NULL) {
        /* -- ... event decode attributes: event.cloudevent */
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_decode);
        lua_pushstring(L, rt->cx.call->cloudevent);
        int rc = lua_pcall(L, 1, 1, 0);
        if (rc != 0) {
            lua_pop(L, 2);
            return -2; /* warren's own JSON: only memory can fail it */
        }
        lua_setfield(L, -2, "cloudevent");
    }
    if (env->is_json) {
        /* -- ... event decode body */
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_decode);
        push_bytes(L, env->body);
        rt->stage = "before the handler ran (decoding the JSON body)";
        int rc = lua_pcall(L, 1, 1, 0);
        if (rc != 0 && (rc == LUA_ERRMEM || rt->oom)) {
            lua_pop(L, 2);
            return -2; /* valid or not, it did not fit: not the producer's fault */
        }
        if (rc != 0) {
            snprintf(err, errcap, WR_E_INVALID_JSON,
                     lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
            lua_pop(L, 2);
            return -1;
        }
        lua_setfield(L, -2, "data");
    }
    return 0;
}

/* T[K] = the value at the top of the stack, raw: no metamethod of a table the
 * handler may have given a metatable runs. -- ... t v  =>  -- ... t */
static void raw_setfield(lua_State *L, int t, const char *k)
{
    lua_pushstring(L, k);
    lua_insert(L, -2);
    lua_rawset(L, t < 0 ? t - 1 : t);
}

/* Refresh the per-message fields of the shared ctx table (raw writes: init
 * may have given ctx a metatable). -- ... ctx */
static void update_ctx(wr_lua *rt, const wr_envelope *env, const wr_lua_call *call)
{
    lua_State *L = rt->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_ctx);
    lua_pushinteger(L, call->attempt);
    raw_setfield(L, -2, "attempt");
    if (call->idempotency_key) {
        lua_pushstring(L, call->idempotency_key);
    } else {
        push_bytes(L, env->id);
    }
    raw_setfield(L, -2, "idempotency_key");
    if (call->trace_id) {
        lua_pushstring(L, call->trace_id);
    } else {
        lua_pushnil(L);
    }
    raw_setfield(L, -2, "trace_id");
    push_bytes(L, env->id);
    raw_setfield(L, -2, "message_id");
}

/* ---- the sandbox ---------------------------------------------------------------- */

/* The sandbox (sidecar/lua/sandbox.lua, embedded as wr_lua_sandbox; the busted
 * kit loads the same file) builds the handler's globals: it receives the full
 * globals, the handlers directory, the cjson modules, a loader for source
 * files and the largest source, and returns the environment. Runs once per
 * state, before any handler code. */

/* Traceback handler for lua_pcall: keep the error, add where it came from. */
static int traceback(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TLIGHTUSERDATA) {
        return 1; /* the ctx.reject / ctx.retry sentinel: no traceback needed */
    }
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (lua_isnil(L, 1)) {
            msg = WR_E_ERROR_NIL;
        } else {
            lua_pushfstring(L, WR_E_ERROR_OBJECT, luaL_typename(L, 1));
            msg = lua_tostring(L, -1);
        }
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Copy the first line of the error at the top of the stack into OUT. Never
 * allocates in the state (it runs after a protected call failed, perhaps out
 * of memory): a number is formatted here, other values are named. */
static void first_line(lua_State *L, char *out, size_t cap)
{
    const char *msg;
    char num[64];
    switch (lua_type(L, -1)) {
    case LUA_TSTRING:
        msg = lua_tostring(L, -1);
        break;
    case LUA_TNUMBER:
        snprintf(num, sizeof(num), "%.14g", lua_tonumber(L, -1));
        msg = num;
        break;
    default:
        msg = "unknown error";
        break;
    }
    size_t n = strcspn(msg, "\n");
    snprintf(out, cap, "%.*s", (int)n, msg);
}

static int set_api(wr_lua *rt)
{
    lua_State *L = rt->L;
    /* -- ... ctx */
    lua_createtable(L, 0, 16);
    wr_lua_ctx_inject(L, &rt->cx);
    wr_lua_http_inject(L);
    wr_lua_breaker_inject(L, rt->opts.breakers, rt->opts.breaker_fallback);
    wr_lua_store_inject(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "warren.cjson_safe");
    lua_setfield(L, -2, "json");
    lua_pushstring(L, rt->subscription);
    lua_setfield(L, -2, "subscription");
    lua_pushstring(L, rt->queue);
    lua_setfield(L, -2, "queue");
    lua_pushstring(L, rt->version);
    lua_setfield(L, -2, "handler_version");
    lua_pushinteger(L, rt->opts.max_attempts > 0 ? rt->opts.max_attempts : 1);
    lua_setfield(L, -2, "max_attempts");
    lua_pushinteger(L, rt->opts.worker);
    lua_setfield(L, -2, "worker");
    rt->ref_ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

char *wr_lua_read_source(const char *path, const char *what, size_t *len, char *err, size_t errcap)
{
    /* stat first: a device is not even opened (opening some has effects);
     * O_NONBLOCK: a FIFO put in its place meanwhile opens at once, and fstat on
     * the descriptor sees what was opened, whatever the name points to now */
    struct stat pre;
    if (stat(path, &pre) == 0 && !S_ISREG(pre.st_mode)) {
        snprintf(err, errcap, WR_E_LOAD_NOT_REGULAR, path, what);
        errno = 0;
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errcap, WR_E_LOAD_OPEN, path, what, strerror(e));
        errno = e;
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errcap, WR_E_LOAD_READ, path, what, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errcap, WR_E_LOAD_NOT_REGULAR, path, what);
        goto fail;
    }
    if (st.st_size > (off_t)WR_LUA_MAX_SOURCE) {
        snprintf(err, errcap, WR_E_LOAD_TOO_LARGE, path, what, (long long)WR_LUA_MAX_SOURCE);
        goto fail;
    }
    /* read to the end, not to st_size: the file may change meanwhile; one byte
     * over the limit is enough to refuse it */
    size_t cap = (size_t)st.st_size + 1, n = 0;
    if (cap < 4096) {
        cap = 4096;
    }
    buf = malloc(cap + 1);
    while (buf != NULL) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            snprintf(err, errcap, WR_E_LOAD_READ, path, what, strerror(errno));
            goto fail;
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r;
        if (n > WR_LUA_MAX_SOURCE) {
            snprintf(err, errcap, WR_E_LOAD_TOO_LARGE, path, what, (long long)WR_LUA_MAX_SOURCE);
            goto fail;
        }
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf == NULL) {
        snprintf(err, errcap, "%s: out of memory reading the %s", path, what);
        goto fail;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;

fail:
    free(buf);
    close(fd);
    errno = 0;
    return NULL;
}

/* Load cjson and cjson.safe with the real require, before the sandbox hides it. */
static int open_cjson(wr_lua *rt, char *err, size_t errcap)
{
    lua_State *L = rt->L;
    static const char *mods[] = {"cjson", "cjson.safe"};
    static const char *keys[] = {"warren.cjson", "warren.cjson_safe"};
    for (int i = 0; i < 2; i++) {
        lua_getglobal(L, "require");
        lua_pushstring(L, mods[i]);
        if (lua_pcall(L, 1, 1, 0) != 0) {
            snprintf(err, errcap, "cannot load lua-cjson (%s): %s", mods[i], lua_tostring(L, -1));
            return -1;
        }
        lua_setfield(L, LUA_REGISTRYINDEX, keys[i]);
    }
    /* inside the memory limit, nesting limits no higher than the defaults
     * (lua_json.c); then refs to the hot functions */
    wr_lua_json_guard(L, "warren.cjson");
    wr_lua_json_guard(L, "warren.cjson_safe");
    lua_getfield(L, LUA_REGISTRYINDEX, "warren.cjson");
    lua_getfield(L, -1, "decode");
    rt->ref_decode = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "encode");
    rt->cx.ref_encode = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "null");
    rt->ref_null = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return 0;
}

typedef struct {
    const char *p;
    size_t n;
} src_text;

/* lua_pcall'd by read_module: push the text (may run out of memory). */
static int push_src_text(lua_State *L)
{
    const src_text *t = lua_touserdata(L, 1);
    lua_pushlstring(L, t->p, t->n);
    return 1;
}

/* read_source(path) for the sandbox's require: the source text, or nil, why,
 * and true when the file does not exist (wr_lua_read_source's checks). */
static int read_module(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_pushcfunction(L, push_src_text); /* before the malloc: this may raise */
    char err[1200];
    src_text t;
    char *src = wr_lua_read_source(path, "module", &t.n, err, sizeof(err));
    if (src == NULL) {
        int missing = errno == ENOENT;
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushboolean(L, missing);
        return 3;
    }
    /* the buffer is ours until the copy is made: copy under pcall, free, then
     * raise a failure to copy */
    t.p = src;
    lua_pushlightuserdata(L, &t);
    int rc = lua_pcall(L, 1, 1, 0);
    free(src);
    if (rc != 0) {
        return lua_error(L);
    }
    return 1;
}

/*
 * Build the sandboxed environment, compile SRC (LEN bytes) in it, run the
 * module body, check its shape and run init. Every piece of handler code
 * (the body, init, and the module table's metamethods when handle and init
 * are looked up) runs under the deadline. Call it protected: it raises when
 * the state runs out of memory or the module table's __index raises.
 * Returns 0, or -1 with ERR. -- (empty) on success.
 */
/* Push a new sandbox environment (handler code's globals), built by
 * sandbox.lua; TB is the traceback handler's index. Returns 0, or -1 with ERR
 * (the error left on the stack). -- ... => -- ... env */
static int push_sandbox(wr_lua *rt, int tb, char *err, size_t errcap)
{
    lua_State *L = rt->L;
    /* -- sandboxfn G dir cjson cjson_safe read_module max_source */
    if (luaL_loadbuffer(L, wr_lua_sandbox, strlen(wr_lua_sandbox), "=warren.sandbox") != 0) {
        snprintf(err, errcap, "internal: sandbox: %s", lua_tostring(L, -1));
        return -1;
    }
    lua_pushvalue(L, LUA_GLOBALSINDEX);
    lua_pushstring(L, rt->handler_dir);
    lua_getfield(L, LUA_REGISTRYINDEX, "warren.cjson");
    lua_getfield(L, LUA_REGISTRYINDEX, "warren.cjson_safe");
    lua_pushcfunction(L, read_module);
    lua_pushinteger(L, WR_LUA_MAX_SOURCE);
    if (lua_pcall(L, 6, 1, tb) != 0) {
        snprintf(err, errcap, "internal: sandbox: %s", lua_tostring(L, -1));
        return -1;
    }
    return 0;
}

static int load_handler(wr_lua *rt, const char *src, size_t len, char *err, size_t errcap)
{
    lua_State *L = rt->L;
    lua_pushcfunction(L, traceback);
    int tb = lua_gettop(L);
    if (push_sandbox(rt, tb, err, errcap) != 0) {
        return -1;
    }
    int envi = lua_gettop(L); /* -- tb env */

    char chunkname[1100];
    snprintf(chunkname, sizeof(chunkname), "@%s", rt->handler_path);
    if (luaL_loadbuffer(L, src, len, chunkname) != 0) {
        first_line(L, err, errcap);
        return -1;
    }
    lua_pushvalue(L, envi);
    lua_setfenv(L, -2);
    /* run the module body under the deadline too: -- tb env chunk */
    rt->cx.phase = WR_LUA_PHASE_INIT;
    start_deadline(rt);
    if (lua_pcall(L, 0, 1, tb) != 0) {
        rt->cx.phase = WR_LUA_PHASE_NONE;
        first_line(L, err, errcap);
        return -1;
    }
    /* -- tb env module */
    if (!lua_istable(L, -1)) {
        rt->cx.phase = WR_LUA_PHASE_NONE;
        snprintf(err, errcap, WR_E_LOAD_NOT_TABLE, rt->handler_path, luaL_typename(L, -1));
        return -1;
    }
    /* still under the deadline: the table's __index is handler code */
    lua_getfield(L, -1, "handle");
    rt->cx.phase = WR_LUA_PHASE_NONE;
    if (!lua_isfunction(L, -1)) {
        snprintf(err, errcap, WR_E_LOAD_NO_HANDLE, rt->handler_path, luaL_typename(L, -1));
        return -1;
    }
    rt->ref_handle = luaL_ref(L, LUA_REGISTRYINDEX);
    set_api(rt);
    rt->cx.phase = WR_LUA_PHASE_INIT;
    start_deadline(rt);
    lua_getfield(L, -1, "init");
    if (lua_isfunction(L, -1)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_ctx);
        start_deadline(rt);
        if (lua_pcall(L, 1, 0, tb) != 0) {
            rt->cx.phase = WR_LUA_PHASE_NONE;
            char msg[900];
            first_line(L, msg, sizeof(msg));
            snprintf(err, errcap, WR_E_INIT_FAILED, msg);
            return -1;
        }
        rt->cx.phase = WR_LUA_PHASE_NONE;
    } else if (!lua_isnil(L, -1)) {
        rt->cx.phase = WR_LUA_PHASE_NONE;
        snprintf(err, errcap, WR_E_LOAD_INIT_TYPE, rt->handler_path, luaL_typename(L, -1));
        return -1;
    } else {
        rt->cx.phase = WR_LUA_PHASE_NONE;
        lua_pop(L, 1);
    }
    lua_settop(L, 0);
    return 0;
}

/* What create_state works on (lua_cpcall's light userdata). */
typedef struct {
    wr_lua *rt;
    const char *src; /* the handler's source */
    size_t len;
    char *err;
    size_t errcap;
    int failed; /* a step failed and said why in ERR */
} create_args;

/* The part of wr_lua_create that allocates in the state or runs Lua code,
 * run by lua_cpcall: running out of memory here fails the load, not the
 * process. */
static int create_state(lua_State *L)
{
    create_args *a = lua_touserdata(L, 1);
    wr_lua *rt = a->rt;
    set_cstack_floor(rt);
    lua_settop(L, 0);
    luaL_openlibs(L);
    /* The JIT stays off: the timeout hook must fire in every loop (see lua_rt.h).
     * After openlibs, which turns the JIT on when it opens the jit library. */
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    /* pattern functions and table.sort the deadline can stop, before
     * anything (cjson, the sandbox) takes references to the originals */
    wr_lua_pattern_inject(L);
    lua_pushlightuserdata(L, rt);
    lua_setfield(L, LUA_REGISTRYINDEX, "warren.rt");
    if (open_cjson(rt, a->err, a->errcap) != 0 ||
        load_handler(rt, a->src, a->len, a->err, a->errcap) != 0) {
        a->failed = 1;
        return 0;
    }
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}

int wr_lua_panic(lua_State *L)
{
    /* nothing here may allocate in the state: a panic is often out of memory */
    const char *msg =
        lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(the error value is not a string)";
    wr_logline line;
    wr_log_begin(&line, WR_LOG_ERROR,
                 "Lua panic: an error outside any protected call; the process exits");
    void *ud = NULL;
    if (lua_getallocf(L, &ud) == limited_alloc && ud != NULL) {
        wr_lua *rt = ud;
        wr_log_str(&line, "subscription", rt->subscription);
        wr_log_str(&line, "handler", rt->handler_path);
        wr_log_int(&line, "worker", rt->opts.worker);
        wr_log_int(&line, "memory_bytes", (long long)rt->mem_used);
    }
    wr_log_str(&line, "error", msg);
    wr_log_end(&line);
    return 0; /* LuaJIT then exits with status 1 */
}

wr_lua *wr_lua_create(const wr_lua_opts *opts, char *err, size_t errcap)
{
    wr_lua *rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    rt->opts = *opts;
    rt->handler_path = strdup(opts->handler_path);
    rt->subscription = strdup(opts->subscription ? opts->subscription : "");
    rt->queue = strdup(opts->queue ? opts->queue : "");
    rt->handler_dir = strdup(opts->handler_path);
    if (!rt->handler_path || !rt->subscription || !rt->queue || !rt->handler_dir) {
        snprintf(err, errcap, "out of memory");
        goto fail;
    }
    char *slash = strrchr(rt->handler_dir, '/');
    if (slash != NULL) {
        *slash = '\0';
        rt->handler_name = rt->handler_path + (slash + 1 - rt->handler_dir);
    } else {
        strcpy(rt->handler_dir, ".");
        rt->handler_name = rt->handler_path;
    }
    if (rt->opts.timeout_ms <= 0) {
        rt->opts.timeout_ms = 5000;
    }
    rt->mem_limit = opts->memory_limit ? opts->memory_limit : DEFAULT_MEMORY;
    rt->opts.handler_path = rt->handler_path;
    rt->opts.subscription = rt->subscription;
    rt->opts.queue = rt->queue;
    rt->cx.max_publish_bytes = opts->max_publish_bytes;
    rt->cx.subscription = rt->subscription;
    rt->cx.version = rt->version;
    /* opts.source and opts.version are read here only */

    size_t len;
    char *src;
    if (opts->source != NULL) {
        len = opts->source_len;
        src = malloc(len + 1);
        if (src == NULL) {
            snprintf(err, errcap, "out of memory");
            goto fail;
        }
        memcpy(src, opts->source, len);
    } else if ((src = wr_lua_read_source(rt->handler_path, "handler", &len, err, errcap)) == NULL) {
        goto fail;
    }
    if (opts->version != NULL) {
        snprintf(rt->version, sizeof(rt->version), "%s", opts->version);
    } else {
        snprintf(rt->version, sizeof(rt->version), "%012llx",
                 (unsigned long long)(wr_fnv1a(WR_FNV1A_INIT, src, len) & 0xFFFFFFFFFFFFULL));
    }
    rt->opts.source = NULL;
    rt->opts.version = NULL;
    if (len > 0 && src[0] == '\033') {
        free(src);
        snprintf(err, errcap, WR_E_LOAD_BYTECODE, rt->handler_path);
        goto fail;
    }

    rt->L = lua_newstate(limited_alloc, rt);
    if (rt->L == NULL) {
        free(src);
        snprintf(err, errcap, "cannot create a Lua state");
        goto fail;
    }
    lua_atpanic(rt->L, wr_lua_panic);
    lua_sethook(rt->L, deadline_hook, HOOK_MASK, HOOK_EVERY);
    create_args a = {.rt = rt, .src = src, .len = len, .err = err, .errcap = errcap};
    err[0] = '\0';
    int rc = lua_cpcall(rt->L, create_state, &a);
    rt->cx.phase = WR_LUA_PHASE_NONE;
    free(src);
    if (rc != 0) {
        if (rc == LUA_ERRMEM || rt->oom) {
            snprintf(err, errcap,
                     "%s: not enough memory to load the handler (the state's limit "
                     "is %zu bytes)",
                     rt->handler_path, rt->mem_limit);
        } else {
            first_line(rt->L, err, errcap);
        }
        goto fail;
    }
    if (a.failed) {
        goto fail;
    }
    lua_settop(rt->L, 0);
    return rt;

fail:
    wr_lua_destroy(rt);
    return NULL;
}

void wr_lua_destroy(wr_lua *rt)
{
    if (rt == NULL) {
        return;
    }
    if (rt->L != NULL) {
        lua_close(rt->L);
    }
    wr_lua_ctx_destroy(&rt->cx);
    free(rt->handler_path);
    free(rt->subscription);
    free(rt->queue);
    free(rt->handler_dir);
    free(rt);
}

const char *wr_lua_version(const wr_lua *rt)
{
    return rt->version;
}

size_t wr_lua_memory(const wr_lua *rt)
{
    return rt->mem_used;
}

/* ctx.max_attempts = opts.max_attempts, raw, run by lua_cpcall: it may
 * allocate (the handler may have removed the field). */
static int set_max_attempts(lua_State *L)
{
    wr_lua *rt = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_ctx);
    lua_pushinteger(L, rt->opts.max_attempts > 0 ? rt->opts.max_attempts : 1);
    raw_setfield(L, -2, "max_attempts");
    return 0;
}

void wr_lua_set_limits(wr_lua *rt, int64_t timeout_ms, int max_attempts)
{
    rt->opts.timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    rt->opts.max_attempts = max_attempts;
    if (lua_cpcall(rt->L, set_max_attempts, rt) != 0) {
        wr_logf(WR_LOG_WARN, "ctx.max_attempts of %s left as it was: not enough memory",
                rt->subscription);
    }
    lua_settop(rt->L, 0);
}

void wr_lua_interrupt(wr_lua *rt)
{
    atomic_store(&rt->interrupted, 1);
}

static void set_result(wr_lua_result *res, wr_outcome o, const char *reason, const char *error)
{
    res->outcome = o;
    snprintf(res->reason, sizeof(res->reason), "%s", reason);
    snprintf(res->error, sizeof(res->error), "%s", error ? error : "");
}

/* What handle_call works on (lua_cpcall's light userdata). */
typedef struct {
    wr_lua *rt;
    const wr_envelope *env;
    const wr_lua_call *call;
    wr_lua_result *res;
} handle_args;

/*
 * One message, run by lua_cpcall: build the event and ctx, call handle under
 * a pcall with the traceback handler and the deadline, read the outcome.
 * What may raise outside the handler's pcall (out of memory building the
 * event) unwinds to wr_lua_handle, which reports it; rt->stage says where.
 */
static int handle_call(lua_State *L)
{
    handle_args *a = lua_touserdata(L, 1);
    wr_lua *rt = a->rt;
    wr_lua_result *res = a->res;
    set_cstack_floor(rt);
    lua_settop(L, 0);
    rt->stage = "before the handler ran (building the event)";
    lua_pushcfunction(L, traceback); /* -- tb */
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_handle);
    char err[512];
    int ev = push_event(rt, a->env, err, sizeof(err)); /* -- tb handle event */
    if (ev == -1) {
        set_result(res, WR_OUT_INVALID, WR_REASON_INVALID_JSON, err);
        return 0;
    }
    if (ev == -2) {
        return luaL_error(L, "not enough memory");
    }
    rt->stage = "before the handler ran (setting ctx)";
    update_ctx(rt, a->env, a->call); /* -- tb handle event ctx */
    rt->stage = NULL;

    rt->cx.phase = WR_LUA_PHASE_HANDLE;
    start_deadline(rt);
    int rc = lua_pcall(L, 2, 1, 1);
    rt->cx.phase = WR_LUA_PHASE_NONE;
    lua_sethook(L, deadline_hook, HOOK_MASK, HOOK_EVERY); /* undo a timeout's every-1 */
    rt->stage = "after the handler ran (reading its outcome)";

    if (rt->cx.forced != WR_OUT_OK) {
        /* ctx.reject / ctx.retry win even if the handler caught the unwind with pcall */
        wr_lua_ctx_free_pubs(&rt->cx);
        set_result(res, rt->cx.forced,
                   rt->cx.forced == WR_OUT_REJECT ? "rejected" : "retry-requested",
                   rt->cx.forced_reason);
        res->retry_delay_ms = rt->cx.forced_delay_ms;
    } else if (rc == 0) {
        set_result(res, WR_OUT_OK, "", NULL);
        res->pubs = rt->cx.pubs;
        res->pub_count = rt->cx.pub_count;
    } else {
        wr_lua_ctx_free_pubs(&rt->cx);
        char msg[1024];
        first_line(L, msg, sizeof(msg));
        if (rc == LUA_ERRMEM || rt->oom) {
            /* first: whatever else happened, the state may be full */
            set_result(res, WR_OUT_ERROR, "out-of-memory",
                       "not enough memory: the handler exceeded the state's memory limit");
            res->rebuild = 1;
        } else if (rt->timed_out) {
            set_result(res, WR_OUT_TIMEOUT, "timeout", msg);
        } else if (rt->cstack_overflow && strstr(msg, CSTACK_ERROR) != NULL) {
            set_result(res, WR_OUT_ERROR, "stack-overflow", msg);
        } else {
            set_result(res, WR_OUT_ERROR, "handler-error", msg);
            res->dependency = rt->dep_failed;
        }
        if (wr_log_enabled(WR_LOG_DEBUG) && lua_type(L, -1) == LUA_TSTRING) {
            wr_logline l;
            wr_log_begin(&l, WR_LOG_DEBUG, "handler error traceback");
            wr_log_str(&l, "subscription", rt->subscription);
            wr_log_strn(&l, "message_id", a->env->id.bytes, a->env->id.len);
            wr_log_str(&l, "traceback", lua_tostring(L, -1));
            wr_log_end(&l);
        }
    }
    return 0;
}

wr_outcome wr_lua_handle(wr_lua *rt, const wr_envelope *env, const wr_lua_call *call,
                         wr_lua_result *res)
{
    lua_State *L = rt->L;
    memset(res, 0, sizeof(*res));
    res->retry_delay_ms = -1;
    wr_lua_ctx_begin(&rt->cx);
    rt->timed_out = 0;
    rt->cstack_overflow = 0;
    rt->oom = 0;
    rt->dep_failed = 0;
    rt->mem_slack = 0;
    rt->cx.env = env;
    rt->cx.call = call;
    rt->stage = "before the handler ran (starting the call)";

    lua_settop(L, 0);
    handle_args a = {.rt = rt, .env = env, .call = call, .res = res};
    int rc = lua_cpcall(L, handle_call, &a);
    if (rc != 0) {
        /* raised outside the handler's own pcall: out of memory building the
         * event or reading the outcome. The state may hold what filled it: the
         * worker builds a new one. */
        rt->cx.phase = WR_LUA_PHASE_NONE;
        lua_sethook(L, deadline_hook, HOOK_MASK, HOOK_EVERY);
        wr_lua_ctx_free_pubs(&rt->cx);
        res->pubs = NULL;
        res->pub_count = 0;
        char msg[1024];
        if (rc == LUA_ERRMEM || rt->oom) {
            snprintf(msg, sizeof(msg), "not enough memory: the state's memory limit was reached %s",
                     rt->stage ? rt->stage : "");
            set_result(res, WR_OUT_ERROR, "out-of-memory", msg);
        } else {
            first_line(L, msg, sizeof(msg));
            set_result(res, WR_OUT_ERROR, "handler-error", msg);
        }
        res->rebuild = 1;
    }
    rt->cx.env = NULL;
    rt->cx.call = NULL;
    lua_settop(L, 0);
    if (res->rebuild) {
        /* LuaJIT does not collect when an allocation fails: what the failed
         * call left would fill the state until the next cycle. The worker
         * builds a new state, but keeps this one when that fails. Not under
         * lua_cpcall, which needs memory itself; the slack covers the one
         * allocation a collection makes (a smaller string table, after the
         * strings are freed). */
        rt->mem_slack = 1;
        lua_gc(L, LUA_GCCOLLECT, 0);
        rt->mem_slack = 0;
    }
    return res->outcome;
}

/* ---- upcasters (contracts.h) ---------------------------------------------------- */

typedef struct {
    wr_lua *rt;
    const wr_lua_upcaster *steps;
    int n;
    const char *type;
    const char *body;
    size_t len;
    char *out;
    size_t out_len;
    char *err;
    size_t errcap;
    int failed; /* ERR says why */
} upcast_args;

/* Push the function of upcaster U: compiled in a sandbox of its own the first
 * time, then kept in the registry table warren.upcasters under its path and
 * the hash of its source (a reloaded upcaster of the same path is compiled
 * anew; the version it replaces is dropped). Returns 0, or -1 with ERR.
 * -- ... => -- ... fn */
static int push_upcaster(wr_lua *rt, int tb, const wr_lua_upcaster *u, char *err, size_t errcap)
{
    lua_State *L = rt->L;
    lua_getfield(L, LUA_REGISTRYINDEX, "warren.upcasters");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "warren.upcasters");
    }
    char key[1100];
    snprintf(key, sizeof(key), "%016llx %s",
             (unsigned long long)wr_fnv1a(WR_FNV1A_INIT, u->src, u->len), u->path);
    lua_getfield(L, -1, key); /* -- cache fn? */
    if (lua_isfunction(L, -1)) {
        lua_remove(L, -2);
        return 0;
    }
    lua_pop(L, 1);
    /* other versions of this path: not run again, let them go */
    for (lua_pushnil(L); lua_next(L, -2) != 0;) {
        lua_pop(L, 1); /* -- cache k */
        const char *k = lua_tostring(L, -1);
        if (k != NULL && strlen(k) > 17 && strcmp(k + 17, u->path) == 0) {
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_settable(L, -4); /* clearing a field during lua_next is allowed */
        }
    }
    if (push_sandbox(rt, tb, err, errcap) != 0) {
        return -1;
    }
    char chunkname[1100];
    snprintf(chunkname, sizeof(chunkname), "@%s", u->path);
    if (luaL_loadbuffer(L, u->src, u->len, chunkname) != 0) {
        first_line(L, err, errcap);
        return -1;
    }
    lua_insert(L, -2);
    lua_setfenv(L, -2); /* -- cache chunk */
    if (lua_pcall(L, 0, 1, tb) != 0) {
        first_line(L, err, errcap);
        return -1;
    }
    if (!lua_isfunction(L, -1)) {
        snprintf(err, errcap, "%s: an upcaster must return a function(data, info), it returned %s",
                 u->path, luaL_typename(L, -1));
        return -1;
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, key);
    lua_remove(L, -2);
    return 0;
}

/* lua_cpcall'd by wr_lua_upcast. -- ud */
static int upcast_call(lua_State *L)
{
    upcast_args *a = lua_touserdata(L, 1);
    wr_lua *rt = a->rt;
    lua_settop(L, 0);
    lua_pushcfunction(L, traceback);
    int tb = 1;
    /* -- tb data */
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_decode);
    lua_pushlstring(L, a->body, a->len);
    if (lua_pcall(L, 1, 1, tb) != 0) {
        char msg[900];
        first_line(L, msg, sizeof(msg));
        snprintf(a->err, a->errcap, WR_E_INVALID_JSON, msg);
        a->failed = 1;
        return 0;
    }
    rt->cx.phase = WR_LUA_PHASE_INIT; /* code of the service's under the deadline, without ctx */
    start_deadline(rt);
    for (int i = 0; i < a->n; i++) {
        const wr_lua_upcaster *u = &a->steps[i];
        if (push_upcaster(rt, tb, u, a->err, a->errcap) != 0) {
            rt->cx.phase = WR_LUA_PHASE_NONE;
            a->failed = 1;
            return 0;
        }
        /* -- tb data fn => -- tb fn data info */
        lua_insert(L, -2);
        lua_createtable(L, 0, 3);
        lua_pushnumber(L, (double)u->from);
        lua_setfield(L, -2, "from");
        lua_pushnumber(L, (double)(u->from + 1));
        lua_setfield(L, -2, "to");
        lua_pushstring(L, a->type);
        lua_setfield(L, -2, "type");
        if (lua_pcall(L, 2, 1, tb) != 0) {
            rt->cx.phase = WR_LUA_PHASE_NONE;
            char msg[900];
            first_line(L, msg, sizeof(msg));
            snprintf(a->err, a->errcap, "v%lld -> v%lld: %s", (long long)u->from,
                     (long long)u->from + 1, msg);
            a->failed = 1;
            return 0;
        }
        if (!lua_istable(L, -1)) {
            rt->cx.phase = WR_LUA_PHASE_NONE;
            snprintf(a->err, a->errcap, "v%lld -> v%lld: %s returned %s, not the event's data",
                     (long long)u->from, (long long)u->from + 1, u->path, luaL_typename(L, -1));
            a->failed = 1;
            return 0;
        }
    }
    rt->cx.phase = WR_LUA_PHASE_NONE;
    /* -- tb data => -- tb json */
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->cx.ref_encode);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 1, tb) != 0) {
        char msg[900];
        first_line(L, msg, sizeof(msg));
        snprintf(a->err, a->errcap, "the upcast event cannot be encoded as JSON: %s", msg);
        a->failed = 1;
        return 0;
    }
    size_t n = 0;
    const char *json = lua_tolstring(L, -1, &n);
    a->out = malloc(n + 1);
    if (a->out == NULL) {
        snprintf(a->err, a->errcap, "out of memory");
        a->failed = 1;
        return 0;
    }
    memcpy(a->out, json, n);
    a->out[n] = 0;
    a->out_len = n;
    return 0;
}

int wr_lua_upcast(wr_lua *rt, const wr_lua_upcaster *steps, int n, const char *type,
                  const char *body, size_t len, char **out, size_t *out_len, char *err,
                  size_t errcap)
{
    lua_State *L = rt->L;
    upcast_args a = {.rt = rt,
                     .steps = steps,
                     .n = n,
                     .type = type,
                     .body = body,
                     .len = len,
                     .err = err,
                     .errcap = errcap};
    rt->timed_out = 0;
    rt->oom = 0;
    rt->cstack_overflow = 0;
    /* this thread's stack: the state may have been made (init) on another one */
    set_cstack_floor(rt);
    err[0] = 0;
    lua_settop(L, 0);
    int rc = lua_cpcall(L, upcast_call, &a);
    rt->cx.phase = WR_LUA_PHASE_NONE;
    if (rc != 0) {
        first_line(L, err, errcap);
        a.failed = 1;
    }
    lua_sethook(L, deadline_hook, HOOK_MASK, HOOK_EVERY);
    lua_settop(L, 0);
    if (a.failed) {
        free(a.out);
        return -1;
    }
    *out = a.out;
    *out_len = a.out_len;
    return 0;
}

typedef struct {
    wr_lua *rt;
    const wr_lua_upcaster *u;
    char *err;
    size_t errcap;
    int failed;
} compile_up_args;

/* lua_cpcall'd by wr_lua_upcaster_compile. -- ud */
static int compile_up_call(lua_State *L)
{
    compile_up_args *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_pushcfunction(L, traceback);
    a->rt->cx.phase = WR_LUA_PHASE_INIT;
    start_deadline(a->rt);
    a->failed = push_upcaster(a->rt, 1, a->u, a->err, a->errcap) != 0;
    a->rt->cx.phase = WR_LUA_PHASE_NONE;
    return 0;
}

int wr_lua_upcaster_compile(wr_lua *rt, const wr_lua_upcaster *u, char *err, size_t errcap)
{
    compile_up_args a = {.rt = rt, .u = u, .err = err, .errcap = errcap};
    err[0] = 0;
    int rc = lua_cpcall(rt->L, compile_up_call, &a);
    rt->cx.phase = WR_LUA_PHASE_NONE;
    if (rc != 0) {
        first_line(rt->L, err, errcap);
        a.failed = 1;
    }
    lua_sethook(rt->L, deadline_hook, HOOK_MASK, HOOK_EVERY);
    lua_settop(rt->L, 0);
    return a.failed ? -1 : 0;
}
