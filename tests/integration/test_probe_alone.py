"""A retry alone in its half-open batch does not take the probe from fresh messages.

As test_probe_fresh, but the subscription takes one message per batch
(prefetch 1, batch_size 1): when the breaker turns half-open the broker can
only hand over the retry at the head of the queue, alone, while the good
events wait behind it. The retry must not probe (it fails again and keeps the
good events waiting another open_for): early in the half-open it goes to the
wait queue, which returns it to the queue's tail without counting an
attempt, and the probe goes to the good event behind it. Measured: the first
half-open is followed by "breaker closed" with no "breaker opened" between,
every good event is handled, and the retries ran later with their attempt
counts kept.
"""
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (Broker, Warren, check, check_eq, delete_queues, finish, prefix,  # noqa: E402
                    tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
queue = p + ".in"
write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  if event.data.bad then error("bad event " .. event.id) end
end
return M
''')
sub = {"name": "pa", "queue": queue, "handler": "h.lua", "prefetch": 1, "batch_size": 1,
       "retry": {"max_attempts": 6, "delays": ["300ms"]},
       "breaker": {"window": 2, "min_calls": 2, "failure_ratio": 1, "open_for": "5s",
                   "half_open_probes": 1, "counts": "all"}}
w = Warren(tmp, [sub])
b = Broker()
try:
    w.start()
    check(w.wait_consuming(1), "warren consumes")
    for k in range(2):
        b.publish(queue, {"bad": True}, message_id="%s-bad-%d" % (p, k))
    check(wait_for(lambda: w.lines(msg="breaker opened"), 10, "the breaker to open"),
          "two failures open the breaker")
    check(wait_for(lambda: b.depth(queue) >= 2, 10, "the retries back in the queue"),
          "the two retries wait at the head of the queue")
    good = ["%s-good-%d" % (p, k) for k in range(3)]
    for g in good:
        b.publish(queue, {"n": 1}, message_id=g)
    check_eq(w.lines(msg="breaker half-open"), [], "the good events queued while it was open")
    check(wait_for(lambda: w.lines(msg="breaker half-open"), 10, "half-open"), "half-open")
    check(wait_for(lambda: all(w.lines(msg="message handled", message_id=g) for g in good), 15,
                   "the good events"), "every good event handled")
    changes = [ln["msg"] for ln in w.lines() if ln.get("msg", "").startswith("breaker ")]
    print("  breaker changes: %r" % changes, flush=True)
    first = changes.index("breaker half-open") if "breaker half-open" in changes else -1
    check_eq(changes[first:first + 2], ["breaker half-open", "breaker closed"],
             "the first probe was a good event: half-open, then closed")
    check(w.lines(msg="half-open: a retry goes behind the fresh messages"),
          "the retry's turn given up is logged")
    deferred = [ln for ln in w.lines() if ln.get("msg", "").startswith("message deferred")
                and ln.get("message_id", "").startswith(p + "-bad-")]
    check(deferred and all(ln["msg"] == "message deferred: a half-open breaker probes fresh "
                                        "messages first" for ln in deferred),
          "its outcome line says why it was deferred (not a busy key): %r"
          % sorted(set(ln["msg"] for ln in deferred)))
    check(wait_for(lambda: len([ln for ln in w.lines(msg="message scheduled for retry")
                                if ln.get("message_id", "").startswith(p + "-bad-")]) >= 4,
                   20, "the retries to run again"), "the retries ran again after the close")
    retried = [ln for ln in w.lines(msg="message scheduled for retry")
               if ln.get("message_id", "").startswith(p + "-bad-")]
    check(all(ln.get("attempt") in (1, 2, 3, 4, 5) for ln in retried),
          "the deferred retries kept their attempt counts: %r"
          % [(ln["message_id"], ln.get("attempt")) for ln in retried])
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    if w.alive():
        w.stop()
    b.close()
    delete_queues([queue, queue + ".wait", queue + ".dlq", queue + ".retry.300ms"])
finish()
