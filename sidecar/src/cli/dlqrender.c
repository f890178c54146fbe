/*
 * dlqrender: DLQ messages as text and JSON. See dlqrender.h.
 */
#include "dlqrender.h"

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "envelope.h"
#include "log.h"

#define XW "x-warren-"

/* See dlqrender.h. */
json_t *wr_dlqrender_bytes(amqp_bytes_t b)
{
    const char *s = b.bytes ? b.bytes : "";
    if (wr_utf8_check((const unsigned char *)s, b.len) == b.len) {
        return json_stringn(s, b.len);
    }
    char *c = malloc(b.len + 1);
    if (c == NULL) {
        return json_null();
    }
    for (size_t i = 0; i < b.len; i++) {
        c[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    }
    json_t *j = json_stringn(c, b.len);
    free(c);
    return j;
}

static json_t *field_json(const amqp_field_value_t *v);

static json_t *table_json(const amqp_table_t *t)
{
    json_t *o = json_object();
    for (int i = 0; t != NULL && i < t->num_entries; i++) {
        char key[256];
        amqp_bytes_t k = t->entries[i].key;
        snprintf(key, sizeof(key), "%.*s", (int)k.len, (const char *)k.bytes);
        json_object_set_new(o, key, field_json(&t->entries[i].value));
    }
    return o;
}

static json_t *field_json(const amqp_field_value_t *v)
{
    int64_t n;
    if (wr_field_int(v, &n) == 0) {
        return json_integer(n);
    }
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        return json_boolean(v->value.boolean);
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        return json_integer((json_int_t)v->value.u64);
    case AMQP_FIELD_KIND_F32:
        return json_real(v->value.f32);
    case AMQP_FIELD_KIND_F64:
        return json_real(v->value.f64);
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        return wr_dlqrender_bytes(v->value.bytes);
    case AMQP_FIELD_KIND_ARRAY: {
        json_t *a = json_array();
        for (int i = 0; i < v->value.array.num_entries; i++) {
            json_array_append_new(a, field_json(&v->value.array.entries[i]));
        }
        return a;
    }
    case AMQP_FIELD_KIND_TABLE:
        return table_json(&v->value.table);
    default:
        return json_null();
    }
}

/* Print N bytes of S on one line: control characters become spaces. */
static void put_line(FILE *fp, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        fputc(c < 0x20 || c == 0x7f ? ' ' : c, fp);
    }
}

void wr_dlqrender_field(FILE *fp, amqp_bytes_t b)
{
    if (b.len == 0) {
        fputc('-', fp);
    } else {
        put_line(fp, b.bytes, b.len);
    }
}

static int attempts_of(const wr_dlqread_msg *m)
{
    int64_t a = 0;
    return wr_table_get_int(wr_dlqread_headers(&m->msg.properties), XW "attempt", &a) == 0 ? (int)a
                                                                                           : 0;
}

json_t *wr_dlqrender_summary_json(const wr_dlqread_msg *m, size_t copies)
{
    amqp_bytes_t err = wr_dlqread_header(m, XW "error");
    json_t *o = json_object();
    char hb[WR_DLQREAD_HANDLE_CAP];
    json_object_set_new(o, "message_id", wr_dlqrender_bytes(wr_dlqread_id(m)));
    json_object_set_new(o, "handle", wr_dlqrender_bytes(wr_dlqread_handle(m, hb)));
    json_object_set_new(o, "reason", wr_dlqrender_bytes(wr_dlqread_header(m, XW "reason")));
    json_object_set_new(o, "error_class",
                        wr_dlqrender_bytes(wr_dlqread_header(m, XW "error-class")));
    json_object_set_new(o, "attempts", json_integer(attempts_of(m)));
    json_object_set_new(o, "copies", json_integer((json_int_t)copies));
    json_object_set_new(o, "first_failure",
                        wr_dlqrender_bytes(wr_dlqread_header(m, XW "first-failure")));
    json_object_set_new(o, "last_failure",
                        wr_dlqrender_bytes(wr_dlqread_header(m, XW "last-failure")));
    json_object_set_new(o, "original_exchange",
                        wr_dlqrender_bytes(wr_dlqread_header(m, XW "original-exchange")));
    json_object_set_new(o, "original_routing_key",
                        wr_dlqrender_bytes(wr_dlqread_header(m, XW "original-routing-key")));
    json_object_set_new(o, "type",
                        wr_dlqrender_bytes(wr_dlqread_prop(&m->msg.properties, AMQP_BASIC_TYPE_FLAG,
                                                           m->msg.properties.type)));
    json_object_set_new(o, "error", wr_dlqrender_bytes(err));
    json_object_set_new(o, "body_bytes", json_integer((json_int_t)m->msg.body.len));
    return o;
}

