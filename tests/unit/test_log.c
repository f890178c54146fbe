/*
 * test_log.c: unit tests for the JSON log lines (log.c).
 *
 * Lines are written to a temporary file (wr_log_set_fd), read back and
 * checked two ways: parsed with jansson, which refuses invalid JSON and
 * invalid UTF-8, and compared exactly (the "ts" value replaced by "T"), since
 * the line format is an interface operators grep. Whatever goes in (long
 * strings, invalid UTF-8, raw JSON from the Lua side, NaN), every line must
 * stay one valid JSON object of valid UTF-8 within WR_LOG_LINE_MAX bytes, and
 * a cut string must say that it was cut.
 */
#include "log.h"

#include "check.h"
#include "envelope.h" /* wr_utf8_check */

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int out_fd = -1; /* the file the log writes to */

/* Everything written since the last call, as one string (malloc'd); empties the file. */
static char *take_output(void)
{
    off_t end = lseek(out_fd, 0, SEEK_CUR);
    char *s = calloc(1, (size_t)end + 1);
    if (end > 0 && pread(out_fd, s, (size_t)end, 0) != (ssize_t)end) {
        exit(2);
    }
    if (ftruncate(out_fd, 0) != 0 || lseek(out_fd, 0, SEEK_SET) != 0) {
        exit(2);
    }
    return s;
}

/*
 * The one line written since the last call, checked: it ends in a newline,
 * fits WR_LOG_LINE_MAX, is valid UTF-8 and parses as a JSON object. Returns
 * the line with the value of "ts" replaced by "T" (malloc'd; NULL on failure,
 * reported), and the parsed object in *OBJ (NULL if it did not parse).
 */
static char *take_line_at(int caller, json_t **obj)
{
    char *s = take_output();
    size_t n = strlen(s);
    json_error_t jerr;

    *obj = NULL;
    check_count++;
    if (n == 0 || s[n - 1] != '\n' || memchr(s, '\n', n - 1) != NULL) {
        check_failures++;
        fprintf(stderr, "%s:%d: expected exactly one line, got %zu bytes: %s\n", __FILE__, caller,
                n, s);
        free(s);
        return NULL;
    }
    check_count++;
    if (n > WR_LOG_LINE_MAX) {
        check_failures++;
        fprintf(stderr, "%s:%d: line of %zu bytes exceeds %d\n", __FILE__, caller, n,
                WR_LOG_LINE_MAX);
    }
    check_count++;
    if (wr_utf8_check((const unsigned char *)s, n) != n) {
        check_failures++;
        fprintf(stderr, "%s:%d: invalid UTF-8 at byte %zu\n", __FILE__, caller,
                wr_utf8_check((const unsigned char *)s, n));
    }
    *obj = json_loadb(s, n, 0, &jerr);
    check_count++;
    if (*obj == NULL || !json_is_object(*obj)) {
        check_failures++;
        fprintf(stderr, "%s:%d: not a JSON object (%s): %.300s\n", __FILE__, caller, jerr.text, s);
    }
    /* "ts":"2026-11-30T01:22:34.123Z" -> "ts":"T" */
    char *ts = strstr(s, "\"ts\":\"");
    if (ts != NULL && strlen(ts) > 6 + 24) {
        memmove(ts + 6, ts + 6 + 24 - 1, strlen(ts + 6 + 24 - 1) + 1);
        ts[6] = 'T';
    }
    return s;
}

#define TAKE_LINE(obj) take_line_at(__LINE__, obj)

/* A line with only these checks and an exact comparison. */
static void expect_line_at(int caller, const char *want)
{
    json_t *obj;
    char *got = take_line_at(caller, &obj);
    check_count++;
    if (got == NULL || strcmp(got, want) != 0) {
        check_failures++;
        fprintf(stderr, "%s:%d:\n   got: %s  want: %s", __FILE__, caller, got ? got : "(null)\n",
                want);
    }
    json_decref(obj);
    free(got);
}

#define EXPECT_LINE(want) expect_line_at(__LINE__, want)

/* A string of N copies of C (malloc'd). */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_plain_lines(void)
{
    wr_logline l;

    wr_log_begin(&l, WR_LOG_INFO, "message handled");
    wr_log_str(&l, "subscription", "orders");
    wr_log_int(&l, "attempt", 2);
    wr_log_num(&l, "duration_ms", 0.41);
    wr_log_bool(&l, "redelivered", 0);
    wr_log_str(&l, "trace_id", NULL);
    wr_log_raw(&l, "fields", "{\"a\":1}", 7);
    wr_log_end(&l);
    EXPECT_LINE("{\"ts\":\"T\",\"level\":\"info\",\"msg\":\"message handled\","
                "\"subscription\":\"orders\",\"attempt\":2,\"duration_ms\":0.410,"
                "\"redelivered\":false,\"trace_id\":null,\"fields\":{\"a\":1}}\n");

    wr_log_begin(&l, WR_LOG_WARN, "quote \" backslash \\ newline \n tab \t bell \a del \x7f");
    wr_log_end(&l);
    EXPECT_LINE("{\"ts\":\"T\",\"level\":\"warn\",\"msg\":\"quote \\\" backslash \\\\ newline "
                "\\n tab \\t bell \\u0007 del \\u007f\"}\n");
}

