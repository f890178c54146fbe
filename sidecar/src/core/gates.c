/*
 * gates: causal gates, the pure part: which gate a type meets, the Redis key
 * names, and a parked message as one string. See gates.h.
 */
#include "gates.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A routing key or pattern cut into words at '.'. */
typedef struct {
    const char *p;
    size_t n;
} word;

#define MAX_WORDS 128 /* a 255-byte key has at most 128 words */

static int split(const char *s, word *w)
{
    int n = 0;
    for (;;) {
        const char *e = strchr(s, '.');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (n == MAX_WORDS) {
            return -1;
        }
        w[n++] = (word){s, len};
        if (e == NULL) {
            return n;
        }
        s = e + 1;
    }
}

/* '*' is one word, '#' zero or more. MEMO[i][j] remembers the answer for
 * pattern words from i on against key words from j on (0 unknown, 1 no,
 * 2 yes), so patterns with many '#' stay polynomial. */
typedef struct {
    const word *p, *k;
    int np, nk;
    unsigned char memo[MAX_WORDS + 1][MAX_WORDS + 1];
} matcher;

static int match_at(matcher *m, int i, int j)
{
    if (m->memo[i][j] != 0) {
        return m->memo[i][j] == 2;
    }
    int r;
    if (i == m->np) {
        r = j == m->nk;
    } else if (m->p[i].n == 1 && m->p[i].p[0] == '#') {
        r = match_at(m, i + 1, j) || (j < m->nk && match_at(m, i, j + 1));
    } else if (j == m->nk) {
        r = 0;
    } else {
        const word *a = &m->p[i], *b = &m->k[j];
        int one = (a->n == 1 && a->p[0] == '*') || (a->n == b->n && memcmp(a->p, b->p, b->n) == 0);
        r = one && match_at(m, i + 1, j + 1);
    }
    m->memo[i][j] = r ? 2 : 1;
    return r;
}

int wr_topic_match(const char *pattern, const char *routing_key)
{
    word p[MAX_WORDS], k[MAX_WORDS];
    int np = split(pattern, p), nk = split(routing_key, k);
    if (np <= 0 || nk <= 0) {
        return 0;
    }
    matcher *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return 0;
    }
    m->p = p;
    m->k = k;
    m->np = np;
    m->nk = nk;
    int r = match_at(m, 0, 0);
    free(m);
    return r;
}

int wr_gates_routed(const wr_subscription *s, const char *type)
{
    for (int i = 0; i < s->binding_count; i++) {
        const wr_binding *b = &s->bindings[i];
        const char *t = b->type ? b->type : "topic";
        if (strcmp(t, "fanout") == 0 || strcmp(t, "headers") == 0) {
            return 1;
        }
        for (int k = 0; k < b->routing_key_count; k++) {
            const char *rk = b->routing_keys[k];
            if (strcmp(t, "direct") == 0 ? strcmp(rk, type) == 0 : wr_topic_match(rk, type)) {
                return 1;
            }
        }
    }
    return 0;
}

static int same(const char *a, const char *b, size_t len)
{
    return a != NULL && strlen(a) == len && memcmp(a, b, len) == 0;
}

int wr_gates_waiting(const wr_subscription *s, const char *type, size_t len)
{
    for (int i = 0; i < s->gate_count; i++) {
        if (same(s->gates[i].type, type, len)) {
            return i;
        }
    }
    return -1;
}

int wr_gates_after(const wr_subscription *s, const char *type, size_t len, int from)
{
    for (int i = from < 0 ? 0 : from; i < s->gate_count; i++) {
        if (same(s->gates[i].after, type, len)) {
            return i;
        }
    }
    return -1;
}

