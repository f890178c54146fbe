/*
 * tracecmd: `warren trace`. Reads Redis (hiredis, one pipelined round trip per
 * subscription) and hands the rest to journal.c. See tracecmd.h.
 */
#include "tracecmd.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cliopt.h"
#include "cmdcfg.h"
#include "config.h"
#include "idkey.h"
#include "journal.h"
#include "rconn.h"
#include "record.h"
#include "statusview.h"
#include "tindex.h"
#include "log.h"

const char wr_tracecmd_usage[] =
    "  trace -c FILE VALUE [--subscription NAME] [--grep] [--depth N] [--json]\n"
    "        [--status-url URL] [--scan-limit N]\n"
    "                       the journey of one event in every subscription (VALUE:\n"
    "                       its message id or idempotency key; with --grep any text of\n"
    "                       its journal: a business value, an error): timeline, trace\n"
    "                       id, handler versions, where it is now, what to run next,\n"
    "                       and the tree of the events it published (N levels, 5);\n"
    "                       a subscription that is not consuming now says why (from\n"
    "                       the sidecar's /status: http.listen, or --status-url URL);\n"
    "                       --grep and a key not found search at most N keys (1000000)\n";

/* The "ts" of journal entry TEXT (0 when it has none). */
static int64_t entry_ts(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    int64_t ts = j ? (int64_t)json_integer_value(json_object_get(j, "ts")) : 0;
    json_decref(j);
    return ts;
}

/* Why reply R (NULL when the command failed) is not what was asked for:
 * the connection's error, Redis's, or "unexpected reply". */
static const char *reply_why(const wr_rconn *c, const redisReply *r)
{
    return r == NULL                      ? wr_rconn_error(c)
           : r->type == REDIS_REPLY_ERROR ? r->str
                                          : "unexpected reply";
}

/*
 * Read the journal and the record of ID in SUB and build its story into
 * *STORY. The record of a done event keeps the journal entry of its last step
 * (record.h): it joins the journal's entries in time order. Returns 0, or -1
 * when Redis failed (ERR says why).
 */
static int read_story(wr_rconn *c, const char *config, const wr_subscription *sub, const char *id,
                      json_t **story, char *err, size_t cap)
{
    char jkey[1024], rkey[1024];
    if (wr_journal_key(sub->idem.prefix, sub->name, id, jkey, sizeof(jkey)) != 0 ||
        wr_record_key(sub->idem.prefix, sub->name, id, rkey, sizeof(rkey)) < 0) {
        snprintf(err, cap, "the id is too long");
        return -1;
    }
    redisReply *list = wr_rconn_commandf(c, "LRANGE %s 0 -1", jkey);
    redisReply *hold = NULL, *time = NULL;
    wr_record rec;
    char *entry = NULL;
    const char **entries = NULL;
    int rc = -1;
    if (list == NULL || list->type != REDIS_REPLY_ARRAY) {
        snprintf(err, cap, "Redis: %s", reply_why(c, list));
        goto out;
    }
    if (wr_rconn_read_record(c, rkey, &rec, &hold, err, cap) != 0) {
        goto out;
    }
    time = wr_rconn_commandf(c, "TIME");
    if (time == NULL || time->type != REDIS_REPLY_ARRAY || time->elements != 2) {
        snprintf(err, cap, "Redis: %s", time == NULL ? wr_rconn_error(c) : "unexpected reply");
        goto out;
    }
    entries = calloc(list->elements + 2, sizeof(*entries));
    if (entries == NULL) {
        snprintf(err, cap, "out of memory");
        goto out;
    }
    int n = 0;
    for (size_t i = 0; i < list->elements; i++) {
        if (list->element[i]->type == REDIS_REPLY_STRING) {
            entries[n++] = list->element[i]->str;
        }
    }
    if (rec.state == 'd' && rec.entry_len > 0) {
        entry = strndup(rec.entry, rec.entry_len);
        if (entry != NULL) {
            int64_t ts = entry_ts(entry);
            int at = n;
            while (at > 0 && entry_ts(entries[at - 1]) > ts) {
                at--;
            }
            memmove(&entries[at + 1], &entries[at], sizeof(*entries) * (size_t)(n - at));
            entries[at] = entry;
            n++;
        }
    }
    char state[16] = "", outcome[64] = "";
    if (rec.state != 0) {
        snprintf(state, sizeof(state), "%s", wr_record_state_name(rec.state));
        snprintf(outcome, sizeof(outcome), "%.*s", (int)rec.outcome_len,
                 rec.outcome ? rec.outcome : "");
    }
    wr_journal_record jr = {
        .state = rec.state != 0 ? state : NULL,
        .outcome = rec.state == 'd' ? outcome : NULL,
        .lease_until = rec.lease_until,
        .done_at = rec.done_at,
        .starts = rec.starts,
    };
    wr_journal_subject subj = {
        .config = config,
        .subscription = sub->name,
        .key = id,
        .journal_key = jkey,
        .queue = sub->queue,
        .dlq = sub->dlq,
        .now_ms = strtoll(time->element[0]->str, NULL, 10) * 1000 +
                  strtoll(time->element[1]->str, NULL, 10) / 1000,
    };
    *story = wr_journal_story(&subj, entries, n, &jr);
    if (*story == NULL) {
        snprintf(err, cap, "out of memory");
        goto out;
    }
    rc = 0;
out:
    free(entries);
    free(entry);
    freeReplyObject(list);
    freeReplyObject(hold);
    freeReplyObject(time);
    return rc;
}

