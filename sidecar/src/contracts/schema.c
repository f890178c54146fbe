/*
 * schema: compile a draft 7 JSON Schema once into a tree of nodes, then
 * validate instances by walking it (see schema.h for the keywords).
 *
 * Every schema object becomes one node that holds its keywords already
 * parsed: numbers as doubles, regular expressions compiled by PCRE2, enum and
 * const values as copies, subschemas as node pointers. Nodes are owned by the
 * wr_schema (a flat array, freed in one pass), so a $ref is just a pointer to
 * another node, cycles included. $ref targets are resolved after the tree is
 * built: a pointer into the document is followed on the JSON, and the value
 * found is compiled on first use (a map from JSON value to node keeps one
 * node per schema object).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "schema.h"

#include <math.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Type bits of the "type" keyword. */
enum {
    T_NULL = 1,
    T_BOOLEAN = 2,
    T_OBJECT = 4,
    T_ARRAY = 8,
    T_NUMBER = 16,
    T_STRING = 32,
    T_INTEGER = 64,
};

enum { F_NONE = 0, F_DATE_TIME, F_DATE, F_EMAIL, F_UUID, F_URI };

#define MAX_DEPTH 256           /* nesting of subschemas while validating */
#define PCRE_MATCH_LIMIT 100000 /* backtracking steps of one match */

typedef struct node node;

typedef struct {
    char *name;
    size_t len; /* names may hold NUL bytes */
    node *schema;
} prop;

typedef struct {
    pcre2_code *re;
    node *schema;
} patprop;

typedef struct {
    node **v;
    size_t n;
} nodelist;

struct node {
    int boolean;   /* -1: an object schema; 0 / 1: the schema false / true */
    unsigned type; /* T_* bits; 0 = any */
    char **required;
    size_t nrequired;
    prop *props;
    size_t nprops;
    patprop *patprops;
    size_t npatprops;
    node *additional; /* additionalProperties, NULL if absent */
    node *items;      /* items as one schema */
    nodelist tuple;   /* items as an array */
    int is_tuple;
    node *additional_items;
    json_t *enum_v; /* array, owned */
    json_t *const_v;
    int has_const;
    double minimum, maximum, xminimum, xmaximum;
    int has_min, has_max, has_xmin, has_xmax;
    long long min_len, max_len, min_items, max_items; /* -1 = absent */
    int unique;
    pcre2_code *pattern;
    char *pattern_src;
    int format;
    nodelist all_of, any_of, one_of;
    node *not_;
    node *ref;         /* resolved $ref */
    char *ref_pointer; /* the $ref text, until resolved */
    char *at;          /* JSON pointer of the $ref member, for errors */
};

struct wr_schema {
    node **nodes; /* every node, owned */
    size_t nnodes, cap;
    pcre2_match_context *mctx;
};

/* Compile-time state. */
typedef struct {
    wr_schema *s;
    const json_t *root;
    const json_t **keys; /* JSON value -> node, parallel to s->nodes */
    char path[512];      /* JSON pointer of the value being compiled */
    char *err_at;
    size_t at_cap;
    char *err;
    size_t err_cap;
    int failed;
} cstate;

static node *compile_node(cstate *c, const json_t *j);

/* --- small helpers ------------------------------------------------------- */

/* Append pointer segment SEG (LEN bytes, escaped as RFC 6901 says) to BUF
 * of CAP bytes; returns the old length, to restore with BUF[old] = 0. */
static size_t path_push(char *buf, size_t cap, const char *seg, size_t len)
{
    size_t old = strlen(buf), n = old;
    if (n + 1 < cap) {
        buf[n++] = '/';
    }
    for (size_t i = 0; i < len && n + 2 < cap; i++) {
        if (seg[i] == '~') {
            buf[n++] = '~';
            buf[n++] = '0';
        } else if (seg[i] == '/') {
            buf[n++] = '~';
            buf[n++] = '1';
        } else {
            buf[n++] = seg[i];
        }
    }
    buf[n] = 0;
    return old;
}

static void cfail(cstate *c, const char *member, const char *fmt, ...)
{
    va_list ap;
    if (c->failed) {
        return;
    }
    c->failed = 1;
    if (member) {
        size_t old = path_push(c->path, sizeof c->path, member, strlen(member));
        snprintf(c->err_at, c->at_cap, "%s", c->path);
        c->path[old] = 0;
    } else {
        snprintf(c->err_at, c->at_cap, "%s", c->path);
    }
    va_start(ap, fmt);
    vsnprintf(c->err, c->err_cap, fmt, ap);
    va_end(ap);
}

static size_t path_push_index(char *buf, size_t cap, size_t i)
{
    char num[24];
    int k = snprintf(num, sizeof num, "%zu", i);
    return path_push(buf, cap, num, (size_t)k);
}

static node *new_node(cstate *c, const json_t *j)
{
    wr_schema *s = c->s;
    if (s->nnodes == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 16;
        node **nv = realloc(s->nodes, ncap * sizeof *nv);
        const json_t **nk = realloc(c->keys, ncap * sizeof *nk);
        if (nv) {
            s->nodes = nv;
        }
        if (nk) {
            c->keys = nk;
        }
        if (!nv || !nk) {
            cfail(c, NULL, "out of memory");
            return NULL;
        }
        s->cap = ncap;
    }
    node *n = calloc(1, sizeof *n);
    if (!n) {
        cfail(c, NULL, "out of memory");
        return NULL;
    }
    n->boolean = -1;
    n->min_len = n->max_len = n->min_items = n->max_items = -1;
    s->nodes[s->nnodes] = n;
    c->keys[s->nnodes] = j;
    s->nnodes++;
    return n;
}

