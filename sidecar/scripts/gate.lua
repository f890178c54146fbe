-- gate.lua: the parked messages of causal gates (sidecar/src/core/gates.h).
--
-- A parked list holds entries "<deadline_ms>|<properties><body>" in arrival
-- order. INDEX is a sorted set of the parked lists, scored by when the sweep
-- should look at each again; SENDING a sorted set of the lists being sent
-- ("o" .. key: back to the queue, "d" .. key: to the DLQ, "r" .. key: back
-- to the queue past the gate's timeout, to run without the predecessor),
-- scored by when the
-- sweep should send them again if the worker sending them never says 'sent'.
-- MARKS maps each parked list to the "done for key" mark it waits for.
--
-- ARGV[1] is the operation:
--
--   park   KEYS: mark, list, index, marks[, pass]
--          ARGV: entry, recheck_ms
--          The mark exists: nothing is parked; returns 0 (run the message).
--          PASS (the message came back past this gate's timeout, on_timeout
--          run) holds this list's name: nothing is parked; returns 2 (run it
--          without its predecessor). Else the entry is appended; returns 1.
--   take   KEYS: list, index, marks, sending, seq
--          ARGV: retry_ms
--          The mark of the list was just written: its entries move to a new
--          list, which is returned as {key, entries...} ({} when nothing was
--          parked). The caller publishes them, then calls 'sent'.
--   sent   KEYS: the list returned by take or sweep, sending
--          The entries are published and confirmed: the list is dropped.
--   pass   KEYS: an "r" list returned by sweep, pass key
--          ARGV: ttl_ms
--          The pass key names the parked list the entries came from, for
--          TTL_MS (0: for ever; see park); returns 1, or 0 when the list is
--          sent already.
--   sweep  KEYS: index, marks, sending, seq
--          ARGV: recheck_ms, retry_ms, max[, park, run]: PARK is the parked
--          lists' prefix "<prefix>~park:<subscription>:", RUN the indexes of
--          the gates whose on_timeout is run, as ",0,2,"
--          Returns up to MAX groups {kind, key, entries...}, kind "o" (send
--          back to the queue), "d" (dead-letter: past the gate's timeout) or
--          "r" (past the timeout of a gate whose on_timeout is run):
--          lists whose sender did not say 'sent' within retry_ms, parked lists
--          whose mark exists (the worker that wrote it died before taking
--          them), parked entries past their deadline, and the next message of
--          a lane whose holder is done (its worker died before handing over).
--
-- Lanes (ordering.key, retries keep order): HOLD names the idempotency
-- record of the message a key's later messages wait behind (a retried one,
-- then each released one in turn), then, after a NUL each, the records of the
-- earlier messages of its key that ran in its batch and were not committed
-- yet when it took the hold: a kill -9 before that commit sends them back,
-- and they must run again ahead of it, never park behind it (record keys hold
-- no NUL). A lane's parked entries are
-- "<n>:<record key>" (n its length) followed by the entry; MARKS maps the list
-- to "L" .. hold.
--
--   lpark  KEYS: hold, list, index, marks
--          ARGV: record key, entry, recheck_ms
--          The hold is absent, or is this message's, or names it as an
--          earlier message of the holder's batch: returns 0 (run it). Else
--          the entry is appended to the list; returns the holder's record key
--          (what it is parked behind).
--   lhold  KEYS: hold   ARGV: record key[, earlier]
--          This message (retried) now holds its key, unless another one does;
--          returns 1 when it holds it. EARLIER: "\0<record key>" for each
--          earlier message of its key in its batch still to be committed.
--   lnext  KEYS: hold, list, index, marks, sending, seq
--          ARGV: retry_ms, record key, mode ("release" or "dlq_all")
--          The holder (this record) is done: release: the next parked entry
--          becomes the holder and moves to a sending list, returned as
--          {key, entry} (no entry: the hold is dropped, {} returned);
--          dlq_all: every parked entry moves to a "d" sending list, returned as
--          {key, entries...}, and the hold is dropped. Nothing happens ({})
--          when the hold is not this record's.
local op = ARGV[1]
local now = now_ms()

