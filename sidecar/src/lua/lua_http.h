/*
 * lua_http: ctx.http.request, the handler's HTTP client, and its transport seam.
 *
 * lua_http.c checks the handler's arguments and builds the request (method,
 * URL, headers with the message's traceparent, body, timeout) in one place;
 * then a transport sends it. The sidecar's transport is libcurl
 * (wr_lua_http_curl). `warren exec` gives the Lua state another one
 * (wr_lua_opts.http_send) that answers from the event file's fakes, so a dry
 * run builds exactly the request the sidecar would send, and sends nothing.
 *
 * Whatever the transport, ctx.http turns its answer into what the handler
 * sees the same way: a response table; a transport error raised (or returned
 * as nil, err with raise = false) as "http METHOD URL: <why>"; a 5xx raised as
 * "http METHOD URL: <status> <reason>". Error texts show the URL through
 * wr_http_safe_url: they reach logs and DLQ headers, so they never carry a
 * URL's userinfo or query string.
 */
#ifndef WR_LUA_HTTP_H
#define WR_LUA_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "contract.h"

struct lua_State;

/* The longest request header line ("Name: value") ctx.http sends; a longer one
 * is an argument error, never cut short. */
#define WR_HTTP_MAX_HEADER_LINE WR_LIMIT_HTTP_MAX_HEADER_LINE /* sidecar/lua/contract.lua */

/* A request as ctx.http.request built it. Valid during the send call only. */
typedef struct wr_http_req {
    const char *method;         /* "GET", "POST", ... */
    const char *url;            /* as the handler gave it: may hold credentials */
    const char *const *headers; /* "Name: value" lines, header_count of them */
    int header_count;
    const char *body; /* NULL: no body */
    size_t body_len;
    int64_t timeout_ms; /* already capped by the handler's time left */
} wr_http_req;

/* A transport's answer. The pointers stay valid until the next request on the
 * same Lua state (or, for exec's fakes, for as long as the fakes live). */
typedef struct wr_http_resp {
    long status;
    const char *head; /* the response head as a server sends it: status
                         line, then "Name: value" lines (CRLF or LF) */
    size_t head_len;
    const char *body;
    size_t body_len;
    const char *error; /* WR_HTTP_FAILED, WR_HTTP_REFUSED: the text */
} wr_http_resp;

/* What a transport's send returns. */
enum {
    WR_HTTP_OK = 0,       /* RESP holds a response (any status) */
    WR_HTTP_FAILED = -1,  /* a transport error (connect, timeout, ...): RESP->error
                             says why, in curl's words; ctx.http raises it or, with
                             raise = false, returns nil, err */
    WR_HTTP_REFUSED = -2, /* the transport will not send this request (exec has no
                             fake for it): RESP->error is the whole message, always
                             raised, whatever raise says */
};

/* A transport: send REQ from the Lua state L (the handler's), fill RESP. */
typedef int (*wr_http_send_fn)(void *ud, struct lua_State *L, const wr_http_req *req,
                               wr_http_resp *resp);

/* The sidecar's transport: libcurl, one handle per Lua state (kept for
 * connection reuse, closed with the state). Services the worker's connection
 * while it waits. UD is unused. */
int wr_lua_http_curl(void *ud, struct lua_State *L, const wr_http_req *req, wr_http_resp *resp);

/*
 * Write URL into OUT (CAP bytes, always terminated) as error texts show it:
 * the userinfo (everything between "://" and the last '@' before the path's
 * query) replaced by "***", and the query string and fragment replaced by
 * "?..." (or "#..."). A URL without them is copied as it is. Errs on the
 * side of masking too much for malformed URLs, never too little. Returns OUT.
 */
char *wr_http_safe_url(const char *url, char *out, size_t cap);

#endif
