/*
 * lua_http: ctx.http.request, the handler's HTTP client (libcurl).
 *
 * The common case is the service beside the sidecar, on localhost: create an
 * order, charge a payment, passing ctx.idempotency_key so the service can
 * deduplicate. A call is synchronous and bounded: its timeout is the one
 * asked for (default 5 s) but never more than the handler's time left, so a
 * slow service cannot stretch a handler past its deadline. The W3C
 * traceparent of the message (a new span of its trace) is sent along unless
 * the handler sets one.
 *
 * Failures: by default (raise = true) a transport error or a 5xx raises an
 * error, which warren retries like any handler error; 4xx responses are
 * returned for the handler to judge (a 409 may mean "not yet", a 422 "never").
 * With raise = false, transport errors return nil, err and 5xx responses are
 * returned as they are.
 *
 * One curl handle per Lua state (so per worker), kept for connection reuse and
 * closed with the state (a userdata with __gc in the registry).
 *
 * The request is built once, here, and handed to a transport (lua_http.h):
 * libcurl in the sidecar, the event file's fakes under `warren exec`. Error
 * texts show URLs through wr_http_safe_url (no userinfo, no query string).
 */
#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "contract.h"
#include "lua_api.h"
#include "lua_http.h"

#define MAX_BODY (8u << 20) /* response bytes kept */
#define DEFAULT_TIMEOUT_MS 5000

typedef struct {
    CURL *curl;
    char *buf; /* response body */
    size_t len, cap;
    int too_big;
    char *hdr; /* raw response headers of the last response */
    size_t hlen, hcap;
    unsigned seq; /* for span ids */
} http_state;

static int http_gc(lua_State *L)
{
    http_state *h = lua_touserdata(L, 1);
    if (h->curl != NULL) {
        curl_easy_cleanup(h->curl);
    }
    free(h->buf);
    free(h->hdr);
    memset(h, 0, sizeof(*h));
    return 0;
}

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap) {
        return 0;
    }
    size_t c = *cap ? *cap : 4096;
    while (c < need) {
        c *= 2;
    }
    char *nb = realloc(*buf, c);
    if (nb == NULL) {
        return -1;
    }
    *buf = nb;
    *cap = c;
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    http_state *h = ud;
    size_t len = size * n;
    if (h->len + len > MAX_BODY) {
        h->too_big = 1;
        return 0; /* aborts the transfer */
    }
    if (grow(&h->buf, &h->cap, h->len + len) != 0) {
        return 0;
    }
    memcpy(h->buf + h->len, p, len);
    h->len += len;
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    http_state *h = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        h->hlen = 0; /* a new response (after a 100 Continue or a redirect) */
    }
    if (h->hlen + len <= 65536 && grow(&h->hdr, &h->hcap, h->hlen + len) == 0) {
        memcpy(h->hdr + h->hlen, p, len);
        h->hlen += len;
    }
    return len;
}

/* libcurl's progress callback, about once a second and on every chunk: while a
 * call waits on a slow service, the worker's AMQP connection gets its
 * heartbeats (lua_api.h). Returning 0 lets the transfer go on. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    wr_lua_service(ud);
    return 0;
}

static http_state *state_of(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "warren.http");
    http_state *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (h == NULL) {
        h = lua_newuserdata(L, sizeof(*h));
        memset(h, 0, sizeof(*h));
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, http_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, "warren.http");
    }
    if (h->curl == NULL) {
        h->curl = curl_easy_init();
    }
    return h;
}

/* Push the headers of a response head (HEAD, LEN bytes: status line, then
 * "Name: value" lines) as a table with lowercased names. -- ... headers */
static void push_headers(lua_State *L, const char *head, size_t len)
{
    lua_createtable(L, 0, 8);
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && head[end] != '\n') {
            end++;
        }
        const char *line = head + i;
        size_t n = end - i;
        if (n > 0 && line[n - 1] == '\r') {
            n--;
        }
        const char *colon = memchr(line, ':', n);
        if (colon != NULL && (n < 5 || strncmp(line, "HTTP/", 5) != 0)) {
            size_t kn = (size_t)(colon - line);
            char key[128];
            if (kn > 0 && kn < sizeof(key)) {
                for (size_t k = 0; k < kn; k++) {
                    char c = line[k];
                    key[k] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
                }
                const char *v = colon + 1;
                while (v < line + n && (*v == ' ' || *v == '\t')) {
                    v++;
                }
                lua_pushlstring(L, key, kn);
                lua_pushlstring(L, v, (size_t)(line + n - v));
                lua_rawset(L, -3);
            }
        }
        i = end + 1;
    }
}

