/*
 * fuzz_storebuf: any sequence of ctx.store writes and reads against a fake
 * Redis, through storebuf's overlay.
 *
 * Input: records of an opcode byte, then a key, a field or member or value,
 * and a second value (a length byte and the bytes each, at most 15 bytes so
 * keys repeat), and an 8-byte number. Opcodes 0-8 are the writes (set, del,
 * incrby, expire, hset, hdel, hincrby, sadd, srem), 9-15 the reads (GET,
 * HGET, HGETALL, SMEMBERS, SISMEMBER, EXISTS, PTTL, alternately through
 * wr_storebuf_read and wr_storebuf_peek), 16 a reset.
 *
 * The fake Redis answers by the key's first byte (mod 5): nothing, a string
 * (an integer or not, by the second byte), a hash {a: 1, b: x}, a set
 * {m1, m2}, or a failed fetch; a command of the wrong kind gets WRONGTYPE, as
 * from Redis. After a write succeeds, a read must see it (read your writes):
 * set then get gives the value, del then exists gives 0, hset then hget the
 * value and hgetall the field exactly once, hdel then hget nothing, sadd then
 * sismember 1 and smembers the member exactly once, srem then sismember 0.
 * The buffered writes and guards must name keys the buffer knows.
 */
#include "storebuf.h"

#include "fuzz.h"

#define MAX_WRITES 64

static wr_sbstr S(const char *s)
{
    return (wr_sbstr){s, strlen(s)};
}

