"""`warren status`, /status and the breaker's words, against the real broker and Redis.

Two subscriptions run the same handler: it calls a dependency (an HTTP service
run here, answering 503 while "down") unless the event says `bug`, where it
indexes a nil value (a Lua runtime error: the handler's own bug).

1. Handler bugs in `pay` (breaker.counts: dependencies, the default) go to the
   DLQ and leave its breaker closed: status lists them among the last
   failures, not counted by the breaker. The same bugs in `strict`
   (breaker.counts: all) open its breaker.
2. With the dependency down, `pay`'s breaker opens: its "breaker opened" log
   line names the failures (message ids and the 503); /status, `warren status`
   (text and --json) say "consumption paused: breaker pay open since T, next
   probe at T"; /readyz says so too without failing (200). Meanwhile fresh
   messages stay in the queue (the depth status shows is what the broker
   says). With the dependency back, the breaker closes and every message is
   handled.
3. DLQ copies by reason code in status match the broker's DLQ; the handler
   version is the running one; after a broken edit (refused reload) status says
   the file on disk differs.
4. Redis stopped: every subscription is "paused: Redis not answering", and
   /readyz says that instead of blaming the broker for the connections the
   workers closed on purpose.
"""
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (ENV, WARREN, Broker, Warren, check, check_eq, delete_queues,  # noqa: E402
                    finish, prefix, stack, tempdir, wait_for, write)

state = {"up": True, "calls": 0}


class Dep(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        state["calls"] += 1
        status = 200 if state["up"] else 503
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        try:
            self.wfile.write(b"{}")
        except BrokenPipeError:
            pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Dep)
threading.Thread(target=server.serve_forever, daemon=True).start()

p = prefix()
tmp = tempdir()
qpay, qstrict, qidle = p + ".pay", p + ".strict", p + ".idle"
HANDLER = r'''
local M = {}
function M.handle(event, ctx)
  if event.data.bug then local order = nil; return order.total end
  ctx.http.request{ method = "POST", url = "http://127.0.0.1:%d/pay", body = "{}" }
end
return M
''' % server.server_address[1]
write(os.path.join(tmp, "pay.lua"), HANDLER)
write(os.path.join(tmp, "strict.lua"), HANDLER)
write(os.path.join(tmp, "idle.lua"), "return { handle = function(event, ctx) end }\n")
brk = {"window": 10, "min_calls": 3, "failure_ratio": 0.5, "open_for": "4s",
       "half_open_probes": 1}
subs = [{"name": "pay", "queue": qpay, "handler": "pay.lua", "prefetch": 5, "batch_size": 1,
         "retry": {"max_attempts": 1}, "breaker": brk},
        {"name": "strict", "queue": qstrict, "handler": "strict.lua",
         "retry": {"max_attempts": 1}, "breaker": dict(brk, counts="all")},
        {"name": "idle", "queue": qidle, "handler": "idle.lua"}]
w = Warren(tmp, subs)
b = Broker()


def status():
    code, body = w.get("/status")
    if code != 200:
        check_eq(code, 200, "/status answers 200")
    return json.loads(body)


def sub_status(st, name):
    return [s for s in st["subscriptions"] if s["name"] == name][0]


def cli(*args):
    env = dict(os.environ)
    env.update(ENV)
    r = subprocess.run([WARREN, "status", "--url", "http://127.0.0.1:%d/status" % w.http_port()]
                       + list(args), capture_output=True, env=env, timeout=30)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


