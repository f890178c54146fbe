/*
 * test_gates.c: unit tests for gates (causal gates, the pure part).
 *
 * Topic matching as RabbitMQ does it ('*' one word, '#' zero or more, in any
 * position, many of them without blowing up); which bindings route a type
 * (topic, direct, fanout); which gate a type waits on or releases; the Redis
 * key names; and a parked message's string: every kept property, the headers
 * and a binary body come back as they went in, the dropped properties do not,
 * and broken strings are refused with their reason.
 */
#include "gates.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static void test_topic_match(void)
{
    CHECK_INT(wr_topic_match("order.created", "order.created"), 1);
    CHECK_INT(wr_topic_match("order.created", "order.cancelled"), 0);
    CHECK_INT(wr_topic_match("order.*", "order.created"), 1);
    CHECK_INT(wr_topic_match("order.*", "order"), 0);
    CHECK_INT(wr_topic_match("order.*", "order.created.v2"), 0);
    CHECK_INT(wr_topic_match("order.#", "order"), 1);
    CHECK_INT(wr_topic_match("order.#", "order.created.v2"), 1);
    CHECK_INT(wr_topic_match("#", "anything.at.all"), 1);
    CHECK_INT(wr_topic_match("#.created", "order.created"), 1);
    CHECK_INT(wr_topic_match("#.created", "created"), 1);
    CHECK_INT(wr_topic_match("#.created", "order.cancelled"), 0);
    CHECK_INT(wr_topic_match("a.#.z", "a.z"), 1);
    CHECK_INT(wr_topic_match("a.#.z", "a.b.c.z"), 1);
    CHECK_INT(wr_topic_match("a.#.z", "a.b.c"), 0);
    CHECK_INT(wr_topic_match("*.*", "a.b"), 1);
    CHECK_INT(wr_topic_match("*.*", "a"), 0);
    CHECK_INT(wr_topic_match("order", "orders"), 0);
    CHECK_INT(wr_topic_match("order.created", "order.create"), 0);
    /* many '#' against a long key that does not match: answered, and quickly */
    char pat[256] = "", key[256] = "";
    for (int i = 0; i < 40; i++) {
        strcat(pat, i ? ".#.a" : "#.a");
    }
    strcat(pat, ".b");
    for (int i = 0; i < 60; i++) {
        strcat(key, i ? ".a" : "a");
    }
    CHECK_INT(wr_topic_match(pat, key), 0);
    strcat(key, ".b");
    CHECK_INT(wr_topic_match(pat, key), 1);
}

static void test_routed_and_lookup(void)
{
    char *rk1[] = {"order.created", "order.paid", NULL};
    char *rk2[] = {"shipment.#", NULL};
    char *rk3[] = {"refund.done", NULL};
    wr_binding b[3] = {
        {.exchange = "shop", .type = "direct", .routing_keys = rk1, .routing_key_count = 2},
        {.exchange = "ship", .type = "topic", .routing_keys = rk2, .routing_key_count = 1},
        {.exchange = "all", .type = "fanout", .routing_keys = rk3, .routing_key_count = 1},
    };
    wr_gate g[3] = {
        {.type = "order.cancelled", .after = "order.created"},
        {.type = "order.shipped", .after = "order.paid"},
        {.type = "order.refunded", .after = "order.created"},
    };
    wr_subscription s = {.bindings = b, .binding_count = 2, .gates = g, .gate_count = 3};
    CHECK_INT(wr_gates_routed(&s, "order.created"), 1);
    CHECK_INT(wr_gates_routed(&s, "order.*"), 0); /* a direct key is taken as it is */
    CHECK_INT(wr_gates_routed(&s, "shipment.sent.eu"), 1);
    CHECK_INT(wr_gates_routed(&s, "order.cancelled"), 0);
    s.binding_count = 3; /* a fanout exchange routes everything */
    CHECK_INT(wr_gates_routed(&s, "order.cancelled"), 1);

    CHECK_INT(wr_gates_waiting(&s, "order.cancelled", 15), 0);
    CHECK_INT(wr_gates_waiting(&s, "order.shipped", 13), 1);
    CHECK_INT(wr_gates_waiting(&s, "order.cancelledX", 15), 0); /* LEN bytes only */
    CHECK_INT(wr_gates_waiting(&s, "order.cancel", 12), -1);
    CHECK_INT(wr_gates_waiting(&s, "order.created", 13), -1);
    CHECK_INT(wr_gates_after(&s, "order.created", 13, 0), 0);
    CHECK_INT(wr_gates_after(&s, "order.created", 13, 1), 2);
    CHECK_INT(wr_gates_after(&s, "order.created", 13, 3), -1);
    CHECK_INT(wr_gates_after(&s, "order.paid", 10, 0), 1);
    CHECK_INT(wr_gates_after(&s, "order.cancelled", 15, 0), -1);
}

