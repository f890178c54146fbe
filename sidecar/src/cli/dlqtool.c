/*
 * dlqtool: `warren dlq list|show|replay|purge`: the options, and each
 * command on each subscription. See dlqtool.h.
 */
#include "dlqtool.h"

#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cliopt.h"
#include "cmdcfg.h"
#include "config.h"
#include "dlqread.h"
#include "dlqrender.h"
#include "dlqreplay.h"
#include "log.h"
#include "outcome.h"

#define USAGE_LIST                                                                                 \
    "  dlq list -c FILE [--subscription NAME] [filters] [--json]\n"                                \
    "                       one line per message id in the DLQ, with its copy count;\n"            \
    "                       the DLQ is left as it is; without --subscription, every\n"             \
    "                       subscription's DLQ in turn (--json: an object by name)\n"
#define USAGE_SHOW                                                                                 \
    "  dlq show ID -c FILE --subscription NAME [--json]\n"                                         \
    "                       every property and header of one DLQ message, and its body\n"
#define USAGE_REPLAY                                                                               \
    "  dlq replay -c FILE --subscription NAME [filters] [--rate N/s] [--dry-run]\n"                \
    "                       reset the idempotency record and send each matching message\n"         \
    "                       back to the subscription's queue, once per id, removing\n"             \
    "                       every copy of it from the DLQ (default rate 50/s)\n"
#define USAGE_PURGE                                                                                \
    "  dlq purge -c FILE --subscription NAME [filters] [--yes]\n"                                  \
    "                       delete the matching messages, every copy of each id\n"                 \
    "                       (asks first without --yes)\n"
#define USAGE_GROUP_BY                                                                             \
    "  dlq list ... --group-by reason|error\n"                                                     \
    "                       count the matching ids and messages per reason code or per\n"          \
    "                       error text instead of listing them (no default limit)\n"
#define USAGE_FILTERS                                                                              \
    "  dlq filters: --id ID, --reason R, --grep TEXT (id, error, body),\n"                         \
    "               --older-than DURATION (last failure), --limit N (list: default 100)\n"         \
    "               R is a reason code, the one of x-warren-reason, metrics and trace:\n"          \
    "               warren dlq list --reason help lists them\n"

const char wr_dlqtool_usage[] =
    USAGE_LIST USAGE_SHOW USAGE_REPLAY USAGE_PURGE USAGE_GROUP_BY USAGE_FILTERS;

typedef enum { CMD_LIST, CMD_SHOW, CMD_REPLAY, CMD_PURGE } dlq_cmd;

/* The options, and which commands take them. */
enum {
    OPT_SUB = 256,
    OPT_JSON,
    OPT_ID,
    OPT_REASON,
    OPT_GREP,
    OPT_OLDER,
    OPT_LIMIT,
    OPT_GROUP_BY,
    OPT_RATE,
    OPT_DRY_RUN,
    OPT_YES
};
#define FOR_ALL 0xfu
#define FOR_LIST (1u << CMD_LIST)
#define FOR_SHOW (1u << CMD_SHOW)
#define FOR_REPLAY (1u << CMD_REPLAY)
#define FOR_PURGE (1u << CMD_PURGE)
#define FOR_FILTERS (FOR_LIST | FOR_REPLAY | FOR_PURGE)

static const struct {
    struct option opt;
    unsigned cmds; /* FOR_*: the commands that take it */
} all_opts[] = {
    {WR_CLIOPT_CONFIG, FOR_ALL},
    {WR_CLIOPT_HELP, FOR_ALL},
    {{"subscription", required_argument, NULL, OPT_SUB}, FOR_ALL},
    {{"json", no_argument, NULL, OPT_JSON}, FOR_ALL},
    {{"id", required_argument, NULL, OPT_ID}, FOR_FILTERS},
    {{"reason", required_argument, NULL, OPT_REASON}, FOR_FILTERS},
    {{"grep", required_argument, NULL, OPT_GREP}, FOR_FILTERS},
    {{"older-than", required_argument, NULL, OPT_OLDER}, FOR_FILTERS},
    {{"limit", required_argument, NULL, OPT_LIMIT}, FOR_FILTERS},
    {{"group-by", required_argument, NULL, OPT_GROUP_BY}, FOR_LIST},
    {{"rate", required_argument, NULL, OPT_RATE}, FOR_REPLAY},
    {{"dry-run", no_argument, NULL, OPT_DRY_RUN}, FOR_REPLAY},
    {{"yes", no_argument, NULL, OPT_YES}, FOR_PURGE},
};
#define NOPTS (sizeof(all_opts) / sizeof(all_opts[0]))

