/*
 * Unit tests for storebuf: ctx.store's write buffer and how reads merge it
 * with what Redis holds. Redis is a fake here: a fetch callback over a few
 * fixed values, which also counts how often it was asked.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "storebuf.h"

/* The fake Redis: "s" = "41" (string), "h" = {a: "1", b: "x"} (hash),
 * "set" = {m1, m2} (set), "txt" = "hello"; PTTL of "s" is 5000. */
typedef struct {
    int calls;
    wr_sbstr items[4];
} fake;

static int eq(wr_sbstr s, const char *c)
{
    return s.n == strlen(c) && memcmp(s.p, c, s.n) == 0;
}

static wr_sbstr S(const char *c)
{
    return (wr_sbstr){c, strlen(c)};
}

static int fetch(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_base *out, char *err,
                 size_t errcap)
{
    fake *f = ud;
    f->calls++;
    if (eq(key, "down")) {
        snprintf(err, errcap, "connection refused");
        return -1;
    }
    if (strcmp(cmd, "GET") == 0) {
        if (eq(key, "s")) {
            out->present = 1;
            out->str = S("41");
        } else if (eq(key, "txt")) {
            out->present = 1;
            out->str = S("hello");
        }
    } else if (strcmp(cmd, "HGET") == 0 && eq(key, "h")) {
        if (eq(arg, "a")) {
            out->present = 1;
            out->str = S("1");
        } else if (eq(arg, "b")) {
            out->present = 1;
            out->str = S("x");
        }
    } else if (strcmp(cmd, "HGETALL") == 0 && eq(key, "h")) {
        f->items[0] = S("a");
        f->items[1] = S("1");
        f->items[2] = S("b");
        f->items[3] = S("x");
        out->items = f->items;
        out->count = 4;
    } else if (strcmp(cmd, "SMEMBERS") == 0 && eq(key, "set")) {
        f->items[0] = S("m1");
        f->items[1] = S("m2");
        out->items = f->items;
        out->count = 2;
    } else if (strcmp(cmd, "SISMEMBER") == 0) {
        out->num = eq(key, "set") && (eq(arg, "m1") || eq(arg, "m2"));
    } else if (strcmp(cmd, "EXISTS") == 0) {
        out->num = eq(key, "s") || eq(key, "h") || eq(key, "set") || eq(key, "txt");
    } else if (strcmp(cmd, "PTTL") == 0) {
        out->num = eq(key, "s")                                         ? 5000
                   : (eq(key, "h") || eq(key, "set") || eq(key, "txt")) ? -1
                                                                        : -2;
    }
    return 0;
}

static wr_sbstr none = {"", 0};
static char err[256];

static int W(wr_storebuf *b, wr_sb_op op, const char *k, const char *a, const char *v, int64_t n)
{
    err[0] = '\0';
    return wr_storebuf_write(b, op, S(k), a ? S(a) : none, v ? S(v) : none, n, err, sizeof(err));
}

static wr_sb_result R(wr_storebuf *b, fake *f, const char *cmd, const char *k, const char *a)
{
    wr_sb_result r;
    err[0] = '\0';
    if (wr_storebuf_read(b, cmd, S(k), a ? S(a) : none, fetch, f, &r, err, sizeof(err)) != 0) {
        r.present = -1;
        r.num = -99;
    }
    return r;
}

/* Find FIELD in a hgetall result; its value or NULL. */
static const char *hfind(const wr_sb_result *r, const char *field, char *buf)
{
    for (size_t i = 0; i + 1 < r->count; i += 2) {
        if (eq(r->items[i], field)) {
            memcpy(buf, r->items[i + 1].p, r->items[i + 1].n);
            buf[r->items[i + 1].n] = '\0';
            return buf;
        }
    }
    return NULL;
}

static int has(const wr_sb_result *r, const char *m)
{
    for (size_t i = 0; i < r->count; i++) {
        if (eq(r->items[i], m)) {
            return 1;
        }
    }
    return 0;
}

