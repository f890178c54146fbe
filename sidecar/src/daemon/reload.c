/*
 * reload: build, validate, swap. See reload.h.
 */
#define _DEFAULT_SOURCE /* DT_* and d_type are not POSIX */
#include "reload.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contracts.h"
#include "log.h"
#include "lua_rt.h"
#include "luadeps.h"
#include "watch.h"

#define RESCAN_MS 10000 /* the backstop re-stat, for events the kernel never sent */

struct wr_reloader {
    const wr_config *cfg; /* the running config: restart-only values come from it */
    wr_live *live;        /* one per subscription */
    wr_watch *watch;
    double next_rescan;
    atomic_long applied, refused; /* read by the metrics thread */
};

/* ---- snapshots ------------------------------------------------------------------- */

void wr_retry_policy_copy(wr_retry_policy *dst, int64_t *delays, const wr_retry_policy *src)
{
    *dst = *src;
    dst->delays_ms = NULL;
    if (src->delays_ms != NULL && src->delay_count > 0) {
        int n = src->delay_count < WR_LIVE_MAX_DELAYS ? src->delay_count : WR_LIVE_MAX_DELAYS;
        memcpy(delays, src->delays_ms, (size_t)n * sizeof(*delays));
        dst->delays_ms = delays;
        dst->delay_count = n;
    }
}

static int same_retry(const wr_retry_policy *a, const wr_retry_policy *b)
{
    if (a->max_attempts != b->max_attempts || (a->delays_ms == NULL) != (b->delays_ms == NULL) ||
        a->initial_ms != b->initial_ms || a->multiplier != b->multiplier ||
        a->max_ms != b->max_ms || a->jitter != b->jitter) {
        return 0;
    }
    if (a->delays_ms == NULL) {
        return 1;
    }
    return a->delay_count == b->delay_count &&
           memcmp(a->delays_ms, b->delays_ms, (size_t)a->delay_count * sizeof(int64_t)) == 0;
}

int wr_live_snapshot_take(wr_live *live, wr_live_snapshot *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&live->lock);
    out->gen = atomic_load(&live->gen);
    out->source = malloc(live->source_len + 1);
    if (out->source != NULL) {
        memcpy(out->source, live->source, live->source_len);
        out->source[live->source_len] = '\0';
        out->source_len = live->source_len;
    }
    memcpy(out->version, live->version, sizeof(out->version));
    out->timeout_ms = live->timeout_ms;
    wr_retry_policy_copy(&out->retry, out->delays, &live->retry);
    out->contracts = wr_contracts_ref(live->contracts);
    pthread_mutex_unlock(&live->lock);
    return out->source != NULL ? 0 : -1;
}

void wr_live_snapshot_free(wr_live_snapshot *s)
{
    free(s->source);
    s->source = NULL;
    wr_contracts_free(s->contracts);
    s->contracts = NULL;
}

struct wr_contracts *wr_live_contracts(wr_live *live)
{
    pthread_mutex_lock(&live->lock);
    wr_contracts *c = wr_contracts_ref(live->contracts);
    pthread_mutex_unlock(&live->lock);
    return c;
}

/* ---- reading handlers ------------------------------------------------------------- */

/* A handler's source (lua_rt.h: regular files only, with a size limit), or
 * NULL with the reason in ERR. */
static char *slurp(const char *path, size_t *len, char *err, size_t errcap)
{
    return wr_lua_read_source(path, "handler", len, err, errcap);
}

#define MAX_DEPS 64

/* One file a version covers: its path relative to the handler's directory and
 * the FNV-1a of its content ("" content hash 0 when unreadable). */
typedef struct {
    char rel[WR_LUADEPS_NAME_MAX + 8];
    uint64_t hash;
    int missing;
} dep_file;

static int cmp_deps(const void *a, const void *b)
{
    return strcmp(((const dep_file *)a)->rel, ((const dep_file *)b)->rel);
}

