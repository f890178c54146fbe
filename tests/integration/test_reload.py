"""Hot reload under load: 20,000 messages flow while the handler is swapped
20 times: edits saved by rename (as editors do), Kubernetes ConfigMap-style
swaps of a `..data` symlink, SIGHUP, and 3 broken versions (a syntax error, an
init that fails, a module without handle). Every message is handled exactly
once by a fully loaded good version (the handler stamps its mark and version
into its output), broken versions are refused with file and error, and the
last good version is the one running at the end."""
import json
import os
import shutil
import signal
import threading
import time

from wrtest import Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write

TOTAL = 20000
p = prefix()
tmp = tempdir()
queue, out = p + ".in", p + ".out"
hdir = os.path.join(tmp, "handlers")
os.makedirs(hdir)

GOOD = r'''
local MARK = "%s"
local M = {}
function M.init(ctx) ctx.log.info("loaded " .. MARK) end
function M.handle(event, ctx)
  ctx.publish("", "%s", { id = event.id, mark = MARK, version = ctx.handler_version })
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

plan = []  # (kind, mark or broken name)
for n in range(1, 21):
    if n in (5, 11, 16):
        plan.append(("broken", ["syntax", "init", "nohandle"][(n // 5) - 1]))
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

refused = w.lines(msg="handler reload refused")
check_eq(len(refused), 3, "the three broken versions were refused")
errors = " | ".join(r.get("error", "") for r in refused)
check("handler.lua:3:" in errors and "unexpected symbol near 'then'" in errors,
      "the syntax error is named with its line")
check("init failed: " in errors and "no database connection" in errors, "the failed init is named")
check("the returned table has no function 'handle'" in errors, "the missing handle is named")
applied = w.lines(msg="handler reloaded")
check(len(applied) >= 15, "good versions were reloaded (%d)" % len(applied))

# the last good version runs now
b.publish(queue, {"n": -1}, message_id="probe")
wait_for(lambda: b.depth(out) >= 1, 30, "the probe handled")
probe = [json.loads(body) for _, body in b.drain(out)]
check_eq(probe[0]["mark"] if probe else None, last_good, "the last good version is running")

# a policy change in the config applies live; a restart-only change is named
cfg = open(w.config).read()
write(w.config, cfg.replace("    concurrency: 2\n", "    concurrency: 3\n    handler_timeout: 7s\n"))
wait_for(lambda: w.lines(msg="policy reloaded"), 15, "the policy reload")
pol = w.lines(msg="policy reloaded")
check(pol and pol[-1].get("handler_timeout_ms") == 7000, "the new handler timeout applies")
need = w.lines(msg="config change needs a restart; the running values stay")
check(need and "subscriptions[0].concurrency" in need[-1].get("keys", ""),
      "the concurrency change is logged as needing a restart")
check_eq(w.stop(), 0, "exit 0")
stopped = w.lines(msg="warren stopped")
check(stopped and stopped[-1].get("reloads_refused") == 3, "refusals counted")
b.delete(queue, queue + ".dlq", queue + ".wait", out,
         *["%s.retry.%s" % (queue, d) for d in ("1s", "5s", "30s", "2m")])
b.close()
finish()
