"""Event contracts at the edge, against the real broker and Redis.

A mixed stream goes through two subscriptions that share one contracts file:
valid v2 events reach the handler; v1 events are
upcast by the contract's Lua upcaster and reach it as v2 (event.version 2,
event.original_version 1), and an upcaster that raises, or whose result does
not validate as v2, sends its event to the DLQ as upcast-failed; invalid ones go to the DLQ at once (no
retry, the handler never runs) with reason schema-invalid and every violation
(JSON pointer, rule, what was found) in x-warren-error and in `warren trace`;
a version newer than the contract is version-unknown; a type without a
contract is passed (unknown_types: pass) or dead-lettered as unknown-type
(dlq); the version comes from the configured header, else the body's field,
else the default. Counted by type, version and result on /metrics. `warren
check` reports a contract's unsupported keyword and an invalid example at
FILE:LINE:COL."""
import json
import os
import subprocess

from wrtest import (ENV, WARREN, Broker, Warren, check, check_eq, finish, prefix, tempdir,
                    wait_for, write)

p = prefix()
tmp = tempdir()
out = p + ".out"
qa, qb = p + ".a", p + ".b"
qo, out2 = p + ".o", p + ".out2"

CONTRACTS = """\
events:
  order.created:
    version: 2
    schema:
      type: object
      required: [order_id, customer_id, items, total_amount]
      properties:
        order_id: { type: string, minLength: 1 }
        customer_id: { type: string }
        items:
          type: array
          minItems: 1
          items:
            type: object
            required: [sku, quantity]
            properties:
              quantity: { type: integer, minimum: 1 }
        total_amount: { type: number, exclusiveMinimum: 0 }
        timestamp: { type: string, format: date-time }
    examples:
      - { order_id: o-1, customer_id: c-1, items: [{ sku: a, quantity: 1 }], total_amount: 5 }
    backwards_compatible_with:
      - version: 1
        upcaster: upcasters/order_created_v1.lua
        schema:
          type: object
          required: [order_id, customer, items, total]
        examples:
          - { order_id: o-5, customer: c-5, items: [{ sku: a, qty: 1 }], total: 3 }
  order.cancelled:
    version: 1
    schema: { type: object, required: [order_id], additionalProperties: false,
              properties: { order_id: { type: string } } }
"""
write(os.path.join(tmp, "contracts.yaml"), CONTRACTS)
os.makedirs(os.path.join(tmp, "upcasters"))
write(os.path.join(tmp, "upcasters", "order_created_v1.lua"), r'''
-- v1 -> v2: customer -> customer_id, items[].qty -> items[].quantity, total -> total_amount
return function(data, info)
  if data.fail then
    error("cannot upcast " .. data.order_id .. " to v" .. info.to)
  end
  local items = {}
  for i, item in ipairs(data.items) do
    items[i] = { sku = item.sku, quantity = item.qty }
  end
  return { order_id = data.order_id, customer_id = data.customer, items = items,
           total_amount = data.total }
end
''')
write(os.path.join(tmp, "h.lua"), r'''
return { handle = function(event, ctx)
  ctx.publish("", "%s", { id = event.id, type = event.type, version = event.version,
                          original_version = event.original_version,
                          customer_id = event.data.customer_id })
end }
''' % out)

write(os.path.join(tmp, "pub.lua"), r'''
return { handle = function(event, ctx)
  ctx.publish("", "%s", event.data.publish, { type = "order.created" })
end }
''' % out2)
subs = [
    # validate_outgoing: what the handler publishes is checked against its contract too
    {"name": "outgoing", "queue": qo, "handler": "pub.lua",
     "contracts": {"file": "contracts.yaml", "validate_outgoing": True}},
    {"name": "pass", "queue": qa, "handler": "h.lua",
     "contracts": {"file": "contracts.yaml", "default_version": 1}},
    # no default_version: an event without one is of its type's current version (2)
    {"name": "strict", "queue": qb, "handler": "h.lua",
     "contracts": {"file": "contracts.yaml", "unknown_types": "dlq",
                   "version_header": "x-schema-version"}},
]


