/*
 * contracts: load a contracts file (YAML) into compiled schemas, and check
 * events against them. See contracts.h.
 *
 * The YAML is read with libyaml's document API and turned into a jansson
 * tree (plain scalars typed as YAML 1.2's core schema types them: null,
 * true/false, integers, floats, else strings; quoted scalars stay strings),
 * recording where every member and element starts, by JSON pointer. A
 * schema error (schema.h reports the pointer of the offending member) is
 * then reported at that member's line and column.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "contracts.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "lua_rt.h"
#include "metrics.h"

#define MAX_FILE (4 << 20) /* a contracts file larger than this is refused */
#define MAX_DEPTH 64       /* YAML nesting */

/* Where a member's key or value starts, by JSON pointer. */
typedef struct {
    char *ptr;
    int line, col;
} pos;

typedef struct {
    pos *v;
    size_t n, cap;
} posmap;

/* One version of an event type. */
typedef struct {
    int64_t version;
    char *upcaster; /* absolute path, NULL for the current version */
    char *up_src;   /* its source */
    size_t up_len;
    wr_schema *schema; /* NULL for an older version without a schema of its own */
    char *ptr;         /* JSON pointer of this version's entry in the document */
} cversion;

/*
 * The counters of warren_contract_events_total: one row per (type, version),
 * appended and never moved or removed, so a worker counts through a row
 * pointer without a lock. A reloaded contracts file adopts its predecessor's
 * rows (wr_contracts_adopt_counts): the series keep counting across reloads,
 * also for the events a worker still checks against the old version.
 */
typedef struct ct_row {
    char *type;
    char ver[24]; /* "2", "other" (a version no contract lists), "" (no contract) */
    atomic_uint_fast64_t n[WR_CT_COUNT];
    struct ct_row *next;
} ct_row;

typedef struct {
    pthread_mutex_t lock; /* guards appends; readers of n need none */
    atomic_int refs;      /* the contracts that count here */
    ct_row *head, **tail;
} ct_counts;

typedef struct {
    char *type;
    cversion *v; /* v[0]: the current version; then backwards_compatible_with */
    size_t nv;
    ct_row **rows; /* nv + 1 rows: the last for other versions */
} contract;

struct wr_contracts {
    char *path;
    char *dir;
    json_t *doc;
    posmap keys, vals;
    contract *c;
    size_t n;
    atomic_int refs;
    char digest[17]; /* wr_contracts_digest */
    ct_counts *counts;
    ct_row *none; /* events of types without a contract */
};

/* ---- counters ------------------------------------------------------------------- */

static ct_counts *counts_new(void)
{
    ct_counts *k = calloc(1, sizeof *k);
    if (k) {
        pthread_mutex_init(&k->lock, NULL);
        atomic_init(&k->refs, 1);
        k->tail = &k->head;
    }
    return k;
}

static void counts_release(ct_counts *k)
{
    if (!k || atomic_fetch_sub(&k->refs, 1) != 1) {
        return;
    }
    for (ct_row *r = k->head, *next; r; r = next) {
        next = r->next;
        free(r->type);
        free(r);
    }
    pthread_mutex_destroy(&k->lock);
    free(k);
}

/* The row of TYPE and VER in K, appended when there is none; NULL when out of memory. */
static ct_row *counts_row(ct_counts *k, const char *type, const char *ver)
{
    pthread_mutex_lock(&k->lock);
    ct_row *r = k->head;
    while (r && (strcmp(r->type, type) != 0 || strcmp(r->ver, ver) != 0)) {
        r = r->next;
    }
    if (!r && (r = calloc(1, sizeof *r)) != NULL) {
        r->type = strdup(type);
        snprintf(r->ver, sizeof r->ver, "%s", ver);
        if (!r->type) {
            free(r);
            r = NULL;
        } else {
            *k->tail = r;
            k->tail = &r->next;
        }
    }
    pthread_mutex_unlock(&k->lock);
    return r;
}

/* Point every row of C into K. Returns 0, or -1 when out of memory. */
static int bind_rows(wr_contracts *c, ct_counts *k)
{
    for (size_t i = 0; i < c->n; i++) {
        contract *t = &c->c[i];
        for (size_t s = 0; s <= t->nv; s++) {
            char ver[24];
            if (s < t->nv) {
                snprintf(ver, sizeof ver, "%lld", (long long)t->v[s].version);
            } else {
                snprintf(ver, sizeof ver, "other");
            }
            if ((t->rows[s] = counts_row(k, t->type, ver)) == NULL) {
                return -1;
            }
        }
    }
    return (c->none = counts_row(k, "", "")) != NULL ? 0 : -1;
}

int wr_contracts_adopt_counts(wr_contracts *c, const wr_contracts *old)
{
    if (!old || c->counts == old->counts) {
        return 0;
    }
    if (bind_rows(c, old->counts) != 0) {
        bind_rows(c, c->counts); /* keep counting into its own rows */
        return -1;
    }
    atomic_fetch_add(&old->counts->refs, 1);
    counts_release(c->counts);
    c->counts = old->counts;
    return 0;
}

/* Loader state: errors gathered as lines. */
typedef struct {
    wr_contracts *ct;
    char *err;
    size_t cap, len;
    int count;
    char path[1024]; /* JSON pointer while converting */
} loader;

/* The message of FMT and AP into OUT (CAP bytes, at most 4096) with its
 * control characters written as escapes (\n, \t, \r, ?), so an error stays
 * one line whatever value it quotes (a name or a Lua error may hold line
 * breaks). The message is cut at CAP / 2 bytes: then every escape fits. */
static void one_line(char *out, size_t cap, const char *fmt, va_list ap)
{
    char msg[2048];
    vsnprintf(msg, cap / 2 < sizeof msg ? cap / 2 : sizeof msg, fmt, ap);
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p && o + 3 < cap; p++) {
        if (*p >= 0x20 && *p != 0x7f) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '\\';
            out[o++] = *p == '\n' ? 'n' : *p == '\t' ? 't' : *p == '\r' ? 'r' : '?';
        }
    }
    out[o] = '\0';
}

