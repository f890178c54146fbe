/*
 * wr_lua_upcast (lua_rt.h): upcasters run in the handler's Lua state, each
 * in a sandbox of its own (no io, os.execute, load of bytecode), compiled
 * once per state, chained in order, under the handler's timeout; every
 * failure is reported with the step and the upcaster's file and line.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "check.h"
#include "lua_rt.h"

static char dir[128];

static const char *put(const char *name, const char *text)
{
    static char paths[8][256];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *fp = fopen(p, "w");
    fputs(text, fp);
    fclose(fp);
    return p;
}

static wr_lua_upcaster step(int64_t from, const char *path, const char *src)
{
    return (wr_lua_upcaster){.from = from, .path = path, .src = src, .len = strlen(src)};
}

/* Upcast BODY through N steps: the JSON, or "error: <err>". */
static const char *upcast(wr_lua *L, const wr_lua_upcaster *s, int n, const char *body)
{
    static char out[1200];
    char *res = NULL, err[1024];
    size_t len = 0;
    if (wr_lua_upcast(L, s, n, "order.created", body, strlen(body), &res, &len, err, sizeof err) !=
        0) {
        snprintf(out, sizeof out, "error: %s", err);
        CHECK(res == NULL);
    } else {
        snprintf(out, sizeof out, "%s", res);
        CHECK_INT(len, strlen(res));
        free(res);
    }
    return out;
}

