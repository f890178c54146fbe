"""Reconnect backoff: how soon consumption resumes once a server is back.

Two sidecars run side by side, each on a queue of its own: "dflt" with the
default reconnect settings and "fast" with `amqp.reconnect_max: 1s` and
`redis.reconnect_max: 1s`. Events are published to both queues all along
(a few per second), and each handled event publishes one output.

1. Redis is stopped for REDIS_DOWN seconds, then started again. The test
   notes the moment Redis answers PING again (polled every 50 ms) and, for
   each sidecar, the moment its output count grows again: that gap is the
   resume time.
2. RabbitMQ is stopped, kept down BROKER_DOWN seconds (a short restart; its
   boot adds 5-8 s) and started again. The moment the broker accepts an AMQP
   login again is polled every 100 ms; the resume time is the gap until each
   sidecar has handled a probe event published at that moment.

A reconnect backoff that keeps doubling towards 30 s resumed up to 20 s late
after such a restart. With the cap, every wait a sidecar logs
(`retry_in_ms` of "broker not available" / "Redis not available") is at most
its reconnect_max, and each resumes within reconnect_max plus SLACK seconds
(connecting, declaring the topology and handling one event, on a shared
machine). At the end both exit 0 on SIGTERM and every event published is done.

The servers are shared by the whole ctest run: both are started again in a
`finally`, whatever happened."""
import os
import threading
import time
import traceback

import pika

from wrtest import (AMQP_URL, Broker, Warren, check, check_eq, delete_queues, done_count, finish,
                    idem_record, prefix, redis_client, stack, tempdir, wait_for, write)

REDIS_DOWN = 8        # seconds: long enough for an uncapped backoff to reach 6.4-12.8 s waits
BROKER_DOWN = 2       # seconds between "stopped" and "start again"
SLACK = 2.0           # seconds on top of reconnect_max
CAPS = {"dflt": 5.0, "fast": 1.0}   # the default reconnect_max, and the configured one

