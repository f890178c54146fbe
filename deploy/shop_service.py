"""A tiny stand-in for the services beside warren in the demo and the tests:
orders, inventory and payments, on 127.0.0.1, in memory.

Like a real service it honours the Idempotency-Key header: the same key gets
the same answer and changes nothing a second time, so a handler that is
re-run (after a crash, say) never creates, reserves or charges twice.

  POST /orders                 {order_id, customer_id, items, total}
       201 created | 200 already created | 409 cancelled before it was created
  POST /orders/<id>/cancel     200 cancelled | 202 unknown yet: remembered, the
                               order will be refused when it arrives
  POST /inventory/reserve      {order_id, items}   200 | 409 out of stock |
                               410 released already (its cancel came first)
  POST /inventory/release      {order_id}          200; a release that finds no
                               reservation is remembered, and the order's
                               reservation refused when it arrives (410)
  POST /payments               {order_id, customer_id, amount}
       201 captured | 402 declined (customer c-declined) | 503 once for
       customers whose id ends in "-flaky" (a transient failure)
  POST /payments/<id>/refund   200
  GET  /stats                  what happened: orders, stock (and what it was
                               at the start), reservations, releases, charges,
                               declines

Usage: shop_service.py [PORT] [--stock JSON]
  PORT     default 8089; 0 picks a free port
  --stock  the stock to start with, like '{"tea": 1000}' (default: a few SKUs)
Prints "ready PORT" when listening.
"""
import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
ORDERS = {}          # order_id -> {"state": "created"|"cancelled", ...}
TOMBSTONES = set()   # orders cancelled before they were created
STOCK = {"book-42": 10, "pen-1": 100, "mug": 5, "lamp": 0}
STOCK_INITIAL = dict(STOCK)
RESERVED = {}        # order_id -> items
RELEASED = set()     # orders whose reservation is over (released, or cancelled first)
PAYMENTS = {}        # payment_id -> {"order_id", "amount", "refunded"}
REPLIES = {}         # (method path, idempotency key) -> (status, body)
FLAKY_SEEN = set()
CHARGES = []         # every capture, in order: the thing that must never repeat
DECLINED = []        # every declined payment's order id


class Shop(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/stats":
            return self.reply(404, {"error": "not found"})
        with LOCK:
            self.reply(200, {"orders": ORDERS, "tombstones": sorted(TOMBSTONES), "stock": STOCK,
                             "stock_initial": STOCK_INITIAL, "reserved": RESERVED,
                             "released": sorted(RELEASED), "payments": PAYMENTS,
                             "charges": CHARGES, "declined": DECLINED})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return self.reply(400, {"error": "body is not JSON"})
        key = self.headers.get("Idempotency-Key")
        with LOCK:
            if key and (self.path, key) in REPLIES:
                status, obj = REPLIES[(self.path, key)]
                return self.reply(status, obj)
            status, obj = self.route(body)
            if key and status < 500:
                REPLIES[(self.path, key)] = (status, obj)
        self.reply(status, obj)

    def route(self, body):
        parts = self.path.strip("/").split("/")
        if parts == ["orders"]:
            oid = body.get("order_id")
            if oid in TOMBSTONES:
                return 409, {"error": "cancelled", "reason": "cancelled before it was created"}
            if oid in ORDERS:
                return 200, {"order_id": oid, "state": ORDERS[oid]["state"]}
            ORDERS[oid] = {"state": "created", "total": body.get("total"),
                           "customer_id": body.get("customer_id")}
            return 201, {"order_id": oid, "state": "created"}
        if len(parts) == 3 and parts[0] == "orders" and parts[2] == "cancel":
            oid = parts[1]
            if oid not in ORDERS:
                TOMBSTONES.add(oid)
                return 202, {"order_id": oid, "state": "cancel-recorded"}
            ORDERS[oid]["state"] = "cancelled"
            return 200, {"order_id": oid, "state": "cancelled"}
        if parts == ["inventory", "reserve"]:
            oid, items = body.get("order_id"), body.get("items") or []
            if oid in RESERVED:
                return 200, {"order_id": oid, "reserved": RESERVED[oid]}
            if oid in RELEASED:
                # the cancellation overtook the confirmation: reserve nothing
                return 410, {"error": "released", "reason": "the order was cancelled already"}
            short = [i["sku"] for i in items if STOCK.get(i["sku"], 0) < i.get("qty", 1)]
            if short:
                return 409, {"error": "out of stock", "skus": short}
            for i in items:
                STOCK[i["sku"]] -= i.get("qty", 1)
            RESERVED[oid] = items
            return 200, {"order_id": oid, "reserved": items}
        if parts == ["inventory", "release"]:
            oid = body.get("order_id")
            held = RESERVED.pop(oid, None)
            for i in held or []:
                STOCK[i["sku"]] += i.get("qty", 1)
            RELEASED.add(oid)
            return 200, {"order_id": oid, "released": held is not None}
        if parts == ["payments"]:
            cid = str(body.get("customer_id"))
            if cid == "c-declined":
                DECLINED.append(body.get("order_id"))
                return 402, {"error": "card declined"}
            if cid.endswith("-flaky") and body.get("order_id") not in FLAKY_SEEN:
                FLAKY_SEEN.add(body.get("order_id"))
                return 503, {"error": "payment provider timeout"}
            pid = "pay-%d" % (len(PAYMENTS) + 1)
            PAYMENTS[pid] = {"order_id": body.get("order_id"), "amount": body.get("amount"),
                             "refunded": False}
            CHARGES.append({"order_id": body.get("order_id"), "amount": body.get("amount")})
            return 201, {"payment_id": pid, "order_id": body.get("order_id")}
        if len(parts) == 3 and parts[0] == "payments" and parts[2] == "refund":
            p = PAYMENTS.get(parts[1])
            if p is None:
                return 404, {"error": "no such payment"}
            p["refunded"] = True
            return 200, {"payment_id": parts[1], "refunded": True}
        return 404, {"error": "not found"}


def main():
    ap = argparse.ArgumentParser(description="the shop's stand-in services, on 127.0.0.1")
    ap.add_argument("port", nargs="?", type=int, default=8089)
    ap.add_argument("--stock", type=json.loads, help='starting stock, like \'{"tea": 1000}\'')
    args = ap.parse_args()
    if args.stock is not None:
        STOCK.clear()
        STOCK.update(args.stock)
        STOCK_INITIAL.clear()
        STOCK_INITIAL.update(args.stock)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Shop)
    print("ready %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
