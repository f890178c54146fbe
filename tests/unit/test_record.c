/*
 * test_record.c: unit tests for record (the idempotency record's key and
 * value) and inflight (the keys in flight in one process).
 *
 * Values of every state are parsed and built, tokens and journal entries
 * holding '|' included; malformed values are refused; the hash form of
 * earlier versions reads the same; the inflight set holds a key once, takes
 * it out again without breaking the probe chains of its neighbours (many keys
 * in a small table, removed in a scrambled order), and is shared by threads.
 */
#include "inflight.h"
#include "numfmt.h"
#include "rconn.h"
#include "record.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"

static void test_parse(void)
{
    wr_record r;
    const char *p = "p|3|1234-0-ab|cd|1700000000123";
    CHECK_INT(wr_record_parse(p, strlen(p), &r), 0);
    CHECK_INT(r.state, 'p');
    CHECK_INT(r.starts, 3);
    CHECK_INT(r.token_len, 12); /* up to the last '|', as record.lua reads it */
    CHECK(strncmp(r.token, "1234-0-ab|cd", 12) == 0);
    CHECK_INT(r.lease_until, 1700000000123LL);

    const char *d = "d|1|ok|1700000000000|{\"ts\":1,\"error\":\"a|b\"}";
    CHECK_INT(wr_record_parse(d, strlen(d), &r), 0);
    CHECK_INT(r.state, 'd');
    CHECK_INT(r.starts, 1);
    CHECK_INT(r.outcome_len, 2);
    CHECK(strncmp(r.outcome, "ok", 2) == 0);
    CHECK_INT(r.done_at, 1700000000000LL);
    CHECK_INT(r.entry_len, strlen("{\"ts\":1,\"error\":\"a|b\"}"));
    const char *d2 = "d|2|dead-lettered|5|";
    CHECK_INT(wr_record_parse(d2, strlen(d2), &r), 0);
    CHECK_INT(r.entry_len, 0);
    const char *d3 = "d|2|rejected|5";
    CHECK_INT(wr_record_parse(d3, strlen(d3), &r), 0);
    CHECK_INT(r.done_at, 5);
    CHECK_INT(r.outcome_len, 8);

    CHECK_INT(wr_record_parse("r|0", 3, &r), 0);
    CHECK_INT(r.state, 'r');
    CHECK_INT(r.starts, 0);

    static const char *const bad[] = {
        "",      "x|1",    "p|",       "p|1",       "p|1|tok", "p|x|t|1",
        "r|1|x", "d|1|ok", "d|1|ok|x", "p|1|t|12a", "r|",      "p|1|t|9999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (wr_record_parse(bad[i], strlen(bad[i]), &r) != -1) {
            fprintf(stderr, "accepted: %s\n", bad[i]);
            CHECK(0);
        }
    }
}

static void test_build_and_key(void)
{
    char *v = wr_record_done(2, "ok", 1700000000000LL, "{\"x\":1}");
    CHECK_STR(v, "d|2|ok|1700000000000|{\"x\":1}");
    wr_record r;
    CHECK_INT(wr_record_parse(v, strlen(v), &r), 0);
    CHECK_INT(r.starts, 2);
    free(v);
    v = wr_record_done(1, "rejected", 7, NULL);
    CHECK_STR(v, "d|1|rejected|7|");
    free(v);
    v = wr_record_released(-1);
    CHECK_STR(v, "r|0");
    free(v);
    char k[64];
    CHECK_INT(wr_record_key("warren:idem:", "orders", "o-1", k, sizeof(k)),
              (int)strlen("warren:idem:orders:o-1"));
    CHECK_STR(k, "warren:idem:orders:o-1");
    CHECK_INT(wr_record_key("warren:idem:", "orders", "o-1", k, 10), -1);
}

