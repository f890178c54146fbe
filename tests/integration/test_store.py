"""ctx.store through the real sidecar: reads see the message's own buffered
writes; the writes land with the done mark (once, even for a duplicate); a
handler that fails applies nothing and its retry starts from the state as it
was; a rejected message applies nothing; writes that cannot apply (a key of
another type in Redis) are refused whole and logged; ctx.store without
idempotency says why it is not available; and a worker paused past its lease
while another sidecar takes its message over applies its writes once, not
twice, logging the lost lease."""
import json
import os
import signal
import time

from wrtest import (Broker, Warren, check, check_eq, finish, idem_record, prefix, redis_client,
                    tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
r = redis_client()
SP = p + ":st:"  # the store prefix of this test

write(os.path.join(tmp, "store.lua"), r'''
local M = {}
local S = ctx_store_unused
function M.handle(event, ctx)
  local st, d = ctx.store, event.data
  local seen = {}
  if d.kind == "ryw" then
    st.set("s", "v1")
    seen.get_after_set = st.get("s")
    st.incrby("n", 5)
    st.incrby("n", -2)
    seen.n = st.get("n")
    st.hset("h", "a", "1")
    st.hincrby("h", "a", 4)
    st.hset("h", "b", "x")
    st.hdel("h", "b")
    seen.h = st.hgetall("h")
    st.sadd("set", "m1", "m2")
    st.srem("set", "m1")
    seen.m1 = st.sismember("set", "m1")
    seen.m2 = st.sismember("set", "m2")
    st.set("gone", "x")
    st.del("gone")
    seen.gone = st.get("gone")
    seen.gone_exists = st.exists("gone")
    st.set("t", "x", 60)
    seen.ttl = st.ttl("t")
    seen.base = st.get("base")
    st.incrby("base", 1)
    seen.base_after = st.get("base")
  elseif d.kind == "flaky" then
    seen.before = st.get("flaky") or "nil"
    st.incrby("flaky", 1)
    if ctx.attempt == 1 then error("first attempt fails after its write") end
  elseif d.kind == "reject" then
    st.incrby("rejected", 1)
    ctx.reject("no")
  elseif d.kind == "wrongtype" then
    st.incrby("ok-counter", 1)
    st.incrby("is-a-hash", 1)
  elseif d.kind == "rmw" then
    -- read-modify-write: safe only because the commit checks the read still holds
    local v = tonumber(st.get(d.key or "rmw") or "0")
    local t = os.clock()
    while os.clock() - t < (d.busy or 0) do end
    st.set(d.key or "rmw", v + 1)
  elseif d.kind == "guards" then
    -- reads of each kind, then a write: the commit re-checks what was read
    seen.h = st.hgetall("gh")
    seen.m = st.sismember("gs", "m")
    seen.e = st.exists("ge")
    seen.members = #st.smembers("gs")
    ctx.log.info("started")
    local t = os.clock()
    while os.clock() - t < (d.busy or 0) do end
    st.incrby("guarded-writes", 1)
  elseif d.kind == "slow" then
    st.incrby("slow", 1)
    ctx.log.info("started")
    local t = os.clock()
    while os.clock() - t < (d.busy or 0) do end
  end
  ctx.publish("", "%s", { id = event.id, seen = seen })
end
return M
'''.replace("local S = ctx_store_unused\n", "") % out_queue)

b = Broker()
b.declare(out_queue)
b.declare(queue)
extra = "store:\n  prefix: '%s'\n" % SP
sub = {"name": "st", "queue": queue, "handler": "store.lua", "concurrency": 1,
       "retry": {"max_attempts": 3, "delays": ["1s"]}, "idempotency": {"lease": "2s"}}
w = Warren(tmp, [sub], extra=extra, name="a").start()
check(w.wait_consuming(1), "consuming")


def outputs(n, what, timeout=30):
    got = []
    wait_for(lambda: got.extend(json.loads(body) for _, body in b.drain(out_queue)) or
             len(got) >= n, timeout, what)
    return got


# 1. read-your-writes, and the writes are applied once with the done mark
r.set(SP + "base", "10")
b.publish(queue, {"kind": "ryw"}, message_id="ryw-1")
seen = outputs(1, "ryw-1 handled")[0]["seen"]
check_eq(seen.get("get_after_set"), "v1", "get after set")
check_eq(seen.get("n"), "3", "get after two incrby")
check_eq(seen.get("h"), {"a": "5"}, "hgetall merges hset/hincrby/hdel")
check_eq((seen.get("m1"), seen.get("m2")), (False, True), "sismember after sadd/srem")
check_eq((seen.get("gone"), seen.get("gone_exists")), (None, False), "del then get = nil")
check_eq(seen.get("ttl"), 60, "ttl of a set with ttl")
check_eq((seen.get("base"), seen.get("base_after")), ("10", "11"), "get over a Redis value")
# the output event is published (and confirmed) before the commit: wait for the
# commit (the record done, in the same script as the writes), not for the event
wait_for(lambda: idem_record(r, "st", "ryw-1").get("state") == "done", 20, "ryw-1 committed")
check_eq(r.get(SP + "s"), "v1", "set applied")
check_eq(r.get(SP + "n"), "3", "incrby applied")
check_eq(r.hgetall(SP + "h"), {"a": "5"}, "hash applied")
check_eq(r.smembers(SP + "set"), {"m2"}, "set applied")
check_eq(r.exists(SP + "gone"), 0, "deleted key absent")
check(50 < r.ttl(SP + "t") <= 60, "ttl applied")
check_eq(r.get(SP + "base"), "11", "increment over the Redis value applied once")
check_eq(idem_record(r, "st", "ryw-1").get("state"), "done", "record done")
# a duplicate runs nothing and applies nothing
b.publish(queue, {"kind": "ryw"}, message_id="ryw-1")
wait_for(lambda: w.lines(msg="duplicate message skipped", message_id="ryw-1"), 20,
         "the duplicate skipped")
check_eq(r.get(SP + "base"), "11", "the duplicate applied nothing")

# 2. a handler that fails applies nothing; the retry starts from the state as it was
b.publish(queue, {"kind": "flaky"}, message_id="flaky-1")
out = outputs(1, "flaky-1 handled on its retry")
check_eq(out[0]["seen"].get("before"), "nil", "the retry saw no write of the failed attempt")
check_eq(r.get(SP + "flaky"), "1", "one increment: the failed attempt applied nothing")
check(w.lines(msg="message scheduled for retry", message_id="flaky-1"), "the failure was retried")

# 3. a rejected message applies nothing
b.publish(queue, {"kind": "reject"}, message_id="rej-1")
wait_for(lambda: b.depth(queue + ".dlq") >= 1, 20, "rej-1 dead-lettered")
check_eq(r.get(SP + "rejected"), None, "a rejected message applied nothing")
b.drain(queue + ".dlq")

# 4. writes that cannot apply are refused whole: nothing of the message lands, and
#    it is dead-lettered at once (no retry can change a key's type)
r.hset(SP + "is-a-hash", "f", "1")
b.publish(queue, {"kind": "wrongtype"}, message_id="wt-1")
wait_for(lambda: w.lines(msg="message dead-lettered", message_id="wt-1"), 20,
         "wt-1 dead-lettered")
dl = w.lines(msg="message dead-lettered", message_id="wt-1")
check_eq(dl[0].get("reason"), "store-refused", "reason store-refused")
check("store writes refused, nothing applied" in dl[0].get("error", "") and
      "holds a hash in Redis" in dl[0].get("error", ""), "the error says why: %s"
      % dl[0].get("error"))
check_eq(r.get(SP + "ok-counter"), None, "no write of the refused message applied")
wait_for(lambda: b.depth(queue + ".dlq") >= 1, 20, "its copy in the DLQ")
copies = b.drain(queue + ".dlq")
check_eq([props.message_id for props, _ in copies], ["wt-1"], "one DLQ copy")
check_eq((copies[0][0].headers or {}).get("x-warren-reason"), "store-refused",
         "the copy carries the reason")
rec = idem_record(r, "st", "wt-1")
check_eq((rec.get("state"), rec.get("outcome")), ("done", "dead-lettered"),
         "its record done as dead-lettered")
check_eq(len(w.lines(msg="message handled", message_id="wt-1")), 0, "never recorded as handled")
check_eq(w.metric(w.metrics(), "warren_dead_letters_total", subscription="st",
                  reason="store-refused"), 1,
         "counted as warren_dead_letters_total{reason=\"store-refused\"}")
b.drain(out_queue)
check_eq(w.stop(), 0, "a exits 0")

# 5. ctx.store with idempotency off: a clear error
sub_off = dict(sub, name="st-off", idempotency={"enabled": False},
               retry={"max_attempts": 1})
w = Warren(tmp, [sub_off], extra=extra, name="off").start()
check(w.wait_consuming(1), "consuming without idempotency")
b.publish(queue, {"kind": "flaky"}, message_id="off-1")
wait_for(lambda: w.lines(msg="message dead-lettered", message_id="off-1"), 20, "off-1 failed")
err = w.lines(msg="message dead-lettered", message_id="off-1")[0].get("error", "")
check("ctx.store is not available: idempotency is off" in err, "the error says why: %s" % err)
check_eq(w.stop(), 0, "off exits 0")
b.drain(queue + ".dlq")

# 6. two messages read-modify-write one key at once on two workers: the commit
#    that finds its read changed is a conflict, applies nothing, and runs again
# (the handlers busy-loop on CPU time: a loaded machine stretches that in wall
# time, so the timeout leaves room; a timeout here would be a retry, not a conflict)
sub_c = dict(sub, name="st-c", concurrency=2, prefetch=1, batch_size=1, handler_timeout="30s")
w = Warren(tmp, [sub_c], extra=extra, name="conc").start()
check(w.wait_consuming(2), "two workers consuming")
b.publish(queue, {"kind": "rmw", "busy": 0.5}, message_id="rmw-1")
b.publish(queue, {"kind": "rmw", "busy": 0.5}, message_id="rmw-2")
wait_for(lambda: len(w.lines(msg="message handled")) >= 2, 30, "both handled")
check_eq(r.get(SP + "rmw"), "2", "both increments counted (no lost update)")
conflicts = [l for l in w.lines() if "store conflict" in l.get("error", "")]
check(len(conflicts) >= 1, "the conflict was logged (%d)" % len(conflicts))
check(all(l["level"] == "warn" for l in conflicts), "as a warning")
check_eq(w.stop(), 0, "conc exits 0")
b.drain(out_queue)

# 7. in one batch, a message reads what the messages before it wrote (as the commit
#    will apply them): five read-modify-writes of one key in a batch, no conflict
for n in range(5):
    b.publish(queue, {"kind": "rmw", "key": "chain"}, message_id="chain-%d" % n)
w = Warren(tmp, [dict(sub, name="st-b", batch_size=10)], extra=extra, name="chain").start()
wait_for(lambda: len(w.lines(msg="message handled")) >= 5, 30, "the batch handled")
check_eq(r.get(SP + "chain"), "5", "each saw the ones before it: 5")
check_eq([l for l in w.lines() if "store conflict" in l.get("error", "")], [],
         "no conflict inside the batch")
check_eq(w.stop(), 0, "chain exits 0")
b.drain(out_queue)

# 8. every kind of read is checked at commit: a change by someone else between the
#    read and the commit (a hash field, a set member, a key appearing) is a conflict
w = Warren(tmp, [sub_c], extra=extra, name="guards").start()
check(w.wait_consuming(2), "consuming for the guards")
r.hset(SP + "gh", "f", "1")
r.sadd(SP + "gs", "x")
changes = [("hash field", lambda: r.hset(SP + "gh", "f", "2")),
           ("set member", lambda: r.sadd(SP + "gs", "m")),
           ("key created", lambda: r.set(SP + "ge", "1"))]
for n, (what, change) in enumerate(changes):
    mid = "guard-%d" % n
    b.publish(queue, {"kind": "guards", "busy": 0.8}, message_id=mid)
    wait_for(lambda: w.lines(msg="started", message_id=mid), 20, "%s started" % mid)
    change()
    wait_for(lambda: w.lines(msg="message handled", message_id=mid), 30, "%s handled" % mid)
    conflicts = [l for l in w.lines(message_id=mid) if "store conflict" in l.get("error", "")]
    check_eq(len(conflicts), 1, "a %s between read and commit: one conflict, one re-run" % what)
    check_eq(len(w.lines(msg="started", message_id=mid)), 2, "%s ran twice" % mid)
check_eq(r.get(SP + "guarded-writes"), str(len(changes)), "each message's write applied once")
check_eq(w.stop(), 0, "guards exits 0")
b.drain(out_queue)

# 9. a lost lease: sidecar A starts the message and is paused (SIGSTOP) past its
#    2s lease; sidecar B takes a copy of the message over and commits its writes;
#    when A resumes its commit is refused: its writes are not applied, the lost
#    lease is logged, and its delivery is not acked as a second success.
sub_a = dict(sub, prefetch=1, batch_size=1, handler_timeout="60s")
a = Warren(tmp, [sub_a], extra=extra, name="lease-a").start()
check(a.wait_consuming(1), "A consuming")
b.publish(queue, {"kind": "slow", "busy": 1.5}, message_id="slow-1")
wait_for(lambda: a.lines(msg="started", message_id="slow-1"), 20, "slow-1 started in A")
os.kill(a.proc.pid, signal.SIGSTOP)
stopped_at = time.time()
sub_b = dict(sub, handler="store.lua")
bb = Warren(tmp, [sub_b], extra=extra, name="lease-b").start()
check(bb.wait_consuming(1), "B consuming")
b.publish(queue, {"kind": "slow", "busy": 0}, message_id="slow-1")  # the producer's copy
wait_for(lambda: bb.lines(msg="message handled", message_id="slow-1"), 30,
         "B took slow-1 over after A's lease")
check(bb.lines(msg="message handled", message_id="slow-1")[0].get("lease_takeover") is True,
      "B's run was a takeover")
check_eq(r.get(SP + "slow"), "1", "B's writes applied")
time.sleep(max(0.0, 4 - (time.time() - stopped_at)))
os.kill(a.proc.pid, signal.SIGCONT)
wait_for(lambda: any("lease lost: writes not applied" in l.get("error", "")
                     for l in a.lines(message_id="slow-1")), 30, "A's lost lease logged")
check_eq(a.metric(a.metrics(), "warren_lease_lost_total", subscription="st"), 1,
         "the lost lease is counted (warren_lease_lost_total)")
check_eq(len(a.lines(msg="message handled", message_id="slow-1")), 0,
         "A never recorded slow-1 as handled")
# A's returned delivery comes back and is skipped as a duplicate (by A or B)
wait_for(lambda: b.depth(queue) == 0 and b.depth(queue + ".wait") == 0 and
         (a.lines(msg="duplicate message skipped", message_id="slow-1") or
          bb.lines(msg="duplicate message skipped", message_id="slow-1")), 30,
         "the returned copy skipped as a duplicate")
time.sleep(1)
check_eq(r.get(SP + "slow"), "1", "the writes applied once, not twice")
check_eq(a.stop(), 0, "A exits 0")
check_eq(bb.stop(), 0, "B exits 0")
for q in (queue, queue + ".wait", queue + ".dlq"):
    check_eq(b.depth(q), 0, "%s empty" % q)
for k in r.keys(SP + "*"):
    r.delete(k)
b.delete(queue, queue + ".dlq", queue + ".wait", out_queue,
         *["%s.retry.%s" % (queue, x) for x in ("1s",)])
b.close()
finish()