#define MAX_NODES 200     /* stories in one tree, at most */
#define MAX_MATCHES 50    /* events one search may find */
#define SCAN_COUNT "1000" /* keys per SCAN step */

/* What one `warren trace` run works with. */
typedef struct {
    const char *config;
    const wr_config *cfg;
    const char *subname; /* --subscription, or NULL: every subscription */
    wr_rconn *c;
    int nodes;     /* stories read so far (MAX_NODES) */
    long scanned;  /* keys looked at by searches */
    long indexed;  /* trace index members read (tindex.h) */
    long scan_max; /* --scan-limit */
    char err[512];
} tracer;

static int sub_wanted(const tracer *t, const wr_subscription *sub)
{
    return t->subname == NULL || strcmp(sub->name, t->subname) == 0;
}

/* One (subscription, key) pair found by a search, deduplicated. */
typedef struct {
    int sub;
    char *key;
} found_event;

typedef struct {
    found_event h[MAX_MATCHES];
    int n;
} hits;

static void hits_add(hits *hs, int sub, const char *key, size_t len)
{
    for (int i = 0; i < hs->n; i++) {
        if (hs->h[i].sub == sub && strlen(hs->h[i].key) == len &&
            memcmp(hs->h[i].key, key, len) == 0) {
            return;
        }
    }
    if (hs->n < MAX_MATCHES) {
        hs->h[hs->n].sub = sub;
        hs->h[hs->n].key = strndup(key, len);
        hs->n += hs->h[hs->n].key != NULL;
    }
}

static void hits_free(hits *hs)
{
    for (int i = 0; i < hs->n; i++) {
        free(hs->h[i].key);
    }
    hs->n = 0;
}

/*
 * Does journal entry TEXT (N bytes) match VALUE? Exactly: its message_id is
 * VALUE, or one of its recorded fields (trace_fields) is. With GREP: VALUE occurs anywhere in it
 * (an error, a type, a trace id, a recorded field).
 */
static int entry_matches(const char *text, size_t n, const char *value, int grep)
{
    if (grep) {
        size_t vl = strlen(value);
        for (size_t i = 0; vl > 0 && i + vl <= n; i++) {
            if (memcmp(text + i, value, vl) == 0) {
                return 1;
            }
        }
        return 0;
    }
    json_t *j = json_loadb(text, n, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "message_id"));
    int hit = id != NULL && strcmp(id, value) == 0;
    /* or a business value the journal recorded (trace_fields) */
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(j, "fields"), k, v)
    {
        hit |= json_is_string(v) && strcmp(json_string_value(v), value) == 0;
    }
    json_decref(j);
    return hit;
}

/*
 * Which subscription and event key Redis key K (a journal or a record of a
 * subscription of the config) belongs to: sets *SUB and *KEY (into K) and
 * returns 1 for a journal, 2 for a record, 0 for neither.
 */
