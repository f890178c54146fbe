#!/usr/bin/python3
"""instructions: what warren and Redis execute per message, counted by callgrind.

Wall-clock figures on a shared 2-core machine move with whatever else runs
there; instruction counts do not (the same binary, inputs and environment give
the same total, whatever the load). This drains the orders workload
(orders.py's stream: 5 % duplicates, 1 % malformed, two kinds of ctx.store
increment per order) through each given warren build, with warren and a
private redis-server both running under `valgrind --tool=callgrind`, and
prints instructions per message for each, next to an idle run of the same
pair (start, consume nothing, stop) whose count is subtracted.

    instructions.py --amqp-url URL --redis-port PORT --warren BIN [--warren BIN ...]
                    [--label L ...] [--count N] [--work DIR]

Each run's Redis effects are checked against the inputs (a run that applies
an increment twice or misses one fails the script). Needs valgrind and a
running RabbitMQ (tests/bench/instructions.sh starts one). Prints a table and
one JSON line per build; exits 1 when a run failed.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import orders  # noqa: E402  (tests/bench/orders.py: the workload and its checks)

import redis  # noqa: E402


def callgrind_total(path):
    with open(path) as fh:
        for line in fh:
            m = re.match(r"^(summary|totals): (\d+)", line)
            if m:
                return int(m.group(2))
    raise SystemExit("no total in %s" % path)


def start_redis(work, tag, port):
    d = os.path.join(work, "redis-" + tag)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    if os.getuid() == 0:
        shutil.chown(d, "redis", "redis")
    conf = os.path.join(d, "redis.conf")
    with open(conf, "w") as fh:
        fh.write("port %d\nbind 127.0.0.1\ndir %s\nsave \"\"\nappendonly yes\n"
                 "appendfsync everysec\n" % (port, d))
    os.chmod(conf, 0o644)
    out = os.path.join(d, "callgrind.out")
    user = ["runuser", "-u", "redis", "--"] if os.getuid() == 0 else []
    p = subprocess.Popen(user + ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                                 "redis-server", conf],
                         stdout=open(os.path.join(d, "valgrind.log"), "w"),
                         stderr=subprocess.STDOUT)
    r = redis.Redis(port=port, decode_responses=True)
    for _ in range(300):
        try:
            r.ping()
            return p, r, out
        except redis.exceptions.ConnectionError:
            time.sleep(0.1)
    p.kill()
    raise SystemExit("redis-server under callgrind did not start on port %d" % port)


def stop_redis(p, r):
    try:
        r.shutdown(nosave=True)
    except redis.exceptions.ConnectionError:
        pass
    p.wait(120)


def write_config(work, tag, amqp_url, port, queue):
    path = os.path.join(work, "warren-%s.yaml" % tag)
    with open(path, "w") as fh:
        fh.write("""amqp:
  url: %s
redis:
  url: redis://127.0.0.1:%d/0
log:
  level: info
http:
  listen: "off"
defaults:
  prefetch: %d
  batch_size: %d
subscriptions:
  - name: orders
    queue: %s
    handler: %s
