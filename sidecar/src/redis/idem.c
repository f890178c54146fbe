/*
 * idem: idempotency records in Redis through server-side scripts. See idem.h;
 * the scripts are sidecar/scripts/claim.lua and finish.lua, the record format
 * record.h.
 */
#include "idem.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "numfmt.h"
#include "rconn.h"
#include "record.h"
#include "scripts.h"

enum { SCRIPT_CLAIM, SCRIPT_FINISH, SCRIPT_GATE, SCRIPT_COUNT };

/* What an owed reply answers, in the order the commands were sent. */
typedef enum {
    OWE_CLAIM,   /* the claim script */
    OWE_FINISH,  /* the finish script */
    OWE_SYNC,    /* a command whose caller waits for it (PING, a store read) */
    OWE_LOAD,    /* SCRIPT LOAD before a script sent again after NOSCRIPT */
    OWE_JOURNAL, /* RPUSH, LTRIM or PEXPIRE of a journal */
} owe_kind;

typedef struct {
    owe_kind kind;
    int index;
} owe;

/* A script call sent and not answered yet: its command, kept to send it again
 * after NOSCRIPT, and its reply once read. */
typedef struct {
    char *cmd;
    size_t len;
    int resent;
    redisReply *reply;
} call;

struct wr_idem {
    wr_rconn *rc;
    wr_rscript scripts[SCRIPT_COUNT];
    owe *owed; /* FIFO of what the owed replies answer */
    int owe_head, owe_count, owe_cap;
    call calls[2];    /* [OWE_CLAIM], [OWE_FINISH] */
    redisReply *sync; /* the reply of the last OWE_SYNC */
    char err[512];
    /* ctx.store reads */
    redisReply *last; /* the reply wr_idem_store_fetch's answer points into */
    redisReply *gate; /* the reply of the last wr_idem_gate */
    wr_sbstr *items;
    size_t items_cap;
    /* journal writes sent and not answered yet */
    int jerrors; /* error replies collected and not yet reported */
    char jerr[256];
};

/* ---- replies in order -------------------------------------------------------------- */

static int owe_push(wr_idem *d, owe_kind kind, int index)
{
    if (d->owe_count == d->owe_cap) {
        int cap = d->owe_cap ? d->owe_cap * 2 : 64;
        owe *n = malloc(sizeof(*n) * (size_t)cap);
        if (n == NULL) {
            return -1;
        }
        for (int i = 0; i < d->owe_count; i++) {
            n[i] = d->owed[(d->owe_head + i) % d->owe_cap];
        }
        free(d->owed);
        d->owed = n;
        d->owe_head = 0;
        d->owe_cap = cap;
    }
    d->owed[(d->owe_head + d->owe_count) % d->owe_cap] = (owe){kind, index};
    d->owe_count++;
    return 0;
}

static owe owe_pop(wr_idem *d)
{
    owe o = d->owed[d->owe_head];
    d->owe_head = (d->owe_head + 1) % d->owe_cap;
    d->owe_count--;
    return o;
}

static void forget_call(call *c)
{
    free(c->cmd);
    if (c->reply != NULL) {
        freeReplyObject(c->reply);
    }
    *c = (call){0};
}

/* The connection failed: every owed reply is lost with it. */
static int lost(wr_idem *d)
{
    snprintf(d->err, sizeof(d->err), "%s", wr_rconn_error(d->rc));
    d->owe_count = 0;
    d->owe_head = 0;
    for (int i = 0; i < 2; i++) {
        forget_call(&d->calls[i]);
    }
    if (d->sync != NULL) {
        freeReplyObject(d->sync);
        d->sync = NULL;
    }
    return -1;
}

static void journal_reply(wr_idem *d, const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        d->jerrors++;
        snprintf(d->jerr, sizeof(d->jerr), "%s", r->str);
    }
}

/*
 * Read owed replies in order until the one of KIND is there, and return it
 * (the caller frees it). Replies met on the way are handled: journal writes
 * counted, another call's kept for its own _recv, a script the server forgot
 * (NOSCRIPT) loaded and sent again at the end of the pipeline (its keys are
 * disjoint from everything sent after it, so the order does not matter).
 * Returns NULL with d->err on a connection failure, or when nothing of KIND
 * is owed.
 */
