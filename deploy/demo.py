"""The demo's event script: publish example order events to a running warren
and print what happened to each one, from warren's own JSON log, from the
dead-letter queues, and from the shop's services (GET /stats).

  demo.py reset            delete the demo's queues and idempotency records
                           (before warren starts)
  demo.py run WARREN_LOG   publish, wait, report; exits 1 when the story is not
                           the one expected (an order charged twice, say); phase 3
                           redelivers a handled order.created and shows the
                           ledger's stock (ctx.store) before and after: untouched

Environment: WARREN_AMQP_URL, WARREN_REDIS_URL (the stack's env file) and
SHOP_URL (deploy/shop_service.py's address).
"""
import json
import os
import re
import sys
import time
import urllib.request

import pika

URL = os.environ["WARREN_AMQP_URL"]
SHOP_URL = os.environ.get("SHOP_URL", "http://127.0.0.1:8089")
EXCHANGE = "shop.events"
SUBSCRIPTIONS = ["orders", "inventory", "payments", "notifications", "ledger"]
QUEUES = ["orders.events", "inventory.events", "payments.events", "notifications.events",
          "ledger.events"]
STORE = "shop:store:"  # config/warren.yaml's store.prefix (handlers/ledger.lua's state)
# every queue warren declares for one of QUEUES (delays: config/warren.yaml's)
SUFFIXES = ["", ".dlq", ".wait", ".retry.1s", ".retry.5s", ".retry.30s", ".retry.2m"]
WAIT = 30  # seconds to wait for each phase's outcomes


def order(oid, customer, items, total, email=None):
    o = {"order_id": oid, "customer_id": customer, "items": items, "total": total}
    if email:
        o["email"] = email
    return o


# (phase, message id, routing key, body, what to expect, final outcomes it leads to:
#  its own and those of the events it causes, in every subscription; the ledger
#  subscription (ctx.store) gets every order.created and order.cancelled too)
EVENTS = [
    (1, "evt-1001", "order.created",
     order("o-1001", "c-7", [{"sku": "book-42", "qty": 1}], 29.90, "ada@example.com"),
     "confirmed -> stock reserved + charged -> receipt e-mailed", 5),
    (1, "evt-1001", "order.created",
     order("o-1001", "c-7", [{"sku": "book-42", "qty": 1}], 29.90, "ada@example.com"),
     "the producer sent it twice: a duplicate, skipped: charged once", 2),
    (1, "evt-1002", "order.created",
     order("o-1002", "c-8-flaky", [{"sku": "pen-1", "qty": 3}], 4.50, "bob@flaky.example"),
     "the payment fails once (503) and is retried: charged once; the mail relay fails once too",
     5),
    (1, "evt-1003", "order.created",
     order("o-1003", "c-declined", [{"sku": "mug", "qty": 1}], 9.00, "cy@example.com"),
     "card declined: the payment is dead-lettered, nobody charged", 4),
    (1, "evt-1004", "order.created", order("o-1004", "c-9", [], 0, "dee@example.com"),
     "an order without items: dead-lettered by orders", 2),
    (1, "evt-1005", "order.cancelled", {"order_id": "o-1005", "reason": "changed my mind"},
     "a cancel BEFORE its order: recorded by the order service", 2),
    (1, "evt-1006", "order.created",
     order("o-1006", "c-10", [{"sku": "pen-1", "qty": 1}], 1.50),
     "charged, but no e-mail address: the receipt is dead-lettered", 5),
    (1, "evt-1007", "order.created",
     order("o-1007", "c-11", [{"sku": "mug", "qty": 2}], 18.00, "eve@example.com"),
     "confirmed, reserved, charged, e-mailed (cancelled in phase 2)", 5),
    (1, "evt-1008", "order.created", '{"order_id": "o-1008", "items": [',
     "malformed JSON: dead-lettered without running the handler", 2),
    (1, None, "order.created",
     order("o-1009", "c-12", [{"sku": "pen-1", "qty": 1}], 1.50, "fay@example.com"),
     "no message id: dead-lettered (it could never be deduplicated)", 2),
    (1, "evt-1012", "order.created",
     order("o-1012", "c-14", [{"sku": "mug", "qty": "two"}], 9.00, "ivy@example.com"),
     "breaks its contract (qty must be an integer): dead-lettered as schema-invalid "
     "by orders and ledger before any handler runs", 2),
    (1, "evt-1013", "order.created",
     {"order_id": "o-1013", "customer": "c-15", "lines": [{"sku": "pen-1", "quantity": 2}],
      "amount": 3.00, "email": "hal@example.com"},
     "an old v1 order (header version: 1): upcast to v2 by the contract's upcaster, "
     "then confirmed, reserved, charged, e-mailed", 5),
    (2, "evt-1010", "order.created",
     order("o-1005", "c-13", [{"sku": "book-42", "qty": 1}], 29.90, "gus@example.com"),
     "the order whose cancel came first: refused (409) -> order.closed, never charged", 2),
    (2, "evt-1011", "order.cancelled", {"order_id": "o-1007", "reason": "too slow"},
     "a cancel after its order: cancelled -> stock released", 3),
]
# headers of the events that carry some (the version of evt-1013, an old producer's)
HEADERS = {"evt-1013": {"version": 1}}
# what the shop's services must have recorded at the end
CHARGED = {"o-1001": 29.90, "o-1002": 4.50, "o-1006": 1.50, "o-1007": 18.00, "o-1013": 3.00}
NEVER_CHARGED = {"o-1003": "declined", "o-1004": "no items", "o-1005": "cancelled first",
                 "o-1008": "malformed", "o-1009": "no message id", "o-1012": "schema-invalid"}
