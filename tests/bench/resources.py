"""What warren costs in CPU and memory, to size a pod's requests and limits.

Runs the real binary with the Kubernetes example's configuration and handler
(deploy/k8s/overlays/example/warren/: two workers, prefetch 100, batch 50,
the orders handler POSTing each event to the service beside it) against a
stack started by deploy/local/stack.sh, with a stand-in service (a threaded
Python HTTP server answering 201) on a loopback port. Phases:

  idle       warren connected, nothing to do
  rate N/s   events published at a steady N per second
  backlog    a prefilled queue drained as fast as warren goes

For each phase it samples /proc/<pid>: CPU (utime + stime) over wall time
(1.0 = one core) and CPU seconds per 1,000 events, resident memory (VmRSS,
largest sample) and the process's peak (VmHWM). Prints a table; asserts
nothing. The numbers in deploy/k8s/base/deployment.yaml come from it.

    WR_STACK_DIR=/var/tmp/warren/test-23672 /usr/bin/python3 tests/bench/resources.py

Environment: WR_STACK_DIR (the stack's env file), WR_BUILD_DIR (default
build-test), RES_RATES (default "100 500 1000"), RES_SECONDS per phase (20),
RES_BACKLOG (20000), RES_SERVICE_PORT (18080).
"""
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

import pika

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
BUILD = os.environ.get("WR_BUILD_DIR", os.path.join(SRC, "build-test"))
STACK = os.environ.get("WR_STACK_DIR", "/var/tmp/warren/test-23672")
RATES = [int(x) for x in os.environ.get("RES_RATES", "100 500 1000").split()]
SECONDS = float(os.environ.get("RES_SECONDS", "20"))
BACKLOG = int(os.environ.get("RES_BACKLOG", "20000"))
SERVICE_PORT = int(os.environ.get("RES_SERVICE_PORT", "18080"))
EXAMPLE = os.path.join(SRC, "deploy/k8s/overlays/example/warren")
TICK = os.sysconf("SC_CLK_TCK")

env = dict(os.environ)
with open(os.path.join(STACK, "env")) as fh:
    for line in fh:
        if "=" in line:
            k, v = line.strip().split("=", 1)
            env[k] = v
env["WARREN_HTTP_LISTEN"] = "127.0.0.1:0"


class Service(http.server.BaseHTTPRequestHandler):
    """The order service's stand-in: every POST is accepted (keep-alive, as a real one)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body are two writes: no 40 ms delayed ACK

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"ok":true}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def proc_sample(pid):
    with open("/proc/%d/stat" % pid) as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    cpu = (int(f[11]) + int(f[12])) / TICK          # utime + stime
    rss = hwm = 0
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) // 1024
    return cpu, rss, hwm


def main():
    tmp = tempfile.mkdtemp(prefix="warren-res-")
    for f in ("warren.yaml", "orders.lua"):
        shutil.copy(os.path.join(EXAMPLE, f), tmp)
    with open(os.path.join(EXAMPLE, "service.lua")) as fh:
        svc = fh.read().replace("127.0.0.1:8080", "127.0.0.1:%d" % SERVICE_PORT)
    with open(os.path.join(tmp, "service.lua"), "w") as fh:
        fh.write(svc)
    server = Server(("127.0.0.1", SERVICE_PORT), Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    params = pika.URLParameters(env["WARREN_AMQP_URL"])
    conn = pika.BlockingConnection(params)
    ch = conn.channel()          # queue operations
    pub = conn.channel()         # the load, without confirms: a paced publisher must not
                                 # wait a round trip per event
    for q in ("orders.events", "orders.events.dlq"):
        ch.queue_delete(q)

    log = open(os.path.join(tmp, "warren.log"), "wb")
    proc = subprocess.Popen([os.path.join(BUILD, "warren"), "run", "-c",
                             os.path.join(tmp, "warren.yaml")], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    rows = []
    seq = [0]
    run = "res-%d-" % os.getpid()   # ids unique per run: records of an earlier run stay in Redis

    def publish(n):
        for _ in range(n):
            seq[0] += 1
            pub.basic_publish("shop.events", "order.created",
                             json.dumps({"order_id": "o-%d" % seq[0], "items": [1]}),
                             pika.BasicProperties(message_id=run + str(seq[0]),
                                                  type="order.created", delivery_mode=2,
                                                  content_type="application/json"))

    def depth():
        return ch.queue_declare("orders.events", passive=True).method.message_count

    def measure(name, seconds, work=None, until=None):
        c0, _, _ = proc_sample(proc.pid)
        t0 = time.monotonic()
        n0 = seq[0]
        rss_max = 0
        while True:
            now = time.monotonic() - t0
            if until is None and now >= seconds:
                break
            if until is not None and until():
                break
            if work:
                work(now)
            _, rss, _ = proc_sample(proc.pid)
            rss_max = max(rss_max, rss)
            conn.process_data_events(0)
            time.sleep(0.05)
        c1, rss, hwm = proc_sample(proc.pid)
        wall = time.monotonic() - t0
        events = BACKLOG if name.startswith("backlog") else seq[0] - n0
        rows.append((name, wall, events, (c1 - c0) / wall,
                     (c1 - c0) / events * 1000 if events else 0, max(rss_max, rss), hwm))

    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            with open(os.path.join(tmp, "warren.log"), "rb") as fh:
                if fh.read().count(b'"msg":"consuming"') >= 2:
                    break
            time.sleep(0.2)
        time.sleep(2)
        measure("idle", SECONDS)
        for rate in RATES:
            def paced(now, rate=rate, start=[None]):
                if start[0] is None:
                    start[0] = seq[0]
                want = int(now * rate) - (seq[0] - start[0])
                if want > 0:
                    publish(want)
            measure("rate %d/s" % rate, SECONDS, work=paced)
            time.sleep(2)
        # the backlog: prefill with warren's consumers away (a second queue
        # binding would change nothing: stop consuming by pausing warren)
        proc.send_signal(19)  # SIGSTOP
        publish(BACKLOG)
        proc.send_signal(18)  # SIGCONT
        measure("backlog %d" % BACKLOG, 0, until=lambda: depth() == 0)
    finally:
        proc.terminate()
        rc = proc.wait(60)
        server.shutdown()
        for q in ("orders.events", "orders.events.dlq"):
            ch.queue_delete(q)
        conn.close()
    print("warren exit status %d; log %s/warren.log" % (rc, tmp))
    print("| phase | seconds | events | CPU (cores) | CPU s per 1,000 events | RSS max (MiB) | "
          "peak RSS so far (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for name, wall, events, cores, per_k, rss, hwm in rows:
        print("| %s | %.1f | %d | %.3f | %.3f | %d | %d |" % (name, wall, events, cores, per_k,
                                                            rss, hwm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
