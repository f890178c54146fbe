/*
 * fuzz_cloudevent: what a producer sends as a CloudEvent, through the
 * reader of both content modes.
 *
 * Input: a flags byte, a length byte and that many bytes of content type,
 * a byte N and N headers (a length byte and the name, a length byte and the
 * value; the flags say whether values are strings or byte arrays), then the
 * body (the rest). wr_cloudevent_read() runs on the envelope: 1 (a
 * CloudEvent) comes with a mode, a type, an id and attributes that are a
 * JSON object holding that type and id, and in structured mode data that is
 * JSON (or none); 0 with mode none; -1 with a reason. A CloudEvent read is
 * written again in structured mode (wr_cloudevent_structured) and read back
 * with the same type and id.
 */
#include <jansson.h>

#include "cloudevent.h"

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
    uint8_t flags = fz_u8(&in);
    const uint8_t *ctp, *bp;
    size_t ctn = fz_take(&in, fz_u8(&in), &ctp);
    int nh = fz_u8(&in) % 16;
    amqp_table_entry_t ents[16];
    for (int i = 0; i < nh; i++) {
        const uint8_t *kp, *vp;
        size_t kn = fz_take(&in, fz_u8(&in), &kp);
        size_t vn = fz_take(&in, fz_u8(&in), &vp);
        ents[i].key = (amqp_bytes_t){kn, (void *)kp};
        ents[i].value.kind = (flags >> (i % 8)) & 1 ? AMQP_FIELD_KIND_BYTES : AMQP_FIELD_KIND_UTF8;
        ents[i].value.value.bytes = (amqp_bytes_t){vn, (void *)vp};
    }
    size_t bn = fz_take(&in, in.n, &bp);
    amqp_table_t t = {.num_entries = nh, .entries = ents};
    wr_envelope env;
    memset(&env, 0, sizeof(env));
    env.headers = &t;
    env.content_type = (amqp_bytes_t){ctn, (void *)ctp};
    env.body = (amqp_bytes_t){bn, (void *)bp};

    wr_cloudevent ce;
    char err[256];
    err[0] = '\0';
    int rc = wr_cloudevent_read(&env, &ce, err, sizeof(err));
    FZ_ASSERT(rc >= -1 && rc <= 1);
    if (rc < 0) {
        FZ_ASSERT(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
        return 0;
    }
    if (rc == 0) {
        FZ_ASSERT(ce.mode == WR_CE_NONE);
        wr_cloudevent_clear(&ce);
        return 0;
    }
    FZ_ASSERT(ce.mode == WR_CE_BINARY || ce.mode == WR_CE_STRUCTURED);
    FZ_ASSERT(ce.type != NULL && ce.type[0] && ce.id != NULL && ce.id[0]);
    json_t *attrs = json_loads(ce.attributes, JSON_ALLOW_NUL, NULL);
    FZ_ASSERT(json_is_object(attrs));
    FZ_ASSERT(strcmp(json_string_value(json_object_get(attrs, "type")), ce.type) == 0);
    FZ_ASSERT(strcmp(json_string_value(json_object_get(attrs, "id")), ce.id) == 0);
    json_decref(attrs);
    if (ce.mode == WR_CE_STRUCTURED && ce.data != NULL) {
        json_t *d = json_loadb(ce.data, ce.data_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        FZ_ASSERT(d != NULL);
        json_decref(d);
    }

    /* written again in structured mode, it reads back as the same event */
    wr_ce_attrs a = {.id = ce.id, .type = ce.type, .source = "/fuzz", .time = NULL};
    const char *body = ce.mode == WR_CE_STRUCTURED ? ce.data : (const char *)env.body.bytes;
    size_t blen = ce.mode == WR_CE_STRUCTURED ? ce.data_len : env.body.len;
    size_t len = 0;
    char *text = wr_cloudevent_structured(&a, NULL, body ? body : "", body ? blen : 0, &len);
    FZ_ASSERT(text != NULL);
    wr_envelope back;
    memset(&back, 0, sizeof(back));
    back.content_type = amqp_cstring_bytes(WR_CE_STRUCTURED_TYPE);
    back.body = (amqp_bytes_t){len, text};
    wr_cloudevent ce2;
    int rc2 = wr_cloudevent_read(&back, &ce2, err, sizeof(err));
    /* data that is not JSON goes as a string, or as data_base64 (which the reader refuses) */
    FZ_ASSERT(rc2 == 1 || (rc2 == -1 && strstr(text, "\"data_base64\"") != NULL));
    if (rc2 == 1) {
        FZ_ASSERT(strcmp(ce2.type, ce.type) == 0 && strcmp(ce2.id, ce.id) == 0);
        wr_cloudevent_clear(&ce2);
    }
    free(text);
    wr_cloudevent_clear(&ce);
    return 0;
}
