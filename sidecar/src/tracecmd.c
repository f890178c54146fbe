/*
 * tracecmd: `warren trace`. Reads Redis (hiredis, one pipelined round trip per
 * subscription) and hands the rest to journal.c. See tracecmd.h.
 */
#include "tracecmd.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "journal.h"
#include "rconn.h"
#include "record.h"
#include "log.h"

const char wr_tracecmd_usage[] =
    "  trace -c FILE ID [--subscription NAME] [--json]\n"
    "                       the journey of one event (ID: its idempotency key, the\n"
    "                       message id by default): timeline, trace id, handler\n"
    "                       versions, where it is now and what to run next\n";

static int usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "warren trace: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\nusage:\n%s", wr_tracecmd_usage);
    return 2;
}

/* The "ts" of journal entry TEXT (0 when it has none). */
static int64_t entry_ts(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    int64_t ts = j ? (int64_t)json_integer_value(json_object_get(j, "ts")) : 0;
    json_decref(j);
    return ts;
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
        snprintf(err, cap, "Redis: %s",
                 list == NULL                      ? wr_rconn_error(c)
                 : list->type == REDIS_REPLY_ERROR ? list->str
                                                   : "unexpected reply");
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

int wr_tracecmd_main(int argc, char **argv)
{
    const char *config = NULL, *subname = NULL, *id = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 ||
            strcmp(a, "--subscription") == 0) {
            if (i + 1 >= argc) {
                return usage("%s needs a value", a);
            }
            if (strcmp(a, "--subscription") == 0) {
                subname = argv[++i];
            } else {
                config = argv[++i];
            }
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("usage:\n%s", wr_tracecmd_usage);
            return 0;
        } else if (id == NULL && a[0] != '-' && a[0] != '\0') {
            id = a;
        } else {
            return usage("unexpected argument '%s'", a);
        }
    }
    if (config == NULL || id == NULL) {
        return usage("%s", "trace needs -c FILE and an event ID");
    }
    wr_config_errors errs = {0};
    wr_config *cfg = wr_config_load(config, &errs);
    if (cfg == NULL) {
        for (int i = 0; i < errs.count; i++) {
            fprintf(stderr, "%s\n", errs.lines[i]);
        }
        wr_config_errors_free(&errs);
        return 2;
    }
    int rc = 1;
    char err[512];
    json_t *stories = json_array();
    wr_rconn *c = NULL;
    int matched = 0;
    for (int i = 0; i < cfg->sub_count; i++) {
        matched += subname == NULL || strcmp(cfg->subs[i].name, subname) == 0;
    }
    if (matched == 0) {
        fprintf(stderr, "warren trace: no subscription '%s' in %s (have:", subname, cfg->path);
        for (int i = 0; i < cfg->sub_count; i++) {
            fprintf(stderr, " %s", cfg->subs[i].name);
        }
        fprintf(stderr, ")\n");
        rc = 2;
        goto out;
    }
    c = wr_rconn_create(&cfg->redis, cfg->redis_timeout_ms, NULL, 0, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "warren trace: cannot connect to %s: %s\n", cfg->redis.redacted, err);
        goto out;
    }
    for (int i = 0; i < cfg->sub_count; i++) {
        const wr_subscription *sub = &cfg->subs[i];
        if (subname != NULL && strcmp(sub->name, subname) != 0) {
            continue;
        }
        json_t *story = NULL;
        if (read_story(c, config, sub, id, &story, err, sizeof(err)) != 0) {
            fprintf(stderr, "warren trace: %s: %s\n", sub->name, err);
            goto out;
        }
        /* a subscription that never saw the event is left out, unless it was asked for */
        if (json_is_true(json_object_get(story, "found")) || subname != NULL) {
            json_array_append_new(stories, story);
        } else {
            json_decref(story);
        }
    }
    int found = 0;
    size_t k;
    json_t *st;
    json_array_foreach(stories, k, st)
    {
        found += json_is_true(json_object_get(st, "found"));
    }
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(id));
        json_object_set_new(o, "found", json_boolean(found > 0));
        json_object_set_new(o, "stories", json_incref(stories));
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(o);
    } else if (found > 0) {
        json_array_foreach(stories, k, st)
        {
            if (json_is_true(json_object_get(st, "found"))) {
                if (k > 0) {
                    fputc('\n', stdout);
                }
                wr_journal_render(stdout, st);
            }
        }
    }
    if (found == 0) {
        fprintf(stderr,
                "warren trace: '%s' not found in %s%s: no journal and no idempotency record "
                "(ID is the idempotency key; journals are kept %lld h; subscriptions "
                "without idempotency keep none)\n",
                id, subname ? "subscription " : "any subscription", subname ? subname : "",
                (long long)(cfg->journal_ttl_ms / 3600000));
    }
    rc = found > 0 ? 0 : 1;
out:
    fflush(stdout);
    wr_rconn_destroy(c);
    json_decref(stories);
    wr_config_free(cfg);
    return rc;
}
