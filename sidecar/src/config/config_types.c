/*
 * config_types.c: what each field type means.
 *
 * One ops record per field type: how a scalar (or a YAML node, for lists
 * and mappings) is read into the field, what the type expects (the words in
 * "expected ..." messages), how an unset value is marked and recognised,
 * how a value is copied from the defaults, what the reference's type column
 * says, and how the value is freed. Adding a field type means adding one
 * record here, and nothing else in the module.
 */
/* realpath() is XSI: glibc hides it under plain _POSIX_C_SOURCE. */
#define _XOPEN_SOURCE 700

#include "config_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "strutil.h"
#include "units.h"

/* Replace the char * at P with TEXT copied; false only when out of memory. */
static bool set_string(char **p, const char *text)
{
    char *copy = strdup(text);
    if (copy == NULL) {
        return false;
    }
    free(*p);
    *p = copy;
    return true;
}

/* A JSON path for idempotency.key: names of [A-Za-z0-9_-], one or more, joined by '.'. */
static bool valid_json_path(const char *p)
{
    static const char name[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    for (;;) {
        size_t n = strspn(p, name);
        if (n == 0) {
            return false;
        }
        p += n;
        if (*p == '\0') {
            return true;
        }
        if (*p != '.') {
            return false;
        }
        p++;
    }
}

/*
 * Resolve a handler path: absolute as written, otherwise relative to the
 * config file's directory. The directory is made canonical with realpath(),
 * the file name is kept as written: in a Kubernetes ConfigMap volume the file
 * is a symlink into a timestamped directory that the next update deletes, so
 * the path to keep (and to watch for hot reload) is the symlink's, never its
 * target's. The file (followed through symlinks) must be a regular file.
 * Returns a malloc'd absolute path, or NULL with a message in *ERR.
 */
static char *resolve_path(loader *ld, const field *f, const char *text, char **err)
{
    char *joined, *dir, *real, *out, got[GOT_MAX];
    struct stat st;

    *err = NULL;
    joined = text[0] == '/' ? strdup(text) : wr_str_format("%s/%s", ld->dir, text);
    if (joined == NULL) {
        *err = strdup("out of memory");
        return NULL;
    }
    char *slash = strrchr(joined, '/');
    dir = slash == joined ? strdup("/") : wr_str_dup_range(joined, (size_t)(slash - joined));
    real = dir ? realpath(dir, NULL) : NULL;
    int e = errno;
    free(dir);
    cfg_describe_value(f, text, got, sizeof(got));
    if (real == NULL || stat(joined, &st) != 0) {
        e = real == NULL ? e : errno;
        if (e == ENOENT || e == ENOTDIR) {
            *err = text[0] == '/' ? wr_str_format("%s file not found, got %s", f->name, got)
                                  : wr_str_format("%s file not found (relative to %s), got %s",
                                                  f->name, ld->dir, got);
        } else {
            *err = wr_str_format("%s file: %s, got %s", f->name, strerror(e), got);
        }
        free(real);
        free(joined);
        return NULL;
    }
    out = wr_str_format("%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/", slash + 1);
    free(real);
    free(joined);
    if (out == NULL) {
        *err = strdup("out of memory");
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        *err = wr_str_format("%s file is not a regular file, got %s", f->name, got);
        free(out);
        return NULL;
    }
    return out;
}

/*
 * Report an unparsable URL. One that starts with a scheme is shown with its
 * whole userinfo masked (the user name too: in a malformed URL it may be the
 * password); one without is described like any other value, since it may be
 * a secret pasted under the wrong key.
 */
void cfg_url_error(loader *ld, int line, int col, const char *path, const char *kind,
                   const char *text, const char *why)
{
    if (wr_url_after_scheme(text) != NULL) {
        char *masked = wr_url_mask_userinfo(text, true);
        char shown[URL_ECHO_MAX + 4];
        wr_str_printable(masked ? masked : "***", masked ? strlen(masked) : 3, URL_ECHO_MAX, shown);
        cfg_err_at(ld, line, col, "%s: invalid %s URL '%s' (%s)", path, kind, shown, why);
        free(masked);
    } else {
        char got[GOT_MAX];
        cfg_describe_value(NULL, text, got, sizeof(got));
        cfg_err_at(ld, line, col, "%s: invalid %s URL (%s), got %s", path, kind, why, got);
    }
}

static void set_string_field(loader *ld, const field *f, void *base, const char *text,
                             const scalar_at *at)
{
    size_t len = strlen(text);
    if (len == 0 && f->min > 0) {
        cfg_err_at(ld, at->line, at->col, "%s: must not be empty", at->path);
        return;
    }
    if ((int64_t)len > f->max) {
        cfg_err_at(ld, at->line, at->col, "%s: must be at most %lld bytes long, got %zu bytes",
                   at->path, (long long)f->max, len);
        return;
    }
    if (f->flags & F_IDENT) {
        static const char ident[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "abcdefghijklmnopqrstuvwxyz0123456789_.-";
        if (strspn(text, ident) != len) {
            cfg_err_at(ld, at->line, at->col,
                       "%s: may contain only letters, digits, '_', '.' and '-', got %s", at->path,
                       at->got);
            return;
        }
    }
    if (!set_string(AT(base, f->offset, char *), text)) {
        cfg_err_at(ld, at->line, at->col, "%s: out of memory", at->path);
    }
}

static void set_path_field(loader *ld, const field *f, void *base, const char *text,
                           const scalar_at *at)
{
    char *err, *real;
    if (text[0] == '\0') {
        cfg_err_at(ld, at->line, at->col, "%s: must not be empty", at->path);
        return;
    }
    real = resolve_path(ld, f, text, &err);
    if (real == NULL) {
        cfg_err_at(ld, at->line, at->col, "%s: %s", at->path, err ? err : "out of memory");
        free(err);
        return;
    }
    free(*AT(base, f->offset, char *));
    *AT(base, f->offset, char *) = real;
}

static void set_int_field(loader *ld, const field *f, void *base, const char *text,
                          const scalar_at *at)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    bool digits = text[0] == '-' || (text[0] >= '0' && text[0] <= '9');
    if (!digits || *end != '\0' || errno != 0 || v < f->min || v > f->max) {
        cfg_expected_error(ld, f, at);
        return;
    }
    *AT(base, f->offset, int) = (int)v;
}

static void set_duration_field(loader *ld, const field *f, void *base, const char *text,
                               const scalar_at *at)
{
    int64_t ms;
    const char *or_none = (f->flags & F_NONE) ? ", or none" : "";
    if ((f->flags & F_NONE) && strcmp(text, "none") == 0) {
        *AT(base, f->offset, int64_t) = 0;
        return;
    }
    if (wr_units_parse_duration(text, &ms) != 0) {
        cfg_expected_error(ld, f, at);
        return;
    }
    if (ms < f->min || ms > f->max) {
        char lo[32], hi[32];
        wr_units_format_duration(f->min, lo, sizeof(lo));
        wr_units_format_duration(f->max, hi, sizeof(hi));
        cfg_err_at(ld, at->line, at->col, "%s: expected a duration from %s to %s%s, got %s",
                   at->path, lo, hi, or_none, at->got);
        return;
    }
    *AT(base, f->offset, int64_t) = ms;
}

/* Plain decimals only (2, 1.5): no signs, exponents, hex, inf or nan. */
static void set_number_field(loader *ld, const field *f, void *base, const char *text,
                             const scalar_at *at)
{
    size_t i = strspn(text, "0123456789");
    bool ok = i > 0;
    if (ok && text[i] == '.') {
        size_t frac = strspn(text + i + 1, "0123456789");
        ok = frac > 0;
        i += 1 + frac;
    }
    double v = ok && text[i] == '\0' ? strtod(text, NULL) : -1.0;
    bool low = (f->flags & F_GT_MIN) ? v <= (double)f->min : v < (double)f->min;
    if (!ok || text[i] != '\0' || low || v > (double)f->max) {
        cfg_expected_error(ld, f, at);
        return;
    }
    *AT(base, f->offset, double) = v;
}

/* An idempotency key source: message_id, header:NAME or json:PATH. */
static void set_key_field(loader *ld, const field *f, void *base, const char *text,
                          const scalar_at *at)
{
    int source;
    const char *arg = NULL;
    char *copy = NULL;
    if (strcmp(text, "message_id") == 0) {
        source = WR_KEY_MESSAGE_ID;
    } else if (strncmp(text, "header:", 7) == 0 && text[7] != '\0') {
        source = WR_KEY_HEADER;
        arg = text + 7;
        if (strlen(arg) > AMQP_SHORTSTR) {
            cfg_err_at(ld, at->line, at->col,
                       "%s: the header name must be at most %d bytes long, got %zu bytes", at->path,
                       AMQP_SHORTSTR, strlen(arg));
            return;
        }
    } else if (strncmp(text, "json:", 5) == 0) {
        source = WR_KEY_JSON;
        arg = text + 5;
        if (!valid_json_path(arg)) {
            char gotpath[GOT_MAX];
            cfg_describe_value(f, arg, gotpath, sizeof(gotpath));
            cfg_err_at(ld, at->line, at->col,
                       "%s: invalid JSON path (names of letters, digits, '_' and '-', joined by "
                       "'.'), got %s",
                       at->path, gotpath);
            return;
        }
    } else {
        cfg_expected_error(ld, f, at);
        return;
    }
    if (arg != NULL && (copy = strdup(arg)) == NULL) {
        cfg_err_at(ld, at->line, at->col, "%s: out of memory", at->path);
        return;
    }
    free(*AT(base, f->arg_offset, char *));
    *AT(base, f->arg_offset, char *) = copy;
    *AT(base, f->offset, int) = source;
}

static void set_size_field(loader *ld, const field *f, void *base, const char *text,
                           const scalar_at *at)
{
    int64_t bytes;
    if (wr_units_parse_size(text, &bytes) != 0) {
        cfg_expected_error(ld, f, at);
        return;
    }
    if (bytes < f->min || bytes > f->max) {
        char lo[32], hi[32];
        wr_units_format_size(f->min, lo, sizeof(lo));
        wr_units_format_size(f->max, hi, sizeof(hi));
        cfg_err_at(ld, at->line, at->col, "%s: expected a size from %s to %s, got %s", at->path, lo,
                   hi, at->got);
        return;
    }
    *AT(base, f->offset, int64_t) = bytes;
}

static void set_bool_field(loader *ld, const field *f, void *base, const char *text,
                           const scalar_at *at)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
                                      "YES",  "on",   "On",   "ON",  NULL};
    static const char *const no[] = {"false", "False", "FALSE", "no",  "No",
                                     "NO",    "off",   "Off",   "OFF", NULL};
    for (int i = 0; yes[i] != NULL; i++) {
        if (strcmp(text, yes[i]) == 0) {
            *AT(base, f->offset, int) = 1;
            return;
        }
        if (strcmp(text, no[i]) == 0) {
            *AT(base, f->offset, int) = 0;
            return;
        }
    }
    cfg_err_at(ld, at->line, at->col, "%s: expected true or false, got %s", at->path, at->got);
}

