#!/usr/bin/python3
"""benchctl: the small helpers tests/bench/run.sh needs (python3-pika, /usr/bin/python3).

    benchctl.py depth URL QUEUE                 ready messages in QUEUE (-1: no such queue)
    benchctl.py delete URL QUEUE...             delete queues (missing ones are fine)
    benchctl.py wait-warren --url URL --queue Q --log FILE --count N --pid PID [--timeout S]
        wait until warren logged N "message handled" lines and Q is empty, then
        print one line of JSON with the timings taken from warren's log
    benchctl.py table RESULTS.jsonl             the median table (msg/s, ratio to baseline)

wait-warren reads the log incrementally and matches lines by substring (no JSON
parsing while warren runs), and asks the broker for the queue depth only once
the count is reached, so the poller costs next to nothing on the shared cores.
The timings come from the log's `ts` fields (millisecond resolution):

  elapsed_s         first "consuming" line (basic.consume-ok of the first worker)
                    -> last "message handled" line (written right after the
                    batch's ack): the same two points the baseline consumer times
  first_to_last_s   first "message handled" line -> last one
  startup_s         process spawned (--started) -> first "consuming"
  poll_wall_s       process spawned -> the poller saw it drained (poll granularity 0.2 s)
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

import pika

HANDLED = b'"msg":"message handled"'
OUTCOME = b'"outcome":"'


def connect(url):
    p = pika.URLParameters(url)
    p.heartbeat = 0
    p.connection_attempts = 3
    p.retry_delay = 0.5
    return pika.BlockingConnection(p)


def queue_depth(conn, queue):
    ch = conn.channel()
    try:
        return ch.queue_declare(queue=queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker as e:
        if e.reply_code == 404:
            return -1
        raise
    finally:
        if ch.is_open:
            ch.close()


def cmd_depth(a):
    conn = connect(a.url)
    try:
        print(queue_depth(conn, a.queue))
    finally:
        conn.close()
    return 0


def cmd_delete(a):
    conn = connect(a.url)
    try:
        for q in a.queues:
            ch = conn.channel()
            ch.queue_delete(queue=q)
            ch.close()
    finally:
        conn.close()
    return 0


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def parse_ts(s):
    # "2026-11-30T01:34:13.101Z"
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def cmd_wait_warren(a):
    t_start = a.started if a.started else time.time()   # when run.sh spawned warren
    deadline = time.monotonic() + a.timeout
    handled = 0
    outcomes = 0                   # every per-message outcome line, handled or not
    pos = 0
    partial = b""
    conn = None
    depth = None
    ok = False
    why = ""
    try:
        while True:
            try:
                with open(a.log, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos += len(chunk)
            except FileNotFoundError:
                chunk = b""
            if chunk:
                data = partial + chunk
                lines = data.split(b"\n")
                partial = lines.pop()
                for ln in lines:
                    if HANDLED in ln:
                        handled += 1
                        outcomes += 1
                    elif OUTCOME in ln:
                        outcomes += 1
            if outcomes >= a.count:
                if conn is None:
                    conn = connect(a.url)
                depth = queue_depth(conn, a.queue)
                if handled == a.count and depth == 0:
                    ok = True
                    break
                if handled != outcomes or handled > a.count:
                    why = "%d outcome lines, %d of them 'message handled', for %d messages" % (
                        outcomes, handled, a.count)
                    break
            if not pid_alive(a.pid):
                why = "warren (pid %d) exited" % a.pid
                break
            if time.monotonic() > deadline:
                why = "timed out after %ss (%d handled, queue depth %s)" % (a.timeout, handled, depth)
                break
            time.sleep(a.interval)
    finally:
        if conn is not None:
            conn.close()
    t_seen = time.time()

    # Timings from the log.
    consuming, first_h, last_h, kinds, dur_sum = [], None, None, {}, 0.0
    with open(a.log, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            msg = rec.get("msg")
            if msg == "consuming":
                consuming.append(parse_ts(rec["ts"]))
            elif "outcome" in rec:
                kinds[rec["outcome"]] = kinds.get(rec["outcome"], 0) + 1
                if msg == "message handled":
                    dur_sum += rec.get("duration_ms") or 0
                    t = parse_ts(rec["ts"])
                    first_h = t if first_h is None else min(first_h, t)
                    last_h = t if last_h is None else max(last_h, t)
    out = {"ok": ok, "handled": handled, "requested": a.count, "outcomes": kinds,
           "queue_depth": depth, "workers_consuming": len(consuming)}
    if consuming and last_h is not None:
        el = max(last_h - min(consuming), 0.001)
        out["elapsed_s"] = round(el, 3)
        out["msgs_per_s"] = round(handled / el, 1)
        out["first_to_last_s"] = round(last_h - first_h, 3)
        out["startup_s"] = round(min(consuming) - t_start, 3)
        out["poll_wall_s"] = round(t_seen - t_start, 3)
        out["duration_ms_mean"] = round(dur_sum / max(handled, 1), 4)   # the log's per-message duration_ms
    if why:
        out["error"] = why
    print(json.dumps(out), flush=True)
    return 0 if ok else 1


def cmd_table(a):
    runs = []
    with open(a.results) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    order, label, good, failed = [], {}, {}, {}
    for r in runs:
        v = r["variant"]
        if v not in label:
            order.append(v)
            label[v] = r.get("label", v)
            good[v], failed[v] = [], []
        if r.get("ok") and r.get("msgs_per_s"):
            good[v].append(r)
        else:
            failed[v].append(str(r.get("round")))

    def med(v, key, per_msg=False):
        xs = []
        for r in good[v]:
            x = r.get(key)
            if isinstance(x, (int, float)):
                n = r.get("messages") or r.get("handled") or 0
                xs.append(x * 1e6 / n if per_msg and n else x)
        return statistics.median(xs) if xs else None

    base = med("baseline", "msgs_per_s") if "baseline" in good else None
    best_base = max((r["msgs_per_s"] for r in good.get("baseline", [])), default=None)
    w = max([len(label[v]) for v in order] + [7])
    fmt = "%-*s  %8s  %6s  %8s  %6s  %-17s  %6s  %s"
    head = fmt % (w, "variant", "msg/s", "ratio", "best", "ratio", "CPU us/msg", "other", "each round (msg/s)")
    sub = fmt % (w, "", "(median)", "", "", "(best)", "self/mq/redis", "cores", "")
    print(head)
    print(sub.rstrip())
    print("-" * len(head))
    for v in order:
        m = med(v, "msgs_per_s")
        best = max((r["msgs_per_s"] for r in good[v]), default=None)
        ratio = "%.2f" % (m / base) if (m and base) else "n/a"
        bratio = "%.2f" % (best / best_base) if (best and best_base) else "n/a"
        cpu = "/".join("%.1f" % c if c is not None else "?" for c in
                       (med(v, "consumer_cpu_s", True), med(v, "broker_cpu_s", True),
                        med(v, "redis_cpu_s", True)))
        other = med(v, "other_cores")
        each = ", ".join("%.0f" % r["msgs_per_s"] for r in good[v])
        if failed[v]:
            each += (" | " if each else "") + "FAILED round(s) " + ",".join(failed[v])
        print(fmt % (w, label[v], "%.0f" % m if m else "n/a", ratio, "%.0f" % best if best else "n/a",
                     bratio, cpu, "%.2f" % other if other is not None else "?", each))
    print()
    print("ratio: median msg/s over the baseline's median; best: the fastest round of each, over the")
    print("baseline's fastest. CPU us/msg: CPU time per message of the consumer itself, RabbitMQ and")
    print("Redis (medians). other cores: CPU used by everything else on the machine during the run.")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("depth")
    p.add_argument("url")
    p.add_argument("queue")
    p.set_defaults(fn=cmd_depth)
    p = sub.add_parser("delete")
    p.add_argument("url")
    p.add_argument("queues", nargs="+")
    p.set_defaults(fn=cmd_delete)
    p = sub.add_parser("wait-warren")
    p.add_argument("--url", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--started", type=float, default=None, help="epoch seconds warren was spawned at")
    p.set_defaults(fn=cmd_wait_warren)
    p = sub.add_parser("table")
    p.add_argument("results")
    p.set_defaults(fn=cmd_table)
    a = ap.parse_args()
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