/* One "PATH:LINE:COL: message" line on FP, the message kept to one line. */
static void print_at(FILE *fp, const char *path, int line, int col, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    one_line(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(fp, "%s:%d:%d: %s\n", path, line, col, msg);
}

static void add_error(loader *ld, int line, int col, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    one_line(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ld->count++;
    if (ld->len + 1 >= ld->cap) {
        return;
    }
    int k = snprintf(ld->err + ld->len, ld->cap - ld->len, "%s%s:%d:%d: %s", ld->len ? "\n" : "",
                     ld->ct->path, line, col, msg);
    if (k > 0) {
        ld->len += (size_t)k < ld->cap - ld->len ? (size_t)k : ld->cap - ld->len - 1;
    }
}

static int pos_add(posmap *m, const char *ptr, int line, int col)
{
    if (m->n == m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        pos *nv = realloc(m->v, ncap * sizeof *nv);
        if (!nv) {
            return -1;
        }
        m->v = nv;
        m->cap = ncap;
    }
    m->v[m->n].ptr = strdup(ptr);
    if (!m->v[m->n].ptr) {
        return -1;
    }
    m->v[m->n].line = line;
    m->v[m->n].col = col;
    m->n++;
    return 0;
}

static const pos *pos_find(const posmap *m, const char *ptr, size_t len)
{
    for (size_t i = 0; i < m->n; i++) {
        if (strlen(m->v[i].ptr) == len && memcmp(m->v[i].ptr, ptr, len) == 0) {
            return &m->v[i];
        }
    }
    return NULL;
}

/* The position of PTR: its key's (its value's first when VALUE), else its
 * parent's. */
static void locate(const wr_contracts *c, const char *ptr, int value, int *line, int *col)
{
    size_t len = strlen(ptr);
    for (;;) {
        const pos *p = pos_find(value ? &c->vals : &c->keys, ptr, len);
        if (!p) {
            p = pos_find(value ? &c->keys : &c->vals, ptr, len);
        }
        if (p) {
            *line = p->line;
            *col = p->col;
            return;
        }
        if (len == 0) {
            *line = *col = 1;
            return;
        }
        while (len > 0 && ptr[len - 1] != '/') {
            len--;
        }
        if (len > 0) {
            len--;
        }
    }
}

/* Append an escaped pointer segment to ld->path; returns the old length. */
static size_t push(loader *ld, const char *seg)
{
    size_t old = strlen(ld->path), n = old;
    if (n + 1 < sizeof ld->path) {
        ld->path[n++] = '/';
    }
    for (; *seg && n + 2 < sizeof ld->path; seg++) {
        if (*seg == '~' || *seg == '/') {
            ld->path[n++] = '~';
            ld->path[n++] = *seg == '~' ? '0' : '1';
        } else {
            ld->path[n++] = *seg;
        }
    }
    ld->path[n] = 0;
    return old;
}

/* A plain scalar typed as YAML 1.2's core schema says. */
static json_t *plain_scalar(const char *s, size_t len)
{
    if (len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
        strcmp(s, "NULL") == 0) {
        return json_null();
    }
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0) {
        return json_true();
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
        return json_false();
    }
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (*end == 0 && errno == 0 && (s[0] == '-' || s[0] == '+' || (s[0] >= '0' && s[0] <= '9'))) {
        return json_integer(i);
    }
    double d = strtod(s, &end);
    if (*end == 0 && (s[0] == '-' || s[0] == '+' || s[0] == '.' || (s[0] >= '0' && s[0] <= '9'))) {
        return json_real(d);
    }
    return json_stringn(s, len);
}

static json_t *convert(loader *ld, yaml_document_t *doc, yaml_node_t *node, int depth)
{
    if (!node) {
        return json_null();
    }
    pos_add(&ld->ct->vals, ld->path, (int)node->start_mark.line + 1,
            (int)node->start_mark.column + 1);
    if (depth > MAX_DEPTH) {
        add_error(ld, (int)node->start_mark.line + 1, (int)node->start_mark.column + 1,
                  "nested deeper than %d", MAX_DEPTH);
        return NULL;
    }
    switch (node->type) {
    case YAML_SCALAR_NODE: {
        const char *s = (const char *)node->data.scalar.value;
        size_t len = node->data.scalar.length;
        if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
            return plain_scalar(s, len);
        }
        return json_stringn(s, len);
    }
    case YAML_SEQUENCE_NODE: {
        json_t *arr = json_array();
        size_t i = 0;
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             arr && it < node->data.sequence.items.top; it++, i++) {
            char idx[24];
            snprintf(idx, sizeof idx, "%zu", i);
            size_t old = push(ld, idx);
            json_t *e = convert(ld, doc, yaml_document_get_node(doc, *it), depth + 1);
            ld->path[old] = 0;
            if (!e || json_array_append_new(arr, e) != 0) {
                json_decref(arr);
                return NULL;
            }
        }
        return arr;
    }
    case YAML_MAPPING_NODE: {
        json_t *obj = json_object();
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
             obj && p < node->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            int kl = (int)k->start_mark.line + 1, kc = (int)k->start_mark.column + 1;
            if (k->type != YAML_SCALAR_NODE) {
                add_error(ld, kl, kc, "a key must be a scalar");
                json_decref(obj);
                return NULL;
            }
            const char *key = (const char *)k->data.scalar.value;
            if (json_object_get(obj, key)) {
                add_error(ld, kl, kc, "duplicate key '%s'", key);
                json_decref(obj);
                return NULL;
            }
            size_t old = push(ld, key);
            pos_add(&ld->ct->keys, ld->path, kl, kc);
            json_t *v = convert(ld, doc, yaml_document_get_node(doc, p->value), depth + 1);
            ld->path[old] = 0;
            if (!v || json_object_set_new(obj, key, v) != 0) {
                json_decref(obj);
                return NULL;
            }
        }
        return obj;
    }
    default:
        return json_null();
    }
}

