"""Where the idempotency key comes from: a JSON field (two messages with
different ids but the same order id are one event), a header, and the body
hash for messages without an id (missing_key: body-hash); a message without
its key is dead-lettered with the reason: missing-idempotency-key, or
invalid-json when the key is a JSON field and a JSON body is not JSON at all
(what the handler's decoding would say; `dlq list --reason invalid-json`
finds it)."""
import json
import os

from wrtest import (Broker, Warren, check, check_eq, finish, idem_record, prefix, redis_client,
                    tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
out = p + ".out"
r = redis_client()
write(os.path.join(tmp, "h.lua"), r'''
return { handle = function(event, ctx)
  ctx.publish("", "%s", { id = event.id, key = ctx.idempotency_key })
end }
''' % out)

b = Broker()
b.declare(out)
subs = [
    {"name": "byjson", "queue": p + ".json", "handler": "h.lua",
     "idempotency": {"key": "json:order.id"}},
    {"name": "byheader", "queue": p + ".hdr", "handler": "h.lua",
     "idempotency": {"key": "header:x-request-id"}},
    {"name": "byhash", "queue": p + ".hash", "handler": "h.lua",
     "idempotency": {"missing_key": "body-hash"}},
]
for s in subs:
    b.declare(s["queue"])
w = Warren(tmp, subs).start()
check(w.wait_consuming(3), "consuming")

b.publish(p + ".json", {"order": {"id": "o-1"}}, message_id="a")
b.publish(p + ".json", {"order": {"id": "o-1"}, "again": True}, message_id="b")
b.publish(p + ".json", {"order": {}}, message_id="c")
b.publish(p + ".json", b"not json", message_id="d")
b.publish(p + ".hdr", {"x": 1}, message_id="h1", headers={"x-request-id": "req-9"})
b.publish(p + ".hdr", {"x": 2}, message_id="h2", headers={"x-request-id": "req-9"})
b.publish(p + ".hdr", {"x": 3}, message_id="h3")
b.publish(p + ".hash", {"same": "body"})
b.publish(p + ".hash", {"same": "body"})
b.publish(p + ".hash", {"other": "body"})

wait_for(lambda: b.depth(out) >= 4 and b.depth(p + ".json.dlq") >= 2 and
         b.depth(p + ".hdr.dlq") >= 1 and len(w.lines(msg="duplicate message skipped")) >= 3,
         30, "all handled")
outs = [json.loads(body) for _, body in b.drain(out)]
keys = sorted(o["key"] for o in outs)
check_eq(len(outs), 4, "four distinct events ran")
check("o-1" in keys and "req-9" in keys, "keys from the JSON field and the header: %r" % keys)
check_eq(len([k for k in keys if k.startswith("sha256:")]), 2, "two distinct body hashes")
check_eq(idem_record(r, "byjson", "o-1").get("state"), "done", "record under the order id")
dead = {q: {props.message_id: props.headers for props, _ in b.drain(q)}
        for q in (p + ".json.dlq", p + ".hdr.dlq")}
for q, mid, reason, why in (
        (p + ".json.dlq", "c", "missing-idempotency-key", "the body has no JSON field 'order.id'"),
        (p + ".json.dlq", "d", "invalid-json", "the key is the JSON field 'order.id', but the "
         "body is not JSON (invalid token near 'not')"),
        (p + ".hdr.dlq", "h3", "missing-idempotency-key",
         "the message has no header 'x-request-id'")):
    h = dead[q].get(mid)
    check(h is not None, "%s holds %s" % (q, mid))
    if h:
        check_eq(h.get("x-warren-reason"), reason, "%s: %s reason" % (q, mid))
        check_eq(h.get("x-warren-error"), why, "%s: %s says why" % (q, mid))
check_eq(sorted(len(v) for v in dead.values()), [1, 2], "nothing else is dead-lettered")
check_eq(w.stop(), 0, "exit 0")
for s in subs:
    b.delete(s["queue"], s["queue"] + ".dlq", s["queue"] + ".wait",
             *["%s.retry.%s" % (s["queue"], d) for d in ("1s", "5s", "30s", "2m")])
b.delete(out)
b.close()
finish()
