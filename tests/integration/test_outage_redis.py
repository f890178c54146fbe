"""Redis outage: stop Redis for ~15 s while 10,000 events flow, then start it
again (appendonly: the records survive the restart).

While Redis is down warren must stop taking deliveries: its workers close
their broker connections (the queue has no consumer, its depth never
shrinks), the output count stops growing after a short moment, and nothing
is acked that was not recorded: every input gone from the queues at that
moment has a done record written before Redis came back. When Redis is back
warren consumes again by itself. At the end: every input has exactly one
done record (ok), the distinct output ids are exactly the inputs' `<id>:<subscription>:1`,
no input is logged "message handled" twice, nothing is left in any queue,
and warren exits 0 on SIGTERM.

An input published more than once is the in-flight batch whose outputs were
confirmed when the record could not be written: it is returned and re-run
with the same output ids. Those are counted, bounded by the in-flight
batches (concurrency x batch_size) and reported.

retry.max_attempts is 1 and the lease 5 s, shorter than the outage: after
it, a worker may take over the other worker's expired claims. Nothing
crashed, so the crash-loop guard (starts beyond attempts are runs that died)
must not dead-letter anything: the DLQ stays empty, every outcome is ok.

The servers are shared by the whole ctest run: Redis is started again in a
`finally`, whatever happened."""
import time
import traceback


from wrtest import (Broker, Warren, check, check_clean_end, check_done_ok, check_eq,
                    check_outputs, delete_queues, done_count, drain_and_stop, finish,
                    handled_once, prefix, redis_client, stack, tempdir, wait_for, work_handler)

TOTAL = 10000
CONCURRENCY, BATCH, PREFETCH = 2, 50, 100
OUTAGE = 15           # seconds Redis stays down
SETTLE = 2            # "a short moment": what was in flight when Redis died finishes


p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
side_queues = (queue + ".wait",)
all_queues = (queue, queue + ".wait", queue + ".dlq", out_queue)
sub_name = "rds"
r = redis_client()
ids = ["r-%05d" % i for i in range(TOTAL)]

work_handler(tmp, out_queue, 0.002)

sub = {"name": sub_name, "queue": queue, "handler": "work.lua", "concurrency": CONCURRENCY,
       "prefetch": PREFETCH, "batch_size": BATCH, "retry": {"max_attempts": 1},
       "idempotency": {"lease": "5s"}}