/* Report an error at member PTR: at its value, or at its key for a member
 * that should not be there (err_at_key). */
static void err_where(loader *ld, int value, const char *ptr, const char *fmt, va_list ap)
{
    char msg[512];
    int line, col;
    vsnprintf(msg, sizeof msg, fmt, ap);
    locate(ld->ct, ptr, value, &line, &col);
    add_error(ld, line, col, "%s", msg);
}

static void err_at(loader *ld, const char *ptr, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_where(ld, 1, ptr, fmt, ap);
    va_end(ap);
}

static void err_at_key(loader *ld, const char *ptr, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_where(ld, 0, ptr, fmt, ap);
    va_end(ap);
}

/* Check that OBJ (at pointer AT) has only the keys in ALLOWED (NULL-ended). */
static int only_keys(loader *ld, const json_t *obj, const char *at, const char *const *allowed)
{
    const char *k;
    json_t *v;
    int ok = 1;
    json_object_foreach((json_t *)obj, k, v)
    {
        int found = 0;
        for (const char *const *a = allowed; *a; a++) {
            found |= strcmp(*a, k) == 0;
        }
        if (!found) {
            char p[1100];
            snprintf(p, sizeof p, "%s/%s", at, k);
            err_at_key(ld, p, "unknown key '%s'", k);
            ok = 0;
        }
    }
    return ok;
}

static int get_version(loader *ld, const json_t *obj, const char *at, int64_t *out)
{
    char p[1100];
    const json_t *v = json_object_get(obj, "version");
    snprintf(p, sizeof p, "%s/version", at);
    if (!v) {
        err_at(ld, at, "missing key 'version'");
        return -1;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        err_at(ld, p, "version must be a positive integer");
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static wr_schema *compile_at(loader *ld, const json_t *schema, const char *at)
{
    char sat[512], why[512], p[1700];
    wr_schema *s = wr_schema_compile(schema, sat, sizeof sat, why, sizeof why);
    if (!s) {
        snprintf(p, sizeof p, "%s%s", at, sat);
        err_at_key(ld, p, "schema: %s", why);
    }
    return s;
}

static char *resolve(loader *ld, const char *at, const char *file)
{
    char *full = NULL;
    struct stat st;
    if (file[0] == '/') {
        full = strdup(file);
    } else {
        size_t n = strlen(ld->ct->dir) + strlen(file) + 2;
        full = malloc(n);
        if (full) {
            snprintf(full, n, "%s/%s", ld->ct->dir, file);
        }
    }
    if (!full) {
        return NULL;
    }
    if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) {
        err_at(ld, at, "upcaster file not found (relative to %s): %s", ld->ct->dir, file);
        free(full);
        return NULL;
    }
    return full;
}

static const char *const event_keys[] = {"version", "schema", "examples",
                                         "backwards_compatible_with", NULL};
static const char *const back_keys[] = {"version", "upcaster", "schema", "examples", NULL};

static int load_version(loader *ld, cversion *cv, const json_t *e, const char *at, int current)
{
    char p[1100];
    if (!json_is_object(e)) {
        err_at(ld, at, "expected a mapping");
        return -1;
    }
    int ok = only_keys(ld, e, at, current ? event_keys : back_keys);
    ok &= get_version(ld, e, at, &cv->version) == 0;
    cv->ptr = strdup(at);
    const json_t *schema = json_object_get(e, "schema");
    snprintf(p, sizeof p, "%s/schema", at);
    if (!schema && current) {
        err_at(ld, at, "missing key 'schema'");
        ok = 0;
    } else if (schema) {
        cv->schema = compile_at(ld, schema, p);
        ok &= cv->schema != NULL;
    }
    const json_t *ex = json_object_get(e, "examples");
    snprintf(p, sizeof p, "%s/examples", at);
    if (ex && !json_is_array(ex)) {
        err_at(ld, p, "examples must be a list of events");
        ok = 0;
    }
    if (!current) {
        const json_t *up = json_object_get(e, "upcaster");
        snprintf(p, sizeof p, "%s/upcaster", at);
        if (!up) {
            err_at(ld, at, "missing key 'upcaster'");
            ok = 0;
        } else if (!json_is_string(up)) {
            err_at(ld, p, "upcaster must be a file name");
            ok = 0;
        } else {
            cv->upcaster = resolve(ld, p, json_string_value(up));
            ok &= cv->upcaster != NULL;
            if (cv->upcaster != NULL) {
                char why[512];
                cv->up_src =
                    wr_lua_read_source(cv->upcaster, "upcaster", &cv->up_len, why, sizeof why);
                if (cv->up_src == NULL) {
                    err_at(ld, p, "%s", why);
                    ok = 0;
                }
            }
        }
    }
    return ok ? 0 : -1;
}

static int load_contract(loader *ld, contract *c, const char *type, const json_t *e)
{
    char at[1100], p[1200];
    snprintf(at, sizeof at, "%s", ld->path);
    c->type = strdup(type);
    if (!json_is_object(e)) {
        err_at(ld, at, "expected a mapping with version and schema");
        return -1;
    }
    const json_t *back = json_object_get(e, "backwards_compatible_with");
    size_t nb = json_is_array(back) ? json_array_size(back) : 0;
    snprintf(p, sizeof p, "%s/backwards_compatible_with", at);
    if (back && !json_is_array(back)) {
        err_at(ld, p, "backwards_compatible_with must be a list");
    }
    c->v = calloc(nb + 1, sizeof *c->v);
    c->rows = calloc(nb + 2, sizeof *c->rows);
    if (!c->v || !c->rows) {
        err_at(ld, at, "out of memory");
        return -1;
    }
    c->nv = nb + 1;
    int ok = load_version(ld, &c->v[0], e, at, 1) == 0;
    for (size_t i = 0; i < nb; i++) {
        char bp[1300];
        snprintf(bp, sizeof bp, "%s/%zu", p, i);
        if (load_version(ld, &c->v[i + 1], json_array_get(back, i), bp, 0) != 0) {
            ok = 0;
            continue;
        }
        if (ok && c->v[i + 1].version >= c->v[0].version) {
            snprintf(bp, sizeof bp, "%s/%zu/version", p, i);
            err_at(ld, bp, "version %lld is not older than the current version %lld",
                   (long long)c->v[i + 1].version, (long long)c->v[0].version);
            ok = 0;
        }
        for (size_t j = 1; j <= i && ok; j++) {
            if (c->v[j].version == c->v[i + 1].version) {
                snprintf(bp, sizeof bp, "%s/%zu/version", p, i);
                err_at(ld, bp, "version %lld is listed twice", (long long)c->v[j].version);
                ok = 0;
            }
        }
    }
    /* every listed version's upcaster leads to a version that is listed or current */
    for (size_t i = 1; i < c->nv && ok; i++) {
        int64_t to = c->v[i].version + 1;
        int found = 0;
        for (size_t j = 0; j < c->nv; j++) {
            found |= c->v[j].version == to;
        }
        if (!found) {
            char bp[1300];
            snprintf(bp, sizeof bp, "%s/%zu/version", p, i - 1);
            err_at(ld, bp,
                   "the upcaster of version %lld makes version %lld, which is neither "
                   "listed nor current",
                   (long long)c->v[i].version, (long long)to);
            ok = 0;
        }
    }
    return ok ? 0 : -1;
}

static void contract_free(contract *c)
{
    for (size_t i = 0; i < c->nv; i++) {
        wr_schema_free(c->v[i].schema);
        free(c->v[i].upcaster);
        free(c->v[i].up_src);
        free(c->v[i].ptr);
    }
    free(c->v);
    free(c->rows);
    free(c->type);
}

wr_contracts *wr_contracts_ref(wr_contracts *c)
{
    if (c) {
        atomic_fetch_add(&c->refs, 1);
    }
    return c;
}

void wr_contracts_free(wr_contracts *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) {
        return;
    }
    counts_release(c->counts);
    for (size_t i = 0; i < c->n; i++) {
        contract_free(&c->c[i]);
    }
    free(c->c);
    for (size_t i = 0; i < c->keys.n; i++) {
        free(c->keys.v[i].ptr);
    }
    for (size_t i = 0; i < c->vals.n; i++) {
        free(c->vals.v[i].ptr);
    }
    free(c->keys.v);
    free(c->vals.v);
    json_decref(c->doc);
    free(c->path);
    free(c->dir);
    free(c);
}