RESERVED = {"o-1001", "o-1002", "o-1003", "o-1006", "o-1013"}  # o-1007's was released

FINAL = ("ok", "duplicate", "dead-lettered")


def connect():
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    return conn, conn.channel()


def reset():
    """Delete the demo's queues and forget its idempotency records and journals, so a second
    run tells the same story (otherwise every event would be a duplicate)."""
    conn, ch = connect()
    for q in QUEUES:
        for suffix in SUFFIXES:
            ch.queue_delete(queue=q + suffix)
    conn.close()
    import redis
    r = redis.Redis.from_url(os.environ["WARREN_REDIS_URL"])
    for sub in SUBSCRIPTIONS:
        # the records, and the journals warren trace reads
        for pattern in ("warren:idem:%s:*", "warren:idem:journal:%s:*"):
            keys = list(r.scan_iter(pattern % sub))
            if keys:
                r.delete(*keys)
    keys = list(r.scan_iter(STORE + "*"))
    if keys:
        r.delete(*keys)


def ledger_state():
    """handlers/ledger.lua's ctx.store state: stock per SKU, ledger per customer."""
    import redis
    r = redis.Redis.from_url(os.environ["WARREN_REDIS_URL"], decode_responses=True)
    stock = {k[len(STORE) + 6:]: int(r.get(k)) for k in r.scan_iter(STORE + "stock:*")}
    ledgers = {k[len(STORE) + 7:]: r.hgetall(k) for k in r.scan_iter(STORE + "ledger:*")}
    return stock, ledgers


def show_stock(stock):
    return ", ".join("%s %+d" % (sku, n) for sku, n in sorted(stock.items())) or "none"


def read_log(path):
    out = []
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                out.append(json.loads(raw))
            except ValueError:
                pass
    return out


def outcomes(log):
    return [r for r in log if "outcome" in r]


def finals(log):
    return [r for r in log if r.get("outcome") in FINAL]


def wait_for_outcomes(log_path, want):
    """Wait until the log holds WANT final outcomes, or WAIT seconds; returns
    how many it holds."""
    deadline = time.time() + WAIT
    while True:
        got = len(finals(read_log(log_path)))
        if got >= want or time.time() > deadline:
            return got
        time.sleep(0.2)


def shop_stats():
    with urllib.request.urlopen(SHOP_URL + "/stats", timeout=5) as res:
        return json.load(res)


def short(error):
    """An error with its handler's path cut to the file name."""
    return re.sub(r"/[^ :]*/([^/ :]+\.lua):", r"\1:", error or "")