void wr_dlqrender_summary_line(FILE *fp, const wr_dlqread_msg *m, size_t copies)
{
    amqp_bytes_t err = wr_dlqread_header(m, XW "error");
    char hb[WR_DLQREAD_HANDLE_CAP];
    wr_dlqrender_field(fp, wr_dlqread_handle(m, hb));
    fputs("  ", fp);
    wr_dlqrender_field(fp, wr_dlqread_header(m, XW "reason"));
    fputs("  ", fp);
    wr_dlqrender_field(fp, wr_dlqread_header(m, XW "error-class"));
    fprintf(fp, "  attempts=%d  copies=%zu  ", attempts_of(m), copies);
    wr_dlqrender_field(fp, wr_dlqread_header(m, XW "last-failure"));
    fputs("  ", fp);
    wr_dlqrender_field(fp, wr_dlqread_header(m, XW "original-routing-key"));
    fputs("  ", fp);
    err.len = wr_utf8_truncate(err.bytes, err.len, 80);
    wr_dlqrender_field(fp, err);
    fputc('\n', fp);
}

/* See dlqrender.h. */
int wr_dlqrender_emit(const wr_dlqrender_out *o, const wr_subscription *sub, json_t *j)
{
    if (o->sink != NULL) {
        return json_object_set_new(o->sink, sub->name, j) == 0 ? 0 : 1;
    }
    json_t *print = j;
    int rc = json_dumpf(print, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII) == 0 ? 0 : 1;
    fputc('\n', stdout);
    json_decref(j);
    return rc;
}

int wr_dlqrender_print_json(json_t *j)
{
    int rc = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII) == 0 ? 0 : 1;
    fputc('\n', stdout);
    json_decref(j);
    return rc;
}

typedef struct {
    const char *name;
    amqp_flags_t flag;
    size_t off;
} str_prop;

#define SP(n, f)                                                                                   \
    {                                                                                              \
#n, AMQP_BASIC_##f##_FLAG, offsetof(amqp_basic_properties_t, n)                            \
    }
static const str_prop str_props[] = {
    SP(message_id, MESSAGE_ID),
    SP(type, TYPE),
    SP(content_type, CONTENT_TYPE),
    SP(content_encoding, CONTENT_ENCODING),
    SP(correlation_id, CORRELATION_ID),
    SP(reply_to, REPLY_TO),
    SP(expiration, EXPIRATION),
    SP(user_id, USER_ID),
    SP(app_id, APP_ID),
    SP(cluster_id, CLUSTER_ID),
};
#undef SP

json_t *wr_dlqrender_show_json(const wr_dlqread_msg *m, size_t copies)
{
    const amqp_basic_properties_t *p = &m->msg.properties;
    json_t *props = json_object();
    for (size_t i = 0; i < sizeof(str_props) / sizeof(str_props[0]); i++) {
        if (p->_flags & str_props[i].flag) {
            const amqp_bytes_t *b = (const void *)((const char *)p + str_props[i].off);
            json_object_set_new(props, str_props[i].name, wr_dlqrender_bytes(*b));
        }
    }
    if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) {
        json_object_set_new(props, "timestamp", json_integer((json_int_t)p->timestamp));
    }
    if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) {
        json_object_set_new(props, "delivery_mode", json_integer(p->delivery_mode));
    }
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG) {
        json_object_set_new(props, "priority", json_integer(p->priority));
    }
    json_t *o = json_object();
    json_object_set_new(o, "copies", json_integer((json_int_t)copies));
    json_object_set_new(o, "properties", props);
    json_object_set_new(o, "headers", table_json(wr_dlqread_headers(p)));
    json_object_set_new(o, "body_bytes", json_integer((json_int_t)m->msg.body.len));
    if (wr_utf8_check(m->msg.body.bytes, m->msg.body.len) == m->msg.body.len) {
        json_object_set_new(o, "body", wr_dlqrender_bytes(m->msg.body));
    } else {
        char hex[2 * 64 + 1];
        size_t n = m->msg.body.len < 64 ? m->msg.body.len : 64;
        for (size_t i = 0; i < n; i++) {
            snprintf(hex + 2 * i, 3, "%02x", ((const unsigned char *)m->msg.body.bytes)[i]);
        }
        hex[2 * n] = '\0';
        json_object_set_new(o, "body_hex_head", json_string(hex));
    }
    return o;
}

