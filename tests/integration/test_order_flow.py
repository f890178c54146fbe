"""The example order flow under load: config/warren.yaml's four subscriptions
and the handlers in handlers/ (orders, inventory, payments, notifications)
against deploy/shop_service.py, with ~200 orders among which producers'
duplicates (the same message id twice, some published at the same moment from
two connections, and the same order under a new message id), cancels
published before their orders (and handled first), cancels racing their
orders, declined cards, payments that fail once with a 503 and e-mails that
fail once.

The service's GET /stats is the judge: every order the service confirmed is
charged exactly once (unless its card was declined), no order whose cancel
reached the service first is ever charged or holds stock, and the stock is
what the reservations say (what was reserved, minus what was released).

The test runs the shipped config and handlers, renamed apart: its copy of
config/warren.yaml has its own queue and exchange names (a per-test prefix),
and its copy of handlers/ a shop.lua pointing at its own service (on a free
port) and exchange.
"""
import atexit
import collections
import glob
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.request

from wrtest import (SOURCE_DIR, Broker, Warren, check, check_eq, finish, prefix, redis_client,
                    tempdir,
                    wait_for, write)

SEED = int(os.environ.get("WR_FLOW_SEED", "0")) or random.randrange(1, 1 << 30)
rnd = random.Random(SEED)
print("order flow: seed %d (WR_FLOW_SEED=%d repeats this run)" % (SEED, SEED), flush=True)

SUBS = ["orders", "inventory", "payments", "notifications", "ledger"]
PRICES = {"tea": 4.0, "cup": 6.5, "pot": 21.0, "jam": 3.25}
FINAL = ("ok", "duplicate", "dead-lettered")

# ------------------------------------------------------------------ the service

