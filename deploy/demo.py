"""The demo's event script: publish example order events to a running warren
and print what happened to each one, from warren's own JSON log and from the
dead-letter queues.

  demo.py reset            delete the demo's queues (before warren starts)
  demo.py run WARREN_LOG   publish, wait, report
"""
import json
import os
import sys
import time

import pika

URL = os.environ["WARREN_AMQP_URL"]
EXCHANGE = "shop.events"
QUEUES = ["orders.events", "orders.events.dlq", "notifications.events", "notifications.events.dlq"]
REDIS_PREFIXES = ["warren:idem:orders:", "warren:idem:notifications:"]

EVENTS = [
    # (message id, routing key, body, what to expect)
    ("evt-1001", "order.created",
     {"order_id": "o-1001", "customer_id": "c-7", "email": "ada@example.com",
      "items": [{"sku": "book-42", "qty": 1}], "total": 29.90},
     "confirmed, then the customer is notified"),
    ("evt-1001", "order.created",
     {"order_id": "o-1001", "customer_id": "c-7", "email": "ada@example.com",
      "items": [{"sku": "book-42", "qty": 1}], "total": 29.90},
     "the producer sent it twice: skipped as a duplicate, nobody charged twice"),
    ("evt-1002", "order.created",
     {"order_id": "o-1002", "customer_id": "c-8", "email": "bob@flaky.example",
      "items": [{"sku": "pen-1", "qty": 3}], "total": 4.50},
     "confirmed; the mail relay fails once, the notification is retried and succeeds"),
    ("evt-1003", "order.created",
     {"order_id": "o-1003", "customer_id": "c-9", "items": [{"sku": "mug", "qty": 1}],
      "total": 9.00},
     "confirmed, but nobody can be notified: no e-mail address (DLQ, no retry)"),
    ("evt-1004", "order.created",
     {"order_id": "o-1004", "customer_id": "c-9", "items": [], "total": 0},
     "rejected: an order without items"),
    ("evt-1005", "order.cancelled", {"order_id": "o-1001", "reason": "changed my mind"},
     "closed"),
    ("evt-1006", "order.created", '{"order_id": "o-1006", "items": [',
     "malformed JSON: dead-lettered without running the handler"),
    (None, "order.created", {"order_id": "o-1007", "items": [{"sku": "x", "qty": 1}], "total": 1},
     "no message id: dead-lettered (it could never be deduplicated)"),
]
# outcome lines to wait for: 8 inputs, 3 order.confirmed, 1 retry of one of them
EXPECTED_OUTCOMES = 12


def connect():
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    return conn, conn.channel()


def reset():
    """Empty queues and forget the demo's idempotency records, so a second run
    tells the same story (otherwise every event would be a duplicate)."""
    conn, ch = connect()
    for q in QUEUES:
        ch.queue_delete(queue=q)
    conn.close()
    import redis
    r = redis.Redis.from_url(os.environ["WARREN_REDIS_URL"])
    for prefix in REDIS_PREFIXES:
        keys = list(r.scan_iter(prefix + "*"))
        if keys:
            r.delete(*keys)


def read_log(path):
    out = []
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                out.append(json.loads(raw))
            except ValueError:
                pass
    return out


OUTCOME_MSGS = ("message handled", "message dead-lettered", "duplicate message skipped",
                "message scheduled for retry")


def outcomes(log):
    return [r for r in log if r.get("msg") in OUTCOME_MSGS]


def run(log_path):
    # wait for the three workers (orders x2, notifications x1)
    deadline = time.time() + 30
    while sum(1 for r in read_log(log_path) if r.get("msg") == "consuming") < 3:
        if time.time() > deadline:
            sys.exit("demo: warren did not start consuming; see .demo/warren.log")
        time.sleep(0.2)

    conn, ch = connect()
    ch.confirm_delivery()
    print("\ndemo: publishing %d events to exchange '%s'" % (len(EVENTS), EXCHANGE))
    for mid, rk, body, expect in EVENTS:
        payload = body if isinstance(body, str) else json.dumps(body)
        ch.basic_publish(EXCHANGE, rk, payload.encode(), pika.BasicProperties(
            message_id=mid, content_type="application/json", delivery_mode=2), mandatory=True)
        print("  %-9s %-16s expect: %s" % (mid or "(no id)", rk, expect))

    # Wait until every event and its follow-ups have an outcome.
    deadline = time.time() + 30
    while len(outcomes(read_log(log_path))) < EXPECTED_OUTCOMES and time.time() < deadline:
        time.sleep(0.2)
    log = read_log(log_path)

    print("\nwhat happened to each event (from warren's log):")
    results = outcomes(log)

    def show(r, indent):
        mid = r.get("message_id") or "(no id)"
        if r["outcome"] == "ok":
            extra = ", published %d event(s)" % r["published"] if r.get("published") else ""
            what = "handled in %.2f ms on attempt %d%s" % (r["duration_ms"], r["attempt"], extra)
        elif r["outcome"] == "duplicate":
            what = "DUPLICATE: already handled, skipped (nothing ran)"
        elif r["outcome"] == "retried":
            what = "attempt %d failed (%s), retry in %d ms" % (r["attempt"], r.get("error"),
                                                             r["delay_ms"])
        else:
            what = "DEAD-LETTERED (%s): %s" % (r.get("reason"), r.get("error"))
        print("  %s%-*s %-16s %-14s %s" % (indent, 13 - len(indent), mid, r.get("type") or "",
                                           r["subscription"], what))

    shown = set()
    for mid, _, _, _ in EVENTS:
        if mid in shown:
            continue
        shown.add(mid)
        for r in results:
            if r.get("message_id") == mid:
                show(r, "")
        # the events this one caused: their ids derive from it (<id>:<n>)
        for f in results:
            if mid and (f.get("message_id") or "").startswith(mid + ":"):
                show(f, "-> ")

    print("\nwhat the handlers logged:")
    for r in log:
        if "source" in r and r.get("msg") != "orders handler loaded":
            print("  %-12s %-6s %s %s" % (r.get("message_id", ""), r["level"], r["msg"],
                                          json.dumps(r.get("fields", {}))))

    print("\ndead-letter queues (each message keeps its body and its story):")
    for q in ("orders.events.dlq", "notifications.events.dlq"):
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
                props.message_id or "(none)", h.get("x-warren-reason"), h.get("x-warren-error-class"),
                h.get("x-warren-attempt"), h.get("x-warren-original-exchange"),
                h.get("x-warren-original-routing-key")))
            print("      error: %s" % h.get("x-warren-error"))
            print("      trace %s, handler %s@%s, failed at %s" % (
                h.get("x-warren-trace-id"), os.path.basename(h.get("x-warren-handler", "")),
                h.get("x-warren-handler-version"), h.get("x-warren-last-failure")))
            print("      body: %s" % body[:80].decode("utf-8", "replace"))
    conn.close()
    got = len(outcomes(log))
    if got < EXPECTED_OUTCOMES:
        sys.exit("demo: only %d of %d outcomes arrived; see .demo/warren.log" % (got,
                                                                            EXPECTED_OUTCOMES))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "reset":
        reset()
    elif len(sys.argv) >= 3 and sys.argv[1] == "run":
        run(sys.argv[2])
    else:
        sys.exit(__doc__)