/*
 * A message over 8 KiB (ctx.log of a big string) used to give
 * {"ts":...,"msg":","truncated":true}: invalid JSON, message lost. Now it is
 * cut at 4 KiB with a marker saying how much was cut, and the fields after it
 * still fit.
 */
static void test_long_message(void)
{
    wr_logline l;
    json_t *obj;
    char *big = repeat('m', 10000);

    wr_log_begin(&l, WR_LOG_INFO, big);
    wr_log_str(&l, "subscription", "orders");
    wr_log_end(&l);
    char *line = TAKE_LINE(&obj);
    const char *msg = json_string_value(json_object_get(obj, "msg"));
    CHECK(msg != NULL);
    if (msg != NULL) {
        size_t mlen = strlen(msg);
        CHECK(mlen <= WR_LOG_VALUE_MAX);
        CHECK(mlen > WR_LOG_VALUE_MAX - 40);
        char want_tail[64];
        size_t shown = strspn(msg, "m");
        snprintf(want_tail, sizeof(want_tail), "...(%zu more bytes)", 10000 - shown);
        CHECK_STR(msg + shown, want_tail);
    }
    CHECK_STR(json_string_value(json_object_get(obj, "subscription")), "orders");
    CHECK(json_is_true(json_object_get(obj, "truncated")));
    json_decref(obj);
    free(line);

    /* Exactly at the limit: whole, no marker. */
    char *fits = repeat('f', WR_LOG_VALUE_MAX);
    wr_log_begin(&l, WR_LOG_INFO, "m");
    wr_log_str(&l, "body", fits);
    wr_log_end(&l);
    line = TAKE_LINE(&obj);
    CHECK_STR(json_string_value(json_object_get(obj, "body")), fits);
    CHECK(json_object_get(obj, "truncated") == NULL);
    json_decref(obj);
    free(line);
    free(fits);

    /* Escapes count: 3000 control bytes take 18000 bytes escaped. */
    char *ctl = repeat('\x01', 3000);
    wr_log_begin(&l, WR_LOG_INFO, "m");
    wr_log_str(&l, "body", ctl);
    wr_log_end(&l);
    line = TAKE_LINE(&obj);
    const char *body = json_string_value(json_object_get(obj, "body"));
    CHECK(body != NULL && strlen(body) > 600 && strstr(body, " more bytes)") != NULL);
    json_decref(obj);
    free(line);
    free(ctl);

    /* Several long strings: each cut, the line stays within its size. */
    wr_log_begin(&l, WR_LOG_ERROR, big);
    for (int i = 0; i < 6; i++) {
        char key[16];
        snprintf(key, sizeof(key), "f%d", i);
        wr_log_str(&l, key, big);
    }
    wr_log_int(&l, "n", 7);
    wr_log_end(&l);
    line = TAKE_LINE(&obj);
    CHECK(json_is_true(json_object_get(obj, "truncated")));
    CHECK(json_object_get(obj, "f0") != NULL);
    json_decref(obj);
    free(line);

    /* printf-style lines are cut the same way. */
    wr_logf(WR_LOG_WARN, "x%sy", big);
    line = TAKE_LINE(&obj);
    msg = json_string_value(json_object_get(obj, "msg"));
    CHECK(msg != NULL && msg[0] == 'x' && strstr(msg, "...(") != NULL);
    json_decref(obj);
    free(line);
    free(big);
}

/* A cut never splits a UTF-8 sequence. */
static void test_cut_on_character(void)
{
    wr_logline l;
    json_t *obj;
    size_t n = 3 * 3000;
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i += 3) {
        memcpy(s + i, "\xE2\x82\xAC", 3); /* EURO SIGN */
    }
    s[n] = '\0';
    wr_log_begin(&l, WR_LOG_INFO, s);
    wr_log_end(&l);
    char *line = TAKE_LINE(&obj);
    const char *msg = json_string_value(json_object_get(obj, "msg"));
    CHECK(msg != NULL);
    if (msg != NULL) {
        size_t shown = 0;
        while (strncmp(msg + shown, "\xE2\x82\xAC", 3) == 0) {
            shown += 3;
        }
        char want_tail[64];
        snprintf(want_tail, sizeof(want_tail), "...(%zu more bytes)", n - shown);
        CHECK_STR(msg + shown, want_tail);
    }
    json_decref(obj);
    free(line);
    free(s);
}

