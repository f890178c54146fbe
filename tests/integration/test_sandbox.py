"""In a running sidecar: sandbox escape attempts (each forbidden function,
string.dump + load, setfenv tricks, require "ffi", unlocking globals) fail
with a clear error that lands in the DLQ; a handler that loops forever is
stopped by its timeout, one that eats memory by the state's limit; a
non-string error is reported clearly; and the sidecar stays up and keeps
handling messages."""
import json
import os

from wrtest import Broker, Warren, check, check_eq, finish, prefix, tempdir, wait_for, write

p = prefix()
tmp = tempdir()
queue, out = p + ".in", p + ".out"
write(os.path.join(tmp, "evil.lua"), r'''
local M = {}
local probes = {
  os_execute = function() return os.execute("touch /tmp/pwned") end,
  io_open = function() return io.open("/etc/passwd") end,
  ffi = function() return require("ffi") end,
  debug = function() return debug.getinfo(1) end,
  loadlib = function() return package.loadlib("libc.so.6", "system") end,
  dump_load = function() return load(string.dump(function() end)) end,
  dump_meta = function() return (""):dump() end,
  bytecode = function() local f, err = loadstring("\27LJ\2") if not f then error(err) end end,
  setfenv = function() return setfenv(1, {}) end,
  getfenv = function() return getfenv(0) end,
  unlock = function() getmetatable(_G).__newindex = nil end,
  rawset = function() rawset(_G, "x", 1) end,
  string_hijack = function()
    getmetatable("").__index.match = function() return true end
    return require("../../../etc/hostname\0")
  end,
  global = function() leaked = true end,
  spin = function() while true do end end,
  hog = function() local t = {} while true do t[#t + 1] = string.rep("x", 65536) .. #t end end,
  table_error = function() error({ code = 42 }) end,
  yield = function() coroutine.yield("out") end,
}
function M.handle(event, ctx)
  local probe = probes[event.data.probe]
  if probe then probe() end
  ctx.publish("", "%s", { id = event.id })
end
return M
''' % out)

b = Broker()
b.declare(out)
b.declare(queue)
# the hog needs about 0.3 s of CPU to fill its 64 MiB, and the deadline holds
# (it is checked at every call): leave it time to run out of memory first
w = Warren(tmp, [{"name": "evil", "queue": queue, "handler": "evil.lua", "handler_timeout": "3s",
                  "retry": {"max_attempts": 1},
                  # every probe fails on purpose: the breaker would (rightly) stop consuming
                  "breaker": {"enabled": False}}]).start()
check(w.wait_consuming(1), "consuming")
expect = {
    "os_execute": "attempt to call field 'execute' (a nil value)",
    "io_open": "attempt to read undeclared global 'io'",
    "ffi": "module 'ffi' not found",
    "debug": "attempt to read undeclared global 'debug'",
    "loadlib": "attempt to read undeclared global 'package'",
    "dump_load": "attempt to call field 'dump' (a nil value)",
    "dump_meta": "attempt to call method 'dump' (a nil value)",
    "bytecode": "precompiled bytecode is not allowed in handlers",
    "setfenv": "attempt to read undeclared global 'setfenv'",
    "getfenv": "attempt to read undeclared global 'getfenv'",
    "unlock": "attempt to index a boolean value",
    "rawset": "attempt to create global 'x'",
    "string_hijack": "attempt to index a boolean value",
    "global": "attempt to create global 'leaked'",
    "spin": "handler timed out after 3000 ms",
    "hog": "not enough memory",
    "table_error": "error object is a table, not a string",
    "yield": "attempt to yield across C-call boundary",
}
for name in expect:
    b.publish(queue, {"probe": name}, message_id="probe-" + name)
b.publish(queue, {"probe": "none"}, message_id="after")
wait_for(lambda: b.depth(queue + ".dlq") >= len(expect) and b.depth(out) >= 1, 60,
         "every probe dead-lettered and the next message handled")
check(w.alive(), "the sidecar is still up")
dlq = {props.message_id: props.headers for props, _ in b.drain(queue + ".dlq")}
for name, text in expect.items():
    err = dlq.get("probe-" + name, {}).get("x-warren-error", "")
    check(text in err, "%s fails clearly: %r" % (name, err))
check_eq(dlq.get("probe-spin", {}).get("x-warren-error-class"), "timeout", "the loop is a timeout")
check_eq(dlq.get("probe-hog", {}).get("x-warren-reason"), "out-of-memory", "the hog is out of memory")
check(not os.path.exists("/tmp/pwned"), "nothing escaped")
outs = [json.loads(body)["id"] for _, body in b.drain(out)]
check_eq(outs, ["after"], "a normal message after them is handled")
check(w.lines(msg="Lua state of warren evil#0 rebuilt after it exceeded its memory limit"),
      "the state was rebuilt after the memory hog")
check_eq(w.stop(), 0, "exit 0")
b.delete(queue, queue + ".dlq", queue + ".wait", out)
b.close()
finish()
