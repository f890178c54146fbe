/*
 * config_ref.c: the configuration reference.
 *
 * `warren config-reference` prints it and docs/configuration.md holds it
 * (tests/test_docs.py fails when the two differ): one Markdown row per key,
 * in schema order, sections before their keys, with the type column each
 * field type writes (config_types.c).
 */
#include "config_internal.h"

#include <stdio.h>

static void write_rows(FILE *fp, const section *sec, const char *prefix, const char *inherit);

/* The "default" column of F: required, the key it is merged from, or its default. */
static void default_text(const field *f, const char *inherit, char *out, size_t len)
{
    if (f->flags & F_REQUIRED) {
        snprintf(out, len, "required");
    } else if (inherit != NULL && !cfg_ops(f)->nested) {
        snprintf(out, len, "`%s%s`", inherit, f->name);
    } else if (f->def_doc != NULL) {
        snprintf(out, len, "%s", f->def_doc);
    } else if (f->def != NULL) {
        snprintf(out, len, "`%s`", f->def);
    } else {
        snprintf(out, len, "-");
    }
}

/*
 * The rows of the keys nested in F (a mapping or a list of them), written
 * as KEY. Their defaults are those of the section they are merged over:
 * the same keys under INHERIT when F's own section is merged, else F's
 * merge_from (none for a plain list).
 */
static void write_nested(FILE *fp, const field *f, const char *key, const char *inherit)
{
    char sub[PATH_BUF], from[PATH_BUF];
    cfg_make_path(sub, cfg_ops(f)->ref_rows, key);
    if (inherit != NULL) {
        cfg_make_path(from, "%s%s.", inherit, f->name);
    } else if (f->merge_from != NULL) {
        cfg_make_path(from, "%s.", f->merge_from);
    }
    write_rows(fp, f->sub, sub, inherit != NULL || f->merge_from != NULL ? from : NULL);
}

/*
 * Rows for SEC's fields, keys prefixed with PREFIX. INHERIT, when not NULL,
 * is the prefix of the section they are merged over ("defaults.retry."): it
 * stands in for their default.
 */
static void write_rows(FILE *fp, const section *sec, const char *prefix, const char *inherit)
{
    for (size_t i = 0; i < sec->nfields; i++) {
        const field *f = &sec->fields[i];
        bool nested = cfg_ops(f)->ref_rows != NULL;
        char key[PATH_BUF], type[160], def[PATH_BUF + 2];

        cfg_make_path(key, "%s%s", prefix, f->name);
        cfg_reference_type(f, type, sizeof(type));
        default_text(f, inherit, def, sizeof(def));
        fprintf(fp, "| `%s` | %s | %s | %s | %s |\n", key, type, def,
                nested                ? "-"
                : (f->flags & F_LIVE) ? "yes"
                                      : "no (restart)",
                f->desc);
        if (nested) {
            write_nested(fp, f, key, inherit);
        }
    }
}

/*
 * Print the reference table, one row per key in schema order, sections
 * before their keys. Values marked "yes" under live reload take effect on a
 * reload; the others need a restart.
 */
void wr_config_write_reference(FILE *fp)
{
    fprintf(fp, "| key | type | default | live reload | description |\n");
    fprintf(fp, "|---|---|---|---|---|\n");
    write_rows(fp, &cfg_top_section, "", NULL);
}