static void test_strings(void)
{
    fake f = {0};
    wr_storebuf *b = wr_storebuf_create(16);
    wr_sb_result r = R(b, &f, "GET", "s", NULL);
    CHECK(r.present == 1 && eq(r.str, "41"));
    CHECK_INT(f.calls, 1);

    /* get after incrby: base + delta */
    CHECK_INT(W(b, WR_SB_INCRBY, "s", NULL, NULL, -3), 0);
    r = R(b, &f, "GET", "s", NULL);
    CHECK(r.present == 1 && eq(r.str, "38"));
    /* incrby on a missing key counts from 0 */
    CHECK_INT(W(b, WR_SB_INCRBY, "new", NULL, NULL, 5), 0);
    r = R(b, &f, "GET", "new", NULL);
    CHECK(r.present == 1 && eq(r.str, "5"));
    /* set then get: no Redis */
    int before = f.calls;
    CHECK_INT(W(b, WR_SB_SET, "k", "v1", NULL, 0), 0);
    r = R(b, &f, "GET", "k", NULL);
    CHECK(r.present == 1 && eq(r.str, "v1"));
    CHECK_INT(f.calls, before);
    /* del then get = nil, exists = 0, ttl = -2 */
    CHECK_INT(W(b, WR_SB_DEL, "s", NULL, NULL, 0), 0);
    r = R(b, &f, "GET", "s", NULL);
    CHECK_INT(r.present, 0);
    CHECK_INT(R(b, &f, "EXISTS", "s", NULL).num, 0);
    CHECK_INT(R(b, &f, "PTTL", "s", NULL).num, -2);
    /* del, then incrby: starts from 0, no expiry */
    CHECK_INT(W(b, WR_SB_INCRBY, "s", NULL, NULL, 2), 0);
    r = R(b, &f, "GET", "s", NULL);
    CHECK(r.present == 1 && eq(r.str, "2"));
    CHECK_INT(R(b, &f, "PTTL", "s", NULL).num, -1);
    /* set with a TTL, and expire */
    CHECK_INT(W(b, WR_SB_SET, "t", "x", NULL, 60000), 0);
    CHECK_INT(R(b, &f, "PTTL", "t", NULL).num, 60000);
    CHECK_INT(W(b, WR_SB_EXPIRE, "t", NULL, NULL, 1000), 0);
    CHECK_INT(R(b, &f, "PTTL", "t", NULL).num, 1000);
    /* a set without TTL drops the TTL, as in Redis */
    CHECK_INT(W(b, WR_SB_SET, "t", "y", NULL, 0), 0);
    CHECK_INT(R(b, &f, "PTTL", "t", NULL).num, -1);
    /* untouched keys: Redis answers */
    CHECK_INT(R(b, &f, "PTTL", "txt", NULL).num, -1);
    /* incrby on a non-integer known value is refused at once */
    CHECK_INT(W(b, WR_SB_INCRBY, "k", NULL, NULL, 1), -1);
    CHECK_STR(err, "value is not an integer");
    /* incrby over a non-integer base: the read says so */
    CHECK_INT(W(b, WR_SB_INCRBY, "txt", NULL, NULL, 1), 0);
    r = R(b, &f, "GET", "txt", NULL);
    CHECK_INT(r.present, -1);
    CHECK_STR(err, "value is not an integer");
    /* overflow */
    CHECK_INT(W(b, WR_SB_SET, "big", "9223372036854775806", NULL, 0), 0);
    CHECK_INT(W(b, WR_SB_INCRBY, "big", NULL, NULL, 2), -1);
    CHECK_STR(err, "increment or decrement would overflow");
    /* the writes are kept in order, rejected ones not */
    int n;
    const wr_sb_write *w = wr_storebuf_writes(b, &n);
    CHECK_INT(n, 10);
    CHECK_INT(w[0].op, WR_SB_INCRBY);
    CHECK_INT(w[0].num, -3);
    CHECK(eq(wr_storebuf_key(b, w[0].key), "s"));
    CHECK_STR(wr_sb_op_name(w[2].op), "set");
    CHECK(eq(w[2].a, "v1"));
    wr_storebuf_destroy(b);
}

