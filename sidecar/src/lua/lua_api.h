/*
 * lua_api: what the modules of the handler API (one per area, like
 * lua_http.c) need from the runtime in lua_rt.c. Internal to the Lua side:
 * not for the worker. Every function finds the runtime through the Lua
 * state's registry, so API closures need no upvalues of ours.
 */
#ifndef WR_LUA_API_H
#define WR_LUA_API_H

#include <lua.h>
#include <stddef.h>

/* The panic function of every state (lua_atpanic): logs the error, with the
 * subscription and handler when L is a runtime's state, before LuaJIT ends
 * the process. Every call that can raise is protected, so this is the last
 * word of a bug, never of a handler. */
int wr_lua_panic(lua_State *L);

#include "lua_http.h"

/* Raise "ctx.<FN> is not available ..." at the caller's level unless a message
 * is being handled. */
void wr_lua_check_handling(lua_State *L, const char *fn);

/* Whether a message is being handled (what wr_lua_check_handling checks): for
 * callers that build FN only when they must raise. */
int wr_lua_handling(lua_State *L);

/*
 * Push "source:line: " of the handler code that made the current ctx call:
 * the nearest frame up the stack that runs handler code (a Lua function with
 * a current line, not one of warren's own chunks, whose names start with
 * '='), past C frames (pcall, a breaker's call) and past a frame a tail call
 * replaced (`return ctx.http.request{...}` inside a breaker's function names
 * the line that called the breaker). "" when there is none. So an error keeps
 * where it came from on its way to the log and the DLQ headers; the kit
 * (warren.testing) follows the same rule.
 */
void wr_lua_push_where(lua_State *L);

/* Raise an error at the handler's line (wr_lua_push_where): like error(msg,
 * 2) when the handler called the function directly. */
int wr_lua_caller_error(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Mark the current handler call as failed by a dependency (ctx.http transport
 * error or 5xx, a named breaker): its error counts for the subscription's
 * breaker (wr_lua_result.dependency). */
void wr_lua_note_dependency(lua_State *L);

/* Milliseconds left before the current handler call's deadline (may be <= 0). */
double wr_lua_time_left_ms(lua_State *L);

/* The current message's trace id (32 hex digits), or NULL. */
const char *wr_lua_trace_id(lua_State *L);
/* The message's W3C tracestate, or NULL (passed on unchanged with the trace). */
const char *wr_lua_tracestate(lua_State *L);

/* Push cjson.encode / cjson.safe.decode. */
void wr_lua_push_encode(lua_State *L);
void wr_lua_push_safe_decode(lua_State *L);

/* Let the worker service its connections (heartbeats) if it is due: for API
 * functions that block in C, where the count hook cannot run. */
void wr_lua_service(lua_State *L);

/* The current call's store (lua_rt.h), or NULL when ctx.store is not available. */
const struct wr_lua_store_s *wr_lua_store_of(lua_State *L);

/* Raise the timeout error (at the caller's position) when the current
 * handler call is past its deadline or interrupted: for C functions that
 * run long, where the hook cannot fire. */
void wr_lua_check_deadline(lua_State *L);

/* Memory, for lua_json.c: bytes the state may still allocate under its limit
 * (0 when at or over it); the limit; mark the current call as having run out
 * of memory (its outcome is out-of-memory, the state is rebuilt); let the
 * state go a quarter over its limit while ON (a guarded cjson call). */
size_t wr_lua_mem_free(lua_State *L);
size_t wr_lua_mem_limit(lua_State *L);
void wr_lua_note_oom(lua_State *L);
void wr_lua_mem_slack(lua_State *L, int on);

/* Replace string.find, match, gmatch and gsub and table.sort in the state's
 * libraries with versions the deadline can stop (lua_pattern.c). */
void wr_lua_pattern_inject(lua_State *L);

/* Guard the cjson module table stored in the registry under REGISTRY_KEY
 * (lua_json.c): bounded encode and decode, no kept buffer, nesting limits
 * capped, no new instances. */
void wr_lua_json_guard(lua_State *L, const char *registry_key);

/* An upper bound of the Lua memory cjson.decode takes for the N bytes of
 * TEXT (whatever they hold), and in *MAX_DEPTH (may be NULL) the deepest
 * nesting of arrays and objects, at most 1001. */
size_t wr_json_decode_bound(const char *text, size_t n, int *max_depth);

/* Add ctx.store (lua_store.c) to the table at the top of the stack. */
void wr_lua_store_inject(lua_State *L);

/* The state's HTTP transport (wr_lua_opts.http_send) and its UD; NULL: libcurl. */
wr_http_send_fn wr_lua_http_transport(lua_State *L, void **ud);

/* Add ctx.http (lua_http.c) to the table at the top of the stack. */
void wr_lua_http_inject(lua_State *L);

/* Add ctx.breaker (lua_breaker.c), over the shared set BREAKERS (a struct
 * wr_breakers *, may be NULL) with FALLBACK (a wr_breaker_policy *) for names
 * not in the config. */
void wr_lua_breaker_inject(lua_State *L, void *breakers, const void *fallback);

#endif
