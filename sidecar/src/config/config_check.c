/*
 * config_check.c: checks that span fields or elements.
 *
 * Each runs as a section's finish hook, once the section (or one element of
 * a list) is walked: TLS files need an amqps:// URL, sentinels come with a
 * master name, subscription names and queues are unique, a gate waits for a
 * type some binding routes, and so on. Errors point at the key at fault.
 */
#include "config_internal.h"

#include <stdlib.h>
#include <string.h>

#include "gates.h"
#include "strutil.h"

/*
 * amqp.urls: parse each into cfg->amqp_alts, errors at the item (masked like
 * amqp.url's). The TLS files of amqp.tls apply to every node.
 */
static void parse_alt_urls(loader *ld, wr_config *cfg, yaml_node_t *list, const char *path)
{
    int n = cfg->amqp_url_text_count;
    if (n <= 0 || list == NULL) {
        return;
    }
    cfg->amqp_alts = calloc((size_t)n, sizeof(*cfg->amqp_alts));
    if (cfg->amqp_alts == NULL) {
        cfg_err_at(ld, NODE_LINE(list), NODE_COL(list), "%s.urls: out of memory", path);
        return;
    }
    cfg->amqp_alt_count = n;
    for (int i = 0; i < n; i++) {
        const char *why;
        yaml_node_t *v = list;
        if (list->type == YAML_SEQUENCE_NODE &&
            list->data.sequence.items.start + i < list->data.sequence.items.top) {
            v = yaml_document_get_node(ld->doc, list->data.sequence.items.start[i]);
        }
        if (cfg->amqp_url_texts[i] == NULL) {
            continue; /* not a string: the list's own check said so */
        }
        if (wr_amqp_url_parse(cfg->amqp_url_texts[i], &cfg->amqp_alts[i], &why) != 0) {
            char ipath[PATH_BUF];
            cfg_make_path(ipath, "%s.urls[%d]", path, i);
            cfg_url_error(ld, NODE_LINE(v), NODE_COL(v), ipath, "AMQP", cfg->amqp_url_texts[i],
                          why);
        } else if (cfg->amqp.url != NULL && cfg->amqp_alts[i].ssl != cfg->amqp.ssl) {
            cfg_err_at(ld, NODE_LINE(v), NODE_COL(v),
                       "%s.urls[%d]: every node takes the same scheme as %s.url (%s)", path, i,
                       path, cfg->amqp.ssl ? "amqps://" : "amqp://");
        }
    }
}

/*
 * After the amqp section is walked: TLS files need an amqps:// URL (with
 * amqp:// they would be ignored and the password sent in the clear), and a
 * client certificate comes with its key.
 */
void cfg_finish_amqp(loader *ld, void *base, int index, yaml_node_t *node, const char *path)
{
    wr_config *cfg = base;
    yaml_node_t *tls = cfg_find_value(ld, node, "tls");
    (void)index;
    parse_alt_urls(ld, cfg, cfg_find_value(ld, node, "urls"), path);
    if (tls == NULL || tls->type != YAML_MAPPING_NODE) {
        return;
    }
    if (cfg->amqp.url != NULL && !cfg->amqp.ssl) {
        cfg_err_at(ld, NODE_LINE(tls), NODE_COL(tls),
                   "%s.tls: TLS files are set but %s.url is not an amqps:// URL", path, path);
    }
    if ((cfg->amqp_tls.cert == NULL) != (cfg->amqp_tls.key == NULL) &&
        cfg_find_value(ld, tls, cfg->amqp_tls.cert == NULL ? "cert" : "key") == NULL) {
        cfg_err_at(ld, NODE_LINE(tls), NODE_COL(tls),
                   "%s.tls: cert and key go together: %s is missing", path,
                   cfg->amqp_tls.cert == NULL ? "cert" : "key");
    }
}

/*
 * After the redis section is walked: sentinels and master_name go together,
 * each sentinel is HOST:PORT, and WAIT's timeout stays below the command
 * timeout (a WAIT that outlasts it would be read as a dead connection).
 */
