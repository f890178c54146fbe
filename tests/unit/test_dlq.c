/*
 * test_dlq.c: unit tests for the dlq module.
 *
 * wr_dlq_build_props() is given hand-built original properties and a
 * wr_failure and must produce the properties of the failed message's copy:
 * the original properties kept (message id, type, content type, correlation
 * id, timestamp, app headers), expiration and user_id dropped, delivery mode
 * 2, and each x-warren-* header present exactly once with its exact value
 * (times in ISO-8601 UTC from now_ms). A copy that fails again (it came back
 * through a retry queue, with its x-warren-* headers) keeps the first failure
 * time and the original exchange and routing key, replaces the rest, and
 * accumulates x-warren-errors up to WR_DLQ_MAX_ERRORS, dropping the oldest.
 * Error text is cut to WR_DLQ_MAX_ERROR bytes without splitting a UTF-8
 * sequence (wr_utf8_truncate is also checked directly).
 */
#include "dlq.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

/* A view of a C string as amqp_bytes_t (the bytes are never written). */
static amqp_bytes_t B(const char *s)
{
    amqp_bytes_t b;
    b.len = strlen(s);
    b.bytes = (void *)s;
    return b;
}

/* How many entries of T have key KEY (a header must not appear twice). */
static int key_count(const amqp_table_t *t, const char *key)
{
    int n = 0;
    size_t len = strlen(key);
    for (int i = 0; i < t->num_entries; i++) {
        n += t->entries[i].key.len == len && memcmp(t->entries[i].key.bytes, key, len) == 0;
    }
    return n;
}

static const amqp_field_value_t *find(const amqp_table_t *t, const char *key)
{
    size_t len = strlen(key);
    for (int i = 0; i < t->num_entries; i++) {
        if (t->entries[i].key.len == len && memcmp(t->entries[i].key.bytes, key, len) == 0) {
            return &t->entries[i].value;
        }
    }
    return NULL;
}

/* The string header KEY of T as a C string (in a rotating static buffer), or NULL
 * when it is absent or not a string. */
static const char *hstr(const amqp_table_t *t, const char *key)
{
    static char bufs[4][4096];
    static int next;
    const amqp_field_value_t *v = find(t, key);
    if (v == NULL || (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES) ||
        v->value.bytes.len >= sizeof(bufs[0])) {
        return NULL;
    }
    char *b = bufs[next++ % 4];
    memcpy(b, v->value.bytes.bytes, v->value.bytes.len);
    b[v->value.bytes.len] = '\0';
    return b;
}

/* Entry I of the x-warren-errors array of T as a C string, or NULL. */
static const char *error_at(const amqp_table_t *t, int i)
{
    static char buf[4096];
    const amqp_field_value_t *v = find(t, "x-warren-errors");
    if (v == NULL || v->kind != AMQP_FIELD_KIND_ARRAY || i >= v->value.array.num_entries) {
        return NULL;
    }
    const amqp_field_value_t *e = &v->value.array.entries[i];
    if (e->kind != AMQP_FIELD_KIND_UTF8 || e->value.bytes.len >= sizeof(buf)) {
        return NULL;
    }
    memcpy(buf, e->value.bytes.bytes, e->value.bytes.len);
    buf[e->value.bytes.len] = '\0';
    return buf;
}

static int error_count(const amqp_table_t *t)
{
    const amqp_field_value_t *v = find(t, "x-warren-errors");
    return v != NULL && v->kind == AMQP_FIELD_KIND_ARRAY ? v->value.array.num_entries : -1;
}

static int bytes_eq(amqp_bytes_t b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && (n == 0 || memcmp(b.bytes, s, n) == 0);
}

