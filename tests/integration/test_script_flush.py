"""Redis forgets warren's scripts (SCRIPT FLUSH, or a failover to a server that
never loaded them) while warren is busy: the claim or commit that meets
NOSCRIPT is loaded and sent again on the same connection, with other calls in
flight on it, and nothing is lost, run twice or returned to the queue. The
handler counts its committed runs per message in ctx.store; the test counts
them in Redis."""
import os
import threading
import time

from wrtest import (Broker, Warren, check, check_eq, finish, prefix, redis_client, tempdir,
                    wait_for, write)

N = 3000
p = prefix()
tmp = tempdir()
queue = p + ".in"
SP = p + ":store:"
r = redis_client()
write(os.path.join(tmp, "h.lua"), r'''
return { handle = function(event, ctx)
  ctx.store.incrby("runs:" .. event.id, 1)
  ctx.store.incrby("total", 1)
end }
''')

b = Broker()
b.declare(queue)
sub = {"name": "flush", "queue": queue, "handler": "h.lua", "prefetch": 100, "batch_size": 20}
w = Warren(tmp, [sub], extra="store:\n  prefix: \"%s\"\n" % SP).start()
check(w.wait_consuming(1), "consuming")

flushes = [0]
stop = threading.Event()


def flusher():
    fr = redis_client()
    while not stop.is_set():
        fr.script_flush()
        flushes[0] += 1
        time.sleep(0.01)


t = threading.Thread(target=flusher, daemon=True)
t.start()
for i in range(N):
    b.publish(queue, {"i": i}, message_id="m-%d" % i)
wait_for(lambda: r.get(SP + "total") == str(N), 240, "every message committed")
stop.set()
t.join()
print("  %d SCRIPT FLUSHes while %d messages ran" % (flushes[0], N), flush=True)
check(flushes[0] >= 20, "the scripts were flushed many times (%d)" % flushes[0])
time.sleep(1)
check_eq(b.depth(queue), 0, "nothing left in the queue")
check_eq(b.depth(queue + ".dlq"), 0, "nothing dead-lettered")
keys = list(r.scan_iter(match=SP + "runs:*", count=5000))
vals = r.mget(keys) if keys else []
check_eq(len(keys), N, "every message ran")
check_eq(sorted(set(vals)), ["1"], "each exactly once")
check_eq(r.get(SP + "total"), str(N), "the total")
check_eq(w.lines(msg="Redis failed mid-batch: messages returned to the queue"), [],
         "no batch returned: NOSCRIPT is handled on the connection")
check_eq(w.stop(), 0, "warren exits 0")
b.delete(queue, queue + ".dlq", queue + ".wait", *["%s.retry.%s" % (queue, x)
                                                   for x in ("1s", "5s", "30s", "2m")])
b.close()
finish()
