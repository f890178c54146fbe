"""redis.min_replicas_acked: nothing is acked that only the primary holds.

warren (two workers, min_replicas_acked 1, a 300 ms WAIT) consumes through
the sentinels while the replica is stopped: every batch it handles is
committed on the primary, WAIT answers "0 of 1", and the handled messages go
back to the queue unacked (log line "not acked, returned to the queue: WAIT:
0 of 1 replica ...", warren_redis_replica_wait_failures_total > 0). Stopped
with SIGTERM in that state, warren leaves every input in the queue: none was
acked. With the replica started again, a new warren drains the queue: every
input ends with one done record and its ctx.store counter at exactly 1 (a
redelivery of a message done on the primary is a duplicate: it must not run
again), its output id published, and the counters are on the replica too.

Then the cost: the same number of events through a warren with
min_replicas_acked 0 and one with 1 (replica up), the wall time of each run
and the WAIT's mean duration (warren_redis_call_duration_seconds{call="wait"})
printed for docs/operations.md.
"""
import os
import time

from hatest import ha, ha_warren, primary, store_counts
from wrtest import Broker, check, check_eq, finish, prefix, tempdir, wait_for, write

TOTAL = 600
BENCH = 4000
CONCURRENCY, BATCH, PREFETCH = 2, 50, 100

