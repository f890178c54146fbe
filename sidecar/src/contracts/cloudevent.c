/*
 * cloudevent: a CloudEvent out of an AMQP message, binary or structured
 * mode. See cloudevent.h.
 */
#include "cloudevent.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Header prefixes of binary mode, in the order they are tried. */
static const char *const PREFIXES[] = {"cloudEvents:", "cloudEvents_", "ce-", "ce_"};
#define NPREFIX (sizeof PREFIXES / sizeof PREFIXES[0])

/* The attributes every CloudEvent has. */
static const char *const REQUIRED[] = {"id", "source", "type", "specversion"};

void wr_cloudevent_clear(wr_cloudevent *ce)
{
    free(ce->attributes);
    free(ce->type);
    free(ce->id);
    free(ce->data);
    memset(ce, 0, sizeof(*ce));
}

static int starts_with(amqp_bytes_t b, const char *p)
{
    size_t n = strlen(p);
    return b.len >= n && memcmp(b.bytes, p, n) == 0;
}

/* The content type without parameters, lowercased, in BUF. */
static const char *media_type(amqp_bytes_t ct, char *buf, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < ct.len && n + 1 < cap; i++) {
        char ch = ((const char *)ct.bytes)[i];
        if (ch == ';') {
            break;
        }
        if (ch != ' ') {
            buf[n++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
    }
    buf[n] = 0;
    return buf;
}

/* A header value as a JSON value: strings, integers, booleans, timestamps
 * (RFC 3339, UTC); NULL for other kinds. */
static json_t *header_value(const amqp_field_value_t *v)
{
    char ts[32];
    int64_t n;
    if (wr_field_int(v, &n) == 0) {
        return json_integer(n);
    }
    switch (v->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        return json_stringn((const char *)v->value.bytes.bytes, v->value.bytes.len);
    case AMQP_FIELD_KIND_BOOLEAN:
        return json_boolean(v->value.boolean);
    case AMQP_FIELD_KIND_TIMESTAMP: {
        time_t t = (time_t)v->value.u64;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        return json_string(ts);
    }
    default:
        return NULL;
    }
}

/* Attributes from the headers of a binary-mode message, into ATTRS. */
static void read_binary(const wr_envelope *env, json_t *attrs)
{
    const amqp_table_t *t = env->headers;
    for (int i = 0; t != NULL && i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        for (size_t p = 0; p < NPREFIX; p++) {
            size_t n = strlen(PREFIXES[p]);
            if (!starts_with(e->key, PREFIXES[p]) || e->key.len == n) {
                continue;
            }
            char name[128];
            snprintf(name, sizeof(name), "%.*s", (int)(e->key.len - n),
                     (const char *)e->key.bytes + n);
            json_t *v = header_value(&e->value);
            if (v != NULL && json_object_get(attrs, name) == NULL) {
                json_object_set_new(attrs, name, v);
            } else {
                json_decref(v);
            }
            break;
        }
    }
    if (env->content_type.len > 0 && json_object_get(attrs, "datacontenttype") == NULL) {
        json_object_set_new(
            attrs, "datacontenttype",
            json_stringn((const char *)env->content_type.bytes, env->content_type.len));
    }
}

/* 1 when a header names the spec version under one of the prefixes. */
static int is_binary(const wr_envelope *env)
{
    for (size_t p = 0; p < NPREFIX; p++) {
        char name[64];
        snprintf(name, sizeof(name), "%sspecversion", PREFIXES[p]);
        if (wr_table_get(env->headers, name) != NULL) {
            return 1;
        }
    }
    return 0;
}

int wr_cloudevent_read(const wr_envelope *env, wr_cloudevent *ce, char *err, size_t errcap)
{
    char mt[128];
    json_t *attrs = NULL;
    memset(ce, 0, sizeof(*ce));
    err[0] = 0;
    if (strcmp(media_type(env->content_type, mt, sizeof(mt)), "application/cloudevents+json") ==
        0) {
        json_error_t jerr;
        ce->mode = WR_CE_STRUCTURED;
        attrs = json_loadb((const char *)env->body.bytes, env->body.len, 0, &jerr);
        if (!json_is_object(attrs)) {
            snprintf(err, errcap, "structured CloudEvent: the body is not a JSON object%s%s",
                     attrs ? "" : ": ", attrs ? "" : jerr.text);
            goto fail;
        }
        if (json_object_get(attrs, "data_base64") != NULL) {
            snprintf(err, errcap, "structured CloudEvent: data_base64 is not supported");
            goto fail;
        }
        json_t *data = json_object_get(attrs, "data");
        if (data != NULL) {
            ce->data = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
            ce->data_len = ce->data ? strlen(ce->data) : 0;
            json_object_del(attrs, "data");
        }
    } else if (is_binary(env)) {
        ce->mode = WR_CE_BINARY;
        attrs = json_object();
        if (attrs == NULL) {
            snprintf(err, errcap, "out of memory");
            goto fail;
        }
        read_binary(env, attrs);
    } else {
        return 0;
    }
    for (size_t i = 0; i < sizeof(REQUIRED) / sizeof(REQUIRED[0]); i++) {
        const json_t *v = json_object_get(attrs, REQUIRED[i]);
        if (!json_is_string(v) || json_string_length(v) == 0) {
            snprintf(err, errcap, "%s CloudEvent without %s",
                     ce->mode == WR_CE_BINARY ? "binary" : "structured", REQUIRED[i]);
            goto fail;
        }
        if (strlen(json_string_value(v)) != json_string_length(v)) {
            /* a header's bytes may hold one: the id would be cut there (and two events
             * share a key); the spec allows no control characters in a String anyway */
            snprintf(err, errcap, "CloudEvent %s contains a NUL byte", REQUIRED[i]);
            goto fail;
        }
    }
    const char *sv = json_string_value(json_object_get(attrs, "specversion"));
    if (strcmp(sv, "1.0") != 0) {
        snprintf(err, errcap, "CloudEvent specversion %.16s: only 1.0 is read", sv);
        goto fail;
    }
    ce->type = strdup(json_string_value(json_object_get(attrs, "type")));
    ce->id = strdup(json_string_value(json_object_get(attrs, "id")));
    ce->attributes = json_dumps(attrs, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(attrs);
    if (!ce->type || !ce->id || !ce->attributes) {
        snprintf(err, errcap, "out of memory");
        wr_cloudevent_clear(ce);
        return -1;
    }
    return 1;
fail:
    json_decref(attrs);
    {
        wr_ce_mode mode = ce->mode;
        wr_cloudevent_clear(ce);
        ce->mode = mode;
    }
    return -1;
}

/* BODY (LEN bytes) in base64 (RFC 4648), as a JSON string; NULL when out of memory. */
static json_t *base64_json(const unsigned char *b, size_t len)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *t = malloc((len + 2) / 3 * 4 + 1);
    size_t n = 0;
    if (t == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)b[i] << 16 | (i + 1 < len ? (unsigned)b[i + 1] << 8 : 0) |
                     (i + 2 < len ? b[i + 2] : 0);
        t[n++] = A[v >> 18 & 63];
        t[n++] = A[v >> 12 & 63];
        t[n++] = i + 1 < len ? A[v >> 6 & 63] : '=';
        t[n++] = i + 2 < len ? A[v & 63] : '=';
    }
    json_t *j = json_stringn(t, n);
    free(t);
    return j;
}

