/*
 * test_evfile.c: unit tests for evfile, `warren exec`'s event file.
 *
 * Covered: a good file (every key, fakes built into the response head and
 * body ctx.http will read, store numbers turned into Redis's text); every
 * kind of problem with its exact text and FILE:LINE:COL (unknown keys such
 * as a "stroe" typo, wrong types, an attempt of 2147483648 that used to
 * overflow the retry header, data and body together or neither, fakes
 * without method or url, unknown transport errors, a transport error with a
 * status, headers with line breaks), several problems reported together in
 * file order, JSON syntax errors and duplicate keys where jansson finds them;
 * how requests find their fakes (method and exact URL, file order, once each
 * unless reusable); the entry exec tells the user to add.
 */
#include "evfile.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

/* "ev.json:LINE:COL" of the first NEEDLE in TEXT (static rotating buffer). */
static const char *at(const char *text, const char *needle)
{
    static char bufs[4][64];
    static int next;
    char *b = bufs[next++ % 4];
    const char *p = strstr(text, needle);
    if (p == NULL) {
        fprintf(stderr, "needle %s not in the text\n", needle);
        exit(2);
    }
    int line = 1, col = 1;
    for (const char *c = text; c < p; c++) {
        if (*c == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)*c & 0xC0) != 0x80) {
            col++;
        }
    }
    snprintf(b, 64, "ev.json:%d:%d", line, col);
    return b;
}

/* Parse TEXT; the problems land in ERRS. */
static wr_evfile *parse(const char *text, wr_config_errors *errs)
{
    memset(errs, 0, sizeof(*errs));
    return wr_evfile_parse("ev.json", text, strlen(text), errs);
}

/* Check that TEXT is refused with exactly the one problem WANT. */
static void check_refused(const char *text, const char *want, int line)
{
    wr_config_errors errs;
    wr_evfile *ev = parse(text, &errs);
    check_count++;
    if (ev != NULL || errs.count != 1 || strcmp(errs.lines[0], want) != 0) {
        check_failures++;
        fprintf(stderr, "%s:%d: refused %s\n  got %d problem(s): %s\n  want: %s\n", __FILE__, line,
                ev ? "NOT" : "as expected?", errs.count, errs.count ? errs.lines[0] : "(none)",
                want);
    }
    wr_evfile_free(ev);
    wr_config_errors_free(&errs);
}
#define CHECK_REFUSED(text, want) check_refused((text), (want), __LINE__)

static const char *fmt(const char *f, const char *a, const char *b)
{
    static char bufs[4][1024];
    static int next;
    char *o = bufs[next++ % 4];
    snprintf(o, 1024, f, a, b);
    return o;
}