static redisReply *reply_of(wr_idem *d, owe_kind kind)
{
    for (;;) {
        if (kind == OWE_SYNC && d->sync != NULL) {
            redisReply *r = d->sync;
            d->sync = NULL;
            return r;
        }
        if ((kind == OWE_CLAIM || kind == OWE_FINISH) && d->calls[kind].reply != NULL) {
            redisReply *r = d->calls[kind].reply;
            d->calls[kind].reply = NULL;
            return r;
        }
        if (d->owe_count == 0) {
            snprintf(d->err, sizeof(d->err), "no reply owed");
            return NULL;
        }
        owe o = owe_pop(d);
        redisReply *r = wr_rconn_read(d->rc);
        if (r == NULL) {
            lost(d);
            return NULL;
        }
        switch (o.kind) {
        case OWE_CLAIM:
        case OWE_FINISH: {
            call *c = &d->calls[o.kind];
            if (wr_rconn_noscript(r) && !c->resent && c->cmd != NULL) {
                freeReplyObject(r);
                c->resent = 1;
                if (wr_rconn_append_load(d->rc, &d->scripts[o.kind]) != 0 ||
                    owe_push(d, OWE_LOAD, o.kind) != 0 ||
                    wr_rconn_append_formatted(d->rc, c->cmd, c->len) != 0 ||
                    owe_push(d, o.kind, 0) != 0 || wr_rconn_flush(d->rc) != 0) {
                    lost(d);
                    return NULL;
                }
                continue;
            }
            c->reply = r;
            break;
        }
        case OWE_SYNC:
            if (d->sync != NULL) {
                freeReplyObject(d->sync);
            }
            d->sync = r;
            break;
        case OWE_LOAD:
            if (r->type == REDIS_REPLY_STRING && r->len == 40) {
                memcpy(d->scripts[o.index].sha, r->str, 41);
            }
            freeReplyObject(r);
            break;
        case OWE_JOURNAL:
            journal_reply(d, r);
            freeReplyObject(r);
            break;
        }
    }
}

/* Send one command and wait for its reply (after whatever is owed before it). */
static redisReply *sync_command(wr_idem *d, int argc, const char **argv, const size_t *lens)
{
    if (wr_rconn_owed(d->rc) == 0 && wr_rconn_ensure(d->rc) != 0) {
        lost(d);
        return NULL;
    }
    if (wr_rconn_append(d->rc, argc, argv, lens) != 0 || owe_push(d, OWE_SYNC, 0) != 0) {
        lost(d);
        return NULL;
    }
    return reply_of(d, OWE_SYNC);
}

/* Send script S with ARGC arguments (argv[0], argv[1] are set here) as call
 * KIND. Returns 0, or -1. */
static int send_script(wr_idem *d, owe_kind kind, int argc, const char **argv, size_t *lens)
{
    call *c = &d->calls[kind];
    if (c->cmd != NULL) {
        snprintf(d->err, sizeof(d->err), "a %s is already outstanding",
                 kind == OWE_CLAIM ? "claim" : "finish");
        return -1;
    }
    if (wr_rconn_owed(d->rc) == 0 && wr_rconn_ensure(d->rc) != 0) {
        return lost(d);
    }
    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = d->scripts[kind == OWE_CLAIM ? SCRIPT_CLAIM : SCRIPT_FINISH].sha;
    lens[1] = 40;
    char *cmd = NULL;
    long len = wr_rconn_format(&cmd, argc, argv, lens);
    if (len < 0 || cmd == NULL) {
        snprintf(d->err, sizeof(d->err), "out of memory");
        return -1;
    }
    *c = (call){.cmd = cmd, .len = (size_t)len};
    if (wr_rconn_append_formatted(d->rc, cmd, (size_t)len) != 0 || owe_push(d, kind, 0) != 0 ||
        wr_rconn_flush(d->rc) != 0) {
        return lost(d);
    }
    return 0;
}

/* The answer of the outstanding call KIND (caller frees), or NULL. */
static redisReply *recv_script(wr_idem *d, owe_kind kind)
{
    if (d->calls[kind].cmd == NULL) {
        snprintf(d->err, sizeof(d->err), "no %s outstanding",
                 kind == OWE_CLAIM ? "claim" : "finish");
        return NULL;
    }
    redisReply *r = reply_of(d, kind);
    free(d->calls[kind].cmd);
    d->calls[kind] = (call){0};
    return r;
}

/* ---- connection ---------------------------------------------------------------------- */

wr_idem *wr_idem_create(const wr_redis_url *url, int64_t timeout_ms, char *err, size_t errcap)
{
    wr_idem *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    d->scripts[SCRIPT_CLAIM].source = wr_script_claim;
    d->scripts[SCRIPT_FINISH].source = wr_script_finish;
    d->scripts[SCRIPT_GATE].source = wr_script_gate;
    d->rc = wr_rconn_create(url, timeout_ms, d->scripts, SCRIPT_COUNT, err, errcap);
    if (d->rc == NULL) {
        free(d);
        return NULL;
    }
    return d;
}

