/*
 * exec: run one event through a subscription's handler. See exec.h.
 */
#include "exec.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "breakers.h"
#include "cmdcfg.h"
#include "config.h"
#include "contracts.h"
#include "decide.h"
#include "envelope.h"
#include "evfile.h"
#include "idkey.h"
#include "log.h"
#include "lua_http.h"
#include "lua_rt.h"
#include "offcommit.h"
#include "reload.h"
#include "retry.h"
#include "topology.h"

/*
 * ctx.store under `warren exec`: Redis is not touched. Reads see the event
 * file's "store" object (the state before the event: "key": "value" or a
 * number for strings, {field: value} for hashes, [member, ...] for sets) and
 * the handler's own writes; the writes are reported, never applied.
 */
typedef struct {
    json_t *seed;      /* the event file's "store", or NULL */
    size_t prefix_len; /* store.prefix, stripped from the keys asked for */
    char num[32];
    wr_sbstr *items;
    size_t cap;
} exec_store;

static int exec_fetch(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_base *out,
                      char *err, size_t errcap)
{
    exec_store *es = ud;
    char k[1100];
    size_t kn = key.n - es->prefix_len;
    snprintf(k, sizeof(k), "%.*s", (int)kn, key.p + es->prefix_len);
    json_t *v = es->seed ? json_object_get(es->seed, k) : NULL;
    if (strcmp(cmd, "EXISTS") == 0) {
        out->num = v != NULL;
        return 0;
    }
    if (strcmp(cmd, "PTTL") == 0) {
        out->num = v != NULL ? -1 : -2;
        return 0;
    }
    int is_str = json_is_string(v) || json_is_number(v);
    if (v != NULL &&
        ((strcmp(cmd, "GET") == 0 && !is_str) || (cmd[0] == 'H' && !json_is_object(v)) ||
         (cmd[0] == 'S' && !json_is_array(v)))) {
        /* in the sidecar's words (wr_idem_store_fetch: "Redis: " and the reply) */
        snprintf(err, errcap,
                 "Redis: WRONGTYPE Operation against a key holding the wrong kind of value");
        return -1;
    }
    if (v == NULL) {
        return 0;
    }
    if (strcmp(cmd, "GET") == 0 || strcmp(cmd, "HGET") == 0) {
        json_t *x = v;
        if (cmd[0] == 'H') {
            char f[1100];
            snprintf(f, sizeof(f), "%.*s", (int)arg.n, arg.p);
            x = json_object_get(v, f);
        }
        if (json_is_string(x)) {
            out->present = 1;
            out->str = (wr_sbstr){json_string_value(x), json_string_length(x)};
        } else if (json_is_number(x)) {
            int n =
                json_is_integer(x)
                    ? snprintf(es->num, sizeof(es->num), "%lld", (long long)json_integer_value(x))
                    : snprintf(es->num, sizeof(es->num), "%.17g", json_number_value(x));
            out->present = 1;
            out->str = (wr_sbstr){es->num, (size_t)n};
        }
        return 0;
    }
    if (strcmp(cmd, "SISMEMBER") == 0) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
        {
            if (json_is_string(m) && json_string_length(m) == arg.n &&
                memcmp(json_string_value(m), arg.p, arg.n) == 0) {
                out->num = 1;
            }
        }
        return 0;
    }
    size_t need = json_is_object(v) ? 2 * json_object_size(v) : json_array_size(v);
    if (need > es->cap) {
        wr_sbstr *n = realloc(es->items, need * sizeof(*n));
        if (n == NULL) {
            snprintf(err, errcap, "out of memory");
            return -1;
        }
        es->items = n;
        es->cap = need;
    }
    size_t c = 0;
    if (json_is_object(v)) {
        const char *f;
        json_t *x;
        json_object_foreach(v, f, x)
        {
            if (json_is_string(x)) {
                es->items[c++] = (wr_sbstr){f, strlen(f)};
                es->items[c++] = (wr_sbstr){json_string_value(x), json_string_length(x)};
            }
        }
    } else {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
        {
            if (json_is_string(m)) {
                es->items[c++] = (wr_sbstr){json_string_value(m), json_string_length(m)};
            }
        }
    }
    out->items = es->items;
    out->count = c;
    return 0;
}

/* The buffered ctx.store writes as a JSON array of [op, key, args...] (keys without the
 * prefix). */
static json_t *writes_json(const wr_storebuf *buf, size_t prefix_len)
{
    json_t *a = json_array();
    int n;
    const wr_sb_write *ws = wr_storebuf_writes(buf, &n);
    for (int i = 0; i < n; i++) {
        const wr_sb_write *w = &ws[i];
        wr_sbstr k = wr_storebuf_key(buf, w->key);
        json_t *e = json_array();
        json_array_append_new(e, json_string(wr_sb_op_name(w->op)));
        json_array_append_new(e, json_stringn(k.p + prefix_len, k.n - prefix_len));
        switch (w->op) {
        case WR_SB_SET:
            json_array_append_new(e, json_stringn(w->a.p, w->a.n));
            if (w->num > 0) {
                json_array_append_new(e, json_integer(w->num));
            }
            break;
        case WR_SB_INCRBY:
        case WR_SB_EXPIRE:
            json_array_append_new(e, json_integer(w->num));
            break;
        case WR_SB_HINCRBY:
            json_array_append_new(e, json_stringn(w->a.p, w->a.n));
            json_array_append_new(e, json_integer(w->num));
            break;
        case WR_SB_HSET:
            json_array_append_new(e, json_stringn(w->a.p, w->a.n));
            json_array_append_new(e, json_stringn(w->b.p, w->b.n));
            break;
        case WR_SB_DEL:
            break;
        default:
            json_array_append_new(e, json_stringn(w->a.p, w->a.n));
            break;
        }
        json_array_append_new(a, e);
    }
    return a;
}

/* A JSON string of S (N bytes); bytes that are not UTF-8 become '?' (a request
 * body or URL may hold anything). */
static json_t *text_json(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j != NULL) {
        return j;
    }
    char *c = malloc(n + 1);
    if (c == NULL) {
        return json_string("");
    }
    for (size_t i = 0; i < n; i++) {
        c[i] = (unsigned char)s[i] < 0x80 && s[i] != '\0' ? s[i] : '?';
    }
    j = json_stringn(c, n);
    free(c);
    return j;
}

