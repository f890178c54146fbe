"""Per-key lanes (ordering.key): an order's events run in the order they were
delivered, even when the first one cannot run yet.

Two subscriptions get the same events and the same handler; only one has
`ordering: {key: json:order_id}`. The first event of order o-1 finds its
idempotency key held by another process (a processing record with a live
lease, planted in Redis), so it goes through the wait queue until that lease
runs out. The later events of o-1 arrive in the same batch, and more in later
batches while the first is still waiting.

- With ordering, every event of o-1 runs after the first one, in delivery
  order; o-2's events (another key) are not held up by o-1's wait; each event
  runs once; followers are counted in warren_ordering_followed_total and
  logged with the message they were behind.
- Without ordering (the control), o-1's later events run before its first:
  the pitfall the lanes exist for, so this test can tell them apart.

The order is read from the handlers' outgoing events in the output queue (one
per run, published in run order by the one worker), not from warren's logs."""
import json
import os
import time

from wrtest import (Broker, Warren, check, check_eq, delete_queues, finish, prefix, redis_client,
                    tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
r = redis_client()
out = p + ".out"
SUBS = {"lane": p + ".lane", "free": p + ".free"}
HOLD_MS = 2500  # the planted lease: o-1's first event waits about this long

write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.publish("", "%s", { sub = event.headers["x-sub"], order = event.data.order_id,
                          seq = event.data.seq })
end
return M
''' % out)

subs = []
for name, queue in SUBS.items():
    s = {"name": name, "queue": queue, "handler": "h.lua", "prefetch": 20, "batch_size": 5,
         "idempotency": {"key": "json:event_id"}, "breaker": {"enabled": False}}
    if name == "lane":
        s["ordering"] = {"key": "json:order_id"}
    subs.append(s)
w = Warren(tmp, subs)
b = Broker()


def publish_all(name, queue, seqs):
    for order, seq in seqs:
        b.publish(queue, {"event_id": "%s-%s-%d" % (name, order, seq), "order_id": order,
                          "seq": seq}, message_id="%s-%s-%d" % (name, order, seq),
                  headers={"x-sub": name})


try:
    b.declare(out)
    for name, queue in SUBS.items():
        b.declare(queue)
        # another process holds o-1's first event for HOLD_MS (server clock, as warren reads it)
        sec, usec = r.time()
        until = sec * 1000 + usec // 1000 + HOLD_MS
        r.set("warren:idem:%s:%s-o-1-1" % (name, name), "p|1|someone-else|%d" % until)
    # o-1 1..3 and o-2 1..3 in the first batch (batch_size 5: o-2-3 starts the next)
    first = [("o-1", 1), ("o-1", 2), ("o-2", 1), ("o-1", 3), ("o-2", 2), ("o-2", 3)]
    for name, queue in SUBS.items():
        publish_all(name, queue, first)
    w.start()
    check(w.wait_consuming(2), "warren consumes both queues")
    # more of o-1 while its first event is still waiting
    time.sleep(0.8)
    for name, queue in SUBS.items():
        publish_all(name, queue, [("o-1", 4), ("o-1", 5)])
    want = 2 * 8
    check(wait_for(lambda: b.depth(out) >= want, 30, "every event handled"),
          "every event of both subscriptions ran")
    time.sleep(1.5)  # anything run twice would show up by now
    runs = [json.loads(body) for _, body in b.drain(out)]
    check_eq(len(runs), want, "one run per event")
    seqs = {}
    for run in runs:
        seqs.setdefault((run["sub"], run["order"]), []).append(run["seq"])

    check_eq(seqs.get(("lane", "o-1")), [1, 2, 3, 4, 5],
             "with ordering, o-1's events ran in delivery order behind its waiting first one")
    check_eq(seqs.get(("lane", "o-2")), [1, 2, 3], "with ordering, o-2 ran in order")
    lane_runs = [(x["order"], x["seq"]) for x in runs if x["sub"] == "lane"]
    check(lane_runs.index(("o-2", 3)) < lane_runs.index(("o-1", 1)),
          "o-2 was not held up by o-1's wait (another key, another lane): %r" % lane_runs)
    free = seqs.get(("free", "o-1"), [])
    check(sorted(free) == [1, 2, 3, 4, 5] and free[0] != 1,
          "without ordering (the control), o-1's later events ran before its first: %r" % free)

    behind = w.lines(msg="behind an unfinished message of its ordering key: not run",
                     subscription="lane")
    check(len(behind) >= 4, "each of o-1's later events followed the first at least once "
          "(%d follow lines)" % len(behind))
    check(all(x.get("ordering_key") == "o-1" and x.get("behind") == "lane-o-1-1"
              and x.get("move") == "wait" for x in behind),
          "the follow lines name the key, the message waited behind and the move")
    check_eq(w.lines(msg="behind an unfinished message of its ordering key: not run",
                     subscription="free"), [], "the control subscription has no lanes")
    samples = w.metrics()
    check_eq(w.metric(samples, "warren_ordering_followed_total", subscription="lane"),
             len(behind), "warren_ordering_followed_total counts the follows")
    check_eq(w.metric(samples, "warren_ordering_followed_total", subscription="free"), 0,
             "and none for the control")
    for name, queue in SUBS.items():
        check_eq(b.depth(queue), 0, "%s: its queue is empty" % name)
        check_eq(b.depth(queue + ".wait"), 0, "%s: its wait queue is empty" % name)
    check_eq(w.stop(), 0, "warren exits 0")
finally:
    if w.alive():
        w.stop()
    delete_queues([out] + [q for q in SUBS.values()])
    b.close()
finish()