def describe(r):
    o = r["outcome"]
    if o == "ok":
        extra = ", published %d event(s)" % r["published"] if r.get("published") else ""
        return "handled in %.2f ms on attempt %d%s" % (r["duration_ms"], r["attempt"], extra)
    if o == "duplicate":
        return "DUPLICATE: already handled, skipped (nothing ran)"
    if o == "deferred":
        return "deferred: another worker holds its key, back in %d ms" % r.get("delay_ms", 0)
    if o == "retried":
        return "attempt %d failed (%s), retry in %d ms" % (r["attempt"], short(r.get("error")),
                                                         r["delay_ms"])
    if o == "dead-lettered":
        return "DEAD-LETTERED (%s): %s" % (r.get("reason"), short(r.get("error")))
    return "%s (%s): %s" % (o, r.get("reason"), short(r.get("error")))


def show(r, indent):
    mid = r.get("message_id") or "(no id)"
    print("  %s%-*s %-28s %-14s %s" % (indent, 14 - len(indent), mid, r.get("type") or "",
                                       r["subscription"], describe(r)))


def publish(ch, phase):
    for ph, mid, rk, body, expect, _ in EVENTS:
        if ph != phase:
            continue
        payload = body if isinstance(body, str) else json.dumps(body)
        ch.basic_publish(EXCHANGE, rk, payload.encode(), pika.BasicProperties(
            message_id=mid, content_type="application/json", delivery_mode=2,
            headers=HEADERS.get(mid)), mandatory=True)
        print("  %-9s %-16s expect: %s" % (mid or "(no id)", rk, expect))


def report_events(log):
    """Each published event, then the events it caused (same trace), indented."""
    results = outcomes(log)
    inputs = {mid for _, mid, _, _, _, _ in EVENTS}
    shown = set()
    for _, mid, _, _, _, _ in EVENTS:
        if mid in shown:
            continue
        shown.add(mid)
        mine = [r for r in results if (r.get("message_id") or None) == mid]
        for r in mine:
            show(r, "")
        traces = []
        for r in mine:
            if r.get("trace_id") and r["trace_id"] not in traces:
                traces.append(r["trace_id"])
        for t in traces:
            for r in results:
                if r.get("trace_id") == t and (r.get("message_id") or None) not in inputs:
                    show(r, "-> ")


def report_dlqs(ch):
    for q in QUEUES:
        q += ".dlq"
        msgs = []
        while True:
            method, props, body = ch.basic_get(q, auto_ack=False)
            if method is None:
                break
            msgs.append((props, body))
        print("  %s: %d message(s)" % (q, len(msgs)))
        for props, body in msgs:
            h = props.headers or {}
            print("    - id %s, reason %s, class %s, attempt %s, from %s/%s" % (
                props.message_id or "(none)", h.get("x-warren-reason"),
                h.get("x-warren-error-class"), h.get("x-warren-attempt"),
                h.get("x-warren-original-exchange"), h.get("x-warren-original-routing-key")))
            print("      error: %s" % short(h.get("x-warren-error")))
            print("      trace %s, handler %s@%s, failed at %s" % (
                h.get("x-warren-trace-id"), os.path.basename(h.get("x-warren-handler", "")),
                h.get("x-warren-handler-version"), h.get("x-warren-last-failure")))
            print("      body: %s" % body[:80].decode("utf-8", "replace"))


