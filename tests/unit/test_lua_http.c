/*
 * test_lua_http.c: unit tests for ctx.http.request (lua_http) through its
 * transport seam, with no network.
 *
 * A handler runs in a real Lua state (wr_lua_create) whose wr_lua_opts.http_send
 * is a recording transport: it keeps what ctx.http built (method, URL, header
 * lines, body, timeout) and answers with whatever the case sets up (a
 * response head and body, a transport error, a refusal). The handler
 * publishes what it got back, or the error it caught, so each case checks
 * both sides of the seam.
 *
 * Covered: the request as built (default method, JSON body with its
 * Content-Type, the message's traceparent as a new span, the timeout capped
 * by the handler's deadline); a header line of exactly WR_HTTP_MAX_HEADER_LINE
 * bytes sent whole, one byte more refused with the kit's text (it used to be
 * cut at 4095 bytes without a word); the response (status, lowercased
 * headers, body, json decoded only for JSON types); transport errors raised
 * or returned (raise = false) and a 5xx raised with its reason phrase, all
 * with the URL's userinfo masked and its query dropped; a refusal raised even
 * with raise = false; wr_http_safe_url on the shapes of URL it must mask.
 */
#define _XOPEN_SOURCE 700

#include "lua_http.h"
#include "lua_rt.h"

#include "check.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmp_dir[PATH_MAX];
static char handler_path[256];

/* ---- the recording transport ------------------------------------------------ */

typedef struct {
    /* what ctx.http sent */
    int calls;
    char method[16];
    char url[512];
    char headers[8][5000];
    int header_count;
    char body[256];
    int has_body;
    int64_t timeout_ms;
    /* what to answer */
    int rc;
    long status;
    const char *head;
    const char *body_out;
    const char *error;
} recorder;

static recorder rec;

static int record_send(void *ud, struct lua_State *L, const wr_http_req *req, wr_http_resp *resp)
{
    (void)L;
    recorder *r = ud;
    r->calls++;
    snprintf(r->method, sizeof(r->method), "%s", req->method);
    snprintf(r->url, sizeof(r->url), "%s", req->url);
    r->header_count = req->header_count < 8 ? req->header_count : 8;
    for (int i = 0; i < r->header_count; i++) {
        snprintf(r->headers[i], sizeof(r->headers[i]), "%s", req->headers[i]);
    }
    r->has_body = req->body != NULL;
    snprintf(r->body, sizeof(r->body), "%.*s", (int)req->body_len, req->body ? req->body : "");
    r->timeout_ms = req->timeout_ms;
    if (r->rc != WR_HTTP_OK) {
        resp->error = r->error;
        return r->rc;
    }
    resp->status = r->status;
    resp->head = r->head;
    resp->head_len = r->head ? strlen(r->head) : 0;
    resp->body = r->body_out;
    resp->body_len = r->body_out ? strlen(r->body_out) : 0;
    return WR_HTTP_OK;
}

/* Answer the next request with STATUS, HEAD and BODY. */
static void answer(long status, const char *head, const char *body)
{
    memset(&rec, 0, sizeof(rec));
    rec.rc = WR_HTTP_OK;
    rec.status = status;
    rec.head = head;
    rec.body_out = body;
}

/* Fail the next request with RC and ERROR. */
static void fail(int rc, const char *error)
{
    memset(&rec, 0, sizeof(rec));
    rec.rc = rc;
    rec.error = error;
}

/* The recorded header line starting with PREFIX, or NULL. */
static const char *header_line(const char *prefix)
{
    for (int i = 0; i < rec.header_count; i++) {
        if (strncmp(rec.headers[i], prefix, strlen(prefix)) == 0) {
            return rec.headers[i];
        }
    }
    return NULL;
}

/* ---- the handler ----------------------------------------------------------------- */

/* Calls ctx.http.request with the options in the message's "opts" (the big
 * header built here: JSON is not the place for 4 KB) and publishes, as text,
 * what it returned or the error it raised. */
static const char handler_src[] =
    "local cjson = require 'cjson'\n"
    "local M = {}\n"
    "function M.handle(event, ctx)\n"
    "  local o = event.data.opts\n"
    "  if event.data.big then\n"
    "    o.headers = { ['X-Big'] = string.rep('v', event.data.big - 7) }\n"
    "  end\n"
    "  local ok, res, err = pcall(function()\n"
    "    local r, e = ctx.http.request(o) -- CALL (not a tail call: that would hide the line)\n"
    "    return r, e\n"
    "  end)\n"
    "  if not ok then return ctx.publish('', 'out', 'raised: ' .. res) end\n"
    "  if not res then return ctx.publish('', 'out', 'returned: ' .. err) end\n"
    "  ctx.publish('', 'out', table.concat({ res.status, res.headers['content-type'] or '',\n"
    "    res.headers['x-thing'] or '', res.body,\n"
    "    res.json and cjson.encode(res.json) or 'none' }, '|'))\n"
    "end\n"
    "return M\n";

