#!/usr/bin/python3
"""prefill: fill a durable queue with N persistent ~100-byte JSON messages.

Each message has a unique message_id (<id-prefix>-<n>), content type
application/json, type "bench.event", delivery mode 2 (persistent), and is
published to the queue through the default exchange in publisher-confirm
mode, with up to --window confirms outstanding (the broker acks them with
`multiple`), so 50,000 take seconds, not minutes.

    /usr/bin/python3 tests/bench/prefill.py --url amqp://guest:guest@127.0.0.1:5900/ \
        --queue bench.a --count 50000 [--purge] [--id-prefix run1-a] [--window 2000]

tests/bench/orders.py imports it and passes its own messages instead:
Prefill(args, messages=[(message_id, body, type), ...]).

Prints one line of JSON ({"queue":..., "published":N, "elapsed_s":..., "msgs_per_s":...,
"depth":...}) and exits 0 when every message was confirmed and the queue
holds at least N messages; 1 otherwise. Uses python3-pika (Debian's, hence
/usr/bin/python3).
"""
import argparse
import json
import sys
import time
import uuid

import pika


def body_for(n, size):
    base = {"event": "order.created", "order_id": "o-%08d" % n, "n": n, "total": round(n * 0.37, 2),
            "pad": ""}
    raw = json.dumps(base, separators=(",", ":"))
    pad = max(0, size - len(raw))
    base["pad"] = "x" * pad
    return json.dumps(base, separators=(",", ":")).encode()


class Prefill:
    def __init__(self, args, messages=None):
        self.a = args
        self.messages = messages   # None: body_for(); else (message_id, body, type) per n
        self.params = pika.URLParameters(args.url)
        self.params.heartbeat = 0
        self.next_n = 0            # next message number to publish
        self.published = 0
        self.confirmed = 0
        self.nacked = 0
        self.outstanding = {}      # delivery tag -> True (pika's tags start at 1)
        self.tag = 0
        self.error = None
        self.done = False
        self.pumping = False
        self.conn = None
        self.ch = None
        self.t0 = None
        self.t1 = None

    # ---- connection plumbing

    def run(self):
        self.conn = pika.SelectConnection(self.params, on_open_callback=self.on_open,
                                          on_open_error_callback=self.on_open_error,
                                          on_close_callback=self.on_conn_closed)
        self.conn.ioloop.start()

    def stop(self, error=None):
        if error and not self.error:
            self.error = error
        if self.conn is not None and self.conn.is_open:
            self.conn.close()
        elif self.conn is not None:
            self.conn.ioloop.stop()

    def on_open_error(self, _conn, err):
        self.error = "cannot connect: %s" % err
        self.conn.ioloop.stop()

    def on_conn_closed(self, _conn, reason):
        if not self.done and not self.error:
            self.error = "connection closed: %s" % reason
        self.conn.ioloop.stop()

    def on_open(self, conn):
        conn.channel(on_open_callback=self.on_channel)

    def on_channel(self, ch):
        self.ch = ch
        ch.add_on_close_callback(self.on_channel_closed)
        ch.queue_declare(self.a.queue, durable=True, callback=self.on_declared)

    def on_channel_closed(self, _ch, reason):
        if not self.done:
            self.stop("channel closed: %s" % reason)

    def on_declared(self, _frame):
        if self.a.purge:
            self.ch.queue_purge(self.a.queue, callback=lambda _f: self.start_confirms())
        else:
            self.start_confirms()

    def start_confirms(self):
        self.ch.confirm_delivery(ack_nack_callback=self.on_confirm, callback=self.on_confirm_ok)

    def on_confirm_ok(self, _frame):
        self.t0 = time.monotonic()
        self.pump()

    # ---- publishing

    def pump(self):
        """Publish until the window is full or everything is out."""
        if self.pumping or self.done:
            return
        self.pumping = True
        try:
            chunk = 0
            while (self.next_n < self.a.count and len(self.outstanding) < self.a.window
                   and chunk < 500):
                n = self.next_n
                if self.messages is None:
                    mid, body, mtype = "%s-%d" % (self.a.id_prefix, n), body_for(n, self.a.size), \
                        "bench.event"
                else:
                    mid, body, mtype = self.messages[n]
                props = pika.BasicProperties(
                    message_id=mid,
                    content_type="application/json",
                    type=mtype,
                    delivery_mode=2,
                )
                self.ch.basic_publish("", self.a.queue, body, props)
                self.tag += 1
                self.outstanding[self.tag] = True
                self.next_n += 1
                self.published += 1
                chunk += 1
            if self.next_n < self.a.count and len(self.outstanding) < self.a.window:
                # let the ioloop write and read, then go on
                self.conn.ioloop.call_later(0, self.pump)
        finally:
            self.pumping = False

    def on_confirm(self, frame):
        m = frame.method
        nack = isinstance(m, pika.spec.Basic.Nack)
        if m.multiple:
            tags = [t for t in self.outstanding if t <= m.delivery_tag]
        else:
            tags = [m.delivery_tag] if m.delivery_tag in self.outstanding else []
        for t in tags:
            del self.outstanding[t]
        if nack:
            self.nacked += len(tags)
        else:
            self.confirmed += len(tags)
        if self.nacked:
            self.stop("the broker nacked %d publishes" % self.nacked)
            return
        if self.confirmed >= self.a.count:
            self.t1 = time.monotonic()
            self.ch.queue_declare(self.a.queue, passive=True, callback=self.on_final_depth)
            return
        self.pump()

    def on_final_depth(self, frame):
        self.depth = frame.method.message_count
        self.done = True
        self.conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--size", type=int, default=100, help="approximate body size in bytes (100)")
    ap.add_argument("--id-prefix", default=None, help="message_id prefix (default: random)")
    ap.add_argument("--window", type=int, default=2000, help="unconfirmed publishes allowed (2000)")
    ap.add_argument("--purge", action="store_true", help="purge the queue first")
    a = ap.parse_args()
    if a.count < 0 or a.window < 1:
        ap.error("--count must be >= 0 and --window >= 1")
    if a.id_prefix is None:
        a.id_prefix = "bench-" + uuid.uuid4().hex[:12]

    p = Prefill(a)
    p.depth = None
    if a.count == 0:
        print(json.dumps({"queue": a.queue, "published": 0}))
        return 0
    try:
        p.run()
    except KeyboardInterrupt:
        p.error = "interrupted"
    ok = p.done and p.error is None and p.confirmed == a.count and (p.depth or 0) >= a.count
    elapsed = (p.t1 or time.monotonic()) - (p.t0 or time.monotonic())
    out = {"queue": a.queue, "published": p.published, "confirmed": p.confirmed,
           "elapsed_s": round(elapsed, 3),
           "msgs_per_s": round(p.confirmed / elapsed, 1) if elapsed > 0 else None,
           "depth": p.depth, "id_prefix": a.id_prefix,
           "body_bytes": len(body_for(0, a.size))}
    if p.error:
        out["error"] = p.error
    print(json.dumps(out), flush=True)
    if not ok:
        print("prefill: failed: %s" % (p.error or "depth %s < %d" % (p.depth, a.count)),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