def run(*args):
    env = dict(os.environ)
    env.update(ENV)
    res = subprocess.run([WARREN] + list(args), capture_output=True, env=env, timeout=60)
    return res.returncode, res.stdout.decode(), res.stderr.decode()


GOOD = {"order_id": "o-1", "customer_id": "c-1", "items": [{"sku": "a", "quantity": 2}],
        "total_amount": 10.5, "timestamp": "2026-12-05T15:00:00Z"}
BAD = {"order_id": "", "items": [{"sku": "a", "quantity": 0}], "total_amount": 10,
       "timestamp": "yesterday"}

b = Broker()
for q in (out, out2, qa, qb, qo):
    b.declare(q)
w = Warren(tmp, subs, extra="journal:\n  ttl: 1h\n")
try:
    w.start()
    check(w.wait_consuming(3), "consuming")
    # subscription "pass": version from the "version" header, else the body's field, else 1
    # (its default_version)
    b.publish(qa, GOOD, message_id="a-good", type="order.created", headers={"version": 2})
    b.publish(qa, BAD, message_id="a-bad", type="order.created", headers={"version": "2"})
    b.publish(qa, dict(GOOD, version=2), message_id="a-field", type="order.created")
    b.publish(qa, GOOD, message_id="a-v3", type="order.created", headers={"version": 3})
    b.publish(qa, GOOD, message_id="a-vbad", type="order.created", headers={"version": "v2"})
    b.publish(qa, {"anything": 1}, message_id="a-unknown", type="order.shipped")
    b.publish(qa, {"order_id": "o-1", "why": "x"}, message_id="a-cancel", type="order.cancelled")
    V1 = {"order_id": "o-9", "customer": "c-9", "items": [{"sku": "a", "qty": 3}], "total": 7}
    b.publish(qa, V1, message_id="a-v1", type="order.created", headers={"version": 1})
    b.publish(qa, V1, message_id="a-v1-default", type="order.created")  # no version: 1
    b.publish(qa, dict(V1, fail=True), message_id="a-v1-fail", type="order.created")
    b.publish(qa, dict(V1, items=[{"sku": "a", "qty": 0}]), message_id="a-v1-bad",
              type="order.created")
    b.publish(qa, {"order_id": "o-9", "items": [], "total": 1}, message_id="a-v1-invalid",
              type="order.created")
    # subscription "strict": its own version header, default the current version (2),
    # unknown types to the DLQ;
    # no AMQP type: the routing key (the queue's name) is the type, which has no contract
    b.publish(qb, GOOD, message_id="b-default", type="order.created")
    b.publish(qb, GOOD, message_id="b-header", type="order.created",
              headers={"x-schema-version": 3, "version": 2})
    b.publish(qb, {"order_id": "o-2"}, message_id="b-cancel", type="order.cancelled")  # v1
    b.publish(qb, {"anything": 1}, message_id="b-unknown", type="order.shipped")
    b.publish(qb, GOOD, message_id="b-notype")

    wait_for(lambda: b.depth(out) >= 7 and b.depth(qa + ".dlq") >= 7 and
             b.depth(qb + ".dlq") >= 3, 30, "all handled")
    handled = {json.loads(body)["id"]: json.loads(body) for _, body in b.drain(out)}
    check_eq(sorted(handled), ["a-field", "a-good", "a-unknown", "a-v1", "a-v1-default",
                               "b-cancel", "b-default"],
             "valid events, upcast v1 events and the unknown type on 'pass' reach the handler")
    for mid, version, original in (("a-good", "2", "2"), ("a-field", "2", "2"),
                                   ("a-v1", "2", "1"), ("a-v1-default", "2", "1"),
                                   ("b-default", "2", "2"), ("b-cancel", "1", "1")):
        got = handled.get(mid, {})
        check_eq((got.get("version"), got.get("original_version")), (version, original),
                 "%s: event.version and event.original_version" % mid)
    check_eq(handled.get("a-v1", {}).get("customer_id"), "c-9", "the handler sees v2 data")

    dead = {}
    for q in (qa + ".dlq", qb + ".dlq"):
        for props, _ in b.drain(q):
            dead[props.message_id] = props.headers
    check_eq(sorted(dead), ["a-bad", "a-cancel", "a-v1-bad", "a-v1-fail", "a-v1-invalid", "a-v3",
                            "a-vbad", "b-header", "b-notype", "b-unknown"],
             "the rest is dead-lettered")
    want = {
        "a-bad": ("schema-invalid",
                  "order.created v2: /: required: missing 'customer_id'; /order_id: minLength: "
                  "length 0 < 1; /items/0/quantity: minimum: 0 < 1; /timestamp: format: "
                  "\"yesterday\" is not a date-time"),
        "a-cancel": ("schema-invalid",
                     "order.cancelled v1: /why: additionalProperties: not allowed"),
        "a-v3": ("version-unknown",
                 "order.created v3: no contract for this version (current: v2)"),
        "a-vbad": ("version-unknown", "order.created: version v2 is not a positive integer"),
        "b-header": ("version-unknown",
                     "order.created v3: no contract for this version (current: v2)"),
        "b-unknown": ("unknown-type", "no contract for event type 'order.shipped'"),
        "a-v1-fail": ("upcast-failed",
                      "order.created: v1 -> v2: %s:5: cannot upcast o-9 to v2"
                      % os.path.realpath(os.path.join(tmp, "upcasters", "order_created_v1.lua"))),
        "a-v1-bad": ("upcast-failed",
                     "order.created v1 -> v2: the result does not validate: /items/0/quantity: "
                     "minimum: 0 < 1"),
        "a-v1-invalid": ("schema-invalid",
                         "order.created v1: /: required: missing 'customer'"),
        "b-notype": ("unknown-type", "no contract for event type '%s'" % qb),
    }
    for mid, (reason, error) in want.items():
        h = dead.get(mid) or {}
        check_eq(h.get("x-warren-reason"), reason, "%s: reason" % mid)
        check_eq(h.get("x-warren-error"), error, "%s: the violations" % mid)
        check_eq(h.get("x-warren-attempts", h.get("x-warren-attempt")), 1,
                 "%s: dead-lettered on its first attempt" % mid)
    check(not w.lines(msg="message scheduled for retry"), "nothing was retried")

    # validate_outgoing: a handler that publishes an invalid order.created fails its own message
    b.publish(qo, {"publish": GOOD}, message_id="o-good")
    b.publish(qo, {"publish": {"order_id": "", "items": [{"sku": "a", "quantity": 0}]}},
              message_id="o-bad")
    wait_for(lambda: b.depth(out2) >= 1 and b.depth(qo + ".dlq") >= 1, 30, "outgoing checked")
    check_eq([json.loads(x) for _, x in b.drain(out2)], [GOOD], "the valid event is published")
    dead_o = {props.message_id: props.headers for props, _ in b.drain(qo + ".dlq")}
    check_eq(sorted(dead_o), ["o-bad"], "the message whose handler published an invalid event")
    h = dead_o.get("o-bad") or {}
    head = "ctx.publish #1 does not match its contract: order.created v2: "
    err = h.get("x-warren-error") or ""
    check_eq(h.get("x-warren-reason"), "schema-invalid", "dead-lettered as schema-invalid")
    # the members' order is the order cjson wrote them in: compare the violations as a set
    check(err.startswith(head), "the error names the publish and its contract: %r" % err)
    check_eq(sorted(err[len(head):].split("; ")),
             sorted(["/: required: missing 'customer_id'", "/: required: missing 'total_amount'",
                     "/order_id: minLength: length 0 < 1",
                     "/items/0/quantity: minimum: 0 < 1"]), "and every violation")
    check_eq(b.depth(out2), 0, "nothing of it was published")

    samples = w.metrics()
    for labels, n in ((dict(subscription="pass", type="order.created", version="2",
                            result="valid"), 2),
                      (dict(subscription="pass", type="order.created", version="2",
                            result="schema-invalid"), 1),
                      (dict(subscription="pass", type="order.created", version="other",
                            result="version-unknown"), 1),
                      (dict(subscription="pass", type="", version="", result="no-contract"), 1),
                      (dict(subscription="pass", type="order.created", version="1",
                            result="upcast"), 4),
                      (dict(subscription="pass", type="order.created", version="1",
                            result="schema-invalid"), 1),
                      (dict(subscription="strict", type="", version="",
                            result="unknown-type"), 2)):
        check_eq(w.metric_or_0(samples, "warren_contract_events_total", **labels), n,
                 "warren_contract_events_total%r" % labels)

    rc, text, err = run("trace", "-c", w.config, "a-bad", "--json")
    story = (json.loads(text).get("stories") or [None])[0] if rc == 0 else None
    check(story is not None, "trace of a-bad: rc %d %s" % (rc, err))
    if story:
        last = story["entries"][-1]
        check_eq(last.get("reason"), "schema-invalid", "trace: reason")
        check("/items/0/quantity: minimum: 0 < 1" in last.get("error", ""),
              "trace shows the violations: %r" % last.get("error"))
        check_eq(story["where"]["state"], "dlq", "trace: in the DLQ")
    check_eq(w.stop(), 0, "exit 0")

    # warren check: the contracts compile and their examples validate
    rc, text, err = run("check", "-c", w.config)
    check_eq(rc, 0, "check passes: %s" % err)
    check("pass: 2 event contracts, examples valid" in text, "check reports contracts: %r" % text)
    write(os.path.join(tmp, "contracts.yaml"),
          CONTRACTS.replace("minLength: 1 }", "minLength: 1, patternProperties: {} , x-db: 1 }")
          .replace("quantity: 1 }], total_amount: 5", "quantity: 0 }], total_amount: 5"))
    rc, text, err = run("check", "-c", w.config)
    check_eq(rc, 1, "check fails")
    path = os.path.realpath(os.path.join(tmp, "contracts.yaml"))
    check_eq(err.strip().splitlines()[:2],
             ["%s:8:73: schema: unsupported keyword 'x-db'" % path] * 2,
             "check names the keyword's line and column, for each subscription")
    write(os.path.join(tmp, "contracts.yaml"),
          CONTRACTS.replace("quantity: 1 }], total_amount: 5", "quantity: 0 }], total_amount: 5"))
    rc, text, err = run("check", "-c", w.config)
    check_eq(rc, 1, "check fails on an invalid example")
    check("%s:21:9: example 0 of order.created v2 does not validate: /items/0/quantity: "
          "minimum: 0 < 1" % path in err, "the example's line: %r" % err)
    # warren check runs the upcasters on the older versions' examples
    write(os.path.join(tmp, "contracts.yaml"),
          CONTRACTS.replace("qty: 1 }], total: 3", "qty: 0 }], total: 3"))
    rc, text, err = run("check", "-c", w.config)
    check_eq(rc, 1, "check fails on a v1 example that does not upcast to a valid v2")
    check("%s:29:13: example 0 of order.created v1 does not upcast: order.created v1 -> v2: the "
          "result does not validate: /items/0/quantity: minimum: 0 < 1" % path in err,
          "the v1 example's line: %r" % err)
    write(os.path.join(tmp, "contracts.yaml"), CONTRACTS)
    upcaster = os.path.join(tmp, "upcasters", "order_created_v1.lua")
    write(upcaster, "return function(data)\n  return data +\nend\n")
    rc, text, err = run("check", "-c", w.config)
    check_eq(rc, 1, "check fails on an upcaster that does not compile")
    check("%s:24:19: upcaster of order.created v1: %s:3: unexpected symbol near 'end'"
          % (path, os.path.realpath(upcaster)) in err, "the upcaster's error: %r" % err)
finally:
    if w.alive():
        w.stop()
    for s in subs:
        b.delete(s["queue"], s["queue"] + ".dlq", s["queue"] + ".wait",
                 *["%s.retry.%s" % (s["queue"], d) for d in ("1s", "5s", "30s", "2m")])
    b.delete(out, out2)
    b.close()
finish()