/* The index of TEXT in F's enum_values, or -1 (the error reported). */
static int enum_index(loader *ld, const field *f, const char *text, const scalar_at *at)
{
    for (int i = 0; f->enum_values[i] != NULL; i++) {
        if (strcmp(text, f->enum_values[i]) == 0) {
            return i;
        }
    }
    cfg_expected_error(ld, f, at);
    return -1;
}

/* T_ENUM stores the value's index. */
static void set_enum_field(loader *ld, const field *f, void *base, const char *text,
                           const scalar_at *at)
{
    int i = enum_index(ld, f, text, at);
    if (i >= 0) {
        *AT(base, f->offset, int) = i;
    }
}

/* T_ENUM_STR stores a copy of the value. */
static void set_enum_str_field(loader *ld, const field *f, void *base, const char *text,
                               const scalar_at *at)
{
    if (enum_index(ld, f, text, at) >= 0 && !set_string(AT(base, f->offset, char *), text)) {
        cfg_err_at(ld, at->line, at->col, "%s: out of memory", at->path);
    }
}

static void set_amqp_url_field(loader *ld, const field *f, void *base, const char *text,
                               const scalar_at *at)
{
    const char *why;
    wr_amqp_url *u = AT(base, f->offset, wr_amqp_url);
    wr_amqp_url_clear(u);
    if (wr_amqp_url_parse(text, u, &why) != 0) {
        cfg_url_error(ld, at->line, at->col, at->path, "AMQP", text, why);
    }
}

