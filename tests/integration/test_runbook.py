"""docs/operations.md's drills are true: the four incidents of its "Drills" section are
played against the real RabbitMQ and Redis, and every command the guide shows prints
what the guide says it prints.

The shop of the guide runs in a scratch directory: three subscriptions on one topic
exchange (orders keyed by the order id, payments and notifications by message id),
handlers that decline a payment over 1000 and a notifications handler with a bug
(an order without a customer). The test does what the guide's prose says happens
between its commands (orders arrive, the handler is fixed, Redis stops and starts, a
broken handler is deployed); the guide's commands are run as shown, from the shop's
directory, and compared with the guide's output after normalising what changes from
run to run (times, handler versions, trace ids, durations, the scratch directory, the
ports). A command whose state settles over time (queue depths polled every second) is
retried for up to 15 s until it matches.

Markers in the guide (HTML comments, invisible when rendered):
  <!-- drill: NAME [exit=N] -->  the next code block is "$ command" lines, each
                                 followed by its output (stdout then stderr)

WR_RUNBOOK_RECORD=FILE: write the blocks as this run printed them to FILE (to update
the guide) instead of comparing.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
import traceback
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(__file__))
from wrtest import (ENV, SOURCE_DIR, WARREN, Broker, Warren, check, check_eq,  # noqa: E402
                    delete_queues, finish, redis_client, stack, tempdir, wait_for, write)

GUIDE = os.path.join(SOURCE_DIR, "docs", "operations.md")
RECORD = os.environ.get("WR_RUNBOOK_RECORD")
SHOWN_DIR = "/srv/shop"
SHOWN_PORT = "9464"

with open(GUIDE) as fh:
    guide = fh.read()
drills = {name: (int(ex or 0), body) for name, ex, body in re.findall(
    r"<!-- drill: ([a-z0-9-]+)(?: exit=(\d+))? -->\n```console\n(.*?)```", guide, re.S)}
recorded = []

tmp = tempdir()
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = str(s.getsockname()[1])
s.close()


def normalise(text):
    text = text.replace(tmp, SHOWN_DIR)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "<time>", text)
    text = re.sub(r"\b[0-9a-f]{32}\b", "<trace>", text)
    text = re.sub(r"\b[0-9a-f]{12}\b", "<version>", text)
    text = re.sub(r"\d+\.\d+ ms", "<n> ms", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", text)
    text = re.sub(r"\d+ key\(s\) searched", "<n> key(s) searched", text)
    text = re.sub(r"warren \d+\.\d+\.\d+ at", "warren <v> at", text)
    # status's lag: rates and ages follow the run's timing
    text = re.sub(r"over the last \d+ s: in \d+\.\d/s, out \d+\.\d/s",
                  "over the last <n> s: in <r>/s, out <r>/s", text)
    text = re.sub(r"at most \d+ s old", "at most <n> s old", text)
    text = re.sub(r"\n +(measuring|caught up|catching up|keeping up|falling behind|stuck): .*",
                  "\n <lag verdict>", text)
    text = re.sub(r" {2,}", " ", text)  # column widths follow the directory's length
    return text


def run_shell(cmd):
    env = dict(os.environ)
    env.update(ENV)
    env["PATH"] = os.path.dirname(WARREN) + ":" + env.get("PATH", "")
    cmd = cmd.replace(":" + SHOWN_PORT, ":" + port)
    r = subprocess.run(["bash", "-c", cmd], cwd=tmp, capture_output=True, env=env, timeout=120)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    return r.returncode, out.replace(":" + port, ":" + SHOWN_PORT)


def drill(name, settle=15):
    """Run drill NAME's commands as the guide shows them; compare (or record)."""
    if RECORD:
        time.sleep(2)
        cmds = [ln[2:] for ln in drills.get(name, (0, ""))[1].splitlines() if ln.startswith("$ ")]
        if not cmds:
            cmds = PLANNED[name]
        text, rc = "", 0
        for c in cmds:
            code, out = run_shell(c)
            rc = rc or code
            text += "$ %s\n%s" % (c, out.replace(tmp, SHOWN_DIR).replace(
                "127.0.0.1:%d" % urlparse(ENV["WARREN_REDIS_URL"]).port, "127.0.0.1:6379"))
        recorded.append("<!-- drill: %s%s -->\n```console\n%s```\n" %
                        (name, " exit=%d" % rc if rc else "", text))
        return
    if not check(name in drills, "the guide has drill %s" % name):
        return
    want_rc, body = drills[name]
    steps = re.split(r"^\$ ", body, flags=re.M)[1:]
    for step in steps:
        cmd, _, want = step.partition("\n")
        deadline = time.monotonic() + settle
        while True:
            rc, got = run_shell(cmd)
            ok = normalise(got) == normalise(want) and (rc == want_rc or rc == 0)
            if ok or time.monotonic() > deadline:
                break
            time.sleep(1)
        check(ok, "drill %s: `%s` prints what the guide shows" % (name, cmd))
        if not ok:
            print("---- got (normalised)\n%s---- want (normalised)\n%s----" %
                  (normalise(got), normalise(want)), flush=True)


# the commands a drill runs, when the guide has no block for it yet (record mode)
PLANNED = {
    "not-charged": ["warren trace -c warren.yaml o-2007"],
    "dlq-growing": ["warren status -c warren.yaml",
                    "warren dlq list -c warren.yaml --subscription notifications "
                    "--group-by reason",
                    "warren dlq list -c warren.yaml --subscription notifications "
                    "--group-by error"],
    "dlq-replay": ["warren dlq replay -c warren.yaml --subscription notifications "
                   "--reason handler-error --dry-run",
                   "warren dlq replay -c warren.yaml --subscription notifications "
                   "--reason handler-error --rate 20/s",
                   "warren trace -c warren.yaml evt-2011"],
    "redis-down": ["warren status -c warren.yaml",
                   "curl -s http://127.0.0.1:%s/readyz" % SHOWN_PORT],
    "redis-back": ["warren trace -c warren.yaml o-2020"],
    "bad-deploy": ["warren status -c warren.yaml", "warren check -c warren.yaml"],
}