static int fit(int n, size_t cap)
{
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

int wr_gate_mark_key(char *out, size_t cap, const char *prefix, const char *sub, const char *after,
                     const char *key)
{
    return fit(snprintf(out, cap, "%s~gate:%s:%s:%s", prefix, sub, after, key), cap);
}

int wr_gate_park_key(char *out, size_t cap, const char *prefix, const char *sub, int gate,
                     const char *key)
{
    return fit(snprintf(out, cap, "%s~park:%s:%d:%s", prefix, sub, gate, key), cap);
}

int wr_gate_index_key(char *out, size_t cap, const char *prefix, const char *sub)
{
    return fit(snprintf(out, cap, "%s~parked:%s", prefix, sub), cap);
}

int wr_gate_marks_key(char *out, size_t cap, const char *prefix, const char *sub)
{
    return fit(snprintf(out, cap, "%s~parkmark:%s", prefix, sub), cap);
}

int wr_gate_pass_key(char *out, size_t cap, const char *prefix, const char *sub, const char *token,
                     size_t token_len)
{
    if (token_len == 0 || token_len > WR_GATE_PASS_TOKEN_MAX) {
        return -1;
    }
    return fit(snprintf(out, cap, "%s~gatepass:%s:%.*s", prefix, sub, (int)token_len, token), cap);
}

/* ---- a parked message as one string --------------------------------------------------- */

#define MAXP 12 /* properties kept */

/* The byte-string properties kept, each under a short key (the order they are written in). */
static const struct {
    const char *key;
    amqp_flags_t flag;
    size_t offset; /* of its amqp_bytes_t in amqp_basic_properties_t */
} byte_props[] = {
    {"ct", AMQP_BASIC_CONTENT_TYPE_FLAG, offsetof(amqp_basic_properties_t, content_type)},
    {"ce", AMQP_BASIC_CONTENT_ENCODING_FLAG, offsetof(amqp_basic_properties_t, content_encoding)},
    {"ci", AMQP_BASIC_CORRELATION_ID_FLAG, offsetof(amqp_basic_properties_t, correlation_id)},
    {"rt", AMQP_BASIC_REPLY_TO_FLAG, offsetof(amqp_basic_properties_t, reply_to)},
    {"id", AMQP_BASIC_MESSAGE_ID_FLAG, offsetof(amqp_basic_properties_t, message_id)},
    {"ty", AMQP_BASIC_TYPE_FLAG, offsetof(amqp_basic_properties_t, type)},
    {"ai", AMQP_BASIC_APP_ID_FLAG, offsetof(amqp_basic_properties_t, app_id)},
};

/* Append an entry KEY of KIND to E (*N entries so far): its value, to fill in. */
static amqp_field_value_t *put(amqp_table_entry_t *e, int *n, const char *key, uint8_t kind)
{
    e[*n].key = amqp_cstring_bytes(key);
    e[*n].value.kind = kind;
    return &e[(*n)++].value;
}

int wr_gate_entry_encode(const amqp_basic_properties_t *props, amqp_bytes_t body,
                         int64_t deadline_ms, char **out, size_t *len)
{
    amqp_table_entry_t e[MAXP];
    int n = 0;
    amqp_flags_t f = props->_flags;
    for (size_t i = 0; i < sizeof(byte_props) / sizeof(byte_props[0]); i++) {
        if (f & byte_props[i].flag) {
            put(e, &n, byte_props[i].key, AMQP_FIELD_KIND_BYTES)->value.bytes =
                *(const amqp_bytes_t *)((const char *)props + byte_props[i].offset);
        }
    }
    if (f & AMQP_BASIC_DELIVERY_MODE_FLAG) {
        put(e, &n, "dm", AMQP_FIELD_KIND_U8)->value.u8 = props->delivery_mode;
    }
    if (f & AMQP_BASIC_PRIORITY_FLAG) {
        put(e, &n, "pr", AMQP_FIELD_KIND_U8)->value.u8 = props->priority;
    }
    if (f & AMQP_BASIC_TIMESTAMP_FLAG) {
        put(e, &n, "ts", AMQP_FIELD_KIND_TIMESTAMP)->value.u64 = props->timestamp;
    }
    if (f & AMQP_BASIC_HEADERS_FLAG) {
        put(e, &n, "h", AMQP_FIELD_KIND_TABLE)->value.table = props->headers;
    }
    amqp_table_t t = {.num_entries = n, .entries = e};
    char head[32];
    int hn = snprintf(head, sizeof(head), "%" PRId64 "|", deadline_ms);
    size_t cap = 1024;
    for (;;) {
        char *buf = malloc((size_t)hn + cap + body.len);
        if (buf == NULL) {
            return -1;
        }
        memcpy(buf, head, (size_t)hn);
        size_t off = 0;
        int rc = amqp_encode_table((amqp_bytes_t){cap, buf + hn}, &t, &off);
        if (rc == AMQP_STATUS_OK) {
            if (body.len > 0) {
                memcpy(buf + hn + off, body.bytes, body.len);
            }
            *out = buf;
            *len = (size_t)hn + off + body.len;
            return 0;
        }
        free(buf);
        if (rc != AMQP_STATUS_TABLE_TOO_BIG || cap > ((size_t)1 << 30)) {
            return -1;
        }
        cap *= 4;
    }
}

int wr_gate_entry_decode(const char *p, size_t n, amqp_pool_t *pool, amqp_basic_properties_t *props,
                         amqp_bytes_t *body, int64_t *deadline_ms, char *err, size_t errcap)
{
    const char *bar = memchr(p, '|', n < 24 ? n : 24);
    if (bar == NULL || bar == p) {
        snprintf(err, errcap, "not a parked message: no deadline");
        return -1;
    }
    int64_t d = 0;
    for (const char *q = p; q < bar; q++) {
        if (*q < '0' || *q > '9') {
            snprintf(err, errcap, "not a parked message: bad deadline");
            return -1;
        }
        d = d * 10 + (*q - '0');
    }
    size_t start = (size_t)(bar + 1 - p);
    amqp_bytes_t rest = {n - start, (void *)(p + start)};
    amqp_table_t t;
    size_t off = 0;
    if (rest.len < 4 || amqp_decode_table(rest, pool, &t, &off) != AMQP_STATUS_OK ||
        off > rest.len) {
        snprintf(err, errcap, "not a parked message: bad properties");
        return -1;
    }
    memset(props, 0, sizeof(*props));
    for (int i = 0; i < t.num_entries; i++) {
        const amqp_table_entry_t *e = &t.entries[i];
        const char *k = e->key.bytes;
        size_t kn = e->key.len;
        const amqp_field_value_t *v = &e->value;
#define KEY(s) (kn == sizeof(s) - 1 && memcmp(k, s, kn) == 0)
        if (v->kind == AMQP_FIELD_KIND_BYTES || v->kind == AMQP_FIELD_KIND_UTF8) {
            for (size_t j = 0; j < sizeof(byte_props) / sizeof(byte_props[0]); j++) {
                const char *key = byte_props[j].key;
                if (kn == strlen(key) && memcmp(k, key, kn) == 0) {
                    props->_flags |= byte_props[j].flag;
                    *(amqp_bytes_t *)((char *)props + byte_props[j].offset) = v->value.bytes;
                    break;
                }
            }
        } else if (v->kind == AMQP_FIELD_KIND_U8 && KEY("dm")) {
            props->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
            props->delivery_mode = v->value.u8;
        } else if (v->kind == AMQP_FIELD_KIND_U8 && KEY("pr")) {
            props->_flags |= AMQP_BASIC_PRIORITY_FLAG;
            props->priority = v->value.u8;
        } else if (v->kind == AMQP_FIELD_KIND_TIMESTAMP && KEY("ts")) {
            props->_flags |= AMQP_BASIC_TIMESTAMP_FLAG;
            props->timestamp = v->value.u64;
        } else if (v->kind == AMQP_FIELD_KIND_TABLE && KEY("h")) {
            props->_flags |= AMQP_BASIC_HEADERS_FLAG;
            props->headers = v->value.table;
        }
#undef KEY
    }
    *body = (amqp_bytes_t){rest.len - off, (char *)rest.bytes + off};
    *deadline_ms = d;
    return 0;
}
