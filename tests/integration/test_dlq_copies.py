"""`warren dlq` with several copies of one message in the DLQ.

A crash between a confirmed DLQ copy and its idempotency record leaves the
message undone: redelivered, it is dead-lettered again, and the DLQ holds two
copies with the same message_id (seen 1-3 times in 20 kill -9s). This test
makes such copies the same way, without the crash: a handler rejects every
event whose body says "bad": true; after its DLQ copy, the event's record is
deleted from Redis (as if the crash had come before it was written) and the
same message is published again, so warren dead-letters it once more.

The DLQ then holds A three times, B twice and C once, interleaved (A B C A A
B). The commands must work per message id:
- list shows one row per id with its copy count (also with --limit, whose
  rows count copies found after the limit was reached) and leaves the DLQ as
  it was; show names the copy count;
- replay --dry-run changes nothing and says every copy would go;
- replay --id A sends A back once (the handler accepts a replayed copy) and
  removes all three copies: A is handled exactly once, its record ends
  done/ok;
- purge --id B removes both copies of B and nothing else;
- a replay of the rest replays C; the DLQ ends empty.
"""
import json
import os
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (ENV, WARREN, Broker, Warren, check, check_eq, delete_queues,  # noqa: E402
                    finish, idem_record, prefix, redis_client, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
dlq_queue = queue + ".dlq"
SUB = "dlqc"

write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  -- a replayed copy (warren dlq replay adds x-warren-replay-count) is accepted
  if type(event.data) == "table" and event.data.bad and
     event.headers["x-warren-replay-count"] == nil then
    return ctx.reject("bad event " .. event.id)
  end
  ctx.publish("", "%s", { input = event.id })
end
return M
''' % out_queue)

b = Broker()
r = redis_client()
w = Warren(tmp, [{"name": SUB, "queue": queue, "handler": "h.lua",
                  "retry": {"max_attempts": 1}}])


def dlq(*args, stdin=subprocess.DEVNULL):
    env = dict(os.environ)
    env.update(ENV)
    res = subprocess.run([WARREN, "dlq"] + list(args) + ["-c", w.config, "--subscription", SUB],
                         stdin=stdin, capture_output=True, env=env, timeout=60)
    return res.returncode, res.stdout.decode("utf-8", "replace"), \
        res.stderr.decode("utf-8", "replace")


def dlq_json(*args):
    rc, out, err = dlq(*(list(args) + ["--json"]))
    try:
        return rc, json.loads(out), err
    except ValueError:
        check(False, "JSON from dlq %s (rc %d, out %r, err %r)" % (args[0], rc, out, err))
        return rc, None, err


A, B, C = p + "-a", p + "-b", p + "-c"
try:
    b.declare(out_queue)
    w.start()
    check(w.wait_consuming(1), "warren consuming")

    def dead_letter(mid, n):
        """Publish MID, wait for its DLQ copy number N (the DLQ's depth)."""
        if idem_record(r, SUB, mid):
            r.delete("warren:idem:%s:%s" % (SUB, mid))   # the record a crash did not write
        b.publish(queue, {"bad": True, "id": mid}, message_id=mid)
        wait_for(lambda: b.depth(dlq_queue) >= n, 20, "DLQ copy %d (%s)" % (n, mid))

    for n, mid in enumerate((A, B, C, A, A, B), 1):
        dead_letter(mid, n)
    check_eq(b.depth(dlq_queue), 6, "the DLQ holds 6 messages: A x3, B x2, C x1")

    # --- list: one row per id ----------------------------------------------------
    rc, out, err = dlq("list")
    rows = [ln for ln in out.splitlines() if ln.strip()]
    check_eq(rc, 0, "list exits 0")
    check_eq(len(rows), 3, "list shows 3 rows for 6 messages")
    for mid, copies in ((A, 3), (B, 2), (C, 1)):
        mine = [ln for ln in rows if ln.startswith(mid + " ")]
        check(len(mine) == 1 and ("copies=%d" % copies) in mine[0],
              "one row for %s with copies=%d: %r" % (mid[-1], copies, mine))
    check("3 id(s) listed (6 message(s))" in err, "list says 3 ids, 6 messages: %r" % err)
    rc, arr, _ = dlq_json("list")
    check_eq(sorted((x["message_id"], x["copies"]) for x in arr or []),
             sorted([(A, 3), (B, 2), (C, 1)]), "list --json: id and copies")
    rc, arr, _ = dlq_json("list", "--limit", "2")
    check_eq([(x["message_id"], x["copies"]) for x in arr or []], [(A, 3), (B, 2)],
             "list --limit 2: the first two ids, copies counted past the limit")
    rc, out, _ = dlq("show", A)
    check_eq(rc, 0, "show exits 0")
    check("3 copies with this id" in out.splitlines()[0], "show names the copies: %r"
          % out.splitlines()[:1])
    check_eq(b.depth(dlq_queue), 6, "list and show leave the 6 messages")

    # --- replay --dry-run ------------------------------------------------------------
    rc, out, _ = dlq("replay", "--id", A, "--dry-run")
    check_eq(rc, 0, "replay --dry-run exits 0")
    check(out.count("would replay") == 1 and "its 3 copies in the DLQ would all be removed" in out,
          "dry run: one replay, 3 copies would go: %r" % out)
    check_eq(b.depth(dlq_queue), 6, "dry run: the DLQ still holds 6")

    # --- replay --id A: once, every copy removed ------------------------------------------
    rc, out, err = dlq("replay", "--id", A)
    check_eq(rc, 0, "replay --id exits 0 (%s)" % err.strip())
    check("replayed 1 of 1 message(s)" in out and "(3 copies removed from the DLQ)" in out,
          "replay reports 1 replayed, 3 copies removed: %r" % out)
    check("3 of its 3 copies removed" in out, "the row says all 3 copies went: %r" % out)
    wait_for(lambda: idem_record(r, SUB, A).get("outcome") == "ok", 20, "A handled")
    time.sleep(1.5)   # a second replayed copy, if any, would be handled by now
    outs = [json.loads(body)["input"] for _, body in b.drain(out_queue)]
    check_eq(outs.count(A), 1, "A handled exactly once")
    check_eq(b.depth(queue), 0, "nothing left in the queue")
    rec = idem_record(r, SUB, A)
    check_eq((rec.get("state"), rec.get("outcome")), ("done", "ok"), "A's record after replay")
    check_eq(b.depth(dlq_queue), 3, "the DLQ holds 3 (B x2, C) after the replay of A")
    rc, arr, _ = dlq_json("list")
    check_eq(sorted((x["message_id"], x["copies"]) for x in arr or []), sorted([(B, 2), (C, 1)]),
             "no copy of A left")

    # --- purge --id B: both copies -----------------------------------------------------------
    rc, out, err = dlq("purge", "--id", B, "--yes")
    check_eq(rc, 0, "purge --id exits 0 (%s)" % err.strip())
    check("purged 2 message(s) (1 ids)" in out, "purge reports 2 messages, 1 id: %r" % out)
    check_eq(b.depth(dlq_queue), 1, "the DLQ holds only C after the purge of B")
    rc, arr, _ = dlq_json("list")
    check_eq([(x["message_id"], x["copies"]) for x in arr or []], [(C, 1)], "only C is left")

    # --- the rest -------------------------------------------------------------------------------
    rc, out, err = dlq("replay")
    check_eq(rc, 0, "replay of the rest exits 0 (%s)" % err.strip())
    check("replayed 1 of 1 message(s)" in out and "copies removed" not in out,
          "replay of C: one message, no extra copies: %r" % out)
    wait_for(lambda: idem_record(r, SUB, C).get("outcome") == "ok", 20, "C handled")
    check_eq(b.depth(dlq_queue), 0, "the DLQ is empty")
    outs = [json.loads(body)["input"] for _, body in b.drain(out_queue)]
    check_eq(outs, [C], "C handled once, nothing else")
    check_eq(w.stop(), 0, "warren exits 0 on SIGTERM")
except Exception:
    traceback.print_exc()
    check(False, "the test ran to its end without an exception")
finally:
    if w.alive():
        w.stop()
    b.close()
    delete_queues((queue, dlq_queue, queue + ".wait", out_queue))
finish()
