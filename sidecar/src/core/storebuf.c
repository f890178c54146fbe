/*
 * storebuf: ctx.store's write buffer and read overlay. See storebuf.h.
 *
 * Every key a message writes gets one `skey`: its kind in this message, the
 * state of its value relative to Redis (UNKNOWN: Redis still counts, with the
 * overlay on top; ABSENT: deleted here; KNOWN: fully described here, Redis no
 * longer counts) and, for hashes and sets, one entry per field or member.
 * Lookups are linear: a message writes a few keys (at most max_writes).
 */
#include "storebuf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contract.h"

enum kind { K_NONE = 0, K_STR, K_HASH, K_SET };
enum state { S_UNKNOWN = 0, S_ABSENT, S_KNOWN };
enum fstate { F_SET = 0, F_DEL, F_DELTA };

typedef struct {
    char *p;
    size_t n;
} own;

typedef struct {
    own name;      /* field or member */
    int st;        /* enum fstate */
    own val;       /* F_SET of a hash field */
    int64_t delta; /* F_DELTA */
} fent;

typedef struct {
    own key;
    int kind;      /* enum kind */
    int state;     /* enum state */
    own str;       /* K_STR, S_KNOWN */
    int has_delta; /* K_STR, S_UNKNOWN: incremented over the base */
    int64_t delta;
    int ttl_known; /* a write fixed the TTL: ttl_ms (-1: none) */
    int64_t ttl_ms;
    fent *f;
    size_t nf, capf;
} skey;

struct wr_storebuf {
    int max_writes;
    wr_sb_write *w; /* grows as needed, up to max_writes */
    int nw, capw;
    skey *k;
    int nk, capk;
    /* numbers computed by a read (base + delta): valid until the next read */
    wr_sb_guard *g; /* reads to check at commit */
    int ng, capg;
    int peeking; /* inside wr_storebuf_peek: keep no guards */
    char strnum[24];
    char (*nums)[24]; /* one slot per field of the key read */
    size_t nums_cap;
};

static const char *const op_names[] = {"set",  "del",     "incrby", "expire", "hset",
                                       "hdel", "hincrby", "sadd",   "srem"};
static const char *const kind_names[] = {"nothing", "a string", "a hash", "a set"};

const char *wr_sb_op_name(wr_sb_op op)
{
    return op_names[op];
}

static int own_set(own *o, wr_sbstr s)
{
    char *p = malloc(s.n + 1);
    if (p == NULL) {
        return -1;
    }
    if (s.n > 0) {
        memcpy(p, s.p, s.n);
    }
    p[s.n] = '\0';
    free(o->p);
    o->p = p;
    o->n = s.n;
    return 0;
}

static void own_free(own *o)
{
    free(o->p);
    o->p = NULL;
    o->n = 0;
}

static wr_sbstr view(const own *o)
{
    return (wr_sbstr){o->p ? o->p : "", o->n};
}

static int same(const own *o, wr_sbstr s)
{
    return o->n == s.n && (s.n == 0 || memcmp(o->p, s.p, s.n) == 0);
}

/*
 * Parse an integer as Redis does (string2ll): "0", or an optional '-' and a
 * first digit 1-9 then digits; no '+', no leading zeros ("05", "-0"), no
 * spaces, at most 20 characters, in int64 range. The same grammar as the
 * commit script (sidecar/scripts/finish.lua) and the test kit.
 */
