/*
 * sign: HMAC-SHA256 over the headers warren trusts. See sign.h.
 */
#include "sign.h"

#include "digest.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "numfmt.h"

void wr_sign_key_from(wr_sign_key *k, const char *secret, size_t len)
{
    unsigned int n = 0;
    if (EVP_Digest(secret, len, k->key, &n, wr_sha256(), NULL) != 1 || n != sizeof(k->key)) {
        memset(k->key, 0, sizeof(k->key)); /* OpenSSL out of memory: no usable key */
    }
}

void wr_sign_key_for(wr_sign_key *k, const wr_config *cfg)
{
    if (cfg->signing_key != NULL) {
        wr_sign_key_from(k, cfg->signing_key, strlen(cfg->signing_key));
        return;
    }
    const char *parts[] = {"warren x-warren-* headers", cfg->amqp.password, cfg->redis.password,
                           cfg->amqp.vhost};
    char buf[4096];
    size_t at = 0;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        const char *p = parts[i] ? parts[i] : "";
        size_t n = strlen(p);
        if (at + n + 1 > sizeof(buf)) {
            n = sizeof(buf) - at - 1;
        }
        memcpy(buf + at, p, n);
        at += n;
        buf[at++] = '\0';
    }
    wr_sign_key_from(k, buf, at);
    OPENSSL_cleanse(buf, sizeof(buf));
}

/* Append <len>:<bytes>\n to BUF at *AT (room checked by the caller). */
static void field(unsigned char *buf, size_t *at, const void *p, size_t n)
{
    char num[WR_NUMFMT_MAX];
    size_t l = wr_fmt_u64(num, n);
    memcpy(buf + *at, num, l);
    *at += l;
    buf[(*at)++] = ':';
    if (n > 0) {
        memcpy(buf + *at, p, n);
    }
    *at += n;
    buf[(*at)++] = '\n';
}

void wr_sign(const wr_sign_key *k, amqp_bytes_t message_id, int64_t attempt, amqp_bytes_t exchange,
             amqp_bytes_t routing_key, char *out)
{
    /* message ids, exchanges and routing keys are AMQP short strings: 255 bytes */
    unsigned char buf[4 * (255 + 24) + 8];
    size_t at = 0;
    char num[WR_NUMFMT_MAX];
    size_t nl = wr_fmt_i64(num, attempt);
    memcpy(buf, "v1\n", 3);
    at = 3;
    field(buf, &at, message_id.bytes, message_id.len > 255 ? 255 : message_id.len);
    field(buf, &at, num, nl);
    field(buf, &at, exchange.bytes, exchange.len > 255 ? 255 : exchange.len);
    field(buf, &at, routing_key.bytes, routing_key.len > 255 ? 255 : routing_key.len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (HMAC(wr_sha256(), k->key, (int)sizeof(k->key), buf, at, md, &mdlen) == NULL) {
        mdlen = 0;
    }
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "v1:", 3);
    for (unsigned int i = 0; i < 32; i++) {
        out[3 + 2 * i] = i < mdlen ? hex[md[i] >> 4] : '0';
        out[4 + 2 * i] = i < mdlen ? hex[md[i] & 15] : '0';
    }
    out[WR_SIGN_LEN] = '\0';
}

int wr_sign_check(const wr_sign_key *k, const amqp_envelope_t *d, wr_envelope *env)
{
    const amqp_table_t *h = env->headers;
    int has_attempt = wr_table_get(h, "x-warren-attempt") != NULL;
    int has_route = wr_table_get(h, "x-warren-original-exchange") != NULL;
    if (!has_attempt && !has_route) {
        return 0;
    }
    int64_t attempt = 0;
    wr_table_get_int(h, "x-warren-attempt", &attempt);
    amqp_bytes_t ex = has_route ? env->exchange : amqp_empty_bytes;
    amqp_bytes_t rk = has_route ? env->routing_key : amqp_empty_bytes;
    char want[WR_SIGN_LEN + 1];
    wr_sign(k, env->id, has_attempt ? attempt : 0, ex, rk, want);
    amqp_bytes_t got = wr_table_get_str(h, WR_SIGN_HEADER);
    if (got.len == WR_SIGN_LEN && CRYPTO_memcmp(got.bytes, want, WR_SIGN_LEN) == 0) {
        return 0;
    }
    /* not warren's: a fresh message, from where it was delivered */
    env->attempt = 1;
    env->exchange = d->exchange;
    env->routing_key = d->routing_key;
    amqp_flags_t f = d->message.properties._flags;
    env->type = (f & AMQP_BASIC_TYPE_FLAG) && d->message.properties.type.len
                    ? d->message.properties.type
                    : env->routing_key;
    return 1;
}