static void set_redis_url_field(loader *ld, const field *f, void *base, const char *text,
                                const scalar_at *at)
{
    const char *why;
    wr_redis_url *u = AT(base, f->offset, wr_redis_url);
    wr_redis_url_clear(u);
    if (wr_redis_url_parse(text, u, &why) != 0) {
        cfg_url_error(ld, at->line, at->col, at->path, "Redis", text, why);
    }
}

/*
 * Read a string list: a sequence of scalars, or one scalar standing for a
 * list of one. Items are expanded and bounded like strings (f->max bytes).
 */
static void set_strlist(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    char ***listp = AT(base, f->offset, char **);
    int *countp = AT(base, f->count_offset, int);
    yaml_node_item_t *items = NULL;
    int n;

    if (node->type == YAML_SCALAR_NODE && !cfg_is_null_scalar(node)) {
        n = 1;
    } else if (node->type == YAML_SEQUENCE_NODE) {
        items = node->data.sequence.items.start;
        n = (int)(node->data.sequence.items.top - items);
    } else {
        cfg_kind_error(ld, f, node, path);
        return;
    }
    if (n < f->min) {
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: expected a non-empty list", path);
        return;
    }
    char **list = calloc((size_t)n + 1, sizeof(char *));
    if (list == NULL) {
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: out of memory", path);
        return;
    }
    *listp = list;
    *countp = n;
    for (int i = 0; i < n; i++) {
        yaml_node_t *item = items != NULL ? yaml_document_get_node(ld->doc, items[i]) : node;
        char ipath[PATH_BUF];
        if (items != NULL) {
            cfg_make_path(ipath, "%s[%d]", path, i);
        } else {
            cfg_make_path(ipath, "%s", path);
        }
        if (items != NULL && !cfg_spend(ld, item, ipath)) {
            return;
        }
        if (item->type != YAML_SCALAR_NODE) {
            cfg_err_at(ld, NODE_LINE(item), NODE_COL(item), "%s: expected a string, got %s", ipath,
                       cfg_node_kind(item));
            continue;
        }
        char *text = cfg_expanded_scalar(ld, item, ipath);
        if (text == NULL) {
            continue;
        }
        if ((int64_t)strlen(text) > f->max) {
            cfg_err_at(ld, NODE_LINE(item), NODE_COL(item),
                       "%s: must be at most %lld bytes long, got %zu bytes", ipath,
                       (long long)f->max, strlen(text));
            free(text);
            continue;
        }
        list[i] = text;
    }
}

