"""One reason vocabulary: metrics, DLQ headers, logs, trace and the CLI say the same code.

A handler raises for some events, rejects others, runs past its timeout for one; some
bodies are not JSON and one message has no id. Every DLQ copy then carries an
x-warren-reason header; for each code seen there, the count in
warren_dead_letters_total{reason=CODE}, the "message dead-lettered" log lines with
reason CODE, `warren trace`'s dead-lettered entry and `warren dlq list --group-by
reason` must all agree with the copies counted in the broker (read with pika, not
through warren). `dlq list --reason CODE` selects exactly those; an unknown code
(the old metric words "error", "invalid", or "bogus") is a usage error (exit 2)
that lists the valid codes; `--group-by error` counts per error text. The
message without an id is listed, shown and replayed by its handle (body: and
the start of its body's SHA-256).
"""
import hashlib
import json
import os
import subprocess
import sys
import traceback
from collections import Counter

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (ENV, WARREN, Broker, Warren, check, check_eq, delete_queues,  # noqa: E402
                    finish, prefix, tempdir, wait_for, write)

FAIL, REJ, BAD, SLOW = 3, 2, 2, 1

p = prefix()
tmp = tempdir()
queue = p + ".in"
SUB = "voc"
dlq_queue = queue + ".dlq"
all_queues = (queue, queue + ".wait", dlq_queue, queue + ".retry.1s")

write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local d = event.data
  if d.fail then local x = nil; return x.field end
  if d.reject then ctx.reject("declined: card expired") end
  if d.slow then while true do end end