static int parse_int(wr_sbstr s, int64_t *out)
{
    char buf[32];
    if (s.n == 0 || s.n > 20) {
        return -1;
    }
    memcpy(buf, s.p, s.n);
    buf[s.n] = '\0';
    if (!(s.n == 1 && buf[0] == '0')) {
        size_t first = buf[0] == '-' ? 1 : 0;
        if (first >= s.n || buf[first] < '1' || buf[first] > '9') {
            return -1;
        }
        for (size_t i = first + 1; i < s.n; i++) {
            if (buf[i] < '0' || buf[i] > '9') {
                return -1;
            }
        }
    }
    errno = 0;
    char *end;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0') {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

static int add_checked(int64_t a, int64_t b, int64_t *out)
{
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

static void clear_fields(skey *k)
{
    for (size_t i = 0; i < k->nf; i++) {
        own_free(&k->f[i].name);
        own_free(&k->f[i].val);
    }
    k->nf = 0;
}

wr_storebuf *wr_storebuf_create(int max_writes)
{
    wr_storebuf *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    b->max_writes = max_writes > 0 ? max_writes : 256;
    return b;
}

void wr_storebuf_reset(wr_storebuf *b)
{
    for (int i = 0; i < b->nw; i++) {
        free((char *)b->w[i].a.p);
        free((char *)b->w[i].b.p);
    }
    b->nw = 0;
    for (int i = 0; i < b->ng; i++) {
        for (size_t j = 0; j < b->g[i].count; j++) {
            free((char *)b->g[i].items[j].p);
        }
        free(b->g[i].items);
        free((char *)b->g[i].arg.p);
    }
    b->ng = 0;
    for (int i = 0; i < b->nk; i++) {
        skey *k = &b->k[i];
        clear_fields(k);
        free(k->f);
        own_free(&k->key);
        own_free(&k->str);
    }
    b->nk = 0;
}

void wr_storebuf_destroy(wr_storebuf *b)
{
    if (b == NULL) {
        return;
    }
    wr_storebuf_reset(b);
    free(b->k);
    free(b->w);
    free(b->g);
    free(b->nums);
    free(b);
}

static skey *find_key(wr_storebuf *b, wr_sbstr key, int *index)
{
    for (int i = 0; i < b->nk; i++) {
        if (same(&b->k[i].key, key)) {
            if (index) {
                *index = i;
            }
            return &b->k[i];
        }
    }
    return NULL;
}

static skey *get_key(wr_storebuf *b, wr_sbstr key, int *index)
{
    skey *k = find_key(b, key, index);
    if (k != NULL) {
        return k;
    }
    if (b->nk == b->capk) {
        int cap = b->capk ? b->capk * 2 : 8;
        skey *nk = realloc(b->k, (size_t)cap * sizeof(*nk));
        if (nk == NULL) {
            return NULL;
        }
        b->k = nk;
        b->capk = cap;
    }
    k = &b->k[b->nk];
    memset(k, 0, sizeof(*k));
    if (own_set(&k->key, key) != 0) {
        return NULL;
    }
    *index = b->nk++;
    return k;
}

static fent *find_field(skey *k, wr_sbstr name)
{
    for (size_t i = 0; i < k->nf; i++) {
        if (same(&k->f[i].name, name)) {
            return &k->f[i];
        }
    }
    return NULL;
}

static fent *get_field(skey *k, wr_sbstr name)
{
    fent *f = find_field(k, name);
    if (f != NULL) {
        return f;
    }
    if (k->nf == k->capf) {
        size_t cap = k->capf ? k->capf * 2 : 4;
        fent *nf = realloc(k->f, cap * sizeof(*nf));
        if (nf == NULL) {
            return NULL;
        }
        k->f = nf;
        k->capf = cap;
    }
    f = &k->f[k->nf];
    memset(f, 0, sizeof(*f));
    if (own_set(&f->name, name) != 0) {
        return NULL;
    }
    k->nf++;
    return f;
}

static int set_num(own *o, int64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%" PRId64, v);
    return own_set(o, (wr_sbstr){buf, (size_t)n});
}

/* The key starts to exist through this message's write (it was deleted here). */
static void create_known(skey *k)
{
    if (k->state == S_ABSENT) {
        k->state = S_KNOWN;
        k->ttl_known = 1;
        k->ttl_ms = -1;
    }
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errcap, __VA_ARGS__);                                                        \
        return -1;                                                                                 \
    } while (0)
#define OOM() FAIL("out of memory")

/* Apply one write to the overlay of K. */
static int overlay(skey *k, wr_sb_op op, wr_sbstr a, wr_sbstr bv, int64_t num, char *err,
                   size_t errcap)
{
    int want = op == WR_SB_INCRBY                                            ? K_STR
               : op == WR_SB_HSET || op == WR_SB_HDEL || op == WR_SB_HINCRBY ? K_HASH
               : op == WR_SB_SADD || op == WR_SB_SREM                        ? K_SET
                                                                             : K_NONE;
    if (want != K_NONE && k->kind != K_NONE && k->kind != want) {
        FAIL(WR_ES_KIND, k->key.p, kind_names[k->kind]);
    }
    switch (op) {
    case WR_SB_SET:
        clear_fields(k);
        if (own_set(&k->str, a) != 0) {
            OOM();
        }
        k->kind = K_STR;
        k->state = S_KNOWN;
        k->has_delta = 0;
        k->delta = 0;
        k->ttl_known = 1;
        k->ttl_ms = num > 0 ? num : -1;
        return 0;
    case WR_SB_DEL:
        clear_fields(k);
        own_free(&k->str);
        k->kind = K_NONE;
        k->state = S_ABSENT;
        k->has_delta = 0;
        k->delta = 0;
        k->ttl_known = 1;
        k->ttl_ms = -2;
        return 0;
    case WR_SB_EXPIRE:
        if (k->state != S_ABSENT) {
            k->ttl_known = 1;
            k->ttl_ms = num;
        }
        return 0;
    case WR_SB_INCRBY:
        k->kind = K_STR;
        if (k->state == S_KNOWN) {
            int64_t cur, next;
            if (parse_int(view(&k->str), &cur) != 0) {
                FAIL(WR_ES_NOT_INTEGER);
            }
            if (add_checked(cur, num, &next) != 0) {
                FAIL(WR_ES_OVERFLOW);
            }
            return set_num(&k->str, next) == 0 ? 0 : (snprintf(err, errcap, "out of memory"), -1);
        }
        if (k->state == S_ABSENT) {
            create_known(k);
            return set_num(&k->str, num) == 0 ? 0 : (snprintf(err, errcap, "out of memory"), -1);
        }
        if (add_checked(k->delta, num, &k->delta) != 0) {
            FAIL(WR_ES_OVERFLOW);
        }
        k->has_delta = 1;
        return 0;
    default:
        break;
    }
    /* hashes and sets */
    k->kind = want;
    if (op == WR_SB_HDEL || op == WR_SB_SREM) {
        if (k->state == S_ABSENT) {
            return 0; /* nothing to remove */
        }
        fent *f = get_field(k, a);
        if (f == NULL) {
            OOM();
        }
        f->st = F_DEL;
        own_free(&f->val);
        return 0;
    }
    create_known(k);
    fent *f = get_field(k, a);
    if (f == NULL) {
        OOM();
    }
    if (op == WR_SB_SADD) {
        f->st = F_SET;
        return 0;
    }
    if (op == WR_SB_HSET) {
        f->st = F_SET;
        return own_set(&f->val, bv) == 0 ? 0 : (snprintf(err, errcap, "out of memory"), -1);
    }
    /* HINCRBY */
    if (f->st == F_SET && f->val.p != NULL) {
        int64_t cur, next;
        if (parse_int(view(&f->val), &cur) != 0) {
            FAIL(WR_ES_HASH_NOT_INTEGER);
        }
        if (add_checked(cur, num, &next) != 0) {
            FAIL(WR_ES_OVERFLOW);
        }
        return set_num(&f->val, next) == 0 ? 0 : (snprintf(err, errcap, "out of memory"), -1);
    }
    if (f->st == F_DEL || k->state == S_KNOWN) {
        /* deleted here, or the whole hash is known: the field starts from 0 */
        f->st = F_SET;
        return set_num(&f->val, num) == 0 ? 0 : (snprintf(err, errcap, "out of memory"), -1);
    }
    if (f->st == F_DELTA && add_checked(f->delta, num, &f->delta) != 0) {
        FAIL(WR_ES_OVERFLOW);
    }
    if (f->st != F_DELTA) {
        f->delta = num;
    }
    f->st = F_DELTA;
    return 0;
}

int wr_storebuf_write(wr_storebuf *b, wr_sb_op op, wr_sbstr key, wr_sbstr a, wr_sbstr bv,
                      int64_t num, char *err, size_t errcap)
{
    if (b->nw >= b->max_writes) {
        FAIL(WR_ES_MAX_WRITES, (long long)b->max_writes);
    }
    if (b->nw == b->capw) {
        int cap = b->capw ? b->capw * 2 : 8;
        cap = cap > b->max_writes ? b->max_writes : cap;
        wr_sb_write *nw = realloc(b->w, (size_t)cap * sizeof(*nw));
        if (nw == NULL) {
            OOM();
        }
        b->w = nw;
        b->capw = cap;
    }
    int index;
    skey *k = get_key(b, key, &index);
    if (k == NULL) {
        OOM();
    }
    if (overlay(k, op, a, bv, num, err, errcap) != 0) {
        return -1;
    }
    wr_sb_write *w = &b->w[b->nw];
    memset(w, 0, sizeof(*w));
    own oa = {0}, ob = {0};
    if (own_set(&oa, a) != 0 || own_set(&ob, bv) != 0) {
        own_free(&oa);
        own_free(&ob);
        OOM();
    }
    w->op = op;
    w->key = index;
    w->a = (wr_sbstr){oa.p, oa.n};
    w->b = (wr_sbstr){ob.p, ob.n};
    w->num = num;
    b->nw++;
    return 0;
}

const wr_sb_write *wr_storebuf_writes(const wr_storebuf *b, int *count)
{
    *count = b->nw;
    return b->w;
}

int wr_storebuf_key_count(const wr_storebuf *b)
{
    return b->nk;
}

wr_sbstr wr_storebuf_key(const wr_storebuf *b, int i)
{
    return view(&b->k[i].key);
}

/* ---- reads ---------------------------------------------------------------------- */

void wr_sb_result_free(wr_sb_result *r)
{
    free(r->items);
    r->items = NULL;
    r->count = 0;
}

/* A growing array of results. */
typedef struct {
    wr_sbstr *items;
    size_t count, cap;
} builder;

static int push(builder *bd, wr_sbstr s)
{
    if (bd->count == bd->cap) {
        size_t cap = bd->cap ? bd->cap * 2 : 16;
        wr_sbstr *n = realloc(bd->items, cap * sizeof(*n));
        if (n == NULL) {
            return -1;
        }
        bd->items = n;
        bd->cap = cap;
    }
    bd->items[bd->count++] = s;
    return 0;
}

static int wrongtype(skey *k, int want, char *err, size_t errcap)
{
    if (k->kind != K_NONE && k->kind != want) {
        FAIL(WR_ES_KIND, k->key.p, kind_names[k->kind]);
    }
    return 0;
}

static int base_plus(wr_sbstr base, int present, int64_t delta, char *buf, size_t cap,
                     wr_sbstr *out, char *err, size_t errcap)
{
    int64_t v = 0;
    if (present && parse_int(base, &v) != 0) {
        FAIL(WR_ES_NOT_INTEGER);
    }
    if (add_checked(v, delta, &v) != 0) {
        FAIL(WR_ES_OVERFLOW);
    }
    int n = snprintf(buf, cap, "%" PRId64, v);
    *out = (wr_sbstr){buf, (size_t)n};
    return 0;
}

static wr_sbstr dup_str(wr_sbstr s)
{
    char *p = malloc(s.n + 1);
    if (p != NULL) {
        if (s.n > 0) {
            memcpy(p, s.p, s.n);
        }
        p[s.n] = '\0';
    }
    return (wr_sbstr){p, s.n};
}

/* Keep what CMD saw on KEY as a guard for the commit (once per command, key and arg). */
static int add_guard(wr_storebuf *b, const char *cmd, wr_sbstr key, wr_sbstr arg,
                     const wr_sb_base *base)
{
    int index;
    if (get_key(b, key, &index) == NULL) {
        return -1;
    }
    for (int i = 0; i < b->ng; i++) {
        wr_sb_guard *g = &b->g[i];
        if (g->key == index && strcmp(g->cmd, cmd) == 0 && g->arg.n == arg.n &&
            (arg.n == 0 || memcmp(g->arg.p, arg.p, arg.n) == 0)) {
            return 0; /* the first observation is the one to check */
        }
    }
    if (b->ng == b->capg) {
        int cap = b->capg ? b->capg * 2 : 8;
        wr_sb_guard *ng = realloc(b->g, (size_t)cap * sizeof(*ng));
        if (ng == NULL) {
            return -1;
        }
        b->g = ng;
        b->capg = cap;
    }
    static const char *const cmds[] = {"GET", "HGET", "HGETALL", "SMEMBERS", "SISMEMBER", "EXISTS"};
    const char *name = NULL;
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (strcmp(cmds[i], cmd) == 0) {
            name = cmds[i]; /* a static string: the guard outlives the caller's */
        }
    }
    if (name == NULL) {
        return 0;
    }
    wr_sb_guard *g = &b->g[b->ng];
    memset(g, 0, sizeof(*g));
    g->cmd = name;
    g->key = index;
    g->arg = dup_str(arg);
    int single = strcmp(cmd, "GET") == 0 || strcmp(cmd, "HGET") == 0;
    int flag = strcmp(cmd, "EXISTS") == 0 || strcmp(cmd, "SISMEMBER") == 0;
    size_t count = single ? (base->present ? 1 : 0) : flag ? 1 : base->count;
    g->items = calloc(count ? count : 1, sizeof(*g->items));
    if (g->arg.p == NULL || g->items == NULL) {
        free((char *)g->arg.p);
        free(g->items);
        return -1;
    }
    b->ng++;
    for (size_t i = 0; i < count; i++) {
        wr_sbstr v = single ? base->str
                     : flag ? (base->num ? (wr_sbstr){"1", 1} : (wr_sbstr){"0", 1})
                            : base->items[i];
        g->items[i] = dup_str(v);
        if (g->items[i].p == NULL) {
            return -1;
        }
        g->count = i + 1;
    }
    return 0;
}

