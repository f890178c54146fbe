/*
 * test_envelope.c: unit tests for the envelope module.
 *
 * Deliveries are built by hand (amqp_envelope_t with properties, flags,
 * header tables and body bytes, as rabbitmq-c would hand them over) and run
 * through wr_envelope_decode(): the fields of the resulting wr_envelope, the
 * fallbacks (type from the routing key, attempt from x-warren-attempt + 1,
 * version from a string or an integer header, the producer's route from the
 * x-warren-original-* headers of a retry), and every reason a message is
 * invalid, with the exact detail text operators will read in the DLQ. The
 * helpers are checked directly: the JSON content-type test, the UTF-8
 * validator (overlong encodings, surrogates, code points past U+10FFFF and
 * truncated sequences are all invalid), integer headers of every AMQP kind
 * and decimal strings, and the W3C traceparent parser.
 */
#include "envelope.h"
#include "dlq.h"
#include "sign.h"

#include "check.h"

#include <stdint.h>
#include <string.h>

/* A view of a C string as amqp_bytes_t (the bytes are never written). */
static amqp_bytes_t B(const char *s)
{
    amqp_bytes_t b;
    b.len = strlen(s);
    b.bytes = (void *)s;
    return b;
}

/* N bytes at S, for bodies that hold NULs or invalid UTF-8. */
static amqp_bytes_t BN(const char *s, size_t n)
{
    amqp_bytes_t b;
    b.len = n;
    b.bytes = (void *)s;
    return b;
}

/* 1 when B holds exactly the C string S. */
static int bytes_eq(amqp_bytes_t b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && (n == 0 || memcmp(b.bytes, s, n) == 0);
}

