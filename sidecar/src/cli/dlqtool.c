/*
 * dlqtool: `warren dlq list|show|replay|purge`. See dlqtool.h.
 *
 * The DLQ is read on a plain rabbitmq-c connection of our own (heartbeats off:
 * the command may sleep between replays) with basic.get and manual acks; the
 * replayed copies go out through a wr_broker (confirm mode) on a second
 * connection. Redis is reached with hiredis directly: only HMGET and DEL.
 */
#include "dlqtool.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "amqp_compat.h"
#include "broker.h"
#include "config.h"
#include "dlq.h"
#include "envelope.h"
#include "idem.h"
#include "idkey.h"
#include "journal.h"
#include "log.h"
#include "outcome.h"
#include "rconn.h"
#include "sign.h"
#include "record.h"

#define CH 1
#define XW "x-warren-"

const char wr_dlqtool_usage[] =
    "  dlq list -c FILE [--subscription NAME] [filters] [--json]\n"
    "                       one line per message id in the DLQ, with its copy count;\n"
    "                       the DLQ is left as it is; without --subscription, every\n"
    "                       subscription's DLQ in turn (--json: an object by name)\n"
    "  dlq show ID -c FILE --subscription NAME [--json]\n"
    "                       every property and header of one DLQ message, and its body\n"
    "  dlq replay -c FILE --subscription NAME [filters] [--rate N/s] [--dry-run]\n"
    "                       reset the idempotency record and send each matching message\n"
    "                       back to the subscription's queue, once per id, removing\n"
    "                       every copy of it from the DLQ (default rate 50/s)\n"
    "  dlq purge -c FILE --subscription NAME [filters] [--yes]\n"
    "                       delete the matching messages, every copy of each id\n"
    "                       (asks first without --yes)\n"
    "  dlq list ... --group-by reason|error\n"
    "                       count the matching ids and messages per reason code or per\n"
    "                       error text instead of listing them (no default limit)\n"
    "  dlq filters: --id ID, --reason R, --grep TEXT (id, error, body),\n"
    "               --older-than DURATION (last failure), --limit N (list: default 100)\n"
    "               R is a reason code, the one of x-warren-reason, metrics and trace:\n"
    "               warren dlq list --reason help lists them\n";

typedef enum { CMD_LIST, CMD_SHOW, CMD_REPLAY, CMD_PURGE } dlq_cmd;

typedef struct {
    dlq_cmd cmd;
    const char *config, *sub, *id, *reason, *grep;
    wr_reason reason_code; /* --reason, checked against outcome.h's table */
    const char *group_by;  /* list --group-by: "reason" or "error"; NULL: list */
    int64_t older_ms;      /* -1: no --older-than */
    long limit;            /* 0: no limit */
    int json, dry_run, yes;
    double rate;  /* messages per second */
    json_t *sink; /* list --json of every subscription: each one's output goes here */
} opts;

#define NO_MSG ((size_t)-1)

/* One DLQ message taken with basic.get, still unacked. */
typedef struct {
    uint64_t tag;
    amqp_bytes_t exchange, routing_key; /* of the get-ok (malloc'd) */
    amqp_message_t msg;                 /* all zero once freed by lighten() */
    int done;                           /* acked (replayed or purged) or nacked already */
    size_t next;                        /* the next copy of the same message id (an index in
                                           reader.msgs), or NO_MSG */
} dmsg;

/*
 * The copies of one message id in the DLQ. A crash between a confirmed DLQ
 * copy and its idempotency record makes the worker dead-letter the message
 * again when it is redelivered: the DLQ then holds two (or more) copies with
 * the same message_id. The commands work on groups: list shows one row per
 * id with its copy count, replay sends one copy back and removes them all,
 * purge removes them all. A message without an id is a group of its own.
 */
typedef struct {
    size_t first, last; /* its copies in DLQ order, linked through dmsg.next */
    size_t copies;
    size_t rep; /* the copy shown and replayed: the first one that matched the
                   filters, or NO_MSG (the group is not selected) */
} dgroup;

typedef struct {
    amqp_connection_state_t conn;
    int open;
    const char *queue;
    uint32_t depth;
    dmsg *msgs;
    size_t n, cap;
    size_t scanned;
    dgroup *groups;
    size_t ngroups, gcap;
    json_t *ids; /* message id -> index in groups (a jansson object as a hash map) */
    char err[768];
} reader;

static int usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "warren dlq: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\nusage:\n%s", wr_dlqtool_usage);
    return 2;
}

/* --- small helpers ------------------------------------------------------ */

