"""Hot reload under load: 20,000 messages flow while the handler is swapped
20 times: edits saved by rename (as editors do), Kubernetes ConfigMap-style
swaps of a `..data` symlink, SIGHUP, and 3 broken versions (a syntax error, an
init that fails, a module without handle), the last swap a broken one. Every
message is handled exactly once, on its first attempt, by a fully loaded good
version (the handler stamps its mark, version and attempt into its output):
nothing was retried or dead-lettered on the way, the delay queues and the DLQ
are empty, and the version each outcome line names is the one that produced
the output (a worker switches versions between batches, never inside one).
Broken versions are refused with file and error; after the last, broken, swap
the previous good version is the one running. A policy change in the config
applies live: a message that runs 1 s succeeds on attempt 1 under the old
5 s timeout and times out (and succeeds on its retry) under the new 300 ms.
Last, a batch held at a gate while a new version is published finishes on the
version it started with, and the next batch runs the new one."""
import json
import os
import shutil
import signal
import threading
import time

from wrtest import (GATE_LUA, Broker, Gate, Warren, check, check_eq, finish, idem_record, prefix,
                    redis_client, tempdir, wait_for, write)

TOTAL = 20000
p = prefix()
tmp = tempdir()
queue, out = p + ".in", p + ".out"
r = redis_client()
hdir = os.path.join(tmp, "handlers")
os.makedirs(hdir)

GOOD = r'''
local MARK = "%s"
local M = {}
function M.init(ctx) ctx.log.info("loaded " .. MARK) end
function M.handle(event, ctx)
  local spin = event.data.spin
  if spin and ctx.attempt == 1 then
    local t = ctx.now()
    while ctx.now() - t < spin do end
  end
  ctx.publish("", "%s", { id = event.id, mark = MARK, version = ctx.handler_version,
                         attempt = ctx.attempt })
end
return M
'''
BROKEN = {
    "syntax": "local M = {}\nfunction M.handle(event, ctx)\n  if then end\nend\nreturn M\n",
    "init": "return { init = function(ctx) error('no database connection') end,\n"
            "  handle = function(event, ctx) end }\n",
    "nohandle": "return { hande = function(event, ctx) end }\n",
}
generation = [0]


def configmap_swap(text):
    """What the kubelet does: a new timestamped directory, ..data_tmp pointing
    at it, renamed over ..data, the old directory deleted."""
    generation[0] += 1
    new = os.path.join(hdir, "..v%03d" % generation[0])
    os.makedirs(new)
    write(os.path.join(new, "handler.lua"), text)
    old = os.path.realpath(os.path.join(hdir, "..data"))
    tmp_link = os.path.join(hdir, "..data_tmp")
    os.symlink(os.path.basename(new), tmp_link)
    os.rename(tmp_link, os.path.join(hdir, "..data"))
    if os.path.isdir(old) and old != new:
        shutil.rmtree(old)


def editor_save(text):
    """What an editor does: write a temporary file, rename it over the target
    (through the ..data symlink, so the ConfigMap layout stays)."""
    target = os.path.realpath(os.path.join(hdir, "handler.lua"))
    tmp_file = target + ".swp"
    write(tmp_file, text)
    os.rename(tmp_file, target)


# initial layout: handler.lua -> ..data/handler.lua, ..data -> ..v000
os.makedirs(os.path.join(hdir, "..v000"))
write(os.path.join(hdir, "..v000", "handler.lua"), GOOD % ("m00", out))
os.symlink("..v000", os.path.join(hdir, "..data"))
os.symlink("..data/handler.lua", os.path.join(hdir, "handler.lua"))

b = Broker()
b.declare(out)
b.declare(queue)
w = Warren(tmp, [{"name": "reload", "queue": queue, "handler": "handlers/handler.lua",
                  "concurrency": 2, "prefetch": 50, "batch_size": 25}]).start()
check(w.wait_consuming(2), "consuming")


def publisher():
    pb = Broker()
    for i in range(TOTAL):
        pb.publish(queue, {"n": i}, message_id="r-%05d" % i)
        if i % 1000 == 999:
            time.sleep(0.25)  # keep messages flowing across all the swaps
    pb.close()


t = threading.Thread(target=publisher)
t.start()

plan = []  # (kind, mark or broken name): the last swap is a broken one
BROKEN_AT = {5: "syntax", 11: "init", 20: "nohandle"}
for n in range(1, 21):
    if n in BROKEN_AT:
        plan.append(("broken", BROKEN_AT[n]))
    else:
        plan.append(("good", "m%02d" % n))