static int classify(const tracer *t, const char *k, int *sub, const char **key)
{
    int kind = 0;
    size_t best = 0;
    for (int i = 0; i < t->cfg->sub_count; i++) {
        const wr_subscription *s = &t->cfg->subs[i];
        size_t pl = strlen(s->idem.prefix), nl = strlen(s->name);
        if (!sub_wanted(t, s) || strncmp(k, s->idem.prefix, pl) != 0) {
            continue;
        }
        const char *rest = k + pl;
        int j = strncmp(rest, "journal:", 8) == 0;
        const char *at = j ? rest + 8 : rest;
        if (strncmp(at, s->name, nl) == 0 && at[nl] == ':' && pl + nl >= best) {
            best = pl + nl;
            kind = j ? 1 : 2;
            *sub = i;
            *key = at + nl + 1;
        }
    }
    return kind;
}

/*
 * 1 when subscription P of CFG keeps idempotency records and is the first of
 * those to use its key prefix: a walk over every prefix once (a SCAN, a look
 * in the trace index) takes the prefixes at these subscriptions.
 */
static int first_of_prefix(const wr_config *cfg, int p)
{
    const char *prefix = cfg->subs[p].idem.prefix;
    if (!cfg->subs[p].idem.enabled) {
        return 0;
    }
    for (int q = 0; q < p; q++) {
        if (cfg->subs[q].idem.enabled && strcmp(cfg->subs[q].idem.prefix, prefix) == 0) {
            return 0;
        }
    }
    return 1;
}

/*
 * Search Redis for events whose journal (or the entry kept in a done record)
 * matches VALUE (entry_matches), with SCAN over each idempotency prefix of the
 * subscriptions, and add them to HS. Reads a batch of keys' values in one
 * pipelined round trip. Stops after t->scan_max keys. Returns 0, or -1 when
 * Redis failed.
 */
static int search(tracer *t, const char *value, int grep, hits *hs)
{
    for (int p = 0; p < t->cfg->sub_count; p++) {
        const char *prefix = t->cfg->subs[p].idem.prefix;
        if (!first_of_prefix(t->cfg, p)) {
            continue;
        }
        char cursor[32] = "0", match[1100];
        snprintf(match, sizeof(match), "%s*", prefix);
        do {
            const char *argv[] = {"SCAN", cursor, "MATCH", match, "COUNT", SCAN_COUNT};
            redisReply *r = wr_rconn_command(t->c, 6, argv, NULL);
            if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
                snprintf(t->err, sizeof(t->err), "Redis: SCAN: %s", reply_why(t->c, r));
                freeReplyObject(r);
                return -1;
            }
            snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
            redisReply *keys = r->element[1];
            int kinds[1024], subs[1024], asked = 0;
            const char *evkeys[1024];
            for (size_t i = 0; i < keys->elements && i < 1024; i++) {
                const char *k = keys->element[i]->str;
                kinds[i] = classify(t, k, &subs[i], &evkeys[i]);
                if (kinds[i] != 0) {
                    const char *a[] = {kinds[i] == 1 ? "LRANGE" : "GET", k, "0", "-1"};
                    if (wr_rconn_append(t->c, kinds[i] == 1 ? 4 : 2, a, NULL) != 0) {
                        freeReplyObject(r);
                        snprintf(t->err, sizeof(t->err), "Redis: %s", wr_rconn_error(t->c));
                        return -1;
                    }
                    asked++;
                }
            }
            if (asked > 0 && wr_rconn_flush(t->c) != 0) {
                freeReplyObject(r);
                snprintf(t->err, sizeof(t->err), "Redis: %s", wr_rconn_error(t->c));
                return -1;
            }
            for (size_t i = 0; i < keys->elements && i < 1024; i++) {
                if (kinds[i] == 0) {
                    continue;
                }
                redisReply *v = wr_rconn_read(t->c);
                if (v == NULL) {
                    freeReplyObject(r);
                    snprintf(t->err, sizeof(t->err), "Redis: %s", wr_rconn_error(t->c));
                    return -1;
                }
                int hit = 0;
                if (grep && strstr(evkeys[i], value) != NULL) {
                    hit = 1; /* the key itself: a business value the key is made of */
                } else if (v->type == REDIS_REPLY_ARRAY) {
                    for (size_t e = 0; e < v->elements && !hit; e++) {
                        redisReply *x = v->element[e];
                        hit = x->type == REDIS_REPLY_STRING &&
                              entry_matches(x->str, x->len, value, grep);
                    }
                } else if (v->type == REDIS_REPLY_STRING) {
                    wr_record rec;
                    hit = wr_record_parse(v->str, v->len, &rec) == 0 && rec.state == 'd' &&
                          rec.entry_len > 0 && entry_matches(rec.entry, rec.entry_len, value, grep);
                }
                if (hit) {
                    hits_add(hs, subs[i], evkeys[i], strlen(evkeys[i]));
                }
                freeReplyObject(v);
            }
            t->scanned += (long)keys->elements;
            freeReplyObject(r);
        } while (strcmp(cursor, "0") != 0 && t->scanned < t->scan_max);
    }
    return 0;
}