try:
    w.start()
    check(w.wait_consuming(3), "warren consumes")
    b.publish(qidle, {"n": 0}, message_id=p + "-idle-0")
    check(wait_for(lambda: len(w.lines(msg="message handled", subscription="idle")) == 1, 20,
                   "idle's first message"), "idle handled one message, then stays idle")
    st = status()
    check_eq([(s["name"], s["state"], s["why"]) for s in st["subscriptions"]],
             [("pay", "consuming", []), ("strict", "consuming", []), ("idle", "consuming", [])],
             "all consuming")

    # 1. bugs: not the dependency's fault in pay, counted in strict
    for k in range(4):
        b.publish(qpay, {"bug": True}, message_id="%s-bug-%d" % (p, k))
        b.publish(qstrict, {"bug": True}, message_id="%s-sbug-%d" % (p, k))
    check(wait_for(lambda: b.depth(qpay + ".dlq") >= 4 and b.depth(qstrict + ".dlq") >= 3, 30,
                   "the bugs dead-lettered"), "the bugs are in the DLQs")
    check(wait_for(lambda: sub_status(status(), "strict")["state"] == "paused", 10,
                   "strict paused"), "counts: all: handler bugs open strict's breaker")
    s = sub_status(status(), "pay")
    check_eq((s["state"], s["breaker"]["state"]), ("consuming", "closed"),
             "counts: dependencies: pay's breaker stays closed after 4 handler bugs")
    check(len(s["last_failures"]) == 3 and
          all(not f["counted_by_breaker"] and "a nil value" in f["error"]
              for f in s["last_failures"]), "pay's last failures: the bugs, not counted: %r"
          % s["last_failures"])
    check_eq(s["dead_letters_by_reason"], {"handler-error": 4}, "pay: DLQ copies by reason")
    opened = w.lines(msg="breaker opened", breaker="strict")
    check(len(opened) == 1 and "%s-sbug-" % p in opened[0].get("last_failures", "") and
          "a nil value" in opened[0].get("last_failures", ""),
          "strict's 'breaker opened' names the failures: %r" % opened)

    # 2. the dependency down: pay pauses, and everything says so
    state["up"] = False
    for k in range(3):
        b.publish(qpay, {"n": k}, message_id="%s-dep-%d" % (p, k))
    check(wait_for(lambda: sub_status(status(), "pay")["state"] == "paused", 20, "pay paused"),
          "the dependency's 503s open pay's breaker")
    opened = w.lines(msg="breaker opened", breaker="pay")
    check(len(opened) >= 1 and "%s-dep-" % p in opened[0].get("last_failures", "") and
          "503" in opened[0].get("last_failures", ""),
          "pay's 'breaker opened' names the 503 failures: %r" % opened[:1])
    for k in range(5):
        b.publish(qpay, {"n": k}, message_id="%s-fresh-%d" % (p, k))
    s = sub_status(status(), "pay")
    why = s["why"][0] if s["why"] else ""
    check(why.startswith("consumption paused: breaker pay open since ") and
          ", next probe at " in why, "status says why: %r" % s["why"])
    check_eq(s["breaker"]["next_probe_at"] is not None, True, "next probe time in JSON")
    code, body = w.get("/readyz")
    check_eq(code, 200, "/readyz stays 200 while a breaker is open")
    check("consumption paused: breaker pay open since " in body, "/readyz says so: %r" % body)
    rc, out, err = cli()
    print(out, flush=True)
    check_eq(rc, 0, "warren status exits 0")
    check("pay (%s): paused\n  - consumption paused: breaker pay open since " % qpay in out,
          "warren status (text) says pay is paused and why")
    check(wait_for(lambda: b.depth(qpay) >= 5, 10, "fresh messages wait"),
          "fresh messages wait in the queue while paused")
    check(wait_for(lambda: (sub_status(status(), "pay")["queues"]["main"] or 0) >= 5, 10,
                   "status depth"), "status shows the waiting messages in the main queue")
    rc, out, err = cli("--json")
    check(rc == 0 and sub_status(json.loads(out), "pay")["state"] == "paused",
          "warren status --json")
    # trace says so too: a fresh message waiting in the paused queue, a failed one
    env = dict(os.environ)
    env.update(ENV)
    surl = "http://127.0.0.1:%d/status" % w.http_port()
    r = subprocess.run([WARREN, "trace", "-c", w.config, p + "-fresh-0", "--status-url", surl],
                       capture_output=True, env=env, timeout=60)
    err = r.stderr.decode()
    check(r.returncode == 1 and "note: pay is not consuming (consumption paused: breaker pay "
          "open since " in err, "trace of a waiting message says pay is paused: %r" % err)
    r = subprocess.run([WARREN, "trace", "-c", w.config, p + "-dep-0", "--status-url", surl],
                       capture_output=True, env=env, timeout=60)
    out = r.stdout.decode()
    check(r.returncode == 0 and "note:  consumption paused: breaker pay open since " in out,
          "trace of a failed message notes the pause: %r" % out[-400:])
    state["up"] = True
    check(wait_for(lambda: sub_status(status(), "pay")["state"] == "consuming" and
                   b.depth(qpay) == 0, 40, "pay resumes"),
          "with the dependency back, pay's breaker closes and its queue drains")

    # 3. versions: a broken edit is refused, status says the file differs
    s = sub_status(status(), "pay")
    check(s["handler"]["version"] and not s["handler"]["differs"], "the running version")
    write(os.path.join(tmp, "pay.lua"), "local M = {\nreturn M\n")
    check(wait_for(lambda: sub_status(status(), "pay")["handler"]["differs"], 20,
                   "the refused reload"), "status: the file on disk differs (refused reload)")
    rc, out, err = cli()
    check("the file on disk is" in out, "warren status names the differing file")

    # 4. Redis away
    try:
        check_eq(stack("stop-redis"), 0, "Redis stopped")
        check(wait_for(lambda: not status()["redis"]["up"], 15, "Redis down seen"),
              "status: Redis down")
        st = status()
        check(all(s["state"] == "paused" and s["why"] and
                  s["why"][0].startswith("paused: Redis not answering")
                  for s in st["subscriptions"]), "every subscription paused for Redis: %r"
              % [s["why"] for s in st["subscriptions"]])
        # a message makes pay's worker meet the outage and close its consumer on purpose
        b.publish(qpay, {"n": 99}, message_id=p + "-during-outage")
        check(wait_for(lambda: sub_status(status(), "pay")["workers"]["connected"] == 0, 20,
                       "pay's worker to close"), "pay's worker closed its broker connection")
        code, body = w.get("/readyz")
        check(code == 503 and "paused: Redis not answering" in body and
              "broker:" not in body, "/readyz blames Redis, not the broker: %r" % body)
    finally:
        check_eq(stack("start-redis"), 0, "Redis started again")
    # Redis answers when start-redis returns: consumption resumes within about a second
    t0 = time.monotonic()
    check(wait_for(lambda: w.lines(msg="message handled", message_id=p + "-during-outage"), 10,
                   "the message sent during the outage"), "handled after Redis came back")
    resumed = time.monotonic() - t0
    check(wait_for(lambda: w.get("/readyz")[0] == 200, 10, "ready again"), "ready again")
    ready = time.monotonic() - t0
    print("  resumed %.2f s, ready %.2f s after Redis answered" % (resumed, ready), flush=True)
    check(resumed < 2.0, "consumption resumed within 2 s of Redis's return (%.2f s)" % resumed)
    check(ready < 2.0, "/readyz 200 within 2 s of Redis's return (%.2f s)" % ready)
    # the worker that idled through the outage connects anew before its next batch
    b.publish(qidle, {"n": 1}, message_id=p + "-idle-1")
    check(wait_for(lambda: w.lines(msg="message handled", message_id=p + "-idle-1"), 10,
                   "idle's next message"), "the idle subscription handles its next message")
    check_eq([ln.get("error") for ln in w.lines(subscription="idle")
              if ln.get("msg", "").startswith("Redis failed mid-batch")], [],
             "no batch of the idle worker met the dead connection")
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    if w.alive():
        w.stop()
    b.close()
    server.shutdown()
    qs = []
    for q in (qpay, qstrict, qidle):
        qs += [q, q + ".wait", q + ".dlq", q + ".retry.1s"]
    delete_queues(qs)
finish()