/* Fetch the base of a read and keep it as a guard (not PTTL: a TTL runs down by itself). */
static int fetch_base(wr_storebuf *b, wr_sb_fetch fetch, void *ud, const char *cmd, wr_sbstr key,
                      wr_sbstr arg, wr_sb_base *base, char *err, size_t errcap)
{
    memset(base, 0, sizeof(*base));
    if (fetch(ud, cmd, key, arg, base, err, errcap) != 0) {
        return -1;
    }
    if (!b->peeking && strcmp(cmd, "PTTL") != 0 && add_guard(b, cmd, key, arg, base) != 0) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    return 0;
}

const wr_sb_guard *wr_storebuf_guards(const wr_storebuf *b, int *count)
{
    *count = b->ng;
    return b->g;
}

int wr_storebuf_guard_expect(wr_storebuf *b, wr_sbstr key, wr_sbstr value)
{
    for (int i = 0; i < b->ng; i++) {
        wr_sb_guard *g = &b->g[i];
        wr_sbstr k = wr_storebuf_key(b, g->key);
        if (strcmp(g->cmd, "GET") != 0 || g->count != 0 || k.n != key.n ||
            memcmp(k.p, key.p, key.n) != 0) {
            continue;
        }
        wr_sbstr v = dup_str(value);
        if (v.p == NULL) {
            return -1;
        }
        g->items[0] = v; /* add_guard allocated room for one */
        g->count = 1;
        return 1;
    }
    return 0;
}

