/*
 * main: parse the command line and hand over to app.c. No logic lives here.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "app.h"
#include "config.h"
#include "dlqtool.h"
#include "exec.h"
#include "status.h"
#include "tracecmd.h"

static const char usage[] =
    "usage: warren <command> [options]\n"
    "\n"
    "commands:\n"
    "  run -c FILE          consume the configured queues until SIGTERM/SIGINT\n"
    "  check -c FILE [--lint error|warn|off]\n"
    "                       validate the config, compile every handler, and find reads\n"
    "                       and writes of undeclared globals in handlers and their\n"
    "                       modules (an error unless --lint says otherwise)\n"
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
    "                       the kit ran itself\n"
    "  config-reference     print every config key as a Markdown table\n";

static const char usage_tail[] =
    "\n"
    "options:\n"
    "  -c, --config FILE    the YAML configuration (see config/warren.yaml)\n"
    "  -h, --help           show this help\n"
    "  -V, --version        show the version\n"
    "\n"
    "exit status: 0 ok, 1 failure (config errors are printed as FILE:LINE:COL: message;\n"
    "for exec: the handler did not succeed; for dlq: a message not replayed, a purge\n"
    "refused; for trace: the event was not found), 2 usage error\n";

/* The commands (dlq's from dlqtool.c), then the options and exit status. */
static void put_usage(FILE *fp)
{
    fputs(usage, fp);
    fputs(wr_dlqtool_usage, fp);
    fputs(wr_tracecmd_usage, fp);
    fputs(wr_status_usage, fp);
    fputs(usage_tail, fp);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "warren: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n");
    put_usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        return usage_error("%s", "no command given");
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        put_usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        printf("warren %s\n", WARREN_VERSION);
        return 0;
    }
    if (strcmp(cmd, "config-reference") == 0) {
        if (argc != 2) {
            return usage_error("config-reference takes no arguments (got '%s')", argv[2]);
        }
        wr_config_write_reference(stdout);
        return 0;
    }
    if (strcmp(cmd, "dlq") == 0) {
        return wr_dlqtool_main(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "trace") == 0) {
        return wr_tracecmd_main(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "status") == 0) {
        return wr_status_main(argc - 2, argv + 2);
    }
    int exec = strcmp(cmd, "exec") == 0;
    if (strcmp(cmd, "run") != 0 && strcmp(cmd, "check") != 0 && !exec) {
        return usage_error("unknown command '%s'", cmd);
    }
    const char *config = NULL, *sub = NULL, *event = NULL, *result = NULL;
    int json = 0, live_http = 0, envelope = 0;
    wr_lint_mode lint = WR_LINT_ERROR;
    int check = strcmp(cmd, "check") == 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                return usage_error("%s needs a file name", argv[i]);
            }
            config = argv[++i];
        } else if (exec &&
                   (strcmp(argv[i], "--subscription") == 0 || strcmp(argv[i], "--event") == 0)) {
            if (i + 1 >= argc) {
                return usage_error("%s needs a value", argv[i]);
            }
            *(argv[i][2] == 's' ? &sub : &event) = argv[i + 1];
            i++;
        } else if (exec && strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (exec && strcmp(argv[i], "--live-http") == 0) {
            live_http = 1;
        } else if (check && strcmp(argv[i], "--lint") == 0) {
            const char *m = i + 1 < argc ? argv[++i] : "";
            if (strcmp(m, "error") == 0) {
                lint = WR_LINT_ERROR;
            } else if (strcmp(m, "warn") == 0) {
                lint = WR_LINT_WARN;
            } else if (strcmp(m, "off") == 0) {
                lint = WR_LINT_OFF;
            } else {
                return usage_error("--lint takes error, warn or off (got '%s')", m);
            }
        } else if (exec && strcmp(argv[i], "--envelope") == 0) {
            envelope = 1;
        } else if (exec && strcmp(argv[i], "--result") == 0) {
            if (i + 1 >= argc) {
                return usage_error("%s needs a file name", argv[i]);
            }
            result = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            put_usage(stdout);
            return 0;
        } else {
            return usage_error("unexpected argument '%s'", argv[i]);
        }
    }
    if (config == NULL) {
        return usage_error("%s needs -c FILE", cmd);
    }
    if (exec && (sub == NULL || (event == NULL && !envelope))) {
        return usage_error("%s", "exec needs --subscription NAME and --event FILE.json");
    }
    if (exec && envelope && (result != NULL || live_http)) {
        return usage_error("%s", "exec --envelope runs no handler: no --result, no --live-http");
    }
    /* libcurl's global set-up is not thread-safe: once, before any worker starts */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    wr_exec_opts eo = {.config_path = config,
                       .subscription = sub,
                       .event_path = event,
                       .json_output = json,
                       .live_http = live_http,
                       .envelope = envelope,
                       .result_path = result};
    int rc = exec                      ? wr_exec_run(&eo)
             : strcmp(cmd, "run") == 0 ? wr_app_run(config)
                                       : wr_app_check(config, lint);
    curl_global_cleanup();
    return rc;
}
