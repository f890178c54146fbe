"""A worker that dies in the middle of a handler: its message is processed by
another worker once the lease has expired, exactly once. And a worker that
outlives its lease while another takes the message over: its commit is
refused (lease lost), logged, and the message is not acked as done twice."""
import json
import os
import time

from wrtest import (Broker, Warren, check, check_eq, finish, idem_record, prefix, redis_client,
                    tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
r = redis_client()

write(os.path.join(tmp, "stuck.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.log.info("started")
  local t = os.clock()
  while os.clock() - t < (event.data.busy or 0) do end
  ctx.publish("", "%s", { input = event.id, worker = ctx.worker })
end
return M
''' % out_queue)

b = Broker()
b.declare(out_queue)
b.declare(queue)
sub = {"name": "lease", "queue": queue, "handler": "stuck.lua", "handler_timeout": "60s",
       "idempotency": {"lease": "2s"}}

# 1. The worker dies mid-handler; a new one takes over after the lease.
a = Warren(tmp, [sub], name="a").start()
check(a.wait_consuming(1), "a consuming")
b.publish(queue, {"busy": 30}, message_id="dies-1")
wait_for(lambda: a.lines(msg="started", message_id="dies-1"), 20, "the handler started in a")
claimed_at = time.time()
a.kill9()
rec = idem_record(r, "lease", "dies-1")
check_eq(rec.get("state"), "processing", "the dead worker's claim is still there")

# the new run must not redo it while the lease holds, and must after it ends
sub_fast = dict(sub, handler="fast.lua")
write(os.path.join(tmp, "fast.lua"), open(os.path.join(tmp, "stuck.lua")).read()
      .replace("event.data.busy or 0", "0"))
c = Warren(tmp, [sub_fast], name="c").start()
check(c.wait_consuming(1), "c consuming")
# the output is confirmed before the record and the log line: wait for both
wait_for(lambda: b.depth(out_queue) >= 1 and c.lines(msg="message handled", message_id="dies-1"),
         30, "the message processed after the lease")
done_at = time.time()
check(done_at - claimed_at >= 2.0, "not before the 2s lease ended (%.1fs)" % (done_at - claimed_at))
handled = c.lines(msg="message handled", message_id="dies-1")
check_eq(len(handled), 1, "handled once by the new worker")
check(handled and handled[0].get("lease_takeover") is True, "logged as a lease takeover")
check(c.lines(msg="message deferred: another worker holds its key", message_id="dies-1"),
      "deferred while the dead worker's lease held")
time.sleep(1.5)
outs = b.drain(out_queue)
check_eq(len(outs), 1, "one output")
check_eq(idem_record(r, "lease", "dies-1").get("state"), "done", "record done")
check_eq(c.stop(), 0, "c exits 0")

# 2. A live worker outlives its lease: a worker of another process takes a
#    duplicate copy over; the first worker's commit is refused and its message
#    is not acked as a second success. (Two copies in one process never run
#    at once: the second waits for the first, see test_idempotency.)
sub2 = dict(sub, concurrency=1, prefetch=1, batch_size=1)
d = Warren(tmp, [sub2], name="d").start()
e = Warren(tmp, [sub2], name="e").start()
check(d.wait_consuming(1) and e.wait_consuming(1), "d and e consuming")


def lines(**match):
    return d.lines(**match) + e.lines(**match)


b.publish(queue, {"busy": 4}, message_id="slow-1")
wait_for(lambda: lines(msg="started", message_id="slow-1"), 20, "slow-1 started")
b.publish(queue, {"busy": 0}, message_id="slow-1")  # the producer's duplicate
wait_for(lambda: lines(msg="duplicate message skipped", message_id="slow-1"), 60,
         "the late commit found the record done and skipped the redelivery")
lost = lines(msg="message returned to the queue", message_id="slow-1")
check(any("lease lost" in l.get("error", "") for l in lost), "the lost lease was logged")
handled = lines(msg="message handled", message_id="slow-1")
check_eq(len(handled), 1, "exactly one run recorded as done")
time.sleep(1.5)
outs = [json.loads(body) for _, body in b.drain(out_queue)]
check(1 <= len(outs) <= 2 and all(o["input"] == "slow-1" for o in outs),
      "outputs carry the same deterministic id (%d published)" % len(outs))
check_eq(idem_record(r, "lease", "slow-1").get("outcome"), "ok", "slow-1 recorded ok")
check_eq(d.stop(), 0, "d exits 0")
check_eq(e.stop(), 0, "e exits 0")
for q in (queue, queue + ".wait", queue + ".dlq"):
    check_eq(b.depth(q), 0, "%s empty" % q)
b.delete(queue, queue + ".dlq", queue + ".wait", out_queue,
         *["%s.retry.%s" % (queue, x) for x in ("1s", "5s", "30s", "2m")])
b.close()
finish()
