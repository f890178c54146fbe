/*
 * config_merge.c: defaults merged into subscriptions.
 *
 * retry, idempotency and breaker are merged key by key once the whole file
 * is walked (the defaults may come after the subscriptions): a
 * subscription's own value, else defaults.<section>'s, else the built-in
 * default. Fields marked F_INHERIT (prefetch, handler_timeout...) take the
 * defaults section's value when a subscription leaves them out.
 */
#include "config_internal.h"

#include <stdlib.h>
#include <string.h>

#include "units.h"

/*
 * Give F_MERGE field F in BASE its built-in default, f->def. Scalars go
 * through cfg_set_scalar like any value; a T_DURLIST default is written as a
 * YAML flow list of durations, "[1s, 5s]".
 */
static void set_default(loader *ld, const field *f, void *base, const char *path)
{
    const cfg_type_ops *ops = cfg_ops(f);
    if (ops->set_default != NULL) {
        ops->set_default(ld, f, base, path);
    } else {
        cfg_set_scalar(ld, f, base, f->def, 0, 0, path);
    }
}

/*
 * Fill the unset F_MERGE fields of SEC in DST, key by key: from SRC where it
 * has the key set (SRC NULL: nowhere), otherwise from the built-in default.
 */
static void merge_fields(loader *ld, const section *sec, void *dst, void *src, const char *path)
{
    for (size_t i = 0; i < sec->nfields; i++) {
        const field *f = &sec->fields[i];
        char key[PATH_BUF];
        cfg_join_key(key, path, f->name);
        if (cfg_ops(f)->nested) {
            merge_fields(ld, f->sub, (char *)dst + f->offset,
                         src != NULL ? (char *)src + f->offset : NULL, key);
        } else if (!(f->flags & F_MERGE) || cfg_is_set(f, dst)) {
            continue;
        } else if (src != NULL && cfg_is_set(f, src)) {
            cfg_ops(f)->copy(ld, f, dst, src, key);
        } else {
            set_default(ld, f, dst, key);
        }
    }
}

/*
 * Complete retry policy DST, read from mapping NODE (NULL when absent), over
 * SRC (the completed defaults; NULL for the defaults themselves). The kind,
 * delays or backoff, is the one NODE sets, else SRC's, else delays; the other
 * kind is dropped whole: no delays with backoff, built-in backoff values with
 * delays. Then checks backoff.max >= backoff.initial, blaming the key DST set
 * itself (a clash within the defaults is reported once, for the defaults).
 */
static void merge_retry(loader *ld, wr_retry_policy *dst, yaml_node_t *node, wr_retry_policy *src,
                        const char *path)
{
    bool own_initial = dst->initial_ms >= 0, own_max = dst->max_ms >= 0;
    bool backoff;
    char bpath[PATH_BUF];

    if (node != NULL && cfg_find_value(ld, node, "delays") != NULL) {
        backoff = false;
    } else if (node != NULL && cfg_find_value(ld, node, "backoff") != NULL) {
        backoff = true;
    } else {
        backoff = src != NULL && src->delays_ms == NULL;
    }
    merge_fields(ld, &cfg_retry_section, dst, src, path);
    cfg_join_key(bpath, path, "backoff");
    if (backoff) {
        free(dst->delays_ms);
        dst->delays_ms = NULL;
        dst->delay_count = 0;
    } else {
        cfg_mark_unset_fields(&cfg_backoff_section, dst);
        merge_fields(ld, &cfg_backoff_section, dst, NULL, bpath);
        return;
    }
    if (dst->max_ms >= dst->initial_ms || (!own_initial && !own_max)) {
        return;
    }
    /* Set here, so NODE has a backoff mapping; skip if one of the two failed to parse. */
    yaml_node_t *b = cfg_find_mapping(ld, node, "backoff");
    yaml_node_t *vi = b != NULL ? cfg_find_value(ld, b, "initial") : NULL;
    yaml_node_t *vm = b != NULL ? cfg_find_value(ld, b, "max") : NULL;
    char other[32];
    if (b == NULL || (vi != NULL && !own_initial) || (vm != NULL && !own_max)) {
        return;
    }
    if (own_max) {
        wr_units_format_duration(dst->initial_ms, other, sizeof(other));
        cfg_err_at(ld, NODE_LINE(vm), NODE_COL(vm), "%s.max: must be at least backoff.initial (%s)",
                   bpath, other);
    } else {
        wr_units_format_duration(dst->max_ms, other, sizeof(other));
        cfg_err_at(ld, NODE_LINE(vi), NODE_COL(vi), "%s.initial: must be at most backoff.max (%s)",
                   bpath, other);
    }
}