/* The reason phrase of a response head's status line ("503 Service
 * Unavailable" -> "Service Unavailable") into OUT; "" when there is none. */
static void reason_of(const char *head, size_t len, char *out, size_t cap)
{
    out[0] = '\0';
    const char *sp = len ? memchr(head, ' ', len) : NULL;
    sp = sp ? memchr(sp + 1, ' ', len - (size_t)(sp + 1 - head)) : NULL;
    if (sp != NULL) {
        size_t n = 0, room = len - (size_t)(sp + 1 - head);
        while (n < room && n < 100 && sp[1 + n] != '\r' && sp[1 + n] != '\n') {
            n++;
        }
        snprintf(out, cap, "%.*s", (int)n, sp + 1);
    }
}

static int is_json_type(const char *ct)
{
    if (ct == NULL) {
        return 0;
    }
    size_t n = strcspn(ct, "; ");
    return (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
           (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

/*
 * The argument errors are sidecar/lua/contract.lua's HTTP_ERRORS (contract.h),
 * the texts the Lua test kit raises too, in the same order of checks: handlers
 * tested with the kit see what they will see here.
 */
#define E_ARGS WR_EH_ARGS
#define E_OPTION WR_EH_OPTION
#define E_METHOD WR_EH_METHOD
#define E_METHOD_TOKEN WR_EH_METHOD_TOKEN
#define E_URL WR_EH_URL
#define E_URL_SCHEME WR_EH_URL_SCHEME
#define E_URL_CHARS WR_EH_URL_CHARS
#define E_HEADERS WR_EH_HEADERS
#define E_HEADER_NAME WR_EH_HEADER_NAME
#define E_HEADER_VALUE WR_EH_HEADER_VALUE
#define E_HEADER_CHARS WR_EH_HEADER_CHARS
#define E_HEADER_SIZE WR_EH_HEADER_SIZE
#define E_BODY WR_EH_BODY
#define E_BODY_JSON WR_EH_BODY_JSON
#define E_TIMEOUT WR_EH_TIMEOUT
#define E_TIMEOUT_DURATION WR_EH_TIMEOUT_DURATION
#define E_TIMEOUT_RANGE WR_EH_TIMEOUT_RANGE
#define E_RAISE WR_EH_RAISE

/* Read opts.timeout: seconds (number) or a duration string. -1 when absent. */
static int64_t read_timeout(lua_State *L)
{
    lua_getfield(L, 1, "timeout");
    int64_t ms = -1;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        double s = lua_tonumber(L, -1);
        if (!(s > 0)) {
            wr_lua_caller_error(L, E_TIMEOUT_RANGE, lua_tostring(L, -1));
        }
        ms = s > 86400.0 ? 86400000 : (int64_t)(s * 1000.0); /* capped by time left anyway */
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        if (wr_config_parse_duration(lua_tostring(L, -1), &ms) != 0) {
            wr_lua_caller_error(L, E_TIMEOUT_DURATION, lua_tostring(L, -1));
        }
        if (ms <= 0) {
            wr_lua_caller_error(L, E_TIMEOUT_RANGE, lua_tostring(L, -1));
        }
    } else if (!lua_isnil(L, -1)) {
        wr_lua_caller_error(L, E_TIMEOUT, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return ms;
}

static int valid_url_chars(const char *u)
{
    for (const unsigned char *c = (const unsigned char *)u; *c; c++) {
        if (*c <= ' ' || *c == 0x7F) {
            return 0;
        }
    }
    return 1;
}

/* Length of a URI scheme followed by "://" at the start of U (RFC 3986:
 * ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )), or 0 when U has none. */
static size_t scheme_len(const char *u)
{
    size_t n = 0;
    if (!((u[0] >= 'a' && u[0] <= 'z') || (u[0] >= 'A' && u[0] <= 'Z'))) {
        return 0;
    }
    while ((u[n] >= 'a' && u[n] <= 'z') || (u[n] >= 'A' && u[n] <= 'Z') ||
           (u[n] >= '0' && u[n] <= '9') || u[n] == '+' || u[n] == '-' || u[n] == '.') {
        n++;
    }
    return strncmp(u + n, "://", 3) == 0 ? n + 3 : 0;
}

char *wr_http_safe_url(const char *url, char *out, size_t cap)
{
    size_t start = scheme_len(url);
    size_t end = start + strcspn(url + start, "?#");
    const char *at = NULL;
    for (const char *p = url + start; p < url + end; p++) {
        if (*p == '@') {
            at = p;
        }
    }
    const char *tail = url[end] == '?' ? "?..." : url[end] == '#' ? "#..." : "";
    if (at != NULL) {
        snprintf(out, cap, "%.*s***%.*s%s", (int)start, url, (int)(url + end - at), at, tail);
    } else {
        snprintf(out, cap, "%.*s%s", (int)end, url, tail);
    }
    return out;
}

/* What an error text shows of the request's URL: wr_http_safe_url's form. */
typedef struct {
    char url[1024];
} safe_url;

static const char *safe(safe_url *s, const char *url)
{
    return wr_http_safe_url(url, s->url, sizeof(s->url));
}

/* Raise MSG (any length) at the handler's line (wr_lua_push_where). */
static int raise_text(lua_State *L, const char *msg)
{
    wr_lua_push_where(L);
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    return lua_error(L);
}

/* Find the transport to send with: exec's, or libcurl. */
static wr_http_send_fn transport_of(lua_State *L, void **ud)
{
    wr_http_send_fn fn = wr_lua_http_transport(L, ud);
    return fn != NULL ? fn : wr_lua_http_curl;
}

/* Raise on an option ctx.http.request does not know (the options are at 1). */
static void check_options(lua_State *L)
{
    static const char *known[] = {"method", "url", "headers", "body", "timeout", "raise"};
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        int ok = 0;
        if (lua_type(L, -2) == LUA_TSTRING) {
            for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
                ok |= strcmp(lua_tostring(L, -2), known[i]) == 0;
            }
        }
        if (!ok) {
            lua_pushvalue(L, -2);
            wr_lua_caller_error(L, E_OPTION, lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        }
        lua_pop(L, 1);
    }
}

/* The request's URL and method, checked (they stay alive in the options
 * table at 1). Raises on a bad one. */
static const char *read_url(lua_State *L, safe_url *su)
{
    lua_getfield(L, 1, "url");
    if (lua_type(L, -1) != LUA_TSTRING) {
        wr_lua_caller_error(L, E_URL, luaL_typename(L, -1));
    }
    const char *url = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        wr_lua_caller_error(L, E_URL_SCHEME, safe(su, url));
    }
    if (!valid_url_chars(url)) {
        wr_lua_caller_error(L, E_URL_CHARS, safe(su, url));
    }
    return url;
}

static const char *read_method(lua_State *L)
{
    lua_getfield(L, 1, "method");
    const char *method = "GET";
    if (lua_type(L, -1) == LUA_TSTRING) {
        method = lua_tostring(L, -1);
        int ok = *method != '\0';
        for (const char *c = method; *c; c++) {
            ok &= (*c >= 'A' && *c <= 'Z') || *c == '-';
        }
        if (!ok) {
            wr_lua_caller_error(L, E_METHOD_TOKEN, method);
        }
    } else if (!lua_isnil(L, -1)) {
        wr_lua_caller_error(L, E_METHOD, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return method;
}

/* raise = true (the default) or false. */
static int read_raise(lua_State *L)
{
    lua_getfield(L, 1, "raise");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) {
        wr_lua_caller_error(L, E_RAISE, luaL_typename(L, -1));
    }
    int raise = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return raise;
}

/* The request's timeout: the option (or the default), cut to the time the
 * handler has left. Raises when none is left. */
static int64_t read_timeout_left(lua_State *L, const char *method, const char *url, safe_url *su)
{
    int64_t timeout = read_timeout(L);
    if (timeout < 0) {
        timeout = DEFAULT_TIMEOUT_MS;
    }
    double left = wr_lua_time_left_ms(L);
    if ((double)timeout > left) {
        timeout = (int64_t)left;
    }
    if (timeout < 1) {
        wr_lua_caller_error(L, WR_EH_NO_TIME, method, safe(su, url));
    }
    return timeout;
}

/* Push the body (a string, a table encoded as JSON, or nil) and return it
 * in BODY/LEN (NULL: none); *JSON says it was a table. The pushed value keeps
 * it alive. */
static void push_body(lua_State *L, const char **body, size_t *len, int *json)
{
    *body = NULL;
    *len = 0;
    *json = 0;
    lua_getfield(L, 1, "body");
    if (lua_istable(L, -1)) {
        wr_lua_push_encode(L);
        lua_pushvalue(L, -2);
        if (lua_pcall(L, 1, 1, 0) != 0) {
            wr_lua_caller_error(L, E_BODY_JSON, lua_tostring(L, -1));
        }
        lua_remove(L, -2);
        *json = 1;
    } else if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) {
        wr_lua_caller_error(L, E_BODY, luaL_typename(L, -1));
    }
    if (lua_type(L, -1) == LUA_TSTRING) {
        *body = lua_tolstring(L, -1, len);
    }
}

/* Add the handler's headers (option `headers`) to the lines table at LINES,
 * checked. Returns the count; *HAS_CT / *HAS_TP say whether Content-Type and
 * traceparent were among them. */
static int add_handler_headers(lua_State *L, int lines, int *has_ct, int *has_tp)
{
    int count = 0;
    lua_getfield(L, 1, "headers");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            if (lua_type(L, -2) != LUA_TSTRING) {
                wr_lua_caller_error(L, E_HEADER_NAME, luaL_typename(L, -2));
            }
            size_t kn, vn;
            const char *k = lua_tolstring(L, -2, &kn);
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
                wr_lua_caller_error(L, E_HEADER_VALUE, k, luaL_typename(L, -1));
            }
            lua_pushvalue(L, -1);
            const char *v = lua_tolstring(L, -1, &vn);
            if (strpbrk(k, "\r\n:") != NULL || strpbrk(v, "\r\n") != NULL) {
                wr_lua_caller_error(L, E_HEADER_CHARS, k);
            }
            if (kn + 2 + vn > WR_HTTP_MAX_HEADER_LINE) {
                wr_lua_caller_error(L, E_HEADER_SIZE, k, (long long)WR_HTTP_MAX_HEADER_LINE);
            }
            lua_pushfstring(L, "%s: %s", k, v);
            lua_rawseti(L, lines, ++count);
            *has_ct |= strcasecmp(k, "content-type") == 0;
            *has_tp |= strcasecmp(k, "traceparent") == 0;
            lua_pop(L, 2);
        }
    } else if (!lua_isnil(L, -1)) {
        wr_lua_caller_error(L, E_HEADERS, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return count;
}

/* Add the message's trace context to the lines table at LINES (same trace,
 * a new span), after COUNT lines. Returns the new count. */
static int add_trace_headers(lua_State *L, int lines, int count)
{
    const char *trace = wr_lua_trace_id(L);
    if (trace == NULL) {
        return count;
    }
    http_state *h = state_of(L);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long span = ((unsigned long long)ts.tv_nsec << 20) ^
                              (unsigned long long)ts.tv_sec ^ ((unsigned long long)++h->seq << 40);
    char line[128];
    snprintf(line, sizeof(line), "traceparent: 00-%s-%016llx-01", trace, span | 1);
    lua_pushstring(L, line);
    lua_rawseti(L, lines, ++count);
    const char *state = wr_lua_tracestate(L);
    if (state != NULL && state[0] != '\0' && strpbrk(state, "\r\n") == NULL) {
        char sl[600];
        snprintf(sl, sizeof(sl), "tracestate: %.512s", state); /* W3C: 512 at most */
        lua_pushstring(L, sl);
        lua_rawseti(L, lines, ++count);
    }
    return count;
}

/* Push the request's header lines as a table, and return them as an array
 * of C strings (a userdata pushed after it; both stay on the stack) with
 * their count in *COUNT. */
static const char **push_headers_of(lua_State *L, int json_body, int *count)
{
    lua_newtable(L);
    int lines = lua_gettop(L);
    int has_ct = 0, has_tp = 0;
    int n = add_handler_headers(L, lines, &has_ct, &has_tp);
    if (json_body && !has_ct) {
        lua_pushliteral(L, "Content-Type: application/json");
        lua_rawseti(L, lines, ++n);
    }
    if (!has_tp) {
        n = add_trace_headers(L, lines, n);
    }
    const char **hv = lua_newuserdata(L, sizeof(*hv) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, lines, i + 1);
        hv[i] = lua_tostring(L, -1); /* the string stays in the lines table */
        lua_pop(L, 1);
    }
    *count = n;
    return hv;
}