/*
 * ctx.http under `warren exec` (the transport of lua_http.h): every request
 * is listed for the report; a fake from the event file answers it, or, with
 * --live-http, libcurl sends it. A request no fake answers is refused with a
 * message that names it (URL masked, as every ctx.http error) and shows the
 * entry to add; the report shows that entry with the exact URL.
 */
typedef struct {
    wr_evfile *ev;
    int live;
    json_t *calls; /* the report's "http_calls" */
    int unfaked;   /* requests refused for want of a fake */
    char *refusal; /* the last refusal's text: the WR_HTTP_REFUSED error */
} exec_http;

static int exec_send(void *ud, struct lua_State *L, const wr_http_req *req, wr_http_resp *resp)
{
    exec_http *x = ud;
    char safe[1024];
    wr_http_safe_url(req->url, safe, sizeof(safe));
    json_t *call = json_object();
    json_object_set_new(call, "method", json_string(req->method));
    json_object_set_new(call, "url", text_json(safe, strlen(safe)));
    if (req->body != NULL) {
        json_object_set_new(call, "body", text_json(req->body, req->body_len));
    }
    json_array_append_new(x->calls, call);

    if (x->live) {
        int rc = wr_lua_http_curl(NULL, L, req, resp);
        json_object_set_new(call, "answer", json_string("live"));
        if (rc == WR_HTTP_OK) {
            json_object_set_new(call, "status", json_integer(resp->status));
        } else {
            json_object_set_new(call, "error", json_string(resp->error ? resp->error : "?"));
        }
        return rc;
    }
    wr_evfile_fake *f = wr_evfile_match(x->ev, req->method, req->url);
    if (f == NULL) {
        x->unfaked++;
        char *hint = wr_evfile_fake_for(req->method, req->url);
        json_object_set_new(call, "answer", json_string("none"));
        json_object_set_new(call, "add", hint ? json_loads(hint, 0, NULL) : json_null());
        const char *head = "no fake response in the event file (warren exec makes no network "
                           "call without --live-http); to fake it, add";
        const char *fmt = "http %s %s: %s %s to the event file's \"http\" list";
        const char *what = hint != NULL && strcmp(safe, req->url) == 0
                               ? hint
                               : "the entry warren exec prints for this call";
        int n = snprintf(NULL, 0, fmt, req->method, safe, head, what);
        free(x->refusal);
        x->refusal = malloc((size_t)n + 1);
        if (x->refusal != NULL) {
            snprintf(x->refusal, (size_t)n + 1, fmt, req->method, safe, head, what);
        }
        free(hint);
        resp->error = x->refusal;
        return WR_HTTP_REFUSED;
    }
    char at[1100];
    snprintf(at, sizeof(at), "%s:%d:%d", x->ev->path, f->line, f->col);
    json_object_set_new(call, "answer", json_string("fake"));
    json_object_set_new(call, "fake", json_string(f->name));
    json_object_set_new(call, "at", text_json(at, strlen(at)));
    if (f->error != NULL) {
        json_object_set_new(call, "error", json_string(f->error));
        resp->error = f->error;
        return WR_HTTP_FAILED;
    }
    json_object_set_new(call, "status", json_integer(f->status));
    resp->status = f->status;
    resp->head = f->head;
    resp->head_len = f->head_len;
    resp->body = f->body;
    resp->body_len = f->body_len;
    return WR_HTTP_OK;
}

/* The report's "unused_fakes": fakes no request used. */
static json_t *unused_json(const wr_evfile *ev)
{
    json_t *a = json_array();
    for (int i = 0; i < ev->fake_count; i++) {
        const wr_evfile_fake *f = &ev->fakes[i];
        if (f->uses == 0) {
            char at[1100];
            snprintf(at, sizeof(at), "%s:%d:%d", ev->path, f->line, f->col);
            json_array_append_new(
                a, json_pack("{s:s, s:o}", "fake", f->name, "at", text_json(at, strlen(at))));
        }
    }
    return a;
}

/*
 * The event file's fakes as ctx.http would see them (for the test kit's
 * testing.event_file, so the kit answers from the same fakes without knowing
 * their defaults): a transport error in libcurl's words, or the status, the
 * reason phrase (the standard one unless given), the headers (with the
 * Content-Type a "json" fake implies) and the body.
 */
static json_t *fakes_json(const wr_evfile *ev)
{
    json_t *a = json_array();
    for (int i = 0; i < ev->fake_count; i++) {
        const wr_evfile_fake *f = &ev->fakes[i];
        json_t *o =
            json_pack("{s:s, s:s, s:b}", "method", f->method, "url", f->url, "reuse", f->reuse);
        if (f->error != NULL) {
            json_object_set_new(o, "error", json_string(f->error));
            json_array_append_new(a, o);
            continue;
        }
        json_object_set_new(o, "status", json_integer(f->status));
        json_t *h = json_object();
        const char *p = f->head, *end = f->head + f->head_len;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        /* the status line: "HTTP/1.1 503 Service Unavailable" */
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        sp = sp != NULL ? memchr(sp + 1, ' ', (size_t)(end - sp - 1)) : NULL;
        if (sp != NULL && eol != NULL && sp < eol) {
            json_object_set_new(o, "reason", text_json(sp + 1, (size_t)(eol - sp - 2)));
        }
        for (p = eol ? eol + 1 : end; p < end; p = eol + 1) {
            eol = memchr(p, '\n', (size_t)(end - p));
            const char *colon = memchr(p, ':', (size_t)(end - p));
            if (eol == NULL || colon == NULL || colon > eol) {
                break;
            }
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)(colon - p), p);
            const char *v = colon + 1;
            while (v < eol && *v == ' ') {
                v++;
            }
            json_object_set_new(h, name, text_json(v, (size_t)(eol - v - (eol[-1] == '\r'))));
        }
        json_object_set_new(o, "headers", h);
        json_object_set_new(o, "body", text_json(f->body ? f->body : "", f->body_len));
        json_array_append_new(a, o);
    }
    return a;
}