/* The commands: name, usage (for their --help and their usage errors). */
static const struct {
    const char *name; /* "dlq list": how messages name it */
    const char *usage;
} cmds[] = {
    [CMD_LIST] = {"dlq list", USAGE_LIST USAGE_GROUP_BY USAGE_FILTERS},
    [CMD_SHOW] = {"dlq show", USAGE_SHOW},
    [CMD_REPLAY] = {"dlq replay", USAGE_REPLAY USAGE_FILTERS},
    [CMD_PURGE] = {"dlq purge", USAGE_PURGE USAGE_FILTERS},
};

/* What `warren dlq CMD` was asked. */
typedef struct {
    dlq_cmd cmd;
    const char *config, *sub, *show_id;
    wr_dlqread_filter f;  /* --id, --reason, --grep, --older-than (show: its ID) */
    const char *group_by; /* list --group-by: "reason" or "error"; NULL: list */
    long limit;           /* 0: no limit; -1: the command's default */
    int json, dry_run, yes;
    double rate;  /* replay: messages per second */
    json_t *sink; /* list --json of every subscription: each one's output goes here */
} opts;

/* --- purge ---------------------------------------------------------------- */

static int do_purge(const opts *o, const wr_subscription *sub, wr_dlqreader *r, const size_t *sel,
                    size_t nsel)
{
    size_t copies = 0;
    for (size_t i = 0; i < nsel; i++) {
        copies += r->groups[sel[i]].copies;
    }
    if (nsel > 0 && !o->yes) {
        if (!isatty(STDIN_FILENO)) {
            fprintf(stderr,
                    "warren dlq: refusing to purge %zu message(s) from %s: stdin is not "
                    "a terminal; pass --yes\n",
                    copies, sub->dlq);
            return 1;
        }
        fprintf(stderr, "purge %zu messages (%zu ids) from %s? [y/N] ", copies, nsel, sub->dlq);
        char line[16] = "";
        if (fgets(line, sizeof(line), stdin) == NULL ||
            (strcmp(line, "y\n") != 0 && strcmp(line, "yes\n") != 0 && strcmp(line, "Y\n") != 0)) {
            fprintf(stderr, "nothing purged\n");
            return 1;
        }
    }
    /* every copy of a selected id goes: --id X leaves no copy of X behind */
    size_t purged = 0;
    for (size_t i = 0; i < nsel; i++) {
        for (size_t c = r->groups[sel[i]].first; c != WR_DLQREAD_NONE; c = r->msgs[c].next) {
            if (wr_dlqread_ack(r, &r->msgs[c]) == 0) {
                purged++;
            }
        }
    }
    if (o->json) {
        json_t *j = json_object();
        json_object_set_new(j, "dlq", json_string(sub->dlq));
        json_object_set_new(j, "purged", json_integer((json_int_t)purged));
        json_object_set_new(j, "ids", json_integer((json_int_t)nsel));
        wr_dlqrender_print_json(j);
    } else {
        printf("purged %zu message(s) (%zu ids) from %s\n", purged, nsel, sub->dlq);
    }
    return purged == copies ? 0 : 1;
}