/*
 * Read a list of durations (a sequence, never a lone scalar) into a malloc'd
 * array: one item at least, f->max_count at most, each bounded like a
 * T_DURATION by f->min and f->max.
 */
static void set_durlist(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    int64_t **listp = AT(base, f->offset, int64_t *);
    field item = *f;
    yaml_node_item_t *items;
    int n;

    if (node->type != YAML_SEQUENCE_NODE) {
        cfg_kind_error(ld, f, node, path);
        return;
    }
    items = node->data.sequence.items.start;
    n = (int)(node->data.sequence.items.top - items);
    if (n == 0) {
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: expected a non-empty list", path);
        return;
    }
    if (n > f->max_count) {
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: must have at most %d entries, got %d",
                   path, f->max_count, n);
        return;
    }
    int64_t *list = calloc((size_t)n, sizeof(int64_t));
    if (list == NULL) {
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: out of memory", path);
        return;
    }
    free(*listp);
    *listp = list;
    *AT(base, f->count_offset, int) = n;
    /* Each item is read as a T_DURATION stored straight into its slot. */
    item.type = T_DURATION;
    item.offset = 0;
    item.flags &= ~F_NONE;
    for (int i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(ld->doc, items[i]);
        char ipath[PATH_BUF];
        cfg_make_path(ipath, "%s[%d]", path, i);
        if (!cfg_spend(ld, it, ipath)) {
            return;
        }
        if (it->type != YAML_SCALAR_NODE) {
            cfg_kind_error(ld, &item, it, ipath);
            continue;
        }
        char *text = cfg_expanded_scalar(ld, it, ipath);
        if (text != NULL) {
            cfg_set_scalar(ld, &item, &list[i], text, NODE_LINE(it), NODE_COL(it), ipath);
            free(text);
        }
    }
}

/* Read a list of mappings into a calloc'd element array, each walked against f->sub. */
static void set_list(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    const section *sec = f->sub;
    yaml_node_item_t *items;
    int n;

    if (node->type != YAML_SEQUENCE_NODE) {
        cfg_kind_error(ld, f, node, path);
        return;
    }
    items = node->data.sequence.items.start;
    n = (int)(node->data.sequence.items.top - items);
    if (n < f->min) {
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: expected a non-empty list", path);
        return;
    }
    if (f->max > 0 && n > f->max) {
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node),
                   "%s: must have at most %lld entries, got %d", path, (long long)f->max, n);
        return;
    }
    if (n == 0) {
        return;
    }
    char *elems = calloc((size_t)n, sec->elem_size);
    if (elems == NULL) {
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: out of memory", path);
        return;
    }
    *AT(base, f->offset, void *) = elems;
    *AT(base, f->count_offset, int) = n;
    for (int i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(ld->doc, items[i]);
        char ipath[PATH_BUF];
        cfg_make_path(ipath, "%s[%d]", path, i);
        if (!cfg_spend(ld, item, ipath)) {
            return;
        }
        if (item->type != YAML_MAPPING_NODE) {
            cfg_err_at(ld, NODE_LINE(item), NODE_COL(item), "%s: expected a mapping, got %s", ipath,
                       cfg_node_kind(item));
            continue;
        }
        cfg_walk_mapping(ld, sec, elems + (size_t)i * sec->elem_size, item, ipath);
        if (sec->finish != NULL) {
            sec->finish(ld, elems, i, item, ipath);
        }
    }
}

/*
 * The name of entry I of a mapping of names (PAIRS, in PATH), or NULL with
 * the error recorded when its key is not a string, holds a NUL byte, or was
 * given before.
 */
