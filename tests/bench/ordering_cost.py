"""What ordering and causal gates cost: one warren worker drains N order
events (created, then paid, per order, published in order) through the same
trivial handler (one ctx.store write) under three configs, and the rate is
printed for each:

  plain      idempotency on, no ordering, no gates
  ordering   ordering: {key: json:order_id}  (one Redis read per message: its key's hold)
  gates      paid after created (one read per paid, one release call per created)

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
}

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
    b.declare(queue)
    ch = b.conn.channel()
    for i in range(ORDERS):
        for typ in ("order.created", "order.paid"):
            eid = "%s-%d-%s" % (p, i, typ)
            ch.basic_publish("", queue, json.dumps({"event_id": eid, "order_id": "%s-%d" % (p, i)})
                             .encode(), pika.BasicProperties(message_id=eid, type=typ,
                                                             delivery_mode=2))
    wait_for(lambda: b.depth(queue) == 2 * ORDERS, 60, "prefilled")
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
    delete_queues([queue, queue + ".dlq", queue + ".wait"])
    b.close()
    time.sleep(1)

print("%d messages per config, one worker, startup included" % (2 * ORDERS))
for name, (rate, ok) in results.items():
    print("  %-9s %8.0f msg/s%s" % (name, rate, "" if ok else "  (did not drain)"))