/*
 * Look VALUE up in the trace index (tindex.h) under each idempotency prefix
 * of the wanted subscriptions, and add the events it names to HS (only
 * subscription ONLY's when ONLY >= 0): one LRANGE per prefix, whatever the
 * number of records. Returns 0, or -1 when Redis failed.
 */
static int index_lookup(tracer *t, const char *value, int only, hits *hs)
{
    for (int p = 0; p < t->cfg->sub_count; p++) {
        const char *prefix = t->cfg->subs[p].idem.prefix;
        char key[WR_TINDEX_VALUE_MAX + 1200];
        if (!first_of_prefix(t->cfg, p) || wr_tindex_key(prefix, value, key, sizeof(key)) != 0) {
            continue;
        }
        const char *argv[] = {"LRANGE", key, "0", "-1"};
        redisReply *r = wr_rconn_command(t->c, 4, argv, NULL);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            snprintf(t->err, sizeof(t->err), "Redis: LRANGE: %s", reply_why(t->c, r));
            freeReplyObject(r);
            return -1;
        }
        for (size_t e = 0; e < r->elements; e++) {
            const redisReply *m = r->element[e];
            size_t sl;
            const char *k;
            if (m->type != REDIS_REPLY_STRING || wr_tindex_member(m->str, m->len, &sl, &k) != 0) {
                continue;
            }
            for (int i = 0; i < t->cfg->sub_count; i++) {
                const wr_subscription *sub = &t->cfg->subs[i];
                if ((only < 0 || i == only) && sub_wanted(t, sub) && sub->idem.enabled &&
                    strcmp(sub->idem.prefix, prefix) == 0 && strlen(sub->name) == sl &&
                    memcmp(sub->name, m->str, sl) == 0) {
                    hits_add(hs, i, k, m->len - sl - 1);
                }
            }
        }
        t->indexed += (long)r->elements;
        freeReplyObject(r);
    }
    return 0;
}

/* The story of KEY in subscription I, with "subscription" and "key" set; NULL
 * when Redis failed (t->err says why). */
static json_t *story_of(tracer *t, int i, const char *key)
{
    json_t *story = NULL;
    t->nodes++;
    if (read_story(t->c, t->config, &t->cfg->subs[i], key, &story, t->err, sizeof(t->err)) != 0) {
        char e[sizeof(t->err)];
        snprintf(e, sizeof(e), "%s", t->err);
        snprintf(t->err, sizeof(t->err), "%s: %.400s", t->cfg->subs[i].name, e);
        return NULL;
    }
    return story;
}

static int story_found(const json_t *st)
{
    return json_is_true(json_object_get(st, "found"));
}

static int add_children(tracer *t, json_t *story, int sub, int depth);

/*
 * The stories of the event with message id ID in every subscription (an
 * event published by a handler: its id is its key wherever idempotency keys
 * by message id; elsewhere the trace index maps it to the key), each with its
 * own children down to DEPTH more levels.
 * Returns a new array (possibly empty), or NULL when Redis failed.
 */
static json_t *stories_of_id(tracer *t, const char *id, int depth)
{
    json_t *out = json_array();
    /* keyed by another field: the trace index maps the id to the key */
    hits other = {.n = 0};
    int any_other = 0;
    for (int i = 0; i < t->cfg->sub_count; i++) {
        any_other |=
            t->cfg->subs[i].idem.enabled && t->cfg->subs[i].idem.source != WR_KEY_MESSAGE_ID;
    }
    if (any_other && index_lookup(t, id, -1, &other) != 0) {
        json_decref(out);
        return NULL;
    }
    for (int i = 0; i < t->cfg->sub_count && t->nodes < MAX_NODES; i++) {
        const wr_subscription *sub = &t->cfg->subs[i];
        if (!sub->idem.enabled) {
            continue;
        }
        for (int h = -1; h < other.n && t->nodes < MAX_NODES; h++) {
            const char *key = id;
            if (h < 0 && sub->idem.source != WR_KEY_MESSAGE_ID) {
                continue; /* not its key here */
            }
            if (h >= 0) {
                if (other.h[h].sub != i || sub->idem.source == WR_KEY_MESSAGE_ID) {
                    continue;
                }
                key = other.h[h].key;
            }
            json_t *st = story_of(t, i, key);
            if (st == NULL) {
                hits_free(&other);
                json_decref(out);
                return NULL;
            }
            if (!story_found(st)) {
                json_decref(st);
                continue;
            }
            if (add_children(t, st, i, depth) != 0) {
                json_decref(st);
                hits_free(&other);
                json_decref(out);
                return NULL;
            }
            json_array_append_new(out, st);
        }
    }
    hits_free(&other);
    return out;
}