/* The text report's lines for the HTTP calls and unused fakes. */
static void print_http(json_t *calls, json_t *unused, int live)
{
    if (json_array_size(calls) == 0 && json_array_size(unused) == 0) {
        return;
    }
    printf("http          %zu call(s), %s\n", json_array_size(calls),
           live ? "sent over the network (--live-http)"
                : "answered by the event file's fakes (no network)");
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c)
    {
        const char *body = json_string_value(json_object_get(c, "body"));
        printf("  %s %s%s%s -> ", json_string_value(json_object_get(c, "method")),
               json_string_value(json_object_get(c, "url")), body ? " " : "", body ? body : "");
        const char *answer = json_string_value(json_object_get(c, "answer"));
        json_t *status = json_object_get(c, "status");
        const char *err = json_string_value(json_object_get(c, "error"));
        if (strcmp(answer, "none") == 0) {
            char *add = json_dumps(json_object_get(c, "add"), JSON_PRESERVE_ORDER);
            printf("no fake; add to the event file's \"http\" list:\n      %s\n", add ? add : "");
            free(add);
            continue;
        }
        if (status != NULL) {
            printf("%lld", (long long)json_integer_value(status));
        } else {
            printf("%s", err ? err : "?");
        }
        if (strcmp(answer, "live") == 0) {
            printf(" (live)\n");
        } else {
            printf(" from %s\n", json_string_value(json_object_get(c, "fake")));
        }
    }
    json_array_foreach(unused, i, c)
    {
        printf("unused fake   %s (%s)\n", json_string_value(json_object_get(c, "fake")),
               json_string_value(json_object_get(c, "at")));
    }
}

/* Build an AMQP header value from a JSON value (strings, integers, reals, booleans). */
static int field_of(amqp_pool_t *pool, json_t *v, amqp_field_value_t *out)
{
    if (json_is_string(v)) {
        size_t n = json_string_length(v);
        out->kind = AMQP_FIELD_KIND_UTF8;
        out->value.bytes.len = n;
        out->value.bytes.bytes = amqp_pool_alloc(pool, n ? n : 1);
        if (out->value.bytes.bytes == NULL) {
            return -1;
        }
        memcpy(out->value.bytes.bytes, json_string_value(v), n);
    } else if (json_is_integer(v)) {
        out->kind = AMQP_FIELD_KIND_I64;
        out->value.i64 = json_integer_value(v);
    } else if (json_is_real(v)) {
        out->kind = AMQP_FIELD_KIND_F64;
        out->value.f64 = json_real_value(v);
    } else if (json_is_boolean(v)) {
        out->kind = AMQP_FIELD_KIND_BOOLEAN;
        out->value.boolean = json_is_true(v);
    } else {
        return -1;
    }
    return 0;
}

static amqp_bytes_t str_field(json_t *ev, const char *key)
{
    json_t *v = json_object_get(ev, key);
    return json_is_string(v) ? amqp_cstring_bytes(json_string_value(v)) : amqp_empty_bytes;
}

/*
 * Turn the event file into a delivery as the broker would hand it over. The
 * body is the compact JSON of "data", or "body" as given. Returns 0 or -1
 * with a message in ERR.
 */
static int delivery_of(json_t *ev, amqp_pool_t *pool, amqp_envelope_t *d, char **body_out,
                       char *err, size_t errcap)
{
    memset(d, 0, sizeof(*d));
    amqp_basic_properties_t *p = &d->message.properties;
    amqp_bytes_t id = str_field(ev, "id");
    if (id.len) {
        p->_flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        p->message_id = id;
    }
    amqp_bytes_t type = str_field(ev, "type");
    if (type.len) {
        p->_flags |= AMQP_BASIC_TYPE_FLAG;
        p->type = type;
    }
    amqp_bytes_t ct = str_field(ev, "content_type");
    if (ct.len) {
        p->_flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        p->content_type = ct;
    }
    d->exchange = str_field(ev, "exchange");
    d->routing_key = str_field(ev, "routing_key");
    if (d->routing_key.len == 0) {
        d->routing_key = type;
    }
    json_t *redelivered = json_object_get(ev, "redelivered");
    d->redelivered = json_is_true(redelivered);

    json_t *headers = json_object_get(ev, "headers");
    json_t *attempt = json_object_get(ev, "attempt");
    size_t nh = (json_is_object(headers) ? json_object_size(headers) : 0) + 1;
    amqp_table_entry_t *e = amqp_pool_alloc(pool, sizeof(*e) * nh);
    int n = 0;
    if (e == NULL) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    if (json_is_object(headers)) {
        const char *k;
        json_t *v;
        json_object_foreach(headers, k, v)
        {
            e[n].key = amqp_cstring_bytes(k);
            if (field_of(pool, v, &e[n].value) != 0) {
                snprintf(err, errcap, "header '%s': only strings, numbers and booleans", k);
                return -1;
            }
            n++;
        }
    } else if (headers != NULL) {
        snprintf(err, errcap, "\"headers\" must be an object");
        return -1;
    }
    if (json_is_integer(attempt) && json_integer_value(attempt) > 1) {
        /* attempt n means n-1 failed before: what the retry header says */
        e[n].key = amqp_cstring_bytes("x-warren-attempt");
        e[n].value.kind = AMQP_FIELD_KIND_I32;
        e[n].value.value.i32 = (int32_t)json_integer_value(attempt) - 1;
        n++;
    }
    if (n > 0) {
        p->_flags |= AMQP_BASIC_HEADERS_FLAG;
        p->headers.num_entries = n;
        p->headers.entries = e;
    }
    json_t *data = json_object_get(ev, "data");
    json_t *body = json_object_get(ev, "body");
    if (data != NULL) {
        *body_out = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    } else if (json_is_string(body)) {
        *body_out = strdup(json_string_value(body));
    } else {
        snprintf(err, errcap, "the event needs \"data\" (JSON) or \"body\" (a string)");
        return -1;
    }
    if (*body_out == NULL) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    d->message.body = amqp_cstring_bytes(*body_out);
    return 0;
}

static json_t *pub_json(const wr_lua_pub *p, const char *key, const char *sub, int i)
{
    char id[WR_EVENT_ID_CAP];
    wr_idkey_event_id(key, strlen(key), sub, i + 1, id); /* as the worker derives it */
    json_t *h = json_object();
    for (int k = 0; k < p->header_count; k++) {
        json_object_set_new(h, p->header_keys[k], json_string(p->header_vals[k]));
    }
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s%, s:o}", "exchange", p->exchange, "routing_key",
                  p->routing_key, "message_id", id, "body", p->body, p->body_len, "headers", h);
    if (o != NULL && p->content_type) {
        json_object_set_new(o, "content_type", json_string(p->content_type));
    }
    if (o != NULL && p->type) {
        json_object_set_new(o, "type", json_string(p->type));
    }
    return o;
}

