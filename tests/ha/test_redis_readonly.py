"""A primary that becomes a replica under warren (a failover that did not
close its clients) answers READONLY: an outage, not a message failure.

Two throwaway Redis servers of the test's own (X, the one warren's plain
redis.url names, and Y). A handler holds its message at a gate after the
claim; meanwhile X is made a replica of Y (REPLICAOF). When the gate opens,
the commit meets READONLY: warren must close that connection, log that
Redis is a read-only replica, return the message unacked and pause (never
log "the commit failed" for it, never count it towards the crash-loop
guard, never dead-letter it). Once X is a primary again (REPLICAOF NO ONE),
warren resumes by itself and the message is handled: its record done (ok),
its output published, the DLQ empty."""
import os
import subprocess
import time

import redis as redislib

import hatest  # noqa: F401  (wrtest from tests/integration)
from wrtest import (GATE_LUA, Broker, Gate, Warren, check, check_eq, finish, idem_record, prefix,
                    tempdir, wait_for, write)

PX = int(os.environ.get("WR_HA_REDIS_PORT", "17801")) + 20
PY = PX + 1

p = prefix()
tmp = tempdir()
queue, out_queue, dlq = p + ".in", p + ".out", p + ".in.dlq"
servers = []


def redis_server(port):
    d = os.path.join(tmp, "r%d" % port)
    os.makedirs(d)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", d],
                            stdout=open(os.path.join(d, "log"), "wb"), stderr=subprocess.STDOUT)
    servers.append(proc)
    c = redislib.Redis(host="127.0.0.1", port=port, decode_responses=True)
    wait_for(lambda: _ping(c), 10, "redis-server on %d" % port)
    return c


def _ping(c):
    try:
        return c.ping()
    except redislib.RedisError:
        return False


gate = Gate()
b = Broker()
try:
    x = redis_server(PX)
    y = redis_server(PY)
    write(os.path.join(tmp, "h.lua"), GATE_LUA + r'''
local M = {}
function M.handle(event, ctx)
  gate(ctx, "%s", "commit")
  ctx.publish("", "%s", { input = event.id })
end
return M
''' % (gate.url, out_queue))
    b.declare(queue)
    b.declare(out_queue)
    sub = {"name": "ro", "queue": queue, "handler": "h.lua", "handler_timeout": "60s",
           "retry": {"max_attempts": 2}}
    w = Warren(tmp, [sub])
    with open(w.config) as fh:
        text = fh.read()
    with open(w.config, "w") as fh:
        fh.write(text.replace("redis:\n  url: ${WARREN_REDIS_URL}\n",
                              "redis:\n  url: redis://127.0.0.1:%d/0\n  reconnect_max: 1s\n" % PX))
    w.start()
    check(w.wait_consuming(1), "warren consuming")
    b.publish(queue, {"n": 1}, message_id="ro-1")
    check(gate.wait("commit", 20, "the handler at its gate"), "the message was claimed and runs")
    check_eq(idem_record(x, "ro", "ro-1").get("state"), "processing", "claimed on X")
    x.execute_command("REPLICAOF", "127.0.0.1", str(PY))
    wait_for(lambda: x.info("replication").get("master_link_status") == "up", 20,
             "X replicating from Y")
    gate.open("commit")
    check(wait_for(lambda: any("read-only replica" in str(l.get("error", "")) for l in w.lines()),
                   20, "warren noticed the replica"),
          "warren logged that Redis is a read-only replica")
    time.sleep(2)
    check_eq([l for l in w.lines() if "the commit failed" in str(l.get("error", ""))], [],
             "no message logged as a failed commit")
    check_eq(b.depth(dlq), 0, "nothing dead-lettered")
    x.execute_command("REPLICAOF", "NO", "ONE")
    check(wait_for(lambda: idem_record(x, "ro", "ro-1").get("state") == "done", 30,
                   "the message done on X, a primary again"),
          "warren resumed by itself and handled the message")
    rec = idem_record(x, "ro", "ro-1")
    check_eq(rec.get("outcome"), "ok", "its record says ok")
    check_eq(w.stop(), 0, "warren exits 0 on SIGTERM")
    outs = b.drain(out_queue)
    check_eq([o[0].message_id for o in outs][-1:], ["ro-1:ro:1"], "its output published")
    check_eq(b.depth(queue), 0, "nothing left in the queue")
    check_eq(b.depth(dlq), 0, "the DLQ is empty")
finally:
    gate.close()
    for s in servers:
        s.terminate()
        s.wait()
    b.delete(queue, out_queue, dlq)
    b.close()

finish()