static void test_keys(void)
{
    char k[64];
    CHECK_INT(wr_gate_mark_key(k, sizeof(k), "warren:idem:", "orders", "order.created", "o-42"),
              43);
    CHECK_STR(k, "warren:idem:~gate:orders:order.created:o-42");
    wr_gate_park_key(k, sizeof(k), "warren:idem:", "orders", 2, "o-42");
    CHECK_STR(k, "warren:idem:~park:orders:2:o-42");
    wr_gate_index_key(k, sizeof(k), "{w}:", "orders");
    CHECK_STR(k, "{w}:~parked:orders");
    wr_gate_marks_key(k, sizeof(k), "{w}:", "orders");
    CHECK_STR(k, "{w}:~parkmark:orders");
    CHECK_INT(wr_gate_mark_key(k, 20, "warren:idem:", "orders", "order.created", "o-42"), -1);
    CHECK_INT(wr_gate_pass_key(k, sizeof(k), "warren:idem:", "orders", "0a1bXX", 4), 33);
    CHECK_STR(k, "warren:idem:~gatepass:orders:0a1b");
    CHECK_INT(wr_gate_pass_key(k, sizeof(k), "warren:idem:", "orders", "", 0), -1);
    char long_token[WR_GATE_PASS_TOKEN_MAX + 1];
    memset(long_token, 'a', sizeof(long_token));
    CHECK_INT(wr_gate_pass_key(k, sizeof(k), "w:", "o", long_token, sizeof(long_token)), -1);
}

