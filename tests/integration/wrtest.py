"""wrtest: the shared fixture of warren's integration tests.

Every test talks to the real RabbitMQ and Redis that the `stack` fixture
(deploy/local/stack.sh, run by ctest) started on loopback; WR_STACK_DIR/env
holds their URLs. A test gets its own queue names (a per-test prefix), writes
its own config and handlers into a temp directory, starts the real `warren`
binary, and drives it through the broker with pika. Nothing here is a mock.

Checks are plain functions that record failures and keep going, so one run
shows every problem; `finish()` prints the tally and exits non-zero on any
failure.
"""
import atexit
import json
import re
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from urllib.parse import urlparse

import pika
import redis as redislib

SOURCE_DIR = os.environ.get("WR_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
BUILD_DIR = os.environ.get("WR_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
STACK_DIR = os.environ.get("WR_STACK_DIR", os.path.join(BUILD_DIR, "stack"))
WARREN = os.path.join(BUILD_DIR, "warren")

_failures = []
_checks = 0


def stack_env():
    env = {}
    path = os.path.join(STACK_DIR, "env")
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k.replace("export ", "").strip()] = v.strip().strip('"').strip("'")
    return env


ENV = stack_env()
AMQP_URL = ENV["WARREN_AMQP_URL"]
REDIS_URL = ENV["WARREN_REDIS_URL"]


def check(cond, what):
    global _checks
    _checks += 1
    if cond:
        print("  ok   %s" % what, flush=True)
    else:
        _failures.append(what)
        print("  FAIL %s" % what, flush=True)
    return cond


def check_eq(got, want, what):
    return check(got == want, "%s (got %r, want %r)" % (what, _short(got), _short(want)))


def _short(v):
    s = repr(v)
    return v if len(s) < 300 else s[:300] + "..."


def finish():
    print("%d checks, %d failed" % (_checks, len(_failures)))
    for f in _failures:
        print("  failed: %s" % f)
    sys.exit(1 if _failures else 0)


def wait_for(pred, timeout, what, interval=0.1):
    """Poll PRED until it returns a true value or TIMEOUT seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            check(False, "timed out after %ss waiting for %s" % (timeout, what))
            return v
        time.sleep(interval)


def prefix():
    return "t%s" % uuid.uuid4().hex[:8]


class Broker:
    """A pika connection for publishing, counting and draining."""

    def __init__(self):
        self.conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass

    def declare(self, queue):
        self.ch.queue_declare(queue=queue, durable=True)

    def delete(self, *queues):
        for q in queues:
            self.ch.queue_delete(queue=q)

    def depth(self, queue):
        return self.ch.queue_declare(queue=queue, passive=True).method.message_count

    def consumers(self, queue):
        return self.ch.queue_declare(queue=queue, passive=True).method.consumer_count

    def publish(self, routing_key, body, exchange="", message_id=None, content_type="application/json",
                type=None, headers=None, persistent=True):
        props = pika.BasicProperties(
            message_id=message_id,
            content_type=content_type,
            type=type,
            headers=headers,
            delivery_mode=2 if persistent else 1,
        )
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.ch.basic_publish(exchange=exchange, routing_key=routing_key, body=body, properties=props,
                              mandatory=True)

    def drain(self, queue, limit=None):
        """Take every message in QUEUE (acking it); returns [(properties, body)]."""
        out = []
        while limit is None or len(out) < limit:
            method, props, body = self.ch.basic_get(queue=queue, auto_ack=False)
            if method is None:
                break
            out.append((props, body))
            self.ch.basic_ack(method.delivery_tag)
        return out


_started = []


@atexit.register
def _stop_leftovers():
    """A test that dies halfway (an exception, a failed wait) leaves no warren running."""
    for proc in _started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Warren:
    """The real warren binary with a generated config, logging to a file."""

    def __init__(self, tmp, subscriptions, extra="", name="warren", log_bodies=False):
        self.tmp = tmp
        self.config = os.path.join(tmp, name + ".yaml")
        self.log_path = os.path.join(tmp, name + ".log")
        with open(self.config, "w") as fh:
            fh.write("amqp:\n  url: ${WARREN_AMQP_URL}\n  heartbeat: 5s\n")
            fh.write("redis:\n  url: ${WARREN_REDIS_URL}\n")
            fh.write("log:\n  level: info\n")
            if log_bodies:
                fh.write("  bodies: true\n")
            if "\nhttp:" not in "\n" + extra:
                # any free loopback port: tests run several sidecars at once
                fh.write("http:\n  listen: 127.0.0.1:0\n  queue_poll: 1s\n")
            fh.write(extra)
            fh.write("subscriptions:\n")
            for s in subscriptions:
                fh.write("  - name: %s\n" % s["name"])
                for k, v in s.items():
                    if k in ("name", "bindings"):
                        continue
                    if isinstance(v, (dict, list)):
                        v = json.dumps(v)  # a JSON flow collection is valid YAML
                    fh.write("    %s: %s\n" % (k, v))
                if s.get("bindings"):
                    fh.write("    bindings:\n")
                    for b in s["bindings"]:
                        fh.write("      - exchange: %s\n" % b["exchange"])
                        fh.write("        type: %s\n" % b.get("type", "topic"))
                        fh.write("        routing_keys: [%s]\n" % ", ".join(b["routing_keys"]))
        self.proc = None
        self.logfh = None

    def start(self):
        env = dict(os.environ)
        env.update(ENV)
        self.logfh = open(self.log_path, "ab")
        self.proc = subprocess.Popen([WARREN, "run", "-c", self.config], stdout=self.logfh,
                                     stderr=subprocess.STDOUT, env=env)
        _started.append(self.proc)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_consuming(self, count, timeout=20):
        return wait_for(lambda: len(self.lines(msg="consuming")) >= count or not self.alive(),
                        timeout, "warren to start consuming") and self.alive()

    def stop(self, sig=signal.SIGTERM, timeout=40):
        """Signal warren and wait; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.logfh.close()
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.logfh.close()
        self.proc = None

    def lines(self, **match):
        """Parsed JSON log lines whose fields equal every MATCH item."""
        out = []
        try:
            with open(self.log_path, "rb") as fh:
                for raw in fh:
                    try:
                        rec = json.loads(raw)
                    except ValueError:
                        continue
                    if all(rec.get(k) == v for k, v in match.items()):
                        out.append(rec)
        except FileNotFoundError:
            pass
        return out

    def http_port(self, timeout=20):
        """The port of warren's HTTP endpoint, from its "warren started" line."""
        wait_for(lambda: self.lines(msg="warren started") or not self.alive(), timeout,
                 "warren to start")
        started = self.lines(msg="warren started")
        if not started or "http" not in started[-1]:
            check(False, "warren logged its HTTP address")
            raise RuntimeError("warren has no HTTP address")
        return int(started[-1]["http"].rsplit(":", 1)[1])

    def get(self, path, timeout=5):
        """GET PATH from warren's HTTP endpoint: (status, body text)."""
        import urllib.request
        import urllib.error
        url = "http://127.0.0.1:%d%s" % (self.http_port(), path)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self):
        """The /metrics samples as {(name, frozenset(labels.items())): value}."""
        status, text = self.get("/metrics")
        check_eq(status, 200, "/metrics answers 200")
        out = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            head, value = line.rsplit(" ", 1)
            name, labels = head, {}
            if "{" in head:
                name, rest = head.split("{", 1)
                for part in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest):
                    labels[part[0]] = part[1]
            out[(name, frozenset(labels.items()))] = float(value)
        return out

    def metric(self, samples, name, **labels):
        """The value of NAME{LABELS} in SAMPLES (from metrics()), 0 when absent."""
        return samples.get((name, frozenset(labels.items())), 0.0)

    def raw_log(self):
        with open(self.log_path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")


def redis_client():
    return redislib.Redis.from_url(REDIS_URL, decode_responses=True)


STATES = {"p": "processing", "r": "released", "d": "done"}


def parse_record(value):
    """An idempotency record's value (sidecar/src/record.h) as a dict: state,
    starts, and token + lease_until (processing) or outcome + done_at + entry
    (done). {} for None. Parsed here on its own, not with warren's code, so a
    test notices when warren writes something else."""
    if value is None:
        return {}
    state, _, rest = value.partition("|")
    if state not in STATES:
        raise ValueError("not an idempotency record: %r" % value[:80])
    rec = {"state": STATES[state]}
    if state == "r":
        rec["starts"] = rest
    elif state == "p":
        starts, _, rest = rest.partition("|")
        token, _, lease = rest.rpartition("|")
        rec.update(starts=starts, token=token, lease_until=lease)
    else:
        starts, outcome, done_at, entry = (rest.split("|", 3) + [""])[:4]
        rec.update(starts=starts, outcome=outcome, done_at=done_at, entry=entry)
    return rec


def idem_record(r, subscription, key, prefix="warren:idem:"):
    """The idempotency record of KEY for SUBSCRIPTION, as a dict ({} if none)."""
    return parse_record(r.get("%s%s:%s" % (prefix, subscription, key)))


def fresh_redis():
    """Start a test from an empty Redis database: idempotency records of an
    earlier run (the test servers keep their data) would turn this run's
    events into duplicates. Integration tests run one at a time (ctest
    RESOURCE_LOCK), so this cannot disturb another test."""
    redis_client().flushdb()


fresh_redis()


def tempdir():
    return tempfile.mkdtemp(prefix="warren-test-")


def write(path, text):
    with open(path, "w") as fh:
        fh.write(text)
    return path

# ---- helpers of the fault-injection tests (tests/integration/test_outage_*.py) ----

STACK_SH = os.path.join(SOURCE_DIR, "deploy", "local", "stack.sh")


def stack(cmd):
    """Run stack.sh CMD on the test's stack dir with the stack's own ports."""
    env = dict(os.environ)
    env["WR_AMQP_PORT"] = str(urlparse(ENV["WARREN_AMQP_URL"]).port)
    env["WR_REDIS_PORT"] = str(urlparse(ENV["WARREN_REDIS_URL"]).port)
    if "WARREN_AMQPS_URL" in ENV:  # a restarted broker keeps its TLS listener
        env["WR_AMQPS_PORT"] = str(urlparse(ENV["WARREN_AMQPS_URL"]).port)
    t0 = time.monotonic()
    p = subprocess.run(["bash", STACK_SH, cmd, STACK_DIR], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=240)
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        print("    | %s" % line, flush=True)
    print("  stack.sh %s: exit %d in %.1fs" % (cmd, p.returncode, time.monotonic() - t0),
          flush=True)
    return p.returncode


def depth(b, q):
    """Ready messages in Q, or None when Q does not exist (the channel is reopened)."""
    try:
        return b.depth(q)
    except pika.exceptions.ChannelClosedByBroker:
        b.ch = b.conn.channel()
        b.ch.confirm_delivery()
        return None


def delete_queues(queues):
    """Best effort, on a connection of its own: the shared broker keeps no leftovers."""
    try:
        c = Broker()
    except Exception as e:
        print("  cleanup: cannot connect to delete the queues: %s" % e, flush=True)
        return
    for q in queues:
        try:
            c.ch.queue_delete(queue=q)
        except Exception:
            c.ch = c.conn.channel()
    c.close()


def records(r, sub):
    """{key: record} of every idempotency record of SUB."""
    keys = list(r.scan_iter(match="warren:idem:%s:*" % sub, count=2000))
    out = {}
    pipe = r.pipeline()
    for k in keys:
        pipe.get(k)
    for k, rec in zip(keys, pipe.execute()):
        out[k.split(":", 3)[3]] = parse_record(rec)
    return out


def done_count(r, sub):
    keys = list(r.scan_iter(match="warren:idem:%s:*" % sub, count=2000))
    pipe = r.pipeline()
    for k in keys:
        pipe.get(k)
    return sum(1 for v in pipe.execute() if parse_record(v).get("state") == "done")
