"""Redis Cluster is not supported, and says so: pointed at a cluster node,
warren does not connect (the log says "Redis Cluster is not supported"),
consumes nothing (the message stays in the queue, no handler runs) and keeps
retrying as in any Redis outage; it stops cleanly on SIGTERM."""
import os
import subprocess
import time

import redis as redislib

import hatest  # noqa: F401  (wrtest from tests/integration)
from wrtest import Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write

PORT = int(os.environ.get("WR_HA_REDIS_PORT", "17801")) + 22

p = prefix()
tmp = tempdir()
queue = p + ".in"
d = os.path.join(tmp, "cluster")
os.makedirs(d)
srv = subprocess.Popen(["redis-server", "--port", str(PORT), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", d, "--cluster-enabled", "yes",
                        "--cluster-config-file", os.path.join(d, "nodes.conf")],
                       stdout=open(os.path.join(d, "log"), "wb"), stderr=subprocess.STDOUT)
b = Broker()
try:
    c = redislib.Redis(host="127.0.0.1", port=PORT, decode_responses=True)
    def is_cluster():
        try:
            return c.info("cluster").get("cluster_enabled") == 1
        except redislib.RedisError:
            return False

    check(wait_for(is_cluster, 10, "a cluster node"), "the test's Redis is a cluster node")
    write(os.path.join(tmp, "h.lua"), "return { handle = function(event, ctx) "
          "ctx.log('info', 'ran') end }\n")
    b.declare(queue)
    b.publish(queue, {"n": 1}, message_id="c-1")
    w = Warren(tmp, [{"name": "cl", "queue": queue, "handler": "h.lua"}])
    with open(w.config) as fh:
        text = fh.read()
    with open(w.config, "w") as fh:
        fh.write(text.replace("redis:\n  url: ${WARREN_REDIS_URL}\n",
                              "redis:\n  url: redis://127.0.0.1:%d/0\n  reconnect_max: 1s\n"
                              % PORT))
    w.start()
    check(wait_for(lambda: any("Redis Cluster is not supported" in str(l) for l in w.lines()),
                   20, "warren refusing the cluster node"),
          "warren logged that Redis Cluster is not supported")
    time.sleep(2)
    check(w.alive(), "warren keeps running (an outage, retried)")
    check_eq(b.depth(queue), 1, "the message stays in the queue")
    check_eq(w.lines(msg="ran"), [], "no handler ran")
    check_eq(w.stop(), 0, "warren exits 0 on SIGTERM")
finally:
    srv.terminate()
    srv.wait()
    b.delete(queue)
    b.close()

finish()