static void free_node(node *n)
{
    for (size_t i = 0; i < n->nrequired; i++) {
        free(n->required[i]);
    }
    free(n->required);
    for (size_t i = 0; i < n->nprops; i++) {
        free(n->props[i].name);
    }
    free(n->props);
    for (size_t i = 0; i < n->npatprops; i++) {
        pcre2_code_free(n->patprops[i].re);
    }
    free(n->patprops);
    free(n->tuple.v);
    json_decref(n->enum_v);
    json_decref(n->const_v);
    pcre2_code_free(n->pattern);
    free(n->pattern_src);
    free(n->all_of.v);
    free(n->any_of.v);
    free(n->one_of.v);
    free(n->ref_pointer);
    free(n->at);
    free(n);
}

void wr_schema_free(wr_schema *s)
{
    if (!s) {
        return;
    }
    for (size_t i = 0; i < s->nnodes; i++) {
        free_node(s->nodes[i]);
    }
    free(s->nodes);
    pcre2_match_context_free(s->mctx);
    free(s);
}

/* Compile member KEY's value J as a subschema. */
static node *sub(cstate *c, const char *key, const json_t *j)
{
    size_t old = path_push(c->path, sizeof c->path, key, strlen(key));
    node *n = compile_node(c, j);
    c->path[old] = 0;
    return n;
}

static int is_schema_value(const json_t *j)
{
    return json_is_object(j) || json_is_boolean(j);
}

/* A number keyword: any JSON number. */
static int get_number(cstate *c, const char *key, const json_t *v, double *out)
{
    if (!json_is_number(v)) {
        cfail(c, key, "%s must be a number", key);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

/* A count keyword: a non-negative integer (1.0 counts as 1). */
static int get_count(cstate *c, const char *key, const json_t *v, long long *out)
{
    double d = json_is_number(v) ? json_number_value(v) : -1;
    if (!json_is_number(v) || d < 0 || d != floor(d) || d > 9e15) {
        cfail(c, key, "%s must be a non-negative integer", key);
        return -1;
    }
    *out = (long long)d;
    return 0;
}

static int compile_list(cstate *c, const char *key, const json_t *v, nodelist *out)
{
    if (!json_is_array(v) || json_array_size(v) == 0) {
        cfail(c, key, "%s must be a non-empty array of schemas", key);
        return -1;
    }
    out->n = json_array_size(v);
    out->v = calloc(out->n, sizeof *out->v);
    if (!out->v) {
        cfail(c, key, "out of memory");
        return -1;
    }
    size_t old = path_push(c->path, sizeof c->path, key, strlen(key));
    for (size_t i = 0; i < out->n && !c->failed; i++) {
        size_t o2 = path_push_index(c->path, sizeof c->path, i);
        const json_t *e = json_array_get(v, i);
        if (!is_schema_value(e)) {
            cfail(c, NULL, "a schema must be an object or a boolean");
        } else {
            out->v[i] = compile_node(c, e);
        }
        c->path[o2] = 0;
    }
    c->path[old] = 0;
    return c->failed ? -1 : 0;
}

static pcre2_code *compile_regex(cstate *c, const char *member, const char *src)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED,
                      PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_ALT_BSUX, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(code, msg, sizeof msg);
        cfail(c, member, "invalid regular expression at offset %zu: %s", (size_t)off, (char *)msg);
    }
    return re;
}

/* --- keywords -------------------------------------------------------------- */

static const struct {
    const char *name;
    unsigned bit;
} type_names[] = {
    {"null", T_NULL},     {"boolean", T_BOOLEAN}, {"object", T_OBJECT},   {"array", T_ARRAY},
    {"number", T_NUMBER}, {"string", T_STRING},   {"integer", T_INTEGER},
};

static int type_bit(const char *name, unsigned *bit)
{
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++) {
        if (strcmp(type_names[i].name, name) == 0) {
            *bit = type_names[i].bit;
            return 0;
        }
    }
    return -1;
}

static int kw_type(cstate *c, node *n, const char *key, const json_t *v)
{
    unsigned bit;
    if (json_is_string(v)) {
        if (type_bit(json_string_value(v), &bit) != 0) {
            cfail(c, key, "unknown type '%s'", json_string_value(v));
            return -1;
        }
        n->type = bit;
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0) {
        cfail(c, key, "type must be a type name or a non-empty array of them");
        return -1;
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_string(e) || type_bit(json_string_value(e), &bit) != 0) {
            cfail(c, key, "unknown type %s%s%s", json_is_string(e) ? "'" : "",
                  json_is_string(e) ? json_string_value(e) : "(not a string)",
                  json_is_string(e) ? "'" : "");
            return -1;
        }
        n->type |= bit;
    }
    return 0;
}

static int kw_required(cstate *c, node *n, const char *key, const json_t *v)
{
    if (!json_is_array(v)) {
        cfail(c, key, "required must be an array of strings");
        return -1;
    }
    n->required = calloc(json_array_size(v) + 1, sizeof *n->required);
    if (!n->required) {
        cfail(c, key, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_string(e)) {
            cfail(c, key, "required must be an array of strings");
            return -1;
        }
        n->required[n->nrequired++] = strdup(json_string_value(e));
    }
    return 0;
}

/* properties (PATTERNS 0) or patternProperties (1): an object of schemas
 * under names or under regular expressions. */
static int schema_map(cstate *c, node *n, const char *key, const json_t *v, int patterns)
{
    const char *k;
    json_t *e;
    if (!json_is_object(v)) {
        cfail(c, key, "%s must be an object of schemas", key);
        return -1;
    }
    size_t cap = json_object_size(v) + 1;
    void *arr = patterns ? (void *)(n->patprops = calloc(cap, sizeof *n->patprops))
                         : (void *)(n->props = calloc(cap, sizeof *n->props));
    if (!arr) {
        cfail(c, key, "out of memory");
        return -1;
    }
    size_t old = path_push(c->path, sizeof c->path, key, strlen(key));
    json_object_foreach((json_t *)v, k, e)
    {
        if (c->failed) {
            break;
        }
        if (!is_schema_value(e)) {
            cfail(c, k, "a schema must be an object or a boolean");
            break;
        }
        if (patterns) {
            patprop *p = &n->patprops[n->npatprops];
            if (!(p->re = compile_regex(c, k, k))) {
                break;
            }
            n->npatprops++;
            p->schema = sub(c, k, e);
        } else {
            prop *p = &n->props[n->nprops++];
            p->len = strlen(k);
            p->name = strdup(k);
            p->schema = sub(c, k, e);
        }
    }
    c->path[old] = 0;
    return c->failed ? -1 : 0;
}

