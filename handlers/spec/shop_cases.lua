-- shop_cases: the table-driven runner the specs of the shop's handlers share.
--
-- A spec lists cases, one row per thing the handler must do, and hands each
-- to shop_cases.check(HANDLER, case). A row says:
--   event      testing.event's options (type, data or body, id, attempt, ...)
--   key        ctx.idempotency_key (default: the event's id, as warren does)
--   call       the one call the handler must make: { method, path, body } with
--              the path after shop.url and the JSON body it must send; nil: no
--              call at all
--   answer     the service's answer to it, as a warren.testing fake:
--              { status = 201, body = {...} }, { status = 503, reason = "..." }
--              or { error = "..." } for a transport failure
--   published  what it must publish on shop.exchange, in order:
--              { { routing_key, body }, ... } (the type is the routing key);
--              nil: nothing
--   rejected   the exact reason it must reject with, or
--   raised     the exact error it must raise, after the handler's "file:line: "
--   log        { level, msg [, fields] }: a line it must log
-- Every call must carry the message's idempotency key as Idempotency-Key.

local testing = require "warren.testing"
local assert = require "luassert" -- busted's assert: a module does not get the spec's
local cjson = require "cjson"
local shop = require "shop" -- the handlers' own settings: the same URL and exchange

local M = {}

-- Run CASE through the handler in file HANDLER (a fresh state each time);
-- returns testing.run's result.
function M.run(handler, case)
  local module = assert(testing.load(handler))
  local http = {}
  if case.call then
    http[case.call[1] .. " " .. shop.url .. case.call[2]] = case.answer
  end
  local ctx = testing.ctx { idempotency_key = case.key, http = http,
                            max_attempts = case.max_attempts }
  return testing.run(module, testing.event(case.event), ctx)
end

-- The JSON body of a request or an event, decoded (nil stays nil).
local function decoded(body)
  return body and cjson.decode(body)
end

-- Run CASE and check everything it says (see the top of this file).
function M.check(handler, case)
  local res = M.run(handler, case)

  if case.rejected then
    assert.equals("rejected", res.outcome, res.error)
    assert.equals(case.rejected, res.error)
  elseif case.raised then
    assert.equals("error", res.outcome, res.error)
    local where = "^" .. handler:gsub("%p", "%%%0") .. ":%d+: "
    assert.matches(where, res.error)
    assert.equals(case.raised, (res.error:gsub(where, "")))
  else
    assert.equals("ok", res.outcome, res.error)
  end

  if case.call then
    assert.equals(1, #res.http_calls)
    local call = res.http_calls[1]
    assert.equals(case.call[1], call.method)
    assert.equals(shop.url .. case.call[2], call.url)
    assert.same(case.call[3], call.body) -- the table the handler sent
    assert.same(case.call[3], decoded(call.body_text)) -- and its JSON
    assert.equals(case.key or res.event.id, call.headers["Idempotency-Key"])
  else
    assert.same({}, res.http_calls)
  end

  local want, got = {}, {}
  for _, p in ipairs(case.published or {}) do
    want[#want + 1] = { exchange = shop.exchange, routing_key = p[1], type = p[1], body = p[2] }
  end
  for _, p in ipairs(res.published) do
    got[#got + 1] = { exchange = p.exchange, routing_key = p.routing_key, type = p.type,
                      body = decoded(p.body) }
  end
  assert.same(want, got)

  if case.log then
    local level, msg, fields = case.log[1], case.log[2], case.log[3]
    local found
    for _, l in ipairs(res.logs) do
      if l.level == level and l.msg == msg then
        found = l
      end
    end
    assert(found, ("no %s log %q among %d log lines"):format(level, msg, #res.logs))
    if fields then
      assert.same(fields, found.fields)
    end
  end
  return res
end

-- The same order in the shape every handler of the flow sees it.
function M.order(change)
  local o = {
    order_id = "o-1",
    customer_id = "c-7",
    email = "ann@example.com",
    items = { { sku = "tea", qty = 2 } },
    total = 12.5,
  }
  if change then
    change(o)
  end
  return o
end

return M
