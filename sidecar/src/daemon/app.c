/*
 * app: `warren run` and `warren check`. See app.h.
 *
 * Signals are handled synchronously: the main thread blocks them before any
 * worker starts (so every thread inherits the mask) and reads them from a
 * signalfd, in one poll loop with the reloader's file watch. No code runs in
 * signal-handler context.
 */
#include "app.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "breakers.h"
#include "cmdcfg.h"
#include "config.h"
#include "contracts.h"
#include "http.h"
#include "inflight.h"
#include "lint.h"
#include "log.h"
#include "lua_rt.h"
#include "metrics.h"
#include "probe.h"
#include "reload.h"
#include "reroute.h"
#include "worker.h"

/* How a worker loads S's handler (its file's VERSION, a char[17] filled in
 * here), for a throwaway state that runs at most MAX_ATTEMPTS attempts. */
static wr_lua_opts handler_opts(const wr_subscription *s, char *version, int max_attempts)
{
    return (wr_lua_opts){.handler_path = s->handler,
                         .version = wr_handler_version(s->handler, version) == 0 ? version : NULL,
                         .subscription = s->name,
                         .queue = s->queue,
                         .timeout_ms = s->handler_timeout_ms,
                         .max_attempts = max_attempts};
}

/*
 * Compile every subscription's handler in a throwaway state (module body and
 * init run, as they would in a worker). Prints each failure as
 * CONFIG:LINE:COL: subscriptions[i].handler: <error>, pointing at the
 * subscription in the config, since Lua reports no column of its own. With
 * REPORT, each handler that loads gets a line there (shown only when
 * everything checks out).
 */
static int compile_handlers(const wr_config *cfg, FILE *report, int *loaded)
{
    int failures = 0;
    for (int i = 0; i < cfg->sub_count; i++) {
        const wr_subscription *s = &cfg->subs[i];
        char version[17];
        wr_lua_opts o = handler_opts(s, version, 1);
        char err[1024];
        wr_lua *L = wr_lua_create(&o, err, sizeof(err));
        if (L == NULL) {
            fprintf(stderr, "%s:%d:%d: subscriptions[%d].handler: %s\n", cfg->path, s->line, s->col,
                    i, err);
            failures++;
            continue;
        }
        loaded[i] = 1;
        if (report != NULL) {
            fprintf(report, "  %-20s queue %-28s handler %s (version %s)\n", s->name, s->queue,
                    s->handler, wr_lua_version(L));
        }
        wr_lua_destroy(L);
    }
    return failures;
}

/*
 * Lint every handler that loaded (each file once, with the modules it
 * requires): reads and writes of undeclared globals (lint.h), printed as
 * FILE:LINE:COL: message, with "warning: " in front when MODE is warn.
 * Returns the problems found (-1 counted once when the lint could not run).
 */
static int lint_handlers(const wr_config *cfg, const int *loaded, wr_lint_mode mode, int *found)
{
    int problems = 0;
    *found = 0;
    for (int i = 0; i < cfg->sub_count && mode != WR_LINT_OFF; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++) {
            seen |= strcmp(cfg->subs[j].handler, cfg->subs[i].handler) == 0;
        }
        if (!loaded[i] || seen) {
            continue;
        }
        wr_lint_report r;
        char err[512];
        if (wr_lint_handler(cfg->subs[i].handler, &r, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: cannot lint: %s\n", cfg->subs[i].handler, err);
            problems++;
            continue;
        }
        for (int k = 0; k < r.count; k++) {
            fprintf(stderr, "%s:%d:%d: %s%s\n", r.items[k].file, r.items[k].line, r.items[k].col,
                    mode == WR_LINT_WARN ? "warning: " : "", r.items[k].msg);
        }
        *found += r.count;
        if (mode == WR_LINT_ERROR) {
            problems += r.count;
        }
        wr_lint_report_free(&r);
    }
    return problems;
}

/*
 * Load every subscription's contracts (schemas compiled, upcaster files
 * found) and validate the examples they carry. Problems go to stderr as
 * FILE:LINE:COL: message; what checked out goes to REPORT. Returns the
 * number of problems.
 */
