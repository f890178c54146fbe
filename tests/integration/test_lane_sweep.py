"""Retries keep order with `ordering` and no causal gate: when the worker that
finished a key's retried message dies between its commit and handing the key
over, the sweep hands it over (the parked messages behind it are not left
parked for ever).

One subscription with `ordering: {key: json:order_id}` and no gates, retry
delay 30 s. o-1 #1 fails once: it goes to the delay queue and holds o-1; #2
is parked behind it in Redis. warren stops; then what a kill -9 right after
#1's retry committed leaves is set up by hand: #1's idempotency record says
done and its retry copy is gone from the delay queue, the hold still names
#1 and #2 is still parked. A new warren starts: only its sweep (worker 0,
once a second, a parked list looked at within 5 s) can hand o-1 over to #2.
Before, the sweep ran only for subscriptions with gates, and #2 stayed parked
(test_partitions with many retries saw keys stuck so after its kill -9).
#2 runs once; the hold and the parked list are gone."""
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
HOLD = "warren:idem:~hold:%s:o-1" % SUB
LANE = "warren:idem:~park:%s:lane:o-1" % SUB

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
       "retry": {"max_attempts": 3, "delays": ["30s"]}, "ordering": {"key": "json:order_id"}}
w1 = Warren(tmp, [sub], name="w1")
w2 = Warren(tmp, [sub], name="w2")
b = Broker()


def publish(order, seq, fail=0):
    eid = "%s-%d" % (order, seq)
    b.publish(queue, {"event_id": eid, "order_id": order, "seq": seq, "fail": fail},
              message_id=eid)


try:
    b.declare(out)
    b.declare(queue)
    publish("o-1", 1, fail=1)
    publish("o-1", 2)
    w1.start()
    check(w1.wait_consuming(1), "warren consumes")
    check(wait_for(lambda: w1.lines(msg="parked behind a retried message of its ordering key",
                                    message_id="o-1-2"), 15, "o-1 #2 parked"),
          "o-1 #2 is parked behind the retried #1")
    check_eq(w1.stop(), 0, "warren exits 0")
    check_eq(r.get(HOLD), "warren:idem:%s:o-1-1" % SUB, "#1 holds o-1")
    check_eq(r.llen(LANE), 1, "#2 is parked")
    # what a kill -9 between #1's commit (after its retry ran) and the hand-over leaves
    sec, usec = r.time()
    r.set("warren:idem:%s:o-1-1" % SUB, "d|2|ok|%d|" % (sec * 1000 + usec // 1000))
    b.ch.queue_purge(queue + ".retry.30s")
    t0 = time.time()
    w2.start()
    check(w2.wait_consuming(1), "a new warren consumes")
    check(wait_for(lambda: b.depth(out) >= 1, 20, "o-1 #2 ran"),
          "the sweep handed o-1 over to #2, which ran (%.1f s after the start)"
          % (time.time() - t0))
    time.sleep(1.5)  # a second run would show by now
    runs = [json.loads(body) for _, body in b.drain(out)]
    check_eq([(x["order"], x["seq"]) for x in runs], [("o-1", 2)], "#2 ran once, #1 not again")
    check(len(w2.lines(msg="parked messages released")) >= 1, "the release is logged")
    check(wait_for(lambda: r.get(HOLD) is None, 10, "the hold dropped"),
          "o-1 is free again (hold: %r)" % r.get(HOLD))
    check_eq(r.exists(LANE), 0, "nothing left parked")
    for q in (queue, queue + ".wait", queue + ".dlq"):
        check_eq(b.depth(q), 0, "%s is empty" % q)
    check_eq(w2.stop(), 0, "the new warren exits 0")
finally:
    for x in (w1, w2):
        if x.alive():
            x.stop()
    delete_queues([out, queue, queue + ".dlq", queue + ".wait", queue + ".retry.30s"])
    b.close()
finish()