void wr_idem_destroy(wr_idem *d)
{
    if (d == NULL) {
        return;
    }
    for (int i = 0; i < 2; i++) {
        forget_call(&d->calls[i]);
    }
    if (d->sync != NULL) {
        freeReplyObject(d->sync);
    }
    if (d->last != NULL) {
        freeReplyObject(d->last);
    }
    if (d->gate != NULL) {
        freeReplyObject(d->gate);
    }
    wr_rconn_destroy(d->rc);
    free(d->items);
    free(d->owed);
    free(d);
}

const char *wr_idem_error(const wr_idem *d)
{
    return d->err;
}

static int unexpected(wr_idem *d, const char *what, const redisReply *r)
{
    snprintf(d->err, sizeof(d->err), "%s: unexpected reply%s%s", what,
             r->type == REDIS_REPLY_ERROR ? ": " : "", r->type == REDIS_REPLY_ERROR ? r->str : "");
    return -1;
}

int wr_idem_ping(wr_idem *d)
{
    const char *argv[1] = {"PING"};
    size_t lens[1] = {4};
    redisReply *r = sync_command(d, 1, argv, lens);
    if (r == NULL) {
        return -1;
    }
    /* BUSY (a long script), LOADING (a restart reading its data): not serving */
    int ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    if (!ok) {
        unexpected(d, "PING", r);
    }
    freeReplyObject(r);
    return ok ? 0 : -1;
}

int wr_idem_wait_replicas(wr_idem *d, int n, int64_t timeout_ms)
{
    char num[WR_NUMFMT_MAX], ms[WR_NUMFMT_MAX];
    size_t nl = wr_fmt_u64(num, (uint64_t)n), tl = wr_fmt_u64(ms, (uint64_t)timeout_ms);
    const char *argv[3] = {"WAIT", num, ms};
    size_t lens[3] = {4, nl, tl};
    redisReply *r = sync_command(d, 3, argv, lens);
    if (r == NULL) {
        return -1;
    }
    if (r->type != REDIS_REPLY_INTEGER) {
        unexpected(d, "WAIT", r);
        freeReplyObject(r);
        return -1;
    }
    int acked = (int)r->integer;
    freeReplyObject(r);
    if (acked < n) {
        snprintf(d->err, sizeof(d->err),
                 "WAIT: %d of %d replica%s acknowledged the commit within %lld ms", acked, n,
                 n == 1 ? "" : "s", (long long)timeout_ms);
    }
    return acked;
}

/* ---- argument vectors ------------------------------------------------------------------ */

/* EVALSHA sha numkeys key... arg...: pointers into the callers' strings and
 * into NUMS, a scratch area for the numbers written here. */
typedef struct {
    const char **argv;
    size_t *lens;
    int argc;
    char *nums; /* 24 bytes per number */
    int nnums, nums_cap;
} args;

static int args_init(args *a, int cap, int nums)
{
    a->argv = malloc(sizeof(*a->argv) * (size_t)cap);
    a->lens = malloc(sizeof(*a->lens) * (size_t)cap);
    a->nums = malloc(24 * (size_t)(nums > 0 ? nums : 1));
    a->argc = 0;
    a->nnums = 0;
    a->nums_cap = nums;
    return a->argv && a->lens && a->nums ? 0 : -1;
}

static void args_free(args *a)
{
    free(a->argv);
    free(a->lens);
    free(a->nums);
}

static void args_addn(args *a, const char *s, size_t n)
{
    a->argv[a->argc] = s;
    a->lens[a->argc] = n;
    a->argc++;
}

static void args_add(args *a, const char *s)
{
    args_addn(a, s, strlen(s));
}

static void args_num(args *a, long long v)
{
    char *p = a->nums + 24 * a->nnums++;
    args_addn(a, p, wr_fmt_i64(p, (int64_t)v));
}

/* ---- claim ------------------------------------------------------------------------------- */

int wr_idem_claim_send(wr_idem *d, const wr_claim *claims, int n, const char *token,
                       int64_t lease_ms, int64_t ttl_ms)
{
    args a;
    if (args_init(&a, n + 6, 4) != 0) {
        args_free(&a);
        snprintf(d->err, sizeof(d->err), "out of memory");
        return -1;
    }
    args_add(&a, "EVALSHA");
    args_add(&a, ""); /* the SHA, filled by send_script() */
    args_num(&a, n);
    for (int i = 0; i < n; i++) {
        args_add(&a, claims[i].key);
    }
    args_add(&a, token);
    args_num(&a, (long long)lease_ms);
    args_num(&a, (long long)ttl_ms);
    int rc = send_script(d, OWE_CLAIM, a.argc, a.argv, a.lens);
    args_free(&a);
    return rc;
}

