-- record.lua: shared by claim.lua and finish.lua (prepended to each at build time).
--
-- An idempotency record is one Redis string (see sidecar/src/core/record.h):
--   p|<starts>|<token>|<lease_until>            processing: TOKEN holds it until
--                                               LEASE_UNTIL (Redis time, ms)
--   r|<starts>                                  released: claimable again
--   d|<starts>|<outcome>|<done_at>|<entry>      done: OUTCOME at DONE_AT; ENTRY is the
--                                               journal entry of its last step (JSON) or ""
-- Records written by warren before 0.2 are hashes (state, token, lease_until,
-- outcome, done_at, starts); they are read here and replaced by the string form
-- the first time they are written again.

-- The current time of the Redis server in ms.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Read record K: state ('p', 'r', 'd' or nil when absent), starts, then
-- p: token, lease_until; d: outcome, done_at, entry.
local function read_record(k)
  local v = redis.pcall('GET', k)
  if type(v) == 'table' then
    -- not a string: a record of an earlier version (a hash)
    local h = redis.call('HMGET', k, 'state', 'starts', 'token', 'lease_until', 'outcome',
                         'done_at')
    local st = h[1] == 'processing' and 'p' or h[1] == 'done' and 'd' or
               h[1] == 'released' and 'r' or nil
    if st == nil then return nil end
    local starts = tonumber(h[2]) or 0
    if st == 'p' then return st, starts, h[3] or '', tonumber(h[4]) or 0 end
    if st == 'd' then return st, starts, h[5] or '', tonumber(h[6]) or 0, '' end
    return st, starts
  end
  if not v then return nil end
  local st, starts, rest = string.match(v, '^(%a)|(%d+)|?(.*)$')
  starts = tonumber(starts) or 0
  if st == 'p' then
    local token, lease = string.match(rest, '^(.*)|(%d+)$')
    return st, starts, token or '', tonumber(lease) or 0
  elseif st == 'd' then
    local outcome, done_at, entry = string.match(rest, '^([^|]*)|(%d+)|?(.*)$')
    return st, starts, outcome or '', tonumber(done_at) or 0, entry or ''
  end
  return st, starts
end

-- The token holding record K while it is processing, else nil.
local function owner_of(k)
  local v = redis.pcall('GET', k)
  if type(v) == 'string' then return string.match(v, '^p|%d+|(.*)|%d+$') end
  if v then
    local st, _, token = read_record(k)
    if st == 'p' then return token end
  end
  return nil
end

-- Write V to record K. EXPIRE: the expiry in ms as a string ("0": never;
-- nil: keep its expiry). A string, not a number: redis.call formats a Lua
-- number with printf on every call.
local function write_record(k, v, expire)
  if expire == nil then redis.call('SET', k, v, 'KEEPTTL')
  elseif expire == '0' then redis.call('SET', k, v)
  else redis.call('SET', k, v, 'PX', expire) end
end

-- The processing form of a record.
local function processing(starts, token, lease_until)
  return 'p|' .. starts .. '|' .. token .. '|' .. string.format('%d', lease_until)
end
