-- sandbox: the environment handler code runs in (its globals), written in Lua
-- because it is mostly tables. Run once per Lua state, before any handler
-- code: by the sidecar (lua_rt.c, from the copy the build embeds as
-- wr_lua_sandbox, chunk name "=warren.sandbox") and by the busted kit
-- (warren.testing loads this very file), so both lock the same globals.
--
-- Receives the full globals G, the handlers directory, the cjson modules, a
-- loader for source files (read_source(path) -> text, or nil, why and true
-- when the file does not exist) and the largest source it may load; returns
-- the handler's environment.
local G, dir, cjson, cjson_safe, read_source, max_source = ...

-- What handler code may use of the globals, as they are.
local ALLOWED = {'assert','error','ipairs','next','pairs','pcall','select',
  'tonumber','tostring','type','unpack','xpcall','rawequal','rawget','rawset',
  'setmetatable','getmetatable','_VERSION'}

local function copy(t, drop)
  local c = {}
  for k, v in G.pairs(t) do if not (drop and drop[k]) then c[k] = v end end
  return c
end
G.string.dump = nil -- also reachable through the string metatable
-- the string metatable's __index is the real string table, shared by every
-- string: hide the metatable, so no handler can rewrite string methods
G.debug.getmetatable('').__metatable = false
local match, gsub = G.string.match, G.string.gsub
local env = {}
for _, k in G.ipairs(ALLOWED) do env[k] = G[k] end
-- xpcall's message handler runs inside the hook that raised a timeout, where
-- hooks cannot fire: a handler that loops would never be stopped. Run it
-- after the unwind (without debug it could see nothing more).
local pcall = G.pcall
local function xpcall_done(h, ok, ...)
  if ok then return true, ... end
  local _, r = pcall(h, (...))
  return false, r
end
env.xpcall = function(f, h, ...) return xpcall_done(h, pcall(f, ...)) end
-- rawset would write past the global lock: refuse it on the globals
local rawset = G.rawset
env.rawset = function(t, k, v)
  if t == env then
    G.error("attempt to create global '" .. G.tostring(k) ..
      "' (handler globals are locked: declare it local)", 2)
  end
  return rawset(t, k, v)
end
env.string = copy(G.string)
env.table = copy(G.table)
env.math = copy(G.math)
env.bit = copy(G.bit)
env.coroutine = copy(G.coroutine)
env.os = { time = G.os.time, clock = G.os.clock, date = G.os.date,
           difftime = G.os.difftime }
local loadstring, setfenv, sub = G.loadstring, G.setfenv, G.string.sub
local function load_text(src, name)
  if G.type(src) ~= 'string' then
    return nil, 'load: only source text is accepted (got ' .. G.type(src) .. ')'
  end
  if sub(src, 1, 1) == '\27' then
    return nil, 'load: precompiled bytecode is not allowed in handlers'
  end
  if #src > max_source then
    return nil, 'load: source text over ' .. max_source .. ' bytes'
  end
  local f, err = loadstring(src, name)
  if not f then return nil, err end
  return setfenv(f, env)
end
env.load = load_text
env.loadstring = load_text
local loaded = { cjson = cjson, ['cjson.safe'] = cjson_safe }
function env.require(name)
  if G.type(name) ~= 'string' then G.error('require: module name must be a string', 2) end
  if loaded[name] ~= nil then return loaded[name] end
  if not match(name, '^[%w_]+[%w_.]*$') then
    G.error("require: bad module name '" .. name .. "'", 2)
  end
  local path = dir .. '/' .. gsub(name, '%.', '/') .. '.lua'
  local src, rerr, missing = read_source(path)
  if missing then
    G.error("module '" .. name .. "' not found: no " .. path ..
      ' (handlers may require Lua modules from their directory, and cjson)', 2)
  end
  if not src then G.error(rerr, 2) end
  local f, err = load_text(src, '@' .. path)
  if not f then G.error(err, 2) end
  local m = f(name)
  if m == nil then m = true end
  loaded[name] = m
  return m
end
env._G = env
G.setmetatable(env, {
  __metatable = false,
  __index = function(_, k)
    G.error("attempt to read undeclared global '" .. G.tostring(k) .. "'", 2)
  end,
  __newindex = function(_, k)
    G.error("attempt to create global '" .. G.tostring(k) ..
      "' (handler globals are locked: declare it local)", 2)
  end,
})
return env
