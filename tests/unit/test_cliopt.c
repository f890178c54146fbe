/*
 * test_cliopt.c: unit tests for cliopt, the option parsing every `warren`
 * command shares: -c/--config, --help, permuted positional arguments, and
 * the exact text of usage errors.
 */
#include "cliopt.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

enum { OPT_JSON = 256, OPT_DEPTH };

static const struct option longopts[] = {WR_CLIOPT_CONFIG,
                                         WR_CLIOPT_HELP,
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {"depth", required_argument, NULL, OPT_DEPTH},
                                         {0}};

/* What one parse of ARGS (a NULL-terminated list after "trace") gave. */
typedef struct {
    int opts[8]; /* the options returned, then the last result (END or EXIT) */
    int n;
    int status;
    const char *config;
    char positional[64]; /* the positional arguments left, space-separated */
    char out[2048];      /* what it printed on stdout */
    char err[2048];      /* on stderr */
} parsed;

/* Read what FD (redirected to F) got into BUF, and put FD back to SAVED. */
static void restore(int fd, int saved, FILE *f, char *buf, size_t cap)
{
    fflush(fd == 1 ? stdout : stderr);
    dup2(saved, fd);
    close(saved);
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static parsed parse(const char *const *args)
{
    static char *argv[16];
    static parsed p;
    int argc = 0;
    memset(&p, 0, sizeof(p));
    argv[argc++] = "trace";
    while (*args != NULL && argc < 15) {
        argv[argc++] = (char *)*args++;
    }
    argv[argc] = NULL;
    wr_cliopt o = {
        .name = "trace", .usage = "  trace ID\n", .shortopts = "c:h", .longopts = longopts};
    FILE *fo = tmpfile(), *fe = tmpfile();
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    dup2(fileno(fo), 1);
    dup2(fileno(fe), 2);
    int c;
    do {
        c = wr_cliopt_next(&o, argc, argv);
        p.opts[p.n++] = c;
    } while (c >= 0 && p.n < 8);
    restore(1, so, fo, p.out, sizeof(p.out));
    restore(2, se, fe, p.err, sizeof(p.err));
    p.status = o.status;
    p.config = o.config;
    for (int i = optind; c == WR_CLIOPT_END && i < argc; i++) {
        strcat(p.positional, i > optind ? " " : "");
        strcat(p.positional, argv[i]);
    }
    return p;
}

/* The first line of S. */
static const char *first_line(const char *s)
{
    static char line[256];
    size_t n = strcspn(s, "\n");
    snprintf(line, sizeof(line), "%.*s", (int)n, s);
    return line;
}

static void test_options_and_positional(void)
{
    parsed p = parse((const char *[]){"-c", "f.yaml", "ID", "--json", NULL});
    CHECK_INT(p.n, 2);
    CHECK_INT(p.opts[0], OPT_JSON);
    CHECK_INT(p.opts[1], WR_CLIOPT_END);
    CHECK_STR(p.config, "f.yaml");
    CHECK_STR(p.positional, "ID");
    CHECK_STR(p.err, "");

    /* positional arguments first, options after; --name=value */
    p = parse((const char *[]){"ID", "--depth=3", "--config=g.yaml", "more", NULL});
    CHECK_INT(p.opts[0], OPT_DEPTH);
    CHECK_INT(p.opts[1], WR_CLIOPT_END);
    CHECK_STR(p.config, "g.yaml");
    CHECK_STR(p.positional, "ID more");

    /* "--" ends the options */
    p = parse((const char *[]){"--", "--json", NULL});
    CHECK_INT(p.opts[0], WR_CLIOPT_END);
    CHECK_STR(p.positional, "--json");
}

static void test_help(void)
{
    const char *want = "usage: warren trace [options]\n"
                       "  trace ID\n"
                       "\n"
                       "  -c, --config FILE    the YAML configuration (see config/warren.yaml)\n"
                       "  -h, --help           show this help\n"
                       "\n"
                       "exit status: 0 ok, 1 failure, 2 usage error\n";
    for (int i = 0; i < 2; i++) {
        parsed p = parse((const char *[]){"ID", i ? "-h" : "--help", "--bogus", NULL});
        CHECK_INT(p.opts[0], WR_CLIOPT_EXIT);
        CHECK_INT(p.status, WR_CLI_OK);
        CHECK_STR(p.out, want);
        CHECK_STR(p.err, "");
    }
}

static void test_usage_errors(void)
{
    static const struct {
        const char *args[4];
        const char *line;
    } cases[] = {
        {{"--bogus", NULL}, "warren trace: unknown option '--bogus'"},
        {{"ID", "--bogus=3", NULL}, "warren trace: unknown option '--bogus'"},
        {{"-x", NULL}, "warren trace: unknown option '-x'"},
        {{"--json=1", NULL}, "warren trace: unknown option '--json'"},
        {{"ID", "--depth", NULL}, "warren trace: option '--depth' needs a value"},
        {{"-c", NULL}, "warren trace: option '-c' needs a value"},
        {{"--config", NULL}, "warren trace: option '--config' needs a value"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        parsed p = parse(cases[i].args);
        CHECK_INT(p.opts[p.n - 1], WR_CLIOPT_EXIT);
        CHECK_INT(p.status, WR_CLI_USAGE);
        CHECK_STR(first_line(p.err), cases[i].line);
        CHECK(strstr(p.err, "\n\nusage: warren trace [options]\n  trace ID\n") != NULL);
        CHECK_STR(p.out, "");
    }
    /* a parse after a failed one starts afresh */
    parsed p = parse((const char *[]){"-c", "f.yaml", "ID", NULL});
    CHECK_INT(p.opts[0], WR_CLIOPT_END);
    CHECK_STR(p.positional, "ID");
}

static void test_count(void)
{
    long v = -7;
    CHECK_INT(wr_cliopt_count("12", 0, 100, &v), 0);
    CHECK_INT(v, 12);
    CHECK_INT(wr_cliopt_count("1x", 0, 100, &v), -1);
    CHECK_INT(wr_cliopt_count("", 0, 100, &v), -1);
    CHECK_INT(wr_cliopt_count("-1", 0, 100, &v), -1);
    CHECK_INT(wr_cliopt_count("101", 0, 100, &v), -1);
    CHECK_INT(wr_cliopt_count("99999999999999999999", 0, 100, &v), -1);
    CHECK_INT(v, 12);
}

int main(void)
{
    test_options_and_positional();
    test_help();
    test_usage_errors();
    test_count();
    return check_report("test_cliopt");
}
