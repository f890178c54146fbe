"""Leases, and what a run that loses its claim may leave behind. The handler
counts its committed runs of each message in ctx.store (Redis), and notes
which copy's run committed; the test reads both from Redis and holds the
handler at a gate (an HTTP service of its own) to place each step exactly.

1. A worker that dies in the middle of a handler: its message is processed
   by another worker once the lease has expired, exactly once (the counter
   is 1).
2. A live worker that outlives its lease while a worker of another process
   takes a copy of the message over: the first run's commit, made while the second run
   holds the record, is refused and applies nothing; the second run's commit
   applies once (counter 1, the winner is the second copy); the first
   delivery is returned, not acked, and comes back as a duplicate.
3. A kill after the handler's output is confirmed and before its record is
   written (Redis holds the commit script: CLIENT PAUSE WRITE): nothing was
   acked, so the message comes back to the next process, which takes the
   record over and commits the write once."""
import json
import os
import time

from wrtest import (GATE_LUA, Broker, Gate, Warren, check, check_eq, finish, idem_record, prefix,
                    redis_client, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
r = redis_client()
SP = p + ":store:"
gate = Gate()


def store_get(key):
    return r.get(SP + key)


write(os.path.join(tmp, "h.lua"), GATE_LUA + r'''
local M = {}
function M.handle(event, ctx)
  ctx.log.info("started")
  local d = event.data
  if d.gate then gate(ctx, "%s", d.gate) end
  local t = os.clock()
  while os.clock() - t < (d.busy or 0) do end
  ctx.store.incrby("runs:" .. event.id, 1)
  ctx.store.set("winner:" .. event.id, d.copy or "-")
  ctx.publish("", "%s", { input = event.id, copy = d.copy, worker = ctx.worker })
end
return M
''' % (gate.url, out_queue))
# the same handler without the busy loop: the process that takes a message over
write(os.path.join(tmp, "fast.lua"), open(os.path.join(tmp, "h.lua")).read()
      .replace("d.busy or 0", "0"))

b = Broker()
b.declare(out_queue)
b.declare(queue)
extra = "store:\n  prefix: '%s'\n" % SP
sub = {"name": "lease", "queue": queue, "handler": "h.lua", "handler_timeout": "60s",
       "idempotency": {"lease": "2s"}}
sub_fast = dict(sub, handler="fast.lua")

# 1. The worker dies mid-handler; a new one takes over after the lease.
a = Warren(tmp, [sub], name="a", extra=extra).start()
check(a.wait_consuming(1), "a consuming")
b.publish(queue, {"busy": 30}, message_id="dies-1")
wait_for(lambda: a.lines(msg="started", message_id="dies-1"), 20, "the handler started in a")
claimed_at = time.time()
a.kill9()
rec = idem_record(r, "lease", "dies-1")
check_eq(rec.get("state"), "processing", "the dead worker's claim is still there")

# the new run must not redo it while the lease holds, and must after it ends
c = Warren(tmp, [sub_fast], name="c", extra=extra).start()
check(c.wait_consuming(1), "c consuming")
wait_for(lambda: idem_record(r, "lease", "dies-1").get("state") == "done", 30,
         "the message processed after the lease")
done_at = time.time()
check(done_at - claimed_at >= 2.0, "not before the 2s lease ended (%.1fs)" % (done_at - claimed_at))
check_eq(store_get("runs:dies-1"), "1", "its ctx.store write applied once")
wait_for(lambda: c.lines(msg="message handled", message_id="dies-1"), 10, "c's outcome line")
handled = c.lines(msg="message handled", message_id="dies-1")
check_eq(len(handled), 1, "handled once by the new worker")
check(handled and handled[0].get("lease_takeover") is True, "logged as a lease takeover")
check(c.lines(msg="message deferred: another worker holds its key", message_id="dies-1"),
      "deferred while the dead worker's lease held")
time.sleep(1.5)
outs = b.drain(out_queue)
check_eq(len(outs), 1, "one output")
check_eq(c.stop(), 0, "c exits 0")

# 2. A live worker outlives its lease (4 s here: time for the steps below) while
#    a worker of another process takes a duplicate copy over. (Two copies in
#    one process never run at once: the second waits for the first, see
#    test_idempotency.)
sub2 = dict(sub, concurrency=1, prefetch=1, batch_size=1, idempotency={"lease": "4s"})
d = Warren(tmp, [sub2], name="d", extra=extra).start()
d2 = Warren(tmp, [sub2], name="d2", extra=extra).start()
check(d.wait_consuming(1) and d2.wait_consuming(1), "d and d2 consuming")


def lines(**match):
    return d.lines(**match) + d2.lines(**match)


b.publish(queue, {"gate": "first", "copy": "first"}, message_id="slow-1")
gate.wait("first", 20, "the first run at its gate")
t_first = time.monotonic()
rec = idem_record(r, "lease", "slow-1")
first_token, first_until = rec.get("token"), int(rec.get("lease_until", 0))
check(first_token, "the first run holds the record")
b.publish(queue, {"gate": "second", "copy": "second"}, message_id="slow-1")  # the producer's copy
gate.wait("second", 40, "the copy's run at its gate")
print("  the copy's run started %.1f s after the first" % (time.monotonic() - t_first))
rec = idem_record(r, "lease", "slow-1")
check(rec.get("state") == "processing" and rec.get("token") not in (None, first_token),
      "the copy's run took the record over (%r)" % rec)
# both leases in Redis's clock: the takeover claimed when the first lease had ended
check(int(rec.get("lease_until", 0)) - 4000 >= first_until,
      "the copy ran only after the first run's 4 s lease ended")
second_token = rec.get("token")
# the first run goes on: its output is confirmed, then its commit must be refused
gate.open("first")
wait_for(lambda: b.depth(out_queue) >= 1, 20, "the first run's output")
wait_for(lambda: [x for x in lines(message_id="slow-1") if x.get("outcome")], 20,
         "the first run's outcome")
rec = idem_record(r, "lease", "slow-1")
check(rec.get("state") == "processing" and rec.get("token") == second_token,
      "the first run's late commit left the second run's record alone (%r)" % rec)
check_eq((store_get("runs:slow-1"), store_get("winner:slow-1")), (None, None),
         "the first run's late commit applied no write")
lost = lines(msg="message returned to the queue", message_id="slow-1")
check(any("lease lost" in x.get("error", "") for x in lost), "the lost lease was logged")
gate.open("second")
wait_for(lambda: idem_record(r, "lease", "slow-1").get("state") == "done", 20, "slow-1 done")
check_eq(idem_record(r, "lease", "slow-1").get("outcome"), "ok", "slow-1 recorded ok")
check_eq(store_get("runs:slow-1"), "1", "one run's writes applied")
check_eq(store_get("winner:slow-1"), "second", "the run that owned the record committed")
# the first delivery was returned, not acked: it comes back and is skipped
wait_for(lambda: lines(msg="duplicate message skipped", message_id="slow-1"), 60,
         "the returned delivery skipped as a duplicate")
handled = lines(msg="message handled", message_id="slow-1")
check_eq(len(handled), 1, "exactly one run recorded as done")
time.sleep(1.5)
outs = [(props.message_id, json.loads(body)) for props, body in b.drain(out_queue)]
check_eq(sorted(o["copy"] for _, o in outs), ["first", "second"],
         "both runs published (outputs go out before the commit)")
check_eq(set(mid for mid, _ in outs), {"slow-1:lease:1"}, "under the same deterministic id")
check_eq(d.stop(), 0, "d exits 0")
check_eq(d2.stop(), 0, "d2 exits 0")

# 3. kill -9 between the confirmed output and the record: Redis holds the
#    commit (CLIENT PAUSE WRITE holds every script), the process dies there.
e = Warren(tmp, [sub], name="e", extra=extra).start()
check(e.wait_consuming(1), "e consuming")
b.publish(queue, {"gate": "gap", "copy": "gap"}, message_id="gap-1")
gate.wait("gap", 20, "the handler at its gate")
pid = e.proc.pid
r.execute_command("CLIENT", "PAUSE", 15000, "WRITE")
try:
    gate.open("gap")
    wait_for(lambda: b.depth(out_queue) >= 1, 10, "the output confirmed")
    time.sleep(0.5)  # the worker is in its commit now, waiting for Redis
    e.kill9()
finally:
    r.execute_command("CLIENT", "UNPAUSE")
rec = idem_record(r, "lease", "gap-1")
check(rec.get("state") == "processing" and rec.get("token", "").startswith("%d-" % pid),
      "the kill came after the output and before the record (%r)" % rec)
check_eq(store_get("runs:gap-1"), None, "nothing applied yet")
f = Warren(tmp, [sub_fast], name="f", extra=extra).start()
check(f.wait_consuming(1), "f consuming")
wait_for(lambda: idem_record(r, "lease", "gap-1").get("state") == "done", 30,
         "the unacked message back and done")
check_eq(store_get("runs:gap-1"), "1", "its write applied once, by the next process")
time.sleep(1.5)
outs = b.drain(out_queue)
check_eq([props.message_id for props, _ in outs], ["gap-1:lease:1"] * 2,
         "the re-run published the same output id again")
check_eq(f.stop(), 0, "f exits 0")

for q in (queue, queue + ".wait", queue + ".dlq"):
    check_eq(b.depth(q), 0, "%s empty" % q)
for k in r.scan_iter(match=SP + "*"):
    r.delete(k)
b.delete(queue, queue + ".dlq", queue + ".wait", out_queue,
         *["%s.retry.%s" % (queue, x) for x in ("1s", "5s", "30s", "2m")])
b.close()
gate.close()
finish()
