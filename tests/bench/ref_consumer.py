#!/usr/bin/python3
"""ref_consumer: the orders benchmark's "what users write instead" (pika + redis-py).

The consumer a team writes by hand when it has no sidecar: the common
check-then-set pattern, one message at a time, written the way the pika and
redis-py documentation show it.

    for each delivery (prefetch 200, manual acks):
        json.loads(body)                     malformed: basic.reject, no requeue
        EXISTS <prefix>processed:<message id>  -> duplicate: basic.ack
        MULTI
          INCRBY <prefix>inventory:<sku> -quantity     (each item)
          INCRBY <prefix>charged:<customer> total      (integer cents)
          SET <prefix>processed:<message id> 1 EX 604800
        EXEC
        basic.ack (this message)

(The EXISTS and the MULTI are two steps: two copies of a message handled by
two consumers at the same moment can both pass the EXISTS before either EXEC,
and apply the order twice. That is the pattern's known gap; this benchmark
runs one such consumer, so it does not provoke it.)

    /usr/bin/python3 tests/bench/ref_consumer.py --amqp-url amqp://guest:guest@127.0.0.1:5900/ \
        --redis-url redis://127.0.0.1:6500/0 --queue bench.orders.python [--prefix ref:] \
        [--prefetch 200] [--latency]

Runs until SIGTERM or SIGINT; the message being handled is finished and acked,
every delivery not yet handled goes back to the queue (basic.cancel rejects
what pika holds, the channel's close returns the rest).
Then prints one line of JSON: {"handled":..,"duplicates":..,"rejected":..,"cpu_s":..}
and, with --latency, "latency_us": {count, p50, p90, p99, max} of the time from
the body's "sent_us" (the publisher's CLOCK_REALTIME, microseconds) to just
after the message's EXEC and basic.ack.
"""
import argparse
import json
import math
import resource
import signal
import sys
import time

import pika
import redis

PROCESSED_TTL_S = 7 * 24 * 3600


def percentiles(samples):
    """Nearest-rank p50/p90/p99 and max of a list of numbers (None when empty)."""
    if not samples:
        return None
    xs = sorted(samples)

    def rank(p):
        return xs[max(0, math.ceil(p / 100.0 * len(xs)) - 1)]

    return {"count": len(xs), "p50": rank(50), "p90": rank(90), "p99": rank(99), "max": xs[-1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--amqp-url", required=True)
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--prefix", default="ref:", help="prefix of every Redis key written (ref:)")
    ap.add_argument("--prefetch", type=int, default=200)
    ap.add_argument("--latency", action="store_true",
                    help="record sent_us -> ack latency of each message")
    a = ap.parse_args()

    stopping = []

    def on_signal(_signum, _frame):
        stopping.append(True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    r = redis.Redis.from_url(a.redis_url)
    params = pika.URLParameters(a.amqp_url)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=a.prefetch)

    counts = {"handled": 0, "duplicates": 0, "rejected": 0}
    latencies = []
    prefix = a.prefix

    def stop_if_asked():
        if stopping:
            ch.stop_consuming()       # deliveries not handled yet go back to the queue

    def tick():
        stop_if_asked()
        conn.call_later(0.2, tick)

    def on_message(ch, method, props, body):
        if stopping:
            stop_if_asked()
            return
        try:
            order = json.loads(body)
            items = [(it["sku"], int(it["quantity"])) for it in order["items"]]
            customer = order["customer_id"]
            total = int(order["total"])
        except (ValueError, KeyError, TypeError):
            ch.basic_reject(method.delivery_tag, requeue=False)
            counts["rejected"] += 1
            return
        done_key = prefix + "processed:" + props.message_id
        if r.exists(done_key):
            ch.basic_ack(method.delivery_tag)
            counts["duplicates"] += 1
            return
        with r.pipeline(transaction=True) as tx:   # MULTI ... EXEC, one round trip
            for sku, qty in items:
                tx.incrby(prefix + "inventory:" + sku, -qty)
            tx.incrby(prefix + "charged:" + customer, total)
            tx.set(done_key, 1, ex=PROCESSED_TTL_S)
            tx.execute()
        ch.basic_ack(method.delivery_tag)
        counts["handled"] += 1
        if a.latency and "sent_us" in order:
            latencies.append(time.time_ns() // 1000 - order["sent_us"])

    ch.basic_consume(a.queue, on_message)
    conn.call_later(0.2, tick)        # notices a signal while no message arrives
    ch.start_consuming()
    conn.close()

    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = dict(counts, consumer="python-ref", cpu_s=round(ru.ru_utime + ru.ru_stime, 3))
    if a.latency:
        out["latency_us"] = percentiles(latencies)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
