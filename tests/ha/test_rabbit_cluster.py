"""A 3-node RabbitMQ cluster (deploy/local/ha.sh rabbit-start): warren with
amqp.url on node 1 and amqp.urls naming nodes 2 and 3 (the handler spends 5 ms a
message, so the stop catches work left), declaring its queues
as quorum queues (queue_type: quorum, delay_queue_type: quorum; the DLQ is
quorum by default with amqp.urls). Mid-stream, node 1 (the node warren is
connected to, and the leader of the queue, declared through it) is killed
(SIGKILL of its Erlang VM; WR_HA_NODE_STOP=stop stops it with rabbitmqctl
instead).

warren must move to another node by itself (logged "consuming" with another
broker), consumption must resume within seconds, and at the end: every input
handled exactly once (its ctx.store counter in Redis is 1: no effect lost,
none applied twice), every output id published, nothing in the queue or the
DLQ, and the queues warren declared are quorum queues; `warren dlq list`
works while node 1 is down. The longest stall of
the outputs is printed. Node 1 is then started again (it rejoins).

Then a rolling restart under load: a second subscription (100 ms a message)
while nodes 1, 2 and 3 are stopped and started again one after the other
(rabbitmqctl stop, then start: the cluster keeps a majority throughout), each
stop catching inputs not handled yet. Checked as above: nothing lost, nothing
applied twice, every output published, nothing dead-lettered."""
import os
import subprocess
import threading
import time

from hatest import NodeBroker, ha, rabbit_env, store_counts
from wrtest import (ENV, WARREN, Warren, check, check_eq, finish, prefix, redis_client, tempdir,
                    wait_for, write)

EVENTS = int(os.environ.get("WR_HA_EVENTS", "6000"))
CONCURRENCY, BATCH, PREFETCH = 2, 50, 100
ROLL_EVENTS = int(os.environ.get("WR_HA_ROLL_EVENTS", "3000"))
ROLL_WORK_S = 0.1  # 3000 x 100 ms / 2 workers: at least 150 s of work, longer than the restart
HOW = os.environ.get("WR_HA_NODE_STOP", "kill")  # kill (SIGKILL) or stop (rabbitmqctl stop)

RE = rabbit_env()
check("WARREN_AMQP_URLS" in RE, "ha.sh rabbit-start wrote rabbit.env")
urls = RE["WARREN_AMQP_URLS"].split(",")
p = prefix()
tmp = tempdir()
queue, out_queue, dlq = p + ".in", p + ".out", p + ".in.dlq"
SP = p + ":st:"
r = redis_client()
node1_down = False

HANDLER = r'''
local M = {}
function M.handle(event, ctx)
  local t = ctx.now()
  while ctx.now() - t < %s do end  -- work: the node stops must catch some
  ctx.store.incrby("n:" .. event.id, 1)
  ctx.publish("", "%s", { input = event.id })
end
return M
'''


def cluster_warren(name, queue, out_queue, work_s):
    """A warren on the cluster: amqp.url node 1, amqp.urls nodes 2 and 3,
    quorum queues, a handler that works WORK_S seconds per message."""
    write(os.path.join(tmp, name + ".lua"), HANDLER % (work_s, out_queue))
    sub = {"name": name, "queue": queue, "handler": name + ".lua", "concurrency": CONCURRENCY,
           "prefetch": PREFETCH, "batch_size": BATCH, "queue_type": "quorum",
           "delay_queue_type": "quorum", "retry": {"max_attempts": 3}}
    w = Warren(tmp, [sub], name=name)
    with open(w.config) as fh:
        text = fh.read()
    text = text.replace("amqp:\n  url: ${WARREN_AMQP_URL}\n",
                        "amqp:\n  url: %s\n  urls: [%s]\n  reconnect_max: 1s\n"
                        "  connect_timeout: 2s\n" % (urls[0], ", ".join(urls[1:])))
    with open(w.config, "w") as fh:
        fh.write(text + "store:\n  prefix: '%s'\n" % SP)
    return w