static int eq(wr_sbstr a, wr_sbstr b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static const char *const strings[] = {
    "41", "-1", "9223372036854775807", "-9223372036854775808", "x", "", " 7", "007"};

typedef struct {
    wr_sbstr items[4];
} fake;

/* The fake Redis (see the top of the file). */
static int fetch(void *ud, const char *cmd, wr_sbstr key, wr_sbstr arg, wr_sb_base *out, char *err,
                 size_t errcap)
{
    fake *f = ud;
    int kind = key.n > 0 ? (unsigned char)key.p[0] % 5 : 0;
    int is_str = kind == 1, is_hash = kind == 2, is_set = kind == 3;

    if (kind == 4) {
        snprintf(err, errcap, "connection lost");
        return -1;
    }
    memset(out, 0, sizeof(*out));
    if (strcmp(cmd, "EXISTS") == 0) {
        out->num = kind != 0;
        return 0;
    }
    if (strcmp(cmd, "PTTL") == 0) {
        out->num = kind == 0 ? -2 : is_str ? 5000 : -1;
        return 0;
    }
    int want_str = strcmp(cmd, "GET") == 0;
    int want_hash = cmd[0] == 'H';
    int want_set = cmd[0] == 'S';
    if (kind != 0 && !((want_str && is_str) || (want_hash && is_hash) || (want_set && is_set))) {
        snprintf(err, errcap, "WRONGTYPE Operation against a key holding the wrong kind of value");
        return -1;
    }
    if (kind == 0) {
        return 0;
    }
    if (strcmp(cmd, "GET") == 0) {
        out->present = 1;
        out->str = S(strings[(key.n > 1 ? (unsigned char)key.p[1] : 0) % 8]);
    } else if (strcmp(cmd, "HGET") == 0) {
        if (eq(arg, S("a")) || eq(arg, S("b"))) {
            out->present = 1;
            out->str = eq(arg, S("a")) ? S("1") : S("x");
        }
    } else if (strcmp(cmd, "HGETALL") == 0) {
        f->items[0] = S("a");
        f->items[1] = S("1");
        f->items[2] = S("b");
        f->items[3] = S("x");
        out->items = f->items;
        out->count = 4;
    } else if (strcmp(cmd, "SMEMBERS") == 0) {
        f->items[0] = S("m1");
        f->items[1] = S("m2");
        out->items = f->items;
        out->count = 2;
    } else if (strcmp(cmd, "SISMEMBER") == 0) {
        out->num = eq(arg, S("m1")) || eq(arg, S("m2"));
    }
    return 0;
}

static const char *const reads[] = {"GET",       "HGET",   "HGETALL", "SMEMBERS",
                                    "SISMEMBER", "EXISTS", "PTTL"};

/* How many times NAME appears as a member (STEP 1) or a field (STEP 2) in R. */
static int count_in(const wr_sb_result *r, wr_sbstr name, size_t step, wr_sbstr *value)
{
    int n = 0;
    for (size_t i = 0; i + step - 1 < r->count; i += step) {
        if (eq(r->items[i], name)) {
            n++;
            if (value != NULL && step == 2) {
                *value = r->items[i + 1];
            }
        }
    }
    return n;
}

/* Read CMD on KEY/ARG; the result is OUT (freed by the caller) or -1. */
static int rd(wr_storebuf *b, fake *f, const char *cmd, wr_sbstr key, wr_sbstr arg,
              wr_sb_result *out, int peek)
{
    char err[256];
    int rc = peek ? wr_storebuf_peek(b, cmd, key, arg, fetch, f, out, err, sizeof(err))
                  : wr_storebuf_read(b, cmd, key, arg, fetch, f, out, err, sizeof(err));
    FZ_ASSERT(rc == 0 || rc == -1);
    return rc;
}

/* After write OP of KEY (A, B) succeeded: a read sees it. */
static void check_write_visible(wr_storebuf *b, fake *f, wr_sb_op op, wr_sbstr key, wr_sbstr a,
                                wr_sbstr bv)
{
    wr_sb_result r;
    wr_sbstr v = {"", 0};
    switch (op) {
    case WR_SB_SET:
        FZ_ASSERT(rd(b, f, "GET", key, a, &r, 1) == 0);
        FZ_ASSERT(r.present && eq(r.str, a));
        break;
    case WR_SB_DEL:
        FZ_ASSERT(rd(b, f, "EXISTS", key, a, &r, 1) == 0);
        FZ_ASSERT(r.num == 0);
        break;
    case WR_SB_HSET:
        FZ_ASSERT(rd(b, f, "HGET", key, a, &r, 1) == 0);
        FZ_ASSERT(r.present && eq(r.str, bv));
        wr_sb_result_free(&r);
        if (rd(b, f, "HGETALL", key, a, &r, 1) == 0) {
            FZ_ASSERT(count_in(&r, a, 2, &v) == 1 && eq(v, bv));
        }
        break;
    case WR_SB_HDEL:
        FZ_ASSERT(rd(b, f, "HGET", key, a, &r, 1) == 0);
        FZ_ASSERT(!r.present);
        break;
    case WR_SB_SADD:
        FZ_ASSERT(rd(b, f, "SISMEMBER", key, a, &r, 1) == 0);
        FZ_ASSERT(r.num == 1);
        wr_sb_result_free(&r);
        if (rd(b, f, "SMEMBERS", key, a, &r, 1) == 0) {
            FZ_ASSERT(count_in(&r, a, 1, NULL) == 1);
        }
        break;
    case WR_SB_SREM:
        FZ_ASSERT(rd(b, f, "SISMEMBER", key, a, &r, 1) == 0);
        FZ_ASSERT(r.num == 0);
        break;
    default:
        return;
    }
    wr_sb_result_free(&r);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    wr_storebuf *b = wr_storebuf_create(MAX_WRITES);
    fake f;
    int nth = 0;

    FZ_ASSERT(b != NULL);
    while (in.n > 0) {
        uint8_t op = fz_u8(&in) % 17;
        const uint8_t *kp, *ap, *bp;
        size_t kn = fz_take(&in, fz_u8(&in) % 16, &kp);
        size_t an = fz_take(&in, fz_u8(&in) % 16, &ap);
        size_t bn = fz_take(&in, fz_u8(&in) % 16, &bp);
        int64_t num = fz_i64(&in);
        wr_sbstr key = {(const char *)kp, kn}, a = {(const char *)ap, an},
                 bv = {(const char *)bp, bn};
        char err[256];

        if (op <= WR_SB_SREM) {
            if (wr_storebuf_write(b, (wr_sb_op)op, key, a, bv, num, err, sizeof(err)) == 0) {
                check_write_visible(b, &f, (wr_sb_op)op, key, a, bv);
            } else {
                FZ_ASSERT(err[0] != '\0');
            }
        } else if (op < 16) {
            wr_sb_result r;
            if (rd(b, &f, reads[op - 9], key, a, &r, nth++ % 2) == 0) {
                wr_sb_result_free(&r);
            }
        } else {
            wr_storebuf_reset(b);
        }

        int nw, ng, nk = wr_storebuf_key_count(b);
        const wr_sb_write *w = wr_storebuf_writes(b, &nw);
        const wr_sb_guard *g = wr_storebuf_guards(b, &ng);
        FZ_ASSERT(nw >= 0 && nw <= MAX_WRITES);
        for (int i = 0; i < nw; i++) {
            FZ_ASSERT(w[i].key >= 0 && w[i].key < nk);
            FZ_ASSERT(wr_sb_op_name(w[i].op) != NULL);
        }
        for (int i = 0; i < ng; i++) {
            FZ_ASSERT(g[i].key >= 0 && g[i].key < nk);
        }
    }
    wr_storebuf_destroy(b);
    return 0;
}
