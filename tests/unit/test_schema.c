/*
 * schema.c: compile errors (exact text and JSON pointer), violations (where,
 * rule, what was found), the formatted header line and its cap, formats.
 * The JSON Schema Test Suite runs in test_schema_suite.c.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "schema.h"

static json_t *js(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j) {
        fprintf(stderr, "bad test JSON: %s: %s\n", text, e.text);
        exit(2);
    }
    return j;
}

static wr_schema *compile(const char *text, char *at, char *err)
{
    json_t *j = js(text);
    wr_schema *s = wr_schema_compile(j, at, 128, err, 256);
    json_decref(j);
    return s;
}

/* Compile error of TEXT as "AT: ERR". */
static const char *compile_error(const char *text)
{
    static char out[400];
    char at[128], err[256];
    wr_schema *s = compile(text, at, err);
    if (s) {
        wr_schema_free(s);
        return "(compiled)";
    }
    snprintf(out, sizeof out, "%s: %s", at, err);
    return out;
}

/* Violations of INSTANCE against SCHEMA, formatted (at most 4 shown). */
static const char *violations(const char *schema, const char *instance)
{
    static char out[1024];
    char at[128], err[256];
    wr_schema *s = compile(schema, at, err);
    if (!s) {
        snprintf(out, sizeof out, "compile: %s: %s", at, err);
        return out;
    }
    json_t *j = js(instance);
    wr_schema_violation v[4];
    size_t total = 0;
    int ok = wr_schema_validate(s, j, v, 4, &total);
    int fast = wr_schema_validate(s, j, NULL, 0, NULL);
    if (ok != fast) {
        snprintf(out, sizeof out, "fast and full disagree");
    } else if (ok) {
        snprintf(out, sizeof out, "valid");
    } else {
        wr_schema_format(v, total < 4 ? total : 4, total, out, sizeof out);
    }
    json_decref(j);
    wr_schema_free(s);
    return out;
}

static const char *ORDER =
    "{\"type\": \"object\", \"required\": [\"order_id\", \"items\", \"total\"],"
    " \"properties\": {\"order_id\": {\"type\": \"string\", \"minLength\": 1},"
    "  \"items\": {\"type\": \"array\", \"minItems\": 1, \"items\": {\"type\": \"object\","
    "   \"required\": [\"sku\", \"quantity\"], \"properties\": {"
    "    \"quantity\": {\"type\": \"integer\", \"minimum\": 1}}}},"
    "  \"total\": {\"type\": \"number\", \"exclusiveMinimum\": 0},"
    "  \"timestamp\": {\"type\": \"string\", \"format\": \"date-time\"}},"
    " \"additionalProperties\": false}";

static void test_compile_errors(void)
{
    CHECK_STR(compile_error("{\"properties\": {\"a\": {\"typo\": 1}}}"),
              "/properties/a/typo: unsupported keyword 'typo'");
    CHECK_STR(compile_error("{\"if\": true}"), "/if: unsupported keyword 'if'");
    CHECK_STR(compile_error("{\"type\": \"int\"}"), "/type: unknown type 'int'");
    CHECK_STR(compile_error("{\"type\": [\"string\", 3]}"), "/type: unknown type (not a string)");
    CHECK_STR(compile_error("{\"format\": \"hostname\"}"),
              "/format: unsupported format 'hostname' (date-time, date, email, uuid, uri are "
              "checked)");
    CHECK_STR(compile_error("{\"pattern\": \"a(\"}"),
              "/pattern: invalid regular expression at offset 2: missing closing parenthesis");
    CHECK_STR(compile_error("{\"minLength\": -1}"),
              "/minLength: minLength must be a non-negative integer");
    CHECK_STR(compile_error("{\"items\": {\"$ref\": \"#/$defs/nope\"}}"),
              "/items/$ref: $ref '#/$defs/nope' points to nothing in this document");
    CHECK_STR(compile_error("{\"$ref\": \"other.json#/a\"}"),
              "/$ref: only local references (#...) are supported, not 'other.json#/a'");
    CHECK_STR(compile_error("{\"$ref\": \"#/definitions/a\", \"minimum\": 1, "
                            "\"definitions\": {\"a\": true}}"),
              "/minimum: 'minimum' beside $ref would be ignored (draft 7): use allOf");
    CHECK_STR(compile_error("{\"$defs\": {\"a\": {\"a/b\": 1}}}"),
              "/$defs/a/a~1b: unsupported keyword 'a/b'");
    CHECK_STR(compile_error("{\"anyOf\": [{}, 3]}"),
              "/anyOf/1: a schema must be an object or a boolean");
    CHECK_STR(compile_error("{\"properties\": {\"x\": {\"$id\": \"#x\"}}}"),
              "/properties/x/$id: $id is supported only at the root (references are local)");
    CHECK_STR(compile_error("[1]"), ": a schema must be an object or a boolean");
    CHECK_STR(compile_error("{\"properties\": [1]}"),
              "/properties: properties must be an object of schemas");
    CHECK_STR(compile_error("{\"patternProperties\": 5}"),
              "/patternProperties: patternProperties must be an object of schemas");
    CHECK_STR(compile_error("{\"properties\": {\"a\": 2}}"),
              "/properties/a: a schema must be an object or a boolean");
    CHECK_STR(compile_error("{\"patternProperties\": {\"(\": {}}}"),
              "/patternProperties/(: invalid regular expression at offset 1: missing closing "
              "parenthesis");
    CHECK_STR(compile_error(ORDER), "(compiled)");
}

