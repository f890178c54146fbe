"""Hostile handlers at the edge between Lua and C, through the real sidecar and
broker: every case costs its message, never the process, and the message
lands where promised, checked in the queues and Redis, not only in the log.

- recursion through C (string.gsub callbacks 1,200 deep, table.sort as its
  own comparator, coroutine.wrap 200,000 deep): DLQ as stack-overflow or
  out-of-memory, where the process died of SIGSEGV;
- a module-level cache filling the state, then a 500 KB body: DLQ as
  out-of-memory (the event could not be built), the state rebuilt, the next
  message handled; it used to end the process with exit(1);
- metamethods: init makes writes to ctx raise or loop; the messages are
  handled (ctx's fields are written raw); a module table whose __index loops
  makes `warren check` fail within its deadline and a hot reload be refused,
  the running version handling on;
- C functions past the deadline (the 40 KB trim pattern, a backtracking
  find), handler_timeout 100ms: timeouts within a second, retried through the
  delay queue, then dead-lettered; the connection (heartbeat 5s) stays up;
- memory copied out of the state: 60 x 8 MiB ctx.publish fails at
  max_publish_size, cjson.encode of 100 MiB of JSON fails as out-of-memory;
  the sidecar's peak resident size grows by far less than either;
- files: a FIFO and a link to /dev/zero named *.lua beside the handler (the
  version hash skipped them: startup used to hang), require of the FIFO fails
  with its reason.
"""
import json
import os
import signal
import subprocess
import time

from wrtest import (WARREN, ENV, Broker, Warren, check, check_eq, delete_queues, finish,
                    idem_record, prefix, redis_client, tempdir, wait_for, write)

p = prefix()
tmp = tempdir()
out = p + ".out"
r = redis_client()

HOSTILE = r'''
local cjson = require("cjson")
local M = {}
local cache = {}
local function expand(s)
  return (s:gsub("%b{}", function(m) return expand(m:sub(2, -2)) end))
end
local modes = {}
function modes.gsub() return expand(string.rep("{", 1200) .. string.rep("}", 1200)) end
function modes.sort_c()
  local t = {}
  t[1] = table.sort t[2] = t
  table.sort(t, table.sort)
end
function modes.wrap()
  local function f(n) if n == 0 then return 0 end return coroutine.wrap(f)(n - 1) + 1 end
  return f(200000)
end
function modes.fill()
  pcall(function()
    while true do cache[#cache + 1] = string.rep("x", 1000) .. #cache end
  end)
end
function modes.trim(event) return event.data.text:match("^%s*(.-)%s*$") end
function modes.find() return (string.rep("a", 200)):find(".-.-.-.-b") end
function modes.publish(event, ctx)
  local s = string.rep("x", 8 * 1024 * 1024)
  for i = 1, 60 do ctx.publish("", "OUTQ", s) end
end
function modes.encode()
  local s, t = string.rep("x", 1024 * 1024), {}
  for i = 1, 100 do t[i] = s end
  return cjson.encode(t)
end
function modes.require_fifo() return require("fifo_mod") end
function M.handle(event, ctx)
  local mode = event.data and event.data.mode
  if mode then return modes[mode](event, ctx) end
  ctx.publish("", "OUTQ", { id = event.id, sub = ctx.subscription, v = "one" })
end
return M
'''.replace("OUTQ", out)

META_RAISE = r'''
return {
  init = function(ctx)
    setmetatable(ctx, { __newindex = function(_, k) error("no writes to ctx: " .. k) end })
  end,
  handle = function(event, ctx)
    ctx.publish("", "OUTQ", { id = event.id, sub = ctx.subscription, attempt = ctx.attempt })
  end,
}
'''.replace("OUTQ", out)

META_LOOP = r'''
return {
  init = function(ctx)
    setmetatable(ctx, { __newindex = function() while true do end end })
  end,
  handle = function(event, ctx)
    ctx.publish("", "OUTQ", { id = event.id, sub = ctx.subscription, attempt = ctx.attempt })
  end,
}
'''.replace("OUTQ", out)