/* The key's source as the config writes it: message_id, header:NAME, json:PATH. */
static void key_source(const wr_idem_policy *pol, char *out, size_t cap)
{
    if (pol->source == WR_KEY_HEADER) {
        snprintf(out, cap, "header:%s", pol->key_arg);
    } else if (pol->source == WR_KEY_JSON) {
        snprintf(out, cap, "json:%s", pol->key_arg);
    } else {
        snprintf(out, cap, "message_id");
    }
}

/* The subscription's settings a handler's spec needs (the test kit's
 * testing.ctx{config = ...}): everything taken from the config as the
 * sidecar resolved it, defaults and inheritance included. */
static json_t *settings_json(const wr_config *cfg, const wr_subscription *sub, const char *version)
{
    char src[300];
    key_source(&sub->idem, src, sizeof(src));
    wr_retry_tiers tiers;
    wr_retry_tiers_of(&sub->retry, &tiers);
    json_t *queues = json_array();
    for (int i = 0; i < tiers.count; i++) {
        char q[300];
        wr_retry_queue_name(sub->queue, tiers.delay_ms[i], q, sizeof(q));
        json_array_append_new(queues, json_string(q));
    }
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:b, s:s, s:s, s:I, s:I, s:o}", "subscription",
        sub->name, "queue", sub->queue, "dlq", sub->dlq, "handler", sub->handler, "handler_version",
        version ? version : "", "max_attempts", sub->retry.max_attempts, "handler_timeout_ms",
        (json_int_t)sub->handler_timeout_ms, "max_body_size", (json_int_t)sub->max_body_size,
        "idempotency", sub->idem.enabled, "idempotency_key", src, "store_prefix", cfg->store_prefix,
        "store_max_writes", (json_int_t)cfg->store_max_writes, "store_max_value_bytes",
        (json_int_t)cfg->store_max_value_bytes, "retry_queues", queues);
}

/*
 * How a run ended, whoever ran it: the handler here, or the test kit, which
 * ran it under busted and hands its result over (--result). The decision is
 * taken from this alone, the same way for both.
 */
typedef struct {
    wr_outcome out;
    char reason[64];
    char error[1024];
    int64_t retry_delay_ms; /* ctx.retry's delay, or -1 */
    int committed;          /* the run wrote to ctx.store: commit says how its commit went */
    wr_offcommit_result commit;
    char commit_why[1024];
} exec_ran;

/* The outcome named NAME (wr_outcome_name's words); -1 when unknown. */
static int outcome_of(const char *name)
{
    for (int o = WR_OUT_OK; o <= WR_OUT_INVALID; o++) {
        if (name != NULL && strcmp(wr_outcome_name((wr_outcome)o), name) == 0) {
            return o;
        }
    }
    return -1;
}

/*
 * Read the test kit's result file (--result) into R and PUBLISHED (events
 * given their ids as the sidecar derives them from KEY). The file is the
 * kit's own output, not a user's: a file that does not parse is a usage
 * error. Returns 0, or -1 with ERR.
 */
static int read_result(const char *path, const char *key, const char *sub, exec_ran *r,
                       json_t *published, char *err, size_t errcap)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (j == NULL) {
        snprintf(err, errcap, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        return -1;
    }
    int rc = -1;
    int out = outcome_of(json_string_value(json_object_get(j, "outcome")));
    json_t *pubs = json_object_get(j, "published");
    json_t *commit = json_object_get(j, "commit");
    if (out < 0) {
        snprintf(err, errcap,
                 "%s: \"outcome\" must be one of ok, error, timeout, retry, "
                 "rejected, invalid",
                 path);
        goto done;
    }
    r->out = (wr_outcome)out;
    snprintf(r->reason, sizeof(r->reason), "%s",
             json_is_string(json_object_get(j, "reason"))
                 ? json_string_value(json_object_get(j, "reason"))
                 : "");
    snprintf(r->error, sizeof(r->error), "%s",
             json_is_string(json_object_get(j, "error"))
                 ? json_string_value(json_object_get(j, "error"))
                 : "");
    json_t *delay = json_object_get(j, "retry_delay_ms");
    r->retry_delay_ms = json_is_integer(delay) ? json_integer_value(delay) : -1;
    if (json_is_object(commit)) {
        const char *cr = json_string_value(json_object_get(commit, "result"));
        const char *why = json_string_value(json_object_get(commit, "error"));
        r->committed = 1;
        r->commit = WR_OFFCOMMIT_FAILED;
        for (int c = WR_OFFCOMMIT_APPLIED; c <= WR_OFFCOMMIT_FAILED; c++) {
            if (cr != NULL && strcmp(cr, wr_offcommit_name((wr_offcommit_result)c)) == 0) {
                r->commit = (wr_offcommit_result)c;
            }
        }
        snprintf(r->commit_why, sizeof(r->commit_why), "%s", why ? why : "");
    }
    size_t i;
    json_t *p;
    json_array_foreach(pubs, i, p)
    {
        char id[WR_EVENT_ID_CAP];
        wr_idkey_event_id(key, strlen(key), sub, (int)i + 1, id); /* as the worker derives it */
        json_t *o = json_deep_copy(p);
        json_object_set_new(o, "message_id", json_string(id));
        json_array_append_new(published, o);
    }
    rc = 0;
done:
    json_decref(j);
    return rc;
}

/*
 * The decision for run R of a message at ATTEMPT (decide.h: the worker's own,
 * jitter pinned to none), then what its commit changes about it (worker.c: a
 * refused commit dead-letters it as store-refused; a conflict or a failed
 * commit sends it back to run again). Fills DECISION, adds "commit" to REPORT.
 * Returns 1 when the message would be acked as handled.
 */
