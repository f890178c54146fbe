/*
 * test_confirm.c: unit tests for the confirm module.
 *
 * Publisher confirms are replayed as the broker would send them: single
 * acks, `multiple` acks that settle every publish up to a tag, nacks, acks
 * out of order, stray tags from an earlier (abandoned) batch or past the end
 * of this one, and basic.return before the ack of a mandatory publish, which
 * must stay RETURNED (a confirmed publish into nowhere is lost). The pending
 * count is checked after each step, the state array is grown past its first
 * 64 entries, and a reset starts a new batch at a new sequence number.
 */
#include "confirm.h"

#include "check.h"

/* Add N publishes to C, checking that each gets the next index. */
static void add_n(wr_confirm *c, int n)
{
    for (int i = 0; i < n; i++) {
        long want = (long)c->count;
        CHECK_INT(wr_confirm_add(c), want);
    }
}

static void test_single_acks(void)
{
    wr_confirm c;
    wr_confirm_init(&c);
    CHECK_INT(c.first_seq, 1); /* the broker numbers a fresh channel's publishes from 1 */
    CHECK_INT(c.count, 0);
    CHECK_INT(c.pending, 0);

    add_n(&c, 3);
    CHECK_INT(c.pending, 3);
    for (size_t i = 0; i < 3; i++) {
        CHECK_INT(wr_confirm_state(&c, i), WR_PUB_PENDING);
    }
    wr_confirm_on_ack(&c, 2, 0, 1); /* publish 2 = index 1 */
    CHECK_INT(wr_confirm_state(&c, 0), WR_PUB_PENDING);
    CHECK_INT(wr_confirm_state(&c, 1), WR_PUB_ACKED);
    CHECK_INT(wr_confirm_state(&c, 2), WR_PUB_PENDING);
    CHECK_INT(c.pending, 2);

    /* out of order: 3 before 1 */
    wr_confirm_on_ack(&c, 3, 0, 1);
    CHECK_INT(wr_confirm_state(&c, 2), WR_PUB_ACKED);
    CHECK_INT(wr_confirm_state(&c, 0), WR_PUB_PENDING);
    CHECK_INT(c.pending, 1);
    wr_confirm_on_ack(&c, 1, 0, 1);
    CHECK_INT(wr_confirm_state(&c, 0), WR_PUB_ACKED);
    CHECK_INT(c.pending, 0);

    /* a duplicate ack changes nothing, the count does not go below zero */
    wr_confirm_on_ack(&c, 1, 0, 1);
    CHECK_INT(c.pending, 0);
    /* nor does a nack for an entry already acked */
    wr_confirm_on_ack(&c, 2, 0, 0);
    CHECK_INT(wr_confirm_state(&c, 1), WR_PUB_ACKED);
    CHECK_INT(c.pending, 0);
    wr_confirm_free(&c);
    CHECK(c.state == NULL);
}

static void test_multiple_and_nack(void)
{
    wr_confirm c;
    wr_confirm_init(&c);
    add_n(&c, 6);

    /* multiple ack up to publish 3: indexes 0..2 */
    wr_confirm_on_ack(&c, 3, 1, 1);
    for (size_t i = 0; i < 3; i++) {
        CHECK_INT(wr_confirm_state(&c, i), WR_PUB_ACKED);
    }
    for (size_t i = 3; i < 6; i++) {
        CHECK_INT(wr_confirm_state(&c, i), WR_PUB_PENDING);
    }
    CHECK_INT(c.pending, 3);

    /* a single nack for publish 5 */
    wr_confirm_on_ack(&c, 5, 0, 0);
    CHECK_INT(wr_confirm_state(&c, 4), WR_PUB_NACKED);
    CHECK_INT(wr_confirm_state(&c, 3), WR_PUB_PENDING);
    CHECK_INT(c.pending, 2);

    /* a multiple nack up to 6 settles the rest as nacked, leaves the settled alone */
    wr_confirm_on_ack(&c, 6, 1, 0);
    CHECK_INT(wr_confirm_state(&c, 0), WR_PUB_ACKED);
    CHECK_INT(wr_confirm_state(&c, 3), WR_PUB_NACKED);
    CHECK_INT(wr_confirm_state(&c, 4), WR_PUB_NACKED);
    CHECK_INT(wr_confirm_state(&c, 5), WR_PUB_NACKED);
    CHECK_INT(c.pending, 0);
    wr_confirm_free(&c);
}

