/*
 * ordering: per-key lanes inside a worker, as pure logic (no I/O).
 *
 * With `ordering: {key: ...}` on a subscription, the messages that share an
 * ordering key form a lane: a worker runs them one after the other in
 * delivery order (it runs a batch's handlers in order anyway), and a message
 * runs only when every earlier message of its lane that this worker saw has
 * finished: handled (ok), dead-lettered, found to be a duplicate, or parked
 * behind a causal gate (gates.h: it waits for a later message). When an
 * earlier one did not finish (it went back to the queue unstarted, or to the
 * wait queue because another process holds its idempotency key), the later
 * ones follow it there instead of running ahead of it:
 *
 *   head ended            later messages of its key (in this batch and the next)
 *   ok, dlq, duplicate -> run
 *   none (returned)    -> none: back to the queue, behind it (a requeue keeps
 *                         the queue's order)
 *   wait               -> wait: through the wait queue, behind it
 *   retry              -> run (parking behind a retried head is not done yet:
 *                         see the README's Ordering section)
 *
 * A wr_lanes is the set of blocked keys of one worker, each with the head
 * that blocks it (the first message of the key that did not finish). A
 * follower that goes back to the queue or through the wait queue goes there
 * after its head, so the head comes back to the worker first: when the worker
 * takes the head again (wr_lanes_release), the lane opens and the head runs.
 * A lane also opens when its hold time is over (the head came back to another
 * worker, or never did), so a lane never stays shut for good. Times are
 * passed in (milliseconds of a monotonic clock): the module reads no clock.
 */
#ifndef WR_ORDERING_H
#define WR_ORDERING_H

#include <stddef.h>

#include "decide.h"

typedef struct wr_lanes wr_lanes;

/* A blocked lane: its key and the head that blocks it. */
typedef struct {
    const char *key;     /* the ordering key */
    wr_action head_act;  /* what became of the head (NONE, WAIT or RETRY) */
    const char *head_id; /* the head's message id ("" when it had none) */
    double until_ms;     /* the lane opens by itself then */
} wr_lane;

wr_lanes *wr_lanes_create(void); /* NULL: out of memory */
void wr_lanes_destroy(wr_lanes *l);

/* Forget every lane (the worker's deliveries went back to the queue). */
void wr_lanes_clear(wr_lanes *l);

/*
 * Note that the message HEAD_ID of lane KEY ended with ACT at NOW_MS. A
 * finished action (wr_ordering_finished) changes nothing; otherwise KEY is
 * blocked behind it until NOW_MS + HOLD_MS, unless it is blocked already (the
 * first head stays: the later ones follow it; the head itself, noted again
 * on its next round, holds the lane until NOW_MS + HOLD_MS). Returns 1 when KEY is now
 * blocked by this call, 0 when nothing changed, -1 when out of memory (then
 * KEY is not blocked).
 */
int wr_lanes_note(wr_lanes *l, const char *key, wr_action act, const char *head_id, double now_ms,
                  double hold_ms);

/* The lane blocking KEY at NOW_MS, or NULL when KEY may run (a lane past its
 * hold time is forgotten here). Valid until the next call that changes L. */
const wr_lane *wr_lanes_find(wr_lanes *l, const char *key, double now_ms);

/* The message ID of lane KEY is taken again: when it is the lane's head, the
 * lane opens (returns 1); otherwise nothing changes (returns 0). */
int wr_lanes_release(wr_lanes *l, const char *key, const char *id);

/* How many lanes are blocked. */
size_t wr_lanes_count(const wr_lanes *l);

/* 1 when ACT lets the next message of its key run (OK, DLQ, DUPLICATE). */
int wr_ordering_finished(wr_action act);

/* What a message does whose lane is blocked. */
typedef enum {
    WR_LANE_RUN = 0, /* run it (its lane is free, or its head is retried: not parked yet) */
    WR_LANE_RETURN,  /* back to the queue unstarted, behind its head */
    WR_LANE_WAIT,    /* through the wait queue, behind its head */
} wr_lane_move;

/* "run", "return", "wait". */
const char *wr_lane_move_name(wr_lane_move m);

/* The move of a message whose lane's head ended with HEAD_ACT. */
wr_lane_move wr_ordering_follow(wr_action head_act);

#endif