static void test_entry_round_trip(void)
{
    amqp_table_entry_t h[2];
    h[0].key = amqp_cstring_bytes("x-warren-attempt");
    h[0].value.kind = AMQP_FIELD_KIND_I32;
    h[0].value.value.i32 = 3;
    h[1].key = amqp_cstring_bytes("traceparent");
    h[1].value.kind = AMQP_FIELD_KIND_UTF8;
    h[1].value.value.bytes =
        amqp_cstring_bytes("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    amqp_basic_properties_t in = {0};
    in._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG |
                AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG |
                AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_EXPIRATION_FLAG | AMQP_BASIC_USER_ID_FLAG |
                AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_PRIORITY_FLAG |
                AMQP_BASIC_CONTENT_ENCODING_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
                AMQP_BASIC_APP_ID_FLAG;
    in.content_type = amqp_cstring_bytes("application/json");
    in.message_id = amqp_cstring_bytes("m-1");
    in.type = amqp_cstring_bytes("order.cancelled");
    in.delivery_mode = 2;
    in.timestamp = 1764950000;
    in.priority = 7;
    in.correlation_id = amqp_cstring_bytes("c-9");
    in.expiration = amqp_cstring_bytes("60000");
    in.user_id = amqp_cstring_bytes("guest");
    in.content_encoding = amqp_cstring_bytes("gzip");
    in.reply_to = amqp_cstring_bytes("replies");
    in.app_id = amqp_cstring_bytes("shop");
    in.headers = (amqp_table_t){2, h};
    char body[] = "{\"order_id\":\"o-1\"}\0\xff tail";
    amqp_bytes_t b = {sizeof(body) - 1, body};

    char *enc = NULL;
    size_t len = 0;
    CHECK_INT(wr_gate_entry_encode(&in, b, 1764950123456LL, &enc, &len), 0);
    CHECK(enc != NULL && strncmp(enc, "1764950123456|", 14) == 0);

    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_basic_properties_t out;
    amqp_bytes_t ob;
    int64_t deadline = 0;
    char err[128] = "";
    CHECK_INT(wr_gate_entry_decode(enc, len, &pool, &out, &ob, &deadline, err, sizeof(err)), 0);
    CHECK_INT(deadline, 1764950123456LL);
    CHECK_INT(ob.len, b.len);
    CHECK(ob.len == b.len && memcmp(ob.bytes, body, b.len) == 0);
    amqp_flags_t kept = in._flags & ~(AMQP_BASIC_EXPIRATION_FLAG | AMQP_BASIC_USER_ID_FLAG);
    CHECK_INT(out._flags, kept);
    CHECK(out.content_type.len == 16 &&
          memcmp(out.content_type.bytes, "application/json", 16) == 0);
    CHECK(out.message_id.len == 3 && memcmp(out.message_id.bytes, "m-1", 3) == 0);
    CHECK(out.type.len == 15 && memcmp(out.type.bytes, "order.cancelled", 15) == 0);
    CHECK(out.correlation_id.len == 3 && memcmp(out.correlation_id.bytes, "c-9", 3) == 0);
    CHECK(out.content_encoding.len == 4 && memcmp(out.content_encoding.bytes, "gzip", 4) == 0);
    CHECK(out.reply_to.len == 7 && memcmp(out.reply_to.bytes, "replies", 7) == 0);
    CHECK(out.app_id.len == 4 && memcmp(out.app_id.bytes, "shop", 4) == 0);
    CHECK_INT(out.delivery_mode, 2);
    CHECK_INT(out.priority, 7);
    CHECK_INT(out.timestamp, 1764950000);
    CHECK_INT(out.headers.num_entries, 2);
    if (out.headers.num_entries == 2) {
        CHECK_INT(out.headers.entries[0].value.kind, AMQP_FIELD_KIND_I32);
        CHECK_INT(out.headers.entries[0].value.value.i32, 3);
        CHECK(out.headers.entries[1].value.value.bytes.len == 55);
    }

    /* a message with no properties and an empty body */
    free(enc);
    amqp_basic_properties_t none = {0};
    CHECK_INT(wr_gate_entry_encode(&none, (amqp_bytes_t){0, NULL}, 5, &enc, &len), 0);
    CHECK_INT(wr_gate_entry_decode(enc, len, &pool, &out, &ob, &deadline, err, sizeof(err)), 0);
    CHECK_INT(out._flags, 0);
    CHECK_INT(ob.len, 0);
    CHECK_INT(deadline, 5);
    free(enc);

    /* broken strings */
    CHECK_INT(wr_gate_entry_decode("abc", 3, &pool, &out, &ob, &deadline, err, sizeof(err)), -1);
    CHECK_STR(err, "not a parked message: no deadline");
    CHECK_INT(wr_gate_entry_decode("12x|abcd", 8, &pool, &out, &ob, &deadline, err, sizeof(err)),
              -1);
    CHECK_STR(err, "not a parked message: bad deadline");
    CHECK_INT(wr_gate_entry_decode("12|\xff\xff\xff\xff", 7, &pool, &out, &ob, &deadline, err,
                                   sizeof(err)),
              -1);
    CHECK_STR(err, "not a parked message: bad properties");
    empty_amqp_pool(&pool);
}

int main(void)
{
    test_topic_match();
    test_routed_and_lookup();
    test_keys();
    test_entry_round_trip();
    return check_report("test_gates");
}
