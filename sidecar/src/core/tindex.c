/*
 * tindex: the trace index's lists, built for wr_idem_journal, and its key
 * form for tracecmd.c. See tindex.h.
 */
#include "tindex.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int wr_tindex_key(const char *prefix, const char *value, char *out, size_t cap)
{
    if (strlen(value) > WR_TINDEX_VALUE_MAX) {
        return -1;
    }
    int n = snprintf(out, cap, "%sjournal:#index:%s", prefix, value);
    return n >= 0 && (size_t)n < cap ? 0 : -1;
}

int wr_tindex_member(const char *member, size_t len, size_t *sub_len, const char **key)
{
    const char *colon = memchr(member, ':', len);
    if (colon == NULL) {
        return -1;
    }
    *sub_len = (size_t)(colon - member);
    *key = colon + 1;
    return 0;
}

/* Keep S (malloc'd) in X. Returns S, or NULL (S freed) when out of memory. */
static char *keep(wr_tindex *x, char *s)
{
    if (s == NULL) {
        return NULL;
    }
    if (x->nstrs == x->strcap) {
        int cap = x->strcap ? x->strcap * 2 : 16;
        char **p = realloc(x->strs, (size_t)cap * sizeof(*p));
        if (p == NULL) {
            free(s);
            return NULL;
        }
        x->strs = p;
        x->strcap = cap;
    }
    x->strs[x->nstrs++] = s;
    return s;
}

/* One list: the index key of VALUE with MEMBER (kept in X) as its entry. */
static void add_list(wr_tindex *x, const char *prefix, const char *value, char **member)
{
    size_t cap = strlen(prefix) + strlen(value) + 32;
    char *key = malloc(cap);
    if (key == NULL || wr_tindex_key(prefix, value, key, cap) != 0) {
        free(key);
        return;
    }
    if (keep(x, key) == NULL) {
        return;
    }
    if (x->n == x->cap) {
        int c = x->cap ? x->cap * 2 : 16;
        wr_idem_jlist *p = realloc(x->lists, (size_t)c * sizeof(*p));
        if (p == NULL) {
            return;
        }
        x->lists = p;
        x->cap = c;
    }
    x->lists[x->n++] =
        (wr_idem_jlist){.key = key, .entries = (const char *const *)member, .count = 1};
}

void wr_tindex_add(wr_tindex *x, const wr_subscription *sub, const char *entry, const char *key)
{
    int by_id = sub->idem.source != WR_KEY_MESSAGE_ID;
    if (!sub->idem.enabled || (!by_id && sub->trace_field_count == 0) || entry == NULL ||
        strstr(entry, "\"received_at\":") == NULL) {
        return; /* nothing to index, or not a first entry: no parse */
    }
    json_t *j = json_loads(entry, 0, NULL);
    if (!json_is_integer(json_object_get(j, "received_at"))) {
        json_decref(j);
        return;
    }
    /* the member lives as long as X; every list of this event points at it */
    size_t ml = strlen(sub->name) + strlen(key) + 2;
    char *m = malloc(ml);
    if (m != NULL) {
        snprintf(m, ml, "%s:%s", sub->name, key);
    }
    if (keep(x, m) == NULL) {
        json_decref(j);
        return;
    }
    char **member = &x->strs[x->nstrs - 1];
    /* x->strs may move: point the lists at a copy of the pointer that stays */
    char **slot = malloc(sizeof(*slot));
    if (slot == NULL) {
        json_decref(j);
        return;
    }
    *slot = *member;
    if (keep(x, (char *)slot) == NULL) {
        json_decref(j);
        return;
    }
    const char *id = json_string_value(json_object_get(j, "message_id"));
    if (by_id && id != NULL && id[0] != '\0' && strcmp(id, key) != 0) {
        add_list(x, sub->idem.prefix, id, slot);
    }
    const char *name;
    json_t *v;
    json_object_foreach(json_object_get(j, "fields"), name, v)
    {
        char num[32];
        const char *s = json_string_value(v);
        if (json_is_integer(v)) {
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            s = num;
        }
        if (s != NULL && s[0] != '\0') {
            add_list(x, sub->idem.prefix, s, slot);
        }
    }
    json_decref(j);
}

void wr_tindex_free(wr_tindex *x)
{
    for (int i = 0; i < x->nstrs; i++) {
        free(x->strs[i]);
    }
    free(x->strs);
    free(x->lists);
    memset(x, 0, sizeof(*x));
}
