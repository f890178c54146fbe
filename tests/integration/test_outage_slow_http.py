"""A slow dependency behind ctx.http.request, with a short AMQP heartbeat (2 s).

The usual slow handler does not spin in Lua: it waits for the service beside
the sidecar. Here that service (a real HTTP server on loopback) takes 3 s to
answer; handler_timeout is 10 s and the call's own timeout 8 s, so every
call succeeds. 1,000 events flow through 2 workers; two runs of 4
consecutive events call the slow service and publish nothing (the others
publish one output each after a few ms of work), so a worker's batch
(batch_size 10) holds 2 or more slow calls in a row: 6 s or more inside
libcurl, with no AMQP traffic of the worker's own. RabbitMQ closes a
connection after 2 to 3 heartbeat intervals (4-6 s here) without traffic.

What must hold: the broker never drops warren's connection for missed
heartbeats (no "broker connection lost" line in warren's log, no "missed
heartbeats" in the node's log) and everything is processed once: each slow
event called the service exactly once (a dropped connection returns the
batch and re-runs it, calling the service again), every input has one done
record (ok), the distinct output ids are exactly the publishing inputs'
`<id>:<subscription>:1`, nothing left in any queue, warren exits 0 on SIGTERM."""
import collections
import json
import os
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


from wrtest import (Broker, Warren, check, check_clean_end, check_connection_kept, check_done_ok,
                    check_eq, check_outputs, delete_queues, depth, done_count, drain_and_stop,
                    finish, handled_once, node_log_size, prefix, redis_client, tempdir, write)

TOTAL = 1000
SLOW = set(range(200, 204)) | set(range(600, 604))
SLOW_S = 3
CONCURRENCY, BATCH, PREFETCH = 2, 10, 20

calls = collections.Counter()
calls_lock = threading.Lock()


class SlowService(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(n) or b"{}")
        with calls_lock:
            calls[body.get("id")] += 1
        time.sleep(SLOW_S)
        data = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:
            pass


server = ThreadingHTTPServer(("127.0.0.1", 0), SlowService)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = "http://127.0.0.1:%d/slow" % server.server_address[1]

p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
side_queues = (queue + ".wait", queue + ".retry.1s")
all_queues = (queue,) + side_queues + (queue + ".dlq", out_queue)
sub_name = "slowhttp"
r = redis_client()
ids = ["h-%05d" % i for i in range(TOTAL)]
slow_ids = set(ids[i] for i in SLOW)
publishing = [i for i in ids if i not in slow_ids]

write(os.path.join(tmp, "work.lua"), r'''
local M = {}
function M.handle(event, ctx)
  if event.data.slow then
    -- the service takes %d s; nothing to publish
    ctx.http.request{ method = "POST", url = "%s", body = { id = event.id }, timeout = 8 }
    return
  end
  local t = ctx.now()
  while ctx.now() - t < 0.004 do end
  ctx.publish("", "%s", { input = event.id })
end
return M
''' % (SLOW_S, url, out_queue))

sub = {"name": sub_name, "queue": queue, "handler": "work.lua", "concurrency": CONCURRENCY,
       "prefetch": PREFETCH, "batch_size": BATCH, "handler_timeout": "10s",
       "retry": {"max_attempts": 3, "delays": ["1s"]}, "idempotency": {"lease": "30s"}}
w = Warren(tmp, [sub], heartbeat="2s")

b = Broker()
node_off = node_log_size()
try:
    b.declare(out_queue)
    b.declare(queue)
    for i, mid in enumerate(ids):
        b.publish(queue, {"n": mid, "slow": i in SLOW}, message_id=mid)

    w.start()
    t_start = time.monotonic()
    check(w.wait_consuming(CONCURRENCY), "warren consuming (%d workers)" % CONCURRENCY)

    def drained():
        return b.depth(queue) == 0 and all(depth(b, q) in (0, None) for q in side_queues) and \
            done_count(r, sub_name) >= TOTAL

    drain_and_stop(w, drained, 60, "every event done", settle_timeout=15, started=t_start)

    check_connection_kept(w, node_off, "missed heartbeats")

    with calls_lock:
        slow_calls = {i: calls.get(i, 0) for i in sorted(slow_ids)}
    print("  service calls of the slow events: %s" % slow_calls, flush=True)
    check_eq(sorted(i for i, n in slow_calls.items() if n != 1), [],
             "each slow event called the service exactly once")

    repub = check_outputs(b, out_queue, sub_name, publishing, what="publishing input")

    check_done_ok(r, sub_name, ids, " (no timeout, no DLQ)")
    handled_once(w)
    check_eq(w.lines(level="fatal"), [], "no fatal log line")

    check_clean_end(b, w, queue, all_queues)
except Exception:
    traceback.print_exc()
    check(False, "the test ran to its end without an exception")
finally:
    if w.alive():
        w.stop()
    b.close()
    delete_queues(all_queues)
    server.shutdown()
finish()
