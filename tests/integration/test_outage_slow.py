"""Slow dependencies: a slow handler and a Redis that stalls, with a short
AMQP heartbeat (2 s).

3,000 events flow through 2 workers. Most publish one output each after a
few ms of work. Two runs of 6 consecutive events are slow: the handler
busy-loops 3 s (handler_timeout 10 s) and publishes nothing, like a handler
that calls a slow service. A worker's batch (batch_size 10) holds several of
them in a row, so the handler keeps the worker busy for 6 s or more without
any AMQP traffic of its own (warren publishes a handler's events right after
the call, and that traffic would count as a heartbeat to the broker: a slow
handler that publishes nothing is the case that needs real heartbeats).
RabbitMQ closes a connection after 2 to 3 heartbeat intervals without
traffic, so a 2 s heartbeat needs warren to keep talking while handlers run.
Meanwhile Redis stalls 3 s, three times (`DEBUG SLEEP 3`; when the server
refuses DEBUG, as Redis 7 does by default, `CLIENT PAUSE 3000 ALL`, which
holds every command the same way), longer than warren's Redis timeout (2 s).

What must hold: the broker never drops warren's connection for missed
heartbeats (no "broker connection lost" line in warren's log, no "missed
heartbeats" in the node's log), and everything is processed once: every
input has one done record (ok), every slow event's handler ran once (once more
only when a stall returned its batch, each return logged per message with how far
its record got), the
distinct output ids are exactly the publishing inputs' `<id>:<subscription>:1`, nothing
left in any queue, warren exits 0 on SIGTERM.
A Redis stall may cost re-publishes of the same ids (a batch whose record
could not be written is returned and re-run): they are reported and bounded
by the in-flight batches per stall.

Redis is stalled, never stopped; the stall ends by itself."""
import collections
import os
import subprocess
import time
import traceback
from urllib.parse import urlparse


from wrtest import (Broker, ENV, Warren, check, check_clean_end, check_connection_kept,
                    check_done_ok, check_eq, check_outputs, delete_queues, done_count,
                    drain_and_stop, finish, handled_once, node_log_size, prefix, redis_client,
                    tempdir, write)

TOTAL = 3000
SLOW = set(range(700, 706)) | set(range(1900, 1906))
CONCURRENCY, BATCH, PREFETCH = 2, 10, 20
STALLS = (2.0, 9.0, 16.0)   # seconds after warren starts consuming
STALL_S = 3
REDIS_PORT = urlparse(ENV["WARREN_REDIS_URL"]).port


def redis_cli(*args):
    p = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(REDIS_PORT)] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return p.stdout.decode("utf-8", "replace").strip()


def stall_method():
    reply = redis_cli("DEBUG", "SLEEP", "0")
    if reply == "OK":
        return "debug-sleep"
    print("  DEBUG SLEEP refused (%s); stalling with CLIENT PAUSE instead" % reply.splitlines()[0],
          flush=True)
    return "client-pause"


def stall(method):
    t0 = time.monotonic()
    if method == "debug-sleep":
        reply = redis_cli("DEBUG", "SLEEP", str(STALL_S))
    else:
        reply = redis_cli("CLIENT", "PAUSE", str(STALL_S * 1000), "ALL")
        time.sleep(max(0, t0 + STALL_S - time.monotonic()))
    print("  Redis stalled %ds (%s: %s)" % (STALL_S, method, reply), flush=True)
    return reply == "OK"


p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
side_queues = (queue + ".wait", queue + ".retry.1s")
all_queues = (queue,) + side_queues + (queue + ".dlq", out_queue)
sub_name = "slow"
r = redis_client()
ids = ["s-%05d" % i for i in range(TOTAL)]
slow_ids = set(ids[i] for i in SLOW)
publishing = [i for i in ids if i not in slow_ids]

