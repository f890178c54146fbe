/*
 * schema_diff: the validator's side of tests/unit/test_schema_diff.py. Reads
 * one JSON object per line, {"schema": S, "data": D}, and prints one line per
 * input: "1" (D validates against S), "0" (it does not), or "E <why>" (S does
 * not compile). Not a test by itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        json_error_t jerr;
        json_t *in = json_loadb(line, (size_t)n, JSON_DECODE_ANY, &jerr);
        char at[256], err[256];
        if (!in) {
            printf("E input: %s\n", jerr.text);
            continue;
        }
        wr_schema *s =
            wr_schema_compile(json_object_get(in, "schema"), at, sizeof at, err, sizeof err);
        if (!s) {
            printf("E %s: %s\n", at, err);
        } else {
            printf("%d\n", wr_schema_validate(s, json_object_get(in, "data"), NULL, 0, NULL));
            wr_schema_free(s);
        }
        json_decref(in);
        fflush(stdout);
    }
    free(line);
    return 0;
}