static wr_failure base_failure(void)
{
    wr_failure f;
    memset(&f, 0, sizeof(f));
    f.reason = "handler-error";
    f.error_class = "error";
    f.error = "handler.lua:12: stock service said no";
    f.attempt = 1;
    f.now_ms = 1700000000123LL; /* 2023-11-14T22:13:20.123Z */
    f.subscription = "orders";
    f.queue = "orders.q";
    f.handler = "orders.lua";
    f.handler_version = "0123456789ab";
    f.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    return f;
}

static void test_first_failure(void)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);

    amqp_table_entry_t h[4];
    memset(h, 0, sizeof(h));
    h[0].key = B("tenant");
    h[0].value.kind = AMQP_FIELD_KIND_UTF8;
    h[0].value.value.bytes = B("acme");
    h[1].key = B("x-warren-reason"); /* a stale header the producer copied: replaced */
    h[1].value.kind = AMQP_FIELD_KIND_UTF8;
    h[1].value.value.bytes = B("stale");
    h[2].key = B("priority-class");
    h[2].value.kind = AMQP_FIELD_KIND_I32;
    h[2].value.value.i32 = 7;
    h[3].key = B("x-warren-attempt");
    h[3].value.kind = AMQP_FIELD_KIND_I32;
    h[3].value.value.i32 = 99;

    amqp_basic_properties_t orig;
    memset(&orig, 0, sizeof(orig));
    orig._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG |
                  AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
                  AMQP_BASIC_EXPIRATION_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                  AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_USER_ID_FLAG |
                  AMQP_BASIC_APP_ID_FLAG;
    orig.content_type = B("application/json");
    orig.headers.num_entries = 4;
    orig.headers.entries = h;
    orig.delivery_mode = 1;
    orig.correlation_id = B("corr-9");
    orig.expiration = B("60000");
    orig.message_id = B("m-42");
    orig.timestamp = 1699999999;
    orig.type = B("OrderCreated");
    orig.user_id = B("producer");
    orig.app_id = B("shop");

    wr_failure f = base_failure();
    amqp_basic_properties_t out;
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B("shop.events"), B("order.created"), &f, &out), 0);

    /* the original properties */
    CHECK(out._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    CHECK(bytes_eq(out.message_id, "m-42"));
    CHECK(out._flags & AMQP_BASIC_TYPE_FLAG);
    CHECK(bytes_eq(out.type, "OrderCreated"));
    CHECK(out._flags & AMQP_BASIC_CONTENT_TYPE_FLAG);
    CHECK(bytes_eq(out.content_type, "application/json"));
    CHECK(out._flags & AMQP_BASIC_CORRELATION_ID_FLAG);
    CHECK(bytes_eq(out.correlation_id, "corr-9"));
    CHECK(out._flags & AMQP_BASIC_TIMESTAMP_FLAG);
    CHECK_INT(out.timestamp, 1699999999);
    CHECK(out._flags & AMQP_BASIC_APP_ID_FLAG);
    CHECK(bytes_eq(out.app_id, "shop"));
    /* dropped, and persistent */
    CHECK_INT(out._flags & AMQP_BASIC_EXPIRATION_FLAG, 0);
    CHECK_INT(out._flags & AMQP_BASIC_USER_ID_FLAG, 0);
    CHECK(out._flags & AMQP_BASIC_DELIVERY_MODE_FLAG);
    CHECK_INT(out.delivery_mode, 2);
    CHECK(out._flags & AMQP_BASIC_HEADERS_FLAG);

    /* the original is not touched */
    CHECK_INT(orig.headers.num_entries, 4);
    CHECK(orig.headers.entries == h);
    CHECK_INT(orig.delivery_mode, 1);
    CHECK(orig._flags & AMQP_BASIC_EXPIRATION_FLAG);

    /* app headers kept once, with their kinds */
    const amqp_table_t *t = &out.headers;
    CHECK_INT(key_count(t, "tenant"), 1);
    CHECK_STR(hstr(t, "tenant"), "acme");
    CHECK_INT(key_count(t, "priority-class"), 1);
    CHECK(find(t, "priority-class") != NULL && find(t, "priority-class")->value.i32 == 7);

    /* every x-warren-* header once, with its value */
    static const char *const keys[] = {
        "x-warren-reason",
        "x-warren-error-class",
        "x-warren-error",
        "x-warren-errors",
        "x-warren-attempt",
        "x-warren-first-failure",
        "x-warren-last-failure",
        "x-warren-original-exchange",
        "x-warren-original-routing-key",
        "x-warren-subscription",
        "x-warren-queue",
        "x-warren-handler",
        "x-warren-handler-version",
        "x-warren-trace-id",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (key_count(t, keys[i]) != 1) {
            fprintf(stderr, "header %s\n", keys[i]);
        }
        CHECK_INT(key_count(t, keys[i]), 1);
    }
    /* 14 of ours plus the 2 app headers: the stale x-warren-* are gone */
    CHECK_INT(t->num_entries, 16);
    CHECK_STR(hstr(t, "x-warren-reason"), "handler-error");
    CHECK_STR(hstr(t, "x-warren-error-class"), "error");
    CHECK_STR(hstr(t, "x-warren-error"), "handler.lua:12: stock service said no");
    CHECK_INT(error_count(t), 1);
    CHECK_STR(error_at(t, 0), "handler.lua:12: stock service said no");
    const amqp_field_value_t *att = find(t, "x-warren-attempt");
    CHECK(att != NULL && att->kind == AMQP_FIELD_KIND_I32 && att->value.i32 == 1);
    CHECK_STR(hstr(t, "x-warren-first-failure"), "2023-11-14T22:13:20.123Z");
    CHECK_STR(hstr(t, "x-warren-last-failure"), "2023-11-14T22:13:20.123Z");
    CHECK_STR(hstr(t, "x-warren-original-exchange"), "shop.events");
    CHECK_STR(hstr(t, "x-warren-original-routing-key"), "order.created");
    CHECK_STR(hstr(t, "x-warren-subscription"), "orders");
    CHECK_STR(hstr(t, "x-warren-queue"), "orders.q");
    CHECK_STR(hstr(t, "x-warren-handler"), "orders.lua");
    CHECK_STR(hstr(t, "x-warren-handler-version"), "0123456789ab");
    CHECK_STR(hstr(t, "x-warren-trace-id"), "4bf92f3577b34da6a3ce929d0e0e4736");

    empty_amqp_pool(&pool);
}

