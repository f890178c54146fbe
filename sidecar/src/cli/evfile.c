/*
 * evfile: `warren exec`'s event file, checked, and its HTTP fakes. See evfile.h.
 *
 * The checks walk the jansson tree against two field tables (the event's keys
 * and a fake's keys); positions come from jsonpos. Every problem is kept, then
 * sorted by position, so the report reads in file order like the config's.
 */
#include "evfile.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jsonpos.h"
#include "strutil.h"

/* What a field holds; each kind has its check in check_field(). */
typedef enum {
    F_STRING,       /* a string */
    F_BOOL,         /* true or false */
    F_ANY,          /* any JSON value */
    F_ATTEMPT,      /* an integer from 1 to WR_EVFILE_MAX_ATTEMPT */
    F_MSG_HEADERS,  /* AMQP headers: {name: string | number | boolean} */
    F_STORE,        /* ctx.store's state: {key: string | number | {f: v} | [m, ...]} */
    F_STORE_AT,     /* the same, where null deletes the key: store_at_commit */
    F_FAKES,        /* the "http" list */
    F_METHOD,       /* an HTTP method token: GET, POST, ... */
    F_URL,          /* http:// or https:// */
    F_STATUS,       /* an integer from 100 to 599 */
    F_LINE,         /* a string without line breaks */
    F_RESP_HEADERS, /* response headers: {name: string | number} */
    F_ERROR_KIND,   /* one of the transport errors below */
} field_kind;

typedef struct {
    const char *name;
    field_kind kind;
    int required;
} field;

static const field event_fields[] = {
    {"id", F_STRING, 0},
    {"type", F_STRING, 0},
    {"routing_key", F_STRING, 0},
    {"exchange", F_STRING, 0},
    {"content_type", F_STRING, 0},
    {"headers", F_MSG_HEADERS, 0},
    {"attempt", F_ATTEMPT, 0},
    {"redelivered", F_BOOL, 0},
    {"data", F_ANY, 0},
    {"body", F_STRING, 0},
    {"store", F_STORE, 0},
    {"http", F_FAKES, 0},
    {"store_at_commit", F_STORE_AT, 0},
};

static const field fake_fields[] = {
    {"method", F_METHOD, 1},        {"url", F_URL, 1},
    {"status", F_STATUS, 0},        {"reason", F_LINE, 0},
    {"headers", F_RESP_HEADERS, 0}, {"json", F_ANY, 0},
    {"body", F_STRING, 0},          {"error", F_ERROR_KIND, 0},
    {"reuse", F_BOOL, 0},
};

/* The transport errors a fake can stand for, with the libcurl code whose
 * text the sidecar would show. */
static const struct {
    const char *name;
    CURLcode code;
} error_kinds[] = {
    {"connect", CURLE_COULDNT_CONNECT},      {"timeout", CURLE_OPERATION_TIMEDOUT},
    {"resolve", CURLE_COULDNT_RESOLVE_HOST}, {"reset", CURLE_RECV_ERROR},
    {"tls", CURLE_SSL_CONNECT_ERROR},        {"empty", CURLE_GOT_NOTHING},
};

