/*
 * fuzz_dlq: the DLQ header builder, fed a producer's properties and any
 * failure story.
 *
 * Input: a 2-byte length and that many bytes of AMQP basic properties (as in
 * fuzz_envelope), then the exchange, routing key, reason, error class, error
 * text, subscription, queue, handler, handler version, trace id and span id
 * (a length byte and the bytes each; trace and span ids absent when empty),
 * the attempt (2 bytes) and the time (8 bytes). wr_dlq_build_props() and
 * wr_dlq_build_wait_props() build the copies' properties; each must encode
 * (what the broker would be sent) and decode back with the story in it: the
 * attempt, an error cut to WR_DLQ_MAX_ERROR bytes, at most WR_DLQ_MAX_ERRORS
 * errors kept, no expiration, persistent delivery.
 */
#include <sys/time.h>

#include "dlq.h"
#include "envelope.h"

#include "fuzz.h"

#define ENC_CAP (1 << 20)

static uint8_t enc[ENC_CAP];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* Encode PROPS and decode them again into *BACK (in POOL). */
static void round_trip(amqp_pool_t *pool, amqp_basic_properties_t *props,
                       amqp_basic_properties_t **back)
{
    int n = amqp_encode_properties(AMQP_BASIC_CLASS, props, (amqp_bytes_t){ENC_CAP, enc});
    FZ_ASSERT(n >= 0);
    void *decoded = NULL;
    FZ_ASSERT(amqp_decode_properties(AMQP_BASIC_CLASS, pool, (amqp_bytes_t){(size_t)n, enc},
                                     &decoded) == 0);
    *back = decoded;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    const uint8_t *props_p;
    size_t props_n = fz_take(&in, fz_u16(&in), &props_p);
    char exchange[256], rk[256], reason[256], cls[256], error[256], sub[256], queue[256],
        handler[256], version[256], trace[256], span[256];
    amqp_pool_t pool;
    void *decoded = NULL;

    fz_str8(&in, exchange);
    fz_str8(&in, rk);
    fz_str8(&in, reason);
    fz_str8(&in, cls);
    fz_str8(&in, error);
    fz_str8(&in, sub);
    fz_str8(&in, queue);
    fz_str8(&in, handler);
    fz_str8(&in, version);
    fz_str8(&in, trace);
    fz_str8(&in, span);
    wr_failure f = {
        .reason = reason,
        .error_class = cls,
        .error = error,
        .attempt = fz_u16(&in),
        .now_ms = fz_i64(&in),
        .subscription = sub,
        .queue = queue,
        .handler = handler,
        .handler_version = version[0] ? version : NULL,
        .trace_id = trace[0] ? trace : NULL,
        .span_id = span[0] ? span : NULL,
    };

    init_amqp_pool(&pool, 4096);
    if (amqp_decode_properties(AMQP_BASIC_CLASS, &pool, (amqp_bytes_t){props_n, (void *)props_p},
                               &decoded) < 0) {
        empty_amqp_pool(&pool);
        return 0;
    }
    amqp_basic_properties_t *orig = decoded, out, *back;
    amqp_bytes_t ex = amqp_cstring_bytes(exchange), route = amqp_cstring_bytes(rk);

    FZ_ASSERT(wr_dlq_build_props(&pool, orig, ex, route, &f, &out) == 0);
    round_trip(&pool, &out, &back);
    FZ_ASSERT(back->_flags & AMQP_BASIC_HEADERS_FLAG);
    FZ_ASSERT(!(back->_flags & AMQP_BASIC_EXPIRATION_FLAG));
    FZ_ASSERT(back->delivery_mode == AMQP_DELIVERY_PERSISTENT);
    int64_t attempt = -1;
    FZ_ASSERT(wr_table_get_int(&back->headers, "x-warren-attempt", &attempt) == 0);
    FZ_ASSERT(attempt == f.attempt);
    FZ_ASSERT(wr_table_get_str(&back->headers, "x-warren-error").len <= WR_DLQ_MAX_ERROR);
    const amqp_field_value_t *errors = wr_table_get(&back->headers, "x-warren-errors");
    FZ_ASSERT(errors != NULL && errors->kind == AMQP_FIELD_KIND_ARRAY);
    FZ_ASSERT(errors->value.array.num_entries <= WR_DLQ_MAX_ERRORS);

    wr_sign_key key;
    wr_sign_key_from(&key, "fuzz signing key", 16);
    FZ_ASSERT(wr_dlq_build_wait_props(&pool, orig, ex, route, &key, &out) == 0);
    round_trip(&pool, &out, &back);
    FZ_ASSERT(wr_table_get(&back->headers, "x-warren-original-exchange") != NULL);

    empty_amqp_pool(&pool);
    return 0;
}