static void test_minimal_original(void)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);

    /* no headers, no handler version, no trace id, no error text, epoch time */
    amqp_basic_properties_t orig;
    memset(&orig, 0, sizeof(orig));
    orig._flags = AMQP_BASIC_MESSAGE_ID_FLAG;
    orig.message_id = B("m-1");
    wr_failure f = base_failure();
    f.handler_version = NULL;
    f.trace_id = NULL;
    f.error = NULL;
    f.reason = "invalid-json";
    f.error_class = "invalid";
    f.now_ms = 0;
    amqp_basic_properties_t out;
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B(""), B("q"), &f, &out), 0);
    const amqp_table_t *t = &out.headers;
    CHECK(out._flags & AMQP_BASIC_HEADERS_FLAG);
    CHECK_INT(out.delivery_mode, 2);
    CHECK_INT(t->num_entries, 12);
    CHECK_INT(key_count(t, "x-warren-handler-version"), 0);
    CHECK_INT(key_count(t, "x-warren-trace-id"), 0);
    CHECK_STR(hstr(t, "x-warren-error"), "");
    CHECK_INT(error_count(t), 1);
    CHECK_STR(error_at(t, 0), "");
    CHECK_STR(hstr(t, "x-warren-first-failure"), "1970-01-01T00:00:00.000Z");
    /* the default exchange is "" and that is what the copy says */
    CHECK_STR(hstr(t, "x-warren-original-exchange"), "");
    CHECK_STR(hstr(t, "x-warren-original-routing-key"), "q");

    /* a failure one non-leap year and 5 ms later */
    f.now_ms = 365LL * 86400 * 1000 + 5;
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B(""), B("q"), &f, &out), 0);
    CHECK_STR(hstr(&out.headers, "x-warren-last-failure"), "1971-01-01T00:00:00.005Z");

    /* headers in the struct but the flag clear: they are not the message's */
    amqp_table_entry_t h;
    memset(&h, 0, sizeof(h));
    h.key = B("x-warren-first-failure");
    h.value.kind = AMQP_FIELD_KIND_UTF8;
    h.value.value.bytes = B("2000-01-01T00:00:00.000Z");
    orig.headers.num_entries = 1;
    orig.headers.entries = &h;
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B(""), B("q"), &f, &out), 0);
    CHECK_STR(hstr(&out.headers, "x-warren-first-failure"), "1971-01-01T00:00:00.005Z");
    CHECK_INT(out.headers.num_entries, 12);

    empty_amqp_pool(&pool);
}

