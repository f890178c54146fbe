/*
 * config.c: load warren's YAML configuration into a wr_config.
 *
 * The public entry points of config.h: read the file, parse the one YAML
 * document, walk it against the schema (config_load.c), merge the policies
 * (config_merge.c), run the checks that span sections, and either hand back
 * the config or free it and hand back every error in file order. The other
 * files of the module are listed in config_internal.h. The module is pure
 * apart from reading the one file and resolving paths with realpath()
 * (config_load.c, config_types.c); there is no global mutable state.
 */
#include "config_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "strutil.h"
#include "units.h"

const wr_amqp_url *wr_config_amqp_url(const wr_config *cfg, int i)
{
    int n = 1 + cfg->amqp_alt_count;
    int k = ((i % n) + n) % n;
    return k == 0 ? &cfg->amqp : &cfg->amqp_alts[k - 1];
}

/* The public name of wr_units_parse_duration (config.h). */
int wr_config_parse_duration(const char *text, int64_t *ms)
{
    return wr_units_parse_duration(text, ms);
}

void wr_config_free(wr_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    cfg_free_fields(&cfg_top_section, cfg);
    for (int i = 0; i < cfg->amqp_alt_count; i++) {
        wr_amqp_url_clear(&cfg->amqp_alts[i]);
    }
    free(cfg->amqp_alts);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
}

void wr_config_errors_free(wr_config_errors *errs)
{
    if (errs == NULL) {
        return;
    }
    for (int i = 0; i < errs->count; i++) {
        free(errs->lines[i]);
        errs->lines[i] = NULL;
    }
    errs->count = 0;
    errs->dropped = 0;
}

wr_config *wr_config_load(const char *path, wr_config_errors *errs)
{
    const char *what;
    size_t len = 0;
    char *buf = cfg_read_file(path, &len, &what);

    if (buf == NULL) {
        if (errs != NULL) {
            memset(errs, 0, sizeof(*errs));
            errs->lines[0] = wr_str_format("%s: %s: %s", path, what, strerror(errno));
            errs->count = errs->lines[0] != NULL;
            errs->dropped = errs->lines[0] == NULL;
        }
        return NULL;
    }
    wr_config *cfg = wr_config_parse(path, buf, len, errs);
    free(buf);
    return cfg;
}

/* A new, empty config for PATH, with its directory resolved; NULL (error recorded) on failure. */
static wr_config *new_config(loader *ld, const char *path)
{
    wr_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL || (cfg->path = strdup(path)) == NULL) {
        cfg_add_error(ld, 0, 0, wr_str_format("%s: out of memory", path));
        free(cfg);
        return NULL;
    }
    cfg->dir = cfg_config_dir(path);
    if (cfg->dir == NULL) {
        cfg_add_error(ld, 0, 0,
                      wr_str_format("%s: cannot resolve its directory: %s", path, strerror(errno)));
        wr_config_free(cfg);
        return NULL;
    }
    ld->dir = cfg->dir;
    return cfg;
}

/*
 * Parse BUF (LEN bytes) into DOC with PARSER and return its root, a mapping.
 * NULL (error recorded) when the YAML is too deep or broken, or its root is
 * not a mapping; *HAVE_DOC says whether DOC must be deleted. A second
 * document would be silently ignored: it is refused instead.
 */
static yaml_node_t *load_root(loader *ld, yaml_parser_t *parser, yaml_document_t *doc,
                              const char *buf, size_t len, bool *have_doc)
{
    if (!cfg_check_depth(ld, buf, len)) {
        return NULL;
    }
    yaml_parser_set_input_string(parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(parser, doc)) {
        cfg_yaml_error(ld, parser, buf, len);
        return NULL;
    }
    *have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(doc);
    if (root == NULL || cfg_is_null_scalar(root)) {
        cfg_err_at(ld, 1, 1,
                   "empty configuration: expected a mapping with 'amqp', 'redis' and "
                   "'subscriptions'");
        return NULL;
    }
    if (root->type != YAML_MAPPING_NODE) {
        cfg_err_at(ld, NODE_LINE(root), NODE_COL(root),
                   "expected a mapping at the top level, got %s", cfg_node_kind(root));
        return NULL;
    }
    yaml_document_t extra;
    if (!yaml_parser_load(parser, &extra)) {
        cfg_yaml_error(ld, parser, buf, len);
    } else {
        yaml_node_t *extra_root = yaml_document_get_root_node(&extra);
        if (extra_root != NULL) {
            cfg_err_at(ld, NODE_LINE(extra_root), NODE_COL(extra_root),
                       "expected a single YAML document, found another one here");
        }
        yaml_document_delete(&extra);
    }
    return root;
}

