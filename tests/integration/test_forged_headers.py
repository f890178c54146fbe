"""Producers cannot forge warren's story headers (sign.h). A message that
arrives with x-warren-attempt: 4 and x-warren-original-exchange: admin.trusted
written by a producer is a fresh message from where it was delivered: its
handler sees attempt 1 and the real route, all its retries still happen, and
the forgery is counted and logged. warren's own retry copies are signed and
keep counting attempts through the delay queue; headers lifted from one of
them onto another message id are not trusted either."""
import json
import os
import time

from wrtest import (Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
queue, out = p + ".in", p + ".out"
write(os.path.join(tmp, "h.lua"), r'''
return { handle = function(event, ctx)
  ctx.publish("", "%s", { id = event.id, attempt = event.attempt, exchange = event.exchange,
                         routing_key = event.routing_key })
  if event.data.fail then
    error("attempt " .. event.attempt .. " via '" .. event.exchange .. "' '" .. event.routing_key
          .. "'")
  end
end }
''' % out)
b = Broker()
b.declare(queue)
b.declare(out)
sub = {"name": "forge", "queue": queue, "handler": "h.lua",
       "retry": {"max_attempts": 3, "delays": ["300ms"]}}
w = Warren(tmp, [sub], extra="security:\n  signing_key: \"integration-test-signing-key\"\n").start()
check(w.wait_consuming(1), "consuming")

# 1. a forgery that claims to be the last attempt, from a trusted exchange
b.publish(queue, {"fail": True}, message_id="forged-1",
          headers={"x-warren-attempt": 4, "x-warren-original-exchange": "admin.trusted",
                   "x-warren-original-routing-key": "admin.cmd"})
wait_for(lambda: b.depth(queue + ".dlq") >= 1, 30, "the forged message dead-lettered")
dlq = b.drain(queue + ".dlq")
check_eq(len(dlq), 1, "one dead letter")
props = dlq[0][0] if dlq else None
h = (props.headers if props else None) or {}
# each attempt's error says what the handler saw (a failed run publishes nothing)
errors = [e.split(": ", 1)[-1] for e in h.get("x-warren-errors", [])]
check_eq(errors, ["attempt %d via '' '%s'" % (i, queue) for i in (1, 2, 3)],
         "three attempts from 1, each seeing the real route")
check_eq(h.get("x-warren-attempt"), 3, "dead-lettered after attempt 3")
check_eq(h.get("x-warren-original-exchange"), "", "its recorded route is the real one")
check(str(h.get("x-warren-signature", "")).startswith("v1:"), "warren's copy is signed")
forged_lines = w.lines(msg="x-warren-* headers not signed by warren: ignored")
check_eq(len(forged_lines), 1, "the forgery logged once (its retries are warren's own copies)")
check_eq(w.metric(w.metrics(), "warren_forged_headers_total", subscription="forge"), 1.0,
         "and counted")

# 2. headers lifted from warren's own copy onto another message id
lifted = dict(h)
lifted["x-warren-attempt"] = 2
b.publish(queue, {"fail": False}, message_id="lifted-1", headers=lifted)
wait_for(lambda: b.depth(out) >= 1, 20, "the lifted one handled")
seen = [json.loads(body) for _, body in b.drain(out)]
check_eq([s["attempt"] for s in seen if s["id"] == "lifted-1"], [1],
         "a signature copied onto another message is not trusted")
check_eq(w.metric(w.metrics(), "warren_forged_headers_total", subscription="forge"), 2.0,
         "counted too")
check_eq(w.stop(), 0, "exit 0")
b.delete(queue, queue + ".dlq", queue + ".wait", out, queue + ".retry.300ms")
b.close()
finish()
