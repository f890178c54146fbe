/*
 * cliopt: getopt_long behind every `warren` command. See cliopt.h.
 */
#include "cliopt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void wr_cliopt_put_usage(const wr_cliopt *o, FILE *fp)
{
    int has_config = 0;
    for (const struct option *l = o->longopts; l != NULL && l->name != NULL; l++) {
        has_config |= l->val == 'c';
    }
    fprintf(fp, "usage: warren %s [options]\n%s\n", o->name, o->usage);
    if (has_config) {
        fputs("  -c, --config FILE    the YAML configuration (see config/warren.yaml)\n", fp);
    }
    fputs("  -h, --help           show this help\n"
          "\n"
          "exit status: 0 ok, 1 failure, 2 usage error\n",
          fp);
}

int wr_cliopt_usage(const wr_cliopt *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "warren %s: ", o->name);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    wr_cliopt_put_usage(o, stderr);
    return WR_CLI_USAGE;
}

/* A usage error about the option getopt stopped at: a long one as written
 * (without its "=value"), a short one as "-x" (it may sit in a cluster). */
static int bad_option(wr_cliopt *o, char **argv, int missing)
{
    char text[8];
    const char *a = optind > 0 ? argv[optind - 1] : "";
    if (strncmp(a, "--", 2) != 0 && optopt > ' ' && optopt < 0x7f) {
        snprintf(text, sizeof(text), "-%c", optopt);
        a = text;
    }
    int n = (int)strcspn(a, "=");
    o->status = missing ? wr_cliopt_usage(o, "option '%.*s' needs a value", n, a)
                        : wr_cliopt_usage(o, "unknown option '%.*s'", n, a);
    return WR_CLIOPT_EXIT;
}

int wr_cliopt_next(wr_cliopt *o, int argc, char **argv)
{
    char shortopts[64];
    if (!o->started) {
        optind = 0; /* glibc: a full reset, for a parse of its own */
        o->started = 1;
    }
    opterr = 0;
    snprintf(shortopts, sizeof(shortopts), ":%s", o->shortopts);
    for (;;) {
        int c = getopt_long(argc, argv, shortopts, o->longopts, NULL);
        switch (c) {
        case 'c':
            o->config = optarg;
            continue;
        case 'h':
            wr_cliopt_put_usage(o, stdout);
            o->status = WR_CLI_OK;
            return WR_CLIOPT_EXIT;
        case ':':
            return bad_option(o, argv, 1);
        case '?':
            return bad_option(o, argv, 0);
        default:
            return c;
        }
    }
}

int wr_cliopt_count(const char *str, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(str, &end, 10);
    if (errno != 0 || end == str || *end != '\0' || v < min || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}