def report_shop(stats):
    """The services' records as a short summary; returns the broken expectations."""
    problems = []
    charges = {}
    for c in stats["charges"]:
        charges.setdefault(c["order_id"], []).append(c["amount"])
    print("  charges per order: " + ", ".join(
        "%s %s x%d" % (oid, amounts[0], len(amounts)) for oid, amounts in sorted(charges.items())))
    for oid, amounts in charges.items():
        if len(amounts) != 1:
            problems.append("order %s was charged %d times" % (oid, len(amounts)))
    for oid, total in CHARGED.items():
        if oid not in charges:
            problems.append("order %s was not charged" % oid)
        elif abs(charges[oid][0] - total) > 1e-9:
            problems.append("order %s was charged %s, not %s" % (oid, charges[oid][0], total))
    print("  never charged:     " + ", ".join(
        "%s (%s)" % (oid, why) for oid, why in sorted(NEVER_CHARGED.items())))
    for oid in NEVER_CHARGED:
        if oid in charges:
            problems.append("order %s was charged" % oid)
    print("  declined:          %s" % (", ".join(stats["declined"]) or "none"))
    print("  orders:            " + ", ".join(
        "%s %s" % (oid, o["state"]) for oid, o in sorted(stats["orders"].items()))
        + "; refused, their cancel came first: %s" % (", ".join(stats["tombstones"]) or "none"))

    initial, stock, reserved = stats["stock_initial"], stats["stock"], stats["reserved"]
    print("  stock:             " + ", ".join(
        "%s %d -> %d" % (sku, initial[sku], stock[sku]) for sku in sorted(initial)))
    print("  reserved:          " + ", ".join(
        "%s (%s)" % (oid, " ".join("%sx%d" % (i["sku"], i.get("qty", 1)) for i in items))
        for oid, items in sorted(reserved.items())))
    print("  released:          %s" % (", ".join(stats["released"]) or "none"))
    held = {}
    for items in reserved.values():
        for i in items:
            held[i["sku"]] = held.get(i["sku"], 0) + i.get("qty", 1)
    for sku in initial:
        if initial[sku] - stock[sku] != held.get(sku, 0):
            problems.append("stock of %s: %d -> %d, but %d reserved" % (
                sku, initial[sku], stock[sku], held.get(sku, 0)))
    if set(reserved) != RESERVED:
        problems.append("reservations for %s, expected %s" % (sorted(reserved), sorted(RESERVED)))
    return problems


def report_trace(log):
    """What `warren trace` says of the first event that was dead-lettered after a
    retry: the one command an operator runs for "what happened to X"."""
    import subprocess
    binary, config = os.environ.get("WARREN_BIN"), os.environ.get("WARREN_CONFIG")
    retried = {(r.get("subscription"), r.get("idempotency_key") or r.get("message_id"))
               for r in log if r.get("outcome") == "retried"}
    pick = next((r for r in log if r.get("outcome") == "dead-lettered" and
                 (r.get("subscription"), r.get("idempotency_key") or r.get("message_id"))
                 in retried), None)
    pick = pick or next((r for r in log if r.get("outcome") == "dead-lettered"
                         and r.get("message_id")), None)
    if not binary or not config or pick is None:
        print("  (nothing to trace)")
        return
    key = pick.get("idempotency_key") or pick["message_id"]
    cmd = [binary, "trace", "-c", config, "--subscription", pick["subscription"], key]
    print("  $ warren trace -c config/warren.yaml --subscription %s %s" % (pick["subscription"],
                                                                          key))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        print("  " + line)


def report_metrics(log):
    """What warren's /metrics and /readyz say now (the port is in its start line)."""
    import urllib.request
    import urllib.error
    started = [r for r in log if r.get("msg") == "warren started" and r.get("http")]
    if not started:
        print("  (warren's HTTP endpoint is off)")
        return
    base = "http://%s" % started[-1]["http"].replace("0.0.0.0", "127.0.0.1")
    try:
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    except (OSError, urllib.error.URLError) as e:
        print("  cannot read %s/metrics: %s" % (base, e))
        return
    handled = {}
    for line in text.splitlines():
        if line.startswith("warren_messages_handled_total{") and not line.endswith(" 0"):
            labels, value = line[len("warren_messages_handled_total{"):].rsplit("} ", 1)
            kv = dict(part.split("=", 1) for part in labels.split(","))
            handled.setdefault(kv["subscription"].strip('"'), []).append(
                "%s %s" % (kv["outcome"].strip('"'), value))
    print("  GET %s/metrics: warren_messages_handled_total by subscription and outcome" % base)
    for sub in SUBSCRIPTIONS:
        print("    %-14s %s" % (sub, ", ".join(handled.get(sub, ["nothing yet"]))))
    try:
        resp = urllib.request.urlopen(base + "/readyz", timeout=5)
        status, body = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode()
    except OSError as e:
        status, body = "-", str(e)
    print("  GET %s/readyz: %s %s" % (base, status, " / ".join(body.strip().splitlines())))