static int kw_properties(cstate *c, node *n, const char *key, const json_t *v)
{
    return schema_map(c, n, key, v, 0);
}

static int kw_pattern_properties(cstate *c, node *n, const char *key, const json_t *v)
{
    return schema_map(c, n, key, v, 1);
}

/* A keyword whose value is one schema (additionalProperties, not, ...). */
static int schema_member(cstate *c, const char *key, const json_t *v, node **out)
{
    if (!is_schema_value(v)) {
        cfail(c, key, "%s must be a schema (an object or a boolean)", key);
        return -1;
    }
    *out = sub(c, key, v);
    return c->failed ? -1 : 0;
}

static int kw_items(cstate *c, node *n, const char *key, const json_t *v)
{
    if (json_is_array(v)) {
        n->is_tuple = 1;
        if (json_array_size(v) == 0) {
            return 0;
        }
        return compile_list(c, key, v, &n->tuple);
    }
    return schema_member(c, key, v, &n->items);
}

static int kw_enum(cstate *c, node *n, const char *key, const json_t *v)
{
    if (!json_is_array(v)) {
        cfail(c, key, "enum must be an array");
        return -1;
    }
    n->enum_v = json_deep_copy(v);
    return 0;
}

static int kw_const(cstate *c, node *n, const char *key, const json_t *v)
{
    (void)c;
    (void)key;
    n->const_v = json_deep_copy(v);
    n->has_const = 1;
    return 0;
}

static int kw_unique(cstate *c, node *n, const char *key, const json_t *v)
{
    if (!json_is_boolean(v)) {
        cfail(c, key, "uniqueItems must be true or false");
        return -1;
    }
    n->unique = json_is_true(v);
    return 0;
}

static int kw_pattern(cstate *c, node *n, const char *key, const json_t *v)
{
    if (!json_is_string(v)) {
        cfail(c, key, "pattern must be a string");
        return -1;
    }
    n->pattern = compile_regex(c, key, json_string_value(v));
    n->pattern_src = strdup(json_string_value(v));
    return n->pattern ? 0 : -1;
}

static const char *const format_names[] = {"", "date-time", "date", "email", "uuid", "uri"};

static int kw_format(cstate *c, node *n, const char *key, const json_t *v)
{
    if (!json_is_string(v)) {
        cfail(c, key, "format must be a string");
        return -1;
    }
    for (int f = F_DATE_TIME; f <= F_URI; f++) {
        if (strcmp(format_names[f], json_string_value(v)) == 0) {
            n->format = f;
            return 0;
        }
    }
    cfail(c, key, "unsupported format '%s' (date-time, date, email, uuid, uri are checked)",
          json_string_value(v));
    return -1;
}

/* definitions / $defs: each member is compiled now, so its errors show at
 * load even when no $ref uses it. */
static int kw_defs(cstate *c, node *n, const char *key, const json_t *v)
{
    const char *k;
    json_t *e;
    (void)n;
    if (!json_is_object(v)) {
        cfail(c, key, "%s must be an object of schemas", key);
        return -1;
    }
    size_t old = path_push(c->path, sizeof c->path, key, strlen(key));
    json_object_foreach((json_t *)v, k, e)
    {
        if (!is_schema_value(e)) {
            cfail(c, k, "a schema must be an object or a boolean");
        } else {
            sub(c, k, e);
        }
        if (c->failed) {
            break;
        }
    }
    c->path[old] = 0;
    return c->failed ? -1 : 0;
}

/* How a keyword is compiled: by its own function, or by what its value is
 * into the node member at `at`. */
typedef enum {
    KW_FN,         /* fn(c, n, key, v) */
    KW_NUMBER,     /* any number: a double at `at`, and 1 in the int at `given` */
    KW_COUNT,      /* a non-negative integer: a long long at `at` */
    KW_SCHEMA,     /* one schema: a node * at `at` */
    KW_LIST,       /* a non-empty array of schemas: a nodelist at `at` */
    KW_ANNOTATION, /* anything: it does not constrain the instance */
} kw_kind;

typedef int (*kw_fn)(cstate *c, node *n, const char *key, const json_t *v);

typedef struct {
    const char *name;
    kw_kind kind;
    size_t at, given; /* offsets in node (see kw_kind) */
    kw_fn fn;         /* KW_FN */
} keyword;

