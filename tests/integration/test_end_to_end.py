"""End to end through a real RabbitMQ: 5,000 events handled exactly once,
poison and failing messages dead-lettered with their reason, the sidecar up
throughout, nothing left unacked, and a clean exit on SIGTERM."""
import json
import os

from wrtest import Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write

N = 5000

p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
exchange = p + ".events"

# The handler publishes one output per input, to the output queue through the
# default exchange; ids ending in "-fail" raise, "reject" in the body rejects.
write(os.path.join(tmp, "echo.lua"), r'''
local M = {}
function M.handle(event, ctx)
  if event.id:sub(-5) == "-fail" then
    error("refusing " .. event.id)
  end
  if type(event.data) == "table" and event.data.reject then
    return ctx.reject("asked to reject " .. event.id)
  end
  ctx.publish("", "%s", { input = event.id, n = event.data.n, type = event.type,
                          attempt = ctx.attempt })
end
return M
''' % out_queue)

b = Broker()
b.declare(out_queue)
w = Warren(tmp, [{
    "name": "e2e", "queue": queue, "handler": "echo.lua", "concurrency": 2, "prefetch": 100,
    "batch_size": 50,
    "retry": {"max_attempts": 1},  # retries have their own test: fail straight to the DLQ
    "bindings": [{"exchange": exchange, "routing_keys": ["order.*"]}],
}]).start()
check(w.wait_consuming(2), "both workers consuming")

# 5,000 good events through the topic exchange.
for i in range(N):
    b.publish("order.created", {"n": i}, exchange=exchange, message_id="m-%05d" % i)

wait_for(lambda: b.depth(out_queue) >= N, 120, "%d outputs" % N, interval=0.5)
wait_for(lambda: b.depth(queue) == 0, 30, "input queue empty")

# Poison and failures, sent while warren is busy with nothing else.
poison = {
    "bad-json": (b'{"n": 1,', "application/json", "invalid-json"),
    "empty": (b"", "application/json", "empty-body"),
    "binary": (bytes(range(256)) * 4, "application/json", "invalid-json"),
    "too-big": (b'{"pad": "' + b"x" * (1024 * 1024) + b'"}', "application/json", "body-too-large"),
}
for mid, (body, ct, _) in poison.items():
    b.publish("order.created", body, exchange=exchange, message_id=p + "-" + mid, content_type=ct)
b.publish("order.created", {"n": -1}, exchange=exchange, message_id=None)
b.publish("order.created", {"n": 1}, exchange=exchange, message_id=p + "-h-fail")
b.publish("order.created", {"n": 2, "reject": True}, exchange=exchange, message_id=p + "-rej")
wait_for(lambda: b.depth(queue + ".dlq") >= 7, 30, "7 messages in the DLQ")
check(w.alive(), "warren is still running after poison messages")

# Still working after the poison: one more good event.
b.publish("order.created", {"n": N}, exchange=exchange, message_id="m-after-poison")
wait_for(lambda: b.depth(out_queue) >= N + 1, 30, "the event after the poison handled")

outs = b.drain(out_queue)
ids = [props.message_id for props, _ in outs]
inputs = [json.loads(body)["input"] for _, body in outs]
want = set("m-%05d" % i for i in range(N)) | {"m-after-poison"}
check_eq(len(outs), N + 1, "one output per input, no duplicates")
check_eq(set(inputs), want, "every input id produced an output")
check_eq(set(ids), set(i + ":e2e:1" for i in want), "output ids derive from input ids")
check(all(props.delivery_mode == 2 for props, _ in outs), "outputs are persistent")
check(all(props.headers.get("x-warren-causation-id") == json.loads(body)["input"]
          for props, body in outs), "outputs carry their causation id")
check(all(props.headers.get("traceparent", "").startswith("00-") for props, _ in outs),
      "outputs carry a traceparent")

dlq = b.drain(queue + ".dlq")
by_id = {props.message_id: (props, body) for props, body in dlq}
check_eq(len(dlq), 7, "seven dead letters")
for mid, (body, _, reason) in poison.items():
    got = by_id.get(p + "-" + mid)
    if check(got is not None, "%s is in the DLQ" % mid):
        h = got[0].headers
        check_eq(h.get("x-warren-reason"), reason, "%s reason" % mid)
        check_eq(h.get("x-warren-error-class"), "invalid", "%s error class" % mid)
        check_eq(got[1], body, "%s body kept byte for byte" % mid)
        check_eq(h.get("x-warren-original-exchange"), exchange, "%s original exchange" % mid)
        check_eq(h.get("x-warren-original-routing-key"), "order.created", "%s routing key" % mid)
        check_eq(h.get("x-warren-subscription"), "e2e", "%s subscription" % mid)
        check_eq(h.get("x-warren-attempt"), 1, "%s attempt" % mid)
        check(h.get("x-warren-first-failure", "").endswith("Z"), "%s failure time" % mid)
        check(len(h.get("x-warren-trace-id", "")) == 32, "%s trace id" % mid)
missing = by_id.get(None)
if check(missing is not None, "the message without an id is in the DLQ"):
    check_eq(missing[0].headers.get("x-warren-reason"), "missing-message-id", "missing id reason")
failed = by_id.get(p + "-h-fail")
if check(failed is not None, "the failing message is in the DLQ"):
    h = failed[0].headers
    check_eq(h.get("x-warren-reason"), "handler-error", "handler error reason")
    check_eq(h.get("x-warren-error-class"), "error", "handler error class")
    check(h.get("x-warren-error", "").endswith("echo.lua:5: refusing %s-h-fail" % p),
          "handler error text names file and line: %r" % h.get("x-warren-error"))
    check_eq(h.get("x-warren-errors"), [h.get("x-warren-error")], "error history")
    check(len(h.get("x-warren-handler-version", "")) == 12, "handler version recorded")
rej = by_id.get(p + "-rej")
if check(rej is not None, "the rejected message is in the DLQ"):
    check_eq(rej[0].headers.get("x-warren-reason"), "rejected", "reject reason")
    check_eq(rej[0].headers.get("x-warren-error"), "asked to reject %s-rej" % p, "reject text")

# One log line per outcome, with the fields operators rely on.
handled = w.lines(msg="message handled")
check_eq(len(handled), N + 1, "one 'message handled' line per good message")
sample = handled[0] if handled else {}
for field in ("ts", "level", "subscription", "message_id", "outcome", "duration_ms", "trace_id",
              "handler_version", "type", "attempt"):
    check(field in sample, "log line has %s" % field)
dead = w.lines(msg="message dead-lettered")
check_eq(len(dead), 7, "one 'message dead-lettered' line per dead letter")
check_eq(sorted(set(d.get("reason") for d in dead)),
         sorted({"invalid-json", "empty-body", "body-too-large", "missing-message-id",
                 "handler-error", "rejected"}), "dead-letter reasons logged")

rc = w.stop()
check_eq(rc, 0, "warren exits 0 on SIGTERM")
check_eq(b.depth(queue), 0, "nothing left in (or returned to) the input queue")
check_eq(b.depth(queue + ".dlq"), 0, "DLQ drained by the test")
check(w.lines(msg="warren stopped"), "warren logged its clean stop")
b.delete(queue, queue + ".dlq", queue + ".wait", out_queue)
b.close()
finish()
