"""Graceful drain on SIGTERM: in-flight handlers finish, everything not
started goes back to the queue, nothing is lost or handled twice, exit 0.
And past the grace period: the running handler is interrupted and its
message returned to the queue, not dead-lettered."""
import json
import os
import signal
import time

from wrtest import Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write

N = 60
p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"

write(os.path.join(tmp, "slow.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.log.info("started")
  local t = os.clock()
  while os.clock() - t < (event.data.busy or 0.05) do end
  ctx.publish("", "%s", { input = event.id })
end
return M
''' % out_queue)

b = Broker()
b.declare(out_queue)
b.declare(queue)
for i in range(N):
    b.publish(queue, {"n": i}, message_id="s-%03d" % i)

w = Warren(tmp, [{"name": "slow", "queue": queue, "handler": "slow.lua", "prefetch": 20,
                  "batch_size": 10}]).start()
check(w.wait_consuming(1), "consuming")
wait_for(lambda: b.depth(out_queue) >= 5, 30, "a few messages handled")
t0 = time.monotonic()
rc = w.stop(signal.SIGTERM)
took = time.monotonic() - t0
check_eq(rc, 0, "exit 0 after SIGTERM")
print("  drain took %.2fs" % took)

outs = [json.loads(body)["input"] for _, body in b.drain(out_queue)]
left = b.depth(queue)
check_eq(len(outs), len(set(outs)), "no message handled twice")
check_eq(len(outs) + left, N, "handled + returned = sent (nothing lost): %d + %d" % (len(outs), left))
check(left > 0, "the drain returned unstarted messages instead of handling everything (%d)" % left)
check_eq(b.depth(queue + ".dlq"), 0, "nothing dead-lettered by the shutdown")
check(w.lines(msg="warren stopped"), "clean stop logged")

# A restart handles the rest, once.
w2 = Warren(tmp, [{"name": "slow", "queue": queue, "handler": "slow.lua", "prefetch": 20,
                   "batch_size": 10}], name="second").start()
wait_for(lambda: b.depth(out_queue) >= left, 60, "the rest handled after restart")
check_eq(w2.stop(), 0, "second run exits 0")
outs2 = [json.loads(body)["input"] for _, body in b.drain(out_queue)]
check_eq(sorted(outs + outs2), ["s-%03d" % i for i in range(N)], "every message handled exactly once")

# Grace period over: a handler that would run 20 s is interrupted after the 1 s grace,
# and its message goes back to the queue, not to the DLQ.
q2 = p + ".stuck"
b.declare(q2)
b.publish(q2, {"busy": 20}, message_id="stuck-1")
w3 = Warren(tmp, [{"name": "stuck", "queue": q2, "handler": "slow.lua", "handler_timeout": "60s"}],
            extra="shutdown:\n  grace: 1s\n", name="stuck").start()
check(w3.wait_consuming(1), "stuck worker consuming")
# the handler's own log line: it is running when the signal comes
check(wait_for(lambda: w3.lines(msg="started", message_id="stuck-1"), 20, "the handler started"),
      "the 20 s handler started before SIGTERM")
time.sleep(0.5)
t0 = time.monotonic()
rc = w3.stop(signal.SIGTERM, timeout=30)
took = time.monotonic() - t0
check_eq(rc, 0, "exit 0 when the grace period runs out")
check(took < 15, "exit soon after the grace period (took %.1fs, grace 1s)" % took)
check_eq(b.depth(q2), 1, "the interrupted message is back in its queue")
check_eq(b.depth(q2 + ".dlq"), 0, "and not dead-lettered")
check(w3.lines(msg="grace period over: interrupting handlers and returning their messages to the broker"),
      "the interruption is logged")
b.delete(queue, queue + ".dlq", out_queue, q2, q2 + ".dlq")
b.close()
finish()
