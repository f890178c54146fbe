/*
 * config_load.c: walk a YAML document against the schema.
 *
 * Every mapping is walked against its section's table: unknown keys,
 * duplicates, wrong kinds of node, missing required keys and values that do
 * not parse are all collected as "FILE:LINE:COL: message" (1-based, pointing
 * at the key or value at fault), never stopping at the first. Scalars are
 * expanded from the environment (envexpand.h) before their type reads them;
 * absent keys take their defaults. Also here: reading the file and libyaml's
 * own errors, with the limits that bound what a hostile file can cost.
 */
/* realpath() is XSI: glibc hides it under plain _POSIX_C_SOURCE. */
#define _XOPEN_SOURCE 700

#include "config_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envexpand.h"
#include "strutil.h"

/*
 * Format a dotted key path into OUT (PATH_BUF bytes). Paths are built from
 * schema names and list indexes, so they stay short; one that did not fit
 * would merely be cut in a message.
 */
void cfg_make_path(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, PATH_BUF, fmt, ap);
    va_end(ap);
}

/* Build "parent.key" (or just "key" at the top level) into OUT. */
void cfg_join_key(char *out, const char *parent, const char *key)
{
    if (parent[0] == '\0') {
        cfg_make_path(out, "%s", key);
    } else {
        cfg_make_path(out, "%s.%s", parent, key);
    }
}

/* Keep TEXT (taking ownership) or, past the limit or out of memory, count it as dropped. */
void cfg_add_error(loader *ld, int line, int col, char *text)
{
    if (text == NULL || ld->nerr >= WR_CONFIG_MAX_ERRORS) {
        ld->dropped++;
        free(text);
        return;
    }
    ld->errs[ld->nerr].line = line;
    ld->errs[ld->nerr].col = col;
    ld->errs[ld->nerr].text = text;
    ld->nerr++;
}

/* Record "FILE:LINE:COL: message" (LINE and COL already 1-based). */
void cfg_err_at(loader *ld, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void cfg_err_at(loader *ld, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = wr_str_vformat(fmt, ap);
    va_end(ap);
    char *line_text =
        wr_str_format("%s:%d:%d: %s", ld->file, line, col, msg ? msg : "out of memory");
    free(msg);
    cfg_add_error(ld, line, col, line_text);
}

/* A plain scalar that YAML would read as null: empty, "~" or "null". */
bool cfg_is_null_scalar(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return false;
    }
    const char *v = (const char *)n->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* How a node is described after "got": never the value of a scalar, which may be secret. */
const char *cfg_node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a list";
    default:
        return cfg_is_null_scalar(n) ? "an empty value" : "a string";
    }
}

/*
 * How a value is shown after "got" in a message: quoted when it is at most
 * ECHO_MAX bytes ("5x", "lots", "verbose"), otherwise by its length only,
 * because a value under the wrong key may well be a password. Names that are
 * mapping keys (F_KEYNAME) are quoted up to KEY_ECHO_MAX bytes.
 */
void cfg_describe_value(const field *f, const char *text, char *out, size_t cap)
{
    size_t n = strlen(text);
    size_t max = f != NULL && (f->flags & F_KEYNAME) ? KEY_ECHO_MAX : ECHO_MAX;
    char shown[KEY_ECHO_MAX + 4];

    if (n == 0) {
        snprintf(out, cap, "an empty value");
    } else if (n <= max) {
        wr_str_printable(text, n, max, shown);
        snprintf(out, cap, "'%s'", shown);
    } else {
        snprintf(out, cap, "a value of %zu bytes (not shown)", n);
    }
}

/* " 'TEXT'" when TEXT may be quoted in a message (see cfg_describe_value), else "". */
void cfg_quote_if_short(const char *text, char *out, size_t cap)
{
    char shown[ECHO_MAX + 4];
    if (strlen(text) <= ECHO_MAX) {
        wr_str_printable(text, strlen(text), ECHO_MAX, shown);
        snprintf(out, cap, " '%s'", shown);
    } else {
        out[0] = '\0';
    }
}

