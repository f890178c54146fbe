/*
 * lua_ctx: ctx's own small functions, next to the API areas of lua_http.c,
 * lua_store.c and lua_breaker.c:
 *
 *   ctx.publish(exchange, routing_key, body [, opts])  buffer an event
 *   ctx.reject(reason)                                 to the DLQ now (unwinds)
 *   ctx.retry(reason [, {delay = ms | "5s"}])          retry later (unwinds)
 *   ctx.now()                                          epoch seconds, ms precision
 *   ctx.log.debug|info|warn|error(msg [, fields])      a line of the JSON log
 *
 * Their error texts and limits are those of sidecar/lua/contract.lua (the
 * WR_E_* and WR_LIMIT_* macros of the generated contract.h), which the busted
 * kit reads too. Internal to the Lua side (lua_rt.c owns the state and calls
 * these); not for the worker.
 *
 * What the functions read and write lives in a wr_lua_ctxcall that the
 * runtime embeds and keeps current: the phase, the message, the buffered
 * publishes, and the outcome a ctx.reject or ctx.retry forced. Each function
 * finds it through its first upvalue (a light userdata), so a call costs no
 * registry lookup.
 */
#ifndef WR_LUA_CTX_H
#define WR_LUA_CTX_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "lua_rt.h"
#include "outcome.h"

/* What the runtime is doing: ctx functions that only make sense while a
 * message is handled say so in init and outside any call. */
enum wr_lua_phase {
    WR_LUA_PHASE_NONE,   /* no handler code runs */
    WR_LUA_PHASE_INIT,   /* the module body, init, an upcaster */
    WR_LUA_PHASE_HANDLE, /* handle(event, ctx) */
};

typedef struct wr_lua_ctxcall {
    enum wr_lua_phase phase;
    /* set once when the state is built; the strings belong to the runtime */
    size_t max_publish_bytes; /* what ctx.publish may buffer per message (0: the default) */
    const char *subscription; /* for ctx.log */
    const char *version;      /* handler version, for ctx.log */
    int ref_encode;           /* registry ref of cjson.encode */

    /* the current call (NULL outside one) */
    const wr_envelope *env;
    const wr_lua_call *call;

    /* what the call produced */
    wr_outcome forced; /* set by ctx.reject / ctx.retry (WR_OUT_OK: neither) */
    char forced_reason[1024];
    int64_t forced_delay_ms; /* ctx.retry's delay, -1: the subscription's schedule */
    wr_lua_pub *pubs;        /* buffered publishes, in order (owned here) */
    int pub_count, pub_cap;
    size_t pub_bytes; /* what they hold, against max_publish_bytes */
} wr_lua_ctxcall;

/* Add publish, reject, retry, now and the log table to the ctx table at the
 * top of the stack, bound to CX (which must outlive the state). May raise
 * (out of memory): call it protected. -- ... ctx => -- ... ctx */
void wr_lua_ctx_inject(lua_State *L, wr_lua_ctxcall *cx);

/* Raise "ctx.<FN> is not available ..." at the caller's line unless a message
 * is being handled (or, with ALLOW_INIT, init runs). */
void wr_lua_ctx_check_phase(lua_State *L, const wr_lua_ctxcall *cx, const char *fn, int allow_init);

/* Start a call: no publishes, no forced outcome. */
void wr_lua_ctx_begin(wr_lua_ctxcall *cx);

/* Free the buffered publishes (keeps the array for the next call). */
void wr_lua_ctx_free_pubs(wr_lua_ctxcall *cx);

/* Free everything CX owns (the runtime's destroy). */
void wr_lua_ctx_destroy(wr_lua_ctxcall *cx);

#endif
