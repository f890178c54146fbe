"""Circuit breakers with a real broker and a dependency that goes down.

Subscription breaker: while the service the handler calls answers 503, the
breaker opens after a few failures and the subscription stops consuming: the
queue depth stays put, the DLQ does not grow, no retries burn. When the
service is back, half-open probes succeed, the breaker closes and every
message is handled exactly once.

Named breaker: ctx.breaker("dep"):call(fn) opens after failures of fn and
then fails fast with a retryable error, without calling fn."""
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wrtest import Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write

state = {"up": False, "calls": 0}


class Dep(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        state["calls"] += 1
        status = 200 if state["up"] else 503
        body = b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:
            pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Dep)
port = server.server_address[1]
threading.Thread(target=server.serve_forever, daemon=True).start()

p = prefix()
tmp = tempdir()
queue, out = p + ".in", p + ".out"
write(os.path.join(tmp, "dep.lua"), r'''
local M = {}
function M.handle(event, ctx)
  if event.data.named then
    ctx.breaker("dep"):call(function()
      ctx.http.request{ method = "POST", url = "http://127.0.0.1:%d/x", body = "{}" }
    end)
  else
    ctx.http.request{ method = "POST", url = "http://127.0.0.1:%d/x", body = "{}" }
  end
  ctx.publish("", "%s", { id = event.id })
end
return M
''' % (port, port, out))

b = Broker()
b.declare(out)
b.declare(queue)
N = 60
for i in range(N):
    b.publish(queue, {"n": i}, message_id="b-%02d" % i)
queue2 = p + ".named"
b.declare(queue2)
w = Warren(tmp, [{"name": "brk", "queue": queue, "handler": "dep.lua", "prefetch": 10,
                  "batch_size": 5,
                  "retry": {"max_attempts": 20, "delays": ["1s"]},
                  "breaker": {"window": 10, "min_calls": 5, "failure_ratio": 0.5,
                              "open_for": "3s", "half_open_probes": 2}},
                 # the named breaker's subscription keeps consuming: its own breaker is off
                 {"name": "named", "queue": queue2, "handler": "dep.lua",
                  "retry": {"max_attempts": 20, "delays": ["1s"]},
                  "breaker": {"enabled": False}}],
           extra="breakers:\n  dep: {window: 4, min_calls: 3, failure_ratio: 0.5, open_for: 2s}\n"
           ).start()
opened = wait_for(lambda: w.lines(msg="breaker opened"), 30, "the breaker to open")
check(opened and opened[0].get("breaker") == "brk", "the subscription's breaker opened")
wait_for(lambda: w.lines(msg="consumption paused: circuit breaker open"), 10, "the pause")
time.sleep(0.5)
calls_at_pause = state["calls"]
depth1 = b.depth(queue) + b.depth(queue + ".retry.1s")
time.sleep(2)
depth2 = b.depth(queue) + b.depth(queue + ".retry.1s")
check(state["calls"] - calls_at_pause <= 2, "while open the dependency is left alone (%d calls)"
      % (state["calls"] - calls_at_pause))
check_eq(b.depth(queue + ".dlq"), 0, "the DLQ does not grow while the breaker is open")
check(depth2 >= depth1 - 2, "the queue depth stays put while open (%d -> %d)" % (depth1, depth2))
check_eq(b.depth(out), 0, "nothing handled while the service is down")

state["up"] = True
wait_for(lambda: b.depth(out) >= N, 60, "everything handled once the service is back")
closed = w.lines(msg="breaker closed")
check(closed, "the breaker closed after its probes")
check(w.lines(msg="breaker half-open"), "it went through half-open")
check(w.lines(msg="consumption resumed"), "consumption resumed")
ids = [json.loads(body)["id"] for _, body in b.drain(out)]
check_eq(sorted(ids), sorted("b-%02d" % i for i in range(N)), "every message handled once")
check_eq(b.depth(queue + ".dlq"), 0, "no dead letters")

# the named breaker
state["up"] = False
for i in range(8):
    b.publish(queue2, {"named": True}, message_id="n-%d" % i)
wait_for(lambda: any(l.get("breaker") == "dep" for l in w.lines(msg="breaker opened")), 30,
         "the named breaker to open")
wait_for(lambda: any("breaker 'dep' is open" in l.get("error", "")
                     for l in w.lines(msg="message scheduled for retry")), 30,
         "calls failing fast while it is open")
state["up"] = True
wait_for(lambda: b.depth(out) >= 8, 60, "the named-breaker messages handled after recovery")
check_eq(len(b.drain(out)), 8, "each once")
check_eq(w.stop(), 0, "exit 0")
server.shutdown()
b.delete(queue, queue + ".dlq", queue + ".wait", queue + ".retry.1s", out,
         queue2, queue2 + ".dlq", queue2 + ".wait", queue2 + ".retry.1s")
b.close()
finish()