write(os.path.join(tmp, "work.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.log.info("handler ran", { slow = event.data.slow })
  local t = ctx.now()
  if event.data.slow then
    while ctx.now() - t < 3 do end    -- a slow call that publishes nothing
    return
  end
  while ctx.now() - t < 0.004 do end
  ctx.publish("", "%s", { input = event.id })
end
return M
''' % out_queue)

sub = {"name": sub_name, "queue": queue, "handler": "work.lua", "concurrency": CONCURRENCY,
       "prefetch": PREFETCH, "batch_size": BATCH, "handler_timeout": "10s",
       "retry": {"max_attempts": 3, "delays": ["1s"]}, "idempotency": {"lease": "15s"}}
w = Warren(tmp, [sub], heartbeat="2s")

b = Broker()
method = stall_method()
node_off = node_log_size()
try:
    b.declare(out_queue)
    b.declare(queue)
    for i, mid in enumerate(ids):
        b.publish(queue, {"n": mid, "slow": i in SLOW}, message_id=mid)

    w.start()
    t_start = time.monotonic()
    check(w.wait_consuming(CONCURRENCY), "warren consuming (%d workers)" % CONCURRENCY)
    for at in STALLS:
        time.sleep(max(0, t_start + at - time.monotonic()))
        print("  t=%.0fs: %d outputs, %d ready" % (time.monotonic() - t_start, b.depth(out_queue),
                                                  b.depth(queue)), flush=True)
        check(stall(method), "Redis stalled at t=%.0fs" % at)

    def drained():
        return b.depth(queue) == 0 and all(b.depth(q) == 0 for q in side_queues) and \
            done_count(r, sub_name) >= TOTAL

    drain_and_stop(w, drained, 90, "every event done", started=t_start)

    check_connection_kept(w, node_off, "heartbeat")

    repub = check_outputs(b, out_queue, sub_name, publishing, what="publishing input")
    check(len(repub) <= len(STALLS) * CONCURRENCY * BATCH,
          "re-published ids bounded by the batches in flight at the stalls (%d <= %d)"
          % (len(repub), len(STALLS) * CONCURRENCY * BATCH))

    check_done_ok(r, sub_name, ids, " (no timeout, no DLQ)")

    runs = {}
    for x in w.lines(msg="handler ran"):
        runs[x.get("message_id")] = runs.get(x.get("message_id"), 0) + 1
    slow_runs = {i: runs.get(i, 0) for i in sorted(slow_ids)}
    print("  handler runs of the slow events: %s" % slow_runs, flush=True)
    print("  handler runs in all: %d for %d inputs; %d inputs ran more than once"
          % (sum(runs.values()), TOTAL, sum(1 for v in runs.values() if v > 1)), flush=True)
    # A stall that outlasts the Redis timeout while a batch is in flight makes
    # warren return the batch (it never acks on guesswork): each message whose
    # handler ran is logged as returned, saying how far its record got. Not
    # written (its commit never went out): it must run again. Maybe written
    # (the commit went out, the answer never came): it may. Nothing else may
    # make a slow event run twice.
    returned = [x for x in w.lines(msg="message returned to the queue")
                if "idempotency record" in x.get("error", "")]
    may = collections.Counter(x.get("message_id") for x in returned)
    must = collections.Counter(x.get("message_id") for x in returned
                               if "record could not be written" in x.get("error", ""))
    print("  slow events returned by a stall: %s"
          % {i: may[i] for i in sorted(slow_ids) if may[i]}, flush=True)
    check_eq(sorted(i for i, n in slow_runs.items() if not 1 + must[i] <= n <= 1 + may[i]), [],
             "every slow event ran once, plus once more for each stall that returned it "
             "(always when its record's commit had not gone out)")
    check_eq(sorted(i for i in ids if not 1 + must[i] <= runs.get(i, 0) <= 1 + may[i]), [],
             "every input ran once, plus once more for each stall that returned it")
    handled_once(w)
    print("  log: %d 'Redis failed mid-batch', %d 'pausing consumption', %d 'Redis not available', "
          "%d 'message returned to the queue', %d 'consuming'"
          % (len(w.lines(msg="Redis failed mid-batch: messages returned to the queue")),
             sum(1 for x in w.lines() if "pausing consumption" in x.get("msg", "")),
             len(w.lines(msg="Redis not available")),
             len(w.lines(msg="message returned to the queue")), len(w.lines(msg="consuming"))),
          flush=True)
    check_eq(w.lines(level="fatal"), [], "no fatal log line")

    check_clean_end(b, w, queue, all_queues)
except Exception:
    traceback.print_exc()
    check(False, "the test ran to its end without an exception")
finally:
    if w.alive():
        w.stop()
    b.close()
    delete_queues(all_queues)
finish()