static int decide_run(const wr_subscription *sub, int attempt, const exec_ran *r, json_t *report,
                      json_t *decision)
{
    wr_retry_tiers tiers;
    wr_retry_tiers_of(&sub->retry, &tiers);
    wr_decision dec = wr_decide(r->out, attempt, &sub->retry, &tiers, r->retry_delay_ms, 0, 0);
    if (dec.action == WR_ACT_RETRY) {
        char q[300];
        wr_retry_queue_name(sub->queue, tiers.delay_ms[dec.tier], q, sizeof(q));
        json_object_set_new(decision, "action", json_string("retry"));
        json_object_set_new(decision, "delay_ms", json_integer(dec.delay_ms));
        json_object_set_new(decision, "queue", json_string(q));
        json_object_set_new(decision, "next_attempt", json_integer(attempt + 1));
        json_object_set_new(decision, "max_attempts", json_integer(sub->retry.max_attempts));
        json_object_set_new(decision, "reason", json_string(r->reason));
        return 0;
    }
    if (dec.action != WR_ACT_OK) {
        json_object_set_new(decision, "action", json_string("dead-letter"));
        json_object_set_new(decision, "queue", json_string(sub->dlq));
        json_object_set_new(decision, "reason", json_string(r->reason));
        if (dec.exhausted) {
            json_object_set_new(decision, "why", json_string("attempts exhausted"));
        }
        return 0;
    }
    if (r->committed) {
        json_t *c = json_pack("{s:s}", "result", wr_offcommit_name(r->commit));
        if (r->commit != WR_OFFCOMMIT_APPLIED) {
            json_object_set_new(c, "error", json_string(r->commit_why));
        }
        json_object_set_new(report, "commit", c);
    }
    if (!r->committed || r->commit == WR_OFFCOMMIT_APPLIED) {
        json_object_set_new(decision, "action", json_string("ack"));
        return 1;
    }
    /* the worker's decision for the same commit result, in its words */
    char text[1200];
    wr_commit_result result = r->commit == WR_OFFCOMMIT_REFUSED    ? WR_COMMIT_REFUSED
                              : r->commit == WR_OFFCOMMIT_CONFLICT ? WR_COMMIT_CONFLICT
                                                                   : WR_COMMIT_FAILED;
    if (wr_decide_commit(result, r->commit_why, text, sizeof(text)) == WR_ACT_DLQ) {
        /* no retry can change it: the worker dead-letters it (worker.c) */
        json_object_set_new(decision, "action", json_string("dead-letter"));
        json_object_set_new(decision, "queue", json_string(sub->dlq));
        json_object_set_new(decision, "reason", json_string(wr_reason_name(WR_RS_STORE_REFUSED)));
        json_object_set_new(decision, "error", json_string(text));
        return 0;
    }
    /* back to the queue, nothing applied: it runs again from fresh state */
    json_object_set_new(decision, "action", json_string("requeue"));
    json_object_set_new(decision, "queue", json_string(sub->queue));
    json_object_set_new(decision, "why", json_string(text));
    return 0;
}

/* The report as text (the JSON's fields, one per line). */
/* wr_upcast_show for exec: each step into the JSON array UD. */
static void exec_step(void *ud, const char *what, int64_t from, int64_t to, const char *body,
                      size_t len, const char *err)
{
    json_t *st = json_object();
    json_object_set_new(st, "step", json_string(what));
    json_object_set_new(st, "from", json_integer(from));
    json_object_set_new(st, "to", json_integer(to));
    json_object_set_new(st, "result", json_string(err ? "failed" : "ok"));
    if (err) {
        json_object_set_new(st, "error", json_string(err));
    } else if (body != NULL) {
        json_object_set_new(st, "body", json_stringn(body, len));
    }
    json_array_append_new(ud, st);
}

/* The "contract" part of the report in words: what was received, each upcast
 * step and the validation. */
static void print_contract(const json_t *ct)
{
    json_t *v = json_object_get(ct, "version");
    printf("contract      %s", json_string_value(json_object_get(ct, "type")));
    if (json_is_integer(v)) {
        printf(" v%lld", (long long)json_integer_value(v));
    }
    printf(" received: %s\n", json_string_value(json_object_get(ct, "result")));
    size_t i;
    json_t *st;
    json_array_foreach(json_object_get(ct, "steps"), i, st)
    {
        const char *what = json_string_value(json_object_get(st, "step"));
        const char *res = json_string_value(json_object_get(st, "result"));
        const char *err = json_string_value(json_object_get(st, "error"));
        const char *body = json_string_value(json_object_get(st, "body"));
        long long from = json_integer_value(json_object_get(st, "from"));
        long long to = json_integer_value(json_object_get(st, "to"));
        if (strcmp(what, "upcast") == 0) {
            printf("  upcast      v%lld -> v%lld %s: %s\n", from, to, res, err ? err : body);
        } else {
            printf("  validate    v%lld %s%s%s\n", to, strcmp(res, "ok") == 0 ? "valid" : res,
                   err ? ": " : "", err ? err : "");
        }
    }
}

static void print_report(json_t *report, const wr_subscription *sub, int attempt, json_t *calls,
                         json_t *unused, int live)
{
    json_t *decision = json_object_get(report, "decision");
    json_t *published = json_object_get(report, "published");
    const char *key = json_string_value(json_object_get(report, "idempotency_key"));
    const char *action = json_string_value(json_object_get(decision, "action"));
    printf("subscription  %s (handler %s, version %s)\n", sub->name, sub->handler,
           json_string_value(json_object_get(report, "handler_version")));
    printf("outcome       %s", json_string_value(json_object_get(report, "outcome")));
    if (json_object_get(report, "error")) {
        printf(" (%s): %s", json_string_value(json_object_get(report, "reason")),
               json_string_value(json_object_get(report, "error")));
    }
    printf("\nattempt       %d of %d\n", attempt, sub->retry.max_attempts);
    if (json_object_get(report, "contract")) {
        print_contract(json_object_get(report, "contract"));
    }
    if (key != NULL) {
        printf("key           %s\n", key);
    }
    printf("decision      %s", action);
    if (json_object_get(decision, "queue")) {
        printf(" -> %s", json_string_value(json_object_get(decision, "queue")));
    }
    if (json_object_get(decision, "delay_ms")) {
        printf(" in %lld ms (attempt %lld)",
               (long long)json_integer_value(json_object_get(decision, "delay_ms")),
               (long long)json_integer_value(json_object_get(decision, "next_attempt")));
    }
    const char *derr = json_string_value(json_object_get(decision, "error"));
    const char *dwhy = json_string_value(json_object_get(decision, "why"));
    if (derr != NULL || (dwhy != NULL && strcmp(action, "requeue") == 0)) {
        printf(" (%s)", derr ? derr : dwhy);
    }
    json_t *sw = json_object_get(report, "store_writes");
    if (sw != NULL) {
        char *t = json_dumps(sw, JSON_COMPACT);
        printf("\nstore writes  %zu: %s", json_array_size(sw), t ? t : "");
        free(t);
    }
    json_t *commit = json_object_get(report, "commit");
    if (commit != NULL) {
        const char *cres = json_string_value(json_object_get(commit, "result"));
        const char *cerr = json_string_value(json_object_get(commit, "error"));
        size_t n = strlen(cres);
        if (cerr != NULL && strncmp(cerr, cres, n) == 0 && cerr[n] == ':') {
            printf("\ncommit        %s", cerr); /* "conflict: k changed since ..." */
        } else {
            printf("\ncommit        %s%s%s", cres, cerr ? ": " : "", cerr ? cerr : "");
        }
    }
    printf("\n");
    print_http(calls, unused, live);
    printf("published     %zu event(s)\n", json_array_size(published));
    size_t i;
    json_t *p;
    json_array_foreach(published, i, p)
    {
        printf("  %s -> %s/%s: %s\n", json_string_value(json_object_get(p, "message_id")),
               json_string_value(json_object_get(p, "exchange")),
               json_string_value(json_object_get(p, "routing_key")),
               json_string_value(json_object_get(p, "body")));
    }
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", s ? s : "{}");
    free(s);
}