/* The keyword table: name, how to compile it. */
#define NODE(member) offsetof(node, member)
static const keyword keywords[] = {
    {"type", KW_FN, 0, 0, kw_type},
    {"required", KW_FN, 0, 0, kw_required},
    {"properties", KW_FN, 0, 0, kw_properties},
    {"patternProperties", KW_FN, 0, 0, kw_pattern_properties},
    {"additionalProperties", KW_SCHEMA, NODE(additional), 0, NULL},
    {"items", KW_FN, 0, 0, kw_items},
    {"additionalItems", KW_SCHEMA, NODE(additional_items), 0, NULL},
    {"enum", KW_FN, 0, 0, kw_enum},
    {"const", KW_FN, 0, 0, kw_const},
    {"minimum", KW_NUMBER, NODE(minimum), NODE(has_min), NULL},
    {"maximum", KW_NUMBER, NODE(maximum), NODE(has_max), NULL},
    {"exclusiveMinimum", KW_NUMBER, NODE(xminimum), NODE(has_xmin), NULL},
    {"exclusiveMaximum", KW_NUMBER, NODE(xmaximum), NODE(has_xmax), NULL},
    {"minLength", KW_COUNT, NODE(min_len), 0, NULL},
    {"maxLength", KW_COUNT, NODE(max_len), 0, NULL},
    {"pattern", KW_FN, 0, 0, kw_pattern},
    {"minItems", KW_COUNT, NODE(min_items), 0, NULL},
    {"maxItems", KW_COUNT, NODE(max_items), 0, NULL},
    {"uniqueItems", KW_FN, 0, 0, kw_unique},
    {"format", KW_FN, 0, 0, kw_format},
    {"allOf", KW_LIST, NODE(all_of), 0, NULL},
    {"anyOf", KW_LIST, NODE(any_of), 0, NULL},
    {"oneOf", KW_LIST, NODE(one_of), 0, NULL},
    {"not", KW_SCHEMA, NODE(not_), 0, NULL},
    {"definitions", KW_FN, 0, 0, kw_defs},
    {"$defs", KW_FN, 0, 0, kw_defs},
    {"title", KW_ANNOTATION, 0, 0, NULL},
    {"description", KW_ANNOTATION, 0, 0, NULL},
    {"default", KW_ANNOTATION, 0, 0, NULL},
    {"examples", KW_ANNOTATION, 0, 0, NULL},
    {"$comment", KW_ANNOTATION, 0, 0, NULL},
    {"$schema", KW_ANNOTATION, 0, 0, NULL},
    {"readOnly", KW_ANNOTATION, 0, 0, NULL},
    {"writeOnly", KW_ANNOTATION, 0, 0, NULL},
};
#undef NODE

static const keyword *find_keyword(const char *name)
{
    for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++) {
        if (strcmp(keywords[i].name, name) == 0) {
            return &keywords[i];
        }
    }
    return NULL;
}

/* Compile keyword KW (member KEY, value V) into N: 0, or -1 after cfail. */
static int compile_keyword(cstate *c, node *n, const keyword *kw, const char *key, const json_t *v)
{
    char *at = (char *)n + kw->at;
    switch (kw->kind) {
    case KW_FN:
        return kw->fn(c, n, key, v);
    case KW_NUMBER:
        *(int *)((char *)n + kw->given) = 1;
        return get_number(c, key, v, (double *)at);
    case KW_COUNT:
        return get_count(c, key, v, (long long *)at);
    case KW_SCHEMA:
        return schema_member(c, key, v, (node **)at);
    case KW_LIST:
        return compile_list(c, key, v, (nodelist *)at);
    case KW_ANNOTATION:
        break;
    }
    return 0;
}

/* Members that may stand beside a $ref: they do not constrain the instance. */
static int ref_sibling_ok(const keyword *kw)
{
    return kw->kind == KW_ANNOTATION || kw->fn == kw_defs;
}

/* Compile schema J at c->path into a node (or return the node J already
 * has). NULL after a failure (c->failed set). */
static node *compile_node(cstate *c, const json_t *j)
{
    for (size_t i = 0; i < c->s->nnodes; i++) {
        if (c->keys[i] == j) {
            return c->s->nodes[i];
        }
    }
    node *n = new_node(c, j);
    if (!n) {
        return NULL;
    }
    if (json_is_boolean(j)) {
        n->boolean = json_is_true(j);
        return n;
    }
    if (!json_is_object(j)) {
        cfail(c, NULL, "a schema must be an object or a boolean");
        return NULL;
    }
    const char *k;
    json_t *v;
    const json_t *ref = json_object_get(j, "$ref");
    if (ref) {
        if (!json_is_string(ref)) {
            cfail(c, "$ref", "$ref must be a string");
            return NULL;
        }
        if (json_string_value(ref)[0] != '#') {
            cfail(c, "$ref", "only local references (#...) are supported, not '%s'",
                  json_string_value(ref));
            return NULL;
        }
        n->ref_pointer = strdup(json_string_value(ref) + 1);
        size_t old = path_push(c->path, sizeof c->path, "$ref", 4);
        n->at = strdup(c->path);
        c->path[old] = 0;
    }
    json_object_foreach((json_t *)j, k, v)
    {
        if (strcmp(k, "$ref") == 0) {
            continue;
        }
        if (strcmp(k, "$id") == 0) {
            if (j != c->root) {
                cfail(c, k, "$id is supported only at the root (references are local)");
                return NULL;
            }
            continue;
        }
        const keyword *kw = find_keyword(k);
        if (!kw) {
            cfail(c, k, "unsupported keyword '%s'", k);
            return NULL;
        }
        if (ref && !ref_sibling_ok(kw)) {
            cfail(c, k, "'%s' beside $ref would be ignored (draft 7): use allOf", k);
            return NULL;
        }
        if (compile_keyword(c, n, kw, k, v) != 0 || c->failed) {
            return NULL;
        }
    }
    return n;
}

/* Follow JSON pointer P (URI fragment form: percent-encoded, "" = root)
 * from ROOT. NULL when it leads nowhere. */
static const json_t *resolve_pointer(const json_t *root, const char *p)
{
    const json_t *cur = root;
    char seg[256];
    while (*p) {
        if (*p != '/') {
            return NULL;
        }
        p++;
        size_t n = 0;
        while (*p && *p != '/') {
            char ch = *p++;
            if (ch == '%' && p[0] && p[1]) {
                char hex[3] = {p[0], p[1], 0};
                ch = (char)strtol(hex, NULL, 16);
                p += 2;
            } else if (ch == '~' && (*p == '0' || *p == '1')) {
                ch = *p++ == '0' ? '~' : '/';
            }
            if (n + 1 >= sizeof seg) {
                return NULL;
            }
            seg[n++] = ch;
        }
        seg[n] = 0;
        if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else if (json_is_array(cur)) {
            char *end;
            unsigned long i = strtoul(seg, &end, 10);
            cur = (*end || !n) ? NULL : json_array_get(cur, i);
        } else {
            cur = NULL;
        }
        if (!cur) {
            return NULL;
        }
    }
    return cur;
}

