/*
 * test_config.c: unit tests for the config module.
 *
 * Each case writes a small YAML file into a private temporary directory (next
 * to a tiny handler file, so the "handler must exist" check can pass), loads
 * it, and compares the result field by field, or compares every error line
 * exactly: "FILE:LINE:COL: message" is an interface (users read it, CI greps
 * it), so a changed word or column is a test failure. The parsers for
 * durations and URLs and the reference table are checked directly, and the
 * shipped example config/warren.yaml must load (WR_SOURCE_DIR names the
 * source tree; ctest sets it). Built with ASan/UBSan, leaks fail the run.
 */
/* realpath() and mkdtemp() are XSI / POSIX.1-2008: ask for them explicitly. */
#define _XOPEN_SOURCE 700

#include "config.h"

#include "check.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmp_dir[PATH_MAX];       /* private directory, realpath'd */
static char conf_dir[PATH_MAX + 16]; /* tmp_dir/conf: the config file's directory */
static char cfg_path[PATH_MAX + 32]; /* tmp_dir/conf/warren.yaml */

/* Create FILE (relative to tmp_dir) holding TEXT. */
static void write_file(const char *rel, const char *text)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", tmp_dir, rel);
    FILE *fp = fopen(path, "w");
    if (fp == NULL) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
    fputs(text, fp);
    fclose(fp);
}

static void setup(void)
{
    char tmpl[] = "/tmp/wr-test-config-XXXXXX";
    char path[PATH_MAX + 64];
    if (mkdtemp(tmpl) == NULL || realpath(tmpl, tmp_dir) == NULL) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        exit(2);
    }
    snprintf(conf_dir, sizeof(conf_dir), "%s/conf", tmp_dir);
    snprintf(path, sizeof(path), "%s/handlers", tmp_dir);
    if (mkdir(conf_dir, 0700) != 0 || mkdir(path, 0700) != 0) {
        fprintf(stderr, "mkdir: %s\n", strerror(errno));
        exit(2);
    }
    snprintf(cfg_path, sizeof(cfg_path), "%s/warren.yaml", conf_dir);
    write_file("conf/h.lua", "return { handle = function(event, ctx) end }\n");
    write_file("handlers/other.lua", "return { handle = function(event, ctx) end }\n");
}

static void teardown(void)
{
    static const char *const files[] = {"conf/h.lua", "conf/warren.yaml", "handlers/other.lua",
                                        NULL};
    char path[PATH_MAX + 64];
    for (int i = 0; files[i] != NULL; i++) {
        snprintf(path, sizeof(path), "%s/%s", tmp_dir, files[i]);
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/handlers", tmp_dir);
    rmdir(path);
    rmdir(conf_dir);
    rmdir(tmp_dir);
}

static wr_config *load_text(const char *text, wr_config_errors *errs)
{
    write_file("conf/warren.yaml", text);
    return wr_config_load(cfg_path, errs);
}

/*
 * Load TEXT, expect it to fail with exactly the error lines in WANT (NULL-
 * terminated; each without the "FILE:" prefix, which is checked to be the
 * config path). CALLER is the test's line, for the failure report.
 */
static void expect_errors_at(int caller, const char *text, const char *const *want)
{
    wr_config_errors errs;
    wr_config *cfg = load_text(text, &errs);
    int nwant = 0;
    size_t plen = strlen(cfg_path);

    while (want[nwant] != NULL) {
        nwant++;
    }
    check_count++;
    if (cfg != NULL) {
        check_failures++;
        fprintf(stderr, "%s:%d: config loaded, expected %d error(s)\n", __FILE__, caller, nwant);
        wr_config_free(cfg);
        return;
    }
    check_count++;
    if (errs.count != nwant || errs.dropped != 0) {
        check_failures++;
        fprintf(stderr, "%s:%d: got %d error(s) (%d dropped), want %d:\n", __FILE__, caller,
                errs.count, errs.dropped, nwant);
        for (int i = 0; i < errs.count; i++) {
            fprintf(stderr, "   got: %s\n", errs.lines[i]);
        }
        for (int i = 0; i < nwant; i++) {
            fprintf(stderr, "  want: %s:%s\n", cfg_path, want[i]);
        }
    } else {
        for (int i = 0; i < nwant; i++) {
            const char *got = errs.lines[i];
            check_count++;
            if (strncmp(got, cfg_path, plen) != 0 || got[plen] != ':' ||
                strcmp(got + plen + 1, want[i]) != 0) {
                check_failures++;
                fprintf(stderr, "%s:%d: error %d:\n   got: %s\n  want: %s:%s\n", __FILE__, caller,
                        i, got, cfg_path, want[i]);
            }
        }
    }
    wr_config_errors_free(&errs);
}

#define EXPECT_ERRORS(text, ...)                                                                   \
    expect_errors_at(__LINE__, text, (const char *const[]){__VA_ARGS__, NULL})

/* The smallest valid config; cases below change one thing in it. */
#define MINIMAL                                                                                    \
    "amqp:\n"                                                                                      \
    "  url: amqp://localhost/\n"                                                                   \
    "redis:\n"                                                                                     \
    "  url: redis://localhost\n"                                                                   \
    "subscriptions:\n"                                                                             \
    "  - name: a\n"                                                                                \
    "    queue: q\n"                                                                               \
    "    handler: h.lua\n"

/* ------------------------------------------------------------------------ */

static void test_minimal_defaults(void)
{
    wr_config_errors errs;
    wr_config *cfg = load_text(MINIMAL, &errs);
    char want[PATH_MAX + 64];

    CHECK(cfg != NULL);
    CHECK_INT(errs.count, 0);
    if (cfg == NULL) {
        for (int i = 0; i < errs.count; i++) {
            fprintf(stderr, "  %s\n", errs.lines[i]);
        }
        wr_config_errors_free(&errs);
        return;
    }
    CHECK_STR(cfg->path, cfg_path);
    CHECK_STR(cfg->dir, conf_dir);
    CHECK_STR(cfg->amqp.host, "localhost");
    CHECK_INT(cfg->amqp.port, 5672);
    CHECK_STR(cfg->amqp.vhost, "/");
    CHECK_STR(cfg->amqp.user, "guest");
    CHECK_STR(cfg->amqp.password, "guest");
    CHECK_INT(cfg->amqp.ssl, 0);
    CHECK_INT(cfg->amqp_heartbeat_ms, 10000);
    CHECK_INT(cfg->amqp_connect_timeout_ms, 5000);
    CHECK_INT(cfg->amqp_reconnect_max_ms, 5000);
    CHECK_INT(cfg->redis_reconnect_max_ms, 5000);
    CHECK_STR(cfg->redis.host, "localhost");
    CHECK_INT(cfg->redis.port, 6379);
    CHECK_INT(cfg->redis.db, 0);
    CHECK(cfg->redis.user == NULL);
    CHECK(cfg->redis.password == NULL);
    CHECK_INT(cfg->redis_timeout_ms, 2000);
    CHECK_INT(cfg->log_level, WR_LOG_INFO);
    CHECK_INT(cfg->default_prefetch, 50);
    CHECK_INT(cfg->default_concurrency, 1);
    CHECK_INT(cfg->default_batch_size, 50);
    CHECK_INT(cfg->default_handler_timeout_ms, 5000);
    CHECK_INT(cfg->default_max_body_size, 512 * 1024);
    CHECK_INT(cfg->default_max_publish_size, 16 << 20);
    CHECK_INT(cfg->shutdown_grace_ms, 25000);
    CHECK_STR(cfg->store_prefix, "warren:store:");
    CHECK_INT(cfg->store_max_writes, 256);
    CHECK_INT(cfg->store_max_value_bytes, 65536);
    CHECK_INT(cfg->journal_enabled, 1);
    CHECK_INT(cfg->journal_ttl_ms, 7 * 86400000LL);
    CHECK_INT(cfg->journal_max_entries, 50);
    CHECK_INT(cfg->sub_count, 1);
    CHECK_STR(cfg->subs[0].name, "a");
    CHECK_STR(cfg->subs[0].queue, "q");
    CHECK_STR(cfg->subs[0].dlq, "q.dlq");
    snprintf(want, sizeof(want), "%s/h.lua", conf_dir);
    CHECK_STR(cfg->subs[0].handler, want);
    CHECK_INT(cfg->subs[0].prefetch, 50);
    CHECK_INT(cfg->subs[0].concurrency, 1);
    CHECK_INT(cfg->subs[0].batch_size, 50);
    CHECK_INT(cfg->subs[0].handler_timeout_ms, 5000);
    CHECK_INT(cfg->subs[0].max_body_size, 512 * 1024);
    CHECK_INT(cfg->subs[0].max_publish_size, 16 << 20);
    CHECK_INT(cfg->subs[0].binding_count, 0);
    CHECK(cfg->subs[0].bindings == NULL);
    CHECK_INT(cfg->subs[0].line, 6);
    CHECK_INT(cfg->subs[0].col, 5);
    wr_config_free(cfg);
    wr_config_errors_free(&errs);
}

/* Every key set, with env expansion, inheritance, overrides and the batch clamp. */
static void test_full_config(void)
{
    static const char text[] =
        "# a full configuration\n"
        "amqp:\n"
        "  url: amqps://${WR_T_USER}:${WR_T_PASS}@${WR_T_HOST:-mq.example}:5673/prod\n"
        "  heartbeat: 30s\n"
        "  connect_timeout: 1m30s\n"
        "  reconnect_max: 2s\n"
        "redis:\n"
        "  url: redis://:${WR_T_EMPTY:-fallback}@cache:6380/3\n"
        "  timeout: 250ms\n"
        "  reconnect_max: 750ms\n"
        "log:\n"
        "  level: debug\n"
        "defaults:\n"
        "  prefetch: 20\n"
        "  concurrency: 4\n"
        "  batch_size: 100\n"
        "  handler_timeout: 2s\n"
        "  max_body_size: 4MiB\n"
        "shutdown:\n"
        "  grace: 0\n"
        "subscriptions:\n"
        "  - name: orders\n"
        "    queue: orders.events\n"
        "    handler: ../handlers/other.lua\n"
        "    prefetch: 200\n"
        "    batch_size: 500\n"
        "    bindings:\n"
        "      - exchange: shop.events\n"
        "        routing_keys: [order.created, order.cancelled]\n"
        "      - exchange: ${WR_T_EXCHANGE:-audit}\n"
        "        type: fanout\n"
        "        declare: false\n"
        "        routing_keys: \"cost$$center\"\n"
        "  - name: notify-2.x_y\n"
        "    queue: notifications\n"
        "    dlq: notifications.dead\n"
        "    handler: h.lua\n"
        "    concurrency: 8\n"
        "    handler_timeout: 750ms\n"
        "    max_body_size: 1000\n"
        "    max_publish_size: 64KiB\n"
        "    bindings:\n"
        "      - exchange: shop.events\n"
        "        type: direct\n"
        "        routing_keys: order.shipped\n";
    wr_config_errors errs;
    char want[PATH_MAX + 64];

    setenv("WR_T_USER", "svc", 1);
    setenv("WR_T_PASS", "s3cr%40t", 1);
    unsetenv("WR_T_HOST");
    setenv("WR_T_EMPTY", "", 1);
    unsetenv("WR_T_EXCHANGE");
    wr_config *cfg = load_text(text, &errs);
    CHECK(cfg != NULL);
    CHECK_INT(errs.count, 0);
    if (cfg == NULL) {
        for (int i = 0; i < errs.count; i++) {
            fprintf(stderr, "  %s\n", errs.lines[i]);
        }
        wr_config_errors_free(&errs);
        return;
    }
    CHECK_STR(cfg->amqp.url, "amqps://svc:s3cr%40t@mq.example:5673/prod");
    CHECK_STR(cfg->amqp.redacted, "amqps://svc:***@mq.example:5673/prod");
    CHECK_STR(cfg->amqp.user, "svc");
    CHECK_STR(cfg->amqp.password, "s3cr@t");
    CHECK_STR(cfg->amqp.host, "mq.example");
    CHECK_INT(cfg->amqp.port, 5673);
    CHECK_STR(cfg->amqp.vhost, "prod");
    CHECK_INT(cfg->amqp.ssl, 1);
    CHECK_INT(cfg->amqp_heartbeat_ms, 30000);
    CHECK_INT(cfg->amqp_connect_timeout_ms, 90000);
    CHECK_INT(cfg->amqp_reconnect_max_ms, 2000);
    CHECK_INT(cfg->redis_reconnect_max_ms, 750);
    CHECK_STR(cfg->redis.url, "redis://:fallback@cache:6380/3");
    CHECK_STR(cfg->redis.redacted, "redis://:***@cache:6380/3");
    CHECK(cfg->redis.user == NULL);
    CHECK_STR(cfg->redis.password, "fallback");
    CHECK_STR(cfg->redis.host, "cache");
    CHECK_INT(cfg->redis.port, 6380);
    CHECK_INT(cfg->redis.db, 3);
    CHECK_INT(cfg->redis_timeout_ms, 250);
    CHECK_INT(cfg->log_level, WR_LOG_DEBUG);
    CHECK_INT(cfg->default_prefetch, 20);
    CHECK_INT(cfg->default_concurrency, 4);
    CHECK_INT(cfg->default_batch_size, 100);
    CHECK_INT(cfg->default_handler_timeout_ms, 2000);
    CHECK_INT(cfg->default_max_body_size, 4 << 20);
    CHECK_INT(cfg->shutdown_grace_ms, 0);
    CHECK_INT(cfg->sub_count, 2);

    wr_subscription *s = &cfg->subs[0];
    CHECK_STR(s->name, "orders");
    CHECK_STR(s->queue, "orders.events");
    CHECK_STR(s->dlq, "orders.events.dlq");
    snprintf(want, sizeof(want), "%s/handlers/other.lua", tmp_dir);
    CHECK_STR(s->handler, want);
    CHECK_INT(s->prefetch, 200);
    CHECK_INT(s->concurrency, 4);  /* inherited */
    CHECK_INT(s->batch_size, 200); /* 500 clamped to prefetch */
    CHECK_INT(s->handler_timeout_ms, 2000);
    CHECK_INT(s->max_body_size, 4 << 20);     /* inherited */
    CHECK_INT(s->max_publish_size, 16 << 20); /* the default, inherited */
    CHECK_INT(s->line, 22);
    CHECK_INT(s->col, 5);
    CHECK_INT(s->binding_count, 2);
    CHECK_STR(s->bindings[0].exchange, "shop.events");
    CHECK_STR(s->bindings[0].type, "topic");
    CHECK_INT(s->bindings[0].declare, 1);
    CHECK_INT(s->bindings[0].routing_key_count, 2);
    CHECK_STR(s->bindings[0].routing_keys[0], "order.created");
    CHECK_STR(s->bindings[0].routing_keys[1], "order.cancelled");
    CHECK(s->bindings[0].routing_keys[2] == NULL);
    CHECK_STR(s->bindings[1].exchange, "audit");
    CHECK_STR(s->bindings[1].type, "fanout");
    CHECK_INT(s->bindings[1].declare, 0);
    CHECK_INT(s->bindings[1].routing_key_count, 1);
    CHECK_STR(s->bindings[1].routing_keys[0], "cost$center");
    CHECK(s->bindings[1].routing_keys[1] == NULL);

    s = &cfg->subs[1];
    CHECK_STR(s->name, "notify-2.x_y");
    CHECK_STR(s->queue, "notifications");
    CHECK_STR(s->dlq, "notifications.dead");
    snprintf(want, sizeof(want), "%s/h.lua", conf_dir);
    CHECK_STR(s->handler, want);
    CHECK_INT(s->prefetch, 20); /* inherited */
    CHECK_INT(s->concurrency, 8);
    CHECK_INT(s->batch_size, 20); /* inherited 100, clamped to prefetch 20 */
    CHECK_INT(s->handler_timeout_ms, 750);
    CHECK_INT(s->max_body_size, 1000);
    CHECK_INT(s->max_publish_size, 64 << 10);
    CHECK_INT(s->binding_count, 1);
    CHECK_STR(s->bindings[0].type, "direct");
    CHECK_INT(s->bindings[0].routing_key_count, 1);
    CHECK_STR(s->bindings[0].routing_keys[0], "order.shipped");

    wr_config_free(cfg);
    wr_config_errors_free(&errs);
    unsetenv("WR_T_USER");
    unsetenv("WR_T_PASS");
    unsetenv("WR_T_EMPTY");
}

/* The defaults section may come after the subscriptions that inherit from it. */
static void test_defaults_after_subscriptions(void)
{
    wr_config_errors errs;
    wr_config *cfg = load_text(MINIMAL "defaults:\n"
                                       "  prefetch: 7\n"
                                       "  handler_timeout: 1h\n",
                               &errs);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK_INT(cfg->subs[0].prefetch, 7);
        CHECK_INT(cfg->subs[0].batch_size, 7);
        CHECK_INT(cfg->subs[0].handler_timeout_ms, 3600000);
        wr_config_free(cfg);
    }
    wr_config_errors_free(&errs);
}