end
return M
''')

sub = {"name": SUB, "queue": queue, "handler": "h.lua", "handler_timeout": "200ms",
       "retry": {"max_attempts": 1}, "breaker": {"enabled": False}}
w = Warren(tmp, [sub])
b = Broker()


def run(*args):
    env = dict(os.environ)
    env.update(ENV)
    r = subprocess.run([WARREN] + list(args), capture_output=True, env=env, timeout=120)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def dlq(*args):
    return run("dlq", *(list(args) + ["-c", w.config, "--subscription", SUB]))


try:
    w.start()
    check(w.wait_consuming(1), "warren consumes")
    for k in range(FAIL):
        b.publish(queue, {"fail": True}, message_id="%s-fail-%d" % (p, k))
    for k in range(REJ):
        b.publish(queue, {"reject": True}, message_id="%s-rej-%d" % (p, k))
    for k in range(BAD):
        b.publish(queue, b"{not json", message_id="%s-bad-%d" % (p, k))
    for k in range(SLOW):
        b.publish(queue, {"slow": True}, message_id="%s-slow-%d" % (p, k))
    b.publish(queue, {"n": 1})  # no message id
    total = FAIL + REJ + BAD + SLOW + 1
    check(wait_for(lambda: b.depth(dlq_queue) >= total, 60, "the DLQ copies"),
          "%d copies in the DLQ" % total)

    # the broker's own view: the x-warren-reason of every copy (requeued after)
    copies = []
    tags = []
    while True:
        method, props, body = b.ch.basic_get(queue=dlq_queue, auto_ack=False)
        if method is None:
            break
        tags.append(method.delivery_tag)
        copies.append((props.message_id, (props.headers or {}).get("x-warren-reason")))
    for t in tags:
        b.ch.basic_nack(t, requeue=True)
    by_header = Counter(r for _, r in copies)
    check_eq(dict(by_header), {"handler-error": FAIL, "rejected": REJ, "invalid-json": BAD,
                               "timeout": SLOW, "missing-message-id": 1},
             "DLQ headers carry the reason codes")

    # metrics: the same codes as labels, the same counts
    m = w.metrics()
    for code, n in by_header.items():
        check_eq(w.metric(m, "warren_dead_letters_total", subscription=SUB, reason=code), n,
                 "warren_dead_letters_total{reason=%s}" % code)
    for old in ("error", "invalid"):
        check_eq(w.metric(m, "warren_dead_letters_total", subscription=SUB, reason=old), None,
                 "no series with the old word %r" % old)

    # logs: the outcome line of each copy names the same code
    logged = Counter(rec.get("reason") for rec in w.lines(msg="message dead-lettered",
                                                          subscription=SUB))
    check_eq(dict(logged), dict(by_header), "log lines' reasons")

    # trace: the dead-lettered entry of one of each names the same code
    for mid, code in copies:
        if not mid or mid.endswith("-1"):
            continue
        rc, out, err = run("trace", "-c", w.config, mid, "--json")
        story = json.loads(out) if rc == 0 else {}
        entries = [e for st in story.get("stories", []) for e in st.get("entries", [])
                   if e.get("event") == "dead-lettered"]
        check(len(entries) == 1 and entries[0].get("reason") == code,
              "trace %s: dead-lettered with reason %s (%r)" % (mid, code, entries))

    # the CLI: --group-by reason counts what the broker holds
    rc, out, err = dlq("list", "--group-by", "reason", "--json")
    rows = json.loads(out) if rc == 0 else []
    check_eq({r["reason"]: r["messages"] for r in rows}, dict(by_header),
             "dlq list --group-by reason --json")
    check_eq([r["ids"] for r in rows], sorted([r["ids"] for r in rows], reverse=True),
             "most ids first")
    rc, out, err = dlq("list", "--group-by", "reason")
    print(out, err, flush=True)
    check_eq(rc, 0, "group-by (text) exits 0")
    text_rows = {ln.split()[0]: int(ln.split()[1]) for ln in out.splitlines()[1:] if ln.strip()}
    check_eq(text_rows, dict(by_header), "dlq list --group-by reason (text)")
    check(out.splitlines()[0].split() == ["reason", "ids", "messages"], "a header line")

    rc, out, err = dlq("list", "--group-by", "error", "--json")
    rows = json.loads(out) if rc == 0 else []
    errs = {r["error"]: r["ids"] for r in rows}
    check(any("(a nil value)" in e and n == FAIL for e, n in errs.items()),
          "--group-by error: the handler bug counted once per id: %r" % errs)
    check_eq(errs.get("declined: card expired"), REJ, "--group-by error: the rejections")

    # --reason selects by code
    for code, n in by_header.items():
        rc, out, err = dlq("list", "--reason", code, "--json")
        arr = json.loads(out) if rc == 0 else None
        check(arr is not None and len(arr) == n and all(e["reason"] == code for e in arr),
              "--reason %s: %d (%r)" % (code, n, arr and len(arr)))
    # unknown codes are usage errors that list the valid ones
    for bad in ("error", "invalid", "bogus"):
        rc, out, err = dlq("list", "--reason", bad)
        check_eq(rc, 2, "--reason %s: usage error" % bad)
        check("unknown reason '%s'" % bad in err and "handler-error" in err and
              "invalid-json" in err and "missing-message-id" in err,
              "--reason %s names the valid codes: %r" % (bad, err[:300]))
    rc, out, err = run("dlq", "list", "--reason", "help")
    check(rc == 0 and out.startswith("reason codes: ") and "store-refused" in out,
          "--reason help lists the codes: %r" % out)
    # a message without an id has a handle too: the hash of its body
    handle = "body:" + hashlib.sha256(json.dumps({"n": 1}).encode()).hexdigest()[:12]
    rc, out, err = dlq("list", "--reason", "missing-message-id")
    check(rc == 0 and out.startswith(handle + "  missing-message-id"),
          "list shows the id-less message by its handle: %r" % out)
    rc, out, err = dlq("show", handle)
    check(rc == 0 and out.startswith("message %s in %s" % (handle, dlq_queue)),
          "show takes the handle: %r" % out[:120])
    rc, out, err = dlq("replay", "--id", handle, "--dry-run")
    check(rc == 0 and out.startswith("would replay %s (missing-message-id)" % handle),
          "replay --id takes the handle: %r" % out[:160])
    rc, out, err = dlq("list", "--group-by", "colour")
    check_eq(rc, 2, "--group-by colour: usage error")
    check_eq(b.depth(dlq_queue), total, "the DLQ is as it was")
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    if w.alive():
        w.stop()
    b.close()
    delete_queues(all_queues)
finish()
