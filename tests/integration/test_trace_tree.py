"""`warren trace` finds an event by what the operator has, everywhere, and follows it down.

Four subscriptions on one topic exchange: `orders` and `ledger` both take
order.created (orders keys by message id, ledger by the JSON field order_id);
orders' handler publishes payment.requested (to `payments`) and
order.confirmed (to `notifications`, whose handler rejects order o-2).
Messages come without a traceparent.

1. `warren trace M` with the message id, no --subscription: both orders (by
   key) and ledger (keyed by order_id: found by message id in its journal)
   tell their story; both share one trace id, the one derived from the
   message id (SHA-256, computed here); orders' story has the tree of the two
   events it published, each with where it is now (done in payments and
   notifications).
2. For o-2 the notifications leaf is in the DLQ with reason `rejected`, and
   trace does not offer a replay for it (it says a replay is rejected again).
3. The idempotency key `o-1` (ledger) is found as a key, and in orders by the
   value its journal recorded (`trace_fields: [order_id]`); `--grep o-2` finds the
   ledger event whose key is made of that business value; `--depth 0` leaves
   the tree out; an id nobody saw exits 1.
"""
import hashlib
import json
import os
import subprocess
import sys
import traceback

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (ENV, WARREN, Broker, Warren, check, check_eq, delete_queues,  # noqa: E402
                    finish, prefix, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
ex = p + ".ev"
q = {n: "%s.%s" % (p, n) for n in ("orders", "ledger", "payments", "notifications")}

write(os.path.join(tmp, "orders.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.publish("%s", "payment.requested", { order_id = event.data.order_id })
  ctx.publish("%s", "order.confirmed", { order_id = event.data.order_id })
end
return M
''' % (ex, ex))
write(os.path.join(tmp, "ledger.lua"), "return { handle = function(event, ctx) end }\n")
write(os.path.join(tmp, "payments.lua"), "return { handle = function(event, ctx) end }\n")
write(os.path.join(tmp, "notifications.lua"), r'''
local M = {}
function M.handle(event, ctx)
  if event.data.order_id:sub(-4) == "-o-2" then ctx.reject("no e-mail address for o-2") end
end
return M
''')


def sub(name, key, routing_keys):
    s = {"name": name, "queue": q[name], "handler": name + ".lua", "breaker": {"enabled": False},
         "retry": {"max_attempts": 1},
         "bindings": [{"exchange": ex, "routing_keys": routing_keys}]}
    if key:
        s["idempotency"] = {"key": key}
    return s


subs = [dict(sub("orders", None, ["order.created"]), trace_fields=["order_id"]),
        sub("ledger", "json:order_id", ["order.created"]),
        sub("payments", None, ["payment.requested"]),
        sub("notifications", None, ["order.confirmed"])]
w = Warren(tmp, subs)
b = Broker()


def run(*args):
    env = dict(os.environ)
    env.update(ENV)
    r = subprocess.run([WARREN] + list(args), capture_output=True, env=env, timeout=120)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def trace(*args):
    rc, out, err = run("trace", "-c", w.config, *args)
    try:
        return rc, json.loads(out), err
    except ValueError:
        return rc, None, err


def by_sub(obj):
    return {st["subscription"]: st for st in (obj or {}).get("stories", [])}


def derived(mid):
    return hashlib.sha256(b"warren-trace\n" + mid.encode()).hexdigest()[:32]


try:
    w.start()
    check(w.wait_consuming(4), "warren consumes 4 subscriptions")
    m1, m2 = p + "-m-1", p + "-m-2"
    o1, o2 = p + "-o-1", p + "-o-2"
    b.publish("order.created", {"order_id": o1}, exchange=ex, message_id=m1)
    b.publish("order.created", {"order_id": o2}, exchange=ex, message_id=m2)
    check(wait_for(lambda: b.depth(q["notifications"] + ".dlq") >= 1 and
                   len(w.lines(msg="message handled")) >= 6, 30, "everything handled"),
          "every event handled, o-2's notification in the DLQ")

    # 1. the message id, every subscription, one trace, the tree
    rc, obj, err = trace(m1, "--json")
    check_eq(rc, 0, "trace %s exits 0" % m1)
    st = by_sub(obj)
    check_eq(sorted(st), ["ledger", "orders"], "found in orders and ledger")
    check_eq(st.get("orders", {}).get("matched_by"), "key", "orders: by key")
    check_eq(st.get("ledger", {}).get("matched_by"), "message_id", "ledger: by message id")
    check_eq(st.get("ledger", {}).get("key"), o1, "ledger's key is the order id")
    check_eq({s.get("trace_id") for s in st.values()}, {derived(m1)},
             "one trace id in both, derived from the message id")
    kids = st.get("orders", {}).get("children", [])
    check_eq([k["message_id"] for k in kids], [m1 + ":orders:1", m1 + ":orders:2"],
             "orders published two events")
    leaves = {k["message_id"]: [(s["subscription"], s["where"]["state"]) for s in k["stories"]]
              for k in kids}
    check_eq(leaves, {m1 + ":orders:1": [("payments", "done")],
                      m1 + ":orders:2": [("notifications", "done")]},
             "each published event's fate")
    check(all(s.get("trace_id") == derived(m1) for k in kids for s in k["stories"]),
          "the published events carry the same trace")
    # the same in text
    rc, out, err = run("trace", "-c", w.config, m1)
    print(out, flush=True)
    check("event %s in subscription orders" % m1 in out and
          "event %s in subscription ledger" % o1 in out, "text: both stories")
    check("published:\n  |- %s:orders:1 in payments: done" % m1 in out and
          "  `- %s:orders:2 in notifications: done" % m1 in out, "text: the tree")

    # 2. the DLQ leaf, its reason, no replay offered
    rc, obj, err = trace(m2, "--json")
    kids = by_sub(obj).get("orders", {}).get("children", [])
    leaf = kids[1]["stories"][0] if len(kids) == 2 and kids[1]["stories"] else {}
    check_eq((leaf.get("subscription"), leaf.get("where", {}).get("state")),
             ("notifications", "dlq"), "o-2's notification is a DLQ leaf")
    check("(rejected)" in leaf.get("where", {}).get("detail", ""),
          "the leaf names its reason: %r" % leaf.get("where"))
    check(not any("replay" in n for n in leaf.get("next", [])),
          "no replay offered for a rejection: %r" % leaf.get("next"))
    rc, out, err = run("trace", "-c", w.config, m2)
    print(out, flush=True)
    check("`- %s:orders:2 in notifications: dlq" % m2 in out and "a replay is rejected again" in out,
          "text: the DLQ leaf and why not to replay")

    # 3. a key, a business value, depth, not found
    rc, obj, err = trace(o1, "--json")
    check_eq(sorted(by_sub(obj)), ["ledger", "orders"],
             "o-1: a key in ledger, a recorded field (trace_fields) in orders")
    check_eq(by_sub(obj).get("ledger", {}).get("matched_by"), "key", "matched by key")
    first = (by_sub(obj).get("orders", {}).get("entries") or [{}])[-1]
    check_eq(first.get("fields"), {"order_id": o1}, "the journal recorded the order id")
    rc, obj, err = trace(o2, "--grep", "--json")
    check("ledger" in by_sub(obj) and by_sub(obj)["ledger"].get("matched_by") == "grep",
          "--grep o-2 finds the ledger event: %r" % sorted(by_sub(obj)))
    rc, obj, err = trace(m1, "--depth", "0", "--json")
    check("children" not in by_sub(obj).get("orders", {"children": 1}), "--depth 0: no tree")
    rc, obj, err = trace(p + "-never")
    check_eq(rc, 1, "an id nobody saw: exit 1")
    check("not found in any subscription" in err, "it says so: %r" % err)
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    if w.alive():
        w.stop()
    b.close()
    qs = []
    for name in q.values():
        qs += [name, name + ".wait", name + ".dlq", name + ".retry.1s"]
    delete_queues(qs)
finish()
