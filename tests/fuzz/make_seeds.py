#!/usr/bin/python3
"""Write the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/).

The seeds are committed; this script says how they were made and remakes
them (run it from anywhere with /usr/bin/python3: it needs python3-pika,
whose encoder writes AMQP properties exactly as they travel). Each seed is a
valid, interesting case in the target's input format (see the comment at
the top of each tests/fuzz/fuzz_<target>.c); libFuzzer mutates from there.
"""
import os
import shutil
import struct

import pika

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def props(**kw):
    return b"".join(pika.spec.BasicProperties(**kw).encode())


def s8(b):
    if isinstance(b, str):
        b = b.encode()
    assert len(b) < 256
    return bytes([len(b)]) + b


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as fh:
        fh.write(data)


TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def envelope(p, exchange, rk, flags, max_body, body):
    return struct.pack(">H", len(p)) + p + s8(exchange) + s8(rk) + bytes([flags]) + \
        struct.pack(">H", max_body) + body


def seeds_envelope():
    write("envelope", "json", envelope(
        props(message_id="m-1", content_type="application/json", delivery_mode=2,
              timestamp=1700000000, type="order.created",
              headers={"traceparent": TP, "version": 2}),
        "orders", "order.created", 2, 4096, b'{"id":1,"total":"9.99"}'))
    write("envelope", "retry-copy", envelope(
        props(message_id="m-2", content_type="application/vnd.shop+json; charset=utf-8",
              headers={"x-warren-attempt": "3", "x-warren-original-exchange": "orders",
                       "x-warren-original-routing-key": "order.paid", "tracestate": "a=b",
                       "version": "v7"}),
        "", "orders.q", 3, 100, '{"name":"caf\u00e9"}'.encode()))
    write("envelope", "bad-utf8", envelope(
        props(message_id="m-3", content_type="text/json"), "x", "k", 2, 64, b'{"a":"\xff\xfe"}'))
    write("envelope", "encoded", envelope(
        props(message_id="m-4", content_encoding="gzip", content_type="text/plain"),
        "x", "k", 0, 10, b"\x1f\x8b\x08\x00"))
    write("envelope", "no-id", envelope(props(), "x", "k", 2, 10, b""))
    write("envelope", "nested-headers", envelope(
        props(message_id="m-5", headers={"t": {"u": [1, "two", {"v": True}]},
                                         "x-warren-attempt": 2 ** 40, "version": -1}),
        "x", "k", 1, 65535, b"[]"))


def dlq(p, exchange, rk, reason, cls, error, sub, queue, handler, version, trace, span, attempt,
        now_ms):
    out = struct.pack(">H", len(p)) + p
    for v in (exchange, rk, reason, cls, error, sub, queue, handler, version, trace, span):
        out += s8(v)
    return out + struct.pack(">H", attempt) + struct.pack(">q", now_ms)


def seeds_dlq():
    write("dlq", "first-failure", dlq(
        props(message_id="m-1", content_type="application/json", expiration="60000",
              user_id="guest", headers={"traceparent": TP}),
        "orders", "order.created", "handler-error", "error", "boom at handler.lua:12",
        "orders", "orders.q", "orders.lua", "5f3a9c1e", "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331", 1, 1700000000123))
    write("dlq", "many-errors", dlq(
        props(message_id="m-2", headers={
            "x-warren-errors": ["e%d" % i for i in range(12)],
            "x-warren-first-failure": "2026-01-01T00:00:00.000Z",
            "x-warren-original-exchange": "orders",
            "x-warren-original-routing-key": "order.paid",
            "x-warren-attempt": 4}),
        "", "orders.q", "timeout", "timeout", "x" * 200 + "\u20ac\u20ac\u20ac",
        "orders", "orders.q", "orders.lua", "", "", "", 5, 0))
    write("dlq", "bare", dlq(b"\x00\x00", "", "", "", "", "", "", "", "", "", "", "", 0, -1))