wr_contracts *wr_contracts_parse(const char *path, const char *text, size_t len, char *err,
                                 size_t cap)
{
    loader ld;
    memset(&ld, 0, sizeof ld);
    ld.err = err;
    ld.cap = cap;
    if (cap) {
        err[0] = 0;
    }
    ld.ct = calloc(1, sizeof *ld.ct);
    if (!ld.ct) {
        snprintf(err, cap, "%s: out of memory", path);
        return NULL;
    }
    atomic_init(&ld.ct->refs, 1);
    ld.ct->path = strdup(path);
    const char *slash = strrchr(path, '/');
    ld.ct->dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
    if (slash == path) {
        free(ld.ct->dir);
        ld.ct->dir = strdup("/");
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        add_error(&ld, (int)parser.problem_mark.line + 1, (int)parser.problem_mark.column + 1, "%s",
                  parser.problem ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        wr_contracts_free(ld.ct);
        return NULL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    ld.ct->doc = root ? convert(&ld, &doc, root, 0) : NULL;
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (!ld.ct->doc || ld.count) {
        if (!ld.count) {
            add_error(&ld, 1, 1, "empty file: expected events:");
        }
        wr_contracts_free(ld.ct);
        return NULL;
    }
    static const char *const top[] = {"events", NULL};
    const json_t *events = json_object_get(ld.ct->doc, "events");
    if (!json_is_object(ld.ct->doc)) {
        add_error(&ld, 1, 1, "expected a mapping with events:");
    } else if (only_keys(&ld, ld.ct->doc, "", top) && !json_is_object(events)) {
        err_at(&ld, "/events", "events must be a mapping of event types");
    } else if (events) {
        ld.ct->c = calloc(json_object_size(events) + 1, sizeof *ld.ct->c);
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)events, k, e)
        {
            if (!ld.ct->c) {
                break;
            }
            snprintf(ld.path, sizeof ld.path, "/events");
            push(&ld, k);
            load_contract(&ld, &ld.ct->c[ld.ct->n++], k, e);
        }
    }
    if (!ld.count && ((ld.ct->counts = counts_new()) == NULL || bind_rows(ld.ct, ld.ct->counts))) {
        add_error(&ld, 1, 1, "out of memory");
    }
    if (ld.count) {
        wr_contracts_free(ld.ct);
        return NULL;
    }
    /* the digest: the file's text, then each upcaster's path and source */
    uint64_t h = wr_fnv1a(WR_FNV1A_INIT, text, len);
    for (size_t i = 0; i < ld.ct->n; i++) {
        for (size_t s = 1; s < ld.ct->c[i].nv; s++) {
            const cversion *cv = &ld.ct->c[i].v[s];
            h = wr_fnv1a(h, cv->upcaster, strlen(cv->upcaster) + 1);
            h = wr_fnv1a(h, cv->up_src, cv->up_len);
        }
    }
    snprintf(ld.ct->digest, sizeof ld.ct->digest, "%012llx",
             (unsigned long long)(h & 0xFFFFFFFFFFFFULL));
    return ld.ct;
}

const char *wr_contracts_digest(const wr_contracts *c)
{
    return c->digest;
}

const char *wr_contracts_path(const wr_contracts *c)
{
    return c->path;
}