/* Resolve every $ref, compiling targets not met in the walk (a pointer
 * into an enum value, say, or into an unknown member). */
static int resolve_refs(cstate *c)
{
    for (size_t i = 0; i < c->s->nnodes && !c->failed; i++) {
        node *n = c->s->nodes[i];
        if (!n->ref_pointer || n->ref) {
            continue;
        }
        const json_t *t = resolve_pointer(c->root, n->ref_pointer);
        if (!t) {
            snprintf(c->err_at, c->at_cap, "%s", n->at);
            snprintf(c->err, c->err_cap, "$ref '#%s' points to nothing in this document",
                     n->ref_pointer);
            c->failed = 1;
            return -1;
        }
        snprintf(c->path, sizeof c->path, "%s", n->ref_pointer);
        n->ref = compile_node(c, t);
    }
    return c->failed ? -1 : 0;
}

wr_schema *wr_schema_compile(const json_t *root, char *err_at, size_t at_cap, char *err,
                             size_t err_cap)
{
    cstate c;
    memset(&c, 0, sizeof c);
    c.err_at = err_at;
    c.at_cap = at_cap;
    c.err = err;
    c.err_cap = err_cap;
    c.root = root;
    if (at_cap) {
        err_at[0] = 0;
    }
    if (err_cap) {
        err[0] = 0;
    }
    c.s = calloc(1, sizeof *c.s);
    if (!c.s) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    c.s->mctx = pcre2_match_context_create(NULL);
    if (c.s->mctx) {
        pcre2_set_match_limit(c.s->mctx, PCRE_MATCH_LIMIT);
    }
    if (!is_schema_value(root)) {
        cfail(&c, NULL, "a schema must be an object or a boolean");
    } else {
        compile_node(&c, root);
        resolve_refs(&c);
    }
    free(c.keys);
    if (c.failed) {
        wr_schema_free(c.s);
        return NULL;
    }
    return c.s;
}

/* --- equality and formats -------------------------------------------------- */

int wr_schema_json_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b)) {
            return json_integer_value(a) == json_integer_value(b);
        }
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b)) {
        return 0;
    }
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b)) {
            return 0;
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!wr_schema_json_equal(json_array_get(a, i), json_array_get(b, i))) {
                return 0;
            }
        }
        return 1;
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        if (json_object_size(a) != json_object_size(b)) {
            return 0;
        }
        json_object_foreach((json_t *)a, k, v)
        {
            const json_t *w = json_object_get(b, k);
            if (!w || !wr_schema_json_equal(v, w)) {
                return 0;
            }
        }
        return 1;
    }
    default:
        return 1; /* true, false, null */
    }
}

static int digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }
    return 1;
}

static int num(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* RFC 3339 full-date: YYYY-MM-DD, a day that exists. */
static int is_date(const char *s, size_t len)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (len != 10 || s[4] != '-' || s[7] != '-' || !digits(s, 4) || !digits(s + 5, 2) ||
        !digits(s + 8, 2)) {
        return 0;
    }
    int y = num(s, 4), m = num(s + 5, 2), d = num(s + 8, 2);
    if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1]) {
        return 0;
    }
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return !(m == 2 && d == 29 && !leap);
}

/* RFC 3339 date-time: full-date "T" HH:MM:SS[.frac] (Z | +HH:MM | -HH:MM),
 * T and Z in either case; second 60 is a leap second. */
static int is_date_time(const char *s, size_t len)
{
    if (len < 20 || !is_date(s, 10) || (s[10] != 'T' && s[10] != 't')) {
        return 0;
    }
    const char *t = s + 11;
    size_t n = len - 11;
    if (n < 9 || t[2] != ':' || t[5] != ':' || !digits(t, 2) || !digits(t + 3, 2) ||
        !digits(t + 6, 2)) {
        return 0;
    }
    if (num(t, 2) > 23 || num(t + 3, 2) > 59 || num(t + 6, 2) > 60) {
        return 0;
    }
    size_t i = 8;
    if (t[i] == '.') {
        size_t f = ++i;
        while (i < n && t[i] >= '0' && t[i] <= '9') {
            i++;
        }
        if (i == f) {
            return 0;
        }
    }
    if (i == n - 1 && (t[i] == 'Z' || t[i] == 'z')) {
        return 1;
    }
    if (n - i != 6 || (t[i] != '+' && t[i] != '-') || t[i + 3] != ':' || !digits(t + i + 1, 2) ||
        !digits(t + i + 4, 2)) {
        return 0;
    }
    return num(t + i + 1, 2) <= 23 && num(t + i + 4, 2) <= 59;
}