p = prefix()
tmp = tempdir()
handler = write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.publish("", event.headers.out, { input = event.id })
end
return M
''')
queues = {n: p + "." + n for n in CAPS}
outs = {n: p + "." + n + ".out" for n in CAPS}
all_queues = [q for n in CAPS for q in (queues[n], queues[n] + ".dlq", queues[n] + ".wait",
                                        outs[n])]

warrens = {}
for name in CAPS:
    warrens[name] = Warren(tmp, [{"name": name, "queue": queues[name], "handler": "h.lua"}],
                           name=name)
# the fast one sets both caps; the default one leaves them out
with open(warrens["fast"].config) as fh:
    text = fh.read()
text = text.replace("  heartbeat: 5s\n", "  heartbeat: 5s\n  reconnect_max: 1s\n", 1)
text = text.replace("  url: ${WARREN_REDIS_URL}\n",
                    "  url: ${WARREN_REDIS_URL}\n  reconnect_max: 1s\n", 1)
write(warrens["fast"].config, text)

published = {n: 0 for n in CAPS}
stop_feed = threading.Event()
pause_feed = threading.Event()


def feed():
    """A few events per second to both queues while the broker is up."""
    conn = None
    while not stop_feed.is_set():
        if pause_feed.is_set():
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
            time.sleep(0.05)
            continue
        try:
            if conn is None:
                conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
                ch = conn.channel()
                ch.confirm_delivery()
            for n in CAPS:
                mid = "%s-%s-%d" % (p, n, published[n])
                ch.basic_publish("", queues[n], b'{"x":1}', pika.BasicProperties(
                    message_id=mid, content_type="application/json", delivery_mode=2,
                    headers={"out": outs[n]}), mandatory=True)
                published[n] += 1
        except Exception:
            conn = None
            time.sleep(0.2)
        time.sleep(0.1)


def waits(w, msg):
    return [x.get("retry_in_ms", 0) for x in w.lines(msg=msg)]


redis_down = broker_down = False
b = None
feeder = threading.Thread(target=feed, daemon=True)
try:
    b = Broker()
    for n in CAPS:
        b.declare(outs[n])
        b.declare(queues[n])
        warrens[n].start()
    for n in CAPS:
        check(warrens[n].wait_consuming(1), "%s consuming" % n)
    feeder.start()
    wait_for(lambda: all(b.depth(outs[n]) >= 5 for n in CAPS), 30, "events flowing")

    # ---- 1. Redis goes away for REDIS_DOWN seconds
    redis_down = True
    check_eq(stack("stop-redis"), 0, "stack.sh stop-redis")
    wait_for(lambda: all(warrens[n].lines(msg="Redis not available") for n in CAPS), 20,
             "both sidecars to notice Redis is gone")
    time.sleep(REDIS_DOWN)
    r = redis_client()
    starter = threading.Thread(target=lambda: stack("start-redis"))
    starter.start()

    def redis_answers():
        try:
            return r.ping()
        except Exception:
            return False

    wait_for(redis_answers, 30, "Redis to answer again", interval=0.05)
    t_back = time.monotonic()
    redis_down = False
    base = {n: b.depth(outs[n]) for n in CAPS}
    resumed = {}
    while len(resumed) < len(CAPS) and time.monotonic() - t_back < 40:
        for n in CAPS:
            if n not in resumed and b.depth(outs[n]) > base[n]:
                resumed[n] = time.monotonic() - t_back
        time.sleep(0.05)
    starter.join()
    for n, cap in CAPS.items():
        longest = max(waits(warrens[n], "Redis not available") or [0])
        print("  %s: Redis reconnect_max %.1fs: longest logged wait %d ms, handling again "
              "%.2fs after Redis answered" % (n, cap, longest, resumed.get(n, -1)), flush=True)
        check(longest <= cap * 1000, "%s: every wait for Redis is at most %.1fs (longest %d ms)"
              % (n, cap, longest))
        check(n in resumed and resumed[n] <= cap + SLACK,
              "%s: handling again within %.1fs of Redis answering (%.2fs)"
              % (n, cap + SLACK, resumed.get(n, -1)))

    # ---- 2. a short broker restart
    consuming = {n: len(warrens[n].lines(msg="consuming")) for n in CAPS}
    pause_feed.set()
    b.close()
    b = None
    broker_down = True
    t_stop = time.monotonic()
    check_eq(stack("stop-rabbit"), 0, "stack.sh stop-rabbit")
    wait_for(lambda: all(warrens[n].lines(msg="broker not available") for n in CAPS), 20,
             "both sidecars to notice the broker is gone")
    time.sleep(BROKER_DOWN)
    starter = threading.Thread(target=lambda: stack("start-rabbit"))
    starter.start()

    def broker_answers():
        try:
            pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
            return True
        except Exception:
            return False

    wait_for(broker_answers, 90, "the broker to accept logins again", interval=0.1)
    t_back = time.monotonic()
    broker_down = False
    print("  broker away for %.1fs (stop, %ds, start)" % (t_back - t_stop, BROKER_DOWN),
          flush=True)
    b = Broker()
    probes = {}
    for n in CAPS:
        probes[n] = "%s-%s-probe" % (p, n)
        b.publish(queues[n], {"probe": 1}, message_id=probes[n], headers={"out": outs[n]})
    rc = redis_client()
    handled, consumed = {}, {}
    while len(handled) < len(CAPS) and time.monotonic() - t_back < 60:
        for n in CAPS:
            if n not in consumed and len(warrens[n].lines(msg="consuming")) > consuming[n]:
                consumed[n] = time.monotonic() - t_back
            if n not in handled and idem_record(rc, n, probes[n]).get("state") == "done":
                handled[n] = time.monotonic() - t_back
        time.sleep(0.05)
    starter.join()
    pause_feed.clear()
    for n, cap in CAPS.items():
        longest = max(waits(warrens[n], "broker not available") or [0])
        print("  %s: amqp reconnect_max %.1fs: longest logged wait %d ms, consuming again %.2fs "
              "and a new event handled %.2fs after the broker was back"
              % (n, cap, longest, consumed.get(n, -1), handled.get(n, -1)), flush=True)
        check(longest <= cap * 1000, "%s: every wait for the broker is at most %.1fs (longest "
              "%d ms)" % (n, cap, longest))
        check(n in handled and handled[n] <= cap + SLACK,
              "%s: a new event handled within %.1fs of the broker being back (%.2fs)"
              % (n, cap + SLACK, handled.get(n, -1)))

    # ---- the end: every event published is done, both stop cleanly
    time.sleep(0.5)
    stop_feed.set()
    feeder.join(10)
    r = redis_client()
    for n in CAPS:
        want = published[n] + 1  # the probe
        wait_for(lambda: done_count(r, n) >= want, 60, "%s: all %d events done" % (n, want),
                 interval=0.5)
        check_eq(done_count(r, n), want, "%s: every event published is done" % n)
        check_eq(warrens[n].stop(), 0, "%s exits 0 on SIGTERM" % n)
except Exception:
    traceback.print_exc()
    check(False, "the test ran to its end without an exception")
finally:
    stop_feed.set()
    if redis_down:
        stack("start-redis")
    if broker_down:
        stack("start-rabbit")
    for w in warrens.values():
        if w.alive():
            w.stop()
    if b is not None:
        b.close()
    delete_queues(all_queues)
finish()
