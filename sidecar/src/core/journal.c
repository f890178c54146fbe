/*
 * journal: building, reading and printing per-event journal entries. Pure:
 * no I/O but the FILE the caller hands to wr_journal_render. See journal.h.
 */
#include "journal.h"

#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "log.h"
#include "numfmt.h"
#include "outcome.h"

wr_journal_entry wr_journal_entry_init(const char *event)
{
    wr_journal_entry e;
    memset(&e, 0, sizeof(e));
    e.event = event;
    e.worker = -1;
    e.delay_ms = -1;
    e.duration_ms = -1;
    e.published = -1;
    return e;
}

/*
 * The encoder writes JSON text straight into a growing buffer: an entry is
 * built for every message a worker handles, and a DOM (jansson) would cost a
 * few allocations per field on that path.
 */
typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} jbuf;

static void jb_reserve(jbuf *b, size_t more)
{
    if (b->failed || b->len + more + 1 <= b->cap) {
        return;
    }
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + more + 1) {
        cap *= 2;
    }
    char *p = realloc(b->buf, cap);
    if (p == NULL) {
        b->failed = 1;
        return;
    }
    b->buf = p;
    b->cap = cap;
}

static void jb_raw(jbuf *b, const char *s, size_t n)
{
    jb_reserve(b, n);
    if (!b->failed) {
        memcpy(b->buf + b->len, s, n);
        b->len += n;
        b->buf[b->len] = '\0';
    }
}

/* ,"NAME": (the first field has no comma) */
static void jb_key(jbuf *b, const char *name)
{
    jb_raw(b, b->len > 1 ? ",\"" : "\"", b->len > 1 ? 2 : 1);
    jb_raw(b, name, strlen(name));
    jb_raw(b, "\":", 2);
}

/* N bytes of S as a JSON string, cut to MAX bytes (0: no cut) on a UTF-8
 * boundary; bytes that are not valid UTF-8, and NULs, become '?'. */
static void jb_string(jbuf *b, const char *s, size_t n, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    if (max > 0 && n > max) {
        n = wr_utf8_truncate(s, n, max);
    }
    jb_reserve(b, 6 * n + 2); /* the worst case: every byte a \u00XX */
    if (b->failed) {
        return;
    }
    char *o = b->buf + b->len;
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else if (c == '\r') {
            *o++ = '\\';
            *o++ = 'r';
        } else if (c == '\t') {
            *o++ = '\\';
            *o++ = 't';
        } else if (c == 0) {
            *o++ = '?';
        } else if (c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else if (c < 0x80) {
            *o++ = (char)c;
        } else {
            size_t len = wr_utf8_seq_len((const unsigned char *)s + i, n - i);
            if (len == 0) {
                *o++ = '?';
            } else {
                memcpy(o, s + i, len);
                o += len;
                i += len;
                continue;
            }
        }
        i++;
    }
    *o++ = '"';
    b->len = (size_t)(o - b->buf);
    b->buf[b->len] = '\0';
}

static void put_str(jbuf *b, const char *name, const char *s, size_t n, size_t max)
{
    if (s == NULL || n == 0) {
        return;
    }
    jb_key(b, name);
    jb_string(b, s, n, max);
}

static void put_cstr(jbuf *b, const char *name, const char *s)
{
    put_str(b, name, s, s ? strlen(s) : 0, 0);
}

static void put_int(jbuf *b, const char *name, int64_t v)
{
    char num[WR_NUMFMT_MAX];
    size_t n = wr_fmt_i64(num, v);
    jb_key(b, name);
    jb_raw(b, num, n);
}

static void put_true(jbuf *b, const char *name)
{
    jb_key(b, name);
    jb_raw(b, "true", 4);
}

