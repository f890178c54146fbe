"""Partitioned subscriptions (`partitions: 4`, ordering key json:key): per-key
order across two warren processes, one of them killed with kill -9.

- Topology: warren declares the consistent-hash exchange <queue>.partitions
  (x-consistent-hash, hash-header warren-partition-key) and the queues
  <queue>.p0 .. p3, each single active consumer; both processes (2 workers
  each) consume every partition: each partition has 4 consumers, one of
  them active.
- Events: 300 keys with 12 events each (seq 1..12), published straight to
  the partition exchange with the header set to the key, the keys' events
  interleaved; 3 % of them (WR_PARTITION_FAIL_RATE) fail once (a retry
  through the delay queue, which must bring the copy back to its partition,
  behind which the key's later events wait).
- The process that holds work is killed with kill -9 once half the events
  are done, and not restarted: the other takes its partitions over.
- The handler checks that an event's seq is the one after the last applied
  for its key (a violation otherwise), stores it, and counts its run per
  event (hincrby, committed with its idempotency record).

Afterwards every key's last applied seq is 12, no event ran out of order,
every event took effect exactly once, and the partitions, the DLQ and the
queue are empty. Then re-routing: events published to the plain queue (as a
producer that cannot set the header does) reach the handler through the
partitions, in order, and the queue is left empty. Counted from Redis."""
import json
import os
import random
import time

import pika

from wrtest import (Broker, Warren, check, check_eq, delete_queues, finish, prefix, redis_client,
                    tempdir, wait_for, write, held_by)

KEYS = int(os.environ.get("WR_PARTITION_KEYS", "300"))
EVENTS = 12
N = 4
rng = random.Random(int(os.environ.get("WR_PARTITION_SEED", "16")))
# the share of events that fail once: more of them make it likelier that the kill catches
# a key whose next event the dead process holds while an earlier one is retried
FAIL_RATE = float(os.environ.get("WR_PARTITION_FAIL_RATE", "0.03"))
p = prefix()
tmp = tempdir()
r = redis_client()
queue = p + ".parts"
exchange = queue + ".partitions"
parts = ["%s.p%d" % (queue, i) for i in range(N)]
SUB = "parts"
S = "warren:store:pt:%s:" % p

write(os.path.join(tmp, "h.lua"), r'''
local P = "pt:%s:"
local M = {}
function M.handle(event, ctx)
  local d = event.data
  if d.fail_once and ctx.attempt == 1 then
    error("injected failure")
  end
  local key = P .. "k:" .. d.key
  local last = tonumber(ctx.store.get(key) or "0")
  if d.seq ~= last + 1 then
    ctx.store.incrby(P .. "violations", 1)
    ctx.store.hset(P .. "bad", d.event_id, tostring(last))
  end
  ctx.store.set(key, tostring(d.seq))
  ctx.store.hincrby(P .. "fx:" .. d.key, tostring(d.seq), 1)
  ctx.store.incrby(P .. "applied", 1)
end
return M
''' % p)

sub = {"name": SUB, "queue": queue, "handler": "h.lua", "concurrency": 2, "prefetch": 50,
       "batch_size": 20, "idempotency": {"key": "json:event_id", "lease": "3s"},
       "retry": {"max_attempts": 5, "delays": ["1s"]}, "breaker": {"enabled": False},
       "ordering": {"key": "json:key"}, "partitions": N}


def applied():
    return int(r.get(S + "applied") or 0)


def events(keys, first_seq, last_seq, fail_rate):
    """The events of KEYS with seq FIRST..LAST, each key's in order, keys interleaved."""
    todo = {k: list(range(first_seq, last_seq + 1)) for k in keys}
    out = []
    while todo:
        k = rng.choice(sorted(todo))
        seq = todo[k].pop(0)
        if not todo[k]:
            del todo[k]
        body = {"event_id": "%s-%d" % (k, seq), "key": k, "seq": seq}
        if rng.random() < fail_rate:
            body["fail_once"] = True
        out.append(body)
    return out