/*
 * The events a handled event published: an "ok" entry of STORY (subscription
 * SUB) says how many (published), and their ids are derived from its key
 * (idkey.h: <key>:<subscription>:<n>). Sets STORY's "children" to
 * [{"message_id", "stories": [...]}] when DEPTH > 0. Returns 0, or -1 when
 * Redis failed.
 */
static int add_children(tracer *t, json_t *story, int sub, int depth)
{
    int published = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(story, "entries"), i, e)
    {
        const char *ev = json_string_value(json_object_get(e, "event"));
        if (ev != NULL && strcmp(ev, WR_JOURNAL_OK) == 0) {
            published = (int)json_integer_value(json_object_get(e, "published"));
        }
    }
    if (depth <= 0 || published <= 0) {
        return 0;
    }
    const char *key = json_string_value(json_object_get(story, "key"));
    json_t *kids = json_array();
    for (int n = 1; n <= published && t->nodes < MAX_NODES; n++) {
        char id[WR_EVENT_ID_CAP];
        wr_idkey_event_id(key, strlen(key), t->cfg->subs[sub].name, n, id);
        json_t *sts = stories_of_id(t, id, depth - 1);
        if (sts == NULL) {
            json_decref(kids);
            return -1;
        }
        json_t *kid = json_object();
        json_object_set_new(kid, "message_id", json_string(id));
        json_object_set_new(kid, "stories", sts);
        json_array_append_new(kids, kid);
    }
    json_object_set_new(story, "children", kids);
    return 0;
}

/* One line per child story under PAD, recursively: where it is, and the
 * first command to run there. */
static void render_children(FILE *fp, const json_t *story, const char *pad)
{
    const json_t *kids = json_object_get(story, "children");
    size_t i, k;
    json_t *kid, *st;
    json_array_foreach(kids, i, kid)
    {
        int last = i + 1 == json_array_size(kids);
        const char *id = json_string_value(json_object_get(kid, "message_id"));
        const json_t *sts = json_object_get(kid, "stories");
        char sub_pad[256];
        snprintf(sub_pad, sizeof(sub_pad), "%s%s", pad, last ? "   " : "|  ");
        if (json_array_size(sts) == 0) {
            fprintf(fp, "%s%s %s: published; no subscription of this config has seen it\n", pad,
                    last ? "`-" : "|-", id);
            continue;
        }
        json_array_foreach(sts, k, st)
        {
            const json_t *w = json_object_get(st, "where");
            const json_t *next = json_object_get(st, "next");
            fprintf(fp, "%s%s %s in %s: %s - %s\n", pad, last ? "`-" : "|-", id,
                    json_string_value(json_object_get(st, "subscription")),
                    json_string_value(json_object_get(w, "state")),
                    json_string_value(json_object_get(w, "detail")));
            if (json_array_size(next) > 0) {
                fprintf(fp, "%s   next: %s\n", sub_pad, json_string_value(json_array_get(next, 0)));
            }
            render_children(fp, st, sub_pad);
        }
    }
}

/* What `warren trace` was asked. */
typedef struct {
    const char *config, *subname, *id, *status_url;
    int json, grep, depth;
    long scan_max;
} trace_args;

