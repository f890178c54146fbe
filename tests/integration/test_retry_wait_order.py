"""Retries keep order when a later message of the key cannot be claimed: a
message that goes through the wait queue (its idempotency key held by another
process, e.g. one killed with kill -9 while it ran it) while its key is held
in Redis behind a retried message is parked there in its turn, not overtaken.

One subscription with `ordering: {key: json:order_id}`, retry delay 1 s. The
events of o-1, published before warren starts (one batch):

- o-1 #1 fails once: it goes to the delay queue and holds o-1;
- o-1 #2 finds its idempotency record held by another process (a processing
  record planted in Redis, its lease running out after HOLD_MS, longer than
  #1's retry delay): it cannot run until then;
- o-1 #3 and #4 are free.

Without the fix #2 went through the wait queue while #3 and #4 were parked
behind #1: #1's retry handed the key to #3, and #3 and #4 ran before #2
(test_partitions saw it after a kill -9: the survivor found the dead
process's claim on #9 of a key whose #8 it was retrying). Now #2 is parked
behind #1 too, before #3 and #4, and runs first once its claim is free: o-1
runs 1, 2, 3, 4. o-2 (no failure, no claim) is not held up. Every event runs
once, nothing is left parked or held, the queues are empty.

The order is read from the handler's outgoing events (one per run, published
in run order by the one worker), not from warren's logs."""
import json
import os
import time

from wrtest import (Broker, Warren, check, check_eq, delete_queues, finish, prefix, redis_client,
                    tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
r = redis_client()
out = p + ".out"
queue = p + ".lane"
SUB = "lane"
HOLD_MS = 4000  # the planted claim on o-1 #2 runs out after about this long

write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local d = event.data
  if ctx.attempt <= (d.fail or 0) then
    error("failing attempt " .. ctx.attempt)
  end
  ctx.publish("", "%s", { order = d.order_id, seq = d.seq })
end
return M
''' % out)

sub = {"name": SUB, "queue": queue, "handler": "h.lua", "prefetch": 20, "batch_size": 10,
       "idempotency": {"key": "json:event_id"}, "breaker": {"enabled": False},
       "retry": {"max_attempts": 3, "delays": ["1s"]}, "ordering": {"key": "json:order_id"}}
w = Warren(tmp, [sub])
b = Broker()


def publish(order, seq, fail=0):
    eid = "%s-%d" % (order, seq)
    b.publish(queue, {"event_id": eid, "order_id": order, "seq": seq, "fail": fail},
              message_id=eid)


try:
    b.declare(out)
    b.declare(queue)
    # another process holds o-1 #2 (server clock, as warren reads it)
    sec, usec = r.time()
    until = sec * 1000 + usec // 1000 + HOLD_MS
    r.set("warren:idem:%s:o-1-2" % SUB, "p|1|4242-0-deadbeef|%d" % until)
    publish("o-1", 1, fail=1)
    publish("o-1", 2)
    publish("o-2", 1)
    publish("o-1", 3)
    publish("o-2", 2)
    publish("o-1", 4)
    w.start()
    check(w.wait_consuming(1), "warren consumes")
    want = 6
    check(wait_for(lambda: b.depth(out) >= want, 30, "every event handled"),
          "every event ran (%d of %d)" % (b.depth(out), want))
    time.sleep(2)  # a run too many would show by now
    runs = [json.loads(body) for _, body in b.drain(out)]
    check_eq(len(runs), want, "one run per event")
    seqs = {}
    for x in runs:
        seqs.setdefault(x["order"], []).append(x["seq"])
    check_eq(seqs.get("o-1"), [1, 2, 3, 4],
             "o-1 ran in order: #2, held by another process while #1 was retried, before #3")
    check_eq(seqs.get("o-2"), [1, 2], "o-2 ran in order")
    order = [(x["order"], x["seq"]) for x in runs]
    check(order.index(("o-2", 2)) < order.index(("o-1", 1)),
          "o-2 was not held up by o-1: %r" % order)
    parks = [(x.get("message_id"), x.get("behind"))
             for x in w.lines(msg="parked behind a retried message of its ordering key")]
    check(("o-1-2", "warren:idem:%s:o-1-1" % SUB) in parks,
          "o-1 #2, its claim held elsewhere, was parked behind the retried #1: %r" % parks)
    check_eq(sum(r.llen(k) for k in r.scan_iter("warren:idem:~park:%s:lane:*" % SUB)), 0,
             "nothing left parked")
    check_eq(list(r.scan_iter("warren:idem:~hold:%s:*" % SUB)), [], "no key left held")
    for q in (queue, queue + ".wait", queue + ".retry.1s", queue + ".dlq"):
        check_eq(b.depth(q), 0, "%s is empty" % q)
    check_eq(w.stop(), 0, "warren exits 0")
finally:
    if w.alive():
        w.stop()
    delete_queues([out, queue, queue + ".dlq", queue + ".wait", queue + ".retry.1s"])
    b.close()
finish()