static const amqp_table_t *headers_of(const amqp_basic_properties_t *p)
{
    return (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? &p->headers : NULL;
}

static amqp_bytes_t prop_str(const amqp_basic_properties_t *p, amqp_flags_t flag, amqp_bytes_t v)
{
    amqp_bytes_t none = {0, NULL};
    return (p->_flags & flag) ? v : none;
}

static amqp_bytes_t msg_id(const dmsg *m)
{
    return prop_str(&m->msg.properties, AMQP_BASIC_MESSAGE_ID_FLAG, m->msg.properties.message_id);
}

/*
 * The handle of message M, what the commands print and --id / show accept:
 * its message id, or for a message without one "body:" and the first 12 hex
 * digits of the SHA-256 of its body (stable: a DLQ copy's body never
 * changes), so every DLQ entry can be named. BUF holds the latter.
 */
static amqp_bytes_t handle_of(const dmsg *m, char buf[24])
{
    amqp_bytes_t id = msg_id(m);
    if (id.len > 0) {
        return id;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(m->msg.body.bytes ? m->msg.body.bytes : "", m->msg.body.len, md, &n,
                   EVP_sha256(), NULL) != 1 ||
        n < 6) {
        return id;
    }
    snprintf(buf, 24, "body:%02x%02x%02x%02x%02x%02x", md[0], md[1], md[2], md[3], md[4], md[5]);
    amqp_bytes_t h = {strlen(buf), buf};
    return h;
}

static amqp_bytes_t hdr(const dmsg *m, const char *name)
{
    return wr_table_get_str(headers_of(&m->msg.properties), name);
}

static int bytes_is(amqp_bytes_t b, const char *s)
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

/* A JSON string of B; bytes that are not UTF-8 become '?'. */
static json_t *json_bytes(amqp_bytes_t b)
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

/* --- reading the DLQ ------------------------------------------------------ */

static int reply_ok(reader *r, amqp_rpc_reply_t rep, const char *what)
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
        amqp_send_method(r->conn, CH, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
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

static int reader_open(reader *r, const wr_config *cfg, const char *queue)
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
        if (wr_broker_open_socket(r->conn, u, cfg->amqp_connect_timeout_ms, why, sizeof(why)) ==
            0) {
            break;
        }
        snprintf(r->err, sizeof(r->err), "%s: %s", u->redacted, why);
        amqp_destroy_connection(r->conn);
        r->conn = NULL;
    }
    if (r->conn == NULL) {
        return -1;
    }
    amqp_rpc_reply_t rep = amqp_login(r->conn, u->vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0,
                                      AMQP_SASL_METHOD_PLAIN, u->user, u->password);
    if (rep.reply_type != AMQP_RESPONSE_NORMAL) {
        char tls_why[300] = "";
        if (u->ssl && rep.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
            wr_broker_tls_reason(tls_why, sizeof(tls_why));
            if (tls_why[0] == '\0') {
                snprintf(tls_why, sizeof(tls_why),
                         " (the broker closed the TLS connection: does it refuse our "
                         "client certificate, or want one?)");
            }
        }
        snprintf(r->err, sizeof(r->err), "cannot log in to %s: %s%s", u->redacted,
                 rep.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION
                     ? amqp_error_string2(rep.library_error)
                     : "refused by the broker",
                 tls_why);
        return -1;
    }
    amqp_channel_open(r->conn, CH);
    if (reply_ok(r, amqp_get_rpc_reply(r->conn), "channel.open") != 0) {
        return -1;
    }
    r->open = 1;
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(r->conn, CH, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    if (reply_ok(r, amqp_get_rpc_reply(r->conn), "queue.declare (passive)") != 0) {
        return -1;
    }
    r->depth = ok->message_count;
    return 0;
}

/* Take the next message; 1 got one, 0 the queue is empty (or we took DEPTH), -1 error. */
static int reader_next(reader *r)
{
    if (r->scanned >= r->depth) {
        return 0;
    }
    amqp_rpc_reply_t rep = amqp_basic_get(r->conn, CH, amqp_cstring_bytes(r->queue), 0);
    if (reply_ok(r, rep, "basic.get") != 0) {
        return -1;
    }
    if (rep.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) {
        return 0;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        dmsg *p = realloc(r->msgs, cap * sizeof(*p));
        if (p == NULL) {
            snprintf(r->err, sizeof(r->err), "out of memory");
            return -1;
        }
        r->msgs = p;
        r->cap = cap;
    }
    amqp_basic_get_ok_t *ok = rep.reply.decoded;
    dmsg *m = &r->msgs[r->n];
    memset(m, 0, sizeof(*m));
    m->tag = ok->delivery_tag;
    m->exchange = amqp_bytes_malloc_dup(ok->exchange);
    m->routing_key = amqp_bytes_malloc_dup(ok->routing_key);
    rep = amqp_read_message(r->conn, CH, &m->msg, 0);
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

static int reader_ack(reader *r, dmsg *m)
{
    m->done = 1;
    return amqp_basic_ack(r->conn, CH, m->tag, 0) == AMQP_STATUS_OK ? 0 : -1;
}

static int reader_return(reader *r, dmsg *m)
{
    m->done = 1;
    return amqp_basic_nack(r->conn, CH, m->tag, 0, 1) == AMQP_STATUS_OK ? 0 : -1;
}

/* Give back every message still held (nack requeue=1), close, free. */
static void reader_close(reader *r)
{
    if (r->open) {
        for (size_t i = 0; i < r->n; i++) {
            if (!r->msgs[i].done) {
                amqp_basic_nack(r->conn, CH, r->msgs[i].tag, 0, 1);
            }
        }
        amqp_channel_close(r->conn, CH, AMQP_REPLY_SUCCESS);
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
static wr_reason reason_of(const dmsg *m)
{
    char code[64];
    amqp_bytes_t b = hdr(m, XW "reason");
    if (b.len >= sizeof(code)) {
        return WR_RS_OTHER;
    }
    memcpy(code, b.bytes ? b.bytes : "", b.len);
    code[b.len] = '\0';
    return wr_reason_parse(code);
}

static int matches(const opts *o, const dmsg *m, int64_t now)
{
    char hb[24];
    if (o->id != NULL && !bytes_is(handle_of(m, hb), o->id)) {
        return 0;
    }
    if (o->reason != NULL && reason_of(m) != o->reason_code) {
        return 0;
    }
    if (o->older_ms >= 0) {
        int64_t t = parse_iso(hdr(m, XW "last-failure"));
        if (t < 0 || now - t < o->older_ms) {
            return 0;
        }
    }
    if (o->grep != NULL) {
        const amqp_field_value_t *errs = wr_table_get(headers_of(&m->msg.properties), XW "errors");
        int hit = bytes_has(msg_id(m), o->grep) || bytes_has(hdr(m, XW "error"), o->grep) ||
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
 * I linked at its end, or a new one. Returns its index in r->groups, or NO_MSG
 * when out of memory.
 */
static size_t group_of(reader *r, size_t i)
{
    amqp_bytes_t id = msg_id(&r->msgs[i]);
    r->msgs[i].next = NO_MSG;
    if (id.len > 0) {
        json_t *g = json_object_getn(r->ids, id.bytes, id.len);
        if (g != NULL) {
            size_t gi = (size_t)json_integer_value(g);
            dgroup *grp = &r->groups[gi];
            r->msgs[grp->last].next = i;
            grp->last = i;
            grp->copies++;
            return gi;
        }
    }
    if (r->ngroups == r->gcap) {
        size_t cap = r->gcap ? r->gcap * 2 : 64;
        dgroup *p = realloc(r->groups, cap * sizeof(*p));
        if (p == NULL) {
            return NO_MSG;
        }
        r->groups = p;
        r->gcap = cap;
    }
    if (id.len > 0 && json_object_setn_new_nocheck(r->ids, id.bytes, id.len,
                                                   json_integer((json_int_t)r->ngroups)) != 0) {
        return NO_MSG;
    }
    r->groups[r->ngroups] = (dgroup){.first = i, .last = i, .copies = 1, .rep = NO_MSG};
    return r->ngroups++;
}

/* Free what M holds but its delivery tag: a copy that is neither shown nor replayed. */
static void lighten(dmsg *m)
{
    amqp_destroy_message(&m->msg);
    memset(&m->msg, 0, sizeof(m->msg));
}

/*
 * Read the whole DLQ (at most as many messages as it held when opened) and
 * group the messages by id (dgroup). A group is selected when one of its
 * copies matches the filters, at most LIMIT groups (0: no limit), in the
 * order their first matching copy came. Stores the selected groups' indexes
 * in r->groups in *SEL (malloc'd) and their count in *NSEL. Every copy stays
 * held (unacked) until the end, but only each selected group's first
 * matching copy keeps its properties and body: the rest are freed as they
 * come, so a long DLQ costs its delivery tags, not its bodies. Returns 0, or
 * -1 with r->err set.
 */
static int scan(reader *r, const opts *o, long limit, size_t **sel, size_t *nsel)
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
        if (g == NO_MSG) {
            snprintf(r->err, sizeof(r->err), "out of memory");
            return -1;
        }
        if (r->groups[g].rep != NO_MSG || (limit > 0 && *nsel >= (size_t)limit) ||
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

/* --- rendering ------------------------------------------------------------ */

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
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        return json_boolean(v->value.boolean);
    case AMQP_FIELD_KIND_I8:
        return json_integer(v->value.i8);
    case AMQP_FIELD_KIND_U8:
        return json_integer(v->value.u8);
    case AMQP_FIELD_KIND_I16:
        return json_integer(v->value.i16);
    case AMQP_FIELD_KIND_U16:
        return json_integer(v->value.u16);
    case AMQP_FIELD_KIND_I32:
        return json_integer(v->value.i32);
    case AMQP_FIELD_KIND_U32:
        return json_integer(v->value.u32);
    case AMQP_FIELD_KIND_I64:
        return json_integer(v->value.i64);
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        return json_integer((json_int_t)v->value.u64);
    case AMQP_FIELD_KIND_F32:
        return json_real(v->value.f32);
    case AMQP_FIELD_KIND_F64:
        return json_real(v->value.f64);
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        return json_bytes(v->value.bytes);
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

static void put_bytes_field(FILE *fp, amqp_bytes_t b)
{
    if (b.len == 0) {
        fputc('-', fp);
    } else {
        put_line(fp, b.bytes, b.len);
    }
}

static int attempts_of(const dmsg *m)
{
    int64_t a = 0;
    return wr_table_get_int(headers_of(&m->msg.properties), XW "attempt", &a) == 0 ? (int)a : 0;
}

static json_t *summary_json(const dmsg *m, size_t copies)
{
    amqp_bytes_t err = hdr(m, XW "error");
    json_t *o = json_object();
    char hb[24];
    json_object_set_new(o, "message_id", json_bytes(msg_id(m)));
    json_object_set_new(o, "handle", json_bytes(handle_of(m, hb)));
    json_object_set_new(o, "reason", json_bytes(hdr(m, XW "reason")));
    json_object_set_new(o, "error_class", json_bytes(hdr(m, XW "error-class")));
    json_object_set_new(o, "attempts", json_integer(attempts_of(m)));
    json_object_set_new(o, "copies", json_integer((json_int_t)copies));
    json_object_set_new(o, "first_failure", json_bytes(hdr(m, XW "first-failure")));
    json_object_set_new(o, "last_failure", json_bytes(hdr(m, XW "last-failure")));
    json_object_set_new(o, "original_exchange", json_bytes(hdr(m, XW "original-exchange")));
    json_object_set_new(o, "original_routing_key", json_bytes(hdr(m, XW "original-routing-key")));
    json_object_set_new(
        o, "type",
        json_bytes(prop_str(&m->msg.properties, AMQP_BASIC_TYPE_FLAG, m->msg.properties.type)));
    json_object_set_new(o, "error", json_bytes(err));
    json_object_set_new(o, "body_bytes", json_integer((json_int_t)m->msg.body.len));
    return o;
}

static void summary_line(FILE *fp, const dmsg *m, size_t copies)
{
    amqp_bytes_t err = hdr(m, XW "error");
    char hb[24];
    put_bytes_field(fp, handle_of(m, hb));
    fputs("  ", fp);
    put_bytes_field(fp, hdr(m, XW "reason"));
    fputs("  ", fp);
    put_bytes_field(fp, hdr(m, XW "error-class"));
    fprintf(fp, "  attempts=%d  copies=%zu  ", attempts_of(m), copies);
    put_bytes_field(fp, hdr(m, XW "last-failure"));
    fputs("  ", fp);
    put_bytes_field(fp, hdr(m, XW "original-routing-key"));
    fputs("  ", fp);
    err.len = wr_utf8_truncate(err.bytes, err.len, 80);
    put_bytes_field(fp, err);
    fputc('\n', fp);
}

/* list --json: print J, or keep it under the subscription's name when the
 * list covers every subscription. Takes J. */
static int emit_json(const opts *o, const wr_subscription *sub, json_t *j)
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

static int print_json(json_t *j)
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

static json_t *show_json(const dmsg *m, size_t copies)
{
    const amqp_basic_properties_t *p = &m->msg.properties;
    json_t *props = json_object();
    for (size_t i = 0; i < sizeof(str_props) / sizeof(str_props[0]); i++) {
        if (p->_flags & str_props[i].flag) {
            const amqp_bytes_t *b = (const void *)((const char *)p + str_props[i].off);
            json_object_set_new(props, str_props[i].name, json_bytes(*b));
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
    json_object_set_new(o, "headers", table_json(headers_of(p)));
    json_object_set_new(o, "body_bytes", json_integer((json_int_t)m->msg.body.len));
    if (wr_utf8_check(m->msg.body.bytes, m->msg.body.len) == m->msg.body.len) {
        json_object_set_new(o, "body", json_bytes(m->msg.body));
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
static void show_text(const dmsg *m, size_t copies, const char *dlq)
{
    json_t *j = show_json(m, copies);
    const char *k;
    json_t *v;
    char hb[24];
    amqp_bytes_t h = handle_of(m, hb);
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
    const amqp_table_t *t = headers_of(&m->msg.properties);
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

/* --- replay ------------------------------------------------------------- */

typedef struct {
    wr_rconn *rc;
    char err[1200];
} redis_conn;

static int redis_open(redis_conn *r, const wr_config *cfg)
{
    char err[512];
    r->rc = wr_rconn_create(&cfg->redis, cfg->redis_timeout_ms, NULL, 0, err, sizeof(err));
    if (r->rc == NULL) {
        snprintf(r->err, sizeof(r->err), "cannot connect to %s: %s", cfg->redis.redacted, err);
        return -1;
    }
    return 0;
}

static void redis_close(redis_conn *r)
{
    wr_rconn_destroy(r->rc);
    r->rc = NULL;
}

/* Read STATE and OUTCOME of KEY (empty when absent), and the journal entry a
 * done record keeps (*ENTRY, malloc'd; NULL when none). Returns 0, or -1. */
static int redis_record(redis_conn *r, const char *key, char *state, char *outcome, size_t cap,
                        char **entry)
{
    state[0] = outcome[0] = '\0';
    *entry = NULL;
    wr_record rec;
    redisReply *hold = NULL;
    int rc = wr_rconn_read_record(r->rc, key, &rec, &hold, r->err, sizeof(r->err));
    if (rc == 0 && rec.state != 0) {
        snprintf(state, cap, "%s", wr_record_state_name(rec.state));
        if (rec.state == 'd') {
            snprintf(outcome, cap, "%.*s", (int)rec.outcome_len, rec.outcome);
            if (rec.entry_len > 0) {
                *entry = strndup(rec.entry, rec.entry_len);
            }
        }
    }
    freeReplyObject(hold);
    return rc;
}

/* Before a done record is reset: the journal entry it keeps (the event's last
 * step) moves to the event's journal list, so `warren trace` still shows it.
 * Best effort. */
static void keep_entry(redis_conn *r, const wr_config *cfg, const wr_subscription *sub,
                       const char *record_key, const char *entry)
{
    size_t skip = strlen(sub->idem.prefix) + strlen(sub->name) + 1;
    char jkey[WR_IDKEY_MAX + 320];
    if (entry == NULL || strlen(record_key) <= skip ||
        wr_journal_key(sub->idem.prefix, sub->name, record_key + skip, jkey, sizeof(jkey)) != 0) {
        return;
    }
    redisReply *rep = wr_rconn_commandf(r->rc, "RPUSH %s %s", jkey, entry);
    freeReplyObject(rep);
    rep = wr_rconn_commandf(r->rc, "PEXPIRE %s %lld", jkey, (long long)cfg->journal_ttl_ms);
    freeReplyObject(rep);
}

static int redis_del(redis_conn *r, const char *key)
{
    redisReply *rep = wr_rconn_commandf(r->rc, "DEL %s", key);
    int rc = rep != NULL && rep->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (rc != 0) {
        snprintf(r->err, sizeof(r->err), "DEL %s: %s", key,
                 rep && rep->type == REDIS_REPLY_ERROR ? rep->str : wr_rconn_error(r->rc));
    }
    freeReplyObject(rep);
    return rc;
}

/* The full Redis key of M (as the worker derives it) into OUT; -1 when it has none. */
static int record_key(const wr_subscription *sub, const dmsg *m, char *out, size_t cap, char *why,
                      size_t whycap)
{
    const wr_idem_policy *pol = &sub->idem;
    amqp_envelope_t d;
    memset(&d, 0, sizeof(d));
    d.channel = CH;
    d.delivery_tag = m->tag;
    d.exchange = m->exchange;
    d.routing_key = m->routing_key;
    d.message = m->msg;
    wr_envelope env;
    const char *reason = NULL;
    int require_id = !(pol->source != WR_KEY_MESSAGE_ID || pol->missing_key_hash);
    /* a message too large for the subscription still has a key: do not cap the body */
    if (wr_envelope_decode(&d, (size_t)-1 / 2, require_id, &env, &reason, why, whycap) != 0 &&
        env.body.bytes == NULL) {
        return -1;
    }
    char key[WR_IDKEY_MAX + 1];
    if (wr_idkey_derive(pol, &env, key, sizeof(key), why, whycap) != 0) {
        return -1;
    }
    wr_record_key(pol->prefix, sub->name, key, out, cap);
    return 0;
}

/* Build the replayed copy's properties in POOL. */
static int replay_props(amqp_pool_t *pool, const dmsg *m, const wr_sign_key *sign,
                        amqp_basic_properties_t *out)
{
    const amqp_table_t *old = headers_of(&m->msg.properties);
    int old_n = old ? old->num_entries : 0;
    *out = m->msg.properties;
    out->_flags &= ~(AMQP_BASIC_EXPIRATION_FLAG | AMQP_BASIC_USER_ID_FLAG);
    out->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    out->delivery_mode = AMQP_DELIVERY_PERSISTENT;
    amqp_table_entry_t *e = amqp_pool_alloc(pool, sizeof(*e) * (size_t)(old_n + 4));
    char *now = amqp_pool_alloc(pool, 32);
    char *tp = amqp_pool_alloc(pool, 64);
    char *sig = amqp_pool_alloc(pool, WR_SIGN_LEN + 1);
    if (e == NULL || now == NULL || tp == NULL || sig == NULL) {
        return -1;
    }
    int n = 0, has_tp = 0;
    int64_t count = 0;
    wr_table_get_int(old, XW "replay-count", &count);
    for (int i = 0; i < old_n; i++) {
        amqp_bytes_t k = old->entries[i].key;
        if (bytes_is(k, "traceparent")) {
            has_tp = 1;
        }
        /* the story starts over: keep only the route and the trace */
        if (k.len >= strlen(XW) && memcmp(k.bytes, XW, strlen(XW)) == 0 &&
            !bytes_is(k, XW "original-exchange") && !bytes_is(k, XW "original-routing-key") &&
            !bytes_is(k, XW "trace-id")) {
            continue;
        }
        e[n++] = old->entries[i];
    }
    wr_format_time(wr_now_ms(), now, 32);
    e[n].key = amqp_cstring_bytes(XW "replayed-at");
    e[n].value.kind = AMQP_FIELD_KIND_UTF8;
    e[n++].value.value.bytes = amqp_cstring_bytes(now);
    e[n].key = amqp_cstring_bytes(XW "replay-count");
    e[n].value.kind = AMQP_FIELD_KIND_I32;
    e[n++].value.value.i32 = (int32_t)(count + 1);
    /* the route it keeps, signed as warren's (sign.h): its attempts start over */
    if (wr_table_get(old, XW "original-exchange") != NULL) {
        amqp_bytes_t id = (m->msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
                              ? m->msg.properties.message_id
                              : amqp_empty_bytes;
        wr_sign(sign, id, 0, wr_table_get_str(old, XW "original-exchange"),
                wr_table_get_str(old, XW "original-routing-key"), sig);
        e[n].key = amqp_cstring_bytes(WR_SIGN_HEADER);
        e[n].value.kind = AMQP_FIELD_KIND_UTF8;
        e[n++].value.value.bytes = amqp_cstring_bytes(sig);
    }
    /* no traceparent of its own: carry the trace the DLQ copy recorded */
    amqp_bytes_t trace = wr_table_get_str(old, XW "trace-id");
    if (!has_tp && trace.len == 32) {
        unsigned span = (unsigned)rand() ^ (unsigned)wr_now_ms();
        snprintf(tp, 64, "00-%.32s-%08x%08x-01", (const char *)trace.bytes, span,
                 (unsigned)rand() | 1u);
        e[n].key = amqp_cstring_bytes("traceparent");
        e[n].value.kind = AMQP_FIELD_KIND_UTF8;
        e[n++].value.value.bytes = amqp_cstring_bytes(tp);
    }
    out->headers.num_entries = n;
    out->headers.entries = e;
    return 0;
}

static void sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (time_t)(ms / 1000) * 1000) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/*
 * Append a "replayed" entry to M's journal (journal.h): when (TS, taken before
 * the copy was published, so the timeline stays in order even when a worker
 * handles the copy before this is written), by whom, what became of the
 * record; UNSURE when the copy went out but its confirm never came (the
 * broker went away): it may have been taken and handled, so the timeline
 * must show it. Best effort: a failure is reported on stderr and changes
 * nothing.
 */
static void journal_replayed(wr_idem *jd, const wr_config *cfg, const wr_subscription *sub,
                             const dmsg *m, const char *record_key, const char *action, int unsure,
                             int64_t ts)
{
    size_t skip = strlen(sub->idem.prefix) + strlen(sub->name) + 1;
    char jkey[WR_IDKEY_MAX + 320], by[160], trace[33] = "";
    if (jd == NULL || strlen(record_key) <= skip ||
        wr_journal_key(sub->idem.prefix, sub->name, record_key + skip, jkey, sizeof(jkey)) != 0) {
        return;
    }
    const char *user = getenv("USER");
    snprintf(by, sizeof(by), "warren dlq replay%s%s%s", user ? " (" : "", user ? user : "",
             user ? ")" : "");
    amqp_bytes_t t = hdr(m, XW "trace-id");
    if (t.len == 32) {
        memcpy(trace, t.bytes, 32);
        trace[32] = '\0';
    }
    char reason[64];
    snprintf(reason, sizeof(reason), "%.*s", (int)hdr(m, XW "reason").len,
             (const char *)hdr(m, XW "reason").bytes);
    wr_journal_entry e = wr_journal_entry_init(WR_JOURNAL_REPLAYED);
    e.ts_ms = ts;
    e.by = by;
    e.message_id = msg_id(m).bytes;
    e.message_id_len = msg_id(m).len;
    e.reason = reason;
    e.queue = sub->queue;
    e.trace_id = trace;
    char note[300];
    snprintf(note, sizeof(note), "from %s; record %s%s", sub->dlq, action,
             unsure ? "; not confirmed (the broker went away): the copy may have gone through,"
                      " the DLQ copy stays"
                    : "");
    e.note = note;
    char *text = wr_journal_encode(&e);
    const char *const entries[1] = {text};
    wr_idem_jlist l = {.key = jkey, .entries = entries, .count = 1};
    if (text == NULL ||
        wr_idem_journal(jd, &l, 1, cfg->journal_max_entries, cfg->journal_ttl_ms) != 0) {
        fprintf(stderr, "warren dlq: the journal entry of the replay was not written: %s\n",
                text ? wr_idem_error(jd) : "out of memory");
    }
    free(text);
}

/* One message of a replay and what became of it. */
typedef struct {
    const dmsg *m;
    const dgroup *g;
    size_t gone; /* copies of its id taken out of the DLQ */
    int have_key;
    const char *key, *why, *state, *outcome, *action, *result;
} replay_item;

/* Say what the replay did with IT (a line and its record, or a JSON entry into OUT). */
static void print_replayed(const opts *o, const wr_subscription *sub, const replay_item *it,
                           json_t *out)
{
    const dmsg *m = it->m;
    const dgroup *g = it->g;
    if (o->json) {
        json_t *j = summary_json(m, g->copies);
        json_object_set_new(j, "copies_removed", json_integer((json_int_t)it->gone));
        json_object_set_new(j, "record", it->have_key ? json_string(it->key) : json_null());
        json_object_set_new(j, "record_state", json_string(it->state));
        json_object_set_new(j, "record_outcome", json_string(it->outcome));
        json_object_set_new(j, "record_action", json_string(it->action));
        json_object_set_new(j, "result", json_string(it->result));
        json_array_append_new(out, j);
    } else {
        char hb[24];
        printf("%s ", o->dry_run ? "would replay" : "replay");
        put_bytes_field(stdout, handle_of(m, hb));
        printf(" (%.*s) to %s: %s", (int)hdr(m, XW "reason").len,
               (const char *)hdr(m, XW "reason").bytes, sub->queue, it->result);
        if (g->copies > 1 && o->dry_run) {
            printf("; its %zu copies in the DLQ would all be removed", g->copies);
        } else if (g->copies > 1) {
            printf("; %zu of its %zu copies removed from the DLQ", it->gone, g->copies);
        }
        printf("\n");
        if (it->have_key) {
            printf("  record %s: %s%s%s, %s\n", it->key, it->state[0] ? it->state : "absent",
                   it->outcome[0] ? "/" : "", it->outcome, it->action);
        } else if (sub->idem.enabled) {
            printf("  no idempotency key: %s\n", it->why);
        }
    }
}

/* Publish M's copy to SUB's queue (confirmed, 10 s at most). *SENT: it went
 * out; *DOWN: the connection is lost. Returns the copy's state. */
static wr_pub_state send_copy(wr_broker *b, const wr_subscription *sub, dmsg *m,
                              const wr_sign_key *sign, int *sent, int *down)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_basic_properties_t props;
    uint64_t seq = 0;
    int prc = replay_props(&pool, m, sign, &props);
    wr_pub_state ps = WR_PUB_PENDING;
    if (prc == 0) {
        prc = wr_broker_publish(b, amqp_cstring_bytes(""), amqp_cstring_bytes(sub->queue), 1,
                                &props, m->msg.body, &seq);
        if (prc == WR_BROKER_OK) {
            *sent = 1;
            prc = wr_broker_confirm_wait(b, seq + 1, 10000);
        }
        ps = prc == WR_BROKER_OK ? wr_broker_confirm_state(b, seq) : WR_PUB_PENDING;
        *down = prc == WR_BROKER_DOWN || prc == WR_BROKER_CONFLICT;
        wr_broker_confirm_release(b, seq + 1); /* before the pool it points into goes */
    }
    empty_amqp_pool(&pool);
    return ps;
}

/* The connections a replay needs: Redis for the records (a dry run shows
 * them when it can), the journal's, and the broker (tried node by node).
 * Returns -1 when one that is needed cannot be had (said on stderr). */
static int open_replay(const opts *o, const wr_config *cfg, const wr_subscription *sub, size_t nsel,
                       redis_conn *rd, wr_idem **jd, wr_broker **b)
{
    if (!o->dry_run && sub->idem.enabled && redis_open(rd, cfg) != 0) {
        fprintf(stderr, "warren dlq: %s\n", rd->err);
        return -1;
    }
    if (o->dry_run && sub->idem.enabled && redis_open(rd, cfg) != 0) {
        fprintf(stderr, "warren dlq: %s (records not shown)\n", rd->err);
        redis_close(rd);
    }
    if (!o->dry_run && nsel > 0 && sub->idem.enabled && cfg->journal_enabled) {
        char jerr[256];
        *jd = wr_idem_create(&cfg->redis, cfg->redis_timeout_ms, jerr, sizeof(jerr));
        if (*jd == NULL) {
            fprintf(stderr, "warren dlq: journal entries will not be written: %s\n", jerr);
        }
    }
    if (!o->dry_run && nsel > 0) {
        char berr[256];
        for (int k = 0; *b == NULL && k <= cfg->amqp_alt_count; k++) {
            *b = wr_broker_create(wr_config_amqp_url(cfg, k), 0, cfg->amqp_connect_timeout_ms,
                                  "warren dlq replay", berr, sizeof(berr));
        }
        if (*b == NULL) {
            fprintf(stderr, "warren dlq: %s\n", berr);
            return -1;
        }
    }
    return 0;
}

/* Ack every copy of G's id in the DLQ; *GONE counts them. 1 when all were acked. */
static int ack_copies(reader *r, const dgroup *g, size_t *gone)
{
    int acked = 1;
    for (size_t c = g->first; c != NO_MSG; c = r->msgs[c].next) {
        if (reader_ack(r, &r->msgs[c]) == 0) {
            (*gone)++;
        } else {
            acked = 0;
        }
    }
    return acked;
}

static int do_replay(const opts *o, const wr_config *cfg, const wr_subscription *sub, reader *r,
                     const size_t *sel, size_t nsel)
{
    redis_conn rd = {0};
    wr_sign_key sign;
    wr_sign_key_for(&sign, cfg);
    wr_broker *b = NULL;
    wr_idem *jd = NULL; /* the journal's connection */
    int fail = 0, down = 0;
    size_t replayed = 0, removed = 0;
    json_t *out = json_array();
    if (open_replay(o, cfg, sub, nsel, &rd, &jd, &b) != 0) {
        fail = 1;
        goto done;
    }
    for (size_t i = 0; i < nsel; i++) {
        const dgroup *g = &r->groups[sel[i]];
        dmsg *m = &r->msgs[g->rep];
        size_t gone = 0; /* copies of this id taken out of the DLQ */
        char key[WR_IDKEY_MAX + 256], why[256], state[32] = "", outcome[32] = "";
        char *entry = NULL;
        const char *action = "nothing to reset";
        int have_key =
            sub->idem.enabled && record_key(sub, m, key, sizeof(key), why, sizeof(why)) == 0;
        if (have_key && rd.rc != NULL &&
            redis_record(&rd, key, state, outcome, sizeof(state), &entry) != 0) {
            fprintf(stderr, "warren dlq: %s\n", rd.err);
            fail = 1;
            break;
        }
        if (have_key && state[0] != '\0') {
            if (strcmp(outcome, "ok") == 0) {
                action = "kept (outcome ok: the replay will be acked as a duplicate)";
            } else if (strcmp(state, "processing") == 0) {
                action = "kept (a worker holds it: the replay waits for its lease)";
            } else {
                action = o->dry_run ? "would be reset" : "reset";
            }
        }
        if (!o->dry_run && strcmp(action, "reset") == 0 && cfg->journal_enabled) {
            keep_entry(&rd, cfg, sub, key, entry);
        }
        free(entry);
        if (!o->dry_run && strcmp(action, "reset") == 0 && redis_del(&rd, key) != 0) {
            fprintf(stderr, "warren dlq: %s\n", rd.err);
            fail = 1;
            break;
        }
        const char *result = "dry-run";
        if (!o->dry_run) {
            if (replayed > 0 && o->rate > 0) {
                sleep_ms(1000.0 / o->rate);
            }
            int64_t sent_at = wr_now_ms();
            int sent = 0;
            wr_pub_state ps = send_copy(b, sub, m, &sign, &sent, &down);
            if (ps == WR_PUB_ACKED) {
                /* one copy went back: every copy of the id leaves the DLQ */
                int acked = ack_copies(r, g, &gone);
                removed += gone;
                if (!acked) {
                    result = "replayed, but the DLQ ack failed (it may be replayed twice)";
                    fail = 1;
                } else {
                    result = "replayed";
                    replayed++;
                }
                if (have_key) {
                    journal_replayed(jd, cfg, sub, m, key, action, 0, sent_at);
                }
            } else {
                if (sent && ps == WR_PUB_PENDING && have_key) {
                    journal_replayed(jd, cfg, sub, m, key, action, 1, sent_at);
                }
                reader_return(r, m);
                result = ps == WR_PUB_RETURNED ? "not replayed: unroutable (no queue?)"
                         : ps == WR_PUB_NACKED ? "not replayed: the broker refused the copy"
                                               : "not replayed: the copy was not confirmed";
                fail = 1;
            }
        }
        replay_item it = {.m = m,
                          .g = g,
                          .gone = gone,
                          .have_key = have_key,
                          .key = key,
                          .why = why,
                          .state = state,
                          .outcome = outcome,
                          .action = action,
                          .result = result};
        print_replayed(o, sub, &it, out);
        if (!o->dry_run && strncmp(result, "not", 3) == 0) {
            const char *why_b = wr_broker_error(b);
            fprintf(stderr, "warren dlq: %.*s: %s%s%s; it stays in %s\n", (int)msg_id(m).len,
                    (const char *)msg_id(m).bytes, result, why_b[0] ? ": " : "", why_b, sub->dlq);
            if (down) {
                fprintf(stderr,
                        "warren dlq: the broker connection is lost: stopping; the "
                        "remaining messages stay in %s\n",
                        sub->dlq);
                break;
            }
        }
    }
done:
    if (o->json) {
        print_json(out);
    } else {
        json_decref(out);
        if (o->dry_run) {
            printf("dry run: %zu message(s) would be replayed from %s; nothing changed\n", nsel,
                   sub->dlq);
        } else {
            printf("replayed %zu of %zu message(s) from %s to %s", replayed, nsel, sub->dlq,
                   sub->queue);
            if (removed != replayed) {
                printf(" (%zu copies removed from the DLQ)", removed);
            }
            printf("\n");
        }
    }
    if (b != NULL) {
        wr_broker_destroy(b);
    }
    if (wr_idem_settle(jd) != 0) {
        fprintf(stderr, "warren dlq: journal entries of the replay may be missing: %s\n",
                wr_idem_error(jd));
    }
    wr_idem_destroy(jd);
    if (rd.rc != NULL) {
        redis_close(&rd);
    }
    return fail;
}

/* --- purge ---------------------------------------------------------------- */

static int do_purge(const opts *o, const wr_subscription *sub, reader *r, const size_t *sel,
                    size_t nsel)
{
    size_t copies = 0;
    for (size_t i = 0; i < nsel; i++) {
        copies += r->groups[sel[i]].copies;
    }
    if (nsel > 0 && !o->yes) {
        if (!isatty(STDIN_FILENO)) {
            fprintf(stderr,
                    "warren dlq: refusing to purge %zu message(s) from %s: stdin is not "
                    "a terminal; pass --yes\n",
                    copies, sub->dlq);
            return 1;
        }
        fprintf(stderr, "purge %zu messages (%zu ids) from %s? [y/N] ", copies, nsel, sub->dlq);
        char line[16] = "";
        if (fgets(line, sizeof(line), stdin) == NULL ||
            (strcmp(line, "y\n") != 0 && strcmp(line, "yes\n") != 0 && strcmp(line, "Y\n") != 0)) {
            fprintf(stderr, "nothing purged\n");
            return 1;
        }
    }
    /* every copy of a selected id goes: --id X leaves no copy of X behind */
    size_t purged = 0;
    for (size_t i = 0; i < nsel; i++) {
        for (size_t c = r->groups[sel[i]].first; c != NO_MSG; c = r->msgs[c].next) {
            if (reader_ack(r, &r->msgs[c]) == 0) {
                purged++;
            }
        }
    }
    if (o->json) {
        json_t *j = json_object();
        json_object_set_new(j, "dlq", json_string(sub->dlq));
        json_object_set_new(j, "purged", json_integer((json_int_t)purged));
        json_object_set_new(j, "ids", json_integer((json_int_t)nsel));
        print_json(j);
    } else {
        printf("purged %zu message(s) (%zu ids) from %s\n", purged, nsel, sub->dlq);
    }
    return purged == copies ? 0 : 1;
}

/* --- group-by ------------------------------------------------------------ */

/* The key M counts under for --group-by BY: its reason code, or its error's
 * first line (cut to 120 bytes). */
static json_t *group_key(const char *by, const dmsg *m)
{
    amqp_bytes_t b = hdr(m, strcmp(by, "reason") == 0 ? XW "reason" : XW "error");
    const char *nl = b.len > 0 ? memchr(b.bytes, '\n', b.len) : NULL;
    if (nl != NULL) {
        b.len = (size_t)(nl - (const char *)b.bytes);
    }
    b.len = wr_utf8_truncate(b.bytes, b.len, 120);
    if (b.len == 0) {
        return json_string("-");
    }
    return json_bytes(b);
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

/*
 * Count the selected groups SEL[0..NSEL) of R per key of BY ("reason" or
 * "error"): a new JSON object key -> {key, ids, messages}, or NULL when out
 * of memory. *WIDTH grows to the longest key.
 */
static json_t *count_groups(const char *by_name, const reader *r, const size_t *sel, size_t nsel,
                            size_t *width)
{
    json_t *by = json_object(); /* key -> {key, ids, messages} */
    for (size_t i = 0; by != NULL && i < nsel; i++) {
        const dgroup *g = &r->groups[sel[i]];
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

/*
 * `dlq list --group-by reason|error`: one row per reason code (or error text)
 * with the count of selected ids and of their copies, most ids first. Returns
 * the exit status.
 */
static int print_groups(const opts *o, const wr_subscription *sub, const reader *r,
                        const size_t *sel, size_t nsel)
{
    size_t width = strlen(o->group_by);
    json_t *by = count_groups(o->group_by, r, sel, nsel, &width);
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
            json_object_set(x, o->group_by, json_object_get(rows[i], "key"));
            json_object_set(x, "ids", json_object_get(rows[i], "ids"));
            json_object_set(x, "messages", json_object_get(rows[i], "messages"));
            json_array_append_new(a, x);
        }
        rc = emit_json(o, sub, a);
    } else {
        printf("%-*s  %6s  %8s\n", (int)width, o->group_by, "ids", "messages");
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

json_t *wr_dlqtool_by_reason(const wr_config *cfg, const wr_subscription *sub, uint32_t max,
                             uint32_t *read, uint32_t *held, char *err, size_t cap)
{
    opts o = {.cmd = CMD_LIST, .older_ms = -1};
    reader r = {0};
    size_t *sel = NULL, nsel = 0;
    json_t *out = NULL;
    int opened = reader_open(&r, cfg, sub->dlq) == 0;
    *held = r.depth;
    if (opened && max > 0 && r.depth > max) {
        r.depth = max; /* the first MAX: reader_next stops there */
    }
    if (!opened || scan(&r, &o, 0, &sel, &nsel) != 0) {
        snprintf(err, cap, "%s: %s", sub->dlq, r.err);
    } else {
        json_t *by = count_groups("reason", &r, sel, nsel, NULL);
        if (by == NULL || (out = json_object()) == NULL) {
            snprintf(err, cap, "out of memory");
        } else {
            const char *key;
            json_t *row;
            json_object_foreach(by, key, row)
            {
                json_object_del(row, "key");
                json_object_set(out, key, row);
            }
        }
        json_decref(by);
    }
    *read = (uint32_t)r.scanned;
    reader_close(&r);
    free(sel);
    return out;
}

/* --- entry ---------------------------------------------------------------- */

/* An unknown --reason: a usage error that lists the codes (--reason help: the
 * list alone, exit 0). */
static int bad_reason(const char *name)
{
    char list[1024];
    wr_reason_list(", ", list, sizeof(list));
    if (strcmp(name, "help") == 0) {
        printf("reason codes: %s\n", list);
        return 0;
    }
    fprintf(stderr, "warren dlq: --reason: unknown reason '%s'; valid reasons: %s\n", name, list);
    return 2;
}

static int parse_rate(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || !(v > 0) || (*end && strcmp(end, "/s") != 0)) {
        return -1;
    }
    *out = v;
    return 0;
}

/*
 * Run the command of O on subscription SUB's DLQ. Returns the exit status.
 */
static int run_sub(const opts *op, const wr_config *cfg, const wr_subscription *sub,
                   const char *show_id)
{
    const opts o = *op;
    int rc = 1;
    reader r = {0};
    size_t *sel = NULL, nsel = 0;
    if (reader_open(&r, cfg, sub->dlq) != 0 || scan(&r, &o, o.limit, &sel, &nsel) != 0) {
        fprintf(stderr, "warren dlq: %s: %s\n", sub->dlq, r.err);
        goto out;
    }
    switch (o.cmd) {
    case CMD_LIST:
        if (o.group_by != NULL) {
            rc = print_groups(&o, sub, &r, sel, nsel);
        } else if (o.json) {
            json_t *a = json_array();
            for (size_t i = 0; i < nsel; i++) {
                const dgroup *g = &r.groups[sel[i]];
                json_array_append_new(a, summary_json(&r.msgs[g->rep], g->copies));
            }
            rc = emit_json(&o, sub, a);
        } else {
            size_t copies = 0;
            for (size_t i = 0; i < nsel; i++) {
                const dgroup *g = &r.groups[sel[i]];
                summary_line(stdout, &r.msgs[g->rep], g->copies);
                copies += g->copies;
            }
            fprintf(stderr, "%zu id(s) listed (%zu message(s)); %s held %u\n", nsel, copies,
                    sub->dlq, r.depth);
            rc = 0;
        }
        break;
    case CMD_SHOW:
        if (nsel == 0) {
            fprintf(stderr, "warren dlq: no message '%s' in %s\n", show_id, sub->dlq);
            rc = 1;
        } else if (o.json) {
            const dgroup *g = &r.groups[sel[0]];
            rc = print_json(show_json(&r.msgs[g->rep], g->copies));
        } else {
            const dgroup *g = &r.groups[sel[0]];
            show_text(&r.msgs[g->rep], g->copies, sub->dlq);
            rc = 0;
        }
        break;
    case CMD_REPLAY:
        rc = do_replay(&o, cfg, sub, &r, sel, nsel);
        break;
    case CMD_PURGE:
        rc = do_purge(&o, sub, &r, sel, nsel);
        break;
    }
out:
    fflush(stdout);
    reader_close(&r);
    free(sel);
    return rc;
}

int wr_dlqtool_main(int argc, char **argv)
{
    opts o = {.older_ms = -1, .limit = -1, .rate = 50};
    const char *show_id = NULL;
    if (argc < 1) {
        return usage("%s", "dlq needs a command: list, show, replay or purge");
    }
    if (strcmp(argv[0], "list") == 0) {
        o.cmd = CMD_LIST;
    } else if (strcmp(argv[0], "show") == 0) {
        o.cmd = CMD_SHOW;
    } else if (strcmp(argv[0], "replay") == 0) {
        o.cmd = CMD_REPLAY;
    } else if (strcmp(argv[0], "purge") == 0) {
        o.cmd = CMD_PURGE;
    } else if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        printf("usage:\n%s", wr_dlqtool_usage);
        return 0;
    } else {
        return usage("unknown dlq command '%s'", argv[0]);
    }
    int filters = o.cmd != CMD_SHOW;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int val = strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 ||
                  strcmp(a, "--subscription") == 0 ||
                  (filters && (strcmp(a, "--id") == 0 || strcmp(a, "--reason") == 0 ||
                               strcmp(a, "--grep") == 0 || strcmp(a, "--older-than") == 0 ||
                               strcmp(a, "--limit") == 0)) ||
                  (o.cmd == CMD_LIST && strcmp(a, "--group-by") == 0) ||
                  (o.cmd == CMD_REPLAY && strcmp(a, "--rate") == 0);
        if (val && i + 1 >= argc) {
            return usage("%s needs a value", a);
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            o.config = argv[++i];
        } else if (strcmp(a, "--subscription") == 0) {
            o.sub = argv[++i];
        } else if (val && strcmp(a, "--id") == 0) {
            o.id = argv[++i];
        } else if (val && strcmp(a, "--reason") == 0) {
            o.reason = argv[++i];
            if (wr_reason_lookup(o.reason, &o.reason_code) != 0) {
                return bad_reason(o.reason);
            }
        } else if (val && strcmp(a, "--group-by") == 0) {
            o.group_by = argv[++i];
            if (strcmp(o.group_by, "reason") != 0 && strcmp(o.group_by, "error") != 0) {
                return usage("--group-by: '%s' is not reason or error", o.group_by);
            }
        } else if (val && strcmp(a, "--grep") == 0) {
            o.grep = argv[++i];
        } else if (val && strcmp(a, "--older-than") == 0) {
            if (wr_config_parse_duration(argv[++i], &o.older_ms) != 0) {
                return usage("--older-than: '%s' is not a duration (e.g. 30m, 2h, 7d)", argv[i]);
            }
        } else if (val && strcmp(a, "--limit") == 0) {
            char *end;
            o.limit = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || o.limit < 0) {
                return usage("--limit: '%s' is not a count (0 = no limit)", argv[i]);
            }
        } else if (val && strcmp(a, "--rate") == 0) {
            if (parse_rate(argv[++i], &o.rate) != 0) {
                return usage("--rate: '%s' is not a rate (e.g. 50/s)", argv[i]);
            }
        } else if (strcmp(a, "--json") == 0) {
            o.json = 1;
        } else if (o.cmd == CMD_REPLAY && strcmp(a, "--dry-run") == 0) {
            o.dry_run = 1;
        } else if (o.cmd == CMD_PURGE && strcmp(a, "--yes") == 0) {
            o.yes = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("usage:\n%s", wr_dlqtool_usage);
            return 0;
        } else if (o.cmd == CMD_SHOW && show_id == NULL && a[0] != '-') {
            show_id = a;
        } else {
            return usage("unexpected argument '%s'", a);
        }
    }
    if ((o.config == NULL || o.sub == NULL) && o.cmd != CMD_LIST) {
        return usage("dlq %s needs -c FILE and --subscription NAME", argv[0]);
    }
    if (o.config == NULL) {
        return usage("dlq %s needs -c FILE", argv[0]);
    }
    if (o.cmd == CMD_SHOW && show_id == NULL) {
        return usage("%s", "dlq show needs a message ID");
    }
    if (o.cmd == CMD_SHOW) {
        o.id = show_id;
        o.limit = 1;
    } else if (o.limit < 0) {
        o.limit = o.cmd == CMD_LIST && o.group_by == NULL ? 100 : 0;
    }

    wr_config_errors errs = {0};
    wr_config *cfg = wr_config_load(o.config, &errs);
    if (cfg == NULL) {
        for (int i = 0; i < errs.count; i++) {
            fprintf(stderr, "%s\n", errs.lines[i]);
        }
        wr_config_errors_free(&errs);
        return 2;
    }
    srand((unsigned)wr_now_ms() ^ (unsigned)getpid());
    /* the broker module's log lines go to stderr: stdout is the report (and JSON) */
    wr_log_set_fd(STDERR_FILENO);
    wr_log_set_level(cfg->log_level);
    int rc = 0;
    if (o.sub == NULL) {
        /* list without --subscription: every subscription's DLQ in turn */
        if (o.json && (o.sink = json_object()) == NULL) {
            fprintf(stderr, "warren dlq: out of memory\n");
            wr_config_free(cfg);
            return 1;
        }
        for (int i = 0; i < cfg->sub_count; i++) {
            if (!o.json) {
                printf("%s%s (%s):\n", i > 0 ? "\n" : "", cfg->subs[i].name, cfg->subs[i].dlq);
                fflush(stdout);
            }
            int one = run_sub(&o, cfg, &cfg->subs[i], show_id);
            rc = one > rc ? one : rc;
        }
        if (o.sink != NULL) {
            int prc = print_json(o.sink);
            rc = prc > rc ? prc : rc;
        }
        wr_config_free(cfg);
        return rc;
    }
    const wr_subscription *sub = NULL;
    for (int i = 0; i < cfg->sub_count; i++) {
        if (strcmp(cfg->subs[i].name, o.sub) == 0) {
            sub = &cfg->subs[i];
        }
    }
    if (sub == NULL) {
        fprintf(stderr, "warren dlq: no subscription '%s' in %s (have:", o.sub, cfg->path);
        for (int i = 0; i < cfg->sub_count; i++) {
            fprintf(stderr, " %s", cfg->subs[i].name);
        }
        fprintf(stderr, ")\n");
        wr_config_free(cfg);
        return 2;
    }
    rc = run_sub(&o, cfg, sub, show_id);
    wr_config_free(cfg);
    return rc;
}
