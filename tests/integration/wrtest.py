"""wrtest: the shared fixture of warren's integration tests.

Every test talks to the real RabbitMQ and Redis that the `stack` fixture
(deploy/local/stack.sh, run by ctest) started on loopback; WR_STACK_DIR/env
holds their URLs. A test gets its own queue names (a per-test prefix), writes
its own config and handlers into a temp directory, starts the real `warren`
binary, and drives it through the broker with pika. Nothing here is a mock.

Checks are plain functions that record failures and keep going, so one run
shows every problem; `finish()` prints the tally and exits non-zero on any
failure, and on a run that made no check at all (a test that checks nothing
cannot pass).
"""
import atexit
import collections
import json
import re
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    if _checks == 0:
        _failures.append("the test made no check")
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

    def __init__(self, tmp, subscriptions, extra="", name="warren", log_bodies=False,
                 heartbeat="5s"):
        self.tmp = tmp
        self.config = os.path.join(tmp, name + ".yaml")
        self.log_path = os.path.join(tmp, name + ".log")
        with open(self.config, "w") as fh:
            fh.write("amqp:\n  url: ${WARREN_AMQP_URL}\n  heartbeat: %s\n" % heartbeat)
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
        """The value of NAME{LABELS} in SAMPLES (from metrics()), None when the
        series is absent: a missing or mislabelled series must not read as 0
        (check_eq(..., 0) then fails, as it should; compare with
        metric_or_0() only inside a wait)."""
        return samples.get((name, frozenset(labels.items())))

    def metric_or_0(self, samples, name, **labels):
        """metric(), with an absent series as 0: for polling a counter that
        appears with its first event; the final check uses metric()."""
        v = self.metric(samples, name, **labels)
        return 0.0 if v is None else v

    def raw_log(self):
        with open(self.log_path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")


class Gate:
    """An HTTP service of the test's own that holds a handler where the test
    wants it: POST URL/NAME (ctx.http.request from the handler) is noted as
    arrived, and answered 200 once the test opens NAME (504 after 50 s).

        gate = Gate()          # gate.url: http://127.0.0.1:<port>/gate/
        gate.wait("x", 20, "the handler at its gate")
        gate.open("x")
    """

    def __init__(self):
        arrived, opened = {}, {}
        self._arrived, self._opened = arrived, opened
        self._lock = threading.Lock()
        lock = self._lock

        def event(table, name):
            with lock:
                return table.setdefault(name, threading.Event())

        self._event = event

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                name = self.path.rsplit("/", 1)[-1]
                event(arrived, name).set()
                ok = event(opened, name).wait(50)
                self.send_response(200 if ok else 504)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/gate/" % self.server.server_address[1]

    def arrived(self, name):
        return self._event(self._arrived, name).is_set()

    def wait(self, name, timeout, what):
        """Wait until a handler is at gate NAME; true when it is."""
        return wait_for(lambda: self.arrived(name), timeout, what)

    def open(self, name):
        self._event(self._opened, name).set()

    def close(self):
        for e in list(self._opened.values()):
            e.set()
        self.server.shutdown()


# What a handler calls to wait at gate NAME (GATE: the Gate's url), in Lua.
GATE_LUA = r'''
local function gate(ctx, url, name)
  local res, err = ctx.http.request{ method = "POST", url = url .. name, timeout = 55,
                                     raise = false }
  if not res or res.status ~= 200 then
    error("gate " .. name .. ": " .. tostring(res and res.status or err))
  end
end
'''


def redis_client():
    return redislib.Redis.from_url(REDIS_URL, decode_responses=True)


STATES = {"p": "processing", "r": "released", "d": "done"}


def parse_record(value):
    """An idempotency record's value (sidecar/src/core/record.h) as a dict: state,
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


def held_by(r, sub, pid):
    """Keys of SUB's records that process PID holds (state processing, a claim
    token of that process: "<pid>-<worker>-<random>"). Read right after a kill
    -9, they are the work the kill caught in flight."""
    mine = "%d-" % pid
    return set(k for k, rec in records(r, sub).items()
               if rec.get("state") == "processing" and rec.get("token", "").startswith(mine))


def kill_in_flight(w, b, r, sub, queue, kills, rng, workers, max_tries=None):
    """kill -9 the running warren W until KILLS kills have caught work in
    flight, restarting it after each and waiting until its WORKERS consume
    again. The kills are spread over the messages QUEUE still holds, never over
    time: each try comes the moment the restarted process has taken a random
    half to whole of 1 / (tries left + 2) of what is left (RNG), so there is
    work left for every try however fast the machine drains the queue (a fixed
    delay after a mark let a fast machine drain the queue before the tenth
    kill). A kill counts only when the killed process still held claims in
    Redis (held_by: records "processing" under its token); one that finds none
    (the workers were between batches) is reported and the next try comes, up
    to MAX_TRIES (default 3 x KILLS). Returns [keys held at each kill], misses
    included (as empty sets)."""
    max_tries = max_tries or 3 * kills
    held_at = []
    caught = 0
    starts = 1
    while caught < kills and len(held_at) < max_tries:
        now = b.depth(queue)
        share = max(1, now // (max_tries - len(held_at) + 2))
        mark = now - max(1, int(share * rng.uniform(0.5, 1.0)))
        if now == 0 or not wait_for(lambda: b.depth(queue) <= mark, 120,
                                    "%s down to %d messages" % (queue, mark), interval=0.005):
            break
        pid = w.proc.pid
        w.kill9()
        held = held_by(r, sub, pid)
        held_at.append(held)
        caught += 1 if held else 0
        print("  kill -9 #%d %s: %d claims held, %d messages ready"
              % (len(held_at), "caught work in flight" if held else "MISSED (between batches)",
                 len(held), b.depth(queue)), flush=True)
        w.start()
        starts += 1
        # each run logs "consuming" once per worker (the log file is appended to)
        check(w.wait_consuming(workers * starts), "consuming again after restart #%d" % (starts - 1))
    check(caught >= kills, "%d kills caught work in flight (%d tried)" % (caught, len(held_at)))
    return held_at


def done_count(r, sub):
    keys = list(r.scan_iter(match="warren:idem:%s:*" % sub, count=2000))
    pipe = r.pipeline()
    for k in keys:
        pipe.get(k)
    return sum(1 for v in pipe.execute() if parse_record(v).get("state") == "done")


def work_handler(tmp, out_queue, busy_s, name="work.lua"):
    """Write a handler that works BUSY_S seconds of wall time per event, then
    publishes one output {input = <id>} to OUT_QUEUE through the default
    exchange: the steady load of the outage tests. Returns its path."""
    return write(os.path.join(tmp, name), r'''
local M = {}
function M.handle(event, ctx)
  local t = ctx.now()
  while ctx.now() - t < %s do end
  ctx.publish("", "%s", { input = event.id })
end
return M
''' % (repr(busy_s), out_queue))


def check_outputs(b, out_queue, sub_name, inputs, what="input"):
    """Drain OUT_QUEUE and check that each id of INPUTS has its output
    <id>:<SUB_NAME>:1 and that no other output id is there (a re-run publishes
    the same ids, so duplicates are allowed and reported). Returns the ids
    published more than once."""
    outs = b.drain(out_queue)
    per_input = collections.Counter(props.message_id for props, _ in outs)
    want = set("%s:%s:1" % (i, sub_name) for i in inputs)
    check_eq(sorted(want - set(per_input)), [],
             "every %s has its output <id>:<subscription>:1" % what)
    check_eq(sorted(set(per_input) - want), [],
             "no output id that is not a%s %s's <id>:<subscription>:1"
             % ("n" if what[0] in "aeiou" else "", what))
    repub = sorted(k for k, v in per_input.items() if v > 1)
    print("  %d outputs for %d %ss; %d ids published more than once (re-runs of batches "
          "in flight, same ids): %s" % (len(outs), len(inputs), what, len(repub), repub[:12]),
          flush=True)
    return repub


def node_log_path():
    """The shared RabbitMQ node's log file (stack.sh names it after the AMQP port)."""
    port = urlparse(ENV["WARREN_AMQP_URL"]).port
    return os.path.join(STACK_DIR, "rabbit", "log", "warren-%d@localhost.log" % port)


