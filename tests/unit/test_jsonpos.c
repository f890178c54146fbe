/*
 * test_jsonpos.c: unit tests for jsonpos, the positions of a JSON text's
 * members and elements.
 *
 * Covered: keys and values of nested objects, elements of arrays (nested,
 * empty, of scalars, of true/false/null, which jansson shares between
 * trees), columns counted in characters for UTF-8 text (as jansson counts
 * them), escaped keys (looked up by their decoded text), CRLF line ends, a
 * text that does not match its tree (refused, not misread), and lookups of
 * what is not there. Expected positions are found by searching the text, so
 * the test states which token each position must point at.
 */
#include "jsonpos.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

/* LINE:COL of the first NEEDLE in TEXT, counting characters like jansson. */
static wr_textpos find(const char *text, const char *needle)
{
    const char *at = strstr(text, needle);
    wr_textpos p = {1, 1};
    if (at == NULL) {
        fprintf(stderr, "needle %s not in the text\n", needle);
        exit(2);
    }
    for (const char *c = text; c < at; c++) {
        if (*c == '\n') {
            p.line++;
            p.col = 1;
        } else if (((unsigned char)*c & 0xC0) != 0x80) {
            p.col++;
        }
    }
    return p;
}

#define CHECK_POS(got, want)                                                                       \
    do {                                                                                           \
        wr_textpos g_ = (got), w_ = (want);                                                        \
        check_count++;                                                                             \
        if (g_.line != w_.line || g_.col != w_.col) {                                              \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: %s: got %d:%d, want %d:%d\n", __FILE__, __LINE__, #got,        \
                    g_.line, g_.col, w_.line, w_.col);                                             \
        }                                                                                          \
    } while (0)

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        fprintf(stderr, "bad test JSON: %s\n", e.text);
        exit(2);
    }
    return j;
}

static void test_nested(void)
{
    const char *text = "  {\n"
                       "  \"id\": \"e-1\",\n"
                       "  \"data\": {\"n\": [1, {\"deep\": true}, null],\n"
                       "           \"empty\": {}, \"none\": []},\n"
                       "  \"flags\": [true, false, true]\n"
                       "}\n";
    json_t *root = parse(text);
    wr_jsonpos *p = wr_jsonpos_index(text, strlen(text), root);
    CHECK(p != NULL);
    if (p == NULL) {
        json_decref(root);
        return;
    }
    CHECK_POS(wr_jsonpos_root(p), find(text, "{"));
    CHECK_POS(wr_jsonpos_member(p, root, "id", 0), find(text, "\"id\""));
    CHECK_POS(wr_jsonpos_member(p, root, "id", 1), find(text, "\"e-1\""));
    json_t *data = json_object_get(root, "data");
    CHECK_POS(wr_jsonpos_member(p, root, "data", 1), find(text, "{\"n\""));
    CHECK_POS(wr_jsonpos_member(p, data, "n", 0), find(text, "\"n\""));
    json_t *n = json_object_get(data, "n");
    CHECK_POS(wr_jsonpos_element(p, n, 0), find(text, "1,"));
    CHECK_POS(wr_jsonpos_element(p, n, 1), find(text, "{\"deep\""));
    CHECK_POS(wr_jsonpos_element(p, n, 2), find(text, "null"));
    CHECK_POS(wr_jsonpos_member(p, json_array_get(n, 1), "deep", 1), find(text, "true}"));
    CHECK_POS(wr_jsonpos_member(p, data, "empty", 1), find(text, "{}"));
    CHECK_POS(wr_jsonpos_member(p, data, "none", 1), find(text, "[]"));
    /* true/false are shared values: the array and index tell them apart */
    json_t *flags = json_object_get(root, "flags");
    CHECK_POS(wr_jsonpos_element(p, flags, 2), find(text, "true]"));
    CHECK_POS(wr_jsonpos_element(p, flags, 1), find(text, "false"));
    /* what is not there */
    CHECK_POS(wr_jsonpos_member(p, root, "nope", 0), ((wr_textpos){0, 0}));
    CHECK_POS(wr_jsonpos_element(p, flags, 3), ((wr_textpos){0, 0}));
    CHECK_POS(wr_jsonpos_member(p, flags, "id", 0), ((wr_textpos){0, 0}));
    wr_jsonpos_free(p);
    json_decref(root);
}

static void test_utf8_escapes_crlf(void)
{
    /* "é" is two bytes, one column; "\u00e9" in a key is decoded before lookup */
    const char *text = "{\"caf\\u00e9\": \"h\xc3\xa9h\xc3\xa9\", \"x\": 1,\r\n"
                       " \"\xc3\xa9t\xc3\xa9\": [\"\\\"q\\\"\", 2]}";
    json_t *root = parse(text);
    wr_jsonpos *p = wr_jsonpos_index(text, strlen(text), root);
    CHECK(p != NULL);
    if (p == NULL) {
        json_decref(root);
        return;
    }
    CHECK_POS(wr_jsonpos_member(p, root, "caf\xc3\xa9", 0), ((wr_textpos){1, 2}));
    CHECK_POS(wr_jsonpos_member(p, root, "x", 1), find(text, "1,"));
    CHECK_POS(wr_jsonpos_member(p, root, "x", 1), ((wr_textpos){1, 28})); /* é is 1 column */
    json_t *arr = json_object_get(root, "\xc3\xa9t\xc3\xa9");
    CHECK_POS(wr_jsonpos_member(p, root, "\xc3\xa9t\xc3\xa9", 1), ((wr_textpos){2, 9}));
    CHECK_POS(wr_jsonpos_element(p, arr, 1), ((wr_textpos){2, 19}));
    wr_jsonpos_free(p);
    json_decref(root);
}

static void test_mismatch(void)
{
    json_t *root = parse("{\"a\": 1}");
    const char *other = "{\"b\": 1}";
    CHECK(wr_jsonpos_index(other, strlen(other), root) == NULL);
    const char *arr = "[1]";
    CHECK(wr_jsonpos_index(arr, strlen(arr), root) == NULL);
    const char *cut = "{\"a\": ";
    CHECK(wr_jsonpos_index(cut, strlen(cut), root) == NULL);
    json_decref(root);
    /* a scalar root */
    json_t *s = json_loads("  42", JSON_DECODE_ANY, NULL);
    wr_jsonpos *p = wr_jsonpos_index("  42", 4, s);
    CHECK(p != NULL);
    if (p != NULL) {
        CHECK_POS(wr_jsonpos_root(p), ((wr_textpos){1, 3}));
    }
    wr_jsonpos_free(p);
    json_decref(s);
}

int main(void)
{
    test_nested();
    test_utf8_escapes_crlf();
    test_mismatch();
    return check_report("test_jsonpos");
}
