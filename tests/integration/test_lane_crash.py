"""Retries keep order across a kill -9 in the middle of a batch: when a
message fails and holds its ordering key while an earlier message of that key
in the same batch has run but is not committed yet, a crash before the
commit sends both back, and the earlier one must run again ahead of the
failed one, not park behind it.

One subscription with `ordering: {key: json:order_id}`, lease 3 s, retry
delay 1 s. o-1's three events are published before warren starts (one
batch, with o-2's event after them): #1 runs fine, #2 fails once (it takes
o-1's hold before its retry copy goes out), #3 is parked behind #2, o-2's
event runs slowly (3 s). warren is killed with kill -9 while it runs: nothing
of the batch is committed, the records are held by the dead process until
their leases run out, and the hold names #2. A second warren takes them over:
#1 must run before #2, #2 before #3.

Before, the hold named #2 only: #1, back after the lease, found o-1 held by
#2 and was parked behind it, and ran after it (test_partitions saw it after
its kill -9: k0055 #11 parked behind #12). Now the hold also names the
earlier messages of #2's batch that had run (after a NUL): they run again
ahead of it. Each event takes effect once; nothing is left parked or held."""
import json
import os
import time

from wrtest import (Broker, Warren, check, check_eq, delete_queues, finish, idem_record, prefix,
                    redis_client, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
r = redis_client()
out = p + ".out"
queue = p + ".lane"
SUB = "lane"
HOLD = "warren:idem:~hold:%s:o-1" % SUB
REC = "warren:idem:%s:" % SUB

write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local d = event.data
  if ctx.attempt <= (d.fail or 0) then
    error("failing attempt " .. ctx.attempt)
  end
  if d.slow then
    local t = ctx.now()
    while ctx.now() - t < d.slow do end
  end
  ctx.publish("", "%s", { order = d.order_id, seq = d.seq })
end
return M
''' % out)

sub = {"name": SUB, "queue": queue, "handler": "h.lua", "prefetch": 20, "batch_size": 10,
       "idempotency": {"key": "json:event_id", "lease": "3s"}, "breaker": {"enabled": False},
       "retry": {"max_attempts": 3, "delays": ["1s"]}, "ordering": {"key": "json:order_id"},
       "handler_timeout": "10s"}
w1 = Warren(tmp, [sub], name="w1")
w2 = Warren(tmp, [sub], name="w2")
b = Broker()


def publish(order, seq, **extra):
    eid = "%s-%d" % (order, seq)
    body = {"event_id": eid, "order_id": order, "seq": seq}
    body.update(extra)
    b.publish(queue, body, message_id=eid)


try:
    b.declare(out)
    b.declare(queue)
    publish("o-1", 1)
    publish("o-1", 2, fail=1)
    publish("o-1", 3)
    publish("o-2", 1, slow=3)
    w1.start()
    check(w1.wait_consuming(1), "warren consumes")
    # #2 failed and holds o-1: o-2's event runs now, slowly, and the batch is not committed
    check(wait_for(lambda: r.get(HOLD) is not None, 15, "o-1 held"), "#2 failed and holds o-1")
    time.sleep(0.5)
    w1.kill9()
    states = [idem_record(r, SUB, "o-1-%d" % s).get("state") for s in (1, 2, 3)]
    check_eq(states, ["processing"] * 3, "the kill caught the batch before its commit")
    # #3 was parked behind #2 in Redis before the kill (its record still ours: not acked)
    hold = (r.get(HOLD) or "").split("\0")
    check_eq(hold, [REC + "o-1-2", REC + "o-1-1"],
             "the hold names #2, then #1 (run in its batch, not committed)")
    b.drain(out)  # what the killed runs published (their records say they did not finish)
    w2.start()
    check(w2.wait_consuming(1), "a second warren consumes")
    check(wait_for(lambda: b.depth(out) >= 4, 40, "o-1's three events and o-2's ran"),
          "o-1's three events and o-2's ran (%d)" % b.depth(out))
    time.sleep(1.5)  # a run too many would show by now
    runs = [json.loads(body) for _, body in b.drain(out)]
    check_eq([x["seq"] for x in runs if x["order"] == "o-1"], [1, 2, 3],
             "after the kill, #1 ran before the failed #2, and #2 before #3")
    parks = [x.get("message_id") for x in
             w2.lines(msg="parked behind a retried message of its ordering key")]
    check("o-1-1" not in parks, "#1 was not parked behind #2: %r" % parks)
    states = [idem_record(r, SUB, "o-1-%d" % s).get("state") for s in (1, 2, 3)]
    check_eq(states, ["done"] * 3, "each event is done")
    check_eq(r.exists(HOLD), 0, "o-1 is free again")
    check_eq(r.exists("warren:idem:~park:%s:lane:o-1" % SUB), 0, "nothing left parked")
    for q in (queue, queue + ".wait", queue + ".retry.1s", queue + ".dlq"):
        check_eq(b.depth(q), 0, "%s is empty" % q)
    check_eq(w2.stop(), 0, "the second warren exits 0")
finally:
    for x in (w1, w2):
        if x.alive():
            x.stop()
    delete_queues([out, queue, queue + ".dlq", queue + ".wait", queue + ".retry.1s"])
    b.close()
finish()
