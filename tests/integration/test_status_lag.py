"""`warren status`: consumer lag, and what is in each DLQ now; `warren dlq list`
without --subscription, against the real broker and Redis.

1. Lag. `lag` (one worker, prefetch 1) holds its first message at a gate (an
   HTTP service of the test's own) while 20 more wait, every one published
   with an AMQP timestamp 100 s old. Status (JSON and text) says: 20 ready,
   1 held, the oldest waiting at most ~100 s old, and "stuck: 20 waiting,
   none finished in the last N s". With the gate open the queue drains: status
   says "caught up", and the rates times the window they span count the 21
   messages the test published and the 21 the handler ran (counted here, not
   from warren's figures).
2. The DLQ now. `lag` rejects two messages, `other` one message with a body
   that is not JSON. `warren status -c FILE` shows, per subscription, what is
   in its DLQ now by reason with the same numbers as `warren dlq list
   --group-by reason --json`, beside the copies since start; after `dlq purge`
   the DLQ-now figure is empty while the since-start one stays.
3. `warren dlq list -c FILE` without --subscription lists every
   subscription's DLQ, grouped by subscription (text and --json).
"""
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pika

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (ENV, GATE_LUA, WARREN, Broker, Gate, Warren, check, check_eq,  # noqa: E402
                    delete_queues, finish, prefix, tempdir, wait_for, write)

ran = set()  # the message ids the handler ran for, as it told this server


class Ran(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ran.add(self.path.rsplit("/", 1)[-1])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Ran)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()

p = prefix()
tmp = tempdir()
gate = Gate()
qlag, qother = p + ".lag", p + ".other"
write(os.path.join(tmp, "lag.lua"), GATE_LUA + r'''
local M = {}
function M.handle(event, ctx)
  if event.data.gate then gate(ctx, "%s", event.data.gate) end
  if event.data.reject then return ctx.reject("declined: " .. event.data.reject) end
  ctx.http.request{ method = "POST", url = "http://127.0.0.1:%d/ran/" .. event.id }
end
return M
''' % (gate.url, server.server_address[1]))
write(os.path.join(tmp, "other.lua"), "return { handle = function(event, ctx) end }\n")
subs = [{"name": "lag", "queue": qlag, "handler": "lag.lua", "handler_timeout": "60s",
         "prefetch": 1, "batch_size": 1, "concurrency": 1},
        {"name": "other", "queue": qother, "handler": "other.lua"}]
w = Warren(tmp, subs)
b = Broker()
env = dict(os.environ)
env.update(ENV)


def status():
    code, body = w.get("/status")
    if code != 200:
        check_eq(code, 200, "/status answers 200")
    return json.loads(body)


def lag_of(st, name="lag"):
    return [s for s in st["subscriptions"] if s["name"] == name][0]["lag"]


def run(*args):
    r = subprocess.run([WARREN] + list(args), capture_output=True, env=env, timeout=60)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def publish_at(queue, body, message_id, ts):
    """Publish with an AMQP timestamp (seconds) of the test's choosing."""
    b.ch.basic_publish(exchange="", routing_key=queue, body=json.dumps(body).encode(),
                       properties=pika.BasicProperties(message_id=message_id,
                                                       content_type="application/json",
                                                       delivery_mode=2, timestamp=ts),
                       mandatory=True)


def ran_count():
    return sum(1 for k in range(21) if "%s-m%d" % (p, k) in ran)


def cli(*args):
    """warren status with the config (for the DLQs) and the sidecar's URL (its port is
    chosen at start)."""
    return run("status", "-c", w.config, "--url",
               "http://127.0.0.1:%d/status" % w.http_port(), *args)