/* Human form of show: properties, headers (arrays one entry per line), body. */
void wr_dlqrender_show_text(const wr_dlqread_msg *m, size_t copies, const char *dlq)
{
    json_t *j = wr_dlqrender_show_json(m, copies);
    const char *k;
    json_t *v;
    char hb[WR_DLQREAD_HANDLE_CAP];
    amqp_bytes_t h = wr_dlqread_handle(m, hb);
    printf("message %.*s in %s", (int)h.len, (const char *)h.bytes, dlq);
    if (copies > 1) {
        printf(" (%zu copies with this id; the first is shown)", copies);
    }
    printf("\n\nproperties:\n");
    json_object_foreach(json_object_get(j, "properties"), k, v)
    {
        if (json_is_string(v)) {
            printf("  %s: %s\n", k, json_string_value(v));
        } else if (strcmp(k, "timestamp") == 0) {
            char iso[32];
            wr_format_time((int64_t)json_integer_value(v) * 1000, iso, sizeof(iso));
            printf("  %s: %" JSON_INTEGER_FORMAT " (%s)\n", k, json_integer_value(v), iso);
        } else {
            printf("  %s: %" JSON_INTEGER_FORMAT "\n", k, json_integer_value(v));
        }
    }
    printf("\nheaders:\n");
    const amqp_table_t *t = wr_dlqread_headers(&m->msg.properties);
    for (int i = 0; t != NULL && i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        printf("  %.*s:", (int)e->key.len, (const char *)e->key.bytes);
        if (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES) {
            fputc(' ', stdout);
            put_line(stdout, e->value.value.bytes.bytes, e->value.value.bytes.len);
            fputc('\n', stdout);
        } else if (e->value.kind == AMQP_FIELD_KIND_ARRAY) {
            fputc('\n', stdout);
            for (int a = 0; a < e->value.value.array.num_entries; a++) {
                const amqp_field_value_t *x = &e->value.value.array.entries[a];
                printf("    [%d] ", a + 1);
                if (x->kind == AMQP_FIELD_KIND_UTF8 || x->kind == AMQP_FIELD_KIND_BYTES) {
                    put_line(stdout, x->value.bytes.bytes, x->value.bytes.len);
                } else {
                    json_t *xj = field_json(x);
                    json_dumpf(xj, stdout, JSON_COMPACT | JSON_ENCODE_ANY);
                    json_decref(xj);
                }
                fputc('\n', stdout);
            }
        } else {
            json_t *xj = field_json(&e->value);
            fputc(' ', stdout);
            json_dumpf(xj, stdout, JSON_COMPACT | JSON_ENCODE_ANY);
            json_decref(xj);
            fputc('\n', stdout);
        }
    }
    printf("\nbody (%zu bytes):\n", m->msg.body.len);
    json_t *body = json_object_get(j, "body");
    if (body != NULL) {
        fwrite(m->msg.body.bytes, 1, m->msg.body.len, stdout);
        fputc('\n', stdout);
    } else {
        printf("  not UTF-8; first bytes in hex: %s%s\n",
               json_string_value(json_object_get(j, "body_hex_head")),
               m->msg.body.len > 64 ? "..." : "");
    }
    json_decref(j);
}

/* The key M counts under for --group-by BY: its reason code, or its error's
 * first line (cut to 120 bytes). */