int wr_idem_claim_recv(wr_idem *d, wr_claim *claims, int n)
{
    redisReply *r = recv_script(d, OWE_CLAIM);
    if (r == NULL) {
        return -1;
    }
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)n * 2) {
        rc = unexpected(d, "claim", r);
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        const redisReply *st = r->element[2 * i], *detail = r->element[2 * i + 1];
        if (st->type != REDIS_REPLY_INTEGER) {
            rc = unexpected(d, "claim", st);
            break;
        }
        wr_claim *c = &claims[i];
        c->starts = 0;
        c->busy_ms = 0;
        c->outcome[0] = '\0';
        switch (st->integer) {
        case 2:
            c->status = WR_CLAIM_DONE;
            if (detail->type == REDIS_REPLY_STRING) {
                snprintf(c->outcome, sizeof(c->outcome), "%s", detail->str);
            }
            break;
        case 3:
            c->status = WR_CLAIM_BUSY;
            c->busy_ms = detail->type == REDIS_REPLY_INTEGER ? detail->integer : 0;
            break;
        default:
            c->status = st->integer == 1 ? WR_CLAIM_TAKEOVER : WR_CLAIM_ACQUIRED;
            c->starts = detail->type == REDIS_REPLY_INTEGER ? (int)detail->integer : 0;
            break;
        }
    }
    freeReplyObject(r);
    return rc;
}

int wr_idem_claim(wr_idem *d, wr_claim *claims, int n, const char *token, int64_t lease_ms,
                  int64_t ttl_ms)
{
    if (n == 0) {
        return 0;
    }
    if (wr_idem_claim_send(d, claims, n, token, lease_ms, ttl_ms) != 0) {
        return -1;
    }
    return wr_idem_claim_recv(d, claims, n);
}

/* ---- finish ------------------------------------------------------------------------------ */

/*
 * The store keys of one finish call, each once (KEYS after the records), with
 * what the batch does to it: a key every write of the batch increments and no
 * read guards is a "sum" key (finish.lua): checked once, its increments
 * applied as one.
 */
typedef struct {
    wr_sbstr key;
    int index;               /* in KEYS, 1-based */
    int incr_only;           /* every write on it is an incrby */
    int guarded;             /* a guard reads it */
    int64_t total, neg, pos; /* the increments: all, the negative, the positive */
} skey;

typedef struct {
    skey *slots; /* open addressing, cap a power of two */
    size_t cap, count;
    skey **order; /* in order of first use */
} skeys;

static uint64_t hash_of(wr_sbstr k)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < k.n; i++) {
        h = (h ^ (unsigned char)k.p[i]) * 1099511628211ULL;
    }
    return h;
}

static skey *skeys_get(skeys *s, wr_sbstr k)
{
    size_t i = (size_t)hash_of(k) & (s->cap - 1);
    while (s->slots[i].key.p != NULL) {
        if (s->slots[i].key.n == k.n && memcmp(s->slots[i].key.p, k.p, k.n) == 0) {
            return &s->slots[i];
        }
        i = (i + 1) & (s->cap - 1);
    }
    skey *e = &s->slots[i];
    *e = (skey){.key = k, .incr_only = 1};
    s->order[s->count++] = e;
    return e;
}

/* Is every increment of K exactly representable in the script (a double)? */
static int sum_fits(const skey *k)
{
    const int64_t lim = (int64_t)1 << 53;
    return k->incr_only && !k->guarded && k->total > -lim && k->total < lim && k->neg > -lim &&
           k->pos < lim;
}

static void add_incr(skey *k, int64_t x)
{
    if (__builtin_add_overflow(k->total, x, &k->total) ||
        (x < 0 ? __builtin_add_overflow(k->neg, x, &k->neg)
               : __builtin_add_overflow(k->pos, x, &k->pos))) {
        k->incr_only = 0; /* no sum: applied write by write, as the handler made them */
    }
}

/* The writes a finish op carries (only a done's). */
static const wr_sb_write *op_writes(const wr_finish *o, int *nw)
{
    *nw = 0;
    if (o->op == WR_FINISH_DONE && o->writes != NULL) {
        return wr_storebuf_writes(o->writes, nw);
    }
    return NULL;
}

/* One finish call being built: the batch's store keys, each once, and the
 * script's arguments (see finish.lua for their layout). */
typedef struct {
    const wr_finish *ops;
    int n;
    skeys sk;
    char **values; /* per op: its record's new value */
    int **kmap;    /* per op: its storebuf key -> index in sk.slots */
    args a;
} finish_call;

static void fc_free(finish_call *fc)
{
    args_free(&fc->a);
    for (int i = 0; fc->values != NULL && i < fc->n; i++) {
        free(fc->values[i]);
    }
    for (int i = 0; fc->kmap != NULL && i < fc->n; i++) {
        free(fc->kmap[i]);
    }
    free(fc->values);
    free(fc->kmap);
    free(fc->sk.slots);
    free(fc->sk.order);
}