char *wr_cloudevent_structured(const wr_ce_attrs *a, const char *content_type, const char *body,
                               size_t len, size_t *out_len)
{
    json_t *ev = json_object();
    const char *keys[] = {"id", "type", "source", "subject", "time", "traceparent"};
    const char *vals[] = {a->id, a->type, a->source, a->subject, a->time, a->traceparent};
    json_object_set_new(ev, "specversion", json_string("1.0"));
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        if (vals[k] != NULL) {
            json_object_set_new(ev, keys[k], json_string(vals[k]));
        }
    }
    amqp_bytes_t ct = {content_type ? strlen(content_type) : 0, (void *)content_type};
    json_t *data = NULL;
    if (wr_envelope_is_json_type(ct)) {
        data = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    }
    if (data != NULL) {
        json_object_set_new(ev, "datacontenttype",
                            json_string(content_type ? content_type : "application/json"));
        json_object_set_new(ev, "data", data);
    } else {
        if (content_type != NULL) {
            json_object_set_new(ev, "datacontenttype", json_string(content_type));
        }
        /* text: UTF-8 without NUL bytes (json_stringn refuses other bytes) */
        json_t *text = memchr(body, 0, len) == NULL ? json_stringn(body, len) : NULL;
        if (text != NULL) {
            json_object_set_new(ev, "data", text);
        } else {
            json_object_set_new(ev, "data_base64", base64_json((const unsigned char *)body, len));
        }
    }
    char *out = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(ev);
    *out_len = out ? strlen(out) : 0;
    return out;
}