/* Absolute handler paths are taken as they are (and still resolved). */
static void test_absolute_handler(void)
{
    char text[2 * PATH_MAX], want[PATH_MAX + 64];
    wr_config_errors errs;

    snprintf(text, sizeof(text),
             "amqp: {url: 'amqp://h'}\n"
             "redis: {url: 'redis://h'}\n"
             "subscriptions:\n"
             "  - {name: a, queue: q, handler: '%s/conf/../handlers/./other.lua'}\n",
             tmp_dir);
    wr_config *cfg = load_text(text, &errs);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        snprintf(want, sizeof(want), "%s/handlers/other.lua", tmp_dir);
        CHECK_STR(cfg->subs[0].handler, want);
        wr_config_free(cfg);
    }
    wr_config_errors_free(&errs);
}

/* ------------------------------------------------------------------------ */
/* Bad configurations: each asserts the exact error lines.                    */
/* ------------------------------------------------------------------------ */

static void test_empty_and_not_a_mapping(void)
{
    EXPECT_ERRORS("", "1:1: empty configuration: expected a mapping with 'amqp', 'redis' and "
                      "'subscriptions'");
    EXPECT_ERRORS("# only a comment\n\n",
                  "1:1: empty configuration: expected a mapping with 'amqp', 'redis' and "
                  "'subscriptions'");
    EXPECT_ERRORS("\n- amqp\n- redis\n", "2:1: expected a mapping at the top level, got a list");
    EXPECT_ERRORS("just words\n", "1:1: expected a mapping at the top level, got a string");
    EXPECT_ERRORS(MINIMAL "---\nmore: 1\n",
                  "10:1: expected a single YAML document, found another one here");
}

static void test_missing_file(void)
{
    wr_config_errors errs;
    char path[PATH_MAX + 64], want[PATH_MAX + 128];

    snprintf(path, sizeof(path), "%s/nope.yaml", tmp_dir);
    wr_config *cfg = wr_config_load(path, &errs);
    CHECK(cfg == NULL);
    CHECK_INT(errs.count, 1);
    snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
    CHECK_STR(errs.count > 0 ? errs.lines[0] : NULL, want);
    wr_config_errors_free(&errs);

    /* A directory opens but cannot be read. */
    cfg = wr_config_load(tmp_dir, &errs);
    CHECK(cfg == NULL);
    CHECK_INT(errs.count, 1);
    snprintf(want, sizeof(want), "%s: cannot read: Is a directory", tmp_dir);
    CHECK_STR(errs.count > 0 ? errs.lines[0] : NULL, want);
    wr_config_errors_free(&errs);

    /* NULL errs is allowed: the errors are dropped. */
    CHECK(wr_config_load(path, NULL) == NULL);
}

static void test_yaml_syntax_errors(void)
{
    /* A key indented deeper than its siblings. */
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://localhost/\n"
                  "   heartbeat: 5s\n",
                  "3:13: YAML syntax error: mapping values are not allowed in this context");
    /* A quote never closed. */
    EXPECT_ERRORS("amqp:\n"
                  "  url: \"amqp://localhost/\n"
                  "redis:\n",
                  "4:1: YAML syntax error: found unexpected end of stream "
                  "(while scanning a quoted scalar that started at 2:8)");
    /* A flow mapping never closed. */
    EXPECT_ERRORS("amqp: {url: x\n"
                  "redis: 1\n",
                  "2:6: YAML syntax error: did not find expected ',' or '}' "
                  "(while parsing a flow mapping that started at 1:7)");
    /* A tab where indentation is expected. */
    EXPECT_ERRORS("amqp:\n\turl: x\n",
                  "2:1: YAML syntax error: found character that cannot start any token "
                  "(while scanning for the next token that started at 2:1)");
}

static void test_unknown_keys(void)
{
    EXPECT_ERRORS(MINIMAL "amqps:\n  url: x\n",
                  "9:1: unknown key 'amqps' at the top level (expected one of: amqp, redis, log, "
                  "defaults, breakers, shutdown, store, http, journal, security, subscriptions)");
    EXPECT_ERRORS(
        MINIMAL "    prefetc: 10\n",
        "9:5: unknown key 'prefetc' in subscriptions[0] (expected one of: name, queue, "
        "dlq, queue_type, dlq_type, delay_queue_type, handler, prefetch, concurrency, "
        "batch_size, handler_timeout, max_body_size, max_publish_size, retry, idempotency, "
        "breaker, ordering, partitions, gates, contracts, bindings, trace_fields)");
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://localhost/\n"
                  "  heartbeats: 5s\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n"
                  "    bindings:\n"
                  "      - exchange: x\n"
                  "        routing_key: k\n",
                  "3:3: unknown key 'heartbeats' in amqp (expected one of: url, heartbeat, "
                  "connect_timeout, reconnect_max, urls, tls)",
                  "11:9: missing required key 'routing_keys' in subscriptions[0].bindings[0]",
                  "12:9: unknown key 'routing_key' in subscriptions[0].bindings[0] (expected one "
                  "of: exchange, type, declare, routing_keys)");
    EXPECT_ERRORS(MINIMAL "log:\n  level: info\n  level: warn\n",
                  "11:3: duplicate key 'level' in log (first at 10:3)");
    EXPECT_ERRORS(MINIMAL "? [a, b]\n: 1\n",
                  "9:3: expected a string key at the top level, got a list");
}

static void test_wrong_node_kinds(void)
{
    EXPECT_ERRORS(MINIMAL "defaults:\n  prefetch: abc\n",
                  "10:13: defaults.prefetch: expected an integer from 1 to 65535, got 'abc'");
    EXPECT_ERRORS("amqp:\n"
                  "  - url: amqp://localhost/\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n",
                  "2:3: amqp: expected a mapping, got a list");
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://localhost/\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  name: a\n"
                  "  queue: q\n"
                  "  handler: h.lua\n",
                  "6:3: subscriptions: expected a list, got a mapping");
    EXPECT_ERRORS(MINIMAL "log:\n", "9:5: log: expected a mapping, got an empty value");
    EXPECT_ERRORS(MINIMAL "  - just a string\n",
                  "9:5: subscriptions[1]: expected a mapping, got a string");
    EXPECT_ERRORS(MINIMAL "    prefetch: [1, 2]\n",
                  "9:15: subscriptions[0].prefetch: expected an integer from 1 to 65535, "
                  "got a list");
    EXPECT_ERRORS(
        MINIMAL "    queue2: q\n    bindings: {exchange: x}\n",
        "9:5: unknown key 'queue2' in subscriptions[0] (expected one of: name, queue, "
        "dlq, queue_type, dlq_type, delay_queue_type, handler, prefetch, concurrency, "
        "batch_size, handler_timeout, max_body_size, max_publish_size, retry, idempotency, "
        "breaker, ordering, partitions, gates, contracts, bindings, trace_fields)",
        "10:15: subscriptions[0].bindings: expected a list, got a mapping");
    /* Never echo a scalar where a mapping was expected: it may be a secret URL. */
    EXPECT_ERRORS("amqp: amqp://user:hunter2@host/\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n",
                  "1:7: amqp: expected a mapping, got a string");
}

static void test_missing_required(void)
{
    EXPECT_ERRORS("amqp:\n"
                  "  heartbeat: 5s\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n",
                  "2:3: missing required key 'url' in amqp");
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://localhost/\n"
                  "log:\n"
                  "  level: info\n",
                  "1:1: missing required key 'redis' at the top level",
                  "1:1: missing required key 'subscriptions' at the top level");
    EXPECT_ERRORS(MINIMAL "  - name: b\n"
                          "    handler: h.lua\n"
                          "  - queue: q3\n"
                          "    handler: h.lua\n"
                          "  - name: d\n"
                          "    queue: q4\n",
                  "9:5: missing required key 'queue' in subscriptions[1]",
                  "11:5: missing required key 'name' in subscriptions[2]",
                  "13:5: missing required key 'handler' in subscriptions[3]");
    EXPECT_ERRORS(MINIMAL "    bindings:\n"
                          "      - type: topic\n"
                          "        routing_keys: a.b\n"
                          "      - exchange: ex\n",
                  "10:9: missing required key 'exchange' in subscriptions[0].bindings[0]",
                  "12:9: missing required key 'routing_keys' in subscriptions[0].bindings[1]");
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://localhost/\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions: []\n",
                  "5:16: subscriptions: expected a non-empty list");
    EXPECT_ERRORS(MINIMAL "    bindings:\n"
                          "      - exchange: ex\n"
                          "        routing_keys: []\n"
                          "      - exchange: ex2\n"
                          "        routing_keys:\n"
                          "      - exchange: ex3\n"
                          "        routing_keys: [a, {b: c}]\n",
                  "11:23: subscriptions[0].bindings[0].routing_keys: expected a non-empty list",
                  "13:22: subscriptions[0].bindings[1].routing_keys: expected a string or a list "
                  "of strings, got an empty value",
                  "15:27: subscriptions[0].bindings[2].routing_keys[1]: expected a string, "
                  "got a mapping");
}

static void test_bad_values(void)
{
    EXPECT_ERRORS(MINIMAL "    handler_timeout: 5x\n",
                  "9:22: subscriptions[0].handler_timeout: expected a duration like 500ms, 5s, 2m, "
                  "1h or 7d, got '5x'");
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://localhost/\n"
                  "  heartbeat: 5x\n"
                  "  connect_timeout: 10\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "  timeout: 0s\n"
                  "  reconnect_max: 50ms\n"
                  "shutdown:\n"
                  "  grace: ''\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n",
                  "3:14: amqp.heartbeat: expected a duration like 500ms, 5s, 2m, 1h or 7d, "
                  "got '5x'",
                  "4:20: amqp.connect_timeout: expected a duration like 500ms, 5s, 2m, 1h or 7d, "
                  "got '10'",
                  "7:12: redis.timeout: expected a duration from 1ms to 5m, got '0s'",
                  "8:18: redis.reconnect_max: expected a duration from 100ms to 10m, got '50ms'",
                  "10:10: shutdown.grace: expected a duration like 500ms, 5s, 2m, 1h or 7d, "
                  "got an empty value");
    EXPECT_ERRORS(MINIMAL "store:\n"
                          "  prefix: ''\n"
                          "  max_writes: 0\n"
                          "  max_value_bytes: 32MiB\n"
                          "  max_reads: 3\n",
                  "10:11: store.prefix: must not be empty",
                  "11:15: store.max_writes: expected an integer from 1 to 10000, got '0'",
                  "12:20: store.max_value_bytes: expected a size from 1B to 16MiB, got '32MiB'",
                  "13:3: unknown key 'max_reads' in store (expected one of: prefix, max_writes, "
                  "max_value_bytes)");
    EXPECT_ERRORS(
        MINIMAL "amqp_extra: 1\n"
                "defaults:\n"
                "  handler_timeout: 0\n",
        "9:1: unknown key 'amqp_extra' at the top level (expected one of: amqp, redis, "
        "log, defaults, breakers, shutdown, store, http, journal, security, subscriptions)",
        "11:20: defaults.handler_timeout: expected a duration from 1ms to 1h, got '0'");
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://localhost/\n"
                  "  heartbeat: 10m\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n"
                  "    prefetch: 0\n"
                  "    concurrency: 65\n"
                  "    batch_size: -1\n"
                  "  - name: b\n"
                  "    queue: q2\n"
                  "    handler: h.lua\n"
                  "    prefetch: 70000\n",
                  "3:14: amqp.heartbeat: expected a duration from 0s to 5m, got '10m'",
                  "10:15: subscriptions[0].prefetch: expected an integer from 1 to 65535, got '0'",
                  "11:18: subscriptions[0].concurrency: expected an integer from 1 to 64, "
                  "got '65'",
                  "12:17: subscriptions[0].batch_size: expected an integer from 1 to 1000, "
                  "got '-1'",
                  "16:15: subscriptions[1].prefetch: expected an integer from 1 to 65535, "
                  "got '70000'");
    EXPECT_ERRORS(MINIMAL "    max_body_size: 1GiB\n"
                          "defaults:\n"
                          "  max_body_size: 64KB\n",
                  "9:20: subscriptions[0].max_body_size: expected a size from 1B to 512MiB, "
                  "got '1GiB'",
                  "11:18: defaults.max_body_size: expected a size like 65536, 512KiB or 4MiB, "
                  "got '64KB'");
    EXPECT_ERRORS(MINIMAL "    max_body_size: 0\n",
                  "9:20: subscriptions[0].max_body_size: expected a size from 1B to 512MiB, "
                  "got '0'");
    EXPECT_ERRORS(MINIMAL "log:\n  level: verbose\n",
                  "10:10: log.level: expected one of debug, info, warn, error, got 'verbose'");
    EXPECT_ERRORS(MINIMAL "    bindings:\n"
                          "      - exchange: ex\n"
                          "        type: Topic\n"
                          "        declare: maybe\n"
                          "        routing_keys: '#'\n",
                  "11:15: subscriptions[0].bindings[0].type: expected one of direct, topic, "
                  "fanout, headers, got 'Topic'",
                  "12:18: subscriptions[0].bindings[0].declare: expected true or false, "
                  "got 'maybe'");
}

static void test_strings(void)
{
    char text[2048], line[600];

    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://localhost/\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  - name: my orders\n"
                  "    queue: ''\n"
                  "    dlq: ''\n"
                  "    handler: h.lua\n"
                  "    bindings:\n"
                  "      - exchange: ''\n"
                  "        routing_keys: a\n",
                  "6:11: subscriptions[0].name: may contain only letters, digits, '_', '.' and "
                  "'-', got a value of 9 bytes (not shown)",
                  "7:12: subscriptions[0].queue: must not be empty",
                  "8:10: subscriptions[0].dlq: must not be empty",
                  "11:19: subscriptions[0].bindings[0].exchange: must not be empty");

    char longq[301];
    memset(longq, 'q', 300);
    longq[300] = '\0';
    snprintf(text, sizeof(text), MINIMAL "  - name: b\n    queue: %s\n    handler: h.lua\n", longq);
    EXPECT_ERRORS(text, "10:12: subscriptions[1].queue: must be at most 255 bytes long, "
                        "got 300 bytes");

    /* The default dlq must fit too. */
    longq[253] = '\0';
    snprintf(text, sizeof(text), MINIMAL "  - name: b\n    queue: %s\n    handler: h.lua\n", longq);
    snprintf(line, sizeof(line),
             "10:12: subscriptions[1].queue: the default dlq '<queue>.dlq' "
             "would be longer than 255 bytes (set dlq)");
    EXPECT_ERRORS(text, line);

    EXPECT_ERRORS(MINIMAL "    dlq: q\n", "9:10: subscriptions[0].dlq: must differ from the "
                                          "queue");
}

static void test_duplicates(void)
{
    EXPECT_ERRORS(MINIMAL "  - name: a\n"
                          "    queue: q\n"
                          "    handler: h.lua\n",
                  "9:11: subscriptions[1].name: duplicate subscription name 'a' (also at 6:5)",
                  "10:12: subscriptions[1].queue: queue 'q' is already consumed by "
                  "subscriptions[0] (at 6:5)");
}

static void test_handler_missing(void)
{
    char line[PATH_MAX + 200], line2[PATH_MAX + 200];

    snprintf(line, sizeof(line),
             "8:14: subscriptions[0].handler: handler file not found (relative to %s), got a "
             "value of 11 bytes (not shown)",
             conf_dir);
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://localhost/\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: missing.lua\n",
                  line);

    snprintf(line, sizeof(line),
             "10:14: subscriptions[1].handler: handler file not found, got a value of 18 bytes "
             "(not shown)");
    snprintf(line2, sizeof(line2),
             "13:14: subscriptions[2].handler: handler file is not a regular file, got '..'");
    EXPECT_ERRORS(MINIMAL "  - name: b\n"
                          "    handler: /nonexistent/x.lua\n"
                          "    queue: q2\n"
                          "  - name: c\n"
                          "    handler: ..\n"
                          "    queue: q3\n",
                  line, line2);
}

static void test_urls_in_errors(void)
{
    wr_config_errors errs;
    wr_config *cfg;

    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://guest:hunter2@host:notaport/\n"
                  "redis:\n"
                  "  url: http://cache:6379\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n",
                  "2:8: amqp.url: invalid AMQP URL 'amqp://guest:***@host:notaport/' (port must "
                  "be a number from 1 to 65535)",
                  "4:8: redis.url: invalid Redis URL 'http://cache:6379' (the scheme must be "
                  "redis://)");
    EXPECT_ERRORS("amqp:\n"
                  "  url: 'amqp://me:p/ss@host/'\n"
                  "redis:\n"
                  "  url: redis://topsecret@cache:99999/0\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n",
                  "2:8: amqp.url: invalid AMQP URL 'amqp://me:***@host/' (malformed URL "
                  "(percent-encode ':', '@' and '/' in the user name and password))",
                  "4:8: redis.url: invalid Redis URL 'redis://***@cache:99999/0' (port must be a "
                  "number from 1 to 65535)");

    /* Belt and braces: the passwords appear nowhere in the messages. */
    setenv("WR_T_SECRET", "hunter2", 1);
    cfg = load_text("amqp:\n"
                    "  url: amqp://u:${WR_T_SECRET}@h:0/\n"
                    "redis:\n"
                    "  url: redis://u:${WR_T_SECRET}@:6379/x\n"
                    "subscriptions:\n"
                    "  - name: a\n"
                    "    queue: q\n"
                    "    handler: h.lua\n",
                    &errs);
    CHECK(cfg == NULL);
    CHECK_INT(errs.count, 2);
    for (int i = 0; i < errs.count; i++) {
        CHECK(strstr(errs.lines[i], "hunter2") == NULL);
        CHECK(strstr(errs.lines[i], "***") != NULL);
    }
    wr_config_errors_free(&errs);
    unsetenv("WR_T_SECRET");
}