def check_keys(keys, last_seq, what):
    pipe = r.pipeline()
    for k in keys:
        pipe.get(S + "k:" + k)
        pipe.hgetall(S + "fx:" + k)
    got = pipe.execute()
    wrong_last, wrong_fx = [], []
    for n, k in enumerate(keys):
        last, fx = got[2 * n], got[2 * n + 1]
        if last != str(last_seq):
            wrong_last.append((k, last))
        if fx != {str(s): "1" for s in range(1, last_seq + 1)}:
            wrong_fx.append((k, fx))
    check_eq(wrong_last[:5], [], "%s: every key's last applied event is #%d (%d wrong)"
             % (what, last_seq, len(wrong_last)))
    check_eq(wrong_fx[:5], [], "%s: every event took effect exactly once (%d keys wrong)"
             % (what, len(wrong_fx)))
    check_eq(int(r.get(S + "violations") or 0), 0,
             "%s: no event ran out of its key's order (%s)"
             % (what, list((r.hgetall(S + "bad") or {}).items())[:5]))


w1 = Warren(tmp, [sub], name="w1")
w2 = Warren(tmp, [sub], name="w2")
b = Broker()
try:
    w1.start()
    check(w1.wait_consuming(2), "w1 consumes")
    w2.start()
    check(w2.wait_consuming(2), "w2 consumes")
    # the topology, as the broker has it
    args = b.ch.exchange_declare(exchange=exchange, exchange_type="x-consistent-hash",
                                 durable=True, passive=True)
    check(args is not None, "the partition exchange %s exists" % exchange)
    for q in parts:
        check(wait_for(lambda: b.consumers(q) == 4, 10, "4 consumers on " + q),
              "%s: every worker of both processes consumes it (%d consumers)"
              % (q, b.consumers(q)))
    try:
        b.ch.queue_declare(queue=parts[0], durable=True,
                           arguments={"x-single-active-consumer": False})
        check(False, "a partition is declared single active consumer")
    except pika.exceptions.ChannelClosedByBroker as e:
        check("x-single-active-consumer" in str(e), "a partition is single active consumer (%s)"
              % e)
        b.ch = b.conn.channel()
        b.ch.confirm_delivery()

    # a retry copy comes back through the partition exchange (to its partition),
    # not to the queue: the delay queue dead-letters there
    try:
        b.ch.queue_declare(queue=queue + ".retry.1s", durable=True, arguments={
            "x-message-ttl": 1000, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue})
        check(False, "the delay queue dead-letters into the partition exchange")
    except pika.exceptions.ChannelClosedByBroker as e:
        check("x-dead-letter-exchange" in str(e) and exchange in str(e),
              "the delay queue dead-letters into the partition exchange (%s)" % e)
        b.ch = b.conn.channel()
        b.ch.confirm_delivery()

    keys = ["k%04d" % i for i in range(KEYS)]
    stream = events(keys, 1, EVENTS, FAIL_RATE)
    fails = sum(1 for e in stream if e.get("fail_once"))
    ch = b.conn.channel()  # no confirm per message: the count is checked instead
    t0 = time.time()
    for e in stream:
        ch.basic_publish(exchange, "", json.dumps(e).encode(), pika.BasicProperties(
            message_id=e["event_id"], type="ev", delivery_mode=2, content_type="application/json",
            headers={"warren-partition-key": e["key"]}))
    print("  %d keys, %d events (%d fail once) published to %s in %.1f s"
          % (KEYS, len(stream), fails, exchange, time.time() - t0), flush=True)
    spread = [b.depth(q) for q in parts]
    print("  ready per partition right after publishing: %s" % spread, flush=True)

    # kill -9 whichever process holds work, once half the events are applied
    check(wait_for(lambda: applied() >= len(stream) // 2, 120, "half the events applied",
                   interval=0.02), "half the events were applied (%d)" % applied())
    # the broker gave each partition to the first consumer it got: kill the process
    # that has been running them (the other one waits, consuming, with nothing)
    ran = {w: len(w.lines(msg="message handled")) for w in (w1, w2)}
    victim, survivor = (w1, w2) if ran[w1] >= ran[w2] else (w2, w1)
    before = applied()
    pid = victim.proc.pid
    victim.kill9()
    held = held_by(r, SUB, pid)
    print("  kill -9 %s at %d of %d applied (it had handled %d, the other %d; %d claims held)"
          % (victim.log_path.rsplit("/", 1)[-1], before, len(stream), ran[victim],
             ran[survivor], len(held)), flush=True)
    check(ran[victim] > 0, "the killed process was running partitions")
    workers = sorted(set(l.get("worker") for l in victim.lines(msg="message handled")))
    check_eq(workers, [0, 1], "its partitions were spread over its two workers")
    for q in parts:
        check(wait_for(lambda: b.consumers(q) == 2, 20, "2 consumers left on " + q),
              "%s: the survivor's 2 workers consume it" % q)
    t_kill = time.time()
    check(wait_for(lambda: applied() >= len(stream), 240, "every event applied", interval=0.2),
          "every event was applied after the takeover (%d of %d)" % (applied(), len(stream)))
    print("  the other %d events applied %.1f s after the kill" % (len(stream) - before,
                                                                  time.time() - t_kill),
          flush=True)
    time.sleep(3)  # a late duplicate run would show by now
    check(len(survivor.lines(msg="message handled")) > ran[survivor],
          "the survivor took the partitions over")
    check_keys(keys, EVENTS, "exchange")
    check_eq(applied(), len(stream), "each event applied once in all")
    for q in parts:
        check(wait_for(lambda: b.depth(q) == 0, 15, q + " empty"), "%s is empty" % q)
    check_eq(b.depth(queue + ".dlq"), 0, "the DLQ is empty")
    retried = sum(len(x.lines(msg="message scheduled for retry")) for x in (w1, w2))
    check(retried > 0, "messages were retried through the delay queue (%d)" % retried)

    # re-routing: a producer that publishes to the queue itself
    keys2 = ["r%03d" % i for i in range(60)]
    stream2 = events(keys2, 1, 5, 0.0)
    base = applied()
    for e in stream2:
        ch.basic_publish("", queue, json.dumps(e).encode(), pika.BasicProperties(
            message_id=e["event_id"], type="ev", delivery_mode=2,
            content_type="application/json"))
    check(wait_for(lambda: applied() >= base + len(stream2), 60, "re-routed events applied",
                   interval=0.1),
          "the events published to %s were applied (%d of %d)"
          % (queue, applied() - base, len(stream2)))
    time.sleep(2)
    check_keys(keys2, 5, "re-routed")
    check_eq(b.depth(queue), 0, "the queue itself is empty (every message re-routed and acked)")
    check(len(survivor.lines(msg="re-routing the queue into its partitions")) >= 1,
          "the survivor logged that it re-routes %s" % queue)
    # /metrics reads every partition's depth (http.queue_poll: 1 s)
    def depths():
        samples = survivor.metrics()
        return [survivor.metric(samples, "warren_queue_messages", subscription=SUB, queue=q,
                                kind="partition") for q in parts]
    check(wait_for(lambda: depths() == [0.0] * N, 10, "partition depths in /metrics"),
          "/metrics shows each partition's depth (%s)" % depths())
    check_eq(survivor.stop(), 0, "the survivor exits 0")
finally:
    for x in (w1, w2):
        if x.alive():
            x.stop()
    delete_queues([queue, queue + ".dlq", queue + ".wait", queue + ".retry.1s"] + parts)
    try:
        c = Broker()
        c.ch.exchange_delete(exchange=exchange)
        c.close()
    except Exception as e:
        print("  cleanup: %s" % e, flush=True)
    b.close()
finish()
