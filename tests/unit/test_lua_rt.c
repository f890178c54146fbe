/*
 * test_lua_rt.c: unit tests for the Lua runtime (lua_rt).
 *
 * Each case writes a handler file (and, where needed, modules next to it)
 * into a private temporary directory, builds a state with wr_lua_create() and
 * drives wr_lua_handle() with envelopes built by hand around JSON bodies. The
 * handlers assert on what they see (event fields, decoded data, ctx values)
 * and report back through the outcome and error text; buffered publishes are
 * read from the wr_lua_result.
 *
 * Covered: a handled message with its event and ctx; ctx.publish buffering
 * (string and table bodies, options, order, nothing kept when the handler
 * fails afterwards); errors of every shape with "file:line: message" text;
 * ctx.reject (even inside pcall) and ctx.retry with a delay; a body that is not
 * JSON; runaway loops (plain, inside pcall, inside a coroutine, in an xpcall
 * message handler) stopped by the deadline with the state still usable; a
 * memory hog stopped by the allocator limit; every sandbox escape we know of
 * failing with a clear error;
 * require of sibling modules and cjson; module loading failures (syntax error,
 * wrong shape, failing init, ctx.publish from init); module-level state kept
 * between messages; the handler version (FNV-1a of the file). Error texts are
 * compared exactly where lua_rt promises them; line numbers are found by
 * looking for a marker comment in the handler source, not copied from output.
 *
 * lua-cjson is loaded by the state through the default cpath: the binary is
 * linked with -Wl,-E so the C module finds the Lua API.
 */
/* mkdtemp() and realpath() are POSIX.1-2008 / XSI */
#define _XOPEN_SOURCE 700

#include "lua_rt.h"

#include "check.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <sys/wait.h>

#include "log.h"
#include "lua_api.h"
#include "reload.h"

static char tmp_dir[PATH_MAX]; /* private directory, realpath'd */

/* A case that can hang (a FIFO, a runaway C function) runs under a watchdog:
 * when it fires, the run fails naming the case instead of blocking ctest. */
static const char *watched_case = "";

static void watchdog_fired(int sig)
{
    (void)sig;
    static const char msg[] = "test_lua_rt: watchdog: a case hung: ";
    ssize_t rc = write(2, msg, sizeof(msg) - 1);
    rc = write(2, watched_case, strlen(watched_case));
    rc = write(2, "\n", 1);
    (void)rc;
    _exit(1);
}

static void watch_case(const char *name, unsigned seconds)
{
    watched_case = name;
    signal(SIGALRM, watchdog_fired);
    alarm(seconds);
}

static void unwatch(void)
{
    alarm(0);
    watched_case = "";
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds this thread has used: what a bound on a call's work is checked
 * against (wall time on a shared machine says more about the neighbours). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- helpers -------------------------------------------------------------------- */

/* Write TEXT to REL (relative to tmp_dir); returns the absolute path (static
 * rotating buffer). */
static const char *write_file(const char *rel, const char *text)
{
    static char paths[8][PATH_MAX + 64];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, sizeof(paths[0]), "%s/%s", tmp_dir, rel);
    FILE *fp = fopen(path, "wb");
    if (fp == NULL) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
    fputs(text, fp);
    fclose(fp);
    return path;
}

/* Absolute path of REL in tmp_dir (static rotating buffer). */
static const char *path_of(const char *rel)
{
    static char paths[4][PATH_MAX + 64];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof(paths[0]), "%s/%s", tmp_dir, rel);
    return path;
}

/* The 1-based line of SRC holding MARKER; aborts the run when it is missing
 * (a broken test, not a failing module). */
static int line_of(const char *src, const char *marker)
{
    const char *at = strstr(src, marker);
    if (at == NULL) {
        fprintf(stderr, "marker %s not in the handler source\n", marker);
        exit(2);
    }
    int line = 1;
    for (const char *p = src; p < at; p++) {
        line += *p == '\n';
    }
    return line;
}

/* printf into a static rotating buffer: expected error texts. */
static const char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static const char *fmt(const char *f, ...)
{
    static char bufs[4][2048];
    static int next;
    char *b = bufs[next++ % 4];
    va_list ap;
    va_start(ap, f);
    vsnprintf(b, sizeof(bufs[0]), f, ap);
    va_end(ap);
    return b;
}

static wr_lua_opts opts_for(const char *path, int64_t timeout_ms, size_t memory_limit)
{
    wr_lua_opts o;
    memset(&o, 0, sizeof(o));
    o.handler_path = path;
    o.subscription = "orders";
    o.queue = "orders.q";
    o.timeout_ms = timeout_ms;
    o.memory_limit = memory_limit;
    o.worker = 3;
    o.max_attempts = 5;
    return o;
}

/* Write handler NAME with SRC and build a state for it (5 s deadline, default
 * memory). On failure the reason is in ERR and NULL is returned. */
static wr_lua *load(const char *name, const char *src, char *err, size_t errcap)
{
    const char *path = write_file(name, src);
    wr_lua_opts o = opts_for(path, 5000, 0);
    err[0] = '\0';
    return wr_lua_create(&o, err, errcap);
}

/* Same, for a state that must load: reports the error and returns NULL otherwise. */
static wr_lua *must_load(const char *name, const char *src)
{
    char err[1024];
    wr_lua *L = load(name, src, err, sizeof(err));
    if (L == NULL) {
        fprintf(stderr, "cannot load %s: %s\n", name, err);
    }
    CHECK(L != NULL);
    return L;
}

static amqp_bytes_t B(const char *s)
{
    amqp_bytes_t b;
    b.len = strlen(s);
    b.bytes = (void *)s;
    return b;
}

/* Headers every test message carries: x-warren-attempt 2 and tenant "acme". */
static amqp_table_entry_t std_headers[2];
static amqp_table_t std_table = {2, std_headers};

/* A JSON message "m-1" of type OrderCreated from exchange shop, attempt 3. */
static void make_env(wr_envelope *env, const char *body)
{
    memset(env, 0, sizeof(*env));
    env->id = B("m-1");
    env->type = B("OrderCreated");
    env->version = B("2");
    env->exchange = B("shop");
    env->routing_key = B("order.created");
    env->content_type = B("application/json");
    env->body = B(body);
    env->headers = &std_table;
    env->timestamp = 1700000000;
    env->redelivered = 1;
    env->is_json = 1;
    env->attempt = 3;
}

static const wr_lua_call std_call = {
    .idempotency_key = "orders:m-1",
    .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
    .attempt = 3,
};

/* Run BODY (in the standard test message) through L. */
static wr_outcome run(wr_lua *L, const char *body, wr_lua_result *res)
{
    wr_envelope env;
    make_env(&env, body);
    return wr_lua_handle(L, &env, &std_call, res);
}

/* Check that RES has outcome WANT; on failure print the handler's error too. */
static void check_outcome(const wr_lua_result *res, wr_outcome want, int line)
{
    check_count++;
    if (res->outcome != want) {
        check_failures++;
        fprintf(stderr, "%s:%d: outcome %s, want %s; error: %s\n", __FILE__, line,
                wr_outcome_name(res->outcome), wr_outcome_name(want), res->error);
    }
}
#define CHECK_OUTCOME(res, want) check_outcome(&(res), (want), __LINE__)

/* The header KEY of publish P, or NULL. */
static const char *pub_header(const wr_lua_pub *p, const char *key)
{
    for (int i = 0; i < p->header_count; i++) {
        if (strcmp(p->header_keys[i], key) == 0) {
            return p->header_vals[i];
        }
    }
    return NULL;
}