static void test_env_errors(void)
{
    unsetenv("WR_T_UNSET");
    EXPECT_ERRORS("amqp:\n"
                  "  url: ${WR_T_UNSET}\n"
                  "redis:\n"
                  "  url: redis://${WR_T_HOST\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: ${}\n"
                  "    handler: ${WR-T}\n"
                  "    dlq: x${WR_T_UNSET:-${WR_T_UNSET}}\n",
                  "2:8: amqp.url: environment variable 'WR_T_UNSET' is not set (write "
                  "${WR_T_UNSET:-default} to give a default)",
                  "4:8: redis.url: unterminated '${' (write $$ for a literal '$')",
                  "7:12: subscriptions[0].queue: empty environment variable name in '${}'",
                  "8:14: subscriptions[0].handler: invalid environment variable name 'WR-T' "
                  "(letters, digits and '_')",
                  "9:10: subscriptions[0].dlq: environment variable 'WR_T_UNSET' is not set "
                  "(write ${WR_T_UNSET:-default} to give a default)");
    EXPECT_ERRORS(MINIMAL "    bindings:\n"
                          "      - exchange: x\n"
                          "        routing_keys: [a, '${WR_T_UNSET}']\n",
                  "11:27: subscriptions[0].bindings[0].routing_keys[1]: environment variable "
                  "'WR_T_UNSET' is not set (write ${WR_T_UNSET:-default} to give a default)");
}

/* Many problems in one file: every one is reported, in file order. */
static void test_multiple_errors(void)
{
    char handler_line[PATH_MAX + 128];

    snprintf(handler_line, sizeof(handler_line),
             "4:14: subscriptions[0].handler: handler file not found (relative to %s), got "
             "'nope.lua'",
             conf_dir);
    EXPECT_ERRORS("subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: nope.lua\n"
                  "    prefetch: lots\n"
                  "  - name: a\n"
                  "    queue: q2\n"
                  "    handler: h.lua\n"
                  "    bindings:\n"
                  "      - exchange: x\n"
                  "        type: bogus\n"
                  "log:\n"
                  "  level: loud\n"
                  "amqp:\n"
                  "  url: amqp://h/\n"
                  "  heartbeat: 1y\n",
                  "1:1: missing required key 'redis' at the top level", handler_line,
                  "5:15: subscriptions[0].prefetch: expected an integer from 1 to 65535, "
                  "got 'lots'",
                  "6:11: subscriptions[1].name: duplicate subscription name 'a' (also at 2:5)",
                  "10:9: missing required key 'routing_keys' in subscriptions[1].bindings[0]",
                  "11:15: subscriptions[1].bindings[0].type: expected one of direct, topic, "
                  "fanout, headers, got 'bogus'",
                  "13:10: log.level: expected one of debug, info, warn, error, got 'loud'",
                  "16:14: amqp.heartbeat: expected a duration like 500ms, 5s, 2m, 1h or 7d, "
                  "got '1y'");
}

/* More errors than fit: the first WR_CONFIG_MAX_ERRORS are kept, the rest counted. */
static void test_error_limit(void)
{
    size_t cap = 64 * 1024, used = 0;
    char *text = malloc(cap);
    wr_config_errors errs;

    used += (size_t)snprintf(text + used, cap - used, MINIMAL);
    for (int i = 0; i < WR_CONFIG_MAX_ERRORS + 10; i++) {
        used += (size_t)snprintf(text + used, cap - used, "    bad%d: 1\n", i);
    }
    wr_config *cfg = load_text(text, &errs);
    CHECK(cfg == NULL);
    CHECK_INT(errs.count, WR_CONFIG_MAX_ERRORS);
    CHECK_INT(errs.dropped, 10);
    wr_config_errors_free(&errs);
    CHECK_INT(errs.count, 0);
    free(text);
}

/* ------------------------------------------------------------------------ */
/* retry and idempotency                                                      */
/* ------------------------------------------------------------------------ */

/* Load TEXT, expecting success; on failure print the errors and return NULL. */
static wr_config *load_ok_at(int caller, const char *text)
{
    wr_config_errors errs;
    wr_config *cfg = load_text(text, &errs);

    check_count++;
    if (cfg == NULL) {
        check_failures++;
        fprintf(stderr, "%s:%d: config did not load:\n", __FILE__, caller);
        for (int i = 0; i < errs.count; i++) {
            fprintf(stderr, "  %s\n", errs.lines[i]);
        }
    }
    wr_config_errors_free(&errs);
    return cfg;
}

#define LOAD_OK(text) load_ok_at(__LINE__, text)

/* Check a retry policy's delays against WANT (N of them; N 0: backoff, no list). */
static void check_delays_at(int caller, const wr_retry_policy *r, const int64_t *want, int n)
{
    check_count++;
    bool same = r->delay_count == n && (n == 0 ? r->delays_ms == NULL : r->delays_ms != NULL);
    for (int i = 0; same && i < n; i++) {
        same = r->delays_ms[i] == want[i];
    }
    if (!same) {
        check_failures++;
        fprintf(stderr, "%s:%d: delays: got %d of them:", __FILE__, caller, r->delay_count);
        for (int i = 0; r->delays_ms != NULL && i < r->delay_count; i++) {
            fprintf(stderr, " %lld", (long long)r->delays_ms[i]);
        }
        fprintf(stderr, "; want %d:", n);
        for (int i = 0; i < n; i++) {
            fprintf(stderr, " %lld", (long long)want[i]);
        }
        fprintf(stderr, "\n");
    }
}

