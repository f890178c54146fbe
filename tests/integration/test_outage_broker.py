"""Broker outage: stop RabbitMQ while 10,000 persistent events flow, start it
again a few seconds later. warren must rebuild its connections by itself
(a "consuming" line per worker again), and at the end: every input has
exactly one done record (outcome ok), the distinct outgoing ids are exactly
the inputs' `<id>:<subscription>:1`, no input was logged "message handled" twice, nothing
is left in any queue, and warren exits 0 on SIGTERM.

A batch in flight when the broker went away is not acked; the broker
redelivers it and it runs again (by the same worker under its own claim, or
by the other one once the claim's lease has ended), publishing the same
output ids again. Those re-publishes are counted and bounded by the
in-flight batches (concurrency x batch_size), and reported.

retry.max_attempts is 1 and the lease 5 s, shorter than the outage: the
worker that reconnects first finds the other worker's claims expired and
takes them over. That is not a crash, so the crash-loop guard (starts beyond
attempts are runs that died) must not dead-letter anything: the DLQ stays
empty, every record's outcome is ok.

The servers are shared by the whole ctest run: RabbitMQ is started again in
a `finally`, whatever happened."""
import threading
import time
import traceback


from wrtest import (Broker, Warren, check, check_clean_end, check_done_ok, check_eq,
                    check_outputs, delete_queues, done_count, drain_and_stop, finish,
                    handled_once, prefix, redis_client, stack, tempdir, wait_for, work_handler)

FIRST = 8000          # published before the outage
TOTAL = 10000         # the rest is published once the broker is back
CONCURRENCY, BATCH, PREFETCH = 2, 50, 100
DOWN_FOR = 4          # seconds between "stopped" and "start again"


p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
sub_name = "brk"
all_queues = (queue, queue + ".wait", queue + ".dlq", out_queue)
r = redis_client()
ids = ["b-%05d" % i for i in range(TOTAL)]

# About 5 ms of work per event, so the flow lasts long enough to be cut even when
# `stack.sh stop-rabbit` takes a while (rabbitmqctl boots its own Erlang VM).
work_handler(tmp, out_queue, 0.005)

sub = {"name": sub_name, "queue": queue, "handler": "work.lua", "concurrency": CONCURRENCY,
       "prefetch": PREFETCH, "batch_size": BATCH, "retry": {"max_attempts": 1},
       "idempotency": {"lease": "5s"}}
w = Warren(tmp, [sub])
b = None
rabbit_stopped = False
try:
    b = Broker()
    b.declare(out_queue)
    b.declare(queue)
    t0 = time.monotonic()
    for mid in ids[:FIRST]:
        b.publish(queue, {"n": mid}, message_id=mid)
    print("  published %d events in %.1fs" % (FIRST, time.monotonic() - t0), flush=True)

    w.start()
    check(w.wait_consuming(CONCURRENCY), "warren consuming (%d workers)" % CONCURRENCY)
    wait_for(lambda: b.depth(out_queue) >= 1000, 60, "1000 outputs before the outage", interval=0.05)
    before = b.depth(out_queue)
    consuming_before = len(w.lines(msg="consuming"))
    b.close()
    b = None

    print("  stopping RabbitMQ with %d outputs out, %d consuming lines" % (before, consuming_before),
          flush=True)
    # The output depth at the stop, as the test sees it: a connection of its own
    # reads it every 50 ms until the broker goes away; the last reading is the cut.
    at_stop = {}

    def watch():
        try:
            wb = Broker()
            while True:
                at_stop["outputs"] = wb.depth(out_queue)
                time.sleep(0.05)
        except Exception:
            pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_for(lambda: "outputs" in at_stop, 10, "the depth watcher")
    rabbit_stopped = True
    check_eq(stack("stop-rabbit"), 0, "stack.sh stop-rabbit")
    watcher.join(10)
    wait_for(lambda: len(w.lines(msg="broker not available")) >= 1 or not w.alive(), 20,
             "warren to notice the broker is gone")
    time.sleep(DOWN_FOR)
    check(w.alive(), "warren is still running while the broker is down")
    lost = w.lines(msg="broker connection lost") + \
        w.lines(msg="broker connection lost mid-batch; nothing acked")
    check(len(lost) >= 1, "warren logged the lost connection (%d lines)" % len(lost))
    cut = at_stop.get("outputs")
    check(not watcher.is_alive() and cut is not None and before <= cut < FIRST,
          "the outage cut the stream: %r of %d outputs out when the broker went away"
          % (cut, FIRST))
    if check_eq(stack("start-rabbit"), 0, "stack.sh start-rabbit"):
        rabbit_stopped = False
    t_back = time.monotonic()

    ok = wait_for(lambda: len(w.lines(msg="consuming")) >= consuming_before + CONCURRENCY
                  or not w.alive(), 90, "every worker consuming again")
    check(ok and w.alive(), "every worker reconnected by itself and logs 'consuming' again")
    print("  consuming again %.1fs after the broker was back" % (time.monotonic() - t_back),
          flush=True)

    b = Broker()
    for mid in ids[FIRST:]:
        b.publish(queue, {"n": mid}, message_id=mid)
    print("  published the last %d events after the restart" % (TOTAL - FIRST), flush=True)

    def drained():
        return b.depth(queue) == 0 and b.depth(queue + ".wait") == 0 and \
            done_count(r, sub_name) >= TOTAL

    drain_and_stop(w, drained, 150, "every event done after the restart")

    # ---- the invariants
    repub = check_outputs(b, out_queue, sub_name, ids)
    check(len(repub) <= CONCURRENCY * BATCH,
          "re-published ids bounded by the in-flight batches (%d <= %d)"
          % (len(repub), CONCURRENCY * BATCH))

    recs = check_done_ok(r, sub_name, ids)
    check_eq(sorted(k for k in recs if k not in set(ids)), [], "no record for anything else")
    restarted = sorted(i for i in ids if int(recs.get(i, {}).get("starts", 0)) > 1)
    print("  %d records claimed more than once (redelivered after the outage before their "
          "record was written)" % len(restarted), flush=True)

    handled = handled_once(w)
    unlogged = sorted(i for i in ids if i not in handled)
    ack_lost = [i for i in unlogged if recs.get(i, {}).get("outcome") == "ok"]
    print("  %d inputs without a 'message handled' line; %d of them recorded ok (handled, the ack "
          "lost with the connection, then skipped as a duplicate): %s"
          % (len(unlogged), len(ack_lost), ack_lost[:10]), flush=True)
    print("  log: %d 'broker connection lost', %d 'broker connection lost mid-batch', "
          "%d 'broker not available', %d 'consuming'"
          % (len(w.lines(msg="broker connection lost")),
             len(w.lines(msg="broker connection lost mid-batch; nothing acked")),
             len(w.lines(msg="broker not available")), len(w.lines(msg="consuming"))), flush=True)
    check_eq(w.lines(level="fatal"), [], "no fatal log line")

    check_clean_end(b, w, queue, all_queues, ": an outage is not a crash")
except Exception:
    traceback.print_exc()
    check(False, "the test ran to its end without an exception")
finally:
    if rabbit_stopped:
        stack("start-rabbit")
    if w.alive():
        w.stop()
    if b is not None:
        b.close()
    delete_queues(all_queues)
finish()
