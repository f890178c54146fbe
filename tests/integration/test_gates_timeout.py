"""A causal gate's timeout action: `on_timeout: run` sends a message still
parked at the gate's timeout back to the queue to run without its predecessor,
once; `on_timeout: dlq` (the default) dead-letters it with reason gate-timeout.

One subscription, two gates with a 2 s timeout:
  - order.cancelled after order.created, on_timeout: run
  - order.shipped after order.paid (on_timeout left out: dlq)

- r-1: a cancel whose create never comes: parked, then after the timeout it
  runs, once, having seen no order (it ran without its predecessor); it is not
  parked again; the DLQ stays empty.
- o-2: cancel then create within the timeout: the run gate still gates: the
  cancel runs after the create.
- f-1: a cancel carrying a made-up x-warren-gate-pass header is parked all the
  same (a pass is only a pass with its Redis key).
- x-1: a cancel carrying the real pass r-1 was released with is parked all
  the same (a pass names its gate and key only).
- d-1: a ship whose payment never comes: dead-lettered with reason
  gate-timeout, never run.

/metrics counts parked, released and timed-out messages per gate."""
import json
import os
import time

from wrtest import (Broker, Warren, check, check_eq, delete_queues, finish, prefix, redis_client,
                    tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
r = redis_client()
queue, out = p + ".in", p + ".out"
SUB = "gatedrun"
RUN = "order.cancelled<-order.created"
DLQ = "order.shipped<-order.paid"

write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local id = event.data.order_id
  local state = ctx.store.get("order:" .. id)
  ctx.store.set("order:" .. id, event.type)
  local h = event.headers or {}
  ctx.publish("", "%s", { type = event.type, order = id, saw = state or "none",
                          pass = h["x-warren-gate-pass"] ~= nil })
end
return M
''' % out)

sub = {"name": SUB, "queue": queue, "handler": "h.lua", "prefetch": 20, "batch_size": 10,
       "idempotency": {"key": "json:event_id"}, "breaker": {"enabled": False},
       "gates": [{"type": "order.cancelled", "after": "order.created", "key": "json:order_id",
                  "timeout": "2s", "on_timeout": "run"},
                 {"type": "order.shipped", "after": "order.paid", "key": "json:order_id",
                  "timeout": "2s"}]}


def publish(b, order, typ, headers=None):
    eid = "%s-%s" % (order, typ)
    b.publish(queue, {"event_id": eid, "order_id": order}, message_id=eid, type=typ,
              headers=headers)


def runs(b):
    return [json.loads(body) for _, body in b.drain(out)]


def parked_count():
    return sum(r.llen(k) for k in r.scan_iter("warren:idem:~park:%s:*" % SUB))


w = Warren(tmp, [sub])
b = Broker()
seen = []
try:
    b.declare(out)
    b.declare(queue)
    w.start()
    check(w.wait_consuming(1), "warren consumes")

    # r-1: parked, then run at the timeout without its create
    t0 = time.time()
    publish(b, "r-1", "order.cancelled")
    check(wait_for(lambda: parked_count() == 1, 10, "r-1 parked"), "r-1's cancel is parked")
    check(wait_for(lambda: b.depth(out) >= 1, 15, "r-1 run"), "r-1's cancel ran")
    took = time.time() - t0
    check(1.5 <= took < 6, "it ran after the gate's timeout (2 s), not before: %.1f s" % took)
    time.sleep(2.5)  # a second park and timeout would show by now
    seen += runs(b)
    check_eq([(x["type"], x["saw"], x["pass"]) for x in seen if x["order"] == "r-1"],
             [("order.cancelled", "none", True)],
             "r-1: the cancel ran once, without its create, carrying its pass")
    check_eq(parked_count(), 0, "not parked again")
    check_eq(len(w.lines(msg="parked behind a causal gate", subscription=SUB)), 1,
             "parked once")
    rel = w.lines(msg="parked messages released: gate-timeout, to run without their predecessor",
                  subscription=SUB)
    check_eq([(x.get("count"), x.get("action")) for x in rel], [(1, "run")],
             "the release at the timeout is logged with its action")
    check_eq(len(w.lines(msg="runs without its predecessor: released at its gate's timeout",
                         subscription=SUB)), 1, "its run past the gate is logged")
    passes = list(r.scan_iter("warren:idem:~gatepass:%s:*" % SUB))
    check_eq(len(passes), 1, "one pass in Redis")
    token = passes[0].rsplit(":", 1)[1] if passes else "none"
    check_eq(r.get(passes[0]) if passes else None, "warren:idem:~park:%s:0:r-1" % SUB,
             "the pass names r-1's parked list (gate 0, key r-1)")
    check(r.pttl(passes[0]) > 0 if passes else False, "the pass expires")

    # o-2: the run gate still gates
    publish(b, "o-2", "order.cancelled")
    check(wait_for(lambda: parked_count() == 1, 10, "o-2 parked"), "o-2's cancel is parked")
    publish(b, "o-2", "order.created")
    check(wait_for(lambda: b.depth(out) >= 2, 10, "o-2 handled"), "o-2 ran")
    seen += runs(b)
    check_eq([(x["type"], x["saw"], x["pass"]) for x in seen if x["order"] == "o-2"],
             [("order.created", "none", False), ("order.cancelled", "order.created", False)],
             "o-2: the create, then the cancel released as usual (no pass)")

    # f-1: a made-up pass; x-1: r-1's real pass on another key: both parked
    publish(b, "f-1", "order.cancelled", headers={"x-warren-gate-pass": "0" * 32})
    publish(b, "x-1", "order.cancelled", headers={"x-warren-gate-pass": token})
    check(wait_for(lambda: parked_count() == 2, 10, "f-1, x-1 parked"),
          "f-1 and x-1 are parked despite their headers")
    check_eq(b.depth(out), 0, "neither ran at once")
    check(wait_for(lambda: b.depth(out) >= 2, 15, "f-1, x-1 run at the timeout"),
          "both ran at their timeout")
    seen += runs(b)
    check_eq(sorted((x["order"], x["saw"]) for x in seen if x["order"] in ("f-1", "x-1")),
             [("f-1", "none"), ("x-1", "none")], "each ran once, at the timeout")

    # d-1: the default action: the DLQ
    publish(b, "d-1", "order.shipped")
    check(wait_for(lambda: b.depth(queue + ".dlq") >= 1, 15, "d-1 dead-lettered"),
          "d-1's ship went to the DLQ after the gate's timeout")
    dl = b.drain(queue + ".dlq")
    check_eq(len(dl), 1, "one DLQ copy")
    if dl:
        h = dl[0][0].headers or {}
        check_eq(h.get("x-warren-reason"), "gate-timeout", "reason gate-timeout")
        check("order.paid" in str(h.get("x-warren-error", "")),
              "the error names the predecessor: %r" % h.get("x-warren-error"))
    dlqlog = w.lines(msg="parked messages dead-lettered: gate-timeout", subscription=SUB)
    check_eq([x.get("action") for x in dlqlog], ["dlq"], "logged with its action")

    time.sleep(1.5)
    seen += runs(b)
    check_eq([x["order"] for x in seen if x["order"] == "d-1"], [], "d-1 never ran")
    check_eq(len(seen), 5, "5 runs in all: r-1, f-1, x-1 one each, o-2 two")
    samples = w.metrics()

    def m(name, gate):
        return w.metric(samples, name, subscription=SUB, gate=gate)

    check_eq([m("warren_gate_parked_total", RUN), m("warren_gate_released_total", RUN),
              m("warren_gate_timeouts_total", RUN)], [4, 1, 3],
             "run gate: 4 parked (r-1, o-2, f-1, x-1), 1 released (o-2), 3 timed out")
    check_eq([m("warren_gate_parked_total", DLQ), m("warren_gate_released_total", DLQ),
              m("warren_gate_timeouts_total", DLQ)], [1, 0, 1],
             "dlq gate: 1 parked (d-1), 1 timed out")
    check_eq(parked_count(), 0, "nothing parked")
    check_eq(b.depth(queue), 0, "the queue is empty")
    check_eq(w.stop(), 0, "warren exits 0")
finally:
    if w.alive():
        w.stop()
    delete_queues([queue, out, queue + ".dlq", queue + ".wait"])
    b.close()
finish()
