#!/usr/bin/python3
"""orders: the realistic-workload benchmark's driver (tests/bench/orders.sh runs it).

Drains a queue of persistent order.created JSON events, with producer duplicates
and malformed bodies, through three kinds of consumer and compares them:

  baseline   tests/bench/baseline_consumer.c: plain rabbitmq-c consume + multi-ack,
             no work (prefetch 200, ack every 100)
  warren-c1  warren: prefetch 200, batch_size 100, concurrency 1, idempotency on (key:
             message_id), journal on, tests/bench/orders_handler.lua (two kinds of
             ctx.store.incrby per order); malformed bodies go to the DLQ
  warren-c2  the same with concurrency 2
  python     tests/bench/ref_consumer.py: pika + redis-py, EXISTS then MULTI/EXEC,
             one message at a time (prefetch 200)

Every run's effects are checked: per unique valid order, inventory:<sku> -=
quantity for each item and charged:<customer> += total (cents). A run whose
Redis state differs from the totals computed here from the inputs is FAILED.

    orders.py run --work DIR --amqp-url URL --redis-url URL --rabbit-pid PID --redis-pid PID
                  --warren BIN --baseline BIN --publisher BIN
                  [--count 50000] [--rounds 3] [--seed 11]
                  [--consumers baseline,warren-c1,warren-c2,python]
                  [--latency 1000,5000 | --latency off] [--latency-only]
                  [--latency-seconds 10] [--settle 2] [--keep-logs]
    orders.py workload [--count 50000] [--seed 11]      the workload's figures (no servers)

Latency runs: tests/bench/latency_publisher.c (wr-bench-publisher) publishes
at a fixed rate (open loop, no confirms), stamping each body with its send
time; warren's commit is seen through a Redis keyspace notification of the
lat:<id> key its handler sets, the other two consumers time their own acks.

`run` prints a table and writes one JSON line per run to DIR/results.jsonl;
it exits 1 when any run failed (wrong effects, messages left behind, a
consumer that died), 0 otherwise. It asserts nothing about time.
Uses Debian's python3-pika and python3-redis (/usr/bin/python3).
"""
import argparse
import bisect
import json
import math
import os
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.request

import pika
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import prefill  # noqa: E402  (tests/bench/prefill.py)

PY = "/usr/bin/python3"
HZ = os.sysconf("SC_CLK_TCK")
PREFETCH = 200
BATCH = 100
POLL_S = 0.020                   # the drain poller's period near the end of a run ...
POLL_FAR_S = 0.100               # ... and while more than POLL_FAR_READY messages are ready
POLL_FAR_READY = 2000
WARREN_STORE_PREFIX = "warren:store:"
REF_PREFIX = "ref:"
# Queues warren declares beside the main one (default retry delays, the wait queue, the DLQ).
WARREN_AUX = (".dlq", ".wait", ".retry.1s", ".retry.5s", ".retry.30s", ".retry.2m")
# Redis commands the driver itself sends while a run is timed (excluded from the figures).
DRIVER_CMDS = {"mget", "info", "config|resetstat", "config|set", "config|get"}

CONSUMERS = {
    "baseline": {"label": "baseline (rabbitmq-c, no work)", "kind": "baseline", "workers": 1},
    "warren-c1": {"label": "warren c=1", "kind": "warren", "workers": 1},
    "warren-c2": {"label": "warren c=2", "kind": "warren", "workers": 2},
    "python": {"label": "python reference (pika+redis-py)", "kind": "python", "workers": 1},
}

# ------------------------------------------------------------------ workload

SKUS = 2000                      # catalogue; popularity falls off as 1/rank^0.9
CUSTOMERS = 5000
DUP_SHARE = 0.05
BAD_SHARE = 0.01
NEAR_MAX = 35                    # a near duplicate follows its original by 1..35 (+ what
                                 # lands between)
NEAR_LIMIT = 50                  # ... and is checked to be within 50 messages of it
FAR_MIN = 1000                   # a far one by at least this many (less for tiny counts)
TAIL = 250                       # the stream ends with this many unique valid orders
COUNTRIES = (("DE", "10115"), ("DE", "80331"), ("FR", "75002"), ("NL", "1012"),
             ("AT", "1010"), ("BE", "1000"), ("IT", "20121"), ("ES", "28013"))
EPOCH_MS = 1796083200000         # 2026-12-01T00:00:00Z: created_at of order 0


class Catalogue:
    """SKU popularity and prices, the same for every stream of a seed."""

    def __init__(self, seed):
        rng = random.Random("orders/catalogue/%s" % seed)
        self.cum = []
        s = 0.0
        for k in range(SKUS):
            s += 1.0 / (k + 1) ** 0.9
            self.cum.append(s)
        self.price = [rng.randrange(199, 8999) for _ in range(SKUS)]

    def order(self, rng, n, id_base):
        """One order.created body (a dict), ~350 bytes as JSON; amounts in integer cents."""
        k = rng.choices((1, 2, 3), weights=(45, 35, 20))[0]
        picked = []
        while len(picked) < k:
            sku = bisect.bisect_left(self.cum, rng.random() * self.cum[-1])
            if sku not in picked:
                picked.append(sku)
        items = [{"sku": "SKU-%05d" % s,
                  "quantity": rng.choices((1, 2, 3, 4, 5), weights=(60, 20, 10, 6, 4))[0],
                  "price": self.price[s]} for s in picked]
        subtotal = sum(i["quantity"] * i["price"] for i in items)
        shipping = 0 if subtotal >= 5000 else 490
        country, postcode = rng.choice(COUNTRIES)
        ts = EPOCH_MS + n * 137
        return {
            "order_id": "ord-%010d" % (id_base + n),
            "customer_id": "cus-%06d" % rng.randrange(CUSTOMERS),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000))
            + ".%03dZ" % (ts % 1000),
            "currency": "EUR",
            "channel": rng.choice(("web", "web", "ios", "android")),
            "items": items,
            "shipping": {"method": rng.choice(("standard", "express", "pickup")),
                         "cost": shipping, "country": country, "postcode": postcode},
            "total": subtotal + shipping,
            "payment": {"method": "card", "last4": "%04d" % rng.randrange(10000)},
        }


