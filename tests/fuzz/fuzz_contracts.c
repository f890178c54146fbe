/*
 * fuzz_contracts: a contracts file (YAML) through the loader, and an event
 * through the loaded contracts.
 *
 * Input: a 2-byte length and that many bytes of contracts file, a length
 * byte and that many bytes of event type, 8 bytes of version, then the rest
 * (the event's body, JSON). The file is parsed as if read from a directory
 * that holds one upcaster, up.lua (so `upcaster: up.lua` loads and other
 * names are "not found"). A file refused has every problem as a line of
 * "FILE:LINE:COL: message" with the file's name, line and column at least
 * 1. A file loaded checks the event: a result in range, an explanation for
 * every refusal, an upcast chain of the right length for an older version,
 * the counters rendered as Prometheus lines; examples are checked too.
 *
 * The Lua runtime is not linked: reading an upcaster's source is a stub
 * (the loader only reads it; running upcasters is tests/unit/test_upcast.c's).
 */
#include <unistd.h>

#include "contracts.h"
#include "lua_rt.h"
#include "metrics.h"

#include "fuzz.h"

static char dir[64];
static char path[128];

/* ---- what contracts.c takes from lua_rt.c and metrics.c ---- */

uint64_t wr_fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211ULL;
    }
    return h;
}

char *wr_lua_read_source(const char *file, const char *what, size_t *len, char *err, size_t errcap)
{
    (void)file;
    (void)what;
    (void)err;
    (void)errcap;
    static const char src[] = "return function(data) return data end\n";
    *len = sizeof(src) - 1;
    return strdup(src);
}

int wr_lua_upcaster_compile(wr_lua *L, const wr_lua_upcaster *u, char *err, size_t errcap)
{
    (void)L;
    (void)u;
    snprintf(err, errcap, "not run in the fuzz target");
    return -1;
}

int wr_lua_upcast(wr_lua *L, const wr_lua_upcaster *steps, int n, const char *type,
                  const char *body, size_t len, char **out, size_t *out_len, char *err,
                  size_t errcap)
{
    (void)L;
    (void)steps;
    (void)n;
    (void)type;
    (void)body;
    (void)len;
    (void)out;
    (void)out_len;
    snprintf(err, errcap, "not run in the fuzz target");
    return -1;
}

void wr_metrics_label_escape(const char *in, char *out, size_t cap)
{
    snprintf(out, cap, "%s", in);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof(dir), "/tmp/wr-fuzz-contracts-XXXXXX");
    FZ_ASSERT(mkdtemp(dir) != NULL);
    char up[128];
    snprintf(up, sizeof(up), "%s/up.lua", dir);
    FILE *fp = fopen(up, "w");
    FZ_ASSERT(fp != NULL);
    fputs("return function(data) return data end\n", fp);
    fclose(fp);
    snprintf(path, sizeof(path), "%s/contracts.yaml", dir);
    return 0;
}

/* Every line of ERR is "PATH:LINE:COL: message" with LINE and COL >= 1. */
static void check_errors(const char *err)
{
    FZ_ASSERT(err[0] != '\0');
    size_t pl = strlen(path);
    for (const char *l = err; *l;) {
        const char *nl = strchr(l, '\n');
        FZ_ASSERT(strncmp(l, path, pl) == 0 && l[pl] == ':');
        char *end;
        long line = strtol(l + pl + 1, &end, 10);
        FZ_ASSERT(line >= 1 && *end == ':');
        long col = strtol(end + 1, &end, 10);
        FZ_ASSERT(col >= 1 && end[0] == ':' && end[1] == ' ');
        if (nl == NULL) {
            break;
        }
        l = nl + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    const uint8_t *fp, *bp;
    size_t fn = fz_take(&in, fz_u16(&in), &fp);
    char type[256];
    size_t tn = fz_str8(&in, type);
    int64_t version = fz_i64(&in);
    size_t bn = fz_take(&in, in.n, &bp);

    char err[4096];
    wr_contracts *c = wr_contracts_parse(path, (const char *)fp, fn, err, sizeof(err));
    if (c == NULL) {
        /* a cut list may end inside a line: check the whole lines */
        char *last = strrchr(err, '\n');
        if (strlen(err) + 1 >= sizeof(err) && last != NULL) {
            *last = '\0';
        }
        if (strlen(err) + 1 < sizeof(err)) {
            check_errors(err);
        }
        return 0;
    }
    FZ_ASSERT(wr_contracts_count(c) >= 0);
    FZ_ASSERT(strlen(wr_contracts_digest(c)) == 12);
    json_t *body = json_loadb((const char *)bp, bn, JSON_DECODE_ANY, NULL);
    if (body == NULL) {
        /* wr_contracts_check_envelope refuses a body that is not JSON before any check */
        body = json_object();
    }
    wr_contract_opts o = {
        .version_header = "version", .default_version = 1, .unknown_dlq = version & 1};
    char detail[600];
    wr_ct_result r = wr_contracts_check(c, &o, type, tn, version, body, detail, sizeof(detail));
    FZ_ASSERT(r >= 0 && r < WR_CT_COUNT);
    FZ_ASSERT(memchr(detail, '\0', sizeof(detail)) != NULL);
    if (r == WR_CT_INVALID || r == WR_CT_VERSION_UNKNOWN || r == WR_CT_UNKNOWN_TYPE) {
        FZ_ASSERT(detail[0] != '\0');
    }
    int64_t current = wr_contracts_current(c, type, tn);
    if (r == WR_CT_UPCAST) {
        wr_upcast_step steps[WR_CONTRACTS_MAX_CHAIN];
        int n = wr_contracts_chain(c, type, tn, version, steps, WR_CONTRACTS_MAX_CHAIN);
        FZ_ASSERT(current > version);
        FZ_ASSERT(n < 0 || n == current - version);
    }
    if (r == WR_CT_VALID) {
        FZ_ASSERT(current == version);
    }
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    FZ_ASSERT(out != NULL);
    wr_contracts_render(c, "fuzz", out);
    wr_contracts_check_examples(c, out);
    fclose(out);
    for (const char *l = text; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        FZ_ASSERT(strncmp(l, "warren_contract_events_total{", 29) == 0 ||
                  strncmp(l, path, strlen(path)) == 0);
    }
    free(text);
    json_decref(body);
    wr_contracts_free(c);
    return 0;
}