static void test_hash_form(void)
{
    const char *f[] = {"state", "token", "lease_until", "starts"};
    const char *v[] = {"processing", "t-1", "99", "4"};
    wr_record r;
    CHECK_INT(wr_record_from_hash(f, v, 4, &r), 0);
    CHECK_INT(r.state, 'p');
    CHECK_INT(r.starts, 4);
    CHECK_INT(r.lease_until, 99);
    CHECK_INT(r.token_len, 3);
    const char *f2[] = {"state", "outcome", "done_at"};
    const char *v2[] = {"done", "rejected", "5"};
    CHECK_INT(wr_record_from_hash(f2, v2, 3, &r), 0);
    CHECK_INT(r.state, 'd');
    CHECK_INT(r.done_at, 5);
    CHECK_STR(r.entry, "");
    const char *v3[] = {"weird"};
    CHECK_INT(wr_record_from_hash(f, v3, 1, &r), -1);
    CHECK_INT(wr_record_from_hash(f2 + 1, v2 + 1, 2, &r), -1); /* no state */
    CHECK_STR(wr_record_state_name('r'), "released");
    CHECK(wr_record_state_name(0) == NULL);
}

static void test_inflight(void)
{
    wr_inflight *f = wr_inflight_create();
    CHECK(f != NULL);
    CHECK_INT(wr_inflight_add(f, "a"), 1);
    CHECK_INT(wr_inflight_add(f, "a"), 0);
    CHECK_INT(wr_inflight_has(f, "a"), 1);
    CHECK_INT(wr_inflight_has(f, "b"), 0);
    wr_inflight_remove(f, "a");
    CHECK_INT(wr_inflight_has(f, "a"), 0);
    wr_inflight_remove(f, "a"); /* twice: nothing */
    CHECK_INT(wr_inflight_count(f), 0);
    /* many keys: the table grows; removal in a scrambled order keeps the rest */
    enum { N = 3000 };
    char k[32];
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        CHECK_INT(wr_inflight_add(f, k), 1);
    }
    CHECK_INT(wr_inflight_count(f), N);
    int gone = 0;
    for (int i = 0; i < N; i++) {
        int j = (i * 7919) % N;
        if (j % 3 == 0) {
            snprintf(k, sizeof(k), "key-%d", j);
            wr_inflight_remove(f, k);
            gone++;
        }
    }
    int wrong = 0;
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        wrong += wr_inflight_has(f, k) != (i % 3 != 0);
    }
    CHECK_INT(wrong, 0);
    CHECK_INT(wr_inflight_count(f), N - gone);
    wr_inflight_destroy(f);
}

/* Two threads add and remove the same keys: each add that succeeds belongs
 * to one thread, and the set ends empty. */
static wr_inflight *shared;
static int won[2];

static void *racer(void *arg)
{
    int id = *(int *)arg;
    char k[32];
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 50; i++) {
            snprintf(k, sizeof(k), "r-%d-%d", round, i);
            if (wr_inflight_add(shared, k) == 1) {
                won[id]++;
            }
        }
    }
    return NULL;
}

static void test_inflight_threads(void)
{
    shared = wr_inflight_create();
    pthread_t t[2];
    int ids[2] = {0, 1};
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, racer, &ids[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    CHECK_INT(won[0] + won[1], 200 * 50); /* each key won exactly once */
    CHECK_INT(wr_inflight_count(shared), 200 * 50);
    wr_inflight_destroy(shared);
}

/* Numbers and RESP commands as the batch path writes them, against printf. */
static void test_numfmt_and_resp(void)
{
    static const int64_t vals[] = {0, 1, -1, 9, 10, -10, 1234567890123LL, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        char a[WR_NUMFMT_MAX], b[32];
        size_t n = wr_fmt_i64(a, vals[i]);
        snprintf(b, sizeof(b), "%lld", (long long)vals[i]);
        CHECK_STR(a, b);
        CHECK_INT(n, strlen(b));
    }
    char u[WR_NUMFMT_MAX];
    CHECK_INT(wr_fmt_u64(u, UINT64_MAX), 20);
    CHECK_STR(u, "18446744073709551615");
    const char *argv[] = {"EVALSHA", "", "x\r\ny"};
    size_t lens[] = {7, 0, 4};
    char *cmd = NULL;
    long n = wr_rconn_format(&cmd, 3, argv, lens);
    CHECK_STR(cmd, "*3\r\n$7\r\nEVALSHA\r\n$0\r\n\r\n$4\r\nx\r\ny\r\n");
    CHECK_INT(n, (long)strlen("*3\r\n$7\r\nEVALSHA\r\n$0\r\n\r\n$4\r\nx\r\ny\r\n"));
    free(cmd);
}

int main(void)
{
    test_numfmt_and_resp();
    test_parse();
    test_build_and_key();
    test_hash_form();
    test_inflight();
    test_inflight_threads();
    return check_report("test_record");
}