static void test_tags_outside_batch(void)
{
    wr_confirm c;
    wr_confirm_init(&c);
    add_n(&c, 4);
    wr_confirm_on_ack(&c, 2, 1, 1); /* the first batch: 1..2 acked, 3..4 abandoned */

    /* the next batch starts at publish 5 */
    wr_confirm_reset(&c, 5);
    CHECK_INT(c.first_seq, 5);
    CHECK_INT(c.count, 0);
    CHECK_INT(c.pending, 0);
    add_n(&c, 3); /* publishes 5, 6, 7 */
    CHECK_INT(c.count, 3);
    CHECK_INT(c.pending, 3);

    /* late answers for the old batch's 3 and 4 are not ours */
    wr_confirm_on_ack(&c, 3, 0, 0);
    wr_confirm_on_ack(&c, 4, 1, 1);
    wr_confirm_on_ack(&c, 0, 1, 1);
    CHECK_INT(c.pending, 3);
    for (size_t i = 0; i < 3; i++) {
        CHECK_INT(wr_confirm_state(&c, i), WR_PUB_PENDING);
    }

    /* a single ack past the end of the batch settles nothing */
    wr_confirm_on_ack(&c, 8, 0, 1);
    CHECK_INT(c.pending, 3);

    /* a multiple ack past the end covers the whole batch */
    wr_confirm_on_ack(&c, 9, 1, 1);
    CHECK_INT(c.pending, 0);
    for (size_t i = 0; i < 3; i++) {
        CHECK_INT(wr_confirm_state(&c, i), WR_PUB_ACKED);
    }

    /* an index past the batch has no ack: it reads as not safe */
    CHECK_INT(wr_confirm_state(&c, 3), WR_PUB_NACKED);
    wr_confirm_free(&c);
}

static void test_returns(void)
{
    wr_confirm c;
    wr_confirm_init(&c);
    add_n(&c, 3);

    /* publish 2 comes back unroutable, then the broker acks everything */
    wr_confirm_on_return(&c, 1);
    CHECK_INT(wr_confirm_state(&c, 1), WR_PUB_RETURNED);
    CHECK_INT(c.pending, 2); /* the return settles it: no ack needed to decide */
    wr_confirm_on_ack(&c, 2, 0, 1);
    CHECK_INT(wr_confirm_state(&c, 1), WR_PUB_RETURNED);
    CHECK_INT(c.pending, 2);
    wr_confirm_on_ack(&c, 3, 1, 1);
    CHECK_INT(wr_confirm_state(&c, 0), WR_PUB_ACKED);
    CHECK_INT(wr_confirm_state(&c, 1), WR_PUB_RETURNED);
    CHECK_INT(wr_confirm_state(&c, 2), WR_PUB_ACKED);
    CHECK_INT(c.pending, 0);

    /* a return for an index outside the batch is ignored */
    wr_confirm_on_return(&c, 3);
    wr_confirm_on_return(&c, 1000);
    CHECK_INT(c.count, 3);
    CHECK_INT(c.pending, 0);

    /* returning twice does not count the entry twice */
    wr_confirm_reset(&c, 4);
    add_n(&c, 2);
    wr_confirm_on_return(&c, 0);
    wr_confirm_on_return(&c, 0);
    CHECK_INT(c.pending, 1);
    wr_confirm_free(&c);
}