/*
 * Once the whole file is walked (the defaults may come after the
 * subscriptions): complete defaults.retry, defaults.idempotency and
 * defaults.breaker from the built-in defaults, then each named breaker and
 * each subscription's retry, idempotency and breaker from those, key by key.
 * Subscriptions or sections that are not mappings were reported already and
 * are skipped.
 */
void cfg_merge_policies(loader *ld, wr_config *cfg, yaml_node_t *root)
{
    yaml_node_t *defaults = cfg_find_mapping(ld, root, "defaults");
    yaml_node_t *subs = cfg_find_value(ld, root, "subscriptions");

    merge_retry(ld, &ld->def_retry, cfg_find_mapping(ld, defaults, "retry"), NULL,
                "defaults.retry");
    merge_fields(ld, &cfg_idem_section, &ld->def_idem, NULL, "defaults.idempotency");
    merge_fields(ld, &cfg_breaker_section, &ld->def_breaker, NULL, "defaults.breaker");
    for (int i = 0; i < cfg->breaker_count; i++) {
        char path[PATH_BUF];
        cfg_make_path(path, "breakers.%s", cfg->breaker_names[i] ? cfg->breaker_names[i] : "?");
        merge_fields(ld, &cfg_breaker_section, &cfg->breakers[i], &ld->def_breaker, path);
    }
    if (subs == NULL || subs->type != YAML_SEQUENCE_NODE || cfg->subs == NULL ||
        subs->data.sequence.items.top - subs->data.sequence.items.start != cfg->sub_count) {
        return;
    }
    for (int i = 0; i < cfg->sub_count; i++) {
        yaml_node_t *item = yaml_document_get_node(ld->doc, subs->data.sequence.items.start[i]);
        wr_subscription *s = &cfg->subs[i];
        char path[PATH_BUF];
        yaml_node_t *v;
        if (item->type != YAML_MAPPING_NODE) {
            continue;
        }
        v = cfg_find_value(ld, item, "retry");
        if (v == NULL || v->type == YAML_MAPPING_NODE) {
            cfg_make_path(path, "subscriptions[%d].retry", i);
            merge_retry(ld, &s->retry, v, &ld->def_retry, path);
        }
        v = cfg_find_value(ld, item, "idempotency");
        if (v == NULL || v->type == YAML_MAPPING_NODE) {
            cfg_make_path(path, "subscriptions[%d].idempotency", i);
            merge_fields(ld, &cfg_idem_section, &s->idem, &ld->def_idem, path);
        }
        v = cfg_find_value(ld, item, "breaker");
        if (v == NULL || v->type == YAML_MAPPING_NODE) {
            cfg_make_path(path, "subscriptions[%d].breaker", i);
            merge_fields(ld, &cfg_breaker_section, &s->breaker, &ld->def_breaker, path);
        }
    }
}

/*
 * The final pass: subscriptions take the defaults they did not override
 * (fields marked F_INHERIT), and batch_size is clamped to prefetch, since a
 * batch can never hold more than the broker sends ahead.
 */
void cfg_inherit_defaults(wr_config *cfg)
{
    for (int i = 0; i < cfg->sub_count; i++) {
        wr_subscription *s = &cfg->subs[i];
        for (size_t k = 0; k < cfg_subscription_section.nfields; k++) {
            const field *f = &cfg_subscription_section.fields[k];
            if (!(f->flags & F_INHERIT)) {
                continue;
            }
            if (!cfg_is_set(f, s)) {
                memcpy(AT(s, f->offset, char), AT(cfg, f->inherit_offset, char),
                       cfg_ops(f)->plain_size);
            }
        }
        if (s->batch_size > s->prefetch) {
            s->batch_size = s->prefetch;
        }
    }
}