static void test_repeated_failures(void)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);

    amqp_table_entry_t h;
    memset(&h, 0, sizeof(h));
    h.key = B("tenant");
    h.value.kind = AMQP_FIELD_KIND_UTF8;
    h.value.value.bytes = B("acme");
    amqp_basic_properties_t orig;
    memset(&orig, 0, sizeof(orig));
    orig._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
    orig.message_id = B("m-7");
    orig.headers.num_entries = 1;
    orig.headers.entries = &h;

    /* attempt 1 came from the producer's exchange; every later copy comes back
     * through the delay tier's exchange and routing key */
    amqp_basic_properties_t cur = orig, next;
    char texts[12][32];
    for (int i = 1; i <= 12; i++) {
        wr_failure f = base_failure();
        snprintf(texts[i - 1], sizeof(texts[0]), "error %d", i);
        f.error = texts[i - 1];
        f.attempt = i;
        f.now_ms = 1700000000123LL + (int64_t)(i - 1) * 60000; /* one a minute */
        f.reason = i < 12 ? "handler-error" : "timeout";
        f.error_class = i < 12 ? "error" : "timeout";
        amqp_bytes_t ex = i == 1 ? B("shop.events") : B("warren.delay");
        amqp_bytes_t rk = i == 1 ? B("order.created") : B("orders.q.retry.5s");
        CHECK_INT(wr_dlq_build_props(&pool, &cur, ex, rk, &f, &next), 0);
        const amqp_table_t *t = &next.headers;

        CHECK_INT(key_count(t, "tenant"), 1);
        CHECK_INT(key_count(t, "x-warren-errors"), 1);
        CHECK_INT(key_count(t, "x-warren-attempt"), 1);
        CHECK_INT(key_count(t, "x-warren-first-failure"), 1);
        CHECK_INT(key_count(t, "x-warren-original-exchange"), 1);
        CHECK_INT(t->num_entries, 15);
        const amqp_field_value_t *att = find(t, "x-warren-attempt");
        CHECK(att != NULL && att->value.i32 == i);
        CHECK_STR(hstr(t, "x-warren-error"), texts[i - 1]);
        CHECK_STR(hstr(t, "x-warren-first-failure"), "2023-11-14T22:13:20.123Z");
        CHECK_STR(hstr(t, "x-warren-original-exchange"), "shop.events");
        CHECK_STR(hstr(t, "x-warren-original-routing-key"), "order.created");

        /* the newest WR_DLQ_MAX_ERRORS errors, oldest first */
        int want = i < WR_DLQ_MAX_ERRORS ? i : WR_DLQ_MAX_ERRORS;
        CHECK_INT(error_count(t), want);
        for (int k = 0; k < want; k++) {
            CHECK_STR(error_at(t, k), texts[i - want + k]);
        }
        cur = next;
    }
    const amqp_table_t *t = &cur.headers;
    CHECK_INT(WR_DLQ_MAX_ERRORS, 10);
    CHECK_STR(error_at(t, 0), "error 3");
    CHECK_STR(error_at(t, 9), "error 12");
    CHECK_STR(hstr(t, "x-warren-reason"), "timeout");
    CHECK_STR(hstr(t, "x-warren-error-class"), "timeout");
    /* 11 minutes after the first failure */
    CHECK_STR(hstr(t, "x-warren-last-failure"), "2023-11-14T22:24:20.123Z");

    /* the default exchange recorded at the first failure survives as "" */
    wr_failure f = base_failure();
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B(""), B("orders.q"), &f, &next), 0);
    cur = next;
    CHECK_INT(wr_dlq_build_props(&pool, &cur, B("warren.delay"), B("r"), &f, &next), 0);
    CHECK_STR(hstr(&next.headers, "x-warren-original-exchange"), "");
    CHECK_STR(hstr(&next.headers, "x-warren-original-routing-key"), "orders.q");

    empty_amqp_pool(&pool);
}

