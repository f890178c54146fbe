/*
 * lua_rt: a worker's LuaJIT state with one handler version loaded.
 *
 * A handler is a Lua module (a file returning a table) with
 * `handle(event, ctx)` and optionally `init(ctx)`. wr_lua_create() builds a
 * fresh state, opens the sandbox, compiles the file, runs the module body and
 * `init`, and only then returns: a state that exists is a state that works.
 * Hot reload builds a new one and swaps it in between messages; a failure
 * leaves the old one running.
 *
 * wr_lua_handle() runs one message: it decodes the JSON body (lua-cjson),
 * builds the `event` table and the per-message `ctx`, calls `handle` under
 * lua_pcall with a traceback handler, and reports the outcome in a
 * wr_lua_result. Whatever the handler does (errors with any value, loops
 * forever, allocates without bound, calls ctx.reject inside a pcall) costs
 * that one message, never the process.
 *
 * The sandbox: the handler's chunk runs with its own global table holding
 * only safe functions (no io, os.execute/exit/getenv/remove, ffi, debug,
 * package.loadlib, dofile, loadfile, string.dump; `load` and `loadstring`
 * accept source text only and run in the sandbox). Globals are locked:
 * creating or reading an undeclared global is an error, so a typo fails
 * loudly instead of leaking state between messages. Module-level locals
 * persist for the life of the state (one per worker per handler version).
 * `require` loads Lua modules from the handler's directory, plus "cjson" and
 * "cjson.safe".
 *
 * Timeouts: the state runs with LuaJIT's JIT compiler off, so an instruction
 * count hook fires everywhere, including in `while true do end`, and stops a
 * handler that runs past its deadline (docs/architecture.md, "LuaJIT": with the JIT on, hooks
 * never fire in compiled loops). The hook also runs at every function call,
 * where it reads the coarse clock, so a loop of slow C calls stops in time.
 * The C functions that could run long without calling anything are replaced
 * by versions that check the deadline as they go (lua_pattern.c: string.find,
 * match, gmatch, gsub, table.sort; lua_json.c: cjson's encode bound); load()
 * takes at most WR_LUA_MAX_SOURCE bytes of text. What remains is bounded by
 * the memory limit: a C function that copies or scans at most the state's
 * memory (string.rep, table.concat, cjson.decode of the largest string the
 * state can hold, one garbage collection), measured at well under a second.
 *
 * Memory: the state's allocator refuses to grow past a limit; the handler
 * then fails with "not enough memory" and the worker rebuilds the state
 * (wr_lua_result.rebuild). Everything that allocates in the state or runs
 * Lua code (building the event and ctx, loading, live limits) runs under a
 * protected call, so running out of memory costs a message, never the
 * process; metamethods the handler set on ctx or on its module table never
 * run outside the deadline (ctx's fields are written raw). lua-cjson's
 * malloc'd buffers are bounded before it runs (lua_json.c). A panic (an
 * error outside any protected call: a bug) is logged before LuaJIT exits.
 *
 * The C stack: recursion through C functions that call back into Lua
 * (string.gsub with a function, table.sort's comparator, coroutines,
 * metamethods) is checked at every call against a floor 2 MiB below the
 * call's entry (and 1 MiB above the thread stack's end): past it the call
 * fails with "C stack overflow" (reason stack-overflow), where it used to
 * end the process with SIGSEGV.
 *
 * One wr_lua belongs to one thread. Nothing in here touches the network:
 * ctx.publish only buffers; the worker publishes after success.
 */
#ifndef WR_LUA_RT_H
#define WR_LUA_RT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "contract.h"
#include "outcome.h"
#include "envelope.h"
#include "lua_http.h"
#include "storebuf.h"

typedef struct wr_lua wr_lua;