static const char *named_key(loader *ld, yaml_node_pair_t *pairs, int i, const char *path)
{
    yaml_node_t *key = yaml_document_get_node(ld->doc, pairs[i].key);
    if (key->type != YAML_SCALAR_NODE) {
        cfg_err_at(ld, NODE_LINE(key), NODE_COL(key), "expected a string key in %s, got %s", path,
                   cfg_node_kind(key));
        return NULL;
    }
    if (cfg_has_nul(key)) {
        cfg_err_at(ld, NODE_LINE(key), NODE_COL(key), "a key in %s contains a NUL byte (\\0)",
                   path);
        return NULL;
    }
    const char *name = (const char *)key->data.scalar.value;
    for (int j = 0; j < i; j++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, pairs[j].key);
        if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, name) == 0) {
            char shown[KEY_ECHO_MAX + 4];
            wr_str_printable(name, strlen(name), KEY_ECHO_MAX, shown);
            cfg_err_at(ld, NODE_LINE(key), NODE_COL(key),
                       "duplicate key '%s' in %s (first at %d:%d)", shown, path, NODE_LINE(k),
                       NODE_COL(k));
            return NULL;
        }
    }
    return name;
}

/*
 * Read a mapping of names to mappings (the named breakers) into a calloc'd
 * element array, each value walked against f->sub, and a parallel array of
 * the names (malloc'd), both in file order. A name is checked like a
 * subscription name (and reported at the key); a name given twice is a
 * duplicate key, reported like any other.
 */
static void set_named(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    static const field name_field = {
        .name = "name", .type = T_STRING, .min = 1, .max = 128, .flags = F_IDENT | F_KEYNAME};
    const section *sec = f->sub;
    yaml_node_pair_t *pairs;
    int n;

    if (node->type != YAML_MAPPING_NODE) {
        cfg_kind_error(ld, f, node, path);
        return;
    }
    pairs = node->data.mapping.pairs.start;
    n = (int)(node->data.mapping.pairs.top - pairs);
    if (f->max > 0 && n > f->max) {
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node),
                   "%s: must have at most %lld entries, got %d", path, (long long)f->max, n);
        return;
    }
    if (n == 0) {
        return;
    }
    char *elems = calloc((size_t)n, sec->elem_size);
    char **names = calloc((size_t)n, sizeof(char *));
    if (elems == NULL || names == NULL) {
        free(elems);
        free(names);
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: out of memory", path);
        return;
    }
    *AT(base, f->offset, void *) = elems;
    *AT(base, f->arg_offset, char **) = names;
    *AT(base, f->count_offset, int) = n;
    for (int i = 0; i < n; i++) {
        yaml_node_t *key = yaml_document_get_node(ld->doc, pairs[i].key);
        yaml_node_t *value = yaml_document_get_node(ld->doc, pairs[i].value);
        void *elem = elems + (size_t)i * sec->elem_size;
        char sub[PATH_BUF];

        cfg_mark_unset_fields(sec, elem);
        if (!cfg_spend(ld, key, path)) {
            return;
        }
        const char *name = named_key(ld, pairs, i, path);
        if (name == NULL) {
            continue;
        }
        cfg_set_scalar(ld, &name_field, &names[i], name, NODE_LINE(key), NODE_COL(key), path);
        char shown[KEY_ECHO_MAX + 4];
        wr_str_printable(name, strlen(name), KEY_ECHO_MAX, shown);
        cfg_join_key(sub, path, shown);
        if (value->type != YAML_MAPPING_NODE) {
            cfg_err_at(ld, NODE_LINE(value), NODE_COL(value), "%s: expected a mapping, got %s", sub,
                       cfg_node_kind(value));
            continue;
        }
        cfg_walk_mapping(ld, sec, elem, value, sub);
        if (sec->finish != NULL) {
            sec->finish(ld, elems, i, value, sub);
        }
    }
}

/* T_SECTION: a nested mapping, walked against f->sub, then its finish hook. */
static void set_section(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    if (node->type != YAML_MAPPING_NODE) {
        cfg_kind_error(ld, f, node, path);
        return;
    }
    void *sbase = cfg_section_base(ld, f, base);
    cfg_walk_mapping(ld, f->sub, sbase, node, path);
    if (f->sub->finish != NULL) {
        f->sub->finish(ld, sbase, 0, node, path);
    }
}

/* ------------------------------------------------------------------------ */
/* What the types expect, in messages and in the reference                    */
/* ------------------------------------------------------------------------ */

static void expect_int(const field *f, char *out, size_t len)
{
    snprintf(out, len, "an integer from %lld to %lld", (long long)f->min, (long long)f->max);
}

static void expect_duration(const field *f, char *out, size_t len)
{
    snprintf(out, len, "a duration like 500ms, 5s, 2m, 1h or 7d%s",
             (f->flags & F_NONE) ? ", or none" : "");
}

static void expect_number(const field *f, char *out, size_t len)
{
    snprintf(out, len, "a number from %lld%s to %lld", (long long)f->min,
             (f->flags & F_GT_MIN) ? " (exclusive)" : "", (long long)f->max);
}

/* The enum's values after LEAD, each written as ITEM (a printf format of the value). */
static void list_values(const field *f, const char *lead, const char *sep, const char *item,
                        char *out, size_t len)
{
    size_t used = (size_t)snprintf(out, len, "%s", lead);
    for (int i = 0; f->enum_values[i] != NULL && used < len; i++) {
        used += (size_t)snprintf(out + used, len - used, "%s", i > 0 ? sep : "");
        if (used < len) {
            used += (size_t)snprintf(out + used, len - used, item, f->enum_values[i]);
        }
    }
}