-- Move ENTRIES (already removed from where they were) to a new sending list of
-- KIND; returns its key.
local function to_sending(kind, entries, sending, seq, retry)
  local key = sending .. ':' .. redis.call('INCR', seq)
  for i = 1, #entries, 1000 do
    redis.call('RPUSH', key, unpack(entries, i, math.min(i + 999, #entries)))
  end
  redis.call('ZADD', sending, now + retry, kind .. key)
  return key
end

-- Take every entry of parked LIST to a sending list; returns {key, entries...}.
local function take(list, index, marks, sending, seq, retry)
  local entries = redis.call('LRANGE', list, 0, -1)
  redis.call('DEL', list)
  redis.call('ZREM', index, list)
  redis.call('HDEL', marks, list)
  if #entries == 0 then return {} end
  local key = to_sending('o', entries, sending, seq, retry)
  local out = {key}
  for i = 1, #entries do out[i + 1] = entries[i] end
  return out
end

-- An entry's deadline; none (a lane's entry, or "0|") is never due.
local function deadline(e)
  local d = tonumber(string.match(e, '^(%d+)|'))
  if not d or d == 0 then return math.huge end
  return d
end

-- A lane entry: its record key and the entry itself.
local function lane_entry(e)
  local colon = string.find(e, ':', 1, true)
  local n = tonumber(string.sub(e, 1, colon - 1))
  return string.sub(e, colon + 1, colon + n), string.sub(e, colon + n + 1)
end

-- Hand lane LIST over from its holder: see lnext. RELEASE (true) or dlq_all.
local function hand_over(hold, list, index, marks, sending, seq, retry, release)
  if release then
    local e = redis.call('LPOP', list)
    if not e then
      redis.call('DEL', hold)
      redis.call('ZREM', index, list)
      redis.call('HDEL', marks, list)
      return {}
    end
    local rkey, entry = lane_entry(e)
    redis.call('SET', hold, rkey)
    if redis.call('LLEN', list) == 0 then
      redis.call('ZREM', index, list)
      redis.call('HDEL', marks, list)
    end
    return {'o', to_sending('o', {entry}, sending, seq, retry), entry}
  end
  local all = redis.call('LRANGE', list, 0, -1)
  redis.call('DEL', list, hold)
  redis.call('ZREM', index, list)
  redis.call('HDEL', marks, list)
  if #all == 0 then return {} end
  local entries = {}
  for i = 1, #all do
    local _, entry = lane_entry(all[i])
    entries[i] = entry
  end
  local out = {'d', to_sending('d', entries, sending, seq, retry)}
  for i = 1, #entries do out[i + 2] = entries[i] end
  return out
end

-- The record key of the holder named by hold value H.
local function holder_of(h)
  local z = string.find(h, '\0', 1, true)
  if z then return string.sub(h, 1, z - 1) end
  return h
end

-- Whether hold value H lets record key RKEY run: its holder, or an earlier
-- message of the holder's batch.
local function lets_run(h, rkey)
  if holder_of(h) == rkey then return true end
  return string.find(h .. '\0', '\0' .. rkey .. '\0', 1, true) ~= nil
end

if op == 'park' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  if KEYS[5] and redis.call('GET', KEYS[5]) == KEYS[2] then return 2 end
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('HSET', KEYS[4], KEYS[2], KEYS[1])
  local due = math.min(deadline(ARGV[2]), now + tonumber(ARGV[3]))
  local cur = redis.call('ZSCORE', KEYS[3], KEYS[2])
  if not cur or tonumber(cur) > due then redis.call('ZADD', KEYS[3], due, KEYS[2]) end
  return 1
elseif op == 'lpark' then
  local h = redis.call('GET', KEYS[1])
  if not h or lets_run(h, ARGV[2]) then return 0 end
  redis.call('RPUSH', KEYS[2], string.len(ARGV[2]) .. ':' .. ARGV[2] .. ARGV[3])
  redis.call('HSET', KEYS[4], KEYS[2], 'L' .. KEYS[1])
  if not redis.call('ZSCORE', KEYS[3], KEYS[2]) then
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), KEYS[2])
  end
  return holder_of(h)