typedef struct {
    const char *handler_path; /* absolute path of the handler file */
    const char *source;       /* its content, when the caller read it already (hot
                                 reload reads once for every worker); NULL: read the file */
    size_t source_len;
    const char *version;      /* the version to report; NULL: hash of the source */
    const char *subscription; /* name, for ctx.subscription and logs */
    const char *queue;
    int64_t timeout_ms;           /* handler deadline per message */
    size_t memory_limit;          /* bytes the state may allocate; 0 = 64 MiB */
    int worker;                   /* worker index, for logs */
    int max_attempts;             /* ctx.max_attempts */
    struct wr_breakers *breakers; /* named breakers for ctx.breaker (breakers.h); NULL: none */
    /* Called from inside a long handler every SERVICE_EVERY_MS (from the count
     * hook, between VM instructions): the worker keeps its AMQP connection's
     * heartbeats flowing while a handler runs. NULL: never. */
    void (*service)(void *ud);
    void *service_ud;
    int64_t service_every_ms;
    const wr_breaker_policy *breaker_fallback; /* policy of names not in the config */
    size_t max_publish_bytes; /* what ctx.publish may buffer per message (bodies, names,
                                 headers: copied out of the state); 0 = 16 MiB */
    /* How ctx.http sends (lua_http.h): NULL is libcurl, the sidecar's transport;
     * `warren exec` answers from the event file's fakes instead. */
    wr_http_send_fn http_send;
    void *http_ud;
} wr_lua_opts;

/* How a handler call ended: wr_outcome (outcome.h). */

/* One ctx.publish, copied out of the Lua state. */
typedef struct {
    char *exchange;
    char *routing_key;
    char *body;
    size_t body_len;
    char *content_type; /* NULL: none */
    char *type;         /* NULL: none */
    int mandatory;      /* fail the message if no queue takes it */
    char **header_keys; /* string headers, header_count of them */
    char **header_vals;
    int header_count;
    char *ce_type;     /* opts.cloudevent: emit a CloudEvent of this type
                          (cloudevent.h); NULL: a plain message */
    char *ce_source;   /* its source (required with ce_type) */
    char *ce_subject;  /* its subject, NULL if none */
    int ce_structured; /* opts.cloudevent.mode = "structured": the whole event as the
                          body (application/cloudevents+json), not headers */
} wr_lua_pub;

typedef struct {
    wr_outcome outcome;
    char error[1024];       /* for every outcome but OK: what went wrong, with source:line */
    char reason[64];        /* stable code for DLQ headers (outcome.h): handler-error,
                               timeout, out-of-memory, stack-overflow, ... */
    int64_t retry_delay_ms; /* WR_OUT_RETRY: requested delay, or -1 for the policy's */
    int rebuild;            /* the state hit its memory limit: build a new one */
    wr_lua_pub *pubs;       /* WR_OUT_OK: buffered publishes, in order; owned by the
                               wr_lua, valid until the next wr_lua_handle */
    int pub_count;
    int dependency; /* ERROR: raised through a dependency (ctx.http transport error or 5xx,
                       a named breaker's failure or refusal), not by the handler's own code */
} wr_lua_result;

/*
 * What ctx.store (lua_store.c) works with during one call: the message's
 * write buffer, how reads reach Redis, and the service's limits. The writes
 * stay in BUF after the call; the caller commits them (idem.h) when the
 * outcome is OK and must reset BUF before reusing it.
 */
typedef struct wr_lua_store_s {
    struct wr_storebuf *buf; /* the message's buffer (storebuf.h) */
    int (*fetch)(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_base *out, char *err,
                 size_t errcap); /* reads: a wr_sb_fetch */
    void *fetch_ud;
    const char *prefix;     /* store.prefix: every key is <prefix><key> */
    size_t max_value_bytes; /* store.max_value_bytes */
} wr_lua_store;

/* Per-message values the worker gives the handler beyond the envelope. */
typedef struct {
    const char *idempotency_key;
    const char *trace_id;
    const char *tracestate; /* the message's W3C tracestate, or NULL: sent on by ctx.http */
    int attempt;
    const wr_lua_store *store; /* NULL: ctx.store is not available (idempotency off) */
    const char *cloudevent;    /* the message's CloudEvent attributes as a JSON object
                                  (cloudevent.h): event.cloudevent; NULL: not one */
} wr_lua_call;

