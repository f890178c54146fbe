"""Causal gates: `order.cancelled` waits until `order.created` is done for the
same order, so a handler written naively in event order is right.

The handler keeps each order's state in ctx.store and rejects a cancel of an
order it has never seen (what a naive handler does without a tombstone). The
gate is `type: order.cancelled, after: order.created, key: json:order_id,
timeout: 3s`. Every run publishes one output (type, order, the state it read,
its run time), so the order of runs is read from the broker, not from warren's
logs.

- o-1: its cancel arrives alone and is parked (acked, kept in Redis, not run);
  its create comes 1.5 s later: the cancel then runs after the create, within
  a second of the create's run, and finds the order created.
- o-2: cancel and create in one batch, cancel first: the cancel is parked and
  released once the batch's commit is read.
- o-3: create, then cancel: the cancel runs at once (nothing parked).
- o-4: a cancel whose create never comes: after the gate's timeout it is in
  the DLQ with reason gate-timeout, its body untouched; it never ran.
- o-5: its cancel is parked, warren is killed (kill -9), its create is
  published while warren is down; the new warren handles the create, then
  releases the cancel: nothing lost, nothing run twice. While it is parked,
  `warren trace` shows what it waits for and since when.
- o-6: its cancel is parked; then the done mark appears with nobody taking
  the parked list (as when a worker dies between its commit and the
  release): the sweep releases it.

No handler ever rejects, every event runs once, and /metrics counts the
parked, released and timed-out messages."""
import json
import os
import time

import subprocess

