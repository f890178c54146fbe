/*
 * The JSON Schema Test Suite (Debian package json-schema-test-suite, draft 7)
 * against schema.c: every case of every file whose keywords schema.h
 * supports. A group whose schema does not compile must be in the SKIPS table
 * below with the reason (and its compile error must be the one listed), so
 * a keyword that stops compiling cannot hide as a skip; a listed skip that
 * compiles again fails too. Each case is validated twice, stopping at the
 * first violation and collecting them all, and both must agree with the
 * suite. Prints the pass count (docs/contracts.md quotes it).
 *
 * The suite's directory is WR_SCHEMA_SUITE, else
 * /usr/share/json-schema-test-suite/tests/draft7; missing, the test fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "schema.h"

static const char *const FILES[] = {
    "type.json",
    "required.json",
    "properties.json",
    "patternProperties.json",
    "additionalProperties.json",
    "items.json",
    "additionalItems.json",
    "enum.json",
    "const.json",
    "minimum.json",
    "maximum.json",
    "exclusiveMinimum.json",
    "exclusiveMaximum.json",
    "minLength.json",
    "maxLength.json",
    "pattern.json",
    "minItems.json",
    "maxItems.json",
    "uniqueItems.json",
    "allOf.json",
    "anyOf.json",
    "oneOf.json",
    "not.json",
    "ref.json",
    "definitions.json",
    "boolean_schema.json",
    "default.json",
    "optional/format/date-time.json",
    "optional/format/date.json",
    "optional/format/email.json",
    "optional/format/uri.json",
};

/* Groups skipped knowingly: file, group description, the compile error
 * expected, and why. */
static const struct {
    const char *file;
    const char *group;
    const char *error;
    const char *why;
} SKIPS[] = {
    {"ref.json", "escaped pointer ref", "unsupported keyword 'tilda~field'",
     "the schema keeps subschemas under members that are not keywords; warren refuses "
     "unknown members rather than ignore them"},
    {"ref.json", "ref overrides any sibling keywords",
     "'maxItems' beside $ref would be ignored (draft 7): use allOf",
     "draft 7 ignores keywords beside $ref; warren refuses them"},
    {"ref.json", "remote ref, containing refs itself",
     "only local references (#...) are supported, not "
     "'http://json-schema.org/draft-07/schema#'",
     "remote references: contracts are self-contained"},
    {"ref.json", "Recursive references between schemas",
     "only local references (#...) are supported, not 'node'",
     "relative references resolved against $id"},
    {"definitions.json", "valid definition",
     "only local references (#...) are supported, not "
     "'http://json-schema.org/draft-07/schema#'",
     "validates against the remote draft 7 meta-schema"},
    {"definitions.json", "invalid definition",
     "only local references (#...) are supported, not "
     "'http://json-schema.org/draft-07/schema#'",
     "validates against the remote draft 7 meta-schema"},
};
#define NSKIPS (sizeof SKIPS / sizeof SKIPS[0])

static int skip_used[NSKIPS];
static int passed, failed, skipped;

static int find_skip(const char *file, const char *group)
{
    for (size_t i = 0; i < NSKIPS; i++) {
        if (strcmp(SKIPS[i].file, file) == 0 && strcmp(SKIPS[i].group, group) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static void run_file(const char *dir, const char *file)
{
    char path[1024];
    json_error_t jerr;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    json_t *groups = json_load_file(path, 0, &jerr);
    if (!groups) {
        fprintf(stderr, "%s: cannot read: %s\n", path, jerr.text);
        CHECK(groups != NULL);
        return;
    }
    int fpass = 0, fskip = 0, ftotal = 0;
    size_t gi;
    json_t *g;
    json_array_foreach(groups, gi, g)
    {
        const char *desc = json_string_value(json_object_get(g, "description"));
        json_t *tests = json_object_get(g, "tests");
        char at[256], err[256];
        wr_schema *s =
            wr_schema_compile(json_object_get(g, "schema"), at, sizeof at, err, sizeof err);
        int sk = find_skip(file, desc);
        ftotal += (int)json_array_size(tests);
        if (!s) {
            if (sk < 0 || strcmp(SKIPS[sk].error, err) != 0) {
                fprintf(stderr, "%s: \"%s\": does not compile: at '%s': %s\n", file, desc, at, err);
                failed += (int)json_array_size(tests);
                check_failures++;
            } else {
                skip_used[sk] = 1;
                skipped += (int)json_array_size(tests);
                fskip += (int)json_array_size(tests);
            }
            continue;
        }
        if (sk >= 0) {
            fprintf(stderr, "%s: \"%s\": listed as skipped but compiles\n", file, desc);
            check_failures++;
        }
        size_t ti;
        json_t *t;
        json_array_foreach(tests, ti, t)
        {
            int want = json_is_true(json_object_get(t, "valid"));
            const json_t *data = json_object_get(t, "data");
            wr_schema_violation vs[8];
            size_t total = 0;
            int fast = wr_schema_validate(s, data, NULL, 0, NULL);
            int full = wr_schema_validate(s, data, vs, 8, &total);
            check_count++;
            if (fast == want && full == want && (total == 0) == want) {
                passed++;
                fpass++;
            } else {
                char line[600];
                wr_schema_format(vs, total < 8 ? total : 8, total, line, sizeof line);
                fprintf(stderr, "%s: \"%s\" / \"%s\": want %s, got %d/%d (%s)\n", file, desc,
                        json_string_value(json_object_get(t, "description")),
                        want ? "valid" : "invalid", fast, full, line);
                failed++;
                check_failures++;
            }
        }
        wr_schema_free(s);
    }
    printf("  %-36s %3d/%3d pass, %d skipped\n", file, fpass, ftotal, fskip);
    json_decref(groups);
}

int main(void)
{
    const char *dir = getenv("WR_SCHEMA_SUITE");
    if (!dir || !*dir) {
        dir = "/usr/share/json-schema-test-suite/tests/draft7";
    }
    printf("JSON Schema Test Suite, draft 7, from %s\n", dir);
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
        run_file(dir, FILES[i]);
    }
    for (size_t i = 0; i < NSKIPS; i++) {
        if (!skip_used[i]) {
            fprintf(stderr, "skip \"%s\" in %s is listed but was not needed\n", SKIPS[i].group,
                    SKIPS[i].file);
            check_failures++;
        } else {
            printf("  skipped: %s \"%s\": %s\n", SKIPS[i].file, SKIPS[i].group, SKIPS[i].why);
        }
    }
    printf("schema suite (draft 7): %d of %d cases pass, %d failed, %d skipped\n", passed,
           passed + failed + skipped, failed, skipped);
    return check_report("test_schema_suite");
}