/* Size and allocate FC for its ops. 0, or -1 out of memory. */
static int fc_alloc(finish_call *fc)
{
    size_t total_keys = 0;
    int total_writes = 0, guard_slots = 0, total_guards = 0, n = fc->n;
    for (int i = 0; i < n; i++) {
        int nw;
        op_writes(&fc->ops[i], &nw);
        if (nw > 0) {
            int ng;
            const wr_sb_guard *g = wr_storebuf_guards(fc->ops[i].writes, &ng);
            for (int j = 0; j < ng; j++) {
                guard_slots += 4 + (int)g[j].count;
            }
            total_guards += ng;
            total_writes += nw;
            total_keys += (size_t)wr_storebuf_key_count(fc->ops[i].writes);
        }
    }
    fc->sk.cap = 16;
    while (fc->sk.cap < 2 * total_keys + 2) {
        fc->sk.cap *= 2;
    }
    fc->sk.slots = calloc(fc->sk.cap, sizeof(*fc->sk.slots));
    fc->sk.order = malloc(sizeof(*fc->sk.order) * (total_keys + 1));
    fc->values = calloc((size_t)n + 1, sizeof(*fc->values));
    fc->kmap = calloc((size_t)n + 1, sizeof(*fc->kmap));
    if (fc->sk.slots == NULL || fc->sk.order == NULL || fc->values == NULL || fc->kmap == NULL) {
        return -1;
    }
    return args_init(&fc->a, 7 * n + 10 + 5 * (int)total_keys + 4 * total_writes + guard_slots,
                     8 + 3 * n + 4 * (int)total_keys + 2 * total_writes + 2 * total_guards);
}

/* What the batch does to each store key: every key once, whether all its
 * writes are increments (summed into one), whether a read of it is guarded. */
static int fc_map_keys(finish_call *fc)
{
    for (int i = 0; i < fc->n; i++) {
        int nw;
        const wr_sb_write *ws = op_writes(&fc->ops[i], &nw);
        if (nw == 0) {
            continue;
        }
        const wr_storebuf *sb = fc->ops[i].writes;
        int kc = wr_storebuf_key_count(sb);
        int *map = fc->kmap[i] = malloc(sizeof(int) * (size_t)(kc > 0 ? kc : 1));
        if (map == NULL) {
            return -1;
        }
        for (int k = 0; k < kc; k++) {
            skey *e = skeys_get(&fc->sk, wr_storebuf_key(sb, k));
            map[k] = (int)(e - fc->sk.slots);
        }
        for (int j = 0; j < nw; j++) {
            skey *e = &fc->sk.slots[map[ws[j].key]];
            if (ws[j].op == WR_SB_INCRBY) {
                add_incr(e, ws[j].num);
            } else {
                e->incr_only = 0;
            }
        }
        int ng;
        const wr_sb_guard *g = wr_storebuf_guards(sb, &ng);
        for (int j = 0; j < ng; j++) {
            fc->sk.slots[map[g[j].key]].guarded = 1;
        }
    }
    return 0;
}

/* The call's head: the record keys, the store keys, the common arguments and
 * the summed increments. */
static void fc_add_head(finish_call *fc, const char *token, int64_t lease_ms, int64_t ttl_ms)
{
    args *a = &fc->a;
    skeys *sk = &fc->sk;
    args_add(a, "EVALSHA");
    args_add(a, "");
    args_num(a, (long long)fc->n + (long long)sk->count);
    for (int i = 0; i < fc->n; i++) {
        args_add(a, fc->ops[i].key);
    }
    int nsum = 0;
    for (size_t k = 0; k < sk->count; k++) {
        sk->order[k]->index = fc->n + 1 + (int)k; /* Lua's KEYS is 1-based */
        args_addn(a, sk->order[k]->key.p, sk->order[k]->key.n);
        nsum += sum_fits(sk->order[k]);
    }
    args_add(a, token);
    args_num(a, (long long)ttl_ms);
    args_num(a, (long long)lease_ms);
    args_num(a, fc->n);
    args_num(a, nsum);
    for (size_t k = 0; k < sk->count; k++) {
        const skey *e = sk->order[k];
        if (sum_fits(e)) {
            args_num(a, e->index);
            args_num(a, (long long)e->total);
            args_num(a, (long long)e->neg);
            args_num(a, (long long)e->pos);
        }
    }
}

/* Each op's record: what it does, the record's new value, and the shape of
 * its writes (plain, guard slots, all-distinct keys, summed). 0, or -1 out of
 * memory. */