/* The reason phrase a server sends with STATUS (RFC 9110), or NULL. */
static const char *standard_reason(long status)
{
    static const struct {
        long status;
        const char *reason;
    } phrases[] = {
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {304, "Not Modified"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {409, "Conflict"},
        {410, "Gone"},
        {422, "Unprocessable Content"},
        {429, "Too Many Requests"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
    };
    for (size_t i = 0; i < sizeof(phrases) / sizeof(phrases[0]); i++) {
        if (phrases[i].status == status) {
            return phrases[i].reason;
        }
    }
    return NULL;
}

/* ---- problems, kept with their position -------------------------------------- */

typedef struct {
    int line, col;
    char *text;
} problem;

typedef struct {
    const char *path;
    const wr_jsonpos *pos;
    problem *p;
    int n, cap;
    int oom;
} checker;

static void err_at(checker *ck, wr_textpos at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void err_at(checker *ck, wr_textpos at, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (ck->n == ck->cap) {
        int cap = ck->cap ? ck->cap * 2 : 8;
        problem *p = realloc(ck->p, (size_t)cap * sizeof(*p));
        if (p == NULL) {
            ck->oom = 1;
            return;
        }
        ck->p = p;
        ck->cap = cap;
    }
    size_t need = strlen(ck->path) + strlen(msg) + 32;
    char *text = malloc(need);
    if (text == NULL) {
        ck->oom = 1;
        return;
    }
    snprintf(text, need, "%s:%d:%d: %s", ck->path, at.line, at.col, msg);
    ck->p[ck->n++] = (problem){at.line, at.col, text};
}

static int by_position(const void *a, const void *b)
{
    const problem *x = a, *y = b;
    if (x->line != y->line) {
        return x->line < y->line ? -1 : 1;
    }
    return x->col < y->col ? -1 : x->col > y->col;
}

/* Keep TEXT (malloc'd; NULL when out of memory: nothing kept) in ERRS, or
 * count it as not shown once ERRS holds WR_CONFIG_MAX_ERRORS. */
static void keep(wr_config_errors *errs, char *text)
{
    if (errs->count >= WR_CONFIG_MAX_ERRORS) {
        errs->dropped++;
        free(text);
    } else if (text != NULL) {
        errs->lines[errs->count++] = text;
    }
}

/* Hand the problems over to ERRS, in file order. */
static void report(checker *ck, wr_config_errors *errs)
{
    if (ck->n > 1) {
        qsort(ck->p, (size_t)ck->n, sizeof(*ck->p), by_position);
    }
    for (int i = 0; i < ck->n; i++) {
        keep(errs, ck->p[i].text);
    }
    free(ck->p);
    ck->p = NULL;
    ck->n = ck->cap = 0;
}

static void plain_error(wr_config_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void plain_error(wr_config_errors *errs, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    keep(errs, wr_str_vformat(fmt, ap));
    va_end(ap);
}

/* ---- checks ------------------------------------------------------------------------ */

/* How a value is described after "got": its kind; numbers by their value. */
static const char *kind_of(const json_t *v, char *buf, size_t cap)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
        return buf;
    case JSON_REAL:
        snprintf(buf, cap, "%.17g", json_real_value(v));
        return buf;
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

/* The position of member KEY's value (VALUE) or key in OBJ. */
static wr_textpos member_at(const checker *ck, const json_t *obj, const char *key, int value)
{
    return wr_jsonpos_member(ck->pos, obj, key, value);
}

static int has_line_break(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

static void check_fields(checker *ck, const field *fields, size_t nfields, const json_t *obj,
                         const char *path, wr_textpos obj_at);

/* "expected a string, got ..." */
static void expected_string(checker *ck, const json_t *v, const char *path, wr_textpos at)
{
    char got[64];
    err_at(ck, at, "%s: expected a string, got %s", path, kind_of(v, got, sizeof(got)));
}

static void check_method(checker *ck, const json_t *v, const char *path, wr_textpos at)
{
    const char *m = json_string_value(v);
    int ok = m != NULL && m[0] != '\0' && strlen(m) <= 20;
    for (const char *c = m; ok && *c; c++) {
        ok = (*c >= 'A' && *c <= 'Z') || *c == '-';
    }
    if (!json_is_string(v)) {
        expected_string(ck, v, path, at);
    } else if (!ok) {
        /* a short word is safe to show; a long one is shown by its length */
        if (strlen(m) <= 20 && !has_line_break(m)) {
            err_at(ck, at, "%s: expected an HTTP method like GET or POST, got '%s'", path, m);
        } else {
            err_at(ck, at, "%s: expected an HTTP method like GET or POST", path);
        }
    }
}

static void check_error_kind(checker *ck, const json_t *v, const char *path, wr_textpos at)
{
    const char *e = json_string_value(v);
    int ok = 0;
    for (size_t i = 0; e != NULL && i < sizeof(error_kinds) / sizeof(error_kinds[0]); i++) {
        ok |= strcmp(e, error_kinds[i].name) == 0;
    }
    if (ok) {
        return;
    }
    char list[128] = "";
    for (size_t i = 0; i < sizeof(error_kinds) / sizeof(error_kinds[0]); i++) {
        strcat(list, i ? ", " : "");
        strcat(list, error_kinds[i].name);
    }
    char shown[40], got[64];
    if (e != NULL && strlen(e) <= 20 && !has_line_break(e)) {
        snprintf(shown, sizeof(shown), "'%s'", e);
    } else {
        snprintf(shown, sizeof(shown), "%s", kind_of(v, got, sizeof(got)));
    }
    err_at(ck, at, "%s: expected one of %s, got %s", path, list, shown);
}

/* One header (member K of V, value X, named SUB; V named PATH) of a message
 * (F_MSG_HEADERS: values may be strings, numbers or booleans) or of a fake
 * response (F_RESP_HEADERS: names and one-line values). Positions are looked
 * up only for a problem. */
static void check_header(checker *ck, field_kind kind, const json_t *v, const char *k,
                         const json_t *x, const char *path, const char *sub)
{
    char got[64];
    if (kind == F_MSG_HEADERS) {
        if (!json_is_string(x) && !json_is_number(x) && !json_is_boolean(x)) {
            err_at(ck, member_at(ck, v, k, 1),
                   "%s: expected a string, a number or a boolean, got %s", sub,
                   kind_of(x, got, sizeof(got)));
        }
    } else if (k[0] == '\0' || strpbrk(k, "\r\n: \t") != NULL) {
        err_at(ck, member_at(ck, v, k, 0),
               "%s: a header name cannot be empty or hold a colon, a space "
               "or a line break",
               path);
    } else if (!json_is_string(x) && !json_is_number(x)) {
        err_at(ck, member_at(ck, v, k, 1), "%s: expected a string or a number, got %s", sub,
               kind_of(x, got, sizeof(got)));
    } else if (json_is_string(x) && has_line_break(json_string_value(x))) {
        err_at(ck, member_at(ck, v, k, 1), "%s: expected one line of text, got a line break", sub);
    }
}

/* One key of a store (member K of V, value X, named SUB): a string or number
 * (a string key), an object (a hash), an array of strings (a set), or, in
 * store_at (F_STORE_AT), null (deleted by another message). */
static void check_store_key(checker *ck, field_kind kind, const json_t *v, const char *k,
                            const json_t *x, const char *sub)
{
    char got[64];
    if (kind == F_STORE_AT && json_is_null(x)) {
        return;
    }
    if (json_is_object(x)) {
        const char *f;
        json_t *fv;
        json_object_foreach((json_t *)x, f, fv)
        {
            if (!json_is_string(fv) && !json_is_number(fv)) {
                err_at(ck, member_at(ck, x, f, 1),
                       "%s.%.200s: expected a string or a number, got %s", sub, f,
                       kind_of(fv, got, sizeof(got)));
            }
        }
    } else if (json_is_array(x)) {
        size_t i;
        json_t *m;
        json_array_foreach((json_t *)x, i, m)
        {
            if (!json_is_string(m)) {
                err_at(ck, wr_jsonpos_element(ck->pos, x, i),
                       "%s[%zu]: expected a string (a set member), got %s", sub, i,
                       kind_of(m, got, sizeof(got)));
            }
        }
    } else if (!json_is_string(x) && !json_is_number(x)) {
        err_at(ck, member_at(ck, v, k, 1),
               "%s: expected a string or a number (a string key), an object (a hash) "
               "or an array (a set)%s, got %s",
               sub, kind == F_STORE_AT ? ", or null (deleted)" : "", kind_of(x, got, sizeof(got)));
    }
}

/* An object (V, named PATH, at AT) whose members are all checked alike: headers
 * (check_header) or a store (check_store_key), each member named PATH.KEY. */
static void check_members(checker *ck, field_kind kind, const json_t *v, const char *path,
                          wr_textpos at)
{
    char got[64];
    if (!json_is_object(v)) {
        err_at(ck, at, "%s: expected an object, got %s", path, kind_of(v, got, sizeof(got)));
        return;
    }
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x)
    {
        char sub[600];
        snprintf(sub, sizeof(sub), "%.250s.%.250s", path, k);
        if (kind == F_STORE || kind == F_STORE_AT) {
            check_store_key(ck, kind, v, k, x, sub);
        } else {
            check_header(ck, kind, v, k, x, path, sub);
        }
    }
}

/* One fake of the "http" list (F, named SUB, at FAT). */
static void check_fake(checker *ck, const json_t *f, const char *sub, wr_textpos fat)
{
    char got[64];
    if (!json_is_object(f)) {
        err_at(ck, fat, "%s: expected an object, got %s", sub, kind_of(f, got, sizeof(got)));
        return;
    }
    check_fields(ck, fake_fields, sizeof(fake_fields) / sizeof(fake_fields[0]), f, sub, fat);
    if (json_object_get(f, "json") != NULL && json_object_get(f, "body") != NULL) {
        err_at(ck, member_at(ck, f, "body", 0), "%s.body: give \"json\" or \"body\", not both",
               sub);
    }
    if (json_object_get(f, "error") != NULL &&
        (json_object_get(f, "status") || json_object_get(f, "reason") ||
         json_object_get(f, "headers") || json_object_get(f, "json") ||
         json_object_get(f, "body"))) {
        err_at(ck, member_at(ck, f, "error", 0),
               "%s.error: a transport error has no status, reason, headers, json or "
               "body",
               sub);
    }
}

static void check_fakes(checker *ck, const json_t *v, const char *path, wr_textpos at)
{
    char got[64];
    if (!json_is_array(v)) {
        err_at(ck, at, "%s: expected an array of fakes, got %s", path,
               kind_of(v, got, sizeof(got)));
        return;
    }
    size_t i;
    json_t *f;
    json_array_foreach((json_t *)v, i, f)
    {
        char sub[600];
        snprintf(sub, sizeof(sub), "%.250s[%zu]", path, i);
        check_fake(ck, f, sub, wr_jsonpos_element(ck->pos, v, i));
    }
}

/* Check the value V of member NAME (path PATH) at AT against KIND. */
static void check_field(checker *ck, field_kind kind, const json_t *v, const char *path,
                        wr_textpos at)
{
    char got[64];
    switch (kind) {
    case F_ANY:
        return;
    case F_STRING:
        if (!json_is_string(v)) {
            expected_string(ck, v, path, at);
        }
        return;
    case F_LINE:
        if (!json_is_string(v)) {
            expected_string(ck, v, path, at);
        } else if (has_line_break(json_string_value(v))) {
            err_at(ck, at, "%s: expected one line of text, got a line break", path);
        }
        return;
    case F_BOOL:
        if (!json_is_boolean(v)) {
            err_at(ck, at, "%s: expected true or false, got %s", path,
                   kind_of(v, got, sizeof(got)));
        }
        return;
    case F_ATTEMPT:
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > WR_EVFILE_MAX_ATTEMPT) {
            err_at(ck, at, "%s: expected an integer from 1 to %d, got %s", path,
                   WR_EVFILE_MAX_ATTEMPT, kind_of(v, got, sizeof(got)));
        }
        return;
    case F_STATUS:
        if (!json_is_integer(v) || json_integer_value(v) < 100 || json_integer_value(v) > 599) {
            err_at(ck, at, "%s: expected an integer from 100 to 599, got %s", path,
                   kind_of(v, got, sizeof(got)));
        }
        return;
    case F_METHOD:
        check_method(ck, v, path, at);
        return;
    case F_URL: {
        const char *u = json_string_value(v);
        if (u == NULL) {
            expected_string(ck, v, path, at);
        } else if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) {
            /* not shown: a URL may hold a password */
            err_at(ck, at, "%s: expected a URL starting with http:// or https://", path);
        }
        return;
    }
    case F_ERROR_KIND:
        check_error_kind(ck, v, path, at);
        return;
    case F_MSG_HEADERS:
    case F_RESP_HEADERS:
    case F_STORE:
    case F_STORE_AT:
        check_members(ck, kind, v, path, at);
        return;
    case F_FAKES:
        check_fakes(ck, v, path, at);
        return;
    }
}

/* Check object OBJ (at OBJ_AT, named PATH: "" for the top level) against FIELDS. */
static void check_fields(checker *ck, const field *fields, size_t nfields, const json_t *obj,
                         const char *path, wr_textpos obj_at)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        const field *f = NULL;
        for (size_t i = 0; i < nfields; i++) {
            if (strcmp(fields[i].name, k) == 0) {
                f = &fields[i];
            }
        }
        if (f == NULL) {
            char known[512];
            size_t used = 0;
            known[0] = '\0';
            for (size_t i = 0; i < nfields && used < sizeof(known); i++) {
                used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s", i ? ", " : "",
                                         fields[i].name);
            }
            err_at(ck, member_at(ck, obj, k, 0), "unknown key '%.100s' %s%s (expected one of: %s)",
                   k, path[0] ? "in " : "at the top level", path, known);
            continue;
        }
        char sub[600];
        snprintf(sub, sizeof(sub), "%.250s%s%.250s", path, path[0] ? "." : "", k);
        check_field(ck, f->kind, v, sub, member_at(ck, obj, k, 1));
    }
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].required && json_object_get(obj, fields[i].name) == NULL) {
            err_at(ck, obj_at, "%s%smissing key '%s'", path, path[0] ? ": " : "", fields[i].name);
        }
    }
}