static void test_error_truncation(void)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_basic_properties_t orig, out;
    memset(&orig, 0, sizeof(orig));
    orig._flags = AMQP_BASIC_MESSAGE_ID_FLAG;
    orig.message_id = B("m");
    CHECK_INT(WR_DLQ_MAX_ERROR, 1024);

    char *text = malloc(3000);
    wr_failure f = base_failure();
    f.error = text;

    /* ASCII: cut at exactly 1024 bytes */
    memset(text, 'a', 2000);
    text[2000] = '\0';
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B("x"), B("y"), &f, &out), 0);
    const amqp_field_value_t *e = find(&out.headers, "x-warren-error");
    CHECK(e != NULL && e->value.bytes.len == 1024);
    CHECK(e != NULL && memcmp(e->value.bytes.bytes, text, 1024) == 0);
    const amqp_field_value_t *arr = find(&out.headers, "x-warren-errors");
    CHECK(arr != NULL && arr->value.array.entries[0].value.bytes.len == 1024);

    /* a 2-byte e-acute over the limit: bytes 1023-1024 would be split, cut at 1023 */
    memset(text, 'a', 1023);
    strcpy(text + 1023, "\xc3\xa9tail");
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B("x"), B("y"), &f, &out), 0);
    e = find(&out.headers, "x-warren-error");
    CHECK(e != NULL && e->value.bytes.len == 1023);
    arr = find(&out.headers, "x-warren-errors");
    CHECK(arr != NULL && arr->value.array.entries[0].value.bytes.len == 1023);

    /* a 4-byte emoji at 1021..1024: cut at 1021 */
    memset(text, 'a', 1021);
    strcpy(text + 1021, "\xf0\x9f\x98\x80z");
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B("x"), B("y"), &f, &out), 0);
    e = find(&out.headers, "x-warren-error");
    CHECK(e != NULL && e->value.bytes.len == 1021);

    /* a 3-byte euro sign ending exactly at 1024 fits whole */
    memset(text, 'a', 1021);
    strcpy(text + 1021, "\xe2\x82\xac"
                        "after");
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B("x"), B("y"), &f, &out), 0);
    e = find(&out.headers, "x-warren-error");
    CHECK(e != NULL && e->value.bytes.len == 1024);

    /* exactly the limit: untouched */
    memset(text, 'b', 1024);
    text[1024] = '\0';
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B("x"), B("y"), &f, &out), 0);
    e = find(&out.headers, "x-warren-error");
    CHECK(e != NULL && e->value.bytes.len == 1024);

    free(text);
    empty_amqp_pool(&pool);
}