static int fc_add_records(finish_call *fc)
{
    static const char *names[] = {"done", "release", "extend", "unclaim"};
    for (int i = 0; i < fc->n; i++) {
        const wr_finish *o = &fc->ops[i];
        int nw;
        const wr_sb_write *ws = op_writes(o, &nw);
        int plain = 0, sums = 0, slots = 0, shape = 1;
        if (nw > 0) {
            int ng;
            const wr_sb_guard *g = wr_storebuf_guards(o->writes, &ng);
            for (int j = 0; j < ng; j++) {
                slots += 4 + (int)g[j].count;
            }
            for (int j = 0; j < nw; j++) {
                if (sum_fits(&fc->sk.slots[fc->kmap[i][ws[j].key]])) {
                    sums++;
                    continue;
                }
                plain++;
                for (int x = 0; x < j && shape; x++) {
                    shape =
                        ws[x].key != ws[j].key || sum_fits(&fc->sk.slots[fc->kmap[i][ws[x].key]]);
                }
            }
        }
        args_add(&fc->a, names[o->op]);
        if (o->op == WR_FINISH_DONE) {
            fc->values[i] =
                wr_record_done(o->starts, o->outcome ? o->outcome : "", o->done_at, o->entry);
        } else if (o->op == WR_FINISH_RELEASE || o->op == WR_FINISH_UNCLAIM) {
            fc->values[i] =
                wr_record_released(o->op == WR_FINISH_UNCLAIM ? o->starts - 1 : o->starts);
        }
        if (o->op != WR_FINISH_EXTEND && fc->values[i] == NULL) {
            return -1;
        }
        args_add(&fc->a, fc->values[i] ? fc->values[i] : "");
        args_num(&fc->a, plain);
        args_num(&fc->a, slots);
        args_add(&fc->a, shape ? "1" : "0");
        args_num(&fc->a, sums);
    }
    return 0;
}

/* Op I's guards, its plain writes, then its summed increments. */
static void fc_add_writes(finish_call *fc, int i)
{
    args *a = &fc->a;
    int nw;
    const wr_sb_write *ws = op_writes(&fc->ops[i], &nw);
    if (nw == 0) {
        return;
    }
    const int *map = fc->kmap[i];
    int ng;
    const wr_sb_guard *gs = wr_storebuf_guards(fc->ops[i].writes, &ng);
    for (int j = 0; j < ng; j++) {
        const wr_sb_guard *g = &gs[j];
        args_add(a, g->cmd);
        args_num(a, fc->sk.slots[map[g->key]].index);
        args_addn(a, g->arg.p, g->arg.n);
        args_num(a, (long long)g->count);
        for (size_t x = 0; x < g->count; x++) {
            args_addn(a, g->items[x].p, g->items[x].n);
        }
    }
    for (int j = 0; j < nw; j++) {
        const wr_sb_write *w = &ws[j];
        const skey *e = &fc->sk.slots[map[w->key]];
        if (sum_fits(e)) {
            continue;
        }
        args_add(a, wr_sb_op_name(w->op));
        args_num(a, e->index);
        switch (w->op) {
        case WR_SB_INCRBY:
        case WR_SB_EXPIRE:
            args_num(a, (long long)w->num);
            args_add(a, "");
            break;
        case WR_SB_SET:
        case WR_SB_HINCRBY:
            args_addn(a, w->a.p, w->a.n);
            args_num(a, (long long)w->num);
            break;
        default:
            args_addn(a, w->a.p, w->a.n);
            args_addn(a, w->b.p, w->b.n);
            break;
        }
    }
    for (int j = 0; j < nw; j++) {
        const skey *e = &fc->sk.slots[map[ws[j].key]];
        if (sum_fits(e)) {
            args_num(a, e->index);
            args_num(a, (long long)ws[j].num);
        }
    }
}