static void expect_enum(const field *f, char *out, size_t len)
{
    list_values(f, "one of ", ", ", "%s", out, len);
}

static void ref_int(const field *f, char *out, size_t len)
{
    snprintf(out, len, "integer, %lld to %lld", (long long)f->min, (long long)f->max);
}

static void ref_duration(const field *f, char *out, size_t len)
{
    char lo[32], hi[32];
    wr_units_format_duration(f->min, lo, sizeof(lo));
    wr_units_format_duration(f->max, hi, sizeof(hi));
    snprintf(out, len, "duration, %s to %s%s", lo, hi, (f->flags & F_NONE) ? ", or `none`" : "");
}

static void ref_number(const field *f, char *out, size_t len)
{
    snprintf(out, len, "number, %lld%s to %lld", (long long)f->min,
             (f->flags & F_GT_MIN) ? " (exclusive)" : "", (long long)f->max);
}

static void ref_durlist(const field *f, char *out, size_t len)
{
    char lo[32], hi[32];
    wr_units_format_duration(f->min, lo, sizeof(lo));
    wr_units_format_duration(f->max, hi, sizeof(hi));
    snprintf(out, len, "list of 1 to %d durations, %s to %s", f->max_count, lo, hi);
}

static void ref_size(const field *f, char *out, size_t len)
{
    char lo[32], hi[32];
    wr_units_format_size(f->min, lo, sizeof(lo));
    wr_units_format_size(f->max, hi, sizeof(hi));
    snprintf(out, len, "size, %s to %s", lo, hi);
}

static void ref_enum(const field *f, char *out, size_t len)
{
    list_values(f, "one of", ",", " `%s`", out, len);
}

/* ------------------------------------------------------------------------ */
/* Unset marks, copies, defaults and freeing                                  */
/* ------------------------------------------------------------------------ */

/* Plain values (int, int64_t, double) are unset when negative: no field accepts that. */
static void unset_int(const field *f, void *base)
{
    *AT(base, f->offset, int) = -1;
}

static bool is_set_int(const field *f, const void *base)
{
    return *AT(base, f->offset, const int) >= 0;
}

static void unset_int64(const field *f, void *base)
{
    *AT(base, f->offset, int64_t) = -1;
}

static bool is_set_int64(const field *f, const void *base)
{
    return *AT(base, f->offset, const int64_t) >= 0;
}

static void unset_double(const field *f, void *base)
{
    *AT(base, f->offset, double) = -1.0;
}

static bool is_set_double(const field *f, const void *base)
{
    return *AT(base, f->offset, const double) >= 0.0;
}

/* Pointers are unset when NULL (as calloc leaves them): nothing to mark. */
static bool is_set_ptr(const field *f, const void *base)
{
    return *AT(base, f->offset, void *const) != NULL;
}

/* A plain value is copied as its bytes (the type's plain_size). */
static void copy_plain(loader *ld, const field *f, void *dst, const void *src, const char *path)
{
    (void)ld;
    (void)path;
    memcpy(AT(dst, f->offset, char), AT(src, f->offset, const char), cfg_ops(f)->plain_size);
}

static void copy_string(loader *ld, const field *f, void *dst, const void *src, const char *path)
{
    if (!set_string(AT(dst, f->offset, char *), *AT(src, f->offset, char *const))) {
        cfg_err_at(ld, 0, 0, "%s: out of memory", path);
    }
}

static void copy_key(loader *ld, const field *f, void *dst, const void *src, const char *path)
{
    const char *arg = *AT(src, f->arg_offset, char *const);
    if (arg != NULL && !set_string(AT(dst, f->arg_offset, char *), arg)) {
        cfg_err_at(ld, 0, 0, "%s: out of memory", path);
        return;
    }
    *AT(dst, f->offset, int) = *AT(src, f->offset, const int);
}

static void copy_durlist(loader *ld, const field *f, void *dst, const void *src, const char *path)
{
    int n = *AT(src, f->count_offset, const int);
    int64_t *list = malloc((size_t)n * sizeof(int64_t));
    if (list == NULL) {
        cfg_err_at(ld, 0, 0, "%s: out of memory", path);
        return;
    }
    memcpy(list, *AT(src, f->offset, int64_t *const), (size_t)n * sizeof(int64_t));
    *AT(dst, f->offset, int64_t *) = list;
    *AT(dst, f->count_offset, int) = n;
}