w = Warren(tmp, [sub])
b = Broker()
redis_stopped = False
try:
    b.declare(out_queue)
    b.declare(queue)
    t0 = time.monotonic()
    for mid in ids:
        b.publish(queue, {"n": mid}, message_id=mid)
    print("  published %d events in %.1fs" % (TOTAL, time.monotonic() - t0), flush=True)

    w.start()
    check(w.wait_consuming(CONCURRENCY), "warren consuming (%d workers)" % CONCURRENCY)
    wait_for(lambda: b.depth(out_queue) >= 2000, 60, "2000 outputs before the outage", interval=0.05)
    consuming_before = len(w.lines(msg="consuming"))
    print("  stopping Redis with %d outputs out" % b.depth(out_queue), flush=True)
    redis_stopped = True
    t_stop = time.monotonic()
    check_eq(stack("stop-redis"), 0, "stack.sh stop-redis")

    # ---- while Redis is down
    check(wait_for(lambda: b.consumers(queue) == 0, 10, "warren to stop consuming"),
          "warren closed its consumers while Redis is down")
    time.sleep(max(0, t_stop + SETTLE - time.monotonic()))
    out0, in0 = b.depth(out_queue), b.depth(queue)
    side0 = sum(b.depth(q) for q in side_queues)
    finished_at_outage = TOTAL - in0 - side0   # inputs acked for good (one live copy per pending input)
    samples = []
    while time.monotonic() < t_stop + OUTAGE:
        samples.append((b.depth(out_queue), b.depth(queue), b.consumers(queue)))
        time.sleep(0.5)
    print("  outage: %d outputs, %d ready in the queue after %ds; %d samples until %ds: outputs "
          "%d..%d, queue %d..%d, consumers max %d"
          % (out0, in0, SETTLE, len(samples), OUTAGE, min(s[0] for s in samples),
             max(s[0] for s in samples), min(s[1] for s in samples), max(s[1] for s in samples),
             max(s[2] for s in samples)), flush=True)
    check(in0 > 0, "the outage cut the stream (%d events still queued)" % in0)
    check(all(s[0] == out0 for s in samples), "the output count stops growing while Redis is down")
    check(all(s[1] >= in0 for s in samples) and
          all(samples[i][1] <= samples[i + 1][1] for i in range(len(samples) - 1)),
          "the queue depth stays put or grows while Redis is down")
    check(all(s[2] == 0 for s in samples), "no consumer on the queue while Redis is down")
    check(w.alive(), "warren is still running while Redis is down")
    check(len(w.lines(msg="Redis not available")) >= 1, "warren logged 'Redis not available'")

    if check_eq(stack("start-redis"), 0, "stack.sh start-redis"):
        redis_stopped = False
    t_back = time.monotonic()
    wall_back = time.time()
    r = redis_client()
    ok = wait_for(lambda: len(w.lines(msg="consuming")) >= consuming_before + CONCURRENCY
                  or not w.alive(), 60, "every worker consuming again")
    check(ok and w.alive(), "every worker consumes again by itself once Redis is back")
    print("  consuming again %.1fs after Redis was back" % (time.monotonic() - t_back), flush=True)

    def drained():
        return b.depth(queue) == 0 and all(b.depth(q) == 0 for q in side_queues) and \
            done_count(r, sub_name) >= TOTAL

    drain_and_stop(w, drained, 150, "every event done after Redis came back")

    # ---- the invariants
    repub = check_outputs(b, out_queue, sub_name, ids)
    check(len(repub) <= CONCURRENCY * BATCH,
          "re-published ids bounded by the in-flight batches (%d <= %d)"
          % (len(repub), CONCURRENCY * BATCH))

    recs = check_done_ok(r, sub_name, ids)
    done_before = sum(1 for i in ids
                      if int(recs.get(i, {}).get("done_at", "0") or 0) < wall_back * 1000)
    print("  %d inputs had left the queues for good during the outage; %d records were written "
          "before Redis came back" % (finished_at_outage, done_before), flush=True)
    check(finished_at_outage <= done_before,
          "nothing was acked without its record (%d acked <= %d recorded before the outage)"
          % (finished_at_outage, done_before))
    restarted = sorted(i for i in ids if int(recs.get(i, {}).get("starts", 0)) > 1)
    print("  %d records claimed more than once" % len(restarted), flush=True)

    handled = handled_once(w)
    check_eq(sorted(i for i in ids if i not in handled), [],
             "every input logged 'message handled' once")
    returned = w.lines(msg="message returned to the queue")
    print("  log: %d 'Redis failed mid-batch', %d 'message returned to the queue' (errors: %s), "
          "%d 'Redis not available', %d 'Redis is back' lines, %d 'consuming'"
          % (len(w.lines(msg="Redis failed mid-batch: messages returned to the queue")),
             len(returned), sorted(set(x.get("error", "") for x in returned)),
             len(w.lines(msg="Redis not available")),
             sum(1 for x in w.lines() if "Redis is back" in x.get("msg", "")),
             len(w.lines(msg="consuming"))), flush=True)
    check_eq([x.get("msg") for x in w.lines(msg="broker connection lost")], [],
             "no broker connection lost (only Redis went away)")
    check_eq(w.lines(level="fatal"), [], "no fatal log line")

    check_clean_end(b, w, queue, all_queues, ": an outage is not a crash")
except Exception:
    traceback.print_exc()
    check(False, "the test ran to its end without an exception")
finally:
    if redis_stopped:
        stack("start-redis")
    if w.alive():
        w.stop()
    b.close()
    delete_queues(all_queues)
finish()