elseif op == 'lhold' then
  local h = redis.call('GET', KEYS[1])
  if h and holder_of(h) ~= ARGV[2] then return 0 end
  redis.call('SET', KEYS[1], ARGV[2] .. (ARGV[3] or ''))
  return 1
elseif op == 'lnext' then
  local h = redis.call('GET', KEYS[1])
  if not h or holder_of(h) ~= ARGV[3] then return {} end
  local r = hand_over(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], tonumber(ARGV[2]),
                      ARGV[4] ~= 'dlq_all')
  if #r == 0 then return {} end
  table.remove(r, 1) -- the kind: the caller knows it from the mode
  return r
elseif op == 'take' then
  return take(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], tonumber(ARGV[2]))
elseif op == 'sent' then
  redis.call('DEL', KEYS[1], KEYS[1] .. ':from')
  redis.call('ZREM', KEYS[2], 'o' .. KEYS[1], 'd' .. KEYS[1], 'r' .. KEYS[1])
  return 1
elseif op == 'pass' then
  local from = redis.call('GET', KEYS[1] .. ':from')
  if not from then return 0 end
  local ttl = tonumber(ARGV[2])
  if ttl > 0 then
    redis.call('SET', KEYS[2], from, 'PX', ttl)
  else
    redis.call('SET', KEYS[2], from) -- idempotency records kept forever: so is the pass
  end
  return 1
elseif op == 'sweep' then
  local index, marks, sending, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local recheck, retry, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local out = {}
  -- lists whose sender went quiet: send them again
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', sending, '-inf', now, 'LIMIT', 0, max)) do
    local key = string.sub(m, 2)
    local entries = redis.call('LRANGE', key, 0, -1)
    if #entries == 0 then
      redis.call('ZREM', sending, m)
    else
      redis.call('ZADD', sending, now + retry, m)
      local g = {string.sub(m, 1, 1), key}
      for i = 1, #entries do g[i + 2] = entries[i] end
      out[#out + 1] = g
    end
  end
  -- parked lists due for a look
  for _, list in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, max)) do
    local mark = redis.call('HGET', marks, list)
    if mark and string.sub(mark, 1, 1) == 'L' then
      -- a lane: hand it over when its holder is gone or done
      local hold = string.sub(mark, 2)
      local h = redis.call('GET', hold)
      if not h or read_record(holder_of(h)) == 'd' then
        local g = hand_over(hold, list, index, marks, sending, seq, retry, true)
        if #g > 0 then out[#out + 1] = g end
      else
        redis.call('ZADD', index, now + recheck, list)
      end
    elseif mark and redis.call('EXISTS', mark) == 1 then
      local t = take(list, index, marks, sending, seq, retry)
      if #t > 0 then
        local g = {'o'}
        for i = 1, #t do g[i + 1] = t[i] end
        out[#out + 1] = g
      end
    else
      local late = {}
      while true do
        local e = redis.call('LINDEX', list, 0)
        if not e or deadline(e) > now then break end
        late[#late + 1] = redis.call('LPOP', list)
      end
      if #late > 0 then
        local kind = 'd'
        if ARGV[6] and string.sub(list, 1, string.len(ARGV[5])) == ARGV[5] then
          local g = string.match(list, '^(%d+):', string.len(ARGV[5]) + 1)
          if g and string.find(ARGV[6], ',' .. g .. ',', 1, true) then kind = 'r' end
        end
        local key = to_sending(kind, late, sending, seq, retry)
        if kind == 'r' then redis.call('SET', key .. ':from', list) end
        local g = {kind, key}
        for i = 1, #late do g[i + 2] = late[i] end
        out[#out + 1] = g
      end
      local head = redis.call('LINDEX', list, 0)
      if head then
        redis.call('ZADD', index, math.min(deadline(head), now + recheck), list)
      else
        redis.call('ZREM', index, list)
        redis.call('HDEL', marks, list)
      end
    end
  end
  return out
end
return redis.error_reply('gate.lua: unknown operation ' .. tostring(op))