def run(log_path):
    # wait until every subscription consumes (its queue is bound then)
    deadline = time.time() + 30
    while {r.get("subscription") for r in read_log(log_path)
           if r.get("msg") == "consuming"} < set(SUBSCRIPTIONS):
        if time.time() > deadline:
            sys.exit("demo: warren did not start consuming; see .demo/warren.log")
        time.sleep(0.2)

    conn, ch = connect()
    ch.confirm_delivery()
    problems = []
    expected = 0
    for phase, title in ((1, "orders, a duplicate, failures, and a cancel before its order"),
                         (2, "after phase 1 is done: that order arrives; another is cancelled")):
        expected += sum(n for ph, _, _, _, _, n in EVENTS if ph == phase)
        print("\ndemo: phase %d: %s (to exchange '%s')" % (phase, title, EXCHANGE))
        publish(ch, phase)
        got = wait_for_outcomes(log_path, expected)
        if got < expected:
            problems.append("phase %d: only %d of %d outcomes after %d s" % (phase, got, expected,
                                                                           WAIT))
    # phase 3: the broker redelivers an order.created that was handled already
    # (a consumer died before its ack, say): the ledger's stock must not move
    stock_before, _ = ledger_state()
    print("\ndemo: phase 3: evt-1001 (order.created, handled in phase 1) delivered once more")
    print("  ledger stock before: %s" % show_stock(stock_before))
    ph1 = [e for e in EVENTS if e[1] == "evt-1001"][0]
    ch.basic_publish(EXCHANGE, ph1[2], json.dumps(ph1[3]).encode(), pika.BasicProperties(
        message_id=ph1[1], content_type="application/json", delivery_mode=2), mandatory=True)
    expected += 2  # a duplicate in orders and in ledger
    got = wait_for_outcomes(log_path, expected)
    if got < expected:
        problems.append("phase 3: only %d of %d outcomes after %d s" % (got, expected, WAIT))
    stock_after, ledgers = ledger_state()
    print("  ledger stock after:  %s  (%s)" % (
        show_stock(stock_after), "untouched" if stock_after == stock_before else "CHANGED"))
    if stock_after != stock_before:
        problems.append("the redelivered order.created changed the ledger's stock: %s -> %s"
                        % (stock_before, stock_after))
    log = read_log(log_path)

    print("\nwhat happened to each event (from warren's log; -> the events it caused):")
    report_events(log)

    print("\nwhat the handlers logged:")
    for r in log:
        if "source" in r and r.get("msg") != "orders handler loaded":
            print("  %-14s %-13s %-5s %s %s" % (r.get("message_id", ""), r.get("subscription", ""),
                                                r["level"], r["msg"],
                                                json.dumps(r.get("fields", {}))))

    print("\ndead-letter queues (each message keeps its body and its story):")
    report_dlqs(ch)
    conn.close()

    print("\none event's whole story, in one command (warren trace):")
    report_trace(read_log(log_path))

    print("\nwarren's metrics and readiness (what Prometheus and Kubernetes see):")
    report_metrics(read_log(log_path))

    print("\nwhat the shop's services recorded (GET %s/stats):" % SHOP_URL)
    problems += report_shop(shop_stats())

    print("\nwhat handlers/ledger.lua keeps in ctx.store (%s*), written once per order:" % STORE)
    print("  stock:   %s" % show_stock(stock_after))
    for c, h in sorted(ledgers.items()):
        print("  ledger %-10s orders %s, total %.2f" % (c, h.get("orders", "0"),
                                                         int(h.get("total_cents", 0)) / 100))
    # o-1001 (twice: one duplicate, then a redelivery), o-1002, o-1003, o-1006, o-1013 (a v1
    # order, upcast) hold stock; o-1007 was cancelled after it (stock back), o-1005's cancel
    # came first (none taken), o-1012 broke its contract (never reached the ledger)
    want = {"book-42": -1, "pen-1": -6, "mug": -1}
    if stock_after != want:
        problems.append("ledger stock %s, expected %s" % (stock_after, want))

    if problems:
        print("\ndemo: NOT the expected story:")
        for p in problems:
            print("  - " + p)
        print("  (see .demo/warren.log)")
        sys.exit(1)
    print("\ndemo: every order charged at most once, the order cancelled before it arrived "
          "never charged, stock consistent")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "reset":
        reset()
    elif len(sys.argv) >= 3 and sys.argv[1] == "run":
        run(sys.argv[2])
    else:
        sys.exit(__doc__)