json_t *wr_dlqtool_by_reason(const wr_config *cfg, const wr_subscription *sub, uint32_t max,
                             uint32_t *read, uint32_t *held, char *err, size_t cap)
{
    wr_dlqread_filter any = {.older_ms = -1};
    wr_dlqreader r = {0};
    size_t *sel = NULL, nsel = 0;
    json_t *out = NULL;
    int opened = wr_dlqread_open(&r, cfg, sub->dlq) == 0;
    *held = r.depth;
    if (opened && max > 0 && r.depth > max) {
        r.depth = max; /* the first MAX: reader_next stops there */
    }
    if (!opened || wr_dlqread_scan(&r, &any, 0, &sel, &nsel) != 0) {
        snprintf(err, cap, "%s: %s", sub->dlq, r.err);
    } else {
        json_t *by = wr_dlqrender_count_groups("reason", &r, sel, nsel, NULL);
        if (by == NULL || (out = json_object()) == NULL) {
            snprintf(err, cap, "out of memory");
        } else {
            const char *key;
            json_t *row;
            json_object_foreach(by, key, row)
            {
                json_object_del(row, "key");
                json_object_set(out, key, row);
            }
        }
        json_decref(by);
    }
    *read = (uint32_t)r.scanned;
    wr_dlqread_close(&r);
    free(sel);
    return out;
}

/* --- entry ---------------------------------------------------------------- */

/* An unknown --reason: a usage error that lists the codes (--reason help: the
 * list alone, exit 0). */
static int bad_reason(const char *name)
{
    char list[1024];
    wr_reason_list(", ", list, sizeof(list));
    if (strcmp(name, "help") == 0) {
        printf("reason codes: %s\n", list);
        return 0;
    }
    fprintf(stderr, "warren dlq: --reason: unknown reason '%s'; valid reasons: %s\n", name, list);
    return 2;
}

static int parse_rate(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || !(v > 0) || (*end && strcmp(end, "/s") != 0)) {
        return -1;
    }
    *out = v;
    return 0;
}

/*
 * The value of option C of command O->cmd (getopt's optarg) into O. Returns
 * -1 to go on, else the exit status (a bad value is a usage error of CLI).
 */
static int take_option(opts *o, int c, const wr_cliopt *cli)
{
    switch (c) {
    case OPT_SUB:
        o->sub = optarg;
        return -1;
    case OPT_JSON:
        o->json = 1;
        return -1;
    case OPT_ID:
        o->f.id = optarg;
        return -1;
    case OPT_GREP:
        o->f.grep = optarg;
        return -1;
    case OPT_DRY_RUN:
        o->dry_run = 1;
        return -1;
    case OPT_YES:
        o->yes = 1;
        return -1;
    case OPT_REASON:
        o->f.reason = optarg;
        return wr_reason_lookup(optarg, &o->f.reason_code) == 0 ? -1 : bad_reason(optarg);
    case OPT_GROUP_BY:
        o->group_by = optarg;
        return strcmp(optarg, "reason") == 0 || strcmp(optarg, "error") == 0
                   ? -1
                   : wr_cliopt_usage(cli, "--group-by: '%s' is not reason or error", optarg);
    case OPT_OLDER:
        return wr_config_parse_duration(optarg, &o->f.older_ms) == 0
                   ? -1
                   : wr_cliopt_usage(cli, "--older-than: '%s' is not a duration (e.g. 30m, 2h, 7d)",
                                     optarg);
    case OPT_LIMIT:
        return wr_cliopt_count(optarg, 0, LONG_MAX, &o->limit) == 0
                   ? -1
                   : wr_cliopt_usage(cli, "--limit: '%s' is not a count (0 = no limit)", optarg);
    default: /* OPT_RATE */
        return parse_rate(optarg, &o->rate) == 0
                   ? -1
                   : wr_cliopt_usage(cli, "--rate: '%s' is not a rate (e.g. 50/s)", optarg);
    }
}

/* After the options of O's command: its positional arguments (show: the ID)
 * and what it cannot go without. Returns -1 to go on, else the exit status. */
