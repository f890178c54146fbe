"""What a handler publishes must fit AMQP's short strings (255 bytes), and the
ids warren derives for published events must too. A name that does not fit is
refused at ctx.publish, naming the field: the message fails (retried, then
dead-lettered with the error), and the broker connection is never lost over it
(before, rabbitmq-c refused the frame and the worker rebuilt its connection
without counting an attempt: the message looped). A derived id that would be
too long ("<250-byte key>:<subscription>:<n>") becomes "sha256:<hex>:<n>"."""
import hashlib
import os
import time

from wrtest import (Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
queue, out = p + ".in", p + ".out"
write(os.path.join(tmp, "h.lua"), r'''
return { handle = function(event, ctx)
  if event.data.long_key then
    ctx.publish("", string.rep("r", 300), { id = event.id })
  else
    ctx.publish("", "%s", { id = event.id })
  end
end }
''' % out)
b = Broker()
b.declare(queue)
b.declare(out)
sub = {"name": "lim", "queue": queue, "handler": "h.lua",
       "retry": {"max_attempts": 2, "delays": ["300ms"]}}
w = Warren(tmp, [sub]).start()
check(w.wait_consuming(1), "consuming")

long_id = "L" * 250
b.publish(queue, {"long_key": True}, message_id="bad-1")
b.publish(queue, {"ok": True}, message_id=long_id)
wait_for(lambda: b.depth(queue + ".dlq") >= 1 and b.depth(out) >= 1, 30,
         "the bad one dead-lettered, the long-id one published")
time.sleep(1)
dlq = b.drain(queue + ".dlq")
check_eq(len(dlq), 1, "one dead letter")
props = dlq[0][0] if dlq else None
h = (props.headers if props else None) or {}
check_eq(props.message_id if props else None, "bad-1", "the refused publisher dead-lettered")
check("ctx.publish: routing_key is longer than 255 bytes (300)" in h.get("x-warren-error", ""),
      "the error names the field: %r" % h.get("x-warren-error"))
check_eq(h.get("x-warren-attempt"), 2, "after its two attempts")
outs = b.drain(out)
check_eq(len(outs), 1, "the long-id message's event published")
want = "sha256:" + hashlib.sha256((long_id + ":lim").encode()).hexdigest() + ":1"
check_eq(outs[0][0].message_id if outs else None, want, "its id is the digest form")
check_eq(w.lines(msg="broker connection lost"), [], "the connection was never lost")
check_eq(w.lines(msg="broker connection lost mid-batch; nothing acked"), [], "nor mid-batch")
check_eq(len(w.lines(msg="consuming")), 1, "one connection all along")
check_eq(b.depth(queue), 0, "nothing left")
check_eq(w.stop(), 0, "exit 0")
b.delete(queue, queue + ".dlq", queue + ".wait", out, queue + ".retry.300ms")
b.close()
finish()
