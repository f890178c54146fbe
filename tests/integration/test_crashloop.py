"""The crash-loop guard: a message whose handler takes the process down
every time (here: kill -9 while it runs, as an OOM kill or a segfault in a C
module would) is not redelivered forever. Claims count starts; after
max_attempts starts without an outcome the message goes to the DLQ with
reason "crashed" instead of being run again."""
import os
import time

from wrtest import Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write

p = prefix()
tmp = tempdir()
queue = p + ".in"
write(os.path.join(tmp, "crash.lua"), r'''
return { handle = function(event, ctx)
  ctx.log.info("started")
  local t = os.clock()
  while os.clock() - t < 30 do end
end }
''')
b = Broker()
b.declare(queue)
b.publish(queue, {"x": 1}, message_id="crasher")
sub = {"name": "crashloop", "queue": queue, "handler": "crash.lua", "handler_timeout": "60s",
       "retry": {"max_attempts": 2, "delays": ["1s"]}, "idempotency": {"lease": "1s"}}
kills = 0
w = None
for run in range(6):
    w = Warren(tmp, [sub], name="run%d" % run).start()
    seen = wait_for(lambda: w.lines(msg="started") or w.lines(msg="message dead-lettered"), 30,
                    "run %d to start the handler or dead-letter the message" % run)
    if w.lines(msg="message dead-lettered"):
        break
    w.kill9()
    kills += 1
    time.sleep(1.2)  # the dead run's lease expires
dead = w.lines(msg="message dead-lettered") if w else []
check_eq(kills, 2, "the handler was started max_attempts times, each killed")
check(dead and dead[0].get("reason") == "crashed", "then dead-lettered as crashed: %r" % dead)
dlq = b.drain(queue + ".dlq")
check_eq(len(dlq), 1, "one copy in the DLQ")
if dlq:
    h = dlq[0][0].headers
    check_eq(h.get("x-warren-reason"), "crashed", "reason header")
    check_eq(h.get("x-warren-error-class"), "crashed", "class header")
    check("started 2 times without an outcome" in h.get("x-warren-error", ""), "says why")
check_eq(w.stop(), 0, "exit 0")
check_eq(b.depth(queue), 0, "not redelivered again")
b.delete(queue, queue + ".dlq", queue + ".wait", queue + ".retry.1s")
b.close()
finish()
