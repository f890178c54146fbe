/*
 * breakers: shared, locked circuit breakers. See breakers.h.
 */
#include "breakers.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct wr_shared_brk {
    pthread_mutex_t lock;
    wr_brk b;
    char name[128];               /* "subscription:orders" or "payments" */
    char kind[16];                /* "subscription" or "dependency" */
    unsigned long transitions[3]; /* changes into each wr_brk_state (under lock) */
    int64_t opened_wall_ms;       /* wall clock of the last opening */
    int64_t half_open_wall_ms;    /* wall clock of the last turn to half-open */
    wr_brk_failures counted;      /* newest first (under lock) */
    wr_brk_failures recent;
    wr_shared_brk *next;
};

struct wr_breakers {
    pthread_mutex_t lock; /* guards the named list */
    wr_shared_brk *subs;  /* sub_count of them */
    int sub_count;
    wr_shared_brk *named; /* linked list */
};

static void init_one(wr_shared_brk *b, const char *kind, const char *name,
                     const wr_breaker_policy *p)
{
    pthread_mutex_init(&b->lock, NULL);
    wr_brk_init(&b->b, p);
    snprintf(b->name, sizeof(b->name), "%s", name);
    snprintf(b->kind, sizeof(b->kind), "%s", kind);
}

wr_breakers *wr_breakers_create(const wr_config *cfg)
{
    wr_breakers *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->subs = calloc((size_t)(cfg->sub_count > 0 ? cfg->sub_count : 1), sizeof(*s->subs));
    if (s->subs == NULL) {
        free(s);
        return NULL;
    }
    s->sub_count = cfg->sub_count;
    for (int i = 0; i < cfg->sub_count; i++) {
        init_one(&s->subs[i], "subscription", cfg->subs[i].name, &cfg->subs[i].breaker);
    }
    for (int i = 0; i < cfg->breaker_count; i++) {
        wr_shared_brk *b = calloc(1, sizeof(*b));
        if (b == NULL) {
            break;
        }
        init_one(b, "dependency", cfg->breaker_names[i], &cfg->breakers[i]);
        b->next = s->named;
        s->named = b;
    }
    return s;
}

void wr_breakers_destroy(wr_breakers *s)
{
    if (s == NULL) {
        return;
    }
    for (int i = 0; i < s->sub_count; i++) {
        pthread_mutex_destroy(&s->subs[i].lock);
    }
    free(s->subs);
    while (s->named != NULL) {
        wr_shared_brk *n = s->named->next;
        pthread_mutex_destroy(&s->named->lock);
        free(s->named);
        s->named = n;
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
}

wr_shared_brk *wr_breakers_sub(wr_breakers *s, int i)
{
    return &s->subs[i];
}

wr_shared_brk *wr_breakers_named(wr_breakers *s, const char *name,
                                 const wr_breaker_policy *fallback)
{
    pthread_mutex_lock(&s->lock);
    wr_shared_brk *b = s->named;
    while (b != NULL && strcmp(b->name, name) != 0) {
        b = b->next;
    }
    if (b == NULL && (b = calloc(1, sizeof(*b))) != NULL) {
        init_one(b, "dependency", name, fallback);
        b->next = s->named;
        s->named = b;
    }
    pthread_mutex_unlock(&s->lock);
    return b;
}

/* Count and log a state change (called with the breaker's lock held: lines stay in
 * order). */
static void log_change(const wr_shared_brk *b, const wr_brk_change *c)
{
    static const char *msgs[] = {"breaker closed", "breaker opened", "breaker half-open"};
    ((wr_shared_brk *)b)->transitions[c->to]++;
    wr_logline l;
    wr_log_begin(&l, c->to == WR_BRK_OPEN ? WR_LOG_WARN : WR_LOG_INFO, msgs[c->to]);
    wr_log_str(&l, "breaker", b->name);
    wr_log_str(&l, "kind", b->kind);
    wr_log_str(&l, "from", wr_brk_state_name(c->from));
    wr_log_str(&l, "to", wr_brk_state_name(c->to));
    if (c->to == WR_BRK_HALF_OPEN) {
        ((wr_shared_brk *)b)->half_open_wall_ms = wr_now_ms();
    }
    if (c->to == WR_BRK_OPEN) {
        ((wr_shared_brk *)b)->opened_wall_ms = wr_now_ms();
        if (c->from == WR_BRK_HALF_OPEN) {
            wr_log_str(&l, "why", "a probe failed");
        } else {
            wr_log_int(&l, "calls", c->calls);
            wr_log_int(&l, "failures", c->failures);
        }
        wr_log_int(&l, "open_ms", b->b.p.open_ms);
        /* the failures that opened it, newest first: "id: error; id: error" */
        char list[1024];
        size_t n = 0;
        list[0] = '\0';
        for (int k = 0; k < b->counted.n && n < sizeof(list); k++) {
            int w = snprintf(list + n, sizeof(list) - n, "%s%s: %s", k > 0 ? "; " : "",
                             b->counted.e[k].message_id[0] ? b->counted.e[k].message_id : "-",
                             b->counted.e[k].error);
            n += w > 0 ? (size_t)w : 0;
        }
        if (b->counted.n > 0) {
            wr_log_str(&l, "last_failures", list);
        }
    }
    wr_log_end(&l);
}

/* Count a call's result in B (lock held), logging the change it makes. */
static void record_locked(wr_shared_brk *b, int ok)
{
    wr_brk_change c;
    int changed = 0;
    wr_brk_record(&b->b, wr_now_ms(), ok, &c, &changed);
    if (changed) {
        log_change(b, &c);
    }
}

/* B's state at NOW (lock held), logging the change that reading it makes (an
 * open breaker whose time is up turns half-open). */
static wr_brk_state state_locked(wr_shared_brk *b, int64_t now)
{
    wr_brk_change c;
    int changed = 0;
    wr_brk_state st = wr_brk_state_at(&b->b, now, &c, &changed);
    if (changed) {
        log_change(b, &c);
    }
    return st;
}

int wr_shared_brk_allow(wr_shared_brk *b)
{
    wr_brk_change c;
    int changed = 0;
    pthread_mutex_lock(&b->lock);
    int ok = wr_brk_allow(&b->b, wr_now_ms(), &c, &changed);
    if (changed) {
        log_change(b, &c);
    }
    pthread_mutex_unlock(&b->lock);
    return ok;
}

void wr_shared_brk_record(wr_shared_brk *b, int ok)
{
    pthread_mutex_lock(&b->lock);
    record_locked(b, ok);
    pthread_mutex_unlock(&b->lock);
}

/* Put a failure first in F (the oldest falls out). */
static void push_failure(wr_brk_failures *f, const char *id, size_t len, const char *error,
                         int counted)
{
    memmove(&f->e[1], &f->e[0], sizeof(f->e[0]) * (WR_BRK_KEEP - 1));
    f->n += f->n < WR_BRK_KEEP;
    f->e[0].at_ms = wr_now_ms();
    if (id == NULL) {
        len = 0;
    }
    if (len >= sizeof(f->e[0].message_id)) {
        len = sizeof(f->e[0].message_id) - 1;
    }
    memcpy(f->e[0].message_id, id != NULL ? id : "", len);
    f->e[0].message_id[len] = '\0';
    snprintf(f->e[0].error, sizeof(f->e[0].error), "%s", error ? error : "");
    f->e[0].counted = counted;
}

void wr_shared_brk_failed(wr_shared_brk *b, const char *id, size_t len, const char *error)
{
    pthread_mutex_lock(&b->lock);
    push_failure(&b->counted, id, len, error, 1);
    push_failure(&b->recent, id, len, error, 1);
    record_locked(b, 0);
    pthread_mutex_unlock(&b->lock);
}

void wr_shared_brk_note(wr_shared_brk *b, const char *id, size_t len, const char *error)
{
    pthread_mutex_lock(&b->lock);
    push_failure(&b->recent, id, len, error, 0);
    pthread_mutex_unlock(&b->lock);
}

void wr_shared_brk_status(wr_shared_brk *b, wr_brk_status *st)
{
    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&b->lock);
    int64_t now = wr_now_ms();
    st->state = state_locked(b, now);
    st->opened_at_ms = b->opened_wall_ms;
    st->probe_at_ms = st->state == WR_BRK_OPEN ? now + wr_brk_open_left(&b->b, now) : 0;
    st->half_open_at_ms = st->state == WR_BRK_HALF_OPEN ? b->half_open_wall_ms : 0;
    st->opened_count = b->b.opened_count;
    st->counted = b->counted;
    st->recent = b->recent;
    pthread_mutex_unlock(&b->lock);
}