shop = subprocess.Popen(["/usr/bin/python3", os.path.join(SOURCE_DIR, "deploy/shop_service.py"), "0",
                         "--stock", json.dumps({sku: 100000 for sku in PRICES})],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
atexit.register(lambda: shop.poll() is None and shop.terminate())
ready = shop.stdout.readline().split()
if len(ready) != 2 or ready[0] != "ready":
    raise SystemExit("shop_service.py did not start: %r %s" % (ready, shop.stderr.read()))
SHOP = "http://127.0.0.1:%s" % ready[1]


def stats():
    with urllib.request.urlopen(SHOP + "/stats", timeout=5) as res:
        return json.load(res)


# ------------------------------------------------------------------ warren

p = prefix()
tmp = tempdir()
exchange = p + ".shop.events"
os.makedirs(os.path.join(tmp, "config"))
os.makedirs(os.path.join(tmp, "handlers"))
for f in glob.glob(os.path.join(SOURCE_DIR, "handlers", "*.lua")):
    if os.path.basename(f) != "shop.lua":
        shutil.copy(f, os.path.join(tmp, "handlers"))
write(os.path.join(tmp, "handlers", "shop.lua"),
      'return {\n  url = "%s",\n  exchange = "%s",\n}\n' % (SHOP, exchange))

# the event contracts the config names, and their upcasters (config/contracts.yaml)
shutil.copy(os.path.join(SOURCE_DIR, "config", "contracts.yaml"), os.path.join(tmp, "config"))
shutil.copytree(os.path.join(SOURCE_DIR, "config", "upcasters"),
                os.path.join(tmp, "config", "upcasters"))
with open(os.path.join(SOURCE_DIR, "config", "warren.yaml")) as fh:
    config = fh.read()
config, n_queues = re.subn(r"(?m)^(\s+(?:queue|dlq): )(\S+)$", r"\g<1>%s.\2" % p, config)
config, n_exchanges = re.subn(r"(?m)^(\s+- exchange: )shop\.events$", r"\g<1>" + exchange, config)
check(n_queues >= 4 and n_exchanges >= 4,
      "config/warren.yaml renamed apart (%d queue names, %d bindings)" % (n_queues, n_exchanges))
queues = {s: "%s.%s.events" % (p, s) for s in SUBS}
w = Warren(os.path.join(tmp, "config"), [])
write(w.config, config)  # the shipped config, renamed; handlers: ../handlers/*.lua
w.start()
atexit.register(lambda: w.alive() and w.stop())  # when the test dies half-way
check(w.wait_consuming(6), "warren consumes the five queues (orders with 2 workers)")
b = Broker()

# ------------------------------------------------------------------ the orders


def order(n, customer=None, email="default"):
    items = [{"sku": sku, "qty": rnd.randint(1, 3)}
             for sku in rnd.sample(sorted(PRICES), rnd.randint(1, 3))]
    if email == "default":
        email = None if n % 25 == 0 else "c%d@%s" % (n, "flaky.example" if n % 12 == 0
                                                        else "example.com")
    o = {"order_id": "%s-o%03d" % (p, n),
         "customer_id": customer or ("c-%d-flaky" % n if n % 10 == 0 else "c-%d" % n),
         "items": items, "total": round(sum(PRICES[i["sku"]] * i["qty"] for i in items), 2)}
    if email:
        o["email"] = email
    return o


normal = [order(n) for n in range(1, 151)]
declined = [order(n, customer="c-declined") for n in range(151, 171)]
cancel_first = [order(n) for n in range(171, 191)]
racing = [order(n) for n in range(191, 211)]
dup_seq, dup_conc, dup_newid = normal[:10], normal[10:20], normal[20:30]


def created(o, mid=None):
    return ("order.created", mid or "%s-create-%s" % (p, o["order_id"]), o)


def cancelled(o):
    return ("order.cancelled", "%s-cancel-%s" % (p, o["order_id"]),
            {"order_id": o["order_id"], "reason": "changed my mind"})


published = collections.Counter()  # message id -> copies published to the orders queue


def publish(broker, msgs, count=True):
    for rk, mid, body in msgs:
        broker.publish(rk, body, exchange=exchange, message_id=mid, type=rk)
        if count:
            published[mid] += 1


# phase A: the cancels that must come first, handled before their orders exist
publish(b, [cancelled(o) for o in cancel_first])
wait_for(lambda: len(stats()["tombstones"]) == len(cancel_first), 30,
         "the early cancels to reach the order service")

# phase B: the orders, in random order; racing pairs back to back; the
# duplicates later; the concurrent duplicates from two connections at once
units = [[created(o)] for o in normal if o not in dup_conc]
units += [[created(o)] for o in declined + cancel_first]
for o in racing:
    pair = [created(o), cancelled(o)]
    rnd.shuffle(pair)
    units.append(pair)
rnd.shuffle(units)
stream = [m for unit in units for m in unit]
stream += [created(o) for o in dup_seq]  # the same message id again
stream += [created(o, mid="%s-retry-%s" % (p, o["order_id"])) for o in dup_newid]  # new id

gate = threading.Barrier(3)


def twin():
    tb = Broker()
    gate.wait()
    publish(tb, [created(o) for o in dup_conc], count=False)  # counted below
    tb.close()


twins = [threading.Thread(target=twin) for _ in range(2)]
for t in twins:
    t.start()
gate.wait()
publish(b, stream)
for t in twins:
    t.join()
for o in dup_conc:
    published[created(o)[1]] += 2
# 20 early cancels, 140 orders, 20 declined, 20 after their cancel, 20 racing pairs,
# 10 + 10 copies under the same id, 10 under a new id, 10 published twice at once
check_eq(sum(published.values()), 280, "order messages published")
print("order flow: %d order messages published (%d distinct), waiting for the flow to settle"
      % (sum(published.values()), len(published)), flush=True)

# ------------------------------------------------------------------ settling


def finals(sub):
    return [r for r in w.lines(subscription=sub) if r.get("outcome") in FINAL]


def handler_logs(sub, msg):
    return [r for r in w.lines(subscription=sub, msg=msg)]


def settled():
    """Every copy published to a queue has reached its end: the orders queue
    got what the test published, inventory what orders confirmed or cancelled,
    payments what orders confirmed, notifications what payments captured."""
    confirmed = len(handler_logs("orders", "order confirmed"))
    return (len(finals("orders")) == sum(published.values())
            and len(finals("inventory")) == confirmed + len(handler_logs("orders", "order cancelled"))
            and len(finals("payments")) == confirmed
            and len(finals("notifications")) == len(handler_logs("payments", "payment captured"))
            and len(finals("ledger")) == sum(published.values()))


t0 = time.monotonic()
wait_for(settled, 180, "every message of the flow to be handled", interval=0.5)
print("order flow: settled in %.1f s" % (time.monotonic() - t0), flush=True)
time.sleep(1.5)  # anything more arriving now would be a bug: it is counted below
check(settled(), "nothing more arrived after the flow settled")
s = stats()

# ------------------------------------------------------------------ the orders queue

by_mid = collections.defaultdict(list)
for r in finals("orders"):
    by_mid[r.get("message_id")].append(r["outcome"])
wrong = {mid: by_mid.get(mid) for mid in published
         if len(by_mid.get(mid, [])) != published[mid]
         or by_mid[mid].count("duplicate") != published[mid] - 1}
check_eq(wrong, {}, "every order message ran its handler once, its other copies skipped as "
         "duplicates")
check_eq(sorted(by_mid[created(o)[1]].count("duplicate") for o in dup_seq + dup_conc), [1] * 20,
         "the same message id published twice (10 in a row, 10 at once): one duplicate each")
check_eq(len(w.lines(subscription="orders", outcome="dead-lettered")), 0, "no order dead-lettered")

# ------------------------------------------------------------------ charges

charges = collections.Counter(c["order_id"] for c in s["charges"])
amounts = {c["order_id"]: c["amount"] for c in s["charges"]}
twice = {oid: n for oid, n in charges.items() if n != 1}
check_eq(twice, {}, "no order charged more than once (%d charges)" % len(s["charges"]))
confirmed_ids = set(s["orders"])  # the orders the service created (some cancelled since)
customers = {o["order_id"]: o["customer_id"] for o in normal + declined + cancel_first + racing}
should_charge = {oid for oid in confirmed_ids if customers.get(oid) != "c-declined"}
check_eq(sorted(should_charge - set(charges)), [], "every confirmed order charged")
check_eq(sorted(set(charges) - should_charge), [], "nothing but confirmed orders charged")
totals = {o["order_id"]: o["total"] for o in normal + racing + cancel_first}
wrong = {oid: (amounts[oid], totals.get(oid)) for oid in amounts if amounts[oid] != totals.get(oid)}
check_eq(wrong, {}, "each charge is its order's total")
check_eq(sorted(o["order_id"] for o in normal if charges[o["order_id"]] != 1), [],
         "all 150 ordinary orders charged once (duplicates and re-sent orders included)")
check_eq(sorted(s["declined"]), sorted(o["order_id"] for o in declined),
         "every declined card declined once")
check_eq(sorted(o["order_id"] for o in declined if o["order_id"] in charges), [],
         "no declined order charged")

# ------------------------------------------------------------------ cancels

tomb = set(s["tombstones"])
early = [o["order_id"] for o in cancel_first]
check_eq(sorted(set(early) - tomb), [], "the cancels handled first left a tombstone each")
check_eq(sorted(oid for oid in early if oid in charges or oid in s["orders"]
                or oid in s["reserved"]), [],
         "no order cancelled before it was created is created, reserved or charged")
check_eq(len(handler_logs("orders", "order refused: cancelled before it was created")),
         len(tomb), "each order refused once per tombstone: order.closed, never confirmed")
race_first = [o["order_id"] for o in racing if o["order_id"] in tomb]
race_late = [o["order_id"] for o in racing if o["order_id"] not in tomb]
print("order flow: racing pairs: %d cancels reached the service first, %d orders did"
      % (len(race_first), len(race_late)), flush=True)
check_eq(sorted(oid for oid in race_first if oid in charges or oid in s["reserved"]), [],
         "racing pairs whose cancel came first: never charged or reserved")
check_eq(sorted(oid for oid in race_late if s["orders"].get(oid, {}).get("state") != "cancelled"),
         [], "racing pairs whose order came first: created, then cancelled")
overtaken = handler_logs("inventory",
                         "order cancelled before its stock was reserved: nothing reserved")
print("order flow: %d cancellations reached inventory before their confirmation"
      % len(overtaken), flush=True)
check_eq(sorted(oid for oid in race_late if oid in s["reserved"]), [],
         "... and their stock released, whichever event reached inventory first")

# ------------------------------------------------------------------ stock

held = collections.Counter()
for items in s["reserved"].values():
    for i in items:
        held[i["sku"]] += i["qty"]
check_eq({sku: s["stock_initial"][sku] - s["stock"][sku] for sku in PRICES},
         {sku: held[sku] for sku in PRICES}, "stock taken = what the reservations hold")
open_orders = {oid for oid, o in s["orders"].items() if o["state"] == "created"}
check_eq(sorted(set(s["reserved"]) ^ open_orders), [],
         "a reservation for every open order (declined ones too), none for a cancelled one")
ordered = {o["order_id"]: o["items"] for o in normal + declined + racing}
check_eq(sorted(oid for oid, items in s["reserved"].items() if ordered.get(oid) != items), [],
         "each reservation holds its order's items")

# ------------------------------------------------------------------ the ledger (ctx.store)

# handlers/ledger.lua keeps stock per SKU and a ledger per customer in ctx.store:
# an order counts once when it was created and never cancelled, whatever the
# duplicates (same id in a row, at once, or the order under a new id) and
# whichever of a racing create and cancel came first.
rds = redis_client()
want_stock = collections.Counter()
want_ledger = collections.defaultdict(lambda: [0, 0])
for o in normal + declined:
    for i in o["items"]:
        want_stock[i["sku"]] -= i["qty"]
    want_ledger[o["customer_id"]][0] += 1
    want_ledger[o["customer_id"]][1] += int(o["total"] * 100 + 0.5)
got_stock = {sku: int(rds.get("shop:store:stock:" + sku) or 0) for sku in PRICES}
check_eq(got_stock, {sku: want_stock[sku] for sku in PRICES},
         "ledger: stock per SKU counts each live order once")
customers_all = set(o["customer_id"] for o in normal + declined + cancel_first + racing)
got_ledger = {}
for c in customers_all:
    h = rds.hgetall("shop:store:ledger:" + c)
    got_ledger[c] = [int(h.get("orders", 0)), int(h.get("total_cents", 0))]
check_eq({c: v for c, v in got_ledger.items() if v != list(want_ledger[c])}, {},
         "ledger: each customer's orders and total count each live order once")
check(len(handler_logs("ledger", "order cancelled before it was created: no stock taken"))
      >= len(cancel_first), "ledger: the early cancels left tombstones their orders respected")
check(len(handler_logs("ledger", "order already booked (sent again under another message id)"))
      >= len(dup_newid), "ledger: the orders re-sent under a new id booked nothing")

# ------------------------------------------------------------------ retries, e-mails, DLQs

flaky = {oid for oid in should_charge if customers[oid].endswith("-flaky")}
check_eq(len(w.lines(subscription="payments", outcome="retried")), len(flaky),
         "one retry per -flaky customer's payment (503 once)")
check(len(flaky) >= 15, "some payments failed once (%d)" % len(flaky))
mails = collections.Counter(r["fields"]["order_id"]
                            for r in handler_logs("notifications", "receipt e-mail sent"))
captured_ids = set(charges)
emailed = {oid for oid in captured_ids
           if "email" in next((o for o in normal + racing if o["order_id"] == oid), {})}
check_eq(sorted(set(mails) ^ emailed), [], "a receipt for every charged order with an address")
check_eq({oid: n for oid, n in mails.items() if n != 1}, {}, "each receipt sent once")

dlq = {s_: b.drain(queues[s_] + ".dlq") for s_ in SUBS}
pay_dlq = sorted(json.loads(body)["order_id"] for _, body in dlq["payments"])
check_eq(pay_dlq, sorted(o["order_id"] for o in declined),
         "the payments DLQ holds the declined orders, once each")
check(all((props.headers or {}).get("x-warren-error", "").startswith("payment declined: ")
          for props, _ in dlq["payments"]), "... each with its reason")
no_mail = sorted(oid for oid in captured_ids if oid not in emailed)
check_eq(sorted(json.loads(body)["order_id"] for _, body in dlq["notifications"]), no_mail,
         "the notifications DLQ holds the charged orders without an address")
check_eq([len(dlq["orders"]), len(dlq["inventory"]), len(dlq["ledger"])], [0, 0, 0],
         "no other dead letters")

# ------------------------------------------------------------------ the end

check_eq(w.stop(), 0, "warren exits 0 on SIGTERM")
shop.terminate()
shop.wait(10)
for q in queues.values():
    b.delete(q, q + ".dlq", q + ".wait",
             *["%s.retry.%s" % (q, d) for d in ("1s", "5s", "30s", "2m")])
b.ch.exchange_delete(exchange=exchange)
b.close()
finish()
