"""hatest: what the HA tests (tests/ha/) add to wrtest.

The RabbitMQ node is the ordinary test stack's (deploy/local/stack.sh, the
`stack` fixture); Redis is the primary + replica + three sentinels that
deploy/local/ha.sh started in WR_HA_DIR (the `hastack` fixture), whose
DIR/env names them. A test drives failovers through ha.sh and reads Redis
through the sentinels (redis-py's Sentinel client), never through warren.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import redis as redislib  # noqa: E402
from redis.sentinel import Sentinel  # noqa: E402

from wrtest import SOURCE_DIR, Broker, Warren, check  # noqa: E402

HA_DIR = os.environ.get("WR_HA_DIR", "/var/tmp/warren/ha")
HA_SH = os.path.join(SOURCE_DIR, "deploy", "local", "ha.sh")


def ha_env():
    """DIR/env of the Redis servers ha.sh redis-start made: {} when none (a
    test of the RabbitMQ cluster alone)."""
    env = {}
    try:
        with open(os.path.join(HA_DIR, "env")) as fh:
            for line in fh:
                if "=" in line:
                    k, v = line.strip().split("=", 1)
                    env[k] = v
    except FileNotFoundError:
        pass
    return env


HA = ha_env()
SENTINELS = [a for a in HA.get("WARREN_REDIS_SENTINELS", "").split(",") if a]
MASTER = HA.get("WARREN_REDIS_MASTER", "")


def ha(cmd):
    """Run ha.sh CMD on the HA dir; prints its output; returns its exit code."""
    t0 = time.monotonic()
    p = subprocess.run(["bash", HA_SH, cmd, HA_DIR], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        print("    | %s" % line, flush=True)
    print("  ha.sh %s: exit %d in %.1fs" % (cmd, p.returncode, time.monotonic() - t0), flush=True)
    return p.returncode


def primary():
    """A client of the primary the sentinels name now."""
    s = Sentinel([(h, int(p)) for h, p in (a.rsplit(":", 1) for a in SENTINELS)],
                 socket_timeout=2)
    host, port = s.discover_master(MASTER)
    return redislib.Redis(host=host, port=port, decode_responses=True)


def redis_block(min_replicas=0, wait_timeout="500ms", extra=""):
    """warren's redis: section for the sentinels of the HA dir."""
    return ("redis:\n  url: redis://127.0.0.1:1/0\n  timeout: 2s\n  reconnect_max: 1s\n"
            "  sentinels: [%s]\n  master_name: %s\n  min_replicas_acked: %d\n"
            "  min_replicas_timeout: %s\n%s"
            % (", ".join(SENTINELS), MASTER, min_replicas, wait_timeout, extra))


def ha_warren(tmp, subs, min_replicas=0, wait_timeout="500ms", name="warren"):
    """A wrtest.Warren whose redis: section goes through the sentinels (the
    URL's host and port, 127.0.0.1:1, would refuse any connection: only the
    sentinels' answer can be used)."""
    w = Warren(tmp, subs, name=name)
    with open(w.config) as fh:
        text = fh.read()
    plain = "redis:\n  url: ${WARREN_REDIS_URL}\n"
    check(plain in text, "wrtest writes the redis: section hatest replaces")
    with open(w.config, "w") as fh:
        fh.write(text.replace(plain, redis_block(min_replicas, wait_timeout)))
    return w


def store_counts(r, store_prefix, ids):
    """{id: int value of <store_prefix>n:<id>, 0 when absent}."""
    pipe = r.pipeline()
    for i in ids:
        pipe.get("%sn:%s" % (store_prefix, i))
    return {i: int(v or 0) for i, v in zip(ids, pipe.execute())}


def rabbit_env():
    """DIR/rabbit.env of the cluster ha.sh rabbit-start made: {} when none."""
    env = {}
    try:
        with open(os.path.join(HA_DIR, "rabbit.env")) as fh:
            for line in fh:
                if "=" in line:
                    k, v = line.strip().split("=", 1)
                    env[k] = v
    except FileNotFoundError:
        pass
    return env


class NodeBroker(Broker):
    """wrtest.Broker connected to one node of the cluster (URL)."""

    def __init__(self, url):
        import pika
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()

    def declare_quorum(self, queue):
        self.ch.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})

    def is_quorum(self, queue):
        """True when QUEUE exists as a quorum queue: declaring it as one again
        with no other argument succeeds only then (RabbitMQ answers 406 to an
        inequivalent x-queue-type, on a throwaway channel)."""
        import pika
        ch = self.conn.channel()
        try:
            ch.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
            ch.close()
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False