p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
SP = p + ":st:"
write(os.path.join(tmp, "work.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.store.incrby("n:" .. event.id, 1)
  ctx.publish("", "%s", { input = event.id })
end
return M
''' % out_queue)


def sub(q):
    return {"name": "w", "queue": q, "handler": "work.lua", "concurrency": CONCURRENCY,
            "prefetch": PREFETCH, "batch_size": BATCH, "retry": {"max_attempts": 3}}


def store_section(w):
    with open(w.config, "a") as fh:
        fh.write("store:\n  prefix: '%s'\n" % SP)


def with_store(w):
    # the store: section must come before subscriptions: in the file; the
    # order of top-level keys does not matter to YAML, so append it
    store_section(w)
    return w


b = Broker()
replica_down = False
try:
    b.declare(queue)
    b.declare(out_queue)
    ids = ["%s-a-%04d" % (p, i) for i in range(TOTAL)]
    for mid in ids:
        b.publish(queue, {"n": mid}, message_id=mid)

    check_eq(ha("redis-stop-replica"), 0, "ha.sh redis-stop-replica")
    replica_down = True
    w = with_store(ha_warren(tmp, [sub(queue)], min_replicas=1, wait_timeout="300ms"))
    w.start()
    check(w.wait_consuming(CONCURRENCY), "warren consuming through the sentinels")
    def returned_lines():
        return [x for x in w.lines() if "not acked, returned to the queue: WAIT: 0 of 1 replica"
                in str(x.get("error", ""))]

    wait_for(lambda: len(returned_lines()) >= 2 * BATCH or not w.alive(), 30,
             "batches refused for want of a replica")
    returned = returned_lines()
    check(len(returned) > 0, "handled messages logged 'not acked, returned to the queue: WAIT: 0 "
          "of 1 replica ...' (%d lines)" % len(returned))
    samples = w.metrics()
    failures = w.metric(samples, "warren_redis_replica_wait_failures_total", subscription="w")
    check(failures is not None and failures > 0,
          "warren_redis_replica_wait_failures_total counts them (%s)" % failures)
    r = primary()
    done_on_primary = sum(1 for v in store_counts(r, SP, ids).values() if v > 0)
    print("  replica down: %d messages handled on the primary, %d lines 'returned'"
          % (done_on_primary, len(returned)), flush=True)
    check(done_on_primary > 0, "the handlers ran (their writes are on the primary)")
    check_eq(w.stop(), 0, "warren exits 0 on SIGTERM while the replica is down")
    check_eq(b.depth(queue), TOTAL, "no input was acked while no replica held its commit")

    check_eq(ha("redis-start-replica"), 0, "ha.sh redis-start-replica")
    replica_down = False
    w2 = with_store(ha_warren(tmp, [sub(queue)], min_replicas=1, wait_timeout="300ms",
                              name="warren2"))
    w2.start()
    check(w2.wait_consuming(CONCURRENCY), "warren consuming with the replica back")
    r = primary()
    check(wait_for(lambda: b.depth(queue) == 0 and
                   sum(1 for v in store_counts(r, SP, ids).values() if v > 0) == TOTAL,
                   60, "every input handled", interval=0.5), "the queue drains")
    check_eq(w2.stop(), 0, "warren exits 0 on SIGTERM")
    counts = store_counts(r, SP, ids)
    check_eq(sorted(i for i, v in counts.items() if v != 1), [],
             "every input's store counter is exactly 1 (no effect lost, none applied twice)")
    outs = b.drain(out_queue)
    check_eq(sorted(set("%s:w:1" % i for i in ids) - set(x[0].message_id for x in outs)), [],
             "every input's output id was published")
    # the counters are on the replica as well (WAIT said so): read it directly
    role = r.execute_command("ROLE")
    replicas = role[2] if len(role) > 2 else []
    check(len(replicas) == 1, "the primary has its replica back (%s)" % (replicas,))
    if replicas:
        import redis as redislib
        rr = redislib.Redis(host=replicas[0][0], port=int(replicas[0][1]), decode_responses=True)
        check_eq(sorted(i for i, v in store_counts(rr, SP, ids).items() if v != 1), [],
                 "the replica holds every counter at 1")

    # ---- the cost of WAIT, measured
    results = {}
    for n_rep in (0, 1):
        q = "%s.bench%d" % (p, n_rep)
        b.declare(q)
        bids = ["%s-b%d-%05d" % (p, n_rep, i) for i in range(BENCH)]
        for mid in bids:
            b.publish(q, {"n": mid}, message_id=mid)
        wb = with_store(ha_warren(tmp, [dict(sub(q), name="b%d" % n_rep)], min_replicas=n_rep,
                                  wait_timeout="500ms", name="bench%d" % n_rep))
        t0 = time.monotonic()
        wb.start()
        ok = wait_for(lambda: b.depth(q) == 0 and len(wb.lines(msg="message handled")) >= BENCH,
                      120, "bench run %d" % n_rep, interval=0.2)
        elapsed = time.monotonic() - t0
        samples = wb.metrics()
        ws = wb.metric(samples, "warren_redis_call_duration_seconds_sum",
                       subscription="b%d" % n_rep, call="wait")
        wc = wb.metric(samples, "warren_redis_call_duration_seconds_count",
                       subscription="b%d" % n_rep, call="wait")
        fs = wb.metric(samples, "warren_redis_call_duration_seconds_sum",
                       subscription="b%d" % n_rep, call="finish")
        fc = wb.metric(samples, "warren_redis_call_duration_seconds_count",
                       subscription="b%d" % n_rep, call="finish")
        check(ok, "bench run with min_replicas_acked %d drained" % n_rep)
        check_eq(wb.stop(), 0, "bench warren exits 0")
        results[n_rep] = (elapsed, ws, wc, fs, fc)
        b.delete(q)
        print("  min_replicas_acked %d: %d events in %.2fs (incl. start), WAIT %s calls mean "
              "%.2f ms, finish mean %.2f ms"
              % (n_rep, BENCH, elapsed, int(wc or 0), 1000 * (ws or 0) / (wc or 1),
                 1000 * (fs or 0) / (fc or 1)), flush=True)
    check(results[1][2] and results[1][2] > 0, "the WAIT runs were measured")
    check(not results[0][2], "no WAIT with min_replicas_acked 0")
finally:
    if replica_down:
        ha("redis-start-replica")
    b.delete(queue, out_queue)
    b.close()

finish()
