-- commit_model.lua: ctx.store's commit without a Redis server.
--
-- The sidecar applies a message's ctx.store writes with the commit script
-- (sidecar/scripts/finish.lua, record.lua prepended) on Redis, and that
-- script decides whether they may apply: a write of another type than the
-- key holds, a counter that is not an integer or would overflow, and a read
-- that another message changed since the handler made it (a conflict). The
-- two places that have no Redis, `warren exec` (which embeds this file) and
-- the busted kit (lua/warren/testing.lua, which loads it), run THE SAME
-- script here, over an in-memory model of the Redis commands it calls, so
-- they reach the sidecar's decision in the sidecar's words.
--
-- The model holds no rule of warren's: it is Redis's own behaviour for those
-- commands (types, WRONGTYPE, 64-bit integers, a hash or set deleted when
-- emptied, expiries); tests/scripts/test_scripts.py runs the same commits
-- through it and through a real redis-server and compares the results. The
-- arguments are laid out as sidecar/src/redis/idem.c lays out a batch of one
-- message (the same "sum" keys and the same shape flag), so the script takes
-- the path it takes in the sidecar.
--
-- Needs LuaJIT (64-bit integers). Returns a table:
--
--   M.redis(store)            the model's `redis` object (call, pcall) over STORE
--   M.commit(script, store, msg)
--                             run the commit script for one message; returns
--                             "applied", or "refused"/"conflict"/"failed" and why
--
-- STORE: { db = {}, exp = {}, now = function() return seconds end, prefix = "" }
--   db[k]  = { kind = "string", v = "text" } | { kind = "hash", v = { f = "v" } }
--            | { kind = "set", v = { member = true } }
--   exp[k] = when it expires, in seconds (nil: never)
--   k is the key without PREFIX (ctx.store's own key); the script sees
--   PREFIX .. k, as in Redis. Keys outside the prefix (the idempotency record)
--   live in a table of their own and are forgotten after the commit.
-- MSG: { writes = { { op =, key =, a =, b =, num = }, ... },   storebuf.h's wr_sb_write
--        guards = { { cmd =, key =, arg =, items = { ... } }, ... } }  wr_sb_guard
--   (keys without the prefix; numbers as Lua numbers)

local M = {}

local type, pairs, tostring, tonumber, error = type, pairs, tostring, tonumber, error
local floor, fmt, byte = math.floor, string.format, string.byte

local WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
local NOT_INT = "ERR value is not an integer or out of range"
local HASH_NOT_INT = "ERR hash value is not an integer"
local OVERFLOW = "ERR increment or decrement would overflow"
local INT64_MAX = 9223372036854775807LL
local INT64_MIN = -9223372036854775807LL - 1

-- Redis's string2ll: "0", or an optional '-' and a first digit 1-9 then digits,
-- at most 20 characters, in int64 range. Returns an int64, or nil.
local function ll_of(s)
  if type(s) ~= "string" or #s == 0 or #s > 20 then
    return nil
  end
  if s == "0" then
    return 0LL
  end
  local neg = byte(s, 1) == 45
  local first = neg and 2 or 1
  local d = byte(s, first)
  if not d or d < 49 or d > 57 then
    return nil
  end
  local v = 0LL -- accumulated negatively: -2^63 has no positive twin
  for i = first, #s do
    d = byte(s, i)
    if d < 48 or d > 57 then
      return nil
    end
    if v < (INT64_MIN + (d - 48)) / 10 then
      return nil
    end
    v = v * 10 - (d - 48)
  end
  if neg then
    return v
  end
  if v == INT64_MIN then
    return nil
  end
  return -v
end

local function ll_text(v)
  return (tostring(v):gsub("[UL]+$", ""))
end

-- A + B (int64s), or nil when it would overflow.
local function ll_add(a, b)
  if (b > 0 and a > INT64_MAX - b) or (b < 0 and a < INT64_MIN - b) then
    return nil
  end
  return a + b
end

-- An argument as Redis reads an integer argument.
local function arg_ll(x)
  local v = ll_of(tostring(x))
  if v == nil then
    error(NOT_INT, 0)
  end
  return v
end

-- The keyspace of the model: the store's data (DB, EXP: keys under PREFIX,
-- without it) and, for any other key a script names, tables of its own
-- (store.other). Expiry is lazy, as in Redis: an expired key is deleted when
-- it is read.
local function keyspace(store)
  local db, exp, prefix = store.db, store.exp, store.prefix or ""
  local other, other_exp = {}, {}
  store.other = other

  -- where key K lives: its table, expiry table and name there
  local function slot(k)
    if prefix ~= "" and k:sub(1, #prefix) == prefix then
      return db, exp, k:sub(#prefix + 1)
    elseif prefix == "" then
      return db, exp, k
    end
    return other, other_exp, k
  end
  local function now_ms()
    return floor(store.now() * 1000)
  end
  -- the live entry of K (an expired one is deleted on access, as Redis does)
  local function get(k)
    local t, e, n = slot(k)
    local x = e[n]
    if x ~= nil and x * 1000 <= now_ms() then
      t[n], e[n] = nil, nil
    end
    return t[n]
  end
  local function put(k, entry, keep_ttl)
    local t, e, n = slot(k)
    t[n] = entry
    if not keep_ttl then
      e[n] = nil
    end
  end
  local function of_kind(k, kind, create)
    local entry = get(k)
    if entry == nil then
      if not create then
        return nil
      end
      entry = { kind = kind, v = kind == "string" and "" or {} }
      local t, e, n = slot(k)
      t[n], e[n] = entry, nil
      return entry, true
    end
    if entry.kind ~= kind then
      error(WRONGTYPE, 0)
    end
    return entry
  end
  local function drop_if_empty(k, entry)
    if next(entry.v) == nil then
      put(k, nil)
    end
  end
  return { slot = slot, now_ms = now_ms, get = get, put = put, of_kind = of_kind,
           drop_if_empty = drop_if_empty }
end

-- Redis's string and key commands over the keyspace KS, into C.
local function string_commands(C, ks)
  local slot, now_ms, get, put, of_kind = ks.slot, ks.now_ms, ks.get, ks.put, ks.of_kind
  function C.TIME()
    local ms = now_ms()
    return { tostring(floor(ms / 1000)), tostring((ms % 1000) * 1000) }
  end
  function C.GET(k)
    local entry = of_kind(k, "string")
    return entry and entry.v or false
  end
  function C.SET(k, v, ...)
    local opts, i = { ... }, 1
    local nx, px, keep = false, nil, false
    while opts[i] do
      local o = opts[i]:upper()
      if o == "NX" then
        nx = true
      elseif o == "KEEPTTL" then
        keep = true
      elseif o == "PX" then
        px = tonumber(arg_ll(opts[i + 1]))
        i = i + 1
      else
        error("ERR syntax error", 0)
      end
      i = i + 1
    end
    if nx and get(k) ~= nil then
      return false
    end
    put(k, { kind = "string", v = tostring(v) }, keep)
    if px then
      local _, e, n = slot(k)
      e[n] = (now_ms() + px) / 1000
    end
    return { ok = "OK" }
  end
  function C.DEL(k)
    local had = get(k) ~= nil
    put(k, nil)
    return had and 1 or 0
  end
  function C.EXISTS(k)
    return get(k) ~= nil and 1 or 0
  end
  function C.TYPE(k)
    local entry = get(k)
    return { ok = entry and entry.kind or "none" }
  end
  function C.PEXPIRE(k, ms)
    if get(k) == nil then
      return 0
    end
    local _, e, n = slot(k)
    e[n] = (now_ms() + tonumber(arg_ll(ms))) / 1000
    return 1
  end
  function C.INCRBY(k, by)
    by = arg_ll(by)
    local entry = of_kind(k, "string")
    local cur = entry and ll_of(entry.v) or 0LL
    if cur == nil then
      error(NOT_INT, 0)
    end
    local v = ll_add(cur, by)
    if v == nil then
      error(OVERFLOW, 0)
    end
    if entry then
      entry.v = ll_text(v)
    else
      put(k, { kind = "string", v = ll_text(v) })
    end
    return tonumber(v)
  end
end

-- Redis's hash commands over the keyspace KS, into C.
local function hash_commands(C, ks)
  local of_kind, drop_if_empty = ks.of_kind, ks.drop_if_empty
  function C.HGET(k, f)
    local entry = of_kind(k, "hash")
    return entry and entry.v[f] or false
  end
  function C.HMGET(k, ...)
    local entry, out = of_kind(k, "hash"), {}
    for i, f in ipairs { ... } do
      out[i] = entry and entry.v[f] or false
    end
    return out
  end
  function C.HGETALL(k)
    local entry, out = of_kind(k, "hash"), {}
    for f, v in pairs(entry and entry.v or {}) do
      out[#out + 1] = f
      out[#out + 1] = v
    end
    return out
  end
  function C.HSET(k, f, v)
    local entry = of_kind(k, "hash", true)
    local new = entry.v[f] == nil
    entry.v[f] = tostring(v)
    return new and 1 or 0
  end
  function C.HDEL(k, f)
    local entry = of_kind(k, "hash")
    if not entry or entry.v[f] == nil then
      return 0
    end
    entry.v[f] = nil
    drop_if_empty(k, entry)
    return 1
  end
  function C.HINCRBY(k, f, by)
    by = arg_ll(by)
    local entry = of_kind(k, "hash")
    local cur = 0LL
    if entry and entry.v[f] ~= nil then
      cur = ll_of(entry.v[f])
      if cur == nil then
        error(HASH_NOT_INT, 0)
      end
    end
    local v = ll_add(cur, by)
    if v == nil then
      error(OVERFLOW, 0)
    end
    entry = entry or of_kind(k, "hash", true)
    entry.v[f] = ll_text(v)
    return tonumber(v)
  end
end

-- Redis's set commands over the keyspace KS, into C.
local function set_commands(C, ks)
  local of_kind, drop_if_empty = ks.of_kind, ks.drop_if_empty
  function C.SADD(k, m)
    local entry = of_kind(k, "set", true)
    local new = not entry.v[m]
    entry.v[m] = true
    return new and 1 or 0
  end
  function C.SREM(k, m)
    local entry = of_kind(k, "set")
    if not entry or not entry.v[m] then
      return 0
    end
    entry.v[m] = nil
    drop_if_empty(k, entry)
    return 1
  end
  function C.SMEMBERS(k)
    local entry, out = of_kind(k, "set"), {}
    for m in pairs(entry and entry.v or {}) do
      out[#out + 1] = m
    end
    return out
  end
  function C.SISMEMBER(k, m)
    local entry = of_kind(k, "set")
    return entry and entry.v[m] and 1 or 0
  end
end

function M.redis(store)
  local ks = keyspace(store)
  local C = {}
  string_commands(C, ks)
  hash_commands(C, ks)
  set_commands(C, ks)

  local redis = {}
  function redis.call(cmd, ...)
    local f = C[cmd:upper()]
    if not f then
      error("ERR unknown command '" .. cmd .. "' (not in warren's model of Redis)", 0)
    end
    return f(...)
  end
  function redis.pcall(cmd, ...)
    local ok, r = pcall(redis.call, cmd, ...)
    if ok then
      return r
    end
    return { err = r }
  end
  return redis
end

-- A whole number as idem.c writes it into ARGV.
local function num(n)
  return fmt("%d", n)
end

-- Is every increment of sum key K exactly representable in the script (a
-- double)? idem.c's sum_fits.
local LIM = 2 ^ 53
local function sum_fits(k)
  return k.incr_only and not k.guarded and k.total > -LIM and k.total < LIM and k.neg > -LIM
    and k.pos < LIM
end

-- KEYS and ARGV of the commit script for one message, as idem.c builds them
-- for a batch of one.
local function script_args(msg, record_key, token, prefix)
  local keys, index, info = { record_key }, {}, {}
  local function key_of(k)
    if not index[k] then
      keys[#keys + 1] = prefix .. k
      index[k] = #keys
      info[k] = { incr_only = true, guarded = false, total = 0, neg = 0, pos = 0 }
    end
    return info[k]
  end
  for _, w in ipairs(msg.writes) do
    local e = key_of(w.key)
    if w.op == "incrby" then
      e.total = e.total + w.num
      if w.num < 0 then e.neg = e.neg + w.num else e.pos = e.pos + w.num end
    else
      e.incr_only = false
    end
  end
  for _, g in ipairs(msg.guards) do
    key_of(g.key).guarded = true
  end
  local argv = { token, "0", "30000", "1" }
  local sums = {}
  for i = 2, #keys do
    local k = keys[i]:sub(#prefix + 1)
    if sum_fits(info[k]) then
      sums[#sums + 1] = { i, info[k] }
    end
  end
  argv[#argv + 1] = num(#sums)
  for _, s in ipairs(sums) do
    local e = s[2]
    argv[#argv + 1] = num(s[1])
    argv[#argv + 1] = num(e.total)
    argv[#argv + 1] = num(e.neg)
    argv[#argv + 1] = num(e.pos)
  end
  local plain, nsums, slots, shape = 0, 0, 0, "1"
  for _, g in ipairs(msg.guards) do
    slots = slots + 4 + #g.items
  end
  for j, w in ipairs(msg.writes) do
    if sum_fits(info[w.key]) then
      nsums = nsums + 1
    else
      plain = plain + 1
      for x = 1, j - 1 do
        local o = msg.writes[x]
        if o.key == w.key and not sum_fits(info[o.key]) then
          shape = "0"
        end
      end
    end
  end
  for _, v in ipairs { "done", "d|1|ok|0|", num(plain), num(slots), shape, num(nsums) } do
    argv[#argv + 1] = v
  end
  for _, g in ipairs(msg.guards) do
    argv[#argv + 1] = g.cmd
    argv[#argv + 1] = num(index[g.key])
    argv[#argv + 1] = g.arg or ""
    argv[#argv + 1] = num(#g.items)
    for _, it in ipairs(g.items) do
      argv[#argv + 1] = it
    end
  end
  for _, w in ipairs(msg.writes) do
    if not sum_fits(info[w.key]) then
      argv[#argv + 1] = w.op
      argv[#argv + 1] = num(index[w.key])
      if w.op == "incrby" or w.op == "expire" then
        argv[#argv + 1] = num(w.num)
        argv[#argv + 1] = ""
      elseif w.op == "set" or w.op == "hincrby" then
        argv[#argv + 1] = w.a
        argv[#argv + 1] = num(w.num or 0)
      else
        argv[#argv + 1] = w.a or ""
        argv[#argv + 1] = w.b or ""
      end
    end
  end
  for _, w in ipairs(msg.writes) do
    if sum_fits(info[w.key]) then
      argv[#argv + 1] = num(index[w.key])
      argv[#argv + 1] = num(w.num)
    end
  end
  return keys, argv
end

-- The globals a Redis script sees (the ones finish.lua uses).
local SCRIPT_ENV = {
  tonumber = tonumber, tostring = tostring, type = type, pairs = pairs, ipairs = ipairs,
  next = next, select = select, unpack = unpack, error = error, pcall = pcall,
  math = math, string = string, table = table,
}

--- Run the commit script SCRIPT (its source: record.lua then finish.lua, as
-- the sidecar loads it) for one message MSG over STORE (see the top of this
-- file). The message's idempotency record is made ours (processing) first, as
-- the claim left it. Returns "applied" (STORE now holds the writes), or
-- "refused" and why (a write Redis would refuse: the sidecar dead-letters the
-- message as store-refused), "conflict" and why (a guarded read no longer
-- holds: the sidecar runs the message again), "failed" and why (the script
-- raised). Nothing is applied unless "applied".
function M.commit(script, store, msg)
  local redis = M.redis(store)
  local token = "warren-offline"
  local record_key = "warren:offline:record"
  redis.call("SET", record_key, "p|1|" .. token .. "|" .. fmt("%d", store.now() * 1000 + 30000))
  local keys, argv = script_args(msg, record_key, token, store.prefix or "")
  local env = setmetatable({ redis = redis, KEYS = keys, ARGV = argv },
                           { __index = SCRIPT_ENV })
  local chunk, err = loadstring(script, "=finish.lua")
  if not chunk then
    return "failed", err
  end
  setfenv(chunk, env)
  local ok, out = pcall(chunk)
  store.other = nil
  if not ok then
    return "failed", tostring(out)
  end
  local r = out[1]
  if r == 1 then
    return "applied"
  elseif type(r) == "string" and r:sub(1, 9) == "conflict:" then
    return "conflict", r
  elseif type(r) == "string" then
    return "refused", r
  end
  return "failed", "the commit script did not find the record its own (" .. tostring(r) .. ")"
end

M._ll_of = ll_of -- for the specs
M._script_args = script_args -- for tests/scripts, which runs the same arguments on Redis

return M