char *wr_journal_encode(const wr_journal_entry *e)
{
    if (e->event == NULL || e->event[0] == '\0') {
        return NULL;
    }
    jbuf b = {0};
    jb_raw(&b, "{", 1);
    put_int(&b, "ts", e->ts_ms > 0 ? e->ts_ms : wr_now_ms());
    put_cstr(&b, "event", e->event);
    put_cstr(&b, "subscription", e->subscription);
    if (e->worker >= 0) {
        put_int(&b, "worker", e->worker);
    }
    put_cstr(&b, "by", e->by);
    put_str(&b, "message_id", e->message_id, e->message_id_len, 256);
    put_str(&b, "type", e->type, e->type_len, 256);
    if (e->attempt > 0) {
        put_int(&b, "attempt", e->attempt);
    }
    put_cstr(&b, "reason", e->reason);
    put_str(&b, "error", e->error, e->error ? strlen(e->error) : 0, WR_JOURNAL_ERROR_MAX);
    if (e->delay_ms >= 0) {
        put_int(&b, "delay_ms", e->delay_ms);
    }
    put_cstr(&b, "queue", e->queue);
    if (e->duration_ms >= 0) {
        /* three decimals are plenty, and keep the entry short; always a number with
         * a fraction or an exponent, so readers see a real */
        char num[48];
        double d = (double)(int64_t)(e->duration_ms * 1000) / 1000;
        int n = snprintf(num, sizeof(num), "%.6g", d);
        if (strpbrk(num, ".eE") == NULL) {
            n += snprintf(num + n, sizeof(num) - (size_t)n, ".0");
        }
        jb_key(&b, "duration_ms");
        jb_raw(&b, num, (size_t)n);
    }
    put_cstr(&b, "trace_id", e->trace_id);
    put_cstr(&b, "handler_version", e->handler_version);
    if (e->published >= 0) {
        put_int(&b, "published", e->published);
    }
    if (e->replay) {
        put_true(&b, "replay");
    }
    if (e->redelivered) {
        put_true(&b, "redelivered");
    }
    if (e->received_ms > 0) {
        put_int(&b, "received_at", e->received_ms);
    }
    put_cstr(&b, "note", e->note);
    if (e->fields != NULL && e->fields[0] == '{') {
        jb_key(&b, "fields");
        jb_raw(&b, e->fields, strlen(e->fields));
    }
    jb_raw(&b, "}", 1);
    if (b.failed) {
        free(b.buf);
        return NULL;
    }
    return b.buf;
}

/* For the reader: a JSON string of N bytes of S, cut to MAX bytes (0: no cut),
 * cleaned as the encoder cleans. NULL when out of memory. */
static json_t *clean_string(const char *s, size_t n, size_t max)
{
    jbuf b = {0};
    jb_string(&b, s, n, max);
    json_t *j = b.failed ? NULL : json_loads(b.buf, JSON_DECODE_ANY, NULL);
    free(b.buf);
    return j;
}

int wr_journal_key(const char *prefix, const char *subscription, const char *key, char *out,
                   size_t cap)
{
    int n = snprintf(out, cap, "%sjournal:%s:%s", prefix, subscription, key);
    return n >= 0 && (size_t)n < cap ? 0 : -1;
}

/* ---- reading ------------------------------------------------------------------ */

static const char *str_of(const json_t *o, const char *name)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s != NULL ? s : "";
}

