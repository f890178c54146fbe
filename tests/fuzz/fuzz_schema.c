/*
 * fuzz_schema: what a contracts file may say as a schema, and what producers
 * may send as an instance, through the JSON Schema compiler and validator.
 *
 * Input: a 2-byte length and that many bytes of JSON (the schema), then the
 * rest (the instance, JSON). Both are parsed with jansson; what does not
 * parse is dropped. The schema is compiled; a compile error must say where
 * (a JSON pointer, "" for the root) and why. A compiled schema validates the
 * instance twice, with and without the list of violations: both give the
 * same answer, a valid instance has no violation, an invalid one at least
 * one, every violation's strings are NUL-terminated, and their formatted
 * line fits the buffer it is given. A schema also validates itself (any
 * JSON value is an instance) and a deep copy of the instance gives the same
 * answer.
 */
#include <jansson.h>

#include "schema.h"

#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static void check_violations(const wr_schema_violation *v, size_t n, size_t total)
{
    for (size_t i = 0; i < n; i++) {
        FZ_ASSERT(memchr(v[i].where, '\0', sizeof(v[i].where)) != NULL);
        FZ_ASSERT(memchr(v[i].rule, '\0', sizeof(v[i].rule)) != NULL);
        FZ_ASSERT(memchr(v[i].found, '\0', sizeof(v[i].found)) != NULL);
        FZ_ASSERT(v[i].rule[0] != '\0');
    }
    char line[300];
    size_t len = wr_schema_format(v, n, total, line, sizeof(line));
    FZ_ASSERT(len < sizeof(line) && strlen(line) == len);
}

/* Validate INST against S both ways; returns the answer. */
static int validate(const wr_schema *s, const json_t *inst)
{
    wr_schema_violation v[8];
    size_t total = 0;
    int ok = wr_schema_validate(s, inst, v, 8, &total);
    FZ_ASSERT(ok == 0 || ok == 1);
    FZ_ASSERT(ok == wr_schema_validate(s, inst, NULL, 0, NULL));
    FZ_ASSERT(ok ? total == 0 : total >= 1);
    check_violations(v, total < 8 ? total : 8, total);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    const uint8_t *sp, *ip;
    size_t sn = fz_take(&in, fz_u16(&in), &sp);
    size_t inn = fz_take(&in, in.n, &ip);
    json_t *schema = json_loadb((const char *)sp, sn, JSON_DECODE_ANY, NULL);
    json_t *inst = json_loadb((const char *)ip, inn, JSON_DECODE_ANY, NULL);
    if (schema == NULL) {
        json_decref(inst);
        return 0;
    }
    char at[200], err[300];
    at[0] = err[0] = '\0';
    wr_schema *s = wr_schema_compile(schema, at, sizeof(at), err, sizeof(err));
    if (s == NULL) {
        FZ_ASSERT(memchr(at, '\0', sizeof(at)) != NULL);
        FZ_ASSERT(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
        FZ_ASSERT(at[0] == '\0' || at[0] == '/');
    } else {
        validate(s, schema);
        if (inst != NULL) {
            json_t *copy = json_deep_copy(inst);
            FZ_ASSERT(validate(s, inst) == validate(s, copy));
            json_decref(copy);
        }
        wr_schema_free(s);
    }
    json_decref(schema);
    json_decref(inst);
    return 0;
}