/* The handler's Lua state, made as a worker makes it, with exec's HTTP
 * transport (the event file's fakes). NULL with ERR on failure. */
static wr_lua *exec_lua(const wr_subscription *sub, const char *version, wr_breakers *breakers,
                        exec_http *xh, char *err, size_t errcap)
{
    wr_lua_opts o = {.handler_path = sub->handler,
                     .version = version,
                     .subscription = sub->name,
                     .queue = sub->queue,
                     .timeout_ms = sub->handler_timeout_ms,
                     .max_attempts = sub->retry.max_attempts,
                     .breakers = breakers,
                     .breaker_fallback = &sub->breaker,
                     .max_publish_bytes = (size_t)sub->max_publish_size,
                     .http_send = exec_send,
                     .http_ud = xh};
    return wr_lua_create(&o, err, errcap);
}

/* What the contract check said of an event (wr_contracts_admit). */
typedef struct {
    wr_contracts *contracts;
    wr_lua *L;           /* where upcasters run */
    wr_reason rs;        /* the check's refusal, WR_RS_NONE when admitted */
    int64_t received;    /* the version it came with (0: none) */
    int64_t upcast_from; /* upcast from this version first (0: no) */
    char *detail;        /* the refusal's text; an upcast's failure is written here */
    size_t detail_cap;
} exec_contract;

/*
 * The contract's steps, as the worker takes them (validate as received,
 * each upcast, validate the result), into REPORT's "contract"; an upcast
 * body replaces ENV's (kept in *UPCAST_BODY). Returns -1 when the upcast
 * failed, else 0.
 */
static int contract_steps(const exec_contract *c, wr_envelope *env, json_t *report,
                          char **upcast_body)
{
    json_t *ct = json_object();
    json_object_set_new(ct, "type", json_stringn((const char *)env->type.bytes, env->type.len));
    json_object_set_new(ct, "version", c->received > 0 ? json_integer(c->received) : json_null());
    json_object_set_new(ct, "result",
                        json_string(c->rs != WR_RS_NONE  ? wr_reason_name(c->rs)
                                    : c->upcast_from > 0 ? "upcast"
                                                         : "valid"));
    json_t *steps = json_array();
    json_object_set_new(ct, "steps", steps);
    json_object_set_new(report, "contract", ct);
    if (c->received > 0) {
        /* the event as received, against its version's schema */
        exec_step(steps, "validate", c->received, c->received, NULL, 0,
                  c->rs != WR_RS_NONE ? c->detail : NULL);
    }
    if (c->upcast_from <= 0) {
        return 0;
    }
    size_t len = 0;
    *upcast_body = wr_contracts_upcast_envelope(c->contracts, c->L, env, c->upcast_from, &len,
                                                c->detail, c->detail_cap, exec_step, steps);
    if (*upcast_body == NULL) {
        json_object_set_new(ct, "result", json_string(wr_reason_name(WR_RS_UPCAST_FAILED)));
        return -1;
    }
    env->body = (amqp_bytes_t){.len = len, .bytes = *upcast_body};
    json_object_set_new(ct, "version_for_handler",
                        json_integer(wr_contracts_current(
                            c->contracts, (const char *)env->type.bytes, env->type.len)));
    json_object_set_new(ct, "body_for_handler", json_stringn(*upcast_body, len));
    return 0;
}

/*
 * Run the handler on ENV as a worker would (the key, the trace, ctx.store
 * over the event file's store), and say in RAN what came of it: the outcome,
 * the events it would publish (into PUBLISHED), the store writes and the
 * commit's verdict (the sidecar's commit script over the event file's store).
 * Returns the store buffer (the caller frees it), NULL without idempotency.
 */