/* FNV-1a 64, written from the published algorithm (offset basis and prime). */
static uint64_t fnv1a64(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* ---- a handled message ---------------------------------------------------------- */

static const char ok_src[] =
    "local M = {}\n"
    "function M.handle(event, ctx)\n"
    "  assert(event.id == 'm-1', 'event.id')\n"
    "  assert(event.type == 'OrderCreated', 'event.type')\n"
    "  assert(event.version == '2', 'event.version')\n"
    "  assert(event.exchange == 'shop', 'event.exchange')\n"
    "  assert(event.routing_key == 'order.created', 'event.routing_key')\n"
    "  assert(event.content_type == 'application/json', 'event.content_type')\n"
    "  assert(event.timestamp == 1700000000, 'event.timestamp')\n"
    "  assert(event.redelivered == true, 'event.redelivered')\n"
    "  assert(event.attempt == 3, 'event.attempt')\n"
    "  assert(event.headers.tenant == 'acme', 'event.headers.tenant')\n"
    "  assert(event.headers['x-warren-attempt'] == 2, 'event.headers x-warren-attempt')\n"
    "  local d = event.data\n"
    "  assert(d.order_id == 42, 'data.order_id')\n"
    "  assert(d.customer.name == 'caf\\195\\169', 'data.customer.name')\n"
    "  assert(#d.items == 2 and d.items[2].sku == 'B-2', 'data.items')\n"
    "  assert(d.paid == false, 'data.paid')\n"
    "  assert(d.note == require('cjson').null, 'data.note')\n"
    "  assert(event.body:sub(1, 1) == '{', 'event.body')\n"
    "  assert(ctx.idempotency_key == 'orders:m-1', 'ctx.idempotency_key')\n"
    "  assert(ctx.trace_id == '4bf92f3577b34da6a3ce929d0e0e4736', 'ctx.trace_id')\n"
    "  assert(ctx.subscription == 'orders', 'ctx.subscription')\n"
    "  assert(ctx.queue == 'orders.q', 'ctx.queue')\n"
    "  assert(ctx.attempt == 3, 'ctx.attempt')\n"
    "  assert(ctx.max_attempts == 5, 'ctx.max_attempts')\n"
    "  assert(ctx.worker == 3, 'ctx.worker')\n"
    "  assert(ctx.message_id == 'm-1', 'ctx.message_id')\n"
    "  assert(type(ctx.handler_version) == 'string' and #ctx.handler_version == 12,\n"
    "         'ctx.handler_version')\n"
    "  assert(math.abs(ctx.now() - os.time()) < 5, 'ctx.now')\n"
    "  assert(ctx.json.decode('[1,2]')[2] == 2, 'ctx.json')\n"
    "  assert(ctx.json.decode('{bad') == nil, 'ctx.json is the safe variant')\n"
    "end\n"
    "return M\n";

static const char ok_body[] =
    "{\"order_id\":42,\"customer\":{\"name\":\"caf\xc3\xa9\"},"
    "\"items\":[{\"sku\":\"A-1\"},{\"sku\":\"B-2\"}],\"paid\":false,\"note\":null}";

static void test_ok(void)
{
    wr_lua *L = must_load("ok.lua", ok_src);
    if (L == NULL) {
        return;
    }
    wr_lua_result res;
    CHECK_INT(run(L, ok_body, &res), WR_OUT_OK);
    CHECK_OUTCOME(res, WR_OUT_OK);
    CHECK_STR(res.error, "");
    CHECK_INT(res.pub_count, 0);
    CHECK_INT(res.rebuild, 0);
    CHECK_STR(wr_outcome_name(res.outcome), "ok");
    CHECK(wr_lua_memory(L) > 0);

    /* without an idempotency key or trace id the ctx falls back to the id and nil */
    const char *src2 =
        "return { handle = function(event, ctx)\n"
        "  assert(ctx.idempotency_key == event.id, 'idempotency_key falls back to the id')\n"
        "  assert(ctx.trace_id == nil, 'no trace id')\n"
        "  assert(ctx.attempt == 1 and event.attempt == 1, 'attempt')\n"
        "end }\n";
    wr_lua *L2 = must_load("ok2.lua", src2);
    if (L2 != NULL) {
        wr_envelope env;
        make_env(&env, "{}");
        wr_lua_call call = {.idempotency_key = NULL, .trace_id = NULL, .attempt = 1};
        wr_lua_handle(L2, &env, &call, &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        wr_lua_destroy(L2);
    }

    /* a body that is not JSON by content type: raw bytes in event.body, no event.data */
    const char *src3 = "return { handle = function(event, ctx)\n"
                       "  assert(event.data == nil, 'no data for a non-JSON body')\n"
                       "  assert(event.body == 'not \\255 json', 'raw body')\n"
                       "  assert(event.content_type == 'text/plain', 'content type')\n"
                       "end }\n";
    wr_lua *L3 = must_load("ok3.lua", src3);
    if (L3 != NULL) {
        wr_envelope env;
        make_env(&env, "not \xff json");
        env.content_type = B("text/plain");
        env.is_json = 0;
        wr_lua_handle(L3, &env, &std_call, &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        wr_lua_destroy(L3);
    }
    wr_lua_destroy(L);
}

/* ---- ctx.publish ------------------------------------------------------------------ */

static const char pub_src[] =
    "local M = {}\n"
    "function M.handle(event, ctx)\n"
    "  local d = event.data\n"
    "  ctx.publish('shop', 'order.shipped', 'plain text')\n"
    "  ctx.publish('shop.audit', 'order.audited', { order = { id = event.id } },\n"
    "              { headers = { tenant = 'acme', n = 5, vip = true }, type = 'OrderAudited',\n"
    "                mandatory = true })\n"
    "  ctx.publish('', 'reply.q', '<x/>', { content_type = 'application/xml' })\n"
    "  ctx.publish('shop', 'arr', { 1, 2, 3 }, { content_type = 'application/vnd.x+json' })\n"
    "  if d.bad_opts then\n"
    "    local ok = pcall(ctx.publish, 'shop', 'k', 'b', { headers = { x = {} } })\n"
    "    assert(not ok, 'bad headers must raise')\n"
    "  end\n"
    "  if d.bad_args then ctx.publish('shop', nil, 'b') end -- @bad_args\n"
    "  if d.fail then error('failed after publishing') end\n"
    "end\n"
    "return M\n";

static void test_publish(void)
{
    wr_lua *L = must_load("pub.lua", pub_src);
    if (L == NULL) {
        return;
    }
    wr_lua_result res;
    run(L, "{}", &res);
    CHECK_OUTCOME(res, WR_OUT_OK);
    CHECK_INT(res.pub_count, 4);
    if (res.pub_count == 4) {
        const wr_lua_pub *p = res.pubs;
        CHECK_STR(p[0].exchange, "shop");
        CHECK_STR(p[0].routing_key, "order.shipped");
        CHECK_STR(p[0].body, "plain text");
        CHECK_INT(p[0].body_len, 10);
        CHECK(p[0].content_type == NULL);
        CHECK(p[0].type == NULL);
        CHECK_INT(p[0].mandatory, 0);
        CHECK_INT(p[0].header_count, 0);

        CHECK_STR(p[1].exchange, "shop.audit");
        CHECK_STR(p[1].routing_key, "order.audited");
        CHECK_STR(p[1].body, "{\"order\":{\"id\":\"m-1\"}}");
        CHECK_INT(p[1].body_len, strlen("{\"order\":{\"id\":\"m-1\"}}"));
        CHECK_STR(p[1].content_type, "application/json");
        CHECK_STR(p[1].type, "OrderAudited");
        CHECK_INT(p[1].mandatory, 1);
        CHECK_INT(p[1].header_count, 3);
        CHECK_STR(pub_header(&p[1], "tenant"), "acme");
        CHECK_STR(pub_header(&p[1], "n"), "5");
        CHECK_STR(pub_header(&p[1], "vip"), "true");

        CHECK_STR(p[2].exchange, "");
        CHECK_STR(p[2].routing_key, "reply.q");
        CHECK_STR(p[2].body, "<x/>");
        CHECK_STR(p[2].content_type, "application/xml");

        CHECK_STR(p[3].body, "[1,2,3]");
        CHECK_STR(p[3].content_type, "application/vnd.x+json");
    }

    /* a publish whose options raise (caught by pcall) is not kept */
    run(L, "{\"bad_opts\":true}", &res);
    CHECK_OUTCOME(res, WR_OUT_OK);
    CHECK_INT(res.pub_count, 4);

    /* the next message starts with an empty buffer */
    run(L, "{}", &res);
    CHECK_INT(res.pub_count, 4);

    /* a handler that fails after publishing publishes nothing */
    run(L, "{\"fail\":true}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_INT(res.pub_count, 0);
    CHECK(res.pubs == NULL);
    CHECK_STR(res.error, fmt("%s:%d: failed after publishing", path_of("pub.lua"),
                             line_of(pub_src, "error('failed after publishing')")));

    /* argument errors name the caller's line */
    run(L, "{\"bad_args\":true}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, fmt("%s:%d: ctx.publish: routing_key must be a string, got nil",
                             path_of("pub.lua"), line_of(pub_src, "@bad_args")));
    CHECK_INT(res.pub_count, 0);
    wr_lua_destroy(L);
}

/* ---- errors, reject, retry ------------------------------------------------------ */

static const char err_src[] =
    "local M = {}\n"
    "local modes = {}\n"
    "function modes.string(ctx) error('boom') end -- @string\n"
    "function modes.table(ctx) error({ code = 1 }) end\n"
    "function modes.nilerr(ctx) error(nil) end\n"
    "function modes.number(ctx) error(42) end -- @number\n"
    "function modes.level0(ctx) error('no position', 0) end\n"
    "function modes.runtime(ctx) local t = nil; return t.x end -- @runtime\n"
    "function modes.reject(ctx)\n"
    "  ctx.publish('shop', 'k', 'dropped with the message')\n"
    "  ctx.reject('order has no items')\n"
    "  error('not reached')\n"
    "end\n"
    "function modes.reject_pcall(ctx)\n"
    "  local ok, e = pcall(ctx.reject, 'caught but still rejected')\n"
    "  assert(not ok)\n"
    "  local ok2 = pcall(function() ctx.reject('inner') end)\n"
    "  return 'normal return'\n"
    "end\n"
    "function modes.reject_then_error(ctx)\n"
    "  pcall(ctx.reject, 'rejected first')\n"
    "  error('then failed')\n"
    "end\n"
    "function modes.reject_bad(ctx) ctx.reject(42) end -- @reject_bad\n"
    "function modes.retry_delay(ctx) ctx.retry('stock service down', { delay = '5s' }) end\n"
    "function modes.retry_ms(ctx) ctx.retry('later', { delay = 250 }) end\n"
    "function modes.retry_plain(ctx) ctx.retry('soon') end\n"
    "function modes.retry_sum(ctx) ctx.retry('sum', { delay = '1m30s' }) end\n"
    "function modes.retry_bad(ctx) ctx.retry('x', { delay = '5 parsecs' }) end -- @retry_bad\n"
    "function modes.log_bad(ctx) ctx.log.info('msg', 5) end -- @log_bad\n"
    "function modes.stack(ctx)\n"
    "  local function f(n) return 1 + f(n + 1) end\n"
    "  return f(1)\n"
    "end\n"
    "function M.handle(event, ctx)\n"
    "  return modes[event.data.mode](ctx)\n"
    "end\n"
    "return M\n";

static void test_errors(void)
{
    wr_lua *L = must_load("err.lua", err_src);
    if (L == NULL) {
        return;
    }
    const char *path = path_of("err.lua");
    wr_lua_result res;

    run(L, "{\"mode\":\"string\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.reason, "handler-error");
    CHECK_STR(res.error, fmt("%s:%d: boom", path, line_of(err_src, "@string")));
    CHECK_INT(res.rebuild, 0);
    CHECK_STR(wr_outcome_name(res.outcome), "error");

    run(L, "{\"mode\":\"table\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, "error object is a table, not a string "
                         "(raise a string: error('what went wrong'))");

    run(L, "{\"mode\":\"nilerr\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, "error(nil) raised (raise a string: error('what went wrong'))");

    /* a number is a string to Lua: error() gives it a position like a string */
    run(L, "{\"mode\":\"number\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, fmt("%s:%d: 42", path, line_of(err_src, "@number")));

    run(L, "{\"mode\":\"level0\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, "no position");

    run(L, "{\"mode\":\"runtime\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, fmt("%s:%d: attempt to index local 't' (a nil value)", path,
                             line_of(err_src, "@runtime")));

    run(L, "{\"mode\":\"stack\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK(strstr(res.error, "stack overflow") != NULL);

    /* reject: the reason, and the publishes are dropped */
    run(L, "{\"mode\":\"reject\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_REJECT);
    CHECK_STR(res.reason, "rejected");
    CHECK_STR(res.error, "order has no items");
    CHECK_INT(res.pub_count, 0);
    CHECK_STR(wr_outcome_name(res.outcome), "rejected");

    /* a pcall around ctx.reject does not undo it, nor does a normal return */
    run(L, "{\"mode\":\"reject_pcall\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_REJECT);
    CHECK_STR(res.error, "inner"); /* the last call wins */

    run(L, "{\"mode\":\"reject_then_error\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_REJECT);
    CHECK_STR(res.error, "rejected first");

    run(L, "{\"mode\":\"reject_bad\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, fmt("%s:%d: ctx.reject(reason): reason must be a string, "
                             "got number",
                             path, line_of(err_src, "@reject_bad")));

    /* retry: the delay as a duration, milliseconds, absent */
    run(L, "{\"mode\":\"retry_delay\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_RETRY);
    CHECK_STR(res.reason, "retry-requested");
    CHECK_STR(res.error, "stock service down");
    CHECK_INT(res.retry_delay_ms, 5000);
    CHECK_STR(wr_outcome_name(res.outcome), "retry");

    run(L, "{\"mode\":\"retry_ms\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_RETRY);
    CHECK_INT(res.retry_delay_ms, 250);

    run(L, "{\"mode\":\"retry_plain\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_RETRY);
    CHECK_STR(res.error, "soon");
    CHECK_INT(res.retry_delay_ms, -1);

    run(L, "{\"mode\":\"retry_sum\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_RETRY);
    CHECK_INT(res.retry_delay_ms, 90000);

    run(L, "{\"mode\":\"retry_bad\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, fmt("%s:%d: ctx.retry: opts.delay '5 parsecs' is not a duration like 5s",
                             path, line_of(err_src, "@retry_bad")));
    CHECK_INT(res.retry_delay_ms, -1);

    /* a forced outcome does not leak into the next message */
    run(L, "{\"mode\":\"string\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);

    run(L, "{\"mode\":\"log_bad\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, fmt("%s:%d: ctx.log.info: fields must be a table, got number", path,
                             line_of(err_src, "@log_bad")));

    /* a body that is not JSON never reaches the handler */
    run(L, "{\"mode\": oops", &res);
    CHECK_OUTCOME(res, WR_OUT_INVALID);
    CHECK_STR(res.reason, "invalid-json");
    CHECK(res.error[0] != '\0');
    CHECK_STR(wr_outcome_name(res.outcome), "invalid");
    run(L, "", &res);
    CHECK_OUTCOME(res, WR_OUT_INVALID);
    CHECK_STR(res.reason, "invalid-json");

    wr_lua_destroy(L);
}

/* ---- deadlines and memory ------------------------------------------------------- */

static const char loop_src[] =
    "local M = {}\n"
    "local modes = {}\n"
    "function modes.spin() while true do end end -- @spin\n"
    "function modes.pcall_spin()\n"
    "  local ok = pcall(function() while true do end end)\n"
    "  return 'escaped the deadline'\n"
    "end\n"
    "function modes.pcall_loop()\n"
    "  while true do pcall(function() while true do end end) end\n"
    "end\n"
    "function modes.coroutine_spin()\n"
    "  local co = coroutine.create(function() while true do end end)\n"
    "  local ok = coroutine.resume(co)\n"
    "  return 'escaped the deadline'\n"
    "end\n"
    "function modes.xpcall_spin()\n"
    "  xpcall(function() while true do end end, function(e) while true do end end)\n"
    "  return 'escaped the deadline'\n"
    "end\n"
    "function modes.quick() return 1 end\n"
    "function M.handle(event, ctx)\n"
    "  return modes[event.data.mode]()\n"
    "end\n"
    "return M\n";

static void test_timeouts(void)
{
    const char *path = write_file("loop.lua", loop_src);
    wr_lua_opts o = opts_for(path, 200, 0);
    char err[1024];
    wr_lua *L = wr_lua_create(&o, err, sizeof(err));
    if (L == NULL) {
        fprintf(stderr, "cannot load loop.lua: %s\n", err);
    }
    CHECK(L != NULL);
    if (L == NULL) {
        return;
    }
    static const char *const modes[] = {"spin", "pcall_spin", "pcall_loop", "coroutine_spin",
                                        "xpcall_spin"};
    wr_lua_result res;
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        char body[64];
        snprintf(body, sizeof(body), "{\"mode\":\"%s\"}", modes[i]);
        run(L, body, &res);
        if (res.outcome != WR_OUT_TIMEOUT) {
            fprintf(stderr, "mode %s\n", modes[i]);
        }
        CHECK_OUTCOME(res, WR_OUT_TIMEOUT);
        CHECK_STR(res.reason, "timeout");
        CHECK(strstr(res.error, "handler timed out after 200 ms") != NULL);
        /* every stop names a line of the handler (xpcall's runs in the sandbox's
         * wrapper, whose line it names) */
        if (strcmp(modes[i], "xpcall_spin") != 0) {
            CHECK(strncmp(res.error, path_of("loop.lua"), strlen(path_of("loop.lua"))) == 0);
        }
        if (i == 0) {
            CHECK_STR(res.error, fmt("%s:%d: handler timed out after 200 ms", path_of("loop.lua"),
                                     line_of(loop_src, "@spin")));
        }
        CHECK_INT(res.rebuild, 0);

        /* the state still works for the next message */
        run(L, "{\"mode\":\"quick\"}", &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
    }
    CHECK_STR(wr_outcome_name(WR_OUT_TIMEOUT), "timeout");

    /* an interrupt (shutdown past the grace period) stops the next long run */
    wr_lua_interrupt(L);
    run(L, "{\"mode\":\"spin\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK(strstr(res.error, "handler interrupted: the sidecar is shutting down") != NULL);
    wr_lua_destroy(L);

    /* a module body that never returns: create fails instead of hanging */
    path = write_file("loop_body.lua", "while true do end\nreturn {}\n");
    o = opts_for(path, 200, 0);
    L = wr_lua_create(&o, err, sizeof(err));
    CHECK(L == NULL);
    CHECK(strstr(err, "handler timed out after 200 ms") != NULL);
    wr_lua_destroy(L);
}

static const char hog_src[] =
    "local M = {}\n"
    "function M.handle(event, ctx)\n"
    "  if event.data.small then return end\n"
    "  local t = {} while true do t[#t+1] = string.rep('x', 1e6) .. #t end\n"
    "end\n"
    "return M\n";

static void test_memory(void)
{
    const char *path = write_file("hog.lua", hog_src);
    wr_lua_opts o = opts_for(path, 5000, 16u << 20);
    char err[1024];
    wr_lua *L = wr_lua_create(&o, err, sizeof(err));
    if (L == NULL) {
        fprintf(stderr, "cannot load hog.lua: %s\n", err);
    }
    CHECK(L != NULL);
    if (L == NULL) {
        return;
    }
    CHECK(wr_lua_memory(L) < (16u << 20));
    wr_lua_result res;
    run(L, "{}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.reason, "out-of-memory");
    CHECK_STR(res.error, "not enough memory: the handler exceeded the state's memory limit");
    CHECK_INT(res.rebuild, 1);
    CHECK(wr_lua_memory(L) <= (16u << 20));
    wr_lua_destroy(L);

    /* the worker's answer: a new state, which works */
    L = wr_lua_create(&o, err, sizeof(err));
    CHECK(L != NULL);
    if (L != NULL) {
        run(L, "{\"small\":true}", &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        CHECK_INT(res.rebuild, 0);
        wr_lua_destroy(L);
    }
}

/* ---- memory outside the handler call ------------------------------------------- */

/* A state whose module-level cache fills its memory (the handler catches the
 * "not enough memory" itself), then a message whose body no longer fits: the
 * event cannot be built. The message fails with out-of-memory and the state
 * is marked for a rebuild; nothing raises outside a protected call (which
 * would end the process). The same for a body larger than the whole limit
 * and for JSON whose decoded form does not fit (not "invalid JSON"). */
static const char cache_src[] =
    "local cache = {}\n"
    "local M = {}\n"
    "function M.handle(event, ctx)\n"
    "  if event.body == 'fill' then\n"
    "    pcall(function()\n"
    "      while true do cache[#cache + 1] = string.rep('x', 1000) .. #cache end\n"
    "    end)\n"
    "  end\n"
    "end\n"
    "return M\n";

static void run_text(wr_lua *L, const char *body, size_t len, wr_lua_result *res)
{
    wr_envelope env;
    make_env(&env, "");
    env.body.bytes = (void *)body;
    env.body.len = len;
    env.is_json = 0;
    env.content_type = B("text/plain");
    wr_lua_handle(L, &env, &std_call, res);
}

static void test_memory_outside_call(void)
{
    const char *path = write_file("cache.lua", cache_src);
    wr_lua_opts o = opts_for(path, 5000, 16u << 20);
    char err[1024];
    wr_lua *L = wr_lua_create(&o, err, sizeof(err));
    CHECK(L != NULL);
    if (L == NULL) {
        fprintf(stderr, "cannot load cache.lua: %s\n", err);
        return;
    }
    size_t big_len = 20u << 20;
    char *big = malloc(big_len);
    if (big == NULL) {
        exit(2);
    }
    memset(big, 'b', big_len);
    wr_lua_result res;
    run_text(L, "fill", 4, &res);
    CHECK_OUTCOME(res, WR_OUT_OK); /* the handler caught its own out-of-memory */
    run_text(L, big, 500 * 1024, &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.reason, "out-of-memory");
    CHECK_STR(res.error, "not enough memory: the state's memory limit was reached before the "
                         "handler ran (building the event)");
    CHECK_INT(res.rebuild, 1);
    wr_lua_destroy(L);

    /* a body larger than the limit, in a fresh state */
    L = wr_lua_create(&o, err, sizeof(err));
    CHECK(L != NULL);
    if (L != NULL) {
        run_text(L, big, big_len, &res);
        CHECK_OUTCOME(res, WR_OUT_ERROR);
        CHECK_STR(res.reason, "out-of-memory");
        CHECK_INT(res.rebuild, 1);
        /* the failed call left the state usable */
        run_text(L, "small", 5, &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        wr_lua_destroy(L);
    }

    /* JSON that is valid but does not fit once decoded: out of memory, not invalid */
    size_t jn = (12u << 20) + 1; /* "[1,1,...,1]" */
    for (size_t i = 0; i < jn; i++) {
        big[i] = (i & 1) ? '1' : ',';
    }
    big[0] = '[';
    big[jn - 1] = ']';
    L = wr_lua_create(&o, err, sizeof(err));
    CHECK(L != NULL);
    if (L != NULL) {
        wr_envelope env;
        make_env(&env, "");
        env.body.bytes = big;
        env.body.len = jn;
        wr_lua_handle(L, &env, &std_call, &res);
        CHECK_OUTCOME(res, WR_OUT_ERROR);
        CHECK_STR(res.reason, "out-of-memory");
        CHECK_STR(res.error, "not enough memory: the state's memory limit was reached before "
                             "the handler ran (decoding the JSON body)");
        CHECK_INT(res.rebuild, 1);
        wr_lua_destroy(L);
    }
    free(big);
}

/* ---- metamethods on tables the handler controls ----------------------------------- */

/* The handler may give ctx a metatable, or return a module table with one.
 * The runtime writes ctx's per-message fields and reads handle/init; none of
 * that may run handler code outside a protected call and its deadline. */
static void test_metamethods(void)
{
    char err[1024];
    wr_lua_result res;

    /* init makes every new ctx field raise: the per-message fields are set raw */
    static const char raise_src[] =
        "return {\n"
        "  init = function(ctx)\n"
        "    setmetatable(ctx, { __newindex = function(_, k) error('no writes: ' .. k) end })\n"
        "  end,\n"
        "  handle = function(event, ctx)\n"
        "    assert(ctx.attempt == 3 and ctx.message_id == 'm-1', 'per-message fields')\n"
        "  end,\n"
        "}\n";
    watch_case("ctx with a raising __newindex", 10);
    wr_lua *L = load("mm_raise.lua", raise_src, err, sizeof(err));
    CHECK(L != NULL);
    if (L != NULL) {
        run(L, "{}", &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        wr_lua_destroy(L);
    }
    unwatch();

    /* the same with an endless __newindex */
    static const char newindex_loop[] =
        "return {\n"
        "  init = function(ctx)\n"
        "    setmetatable(ctx, { __newindex = function() while true do end end })\n"
        "  end,\n"
        "  handle = function(event, ctx) end,\n"
        "}\n";
    watch_case("ctx with an endless __newindex", 10);
    L = load("mm_loop.lua", newindex_loop, err, sizeof(err));
    CHECK(L != NULL);
    if (L != NULL) {
        run(L, "{}", &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        wr_lua_destroy(L);
    }
    unwatch();

    /* a live reload of max_attempts after init removed the field and locked ctx */
    static const char limits_src[] =
        "return {\n"
        "  init = function(ctx)\n"
        "    ctx.max_attempts = nil\n"
        "    setmetatable(ctx, { __newindex = function(_, k) error('no writes: ' .. k) end })\n"
        "  end,\n"
        "  handle = function(event, ctx)\n"
        "    if ctx.max_attempts ~= event.data.want then\n"
        "      error('max_attempts is ' .. tostring(ctx.max_attempts), 0)\n"
        "    end\n"
        "  end,\n"
        "}\n";
    watch_case("set_limits on a locked ctx", 10);
    L = load("mm_limits.lua", limits_src, err, sizeof(err));
    CHECK(L != NULL);
    if (L != NULL) {
        wr_lua_set_limits(L, 1000, 7);
        run(L, "{\"want\":7}", &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        wr_lua_destroy(L);
    }
    unwatch();

    /* a module table whose __index loops: loading stops at the deadline */
    static const char index_loop[] =
        "return setmetatable({}, { __index = function() while true do end end }) -- @loop\n";
    const char *path = write_file("mm_index_loop.lua", index_loop);
    wr_lua_opts o = opts_for(path, 200, 0);
    watch_case("module table with an endless __index", 10);
    double t0 = cpu_s();
    L = wr_lua_create(&o, err, sizeof(err));
    double took = cpu_s() - t0;
    unwatch();
    CHECK(L == NULL);
    CHECK_STR(err,
              fmt("%s:%d: handler timed out after 200 ms", path, line_of(index_loop, "@loop")));
    CHECK(took < 1.0);
    wr_lua_destroy(L);

    /* ... and one whose __index raises */
    static const char index_raise[] =
        "return setmetatable({}, { __index = function(_, k) error('no ' .. k) end }) -- @raise\n";
    path = write_file("mm_index_raise.lua", index_raise);
    L = load("mm_index_raise.lua", index_raise, err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("%s:%d: no handle", path, line_of(index_raise, "@raise")));
    wr_lua_destroy(L);
}

/* ---- the C stack ------------------------------------------------------------------ */

/* Recursion through C functions that call back into Lua nests on the C
 * stack, where LuaJIT sets no limit: a template expander recursing through
 * string.gsub 1,200 levels deep ended the process with SIGSEGV. Each such
 * nesting fails its message with "C stack overflow" instead, and the state
 * goes on working; moderate nesting still works, and cjson (which recurses
 * in C itself) still works at the deepest level a handler can reach. */
static const char cstack_src[] =
    "local cjson = require('cjson')\n"
    "local M = {}\n"
    "local modes = {}\n"
    "local function expand(s)\n"
    "  return (s:gsub('%b{}', function(m) return expand(m:sub(2, -2)) end))\n"
    "end\n"
    "function modes.gsub(n)\n"
    "  return expand(string.rep('{', n) .. string.rep('}', n))\n"
    "end\n"
    "-- f(...) in a coroutine of its own, its error raised again as it is\n"
    "local function inco(f, ...)\n"
    "  local ok, r = coroutine.resume(coroutine.create(f), ...)\n"
    "  if not ok then error(r, 0) end\n"
    "  return r\n"
    "end\n"
    "local function sorts(n)\n"
    "  if n > 0 then\n"
    "    table.sort({ 2, 1 }, function(a, b) inco(sorts, n - 1) return a < b end)\n"
    "  end\n"
    "end\n"
    "function modes.sort(n) sorts(n) end\n"
    "local function nest(n)\n"
    "  if n == 0 then return 0 end\n"
    "  return inco(nest, n - 1) + 1\n"
    "end\n"
    "function modes.coroutine(n) return nest(n) end\n"
    "local function wrapped(n)\n"
    "  if n == 0 then return 0 end\n"
    "  return coroutine.wrap(wrapped)(n - 1) + 1\n"
    "end\n"
    "function modes.wrap(n) return wrapped(n) end\n"
    "function modes.sort_c(n)\n"
    "  -- no Lua code at all between the levels: table.sort is its own comparator\n"
    "  local t = {}\n"
    "  t[1] = table.sort t[2] = t\n"
    "  if n == 40 then t[2] = {} end\n"
    "  pcall(table.sort, t, table.sort)\n"
    "  if n ~= 40 then table.sort(t, table.sort) end\n"
    "end\n"
    "function modes.format(n)\n"
    "  local mt = {}\n"
    "  mt.__tostring = function(o)\n"
    "    if o.n == 0 then return 'x' end\n"
    "    return inco(function()\n"
    "      return string.format('%s', setmetatable({ n = o.n - 1 }, mt))\n"
    "    end)\n"
    "  end\n"
    "  return string.format('%s', setmetatable({ n = n }, mt))\n"
    "end\n"
    "function modes.bottom()\n"
    "  local deep = {}\n"
    "  local t = deep\n"
    "  for i = 1, 999 do t[1] = {} t = t[1] end\n"
    "  local text = string.rep('[', 999) .. string.rep(']', 999)\n"
    "  local reached = 0\n"
    "  local function go(n)\n"
    "    local ok = pcall(string.gsub, 'x', 'x', function() go(n + 1) return 'x' end)\n"
    "    if not ok and reached == 0 then\n"
    "      reached = n\n"
    "      assert(#cjson.encode(deep) == 2 * 1000, 'encode at the bottom')\n"
    "      assert(cjson.decode(text)[1] ~= nil, 'decode at the bottom')\n"
    "    end\n"
    "  end\n"
    "  go(1)\n"
    "  assert(reached > 50, 'reached ' .. reached)\n"
    "end\n"
    "function M.handle(event, ctx)\n"
    "  return modes[event.data.mode](event.data.n)\n"
    "end\n"
    "return M\n";

/* Run MODE of cstack.lua N deep in L: it must fail with "C stack overflow";
 * then 40 deep it must work. */
static void check_cstack_mode(wr_lua *L, const char *mode, int n)
{
    const char *tail = "C stack overflow: calls nested too deeply through C functions "
                       "(string.gsub or table.sort callbacks, coroutines, metamethods)";
    wr_lua_result res;
    char body[128];
    snprintf(body, sizeof(body), "{\"mode\":\"%s\",\"n\":%d}", mode, n);
    watch_case(mode, 60);
    run(L, body, &res);
    unwatch();
    if (res.outcome != WR_OUT_ERROR || strcmp(res.reason, "stack-overflow") != 0) {
        fprintf(stderr, "mode %s: %s (%s): %s\n", mode, wr_outcome_name(res.outcome), res.reason,
                res.error);
    }
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.reason, "stack-overflow");
    size_t len = strlen(res.error), m = strlen(tail);
    CHECK(len >= m && strcmp(res.error + len - m, tail) == 0);
    CHECK_INT(res.rebuild, 0);
    snprintf(body, sizeof(body), "{\"mode\":\"%s\",\"n\":40}", mode);
    run(L, body, &res);
    CHECK_OUTCOME(res, WR_OUT_OK);
}

static void test_cstack(void)
{
    wr_lua *L = must_load("cstack.lua", cstack_src);
    if (L == NULL) {
        return;
    }
    wr_lua_set_limits(L, 60000, 5); /* deep nesting is slow under the sanitizers */
    /* the 1,200-level template of the report (and deeper), named at the expander */
    check_cstack_mode(L, "gsub", 1200);
    check_cstack_mode(L, "gsub", 5000);
    wr_lua_result res;
    run(L, "{\"mode\":\"gsub\",\"n\":1200}", &res);
    CHECK(strncmp(res.error, path_of("cstack.lua"), strlen(path_of("cstack.lua"))) == 0);
    /* comparators that sort again, each in a coroutine of its own (one Lua
     * stack each: LuaJIT's own limit never trips) */
    check_cstack_mode(L, "sort", 200000);
    /* table.sort as its own comparator: no Lua code runs between the levels */
    check_cstack_mode(L, "sort_c", 0);
    /* __tostring run by string.format, nesting through coroutines */
    check_cstack_mode(L, "format", 200000);
    /* cjson recursing 1,000 levels in C at the deepest point a handler reaches */
    watch_case("cjson at the bottom of the C stack", 60);
    run(L, "{\"mode\":\"bottom\"}", &res);
    unwatch();
    CHECK_OUTCOME(res, WR_OUT_OK);

    /* coroutines alone (about 80 bytes of C stack each: SIGSEGV at about
     * 100,000 levels on an 8 MiB stack) */
    check_cstack_mode(L, "coroutine", 200000);
    /* the same through coroutine.wrap, which adds a position to the error at
     * every level on the way out: the message outgrows the state first */
    watch_case("coroutine.wrap nesting", 60);
    run(L, "{\"mode\":\"wrap\",\"n\":200000}", &res);
    unwatch();
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.reason, "out-of-memory");
    CHECK_INT(res.rebuild, 1);
    run(L, "{\"mode\":\"wrap\",\"n\":40}", &res);
    CHECK_OUTCOME(res, WR_OUT_OK);
    wr_lua_destroy(L);
}

/* The same on threads with smaller stacks than the 8 MiB of a default
 * thread (a container's ulimit, another libc): the floor follows the thread's
 * own stack (1 MiB kept free, or half of what is left on a tiny one), so the
 * nesting fails with "C stack overflow" there too, and plain handlers run. */
typedef struct {
    size_t stack;
    wr_outcome deep, plain;
    char reason[64];
} small_stack_case;

static void *small_stack_main(void *arg)
{
    small_stack_case *c = arg;
    wr_lua_opts o = opts_for(path_of("cstack.lua"), 60000, 0);
    char err[1024];
    wr_lua *L = wr_lua_create(&o, err, sizeof(err));
    if (L == NULL) {
        fprintf(stderr, "cstack.lua on a %zu KiB stack: %s\n", c->stack >> 10, err);
        return NULL;
    }
    wr_lua_result res;
    run(L, "{\"mode\":\"gsub\",\"n\":5000}", &res);
    c->deep = res.outcome;
    snprintf(c->reason, sizeof(c->reason), "%s", res.reason);
    run(L, "{\"mode\":\"gsub\",\"n\":10}", &res);
    c->plain = res.outcome;
    wr_lua_destroy(L);
    return NULL;
}

static void test_small_stacks(void)
{
    static const size_t stacks[] = {4u << 20, 1536u << 10, 768u << 10};
    for (size_t i = 0; i < sizeof(stacks) / sizeof(stacks[0]); i++) {
        small_stack_case c = {.stack = stacks[i], .deep = WR_OUT_OK, .plain = WR_OUT_ERROR};
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setstacksize(&a, stacks[i]);
        pthread_t t;
        watch_case("a small thread stack", 60);
        CHECK_INT(pthread_create(&t, &a, small_stack_main, &c), 0);
        pthread_join(t, NULL);
        unwatch();
        pthread_attr_destroy(&a);
        if (c.deep != WR_OUT_ERROR || c.plain != WR_OUT_OK) {
            fprintf(stderr, "stack %zu KiB: deep %s (%s), plain %s\n", stacks[i] >> 10,
                    wr_outcome_name(c.deep), c.reason, wr_outcome_name(c.plain));
        }
        CHECK_INT(c.deep, WR_OUT_ERROR);
        CHECK_STR(c.reason, "stack-overflow");
        CHECK_INT(c.plain, WR_OUT_OK);
    }
}

/* ---- pattern functions the deadline can stop -------------------------------------- */

/* lua_pattern.c's string.find/match/gmatch/gsub against LuaJIT's own, on
 * random patterns (every item kind, malformed ones too) and subjects: the
 * same results and the same error texts. Runs in a plain state: the
 * originals are kept, then replaced. */
static const char pattern_diff_lua[] =
    "local orig = ...\n"
    "local new = { find = string.find, match = string.match, gmatch = string.gmatch,\n"
    "              gsub = string.gsub, sort = table.sort }\n"
    "local items = { 'a', 'b', 'c', '.', '%a', '%d', '%s', '%w', '%p', '%x', '%u', '%l',\n"
    "  '%c', '%g', '%z', '%A', '%D', '%S', '%W', '%.', '%%', '[ab]', '[^a]', '[a-c]',\n"
    "  '[%d_]', '[]]', '[^]a]', '[a-]', '%b()', '%bab', '%f[%w]', '%f[%W]', '(', ')', '()',\n"
    "  '%1', '%2', '%0', 'x', '$', '^', '-', '*', '+', '?', '%', '[', '%f', '%b', '\\0' }\n"
    "local quants = { '', '', '', '*', '+', '-', '?' }\n"
    "local chars = { 'a', 'b', 'c', '(', ')', '1', ' ', '_', '\\0', '\\t', '\\128', '.', '%',\n"
    "  '-', 'A', 'Z', '[', ']', 'x' }\n"
    "math.randomseed(20261205)\n"
    "local R = math.random\n"
    "local function pattern()\n"
    "  local t = {}\n"
    "  if R(4) == 1 then t[#t + 1] = '^' end\n"
    "  for _ = 1, R(0, 5) do t[#t + 1] = items[R(#items)] .. quants[R(#quants)] end\n"
    "  if R(5) == 1 then t[#t + 1] = '$' end\n"
    "  return table.concat(t)\n"
    "end\n"
    "local function subject()\n"
    "  local t = {}\n"
    "  for _ = 1, R(0, 12) do t[#t + 1] = chars[R(#chars)] end\n"
    "  return table.concat(t)\n"
    "end\n"
    "local function show(ok, ...)\n"
    "  local t = { tostring(ok) }\n"
    "  for i = 1, select('#', ...) do\n"
    "    local v = select(i, ...)\n"
    "    t[#t + 1] = type(v) .. ':' .. tostring(v)\n"
    "  end\n"
    "  return table.concat(t, '|')\n"
    "end\n"
    "local function collect(lib, s, p)\n"
    "  local out = {}\n"
    "  for a, b in lib.gmatch(s, p) do\n"
    "    out[#out + 1] = tostring(a) .. ',' .. tostring(b)\n"
    "    if #out > 50 then break end\n"
    "  end\n"
    "  return table.concat(out, ';')\n"
    "end\n"
    "local repl_t = setmetatable({ a = 'A', ['('] = false }, { __index = function(_, k)\n"
    "  if k == 'b' then return 7 end\n"
    "end })\n"
    "local calls = {\n"
    "  function(lib, s, p) return lib.find(s, p) end,\n"
    "  function(lib, s, p, i) return lib.find(s, p, i) end,\n"
    "  function(lib, s, p, i) return lib.find(s, p, i, true) end,\n"
    "  function(lib, s, p) return lib.match(s, p) end,\n"
    "  function(lib, s, p, i) return lib.match(s, p, i) end,\n"
    "  function(lib, s, p) return collect(lib, s, p) end,\n"
    "  function(lib, s, p) return lib.gsub(s, p, '<%0>') end,\n"
    "  function(lib, s, p) return lib.gsub(s, p, '[%1|%%|%x]', 3) end,\n"
    "  function(lib, s, p) return lib.gsub(s, p, 'end%') end,\n"
    "  function(lib, s, p)\n"
    "    return lib.gsub(s, p, function(a, b) if a == 'b' then return { } end\n"
    "      if a == 'a' then return false end return (a or '') .. '!' end)\n"
    "  end,\n"
    "  function(lib, s, p) return lib.gsub(s, p, repl_t) end,\n"
    "  function(lib, s, p) return lib.gsub(s, p, 42, 2) end,\n"
    "  function(lib, s, p) return lib.gsub(s, p, true) end,\n"
    "}\n"
    "local diffs, cases = {}, 0\n"
    "for _ = 1, 6000 do\n"
    "  local p, s, i = pattern(), subject(), R(-6, 14)\n"
    "  for k, call in ipairs(calls) do\n"
    "    cases = cases + 1\n"
    "    local want = show(pcall(call, orig, s, p, i))\n"
    "    local got = show(pcall(call, new, s, p, i))\n"
    "    if want ~= got and #diffs < 10 then\n"
    "      diffs[#diffs + 1] = string.format('call %d find(%q, %q, %d): want %s, got %s',\n"
    "        k, s, p, i, want, got)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "-- sort: the same order and the same errors\n"
    "for n = 0, 40 do\n"
    "  local a, b = {}, {}\n"
    "  for j = 1, n do local v = R(10) a[j] = v b[j] = v end\n"
    "  orig.sort(a) new.sort(b)\n"
    "  if table.concat(a, ',') ~= table.concat(b, ',') then diffs[#diffs + 1] = 'sort ' .. n end\n"
    "end\n"
    "local e1 = show(pcall(orig.sort, { {}, {} }))\n"
    "local e2 = show(pcall(new.sort, { {}, {} }))\n"
    "if e1 ~= e2 then diffs[#diffs + 1] = 'sort compare: ' .. e1 .. ' / ' .. e2 end\n"
    "e1 = show(pcall(orig.sort, nil)) e2 = show(pcall(new.sort, nil))\n"
    "if e1 ~= e2 then diffs[#diffs + 1] = 'sort nil: ' .. e1 .. ' / ' .. e2 end\n"
    "return cases, table.concat(diffs, '\\n')\n";

static void test_pattern_equivalence(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    /* the originals, then ours in their place */
    lua_newtable(L);
    static const char *const names[] = {"find", "match", "gmatch", "gsub"};
    for (int i = 0; i < 4; i++) {
        lua_getglobal(L, "string");
        lua_getfield(L, -1, names[i]);
        lua_setfield(L, -3, names[i]);
        lua_pop(L, 1);
    }
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_setfield(L, -3, "sort");
    lua_pop(L, 1);
    int orig = lua_gettop(L);
    wr_lua_pattern_inject(L);
    CHECK_INT(luaL_loadbuffer(L, pattern_diff_lua, sizeof(pattern_diff_lua) - 1, "=diff"), 0);
    lua_pushvalue(L, orig);
    if (lua_pcall(L, 1, 2, 0) != 0) {
        fprintf(stderr, "pattern_diff: %s\n", lua_tostring(L, -1));
        CHECK(0);
    } else {
        CHECK(lua_tointeger(L, -2) > 50000);
        CHECK_STR(lua_tostring(L, -1), "");
    }
    lua_close(L);
}

/* Each of the reported runaway C calls, under a 100 ms deadline: stopped as
 * a timeout within the deadline plus a second (measured: the worst is
 * printed), and the state works on. Before, the first ran 5 s and the second
 * 18 s, and both succeeded. */
static const char runaway_src[] =
    "local M = {}\n"
    "local big = {}\n"
    "local calls = {\n"
    "  trim = function(b) return b:match('^%s*(.-)%s*$') end,\n"
    "  find = function() return (string.rep('a', 200)):find('.-.-.-.-b') end,\n"
    "  gsub = function(b) return (b:gsub('(.-)%s*$', '%1')) end,\n"
    "  gmatch = function() for w in (string.rep('a', 200)):gmatch('.-.-.-.-b') do end end,\n"
    "  plain = function()\n"
    "    local h = string.rep('a', 4 * 1024 * 1024)\n"
    "    return h:find(string.rep('a', 100000) .. 'b', 1, true)\n"
    "  end,\n"
    "  plain_short = function()\n"
    "    local h = string.rep('a', 8 * 1024 * 1024)\n"
    "    return h:find(string.rep('a', 4000) .. 'b', 1, true)\n"
    "  end,\n"
    "  sort = function() table.sort(big) end,\n"
    "  encode = function()\n"
    "    local t = { 'x' }\n"
    "    for i = 1, 40 do t = { t, t } end\n"
    "    return require('cjson').encode(t)\n"
    "  end,\n"
    "  quick = function() return ('  x  '):match('^%s*(.-)%s*$') end,\n"
    "}\n"
    "function M.handle(event, ctx)\n"
    "  if event.data.fill then\n"
    "    for i = #big + 1, #big + event.data.fill do big[i] = (i * 7919) % 1000003 end\n"
    "    return\n"
    "  end\n"
    "  local r = calls[event.data.call](event.data.body)\n"
    "  if event.data.call == 'quick' then assert(r == 'x', 'quick match works') end\n"
    "end\n"
    "return M\n";

static void test_runaway_c_calls(void)
{
    const char *path = write_file("runaway.lua", runaway_src);
    wr_lua_opts o = opts_for(path, 100, 0);
    char err[1024];
    wr_lua *L = wr_lua_create(&o, err, sizeof(err));
    CHECK(L != NULL);
    if (L == NULL) {
        fprintf(stderr, "runaway.lua: %s\n", err);
        return;
    }
    wr_lua_result res;
    /* a 40 KB body of spaces between two words */
    size_t n = 40 * 1024;
    char *body = malloc(n + 64);
    int k = snprintf(body, n + 64, "{\"body\":\"a");
    memset(body + k, ' ', n);
    snprintf(body + k + n, 64, "b\",\"call\":\"%%s\"}");
    static const char *const calls[] = {"trim",  "find",        "gsub",   "gmatch",
                                        "plain", "plain_short", "encode", "sort"};
    double worst = 0;
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        if (strcmp(calls[i], "sort") == 0) {
            /* a table of 3.5 million numbers, filled across messages (a
             * module-level cache); under a longer deadline here, as the
             * sanitizers are slow */
            wr_lua_set_limits(L, 10000, 5);
            for (int f = 0; f < 7; f++) {
                run(L, "{\"fill\":500000}", &res);
                CHECK_OUTCOME(res, WR_OUT_OK);
            }
            wr_lua_set_limits(L, 100, 5);
        }
        char *msg = malloc(n + 128);
        snprintf(msg, n + 128, body, calls[i]);
        watch_case(calls[i], 30);
        double t0 = mono_s(), c0 = cpu_s();
        run(L, msg, &res);
        double took = mono_s() - t0, cpu = cpu_s() - c0;
        unwatch();
        free(msg);
        worst = took > worst ? took : worst;
        printf("  runaway %-12s %-8s %6.0f ms  %s\n", calls[i], wr_outcome_name(res.outcome),
               took * 1000, res.error);
        /* the plain searches are linear: they may also finish in time; the
         * encode's bound may pass the memory limit before the deadline */
        if (strcmp(calls[i], "encode") == 0 && res.outcome == WR_OUT_ERROR) {
            CHECK_STR(res.reason, "out-of-memory");
        } else if (strncmp(calls[i], "plain", 5) != 0 || res.outcome != WR_OUT_OK) {
            CHECK_OUTCOME(res, WR_OUT_TIMEOUT);
            CHECK(strstr(res.error, "handler timed out after 100 ms") != NULL);
        }
        CHECK(cpu < 1.1);
        run(L, "{\"call\":\"quick\"}", &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
    }
    printf("  runaway: worst %.0f ms under a 100 ms deadline\n", worst * 1000);
    free(body);
    wr_lua_destroy(L);
}

/* What the deadline cannot interrupt but the memory limit bounds: C calls
 * that copy or scan at most what the state can hold. Their inputs are built
 * across messages (module-level state) under a long deadline; each call then
 * runs under 100 ms and must end (in time, or as a timeout or out of memory
 * right after it) within a second past the deadline. */
static const char bounded_src[] =
    "local cjson = require('cjson')\n"
    "local M = {}\n"
    "local input = {}\n"
    "local prep = {\n"
    "  concat = function()\n"
    "    local t = {} for i = 1, 1000000 do t[i] = 'abcdefghij' end input.concat = t\n"
    "  end,\n"
    "  decode_str = function() input.text = '\"' .. string.rep('x', 12 * 2^20) .. '\"' end,\n"
    "  decode_num = function() input.text = '[' .. string.rep('1,', 2^20) .. '1]' end,\n"
    "  load = function() input.src = 'return ' .. string.rep('1+', 4 * 2^20 - 8) .. '1' end,\n"
    "  upper = function() input.s = string.rep('x', 12 * 2^20) end,\n"
    "}\n"
    "local calls = {\n"
    "  rep = function() return #string.rep('x', 24 * 2^20) end,\n"
    "  concat = function() return #table.concat(input.concat) end,\n"
    "  decode_str = function() return cjson.decode(input.text) end,\n"
    "  decode_num = function() return cjson.decode(input.text) end,\n"
    "  load = function() return load(input.src) end,\n"
    "  upper = function() return #input.s:upper() end,\n"
    "  wrap = function()\n"
    "    local function f(n) if n == 0 then return 0 end return coroutine.wrap(f)(n - 1) end\n"
    "    return f(200000)\n"
    "  end,\n"
    "}\n"
    "function M.handle(event, ctx)\n"
    "  local d = event.data\n"
    "  if d.prep then input = {} return prep[d.prep] and prep[d.prep]() end\n"
    "  return calls[d.call]()\n"
    "end\n"
    "return M\n";

static void test_bounded_c_calls(void)
{
    const char *path = write_file("bounded.lua", bounded_src);
    wr_lua_opts o = opts_for(path, 100, 0);
    char err[1024];
    wr_lua *L = wr_lua_create(&o, err, sizeof(err));
    CHECK(L != NULL);
    if (L == NULL) {
        fprintf(stderr, "bounded.lua: %s\n", err);
        return;
    }
    static const char *const calls[] = {"rep",  "concat", "decode_str", "decode_num",
                                        "load", "upper",  "wrap"};
    wr_lua_result res;
    double worst = 0;
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        char msg[128];
        /* the input, under a long deadline (the sanitizers are slow) */
        wr_lua_set_limits(L, 20000, 5);
        snprintf(msg, sizeof(msg), "{\"prep\":\"%s\"}", calls[i]);
        run(L, msg, &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        wr_lua_set_limits(L, 100, 5);
        snprintf(msg, sizeof(msg), "{\"call\":\"%s\"}", calls[i]);
        watch_case(calls[i], 30);
        double t0 = mono_s(), c0 = cpu_s();
        run(L, msg, &res);
        double took = mono_s() - t0, cpu = cpu_s() - c0;
        unwatch();
        worst = took > worst ? took : worst;
        printf("  bounded %-12s %-8s %6.0f ms (%4.0f ms of CPU)  %s\n", calls[i],
               wr_outcome_name(res.outcome), took * 1000, cpu * 1000, res.error);
        /* ended, and its work bounded by what the state can hold: under the
         * sanitizers the largest (24 MiB) takes about a second of CPU */
        CHECK(cpu < 3.0);
    }
    printf("  bounded: worst %.0f ms under a 100 ms deadline\n", worst * 1000);
    wr_lua_destroy(L);
}

/* cjson behind lua_json.c's guard raises what it raised before, at the
 * handler's line; its settings stay within what the C stack holds. */
static const char cjson_src[] =
    "local cjson, safe = require('cjson'), require('cjson.safe')\n"
    "local M = {}\n"
    "local modes = {}\n"
    "function modes.decode_nil() local x = cjson.decode(nil) end -- @decode_nil\n"
    "function modes.decode_bad() local x = cjson.decode('{bad') end -- @decode_bad\n"
    "function modes.encode_fn() local x = cjson.encode(M.handle) end -- @encode_fn\n"
    "function modes.encode_args() local x = cjson.encode(1, 2) end -- @encode_args\n"
    "function modes.safe()\n"
    "  local v, e = safe.decode('{bad')\n"
    "  assert(v == nil and e == 'Expected object key string but found invalid token at '\n"
    "         .. 'character 2', e)\n"
    "  assert(safe.encode({ a = { 1, 2 } }) == '{\"a\":[1,2]}')\n"
    "  assert(cjson.decode('[1,\"x\",null]')[3] == cjson.null)\n"
    "  assert(cjson.encode_max_depth(100) == 100)\n"
    "end\n"
    "function modes.depth() cjson.decode_max_depth(100000) end -- @depth\n"
    "function modes.new() local c = cjson.new() end -- @new\n"
    "function modes.keep() cjson.encode_keep_buffer(true) end -- @keep\n"
    "function M.handle(event, ctx) return modes[event.data.mode]() end\n"
    "return M\n";

static void test_cjson_guard(void)
{
    wr_lua *L = must_load("cjsonguard.lua", cjson_src);
    if (L == NULL) {
        return;
    }
    const char *hp = path_of("cjsonguard.lua");
    static const struct {
        const char *mode, *marker, *text;
    } cases[] = {
        {"decode_nil", "@decode_nil", "bad argument #1 to 'decode' (string expected, got nil)"},
        {"decode_bad", "@decode_bad",
         "Expected object key string but found invalid token at character 2"},
        {"encode_fn", "@encode_fn", "Cannot serialise function: type not supported"},
        {"encode_args", "@encode_args", "bad argument #1 to 'encode' (expected 1 argument)"},
        {"depth", "@depth", "cjson: a nesting depth must be from 1 to 1000"},
        {"new", "@new", "cjson.new is not available in handlers"},
        {"keep", "@keep", "cjson.encode_keep_buffer is not available in handlers"},
    };
    wr_lua_result res;
    char body[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body), "{\"mode\":\"%s\"}", cases[i].mode);
        run(L, body, &res);
        CHECK_OUTCOME(res, WR_OUT_ERROR);
        CHECK_STR(res.error,
                  fmt("%s:%d: %s", hp, line_of(cjson_src, cases[i].marker), cases[i].text));
    }
    run(L, "{\"mode\":\"safe\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_OK);
    wr_lua_destroy(L);
}

/* ---- memory copied out of the state ------------------------------------------------ */

/* What ctx.publish copies into C memory (outside the state's limit) is
 * bounded per message: 60 publishes of one 8 MiB string grew the process by
 * 480 MB and succeeded. And cjson's encode buffer (malloc'd too) stays within
 * the state's limit: a table that refers 100 times to one 1 MiB string made a
 * 128 MiB buffer. Each case runs in a child, which reports how much its
 * resident size grew. */
static const char copies_src[] =
    "local cjson = require('cjson')\n"
    "local M = {}\n"
    "function M.handle(event, ctx)\n"
    "  local s = string.rep('x', event.data.size)\n"
    "  if event.data.encode then\n"
    "    local t = {}\n"
    "    for i = 1, event.data.encode do t[i] = s end\n"
    "    return #cjson.encode(t)\n"
    "  end\n"
    "  for i = 1, event.data.count do ctx.publish('shop', 'k' .. i, s) end -- @publish\n"
    "end\n"
    "return M\n";

/* A "Vm...:" line of /proc/self/status, in KiB (0 when absent). */
static long proc_status_kib(const char *key)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    while (fp != NULL && fgets(line, sizeof(line), fp) != NULL) {
        if (strncmp(line, key, strlen(key)) == 0) {
            v = strtol(line + strlen(key), NULL, 10);
        }
    }
    if (fp != NULL) {
        fclose(fp);
    }
    return v;
}

/* Run BODY through copies.lua in a child (memory limit MEM, publish cap CAP,
 * 0: defaults): returns how many KiB its peak resident size grew, and the
 * outcome and error through OUT/ERR. */
static long run_in_child(const char *body, size_t mem, size_t cap, wr_outcome *out, char *err,
                         size_t errcap)
{
    int fds[2];
    if (pipe(fds) != 0) {
        exit(2);
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        wr_lua_opts o = opts_for(path_of("copies.lua"), 20000, mem);
        o.max_publish_bytes = cap;
        char e[1024];
        wr_lua *L = wr_lua_create(&o, e, sizeof(e));
        struct {
            long grew;
            int outcome;
            char error[1024];
        } r = {0};
        if (L == NULL) {
            r.outcome = -1;
            snprintf(r.error, sizeof(r.error), "%s", e);
        } else {
            /* the peak resident size of this child alone: reset, then read */
            FILE *fp = fopen("/proc/self/clear_refs", "w");
            if (fp != NULL) {
                fputs("5", fp);
                fclose(fp);
            }
            long before = proc_status_kib("VmRSS:");
            wr_lua_result res;
            run(L, body, &res);
            r.grew = proc_status_kib("VmHWM:") - before;
            r.outcome = res.outcome;
            snprintf(r.error, sizeof(r.error), "%s", res.error);
        }
        ssize_t w = write(fds[1], &r, sizeof(r));
        (void)w;
        _exit(0);
    }
    close(fds[1]);
    struct {
        long grew;
        int outcome;
        char error[1024];
    } r = {0};
    ssize_t got = read(fds[0], &r, sizeof(r));
    close(fds[0]);
    waitpid(pid, NULL, 0);
    CHECK(got == (ssize_t)sizeof(r));
    *out = (wr_outcome)r.outcome;
    snprintf(err, errcap, "%s", r.error);
    return r.grew;
}

static void test_copies_bounded(void)
{
    write_file("copies.lua", copies_src);
    wr_outcome out;
    char err[1024];
    /* 60 x 8 MiB under the default cap (16 MiB per message) */
    long grew = run_in_child("{\"size\":8388608,\"count\":60}", 0, 0, &out, err, sizeof(err));
    printf("  60 publishes of 8 MiB: %s, resident size +%ld MiB\n", wr_outcome_name(out),
           grew / 1024);
    CHECK_INT(out, WR_OUT_ERROR);
    CHECK_STR(err, fmt("%s:%d: ctx.publish: this message's events would exceed "
                       "max_publish_size (16777216 bytes)",
                       path_of("copies.lua"), line_of(copies_src, "@publish")));
    CHECK(grew < 200 * 1024);
    /* a cap of its own, and publishes within it */
    grew = run_in_child("{\"size\":100000,\"count\":9}", 0, 1000000, &out, err, sizeof(err));
    CHECK_INT(out, WR_OUT_OK);
    CHECK_STR(err, "");
    grew = run_in_child("{\"size\":100000,\"count\":10}", 0, 1000000, &out, err, sizeof(err));
    CHECK_INT(out, WR_OUT_ERROR);
    CHECK_STR(err, fmt("%s:%d: ctx.publish: this message's events would exceed "
                       "max_publish_size (1000000 bytes)",
                       path_of("copies.lua"), line_of(copies_src, "@publish")));
    /* cjson: 100 references to one 1 MiB string, 100 MiB of JSON */
    grew = run_in_child("{\"size\":1048576,\"encode\":100}", 0, 0, &out, err, sizeof(err));
    printf("  cjson.encode of 100 MiB of JSON: %s, resident size +%ld MiB\n", wr_outcome_name(out),
           grew / 1024);
    CHECK_INT(out, WR_OUT_ERROR);
    CHECK_STR(err, "not enough memory: the handler exceeded the state's memory limit");
    CHECK(grew < 80 * 1024);
    /* ... and 40 of them, 40 MiB: it fits, and encodes */
    grew = run_in_child("{\"size\":1048576,\"encode\":40}", 0, 0, &out, err, sizeof(err));
    CHECK_INT(out, WR_OUT_OK);
}

/* ---- AMQP short strings ----------------------------------------------------------- */

/* What the broker cannot take (a name longer than 255 bytes, headers past one
 * frame) is refused at ctx.publish, naming the field, instead of costing the
 * connection when the batch publishes. */
static void test_publish_limits(void)
{
    static const char src[] =
        "return { handle = function(event, ctx)\n"
        "  local d, long = event.data, string.rep('x', 256)\n"
        "  local ok = string.rep('y', 255)\n"
        "  if d.what == 'fine' then\n"
        "    ctx.publish(ok, ok, 'b', { type = ok, content_type = ok, headers = { [ok] = 1 } })\n"
        "  elseif d.what == 'exchange' then ctx.publish(long, 'k', 'b')\n"
        "  elseif d.what == 'routing_key' then ctx.publish('', long, 'b')\n"
        "  elseif d.what == 'type' then ctx.publish('', 'k', 'b', { type = long })\n"
        "  elseif d.what == 'content_type' then ctx.publish('', 'k', 'b', { content_type = long "
        "})\n"
        "  elseif d.what == 'header' then ctx.publish('', 'k', 'b', { headers = { [long] = 'v' } "
        "})\n"
        "  elseif d.what == 'headers' then\n"
        "    local h = {}\n"
        "    for i = 1, 70 do h['h' .. i] = string.rep('v', 1000) end\n"
        "    ctx.publish('', 'k', 'b', { headers = h })\n"
        "  end\n"
        "end }\n";
    wr_lua *L = must_load("limits.lua", src);
    if (L == NULL) {
        return;
    }
    wr_lua_result res;
    CHECK_INT(run(L, "{\"what\":\"fine\"}", &res), WR_OUT_OK);
    CHECK_INT(res.pub_count, 1);
    static const struct {
        const char *what, *field;
        int n;
    } cases[] = {{"exchange", "exchange", 256},
                 {"routing_key", "routing_key", 256},
                 {"type", "opts.type", 256},
                 {"content_type", "opts.content_type", 256},
                 {"header", "a name in opts.headers", 256}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[64];
        snprintf(body, sizeof(body), "{\"what\":\"%s\"}", cases[i].what);
        CHECK_INT(run(L, body, &res), WR_OUT_ERROR);
        char want[200];
        snprintf(want, sizeof(want), "ctx.publish: %s is longer than 255 bytes (%d)",
                 cases[i].field, cases[i].n);
        CHECK(strstr(res.error, want) != NULL);
        CHECK_INT(res.pub_count, 0);
    }
    CHECK_INT(run(L, "{\"what\":\"headers\"}", &res), WR_OUT_ERROR);
    CHECK(strstr(res.error, "ctx.publish: opts.headers take more than 65536 bytes") != NULL);
    wr_lua_destroy(L);
}

/* opts.content_type takes the place of a table body's JSON content type in
 * what the message's publishes count against max_publish_size: only the
 * content type the publish goes out with counts. */
static void test_publish_content_type_bytes(void)
{
    static const char src[] = "return { handle = function(event, ctx)\n"
                              "  ctx.publish('', 'k', { a = 1 }, { content_type = 'text/x' })\n"
                              "  ctx.publish('', 'k', string.rep('x', event.data.n))\n"
                              "end }\n";
    wr_lua_opts o = opts_for(write_file("ctbytes.lua", src), 5000, 0);
    o.max_publish_bytes = 100;
    char err[1024];
    wr_lua *L = wr_lua_create(&o, err, sizeof(err));
    CHECK(L != NULL);
    if (L == NULL) {
        return;
    }
    wr_lua_result res;
    /* 'k' + '{"a":1}' + 'text/x' = 14 bytes, then 'k' + 85 bytes: 100 in all */
    CHECK_INT(run(L, "{\"n\":85}", &res), WR_OUT_OK);
    CHECK_INT(res.pub_count, 2);
    CHECK_INT(run(L, "{\"n\":86}", &res), WR_OUT_ERROR);
    CHECK(strstr(res.error, "ctx.publish: this message's events would exceed max_publish_size "
                            "(100 bytes)") != NULL);
    wr_lua_destroy(L);
}

/* ---- the panic function ---------------------------------------------------------- */

/* An error outside every protected call makes LuaJIT call the state's panic
 * function and end the process. wr_lua_panic must log the error first: run
 * it in a child whose log goes to a pipe. */
static void test_panic(void)
{
    int fds[2];
    if (pipe(fds) != 0) {
        exit(2);
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        wr_log_set_fd(fds[1]);
        lua_State *L = luaL_newstate();
        lua_atpanic(L, wr_lua_panic);
        lua_pushstring(L, "boom outside any pcall");
        lua_error(L);
        _exit(0); /* not reached: LuaJIT exits after the panic function */
    }
    close(fds[1]);
    char out[4096];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof(out) - 1 && (r = read(fds[0], out + n, sizeof(out) - 1 - n)) > 0) {
        n += (size_t)r;
    }
    out[n] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    CHECK(strstr(out, "\"level\":\"error\"") != NULL);
    CHECK(strstr(out, "\"msg\":\"Lua panic: an error outside any protected call; the process "
                      "exits\"") != NULL);
    CHECK(strstr(out, "\"error\":\"boom outside any pcall\"") != NULL);
    if (strstr(out, "boom outside any pcall") == NULL) {
        fprintf(stderr, "child wrote: %s\n", out);
    }
}

/* ---- the sandbox ------------------------------------------------------------------ */

static const char sandbox_src[] =
    "local M = {}\n"
    "local p = {}\n"
    "p.os_execute = function() return os.execute('id') end -- @os_execute\n"
    "p.os_exit = function() return os.exit(3) end -- @os_exit\n"
    "p.os_getenv = function() return os.getenv('HOME') end -- @os_getenv\n"
    "p.io_open = function() return io.open('/etc/passwd') end -- @io_open\n"
    "p.ffi = function() local m = require('ffi') return m end -- @ffi\n"
    "p.debug = function() return debug.getinfo(1) end -- @debug\n"
    "p.loadlib = function() return package.loadlib('libc.so.6', 'system') end -- @loadlib\n"
    "p.dofile = function() return dofile('/etc/passwd') end -- @dofile\n"
    "p.loadfile = function() return loadfile('/etc/passwd') end -- @loadfile\n"
    "p.dump = function() return string.dump(M.handle) end -- @dump\n"
    "p.dump_meta = function() return (''):dump() end -- @dump_meta\n"
    "p.bytecode = function()\n"
    "  local f, e = load('\\27LJ\\2\\0\\0garbage')\n"
    "  assert(f == nil)\n"
    "  error(e, 0)\n"
    "end\n"
    "p.bytecode_ls = function()\n"
    "  local f, e = loadstring('\\27LuaQ')\n"
    "  assert(f == nil)\n"
    "  error(e, 0)\n"
    "end\n"
    "p.load_fn = function()\n"
    "  local f, e = load(function() return nil end)\n"
    "  assert(f == nil)\n"
    "  error(e, 0)\n"
    "end\n"
    "p.load_text = function()\n"
    "  local f = assert(load('return 1 + 1'))\n"
    "  assert(f() == 2, 'load of source text works')\n"
    "  local g = assert(load('return io'))\n"
    "  return g()\n"
    "end\n"
    "p.setfenv = function() return setfenv(1, {}) end -- @setfenv\n"
    "p.getfenv = function() return getfenv(1) end -- @getfenv\n"
    "p.getmeta = function()\n"
    "  assert(getmetatable(_G) == false, 'the globals metatable is hidden')\n"
    "  setmetatable(_G, nil) -- @getmeta\n"
    "end\n"
    "p.global_new = function() x = 1 end -- @global_new\n"
    "p.global_read = function() return undeclared_thing end -- @global_read\n"
    "p.global_g = function() _G.y = 2 end -- @global_g\n"
    "p.collect = function() return collectgarbage() end -- @collect\n"
    "p.rawset_g = function() rawset(_G, 'leak', 1) end -- @rawset_g\n"
    "p.xpcall_ok = function()\n"
    "  local ok, a, b = xpcall(function(x, y) return x + y, 'two' end, error, 1, 2)\n"
    "  assert(ok == true and a == 3 and b == 'two', 'xpcall returns the results')\n"
    "  local ok2, e = xpcall(function() error('inner', 0) end,\n"
    "                        function(m) return 'handled ' .. m end)\n"
    "  assert(ok2 == false and e == 'handled inner', 'xpcall runs the message handler')\n"
    "  return 'fine'\n"
    "end\n"
    "p.string_meta = function()\n"
    "  assert(getmetatable('') == false, 'the string metatable is hidden')\n"
    "  assert(('abc'):upper() == 'ABC' and ('a.b'):gsub('%.', '/') == 'a/b', 'methods work')\n"
    "  assert(('x').dump == nil, 'no dump through the string metatable')\n"
    "  return 'fine'\n"
    "end\n"
    "function M.handle(event, ctx)\n"
    "  return p[event.data.mode]()\n"
    "end\n"
    "return M\n";

static void test_sandbox(void)
{
    wr_lua *L = must_load("sandbox.lua", sandbox_src);
    if (L == NULL) {
        return;
    }
    const char *path = path_of("sandbox.lua");
    static const struct {
        const char *mode;
        const char *marker; /* NULL: the error has no position */
        const char *msg;
    } cases[] = {
        {"os_execute", "@os_execute", "attempt to call field 'execute' (a nil value)"},
        {"os_exit", "@os_exit", "attempt to call field 'exit' (a nil value)"},
        {"os_getenv", "@os_getenv", "attempt to call field 'getenv' (a nil value)"},
        {"io_open", "@io_open", "attempt to read undeclared global 'io'"},
        {"debug", "@debug", "attempt to read undeclared global 'debug'"},
        {"loadlib", "@loadlib", "attempt to read undeclared global 'package'"},
        {"dofile", "@dofile", "attempt to read undeclared global 'dofile'"},
        {"loadfile", "@loadfile", "attempt to read undeclared global 'loadfile'"},
        {"dump", "@dump", "attempt to call field 'dump' (a nil value)"},
        {"dump_meta", "@dump_meta", "attempt to call method 'dump' (a nil value)"},
        {"bytecode", NULL, "load: precompiled bytecode is not allowed in handlers"},
        {"bytecode_ls", NULL, "load: precompiled bytecode is not allowed in handlers"},
        {"load_fn", NULL, "load: only source text is accepted (got function)"},
        {"setfenv", "@setfenv", "attempt to read undeclared global 'setfenv'"},
        {"getfenv", "@getfenv", "attempt to read undeclared global 'getfenv'"},
        {"getmeta", "@getmeta", "cannot change a protected metatable"},
        {"global_new", "@global_new",
         "attempt to create global 'x' (handler globals are locked: declare it local)"},
        {"global_read", "@global_read", "attempt to read undeclared global 'undeclared_thing'"},
        {"global_g", "@global_g",
         "attempt to create global 'y' (handler globals are locked: declare it local)"},
        {"collect", "@collect", "attempt to read undeclared global 'collectgarbage'"},
        {"rawset_g", "@rawset_g",
         "attempt to create global 'leak' (handler globals are locked: declare it local)"},
    };
    wr_lua_result res;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[64];
        snprintf(body, sizeof(body), "{\"mode\":\"%s\"}", cases[i].mode);
        run(L, body, &res);
        const char *want =
            cases[i].marker == NULL
                ? cases[i].msg
                : fmt("%s:%d: %s", path, line_of(sandbox_src, cases[i].marker), cases[i].msg);
        if (res.outcome != WR_OUT_ERROR || strcmp(res.error, want) != 0) {
            fprintf(stderr, "sandbox probe %s\n", cases[i].mode);
        }
        CHECK_OUTCOME(res, WR_OUT_ERROR);
        CHECK_STR(res.error, want);
    }

    /* require "ffi" is looked up as a file next to the handler, and is not there */
    run(L, "{\"mode\":\"ffi\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, fmt("%s:%d: module 'ffi' not found: no %s/ffi.lua (handlers may "
                             "require Lua modules from their directory, and cjson)",
                             path, line_of(sandbox_src, "@ffi"), tmp_dir));

    /* source text loaded at run time runs in the sandbox too */
    run(L, "{\"mode\":\"load_text\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, "[string \"return io\"]:1: attempt to read undeclared global 'io'");

    run(L, "{\"mode\":\"string_meta\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_OK);
    run(L, "{\"mode\":\"xpcall_ok\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_OK);

    /* after all that, the globals are still locked and nothing leaked */
    run(L, "{\"mode\":\"global_read\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    wr_lua_destroy(L);
}

/* ---- require ---------------------------------------------------------------------- */

static const char req_src[] =
    "local helper = require 'helper'\n"
    "local util = require 'lib.util'\n"
    "local cjson = require 'cjson'\n"
    "local cjson_safe = require 'cjson.safe'\n"
    "local M = {}\n"
    "function M.handle(event, ctx)\n"
    "  local mode = event.data.mode\n"
    "  if mode == 'missing' then local m = require('nope') end -- @missing\n"
    "  if mode == 'bad_name' then local m = require('../etc/passwd') end -- @bad_name\n"
    "  if mode == 'not_string' then local m = require(42) end -- @not_string\n"
    "  if mode == 'tail' then return require('nope') end\n"
    "  assert(helper.double(21) == 42, 'helper module')\n"
    "  assert(util.shout('hi') == 'HI!', 'nested module')\n"
    "  assert(require('helper') == helper, 'modules are loaded once')\n"
    "  assert(helper.loads == 1, 'module body ran once')\n"
    "  assert(cjson.encode({ 1, 2 }) == '[1,2]', 'cjson')\n"
    "  assert(cjson_safe.decode('{') == nil, 'cjson.safe')\n"
    "end\n"
    "return M\n";

static void test_require(void)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/lib", tmp_dir);
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "mkdir %s: %s\n", path, strerror(errno));
        exit(2);
    }
    write_file("helper.lua", "local H = { loads = 0 }\n"
                             "H.loads = H.loads + 1\n"
                             "function H.double(x) return 2 * x end\n"
                             "return H\n");
    write_file("lib/util.lua", "return { shout = function(s) return s:upper() .. '!' end }\n");
    wr_lua *L = must_load("req.lua", req_src);
    if (L == NULL) {
        return;
    }
    const char *hp = path_of("req.lua");
    wr_lua_result res;
    run(L, "{\"mode\":\"ok\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_OK);
    run(L, "{\"mode\":\"ok\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_OK);

    run(L, "{\"mode\":\"missing\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, fmt("%s:%d: module 'nope' not found: no %s/nope.lua (handlers may "
                             "require Lua modules from their directory, and cjson)",
                             hp, line_of(req_src, "@missing"), tmp_dir));

    run(L, "{\"mode\":\"bad_name\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, fmt("%s:%d: require: bad module name '../etc/passwd'", hp,
                             line_of(req_src, "@bad_name")));

    run(L, "{\"mode\":\"not_string\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, fmt("%s:%d: require: module name must be a string", hp,
                             line_of(req_src, "@not_string")));

    /* in a tail call the caller's frame is gone (LuaJIT): the message, no position */
    run(L, "{\"mode\":\"tail\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, fmt("module 'nope' not found: no %s/nope.lua (handlers may require "
                             "Lua modules from their directory, and cjson)",
                             tmp_dir));
    wr_lua_destroy(L);

    /* a required module with a syntax error fails the load with its own position */
    write_file("broken.lua", "return {\n  = 1\n}\n");
    char err[1024];
    L = load("req_broken.lua", "local b = require 'broken'\nreturn { handle = function() end }\n",
             err, sizeof(err));
    CHECK(L == NULL);
    const char *want = fmt("%s:1: %s:2: ", path_of("req_broken.lua"), path_of("broken.lua"));
    CHECK(strncmp(err, want, strlen(want)) == 0);
    CHECK(strstr(err, "near '='") != NULL);
    wr_lua_destroy(L);
}

/* ---- sources that are not regular files ------------------------------------------ */

/* A FIFO, a symlink to /dev/zero and a file over the size limit, as modules
 * beside a handler and as the handler itself: each is refused at once with
 * its reason; nothing blocks (a FIFO without a writer) or reads without end. */
static void test_source_files(void)
{
    static const char src[] = "local M = {}\n"
                              "function M.handle(event, ctx)\n"
                              "  require(event.data.mod) -- @require\n"
                              "end\n"
                              "return M\n";
    const char *names[] = {"fifo_mod.lua", "zero_mod.lua", "big_mod.lua", "fifo_handler.lua"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        unlink(path_of(names[i]));
    }
    CHECK_INT(mkfifo(path_of("fifo_mod.lua"), 0600), 0);
    CHECK_INT(symlink("/dev/zero", path_of("zero_mod.lua")), 0);
    write_file("big_mod.lua", "return {}\n");
    CHECK_INT(truncate(path_of("big_mod.lua"), (off_t)WR_LUA_MAX_SOURCE + 1), 0);

    watch_case("loading a handler beside a FIFO", 10);
    wr_lua *L = must_load("srcfiles.lua", src);
    unwatch();
    if (L != NULL) {
        const char *hp = path_of("srcfiles.lua");
        int line = line_of(src, "@require");
        wr_lua_result res;
        watch_case("require of a FIFO", 10);
        run(L, "{\"mod\":\"fifo_mod\"}", &res);
        unwatch();
        CHECK_OUTCOME(res, WR_OUT_ERROR);
        CHECK_STR(res.error, fmt("%s:%d: %s: cannot load module: not a regular file", hp, line,
                                 path_of("fifo_mod.lua")));
        watch_case("require of /dev/zero", 10);
        run(L, "{\"mod\":\"zero_mod\"}", &res);
        unwatch();
        CHECK_OUTCOME(res, WR_OUT_ERROR);
        CHECK_STR(res.error, fmt("%s:%d: %s: cannot load module: not a regular file", hp, line,
                                 path_of("zero_mod.lua")));
        run(L, "{\"mod\":\"big_mod\"}", &res);
        CHECK_OUTCOME(res, WR_OUT_ERROR);
        CHECK_STR(res.error, fmt("%s:%d: %s: cannot load module: larger than %u bytes", hp, line,
                                 path_of("big_mod.lua"), (unsigned)WR_LUA_MAX_SOURCE));
        wr_lua_destroy(L);
    }

    /* the version hash skips them: the same version as without them, at once */
    char with[17] = "", without[17] = "";
    watch_case("handler version beside a FIFO and /dev/zero", 10);
    double t0 = mono_s();
    CHECK_INT(wr_handler_version(path_of("srcfiles.lua"), with), 0);
    CHECK(mono_s() - t0 < 1.0);
    unwatch();
    unlink(path_of("fifo_mod.lua"));
    unlink(path_of("zero_mod.lua"));
    unlink(path_of("big_mod.lua"));
    CHECK_INT(wr_handler_version(path_of("srcfiles.lua"), without), 0);
    CHECK_STR(with, without);

    /* source text handed to load: the same size limit as files (parse time) */
    L = must_load("loadbig.lua", "return { handle = function(event, ctx)\n"
                                 "  local f, e = load(string.rep(' ', event.data.n))\n"
                                 "  if not f then error(e, 0) end\n"
                                 "end }\n");
    if (L != NULL) {
        wr_lua_result res;
        char body[64];
        snprintf(body, sizeof(body), "{\"n\":%u}", (unsigned)WR_LUA_MAX_SOURCE + 1);
        run(L, body, &res);
        CHECK_OUTCOME(res, WR_OUT_ERROR);
        CHECK_STR(res.error, fmt("load: source text over %u bytes", (unsigned)WR_LUA_MAX_SOURCE));
        snprintf(body, sizeof(body), "{\"n\":%u}", (unsigned)WR_LUA_MAX_SOURCE);
        run(L, body, &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        wr_lua_destroy(L);
    }

    /* a FIFO as the handler itself */
    CHECK_INT(mkfifo(path_of("fifo_handler.lua"), 0600), 0);
    char err[1024] = "";
    wr_lua_opts o = opts_for(path_of("fifo_handler.lua"), 5000, 0);
    watch_case("a FIFO as the handler", 10);
    L = wr_lua_create(&o, err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("%s: cannot load handler: not a regular file", path_of("fifo_handler.lua")));
    wr_lua_destroy(L);
    char v[17];
    CHECK_INT(wr_handler_version(path_of("fifo_handler.lua"), v), -1);
    unwatch();
    unlink(path_of("fifo_handler.lua"));
}

/* ---- loading ---------------------------------------------------------------------- */

static void test_load_failures(void)
{
    char err[1024];
    const char *path;
    wr_lua *L;

    /* syntax error: "file:line:" then the parser's message */
    path = path_of("syntax.lua");
    L = load("syntax.lua", "local M = {}\nlocal x = = 1\nreturn M\n", err, sizeof(err));
    CHECK(L == NULL);
    CHECK(strncmp(err, fmt("%s:2: ", path), strlen(path) + 4) == 0);
    CHECK(strstr(err, "near '='") != NULL);

    /* a runtime error in the module body */
    path = path_of("body_err.lua");
    L = load("body_err.lua", "local M = {}\n\nerror('top level failure')\nreturn M\n", err,
             sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("%s:3: top level failure", path));

    /* a global created by the module body */
    path = path_of("body_global.lua");
    L = load("body_global.lua", "counter = 0\nreturn { handle = function() end }\n", err,
             sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("%s:1: attempt to create global 'counter' (handler globals are locked: "
                       "declare it local)",
                       path));

    /* not a table */
    path = path_of("number.lua");
    L = load("number.lua", "return 42\n", err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("%s: the handler must return a table with handle(event, ctx), it "
                       "returned number",
                       path));
    path = path_of("nothing.lua");
    L = load("nothing.lua", "local M = {}\n", err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("%s: the handler must return a table with handle(event, ctx), it "
                       "returned nil",
                       path));

    /* a table without handle (a typo), and with handle of the wrong type */
    path = path_of("nohandle.lua");
    L = load("nohandle.lua", "return { hande = function() end }\n", err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("%s: the returned table has no function 'handle' (found nil)", path));
    path = path_of("strhandle.lua");
    L = load("strhandle.lua", "return { handle = 'yes' }\n", err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("%s: the returned table has no function 'handle' (found string)", path));

    /* init: errors, wrong type, publishing from it */
    static const char init_err[] = "local M = {}\n"
                                   "function M.init(ctx)\n"
                                   "  error('no database') -- @init\n"
                                   "end\n"
                                   "function M.handle() end\n"
                                   "return M\n";
    path = path_of("init_err.lua");
    L = load("init_err.lua", init_err, err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("init failed: %s:%d: no database", path, line_of(init_err, "@init")));

    path = path_of("init_num.lua");
    L = load("init_num.lua", "return { init = 5, handle = function() end }\n", err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("%s: 'init' must be a function, found number", path));

    static const char init_pub[] = "local M = {}\n"
                                   "function M.init(ctx)\n"
                                   "  ctx.publish('shop', 'k', 'too early') -- @init_pub\n"
                                   "end\n"
                                   "function M.handle() end\n"
                                   "return M\n";
    path = path_of("init_pub.lua");
    L = load("init_pub.lua", init_pub, err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("init failed: %s:%d: ctx.publish is not available in init (only while "
                       "handling a message)",
                       path, line_of(init_pub, "@init_pub")));

    static const char init_reject[] = "return { init = function(ctx) ctx.reject('x') end,\n"
                                      "         handle = function() end }\n";
    path = path_of("init_rej.lua");
    L = load("init_rej.lua", init_reject, err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("init failed: %s:1: ctx.reject is not available in init (only while "
                       "handling a message)",
                       path));

    /* a working init sees the ctx and can log */
    static const char init_ok[] = "local ready = false\n"
                                  "local M = {}\n"
                                  "function M.init(ctx)\n"
                                  "  assert(ctx.subscription == 'orders')\n"
                                  "  ctx.log.debug('loaded', { version = ctx.handler_version })\n"
                                  "  ready = true\n"
                                  "end\n"
                                  "function M.handle() assert(ready, 'init ran') end\n"
                                  "return M\n";
    L = load("init_ok.lua", init_ok, err, sizeof(err));
    CHECK(L != NULL);
    if (L != NULL) {
        wr_lua_result res;
        run(L, "{}", &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        wr_lua_destroy(L);
    } else {
        fprintf(stderr, "init_ok.lua: %s\n", err);
    }

    /* no such file */
    path = path_of("absent.lua");
    wr_lua_opts o = opts_for(path, 5000, 0);
    L = wr_lua_create(&o, err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("%s: cannot open handler: %s", path, strerror(ENOENT)));

    /* precompiled bytecode as the handler file */
    path = path_of("bytecode.lua");
    L = load("bytecode.lua", "\033LJ\002garbage", err, sizeof(err));
    CHECK(L == NULL);
    CHECK_STR(err, fmt("%s: precompiled bytecode is not accepted as a handler", path));
}

/* ---- state and version ---------------------------------------------------------- */

static void test_state_and_version(void)
{
    static const char counter_src[] =
        "local n = 0\n"
        "return { handle = function(event, ctx)\n"
        "  n = n + 1\n"
        "  if n ~= event.data.expect then error('n is ' .. n, 0) end\n"
        "end }\n";
    wr_lua *L = must_load("counter.lua", counter_src);
    if (L == NULL) {
        return;
    }
    wr_lua_result res;
    run(L, "{\"expect\":1}", &res);
    CHECK_OUTCOME(res, WR_OUT_OK);
    run(L, "{\"expect\":2}", &res);
    CHECK_OUTCOME(res, WR_OUT_OK);
    run(L, "{\"expect\":5}", &res); /* the third call: n is 3 */
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, "n is 3");
    run(L, "{\"expect\":4}", &res); /* a failed call still counted */
    CHECK_OUTCOME(res, WR_OUT_OK);

    /* the version: 12 lowercase hex digits of FNV-1a 64 of the file */
    char v[32];
    snprintf(v, sizeof(v), "%s", wr_lua_version(L));
    CHECK_INT(strlen(v), 12);
    CHECK_INT(strspn(v, "0123456789abcdef"), 12);
    char want[32];
    snprintf(want, sizeof(want), "%012llx",
             (unsigned long long)(fnv1a64(counter_src, strlen(counter_src)) & 0xFFFFFFFFFFFFULL));
    CHECK_STR(v, want);

    /* a second state of the same file: fresh module state, same version */
    char err[1024];
    wr_lua *L2 = load("counter.lua", counter_src, err, sizeof(err));
    CHECK(L2 != NULL);
    if (L2 != NULL) {
        run(L2, "{\"expect\":1}", &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        CHECK_STR(wr_lua_version(L2), v);
        wr_lua_destroy(L2);
    }

    /* a changed file has another version */
    static const char changed[] = "local n = 100\n"
                                  "return { handle = function(event, ctx)\n"
                                  "  n = n + 1\n"
                                  "  if n ~= event.data.expect then error('n is ' .. n, 0) end\n"
                                  "end }\n";
    L2 = load("counter.lua", changed, err, sizeof(err));
    CHECK(L2 != NULL);
    if (L2 != NULL) {
        CHECK(strcmp(wr_lua_version(L2), v) != 0);
        snprintf(want, sizeof(want), "%012llx",
                 (unsigned long long)(fnv1a64(changed, strlen(changed)) & 0xFFFFFFFFFFFFULL));
        CHECK_STR(wr_lua_version(L2), want);
        run(L2, "{\"expect\":101}", &res);
        CHECK_OUTCOME(res, WR_OUT_OK);
        wr_lua_destroy(L2);
    }
    /* the old state keeps its version and its module state */
    CHECK_STR(wr_lua_version(L), v);
    run(L, "{\"expect\":5}", &res);
    CHECK_OUTCOME(res, WR_OUT_OK);
    wr_lua_destroy(L);
}

/* The FNV-1a reference implementation above, against published test vectors. */
static void test_fnv_reference(void)
{
    CHECK(fnv1a64("", 0) == 0xcbf29ce484222325ULL);
    CHECK(fnv1a64("a", 1) == 0xaf63dc4c8601ec8cULL);
    CHECK(fnv1a64("foobar", 6) == 0x85944171f73967e8ULL);
}

/* Remove the temporary directory and what the tests wrote into it. */
static void cleanup(void)
{
    static const char *const files[] = {
        "ok.lua",
        "ok2.lua",
        "ok3.lua",
        "pub.lua",
        "err.lua",
        "loop.lua",
        "loop_body.lua",
        "hog.lua",
        "sandbox.lua",
        "helper.lua",
        "lib/util.lua",
        "req.lua",
        "broken.lua",
        "req_broken.lua",
        "syntax.lua",
        "body_err.lua",
        "body_global.lua",
        "number.lua",
        "nothing.lua",
        "nohandle.lua",
        "strhandle.lua",
        "init_err.lua",
        "init_num.lua",
        "init_pub.lua",
        "init_rej.lua",
        "init_ok.lua",
        "bytecode.lua",
        "counter.lua",
        "srcfiles.lua",
        "cache.lua",
        "mm_raise.lua",
        "mm_loop.lua",
        "mm_limits.lua",
        "mm_index_loop.lua",
        "mm_index_raise.lua",
        "cstack.lua",
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        unlink(path_of(files[i]));
    }
    rmdir(path_of("lib"));
    rmdir(tmp_dir);
}

/* ---- where a ctx error says it came from -------------------------------------- */

/* A ctx function's error names the handler's line that made the call, also
 * through pcall and when a tail call replaced the function that made it (the
 * line of the call into that function); with no handler frame left at all
 * (handle's own tail call), the message has no position. */
static const char where_src[] = "local M = {}\n"
                                "function M.handle(event, ctx)\n"
                                "  local m = event.data.mode\n"
                                "  if m == 'direct' then\n"
                                "    ctx.publish(1, 'k', 'b') -- @direct\n"
                                "  elseif m == 'pcall' then\n"
                                "    local ok, err = pcall(ctx.publish, 1, 'k', 'b') -- @pcall\n"
                                "    error(err, 0)\n"
                                "  elseif m == 'tail' then\n"
                                "    local function f() return ctx.publish(1, 'k', 'b') end\n"
                                "    local r = f() -- @tail\n"
                                "    return r\n"
                                "  end\n"
                                "  return ctx.publish(1, 'k', 'b')\n"
                                "end\n"
                                "return M\n";

static void test_error_where(void)
{
    wr_lua *L = must_load("where.lua", where_src);
    if (L == NULL) {
        return;
    }
    const char *path = path_of("where.lua");
    const char *msg = "ctx.publish: exchange must be a string (\"\" for the default exchange), "
                      "got number";
    wr_lua_result res;
    const char *modes[] = {"direct", "pcall", "tail"};
    for (int i = 0; i < 3; i++) {
        char body[64], marker[16];
        snprintf(body, sizeof(body), "{\"mode\":\"%s\"}", modes[i]);
        snprintf(marker, sizeof(marker), "@%s", modes[i]);
        run(L, body, &res);
        CHECK_OUTCOME(res, WR_OUT_ERROR);
        CHECK_STR(res.error, fmt("%s:%d: %s", path, line_of(where_src, marker), msg));
    }
    run(L, "{\"mode\":\"gone\"}", &res);
    CHECK_OUTCOME(res, WR_OUT_ERROR);
    CHECK_STR(res.error, msg);
    wr_lua_destroy(L);
}

int main(void)
{
    char tmpl[] = "/tmp/wr-lua-XXXXXX";
    if (mkdtemp(tmpl) == NULL || realpath(tmpl, tmp_dir) == NULL) {
        fprintf(stderr, "cannot create a temporary directory: %s\n", strerror(errno));
        return 2;
    }
    /* LuaJIT keeps 60 bytes of a chunk name: longer paths would be shortened in
     * error messages, and the expected texts here use the whole path */
    if (strlen(tmp_dir) > 30) {
        fprintf(stderr, "temporary directory path too long: %s\n", tmp_dir);
        return 2;
    }
    test_publish_limits();
    std_headers[0].key = B("x-warren-attempt");
    std_headers[0].value.kind = AMQP_FIELD_KIND_I32;
    std_headers[0].value.value.i32 = 2;
    std_headers[1].key = B("tenant");
    std_headers[1].value.kind = AMQP_FIELD_KIND_UTF8;
    std_headers[1].value.value.bytes = B("acme");

    /* first: its children measure their resident size, which memory this
     * process freed earlier (resident, reused by malloc) would hide */
    test_copies_bounded();
    test_fnv_reference();
    test_ok();
    test_publish();
    test_publish_content_type_bytes();
    test_errors();
    test_timeouts();
    test_memory();
    test_memory_outside_call();
    test_metamethods();
    test_panic();
    test_cstack();
    test_small_stacks();
    test_pattern_equivalence();
    test_runaway_c_calls();
    test_bounded_c_calls();
    test_cjson_guard();
    test_sandbox();
    test_require();
    test_load_failures();
    test_source_files();
    test_state_and_version();
    test_error_where();
    cleanup();
    return check_report("test_lua_rt");
}