/*
 * A quoted scalar given to an integer, number or boolean field: YAML makes it
 * a string, so it is refused like any other string there. A value taken from
 * the environment (${VAR}) is text whatever its quotes, and is read as usual.
 */
static bool quoted_literal(const field *f, const yaml_node_t *node)
{
    if (!cfg_ops(f)->bare) {
        return false;
    }
    int style = node->data.scalar.style;
    if (style != YAML_SINGLE_QUOTED_SCALAR_STYLE && style != YAML_DOUBLE_QUOTED_SCALAR_STYLE) {
        return false;
    }
    const char *v = (const char *)node->data.scalar.value;
    return v[0] != '\0' && strstr(v, "${") == NULL; /* '' is "an empty value", as ever */
}

void cfg_kind_error(loader *ld, const field *f, yaml_node_t *node, const char *path)
{
    char want[128];
    cfg_expected_phrase(f, want, sizeof(want));
    cfg_err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: expected %s, got %s", path, want,
               cfg_node_kind(node));
}

/* Report that F wanted something else (cfg_expected_phrase says what). */
void cfg_expected_error(loader *ld, const field *f, const scalar_at *at)
{
    char want[128];
    cfg_expected_phrase(f, want, sizeof(want));
    cfg_err_at(ld, at->line, at->col, "%s: expected %s, got %s", at->path, want, at->got);
}

/*
 * Interpret one (already expanded) scalar TEXT for field F and store it in
 * BASE. LINE/COL locate it for messages; PATH is the dotted key. Defaults go
 * through here too, written as text, so they obey the same rules.
 */
void cfg_set_scalar(loader *ld, const field *f, void *base, const char *text, int line, int col,
                    const char *path)
{
    char got[GOT_MAX];
    cfg_describe_value(f, text, got, sizeof(got));
    scalar_at at = {.line = line, .col = col, .path = path, .got = got};
    const cfg_type_ops *ops = cfg_ops(f);
    if (ops->parse != NULL) {
        ops->parse(ld, f, base, text, &at);
    }
}

/*
 * Count one more value visited at NODE (PATH). Past MAX_VALUES the walk
 * stops: without this, a few KB of nested YAML aliases (a list of aliases
 * to a list of aliases...) stand for billions of values. Returns false, with
 * the error recorded once, when the budget is spent.
 */
bool cfg_spend(loader *ld, yaml_node_t *node, const char *path)
{
    if (ld->exhausted) {
        return false;
    }
    if (++ld->values > MAX_VALUES) {
        ld->exhausted = true;
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node),
                   "%s: more than %d values in all (a YAML alias counts once per use)", path,
                   MAX_VALUES);
        return false;
    }
    return true;
}

/* True when scalar NODE holds a NUL byte: C strings would end there, silently. */
bool cfg_has_nul(const yaml_node_t *node)
{
    return node->type == YAML_SCALAR_NODE &&
           strlen((const char *)node->data.scalar.value) != node->data.scalar.length;
}

/*
 * Expand a scalar node's text from the environment; NULL (error recorded) on
 * failure, also for a value holding a NUL byte (YAML's "\0" escape).
 */
char *cfg_expanded_scalar(loader *ld, yaml_node_t *node, const char *path)
{
    char *out, *err;
    const char *text = cfg_is_null_scalar(node) ? "" : (const char *)node->data.scalar.value;

    if (cfg_has_nul(node)) {
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: contains a NUL byte (\\0)", path);
        return NULL;
    }
    err = wr_env_expand(text, &out);
    if (err != NULL) {
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node), "%s: %s", path, err);
        free(err);
        return NULL;
    }
    return out;
}

/* Where the fields of section F live, given BASE, the struct holding F itself. */
void *cfg_section_base(loader *ld, const field *f, void *base)
{
    return f->locate != NULL ? f->locate(ld) : (char *)base + f->offset;
}