static int check_args(opts *o, const wr_cliopt *cli, int argc, char **argv)
{
    if (o->cmd == CMD_SHOW && optind < argc) {
        o->show_id = argv[optind++];
    }
    if (optind < argc) {
        return wr_cliopt_usage(cli, "unexpected argument '%s'", argv[optind]);
    }
    o->config = cli->config;
    if ((o->config == NULL || o->sub == NULL) && o->cmd != CMD_LIST) {
        return wr_cliopt_usage(cli, "%s needs -c FILE and --subscription NAME", cli->name);
    }
    if (o->config == NULL) {
        return wr_cliopt_usage(cli, "%s needs -c FILE", cli->name);
    }
    if (o->cmd == CMD_SHOW && o->show_id == NULL) {
        return wr_cliopt_usage(cli, "dlq show needs a message ID");
    }
    if (o->cmd == CMD_SHOW) {
        o->f.id = o->show_id;
        o->limit = 1;
    } else if (o->limit < 0) {
        o->limit = o->cmd == CMD_LIST && o->group_by == NULL ? 100 : 0;
    }
    return -1;
}

/* Read `dlq CMD ARGV...` (ARGV[0] is CMD) into O. Returns -1 to go on, else
 * the exit status (--help: 0, a usage error: 2). */
static int parse_args(int argc, char **argv, opts *o)
{
    *o = (opts){.limit = -1, .rate = 50, .f = {.older_ms = -1}};
    size_t k = 0;
    while (k < sizeof(cmds) / sizeof(cmds[0]) && strcmp(argv[0], cmds[k].name + 4) != 0) {
        k++;
    }
    if (k == sizeof(cmds) / sizeof(cmds[0])) {
        fprintf(stderr, "warren dlq: unknown dlq command '%s'\n\nusage: warren dlq <command>\n%s",
                argv[0], wr_dlqtool_usage);
        return WR_CLI_USAGE;
    }
    o->cmd = (dlq_cmd)k;
    struct option longopts[NOPTS + 1];
    size_t n = 0;
    for (size_t i = 0; i < NOPTS; i++) {
        if (all_opts[i].cmds & (1u << o->cmd)) {
            longopts[n++] = all_opts[i].opt;
        }
    }
    longopts[n] = (struct option){0};
    wr_cliopt cli = {
        .name = cmds[k].name, .usage = cmds[k].usage, .shortopts = "c:h", .longopts = longopts};
    int c, rc = -1;
    while (rc < 0 && (c = wr_cliopt_next(&cli, argc, argv)) >= 0) {
        rc = take_option(o, c, &cli);
    }
    if (rc >= 0) {
        return rc;
    }
    return c == WR_CLIOPT_EXIT ? cli.status : check_args(o, &cli, argc, argv);
}

/* `dlq list` of SUB: one line (or JSON entry) per selected id, or the counts
 * per reason or error (--group-by). Returns the exit status. */
static int do_list(const opts *o, const wr_subscription *sub, const wr_dlqreader *r,
                   const size_t *sel, size_t nsel)
{
    wr_dlqrender_out out = {.json = o->json, .sink = o->sink};
    if (o->group_by != NULL) {
        return wr_dlqrender_groups(&out, o->group_by, sub, r, sel, nsel);
    }
    if (o->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < nsel; i++) {
            const wr_dlqread_group *g = &r->groups[sel[i]];
            json_array_append_new(a, wr_dlqrender_summary_json(&r->msgs[g->rep], g->copies));
        }
        return wr_dlqrender_emit(&out, sub, a);
    }
    size_t copies = 0;
    for (size_t i = 0; i < nsel; i++) {
        const wr_dlqread_group *g = &r->groups[sel[i]];
        wr_dlqrender_summary_line(stdout, &r->msgs[g->rep], g->copies);
        copies += g->copies;
    }
    fprintf(stderr, "%zu id(s) listed (%zu message(s)); %s held %u\n", nsel, copies, sub->dlq,
            r->depth);
    return 0;
}