/* Push res = {status, headers, body, json} for RESP. */
static void push_response(lua_State *L, const wr_http_resp *resp)
{
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)resp->status);
    lua_setfield(L, -2, "status");
    push_headers(L, resp->head, resp->head_len);
    lua_getfield(L, -1, "content-type");
    int json = is_json_type(lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, resp->body ? resp->body : "", resp->body_len);
    lua_setfield(L, -2, "body");
    if (json && resp->body_len > 0) {
        wr_lua_push_safe_decode(L);
        lua_pushlstring(L, resp->body, resp->body_len);
        lua_call(L, 1, 1); /* cjson.safe: nil on bad JSON, never raises */
        lua_setfield(L, -2, "json");
    }
}

/*
 * ctx.http.request{method, url, headers, body, timeout, raise}
 * Returns res ({status, headers, body, json}) or nil, err (raise = false).
 * A transport error or a 5xx raises (unless raise = false) and counts as a
 * dependency's failure (the breaker's).
 */
static int http_request(lua_State *L)
{
    wr_lua_check_handling(L, "http.request");
    if (lua_gettop(L) != 1 || !lua_istable(L, 1)) {
        return wr_lua_caller_error(L, E_ARGS,
                                   lua_gettop(L) == 1   ? luaL_typename(L, 1)
                                   : lua_gettop(L) == 0 ? "no value"
                                                        : "more than one argument");
    }
    check_options(L);
    safe_url su;
    const char *url = read_url(L, &su);
    const char *method = read_method(L);
    int raise = read_raise(L);
    wr_http_req req = {.method = method, .url = url};
    req.timeout_ms = read_timeout_left(L, method, url, &su);
    int json_body;
    push_body(L, &req.body, &req.body_len, &json_body);
    req.headers = push_headers_of(L, json_body, &req.header_count);

    wr_http_resp resp;
    memset(&resp, 0, sizeof(resp));
    void *ud = NULL;
    wr_http_send_fn send = transport_of(L, &ud);
    int rc = send(ud, L, &req, &resp);
    if (rc == WR_HTTP_REFUSED) {
        return raise_text(L, resp.error ? resp.error : WR_EH_REFUSED);
    }
    if (rc != WR_HTTP_OK) {
        const char *why = resp.error ? resp.error : "transport error";
        if (raise) {
            wr_lua_note_dependency(L);
            return wr_lua_caller_error(L, WR_EH_TRANSPORT, method, safe(&su, url), why);
        }
        lua_pushnil(L);
        lua_pushfstring(L, WR_EH_TRANSPORT, method, safe(&su, url), why);
        return 2;
    }
    if (resp.status >= 500 && raise) {
        wr_lua_note_dependency(L);
        char reason[128];
        reason_of(resp.head, resp.head_len, reason, sizeof(reason));
        if (reason[0]) {
            return wr_lua_caller_error(L, WR_EH_STATUS_REASON, method, safe(&su, url),
                                       (long long)resp.status, reason);
        }
        return wr_lua_caller_error(L, WR_EH_STATUS, method, safe(&su, url), (long long)resp.status);
    }
    push_response(L, &resp);
    return 1;
}