static int64_t int_of(const json_t *o, const char *name, int64_t dflt)
{
    const json_t *v = json_object_get(o, name);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

static int is_event(const json_t *e, const char *name)
{
    return strcmp(str_of(e, "event"), name) == 0;
}

/* Append S to array A unless it is empty or already there. */
static void add_unique(json_t *a, const char *s)
{
    if (s[0] == '\0') {
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (strcmp(json_string_value(v), s) == 0) {
            return;
        }
    }
    json_array_append_new(a, json_string(s));
}

static void set_where(json_t *story, const char *state, const char *detail, int64_t since,
                      int64_t due)
{
    json_t *w = json_object();
    json_object_set_new(w, "state", json_string(state));
    json_object_set_new(w, "detail", json_string(detail));
    if (since > 0) {
        json_object_set_new(w, "since", json_integer((json_int_t)since));
    }
    if (due > 0) {
        json_object_set_new(w, "due", json_integer((json_int_t)due));
    }
    json_object_set_new(story, "where", w);
}

static void add_next(json_t *story, const char *fmt, const wr_journal_subject *s, const char *id)
{
    char cmd[1024];
    /* every command names the config, the subscription and the id, in that order */
    snprintf(cmd, sizeof(cmd), fmt, s->config ? s->config : "FILE", s->subscription, id);
    json_array_append_new(json_object_get(story, "next"), json_string(cmd));
}

/* Where the message is when its journal says nothing (off, expired): what
 * its record says. ID names it for `warren dlq`. */
static void where_from_record(json_t *story, const wr_journal_subject *s,
                              const wr_journal_record *rec, const char *id)
{
    char detail[1024], when[32];
    if (rec != NULL && rec->state != NULL && strcmp(rec->state, "done") == 0 &&
        rec->outcome != NULL && strcmp(rec->outcome, "ok") != 0) {
        /* failed for good, journal gone: its copy went to the DLQ (unless purged since) */
        snprintf(detail, sizeof(detail),
                 "its record says %s and it has no journal entries left: its copy went to "
                 "%s (unless it was purged or replayed since)",
                 rec->outcome, s->dlq ? s->dlq : "the DLQ");
        set_where(story, "dlq", detail, rec->done_at, 0);
        add_next(story, "warren dlq show -c %s --subscription %s %s", s, id);
    } else if (rec != NULL && rec->state != NULL && strcmp(rec->state, "done") == 0) {
        wr_format_time(rec->done_at, when, sizeof(when));
        snprintf(detail, sizeof(detail), "done: outcome %s%s%s; no journal entries left",
                 rec->outcome ? rec->outcome : "?", rec->done_at > 0 ? " at " : "",
                 rec->done_at > 0 ? when : "");
        set_where(story, "done", detail, rec->done_at, 0);
    } else if (rec != NULL && rec->state != NULL) {
        snprintf(detail, sizeof(detail),
                 "its record is %s, but it has no journal (journal off or expired)", rec->state);
        set_where(story, "unknown", detail, 0, 0);
    } else {
        set_where(story, "unknown", "never seen: no journal and no idempotency record", 0, 0);
    }
}

/* In the DLQ, as its last entry LAST says; what to run next depends on
 * whether a replay can succeed. */
static void where_dead_lettered(json_t *story, const wr_journal_subject *s, const json_t *last,
                                const char *id)
{
    char detail[1024], when[32];
    int64_t ts = int_of(last, "ts", 0);
    wr_format_time(ts, when, sizeof(when));
    const char *queue = str_of(last, "queue");
    snprintf(detail, sizeof(detail), "in the DLQ %s: dead-lettered at %s after attempt %lld%s%s",
             queue[0] ? queue : s->dlq, when, (long long)int_of(last, "attempt", 0),
             str_of(last, "reason")[0] ? " (" : "", str_of(last, "reason"));
    if (str_of(last, "reason")[0]) {
        strncat(detail, ")", sizeof(detail) - strlen(detail) - 1);
    }
    /* a replay runs the same handler on the same body: a rejection or a body
     * that cannot be read would only fail again */
    wr_reason rs = wr_reason_parse(str_of(last, "reason"));
    int permanent = rs == WR_RS_REJECTED || rs == WR_RS_MISSING_ID || rs == WR_RS_EMPTY_BODY ||
                    rs == WR_RS_TOO_LARGE || rs == WR_RS_INVALID_JSON || rs == WR_RS_ENCODING ||
                    rs == WR_RS_MISSING_KEY;
    if (permanent) {
        strncat(detail,
                rs == WR_RS_REJECTED
                    ? "; its handler declined it: a replay is rejected again unless the "
                      "handler or the data changed"
                    : "; the message itself is unreadable: a replay fails the same way",
                sizeof(detail) - strlen(detail) - 1);
    }
    set_where(story, "dlq", detail, ts, 0);
    add_next(story, "warren dlq show -c %s --subscription %s %s", s, id);
    if (!permanent) {
        add_next(story, "warren dlq replay -c %s --subscription %s --id %s", s, id);
    }
}

/*
 * Decide where the message is now. The last decisive journal entry says what
 * was done with it; the record says whether a worker holds it at this moment
 * (that wins) and, without a journal, what became of it.
 */
static void decide_where(json_t *story, const wr_journal_subject *s, const json_t *entries,
                         const wr_journal_record *rec)
{
    char detail[1024], when[32];
    const json_t *last = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        if (!is_event(e, "unreadable")) {
            last = e;
        }
    }
    /* --id of `warren dlq` matches the message id, which may differ from the key */
    const char *id =
        last != NULL && str_of(last, "message_id")[0] ? str_of(last, "message_id") : s->key;
    int processing = rec != NULL && rec->state != NULL && strcmp(rec->state, "processing") == 0 &&
                     rec->lease_until > s->now_ms;
    if (processing) {
        snprintf(detail, sizeof(detail),
                 "a worker is handling it now (its lease runs %lld ms more)",
                 (long long)(rec->lease_until - s->now_ms));
        set_where(story, "processing", detail, 0, rec->lease_until);
        add_next(story, "warren trace -c %s --subscription %s %s", s, s->key);
        return;
    }
    if (last == NULL) {
        where_from_record(story, s, rec, id);
        return;
    }
    int64_t ts = int_of(last, "ts", 0);
    wr_format_time(ts, when, sizeof(when));
    const char *ev = str_of(last, "event");
    const char *queue = str_of(last, "queue");
    if (strcmp(ev, WR_JOURNAL_OK) == 0) {
        snprintf(detail, sizeof(detail), "done: handled ok at %s", when);
        set_where(story, "done", detail, ts, 0);
    } else if (strcmp(ev, WR_JOURNAL_DUPLICATE) == 0) {
        snprintf(detail, sizeof(detail), "done: already handled; the copy seen at %s was %s", when,
                 json_is_true(json_object_get(last, "replay")) ? "a replay, skipped as a duplicate"
                                                               : "a duplicate, skipped");
        set_where(story, "done", detail, ts, 0);
    } else if (strcmp(ev, WR_JOURNAL_DEAD_LETTERED) == 0) {
        where_dead_lettered(story, s, last, id);
    } else if (strcmp(ev, WR_JOURNAL_RETRIED) == 0 || strcmp(ev, WR_JOURNAL_DEFERRED) == 0) {
        int64_t due = ts + int_of(last, "delay_ms", 0);
        char dues[32];
        wr_format_time(due, dues, sizeof(dues));
        int retried = strcmp(ev, WR_JOURNAL_RETRIED) == 0;
        snprintf(detail, sizeof(detail), "%s %s until %s%s, then back to %s",
                 retried ? "waiting in the delay queue" : "waiting (its key was busy) in",
                 queue[0] ? queue : "?", dues, due < s->now_ms ? " (due already)" : "",
                 s->queue ? s->queue : "its queue");
        set_where(story, retried ? "delay" : "wait", detail, ts, due);
        add_next(story, "warren trace -c %s --subscription %s %s", s, s->key);
    } else if (strcmp(ev, WR_JOURNAL_PARKED) == 0) {
        /* "waiting for <after> of <key>" (a gate) or "behind <record>, retried, ..." */
        const char *error = str_of(last, "error");
        int gate = strncmp(error, "waiting for ", 12) == 0;
        snprintf(detail, sizeof(detail), "parked in Redis, %s since %s; sent back to %s once %s%s",
                 error[0] ? error : "waiting", when, s->queue ? s->queue : "its queue",
                 gate ? "that is done" : "that one is done or dead-lettered",
                 gate ? ", or dead-lettered (gate-timeout) when the gate's timeout runs out" : "");
        set_where(story, "parked", detail, ts, 0);
        add_next(story, "warren trace -c %s --subscription %s %s", s, s->key);
    } else if (strcmp(ev, WR_JOURNAL_REPLAYED) == 0 || strcmp(ev, WR_JOURNAL_RETURNED) == 0 ||
               strcmp(ev, WR_JOURNAL_RECEIVED) == 0) {
        snprintf(detail, sizeof(detail), "in %s, waiting for a worker (%s at %s)",
                 s->queue ? s->queue : "its queue", ev, when);
        set_where(story, "queue", detail, ts, 0);
        add_next(story, "warren trace -c %s --subscription %s %s", s, s->key);
    } else {
        snprintf(detail, sizeof(detail), "last seen as '%s' at %s", ev, when);
        set_where(story, "unknown", detail, ts, 0);
    }
}