/* Mark every F_MERGE field of SEC in BASE unset, nested sections included. */
void cfg_mark_unset_fields(const section *sec, void *base)
{
    for (size_t i = 0; i < sec->nfields; i++) {
        const field *f = &sec->fields[i];
        const cfg_type_ops *ops = cfg_ops(f);
        if (ops->nested && f->locate == NULL) {
            cfg_mark_unset_fields(f->sub, (char *)base + f->offset);
        } else if ((f->flags & F_MERGE) && ops->unset != NULL) {
            ops->unset(f, base);
        }
    }
}

/* Store NODE as the value of field F (path PATH) in BASE, whatever the field's type. */
static void set_node(loader *ld, const field *f, void *base, yaml_node_t *node, const char *path)
{
    if (!cfg_spend(ld, node, path)) {
        return;
    }
    const cfg_type_ops *ops = cfg_ops(f);
    if (ops->parse_node != NULL) {
        ops->parse_node(ld, f, base, node, path);
        return;
    }
    if (node->type != YAML_SCALAR_NODE) {
        cfg_kind_error(ld, f, node, path);
        return;
    }
    if (quoted_literal(f, node)) {
        /* "6" is a string in YAML: a number or a boolean is written bare, as every
         * other tool reading the file (kubectl, yq, an editor's schema) takes it */
        char want[128];
        cfg_expected_phrase(f, want, sizeof(want));
        cfg_err_at(ld, NODE_LINE(node), NODE_COL(node),
                   "%s: expected %s, got the quoted string %c%s%c (write it without quotes)", path,
                   want, node->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ? '\'' : '"',
                   (const char *)node->data.scalar.value,
                   node->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ? '\'' : '"');
        return;
    }
    char *text = cfg_expanded_scalar(ld, node, path);
    if (text != NULL) {
        cfg_set_scalar(ld, f, base, text, NODE_LINE(node), NODE_COL(node), path);
        free(text);
    }
}

/*
 * A field that MAP (the mapping being walked; NULL when the whole section is
 * absent) does not set: required ones are reported at the mapping's start,
 * sections get their own defaults, inherited ones are marked unset (-1) for
 * the final pass, merged ones stay unset (cfg_walk_mapping marked them), and the
 * rest take their default.
 */
static void apply_missing(loader *ld, const field *f, void *base, yaml_node_t *map,
                          const char *path)
{
    if ((f->flags & F_REQUIRED) && map != NULL) {
        cfg_err_at(ld, NODE_LINE(map), NODE_COL(map), "missing required key '%s' %s%s", f->name,
                   path[0] != '\0' ? "in " : "at the top level", path);
    }
    const cfg_type_ops *ops = cfg_ops(f);
    if (ops->nested) {
        char sub[PATH_BUF];
        void *sbase = cfg_section_base(ld, f, base);
        cfg_join_key(sub, path, f->name);
        for (size_t i = 0; i < f->sub->nfields; i++) {
            apply_missing(ld, &f->sub->fields[i], sbase, NULL, sub);
        }
    } else if (f->flags & F_MERGE) {
        return;
    } else if (f->flags & F_INHERIT) {
        ops->unset(f, base); /* filled from the defaults by cfg_inherit_defaults */
    } else if (f->def != NULL) {
        char key[PATH_BUF];
        cfg_join_key(key, path, f->name);
        cfg_set_scalar(ld, f, base, f->def, 0, 0, key);
    }
}

