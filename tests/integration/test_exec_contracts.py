"""`warren exec` applies a subscription's contracts as the sidecar does, and
shows each step: the event validated as received, every upcaster of the chain
(from version, to version, result), the result validated against the current
version. The same events then go through the real sidecar (broker and Redis):
each lands where exec said (handler with the same body and versions, or the
DLQ with the same reason and error), so exec and the worker share one set of
rules."""
import json
import os
import subprocess

from wrtest import (ENV, WARREN, Broker, Warren, check, check_eq, finish, prefix, tempdir,
                    wait_for, write)

p = prefix()
tmp = tempdir()
queue, out, dlq = p + ".in", p + ".out", p + ".in.dlq"
os.makedirs(os.path.join(tmp, "upcasters"))
write(os.path.join(tmp, "contracts.yaml"), """\
events:
  order.created:
    version: 3
    schema:
      type: object
      required: [order_id, customer_id, channel]
      properties:
        channel: { enum: [web, shop] }
    backwards_compatible_with:
      - version: 1
        upcaster: upcasters/v1.lua
        schema: { type: object, required: [order_id, customer] }
      - version: 2
        upcaster: upcasters/v2.lua
""")
write(os.path.join(tmp, "upcasters", "v1.lua"), """\
return function(d, info)
  d.customer_id = d.customer
  d.customer = nil
  return d
end
""")
write(os.path.join(tmp, "upcasters", "v2.lua"), """\
return function(d, info)
  if d.fail then error("no channel for " .. d.order_id) end
  d.channel = d.channel or "web"
  return d
end
""")
write(os.path.join(tmp, "h.lua"), r'''
return { handle = function(event, ctx)
  ctx.publish("", "%s", { id = event.id, version = event.version,
                          original_version = event.original_version, data = event.data })
end }
''' % out)
subs = [{"name": "orders", "queue": queue, "handler": "h.lua",
         "contracts": {"file": "contracts.yaml", "default_version": 1}}]
w = Warren(tmp, subs)  # writes the config exec reads too


def run_exec(event, *extra):
    path = os.path.join(tmp, event["id"] + ".json")
    write(path, json.dumps(event))
    env = dict(os.environ)
    env.update(ENV)
    res = subprocess.run([WARREN, "exec", "-c", w.config, "--subscription", "orders", "--event",
                          path] + list(extra), capture_output=True, env=env, timeout=60)
    return res.returncode, res.stdout.decode(), res.stderr.decode()


V1 = {"order_id": "o-1", "customer": "c-1"}
EVENTS = [
    # (event, what the contract makes of it)
    ({"id": "x-v1", "type": "order.created", "data": V1}, "upcast"),
    ({"id": "x-v2", "type": "order.created", "headers": {"version": 2},
      "data": {"order_id": "o-2", "customer_id": "c-2", "channel": "shop"}}, "upcast"),
    ({"id": "x-v3", "type": "order.created", "headers": {"version": 3},
      "data": {"order_id": "o-3", "customer_id": "c-3", "channel": "web"}}, "valid"),
    ({"id": "x-fail", "type": "order.created", "data": dict(V1, fail=True)}, "upcast-failed"),
    ({"id": "x-badout", "type": "order.created", "data": dict(V1, channel="fax")},
     "upcast-failed"),
    ({"id": "x-v1-invalid", "type": "order.created", "data": {"order_id": "o-4"}},
     "schema-invalid"),
    ({"id": "x-v3-invalid", "type": "order.created", "headers": {"version": 3},
      "data": {"order_id": "o-5"}}, "schema-invalid"),
    ({"id": "x-v9", "type": "order.created", "headers": {"version": 9}, "data": V1},
     "version-unknown"),
]

# 1. exec: the steps, in words and as JSON
rc, text, err = run_exec(EVENTS[0][0])
check_eq(rc, 0, "a v1 event upcast to v3 runs the handler (stderr: %s)" % err[-300:])
lines = [l for l in text.splitlines() if l.startswith(("contract", "  validate", "  upcast"))]

def words(line):
    """A step line with its JSON parsed (Lua tables have no member order)."""
    head, sep, body = line.partition(": {")
    return (head, json.loads("{" + body)) if sep else (line, None)


