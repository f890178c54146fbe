"""A delay queue that already exists with other arguments: warren says which
queue, which argument and how to fix it, keeps retrying without crashing,
and starts consuming once the conflicting queue is gone."""
import os

from wrtest import Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write

p = prefix()
tmp = tempdir()
queue = p + ".in"
write(os.path.join(tmp, "h.lua"), "return { handle = function(event, ctx) end }\n")

b = Broker()
# someone declared the 1s tier with a 5s TTL
b.ch.queue_declare(queue=queue + ".retry.1s", durable=True, arguments={"x-message-ttl": 5000})
w = Warren(tmp, [{"name": "conflict", "queue": queue, "handler": "h.lua",
                  "retry": {"max_attempts": 2, "delays": ["1s"]}}]).start()
errs = wait_for(lambda: w.lines(msg="broker not available"), 20, "the conflict logged")
text = errs[0].get("error", "") if errs else ""
print("  logged: %s" % text)
check("'%s.retry.1s'" % queue in text, "names the queue")
check("x-message-ttl" in text, "names the argument")
check("delete it or declare it with the arguments warren expects" in text, "says how to fix it")
check(w.alive(), "warren stays up and retries")

b = Broker()  # the failed declare closed nothing of ours, but start clean
b.delete(queue + ".retry.1s")
check(wait_for(lambda: w.lines(msg="consuming"), 60, "consuming after the fix"), "recovers")
check_eq(w.stop(), 0, "exit 0")
b.delete(queue, queue + ".dlq", queue + ".retry.1s", queue + ".wait")
b.close()
finish()