void cfg_finish_redis(loader *ld, void *base, int index, yaml_node_t *node, const char *path)
{
    const wr_config *cfg = base;
    (void)index;
    yaml_node_t *sn = cfg_find_value(ld, node, "sentinels");
    yaml_node_t *mn = cfg_find_value(ld, node, "master_name");
    if (sn != NULL && mn == NULL) {
        cfg_err_at(ld, NODE_LINE(sn), NODE_COL(sn), "%s.sentinels: needs %s.master_name too", path,
                   path);
    } else if (mn != NULL && sn == NULL) {
        cfg_err_at(ld, NODE_LINE(mn), NODE_COL(mn), "%s.master_name: needs %s.sentinels too", path,
                   path);
    }
    for (int i = 0; i < cfg->redis_sentinel_count; i++) {
        const char *s = cfg->redis_sentinels[i];
        const char *colon = strrchr(s, ':');
        char *end = NULL;
        long port = colon != NULL ? strtol(colon + 1, &end, 10) : 0;
        if (colon == NULL || colon == s || end == colon + 1 || *end != '\0' || port < 1 ||
            port > 65535) {
            yaml_node_t *v = sn;
            if (sn != NULL && sn->type == YAML_SEQUENCE_NODE &&
                sn->data.sequence.items.start + i < sn->data.sequence.items.top) {
                v = yaml_document_get_node(ld->doc, sn->data.sequence.items.start[i]);
            }
            cfg_err_at(ld, NODE_LINE(v), NODE_COL(v),
                       "%s.sentinels[%d]: expected HOST:PORT (such as 10.0.0.5:26379)", path, i);
        }
    }
    yaml_node_t *tn = cfg_find_value(ld, node, "min_replicas_timeout");
    if (cfg->redis_min_replicas > 0 && cfg->redis_timeout_ms > 0 &&
        cfg->redis_min_replicas_timeout_ms >= cfg->redis_timeout_ms) {
        yaml_node_t *v = tn != NULL ? tn : cfg_find_value(ld, node, "timeout");
        cfg_err_at(ld, NODE_LINE(v != NULL ? v : node), NODE_COL(v != NULL ? v : node),
                   "%s.min_replicas_timeout (%lld ms) must be shorter than %s.timeout (%lld ms)",
                   path, (long long)cfg->redis_min_replicas_timeout_ms, path,
                   (long long)cfg->redis_timeout_ms);
    }
}

/* After the http section is walked: its listen address must parse. */
void cfg_finish_http(loader *ld, void *base, int index, yaml_node_t *node, const char *path)
{
    const wr_config *cfg = base;
    char host[64];
    int port;
    const char *why;
    (void)index;
    if (cfg->http_listen != NULL &&
        wr_listen_parse(cfg->http_listen, host, sizeof(host), &port, &why) < 0) {
        yaml_node_t *v = cfg_find_value(ld, node, "listen");
        cfg_err_at(ld, NODE_LINE(v), NODE_COL(v), "%s.listen: %s", path, why);
    }
}

/* NODE's `key` may not be message_id (unique per message): WHY says what it
 * then fails to do for the section at PATH. */
static void refuse_message_id_key(loader *ld, yaml_node_t *node, const char *path, const char *why)
{
    yaml_node_t *v = cfg_find_value(ld, node, "key");
    if (v != NULL && v->type == YAML_SCALAR_NODE &&
        strcmp((const char *)v->data.scalar.value, "message_id") == 0) {
        cfg_err_at(ld, NODE_LINE(v), NODE_COL(v),
                   "%s.key: expected header:NAME or json:PATH (a message_id is unique per message "
                   "and %s), got message_id",
                   path, why);
    }
}

/* An `ordering` section turns ordering on; a message_id is unique per message,
 * so it cannot order anything. */
void cfg_finish_ordering(loader *ld, void *base, int index, yaml_node_t *node, const char *path)
{
    (void)index;
    wr_ordering_policy *o = base;
    o->enabled = 1;
    refuse_message_id_key(ld, node, path, "orders nothing");
}

/* A gate: its key is not the message_id, and a type does not wait for itself. */
void cfg_finish_gate(loader *ld, void *elems, int index, yaml_node_t *node, const char *path)
{
    wr_gate *g = &((wr_gate *)elems)[index];
    g->line = NODE_LINE(node);
    g->col = NODE_COL(node);
    refuse_message_id_key(ld, node, path, "names no predecessor");
    yaml_node_t *v = cfg_find_value(ld, node, "after");
    if (v != NULL && g->type != NULL && g->after != NULL && strcmp(g->type, g->after) == 0) {
        cfg_err_at(ld, NODE_LINE(v), NODE_COL(v), "%s.after: a type cannot wait for itself ('%s')",
                   path, g->after);
    }
}

/*
 * Gates, once the policies are merged: they need the idempotency records
 * (the done mark rides on them), and each gate's `after` type must reach the
 * queue through one of its bindings (read as a routing key; a queue without
 * bindings is consumed as it is, and cannot be checked).
 */
void cfg_check_gates(loader *ld, wr_config *cfg, yaml_node_t *root)
{
    yaml_node_t *subs = cfg_find_value(ld, root, "subscriptions");
    if (subs == NULL || subs->type != YAML_SEQUENCE_NODE || cfg->subs == NULL ||
        subs->data.sequence.items.top - subs->data.sequence.items.start != cfg->sub_count) {
        return;
    }
    for (int i = 0; i < cfg->sub_count; i++) {
        const wr_subscription *s = &cfg->subs[i];
        yaml_node_t *item = yaml_document_get_node(ld->doc, subs->data.sequence.items.start[i]);
        yaml_node_t *gates =
            item->type == YAML_MAPPING_NODE ? cfg_find_value(ld, item, "gates") : NULL;
        if (s->gate_count == 0 || gates == NULL) {
            continue;
        }
        if (s->idem.enabled != 1) {
            cfg_err_at(
                ld, NODE_LINE(gates), NODE_COL(gates),
                "subscriptions[%d].gates: need idempotency.enabled (the done mark a gate waits "
                "for is written with the idempotency record)",
                i);
            continue;
        }
        for (int g = 0; g < s->gate_count && s->binding_count > 0; g++) {
            const wr_gate *gt = &s->gates[g];
            if (gt->after == NULL || wr_gates_routed(s, gt->after)) {
                continue;
            }
            yaml_node_t *gn = yaml_document_get_node(ld->doc, gates->data.sequence.items.start[g]);
            yaml_node_t *v = cfg_find_value(ld, gn, "after");
            cfg_err_at(ld, v ? NODE_LINE(v) : gt->line, v ? NODE_COL(v) : gt->col,
                       "subscriptions[%d].gates[%d].after: no binding of queue '%s' routes '%s': "
                       "the gate would wait for a type that never comes",
                       i, g, s->queue, gt->after);
        }
    }
}