/* `dlq show ID` of SUB: the first copy of the one selected id. */
static int do_show(const opts *o, const wr_subscription *sub, const wr_dlqreader *r,
                   const size_t *sel, size_t nsel)
{
    if (nsel == 0) {
        fprintf(stderr, "warren dlq: no message '%s' in %s\n", o->show_id, sub->dlq);
        return 1;
    }
    const wr_dlqread_group *g = &r->groups[sel[0]];
    if (o->json) {
        return wr_dlqrender_print_json(wr_dlqrender_show_json(&r->msgs[g->rep], g->copies));
    }
    wr_dlqrender_show_text(&r->msgs[g->rep], g->copies, sub->dlq);
    return 0;
}

/* Run the command of O on subscription SUB's DLQ. Returns the exit status. */
static int run_sub(const opts *o, const wr_config *cfg, const wr_subscription *sub)
{
    int rc = 1;
    wr_dlqreader r = {0};
    size_t *sel = NULL, nsel = 0;
    if (wr_dlqread_open(&r, cfg, sub->dlq) != 0 ||
        wr_dlqread_scan(&r, &o->f, o->limit, &sel, &nsel) != 0) {
        fprintf(stderr, "warren dlq: %s: %s\n", sub->dlq, r.err);
    } else if (o->cmd == CMD_LIST) {
        rc = do_list(o, sub, &r, sel, nsel);
    } else if (o->cmd == CMD_SHOW) {
        rc = do_show(o, sub, &r, sel, nsel);
    } else if (o->cmd == CMD_REPLAY) {
        wr_dlqreplay_opts ro = {.dry_run = o->dry_run, .json = o->json, .rate = o->rate};
        rc = wr_dlqreplay_run(&ro, cfg, sub, &r, sel, nsel);
    } else {
        rc = do_purge(o, sub, &r, sel, nsel);
    }
    fflush(stdout);
    wr_dlqread_close(&r);
    free(sel);
    return rc;
}

/* `dlq list` without --subscription: every subscription's DLQ in turn (with
 * --json, one object by name). Returns the worst exit status. */
static int run_all(opts *o, const wr_config *cfg)
{
    int rc = 0;
    if (o->json && (o->sink = json_object()) == NULL) {
        fprintf(stderr, "warren dlq: out of memory\n");
        return 1;
    }
    for (int i = 0; i < cfg->sub_count; i++) {
        if (!o->json) {
            printf("%s%s (%s):\n", i > 0 ? "\n" : "", cfg->subs[i].name, cfg->subs[i].dlq);
            fflush(stdout);
        }
        int one = run_sub(o, cfg, &cfg->subs[i]);
        rc = one > rc ? one : rc;
    }
    if (o->sink != NULL) {
        int prc = wr_dlqrender_print_json(o->sink);
        rc = prc > rc ? prc : rc;
    }
    return rc;
}

int wr_dlqtool_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        FILE *fp = argc < 2 ? stderr : stdout;
        if (argc < 2) {
            fprintf(stderr, "warren dlq: dlq needs a command: list, show, replay or purge\n\n");
        }
        fprintf(fp, "usage: warren dlq <command> [options]\n%s", wr_dlqtool_usage);
        return argc < 2 ? WR_CLI_USAGE : WR_CLI_OK;
    }
    opts o;
    int rc = parse_args(argc - 1, argv + 1, &o);
    if (rc >= 0) {
        return rc;
    }
    wr_config *cfg = wr_cmd_load(o.config, NULL);
    if (cfg == NULL) {
        return WR_CLI_USAGE;
    }
    srand((unsigned)wr_now_ms() ^ (unsigned)getpid());
    /* the broker module's log lines go to stderr: stdout is the report (and JSON) */
    wr_log_set_fd(STDERR_FILENO);
    wr_log_set_level(cfg->log_level);
    const wr_subscription *sub = NULL;
    if (o.sub == NULL) {
        rc = run_all(&o, cfg);
    } else if ((sub = wr_cmd_subscription(cfg, o.sub, "warren dlq")) == NULL) {
        rc = WR_CLI_USAGE;
    } else {
        rc = run_sub(&o, cfg, sub);
    }
    wr_config_free(cfg);
    return rc;
}
