/*
 * envelope: decode a delivery's properties into a wr_envelope and decide
 * whether it can be handled at all. See envelope.h.
 */
#include "envelope.h"

#include "digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "contract.h"
#include "log.h"

const amqp_field_value_t *wr_table_get(const amqp_table_t *table, const char *name)
{
    if (table == NULL) {
        return NULL;
    }
    size_t n = strlen(name);
    for (int i = 0; i < table->num_entries; i++) {
        const amqp_table_entry_t *e = &table->entries[i];
        if (e->key.len == n && memcmp(e->key.bytes, name, n) == 0) {
            return &e->value;
        }
    }
    return NULL;
}

int wr_field_int(const amqp_field_value_t *v, int64_t *out)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        *out = v->value.i8;
        return 0;
    case AMQP_FIELD_KIND_U8:
        *out = v->value.u8;
        return 0;
    case AMQP_FIELD_KIND_I16:
        *out = v->value.i16;
        return 0;
    case AMQP_FIELD_KIND_U16:
        *out = v->value.u16;
        return 0;
    case AMQP_FIELD_KIND_I32:
        *out = v->value.i32;
        return 0;
    case AMQP_FIELD_KIND_U32:
        *out = v->value.u32;
        return 0;
    case AMQP_FIELD_KIND_I64:
        *out = v->value.i64;
        return 0;
    default:
        return -1;
    }
}

int wr_table_get_int(const amqp_table_t *table, const char *name, int64_t *out)
{
    const amqp_field_value_t *v = wr_table_get(table, name);
    if (v == NULL) {
        return -1;
    }
    if (wr_field_int(v, out) == 0) {
        return 0;
    }
    switch (v->kind) {
    case AMQP_FIELD_KIND_U64:
        if (v->value.u64 > (uint64_t)INT64_MAX) {
            return -1; /* not representable: the cast would make it negative */
        }
        *out = (int64_t)v->value.u64;
        return 0;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: {
        char buf[24];
        size_t len = v->value.bytes.len;
        if (len == 0 || len >= sizeof(buf)) {
            return -1;
        }
        memcpy(buf, v->value.bytes.bytes, len);
        buf[len] = '\0';
        char *end;
        errno = 0;
        long long x = strtoll(buf, &end, 10);
        if (*end != '\0' || errno == ERANGE) {
            return -1;
        }
        *out = x;
        return 0;
    }
    default:
        return -1;
    }
}

amqp_bytes_t wr_table_get_str(const amqp_table_t *table, const char *name)
{
    const amqp_field_value_t *v = wr_table_get(table, name);
    if (v != NULL && (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES)) {
        return v->value.bytes;
    }
    return amqp_empty_bytes;
}

size_t wr_utf8_check(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t len = wr_utf8_seq_len(s + i, n - i);
        if (len == 0) {
            return i;
        }
        i += len;
    }
    return n;
}

int wr_envelope_is_json_type(amqp_bytes_t ct)
{
    if (ct.len == 0) {
        return 1;
    }
    /* compare the media type only, without parameters such as "; charset=utf-8" */
    size_t n = 0;
    const char *s = ct.bytes;
    while (n < ct.len && s[n] != ';' && s[n] != ' ') {
        n++;
    }
    if ((n == 16 && strncasecmp(s, "application/json", 16) == 0) ||
        (n == 9 && strncasecmp(s, "text/json", 9) == 0)) {
        return 1;
    }
    return n > 17 && strncasecmp(s, "application/", 12) == 0 &&
           strncasecmp(s + n - 5, "+json", 5) == 0;
}

static amqp_bytes_t bytes_if(int flag, amqp_bytes_t b)
{
    return flag ? b : amqp_empty_bytes;
}