static int check_contracts(const wr_config *cfg, FILE *report)
{
    int problems = 0;
    for (int i = 0; i < cfg->sub_count; i++) {
        const wr_subscription *s = &cfg->subs[i];
        char err[8192];
        if (s->contracts.file == NULL) {
            continue;
        }
        wr_contracts *c = wr_contracts_load(s->contracts.file, err, sizeof(err));
        if (c == NULL) {
            fprintf(stderr, "%s\n", err);
            for (const char *p = err; *p; p++) {
                problems += *p == '\n';
            }
            problems++;
            continue;
        }
        int bad = wr_contracts_check_examples(c, stderr);
        char version[17], lerr[1024];
        wr_lua_opts o = handler_opts(s, version, 1);
        wr_lua *L = wr_lua_create(&o, lerr, sizeof(lerr));
        if (L != NULL) {
            /* upcasters run in the handler's state, as in a worker */
            bad += wr_contracts_check_upcasts(c, L, stderr, NULL);
            wr_lua_destroy(L);
        }
        problems += bad;
        if (bad == 0 && report != NULL) {
            fprintf(report, "%s: %d event contract%s, examples valid (%s)\n", s->name,
                    wr_contracts_count(c), wr_contracts_count(c) == 1 ? "" : "s",
                    s->contracts.file);
        }
        wr_contracts_free(c);
    }
    return problems;
}

/*
 * `warren check`: problems go to stderr, one FILE:LINE:COL: message each; stdout
 * says what was verified only when all of it was (a "configuration OK" above
 * a handler error would be read as a pass), else how many problems there were.
 */
int wr_app_check(const char *config_path, wr_lint_mode lint)
{
    /* what handlers log in init goes to stderr: stdout is the report */
    wr_log_set_fd(STDERR_FILENO);
    int problems = 0;
    wr_config *cfg = wr_cmd_load(config_path, &problems);
    if (cfg == NULL) {
        /* stdout says the check failed however it failed: a script that reads
         * it gets the same answer for a config error as for a handler error */
        printf("%s: check failed, %d problem%s (listed on stderr)\n", config_path, problems,
               problems == 1 ? "" : "s");
        return 1;
    }
    char *lines = NULL;
    size_t lines_len = 0;
    FILE *report = open_memstream(&lines, &lines_len);
    int *loaded = calloc((size_t)cfg->sub_count + 1, sizeof(*loaded));
    if (loaded == NULL) {
        fprintf(stderr, "warren check: out of memory\n");
        wr_config_free(cfg);
        return 1;
    }
    int failures = compile_handlers(cfg, report, loaded);
    failures += check_contracts(cfg, report);
    if (report != NULL) {
        fclose(report);
    }
    int warnings = 0;
    failures += lint_handlers(cfg, loaded, lint, &warnings);
    free(loaded);
    if (failures == 0) {
        printf("%s: configuration OK, %d subscription%s\n%s", cfg->path, cfg->sub_count,
               cfg->sub_count == 1 ? "" : "s", lines ? lines : "");
        printf("all handlers compiled and initialised\n");
        if (lint == WR_LINT_OFF) {
            printf("globals not checked (--lint off)\n");
        } else if (warnings > 0) {
            printf("%d undeclared global%s (warnings, listed on stderr)\n", warnings,
                   warnings == 1 ? "" : "s");
        } else {
            printf("no undeclared globals\n");
        }
    } else {
        printf("%s: check failed, %d problem%s (listed on stderr)\n", cfg->path, failures,
               failures == 1 ? "" : "s");
    }
    free(lines);
    wr_config_free(cfg);
    return failures ? 1 : 0;
}

static int all_done(wr_worker **workers, int n)
{
    for (int i = 0; i < n; i++) {
        if (!wr_worker_done(workers[i])) {
            return 0;
        }
    }
    return 1;
}

static void free_inflight(wr_inflight **f, int n)
{
    for (int i = 0; f != NULL && i < n; i++) {
        wr_inflight_destroy(f[i]);
    }
    free(f);
}