static int has_dep(const dep_file *d, int n, const char *rel)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(d[i].rel, rel) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Read DIR/REL into D[*N] (its hash, or missing) and, with NAMES, scan it for
 * more requires (appended to NAMES, *NNAMES of them). */
static void add_dep(const char *dir, const char *rel, dep_file *d, int *n,
                    char (*names)[WR_LUADEPS_NAME_MAX], int *nnames, int *dynamic)
{
    if (*n >= MAX_DEPS || has_dep(d, *n, rel)) {
        return;
    }
    dep_file *f = &d[(*n)++];
    snprintf(f->rel, sizeof(f->rel), "%s", rel);
    char p[4400];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    size_t ml;
    char why[256];
    char *m = wr_lua_read_source(p, "module", &ml, why, sizeof(why));
    f->missing = m == NULL;
    f->hash = m ? wr_fnv1a(WR_FNV1A_INIT, m, ml) : 0;
    if (m != NULL && names != NULL) {
        *nnames += wr_luadeps_scan(m, ml, names + *nnames, MAX_DEPS - *nnames, dynamic);
    }
    free(m);
}

/*
 * The version of a handler: FNV-1a over its source, then over the name and
 * content hash of every module it requires (luadeps.h: `require "x"` in its
 * text, and in those modules' text, transitively), in name order. 12 hex
 * digits. Editing one handler changes its own version, and the versions of
 * handlers that require what changed, not those of every handler that shares
 * the directory. A require of a computed name (`require(mod)`) could load
 * any module: then every other .lua file in the directory counts, as before.
 * Files that are not regular or too large (lua_rt.h) count as missing: a FIFO
 * named x.lua is neither waited for nor read.
 *
 * FILES, when not NULL, gets a malloc'd manifest of what the version covers,
 * one "rel-path hash" per line, the handler first (its base name), for the
 * reload log to name the files that changed.
 */
static void version_of(const char *path, const char *src, size_t len, char out[17], char **files)
{
    uint64_t h = wr_fnv1a(WR_FNV1A_INIT, src, len);
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    const char *self = slash ? path + (slash - dir) + 1 : path;
    if (slash != NULL) {
        *slash = '\0';
    } else {
        snprintf(dir, sizeof(dir), ".");
    }
    static __thread char names[MAX_DEPS][WR_LUADEPS_NAME_MAX];
    static __thread dep_file deps[MAX_DEPS];
    int dynamic = 0, nnames = wr_luadeps_scan(src, len, names, MAX_DEPS, &dynamic), n = 0;
    for (int i = 0; i < nnames && !dynamic; i++) {
        char rel[WR_LUADEPS_NAME_MAX + 8];
        if (wr_luadeps_path(names[i], rel, sizeof(rel)) == 0) {
            add_dep(dir, rel, deps, &n, names, &nnames, &dynamic);
        }
    }
    if (dynamic) {
        /* any module could be loaded: every .lua file beside it */
        n = 0;
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d != NULL && n < MAX_DEPS && (de = readdir(d)) != NULL) {
            size_t l = strlen(de->d_name);
            if (l > 4 && l < WR_LUADEPS_NAME_MAX && strcmp(de->d_name + l - 4, ".lua") == 0 &&
                de->d_name[0] != '.' && strcmp(de->d_name, self) != 0) {
                add_dep(dir, de->d_name, deps, &n, NULL, NULL, NULL);
            }
        }
        if (d != NULL) {
            closedir(d);
        }
    }
    qsort(deps, (size_t)n, sizeof(deps[0]), cmp_deps);
    for (int i = 0; i < n; i++) {
        if (!deps[i].missing) {
            h = wr_fnv1a(h, deps[i].rel, strlen(deps[i].rel) + 1);
            h = wr_fnv1a(h, &deps[i].hash, sizeof(deps[i].hash));
        }
    }
    snprintf(out, 17, "%012llx", (unsigned long long)(h & 0xFFFFFFFFFFFFULL));
    if (files != NULL) {
        char *m = NULL;
        size_t ml = 0;
        FILE *fp = open_memstream(&m, &ml);
        if (fp != NULL) {
            fprintf(fp, "%s %016llx\n", self,
                    (unsigned long long)wr_fnv1a(WR_FNV1A_INIT, src, len));
            for (int i = 0; i < n; i++) {
                if (deps[i].missing) {
                    fprintf(fp, "%s missing\n", deps[i].rel);
                } else {
                    fprintf(fp, "%s %016llx\n", deps[i].rel, (unsigned long long)deps[i].hash);
                }
            }
            fclose(fp);
        }
        *files = m;
    }
}

