/*
 * evfile: the event file of `warren exec`: what it may hold, checked like the
 * config, and the HTTP fakes it gives ctx.http.
 *
 * The file is one JSON object:
 *
 *   { "id": "evt-1", "type": "order.created", "routing_key": "order.created",
 *     "exchange": "shop.events", "content_type": "application/json",
 *     "headers": { "x-tenant": "acme" },  -- strings, numbers, booleans
 *     "attempt": 1,                       -- 1 to WR_EVFILE_MAX_ATTEMPT
 *     "redelivered": false,
 *     "data": { ... },                    -- or "body": "raw text" (one of the two)
 *     "store": { "stock:A": 5 },          -- ctx.store's state before the event
 *     "http": [ { "method": "POST", "url": "http://...", "status": 200,
 *                 "json": { ... } } ] }   -- answers to ctx.http.request
 *
 * Unknown keys, wrong types and out-of-range values are all reported, each as
 * "FILE:LINE:COL: message" pointing at the key or value, like the config's
 * errors; a JSON syntax error is reported where jansson found it. Messages
 * never echo a string value (a URL may hold a password).
 *
 * An HTTP fake answers one request: the first fake, in file order, whose
 * method and url equal the request's (the url compared exactly, query string
 * included) and that has not answered yet, or that says "reuse": true (then
 * it answers every such request). A fake holds a response ("status", default
 * 200; "reason", default the standard phrase; "headers"; "json", sent as
 * application/json, or "body", a string) or a transport error ("error":
 * "connect", "timeout", "resolve", "reset", "tls" or "empty", reported in
 * libcurl's words, as the sidecar would).
 *
 * Pure apart from wr_evfile_load reading the file.
 */
#ifndef WR_EVFILE_H
#define WR_EVFILE_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"

#define WR_EVFILE_MAX_ATTEMPT 1000000 /* the most x-warren-attempt a worker accepts, plus 1 */

/* One entry of the "http" list. */
typedef struct {
    char *method;
    char *url;
    char name[32];     /* "http[3]": how the report names it */
    int line, col;     /* where it starts in the file */
    int reuse;         /* answers every matching request, not only the first */
    int uses;          /* requests answered so far */
    const char *error; /* a transport error in libcurl's words; NULL: a response */
    long status;
    char *head; /* the response head: "HTTP/1.1 200 OK\r\nName: value\r\n..." */
    size_t head_len;
    char *body; /* the response body ("" when none) */
    size_t body_len;
} wr_evfile_fake;

typedef struct {
    char *path;
    json_t *event;         /* the file's object, checked; store numbers are strings */
    wr_evfile_fake *fakes; /* the "http" list, in file order */
    int fake_count;
} wr_evfile;

/* Check TEXT (LEN bytes) read from PATH (for messages). Returns the event file
 * or NULL with every problem in ERRS (free them with wr_config_errors_free). */
wr_evfile *wr_evfile_parse(const char *path, const char *text, size_t len, wr_config_errors *errs);

/* Read PATH and check it (wr_evfile_parse). */
wr_evfile *wr_evfile_load(const char *path, wr_config_errors *errs);

void wr_evfile_free(wr_evfile *ev);

/* The fake that answers METHOD URL (see above), its use counted; NULL: none. */
wr_evfile_fake *wr_evfile_match(wr_evfile *ev, const char *method, const char *url);

/* The "http" entry to add to fake METHOD URL, as one line of JSON:
 * {"method": "POST", "url": "...", "status": 200, "json": {}} (malloc'd; NULL
 * when out of memory). */
char *wr_evfile_fake_for(const char *method, const char *url);

#endif