""" % (amqp_url, port, orders.PREFETCH, orders.BATCH, queue,
       os.path.join(HERE, "orders_handler.lua")))
    return path


def outcomes(log):
    """Messages warren reached an outcome for, from its log."""
    n = 0
    try:
        with open(log, "rb") as fh:
            for line in fh:
                if (b'"msg":"message handled"' in line or b'"msg":"duplicate message skipped"'
                        in line or b'"msg":"message dead-lettered"' in line):
                    n += 1
    except FileNotFoundError:
        pass
    return n


def one(a, tag, warren, wl, idle):
    queue = "bench.instructions"
    b = orders.Broker(a.amqp_url)
    for q in (queue, queue + ".dlq", queue + ".wait"):
        try:
            b.delete(q)
        except Exception:
            b.ch = b.conn.channel()
    b.declare(queue)
    if not idle:
        ns = argparse.Namespace(url=a.amqp_url, queue=queue, count=len(wl.messages), window=2000,
                                purge=True, id_prefix=None, size=0)
        p = orders.prefill.Prefill(ns, messages=wl.messages)
        p.depth = None
        p.run()
        if p.confirmed != len(wl.messages):
            raise SystemExit("prefill failed: %s" % p.error)
    rp, r, rout = start_redis(a.work, tag, a.redis_port)
    cfg = write_config(a.work, tag, a.amqp_url, a.redis_port, queue)
    log = os.path.join(a.work, "warren-%s.log" % tag)
    wout = os.path.join(a.work, "warren-%s.callgrind" % tag)
    w = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + wout,
                          warren, "run", "-c", cfg], stdout=open(log, "w"),
                         stderr=subprocess.STDOUT)
    want = 0 if idle else len(wl.messages)
    t0 = time.monotonic()
    ok = True
    errors = []
    if idle:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and b'"msg":"consuming"' not in open(log, "rb").read():
            time.sleep(0.5)
        time.sleep(2)
    else:
        while outcomes(log) < want and time.monotonic() - t0 < a.timeout:
            if w.poll() is not None:
                errors.append("warren exited %s" % w.returncode)
                break
            time.sleep(1)
        got = outcomes(log)
        if got < want:
            errors.append("%d of %d outcomes after %.0f s" % (got, want, time.monotonic() - t0))
    w.send_signal(signal.SIGTERM)
    w.wait(300)
    if not idle and not errors:
        # every effect exactly once: the inputs say what Redis must hold
        keys = sorted(wl.expected)
        vals = r.mget(["warren:store:" + k for k in keys])
        wrong = [k for k, v in zip(keys, vals) if int(v or 0) != wl.expected[k]]
        if wrong:
            errors.append("%d effect keys differ from the inputs, e.g. %s" % (len(wrong),
                                                                             wrong[:3]))
        left = b.ready(queue)
        if left != 0:
            errors.append("%d messages left in the queue" % left)
    stop_redis(rp, r)
    b.close()
    ok = not errors
    return {"tag": tag, "warren": callgrind_total(wout), "redis": callgrind_total(rout),
            "messages": want, "ok": ok, "errors": errors,
            "seconds": round(time.monotonic() - t0, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--amqp-url", required=True)
    ap.add_argument("--redis-port", type=int, required=True,
                    help="a free port for the redis-server run under callgrind")
    ap.add_argument("--warren", action="append", required=True)
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--seed", default="11")
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--work", default="/tmp")
    a = ap.parse_args()
    wl = orders.Workload(a.count, a.seed)
    rows = []
    failed = 0
    for i, bin_ in enumerate(a.warren):
        label = a.label[i] if i < len(a.label) else bin_
        print("instructions: %s: idle run" % label, flush=True)
        idle = one(a, "b%d-idle" % i, bin_, wl, True)
        print("instructions: %s: %d messages" % (label, a.count), flush=True)
        run = one(a, "b%d" % i, bin_, wl, False)
        row = {"label": label, "messages": a.count, "ok": run["ok"], "errors": run["errors"],
               "warren_per_msg": (run["warren"] - idle["warren"]) / a.count,
               "redis_per_msg": (run["redis"] - idle["redis"]) / a.count,
               "seconds": run["seconds"]}
        failed += not run["ok"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("%-36s %16s %16s" % ("build", "warren instr/msg", "Redis instr/msg"))
    base = rows[0]
    for row in rows:
        print("%-36s %10.0f (%4.2f) %10.0f (%4.2f)%s" % (
            row["label"][:36], row["warren_per_msg"],
            row["warren_per_msg"] / base["warren_per_msg"], row["redis_per_msg"],
            row["redis_per_msg"] / base["redis_per_msg"], "" if row["ok"] else "  FAILED"))
    print("\n(instructions executed, counted by callgrind, per message of the orders workload:"
          " %d messages, 5%% duplicates, 1%% malformed; an idle run of the same pair is"
          " subtracted; ratios against the first build)" % a.count)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
