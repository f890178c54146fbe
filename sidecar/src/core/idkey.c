/*
 * idkey: derive a message's idempotency key. See idkey.h.
 */
#include "idkey.h"

#include "digest.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "dlq.h"

/* Copy N bytes of S as the key, refusing empty and oversized ones. */
static int set_key(const char *s, size_t n, char *out, size_t cap, const char *what, char *why,
                   size_t whycap)
{
    if (n == 0) {
        snprintf(why, whycap, "%s is empty", what);
        return -1;
    }
    if (n > WR_IDKEY_MAX || n + 1 > cap) {
        snprintf(why, whycap, "%s is %zu bytes, longer than the %d allowed for a key", what, n,
                 WR_IDKEY_MAX);
        return -1;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

/* Follow the dot path PATH through the JSON object ROOT. */
static json_t *json_path(json_t *root, const char *path)
{
    char seg[256];
    const char *p = path;
    json_t *cur = root;
    while (cur != NULL && *p) {
        size_t n = strcspn(p, ".");
        if (n == 0 || n >= sizeof(seg)) {
            return NULL;
        }
        memcpy(seg, p, n);
        seg[n] = '\0';
        cur = json_is_object(cur) ? json_object_get(cur, seg) : NULL;
        p += n;
        if (*p == '.') {
            p++;
        }
    }
    return cur;
}

/* The key from a field of the JSON body: 0, -1 (no such field), or -2 (the body
 * is not JSON). */
static int from_json(const wr_idem_policy *pol, const wr_envelope *env, char *out, size_t cap,
                     char *why, size_t whycap)
{
    json_error_t jerr;
    json_t *root = json_loadb(env->body.bytes, env->body.len, JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        snprintf(why, whycap, "the key is the JSON field '%s', but the body is not JSON (%s)",
                 pol->key_arg, jerr.text);
        return -2;
    }
    json_t *v = json_path(root, pol->key_arg);
    int rc = -1;
    char what[300];
    snprintf(what, sizeof(what), "the JSON field '%s'", pol->key_arg);
    if (json_is_string(v)) {
        rc = set_key(json_string_value(v), json_string_length(v), out, cap, what, why, whycap);
    } else if (json_is_integer(v)) {
        char num[32];
        int n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        rc = set_key(num, (size_t)n, out, cap, what, why, whycap);
    } else if (v == NULL || json_is_null(v)) {
        snprintf(why, whycap, "the body has no JSON field '%s'", pol->key_arg);
    } else {
        snprintf(why, whycap, "the JSON field '%s' is not a string or an integer", pol->key_arg);
    }
    json_decref(root);
    return rc;
}

static int body_hash(const wr_envelope *env, char *out, size_t cap)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (cap < 7 + 64 + 1 ||
        EVP_Digest(env->body.bytes, env->body.len, md, &len, wr_sha256(), NULL) != 1) {
        return -1;
    }
    memcpy(out, "sha256:", 7);
    for (unsigned int i = 0; i < len; i++) {
        snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
    }
    return 0;
}

wr_reason wr_idkey_derive(const wr_idem_policy *pol, const wr_envelope *env, char *out, size_t cap,
                          char *why, size_t whycap)
{
    int rc = -1;
    char what[300];
    why[0] = '\0';
    switch (pol->source) {
    case WR_KEY_MESSAGE_ID:
        if (env->id.len == 0) {
            snprintf(why, whycap, "the message has no message_id");
        } else {
            rc = set_key(env->id.bytes, env->id.len, out, cap, "the message_id", why, whycap);
        }
        break;
    case WR_KEY_HEADER: {
        snprintf(what, sizeof(what), "the header '%s'", pol->key_arg);
        amqp_bytes_t v = wr_table_get_str(env->headers, pol->key_arg);
        int64_t num;
        if (v.len > 0) {
            rc = set_key(v.bytes, v.len, out, cap, what, why, whycap);
        } else if (wr_table_get_int(env->headers, pol->key_arg, &num) == 0) {
            char buf[32];
            int n = snprintf(buf, sizeof(buf), "%lld", (long long)num);
            rc = set_key(buf, (size_t)n, out, cap, what, why, whycap);
        } else {
            snprintf(why, whycap, "the message has no header '%s'", pol->key_arg);
        }
        break;
    }
    case WR_KEY_JSON:
        rc = from_json(pol, env, out, cap, why, whycap);
        if (rc == -2 && env->is_json) {
            /* invalid whatever the key: the handler could not decode it either */
            return WR_RS_INVALID_JSON;
        }
        break;
    }
    if (rc == 0) {
        return WR_RS_NONE;
    }
    if (pol->missing_key_hash && env->body.len > 0 && body_hash(env, out, cap) == 0) {
        return WR_RS_NONE;
    }
    return WR_RS_MISSING_KEY;
}

size_t wr_idkey_event_id(const char *base, size_t base_len, const char *subscription, int n,
                         char *out)
{
    int len = snprintf(out, WR_EVENT_ID_CAP, "%.*s:%s:%d", (int)base_len, base, subscription, n);
    if (len >= 0 && len <= WR_AMQP_SHORTSTR) {
        return (size_t)len;
    }
    /* too long for a message id: the same id every time, in 7 + 64 + 1 + 10 bytes */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c != NULL && EVP_DigestInit_ex(c, wr_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(c, base, base_len) == 1 && EVP_DigestUpdate(c, ":", 1) == 1 &&
             EVP_DigestUpdate(c, subscription, strlen(subscription)) == 1 &&
             EVP_DigestFinal_ex(c, md, &mdlen) == 1;
    EVP_MD_CTX_free(c);
    if (!ok) {
        mdlen = 0; /* out of memory in OpenSSL: an id of the index alone, still valid */
    }
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    memcpy(p, "sha256:", 7);
    p += 7;
    for (unsigned int i = 0; i < mdlen; i++) {
        *p++ = hex[md[i] >> 4];
        *p++ = hex[md[i] & 15];
    }
    return (size_t)(p - out) + (size_t)sprintf(p, ":%d", n);
}

char *wr_idkey_fields(char *const *paths, int n, const wr_envelope *env)
{
    if (n <= 0 || env->body.len == 0) {
        return NULL;
    }
    json_t *root = json_loadb(env->body.bytes, env->body.len, JSON_DECODE_ANY, NULL);
    if (root == NULL) {
        return NULL;
    }
    json_t *out = json_object();
    for (int i = 0; i < n; i++) {
        json_t *v = json_path(root, paths[i]);
        if (json_is_string(v)) {
            size_t len = wr_utf8_truncate(json_string_value(v), json_string_length(v), 200);
            json_object_set_new(out, paths[i], json_stringn(json_string_value(v), len));
        } else if (json_is_number(v)) {
            json_object_set(out, paths[i], v);
        }
    }
    char *text =
        json_object_size(out) > 0 ? json_dumps(out, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(out);
    json_decref(root);
    return text;
}
