/*
 * main: pick the command and hand over to its module. The options of run,
 * check and exec are read here (cliopt.h); the other commands read their own.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "app.h"
#include "cliopt.h"
#include "config.h"
#include "dlqtool.h"
#include "exec.h"
#include "status.h"
#include "statuscmd.h"
#include "tracecmd.h"

static const char usage_head[] = "usage: warren <command> [options]\n"
                                 "\n"
                                 "commands:\n";

static const char usage_run[] =
    "  run -c FILE          consume the configured queues until SIGTERM/SIGINT\n";

static const char usage_check[] =
    "  check -c FILE [--lint error|warn|off]\n"
    "                       validate the config, compile every handler, and find reads\n"
    "                       and writes of undeclared globals in handlers and their\n"
    "                       modules (an error unless --lint says otherwise)\n";

static const char usage_exec[] =
    "  exec -c FILE --subscription NAME --event FILE.json [--json] [--live-http]\n"
    "                       run one event through the handler, no broker: print the\n"
    "                       outcome and what would be published, retried or dead-lettered;\n"
    "                       ctx.http is answered by the event file's \"http\" fakes, and\n"
    "                       only --live-http sends requests over the network\n"
    "  exec -c FILE --subscription NAME [--event FILE.json] --envelope\n"
    "  exec -c FILE --subscription NAME --event FILE.json --result FILE.json [--json]\n"
    "                       for the busted kit (warren.testing): the subscription's\n"
    "                       settings and what the worker makes of an event before its\n"
    "                       handler runs (JSON); or the decision for a handler's result\n"
    "                       the kit ran itself\n";

static const char usage_reference[] =
    "  config-reference     print every config key as a Markdown table\n";

static const char usage_tail[] =
    "\n"
    "options:\n"
    "  -c, --config FILE    the YAML configuration (see config/warren.yaml)\n"
    "  -h, --help           show this help (warren COMMAND --help: that command's)\n"
    "  -V, --version        show the version\n"
    "\n"
    "exit status: 0 ok, 1 failure (config errors are printed as FILE:LINE:COL: message;\n"
    "for exec: the handler did not succeed; for dlq: a message not replayed, a purge\n"
    "refused; for trace: the event was not found), 2 usage error\n";

/* The overview: every command (dlq's, trace's and status's from their modules). */
static void put_usage(FILE *fp)
{
    fputs(usage_head, fp);
    fputs(usage_run, fp);
    fputs(usage_check, fp);
    fputs(usage_exec, fp);
    fputs(usage_reference, fp);
    fputs(wr_dlqtool_usage, fp);
    fputs(wr_tracecmd_usage, fp);
    fputs(wr_status_usage, fp);
    fputs(usage_tail, fp);
}

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "warren: %s%s%s\n\n", what, arg ? arg : "", arg ? "'" : "");
    put_usage(stderr);
    return WR_CLI_USAGE;
}

/* After O's options: no positional argument may be left, and -c FILE must
 * have been given. Returns -1 to go on, else the exit status. */
static int need_config(const wr_cliopt *o, int argc, char **argv)
{
    if (optind < argc) {
        return wr_cliopt_usage(o, "unexpected argument '%s'", argv[optind]);
    }
    if (o->config == NULL) {
        return wr_cliopt_usage(o, "%s needs -c FILE", o->name);
    }
    return -1;
}

/* `warren run -c FILE` */
static int cmd_run(int argc, char **argv)
{
    static const struct option longopts[] = {WR_CLIOPT_CONFIG, WR_CLIOPT_HELP, {0}};
    wr_cliopt o = {.name = "run", .usage = usage_run, .shortopts = "c:h", .longopts = longopts};
    int rc =
        wr_cliopt_next(&o, argc, argv) == WR_CLIOPT_EXIT ? o.status : need_config(&o, argc, argv);
    if (rc >= 0) {
        return rc;
    }
    /* libcurl's global set-up is not thread-safe: once, before any worker starts */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = wr_app_run(o.config);
    curl_global_cleanup();
    return rc;
}

