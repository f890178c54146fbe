/*
 * schema: a JSON Schema validator (draft 7) for event contracts.
 *
 * wr_schema_compile() turns a schema (a jansson tree, however it was read:
 * JSON text, or YAML through contracts.c) into a compiled form once, at load
 * and on reload; wr_schema_validate() then checks any number of instances
 * against it without touching the schema's JSON again.
 *
 * Dialect: draft 7 (the JSON Schema Test Suite that Debian packages has
 * draft 7, not 2020-12, and tests/unit/test_schema_suite.c runs it). The
 * keywords understood are
 *
 *   type (names and unions; "integer" accepts 1.0 as draft 7 says), required,
 *   properties, patternProperties, additionalProperties (bool or schema),
 *   items (one schema, or a tuple with additionalItems), enum, const,
 *   minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers, draft 7
 *   form), minLength, maxLength (in code points), pattern, minItems,
 *   maxItems, uniqueItems, format (date-time, date, email, uuid, uri),
 *   allOf, anyOf, oneOf, not, $ref to this document ("#", "#/definitions/x",
 *   "#/$defs/x", any JSON pointer), definitions and $defs, and boolean schemas.
 *
 * Annotations (title, description, default, examples, $comment, $schema,
 * readOnly, writeOnly, and $id at the root) are accepted and ignored.
 * Anything else is refused at compile time, never silently ignored: an
 * unknown or unsupported keyword, a format we do not check, a $ref to
 * another document, and keywords beside a $ref (draft 7 ignores them, which
 * would surprise a contract's author). The error names the JSON pointer of
 * the offending member, so the caller can map it to FILE:LINE:COL.
 *
 * Regular expressions (pattern, patternProperties) are PCRE2 with UTF-8,
 * $ matching only at the very end (as in ECMA-262) and \uXXXX escapes; they
 * search (unanchored) as ECMA-262 does. Where PCRE2 differs from ECMA-262:
 * \d, \w, \s are ASCII only in both, but PCRE2 also knows possessive
 * quantifiers, atomic groups, \A \Z and (?i) inline flags, and refuses
 * lookbehinds of variable length; each match is bounded (a backtracking
 * pattern becomes a violation "pattern: too complex", not a stuck worker).
 *
 * Pure: no I/O, unit-tested in tests/unit/test_schema.c and against the
 * JSON Schema Test Suite in tests/unit/test_schema_suite.c.
 */
#ifndef WR_SCHEMA_H
#define WR_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

typedef struct wr_schema wr_schema;

/* One reason an instance does not validate. */
typedef struct {
    char where[160]; /* JSON pointer of the instance value, "" for the root */
    char rule[24];   /* the keyword that failed: "required", "type", ... */
    char found[160]; /* what was found, in words: "missing", "0 < 1", ... */
} wr_schema_violation;

/*
 * Compile schema ROOT (borrowed: nothing of it is kept after the call).
 * Returns the compiled schema (free with wr_schema_free), or NULL with the
 * JSON pointer of the offending member in ERR_AT ("" for the root) and the
 * reason in ERR, e.g. at "/properties/a/foo": "unsupported keyword 'foo'".
 */
wr_schema *wr_schema_compile(const json_t *root, char *err_at, size_t at_cap, char *err,
                             size_t err_cap);
void wr_schema_free(wr_schema *s);

/*
 * Validate INSTANCE against S. Returns 1 when it is valid, 0 when not. When
 * OUT is not NULL, up to CAP violations are written there (in document order
 * of the schema's checks) and *TOTAL (if not NULL) gets how many there were
 * in all, which may exceed CAP. With OUT NULL validation stops at the first.
 */
int wr_schema_validate(const wr_schema *s, const json_t *instance, wr_schema_violation *out,
                       size_t cap, size_t *total);

/*
 * Format N violations (of TOTAL found) as one line for a header or a log:
 * "/items/0/quantity: minimum: 0 < 1; /: required: missing 'total'", with
 * "; (+K more)" when TOTAL > N, cut (at a violation's end) to fit CAP bytes.
 * Returns the length written (BUF always NUL-terminated when CAP > 0).
 */
size_t wr_schema_format(const wr_schema_violation *v, size_t n, size_t total, char *buf,
                        size_t cap);

/* 1 when string S (LEN bytes) is valid for format NAME ("date-time", "date",
 * "email", "uuid", "uri"); 0 when not; -1 for a format this module does not know. */
int wr_schema_check_format(const char *name, const char *s, size_t len);

/* 1 when A and B are equal JSON values as JSON Schema compares them (1 equals
 * 1.0, objects regardless of member order), 0 otherwise. */
int wr_schema_json_equal(const json_t *a, const json_t *b);

#endif