/*
 * The merged members (sets) or field/value pairs (hashes) of K into OUT.
 * Computed values are formatted into NUMS (caller's, one slot per overlay
 * field), which must live as long as OUT.
 */
static int merged(wr_storebuf *b, skey *k, wr_sb_fetch fetch, void *ud, wr_sb_result *out,
                  char (*nums)[24], char *err, size_t errcap)
{
    int hash = k->kind == K_HASH;
    builder bd = {0};
    wr_sb_base base = {0};
    if (k->state == S_UNKNOWN &&
        fetch_base(b, fetch, ud, hash ? "HGETALL" : "SMEMBERS", view(&k->key), (wr_sbstr){"", 0},
                   &base, err, errcap) != 0) {
        return -1;
    }
    size_t step = hash ? 2 : 1;
    for (size_t i = 0; i + step - 1 < base.count; i += step) {
        fent *f = find_field(k, base.items[i]);
        if (f != NULL && f->st == F_DEL) {
            continue;
        }
        if (push(&bd, base.items[i]) != 0) {
            goto oom;
        }
        if (!hash) {
            continue;
        }
        wr_sbstr v = base.items[i + 1];
        if (f != NULL && f->st == F_SET) {
            v = view(&f->val);
        } else if (f != NULL && f->st == F_DELTA) {
            size_t slot = (size_t)(f - k->f);
            if (base_plus(v, 1, f->delta, nums[slot], sizeof(nums[slot]), &v, err, errcap) != 0) {
                free(bd.items);
                return -1;
            }
        }
        if (push(&bd, v) != 0) {
            goto oom;
        }
    }
    /* overlay entries the base did not have */
    for (size_t j = 0; j < k->nf; j++) {
        fent *f = &k->f[j];
        if (f->st == F_DEL) {
            continue;
        }
        int in_base = 0;
        for (size_t i = 0; i + step - 1 < base.count && !in_base; i += step) {
            in_base = same(&f->name, base.items[i]);
        }
        if (in_base) {
            continue;
        }
        if (push(&bd, view(&f->name)) != 0) {
            goto oom;
        }
        if (hash) {
            wr_sbstr v = view(&f->val);
            if (f->st == F_DELTA) {
                int n = snprintf(nums[j], sizeof(nums[j]), "%" PRId64, f->delta);
                v = (wr_sbstr){nums[j], (size_t)n};
            }
            if (push(&bd, v) != 0) {
                goto oom;
            }
        }
    }
    out->items = bd.items;
    out->count = bd.count;
    return 0;
oom:
    free(bd.items);
    FAIL("out of memory");
}