def encode(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def message_id(rng):
    """A UUID4-shaped message id drawn from rng (deterministic)."""
    h = "%032x" % rng.getrandbits(128)
    return "%s-%s-4%s-%x%s-%s" % (h[:8], h[8:12], h[13:16], 8 + int(h[16], 16) % 4, h[17:20],
                                  h[20:])


def malformed(rng, kind, good):
    """A body no consumer can decode, made from a good order's body GOOD."""
    if kind == "invalid-json":      # valid UTF-8, cut short
        return good[:rng.randrange(len(good) // 3, len(good) - 5)]
    if kind == "garbage":           # random bytes
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(64, 400)))
    # "invalid-utf8": a well-formed order with two bytes that are not UTF-8 in a string
    return good.replace(b'"channel":"', b'"channel":"\xc3\x28', 1)


def effects_of(orders):
    """{key suffix: integer} the orders leave:
    inventory:<sku> -= quantity, charged:<customer> += total."""
    eff = {}
    for o in orders:
        for it in o["items"]:
            k = "inventory:" + it["sku"]
            eff[k] = eff.get(k, 0) - it["quantity"]
        k = "charged:" + o["customer_id"]
        eff[k] = eff.get(k, 0) + o["total"]
    return eff


class Workload:
    """The throughput runs' stream: COUNT messages, DUP_SHARE producer duplicates
    (same message_id and body; half within NEAR_LIMIT messages of the original,
    half at least FAR_MIN away), BAD_SHARE malformed bodies, the rest unique valid
    orders, in a fixed order derived from SEED. The last TAIL messages are unique
    valid orders, so that "every effect applied" implies every earlier message was
    handled by a consumer that handles in order.

    messages: [(message_id, body, type)], expected: {key suffix: int}, stats: dict."""

    def __init__(self, count, seed):
        rng = random.Random("orders/stream/%s" % seed)
        cat = Catalogue(seed)
        n_dup = int(round(count * DUP_SHARE))
        n_bad = int(round(count * BAD_SHARE))
        n_uniq = count - n_dup - n_bad
        if n_uniq < 20 or count < 100:
            raise ValueError("--count must be at least 100")
        tail = min(TAIL, n_uniq // 10)
        orders = [cat.order(rng, i, 1000000) for i in range(n_uniq)]
        ids = [message_id(rng) for _ in range(n_uniq)]
        bodies = [encode(o) for o in orders]
        kinds = ("invalid-json", "garbage", "invalid-utf8")
        bad = [(message_id(rng), malformed(rng, kinds[j % 3], encode(cat.order(rng, j, 9000000))),
                kinds[j % 3]) for j in range(n_bad)]

        # Unique orders in sequence, malformed ones at random places before the tail.
        head = n_uniq - tail
        keyed = [(float(i), "o", i) for i in range(n_uniq)]
        keyed += [(rng.uniform(0, head), "b", j) for j in range(n_bad)]
        keyed.sort()
        pos = {}                                   # order index -> position in that base list
        for p, (_k, what, i) in enumerate(keyed):
            if what == "o":
                pos[i] = p
        limit = len(keyed) - tail                  # duplicates land before the tail
        far_min = min(FAR_MIN, limit // 4)
        n_far = n_dup // 2
        n_near = n_dup - n_far
        far_pool = [i for i in range(n_uniq) if pos[i] + far_min < limit - 1]
        far = rng.sample(far_pool, n_far)
        taken = set(far)
        near_pool = [i for i in range(n_uniq) if pos[i] + NEAR_MAX < limit - 1 and i not in taken]
        near = rng.sample(near_pool, n_near)
        final = [(float(p), what, i) for p, (_k, what, i) in enumerate(keyed)]
        final += [(pos[i] + rng.uniform(0.5, NEAR_MAX), "n", i) for i in near]
        final += [(rng.uniform(pos[i] + far_min + 0.5, limit - 0.5), "f", i) for i in far]
        final.sort()

        self.messages = []
        seen_at = {}
        near_d, far_d = [], []
        for p, (_k, what, i) in enumerate(final):
            if what == "b":
                self.messages.append((bad[i][0], bad[i][1], "order.created"))
                continue
            self.messages.append((ids[i], bodies[i], "order.created"))
            if what == "o":
                seen_at[i] = p
            else:
                (near_d if what == "n" else far_d).append((p, i))
        near_d = [p - seen_at[i] for p, i in near_d]
        far_d = [p - seen_at[i] for p, i in far_d]
        self.expected = effects_of(orders)
        self.n_uniq, self.n_dup, self.n_bad = n_uniq, n_dup, n_bad
        sizes = [len(b) for b in bodies]
        self.stats = {
            "messages": len(self.messages), "unique_orders": n_uniq, "duplicates": n_dup,
            "near_duplicates": n_near, "far_duplicates": n_far, "malformed": n_bad,
            "malformed_kinds": {k: sum(1 for b in bad if b[2] == k) for k in kinds},
            "near_distance_max": max(near_d, default=0), "far_distance_min": min(far_d, default=0),
            "far_min": far_min, "tail_unique": tail,
            "body_bytes_mean": round(statistics.mean(sizes), 1), "body_bytes_min": min(sizes),
            "body_bytes_max": max(sizes), "effect_keys": len(self.expected),
            "items": sum(len(o["items"]) for o in orders),
        }
        self._check(orders, ids, bad, near_d, far_d, tail, far_min)

    def _check(self, orders, ids, bad, near_d, far_d, tail, far_min):
        """The stream has the shape the docstring promises (raises AssertionError if not)."""
        msgs = self.messages
        assert len(msgs) == self.n_uniq + self.n_dup + self.n_bad
        assert len({m[0] for m in msgs}) == self.n_uniq + self.n_bad, "ids: one per unique message"
        assert len(near_d) + len(far_d) == self.n_dup
        assert all(0 < d <= NEAR_LIMIT for d in near_d), "a near duplicate is too far"
        assert all(d >= far_min for d in far_d), "a far duplicate is too near"
        tail_ids = {m[0] for m in msgs[-tail:]}
        assert len(tail_ids) == tail and tail_ids <= set(ids), "the tail is not unique orders"
        assert all(m[0] not in tail_ids for m in msgs[:-tail]), "a tail order repeats"
        by_id = {}
        for mid, body, _t in msgs:
            assert by_id.setdefault(mid, body) == body, "a duplicate's body differs"
        for i, o in enumerate(orders):
            assert json.loads(by_id[ids[i]]) == o
        for mid, body, kind in bad:
            try:
                json.loads(body)
            except ValueError:
                pass
            else:
                raise AssertionError("malformed body %s (%s) parses" % (mid, kind))
            if kind == "invalid-json":
                body.decode("utf-8")          # valid UTF-8, invalid JSON
            if kind == "invalid-utf8":
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError:
                    pass
                else:
                    raise AssertionError("invalid-utf8 body %s decodes" % mid)


def latency_orders(count, seed, rate):
    """The latency runs' stream: COUNT unique valid orders (ids lat-<rate>-<n>), bodies
    without their sent_us stamp (the publisher prepends it), and their effects."""
    rng = random.Random("orders/latency/%s/%s" % (seed, rate))
    cat = Catalogue(seed)
    orders = [cat.order(rng, i, 5000000) for i in range(count)]
    msgs = [("lat-%d-%06d" % (rate, i), encode(o)) for i, o in enumerate(orders)]
    return msgs, effects_of(orders)


# ------------------------------------------------------------------ processes and /proc

def proc_cpu_s(pid):
    """utime + stime of a live process, all threads, in seconds (None when gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, IndexError, ValueError):
        return None


def sys_busy_s():
    """Busy time of the whole machine (all CPUs), seconds: user nice system irq softirq steal."""
    with open("/proc/stat") as f:
        v = f.readline().split()
    return sum(int(v[i]) for i in (1, 2, 3, 6, 7, 8)) / HZ


def vm_hwm_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def self_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def stop_proc(p, grace):
    """SIGTERM, wait up to GRACE seconds, then SIGKILL. Returns the exit status."""
    if p.poll() is not None:
        return p.returncode
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(grace)
    except subprocess.TimeoutExpired:
        say("pid %d still running after %ss: SIGKILL" % (p.pid, grace))
        p.kill()
        return p.wait()


def wait_rusage(p, timeout):
    """Wait up to TIMEOUT s for child P to exit; returns the CPU seconds it used (None when
    it is still running, or was reaped already). Sets P.returncode."""
    end = time.monotonic() + timeout
    while p.returncode is None:
        try:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return ru.ru_utime + ru.ru_stime
        if time.monotonic() > end:
            return None
        time.sleep(0.02)
    return None


def say(msg):
    print("orders: " + msg, flush=True)


def percentiles(samples):
    """Nearest-rank p50/p90/p99 and max (the same ranks as the C and Python consumers)."""
    if not samples:
        return None
    xs = sorted(samples)

    def rank(p):
        return xs[max(0, math.ceil(p / 100.0 * len(xs)) - 1)]

    return {"count": len(xs), "p50": rank(50), "p90": rank(90), "p99": rank(99), "max": xs[-1]}


# ------------------------------------------------------------------ broker and Redis

class Broker:
    """Passive declares and deletes on one blocking connection."""

    def __init__(self, url):
        p = pika.URLParameters(url)
        p.heartbeat = 0
        p.connection_attempts = 3
        p.retry_delay = 0.5
        self.conn = pika.BlockingConnection(p)
        self.ch = self.conn.channel()

    def _channel(self):
        if not self.ch.is_open:
            self.ch = self.conn.channel()
        return self.ch

    def depth(self, queue):
        """(ready messages, consumers) of QUEUE, or (-1, 0) when it does not exist."""
        try:
            m = self._channel().queue_declare(queue=queue, passive=True).method
            return m.message_count, m.consumer_count
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code == 404:
                return -1, 0
            raise

    def ready(self, queue):
        return self.depth(queue)[0]

    def declare(self, queue):
        self._channel().queue_declare(queue=queue, durable=True)

    def delete(self, *queues):
        for q in queues:
            self._channel().queue_delete(queue=q)

    def close(self):
        if self.conn.is_open:
            self.conn.close()


class Effects:
    """The effect keys of one run, under PREFIX, and their expected values."""

    def __init__(self, r, prefix, expected):
        self.r = r
        self.prefix = prefix
        self.keys = sorted(expected)
        self.full = [prefix + k for k in self.keys]
        self.want = [b"%d" % expected[k] for k in self.keys]

    def match(self):
        return self.r.mget(self.full) == self.want

    def diff(self):
        """A list of differences (empty when Redis holds exactly the expected totals):
        wrong or missing values, and effect keys that should not exist."""
        out = []
        got = self.r.mget(self.full)
        for k, g, w in zip(self.full, got, self.want):
            if g != w:
                out.append("%s = %s, expected %s" % (k, g.decode() if g else "(none)", w.decode()))
        for kind in ("inventory:", "charged:"):
            extra = set(self.r.scan_iter(match=self.prefix + kind + "*", count=1000))
            extra -= {k.encode() for k in self.full}
            out += ["%s exists, expected no such key" % k.decode() for k in sorted(extra)[:5]]
        return out


def flush_redis(r):
    """FLUSHDB, then an AOF rewrite of the empty db, so that no run pays for a
    rewrite the previous runs' writes would trigger."""
    r.flushdb()
    try:
        r.bgrewriteaof()
    except redis.ResponseError:
        pass                                  # one already running: wait for it below
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        p = r.info("persistence")
        if not p.get("aof_rewrite_in_progress") and not p.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.05)


def warren_commands(src):
    """(scripted, direct): the Redis commands warren's server-side scripts call
    (redis.call/pcall in its sources), which INFO commandstats counts on their own
    line and again inside EVALSHA; and the command names its C code sends itself
    (C string literals that open with an upper-case word), which may overlap."""
    scripted, direct = set(), set()
    call = re.compile(r"redis\.p?call\(\s*\\?['\"]([A-Za-z]+)")
    literal = re.compile(r'"([A-Z][A-Z]+)[ "]')
    for root, _dirs, files in os.walk(os.path.join(src, "sidecar")):
        for fn in files:
            if fn.endswith((".c", ".h", ".lua")):
                with open(os.path.join(root, fn), errors="replace") as f:
                    text = f.read()
                scripted.update(m.lower() for m in call.findall(text))
                if fn.endswith(".c"):
                    direct.update(m.lower() for m in literal.findall(text))
    return scripted, direct


def cmdstats_delta(info):
    """{command: {"calls", "usec"}} from INFO commandstats (reset before the run)."""
    out = {}
    for k, v in info.items():
        if k.startswith("cmdstat_") and isinstance(v, dict):
            name = k[len("cmdstat_"):]
            if name not in DRIVER_CMDS:
                out[name] = {"calls": int(v.get("calls", 0)), "usec": int(v.get("usec", 0))}
    return out


def redis_main_cpu(info):
    return (float(info.get("used_cpu_user_main_thread", info.get("used_cpu_user", 0)))
            + float(info.get("used_cpu_sys_main_thread", info.get("used_cpu_sys", 0))))


def parse_metrics(text):
    """A few of warren's /metrics families: outcome and dead-letter counts, and the
    histograms' sums and counts (summed over subscriptions)."""
    out = {"outcomes": {}, "dead_letters": {}, "timings": {}}
    line_re = re.compile(r'^([a-z_]+)(?:\{([^}]*)\})?\s+([0-9.eE+-]+)$')
    for line in text.splitlines():
        m = line_re.match(line)
        if not m:
            continue
        name, labels, val = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")), \
            float(m.group(3))
        if name == "warren_messages_handled_total":
            o = labels.get("outcome", "?")
            out["outcomes"][o] = out["outcomes"].get(o, 0) + int(val)
        elif name == "warren_dead_letters_total":
            o = labels.get("reason", "?")
            out["dead_letters"][o] = out["dead_letters"].get(o, 0) + int(val)
        elif name.endswith(("_seconds_sum", "_seconds_count")):
            base, part = name.rsplit("_", 1)
            what = base.replace("warren_", "").replace("_duration_seconds", "")
            extra = ",".join("%s" % v for k, v in sorted(labels.items())
                             if k not in ("subscription", "le"))
            key = what + ("(" + extra + ")" if extra else "")
            t = out["timings"].setdefault(key, {"sum_s": 0.0, "count": 0})
            if part == "sum":
                t["sum_s"] += val
            else:
                t["count"] += int(val)
    return out


# ------------------------------------------------------------------ the runs

class Bench:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        self.results = os.path.join(self.work, "results.jsonl")
        self.r = redis.Redis.from_url(a.redis_url)
        self.broker = Broker(a.amqp_url)
        self.children = []               # Popen objects to stop on the way out
        self.failed = []
        self.scripted, self.direct = warren_commands(a.src)
        self.env = dict(os.environ, WARREN_AMQP_URL=a.amqp_url, WARREN_REDIS_URL=a.redis_url)

    # ---- plumbing

    def record(self, rec):
        with open(self.results, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if not rec.get("ok"):
            self.failed.append(rec)

    def spawn(self, argv, log_path, **kw):
        log = open(log_path, "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, **kw)
        log.close()
        self.children.append(p)
        return p

    def stop_all(self):
        for p in self.children:
            if p.poll() is None:
                stop_proc(p, 30)
        self.children = []

    def queue_of(self, cname, mode):
        return "bench.orders.%s.%s" % (mode, cname)

    def clean_queues(self, q):
        self.broker.delete(q, *(q + s for s in WARREN_AUX))

    def write_warren_config(self, cname, queue):
        path = os.path.join(self.work, "%s.yaml" % cname)
        spec = CONSUMERS[cname]
        with open(path, "w") as f:
            f.write("""# generated by tests/bench/orders.py (%(c)s)
amqp:
  url: ${WARREN_AMQP_URL}
redis:
  url: ${WARREN_REDIS_URL}
log:
  level: info
http:
  listen: 127.0.0.1:0
defaults:
  prefetch: %(prefetch)d
  batch_size: %(batch)d
  concurrency: %(conc)d
  idempotency:
    enabled: true
    key: message_id
journal:
  enabled: true
shutdown:
  grace: 10s
subscriptions:
  - name: orders
    queue: %(q)s
    handler: %(h)s
""" % {"c": cname, "prefetch": PREFETCH, "batch": BATCH, "conc": spec["workers"], "q": queue,
                "h": os.path.join(HERE, "orders_handler.lua")})
        chk = subprocess.run([self.a.warren, "check", "-c", path], env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if chk.returncode != 0:
            raise SystemExit("orders: warren check rejected %s:\n%s" % (path, chk.stdout.decode()))
        return path

    def consumer_argv(self, cname, queue, log_base, latency_count=None):
        kind = CONSUMERS[cname]["kind"]
        if kind == "baseline":
            argv = [self.a.baseline, "--url", self.a.amqp_url, "--queue", queue,
                    "--prefetch", str(PREFETCH), "--ack-every", str(BATCH), "--idle-timeout", "30",
                    "--count", str(latency_count or self.workload.stats["messages"])]
            return argv + (["--latency"] if latency_count else [])
        if kind == "warren":
            return [self.a.warren, "run", "-c", self.write_warren_config(cname, queue)]
        argv = [PY, os.path.join(HERE, "ref_consumer.py"), "--amqp-url", self.a.amqp_url,
                "--redis-url", self.a.redis_url, "--queue", queue, "--prefix", REF_PREFIX,
                "--prefetch", str(PREFETCH)]
        return argv + (["--latency"] if latency_count else [])

    def prefill(self, queue):
        msgs = self.workload.messages
        ns = argparse.Namespace(url=self.a.amqp_url, queue=queue, count=len(msgs), window=2000,
                                purge=True, id_prefix=None, size=0)
        p = prefill.Prefill(ns, messages=msgs)
        p.depth = None
        p.run()
        if not (p.done and p.error is None and p.confirmed == len(msgs) and p.depth == len(msgs)):
            raise SystemExit("orders: prefill of %s failed: %s (confirmed %d, depth %s)" % (
                queue, p.error, p.confirmed, p.depth))
        return round(p.confirmed / max(p.t1 - p.t0, 1e-6))

    def snapshot(self, pid):
        """Counters at one instant: CPU of the processes involved, Redis's own figures."""
        return {
            "t": time.monotonic(),
            "consumer": proc_cpu_s(pid) if pid else None,
            "rabbit": proc_cpu_s(self.a.rabbit_pid),
            "redis": proc_cpu_s(self.a.redis_pid),
            "busy": sys_busy_s(),
            "driver": self_cpu_s(),
            "hwm_kb": vm_hwm_kb(pid) if pid else None,
            "redis_cpu": redis_main_cpu(self.r.info("cpu")),
            "cmdstats": cmdstats_delta(self.r.info("commandstats")),
        }

    # ---- drain: wait until every effect is applied and every message acked

    def wait_drained(self, kind, queue, eff, proc, deadline, n_bad):
        """Poll every POLL_S until the queue has nothing ready (for warren: its wait queue
        neither, and its DLQ holds the n_bad malformed messages) and Redis holds exactly
        the expected totals, twice in a row. Returns (snapshot at the first of the two
        polls, None) or (None, why). While the queue holds thousands of messages the end
        is far: the poller then looks every POLL_FAR_S only."""
        first = None
        stuck_since = None
        last_vals = None
        next_t = time.monotonic()
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                return None, "the consumer exited with status %s" % proc.returncode
            if now > deadline:
                return None, "not drained after %.0fs" % (deadline - self.t_start)
            done = False
            ready = self.broker.ready(queue)
            if ready == 0:
                drained = True
                if kind == "warren":
                    drained = (self.broker.ready(queue + ".wait") == 0
                               and self.broker.ready(queue + ".dlq") == n_bad)
                if drained:
                    vals = self.r.mget(eff.full)
                    done = vals == eff.want
                    if not done:
                        # drained queues and wrong totals that stay put: nothing more is coming
                        if vals != last_vals:
                            stuck_since, last_vals = now, vals
                        elif now - stuck_since > 10:
                            return None, "queues drained but the effects differ (for 10 s)"
            if done:
                if first is not None:
                    return first, None
                first = self.snapshot(proc.pid)
                first["t"] = now
            else:
                first = None
            next_t += POLL_FAR_S if ready > POLL_FAR_READY else POLL_S
            time.sleep(max(0.0, next_t - time.monotonic()))

    # ---- one throughput run

    def run_throughput(self, cname, rnd):
        spec = CONSUMERS[cname]
        kind = spec["kind"]
        wl = self.workload
        q = self.queue_of(cname, "tp")
        rec = {"mode": "throughput", "consumer": cname, "label": spec["label"], "round": rnd,
               "messages": len(wl.messages), "ok": False, "errors": []}
        self.clean_queues(q)
        flush_redis(self.r)
        rec["prefill_msgs_per_s"] = self.prefill(q)
        time.sleep(self.a.settle)
        log_path = os.path.join(self.work, "%s.r%d.log" % (cname, rnd))
        eff = Effects(self.r, WARREN_STORE_PREFIX if kind == "warren" else REF_PREFIX, wl.expected)
        self.r.config_resetstat()
        s0 = self.snapshot(None)
        self.t_start = s0["t"]
        p = self.spawn(self.consumer_argv(cname, q, log_path), log_path)
        s1 = None
        if kind == "baseline":
            try:
                _pid, status, ru = os.wait4(p.pid, 0)
            except ChildProcessError:
                status, ru = 0, None
            p.returncode = os.waitstatus_to_exitcode(status)
            s1 = self.snapshot(None)
            s1["consumer"] = ru.ru_utime + ru.ru_stime if ru else None
            out = self._json_line(log_path)
            rec["consumer_report"] = out
            s1["hwm_kb"] = out.get("vm_hwm_kb")        # its own: it has exited
            if p.returncode != 0:
                rec["errors"].append("wr-baseline-consumer exited %d" % p.returncode)
            elif out.get("messages") != len(wl.messages) or out.get("left_in_queue") != 0:
                rec["errors"].append("baseline consumed %s, left %s in the queue" % (
                    out.get("messages"), out.get("left_in_queue")))
        else:
            deadline = self.t_start + 120 + len(wl.messages) / 50.0
            s1, why = self.wait_drained(kind, q, eff, p, deadline, wl.n_bad)
            if why:
                rec["errors"].append(why)
                s1 = self.snapshot(p.pid)
            if kind == "warren":
                rec["warren_metrics"] = self._scrape_metrics(log_path)
            status = stop_proc(p, 30)
            if status != 0:
                rec["errors"].append("the consumer exited %s after SIGTERM" % status)
            if kind == "python":
                out = self._json_line(log_path)
                rec["consumer_report"] = out
                want = {"handled": wl.n_uniq, "duplicates": wl.n_dup, "rejected": wl.n_bad}
                got = {k: out.get(k) for k in want}
                if got != want:
                    rec["errors"].append("the reference counted %s, expected %s" % (got, want))
        self.children = [c for c in self.children if c is not p]

        # What was left behind, and what Redis holds now that the consumer is gone.
        time.sleep(0.3)
        left = {q: self.broker.ready(q)}
        if kind == "warren":
            for s in WARREN_AUX:
                left[q + s] = self.broker.ready(q + s)
            rec["dlq"] = left.pop(q + ".dlq")
            if rec["dlq"] != wl.n_bad:
                rec["errors"].append("%d messages in the DLQ, expected the %d malformed ones" % (
                    rec["dlq"], wl.n_bad))
        rec["left_after_stop"] = {k: v for k, v in left.items() if v > 0}
        if rec["left_after_stop"]:
            rec["errors"].append("messages came back or stayed after the consumer stopped: %s"
                                 % rec["left_after_stop"])
        if kind != "baseline":
            d = eff.diff()
            if d:
                rec["errors"].append("effects differ from the inputs' totals in %d key(s): %s"
                                     % (len(d), "; ".join(d[:5])))
            rec["effect_keys"] = len(eff.full)
            rec["redis_dbsize"] = self.r.dbsize()

        self._figures(rec, s0, s1)
        rec["ok"] = not rec["errors"]
        if rec["ok"] and not self.a.keep_logs:
            os.unlink(log_path)
        self.record(rec)
        self._say_run(rec)
        return rec

    def _json_line(self, path):
        """The last JSON object line a consumer printed (its report), or {}."""
        try:
            with open(path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return {}
        for line in reversed(lines):
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if "consumer" in rec:
                    return rec
        return {}

    def _scrape_metrics(self, log_path):
        port = None
        with open(log_path, "rb") as f:
            for line in f:
                if b'"warren started"' in line:
                    m = re.search(rb'"http":"127\.0\.0\.1:(\d+)"', line)
                    port = int(m.group(1)) if m else None
                    break
        if port is None:
            return None
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as resp:
                return parse_metrics(resp.read().decode())
        except OSError as e:
            return {"error": str(e)}

    def _figures(self, rec, s0, s1):
        n = rec["messages"]
        wall = s1["t"] - s0["t"]
        rec["elapsed_s"] = round(wall, 4)
        rec["msgs_per_s"] = round(n / wall, 1) if wall > 0 else None

        def delta(k):
            return None if s1.get(k) is None or s0.get(k) is None else s1[k] - s0[k]

        cpu = {"consumer": s1.get("consumer"), "rabbitmq": delta("rabbit"),
               "redis": delta("redis"), "driver": delta("driver")}
        rec["cpu_s"] = {k: (round(v, 3) if v is not None else None) for k, v in cpu.items()}
        rec["cpu_us_per_msg"] = {k: (round(v * 1e6 / n, 2) if v is not None else None)
                                 for k, v in cpu.items()}
        ours = sum(cpu[k] or 0 for k in ("consumer", "rabbitmq", "redis"))
        rec["other_cores"] = round(max(0.0, (s1["busy"] - s0["busy"] - ours) / wall), 2)
        rec["peak_rss_kb"] = s1.get("hwm_kb")
        rec["redis_main_cpu_us_per_msg"] = round((s1["redis_cpu"] - s0["redis_cpu"]) * 1e6 / n, 2)
        cs = s1["cmdstats"]
        kind = CONSUMERS[rec["consumer"]]["kind"]
        # commands run inside EVALSHA (warren's scripts) or EXEC (the reference's MULTI)
        nested = self.scripted if kind == "warren" else \
            ({"incrby", "set"} if kind == "python" else set())
        rec["redis_cmdstats"] = cs
        rec["redis_nested_cmds"] = sorted(c for c in cs if c in nested)
        if kind == "warren":
            rec["redis_nested_also_direct"] = sorted(c for c in cs if c in nested and
                                                     c in self.direct)
        rec["redis_cmd_us_per_msg"] = round(
            sum(v["usec"] for c, v in cs.items() if c not in nested) / n, 2)

    def _say_run(self, rec):
        cpu = rec["cpu_us_per_msg"]
        say("  %s round %d: %s msg/s in %.3fs; CPU us/msg consumer %s, rabbitmq %s, redis %s; "
            "redis cmds %s us/msg, main thread %s us/msg; other load %.2f cores%s" % (
                rec["label"], rec["round"], rec["msgs_per_s"], rec["elapsed_s"],
                cpu["consumer"], cpu["rabbitmq"], cpu["redis"], rec["redis_cmd_us_per_msg"],
                rec["redis_main_cpu_us_per_msg"], rec["other_cores"],
                "" if rec["ok"] else "  ** FAILED **"))
        wm = rec.get("warren_metrics")
        if wm and "outcomes" in wm:
            t = ", ".join("%s %.2f ms x%d" % (k, v["sum_s"] * 1e3 / v["count"], v["count"])
                          for k, v in sorted(wm["timings"].items()) if v["count"])
            say("    warren /metrics: outcomes %s; dead letters %s; mean %s" % (
                wm["outcomes"], wm["dead_letters"], t))
        if rec.get("consumer_report"):
            say("    consumer's report: %s" % json.dumps(rec["consumer_report"]))
        for e in rec["errors"]:
            say("    FAILED: %s" % e)

    # ---- one latency run

    def run_latency(self, cname, rate):
        spec = CONSUMERS[cname]
        kind = spec["kind"]
        count = int(rate * self.a.latency_seconds)
        q = self.queue_of(cname, "lat")
        rec = {"mode": "latency", "consumer": cname, "label": spec["label"], "rate": rate,
               "messages": count, "ok": False, "errors": []}
        self.clean_queues(q)
        flush_redis(self.r)
        self.broker.declare(q)
        msgs, expected = latency_orders(count, self.a.seed, rate)
        msgs_path = os.path.join(self.work, "lat-%d.tsv" % rate)
        with open(msgs_path, "wb") as f:
            f.writelines(b"%s\t%s\n" % (mid.encode(), body) for mid, body in msgs)
        eff = Effects(self.r, WARREN_STORE_PREFIX if kind == "warren" else REF_PREFIX, expected)
        log_path = os.path.join(self.work, "lat-%s-%d.log" % (cname, rate))
        sent_path = os.path.join(self.work, "lat-%s-%d.sent" % (cname, rate))
        pub_log = os.path.join(self.work, "lat-%s-%d.publisher" % (cname, rate))
        ps = None
        if kind == "warren":
            self.r.config_set("notify-keyspace-events", "E$")
            ps = self.r.pubsub(ignore_subscribe_messages=True)
            ps.subscribe("__keyevent@0__:set")
            ps.get_message(timeout=1.0)
        seen = {}
        try:
            p = self.spawn(self.consumer_argv(cname, q, log_path, latency_count=count), log_path)
            self.t_start = time.monotonic()
            deadline = time.monotonic() + 30
            while self.broker.depth(q)[1] < spec["workers"]:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("orders: %s did not start consuming %s (see %s)" % (
                        cname, q, log_path))
                time.sleep(0.05)
            s0 = self.snapshot(p.pid)
            pub = self.spawn([self.a.publisher, "--url", self.a.amqp_url, "--queue", q,
                              "--rate", str(rate), "--messages", msgs_path, "--sent", sent_path],
                             pub_log)
            end = time.monotonic() + self.a.latency_seconds + 60 + count / 200.0
            prefix = (WARREN_STORE_PREFIX + "lat:").encode()
            if kind == "warren":
                while len(seen) < count and time.monotonic() < end and p.poll() is None:
                    m = ps.get_message(timeout=0.2)
                    if m and m["type"] == "message" and m["data"].startswith(prefix):
                        seen.setdefault(m["data"][len(prefix):].decode(), time.time_ns() // 1000)
                if len(seen) < count:
                    rec["errors"].append("%d of %d commits observed" % (len(seen), count))
            elif kind == "baseline":
                while p.poll() is None and time.monotonic() < end:
                    time.sleep(0.05)
            pub_cpu = wait_rusage(pub, max(1.0, end - time.monotonic()))
            if pub.returncode != 0:
                rec["errors"].append("the publisher failed (see %s)" % pub_log)
            if kind == "python":
                _s, why = self.wait_drained(kind, q, eff, p, end, 0)
                if why:
                    rec["errors"].append(why)
            if p.poll() is None and kind == "baseline":
                rec["errors"].append("the baseline did not finish")
            s1 = self.snapshot(None)
            s1["consumer"] = proc_cpu_s(p.pid) if p.poll() is None else None
            stop_proc(p, 30)
        finally:
            if ps is not None:
                ps.close()
                self.r.config_set("notify-keyspace-events", "")
        pubrep = self._last_json(pub_log)
        rec["publisher"] = pubrep
        if kind == "warren":
            sent = {}
            with open(sent_path) as f:
                for line in f:
                    mid, us = line.split()
                    sent[mid] = int(us)
            lat = [seen[m] - sent[m] for m in seen if m in sent]
            rec["latency_us"] = percentiles(lat)
        else:
            rep = self._json_line(log_path)
            rec["consumer_report"] = rep
            rec["latency_us"] = rep.get("latency_us")
            if s1["consumer"] is None:
                s1["consumer"] = rep.get("cpu_s")       # the baseline: exited, its own count
        # CPU during the run (publisher start to the end), and what everything else used
        wall = s1["t"] - s0["t"]
        cpu = {"consumer": None if s1["consumer"] is None or s0["consumer"] is None
               else s1["consumer"] - s0["consumer"],
               "rabbitmq": s1["rabbit"] - s0["rabbit"], "redis": s1["redis"] - s0["redis"],
               "publisher": pub_cpu, "driver": s1["driver"] - s0["driver"]}
        rec["cpu_s"] = {k: (round(v, 3) if v is not None else None) for k, v in cpu.items()}
        ours = sum(cpu[k] or 0 for k in ("consumer", "rabbitmq", "redis", "publisher"))
        rec["other_cores"] = round(max(0.0, (s1["busy"] - s0["busy"] - ours) / wall), 2)
        got = (rec["latency_us"] or {}).get("count", 0)
        if got != count:
            rec["errors"].append("%d latency samples for %d messages" % (got, count))
        if kind != "baseline":
            d = eff.diff()
            if d:
                rec["errors"].append("effects differ in %d key(s): %s" % (len(d),
                                                                          "; ".join(d[:5])))
        left = self.broker.ready(q)
        if left:
            rec["errors"].append("%d messages left in %s" % (left, q))
        rec["ok"] = not rec["errors"]
        self.stop_all()                 # the publisher, if it is still running
        self.record(rec)
        lu = rec["latency_us"] or {}
        say("  latency %s at %d msg/s: p50 %s p90 %s p99 %s max %s ms (%s samples); publisher %s; "
            "CPU s %s; other load %.2f cores%s"
            % (rec["label"], rate, *("%.2f" % (lu[k] / 1e3) if k in lu else "?"
                                     for k in ("p50", "p90", "p99", "max")),
               lu.get("count", 0), json.dumps(pubrep), json.dumps(rec["cpu_s"]),
               rec["other_cores"], "" if rec["ok"] else "  ** FAILED **"))
        for e in rec["errors"]:
            say("    FAILED: %s" % e)
        if rec["ok"] and not self.a.keep_logs:
            for path in (log_path, sent_path, msgs_path, pub_log):
                os.unlink(path)
        return rec

    def _last_json(self, path):
        try:
            with open(path) as f:
                lines = [ln for ln in f.read().splitlines() if ln.startswith("{")]
            return json.loads(lines[-1]) if lines else {}
        except (OSError, ValueError):
            return {}


# ------------------------------------------------------------------ report

def med(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def fmt(x, spec="%.1f", none="?"):
    return spec % x if x is not None else none


def pack(words, width, first, rest):
    """WORDS (kept whole) joined by spaces into lines of at most WIDTH columns."""
    lines, line = [], first
    for w in words:
        if line.strip() and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = rest
        line += ("" if not line.strip() else " ") + w
    lines.append(line)
    return "\n".join(lines)


def report(results_path, count):
    runs = [json.loads(ln) for ln in open(results_path) if ln.strip()]
    tp = [r for r in runs if r["mode"] == "throughput"]
    lat = [r for r in runs if r["mode"] == "latency"]
    order = [c for c in CONSUMERS if any(r["consumer"] == c for r in runs)]
    if tp:
        good = {c: [r for r in tp if r["consumer"] == c and r["ok"]] for c in order}
        bad = {c: [r for r in tp if r["consumer"] == c and not r["ok"]] for c in order}
        base = med([r["msgs_per_s"] for r in good.get("baseline", [])])
        w = max(len(CONSUMERS[c]["label"]) for c in order)
        head = "%-*s  %8s  %6s  %-20s  %-11s  %7s  %6s  %s" % (
            w, "consumer", "msg/s", "ratio", "CPU us/msg", "Redis us/msg", "peak", "other",
            "each round (msg/s)")
        sub = "%-*s  %8s  %6s  %-20s  %-11s  %7s  %6s" % (
            w, "", "(median)", "", "consumer/mq/redis", "cmds/main", "RSS MB", "cores")
        print(head)
        print(sub.rstrip())
        print("-" * len(head))
        for c in order:
            g = good[c]
            m = med([r["msgs_per_s"] for r in g])
            cpu = "/".join(fmt(med([r["cpu_us_per_msg"][k] for r in g]))
                           for k in ("consumer", "rabbitmq", "redis"))
            rd = "%s/%s" % (fmt(med([r["redis_cmd_us_per_msg"] for r in g])),
                            fmt(med([r["redis_main_cpu_us_per_msg"] for r in g])))
            rss = med([r["peak_rss_kb"] for r in g])
            each = ", ".join("%.0f" % r["msgs_per_s"] for r in g)
            if bad[c]:
                each += (" | " if each else "") + "FAILED round(s) " + ",".join(
                    str(r["round"]) for r in bad[c])
            print("%-*s  %8s  %6s  %-20s  %-11s  %7s  %6s  %s" % (
                w, CONSUMERS[c]["label"], fmt(m, "%.0f", "n/a"),
                "%.3f" % (m / base) if m and base else "n/a", cpu, rd,
                fmt(rss / 1024 if rss else None, "%.1f"),
                fmt(med([r["other_cores"] for r in g]), "%.2f"), each))
        print()
        print(textwrap.fill(
            "%d messages per run (5%% duplicates, 1%% malformed); msg/s: from process start to "
            "every effect applied and every message acked, median of the rounds; ratio: over the "
            "baseline's median. CPU us/msg: the consumer / RabbitMQ / Redis processes (/proc). "
            "Redis us/msg: INFO commandstats (top-level commands) / INFO cpu main thread. other "
            "cores: CPU used by everything else on the machine meanwhile (this driver's poller "
            "included)." % count, 100, break_on_hyphens=False))
        print()
        print("Redis commands per message (median over the rounds; calls/msg x us/call = us/msg;"
              "\n* = run inside EVALSHA/EXEC, already counted in it):")
        for c in order:
            g = good[c]
            if not g or c == "baseline":
                continue
            names = sorted({k for r in g for k in r["redis_cmdstats"]},
                           key=lambda k: -(med([r["redis_cmdstats"].get(k, {}).get("usec", 0)
                                                for r in g]) or 0))
            parts = []
            for k in names:
                calls = med([r["redis_cmdstats"].get(k, {}).get("calls", 0) for r in g])
                usec = med([r["redis_cmdstats"].get(k, {}).get("usec", 0) for r in g])
                if not calls:
                    continue
                star = "*" if any(k in r["redis_nested_cmds"] for r in g) else ""
                parts.append("%s%s %.2f x %.1f = %.2f" % (k, star, calls / count, usec / calls,
                                                          usec / count))
            print(pack(["%s:" % CONSUMERS[c]["label"]] + [x + ";" for x in parts[:-1]]
                       + parts[-1:], 100, "  ", "      "))
        both = sorted({k for r in tp if r["ok"] for k in r.get("redis_nested_also_direct", [])})
        if both:
            print(textwrap.fill(
                "(%s: called by warren's scripts, and also sent directly somewhere in warren's C "
                "code; the total leaves such direct calls out too: Redis's main-thread CPU is the "
                "complete figure)" % ", ".join(both), 100, initial_indent="  ",
                subsequent_indent="   "))
    if lat:
        print()
        print("Latency, ms, open-loop publisher: publish -> effect committed (warren),\n"
              "-> EXEC + ack (python reference), -> ack (baseline):")
        w = max(len(CONSUMERS[r["consumer"]]["label"]) for r in lat)
        print("%-*s  %6s  %7s  %8s  %8s  %8s  %8s  %6s  %s" % (
            w, "consumer", "rate", "samples", "p50", "p90", "p99", "max", "other",
            "publisher lag p99/max"))
        for r in sorted(lat, key=lambda r: (list(CONSUMERS).index(r["consumer"]), r["rate"])):
            lu = r.get("latency_us") or {}
            pub = r.get("publisher") or {}
            print("%-*s  %6d  %7s  %8s  %8s  %8s  %8s  %6s  %s%s" % (
                w, CONSUMERS[r["consumer"]]["label"], r["rate"], lu.get("count", 0),
                *(fmt(lu[k] / 1e3 if k in lu else None, "%.2f") for k in ("p50", "p90", "p99",
                                                                          "max")),
                fmt(r.get("other_cores"), "%.2f"),
                "%s/%s ms" % (fmt(pub.get("lag_p99_ms"), "%.2f"), fmt(pub.get("lag_max_ms"),
                                                                      "%.2f")),
                "" if r["ok"] else "  FAILED"))
    failed = [r for r in runs if not r["ok"]]
    if failed:
        print()
        for r in failed:
            print("FAILED: %s %s: %s" % (r["label"], "round %d" % r["round"] if "round" in r
                                         else "latency at %d msg/s" % r["rate"],
                                         "; ".join(r["errors"])))
    return 1 if failed else 0


# ------------------------------------------------------------------ commands

def cmd_run(a):
    bench = Bench(a)

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    consumers = [c.strip() for c in a.consumers.split(",") if c.strip()]
    for c in consumers:
        if c not in CONSUMERS:
            raise SystemExit("orders: unknown consumer %r (known: %s)" % (c, ", ".join(CONSUMERS)))
    rates = [] if a.latency in ("off", "none", "") else [int(x) for x in a.latency.split(",")]
    try:
        t0 = time.monotonic()
        bench.workload = Workload(a.count, a.seed)
        say("workload (seed %s): %s" % (a.seed, json.dumps(bench.workload.stats)))
        if not a.latency_only:
            for rnd in range(1, a.rounds + 1):
                say("round %d of %d" % (rnd, a.rounds))
                for i in range(len(consumers)):
                    cname = consumers[(i + rnd - 1) % len(consumers)]   # rotate the order
                    bench.run_throughput(cname, rnd)
        for rate in rates:
            say("latency at %d msg/s for %ss" % (rate, a.latency_seconds))
            for cname in consumers:
                bench.run_latency(cname, rate)
        say("runs took %.0fs" % (time.monotonic() - t0))
    finally:
        bench.stop_all()
        for c in consumers:
            for mode in ("tp", "lat"):
                try:
                    bench.clean_queues(bench.queue_of(c, mode))
                except Exception:       # the broker may be gone already on the way out
                    pass
        try:
            bench.r.flushdb()
        except redis.RedisError:
            pass
        bench.broker.close()
    print()
    return report(bench.results, a.count)


def cmd_workload(a):
    wl = Workload(a.count, a.seed)
    print(json.dumps(wl.stats, indent=1))
    print("first message: %s %s" % (wl.messages[0][0], wl.messages[0][1].decode()))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--work", required=True)
    p.add_argument("--src", default=os.path.dirname(os.path.dirname(HERE)))
    p.add_argument("--amqp-url", required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--rabbit-pid", type=int, required=True)
    p.add_argument("--redis-pid", type=int, required=True)
    p.add_argument("--warren", required=True)
    p.add_argument("--baseline", required=True)
    p.add_argument("--publisher", required=True, help="wr-bench-publisher")
    p.add_argument("--count", type=int, default=50000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", default="11")
    p.add_argument("--consumers", default=",".join(CONSUMERS))
    p.add_argument("--latency", default="1000,5000", help="rates, comma-separated; off: none")
    p.add_argument("--latency-only", action="store_true")
    p.add_argument("--latency-seconds", type=float, default=10)
    p.add_argument("--settle", type=float, default=2)
    p.add_argument("--keep-logs", action="store_true")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("workload")
    p.add_argument("--count", type=int, default=50000)
    p.add_argument("--seed", default="11")
    p.set_defaults(fn=cmd_workload)
    a = ap.parse_args()
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
