"""Broker alarm: RabbitMQ blocks publishers (connection.blocked) while events flow.

Every batch publishes (the handler emits one event per input), so a worker
that took a batch while the broker blocks publishing would sit on it. warren
must notice the alarm (it advertises connection.blocked), log it, take no new
batch while it lasts, answer 503 on /readyz naming the alarm, and carry on
by itself when the alarm clears. At the end every input has produced exactly
one output and has one done record, nothing is left in the queues, and warren
exits 0.

The memory alarm is raised with a watermark of 0 (stack.sh alarm-on) and
cleared in a `finally`, whatever happened: the broker is shared by the run."""
import os
import time
import traceback

from wrtest import (Broker, Warren, check, check_eq, delete_queues, done_count, finish, prefix,
                    redis_client, stack, tempdir, wait_for, write)

N = 3000
p = prefix()
tmp = tempdir()
queue, out = p + ".in", p + ".out"
sub_name = "blk"
r = redis_client()

write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local t = ctx.now()
  while ctx.now() - t < 0.002 do end
  ctx.publish("", "%s", { input = event.id })
end
return M
''' % out)

w = Warren(tmp, [{"name": sub_name, "queue": queue, "handler": "h.lua", "batch_size": 20,
                  "prefetch": 40, "breaker": {"enabled": False}}])
b = Broker()
alarm = False
try:
    b.declare(out)
    b.declare(queue)
    for i in range(N):
        b.publish(queue, {"i": i}, message_id="blk-%05d" % i)
    w.start()
    check(w.wait_consuming(1), "warren consumes")
    check(wait_for(lambda: b.depth(out) >= 300, 60, "some outputs"), "processing is under way")

    check_eq(stack("alarm-on"), 0, "memory alarm raised")
    alarm = True
    check(wait_for(lambda: w.lines(msg="broker blocked publishing"), 15, "the blocked notice"),
          "warren logs that the broker blocks publishing")
    check(wait_for(lambda: w.get("/readyz")[0] == 503, 5, "/readyz 503"),
          "/readyz is 503 while publishing is blocked")
    status, body = w.get("/readyz")
    check("publishing blocked" in body, "/readyz names the alarm: %r" % body)
    # what was in flight settles; then nothing moves while the alarm lasts
    time.sleep(2)
    d0 = b.depth(queue)
    time.sleep(4)
    d1 = b.depth(queue)
    check_eq(d1, d0, "no batch is taken while blocked (queue depth unchanged over 4 s)")
    check(d1 > 0, "messages are still waiting (the test blocked mid-stream): %d" % d1)
    samples = w.metrics()
    check_eq(w.metric(samples, "warren_workers_blocked", subscription=sub_name), 1,
             "warren_workers_blocked is 1")

    check_eq(stack("alarm-off"), 0, "memory alarm cleared")
    alarm = False
    check(wait_for(lambda: w.lines(msg="broker unblocked publishing"), 15, "the unblocked notice"),
          "warren logs that publishing is unblocked")
    check(wait_for(lambda: b.depth(out) >= N, 120, "all outputs"), "every input produced output")
    check(wait_for(lambda: w.get("/readyz")[0] == 200, 10, "/readyz 200"), "ready again")

    outs = b.drain(out)
    inputs = [__import__("json").loads(body)["input"] for _, body in outs]
    check_eq(len(inputs), N, "exactly N outputs")
    check_eq(len(set(inputs)), N, "one output per input")
    check_eq(done_count(r, sub_name), N, "one done record per input")
    check_eq(b.depth(queue), 0, "the input queue is empty")
    check_eq(b.depth(queue + ".dlq"), 0, "nothing dead-lettered")
    check_eq(len(w.lines(msg="broker connection lost")), 0, "the connection was never lost")
    check_eq(w.stop(), 0, "warren exits 0 on SIGTERM")
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    if alarm:
        stack("alarm-off")
    if w.alive():
        w.stop()
    b.close()
    delete_queues((queue, out, queue + ".wait", queue + ".dlq"))
finish()