/*
 * Insert entry E (reference stolen) into LIST in time order. Entries are
 * appended when written, and one writer may write after another that acted
 * later (`warren dlq replay` writes its entry once the copy is confirmed, and
 * a worker may have handled the copy by then): move an entry back past later
 * ones. Stable; an unreadable entry (no ts) stays where it is.
 */
static void insert_in_order(json_t *list, json_t *e)
{
    size_t at = json_array_size(list);
    int64_t ts = int_of(e, "ts", -1);
    int replayed = is_event(e, WR_JOURNAL_REPLAYED);
    while (ts >= 0 && at > 0) {
        const json_t *prev = json_array_get(list, at - 1);
        int64_t pts = int_of(prev, "ts", -1);
        /* in the same millisecond, a replay comes before what its copy did */
        if (pts > ts || (pts == ts && replayed && !is_event(prev, WR_JOURNAL_REPLAYED))) {
            at--;
        } else {
            break;
        }
    }
    json_array_insert_new(list, at, e);
}

json_t *wr_journal_story(const wr_journal_subject *s, const char *const *entries, int n,
                         const wr_journal_record *rec)
{
    json_t *story = json_object();
    json_t *list = json_array();
    json_t *versions = json_array();
    if (story == NULL || list == NULL || versions == NULL) {
        json_decref(story);
        json_decref(list);
        json_decref(versions);
        return NULL;
    }
    const char *trace = "";
    for (int i = 0; i < n; i++) {
        json_t *e = json_loads(entries[i], 0, NULL);
        if (!json_is_object(e)) {
            json_decref(e);
            e = json_object();
            json_object_set_new(e, "event", json_string("unreadable"));
            json_t *raw = clean_string(entries[i], strlen(entries[i]), 200);
            json_object_set_new(e, "raw", raw ? raw : json_null());
        }
        /* A first attempt's outcome carries its arrival: show it as an entry of its own. */
        int64_t received = int_of(e, "received_at", 0);
        if (received > 0) {
            json_t *r = json_object();
            json_object_set_new(r, "ts", json_integer((json_int_t)received));
            json_object_set_new(r, "event", json_string(WR_JOURNAL_RECEIVED));
            static const char *const copied[] = {"message_id", "type", "trace_id", "replay",
                                                 "redelivered"};
            for (size_t c = 0; c < sizeof(copied) / sizeof(copied[0]); c++) {
                json_t *v = json_object_get(e, copied[c]);
                if (v != NULL) {
                    json_object_set(r, copied[c], v);
                }
            }
            insert_in_order(list, r);
        }
        insert_in_order(list, e);
    }
    size_t idx;
    json_t *e;
    json_array_foreach(list, idx, e)
    {
        if (str_of(e, "trace_id")[0]) {
            trace = str_of(e, "trace_id");
        }
        add_unique(versions, str_of(e, "handler_version"));
    }
    json_object_set_new(story, "subscription", json_string(s->subscription));
    json_object_set_new(story, "key", clean_string(s->key, strlen(s->key), 0));
    json_object_set_new(story, "journal", clean_string(s->journal_key, strlen(s->journal_key), 0));
    json_object_set_new(story, "trace_id", trace[0] ? json_string(trace) : json_null());
    json_object_set_new(story, "handler_versions", versions);
    json_t *r = json_null();
    if (rec != NULL && rec->state != NULL) {
        r = json_object();
        json_object_set_new(r, "state", json_string(rec->state));
        if (rec->outcome != NULL) {
            json_object_set_new(r, "outcome", json_string(rec->outcome));
        }
        json_object_set_new(r, "starts", json_integer(rec->starts));
        if (rec->done_at > 0) {
            json_object_set_new(r, "done_at", json_integer((json_int_t)rec->done_at));
        }
        if (rec->lease_until > 0) {
            json_object_set_new(r, "lease_until", json_integer((json_int_t)rec->lease_until));
        }
    }
    json_object_set_new(story, "record", r);
    json_object_set_new(story, "found", json_boolean(n > 0 || (rec != NULL && rec->state != NULL)));
    json_object_set_new(story, "next", json_array());
    decide_where(story, s, list, rec);
    json_object_set_new(story, "entries", list);
    return story;
}

