"""The ctx.store commit never applies a message's writes halfway, and never loops.

A Redis script is not rolled back: a write that fails in the middle of the
commit would leave the writes before it applied, and the message would run
(and apply them) again. So the commit checks every write before applying any,
the way Redis itself will judge it:

  * a counter holding "05" (not an integer to Redis, though it looks like one)
    makes the message's writes refused: nothing applied, the message in the
    DLQ once (reason store-refused), not retried for ever;
  * increments that are each fine but overflow together are refused the same
    way;
  * del then incrby on a key Redis holds as a hash (or del then hincrby on a
    hash whose field is not a number) is valid: it applies, once.

And when the script fails anyway (Redis refuses writes: maxmemory reached
while the handler runs), warren logs the Redis error, commits the batch's
records one by one, gives the message back, and once Redis takes writes again
the message's writes are applied exactly once."""
import os
import time
import traceback

from wrtest import (Broker, Warren, check, check_eq, delete_queues, finish, idem_record, prefix,
                    redis_client, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
queue = p + ".in"
r = redis_client()
SP = p + ":sc:"  # the store prefix of this test
SUB = "sc"

write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  local st, d = ctx.store, event.data
  st.incrby("applied:" .. event.id, 1)          -- must never be applied alone
  if d.kind == "odd" then
    st.incrby("odd", 1)
  elseif d.kind == "overflow" then
    for _ = 1, 5 do st.incrby("big", 9007199254740991) end
  elseif d.kind == "del-incr" then
    st.del("was-hash")
    st.incrby("was-hash", 7)
  elseif d.kind == "del-hincr" then
    st.del("h")
    st.hincrby("h", "f", 3)
  elseif d.kind == "slow" then
    local t = ctx.now()
    while ctx.now() - t < 2 do end
    st.incrby("slow", 1)
  end
end
return M
''')

sub = {"name": SUB, "queue": queue, "handler": "h.lua", "concurrency": 1,
       "retry": {"max_attempts": 3, "delays": ["1s"]}, "breaker": {"enabled": False},
       "handler_timeout": "10s"}
w = Warren(tmp, [sub], extra="store:\n  prefix: '%s'\n" % SP)
b = Broker()
oom = False
try:
    b.declare(queue)
    r.set(SP + "odd", "05")
    r.set(SP + "big", "9190000000000000000")
    r.hset(SP + "was-hash", "x", "1")
    r.hset(SP + "h", "f", "abc")
    w.start()
    check(w.wait_consuming(1), "warren consumes")
    for kind in ("odd", "overflow", "del-incr", "del-hincr"):
        b.publish(queue, {"kind": kind}, message_id="m-" + kind)
    check(wait_for(lambda: b.depth(queue + ".dlq") >= 2 and
                   idem_record(r, SUB, "m-del-hincr").get("state") == "done", 30, "outcomes"),
          "two refused, two applied")
    time.sleep(2)  # a loop would show now
    for kind in ("odd", "overflow"):
        rec = idem_record(r, SUB, "m-" + kind)
        check_eq(r.get(SP + "applied:m-" + kind), None,
                 "%s: nothing of the message applied" % kind)
        check_eq((rec.get("state"), rec.get("outcome")), ("done", "dead-lettered"),
                 "%s: its record says dead-lettered" % kind)
        check_eq(len(w.lines(message_id="m-" + kind)), 1, "%s: one outcome line, no loop" % kind)
    check_eq(r.get(SP + "odd"), "05", "the odd counter untouched")
    check_eq(r.get(SP + "big"), "9190000000000000000", "the big counter untouched")
    dlq = b.drain(queue + ".dlq")
    reasons = sorted((props.message_id, (props.headers or {}).get("x-warren-reason"))
                     for props, _ in dlq)
    check_eq(reasons, [("m-odd", "store-refused"), ("m-overflow", "store-refused")],
             "both in the DLQ once, as store-refused")
    check_eq(r.get(SP + "was-hash"), "7", "del then incrby on a hash: applied")
    check_eq(r.hgetall(SP + "h"), {"f": "3"}, "del then hincrby over a non-number: applied")
    for kind in ("del-incr", "del-hincr"):
        check_eq(r.get(SP + "applied:m-" + kind), "1", "%s: applied once" % kind)

    # The script fails anyway: Redis refuses every write while the handler runs.
    b.publish(queue, {"kind": "slow"}, message_id="m-slow")
    check(wait_for(lambda: idem_record(r, SUB, "m-slow").get("state") == "processing", 20,
                   "the slow message to start"), "the slow message is running")
    r.config_set("maxmemory", "1")
    oom = True
    check(wait_for(lambda: w.lines(msg="commit script failed; committing the batch's records "
                                       "one by one"), 20, "the failed commit"),
          "warren logs the failed commit script")
    failed = w.lines(msg="commit script failed; committing the batch's records one by one")
    check(failed and "OOM" in failed[0].get("error", ""),
          "with Redis's own error: %r" % (failed[0].get("error") if failed else None))
    time.sleep(2)
    r.config_set("maxmemory", "0")
    oom = False
    check(wait_for(lambda: idem_record(r, SUB, "m-slow").get("state") == "done", 60,
                   "the slow message done"), "once Redis takes writes, the message is done")
    check_eq(r.get(SP + "slow"), "1", "its write applied exactly once")
    check_eq(r.get(SP + "applied:m-slow"), "1", "and its other write once")
    check(w.alive(), "warren is still running")
    check_eq(w.stop(), 0, "warren exits 0")
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    if oom:
        r.config_set("maxmemory", "0")
    if w.alive():
        w.stop()
    b.close()
    delete_queues((queue, queue + ".dlq", queue + ".wait", queue + ".retry.1s"))
finish()