int wr_idem_finish_send(wr_idem *d, const wr_finish *ops, int n, const char *token,
                        int64_t lease_ms, int64_t ttl_ms)
{
    finish_call fc = {.ops = ops, .n = n};
    int rc = -1;
    if (fc_alloc(&fc) != 0 || fc_map_keys(&fc) != 0) {
        snprintf(d->err, sizeof(d->err), "out of memory");
        goto out;
    }
    fc_add_head(&fc, token, lease_ms, ttl_ms);
    if (fc_add_records(&fc) != 0) {
        snprintf(d->err, sizeof(d->err), "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        fc_add_writes(&fc, i);
    }
    rc = send_script(d, OWE_FINISH, fc.a.argc, fc.a.argv, fc.a.lens);
out:
    fc_free(&fc);
    return rc;
}

int wr_idem_finish_recv(wr_idem *d, wr_finish *ops, int n)
{
    for (int i = 0; i < n; i++) {
        ops[i].owned = 0;
        ops[i].refused = 0;
        ops[i].conflict = 0;
        ops[i].why[0] = '\0';
    }
    redisReply *r = recv_script(d, OWE_FINISH);
    if (r == NULL) {
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        /* the script ran and raised: what it did before is not rolled back */
        unexpected(d, "finish script", r);
        freeReplyObject(r);
        return WR_IDEM_SCRIPT_FAILED;
    }
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)n) {
        rc = unexpected(d, "finish", r);
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        const redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_STRING) {
            /* owned, but its writes were refused (left processing) or its reads
             * changed (unclaimed): nothing applied */
            ops[i].owned = 1;
            ops[i].conflict = strncmp(e->str, "conflict:", 9) == 0;
            ops[i].refused = !ops[i].conflict;
            snprintf(ops[i].why, sizeof(ops[i].why), "%s", e->str);
            continue;
        }
        if (e->type != REDIS_REPLY_INTEGER) {
            rc = unexpected(d, "finish", e);
            break;
        }
        ops[i].owned = e->integer == 1;
    }
    freeReplyObject(r);
    return rc;
}

int wr_idem_finish(wr_idem *d, wr_finish *ops, int n, const char *token, int64_t lease_ms,
                   int64_t ttl_ms)
{
    if (n <= 0) {
        return 0;
    }
    if (wr_idem_finish_send(d, ops, n, token, lease_ms, ttl_ms) != 0) {
        return -1;
    }
    return wr_idem_finish_recv(d, ops, n);
}

/* ---- ctx.store reads ------------------------------------------------------------------------ */

/*
 * ctx.store's reads (a wr_sb_fetch, UD = the wr_idem): one plain command on
 * the worker's connection, after whatever is owed before it (so a read sees
 * every commit this worker sent before it). The answer points into the reply,
 * kept until the next call. A connection failure drops the connection (the
 * next call reconnects); an error reply (WRONGTYPE) is returned as the error
 * text.
 */
int wr_idem_store_fetch(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_base *out,
                        char *err, size_t errcap)
{
    wr_idem *d = ud;
    if (d->last != NULL) {
        freeReplyObject(d->last);
        d->last = NULL;
    }
    int with_arg = strcmp(cmd, "HGET") == 0 || strcmp(cmd, "SISMEMBER") == 0;
    const char *argv[3] = {cmd, key.p, arg.p};
    size_t lens[3] = {strlen(cmd), key.n, arg.n};
    redisReply *r = sync_command(d, with_arg ? 3 : 2, argv, lens);
    if (r == NULL) {
        snprintf(err, errcap, "Redis: %s", d->err);
        return -1;
    }
    d->last = r;
    switch (r->type) {
    case REDIS_REPLY_ERROR:
        snprintf(err, errcap, "Redis: %s", r->str);
        return -1;
    case REDIS_REPLY_STRING:
        out->present = 1;
        out->str = (wr_sbstr){r->str, r->len};
        return 0;
    case REDIS_REPLY_INTEGER:
        out->num = r->integer;
        return 0;
    case REDIS_REPLY_NIL:
        return 0;
    case REDIS_REPLY_ARRAY:
        if (r->elements > d->items_cap) {
            wr_sbstr *n = realloc(d->items, r->elements * sizeof(*n));
            if (n == NULL) {
                snprintf(err, errcap, "out of memory");
                return -1;
            }
            d->items = n;
            d->items_cap = r->elements;
        }
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i];
            d->items[i] =
                e->type == REDIS_REPLY_STRING ? (wr_sbstr){e->str, e->len} : (wr_sbstr){"", 0};
        }
        out->items = d->items;
        out->count = r->elements;
        return 0;
    default:
        snprintf(err, errcap, "Redis: unexpected reply to %s", cmd);
        return -1;
    }
}

/* ---- causal gates ------------------------------------------------------------------------- */

