"""`warren trace` and the per-event journal, against the real broker and Redis.

The handler's effect is a call to a small HTTP service run by this test: the
service answers 503 (the handler raises: a retryable failure) until the
event's group flag is set in Redis, and once it is, counts the effect with
INCR in Redis and answers 200. So "how many times did the effect happen" is
measured in Redis, not assumed.

1. A failing event goes through its retries to the DLQ: `warren trace --json`
   shows received, each failed attempt with its error and delay tier, the
   dead-lettering, the trace id the producer sent, the handler version, and
   "where: dlq" with the replay command to run. The flag is set, the event is
   replayed with `warren dlq replay`, and the trace shows replayed, then ok,
   and "where: done"; the effect happened once.
2. An old DLQ copy of that event (already done) is replayed: the journal shows
   the replay skipped as a duplicate and the effect is not run again.
3. 200 failed events in the DLQ are replayed at a limited rate, RabbitMQ is
   stopped in the middle (the replay exits 1 by itself) and started again, and
   one more replay run (exit 0) empties the DLQ: every effect happened exactly
   once, nothing is left in the DLQ or the queue, and every journal ends done.
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
from wrtest import (ENV, WARREN, Broker, Warren, check, check_eq, delete_queues, depth,  # noqa: E402
                    finish, prefix, redis_client, stack, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
r = redis_client()
queue = p + ".in"
dlq_queue = queue + ".dlq"
SUB = "tr"
N3 = 200


def flag_key(event_id):
    return "%s:flag:%s" % (p, event_id.rsplit("-", 1)[0])


def effects_key(event_id):
    return "%s:effects:%s" % (p, event_id)


class Service(BaseHTTPRequestHandler):
    """The handler's downstream: 503 until the event's group flag is set, then INCR."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        key = self.headers.get("Idempotency-Key")
        rc = redis_client()
        if rc.get(flag_key(key)):
            rc.incr(effects_key(key))
            status = 200
        else:
            status = 503
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
threading.Thread(target=server.serve_forever, daemon=True).start()