/* ---- fakes ------------------------------------------------------------------------- */

/* Append "FMT" to the growing string *BUF (length *LEN). -1 when out of memory. */
static int append(char **buf, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int append(char **buf, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *b = realloc(*buf, *len + (size_t)n + 1);
    if (b == NULL) {
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(b + *len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *buf = b;
    *len += (size_t)n;
    return 0;
}

/* Build fake F (already checked) from its JSON object O. -1 when out of memory. */
static int build_fake(wr_evfile_fake *f, const json_t *o)
{
    f->method = strdup(json_string_value(json_object_get(o, "method")));
    f->url = strdup(json_string_value(json_object_get(o, "url")));
    f->reuse = json_is_true(json_object_get(o, "reuse"));
    if (f->method == NULL || f->url == NULL) {
        return -1;
    }
    const char *kind = json_string_value(json_object_get(o, "error"));
    if (kind != NULL) {
        for (size_t i = 0; i < sizeof(error_kinds) / sizeof(error_kinds[0]); i++) {
            if (strcmp(kind, error_kinds[i].name) == 0) {
                f->error = curl_easy_strerror(error_kinds[i].code);
            }
        }
        return 0;
    }
    json_t *st = json_object_get(o, "status");
    f->status = st != NULL ? (long)json_integer_value(st) : 200;
    const char *reason = json_string_value(json_object_get(o, "reason"));
    if (reason == NULL) {
        reason = standard_reason(f->status);
    }
    int rc = reason != NULL
                 ? append(&f->head, &f->head_len, "HTTP/1.1 %ld %s\r\n", f->status, reason)
                 : append(&f->head, &f->head_len, "HTTP/1.1 %ld\r\n", f->status);
    int has_ct = 0;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(o, "headers"), k, v)
    {
        has_ct |= strcasecmp(k, "content-type") == 0;
        if (json_is_string(v)) {
            rc |= append(&f->head, &f->head_len, "%s: %s\r\n", k, json_string_value(v));
        } else if (json_is_integer(v)) {
            rc |=
                append(&f->head, &f->head_len, "%s: %lld\r\n", k, (long long)json_integer_value(v));
        } else {
            rc |= append(&f->head, &f->head_len, "%s: %.17g\r\n", k, json_number_value(v));
        }
    }
    json_t *js = json_object_get(o, "json");
    json_t *body = json_object_get(o, "body");
    if (js != NULL) {
        f->body = json_dumps(js, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        f->body_len = f->body ? strlen(f->body) : 0;
        if (!has_ct) {
            rc |= append(&f->head, &f->head_len, "Content-Type: application/json\r\n");
        }
    } else if (body != NULL) {
        f->body = wr_str_dup_range(json_string_value(body), json_string_length(body));
        f->body_len = json_string_length(body);
    } else {
        f->body = strdup("");
    }
    return rc != 0 || f->body == NULL ? -1 : 0;
}

/* ctx.store reads values as Redis returns them: strings. Numbers in the
 * file's "store" (a string key's value, a hash's fields) become their text. */
static void store_numbers_to_text(json_t *store)
{
    void *it;
    for (it = json_object_iter(store); it != NULL; it = json_object_iter_next(store, it)) {
        json_t *v = json_object_iter_value(it);
        if (json_is_object(v)) {
            store_numbers_to_text(v);
            continue;
        }
        char num[32];
        if (json_is_integer(v)) {
            snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        } else if (json_is_real(v)) {
            snprintf(num, sizeof(num), "%.17g", json_real_value(v));
        } else {
            continue;
        }
        json_object_iter_set_new(store, it, json_string(num));
    }
}

/* ---- the file ---------------------------------------------------------------------- */

wr_evfile *wr_evfile_parse(const char *path, const char *text, size_t len, wr_config_errors *errs)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        plain_error(errs, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    wr_jsonpos *pos = wr_jsonpos_index(text, len, root);
    if (pos == NULL) {
        plain_error(errs, "%s: cannot index the event file (out of memory?)", path);
        json_decref(root);
        return NULL;
    }
    checker ck = {.path = path, .pos = pos};
    wr_textpos root_at = wr_jsonpos_root(pos);
    char got[64];
    if (!json_is_object(root)) {
        err_at(&ck, root_at, "the event must be a JSON object, got %s",
               kind_of(root, got, sizeof(got)));
    } else {
        check_fields(&ck, event_fields, sizeof(event_fields) / sizeof(event_fields[0]), root, "",
                     root_at);
        int has_data = json_object_get(root, "data") != NULL;
        int has_body = json_object_get(root, "body") != NULL;
        if (has_data && has_body) {
            err_at(&ck, member_at(&ck, root, "body", 0),
                   "body: give \"data\" or \"body\", not both");
        } else if (!has_data && !has_body) {
            err_at(&ck, root_at, "the event needs \"data\" (JSON) or \"body\" (a string)");
        }
    }
    wr_evfile *ev = NULL;
    if (ck.n == 0 && !ck.oom) {
        ev = calloc(1, sizeof(*ev));
        json_t *fakes = json_object_get(root, "http");
        size_t n = json_array_size(fakes);
        int ok = ev != NULL && (ev->path = strdup(path)) != NULL;
        if (ok && n > 0) {
            ev->fakes = calloc(n, sizeof(*ev->fakes));
            ok = ev->fakes != NULL;
        }
        for (size_t i = 0; ok && i < n; i++) {
            wr_evfile_fake *f = &ev->fakes[i];
            wr_textpos at = wr_jsonpos_element(pos, fakes, i);
            ev->fake_count++;
            snprintf(f->name, sizeof(f->name), "http[%zu]", i);
            f->line = at.line;
            f->col = at.col;
            ok = build_fake(f, json_array_get(fakes, i)) == 0;
        }
        for (int i = 0; ok && i < 2; i++) {
            json_t *store = json_object_get(root, i == 0 ? "store" : "store_at_commit");
            if (json_is_object(store)) {
                store_numbers_to_text(store);
            }
        }
        if (!ok) {
            plain_error(errs, "%s: out of memory", path);
            wr_evfile_free(ev);
            ev = NULL;
        } else {
            ev->event = json_incref(root);
        }
    } else if (ck.oom) {
        plain_error(errs, "%s: out of memory", path);
    }
    report(&ck, errs);
    wr_jsonpos_free(pos);
    json_decref(root);
    return ev;
}

wr_evfile *wr_evfile_load(const char *path, wr_config_errors *errs)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        plain_error(errs, "%s: cannot open the event file: %s", path, strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            char *t = realloc(text, cap);
            if (t == NULL) {
                free(text);
                fclose(fp);
                plain_error(errs, "%s: out of memory", path);
                return NULL;
            }
            text = t;
        }
        size_t n = fread(text + len, 1, cap - len, fp);
        len += n;
        if (n == 0) {
            break;
        }
    }
    int bad = ferror(fp);
    fclose(fp);
    wr_evfile *ev = NULL;
    if (bad) {
        plain_error(errs, "%s: cannot read the event file", path);
    } else {
        ev = wr_evfile_parse(path, text, len, errs);
    }
    free(text);
    return ev;
}

void wr_evfile_free(wr_evfile *ev)
{
    if (ev == NULL) {
        return;
    }
    for (int i = 0; i < ev->fake_count; i++) {
        free(ev->fakes[i].method);
        free(ev->fakes[i].url);
        free(ev->fakes[i].head);
        free(ev->fakes[i].body);
    }
    free(ev->fakes);
    json_decref(ev->event);
    free(ev->path);
    free(ev);
}

wr_evfile_fake *wr_evfile_match(wr_evfile *ev, const char *method, const char *url)
{
    for (int i = 0; i < ev->fake_count; i++) {
        wr_evfile_fake *f = &ev->fakes[i];
        if (strcmp(f->method, method) == 0 && strcmp(f->url, url) == 0 &&
            (f->uses == 0 || f->reuse)) {
            f->uses++;
            return f;
        }
    }
    return NULL;
}

char *wr_evfile_fake_for(const char *method, const char *url)
{
    json_t *o =
        json_pack("{s:s, s:s, s:i, s:{}}", "method", method, "url", url, "status", 200, "json");
    char *s = o != NULL ? json_dumps(o, JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s;
}
