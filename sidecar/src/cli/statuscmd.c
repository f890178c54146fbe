/*
 * statuscmd: `warren status`. See statuscmd.h.
 */
#include "statuscmd.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cliopt.h"
#include "cmdcfg.h"
#include "config.h"
#include "dlqtool.h"
#include "log.h"
#include "status.h"

#define DLQ_NOW_MAX 10000 /* --dlq-max: messages status reads of a DLQ (the first ones) */

/* What `warren status` was asked. */
typedef struct {
    const char *config, *url;
    int json, no_dlq;
    long dlq_max;
} status_args;

/*
 * Put what is in each subscription's DLQ now, by reason, into STATUS as the
 * subscription's "dlq_now_by_reason": read from the broker with CONFIG as
 * `dlq list --group-by reason` reads it, or a string saying why not (no
 * CONFIG, the DLQ not readable). At most the first MAX messages of each: when a
 * DLQ holds more, "dlq_now_partial" says how many were read of how many.
 */
static void add_dlq_now(json_t *st, const char *config, uint32_t max)
{
    wr_config *cfg = NULL;
    char why[1024] = "give -c FILE to read the DLQs";
    if (config != NULL) {
        wr_config_errors errs = {0};
        cfg = wr_config_load(config, &errs);
        if (cfg == NULL) {
            snprintf(why, sizeof(why), "%s", errs.count > 0 ? errs.lines[0] : "config not loaded");
        } else {
            /* the broker module's log lines go to stderr: stdout is the report */
            wr_log_set_fd(STDERR_FILENO);
            wr_log_set_level(cfg->log_level);
        }
        wr_config_errors_free(&errs);
    }
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(st, "subscriptions"), i, s)
    {
        const wr_subscription *sub =
            wr_cmd_find_subscription(cfg, json_string_value(json_object_get(s, "name")));
        json_t *now = NULL;
        char err[1024];
        uint32_t read = 0, held = 0;
        if (sub == NULL) {
            now = json_string(cfg != NULL ? "not in the config given" : why);
        } else if ((now = wr_dlqtool_by_reason(cfg, sub, max, &read, &held, err, sizeof(err))) ==
                   NULL) {
            now = json_string(err);
        } else if (read < held) {
            /* a big DLQ: the first MAX, and say so */
            json_t *part = json_object();
            json_object_set_new(part, "read", json_integer(read));
            json_object_set_new(part, "held", json_integer(held));
            json_object_set_new(s, "dlq_now_partial", part);
        }
        json_object_set_new(s, "dlq_now_by_reason", now);
    }
    wr_config_free(cfg);
}

/* Read ARGV into A. Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, status_args *a)
{
    enum { OPT_URL = 256, OPT_JSON, OPT_NO_DLQ, OPT_DLQ_MAX };
    static const struct option longopts[] = {WR_CLIOPT_CONFIG,
                                             WR_CLIOPT_HELP,
                                             {"url", required_argument, NULL, OPT_URL},
                                             {"json", no_argument, NULL, OPT_JSON},
                                             {"no-dlq", no_argument, NULL, OPT_NO_DLQ},
                                             {"dlq-max", required_argument, NULL, OPT_DLQ_MAX},
                                             {0}};
    wr_cliopt o = {
        .name = "status", .usage = wr_status_usage, .shortopts = "c:h", .longopts = longopts};
    *a = (status_args){.dlq_max = DLQ_NOW_MAX};
    int c;
    while ((c = wr_cliopt_next(&o, argc, argv)) >= 0) {
        if (c == OPT_URL) {
            a->url = optarg;
        } else if (c == OPT_JSON) {
            a->json = 1;
        } else if (c == OPT_NO_DLQ) {
            a->no_dlq = 1;
        } else if (wr_cliopt_count(optarg, 1, 1000000, &a->dlq_max) != 0) {
            return wr_cliopt_usage(&o, "--dlq-max needs a count from 1 to 1000000");
        }
    }
    a->config = o.config;
    if (c == WR_CLIOPT_EXIT) {
        return o.status;
    }
    if (optind < argc) {
        return wr_cliopt_usage(&o, "unexpected argument '%s'", argv[optind]);
    }
    if (a->url == NULL && a->config == NULL) {
        return wr_cliopt_usage(&o, "status needs -c FILE (or --url URL)");
    }
    return -1;
}

int wr_statuscmd_main(int argc, char **argv)
{
    status_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) {
        return rc;
    }
    char err[1024];
    json_t *st = wr_status_fetch(a.config, a.url, err, sizeof(err));
    if (st == NULL) {
        fprintf(stderr, "warren status: %s\n", err);
        return strstr(err, "http.listen") != NULL ? WR_CLI_USAGE : WR_CLI_FAIL;
    }
    if (!a.no_dlq) {
        add_dlq_now(st, a.config, (uint32_t)a.dlq_max);
    }
    if (a.json) {
        json_dumpf(st, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
    } else {
        wr_status_render(stdout, st);
    }
    json_decref(st);
    return WR_CLI_OK;
}