from wrtest import (ENV, WARREN, Broker, Warren, check, check_eq, delete_queues, finish, prefix,
                    redis_client, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
r = redis_client()
queue, out = p + ".in", p + ".out"
SUB = "gated"
GATE = "order.cancelled<-order.created"  # the gate label of /metrics

write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local id = event.data.order_id
  local state = ctx.store.get("order:" .. id)
  if event.type == "order.created" then
    ctx.store.set("order:" .. id, "created")
  elseif event.type == "order.cancelled" then
    if state == nil then
      ctx.reject("cancel of an unknown order " .. id)
    end
    ctx.store.set("order:" .. id, "cancelled")
  end
  ctx.publish("", "%s", { type = event.type, order = id, saw = state or "none",
                          at = ctx.now() })
end
return M
''' % out)

sub = {"name": SUB, "queue": queue, "handler": "h.lua", "prefetch": 20, "batch_size": 10,
       "idempotency": {"key": "json:event_id"}, "breaker": {"enabled": False},
       "gates": [{"type": "order.cancelled", "after": "order.created", "key": "json:order_id",
                  "timeout": "3s"}]}


def publish(b, order, typ):
    eid = "%s-%s" % (order, typ)
    b.publish(queue, {"event_id": eid, "order_id": order}, message_id=eid, type=typ)


def runs(b):
    return [json.loads(body) for _, body in b.drain(out)]


def parked_count():
    return sum(r.llen(k) for k in r.scan_iter("warren:idem:~park:%s:*" % SUB))


w = Warren(tmp, [sub])
w2 = None
b = Broker()
seen = []
try:
    b.declare(out)
    b.declare(queue)
    w.start()
    check(w.wait_consuming(1), "warren consumes")

    # o-1: cancel alone, parked; its create later releases it
    publish(b, "o-1", "order.cancelled")
    check(wait_for(lambda: parked_count() == 1, 10, "o-1's cancel parked"),
          "o-1's cancel is parked in Redis")
    check_eq(b.depth(queue), 0, "and acked: not in the queue")
    time.sleep(1.5)
    check_eq(b.depth(out), 0, "the parked cancel did not run")
    publish(b, "o-1", "order.created")
    check(wait_for(lambda: b.depth(out) >= 2, 10, "o-1 handled"), "o-1's create and cancel ran")
    seen += runs(b)
    o1 = [x for x in seen if x["order"] == "o-1"]
    check_eq([(x["type"], x["saw"]) for x in o1],
             [("order.created", "none"), ("order.cancelled", "created")],
             "o-1: the create ran first, then the released cancel, which saw the order created")
    if len(o1) == 2:
        lag = o1[1]["at"] - o1[0]["at"]
        check(0 <= lag < 1.0, "the cancel ran within a second of the create (%.3f s)" % lag)

    # o-2: cancel and create in one batch, cancel first; o-3: create then cancel
    publish(b, "o-2", "order.cancelled")
    publish(b, "o-2", "order.created")
    publish(b, "o-3", "order.created")
    publish(b, "o-3", "order.cancelled")
    check(wait_for(lambda: b.depth(out) >= 4, 10, "o-2, o-3 handled"), "o-2 and o-3 ran")
    seen += runs(b)
    for o in ("o-2", "o-3"):
        check_eq([(x["type"], x["saw"]) for x in seen if x["order"] == o],
                 [("order.created", "none"), ("order.cancelled", "created")],
                 "%s: create, then cancel" % o)
    check_eq(len(w.lines(msg="parked behind a causal gate", subscription=SUB)), 2,
             "two cancels were parked so far (o-1, o-2; o-3's create came first)")

    # o-4: never created: dead-lettered after the timeout, never run
    publish(b, "o-4", "order.cancelled")
    check(wait_for(lambda: b.depth(queue + ".dlq") >= 1, 15, "o-4 dead-lettered"),
          "o-4's cancel went to the DLQ after the gate's timeout")
    dl = b.drain(queue + ".dlq")
    check_eq(len(dl), 1, "one DLQ copy")
    if dl:
        props, body = dl[0]
        h = props.headers or {}
        check_eq(h.get("x-warren-reason"), "gate-timeout", "reason gate-timeout")
        check("order.created" in str(h.get("x-warren-error", "")),
              "the error names the predecessor: %r" % h.get("x-warren-error"))
        check_eq(json.loads(body), {"event_id": "o-4-order.cancelled", "order_id": "o-4"},
                 "the body untouched")
        check_eq(props.message_id, "o-4-order.cancelled", "the message id kept")
    check_eq(parked_count(), 0, "nothing left parked")

    # o-5: parked, kill -9, create published while down, then a new warren
    publish(b, "o-5", "order.cancelled")
    check(wait_for(lambda: parked_count() == 1, 10, "o-5 parked"), "o-5's cancel is parked")
    time.sleep(0.5)  # its batch settles (counted) once nothing more comes
    tr = subprocess.run([WARREN, "trace", "-c", w.config, "o-5-order.cancelled"],
                        capture_output=True, text=True, env=dict(os.environ, **ENV))
    check("parked in Redis: waiting for order.created of o-5" in tr.stdout and
          "where: parked - parked in Redis, waiting for order.created of o-5 since " in tr.stdout,
          "warren trace shows what the parked cancel waits for, and since when:\n%s" % tr.stdout)
    samples = w.metrics()
    check_eq(w.metric(samples, "warren_messages_handled_total", subscription=SUB,
                      outcome="parked"), 4, "4 parked messages counted (o-1, o-2, o-4, o-5)")
    check_eq(w.metric(samples, "warren_gate_parked_total", subscription=SUB, gate=GATE), 4,
             "4 parked behind the gate, counted per gate")
    check_eq(w.metric(samples, "warren_gate_released_total", subscription=SUB, gate=GATE), 2,
             "2 released (o-1, o-2)")
    check_eq(w.metric(samples, "warren_gate_timeouts_total", subscription=SUB, gate=GATE), 1,
             "1 timed out (o-4)")
    w.kill9()
    publish(b, "o-5", "order.created")
    w2 = Warren(tmp, [sub], name="warren2").start()
    check(w2.wait_consuming(1), "a new warren consumes")
    check(wait_for(lambda: b.depth(out) >= 2, 15, "o-5 handled"), "o-5's create and cancel ran")
    seen += runs(b)
    check_eq([(x["type"], x["saw"]) for x in seen if x["order"] == "o-5"],
             [("order.created", "none"), ("order.cancelled", "created")],
             "o-5: the cancel parked before the kill ran after the create")

    # o-6: parked; the mark written with nobody to take the list: the sweep releases it
    publish(b, "o-6", "order.cancelled")
    check(wait_for(lambda: parked_count() == 1, 10, "o-6 parked"), "o-6's cancel is parked")
    r.set("warren:store:order:o-6", "created")  # what its create would have written
    r.set("warren:idem:~gate:%s:order.created:o-6" % SUB, "1")
    t0 = time.time()
    check(wait_for(lambda: b.depth(out) >= 1, 15, "o-6 released"),
          "the sweep released o-6's cancel (%.1f s)" % (time.time() - t0))
    seen += runs(b)
    check_eq([x["type"] for x in seen if x["order"] == "o-6"], ["order.cancelled"],
             "o-6's cancel ran")

    time.sleep(1.5)  # anything run twice shows up by now
    seen += runs(b)
    check_eq(len(seen), 9, "9 runs in all: o-1, o-2, o-3, o-5 two each, o-6 one, o-4 none")
    check_eq(len(set((x["type"], x["order"]) for x in seen)), 9, "no event ran twice")
    check_eq([x for x in seen if x["saw"] == "none" and x["type"] == "order.cancelled"], [],
             "no cancel ran before its create")
    check_eq(b.depth(queue + ".dlq"), 0, "the naive handler never rejected (the DLQ is empty)")
    check_eq(b.depth(queue), 0, "the queue is empty")
    check_eq(parked_count(), 0, "nothing parked")
    samples = w2.metrics()
    check_eq([w2.metric(samples, "warren_gate_%s_total" % f, subscription=SUB, gate=GATE)
              for f in ("parked", "released", "timeouts")], [1, 2, 0],
             "the new warren: 1 parked (o-6), 2 released (o-5, o-6), no timeout")
    check_eq(w2.stop(), 0, "warren exits 0")
finally:
    for x in (w, w2):
        if x is not None and x.alive():
            x.stop()
    delete_queues([queue, out, queue + ".dlq", queue + ".wait"])
    b.close()
finish()
