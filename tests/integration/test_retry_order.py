"""Retries keep order (ordering.key): a message that goes to a delay queue
holds its key's later messages; they are parked (in Redis, not run) until it
is done or dead-lettered, then run one by one in delivery order.

Three subscriptions get the same events and handler; the handler fails an
event while its attempt is within the event's `fail` count, else publishes
one output (so the outputs are the successful runs, in run order). Retry
delay 1 s, 3 attempts.

- `lane` (ordering on): o-1's first event fails once; its events 2-4 (and a
  5th published while the first waits in the delay queue) run after it, in
  order. o-2 (no failures) is not held up. o-3's first event fails every
  attempt: it is dead-lettered, and then o-3's later events run, in order
  (on_dlq: release).
- `lane` also has a causal gate (order.cancelled after order.created): o-4's
  `order.paid` fails once (holding o-4), then its cancel and its create
  arrive, parked behind the paid. Released first, the cancel is parked again
  by its gate, and hands the key on: the create runs, then the cancel (no
  deadlock between the lane and the gate).
- `all` (on_dlq: dlq_all): o-3's later events are dead-lettered with their
  head (reason ordering-head-dead-lettered), never run.
- `free` (no ordering, the control): o-1's later events run before the first
  one's retry, so this test can tell the difference.

Every event runs at most once; nothing is left parked."""
import json
import os
import time

from wrtest import (Broker, Warren, check, check_eq, delete_queues, finish, prefix, redis_client,
                    tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
r = redis_client()
out = p + ".out"
SUBS = {"lane": p + ".lane", "all": p + ".all", "free": p + ".free"}

write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local d = event.data
  if ctx.attempt <= (d.fail or 0) then
    error("failing attempt " .. ctx.attempt)
  end
  ctx.publish("", "%s", { sub = event.headers["x-sub"], order = d.order_id, seq = d.seq })
end
return M
''' % out)

subs = []
for name, queue in SUBS.items():
    s = {"name": name, "queue": queue, "handler": "h.lua", "prefetch": 20, "batch_size": 5,
         "idempotency": {"key": "json:event_id"}, "breaker": {"enabled": False},
         "retry": {"max_attempts": 3, "delays": ["1s"]}}
    if name == "lane":
        s["ordering"] = {"key": "json:order_id"}
        s["gates"] = [{"type": "order.cancelled", "after": "order.created",
                       "key": "json:order_id"}]
    elif name == "all":
        s["ordering"] = {"key": "json:order_id", "on_dlq": "dlq_all"}
    subs.append(s)
w = Warren(tmp, subs)
b = Broker()


def publish(name, order, seq, fail=0, typ=None):
    eid = "%s-%s-%d" % (name, order, seq)
    b.publish(SUBS[name], {"event_id": eid, "order_id": order, "seq": seq, "fail": fail},
              message_id=eid, headers={"x-sub": name}, type=typ)


def parked():
    return sum(r.llen(k) for k in r.scan_iter("warren:idem:~park:*:lane:*"))


try:
    b.declare(out)
    for q in SUBS.values():
        b.declare(q)
    for name in SUBS:
        publish(name, "o-1", 1, fail=1)
        publish(name, "o-1", 2)
        publish(name, "o-2", 1)
        publish(name, "o-1", 3)
        publish(name, "o-2", 2)
        publish(name, "o-3", 1, fail=9)
        publish(name, "o-1", 4)
        publish(name, "o-3", 2)
        publish(name, "o-3", 3)
    publish("lane", "o-4", 1, fail=1, typ="order.paid")
    publish("lane", "o-4", 2, typ="order.cancelled")
    publish("lane", "o-4", 3, typ="order.created")
    w.start()
    check(w.wait_consuming(3), "warren consumes the three queues")
    time.sleep(0.5)  # o-1's first event is in the delay queue now
    for name in SUBS:
        publish(name, "o-1", 5)
    # lane: 5 + 2 + 2 (o-3's first dead-lettered) + 3 (o-4); all: 5 + 2; free: 5 + 2 + 2
    want = 12 + 7 + 9
    check(wait_for(lambda: b.depth(out) >= want, 40, "every run"), "every event that can run ran")
    time.sleep(2)  # a run too many would show by now
    runs = [json.loads(body) for _, body in b.drain(out)]
    check_eq(len(runs), want, "one run per event")
    seqs = {}
    for x in runs:
        seqs.setdefault((x["sub"], x["order"]), []).append(x["seq"])
    check_eq(seqs.get(("lane", "o-1")), [1, 2, 3, 4, 5],
             "lane: o-1's events ran in order, behind the retry of the first")
    check_eq(seqs.get(("lane", "o-2")), [1, 2], "lane: o-2 ran")
    lane = [(x["order"], x["seq"]) for x in runs if x["sub"] == "lane"]
    check(lane.index(("o-2", 2)) < lane.index(("o-1", 1)),
          "lane: o-2 was not held up by o-1's retry: %r" % lane)
    check_eq(seqs.get(("lane", "o-3")), [2, 3],
             "lane: o-3's head dead-lettered, then its later events ran in order (on_dlq release)")
    check_eq(seqs.get(("lane", "o-4")), [1, 3, 2],
             "lane + gate: o-4's paid, then its create, then its cancel (gated behind it)")
    check_eq(seqs.get(("all", "o-1")), [1, 2, 3, 4, 5], "dlq_all: o-1 in order too")
    check_eq(seqs.get(("all", "o-3")), None, "dlq_all: none of o-3's events ran")
    free = seqs.get(("free", "o-1"), [])
    check(sorted(free) == [1, 2, 3, 4, 5] and free[0] != 1,
          "free (the control): o-1's later events ran before its first one's retry: %r" % free)

    dl = {name: b.drain(q + ".dlq") for name, q in SUBS.items()}
    check_eq(sorted(json.loads(body)["seq"] for _, body in dl["lane"]), [1],
             "lane: only o-3's head is in the DLQ")
    got = sorted((json.loads(body)["seq"], (props.headers or {}).get("x-warren-reason"))
                 for props, body in dl["all"])
    check_eq([s for s, _ in got], [1, 2, 3], "dlq_all: o-3's head and both followers in the DLQ")
    reasons = dict(got)
    check_eq(reasons.get(2), "ordering-head-dead-lettered", "a follower's reason")
    check_eq(reasons.get(3), "ordering-head-dead-lettered", "the other follower's reason")
    parks = w.lines(msg="parked behind a retried message of its ordering key")
    check(len(parks) >= 5, "followers were parked behind the retried heads (%d)" % len(parks))
    check_eq(w.lines(msg="parked behind a retried message of its ordering key",
                     subscription="free"), [], "the control parks nothing")
    check_eq(parked(), 0, "nothing left parked")
    check_eq(len(list(r.scan_iter("warren:idem:~hold:*"))), 0, "no key left held")
    for name, q in SUBS.items():
        check_eq(b.depth(q), 0, "%s: queue empty" % name)
    check_eq(w.stop(), 0, "warren exits 0")
finally:
    if w.alive():
        w.stop()
    qs = [out]
    for q in SUBS.values():
        qs += [q, q + ".dlq", q + ".wait", q + ".retry.1s"]
    delete_queues(qs)
    b.close()
finish()