good_marks = {"m00"}
last_good = "m00"
for i, (kind, what) in enumerate(plan):
    text = BROKEN[what] if kind == "broken" else GOOD % (what, out)
    how = ("configmap", "editor", "sighup")[i % 3]
    if how == "configmap":
        configmap_swap(text)
    elif how == "editor":
        editor_save(text)
    else:
        # write without waiting for inotify: SIGHUP asks for the reload now
        editor_save(text)
        w.proc.send_signal(signal.SIGHUP)
    if kind == "good":
        good_marks.add(what)
        last_good = what
    time.sleep(0.6)
    print("  swap %2d: %-6s %-9s %s" % (i + 1, kind, how, what), flush=True)
t.join()

wait_for(lambda: b.depth(out) >= TOTAL, 180, "all messages handled", interval=0.5)
time.sleep(1)
outs = [json.loads(body) for _, body in b.drain(out)]
ids = [o["id"] for o in outs]
check_eq(len(outs), TOTAL, "one output per message")
check_eq(len(set(ids)), TOTAL, "no message handled twice")
marks = set(o["mark"] for o in outs)
check(marks <= good_marks, "only good versions handled messages: %s" % sorted(marks - good_marks))
print("  %d distinct versions handled messages" % len(marks))
check(len(marks) >= 10, "messages were handled by many versions while they flowed (%d)" % len(marks))
versions_by_mark = {}
for o in outs:
    versions_by_mark.setdefault(o["mark"], set()).add(o["version"])
check(all(len(v) == 1 for v in versions_by_mark.values()), "one version id per handler text")
check_eq(sorted(o["id"] for o in outs if o.get("attempt") != 1), [],
         "every message handled on its first attempt (none failed under a half-loaded handler)")
retry_queues = ["%s.retry.%s" % (queue, d) for d in ("1s", "5s", "30s", "2m")]
for q in retry_queues + [queue + ".dlq", queue + ".wait"]:
    check_eq(b.depth(q), 0, "%s empty" % q)
m = w.metrics()
for outcome in ("retried", "dead_lettered", "returned"):
    check_eq(w.metric(m, "warren_messages_handled_total", subscription="reload", outcome=outcome),
             0, "outcome %s: none" % outcome)
# the version an outcome line names is the one that ran the message (from its output)
version_of = dict((o["id"], o["version"]) for o in outs)
logged = w.lines(msg="message handled")
check_eq(len(logged), TOTAL, "one outcome line per message")
wrong = [(x.get("message_id"), x.get("handler_version"), version_of.get(x.get("message_id")))
         for x in logged if x.get("handler_version") != version_of.get(x.get("message_id"))]
check_eq(wrong[:5], [], "each outcome line names the version that handled the message "
         "(%d do not)" % len(wrong))

wait_for(lambda: len(w.lines(msg="handler reload refused")) >= 3, 15, "the last, broken, swap")
refused = w.lines(msg="handler reload refused")
check_eq(len(refused), 3, "the three broken versions were refused")
errors = " | ".join(r.get("error", "") for r in refused)
check("handler.lua:3:" in errors and "unexpected symbol near 'then'" in errors,
      "the syntax error is named with its line")
check("init failed: " in errors and "no database connection" in errors, "the failed init is named")
check("the returned table has no function 'handle'" in errors, "the missing handle is named")
applied = w.lines(msg="handler reloaded")
check(len(applied) >= 15, "good versions were reloaded (%d)" % len(applied))

# the last swap was broken: the good version before it runs now; and a message
# that runs 1 s succeeds on its first attempt under the default 5 s timeout
check_eq(plan[-1][0], "broken", "the last swap was a broken version")
b.publish(queue, {"n": -1}, message_id="probe")
b.publish(queue, {"spin": 1.0}, message_id="slow-before")
wait_for(lambda: b.depth(out) >= 2, 30, "the probes handled")
probes = dict((o["id"], o) for o in (json.loads(body) for _, body in b.drain(out)))
check_eq(probes.get("probe", {}).get("mark"), last_good,
         "the last good version (%s) is running after the broken swap" % last_good)
check_eq(probes.get("slow-before", {}).get("attempt"), 1, "1 s of work passes the 5 s timeout")

# A config reload reloads the handlers too: with the broken version still on disk
# the whole reload would be refused, policy included. A good version first.
applied_before = len(w.lines(msg="handler reloaded"))
editor_save(GOOD % ("m21", out))
wait_for(lambda: len(w.lines(msg="handler reloaded")) > applied_before, 15, "a good version again")

# a policy change in the config applies live; a restart-only change is named
cfg = open(w.config).read()
write(w.config, cfg.replace("    concurrency: 2\n",
                            "    concurrency: 3\n    handler_timeout: 300ms\n"))