#define CHECK_DELAYS(r, ...)                                                                       \
    check_delays_at(__LINE__, (r), (const int64_t[]){__VA_ARGS__},                                 \
                    (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define CHECK_NO_DELAYS(r) check_delays_at(__LINE__, (r), NULL, 0)

/* The built-in backoff values, filled in even when delays are used. */
static void check_builtin_backoff_at(int caller, const wr_retry_policy *r)
{
    check_count++;
    if (r->initial_ms != 1000 || r->multiplier != 2.0 || r->max_ms != 300000 || r->jitter != 0.0) {
        check_failures++;
        fprintf(stderr, "%s:%d: backoff: got %lld, %g, %lld, %g; want 1000, 2, 300000, 0\n",
                __FILE__, caller, (long long)r->initial_ms, r->multiplier, (long long)r->max_ms,
                r->jitter);
    }
}

#define CHECK_BUILTIN_BACKOFF(r) check_builtin_backoff_at(__LINE__, (r))

/* Neither section anywhere: the built-in defaults. */
/* A quoted number or boolean is a string in YAML: refused like any other string
 * where a number or a boolean goes. Values from the environment are text
 * whatever their quotes; sizes and durations are text anyway. */
static void test_quoted_scalars(void)
{
    EXPECT_ERRORS(MINIMAL "    retry:\n"
                          "      max_attempts: \"6\"\n"
                          "      backoff: {multiplier: '2'}\n"
                          "    breaker:\n"
                          "      enabled: \"true\"\n",
                  "10:21: subscriptions[0].retry.max_attempts: expected an integer from 1 to 100, "
                  "got the quoted string \"6\" (write it without quotes)",
                  "11:29: subscriptions[0].retry.backoff.multiplier: expected a number from 1 to "
                  "10, got the quoted string '2' (write it without quotes)",
                  "13:16: subscriptions[0].breaker.enabled: expected true or false, got the "
                  "quoted string \"true\" (write it without quotes)");
    setenv("WR_T_ATTEMPTS", "6", 1);
    wr_config *cfg = LOAD_OK(MINIMAL "    retry: {max_attempts: \"${WR_T_ATTEMPTS}\"}\n"
                                     "    max_body_size: \"64KiB\"\n"
                                     "    handler_timeout: '2s'\n");
    if (cfg != NULL) {
        CHECK_INT(cfg->subs[0].retry.max_attempts, 6);
        CHECK_INT(cfg->subs[0].max_body_size, 65536);
        CHECK_INT(cfg->subs[0].handler_timeout_ms, 2000);
        wr_config_free(cfg);
    }
    unsetenv("WR_T_ATTEMPTS");
}

static void test_policy_defaults(void)
{
    wr_config *cfg = LOAD_OK(MINIMAL);
    if (cfg == NULL) {
        return;
    }
    wr_retry_policy *r = &cfg->subs[0].retry;
    wr_idem_policy *d = &cfg->subs[0].idem;
    CHECK_INT(r->max_attempts, 5);
    CHECK_DELAYS(r, 1000, 5000, 30000, 120000);
    CHECK_BUILTIN_BACKOFF(r);
    CHECK_INT(d->enabled, 1);
    CHECK_INT(d->source, WR_KEY_MESSAGE_ID);
    CHECK(d->key_arg == NULL);
    CHECK_STR(d->prefix, "warren:idem:");
    CHECK_INT(d->ttl_ms, 7 * 86400000LL);
    CHECK_INT(d->lease_ms, 30000);
    CHECK_INT(d->missing_key_hash, 0);
    wr_config_free(cfg);

    /* Empty sections are the same as none. */
    cfg = LOAD_OK(MINIMAL "    retry: {}\n"
                          "    idempotency: {}\n"
                          "defaults:\n"
                          "  retry: {}\n"
                          "  idempotency: {}\n");
    if (cfg == NULL) {
        return;
    }
    r = &cfg->subs[0].retry;
    CHECK_INT(r->max_attempts, 5);
    CHECK_DELAYS(r, 1000, 5000, 30000, 120000);
    CHECK_BUILTIN_BACKOFF(r);
    CHECK_STR(cfg->subs[0].idem.prefix, "warren:idem:");
    CHECK_INT(cfg->subs[0].idem.ttl_ms, 7 * 86400000LL);
    wr_config_free(cfg);
}

/* Every key set, in the defaults and in subscriptions. */
static void test_policy_full(void)
{
    static const char text[] = "amqp:\n"
                               "  url: amqp://localhost/\n"
                               "redis:\n"
                               "  url: redis://localhost\n"
                               "defaults:\n"
                               "  retry:\n"
                               "    max_attempts: 7\n"
                               "    backoff:\n"
                               "      initial: 250ms\n"
                               "      multiplier: 1.5\n"
                               "      max: 1m\n"
                               "      jitter: 0.2\n"
                               "  idempotency:\n"
                               "    enabled: false\n"
                               "    key: header:x-request-id\n"
                               "    prefix: \"shop:\"\n"
                               "    ttl: none\n"
                               "    lease: 1m\n"
                               "    missing_key: body-hash\n"
                               "subscriptions:\n"
                               "  - name: a\n"
                               "    queue: q\n"
                               "    handler: h.lua\n"
                               "  - name: b\n"
                               "    queue: q2\n"
                               "    handler: h.lua\n"
                               "    retry:\n"
                               "      max_attempts: 3\n"
                               "      delays: [100ms, 2s, '${WR_T_DELAY:-1h}']\n"
                               "    idempotency:\n"
                               "      enabled: yes\n"
                               "      key: json:order.id\n"
                               "      ttl: 36h\n"
                               "  - name: c\n"
                               "    queue: q3\n"
                               "    handler: h.lua\n"
                               "    retry:\n"
                               "      backoff:\n"
                               "        max: 10m\n"
                               "        multiplier: 10\n"
                               "    idempotency:\n"
                               "      key: message_id\n"
                               "      prefix: ${WR_T_PREFIX:-c:}\n"
                               "      ttl: 3650d\n"
                               "      lease: 1h\n"
                               "      missing_key: dlq\n"
                               "  - name: d\n"
                               "    queue: q4\n"
                               "    handler: h.lua\n"
                               "    retry:\n"
                               "      max_attempts: 100\n"
                               "      delays: [1ms, 24h]\n"
                               "      backoff: {}\n";
    unsetenv("WR_T_DELAY");
    unsetenv("WR_T_PREFIX");
    /* d sets both delays and backoff: take it out for the success case. */
    char ok[sizeof(text)];
    snprintf(ok, sizeof(ok), "%.*s", (int)(strstr(text, "      backoff: {}\n") - text), text);
    wr_config *cfg = LOAD_OK(ok);
    if (cfg == NULL) {
        return;
    }
    CHECK_INT(cfg->sub_count, 4);

    wr_subscription *s = &cfg->subs[0]; /* all inherited */
    CHECK_INT(s->retry.max_attempts, 7);
    CHECK_NO_DELAYS(&s->retry);
    CHECK_INT(s->retry.initial_ms, 250);
    CHECK(s->retry.multiplier == 1.5);
    CHECK_INT(s->retry.max_ms, 60000);
    CHECK(s->retry.jitter == 0.2);
    CHECK_INT(s->idem.enabled, 0);
    CHECK_INT(s->idem.source, WR_KEY_HEADER);
    CHECK_STR(s->idem.key_arg, "x-request-id");
    CHECK_STR(s->idem.prefix, "shop:");
    CHECK_INT(s->idem.ttl_ms, 0);
    CHECK_INT(s->idem.lease_ms, 60000);
    CHECK_INT(s->idem.missing_key_hash, 1);

    s = &cfg->subs[1]; /* delays replace the defaults' backoff whole */
    CHECK_INT(s->retry.max_attempts, 3);
    CHECK_DELAYS(&s->retry, 100, 2000, 3600000);
    CHECK_BUILTIN_BACKOFF(&s->retry);
    CHECK_INT(s->idem.enabled, 1);
    CHECK_INT(s->idem.source, WR_KEY_JSON);
    CHECK_STR(s->idem.key_arg, "order.id");
    CHECK_STR(s->idem.prefix, "shop:");
    CHECK_INT(s->idem.ttl_ms, 36 * 3600000LL);
    CHECK_INT(s->idem.lease_ms, 60000);
    CHECK_INT(s->idem.missing_key_hash, 1);

    s = &cfg->subs[2]; /* backoff merged key by key */
    CHECK_INT(s->retry.max_attempts, 7);
    CHECK_NO_DELAYS(&s->retry);
    CHECK_INT(s->retry.initial_ms, 250);
    CHECK(s->retry.multiplier == 10.0);
    CHECK_INT(s->retry.max_ms, 600000);
    CHECK(s->retry.jitter == 0.2);
    CHECK_INT(s->idem.enabled, 0);
    CHECK_INT(s->idem.source, WR_KEY_MESSAGE_ID);
    CHECK(s->idem.key_arg == NULL);
    CHECK_STR(s->idem.prefix, "c:");
    CHECK_INT(s->idem.ttl_ms, 3650 * 86400000LL);
    CHECK_INT(s->idem.lease_ms, 3600000);
    CHECK_INT(s->idem.missing_key_hash, 0);

    s = &cfg->subs[3]; /* the bounds themselves are accepted */
    CHECK_INT(s->retry.max_attempts, 100);
    CHECK_DELAYS(&s->retry, 1, 86400000);
    CHECK_BUILTIN_BACKOFF(&s->retry);
    wr_config_free(cfg);

    /* With the backoff back in, d sets both. */
    EXPECT_ERRORS(text, "53:7: subscriptions[3].retry: set either delays or backoff, not both");
}

/* A subscription's section is merged over the defaults' key by key. */
static void test_policy_merge(void)
{
    /* Only max_attempts: the defaults' delays stay (defaults after subscriptions). */
    wr_config *cfg = LOAD_OK(MINIMAL "    retry:\n"
                                     "      max_attempts: 9\n"
                                     "    idempotency:\n"
                                     "      lease: 5s\n"
                                     "defaults:\n"
                                     "  retry:\n"
                                     "    max_attempts: 2\n"
                                     "    delays: [2s, 4s]\n"
                                     "  idempotency:\n"
                                     "    key: header:id\n"
                                     "    ttl: 1d\n");
    if (cfg != NULL) {
        wr_subscription *s = &cfg->subs[0];
        CHECK_INT(s->retry.max_attempts, 9);
        CHECK_DELAYS(&s->retry, 2000, 4000);
        CHECK_BUILTIN_BACKOFF(&s->retry);
        CHECK_INT(s->idem.source, WR_KEY_HEADER);
        CHECK_STR(s->idem.key_arg, "id");
        CHECK_INT(s->idem.ttl_ms, 86400000);
        CHECK_INT(s->idem.lease_ms, 5000);
        CHECK_STR(s->idem.prefix, "warren:idem:");
        wr_config_free(cfg);
    }

    /* The defaults use delays, the subscription switches to backoff. */
    cfg = LOAD_OK(MINIMAL "    retry:\n"
                          "      backoff:\n"
                          "        initial: 3s\n"
                          "  - name: b\n"
                          "    queue: q2\n"
                          "    handler: h.lua\n"
                          "defaults:\n"
                          "  retry:\n"
                          "    max_attempts: 2\n"
                          "    delays: [2s, 4s]\n");
    if (cfg != NULL) {
        wr_retry_policy *r = &cfg->subs[0].retry;
        CHECK_INT(r->max_attempts, 2);
        CHECK_NO_DELAYS(r);
        CHECK_INT(r->initial_ms, 3000);
        CHECK(r->multiplier == 2.0);
        CHECK_INT(r->max_ms, 300000);
        CHECK(r->jitter == 0.0);
        CHECK_DELAYS(&cfg->subs[1].retry, 2000, 4000);
        wr_config_free(cfg);
    }

    /* The defaults use backoff, the subscription switches to delays: built-in backoff values. */
    cfg = LOAD_OK(MINIMAL "    retry:\n"
                          "      delays: [10s]\n"
                          "defaults:\n"
                          "  retry:\n"
                          "    backoff: {initial: 2s, multiplier: 3, max: 1h, jitter: 1}\n");
    if (cfg != NULL) {
        CHECK_INT(cfg->subs[0].retry.max_attempts, 5);
        CHECK_DELAYS(&cfg->subs[0].retry, 10000);
        CHECK_BUILTIN_BACKOFF(&cfg->subs[0].retry);
        wr_config_free(cfg);
    }

    /* max equal to initial is fine, and so is a sub fixing the defaults' max by its own. */
    cfg = LOAD_OK(MINIMAL "    retry:\n"
                          "      backoff: {max: 2s}\n"
                          "defaults:\n"
                          "  retry:\n"
                          "    backoff: {initial: 2s, max: 1h}\n");
    if (cfg != NULL) {
        CHECK_INT(cfg->subs[0].retry.initial_ms, 2000);
        CHECK_INT(cfg->subs[0].retry.max_ms, 2000);
        wr_config_free(cfg);
    }
}

static void test_policy_errors(void)
{
    char text[4096], big[300];

    /* delays and backoff together, in a subscription and in the defaults. */
    EXPECT_ERRORS(MINIMAL "    retry:\n"
                          "      delays: [1s]\n"
                          "      backoff:\n"
                          "        initial: 1s\n"
                          "defaults:\n"
                          "  retry:\n"
                          "    backoff: {initial: 1s}\n"
                          "    max_attempts: 3\n"
                          "    delays: [1s]\n",
                  "11:7: subscriptions[0].retry: set either delays or backoff, not both",
                  "17:5: defaults.retry: set either delays or backoff, not both");

    /* Key specs and JSON paths. */
    EXPECT_ERRORS(MINIMAL "    idempotency:\n"
                          "      key: jsn:x\n"
                          "  - name: b\n"
                          "    queue: q2\n"
                          "    handler: h.lua\n"
                          "    idempotency: {key: 'header:'}\n"
                          "  - name: c\n"
                          "    queue: q3\n"
                          "    handler: h.lua\n"
                          "    idempotency: {key: json:order..id}\n"
                          "  - name: d\n"
                          "    queue: q4\n"
                          "    handler: h.lua\n"
                          "    idempotency: {key: 'json:'}\n"
                          "defaults:\n"
                          "  idempotency:\n"
                          "    key: json:order.id$\n",
                  "10:12: subscriptions[0].idempotency.key: expected message_id, header:NAME or "
                  "json:PATH, got 'jsn:x'",
                  "14:24: subscriptions[1].idempotency.key: expected message_id, header:NAME or "
                  "json:PATH, got 'header:'",
                  "18:24: subscriptions[2].idempotency.key: invalid JSON path (names of letters, "
                  "digits, '_' and '-', joined by '.'), got a value of 9 bytes (not shown)",
                  "22:24: subscriptions[3].idempotency.key: invalid JSON path (names of letters, "
                  "digits, '_' and '-', joined by '.'), got an empty value",
                  "25:10: defaults.idempotency.key: invalid JSON path (names of letters, "
                  "digits, '_' and '-', joined by '.'), got a value of 9 bytes (not shown)");
    memset(big, 'h', 256);
    big[256] = '\0';
    snprintf(text, sizeof(text), MINIMAL "    idempotency:\n      key: header:%s\n", big);
    EXPECT_ERRORS(text, "10:12: subscriptions[0].idempotency.key: the header name must be at "
                        "most 255 bytes long, got 256 bytes");

    /* Numbers: wrong type, out of range, forms that are not plain decimals. */
    EXPECT_ERRORS(MINIMAL "    retry:\n"
                          "      backoff:\n"
                          "        multiplier: fast\n"
                          "        jitter: 1.5\n"
                          "defaults:\n"
                          "  retry:\n"
                          "    backoff:\n"
                          "      multiplier: 0.5\n"
                          "      jitter: -0.1\n",
                  "11:21: subscriptions[0].retry.backoff.multiplier: expected a number from 1 "
                  "to 10, got 'fast'",
                  "12:17: subscriptions[0].retry.backoff.jitter: expected a number from 0 to 1, "
                  "got '1.5'",
                  "16:19: defaults.retry.backoff.multiplier: expected a number from 1 to 10, "
                  "got '0.5'",
                  "17:15: defaults.retry.backoff.jitter: expected a number from 0 to 1, "
                  "got '-0.1'");
    EXPECT_ERRORS(MINIMAL "    retry:\n"
                          "      backoff:\n"
                          "        multiplier: [2]\n"
                          "        jitter: .5\n"
                          "  - name: b\n"
                          "    queue: q2\n"
                          "    handler: h.lua\n"
                          "    retry:\n"
                          "      backoff: {multiplier: 1e1, jitter: 0.5.1}\n"
                          "  - name: c\n"
                          "    queue: q3\n"
                          "    handler: h.lua\n"
                          "    retry:\n"
                          "      backoff: {multiplier: 10.01, jitter: ''}\n",
                  "11:21: subscriptions[0].retry.backoff.multiplier: expected a number from 1 "
                  "to 10, got a list",
                  "12:17: subscriptions[0].retry.backoff.jitter: expected a number from 0 to 1, "
                  "got '.5'",
                  "17:29: subscriptions[1].retry.backoff.multiplier: expected a number from 1 "
                  "to 10, got '1e1'",
                  "17:42: subscriptions[1].retry.backoff.jitter: expected a number from 0 to 1, "
                  "got '0.5.1'",
                  "22:29: subscriptions[2].retry.backoff.multiplier: expected a number from 1 "
                  "to 10, got '10.01'",
                  "22:44: subscriptions[2].retry.backoff.jitter: expected a number from 0 to 1, "
                  "got an empty value");

    /* backoff.max below backoff.initial, within a section and across the merge. */
    EXPECT_ERRORS(MINIMAL "    retry:\n"
                          "      backoff: {max: 1500ms}\n"
                          "  - name: b\n"
                          "    queue: q2\n"
                          "    handler: h.lua\n"
                          "    retry:\n"
                          "      backoff: {initial: 10m}\n"
                          "defaults:\n"
                          "  retry:\n"
                          "    backoff:\n"
                          "      initial: 2s\n"
                          "      max: 1s\n",
                  "10:22: subscriptions[0].retry.backoff.max: must be at least backoff.initial "
                  "(2s)",
                  "15:26: subscriptions[1].retry.backoff.initial: must be at most backoff.max "
                  "(1s)",
                  "20:12: defaults.retry.backoff.max: must be at least backoff.initial (2s)");
    EXPECT_ERRORS(MINIMAL "    retry:\n"
                          "      backoff: {initial: 10m}\n"
                          "  - name: b\n"
                          "    queue: q2\n"
                          "    handler: h.lua\n"
                          "    retry:\n"
                          "      backoff: {initial: 10m, max: soon}\n",
                  "10:26: subscriptions[0].retry.backoff.initial: must be at most backoff.max "
                  "(5m)",
                  "15:36: subscriptions[1].retry.backoff.max: expected a duration like 500ms, "
                  "5s, 2m, 1h or 7d, got 'soon'");

    /* Delay lists: empty, too long, items out of range or not durations. */
    snprintf(text, sizeof(text),
             MINIMAL "    retry:\n"
                     "      delays: []\n"
                     "  - name: b\n"
                     "    queue: q2\n"
                     "    handler: h.lua\n"
                     "    retry:\n"
                     "      delays: [%s1s]\n"
                     "  - name: c\n"
                     "    queue: q3\n"
                     "    handler: h.lua\n"
                     "    retry:\n"
                     "      delays: [1s, 25h, 0, 5x, [1s], '']\n"
                     "defaults:\n"
                     "  retry:\n"
                     "    delays: 5s\n"
                     "  idempotency:\n"
                     "    enabled: maybe\n",
             "1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, ");
    EXPECT_ERRORS(text, "10:15: subscriptions[0].retry.delays: expected a non-empty list",
                  "15:15: subscriptions[1].retry.delays: must have at most 20 entries, got 21",
                  "20:20: subscriptions[2].retry.delays[1]: expected a duration from 1ms to 1d, "
                  "got '25h'",
                  "20:25: subscriptions[2].retry.delays[2]: expected a duration from 1ms to 1d, "
                  "got '0'",
                  "20:28: subscriptions[2].retry.delays[3]: expected a duration like 500ms, 5s, "
                  "2m, 1h or 7d, got '5x'",
                  "20:32: subscriptions[2].retry.delays[4]: expected a duration like 500ms, 5s, "
                  "2m, 1h or 7d, got a list",
                  "20:38: subscriptions[2].retry.delays[5]: expected a duration like 500ms, 5s, "
                  "2m, 1h or 7d, got an empty value",
                  "23:13: defaults.retry.delays: expected a list of durations, got a string",
                  "25:14: defaults.idempotency.enabled: expected true or false, got 'maybe'");

    /* max_attempts, ttl, lease, prefix, missing_key. */
    EXPECT_ERRORS(MINIMAL "    retry: {max_attempts: 0}\n"
                          "    idempotency:\n"
                          "      ttl: 7x\n"
                          "      lease: 500ms\n"
                          "      missing_key: drop\n"
                          "      prefix: ''\n"
                          "defaults:\n"
                          "  retry: {max_attempts: 101}\n"
                          "  idempotency:\n"
                          "    ttl: 0s\n"
                          "    lease: 2h\n"
                          "    prefix: "
                          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
                          "    missing_key: DLQ\n",
                  "9:27: subscriptions[0].retry.max_attempts: expected an integer from 1 to "
                  "100, got '0'",
                  "11:12: subscriptions[0].idempotency.ttl: expected a duration like 500ms, 5s, "
                  "2m, 1h or 7d, or none, got '7x'",
                  "12:14: subscriptions[0].idempotency.lease: expected a duration from 1s to 1h, "
                  "got '500ms'",
                  "13:20: subscriptions[0].idempotency.missing_key: expected one of dlq, "
                  "body-hash, got 'drop'",
                  "14:15: subscriptions[0].idempotency.prefix: must not be empty",
                  "16:25: defaults.retry.max_attempts: expected an integer from 1 to 100, "
                  "got '101'",
                  "18:10: defaults.idempotency.ttl: expected a duration from 1s to 3650d, or "
                  "none, got '0s'",
                  "19:12: defaults.idempotency.lease: expected a duration from 1s to 1h, "
                  "got '2h'",
                  "20:13: defaults.idempotency.prefix: must be at most 100 bytes long, "
                  "got 101 bytes",
                  "21:18: defaults.idempotency.missing_key: expected one of dlq, body-hash, "
                  "got 'DLQ'");
    EXPECT_ERRORS(MINIMAL "    idempotency: {ttl: 3651d}\n",
                  "9:24: subscriptions[0].idempotency.ttl: expected a duration from 1s to "
                  "3650d, or none, got '3651d'");

    /* Unknown keys. */
    EXPECT_ERRORS(MINIMAL "    retry:\n"
                          "      max_attempt: 3\n"
                          "      backoff:\n"
                          "        factor: 2\n"
                          "defaults:\n"
                          "  idempotency:\n"
                          "    ttl_ms: 5\n",
                  "10:7: unknown key 'max_attempt' in subscriptions[0].retry (expected one of: "
                  "max_attempts, delays, backoff)",
                  "12:9: unknown key 'factor' in subscriptions[0].retry.backoff (expected one "
                  "of: initial, multiplier, max, jitter)",
                  "15:5: unknown key 'ttl_ms' in defaults.idempotency (expected one of: enabled, "
                  "key, prefix, ttl, lease, missing_key)");

    /* Wrong node kinds. */
    EXPECT_ERRORS(MINIMAL "    retry: [1s, 5s]\n"
                          "    idempotency:\n"
                          "  - name: b\n"
                          "    queue: q2\n"
                          "    handler: h.lua\n"
                          "    retry:\n"
                          "      backoff: 5s\n"
                          "      max_attempts: {n: 1}\n"
                          "    idempotency:\n"
                          "      key: [message_id]\n"
                          "defaults:\n"
                          "  retry: 3\n"
                          "  idempotency: [a]\n",
                  "9:12: subscriptions[0].retry: expected a mapping, got a list",
                  "10:17: subscriptions[0].idempotency: expected a mapping, got an empty value",
                  "15:16: subscriptions[1].retry.backoff: expected a mapping, got a string",
                  "16:21: subscriptions[1].retry.max_attempts: expected an integer from 1 to "
                  "100, got a mapping",
                  "18:12: subscriptions[1].idempotency.key: expected message_id, header:NAME or "
                  "json:PATH, got a list",
                  "20:10: defaults.retry: expected a mapping, got a string",
                  "21:16: defaults.idempotency: expected a mapping, got a list");
}

/* ------------------------------------------------------------------------ */
/* breaker and breakers                                                       */
/* ------------------------------------------------------------------------ */

/* Compare every field of a breaker policy. */
static void check_breaker_at(int caller, const char *what, const wr_breaker_policy *b, int enabled,
                             int window, int64_t window_ms, int min_calls, double ratio,
                             int consecutive, int64_t open_ms, int probes)
{
    check_count++;
    if (b->enabled != enabled || b->window != window || b->window_ms != window_ms ||
        b->min_calls != min_calls || b->failure_ratio != ratio ||
        b->consecutive_failures != consecutive || b->open_ms != open_ms ||
        b->half_open_probes != probes) {
        check_failures++;
        fprintf(stderr,
                "%s:%d: %s: got %d, %d, %lld, %d, %g, %d, %lld, %d;\n"
                "  want %d, %d, %lld, %d, %g, %d, %lld, %d\n",
                __FILE__, caller, what, b->enabled, b->window, (long long)b->window_ms,
                b->min_calls, b->failure_ratio, b->consecutive_failures, (long long)b->open_ms,
                b->half_open_probes, enabled, window, (long long)window_ms, min_calls, ratio,
                consecutive, (long long)open_ms, probes);
    }
}

#define CHECK_BREAKER(b, ...) check_breaker_at(__LINE__, #b, (b), __VA_ARGS__)

/* No breaker sections anywhere, or empty ones: the built-in defaults, no named breakers. */
static void test_breaker_defaults(void)
{
    wr_config *cfg = LOAD_OK(MINIMAL);
    if (cfg != NULL) {
        CHECK_BREAKER(&cfg->subs[0].breaker, 1, 20, 0, 10, 0.5, 0, 30000, 3);
        CHECK_INT(cfg->breaker_count, 0);
        CHECK(cfg->breakers == NULL);
        CHECK(cfg->breaker_names == NULL);
        wr_config_free(cfg);
    }

    cfg = LOAD_OK(MINIMAL "    breaker: {}\n"
                          "defaults:\n"
                          "  breaker: {}\n"
                          "breakers: {}\n");
    if (cfg != NULL) {
        CHECK_BREAKER(&cfg->subs[0].breaker, 1, 20, 0, 10, 0.5, 0, 30000, 3);
        CHECK_INT(cfg->breaker_count, 0);
        CHECK(cfg->breakers == NULL);
        CHECK(cfg->breaker_names == NULL);
        wr_config_free(cfg);
    }

    /* A named breaker with nothing set, and no defaults.breaker: the built-in values. */
    cfg = LOAD_OK(MINIMAL "breakers:\n"
                          "  search: {}\n");
    if (cfg != NULL) {
        CHECK_INT(cfg->breaker_count, 1);
        if (cfg->breaker_count == 1) {
            CHECK_STR(cfg->breaker_names[0], "search");
            CHECK_BREAKER(&cfg->breakers[0], 1, 20, 0, 10, 0.5, 0, 30000, 3);
        }
        wr_config_free(cfg);
    }
}

/* defaults.breaker over the built-in values, subscriptions and named breakers over it. */
static void test_breaker_merge(void)
{
    /* The defaults come last: merging waits for the whole file. */
    wr_config *cfg = LOAD_OK(MINIMAL "    breaker:\n"
                                     "      failure_ratio: 0.25\n"
                                     "      open_for: 1m\n"
                                     "  - name: b\n"
                                     "    queue: q2\n"
                                     "    handler: h.lua\n"
                                     "  - name: c\n"
                                     "    queue: q3\n"
                                     "    handler: h.lua\n"
                                     "    breaker:\n"
                                     "      enabled: false\n"
                                     "      window: 1000\n"
                                     "      window_time: none\n"
                                     "      min_calls: 1000\n"
                                     "      failure_ratio: 1\n"
                                     "      consecutive_failures: 1000\n"
                                     "      open_for: 100ms\n"
                                     "      half_open_probes: 100\n"
                                     "breakers:\n"
                                     "  payments:\n"
                                     "    failure_ratio: 0.3\n"
                                     "  search.v2-x_y: {window_time: 1h, consecutive_failures: "
                                     "0}\n"
                                     "  inventory:\n"
                                     "    enabled: off\n"
                                     "    window: 1\n"
                                     "    window_time: 1s\n"
                                     "    min_calls: 1\n"
                                     "    failure_ratio: 0.001\n"
                                     "    consecutive_failures: 1\n"
                                     "    open_for: ${WR_T_OPEN:-1h}\n"
                                     "    half_open_probes: 1\n"
                                     "defaults:\n"
                                     "  breaker:\n"
                                     "    enabled: true\n"
                                     "    window: 50\n"
                                     "    window_time: 2m\n"
                                     "    min_calls: 5\n"
                                     "    failure_ratio: 0.75\n"
                                     "    consecutive_failures: 7\n"
                                     "    open_for: 10s\n"
                                     "    half_open_probes: 2\n");
    unsetenv("WR_T_OPEN");
    if (cfg == NULL) {
        return;
    }
    /* Key by key: the subscription's two keys, the defaults' six others. */
    CHECK_BREAKER(&cfg->subs[0].breaker, 1, 50, 120000, 5, 0.25, 7, 60000, 2);
    /* No section: the defaults whole. */
    CHECK_BREAKER(&cfg->subs[1].breaker, 1, 50, 120000, 5, 0.75, 7, 10000, 2);
    /* Everything its own, at the upper bounds; `none` goes back to the count window. */
    CHECK_BREAKER(&cfg->subs[2].breaker, 0, 1000, 0, 1000, 1.0, 1000, 100, 100);
    CHECK_INT(cfg->breaker_count, 3);
    if (cfg->breaker_count == 3) {
        CHECK_STR(cfg->breaker_names[0], "payments");
        CHECK_BREAKER(&cfg->breakers[0], 1, 50, 120000, 5, 0.3, 7, 10000, 2);
        CHECK_STR(cfg->breaker_names[1], "search.v2-x_y");
        CHECK_BREAKER(&cfg->breakers[1], 1, 50, 3600000, 5, 0.75, 0, 10000, 2);
        CHECK_STR(cfg->breaker_names[2], "inventory");
        CHECK_BREAKER(&cfg->breakers[2], 0, 1, 1000, 1, 0.001, 1, 3600000, 1);
    }
    wr_config_free(cfg);

    /* Only some defaults set: the rest built in, for subscriptions and named breakers. */
    cfg = LOAD_OK(MINIMAL "    breaker: {window: 30}\n"
                          "defaults:\n"
                          "  breaker:\n"
                          "    min_calls: 20\n"
                          "breakers:\n"
                          "  payments: {open_for: 5s}\n");
    if (cfg != NULL) {
        CHECK_BREAKER(&cfg->subs[0].breaker, 1, 30, 0, 20, 0.5, 0, 30000, 3);
        CHECK_INT(cfg->breaker_count, 1);
        if (cfg->breaker_count == 1) {
            CHECK_STR(cfg->breaker_names[0], "payments");
            CHECK_BREAKER(&cfg->breakers[0], 1, 20, 0, 20, 0.5, 0, 5000, 3);
        }
        wr_config_free(cfg);
    }
}

static void test_breaker_errors(void)
{
    static const char keys[] = "(expected one of: enabled, window, window_time, min_calls, "
                               "failure_ratio, consecutive_failures, open_for, half_open_probes, "
                               "counts)";
    char unknown[3][256];

    /* Integers out of range, in a subscription, the defaults and a named breaker. */
    EXPECT_ERRORS(MINIMAL "    breaker:\n"
                          "      window: 0\n"
                          "      min_calls: 1001\n"
                          "      consecutive_failures: -1\n"
                          "defaults:\n"
                          "  breaker:\n"
                          "    window: 1001\n"
                          "    half_open_probes: 0\n"
                          "breakers:\n"
                          "  payments:\n"
                          "    half_open_probes: 101\n"
                          "    enabled: maybe\n",
                  "10:15: subscriptions[0].breaker.window: expected an integer from 1 to 1000, "
                  "got '0'",
                  "11:18: subscriptions[0].breaker.min_calls: expected an integer from 1 to "
                  "1000, got '1001'",
                  "12:29: subscriptions[0].breaker.consecutive_failures: expected an integer "
                  "from 0 to 1000, got '-1'",
                  "15:13: defaults.breaker.window: expected an integer from 1 to 1000, "
                  "got '1001'",
                  "16:23: defaults.breaker.half_open_probes: expected an integer from 1 to 100, "
                  "got '0'",
                  "19:23: breakers.payments.half_open_probes: expected an integer from 1 to 100, "
                  "got '101'",
                  "20:14: breakers.payments.enabled: expected true or false, got 'maybe'");

    /* failure_ratio: 0 is excluded, above 1 and words are not numbers in range. */
    EXPECT_ERRORS(MINIMAL "    breaker: {failure_ratio: 0}\n"
                          "  - name: b\n"
                          "    queue: q2\n"
                          "    handler: h.lua\n"
                          "    breaker: {failure_ratio: 0.0}\n"
                          "defaults:\n"
                          "  breaker:\n"
                          "    failure_ratio: 1.5\n"
                          "breakers:\n"
                          "  payments: {failure_ratio: half}\n"
                          "  search: {failure_ratio: 1e-1}\n",
                  "9:30: subscriptions[0].breaker.failure_ratio: expected a number from 0 "
                  "(exclusive) to 1, got '0'",
                  "13:30: subscriptions[1].breaker.failure_ratio: expected a number from 0 "
                  "(exclusive) to 1, got '0.0'",
                  "16:20: defaults.breaker.failure_ratio: expected a number from 0 (exclusive) "
                  "to 1, got '1.5'",
                  "18:29: breakers.payments.failure_ratio: expected a number from 0 (exclusive) "
                  "to 1, got 'half'",
                  "19:27: breakers.search.failure_ratio: expected a number from 0 (exclusive) "
                  "to 1, got '1e-1'");

    /* Durations: not a duration, below and above the bounds. */
    EXPECT_ERRORS(MINIMAL "    breaker:\n"
                          "      open_for: soon\n"
                          "      window_time: 500ms\n"
                          "defaults:\n"
                          "  breaker:\n"
                          "    open_for: 50ms\n"
                          "    window_time: 0\n"
                          "breakers:\n"
                          "  payments:\n"
                          "    open_for: 2h\n"
                          "    window_time: 61m\n",
                  "10:17: subscriptions[0].breaker.open_for: expected a duration like 500ms, 5s, "
                  "2m, 1h or 7d, got 'soon'",
                  "11:20: subscriptions[0].breaker.window_time: expected a duration from 1s to "
                  "1h, or none, got '500ms'",
                  "14:15: defaults.breaker.open_for: expected a duration from 100ms to 1h, "
                  "got '50ms'",
                  "15:18: defaults.breaker.window_time: expected a duration from 1s to 1h, or "
                  "none, got '0'",
                  "18:15: breakers.payments.open_for: expected a duration from 100ms to 1h, "
                  "got '2h'",
                  "19:18: breakers.payments.window_time: expected a duration from 1s to 1h, or "
                  "none, got '61m'");

    /* Unknown keys in every kind of breaker section. */
    snprintf(unknown[0], sizeof(unknown[0]),
             "10:7: unknown key 'ratio' in subscriptions[0].breaker %s", keys);
    snprintf(unknown[1], sizeof(unknown[1]), "13:5: unknown key 'window_ms' in defaults.breaker %s",
             keys);
    snprintf(unknown[2], sizeof(unknown[2]), "16:5: unknown key 'probes' in breakers.payments %s",
             keys);
    EXPECT_ERRORS(MINIMAL "    breaker:\n"
                          "      ratio: 0.5\n"
                          "defaults:\n"
                          "  breaker:\n"
                          "    window_ms: 1000\n"
                          "breakers:\n"
                          "  payments:\n"
                          "    probes: 3\n",
                  unknown[0], unknown[1], unknown[2]);

    /* Names: the subscription-name rule, reported at the key; and no duplicates. */
    EXPECT_ERRORS(MINIMAL "breakers:\n"
                          "  pay ments: {}\n"
                          "  '': {window: 5}\n"
                          "  payments/eu: {window: 0}\n"
                          "  ok.name_1-2: {}\n",
                  "10:3: breakers: may contain only letters, digits, '_', '.' and '-', got "
                  "'pay ments'",
                  "11:3: breakers: must not be empty",
                  "12:3: breakers: may contain only letters, digits, '_', '.' and '-', got "
                  "'payments/eu'",
                  "12:25: breakers.payments/eu.window: expected an integer from 1 to 1000, "
                  "got '0'");
    EXPECT_ERRORS(MINIMAL "breakers:\n"
                          "  payments: {}\n"
                          "  search: {}\n"
                          "  payments:\n"
                          "    window: 5\n",
                  "12:3: duplicate key 'payments' in breakers (first at 10:3)");
    EXPECT_ERRORS(MINIMAL "    breaker:\n"
                          "      window: 5\n"
                          "      window: 6\n",
                  "11:7: duplicate key 'window' in subscriptions[0].breaker (first at 10:7)");

    /* Wrong node kinds. */
    EXPECT_ERRORS(MINIMAL "breakers:\n"
                          "  - payments\n",
                  "10:3: breakers: expected a mapping, got a list");
    EXPECT_ERRORS(MINIMAL "breakers:\n", "9:10: breakers: expected a mapping, got an empty value");
    EXPECT_ERRORS(MINIMAL "    breaker: on\n"
                          "defaults:\n"
                          "  breaker: [window]\n"
                          "breakers:\n"
                          "  payments: 5\n"
                          "  search:\n"
                          "  ? [a, b]\n"
                          "  : {}\n"
                          "  inventory:\n"
                          "    window: [5]\n",
                  "9:14: subscriptions[0].breaker: expected a mapping, got a string",
                  "11:12: defaults.breaker: expected a mapping, got a list",
                  "13:13: breakers.payments: expected a mapping, got a string",
                  "14:10: breakers.search: expected a mapping, got an empty value",
                  "15:5: expected a string key in breakers, got a list",
                  "18:13: breakers.inventory.window: expected an integer from 1 to 1000, "
                  "got a list");
}

/* ------------------------------------------------------------------------ */
/* Parsers                                                                    */
/* ------------------------------------------------------------------------ */

static void test_journal(void)
{
    wr_config_errors errs = {0};
    wr_config *cfg = load_text(MINIMAL "journal:\n"
                                       "  enabled: false\n"
                                       "  ttl: 2h\n"
                                       "  max_entries: 200\n",
                               &errs);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK_INT(cfg->journal_enabled, 0);
        CHECK_INT(cfg->journal_ttl_ms, 2 * 3600000LL);
        CHECK_INT(cfg->journal_max_entries, 200);
        wr_config_free(cfg);
    }
    wr_config_errors_free(&errs);
    EXPECT_ERRORS(MINIMAL "journal:\n"
                          "  enabled: maybe\n"
                          "  ttl: 0s\n"
                          "  max_entries: 2\n"
                          "  cap: 3\n",
                  "10:12: journal.enabled: expected true or false, got 'maybe'",
                  "11:8: journal.ttl: expected a duration from 1s to 365d, got '0s'",
                  "12:16: journal.max_entries: expected an integer from 5 to 1000, got '2'",
                  "13:3: unknown key 'cap' in journal (expected one of: enabled, ttl, "
                  "max_entries)");
    EXPECT_ERRORS(MINIMAL "journal: 7d\n", "9:10: journal: expected a mapping, got a string");
}

static void test_durations(void)
{
    static const struct {
        const char *text;
        int64_t ms; /* -1: rejected */
    } cases[] = {
        {"250ms", 250},
        {"5s", 5000},
        {"2m", 120000},
        {"1h", 3600000},
        {"7d", 604800000},
        {"1m30s", 90000},
        {"1h2m3s4ms", 3723004},
        {"0s", 0},
        {"0", 0},
        {"0ms", 0},
        {"30s1m", 90000},
        {"106751991167d", 106751991167LL * 86400000},
        {"", -1},
        {"5", -1},
        {"00", -1},
        {"5x", -1},
        {"s", -1},
        {"-5s", -1},
        {"+5s", -1},
        {" 5s", -1},
        {"5s ", -1},
        {"1.5s", -1},
        {"5S", -1},
        {"5mss", -1},
        {"1m30", -1},
        {"106751991168d", -1},
        {"9223372036854775807ms", INT64_MAX},
        {"9223372036854775808ms", -1},
        {"9223372036854775807ms1ms", -1},
        {"99999999999999999999s", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ms = -42;
        int rc = wr_config_parse_duration(cases[i].text, &ms);
        if (cases[i].ms < 0) {
            if (rc != -1 || ms != -42) {
                fprintf(stderr, "duration '%s' should be rejected\n", cases[i].text);
            }
            CHECK_INT(rc, -1);
            CHECK_INT(ms, -42);
        } else {
            if (rc != 0 || ms != cases[i].ms) {
                fprintf(stderr, "duration '%s'\n", cases[i].text);
            }
            CHECK_INT(rc, 0);
            CHECK_INT(ms, cases[i].ms);
        }
    }
}

static void test_amqp_urls(void)
{
    wr_amqp_url u;
    const char *why;

    CHECK_INT(wr_amqp_url_parse("amqp://guest:guest@127.0.0.1:5672/", &u, &why), 0);
    CHECK_STR(u.host, "127.0.0.1");
    CHECK_INT(u.port, 5672);
    CHECK_STR(u.user, "guest");
    CHECK_STR(u.password, "guest");
    CHECK_STR(u.vhost, "/");
    CHECK_INT(u.ssl, 0);
    CHECK_STR(u.url, "amqp://guest:guest@127.0.0.1:5672/");
    CHECK_STR(u.redacted, "amqp://guest:***@127.0.0.1:5672/");
    wr_amqp_url_clear(&u);
    CHECK(u.url == NULL && u.host == NULL);

    CHECK_INT(wr_amqp_url_parse("amqps://broker", &u, &why), 0);
    CHECK_STR(u.host, "broker");
    CHECK_INT(u.port, 5671);
    CHECK_INT(u.ssl, 1);
    CHECK_STR(u.vhost, "/");
    CHECK_STR(u.redacted, "amqps://broker");
    wr_amqp_url_clear(&u);

    CHECK_INT(wr_amqp_url_parse("amqp://app@[::1]:5673/%2F", &u, &why), 0);
    CHECK_STR(u.host, "::1");
    CHECK_INT(u.port, 5673);
    CHECK_STR(u.user, "app");
    CHECK_STR(u.password, "guest"); /* rabbitmq-c's default */
    CHECK_STR(u.vhost, "/");
    CHECK_STR(u.redacted, "amqp://app@[::1]:5673/%2F");
    wr_amqp_url_clear(&u);

    CHECK_INT(wr_amqp_url_parse("amqp://u:p%3Aw%2Fd@h/my-vhost", &u, &why), 0);
    CHECK_STR(u.password, "p:w/d");
    CHECK_STR(u.vhost, "my-vhost");
    CHECK_STR(u.redacted, "amqp://u:***@h/my-vhost");
    wr_amqp_url_clear(&u);

    static const struct {
        const char *text, *why;
    } bad[] = {
        {"http://h/", "the scheme must be amqp:// or amqps://"},
        {"AMQP://h/", "the scheme must be amqp:// or amqps://"},
        {"amqp://", "missing host"},
        {"amqp://u:p@/v", "missing host"},
        {"amqp://h:0/", "port must be a number from 1 to 65535"},
        {"amqp://h:65536/", "port must be a number from 1 to 65535"},
        {"amqp://h:/", "port must be a number from 1 to 65535"},
        {"amqp://h:abc/", "port must be a number from 1 to 65535"},
        {"amqp://h/a/b", "the vhost must be a single path segment (write %2F for '/')"},
        {"amqp://h/v?heartbeat=5", "query strings and fragments are not supported "
                                   "(percent-encode '?' and '#')"},
        {"amqp://u:p%zz@h/", "bad percent-encoding (use %XX for ASCII characters only)"},
        {"amqp://u:p%C3%A9@h/", "bad percent-encoding (use %XX for ASCII characters only)"},
        {"amqp://[::1/", "unterminated '[' in the host"},
        {"amqp://[::1]x/", "unexpected text after the ']' of the host"},
        {"amqp://a:b:c@h/", "malformed URL (percent-encode ':', '@' and '/' in the user name "
                            "and password)"},
        {"amqp://h:1:2/", "too many ':' (IPv6 addresses go in brackets; percent-encode ':' in a "
                          "password as %3A)"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        if (wr_amqp_url_parse(bad[i].text, &u, &why) != -1) {
            fprintf(stderr, "AMQP URL '%s' should be rejected\n", bad[i].text);
            check_failures++;
            wr_amqp_url_clear(&u);
            continue;
        }
        CHECK_STR(why, bad[i].why);
        CHECK(u.url == NULL && u.host == NULL && u.password == NULL);
    }
}

static void test_redis_urls(void)
{
    wr_redis_url u;
    const char *why;

    CHECK_INT(wr_redis_url_parse("redis://127.0.0.1:6379/0", &u, &why), 0);
    CHECK_STR(u.host, "127.0.0.1");
    CHECK_INT(u.port, 6379);
    CHECK_INT(u.db, 0);
    CHECK(u.user == NULL);
    CHECK(u.password == NULL);
    CHECK_STR(u.redacted, "redis://127.0.0.1:6379/0");
    wr_redis_url_clear(&u);
    CHECK(u.url == NULL && u.host == NULL);

    CHECK_INT(wr_redis_url_parse("redis://cache", &u, &why), 0);
    CHECK_STR(u.host, "cache");
    CHECK_INT(u.port, 6379);
    CHECK_INT(u.db, 0);
    wr_redis_url_clear(&u);

    CHECK_INT(wr_redis_url_parse("redis://app:s%40cret@cache:6380/12", &u, &why), 0);
    CHECK_STR(u.user, "app");
    CHECK_STR(u.password, "s@cret");
    CHECK_STR(u.host, "cache");
    CHECK_INT(u.port, 6380);
    CHECK_INT(u.db, 12);
    CHECK_STR(u.url, "redis://app:s%40cret@cache:6380/12");
    CHECK_STR(u.redacted, "redis://app:***@cache:6380/12");
    wr_redis_url_clear(&u);

    CHECK_INT(wr_redis_url_parse("redis://:pw@cache/", &u, &why), 0);
    CHECK(u.user == NULL);
    CHECK_STR(u.password, "pw");
    CHECK_INT(u.db, 0);
    CHECK_STR(u.redacted, "redis://:***@cache/");
    wr_redis_url_clear(&u);

    /* As in redis-cli, a userinfo without ':' is a password alone. */
    CHECK_INT(wr_redis_url_parse("redis://justpw@[::1]:7000", &u, &why), 0);
    CHECK(u.user == NULL);
    CHECK_STR(u.password, "justpw");
    CHECK_STR(u.host, "::1");
    CHECK_INT(u.port, 7000);
    CHECK_STR(u.redacted, "redis://***@[::1]:7000");
    wr_redis_url_clear(&u);

    static const struct {
        const char *text, *why;
    } bad[] = {
        {"http://cache", "the scheme must be redis://"},
        {"cache:6379", "the scheme must be redis://"},
        {"rediss://cache", "TLS (rediss://) is not supported"},
        {"unix:///tmp/redis.sock", "unix sockets are not supported"},
        {"redis://", "missing host"},
        {"redis://:pw@", "missing host"},
        {"redis://:6379", "missing host"},
        {"redis://cache:0", "port must be a number from 1 to 65535"},
        {"redis://cache:65536", "port must be a number from 1 to 65535"},
        {"redis://cache:x", "port must be a number from 1 to 65535"},
        {"redis://cache/-1", "the database must be a non-negative integer"},
        {"redis://cache/a", "the database must be a non-negative integer"},
        {"redis://cache/1/2", "the database must be a non-negative integer"},
        {"redis://cache/99999999999", "the database must be a non-negative integer"},
        {"redis://cache/0?timeout=1", "query strings and fragments are not supported "
                                      "(percent-encode '?' and '#')"},
        {"redis://u:p%g1@cache", "bad percent-encoding in the user name or password"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        if (wr_redis_url_parse(bad[i].text, &u, &why) != -1) {
            fprintf(stderr, "Redis URL '%s' should be rejected\n", bad[i].text);
            check_failures++;
            wr_redis_url_clear(&u);
            continue;
        }
        CHECK_STR(why, bad[i].why);
        CHECK(u.url == NULL && u.host == NULL && u.password == NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* Hostile input: limits, NUL bytes, secrets in messages                      */
/* ------------------------------------------------------------------------ */

/* Seconds of monotonic time since T0 (a timespec taken by the caller). */
static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* A buffer holding MINIMAL, then PREFIX, then REPEAT N times, then SUFFIX (malloc'd). */
static char *build_text(const char *prefix, const char *repeat, int n, const char *suffix)
{
    size_t cap = strlen(MINIMAL) + strlen(prefix) + strlen(repeat) * (size_t)n + strlen(suffix) + 1;
    char *text = malloc(cap), *p = text;
    p += sprintf(p, "%s%s", MINIMAL, prefix);
    for (int i = 0; i < n; i++) {
        p += sprintf(p, "%s", repeat);
    }
    sprintf(p, "%s", suffix);
    return text;
}

/*
 * ${} defaults nest, but only so deep: 600 KB of "${A:-" used to recurse once
 * per level (a stack overflow) after a quadratic scan. Now: an error at once.
 */
static void test_expansion_depth(void)
{
    struct timespec t0;

    unsetenv("WR_T_UNSET");
    setenv("WR_T_SET", "v", 1);
    /* Eight levels are fine... */
    wr_config *cfg = LOAD_OK(MINIMAL "    dlq: ${WR_T_UNSET:-${WR_T_UNSET:-${WR_T_UNSET:-"
                                     "${WR_T_UNSET:-${WR_T_UNSET:-${WR_T_UNSET:-${WR_T_UNSET:-"
                                     "${WR_T_UNSET:-deep}}}}}}}}\n");
    if (cfg != NULL) {
        CHECK_STR(cfg->subs[0].dlq, "deep");
        wr_config_free(cfg);
    }
    /* ...nine are not, even when the outer variable is set and the default unused. */
    EXPECT_ERRORS(MINIMAL
                  "    dlq: ${WR_T_SET:-${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A:-x}}}}}}}}}\n",
                  "9:10: subscriptions[0].dlq: ${} defaults nested more than 8 deep");

    char *closers = malloc(40003);
    closers[0] = 'x';
    memset(closers + 1, '}', 40000);
    strcpy(closers + 40001, "\n");
    char *text = build_text("    dlq: ", "${WR_T_UNSET:-", 40000, closers);
    free(closers);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    EXPECT_ERRORS(text, "9:10: subscriptions[0].dlq: ${} defaults nested more than 8 deep");
    CHECK(seconds_since(&t0) < 2.0);
    free(text);
    unsetenv("WR_T_SET");
}

/*
 * A value may not grow past 64 KiB, however it is made: written out, or
 * expanded from variables (a few hundred "${BIG}" would otherwise build
 * gigabytes before anything looked at the result).
 */
static void test_value_size(void)
{
    char *big = malloc(40001);
    memset(big, 'b', 40000);
    big[40000] = '\0';
    setenv("WR_T_BIG", big, 1);
    free(big);

    char *text = build_text("    dlq: ", "${WR_T_BIG}", 50000, "\n");
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    EXPECT_ERRORS(text, "9:10: subscriptions[0].dlq: the value is longer than 64 KiB");
    CHECK(seconds_since(&t0) < 2.0);
    free(text);

    text = build_text("    dlq: ", "d", 70000, "\n");
    EXPECT_ERRORS(text, "9:10: subscriptions[0].dlq: the value is longer than 64 KiB");
    free(text);
    unsetenv("WR_T_BIG");
}

/*
 * libyaml has no nesting limit and its scanner is quadratic in the depth of
 * flow collections (400 KB of '[' ran for more than 20 s); the loader stops
 * at 32 levels, flow or block, before the document is built.
 */
static void test_yaml_depth(void)
{
    struct timespec t0;
    char *text = build_text("    bindings: ", "[", 200000, "\n");

    clock_gettime(CLOCK_MONOTONIC, &t0);
    EXPECT_ERRORS(text, "9:44: YAML collections nested more than 32 deep");
    CHECK(seconds_since(&t0) < 5.0);
    free(text);

    text = build_text("    bindings: ", "{a: ", 100000, "\n");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    EXPECT_ERRORS(text, "9:131: YAML collections nested more than 32 deep");
    CHECK(seconds_since(&t0) < 5.0);
    free(text);

    /* Block collections count the same way. */
    char block[8192], *p = block;
    p += sprintf(p, "%s", MINIMAL "    retry:\n");
    for (int i = 0; i < 40; i++) {
        p += sprintf(p, "%*sk%d:\n", 6 + 2 * i, "", i);
    }
    sprintf(p, "%*sx\n", 6 + 2 * 40, "");
    EXPECT_ERRORS(block, "39:65: YAML collections nested more than 32 deep");
}

/* The file itself: at most 1 MiB is read (a config is a few KiB; /dev/zero is not one). */
static void test_file_size(void)
{
    char *text = build_text("", "# a comment line of some length, repeated many times\n",
                            1048576 / 53 + 1, "");
    EXPECT_ERRORS(text, "19791:9: the file is larger than 1 MiB");
    free(text);

    wr_config_errors errs;
    CHECK(wr_config_load("/dev/zero", &errs) == NULL);
    CHECK_INT(errs.count, 1);
    CHECK_STR(errs.lines[0], "/dev/zero:1:1048577: the file is larger than 1 MiB");
    wr_config_errors_free(&errs);
}

/*
 * YAML aliases reuse a node wherever they appear: three nested lists of
 * aliases make a few KB stand for billions of values. The walk counts every
 * value it visits and stops at 100000.
 */
static void test_alias_budget(void)
{
    size_t cap = 1 << 20;
    char *text = malloc(cap), *p = text;
    p += sprintf(p, "amqp:\n  url: amqp://localhost/\nredis:\n  url: redis://localhost\n"
                    "subscriptions:\n"
                    "  - name: a\n    queue: q\n    handler: h.lua\n"
                    "    bindings: &b\n"
                    "      - exchange: x\n        routing_keys: &r [k");
    for (int i = 1; i < 1000; i++) {
        p += sprintf(p, ", k");
    }
    p += sprintf(p, "]\n");
    for (int i = 1; i < 300; i++) {
        p += sprintf(p, "      - {exchange: x, routing_keys: *r}\n");
    }
    (void)cap;
    EXPECT_ERRORS(text, "11:2097: subscriptions[0].bindings[99].routing_keys[690]: more than "
                        "100000 values in all (a YAML alias counts once per use)");
    free(text);
}

/* Lists whose checks compare every element with every other are bounded. */
static void test_list_bounds(void)
{
    char *text = build_text("breakers:\n", "  b: {}\n", 1, "");
    free(text);
    size_t cap = 1 << 20;
    text = malloc(cap);
    char *p = text;
    p += sprintf(p, "%sbreakers:\n", MINIMAL);
    for (int i = 0; i < 1001; i++) {
        p += sprintf(p, "  b%d: {}\n", i);
    }
    EXPECT_ERRORS(text, "10:3: breakers: must have at most 1000 entries, got 1001");
    p = text;
    p += sprintf(p, "amqp:\n  url: amqp://localhost/\nredis:\n  url: redis://localhost\n"
                    "subscriptions:\n");
    for (int i = 0; i < 1001; i++) {
        p += sprintf(p, "  - {name: s%d, queue: q%d, handler: h.lua}\n", i, i);
    }
    EXPECT_ERRORS(text, "6:3: subscriptions: must have at most 1000 entries, got 1001");
    free(text);
}

/* A NUL byte (YAML's "\0" escape) would silently cut a C string: refused. */
static void test_nul_bytes(void)
{
    EXPECT_ERRORS(MINIMAL "    dlq: \"q.dlq\\0tail\"\n",
                  "9:10: subscriptions[0].dlq: contains a NUL byte (\\0)");
    EXPECT_ERRORS(MINIMAL "    bindings:\n"
                          "      - exchange: x\n"
                          "        routing_keys: [\"a\\0\"]\n"
                          "    \"prefetch\\0x\": 5\n",
                  "11:24: subscriptions[0].bindings[0].routing_keys[0]: contains a NUL byte "
                  "(\\0)",
                  "12:5: a key in subscriptions[0] contains a NUL byte (\\0)");
    EXPECT_ERRORS(MINIMAL "breakers:\n  \"pay\\0ments\": {}\n",
                  "10:3: a key in breakers contains a NUL byte (\\0)");
}

/*
 * A value that does not fit its key is described, not echoed, unless it is a
 * few characters long: a secret pasted under the wrong key must not reach
 * the terminal or a CI log. URLs are shown masked only when they look like
 * URLs (a known scheme); a scheme-less one may be the password itself.
 */
static void test_values_not_echoed(void)
{
    static const char secret[] = "S3cr3t+Passw0rd";
    wr_config_errors errs;

    EXPECT_ERRORS(MINIMAL "log:\n  level: hunter2hunter2\n",
                  "10:10: log.level: expected one of debug, info, warn, error, got a value of "
                  "14 bytes (not shown)");
    EXPECT_ERRORS(MINIMAL "log:\n  level: verbose\n",
                  "10:10: log.level: expected one of debug, info, warn, error, got 'verbose'");
    EXPECT_ERRORS("amqp:\n"
                  "  url: 'user:pa://ss@host'\n"
                  "redis:\n"
                  "  url: s3cr3tpassword\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n",
                  "2:8: amqp.url: invalid AMQP URL (the scheme must be amqp:// or amqps://), "
                  "got a value of 17 bytes (not shown)",
                  "4:8: redis.url: invalid Redis URL (the scheme must be redis://), got a value "
                  "of 14 bytes (not shown)");
    /* A URL with a scheme that is not ours: shown, its whole userinfo masked. */
    EXPECT_ERRORS("amqp:\n"
                  "  url: 'http://tok3n@host/'\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n",
                  "2:8: amqp.url: invalid AMQP URL 'http://***@host/' (the scheme must be amqp:// "
                  "or amqps://)");

    /* Every kind of value check, fed the secret: it appears in no message. */
    setenv("WR_T_SECRET", secret, 1);
    wr_config *cfg = load_text("amqp:\n"
                               "  url: ${WR_T_SECRET}\n"
                               "  heartbeat: ${WR_T_SECRET}\n"
                               "redis:\n"
                               "  url: ${WR_T_SECRET}\n"
                               "  timeout: ${WR_T_SECRET}\n"
                               "log:\n"
                               "  level: ${WR_T_SECRET}\n"
                               "  bodies: ${WR_T_SECRET}\n"
                               "defaults:\n"
                               "  prefetch: ${WR_T_SECRET}\n"
                               "  max_body_size: ${WR_T_SECRET}\n"
                               "  retry: {backoff: {multiplier: '${WR_T_SECRET}'}}\n"
                               "  idempotency: {key: '${WR_T_SECRET}'}\n"
                               "subscriptions:\n"
                               "  - name: ${WR_T_SECRET}\n"
                               "    queue: ${WR_T_SECRET}\n"
                               "    dlq: ${WR_T_SECRET}\n"
                               "    handler: h.lua\n"
                               "    idempotency: {key: 'json:${WR_T_SECRET}'}\n"
                               "    bindings: [{exchange: x, type: '${WR_T_SECRET}', "
                               "routing_keys: a}]\n",
                               &errs);
    CHECK(cfg == NULL);
    CHECK_INT(errs.count, 14);
    for (int i = 0; i < errs.count; i++) {
        check_count++;
        if (strstr(errs.lines[i], "S3cr3t") != NULL) {
            check_failures++;
            fprintf(stderr, "%s:%d: secret echoed: %s\n", __FILE__, __LINE__, errs.lines[i]);
        }
    }
    wr_config_errors_free(&errs);
    unsetenv("WR_T_SECRET");
}

/*
 * amqp.tls: files resolved like handler paths and pointed to by the loaded
 * URL; only with amqps://, and a client certificate comes with its key.
 */
/* redis.sentinels, master_name, min_replicas_acked: loaded into the URL the
 * connections use; the pairs and bounds checked at their keys. */
/* amqp.urls and the queue types: the other nodes parsed like amqp.url (the
 * TLS files shared), tried in turn; dlq_type auto is quorum with amqp.urls. */
static void test_amqp_cluster(void)
{
    wr_config *cfg = LOAD_OK("amqp:\n"
                             "  url: amqp://u:pw@n1:5672/v\n"
                             "  urls: [amqp://u:pw@n2:5672/v, 'amqp://u:pw@n3/v']\n"
                             "redis:\n  url: redis://h\n"
                             "subscriptions:\n"
                             "  - name: a\n    queue: q\n    handler: h.lua\n"
                             "    queue_type: quorum\n    delay_queue_type: quorum\n"
                             "  - name: b\n    queue: q2\n    handler: h.lua\n"
                             "    dlq_type: classic\n");
    if (cfg != NULL) {
        CHECK_INT(cfg->amqp_alt_count, 2);
        CHECK_STR(cfg->amqp_alts[0].host, "n2");
        CHECK_STR(cfg->amqp_alts[1].redacted, "amqp://u:***@n3/v");
        CHECK(cfg->amqp_alts[1].tls == &cfg->amqp_tls);
        CHECK(wr_config_amqp_url(cfg, 0) == &cfg->amqp);
        CHECK(wr_config_amqp_url(cfg, 2) == &cfg->amqp_alts[1]);
        CHECK(wr_config_amqp_url(cfg, 3) == &cfg->amqp);
        CHECK_INT(cfg->subs[0].queue_type, 1);
        CHECK_INT(cfg->subs[0].delay_queue_type, 1);
        CHECK_INT(cfg->subs[0].dlq_quorum, 1); /* auto, with amqp.urls */
        CHECK_INT(cfg->subs[1].queue_type, 0);
        CHECK_INT(cfg->subs[1].dlq_quorum, 0); /* classic, as written */
        wr_config_free(cfg);
    }
    cfg = LOAD_OK(MINIMAL);
    if (cfg != NULL) {
        CHECK_INT(cfg->amqp_alt_count, 0);
        CHECK(wr_config_amqp_url(cfg, 5) == &cfg->amqp);
        CHECK_INT(cfg->subs[0].dlq_quorum, 0); /* auto, one node */
        wr_config_free(cfg);
    }
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://u:pw@n1/\n"
                  "  urls: ['amqps://u:secret@n2/', 'http://x', amqp://n3/]\n"
                  "redis:\n  url: redis://h\n"
                  "subscriptions:\n  - name: a\n    queue: q\n    handler: h.lua\n"
                  "    dlq_type: quorate\n",
                  "3:10: amqp.urls[0]: every node takes the same scheme as amqp.url (amqp://)",
                  "3:34: amqp.urls[1]: invalid AMQP URL 'http://x' (the scheme must be amqp:// or "
                  "amqps://)",
                  "10:15: subscriptions[0].dlq_type: expected one of auto, classic, quorum, got "
                  "'quorate'");
    /* an entry that is not a string is reported once, by the list (it used to
     * reach the URL parser as a null pointer: found by fuzz_config) */
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://u:pw@n1/\n"
                  "  urls:\n"
                  "  - name: a\n"
                  "  - amqp://n2/\n"
                  "redis:\n  url: redis://h\n"
                  "subscriptions:\n  - name: a\n    queue: q\n    handler: h.lua\n",
                  "4:5: amqp.urls[0]: expected a string, got a mapping");
}

static void test_redis_ha(void)
{
    wr_config *cfg = LOAD_OK("amqp:\n  url: amqp://h/\n"
                             "redis:\n"
                             "  url: redis://:pw@ignored:1/2\n"
                             "  sentinels: [10.0.0.5:26379, 'sentinel-b:26380']\n"
                             "  master_name: orders\n"
                             "  min_replicas_acked: 1\n"
                             "  min_replicas_timeout: 250ms\n"
                             "subscriptions:\n  - name: a\n    queue: q\n    handler: h.lua\n");
    if (cfg != NULL) {
        CHECK_INT(cfg->redis.sentinel_count, 2);
        CHECK_STR(cfg->redis.sentinels[0], "10.0.0.5:26379");
        CHECK_STR(cfg->redis.sentinels[1], "sentinel-b:26380");
        CHECK_STR(cfg->redis.master_name, "orders");
        CHECK_STR(cfg->redis.password, "pw");
        CHECK_INT(cfg->redis.db, 2);
        CHECK_INT(cfg->redis_min_replicas, 1);
        CHECK_INT((int)cfg->redis_min_replicas_timeout_ms, 250);
        wr_config_free(cfg);
    }
    cfg = LOAD_OK(MINIMAL);
    if (cfg != NULL) {
        CHECK_INT(cfg->redis.sentinel_count, 0);
        CHECK(cfg->redis.sentinels == NULL && cfg->redis.master_name == NULL);
        CHECK_INT(cfg->redis_min_replicas, 0);
        CHECK_INT((int)cfg->redis_min_replicas_timeout_ms, 1000);
        wr_config_free(cfg);
    }
    EXPECT_ERRORS("amqp:\n  url: amqp://h/\n"
                  "redis:\n"
                  "  url: redis://h\n"
                  "  sentinels: [10.0.0.5:26379, 'nope', 'h:0', ':26379']\n"
                  "  min_replicas_acked: 17\n"
                  "  min_replicas_timeout: 2s\n"
                  "subscriptions:\n  - name: a\n    queue: q\n    handler: h.lua\n",
                  "5:14: redis.sentinels: needs redis.master_name too",
                  "5:31: redis.sentinels[1]: expected HOST:PORT (such as 10.0.0.5:26379)",
                  "5:39: redis.sentinels[2]: expected HOST:PORT (such as 10.0.0.5:26379)",
                  "5:46: redis.sentinels[3]: expected HOST:PORT (such as 10.0.0.5:26379)",
                  "6:23: redis.min_replicas_acked: expected an integer from 0 to 16, got '17'");
    EXPECT_ERRORS("amqp:\n  url: amqp://h/\n"
                  "redis:\n"
                  "  url: redis://h\n"
                  "  min_replicas_acked: 1\n"
                  "  min_replicas_timeout: 2s\n"
                  "subscriptions:\n  - name: a\n    queue: q\n    handler: h.lua\n",
                  "6:25: redis.min_replicas_timeout (2000 ms) must be shorter than redis.timeout "
                  "(2000 ms)");
    EXPECT_ERRORS("amqp:\n  url: amqp://h/\n"
                  "redis:\n"
                  "  url: redis://h\n"
                  "  timeout: 500ms\n"
                  "  master_name: orders\n"
                  "  min_replicas_acked: 2\n"
                  "subscriptions:\n  - name: a\n    queue: q\n    handler: h.lua\n",
                  "5:12: redis.min_replicas_timeout (1000 ms) must be shorter than redis.timeout "
                  "(500 ms)",
                  "6:16: redis.master_name: needs redis.sentinels too");
}

static void test_tls_config(void)
{
    char path[PATH_MAX + 64], line[PATH_MAX + 200];

    write_file("conf/ca.pem", "not checked here\n");
    write_file("conf/client.pem", "x\n");
    write_file("conf/client.key", "x\n");
    wr_config *cfg = LOAD_OK("amqp:\n"
                             "  url: amqps://guest:guest@localhost:5671/\n"
                             "  tls:\n"
                             "    ca: ca.pem\n"
                             "    cert: client.pem\n"
                             "    key: client.key\n"
                             "redis:\n"
                             "  url: redis://localhost\n"
                             "subscriptions:\n"
                             "  - name: a\n"
                             "    queue: q\n"
                             "    handler: h.lua\n");
    if (cfg != NULL) {
        CHECK_INT(cfg->amqp.ssl, 1);
        CHECK(cfg->amqp.tls == &cfg->amqp_tls);
        snprintf(path, sizeof(path), "%s/ca.pem", conf_dir);
        CHECK_STR(cfg->amqp_tls.ca, path);
        snprintf(path, sizeof(path), "%s/client.pem", conf_dir);
        CHECK_STR(cfg->amqp_tls.cert, path);
        snprintf(path, sizeof(path), "%s/client.key", conf_dir);
        CHECK_STR(cfg->amqp_tls.key, path);
        wr_config_free(cfg);
    }
    cfg = LOAD_OK("amqp:\n  url: amqps://h/\nredis:\n  url: redis://h\n"
                  "subscriptions:\n  - name: a\n    queue: q\n    handler: h.lua\n");
    if (cfg != NULL) {
        CHECK(cfg->amqp.tls == &cfg->amqp_tls);
        CHECK(cfg->amqp_tls.ca == NULL && cfg->amqp_tls.cert == NULL);
        wr_config_free(cfg);
    }

    EXPECT_ERRORS("amqp:\n"
                  "  url: amqp://localhost/\n"
                  "  tls: {ca: ca.pem}\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n",
                  "3:8: amqp.tls: TLS files are set but amqp.url is not an amqps:// URL");
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqps://localhost/\n"
                  "  tls:\n"
                  "    cert: client.pem\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n",
                  "4:5: amqp.tls: cert and key go together: key is missing");
    snprintf(line, sizeof(line),
             "3:13: amqp.tls.ca: ca file not found (relative to %s), got 'nope.pem'", conf_dir);
    EXPECT_ERRORS("amqp:\n"
                  "  url: amqps://localhost/\n"
                  "  tls: {ca: nope.pem, key: client.key}\n"
                  "redis:\n"
                  "  url: redis://localhost\n"
                  "subscriptions:\n"
                  "  - name: a\n"
                  "    queue: q\n"
                  "    handler: h.lua\n",
                  "3:8: amqp.tls: cert and key go together: cert is missing", line);
    static const char *const files[] = {"conf/ca.pem", "conf/client.pem", "conf/client.key"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", tmp_dir, files[i]);
        unlink(path);
    }
}

/* A message stays one line: control characters in what it quotes become '?'. */
static void test_control_characters(void)
{
    EXPECT_ERRORS(MINIMAL "log: {level: \"a\\tb\\nc\"}\n",
                  "9:14: log.level: expected one of debug, info, warn, error, got 'a?b?c'");
    EXPECT_ERRORS(MINIMAL "\"x\\ny\": 1\n",
                  "9:1: unknown key 'x?y' at the top level (expected one of: amqp, redis, log, "
                  "defaults, breakers, shutdown, store, http, journal, security, subscriptions)");
    EXPECT_ERRORS(MINIMAL "    dlq: \"${A\\rB}\"\n",
                  "9:10: subscriptions[0].dlq: invalid environment variable name 'A?B' (letters, "
                  "digits and '_')");
    /* a quoted URL folded over lines keeps its blank lines as newlines; and a long one */
    EXPECT_ERRORS("amqp: {url: 'amqps://u:p@h:0/v\n\n  x'}\n"
                  "redis:\n  url: redis://localhost\n"
                  "subscriptions:\n  - {name: a, queue: q, handler: h.lua}\n",
                  "1:13: amqp.url: invalid AMQP URL 'amqps://u:***@h:0/v?x' (port must be a "
                  "number from 1 to 65535)");
    char text[1024], want[512];
    snprintf(text, sizeof(text),
             "amqp:\n  url: amqp://h:0/%0300d\n"
             "redis:\n  url: redis://localhost\n"
             "subscriptions:\n  - {name: a, queue: q, handler: h.lua}\n",
             0);
    snprintf(want, sizeof(want),
             "2:8: amqp.url: invalid AMQP URL 'amqp://h:0/%0189d...' (port "
             "must be a number from 1 to 65535)",
             0);
    EXPECT_ERRORS(text, want);
    EXPECT_ERRORS(MINIMAL "breakers:\n  \"p\\ty\": {window: 0}\n",
                  "10:3: breakers: may contain only letters, digits, '_', '.' and '-', got 'p?y'",
                  "10:20: breakers.p?y.window: expected an integer from 1 to 1000, got '0'");
}

/* Masking: the userinfo's password, whatever the URL looks like. */
static void test_mask_url(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"amqp://guest:guest@h/", "amqp://guest:***@h/"},
        {"amqp://guest@h/", "amqp://***@h/"},
        {"redis://:pw@h", "redis://:***@h"},
        {"user:pa://ss@host", "user:***@host"},
        {"user:pa://ss@host/x?y=1", "user:***@host/x?y=1"},
        {"pa://ss@host", "pa://***@host"},
        {"://x:y@h", ":***@h"},
        {"x1+-.:b@h", "x1+-.:***@h"},
        {"amqp://u:p@ss@h/", "amqp://u:***@h/"},
        {"h:5672", "h:5672"},
        {"noauth", "noauth"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = wr_url_mask(cases[i].in);
        CHECK_STR(got, cases[i].out);
        free(got);
    }
}

/* ------------------------------------------------------------------------ */
/* Reference table and the shipped example                                    */
/* ------------------------------------------------------------------------ */

static void test_reference(void)
{
    static const char *const keys[] = {
        "amqp",
        "amqp.url",
        "amqp.heartbeat",
        "amqp.connect_timeout",
        "amqp.reconnect_max",
        "amqp.urls",
        "amqp.tls",
        "amqp.tls.ca",
        "amqp.tls.cert",
        "amqp.tls.key",
        "redis",
        "redis.url",
        "redis.timeout",
        "redis.reconnect_max",
        "redis.sentinels",
        "redis.master_name",
        "redis.min_replicas_acked",
        "redis.min_replicas_timeout",
        "log",
        "log.level",
        "log.bodies",
        "defaults",
        "defaults.prefetch",
        "defaults.concurrency",
        "defaults.batch_size",
        "defaults.handler_timeout",
        "defaults.max_body_size",
        "defaults.max_publish_size",
        "defaults.retry",
        "defaults.retry.max_attempts",
        "defaults.retry.delays",
        "defaults.retry.backoff",
        "defaults.retry.backoff.initial",
        "defaults.retry.backoff.multiplier",
        "defaults.retry.backoff.max",
        "defaults.retry.backoff.jitter",
        "defaults.idempotency",
        "defaults.idempotency.enabled",
        "defaults.idempotency.key",
        "defaults.idempotency.prefix",
        "defaults.idempotency.ttl",
        "defaults.idempotency.lease",
        "defaults.idempotency.missing_key",
        "defaults.breaker",
        "defaults.breaker.enabled",
        "defaults.breaker.window",
        "defaults.breaker.window_time",
        "defaults.breaker.min_calls",
        "defaults.breaker.failure_ratio",
        "defaults.breaker.consecutive_failures",
        "defaults.breaker.open_for",
        "defaults.breaker.half_open_probes",
        "defaults.breaker.counts",
        "breakers",
        "breakers.<name>.enabled",
        "breakers.<name>.window",
        "breakers.<name>.window_time",
        "breakers.<name>.min_calls",
        "breakers.<name>.failure_ratio",
        "breakers.<name>.consecutive_failures",
        "breakers.<name>.open_for",
        "breakers.<name>.half_open_probes",
        "breakers.<name>.counts",
        "shutdown",
        "shutdown.grace",
        "store",
        "store.prefix",
        "store.max_writes",
        "store.max_value_bytes",
        "http",
        "http.listen",
        "http.queue_poll",
        "journal",
        "journal.enabled",
        "journal.ttl",
        "journal.max_entries",
        "security",
        "security.signing_key",
        "subscriptions",
        "subscriptions[].name",
        "subscriptions[].queue",
        "subscriptions[].dlq",
        "subscriptions[].queue_type",
        "subscriptions[].dlq_type",
        "subscriptions[].delay_queue_type",
        "subscriptions[].handler",
        "subscriptions[].prefetch",
        "subscriptions[].concurrency",
        "subscriptions[].batch_size",
        "subscriptions[].handler_timeout",
        "subscriptions[].max_body_size",
        "subscriptions[].max_publish_size",
        "subscriptions[].retry",
        "subscriptions[].retry.max_attempts",
        "subscriptions[].retry.delays",
        "subscriptions[].retry.backoff",
        "subscriptions[].retry.backoff.initial",
        "subscriptions[].retry.backoff.multiplier",
        "subscriptions[].retry.backoff.max",
        "subscriptions[].retry.backoff.jitter",
        "subscriptions[].idempotency",
        "subscriptions[].idempotency.enabled",
        "subscriptions[].idempotency.key",
        "subscriptions[].idempotency.prefix",
        "subscriptions[].idempotency.ttl",
        "subscriptions[].idempotency.lease",
        "subscriptions[].idempotency.missing_key",
        "subscriptions[].breaker",
        "subscriptions[].breaker.enabled",
        "subscriptions[].breaker.window",
        "subscriptions[].breaker.window_time",
        "subscriptions[].breaker.min_calls",
        "subscriptions[].breaker.failure_ratio",
        "subscriptions[].breaker.consecutive_failures",
        "subscriptions[].breaker.open_for",
        "subscriptions[].breaker.half_open_probes",
        "subscriptions[].ordering",
        "subscriptions[].ordering.key",
        "subscriptions[].ordering.on_dlq",
        "subscriptions[].partitions",
        "subscriptions[].gates",
        "subscriptions[].gates[].type",
        "subscriptions[].gates[].after",
        "subscriptions[].gates[].key",
        "subscriptions[].gates[].timeout",
        "subscriptions[].gates[].on_timeout",
        "subscriptions[].contracts",
        "subscriptions[].contracts.file",
        "subscriptions[].contracts.unknown_types",
        "subscriptions[].contracts.version_header",
        "subscriptions[].contracts.default_version",
        "subscriptions[].contracts.validate_outgoing",
        "subscriptions[].breaker.counts",
        "subscriptions[].bindings",
        "subscriptions[].bindings[].exchange",
        "subscriptions[].bindings[].type",
        "subscriptions[].bindings[].declare",
        "subscriptions[].bindings[].routing_keys",
        "subscriptions[].trace_fields",
    };
    size_t nkeys = sizeof(keys) / sizeof(keys[0]);
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);

    wr_config_write_reference(fp);
    fclose(fp);
    CHECK(strncmp(buf,
                  "| key | type | default | live reload | description |\n"
                  "|---|---|---|---|---|\n",
                  strlen("| key | type | default | live reload | description |\n"
                         "|---|---|---|---|---|\n")) == 0);
    for (size_t i = 0; i < nkeys; i++) {
        char row[128];
        snprintf(row, sizeof(row), "\n| `%s` | ", keys[i]);
        if (strstr(buf, row) == NULL) {
            fprintf(stderr, "reference has no row for %s\n", keys[i]);
        }
        CHECK(strstr(buf, row) != NULL);
    }
    /* Exactly one row per key, plus the header and the separator. */
    int lines = 0;
    for (char *p = buf; *p != '\0'; p++) {
        lines += *p == '\n';
    }
    CHECK_INT(lines, (int)nkeys + 2);
    /* Spot checks of whole rows. */
    CHECK(strstr(buf, "\n| `amqp.heartbeat` | duration, 0s to 5m | `10s` | no (restart) | "
                      "AMQP heartbeat interval; 0 disables heartbeats. |\n") != NULL);
    CHECK(strstr(buf, "\n| `log.level` | one of `debug`, `info`, `warn`, `error` | `info` | yes "
                      "| ") != NULL);
    CHECK(strstr(buf, "\n| `subscriptions[].handler_timeout` | duration, 1ms to 1h | "
                      "`defaults.handler_timeout` | yes | ") != NULL);
    CHECK(strstr(buf, "\n| `subscriptions[].dlq` | string | `<queue>.dlq` | no (restart) | ") !=
          NULL);
    CHECK(strstr(buf, "\n| `amqp.url` | AMQP URL | required | no (restart) | ") != NULL);
    CHECK(strstr(buf, "\n| `defaults.retry.delays` | list of 1 to 20 durations, 1ms to 1d | "
                      "`[1s, 5s, 30s, 2m]` | yes | ") != NULL);
    CHECK(strstr(buf, "\n| `defaults.retry.backoff.multiplier` | number, 1 to 10 | `2.0` | yes "
                      "| ") != NULL);
    CHECK(strstr(buf, "\n| `subscriptions[].retry.backoff.max` | duration, 1ms to 1d | "
                      "`defaults.retry.backoff.max` | yes | ") != NULL);
    CHECK(strstr(buf, "\n| `defaults.idempotency.ttl` | duration, 1s to 3650d, or `none` | "
                      "`7d` | no (restart) | ") != NULL);
    CHECK(strstr(buf, "\n| `subscriptions[].idempotency.key` | `message_id`, `header:NAME` or "
                      "`json:PATH` | `defaults.idempotency.key` | no (restart) | ") != NULL);
    CHECK(strstr(buf, "\n| `subscriptions[].idempotency` | mapping | - | - | ") != NULL);
    CHECK(strstr(buf, "\n| `defaults.breaker.failure_ratio` | number, 0 (exclusive) to 1 | "
                      "`0.5` | no (restart) | ") != NULL);
    CHECK(strstr(buf, "\n| `defaults.breaker.window_time` | duration, 1s to 1h, or `none` | "
                      "`none` | no (restart) | ") != NULL);
    CHECK(strstr(buf, "\n| `defaults.breaker.open_for` | duration, 100ms to 1h | `30s` | "
                      "no (restart) | ") != NULL);
    CHECK(strstr(buf, "\n| `breakers` | mapping of names to mappings | - | - | ") != NULL);
    CHECK(strstr(buf, "\n| `breakers.<name>.consecutive_failures` | integer, 0 to 1000 | "
                      "`defaults.breaker.consecutive_failures` | no (restart) | ") != NULL);
    CHECK(strstr(buf, "\n| `subscriptions[].breaker.half_open_probes` | integer, 1 to 100 | "
                      "`defaults.breaker.half_open_probes` | no (restart) | ") != NULL);
    CHECK(strstr(buf, "\n| `subscriptions[].breaker` | mapping | - | - | ") != NULL);
    /* Every breaker key needs a restart. */
    for (const char *p = strstr(buf, "breaker"); p != NULL; p = strstr(p + 1, "breaker")) {
        const char *eol = strchr(p, '\n');
        const char *yes = strstr(p, "| yes |");
        CHECK(yes == NULL || yes > eol);
    }
    free(buf);
}

static void test_example_config(void)
{
    const char *src = getenv("WR_SOURCE_DIR");
    char path[PATH_MAX], want[PATH_MAX + 64], root[PATH_MAX];
    wr_config_errors errs;

    snprintf(path, sizeof(path), "%s/config/warren.yaml", src != NULL ? src : ".");
    unsetenv("WARREN_AMQP_URL");
    unsetenv("WARREN_REDIS_URL");
    wr_config *cfg = wr_config_load(path, &errs);
    CHECK(cfg != NULL);
    for (int i = 0; i < errs.count; i++) {
        fprintf(stderr, "  %s\n", errs.lines[i]);
    }
    wr_config_errors_free(&errs);
    if (cfg == NULL) {
        return;
    }
    CHECK(realpath(src != NULL ? src : ".", root) != NULL);
    CHECK_STR(cfg->amqp.url, "amqp://guest:guest@127.0.0.1:5672/");
    CHECK_STR(cfg->amqp.redacted, "amqp://guest:***@127.0.0.1:5672/");
    CHECK_STR(cfg->amqp.vhost, "/");
    CHECK_STR(cfg->redis.url, "redis://127.0.0.1:6379/0");
    CHECK_INT(cfg->sub_count, 5);
    CHECK_STR(cfg->store_prefix, "shop:store:");
    if (cfg->sub_count == 5) {
        wr_subscription *o = &cfg->subs[0], *inv = &cfg->subs[1], *pay = &cfg->subs[2];
        wr_subscription *n = &cfg->subs[3];
        CHECK_STR(inv->name, "inventory");
        CHECK_INT(inv->bindings[0].routing_key_count, 2);
        CHECK_STR(inv->bindings[0].routing_keys[1], "order.cancellation.confirmed");
        CHECK_STR(pay->name, "payments");
        CHECK_INT(pay->idem.source, WR_KEY_JSON);
        CHECK_STR(pay->idem.key_arg, "order_id");
        CHECK_STR(o->name, "orders");
        CHECK_STR(o->queue, "orders.events");
        CHECK_STR(o->dlq, "orders.events.dlq");
        snprintf(want, sizeof(want), "%s/handlers/orders.lua", root);
        CHECK_STR(o->handler, want);
        CHECK_INT(o->concurrency, 2);
        CHECK_INT(o->prefetch, 50);
        CHECK_INT(o->binding_count, 1);
        CHECK_STR(o->bindings[0].exchange, "shop.events");
        CHECK_STR(o->bindings[0].type, "topic");
        CHECK_INT(o->bindings[0].routing_key_count, 2);
        CHECK_STR(o->bindings[0].routing_keys[0], "order.created");
        CHECK_STR(o->bindings[0].routing_keys[1], "order.cancelled");
        CHECK_INT(o->retry.max_attempts, 4);
        CHECK_DELAYS(&o->retry, 1000, 5000, 30000);
        CHECK_BUILTIN_BACKOFF(&o->retry);
        CHECK_INT(o->idem.enabled, 1);
        CHECK_INT(o->idem.source, WR_KEY_MESSAGE_ID);
        CHECK_STR(o->idem.prefix, "warren:idem:");
        CHECK_INT(o->idem.ttl_ms, 7 * 86400000LL);
        CHECK_INT(o->idem.lease_ms, 30000);
        CHECK_INT(o->idem.missing_key_hash, 0);
        CHECK_BREAKER(&o->breaker, 1, 20, 0, 10, 0.5, 0, 30000, 3);
        CHECK_BREAKER(&n->breaker, 1, 20, 0, 10, 0.5, 0, 30000, 3);
        CHECK_STR(n->name, "notifications");
        CHECK_STR(n->queue, "notifications.events");
        snprintf(want, sizeof(want), "%s/handlers/notifications.lua", root);
        CHECK_STR(n->handler, want);
        CHECK_INT(n->binding_count, 1);
        CHECK_STR(n->bindings[0].exchange, "shop.events");
        CHECK_INT(n->bindings[0].routing_key_count, 1);
        CHECK_STR(n->bindings[0].routing_keys[0], "payment.captured");
        CHECK_INT(n->retry.max_attempts, 5);
        CHECK_DELAYS(&n->retry, 1000, 5000, 30000, 120000);
    }
    CHECK_INT(cfg->breaker_count, 0); /* breakers: only a commented example */
    wr_config_free(cfg);

    /* The environment overrides the defaults written in the file. */
    setenv("WARREN_AMQP_URL", "amqp://svc:pw@mq:5672/shop", 1);
    cfg = wr_config_load(path, &errs);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK_STR(cfg->amqp.host, "mq");
        CHECK_STR(cfg->amqp.vhost, "shop");
        wr_config_free(cfg);
    }
    wr_config_errors_free(&errs);
    unsetenv("WARREN_AMQP_URL");
}

static void test_http_section(void)
{
    wr_config *cfg = LOAD_OK(MINIMAL);
    if (cfg != NULL) {
        CHECK_STR(cfg->http_listen, "0.0.0.0:9464");
        CHECK_INT(cfg->queue_poll_ms, 15000);
        wr_config_free(cfg);
    }
    cfg = LOAD_OK("http:\n  listen: localhost:0\n  queue_poll: 2s\n" MINIMAL);
    if (cfg != NULL) {
        CHECK_STR(cfg->http_listen, "localhost:0");
        CHECK_INT(cfg->queue_poll_ms, 2000);
        wr_config_free(cfg);
    }
    cfg = LOAD_OK("http:\n  listen: \"off\"\n" MINIMAL);
    if (cfg != NULL) {
        CHECK_STR(cfg->http_listen, "off");
        wr_config_free(cfg);
    }
    EXPECT_ERRORS("http:\n  listen: 9464\n" MINIMAL,
                  "2:11: http.listen: expected HOST:PORT (such as 0.0.0.0:9464 or 127.0.0.1:0) "
                  "or off");
    EXPECT_ERRORS("http:\n  listen: \"[::]:9464\"\n" MINIMAL,
                  "2:11: http.listen: expected an IPv4 address before the port, such as "
                  "0.0.0.0:9464");
    EXPECT_ERRORS("http:\n  listen: 0.0.0.0:99999\n" MINIMAL,
                  "2:11: http.listen: expected a port 0..65535 after the colon");
    EXPECT_ERRORS("http:\n  listen: \"0.0.0.0:\"\n" MINIMAL,
                  "2:11: http.listen: expected a port 0..65535 after the colon");
    EXPECT_ERRORS("http:\n  queue_poll: 10ms\n" MINIMAL,
                  "2:15: http.queue_poll: expected a duration from 1s to 1h, got '10ms'");

    char host[64];
    int port = -1;
    const char *why = NULL;
    CHECK_INT(wr_listen_parse("127.0.0.1:8080", host, sizeof(host), &port, &why), 0);
    CHECK_STR(host, "127.0.0.1");
    CHECK_INT(port, 8080);
    CHECK_INT(wr_listen_parse("localhost:1", host, sizeof(host), &port, &why), 0);
    CHECK_STR(host, "127.0.0.1");
    CHECK_INT(wr_listen_parse("off", host, sizeof(host), &port, &why), 1);
    CHECK_INT(wr_listen_parse("1.2.3:80", host, sizeof(host), &port, &why), -1);
    CHECK_INT(wr_listen_parse("1.2.3.4.5:80", host, sizeof(host), &port, &why), -1);
    CHECK_INT(wr_listen_parse("256.0.0.1:80", host, sizeof(host), &port, &why), -1);
    CHECK_INT(wr_listen_parse("1.2.3.4:-1", host, sizeof(host), &port, &why), -1);
}

/* ordering: off unless given; a header or a JSON field; never the message_id;
 * its key required, nothing else accepted. */
static void test_ordering(void)
{
    wr_config_errors errs = {0};
    wr_config *cfg = load_text(MINIMAL, &errs);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK_INT(cfg->subs[0].ordering.enabled, 0);
        wr_config_free(cfg);
    }
    cfg = load_text(MINIMAL "    ordering:\n      key: json:order.id\n", &errs);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK_INT(cfg->subs[0].ordering.enabled, 1);
        CHECK_INT(cfg->subs[0].ordering.source, WR_KEY_JSON);
        CHECK_STR(cfg->subs[0].ordering.key_arg, "order.id");
        CHECK_INT(cfg->subs[0].ordering.dlq_all, 0);
        wr_config_free(cfg);
    }
    cfg = load_text(MINIMAL "    ordering: {key: 'header:x-order', on_dlq: dlq_all}\n", &errs);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK_INT(cfg->subs[0].ordering.enabled, 1);
        CHECK_INT(cfg->subs[0].ordering.source, WR_KEY_HEADER);
        CHECK_STR(cfg->subs[0].ordering.key_arg, "x-order");
        CHECK_INT(cfg->subs[0].ordering.dlq_all, 1);
        wr_config_free(cfg);
    }
    EXPECT_ERRORS(MINIMAL "    ordering:\n      key: message_id\n",
                  "10:12: subscriptions[0].ordering.key: expected header:NAME or json:PATH (a "
                  "message_id is unique per message and orders nothing), got message_id");
    EXPECT_ERRORS(MINIMAL "    ordering: {}\n",
                  "9:15: missing required key 'key' in subscriptions[0].ordering");
    EXPECT_ERRORS(MINIMAL "    ordering:\n      key: json:a..b\n      lanes: 2\n",
                  "10:12: subscriptions[0].ordering.key: invalid JSON path (names of letters, "
                  "digits, '_' and '-', joined by '.'), got 'a..b'",
                  "11:7: unknown key 'lanes' in subscriptions[0].ordering (expected one of: key, "
                  "on_dlq)");
    /* partitions: 1..64, only with an ordering key */
    cfg = load_text(MINIMAL "    ordering: {key: json:order_id}\n    partitions: 8\n", &errs);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK_INT(cfg->subs[0].partitions, 8);
        wr_config_free(cfg);
    }
    cfg = load_text(MINIMAL "    ordering: {key: json:order_id}\n", &errs);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK_INT(cfg->subs[0].partitions, 0);
        wr_config_free(cfg);
    }
    EXPECT_ERRORS(MINIMAL "    partitions: 4\n",
                  "9:17: subscriptions[0].partitions: needs ordering.key (a message's partition "
                  "is chosen by its ordering key)");
    EXPECT_ERRORS(MINIMAL "    ordering: {key: json:order_id}\n    partitions: 65\n",
                  "10:17: subscriptions[0].partitions: expected an integer from 1 to 64, got "
                  "'65'");
    EXPECT_ERRORS(MINIMAL "    ordering: json:order_id\n",
                  "9:15: subscriptions[0].ordering: expected a mapping, got a string");
}