/* `warren check -c FILE [--lint error|warn|off]` */
static int cmd_check(int argc, char **argv)
{
    enum { OPT_LINT = 256 };
    static const struct option longopts[] = {
        WR_CLIOPT_CONFIG, WR_CLIOPT_HELP, {"lint", required_argument, NULL, OPT_LINT}, {0}};
    wr_cliopt o = {.name = "check", .usage = usage_check, .shortopts = "c:h", .longopts = longopts};
    wr_lint_mode lint = WR_LINT_ERROR;
    int c;
    while ((c = wr_cliopt_next(&o, argc, argv)) == OPT_LINT) {
        if (strcmp(optarg, "error") == 0) {
            lint = WR_LINT_ERROR;
        } else if (strcmp(optarg, "warn") == 0) {
            lint = WR_LINT_WARN;
        } else if (strcmp(optarg, "off") == 0) {
            lint = WR_LINT_OFF;
        } else {
            return wr_cliopt_usage(&o, "--lint takes error, warn or off (got '%s')", optarg);
        }
    }
    int rc = c == WR_CLIOPT_EXIT ? o.status : need_config(&o, argc, argv);
    if (rc >= 0) {
        return rc;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = wr_app_check(o.config, lint);
    curl_global_cleanup();
    return rc;
}

/* `warren exec ...`: see exec.h */
static int cmd_exec(int argc, char **argv)
{
    enum { OPT_SUB = 256, OPT_EVENT, OPT_JSON, OPT_LIVE, OPT_ENVELOPE, OPT_RESULT };
    static const struct option longopts[] = {WR_CLIOPT_CONFIG,
                                             WR_CLIOPT_HELP,
                                             {"subscription", required_argument, NULL, OPT_SUB},
                                             {"event", required_argument, NULL, OPT_EVENT},
                                             {"json", no_argument, NULL, OPT_JSON},
                                             {"live-http", no_argument, NULL, OPT_LIVE},
                                             {"envelope", no_argument, NULL, OPT_ENVELOPE},
                                             {"result", required_argument, NULL, OPT_RESULT},
                                             {0}};
    wr_cliopt o = {.name = "exec", .usage = usage_exec, .shortopts = "c:h", .longopts = longopts};
    wr_exec_opts eo = {0};
    int c;
    while ((c = wr_cliopt_next(&o, argc, argv)) >= 0) {
        switch (c) {
        case OPT_SUB:
            eo.subscription = optarg;
            break;
        case OPT_EVENT:
            eo.event_path = optarg;
            break;
        case OPT_JSON:
            eo.json_output = 1;
            break;
        case OPT_LIVE:
            eo.live_http = 1;
            break;
        case OPT_ENVELOPE:
            eo.envelope = 1;
            break;
        default:
            eo.result_path = optarg;
            break;
        }
    }
    int rc = c == WR_CLIOPT_EXIT ? o.status : need_config(&o, argc, argv);
    if (rc >= 0) {
        return rc;
    }
    if (eo.subscription == NULL || (eo.event_path == NULL && !eo.envelope)) {
        return wr_cliopt_usage(&o, "exec needs --subscription NAME and --event FILE.json");
    }
    if (eo.envelope && (eo.result_path != NULL || eo.live_http)) {
        return wr_cliopt_usage(&o, "exec --envelope runs no handler: no --result, no --live-http");
    }
    eo.config_path = o.config;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = wr_exec_run(&eo);
    curl_global_cleanup();
    return rc;
}

/* `warren config-reference` */
static int cmd_reference(int argc, char **argv)
{
    static const struct option longopts[] = {WR_CLIOPT_HELP, {0}};
    wr_cliopt o = {.name = "config-reference",
                   .usage = usage_reference,
                   .shortopts = "h",
                   .longopts = longopts};
    if (wr_cliopt_next(&o, argc, argv) == WR_CLIOPT_EXIT) {
        return o.status;
    }
    if (optind < argc) {
        return wr_cliopt_usage(&o, "config-reference takes no arguments (got '%s')", argv[optind]);
    }
    wr_config_write_reference(stdout);
    return WR_CLI_OK;
}

static const struct {
    const char *name;
    int (*main)(int argc, char **argv); /* ARGV[0] is the command's name */
} commands[] = {
    {"run", cmd_run},
    {"check", cmd_check},
    {"exec", cmd_exec},
    {"config-reference", cmd_reference},
    {"dlq", wr_dlqtool_main},
    {"trace", wr_tracecmd_main},
    {"status", wr_statuscmd_main},
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        return usage_error("no command given", NULL);
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        put_usage(stdout);
        return WR_CLI_OK;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        printf("warren %s\n", WARREN_VERSION);
        return WR_CLI_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(cmd, commands[i].name) == 0) {
            return commands[i].main(argc - 1, argv + 1);
        }
    }
    return usage_error("unknown command '", cmd);
}