static int is_atext(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+/=?^_`{|}~-", ch));
}

/* An address as RFC 5321 writes its common form: dot-atom "@" domain, no
 * quoted local parts or address literals. */
static int is_email(const char *s, size_t len)
{
    const char *at = memchr(s, '@', len);
    if (!at || at == s || at == s + len - 1) {
        return 0;
    }
    size_t llen = (size_t)(at - s);
    for (size_t i = 0; i < llen; i++) {
        if (s[i] == '.') {
            if (i == 0 || i == llen - 1 || s[i + 1] == '.') {
                return 0;
            }
        } else if (!is_atext((unsigned char)s[i])) {
            return 0;
        }
    }
    const char *d = at + 1;
    size_t dlen = len - llen - 1, label = 0;
    for (size_t i = 0; i < dlen; i++) {
        unsigned char ch = (unsigned char)d[i];
        if (ch == '.') {
            if (label == 0 || d[i - 1] == '-') {
                return 0;
            }
            label = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || (ch == '-' && label > 0)) {
            label++;
        } else {
            return 0;
        }
    }
    return label > 0 && d[dlen - 1] != '-';
}

static int is_hex(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int is_uuid(const char *s, size_t len)
{
    if (len != 36) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23 ? s[i] != '-' : !is_hex((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

/* RFC 3986 character classes. */
static int uri_unreserved(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("-._~", ch));
}

static int uri_subdelim(unsigned char ch)
{
    return ch && strchr("!$&'()*+,;=", ch);
}

/* Check S[*I .. END) made only of unreserved, sub-delims, pct-encoded and
 * the characters in EXTRA; advances *I. */
static int uri_run(const char *s, size_t end, size_t *i, const char *extra)
{
    for (; *i < end; (*i)++) {
        unsigned char ch = (unsigned char)s[*i];
        if (ch == '%') {
            if (*i + 2 >= end || !is_hex((unsigned char)s[*i + 1]) ||
                !is_hex((unsigned char)s[*i + 2])) {
                return 0;
            }
            *i += 2;
        } else if (!uri_unreserved(ch) && !uri_subdelim(ch) && !(ch && strchr(extra, ch))) {
            return 0;
        }
    }
    return 1;
}

/* An absolute URI (RFC 3986 section 3): scheme ":" hier-part [ "?" query ]
 * [ "#" fragment ]; no relative references. */
static int is_uri(const char *s, size_t len)
{
    size_t i = 0;
    if (len == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) {
        return 0;
    }
    while (i < len && s[i] != ':') {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '-' || ch == '.')) {
            return 0;
        }
        i++;
    }
    if (i == len) {
        return 0;
    }
    i++;
    size_t q = i;
    while (q < len && s[q] != '?' && s[q] != '#') {
        q++;
    }
    if (len - i >= 2 && s[i] == '/' && s[i + 1] == '/') {
        i += 2;
        size_t a_end = i;
        while (a_end < q && s[a_end] != '/') {
            a_end++;
        }
        size_t at = a_end;
        for (size_t k = i; k < a_end; k++) {
            if (s[k] == '@') {
                at = k;
            }
        }
        if (at != a_end) {
            if (!uri_run(s, at, &i, ":")) {
                return 0;
            }
            i = at + 1;
        }
        if (i < a_end && s[i] == '[') {
            size_t close = i;
            while (close < a_end && s[close] != ']') {
                close++;
            }
            if (close == a_end) {
                return 0;
            }
            for (size_t k = i + 1; k < close; k++) {
                if (!is_hex((unsigned char)s[k]) && s[k] != ':' && s[k] != '.' && s[k] != 'v') {
                    return 0;
                }
            }
            i = close + 1;
        } else {
            size_t h = i;
            while (h < a_end && s[h] != ':') {
                h++;
            }
            if (!uri_run(s, h, &i, "")) {
                return 0;
            }
        }
        if (i < a_end) {
            if (s[i] != ':' || !digits(s + i + 1, a_end - i - 1)) {
                return 0;
            }
        }
        i = a_end;
    }
    if (!uri_run(s, q, &i, ":@/")) {
        return 0;
    }
    if (i < len && s[i] == '?') {
        i++;
        size_t f = i;
        while (f < len && s[f] != '#') {
            f++;
        }
        if (!uri_run(s, f, &i, ":@/?")) {
            return 0;
        }
    }
    if (i < len && s[i] == '#') {
        i++;
        if (!uri_run(s, len, &i, ":@/?")) {
            return 0;
        }
    }
    return i == len;
}

int wr_schema_check_format(const char *name, const char *s, size_t len)
{
    if (strcmp(name, "date-time") == 0) {
        return is_date_time(s, len);
    }
    if (strcmp(name, "date") == 0) {
        return is_date(s, len);
    }
    if (strcmp(name, "email") == 0) {
        return is_email(s, len);
    }
    if (strcmp(name, "uuid") == 0) {
        return is_uuid(s, len);
    }
    if (strcmp(name, "uri") == 0) {
        return is_uri(s, len);
    }
    return -1;
}

/* --- validation ---------------------------------------------------------- */

typedef struct {
    const wr_schema *s;
    wr_schema_violation *out; /* NULL: stop at the first failure */
    size_t cap, total;
    char path[512]; /* JSON pointer of the instance value */
    int depth;
    pcre2_match_data *md;
} vstate;

static int vnode(vstate *v, const node *n, const json_t *j);

/* Copy SRC into DST of CAP bytes, cut to fit. */
static void copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(dst, src, n);
    dst[n] = 0;
}

static int violation(vstate *v, const char *rule, const char *fmt, ...)
{
    if (v->out && v->total < v->cap) {
        wr_schema_violation *o = &v->out[v->total];
        va_list ap;
        copy_cut(o->where, sizeof o->where, v->path);
        copy_cut(o->rule, sizeof o->rule, rule);
        va_start(ap, fmt);
        vsnprintf(o->found, sizeof o->found, fmt, ap);
        va_end(ap);
    }
    v->total++;
    return 0;
}

static const char *type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static int is_integral(const json_t *j)
{
    if (json_is_integer(j)) {
        return 1;
    }
    double d = json_real_value(j);
    return json_is_real(j) && isfinite(d) && d == floor(d);
}

static unsigned type_of(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return T_OBJECT;
    case JSON_ARRAY:
        return T_ARRAY;
    case JSON_STRING:
        return T_STRING;
    case JSON_INTEGER:
        return T_NUMBER | T_INTEGER;
    case JSON_REAL:
        return T_NUMBER | (is_integral(j) ? T_INTEGER : 0);
    case JSON_TRUE:
    case JSON_FALSE:
        return T_BOOLEAN;
    default:
        return T_NULL;
    }
}

static void type_list(unsigned bits, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++) {
        if (bits & type_names[i].bit) {
            int k = snprintf(buf + n, cap - n, "%s%s", n ? "|" : "", type_names[i].name);
            if (k < 0 || (size_t)k >= cap - n) {
                return;
            }
            n += (size_t)k;
        }
    }
}

/* A short rendering of value J for a violation: numbers and short strings
 * as they are, anything else by its type. */
static const char *show(const json_t *j, char *buf, size_t cap)
{
    if (json_is_integer(j)) {
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
    } else if (json_is_real(j)) {
        snprintf(buf, cap, "%.17g", json_real_value(j));
    } else if (json_is_string(j) && json_string_length(j) <= 40) {
        snprintf(buf, cap, "\"%s\"", json_string_value(j));
    } else if (json_is_string(j)) {
        snprintf(buf, cap, "a string of %zu bytes", json_string_length(j));
    } else {
        snprintf(buf, cap, "%s", type_name(j));
    }
    return buf;
}

static size_t utf8_len(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    }
    return c;
}

/* A quiet check of J against N (no violations recorded, path kept). */
static int quiet(vstate *v, const node *n, const json_t *j)
{
    vstate q = *v;
    q.out = NULL;
    q.total = 0;
    return vnode(&q, n, j);
}

/* Match RE against S; 1 matched, 0 not, -1 too complex or an error. */
static int re_search(vstate *v, const pcre2_code *re, const char *s, size_t len)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)s, len, 0, 0, v->md, v->s->mctx);
    if (rc >= 0) {
        return 1;
    }
    return rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
}

#define FAIL_FAST()                                                                                \
    do {                                                                                           \
        ok = 0;                                                                                    \
        if (!v->out) {                                                                             \
            return 0;                                                                              \
        }                                                                                          \
    } while (0)

static int v_object(vstate *v, const node *n, const json_t *j)
{
    int ok = 1;
    for (size_t i = 0; i < n->nrequired; i++) {
        if (!json_object_get(j, n->required[i])) {
            violation(v, "required", "missing '%s'", n->required[i]);
            FAIL_FAST();
        }
    }
    if (!n->nprops && !n->npatprops && !n->additional) {
        return ok;
    }
    const char *k;
    json_t *e;
    json_object_foreach((json_t *)j, k, e)
    {
        size_t klen = strlen(k), old = path_push(v->path, sizeof v->path, k, klen);
        int matched = 0;
        for (size_t i = 0; i < n->nprops; i++) {
            if (strcmp(n->props[i].name, k) == 0) {
                matched = 1;
                if (!vnode(v, n->props[i].schema, e)) {
                    ok = 0;
                }
            }
        }
        for (size_t i = 0; i < n->npatprops; i++) {
            int m = re_search(v, n->patprops[i].re, k, klen);
            if (m < 0) {
                violation(v, "patternProperties", "name too complex to match");
                ok = 0;
            } else if (m) {
                matched = 1;
                if (!vnode(v, n->patprops[i].schema, e)) {
                    ok = 0;
                }
            }
        }
        if (!matched && n->additional) {
            if (n->additional->boolean == 0) {
                violation(v, "additionalProperties", "not allowed");
                ok = 0;
            } else if (!vnode(v, n->additional, e)) {
                ok = 0;
            }
        }
        v->path[old] = 0;
        if (!ok && !v->out) {
            return 0;
        }
    }
    return ok;
}

static int v_array(vstate *v, const node *n, const json_t *j)
{
    int ok = 1;
    size_t len = json_array_size(j);
    if (n->min_items >= 0 && (long long)len < n->min_items) {
        violation(v, "minItems", "%zu items < %lld", len, n->min_items);
        FAIL_FAST();
    }
    if (n->max_items >= 0 && (long long)len > n->max_items) {
        violation(v, "maxItems", "%zu items > %lld", len, n->max_items);
        FAIL_FAST();
    }
    if (n->unique) {
        for (size_t a = 0; a < len && ok; a++) {
            for (size_t b = a + 1; b < len; b++) {
                if (wr_schema_json_equal(json_array_get(j, a), json_array_get(j, b))) {
                    violation(v, "uniqueItems", "items %zu and %zu are equal", a, b);
                    FAIL_FAST();
                    break;
                }
            }
        }
    }
    for (size_t i = 0; i < len; i++) {
        const node *s = NULL;
        if (n->is_tuple) {
            s = i < n->tuple.n ? n->tuple.v[i] : n->additional_items;
        } else {
            s = n->items;
        }
        if (!s) {
            continue;
        }
        size_t old = path_push_index(v->path, sizeof v->path, i);
        if (s->boolean == 0 && n->is_tuple && i >= n->tuple.n) {
            violation(v, "additionalItems", "not allowed");
            ok = 0;
        } else if (!vnode(v, s, json_array_get(j, i))) {
            ok = 0;
        }
        v->path[old] = 0;
        if (!ok && !v->out) {
            return 0;
        }
    }
    return ok;
}

static int v_number(vstate *v, const node *n, const json_t *j)
{
    int ok = 1;
    double d = json_number_value(j);
    char b[40];
    if (n->has_min && d < n->minimum) {
        violation(v, "minimum", "%s < %.17g", show(j, b, sizeof b), n->minimum);
        FAIL_FAST();
    }
    if (n->has_max && d > n->maximum) {
        violation(v, "maximum", "%s > %.17g", show(j, b, sizeof b), n->maximum);
        FAIL_FAST();
    }
    if (n->has_xmin && d <= n->xminimum) {
        violation(v, "exclusiveMinimum", "%s <= %.17g", show(j, b, sizeof b), n->xminimum);
        FAIL_FAST();
    }
    if (n->has_xmax && d >= n->xmaximum) {
        violation(v, "exclusiveMaximum", "%s >= %.17g", show(j, b, sizeof b), n->xmaximum);
        FAIL_FAST();
    }
    return ok;
}

static int v_string(vstate *v, const node *n, const json_t *j)
{
    int ok = 1;
    const char *s = json_string_value(j);
    size_t blen = json_string_length(j);
    if (n->min_len >= 0 || n->max_len >= 0) {
        size_t len = utf8_len(s, blen);
        if (n->min_len >= 0 && (long long)len < n->min_len) {
            violation(v, "minLength", "length %zu < %lld", len, n->min_len);
            FAIL_FAST();
        }
        if (n->max_len >= 0 && (long long)len > n->max_len) {
            violation(v, "maxLength", "length %zu > %lld", len, n->max_len);
            FAIL_FAST();
        }
    }
    if (n->pattern) {
        int m = re_search(v, n->pattern, s, blen);
        char b[64];
        if (m < 0) {
            violation(v, "pattern", "too complex to match /%s/", n->pattern_src);
            FAIL_FAST();
        } else if (!m) {
            violation(v, "pattern", "%s does not match /%s/", show(j, b, sizeof b), n->pattern_src);
            FAIL_FAST();
        }
    }
    if (n->format && wr_schema_check_format(format_names[n->format], s, blen) != 1) {
        char b[64];
        violation(v, "format", "%s is not a %s", show(j, b, sizeof b), format_names[n->format]);
        FAIL_FAST();
    }
    return ok;
}

static int vnode(vstate *v, const node *n, const json_t *j)
{
    int ok = 1;
    char b[64];
    if (n->boolean >= 0) {
        if (!n->boolean) {
            violation(v, "false", "no value is allowed here");
        }
        return n->boolean;
    }
    if (++v->depth > MAX_DEPTH) {
        v->depth--;
        violation(v, "$ref", "schemas nested deeper than %d", MAX_DEPTH);
        return 0;
    }
    if (n->ref) {
        ok = vnode(v, n->ref, j);
        v->depth--;
        return ok;
    }
    unsigned t = type_of(j);
    if (n->type && !(n->type & t)) {
        char want[80];
        type_list(n->type, want, sizeof want);
        violation(v, "type", "%s, not %s", type_name(j), want);
        v->depth--;
        return 0; /* the other checks would only repeat it */
    }
    if (n->enum_v) {
        size_t i;
        for (i = 0; i < json_array_size(n->enum_v); i++) {
            if (wr_schema_json_equal(json_array_get(n->enum_v, i), j)) {
                break;
            }
        }
        if (i == json_array_size(n->enum_v)) {
            violation(v, "enum", "%s is not one of the %zu values", show(j, b, sizeof b),
                      json_array_size(n->enum_v));
            ok = 0;
        }
    }
    if (ok && n->has_const && !wr_schema_json_equal(n->const_v, j)) {
        violation(v, "const", "%s is not the constant", show(j, b, sizeof b));
        ok = 0;
    }
    if ((ok || v->out) && (t & T_OBJECT) && !v_object(v, n, j)) {
        ok = 0;
    }
    if ((ok || v->out) && (t & T_ARRAY) && !v_array(v, n, j)) {
        ok = 0;
    }
    if ((ok || v->out) && (t & T_NUMBER) && !v_number(v, n, j)) {
        ok = 0;
    }
    if ((ok || v->out) && (t & T_STRING) && !v_string(v, n, j)) {
        ok = 0;
    }
    for (size_t i = 0; i < n->all_of.n && (ok || v->out); i++) {
        if (!vnode(v, n->all_of.v[i], j)) {
            ok = 0;
        }
    }
    if ((ok || v->out) && n->any_of.n) {
        size_t i;
        for (i = 0; i < n->any_of.n; i++) {
            if (quiet(v, n->any_of.v[i], j)) {
                break;
            }
        }
        if (i == n->any_of.n) {
            violation(v, "anyOf", "matches none of the %zu schemas", n->any_of.n);
            ok = 0;
        }
    }
    if ((ok || v->out) && n->one_of.n) {
        size_t hits = 0, first = 0, second = 0;
        for (size_t i = 0; i < n->one_of.n && hits < 2; i++) {
            if (quiet(v, n->one_of.v[i], j)) {
                if (hits++ == 0) {
                    first = i;
                } else {
                    second = i;
                }
            }
        }
        if (hits == 0) {
            violation(v, "oneOf", "matches none of the %zu schemas", n->one_of.n);
            ok = 0;
        } else if (hits > 1) {
            violation(v, "oneOf", "matches schemas %zu and %zu, not exactly one", first, second);
            ok = 0;
        }
    }
    if ((ok || v->out) && n->not_ && quiet(v, n->not_, j)) {
        violation(v, "not", "matches the schema it must not");
        ok = 0;
    }
    v->depth--;
    return ok;
}

int wr_schema_validate(const wr_schema *s, const json_t *instance, wr_schema_violation *out,
                       size_t cap, size_t *total)
{
    vstate v;
    memset(&v, 0, sizeof v);
    v.s = s;
    v.out = out;
    v.cap = out ? cap : 0;
    v.md = pcre2_match_data_create(1, NULL);
    int ok = v.md && vnode(&v, s->nodes[0], instance);
    if (!v.md) {
        violation(&v, "memory", "out of memory");
    }
    pcre2_match_data_free(v.md);
    if (total) {
        *total = v.total;
    }
    return ok;
}

size_t wr_schema_format(const wr_schema_violation *v, size_t n, size_t total, char *buf, size_t cap)
{
    size_t len = 0;
    if (cap == 0) {
        return 0;
    }
    buf[0] = 0;
    size_t shown = 0;
    for (size_t i = 0; i < n; i++) {
        char one[400];
        int k = snprintf(one, sizeof one, "%s%s: %s: %s", i ? "; " : "",
                         v[i].where[0] ? v[i].where : "/", v[i].rule, v[i].found);
        /* keep room for the "(+K more)" tail */
        if (k < 0 || len + (size_t)k + 20 >= cap) {
            break;
        }
        memcpy(buf + len, one, (size_t)k + 1);
        len += (size_t)k;
        shown++;
    }
    if (shown < total) {
        int k = snprintf(buf + len, cap - len, "%s(+%zu more)", shown ? "; " : "", total - shown);
        if (k > 0) {
            len += (size_t)k < cap - len ? (size_t)k : cap - len - 1;
        }
    }
    return len;
}