static void test_growth_and_reset(void)
{
    wr_confirm c;
    wr_confirm_init(&c);
    wr_confirm_reset(&c, 1000);
    add_n(&c, 200); /* publishes 1000..1199, past the first 64 and 128 entries */
    CHECK_INT(c.count, 200);
    CHECK_INT(c.pending, 200);
    CHECK(c.cap >= 200);

    /* ack 1000..1069 at once, nack 1100, return index 150 (publish 1150) */
    wr_confirm_on_ack(&c, 1069, 1, 1);
    wr_confirm_on_ack(&c, 1100, 0, 0);
    wr_confirm_on_return(&c, 150);
    CHECK_INT(c.pending, 200 - 70 - 1 - 1);
    CHECK_INT(wr_confirm_state(&c, 0), WR_PUB_ACKED);
    CHECK_INT(wr_confirm_state(&c, 63), WR_PUB_ACKED);
    CHECK_INT(wr_confirm_state(&c, 64), WR_PUB_ACKED);
    CHECK_INT(wr_confirm_state(&c, 69), WR_PUB_ACKED);
    CHECK_INT(wr_confirm_state(&c, 70), WR_PUB_PENDING);
    CHECK_INT(wr_confirm_state(&c, 100), WR_PUB_NACKED);
    CHECK_INT(wr_confirm_state(&c, 150), WR_PUB_RETURNED);
    CHECK_INT(wr_confirm_state(&c, 199), WR_PUB_PENDING);
    wr_confirm_on_ack(&c, 1199, 1, 1);
    CHECK_INT(c.pending, 0);
    CHECK_INT(wr_confirm_state(&c, 100), WR_PUB_NACKED);
    CHECK_INT(wr_confirm_state(&c, 150), WR_PUB_RETURNED);
    CHECK_INT(wr_confirm_state(&c, 199), WR_PUB_ACKED);

    /* a reset reuses the memory; new entries start pending, whatever the old state */
    size_t cap = c.cap;
    wr_confirm_reset(&c, 1200);
    CHECK_INT(c.count, 0);
    CHECK_INT(c.pending, 0);
    CHECK_INT(c.cap, cap);
    add_n(&c, 2);
    CHECK_INT(wr_confirm_state(&c, 0), WR_PUB_PENDING);
    CHECK_INT(wr_confirm_state(&c, 1), WR_PUB_PENDING);
    CHECK_INT(c.pending, 2);
    wr_confirm_on_ack(&c, 1199, 1, 1); /* the old batch's last tag again */
    CHECK_INT(c.pending, 2);
    wr_confirm_on_ack(&c, 1201, 0, 1);
    CHECK_INT(wr_confirm_state(&c, 1), WR_PUB_ACKED);
    CHECK_INT(wr_confirm_state(&c, 0), WR_PUB_PENDING);
    CHECK_INT(c.pending, 1);
    wr_confirm_free(&c);
    CHECK_INT(c.count, 0);
    CHECK_INT(c.cap, 0);
}

/* A window spanning two batches: the older one's entries are dropped once done,
 * the newer one's keep their sequence numbers, and late answers still land. */
static void test_trim(void)
{
    wr_confirm c;
    wr_confirm_init(&c);
    add_n(&c, 5); /* publishes 1..5: batch A is 1..3, batch B 4..5 */
    wr_confirm_on_ack(&c, 2, 1, 1);
    CHECK_INT(c.pending, 3);
    wr_confirm_trim(&c, 3); /* batch A is done with: its pending 3 is forgotten */
    CHECK_INT(c.first_seq, 4);
    CHECK_INT(c.count, 2);
    CHECK_INT(c.pending, 2);
    CHECK_INT(wr_confirm_state(&c, 0), WR_PUB_PENDING); /* publish 4 */
    wr_confirm_on_ack(&c, 3, 0, 1);                     /* A's late ack: not ours now */
    CHECK_INT(c.pending, 2);
    wr_confirm_on_ack(&c, 5, 0, 0);
    CHECK_INT(wr_confirm_state(&c, 1), WR_PUB_NACKED);
    add_n(&c, 1); /* publish 6 gets index 2 */
    CHECK_INT(c.count, 3);
    wr_confirm_on_ack(&c, 6, 1, 1); /* multiple: 4 and 6 acked, 5 stays nacked */
    CHECK_INT(wr_confirm_state(&c, 0), WR_PUB_ACKED);
    CHECK_INT(wr_confirm_state(&c, 1), WR_PUB_NACKED);
    CHECK_INT(wr_confirm_state(&c, 2), WR_PUB_ACKED);
    CHECK_INT(c.pending, 0);
    wr_confirm_trim(&c, 10); /* more than there is: all of it */
    CHECK_INT(c.count, 0);
    CHECK_INT(c.first_seq, 7);
    wr_confirm_free(&c);
}

int main(void)
{
    test_trim();
    test_single_acks();
    test_multiple_and_nack();
    test_tags_outside_batch();
    test_returns();
    test_growth_and_reset();
    return check_report("test_confirm");
}
