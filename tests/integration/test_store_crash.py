"""Exactly-once state under kill -9: handlers/ledger.lua (stock per SKU and a
ledger per customer in ctx.store) gets 20,000 order events, 20 % of them
repeats of an earlier message id (half of those published right behind their
original, so two workers hold the two copies at once), cancels that come
before or after their order, orders re-sent under a new message id, and a
few malformed ones; the sidecar (two workers) is killed -9 and restarted until
10 kills have caught work in flight (the killed process's claims still
"processing" in Redis; the kills spread over the queue's messages, each
restart consuming again before the next kill: wrtest.kill_in_flight). At the
end every input id is done once (ok) or dead-lettered with its copy in the
DLQ, and what is dead-lettered is the malformed orders plus, at most,
messages the crash-loop guard stopped: each of those was caught in flight by
at least max_attempts kills. Every stock counter and every ledger equals the
exactly-once sum the test computes from what it sent, less those dead
letters."""
import collections
import os
import random
import shutil
import time

from wrtest import (SOURCE_DIR, Broker, Warren, check, check_eq, finish, kill_in_flight,
                    prefix, records as records_of, redis_client, tempdir, wait_for)

TOTAL = 20000
DUP_SHARE = 0.20
KILLS = 10
MAX_ATTEMPTS = 5
p = prefix()
tmp = tempdir()
queue = p + ".in"
r = redis_client()
SP = p + ":shop:"
shutil.copy(os.path.join(SOURCE_DIR, "handlers", "ledger.lua"), tmp)

rng = random.Random(7)
SKUS = ["sku-%02d" % i for i in range(20)]
CUSTOMERS = ["cust-%03d" % i for i in range(150)]
orders = {}
distinct = []  # (message id, type, body), each id once


def add(mid, typ, body):
    distinct.append((mid, typ, body))


n_distinct = int(TOTAL * (1 - DUP_SHARE))
i = 0
while len(distinct) < n_distinct:
    i += 1
    oid = "o-%05d" % i
    items = [{"sku": s, "qty": rng.randint(1, 4)} for s in rng.sample(SKUS, rng.randint(1, 3))]
    o = {"order_id": oid, "customer_id": rng.choice(CUSTOMERS), "items": items,
         "total": round(rng.uniform(1, 500), 2)}
    orders[oid] = o
    kind = rng.random()
    if kind < 0.01:
        bad = dict(o, total="free")  # malformed: rejected to the DLQ
        add("create-" + oid, "order.created", bad)
    elif kind < 0.15:
        add("cancel-" + oid, "order.cancelled", {"order_id": oid})  # the cancel first
        add("create-" + oid, "order.created", o)
    elif kind < 0.30:
        add("create-" + oid, "order.created", o)
        add("cancel-" + oid, "order.cancelled", {"order_id": oid})
    elif kind < 0.33:
        add("create-" + oid, "order.created", o)
        add("resend-" + oid, "order.created", o)  # the same order under a new message id
    else:
        add("create-" + oid, "order.created", o)
distinct = distinct[:n_distinct]
dups = TOTAL - len(distinct)
dup_at = set(rng.sample(range(len(distinct)), dups))
placed = []  # (position, tie, message)
for k, m in enumerate(distinct):
    placed.append((k, 0, m))
    if k in dup_at and k % 2 == 0:
        placed.append((k, 1, m))  # right behind: both copies in flight at once, two workers
    elif k in dup_at:
        placed.append((rng.uniform(k + 1, len(distinct)), 2, m))  # a later repeat
seq = [m for _, _, m in sorted(placed, key=lambda x: (x[0], x[1]))]
check_eq(len(seq), TOTAL, "%d events, %d of them repeats" % (len(seq), dups))

b = Broker()
b.declare(queue)
for mid, typ, body in seq:
    b.publish(queue, body, message_id=mid, type=typ)

extra = "store:\n  prefix: '%s'\n" % SP
sub = {"name": "ledger", "queue": queue, "handler": "ledger.lua", "concurrency": 2,
       "prefetch": 100, "batch_size": 50,
       # max_attempts bounds the crash-loop guard too (test_crash.py)
       "retry": {"max_attempts": MAX_ATTEMPTS, "delays": ["1s"]},
       "idempotency": {"lease": "2s"}, "breaker": {"enabled": False}}
w = Warren(tmp, [sub], extra=extra)
kill_rng = random.Random(3)
w.start()
check(w.wait_consuming(2), "consuming")
t0 = time.monotonic()
# KILLS kills that catch work in flight, spread over the queue
in_flight = kill_in_flight(w, b, r, "ledger", queue, KILLS, kill_rng, 2)
kills = len(in_flight)