wait_for(lambda: w.lines(msg="policy reloaded"), 15, "the policy reload")
pol = w.lines(msg="policy reloaded")
check(pol and pol[-1].get("handler_timeout_ms") == 300, "the policy reload names the new timeout")
time.sleep(1)  # workers take the new policy at their next turn (an idle turn is 200 ms)
# its effect: the same 1 s of work now times out, and succeeds on the retry
b.publish(queue, {"spin": 1.0}, message_id="slow-after")
wait_for(lambda: b.depth(out) >= 1, 30, "slow-after handled")
after = [json.loads(body) for _, body in b.drain(out)]
check_eq([(o["id"], o["attempt"]) for o in after], [("slow-after", 2)],
         "under the new 300 ms timeout it timed out once and succeeded on its retry")
timed_out = w.lines(msg="message scheduled for retry", message_id="slow-after")
check_eq([x.get("reason") for x in timed_out], ["timeout"], "the retry was for the timeout")
need = w.lines(msg="config change needs a restart; the running values stay")
check(need and "subscriptions[0].concurrency" in need[-1].get("keys", ""),
      "the concurrency change is logged as needing a restart")
check_eq(w.stop(), 0, "exit 0")
stopped = w.lines(msg="warren stopped")
check(stopped and stopped[-1].get("reloads_refused") == 3, "refusals counted")
for q in retry_queues + [queue + ".dlq", queue + ".wait", queue]:
    check_eq(b.depth(q), 0, "%s empty at the end" % q)
b.delete(queue, queue + ".dlq", queue + ".wait", out,
         *["%s.retry.%s" % (queue, d) for d in ("1s", "5s", "30s", "2m")])

# A new version never takes over inside a batch. A worker's batch of ten is held
# at a gate (its first message waits on the test's HTTP service) while a new
# version is published; released, the batch finishes on the version it started
# with, and the next batch runs the new one. (The ten arrive while an earlier
# batch is held at a gate of its own, so they are all buffered when the worker
# takes its next batch; their records share one commit time, which shows it.)
gate = Gate()
bdir = os.path.join(tmp, "batch")
os.makedirs(bdir)
BATCH = GATE_LUA + r'''
local MARK = "%s"
local M = {}
function M.handle(event, ctx)
  if event.data.gate then gate(ctx, "%s", event.data.gate) end
  ctx.publish("", "%s", { id = event.id, mark = MARK, version = ctx.handler_version })
end
return M
'''
bq, bout = p + ".batch", p + ".batch.out"
b.declare(bout)
b.declare(bq)
write(os.path.join(bdir, "h.lua"), BATCH % ("A", gate.url, bout))
wb = Warren(tmp, [{"name": "batch", "queue": bq, "handler": "batch/h.lua", "concurrency": 1,
                   "prefetch": 20, "batch_size": 20}], name="batch").start()
check(wb.wait_consuming(1), "the batch warren consuming")
b.publish(bq, {"gate": "first"}, message_id="b-first")
gate.wait("first", 20, "the first batch held at its gate")
ten = ["b-%02d" % i for i in range(10)]
b.publish(bq, {"gate": "held"}, message_id=ten[0])
for mid in ten[1:]:
    b.publish(bq, {}, message_id=mid)
time.sleep(0.5)  # delivered to the worker (prefetch 20) while its first batch is held
gate.open("first")
gate.wait("held", 20, "the batch of ten held at its gate")
applied = len(wb.lines(msg="handler reloaded"))
swap = os.path.join(bdir, "h.lua.swp")
write(swap, BATCH % ("B", gate.url, bout))
os.rename(swap, os.path.join(bdir, "h.lua"))
wait_for(lambda: len(wb.lines(msg="handler reloaded")) > applied, 15, "version B published")
gate.open("held")
wait_for(lambda: b.depth(bout) >= 11, 20, "the batch of ten handled")
b.publish(bq, {}, message_id="b-after")
wait_for(lambda: b.depth(bout) >= 12, 20, "the message after it handled")
marks = dict((o["id"], o["mark"]) for o in (json.loads(body) for _, body in b.drain(bout)))
done_at = dict((m, idem_record(r, "batch", m).get("done_at")) for m in ten)
check(done_at[ten[0]] and all(done_at[m] == done_at[ten[0]] for m in ten),
      "the ten were one batch (one commit: %s)" % sorted(set(done_at.values()), key=str))
check_eq(dict((m, marks.get(m)) for m in ten if marks.get(m) != "A"), {},
         "the whole batch ran on the version it started with (A)")
check_eq(marks.get("b-after"), "B", "the next batch runs the new version")
check_eq(wb.stop(), 0, "the batch warren exits 0")
gate.close()
b.delete(bq, bq + ".dlq", bq + ".wait", bout,
         *["%s.retry.%s" % (bq, d) for d in ("1s", "5s", "30s", "2m")])
b.close()
finish()