INDEX_LOOP = 'return setmetatable({}, { __index = function() while true do end end })\n'

hdir = os.path.join(tmp, "handlers")
os.makedirs(hdir)
write(os.path.join(hdir, "hostile.lua"), HOSTILE)
write(os.path.join(hdir, "meta_raise.lua"), META_RAISE)
write(os.path.join(hdir, "meta_loop.lua"), META_LOOP)
write(os.path.join(hdir, "reloadable.lua"), HOSTILE)
os.mkfifo(os.path.join(hdir, "fifo_mod.lua"))   # beside every handler: the version hash
os.symlink("/dev/zero", os.path.join(hdir, "zero.lua"))

NO_BREAKER = {"enabled": False}  # these fail on purpose: the breaker would stop consuming
subs = [
    {"name": "hostile", "queue": p + ".hostile", "handler": "handlers/hostile.lua",
     "handler_timeout": "100ms", "retry": {"max_attempts": 1}, "breaker": NO_BREAKER},
    {"name": "retrying", "queue": p + ".retrying", "handler": "handlers/hostile.lua",
     "handler_timeout": "100ms", "retry": {"max_attempts": 2, "delays": ["500ms"]},
     "breaker": NO_BREAKER},
    {"name": "memory", "queue": p + ".memory", "handler": "handlers/hostile.lua",
     "handler_timeout": "20s", "retry": {"max_attempts": 1}, "breaker": NO_BREAKER},
    {"name": "metaraise", "queue": p + ".metaraise", "handler": "handlers/meta_raise.lua"},
    {"name": "metaloop", "queue": p + ".metaloop", "handler": "handlers/meta_loop.lua",
     "handler_timeout": "500ms"},
    {"name": "reloadable", "queue": p + ".reloadable", "handler": "handlers/reloadable.lua"},
]
queues = [s["queue"] for s in subs]
all_queues = [out] + [q + sfx for q in queues for sfx in ("", ".dlq", ".wait", ".retry.500ms",
                                                           ".retry.1s", ".retry.5s", ".retry.30s",
                                                           ".retry.2m")]

b = Broker()
b.declare(out)
w = Warren(tmp, subs)
t_start = time.monotonic()
w.start()
check(w.wait_consuming(len(subs), timeout=40),
      "started and consuming with a FIFO and /dev/zero named *.lua beside the handlers")
print("  startup took %.1fs" % (time.monotonic() - t_start), flush=True)


def peak_rss_kib():
    with open("/proc/%d/status" % w.proc.pid) as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def outs():
    """Drain the out queue: {id: body}."""
    return {json.loads(body)["id"]: json.loads(body) for _, body in b.drain(out)}


def dead(queue, mid, timeout=30):
    """Wait for MID in QUEUE's DLQ; returns its headers ({} if it never came)."""
    found = {}

    def look():
        for props, _ in b.drain(queue + ".dlq"):
            found[props.message_id] = props.headers or {}
        return mid in found
    wait_for(look, timeout, "%s in %s.dlq" % (mid, queue), interval=0.2)
    return found.get(mid, {})


def outcome_line(sub, mid):
    lines = [l for l in w.lines(subscription=sub, message_id=mid) if "duration_ms" in l]
    return lines[-1] if lines else {}


def alive_and_handling(queue, mid):
    """A normal message after a hostile one: handled by the same process."""
    b.publish(queue, {}, message_id=mid)
    got = wait_for(lambda: mid in seen or seen.update(outs()) or mid in seen, 30,
                   "%s handled" % mid)
    check(bool(got) and w.alive(), "%s: the sidecar is up and handles the next message" % mid)


seen = {}
hq = p + ".hostile"
rss0 = peak_rss_kib()