/*
 * A fatal start: one JSON line at level error (the log's form, on stdout with
 * the rest), naming the subscription, the file and line of ERR when it starts
 * with "FILE:LINE:" (Lua's form), and where the subscription is in the config.
 */
static void log_fatal(const wr_config *cfg, int i, const char *msg, const char *err)
{
    const wr_subscription *s = &cfg->subs[i];
    wr_logline l;
    wr_log_begin(&l, WR_LOG_ERROR, msg);
    wr_log_str(&l, "subscription", s->name);
    wr_log_str(&l, "file", s->handler);
    size_t hl = strlen(s->handler);
    if (strncmp(err, s->handler, hl) == 0 && err[hl] == ':') {
        char *end;
        long line = strtol(err + hl + 1, &end, 10);
        if (end > err + hl + 1 && *end == ':') {
            wr_log_int(&l, "line", line);
        }
    }
    wr_log_str(&l, "error", err);
    char where[1200];
    snprintf(where, sizeof(where), "%s:%d:%d: subscriptions[%d].handler", cfg->path, s->line,
             s->col, i);
    wr_log_str(&l, "config", where);
    wr_log_end(&l);
}

/*
 * Before anything consumes: every handler must load (compile, return a
 * handle function, run its init), as a worker would load it. The first that
 * does not is the one fatal line; nothing was consumed. Returns 0, or 1.
 */
static int preflight(const wr_config *cfg)
{
    for (int i = 0; i < cfg->sub_count; i++) {
        const wr_subscription *s = &cfg->subs[i];
        char version[17];
        wr_lua_opts o = handler_opts(s, version, s->retry.max_attempts);
        char err[1024];
        wr_lua *L = wr_lua_create(&o, err, sizeof(err));
        if (L == NULL) {
            log_fatal(cfg, i, "cannot start: a handler does not load; nothing consumed", err);
            return 1;
        }
        wr_lua_destroy(L);
    }
    return 0;
}

/* The "warren started" line: version, config, broker, what runs, where HTTP listens. */
static void log_started(const wr_config *cfg, int total, wr_http *http, const char *host)
{
    wr_logline l;
    wr_log_begin(&l, WR_LOG_INFO, "warren started");
    wr_log_str(&l, "version", WARREN_VERSION);
    wr_log_str(&l, "config", cfg->path);
    wr_log_str(&l, "broker", cfg->amqp.redacted);
    wr_log_int(&l, "subscriptions", cfg->sub_count);
    wr_log_int(&l, "workers", total);
    if (http != NULL) {
        char addr[96];
        snprintf(addr, sizeof(addr), "%s:%d", host, wr_http_port(http));
        wr_log_str(&l, "http", addr);
    }
    wr_log_end(&l);
}

/*
 * Serve until stopped: signals (SIGTERM/SIGINT drain, a second one or the end
 * of the grace period interrupts the handlers; SIGHUP reloads) and the
 * reloader's file watch, until every worker is done.
 */
