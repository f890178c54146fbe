"""Contracts and upcasters reload while warren runs, like a handler, against
the real broker and Redis.

warren starts with order.created at v1. The contracts file is then saved (by
rename, as editors do) with v2 and a v1 -> v2 upcaster: without a restart, a
v1 event reaches the handler upcast (version 2, original_version 1) and a v2
event that lacks the new required field is dead-lettered as schema-invalid.
An edit to the upcaster alone is a new contracts version too. A contracts file
with an unsupported keyword, and an upcaster that does not compile, are
refused with FILE:LINE:COL and the running contracts stay in force. The log
("contracts loaded", "contracts reloaded" with previous_version), /status and
`warren status` name the live contracts version. warren_contract_events_total
counts every outcome, upcast-failed included, and keeps counting across
reloads. Which contracts file a subscription reads, and how (default_version,
...), are restart-only settings: a change is logged as such."""
import json
import os
import subprocess

from wrtest import (ENV, WARREN, Broker, Warren, check, check_eq, finish, prefix, tempdir,
                    wait_for, write)

p = prefix()
tmp = tempdir()
queue, out, dlq = p + ".in", p + ".out", p + ".in.dlq"
contracts = os.path.join(tmp, "contracts.yaml")
upcaster = os.path.join(tmp, "upcasters", "order_created_v1.lua")
os.makedirs(os.path.dirname(upcaster))

V1_ONLY = """\
events:
  order.created:
    version: 1
    schema: { type: object, required: [order_id] }
"""
V2 = """\
events:
  order.created:
    version: 2
    schema:
      type: object
      required: [order_id, customer_id]
      properties:
        customer_id: { type: string }
    backwards_compatible_with:
      - version: 1
        upcaster: upcasters/order_created_v1.lua
        examples:
          - { order_id: o-ex }
"""
UNSUPPORTED = V2.replace("      properties:\n", "      x-db: orders\n      properties:\n")
UPCASTER = r'''
return function(data, info)
  if data.fail then error("cannot upcast " .. data.order_id) end
  data.customer_id = "%s"
  return data
end
'''


def save(path, text):
    """What an editor does: write a temporary file, rename it over PATH."""
    write(path + ".swp", text)
    os.rename(path + ".swp", path)


write(contracts, V1_ONLY)
write(upcaster, UPCASTER % "unknown")
write(os.path.join(tmp, "h.lua"), r'''
return { handle = function(event, ctx)
  ctx.publish("", "%s", { id = event.id, version = event.version,
                          original_version = event.original_version,
                          customer_id = event.data.customer_id })
end }
''' % out)
subs = [{"name": "orders", "queue": queue, "handler": "h.lua",
         "contracts": {"file": "contracts.yaml", "default_version": 1}}]


def status_contracts():
    code, body = w.get("/status")
    check_eq(code, 200, "/status answers 200")
    return json.loads(body)["subscriptions"][0].get("contracts") or {}


def handled(mid, timeout=20):
    """The handler's output for message MID (other outputs are kept for later)."""
    def got():
        for _, body in b.drain(out):
            rec = json.loads(body)
            seen[rec["id"]] = rec
        return mid in seen
    wait_for(got, timeout, "%s handled" % mid)
    return seen.get(mid, {})


def dead(mid, timeout=20):
    def got():
        for props, body in b.drain(dlq):
            dlqd[props.message_id] = props.headers or {}
        return mid in dlqd
    wait_for(got, timeout, "%s dead-lettered" % mid)
    return dlqd.get(mid, {})


def reloaded(n, timeout=20):
    ok = wait_for(lambda: len(w.lines(msg="contracts reloaded")) >= n, timeout,
                  "contracts reload #%d" % n)
    return w.lines(msg="contracts reloaded")[n - 1] if ok else {}


def refused(n, timeout=20):
    msg = "contracts reload refused; the running contracts stay"
    wait_for(lambda: len(w.lines(msg=msg)) >= n, timeout, "%d refused lines" % n)
    return w.lines(msg=msg)