int wr_contracts_files(const wr_contracts *c, const char **paths, int cap)
{
    int n = 0;
    if (n < cap) {
        paths[n++] = c->path;
    }
    for (size_t i = 0; i < c->n; i++) {
        for (size_t s = 1; s < c->c[i].nv && n < cap; s++) {
            paths[n++] = c->c[i].v[s].upcaster;
        }
    }
    return n;
}

wr_contracts *wr_contracts_load(const char *path, char *err, size_t cap)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, cap, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(MAX_FILE + 1);
    size_t n = buf ? fread(buf, 1, MAX_FILE + 1, fp) : 0;
    fclose(fp);
    if (!buf || n > MAX_FILE) {
        snprintf(err, cap, "%s: %s", path, buf ? "larger than 4 MiB" : "out of memory");
        free(buf);
        return NULL;
    }
    char *real = realpath(path, NULL);
    wr_contracts *c = wr_contracts_parse(real ? real : path, buf, n, err, cap);
    free(real);
    free(buf);
    return c;
}

int wr_contracts_count(const wr_contracts *c)
{
    return (int)c->n;
}

static int parse_version(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;
    if (len == 0 || len > 15) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1) {
        return -1;
    }
    *out = v;
    return 0;
}

int wr_contracts_version(const wr_contract_opts *opts, const char *version, size_t version_len,
                         const json_t *body, int64_t *out)
{
    if (version) {
        return parse_version(version, version_len, out);
    }
    const json_t *f = json_is_object(body) ? json_object_get(body, opts->version_header) : NULL;
    if (json_is_integer(f)) {
        *out = json_integer_value(f);
        return *out >= 1 ? 0 : -1;
    }
    if (json_is_string(f)) {
        return parse_version(json_string_value(f), json_string_length(f), out);
    }
    if (f && !json_is_null(f)) {
        return -1;
    }
    *out = opts->default_version;
    return 0;
}

static contract *find(const wr_contracts *c, const char *type, size_t len)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strlen(c->c[i].type) == len && memcmp(c->c[i].type, type, len) == 0) {
            return &c->c[i];
        }
    }
    return NULL;
}

int64_t wr_contracts_current(const wr_contracts *c, const char *type, size_t type_len)
{
    const contract *k = find(c, type, type_len);
    return k ? k->v[0].version : -1;
}

static const char *const ct_names[WR_CT_COUNT] = {
    [WR_CT_VALID] = "valid",
    [WR_CT_NO_CONTRACT] = "no-contract",
    [WR_CT_INVALID] = "schema-invalid",
    [WR_CT_VERSION_UNKNOWN] = "version-unknown",
    [WR_CT_UNKNOWN_TYPE] = "unknown-type",
    [WR_CT_UPCAST] = "upcast",
    [WR_CT_UPCAST_FAILED] = "upcast-failed",
};

const char *wr_ct_result_name(wr_ct_result r)
{
    return r < WR_CT_COUNT ? ct_names[r] : "";
}

wr_ct_result wr_contracts_check(wr_contracts *c, const wr_contract_opts *opts, const char *type,
                                size_t type_len, int64_t version, const json_t *body, char *detail,
                                size_t cap)
{
    contract *k = find(c, type, type_len);
    if (cap) {
        detail[0] = 0;
    }
    if (!k) {
        wr_ct_result r = opts->unknown_dlq ? WR_CT_UNKNOWN_TYPE : WR_CT_NO_CONTRACT;
        if (r == WR_CT_UNKNOWN_TYPE) {
            snprintf(detail, cap, "no contract for event type '%.*s'", (int)type_len, type);
        }
        wr_stat_add(&c->none->n[r], 1);
        return r;
    }
    size_t slot = k->nv; /* other versions */
    for (size_t i = 0; i < k->nv; i++) {
        if (k->v[i].version == version) {
            slot = i;
        }
    }
    wr_ct_result r;
    if (slot == k->nv) {
        r = WR_CT_VERSION_UNKNOWN;
        snprintf(detail, cap, "%s v%lld: no contract for this version (current: v%lld)", k->type,
                 (long long)version, (long long)k->v[0].version);
    } else if (slot > 0 && !k->v[slot].schema) {
        r = WR_CT_UPCAST;
    } else {
        wr_schema_violation vs[WR_CONTRACTS_MAX_VIOLATIONS];
        size_t total = 0;
        if (wr_schema_validate(k->v[slot].schema, body, vs, WR_CONTRACTS_MAX_VIOLATIONS, &total)) {
            r = slot == 0 ? WR_CT_VALID : WR_CT_UPCAST;
        } else {
            r = WR_CT_INVALID;
            int n = snprintf(detail, cap, "%s v%lld: ", k->type, (long long)version);
            if (n > 0 && (size_t)n < cap) {
                size_t shown =
                    total < WR_CONTRACTS_MAX_VIOLATIONS ? total : WR_CONTRACTS_MAX_VIOLATIONS;
                wr_schema_format(vs, shown, total, detail + n, cap - (size_t)n);
            }
        }
    }
    wr_stat_add(&k->rows[slot]->n[r], 1);
    return r;
}

void wr_contracts_render(const wr_contracts *c, const char *sub, FILE *fp)
{
    char esub[512], etype[512];
    wr_metrics_label_escape(sub, esub, sizeof esub);
    pthread_mutex_lock(&c->counts->lock);
    for (const ct_row *k = c->counts->head; k; k = k->next) {
        wr_metrics_label_escape(k->type, etype, sizeof etype);
        for (int r = 0; r < WR_CT_COUNT; r++) {
            uint64_t n = atomic_load_explicit(&k->n[r], memory_order_relaxed);
            if (n) {
                fprintf(fp,
                        "warren_contract_events_total{subscription=\"%s\",type=\"%s\","
                        "version=\"%s\",result=\"%s\"} %llu\n",
                        esub, etype, k->ver, ct_names[r], (unsigned long long)n);
            }
        }
    }
    pthread_mutex_unlock(&c->counts->lock);
}