static amqp_table_entry_t str_entry(const char *key, const char *val)
{
    amqp_table_entry_t e;
    memset(&e, 0, sizeof(e));
    e.key = B(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = B(val);
    return e;
}

static amqp_table_entry_t i32_entry(const char *key, int32_t val)
{
    amqp_table_entry_t e;
    memset(&e, 0, sizeof(e));
    e.key = B(key);
    e.value.kind = AMQP_FIELD_KIND_I32;
    e.value.value.i32 = val;
    return e;
}

/* A valid delivery: message id "m-1", routing key "order.created", body {"a":1}. */
static void base_delivery(amqp_envelope_t *d)
{
    memset(d, 0, sizeof(*d));
    d->exchange = B("orders");
    d->routing_key = B("order.created");
    d->delivery_tag = 7;
    d->message.properties._flags = AMQP_BASIC_MESSAGE_ID_FLAG;
    d->message.properties.message_id = B("m-1");
    d->message.body = B("{\"a\":1}");
}

/* Decode D with MAX_BODY, message id required; the reason and detail go to the
 * out-parameters. */
static int decode(const amqp_envelope_t *d, size_t max_body, wr_envelope *env, const char **reason,
                  char *detail)
{
    return wr_envelope_decode(d, max_body, 1, env, reason, detail, 256);
}

static void test_valid_fields(void)
{
    amqp_envelope_t d;
    wr_envelope env;
    const char *reason = "unset";
    char detail[256] = "unset";

    base_delivery(&d);
    d.redelivered = 1;
    amqp_basic_properties_t *p = &d.message.properties;
    p->_flags |= AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    p->type = B("OrderCreated");
    p->content_type = B("application/json");
    p->timestamp = 1700000000;

    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK(reason == NULL);
    CHECK_STR(detail, "");
    CHECK(bytes_eq(env.id, "m-1"));
    CHECK(bytes_eq(env.type, "OrderCreated"));
    CHECK(bytes_eq(env.exchange, "orders"));
    CHECK(bytes_eq(env.routing_key, "order.created"));
    CHECK(bytes_eq(env.content_type, "application/json"));
    CHECK(bytes_eq(env.body, "{\"a\":1}"));
    CHECK(env.headers == NULL);
    CHECK_INT(env.timestamp, 1700000000);
    CHECK_INT(env.redelivered, 1);
    CHECK_INT(env.is_json, 1);
    CHECK_INT(env.attempt, 1);
    CHECK_INT(env.version.len, 0);
    CHECK_INT(env.traceparent.len, 0);

    /* the views point into the delivery, they are not copies */
    CHECK(env.id.bytes == p->message_id.bytes);
    CHECK(env.body.bytes == d.message.body.bytes);
}

static void test_type_fallback(void)
{
    amqp_envelope_t d;
    wr_envelope env;
    const char *reason;
    char detail[256];

    /* no type property: the routing key names the event */
    base_delivery(&d);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK(bytes_eq(env.type, "order.created"));

    /* the type flag set but the value empty: same */
    base_delivery(&d);
    d.message.properties._flags |= AMQP_BASIC_TYPE_FLAG;
    d.message.properties.type = B("");
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK(bytes_eq(env.type, "order.created"));

    /* a type value without the flag is not a property at all */
    base_delivery(&d);
    d.message.properties.type = B("Ignored");
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK(bytes_eq(env.type, "order.created"));

    /* same for the other flagged properties */
    base_delivery(&d);
    d.message.properties.content_type = B("text/plain");
    d.message.properties.timestamp = 99;
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(env.content_type.len, 0);
    CHECK_INT(env.is_json, 1);
    CHECK_INT(env.timestamp, 0);
}

static void test_headers(void)
{
    amqp_envelope_t d;
    wr_envelope env;
    const char *reason;
    char detail[256];
    static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    amqp_table_entry_t e[4];
    e[0] = i32_entry("x-warren-attempt", 2);
    e[1] = str_entry("version", "v2.1");
    e[2] = str_entry("traceparent", tp);
    e[3] = str_entry("tenant", "acme");
    base_delivery(&d);
    d.message.properties._flags |= AMQP_BASIC_HEADERS_FLAG;
    d.message.properties.headers.num_entries = 4;
    d.message.properties.headers.entries = e;
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK(env.headers == &d.message.properties.headers);
    CHECK_INT(env.attempt, 3);
    CHECK(bytes_eq(env.version, "v2.1"));
    CHECK(bytes_eq(env.traceparent, tp));

    /* the headers flag clear: the table is not looked at */
    d.message.properties._flags &= ~AMQP_BASIC_HEADERS_FLAG;
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK(env.headers == NULL);
    CHECK_INT(env.attempt, 1);
    CHECK_INT(env.version.len, 0);
    CHECK_INT(env.traceparent.len, 0);
    d.message.properties._flags |= AMQP_BASIC_HEADERS_FLAG;

    /* an integer version header is formatted in the envelope's own buffer */
    e[1] = i32_entry("version", 42);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK(bytes_eq(env.version, "42"));
    CHECK(env.version.bytes == env.version_buf);
    e[1].value.kind = AMQP_FIELD_KIND_I64;
    e[1].value.value.i64 = -9000000000LL;
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK(bytes_eq(env.version, "-9000000000"));

    /* the attempt header as a decimal string, and values that mean "first attempt" */
    e[0] = str_entry("x-warren-attempt", "4");
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(env.attempt, 5);
    e[0] = i32_entry("x-warren-attempt", 0);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(env.attempt, 1);
    e[0] = i32_entry("x-warren-attempt", -3);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(env.attempt, 1);
    e[0] = str_entry("x-warren-attempt", "many");
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(env.attempt, 1);
    e[0].value.kind = AMQP_FIELD_KIND_U8;
    e[0].value.value.u8 = 1;
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(env.attempt, 2);
}

/* A retry comes back from its delay queue through the default exchange: the
 * producer's route is taken from the x-warren-original-* headers. */
static void test_original_route(void)
{
    amqp_envelope_t d;
    wr_envelope env;
    const char *reason;
    char detail[256];

    amqp_table_entry_t e[3];
    e[0] = str_entry("x-warren-original-exchange", "shop");
    e[1] = str_entry("x-warren-original-routing-key", "order.paid");
    e[2] = i32_entry("x-warren-attempt", 1);
    base_delivery(&d);
    d.exchange = B("");
    d.routing_key = B("orders.q");
    d.message.properties._flags |= AMQP_BASIC_HEADERS_FLAG;
    d.message.properties.headers.num_entries = 3;
    d.message.properties.headers.entries = e;
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK(bytes_eq(env.exchange, "shop"));
    CHECK(bytes_eq(env.routing_key, "order.paid"));
    CHECK(bytes_eq(env.type, "order.paid")); /* the type falls back to the original key */
    CHECK_INT(env.attempt, 2);

    /* the original exchange may be the default exchange itself */
    e[0] = str_entry("x-warren-original-exchange", "");
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(env.exchange.len, 0);
    CHECK(bytes_eq(env.routing_key, "order.paid"));

    /* without the headers the delivery's own route is the route */
    d.message.properties.headers.num_entries = 1;
    d.message.properties.headers.entries = &e[2];
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(env.exchange.len, 0);
    CHECK(bytes_eq(env.routing_key, "orders.q"));
    CHECK(bytes_eq(env.type, "orders.q"));
}

static void test_invalid(void)
{
    amqp_envelope_t d;
    wr_envelope env;
    const char *reason;
    char detail[256];

    /* no message id: the flag clear, or set with an empty value */
    base_delivery(&d);
    d.message.properties._flags = AMQP_BASIC_TYPE_FLAG;
    d.message.properties.type = B("T");
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), -1);
    CHECK_STR(reason, WR_REASON_MISSING_ID);
    CHECK_STR(reason, "missing-message-id");
    CHECK_STR(detail, "the message has no message_id property");
    CHECK(bytes_eq(env.type, "T")); /* still filled for the log line */
    base_delivery(&d);
    d.message.properties.message_id = B("");
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), -1);
    CHECK_STR(reason, "missing-message-id");

    /* unless the subscription does not need it (its idempotency key comes from elsewhere) */
    CHECK_INT(wr_envelope_decode(&d, 1024, 0, &env, &reason, detail, sizeof(detail)), 0);
    CHECK(reason == NULL);
    CHECK_INT(env.id.len, 0);
    d.message.body = BN(NULL, 0); /* the other checks still apply */
    CHECK_INT(wr_envelope_decode(&d, 1024, 0, &env, &reason, detail, sizeof(detail)), -1);
    CHECK_STR(reason, "empty-body");

    /* empty body */
    base_delivery(&d);
    d.message.body = BN(NULL, 0);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), -1);
    CHECK_STR(reason, WR_REASON_EMPTY_BODY);
    CHECK_STR(reason, "empty-body");
    CHECK_STR(detail, "the message body is empty");
    CHECK(bytes_eq(env.id, "m-1"));

    /* too large: the limit itself is accepted, one byte more is not */
    base_delivery(&d);
    d.message.body = B("0123456789"); /* 10 bytes */
    CHECK_INT(decode(&d, 10, &env, &reason, detail), 0);
    CHECK_INT(decode(&d, 9, &env, &reason, detail), -1);
    CHECK_STR(reason, "body-too-large");
    CHECK_STR(detail, "the body is 10 bytes, more than the limit of 9");

    /* content encodings: identity (any case) is no encoding; gzip cannot be undone */
    base_delivery(&d);
    d.message.properties._flags |= AMQP_BASIC_CONTENT_ENCODING_FLAG;
    d.message.properties.content_encoding = B("identity");
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    d.message.properties.content_encoding = B("IDENTITY");
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    d.message.properties.content_encoding = B("");
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    d.message.properties.content_encoding = B("gzip");
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), -1);
    CHECK_STR(reason, "unsupported-content-encoding");
    CHECK_STR(detail, "content_encoding 'gzip' is not supported");
    d.message.properties._flags &= ~AMQP_BASIC_CONTENT_ENCODING_FLAG;
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0); /* no flag, no encoding */

    /* a JSON body that is not UTF-8, with the offset of the first bad byte */
    static const char bad[] = "{\"name\":\"caf\xe9\"}"; /* Latin-1 e-acute at byte 12 */
    base_delivery(&d);
    d.message.body = BN(bad, sizeof(bad) - 1);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), -1);
    CHECK_STR(reason, "invalid-json");
    CHECK_STR(detail, "the JSON body is not valid UTF-8 (byte 12)");

    /* the same bytes as UTF-8 are fine */
    static const char good[] = "{\"name\":\"caf\xc3\xa9\"}";
    d.message.body = BN(good, sizeof(good) - 1);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);

    /* an overlong "/" (C0 AF) and a UTF-16 surrogate (ED A0 80) are rejected */
    static const char overlong[] = "[\"\xc0\xaf\"]";
    d.message.body = BN(overlong, sizeof(overlong) - 1);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), -1);
    CHECK_STR(detail, "the JSON body is not valid UTF-8 (byte 2)");
    static const char surrogate[] = "[1,\"\xed\xa0\x80\"]";
    d.message.body = BN(surrogate, sizeof(surrogate) - 1);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), -1);
    CHECK_STR(detail, "the JSON body is not valid UTF-8 (byte 4)");

    /* a content type that is not JSON: the body is bytes, no UTF-8 check */
    base_delivery(&d);
    d.message.properties._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    d.message.properties.content_type = B("application/octet-stream");
    d.message.body = BN(bad, sizeof(bad) - 1);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(env.is_json, 0);
    CHECK(reason == NULL);

    /* the order of the checks: a message with every problem reports the missing id */
    base_delivery(&d);
    d.message.properties.message_id = B("");
    d.message.body = BN(NULL, 0);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), -1);
    CHECK_STR(reason, "missing-message-id");

    /* a small detail buffer is truncated, still NUL-terminated */
    char small[12];
    base_delivery(&d);
    d.message.body = B("0123456789");
    CHECK_INT(wr_envelope_decode(&d, 9, 1, &env, &reason, small, sizeof(small)), -1);
    CHECK_STR(small, "the body is");
}

