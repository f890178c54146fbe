"""Retries through delay queues: transient failures succeed on attempt k+1
after the configured delays (a 1 s tier never returns a message in under
1 s), a handler that always fails leaves the message in the DLQ after
max_attempts with its whole story, ctx.reject goes to the DLQ at once,
ctx.retry asks for a delay, timeouts are retried. Retry copies go back to the
failing queue only, never to the producer's exchange."""
import calendar
import json
import os
import time

from wrtest import (Broker, Warren, check, check_eq, finish, idem_record, prefix, redis_client,
                    tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
queue, out_queue, other_queue = p + ".in", p + ".out", p + ".other"
exchange = p + ".ex"
r = redis_client()

write(os.path.join(tmp, "flaky.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local d = event.data
  if d.fail_until and ctx.attempt <= d.fail_until then
    error("transient failure on attempt " .. ctx.attempt)
  end
  if d.always then error("always broken") end
  if d.reject then return ctx.reject("not a valid order") end
  if d.ask and ctx.attempt == 1 then return ctx.retry("not yet", { delay = "2s" }) end
  if d.spin and ctx.attempt <= d.spin then while true do end end
  ctx.publish("", "%s", {
    input = event.id, attempt = ctx.attempt,
    last_failure = event.headers["x-warren-last-failure"],
    first_failure = event.headers["x-warren-first-failure"],
    routing_key = event.routing_key, exchange = event.exchange,
  })
end
return M
''' % out_queue)

b = Broker()
b.declare(out_queue)
b.declare(other_queue)
w = Warren(tmp, [{
    "name": "flaky", "queue": queue, "handler": "flaky.lua", "concurrency": 2,
    "handler_timeout": "300ms",
    "retry": {"max_attempts": 4, "delays": ["1s", "2s", "3s"]},
    "breaker": {"enabled": False},  # most of these fail on purpose
    "bindings": [{"exchange": exchange, "routing_keys": ["order.#"]}],
}]).start()
check(w.wait_consuming(2), "consuming")
# a second queue on the same exchange: retries must never be copied to it
b.ch.queue_bind(queue=other_queue, exchange=exchange, routing_key="order.#")

events = {
    "ok-1": {},
    "k1-1": {"fail_until": 1}, "k1-2": {"fail_until": 1},
    "k2-1": {"fail_until": 2},
    "af-1": {"always": True},
    "rj-1": {"reject": True},
    "ask-1": {"ask": True},
    "to-1": {"spin": 1},
}
sent_at = {}  # message id -> the test's clock just before it was published
for mid, body in events.items():
    sent_at[mid] = time.monotonic()
    b.publish("order.created", body, exchange=exchange, message_id=mid)

# Take the outputs and dead letters as they arrive, noting when on the test's
# clock: how long a message spent in its delay tiers is measured here, not read
# from warren's own timestamps.
got = {out_queue: [], queue + ".dlq": []}  # queue -> [(arrival, properties, body)]


def collect():
    for q, into in got.items():
        while True:
            method, props, body = b.ch.basic_get(queue=q, auto_ack=True)
            if method is None:
                break
            into.append((time.monotonic(), props, body))
    return len(got[out_queue]) >= 6 and len(got[queue + ".dlq"]) >= 2


wait_for(collect, 60, "6 successes and 2 dead letters", interval=0.05)
time.sleep(1.5)  # anything extra would show up now
collect()

outs = {}
arrived = {}
for at, props, body in got[out_queue]:
    d = json.loads(body)
    outs.setdefault(d["input"], []).append(d)
    arrived.setdefault(d["input"], at)
check_eq(sorted(outs), sorted(["ok-1", "k1-1", "k1-2", "k2-1", "ask-1", "to-1"]), "successes")
check(all(len(v) == 1 for v in outs.values()), "each succeeded once")


def iso(ts):
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + int(ts[20:23]) / 1000.0


# min_wait: the delay tiers it went through (k2-1: 1 s + 2 s; to-1: a 300 ms timeout first)
for mid, attempt, min_wait in (("ok-1", 1, 0), ("k1-1", 2, 1.0), ("k1-2", 2, 1.0),
                               ("k2-1", 3, 3.0), ("ask-1", 2, 2.0), ("to-1", 2, 1.3)):
    o = outs.get(mid, [{}])[0]
    check_eq(o.get("attempt"), attempt, "%s succeeded on attempt %d" % (mid, attempt))
    check_eq(o.get("routing_key"), "order.created", "%s keeps its routing key" % mid)
    check_eq(o.get("exchange"), exchange, "%s keeps its exchange" % mid)
    if not min_wait:
        continue
    check(o.get("first_failure") and o.get("last_failure"),
          "%s carries x-warren-first-failure and x-warren-last-failure (%r, %r)"
          % (mid, o.get("first_failure"), o.get("last_failure")))
    waited = arrived[mid] - sent_at[mid] if mid in arrived else None
    shown = "never" if waited is None else "%.2f s" % waited
    check(waited is not None and waited >= min_wait,
          "%s came out %s after it was sent, >= %.1f s of delay tiers" % (mid, shown, min_wait))
    check(waited is not None and waited < min_wait + 5,
          "%s did not wait much longer than its tiers (%s)" % (mid, shown))

dlq = {props.message_id: (props, body) for _, props, body in got[queue + ".dlq"]}
dlq_at = {props.message_id: at for at, props, _ in got[queue + ".dlq"]}
check_eq(sorted(dlq), ["af-1", "rj-1"], "dead letters")
check("af-1" in dlq_at and dlq_at["af-1"] - sent_at["af-1"] >= 6.0,
      "af-1 reached the DLQ after its 1 s + 2 s + 3 s of delay tiers (%.2f s)"
      % (dlq_at.get("af-1", sent_at["af-1"]) - sent_at["af-1"]))
if "af-1" in dlq:
    props, body = dlq["af-1"]
    h = props.headers
    check_eq(json.loads(body), {"always": True}, "af-1 body untouched")
    check_eq(h.get("x-warren-attempt"), 4, "af-1 tried max_attempts times")
    check_eq(h.get("x-warren-reason"), "handler-error", "af-1 reason")
    check_eq(h.get("x-warren-error-class"), "error", "af-1 class")
    check_eq(len(h.get("x-warren-errors", [])), 4, "af-1 keeps every error")
    check(all(e.endswith("always broken") for e in h.get("x-warren-errors", [])), "af-1 errors")
    check_eq(h.get("x-warren-original-exchange"), exchange, "af-1 original exchange")
    check_eq(h.get("x-warren-original-routing-key"), "order.created", "af-1 original routing key")
    check(iso(h["x-warren-last-failure"]) - iso(h["x-warren-first-failure"]) >= 6.0,
          "af-1 first and last failure 1s+2s+3s apart")
    check_eq(props.message_id, "af-1", "af-1 keeps its message id")
    check_eq(idem_record(r, "flaky", "af-1").get("outcome"), "dead-lettered", "af-1 record")
if "rj-1" in dlq:
    h = dlq["rj-1"][0].headers
    check_eq(h.get("x-warren-attempt"), 1, "rj-1 dead-lettered at once")
    check_eq(h.get("x-warren-reason"), "rejected", "rj-1 reason")
    check_eq(h.get("x-warren-error"), "not a valid order", "rj-1 error")
    check_eq(idem_record(r, "flaky", "rj-1").get("outcome"), "rejected", "rj-1 record")
check_eq(idem_record(r, "flaky", "k2-1").get("outcome"), "ok", "k2-1 record done ok")
check_eq(idem_record(r, "flaky", "k2-1").get("starts"), "3", "k2-1 claimed three times")

retried = w.lines(msg="message scheduled for retry")
by_id = {}
for line in retried:
    by_id.setdefault(line["message_id"], []).append(line)
check_eq(len(by_id.get("af-1", [])), 3, "af-1 retried 3 times")
check_eq([l["delay_ms"] for l in by_id.get("af-1", [])], [1000, 2000, 3000], "af-1 delays")
check_eq([l["reason"] for l in by_id.get("to-1", [])], ["timeout"], "to-1 retried after a timeout")
check_eq([l["delay_ms"] for l in by_id.get("ask-1", [])], [2000], "ctx.retry delay honoured")

check_eq(b.depth(other_queue), len(events), "the other subscriber got each event once, no retries")
check_eq(w.stop(), 0, "exit 0")
for q in (queue, queue + ".retry.1s", queue + ".retry.2s", queue + ".retry.3s", queue + ".wait"):
    check_eq(b.depth(q), 0, "%s empty" % q)
b.delete(queue, queue + ".dlq", queue + ".retry.1s", queue + ".retry.2s", queue + ".retry.3s",
         queue + ".wait", out_queue, other_queue)
b.ch.exchange_delete(exchange)
b.close()
finish()
