/*
 * inflight: a mutex-guarded hash set of keys. See inflight.h.
 *
 * Open addressing with linear probing; removal by backward shift (no
 * tombstones), so a long-running set does not degrade.
 */
#include "inflight.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct wr_inflight {
    pthread_mutex_t lock;
    char **slots; /* NULL: empty */
    size_t cap;   /* a power of two */
    size_t count;
};

static uint64_t hash_of(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    }
    return h;
}

wr_inflight *wr_inflight_create(void)
{
    wr_inflight *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return NULL;
    }
    f->cap = 256;
    f->slots = calloc(f->cap, sizeof(*f->slots));
    if (f->slots == NULL) {
        free(f);
        return NULL;
    }
    pthread_mutex_init(&f->lock, NULL);
    return f;
}

void wr_inflight_destroy(wr_inflight *f)
{
    if (f == NULL) {
        return;
    }
    for (size_t i = 0; i < f->cap; i++) {
        free(f->slots[i]);
    }
    free(f->slots);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* The slot of KEY, or of the empty slot where it would go. */
static size_t find(const wr_inflight *f, const char *key)
{
    size_t i = (size_t)hash_of(key) & (f->cap - 1);
    while (f->slots[i] != NULL && strcmp(f->slots[i], key) != 0) {
        i = (i + 1) & (f->cap - 1);
    }
    return i;
}

static int grow(wr_inflight *f)
{
    size_t cap = f->cap * 2;
    char **slots = calloc(cap, sizeof(*slots));
    if (slots == NULL) {
        return -1;
    }
    char **old = f->slots;
    size_t old_cap = f->cap;
    f->slots = slots;
    f->cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i] != NULL) {
            f->slots[find(f, old[i])] = old[i];
        }
    }
    free(old);
    return 0;
}

int wr_inflight_add(wr_inflight *f, const char *key)
{
    int rc = -1;
    pthread_mutex_lock(&f->lock);
    if (2 * (f->count + 1) > f->cap && grow(f) != 0) {
        goto out;
    }
    size_t i = find(f, key);
    if (f->slots[i] != NULL) {
        rc = 0;
        goto out;
    }
    f->slots[i] = strdup(key);
    if (f->slots[i] != NULL) {
        f->count++;
        rc = 1;
    }
out:
    pthread_mutex_unlock(&f->lock);
    return rc;
}

void wr_inflight_remove(wr_inflight *f, const char *key)
{
    pthread_mutex_lock(&f->lock);
    size_t i = find(f, key);
    if (f->slots[i] != NULL) {
        free(f->slots[i]);
        f->slots[i] = NULL;
        f->count--;
        /* shift the entries after it back, so no probe chain is broken */
        size_t j = i;
        for (;;) {
            j = (j + 1) & (f->cap - 1);
            if (f->slots[j] == NULL) {
                break;
            }
            size_t home = (size_t)hash_of(f->slots[j]) & (f->cap - 1);
            /* move j to the hole i when its home is not in (i, j] (cyclically) */
            int in_between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
            if (!in_between) {
                f->slots[i] = f->slots[j];
                f->slots[j] = NULL;
                i = j;
            }
        }
    }
    pthread_mutex_unlock(&f->lock);
}

int wr_inflight_has(wr_inflight *f, const char *key)
{
    pthread_mutex_lock(&f->lock);
    int has = f->slots[find(f, key)] != NULL;
    pthread_mutex_unlock(&f->lock);
    return has;
}

size_t wr_inflight_count(wr_inflight *f)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->count;
    pthread_mutex_unlock(&f->lock);
    return n;
}