void wr_shared_brk_release(wr_shared_brk *b)
{
    pthread_mutex_lock(&b->lock);
    wr_brk_release(&b->b);
    pthread_mutex_unlock(&b->lock);
}

int wr_shared_brk_blocks(wr_shared_brk *b, int64_t *wait_ms)
{
    *wait_ms = 200;
    if (!b->b.p.enabled) {
        return 0;
    }
    pthread_mutex_lock(&b->lock);
    int64_t now = wr_now_ms();
    wr_brk_state st = state_locked(b, now);
    int blocks = st == WR_BRK_OPEN ||
                 (st == WR_BRK_HALF_OPEN && b->b.probes_given >= b->b.p.half_open_probes);
    if (st == WR_BRK_OPEN) {
        int64_t left = wr_brk_open_left(&b->b, now);
        *wait_ms = left < 200 ? left + 1 : 200;
    }
    pthread_mutex_unlock(&b->lock);
    return blocks;
}

wr_brk_state wr_shared_brk_state(wr_shared_brk *b)
{
    pthread_mutex_lock(&b->lock);
    wr_brk_state st = state_locked(b, wr_now_ms());
    pthread_mutex_unlock(&b->lock);
    return st;
}

const char *wr_shared_brk_name(const wr_shared_brk *b)
{
    return b->name;
}

static void visit(wr_shared_brk *b, wr_breakers_visit fn, void *ud)
{
    wr_brk_state st = wr_shared_brk_state(b);
    unsigned long tr[3];
    pthread_mutex_lock(&b->lock);
    memcpy(tr, b->transitions, sizeof(tr));
    pthread_mutex_unlock(&b->lock);
    fn(ud, b->name, b->kind, st, tr);
}

void wr_breakers_each(wr_breakers *s, wr_breakers_visit fn, void *ud)
{
    for (int i = 0; i < s->sub_count; i++) {
        visit(&s->subs[i], fn, ud);
    }
    /* named breakers are only ever prepended and live as long as the set: the
     * list from its head at this moment stays valid without the lock */
    pthread_mutex_lock(&s->lock);
    wr_shared_brk *b = s->named;
    pthread_mutex_unlock(&s->lock);
    for (; b != NULL; b = b->next) {
        visit(b, fn, ud);
    }
}