static void serve(const wr_config *cfg, int sfd, wr_reloader *reloader, wr_metrics *metrics,
                  wr_run_flags *flags, wr_worker **workers, int started)
{
    double deadline = 0;
    int wait_ms = 200;
    for (;;) {
        struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN},
                                {.fd = wr_reloader_fd(reloader), .events = POLLIN}};
        int timeout = atomic_load(&flags->stop) || wait_ms < 0 || wait_ms > 200 ? 200 : wait_ms;
        poll(fds, fds[1].fd >= 0 ? 2 : 1, timeout);
        struct signalfd_siginfo si;
        int sig = 0;
        if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
            sig = (int)si.ssi_signo;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            if (!atomic_load(&flags->stop)) {
                deadline = wr_mono_ms() + (double)cfg->shutdown_grace_ms;
                atomic_store(&flags->stop, 1);
                wr_metrics_set_draining(metrics, 1);
                wr_logf(WR_LOG_INFO,
                        "%s: stopping consumption, finishing in-flight messages (grace %lld ms)",
                        sig == SIGTERM ? "SIGTERM" : "SIGINT", (long long)cfg->shutdown_grace_ms);
            } else if (!atomic_load(&flags->abort)) {
                wr_logf(WR_LOG_WARN, "second signal: interrupting handlers and returning their "
                                     "messages to the broker");
                atomic_store(&flags->abort, 1);
            }
        } else if (sig == SIGHUP && !atomic_load(&flags->stop)) {
            wr_reloader_reload(reloader, "SIGHUP");
        }
        if (!atomic_load(&flags->stop)) {
            wr_reloader_tick(reloader, &wait_ms);
        }
        if (atomic_load(&flags->stop)) {
            if (all_done(workers, started)) {
                break;
            }
            if (!atomic_load(&flags->abort) && wr_mono_ms() > deadline) {
                wr_logf(WR_LOG_WARN, "grace period over: interrupting handlers and returning "
                                     "their messages to the broker");
                atomic_store(&flags->abort, 1);
            }
            if (atomic_load(&flags->abort)) {
                for (int i = 0; i < started; i++) {
                    wr_worker_interrupt(workers[i]);
                }
                if (wr_mono_ms() > deadline + 5000) {
                    /* a worker stuck outside Lua: exit anyway, the broker requeues */
                    wr_logf(WR_LOG_ERROR, "workers did not stop in time; exiting");
                    fflush(stdout);
                    _Exit(0);
                }
            }
        }
    }
}

/* The signals warren serves (serve): SIGTERM, SIGINT, SIGHUP. */
static void run_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

/* What a running warren owns; app_open builds it, app_close frees what was built. */
typedef struct {
    wr_config *cfg;
    wr_reloader *reloader;
    int sfd; /* signalfd of SIGTERM, SIGINT, SIGHUP */
    wr_breakers *breakers;
    wr_metrics *metrics;
    wr_http *http;
    wr_probe *probe;
    wr_worker **workers;
    int total, started;     /* workers configured, started */
    wr_inflight **inflight; /* per subscription: the keys its workers have in flight */
    wr_reroute **reroutes;  /* per partitioned subscription (reroute.h) */
    wr_run_flags flags;
    char host[64]; /* http.listen's host, when it listens */
} app;

/* Stop and free what A holds, workers first; STOPPED logs "warren stopped". */
static void app_close(app *a, int stopped)
{
    atomic_store(&a->flags.stop, 1);
    for (int i = 0; a->reroutes != NULL && i < a->cfg->sub_count; i++) {
        wr_reroute_stop(a->reroutes[i]);
    }
    free(a->reroutes);
    for (int i = 0; i < a->started; i++) {
        wr_worker_free(a->workers[i]);
    }
    free(a->workers);
    if (stopped) {
        long applied, refused;
        wr_reloader_counts(a->reloader, &applied, &refused);
        wr_logline fin;
        wr_log_begin(&fin, WR_LOG_INFO, "warren stopped");
        wr_log_int(&fin, "reloads_applied", applied);
        wr_log_int(&fin, "reloads_refused", refused);
        wr_log_end(&fin);
    }
    if (a->sfd >= 0) {
        close(a->sfd);
    }
    wr_probe_stop(a->probe);
    wr_http_stop(a->http);
    wr_metrics_destroy(a->metrics);
    wr_breakers_destroy(a->breakers);
    free_inflight(a->inflight, a->cfg->sub_count);
    wr_reloader_destroy(a->reloader);
    wr_config_free(a->cfg);
}

/* Everything but the threads: reloader, signals (blocked, read from a
 * signalfd), breakers, metrics, the in-flight sets. Returns 0, or 1 with the
 * reason on stderr (what was built is freed by app_close). */
