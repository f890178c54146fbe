/*
 * ordering: per-key lanes inside a worker. See ordering.h.
 *
 * The blocked lanes are an open-addressing hash table of key copies (linear
 * probing, at most half full; removal shifts the run after the slot back, so
 * there are no tombstones), so a batch of any size costs one lookup per
 * message. Keys are copied in; the table only grows.
 */
#include "ordering.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A slot is a lane whose key and head_id the table owns; key NULL: empty. */
typedef wr_lane slot;

struct wr_lanes {
    slot *slots;
    size_t cap; /* a power of two, or 0 */
    size_t count;
};

wr_lanes *wr_lanes_create(void)
{
    return calloc(1, sizeof(wr_lanes));
}

static void free_slots(slot *s, size_t cap)
{
    for (size_t i = 0; i < cap; i++) {
        free((char *)s[i].key);
        free((char *)s[i].head_id);
    }
}

void wr_lanes_destroy(wr_lanes *l)
{
    if (l == NULL) {
        return;
    }
    free_slots(l->slots, l->cap);
    free(l->slots);
    free(l);
}

void wr_lanes_clear(wr_lanes *l)
{
    if (l->count == 0) {
        return;
    }
    free_slots(l->slots, l->cap);
    memset(l->slots, 0, l->cap * sizeof(*l->slots));
    l->count = 0;
}

/* FNV-1a: keys are short, and nobody outside chooses the table's size. */
static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    }
    return h;
}

/* The slot holding KEY, or the empty slot where it would go. CAP > 0. */
static slot *lookup(slot *slots, size_t cap, const char *key)
{
    size_t i = (size_t)hash(key) & (cap - 1);
    while (slots[i].key != NULL && strcmp(slots[i].key, key) != 0) {
        i = (i + 1) & (cap - 1);
    }
    return &slots[i];
}

/* Room for one more key, the table kept at most half full. Returns 0 or -1. */
static int grow(wr_lanes *l)
{
    if ((l->count + 1) * 2 <= l->cap) {
        return 0;
    }
    size_t cap = l->cap ? l->cap * 2 : 16;
    slot *s = calloc(cap, sizeof(*s));
    if (s == NULL) {
        return -1;
    }
    for (size_t i = 0; i < l->cap; i++) {
        if (l->slots[i].key != NULL) {
            *lookup(s, cap, l->slots[i].key) = l->slots[i];
        }
    }
    free(l->slots);
    l->slots = s;
    l->cap = cap;
    return 0;
}

int wr_ordering_finished(wr_action act)
{
    /* a parked message waits for a predecessor that comes later: it holds nothing up */
    return act == WR_ACT_OK || act == WR_ACT_DLQ || act == WR_ACT_DUPLICATE || act == WR_ACT_PARKED;
}

/* Empty slot S and shift the probe run after it back, so every key stays
 * reachable from its home slot. */
static void remove_slot(wr_lanes *l, slot *s)
{
    free((char *)s->key);
    free((char *)s->head_id);
    size_t hole = (size_t)(s - l->slots);
    size_t i = hole;
    l->slots[hole] = (slot){0};
    l->count--;
    for (;;) {
        i = (i + 1) & (l->cap - 1);
        if (l->slots[i].key == NULL) {
            return;
        }
        size_t home = (size_t)hash(l->slots[i].key) & (l->cap - 1);
        /* move it into the hole unless its home lies cyclically in (hole, i] */
        int stays = hole <= i ? (hole < home && home <= i) : (hole < home || home <= i);
        if (!stays) {
            l->slots[hole] = l->slots[i];
            l->slots[i] = (slot){0};
            hole = i;
        }
    }
}

int wr_lanes_note(wr_lanes *l, const char *key, wr_action act, const char *head_id, double now_ms,
                  double hold_ms)
{
    if (wr_ordering_finished(act) || key == NULL || key[0] == '\0') {
        return 0;
    }
    slot *x = (slot *)wr_lanes_find(l, key, now_ms);
    if (x != NULL) {
        if (strcmp(x->head_id, head_id != NULL ? head_id : "") == 0) {
            x->until_ms = now_ms + hold_ms; /* its head, round again: held longer */
        }
        return 0; /* blocked already: the first head stays */
    }
    if (grow(l) != 0) {
        return -1;
    }
    slot *s = lookup(l->slots, l->cap, key);
    char *k = strdup(key);
    char *id = strdup(head_id != NULL ? head_id : "");
    if (k == NULL || id == NULL) {
        free(k);
        free(id);
        return -1;
    }
    *s = (slot){.key = k, .head_id = id, .head_act = act, .until_ms = now_ms + hold_ms};
    l->count++;
    return 1;
}

const wr_lane *wr_lanes_find(wr_lanes *l, const char *key, double now_ms)
{
    if (l->count == 0 || key == NULL || key[0] == '\0') {
        return NULL;
    }
    slot *s = lookup(l->slots, l->cap, key);
    if (s->key == NULL) {
        return NULL;
    }
    if (now_ms >= s->until_ms) {
        remove_slot(l, s);
        return NULL;
    }
    return s;
}

int wr_lanes_release(wr_lanes *l, const char *key, const char *id)
{
    if (l->count == 0 || key == NULL || key[0] == '\0' || id == NULL) {
        return 0;
    }
    slot *s = lookup(l->slots, l->cap, key);
    if (s->key == NULL || strcmp(s->head_id, id) != 0) {
        return 0;
    }
    remove_slot(l, s);
    return 1;
}

size_t wr_lanes_count(const wr_lanes *l)
{
    return l->count;
}

const char *wr_lane_move_name(wr_lane_move m)
{
    switch (m) {
    case WR_LANE_RETURN:
        return "return";
    case WR_LANE_WAIT:
        return "wait";
    default:
        return "run";
    }
}

wr_lane_move wr_ordering_follow(wr_action head_act)
{
    switch (head_act) {
    case WR_ACT_NONE:
        return WR_LANE_RETURN;
    case WR_ACT_WAIT:
        return WR_LANE_WAIT;
    default:
        return WR_LANE_RUN; /* finished, or retried (not parked yet) */
    }
}