static void test_hashes(void)
{
    fake f = {0};
    char buf[64];
    wr_storebuf *b = wr_storebuf_create(32);
    CHECK_INT(W(b, WR_SB_HSET, "h", "c", "new", 0), 0);
    CHECK_INT(W(b, WR_SB_HDEL, "h", "b", NULL, 0), 0);
    CHECK_INT(W(b, WR_SB_HINCRBY, "h", "a", NULL, 10), 0);
    CHECK_INT(W(b, WR_SB_HINCRBY, "h", "n", NULL, 4), 0);
    wr_sb_result r = R(b, &f, "HGETALL", "h", NULL);
    CHECK_INT(r.count, 6);
    CHECK_STR(hfind(&r, "a", buf), "11");
    CHECK(hfind(&r, "b", buf) == NULL);
    CHECK_STR(hfind(&r, "c", buf), "new");
    CHECK_STR(hfind(&r, "n", buf), "4");
    wr_sb_result_free(&r);
    r = R(b, &f, "HGET", "h", "a");
    CHECK(r.present == 1 && eq(r.str, "11"));
    r = R(b, &f, "HGET", "h", "b");
    CHECK_INT(r.present, 0);
    r = R(b, &f, "HGET", "h", "c");
    CHECK(r.present == 1 && eq(r.str, "new"));
    /* a kind conflict inside the message is refused */
    CHECK_INT(W(b, WR_SB_INCRBY, "h", NULL, NULL, 1), -1);
    CHECK_STR(err, "key 'h' holds a hash in this message");
    CHECK_INT(W(b, WR_SB_SADD, "h", "m", NULL, 0), -1);
    r = R(b, &f, "GET", "h", NULL);
    CHECK_INT(r.present, -1);
    CHECK_STR(err, "key 'h' holds a hash in this message");
    /* del then hset: only the new fields */
    CHECK_INT(W(b, WR_SB_DEL, "h", NULL, NULL, 0), 0);
    CHECK_INT(W(b, WR_SB_HINCRBY, "h", "a", NULL, 3), 0);
    r = R(b, &f, "HGETALL", "h", NULL);
    CHECK_INT(r.count, 2);
    CHECK_STR(hfind(&r, "a", buf), "3");
    wr_sb_result_free(&r);
    CHECK_INT(R(b, &f, "EXISTS", "h", NULL).num, 1);
    CHECK_INT(W(b, WR_SB_HDEL, "h", "a", NULL, 0), 0);
    CHECK_INT(R(b, &f, "EXISTS", "h", NULL).num, 0);
    /* hincrby after hdel restarts at 0 */
    CHECK_INT(W(b, WR_SB_HINCRBY, "h", "a", NULL, -2), 0);
    r = R(b, &f, "HGET", "h", "a");
    CHECK(r.present == 1 && eq(r.str, "-2"));
    /* a hash with every field deleted no longer exists (unknown base: fetched) */
    wr_storebuf_reset(b);
    CHECK_INT(W(b, WR_SB_HDEL, "h", "a", NULL, 0), 0);
    CHECK_INT(R(b, &f, "EXISTS", "h", NULL).num, 1);
    CHECK_INT(W(b, WR_SB_HDEL, "h", "b", NULL, 0), 0);
    CHECK_INT(R(b, &f, "EXISTS", "h", NULL).num, 0);
    wr_storebuf_destroy(b);
}

static void test_sets(void)
{
    fake f = {0};
    wr_storebuf *b = wr_storebuf_create(32);
    CHECK_INT(R(b, &f, "SISMEMBER", "set", "m1").num, 1);
    CHECK_INT(W(b, WR_SB_SREM, "set", "m1", NULL, 0), 0);
    CHECK_INT(W(b, WR_SB_SADD, "set", "m3", NULL, 0), 0);
    CHECK_INT(R(b, &f, "SISMEMBER", "set", "m1").num, 0);
    CHECK_INT(R(b, &f, "SISMEMBER", "set", "m2").num, 1);
    CHECK_INT(R(b, &f, "SISMEMBER", "set", "m3").num, 1);
    wr_sb_result r = R(b, &f, "SMEMBERS", "set", NULL);
    CHECK_INT(r.count, 2);
    CHECK(has(&r, "m2") && has(&r, "m3") && !has(&r, "m1"));
    wr_sb_result_free(&r);
    /* sadd then srem of the same member */
    CHECK_INT(W(b, WR_SB_SADD, "other", "x", NULL, 0), 0);
    CHECK_INT(W(b, WR_SB_SREM, "other", "x", NULL, 0), 0);
    CHECK_INT(R(b, &f, "SISMEMBER", "other", "x").num, 0);
    r = R(b, &f, "SMEMBERS", "other", NULL);
    CHECK_INT(r.count, 0);
    wr_sb_result_free(&r);
    wr_storebuf_destroy(b);
}

