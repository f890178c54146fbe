/*
 * cloudevent.c: the CloudEvents spec's own examples in binary mode (its AMQP
 * binding's example, under each header prefix) and structured mode (the JSON
 * event format's example), and what is refused.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cloudevent.h"

static amqp_bytes_t B(const char *s)
{
    return (amqp_bytes_t){.len = strlen(s), .bytes = (void *)s};
}

static amqp_table_entry_t str_entry(const char *k, const char *v)
{
    amqp_table_entry_t e;
    e.key = B(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = B(v);
    return e;
}

/* The AMQP binding's binary example (section 3.1.4), names under PREFIX. */
static void binary_example(const char *prefix, char names[6][64], amqp_table_entry_t *ents,
                           amqp_table_t *t, wr_envelope *env)
{
    static const char *attrs[][2] = {{"specversion", "1.0"},
                                     {"type", "com.example.someevent"},
                                     {"time", "2018-04-05T03:56:24Z"},
                                     {"id", "1234-1234-1234"},
                                     {"source", "/mycontext/subcontext"},
                                     {"comexampleextension1", "value"}};
    for (int i = 0; i < 6; i++) {
        snprintf(names[i], 64, "%s%s", prefix, attrs[i][0]);
        ents[i] = str_entry(names[i], attrs[i][1]);
    }
    t->num_entries = 6;
    t->entries = ents;
    memset(env, 0, sizeof(*env));
    env->headers = t;
    env->content_type = B("application/json; charset=utf-8");
    env->body = B("{\"appinfoA\": \"abc\"}");
}

static void test_binary(void)
{
    const char *prefixes[] = {"cloudEvents:", "cloudEvents_", "ce-", "ce_"};
    for (int p = 0; p < 4; p++) {
        char names[6][64], err[256];
        amqp_table_entry_t ents[6];
        amqp_table_t t;
        wr_envelope env;
        wr_cloudevent ce;
        binary_example(prefixes[p], names, ents, &t, &env);
        CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), 1);
        CHECK_INT(ce.mode, WR_CE_BINARY);
        CHECK_STR(ce.attributes, "{\"comexampleextension1\":\"value\",\"datacontenttype\":"
                                 "\"application/json; charset=utf-8\",\"id\":\"1234-1234-1234\","
                                 "\"source\":\"/mycontext/subcontext\",\"specversion\":\"1.0\","
                                 "\"time\":\"2018-04-05T03:56:24Z\",\"type\":"
                                 "\"com.example.someevent\"}");
        CHECK_STR(ce.type, "com.example.someevent");
        CHECK_STR(ce.id, "1234-1234-1234");
        CHECK(ce.data == NULL); /* binary mode: the body is the data, as it is */
        wr_cloudevent_clear(&ce);
    }
    /* a native timestamp and a long, as the binding's type mapping allows */
    char names[6][64], err[256];
    amqp_table_entry_t ents[7];
    amqp_table_t t;
    wr_envelope env;
    wr_cloudevent ce;
    binary_example("cloudEvents:", names, ents, &t, &env);
    ents[2].value.kind = AMQP_FIELD_KIND_TIMESTAMP;
    ents[2].value.value.u64 = 1522900584; /* 2018-04-05T03:56:24Z */
    ents[5].value.kind = AMQP_FIELD_KIND_I64;
    ents[5].value.value.i64 = 5;
    CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), 1);
    CHECK(ce.attributes && strstr(ce.attributes, "\"time\":\"2018-04-05T03:56:24Z\"") != NULL);
    CHECK(ce.attributes && strstr(ce.attributes, "\"comexampleextension1\":5") != NULL);
    wr_cloudevent_clear(&ce);
    /* no source */
    t.num_entries = 4;
    CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), -1);
    CHECK_STR(err, "binary CloudEvent without source");
    /* not a CloudEvent at all */
    t.num_entries = 0;
    CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), 0);
    CHECK_INT(ce.mode, WR_CE_NONE);
}