static void test_utf8_check(void)
{
    static const struct {
        const char *s;
        size_t want; /* offset of the first invalid byte; SIZE_MAX = all valid */
    } cases[] = {
        {"plain ascii", SIZE_MAX},
        {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", SIZE_MAX}, /* U+00E9 U+20AC U+1F600 */
        {"\xc2\x80", SIZE_MAX},                             /* U+0080, smallest 2-byte */
        {"\xed\x9f\xbf", SIZE_MAX},                         /* U+D7FF, below surrogates */
        {"\xee\x80\x80", SIZE_MAX},                         /* U+E000, above surrogates */
        {"\xf4\x8f\xbf\xbf", SIZE_MAX},                     /* U+10FFFF, the last */
        {"a\x80", 1},                                       /* lone continuation byte */
        {"ab\xc0\x80", 2},                                  /* overlong NUL */
        {"\xc1\xbf", 0},                                    /* overlong U+007F */
        {"\xe0\x80\xaf", 0},                                /* overlong "/" in 3 bytes */
        {"\xe0\x9f\xbf", 0},                                /* overlong U+07FF */
        {"\xf0\x80\x80\xaf", 0},                            /* overlong "/" in 4 bytes */
        {"\xf0\x8f\xbf\xbf", 0},                            /* overlong U+FFFF */
        {"x\xed\xa0\x80", 1},                               /* U+D800 high surrogate */
        {"\xed\xbf\xbf", 0},                                /* U+DFFF low surrogate */
        {"\xf4\x90\x80\x80", 0},                            /* U+110000, past the end */
        {"\xf5\x80\x80\x80", 0},                            /* lead byte F5 */
        {"\xf8\x88\x80\x80\x80", 0},                        /* 5-byte form */
        {"\xfe", 0},
        {"ok\xe2\x82", 2},   /* truncated at the end */
        {"\xe2\x28\xa1", 0}, /* bad continuation */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].s);
        size_t want = cases[i].want == SIZE_MAX ? n : cases[i].want;
        size_t got = wr_utf8_check((const unsigned char *)cases[i].s, n);
        if (got != want) {
            fprintf(stderr, "utf8 case %zu\n", i);
        }
        CHECK_INT(got, want);
    }
    /* NUL is valid UTF-8 (JSON will reject it, not the UTF-8 check) */
    CHECK_INT(wr_utf8_check((const unsigned char *)"a\0b", 3), 3);
    CHECK_INT(wr_utf8_check((const unsigned char *)"", 0), 0);
}