check_eq([words(l) for l in lines], [
    ("contract      order.created v1 received: upcast", None),
    ("  validate    v1 valid", None),
    ("  upcast      v1 -> v2 ok", {"order_id": "o-1", "customer_id": "c-1"}),
    ("  upcast      v2 -> v3 ok", {"order_id": "o-1", "customer_id": "c-1", "channel": "web"}),
    ("  validate    v3 valid", None),
], "exec shows every step of the chain")

rc, text, _ = run_exec(EVENTS[3][0])
check_eq(rc, 1, "a failing upcaster: exec exits 1")
check("  upcast      v2 -> v3 failed: order.created: v2 -> v3: %s:2: no channel for o-1"
      % os.path.join(tmp, "upcasters", "v2.lua") in text.splitlines(),
      "the failing step is named with the upcaster's file and line: %s" % text)
check("decision      dead-letter -> %s" % dlq in text, "upcast-failed is dead-lettered")

reports = {}
for event, result in EVENTS:
    rc, text, err = run_exec(event, "--json")
    rep = json.loads(text) if text.strip() else {}
    reports[event["id"]] = rep
    ct = rep.get("contract") or {}
    check_eq(ct.get("result"), result, "%s: exec's contract result" % event["id"])
    steps = [(s["step"], s["from"], s["to"], s["result"]) for s in ct.get("steps", [])]
    if result == "upcast":
        frm = ct.get("version")
        want = [("validate", frm, frm, "ok")]
        want += [("upcast", v, v + 1, "ok") for v in range(frm, 3)]
        want += [("validate", frm, 3, "ok")]
        check_eq(steps, want, "%s: validate, upcast each version, validate" % event["id"])
    elif result == "valid":
        check_eq(steps, [("validate", 3, 3, "ok")], "%s: one validation" % event["id"])
check_eq([(s["step"], s["result"]) for s in reports["x-badout"]["contract"]["steps"]],
         [("validate", "ok"), ("upcast", "ok"), ("upcast", "ok"), ("validate", "failed")],
         "an upcast result that does not validate fails at the last validation")
check_eq(reports["x-v3-invalid"]["contract"]["steps"],
         [{"step": "validate", "from": 3, "to": 3, "result": "failed",
           "error": "order.created v3: /: required: missing 'customer_id'; "
                    "/: required: missing 'channel'"}],
         "an invalid event fails its first validation, with the violations")

# 2. the sidecar: each event lands where exec said
b = Broker()
b.declare(out)
try:
    w.start()
    check(w.wait_consuming(1), "consuming")
    for event, _ in EVENTS:
        b.publish(queue, event["data"], message_id=event["id"], type=event["type"],
                  headers=event.get("headers"))
    handled, dead = {}, {}

    def all_landed():
        for _, body in b.drain(out):
            rec = json.loads(body)
            handled[rec["id"]] = rec
        for props, _ in b.drain(dlq):
            dead[props.message_id] = props.headers or {}
        return len(handled) + len(dead) >= len(EVENTS)
    check(wait_for(all_landed, 30, "every event handled or dead-lettered"),
          "every event landed: handled %s, dead %s" % (sorted(handled), dead))
    for event, result in EVENTS:
        mid, rep = event["id"], reports[event["id"]]
        if rep.get("outcome") == "ok":
            got = handled.get(mid, {})
            ct = rep["contract"]
            want_body = json.loads(ct.get("body_for_handler") or json.dumps(event["data"]))
            check_eq((got.get("version"), got.get("data")),
                     (str(ct.get("version_for_handler", ct.get("version"))), want_body),
                     "%s: the handler got what exec showed" % mid)
        else:
            h = dead.get(mid, {})
            check_eq((h.get("x-warren-reason"), h.get("x-warren-error")),
                     (rep.get("reason"), rep.get("error")),
                     "%s: dead-lettered with exec's reason and error" % mid)
finally:
    rc = w.stop()
    b.delete(queue, out, dlq, queue + ".wait")
check_eq(rc, 0, "warren exits 0")
finish()
