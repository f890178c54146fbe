/*
 * test_reroute.c: unit tests for reroute's pure part.
 *
 * wr_reroute_key(): a delivery's partition key is its ordering key (a JSON
 * field or a header, as ordering.key says), else its message id, else "".
 * wr_reroute_props(): the properties of the re-routed copy are the
 * original's with the partition header set, an existing one replaced, the
 * other headers kept in their order.
 */
#include "reroute.h"

#include "check.h"
#include "topology.h"

#include <string.h>

static amqp_envelope_t delivery(const char *id, const char *body, amqp_table_t *headers)
{
    amqp_envelope_t d;
    memset(&d, 0, sizeof(d));
    if (id != NULL) {
        d.message.properties._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        d.message.properties.message_id = amqp_cstring_bytes(id);
    }
    if (headers != NULL) {
        d.message.properties._flags |= AMQP_BASIC_HEADERS_FLAG;
        d.message.properties.headers = *headers;
    }
    d.message.properties._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    d.message.properties.content_type = amqp_cstring_bytes("application/json");
    d.message.body = amqp_cstring_bytes(body);
    d.routing_key = amqp_cstring_bytes("order.created");
    return d;
}

static wr_subscription sub_keyed(wr_key_source src, const char *arg)
{
    wr_subscription s;
    memset(&s, 0, sizeof(s));
    s.name = (char *)"orders";
    s.queue = (char *)"orders.q";
    s.max_body_size = 1 << 20;
    s.partitions = 4;
    s.ordering.enabled = 1;
    s.ordering.source = src;
    s.ordering.key_arg = (char *)arg;
    return s;
}

static amqp_table_entry_t str_entry(const char *k, const char *v)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(v);
    return e;
}

static void test_key(void)
{
    char out[600];
    wr_subscription s = sub_keyed(WR_KEY_JSON, "order.id");
    amqp_envelope_t d = delivery("m-1", "{\"order\":{\"id\":\"o-42\"}}", NULL);
    CHECK_INT((int)wr_reroute_key(&s, &d, out, sizeof(out)), 4);
    CHECK_STR(out, "o-42");
    /* no such field: the message id */
    d = delivery("m-2", "{\"order\":{}}", NULL);
    CHECK_INT((int)wr_reroute_key(&s, &d, out, sizeof(out)), 3);
    CHECK_STR(out, "m-2");
    /* not JSON, no id: "" (the worker dead-letters it from its partition) */
    d = delivery(NULL, "not json", NULL);
    CHECK_INT((int)wr_reroute_key(&s, &d, out, sizeof(out)), 0);
    CHECK_STR(out, "");
    /* a header key */
    amqp_table_entry_t e[1] = {str_entry("x-order", "o-7")};
    amqp_table_t h = {.num_entries = 1, .entries = e};
    s = sub_keyed(WR_KEY_HEADER, "x-order");
    d = delivery("m-3", "{}", &h);
    wr_reroute_key(&s, &d, out, sizeof(out));
    CHECK_STR(out, "o-7");
    /* cut to CAP */
    d = delivery("m-4", "{\"order\":{\"id\":\"abcdefgh\"}}", NULL);
    s = sub_keyed(WR_KEY_JSON, "order.id");
    CHECK_INT((int)wr_reroute_key(&s, &d, out, 5), 4);
    CHECK_STR(out, "abcd");
}

static void test_props(void)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_table_entry_t e[3] = {str_entry("a", "1"), str_entry(WR_TOPO_PARTITION_HEADER, "old"),
                               str_entry("b", "2")};
    amqp_table_t h = {.num_entries = 3, .entries = e};
    amqp_envelope_t d = delivery("m-1", "{}", &h);
    amqp_basic_properties_t out;
    CHECK_INT(wr_reroute_props(&pool, &d.message.properties, "o-42", &out), 0);
    CHECK(out._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    CHECK_INT(out.headers.num_entries, 3);
    CHECK(out.headers.num_entries == 3 && out.headers.entries[0].key.len == 1 &&
          memcmp(out.headers.entries[0].key.bytes, "a", 1) == 0);
    CHECK(out.headers.num_entries == 3 && out.headers.entries[1].key.len == 1 &&
          memcmp(out.headers.entries[1].key.bytes, "b", 1) == 0);
    amqp_bytes_t k = out.headers.entries[2].key, v = out.headers.entries[2].value.value.bytes;
    CHECK(k.len == strlen("warren-partition-key") &&
          memcmp(k.bytes, "warren-partition-key", k.len) == 0);
    CHECK_INT(out.headers.entries[2].value.kind, AMQP_FIELD_KIND_UTF8);
    CHECK(v.len == 4 && memcmp(v.bytes, "o-42", 4) == 0);
    /* the original is untouched */
    CHECK_INT(d.message.properties.headers.num_entries, 3);

    /* no headers at all: the one header */
    d = delivery("m-2", "{}", NULL);
    CHECK_INT(wr_reroute_props(&pool, &d.message.properties, "", &out), 0);
    CHECK(out._flags & AMQP_BASIC_HEADERS_FLAG);
    CHECK_INT(out.headers.num_entries, 1);
    CHECK_INT((int)out.headers.entries[0].value.value.bytes.len, 0);
    empty_amqp_pool(&pool);
}

int main(void)
{
    test_key();
    test_props();
    return check_report("test_reroute");
}
