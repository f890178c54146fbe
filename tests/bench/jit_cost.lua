-- jit_cost.lua: what running handlers with LuaJIT's JIT compiler off costs.
--
-- warren runs every handler with the JIT off so that its timeout (a count
-- hook) fires in every loop: with the JIT on, hooks never fire inside
-- compiled loops and `while true do end` could not be stopped
-- (docs/architecture.md, "LuaJIT"; LuaJIT#723). This compares, in one go on this
-- machine, a typical handler (decode a JSON order, walk its items, encode an
-- event) and a loop-heavy pure-Lua function, with the JIT off and on.
--
--   luajit tests/bench/jit_cost.lua off ; luajit tests/bench/jit_cost.lua on
--
-- Measured here (2 shared cores, other load running): the typical handler
-- 0.97-0.98x of JIT-on speed (~730k calls/s), the loop-heavy code ~0.6x.
local cjson = require "cjson"
local body = '{"order_id":"o-1","customer_id":"c-7","items":[{"sku":"a","qty":2},{"sku":"b","qty":1}],"total":29.9}'
local function handle(ev)
  local d = cjson.decode(ev)
  local n = 0
  for _, it in ipairs(d.items) do n = n + it.qty end
  return cjson.encode({ order_id = d.order_id, qty = n, total = d.total })
end
local function run(label)
  local t = os.clock()
  for i = 1, 300000 do handle(body) end
  local dt = os.clock() - t
  print(string.format("%-8s %.0f calls/s", label, 300000 / dt))
end
local mode = arg[1]
if mode == "off" then jit.off() else jit.on() end
run("jit " .. mode)
-- a pure-Lua loop-heavy handler
local function loop()
  local s = 0
  for i = 1, 1000 do s = s + (i % 7) * 3 end
  return s
end
local t = os.clock()
for i = 1, 20000 do loop() end
print(string.format("%-8s %.0f loop-calls/s", "jit " .. mode, 20000 / (os.clock() - t)))