static int find_field(const section *sec, const char *name)
{
    for (size_t i = 0; i < sec->nfields; i++) {
        if (strcmp(sec->fields[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/*
 * Walk mapping NODE against SEC, storing into BASE. Reports keys that are not
 * strings, unknown keys (listing the known ones), keys given twice, and, once
 * every pair is seen, required keys that are missing; fills defaults for the
 * rest.
 */
void cfg_walk_mapping(loader *ld, const section *sec, void *base, yaml_node_t *node,
                      const char *path)
{
    yaml_node_t *seen[MAX_FIELDS] = {0};
    const char *where = path[0] != '\0' ? "in " : "at the top level";

    /* Merged fields start unset, so a value that fails to parse stays unset too. */
    cfg_mark_unset_fields(sec, base);
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = yaml_document_get_node(ld->doc, pair->key);
        yaml_node_t *value = yaml_document_get_node(ld->doc, pair->value);
        char sub[PATH_BUF];
        if (ld->exhausted) {
            return;
        }
        if (key->type != YAML_SCALAR_NODE) {
            cfg_err_at(ld, NODE_LINE(key), NODE_COL(key), "expected a string key %s%s, got %s",
                       where, path, cfg_node_kind(key));
            continue;
        }
        if (cfg_has_nul(key)) {
            cfg_err_at(ld, NODE_LINE(key), NODE_COL(key), "a key %s%s contains a NUL byte (\\0)",
                       where, path);
            continue;
        }
        const char *name = (const char *)key->data.scalar.value;
        int i = find_field(sec, name);
        if (i < 0) {
            char known[512];
            size_t used = 0;
            known[0] = '\0';
            for (size_t k = 0; k < sec->nfields && used < sizeof(known); k++) {
                used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s",
                                         k > 0 ? ", " : "", sec->fields[k].name);
            }
            char shown[KEY_ECHO_MAX + 4];
            wr_str_printable(name, strlen(name), KEY_ECHO_MAX, shown);
            cfg_err_at(ld, NODE_LINE(key), NODE_COL(key),
                       "unknown key '%s' %s%s (expected one of: %s)", shown, where, path, known);
            continue;
        }
        if (seen[i] != NULL) {
            cfg_err_at(ld, NODE_LINE(key), NODE_COL(key),
                       "duplicate key '%s' %s%s (first at %d:%d)", name, where, path,
                       NODE_LINE(seen[i]), NODE_COL(seen[i]));
            continue;
        }
        seen[i] = key;
        cfg_join_key(sub, path, name);
        set_node(ld, &sec->fields[i], base, value, sub);
    }
    for (size_t i = 0; i < sec->nfields && !ld->exhausted; i++) {
        if (seen[i] == NULL) {
            apply_missing(ld, &sec->fields[i], base, node, path);
        }
    }
}

/* The value node for KEY in mapping MAP, or NULL. */
yaml_node_t *cfg_find_value(loader *ld, yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, pair->key);
        if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0) {
            return yaml_document_get_node(ld->doc, pair->value);
        }
    }
    return NULL;
}

/* The value for KEY in MAP when both are mappings; otherwise NULL. */
yaml_node_t *cfg_find_mapping(loader *ld, yaml_node_t *map, const char *key)
{
    yaml_node_t *v;
    if (map == NULL || map->type != YAML_MAPPING_NODE) {
        return NULL;
    }
    v = cfg_find_value(ld, map, key);
    return v != NULL && v->type == YAML_MAPPING_NODE ? v : NULL;
}

/*
 * Read PATH into a NUL-terminated buffer, at most MAX_FILE + 1 bytes (enough
 * to tell that the file is too large without reading /dev/zero for ever);
 * NULL with errno set on failure.
 */
char *cfg_read_file(const char *path, size_t *len, const char **what)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    *what = "cannot open";
    if (fp == NULL) {
        return NULL;
    }
    *what = "cannot read";
    while (n <= MAX_FILE) {
        if (n + 4096 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *b = realloc(buf, ncap);
            if (b == NULL) {
                goto fail;
            }
            buf = b;
            cap = ncap;
        }
        size_t want = cap - n - 1;
        if (want > (size_t)MAX_FILE + 1 - n) {
            want = (size_t)MAX_FILE + 1 - n;
        }
        size_t got = fread(buf + n, 1, want, fp);
        n += got;
        if (got == 0) {
            if (ferror(fp)) {
                goto fail;
            }
            break;
        }
    }
    fclose(fp);
    buf[n] = '\0';
    *len = n;
    return buf;