static void test_good(void)
{
    const char *text =
        "{\"id\": \"e-1\", \"type\": \"refund.requested\", \"routing_key\": \"r\",\n"
        " \"exchange\": \"x\", \"content_type\": \"application/json\",\n"
        " \"headers\": {\"x-tenant\": \"acme\", \"n\": 2, \"f\": 1.5, \"b\": true},\n"
        " \"attempt\": 1000000, \"redelivered\": false, \"data\": [1, {\"a\": null}],\n"
        " \"store\": {\"s\": \"v\", \"n\": 5, \"r\": 0.5, \"h\": {\"f\": 7, \"g\": \"x\"},\n"
        "           \"set\": [\"a\", \"b\"]},\n"
        " \"store_at_commit\": {\"s\": null, \"n\": 6},\n"
        " \"http\": [\n"
        "  {\"method\": \"POST\", \"url\": \"http://svc/r\", \"status\": 201,\n"
        "   \"json\": {\"id\": \"r-1\"}, \"headers\": {\"X-Id\": \"7\", \"Retry-After\": 3}},\n"
        "  {\"method\": \"GET\", \"url\": \"https://svc/s?q=1\", \"status\": 503},\n"
        "  {\"method\": \"GET\", \"url\": \"http://svc/t\", \"body\": \"plain\", \"reason\": "
        "\"Fine\",\n"
        "   \"headers\": {\"content-type\": \"text/plain\"}, \"reuse\": true},\n"
        "  {\"method\": \"DELETE\", \"url\": \"http://svc/d\", \"error\": \"connect\"},\n"
        "  {\"method\": \"GET\", \"url\": \"http://svc/e\", \"status\": 299}\n"
        " ]}\n";
    wr_config_errors errs;
    wr_evfile *ev = parse(text, &errs);
    CHECK(ev != NULL);
    CHECK_INT(errs.count, 0);
    if (ev == NULL) {
        for (int i = 0; i < errs.count; i++) {
            fprintf(stderr, "  %s\n", errs.lines[i]);
        }
        wr_config_errors_free(&errs);
        return;
    }
    CHECK_STR(ev->path, "ev.json");
    CHECK_INT(ev->fake_count, 5);
    const wr_evfile_fake *f = &ev->fakes[0];
    CHECK_STR(f->name, "http[0]");
    char pos[64];
    snprintf(pos, sizeof(pos), "ev.json:%d:%d", f->line, f->col);
    CHECK_STR(pos, at(text, "{\"method\": \"POST\""));
    CHECK_STR(f->method, "POST");
    CHECK_STR(f->url, "http://svc/r");
    CHECK_INT(f->status, 201);
    CHECK(f->error == NULL);
    CHECK_STR(f->head, "HTTP/1.1 201 Created\r\nX-Id: 7\r\nRetry-After: 3\r\n"
                       "Content-Type: application/json\r\n");
    CHECK_INT(f->head_len, strlen(f->head));
    CHECK_STR(f->body, "{\"id\":\"r-1\"}");
    CHECK_INT(f->body_len, 12);
    CHECK_STR(ev->fakes[1].head, "HTTP/1.1 503 Service Unavailable\r\n");
    CHECK_STR(ev->fakes[1].body, "");
    CHECK_STR(ev->fakes[2].head, "HTTP/1.1 200 Fine\r\ncontent-type: text/plain\r\n");
    CHECK_STR(ev->fakes[2].body, "plain");
    CHECK_INT(ev->fakes[2].reuse, 1);
    CHECK_STR(ev->fakes[3].error, "Couldn't connect to server");
    CHECK_STR(ev->fakes[4].head, "HTTP/1.1 299\r\n"); /* no standard phrase */
    /* store numbers become the text Redis would return */
    json_t *store = json_object_get(ev->event, "store");
    CHECK_STR(json_string_value(json_object_get(store, "n")), "5");
    CHECK_STR(json_string_value(json_object_get(store, "r")), "0.5");
    CHECK_STR(json_string_value(json_object_get(json_object_get(store, "h"), "f")), "7");
    CHECK_STR(json_string_value(json_object_get(store, "s")), "v");
    CHECK(json_is_array(json_object_get(store, "set")));
    json_t *later = json_object_get(ev->event, "store_at_commit");
    CHECK(json_is_null(json_object_get(later, "s")));
    CHECK_STR(json_string_value(json_object_get(later, "n")), "6");
    CHECK_INT(json_integer_value(json_object_get(ev->event, "attempt")), 1000000);
    wr_evfile_free(ev);
}

