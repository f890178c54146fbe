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


def seeds_schema():
    """A schema (2-byte length), then an instance."""
    import json

    def seed(name, schema, instance):
        sch = json.dumps(schema).encode()
        write("schema", name, struct.pack(">H", len(sch)) + sch + json.dumps(instance).encode())
    item = {"type": "object", "required": ["sku", "quantity"],
            "properties": {"quantity": {"type": "integer", "minimum": 1}}}
    order = {"type": "object", "required": ["order_id", "items"],
             "properties": {"order_id": {"type": "string", "minLength": 1,
                                         "pattern": "^o-[0-9]+$"},
                            "items": {"type": "array", "minItems": 1, "uniqueItems": True,
                                      "items": {"$ref": "#/$defs/item"}},
                            "total": {"type": "number", "exclusiveMinimum": 0},
                            "at": {"type": "string", "format": "date-time"}},
             "additionalProperties": False, "$defs": {"item": item}}
    seed("order-valid", order, {"order_id": "o-1", "items": [{"sku": "a", "quantity": 1}],
                                "total": 2.5, "at": "2026-12-05T15:00:00Z"})
    seed("order-invalid", order, {"order_id": "", "items": [{"sku": "a", "quantity": 0}] * 2,
                                  "x": 1, "at": "yesterday"})
    seed("combinators", {"anyOf": [{"type": "integer"}, {"enum": ["a", None]}],
                         "not": {"const": 3}, "oneOf": [{"maximum": 10}, {"minimum": 5}],
                         "allOf": [{"type": ["integer", "string"]}]}, 7)
    seed("formats", {"type": "array", "maxItems": 4, "items": {"anyOf": [
        {"format": "email"}, {"format": "uuid"}, {"format": "uri"}, {"format": "date"}]}},
        ["a@b.c", "123e4567-e89b-12d3-a456-426614174000", "http://x/y", "2026-02-30"])
    seed("unsupported", {"type": "object", "properties": {"a": {"x-db": 1}}}, {})


def seeds_contracts():
    """A contracts file (2-byte length), an event type (length byte), a version (8 bytes),
    then the event's body."""
    def seed(name, text, etype, version, body):
        t = text.encode()
        write("contracts", name, struct.pack(">H", len(t)) + t + s8(etype) +
              struct.pack(">q", version) + body.encode())
    with open(os.path.join(ROOT, "config", "contracts.yaml")) as fh:
        example = fh.read().replace("upcasters/order_created_v1.lua", "up.lua")
    seed("example-v2", example, "order.created", 2,
         '{"order_id": "o-1", "customer_id": "c-1", "items": [{"sku": "a", "quantity": 1, '
         '"price": 2}], "total_amount": 2, "timestamp": "2026-12-05T15:00:00Z"}')
    seed("example-v1", example, "order.created", 1, '{"order_id": "o-1"}')
    seed("example-v9", example, "order.created", 9, "{}")
    chain = ("events:\n  e:\n    version: 3\n    schema: {type: object}\n"
             "    backwards_compatible_with:\n"
             "      - {version: 1, upcaster: up.lua, examples: [{a: 1}]}\n"
             "      - {version: 2, upcaster: up.lua, schema: {required: [a]}}\n")
    seed("chain", chain, "e", 2, '{"a": 1}')
    seed("errors", "events:\n  e:\n    version: 0\n    schema: {type: objekt, x-y: 1}\n"
         "    backwards_compatible_with:\n      - {version: 4, upcaster: missing.lua}\n"
         "  f: [1, 2\n", "f", 1, "{}")
    seed("unknown-type", "events: {a: {version: 1, schema: true}}\n", "b", 1, "[]")


def seeds_cloudevent():
    """flags, content type (length byte), N headers (name, value: length bytes), body."""
    binary = [("cloudEvents:specversion", "1.0"), ("cloudEvents:type", "com.example.someevent"),
              ("cloudEvents:time", "2018-04-05T03:56:24Z"), ("cloudEvents:id", "1234-1234-1234"),
              ("cloudEvents:source", "/mycontext/subcontext"),
              ("cloudEvents:comexampleextension1", "value")]

    def seed(name, flags, ctype, headers, body):
        h = b"".join(s8(k) + s8(v) for k, v in headers)
        write("cloudevent", name, bytes([flags]) + s8(ctype) + bytes([len(headers)]) + h +
              body.encode())
    seed("binary", 0, "application/json", binary, '{"appinfoA": "abc"}')
    seed("binary-ce_", 0, "application/json",
         [("ce_" + k.split(":", 1)[1], v) for k, v in binary], "{}")
    seed("binary-bytes", 0xff, "text/plain", binary, "plain text")
    seed("structured", 0, "application/cloudevents+json; charset=utf-8", [],
         '{"specversion": "1.0", "type": "com.example.someevent", "source": "/mycontext", '
         '"id": "C234-1234-1234", "time": "2018-04-05T17:31:00Z", '
         '"comexampleextension1": "value", "comexampleothervalue": 5, '
         '"datacontenttype": "application/json", "data": {"appinfoA": "abc", "appinfoB": 123}}')
    seed("structured-no-source", 0, "application/cloudevents+json", [],
         '{"specversion": "1.0", "type": "t", "id": "i"}')


if __name__ == "__main__":
    for t in ("envelope", "dlq", "config", "url", "storebuf", "schema", "contracts",
              "cloudevent"):
        shutil.rmtree(os.path.join(CORPUS, t), ignore_errors=True)
        os.makedirs(os.path.join(CORPUS, t))
    seeds_envelope()
    seeds_dlq()
    seeds_config()
    seeds_url()
    seeds_storebuf()
    seeds_schema()
    seeds_contracts()
    seeds_cloudevent()