const redisReply *wr_idem_gate(wr_idem *d, int nkeys, const char *const *keys, const size_t *klens,
                               int nargs, const char *const *vals, const size_t *vlens)
{
    enum { MAXARGS = 16 };
    const char *argv[MAXARGS];
    size_t lens[MAXARGS];
    char nk[12];
    if (3 + nkeys + nargs > MAXARGS) {
        snprintf(d->err, sizeof(d->err), "gate.lua: too many arguments");
        return NULL;
    }
    if (d->gate != NULL) {
        freeReplyObject(d->gate);
        d->gate = NULL;
    }
    argv[0] = "EVALSHA";
    argv[1] = d->scripts[SCRIPT_GATE].sha;
    argv[2] = nk;
    lens[0] = 7;
    lens[1] = 40;
    lens[2] = (size_t)snprintf(nk, sizeof(nk), "%d", nkeys);
    for (int i = 0; i < nkeys; i++) {
        argv[3 + i] = keys[i];
        lens[3 + i] = klens[i];
    }
    for (int i = 0; i < nargs; i++) {
        argv[3 + nkeys + i] = vals[i];
        lens[3 + nkeys + i] = vlens[i];
    }
    redisReply *r = sync_command(d, 3 + nkeys + nargs, argv, lens);
    if (r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        /* flushed since we connected: send the source itself */
        freeReplyObject(r);
        argv[0] = "EVAL";
        lens[0] = 4;
        argv[1] = wr_script_gate;
        lens[1] = strlen(wr_script_gate);
        r = sync_command(d, 3 + nkeys + nargs, argv, lens);
    }
    if (r == NULL) {
        return NULL;
    }
    d->gate = r;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(d->err, sizeof(d->err), "gate.lua: %s", r->str);
        return NULL;
    }
    return r;
}

/* ---- journal -------------------------------------------------------------------------------- */

int wr_idem_settle(wr_idem *d)
{
    if (d == NULL) {
        return 0;
    }
    /* read what the journal writes owe (calls are read by their callers) */
    while (d->owe_count > 0 &&
           (d->owed[d->owe_head].kind == OWE_JOURNAL || d->owed[d->owe_head].kind == OWE_LOAD)) {
        owe o = owe_pop(d);
        redisReply *r = wr_rconn_read(d->rc);
        if (r == NULL) {
            return lost(d);
        }
        if (o.kind == OWE_JOURNAL) {
            journal_reply(d, r);
        }
        freeReplyObject(r);
    }
    if (d->jerrors > 0) {
        snprintf(d->err, sizeof(d->err), "journal: %d error repl%s, the last: %s", d->jerrors,
                 d->jerrors == 1 ? "y" : "ies", d->jerr);
        d->jerrors = 0;
        return -1;
    }
    return 0;
}

int wr_idem_journal(wr_idem *d, const wr_idem_jlist *lists, int n, int max_entries, int64_t ttl_ms)
{
    int reported = 0;
    if (d->jerrors > 0) {
        /* what earlier writes' replies said (they are read late); this batch's
         * entries are sent all the same */
        snprintf(d->err, sizeof(d->err), "journal: %d error repl%s, the last: %s", d->jerrors,
                 d->jerrors == 1 ? "y" : "ies", d->jerr);
        d->jerrors = 0;
        reported = 1;
    }
    if (n <= 0) {
        return reported ? -1 : 0;
    }
    if (wr_rconn_owed(d->rc) == 0 && wr_rconn_ensure(d->rc) != 0) {
        return lost(d);
    }
    int most = 0;
    for (int i = 0; i < n; i++) {
        most = lists[i].count > most ? lists[i].count : most;
    }
    args a;
    if (args_init(&a, most + 2, 1) != 0) {
        args_free(&a);
        snprintf(d->err, sizeof(d->err), "out of memory");
        return -1;
    }
    char ttl[24], keep[24];
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
    snprintf(keep, sizeof(keep), "%d", -max_entries);
    for (int i = 0; i < n; i++) {
        /* RPUSH, then LTRIM to the newest MAX_ENTRIES and PEXPIRE: journal writes
         * are off the happy path (a message handled at its first attempt keeps
         * its entry in its record), so the trim is not worth saving */
        a.argc = 0;
        args_add(&a, "RPUSH");
        args_add(&a, lists[i].key);
        for (int k = 0; k < lists[i].count; k++) {
            args_add(&a, lists[i].entries[k]);
        }
        size_t kl = strlen(lists[i].key);
        const char *tr[4] = {"LTRIM", lists[i].key, keep, "-1"};
        size_t trl[4] = {5, kl, strlen(keep), 2};
        const char *ex[3] = {"PEXPIRE", lists[i].key, ttl};
        size_t exl[3] = {7, kl, strlen(ttl)};
        if (wr_rconn_append(d->rc, a.argc, a.argv, a.lens) != 0 ||
            owe_push(d, OWE_JOURNAL, 0) != 0 || wr_rconn_append(d->rc, 4, tr, trl) != 0 ||
            owe_push(d, OWE_JOURNAL, 0) != 0 || wr_rconn_append(d->rc, 3, ex, exl) != 0 ||
            owe_push(d, OWE_JOURNAL, 0) != 0) {
            args_free(&a);
            return lost(d);
        }
    }
    args_free(&a);
    /* send now, read later: the replies are read whenever a later call reads its
     * own */
    if (wr_rconn_flush(d->rc) != 0) {
        return lost(d);
    }
    return reported ? -1 : 0;
}