/*
 * The sidecar's transport: send REQ with the state's curl handle. The
 * response head and body stay in the handle's buffers until the next request.
 */
int wr_lua_http_curl(void *ud, lua_State *L, const wr_http_req *req, wr_http_resp *resp)
{
    (void)ud;
    http_state *h = state_of(L);
    if (h->curl == NULL) {
        resp->error = "cannot create a curl handle";
        return WR_HTTP_FAILED;
    }
    struct curl_slist *hl = NULL;
    for (int i = 0; i < req->header_count; i++) {
        hl = curl_slist_append(hl, req->headers[i]);
    }
    hl = curl_slist_append(hl, "Expect:"); /* no 100-continue round trip */

    CURL *c = h->curl;
    curl_easy_reset(c);
    h->len = 0;
    h->hlen = 0;
    h->too_big = 0;
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)req->timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "warren/" WARREN_VERSION);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, L);
    if (strcmp(req->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    }
    if (req->body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    } else if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hl);
    if (rc != CURLE_OK) {
        resp->error = h->too_big ? "response body larger than 8 MiB" : curl_easy_strerror(rc);
        return WR_HTTP_FAILED;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    resp->head = h->hdr;
    resp->head_len = h->hlen;
    resp->body = h->buf;
    resp->body_len = h->len;
    return WR_HTTP_OK;
}

void wr_lua_http_inject(lua_State *L)
{
    /* -- ... ctx */
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, http_request);
    lua_setfield(L, -2, "request");
    lua_setfield(L, -2, "http");
}
