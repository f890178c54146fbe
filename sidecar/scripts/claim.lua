-- claim.lua: claim the idempotency records of one batch (idem.h).
--
-- KEYS: the records, one per message (never one key twice)
-- ARGV[1] token      the claiming worker's owner token
-- ARGV[2] lease_ms   how long the claim holds before another worker may take over
-- ARGV[3] ttl_ms     how long a done record is kept (0: forever)
--
-- Returns a flat array, two entries per key:
--   0, starts      acquired (starts: claims so far, this one included)
--   1, starts      acquired by takeover: another owner's lease had run out
--   2, outcome     done already: a duplicate
--   3, ms_left     busy: another live owner holds it
-- A key TOKEN already holds is acquired again without counting a start: that is
-- this worker's own earlier claim (a redelivery after its broker connection
-- dropped before the commit), never another worker's run.
local token, lease, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
-- a processing record outlives its lease (the crash-loop guard counts the
-- starts of a message whose worker died) and, with a ttl, the done record's ttl
local hold = string.format('%d', ttl > 0 and math.max(ttl, 2 * lease) or 0)
local lease_until = string.format('%d', now + lease)
local fresh = 'p|1|' .. token .. '|' .. lease_until
local out = {}
for i, k in ipairs(KEYS) do
  local o = 2 * i - 1
  local created
  if hold ~= '0' then created = redis.call('SET', k, fresh, 'NX', 'PX', hold)
  else created = redis.call('SET', k, fresh, 'NX') end
  if created then
    out[o], out[o + 1] = 0, 1
  else
    local st, starts, a, b = read_record(k)
    if st == 'd' then
      out[o], out[o + 1] = 2, a
    elseif st == 'p' and a ~= token and b > now then
      out[o], out[o + 1] = 3, b - now
    else
      local status = 0
      if st == 'p' and a ~= token then status = 1 end
      if not (st == 'p' and a == token) then starts = (starts or 0) + 1 end
      write_record(k, processing(starts, token, now + lease), hold)
      out[o], out[o + 1] = status, starts
    end
  end
end
return out