int wr_envelope_decode(const amqp_envelope_t *d, size_t max_body, int require_id, wr_envelope *env,
                       const char **reason, char *detail, size_t detail_cap)
{
    const amqp_basic_properties_t *p = &d->message.properties;
    amqp_flags_t f = p->_flags;

    memset(env, 0, sizeof(*env));
    detail[0] = '\0';
    *reason = NULL;
    env->id = bytes_if(f & AMQP_BASIC_MESSAGE_ID_FLAG, p->message_id);
    env->headers = (f & AMQP_BASIC_HEADERS_FLAG) ? &p->headers : NULL;
    /* A retry comes back from its delay queue through the default exchange;
     * the route the producer chose travels in our headers. */
    if (wr_table_get(env->headers, "x-warren-original-exchange") != NULL) {
        env->exchange = wr_table_get_str(env->headers, "x-warren-original-exchange");
        env->routing_key = wr_table_get_str(env->headers, "x-warren-original-routing-key");
    } else {
        env->exchange = d->exchange;
        env->routing_key = d->routing_key;
    }
    env->type = (f & AMQP_BASIC_TYPE_FLAG) && p->type.len ? p->type : env->routing_key;
    env->content_type = bytes_if(f & AMQP_BASIC_CONTENT_TYPE_FLAG, p->content_type);
    env->body = d->message.body;
    env->timestamp = (f & AMQP_BASIC_TIMESTAMP_FLAG) ? (int64_t)p->timestamp : 0;
    env->redelivered = d->redelivered;
    env->is_json = wr_envelope_is_json_type(env->content_type);

    int64_t attempt = 0;
    env->attempt = 1;
    if (wr_table_get_int(env->headers, "x-warren-attempt", &attempt) == 0 && attempt > 0 &&
        attempt < 1000000) {
        env->attempt = (int)attempt + 1;
    }
    env->traceparent = wr_table_get_str(env->headers, "traceparent");
    env->tracestate = wr_table_get_str(env->headers, "tracestate");
    int64_t version = 0;
    env->version = wr_table_get_str(env->headers, "version");
    if (env->version.len == 0 && wr_table_get_int(env->headers, "version", &version) == 0) {
        int n = snprintf(env->version_buf, sizeof(env->version_buf), "%lld", (long long)version);
        env->version.bytes = env->version_buf;
        env->version.len = (size_t)n;
    }

    if (env->id.len == 0 && require_id) {
        *reason = WR_REASON_MISSING_ID;
        snprintf(detail, detail_cap, "the message has no message_id property");
        return -1;
    }
    if (env->body.len == 0) {
        *reason = WR_REASON_EMPTY_BODY;
        snprintf(detail, detail_cap, WR_E_EMPTY_BODY);
        return -1;
    }
    if (env->body.len > max_body) {
        *reason = WR_REASON_TOO_LARGE;
        snprintf(detail, detail_cap, "the body is %zu bytes, more than the limit of %zu",
                 env->body.len, max_body);
        return -1;
    }
    if ((f & AMQP_BASIC_CONTENT_ENCODING_FLAG) && p->content_encoding.len > 0 &&
        !(p->content_encoding.len == 8 &&
          strncasecmp(p->content_encoding.bytes, "identity", 8) == 0)) {
        *reason = WR_REASON_ENCODING;
        snprintf(detail, detail_cap, "content_encoding '%.*s' is not supported",
                 (int)(p->content_encoding.len > 64 ? 64 : p->content_encoding.len),
                 (const char *)p->content_encoding.bytes);
        return -1;
    }
    if (env->is_json) {
        size_t bad = wr_utf8_check(env->body.bytes, env->body.len);
        if (bad != env->body.len) {
            *reason = WR_REASON_NOT_UTF8;
            snprintf(detail, detail_cap, "the JSON body is not valid UTF-8 (byte %zu)", bad);
            return -1;
        }
    }
    return 0;
}

/* 1 when C is a lowercase hex digit. */
static int lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* 1 when the N bytes at S are lowercase hex and not all zeros. */
static int hex_id(const char *s, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!lower_hex(c)) {
            return 0;
        }
        nonzero |= c != '0';
    }
    return nonzero;
}

int wr_trace_parse(amqp_bytes_t tp, char *trace_id, char *span_id)
{
    const char *s = tp.bytes;
    /* version 00 is exactly 55 bytes; later versions may append fields */
    if (tp.len < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' ||
        (tp.len > 55 && s[55] != '-')) {
        return -1;
    }
    /* version and flags are two lowercase hex digits each; version ff is invalid */
    if (!lower_hex(s[0]) || !lower_hex(s[1]) || (s[0] == 'f' && s[1] == 'f') || !lower_hex(s[53]) ||
        !lower_hex(s[54])) {
        return -1;
    }
    if ((s[0] == '0' && s[1] == '0' && tp.len != 55) || !hex_id(s + 3, 32) || !hex_id(s + 36, 16)) {
        return -1;
    }
    memcpy(trace_id, s + 3, 32);
    trace_id[32] = '\0';
    memcpy(span_id, s + 36, 16);
    span_id[16] = '\0';
    return 0;
}

int wr_trace_derive(amqp_bytes_t message_id, const char *key, char *trace_id)
{
    static const char tag[] = "warren-trace\n";
    const void *src = message_id.bytes;
    size_t n = message_id.len;
    if (n == 0) {
        src = key;
        n = key != NULL ? strlen(key) : 0;
    }
    if (n == 0) {
        return -1;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, wr_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, tag, sizeof(tag) - 1) == 1 &&
             EVP_DigestUpdate(ctx, src, n) == 1 && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 &&
             mdlen >= 16;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        return -1;
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        trace_id[2 * i] = hex[md[i] >> 4];
        trace_id[2 * i + 1] = hex[md[i] & 15];
    }
    trace_id[32] = '\0';
    return 0;
}
