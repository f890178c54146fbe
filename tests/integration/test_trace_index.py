"""`warren trace` finds events through the trace index, not a SCAN of every record,
and follows published events into subscriptions keyed by another field.

`orders` keys by the JSON field order_id and records customer.id
(trace_fields); its handler publishes payment.requested to `payments`, which
keys by order_id too and rejects order o-3. Each order arrives with its own
message id; customer c-7 placed o-1 and o-3, c-8 placed o-2.

1. The index, read here with a Redis client: the list for c-7 names orders'
   events o-1 and o-3, the list for each order's message id names its event
   (orders keys by order_id, so the id is not the key), and the lists expire.
2. `warren trace c-7` shows both orders' stories and runs no SCAN (Redis's
   command statistics, read before and after); the tree under each order
   reaches `payments` (keyed by order_id, found by the published event's id
   through the index), with o-3's leaf in the DLQ (rejected).
3. `warren trace` of an order's message id finds it through the index.
4. With c-8's list deleted (an index write lost), trace still finds o-2 by
   searching, and says it did so; `audit`, listed first, has idempotency off
   under the same (default) key prefix: the search scans the prefix all the
   same.
"""
import os
import subprocess
import sys
import traceback

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (ENV, WARREN, Broker, Warren, check, check_eq, delete_queues,  # noqa: E402
                    finish, prefix, redis_client, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
ex = p + ".ev"
q = {n: "%s.%s" % (p, n) for n in ("audit", "orders", "payments")}
write(os.path.join(tmp, "orders.lua"), r'''
local M = {}
function M.handle(event, ctx)
  ctx.publish("%s", "payment.requested", { order_id = event.data.order_id })
end
return M
''' % ex)
write(os.path.join(tmp, "payments.lua"), r'''
local M = {}
function M.handle(event, ctx)
  if event.data.order_id:sub(-4) == "-o-3" then return ctx.reject("card expired") end
end
return M
''')
subs = [{"name": "audit", "queue": q["audit"], "handler": "payments.lua",
         "idempotency": {"enabled": False},
         "bindings": [{"exchange": ex, "routing_keys": ["audit.none"]}]},
        {"name": "orders", "queue": q["orders"], "handler": "orders.lua",
         "idempotency": {"key": "json:order_id"}, "trace_fields": ["customer.id"],
         "bindings": [{"exchange": ex, "routing_keys": ["order.created"]}]},
        {"name": "payments", "queue": q["payments"], "handler": "payments.lua",
         "idempotency": {"key": "json:order_id"},
         "bindings": [{"exchange": ex, "routing_keys": ["payment.requested"]}]}]
w = Warren(tmp, subs)
b = Broker()
r = redis_client()
PREFIX = "warren:idem:"
orders = {"o-1": "c-7", "o-2": "c-8", "o-3": "c-7"}


def oid(o):
    return "%s-%s" % (p, o)


def cid(c):
    return "%s-%s" % (p, c)


def run(*args):
    env = dict(os.environ)
    env.update(ENV)
    res = subprocess.run([WARREN] + list(args), capture_output=True, env=env, timeout=120)
    return res.returncode, res.stdout.decode("utf-8", "replace"), res.stderr.decode()


def scans():
    return int(r.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))


try:
    w.start()
    check(w.wait_consuming(3), "warren consumes")
    for o, c in orders.items():
        b.publish("order.created", {"order_id": oid(o), "customer": {"id": cid(c)}},
                  exchange=ex, message_id="%s-m-%s" % (p, o))
    check(wait_for(lambda: all((r.get(PREFIX + "payments:" + oid(o)) or "").startswith("d|")
                               for o in orders), 30, "payments to finish the three"),
          "every order's payment event is done in payments")
    check(wait_for(lambda: b.depth(q["payments"] + ".dlq") == 1, 20, "o-3's rejection"),
          "o-3 is in payments' DLQ")

    # 1. the index as Redis holds it
    c7 = r.lrange(PREFIX + "journal:#index:" + cid("c-7"), 0, -1)
    check_eq(sorted(set(c7)), ["orders:" + oid("o-1"), "orders:" + oid("o-3")],
             "c-7's index list names orders' o-1 and o-3")
    check_eq(r.lrange(PREFIX + "journal:#index:%s-m-o-2" % p, 0, -1), ["orders:" + oid("o-2")],
             "o-2's message id names its event (orders keys by order_id)")
    ttl = r.pttl(PREFIX + "journal:#index:" + cid("c-7"))
    check(ttl > 0, "the index list expires (pttl %r)" % ttl)

    # 2. trace by customer id: both orders, no SCAN, the tree into payments
    before = scans()
    rc, out, err = run("trace", "-c", w.config, cid("c-7"))
    print(out[:3000], flush=True)
    check_eq(rc, 0, "trace c-7 exits 0: %s" % err)
    check_eq(scans() - before, 0, "trace c-7 ran no SCAN")
    check(("%s in orders" % oid("o-1")) in out or oid("o-1") in out, "o-1's story shown")
    check(oid("o-3") in out, "o-3's story shown")
    check(oid("o-2") not in out, "c-8's order not shown")
    check("%s:orders:1 in payments: done" % oid("o-1") in out,
          "o-1's payment event found in payments (keyed by order_id): %r" % out[-1500:])
    check("%s:orders:1 in payments: dlq" % oid("o-3") in out,
          "o-3's payment event: in payments' DLQ: %r" % out[-1500:])
    check("no subscription of this config has seen it" not in out, "no lost leaf")

    # 3. by message id
    before = scans()
    rc, out, err = run("trace", "-c", w.config, "%s-m-o-2" % p)
    check(rc == 0 and oid("o-2") in out, "trace by message id finds o-2: %s" % err)
    check_eq(scans() - before, 0, "trace by message id ran no SCAN")

    # 4. an index write lost: found by searching, and said so
    r.delete(PREFIX + "journal:#index:" + cid("c-8"))
    rc, out, err = run("trace", "-c", w.config, cid("c-8"))
    check(rc == 0 and oid("o-2") in out, "c-8 still found without its list: %s" % err)
    check("is not in the trace index: found by searching" in err, "and it says how: %r" % err)
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    if w.alive():
        w.stop()
    b.close()
    qs = []
    for n in q.values():
        qs += [n, n + ".wait", n + ".dlq"] + [n + ".retry." + d for d in ("1s", "5s", "30s", "2m")]
    delete_queues(qs)
    b2 = Broker()
    try:
        b2.ch.exchange_delete(ex)
    except Exception:
        pass
    b2.close()
finish()