/* Read ARGV into A. Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, trace_args *a)
{
    enum { OPT_SUB = 256, OPT_DEPTH, OPT_SCAN, OPT_STATUS_URL, OPT_JSON, OPT_GREP };
    static const struct option longopts[] = {
        WR_CLIOPT_CONFIG,
        WR_CLIOPT_HELP,
        {"subscription", required_argument, NULL, OPT_SUB},
        {"depth", required_argument, NULL, OPT_DEPTH},
        {"scan-limit", required_argument, NULL, OPT_SCAN},
        {"status-url", required_argument, NULL, OPT_STATUS_URL},
        {"json", no_argument, NULL, OPT_JSON},
        {"grep", no_argument, NULL, OPT_GREP},
        {0}};
    wr_cliopt o = {
        .name = "trace", .usage = wr_tracecmd_usage, .shortopts = "c:h", .longopts = longopts};
    *a = (trace_args){.depth = 5, .scan_max = 1000000};
    int c;
    long v;
    while ((c = wr_cliopt_next(&o, argc, argv)) >= 0) {
        if (c == OPT_SUB) {
            a->subname = optarg;
        } else if (c == OPT_STATUS_URL) {
            a->status_url = optarg;
        } else if (c == OPT_JSON) {
            a->json = 1;
        } else if (c == OPT_GREP) {
            a->grep = 1;
        } else if (wr_cliopt_count(optarg, 0, LONG_MAX, &v) != 0) {
            return wr_cliopt_usage(&o, "not a count: '%s'", optarg);
        } else if (c == OPT_DEPTH) {
            a->depth = (int)(v > 20 ? 20 : v);
        } else {
            a->scan_max = v;
        }
    }
    if (c == WR_CLIOPT_EXIT) {
        return o.status;
    }
    a->config = o.config;
    if (optind < argc && argv[optind][0] != '\0') {
        a->id = argv[optind++];
    }
    if (optind < argc) {
        return wr_cliopt_usage(&o, "unexpected argument '%s'", argv[optind]);
    }
    if (a->config == NULL || a->id == NULL) {
        return wr_cliopt_usage(&o, "trace needs -c FILE and an event ID");
    }
    return -1;
}

/* Find the events ID names into HS: as a key in each subscription, through
 * the trace index, then (with --grep, or when nothing was found) by searching
 * the journals and records. 0, or -1 with T's error. */
static int find_events(tracer *t, const char *id, int grep, hits *hs)
{
    const wr_config *cfg = t->cfg;
    /* 1. ID as an event key in each subscription (the message id by default) */
    for (int i = 0; i < cfg->sub_count && !grep; i++) {
        if (!sub_wanted(t, &cfg->subs[i])) {
            continue;
        }
        json_t *story = story_of(t, i, id);
        if (story == NULL) {
            return -1;
        }
        if (story_found(story)) {
            hits_add(hs, i, id, strlen(id));
        }
        json_decref(story);
    }
    /* 2. a message id or a recorded body value: the trace index names the
     * events (tindex.h) */
    if (!grep && index_lookup(t, id, -1, hs) != 0) {
        return -1;
    }
    /* 3. --grep, or found nowhere yet: search the journals and records one by
     * one (an event journaled before the index existed, or whose index write
     * was lost: it is best effort) */
    if (grep || hs->n == 0) {
        if (search(t, id, grep, hs) != 0) {
            return -1;
        }
        if (!grep && hs->n > 0) {
            fprintf(stderr,
                    "warren trace: '%s' is not in the trace index: found by searching %ld "
                    "key(s)\n",
                    id, t->scanned);
        }
    }
    return 0;
}

/* The story of each event found, with the tree of what it published, into
 * STORIES. 0, or -1 with T's error. */
static int tell_stories(tracer *t, const trace_args *a, const hits *hs, json_t *stories)
{
    for (int h = 0; h < hs->n; h++) {
        json_t *story = story_of(t, hs->h[h].sub, hs->h[h].key);
        if (story == NULL || add_children(t, story, hs->h[h].sub, a->depth) != 0) {
            json_decref(story);
            return -1;
        }
        json_object_set_new(story, "matched_by",
                            json_string(a->grep                            ? "grep"
                                        : strcmp(hs->h[h].key, a->id) == 0 ? "key"
                                                                           : "message_id"));
        json_array_append_new(stories, story);
    }
    /* --subscription names one: say what it knows even when nothing */
    if (hs->n == 0 && a->subname != NULL && !a->grep) {
        for (int i = 0; i < t->cfg->sub_count; i++) {
            if (sub_wanted(t, &t->cfg->subs[i])) {
                json_t *story = story_of(t, i, a->id);
                if (story != NULL) {
                    json_array_append_new(stories, story);
                }
            }
        }
    }
    return 0;
}

/* What keeps each subscription from consuming now, as the running sidecar
 * says (best effort: it may not run here, or listen on no fixed port):
 * subscription -> [why...]; each story of a paused one gets its reasons. */