# ---- recursion through C -------------------------------------------------------------
# (coroutine.wrap adds a position to the error at each of the ~25,000 levels on
# the way out: the message outgrows the state; that takes longer than 100 ms)
for sub, mode, reason, text in (("hostile", "gsub", "stack-overflow", "C stack overflow"),
                                ("hostile", "sort_c", "stack-overflow", "C stack overflow"),
                                ("memory", "wrap", "out-of-memory", "not enough memory")):
    mid, q = "c-" + mode, p + "." + sub
    b.publish(q, {"mode": mode}, message_id=mid)
    h = dead(q, mid)
    check_eq(h.get("x-warren-reason"), reason, "%s: dead-lettered as %s" % (mode, reason))
    check(text in h.get("x-warren-error", ""), "%s: the error says %r: %r"
          % (mode, text, h.get("x-warren-error")))
    check_eq(idem_record(r, sub, mid).get("outcome"), "dead-lettered",
             "%s: the record says dead-lettered" % mode)
    alive_and_handling(q, "after-" + mode)

# ---- C functions past the deadline -----------------------------------------------------
text = "a" + " " * 40000 + "b"
for mode in ("trim", "find"):
    mid = "t-" + mode
    t0 = time.monotonic()
    b.publish(hq, {"mode": mode, "text": text}, message_id=mid)
    h = dead(hq, mid)
    took = time.monotonic() - t0
    check_eq(h.get("x-warren-reason"), "timeout", "%s: a timeout" % mode)
    check("handler timed out after 100 ms" in h.get("x-warren-error", ""),
          "%s: the error names the deadline: %r" % (mode, h.get("x-warren-error")))
    line = outcome_line("hostile", mid)
    check(0 < line.get("duration_ms", 0) < 1100,
          "%s: the handler was stopped within the deadline plus a second (%.0f ms)"
          % (mode, line.get("duration_ms", 0)))
    check(took < 10, "%s: in the DLQ %.1fs after it was sent" % (mode, took))
    alive_and_handling(hq, "after-" + mode)

# the same timeout with a retry left: through the delay queue, then the DLQ
rq = p + ".retrying"
b.publish(rq, {"mode": "trim", "text": text}, message_id="t-retry")
h = dead(rq, "t-retry", timeout=40)
check_eq(h.get("x-warren-attempt"), 2, "the timed-out message was retried once, then dead-lettered")
check_eq(h.get("x-warren-reason"), "timeout", "... as a timeout")
check_eq(len(h.get("x-warren-errors", [])), 2, "... with both errors")
check_eq(len(w.lines(subscription="retrying", message_id="t-retry",
                     msg="message scheduled for retry")), 1, "one retry was scheduled")
alive_and_handling(rq, "after-retry")

# ---- memory copied out of the state --------------------------------------------------------
for mode, reason, text in (("publish", "handler-error", "exceed max_publish_size (16777216 bytes)"),
                           ("encode", "out-of-memory", "not enough memory")):
    mid = "m-" + mode
    b.publish(p + ".memory", {"mode": mode}, message_id=mid)
    h = dead(p + ".memory", mid, timeout=60)
    check_eq(h.get("x-warren-reason"), reason, "%s: dead-lettered as %s" % (mode, reason))
    check(text in h.get("x-warren-error", ""), "%s: the error says %r: %r"
          % (mode, text, h.get("x-warren-error")))
    alive_and_handling(p + ".memory", "after-" + mode)
grew = (peak_rss_kib() - rss0) / 1024
print("  peak resident size grew by %.0f MiB" % grew, flush=True)
check(grew < 300, "the peak resident size grew by %.0f MiB (480 MiB of publishes, 100 MiB of "
      "JSON asked for)" % grew)
check_eq(b.depth(out), 0, "nothing of the failed publishes went out")

# ---- a state full of the handler's own cache, then a body that does not fit -----------------
mq = p + ".memory"
b.publish(mq, {"mode": "fill"}, message_id="m-fill")
wait_for(lambda: outcome_line("memory", "m-fill"), 60, "the fill handled")
check_eq(outcome_line("memory", "m-fill").get("outcome"), "ok",
         "the fill is handled (the handler caught its own out-of-memory)")