/*
 * Build a state and load the handler. Returns NULL with the reason in ERR
 * ("<file>:<line>: <message>" for compile and runtime errors in the module
 * or its init).
 */
wr_lua *wr_lua_create(const wr_lua_opts *opts, char *err, size_t errcap);
void wr_lua_destroy(wr_lua *L);

/* The loaded version: 12 hex digits of the FNV-1a hash of the handler file's
 * content, so the same file has the same version in every process. */
const char *wr_lua_version(const wr_lua *L);

/* Run one message through `handle`. Always fills RES; returns RES->outcome. */
wr_outcome wr_lua_handle(wr_lua *L, const wr_envelope *env, const wr_lua_call *call,
                         wr_lua_result *res);

/* Largest handler or module source file accepted, in bytes. */
#define WR_LUA_MAX_SOURCE ((unsigned)WR_LIMIT_MAX_SOURCE) /* sidecar/lua/contract.lua */

/*
 * Read the Lua source at PATH (a handler, WHAT = "handler", or a module it
 * requires, "module"): a regular file once symlinks are followed, of at most
 * WR_LUA_MAX_SOURCE bytes. A FIFO, a device or a directory is refused without
 * blocking or reading: the file is opened non-blocking and checked on the
 * open descriptor. Returns a malloc'd buffer (NUL-terminated after *LEN
 * bytes), or NULL with ERR set to "PATH: cannot open WHAT: <errno text>"
 * (errno kept), "PATH: cannot load WHAT: not a regular file", "PATH: cannot
 * load WHAT: larger than N bytes" or "PATH: cannot read WHAT: <errno text>".
 */
char *wr_lua_read_source(const char *path, const char *what, size_t *len, char *err, size_t errcap);

/* FNV-1a over N bytes at P, continuing from H (start with WR_FNV1A_INIT): the
 * content hash behind handler versions. */
#define WR_FNV1A_INIT 14695981039346656037ULL
uint64_t wr_fnv1a(uint64_t h, const void *p, size_t n);

/* Change the per-call deadline and ctx.max_attempts (a live config reload). */
void wr_lua_set_limits(wr_lua *L, int64_t timeout_ms, int max_attempts);

/* Ask a running handler to stop at its next hook check (shutdown past grace).
 * Safe to call from another thread. */
void wr_lua_interrupt(wr_lua *L);

/* Bytes the state currently holds. */
size_t wr_lua_memory(const wr_lua *L);

/* One upcaster (contracts.h): the file, its source, the version it takes. */
typedef struct {
    int64_t from;
    const char *path;
    const char *src;
    size_t len;
} wr_lua_upcaster;

/*
 * Upcast event BODY (LEN bytes of JSON) of TYPE through the N upcasters in
 * STEPS, in order, in this state: each file is compiled once into a sandbox
 * of its own (handler rules: no io, os.execute, ffi, debug, bytecode) and
 * returns function(data, info) -> the data of the next version, where info
 * is {from, to, type}. The chain runs under the handler's timeout. Returns 0
 * with *OUT (malloc'd JSON, the caller frees it) and *OUT_LEN, or -1 with ERR:
 * "v1 -> v2: /path/up.lua:3: message", a non-table result, or a timeout.
 */
/* Compile upcaster U into this state (as wr_lua_upcast would, once): 0, or
 * -1 with ERR ("path:line: message", or what the file returned instead of a
 * function). */
int wr_lua_upcaster_compile(wr_lua *L, const wr_lua_upcaster *u, char *err, size_t errcap);

int wr_lua_upcast(wr_lua *L, const wr_lua_upcaster *steps, int n, const char *type,
                  const char *body, size_t len, char **out, size_t *out_len, char *err,
                  size_t errcap);

#endif