static void test_is_json_type(void)
{
    CHECK_INT(wr_envelope_is_json_type(BN(NULL, 0)), 1);
    CHECK_INT(wr_envelope_is_json_type(B("application/json")), 1);
    CHECK_INT(wr_envelope_is_json_type(B("application/json; charset=utf-8")), 1);
    CHECK_INT(wr_envelope_is_json_type(B("application/json;charset=utf-8")), 1);
    CHECK_INT(wr_envelope_is_json_type(B("APPLICATION/JSON")), 1);
    CHECK_INT(wr_envelope_is_json_type(B("Application/Json")), 1);
    CHECK_INT(wr_envelope_is_json_type(B("text/json")), 1);
    CHECK_INT(wr_envelope_is_json_type(B("application/vnd.x+json")), 1);
    CHECK_INT(wr_envelope_is_json_type(B("application/vnd.acme.order+json; version=2")), 1);
    CHECK_INT(wr_envelope_is_json_type(B("application/jsonx")), 0);
    CHECK_INT(wr_envelope_is_json_type(B("application/json5")), 0);
    CHECK_INT(wr_envelope_is_json_type(B("application/+json")), 0);
    CHECK_INT(wr_envelope_is_json_type(B("application/vnd.x+jsonx")), 0);
    CHECK_INT(wr_envelope_is_json_type(B("text/vnd.x+json")), 0);
    CHECK_INT(wr_envelope_is_json_type(B("text/plain")), 0);
    CHECK_INT(wr_envelope_is_json_type(B("application/octet-stream")), 0);
    CHECK_INT(wr_envelope_is_json_type(B("json")), 0);
    /* the length is the view's, not strlen: "application/json" cut short is not JSON */
    CHECK_INT(wr_envelope_is_json_type(BN("application/json", 15)), 0);
}