int wr_contracts_check_examples(const wr_contracts *c, FILE *fp)
{
    int problems = 0;
    for (size_t i = 0; i < c->n; i++) {
        const contract *k = &c->c[i];
        for (size_t s = 0; s < k->nv; s++) {
            const cversion *cv = &k->v[s];
            const json_t *entry = c->doc;
            /* find the entry again from its pointer: /events/<type>[/backwards.../i] */
            char ex_ptr[1200];
            snprintf(ex_ptr, sizeof ex_ptr, "%s/examples", cv->ptr);
            entry = json_object_get(json_object_get(c->doc, "events"), k->type);
            if (s > 0) {
                entry = json_array_get(json_object_get(entry, "backwards_compatible_with"), s - 1);
            }
            const json_t *ex = json_object_get(entry, "examples");
            size_t j;
            json_t *e;
            json_array_foreach((json_t *)ex, j, e)
            {
                wr_schema_violation vs[WR_CONTRACTS_MAX_VIOLATIONS];
                size_t total = 0;
                if (!cv->schema ||
                    wr_schema_validate(cv->schema, e, vs, WR_CONTRACTS_MAX_VIOLATIONS, &total)) {
                    continue;
                }
                char p[1300], line[1024];
                int l, col;
                snprintf(p, sizeof p, "%s/%zu", ex_ptr, j);
                locate(c, p, 1, &l, &col);
                wr_schema_format(
                    vs, total < WR_CONTRACTS_MAX_VIOLATIONS ? total : WR_CONTRACTS_MAX_VIOLATIONS,
                    total, line, sizeof line);
                print_at(fp, c->path, l, col, "example %zu of %s v%lld does not validate: %s", j,
                         k->type, (long long)cv->version, line);
                problems++;
            }
        }
    }
    return problems;
}

wr_reason wr_contracts_check_envelope(wr_contracts *c, const wr_contract_policy *policy,
                                      const wr_envelope *env, wr_ct_result *result,
                                      int64_t *version, char *detail, size_t cap)
{
    wr_contract_opts o = {.version_header = policy->version_header,
                          .default_version = policy->default_version,
                          .unknown_dlq = policy->unknown_types_dlq};
    const char *type = (const char *)env->type.bytes;
    size_t tlen = env->type.len;
    json_t *body = NULL;
    json_error_t jerr;
    *result = WR_CT_NO_CONTRACT;
    *version = policy->default_version;
    if (cap) {
        detail[0] = 0;
    }
    const contract *k = find(c, type, tlen);
    if (k && o.default_version == 0) {
        o.default_version = k->v[0].version; /* no version: the current one */
    }
    *version = o.default_version;
    if (!k) {
        *result = wr_contracts_check(c, &o, type, tlen, 0, NULL, detail, cap);
        return *result == WR_CT_UNKNOWN_TYPE ? WR_RS_UNKNOWN_TYPE : WR_RS_NONE;
    }
    if (!env->is_json) {
        snprintf(detail, cap, "%.*s: the body is not JSON (content type %.*s)", (int)tlen, type,
                 (int)env->content_type.len, (const char *)env->content_type.bytes);
        return WR_RS_SCHEMA_INVALID;
    }
    body = json_loadb((const char *)env->body.bytes, env->body.len,
                      JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!body) {
        body = json_loadb((const char *)env->body.bytes, env->body.len,
                          JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &jerr);
    }
    if (!body) {
        snprintf(detail, cap, "the body is not valid JSON: %s at line %d, column %d", jerr.text,
                 jerr.line, jerr.column);
        return WR_RS_INVALID_JSON;
    }
    /* the version header, as any AMQP integer or a string */
    const char *vtext = NULL;
    size_t vlen = 0;
    char vbuf[24];
    int64_t hv;
    amqp_bytes_t hs = wr_table_get_str(env->headers, policy->version_header);
    if (hs.len > 0) {
        vtext = (const char *)hs.bytes;
        vlen = hs.len;
    } else if (wr_table_get_int(env->headers, policy->version_header, &hv) == 0) {
        vlen = (size_t)snprintf(vbuf, sizeof vbuf, "%lld", (long long)hv);
        vtext = vbuf;
    } else if (wr_table_get(env->headers, policy->version_header)) {
        vtext = "?";
        vlen = 1;
    }
    if (wr_contracts_version(&o, vtext, vlen, body, version) != 0) {
        snprintf(detail, cap, "%.*s: version %s%.*s is not a positive integer", (int)tlen, type,
                 vtext ? "" : "field ", vtext ? (int)vlen : 0, vtext ? vtext : "");
        json_decref(body);
        *result = WR_CT_VERSION_UNKNOWN;
        return WR_RS_VERSION_UNKNOWN;
    }
    *result = wr_contracts_check(c, &o, type, tlen, *version, body, detail, cap);
    json_decref(body);
    switch (*result) {
    case WR_CT_INVALID:
        return WR_RS_SCHEMA_INVALID;
    case WR_CT_VERSION_UNKNOWN:
        return WR_RS_VERSION_UNKNOWN;
    case WR_CT_UNKNOWN_TYPE:
        return WR_RS_UNKNOWN_TYPE;
    default:
        return WR_RS_NONE;
    }
}

int wr_contracts_chain(const wr_contracts *c, const char *type, size_t type_len, int64_t from,
                       wr_upcast_step *steps, int cap)
{
    const contract *k = find(c, type, type_len);
    int n = 0;
    if (!k) {
        return -1;
    }
    for (int64_t v = from; v < k->v[0].version; v++) {
        const cversion *cv = NULL;
        for (size_t j = 1; j < k->nv; j++) {
            if (k->v[j].version == v) {
                cv = &k->v[j];
            }
        }
        if (!cv || n == cap) {
            return -1;
        }
        steps[n++] =
            (wr_upcast_step){.from = v, .path = cv->upcaster, .src = cv->up_src, .len = cv->up_len};
    }
    return from > k->v[0].version ? -1 : n;
}