w = cluster_warren("cl", queue, out_queue, 0.005)
w2 = None

b = NodeBroker(urls[2])  # node 3 stays up throughout
try:
    b.declare_quorum(out_queue)
    w.start()
    check(w.wait_consuming(CONCURRENCY, timeout=60), "warren consuming on the cluster")
    first = w.lines(msg="consuming")
    check(all(x.get("broker", "").endswith(":%s/" % urls[0].rsplit(":", 1)[1].strip("/"))
              for x in first), "every worker started on node 1 (amqp.url)")
    check(b.is_quorum(queue), "warren declared the consumed queue as a quorum queue")
    check(b.is_quorum(dlq), "the DLQ is a quorum queue (dlq_type auto with amqp.urls)")
    # publish everything while warren is stopped (publishing through pika is
    # slower than warren consumes), then start it again
    check_eq(w.stop(), 0, "warren exits 0 on SIGTERM (queues declared)")
    ids = ["%s-%05d" % (p, i) for i in range(EVENTS)]
    for mid in ids:
        b.publish(queue, {"n": mid}, message_id=mid)
    w.start()
    check(w.wait_consuming(2 * CONCURRENCY, timeout=60), "warren consuming again")
    first = w.lines(msg="consuming")
    wait_for(lambda: b.depth(out_queue) >= EVENTS // 8 or not w.alive(), 120,
             "an eighth of the outputs", interval=0.1)
    t0 = time.monotonic()
    print("  at the kill: %d outputs, %d inputs ready" % (b.depth(out_queue), b.depth(queue)),
          flush=True)
    result = {}
    th = threading.Thread(target=lambda: result.update(rc=ha("rabbit-%s-node-1" % HOW)))
    th.start()
    node1_down = True
    last_n, last_t, stall = b.depth(out_queue), time.monotonic(), 0.0
    grew_after = False
    while not grew_after and time.monotonic() - last_t < 90:
        alive = th.is_alive()
        n, now = b.depth(out_queue), time.monotonic()
        if n > last_n:
            stall = max(stall, now - last_t)
            last_n, last_t = n, now
            grew_after = not alive
        elif not alive and b.depth(queue) == 0:
            break
        time.sleep(0.05)
    th.join()
    check_eq(result.get("rc"), 0, "ha.sh rabbit-%s-node-1" % HOW)
    left = EVENTS - sum(1 for v in store_counts(r, SP, ids).values() if v > 0)
    check(left > 0, "node 1 went down with work left (%d inputs not handled yet)" % left)
    print("  node 1 %s in %.1fs; longest stall of the outputs %.1fs"
          % (HOW, time.monotonic() - t0, stall), flush=True)
    moved = [x for x in w.lines(msg="consuming")[len(first):]]
    check(len(moved) >= CONCURRENCY and all(not x.get("broker", "").endswith(
        ":%s/" % urls[0].rsplit(":", 1)[1].strip("/")) for x in moved),
        "every worker consumes again through another node (%s)"
        % sorted(set(x.get("broker") for x in moved)))
    check(stall < 30, "consumption resumed within 30 s (longest stall %.1fs)" % stall)
    # the operator's tools find a live node too (amqp.url's is down)
    env = dict(os.environ)
    env.update(ENV)
    dl = subprocess.run([WARREN, "dlq", "list", "-c", w.config, "--subscription", "cl", "--json"],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=60)
    check_eq(dl.returncode, 0, "warren dlq list works with node 1 down (%s)"
             % dl.stdout.decode(errors="replace").strip()[:200])
    check(wait_for(lambda: b.depth(queue) == 0 and
                   sum(1 for v in store_counts(r, SP, ids).values() if v > 0) == EVENTS,
                   180, "every input handled", interval=0.5), "the queue drains")
    time.sleep(2)
    check_eq(w.stop(), 0, "warren exits 0 on SIGTERM")
    check_eq(b.depth(queue), 0, "nothing left in the queue")
    counts = store_counts(r, SP, ids)
    lost = sorted(i for i, v in counts.items() if v == 0)
    double = sorted(i for i, v in counts.items() if v > 1)
    outs = b.drain(out_queue)
    out_ids = [x[0].message_id for x in outs]
    print("  RUN rabbit node %s: lost effects %d, double effects %d, outputs re-published %d"
          % (HOW, len(lost), len(double), len(out_ids) - len(set(out_ids))), flush=True)
    check_eq(lost, [], "no effect lost")
    check_eq(double, [], "no effect applied twice")
    check_eq(sorted(set("%s:cl:1" % i for i in ids) - set(out_ids)), [],
             "every output id published")
    check_eq(b.depth(dlq), 0, "nothing dead-lettered")

    # ---- a rolling restart of all three nodes under load
    check_eq(ha("rabbit-start-node-1"), 0, "node 1 started again (it rejoins)")
    node1_down = False
    q2, out2, dlq2 = p + ".roll", p + ".roll.out", p + ".roll.dlq"
    b.declare_quorum(out2)
    w2 = cluster_warren("roll", q2, out2, ROLL_WORK_S)
    w2.start()
    check(w2.wait_consuming(CONCURRENCY, timeout=60), "rolling: warren consuming")
    check_eq(w2.stop(), 0, "rolling: warren exits 0 (queues declared)")
    ids2 = ["%s-r-%05d" % (p, i) for i in range(ROLL_EVENTS)]
    for mid in ids2:
        b.publish(q2, {"n": mid}, message_id=mid)
    b.close()
    w2.start()
    check(w2.wait_consuming(2 * CONCURRENCY, timeout=60), "rolling: warren consuming again")
    t0 = time.monotonic()
    for n in (1, 2, 3):
        check_eq(ha("rabbit-stop-node-%d" % n), 0, "rolling: node %d stopped" % n)
        left = ROLL_EVENTS - sum(1 for v in store_counts(r, SP, ids2).values() if v > 0)
        print("  rolling: node %d down, %d inputs left" % (n, left), flush=True)
        check(left > 0, "rolling: node %d stopped under load (%d inputs left)" % (n, left))
        check_eq(ha("rabbit-start-node-%d" % n), 0, "rolling: node %d started" % n)
    print("  rolling restart of 3 nodes took %.1fs" % (time.monotonic() - t0), flush=True)
    b = NodeBroker(urls[0])
    check(wait_for(lambda: b.depth(q2) == 0 and
                   sum(1 for v in store_counts(r, SP, ids2).values() if v > 0) == ROLL_EVENTS,
                   240, "rolling: every input handled", interval=0.5), "rolling: the queue drains")
    time.sleep(2)
    check_eq(w2.stop(), 0, "rolling: warren exits 0 on SIGTERM")
    counts = store_counts(r, SP, ids2)
    lost = sorted(i for i, v in counts.items() if v == 0)
    double = sorted(i for i, v in counts.items() if v > 1)
    outs = b.drain(out2)
    out_ids = [x[0].message_id for x in outs]
    moves = len(w2.lines(msg="consuming"))
    print("  RUN rabbit rolling restart: lost effects %d, double effects %d, outputs "
          "re-published %d, worker connections %d" % (len(lost), len(double),
                                                       len(out_ids) - len(set(out_ids)), moves),
          flush=True)
    check_eq(lost, [], "rolling: no effect lost")
    check_eq(double, [], "rolling: no effect applied twice")
    check_eq(sorted(set("%s:roll:1" % i for i in ids2) - set(out_ids)), [],
             "rolling: every output id published")
    check_eq(b.depth(dlq2), 0, "rolling: nothing dead-lettered")
    b.delete(q2, out2, dlq2)
finally:
    if w.alive():
        w.stop()
    if w2 is not None and w2.alive():
        w2.stop()
    if node1_down:
        ha("rabbit-start-node-1")
    try:
        b.delete(queue, out_queue, dlq)
    except Exception:
        pass
    b.close()

finish()