/*
 * After subscription INDEX is walked: remember where it starts, derive the
 * default dlq, and check what spans subscriptions (unique names and queues)
 * or fields (the dlq differs from the queue). Inherited values are filled in
 * later, once the defaults section is known wherever it sits in the file.
 */
void cfg_finish_subscription(loader *ld, void *elems, int index, yaml_node_t *node,
                             const char *path)
{
    wr_subscription *subs = elems, *s = &subs[index];
    yaml_node_t *v;

    s->line = NODE_LINE(node);
    s->col = NODE_COL(node);
    if (s->dlq == NULL && s->queue != NULL) {
        if (strlen(s->queue) + 4 > AMQP_SHORTSTR) {
            v = cfg_find_value(ld, node, "queue");
            cfg_err_at(ld, NODE_LINE(v), NODE_COL(v),
                       "%s.queue: the default dlq '<queue>.dlq' would be longer than %d bytes "
                       "(set dlq)",
                       path, AMQP_SHORTSTR);
        } else {
            s->dlq = wr_str_format("%s.dlq", s->queue);
        }
    } else if (s->dlq != NULL && s->queue != NULL && strcmp(s->dlq, s->queue) == 0) {
        v = cfg_find_value(ld, node, "dlq");
        cfg_err_at(ld, NODE_LINE(v), NODE_COL(v), "%s.dlq: must differ from the queue", path);
    }
    if (s->partitions > 0 && !s->ordering.enabled) {
        v = cfg_find_value(ld, node, "partitions");
        cfg_err_at(ld, NODE_LINE(v), NODE_COL(v),
                   "%s.partitions: needs ordering.key (a message's partition is chosen by its "
                   "ordering key)",
                   path);
    } else if (s->partitions > 0 && s->queue != NULL &&
               strlen(s->queue) + strlen(".partitions") > AMQP_SHORTSTR) {
        v = cfg_find_value(ld, node, "queue");
        cfg_err_at(ld, NODE_LINE(v), NODE_COL(v),
                   "%s.queue: the partition exchange '<queue>.partitions' would be longer than %d "
                   "bytes",
                   path, AMQP_SHORTSTR);
    }
    for (int j = 0; j < index; j++) {
        if (s->name != NULL && subs[j].name != NULL && strcmp(s->name, subs[j].name) == 0) {
            char q[16];
            cfg_quote_if_short(s->name, q, sizeof(q));
            v = cfg_find_value(ld, node, "name");
            cfg_err_at(ld, NODE_LINE(v), NODE_COL(v),
                       "%s.name: duplicate subscription name%s (also at %d:%d)", path, q,
                       subs[j].line, subs[j].col);
            break;
        }
    }
    for (int j = 0; j < index; j++) {
        if (s->queue != NULL && subs[j].queue != NULL && strcmp(s->queue, subs[j].queue) == 0) {
            char q[16];
            cfg_quote_if_short(s->queue, q, sizeof(q));
            v = cfg_find_value(ld, node, "queue");
            cfg_err_at(ld, NODE_LINE(v), NODE_COL(v),
                       "%s.queue: queue%s is already consumed by subscriptions[%d] (at %d:%d)",
                       path, q, j, subs[j].line, subs[j].col);
            break;
        }
    }
}

/*
 * After a retry mapping is walked: delays and backoff exclude each other.
 * The error points at whichever of the two keys comes second.
 */
void cfg_finish_retry(loader *ld, void *elems, int index, yaml_node_t *node, const char *path)
{
    const char *first = NULL;

    (void)elems;
    (void)index;
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *key = yaml_document_get_node(ld->doc, pair->key);
        if (key->type != YAML_SCALAR_NODE) {
            continue;
        }
        const char *name = (const char *)key->data.scalar.value;
        if (strcmp(name, "delays") != 0 && strcmp(name, "backoff") != 0) {
            continue;
        }
        if (first == NULL) {
            first = name;
        } else if (strcmp(first, name) != 0) {
            cfg_err_at(ld, NODE_LINE(key), NODE_COL(key),
                       "%s: set either delays or backoff, not both", path);
            return;
        }
    }
}