int wr_contracts_upcast(wr_contracts *c, struct wr_lua *L, const char *type, size_t type_len,
                        int64_t from, const char *body, size_t len, char **out, size_t *out_len,
                        char *detail, size_t cap, wr_upcast_show show, void *ud)
{
    wr_upcast_step steps[WR_CONTRACTS_MAX_CHAIN];
    wr_lua_upcaster ls[WR_CONTRACTS_MAX_CHAIN];
    char tname[256], err[700];
    snprintf(tname, sizeof tname, "%.*s", (int)type_len, type);
    *out = NULL;
    *out_len = 0;
    int n = wr_contracts_chain(c, type, type_len, from, steps, WR_CONTRACTS_MAX_CHAIN);
    int rc = 0;
    if (n < 0) {
        snprintf(detail, cap, "%s v%lld: no upcaster chain to the current version", tname,
                 (long long)from);
        rc = -1;
    }
    for (int i = 0; i < n; i++) {
        ls[i] = (wr_lua_upcaster){
            .from = steps[i].from, .path = steps[i].path, .src = steps[i].src, .len = steps[i].len};
    }
    if (rc == 0 && !show) {
        /* the whole chain at once, under one handler timeout */
        if (wr_lua_upcast(L, ls, n, tname, body, len, out, out_len, err, sizeof err) != 0) {
            snprintf(detail, cap, "%s: %s", tname, err);
            rc = -1;
        }
    } else if (rc == 0) {
        /* one step at a time, each shown */
        const char *in = body;
        size_t in_len = len;
        char *cur = NULL;
        for (int i = 0; i < n && rc == 0; i++) {
            char *next = NULL;
            size_t next_len = 0;
            if (wr_lua_upcast(L, &ls[i], 1, tname, in, in_len, &next, &next_len, err, sizeof err) !=
                0) {
                snprintf(detail, cap, "%s: %s", tname, err);
                show(ud, "upcast", ls[i].from, ls[i].from + 1, NULL, 0, detail);
                rc = -1;
            } else {
                show(ud, "upcast", ls[i].from, ls[i].from + 1, next, next_len, NULL);
                free(cur);
                cur = next;
                in = cur;
                in_len = next_len;
            }
        }
        if (rc == 0 && n == 0) {
            cur = malloc(len + 1);
            if (cur) {
                memcpy(cur, body, len);
                cur[len] = 0;
            }
        }
        *out = cur;
        *out_len = rc == 0 ? in_len : 0;
        if (rc != 0) {
            free(cur);
            *out = NULL;
        }
    }
    if (rc == 0 && *out &&
        wr_contracts_validate_current(c, type, type_len, from, *out, *out_len, detail, cap) != 0) {
        rc = -1;
        if (show) {
            show(ud, "validate", from, wr_contracts_current(c, type, type_len), NULL, 0, detail);
        }
    } else if (rc == 0 && show) {
        show(ud, "validate", from, wr_contracts_current(c, type, type_len), *out, *out_len, NULL);
    }
    if (rc != 0) {
        free(*out);
        *out = NULL;
        *out_len = 0;
        contract *k = find(c, type, type_len);
        size_t slot = k ? k->nv : 0;
        for (size_t i = 0; k && i < k->nv; i++) {
            slot = k->v[i].version == from ? i : slot;
        }
        wr_stat_add(k ? &k->rows[slot]->n[WR_CT_UPCAST_FAILED] : &c->none->n[WR_CT_UPCAST_FAILED],
                    1);
    }
    return rc;
}

wr_reason wr_contracts_admit(wr_contracts *c, const wr_contract_policy *policy, wr_envelope *env,
                             wr_cloudevent *ce, int64_t *upcast_from, int64_t *version_out,
                             char *detail, size_t cap)
{
    *upcast_from = 0;
    if (version_out != NULL) {
        *version_out = 0;
    }
    int cr = wr_cloudevent_read(env, ce, detail, cap);
    if (cr < 0) {
        return WR_RS_INVALID_CLOUDEVENT;
    }
    if (cr == 1) {
        env->type = (amqp_bytes_t){.len = strlen(ce->type), .bytes = ce->type};
        if (env->id.len == 0) {
            env->id = (amqp_bytes_t){.len = strlen(ce->id), .bytes = ce->id};
        }
        if (ce->mode == WR_CE_STRUCTURED) {
            env->body = (amqp_bytes_t){.len = ce->data_len, .bytes = ce->data};
            env->is_json = ce->data != NULL;
        }
    }
    if (c == NULL) {
        return WR_RS_NONE;
    }
    wr_ct_result ct;
    int64_t version = 0;
    wr_reason rs = wr_contracts_check_envelope(c, policy, env, &ct, &version, detail, cap);
    if (version_out != NULL && ct != WR_CT_NO_CONTRACT && ct != WR_CT_UNKNOWN_TYPE) {
        *version_out = version;
    }
    if (rs == WR_RS_NONE && ct != WR_CT_NO_CONTRACT) {
        /* event.version: the version its contract found (header, field or default) */
        int n = snprintf(env->version_buf, sizeof(env->version_buf), "%lld", (long long)version);
        env->version = (amqp_bytes_t){.len = (size_t)n, .bytes = env->version_buf};
        *upcast_from = ct == WR_CT_UPCAST ? version : 0;
    }
    return rs;
}

char *wr_contracts_upcast_envelope(wr_contracts *c, struct wr_lua *L, wr_envelope *env,
                                   int64_t from, size_t *len, char *detail, size_t cap,
                                   wr_upcast_show show, void *ud)
{
    char type[256], *out = NULL;
    snprintf(type, sizeof(type), "%.*s", (int)env->type.len, (const char *)env->type.bytes);
    if (wr_contracts_upcast(c, L, type, strlen(type), from, (const char *)env->body.bytes,
                            env->body.len, &out, len, detail, cap, show, ud) != 0) {
        return NULL;
    }
    memcpy(env->original_buf, env->version_buf, sizeof(env->original_buf));
    env->original_version = (amqp_bytes_t){.len = env->version.len, .bytes = env->original_buf};
    int k = snprintf(env->version_buf, sizeof(env->version_buf), "%lld",
                     (long long)wr_contracts_current(c, type, strlen(type)));
    env->version = (amqp_bytes_t){.len = (size_t)k, .bytes = env->version_buf};
    return out;
}