static void test_limits_and_errors(void)
{
    fake f = {0};
    wr_storebuf *b = wr_storebuf_create(3);
    CHECK_INT(W(b, WR_SB_SET, "a", "1", NULL, 0), 0);
    CHECK_INT(W(b, WR_SB_SET, "b", "1", NULL, 0), 0);
    CHECK_INT(W(b, WR_SB_SET, "c", "1", NULL, 0), 0);
    CHECK_INT(W(b, WR_SB_SET, "d", "1", NULL, 0), -1);
    CHECK_STR(err, "more than 3 writes in one message (store.max_writes)");
    /* a failing fetch is an error of the read */
    wr_sb_result r = R(b, &f, "GET", "down", NULL);
    CHECK_INT(r.present, -1);
    CHECK_STR(err, "connection refused");
    /* reset forgets everything */
    wr_storebuf_reset(b);
    int n;
    wr_storebuf_writes(b, &n);
    CHECK_INT(n, 0);
    CHECK_INT(wr_storebuf_key_count(b), 0);
    r = R(b, &f, "GET", "a", NULL);
    CHECK_INT(r.present, 0);
    /* binary-safe keys and values */
    wr_sbstr k = {"x\0y", 3}, v = {"a\0b", 3};
    CHECK_INT(wr_storebuf_write(b, WR_SB_SET, k, v, none, 0, err, sizeof(err)), 0);
    CHECK_INT(wr_storebuf_read(b, "GET", k, none, fetch, &f, &r, err, sizeof(err)), 0);
    CHECK(r.present == 1 && r.str.n == 3 && memcmp(r.str.p, "a\0b", 3) == 0);
    wr_storebuf_destroy(b);
}

static void test_guards(void)
{
    fake f = {0};
    wr_storebuf *b = wr_storebuf_create(16);
    int n;
    /* reads that reach Redis are kept, once each, with what they saw */
    R(b, &f, "GET", "s", NULL);
    R(b, &f, "GET", "s", NULL);
    R(b, &f, "GET", "missing", NULL);
    wr_sb_result all = R(b, &f, "HGETALL", "h", NULL);
    wr_sb_result_free(&all);
    R(b, &f, "SISMEMBER", "set", "m1");
    R(b, &f, "PTTL", "txt", NULL); /* TTLs run down by themselves: no guard */
    const wr_sb_guard *g = wr_storebuf_guards(b, &n);
    CHECK_INT(n, 4);
    CHECK_STR(g[0].cmd, "GET");
    CHECK(eq(wr_storebuf_key(b, g[0].key), "s"));
    CHECK(g[0].count == 1 && eq(g[0].items[0], "41"));
    CHECK_INT(g[1].count, 0);
    CHECK_STR(g[2].cmd, "HGETALL");
    CHECK_INT(g[2].count, 4);
    CHECK_STR(g[3].cmd, "SISMEMBER");
    CHECK(eq(g[3].arg, "m1") && g[3].count == 1 && eq(g[3].items[0], "1"));
    /* reads the overlay answers alone add none */
    CHECK_INT(W(b, WR_SB_SET, "k", "v", NULL, 0), 0);
    R(b, &f, "GET", "k", NULL);
    wr_storebuf_guards(b, &n);
    CHECK_INT(n, 4);
    /* read-only keys are listed with the written ones (the commit declares them all) */
    CHECK_INT(wr_storebuf_key_count(b), 5);
    wr_storebuf_reset(b);
    wr_storebuf_guards(b, &n);
    CHECK_INT(n, 0);
    wr_storebuf_destroy(b);
}

/* A GET guard that saw nothing can be told to expect a value (the worker's own
 * later write on behalf of another message); one that saw a value, another
 * command's or another key's guard is left alone. */