/* A T_DURLIST's built-in default is a YAML flow list of durations, "[1s, 5s]". */
static void default_durlist(loader *ld, const field *f, void *base, const char *path)
{
    int n = 1;
    for (const char *p = f->def; *p != '\0'; p++) {
        n += *p == ',';
    }
    int64_t *list = calloc((size_t)n, sizeof(int64_t));
    if (list == NULL) {
        cfg_err_at(ld, 0, 0, "%s: out of memory", path);
        return;
    }
    const char *p = f->def + strspn(f->def, "[ ");
    for (int i = 0; i < n; i++) {
        size_t len = strcspn(p, ", ]");
        char item[32];
        snprintf(item, sizeof(item), "%.*s", (int)len, p);
        if (wr_units_parse_duration(item, &list[i]) != 0) {
            cfg_err_at(ld, 0, 0, "%s: bad built-in default '%s'", path, f->def);
        }
        p += len;
        p += strspn(p, ", ]");
    }
    *AT(base, f->offset, int64_t *) = list;
    *AT(base, f->count_offset, int) = n;
}

static void free_string(const field *f, void *base)
{
    free(*AT(base, f->offset, char *));
    *AT(base, f->offset, char *) = NULL;
}

static void free_amqp_url(const field *f, void *base)
{
    wr_amqp_url_clear(AT(base, f->offset, wr_amqp_url));
}

static void free_redis_url(const field *f, void *base)
{
    wr_redis_url_clear(AT(base, f->offset, wr_redis_url));
}

static void free_strlist(const field *f, void *base)
{
    char **list = *AT(base, f->offset, char **);
    int n = *AT(base, f->count_offset, int);
    for (int k = 0; list != NULL && k < n; k++) {
        free(list[k]);
    }
    free(list);
    *AT(base, f->offset, char **) = NULL;
    *AT(base, f->count_offset, int) = 0;
}

/* A located section lives outside BASE: its owner frees it. */
static void free_section(const field *f, void *base)
{
    if (f->locate == NULL) {
        cfg_free_fields(f->sub, (char *)base + f->offset);
    }
}

static void free_durlist(const field *f, void *base)
{
    free(*AT(base, f->offset, int64_t *));
    *AT(base, f->offset, int64_t *) = NULL;
    *AT(base, f->count_offset, int) = 0;
}

static void free_key(const field *f, void *base)
{
    free(*AT(base, f->arg_offset, char *));
    *AT(base, f->arg_offset, char *) = NULL;
}

/* The elements of a T_LIST or T_NAMED (and a T_NAMED's names, when NAMES). */
static void free_elements(const field *f, void *base, bool names)
{
    char *elems = *AT(base, f->offset, void *);
    char **namev = names ? *AT(base, f->arg_offset, char **) : NULL;
    int n = *AT(base, f->count_offset, int);
    for (int k = 0; k < n; k++) {
        if (elems != NULL) {
            cfg_free_fields(f->sub, elems + (size_t)k * f->sub->elem_size);
        }
        if (namev != NULL) {
            free(namev[k]);
        }
    }
    free(elems);
    free(namev);
    *AT(base, f->offset, void *) = NULL;
    if (names) {
        *AT(base, f->arg_offset, char **) = NULL;
    }
    *AT(base, f->count_offset, int) = 0;
}

static void free_list(const field *f, void *base)
{
    free_elements(f, base, false);
}

static void free_named(const field *f, void *base)
{
    free_elements(f, base, true);
}

/* ------------------------------------------------------------------------ */
/* The ops records                                                            */
/* ------------------------------------------------------------------------ */

static const cfg_type_ops string_ops = {
    .parse = set_string_field,
    .expects = "a string",
    .ref_type = "string",
    .is_set = is_set_ptr,
    .copy = copy_string,
    .free = free_string,
};

static const cfg_type_ops path_ops = {
    .parse = set_path_field,
    .expects = "a file path",
    .ref_type = "file path",
    .free = free_string,
};

static const cfg_type_ops int_ops = {
    .parse = set_int_field,
    .expects_fn = expect_int,
    .ref_type_fn = ref_int,
    .unset = unset_int,
    .is_set = is_set_int,
    .copy = copy_plain,
    .plain_size = sizeof(int),
    .bare = true,
};

static const cfg_type_ops duration_ops = {
    .parse = set_duration_field,
    .expects_fn = expect_duration,
    .ref_type_fn = ref_duration,
    .unset = unset_int64,
    .is_set = is_set_int64,
    .copy = copy_plain,
    .plain_size = sizeof(int64_t),
};

static const cfg_type_ops size_ops = {
    .parse = set_size_field,
    .expects = "a size like 65536, 512KiB or 4MiB",
    .ref_type_fn = ref_size,
    .unset = unset_int64,
    .is_set = is_set_int64,
    .copy = copy_plain,
    .plain_size = sizeof(int64_t),
};

static const cfg_type_ops bool_ops = {
    .parse = set_bool_field,
    .expects = "true or false",
    .ref_type = "bool",
    .unset = unset_int,
    .is_set = is_set_int,
    .copy = copy_plain,
    .plain_size = sizeof(int),
    .bare = true,
};

