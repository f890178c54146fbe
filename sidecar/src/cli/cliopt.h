/*
 * cliopt: the option parsing every `warren` command shares, on glibc's
 * getopt_long (permuting: options and positional arguments may come in any
 * order; "--" ends the options).
 *
 * A command describes itself in a wr_cliopt (its name for messages, its
 * usage lines, its option table) and calls wr_cliopt_next until it returns
 * WR_CLIOPT_END or WR_CLIOPT_EXIT. What every command has is handled here:
 *
 *   -c, --config FILE  stored in cliopt.config (when the table has it)
 *   -h, --help         the command's usage on stdout; exit status 0
 *   an unknown option, or one without its value:
 *                      "warren CMD: unknown option '--x'" (or "option '--x'
 *                      needs a value") and the command's usage on stderr;
 *                      exit status 2
 *
 * Exit status of every command: 0 ok, 1 failure, 2 usage error
 * (WR_CLI_OK, WR_CLI_FAIL, WR_CLI_USAGE).
 */
#ifndef WR_CLIOPT_H
#define WR_CLIOPT_H

#include <getopt.h>
#include <stdio.h>

#define WR_CLI_OK 0
#define WR_CLI_FAIL 1
#define WR_CLI_USAGE 2

/* What wr_cliopt_next returns besides an option's val. */
#define WR_CLIOPT_END (-1)  /* no more options: positional arguments from optind */
#define WR_CLIOPT_EXIT (-2) /* help printed or usage error said: exit with cliopt.status */

/* The long options every command with a config file has (put them in its table). */
#define WR_CLIOPT_CONFIG                                                                           \
    {                                                                                              \
        "config", required_argument, NULL, 'c'                                                     \
    }
#define WR_CLIOPT_HELP                                                                             \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

typedef struct {
    const char *name;              /* "trace", "dlq list": messages say "warren NAME: " */
    const char *usage;             /* its usage lines (those `warren --help` shows) */
    const char *shortopts;         /* getopt's: "c:h" (a leading ':' is added) */
    const struct option *longopts; /* ends with {0}; values above 255 for long-only ones */
    const char *config;            /* -c/--config FILE, NULL when not given */
    int status;                    /* the exit status after WR_CLIOPT_EXIT */
    int started;                   /* set by wr_cliopt_next: the parse was reset */
} wr_cliopt;

/* The next option of ARGV (ARGV[0] is the command's name; ARGV may be
 * reordered, positional arguments last): its val, with its value in optarg;
 * WR_CLIOPT_END after the last one; or WR_CLIOPT_EXIT after -h/--help
 * (usage on stdout, status 0) or a usage error (said on stderr, status 2).
 * -c/--config is taken here and never returned. */
int wr_cliopt_next(wr_cliopt *o, int argc, char **argv);

/* A usage error of O's command: "warren NAME: " FMT ... on one line and the
 * usage on stderr. Returns WR_CLI_USAGE. */
int wr_cliopt_usage(const wr_cliopt *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* O's usage ("usage: warren ..." and its lines) on FP. */
void wr_cliopt_put_usage(const wr_cliopt *o, FILE *fp);

/* STR as a count from MIN to MAX into *OUT: 0, or -1 when it is not one. */
int wr_cliopt_count(const char *str, long min, long max, long *out);

#endif
