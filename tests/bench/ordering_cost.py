"""What ordering and causal gates cost: one warren worker drains N order
events (created, then paid, per order, published in order) through the same
trivial handler (one ctx.store write) under three configs, and the rate is
printed for each:

  plain      idempotency on, no ordering, no gates
  ordering   ordering: {key: json:order_id}  (one Redis read per message: its key's hold)
  gates      paid after created (one read per paid, one release call per created)
  partitions ordering.key and partitions: 4, published straight to the partition
             exchange with the header warren-partition-key (consumers of 4 queues)
  rerouted   the same, published to the queue itself: warren re-routes each
             message into its partition first (a confirmed publish and an ack more)

Each rate is also printed as a ratio against the plain run of the same go.

A benchmark, not a test: it asserts nothing about time. It runs against the
integration tests' stack (WR_STACK_DIR, as tests/integration/wrtest.py reads
it), one config after the other, N (BENCH_ORDERS, default 5000) orders each.

  WR_STACK_DIR=... WR_BUILD_DIR=build-test /usr/bin/python3 tests/bench/ordering_cost.py
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import pika  # noqa: E402
from wrtest import (Broker, Warren, delete_queues, prefix, tempdir, wait_for,  # noqa: E402
                    write)

ORDERS = int(os.environ.get("BENCH_ORDERS", "5000"))
CONFIGS = {
    "plain": {},
    "ordering": {"ordering": {"key": "json:order_id"}},
    "gates": {"gates": [{"type": "order.paid", "after": "order.created",
                         "key": "json:order_id"}]},
    "partitions": {"ordering": {"key": "json:order_id"}, "partitions": 4},
    "rerouted": {"ordering": {"key": "json:order_id"}, "partitions": 4},
}
PARTS = 4


def declare_partitions(ch, queue):
    """The partition topology as warren declares it (topology.h), so the
    events can be published to it before warren starts."""
    ch.exchange_declare(queue + ".partitions", "x-consistent-hash", durable=True,
                        arguments={"hash-header": "warren-partition-key"})
    for i in range(PARTS):
        q = "%s.p%d" % (queue, i)
        ch.queue_declare(q, durable=True, arguments={"x-single-active-consumer": True})
        ch.queue_bind(q, queue + ".partitions", "1")

tmp = tempdir()
write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.store.set("bench:" .. event.data.order_id, event.type)
end
return M
''')

results = {}
for name, extra in CONFIGS.items():
    p = prefix()
    queue = p + ".q"
    sub = {"name": "b" + name, "queue": queue, "handler": "h.lua", "prefetch": 200,
           "batch_size": 100, "idempotency": {"key": "json:event_id"},
           "breaker": {"enabled": False}}
    sub.update(extra)
    b = Broker()
    ch = b.conn.channel()
    if "partitions" in extra:
        ch.queue_declare(queue, durable=True, arguments={"x-single-active-consumer": True})
        declare_partitions(ch, queue)
    else:
        b.declare(queue)
    direct = name == "partitions"
    for i in range(ORDERS):
        oid = "%s-%d" % (p, i)
        for typ in ("order.created", "order.paid"):
            eid = "%s-%s" % (oid, typ)
            ch.basic_publish(queue + ".partitions" if direct else "", "" if direct else queue,
                             json.dumps({"event_id": eid, "order_id": oid}).encode(),
                             pika.BasicProperties(
                                 message_id=eid, type=typ, delivery_mode=2,
                                 headers={"warren-partition-key": oid} if direct else None))
    queues = [queue] + ["%s.p%d" % (queue, i) for i in range(PARTS if "partitions" in extra
                                                                 else 0)]
    wait_for(lambda: sum(b.depth(q) for q in queues) == 2 * ORDERS, 60, "prefilled")
    w = Warren(tmp, [sub], name=name)
    t0 = time.time()
    w.start()
    series = 'warren_messages_handled_total{subscription="b%s",outcome="ok"} ' % name

    def handled():
        try:
            status, text = w.get("/metrics")
        except Exception:
            return 0
        for line in text.splitlines() if status == 200 else []:
            if line.startswith(series):
                return float(line.split()[-1])
        return 0
    ok = wait_for(lambda: handled() >= 2 * ORDERS, 300, "drained", interval=0.1)
    elapsed = time.time() - t0
    w.stop()
    results[name] = (2 * ORDERS / elapsed, ok)
    delete_queues(queues + [queue + ".dlq", queue + ".wait"] +
                  ["%s.retry.%s" % (queue, d) for d in ("1s", "5s", "30s", "2m")])
    if "partitions" in extra:
        b.ch.exchange_delete(queue + ".partitions")
    b.close()
    time.sleep(1)

print("%d messages per config, one worker, startup included" % (2 * ORDERS))
plain = results["plain"][0]
for name, (rate, ok) in results.items():
    print("  %-10s %8.0f msg/s  %5.2f x plain%s" % (name, rate, rate / plain,
                                                   "" if ok else "  (did not drain)"))