/* ---- printing ---------------------------------------------------------------- */

/* One line of the timeline for entry E (without time and event name) into OUT. */
static void describe(const json_t *e, char *out, size_t cap)
{
    const char *ev = str_of(e, "event");
    const char *reason = str_of(e, "reason"), *error = str_of(e, "error");
    const char *queue = str_of(e, "queue");
    long long attempt = (long long)int_of(e, "attempt", 0);
    long long delay = (long long)int_of(e, "delay_ms", -1);
    int replay = json_is_true(json_object_get(e, "replay"));
    char failed[700] = "";
    if (reason[0] || error[0]) {
        snprintf(failed, sizeof(failed), "%s%s%s", reason, reason[0] && error[0] ? ": " : "",
                 error);
    }
    if (strcmp(ev, WR_JOURNAL_RECEIVED) == 0) {
        snprintf(out, cap, "message %s%s%s%s%s", str_of(e, "message_id"),
                 str_of(e, "type")[0] ? " (" : "", str_of(e, "type"),
                 str_of(e, "type")[0] ? ")" : "",
                 replay                                            ? ", a replayed copy"
                 : json_is_true(json_object_get(e, "redelivered")) ? ", redelivered"
                                                                   : "");
    } else if (strcmp(ev, WR_JOURNAL_OK) == 0) {
        snprintf(out, cap, "attempt %lld handled ok in %.3f ms, %lld event(s) published%s", attempt,
                 json_number_value(json_object_get(e, "duration_ms")),
                 (long long)int_of(e, "published", 0), replay ? " (a replayed copy)" : "");
    } else if (strcmp(ev, WR_JOURNAL_RETRIED) == 0) {
        snprintf(out, cap, "attempt %lld failed: %s; retry in %lld ms via %s", attempt, failed,
                 delay, queue);
    } else if (strcmp(ev, WR_JOURNAL_DEAD_LETTERED) == 0) {
        snprintf(out, cap, "attempt %lld failed for good: %s; copy in %s", attempt, failed,
                 queue[0] ? queue : "the DLQ");
    } else if (strcmp(ev, WR_JOURNAL_DUPLICATE) == 0) {
        snprintf(out, cap, "%s",
                 replay ? "replayed, skipped as duplicate (already done)"
                        : "skipped as duplicate (already done)");
    } else if (strcmp(ev, WR_JOURNAL_DEFERRED) == 0) {
        snprintf(out, cap, "another worker held its key; waits %lld ms in %s", delay, queue);
    } else if (strcmp(ev, WR_JOURNAL_RETURNED) == 0) {
        snprintf(out, cap, "returned to its queue: %s", failed[0] ? failed : "not started");
    } else if (strcmp(ev, WR_JOURNAL_PARKED) == 0) {
        snprintf(out, cap, "parked in Redis: %s", error[0] ? error : "?");
    } else if (strcmp(ev, WR_JOURNAL_REPLAYED) == 0) {
        snprintf(out, cap, "sent back to %s by %s%s%s", queue[0] ? queue : "its queue",
                 str_of(e, "by")[0] ? str_of(e, "by") : "?", str_of(e, "note")[0] ? "; " : "",
                 str_of(e, "note"));
    } else if (strcmp(ev, "unreadable") == 0) {
        snprintf(out, cap, "%s", str_of(e, "raw"));
    } else {
        snprintf(out, cap, "%s", failed);
    }
}

