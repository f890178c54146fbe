-- Specs of the example notifications handler (handlers/notifications.lua),
-- run through warren.testing: it confirms orders by e-mail, rejects orders it
-- cannot notify about, and fails (so warren retries) while the mail relay is
-- down, which the handler stands in for with addresses at flaky.example
-- failing on their first attempt.
--
-- To cover a new case, add a row to the tables below.

local testing = require "warren.testing"

local HANDLER = "notifications.lua"

-- An order.confirmed event as the orders handler publishes it; CHANGE(data)
-- may alter its body, EVENT_OPTS add to testing.event's options.
local function confirmed(change, event_opts)
  local data = { order_id = "o-1", customer_id = "c-7", email = "ann@example.com", total = 12.5 }
  if change then
    change(data)
  end
  local opts = { id = "evt-1:1", type = "order.confirmed", data = data }
  for k, v in pairs(event_opts or {}) do
    opts[k] = v
  end
  return testing.event(opts)
end

-- CHANGE for confirmed(): send to ADDRESS.
local function to(address)
  return function(data)
    data.email = address
  end
end

describe("notifications handler", function()
  local notifications

  before_each(function()
    notifications = assert(testing.load(HANDLER))
  end)

  it("has no init and loads in the sandbox", function()
    assert.is_nil(notifications.init)
    assert.is_true(testing.init(notifications))
  end)

  it("sends the confirmation and logs it, with the idempotency key for the relay", function()
    local res = testing.run(notifications, confirmed(), testing.ctx { idempotency_key = "k-9" })
    assert.equals("ok", res.outcome, res.error)
    assert.same({}, res.published)
    assert.equals(1, #res.logs)
    assert.equals("info", res.logs[1].level)
    assert.equals("confirmation e-mail sent", res.logs[1].msg)
    assert.same({ order_id = "o-1", to = "ann@example.com", attempt = 1,
                  idempotency_key = "k-9" }, res.logs[1].fields)
  end)

  local unreachable = {
    { "without an e-mail address", to(nil) },
    { "with an empty address", to("") },
    { "with an address without @", to("ann.example.com") },
    { "with a numeric address", to(42) },
    { "with a null address", to(require("cjson").null) },
  }
  for _, case in ipairs(unreachable) do
    it("rejects an order " .. case[1] .. ": no retry could fix it", function()
      local res = testing.run(notifications, confirmed(case[2]))
      assert.equals("rejected", res.outcome)
      assert.equals("rejected", res.reason)
      assert.equals("cannot notify about order o-1: no e-mail address", res.error)
    end)
  end

  describe("when the mail relay fails", function()
    local flaky = to("bob@flaky.example")

    it("fails the first attempt with an error, so warren retries it", function()
      local res = testing.run(notifications, confirmed(flaky))
      assert.equals("error", res.outcome)
      assert.equals("handler-error", res.reason)
      assert.matches("^notifications%.lua:%d+: mail relay unavailable %(attempt 1 of 5%)$",
                     res.error)
      assert.same({}, res.logs)
    end)

    it("says how many attempts the policy allows", function()
      local res = testing.run(notifications, confirmed(flaky), testing.ctx { max_attempts = 3 })
      assert.matches("%(attempt 1 of 3%)$", res.error)
    end)

    it("succeeds on the second attempt", function()
      local res = testing.run(notifications, confirmed(flaky, { attempt = 2 }))
      assert.equals("ok", res.outcome, res.error)
      assert.equals("confirmation e-mail sent", res.logs[1].msg)
      assert.equals(2, res.logs[1].fields.attempt)
      assert.equals("bob@flaky.example", res.logs[1].fields.to)
    end)

    it("goes through as warren delivers it: attempt 1 fails, the retry copy succeeds", function()
      local ctx = testing.ctx()
      local first = testing.run(notifications, confirmed(flaky), ctx)
      -- the copy that comes back from the delay queue counts its attempts in a header
      local retry = confirmed(flaky, { headers = { ["x-warren-attempt"] = 1 }, redelivered = false })
      local second = testing.run(notifications, retry, ctx)
      assert.equals("error", first.outcome)
      assert.equals("ok", second.outcome, second.error)
      assert.equals(2, second.logs[1].fields.attempt)
      assert.equals(1, #ctx.logs)
    end)

    it("does not fail other addresses", function()
      local res = testing.run(notifications, confirmed(to("carol@example.org")))
      assert.equals("ok", res.outcome, res.error)
    end)
  end)

  it("consumes what the orders handler publishes", function()
    local orders = assert(testing.load("orders.lua"))
    local created = testing.event { id = "evt-7", type = "order.created", data = {
      order_id = "o-7", email = "dan@example.com", items = { { sku = "tea" } }, total = 3 } }
    local res = testing.run(orders, created)
    local p = assert(res.published[1])
    local ev = testing.event { id = p.message_id, type = p.type, routing_key = p.routing_key,
                               exchange = p.exchange, content_type = p.content_type,
                               body = p.body }
    local sent = testing.run(notifications, ev)
    assert.equals("ok", sent.outcome, sent.error)
    assert.same({ order_id = "o-7", to = "dan@example.com", attempt = 1,
                  idempotency_key = "evt-7:1" }, sent.logs[1].fields)
  end)
end)