static int call_line(void)
{
    const char *at = strstr(handler_src, "-- CALL");
    int line = 1;
    for (const char *p = handler_src; p < at; p++) {
        line += *p == '\n';
    }
    return line;
}

static wr_lua *load_handler(int64_t timeout_ms)
{
    snprintf(handler_path, sizeof(handler_path), "%.200s/h.lua", tmp_dir);
    FILE *fp = fopen(handler_path, "wb");
    if (fp == NULL) {
        fprintf(stderr, "cannot write %s\n", handler_path);
        exit(2);
    }
    fputs(handler_src, fp);
    fclose(fp);
    wr_lua_opts o;
    memset(&o, 0, sizeof(o));
    o.handler_path = handler_path;
    o.subscription = "pay";
    o.queue = "pay.q";
    o.timeout_ms = timeout_ms;
    o.max_attempts = 5;
    o.http_send = record_send;
    o.http_ud = &rec;
    char err[1024];
    wr_lua *L = wr_lua_create(&o, err, sizeof(err));
    if (L == NULL) {
        fprintf(stderr, "cannot load the handler: %s\n", err);
        exit(2);
    }
    return L;
}

static amqp_bytes_t B(const char *s)
{
    return (amqp_bytes_t){strlen(s), (void *)s};
}

/* Run the handler on BODY; returns the published JSON ("" when nothing was
 * published, with the outcome's error printed). */
static const char *run(wr_lua *L, const char *body)
{
    static char out[8192];
    wr_envelope env;
    memset(&env, 0, sizeof(env));
    env.id = B("m-1");
    env.body = B(body);
    env.content_type = B("application/json");
    env.is_json = 1;
    env.attempt = 1;
    wr_lua_call call = {
        .idempotency_key = "pay:m-1", .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736", .attempt = 1};
    wr_lua_result res;
    wr_lua_handle(L, &env, &call, &res);
    if (res.outcome != WR_OUT_OK || res.pub_count != 1) {
        fprintf(stderr, "handler failed: %s\n", res.error);
        return "";
    }
    snprintf(out, sizeof(out), "%.*s", (int)res.pubs[0].body_len, res.pubs[0].body);
    return out;
}

/* The expected report of an error raised at the call: "raised: FILE:LINE: TEXT". */
static const char *raised(const char *text)
{
    static char buf[4][2400];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof(buf[0]), "raised: %s:%d: %s", handler_path, call_line(), text);
    return b;
}

/* ---- cases --------------------------------------------------------------------------- */

static void test_request_built(void)
{
    wr_lua *L = load_handler(5000);
    answer(200, "HTTP/1.1 200 OK\r\n", "");
    run(L, "{\"opts\":{\"url\":\"http://svc/a\",\"body\":{\"n\":1},\"timeout\":60}}");
    CHECK_INT(rec.calls, 1);
    CHECK_STR(rec.method, "GET");
    CHECK_STR(rec.url, "http://svc/a");
    CHECK_STR(rec.body, "{\"n\":1}");
    CHECK_STR(header_line("Content-Type:"), "Content-Type: application/json");
    const char *tp = header_line("traceparent:");
    CHECK(tp != NULL && strncmp(tp, "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-", 49) == 0);
    CHECK(rec.timeout_ms > 4000 && rec.timeout_ms <= 5000); /* 60 s capped by the deadline */
    CHECK(header_line("Expect:") == NULL); /* libcurl's business, not the request's */

    answer(204, "HTTP/1.1 204 No Content\r\n", "");
    run(L, "{\"opts\":{\"url\":\"http://svc/b\",\"method\":\"DELETE\","
           "\"headers\":{\"traceparent\":\"mine\"}}}");
    CHECK_STR(rec.method, "DELETE");
    CHECK(!rec.has_body);
    CHECK(rec.timeout_ms > 4000 && rec.timeout_ms <= 5000); /* the default 5 s, capped */
    CHECK_STR(header_line("traceparent:"), "traceparent: mine");
    CHECK(header_line("Content-Type:") == NULL);
    wr_lua_destroy(L);
}

static void test_header_size(void)
{
    wr_lua *L = load_handler(5000);
    char body[128];
    /* "X-Big: " is 7 bytes: the whole line is exactly the limit */
    answer(200, "HTTP/1.1 200 OK\r\n", "");
    snprintf(body, sizeof(body), "{\"opts\":{\"url\":\"http://svc/h\"},\"big\":%d}",
             WR_HTTP_MAX_HEADER_LINE);
    run(L, body);
    const char *line = header_line("X-Big:");
    CHECK_INT(line ? (long long)strlen(line) : -1, WR_HTTP_MAX_HEADER_LINE);

    answer(200, "HTTP/1.1 200 OK\r\n", "");
    snprintf(body, sizeof(body), "{\"opts\":{\"url\":\"http://svc/h\"},\"big\":%d}",
             WR_HTTP_MAX_HEADER_LINE + 1);
    CHECK_STR(run(L, body),
              raised("ctx.http.request{...}: header 'X-Big' is longer than 4096 bytes"));
    CHECK_INT(rec.calls, 0); /* nothing sent */
    wr_lua_destroy(L);
}