/* GOT and WANT hold the same JSON value (cjson orders members as its hash does). */
#define CHECK_JSON(got, want)                                                                      \
    do {                                                                                           \
        const char *g_ = (got);                                                                    \
        json_t *a_ = json_loads(g_, 0, NULL), *b_ = json_loads((want), 0, NULL);                   \
        check_count++;                                                                             \
        if (!a_ || !b_ || !json_equal(a_, b_)) {                                                   \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: got %s, want %s\n", __FILE__, __LINE__, g_, (want));           \
        }                                                                                          \
        json_decref(a_);                                                                           \
        json_decref(b_);                                                                           \
    } while (0)

static const char *V1 = "local calls = 0\n"
                        "return function(data, info)\n"
                        "  calls = calls + 1\n"
                        "  return { id = data.id, v = info.to, from = info.from, t = info.type,\n"
                        "           calls = calls }\n"
                        "end\n";
static const char *V2 = "return function(data)\n"
                        "  data.seen_by_v2 = true\n"
                        "  return data\n"
                        "end\n";

/* A worker's thread: the state was made (and its init run) on the main thread. */
typedef struct {
    wr_lua *L;
    const wr_lua_upcaster *chain;
    char got[512];
} on_thread;

static void *upcast_on_thread(void *ud)
{
    on_thread *t = ud;
    snprintf(t->got, sizeof t->got, "%s", upcast(t->L, t->chain, 2, "{\"id\": \"o-t\"}"));
    return NULL;
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/wr-test-upcast-XXXXXX");
    if (!mkdtemp(dir)) {
        return 2;
    }
    const char *h = put("h.lua", "return { handle = function(event, ctx) end }\n");
    wr_lua_opts o = {
        .handler_path = h, .subscription = "s", .queue = "q", .timeout_ms = 200, .max_attempts = 1};
    char err[1024];
    wr_lua *L = wr_lua_create(&o, err, sizeof err);
    if (!L) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const char *p1 = put("v1.lua", V1), *p2 = put("v2.lua", V2);
    wr_lua_upcaster chain[2] = {step(1, p1, V1), step(2, p2, V2)};
    CHECK_JSON(upcast(L, chain, 2, "{\"id\": \"o-1\", \"old\": 1}"),
               "{\"v\":2,\"calls\":1,\"id\":\"o-1\",\"seen_by_v2\":true,\"t\":\"order.created\","
               "\"from\":1}");
    /* compiled once: the file's globals persist in its sandbox between events */
    CHECK_JSON(upcast(L, chain, 1, "{\"id\": \"o-2\"}"),
               "{\"v\":2,\"calls\":2,\"id\":\"o-2\",\"t\":\"order.created\",\"from\":1}");
    /* no steps: the body as cjson re-encodes it */
    CHECK_JSON(upcast(L, chain, 0, "{\"a\": [1, 2]}"), "{\"a\":[1,2]}");

    const char *raise = "return function(data)\n  error('no customer in ' .. data.id)\nend\n";
    wr_lua_upcaster r[1] = {step(1, put("raise.lua", raise), raise)};
    char want[600];
    snprintf(want, sizeof want, "error: v1 -> v2: %s/raise.lua:2: no customer in o-1", dir);
    CHECK_STR(upcast(L, r, 1, "{\"id\": \"o-1\"}"), want);

    const char *io = "return function(data)\n  local f = io.open('/etc/passwd')\n"
                     "  return data\nend\n";
    wr_lua_upcaster s[1] = {step(1, put("io.lua", io), io)};
    const char *got = upcast(L, s, 1, "{}");
    CHECK(strstr(got, "io.lua:2:") != NULL && strstr(got, "'io'") != NULL);
    if (strstr(got, "'io'") == NULL) {
        fprintf(stderr, "sandbox: %s\n", got);
    }

    const char *loop = "return function(data)\n  while true do end\nend\n";
    wr_lua_upcaster t[1] = {step(1, put("loop.lua", loop), loop)};
    snprintf(want, sizeof want, "error: v1 -> v2: %s/loop.lua:2: handler timed out after 200 ms",
             dir);
    CHECK_STR(upcast(L, t, 1, "{}"), want);
    /* the state is usable after a timeout */
    CHECK_JSON(upcast(L, chain + 1, 1, "{\"x\": 1}"), "{\"x\":1,\"seen_by_v2\":true}");

    const char *nil = "return function(data) end\n";
    wr_lua_upcaster n1[1] = {step(3, put("nil.lua", nil), nil)};
    snprintf(want, sizeof want, "error: v3 -> v4: %s/nil.lua returned nil, not the event's data",
             dir);
    CHECK_STR(upcast(L, n1, 1, "{}"), want);

    const char *notfn = "return 42\n";
    wr_lua_upcaster nf = step(1, put("notfn.lua", notfn), notfn);
    CHECK_INT(wr_lua_upcaster_compile(L, &nf, err, sizeof err), -1);
    snprintf(want, sizeof want,
             "%s/notfn.lua: an upcaster must return a function(data, info), it returned number",
             dir);
    CHECK_STR(err, want);
    CHECK_INT(wr_lua_upcaster_compile(L, &chain[0], err, sizeof err), 0);
    CHECK_STR(upcast(L, chain, 1, "not json"),
              "error: the body is not valid JSON: Expected value but found invalid token at "
              "character 1");

    /* on another thread than the one that made the state (a worker's upcast before its
     * first handler call): the C stack limit is that thread's */
    wr_lua *L2 = wr_lua_create(&o, err, sizeof err);
    on_thread th_args = {.L = L2, .chain = chain};
    pthread_t th;
    CHECK_INT(L2 != NULL && pthread_create(&th, NULL, upcast_on_thread, &th_args) == 0, 1);
    if (L2 != NULL) {
        pthread_join(th, NULL);
        CHECK_JSON(th_args.got, "{\"id\":\"o-t\",\"v\":2,\"from\":1,\"t\":\"order.created\","
                                "\"calls\":1,\"seen_by_v2\":true}");
        wr_lua_destroy(L2);
    }

    /* a reloaded upcaster (same file, new source) runs its new source in a state that
     * ran the old one (a reload keeps the worker's state when the handler is the same) */
    const char *r1 = "return function(d) d.by = 'first' return d end\n";
    const char *r2 = "return function(d) d.by = 'second' return d end\n";
    const char *rp = put("reloaded.lua", r1);
    wr_lua_upcaster before[1] = {step(1, rp, r1)}, after[1] = {step(1, rp, r2)};
    CHECK_JSON(upcast(L, before, 1, "{}"), "{\"by\":\"first\"}");
    CHECK_JSON(upcast(L, after, 1, "{}"), "{\"by\":\"second\"}");
    wr_lua_destroy(L);
    return check_report("test_upcast");
}
