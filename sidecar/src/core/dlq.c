/*
 * dlq: build the properties of a failed message's copy. See dlq.h.
 */
#include "dlq.h"

#include <string.h>

#include "envelope.h"
#include "log.h"

#define X_PREFIX "x-warren-"

size_t wr_utf8_truncate(const char *s, size_t n, size_t max)
{
    if (n <= max) {
        return n;
    }
    size_t cut = max;
    /* step back over continuation bytes so no sequence is split */
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) {
        cut--;
    }
    return cut;
}

static amqp_bytes_t pool_str(amqp_pool_t *pool, const char *s, size_t n)
{
    amqp_bytes_t b = {0, NULL};
    if (n == 0) {
        b.bytes = "";
        return b;
    }
    b.bytes = amqp_pool_alloc(pool, n);
    if (b.bytes != NULL) {
        memcpy(b.bytes, s, n);
        b.len = n;
    }
    return b;
}

static int set_str(amqp_pool_t *pool, amqp_table_entry_t *e, const char *key, const char *val,
                   size_t n)
{
    e->key = amqp_cstring_bytes(key);
    e->value.kind = AMQP_FIELD_KIND_UTF8;
    e->value.value.bytes = pool_str(pool, val ? val : "", val ? n : 0);
    return n > 0 && e->value.value.bytes.bytes == NULL ? -1 : 0;
}

static int set_cstr(amqp_pool_t *pool, amqp_table_entry_t *e, const char *key, const char *val)
{
    return set_str(pool, e, key, val, val ? strlen(val) : 0);
}

static int is_warren_key(amqp_bytes_t key)
{
    return key.len >= sizeof(X_PREFIX) - 1 &&
           memcmp(key.bytes, X_PREFIX, sizeof(X_PREFIX) - 1) == 0;
}

static int key_is(amqp_bytes_t key, const char *name)
{
    size_t n = strlen(name);
    return key.len == n && memcmp(key.bytes, name, n) == 0;
}

