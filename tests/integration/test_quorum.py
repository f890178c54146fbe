"""A consumed queue that the service's team declared as a quorum queue.

RabbitMQ refuses a plain queue.declare of a queue that exists as a quorum
queue (406 inequivalent arg 'x-queue-type'), so warren must not declare a
consumed queue that exists: it asks first (a passive declare on a throwaway
channel) and takes the queue as it is. Here the queue is a quorum queue
before warren starts; warren must consume it, retry through its (classic)
delay queue back into it, handle every event exactly once, and leave it a
quorum queue.
"""
import json
import os
import sys

import pika

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (Broker, Warren, check, check_eq, delete_queues, finish, prefix,  # noqa: E402
                    tempdir, wait_for, write)

N = 20
p = prefix()
tmp = tempdir()
queue, out_queue = p + ".in", p + ".out"
QUORUM = {"x-queue-type": "quorum"}

write(os.path.join(tmp, "h.lua"), r'''
local M = {}
function M.handle(event, ctx)
  if event.attempt == 1 then error("first attempt fails: retried through the delay queue") end
  ctx.publish("", "%s", { input = event.id, attempt = event.attempt })
end
return M
''' % out_queue)

b = Broker()
w = Warren(tmp, [{"name": "qq", "queue": queue, "handler": "h.lua",
                  "retry": {"max_attempts": 3, "delays": ["1s"]},
                  "breaker": {"enabled": False}}])   # every first attempt fails, on purpose
try:
    b.ch.queue_declare(queue=queue, durable=True, arguments=QUORUM)
    b.declare(out_queue)
    w.start()
    check(w.wait_consuming(1), "warren consumes the quorum queue")
    conflicts = [x.get("error", "") for x in w.lines(msg="broker not available")]
    check_eq(conflicts, [], "no declaration conflict")
    ids = ["%s-%d" % (p, i) for i in range(N)]
    for mid in ids:
        b.publish(queue, {"n": mid}, message_id=mid)
    wait_for(lambda: b.depth(out_queue) >= N, 30, "every event handled on its second attempt")
    outs = [json.loads(body) for _, body in b.drain(out_queue)]
    check_eq(sorted(o["input"] for o in outs), sorted(ids), "each event handled once")
    check(all(o["attempt"] == 2 for o in outs), "each after one retry through the delay queue")
    check_eq(w.stop(), 0, "warren exits 0")
    try:
        b.ch.queue_declare(queue=queue, durable=True, arguments=QUORUM)
        still = True
    except pika.exceptions.ChannelClosedByBroker:
        b.ch = b.conn.channel()
        still = False
    check(still, "the queue is still a quorum queue (declaring it as one is accepted)")
finally:
    if w.alive():
        w.stop()
    b.close()
    delete_queues((queue, queue + ".dlq", queue + ".wait", queue + ".retry.1s", out_queue))
finish()
