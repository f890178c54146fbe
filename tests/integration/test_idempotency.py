"""Duplicates: 10,000 events of which 20% repeat an earlier id, consumed by
two sidecars of two workers each. Some repeats are published right behind
their original, so two workers hold them at once: in one process the second
copy is held back until its twin is finished, in the other it finds the
record claimed and is deferred through the wait queue (asserted: that path
must be taken). The handler's effect (one output event per run) must happen
once per distinct id. The test counts the effects itself, in Redis, from the
output queue: never from warren's own logs."""
import json
import os
import random

from wrtest import (Broker, Warren, check, check_eq, finish, idem_record, prefix, redis_client,
                    tempdir, wait_for, write)

TOTAL = 10000
p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
r = redis_client()

write(os.path.join(tmp, "effect.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.publish("", "%s", { input = event.id, key = ctx.idempotency_key })
end
return M
''' % out_queue)

random.seed(7)
distinct = ["d-%05d" % i for i in range(TOTAL * 8 // 10)]
sequence = []
behind = set()                             # ids whose copy follows right behind
for mid in distinct:
    sequence.append(mid)
    if random.random() < 0.125:           # right behind its original: concurrent copies
        sequence.append(mid)
        behind.add(mid)
early = len(sequence)
while len(sequence) < TOTAL:               # the rest: repeats of any earlier id, later on
    sequence.append(random.choice(distinct[: len(sequence) // 2 or 1]))
late = sequence[early:]
random.shuffle(late)                       # keep the early part, mix the late repeats
sequence[early:] = late
repeats = len(sequence) - len(distinct)
print("  %d events, %d distinct ids, %d repeats" % (len(sequence), len(distinct), repeats))

b = Broker()
b.declare(out_queue)
b.declare(queue)
for mid in sequence:
    b.publish(queue, {"id": mid}, message_id=mid)

sub = {"name": "dedup", "queue": queue, "handler": "effect.lua", "concurrency": 2,
       "prefetch": 50, "batch_size": 25}
w1 = Warren(tmp, [sub], name="w1").start()
w2 = Warren(tmp, [sub], name="w2").start()
check(w1.wait_consuming(2) and w2.wait_consuming(2), "two sidecars, two workers each, consuming")


def lines(**match):
    return w1.lines(**match) + w2.lines(**match)


def drained():
    return (b.depth(queue) == 0 and b.depth(queue + ".wait") == 0
            and len(lines(msg="message handled")) + len(lines(msg="duplicate message skipped"))
            >= TOTAL)


wait_for(drained, 180, "all events handled or skipped", interval=0.5)

# Count effects in Redis from the test side: one INCR per output event received.
counter = p + ":effects"
outs = b.drain(out_queue)
pipe = r.pipeline()
for props, body in outs:
    pipe.hincrby(counter, json.loads(body)["input"], 1)
pipe.execute()
effects = r.hgetall(counter)
check_eq(len(effects), len(distinct), "an effect for every distinct id")
check_eq(sorted(k for k, v in effects.items() if int(v) != 1), [], "no effect happened twice")
check_eq(len(outs), len(distinct), "output events = distinct ids")
check_eq(set(props.message_id for props, _ in outs), set(m + ":dedup:1" for m in distinct),
         "output ids derive from the idempotency key")

dups = lines(msg="duplicate message skipped")
check_eq(len(dups), repeats, "every repeat logged as a duplicate")
check_eq(len(lines(msg="message handled")), len(distinct), "every distinct id handled once")
# The concurrent-copy path across processes: a copy whose original a worker of
# the other sidecar holds is deferred through the wait queue, not run, and comes
# back as a duplicate. Copies published right behind their original take it.
deferred = lines(msg="message deferred: another worker holds its key")
deferred_ids = set(d.get("message_id") for d in deferred)
print("  %d copies deferred while another worker held their key (%d of the %d ids sent twice "
      "in a row)" % (len(deferred), len(deferred_ids & behind), len(behind)))
check(len(deferred_ids & behind) > 0, "copies right behind their original were deferred")

missing = [m for m in distinct if idem_record(r, "dedup", m).get("state") != "done"]
check_eq(missing, [], "every distinct id has a done record")
rec = idem_record(r, "dedup", distinct[0])
check_eq(rec.get("outcome"), "ok", "the record says ok")
check("token" not in rec and "lease_until" not in rec, "a done record holds no claim")
ttl = r.pttl("warren:idem:dedup:" + distinct[0])
check(6 * 86400000 < ttl <= 7 * 86400000, "done records expire after the default 7 days (%d ms)" % ttl)

check_eq(w1.stop(), 0, "the first sidecar exits 0")
check_eq(w2.stop(), 0, "the second sidecar exits 0")
for q in (queue, queue + ".wait", queue + ".dlq"):
    check_eq(b.depth(q), 0, "%s empty" % q)
r.delete(counter)
b.delete(queue, queue + ".dlq", queue + ".wait", out_queue,
         *["%s.retry.%s" % (queue, d) for d in ("1s", "5s", "30s", "2m")])
b.close()
finish()