/* gates: read with their defaults; their key is never the message_id; a type
 * does not wait for itself; they need idempotency; and `after` must be a type
 * a binding routes to the queue (no bindings: not checked). */
static void test_gates(void)
{
    wr_config_errors errs = {0};
    wr_config *cfg = load_text(MINIMAL "    bindings:\n"
                                       "      - exchange: shop\n"
                                       "        routing_keys: ['order.*']\n"
                                       "    gates:\n"
                                       "      - type: order.cancelled\n"
                                       "        after: order.created\n"
                                       "        key: json:order_id\n"
                                       "      - {type: order.shipped, after: order.paid, "
                                       "key: 'header:x-order', timeout: 30s, on_timeout: run}\n",
                               &errs);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        const wr_subscription *s = &cfg->subs[0];
        CHECK_INT(s->gate_count, 2);
        CHECK_STR(s->gates[0].type, "order.cancelled");
        CHECK_STR(s->gates[0].after, "order.created");
        CHECK_INT(s->gates[0].source, WR_KEY_JSON);
        CHECK_STR(s->gates[0].key_arg, "order_id");
        CHECK_INT(s->gates[0].timeout_ms, 600000);
        CHECK_INT(s->gates[0].run_on_timeout, 0);
        CHECK_INT(s->gates[1].source, WR_KEY_HEADER);
        CHECK_STR(s->gates[1].key_arg, "x-order");
        CHECK_INT(s->gates[1].timeout_ms, 30000);
        CHECK_INT(s->gates[1].run_on_timeout, 1);
        CHECK_INT(s->gates[1].line, 16);
        wr_config_free(cfg);
    } else {
        for (int i = 0; i < errs.count; i++) {
            fprintf(stderr, "  %s\n", errs.lines[i]);
        }
        wr_config_errors_free(&errs);
    }
    cfg = load_text(MINIMAL "    gates: [{type: a, after: b, key: 'json:k'}]\n", &errs);
    CHECK(cfg != NULL); /* no bindings: nothing to check `after` against */
    wr_config_free(cfg);
    EXPECT_ERRORS(MINIMAL "    bindings:\n"
                          "      - exchange: shop\n"
                          "        routing_keys: ['order.created', 'order.paid']\n"
                          "        type: direct\n"
                          "    gates:\n"
                          "      - type: order.cancelled\n"
                          "        after: order.create\n"
                          "        key: json:order_id\n",
                  "15:16: subscriptions[0].gates[0].after: no binding of queue 'q' routes "
                  "'order.create': the gate would wait for a type that never comes");
    EXPECT_ERRORS(MINIMAL "    gates:\n"
                          "      - {type: a, after: a, key: message_id, timeout: 0s}\n",
                  "10:26: subscriptions[0].gates[0].after: a type cannot wait for itself ('a')",
                  "10:34: subscriptions[0].gates[0].key: expected header:NAME or json:PATH (a "
                  "message_id is unique per message and names no predecessor), got message_id",
                  "10:55: subscriptions[0].gates[0].timeout: expected a duration from 1s to 7d, "
                  "got '0s'");
    EXPECT_ERRORS(MINIMAL "    idempotency: {enabled: false}\n"
                          "    gates: [{type: a, after: b, key: 'json:k'}]\n",
                  "10:12: subscriptions[0].gates: need idempotency.enabled (the done mark a gate "
                  "waits for is written with the idempotency record)");
    EXPECT_ERRORS(MINIMAL "    gates: [{type: a, key: 'json:k'}]\n",
                  "9:13: missing required key 'after' in subscriptions[0].gates[0]");
    EXPECT_ERRORS(MINIMAL "    gates:\n"
                          "      - {type: a, after: b, key: 'json:k', on_timeout: retry}\n",
                  "10:56: subscriptions[0].gates[0].on_timeout: expected one of dlq, run, got "
                  "'retry'");
}