try:
    w.start()
    check(w.wait_consuming(2), "warren consumes")
    # two readings of the queue before the first message: the rates count them all
    check(wait_for(lambda: lag_of(status())["window_s"] > 0, 20, "two readings"),
          "status has read the queue twice")
    # 1. lag: one held at the gate, 20 waiting behind it, all 100 s old
    old = int(time.time()) - 100
    publish_at(qlag, {"gate": "g"}, p + "-m0", old)
    check(gate.wait("g", 20, "the first message at its gate"), "the first message is held")
    for k in range(1, 21):
        publish_at(qlag, {"n": k}, "%s-m%d" % (p, k), old)
    t_pub = time.time()
    check(wait_for(lambda: lag_of(status())["verdict"].startswith("stuck: "), 20,
                   "status to say stuck"), "status: the queue is stuck")
    lg = lag_of(status())
    print("  lag while held: %r" % lg, flush=True)
    check_eq((lg["ready"], lg["held"]), (20, 1), "lag: 20 ready, 1 held by the worker")
    age = lg["oldest_waiting_at_most_s"]
    check(age is not None and 99 <= age <= 100 + (time.time() - t_pub) + 2,
          "lag: the oldest waiting at most ~100 s old (the timestamps): %r" % age)
    check(lg["verdict"].startswith("stuck: 20 waiting, none finished in the last "),
          "lag verdict: %r" % lg["verdict"])
    check(lg["out_per_s"] == 0 and lg["in_per_s"] > 0, "lag: messages in, none out: %r" % lg)
    rc, out, err = cli("--no-dlq")
    print(out, flush=True)
    check(rc == 0 and "  lag: 20 ready, 1 held; oldest waiting at most " in out and
          "    stuck: 20 waiting, none finished in the last " in out,
          "warren status (text) shows the lag: %r" % out)
    # the gate opens: the queue drains
    gate.open("g")
    check(wait_for(lambda: ran_count() == 21, 30, "the 21 handled"), "every message ran")
    check(wait_for(lambda: lag_of(status())["verdict"] == "caught up: nothing waiting", 20,
                   "caught up"), "status: caught up")
    lg = lag_of(status())
    print("  lag drained: %r" % lg, flush=True)
    check_eq(lg["oldest_waiting_at_most_s"], 0, "nothing waits: age 0")
    # the readings span the whole run (under a minute): the rates count every message
    check_eq(round(lg["in_per_s"] * lg["window_s"]), 21, "in x window = the 21 published")
    check_eq(round(lg["out_per_s"] * lg["window_s"]), 21, "out x window = the 21 that ran")

    # 2. the DLQ now, by reason, beside the copies since start
    for k in range(2):
        b.publish(qlag, {"reject": "card expired"}, message_id="%s-rej-%d" % (p, k))
    b.publish(qother, "not json {", message_id=p + "-bad-0")
    check(wait_for(lambda: b.depth(qlag + ".dlq") == 2 and b.depth(qother + ".dlq") == 1, 20,
                   "the DLQ copies"), "2 rejections and 1 invalid body in the DLQs")
    rc, out, err = cli("--json")
    check_eq(rc, 0, "warren status -c --json exits 0")
    st = json.loads(out)
    for name in ("lag", "other"):
        s = [x for x in st["subscriptions"] if x["name"] == name][0]
        rc, gout, gerr = run("dlq", "list", "-c", w.config, "--subscription", name,
                             "--group-by", "reason", "--json")
        want = {row["reason"]: {"ids": row["ids"], "messages": row["messages"]}
                for row in json.loads(gout)}
        check_eq(s["dlq_now_by_reason"], want,
                 "%s: the DLQ now by reason = dlq list --group-by reason" % name)
    check_eq(lag_of(st, "lag") is not None, True, "lag in the CLI's JSON")
    check_eq([x for x in st["subscriptions"] if x["name"] == "lag"][0]["dlq_now_by_reason"],
             {"rejected": {"ids": 2, "messages": 2}}, "lag's DLQ now: the 2 rejections")
    check_eq([x for x in st["subscriptions"] if x["name"] == "other"][0]["dlq_now_by_reason"],
             {"invalid-json": {"ids": 1, "messages": 1}}, "other's DLQ now: the bad body")
    rc, out, err = run("dlq", "purge", "-c", w.config, "--subscription", "lag", "--yes")
    check_eq(rc, 0, "dlq purge lag")
    rc, out, err = cli()
    print(out, flush=True)
    check("  in the DLQ now (by reason, ids/messages): empty\n"
          "  dead-lettered since start (copies): rejected 2\n" in out,
          "after the purge: the DLQ now is empty, since start still 2: %r" % out)
    check("  in the DLQ now (by reason, ids/messages): invalid-json 1/1\n" in out,
          "other's DLQ now in the text: %r" % out)
    rc, out, err = run("status", "--url", "http://127.0.0.1:%d/status" % w.http_port())
    check("  in the DLQ now: not read (give -c FILE to read the DLQs)\n" in out,
          "--url alone: the DLQ not read, and it says so")

    # 3. dlq list without --subscription: every DLQ, grouped by subscription
    publish_at(qlag, {"reject": "stolen"}, p + "-rej-9", int(time.time()))
    check(wait_for(lambda: b.depth(qlag + ".dlq") == 1, 20, "a new rejection"), "one more")
    rc, out, err = run("dlq", "list", "-c", w.config)
    print(out, flush=True)
    check_eq(rc, 0, "dlq list without --subscription exits 0: %s" % err)
    lag_at, other_at = out.find("lag (%s.dlq):\n" % qlag), out.find("other (%s.dlq):\n" % qother)
    check(0 <= lag_at < out.find(p + "-rej-9") < other_at < out.find(p + "-bad-0"),
          "each DLQ under its subscription's name: %r" % out)
    rc, out, err = run("dlq", "list", "-c", w.config, "--json")
    check_eq(rc, 0, "dlq list --json without --subscription exits 0")
    by = json.loads(out)
    check_eq(sorted(by), ["lag", "other"], "--json: an object by subscription")
    check_eq([m["message_id"] for m in by["lag"]], [p + "-rej-9"], "--json: lag's DLQ")
    check_eq([m["message_id"] for m in by["other"]], [p + "-bad-0"], "--json: other's DLQ")
    rc, out, err = run("dlq", "list", "-c", w.config, "--group-by", "reason", "--json")
    check_eq(json.loads(out) if rc == 0 else None,
             {"lag": [{"reason": "rejected", "ids": 1, "messages": 1}],
              "other": [{"reason": "invalid-json", "ids": 1, "messages": 1}]},
             "--group-by reason without --subscription")
    rc, out, err = run("dlq", "show", p + "-bad-0", "-c", w.config)
    check_eq(rc, 2, "dlq show still needs --subscription")

    # 4. a DLQ bigger than --dlq-max: status reads the first N messages and says so
    bulk = b.conn.channel()  # no publisher confirms: fast; the depth is checked below
    for k in range(60):
        bulk.basic_publish(exchange="", routing_key=qother + ".dlq", body=b"{}",
                           properties=pika.BasicProperties(
                               message_id="%s-big-%d" % (p, k), delivery_mode=2,
                               headers={"x-warren-reason": "handler-error"}))
    check(wait_for(lambda: b.depth(qother + ".dlq") == 61, 30, "the DLQ of 61"), "61 held")
    rc, out, err = cli("--json", "--dlq-max", "50")
    s = [x for x in json.loads(out)["subscriptions"] if x["name"] == "other"][0]
    check_eq(s.get("dlq_now_partial"), {"read": 50, "held": 61},
             "status says it read the first 50 of the 61")
    check_eq(sum(v["messages"] for v in s["dlq_now_by_reason"].values()), 50,
             "and counts those 50")
    # what status held unacked goes back when it disconnects (the broker takes a moment)
    check(wait_for(lambda: b.depth(qother + ".dlq") == 61, 60, "the DLQ back"),
          "status left the DLQ as it was")
    rc, out, err = cli("--dlq-max", "50")
    check("(the first 50 of 61 messages: dlq list --group-by reason counts them all)"
          in out, "the text says so too: %r" % out[-600:])
    rc, out, err = cli("--dlq-max", "0")
    check(rc == 2 and "--dlq-max needs a count from 1 to 1000000" in err,
          "--dlq-max 0: a usage error: %r" % err)
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    gate.close()
    server.shutdown()
    if w.alive():
        w.stop()
    b.close()
    qs = []
    for q in (qlag, qother):
        qs += [q, q + ".wait", q + ".dlq"] + [q + ".retry." + d for d in ("1s", "5s", "30s", "2m")]
    delete_queues(qs)
finish()