static const cfg_type_ops enum_ops = {
    .parse = set_enum_field,
    .expects_fn = expect_enum,
    .ref_type_fn = ref_enum,
    .unset = unset_int,
    .is_set = is_set_int,
    .copy = copy_plain,
    .plain_size = sizeof(int),
};

static const cfg_type_ops enum_str_ops = {
    .parse = set_enum_str_field,
    .expects_fn = expect_enum,
    .ref_type_fn = ref_enum,
    .free = free_string,
};

static const cfg_type_ops number_ops = {
    .parse = set_number_field,
    .expects_fn = expect_number,
    .ref_type_fn = ref_number,
    .unset = unset_double,
    .is_set = is_set_double,
    .copy = copy_plain,
    .plain_size = sizeof(double),
    .bare = true,
};

static const cfg_type_ops durlist_ops = {
    .parse_node = set_durlist,
    .expects = "a list of durations",
    .ref_type_fn = ref_durlist,
    .is_set = is_set_ptr,
    .copy = copy_durlist,
    .set_default = default_durlist,
    .free = free_durlist,
};

static const cfg_type_ops key_ops = {
    .parse = set_key_field,
    .expects = "message_id, header:NAME or json:PATH",
    .ref_type = "`message_id`, `header:NAME` or `json:PATH`",
    .unset = unset_int,
    .is_set = is_set_int,
    .copy = copy_key,
    .free = free_key,
};

static const cfg_type_ops amqp_url_ops = {
    .parse = set_amqp_url_field,
    .expects = "an AMQP URL",
    .ref_type = "AMQP URL",
    .free = free_amqp_url,
};

static const cfg_type_ops redis_url_ops = {
    .parse = set_redis_url_field,
    .expects = "a Redis URL",
    .ref_type = "Redis URL",
    .free = free_redis_url,
};

static const cfg_type_ops strlist_ops = {
    .parse_node = set_strlist,
    .expects = "a string or a list of strings",
    .ref_type = "string or list of strings",
    .free = free_strlist,
};

static const cfg_type_ops section_ops = {
    .parse_node = set_section,
    .expects = "a mapping",
    .ref_type = "mapping",
    .free = free_section,
    .nested = true,
    .ref_rows = "%s.",
};

static const cfg_type_ops list_ops = {
    .parse_node = set_list,
    .expects = "a list",
    .ref_type = "list of mappings",
    .free = free_list,
    .ref_rows = "%s[].",
};

static const cfg_type_ops named_ops = {
    .parse_node = set_named,
    .expects = "a mapping",
    .ref_type = "mapping of names to mappings",
    .free = free_named,
    .ref_rows = "%s.<name>.",
};

static const cfg_type_ops *const type_ops[] = {
    [T_STRING] = &string_ops,       [T_PATH] = &path_ops,         [T_INT] = &int_ops,
    [T_DURATION] = &duration_ops,   [T_SIZE] = &size_ops,         [T_BOOL] = &bool_ops,
    [T_ENUM] = &enum_ops,           [T_ENUM_STR] = &enum_str_ops, [T_NUMBER] = &number_ops,
    [T_DURLIST] = &durlist_ops,     [T_KEY] = &key_ops,           [T_AMQP_URL] = &amqp_url_ops,
    [T_REDIS_URL] = &redis_url_ops, [T_STRLIST] = &strlist_ops,   [T_SECTION] = &section_ops,
    [T_LIST] = &list_ops,           [T_NAMED] = &named_ops,
};
_Static_assert(sizeof(type_ops) / sizeof(type_ops[0]) == T_NAMED + 1,
               "every field type has its ops record");

const cfg_type_ops *cfg_ops(const field *f)
{
    return type_ops[f->type];
}

void cfg_expected_phrase(const field *f, char *out, size_t len)
{
    const cfg_type_ops *ops = cfg_ops(f);
    if (ops->expects_fn != NULL) {
        ops->expects_fn(f, out, len);
    } else {
        snprintf(out, len, "%s", ops->expects);
    }
}

void cfg_reference_type(const field *f, char *out, size_t len)
{
    const cfg_type_ops *ops = cfg_ops(f);
    if (ops->ref_type_fn != NULL) {
        ops->ref_type_fn(f, out, len);
    } else {
        snprintf(out, len, "%s", ops->ref_type);
    }
}

bool cfg_is_set(const field *f, const void *base)
{
    const cfg_type_ops *ops = cfg_ops(f);
    return ops->is_set != NULL && ops->is_set(f, base);
}

void cfg_free_fields(const section *sec, void *base)
{
    for (size_t i = 0; i < sec->nfields; i++) {
        const field *f = &sec->fields[i];
        const cfg_type_ops *ops = cfg_ops(f);
        if (ops->free != NULL) {
            ops->free(f, base);
        }
    }
}