static wr_storebuf *run_handler(const wr_config *cfg, const wr_subscription *sub, wr_lua *L,
                                const wr_envelope *env, const char *key, json_t *ev, exec_store *es,
                                wr_lua_store *store, json_t *report, json_t *published,
                                exec_ran *ran)
{
    wr_storebuf *store_buf = NULL;
    wr_lua_call call = {.idempotency_key = key, .trace_id = NULL, .attempt = env->attempt};
    if (sub->idem.enabled) {
        es->seed = json_object_get(ev, "store");
        es->prefix_len = strlen(cfg->store_prefix);
        store_buf = wr_storebuf_create(cfg->store_max_writes);
        *store = (wr_lua_store){.buf = store_buf,
                                .fetch = exec_fetch,
                                .fetch_ud = es,
                                .prefix = cfg->store_prefix,
                                .max_value_bytes = (size_t)cfg->store_max_value_bytes};
        call.store = store_buf ? store : NULL;
    }
    char trace[33] = "", span[17];
    if (wr_trace_parse(env->traceparent, trace, span) != 0 &&
        wr_trace_derive(env->id, key, trace) != 0) {
        /* a new trace, as a worker starts one: from the clock, no need for quality */
        unsigned long long a = (unsigned long long)(wr_mono_ms() * 1000.0);
        unsigned long long b = (unsigned long long)wr_now_ms() ^ 0x9e3779b97f4a7c15ULL;
        snprintf(trace, sizeof(trace), "%016llx%016llx", a * 0x2545F4914F6CDD1DULL, b);
    }
    call.trace_id = trace;
    wr_lua_result res;
    double t0 = wr_mono_ms();
    ran->out = wr_lua_handle(L, env, &call, &res);
    json_object_set_new(report, "duration_ms", json_real(wr_mono_ms() - t0));
    snprintf(ran->reason, sizeof(ran->reason), "%s", res.reason);
    snprintf(ran->error, sizeof(ran->error), "%s", res.error);
    ran->retry_delay_ms = res.retry_delay_ms;
    int nw = 0;
    if (ran->out == WR_OUT_OK) {
        /* the sidecar publishes them before the commit, whatever it says */
        for (int i = 0; i < res.pub_count; i++) {
            json_array_append_new(published, pub_json(&res.pubs[i], key, sub->name, i));
        }
        if (store_buf != NULL) {
            /* what the commit would apply with the done mark */
            json_object_set_new(report, "store_writes", writes_json(store_buf, es->prefix_len));
            wr_storebuf_writes(store_buf, &nw);
        }
    }
    if (nw > 0) {
        /* the sidecar's commit script, over the event file's store */
        ran->committed = 1;
        ran->commit = wr_offcommit_run(
            store_buf, cfg->store_prefix, es->seed, json_object_get(ev, "store_at_commit"),
            (double)wr_now_ms() / 1000.0, ran->commit_why, sizeof(ran->commit_why));
    }
    return store_buf;
}

/* One `warren exec`: what it loaded, what it holds (exec_free frees it all)
 * and what it found. */
typedef struct {
    const wr_exec_opts *opts;
    wr_config *cfg;
    const wr_subscription *sub;
    char version[17]; /* the handler file's version */
    int have_version;
    int run_here; /* the handler runs here (not --envelope, not --result) */
    wr_evfile *evf;
    exec_http xh;
    char *body;
    amqp_pool_t pool;
    amqp_envelope_t d; /* the delivery the event file describes */
    wr_lua *L;
    wr_contracts *contracts;
    wr_cloudevent ce;
    char *upcast_body;
    exec_store es;
    wr_storebuf *store_buf;
    wr_lua_store store;
    wr_breakers *breakers;
    wr_envelope env;
    char key[WR_IDKEY_MAX + 1];
    int invalid;        /* the worker would dead-letter it before the handler */
    const char *reason; /* why, when invalid */
    char detail[1024];
    json_t *report, *decision, *published;
} exec_run;

static void exec_free(exec_run *x)
{
    json_decref(x->report);
    json_decref(x->decision);
    json_decref(x->published);
    free(x->upcast_body);
    wr_cloudevent_clear(&x->ce);
    wr_contracts_free(x->contracts);
    wr_storebuf_destroy(x->store_buf);
    free(x->es.items);
    wr_lua_destroy(x->L);
    wr_breakers_destroy(x->breakers);
    wr_evfile_free(x->evf);
    json_decref(x->xh.calls);
    free(x->xh.refusal);
    free(x->body);
    empty_amqp_pool(&x->pool);
    wr_config_free(x->cfg);
}

/* The event file, checked, and the delivery it describes. 0, or -1 (said on
 * stderr). */