static int app_open(app *a, wr_config *cfg)
{
    memset(a, 0, sizeof(*a));
    a->cfg = cfg;
    a->sfd = -1;
    atomic_init(&a->flags.stop, 0);
    atomic_init(&a->flags.abort, 0);
    atomic_init(&a->flags.orphans, 0);
    for (int i = 0; i < cfg->sub_count; i++) {
        a->total += cfg->subs[i].concurrency;
    }
    char rerr[1024];
    a->reloader = wr_reloader_create(cfg, rerr, sizeof(rerr));
    if (a->reloader == NULL) {
        fprintf(stderr, "warren: %s\n", rerr);
        return 1;
    }
    sigset_t set;
    run_signals(&set);
    a->sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    a->breakers = wr_breakers_create(cfg);
    a->metrics = wr_metrics_create(cfg);
    a->workers = calloc((size_t)a->total + 1, sizeof(*a->workers));
    a->inflight = calloc((size_t)cfg->sub_count + 1, sizeof(*a->inflight));
    int ok = a->inflight != NULL;
    for (int i = 0; ok && i < cfg->sub_count; i++) {
        ok = (a->inflight[i] = wr_inflight_create()) != NULL;
    }
    if (a->workers == NULL || a->sfd < 0 || a->breakers == NULL || a->metrics == NULL || !ok) {
        fprintf(stderr, "warren: cannot start: %s\n",
                a->sfd < 0 ? "signalfd failed" : "out of memory");
        return 1;
    }
    wr_metrics_sources(a->metrics, a->breakers, a->reloader);
    return 0;
}

/* HTTP (when http.listen is set) and every subscription's workers. Returns
 * 0, or 1 with the reason logged. */
static int app_start(app *a)
{
    wr_config *cfg = a->cfg;
    int port = 0;
    const char *why = "";
    if (wr_listen_parse(cfg->http_listen, a->host, sizeof(a->host), &port, &why) == 0) {
        char err[512];
        a->http = wr_http_start(a->host, port, a->metrics, err, sizeof(err));
        if (a->http == NULL) {
            fprintf(stderr, "%s: http.listen: %s\n", cfg->path, err);
            return 1;
        }
    }
    for (int i = 0; i < cfg->sub_count; i++) {
        const wr_subscription *s = &cfg->subs[i];
        for (int k = 0; k < s->concurrency; k++) {
            char err[1024];
            wr_worker *w =
                wr_worker_start(cfg, s, k, wr_reloader_live(a->reloader, i),
                                wr_breakers_sub(a->breakers, i), a->breakers, a->inflight[i],
                                &a->flags, wr_metrics_worker(a->metrics, i, k), err, sizeof(err));
            if (w == NULL) {
                log_fatal(cfg, i, "cannot start: a worker did not start", err);
                return 1;
            }
            a->workers[a->started++] = w;
        }
    }
    /* partitioned subscriptions: what producers send to the queue itself goes on
     * into the partitions (reroute.h) */
    a->reroutes = calloc((size_t)cfg->sub_count + 1, sizeof(*a->reroutes));
    for (int i = 0; a->reroutes != NULL && i < cfg->sub_count; i++) {
        char err[512];
        if (cfg->subs[i].partitions > 0 &&
            (a->reroutes[i] =
                 wr_reroute_start(cfg, &cfg->subs[i], &a->flags.stop, err, sizeof(err))) == NULL) {
            log_fatal(cfg, i, "re-routing into the partitions did not start", err);
        }
    }
    a->probe = wr_probe_start(cfg, a->reloader, a->metrics);
    wr_metrics_set_started(a->metrics);
    return 0;
}

int wr_app_run(const char *config_path)
{
    wr_config *cfg = wr_cmd_load(config_path, NULL);
    if (cfg == NULL) {
        return 1;
    }
    wr_log_set_level(cfg->log_level);
    sigset_t set;
    run_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (preflight(cfg) != 0) {
        wr_config_free(cfg);
        return 1;
    }
    app a;
    int rc = app_open(&a, cfg);
    if (rc == 0) {
        rc = app_start(&a);
    }
    if (rc == 0) {
        log_started(cfg, a.total, a.http, a.host);
        serve(cfg, a.sfd, a.reloader, a.metrics, &a.flags, a.workers, a.started);
    }
    app_close(&a, rc == 0);
    return rc;
}