/*
 * Validate BODY against K's current schema. DETAIL already holds N bytes of
 * its lead-in; on failure the reason follows them: "the NOUN is not JSON:
 * ...", or LEAD and the violations. Returns 0 (DETAIL emptied) or -1.
 */
static int validate_body(const contract *k, const char *body, size_t len, const char *noun,
                         const char *lead, char *detail, size_t cap, size_t n)
{
    json_error_t jerr;
    json_t *j = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!j) {
        snprintf(detail + n, cap - n, "the %s is not JSON: %s", noun, jerr.text);
        return -1;
    }
    wr_schema_violation vs[WR_CONTRACTS_MAX_VIOLATIONS];
    size_t total = 0;
    int ok = wr_schema_validate(k->v[0].schema, j, vs, WR_CONTRACTS_MAX_VIOLATIONS, &total);
    json_decref(j);
    if (ok) {
        detail[0] = 0;
        return 0;
    }
    int m = snprintf(detail + n, cap - n, "%s", lead);
    if (m >= 0 && n + (size_t)m < cap) {
        wr_schema_format(vs,
                         total < WR_CONTRACTS_MAX_VIOLATIONS ? total : WR_CONTRACTS_MAX_VIOLATIONS,
                         total, detail + n + (size_t)m, cap - n - (size_t)m);
    }
    return -1;
}

int wr_contracts_validate_current(wr_contracts *c, const char *type, size_t type_len, int64_t from,
                                  const char *body, size_t len, char *detail, size_t cap)
{
    const contract *k = find(c, type, type_len);
    if (!k) {
        snprintf(detail, cap, "no contract for event type '%.*s'", (int)type_len, type);
        return -1;
    }
    int n = snprintf(detail, cap, "%s v%lld -> v%lld: ", k->type, (long long)from,
                     (long long)k->v[0].version);
    if (n < 0 || (size_t)n >= cap) {
        return -1;
    }
    return validate_body(k, body, len, "result", "the result does not validate: ", detail, cap,
                         (size_t)n);
}

int wr_contracts_check_upcasts(wr_contracts *c, struct wr_lua *L, FILE *fp, FILE *show)
{
    int problems = 0;
    for (size_t i = 0; i < c->n; i++) {
        const contract *k = &c->c[i];
        const json_t *entry = json_object_get(json_object_get(c->doc, "events"), k->type);
        const json_t *back = json_object_get(entry, "backwards_compatible_with");
        for (size_t s = 1; s < k->nv; s++) {
            const cversion *cv = &k->v[s];
            char p[1300], err[1024];
            int l, col;
            wr_lua_upcaster u = {
                .from = cv->version, .path = cv->upcaster, .src = cv->up_src, .len = cv->up_len};
            if (wr_lua_upcaster_compile(L, &u, err, sizeof err) != 0) {
                snprintf(p, sizeof p, "%s/upcaster", cv->ptr);
                locate(c, p, 1, &l, &col);
                print_at(fp, c->path, l, col, "upcaster of %s v%lld: %s", k->type,
                         (long long)cv->version, err);
                problems++;
                continue;
            }
            const json_t *ex = json_object_get(json_array_get(back, s - 1), "examples");
            size_t j;
            json_t *e;
            json_array_foreach((json_t *)ex, j, e)
            {
                wr_upcast_step steps[WR_CONTRACTS_MAX_CHAIN];
                wr_lua_upcaster ls[WR_CONTRACTS_MAX_CHAIN];
                int n = wr_contracts_chain(c, k->type, strlen(k->type), cv->version, steps,
                                           WR_CONTRACTS_MAX_CHAIN);
                for (int m = 0; m < n; m++) {
                    ls[m] = (wr_lua_upcaster){.from = steps[m].from,
                                              .path = steps[m].path,
                                              .src = steps[m].src,
                                              .len = steps[m].len};
                }
                char *body = json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY);
                char *out = NULL;
                size_t out_len = 0;
                int bad = body == NULL || n < 0;
                if (!bad && wr_lua_upcast(L, ls, n, k->type, body, strlen(body), &out, &out_len,
                                          err, sizeof err) != 0) {
                    bad = 1;
                } else if (!bad &&
                           wr_contracts_validate_current(c, k->type, strlen(k->type), cv->version,
                                                         out, out_len, err, sizeof err) != 0) {
                    bad = 1;
                }
                snprintf(p, sizeof p, "%s/examples/%zu", cv->ptr, j);
                locate(c, p, 1, &l, &col);
                if (bad) {
                    print_at(fp, c->path, l, col, "example %zu of %s v%lld does not upcast: %s", j,
                             k->type, (long long)cv->version, body ? err : "out of memory");
                    problems++;
                } else if (show) {
                    fprintf(show, "%s example %zu: v%lld -> v%lld valid: %s\n", k->type, j,
                            (long long)cv->version, (long long)k->v[0].version, out);
                }
                free(body);
                free(out);
            }
        }
    }
    return problems;
}

int wr_contracts_validate_outgoing(wr_contracts *c, const char *type, size_t type_len,
                                   const char *body, size_t len, char *detail, size_t cap)
{
    const contract *k = find(c, type, type_len);
    if (!k) {
        return 1;
    }
    int n = snprintf(detail, cap, "%s v%lld: ", k->type, (long long)k->v[0].version);
    if (n < 0 || (size_t)n >= cap) {
        return -1;
    }
    return validate_body(k, body, len, "body", "", detail, cap, (size_t)n);
}
