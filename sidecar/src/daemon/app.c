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

/* Print the config's errors, one FILE:LINE:COL: message per line, to stderr. */
static void print_errors(const wr_config_errors *errs)
{
    for (int i = 0; i < errs->count; i++) {
        fprintf(stderr, "%s\n", errs->lines[i]);
    }
    if (errs->dropped > 0) {
        fprintf(stderr, "(%d more errors not shown)\n", errs->dropped);
    }
}

/* Load the config at PATH, its problems printed (print_errors); *PROBLEMS, when
 * not NULL, says how many there were (at least 1 when NULL is returned). */
static wr_config *load(const char *path, int *problems)
{
    wr_config_errors errs = {0};
    wr_config *cfg = wr_config_load(path, &errs);
    if (cfg == NULL) {
        print_errors(&errs);
    }
    if (problems != NULL) {
        *problems = errs.count + errs.dropped;
        if (cfg == NULL && *problems == 0) {
            *problems = 1;
        }
    }
    wr_config_errors_free(&errs);
    return cfg;
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
        wr_lua_opts o = {.handler_path = s->handler,
                         .version = wr_handler_version(s->handler, version) == 0 ? version : NULL,
                         .subscription = s->name,
                         .queue = s->queue,
                         .timeout_ms = s->handler_timeout_ms,
                         .max_attempts = 1};
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
        wr_lua_opts o = {.handler_path = s->handler,
                         .version = wr_handler_version(s->handler, version) == 0 ? version : NULL,
                         .subscription = s->name,
                         .queue = s->queue,
                         .timeout_ms = s->handler_timeout_ms,
                         .max_attempts = 1};
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
    wr_config *cfg = load(config_path, &problems);
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
        wr_lua_opts o = {.handler_path = s->handler,
                         .version = wr_handler_version(s->handler, version) == 0 ? version : NULL,
                         .subscription = s->name,
                         .queue = s->queue,
                         .timeout_ms = s->handler_timeout_ms,
                         .max_attempts = s->retry.max_attempts};
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

int wr_app_run(const char *config_path)
{
    wr_config *cfg = load(config_path, NULL);
    if (cfg == NULL) {
        return 1;
    }
    wr_log_set_level(cfg->log_level);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int total = 0;
    for (int i = 0; i < cfg->sub_count; i++) {
        total += cfg->subs[i].concurrency;
    }
    if (preflight(cfg) != 0) {
        wr_config_free(cfg);
        return 1;
    }
    char rerr[1024];
    wr_reloader *reloader = wr_reloader_create(cfg, rerr, sizeof(rerr));
    if (reloader == NULL) {
        fprintf(stderr, "warren: %s\n", rerr);
        wr_config_free(cfg);
        return 1;
    }
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    wr_breakers *breakers = wr_breakers_create(cfg);
    wr_metrics *metrics = wr_metrics_create(cfg);
    wr_http *http = NULL;
    wr_probe *probe = NULL;
    wr_worker **workers = calloc((size_t)total, sizeof(*workers));
    /* per subscription: the keys its workers have in flight (inflight.h) */
    wr_inflight **inflight = calloc((size_t)cfg->sub_count + 1, sizeof(*inflight));
    for (int i = 0; inflight != NULL && i < cfg->sub_count; i++) {
        inflight[i] = wr_inflight_create();
    }
    wr_run_flags flags;
    atomic_init(&flags.stop, 0);
    atomic_init(&flags.abort, 0);
    atomic_init(&flags.orphans, 0);
    int started = 0;
    int rc = 0;
    int inflight_ok = inflight != NULL;
    for (int i = 0; inflight_ok && i < cfg->sub_count; i++) {
        inflight_ok = inflight[i] != NULL;
    }
    if (workers == NULL || sfd < 0 || breakers == NULL || metrics == NULL || !inflight_ok) {
        fprintf(stderr, "warren: cannot start: %s\n",
                sfd < 0 ? "signalfd failed" : "out of memory");
        free(workers);
        wr_metrics_destroy(metrics);
        wr_breakers_destroy(breakers);
        free_inflight(inflight, cfg->sub_count);
        wr_reloader_destroy(reloader);
        wr_config_free(cfg);
        return 1;
    }
    wr_metrics_sources(metrics, breakers, reloader);
    char host[64];
    int port = 0;
    const char *why = "";
    if (wr_listen_parse(cfg->http_listen, host, sizeof(host), &port, &why) == 0) {
        char err[512];
        http = wr_http_start(host, port, metrics, err, sizeof(err));
        if (http == NULL) {
            fprintf(stderr, "%s: http.listen: %s\n", cfg->path, err);
            rc = 1;
        }
    }
    for (int i = 0; i < cfg->sub_count && rc == 0; i++) {
        const wr_subscription *s = &cfg->subs[i];
        for (int k = 0; k < s->concurrency; k++) {
            char err[1024];
            workers[started] = wr_worker_start(
                cfg, s, k, wr_reloader_live(reloader, i), wr_breakers_sub(breakers, i), breakers,
                inflight[i], &flags, wr_metrics_worker(metrics, i, k), err, sizeof(err));
            if (workers[started] == NULL) {
                log_fatal(cfg, i, "cannot start: a worker did not start", err);
                rc = 1;
                break;
            }
            started++;
        }
    }
    if (rc != 0) {
        atomic_store(&flags.stop, 1);
        for (int i = 0; i < started; i++) {
            wr_worker_free(workers[i]);
        }
        free(workers);
        close(sfd);
        wr_http_stop(http);
        wr_metrics_destroy(metrics);
        wr_breakers_destroy(breakers);
        free_inflight(inflight, cfg->sub_count);
        wr_reloader_destroy(reloader);
        wr_config_free(cfg);
        return rc;
    }
    /* partitioned subscriptions: what producers send to the queue itself goes on
     * into the partitions (reroute.h) */
    wr_reroute **reroutes = calloc((size_t)cfg->sub_count + 1, sizeof(*reroutes));
    for (int i = 0; reroutes != NULL && i < cfg->sub_count; i++) {
        char err[512];
        if (cfg->subs[i].partitions > 0 &&
            (reroutes[i] = wr_reroute_start(cfg, &cfg->subs[i], &flags.stop, err, sizeof(err))) ==
                NULL) {
            log_fatal(cfg, i, "re-routing into the partitions did not start", err);
        }
    }
    probe = wr_probe_start(cfg, reloader, metrics);
    wr_metrics_set_started(metrics);

    log_started(cfg, total, http, host);
    serve(cfg, sfd, reloader, metrics, &flags, workers, started);
    for (int i = 0; reroutes != NULL && i < cfg->sub_count; i++) {
        wr_reroute_stop(reroutes[i]);
    }
    free(reroutes);
    for (int i = 0; i < started; i++) {
        wr_worker_free(workers[i]);
    }
    free(workers);
    long applied, refused;
    wr_reloader_counts(reloader, &applied, &refused);
    wr_logline fin;
    wr_log_begin(&fin, WR_LOG_INFO, "warren stopped");
    wr_log_int(&fin, "reloads_applied", applied);
    wr_log_int(&fin, "reloads_refused", refused);
    wr_log_end(&fin);
    close(sfd);
    wr_probe_stop(probe);
    wr_http_stop(http);
    wr_metrics_destroy(metrics);
    wr_breakers_destroy(breakers);
    free_inflight(inflight, cfg->sub_count);
    wr_reloader_destroy(reloader);
    wr_config_free(cfg);
    return 0;
}