static int load_event(exec_run *x)
{
    const char *path = x->opts->event_path;
    wr_config_errors errs = {0};
    x->evf = wr_evfile_load(path, &errs);
    if (x->evf == NULL) {
        for (int i = 0; i < errs.count; i++) {
            fprintf(stderr, "%s\n", errs.lines[i]);
        }
        if (errs.dropped > 0) {
            fprintf(stderr, "%s: %d more problem(s) not shown\n", path, errs.dropped);
        }
        wr_config_errors_free(&errs);
        return -1;
    }
    x->xh.ev = x->evf;
    char err[1024];
    if (delivery_of(x->evf->event, &x->pool, &x->d, &x->body, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", path, err);
        return -1;
    }
    return 0;
}

/* The subscription's contracts and, when a handler or an upcaster runs here,
 * its Lua state. 0, or -1 (said on stderr). */
static int load_handler(exec_run *x)
{
    const wr_subscription *sub = x->sub;
    char err[1024];
    /* logs from the handler go to stderr: stdout carries the report */
    wr_log_set_fd(STDERR_FILENO);
    wr_log_set_level(x->cfg->log_level);
    if (sub->contracts.file != NULL &&
        (x->contracts = wr_contracts_load(sub->contracts.file, err, sizeof(err))) == NULL) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (x->run_here || x->contracts != NULL) {
        /* the handler's state: upcasters run in it, as in a worker */
        x->L = exec_lua(sub, x->have_version ? x->version : NULL, x->breakers, &x->xh, err,
                        sizeof(err));
        if (x->L == NULL) {
            fprintf(stderr, "%s:%d:%d: subscriptions: %s: %s\n", x->cfg->path, sub->line, sub->col,
                    sub->name, err);
            return -1;
        }
    }
    return 0;
}

/* The contract check of the decoded event and its steps into the report
 * (an upcast body replaces the envelope's); sets x->invalid when it refuses. */
static void admit_contract(exec_run *x)
{
    int64_t upcast_from = 0, received = 0;
    wr_reason crs = wr_contracts_admit(x->contracts, &x->sub->contracts, &x->env, &x->ce,
                                       &upcast_from, &received, x->detail, sizeof(x->detail));
    if (crs != WR_RS_NONE) {
        x->invalid = 1;
        x->reason = wr_reason_name(crs);
    }
    if (x->contracts == NULL ||
        (crs == WR_RS_NONE && wr_contracts_current(x->contracts, (const char *)x->env.type.bytes,
                                                   x->env.type.len) < 0)) {
        return;
    }
    exec_contract c = {.contracts = x->contracts,
                       .L = x->L,
                       .rs = crs,
                       .received = received,
                       .upcast_from = upcast_from,
                       .detail = x->detail,
                       .detail_cap = sizeof(x->detail)};
    if (contract_steps(&c, &x->env, x->report, &x->upcast_body) != 0) {
        x->invalid = 1;
        x->reason = wr_reason_name(WR_RS_UPCAST_FAILED);
    }
}

/* What the worker does before any handler runs (worker.c's prepare): decode
 * the envelope, derive the key, check the contract. Starts the report. */
static void admit(exec_run *x)
{
    const wr_subscription *sub = x->sub;
    const wr_idem_policy *pol = &sub->idem;
    int require_id = !(pol->enabled && (pol->source != WR_KEY_MESSAGE_ID || pol->missing_key_hash));
    x->report = json_object();
    x->decision = json_object();
    x->published = json_array();
    json_object_set_new(x->report, "subscription", json_string(sub->name));
    json_object_set_new(x->report, "handler", json_string(sub->handler));
    json_object_set_new(x->report, "handler_version",
                        json_string(x->L              ? wr_lua_version(x->L)
                                    : x->have_version ? x->version
                                                      : ""));
    x->invalid =
        wr_envelope_decode(&x->d, sub->max_body_size > 0 ? (size_t)sub->max_body_size : 512 * 1024,
                           require_id, &x->env, &x->reason, x->detail, sizeof(x->detail)) != 0;
    wr_reason key_rs = WR_RS_NONE;
    if (!x->invalid && pol->enabled &&
        (key_rs = wr_idkey_derive(pol, &x->env, x->key, sizeof(x->key), x->detail,
                                  sizeof(x->detail))) != WR_RS_NONE) {
        x->invalid = 1;
        x->reason = wr_reason_name(key_rs);
    }
    if (!x->invalid) {
        admit_contract(x);
    }
    if (!x->invalid && x->key[0] == '\0') {
        snprintf(x->key, sizeof(x->key), "%.*s", (int)x->env.id.len, (const char *)x->env.id.bytes);
    }
    json_object_set_new(x->report, "attempt", json_integer(x->env.attempt));
    if (x->key[0]) {
        json_object_set_new(x->report, "idempotency_key", json_string(x->key));
    }
}

/* How the event ends: invalid (the DLQ), the kit's envelope (no handler), or
 * the handler's outcome (run here, or read from --result) and the decision.
 * *OK: the handler succeeded. 0, or -1 when the result file is bad. */
static int conclude(exec_run *x, int *ok)
{
    json_t *report = x->report;
    *ok = 0;
    if (x->invalid) {
        json_object_set_new(report, "outcome", json_string("invalid"));
        json_object_set_new(report, "reason", json_string(x->reason));
        json_object_set_new(report, "error", json_string(x->detail));
        json_object_set_new(x->decision, "action", json_string("dead-letter"));
        json_object_set_new(x->decision, "queue", json_string(x->sub->dlq));
        json_object_set_new(x->decision, "reason", json_string(x->reason));
        return 0;
    }
    if (x->opts->envelope) {
        /* the kit runs the handler itself: it needs the key and the attempt */
        char trace[33], span[17];
        json_object_set_new(report, "trace_id",
                            wr_trace_parse(x->env.traceparent, trace, span) == 0
                                ? json_string(trace)
                                : json_null());
        return 0;
    }
    exec_ran ran = {.retry_delay_ms = -1};
    char err[1024];
    if (!x->run_here) {
        if (read_result(x->opts->result_path, x->key, x->sub->name, &ran, x->published, err,
                        sizeof(err)) != 0) {
            fprintf(stderr, "warren exec: %s\n", err);
            return -1;
        }
    } else {
        x->store_buf = run_handler(x->cfg, x->sub, x->L, &x->env, x->key, x->evf->event, &x->es,
                                   &x->store, report, x->published, &ran);
    }
    json_object_set_new(report, "outcome", json_string(wr_outcome_name(ran.out)));
    if (ran.out != WR_OUT_OK) {
        json_object_set_new(report, "reason", json_string(ran.reason));
        json_object_set_new(report, "error", json_string(ran.error));
    }
    *ok = decide_run(x->sub, x->env.attempt, &ran, report, x->decision);
    return 0;
}

/* --envelope: the report for the kit, with the settings and the event file
 * as checked. Returns the exit status. */
static int print_envelope(exec_run *x)
{
    json_t *report = x->report;
    if (x->invalid) {
        json_object_set(report, "decision", x->decision);
    }
    json_object_set_new(report, "settings",
                        settings_json(x->cfg, x->sub, x->have_version ? x->version : NULL));
    /* the file as checked (store numbers as text), and its fakes resolved */
    json_object_set_new(report, "event_file", json_deep_copy(x->evf->event));
    json_object_set_new(report, "http_fakes", fakes_json(x->evf));
    print_json(report);
    return x->invalid ? 1 : 0;
}

/* A run's report, as text or JSON. Returns the exit status. */
static int print_run(exec_run *x, int ok)
{
    json_t *report = x->report;
    json_t *unused = unused_json(x->evf);
    json_object_set(report, "published", x->published);
    json_object_set(report, "decision", x->decision);
    json_object_set_new(report, "http_calls", json_incref(x->xh.calls));
    json_object_set_new(report, "unused_fakes", unused);
    if (x->opts->json_output) {
        print_json(report);
    } else {
        print_report(report, x->sub, x->env.attempt, x->xh.calls, unused, x->xh.live);
    }
    return ok && x->xh.unfaked == 0 ? 0 : 1;
}

int wr_exec_run(const wr_exec_opts *opts)
{
    exec_run x = {.opts = opts,
                  .run_here = !opts->envelope && opts->result_path == NULL,
                  .xh = {.live = opts->live_http, .calls = json_array()}};
    init_amqp_pool(&x.pool, 4096);
    int rc = 2, ok = 0;
    x.cfg = wr_cmd_load(opts->config_path, NULL);
    if (x.cfg == NULL ||
        (x.sub = wr_cmd_subscription(x.cfg, opts->subscription, "warren exec")) == NULL) {
        goto out;
    }
    x.breakers = wr_breakers_create(x.cfg);
    x.have_version = wr_handler_version(x.sub->handler, x.version) == 0;
    if (opts->envelope && opts->event_path == NULL) {
        /* the subscription alone: what testing.ctx{config = ...} reads */
        json_t *j = settings_json(x.cfg, x.sub, x.have_version ? x.version : NULL);
        print_json(j);
        json_decref(j);
        rc = 0;
        goto out;
    }
    if (load_event(&x) != 0 || load_handler(&x) != 0) {
        goto out;
    }
    admit(&x);
    if (conclude(&x, &ok) == 0) {
        rc = opts->envelope ? print_envelope(&x) : print_run(&x, ok);
    }
out:
    exec_free(&x);
    return rc;
}
