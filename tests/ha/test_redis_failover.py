"""Redis failover mid-stream, through the sentinels: what is lost, what is
applied twice.

Four runs, each on its own queue: a coordinated failover (SENTINEL FAILOVER)
and a SIGKILL of the primary (the sentinels promote the replica after
down-after-milliseconds, 1 s; ha.sh then starts the killed server as the new
primary's replica), each with redis.min_replicas_acked 0 and 1. In each run
warren (two workers, batches of 50) handles EVENTS events whose handler
works 3 ms and adds 1 to a ctx.store counter of its own (committed with the idempotency record)
and publishes one output; the failover starts once a third of the outputs are
out. warren must find the new primary by itself (it has no address but the
sentinels'), and the queue must drain. In a coordinated failover the old
primary keeps answering (and taking writes it loses when it is demoted, about
ten seconds later): without WAIT warren must follow the sentinels'
+switch-master at once, logging "the sentinels moved the primary".

Per run, read from the primary the sentinels name at the end (never through
warren): a lost effect is an input acked (gone from the queue) whose counter
is 0; a double effect is a counter above 1. Both are printed for every run.
Checked: no double effect in any run (a counter rides on the record, so a
re-run after a lost record applies it to the state that lost it), every
output id published, and with min_replicas_acked 1 no lost effect either.
Without it, a lost effect is what asynchronous replication allows (the
figure is reported, not required to be nonzero: on loopback the replica
rarely lags)."""
import os
import threading
import time

from hatest import ha, ha_warren, primary, store_counts
from wrtest import Broker, check, check_eq, finish, prefix, tempdir, wait_for, write

EVENTS = int(os.environ.get("WR_HA_EVENTS", "3000"))
CONCURRENCY, BATCH, PREFETCH = 2, 50, 100

p = prefix()
tmp = tempdir()
b = Broker()
report = []