/* Is the line L (up to its newline) in manifest M? With NAME_ONLY, is a line
 * for the same file there? */
static int in_manifest(const char *m, const char *l, int name_only)
{
    size_t n = name_only ? strcspn(l, " \n") : strcspn(l, "\n");
    for (; m != NULL && *m; m = strchr(m, '\n') ? strchr(m, '\n') + 1 : NULL) {
        if (strncmp(m, l, n) == 0 && (name_only ? m[n] == ' ' : m[n] == '\n' || !m[n])) {
            return 1;
        }
    }
    return 0;
}

/* The files that differ between manifests OLD and NEW (version_of's FILES):
 * changed or added, then removed; comma-separated into OUT. */
static void changed_files(const char *old, const char *new, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        const char *a = pass == 0 ? new : old, *b = pass == 0 ? old : new;
        for (const char *l = a; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
            if (pass == 0 ? in_manifest(b, l, 0) : in_manifest(b, l, 1)) {
                continue;
            }
            int nl = (int)strcspn(l, " \n");
            int w = snprintf(out + n, cap - n, "%s%.*s", n ? ", " : "", nl, l);
            if (w < 0 || (size_t)w >= cap - n) {
                break;
            }
            n += (size_t)w;
        }
    }
}

int wr_handler_version(const char *path, char out[17])
{
    size_t len;
    char why[256];
    char *src = slurp(path, &len, why, sizeof(why));
    if (src == NULL) {
        return -1;
    }
    version_of(path, src, len, out, NULL);
    free(src);
    return 0;
}

/* ---- set-up ------------------------------------------------------------------------ */

#define MAX_CONTRACT_FILES 64 /* per subscription: its contracts file and upcasters */

/*
 * Watch the files a reload reads: every handler, the config file, and every
 * subscription's contracts file and upcasters (the set changes when a
 * reloaded contracts file names other upcasters: then the watch is made
 * anew). Returns the watch, or NULL with ERR.
 */
