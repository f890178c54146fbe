/*
 * contracts.c: loading errors at FILE:LINE:COL (YAML structure, schema
 * keywords, upcaster files), versions from header, field or default, and the
 * check of events (valid, schema-invalid with violations, version-unknown,
 * unknown types passed or dead-lettered, older versions to upcast), the
 * examples check and the counters.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "contracts.h"
#include "lua_rt.h"

static char dir[256];

static const char *ORDERS = "events:\n"
                            "  order.created:\n"
                            "    version: 2\n"
                            "    schema:\n"
                            "      type: object\n"
                            "      required: [order_id, items]\n"
                            "      properties:\n"
                            "        order_id: { type: string }\n"
                            "        items:\n"
                            "          type: array\n"
                            "          items:\n"
                            "            type: object\n"
                            "            required: [sku, quantity]\n"
                            "            properties:\n"
                            "              quantity: { type: integer, minimum: 1 }\n"
                            "    examples:\n"
                            "      - { order_id: o1, items: [ { sku: a, quantity: 1 } ] }\n"
                            "      - { order_id: o2, items: [ { sku: a, quantity: 0 } ] }\n"
                            "    backwards_compatible_with:\n"
                            "      - version: 1\n"
                            "        upcaster: up.lua\n"
                            "  order.cancelled:\n"
                            "    version: 1\n"
                            "    schema: { type: object, required: [order_id] }\n";

static wr_contracts *parse(const char *text, char *err, size_t cap)
{
    char path[300];
    snprintf(path, sizeof path, "%s/contracts.yaml", dir);
    return wr_contracts_parse(path, text, strlen(text), err, cap);
}

/* The load errors of TEXT, with the directory replaced by "D". */
static const char *load_errors(const char *text)
{
    static char out[2048];
    char err[2048];
    wr_contracts *c = parse(text, err, sizeof err);
    if (c) {
        wr_contracts_free(c);
        return "(loaded)";
    }
    size_t dl = strlen(dir), n = 0;
    for (const char *p = err; *p && n + 2 < sizeof out;) {
        if (strncmp(p, dir, dl) == 0) {
            out[n++] = 'D';
            p += dl;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = 0;
    return out;
}

static void test_load_errors(void)
{
    CHECK_STR(load_errors(ORDERS), "(loaded)");
    CHECK_STR(load_errors("events:\n  a:\n    version: 1\n    schema:\n      type: object\n"
                          "      propertys: {}\n"),
              "D/contracts.yaml:6:7: schema: unsupported keyword 'propertys'");
    CHECK_STR(load_errors("events:\n  a:\n    version: 1\n    schema:\n      properties:\n"
                          "        t: { type: string, format: hostname }\n"),
              "D/contracts.yaml:6:28: schema: unsupported format 'hostname' (date-time, date, "
              "email, uuid, uri are checked)");
    CHECK_STR(load_errors("events:\n  a:\n    version: 0\n    schema: {}\n    extra: 1\n"),
              "D/contracts.yaml:5:5: unknown key 'extra'\n"
              "D/contracts.yaml:3:14: version must be a positive integer");
    CHECK_STR(load_errors("events:\n  a:\n    version: 2\n    schema: {}\n"
                          "    backwards_compatible_with:\n      - version: 3\n"
                          "        upcaster: missing.lua\n"),
              "D/contracts.yaml:7:19: upcaster file not found (relative to D): missing.lua");
    CHECK_STR(load_errors("events:\n  a:\n    version: 2\n    schema: {}\n"
                          "    backwards_compatible_with:\n      - version: 3\n"
                          "        upcaster: up.lua\n"),
              "D/contracts.yaml:6:18: version 3 is not older than the current version 2");
    CHECK_STR(load_errors("events:\n  a:\n    version: 1\n"),
              "D/contracts.yaml:3:5: missing key 'schema'");
    CHECK_STR(load_errors("events: [1]\n"),
              "D/contracts.yaml:1:9: events must be a mapping of event types");
    CHECK_STR(load_errors("events:\n  a: {version: 1, schema: {}\n"),
              "D/contracts.yaml:3:1: did not find expected ',' or '}'");
    CHECK_STR(load_errors("event: {}\n"), "D/contracts.yaml:1:1: unknown key 'event'");
    /* a value quoted in an error keeps it one line (a flow scalar folds blank
     * lines into line breaks: found by fuzz_contracts) */
    CHECK_STR(load_errors("events:\n  a:\n    version: 1\n    schema: {type: o\n\n\nbject}\n"),
              "D/contracts.yaml:4:14: schema: unknown type 'o\\n\\nbject'");
}

static json_t *js(const char *text)
{
    json_error_t e;
    return json_loads(text, JSON_DECODE_ANY, &e);
}

static void test_version(void)
{
    wr_contract_opts o = {.version_header = "version", .default_version = 1};
    int64_t v = 0;
    json_t *b = js("{\"version\": 3}");
    CHECK_INT(wr_contracts_version(&o, "2", 1, b, &v), 0);
    CHECK_INT(v, 2);
    CHECK_INT(wr_contracts_version(&o, NULL, 0, b, &v), 0);
    CHECK_INT(v, 3);
    CHECK_INT(wr_contracts_version(&o, "v2", 2, b, &v), -1);
    json_decref(b);
    b = js("{\"version\": \"4\"}");
    CHECK_INT(wr_contracts_version(&o, NULL, 0, b, &v), 0);
    CHECK_INT(v, 4);
    json_decref(b);
    b = js("{\"version\": 1.5}");
    CHECK_INT(wr_contracts_version(&o, NULL, 0, b, &v), -1);
    json_decref(b);
    b = js("{}");
    o.default_version = 7;
    CHECK_INT(wr_contracts_version(&o, NULL, 0, b, &v), 0);
    CHECK_INT(v, 7);
    json_decref(b);
}

static wr_ct_result check(wr_contracts *c, const wr_contract_opts *o, const char *type,
                          int64_t version, const char *body, char *detail)
{
    json_t *b = js(body);
    wr_ct_result r = wr_contracts_check(c, o, type, strlen(type), version, b, detail, 600);
    json_decref(b);
    return r;
}

static void test_check(void)
{
    char err[1024], detail[600];
    wr_contracts *c = parse(ORDERS, err, sizeof err);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        CHECK(c != NULL);
        return;
    }
    wr_contract_opts o = {.version_header = "version", .default_version = 1};
    CHECK_INT(wr_contracts_count(c), 2);
    CHECK_INT(wr_contracts_current(c, "order.created", 13), 2);
    CHECK_INT(wr_contracts_current(c, "order.x", 7), -1);
    CHECK_INT(check(c, &o, "order.created", 2,
                    "{\"order_id\": \"o\", \"items\": [{\"sku\": \"a\", \"quantity\": 2}]}",
                    detail),
              WR_CT_VALID);
    CHECK_INT(check(c, &o, "order.created", 2,
                    "{\"order_id\": 5, \"items\": [{\"sku\": \"a\", \"quantity\": 0}]}", detail),
              WR_CT_INVALID);
    CHECK_STR(detail, "order.created v2: /order_id: type: integer, not string; "
                      "/items/0/quantity: minimum: 0 < 1");
    CHECK_INT(check(c, &o, "order.created", 3, "{}", detail), WR_CT_VERSION_UNKNOWN);
    CHECK_STR(detail, "order.created v3: no contract for this version (current: v2)");
    CHECK_INT(check(c, &o, "order.created", 1, "{}", detail), WR_CT_UPCAST);
    CHECK_INT(check(c, &o, "order.shipped", 1, "{}", detail), WR_CT_NO_CONTRACT);
    CHECK_STR(detail, "");
    o.unknown_dlq = 1;
    CHECK_INT(check(c, &o, "order.shipped", 1, "{}", detail), WR_CT_UNKNOWN_TYPE);
    CHECK_STR(detail, "no contract for event type 'order.shipped'");

    /* twelve violations: ten shown, the rest counted */
    wr_contracts *many = parse("events:\n  e:\n    version: 1\n    schema:\n"
                               "      items: { type: string }\n",
                               err, sizeof err);
    CHECK(many != NULL);
    CHECK_INT(check(many, &o, "e", 1, "[1,2,3,4,5,6,7,8,9,10,11,12]", detail), WR_CT_INVALID);
    CHECK_STR(strstr(detail, "/9: type: integer, not string; (+2 more)") != NULL ? "yes" : detail,
              "yes");

    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    wr_contracts_render(c, "orders", fp);
    fclose(fp);
    CHECK_STR(buf, "warren_contract_events_total{subscription=\"orders\",type=\"order.created\","
                   "version=\"2\",result=\"valid\"} 1\n"
                   "warren_contract_events_total{subscription=\"orders\",type=\"order.created\","
                   "version=\"2\",result=\"schema-invalid\"} 1\n"
                   "warren_contract_events_total{subscription=\"orders\",type=\"order.created\","
                   "version=\"1\",result=\"upcast\"} 1\n"
                   "warren_contract_events_total{subscription=\"orders\",type=\"order.created\","
                   "version=\"other\",result=\"version-unknown\"} 1\n"
                   "warren_contract_events_total{subscription=\"orders\",type=\"\",version=\"\","
                   "result=\"no-contract\"} 1\n"
                   "warren_contract_events_total{subscription=\"orders\",type=\"\",version=\"\","
                   "result=\"unknown-type\"} 1\n");
    free(buf);

    fp = open_memstream(&buf, &len);
    CHECK_INT(wr_contracts_check_examples(c, fp), 1);
    fclose(fp);
    char want[600];
    snprintf(want, sizeof want,
             "%s/contracts.yaml:18:9: example 1 of order.created v2 does not validate: "
             "/items/0/quantity: minimum: 0 < 1\n",
             dir);
    CHECK_STR(buf, want);
    free(buf);
    wr_contracts_free(many);
    wr_contracts_free(c);
}

/* The counters of C as Prometheus text. */
static const char *rendered(const wr_contracts *c)
{
    static char out[2048];
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    wr_contracts_render(c, "orders", fp);
    fclose(fp);
    snprintf(out, sizeof out, "%s", buf);
    free(buf);
    return out;
}

static void show_step(void *ud, const char *what, int64_t from, int64_t to, const char *body,
                      size_t len, const char *err)
{
    size_t n = strlen(ud);
    snprintf((char *)ud + n, 1024 - n, "%s v%lld -> v%lld: %.*s\n", what, (long long)from,
             (long long)to, body ? (int)len : (int)strlen(err), body ? body : err);
}

/*
 * Reloads: the digest follows the file and its upcasters; a reloaded file
 * adopts the counters of the one it replaces (the old one may still count);
 * wr_contracts_upcast runs the chain, validates, and counts upcast-failed.
 */
static void test_reload_and_upcast(void)
{
    char err[1024], detail[600], p[300];
    wr_contracts *a = parse(ORDERS, err, sizeof err), *same = parse(ORDERS, err, sizeof err);
    CHECK(a != NULL && same != NULL);
    if (!a || !same) {
        return;
    }
    CHECK_INT((int)strlen(wr_contracts_digest(a)), 12);
    CHECK_STR(wr_contracts_digest(same), wr_contracts_digest(a));
    const char *files[4];
    CHECK_INT(wr_contracts_files(a, files, 4), 2);
    snprintf(p, sizeof p, "%s/up.lua", dir);
    CHECK_STR(files[1], p);

    /* v1 -> v2 upcasters: one that fixes the event, one that fails validation */
    snprintf(p, sizeof p, "%s/up.lua", dir);
    FILE *fp = fopen(p, "w");
    fputs("return function(e) e.items = { { sku = 'a', quantity = e.qty } }; e.qty = nil; "
          "return e end\n",
          fp);
    fclose(fp);
    wr_contracts *b = parse(ORDERS, err, sizeof err);
    CHECK(b != NULL);
    if (!b) {
        wr_contracts_free(a);
        wr_contracts_free(same);
        return;
    }
    CHECK(strcmp(wr_contracts_digest(b), wr_contracts_digest(a)) != 0);

    wr_contract_opts o = {.version_header = "version", .default_version = 1};
    json_t *j = json_loads("{\"order_id\": \"o\", \"items\": []}", 0, NULL);
    CHECK_INT(wr_contracts_check(a, &o, "order.created", 13, 2, j, detail, sizeof detail),
              WR_CT_VALID);
    CHECK_INT(wr_contracts_adopt_counts(b, a), 0);
    /* the old one counts on (a worker between two batches), into the same series */
    CHECK_INT(wr_contracts_check(a, &o, "order.created", 13, 2, j, detail, sizeof detail),
              WR_CT_VALID);
    CHECK_INT(wr_contracts_check(b, &o, "order.created", 13, 2, j, detail, sizeof detail),
              WR_CT_VALID);
    json_decref(j);
    wr_contracts_free(a);
    wr_contracts_free(same);
    CHECK_STR(rendered(b),
              "warren_contract_events_total{subscription=\"orders\",type=\"order.created\","
              "version=\"2\",result=\"valid\"} 3\n");

    snprintf(p, sizeof p, "%s/h.lua", dir);
    fp = fopen(p, "w");
    fputs("return { handle = function(event, ctx) end }\n", fp);
    fclose(fp);
    wr_lua_opts lo = {
        .handler_path = p, .subscription = "s", .queue = "q", .timeout_ms = 200, .max_attempts = 1};
    wr_lua *L = wr_lua_create(&lo, err, sizeof err);
    CHECK(L != NULL);
    if (L) {
        char *out = NULL, steps[1024] = "";
        size_t len = 0;
        const char *good = "{\"order_id\": \"o1\", \"qty\": 2}";
        CHECK_INT(wr_contracts_upcast(b, L, "order.created", 13, 1, good, strlen(good), &out, &len,
                                      detail, sizeof detail, show_step, steps),
                  0);
        json_t *got = out ? json_loadb(out, len, 0, NULL) : NULL;
        CHECK_INT(json_integer_value(json_object_get(
                      json_array_get(json_object_get(got, "items"), 0), "quantity")),
                  2);
        json_decref(got);
        free(out);
        const char *bad = "{\"order_id\": \"o2\", \"qty\": 0}";
        CHECK_INT(wr_contracts_upcast(b, L, "order.created", 13, 1, bad, strlen(bad), &out, &len,
                                      detail, sizeof detail, NULL, NULL),
                  -1);
        CHECK(out == NULL);
        CHECK_STR(detail, "order.created v1 -> v2: the result does not validate: "
                          "/items/0/quantity: minimum: 0 < 1");
        CHECK_INT(wr_contracts_upcast(b, L, "order.created", 13, 1, bad, strlen(bad), &out, &len,
                                      detail, sizeof detail, show_step, steps),
                  -1);
        /* each step shown: the upcaster's result, then the validation */
        CHECK_STR(strncmp(steps, "upcast v1 -> v2: {", 18) == 0 ? "yes" : steps, "yes");
        CHECK_STR(strstr(steps, "validate v1 -> v2: order.created v1 -> v2: the result does not "
                                "validate: /items/0/quantity: minimum: 0 < 1\n") != NULL
                      ? "yes"
                      : steps,
                  "yes");
        wr_lua_destroy(L);
    }
    unlink(p);
    CHECK_STR(rendered(b),
              "warren_contract_events_total{subscription=\"orders\",type=\"order.created\","
              "version=\"2\",result=\"valid\"} 3\n"
              "warren_contract_events_total{subscription=\"orders\",type=\"order.created\","
              "version=\"1\",result=\"upcast-failed\"} 2\n");
    wr_contracts_free(b);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/wr-test-contracts-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    char up[300];
    snprintf(up, sizeof up, "%s/up.lua", dir);
    FILE *fp = fopen(up, "w");
    fputs("return function(e) return e end\n", fp);
    fclose(fp);
    test_load_errors();
    test_version();
    test_check();
    test_reload_and_upcast();
    unlink(up);
    rmdir(dir);
    return check_report("test_contracts");
}
