"""ctx.http.request against a real HTTP server on loopback: the request
carries the idempotency key, the message's trace and a JSON body; the JSON
response is decoded; a 503 raises and the message is retried; a 4xx is the
handler's to judge; a slow server is cut off by the timeout; raise = false
returns the failure instead of raising."""
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wrtest import Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write

requests = []
fail_once = {"pay-503": 1}


class Service(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(n) or b"{}")
        key = self.headers.get("Idempotency-Key")
        requests.append({"path": self.path, "key": key, "body": body,
                         "traceparent": self.headers.get("traceparent"),
                         "tracestate": self.headers.get("tracestate"),
                         "content_type": self.headers.get("Content-Type")})
        if key.startswith("pay-slow"):
            time.sleep(2)
        if fail_once.get(key, 0) > 0:
            fail_once[key] -= 1
            return self.reply(503, {"error": "busy"})
        if key == "pay-409":
            return self.reply(409, {"error": "order not found yet"})
        self.reply(201, {"payment_id": "p-" + key, "amount": body.get("amount")})

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:
            pass  # the client timed out first, as the test wants


server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
port = server.server_address[1]
threading.Thread(target=server.serve_forever, daemon=True).start()

p = prefix()
tmp = tempdir()
queue, out = p + ".in", p + ".out"
write(os.path.join(tmp, "pay.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local d = event.data
  local res, err = ctx.http.request{
    method = "POST", url = "http://127.0.0.1:%d/payments",
    headers = { ["Idempotency-Key"] = ctx.idempotency_key },
    body = { amount = d.amount }, timeout = 0.5, raise = d.raise,
  }
  if not res then
    ctx.publish("", "%s", { id = event.id, failed = err })
    return
  end
  if res.status == 409 then return ctx.reject("payment refused: " .. res.json.error) end
  ctx.publish("", "%s", { id = event.id, status = res.status, payment = res.json.payment_id,
                          amount = res.json.amount, ct = res.headers["content-type"],
                          attempt = ctx.attempt, trace = ctx.trace_id })
end
return M
''' % (port, out, out))

b = Broker()
b.declare(out)
b.declare(queue)
w = Warren(tmp, [{"name": "pay", "queue": queue, "handler": "pay.lua",
                  "retry": {"max_attempts": 3, "delays": ["1s"]},
                  "breaker": {"enabled": False}}]).start()
check(w.wait_consuming(1), "consuming")
tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
b.publish(queue, {"amount": 12.5}, message_id="pay-ok",
          headers={"traceparent": tp, "tracestate": "vendor=abc,other=1"})
b.publish(queue, {"amount": 3}, message_id="pay-503")
b.publish(queue, {"amount": 4}, message_id="pay-409")
b.publish(queue, {"amount": 5}, message_id="pay-slow", headers={"x": "1"})
b.publish(queue, {"amount": 6, "raise": False}, message_id="pay-slow2")
wait_for(lambda: b.depth(out) >= 3 and b.depth(queue + ".dlq") >= 2, 30, "outcomes")

outs = {}
out_props = {}
for props, body in b.drain(out):
    d = json.loads(body)
    outs[d["id"]] = d
    out_props[d["id"]] = props
ok = outs.get("pay-ok", {})
check_eq(ok.get("status"), 201, "the response status")
check_eq(ok.get("payment"), "p-pay-ok", "the JSON response decoded")
check_eq(ok.get("amount"), 12.5, "the JSON body sent")
check_eq(ok.get("ct"), "application/json", "response headers, lowercased names")
req = [r for r in requests if r["key"] == "pay-ok"]
check_eq(len(req), 1, "one request for pay-ok")
if req:
    check_eq(req[0]["content_type"], "application/json", "JSON content type sent")
    check((req[0]["traceparent"] or "").startswith("00-0af7651916cd43dd8448eb211c80319c-"),
          "the message's trace goes to the service: %r" % req[0]["traceparent"])
    check(not (req[0]["traceparent"] or "").endswith("b7ad6b7169203331-01"), "as a new span")
    check_eq(req[0]["tracestate"], "vendor=abc,other=1", "the tracestate goes along unchanged")
okp = out_props.get("pay-ok")
check(okp is not None and (okp.headers or {}).get("tracestate") == "vendor=abc,other=1",
      "the published event carries the message's tracestate")
check(okp is not None and (okp.headers or {}).get("traceparent", "").startswith(
      "00-0af7651916cd43dd8448eb211c80319c-"), "and its trace")
r503 = outs.get("pay-503", {})
check_eq(r503.get("attempt"), 2, "a 503 raised, and the retry succeeded")
check_eq(len([r for r in requests if r["key"] == "pay-503"]), 2, "two requests for pay-503")
dlq = {props.message_id: props.headers for props, _ in b.drain(queue + ".dlq")}
check_eq(sorted(dlq), ["pay-409", "pay-slow"], "dead letters")
check_eq(dlq.get("pay-409", {}).get("x-warren-error"), "payment refused: order not found yet",
         "a 409 is the handler's to judge")
slow = dlq.get("pay-slow", {})
check_eq(slow.get("x-warren-attempt"), 3, "a timed-out call is retried like an error")
check("http POST http://127.0.0.1:%d/payments: Timeout was reached" % port
      in slow.get("x-warren-error", ""), "the timeout is named: %r" % slow.get("x-warren-error"))
check("Timeout was reached" in outs.get("pay-slow2", {}).get("failed", ""),
      "raise = false returns nil, err")
check_eq(w.stop(), 0, "exit 0")
server.shutdown()
b.delete(queue, queue + ".dlq", queue + ".wait", queue + ".retry.1s", out)
b.close()
finish()