ORDERS = r'''-- orders: an order was placed; ask for its payment
local M = {}
function M.handle(event, ctx)
  local o = event.data
  ctx.publish("shop.events", "payment.requested", { order_id = o.order_id, amount = o.amount })
end
return M
'''
PAYMENTS = r'''-- payments: charge the order (the card limit is 1000)
local M = {}
function M.handle(event, ctx)
  if event.data.amount > 1000 then
    return ctx.reject("card declined: over the limit")
  end
end
return M
'''
NOTIFY_BUG = r'''-- notifications: mail the customer
local M = {}
function M.handle(event, ctx)
  local email = event.data.customer.email
  ctx.log.info("mail sent", { to = email })
end
return M
'''
NOTIFY_FIXED = r'''-- notifications: mail the customer (orders placed by phone have none)
local M = {}
function M.handle(event, ctx)
  local customer = event.data.customer
  if customer == nil then return end
  ctx.log.info("mail sent", { to = customer.email })
end
return M
'''
CONFIG = '''amqp:
  url: ${WARREN_AMQP_URL}
redis:
  url: ${WARREN_REDIS_URL}
http:
  listen: 127.0.0.1:%s
  queue_poll: 1s
defaults:
  retry:
    max_attempts: 1
  idempotency:
    prefix: "shop:"
subscriptions:
  - name: orders
    queue: shop.orders
    handler: orders.lua
    idempotency:
      key: json:order_id
    bindings:
      - exchange: shop.events
        routing_keys: [order.placed]
  - name: payments
    queue: shop.payments
    handler: payments.lua
    bindings:
      - exchange: shop.events
        routing_keys: [payment.requested]
  - name: notifications
    queue: shop.notifications
    handler: notifications.lua
    bindings:
      - exchange: shop.events
        routing_keys: [order.placed]
''' % port

queues = []
for q in ("shop.orders", "shop.payments", "shop.notifications"):
    queues += [q, q + ".dlq", q + ".wait", q + ".retry.1s"]
delete_queues(queues)
r = redis_client()
for k in r.scan_iter("shop:*"):
    r.delete(k)

write(os.path.join(tmp, "orders.lua"), ORDERS)
write(os.path.join(tmp, "payments.lua"), PAYMENTS)
write(os.path.join(tmp, "notifications.lua"), NOTIFY_BUG)
write(os.path.join(tmp, "warren.yaml"), CONFIG)
w = Warren(tmp, [], name="run")
w.config = os.path.join(tmp, "warren.yaml")  # the shop's own config, not a generated one
b = Broker()


def order(n, amount, customer=True):
    data = {"order_id": "o-%d" % n, "amount": amount}
    if customer:
        data["customer"] = {"email": "c%d@example.com" % n}
    b.publish("order.placed", data, exchange="shop.events", message_id="evt-%d" % n,
              type="order.placed")


def handled(n):
    return len(w.lines(msg="message handled")) + len(w.lines(msg="message dead-lettered")) >= n


try:
    w.start()
    check(w.wait_consuming(3), "the shop's warren consumes")
    # the day's orders: o-2007 is over the card limit; o-2011..13 came by phone (no customer)
    order(2001, 30)
    order(2007, 4200)
    for n in (2011, 2012, 2013):
        order(n, 15, customer=False)
    check(wait_for(lambda: handled(5 + 5 + 5), 30, "the orders"), "every event decided")

    # 1. "my order o-2007 was never charged"
    drill("not-charged")
    # 2. the notifications DLQ grows: what, why; the fix; the replay
    drill("dlq-growing")
    write(os.path.join(tmp, "notifications.lua"), NOTIFY_FIXED)
    check(wait_for(lambda: w.lines(msg="handler reloaded", subscription="notifications"), 20,
                   "the fix"), "the fixed handler is running")
    drill("dlq-replay")
    # 3. Redis goes away while an order arrives, then comes back
    try:
        check_eq(stack("stop-redis"), 0, "Redis stopped")
        order(2020, 55)
        drill("redis-down")
    finally:
        check_eq(stack("start-redis"), 0, "Redis started again")
    check(wait_for(lambda: w.lines(msg="message handled", message_id="evt-2020"), 20,
                   "o-2020"), "o-2020 handled once Redis is back")
    drill("redis-back")
    # 4. a broken payments handler is deployed
    write(os.path.join(tmp, "payments.lua"), PAYMENTS.replace("then\n", "\n", 1))
    check(wait_for(lambda: w.lines(msg="handler reload refused"), 20, "the refusal"),
          "the broken handler is refused")
    drill("bad-deploy")
    write(os.path.join(tmp, "payments.lua"), PAYMENTS)
except Exception:
    traceback.print_exc()
    check(False, "no exception")
finally:
    if w.alive():
        w.stop()
    b.close()
    delete_queues(queues)
if not RECORD:
    check_eq(sorted(drills), sorted(PLANNED), "the guide's drills are the ones played here")
if RECORD:
    with open(RECORD, "w") as fh:
        fh.write("\n".join(recorded))
    print("recorded %d drills in %s" % (len(recorded), RECORD))
    check(len(recorded) == 6, "every drill recorded")
finish()