void wr_journal_render(FILE *fp, const json_t *story)
{
    const json_t *entries = json_object_get(story, "entries");
    const json_t *rec = json_object_get(story, "record");
    const json_t *where = json_object_get(story, "where");
    fprintf(fp, "event %s in subscription %s\n", str_of(story, "key"),
            str_of(story, "subscription"));
    fprintf(fp, "  journal   %s (%zu entries)\n", str_of(story, "journal"),
            json_array_size(entries));
    const char *trace = json_string_value(json_object_get(story, "trace_id"));
    fprintf(fp, "  trace id  %s\n", trace ? trace : "-");
    fprintf(fp, "  handlers  ");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(story, "handler_versions"), i, v)
    {
        fprintf(fp, "%s%s", i > 0 ? ", " : "", json_string_value(v));
    }
    fprintf(fp, "%s\n", json_array_size(json_object_get(story, "handler_versions")) ? "" : "-");
    if (json_is_object(rec)) {
        fprintf(fp, "  record    %s%s%s, started %lld time(s)\n", str_of(rec, "state"),
                str_of(rec, "outcome")[0] ? "/" : "", str_of(rec, "outcome"),
                (long long)int_of(rec, "starts", 0));
    } else {
        fprintf(fp, "  record    none\n");
    }
    if (json_array_size(entries) > 0) {
        fprintf(fp, "\n");
    }
    json_array_foreach(entries, i, v)
    {
        char when[32], line[1200];
        wr_format_time(int_of(v, "ts", 0), when, sizeof(when));
        describe(v, line, sizeof(line));
        fprintf(fp, "  %s  %-13s  %s\n", when, str_of(v, "event"), line);
    }
    fprintf(fp, "\nwhere: %s - %s\n", str_of(where, "state"), str_of(where, "detail"));
    const json_t *next = json_object_get(story, "next");
    if (json_array_size(next) == 0) {
        fprintf(fp, "next:  nothing to do\n");
    }
    json_array_foreach(next, i, v)
    {
        fprintf(fp, "%s%s\n", i == 0 ? "next:  " : "       ", json_string_value(v));
    }
}