/* Invalid UTF-8 becomes U+FFFD, in strings and in raw JSON from the Lua side. */
static void test_invalid_utf8(void)
{
    wr_logline l;

    wr_log_begin(&l, WR_LOG_INFO, "bad \xff\xfe bytes");
    wr_log_strn(&l, "id", "a\xc3(b\xed\xa0\x80z\xe2\x82", 10);
    wr_log_end(&l);
    EXPECT_LINE("{\"ts\":\"T\",\"level\":\"info\",\"msg\":\"bad \xEF\xBF\xBD\xEF\xBF\xBD bytes\","
                "\"id\":\"a\xEF\xBF\xBD(b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz\xEF\xBF\xBD"
                "\xEF\xBF\xBD\"}\n");

    /* lua-cjson passes string bytes through as they are. */
    static const char raw[] = "{\"k\":\"caf\xe9\",\"ok\":\"\xc3\xa9\"}";
    wr_log_begin(&l, WR_LOG_INFO, "fields");
    wr_log_raw(&l, "fields", raw, sizeof(raw) - 1);
    wr_log_end(&l);
    EXPECT_LINE("{\"ts\":\"T\",\"level\":\"info\",\"msg\":\"fields\","
                "\"fields\":{\"k\":\"caf\xEF\xBF\xBD\",\"ok\":\"\xc3\xa9\"}}\n");

    /* Keys are escaped and cleaned like values. */
    wr_log_begin(&l, WR_LOG_INFO, "k");
    wr_log_str(&l, "we\"ird\xff", "v");
    wr_log_end(&l);
    EXPECT_LINE(
        "{\"ts\":\"T\",\"level\":\"info\",\"msg\":\"k\",\"we\\\"ird\xEF\xBF\xBD\":\"v\"}\n");
}

/*
 * Raw JSON that does not fit the line cannot be cut as JSON: it is written as
 * a string instead, cut with the marker, so the line still parses.
 */
static void test_long_raw(void)
{
    wr_logline l;
    json_t *obj;
    size_t n = 20000;
    char *raw = malloc(n + 1);
    memcpy(raw, "{\"big\":\"", 8);
    memset(raw + 8, 'r', n - 10);
    memcpy(raw + n - 2, "\"}", 3);

    wr_log_begin(&l, WR_LOG_INFO, "raw");
    wr_log_str(&l, "subscription", "orders");
    wr_log_raw(&l, "fields", raw, n);
    wr_log_str(&l, "after", "yes");
    wr_log_end(&l);
    char *line = TAKE_LINE(&obj);
    const char *fields = json_string_value(json_object_get(obj, "fields"));
    CHECK(fields != NULL && strncmp(fields, "{\"big\":\"rrr", 11) == 0 &&
          strstr(fields, " more bytes)") != NULL);
    CHECK_STR(json_string_value(json_object_get(obj, "after")), "yes");
    CHECK(json_is_true(json_object_get(obj, "truncated")));
    json_decref(obj);
    free(line);
    free(raw);
}

/* Numbers JSON cannot write (NaN, infinities) are written as null. */
static void test_non_finite(void)
{
    wr_logline l;

    wr_log_begin(&l, WR_LOG_INFO, "n");
    wr_log_num(&l, "a", NAN);
    wr_log_num(&l, "b", INFINITY);
    wr_log_num(&l, "c", -INFINITY);
    wr_log_num(&l, "d", -1.5);
    wr_log_end(&l);
    EXPECT_LINE("{\"ts\":\"T\",\"level\":\"info\",\"msg\":\"n\",\"a\":null,\"b\":null,"
                "\"c\":null,\"d\":-1.500}\n");
}

/* A line filled with many small fields: those that do not fit are dropped, marked. */
static void test_many_fields(void)
{
    wr_logline l;
    json_t *obj;

    wr_log_begin(&l, WR_LOG_INFO, "many");
    for (int i = 0; i < 2000; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        wr_log_str(&l, key, "value");
    }
    wr_log_end(&l);
    char *line = TAKE_LINE(&obj);
    CHECK(json_is_true(json_object_get(obj, "truncated")));
    CHECK_STR(json_string_value(json_object_get(obj, "k0")), "value");
    CHECK(json_object_get(obj, "k1999") == NULL);
    json_decref(obj);
    free(line);
}

/* Times a header or a clock may hold, before 1970 or past what gmtime knows. */
static void test_format_time(void)
{
    char out[32];
    wr_format_time(1700000000123LL, out, sizeof(out));
    CHECK_STR(out, "2023-11-14T22:13:20.123Z");
    wr_format_time(-1, out, sizeof(out));
    CHECK_STR(out, "1969-12-31T23:59:59.999Z");
    wr_format_time(INT64_MIN, out, sizeof(out)); /* no overflow; milliseconds 0..999 */
    CHECK(strlen(out) > 5 && strcmp(out + strlen(out) - 5, ".192Z") == 0);
    wr_format_time(0, out, 8);
    CHECK_STR(out, "1970-01");
}

int main(void)
{
    char path[] = "/tmp/wr-test-log-XXXXXX";
    out_fd = mkstemp(path);
    if (out_fd < 0) {
        fprintf(stderr, "mkstemp: %s\n", strerror(errno));
        return 2;
    }
    unlink(path);
    wr_log_set_fd(out_fd);
    wr_log_set_level(WR_LOG_DEBUG);
    test_plain_lines();
    test_long_message();
    test_cut_on_character();
    test_invalid_utf8();
    test_long_raw();
    test_non_finite();
    test_many_fields();
    test_format_time();
    close(out_fd);
    return check_report("test_log");
}