def node_log_size():
    """Where the node's log ends now (None when it cannot be read): pass it to
    node_log_since to read only what a test caused."""
    try:
        return os.path.getsize(node_log_path())
    except OSError:
        return None


def node_log_since(offset):
    """The node's log lines written after OFFSET (from node_log_size)."""
    if offset is None:
        return []
    try:
        with open(node_log_path(), "rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def check_connection_kept(w, node_off, node_says):
    """Check that the broker never dropped W's connection: no "broker
    connection lost" line in W's log, and no line of the node's log written
    since NODE_OFF that contains NODE_SAYS (case-insensitive). The first lines
    of each are printed."""
    lost = [x for x in w.lines() if x.get("msg", "").startswith("broker connection lost")]
    for x in lost[:6]:
        print("    warren: %s" % {k: x.get(k) for k in ("ts", "msg", "worker", "error", "batch")},
              flush=True)
    node_lines = [l for l in node_log_since(node_off) if node_says.lower() in l.lower()]
    for l in node_lines[:6]:
        print("    node: %s" % l.strip()[:300], flush=True)
    check_eq(len(lost), 0, "the broker never dropped warren's connection ('broker connection lost' "
                           "lines)")
    check_eq(len(node_lines), 0, "no '%s' closes in the broker's log" % node_says)


def handled_once(w):
    """Check that no message id was logged "message handled" twice by W;
    returns {message id: times logged}."""
    handled = collections.Counter(x.get("message_id") for x in w.lines(msg="message handled"))
    check_eq(sorted(k for k, v in handled.items() if v > 1), [],
             "no input logged 'message handled' twice")
    return handled


def check_clean_end(b, w, queue, all_queues, why=""):
    """The end of a run that must dead-letter nothing: drain QUEUE's DLQ and
    check it held nothing (printing W's first "message dead-lettered" lines and
    the reasons when it did), then check that no queue of ALL_QUEUES holds a
    message (a queue that does not exist holds none). WHY is added to the
    DLQ check's text."""
    dlq = b.drain(queue + ".dlq")
    reasons = collections.Counter(str((props.headers or {}).get("x-warren-reason"))
                                  for props, _ in dlq)
    for x in w.lines(msg="message dead-lettered")[:3]:
        print("    warren: %s" % {k: x.get(k) for k in ("ts", "worker", "message_id", "reason",
                                                      "error", "lease_takeover")}, flush=True)
    check_eq(sorted(props.message_id for props, _ in dlq), [],
             "nothing dead-lettered%s (DLQ reasons %s)" % (why, dict(reasons)))
    for q in all_queues:
        check_eq(depth(b, q) or 0, 0, "%s has no leftovers" % q)


def check_done_ok(r, sub, ids, outcome_note=""):
    """Check that every id of IDS has a done record of SUB whose outcome is ok
    (OUTCOME_NOTE is added to that check's text); returns SUB's records."""
    recs = records(r, sub)
    check_eq(sorted(i for i in ids if recs.get(i, {}).get("state") != "done"), [],
             "every input has a done record")
    check_eq(sorted(i for i in ids if recs.get(i, {}).get("outcome") != "ok"), [],
             "every record's outcome is ok%s" % outcome_note)
    return recs


def drain_and_stop(w, drained, timeout, what, settle_timeout=30, started=None):
    """Wait up to TIMEOUT s until DRAINED() holds (printing how long after
    STARTED, a time.monotonic(), when given), then 2 s more and again (up to
    SETTLE_TIMEOUT s: nothing may come back, e.g. from a delay queue), then
    stop W with SIGTERM and check that it exits 0."""
    wait_for(drained, timeout, what, interval=1)
    if started is not None:
        print("  drained %.0fs after warren started" % (time.monotonic() - started), flush=True)
    time.sleep(2)
    wait_for(drained, settle_timeout, "still drained", interval=1)
    check_eq(w.stop(), 0, "warren exits 0 on SIGTERM")