def run(kind, min_replicas):
    name = "%s%d" % ("f" if kind == "failover" else "k", min_replicas)
    queue, out_queue = "%s.%s.in" % (p, name), "%s.%s.out" % (p, name)
    sp = "%s:%s:" % (p, name)
    write(os.path.join(tmp, name + ".lua"), r'''
local M = {}
function M.handle(event, ctx)
  local t = ctx.now()
  while ctx.now() - t < 0.003 do end  -- 3 ms of work: the failover catches some
  ctx.store.incrby("n:" .. event.id, 1)
  ctx.publish("", "%s", { input = event.id })
end
return M
''' % out_queue)
    b.declare(queue)
    b.declare(out_queue)
    ids = ["%s-%s-%05d" % (p, name, i) for i in range(EVENTS)]
    for mid in ids:
        b.publish(queue, {"n": mid}, message_id=mid)
    sub = {"name": name, "queue": queue, "handler": name + ".lua", "concurrency": CONCURRENCY,
           "prefetch": PREFETCH, "batch_size": BATCH, "retry": {"max_attempts": 5},
           "idempotency": {"lease": "5s"}}
    w = ha_warren(tmp, [sub], min_replicas=min_replicas, wait_timeout="500ms", name=name)
    with open(w.config, "a") as fh:
        fh.write("store:\n  prefix: '%s'\n" % sp)
    w.start()
    try:
        check(w.wait_consuming(CONCURRENCY), "%s: warren consuming" % name)
        wait_for(lambda: b.depth(out_queue) >= EVENTS // 3 or not w.alive(), 60,
                 "%s: a third of the outputs" % name, interval=0.05)
        t0 = time.monotonic()
        ready_at_start = b.depth(queue)
        check(ready_at_start > 0, "%s: the failover begins with work left (%d inputs ready)"
              % (name, ready_at_start))
        # the failover runs in a thread; meanwhile the outputs are sampled, and
        # the longest time they did not grow is the pause the failover cost
        result = {}
        th = threading.Thread(target=lambda: result.update(
            rc=ha("redis-failover" if kind == "failover" else "redis-kill-primary")))
        th.start()
        last_n, last_t, stall = b.depth(out_queue), time.monotonic(), 0.0
        grew_after = False
        while not grew_after and time.monotonic() - last_t < 60:
            alive = th.is_alive()
            n, now = b.depth(out_queue), time.monotonic()
            if n > last_n:
                stall = max(stall, now - last_t)
                last_n, last_t = n, now
                grew_after = not alive  # growing again after ha.sh returned
            elif not alive and b.depth(queue) == 0:
                break
            time.sleep(0.05)
        th.join()
        t_settled = time.monotonic()
        print("  %s: %d inputs ready when the failover began, %d when ha.sh returned"
              % (name, ready_at_start, b.depth(queue)), flush=True)
        check_eq(result.get("rc"), 0, "%s: ha.sh %s" % (name, kind))
        check(b.depth(out_queue) > 0 and time.monotonic() - last_t < 60,
              "%s: consumption resumed by itself" % name)
        t_resumed = stall

        def drained():
            return b.depth(queue) == 0

        check(wait_for(drained, 120, "%s: queue drained" % name, interval=0.5),
              "%s: the queue drains" % name)
        time.sleep(2)
        check_eq(w.stop(), 0, "%s: warren exits 0 on SIGTERM" % name)
        check_eq(b.depth(queue), 0, "%s: nothing left in the queue" % name)
        r = primary()
        counts = store_counts(r, sp, ids)
        lost = sorted(i for i, v in counts.items() if v == 0)
        double = sorted(i for i, v in counts.items() if v > 1)
        outs = b.drain(out_queue)
        out_ids = [x[0].message_id for x in outs]
        missing_out = sorted(set("%s:%s:1" % (i, name) for i in ids) - set(out_ids))
        repub = len(out_ids) - len(set(out_ids))
        returned = len([x for x in w.lines() if "not acked, returned to the queue" in
                        str(x.get("error", ""))])
        report.append((kind, min_replicas, len(lost), len(double), repub, returned,
                       t_settled - t0, t_resumed))
        print("  RUN %s min_replicas_acked=%d: lost effects %d, double effects %d, outputs "
              "re-published %d, messages returned for want of a replica %d; ha.sh took "
              "%.1fs, longest stall of the outputs %.1fs"
              % (kind, min_replicas, len(lost), len(double), repub, returned,
                 t_settled - t0, t_resumed), flush=True)
        if kind == "failover" and min_replicas == 0:
            # the old primary still answered: only the sentinels' +switch-master
            # could tell warren to move before it was demoted. Every connection
            # that sends a command after the message logs the move: the probe's
            # (a PING a second) always, a worker's when it still had work (a
            # failover that ha.sh had to ask twice may come after the queue
            # drained). With WAIT a worker short of replicas pauses and finds the
            # new primary by itself: not counted there.
            moved = [x for x in w.lines() if "the sentinels moved the primary" in
                     str(x.get("msg", ""))]
            check(len(moved) >= 1,
                  "%s: warren followed the sentinels' switch (%d connections logged 'the "
                  "sentinels moved the primary')" % (name, len(moved)))
        check_eq(double, [], "%s: no effect applied twice" % name)
        check_eq(missing_out, [], "%s: every output id published" % name)
        if min_replicas > 0:
            check_eq(lost, [], "%s: no effect lost with min_replicas_acked %d"
                     % (name, min_replicas))
        else:
            print("  %s: lost effects without WAIT: %s" % (name, lost[:10]), flush=True)
    finally:
        if w.alive():
            w.stop()
        b.delete(queue, out_queue)


try:
    for kind in ("failover", "kill"):
        for n in (0, 1):
            run(kind, n)
finally:
    b.close()
    print("  SUMMARY kind min_replicas lost double republished returned ha_sh_s stall_s")
    for row in report:
        print("  SUMMARY %s %d %d %d %d %d %.1f %.1f" % row)

finish()