static json_t *group_key(const char *by, const wr_dlqread_msg *m)
{
    amqp_bytes_t b = wr_dlqread_header(m, strcmp(by, "reason") == 0 ? XW "reason" : XW "error");
    const char *nl = b.len > 0 ? memchr(b.bytes, '\n', b.len) : NULL;
    if (nl != NULL) {
        b.len = (size_t)(nl - (const char *)b.bytes);
    }
    b.len = wr_utf8_truncate(b.bytes, b.len, 120);
    if (b.len == 0) {
        return json_string("-");
    }
    return wr_dlqrender_bytes(b);
}

static int cmp_counts(const void *a, const void *b)
{
    const json_t *x = *(const json_t *const *)a, *y = *(const json_t *const *)b;
    json_int_t nx = json_integer_value(json_object_get(x, "ids"));
    json_int_t ny = json_integer_value(json_object_get(y, "ids"));
    if (nx != ny) {
        return nx > ny ? -1 : 1;
    }
    return strcmp(json_string_value(json_object_get(x, "key")),
                  json_string_value(json_object_get(y, "key")));
}

/* See dlqrender.h. */
json_t *wr_dlqrender_count_groups(const char *by_name, const wr_dlqreader *r, const size_t *sel,
                                  size_t nsel, size_t *width)
{
    json_t *by = json_object(); /* key -> {key, ids, messages} */
    for (size_t i = 0; by != NULL && i < nsel; i++) {
        const wr_dlqread_group *g = &r->groups[sel[i]];
        json_t *k = group_key(by_name, &r->msgs[g->rep]);
        const char *key = json_string_value(k);
        json_t *row = json_object_get(by, key);
        if (row == NULL) {
            row = json_object();
            json_object_set_new(row, "key", json_incref(k));
            json_object_set_new(row, "ids", json_integer(0));
            json_object_set_new(row, "messages", json_integer(0));
            json_object_set_new(by, key, row);
        }
        json_object_set_new(row, "ids",
                            json_integer(json_integer_value(json_object_get(row, "ids")) + 1));
        json_object_set_new(row, "messages",
                            json_integer(json_integer_value(json_object_get(row, "messages")) +
                                         (json_int_t)g->copies));
        if (width != NULL && strlen(key) > *width) {
            *width = strlen(key);
        }
        json_decref(k);
    }
    return by;
}

/* See dlqrender.h. */
int wr_dlqrender_groups(const wr_dlqrender_out *o, const char *by_name, const wr_subscription *sub,
                        const wr_dlqreader *r, const size_t *sel, size_t nsel)
{
    size_t width = strlen(by_name);
    json_t *by = wr_dlqrender_count_groups(by_name, r, sel, nsel, &width);
    size_t n = json_object_size(by), at = 0;
    json_t **rows = calloc(n + 1, sizeof(*rows));
    if (by == NULL || rows == NULL) {
        json_decref(by);
        free(rows);
        fprintf(stderr, "warren dlq: out of memory\n");
        return 1;
    }
    const char *key;
    json_t *row;
    json_object_foreach(by, key, row)
    {
        rows[at++] = row;
    }
    qsort(rows, n, sizeof(*rows), cmp_counts);
    int rc = 0;
    if (o->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *x = json_object();
            json_object_set(x, by_name, json_object_get(rows[i], "key"));
            json_object_set(x, "ids", json_object_get(rows[i], "ids"));
            json_object_set(x, "messages", json_object_get(rows[i], "messages"));
            json_array_append_new(a, x);
        }
        rc = wr_dlqrender_emit(o, sub, a);
    } else {
        printf("%-*s  %6s  %8s\n", (int)width, by_name, "ids", "messages");
        for (size_t i = 0; i < n; i++) {
            printf("%-*s  %6" JSON_INTEGER_FORMAT "  %8" JSON_INTEGER_FORMAT "\n", (int)width,
                   json_string_value(json_object_get(rows[i], "key")),
                   json_integer_value(json_object_get(rows[i], "ids")),
                   json_integer_value(json_object_get(rows[i], "messages")));
        }
        fprintf(stderr, "%zu id(s) in %zu group(s); %s held %u\n", nsel, n, sub->dlq, r->depth);
    }
    free(rows);
    json_decref(by);
    return rc;
}
