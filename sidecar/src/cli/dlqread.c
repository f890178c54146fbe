/*
 * dlqread: reading a DLQ with basic.get, grouping its copies by message id,
 * selecting with the filters. See dlqread.h.
 */
#include "dlqread.h"

#include "digest.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "envelope.h"
#include "log.h"

#define XW "x-warren-"

const amqp_table_t *wr_dlqread_headers(const amqp_basic_properties_t *p)
{
    return (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? &p->headers : NULL;
}

amqp_bytes_t wr_dlqread_prop(const amqp_basic_properties_t *p, amqp_flags_t flag, amqp_bytes_t v)
{
    amqp_bytes_t none = {0, NULL};
    return (p->_flags & flag) ? v : none;
}

amqp_bytes_t wr_dlqread_id(const wr_dlqread_msg *m)
{
    return wr_dlqread_prop(&m->msg.properties, AMQP_BASIC_MESSAGE_ID_FLAG,
                           m->msg.properties.message_id);
}

/* See dlqread.h. */
amqp_bytes_t wr_dlqread_handle(const wr_dlqread_msg *m, char buf[WR_DLQREAD_HANDLE_CAP])
{
    amqp_bytes_t id = wr_dlqread_id(m);
    if (id.len > 0) {
        return id;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(m->msg.body.bytes ? m->msg.body.bytes : "", m->msg.body.len, md, &n, wr_sha256(),
                   NULL) != 1 ||
        n < 6) {
        return id;
    }
    snprintf(buf, WR_DLQREAD_HANDLE_CAP, "body:%02x%02x%02x%02x%02x%02x", md[0], md[1], md[2],
             md[3], md[4], md[5]);
    amqp_bytes_t h = {strlen(buf), buf};
    return h;
}

amqp_bytes_t wr_dlqread_header(const wr_dlqread_msg *m, const char *name)
{
    return wr_table_get_str(wr_dlqread_headers(&m->msg.properties), name);
}

int wr_dlqread_bytes_is(amqp_bytes_t b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && (n == 0 || memcmp(b.bytes, s, n) == 0);
}

static int bytes_has(amqp_bytes_t b, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0) {
        return 1;
    }
    for (size_t i = 0; i + n <= b.len; i++) {
        if (memcmp((const char *)b.bytes + i, needle, n) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Parse an ISO-8601 UTC time ("2026-11-30T01:34:13.101Z") into ms; -1 if not one. */
static int64_t parse_iso(amqp_bytes_t b)
{
    char s[40];
    if (b.len == 0 || b.len >= sizeof(s)) {
        return -1;
    }
    memcpy(s, b.bytes, b.len);
    s[b.len] = '\0';
    int y, mo, d, h, mi, sec, ms = 0;
    if (sscanf(s, "%d-%d-%dT%d:%d:%d", &y, &mo, &d, &h, &mi, &sec) != 6) {
        return -1;
    }
    const char *dot = strchr(s, '.');
    if (dot != NULL) {
        ms = atoi(dot + 1);
    }
    return ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000LL + sec * 1000LL + ms;
}

static int reply_ok(wr_dlqreader *r, amqp_rpc_reply_t rep, const char *what)
{
    if (rep.reply_type == AMQP_RESPONSE_NORMAL) {
        return 0;
    }
    if (rep.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        rep.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *c = rep.reply.decoded;
        snprintf(r->err, sizeof(r->err), "%s: %.*s", what, (int)c->reply_text.len,
                 (const char *)c->reply_text.bytes);
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(r->conn, WR_DLQREAD_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    } else if (rep.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION) {
        snprintf(r->err, sizeof(r->err), "%s: the broker closed the connection", what);
    } else if (rep.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        snprintf(r->err, sizeof(r->err), "%s: %s", what, amqp_error_string2(rep.library_error));
    } else {
        snprintf(r->err, sizeof(r->err), "%s failed", what);
    }
    r->open = 0;
    return -1;
}

int wr_dlqread_open(wr_dlqreader *r, const wr_config *cfg, const char *queue)
{
    const wr_amqp_url *u = &cfg->amqp;
    r->queue = queue;
    char why[sizeof(r->err) - 64];
    /* a cluster: the first node (amqp.url, then amqp.urls) that takes the connection */
    for (int k = 0; k <= cfg->amqp_alt_count; k++) {
        u = wr_config_amqp_url(cfg, k);
        r->conn = amqp_new_connection();
        if (r->conn == NULL) {
            snprintf(r->err, sizeof(r->err), "out of memory");
            return -1;
        }
        if (wr_broker_connect(r->conn, u, 0, cfg->amqp_connect_timeout_ms, "warren dlq", why,
                              sizeof(why)) == 0) {
            break;
        }
        snprintf(r->err, sizeof(r->err), "%s: %s", u->redacted, why);
        amqp_destroy_connection(r->conn);
        r->conn = NULL;
    }
    if (r->conn == NULL) {
        return -1;
    }
    amqp_channel_open(r->conn, WR_DLQREAD_CHANNEL);
    if (reply_ok(r, amqp_get_rpc_reply(r->conn), "channel.open") != 0) {
        return -1;
    }
    r->open = 1;
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(
        r->conn, WR_DLQREAD_CHANNEL, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    if (reply_ok(r, amqp_get_rpc_reply(r->conn), "queue.declare (passive)") != 0) {
        return -1;
    }
    r->depth = ok->message_count;
    return 0;
}

/* Take the next message; 1 got one, 0 the queue is empty (or we took DEPTH), -1 error. */
static int reader_next(wr_dlqreader *r)
{
    if (r->scanned >= r->depth) {
        return 0;
    }
    amqp_rpc_reply_t rep =
        amqp_basic_get(r->conn, WR_DLQREAD_CHANNEL, amqp_cstring_bytes(r->queue), 0);
    if (reply_ok(r, rep, "basic.get") != 0) {
        return -1;
    }
    if (rep.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) {
        return 0;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        wr_dlqread_msg *p = realloc(r->msgs, cap * sizeof(*p));
        if (p == NULL) {
            snprintf(r->err, sizeof(r->err), "out of memory");
            return -1;
        }
        r->msgs = p;
        r->cap = cap;
    }
    amqp_basic_get_ok_t *ok = rep.reply.decoded;
    wr_dlqread_msg *m = &r->msgs[r->n];
    memset(m, 0, sizeof(*m));
    m->tag = ok->delivery_tag;
    m->exchange = amqp_bytes_malloc_dup(ok->exchange);
    m->routing_key = amqp_bytes_malloc_dup(ok->routing_key);
    rep = amqp_read_message(r->conn, WR_DLQREAD_CHANNEL, &m->msg, 0);
    if (reply_ok(r, rep, "reading a message") != 0) {
        amqp_bytes_free(m->exchange);
        amqp_bytes_free(m->routing_key);
        return -1;
    }
    r->n++;
    r->scanned++;
    amqp_maybe_release_buffers(r->conn);
    return 1;
}

int wr_dlqread_ack(wr_dlqreader *r, wr_dlqread_msg *m)
{
    m->done = 1;
    return amqp_basic_ack(r->conn, WR_DLQREAD_CHANNEL, m->tag, 0) == AMQP_STATUS_OK ? 0 : -1;
}

int wr_dlqread_return(wr_dlqreader *r, wr_dlqread_msg *m)
{
    m->done = 1;
    return amqp_basic_nack(r->conn, WR_DLQREAD_CHANNEL, m->tag, 0, 1) == AMQP_STATUS_OK ? 0 : -1;
}

/* Give back every message still held (nack requeue=1), close, free. */
void wr_dlqread_close(wr_dlqreader *r)
{
    if (r->open) {
        for (size_t i = 0; i < r->n; i++) {
            if (!r->msgs[i].done) {
                amqp_basic_nack(r->conn, WR_DLQREAD_CHANNEL, r->msgs[i].tag, 0, 1);
            }
        }
        amqp_channel_close(r->conn, WR_DLQREAD_CHANNEL, AMQP_REPLY_SUCCESS);
        amqp_connection_close(r->conn, AMQP_REPLY_SUCCESS);
    }
    if (r->conn != NULL) {
        amqp_destroy_connection(r->conn);
    }
    for (size_t i = 0; i < r->n; i++) {
        amqp_bytes_free(r->msgs[i].exchange);
        amqp_bytes_free(r->msgs[i].routing_key);
        amqp_destroy_message(&r->msgs[i].msg);
    }
    free(r->msgs);
    free(r->groups);
    json_decref(r->ids);
}

/* The reason code of M's x-warren-reason header (WR_RS_OTHER for a code this
 * version does not know, WR_RS_NONE for none). */
static wr_reason reason_of(const wr_dlqread_msg *m)
{
    char code[64];
    amqp_bytes_t b = wr_dlqread_header(m, XW "reason");
    if (b.len >= sizeof(code)) {
        return WR_RS_OTHER;
    }
    memcpy(code, b.bytes ? b.bytes : "", b.len);
    code[b.len] = '\0';
    return wr_reason_parse(code);
}

static int matches(const wr_dlqread_filter *o, const wr_dlqread_msg *m, int64_t now)
{
    char hb[WR_DLQREAD_HANDLE_CAP];
    if (o->id != NULL && !wr_dlqread_bytes_is(wr_dlqread_handle(m, hb), o->id)) {
        return 0;
    }
    if (o->reason != NULL && reason_of(m) != o->reason_code) {
        return 0;
    }
    if (o->older_ms >= 0) {
        int64_t t = parse_iso(wr_dlqread_header(m, XW "last-failure"));
        if (t < 0 || now - t < o->older_ms) {
            return 0;
        }
    }
    if (o->grep != NULL) {
        const amqp_field_value_t *errs =
            wr_table_get(wr_dlqread_headers(&m->msg.properties), XW "errors");
        int hit = bytes_has(wr_dlqread_id(m), o->grep) ||
                  bytes_has(wr_dlqread_header(m, XW "error"), o->grep) ||
                  bytes_has(m->msg.body, o->grep);
        if (!hit && errs != NULL && errs->kind == AMQP_FIELD_KIND_ARRAY) {
            for (int i = 0; i < errs->value.array.num_entries && !hit; i++) {
                const amqp_field_value_t *e = &errs->value.array.entries[i];
                if (e->kind == AMQP_FIELD_KIND_UTF8 || e->kind == AMQP_FIELD_KIND_BYTES) {
                    hit = bytes_has(e->value.bytes, o->grep);
                }
            }
        }
        if (!hit) {
            return 0;
        }
    }
    return 1;
}

/*
 * The group of message I (just read): the existing one of its message id, with
 * I linked at its end, or a new one. Returns its index in r->groups, or WR_DLQREAD_NONE
 * when out of memory.
 */
static size_t group_of(wr_dlqreader *r, size_t i)
{
    amqp_bytes_t id = wr_dlqread_id(&r->msgs[i]);
    r->msgs[i].next = WR_DLQREAD_NONE;
    if (id.len > 0) {
        json_t *g = json_object_getn(r->ids, id.bytes, id.len);
        if (g != NULL) {
            size_t gi = (size_t)json_integer_value(g);
            wr_dlqread_group *grp = &r->groups[gi];
            r->msgs[grp->last].next = i;
            grp->last = i;
            grp->copies++;
            return gi;
        }
    }
    if (r->ngroups == r->gcap) {
        size_t cap = r->gcap ? r->gcap * 2 : 64;
        wr_dlqread_group *p = realloc(r->groups, cap * sizeof(*p));
        if (p == NULL) {
            return WR_DLQREAD_NONE;
        }
        r->groups = p;
        r->gcap = cap;
    }
    if (id.len > 0 && json_object_setn_new_nocheck(r->ids, id.bytes, id.len,
                                                   json_integer((json_int_t)r->ngroups)) != 0) {
        return WR_DLQREAD_NONE;
    }
    r->groups[r->ngroups] =
        (wr_dlqread_group){.first = i, .last = i, .copies = 1, .rep = WR_DLQREAD_NONE};
    return r->ngroups++;
}

/* Free what M holds but its delivery tag: a copy that is neither shown nor replayed. */
static void lighten(wr_dlqread_msg *m)
{
    amqp_destroy_message(&m->msg);
    memset(&m->msg, 0, sizeof(m->msg));
}

/* See dlqread.h. */
int wr_dlqread_scan(wr_dlqreader *r, const wr_dlqread_filter *o, long limit, size_t **sel,
                    size_t *nsel)
{
    int64_t now = wr_now_ms();
    *sel = NULL;
    *nsel = 0;
    size_t cap = 0;
    if (r->ids == NULL && (r->ids = json_object()) == NULL) {
        snprintf(r->err, sizeof(r->err), "out of memory");
        return -1;
    }
    for (;;) {
        int rc = reader_next(r);
        if (rc <= 0) {
            return rc;
        }
        size_t i = r->n - 1;
        size_t g = group_of(r, i);
        if (g == WR_DLQREAD_NONE) {
            snprintf(r->err, sizeof(r->err), "out of memory");
            return -1;
        }
        if (r->groups[g].rep != WR_DLQREAD_NONE || (limit > 0 && *nsel >= (size_t)limit) ||
            !matches(o, &r->msgs[i], now)) {
            lighten(&r->msgs[i]);
            continue;
        }
        if (*nsel == cap) {
            cap = cap ? cap * 2 : 64;
            size_t *p = realloc(*sel, cap * sizeof(*p));
            if (p == NULL) {
                snprintf(r->err, sizeof(r->err), "out of memory");
                return -1;
            }
            *sel = p;
        }
        (*sel)[(*nsel)++] = g;
        r->groups[g].rep = i;
    }
}
