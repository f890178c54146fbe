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

/* Connect, AUTH and SELECT as the config says. Returns the context, or NULL with ERR. */
static redisContext *connect_redis(const wr_config *cfg, char *err, size_t cap)
{
    struct timeval tv = {(time_t)(cfg->redis_timeout_ms / 1000),
                         (suseconds_t)(cfg->redis_timeout_ms % 1000 * 1000)};
    redisContext *c = redisConnectWithTimeout(cfg->redis.host, cfg->redis.port, tv);
    if (c == NULL || c->err) {
        snprintf(err, cap, "cannot connect to %s: %s", cfg->redis.redacted,
                 c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    redisReply *r = NULL;
    if (cfg->redis.password != NULL) {
        r = cfg->redis.user != NULL
                ? redisCommand(c, "AUTH %s %s", cfg->redis.user, cfg->redis.password)
                : redisCommand(c, "AUTH %s", cfg->redis.password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            snprintf(err, cap, "%s: AUTH failed", cfg->redis.redacted);
            freeReplyObject(r);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    r = redisCommand(c, "SELECT %d", cfg->redis.db);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        snprintf(err, cap, "%s: SELECT failed", cfg->redis.redacted);
        freeReplyObject(r);
        redisFree(c);
        return NULL;
    }
    freeReplyObject(r);
    return c;
}

/* The value of FIELD in an HGETALL reply, or NULL. */
static const char *hash_get(const redisReply *h, const char *field)
{
    for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2) {
        if (h->element[i]->type == REDIS_REPLY_STRING && strcmp(h->element[i]->str, field) == 0 &&
            h->element[i + 1]->type == REDIS_REPLY_STRING) {
            return h->element[i + 1]->str;
        }
    }
    return NULL;
}

static int64_t hash_int(const redisReply *h, const char *field)
{
    const char *v = hash_get(h, field);
    return v != NULL ? strtoll(v, NULL, 10) : 0;
}

/*
 * Read the journal and the record of ID in SUB and build its story into
 * *STORY. Returns 0, or -1 when Redis failed (ERR says why).
 */
static int read_story(redisContext *c, const char *config, const wr_subscription *sub,
                      const char *id, json_t **story, char *err, size_t cap)
{
    char jkey[1024], rkey[1024];
    if (wr_journal_key(sub->idem.prefix, sub->name, id, jkey, sizeof(jkey)) != 0) {
        snprintf(err, cap, "the id is too long");
        return -1;
    }
    snprintf(rkey, sizeof(rkey), "%s%s:%s", sub->idem.prefix, sub->name, id);
    redisAppendCommand(c, "LRANGE %s 0 -1", jkey);
    redisAppendCommand(c, "HGETALL %s", rkey);
    redisAppendCommand(c, "TIME");
    redisReply *rep[3] = {NULL, NULL, NULL};
    int rc = 0;
    for (int i = 0; i < 3; i++) {
        if (redisGetReply(c, (void **)&rep[i]) != REDIS_OK || rep[i] == NULL) {
            snprintf(err, cap, "Redis: %s", c->errstr[0] ? c->errstr : "no reply");
            rc = -1;
            break;
        }
        if (rep[i]->type == REDIS_REPLY_ERROR) {
            snprintf(err, cap, "Redis: %s", rep[i]->str);
            rc = -1;
        }
    }
    if (rc == 0 && (rep[0]->type != REDIS_REPLY_ARRAY || rep[1]->type != REDIS_REPLY_ARRAY ||
                    rep[2]->type != REDIS_REPLY_ARRAY || rep[2]->elements != 2)) {
        snprintf(err, cap, "Redis: unexpected reply");
        rc = -1;
    }
    if (rc == 0) {
        const char **entries = calloc(rep[0]->elements + 1, sizeof(*entries));
        int n = 0;
        for (size_t i = 0; entries != NULL && i < rep[0]->elements; i++) {
            if (rep[0]->element[i]->type == REDIS_REPLY_STRING) {
                entries[n++] = rep[0]->element[i]->str;
            }
        }
        wr_journal_record rec = {
            .state = hash_get(rep[1], "state"),
            .outcome = hash_get(rep[1], "outcome"),
            .lease_until = hash_int(rep[1], "lease_until"),
            .done_at = hash_int(rep[1], "done_at"),
            .starts = (int)hash_int(rep[1], "starts"),
        };
        wr_journal_subject s = {
            .config = config,
            .subscription = sub->name,
            .key = id,
            .journal_key = jkey,
            .queue = sub->queue,
            .dlq = sub->dlq,
            .now_ms = strtoll(rep[2]->element[0]->str, NULL, 10) * 1000 +
                      strtoll(rep[2]->element[1]->str, NULL, 10) / 1000,
        };
        *story = entries != NULL ? wr_journal_story(&s, entries, n, &rec) : NULL;
        free(entries);
        if (*story == NULL) {
            snprintf(err, cap, "out of memory");
            rc = -1;
        }
    }
    for (int i = 0; i < 3; i++) {
        freeReplyObject(rep[i]);
    }
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
    redisContext *c = NULL;
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
    c = connect_redis(cfg, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "warren trace: %s\n", err);
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
    if (c != NULL) {
        redisFree(c);
    }
    json_decref(stories);
    wr_config_free(cfg);
    return rc;
}