static wr_watch *watch_files(wr_reloader *r, char *err, size_t errcap)
{
    const wr_config *cfg = r->cfg;
    size_t cap = (size_t)cfg->sub_count * (MAX_CONTRACT_FILES + 1) + 1;
    const char **paths = calloc(cap, sizeof(*paths));
    wr_contracts **held = calloc((size_t)cfg->sub_count + 1, sizeof(*held));
    int n = 0;
    if (paths == NULL || held == NULL) {
        free(paths);
        free(held);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    for (int i = 0; i < cfg->sub_count; i++) {
        paths[n++] = cfg->subs[i].handler;
        if ((held[i] = wr_live_contracts(&r->live[i])) != NULL) {
            n += wr_contracts_files(held[i], paths + n, MAX_CONTRACT_FILES);
        }
    }
    paths[n++] = cfg->path;
    wr_watch *w = wr_watch_create(paths, n, err, errcap);
    for (int i = 0; i < cfg->sub_count; i++) {
        wr_contracts_free(held[i]);
    }
    free(held);
    free(paths);
    return w;
}

/* Log that subscription S runs contracts C (at start, and after a reload). */
static void log_contracts(const char *msg, const wr_subscription *s, const wr_contracts *c,
                          const char *previous, const char *why)
{
    wr_logline line;
    wr_log_begin(&line, WR_LOG_INFO, msg);
    wr_log_str(&line, "subscription", s->name);
    wr_log_str(&line, "file", wr_contracts_path(c));
    wr_log_str(&line, "contracts_version", wr_contracts_digest(c));
    if (previous != NULL) {
        wr_log_str(&line, "previous_version", previous);
    }
    wr_log_int(&line, "event_types", wr_contracts_count(c));
    if (why != NULL) {
        wr_log_str(&line, "trigger", why);
    }
    wr_log_end(&line);
}

wr_reloader *wr_reloader_create(const wr_config *cfg, char *err, size_t errcap)
{
    wr_reloader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    r->cfg = cfg;
    r->live = calloc((size_t)cfg->sub_count, sizeof(*r->live));
    if (r->live == NULL) {
        snprintf(err, errcap, "out of memory");
        goto fail;
    }
    for (int i = 0; i < cfg->sub_count; i++) {
        const wr_subscription *s = &cfg->subs[i];
        wr_live *l = &r->live[i];
        pthread_mutex_init(&l->lock, NULL);
        atomic_init(&l->gen, 1);
        l->source = slurp(s->handler, &l->source_len, err, errcap);
        if (l->source == NULL) {
            goto fail;
        }
        version_of(s->handler, l->source, l->source_len, l->version, &l->files);
        l->timeout_ms = s->handler_timeout_ms;
        wr_retry_policy_copy(&l->retry, l->delays, &s->retry);
        if (s->contracts.file != NULL &&
            (l->contracts = wr_contracts_load(s->contracts.file, err, errcap)) == NULL) {
            goto fail;
        }
        if (l->contracts != NULL) {
            log_contracts("contracts loaded", s, l->contracts, NULL, NULL);
        }
    }
    r->watch = watch_files(r, err, errcap);
    if (r->watch == NULL) {
        /* no inotify (a restricted container): SIGHUP and the periodic re-stat still work */
        wr_logf(WR_LOG_WARN, "file watching unavailable (%s): reload with SIGHUP", err);
    }
    r->next_rescan = wr_mono_ms() + RESCAN_MS;
    return r;

fail:
    wr_reloader_destroy(r);
    return NULL;
}

void wr_reloader_destroy(wr_reloader *r)
{
    if (r == NULL) {
        return;
    }
    for (int i = 0; r->live != NULL && i < r->cfg->sub_count; i++) {
        free(r->live[i].source);
        wr_contracts_free(r->live[i].contracts);
        free(r->live[i].files);
        pthread_mutex_destroy(&r->live[i].lock);
    }
    free(r->live);
    wr_watch_destroy(r->watch);
    free(r);
}

wr_live *wr_reloader_live(wr_reloader *r, int i)
{
    return &r->live[i];
}

int wr_reloader_fd(const wr_reloader *r)
{
    return r->watch ? wr_watch_fd(r->watch) : -1;
}

void wr_live_version(wr_live *live, char out[17])
{
    pthread_mutex_lock(&live->lock);
    memcpy(out, live->version, 17);
    pthread_mutex_unlock(&live->lock);
}

void wr_reloader_counts(const wr_reloader *r, long *applied, long *refused)
{
    *applied = atomic_load(&r->applied);
    *refused = atomic_load(&r->refused);
}

/* ---- reloading ----------------------------------------------------------------------- */

static void add(char *what, size_t cap, const char *key)
{
    size_t n = strlen(what);
    snprintf(what + n, cap - n, "%s%s", n ? ", " : "", key);
}

static int str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* Name the keys whose change needs a restart into WHAT; returns how many. */
static int restart_diff(const wr_config *a, const wr_config *b, char *what, size_t cap)
{
    int n = 0;
    what[0] = '\0';
#define DIFF(cond, key)                                                                            \
    do {                                                                                           \
        if (cond) {                                                                                \
            add(what, cap, key);                                                                   \
            n++;                                                                                   \
        }                                                                                          \
    } while (0)
    DIFF(!str_eq(a->amqp.url, b->amqp.url), "amqp.url");
    DIFF(a->amqp_heartbeat_ms != b->amqp_heartbeat_ms, "amqp.heartbeat");
    DIFF(a->amqp_connect_timeout_ms != b->amqp_connect_timeout_ms, "amqp.connect_timeout");
    DIFF(a->amqp_reconnect_max_ms != b->amqp_reconnect_max_ms, "amqp.reconnect_max");
    DIFF(!str_eq(a->amqp_tls.ca, b->amqp_tls.ca), "amqp.tls.ca");
    DIFF(!str_eq(a->amqp_tls.cert, b->amqp_tls.cert), "amqp.tls.cert");
    DIFF(!str_eq(a->amqp_tls.key, b->amqp_tls.key), "amqp.tls.key");
    int urls_same = a->amqp_url_text_count == b->amqp_url_text_count;
    for (int k = 0; urls_same && k < a->amqp_url_text_count; k++) {
        urls_same = str_eq(a->amqp_url_texts[k], b->amqp_url_texts[k]);
    }
    DIFF(!urls_same, "amqp.urls");
    DIFF(!str_eq(a->redis.url, b->redis.url), "redis.url");
    DIFF(a->redis_timeout_ms != b->redis_timeout_ms, "redis.timeout");
    DIFF(a->redis_reconnect_max_ms != b->redis_reconnect_max_ms, "redis.reconnect_max");
    int sentinels_same = a->redis_sentinel_count == b->redis_sentinel_count;
    for (int k = 0; sentinels_same && k < a->redis_sentinel_count; k++) {
        sentinels_same = str_eq(a->redis_sentinels[k], b->redis_sentinels[k]);
    }
    DIFF(!sentinels_same, "redis.sentinels");
    DIFF(!str_eq(a->redis_master_name, b->redis_master_name), "redis.master_name");
    DIFF(a->redis_min_replicas != b->redis_min_replicas, "redis.min_replicas_acked");
    DIFF(a->redis_min_replicas_timeout_ms != b->redis_min_replicas_timeout_ms,
         "redis.min_replicas_timeout");
    DIFF(a->shutdown_grace_ms != b->shutdown_grace_ms, "shutdown.grace");
    DIFF(a->sub_count != b->sub_count, "subscriptions (added or removed)");
    for (int i = 0; i < a->sub_count && i < b->sub_count; i++) {
        const wr_subscription *x = &a->subs[i], *y = &b->subs[i];
        char key[300];
#define SUB(cond, field)                                                                           \
    do {                                                                                           \
        snprintf(key, sizeof(key), "subscriptions[%d].%s", i, field);                              \
        DIFF(cond, key);                                                                           \
    } while (0)
        SUB(!str_eq(x->name, y->name), "name");
        SUB(!str_eq(x->queue, y->queue), "queue");
        SUB(!str_eq(x->dlq, y->dlq), "dlq");
        SUB(x->queue_type != y->queue_type, "queue_type");
        SUB(x->dlq_quorum != y->dlq_quorum, "dlq_type");
        SUB(x->delay_queue_type != y->delay_queue_type, "delay_queue_type");
        SUB(!str_eq(x->handler, y->handler), "handler (the file name)");
        SUB(x->prefetch != y->prefetch, "prefetch");
        SUB(x->concurrency != y->concurrency, "concurrency");
        SUB(x->batch_size != y->batch_size, "batch_size");
        SUB(x->max_body_size != y->max_body_size, "max_body_size");
        SUB(x->max_publish_size != y->max_publish_size, "max_publish_size");
        SUB(x->idem.enabled != y->idem.enabled || x->idem.source != y->idem.source ||
                !str_eq(x->idem.key_arg, y->idem.key_arg) ||
                !str_eq(x->idem.prefix, y->idem.prefix) || x->idem.ttl_ms != y->idem.ttl_ms ||
                x->idem.lease_ms != y->idem.lease_ms ||
                x->idem.missing_key_hash != y->idem.missing_key_hash,
            "idempotency");
        int bind_same = x->binding_count == y->binding_count;
        for (int k = 0; bind_same && k < x->binding_count; k++) {
            const wr_binding *p = &x->bindings[k], *q = &y->bindings[k];
            bind_same = str_eq(p->exchange, q->exchange) && str_eq(p->type, q->type) &&
                        p->declare == q->declare && p->routing_key_count == q->routing_key_count;
            for (int j = 0; bind_same && j < p->routing_key_count; j++) {
                bind_same = str_eq(p->routing_keys[j], q->routing_keys[j]);
            }
        }
        SUB(!bind_same, "bindings");
        /* the contracts file's content reloads (reload_contracts); which file, and how
         * events are read against it, are the running config's */
        SUB(!str_eq(x->contracts.file, y->contracts.file) ||
                x->contracts.unknown_types_dlq != y->contracts.unknown_types_dlq ||
                !str_eq(x->contracts.version_header, y->contracts.version_header) ||
                x->contracts.default_version != y->contracts.default_version ||
                x->contracts.validate_outgoing != y->contracts.validate_outgoing,
            "contracts (file, unknown_types, version_header, default_version, "
            "validate_outgoing)");
#undef SUB
    }
#undef DIFF
    return n;
}

/*
 * Reload subscription I's live parts from NEW (the same subscription in a
 * freshly loaded config). Returns 1 applied, 0 nothing changed, -1 refused.
 */
static int reload_sub(wr_reloader *r, int i, const wr_subscription *nsub, const char *why)
{
    wr_live *l = &r->live[i];
    const wr_subscription *run = &r->cfg->subs[i];
    size_t len;
    char rerr[1200];
    char *src = slurp(run->handler, &len, rerr, sizeof(rerr));
    if (src == NULL) {
        char msg[1300];
        snprintf(msg, sizeof(msg), "%s; the running version stays", rerr);
        wr_logline line;
        wr_log_begin(&line, WR_LOG_ERROR, "handler reload refused");
        wr_log_str(&line, "subscription", run->name);
        wr_log_str(&line, "file", run->handler);
        wr_log_str(&line, "error", msg);
        wr_log_end(&line);
        return -1;
    }
    char version[17];
    char *files = NULL;
    version_of(run->handler, src, len, version, &files);

    pthread_mutex_lock(&l->lock);
    int same_code = strcmp(version, l->version) == 0;
    int same_policy =
        l->timeout_ms == nsub->handler_timeout_ms && same_retry(&l->retry, &nsub->retry);
    char old_version[17];
    memcpy(old_version, l->version, sizeof(old_version));
    pthread_mutex_unlock(&l->lock);
    char changed[512];
    changed_files(l->files, files, changed, sizeof(changed));
    if (same_code && same_policy) {
        free(src);
        free(files);
        return 0;
    }
    if (!same_code) {
        /* validate once, in a throwaway state: compiles, returns handle, init succeeds */
        wr_lua_opts o = {.handler_path = run->handler,
                         .source = src,
                         .source_len = len,
                         .version = version,
                         .subscription = run->name,
                         .queue = run->queue,
                         .timeout_ms = nsub->handler_timeout_ms,
                         .max_attempts = nsub->retry.max_attempts};
        char err[1024];
        wr_lua *probe = wr_lua_create(&o, err, sizeof(err));
        if (probe == NULL) {
            wr_logline line;
            wr_log_begin(&line, WR_LOG_ERROR, "handler reload refused");
            wr_log_str(&line, "subscription", run->name);
            wr_log_str(&line, "file", run->handler);
            wr_log_str(&line, "version", version);
            wr_log_str(&line, "running_version", old_version);
            wr_log_str(&line, "error", err);
            wr_log_str(&line, "changed", changed);
            wr_log_str(&line, "trigger", why);
            wr_log_end(&line);
            free(src);
            free(files);
            return -1;
        }
        wr_lua_destroy(probe);
    }
    pthread_mutex_lock(&l->lock);
    free(l->source);
    l->source = src;
    l->source_len = len;
    free(l->files);
    l->files = files;
    memcpy(l->version, version, sizeof(l->version));
    l->timeout_ms = nsub->handler_timeout_ms;
    wr_retry_policy_copy(&l->retry, l->delays, &nsub->retry);
    atomic_fetch_add(&l->gen, 1);
    pthread_mutex_unlock(&l->lock);

    wr_logline line;
    wr_log_begin(&line, WR_LOG_INFO, same_code ? "policy reloaded" : "handler reloaded");
    wr_log_str(&line, "subscription", run->name);
    wr_log_str(&line, "file", run->handler);
    wr_log_str(&line, "version", version);
    if (!same_code) {
        wr_log_str(&line, "previous_version", old_version);
        wr_log_str(&line, "changed", changed);
    }
    wr_log_int(&line, "handler_timeout_ms", nsub->handler_timeout_ms);
    wr_log_int(&line, "max_attempts", nsub->retry.max_attempts);
    wr_log_str(&line, "trigger", why);
    wr_log_end(&line);
    return 1;
}

/* Log each line of the problems in TEXT as a refused contracts reload. */
static void log_contracts_refused(const wr_subscription *s, const wr_contracts *running,
                                  const char *text, const char *why)
{
    for (const char *p = text; p != NULL && *p;) {
        size_t n = strcspn(p, "\n");
        if (n > 0) {
            char msg[2048];
            snprintf(msg, sizeof(msg), "%.*s", (int)n, p);
            wr_logline line;
            wr_log_begin(&line, WR_LOG_ERROR,
                         "contracts reload refused; the running contracts stay");
            wr_log_str(&line, "subscription", s->name);
            wr_log_str(&line, "file", s->contracts.file);
            wr_log_str(&line, "error", msg);
            if (running != NULL) {
                wr_log_str(&line, "running_version", wr_contracts_digest(running));
            }
            wr_log_str(&line, "trigger", why);
            wr_log_end(&line);
        }
        p += n;
        p += *p == '\n';
    }
}

/*
 * Reload subscription I's contracts when its contracts file or an upcaster
 * changed: build (load and compile), validate (examples valid, each upcaster
 * compiles and upcasts its examples to a valid current event, in a throwaway
 * state of the running handler), swap (the workers take it with the next
 * generation). Returns 1 applied, 0 nothing changed, -1 refused (logged, each
 * problem as FILE:LINE:COL; the running contracts stay).
 */
static int reload_contracts(wr_reloader *r, int i, const char *why)
{
    wr_live *l = &r->live[i];
    const wr_subscription *run = &r->cfg->subs[i];
    if (run->contracts.file == NULL) {
        return 0;
    }
    wr_contracts *cur = wr_live_contracts(l);
    char err[8192];
    wr_contracts *next = wr_contracts_load(run->contracts.file, err, sizeof(err));
    if (next != NULL && cur != NULL &&
        strcmp(wr_contracts_digest(next), wr_contracts_digest(cur)) == 0) {
        wr_contracts_free(next);
        wr_contracts_free(cur);
        return 0;
    }
    if (next != NULL) {
        char *text = NULL;
        size_t tlen = 0;
        FILE *fp = open_memstream(&text, &tlen);
        wr_live_snapshot snap = {0};
        int bad = fp == NULL || wr_live_snapshot_take(l, &snap) != 0;
        if (!bad) {
            bad = wr_contracts_check_examples(next, fp);
            wr_lua_opts o = {.handler_path = run->handler,
                             .source = snap.source,
                             .source_len = snap.source_len,
                             .version = snap.version,
                             .subscription = run->name,
                             .queue = run->queue,
                             .timeout_ms = snap.timeout_ms,
                             .max_attempts = 1};
            char lerr[1024];
            wr_lua *probe = wr_lua_create(&o, lerr, sizeof(lerr));
            if (probe == NULL) {
                fprintf(fp, "%s: the running handler cannot check the upcasters: %s\n",
                        run->handler, lerr);
                bad++;
            } else {
                bad += wr_contracts_check_upcasts(next, probe, fp, NULL);
                wr_lua_destroy(probe);
            }
        }
        wr_live_snapshot_free(&snap);
        if (fp != NULL) {
            fclose(fp);
        }
        if (bad) {
            snprintf(err, sizeof(err), "%s", text ? text : "out of memory");
            wr_contracts_free(next);
            next = NULL;
        }
        free(text);
    }
    if (next == NULL) {
        log_contracts_refused(run, cur, err, why);
        wr_contracts_free(cur);
        return -1;
    }
    wr_contracts_adopt_counts(next, cur);
    pthread_mutex_lock(&l->lock);
    wr_contracts *old = l->contracts;
    l->contracts = next;
    atomic_fetch_add(&l->gen, 1);
    pthread_mutex_unlock(&l->lock);
    log_contracts("contracts reloaded", run, next, cur ? wr_contracts_digest(cur) : NULL, why);
    wr_contracts_free(old);
    wr_contracts_free(cur);
    return 1;
}

void wr_reloader_reload(wr_reloader *r, const char *why)
{
    wr_config_errors errs = {0};
    wr_config *next = wr_config_load(r->cfg->path, &errs);
    if (next == NULL) {
        for (int i = 0; i < errs.count; i++) {
            wr_logline line;
            wr_log_begin(&line, WR_LOG_ERROR, "config reload refused");
            wr_log_str(&line, "error", errs.lines[i]);
            wr_log_str(&line, "trigger", why);
            wr_log_end(&line);
        }
        wr_config_errors_free(&errs);
        r->refused++;
        return;
    }
    wr_config_errors_free(&errs);

    char what[2048];
    if (restart_diff(r->cfg, next, what, sizeof(what)) > 0) {
        wr_logline line;
        wr_log_begin(&line, WR_LOG_WARN, "config change needs a restart; the running values stay");
        wr_log_str(&line, "keys", what);
        wr_log_str(&line, "trigger", why);
        wr_log_end(&line);
    }
    if (next->log_level != r->cfg->log_level) {
        wr_log_set_level(next->log_level);
        wr_logf(WR_LOG_INFO, "log level now %s", wr_log_level_name(next->log_level));
    }
    int contracts_changed = 0;
    for (int i = 0; i < r->cfg->sub_count; i++) {
        /* live parts follow the subscription of the same name */
        const wr_subscription *nsub = NULL;
        for (int k = 0; k < next->sub_count && nsub == NULL; k++) {
            if (strcmp(next->subs[k].name, r->cfg->subs[i].name) == 0) {
                nsub = &next->subs[k];
            }
        }
        if (nsub == NULL) {
            continue;
        }
        int rc = reload_sub(r, i, nsub, why);
        r->applied += rc > 0;
        r->refused += rc < 0;
        rc = reload_contracts(r, i, why);
        r->applied += rc > 0;
        r->refused += rc < 0;
        contracts_changed |= rc > 0;
    }
    wr_config_free(next);
    if (contracts_changed) {
        /* the upcasters named may be others now: watch what the new files name */
        char err[512];
        wr_watch *w = watch_files(r, err, sizeof(err));
        if (w != NULL) {
            wr_watch_destroy(r->watch);
            r->watch = w;
        } else {
            wr_logf(WR_LOG_WARN, "file watching unavailable (%s): reload with SIGHUP", err);
        }
    }
}

void wr_reloader_tick(wr_reloader *r, int *wait_ms)
{
    int wait = -1;
    int changed = r->watch != NULL && wr_watch_check(r->watch, 200, &wait);
    double now = wr_mono_ms();
    if (now >= r->next_rescan) {
        changed |= r->watch != NULL && wr_watch_rescan(r->watch);
        r->next_rescan = now + RESCAN_MS;
    }
    if (changed) {
        wr_reloader_reload(r, "file change");
    }
    int until_rescan = (int)(r->next_rescan - wr_mono_ms()) + 1;
    *wait_ms = wait >= 0 && wait < until_rescan ? wait : until_rescan;
}