static void test_utf8_truncate(void)
{
    /* shorter than or equal to max: whole */
    CHECK_INT(wr_utf8_truncate("hello", 5, 10), 5);
    CHECK_INT(wr_utf8_truncate("hello", 5, 5), 5);
    CHECK_INT(wr_utf8_truncate("hello", 5, 3), 3);
    CHECK_INT(wr_utf8_truncate("hello", 5, 0), 0);
    /* "ab" + e-acute (2 bytes) + "c" */
    static const char s2[] = "ab\xc3\xa9"
                             "c";
    CHECK_INT(wr_utf8_truncate(s2, 5, 4), 4);
    CHECK_INT(wr_utf8_truncate(s2, 5, 3), 2);
    CHECK_INT(wr_utf8_truncate(s2, 5, 2), 2);
    /* a 3-byte euro sign at 1..3 */
    static const char s3[] = "x\xe2\x82\xac"
                             "y";
    CHECK_INT(wr_utf8_truncate(s3, 5, 4), 4);
    CHECK_INT(wr_utf8_truncate(s3, 5, 3), 1);
    CHECK_INT(wr_utf8_truncate(s3, 5, 2), 1);
    CHECK_INT(wr_utf8_truncate(s3, 5, 1), 1);
    /* a 4-byte emoji first: nothing of it fits in 3 bytes */
    static const char s4[] = "\xf0\x9f\x98\x80!";
    CHECK_INT(wr_utf8_truncate(s4, 5, 3), 0);
    CHECK_INT(wr_utf8_truncate(s4, 5, 1), 0);
    CHECK_INT(wr_utf8_truncate(s4, 5, 4), 4);
    /* two e-acutes back to back: the cut lands between them */
    static const char s5[] = "\xc3\xa9\xc3\xa9";
    CHECK_INT(wr_utf8_truncate(s5, 4, 3), 2);
}

/* With a span id the copy continues the trace: one traceparent, same trace, new
 * span, whether the original had one (replaced) or not (added); tracestate kept. */
static void test_traceparent(void)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_table_entry_t h[2];
    memset(h, 0, sizeof(h));
    h[0].key = B("traceparent");
    h[0].value.kind = AMQP_FIELD_KIND_UTF8;
    h[0].value.value.bytes = B("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    h[1].key = B("tracestate");
    h[1].value.kind = AMQP_FIELD_KIND_UTF8;
    h[1].value.value.bytes = B("vendor=1");
    amqp_basic_properties_t orig, out;
    memset(&orig, 0, sizeof(orig));
    orig._flags = AMQP_BASIC_HEADERS_FLAG;
    orig.headers.num_entries = 2;
    orig.headers.entries = h;

    wr_failure f = base_failure();
    f.span_id = "a1b2c3d4e5f60718";
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B(""), B("q"), &f, &out), 0);
    CHECK_INT(key_count(&out.headers, "traceparent"), 1);
    CHECK_STR(hstr(&out.headers, "traceparent"),
              "00-4bf92f3577b34da6a3ce929d0e0e4736-a1b2c3d4e5f60718-01");
    CHECK_STR(hstr(&out.headers, "tracestate"), "vendor=1");

    orig._flags = 0; /* no headers at all: a traceparent is added */
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B(""), B("q"), &f, &out), 0);
    CHECK_INT(key_count(&out.headers, "traceparent"), 1);
    CHECK_STR(hstr(&out.headers, "traceparent"),
              "00-4bf92f3577b34da6a3ce929d0e0e4736-a1b2c3d4e5f60718-01");

    f.span_id = NULL; /* without a span id the original is kept as it was */
    orig._flags = AMQP_BASIC_HEADERS_FLAG;
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B(""), B("q"), &f, &out), 0);
    CHECK_STR(hstr(&out.headers, "traceparent"),
              "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    empty_amqp_pool(&pool);
}

int main(void)
{
    test_traceparent();
    test_first_failure();
    test_minimal_original();
    test_repeated_failures();
    test_error_truncation();
    test_utf8_truncate();
    return check_report("test_dlq");
}