seen, dlqd = {}, {}
b = Broker()
b.declare(out)
w = Warren(tmp, subs)
try:
    w.start()
    check(w.wait_consuming(1), "consuming")
    loaded = w.lines(msg="contracts loaded")
    check_eq(len(loaded), 1, "the start logs the contracts it loaded")
    d1 = loaded[0].get("contracts_version", "")
    check_eq(len(d1), 12, "a contracts version of 12 hex digits")
    check_eq(status_contracts().get("version"), d1, "/status names the contracts version")

    b.publish(queue, {"order_id": "o-1"}, message_id="m-v1-before", type="order.created")
    check_eq(handled("m-v1-before").get("version"), "1", "v1 is the current version at first")

    # 1. a new contracts file: v2 and an upcaster from v1
    save(contracts, V2)
    rl = reloaded(1)
    d2 = rl.get("contracts_version")
    check_eq(rl.get("previous_version"), d1, "the reload names the version it replaced")
    check(d2 and d2 != d1, "a new contracts version: %r" % d2)
    check_eq(rl.get("trigger"), "file change", "picked up by the file watcher")
    b.publish(queue, {"order_id": "o-2"}, message_id="m-v1-after", type="order.created")
    got = handled("m-v1-after")
    check_eq((got.get("version"), got.get("original_version"), got.get("customer_id")),
             ("2", "1", "unknown"), "a v1 event reaches the handler upcast to v2")
    b.publish(queue, {"order_id": "o-3"}, message_id="m-v2-invalid", type="order.created",
              headers={"version": 2})
    h = dead("m-v2-invalid")
    check_eq(h.get("x-warren-reason"), "schema-invalid", "the new v2 schema is in force")
    check_eq(h.get("x-warren-error"), "order.created v2: /: required: missing 'customer_id'",
             "with its violation")

    # 2. an edit to the upcaster alone is a new contracts version
    save(upcaster, UPCASTER % "from-v1")
    rl = reloaded(2)
    d3 = rl.get("contracts_version")
    check_eq(rl.get("previous_version"), d2, "the upcaster edit replaced the v2 contracts")
    check(d3 and d3 != d2, "the upcaster is part of the contracts version")
    b.publish(queue, {"order_id": "o-4"}, message_id="m-v1-edited", type="order.created")
    check_eq(handled("m-v1-edited").get("customer_id"), "from-v1", "the edited upcaster runs")

    # 3. broken versions are refused, at FILE:LINE:COL, and the running one stays
    save(contracts, UNSUPPORTED)
    lines = refused(1)
    check_eq([l.get("error") for l in lines],
             ["%s:7:7: schema: unsupported keyword 'x-db'" % os.path.realpath(contracts)],
             "an unsupported keyword is refused at its line and column")
    check_eq(lines[0].get("running_version"), d3, "the refusal names the running version")
    save(contracts, V2)  # back to the running text: nothing to reload
    save(upcaster, "return function(data)\n  if then end\nend\n")
    lines = refused(2)
    err = lines[1].get("error", "") if len(lines) > 1 else ""
    want = "%s:11:19: upcaster of order.created v1: " % os.path.realpath(contracts)
    check(err.startswith(want) and "order_created_v1.lua:2:" in err,
          "an upcaster that does not compile is refused at its contract entry: %r" % err)
    b.publish(queue, {"order_id": "o-5"}, message_id="m-v1-kept", type="order.created")
    check_eq(handled("m-v1-kept").get("customer_id"), "from-v1",
             "after refused reloads the running upcaster still runs")
    check_eq(status_contracts().get("version"), d3, "/status still names the running version")
    env = dict(os.environ)
    env.update(ENV)
    res = subprocess.run([WARREN, "status", "--url", "http://127.0.0.1:%d/status" % w.http_port()],
                         capture_output=True, env=env, timeout=30)
    check("  contracts %s version %s (1 event types)" % (os.path.realpath(contracts), d3)
          in res.stdout.decode(), "warren status names the live contracts: %r" % res.stdout)
    check_eq(len(w.lines(msg="contracts reloaded")), 2, "nothing broken was applied")

    # 4. upcast-failed is counted; the series survive the reloads
    save(upcaster, UPCASTER % "from-v1")  # the running text again: no reload
    b.publish(queue, {"order_id": "o-6", "fail": True}, message_id="m-v1-fail",
              type="order.created")
    h = dead("m-v1-fail")
    check_eq(h.get("x-warren-reason"), "upcast-failed", "a failing upcaster dead-letters")
    labels = {"subscription": "orders", "type": "order.created"}
    wait_for(lambda: w.metric_or_0(w.metrics(), "warren_contract_events_total", version="1",
                                   result="upcast-failed", **labels) >= 1, 10,
             "upcast-failed counted")
    m = w.metrics()
    got = {(v, r): w.metric(m, "warren_contract_events_total", version=v, result=r, **labels)
           for v, r in [("1", "valid"), ("1", "upcast"), ("1", "upcast-failed"),
                        ("2", "schema-invalid")]}
    check_eq(got, {("1", "valid"): 1.0, ("1", "upcast"): 4.0, ("1", "upcast-failed"): 1.0,
                   ("2", "schema-invalid"): 1.0},
             "every outcome counted, the one before the reloads included")
    check_eq(len(w.lines(msg="contracts reloaded")), 2, "saving the same text reloads nothing")

    # 5. how events are read against the contracts is the running config's: a restart
    with open(w.config) as fh:
        text = fh.read()
    save(w.config, text.replace('"default_version": 1', '"default_version": 2'))
    msg = "config change needs a restart; the running values stay"
    wait_for(lambda: w.lines(msg=msg), 20, "the config change noticed")
    keys = [l.get("keys", "") for l in w.lines(msg=msg)]
    check(any("subscriptions[0].contracts (file, unknown_types, version_header, "
              "default_version, validate_outgoing)" in k for k in keys),
          "a change of contracts settings needs a restart, and says so: %r" % keys)
    b.publish(queue, {"order_id": "o-7", "customer": "c-7"}, message_id="m-v1-default",
              type="order.created")
    check_eq(handled("m-v1-default").get("original_version"), "1",
             "the running default_version (1) stays")
finally:
    rc = w.stop()
    b.delete(queue, out, dlq, queue + ".wait")
check_eq(rc, 0, "warren exits 0")
finish()