static json_t *paused_now(const trace_args *a, json_t *stories)
{
    char serr[512];
    json_t *status = wr_status_fetch(a->config, a->status_url, serr, sizeof(serr));
    json_t *paused = json_object();
    size_t k;
    json_t *st;
    json_array_foreach(json_object_get(status, "subscriptions"), k, st)
    {
        const char *state = json_string_value(json_object_get(st, "state"));
        if (state != NULL && strcmp(state, "paused") == 0) {
            json_object_set(paused, json_string_value(json_object_get(st, "name")),
                            json_object_get(st, "why"));
        }
    }
    json_decref(status);
    json_array_foreach(stories, k, st)
    {
        json_t *why =
            json_object_get(paused, json_string_value(json_object_get(st, "subscription")));
        if (why != NULL) {
            json_object_set(st, "consumption_paused", why);
        }
    }
    return paused;
}

static void print_stories(json_t *stories)
{
    size_t k;
    json_t *st;
    json_array_foreach(stories, k, st)
    {
        if (k > 0) {
            fputc('\n', stdout);
        }
        wr_journal_render(stdout, st);
        size_t w;
        json_t *why;
        json_array_foreach(json_object_get(st, "consumption_paused"), w, why)
        {
            printf("note:  %s\n", json_string_value(why));
        }
        if (json_array_size(json_object_get(st, "children")) > 0) {
            fprintf(stdout, "published:\n");
            render_children(stdout, st, "  ");
        }
    }
}

/* Nothing found: say where warren looked, and which queues it does not read now. */
static void say_not_found(const trace_args *a, const tracer *t, json_t *paused)
{
    fprintf(stderr,
            "warren trace: '%s' not found in %s%s: no journal and no idempotency record "
            "has it as %s (journals are kept %lld h; subscriptions without idempotency "
            "keep none; %ld key(s) searched)\n",
            a->id, a->subname ? "subscription " : "any subscription", a->subname ? a->subname : "",
            a->grep ? "text" : "message id or key", (long long)(t->cfg->journal_ttl_ms / 3600000),
            t->scanned);
    /* a message in a paused subscription's queue has no journal until it is taken */
    const char *name;
    json_t *why;
    json_object_foreach(paused, name, why)
    {
        fprintf(stderr,
                "warren trace: note: %s is not consuming (%s): an event waiting in "
                "its queue has no journal yet\n",
                name, json_string_value(json_array_get(why, 0)));
    }
}

int wr_tracecmd_main(int argc, char **argv)
{
    trace_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) {
        return rc;
    }
    wr_config *cfg = wr_cmd_load(a.config, NULL);
    if (cfg == NULL) {
        return 2;
    }
    rc = 1;
    tracer t = {.config = a.config, .cfg = cfg, .subname = a.subname, .scan_max = a.scan_max};
    json_t *stories = json_array();
    hits hs = {.n = 0};
    if (a.subname != NULL && wr_cmd_subscription(cfg, a.subname, "warren trace") == NULL) {
        rc = 2;
        goto out;
    }
    t.c = wr_rconn_create(&cfg->redis, cfg->redis_timeout_ms, NULL, 0, t.err, sizeof(t.err));
    if (t.c == NULL) {
        fprintf(stderr, "warren trace: cannot connect to %s: %s\n", cfg->redis.redacted, t.err);
        goto out;
    }
    if (find_events(&t, a.id, a.grep, &hs) != 0 || tell_stories(&t, &a, &hs, stories) != 0) {
        fprintf(stderr, "warren trace: %s\n", t.err);
        goto out;
    }
    int found = hs.n;
    json_t *paused = paused_now(&a, stories);
    if (a.json) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(a.id));
        json_object_set_new(o, "found", json_boolean(found > 0));
        json_object_set_new(o, "stories", json_incref(stories));
        json_object_set(o, "paused", paused);
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(o);
    } else if (found > 0) {
        print_stories(stories);
    }
    if (found == 0) {
        say_not_found(&a, &t, paused);
    } else if (hs.n >= MAX_MATCHES) {
        fprintf(stderr, "warren trace: the first %d matches shown\n", MAX_MATCHES);
    }
    json_decref(paused);
    rc = found > 0 ? 0 : 1;
out:
    fflush(stdout);
    hits_free(&hs);
    wr_rconn_destroy(t.c);
    json_decref(stories);
    wr_config_free(cfg);
    return rc;
}