write(os.path.join(tmp, "effect.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local res, err = ctx.http.request{
    method = "POST", url = "http://127.0.0.1:%d/effect",
    headers = { ["Idempotency-Key"] = ctx.idempotency_key }, timeout = 2, raise = false,
  }
  if not res or res.status ~= 200 then
    error("effect refused: " .. tostring(res and res.status or err))
  end
end
return M
''' % server.server_address[1])

# no breaker: a run of failures must not pause consumption (part 3 fails 200 in a row)
sub = {"name": SUB, "queue": queue, "handler": "effect.lua", "breaker": {"enabled": False},
       "retry": {"max_attempts": 3, "delays": ["300ms", "600ms"]}}
w = Warren(tmp, [sub], extra="journal:\n  ttl: 1h\n  max_entries: 30\n")


def run(*args, timeout=120):
    env = dict(os.environ)
    env.update(ENV)
    res = subprocess.run([WARREN] + list(args), capture_output=True, env=env, timeout=timeout)
    return res.returncode, res.stdout.decode("utf-8", "replace"), res.stderr.decode("utf-8", "replace")


def trace_json(event_id):
    rc, out, err = run("trace", "-c", w.config, event_id, "--json")
    try:
        obj = json.loads(out)
    except ValueError:
        check(False, "trace --json of %s is JSON (rc %d, out %r, err %r)" % (event_id, rc, out, err))
        return rc, None
    return rc, obj["stories"][0] if obj.get("stories") else None


def events(story):
    return [e["event"] for e in story["entries"]] if story else []


def where(story):
    return story["where"]["state"] if story else None


def effects(event_id):
    return int(r.get(effects_key(event_id)) or 0)


def replay(*args):
    return run("dlq", "replay", "-c", w.config, "--subscription", SUB, *args)


b = Broker()
try:
    w.start()
    check(w.wait_consuming(1), "warren consuming")

    # --- 1. a failed event, traced end to end, replayed, done ------------------------
    e1 = p + "-one-1"
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    b.publish(queue, {"n": 1}, message_id=e1, type="order.created",
              headers={"traceparent": "00-%s-00f067aa0ba902b7-01" % tid})
    wait_for(lambda: b.depth(dlq_queue) >= 1, 30, "e1 in the DLQ")
    rc, st = trace_json(e1)
    check_eq(rc, 0, "trace of a dead-lettered event exits 0")
    check_eq(events(st), ["received", "retried", "retried", "dead-lettered"], "e1's journal")
    if st:
        ent = st["entries"]
        check_eq([e.get("attempt") for e in ent[1:]], [1, 2, 3], "attempts 1, 2, 3")
        check(all("effect refused: 503" in e.get("error", "") for e in ent[1:]),
              "every failed attempt has its error: %r" % ent[1].get("error"))
        check_eq([e.get("queue") for e in ent[1:3]], [queue + ".retry.300ms", queue + ".retry.600ms"],
                 "the delay tiers")
        check_eq([e.get("delay_ms") for e in ent[1:3]], [300, 600], "the delays")
        check_eq(ent[3].get("queue"), dlq_queue, "dead-lettered to the DLQ")
        check_eq(ent[0].get("type"), "order.created", "received with its type")
        check_eq(st["trace_id"], tid, "the producer's trace id")
        logged = {ln.get("handler_version") for ln in w.lines(message_id=e1) if ln.get("handler_version")}
        check(len(logged) == 1 and st["handler_versions"] == sorted(logged),
              "the handler version that saw it: %r (log %r)" % (st["handler_versions"], logged))
        check_eq(where(st), "dlq", "where: dlq")
        check(("warren dlq replay -c %s --subscription %s --id %s" % (w.config, SUB, e1))
              in st["next"], "the replay command is suggested: %r" % st["next"])
        check_eq((st["record"] or {}).get("outcome"), "dead-lettered", "record dead-lettered")
    rc, out, err = run("trace", "-c", w.config, e1)
    check_eq(rc, 0, "trace (text) exits 0")
    for want in ("event %s in subscription %s" % (e1, SUB), "trace id  " + tid,
                 "attempt 1 failed: handler-error", "retry in 300 ms via %s.retry.300ms" % queue,
                 "attempt 3 failed for good", "\nwhere: dlq - in the DLQ " + dlq_queue,
                 "next:  warren dlq show -c %s --subscription %s %s" % (w.config, SUB, e1)):
        check(want in out, "trace text has %r" % want)
    check_eq(effects(e1), 0, "no effect yet")

    r.set(flag_key(e1), "1")
    rc, out, err = replay("--id", e1)
    check_eq(rc, 0, "replay of e1 exits 0 (%s)" % err.strip())
    wait_for(lambda: where(trace_json(e1)[1]) == "done", 20, "e1 done after the replay")
    rc, st = trace_json(e1)
    check_eq(events(st)[4:], ["replayed", "received", "ok"], "replayed, then received and ok")
    if st and len(st["entries"]) >= 7:
        check_eq(st["entries"][4].get("queue"), queue, "replayed into the queue")
        check(st["entries"][5].get("replay") is True, "the copy is marked as a replay")
    check_eq(st and st["trace_id"], tid, "the trace id is kept through the replay")
    check_eq((st and st["record"] or {}).get("outcome"), "ok", "record ok")
    rc, out, err = run("trace", "-c", w.config, e1)
    check("\nwhere: done - done: handled ok" in out, "trace text says done: %r" % out[-300:])
    check("next:  nothing to do" in out, "nothing to do next")
    check_eq(effects(e1), 1, "the effect happened once")
    check_eq(b.depth(dlq_queue), 0, "the DLQ is empty")

    # --- 2. an old DLQ copy of a done event: a duplicate, not re-run --------------------
    b.publish(dlq_queue, {"n": 1}, message_id=e1, type="order.created",
              headers={"x-warren-reason": "handler-error", "x-warren-trace-id": tid,
                       "x-warren-attempt": 3})
    wait_for(lambda: b.depth(dlq_queue) == 1, 10, "the old copy in the DLQ")
    rc, out, err = replay("--id", e1)
    check_eq(rc, 0, "replay of the old copy exits 0")
    check("kept (outcome ok" in out, "replay keeps the done record: %r" % out)
    wait_for(lambda: events(trace_json(e1)[1])[-1:] == ["duplicate"], 20, "the duplicate journaled")
    rc, st = trace_json(e1)
    check_eq(events(st)[-2:], ["replayed", "duplicate"], "replayed, then duplicate")
    check(st is not None and st["entries"][-1].get("replay") is True, "the duplicate was the replay")
    check_eq(where(st), "done", "still done")
    rc, out, err = run("trace", "-c", w.config, e1)
    check("replayed, skipped as duplicate (already done)" in out, "text: skipped as duplicate")
    time.sleep(1)
    check_eq(effects(e1), 1, "the effect did not happen again")
    check_eq(b.depth(queue), 0, "nothing left in the queue")

    # the journal's cost and health are on /metrics: a write per batch with steps
    # to journal (e1's two retries and the replay's duplicate at least; a step that
    # ends in a done record is kept in the record), no failure
    mt = w.metrics()
    jcalls = w.metric(mt, "warren_redis_call_duration_seconds_count", subscription=SUB,
                      call="journal")
    check(jcalls is not None and jcalls >= 3, "journal writes on /metrics: %r" % jcalls)
    check_eq(w.metric(mt, "warren_journal_write_failures_total", subscription=SUB), 0,
             "no journal write failed")
    check_eq(w.lines(msg="journal entries not written"), [], "no journal failure logged")

    # not found: exit 1 with a message
    rc, out, err = run("trace", "-c", w.config, p + "-never")
    check_eq(rc, 1, "trace of an unknown id exits 1")
    check("not found" in err, "it says so: %r" % err)
    rc, out, err = run("trace", "-c", w.config, e1, "--subscription", "nope")
    check_eq(rc, 2, "an unknown subscription is a usage error")

    # --- 3. replay with a broker restart in the middle -------------------------------
    ids = ["%s-many-%03d" % (p, i) for i in range(N3)]
    check_eq(w.stop(), 0, "the first warren exits 0")
    w2 = Warren(tmp, [dict(sub, retry={"max_attempts": 1, "delays": ["300ms", "600ms"]})], name="w2",
                extra="journal:\n  ttl: 1h\n")
    w2.start()
    check(w2.wait_consuming(1), "warren (max_attempts 1) consuming")
    for i, mid in enumerate(ids):
        b.publish(queue, {"n": i}, message_id=mid)
    wait_for(lambda: b.depth(dlq_queue) >= N3, 60, "%d events in the DLQ" % N3)
    check_eq(b.depth(dlq_queue), N3, "the DLQ holds all of them")
    check_eq(sum(effects(m) for m in ids), 0, "no effect yet")
    r.set(flag_key(ids[0]), "1")
    b.close()

    env = dict(os.environ)
    env.update(ENV)
    first = subprocess.Popen([WARREN, "dlq", "replay", "-c", w2.config, "--subscription", SUB,
                              "--rate", "10/s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env)
    # 10/s: 20 s for the 200, longer than `stack.sh stop-rabbit` takes on a
    # loaded machine (rabbitmqctl's own VM starts first; 12 s seen), so the
    # broker goes away mid-replay (at 40/s the replay was over first)
    time.sleep(1.5)
    check_eq(stack("stop-rabbit"), 0, "stack.sh stop-rabbit")
    try:
        out, err = first.communicate(timeout=60)
        hung = False
    except subprocess.TimeoutExpired:
        first.kill()
        out, err = first.communicate()
        hung = True
    check(not hung, "the interrupted replay ends by itself (not killed after 60 s)")
    out = out.decode("utf-8", "replace")
    done_before = out.count(": replayed\n")
    print("  first replay: exit %s, %d replayed before the broker went away" %
          (first.returncode, done_before), flush=True)
    check(0 < done_before < N3, "the broker went away mid-replay (%d of %d)" % (done_before, N3))
    # README, warren dlq: exit 1 on a failure (a message not replayed, the broker unreachable)
    check_eq(first.returncode, 1, "the interrupted replay exits 1 (%s)"
             % err.decode("utf-8", "replace").strip()[-300:])
    check_eq(stack("start-rabbit"), 0, "stack.sh start-rabbit")
    check(wait_for(lambda: len(w2.lines(msg="consuming")) >= 2, 60, "warren consuming again"),
          "warren reconnected")

    b = Broker()
    left = depth(b, dlq_queue)
    check(left and left >= N3 - done_before, "the DLQ holds what was not replayed (%r)" % left)
    # one run replays the rest: every message it takes out, it replays
    rc, out, err = replay("--rate", "200/s")
    print("  second replay: exit %d, %s" % (rc, out.strip().splitlines()[-1:]), flush=True)
    check_eq(rc, 0, "the second replay exits 0 (%s)" % err.strip()[-300:])
    check_eq(depth(b, dlq_queue), 0, "the DLQ is empty after that one run")
    wait_for(lambda: sum(1 for m in ids if effects(m) >= 1) == N3 and depth(b, queue) == 0, 60,
             "every effect")
    time.sleep(1)
    counts = [effects(m) for m in ids]
    check_eq(sum(1 for c in counts if c == 1), N3, "every effect happened exactly once")
    check_eq([m for m, c in zip(ids, counts) if c != 1], [], "none missing, none twice")
    check_eq(depth(b, queue), 0, "nothing left in the queue")
    check_eq(depth(b, dlq_queue), 0, "nothing left in the DLQ")

    # every journey, as `warren trace` tells it: dead-lettered, replayed (at least once),
    # then handled ok exactly once, and done now
    bad = []
    for m in ids:
        rc, st = trace_json(m)
        evs = events(st)
        ok_at = evs.index("ok") if "ok" in evs else -1
        if (rc != 0 or where(st) != "done" or evs.count("ok") != 1 or "dead-lettered" not in evs
                or "replayed" not in evs[:ok_at]):
            bad.append((m, rc, where(st), evs))
    check_eq(bad[:3], [], "every journey: dead-lettered, replayed, ok once, done (%d bad)" % len(bad))
    check_eq(w2.stop(), 0, "warren stops cleanly")
except Exception:
    traceback.print_exc()
    check(False, "the test ran to the end")
finally:
    if stack("status") != 0:
        stack("start-rabbit")
    b.close()
    delete_queues([queue, dlq_queue, queue + ".retry.300ms", queue + ".retry.600ms",
                   queue + ".wait"])
finish()