static void test_table_get_int(void)
{
    amqp_table_entry_t e[16];
    memset(e, 0, sizeof(e));
    const char *names[16] = {"i8", "u8", "i16", "u16",  "i32",   "u32",  "i64", "u64",
                             "s",  "b",  "neg", "junk", "empty", "bool", "f64", "huge"};
    for (int i = 0; i < 16; i++) {
        e[i].key = B(names[i]);
    }
    e[0].value.kind = AMQP_FIELD_KIND_I8, e[0].value.value.i8 = -100;
    e[1].value.kind = AMQP_FIELD_KIND_U8, e[1].value.value.u8 = 200;
    e[2].value.kind = AMQP_FIELD_KIND_I16, e[2].value.value.i16 = -30000;
    e[3].value.kind = AMQP_FIELD_KIND_U16, e[3].value.value.u16 = 60000;
    e[4].value.kind = AMQP_FIELD_KIND_I32, e[4].value.value.i32 = -2000000000;
    e[5].value.kind = AMQP_FIELD_KIND_U32, e[5].value.value.u32 = 4000000000u;
    e[6].value.kind = AMQP_FIELD_KIND_I64, e[6].value.value.i64 = -9000000000000000000LL;
    e[7].value.kind = AMQP_FIELD_KIND_U64, e[7].value.value.u64 = 9000000000000000000ULL;
    e[8].value.kind = AMQP_FIELD_KIND_UTF8, e[8].value.value.bytes = B("1234567");
    e[9].value.kind = AMQP_FIELD_KIND_BYTES, e[9].value.value.bytes = B("77");
    e[10].value.kind = AMQP_FIELD_KIND_UTF8, e[10].value.value.bytes = B("-17");
    e[11].value.kind = AMQP_FIELD_KIND_UTF8, e[11].value.value.bytes = B("12abc");
    e[12].value.kind = AMQP_FIELD_KIND_UTF8, e[12].value.value.bytes = B("");
    e[13].value.kind = AMQP_FIELD_KIND_BOOLEAN, e[13].value.value.boolean = 1;
    e[14].value.kind = AMQP_FIELD_KIND_F64, e[14].value.value.f64 = 3.0;
    e[15].value.kind = AMQP_FIELD_KIND_UTF8;
    e[15].value.value.bytes = B("99999999999999999999"); /* > INT64_MAX */
    amqp_table_t t = {16, e};

    static const struct {
        const char *name;
        int rc;
        int64_t want;
    } cases[] = {
        {"i8", 0, -100},
        {"u8", 0, 200},
        {"i16", 0, -30000},
        {"u16", 0, 60000},
        {"i32", 0, -2000000000},
        {"u32", 0, 4000000000LL},
        {"i64", 0, -9000000000000000000LL},
        {"u64", 0, 9000000000000000000LL},
        {"s", 0, 1234567},
        {"b", 0, 77},
        {"neg", 0, -17},
        {"junk", -1, 0},
        {"empty", -1, 0},
        {"bool", -1, 0},
        {"f64", -1, 0},
        {"huge", -1, 0},
        {"absent", -1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t got = 12345;
        int rc = wr_table_get_int(&t, cases[i].name, &got);
        if (rc != cases[i].rc || (rc == 0 && got != cases[i].want)) {
            fprintf(stderr, "table_get_int case '%s'\n", cases[i].name);
        }
        CHECK_INT(rc, cases[i].rc);
        if (cases[i].rc == 0) {
            CHECK_INT(got, cases[i].want);
        }
    }

    /* wr_field_int reads the kinds whose every value fits an int64 (the first 7
     * entries), and no other: not u64, strings, booleans or floats */
    for (int i = 0; i < 16; i++) {
        int64_t v = 12345;
        CHECK_INT(wr_field_int(&e[i].value, &v), i < 7 ? 0 : -1);
        CHECK_INT(v, i < 7 ? cases[i].want : 12345);
    }

    /* a u64 beyond INT64_MAX is not an int64: it must not come back negative */
    int64_t got = 0;
    e[7].value.value.u64 = UINT64_MAX;
    CHECK_INT(wr_table_get_int(&t, "u64", &got), -1);

    /* a NULL table has no headers at all */
    CHECK_INT(wr_table_get_int(NULL, "i8", &got), -1);
    CHECK(wr_table_get(NULL, "i8") == NULL);

    /* keys match whole: a prefix or a longer name is another key */
    CHECK(wr_table_get(&t, "i1") == NULL);
    CHECK(wr_table_get(&t, "i16x") == NULL);
    CHECK(wr_table_get(&t, "i16") == &e[2].value);

    /* strings: longstr and bytes; any other kind reads as absent */
    CHECK(bytes_eq(wr_table_get_str(&t, "s"), "1234567"));
    CHECK(bytes_eq(wr_table_get_str(&t, "b"), "77"));
    CHECK_INT(wr_table_get_str(&t, "i32").len, 0);
    CHECK_INT(wr_table_get_str(&t, "absent").len, 0);
    CHECK_INT(wr_table_get_str(NULL, "s").len, 0);
}

static void test_trace_parse(void)
{
    char trace[33], span[17];
    static const char valid[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    memset(trace, 'X', sizeof(trace));
    memset(span, 'X', sizeof(span));
    CHECK_INT(wr_trace_parse(B(valid), trace, span), 0);
    CHECK_STR(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK_STR(span, "00f067aa0ba902b7");
    CHECK_INT(
        wr_trace_parse(B("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), trace, span),
        0);

    /* a future version may append fields after another dash */
    CHECK_INT(wr_trace_parse(B("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                               "-what-the-future-will-be-like"),
                             trace, span),
              0);
    CHECK_STR(trace, "0af7651916cd43dd8448eb211c80319c");
    CHECK_STR(span, "b7ad6b7169203331");
    CHECK_INT(
        wr_trace_parse(B("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), trace, span),
        0);
    CHECK_INT(
        wr_trace_parse(B("fe-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), trace, span),
        0);

    static const char *const invalid[] = {
        "",
        "00",
        /* uppercase hex in the ids */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        /* all-zero ids */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        /* wrong lengths */
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
        /* version 00 allows nothing after the flags */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        /* version ff is invalid; a future version needs a dash before more fields */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        /* version and flags are lowercase hex too */
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
        /* separators */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        /* non-hex in the ids */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9-2b7-01",
    };
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        int rc = wr_trace_parse(B(invalid[i]), trace, span);
        if (rc != -1) {
            fprintf(stderr, "traceparent accepted: '%s'\n", invalid[i]);
        }
        CHECK_INT(rc, -1);
    }
}

/* sign.h: the signature is HMAC-SHA256 of a fixed text layout under SHA-256 of
 * the secret; the expected values were computed outside warren (Python's
 * hmac). A copy warren built (dlq.h) checks out; the same headers written by a
 * producer, or signed with another key, do not, and the envelope is then a
 * fresh message from where it was delivered. */
static void test_signature(void)
{
    wr_sign_key k, other;
    wr_sign_key_from(&k, "test secret key!", 16);
    wr_sign_key_from(&other, "another secret!!", 16);
    char sig[WR_SIGN_LEN + 1];
    wr_sign(&k, B("m-1"), 2, B("shop"), B("order.created"), sig);
    CHECK_STR(sig, "v1:d17f417ddc50e0eb0596efccbca6fec567c8bd1e73589e73b351e68f533eee6f");
    wr_sign(&k, B(""), 0, B(""), B("q"), sig);
    CHECK_STR(sig, "v1:f4c7b0b231cea37c81e56060ccd1821ee11175f2fcedb1988c1003213615cf0d");

    /* a retry copy warren built: trusted, attempt and route kept */
    amqp_envelope_t d;
    base_delivery(&d);
    d.exchange = B("");
    d.routing_key = B("orders.q");
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    wr_failure f = {.reason = "handler-error",
                    .error_class = "error",
                    .error = "boom",
                    .attempt = 2,
                    .now_ms = 1700000000000LL,
                    .subscription = "s",
                    .queue = "orders.q",
                    .handler = "h.lua",
                    .sign = &k};
    amqp_basic_properties_t copy;
    amqp_basic_properties_t orig = d.message.properties;
    CHECK_INT(wr_dlq_build_props(&pool, &orig, B("shop"), B("order.created"), &f, &copy), 0);
    d.message.properties = copy;
    wr_envelope env;
    const char *reason;
    char detail[256];
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(wr_sign_check(&k, &d, &env), 0);
    CHECK_INT(env.attempt, 3);
    CHECK(bytes_eq(env.exchange, "shop"));
    CHECK(bytes_eq(env.routing_key, "order.created"));
    /* another key: not trusted, a fresh message from where it came */
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(wr_sign_check(&other, &d, &env), 1);
    CHECK_INT(env.attempt, 1);
    CHECK(bytes_eq(env.exchange, ""));
    CHECK(bytes_eq(env.routing_key, "orders.q"));
    CHECK(bytes_eq(env.type, "orders.q"));

    /* a producer's forgery: attempt 4, a trusted-looking route, no signature */
    amqp_table_entry_t forged[2] = {i32_entry("x-warren-attempt", 4),
                                    str_entry("x-warren-original-exchange", "admin.trusted")};
    base_delivery(&d);
    d.message.properties._flags |= AMQP_BASIC_HEADERS_FLAG;
    d.message.properties.headers.num_entries = 2;
    d.message.properties.headers.entries = forged;
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(env.attempt, 5); /* what decode alone believes */
    CHECK_INT(wr_sign_check(&k, &d, &env), 1);
    CHECK_INT(env.attempt, 1);
    CHECK(bytes_eq(env.exchange, "orders"));
    CHECK(bytes_eq(env.routing_key, "order.created"));
    /* ... with a signature copied from another message: still not trusted */
    wr_sign(&k, B("m-2"), 4, B("admin.trusted"), B(""), sig);
    amqp_table_entry_t copied[3] = {forged[0], forged[1], str_entry(WR_SIGN_HEADER, sig)};
    d.message.properties.headers.num_entries = 3;
    d.message.properties.headers.entries = copied;
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(wr_sign_check(&k, &d, &env), 1);
    /* a message without warren's headers: nothing to check */
    base_delivery(&d);
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(wr_sign_check(&k, &d, &env), 0);
    CHECK_INT(env.attempt, 1);

    /* a forged message's copies are built from its headers without warren's */
    base_delivery(&d);
    d.message.properties._flags |= AMQP_BASIC_HEADERS_FLAG;
    d.message.properties.headers.num_entries = 2;
    d.message.properties.headers.entries = forged;
    amqp_basic_properties_t clean;
    CHECK_INT(wr_dlq_strip_props(&pool, &d.message.properties, &clean), 0);
    CHECK_INT(clean.headers.num_entries, 0);
    /* a wait copy gets the route and a signature that checks out */
    CHECK_INT(wr_dlq_build_wait_props(&pool, &clean, B("orders"), B("order.created"), &k, &copy),
              0);
    d.message.properties = copy;
    CHECK_INT(decode(&d, 1024, &env, &reason, detail), 0);
    CHECK_INT(wr_sign_check(&k, &d, &env), 0);
    CHECK(bytes_eq(env.exchange, "orders"));
    empty_amqp_pool(&pool);
}

/* A message without a traceparent: its trace id is derived from its id (or
 * key), the same in every subscription; the expected values are SHA-256 of
 * "warren-trace\n" + the id, computed outside (Python's hashlib). */
static void test_trace_derive(void)
{
    char a[33], b[33];
    CHECK_INT(wr_trace_derive(B("evt-1"), NULL, a), 0);
    CHECK_STR(a, "06b9ccb39b77ee7173338ddc1eaa990d");
    CHECK_INT(wr_trace_derive(B("evt-1"), "another-key", b), 0); /* the id wins */
    CHECK_STR(b, a);
    CHECK_INT(wr_trace_derive(B(""), "o-7", b), 0); /* no id: the key */
    CHECK_STR(b, "4ad7b930b476b68997698d16ac25d0be");
    CHECK_INT(wr_trace_derive(B(""), "", b), -1);
    CHECK_INT(wr_trace_derive(B(""), NULL, b), -1);
}

int main(void)
{
    test_signature();
    test_valid_fields();
    test_type_fallback();
    test_headers();
    test_original_route();
    test_invalid();
    test_utf8_check();
    test_is_json_type();
    test_table_get_int();
    test_trace_parse();
    test_trace_derive();
    return check_report("test_envelope");
}