int wr_dlq_build_props(amqp_pool_t *pool, const amqp_basic_properties_t *orig,
                       amqp_bytes_t exchange, amqp_bytes_t routing_key, const wr_failure *f,
                       amqp_basic_properties_t *out)
{
    const amqp_table_t *old = (orig->_flags & AMQP_BASIC_HEADERS_FLAG) ? &orig->headers : NULL;
    int old_n = old ? old->num_entries : 0;
    enum { NEW_HEADERS = 17 };
    int new_tp = f->trace_id != NULL && f->span_id != NULL;

    *out = *orig;
    out->_flags &= ~(AMQP_BASIC_EXPIRATION_FLAG | AMQP_BASIC_USER_ID_FLAG);
    out->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    out->delivery_mode = AMQP_DELIVERY_PERSISTENT;

    amqp_table_entry_t *e = amqp_pool_alloc(pool, sizeof(*e) * (size_t)(old_n + NEW_HEADERS));
    if (e == NULL) {
        return -1;
    }
    int n = 0;
    for (int i = 0; i < old_n; i++) {
        if (!is_warren_key(old->entries[i].key) &&
            !(new_tp && key_is(old->entries[i].key, "traceparent"))) {
            e[n++] = old->entries[i];
        }
    }

    /* what survives from earlier failures: first time, original route, errors */
    amqp_bytes_t first = wr_table_get_str(old, X_PREFIX "first-failure");
    amqp_bytes_t orig_ex = wr_table_get_str(old, X_PREFIX "original-exchange");
    amqp_bytes_t orig_rk = wr_table_get_str(old, X_PREFIX "original-routing-key");
    const amqp_field_value_t *errors = wr_table_get(old, X_PREFIX "errors");
    int had_route = wr_table_get(old, X_PREFIX "original-exchange") != NULL;

    char now[32];
    wr_format_time(f->now_ms, now, sizeof(now));
    size_t elen = f->error ? wr_utf8_truncate(f->error, strlen(f->error), WR_DLQ_MAX_ERROR) : 0;
    int rc = 0;

    rc |= set_cstr(pool, &e[n++], X_PREFIX "reason", f->reason);
    rc |= set_cstr(pool, &e[n++], X_PREFIX "error-class", f->error_class);
    rc |= set_str(pool, &e[n++], X_PREFIX "error", f->error, elen);

    /* x-warren-errors: earlier errors (newest last), then this one, capped */
    int prev =
        (errors && errors->kind == AMQP_FIELD_KIND_ARRAY) ? errors->value.array.num_entries : 0;
    int keep = prev < WR_DLQ_MAX_ERRORS - 1 ? prev : WR_DLQ_MAX_ERRORS - 1;
    amqp_field_value_t *arr = amqp_pool_alloc(pool, sizeof(*arr) * (size_t)(keep + 1));
    if (arr == NULL) {
        return -1;
    }
    for (int i = 0; i < keep; i++) {
        arr[i] = errors->value.array.entries[prev - keep + i];
    }
    arr[keep].kind = AMQP_FIELD_KIND_UTF8;
    arr[keep].value.bytes = pool_str(pool, f->error ? f->error : "", elen);
    e[n].key = amqp_cstring_bytes(X_PREFIX "errors");
    e[n].value.kind = AMQP_FIELD_KIND_ARRAY;
    e[n].value.value.array.num_entries = keep + 1;
    e[n].value.value.array.entries = arr;
    n++;

    e[n].key = amqp_cstring_bytes(X_PREFIX "attempt");
    e[n].value.kind = AMQP_FIELD_KIND_I32;
    e[n].value.value.i32 = f->attempt;
    n++;
    if (first.len > 0) {
        rc |= set_str(pool, &e[n++], X_PREFIX "first-failure", first.bytes, first.len);
    } else {
        rc |= set_cstr(pool, &e[n++], X_PREFIX "first-failure", now);
    }
    rc |= set_cstr(pool, &e[n++], X_PREFIX "last-failure", now);
    if (had_route) {
        rc |= set_str(pool, &e[n++], X_PREFIX "original-exchange", orig_ex.bytes, orig_ex.len);
        rc |= set_str(pool, &e[n++], X_PREFIX "original-routing-key", orig_rk.bytes, orig_rk.len);
    } else {
        rc |= set_str(pool, &e[n++], X_PREFIX "original-exchange", exchange.bytes, exchange.len);
        rc |= set_str(pool, &e[n++], X_PREFIX "original-routing-key", routing_key.bytes,
                      routing_key.len);
    }
    rc |= set_cstr(pool, &e[n++], X_PREFIX "subscription", f->subscription);
    rc |= set_cstr(pool, &e[n++], X_PREFIX "queue", f->queue);
    rc |= set_cstr(pool, &e[n++], X_PREFIX "handler", f->handler);
    if (f->handler_version) {
        rc |= set_cstr(pool, &e[n++], X_PREFIX "handler-version", f->handler_version);
    }
    if (f->trace_id) {
        rc |= set_cstr(pool, &e[n++], X_PREFIX "trace-id", f->trace_id);
    }
    if (new_tp) {
        char tp[64];
        snprintf(tp, sizeof(tp), "00-%.32s-%.16s-01", f->trace_id, f->span_id);
        rc |= set_cstr(pool, &e[n++], "traceparent", tp);
    }
    if (f->sign != NULL) {
        char sig[WR_SIGN_LEN + 1];
        amqp_bytes_t id =
            (orig->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? orig->message_id : amqp_empty_bytes;
        wr_sign(f->sign, id, f->attempt, had_route ? orig_ex : exchange,
                had_route ? orig_rk : routing_key, sig);
        rc |= set_cstr(pool, &e[n++], WR_SIGN_HEADER, sig);
    }
    out->headers.num_entries = n;
    out->headers.entries = e;
    return rc ? -1 : 0;
}

int wr_dlq_strip_props(amqp_pool_t *pool, const amqp_basic_properties_t *orig,
                       amqp_basic_properties_t *out)
{
    *out = *orig;
    const amqp_table_t *old = (orig->_flags & AMQP_BASIC_HEADERS_FLAG) ? &orig->headers : NULL;
    if (old == NULL) {
        return 0;
    }
    amqp_table_entry_t *e = amqp_pool_alloc(pool, sizeof(*e) * (size_t)(old->num_entries + 1));
    if (e == NULL) {
        return -1;
    }
    int n = 0;
    for (int i = 0; i < old->num_entries; i++) {
        if (!is_warren_key(old->entries[i].key)) {
            e[n++] = old->entries[i];
        }
    }
    out->headers.num_entries = n;
    out->headers.entries = e;
    return 0;
}

int wr_dlq_build_wait_props(amqp_pool_t *pool, const amqp_basic_properties_t *orig,
                            amqp_bytes_t exchange, amqp_bytes_t routing_key,
                            const wr_sign_key *sign, amqp_basic_properties_t *out)
{
    const amqp_table_t *old = (orig->_flags & AMQP_BASIC_HEADERS_FLAG) ? &orig->headers : NULL;
    int old_n = old ? old->num_entries : 0;

    *out = *orig;
    out->_flags &= ~(AMQP_BASIC_EXPIRATION_FLAG | AMQP_BASIC_USER_ID_FLAG);
    out->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
    out->delivery_mode = AMQP_DELIVERY_PERSISTENT;
    if (wr_table_get(old, X_PREFIX "original-exchange") != NULL) {
        return 0; /* a copy of warren's already: its route, attempt and signature stand */
    }
    amqp_table_entry_t *e = amqp_pool_alloc(pool, sizeof(*e) * (size_t)(old_n + 3));
    if (e == NULL) {
        return -1;
    }
    int n = 0;
    for (int i = 0; i < old_n; i++) {
        if (!key_is(old->entries[i].key, WR_SIGN_HEADER)) {
            e[n++] = old->entries[i];
        }
    }
    int rc = set_str(pool, &e[n++], X_PREFIX "original-exchange", exchange.bytes, exchange.len);
    rc |=
        set_str(pool, &e[n++], X_PREFIX "original-routing-key", routing_key.bytes, routing_key.len);
    if (sign != NULL) {
        int64_t attempt = 0;
        int has = wr_table_get_int(old, X_PREFIX "attempt", &attempt) == 0;
        char sig[WR_SIGN_LEN + 1];
        amqp_bytes_t id =
            (orig->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? orig->message_id : amqp_empty_bytes;
        wr_sign(sign, id, has ? attempt : 0, exchange, routing_key, sig);
        rc |= set_cstr(pool, &e[n++], WR_SIGN_HEADER, sig);
    }
    out->_flags |= AMQP_BASIC_HEADERS_FLAG;
    out->headers.num_entries = n;
    out->headers.entries = e;
    return rc ? -1 : 0;
}
