/*
 * test_tindex: the trace index's lists (tindex.c): which values an event's
 * first journal entry files it under (its recorded body values, and its
 * message id only where the idempotency key is something else), the key
 * form, and the member split `warren trace` reads back.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tindex.h"

static char *fields_orders[] = {"order_id", "customer.id"};

static wr_subscription sub_of(const char *name, wr_key_source source, int nfields)
{
    wr_subscription s;
    memset(&s, 0, sizeof(s));
    s.name = (char *)name;
    s.idem.enabled = 1;
    s.idem.source = source;
    s.idem.prefix = "warren:idem:";
    s.trace_fields = fields_orders;
    s.trace_field_count = nfields;
    return s;
}

#define FIRST                                                                                      \
    "{\"ts\":1,\"event\":\"ok\",\"message_id\":\"m-1\",\"received_at\":1,"                         \
    "\"fields\":{\"order_id\":\"o-2007\",\"customer.id\":42}}"

/* A subscription keyed by a body field: the message id and each recorded value. */
static void test_keyed_by_field(void)
{
    wr_subscription s = sub_of("orders", WR_KEY_JSON, 2);
    wr_tindex x = {0};
    wr_tindex_add(&x, &s, FIRST, "o-2007");
    CHECK_INT(x.n, 3);
    CHECK_STR(x.lists[0].key, "warren:idem:journal:#index:m-1");
    CHECK_STR(x.lists[1].key, "warren:idem:journal:#index:o-2007");
    CHECK_STR(x.lists[2].key, "warren:idem:journal:#index:42");
    for (int i = 0; i < x.n; i++) {
        CHECK_INT(x.lists[i].count, 1);
        CHECK_STR(x.lists[i].entries[0], "orders:o-2007");
    }
    /* a later step of the same event: not filed again */
    wr_tindex_add(&x, &s, "{\"ts\":2,\"event\":\"retried\",\"message_id\":\"m-1\"}", "o-2007");
    CHECK_INT(x.n, 3);
    wr_tindex_free(&x);
    CHECK_INT(x.n, 0);
}

/* Keyed by message id: the id is the key (no list for it); without
 * trace_fields nothing at all. */
static void test_keyed_by_id(void)
{
    wr_subscription s = sub_of("payments", WR_KEY_MESSAGE_ID, 1);
    wr_tindex x = {0};
    wr_tindex_add(&x, &s, FIRST, "m-1");
    CHECK_INT(x.n, 2); /* the values the entry recorded, not the id */
    CHECK_STR(x.lists[0].key, "warren:idem:journal:#index:o-2007");
    CHECK_STR(x.lists[0].entries[0], "payments:m-1");
    CHECK_STR(x.lists[1].key, "warren:idem:journal:#index:42");
    wr_tindex_free(&x);
    s.trace_field_count = 0;
    wr_tindex_add(&x, &s, FIRST, "m-1");
    CHECK_INT(x.n, 0);
    s.idem.source = WR_KEY_HEADER;
    s.idem.enabled = 0;
    wr_tindex_add(&x, &s, FIRST, "m-1");
    CHECK_INT(x.n, 0); /* idempotency off: no journal, no index */
    wr_tindex_free(&x);
}

/* Many events in one batch: every list keeps pointing at its own member. */
static void test_many(void)
{
    wr_subscription s = sub_of("orders", WR_KEY_JSON, 1);
    wr_tindex x = {0};
    char entry[200], key[32], want[64];
    for (int i = 0; i < 40; i++) {
        snprintf(entry, sizeof(entry),
                 "{\"message_id\":\"m-%d\",\"received_at\":1,\"fields\":{\"order_id\":\"o-%d\"}}",
                 i, i);
        snprintf(key, sizeof(key), "o-%d", i);
        wr_tindex_add(&x, &s, entry, key);
    }
    CHECK_INT(x.n, 80);
    snprintf(want, sizeof(want), "warren:idem:journal:#index:o-%d", 39);
    CHECK_STR(x.lists[79].key, want);
    CHECK_STR(x.lists[0].entries[0], "orders:o-0");
    CHECK_STR(x.lists[79].entries[0], "orders:o-39");
    wr_tindex_free(&x);
}

static void test_key_and_member(void)
{
    char out[64];
    CHECK_INT(wr_tindex_key("p:", "v", out, sizeof(out)), 0);
    CHECK_STR(out, "p:journal:#index:v");
    CHECK_INT(wr_tindex_key("p:", "a-long-value", out, 20), -1);
    size_t sl;
    const char *k;
    const char *m = "orders:o:1:x";
    CHECK_INT(wr_tindex_member(m, strlen(m), &sl, &k), 0);
    CHECK_INT((int)sl, 6);
    CHECK_STR(k, "o:1:x");
    CHECK_INT(wr_tindex_member("nocolon", 7, &sl, &k), -1);
}

int main(void)
{
    test_keyed_by_field();
    test_keyed_by_id();
    test_many();
    test_key_and_member();
    return check_report("test_tindex");
}