/*
 * Once a config is known to be valid: subscriptions take the defaults they
 * left out, and the values that live in one place but are read through
 * another (amqp.tls through each broker URL, the sentinels through
 * redis.url, dlq_type auto) are wired up.
 */
static void resolve(wr_config *cfg)
{
    cfg_inherit_defaults(cfg);
    cfg->amqp.tls = &cfg->amqp_tls;
    for (int i = 0; i < cfg->amqp_alt_count; i++) {
        cfg->amqp_alts[i].tls = &cfg->amqp_tls;
    }
    for (int i = 0; i < cfg->sub_count; i++) {
        wr_subscription *sub = &cfg->subs[i];
        sub->dlq_quorum = sub->dlq_type == 2 || (sub->dlq_type == 0 && cfg->amqp_alt_count > 0);
    }
    cfg->redis.sentinels = cfg->redis_sentinels;
    cfg->redis.sentinel_count = cfg->redis_sentinel_count;
    cfg->redis.master_name = cfg->redis_master_name;
}

/*
 * Hand the loader's errors, in file order, to ERRS (or free them when ERRS is
 * NULL), and the loader's copies of the defaults back. Returns CFG, or NULL
 * (CFG freed) when there was any error.
 */
static wr_config *finish_load(loader *ld, wr_config *cfg, wr_config_errors *errs)
{
    cfg_free_fields(&cfg_retry_section, &ld->def_retry);
    cfg_free_fields(&cfg_idem_section, &ld->def_idem);
    cfg_free_fields(&cfg_breaker_section, &ld->def_breaker);
    if (ld->nerr > 0 || ld->dropped > 0) {
        wr_config_free(cfg);
        cfg = NULL;
    }
    cfg_sort_errors(ld);
    for (int i = 0; i < ld->nerr; i++) {
        if (errs != NULL) {
            errs->lines[i] = ld->errs[i].text;
        } else {
            free(ld->errs[i].text);
        }
    }
    if (errs != NULL) {
        errs->count = ld->nerr;
        errs->dropped = ld->dropped;
    }
    return cfg;
}

/*
 * Parse TEXT: one YAML document, walked against the schema, policies merged,
 * inherited defaults filled. Any error along the way is collected; if there
 * is one, the half-built config is freed and NULL returned with ERRS filled.
 */
wr_config *wr_config_parse(const char *path, const char *text, size_t len, wr_config_errors *errs)
{
    loader ld;
    yaml_parser_t parser;
    yaml_document_t doc;
    bool have_doc = false;
    wr_config *cfg = NULL;

    memset(&ld, 0, sizeof(ld));
    ld.file = path;
    ld.doc = &doc;
    cfg_mark_unset_fields(&cfg_retry_section, &ld.def_retry);
    cfg_mark_unset_fields(&cfg_idem_section, &ld.def_idem);
    cfg_mark_unset_fields(&cfg_breaker_section, &ld.def_breaker);
    if (errs != NULL) {
        memset(errs, 0, sizeof(*errs));
    }
    if (len > MAX_FILE) {
        int line, col;
        cfg_offset_position(text, len, MAX_FILE, &line, &col);
        cfg_err_at(&ld, line, col, "the file is larger than %d MiB", MAX_FILE >> 20);
        return finish_load(&ld, NULL, errs);
    }
    if ((cfg = new_config(&ld, path)) == NULL) {
        return finish_load(&ld, NULL, errs);
    }
    if (!yaml_parser_initialize(&parser)) {
        cfg_add_error(&ld, 0, 0, wr_str_format("%s: out of memory", path));
        return finish_load(&ld, cfg, errs);
    }
    yaml_node_t *root = load_root(&ld, &parser, &doc, text, len, &have_doc);
    if (root != NULL) {
        cfg_walk_mapping(&ld, &cfg_top_section, cfg, root, "");
        cfg_merge_policies(&ld, cfg, root);
        cfg_check_gates(&ld, cfg, root);
        if (ld.nerr == 0 && ld.dropped == 0) {
            resolve(cfg);
        }
    }
    if (have_doc) {
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    return finish_load(&ld, cfg, errs);
}
