/*
 * test_ordering.c: unit tests for ordering (per-key lanes inside a worker).
 *
 * A finished head (ok, dead-lettered, duplicate) never blocks its key; an
 * unfinished one (returned, waiting, retried) blocks it behind the first such
 * head, whatever comes later; keys are told apart exactly (no prefix match,
 * no collision through the hash); a cleared set blocks nothing; a lane opens
 * when its head is taken again (not another message of the key) or when its
 * hold time is over, and the others stay findable after removals; and the move
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
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_OK, "m1", 0, 1000), 0);
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_DLQ, "m2", 0, 1000), 0);
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_DUPLICATE, "m3", 0, 1000), 0);
    CHECK(wr_lanes_find(l, "o-1", 0) == NULL);
    CHECK_INT(wr_lanes_count(l), 0);
    /* no key: no lane */
    CHECK_INT(wr_lanes_note(l, "", WR_ACT_NONE, "m4", 0, 1000), 0);
    CHECK_INT(wr_lanes_note(l, NULL, WR_ACT_NONE, "m4", 0, 1000), 0);
    CHECK(wr_lanes_find(l, "", 0) == NULL);
    wr_lanes_destroy(l);
}

static void test_first_head_stays(void)
{
    wr_lanes *l = wr_lanes_create();
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_WAIT, "m1", 0, 1000), 1);
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_NONE, "m2", 0, 1000), 0);
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_OK, "m3", 0, 1000), 0);
    const wr_lane *x = wr_lanes_find(l, "o-1", 0);
    CHECK(x != NULL);
    if (x != NULL) {
        CHECK_STR(x->key, "o-1");
        CHECK_STR(x->head_id, "m1");
        CHECK_INT(x->head_act, WR_ACT_WAIT);
    }
    /* exact keys only */
    CHECK(wr_lanes_find(l, "o-", 0) == NULL);
    CHECK(wr_lanes_find(l, "o-10", 0) == NULL);
    CHECK_INT(wr_lanes_note(l, "o-2", WR_ACT_RETRY, NULL, 0, 1000), 1);
    x = wr_lanes_find(l, "o-2", 0);
    CHECK(x != NULL && x->head_act == WR_ACT_RETRY && x->head_id[0] == '\0');
    CHECK_INT(wr_lanes_count(l), 2);
    wr_lanes_clear(l);
    CHECK_INT(wr_lanes_count(l), 0);
    CHECK(wr_lanes_find(l, "o-1", 0) == NULL);
    CHECK(wr_lanes_find(l, "o-2", 0) == NULL);
    /* usable again after a clear */
    CHECK_INT(wr_lanes_note(l, "o-2", WR_ACT_NONE, "m9", 0, 1000), 1);
    CHECK(wr_lanes_find(l, "o-2", 0) != NULL);
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
        added += wr_lanes_note(l, key, i % 2 ? WR_ACT_NONE : WR_ACT_WAIT, id, 0, 1000);
    }
    CHECK_INT(added, 5000);
    CHECK_INT(wr_lanes_count(l), 5000);
    int found = 0, right = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "order-%d", i);
        snprintf(id, sizeof(id), "m%d", i);
        const wr_lane *x = wr_lanes_find(l, key, 0);
        found += x != NULL;
        right += x != NULL && strcmp(x->head_id, id) == 0 &&
                 x->head_act == (i % 2 ? WR_ACT_NONE : WR_ACT_WAIT);
    }
    CHECK_INT(found, 5000);
    CHECK_INT(right, 5000);
    CHECK(wr_lanes_find(l, "order-5000", 0) == NULL);
    wr_lanes_destroy(l);
}

static void test_release_and_hold(void)
{
    wr_lanes *l = wr_lanes_create();
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_NONE, "m1", 100, 50), 1);
    const wr_lane *x = wr_lanes_find(l, "o-1", 149);
    CHECK(x != NULL && x->until_ms == 150);
    CHECK(wr_lanes_find(l, "o-1", 150) == NULL); /* hold time over: forgotten */
    CHECK_INT(wr_lanes_count(l), 0);
    /* a new head after that */
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_WAIT, "m2", 200, 50), 1);
    /* the head round again (still waiting) holds the lane longer; a follower does not */
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_WAIT, "m3", 240, 50), 0);
    CHECK(wr_lanes_find(l, "o-1", 240)->until_ms == 250);
    CHECK_INT(wr_lanes_note(l, "o-1", WR_ACT_WAIT, "m2", 240, 50), 0);
    CHECK(wr_lanes_find(l, "o-1", 260) != NULL);
    CHECK_INT(wr_lanes_release(l, "o-1", "m3"), 0); /* a follower: stays shut */
    CHECK_INT(wr_lanes_release(l, "o-2", "m2"), 0);
    CHECK(wr_lanes_find(l, "o-1", 210) != NULL);
    CHECK_INT(wr_lanes_release(l, "o-1", "m2"), 1); /* its head is back */
    CHECK(wr_lanes_find(l, "o-1", 210) == NULL);
    CHECK_INT(wr_lanes_release(l, "o-1", "m2"), 0);
    wr_lanes_destroy(l);
}

/* Removing keys one by one from a crowded table keeps every other one. */
static void test_removals(void)
{
    wr_lanes *l = wr_lanes_create();
    char key[32], id[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(id, sizeof(id), "m%d", i);
        wr_lanes_note(l, key, WR_ACT_NONE, id, 0, 1000);
    }
    int released = 0;
    for (int i = 0; i < 3000; i += 3) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(id, sizeof(id), "m%d", i);
        released += wr_lanes_release(l, key, id);
    }
    CHECK_INT(released, 1000);
    CHECK_INT(wr_lanes_count(l), 2000);
    int right = 0;
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        right += (wr_lanes_find(l, key, 0) != NULL) == (i % 3 != 0);
    }
    CHECK_INT(right, 3000);
    /* all past their hold time: each find forgets its lane, the rest stay found */
    int gone = 0;
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        gone += wr_lanes_find(l, key, 1000) == NULL;
    }
    CHECK_INT(gone, 3000);
    CHECK_INT(wr_lanes_count(l), 0);
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
    test_release_and_hold();
    test_removals();
    test_follow();
    return check_report("test_ordering");
}