def seeds_config():
    shutil.copy(os.path.join(ROOT, "config", "warren.yaml"),
                os.path.join(CORPUS, "config", "example.yaml"))
    minimal = ("amqp:\n  url: ${WR_FUZZ_URL}\nredis:\n  url: redis://localhost\n"
               "subscriptions:\n  - name: a\n    queue: q\n    handler: h.lua\n")
    write("config", "minimal.yaml", minimal)
    write("config", "flow.yaml",
          "{amqp: {url: 'amqps://u:p@h:5671/v', heartbeat: 0}, redis: {url: 'redis://:pw@h/3'},"
          " defaults: {retry: {backoff: {initial: 1s, max: 1m, multiplier: 1.5, jitter: 0.2}}},"
          " breakers: {pay: {window_time: 10s}},"
          " subscriptions: [{name: a, queue: q, handler: h.lua, prefetch: '${WR_FUZZ_NUM}',"
          " idempotency: {key: 'json:order.id', ttl: none},"
          " bindings: [{exchange: x, type: fanout, routing_keys: ['#']}]}]}\n")
    write("config", "aliases.yaml", minimal +
          "    bindings: &b\n      - exchange: x\n        routing_keys: &r [a, b, c]\n"
          "      - {exchange: y, routing_keys: *r}\n"
          "  - {name: b, queue: q2, handler: h.lua, bindings: *b}\n")
    write("config", "env.yaml", minimal.replace("localhost", "${WR_FUZZ_SECRET:-${X:-h}}") +
          "    dlq: '$${WR_FUZZ_EMPTY:-d}${WR_FUZZ_SECRET}'\nlog: {level: '${WR_FUZZ_SECRET}'}\n")
    # found by fuzz_config: a URL error quoted a folded scalar's newline (now a unit test)
    write("config", "crash-url-over-lines.yaml",
          "{amqp: {url: 'amqps://uh@p:576/1en\n:y4 c6  \n" + "\n" * 40 + "'}}\n")
    write("config", "errors.yaml", minimal +
          "    bogus: 1\n    concurrency: 65\n    handler_timeout: 5x\n"
          "    retry: {delays: [1s], backoff: {initial: 2s}}\n"
          "store: {max_value_bytes: 32MiB}\nhttp: {listen: 'nowhere'}\n"
          "shutdown: {grace: \"1\\0s\"}\n")


def seeds_url():
    for i, u in enumerate([
            "amqp://guest:guest@127.0.0.1:5672/",
            "amqps://u:p%40ss@[::1]:5671/%2F",
            "amqp://h/vhost",
            "redis://:pw@cache:6380/12",
            "redis://justpw@[::1]:7000",
            "user:pa://ss@host",
            "amqp://u:p@ss@h/",
            "0.0.0.0:9464",
            "1m30s",
            "http://tok3n@host/"]):
        write("url", "u%d" % i, u)


def op(code, key=b"", a=b"", b=b"", num=0):
    return bytes([code]) + s8(key) + s8(a) + s8(b) + struct.pack(">q", num)


def seeds_storebuf():
    # keys by first byte % 5: '(' 40 -> 0 absent, ')' 41 -> 1 string,
    # '*' 42 -> 2 hash, '+' 43 -> 3 set, ',' 44 -> 4 fetch fails
    write("storebuf", "string", op(0, b")k", b"v") + op(9, b")k") + op(2, b")1", num=5) +
          op(9, b")1") + op(3, b")k", num=1000) + op(15, b")k") + op(1, b")k") + op(14, b")k"))
    write("storebuf", "hash", op(4, b"*h", b"a", b"2") + op(6, b"*h", b"b", num=3) +
          op(11, b"*h") + op(5, b"*h", b"a") + op(10, b"*h", b"a") + op(6, b"*h", b"z", num=-1) +
          op(11, b"*h"))
    write("storebuf", "set", op(7, b"+s", b"m3") + op(8, b"+s", b"m1") + op(12, b"+s") +
          op(13, b"+s", b"m2") + op(16) + op(12, b"+s"))
    write("storebuf", "kinds", op(2, b"(n", num=2 ** 62) + op(2, b"(n", num=2 ** 62) +
          op(4, b"(n", b"f", b"v") + op(1, b"(n") + op(4, b"(n", b"f", b"v") + op(9, b",x") +
          op(2, b")\x02", num=1))


if __name__ == "__main__":
    for t in ("envelope", "dlq", "config", "url", "storebuf"):
        shutil.rmtree(os.path.join(CORPUS, t), ignore_errors=True)
        os.makedirs(os.path.join(CORPUS, t))
    seeds_envelope()
    seeds_dlq()
    seeds_config()
    seeds_url()
    seeds_storebuf()