/* One read through the buffer: what it asks and where its answer goes. */
typedef struct {
    wr_storebuf *b;
    const char *cmd;
    wr_sbstr key, arg;
    wr_sb_fetch fetch;
    void *ud;
    wr_sb_result *out;
} sb_read;

/* Ask Redis (through the fetch callback) for R's command as it stands there. */
static int read_base(const sb_read *r, const char *cmd, wr_sb_base *base, char *err, size_t errcap)
{
    return fetch_base(r->b, r->fetch, r->ud, cmd, r->key, r->arg, base, err, errcap);
}

/* OUT's items: a copy of BASE's (the base's memory belongs to the fetch). */
static int copy_items(wr_sb_result *out, const wr_sb_base *base, char *err, size_t errcap)
{
    if (base->count == 0) {
        return 0;
    }
    out->items = malloc(base->count * sizeof(*out->items));
    if (out->items == NULL) {
        FAIL("out of memory");
    }
    memcpy(out->items, base->items, base->count * sizeof(*out->items));
    out->count = base->count;
    return 0;
}

/* Nothing buffered for the key: Redis answers. */
static int read_unbuffered(const sb_read *r, char *err, size_t errcap)
{
    wr_sb_base base;
    if (read_base(r, r->cmd, &base, err, errcap) != 0) {
        return -1;
    }
    r->out->present = base.present;
    r->out->str = base.str;
    r->out->num = base.num;
    return copy_items(r->out, &base, err, errcap);
}

