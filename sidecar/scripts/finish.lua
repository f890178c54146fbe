-- finish.lua: finish the idempotency records of one batch, with their ctx.store
-- writes (idem.h, storebuf.h).
--
-- KEYS: the NREC records, then the ctx.store keys their writes and guarded
--       reads touch (each key a record uses is declared, so Redis Cluster can
--       check they share a slot)
-- ARGV[1] token      the finishing worker's owner token
-- ARGV[2] ttl_ms     how long a done record is kept (0: forever)
-- ARGV[3] lease_ms   extend: the new lease
-- ARGV[4] nrec
-- ARGV[5] nsum       how many "sum" keys (below)
-- then four per sum key: index of the key in KEYS, the sum of all increments the
--   batch's records make to it, the sum of the negative ones, the sum of the
--   positive ones (so that no subset of them can take the key past 64 bits)
-- then six per record:
--   op           done | release | unclaim | extend
--   value        done, release, unclaim: the record's new value (record.h), built by
--                the caller, which knows the starts its claim counted
--   nwrites      how many ctx.store writes it carries (done only)
--   guard_slots  how many ARGV slots its guards take
--   shape        "1": no key is written twice by the record (checked write by
--                write); "0": checked by playing its writes forward
--   nsums        how many of its increments are of "sum" keys (below)
-- then, record by record, its guards (command, index of its key in KEYS, field or
-- member, count, then COUNT items: what the handler's read saw), its writes
-- (four each, in order: name, index of its key in KEYS, two arguments: see
-- wr_sb_op in storebuf.h) and its increments of "sum" keys (two each: index of
-- the key in KEYS, increment). A "sum" key is one that every write of the batch
-- increments (incrby) and no read of the batch guards: it is checked once, and
-- its increments are applied as one INCRBY after the last record, less those
-- of the records that did not apply (nothing can observe the difference inside
-- one script run).
--
-- Returns one entry per record:
--   1            the token owned it and the op was applied (done: the done mark
--                and every write of the record, in one step)
--   0            the token did not own it: nothing changed, no write applied
--   "conflict: ..."  a guarded read no longer holds (another message changed what
--                this one read): nothing applied, the record unclaimed, so the
--                message runs again from fresh state
--   any other string: the writes cannot apply (a key of another type, a counter
--                that is not an integer or would overflow): nothing applied and
--                the record left as it was (processing, ours) for the caller to
--                dead-letter the message and then mark it done
-- Every write of a record is checked before the first one is applied, so a
-- record's writes are applied all or none (a script is not rolled back).
local token, ttl, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local nrec = tonumber(ARGV[4])
local now = now_ms()
local LIMIT = 9.2e18

-- Redis's own integer grammar (string2ll): no '+', no leading zeros, no spaces,
-- at most 20 characters, within a signed 64-bit range (LIMIT is a little inside
-- it: Lua numbers are doubles). The same grammar as storebuf.c and the test kit.
-- Returns the number, or false.
local function int_of(v)
  if type(v) ~= 'string' or #v == 0 or #v > 20 then return false end
  if v ~= '0' and not string.match(v, '^%-?[1-9]%d*$') then return false end
  local n = tonumber(v)
  if n == nil or math.abs(n) >= LIMIT then return false end
  return n
end

-- The type each write needs its key to hold (or the key to be absent).
local FAMILY = {incrby = 'string', hset = 'hash', hdel = 'hash',
                hincrby = 'hash', sadd = 'set', srem = 'set'}

-- What this run knows of each store key, kept true as records apply their
-- writes, so a key shared by many messages of the batch (a stock counter) is
-- read once per batch, not once per write:
local kind = {}   -- exact type: 'string', 'hash', 'set', 'none'; nil: not known
local fits = {}   -- the type a read found the key compatible with (that type or
                  -- absent); nil: not known
local num = {}    -- string keys: the integer value (0 when absent, the pending sums
                  -- included), false when not an integer; nil: not known
local fnum = {}   -- hash keys: field -> integer value (0 when absent) or false
local sums = {}    -- "sum" keys: {key, total}
local unfit = {}   -- "sum" keys that cannot take the increments: why

-- Nil when K can take a write of family WANT, else the type it holds.
local function mismatch(k, want)
  local t = kind[k]
  if t == nil then
    if fits[k] == want then return nil end
    t = redis.call('TYPE', k).ok
    kind[k] = t
  end
  if t == 'none' or t == want then return nil end
  return t
end

-- The integer in string key K (0 when absent), or false; read once.
local function counter(k)
  local n = num[k]
  if n == nil then
    if kind[k] == 'none' then
      n = 0
    else
      local v = redis.call('GET', k)
      if v then n = int_of(v) else n = 0 end
      fits[k] = 'string'
    end
    num[k] = n
  end
  return n
end

-- The integer in field F of hash K (0 when absent), or false; read once.
local function field_counter(k, f)
  local fk = fnum[k]
  if fk == nil then
    fk = {}
    fnum[k] = fk
  end
  local n = fk[f]
  if n == nil then
    if kind[k] == 'none' then
      n = 0
    else
      local v = redis.call('HGET', k, f)
      if v then n = int_of(v) else n = 0 end
      fits[k] = 'hash'
    end
    fk[f] = n
  end
  return n
end

local function refuse_type(op, k, have)
  return 'ctx.store.' .. op .. ': key ' .. k .. ' holds a ' .. have .. ' in Redis'
end

local function refuse_counter(op, k, f)
  if f then
    return 'ctx.store.' .. op .. ': field ' .. f .. ' of ' .. k ..
           ' is not an integer or would overflow'
  end
  return 'ctx.store.incrby: the value of ' .. k .. ' is not an integer or would overflow'
end

-- N + BY, or false when N is not an integer or the sum would overflow.
local function add(n, by)
  if not n then return false end
  local s = n + tonumber(by)
  if math.abs(s) >= LIMIT then return false end
  return s
end

-- A record whose writes touch each key once: every write is checked on its
-- own against what the run knows. Returns nil, or why the writes are refused.
local function check_each(w, nw)
  for j = 0, nw - 1 do
    local b = w + 4 * j
    local op = ARGV[b]
    if FAMILY[op] then
      local k = KEYS[tonumber(ARGV[b + 1])]
      local have = mismatch(k, FAMILY[op])
      if have then return refuse_type(op, k, have) end
      if op == 'incrby' then
        if not add(counter(k), ARGV[b + 2]) then return refuse_counter('incrby', k) end
      elseif op == 'hincrby' then
        local f = ARGV[b + 2]
        if not add(field_counter(k, f), ARGV[b + 3]) then return refuse_counter(op, k, f) end
      end
    end
  end
  return nil
end

-- Any other record: its writes are played forward on an overlay, so a later
-- write sees what the earlier ones did to the same key. Returns nil, or why
-- the writes are refused.
local function check_forward(w, nw)
  local ok, on, of, cleared = {}, {}, {}, {}
  for j = 0, nw - 1 do
    local b = w + 4 * j
    local op, k, x, y = ARGV[b], KEYS[tonumber(ARGV[b + 1])], ARGV[b + 2], ARGV[b + 3]
    local want = FAMILY[op]
    if want then
      local t = ok[k]
      local have
      if t ~= nil then
        if t ~= 'none' and t ~= want then have = t end
      else
        have = mismatch(k, want)
      end
      if have then return refuse_type(op, k, have) end
      if op == 'incrby' then
        local n = on[k]
        if n == nil then n = counter(k) end
        n = add(n, x)
        if not n then return refuse_counter('incrby', k) end
        on[k] = n
      elseif op == 'hincrby' or op == 'hset' or op == 'hdel' then
        of[k] = of[k] or {}
        local n
        if op == 'hincrby' then
          n = of[k][x]
          if n == nil then n = cleared[k] and 0 or field_counter(k, x) end
          n = add(n, y)
          if not n then return refuse_counter(op, k, x) end
        elseif op == 'hset' then
          n = int_of(y)
        else
          n = 0
        end
        of[k][x] = n
      end
      -- hdel and srem may empty (and so delete) the key: its type stays as it was
      if op ~= 'hdel' and op ~= 'srem' then ok[k] = want end
    elseif op == 'set' then
      ok[k], on[k], of[k], cleared[k] = 'string', int_of(x), nil, true
    elseif op == 'del' then
      ok[k], on[k], of[k], cleared[k] = 'none', 0, nil, true
    end
  end
  return nil
end

-- Apply a record's writes (checked) and keep what the run knows true.
local function apply(w, nw)
  for j = 0, nw - 1 do
    local b = w + 4 * j
    local op, k, x, y = ARGV[b], KEYS[tonumber(ARGV[b + 1])], ARGV[b + 2], ARGV[b + 3]
    if op == 'incrby' then
      redis.call('INCRBY', k, x)
      num[k] = counter(k) + tonumber(x)
      kind[k] = 'string'
    elseif op == 'set' then
      if tonumber(y) > 0 then redis.call('SET', k, x, 'PX', y)
      else redis.call('SET', k, x) end
      kind[k], num[k], fnum[k] = 'string', int_of(x), nil
    elseif op == 'del' then
      redis.call('DEL', k)
      kind[k], num[k], fnum[k] = 'none', nil, nil
    elseif op == 'hincrby' then
      redis.call('HINCRBY', k, x, y)
      local n = field_counter(k, x)
      kind[k] = 'hash'
      fnum[k][x] = n + tonumber(y)
    elseif op == 'hset' then
      redis.call('HSET', k, x, y)
      kind[k] = 'hash'
      fnum[k] = fnum[k] or {}
      fnum[k][x] = int_of(y)
    elseif op == 'sadd' then
      redis.call('SADD', k, x)
      kind[k] = 'set'
    else
      -- hdel, srem and expire may leave the key gone: read it again when needed
      if op == 'hdel' then redis.call('HDEL', k, x)
      elseif op == 'srem' then redis.call('SREM', k, x)
      elseif op == 'expire' then redis.call('PEXPIRE', k, x) end
      kind[k], fits[k], num[k], fnum[k] = nil, nil, nil, nil
    end
  end
end

-- Do the record's guarded reads still see what the handler saw?
local function guards_hold(g, stop)
  while g < stop do
    local cmd, k, a, c = ARGV[g], KEYS[tonumber(ARGV[g + 1])], ARGV[g + 2], tonumber(ARGV[g + 3])
    local o = g + 4
    local ok, cur
    if cmd == 'GET' or cmd == 'HGET' or cmd == 'EXISTS' or cmd == 'SISMEMBER' then
      if cmd == 'GET' or cmd == 'EXISTS' then cur = redis.pcall(cmd, k)
      else cur = redis.pcall(cmd, k, a) end
      if type(cur) == 'table' then return false, k end
      if type(cur) == 'number' then cur = tostring(cur) end
      if c == 0 then ok = not cur else ok = cur == ARGV[o] end
    else
      cur = redis.pcall(cmd, k)
      if cur.err or #cur ~= c then return false, k end
      local seen = {}
      if cmd == 'HGETALL' then
        for i = 1, #cur, 2 do seen[cur[i]] = cur[i + 1] end
        ok = true
        for i = o, o + c - 1, 2 do ok = ok and seen[ARGV[i]] == ARGV[i + 1] end
      else
        for i = 1, #cur do seen[cur[i]] = true end
        ok = true
        for i = o, o + c - 1 do ok = ok and seen[ARGV[i]] == true end
      end
    end
    if not ok then return false, k end
    g = o + c
  end
  return true
end

-- The "sum" keys: each checked once for the whole batch.
local nsum = tonumber(ARGV[5])
local any_unfit = false
for j = 0, nsum - 1 do
  local b = 6 + 4 * j
  local k = KEYS[tonumber(ARGV[b])]
  sums[k] = tonumber(ARGV[b + 1])
  local v = redis.pcall('GET', k)
  if type(v) == 'table' then
    unfit[k] = refuse_type('incrby', k, redis.call('TYPE', k).ok)
    any_unfit = true
  else
    local n = 0
    if v then n = int_of(v) end
    if not (n and add(n, ARGV[b + 2]) and add(n, ARGV[b + 3])) then
      unfit[k] = refuse_counter('incrby', k)
      any_unfit = true
    end
  end
end

-- Why the record's increments of "sum" keys (NS of them from ARGV[S]) cannot
-- apply, or nil.
local function sums_unfit(s, ns)
  if not any_unfit then return nil end
  for j = 0, ns - 1 do
    local why = unfit[KEYS[tonumber(ARGV[s + 2 * j])]]
    if why then return why end
  end
  return nil
end

-- A record that does not apply takes its increments of "sum" keys back.
local function unsum(s, ns)
  for j = 0, ns - 1 do
    local k = KEYS[tonumber(ARGV[s + 2 * j])]
    sums[k] = sums[k] - tonumber(ARGV[s + 2 * j + 1])
  end
end

-- A count from ARGV ("0" most of the time: not worth a tonumber).
local function count(v)
  if v == '0' then return 0 end
  return tonumber(v)
end

local out = {}
local rec0 = 6 + 4 * nsum
local w = rec0 + 6 * nrec
for i = 1, nrec do
  local k = KEYS[i]
  local b = rec0 + 6 * (i - 1)
  local op, nw, ng, ns = ARGV[b], count(ARGV[b + 2]), count(ARGV[b + 3]), count(ARGV[b + 5])
  local s = w + ng + 4 * nw
  if owner_of(k) ~= token then
    out[i] = 0
    unsum(s, ns)
  else
    local refused = nil
    if op == 'done' and nw + ns > 0 then
      local held, changed = guards_hold(w, w + ng)
      if not held then
        refused = 'conflict: ' .. changed .. ' changed since the handler read it'
        op = 'conflict'
      else
        refused = sums_unfit(s, ns)
        if refused == nil and nw > 0 then
          if ARGV[b + 4] == '1' then refused = check_each(w + ng, nw)
          else refused = check_forward(w + ng, nw) end
        end
        if refused then op = 'check' else apply(w + ng, nw) end
      end
      if refused then unsum(s, ns) end
    end
    if op == 'done' then
      write_record(k, ARGV[b + 1], ARGV[2])
    elseif op == 'release' or op == 'unclaim' then
      write_record(k, ARGV[b + 1], nil)
    elseif op == 'extend' or op == 'conflict' then
      local _, starts = read_record(k)
      if op == 'extend' then write_record(k, processing(starts, token, now + lease), nil)
      else write_record(k, 'r|' .. math.max(starts - 1, 0), nil) end -- unclaimed: runs again
    end
    out[i] = refused or 1
  end
  w = s + 2 * ns
end
for k, total in pairs(sums) do
  if total ~= 0 and not unfit[k] then redis.call('INCRBY', k, string.format('%.0f', total)) end
end
return out
