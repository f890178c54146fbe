"""Half-open probes go to fresh messages before retries.

A subscription's handler fails for two "bad" events (breaker.counts: all, so
their errors count) until its breaker opens. Their retry copies come back to
the queue while it is open, and good events are published behind them. When
the breaker turns half-open, the batch it takes holds the retries first: the
probe slot must go to a good event (which succeeds and closes the breaker),
not to a bad retry (which would fail and keep the good events waiting another
open_for). Measured: the first half-open is followed by "breaker closed" with
no "breaker opened" between them, and every good event is handled within a
few seconds of the breaker turning half-open. The retries ran after, each
still with its attempt count (nothing was spent while they were held back).
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
sub = {"name": "pf", "queue": queue, "handler": "h.lua", "prefetch": 20, "batch_size": 20,
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
    # the retries come back (300 ms) and wait at the head of the paused queue
    check(wait_for(lambda: b.depth(queue) >= 2, 10, "the retries back in the queue"),
          "the two retries wait in the queue")
    good = ["%s-good-%d" % (p, k) for k in range(5)]
    for g in good:
        b.publish(queue, {"n": 1}, message_id=g)
    # open_for leaves room for the setup on a loaded machine; a half-open before
    # the good events were queued would test nothing
    check_eq(w.lines(msg="breaker half-open"), [], "the good events queued while it was open")
    check(wait_for(lambda: w.lines(msg="breaker half-open"), 10, "half-open"), "half-open")
    check(wait_for(lambda: all(w.lines(msg="message handled", message_id=g) for g in good), 10,
                   "the good events"), "every good event handled after the first half-open")
    changes = [ln["msg"] for ln in w.lines() if ln.get("msg", "").startswith("breaker ")]
    first = changes.index("breaker half-open") if "breaker half-open" in changes else -1
    check_eq(changes[first:first + 2], ["breaker half-open", "breaker closed"],
             "the first probe was a good event: half-open, then closed")
    retried = [ln for ln in w.lines(msg="message scheduled for retry")
               if ln.get("message_id", "").startswith(p + "-bad-")]
    check(all(ln.get("attempt") in (1, 2, 3, 4, 5) for ln in retried),
          "the held-back retries kept their attempt counts")
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    if w.alive():
        w.stop()
    b.close()
    delete_queues([queue, queue + ".wait", queue + ".dlq", queue + ".retry.300ms"])
finish()