static void test_structured(void)
{
    /* the JSON event format's example */
    const char *body = "{\n"
                       "    \"specversion\" : \"1.0\",\n"
                       "    \"type\" : \"com.example.someevent\",\n"
                       "    \"source\" : \"/mycontext\",\n"
                       "    \"id\" : \"C234-1234-1234\",\n"
                       "    \"time\" : \"2018-04-05T17:31:00Z\",\n"
                       "    \"comexampleextension1\" : \"value\",\n"
                       "    \"comexampleothervalue\" : 5,\n"
                       "    \"datacontenttype\" : \"application/json\",\n"
                       "    \"data\" : {\n"
                       "        \"appinfoA\" : \"abc\",\n"
                       "        \"appinfoB\" : 123,\n"
                       "        \"appinfoC\" : true\n"
                       "    }\n"
                       "}\n";
    wr_envelope env;
    wr_cloudevent ce;
    char err[256];
    memset(&env, 0, sizeof env);
    env.content_type = B("application/cloudevents+json; charset=UTF-8");
    env.body = B(body);
    CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), 1);
    CHECK_INT(ce.mode, WR_CE_STRUCTURED);
    CHECK_STR(ce.type, "com.example.someevent");
    CHECK_STR(ce.id, "C234-1234-1234");
    CHECK_STR(ce.attributes, "{\"comexampleextension1\":\"value\",\"comexampleothervalue\":5,"
                             "\"datacontenttype\":\"application/json\",\"id\":\"C234-1234-1234\","
                             "\"source\":\"/mycontext\",\"specversion\":\"1.0\",\"time\":"
                             "\"2018-04-05T17:31:00Z\",\"type\":\"com.example.someevent\"}");
    CHECK_STR(ce.data, "{\"appinfoA\":\"abc\",\"appinfoB\":123,\"appinfoC\":true}");
    CHECK_INT(ce.data_len, strlen(ce.data));
    wr_cloudevent_clear(&ce);

    env.body = B("[1]");
    CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), -1);
    CHECK_STR(err, "structured CloudEvent: the body is not a JSON object");
    env.body = B("{\"specversion\": \"0.3\", \"type\": \"t\", \"source\": \"s\", \"id\": \"i\"}");
    CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), -1);
    CHECK_STR(err, "CloudEvent specversion 0.3: only 1.0 is read");
    env.body = B("{\"specversion\": \"1.0\", \"type\": \"t\", \"source\": \"s\", \"id\": \"i\", "
                 "\"data_base64\": \"AA==\"}");
    CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), -1);
    CHECK_STR(err, "structured CloudEvent: data_base64 is not supported");
    env.body = B("{\"specversion\": \"1.0\", \"type\": \"t\", \"source\": \"s\", \"id\": \"\"}");
    CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), -1);
    CHECK_STR(err, "structured CloudEvent without id");
    /* no data: no body for the handler's event.data */
    env.body = B("{\"specversion\": \"1.0\", \"type\": \"t\", \"source\": \"s\", \"id\": \"i\"}");
    CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), 1);
    CHECK(ce.data == NULL);
    wr_cloudevent_clear(&ce);
}

/* Structured mode as warren writes it (ctx.publish ... mode = "structured"), read back. */
static void test_write_structured(void)
{
    wr_ce_attrs a = {.id = "C234-1234-1234",
                     .type = "com.example.someevent",
                     .source = "/mycontext",
                     .time = "2018-04-05T17:31:00.000Z",
                     .traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"};
    const char *data = "{\"appinfoA\": \"abc\", \"appinfoB\": 123, \"appinfoC\": true}";
    size_t len = 0;
    char *body = wr_cloudevent_structured(&a, NULL, data, strlen(data), &len);
    CHECK_STR(body, "{\"specversion\":\"1.0\",\"id\":\"C234-1234-1234\",\"type\":"
                    "\"com.example.someevent\",\"source\":\"/mycontext\",\"time\":"
                    "\"2018-04-05T17:31:00.000Z\",\"traceparent\":"
                    "\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\","
                    "\"datacontenttype\":\"application/json\",\"data\":{\"appinfoA\":\"abc\","
                    "\"appinfoB\":123,\"appinfoC\":true}}");
    CHECK_INT(len, body ? strlen(body) : 0);
    wr_envelope env;
    wr_cloudevent ce;
    char err[256];
    memset(&env, 0, sizeof env);
    env.content_type = B(WR_CE_STRUCTURED_TYPE);
    env.body = (amqp_bytes_t){.len = len, .bytes = body};
    CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), 1);
    CHECK_STR(ce.id, "C234-1234-1234");
    CHECK_STR(ce.data, "{\"appinfoA\":\"abc\",\"appinfoB\":123,\"appinfoC\":true}");
    wr_cloudevent_clear(&ce);
    free(body);

    /* text data stays text; bytes that are not UTF-8 go as data_base64 */
    a.subject = "orders/o-1";
    body = wr_cloudevent_structured(&a, "text/plain", "hello", 5, &len);
    CHECK_STR(strstr(body, "\"subject\":\"orders/o-1\",\"time\"") ? "yes" : body, "yes");
    CHECK_STR(strstr(body, "\"datacontenttype\":\"text/plain\",\"data\":\"hello\"}") ? "yes" : body,
              "yes");
    free(body);
    body = wr_cloudevent_structured(&a, "application/octet-stream", "\xff\x00\x01", 3, &len);
    CHECK_STR(strstr(body, "\"data_base64\":\"/wAB\"}") ? "yes" : body, "yes");
    free(body);
}

/* A NUL byte in a header's bytes would cut the id short: two events, one key. */
static void test_nul(void)
{
    char names[6][64], err[256];
    amqp_table_entry_t ents[6];
    amqp_table_t t;
    wr_envelope env;
    wr_cloudevent ce;
    binary_example("cloudEvents:", names, ents, &t, &env);
    ents[3].value.kind = AMQP_FIELD_KIND_BYTES;
    ents[3].value.value.bytes = (amqp_bytes_t){.len = 5, .bytes = "12\0ab"};
    CHECK_INT(wr_cloudevent_read(&env, &ce, err, sizeof err), -1);
    CHECK_STR(err, "CloudEvent id contains a NUL byte");
}

int main(void)
{
    test_binary();
    test_nul();
    test_structured();
    test_write_structured();
    return check_report("test_cloudevent");
}
