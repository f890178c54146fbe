/*
 * fuzz_envelope: what a producer sends, through envelope decoding.
 *
 * Input: a 2-byte length and that many bytes of AMQP basic properties as
 * they travel in a content header (flags, then the fields: rabbitmq-c's
 * amqp_decode_properties reads them, as it does for every delivery), the
 * exchange and routing key (a length byte each), a flags byte (redelivered,
 * require_id), a 2-byte body limit, and the body (the rest). Then
 * wr_envelope_decode(), the header readers and wr_trace_parse() run on it,
 * and what they promise is checked: a message that passes has a body within
 * the limit (valid UTF-8 when it is JSON), an attempt of at least 1, and a
 * NUL-terminated detail; a message that fails has a reason.
 */
#include <sys/time.h>

#include "envelope.h"

#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    const uint8_t *props_p, *ex_p, *rk_p, *body_p;
    size_t props_n = fz_take(&in, fz_u16(&in), &props_p);
    size_t ex_n = fz_take(&in, fz_u8(&in), &ex_p);
    size_t rk_n = fz_take(&in, fz_u8(&in), &rk_p);
    uint8_t flags = fz_u8(&in);
    size_t max_body = fz_u16(&in);
    size_t body_n = fz_take(&in, in.n, &body_p);
    amqp_pool_t pool;
    amqp_envelope_t d;
    void *decoded = NULL;

    init_amqp_pool(&pool, 4096);
    memset(&d, 0, sizeof(d));
    if (amqp_decode_properties(AMQP_BASIC_CLASS, &pool, (amqp_bytes_t){props_n, (void *)props_p},
                               &decoded) < 0) {
        empty_amqp_pool(&pool);
        return 0;
    }
    d.message.properties = *(amqp_basic_properties_t *)decoded;
    d.exchange = (amqp_bytes_t){ex_n, (void *)ex_p};
    d.routing_key = (amqp_bytes_t){rk_n, (void *)rk_p};
    d.redelivered = flags & 1;
    d.message.body = (amqp_bytes_t){body_n, (void *)body_p};

    wr_envelope env;
    const char *reason = "unset";
    char detail[200];
    int rc = wr_envelope_decode(&d, max_body, flags & 2, &env, &reason, detail, sizeof(detail));
    FZ_ASSERT(memchr(detail, '\0', sizeof(detail)) != NULL);
    FZ_ASSERT(env.attempt >= 1);
    if (rc == 0) {
        FZ_ASSERT(reason == NULL);
        FZ_ASSERT(env.body.len > 0 && env.body.len <= max_body);
        if (env.is_json) {
            FZ_ASSERT(wr_utf8_check(env.body.bytes, env.body.len) == env.body.len);
        }
        if (flags & 2) {
            FZ_ASSERT(env.id.len > 0);
        }
    } else {
        FZ_ASSERT(rc == -1 && reason != NULL && detail[0] != '\0');
    }

    char trace_id[33], span_id[17];
    if (wr_trace_parse(env.traceparent, trace_id, span_id) == 0) {
        FZ_ASSERT(strlen(trace_id) == 32 && strlen(span_id) == 16);
    }
    int64_t v;
    (void)wr_table_get_int(env.headers, "x-warren-attempt", &v);
    (void)wr_table_get_str(env.headers, "x-warren-original-exchange");
    (void)wr_envelope_is_json_type(env.content_type);
    empty_amqp_pool(&pool);
    return 0;
}