/*
 * A GET, HGET or SISMEMBER whose key or field the buffer holds no value of:
 * Redis's answer to CMD, plus DELTA when the buffer holds increments of it
 * (HAS_DELTA; the sum is formatted into the buffer's strnum).
 */
static int read_plus(const sb_read *r, const char *cmd, int has_delta, int64_t delta, char *err,
                     size_t errcap)
{
    wr_sb_base base;
    if (read_base(r, cmd, &base, err, errcap) != 0) {
        return -1;
    }
    wr_sb_result *out = r->out;
    if (!has_delta) {
        out->present = base.present;
        out->str = base.str;
        out->num = base.num;
        return 0;
    }
    out->present = 1;
    return base_plus(base.str, base.present, delta, r->b->strnum, sizeof(r->b->strnum), &out->str,
                     err, errcap);
}

/* GET: the buffered value, or Redis's plus the buffered increments. */
static int read_get(const sb_read *r, skey *k, char *err, size_t errcap)
{
    if (wrongtype(k, K_STR, err, errcap) != 0) {
        return -1;
    }
    if (k->state == S_ABSENT) {
        return 0;
    }
    wr_sb_result *out = r->out;
    if (k->state == S_KNOWN) {
        out->present = 1;
        out->str = view(&k->str);
        return 0;
    }
    return read_plus(r, "GET", k->has_delta, k->delta, err, errcap);
}

/* HGET, SISMEMBER: the buffered field, or Redis's plus its increments. */
static int read_field(const sb_read *r, skey *k, char *err, size_t errcap)
{
    int hash = r->cmd[0] == 'H';
    if (wrongtype(k, hash ? K_HASH : K_SET, err, errcap) != 0) {
        return -1;
    }
    if (k->state == S_ABSENT) {
        return 0;
    }
    wr_sb_result *out = r->out;
    fent *f = find_field(k, r->arg);
    if (f != NULL && f->st != F_DELTA) {
        out->present = f->st == F_SET;
        out->num = out->present;
        if (hash && out->present) {
            out->str = view(&f->val);
        }
        return 0;
    }
    if (f == NULL && k->state == S_KNOWN) {
        return 0;
    }
    /* not buffered, or only incremented */
    return read_plus(r, r->cmd, f != NULL, f != NULL ? f->delta : 0, err, errcap);
}