int main(void)
{
    setup();
    test_http_section();
    test_minimal_defaults();
    test_full_config();
    test_defaults_after_subscriptions();
    test_absolute_handler();
    test_empty_and_not_a_mapping();
    test_missing_file();
    test_yaml_syntax_errors();
    test_unknown_keys();
    test_wrong_node_kinds();
    test_missing_required();
    test_bad_values();
    test_strings();
    test_quoted_scalars();
    test_duplicates();
    test_handler_missing();
    test_urls_in_errors();
    test_env_errors();
    test_multiple_errors();
    test_error_limit();
    test_policy_defaults();
    test_policy_full();
    test_policy_merge();
    test_policy_errors();
    test_breaker_defaults();
    test_breaker_merge();
    test_breaker_errors();
    test_journal();
    test_durations();
    test_amqp_urls();
    test_mask_url();
    test_tls_config();
    test_redis_ha();
    test_amqp_cluster();
    test_control_characters();
    test_expansion_depth();
    test_value_size();
    test_yaml_depth();
    test_file_size();
    test_alias_budget();
    test_list_bounds();
    test_nul_bytes();
    test_values_not_echoed();
    test_redis_urls();
    test_reference();
    test_ordering();
    test_gates();
    test_example_config();
    teardown();
    return check_report("test_config");
}