static void test_guard_expect(void)
{
    fake f = {0};
    wr_storebuf *b = wr_storebuf_create(16);
    int n;
    R(b, &f, "GET", "s", NULL);
    R(b, &f, "GET", "missing", NULL);
    R(b, &f, "EXISTS", "other", NULL);
    CHECK_INT(wr_storebuf_guard_expect(b, S("s"), S("x")), 0);
    CHECK_INT(wr_storebuf_guard_expect(b, S("other"), S("x")), 0);
    CHECK_INT(wr_storebuf_guard_expect(b, S("nowhere"), S("x")), 0);
    CHECK_INT(wr_storebuf_guard_expect(b, S("missing"), S("holder-1")), 1);
    const wr_sb_guard *g = wr_storebuf_guards(b, &n);
    CHECK_INT(n, 3);
    CHECK(g[0].count == 1 && eq(g[0].items[0], "41"));
    CHECK(g[1].count == 1 && eq(g[1].items[0], "holder-1"));
    CHECK(g[2].count == 1 && eq(g[2].items[0], "0"));
    /* it saw a value now: a second change is refused */
    CHECK_INT(wr_storebuf_guard_expect(b, S("missing"), S("holder-2")), 0);
    CHECK(eq(g[1].items[0], "holder-1"));
    wr_storebuf_destroy(b); /* frees the new value too (ASan would say) */
}

/* A second buffer reading through a first one (the worker's batch chain). */
static int through(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_base *out,
                   char *why, size_t whycap)
{
    void **chain = ud; /* {first buffer, fake, result holder} */
    wr_sb_result *held = chain[2];
    wr_sb_result_free(held);
    if (wr_storebuf_peek(chain[0], cmd, key, arg, fetch, chain[1], held, why, whycap) != 0) {
        return -1;
    }
    out->present = held->present;
    out->str = held->str;
    out->num = held->num;
    out->items = held->items;
    out->count = held->count;
    return 0;
}

static void test_peek_chain(void)
{
    fake f = {0};
    wr_storebuf *first = wr_storebuf_create(16), *second = wr_storebuf_create(16);
    CHECK_INT(W(first, WR_SB_INCRBY, "s", NULL, NULL, 1), 0);
    CHECK_INT(W(first, WR_SB_HSET, "h", "z", "9", 0), 0);
    wr_sb_result held = {0};
    void *chain[3] = {first, &f, &held};
    wr_sb_result r;
    /* the second sees Redis with the first's writes on top */
    CHECK_INT(wr_storebuf_read(second, "GET", S("s"), none, through, chain, &r, err, sizeof(err)),
              0);
    CHECK(r.present == 1 && eq(r.str, "42"));
    CHECK_INT(
        wr_storebuf_read(second, "HGETALL", S("h"), none, through, chain, &r, err, sizeof(err)), 0);
    CHECK_INT(r.count, 6);
    wr_sb_result_free(&r);
    /* the second guards what it saw; the first gained no guard nor key by the peeks */
    int n;
    const wr_sb_guard *g = wr_storebuf_guards(second, &n);
    CHECK_INT(n, 2);
    CHECK(g[0].count == 1 && eq(g[0].items[0], "42"));
    wr_storebuf_guards(first, &n);
    CHECK_INT(n, 0);
    CHECK_INT(wr_storebuf_key_count(first), 2);
    wr_sb_result_free(&held);
    wr_storebuf_destroy(first);
    wr_storebuf_destroy(second);
}

/* Counters follow Redis's integer grammar (string2ll), as the commit script
 * does: an incrby over a value Redis would refuse is refused here too. */
static void test_integer_grammar(void)
{
    static const char *const refused[] = {"05",
                                          "-0",
                                          "+5",
                                          " 5",
                                          "5 ",
                                          "",
                                          "1.5",
                                          "0x10",
                                          "-",
                                          "99999999999999999999",
                                          "123456789012345678901"};
    static const char *const taken[] = {"0", "-5", "9223372036854775806", "-42"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        wr_storebuf *b = wr_storebuf_create(4);
        CHECK_INT(W(b, WR_SB_SET, "k", refused[i], NULL, 0), 0);
        CHECK_INT(W(b, WR_SB_INCRBY, "k", NULL, NULL, 1), -1);
        CHECK_STR(err, "value is not an integer");
        wr_storebuf_destroy(b);
    }
    for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++) {
        wr_storebuf *b = wr_storebuf_create(4);
        CHECK_INT(W(b, WR_SB_SET, "k", taken[i], NULL, 0), 0);
        CHECK_INT(W(b, WR_SB_INCRBY, "k", NULL, NULL, 1), 0);
        wr_storebuf_destroy(b);
    }
}

int main(void)
{
    test_integer_grammar();
    test_peek_chain();
    test_guards();
    test_guard_expect();
    test_strings();
    test_hashes();
    test_sets();
    test_limits_and_errors();
    return check_report("test_storebuf");
}
