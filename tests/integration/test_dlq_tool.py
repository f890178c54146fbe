"""`warren dlq list|show|replay|purge` against the real broker and Redis.

A handler rejects every event whose body says "bad": true, so five such
events land in the DLQ. list and show must leave the DLQ as it was; the
filters narrow what they see; replay --dry-run changes nothing. Then the
handler is rewritten to accept everything (hot reload), and replay moves
one message, then the rest, back to the queue: each is handled once, with
its attempt count reset, its trace kept and its idempotency record ending
done/ok. purge refuses without --yes when stdin is not a terminal, and
deletes with it. Last, a replay whose copy cannot be routed (the queue is
gone) leaves the message in the DLQ and exits 1.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (ENV, WARREN, Broker, Warren, check, check_eq, finish, idem_record,  # noqa: E402
                    prefix, redis_client, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
dlq_queue = queue + ".dlq"
SUB = "dlqt"

HANDLER = r'''
local M = {}
function M.handle(event, ctx)
  if %s and type(event.data) == "table" and event.data.bad then
    return ctx.reject("bad event " .. event.id)
  end
  ctx.publish("", "%s", { input = event.id, attempt = ctx.attempt, trace = ctx.trace_id })
end
return M
'''
handler = os.path.join(tmp, "h.lua")
write(handler, HANDLER % ("true", out_queue))

b = Broker()
b.declare(out_queue)
w = Warren(tmp, [{"name": SUB, "queue": queue, "handler": "h.lua",
                  "retry": {"max_attempts": 1}}]).start()
check(w.wait_consuming(1), "warren consuming")


def dlq(*args, stdin=subprocess.DEVNULL):
    env = dict(os.environ)
    env.update(ENV)
    r = subprocess.run([WARREN, "dlq"] + list(args) + ["-c", w.config, "--subscription", SUB],
                       stdin=stdin, capture_output=True, env=env, timeout=60)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def dlq_json(*args):
    rc, out, err = dlq(*(list(args) + ["--json"]))
    try:
        return rc, json.loads(out), err
    except ValueError:
        check(False, "JSON from dlq %s (rc %d, out %r, err %r)" % (args[0], rc, out, err))
        return rc, None, err


ids = ["%s-%d" % (p, i) for i in range(5)]
for i, mid in enumerate(ids):
    body = json.dumps({"n": i, "bad": True, "note": "ünïcode"}, ensure_ascii=False)
    b.publish(queue, body, message_id=mid, type="order.created", headers={"tenant": "acme"})
b.publish(queue, {"n": 99}, message_id=p + "-good")
wait_for(lambda: b.depth(dlq_queue) >= 5, 30, "5 messages in the DLQ")
wait_for(lambda: b.depth(out_queue) >= 1, 30, "the good message handled")
check_eq(b.depth(dlq_queue), 5, "DLQ holds 5")
r = redis_client()
rec0 = idem_record(r, SUB, ids[0])
check_eq((rec0.get("state"), rec0.get("outcome")), ("done", "rejected"), "record before replay")

# --- list -----------------------------------------------------------------
rc, out, err = dlq("list")
lines = [ln for ln in out.splitlines() if ln.strip()]
check_eq(rc, 0, "list exits 0")
check_eq(len(lines), 5, "list shows 5 lines")
check(all("rejected" in ln and "attempts=1" in ln and queue in ln for ln in lines),
      "each line has reason, attempts and routing key: %r" % lines[:1])
check(all(any(mid in ln for ln in lines) for mid in ids), "every id listed")
check(any(("bad event " + ids[0]) in ln for ln in lines), "the error is shown")
check_eq(b.depth(dlq_queue), 5, "the DLQ still holds 5 after list")

rc, arr, _ = dlq_json("list")
check_eq(rc, 0, "list --json exits 0")
if check(isinstance(arr, list) and len(arr) == 5, "list --json: 5 entries"):
    e = [x for x in arr if x["message_id"] == ids[0]][0]
    check_eq((e["reason"], e["error_class"], e["attempts"], e["original_routing_key"]),
             ("rejected", "rejected", 1, queue), "list --json entry")
    check(e["last_failure"].endswith("Z"), "last failure is ISO-8601 UTC")

# --- filters ------------------------------------------------------------------
rc, arr, _ = dlq_json("list", "--id", ids[2])
check(arr is not None and [x["message_id"] for x in arr] == [ids[2]], "--id selects one")
rc, arr, _ = dlq_json("list", "--reason", "rejected")
check(arr is not None and len(arr) == 5, "--reason rejected: 5")
rc, arr, _ = dlq_json("list", "--reason", "handler-error")
check(arr == [], "--reason handler-error: none")
rc, arr, _ = dlq_json("list", "--limit", "2")
check(arr is not None and len(arr) == 2, "--limit 2: 2")
rc, arr, _ = dlq_json("list", "--grep", "bad event " + ids[3])
check(arr is not None and [x["message_id"] for x in arr] == [ids[3]], "--grep on the error")
rc, arr, _ = dlq_json("list", "--older-than", "1h")
check(arr == [], "--older-than 1h: none")
rc, arr, _ = dlq_json("list", "--older-than", "0s")
check(arr is not None and len(arr) == 5, "--older-than 0s: all")
rc, _, err = dlq("list", "--limit", "x")
check_eq(rc, 2, "a bad --limit is a usage error")
check_eq(b.depth(dlq_queue), 5, "the DLQ still holds 5 after the filters")

# --- show -----------------------------------------------------------------
rc, out, err = dlq("show", ids[1])
check_eq(rc, 0, "show exits 0")
for want in ("message_id: " + ids[1], "type: order.created", "x-warren-reason: rejected",
             "x-warren-error-class: rejected", "x-warren-attempt: 1", "x-warren-errors:",
             "[1] bad event " + ids[1], "tenant: acme", "x-warren-original-routing-key: " + queue,
             '"bad": true', "ünïcode"):
    check(want in out, "show prints %r" % want)
rc, obj, _ = dlq_json("show", ids[1])
trace1 = None
if check(isinstance(obj, dict), "show --json is an object"):
    check_eq(obj["headers"].get("x-warren-reason"), "rejected", "show --json header")
    check_eq(obj["properties"].get("message_id"), ids[1], "show --json message_id")
    check_eq(json.loads(obj["body"])["n"], 1, "show --json body")
rc, obj0, _ = dlq_json("show", ids[0])
trace0 = obj0["headers"].get("x-warren-trace-id") if obj0 else None
check(trace0 is not None and len(trace0) == 32, "the DLQ copy has a trace id")
rc, out, err = dlq("show", p + "-nope")
check_eq(rc, 1, "show of an unknown id exits 1")
check_eq(b.depth(dlq_queue), 5, "the DLQ still holds 5 after show")

# --- replay --dry-run ---------------------------------------------------------
rc, out, err = dlq("replay", "--dry-run")
check_eq(rc, 0, "replay --dry-run exits 0")
check(out.count("would replay") == 5 and "would be reset" in out, "dry run lists 5: %r" % out[:300])
check_eq(b.depth(dlq_queue), 5, "dry run: the DLQ still holds 5")
check_eq(idem_record(r, SUB, ids[0]).get("outcome"), "rejected", "dry run: record untouched")
check_eq(b.depth(out_queue), 1, "dry run: nothing handled")
b.drain(out_queue)

# --- replay one, after the handler learns to accept ------------------------------
write(handler, HANDLER % ("false", out_queue))
wait_for(lambda: w.lines(msg="handler reloaded"), 15, "the handler reload")
# the worker switches at its next batch: send good probes until one runs the new version
reloads = w.lines(msg="handler reloaded")
new_version = reloads[-1]["version"] if reloads else None
probes = [0]


def probe_on_new_version():
    probes[0] += 1
    b.publish(queue, {"probe": probes[0]}, message_id="%s-probe-%d" % (p, probes[0]))
    time.sleep(0.2)
    return any(ln.get("handler_version") == new_version for ln in w.lines(msg="message handled"))


wait_for(probe_on_new_version, 15, "a probe handled by the new handler", interval=0.1)
wait_for(lambda: b.depth(queue) == 0, 10, "the probes handled")
time.sleep(0.3)
b.drain(out_queue)
rc, out, err = dlq("replay", "--id", ids[0])
check_eq(rc, 0, "replay --id exits 0 (%s)" % err.strip())
check("replayed 1 of 1" in out, "replay reports 1: %r" % out)
wait_for(lambda: b.depth(out_queue) >= 1, 20, "the replayed message handled")
check_eq(b.depth(dlq_queue), 4, "the DLQ holds 4 after one replay")
outs = [json.loads(body) for _, body in b.drain(out_queue)]
mine = [o for o in outs if o["input"] == ids[0]]
if check_eq(len(mine), 1, "the replayed message handled once"):
    check_eq(mine[0]["attempt"], 1, "attempt count reset")
    check_eq(mine[0]["trace"], trace0, "trace kept")
wait_for(lambda: idem_record(r, SUB, ids[0]).get("outcome") == "ok", 10, "record ok")
rec0 = idem_record(r, SUB, ids[0])
check_eq((rec0.get("state"), rec0.get("outcome")), ("done", "ok"), "record after replay")
replayed = [ln for ln in w.lines(msg="message handled") if ln.get("message_id") == ids[0]]
check_eq(len(replayed), 1, "warren logged the replayed message as handled")

# --- replay the rest ----------------------------------------------------------
rc, out, err = dlq("replay", "--rate", "20/s")
check_eq(rc, 0, "replay of the rest exits 0 (%s)" % err.strip())
check("replayed 4 of 4" in out, "replay reports 4: %r" % out[-200:])
wait_for(lambda: b.depth(out_queue) >= 4, 20, "4 more handled")
check_eq(b.depth(dlq_queue), 0, "the DLQ is empty")
got = sorted(json.loads(body)["input"] for _, body in b.drain(out_queue))
check_eq(got, sorted(ids[1:]), "the other 4 handled once each")
for mid in ids[1:]:
    wait_for(lambda: idem_record(r, SUB, mid).get("outcome") == "ok", 10, "record of %s ok" % mid)

# --- purge --------------------------------------------------------------------
for i in range(3):
    b.publish(dlq_queue, {"n": i}, message_id="%s-purge-%d" % (p, i),
              headers={"x-warren-reason": "handler-error" if i == 0 else "timeout"})
wait_for(lambda: b.depth(dlq_queue) == 3, 10, "3 messages to purge")
rc, out, err = dlq("purge")
check_eq(rc, 1, "purge without --yes and no tty exits 1")
check("--yes" in err, "purge says to pass --yes: %r" % err)
check_eq(b.depth(dlq_queue), 3, "nothing purged without --yes")
rc, out, err = dlq("purge", "--reason", "handler-error", "--yes")
check_eq(rc, 0, "purge --reason --yes exits 0")
check("purged 1" in out, "purge reports 1: %r" % out)
check_eq(b.depth(dlq_queue), 2, "2 left")
rc, obj, _ = dlq_json("purge", "--yes")
check(obj is not None and obj.get("purged") == 2, "purge --yes --json: 2")
check_eq(b.depth(dlq_queue), 0, "the DLQ is empty after purge")

# --- a copy that cannot be routed stays in the DLQ --------------------------------
check_eq(w.stop(), 0, "warren stops cleanly")
b.publish(dlq_queue, {"n": 7}, message_id=p + "-lost", headers={"x-warren-reason": "rejected"})
wait_for(lambda: b.depth(dlq_queue) == 1, 10, "1 message in the DLQ")
b.delete(queue)
rc, out, err = dlq("replay")
check_eq(rc, 1, "replay with no queue to go to exits 1")
check("not replayed" in out + err, "it says so: %r %r" % (out, err))
check_eq(b.depth(dlq_queue), 1, "the message is still in the DLQ")

b.delete(dlq_queue, out_queue)
b.close()
finish()