static void test_response(void)
{
    wr_lua *L = load_handler(5000);
    answer(201, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Thing: yes\r\n",
           "{\"id\":\"p-1\"}");
    CHECK_STR(run(L, "{\"opts\":{\"url\":\"http://svc/c\",\"method\":\"POST\"}}"),
              "201|application/json|yes|{\"id\":\"p-1\"}|{\"id\":\"p-1\"}");
    /* not a JSON type: no json; a bare LF head is read too */
    answer(200, "HTTP/1.1 200 OK\nContent-Type: text/plain\n", "{\"id\":1}");
    CHECK_STR(run(L, "{\"opts\":{\"url\":\"http://svc/c\"}}"), "200|text/plain||{\"id\":1}|none");
    /* a 5xx with raise = false is returned as it is */
    answer(503, "HTTP/1.1 503 Service Unavailable\r\n", "busy");
    CHECK_STR(run(L, "{\"opts\":{\"url\":\"http://svc/c\",\"raise\":false}}"), "503|||busy|none");
    wr_lua_destroy(L);
}

static void test_errors_mask_urls(void)
{
    wr_lua *L = load_handler(5000);
    const char *opts = "{\"opts\":{\"url\":\"http://admin:s3cr3t@svc:8080/pay?api_key=k3y\"}}";
    fail(WR_HTTP_FAILED, "Couldn't connect to server");
    CHECK_STR(run(L, opts), raised("http GET http://***@svc:8080/pay?...: "
                                   "Couldn't connect to server"));
    CHECK_STR(rec.url, "http://admin:s3cr3t@svc:8080/pay?api_key=k3y"); /* sent as given */

    fail(WR_HTTP_FAILED, "Timeout was reached");
    const char *ret = run(L, "{\"opts\":{\"url\":\"https://tok@svc/p#frag\",\"raise\":false}}");
    CHECK_STR(ret, "returned: http GET https://***@svc/p#...: Timeout was reached");

    answer(503, "HTTP/1.1 503 Service Unavailable\r\n", "");
    CHECK_STR(run(L, opts),
              raised("http GET http://***@svc:8080/pay?...: 503 Service Unavailable"));
    answer(502, "HTTP/1.1 502\r\n", "");
    CHECK_STR(run(L, opts), raised("http GET http://***@svc:8080/pay?...: 502"));

    /* argument errors that show the URL mask it too */
    CHECK_STR(run(L, "{\"opts\":{\"url\":\"ftp://u:pw@svc/?k=v\"}}"),
              raised("ctx.http.request{...}: url 'ftp://***@svc/?...' does not "
                     "start with http:// or https://"));

    /* a refusal is raised whatever raise says, and as the transport wrote it */
    fail(WR_HTTP_REFUSED, "http GET http://svc/x: no fake");
    CHECK_STR(run(L, "{\"opts\":{\"url\":\"http://svc/x\",\"raise\":false}}"),
              raised("http GET http://svc/x: no fake"));
    wr_lua_destroy(L);
}

static void test_safe_url(void)
{
    static const struct {
        const char *url, *want;
    } cases[] = {
        {"http://svc/a/b", "http://svc/a/b"},
        {"http://admin:s3cr3t@svc/p", "http://***@svc/p"},
        {"http://token@svc", "http://***@svc"},
        {"https://svc/p?api_key=k", "https://svc/p?..."},
        {"https://svc/p#frag", "https://svc/p#..."},
        {"http://a:b@svc:81/p?q=1#f", "http://***@svc:81/p?..."},
        /* an '@' in the password: the last '@' ends the userinfo */
        {"http://u:p@ss@svc/", "http://***@svc/"},
        /* a '/' in the password (not a valid URL): still masked */
        {"http://u:pa/ss@svc/", "http://***@svc/"},
        /* an '@' in the query is not userinfo */
        {"http://svc/p?to=a@b", "http://svc/p?..."},
        /* no scheme, and "://" inside the password */
        {"admin:pa://ss@svc/p", "***@svc/p"},
        {"", ""},
    };
    char out[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK_STR(wr_http_safe_url(cases[i].url, out, sizeof(out)), cases[i].want);
    }
    /* a small buffer cuts the tail, never unmasks */
    CHECK_STR(wr_http_safe_url("http://admin:s3cr3t@svc/p", out, 11), "http://***");
}

int main(void)
{
    char tmpl[] = "/tmp/wr-http-XXXXXX";
    if (mkdtemp(tmpl) == NULL || realpath(tmpl, tmp_dir) == NULL) {
        fprintf(stderr, "cannot create a temporary directory: %s\n", strerror(errno));
        return 2;
    }
    test_safe_url();
    test_request_built();
    test_header_size();
    test_response();
    test_errors_mask_urls();
    unlink(handler_path);
    rmdir(tmp_dir);
    return check_report("test_lua_http");
}