static void test_violations(void)
{
    CHECK_STR(violations(ORDER, "{\"order_id\": \"o1\", \"items\": [{\"sku\": \"a\", "
                                "\"quantity\": 2}], \"total\": 5, "
                                "\"timestamp\": \"2026-12-05T15:00:00Z\"}"),
              "valid");
    CHECK_STR(violations(ORDER, "{\"order_id\": \"\", \"items\": [{\"sku\": \"a\", "
                                "\"quantity\": 0}, {\"quantity\": 1.5}], \"total\": 0, "
                                "\"extra\": 1}"),
              "/order_id: minLength: length 0 < 1; /items/0/quantity: minimum: 0 < 1; "
              "/items/1: required: missing 'sku'; /items/1/quantity: type: number, not "
              "integer; (+2 more)");
    CHECK_STR(violations(ORDER, "{\"items\": []}"),
              "/: required: missing 'order_id'; /: required: missing 'total'; /items: "
              "minItems: 0 items < 1");
    CHECK_STR(violations(ORDER, "[]"), "/: type: array, not object");
    CHECK_STR(violations("{\"type\": [\"integer\", \"null\"]}", "1.0"), "valid");
    CHECK_STR(violations("{\"type\": [\"integer\", \"null\"]}", "\"1\""),
              "/: type: string, not null|integer");
    CHECK_STR(violations("{\"enum\": [1, \"a\", {\"b\": [1]}]}", "{\"b\": [1.0]}"), "valid");
    CHECK_STR(violations("{\"enum\": [1, \"a\"]}", "\"b\""),
              "/: enum: \"b\" is not one of the 2 values");
    CHECK_STR(violations("{\"const\": {\"a\": 1}}", "{\"a\": 2}"),
              "/: const: object is not the constant");
    CHECK_STR(violations("{\"uniqueItems\": true}", "[1, 2, 1.0]"),
              "/: uniqueItems: items 0 and 2 are equal");
    CHECK_STR(violations("{\"maxItems\": 1, \"maxLength\": 1}", "[1, 2]"),
              "/: maxItems: 2 items > 1");
    CHECK_STR(violations("{\"maxLength\": 2}", "\"\xc3\xa9\xc3\xa9\""), "valid");
    CHECK_STR(violations("{\"pattern\": \"^[a-z]+-\\\\d{2}$\"}", "\"ab-12\\n\""),
              "/: pattern: \"ab-12\n\" does not match /^[a-z]+-\\d{2}$/");
    CHECK_STR(violations("{\"pattern\": \"\\\\u0041\"}", "\"xAx\""), "valid");
    CHECK_STR(violations("{\"pattern\": \"^(a+)+$\"}",
                         "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!\""),
              "/: pattern: too complex to match /^(a+)+$/");
    CHECK_STR(violations("{\"oneOf\": [{\"type\": \"integer\"}, {\"minimum\": 2}]}", "3"),
              "/: oneOf: matches schemas 0 and 1, not exactly one");
    CHECK_STR(violations("{\"anyOf\": [{\"type\": \"integer\"}, {\"minimum\": 2}]}", "1.5"),
              "/: anyOf: matches none of the 2 schemas");
    CHECK_STR(violations("{\"not\": {\"type\": \"string\"}}", "\"x\""),
              "/: not: matches the schema it must not");
    CHECK_STR(violations("{\"properties\": {\"a\": false}}", "{\"a\": 1}"),
              "/a: false: no value is allowed here");
    CHECK_STR(violations("{\"properties\": {\"a~/b\": {\"type\": \"string\"}}}", "{\"a~/b\": 1}"),
              "/a~0~1b: type: integer, not string");
    CHECK_STR(violations("{\"$defs\": {\"pos\": {\"exclusiveMinimum\": 0}},"
                         " \"items\": {\"$ref\": \"#/$defs/pos\"}}",
                         "[1, 0]"),
              "/1: exclusiveMinimum: 0 <= 0");
    /* a tree: $ref to the root */
    CHECK_STR(violations("{\"type\": \"object\", \"properties\": {\"kids\": {\"type\": "
                         "\"array\", \"items\": {\"$ref\": \"#\"}}}}",
                         "{\"kids\": [{\"kids\": [{\"kids\": 3}]}]}"),
              "/kids/0/kids/0/kids: type: integer, not array");
    CHECK_STR(violations("{\"$ref\": \"#\"}", "1"), "/: $ref: schemas nested deeper than 256");
    CHECK_STR(violations("{\"items\": [{\"type\": \"string\"}], \"additionalItems\": false}",
                         "[\"a\", 2]"),
              "/1: additionalItems: not allowed");
    CHECK_STR(violations("{\"patternProperties\": {\"^x-\": {\"type\": \"string\"}},"
                         " \"additionalProperties\": false}",
                         "{\"x-a\": \"s\", \"y\": 1}"),
              "/y: additionalProperties: not allowed");
}