static void test_problems(void)
{
    const char *t;
    t = "{\"id\": \"e\", \"data\": {},\n \"stroe\": {}}";
    CHECK_REFUSED(t, fmt("%s: unknown key 'stroe' at the top level (expected one of: id, type, "
                         "routing_key, exchange, content_type, headers, attempt, redelivered, "
                         "data, body, store, http, store_at_commit)%s",
                         at(t, "\"stroe\""), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"attempt\": 2147483648}";
    CHECK_REFUSED(t, fmt("%s: attempt: expected an integer from 1 to 1000000, got 2147483648%s",
                         at(t, "2147"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"attempt\": -1}";
    CHECK_REFUSED(
        t, fmt("%s: attempt: expected an integer from 1 to 1000000, got -1%s", at(t, "-1"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"attempt\": 2.0}";
    CHECK_REFUSED(
        t, fmt("%s: attempt: expected an integer from 1 to 1000000, got 2%s", at(t, "2.0"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"attempt\": \"2\"}";
    CHECK_REFUSED(t, fmt("%s: attempt: expected an integer from 1 to 1000000, got a string%s",
                         at(t, "\"2\""), ""));
    t = "{\"id\": 5, \"data\": {}}";
    CHECK_REFUSED(t, fmt("%s: id: expected a string, got 5%s", at(t, "5"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"redelivered\": \"yes\"}";
    CHECK_REFUSED(
        t, fmt("%s: redelivered: expected true or false, got a string%s", at(t, "\"yes\""), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"headers\": {\"a\": null}}";
    CHECK_REFUSED(t, fmt("%s: headers.a: expected a string, a number or a boolean, got null%s",
                         at(t, "null"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"headers\": []}";
    CHECK_REFUSED(t, fmt("%s: headers: expected an object, got an array%s", at(t, "[]"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"store\": {\"k\": true}}";
    CHECK_REFUSED(t, fmt("%s: store.k: expected a string or a number (a string key), an object "
                         "(a hash) or an array (a set), got a boolean%s",
                         at(t, "true"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"store\": {\"h\": {\"f\": []}}}";
    CHECK_REFUSED(
        t, fmt("%s: store.h.f: expected a string or a number, got an array%s", at(t, "[]"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"store\": {\"s\": [\"a\", 1]}}";
    CHECK_REFUSED(
        t, fmt("%s: store.s[1]: expected a string (a set member), got 1%s", at(t, "1]"), ""));
    /* store_at_commit: what another message changed meanwhile; null deletes a key */
    t = "{\"id\": \"e\", \"data\": {}, \"store_at_commit\": {\"k\": true}}";
    CHECK_REFUSED(t, fmt("%s: store_at_commit.k: expected a string or a number (a string key), "
                         "an object (a hash) or an array (a set), or null (deleted), got a "
                         "boolean%s",
                         at(t, "true"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"store\": {\"k\": null}}";
    CHECK_REFUSED(t, fmt("%s: store.k: expected a string or a number (a string key), an object "
                         "(a hash) or an array (a set), got null%s",
                         at(t, "null"), ""));
    t = "{\"id\": \"e\", \"data\": {},\n  \"body\": \"x\"}";
    CHECK_REFUSED(t, fmt("%s: body: give \"data\" or \"body\", not both%s", at(t, "\"body\""), ""));
    t = "  {\"id\": \"e\"}";
    CHECK_REFUSED(
        t, fmt("%s: the event needs \"data\" (JSON) or \"body\" (a string)%s", at(t, "{"), ""));
    t = "\n[1]";
    CHECK_REFUSED(t, fmt("%s: the event must be a JSON object, got an array%s", at(t, "["), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": {}}";
    CHECK_REFUSED(t,
                  fmt("%s: http: expected an array of fakes, got an object%s", at(t, "{}}"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": [\"GET /\"]}";
    CHECK_REFUSED(t, fmt("%s: http[0]: expected an object, got a string%s", at(t, "\"GET"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": [{\"method\": \"GET\"}]}";
    CHECK_REFUSED(t, fmt("%s: http[0]: missing key 'url'%s", at(t, "{\"method"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": [{\"method\": \"get\", \"url\": \"http://a\"}]}";
    CHECK_REFUSED(t, fmt("%s: http[0].method: expected an HTTP method like GET or POST, got "
                         "'get'%s",
                         at(t, "\"get\""), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": [{\"method\": \"GET\", \"url\": "
        "\"ftp://u:pw@a\"}]}";
    CHECK_REFUSED(t, fmt("%s: http[0].url: expected a URL starting with http:// or https://%s",
                         at(t, "\"ftp"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": [{\"method\": \"GET\", \"url\": \"http://a\", "
        "\"status\": 600}]}";
    CHECK_REFUSED(t, fmt("%s: http[0].status: expected an integer from 100 to 599, got 600%s",
                         at(t, "600"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": [{\"method\": \"GET\", \"url\": \"http://a\", "
        "\"error\": \"refused\"}]}";
    CHECK_REFUSED(t, fmt("%s: http[0].error: expected one of connect, timeout, resolve, reset, "
                         "tls, empty, got 'refused'%s",
                         at(t, "\"refused\""), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": [{\"method\": \"GET\", \"url\": \"http://a\", "
        "\"error\": \"connect\", \"status\": 200}]}";
    CHECK_REFUSED(t, fmt("%s: http[0].error: a transport error has no status, reason, headers, "
                         "json or body%s",
                         at(t, "\"error\""), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": [{\"method\": \"GET\", \"url\": \"http://a\", "
        "\"json\": 1, \"body\": \"x\"}]}";
    CHECK_REFUSED(
        t, fmt("%s: http[0].body: give \"json\" or \"body\", not both%s", at(t, "\"body\""), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": [{\"method\": \"GET\", \"url\": \"http://a\", "
        "\"headers\": {\"X\": \"a\\nb\"}}]}";
    CHECK_REFUSED(t, fmt("%s: http[0].headers.X: expected one line of text, got a line break%s",
                         at(t, "\"a\\n"), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": [{\"method\": \"GET\", \"url\": \"http://a\", "
        "\"headers\": {\"A:B\": \"v\"}}]}";
    CHECK_REFUSED(t, fmt("%s: http[0].headers: a header name cannot be empty or hold a colon, a "
                         "space or a line break%s",
                         at(t, "\"A:B\""), ""));
    t = "{\"id\": \"e\", \"data\": {}, \"http\": [{\"method\": \"GET\", \"url\": \"http://a\", "
        "\"reuse\": 1}]}";
    CHECK_REFUSED(t, fmt("%s: http[0].reuse: expected true or false, got 1%s", at(t, "1}"), ""));
    /* JSON syntax: where jansson says */
    CHECK_REFUSED("{\"id\": \"e\",\n \"data\": }", "ev.json:2:10: unexpected token near '}'");
    CHECK_REFUSED("{\"id\": \"e\", \"data\": {}, \"id\": \"f\"}",
                  "ev.json:1:28: duplicate object key near '\"id\"'");
}

static void test_many_in_file_order(void)
{
    const char *t = "{\"http\": [{\"url\": \"http://a\", \"bogus\": 1}],\n"
                    " \"attempt\": 0,\n"
                    " \"stroe\": 1, \"data\": {}}";
    wr_config_errors errs;
    wr_evfile *ev = parse(t, &errs);
    CHECK(ev == NULL);
    CHECK_INT(errs.count, 4);
    if (errs.count == 4) {
        CHECK_STR(errs.lines[0], fmt("%s: http[0]: missing key 'method'%s", at(t, "{\"url"), ""));
        CHECK_STR(errs.lines[1], fmt("%s: unknown key 'bogus' in http[0] (expected one of: "
                                     "method, url, status, reason, headers, json, body, error, "
                                     "reuse)%s",
                                     at(t, "\"bogus\""), ""));
        CHECK_STR(errs.lines[2], fmt("%s: attempt: expected an integer from 1 to 1000000, got 0%s",
                                     at(t, "0,"), ""));
        CHECK_STR(errs.lines[3], fmt("%s: unknown key 'stroe' at the top level (expected one "
                                     "of: id, type, routing_key, exchange, content_type, "
                                     "headers, attempt, redelivered, data, body, store, http, "
                                     "store_at_commit)%s",
                                     at(t, "\"stroe\""), ""));
    }
    wr_config_errors_free(&errs);
}

static void test_matching(void)
{
    const char *text =
        "{\"body\": \"x\", \"http\": [\n"
        " {\"method\": \"GET\", \"url\": \"http://svc/s\", \"status\": 503},\n"
        " {\"method\": \"GET\", \"url\": \"http://svc/s\", \"status\": 200, \"reuse\": true},\n"
        " {\"method\": \"POST\", \"url\": \"http://svc/s\", \"status\": 201},\n"
        " {\"method\": \"GET\", \"url\": \"http://svc/s?page=2\", \"status\": 202}\n"
        "]}";
    wr_config_errors errs;
    wr_evfile *ev = parse(text, &errs);
    CHECK(ev != NULL);
    if (ev == NULL) {
        wr_config_errors_free(&errs);
        return;
    }
    wr_evfile_fake *f;
    f = wr_evfile_match(ev, "GET", "http://svc/s");
    CHECK_STR(f ? f->name : NULL, "http[0]");
    f = wr_evfile_match(ev, "GET", "http://svc/s");
    CHECK_STR(f ? f->name : NULL, "http[1]");
    f = wr_evfile_match(ev, "GET", "http://svc/s");
    CHECK_STR(f ? f->name : NULL, "http[1]");
    CHECK_INT(ev->fakes[0].uses, 1);
    CHECK_INT(ev->fakes[1].uses, 2);
    f = wr_evfile_match(ev, "POST", "http://svc/s");
    CHECK_STR(f ? f->name : NULL, "http[2]");
    CHECK(wr_evfile_match(ev, "POST", "http://svc/s") == NULL); /* used once */
    CHECK(wr_evfile_match(ev, "PUT", "http://svc/s") == NULL);
    CHECK(wr_evfile_match(ev, "GET", "http://svc/s/") == NULL);       /* exact URL */
    CHECK(wr_evfile_match(ev, "GET", "http://svc/s?page=3") == NULL); /* query included */
    f = wr_evfile_match(ev, "GET", "http://svc/s?page=2");
    CHECK_STR(f ? f->name : NULL, "http[3]");
    wr_evfile_free(ev);

    char *hint = wr_evfile_fake_for("POST", "http://a:b@svc/r?k=\"v\"");
    CHECK_STR(hint, "{\"method\": \"POST\", \"url\": \"http://a:b@svc/r?k=\\\"v\\\"\", "
                    "\"status\": 200, \"json\": {}}");
    free(hint);
}

int main(void)
{
    test_good();
    test_problems();
    test_many_in_file_order();
    test_matching();
    return check_report("test_evfile");
}