fail : {
    int e = errno;
    free(buf);
    fclose(fp);
    errno = e;
    return NULL;
}
}

/* The absolute directory holding PATH, malloc'd; NULL with errno set on failure. */
char *cfg_config_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir, *real;

    if (slash == NULL) {
        dir = strdup(".");
    } else if (slash == path) {
        dir = strdup("/");
    } else {
        dir = wr_str_dup_range(path, (size_t)(slash - path));
    }
    if (dir == NULL) {
        return NULL;
    }
    real = realpath(dir, NULL);
    free(dir);
    return real;
}

/* Line and column (1-based) of byte OFFSET in BUF, for reader errors that carry only an offset. */
void cfg_offset_position(const char *buf, size_t len, size_t offset, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < offset && i < len; i++) {
        if (buf[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* Report libyaml's failure: the problem, where it is, and the construct it was inside. */
void cfg_yaml_error(loader *ld, yaml_parser_t *parser, const char *buf, size_t len)
{
    int line, col;

    if (parser->error == YAML_READER_ERROR) {
        cfg_offset_position(buf, len, parser->problem_offset, &line, &col);
    } else {
        line = (int)parser->problem_mark.line + 1;
        col = (int)parser->problem_mark.column + 1;
    }
    if (parser->error == YAML_MEMORY_ERROR) {
        cfg_err_at(ld, line, col, "out of memory while parsing YAML");
    } else if (parser->context != NULL) {
        cfg_err_at(ld, line, col, "YAML syntax error: %s (%s that started at %d:%d)",
                   parser->problem ? parser->problem : "unknown problem", parser->context,
                   (int)parser->context_mark.line + 1, (int)parser->context_mark.column + 1);
    } else {
        cfg_err_at(ld, line, col, "YAML syntax error: %s",
                   parser->problem ? parser->problem : "unknown problem");
    }
}

/*
 * Before the document is built: walk the parser's events and refuse YAML
 * that nests deeper than MAX_YAML_DEPTH collections. libyaml 0.2.5 has no
 * limit of its own and its scanner does work proportional to the depth for
 * every token, so 400 KB of '[' took more than 20 s; stopping at the first
 * collection too deep bounds that (the scanner reads at most about 1 KiB
 * ahead of the parser). A syntax error ends this pass quietly: the loader
 * meets and reports it at the same place. Returns false when too deep (the
 * error recorded).
 */
bool cfg_check_depth(loader *ld, const char *buf, size_t len)
{
    yaml_parser_t parser;
    yaml_event_t event;
    int depth = 0;
    bool ok = true, done = false;

    if (!yaml_parser_initialize(&parser)) {
        return true; /* the loader will run out of memory too, and say so */
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    while (!done && yaml_parser_parse(&parser, &event)) {
        switch (event.type) {
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (++depth > MAX_YAML_DEPTH) {
                cfg_err_at(ld, (int)event.start_mark.line + 1, (int)event.start_mark.column + 1,
                           "YAML collections nested more than %d deep", MAX_YAML_DEPTH);
                ok = false;
                done = true;
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        default:
            break;
        }
        yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);
    return ok;
}

/* Stable sort of the collected errors into file order (few, so insertion sort). */
void cfg_sort_errors(loader *ld)
{
    for (int i = 1; i < ld->nerr; i++) {
        error_entry e = ld->errs[i];
        int j = i - 1;
        while (j >= 0 && (ld->errs[j].line > e.line ||
                          (ld->errs[j].line == e.line && ld->errs[j].col > e.col))) {
            ld->errs[j + 1] = ld->errs[j];
            j--;
        }
        ld->errs[j + 1] = e;
    }
}