b.publish(mq, "x" * 500000, message_id="m-body", content_type="text/plain")
h = dead(mq, "m-body")
check_eq(h.get("x-warren-reason"), "out-of-memory", "the 500 KB body: out-of-memory")
check_eq(h.get("x-warren-error"), "not enough memory: the state's memory limit was reached "
         "before the handler ran (building the event)", "the error says where")
alive_and_handling(mq, "after-body")
check([l for l in w.lines() if "memory#0 rebuilt after it exceeded its memory limit"
       in l.get("msg", "")], "the state was rebuilt")

# ---- metamethods on ctx ----------------------------------------------------------------------
for sub in ("metaraise", "metaloop"):
    mid = "mm-" + sub
    b.publish(p + "." + sub, {}, message_id=mid)
    wait_for(lambda: mid in seen or seen.update(outs()) or mid in seen, 30, "%s handled" % mid)
    check_eq(seen.get(mid, {}).get("attempt"), 1, "%s: handled at once, ctx.attempt set" % sub)
    check_eq(idem_record(r, sub, mid).get("outcome"), "ok", "%s: the record says ok" % sub)

# ---- files -------------------------------------------------------------------------------------
b.publish(hq, {"mode": "require_fifo"}, message_id="f-require")
h = dead(hq, "f-require")
check_eq(h.get("x-warren-reason"), "handler-error", "require of a FIFO: a handler error")
check(h.get("x-warren-error", "").endswith(
    "%s/fifo_mod.lua: cannot load module: not a regular file" % hdir),
    "require of a FIFO says why: %r" % h.get("x-warren-error"))

# ---- a module table whose __index loops: check, then a hot reload ------------------------------
bad = os.path.join(tmp, "bad")
os.makedirs(bad)
write(os.path.join(bad, "index_loop.lua"), INDEX_LOOP)
write(os.path.join(bad, "check.yaml"),
      "amqp:\n  url: amqp://127.0.0.1:1/\nredis:\n  url: redis://127.0.0.1:1/0\n"
      "subscriptions:\n  - name: x\n    queue: x\n    handler: index_loop.lua\n"
      "    handler_timeout: 300ms\n")
t0 = time.monotonic()
try:
    c = subprocess.run([WARREN, "check", "-c", os.path.join(bad, "check.yaml")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    text, rc = c.stdout.decode("utf-8", "replace"), c.returncode
except subprocess.TimeoutExpired:
    text, rc = "(still running after 30 s)", None
check_eq(rc, 1, "warren check of a module whose __index loops fails")
check("handler timed out after 300 ms" in text, "... naming the deadline: %r" % text.strip())
check(time.monotonic() - t0 < 10, "... in %.1fs" % (time.monotonic() - t0))

write(os.path.join(hdir, "reloadable.lua"), INDEX_LOOP)
w.proc.send_signal(signal.SIGHUP)
wait_for(lambda: w.lines(msg="handler reload refused", subscription="reloadable"), 30,
         "the reload refused")
refused = w.lines(msg="handler reload refused", subscription="reloadable")
check(bool(refused) and "handler timed out after 5000 ms" in refused[-1].get("error", ""),
      "the reload was refused at the deadline: %r" % (refused[-1] if refused else None))
b.publish(p + ".reloadable", {}, message_id="r-after")
wait_for(lambda: "r-after" in seen or seen.update(outs()) or "r-after" in seen, 30,
         "r-after handled")
check_eq(seen.get("r-after", {}).get("v"), "one", "the running version handles on")

# ---- the process lived through all of it ------------------------------------------------------
check(w.alive(), "the sidecar is still up")
check(not w.lines(msg="Lua panic: an error outside any protected call; the process exits"),
      "no Lua panic")
lost = [l for l in w.lines() if l.get("msg", "").startswith("broker connection lost")]
check_eq(lost, [], "no AMQP connection was lost (heartbeats kept flowing)")
check_eq(w.stop(), 0, "exit 0")
for q in queues:
    check_eq(b.depth(q), 0, "%s empty" % q)
delete_queues(all_queues)
b.close()
finish()
