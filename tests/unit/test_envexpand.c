/*
 * test_envexpand: ${VAR}, ${VAR:-default} and $$ in configuration values
 * (envexpand.c): what expands to what, nested defaults and their depth
 * limit, the length limit, and the exact messages for each refusal, none of
 * which may echo the value being expanded.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "envexpand.h"

/* Expand TEXT: the result, or "ERR:" and the message (a static buffer). */
static const char *expand(const char *text)
{
    static char last[256];
    char *out = NULL;
    char *err = wr_env_expand(text, &out);
    if (err != NULL) {
        CHECK(out == NULL);
        snprintf(last, sizeof(last), "ERR:%s", err);
        free(err);
    } else {
        snprintf(last, sizeof(last), "%s", out);
        free(out);
    }
    return last;
}

static void test_expansion(void)
{
    setenv("WR_T_HOST", "rabbit", 1);
    setenv("WR_T_EMPTY", "", 1);
    unsetenv("WR_T_UNSET");
    CHECK_STR(expand("plain"), "plain");
    CHECK_STR(expand(""), "");
    CHECK_STR(expand("amqp://${WR_T_HOST}:5672/"), "amqp://rabbit:5672/");
    CHECK_STR(expand("$$"), "$");
    CHECK_STR(expand("a$$b$$$$"), "a$b$$");
    CHECK_STR(expand("$${WR_T_HOST}"), "${WR_T_HOST}");
    CHECK_STR(expand("cost: 5$ or $x"), "cost: 5$ or $x"); /* other '$' stay */
    CHECK_STR(expand("${WR_T_UNSET:-guest}"), "guest");
    CHECK_STR(expand("${WR_T_EMPTY:-guest}"), "guest"); /* empty counts as unset */
    CHECK_STR(expand("${WR_T_EMPTY}"), "");
    CHECK_STR(expand("${WR_T_HOST:-guest}"), "rabbit");
    CHECK_STR(expand("${WR_T_UNSET:-}"), "");
    CHECK_STR(expand("${WR_T_UNSET:-${WR_T_HOST}}"), "rabbit");
    CHECK_STR(expand("${WR_T_UNSET:-a${WR_T_UNSET:-b}c}"), "abc");
    CHECK_STR(expand("${WR_T_UNSET:-{x}}"), "{x}"); /* the first '}' closes; the rest is text */
}

static void test_refusals(void)
{
    unsetenv("WR_T_UNSET");
    CHECK_STR(expand("${WR_T_UNSET}"), "ERR:environment variable 'WR_T_UNSET' is not set "
                                       "(write ${WR_T_UNSET:-default} to give a default)");
    CHECK_STR(expand("x${WR_T_HOST"), "ERR:unterminated '${' (write $$ for a literal '$')");
    CHECK_STR(expand("${}"), "ERR:empty environment variable name in '${}'");
    CHECK_STR(expand("${:-x}"), "ERR:empty environment variable name in '${}'");
    CHECK_STR(expand("${1ABC}"),
              "ERR:invalid environment variable name '1ABC' (letters, digits and '_')");
    CHECK_STR(expand("${A\nB}"),
              "ERR:invalid environment variable name 'A?B' (letters, digits and '_')");
    char name[WR_ENV_MAX_NAME + 8];
    memset(name, 'A', sizeof(name));
    snprintf(
        name, sizeof(name), "${%.*s}", WR_ENV_MAX_NAME + 1,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    CHECK_STR(expand(name), "ERR:environment variable name longer than 128 bytes");
}

static void test_limits(void)
{
    /* WR_ENV_MAX_DEPTH levels of ${A:-...} expand; one more is refused. */
    char deep[512] = "", tail[64] = "";
    for (int i = 0; i < WR_ENV_MAX_DEPTH; i++) {
        strcat(deep, "${WR_T_UNSET:-");
        strcat(tail, "}");
    }
    unsetenv("WR_T_UNSET");
    char text[600];
    snprintf(text, sizeof(text), "%sok%s", deep, tail);
    CHECK_STR(expand(text), "ok");
    snprintf(text, sizeof(text), "${WR_T_UNSET:-%sok%s}", deep, tail);
    CHECK_STR(expand(text), "ERR:${} defaults nested more than 8 deep");

    /* A value may be WR_ENV_MAX_VALUE bytes after expansion, not one more. */
    char *big = malloc(WR_ENV_MAX_VALUE + 2);
    memset(big, 'x', WR_ENV_MAX_VALUE + 1);
    big[WR_ENV_MAX_VALUE] = '\0';
    setenv("WR_T_BIG", big, 1);
    char *out = NULL;
    char *err = wr_env_expand("${WR_T_BIG}", &out);
    CHECK(err == NULL);
    CHECK_INT(out != NULL ? strlen(out) : 0, WR_ENV_MAX_VALUE);
    free(out);
    free(err);
    err = wr_env_expand("${WR_T_BIG}y", &out);
    CHECK_STR(err, "the value is longer than 64 KiB");
    CHECK(out == NULL);
    free(err);
    unsetenv("WR_T_BIG");
    free(big);
}

int main(void)
{
    test_expansion();
    test_refusals();
    test_limits();
    return check_report("test_envexpand");
}