static void test_format_line(void)
{
    wr_schema_violation v[3];
    memset(v, 0, sizeof v);
    strcpy(v[0].where, "/a");
    strcpy(v[0].rule, "type");
    strcpy(v[0].found, "string, not integer");
    strcpy(v[1].where, "");
    strcpy(v[1].rule, "required");
    strcpy(v[1].found, "missing 'b'");
    char buf[200];
    wr_schema_format(v, 2, 2, buf, sizeof buf);
    CHECK_STR(buf, "/a: type: string, not integer; /: required: missing 'b'");
    wr_schema_format(v, 2, 7, buf, sizeof buf);
    CHECK_STR(buf, "/a: type: string, not integer; /: required: missing 'b'; (+5 more)");
    /* too small for the second: it is counted, not cut in half */
    size_t n = wr_schema_format(v, 2, 2, buf, 56);
    CHECK_STR(buf, "/a: type: string, not integer; (+1 more)");
    CHECK_INT(n, strlen(buf));
}

static void test_formats(void)
{
    CHECK_INT(wr_schema_check_format("date-time", "2026-02-28T23:59:60.5+01:00", 27), 1);
    CHECK_INT(wr_schema_check_format("date-time", "2026-02-29T10:00:00Z", 20), 0);
    CHECK_INT(wr_schema_check_format("date-time", "2024-02-29T10:00:00Z", 20), 1);
    CHECK_INT(wr_schema_check_format("date-time", "2024-02-29 10:00:00Z", 20), 0);
    CHECK_INT(wr_schema_check_format("date-time", "2024-02-29T10:00:00", 19), 0);
    CHECK_INT(wr_schema_check_format("date", "2026-13-01", 10), 0);
    CHECK_INT(wr_schema_check_format("date", "1900-02-29", 10), 0);
    CHECK_INT(wr_schema_check_format("date", "2000-02-29", 10), 1);
    CHECK_INT(wr_schema_check_format("email", "a.b+c@shop.example", 18), 1);
    CHECK_INT(wr_schema_check_format("email", "a..b@shop.example", 17), 0);
    CHECK_INT(wr_schema_check_format("email", "ab@-shop.example", 16), 0);
    CHECK_INT(wr_schema_check_format("email", "ab@", 3), 0);
    CHECK_INT(wr_schema_check_format("uuid", "0b9e3d4c-7a52-4f1e-9d2a-3c8b5e6f7a10", 36), 1);
    CHECK_INT(wr_schema_check_format("uuid", "0b9e3d4c-7a52-4f1e-9d2a3c8b5e6f7a10-", 36), 0);
    CHECK_INT(wr_schema_check_format("uuid", "0b9e3d4c-7a52-4f1e-9d2a-3c8b5e6f7a1g", 36), 0);
    CHECK_INT(wr_schema_check_format("uri", "https://u:p@[::1]:8080/a/b?q=1#f", 32), 1);
    CHECK_INT(wr_schema_check_format("uri", "urn:isbn:0451450523", 19), 1);
    CHECK_INT(wr_schema_check_format("uri", "/relative", 9), 0);
    CHECK_INT(wr_schema_check_format("uri", "http://a b", 10), 0);
    CHECK_INT(wr_schema_check_format("uri", "http://a/%zz", 12), 0);
    CHECK_INT(wr_schema_check_format("uri", "http://a:80x/", 13), 0);
    CHECK_INT(wr_schema_check_format("hostname", "a", 1), -1);
}

int main(void)
{
    test_compile_errors();
    test_violations();
    test_format_line();
    test_formats();
    return check_report("test_schema");
}