/* HGETALL, SMEMBERS: Redis's members merged with the buffered ones. */
static int read_all(const sb_read *r, skey *k, char *err, size_t errcap)
{
    wr_storebuf *b = r->b;
    if (wrongtype(k, r->cmd[0] == 'H' ? K_HASH : K_SET, err, errcap) != 0) {
        return -1;
    }
    if (k->state == S_ABSENT) {
        return 0;
    }
    if (k->kind == K_NONE) {
        /* only an expire buffered: the base as it is */
        wr_sb_base base;
        if (read_base(r, r->cmd, &base, err, errcap) != 0) {
            return -1;
        }
        return copy_items(r->out, &base, err, errcap);
    }
    /* computed values go into per-field slots kept by the buffer */
    if (b->nums_cap < k->nf + 1) {
        char(*n)[24] = realloc(b->nums, (k->nf + 1) * sizeof(*n));
        if (n == NULL) {
            FAIL("out of memory");
        }
        b->nums = n;
        b->nums_cap = k->nf + 1;
    }
    return merged(b, k, r->fetch, r->ud, r->out, b->nums, err, errcap);
}

/* EXISTS: whether the key has anything once the buffer is applied. */
static int read_exists(const sb_read *r, skey *k, char *err, size_t errcap)
{
    wr_sb_result *out = r->out;
    if (k->state == S_ABSENT) {
        return 0;
    }
    if (k->kind == K_STR && (k->state == S_KNOWN || k->has_delta)) {
        out->num = 1;
        return 0;
    }
    if (k->kind == K_HASH || k->kind == K_SET) {
        for (size_t i = 0; i < k->nf; i++) {
            if (k->f[i].st != F_DEL) {
                out->num = 1;
                return 0;
            }
        }
        if (k->state == S_KNOWN) {
            return 0;
        }
        wr_sb_result m;
        if (wr_storebuf_read(r->b, k->kind == K_HASH ? "HGETALL" : "SMEMBERS", r->key, r->arg,
                             r->fetch, r->ud, &m, err, errcap) != 0) {
            return -1;
        }
        out->num = m.count > 0;
        wr_sb_result_free(&m);
        return 0;
    }
    wr_sb_base base;
    if (read_base(r, "EXISTS", &base, err, errcap) != 0) {
        return -1;
    }
    out->num = base.num;
    return 0;
}

/* PTTL: -2 when the key does not exist once the buffer is applied, the
 * buffered expiry, or Redis's. */
static int read_pttl(const sb_read *r, skey *k, char *err, size_t errcap)
{
    wr_sb_result ex;
    if (wr_storebuf_read(r->b, "EXISTS", r->key, r->arg, r->fetch, r->ud, &ex, err, errcap) != 0) {
        return -1;
    }
    int64_t exists = ex.num;
    wr_sb_result_free(&ex); /* a number: nothing to free today, but it is a result */
    if (!exists) {
        r->out->num = -2;
        return 0;
    }
    if (k->ttl_known) {
        r->out->num = k->ttl_ms;
        return 0;
    }
    wr_sb_base base;
    if (read_base(r, "PTTL", &base, err, errcap) != 0) {
        return -1;
    }
    /* created by this message's increments: no expiry */
    r->out->num = base.num == -2 ? -1 : base.num;
    return 0;
}

int wr_storebuf_read(wr_storebuf *b, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_fetch fetch,
                     void *ud, wr_sb_result *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof(*out));
    sb_read r = {.b = b, .cmd = cmd, .key = key, .arg = arg, .fetch = fetch, .ud = ud, .out = out};
    skey *k = find_key(b, key, NULL);
    if (k == NULL) {
        return read_unbuffered(&r, err, errcap);
    }
    if (strcmp(cmd, "GET") == 0) {
        return read_get(&r, k, err, errcap);
    }
    if (strcmp(cmd, "HGET") == 0 || strcmp(cmd, "SISMEMBER") == 0) {
        return read_field(&r, k, err, errcap);
    }
    if (strcmp(cmd, "HGETALL") == 0 || strcmp(cmd, "SMEMBERS") == 0) {
        return read_all(&r, k, err, errcap);
    }
    if (strcmp(cmd, "EXISTS") == 0) {
        return read_exists(&r, k, err, errcap);
    }
    if (strcmp(cmd, "PTTL") == 0) {
        return read_pttl(&r, k, err, errcap);
    }
    FAIL("unknown read command %s", cmd);
}

int wr_storebuf_peek(wr_storebuf *b, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_fetch fetch,
                     void *ud, wr_sb_result *out, char *err, size_t errcap)
{
    int saved = b->peeking;
    b->peeking = 1;
    int rc = wr_storebuf_read(b, cmd, key, arg, fetch, ud, out, err, errcap);
    b->peeking = saved;
    return rc;
}