def drained():
    return all(b.depth(q) == 0 for q in (queue, queue + ".wait", queue + ".retry.1s"))


wait_for(drained, 240, "everything processed after the last restart", interval=1)
time.sleep(3)  # leases of killed runs expire, deferred copies come back
wait_for(drained, 120, "still drained", interval=1)
print("  drained %.1f s after the first start" % (time.monotonic() - t0), flush=True)
check_eq(w.stop(), 0, "the last run exits 0")

# every input: done once, ok, or dead-lettered with its copy in the DLQ
recs = records_of(r, "ledger")
dlq_ids = set(props.message_id for props, _ in b.drain(queue + ".dlq"))
ids = set(mid for mid, _, _ in distinct)
not_done = sorted(m for m in ids if recs.get(m, {}).get("state") != "done")
check_eq(not_done[:10], [], "every input id has a done record (%d missing)" % len(not_done))
ok = set(m for m in ids if recs.get(m, {}).get("outcome") == "ok")
failed = ids - ok
check_eq(sorted(failed - dlq_ids)[:10], [], "every input not handled ok is in the DLQ")
check_eq(sorted(dlq_ids - failed)[:10], [], "nothing handled ok is in the DLQ")
bad = set(m for m, _, body in distinct if body.get("total") == "free")
check_eq(sorted(bad - dlq_ids), [], "the malformed orders were dead-lettered")
# Anything else in the DLQ was stopped by the crash-loop guard: a message
# claimed max_attempts times without an outcome. Every such claim is one a kill
# caught (the claims a killed process held), so each of them must have been
# in flight at max_attempts kills at least; and their number is bounded by the
# claims the kills caught.
looped = dlq_ids - bad
kills_of = collections.Counter(k for held in in_flight for k in held)
check_eq(sorted(m for m in looped if kills_of[m] < MAX_ATTEMPTS)[:10], [],
         "every crash-looped message was caught in flight by %d kills" % MAX_ATTEMPTS)
caught = sum(len(held) for held in in_flight)
check(len(looped) * MAX_ATTEMPTS <= caught,
      "crash-loop dead letters bounded by the claims the kills caught (%d x %d <= %d)"
      % (len(looped), MAX_ATTEMPTS, caught))
print("  %d inputs handled ok, %d dead-lettered (%d malformed, %d crash-looped); the kills "
      "caught %d claims" % (len(ok), len(failed), len(bad), len(looped), caught), flush=True)

# the exactly-once sums, from what was sent, less what the DLQ holds: an order
# counts when a create of it was sent (and not dead-lettered) and no cancel of
# it was
stock = collections.Counter()
ledger = collections.defaultdict(lambda: [0, 0])
sent = set(mid for mid, _, _ in distinct) - dlq_ids
created_ok = set(m.split("-", 1)[1] for m in sent if m.startswith(("create-", "resend-")))
cancelled_ok = set(m.split("-", 1)[1] for m in sent if m.startswith("cancel-"))
for oid in created_ok - cancelled_ok:
    o = orders[oid]
    for it in o["items"]:
        stock[it["sku"]] -= it["qty"]
    ledger[o["customer_id"]][0] += 1
    ledger[o["customer_id"]][1] += int(o["total"] * 100 + 0.5)
got_stock = {s: int(r.get(SP + "stock:" + s) or 0) for s in SKUS}
check_eq({s: v for s, v in got_stock.items() if v != stock[s]}, {},
         "every stock counter equals the exactly-once sum")
got_ledger = {}
for c in CUSTOMERS:
    h = r.hgetall(SP + "ledger:" + c)
    got_ledger[c] = [int(h.get("orders", 0)), int(h.get("total_cents", 0))]
wrong = {c: (got_ledger[c], ledger[c]) for c in CUSTOMERS if got_ledger[c] != list(ledger[c])}
check_eq(wrong, {}, "every customer's ledger equals the exactly-once sum")
check(sum(-v for v in stock.values()) > 0, "the sums are not trivially zero (%d units held)"
      % sum(-v for v in stock.values()))
deferred = len(w.lines(msg="message deferred: another worker holds its key"))
check(deferred > 0, "repeats met their original in flight (%d deferred while another worker "
      "held the key)" % deferred)
conflicts = len([l for l in w.lines() if "store conflict" in l.get("error", "")])
print("  %d commits refused as conflicts (re-run), %d kills" % (conflicts, kills), flush=True)
for q in (queue, queue + ".wait", queue + ".retry.1s", queue + ".dlq"):
    check_eq(b.depth(q), 0, "%s has no leftovers" % q)
for k in r.scan_iter(match=SP + "*", count=5000):
    r.delete(k)
b.delete(queue, queue + ".dlq", queue + ".wait", queue + ".retry.1s")
b.close()
finish()
