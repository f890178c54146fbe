/*
 * test_ordering.c: unit tests for ordering (per-key lanes inside a worker).
 *
 * A finished head (ok, dead-lettered, duplicate) never blocks its key; an
 * unfinished one (returned, waiting, retried) blocks it behind the first such
 * head, whatever comes later; keys are told apart exactly (no prefix match,
 * no collision through the hash); a cleared set blocks nothing; and the move
 * of a follower is the head's: back to the queue, through the wait queue, or
 * run (a retried head is not parked yet).
 */
#include "ordering.h"

#include <stdio.h>

#include "check.h"

static void test_finished_heads_block_nothing(void)
{
    wr_lanes *l = wr_lanes_create();
    CHECK(l != NULL);
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_OK, "m1"), 0);
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_DLQ, "m2"), 0);
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_DUPLICATE, "m3"), 0);
    CHECK(wr_lanes_find(l, "o-1") == NULL);
    CHECK_INT(wr_lanes_count(l), 0);
    /* no key: no lane */
    CHECK_INT(wr_lanes_note(l, "", WR_ACT_NONE, "m4"), 0);
    CHECK_INT(wr_lanes_note(l, NULL, WR_ACT_NONE, "m4"), 0);
    CHECK(wr_lanes_find(l, "") == NULL);
    wr_lanes_destroy(l);
}

static void test_first_head_stays(void)
{
    wr_lanes *l = wr_lanes_create();
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_WAIT, "m1"), 1);
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_NONE, "m2"), 0);
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_OK, "m3"), 0);
    const wr_lane *x = wr_lanes_find(l, "o-1");
    CHECK(x != NULL);
    if (x != NULL) {
        CHECK_STR(x->key, "o-1");
        CHECK_STR(x->head_id, "m1");
        CHECK_INT(x->head_act, WR_ACT_WAIT);
    }
    /* exact keys only */
    CHECK(wr_lanes_find(l, "o-") == NULL);
    CHECK(wr_lanes_find(l, "o-10") == NULL);
    CHECK_INT(wr_lanes_note(l, "o-2", WR_ACT_RETRY, NULL), 1);
    x = wr_lanes_find(l, "o-2");
    CHECK(x != NULL && x->head_act == WR_ACT_RETRY && x->head_id[0] == '\0');
    CHECK_INT(wr_lanes_count(l), 2);
    wr_lanes_clear(l);
    CHECK_INT(wr_lanes_count(l), 0);
    CHECK(wr_lanes_find(l, "o-1") == NULL);
    CHECK(wr_lanes_find(l, "o-2") == NULL);
    /* usable again after a clear */
    CHECK_INT(wr_lanes_note(l, "o-2", WR_ACT_NONE, "m9"), 1);
    CHECK(wr_lanes_find(l, "o-2") != NULL);
    wr_lanes_destroy(l);
}

/* Many keys: the table grows and keeps every one, and finds no other. */
static void test_many_keys(void)
{
    wr_lanes *l = wr_lanes_create();
    char key[32], id[32];
    int added = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "order-%d", i);
        snprintf(id, sizeof(id), "m%d", i);
        added += wr_lanes_note(l, key, i % 2 ? WR_ACT_NONE : WR_ACT_WAIT, id);
    }
    CHECK_INT(added, 5000);
    CHECK_INT(wr_lanes_count(l), 5000);
    int found = 0, right = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "order-%d", i);
        snprintf(id, sizeof(id), "m%d", i);
        const wr_lane *x = wr_lanes_find(l, key);
        found += x != NULL;
        right += x != NULL && strcmp(x->head_id, id) == 0 &&
                 x->head_act == (i % 2 ? WR_ACT_NONE : WR_ACT_WAIT);
    }
    CHECK_INT(found, 5000);
    CHECK_INT(right, 5000);
    CHECK(wr_lanes_find(l, "order-5000") == NULL);
    wr_lanes_destroy(l);
}

static void test_follow(void)
{
    CHECK_INT(wr_ordering_follow(WR_ACT_NONE), WR_LANE_RETURN);
    CHECK_INT(wr_ordering_follow(WR_ACT_WAIT), WR_LANE_WAIT);
    CHECK_INT(wr_ordering_follow(WR_ACT_RETRY), WR_LANE_RUN);
    CHECK_INT(wr_ordering_follow(WR_ACT_OK), WR_LANE_RUN);
    CHECK_INT(wr_ordering_finished(WR_ACT_OK), 1);
    CHECK_INT(wr_ordering_finished(WR_ACT_DLQ), 1);
    CHECK_INT(wr_ordering_finished(WR_ACT_DUPLICATE), 1);
    CHECK_INT(wr_ordering_finished(WR_ACT_NONE), 0);
    CHECK_INT(wr_ordering_finished(WR_ACT_WAIT), 0);
    CHECK_INT(wr_ordering_finished(WR_ACT_RETRY), 0);
    CHECK_STR(wr_lane_move_name(WR_LANE_RUN), "run");
    CHECK_STR(wr_lane_move_name(WR_LANE_RETURN), "return");
    CHECK_STR(wr_lane_move_name(WR_LANE_WAIT), "wait");
}

int main(void)
{
    test_finished_heads_block_nothing();
    test_first_head_stays();
    test_many_keys();
    test_follow();
    return check_report("test_ordering");
}
